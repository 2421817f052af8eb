#!/bin/bash
# lanes_huge_test.sh - the DPDK backend on 2 lanes (two lane processes, two
# lwIP stacks, af_packet qpairs=2) on REAL hugepages, through the scripts an
# operator uses: hugepages/reserve.sh, then tests/dpdk/veth_test.sh with
# FS_DPDK_LANES=2 FS_DPDK_HUGE=1 (the whole API suite, dpdk_checks.py,
# lane_checks.py: spread, storm, kill -9 of a lane; no page file left
# behind), then hugepages/release.sh.
#
# Pages this test reserved are released at the end; a box that already had
# enough free hugepages keeps its pool as it was (nothing reserved, nothing
# released). The lane processes share DPDK memory with flashsaled by
# fork(): hugepages mapped MAP_SHARED, as in production.
#
# No hugepages to be had (a container, fragmented memory): the 2 lanes run
# on --no-huge memory instead, said loudly, so the lanes are tested anyway.
#
# usage: lanes_huge_test.sh FLASHSALED BUILD_DIR
# Exit: 0 pass, 1 fail, 77 skipped (not root, or veth_test.sh skipped).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
PAGES=160                          # -m 256 (128 x 2 MiB) plus headroom
skip() { echo "skipped: $*"; exit 77; }
if [ "$(id -u)" != 0 ]; then
	# root-only: elevate when sudo works without a password (setup.sh as a
	# non-root user), else skip loudly
	if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
		exec sudo -n "$0" "$@"
	fi
	skip "needs root (hugepages, network namespaces): run as root or with passwordless sudo"
fi
free_pages=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
mounted=$(awk '$3 == "hugetlbfs" { f = 1 } END { print f + 0 }' /proc/mounts)
reserved=
huge=1
nohuge() { echo "NOTE: $* -- running the 2 lanes on --no-huge memory instead (hugepages NOT tested)"; huge=; }
if [ "${free_pages:-0}" -ge 128 ] && [ "$mounted" = 1 ]; then
	echo "using the $free_pages free hugepages already reserved (left as they are afterwards)"
else
	if [ "${free_pages:-0}" != 0 ]; then
		nohuge "only $free_pages free hugepages, and they are not ours to resize"
	elif ! "$ROOT/hugepages/reserve.sh" "$PAGES"; then
		nohuge "hugepages/reserve.sh $PAGES failed (see above)"
	else
		reserved=1
		got=$(awk '/^HugePages_Free:/ { print $2 }' /proc/meminfo)
		[ "$got" -ge 128 ] || nohuge "the kernel granted $got pages, 128 needed"
	fi
fi
release() {
	[ -n "$reserved" ] || return 0
	if [ "$mounted" = 0 ]; then "$ROOT/hugepages/release.sh" --umount; else "$ROOT/hugepages/release.sh"; fi
}
FS_DPDK_LANES=2 FS_DPDK_HUGE=$huge "$HERE/veth_test.sh" "$@"
rc=$?
release
if [ -n "$reserved" ]; then
	left=$(awk '/^HugePages_Total:/ { print $2 }' /proc/meminfo)
	[ "$left" = 0 ] || { echo "FAIL: $left hugepages still reserved after release.sh"; exit 1; }
	echo "ok: hugepages released"
fi
exit $rc
