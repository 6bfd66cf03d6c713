#!/usr/bin/env bash
#
# bench/peers/debezium/debezium.sh
#    Build and run the Debezium peer (DebeziumOutbox.java: Debezium's
#    PostgreSQL connector and Outbox Event Router in Debezium's embedded
#    engine) from Maven artifacts pinned in pom.xml.  Nothing is committed
#    but the sources: Maven resolves Debezium 3.6.1.Final and kafka-clients
#    4.1.1 into the local Maven repository (~/.m2), which is the cache, and
#    the program's jar with its runtime classpath is copied to a library
#    directory every user can read ($OUTBOX_DEBEZIUM_LIBS, default
#    /var/cache/outbox-debezium/<hash of pom.xml and sources>), so that the
#    TAP tests, run as postgres, can start it.
#
#    debezium.sh fetch            build into the library directory (once)
#    debezium.sh libs             print the library directory
#    debezium.sh run CONFIG...    run one JVM with one engine per properties
#                                 file (see DebeziumOutbox.java)
#
#    Environment: OUTBOX_DEBEZIUM_LIBS, OUTBOX_DEBEZIUM_HEAP (default
#    "-Xms64m -Xmx1g"), JAVA (default java).
#
set -euo pipefail

PEER_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
JAVA=${JAVA:-java}
HEAP=${OUTBOX_DEBEZIUM_HEAP:--Xms64m -Xmx1g}

die() { echo "debezium.sh: $*" >&2; exit 1; }
say() { echo "debezium.sh: $*" >&2; }

default_libs() {
	local hash base
	hash=$(cat "$PEER_DIR/pom.xml" "$PEER_DIR"/src/main/java/outbox/bench/*.java | sha256sum | cut -c1-12)
	if [ -w /var/cache ] || [ -d /var/cache/outbox-debezium ]; then
		base=/var/cache/outbox-debezium
	else
		base=${TMPDIR:-/tmp}/outbox-debezium-$(id -u)
	fi
	echo "$base/$hash"
}
LIBS=${OUTBOX_DEBEZIUM_LIBS:-$(default_libs)}

# Build in a copy of the project (the tree stays clean and may be read-only)
# and copy the jar and its runtime dependencies into $LIBS.
fetch() {
	[ -f "$LIBS/.complete" ] && return 0
	command -v mvn >/dev/null || die "mvn not found (apt-get install maven)"
	if ! command -v javac >/dev/null; then
		[ "$(id -u)" -eq 0 ] || die "javac not found (apt-get install openjdk-17-jdk-headless)"
		say "installing a JDK (javac) for the Debezium peer"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			openjdk-17-jdk-headless >/dev/null
	fi
	local tmp build
	mkdir -p "$(dirname "$LIBS")"
	tmp=$(mktemp -d "$LIBS.tmp.XXXXXX")
	build=$(mktemp -d)
	cp -r "$PEER_DIR/pom.xml" "$PEER_DIR/src" "$build/"
	say "building the Debezium peer with Maven into $LIBS"
	if ! mvn -q -B -f "$build/pom.xml" package dependency:copy-dependencies \
		-DincludeScope=runtime -DoutputDirectory="$tmp" >"$build/mvn.log" 2>&1; then
		cat "$build/mvn.log" >&2
		rm -rf "$tmp" "$build"
		die "Maven could not build $PEER_DIR/pom.xml"
	fi
	cp "$build/target/outbox-debezium-peer.jar" "$tmp/"
	cp "$PEER_DIR/log4j2.properties" "$tmp/"
	rm -rf "$build"
	touch "$tmp/.complete"
	chmod -R a+rX "$tmp"
	chmod a+rx "$(dirname "$LIBS")"
	rm -rf "$LIBS"
	mv "$tmp" "$LIBS"
}

run() {
	[ -f "$LIBS/.complete" ] || die "not built: run '$0 fetch' (as root for the shared cache)"
	# shellcheck disable=SC2086
	exec "$JAVA" $HEAP -XX:+UseG1GC -Xshare:auto -Djava.awt.headless=true \
		-Dlog4j2.configurationFile="$LIBS/log4j2.properties" \
		-cp "$LIBS/*" outbox.bench.DebeziumOutbox "$@"
}

[ $# -ge 1 ] || { sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 2; }
cmd=$1
shift
case $cmd in
fetch) fetch; echo "$LIBS" ;;
libs) echo "$LIBS" ;;
run) run "$@" ;;
*) die "unknown command $cmd" ;;
esac
