#!/usr/bin/env bash
#
# test/pgmatrix.sh
#    Build and test outbox against several PostgreSQL major versions.
#
#      bash test/pgmatrix.sh 15 17 18
#      bash test/pgmatrix.sh --prepare 17 18   (only make the chroots)
#
#    15 runs on the host (Debian bookworm).  17 and 18 run in minimal chroots
#    of the Debian release that ships them (trixie, forky), made with
#    debootstrap from the host's Debian mirror and cached outside the
#    repository in $OUTBOX_PGMATRIX_CACHE (default /var/cache/outbox-pgmatrix),
#    reused when present.  In each root the extension is built with -Werror
#    and test/run_all.sh runs the matrix suites as the postgres user.  proc,
#    sys, dev and the source tree are mounted into a chroot only while it is
#    used and always unmounted.
#
#    Prints one line per version, "pgN: N passed, N failed (T s)", and
#    "outbox: N passed, N failed" at the end; exits non-zero on any failure.
#
#    Environment:
#      OUTBOX_MATRIX_SUITES     suites per version (default "regress pgtap e2e")
#      OUTBOX_MATRIX_E2E_TESTS  end-to-end tests per version (default: the core)
#      OUTBOX_PGMATRIX_CACHE    where the chroots live
#      OUTBOX_PGMATRIX_MIRROR   Debian mirror (default: the host's)
#      OUTBOX_BUILD_DIR         build directory for the host version (15)
#      OUTBOX_TEST_KAFKA_BROKERS, OUTBOX_TEST_KAFKA_PROPERTIES
#                               passed on to the end-to-end suite
#
set -uo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUTBOX_ROOT=$(cd "$HERE/.." && pwd)
CACHE=${OUTBOX_PGMATRIX_CACHE:-/var/cache/outbox-pgmatrix}
SUITES=${OUTBOX_MATRIX_SUITES:-regress pgtap e2e}
# The end-to-end core: decoder memory, basic relay, concurrent writers, crash
# recovery, idle WAL, the 1M-event transaction, dead letters; and failover,
# which uses failover slots from 17 on.
E2E_TESTS=${OUTBOX_MATRIX_E2E_TESTS:-001_* 010_* 020_* 040_* 060_* 070_* 050_* 135_* 140_*}
HOST_MAJOR=15

# Packages every root needs: what test/lib.sh installs, plus what a minbase
# system lacks for the suites.
EXTRA_PACKAGES=(perl ca-certificates procps)

log() { printf '\n==> %s\n' "$*"; }

if [ "$(id -u)" -ne 0 ]; then
	echo "run this as root (it makes chroots and runs PostgreSQL as the postgres user)" >&2
	exit 2
fi
PREPARE_ONLY=
if [ "${1:-}" = --prepare ]; then
	PREPARE_ONLY=1
	shift
fi
if [ $# -eq 0 ]; then
	echo "usage: $0 [--prepare] MAJOR... (e.g. 15 17 18)" >&2
	exit 2
fi

# Debian release that ships a PostgreSQL major version.
release_of() {
	case $1 in
	15) echo bookworm ;;
	17) echo trixie ;;
	18) echo forky ;;
	*) return 1 ;;
	esac
}

# The host's Debian mirror, from its apt sources.
host_mirror() {
	local m
	m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -oE 'https?://[^ ]+/debian/?( |$)' | grep -v security | head -1 | tr -d ' ')
	echo "${m:-http://deb.debian.org/debian}"
}
MIRROR=${OUTBOX_PGMATRIX_MIRROR:-$(host_mirror)}

# ---------------------------------------------------------------------
# Mounts: everything mounted is recorded and unmounted by cleanup().
# ---------------------------------------------------------------------
MOUNTED=()

mount_in() {
	# mount_in TARGET MOUNT-ARGS...
	local target=$1
	shift
	mkdir -p "$target"
	mount "$@" "$target" || return 1
	MOUNTED+=("$target")
}

# Stop processes still running inside ROOT (only ours can be there: the
# chroots are private to this script), then unmount in reverse order.
release_root() {
	local root=$1 p pids i
	if [ -n "$root" ] && [ -d "$root" ]; then
		pids=()
		for p in /proc/[0-9]*; do
			[ "$(readlink "$p/root" 2>/dev/null)" = "$root" ] && pids+=("${p#/proc/}")
		done
		if [ ${#pids[@]} -gt 0 ]; then
			echo "stopping leftover processes in $root: ${pids[*]}" >&2
			kill -TERM "${pids[@]}" 2>/dev/null
			sleep 2
			kill -KILL "${pids[@]}" 2>/dev/null
		fi
	fi
	for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do
		umount "${MOUNTED[i]}" 2>/dev/null || umount -l "${MOUNTED[i]}" ||
			echo "could not unmount ${MOUNTED[i]}" >&2
	done
	MOUNTED=()
}

CURRENT_ROOT=
cleanup() {
	release_root "$CURRENT_ROOT"
	CURRENT_ROOT=
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Unmount what a run that was killed left mounted under ROOT (we hold the
# root's lock: no other run uses it now), deepest first.
unmount_leftovers() {
	local root=$1 m
	for m in $(awk -v r="$root/" 'index($2, r) == 1 {print $2}' /proc/mounts | sort -r); do
		echo "unmounting $m, left by an earlier run" >&2
		umount "$m" 2>/dev/null || umount -l "$m"
	done
}

mount_root() {
	local root=$1
	unmount_leftovers "$root"
	CURRENT_ROOT=$root
	mount_in "$root/proc" -t proc proc &&
		mount_in "$root/sys" -t sysfs sysfs &&
		mount_in "$root/dev" --bind /dev &&
		mount_in "$root/dev/pts" --bind /dev/pts &&
		mount_in "$root/dev/shm" -t tmpfs -o mode=1777,nosuid,nodev shm
}

# Run a command inside ROOT with a clean environment.
in_root() {
	local root=$1
	shift
	chroot "$root" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}

# ---------------------------------------------------------------------
# Preparing a root
# ---------------------------------------------------------------------

# Packages for MAJOR, from test/lib.sh's list.
packages_for() {
	(PG_MAJOR=$1 && . "$HERE/lib.sh" && printf '%s\n' "${OUTBOX_PACKAGES[@]}" "${EXTRA_PACKAGES[@]}")
}

# prepare_root MAJOR: make (or reuse) the chroot; its path goes to ROOT.
prepare_root() {
	local major=$1 release root tmp pkgs stamp want script=()
	ROOT=
	release=$(release_of "$major") || return 1
	root=$CACHE/$release
	pkgs=$(packages_for "$major" | sort -u | tr '\n' ' ')
	want="$release $MIRROR $pkgs"
	stamp=$root/.outbox-pgmatrix
	if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
		log "PostgreSQL $major: reusing $root"
		ROOT=$root
		return 0
	fi
	if ! command -v debootstrap >/dev/null; then
		log "installing debootstrap" >&2
		apt-get update -qq >&2 && apt-get install -y -qq --no-install-recommends debootstrap >&2 ||
			return 1
	fi
	tmp=$root.tmp
	# A root made for another package list: keep its base system.
	if [ -d "$root" ] && [ ! -e "$tmp" ]; then
		mv "$root" "$tmp"
		rm -f "$tmp/.outbox-pgmatrix"
		touch "$tmp/.debootstrap-done"
	fi
	# Reuse an unfinished root only when its packages are the only thing missing.
	if [ -e "$tmp" ] && [ ! -f "$tmp/.debootstrap-done" ]; then
		rm -rf --one-file-system "$tmp"
	fi
	if [ ! -e "$tmp" ]; then
		# debootstrap knows forky only through its sid script.
		[ -e "/usr/share/debootstrap/scripts/$release" ] ||
			script=(/usr/share/debootstrap/scripts/sid)
		log "PostgreSQL $major: debootstrap $release from $MIRROR" >&2
		mkdir -p "$CACHE"
		if ! debootstrap --variant=minbase "$release" "$tmp" "$MIRROR" "${script[@]}" \
			> "$CACHE/$release.debootstrap.log" 2>&1; then
			tail -20 "$CACHE/$release.debootstrap.log" >&2
			return 1
		fi
		touch "$tmp/.debootstrap-done"
	fi
	# No clusters or services of the packages' own; apt must accept a
	# testing release whose Release file is past its Valid-Until.
	mkdir -p "$tmp/etc/postgresql-common" "$tmp/usr/sbin" "$tmp/etc/apt/apt.conf.d"
	echo "create_main_cluster = false" > "$tmp/etc/postgresql-common/createcluster.conf"
	printf '#!/bin/sh\nexit 101\n' > "$tmp/usr/sbin/policy-rc.d"
	chmod 755 "$tmp/usr/sbin/policy-rc.d"
	cat > "$tmp/etc/apt/apt.conf.d/90outbox-pgmatrix" <<-'EOF'
		Acquire::Check-Valid-Until "false";
		APT::Install-Recommends "false";
		APT::Install-Suggests "false";
	EOF
	echo "deb $MIRROR $release main" > "$tmp/etc/apt/sources.list"
	log "PostgreSQL $major: installing $pkgs" >&2
	mount_root "$tmp" || { cleanup; return 1; }
	# shellcheck disable=SC2086
	if ! { in_root "$tmp" apt-get update -q &&
		in_root "$tmp" apt-get install -y -q $pkgs &&
		in_root "$tmp" apt-get clean; } > "$CACHE/$release.apt.log" 2>&1; then
		tail -30 "$CACHE/$release.apt.log" >&2
		cleanup
		return 1
	fi
	cleanup
	rm -rf --one-file-system "$root"
	mv "$tmp" "$root"
	echo "$want" > "$stamp"
	ROOT=$root
}

# ---------------------------------------------------------------------
# Running the suites
# ---------------------------------------------------------------------

RESULTS=()
TOTAL_PASS=0
TOTAL_FAIL=0

# result MAJOR PASSED FAILED SECONDS
result() {
	RESULTS+=("$(printf 'pg%s: %d passed, %d failed (%d s)' "$1" "$2" "$3" "$4")")
	TOTAL_PASS=$((TOTAL_PASS + $2))
	TOTAL_FAIL=$((TOTAL_FAIL + $3))
}

# counts LOG: "PASSED FAILED" from run_all.sh's last line, "0 1" if none.
counts() {
	local line
	line=$(grep -E '^outbox: [0-9]+ passed, [0-9]+ failed' "$1" | tail -1)
	if [ -z "$line" ]; then
		echo "0 1"
	else
		echo "$line" | awk '{print $2, $4}'
	fi
}

run_version() {
	local major=$1 start root out st p f env
	start=$(date +%s)
	# a log of this run's own: two runs at once (one waits for the root's
	# lock) must not count each other's lines
	out=$CACHE/pg$major.$$.log
	mkdir -p "$CACHE"
	env=(PG_MAJOR="$major" OUTBOX_SUITES="$SUITES" OUTBOX_E2E_TESTS="$E2E_TESTS"
		COPT=-Werror
		OUTBOX_TEST_KAFKA_BROKERS="${OUTBOX_TEST_KAFKA_BROKERS:-}"
		OUTBOX_TEST_KAFKA_PROPERTIES="${OUTBOX_TEST_KAFKA_PROPERTIES:-}")
	if [ "$major" = "$HOST_MAJOR" ]; then
		log "PostgreSQL $major on the host"
		env "${env[@]}" OUTBOX_BUILD_DIR="${OUTBOX_BUILD_DIR:-/tmp/outbox-build}" \
			bash "$HERE/run_all.sh" 2>&1 | tee "$out"
		st=${PIPESTATUS[0]}
	else
		(
			# A subshell does not inherit the traps: unmount on any exit.
			trap cleanup EXIT
			trap 'exit 130' INT TERM
			# One run per root at a time.
			exec 9> "$CACHE/$(release_of "$major").lock"
			flock 9
			prepare_root "$major" || { echo "outbox: 0 passed, 1 failed"; exit 1; }
			root=$ROOT
			mount_root "$root" &&
				mount_in "$root/outbox-src" --bind "$OUTBOX_ROOT" &&
				mount -o remount,bind,ro "$root/outbox-src" ||
				{ echo "outbox: 0 passed, 1 failed"; exit 1; }
			log "PostgreSQL $major in $root"
			in_root "$root" "${env[@]}" OUTBOX_BUILD_DIR=/tmp/outbox-build \
				bash /outbox-src/test/run_all.sh
		) 2>&1 | tee "$out"
		st=${PIPESTATUS[0]}
	fi
	read -r p f < <(counts "$out")
	rm -f "$out"
	[ "$st" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	result "$major" "$p" "$f" $(($(date +%s) - start))
}

# --prepare: only make (or check) the roots, each under its lock, so that
# run_all.sh can have them ready while the host's suites run.
if [ -n "$PREPARE_ONLY" ]; then
	st=0
	mkdir -p "$CACHE"
	for major in "$@"; do
		[ "$major" = "$HOST_MAJOR" ] && continue
		release_of "$major" >/dev/null || continue
		(
			trap cleanup EXIT
			trap 'exit 130' INT TERM
			exec 9> "$CACHE/$(release_of "$major").lock"
			flock 9
			prepare_root "$major"
		) || st=1
	done
	exit $st
fi

for major in "$@"; do
	if ! release_of "$major" >/dev/null; then
		echo "PostgreSQL $major: not supported here (15, 17 and 18 are)" >&2
		result "$major" 0 1 0
		continue
	fi
	run_version "$major"
done

log "matrix summary"
printf '%s\n' "${RESULTS[@]}"
echo "outbox: $TOTAL_PASS passed, $TOTAL_FAIL failed"
[ "$TOTAL_FAIL" -eq 0 ]
