#!/usr/bin/env bash
#
# bench/retention.sh — what the relay's retention costs the writers, and how
# fast it deletes.
#
# One cluster with the relay streaming to Kafka (the mock broker by default:
# Kafka is not on the write path, and a broker JVM would only add noise on a
# small machine; --kafka1 / --kafka3 for a real one). Per round:
#
#   1. a backlog of N events (default 300,000) is written with enqueue() and
#      delivered; the script waits until the relay's delivery watermark
#      covers all of it (retention deletes only what Kafka acknowledged);
#   2. off: pgbench writes for T seconds (default 10), C clients (default
#      8), with outbox.retention = 0; every transaction is the one of
#      write_path.sh's enqueue variant (INSERT a business row, SELECT
#      outbox.enqueue(...));
#   3. on: outbox.retention = '1s' (reload) and pgbench writes for T
#      seconds again while the relay deletes the backlog in the background;
#      the rows deleted during the window give the delete rate; then the
#      script waits until the backlog is gone (the rate over the whole
#      backlog is printed too) and sets outbox.retention = 0 again.
#
# Prints every round (tps off, tps on, on/off, rows deleted while pgbench
# ran, delete rates), then the medians. The order is always off, then on
# (the on run consumes the backlog); R rounds (default 3) spread noise.
#
# Usage: bench/retention.sh [--backlog N] [--clients C] [--seconds T]
#            [--rounds R] [--mock | --kafka1 | --kafka3]
#            [--set 'guc = value']... [--pgbin DIR] [--keep]
#
# bench/retention.sh

BENCH_KAFKA=${BENCH_KAFKA:-mock}
. "$(dirname "$0")/lib.sh"

BACKLOG=300000
CLIENTS=8
SECONDS_PER_RUN=10
ROUNDS=3
EXTRA_CONF=""

while [ $# -gt 0 ]; do
	case $1 in
	--backlog) BACKLOG=$2; shift 2 ;;
	--clients) CLIENTS=$2; shift 2 ;;
	--seconds) SECONDS_PER_RUN=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--mock) BENCH_KAFKA=mock; shift ;;
	--kafka1) BENCH_KAFKA=kafka1; shift ;;
	--kafka3) BENCH_KAFKA=kafka3; shift ;;
	--set) EXTRA_CONF+="$2"$'\n'; shift 2 ;;
	--pgbin) PGBIN=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) sed -n '2,30p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

bench_resolve_pgbin
[ -x "$PGBIN/pgbench" ] || die "no pgbench in $PGBIN"

bench_setup_tmp
bench_start_kafka orders 16
bench_init_cluster "synchronous_commit = on
max_connections = 50
outbox.retention = 0
$EXTRA_CONF"
bench_pg_start
bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = '$BENCH_BOOTSTRAP'" -c "SELECT pg_reload_conf()" >/dev/null

log "setting up schema"
bpsql <<'EOF'
CREATE EXTENSION outbox;
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA outbox TO app;
GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb) TO app;
CREATE TABLE public.orders (
    id          bigserial PRIMARY KEY,
    customer    integer NOT NULL,
    amount      numeric(12,2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.orders OWNER TO app;
EOF

# The writers' transaction: write_path.sh's enqueue variant.
PAYLOAD='{"order_id": :id, "customer_id": :c, "amount": 42.50, "currency": "EUR", "status": "created", "created_at": "2026-11-20T12:00:00Z"}'
HEADERS='{"type": "order.created"}'
cat >"$BENCH_TMP/enqueue.sql" <<EOF
\set c random(0, 999)
\set id random(1, 1000000000)
BEGIN;
INSERT INTO public.orders (customer, amount) VALUES (:c, 42.50);
SELECT outbox.enqueue('orders', 'customer-:c', '$PAYLOAD', '$HEADERS');
COMMIT;
EOF
chown -R postgres: "$BENCH_TMP" 2>/dev/null || true

run_pgbench()
{
	local out="$BENCH_TMP/$1.out"
	as_pg "$PGBIN/pgbench" -n -h "$BENCH_SOCK" -p "$BENCH_PORT" -U app -d postgres \
		-c "$CLIENTS" -j "$CLIENTS" -T "$2" -f "$BENCH_TMP/enqueue.sql" >"$out" 2>&1 \
		|| { cat "$out" >&2; die "pgbench failed ($1)"; }
	grep -Eo 'tps = [0-9.]+' "$out" | head -1 | awk '{print $3}'
}

backlog_rows() { bpsql -c "SELECT count(*) FROM outbox.messages WHERE topic = 'backlog'"; }

# Write the backlog (transactions of 50,000 events) and wait until the
# delivery watermark covers its last transaction.
load_backlog()
{
	local left=$BACKLOG n
	while [ "$left" -gt 0 ]; do
		n=$((left < 50000 ? left : 50000))
		bpsql -c "SELECT count(outbox.enqueue('backlog', 'customer-' || (i % 1000), '$(echo "$PAYLOAD" | sed 's/:id/1/; s/:c/1/')', '$HEADERS')) FROM generate_series(1, $n) AS i" >/dev/null
		left=$((left - n))
	done
	local last
	last=$(bpsql -c "SELECT max(published_xid) FROM outbox.messages WHERE topic = 'backlog'")
	local i
	for i in $(seq 1 1200); do
		[ "$(bpsql -c "SELECT coalesce(pg_visible_in_snapshot('$last'::xid8, snapshot), false) FROM outbox.relay_watermark")" = t ] && return 0
		sleep 0.5
	done
	die "the relay did not acknowledge the backlog within 10 minutes: $(bpsql -c 'SELECT state, last_error FROM outbox.relay_status')"
}

set_retention()
{
	bpsql -c "ALTER SYSTEM SET outbox.retention = '$1'" -c "SELECT pg_reload_conf()" >/dev/null
}

log "warm-up"
run_pgbench warmup 2 >/dev/null

printf '%-6s %10s %10s %8s %12s %14s %14s\n' round "off tps" "on tps" "on/off" "deleted(on)" "rows/s(on)" "rows/s(all)"
for r in $(seq 1 "$ROUNDS"); do
	log "round $r: writing and delivering a backlog of $BACKLOG events"
	load_backlog
	sleep 1.5		# older than outbox.retention = 1s
	off=$(run_pgbench "off.$r" "$SECONDS_PER_RUN")
	before=$(backlog_rows)
	t0=$(now_s)
	set_retention 1s
	on=$(run_pgbench "on.$r" "$SECONDS_PER_RUN")
	t1=$(now_s)
	after=$(backlog_rows)
	[ "$after" -gt 0 ] || log "round $r: the backlog was gone before pgbench ended: raise --backlog"
	while [ "$(backlog_rows)" -gt 0 ]; do sleep 0.2; done
	t2=$(now_s)
	set_retention 0
	deleted=$((before - after))
	rate_on=$(echo "scale=0; $deleted / ($t1 - $t0)" | bc)
	rate_all=$(echo "scale=0; $before / ($t2 - $t0)" | bc)
	ratio=$(echo "scale=3; $on / $off" | bc)
	printf '%-6s %10.0f %10.0f %8s %12d %14d %14d\n' "$r" "$off" "$on" "$ratio" "$deleted" "$rate_on" "$rate_all"
	{ echo "$off" >>"$BENCH_TMP/off.tps"; echo "$on" >>"$BENCH_TMP/on.tps"; echo "$ratio" >>"$BENCH_TMP/ratio";
	  echo "$rate_on" >>"$BENCH_TMP/rate_on"; echo "$rate_all" >>"$BENCH_TMP/rate_all"; }
done

printf '%-6s %10.0f %10.0f %8s %12s %14.0f %14.0f\n' median "$(median <"$BENCH_TMP/off.tps")" \
	"$(median <"$BENCH_TMP/on.tps")" "$(median <"$BENCH_TMP/ratio")" "" \
	"$(median <"$BENCH_TMP/rate_on")" "$(median <"$BENCH_TMP/rate_all")"
rows=$(bpsql -c "SELECT count(*) FROM outbox.messages")
echo "retention: kafka[$(bench_kafka_desc)] backlog=$BACKLOG clients=$CLIENTS seconds=$SECONDS_PER_RUN rounds=$ROUNDS enqueue tps on/off=$(median <"$BENCH_TMP/ratio") delete rate while writing=$(median <"$BENCH_TMP/rate_on") rows/s; outbox.messages holds $rows rows at the end"
