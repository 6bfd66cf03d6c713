# bench/lib.sh — shared helpers for the outbox benchmarks (sourced, not run).
#
# Provides: a private temporary directory, a throw-away PostgreSQL cluster on
# a Unix socket inside it (run as the "postgres" OS user when we are root),
# the mock Kafka broker, and cleanup on exit.
#
# Inputs (environment, or set by the caller's option parsing):
#   PGBIN       PostgreSQL bin directory (default: `pg_config --bindir`)
#   BENCH_KEEP  1 = keep the temporary directory (logs) after exit
#
# bench/lib.sh

set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKER_BIN="$BENCH_ROOT/test/broker/kafka_mock_broker"
CONSUME_BIN="$BENCH_ROOT/test/broker/kafka_consume"

BENCH_TMP=""
BENCH_PGDATA=""
BENCH_SOCK=""
BENCH_PORT=5432
BENCH_PG_STARTED=0
BENCH_PIDS=()					# background processes we started
BENCH_BOOTSTRAP=""

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# Run a command as the cluster's OS user.
as_pg()
{
	if [ "$(id -u)" = 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

bench_resolve_pgbin()
{
	if [ -z "${PGBIN:-}" ]; then
		command -v pg_config >/dev/null || die "pg_config not found; pass --pgbin DIR or set PGBIN"
		PGBIN=$(pg_config --bindir)
	fi
	[ -x "$PGBIN/postgres" ] || die "no postgres binary in $PGBIN"
	[ -x "$BROKER_BIN" ] || die "$BROKER_BIN is not built (run make, or bash test/run_all.sh, first)"
	[ -x "$CONSUME_BIN" ] || die "$CONSUME_BIN is not built (run make first)"
}

bench_cleanup()
{
	local rc=$?
	local pid
	set +e
	for pid in "${BENCH_PIDS[@]}"; do
		kill -TERM "$pid" 2>/dev/null
	done
	if [ "$BENCH_PG_STARTED" = 1 ]; then
		as_pg "$PGBIN/pg_ctl" -D "$BENCH_PGDATA" -m immediate -w stop >/dev/null 2>&1
	fi
	for pid in "${BENCH_PIDS[@]}"; do
		wait "$pid" 2>/dev/null
	done
	if [ -n "$BENCH_TMP" ]; then
		if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
			log "kept $BENCH_TMP (logs: pg.log, broker.err)"
		else
			rm -rf "$BENCH_TMP"
		fi
	fi
	exit $rc
}

bench_setup_tmp()
{
	BENCH_TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-bench.XXXXXX")
	chmod 755 "$BENCH_TMP"
	if [ "$(id -u)" = 0 ]; then
		chown postgres: "$BENCH_TMP"
	fi
	BENCH_PGDATA="$BENCH_TMP/data"
	BENCH_SOCK="$BENCH_TMP"
	trap bench_cleanup EXIT
	trap 'exit 130' INT TERM
}

# bench_init_cluster "extra postgresql.conf lines"
bench_init_cluster()
{
	as_pg "$PGBIN/initdb" -D "$BENCH_PGDATA" -U postgres -A trust -E UTF8 \
		--no-sync >"$BENCH_TMP/initdb.log" 2>&1 || { cat "$BENCH_TMP/initdb.log" >&2; die "initdb failed"; }
	as_pg tee -a "$BENCH_PGDATA/postgresql.conf" >/dev/null <<EOF
listen_addresses = ''
unix_socket_directories = '$BENCH_SOCK'
port = $BENCH_PORT
wal_level = logical
max_wal_senders = 10
max_replication_slots = 20
shared_preload_libraries = 'outbox'
output_plugin_libraries = 'pgoutput, test_decoding, outbox'
shared_buffers = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
outbox.database = 'postgres'
outbox.kafka_brokers = ''
log_min_messages = 'info'
log_line_prefix = '%m [%p] %b '
$1
EOF
}

bench_pg_start()
{
	as_pg "$PGBIN/pg_ctl" -D "$BENCH_PGDATA" -l "$BENCH_TMP/pg.log" -w -t 60 start >/dev/null \
		|| { tail -20 "$BENCH_TMP/pg.log" >&2; die "PostgreSQL did not start"; }
	BENCH_PG_STARTED=1
}

bench_pg_restart()
{
	as_pg "$PGBIN/pg_ctl" -D "$BENCH_PGDATA" -l "$BENCH_TMP/pg.log" -w -t 60 -m fast restart >/dev/null \
		|| { tail -20 "$BENCH_TMP/pg.log" >&2; die "PostgreSQL did not restart"; }
}

# psql as the cluster superuser; extra arguments are passed on.
bpsql()
{
	as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$BENCH_SOCK" -p "$BENCH_PORT" \
		-U postgres -d postgres "$@"
}

# bench_start_broker "--topic bench:16 ..."
bench_start_broker()
{
	"$BROKER_BIN" --bootstrap-file "$BENCH_TMP/bootstrap" --control "$BENCH_TMP/ctl" \
		"$@" >"$BENCH_TMP/broker.out" 2>"$BENCH_TMP/broker.err" &
	BENCH_PIDS+=($!)
	local i
	for i in $(seq 1 200); do
		[ -s "$BENCH_TMP/bootstrap" ] && break
		kill -0 "${BENCH_PIDS[-1]}" 2>/dev/null || { cat "$BENCH_TMP/broker.err" >&2; die "mock broker exited"; }
		sleep 0.1
	done
	[ -s "$BENCH_TMP/bootstrap" ] || die "mock broker did not start"
	BENCH_BOOTSTRAP=$(cat "$BENCH_TMP/bootstrap")
}

# Median of numbers on stdin (one per line).
median()
{
	sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'
}

# Seconds since the epoch, with fractions.
now_s() { date +%s.%N; }
