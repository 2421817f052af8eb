#!/usr/bin/env bash
# setup.sh - install what flashsale needs (Debian 12 packages only), build it,
# and either run the server or run every test suite.
#
#   ./setup.sh run [flashsaled flags]   install, build, start flashsaled (embedded default)
#   ./setup.sh test                     install, build (release, ASan/UBSan, TSan), start a real
#                                       PostgreSQL and Redis on loopback, run every suite,
#                                       stop them; last line: "N passed, N failed"
#   ./setup.sh build                    install and build only
#
# Root is not needed. As another user, sudo is used for apt-get only (when a
# package is missing) and by the root-only suites (DPDK over veth on 1 and 2
# lanes, the tmpfs disk-full test), which elevate themselves with `sudo -n`
# when that works without a password and otherwise skip, named in a line of
# their own before the totals.
# PostgreSQL then runs as the invoking user (only the root user is refused
# by initdb and pg_ctl).
set -euo pipefail
cd "$(dirname "$0")"

PKGS=(build-essential meson ninja-build pkg-config clang python3 curl procps iproute2
      liburing-dev libssl-dev libxxhash-dev libhttp-parser-dev libjsmn-dev libcmocka-dev
      libpq-dev libhiredis-dev librdkafka-dev postgresql redis-server
      nginx-light haproxy wrk gnuplot-nox dpdk-dev libdpdk-dev liblwip-dev ethtool faketime
      chromium chromium-driver python3-selenium prometheus)

log() { printf 'setup: %s\n' "$*" >&2; }

deps() {
	local missing=()
	for p in "${PKGS[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
	done
	if [ ${#missing[@]} -eq 0 ]; then
		return 0
	fi
	log "installing: ${missing[*]}"
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null || {
			log "missing packages and no sudo: as root run: apt-get install ${missing[*]}"
			exit 1
		}
		sudo=(sudo DEBIAN_FRONTEND=noninteractive)
	fi
	export DEBIAN_FRONTEND=noninteractive
	"${sudo[@]}" apt-get update -qq
	"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Runs a build step quietly; on failure shows what it printed and stops.
quiet() {
	local out
	out=$(mktemp)
	if ! "$@" > "$out" 2>&1; then
		cat "$out" >&2
		rm -f "$out"
		log "FAILED: $*"
		exit 1
	fi
	rm -f "$out"
}

build() {
	[ -f build/build.ninja ] || quiet meson setup build --buildtype=release
	quiet ninja -C build
	log "built build/ (release)"
}

build_debug() {
	[ -f build-debug/build.ninja ] || quiet meson setup build-debug --buildtype=debug \
		-Db_sanitize=address,undefined -Db_lundef=false
	quiet ninja -C build-debug
	log "built build-debug/ (ASan + UBSan)"
}

# ThreadSanitizer: only what runs under it (flashsaled and flashctl for the
# load test, the ring and payment unit tests), not the whole tree.
TSAN_TARGETS="control/flashsaled control/flashctl tests/common/ring_test tests/writer/payment_test"
build_tsan() {
	[ -f build-tsan/build.ninja ] || quiet meson setup build-tsan --buildtype=debug \
		-Db_sanitize=thread -Db_lundef=false
	# shellcheck disable=SC2086
	quiet ninja -C build-tsan $TSAN_TARGETS
	log "built build-tsan/ (ThreadSanitizer: $TSAN_TARGETS)"
}

PG_DIR=""; PG_PORT=""; REDIS_PORT=""; REDIS_DIR=""

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# PostgreSQL refuses to run as root: as root it runs as the postgres user,
# otherwise as the invoking user. Either way its superuser is "postgres".
as_pg() {
	if [ "$(id -u)" -eq 0 ]; then
		runuser -u postgres -- "$@"
	else
		"$@"
	fi
}

start_services() {
	local pgbin=/usr/lib/postgresql/15/bin
	PG_DIR=$(mktemp -d /tmp/flashsale-pg.XXXXXX)
	PG_PORT=$(free_port)
	[ "$(id -u)" -ne 0 ] || chown postgres "$PG_DIR"
	as_pg "$pgbin/initdb" --no-sync -A trust -U postgres -D "$PG_DIR/data" >/dev/null
	as_pg "$pgbin/pg_ctl" -w -D "$PG_DIR/data" -l "$PG_DIR/log" \
		-o "-p $PG_PORT -k $PG_DIR -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
	as_pg "$pgbin/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres flashsale
	export FS_TEST_PG="host=127.0.0.1 port=$PG_PORT user=postgres dbname=flashsale"
	REDIS_DIR=$(mktemp -d /tmp/flashsale-redis.XXXXXX)
	REDIS_PORT=$(free_port)
	redis-server --daemonize yes --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
		--dir "$REDIS_DIR" --pidfile "$REDIS_DIR/redis.pid" --logfile "$REDIS_DIR/log" >/dev/null
	export FS_TEST_REDIS="127.0.0.1:$REDIS_PORT"
	log "PostgreSQL on 127.0.0.1:$PG_PORT, Redis on 127.0.0.1:$REDIS_PORT"
}

stop_services() {
	if [ -n "$PG_DIR" ]; then
		as_pg /usr/lib/postgresql/15/bin/pg_ctl -D "$PG_DIR/data" -m immediate stop >/dev/null 2>&1 || true
		rm -rf "$PG_DIR"
	fi
	if [ -n "$REDIS_DIR" ]; then
		[ -f "$REDIS_DIR/redis.pid" ] && kill "$(cat "$REDIS_DIR/redis.pid")" 2>/dev/null || true
		rm -rf "$REDIS_DIR"
	fi
}

# Runs one meson test invocation, adds its counts to the totals and the
# names of skipped tests to SKIPPED_NAMES.
PASSED=0; FAILED=0; SKIPPED=0; SKIPPED_NAMES=""
suite() {
	local dir=$1; shift
	local out
	out=$(mktemp)
	meson test -C "$dir" --print-errorlogs --num-processes 2 "$@" 2>&1 | tee "$out" || true
	local ok fail xfail timeout skip
	ok=$(sed -n 's/^Ok: *\([0-9]*\).*/\1/p' "$out" | tail -1)
	fail=$(sed -n 's/^Fail: *\([0-9]*\).*/\1/p' "$out" | tail -1)
	timeout=$(sed -n 's/^Timeout: *\([0-9]*\).*/\1/p' "$out" | tail -1)
	skip=$(sed -n 's/^Skipped: *\([0-9]*\).*/\1/p' "$out" | tail -1)
	xfail=$(sed -n 's/^Unexpected Pass: *\([0-9]*\).*/\1/p' "$out" | tail -1)
	if [ -z "$ok" ] && [ -z "$fail" ]; then
		fail=1   # meson itself failed: count it, never pass silently
	fi
	PASSED=$((PASSED + ${ok:-0}))
	FAILED=$((FAILED + ${fail:-0} + ${timeout:-0} + ${xfail:-0}))
	SKIPPED=$((SKIPPED + ${skip:-0}))
	SKIPPED_NAMES="$SKIPPED_NAMES$(sed -n 's|^ *[0-9]*/[0-9]* [^ ]* / \([^ ]*\) *SKIP .*|\1 |p' "$out")"
	rm -f "$out"
}

run_tests() {
	trap stop_services EXIT
	start_services
	suite build --suite unit --suite e2e --suite sinks --suite fuzz --suite perf --suite deploy \
		--suite sim --suite soak --suite static
	# ASan + UBSan with leak checking: the unit suite, and the end-to-end suites
	# that face input and shutdown (API, bad input, admin, payments, sinks);
	# the slow, timing-heavy ones (crash, race, risk) are the long version (RELIABILITY.md)
	ASAN_OPTIONS=detect_leaks=1 suite build-debug --suite unit
	ASAN_OPTIONS=detect_leaks=1 suite build-debug e2e-api e2e-bad_input e2e-admin e2e-payments e2e-sinks e2e-refund
	# faults: e2e tests of the debug build's test-only fault switches (common/fs_fault.h)
	ASAN_OPTIONS=detect_leaks=0 suite build-debug --suite faults
	# ThreadSanitizer: the SPSC ring race, the payment thread, and flashsaled's
	# threads under a short load (tests/tsan); any report fails the run
	TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1" \
		suite build-tsan --no-rebuild common-ring payment tsan-load
	stop_services
	trap - EXIT
	echo
	if [ "$SKIPPED" -gt 0 ]; then
		echo "SKIPPED $SKIPPED: ${SKIPPED_NAMES% } (root-only suites need root or passwordless sudo)"
	fi
	echo "$PASSED passed, $FAILED failed"
	[ "$FAILED" -eq 0 ]
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
	run)   deps; build; exec build/control/flashsaled "$@" ;;
	test)  deps; build; build_debug; build_tsan; run_tests ;;
	build) deps; build ;;
	*)     sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
