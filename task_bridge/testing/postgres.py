"""A throwaway Postgres cluster (`wal_level=logical`) for tests, `make demo` and benchmarks.

Runs the server binaries as the `postgres` OS user when we are root (the server refuses root),
in a directory that user owns, on a free loopback port. Never touches a system cluster.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

import psycopg
from psycopg import sql

READY_TIMEOUT_S = 60.0
DEFAULT_SETTINGS = {
    "wal_level": "logical",
    "max_wal_senders": "20",
    "max_replication_slots": "20",
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "wal_sender_timeout": "60s",
    "timezone": "UTC",
    "log_min_messages": "warning",
}


class ClusterError(RuntimeError):
    """The throwaway cluster could not be set up."""


BINDIR_ENV = "TASK_BRIDGE_PG_BINDIR"
"""A directory with initdb, pg_ctl, postgres and pg_isready: the server the tests run."""
MAJOR_ENV = "TASK_BRIDGE_PG_MAJOR"
"""A major (14-18): Debian's /usr/lib/postgresql/<major>/bin, else the repository's
.cache/postgres/<major>/bin that scripts/fetch_postgres.py fills."""
CACHE_DIR = Path(__file__).resolve().parents[2] / ".cache" / "postgres"


def find_bindir() -> Path:
    """Directory of initdb/pg_ctl for the test clusters.

    `TASK_BRIDGE_PG_BINDIR`, else `TASK_BRIDGE_PG_MAJOR` (see MAJOR_ENV), else the default:
    `pg_config --bindir`, then the newest /usr/lib/postgresql/*/bin. A directory the variables
    name that holds no server is an error, never a silent fall-back to another major.
    """
    if bindir := os.environ.get(BINDIR_ENV):
        if not (Path(bindir) / "initdb").exists():
            raise ClusterError(f"{BINDIR_ENV}={bindir}: no initdb there")
        return Path(bindir)
    if major := os.environ.get(MAJOR_ENV):
        for found in (Path(f"/usr/lib/postgresql/{major}/bin"), CACHE_DIR / major / "bin"):
            if (found / "initdb").exists():
                return found
        raise ClusterError(
            f"{MAJOR_ENV}={major}: Postgres {major} not found in /usr/lib/postgresql/{major}/bin"
            f" or {CACHE_DIR / major / 'bin'}: run scripts/fetch_postgres.py {major}"
        )
    candidates: list[str] = []
    try:
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=True)
        candidates.append(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise ClusterError(
        "Postgres server binaries (initdb, pg_ctl) not found: run scripts/ensure-postgres.sh "
        "or `apt-get install -y postgresql`"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TempCluster:
    """initdb + pg_ctl in `base_dir` (a temp dir by default, removed by `cleanup`).

    Use as a context manager (`start` ... `cleanup`), or call `start`/`stop`/`restart`/`kill`
    yourself. `extra_settings` override the server settings (`-c name=value`).
    """

    def __init__(
        self, base_dir: Path | None = None, extra_settings: dict[str, str] | None = None
    ) -> None:
        self.bindir = find_bindir()
        self._own_dir = base_dir is None
        self.base_dir = (
            Path(tempfile.mkdtemp(prefix="bridge-pg-")) if base_dir is None else base_dir
        )
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "sock"
        self.port = free_port()
        self.settings = {**DEFAULT_SETTINGS, **(extra_settings or {})}
        self._as_root = os.geteuid() == 0
        self._initialised = False

    # -- plumbing ------------------------------------------------------------------------------

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        result = subprocess.run(cmd, capture_output=True, text=True)
        if check and result.returncode != 0:
            raise ClusterError(
                f"{args[0]} failed: {result.stderr.strip() or result.stdout.strip()}"
            )
        return result

    def _init(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        if self._as_root:
            shutil.chown(self.base_dir, "postgres", "postgres")
            shutil.chown(self.socket_dir, "postgres", "postgres")
            # the postgres user must be able to reach the directory
            for parent in self.base_dir.parents:
                if parent == Path("/"):
                    break
                mode = parent.stat().st_mode
                if not mode & 0o001:
                    os.chmod(parent, mode | 0o001)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        self._initialised = True

    # -- lifecycle -----------------------------------------------------------------------------

    def start(self) -> None:
        """initdb on first use (an existing data directory is reused), start, wait until ready."""
        if not self._initialised and (self.data_dir / "PG_VERSION").exists():
            self._initialised = True
        if not self._initialised:
            self._init()
        opts = " ".join(f"-c {k}={v}" for k, v in self.settings.items())
        opts += f" -c port={self.port} -c unix_socket_directories={self.socket_dir}"
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.base_dir / "server.log"),
            "-o",
            opts,
            "-w",
            "-t",
            str(int(READY_TIMEOUT_S)),
            "start",
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            result = self._run("pg_isready", "-h", "127.0.0.1", "-p", str(self.port), check=False)
            if result.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise ClusterError(f"Postgres did not become ready: {self.server_log()[-2000:]}")
            time.sleep(0.05)

    @property
    def running(self) -> bool:
        """Whether a server is running on the data directory (`pg_ctl status`)."""
        if not (self.data_dir / "postmaster.pid").exists():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status", check=False).returncode == 0

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`fast`, `smart` or `immediate`); no server is left running."""
        if not self.running:
            return
        for how in (mode, "immediate"):
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", how, "-w", "stop", check=False)
            if not self.running:
                return
        raise ClusterError(f"Postgres did not stop: {self.server_log()[-2000:]}")

    def kill(self) -> None:
        """Immediate stop (crash-like; the next start runs recovery)."""
        self.stop("immediate")

    def restart(self) -> None:
        """Fast stop, then start again on the same port and data directory."""
        self.stop("fast")
        self.start()

    def cleanup(self) -> None:
        """Stop the server and remove what we created (the whole dir when it was ours)."""
        self.stop("immediate")
        if self._own_dir:
            shutil.rmtree(self.base_dir, ignore_errors=True)
        else:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def server_log(self) -> str:
        try:
            return (self.base_dir / "server.log").read_text(errors="replace")
        except OSError:
            return ""

    # -- connection strings --------------------------------------------------------------------

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def create_database(self, name: str) -> str:
        """Create database `name`; returns its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        """Drop database `name` with its replication slots (slots are cluster-wide and pin WAL).

        Walsenders still using a slot are terminated first; a missing database is fine.
        """
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots"
                " WHERE database = %s AND active_pid IS NOT NULL",
                (name,),
            )
            deadline = time.monotonic() + READY_TIMEOUT_S
            while conn.execute(
                "SELECT count(*) FROM pg_replication_slots WHERE database = %s AND active",
                (name,),
            ).fetchone() != (0,):
                if time.monotonic() > deadline:
                    raise ClusterError(f"replication slots of {name!r} stayed active")
                time.sleep(0.02)
            conn.execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots"
                " WHERE database = %s",
                (name,),
            )
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cleanup()
