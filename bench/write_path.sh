#!/usr/bin/env bash
#
# bench/write_path.sh — what writing an event costs the writing transaction.
#
# pgbench, C clients (default 8), synchronous_commit = on, relay idle
# (extension installed and preloaded, outbox.kafka_brokers = ''). Every
# transaction is
#
#     BEGIN; INSERT a business row; <one more statement>; COMMIT;
#
# and the variants differ only in that one statement:
#
#     bare     SELECT 1
#     plain    INSERT INTO local_message (...) VALUES (...)   -- a hand-written outbox
#     enqueue  SELECT outbox.enqueue(...)
#     emit     SELECT outbox.emit(...)
#
# and, on request (--variants), plain_id: the plain INSERT ... RETURNING id,
# which sends the client a row as enqueue() does (it returns the id).
#
# The variants run in R interleaved rounds of T seconds each, in a rotated
# order per round, so that machine noise hits all of them alike. Prints
# every round, then per variant the median tps and its ratios to bare and to
# plain, and the same for the server's CPU time per transaction (all of the
# cluster's processes, from /proc: backends, walwriter, the idle relay),
# which the machine's noise moves much less than tps: a cost, so lower is
# better there. Then per variant pgbench's own CPU time per transaction (the
# client shares the machine's cores with the server) and the paired ratios:
# the median over the rounds of each round's ratio to plain's run in that
# round, which the machine's drift from round to round does not move.
#
# Usage: bench/write_path.sh [--clients C] [--seconds T] [--rounds R]
#            [--variants "bare plain enqueue emit"] [--protocol simple|prepared]
#            (plain_id may be added to the variants)
#            [--key literal|concat]
#            [--sql STMT]... [--set 'guc = value']... [--pgbin DIR] [--keep]
#
#   --key        how the statements give the record key: 'customer-:c', a
#                literal pgbench fills in (default), or 'customer-' || :c,
#                an expression the server plans every time (text || integer
#                is an SQL function that the planner inlines, parsing its
#                body again for every statement).  Earlier figures used
#                concat.
#   --sql STMT   run STMT (as superuser) after CREATE EXTENSION, e.g.
#                --sql 'DROP INDEX outbox.messages_confirmed_idx'
#                to measure what an index of outbox.messages costs.
#
# bench/write_path.sh

. "$(dirname "$0")/lib.sh"

CLIENTS=8
SECONDS_PER_RUN=10
ROUNDS=3
VARIANTS="bare plain enqueue emit"
PROTOCOL=simple
KEY_FORM=literal
EXTRA_SQL=()
EXTRA_CONF=""

while [ $# -gt 0 ]; do
	case $1 in
	--clients) CLIENTS=$2; shift 2 ;;
	--seconds) SECONDS_PER_RUN=$2; shift 2 ;;
	--rounds) ROUNDS=$2; shift 2 ;;
	--variants) VARIANTS=$2; shift 2 ;;
	--protocol) PROTOCOL=$2; shift 2 ;;
	--key) KEY_FORM=$2; shift 2 ;;
	--sql) EXTRA_SQL+=("$2"); shift 2 ;;
	--set) EXTRA_CONF+="$2"$'\n'; shift 2 ;;
	--pgbin) PGBIN=$2; shift 2 ;;
	--keep) BENCH_KEEP=1; shift ;;
	-h|--help) sed -n '2,48p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
	*) die "unknown option $1 (see --help)" ;;
	esac
done

if [ -z "${PGBIN:-}" ]; then
	command -v pg_config >/dev/null || die "pg_config not found; pass --pgbin DIR or set PGBIN"
	PGBIN=$(pg_config --bindir)
fi
[ -x "$PGBIN/pgbench" ] || die "no pgbench in $PGBIN"
for v in $VARIANTS; do
	case $v in bare|plain|plain_id|enqueue|emit) ;; *) die "unknown variant $v" ;; esac
done
case $KEY_FORM in
literal) KEY="'customer-:c'" ;;
concat) KEY="'customer-' || :c" ;;
*) die "unknown key form $KEY_FORM (literal or concat)" ;;
esac

bench_setup_tmp
bench_init_cluster "synchronous_commit = on
max_connections = 50
$EXTRA_CONF"
bench_pg_start

log "setting up schema"
bpsql <<'EOF'
CREATE EXTENSION outbox;
CREATE ROLE app LOGIN;
GRANT USAGE ON SCHEMA outbox TO app;
GRANT EXECUTE ON FUNCTION outbox.enqueue(text, text, jsonb, jsonb),
                          outbox.emit(text, text, jsonb, jsonb) TO app;
CREATE TABLE public.orders (
    id          bigserial PRIMARY KEY,
    customer    integer NOT NULL,
    amount      numeric(12,2) NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);
-- The hand-written outbox that enqueue() replaces.
CREATE TABLE public.local_message (
    id          bigserial PRIMARY KEY,
    topic       text NOT NULL,
    key         text,
    payload     jsonb,
    headers     jsonb,
    created_at  timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE public.orders OWNER TO app;
ALTER TABLE public.local_message OWNER TO app;
EOF
for s in "${EXTRA_SQL[@]}"; do
	log "running: $s"
	bpsql -c "$s"
done

# One script per variant. Payload as in drain.sh (about 115 bytes of JSON).
PAYLOAD='{"order_id": :id, "customer_id": :c, "amount": 42.50, "currency": "EUR", "status": "created", "created_at": "2026-11-20T12:00:00Z"}'
HEADERS='{"type": "order.created"}'
for v in $VARIANTS; do
	case $v in
	bare) stmt="SELECT 1;" ;;
	plain) stmt="INSERT INTO public.local_message (topic, key, payload, headers) VALUES ('orders', $KEY, '$PAYLOAD', '$HEADERS');" ;;
	plain_id) stmt="INSERT INTO public.local_message (topic, key, payload, headers) VALUES ('orders', $KEY, '$PAYLOAD', '$HEADERS') RETURNING id;" ;;
	enqueue) stmt="SELECT outbox.enqueue('orders', $KEY, '$PAYLOAD', '$HEADERS');" ;;
	emit) stmt="SELECT outbox.emit('orders', $KEY, '$PAYLOAD', '$HEADERS');" ;;
	esac
	cat > "$BENCH_TMP/$v.sql" <<EOF
\set c random(0, 999)
\set id random(1, 1000000000)
BEGIN;
INSERT INTO public.orders (customer, amount) VALUES (:c, 42.50);
$stmt
COMMIT;
EOF
done
chown -R postgres: "$BENCH_TMP" 2>/dev/null || true

# CPU time (clock ticks) the server has used: the postmaster and every
# process it has reaped (its cutime, cstime: backends that ended), plus the
# processes still running (walwriter, checkpointer, the relay, ...).
server_cpu_ticks()
{
	local pm p total=0 t
	pm=$(head -1 "$BENCH_PGDATA/postmaster.pid")
	t=$(sed 's/^.*) //' "/proc/$pm/stat" | awk '{print $12 + $13 + $14 + $15}')
	total=$((total + t))
	for p in $(pgrep -P "$pm"); do
		t=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')
		total=$((total + ${t:-0}))
	done
	echo "$total"
}
CLK_TCK=$(getconf CLK_TCK)

# run_variant VARIANT ROUND: prints "tps server-CPU client-CPU", the CPU
# times in microseconds per transaction; the client's is pgbench's own user
# and system time (bash's time keyword: the waited-for children's rusage)
run_variant()
{
	local v=$1 out="$BENCH_TMP/$v.round$2.out" t0 t1 n client TIMEFORMAT='%U %S'
	t0=$(server_cpu_ticks)
	client=$( { time as_pg "$PGBIN/pgbench" -n -h "$BENCH_SOCK" -p "$BENCH_PORT" -U app -d postgres \
		-c "$CLIENTS" -j "$CLIENTS" -T "$SECONDS_PER_RUN" -M "$PROTOCOL" \
		-f "$BENCH_TMP/$v.sql" >"$out" 2>&1; } 2>&1) || { cat "$out" >&2; die "pgbench failed for $v"; }
	# let the backends end, so that their time is the postmaster's cutime
	sleep 0.5
	t1=$(server_cpu_ticks)
	n=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
	printf '%s %s %s\n' "$(grep -Eo 'tps = [0-9.]+' "$out" | head -1 | awk '{print $3}')" \
		"$(echo "scale=1; ($t1 - $t0) * 1000000 / $CLK_TCK / $n" | bc)" \
		"$(echo "$client" | awk -v n="$n" '{printf "%.1f", ($1 + $2) * 1000000 / n}')"
}

# Warm-up: a short run of each variant (caches, relation extension).
log "warm-up"
for v in $VARIANTS; do
	SECONDS_PER_RUN_SAVED=$SECONDS_PER_RUN
	SECONDS_PER_RUN=2
	run_variant "$v" 0 >/dev/null
	SECONDS_PER_RUN=$SECONDS_PER_RUN_SAVED
done

read -r -a vlist <<<"$VARIANTS"
n=${#vlist[@]}
printf '%-6s' round
for v in "${vlist[@]}"; do printf '%12s' "$v"; done
printf '\n'
for r in $(seq 1 "$ROUNDS"); do
	declare -A tps=() cpu=() ccpu=()
	for i in $(seq 0 $((n - 1))); do
		v=${vlist[$(((i + r - 1) % n))]}
		read -r tps[$v] cpu[$v] ccpu[$v] <<<"$(run_variant "$v" "$r")"
		echo "${tps[$v]}" >>"$BENCH_TMP/$v.tps"
		echo "${cpu[$v]}" >>"$BENCH_TMP/$v.cpu"
		echo "${ccpu[$v]}" >>"$BENCH_TMP/$v.ccpu"
	done
	# this round's ratios to plain: the paired figures, which the machine's
	# drift between rounds does not move
	if [ -n "${tps[plain]:-}" ]; then
		for v in "${vlist[@]}"; do
			echo "scale=4; ${tps[$v]} / ${tps[plain]}" | bc >>"$BENCH_TMP/$v.ptps"
			echo "scale=4; ${cpu[$v]} / ${cpu[plain]}" | bc >>"$BENCH_TMP/$v.pcpu"
		done
	fi
	printf '%-6s' "$r"
	for v in "${vlist[@]}"; do printf '%12.0f' "${tps[$v]}"; done
	printf '   server CPU us/tx:'
	for v in "${vlist[@]}"; do printf ' %7.1f' "${cpu[$v]}"; done
	printf '   pgbench CPU us/tx:'
	for v in "${vlist[@]}"; do printf ' %6.1f' "${ccpu[$v]}"; done
	printf '\n'
	unset tps cpu ccpu
done

declare -A med=() cmed=() ccmed=()
for v in "${vlist[@]}"; do
	med[$v]=$(median <"$BENCH_TMP/$v.tps")
	cmed[$v]=$(median <"$BENCH_TMP/$v.cpu")
	ccmed[$v]=$(median <"$BENCH_TMP/$v.ccpu")
done
printf '\n%-10s %10s %10s %10s %14s %10s %10s\n' variant "tps(med)" "vs bare" "vs plain" \
	"CPU us/tx(med)" "vs bare" "vs plain"
for v in "${vlist[@]}"; do
	rb=n/a rp=n/a cb=n/a cp=n/a
	[ -n "${med[bare]:-}" ] && rb=$(echo "scale=3; ${med[$v]} / ${med[bare]}" | bc)
	[ -n "${med[plain]:-}" ] && rp=$(echo "scale=3; ${med[$v]} / ${med[plain]}" | bc)
	[ -n "${cmed[bare]:-}" ] && cb=$(echo "scale=3; ${cmed[$v]} / ${cmed[bare]}" | bc)
	[ -n "${cmed[plain]:-}" ] && cp=$(echo "scale=3; ${cmed[$v]} / ${cmed[plain]}" | bc)
	printf '%-10s %10.0f %10s %10s %14.1f %10s %10s\n' "$v" "${med[$v]}" "$rb" "$rp" \
		"${cmed[$v]}" "$cb" "$cp"
done
printf '\n%-10s %16s %16s %16s\n' variant "pgbench CPU us/tx" "paired tps/plain" "paired CPU/plain"
for v in "${vlist[@]}"; do
	pt=n/a pc=n/a
	if [ -f "$BENCH_TMP/$v.ptps" ]; then
		pt=$(median <"$BENCH_TMP/$v.ptps")
		pc=$(median <"$BENCH_TMP/$v.pcpu")
	fi
	printf '%-10s %16.1f %16s %16s\n' "$v" "${ccmed[$v]}" "$pt" "$pc"
done
echo "(paired: the median over the rounds of each round's ratio to plain's run in the same round)"
rows=$(bpsql -c "SELECT count(*) FROM outbox.messages")
log "outbox.messages holds $rows rows; clients=$CLIENTS seconds=$SECONDS_PER_RUN rounds=$ROUNDS protocol=$PROTOCOL key=$KEY_FORM"
