#!/usr/bin/env bash
#
# bench/peers/debezium/run.sh — outbox and Debezium side by side: the same
# adopted table, the same inserts, the same PostgreSQL 15 cluster, the same
# real single-node Apache Kafka (test/kafka/kafka.sh), one after the other.
#
# The table is Debezium's documented outbox shape (id uuid, aggregatetype,
# aggregateid, type, payload jsonb), adopted with outbox.adopt() and read by
# Debezium 3.6.1.Final's PostgreSQL connector (pgoutput, its own slot and
# publication) with its Outbox Event Router, embedded in one JVM
# (DebeziumOutbox.java), producing with an idempotent acks=all producer.
# Both get the same router options except the topic prefix (outbox: ob.*,
# Debezium: dbz.*), so each relay's records are counted on its own topic.
#
#   (i)   drain: N inserts (default 1,000,000, 1000 per transaction) are
#         written while both relays are off, then each drains the backlog
#         alone: events/s acknowledged by Kafka (outbox: until its slot is
#         confirmed past the backlog too)
#   (ii)  latency: commit to consumer at RATE tx/s (one insert each,
#         synchronous_commit on) for DURATION s, each relay alone:
#         p50/p90/p99/max of consumer receive time - commit timestamp of
#         the inserting transaction (found by the record's id header)
#   (iii) memory: peak resident memory of the relay process and of the
#         Debezium JVM during the drain (VmHWM, and the largest RssAnon seen)
#   (iv)  write path: pgbench tps of a transaction that inserts a business
#         row and writes one event: bare (no event), plain (a hand-written
#         table), adopted (insert into the adopted table: what both relays
#         read), adopted_del (insert and delete in the transaction),
#         enqueue (outbox.enqueue())
# Prints each figure and the ratios outbox/Debezium.
#
# Usage: bench/peers/debezium/run.sh [--events N] [--batch B] [--partitions P]
#            [--rate TPS] [--duration S] [--wp-seconds T] [--wp-rounds R]
#            [--wp-clients C] [--skip drain,latency,write] [--pgbin DIR]
#            [--keep]
#
# Needs: a built tree (make; test/broker/kafka_consume), outbox installed
# into the PostgreSQL of --pgbin, Java 17 and Maven (Kafka and Debezium come
# from Maven Central through test/kafka/kafka.sh and debezium.sh), kcat.
#
# bench/peers/debezium/run.sh

set -euo pipefail

PEER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$PEER_DIR/../../.." && pwd)
KAFKA_SH=$ROOT/test/kafka/kafka.sh
DBZ_SH=$PEER_DIR/debezium.sh
CONSUME_BIN=$ROOT/test/broker/kafka_consume

EVENTS=1000000
BATCH=1000
PARTITIONS=16
RATE=1000
DURATION=20
WP_SECONDS=8
WP_ROUNDS=3
WP_CLIENTS=8
SKIP=""
KEEP=0
# Debezium tuning (see bench/README.md): bigger batches and queue for the
# drain, a short poll interval for latency; producer batching as outbox's.
DBZ_DRAIN="max.batch.size=8192 max.queue.size=65536 poll.interval.ms=50"
DBZ_LATENCY="max.batch.size=2048 max.queue.size=8192 poll.interval.ms=5"
PRODUCER_DRAIN="linger.ms=5 batch.size=262144"
PRODUCER_LATENCY="linger.ms=0"

while [ $# -gt 0 ]; do
	case $1 in
	--events) EVENTS=$2; shift 2 ;;
	--batch) BATCH=$2; shift 2 ;;
	--partitions) PARTITIONS=$2; shift 2 ;;
	--rate) RATE=$2; shift 2 ;;
	--duration) DURATION=$2; shift 2 ;;
	--wp-seconds) WP_SECONDS=$2; shift 2 ;;
	--wp-rounds) WP_ROUNDS=$2; shift 2 ;;
	--wp-clients) WP_CLIENTS=$2; shift 2 ;;
	--skip) SKIP=$2; shift 2 ;;
	--pgbin) PGBIN=$2; shift 2 ;;
	--keep) KEEP=1; shift ;;
	-h | --help) sed -n '2,/^# bench\/peers\/debezium\/run.sh$/p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) echo "unknown option $1" >&2; exit 2 ;;
	esac
done

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
skipped() { [[ ",$SKIP," == *",$1,"* ]]; }
now_ms() { date +%s%3N; }
median() { sort -g | awk '{a[NR]=$1} END {if (NR==0) {print "nan"; exit} if (NR%2) print a[(NR+1)/2]; else printf "%.6g\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0 || a == "" || b == "") print "-"; else printf "%.2f", a / b }'; }

as_pg() {
	if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

if [ -z "${PGBIN:-}" ]; then
	command -v pg_config >/dev/null || die "pg_config not found; pass --pgbin DIR"
	PGBIN=$(pg_config --bindir)
fi
[ -x "$PGBIN/postgres" ] || die "no postgres in $PGBIN"
[ -x "$CONSUME_BIN" ] || die "$CONSUME_BIN is not built (run make first)"

TMP=$(mktemp -d "${TMPDIR:-/tmp}/outbox-vs-debezium.XXXXXX")
chmod 755 "$TMP"
[ "$(id -u)" = 0 ] && chown postgres: "$TMP"
PGDATA_DIR=$TMP/data
KDIR=$TMP/kafka
PG_STARTED=0
PIDS=()

cleanup() {
	local rc=$? pid
	set +e
	for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null; done
	for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null; done
	[ "$PG_STARTED" = 1 ] && as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -m immediate -w stop >/dev/null 2>&1
	[ -d "$KDIR" ] && bash "$KAFKA_SH" stop "$KDIR" >/dev/null 2>&1
	if [ "$KEEP" = 1 ] || [ $rc != 0 ]; then
		log "kept $TMP (pg.log, kafka/, dbz-*.err, raw measurements)"
	else
		rm -rf "$TMP"
	fi
	exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------
# Kafka, the Debezium peer, PostgreSQL
# ---------------------------------------------------------------------

log "resolving Kafka and the Debezium peer (Maven; cached in ~/.m2)"
bash "$KAFKA_SH" fetch
LIBS=$(bash "$DBZ_SH" fetch)
mkdir -p "$KDIR"
BOOTSTRAP=$(bash "$KAFKA_SH" start --dir "$KDIR" --nodes 1 --no-auto-create 2>"$TMP/kafka-start.err" | tail -1) ||
	{ cat "$TMP/kafka-start.err" >&2; die "Kafka did not start"; }
bash "$KAFKA_SH" create-topic "$KDIR" ob.Order "$PARTITIONS" 1
bash "$KAFKA_SH" create-topic "$KDIR" dbz.Order "$PARTITIONS" 1
log "Kafka 4.1.1 (single node) at $BOOTSTRAP, topics ob.Order and dbz.Order with $PARTITIONS partitions"

PORT=$(for p in $(seq 55100 55300); do (echo >/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; break; }; done)
as_pg "$PGBIN/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --no-sync >"$TMP/initdb.log" 2>&1 ||
	{ cat "$TMP/initdb.log" >&2; die "initdb failed"; }
as_pg tee -a "$PGDATA_DIR/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$TMP'
port = $PORT
max_connections = 50
wal_level = logical
max_wal_senders = 10
max_replication_slots = 10
track_commit_timestamp = on
synchronous_commit = on
shared_buffers = 512MB
max_wal_size = 16GB
checkpoint_timeout = 30min
shared_preload_libraries = 'outbox'
output_plugin_libraries = 'pgoutput, outbox'
outbox.databases = 'postgres'
outbox.kafka_brokers = ''
outbox.slot_name = 'outbox_bench'
log_line_prefix = '%m [%p] %b '
EOF
echo "host all all 127.0.0.1/32 trust
host replication all 127.0.0.1/32 trust" | as_pg tee -a "$PGDATA_DIR/pg_hba.conf" >/dev/null
as_pg "$PGBIN/pg_ctl" -D "$PGDATA_DIR" -l "$TMP/pg.log" -w -t 60 start >/dev/null ||
	{ tail -20 "$TMP/pg.log" >&2; die "PostgreSQL did not start"; }
PG_STARTED=1
bpsql() { as_pg "$PGBIN/psql" -X -q -At -v ON_ERROR_STOP=1 -h "$TMP" -p "$PORT" -U postgres -d postgres "$@"; }
PGVERSION=$(bpsql -c "SHOW server_version")

bpsql <<'SQL'
CREATE EXTENSION outbox;
-- Debezium's documented outbox table
CREATE TABLE outboxevent (
    id            uuid NOT NULL PRIMARY KEY,
    aggregatetype varchar(255) NOT NULL,
    aggregateid   varchar(255) NOT NULL,
    type          varchar(255) NOT NULL,
    payload       jsonb
);
SELECT outbox.adopt('outboxevent', '{
    "route.topic.replacement": "ob.${routedByValue}",
    "table.fields.additional.placement": "type:header:eventType"}');
CREATE PUBLICATION dbz FOR TABLE outboxevent;
-- the relay's slot (the idle relay may have made it already)
SELECT 1 FROM pg_create_logical_replication_slot('outbox_bench', 'outbox')
 WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'outbox_bench');
SELECT 1 FROM pg_create_logical_replication_slot('dbz', 'pgoutput');
CREATE TABLE lat_raw (who text, id uuid, xid text, recv_us bigint);

-- N inserts in transactions of B: the payload of bench/drain.sh
CREATE PROCEDURE bench_load(n bigint, batch int)
LANGUAGE plpgsql AS $$
DECLARE
	i bigint := 0;
BEGIN
	WHILE i < n LOOP
		INSERT INTO outboxevent
		SELECT gen_random_uuid(), 'Order', 'customer-' || ((g * 7919) % 1000), 'OrderCreated',
		       jsonb_build_object('order_id', g,
		                          'customer_id', 'c-' || ((g * 7919) % 1000),
		                          'amount', round(((g * 37) % 100000) / 100.0, 2),
		                          'currency', 'EUR',
		                          'status', 'created',
		                          'created_at', '2024-05-01T12:00:00Z')
		  FROM generate_series(i, least(i + batch, n) - 1) g;
		COMMIT;
		i := i + batch;
	END LOOP;
END $$;
SQL
# bench/drain.sh's wait: the relay on, polled inside the server
bpsql < "$ROOT/bench/relay_wait.sql"

# The Debezium connector's properties: $1 name, $2 sink settings, then
# "name=value" tuning words (engine first, producer ones prefixed).
dbz_config() {
	local name=$1 f=$TMP/$1.properties
	shift
	cat >"$f" <<EOF
name=$name
connector.class=io.debezium.connector.postgresql.PostgresConnector
offset.storage=org.apache.kafka.connect.storage.FileOffsetBackingStore
offset.storage.file.filename=$TMP/dbz.offsets
offset.flush.interval.ms=1000
database.hostname=127.0.0.1
database.port=$PORT
database.user=postgres
database.dbname=postgres
topic.prefix=bench
plugin.name=pgoutput
slot.name=dbz
publication.name=dbz
publication.autocreate.mode=disabled
table.include.list=public.outboxevent
snapshot.mode=no_data
transforms=outbox
transforms.outbox.type=io.debezium.transforms.outbox.EventRouter
transforms.outbox.route.topic.replacement=dbz.\${routedByValue}
transforms.outbox.table.fields.additional.placement=type:header:eventType
key.converter.class=org.apache.kafka.connect.storage.StringConverter
value.converter.class=org.apache.kafka.connect.storage.StringConverter
header.converter.class=org.apache.kafka.connect.storage.SimpleHeaderConverter
peer.sink=kafka
peer.producer.bootstrap.servers=$BOOTSTRAP
peer.stats=$TMP/$name.stats
EOF
	local kv
	for kv in "$@"; do echo "$kv" >>"$f"; done
	echo "$f"
}

# Largest RssAnon (kB) of PID while it lives or until FILE exists.
sample_rss() {
	local pid=$1 out=$2 stop=$3 max=0 v
	while kill -0 "$pid" 2>/dev/null && [ ! -e "$stop" ]; do
		v=$(awk '/^RssAnon:/ {print $2}' "/proc/$pid/status" 2>/dev/null || echo 0)
		[ "${v:-0}" -gt "$max" ] && max=$v
		sleep 0.2
	done
	echo "$max" >"$out"
}
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
relay_pid() { bpsql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'"; }

relay_on() {
	bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = '$BOOTSTRAP'" >/dev/null
	bpsql -c "SELECT pg_reload_conf()" >/dev/null
}
relay_off() {
	bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = ''" -c "SELECT pg_reload_conf()" >/dev/null
}

declare -A R	# results

# ---------------------------------------------------------------------
# (i) drain and (iii) memory
# ---------------------------------------------------------------------
if ! skipped drain; then
	START_LSN=$(bpsql -c "SELECT pg_current_wal_lsn()")
	log "loading $EVENTS inserts into the adopted table, $BATCH per transaction ..."
	t0=$(now_ms)
	bpsql -c "CALL bench_load($EVENTS, $BATCH)"
	t1=$(now_ms)
	END_LSN=$(bpsql -c "SELECT pg_current_wal_lsn()")
	bpsql -c "CHECKPOINT"
	log "backlog: $((($(bpsql -c "SELECT pg_wal_lsn_diff('$END_LSN', '$START_LSN')::bigint")) / 1048576)) MiB of WAL, loaded in $(((t1 - t0) / 1000)) s"

	# outbox
	rpid=$(relay_pid)
	[ -n "$rpid" ] || die "no relay process"
	sample_rss "$rpid" "$TMP/relay.rss" "$TMP/relay.done" &
	PIDS+=($!)
	log "outbox: relay on, draining"
	res=$(bpsql -F ' ' -c "ALTER SYSTEM SET outbox.kafka_brokers = '$BOOTSTRAP'" \
		-c "SELECT coalesce(first_s, -1), coalesce(delivered_s, -1), coalesce(confirmed_s, -1), delivered FROM bench_relay_wait($EVENTS, '$END_LSN', 900)")
	read -r o_first o_acked o_total o_n <<<"$res"
	[ "$o_total" != -1 ] || die "outbox relay did not finish: $o_n delivered"
	R[ob_hwm]=$(hwm "$rpid")
	touch "$TMP/relay.done"
	wait "${PIDS[-1]}"
	R[ob_rss]=$(cat "$TMP/relay.rss")
	relay_off
	R[ob_rate]=$(awk -v n="$EVENTS" -v s="$o_total" 'BEGIN { printf "%.0f", n / s }')
	R[ob_rate_acked]=$(awk -v n="$EVENTS" -v s="$o_acked" 'BEGIN { printf "%.0f", n / s }')
	log "outbox: first ack ${o_first}s, all acked ${o_acked}s, slot confirmed ${o_total}s: ${R[ob_rate]} ev/s; relay VmHWM ${R[ob_hwm]} kB, RssAnon max ${R[ob_rss]} kB"

	# Debezium
	# shellcheck disable=SC2086
	cfg=$(dbz_config dbz-drain peer.expect="$EVENTS" peer.timeout.s=1800 $DBZ_DRAIN \
		$(for kv in $PRODUCER_DRAIN; do echo "peer.producer.$kv"; done))
	log "Debezium: drain ($DBZ_DRAIN; producer $PRODUCER_DRAIN)"
	bash "$DBZ_SH" run "$cfg" >"$TMP/dbz-drain.out" 2>"$TMP/dbz-drain.err" &
	jpid=$!
	PIDS+=($jpid)
	sample_rss "$jpid" "$TMP/dbz.rss" "$TMP/dbz.done" &
	spid=$!
	wait "$jpid" || { grep -v ' INFO ' "$TMP/dbz-drain.err" | tail -20 >&2; die "Debezium drain failed"; }
	wait "$spid"
	R[dbz_rss]=$(cat "$TMP/dbz.rss")
	read -r d_start d_first d_last d_hwm < <(perl -MJSON::PP -ne '$j = decode_json($_); print "$j->{jvm_start_ms} $j->{first_ms} $j->{last_ms} $j->{vm_hwm_kb}\n"' "$TMP/dbz-drain.stats")
	R[dbz_hwm]=$d_hwm
	R[dbz_total_s]=$(awk -v a="$d_start" -v b="$d_last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
	R[dbz_stream_s]=$(awk -v a="$d_first" -v b="$d_last" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
	R[dbz_first_s]=$(awk -v a="$d_start" -v b="$d_first" 'BEGIN { printf "%.3f", (b - a) / 1000 }')
	R[dbz_rate]=$(awk -v n="$EVENTS" -v s="${R[dbz_total_s]}" 'BEGIN { printf "%.0f", n / s }')
	R[dbz_rate_stream]=$(awk -v n="$EVENTS" -v s="${R[dbz_stream_s]}" 'BEGIN { printf "%.0f", n / s }')
	log "Debezium: first record ${R[dbz_first_s]}s after JVM start, all acked ${R[dbz_total_s]}s: ${R[dbz_rate]} ev/s (${R[dbz_rate_stream]} ev/s from the first record); JVM VmHWM ${R[dbz_hwm]} kB, RssAnon max ${R[dbz_rss]} kB"
	R[o_first]=$o_first
	R[o_acked]=$o_acked
	R[o_total]=$o_total
fi

# ---------------------------------------------------------------------
# (ii) latency
# ---------------------------------------------------------------------

cat >"$TMP/enqueue.sql" <<'EOF'
\set k random(0, 999)
\set o random(1, 1000000000)
SELECT outbox.enqueue('ob.Order', 'customer-' || :k, jsonb_build_object('order_id', :o, 'customer_id', 'c-' || :k, 'amount', round((:o % 100000) / 100.0, 2), 'currency', 'EUR', 'status', 'created', 'created_at', '2024-05-01T12:00:00Z'), '{"eventType": "OrderCreated"}');
EOF
cat >"$TMP/insert.sql" <<'EOF'
\set k random(0, 999)
\set o random(1, 1000000000)
INSERT INTO outboxevent VALUES (gen_random_uuid(), 'Order', 'customer-' || :k, 'OrderCreated', jsonb_build_object('order_id', :o, 'customer_id', 'c-' || :k, 'amount', round((:o % 100000) / 100.0, 2), 'currency', 'EUR', 'status', 'created', 'created_at', '2024-05-01T12:00:00Z'));
EOF
chmod 644 "$TMP/insert.sql" "$TMP/enqueue.sql"

# latency WHO TOPIC [SCRIPT]: consumer from the end, warm-up, pgbench, then
# the percentiles of receive time - commit time of the inserting
# transaction, found by the id header (the row's xmin), or for
# outbox.enqueue() by the outbox-xid header.
latency() {
	local who=$1 topic=$2 script=${3:-insert} cons i
	: >"$TMP/$who.consume"
	# gives up after 20 s without records (Debezium may still be starting)
	"$CONSUME_BIN" -b "$BOOTSTRAP" -t "$topic" --from-end --idle-ms 20000 --timeout-ms 0 \
		>"$TMP/$who.consume" 2>"$TMP/$who.consume.err" &
	cons=$!
	PIDS+=($cons)
	sleep 2
	for i in $(seq 1 180); do
		bpsql -c "INSERT INTO outboxevent VALUES (gen_random_uuid(), 'Order', 'warmup', 'Warmup', '{}')"
		[ "$(wc -l <"$TMP/$who.consume")" -ge 3 ] && break
		sleep 0.5
	done
	[ "$(wc -l <"$TMP/$who.consume")" -ge 3 ] || die "$who: the consumer saw no warm-up records"
	sleep 1
	# only the transactions of this run count (32-bit xids, as in xmin)
	from_xid=$(bpsql -c "SELECT txid_current() % 4294967296")
	log "$who: pgbench -R $RATE -T $DURATION -c 4 -j 2 (one $script per transaction)"
	as_pg "$PGBIN/pgbench" -n -h "$TMP" -p "$PORT" -U postgres -R "$RATE" -T "$DURATION" -c 4 -j 2 \
		-f "$TMP/$script.sql" postgres >"$TMP/$who.pgbench" 2>&1 || { cat "$TMP/$who.pgbench" >&2; die "pgbench failed"; }
	wait "$cons" || true
	perl -ne 'chomp; my @f = split /\t/, $_, -1; my ($id) = $f[5] =~ /"id":"([0-9a-f-]{36})"/; my ($x) = $f[5] =~ /"outbox-xid":"(\d+)"/;
		print "'"$who"'\t", $id // "\\N", "\t", $x // "\\N", "\t$f[6]\n"' \
		"$TMP/$who.consume" | bpsql -c "COPY lat_raw (who, id, xid, recv_us) FROM STDIN"
	bpsql -F ' ' <<SQL
WITH x AS (
	SELECT r.recv_us, e.xmin AS xid
	  FROM lat_raw r JOIN outboxevent e USING (id)
	 WHERE r.who = '$who' AND '$script' = 'insert' AND e.type <> 'Warmup'
	UNION ALL
	SELECT r.recv_us, r.xid::xid
	  FROM lat_raw r
	 WHERE r.who = '$who' AND '$script' = 'enqueue' AND r.id IS NULL),
l AS (
	SELECT (recv_us - extract(epoch FROM pg_xact_commit_timestamp(xid)) * 1e6) / 1000.0 AS ms
	  FROM x WHERE xid::text::bigint > $from_xid)
SELECT count(*),
       round(percentile_cont(0.5) WITHIN GROUP (ORDER BY ms)::numeric, 2),
       round(percentile_cont(0.9) WITHIN GROUP (ORDER BY ms)::numeric, 2),
       round(percentile_cont(0.99) WITHIN GROUP (ORDER BY ms)::numeric, 2),
       round(max(ms)::numeric, 2)
  FROM l;
SQL
}

if ! skipped latency; then
	# Debezium first, so that it does not have to read the outbox runs'
	# rows first (the relay reads Debezium's run's rows in a moment)
	# shellcheck disable=SC2086
	cfg=$(dbz_config dbz-latency peer.expect=0 $DBZ_LATENCY \
		$(for kv in $PRODUCER_LATENCY; do echo "peer.producer.$kv"; done))
	log "Debezium: streaming ($DBZ_LATENCY; producer $PRODUCER_LATENCY)"
	bash "$DBZ_SH" run "$cfg" >"$TMP/dbz-latency.out" 2>"$TMP/dbz-latency.err" &
	jpid=$!
	PIDS+=($jpid)
	for i in $(seq 1 300); do
		[ "$(bpsql -c "SELECT active FROM pg_replication_slots WHERE slot_name = 'dbz'")" = t ] && break
		kill -0 "$jpid" 2>/dev/null || die "Debezium exited: $(grep -v ' INFO ' "$TMP/dbz-latency.err" | tail -5)"
		sleep 0.5
	done
	read -r R[dbz_lat_n] R[dbz_p50] R[dbz_p90] R[dbz_p99] R[dbz_max] < <(latency debezium dbz.Order)
	kill -TERM "$jpid"
	wait "$jpid" || true
	log "Debezium: ${R[dbz_lat_n]} events, p50 ${R[dbz_p50]} p90 ${R[dbz_p90]} p99 ${R[dbz_p99]} max ${R[dbz_max]} ms"

	relay_on
	read -r R[ob_lat_n] R[ob_p50] R[ob_p90] R[ob_p99] R[ob_max] < <(latency outbox ob.Order)
	log "outbox: ${R[ob_lat_n]} events, p50 ${R[ob_p50]} p90 ${R[ob_p90]} p99 ${R[ob_p99]} max ${R[ob_max]} ms"
	# for reference: outbox.enqueue(), which wakes the relay at commit
	read -r R[eq_lat_n] R[eq_p50] R[eq_p90] R[eq_p99] R[eq_max] < <(latency outbox-enqueue ob.Order enqueue)
	log "outbox, enqueue(): ${R[eq_lat_n]} events, p50 ${R[eq_p50]} p90 ${R[eq_p90]} p99 ${R[eq_p99]} max ${R[eq_max]} ms"
	relay_off
fi

# ---------------------------------------------------------------------
# (iv) write path
# ---------------------------------------------------------------------
VARIANTS="bare plain adopted adopted_del enqueue"
if ! skipped write; then
	bpsql <<'SQL'
CREATE TABLE orders (id bigserial PRIMARY KEY, customer integer NOT NULL,
                     amount numeric(12,2) NOT NULL, created_at timestamptz NOT NULL DEFAULT now());
CREATE TABLE local_message (id bigserial PRIMARY KEY, topic text NOT NULL, key text,
                            payload jsonb, headers jsonb, created_at timestamptz NOT NULL DEFAULT now());
SQL
	PAYLOAD='{"order_id": :id, "customer_id": :c, "amount": 42.50, "currency": "EUR", "status": "created", "created_at": "2026-11-20T12:00:00Z"}'
	for v in $VARIANTS; do
		case $v in
		bare) stmt="SELECT 1;" ;;
		plain) stmt="INSERT INTO local_message (topic, key, payload, headers) VALUES ('Order', 'customer-' || :c, '$PAYLOAD', '{\"eventType\": \"OrderCreated\"}');" ;;
		adopted) stmt="INSERT INTO outboxevent VALUES (gen_random_uuid(), 'Order', 'customer-' || :c, 'OrderCreated', '$PAYLOAD');" ;;
		# pgbench substitutes :eid inside the quotes too
		adopted_del) stmt="INSERT INTO outboxevent VALUES (gen_random_uuid(), 'Order', 'customer-' || :c, 'OrderCreated', '$PAYLOAD') RETURNING id AS eid \\gset
DELETE FROM outboxevent WHERE id = ':eid';" ;;
		enqueue) stmt="SELECT outbox.enqueue('ob.Order', 'customer-' || :c, '$PAYLOAD', '{\"eventType\": \"OrderCreated\"}');" ;;
		esac
		cat >"$TMP/wp_$v.sql" <<EOF
\\set c random(0, 999)
\\set id random(1, 1000000000)
BEGIN;
INSERT INTO orders (customer, amount) VALUES (:c, 42.50);
$stmt
COMMIT;
EOF
		chmod 644 "$TMP/wp_$v.sql"
	done
	wp_run() {
		as_pg "$PGBIN/pgbench" -n -h "$TMP" -p "$PORT" -U postgres -c "$WP_CLIENTS" -j "$WP_CLIENTS" \
			-T "$2" -f "$TMP/wp_$1.sql" postgres >"$TMP/wp.out" 2>&1 || { cat "$TMP/wp.out" >&2; die "pgbench $1 failed"; }
		grep -Eo 'tps = [0-9.]+' "$TMP/wp.out" | head -1 | awk '{print $3}'
	}
	log "write path: warm-up"
	for v in $VARIANTS; do wp_run "$v" 2 >/dev/null; done
	read -r -a vl <<<"$VARIANTS"
	for r in $(seq 1 "$WP_ROUNDS"); do
		line="round $r:"
		for i in $(seq 0 $((${#vl[@]} - 1))); do
			v=${vl[$(((i + r - 1) % ${#vl[@]}))]}
			t=$(wp_run "$v" "$WP_SECONDS")
			echo "$t" >>"$TMP/wp_$v.tps"
			line+=" $v=$(printf %.0f "$t")"
		done
		log "write path $line"
	done
	for v in $VARIANTS; do R[wp_$v]=$(median <"$TMP/wp_$v.tps" | xargs printf '%.0f'); done
fi

# ---------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------
printf '\n%s\n' "outbox vs Debezium 3.6.1.Final: PostgreSQL $PGVERSION, Kafka 4.1.1 single node, $PARTITIONS partitions, $(nproc) cores"
if ! skipped drain; then
	printf '%-62s %14s %14s %8s\n' "drain of $EVENTS events" outbox Debezium ratio
	printf '%-62s %14s %14s %8s\n' "events/s, from start to last ack (outbox: and slot confirmed)" "${R[ob_rate]}" "${R[dbz_rate]}" "$(ratio "${R[ob_rate]}" "${R[dbz_rate]}")"
	printf '%-62s %14s %14s %8s\n' "events/s, from first to last ack" \
		"$(awk -v n="$EVENTS" -v a="${R[o_first]}" -v b="${R[o_acked]}" 'BEGIN { printf "%.0f", n / (b - a) }')" "${R[dbz_rate_stream]}" \
		"$(ratio "$(awk -v n="$EVENTS" -v a="${R[o_first]}" -v b="${R[o_acked]}" 'BEGIN { printf "%.0f", n / (b - a) }')" "${R[dbz_rate_stream]}")"
	printf '%-62s %14s %14s %8s\n' "start to first ack, s" "${R[o_first]}" "${R[dbz_first_s]}" ""
	printf '%-62s %14s %14s %8s\n' "peak RSS (VmHWM), MB" "$((R[ob_hwm] / 1024))" "$((R[dbz_hwm] / 1024))" "$(ratio "${R[ob_hwm]}" "${R[dbz_hwm]}")"
	printf '%-62s %14s %14s %8s\n' "largest anonymous RSS seen, MB" "$((R[ob_rss] / 1024))" "$((R[dbz_rss] / 1024))" "$(ratio "${R[ob_rss]}" "${R[dbz_rss]}")"
fi
if ! skipped latency; then
	printf '%-62s %14s %14s %8s\n' "latency at $RATE tx/s, ms (events: outbox ${R[ob_lat_n]}, Debezium ${R[dbz_lat_n]})" outbox Debezium ratio
	for q in p50 p90 p99 max; do
		printf '%-62s %14s %14s %8s\n' "  $q" "${R[ob_$q]}" "${R[dbz_$q]}" "$(ratio "${R[ob_$q]}" "${R[dbz_$q]}")"
	done
	printf '%-62s %14s %14s %8s\n' "  for reference, outbox.enqueue() (${R[eq_lat_n]} events) p50/p99/max" \
		"${R[eq_p50]}/${R[eq_p99]}/${R[eq_max]}" "" "$(ratio "${R[eq_p50]}" "${R[dbz_p50]}")"

fi
if ! skipped write; then
	printf '%-62s %14s %8s\n' "write path, tps (median of $WP_ROUNDS x ${WP_SECONDS}s, $WP_CLIENTS clients)" tps "vs bare"
	for v in $VARIANTS; do
		printf '%-62s %14s %8s\n' "  $v" "${R[wp_$v]}" "$(ratio "${R[wp_$v]}" "${R[wp_bare]}")"
	done
fi
printf 'debezium tuning: drain [%s, producer %s], latency [%s, producer %s]; JVM %s\n' \
	"$DBZ_DRAIN" "$PRODUCER_DRAIN" "$DBZ_LATENCY" "$PRODUCER_LATENCY" "${OUTBOX_DEBEZIUM_HEAP:--Xms64m -Xmx1g}"
