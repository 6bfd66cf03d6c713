#!/usr/bin/env bash
# bench/drain.sh — how fast does the relay drain a backlog into Kafka?
#
# Builds a throw-away cluster and a Kafka (by default a real single-node
# Apache Kafka from test/kafka/kafka.sh; --kafka3: three nodes, topic with
# replication factor 3 and min.insync.replicas 2; --mock: the mock broker),
# writes a backlog of N events with outbox.enqueue() (R copies of every slot
# are created first, so each run drains the very same WAL), then per run:
#   (a) baseline: pg_recvlogical + test_decoding drains the backlog to
#       /dev/null (bare logical decoding, no Kafka);
#   (b) decoder:  pg_recvlogical + the outbox plugin to /dev/null, in the
#       binary format the relay decodes (--decoder-format json: JSON), so
#       our decoder alone, output discarded, no Kafka (decode-only);
#   (c) outbox:   the relay is switched on (outbox.kafka_brokers set, config
#       reloaded) and timed until relay_status shows delivered = N,
#       in_flight = 0 and confirmed_lsn >= the backlog's end LSN (polled
#       every 20 ms inside the server); then the relay's peak resident
#       memory (VmHWM in /proc) is read.
#   (d) with --eos: the same backlog once more, from a slot of its own, by
#       the relay with outbox.delivery = exactly_once (Kafka transactions,
#       default batching), timed the same way.
# With --replies N (a real Kafka), outbox.reply_topic is set to a topic
# bench-replies of 4 partitions and, before each run switches the relay on,
# N replies {"id": ..., "status": "confirmed"} for messages of the backlog
# are produced there: the relay drains the backlog and applies the replies
# at the same time; the time until all are applied (replies_applied in
# relay_status) and the replies/s are printed after the run's line.
# Prints events/s for each, the outbox/decoder and outbox/baseline ratios,
# the relay's peak memory, the median over the runs and a final one-line
# summary with the targets (outbox >= 95% of decode-only, relay <= 64 MB;
# with --eos also exactly_once >= 80% of at_least_once).
#
# Usage: bench/drain.sh [--events N] [--runs R] [--batch B] [--pgbin DIR]
#                       [--kafka3 | --mock] [--partitions P]
#                       [--decoder-format binary|json] [--no-plugin-baseline]
#                       [--relay-props 'name=value;...'] [--set 'guc = value']...
#                       [--replies N] [--eos] [--keep]
#
# bench/drain.sh

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

EVENTS=1000000
RUNS=1
BATCH=1000
PARTITIONS=16
PLUGIN_BASELINE=1
DECODER_FORMAT=binary
RELAY_PROPS=""
EXTRA_CONF=""
TIMEOUT_S=600
REPLIES=0
EOS=0

usage()
{
	sed -n '2,/^# bench\/drain.sh$/p' "$0" | sed 's/^# \{0,1\}//' >&2
	exit 2
}

while [ $# -gt 0 ]; do
	case "$1" in
		--events) EVENTS=$2; shift 2 ;;
		--runs) RUNS=$2; shift 2 ;;
		--batch) BATCH=$2; shift 2 ;;
		--partitions) PARTITIONS=$2; shift 2 ;;
		--pgbin) PGBIN=$2; shift 2 ;;
		--relay-props) RELAY_PROPS=$2; shift 2 ;;
		--set) EXTRA_CONF+="$2"$'\n'; shift 2 ;;
		--replies) REPLIES=$2; shift 2 ;;
		--no-plugin-baseline) PLUGIN_BASELINE=0; shift ;;
		--decoder-format) DECODER_FORMAT=$2; shift 2 ;;
		--kafka3) BENCH_KAFKA=kafka3; shift ;;
		--mock) BENCH_KAFKA=mock; shift ;;
		--timeout) TIMEOUT_S=$2; shift 2 ;;
		--keep) BENCH_KEEP=1; shift ;;
		--eos) EOS=1; shift ;;
		-h|--help) usage ;;
		*) echo "unknown argument: $1" >&2; usage ;;
	esac
done
[[ "$EVENTS" =~ ^[0-9]+$ && "$EVENTS" -gt 0 ]] || die "--events wants a positive number"
[[ "$RUNS" =~ ^[0-9]+$ && "$RUNS" -gt 0 ]] || die "--runs wants a positive number"
[[ "$BATCH" =~ ^[0-9]+$ && "$BATCH" -gt 0 ]] || die "--batch wants a positive number"
[[ "$DECODER_FORMAT" =~ ^(binary|json)$ ]] || die "--decoder-format wants binary or json"

bench_resolve_pgbin
bench_setup_tmp

log "cluster in $BENCH_TMP (PostgreSQL from $PGBIN)"
bench_start_kafka bench "$PARTITIONS"
if [ "$REPLIES" -gt 0 ]; then
	[ "$BENCH_KAFKA" = mock ] && die "--replies needs a real Kafka (consumer groups)"
	bash "$KAFKA_SH" create-topic "$BENCH_KAFKA_DIR" bench-replies 4 1 1 \
		>>"$BENCH_TMP/kafka-start.log" 2>&1 || die "could not create topic bench-replies"
	EXTRA_CONF+="outbox.reply_topic = 'bench-replies'"$'\n'
fi
bench_init_cluster "outbox.slot_name = 'outbox_1'
$EXTRA_CONF"
bench_pg_start

bpsql <<'SQL'
CREATE EXTENSION outbox;

-- The backlog: N events in transactions of B, through the public API.
-- Payload ~110 bytes of JSON, keys spread over 1000 values, one header.
CREATE PROCEDURE bench_load(n bigint, batch int)
LANGUAGE plpgsql AS $$
DECLARE
	i bigint := 0;
BEGIN
	WHILE i < n LOOP
		PERFORM outbox.enqueue('bench',
			'customer-' || ((g * 7919) % 1000),
			jsonb_build_object('order_id', g,
			                   'customer_id', 'c-' || ((g * 7919) % 1000),
			                   'amount', round(((g * 37) % 100000) / 100.0, 2),
			                   'currency', 'EUR',
			                   'status', 'created',
			                   'created_at', '2024-05-01T12:00:00Z'),
			'{"type": "order.created"}')
		  FROM generate_series(i, least(i + batch, n) - 1) g;
		COMMIT;
		i := i + batch;
	END LOOP;
END $$;
SQL
bpsql < "$BENCH_ROOT/bench/relay_wait.sql"

# One test_decoding, one outbox-plugin and one relay slot per run, all made
# before the backlog so that every run decodes exactly the same WAL.  The
# idle relay creates its own slot (outbox_1) at start-up: wait for that.
for i in $(seq 1 600); do
	[ "$(bpsql -c "SELECT state FROM outbox.relay_status")" = disabled ] && break
	sleep 0.1
done
for r in $(seq 1 "$RUNS"); do
	bpsql -c "SELECT pg_create_logical_replication_slot('td_$r', 'test_decoding')" >/dev/null
	[ "$PLUGIN_BASELINE" = 1 ] &&
		bpsql -c "SELECT pg_create_logical_replication_slot('oj_$r', 'outbox')" >/dev/null
	bpsql -c "SELECT pg_create_logical_replication_slot('outbox_$r', 'outbox')
	            WHERE NOT EXISTS (SELECT FROM pg_replication_slots WHERE slot_name = 'outbox_$r')" >/dev/null
	[ "$EOS" = 1 ] &&
		bpsql -c "SELECT pg_create_logical_replication_slot('eos_$r', 'outbox')" >/dev/null
done

START_LSN=$(bpsql -c "SELECT pg_current_wal_lsn()")
log "loading $EVENTS events in transactions of $BATCH ..."
t0=$(now_s)
bpsql -c "CALL bench_load($EVENTS, $BATCH)"
t1=$(now_s)
END_LSN=$(bpsql -c "SELECT pg_current_wal_lsn()")
WAL_BYTES=$(bpsql -c "SELECT pg_wal_lsn_diff('$END_LSN', '$START_LSN')::bigint")
LOAD_S=$(echo "$t1 - $t0" | bc -l)
bpsql -c "CHECKPOINT"
log "backlog: $EVENTS events, $((WAL_BYTES / 1048576)) MiB of WAL ($START_LSN .. $END_LSN), loaded in $(printf %.1f "$LOAD_S") s ($(printf %.0f "$(echo "$EVENTS / $LOAD_S" | bc -l)") enqueues/s)"

recvlogical_drain()
{
	local slot=$1 t_start t_end
	shift
	t_start=$(now_s)
	as_pg "$PGBIN/pg_recvlogical" -h "$BENCH_SOCK" -p "$BENCH_PORT" -U postgres -d postgres \
		--start -S "$slot" --endpos "$END_LSN" --no-loop -f /dev/null "$@" \
		2>>"$BENCH_TMP/recvlogical.err" || die "pg_recvlogical on $slot failed: $(tail -3 "$BENCH_TMP/recvlogical.err")"
	t_end=$(now_s)
	echo "$t_end - $t_start" | bc -l
}

rate() { printf '%.0f' "$(echo "$EVENTS / $1" | bc -l)"; }

# VmHWM (peak resident set) and RssShmem of the relay process, in kB, and
# the CPU seconds (user + system, all its threads) it has used so far.
relay_memory()
{
	local pid cpu
	pid=$(bpsql -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'outbox relay'")
	[ -n "$pid" ] && [ -r "/proc/$pid/status" ] || { echo "- - -"; return; }
	cpu=$(awk -v hz="$(getconf CLK_TCK)" '{sub(/.*\) /, ""); printf "%.2f", ($12 + $13) / hz}' "/proc/$pid/stat")
	awk -v cpu="$cpu" '/^VmHWM:/ {h=$2} /^RssShmem:/ {s=$2} END {print h, s, cpu}' "/proc/$pid/status"
}

: >"$BENCH_TMP/base.txt" ; : >"$BENCH_TMP/plug.txt" ; : >"$BENCH_TMP/relay.txt"
: >"$BENCH_TMP/ratio.txt" ; : >"$BENCH_TMP/dratio.txt" ; : >"$BENCH_TMP/hwm.txt"
: >"$BENCH_TMP/eos.txt" ; : >"$BENCH_TMP/eratio.txt"
log "Kafka: $(bench_kafka_desc); decoder = outbox plugin, $DECODER_FORMAT format, pg_recvlogical to /dev/null"
printf '\n%-6s %13s %13s %13s %8s %8s %8s %8s %8s %8s\n' run "baseline ev/s" "decoder ev/s" "outbox ev/s" \
	"/decoder" "/base" "first_s" "acked_s" "total_s" "hwm_MB" >&2
for r in $(seq 1 "$RUNS"); do
	if [ "$r" -gt 1 ]; then
		# the relay's slot is fixed for the postmaster's life
		bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = ''" -c "ALTER SYSTEM SET outbox.slot_name = 'outbox_$r'"
		bench_pg_restart
		bpsql -c "SELECT pg_drop_replication_slot('outbox_$((r - 1))')" >/dev/null
	fi

	base_s=$(recvlogical_drain "td_$r")
	plug_rate="-"
	if [ "$PLUGIN_BASELINE" = 1 ]; then
		plug_s=$(recvlogical_drain "oj_$r" -o "format=$DECODER_FORMAT")
		plug_rate=$(rate "$plug_s")
		echo "$plug_rate" >>"$BENCH_TMP/plug.txt"
	fi

	read -r _ _ cpu0_s < <(relay_memory)
	if [ "$REPLIES" -gt 0 ]; then
		# replies for messages (r-1)*N+1 .. r*N wait in Kafka for the relay
		applied0=$(bpsql -c "SELECT replies_applied FROM outbox.relay_status")
		seq $(((r - 1) * REPLIES + 1)) $((r * REPLIES)) |
			awk '{ printf "order-%d\t{\"db\":\"postgres\",\"id\":%d,\"status\":\"confirmed\"}\n", $1, $1 }' |
			kcat -P -b "$BENCH_BOOTSTRAP" -t bench-replies -K $'\t' 2>>"$BENCH_TMP/kcat.err" ||
			die "kcat could not produce the replies: $(tail -3 "$BENCH_TMP/kcat.err")"
		t_on=$(now_s)
	fi
	bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = '$BENCH_BOOTSTRAP'" \
		-c "ALTER SYSTEM SET outbox.kafka_properties = '$RELAY_PROPS'"
	res=$(bpsql -F ' ' -c "SELECT coalesce(first_s, -1), coalesce(delivered_s, -1), coalesce(confirmed_s, -1), delivered, state, coalesce(last_error, '') FROM bench_relay_wait($EVENTS, '$END_LSN', $TIMEOUT_S)")
	read -r first_s deliv_s conf_s delivered state lasterr <<<"$res"
	if [ "$conf_s" = "-1" ]; then
		die "run $r: relay did not finish within ${TIMEOUT_S}s: delivered=$delivered state=$state error=$lasterr"
	fi
	if [ "$REPLIES" -gt 0 ]; then
		for i in $(seq 1 $((TIMEOUT_S * 10))); do
			applied=$(bpsql -c "SELECT replies_applied FROM outbox.relay_status")
			[ "$((applied - applied0))" -ge "$REPLIES" ] && break
			sleep 0.1
		done
		replies_s=$(echo "$(now_s) - $t_on" | bc -l)
		log "run $r: $((applied - applied0)) of $REPLIES replies applied $(printf %.2f "$replies_s") s after the relay was switched on ($(printf %.0f "$(echo "($applied - $applied0) / $replies_s" | bc -l)") replies/s, while draining the backlog)"
	fi
	read -r hwm_kb shmem_kb cpu_s < <(relay_memory)
	# the relay's CPU time during the drain (all of it if it is a new process)
	[ "$cpu0_s" != "-" ] && [ "$cpu_s" != "-" ] &&
		cpu_s=$(awk -v a="$cpu_s" -v b="$cpu0_s" 'BEGIN { printf "%.2f", (a >= b ? a - b : a) }')
	bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = ''" -c "SELECT pg_reload_conf()" >/dev/null

	base_rate=$(rate "$base_s")
	relay_rate=$(rate "$conf_s")
	ratio=$(printf '%.3f' "$(echo "$relay_rate / $base_rate" | bc -l)")
	dratio="-"
	[ "$PLUGIN_BASELINE" = 1 ] && dratio=$(printf '%.3f' "$(echo "$relay_rate / $plug_rate" | bc -l)")
	hwm_mb="-"
	[ "$hwm_kb" != "-" ] && hwm_mb=$(printf '%.1f' "$(echo "$hwm_kb / 1024" | bc -l)")
	echo "$base_rate" >>"$BENCH_TMP/base.txt"
	echo "$relay_rate" >>"$BENCH_TMP/relay.txt"
	echo "$ratio" >>"$BENCH_TMP/ratio.txt"
	[ "$dratio" != "-" ] && echo "$dratio" >>"$BENCH_TMP/dratio.txt"
	[ "$hwm_mb" != "-" ] && echo "$hwm_mb" >>"$BENCH_TMP/hwm.txt"
	printf '%-6s %13s %13s %13s %8s %8s %8.3f %8.3f %8.3f %8s\n' "$r" "$base_rate" "$plug_rate" "$relay_rate" \
		"$dratio" "$ratio" "$first_s" "$deliv_s" "$conf_s" "$hwm_mb" >&2
	[ "$hwm_kb" != "-" ] && log "relay peak resident memory (VmHWM) $hwm_mb MB, of which shared memory (RssShmem, now) $((shmem_kb / 1024)) MB; relay CPU time $cpu_s s in ${conf_s} s ($(printf %.0f "$(echo "100 * $cpu_s / $conf_s" | bc -l)")% of one core; machine load average $(cut -d' ' -f1 /proc/loadavg))"
	bpsql -c "SELECT pg_drop_replication_slot('td_$r')" >/dev/null
	[ "$PLUGIN_BASELINE" = 1 ] && bpsql -c "SELECT pg_drop_replication_slot('oj_$r')" >/dev/null

	if [ "$EOS" = 1 ]; then
		# the same backlog again, exactly once, from its own slot
		bpsql -c "ALTER SYSTEM SET outbox.slot_name = 'eos_$r'" \
			-c "ALTER SYSTEM SET outbox.delivery = 'exactly_once'"
		bench_pg_restart
		bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = '$BENCH_BOOTSTRAP'"
		res=$(bpsql -F ' ' -c "SELECT coalesce(confirmed_s, -1), delivered, state, coalesce(last_error, '') FROM bench_relay_wait($EVENTS, '$END_LSN', $TIMEOUT_S)")
		read -r eos_s delivered state lasterr <<<"$res"
		[ "$eos_s" = "-1" ] &&
			die "run $r: exactly_once relay did not finish within ${TIMEOUT_S}s: delivered=$delivered state=$state error=$lasterr"
		eos_rate=$(rate "$eos_s")
		eratio=$(printf '%.3f' "$(echo "$eos_rate / $relay_rate" | bc -l)")
		echo "$eos_rate" >>"$BENCH_TMP/eos.txt"
		echo "$eratio" >>"$BENCH_TMP/eratio.txt"
		log "run $r: exactly_once $eos_rate ev/s in $(printf %.3f "$eos_s") s, $eratio of at_least_once ($relay_rate ev/s)"
		bpsql -c "ALTER SYSTEM SET outbox.kafka_brokers = ''" \
			-c "ALTER SYSTEM SET outbox.delivery = 'at_least_once'" -c "SELECT pg_reload_conf()" >/dev/null
	fi
done

m_base=$(median <"$BENCH_TMP/base.txt")
m_relay=$(median <"$BENCH_TMP/relay.txt")
m_ratio=$(median <"$BENCH_TMP/ratio.txt")
m_plug="-" m_dratio="-" m_hwm="-"
[ "$PLUGIN_BASELINE" = 1 ] && m_plug=$(median <"$BENCH_TMP/plug.txt") && m_dratio=$(median <"$BENCH_TMP/dratio.txt")
[ -s "$BENCH_TMP/hwm.txt" ] && m_hwm=$(sort -g "$BENCH_TMP/hwm.txt" | tail -1)
printf '%-6s %13.0f %13s %13.0f %8s %8s %8s %8s %8s %8s\n\n' median "$m_base" "$m_plug" "$m_relay" "$m_dratio" "$m_ratio" "" "" "" "$m_hwm" >&2

# Targets of issue 7: outbox >= 95% of decode-only; relay <= 64 MB resident.
v_rate=$(awk -v r="$m_dratio" 'BEGIN { if (r == "-") print "not measured"; else print (r >= 0.95 ? "met" : "MISSED") }')
v_mem=$(awk -v m="$m_hwm" 'BEGIN { if (m == "-") print "not measured"; else print (m <= 64 ? "met" : "MISSED") }')
printf 'drain: kafka[%s] events=%d runs=%d replies=%d relay_props[%s] outbox=%.0f ev/s decoder(outbox %s, decode-only)=%s ev/s baseline(test_decoding)=%.0f ev/s outbox/decoder=%s outbox/baseline=%s relay VmHWM max=%s MB; target outbox/decoder>=0.95: %s; target VmHWM<=64 MB: %s\n' \
	"$(bench_kafka_desc)" "$EVENTS" "$RUNS" "$REPLIES" "$RELAY_PROPS" "$m_relay" "$DECODER_FORMAT" "$m_plug" "$m_base" \
	"$m_dratio" "$m_ratio" "$m_hwm" "$v_rate" "$v_mem"
if [ "$EOS" = 1 ]; then
	m_eos=$(median <"$BENCH_TMP/eos.txt")
	m_eratio=$(median <"$BENCH_TMP/eratio.txt")
	v_eos=$(awk -v r="$m_eratio" 'BEGIN { print (r >= 0.8 ? "met" : "MISSED") }')
	printf 'drain exactly_once: kafka[%s] events=%d runs=%d exactly_once=%.0f ev/s at_least_once=%.0f ev/s exactly_once/at_least_once=%s; target >= 0.80: %s\n' \
		"$(bench_kafka_desc)" "$EVENTS" "$RUNS" "$m_eos" "$m_relay" "$m_eratio" "$v_eos"
fi
