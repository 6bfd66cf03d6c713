#!/usr/bin/env bash
#
# test/lib.sh
#    Shared by test/run_all.sh and test/demo.sh: install what a fresh Debian
#    machine lacks, then build and install outbox from a copy of the tree
#    that the postgres OS user can write (PostgreSQL refuses to run as root).
#

OUTBOX_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUTBOX_BUILD=${OUTBOX_BUILD_DIR:-/tmp/outbox-build}
PG_MAJOR=${PG_MAJOR:-15}
# The server's installation; OUTBOX_PG_ROOT may name a relocated copy of
# /usr (PostgreSQL's binaries find their files relative to themselves), so
# that several trees can be built and tested side by side.
PG_LIBDIR=${OUTBOX_PG_ROOT:-}/usr/lib/postgresql/$PG_MAJOR

# Debian packages the build, the tests and the demo need.
OUTBOX_PACKAGES=(
	make gcc
	"postgresql-$PG_MAJOR" "postgresql-server-dev-$PG_MAJOR"
	"postgresql-$PG_MAJOR-pgtap" libtap-parser-sourcehandler-pgtap-perl
	librdkafka-dev libpq-dev kcat libipc-run-perl
)

log() { printf '\n==> %s\n' "$*"; }

require_root() {
	if [ "$(id -u)" -ne 0 ]; then
		echo "run this as root (it installs packages and runs PostgreSQL as the postgres user)" >&2
		exit 2
	fi
}

# Install missing packages; touch apt only when something is missing.
install_deps() {
	local missing=() p
	for p in "${OUTBOX_PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
			missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		return 0
	fi
	log "installing ${missing[*]}"
	# Our clusters are our own: don't let the package create and start one.
	mkdir -p /etc/postgresql-common
	if [ ! -e /etc/postgresql-common/createcluster.conf ]; then
		echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf
	fi
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Java and Maven for the real Kafka of test/kafka (not needed with the mock).
install_kafka_deps() {
	command -v java >/dev/null && command -v mvn >/dev/null && return 0
	log "installing Java and Maven for a real Kafka"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends openjdk-17-jre-headless maven >/dev/null
}

pg_bindir() {
	"$PG_LIBDIR/bin/pg_config" --bindir
}

# Copy the tree to $OUTBOX_BUILD (owned by postgres), build it there and
# install the extension into the system PostgreSQL.
build_install() {
	log "building in $OUTBOX_BUILD"
	rm -rf "$OUTBOX_BUILD"
	mkdir -p "$OUTBOX_BUILD"
	(cd "$OUTBOX_ROOT" && tar --exclude=./.git --exclude='*/tmp_check' \
		--exclude=./results --exclude='*.o' --exclude='*.so' --exclude='*.bc' -cf - .) |
		(cd "$OUTBOX_BUILD" && tar -xf -)
	chown -R postgres:postgres "$OUTBOX_BUILD"
	local pgc="$PG_LIBDIR/bin/pg_config"
	runuser -u postgres -- make -C "$OUTBOX_BUILD" -s PG_CONFIG="$pgc" clean >/dev/null
	if ! runuser -u postgres -- make -C "$OUTBOX_BUILD" -s PG_CONFIG="$pgc" \
		> "$OUTBOX_BUILD/build.log" 2>&1; then
		cat "$OUTBOX_BUILD/build.log"
		echo "build failed" >&2
		return 1
	fi
	if grep -q "warning:" "$OUTBOX_BUILD/build.log"; then
		cat "$OUTBOX_BUILD/build.log"
		echo "build has compiler warnings" >&2
		return 1
	fi
	make -C "$OUTBOX_BUILD" -s PG_CONFIG="$pgc" install >/dev/null
}

# A free TCP port on 127.0.0.1.
free_port() {
	local port
	for port in $(seq "${1:-56000}" 65000); do
		if ! (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
			echo "$port"
			return 0
		fi
	done
	return 1
}
