"""What `pip install .` puts on a machine: the `task-bridge` command and the `task_bridge`
package, and nothing named `bridge` (iproute2's `/usr/sbin/bridge` owns that name)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_an_install_gives_task_bridge_and_no_bridge(tmp_path: Path) -> None:
    """Installed into an empty target: a `task-bridge` script and `python -m task_bridge`
    both answer `--help`, no `bridge` script or package is installed, `import bridge` fails."""
    site = tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    assert (site / "bin" / "task-bridge").exists()
    assert not (site / "bin" / "bridge").exists()
    assert (site / "task_bridge" / "py.typed").exists()
    assert not (site / "bridge").exists()
    env = {**os.environ, "PYTHONPATH": str(site)}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False
        )

    script = run(str(site / "bin" / "task-bridge"), "--help")
    assert script.returncode == 0 and "usage: task-bridge" in script.stdout, script.stderr
    module = run(sys.executable, "-m", "task_bridge", "--help")
    assert module.returncode == 0 and "usage: task-bridge" in module.stdout, module.stderr
    version = run(sys.executable, "-c", "import task_bridge; print(task_bridge.__version__)")
    assert version.stdout.strip() and version.returncode == 0, version.stderr
    old = run(sys.executable, "-c", "import bridge")
    assert old.returncode != 0 and "No module named 'bridge'" in old.stderr
