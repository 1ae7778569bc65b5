#!/usr/bin/env bash
# `make test-matrix`: the test suite on each PostgreSQL major version given
# (default 14 16 17 18), with server binaries from scripts/pg-binaries.sh.
# Those builds have no PL/Python: the PL/Python-only tests skip, saying so, and
# the client-side diff runs instead. 15 with PL/Python is `make test`'s.
# Every version runs, even after a failure; the exit status says whether all passed.
#
# What runs where: every test group that talks to a server runs on every
# version. Not repeated here (they run in `make test`):
#  - groups that never touch a server: the in-process breakers and the schema
#    diff module as plain Python (the same code whatever the server);
#  - tests/test_embedded.py (four fresh servers: start, cleanup, root, crash)
#    runs on the newest version only; on the others the session server is
#    started the same way, and tests/reliability crashes and restarts it.
set -uo pipefail

VENV=${VENV:-.venv}
PG_CACHE=${PG_CACHE:-.cache/pg}
[ $# -gt 0 ] || set -- 14 16 17 18
versions=("$@")
newest=$(printf '%s\n' "${versions[@]}" | sort -n | tail -n 1)

SERVER_FREE=(
  tests/breakers/test_state_machine.py
  tests/breakers/test_properties.py
  tests/breakers/test_async_and_concurrency.py
  tests/breakers/test_registry.py
  tests/schema/test_schema_diff_unit.py
)

selection() {
  local major=$1 path
  for path in "${SERVER_FREE[@]}"; do echo "--ignore=$path"; done
  [ "$major" = "$newest" ] || echo "--ignore=tests/test_embedded.py"
}

summary=()
failed=0
for major in "${versions[@]}"; do
  bin=$(bash scripts/pg-binaries.sh "$major" "$PG_CACHE") || { summary+=("$major: binaries not installed"); failed=1; continue; }
  echo "== PostgreSQL $major ($bin)"
  log=$(mktemp)
  start=$SECONDS
  # shellcheck disable=SC2046
  PGRESILIENCE_PG_BIN=$bin "$VENV/bin/pytest" -p no:cacheprovider -q -n "${PYTEST_WORKERS:-2}" $(selection "$major") \
    ${PYTEST_ARGS:-} </dev/null 2>&1 | tee "$log"
  status=${PIPESTATUS[0]}
  result=$(grep -E '^=* ?[0-9]+ [a-z]+.* in [0-9.]+s' "$log" | tail -n 1 | sed -E 's/^=+ //; s/ =+$//')
  rm -f "$log"
  summary+=("PostgreSQL $major: ${result:-no result} (wall $((SECONDS - start)) s)")
  [ "$status" = 0 ] || failed=1
done

echo
echo "== test-matrix summary"
printf '%s\n' "${summary[@]}"
exit "$failed"
