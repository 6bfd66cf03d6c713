#!/usr/bin/env bash
#
# test/demo.sh
#    The main job, end to end on one machine, as the transactional outbox
#    pattern is used: a loop, not a pipe.  It installs and builds outbox,
#    starts a real single-node Apache Kafka (test/kafka/kafka.sh, resolved
#    with Maven; the first run downloads it) and one PostgreSQL cluster with
#    two databases:
#      shop       the order service: orders and their events, written in one
#                 transaction (CREATE EXTENSION outbox); the relay publishes
#                 the events to topic "orders" in commit order, consumes the
#                 answers on "order_replies" and records each on its message
#                 (outbox.reply_topic), and publishes again a message still
#                 unanswered after 3 s (outbox.redeliver_interval/_after);
#      inventory  the inventory service's stock, worked by
#                 examples/inventory/inventory: it consumes "orders",
#                 reserves stock in one transaction per order and answers.
#    Three orders: one with enough stock ends confirmed, one without ends
#    failed with the reason, one whose first answer is lost (the service runs
#    with --ignore-first) is redelivered on schedule (attempts 2) and ends
#    confirmed.  Two of them commit in the opposite order from their inserts
#    and arrive in commit order; a rolled-back one leaves no trace.  It shows
#    both topics, the service's log, outbox.messages, the stock and
#    outbox.relay_status, and exits non-zero (FAIL) unless the outcomes are
#    exactly these.
#
#    --keep   leave PostgreSQL, the broker and the inventory service running
#             and print how to reach them
#    --mock   use the local test broker (librdkafka's mock cluster, 3
#             brokers) instead of a real Kafka: for machines without Java
#
set -euo pipefail

. "$(dirname "$0")/lib.sh"

KEEP=0
MOCK=0
for arg in "$@"; do
	case $arg in
	--keep) KEEP=1 ;;
	--mock) MOCK=1 ;;
	*) echo "usage: $0 [--keep] [--mock]" >&2; exit 2 ;;
	esac
done

DEMO_T0=$SECONDS
require_root
install_deps
[ $MOCK -eq 1 ] || install_kafka_deps
build_install

BIN=$(pg_bindir)
WORK=$(mktemp -d /tmp/outbox-demo.XXXXXX)
chown postgres: "$WORK"
PORT=$(free_port 54320)
BROKER_PID=
INVENTORY_PID=
KAFKA_SH=$OUTBOX_BUILD/test/kafka/kafka.sh
INVENTORY=$OUTBOX_BUILD/examples/inventory/inventory

cleanup() {
	if [ $KEEP -eq 0 ]; then
		if [ -n "$INVENTORY_PID" ]; then
			kill "$INVENTORY_PID" 2>/dev/null || true
			wait "$INVENTORY_PID" 2>/dev/null || true
		fi
		runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
		[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
		[ $MOCK -eq 1 ] || bash "$KAFKA_SH" stop "$WORK/kafka" >/dev/null 2>&1 || true
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

# psql_demo DB ARGS...
psql_demo() {
	local db=$1
	shift
	runuser -u postgres -- "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -d "$db" "$@"
}

# wait_until SECONDS COMMAND...: poll COMMAND every 0.2 s; false on timeout.
wait_until() {
	local deadline=$((SECONDS + $1))
	shift
	until "$@"; do
		[ $SECONDS -lt $deadline ] || return 1
		sleep 0.2
	done
}

if [ $MOCK -eq 1 ]; then
	log "starting the local Kafka test broker (librdkafka mock cluster, 3 brokers; --mock)"
	"$OUTBOX_BUILD/test/broker/kafka_mock_broker" --brokers 3 --topic orders:1 \
		--topic order_replies:1 --bootstrap-file "$WORK/bootstrap" --control "$WORK/broker.sock" \
		> "$WORK/broker.log" 2>&1 &
	BROKER_PID=$!
	for _ in $(seq 100); do [ -s "$WORK/bootstrap" ] && break; sleep 0.1; done
	BOOTSTRAP=$(cat "$WORK/bootstrap")
	KAFKA_KIND="the local test broker (mock)"
else
	log "starting a real Apache Kafka $(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$OUTBOX_BUILD/test/kafka/pom.xml") (single node, KRaft; test/kafka/kafka.sh)"
	mkdir -p "$WORK/kafka"
	chown postgres: "$WORK/kafka"
	t0=$SECONDS
	BOOTSTRAP=$(bash "$KAFKA_SH" start --dir "$WORK/kafka" --nodes 1 --no-auto-create 2>"$WORK/kafka-start.log") || {
		cat "$WORK/kafka-start.log" >&2
		echo "Kafka did not start (use --mock for the local test broker)" >&2
		exit 1
	}
	echo "Apache Kafka up in $((SECONDS - t0)) s"
	bash "$KAFKA_SH" create-topic "$WORK/kafka" orders 1 1
	bash "$KAFKA_SH" create-topic "$WORK/kafka" order_replies 1 1
	KAFKA_KIND="a real Apache Kafka (single node)"
fi
echo "bootstrap servers: $BOOTSTRAP ($KAFKA_KIND)"

log "starting PostgreSQL with the outbox relay (port $PORT)"
runuser -u postgres -- "$BIN/initdb" -D "$WORK/pg" -A trust >/dev/null
cat >> "$WORK/pg/postgresql.conf" <<EOF
port = $PORT
listen_addresses = ''
unix_socket_directories = '$WORK'
wal_level = logical
shared_preload_libraries = 'outbox'
output_plugin_libraries = 'pgoutput, test_decoding, outbox'
outbox.databases = 'shop'               # the order service's database
outbox.kafka_brokers = '$BOOTSTRAP'
outbox.reply_topic = 'order_replies'    # the verdicts, recorded on the messages
outbox.redeliver_interval = '1s'        # look for unanswered messages every second,
outbox.redeliver_after = '3s'           # publish again those unanswered for 3 s,
outbox.max_attempts = 5                 # at most 5 publications in all
EOF
sed -n '/^outbox\./p' "$WORK/pg/postgresql.conf"
runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/postgres.log" -w start >/dev/null
runuser -u postgres -- "$BIN/createdb" -h "$WORK" -p "$PORT" shop
runuser -u postgres -- "$BIN/createdb" -h "$WORK" -p "$PORT" inventory

log "database shop (order service): CREATE EXTENSION outbox; an orders table"
psql_demo shop -o /dev/null <<'SQL'
CREATE EXTENSION outbox;
CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, sku text NOT NULL, qty int NOT NULL);
SQL

log "database inventory (inventory service): examples/inventory/schema.sql, the stock"
psql_demo inventory -o /dev/null -f "$OUTBOX_BUILD/examples/inventory/schema.sql"
psql_demo inventory -o /dev/null -c "INSERT INTO stock VALUES ('apple', 10), ('pear', 1), ('plum', 5)"
psql_demo inventory -c "TABLE stock"

relay_streaming() {
	[ "$(psql_demo shop -Atc "SELECT state FROM outbox.relay_status WHERE database = 'shop'")" = streaming ]
}
wait_until 30 relay_streaming || { echo "FAIL: the relay of database shop is not streaming" >&2; exit 1; }

# Outbox ids start at 1 in a new installation: the first order's message
# is id 1 (checked below), and its first answer is the one lost.
log "starting the inventory service (examples/inventory/inventory --ignore-first 1)"
"$INVENTORY" --brokers "$BOOTSTRAP" --topic orders --reply-topic order_replies \
	--conninfo "host=$WORK port=$PORT dbname=inventory user=postgres" --ignore-first 1 \
	> "$WORK/inventory.log" 2>&1 &
INVENTORY_PID=$!
inventory_assigned() {
	kill -0 "$INVENTORY_PID" 2>/dev/null || { cat "$WORK/inventory.log" >&2; return 2; }
	grep -q '^inventory: partitions assigned: orders' "$WORK/inventory.log"
}
wait_until 60 inventory_assigned || {
	echo "FAIL: the inventory service did not get its partition of topic orders" >&2
	cat "$WORK/inventory.log" >&2
	exit 1
}
cat "$WORK/inventory.log"

log "writing orders in database shop (each order and its event in one transaction)"
cat <<'TXT'
  order 1  alice  1 plum   committed; the inventory service's first answer is lost
  order 2  dave   1 apple  ROLLED BACK (neither row nor event exists)
  order 3  bob    2 apple  inserted first, commits last (its transaction sleeps 1 s)
  order 4  carol  3 pear   inserted second, commits first (only 1 pear in stock)
TXT
t_orders=$SECONDS
first_id=$(psql_demo shop -At <<'SQL'
BEGIN;
INSERT INTO orders VALUES (1, 'alice', 'plum', 1);
SELECT outbox.enqueue('orders', 'alice', '{"event":"order_placed","order":1,"sku":"plum","qty":1}');
COMMIT;
SQL
)
if [ "$first_id" != 1 ]; then
	echo "FAIL: the first order's message has id '$first_id', not 1 (--ignore-first 1)" >&2
	exit 1
fi
psql_demo shop -o /dev/null <<'SQL'
BEGIN;  -- rolled back: neither the row nor its event exists
INSERT INTO orders VALUES (2, 'dave', 'apple', 1);
SELECT outbox.enqueue('orders', 'dave', '{"event":"order_placed","order":2,"sku":"apple","qty":1}');
ROLLBACK;
SQL
# Order 3 is inserted first but commits last; order 4 commits in between.
psql_demo shop -o /dev/null <<'SQL' &
BEGIN;
INSERT INTO orders VALUES (3, 'bob', 'apple', 2);
SELECT outbox.enqueue('orders', 'bob', '{"event":"order_placed","order":3,"sku":"apple","qty":2}');
SELECT pg_sleep(1);
COMMIT;
SQL
LATE_COMMIT=$!
sleep 0.3
psql_demo shop -o /dev/null <<'SQL'
BEGIN;
INSERT INTO orders VALUES (4, 'carol', 'pear', 3);
SELECT outbox.enqueue('orders', 'carol', '{"event":"order_placed","order":4,"sku":"pear","qty":3}');
COMMIT;
SQL
wait $LATE_COMMIT

log "the loop at work: verdict/attempts per message, as they change"
state_line() {
	psql_demo shop -Atc "SELECT string_agg(format('%s %s: %s/%s', id, key,
	                          coalesce(confirm_status, CASE WHEN expired_at IS NOT NULL THEN 'expired' END,
	                                   'unanswered'), attempts), ',  ' ORDER BY id)
	                       FROM outbox.messages"
}
# Done when every message has a verdict (or has expired) and one has been
# published again.
loop_done() {
	[ "$(psql_demo shop -Atc "SELECT count(*) FILTER (WHERE confirm_status IS NOT NULL OR expired_at IS NOT NULL) = 3
	                          AND count(*) FILTER (WHERE attempts > 1) > 0 FROM outbox.messages")" = t ]
}
last=
deadline=$((SECONDS + 60))
while :; do
	done=0
	loop_done && done=1
	now=$(state_line)
	if [ "$now" != "$last" ]; then
		printf '  +%2d s  %s\n' $((SECONDS - t_orders)) "$now"
		last=$now
	fi
	[ $done -eq 0 ] || break
	[ $SECONDS -lt $deadline ] || { echo "  (gave up waiting after 60 s)"; break; }
	sleep 0.2
done

log "outbox.messages in database shop (id order is insert order)"
psql_demo shop -c "SELECT id, key, attempts, confirm_status, confirm_detail,
                          round(extract(epoch FROM confirmed_at - published_at), 2) AS answered_after_s
                     FROM outbox.messages ORDER BY id"

# One partition, so Kafka's offsets show the whole stream's order.
log "topic 'orders' (1 partition): offsets follow commit order, not id order; message 1 twice"
"$OUTBOX_BUILD/test/broker/kafka_consume" -b "$BOOTSTRAP" -t orders --idle-ms 1500 2>/dev/null \
	> "$WORK/orders.tsv" || true
awk -F'\t' 'BEGIN { printf "%-6s %-6s %-9s %-7s %s\n", "offset", "key", "outbox-id", "attempt", "value" }
	{ id = "-"; if (match($6, /"outbox-id":"[0-9]+"/)) id = substr($6, RSTART + 13, RLENGTH - 14);
	  at = "1"; if (match($6, /"outbox-attempt":"[0-9]+"/)) at = substr($6, RSTART + 18, RLENGTH - 19);
	  printf "%-6s %-6s %-9s %-7s %s\n", $3, $4, id, at, $5 }' "$WORK/orders.tsv"

log "topic 'order_replies': the inventory service's answers"
"$OUTBOX_BUILD/test/broker/kafka_consume" -b "$BOOTSTRAP" -t order_replies --idle-ms 1500 2>/dev/null |
	awk -F'\t' '{ printf "offset %-3s key %-6s %s\n", $3, $4, $5 }'

log "the inventory service's log"
cat "$WORK/inventory.log"

log "stock in database inventory"
psql_demo inventory -c "TABLE stock"

log "outbox.relay_status"
psql_demo shop -x -c "SELECT * FROM outbox.relay_status"

# The outcomes, exactly.
fail=0
check() {
	local what=$1 want=$2 got=$3
	if [ "$got" = "$want" ]; then
		echo "ok    $what"
	else
		printf 'FAIL  %s\n      want: %s\n      got:  %s\n' "$what" "$want" "$got"
		fail=1
	fi
}
log "checking the outcomes"
check "messages: key, attempts, verdict, detail" \
	"alice 2 confirmed sku plum: 1 reserved, 4 left|bob 1 confirmed sku apple: 2 reserved, 8 left|carol 1 failed sku pear: 1 on hand, 3 ordered" \
	"$(psql_demo shop -Atc "SELECT string_agg(concat_ws(' ', key, attempts, confirm_status, confirm_detail), '|' ORDER BY id)
	                        FROM outbox.messages")"
check "orders in database shop" "1 3 4" \
	"$(psql_demo shop -Atc "SELECT string_agg(id::text, ' ' ORDER BY id) FROM orders")"
check "stock" "apple=8 pear=1 plum=4" \
	"$(psql_demo inventory -Atc "SELECT string_agg(sku || '=' || on_hand, ' ' ORDER BY sku) FROM stock")"
check "topic orders: outbox ids in commit order, then the redelivery" "1 4 3 1" \
	"$(awk -F'\t' '{ if (match($6, /"outbox-id":"[0-9]+"/)) printf "%s%s", sep, substr($6, RSTART + 13, RLENGTH - 14); sep = " " }' "$WORK/orders.tsv")"
check "relay_status: state, replies applied, redelivered, expired" "streaming 3 1 0" \
	"$(psql_demo shop -Atc "SELECT concat_ws(' ', state, replies_applied, redelivered, expired) FROM outbox.relay_status WHERE database = 'shop'")"

if [ $KEEP -eq 1 ]; then
	echo
	echo "left running: psql -h $WORK -p $PORT -d shop (or -d inventory), as postgres"
	echo "              the inventory service, pid $INVENTORY_PID (log $WORK/inventory.log)"
	if [ $MOCK -eq 1 ]; then
		echo "              broker $BOOTSTRAP (pid $BROKER_PID)"
	else
		echo "              Kafka $BOOTSTRAP; stop it with: bash $KAFKA_SH stop $WORK/kafka"
	fi
fi
if [ $fail -ne 0 ]; then
	echo "FAIL: the loop did not end as it should (logs in $WORK unless removed)" >&2
	[ $KEEP -eq 1 ] || tail -30 "$WORK/postgres.log" >&2
	exit 1
fi
log "done in $((SECONDS - DEMO_T0)) s: the loop went through $KAFKA_KIND"
