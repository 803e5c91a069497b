#!/usr/bin/env bash
# Start a private PostgreSQL cluster on 127.0.0.1:${PGPORT:-55432}; print its URL.
set -euo pipefail
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
[ -n "$bin" ] || { echo "no PostgreSQL binaries" >&2; exit 1; }
port=${PGPORT:-55432}
dir=${PGDATA_DIR:-/tmp/dnnzip-pg}
user=postgres
run() { if [ "$(id -u)" = 0 ]; then su "$user" -s /bin/bash -c "$*"; else bash -c "$*"; fi; }
if ! run "$bin/pg_isready -h 127.0.0.1 -p $port" >/dev/null 2>&1; then
  rm -rf "$dir"; mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown "$user" "$dir"
  run "$bin/initdb -D $dir -A trust -U $user" >/dev/null
  run "$bin/pg_ctl -D $dir -o '-c listen_addresses=127.0.0.1 -p $port -k /tmp' -l $dir/log -w start" >/dev/null
fi
run "$bin/psql -h 127.0.0.1 -p $port -U $user -tc \"SELECT 1 FROM pg_database WHERE datname='dnnzip_test'\"" | grep -q 1 \
  || run "$bin/createdb -h 127.0.0.1 -p $port -U $user dnnzip_test"
echo "postgresql://$user@127.0.0.1:$port/dnnzip_test"
