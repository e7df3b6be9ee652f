"""Run `bridge run` as a real child process, so tests can SIGTERM and kill -9 it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tests.support.wait import wait_until


class BridgeProcess:
    def __init__(self, config: Path, log_path: Path, extra_args: list[str] | None = None) -> None:
        self.config = config
        self.log_path = log_path
        self.extra_args = extra_args or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.preexec: Callable[[], None] | None = None
        """Runs in the child before exec (e.g. to set a resource limit)."""
        self.log_level = "debug"
        self.peak_rss = 0
        self._offset = 0

    def start(self) -> BridgeProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = dict(os.environ)
        self._log = self.log_path.open("ab")
        self._offset = self._log.tell()  # this run's lines start here (the file is shared)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "task_bridge",
                "run",
                "-c",
                str(self.config),
                "--log-level",
                self.log_level,
                *self.extra_args,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
            preexec_fn=self.preexec,
        )
        return self

    def run_cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run another `bridge` command (e.g. `outbox retry ID`) against the same config."""
        return subprocess.run(
            [sys.executable, "-m", "task_bridge", *args, "-c", str(self.config)],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def sample_rss(self) -> int:
        """Record and return the current RSS in bytes (0 when not running)."""
        if not self.alive():
            return 0
        try:
            rss = psutil.Process(self.pid).memory_info().rss
        except psutil.NoSuchProcess:
            return 0
        self.peak_rss = max(self.peak_rss, rss)
        return int(rss)

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._log.close()

    def terminate(self, timeout: float = 60.0) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self._log.close()
        return code

    def stop(self) -> None:
        if self.alive():
            try:
                self.terminate(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()
        elif self.proc is not None and not self._log.closed:
            self._log.close()

    def logs(self) -> list[dict[str, Any]]:
        """Every JSON log line written so far (non-JSON lines are kept as {'raw': line})."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                out.append({"raw": line})
        return out

    def events(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.logs() if e.get("event") == name]

    def wait_for_log(
        self, name: str, timeout: float = 30.0, count: int = 1
    ) -> list[dict[str, Any]]:
        """Wait until `name` was logged `count` times; fail early if the process died."""

        def probe() -> list[dict[str, Any]] | bool:
            found = self.events(name)
            if len(found) >= count:
                return found
            if not self.alive():
                raise AssertionError(f"bridge exited before logging {name!r}:\n{self.log_tail()}")
            return False

        try:
            result = wait_until(probe, timeout=timeout, message=f"log event {name!r} x{count}")
        except AssertionError as exc:
            if "bridge exited" in str(exc):
                raise
            raise AssertionError(f"{exc}\n{self.log_tail()}") from None
        assert isinstance(result, list)
        return result

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_text(self) -> str:
        """This run's output (earlier runs sharing the file are skipped)."""
        with self.log_path.open("rb") as f:
            f.seek(self._offset)
            return f.read().decode("utf-8", errors="replace")
