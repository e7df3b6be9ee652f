#!/usr/bin/env bash
# The Postgres-facing tests on every other supported major (`make test-majors`; `.ci/run` runs
# it after `make test`, which covers the default server, Debian's 15).
#   scripts/test-majors.sh [MAJOR ...]     # default: 14 16 17 18
# Fetches the binaries first (scripts/fetch_postgres.py, cached under .cache/postgres/), then
# runs MAJOR_TESTS once per major, one major at a time, and prints one line per major with its
# wall time. Every major runs even when one fails; the exit status is 1 if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
if [ $# -eq 0 ]; then set -- 14 16 17 18; fi
MAJORS=("$@")
MAJOR_TESTS=(
  tests/integration/test_postgres_source.py
  tests/integration/test_partitions.py
  tests/integration/test_end_to_end.py
  tests/integration/test_lifecycle.py
  tests/integration/test_values.py
  tests/integration/test_every_type.py
  tests/integration/test_examples_run.py
  tests/faults
)
fetch=()
for major in "${MAJORS[@]}"; do  # Debian's own (15) needs no fetching
  [ -x "/usr/lib/postgresql/$major/bin/initdb" ] || fetch+=("$major")
done
if [ ${#fetch[@]} -gt 0 ]; then "$PY" scripts/fetch_postgres.py "${fetch[@]}" || exit 1; fi
failed=()
summary=()
for major in "${MAJORS[@]}"; do
  echo "== Postgres $major: ${MAJOR_TESTS[*]}"
  start=$(date +%s)
  if TASK_BRIDGE_PG_MAJOR=$major "$PY" -m pytest -q -p no:cacheprovider "${MAJOR_TESTS[@]}"; then
    result=passed
  else
    result=FAILED
    failed+=("$major")
  fi
  summary+=("Postgres $major: $result in $(($(date +%s) - start)) s")
done
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "test-majors: failed on Postgres ${failed[*]}" >&2
  exit 1
fi
