"""`make chaos`: SECONDS (default 60) of disruptions with SEED (default 1), then the checks.
Prints one summary line; exit 1 when a check failed."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from tests.chaos.campaign import Campaign


def main() -> int:
    seconds = float(os.environ.get("SECONDS") or 60)
    seed = int(os.environ.get("SEED") or 1)
    with tempfile.TemporaryDirectory(prefix="chaos-") as tmp:
        summary = Campaign(seconds, seed, Path(tmp)).run()
        for problem in summary.problems:
            print(f"  {problem}", file=sys.stderr)
        if summary.problems:
            log = Path(tmp) / "bridge.log"
            print("".join(log.read_text().splitlines(True)[-40:]), file=sys.stderr)
    print(summary.line())
    return 1 if summary.problems else 0


if __name__ == "__main__":
    sys.exit(main())
