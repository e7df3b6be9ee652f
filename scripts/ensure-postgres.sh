#!/usr/bin/env bash
# Make sure Postgres server binaries (initdb, pg_ctl, postgres, pg_recvlogical) are on this machine.
# Installs Debian's `postgresql` package when they are missing. Never starts or touches a system cluster.
set -euo pipefail
have_server() {
  local bindir
  bindir=$(pg_config --bindir 2>/dev/null || true)
  [ -n "$bindir" ] && [ -x "$bindir/initdb" ] && return 0
  compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null
}
if have_server; then exit 0; fi
echo "Postgres server binaries not found: installing Debian's postgresql package" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq postgresql postgresql-contrib >/dev/null
# The package may start a system cluster; we never use it, stop it to free resources.
$SUDO service postgresql stop >/dev/null 2>&1 || true
have_server
