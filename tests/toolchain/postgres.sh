#!/usr/bin/env bash
# A throwaway PostgreSQL on loopback for the tests that need one (tests/pg.py).
#   eval "$(tests/toolchain/postgres.sh start)"   initdb in a new temporary folder, start it on a free port;
#                                                  prints the exports LIBTV_TEST_DATABASE_URL and LIBTV_TEST_PGDATA
#   tests/toolchain/postgres.sh stop [PGDATA]      stop it and remove the folder (default: $LIBTV_TEST_PGDATA)
# As root (CI) the server runs as the unprivileged `postgres` user (PostgreSQL refuses root).
# Without PostgreSQL's binaries, root installs Debian's `postgresql` package first.
set -euo pipefail

find_bin() {
    local dir
    for dir in "${LIBTV_PG_BIN:-}" /usr/lib/postgresql/*/bin; do
        [ -n "$dir" ] && [ -x "$dir/pg_ctl" ] && { echo "$dir"; return 0; }
    done
    command -v pg_ctl >/dev/null && { dirname "$(command -v pg_ctl)"; return 0; }
    return 1
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    if ! BIN="$(find_bin)"; then
        [ "$(id -u)" = 0 ] || { echo "PostgreSQL is not installed (apt-get install postgresql)" >&2; exit 2; }
        { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql; } >&2
        BIN="$(find_bin)"
    fi
    DATA="$(mktemp -d "${TMPDIR:-/tmp}/libtv-pg.XXXXXX")"
    [ "$(id -u)" = 0 ] && chown postgres: "$DATA"
    chmod 700 "$DATA"
    PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    as_owner "$BIN/initdb" -D "$DATA/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    # In the config file, so a test's `pg_ctl restart` brings it back on the same port and socket.
    cat >>"$DATA/data/postgresql.conf" <<EOF
port = $PORT
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DATA'
fsync = off
max_connections = 200
EOF
    as_owner "$BIN/pg_ctl" -D "$DATA/data" -l "$DATA/log" -w -t 60 start >/dev/null
    echo "export LIBTV_TEST_DATABASE_URL='postgresql://postgres@127.0.0.1:$PORT/postgres'"
    echo "export LIBTV_TEST_PGDATA='$DATA/data'"
    echo "export LIBTV_TEST_PG_BIN='$BIN'"
    ;;
stop)
    DATA="${2:-${LIBTV_TEST_PGDATA:-}}"
    [ -n "$DATA" ] || { echo "usage: $0 stop PGDATA" >&2; exit 2; }
    BIN="$(find_bin)"
    as_owner "$BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$(dirname "$DATA")"
    ;;
*)
    echo "usage: $0 start|stop [PGDATA]" >&2
    exit 2
    ;;
esac
