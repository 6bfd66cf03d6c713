#!/usr/bin/env bash
#
# test/demo.sh
#    The main job, end to end on one machine: install and build outbox, start
#    a real single-node Apache Kafka (test/kafka/kafka.sh, resolved with
#    Maven; the first run downloads it) and a PostgreSQL cluster running the relay,
#    write sample orders in transactions (some rolled back, two committing
#    in the opposite order from their inserts), and show their events
#    arriving in Kafka in commit order, then outbox.relay_status.
#
#    --keep   leave PostgreSQL and the broker running and print how to reach them
#    --mock   use the local test broker (librdkafka's mock cluster, 3 brokers)
#             instead of a real Kafka: for machines without Java
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
KAFKA_SH=$OUTBOX_BUILD/test/kafka/kafka.sh

cleanup() {
	if [ $KEEP -eq 0 ]; then
		runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/pg" -m fast stop >/dev/null 2>&1 || true
		[ -n "$BROKER_PID" ] && kill "$BROKER_PID" 2>/dev/null || true
		[ $MOCK -eq 1 ] || bash "$KAFKA_SH" stop "$WORK/kafka" >/dev/null 2>&1 || true
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT

psql_demo() {
	runuser -u postgres -- "$BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$WORK" -p "$PORT" -d shop "$@"
}

if [ $MOCK -eq 1 ]; then
	log "starting the local Kafka test broker (librdkafka mock cluster, 3 brokers; --mock)"
	"$OUTBOX_BUILD/test/broker/kafka_mock_broker" --brokers 3 --topic orders:1 \
		--topic order_rows:4 --bootstrap-file "$WORK/bootstrap" --control "$WORK/broker.sock" \
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
	bash "$KAFKA_SH" create-topic "$WORK/kafka" order_rows 4 1
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
outbox.database = 'shop'
outbox.kafka_brokers = '$BOOTSTRAP'
EOF
runuser -u postgres -- "$BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/postgres.log" -w start >/dev/null
runuser -u postgres -- "$BIN/createdb" -h "$WORK" -p "$PORT" shop

log "CREATE EXTENSION outbox; an orders table whose rows are captured too"
psql_demo -o /dev/null <<'SQL'
CREATE EXTENSION outbox;
CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, total numeric(10,2));
SELECT outbox.capture('orders', 'order_rows');
SQL
for _ in $(seq 100); do
	[ "$(psql_demo -Atc "SELECT state FROM outbox.relay_status")" = streaming ] && break
	sleep 0.1
done

log "writing sample orders"
cat <<'TXT'
  order 1  alice  committed
  order 2  bob    ROLLED BACK (neither row nor event exists)
  order 3  bob    committed; a second event in a rolled-back savepoint is discarded
  order 4  carol  inserted first, commits last (its transaction sleeps 1 s)
  order 5  alice  inserted second, commits first
  then: order 3 updated (captured), an outbox.emit() event, a tombstone for carol
TXT
psql_demo -o /dev/null <<'SQL'
BEGIN;
INSERT INTO orders VALUES (1, 'alice', 42.00);
SELECT outbox.enqueue('orders', 'alice', '{"event":"order_placed","order":1,"total":42.00}');
COMMIT;

BEGIN;  -- rolled back: neither the row nor its event exists
INSERT INTO orders VALUES (2, 'bob', 13.37);
SELECT outbox.enqueue('orders', 'bob', '{"event":"order_placed","order":2}');
ROLLBACK;

BEGIN;
INSERT INTO orders VALUES (3, 'bob', 7.50);
SELECT outbox.enqueue('orders', 'bob', '{"event":"order_placed","order":3,"total":7.50}',
                      '{"trace-id":"demo-3"}');
SAVEPOINT s;
SELECT outbox.enqueue('orders', 'bob', '{"event":"discarded_in_savepoint"}');
ROLLBACK TO SAVEPOINT s;
COMMIT;
SQL

# Order 4 is inserted first but commits last; order 5 commits in between.
psql_demo -o /dev/null <<'SQL' &
BEGIN;
INSERT INTO orders VALUES (4, 'carol', 99.00);
SELECT outbox.enqueue('orders', 'carol', '{"event":"order_placed","order":4,"note":"inserted first, committed last"}');
SELECT pg_sleep(1);
COMMIT;
SQL
LATE_COMMIT=$!
sleep 0.3
psql_demo -o /dev/null <<'SQL'
BEGIN;
INSERT INTO orders VALUES (5, 'alice', 5.00);
SELECT outbox.enqueue('orders', 'alice', '{"event":"order_placed","order":5,"note":"inserted second, committed first"}');
COMMIT;
SQL
wait $LATE_COMMIT
psql_demo -o /dev/null <<'SQL'
UPDATE orders SET total = 8.00 WHERE id = 3;
SELECT outbox.emit('orders', 'alice', '{"event":"newsletter_sent"}');
SELECT outbox.enqueue('orders', 'carol', NULL);  -- a tombstone for key carol
SQL

log "outbox.messages in the database (id order is insert order)"
psql_demo -c "SELECT id, topic, key, payload FROM outbox.messages WHERE topic = 'orders' ORDER BY id"

# One partition, so Kafka's offsets show the whole stream's order.
log "events on Kafka topic 'orders' (1 partition): offsets follow commit order, not id order"
"$OUTBOX_BUILD/test/broker/kafka_consume" -b "$BOOTSTRAP" -t orders --idle-ms 1500 2>/dev/null |
	awk -F'\t' 'BEGIN { printf "%-4s %-6s %-6s %-8s %s\n", "part", "offset", "key", "outbox-id", "value  [headers]" }
		{ id = "-"; if (match($6, /"outbox-id":"[0-9]+"/)) id = substr($6, RSTART + 13, RLENGTH - 14);
		  printf "%-4s %-6s %-6s %-8s %s  %s\n", $2, $3, $4, id, $5, $6 }'

log "events on Kafka topic 'order_rows' (captured row changes)"
"$OUTBOX_BUILD/test/broker/kafka_consume" -b "$BOOTSTRAP" -t order_rows --idle-ms 1500 2>/dev/null |
	awk -F'\t' '{ printf "key %-3s %s\n", $4, $5 }'

log "outbox.relay_status"
psql_demo -x -c "SELECT * FROM outbox.relay_status"

if [ $KEEP -eq 1 ]; then
	echo
	if [ $MOCK -eq 1 ]; then
		echo "left running: psql -h $WORK -p $PORT -d shop (as postgres); broker $BOOTSTRAP (pid $BROKER_PID)"
	else
		echo "left running: psql -h $WORK -p $PORT -d shop (as postgres); Kafka $BOOTSTRAP"
		echo "stop Kafka with: bash $KAFKA_SH stop $WORK/kafka"
	fi
fi
log "done in $((SECONDS - DEMO_T0)) s: the events above went through $KAFKA_KIND"
