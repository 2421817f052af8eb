#!/bin/bash
# veth_test.sh - the DPDK backend end to end, on a test bed of its own:
#
#   netns fsdp-s-ID: the server (DPDK, af_packet vdev on veth fsds-ID,
#                    lwIP owns 10.99.0.2/24; the kernel end has no address)
#   netns fsdp-c-ID: the clients (veth fsdc-ID 10.99.0.1/24, TX checksum
#                    offload OFF, or SYNs arrive with unfilled checksums)
#
# Both ends live in namespaces this script creates and deletes, so no
# packet touches the host's interfaces and parallel runs do not collide.
# Checks (from the client namespace): ARP + ICMP echo, GET /v1/skus/demo,
# then tests/dpdk/dpdk_checks.py (reservations, pipelining, many
# connections, vanished clients leak nothing), then the shared e2e API
# suite against FS_BASE_URL when tests/e2e/fsclient.py supports it.
#
# usage: veth_test.sh SERVER_BINARY [BUILD_DIR]
#   SERVER_BINARY: dpdk_harness, or flashsaled once it has --dpdk (used
#   automatically when BUILD_DIR/control/flashsaled --help mentions --dpdk).
# Exit: 0 pass, 1 fail, 77 skipped (not root, no netns/veth, no binary).
# FS_DPDK_KEEP=1 keeps the bed and the server for poking at (prints how).
# FS_DPDK_LANES=N runs --workers N stack lanes (one process and one lwIP
# each; af_packet qpairs=N fans flows out by hash) and adds the lane checks
# (connections land on every lane, a killed lane is restarted while the
# others serve and the writer goes on, a reservation storm through all
# lanes sells no unit twice).
# FS_DPDK_HUGE=1 runs on real hugepages: hugepages/reserve.sh reserves them
# first and hugepages/release.sh gives them back at the end.
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
BIN=${1:-}
BUILD=${2:-$ROOT/build}

skip() { echo "skipped: $*"; exit 77; }
if [ "$(id -u)" != 0 ]; then
	# root-only: elevate when sudo works without a password (setup.sh as a
	# non-root user), else skip loudly
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n "$0" "$@"
	fi
	skip "needs root (network namespaces, veth, af_packet): run as root or with passwordless sudo"
fi
command -v ip >/dev/null || skip "iproute2 (ip) is not installed"
command -v ethtool >/dev/null || skip "ethtool is not installed"
command -v python3 >/dev/null || skip "python3 is not installed"
if [ -x "$BUILD/control/flashsaled" ] && "$BUILD/control/flashsaled" --help 2>/dev/null | grep -q -- '--dpdk'; then
	BIN=$BUILD/control/flashsaled
fi
[ -n "$BIN" ] && [ -x "$BIN" ] || skip "no flashsaled with --dpdk (needs libdpdk-dev + liblwip-dev)"

ID=$$
SNS=fsdp-s-$ID; CNS=fsdp-c-$ID
VS=fsds$ID; VC=fsdc$ID            # interface names: at most 15 characters
SRV_IP=10.99.0.2; CLI_IP=10.99.0.1; PORT=8080
DATA=$(mktemp -d /tmp/fsdp-test-XXXXXX)
SRV_PID=

cleanup() {
	if [ -n "${FS_DPDK_KEEP:-}" ]; then
		echo "kept: server pid $SRV_PID, netns $SNS $CNS, data $DATA"
		echo "  ip netns exec $CNS curl http://$SRV_IP:$PORT/v1/skus/demo"
		echo "  cleanup: kill $SRV_PID; ip netns del $SNS; ip netns del $CNS; rm -rf $DATA"
		return
	fi
	if [ -n "$SRV_PID" ] && kill -0 "$SRV_PID" 2>/dev/null; then
		kill -TERM "$SRV_PID" 2>/dev/null
		for _ in $(seq 50); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$SRV_PID" 2>/dev/null
	fi
	ip netns del "$SNS" 2>/dev/null     # deletes the veth pair with it
	ip netns del "$CNS" 2>/dev/null
	rm -rf "$DATA"
}
trap cleanup EXIT
trap 'exit 1' INT TERM

ip netns add "$SNS" 2>/dev/null || skip "cannot create network namespaces"
ip netns add "$CNS" || skip "cannot create network namespaces"
ip link add "$VS" type veth peer name "$VC" 2>/dev/null || skip "no veth support in this kernel"
ip link set "$VS" netns "$SNS" && ip link set "$VC" netns "$CNS" || { echo "FAIL: moving veth ends"; exit 1; }
ip -n "$SNS" link set lo up
ip -n "$SNS" link set "$VS" up
ip netns exec "$SNS" sysctl -qw "net.ipv6.conf.$VS.disable_ipv6=1" 2>/dev/null
# af_packet must see wire-sized frames: no GRO/LRO coalescing on the server end.
ip netns exec "$SNS" ethtool -K "$VS" gro off lro off >/dev/null 2>&1
ip -n "$CNS" link set lo up
ip -n "$CNS" addr add "$CLI_IP/24" dev "$VC"
ip -n "$CNS" link set "$VC" up
ip netns exec "$CNS" sysctl -qw "net.ipv6.conf.$VC.disable_ipv6=1" 2>/dev/null
ip netns exec "$CNS" ethtool -K "$VC" tx off >/dev/null || { echo "FAIL: ethtool -K $VC tx off"; exit 1; }

LANES=${FS_DPDK_LANES:-1}
LCORES="0,1"; [ "$(nproc)" -ge 2 ] || LCORES="0"
# One lcore per lane plus the main one when the box has the CPUs; else the
# extra lanes run unpinned (flashsaled says so).
if [ "$LANES" -gt 1 ] && [ "$(nproc)" -gt "$LANES" ]; then LCORES="0-$LANES"; fi
VDEV="net_af_packet0,iface=$VS"
# framecnt: a deeper af_packet ring, so fanout's rollover (a full ring
# sends a flow's packet to another lane, which resets it) stays unlikely.
[ "$LANES" -gt 1 ] && VDEV="$VDEV,qpairs=$LANES,framecnt=4096"
if [ -n "${FS_DPDK_HUGE:-}" ]; then   # real hugepages (hugepages/reserve.sh first)
	EAL="-l $LCORES -m 256 --file-prefix fsdp$ID --no-telemetry --no-pci --vdev=$VDEV"
else
	EAL="-l $LCORES --no-huge -m 512 --no-shconf --no-telemetry --no-pci --vdev=$VDEV"
fi
PER_IP=500   # above the 400 connections of dpdk_checks' many-connection check
ip netns exec "$SNS" "$BIN" --dpdk "$EAL" --ip "$SRV_IP/24" --listen "0.0.0.0:$PORT" --data-dir "$DATA" \
	--connections 2048 --connections-per-ip "$PER_IP" --workers "$LANES" >"$DATA/server.log" 2>&1 &
SRV_PID=$!

fail() { echo "FAIL: $*"; echo "--- server log"; tail -30 "$DATA/server.log"; exit 1; }
ready=
for _ in $(seq 200); do
	kill -0 "$SRV_PID" 2>/dev/null || fail "server exited"
	if ip netns exec "$CNS" python3 - "$SRV_IP" "$PORT" <<'EOF' 2>/dev/null
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=0.5)
s.sendall(b"GET /readyz HTTP/1.1\r\nHost: x\r\n\r\n")   # /healthz is 200 while it recovers
sys.exit(0 if s.recv(100).startswith(b"HTTP/1.1 200") else 1)
EOF
	then ready=1; break; fi
	sleep 0.1
done
[ -n "$ready" ] || fail "server not ready on $SRV_IP:$PORT after 20 s"
echo "ok: server up ($(grep -m1 'dpdk:' "$DATA/server.log" | sed 's/^flashsaled: //'))"

if command -v curl >/dev/null; then
	out=$(ip netns exec "$CNS" curl -s -m 5 -w ' %{http_code}' "http://$SRV_IP:$PORT/v1/skus/demo")
	case "$out" in *'"sku":"demo"'*' 200') echo "ok: curl GET /v1/skus/demo -> 200 JSON";;
	*) fail "curl GET /v1/skus/demo: $out";; esac
fi

ip netns exec "$CNS" env FS_BUILD="$BUILD" python3 "$HERE/dpdk_checks.py" \
	--base "http://$SRV_IP:$PORT" --data-dir "$DATA" --metrics "$DATA/dpdk.metrics" --per-ip "$PER_IP" \
	|| fail "dpdk_checks.py"

if grep -q FS_BASE_URL "$ROOT/tests/e2e/fsclient.py" 2>/dev/null; then
	for t in "$ROOT"/tests/e2e/test_api.py; do
		[ -f "$t" ] || continue
		echo "--- $(basename "$t") over DPDK (FS_BASE_URL=http://$SRV_IP:$PORT)"
		ip netns exec "$CNS" env FS_BUILD="$BUILD" FS_BASE_URL="http://$SRV_IP:$PORT" FS_DATA_DIR="$DATA" \
			timeout 240 python3 "$t" || fail "$(basename "$t") over DPDK"
	done
else
	echo "note: tests/e2e/fsclient.py has no FS_BASE_URL hook yet: shared API suite not run over DPDK"
fi

if [ "$LANES" -gt 1 ]; then
	echo "--- lane checks ($LANES lanes)"
	ip netns exec "$CNS" env FS_BUILD="$BUILD" python3 "$HERE/lane_checks.py" --base "http://$SRV_IP:$PORT" \
		--data-dir "$DATA" --server-pid "$SRV_PID" --lanes "$LANES" || fail "lane_checks.py"
	grep -q "lane $((LANES - 1)) restarted" "$DATA/server.log" || fail "no restart line in the server log"
fi

kill -TERM "$SRV_PID"
for _ in $(seq 100); do kill -0 "$SRV_PID" 2>/dev/null || break; sleep 0.1; done
kill -0 "$SRV_PID" 2>/dev/null && fail "server ignored SIGTERM for 10 s"
wait "$SRV_PID"; rc=$?
[ "$rc" = 0 ] || fail "server exit status $rc"
echo "ok: clean stop"
if [ -n "${FS_DPDK_HUGE:-}" ]; then
	left=$(awk '$3 == "hugetlbfs" { print $2 }' /proc/mounts | while read -r d; do find "$d" -name "fsdp$ID*"; done)
	[ -z "$left" ] || fail "hugepage files left behind: $left"
	echo "ok: no hugepage files left behind"
fi
echo "PASS"
exit 0
