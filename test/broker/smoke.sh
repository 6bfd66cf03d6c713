#!/usr/bin/env bash
#
# smoke.sh
#     Smoke test for the test broker tools: starts kafka_mock_broker, drives
#     its control socket, round-trips records through kcat and kafka_consume,
#     and checks the clean shutdown on SIGTERM.
#
# Builds nothing: run `make` first (or the cc line from the Makefile).  Needs
# kcat.  Prints one "ok"/"not ok" line per check and, last, "N passed, N
# failed"; exits non-zero if anything failed.
#
# test/broker/smoke.sh

set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BROKER_BIN=$HERE/kafka_mock_broker
CONSUME_BIN=$HERE/kafka_consume

passed=0
failed=0
broker_pid=
broker2_pid=

ok()     { passed=$((passed + 1)); echo "ok - $*"; }
not_ok() { failed=$((failed + 1)); echo "not ok - $*"; }

finish() {
    echo "$passed passed, $failed failed"
    [[ $failed -eq 0 ]]
}

# Stop a broker we started if it is still running, then remove the temp dir.
cleanup() {
    local pid
    for pid in $broker_pid $broker2_pid; do
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 0.2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    if [[ -n ${TMP:-} && -d $TMP ]]; then
        rm -rf "$TMP"
    fi
}
trap cleanup EXIT

for bin in "$BROKER_BIN" "$CONSUME_BIN"; do
    if [[ ! -x $bin ]]; then
        not_ok "$bin is missing: build it first (make)"
        finish
        exit 1
    fi
done
if ! command -v kcat >/dev/null; then
    not_ok "kcat is not installed"
    finish
    exit 1
fi

TMP=$(mktemp -d "${TMPDIR:-/tmp}/broker-smoke.XXXXXX")
CTL=$TMP/control.sock
BOOTSTRAP_FILE=$TMP/bootstrap

# wait_gone PID SECONDS: wait for a child to exit; sets $wait_rc to its
# status, or returns 1 if it is still running after SECONDS.
wait_gone() {
    local pid=$1 tries=$(($2 * 10))
    while kill -0 "$pid" 2>/dev/null && [[ $tries -gt 0 ]]; do
        sleep 0.1
        tries=$((tries - 1))
    done
    if kill -0 "$pid" 2>/dev/null; then
        return 1
    fi
    wait_rc=0
    wait "$pid" || wait_rc=$?
}

# expect_ctl RC PATTERN WORD...: run a control command, check status and reply.
expect_ctl() {
    local want_rc=$1 pattern=$2 out rc=0
    shift 2
    out=$("$BROKER_BIN" ctl "$CTL" "$@" 2>&1) || rc=$?
    # shellcheck disable=SC2053
    if [[ $rc -eq $want_rc && $out == $pattern ]]; then
        ok "ctl $* -> $out (exit $rc)"
    else
        not_ok "ctl $* -> '$out' (exit $rc), want '$pattern' (exit $want_rc)"
    fi
}

# check_records FILE FIRST LAST: FILE holds exactly the records
# key-FIRST..key-LAST with values value-N, in well-formed lines.
check_records() {
    local file=$1 first=$2 last=$3 want=$(($3 - $2 + 1)) lines
    lines=$(wc -l < "$file")
    if [[ $lines -eq $want ]]; then
        ok "consumed exactly $want records"
    else
        not_ok "consumed $lines records, want $want"
    fi
    if diff <(cut -f4,5 "$file" | sort) \
            <(for ((i = first; i <= last; i++)); do
                  printf 'key-%03d\tvalue-%03d\n' "$i" "$i"
              done | sort) >/dev/null; then
        ok "keys and values of records $first..$last match"
    else
        not_ok "keys and values of records $first..$last differ"
    fi
    if awk -F'\t' 'NF != 7 || $2 !~ /^[0-9]+$/ || $3 !~ /^[0-9]+$/ ||
                   $6 != "{}" || $7 !~ /^[0-9]+$/ || length($7) != 16 {
                       bad = 1
                   }
                   END { exit bad }' "$file"; then
        ok "every line has topic, partition, offset, key, value, {}, recv_us"
    else
        not_ok "malformed consumer output lines"
    fi
    if [[ $(cut -f2,3 "$file" | sort -u | wc -l) -eq $lines ]]; then
        ok "no (partition, offset) seen twice"
    else
        not_ok "duplicate (partition, offset) in consumer output"
    fi
}

# --- start the broker ------------------------------------------------------

"$BROKER_BIN" --brokers 3 --control "$CTL" --bootstrap-file "$BOOTSTRAP_FILE" \
    >"$TMP/broker.out" 2>"$TMP/broker.err" &
broker_pid=$!

for ((i = 0; i < 100; i++)); do
    [[ -s $BOOTSTRAP_FILE ]] && break
    kill -0 "$broker_pid" 2>/dev/null || break
    sleep 0.1
done
if [[ ! -s $BOOTSTRAP_FILE ]]; then
    not_ok "broker wrote no bootstrap file within 10 s"
    cat "$TMP/broker.err" >&2 || true
    finish
    exit 1
fi
BOOTSTRAP=$(cat "$BOOTSTRAP_FILE")
ok "bootstrap file: $BOOTSTRAP"

if grep -qxF "bootstrap: $BOOTSTRAP" "$TMP/broker.out"; then
    ok "stdout announces the same bootstrap servers"
else
    not_ok "stdout does not say 'bootstrap: $BOOTSTRAP'"
fi
if [[ $BOOTSTRAP =~ ^127\.0\.0\.1:[0-9]+(,127\.0\.0\.1:[0-9]+){2}$ ]]; then
    ok "three brokers on 127.0.0.1"
else
    not_ok "unexpected bootstrap servers '$BOOTSTRAP'"
fi

# --- control commands ------------------------------------------------------

expect_ctl 0 "ok pong" ping
expect_ctl 0 "ok $BOOTSTRAP" bootstrap
expect_ctl 0 "ok topic smoke partitions 3 *" create_topic smoke 3

# --- 100 records through kcat and kafka_consume ----------------------------

rc=0
for ((i = 1; i <= 100; i++)); do
    printf 'key-%03d:value-%03d\n' "$i" "$i"
done | kcat -P -b "$BOOTSTRAP" -t smoke -K: 2>"$TMP/kcat.err" || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "kcat produced 100 records"
else
    not_ok "kcat failed (exit $rc): $(head -3 "$TMP/kcat.err")"
fi

rc=0
"$CONSUME_BIN" -b "$BOOTSTRAP" -t smoke -n 100 --timeout-ms 10000 \
    >"$TMP/consumed" 2>"$TMP/consume.err" || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "kafka_consume -n 100 exited 0"
else
    not_ok "kafka_consume -n 100 exited $rc: $(tail -2 "$TMP/consume.err")"
fi
check_records "$TMP/consumed" 1 100
if grep -qx "consumed 100 records" "$TMP/consume.err"; then
    ok "kafka_consume summary on stderr"
else
    not_ok "no 'consumed 100 records' summary on stderr"
fi

# Without -n: stops once idle after reaching the end of every partition.
rc=0
"$CONSUME_BIN" -b "$BOOTSTRAP" -t smoke --idle-ms 300 --timeout-ms 10000 \
    >"$TMP/idle" 2>/dev/null || rc=$?
if [[ $rc -eq 0 && $(wc -l < "$TMP/idle") -eq 100 ]]; then
    ok "kafka_consume --idle-ms stops after the 100 records"
else
    not_ok "kafka_consume --idle-ms: exit $rc, $(wc -l < "$TMP/idle") lines"
fi

# Asking for more than there is must time out with exit 1.
rc=0
"$CONSUME_BIN" -b "$BOOTSTRAP" -t smoke -n 101 --timeout-ms 1000 \
    >/dev/null 2>"$TMP/timeout.err" || rc=$?
if [[ $rc -eq 1 ]] && grep -q "received 100 of 101" "$TMP/timeout.err"; then
    ok "kafka_consume -n 101 times out with exit 1"
else
    not_ok "kafka_consume -n 101: exit $rc, stderr: $(head -2 "$TMP/timeout.err")"
fi

# --- fault injection -------------------------------------------------------

expect_ctl 0 "ok broker 1 down" down 1
expect_ctl 0 "ok broker 1 up" up 1
expect_ctl 0 "ok rtt 50 ms on broker 1" rtt 1 50
expect_ctl 0 "ok 1 x NOT_LEADER_FOR_PARTITION queued for Produce (0)" \
    error Produce 1 NOT_LEADER_FOR_PARTITION
expect_ctl 1 "error unknown command 'frobnicate'*" frobnicate now
expect_ctl 1 "error usage: down ID" down
expect_ctl 1 "error broker id must be*" down 7
expect_ctl 1 "error unknown error name*" error Produce 1 NO_SUCH_ERROR

rc=0
out=$("$BROKER_BIN" ctl "$TMP/no-such.sock" ping 2>/dev/null) || rc=$?
if [[ $rc -eq 2 ]]; then
    ok "ctl on a missing socket exits 2"
else
    not_ok "ctl on a missing socket exited $rc ($out)"
fi

# The cluster still works after down/up, with 50 ms rtt on broker 1 and a
# Produce error to retry through.
rc=0
for ((i = 101; i <= 110; i++)); do
    printf 'key-%03d:value-%03d\n' "$i" "$i"
done | kcat -P -b "$BOOTSTRAP" -t smoke -K: 2>"$TMP/kcat2.err" || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "kcat produced 10 more records after down/up/rtt/error"
else
    not_ok "kcat after fault injection failed (exit $rc)"
fi
rc=0
"$CONSUME_BIN" -b "$BOOTSTRAP" -t smoke -n 110 --timeout-ms 10000 \
    >"$TMP/consumed2" 2>/dev/null || rc=$?
if [[ $rc -eq 0 ]]; then
    ok "kafka_consume -n 110 exited 0"
else
    not_ok "kafka_consume -n 110 exited $rc"
fi
check_records "$TMP/consumed2" 1 110
expect_ctl 0 "ok rtt 0 ms on broker 1" rtt 1 0

# A topic error hides the topic from metadata until cleared.
expect_ctl 0 "ok topic guarded error TOPIC_AUTHORIZATION_FAILED" \
    topic_error guarded TOPIC_AUTHORIZATION_FAILED
rc=0
"$CONSUME_BIN" -b "$BOOTSTRAP" -t guarded --timeout-ms 800 \
    >/dev/null 2>"$TMP/guarded.err" || rc=$?
if [[ $rc -eq 1 ]] && grep -qi "authorization" "$TMP/guarded.err"; then
    ok "kafka_consume sees the topic error and times out"
else
    not_ok "kafka_consume on an errored topic: exit $rc, $(head -2 "$TMP/guarded.err")"
fi
expect_ctl 0 "ok topic guarded error NO_ERROR" topic_error guarded NO_ERROR
rc=0
"$CONSUME_BIN" -b "$BOOTSTRAP" -t guarded --idle-ms 100 --timeout-ms 5000 \
    >"$TMP/guarded.out" 2>/dev/null || rc=$?
if [[ $rc -eq 0 && ! -s $TMP/guarded.out ]]; then
    ok "after NO_ERROR the (empty) topic is consumable"
else
    not_ok "after NO_ERROR: exit $rc"
fi

if grep -qE '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z kafka_mock_broker: control: ping -> ok pong$' \
        "$TMP/broker.err"; then
    ok "control commands are logged with a timestamp"
else
    not_ok "no timestamped control log line in the broker's stderr"
fi

# --- shutdown --------------------------------------------------------------

kill -TERM "$broker_pid"
if wait_gone "$broker_pid" 10; then
    if [[ $wait_rc -eq 0 ]]; then
        ok "broker exited 0 on SIGTERM"
    else
        not_ok "broker exited $wait_rc on SIGTERM"
    fi
else
    not_ok "broker still running 10 s after SIGTERM"
fi
if [[ ! -e $CTL && ! -e $BOOTSTRAP_FILE ]]; then
    ok "control socket and bootstrap file removed"
else
    not_ok "control socket or bootstrap file left behind"
fi

# The 'stop' command, on a second one-broker cluster.
"$BROKER_BIN" --brokers 1 --control "$TMP/b2.sock" --topic one:1 \
    >"$TMP/b2.out" 2>"$TMP/b2.err" &
broker2_pid=$!
for ((i = 0; i < 100; i++)); do
    [[ -s $TMP/b2.out ]] && break
    sleep 0.1
done
rc=0
out=$("$BROKER_BIN" ctl "$TMP/b2.sock" stop 2>&1) || rc=$?
if [[ $rc -eq 0 && $out == "ok stopping" ]] && wait_gone "$broker2_pid" 10 &&
        [[ $wait_rc -eq 0 && ! -e $TMP/b2.sock ]]; then
    ok "ctl stop shuts a broker down cleanly"
else
    not_ok "ctl stop: '$out' (exit $rc)"
fi

finish
