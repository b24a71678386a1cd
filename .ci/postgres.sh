#!/usr/bin/env bash
# Start a throwaway PostgreSQL for the registry's tests and print the URL they reach it by
# (GATED_TEST_POSTGRES). Sourced by .ci/run; usable alone: `eval "$(.ci/postgres.sh start)"`.
#
# Debian's `postgresql` package, but not its cluster: initdb into a fresh directory, listening on
# a unix socket in that directory only (no TCP port to collide with), as the `postgres` user when
# run as root (the server refuses root), else as the caller. fsync off: the data is thrown away;
# autovacuum off: its workers would hold the tests' databases the tests drop.
# `.ci/postgres.sh stop DIR` stops it and removes the directory.
set -euo pipefail

pg_bin() {
    local bin
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
    [ -n "$bin" ] || { echo "postgres.sh: no /usr/lib/postgresql/*/bin (apt-get install postgresql)" >&2; exit 1; }
    echo "$bin"
}

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
start)
    bin=$(pg_bin)
    dir=$(mktemp -d /tmp/gated-pg.XXXXXX)
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    as_owner "$bin/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    as_owner "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
        -o "-c listen_addresses='' -k $dir -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c autovacuum=off -c max_connections=200" \
        start >/dev/null
    "$bin/psql" -h "$dir" -U postgres -q -v ON_ERROR_STOP=1 -c "CREATE ROLE gated LOGIN CREATEDB" -c "CREATE DATABASE gated OWNER gated"
    echo "export GATED_TEST_POSTGRES='postgresql://gated@/gated?host=$dir'"
    echo "export GATED_TEST_POSTGRES_DIR='$dir'"
    ;;
stop)
    dir=${2:?postgres.sh stop DIR}
    as_owner "$(pg_bin)/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null || true
    rm -rf "$dir"
    ;;
*)
    echo "usage: .ci/postgres.sh start | stop DIR" >&2
    exit 2
    ;;
esac
