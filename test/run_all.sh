#!/usr/bin/env bash
#
# test/run_all.sh
#    Install what is missing, build, and run every test suite of outbox:
#      0. packaging   (test/packaging.pl) META.json, control file, scripts
#      1. pg_regress  (sql/, expected/) SQL API and decoder output
#      2. pgTAP       (test/pgtap/) the SQL API's contract
#      3. broker      (test/broker/smoke.sh) the local Kafka test broker
#      4. end-to-end  (test/e2e/t/) relay, Kafka, faults, on the mock broker
#      5. e2e-kafka   the end-to-end tests that make sense on a real broker,
#                     on a real single-node Apache Kafka (test/kafka/kafka.sh,
#                     auto topic creation off, a SASL_SSL listener too),
#                     including broker down/up, the SASL test (240), the
#                     record comparison with Debezium's Outbox Event Router
#                     (115; bench/peers/debezium, built with Maven), the
#                     cross-client check with Kafka's Java producer and
#                     console consumer (245) and the demo's inventory
#                     service (165)
#      6. e2e-kafka3  real-only fault tests (test/e2e/t/2*_real_*.pl) on a
#                     real 3-node cluster: RF 3, min.insync.replicas 2;
#                     leader SIGKILL, controller SIGKILL, a frozen broker,
#                     all brokers down 30 s
#      7. docs        (test/doctest.pl) README's Quick start and the examples
#                     in docs/, run as written, outputs checked
#      8. matrix      (test/pgmatrix.sh) the core suites on PostgreSQL 17 and
#                     18 in Debian chroots, on the mock broker
#      9. matrix-kafka their end-to-end core against a real single-node
#                     Kafka on the host (OUTBOX_MATRIX=0 leaves both
#                     matrix suites out)
#    Prints one line per suite and "outbox: N passed, N failed" at the end;
#    exits non-zero if anything failed.
#
#    Environment:
#      OUTBOX_TEST_KAFKA_BROKERS    run the end-to-end suite against this
#                                   real Kafka instead of the mock broker
#      OUTBOX_TEST_KAFKA_PROPERTIES librdkafka properties for it (a=b;c=d)
#      OUTBOX_SUITES                subset to run, e.g. "regress pgtap"
#      OUTBOX_E2E_TESTS             subset of end-to-end tests (file globs),
#                                   for e2e and e2e-kafka
#      OUTBOX_E2E_KAFKA_TESTS       the e2e-kafka tests (default below)
#      OUTBOX_E2E_KAFKA3_TESTS      the e2e-kafka3 tests (default 2*_real_*.pl)
#      OUTBOX_KEEP_KAFKA_DIR        keep the real clusters' directories
#                                   (logs, data) in /tmp/outbox-kafka.*
#      OUTBOX_MATRIX                0: leave the matrix suite out of the
#                                   default suites
#      OUTBOX_MATRIX_VERSIONS       major versions of the matrix suite
#                                   (default "17 18")
#      OUTBOX_MATRIX_KAFKA_E2E_TESTS the e2e tests of the matrix's real-Kafka
#                                   half (default: 010 020 040 060 050, the
#                                   core tests that meet Kafka)
#      OUTBOX_TEST_TIMEOUT          time limit of one end-to-end test file,
#                                   in seconds (default 600: ten times the
#                                   longest file's usual time); over it,
#                                   test/run_test.pl stops the file and every
#                                   process it started and fails it by name
#      OUTBOX_SUITE_TIMEOUT_<SUITE> time limit of a whole suite, in seconds
#                                   (suite name upper-cased, '-' as '_';
#                                   defaults in suite_limit below), a
#                                   backstop should anything escape the
#                                   per-file limit
#
#    No test can hang the command: every end-to-end file runs under
#    test/run_test.pl (its own process group and time limit, and every
#    process it started is stopped when it ends), and every suite under
#    timeout(1).
#
set -uo pipefail

. "$(dirname "$0")/lib.sh"

require_root
install_deps || exit 1
build_install || { echo "outbox: 0 passed, 1 failed"; exit 1; }

BIN=$(pg_bindir)
PERL_LIB=$PG_LIBDIR/lib/pgxs/src/test/perl
PG_REGRESS=$PG_LIBDIR/lib/pgxs/src/test/regress/pg_regress
MATRIX_SUITE="matrix matrix-kafka"
[ "${OUTBOX_MATRIX:-1}" = 0 ] && MATRIX_SUITE=
SUITES=${OUTBOX_SUITES:-packaging regress pgtap broker e2e e2e-kafka e2e-kafka3 docs $MATRIX_SUITE}
# The end-to-end tests that make sense on a real Kafka; the others need the
# mock's injected errors for most of what they check.
E2E_KAFKA_TESTS=${OUTBOX_E2E_KAFKA_TESTS:-${OUTBOX_E2E_TESTS:-010_* 020_* 030_* 040_* 050_* 060_* 070_* 080_* 090_* 115_* 130_* 135_* 145_* 146_* 160_* 165_* 170_* 174_* 240_* 245_*}}
KAFKA_SH=$OUTBOX_BUILD/test/kafka/kafka.sh
LOGDIR=$OUTBOX_BUILD/test-logs
mkdir -p "$LOGDIR"
chown postgres: "$LOGDIR"

total_pass=0
total_fail=0
summary=()

# record NAME STATUS PASSED FAILED [FAILED-FILES]
record() {
	local name=$1 status=$2 passed=$3 failed=$4 files=${5:-}
	if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
		failed=1			# a suite that died counts as a failure
	fi
	total_pass=$((total_pass + passed))
	total_fail=$((total_fail + failed))
	summary+=("$(printf '%-12s %5d passed, %d failed  (suite time %ds)%s' "$name" "$passed" "$failed" \
		$((SECONDS - suite_start)) "${files:+  failed: $files}")")
}

# Counts from prove's summary ("Files=2, Tests=40" and "Failed 3/40
# subtests"); a file that failed with no failed subtest (it died, ran over
# its time limit, left processes behind: "(Wstat: 256 Tests: 12 Failed: 0)")
# counts as one failure.
prove_counts() {
	local out=$1 tests failed dubious
	tests=$(grep -Eo 'Tests=[0-9]+' "$out" | tail -1 | cut -d= -f2)
	failed=$(grep -Eo 'Failed [0-9]+/[0-9]+ subtests' "$out" | awk '{split($2,a,"/"); s+=a[1]} END {print s+0}')
	dubious=$(grep -cE '\(Wstat: [0-9]+ Tests: [0-9]+ Failed: 0\)' "$out")
	echo "${tests:-0} $((${failed:-0} + dubious))"
}

# The files prove reports as failed, by name.
prove_failed_files() {
	grep -E '^\S+\.pl +\(Wstat: ' "$1" | awk '{print $1}' | xargs -r -n1 basename | paste -sd' '
}

# suite_limit NAME: the time limit of suite NAME in seconds, about three
# times its usual time on the 2-core machine (OUTBOX_SUITE_TIMEOUT_<NAME>
# overrides it).
suite_limit() {
	local var=OUTBOX_SUITE_TIMEOUT_$(echo "$1" | tr 'a-z-' 'A-Z_') def
	case $1 in
	e2e | e2e-kafka) def=2100 ;;
	e2e-kafka3) def=1200 ;;
	matrix) def=2400 ;;
	matrix-kafka) def=1200 ;;
	*) def=600 ;;
	esac
	echo "${!var:-$def}"
}

# limited NAME CMD...: run CMD under suite NAME's time limit; a suite over
# it is stopped (SIGTERM, SIGKILL 60 s later) and says so.
limited() {
	local name=$1 limit st
	shift
	limit=$(suite_limit "$name")
	timeout --kill-after=60 "$limit" "$@"
	st=$?
	if [ $st -eq 124 ] || [ $st -eq 137 ]; then
		echo "outbox: suite $name ran over its time limit of ${limit}s and was stopped"
	fi
	return $st
}

# run_logged OUT CMD...: run a suite's command into OUT, show OUT, return
# the command's status.
run_logged() {
	local out=$1
	shift
	"$@" > "$out" 2>&1
	local st=$?
	cat "$out"
	return $st
}

# run_e2e NAME PATTERNS [VAR=VALUE...]: the TAP tests matching PATTERNS
# as postgres, with the extra environment; records the suite.
run_e2e() {
	local name=$1 patterns=$2 pat st t f l
	shift 2
	local out=$LOGDIR/$name.out tests=()
	for pat in $patterns; do
		tests+=("$OUTBOX_BUILD"/test/e2e/t/$pat)
	done
	# Each file under test/run_test.pl: a time limit of its own and no
	# process left behind.
	(cd "$OUTBOX_BUILD/test/e2e" && rm -rf tmp_check &&
		limited "$name" runuser -u postgres -- env PATH="$BIN:$PATH" PG_REGRESS="$PG_REGRESS" \
			PERL5LIB="$PERL_LIB" OUTBOX_TEST_TIMEOUT="${OUTBOX_TEST_TIMEOUT:-600}" \
			OUTBOX_TEST_KAFKA_BROKERS="${OUTBOX_TEST_KAFKA_BROKERS:-}" \
			OUTBOX_TEST_KAFKA_PROPERTIES="${OUTBOX_TEST_KAFKA_PROPERTIES:-}" \
			"$@" \
			prove -v --timer --exec "perl $OUTBOX_BUILD/test/run_test.pl" \
			"${tests[@]}") > "$out" 2>&1
	st=$?
	grep -vE '^ok [0-9]+|^\[[0-9:.]+\] ok' "$out" | tail -150
	read -r t f < <(prove_counts "$out")
	record "$name" $st $((t - f)) "$f" "$(prove_failed_files "$out")"
	if [ $st -ne 0 ]; then
		for l in "$OUTBOX_BUILD"/test/e2e/tmp_check/log/*.log; do
			[ -f "$l" ] || continue
			echo "--- tail of $l"
			tail -40 "$l"
		done
	fi
	return $st
}

# The version matrix's chroots, made in the background while the host's
# suites run (a fresh machine spends about 15 minutes on them); the matrix
# suites wait for them through pgmatrix.sh's lock.
MATRIX_PREPARE_PID=
case " $SUITES " in
*" matrix "* | *" matrix-kafka "*)
	log "preparing the version matrix's chroots in the background ($LOGDIR/matrix-prepare.out)"
	# shellcheck disable=SC2086
	setsid timeout 3000 bash "$OUTBOX_ROOT/test/pgmatrix.sh" --prepare ${OUTBOX_MATRIX_VERSIONS:-17 18} \
		> "$LOGDIR/matrix-prepare.out" 2>&1 &
	MATRIX_PREPARE_PID=$!
	;;
esac
stop_matrix_prepare() {
	[ -n "$MATRIX_PREPARE_PID" ] || return 0
	kill -TERM -- "-$MATRIX_PREPARE_PID" 2>/dev/null
	MATRIX_PREPARE_PID=
}

# Real Kafka clusters started here, stopped whatever happens.
KAFKA_DIRS=()
stop_kafkas() {
	local d
	for d in "${KAFKA_DIRS[@]}"; do
		bash "$KAFKA_SH" stop "$d" >/dev/null 2>&1 || true
		[ -n "${OUTBOX_KEEP_KAFKA_DIR:-}" ] || rm -rf "$d"
	done
	KAFKA_DIRS=()
}
trap 'stop_kafkas; stop_matrix_prepare' EXIT
trap 'stop_kafkas; stop_matrix_prepare; exit 130' INT TERM

# start_kafka DIR-VAR ARGS...: start a real cluster (as postgres, so the
# tests can stop and start its nodes) in a new directory stored in DIR-VAR.
start_kafka() {
	local var=$1 d
	shift
	d=$(mktemp -d /tmp/outbox-kafka.XXXXXX)
	chown postgres: "$d"
	chmod 755 "$d"
	KAFKA_DIRS+=("$d")
	printf -v "$var" %s "$d"
	bash "$KAFKA_SH" start --dir "$d" "$@" > "$LOGDIR/kafka-start.out" 2>&1
	local st=$?
	cat "$LOGDIR/kafka-start.out"
	return $st
}

for suite in $SUITES; do
	suite_start=$SECONDS
	case $suite in
	packaging)
		log "packaging"
		out=$LOGDIR/packaging.out
		run_logged "$out" limited packaging prove "$OUTBOX_BUILD/test/packaging.pl"
		st=$?
		read -r t f < <(prove_counts "$out")
		record packaging $st $((t - f)) "$f"
		;;
	regress)
		log "pg_regress"
		out=$LOGDIR/regress.out
		run_logged "$out" limited regress runuser -u postgres -- make -C "$OUTBOX_BUILD" -s installcheck \
			PG_CONFIG="$BIN/pg_config"
		st=$?
		[ $st -ne 0 ] && [ -f "$OUTBOX_BUILD/regression.diffs" ] && head -200 "$OUTBOX_BUILD/regression.diffs"
		ok=$(grep -cE '^(ok|test) .*\.\.\. ok|^ok [0-9]+ ' "$out")
		bad=$(grep -cE '\.\.\. FAILED|^not ok [0-9]+ ' "$out")
		record pg_regress $st "$ok" "$bad"
		;;
	pgtap)
		log "pgTAP"
		out=$LOGDIR/pgtap.out
		port=$(free_port 55432)
		run_logged "$out" limited pgtap runuser -u postgres -- bash "$OUTBOX_BUILD/test/pgtap/run.sh" "$BIN" "$port"
		st=$?
		read -r t f < <(prove_counts "$out")
		record pgTAP $st $((t - f)) "$f"
		;;
	broker)
		log "test broker smoke test"
		out=$LOGDIR/broker.out
		run_logged "$out" limited broker bash "$OUTBOX_BUILD/test/broker/smoke.sh"
		st=$?
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$out" | tail -1)
		record broker $st "$(echo "${line:-0}" | awk '{print $1+0}')" "$(echo "${line:-0 passed, 0}" | awk '{print $3+0}')"
		;;
	e2e)
		log "end-to-end (${OUTBOX_TEST_KAFKA_BROKERS:+real Kafka at }${OUTBOX_TEST_KAFKA_BROKERS:-mock broker})"
		run_e2e e2e "${OUTBOX_E2E_TESTS:-*.pl}"
		;;
	e2e-kafka)
		log "end-to-end on a real Apache Kafka (single node, auto topic creation off)"
		t0=$SECONDS
		if ! install_kafka_deps || ! start_kafka kdir --nodes 1 --no-auto-create --sasl-ssl; then
			record e2e-kafka 1 0 1
			stop_kafkas
			continue
		fi
		# the SASL test (240) reads the client settings as postgres
		chown postgres: "$kdir/client.properties" "$kdir/bootstrap_sasl" 2>/dev/null
		echo "Kafka started in $((SECONDS - t0))s at $(cat "$kdir/bootstrap")"
		# Debezium for the comparison test (115), built with Maven once
		# into a directory postgres can read; a failed build fails 115
		dbz=$OUTBOX_BUILD/bench/peers/debezium/debezium.sh
		t1=$SECONDS
		bash "$dbz" fetch > "$LOGDIR/debezium-fetch.out" 2>&1 || cat "$LOGDIR/debezium-fetch.out"
		echo "Debezium peer resolved in $((SECONDS - t1))s: $(bash "$dbz" libs)"
		OUTBOX_TEST_KAFKA_BROKERS=$(cat "$kdir/bootstrap") OUTBOX_TEST_KAFKA_PROPERTIES= \
			run_e2e e2e-kafka "$E2E_KAFKA_TESTS" \
			OUTBOX_TEST_KAFKA_DIR="$kdir" \
			OUTBOX_TEST_DEBEZIUM_LIBS="$(bash "$dbz" libs)" \
			OUTBOX_TEST_KAFKA_STOP_CMD="bash $KAFKA_SH stop-node $kdir 1" \
			OUTBOX_TEST_KAFKA_START_CMD="bash $KAFKA_SH start-node $kdir 1"
		if [ $? -ne 0 ]; then
			echo "--- tail of Kafka's log"
			tail -40 "$kdir/n1/logs/server.log"
		fi
		stop_kafkas
		echo "e2e-kafka took $((SECONDS - t0))s (Kafka start, tests, stop)"
		;;
	e2e-kafka3)
		log "real-only fault tests on a real 3-node Apache Kafka (RF 3, min.insync.replicas 2)"
		t0=$SECONDS
		if ! install_kafka_deps || ! start_kafka kdir --nodes 3 --no-auto-create; then
			record e2e-kafka3 1 0 1
			stop_kafkas
			continue
		fi
		echo "Kafka (3 nodes) started in $((SECONDS - t0))s at $(cat "$kdir/bootstrap")"
		OUTBOX_TEST_KAFKA_BROKERS=$(cat "$kdir/bootstrap") OUTBOX_TEST_KAFKA_PROPERTIES= \
			run_e2e e2e-kafka3 "${OUTBOX_E2E_KAFKA3_TESTS:-2*_real_*.pl}" \
			OUTBOX_TEST_KAFKA_DIR="$kdir"
		if [ $? -ne 0 ]; then
			for l in "$kdir"/n*/logs/server.log; do
				echo "--- tail of $l"
				grep -E 'ERROR|WARN' "$l" | tail -15
			done
		fi
		bash "$KAFKA_SH" status "$kdir"
		stop_kafkas
		echo "e2e-kafka3 took $((SECONDS - t0))s (Kafka start, tests, stop)"
		;;
	docs)
		log "documentation (README.md, docs/): examples run as written"
		out=$LOGDIR/docs.out
		run_logged "$out" limited docs prove -v "$OUTBOX_BUILD/test/doctest.pl"
		st=$?
		read -r t f < <(prove_counts "$out")
		record docs $st $((t - f)) "$f"
		;;
	matrix)
		log "version matrix: PostgreSQL ${OUTBOX_MATRIX_VERSIONS:-17 18}"
		out=$LOGDIR/matrix.out
		# A version run on the host builds in its own directory, not in ours.
		# shellcheck disable=SC2086
		OUTBOX_BUILD_DIR=$OUTBOX_BUILD.matrix \
			limited matrix bash "$OUTBOX_ROOT/test/pgmatrix.sh" ${OUTBOX_MATRIX_VERSIONS:-17 18} 2>&1 | tee "$out"
		st=${PIPESTATUS[0]}
		# One line per version: "pgN: N passed, N failed (T s)".
		while read -r name p _ f _; do
			record "${name%:}" 0 "$p" "$f"
		done < <(grep -E '^pg[0-9]+: [0-9]+ passed, [0-9]+ failed' "$out")
		grep -qE '^pg[0-9]+: ' "$out" || record matrix "$st" 0 1
		;;
	matrix-kafka)
		# The end-to-end core again, against a real Kafka on the host (the
		# chroots share its loopback; topics are made with kafka_admin).
		log "version matrix on a real Apache Kafka: PostgreSQL ${OUTBOX_MATRIX_VERSIONS:-17 18}"
		t0=$SECONDS
		if ! install_kafka_deps || ! start_kafka mkdir_ --nodes 1; then
			record matrix-kafka 1 0 1
			stop_kafkas
			continue
		fi
		out=$LOGDIR/matrix-kafka.out
		# The core that meets Kafka on real Kafka.  What is about PostgreSQL
		# alone runs on the mock above: the decoder's memory (001), a big
		# transaction's spill and streaming (070), promotion (135), the
		# launcher's databases (140).
		# shellcheck disable=SC2086
		OUTBOX_BUILD_DIR=$OUTBOX_BUILD.matrix OUTBOX_MATRIX_SUITES=e2e \
			OUTBOX_MATRIX_E2E_TESTS="${OUTBOX_MATRIX_KAFKA_E2E_TESTS:-010_* 020_* 040_* 060_* 050_*}" \
			OUTBOX_TEST_KAFKA_BROKERS=$(cat "$mkdir_/bootstrap") OUTBOX_TEST_KAFKA_PROPERTIES= \
			limited matrix-kafka bash "$OUTBOX_ROOT/test/pgmatrix.sh" ${OUTBOX_MATRIX_VERSIONS:-17 18} 2>&1 | tee "$out"
		st=${PIPESTATUS[0]}
		stop_kafkas
		while read -r name p _ f _; do
			record "${name%:}-kafka" 0 "$p" "$f"
		done < <(grep -E '^pg[0-9]+: [0-9]+ passed, [0-9]+ failed' "$out")
		grep -qE '^pg[0-9]+: ' "$out" || record matrix-kafka "$st" 0 1
		echo "matrix on real Kafka took $((SECONDS - t0))s"
		;;
	*)
		echo "unknown suite $suite" >&2
		record "$suite" 1 0 1
		;;
	esac
done

log "summary (total time $((SECONDS / 60)) min $((SECONDS % 60)) s)"
printf '%s\n' "${summary[@]}"
echo "outbox: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
