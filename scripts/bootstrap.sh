#!/usr/bin/env bash
# Installs what `make demo` and `make test` need: a PostgreSQL server with
# PL/Python for its major version, setpriv, a virtualenv and the Python
# dependencies. As root it installs system packages itself; otherwise it stops
# with the exact command to run.
set -euo pipefail

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}

server_major() {
  local newest
  newest=$(ls -d /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -n 1 || true)
  [ -n "$newest" ] && basename "$(dirname "$(dirname "$newest")")"
}

missing_packages() {
  local major=$1 missing=()
  [ -n "$major" ] || { echo "postgresql postgresql-contrib"; return; }
  [ -f "/usr/lib/postgresql/$major/lib/plpython3.so" ] || missing+=("postgresql-plpython3-$major")
  [ -f "/usr/lib/postgresql/$major/lib/pg_cron.so" ] || missing+=("postgresql-$major-cron")
  command -v setpriv >/dev/null || missing+=("util-linux")
  # The pooler tests run a real PgBouncer in transaction mode.
  [ -x /usr/sbin/pgbouncer ] || command -v pgbouncer >/dev/null || missing+=("pgbouncer")
  echo "${missing[@]:-}"
}

major=$(server_major || true)
missing=$(missing_packages "$major")
if [ -n "$missing" ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "bootstrap: installing $missing"
    # RUNLEVEL=1: packages (pgbouncer) must not start their services here.
    export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q $missing
    major=$(server_major)
    missing=$(missing_packages "$major")
    if [ -n "$missing" ]; then
      apt-get install -y -q $missing
    fi
  else
    echo "bootstrap: missing system packages. Run, then retry:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y $missing" >&2
    exit 1
  fi
fi

if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -e '.[dev]'
echo "bootstrap: ready (PostgreSQL $(server_major), venv $VENV)"
