#!/usr/bin/env bash
#
# test/kafka/kafka.sh
#    A real Apache Kafka cluster (KRaft, combined broker+controller nodes) on
#    127.0.0.1 for outbox's tests, resolved with Maven (test/kafka/pom.xml).
#    Nothing is downloaded by this script itself: Maven fetches the pinned
#    artifacts into the local Maven repository (~/.m2) once, and they are
#    copied to a library directory outside the tree that every user can read
#    ($OUTBOX_KAFKA_LIBS, default /var/cache/outbox-kafka/<pom hash>).
#
#    kafka.sh fetch                      resolve the jars (no cluster)
#    kafka.sh start --dir D [--nodes 1|3] [--no-auto-create]
#                   [--message-max-bytes N] [--sasl-ssl] [--timeout S]
#        format and start the nodes on free ports; writes D/bootstrap
#        (host:port,...) once every broker answers.  --sasl-ssl adds a
#        SASL_SSL listener (SASL/PLAIN, user "outbox" with a random password,
#        a throw-away CA and
#        certificate made with openssl) and writes D/bootstrap_sasl,
#        D/client.properties (librdkafka name=value lines) and
#        D/client.properties.semi (the same joined with ";").
#    kafka.sh create-topic D NAME PARTITIONS RF [MIN_ISR] [k=v ...]
#    kafka.sh stop-node D N...   SIGTERM, wait for the exit
#    kafka.sh kill-node D N...   SIGKILL
#    kafka.sh freeze-node D N... SIGSTOP
#    kafka.sh resume-node D N... SIGCONT
#    kafka.sh start-node D N...  start stopped or killed nodes again
#    kafka.sh leader D TOPIC PARTITION   node id of the partition's leader
#    kafka.sh controller D       node id of the active controller
#    kafka.sh status D           one line per node: id, pid, state, ports
#    kafka.sh stop D             stop every node; nothing left running, no
#                                port left bound
#    kafka.sh run-class MAIN [ARG...]  run a Java main class of the resolved
#                                jars (kafka-clients, kafka-tools: e.g.
#                                org.apache.kafka.tools.ConsoleProducer) like
#                                the admin tools, stdin and stdout passed on
#
#    Processes run as the owner of D: when root calls this for a directory
#    owned by another user (the tests use postgres), the jars are resolved
#    as root and everything else runs as that user, so the TAP tests (run
#    as postgres) can stop and start nodes themselves.
#
#    Environment: OUTBOX_KAFKA_HEAP (default "-Xmx384m -Xms128m"),
#    OUTBOX_KAFKA_LIBS (library directory), JAVA (default java).
#
set -euo pipefail

KAFKA_SH=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$(basename "${BASH_SOURCE[0]}")
KAFKA_DIR=$(dirname "$KAFKA_SH")
POM=$KAFKA_DIR/pom.xml
JAVA=${JAVA:-java}
HEAP=${OUTBOX_KAFKA_HEAP:--Xmx384m -Xms128m}
SASL_USER=outbox

die() { echo "kafka.sh: $*" >&2; exit 1; }
say() { echo "kafka.sh: $*" >&2; }

# ---------------------------------------------------------------------
# The jars
# ---------------------------------------------------------------------

default_libs() {
	local hash base
	hash=$(sha256sum "$POM" | cut -c1-12)
	if [ -w /var/cache ] || [ -d /var/cache/outbox-kafka ]; then
		base=/var/cache/outbox-kafka
	else
		base=${TMPDIR:-/tmp}/outbox-kafka-$(id -u)
	fi
	echo "$base/$hash"
}
LIBS=${OUTBOX_KAFKA_LIBS:-$(default_libs)}

# Resolve the jars into $LIBS unless they are there already.
fetch() {
	[ -f "$LIBS/.complete" ] && return 0
	command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
	local tmp
	mkdir -p "$(dirname "$LIBS")"
	tmp=$(mktemp -d "$LIBS.tmp.XXXXXX")
	say "resolving Apache Kafka with Maven into $LIBS"
	if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$tmp.log" 2>&1; then
		cat "$tmp.log" >&2
		rm -rf "$tmp" "$tmp.log"
		die "Maven could not resolve $POM"
	fi
	rm -f "$tmp.log"
	touch "$tmp/.complete"
	chmod -R a+rX "$tmp"
	chmod a+rx "$(dirname "$LIBS")"
	rm -rf "$LIBS"
	mv "$tmp" "$LIBS"
}

classpath() {
	[ -f "$LIBS/.complete" ] || die "jars not resolved: run '$KAFKA_SH fetch' (as root for the shared cache)"
	echo "$LIBS/*"
}

# Run a Kafka tool's main class.
tool() {
	local main=$1
	shift
	"$JAVA" -Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC -Xshare:auto \
		-Dlog4j2.configurationFile="$KAFKA_DIR/log4j2-tools.properties" \
		-cp "$(classpath)" "$main" "$@"
}

# ---------------------------------------------------------------------
# Running as the owner of the state directory
# ---------------------------------------------------------------------

# When root acts on a directory owned by someone else, resolve the jars as
# root (its ~/.m2), then run this script again as the directory's owner.
as_owner() {
	local dir=$1
	shift
	[ "$(id -u)" -eq 0 ] || return 0
	[ -d "$dir" ] || return 0
	local owner
	owner=$(stat -c %U "$dir")
	[ "$owner" = root ] && return 0
	fetch
	exec runuser -u "$owner" -- env OUTBOX_KAFKA_LIBS="$LIBS" JAVA="$JAVA" \
		OUTBOX_KAFKA_HEAP="$HEAP" PATH="$PATH" bash "$KAFKA_SH" "$@"
}

# ---------------------------------------------------------------------
# Cluster state in D
#    D/cluster.env   NODES, CLUSTER_ID, SASL
#    D/nN/           node N: server.properties, data/, logs/, pid, ports
# ---------------------------------------------------------------------

load_cluster() {
	local dir=$1
	[ -f "$dir/cluster.env" ] || die "$dir holds no cluster (no cluster.env)"
	# shellcheck disable=SC1091
	. "$dir/cluster.env"
}

node_pid() {
	local dir=$1 n=$2 pid
	[ -f "$dir/n$n/pid" ] || return 1
	pid=$(cat "$dir/n$n/pid")
	[ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
	# the pid must still be our java
	grep -q "n$n/server.properties" "/proc/$pid/cmdline" 2>/dev/null || return 1
	echo "$pid"
}

# Is something listening on 127.0.0.1:PORT (or, per ss, on any address)?
port_bound() {
	(echo >"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
	command -v ss >/dev/null && ss -Hltn "sport = :$1" 2>/dev/null | grep -q .
}

# N free ports on 127.0.0.1, distinct, from a random start.
free_ports() {
	local want=$1 port got=0
	port=$((20000 + RANDOM % 30000))
	while [ $got -lt "$want" ]; do
		port=$((port + 1))
		[ $port -gt 60000 ] && port=20001
		if ! port_bound $port; then
			echo $port
			got=$((got + 1))
		fi
	done
}

write_node_config() {
	local dir=$1 n=$2 port=$3 cport=$4 sport=$5 voters=$6
	local f=$dir/n$n/server.properties rf=$NODES isr=1
	[ "$NODES" -ge 3 ] && { rf=3; isr=2; }
	mkdir -p "$dir/n$n/data" "$dir/n$n/logs"
	local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
	local advertised="PLAINTEXT://127.0.0.1:$port"
	if [ -n "$sport" ]; then
		listeners+=",SASL_SSL://127.0.0.1:$sport"
		advertised+=",SASL_SSL://127.0.0.1:$sport"
	fi
	cat >"$f" <<EOF
# written by test/kafka/kafka.sh
process.roles=broker,controller
node.id=$n
controller.quorum.voters=$voters
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL
log.dirs=$dir/n$n/data
num.partitions=4
default.replication.factor=$rf
min.insync.replicas=$isr
offsets.topic.replication.factor=$rf
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=$rf
transaction.state.log.min.isr=$isr
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=$rf
share.coordinator.state.topic.min.isr=$isr
auto.create.topics.enable=$AUTO_CREATE
group.initial.rebalance.delay.ms=0
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
background.threads=4
log.retention.hours=2
log.segment.bytes=67108864
log.cleaner.enable=true
log.cleaner.threads=1
log.cleaner.dedupe.buffer.size=4194304
delete.topic.enable=true
controlled.shutdown.enable=true
unclean.leader.election.enable=false
EOF
	[ -n "$MAX_BYTES" ] && echo "message.max.bytes=$MAX_BYTES" >>"$f"
	if [ -n "$sport" ]; then
		chmod 600 "$f"
		cat >>"$f" <<EOF
sasl.enabled.mechanisms=PLAIN
listener.name.sasl_ssl.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_$SASL_USER="$(cat "$dir/tls/sasl.pass")";
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=$dir/tls/server.p12
listener.name.sasl_ssl.ssl.keystore.password=$(cat "$dir/tls/store.pass")
listener.name.sasl_ssl.ssl.key.password=$(cat "$dir/tls/store.pass")
EOF
	fi
	echo "$port $cport $sport" >"$dir/n$n/ports"
}

# A throw-away CA and a server certificate for 127.0.0.1/localhost.
make_tls() {
	local t=$1/tls pass
	mkdir -p "$t"
	pass=$(openssl rand -hex 12)
	echo "$pass" >"$t/store.pass"
	openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=outbox test CA" \
		-keyout "$t/ca.key" -out "$t/ca.pem" 2>/dev/null
	openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
		-keyout "$t/server.key" -out "$t/server.csr" 2>/dev/null
	printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$t/ext"
	openssl x509 -req -in "$t/server.csr" -CA "$t/ca.pem" -CAkey "$t/ca.key" \
		-CAcreateserial -days 2 -extfile "$t/ext" -out "$t/server.pem" 2>/dev/null
	openssl pkcs12 -export -in "$t/server.pem" -inkey "$t/server.key" \
		-certfile "$t/ca.pem" -name kafka -passout "pass:$pass" -out "$t/server.p12"
	chmod 600 "$t"/*.key "$t/store.pass"
}

launch_node() {
	local dir=$1 n=$2
	node_pid "$dir" "$n" >/dev/null && die "node $n is already running"
	local nd=$dir/n$n
	# setsid: the node outlives the shell (and test) that started it; it
	# is the suite's, not the test's, so it drops test/run_test.pl's scope
	env -u OUTBOX_TEST_SCOPE setsid "$JAVA" $HEAP -server -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
		-XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
		-Djava.awt.headless=true -Xshare:auto \
		-Dkafka.logs.dir="$nd/logs" \
		-Dlog4j2.configurationFile="$KAFKA_DIR/log4j2.properties" \
		-cp "$(classpath)" kafka.Kafka "$nd/server.properties" \
		</dev/null >"$nd/logs/stdout.log" 2>&1 &
	echo $! >"$nd/pid"
}

# Wait until N brokers are listed in the metadata of a bootstrap.
wait_brokers() {
	local bootstrap=$1 want=$2 timeout=$3 t0=$SECONDS n
	while :; do
		n=$(kcat -L -b "$bootstrap" -m 2 -J 2>/dev/null |
			perl -MJSON::PP -e 'local $/; my $j = eval { decode_json(<STDIN>) }; print scalar(@{ $j->{brokers} // [] })' || true)
		[ "${n:-0}" -ge "$want" ] && return 0
		[ $((SECONDS - t0)) -ge "$timeout" ] && return 1
		sleep 0.3
	done
}

node_bootstrap() {
	local dir=$1 n=$2
	echo "127.0.0.1:$(cut -d' ' -f1 "$dir/n$n/ports")"
}

all_bootstrap() {
	local dir=$1 i out=
	for i in $(seq 1 "$NODES"); do
		out+=${out:+,}$(node_bootstrap "$dir" "$i")
	done
	echo "$out"
}

# ---------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------

cmd_start() {
	local dir= timeout=120
	NODES=1 AUTO_CREATE=true MAX_BYTES= SASL=0
	while [ $# -gt 0 ]; do
		case $1 in
		--dir) dir=$2; shift 2 ;;
		--nodes) NODES=$2; shift 2 ;;
		--no-auto-create) AUTO_CREATE=false; shift ;;
		--message-max-bytes) MAX_BYTES=$2; shift 2 ;;
		--sasl-ssl) SASL=1; shift ;;
		--timeout) timeout=$2; shift 2 ;;
		*) die "start: unknown option $1" ;;
		esac
	done
	[ -n "$dir" ] || die "start needs --dir D"
	case $NODES in 1 | 3) ;; *) die "--nodes must be 1 or 3" ;; esac
	mkdir -p "$dir"
	dir=$(cd "$dir" && pwd)
	as_owner "$dir" start --dir "$dir" --nodes "$NODES" \
		$([ $AUTO_CREATE = false ] && echo --no-auto-create) \
		${MAX_BYTES:+--message-max-bytes $MAX_BYTES} \
		$([ $SASL = 1 ] && echo --sasl-ssl) --timeout "$timeout"
	fetch
	[ -f "$dir/cluster.env" ] && die "$dir already holds a cluster; use start-node, or stop and remove it"
	local t0=$SECONDS
	local ports i voters= cluster_id
	# per node: broker, controller, SASL_SSL
	mapfile -t ports < <(free_ports $((NODES * 3)))
	for i in $(seq 1 "$NODES"); do
		voters+=${voters:+,}$i@127.0.0.1:${ports[$(((i - 1) * 3 + 1))]}
	done
	[ $SASL = 1 ] && make_tls "$dir"
	# what "kafka-storage random-uuid" prints: 16 random bytes, base64url,
	# drawn again while it starts with "-" (the tool's argument parser would
	# take such an id for an option, as Kafka's own Uuid.randomUuid avoids)
	cluster_id=-
	while [ "${cluster_id#-}" != "$cluster_id" ]; do
		cluster_id=$(openssl rand 16 | base64 | tr '+/' '-_' | tr -d '=\n')
	done
	cat >"$dir/cluster.env" <<EOF
NODES=$NODES
CLUSTER_ID=$cluster_id
SASL=$SASL
AUTO_CREATE=$AUTO_CREATE
MAX_BYTES=$MAX_BYTES
EOF
	if [ $SASL = 1 ]; then
		openssl rand -hex 16 >"$dir/tls/sasl.pass"
		chmod 600 "$dir/tls/sasl.pass"
	fi
	for i in $(seq 1 "$NODES"); do
		local b=$(((i - 1) * 3))
		write_node_config "$dir" "$i" "${ports[$b]}" "${ports[$((b + 1))]}" \
			"$([ $SASL = 1 ] && echo "${ports[$((b + 2))]}")" "$voters"
	done
	# format all nodes in one JVM each, in parallel
	local pids=()
	for i in $(seq 1 "$NODES"); do
		tool kafka.tools.StorageTool format -t "$cluster_id" \
			-c "$dir/n$i/server.properties" \
			>"$dir/n$i/logs/format.log" 2>&1 &
		pids+=($!)
	done
	for i in "${!pids[@]}"; do
		wait "${pids[$i]}" || { cat "$dir/n$((i + 1))/logs/format.log" >&2; die "formatting node $((i + 1)) failed"; }
	done
	for i in $(seq 1 "$NODES"); do
		launch_node "$dir" "$i"
	done
	local bootstrap
	bootstrap=$(all_bootstrap "$dir")
	if ! wait_brokers "$bootstrap" "$NODES" "$timeout"; then
		for i in $(seq 1 "$NODES"); do
			echo "--- node $i" >&2
			tail -30 "$dir/n$i/logs/server.log" >&2 2>/dev/null || tail -30 "$dir/n$i/logs/stdout.log" >&2
		done
		cmd_stop "$dir" || true
		die "cluster did not answer within ${timeout}s"
	fi
	if [ $SASL = 1 ]; then
		local sb= p
		for i in $(seq 1 "$NODES"); do
			p=$(cut -d' ' -f3 "$dir/n$i/ports")
			sb+=${sb:+,}127.0.0.1:$p
		done
		cat >"$dir/client.properties" <<EOF
security.protocol=SASL_SSL
sasl.mechanisms=PLAIN
sasl.username=$SASL_USER
sasl.password=$(cat "$dir/tls/sasl.pass")
ssl.ca.location=$dir/tls/ca.pem
EOF
		chmod 600 "$dir/client.properties"
		paste -sd';' "$dir/client.properties" >"$dir/client.properties.semi"
		chmod 600 "$dir/client.properties.semi"
		echo "$sb" >"$dir/bootstrap_sasl.tmp" && mv "$dir/bootstrap_sasl.tmp" "$dir/bootstrap_sasl"
	fi
	echo "$bootstrap" >"$dir/bootstrap.tmp" && mv "$dir/bootstrap.tmp" "$dir/bootstrap"
	say "$NODES node(s) up in $((SECONDS - t0))s: $bootstrap"
	echo "$bootstrap"
}

cmd_create_topic() {
	[ $# -ge 4 ] || die "usage: create-topic D NAME PARTITIONS RF [MIN_ISR] [name=value ...]"
	local dir=$1 name=$2 parts=$3 rf=$4
	shift 4
	local cfg=()
	if [ $# -gt 0 ] && [[ $1 =~ ^[0-9]+$ ]]; then
		cfg+=(--config "min.insync.replicas=$1")
		shift
	fi
	for kv in "$@"; do cfg+=(--config "$kv"); done
	load_cluster "$dir"
	tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(cat "$dir/bootstrap")" \
		--create --topic "$name" --partitions "$parts" --replication-factor "$rf" "${cfg[@]}" >/dev/null
	# wait until every partition has a leader in the metadata
	local t0=$SECONDS
	while :; do
		local ok
		ok=$(kcat -L -b "$(cat "$dir/bootstrap")" -t "$name" -m 2 -J 2>/dev/null |
			perl -MJSON::PP -e 'local $/; my $j = eval { decode_json(<STDIN>) } or exit;
				my ($t) = grep { $_->{topic} eq $ARGV[0] } @{ $j->{topics} // [] };
				exit unless $t && !$t->{err};
				my @p = @{ $t->{partitions} // [] };
				print scalar(grep { defined $_->{leader} && $_->{leader} >= 0 } @p) == $ARGV[1] ? 1 : 0' "$name" "$parts" || true)
		[ "$ok" = 1 ] && return 0
		[ $((SECONDS - t0)) -ge 30 ] && die "topic $name has no leaders after 30s"
		sleep 0.2
	done
}

cmd_stop_node() {
	local dir=$1 n=$2 sig=${3:-TERM} pid t0=$SECONDS
	load_cluster "$dir"
	pid=$(node_pid "$dir" "$n") || { say "node $n is not running"; return 0; }
	kill -CONT "$pid" 2>/dev/null || true
	kill -"$sig" "$pid"
	while kill -0 "$pid" 2>/dev/null; do
		if [ $((SECONDS - t0)) -ge 60 ]; then
			say "node $n did not stop in 60s; SIGKILL"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		sleep 0.1
	done
	rm -f "$dir/n$n/pid"
	wait_ports_free "$dir" "$n"
}

wait_ports_free() {
	local dir=$1 n=$2 p t0=$SECONDS
	for p in $(cat "$dir/n$n/ports"); do
		while port_bound "$p"; do
			[ $((SECONDS - t0)) -ge 30 ] && die "port $p of node $n still bound"
			sleep 0.1
		done
	done
}

cmd_signal_node() {
	local dir=$1 n=$2 sig=$3 pid
	load_cluster "$dir"
	pid=$(node_pid "$dir" "$n") || die "node $n is not running"
	kill -"$sig" "$pid"
}

# start-node D N [N...]: launch them all, then wait for each (a node of a
# 3-node cluster cannot answer before a majority of controllers is up).
cmd_start_node() {
	local dir=$1 n
	shift
	load_cluster "$dir"
	fetch
	for n in "$@"; do
		launch_node "$dir" "$n"
	done
	for n in "$@"; do
		wait_brokers "$(node_bootstrap "$dir" "$n")" 1 120 || die "node $n did not answer within 120s"
	done
}

cmd_leader() {
	local dir=$1 topic=$2 part=$3
	load_cluster "$dir"
	kcat -L -b "$(cat "$dir/bootstrap")" -t "$topic" -m 5 -J 2>/dev/null |
		perl -MJSON::PP -e 'local $/; my $j = decode_json(<STDIN>);
			my ($t) = grep { $_->{topic} eq $ARGV[0] } @{ $j->{topics} };
			my ($p) = grep { $_->{partition} == $ARGV[1] } @{ $t->{partitions} // [] };
			defined $p or die "no partition $ARGV[1] of $ARGV[0]\n";
			print "$p->{leader}\n"' "$topic" "$part"
}

cmd_controller() {
	local dir=$1
	load_cluster "$dir"
	tool org.apache.kafka.tools.MetadataQuorumCommand --bootstrap-server "$(cat "$dir/bootstrap")" \
		describe --status 2>/dev/null | awk '/^LeaderId:/ {print $2}'
}

cmd_status() {
	local dir=$1 i pid state
	load_cluster "$dir"
	for i in $(seq 1 "$NODES"); do
		if pid=$(node_pid "$dir" "$i"); then
			state=$(awk '/^State:/ {print $2}' "/proc/$pid/status")
			[ "$state" = T ] && state=frozen || state=running
		else
			pid=- state=stopped
		fi
		echo "$i $pid $state $(cat "$dir/n$i/ports")"
	done
}

cmd_stop() {
	local dir=$1 i pids=()
	[ -f "$dir/cluster.env" ] || return 0
	load_cluster "$dir"
	# stop all nodes at once: a lone survivor would wait for its quorum
	for i in $(seq 1 "$NODES"); do
		local pid
		pid=$(node_pid "$dir" "$i") || continue
		kill -CONT "$pid" 2>/dev/null || true
		kill -TERM "$pid" 2>/dev/null || true
		pids+=("$pid")
	done
	local t0=$SECONDS
	for pid in "${pids[@]}"; do
		while kill -0 "$pid" 2>/dev/null; do
			# the last nodes of a quorum wait for the others in vain
			if [ $((SECONDS - t0)) -ge 10 ]; then
				kill -KILL "$pid" 2>/dev/null || true
			fi
			sleep 0.1
		done
	done
	for i in $(seq 1 "$NODES"); do
		rm -f "$dir/n$i/pid"
		wait_ports_free "$dir" "$i"
	done
	rm -f "$dir/bootstrap" "$dir/bootstrap_sasl"
}

[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$KAFKA_SH" | sed '$d'; exit 2; }
cmd=$1
shift
case $cmd in
fetch) fetch ;;
start) cmd_start "$@" ;;
run-class) [ $# -ge 1 ] || die "usage: run-class MAIN [ARG...]"; tool "$@" ;;
*)
	[ $# -ge 1 ] || die "$cmd needs the cluster directory"
	as_owner "$1" "$cmd" "$@"
	case $cmd in
	create-topic) cmd_create_topic "$@" ;;
	stop-node | kill-node | freeze-node | resume-node)
		[ $# -ge 2 ] || die "usage: $cmd D N [N...]"
		d=$1
		shift
		for n in "$@"; do
			case $cmd in
			stop-node) cmd_stop_node "$d" "$n" TERM ;;
			kill-node) cmd_stop_node "$d" "$n" KILL ;;
			freeze-node) cmd_signal_node "$d" "$n" STOP ;;
			resume-node) cmd_signal_node "$d" "$n" CONT ;;
			esac
		done
		;;
	start-node) [ $# -ge 2 ] || die "usage: start-node D N [N...]"; cmd_start_node "$@" ;;
	leader) cmd_leader "$@" ;;
	controller) cmd_controller "$1" ;;
	status) cmd_status "$1" ;;
	stop) cmd_stop "$1" ;;
	*) die "unknown command $cmd" ;;
	esac
	;;
esac
