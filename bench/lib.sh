# bench/lib.sh — shared helpers for the outbox benchmarks (sourced, not run).
#
# Provides: a private temporary directory, a throw-away PostgreSQL cluster on
# a Unix socket inside it (run as the "postgres" OS user when we are root),
# a Kafka to produce to (a real Apache Kafka from test/kafka/kafka.sh, one
# node or three, or the mock broker), and cleanup on exit.
#
# Inputs (environment, or set by the caller's option parsing):
#   PGBIN        PostgreSQL bin directory (default: `pg_config --bindir`)
#   BENCH_KEEP   1 = keep the temporary directory (logs) after exit
#   BENCH_KAFKA  kafka1 (default: real Apache Kafka, single node), kafka3
#                (3 nodes, topic with replication factor 3 and
#                min.insync.replicas 2) or mock (test/broker/kafka_mock_broker)
#
# bench/lib.sh

set -euo pipefail

BENCH_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BROKER_BIN="$BENCH_ROOT/test/broker/kafka_mock_broker"
CONSUME_BIN="$BENCH_ROOT/test/broker/kafka_consume"
KAFKA_SH="$BENCH_ROOT/test/kafka/kafka.sh"
BENCH_KAFKA=${BENCH_KAFKA:-kafka1}

BENCH_TMP=""
BENCH_PGDATA=""
BENCH_SOCK=""
BENCH_PORT=5432
BENCH_PG_STARTED=0
BENCH_PIDS=()					# background processes we started
BENCH_BOOTSTRAP=""
BENCH_KAFKA_DIR=""				# the real cluster's directory, if any

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
	case $BENCH_KAFKA in
	mock) [ -x "$BROKER_BIN" ] || die "$BROKER_BIN is not built (run make, or bash test/run_all.sh, first)" ;;
	kafka1 | kafka3)
		command -v java >/dev/null || die "a real Kafka needs Java 17 (or pass --mock)"
		command -v mvn >/dev/null || die "a real Kafka needs Maven (or pass --mock)"
		;;
	*) die "BENCH_KAFKA must be kafka1, kafka3 or mock" ;;
	esac
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
	if [ -n "$BENCH_KAFKA_DIR" ]; then
		bash "$KAFKA_SH" stop "$BENCH_KAFKA_DIR" >/dev/null 2>&1
	fi
	for pid in "${BENCH_PIDS[@]}"; do
		wait "$pid" 2>/dev/null
	done
	if [ -n "$BENCH_TMP" ]; then
		if [ "${BENCH_KEEP:-0}" = 1 ] || [ $rc != 0 ]; then
			log "kept $BENCH_TMP (logs: pg.log, broker.err or kafka/n*/logs)"
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
outbox.databases = 'postgres'
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

# bench_start_kafka TOPIC PARTITIONS: the Kafka of BENCH_KAFKA with the topic
# TOPIC; sets BENCH_BOOTSTRAP.  A real cluster runs from test/kafka/kafka.sh
# in $BENCH_TMP/kafka with auto topic creation off (3 nodes: replication
# factor 3, min.insync.replicas 2; the relay's idempotent producer uses
# acks=all); the mock broker gets 3 brokers and replication 3.
bench_start_kafka()
{
	local topic=$1 partitions=$2
	if [ "$BENCH_KAFKA" = mock ]; then
		bench_start_broker --topic "$topic:$partitions"
		log "mock broker at $BENCH_BOOTSTRAP"
		return
	fi
	local nodes=1 rf=1 isr=1
	[ "$BENCH_KAFKA" = kafka3 ] && { nodes=3; rf=3; isr=2; }
	BENCH_KAFKA_DIR=$BENCH_TMP/kafka
	mkdir -p "$BENCH_KAFKA_DIR"
	log "starting a real Apache Kafka ($nodes node(s)) with test/kafka/kafka.sh ..."
	bash "$KAFKA_SH" start --dir "$BENCH_KAFKA_DIR" --nodes "$nodes" --no-auto-create \
		>"$BENCH_TMP/kafka-start.log" 2>&1 || { tail -20 "$BENCH_TMP/kafka-start.log" >&2; die "Kafka did not start"; }
	bash "$KAFKA_SH" create-topic "$BENCH_KAFKA_DIR" "$topic" "$partitions" "$rf" "$isr" \
		>>"$BENCH_TMP/kafka-start.log" 2>&1 || { tail -20 "$BENCH_TMP/kafka-start.log" >&2; die "could not create topic $topic"; }
	BENCH_BOOTSTRAP=$(cat "$BENCH_KAFKA_DIR/bootstrap")
	log "Apache Kafka ($nodes node(s)) at $BENCH_BOOTSTRAP, topic $topic: $partitions partitions, replication factor $rf, min.insync.replicas $isr"
}

# A description of the Kafka in use, for the summary lines.
bench_kafka_desc()
{
	case $BENCH_KAFKA in
	mock) echo "mock broker" ;;
	kafka1) echo "Apache Kafka, 1 node" ;;
	kafka3) echo "Apache Kafka, 3 nodes, RF 3, min.insync.replicas 2" ;;
	esac
}

# Median of numbers on stdin (one per line).
median()
{
	sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'
}

# Seconds since the epoch, with fractions.
now_s() { date +%s.%N; }
