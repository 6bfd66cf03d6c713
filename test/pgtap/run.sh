#!/bin/bash
# Run the pgTAP suite against a throwaway cluster.
#
#   test/pgtap/run.sh BINDIR PORT
#
# BINDIR holds initdb, pg_ctl and psql of a server where outbox and pgtap are
# installed; PORT is a free TCP port.  Run it as an unprivileged OS user (the
# postgres user).  Exits with pg_prove's status.
set -euo pipefail

if [ $# -ne 2 ]; then
    echo "usage: $0 BINDIR PORT" >&2
    exit 2
fi
BINDIR=$1
PORT=$2
HERE=$(cd "$(dirname "$0")" && pwd)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-pgtap.XXXXXX")
DATA=$TMP/data
started=no

cleanup() {
    if [ "$started" = yes ]; then
        "$BINDIR/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT

"$BINDIR/initdb" -D "$DATA" -A trust -U postgres --no-sync -E UTF8 --locale=C >"$TMP/initdb.log" 2>&1 ||
    { cat "$TMP/initdb.log" >&2; exit 1; }
cat >>"$DATA/postgresql.conf" <<CONF
wal_level = logical
max_replication_slots = 8
max_wal_senders = 8
output_plugin_libraries = 'pgoutput, test_decoding, outbox'
listen_addresses = 'localhost'
port = $PORT
unix_socket_directories = '$TMP'
fsync = off
CONF
"$BINDIR/pg_ctl" -D "$DATA" -l "$TMP/server.log" -w start >/dev/null ||
    { cat "$TMP/server.log" >&2; exit 1; }
started=yes

export PGHOST=$TMP PGPORT=$PORT PGUSER=postgres PGDATABASE=outbox_pgtap
"$BINDIR/createdb" outbox_pgtap
"$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 \
    -c 'CREATE EXTENSION pgtap' -c 'CREATE EXTENSION outbox'

status=0
pg_prove --psql-bin "$BINDIR/psql" "$HERE"/*.sql || status=$?
exit $status
