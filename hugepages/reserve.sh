#!/bin/sh
# reserve.sh N [NODE] - reserve N hugepages for DPDK and mount hugetlbfs.
#
#   N      pages to reserve (2 MiB pages by default: 512 = 1 GiB)
#   NODE   NUMA node number (put the pages where the NIC is); without it,
#          N pages are reserved on EVERY node listed in
#          /sys/devices/system/node/node*/ (a one-node box: node0).
# Environment: HUGEPAGE_KB=2048 (or 1048576 for 1 GiB pages, if the kernel
# offers them), HUGE_DIR=/dev/hugepages (the hugetlbfs mount point).
# Sets the pool size absolutely (not +N); the kernel may grant fewer pages
# when memory is fragmented: the script says so and exits 1 if it got none.
# Needs root. Undo with hugepages/release.sh.
set -eu
usage() { echo "usage: $0 N [NODE]   (HUGEPAGE_KB=$KB HUGE_DIR=$DIR)" >&2; exit 2; }
KB=${HUGEPAGE_KB:-2048}
DIR=${HUGE_DIR:-/dev/hugepages}
[ $# -ge 1 ] && [ $# -le 2 ] || usage
N=$1; NODE=${2:-}
case "$N" in ''|*[!0-9]*) usage;; esac
case "$NODE" in *[!0-9]*) usage;; esac
[ "$(id -u)" = 0 ] || { echo "$0: needs root (writes /sys and mounts hugetlbfs)" >&2; exit 1; }

if [ -n "$NODE" ]; then
	nodes=/sys/devices/system/node/node$NODE
	[ -d "$nodes" ] || { echo "$0: no NUMA node $NODE (have: $(ls -d /sys/devices/system/node/node[0-9]* | xargs -n1 basename | tr '\n' ' '))" >&2; exit 1; }
else
	nodes=$(ls -d /sys/devices/system/node/node[0-9]* 2>/dev/null || true)
fi
got_total=0
if [ -z "$nodes" ]; then   # kernel without NUMA sysfs: the global pool
	f=/sys/kernel/mm/hugepages/hugepages-${KB}kB/nr_hugepages
	[ -w "$f" ] || { echo "$0: this kernel has no ${KB} kB hugepages ($f)" >&2; exit 1; }
	echo "$N" > "$f"
	got_total=$(cat "$f")
	echo "reserved $got_total of $N x ${KB} kB pages"
else
	for n in $nodes; do
		f=$n/hugepages/hugepages-${KB}kB/nr_hugepages
		[ -w "$f" ] || { echo "$0: $(basename "$n") has no ${KB} kB hugepages ($f)" >&2; exit 1; }
		echo "$N" > "$f"
		got=$(cat "$f")
		got_total=$((got_total + got))
		echo "$(basename "$n"): $got of $N x ${KB} kB pages reserved"
		[ "$got" -ge "$N" ] || echo "  warning: the kernel granted fewer pages (fragmented memory?): try earlier after boot or fewer pages" >&2
	done
fi
[ "$got_total" -gt 0 ] || { echo "$0: no hugepage could be reserved" >&2; exit 1; }

if ! awk -v d="$DIR" '$2 == d && $3 == "hugetlbfs" { f = 1 } END { exit !f }' /proc/mounts; then
	mkdir -p "$DIR"
	if [ "$KB" = 2048 ]; then ps=2M; else ps=$((KB / 1024))M; fi
	mount -t hugetlbfs -o pagesize=$ps nodev "$DIR"
	echo "mounted hugetlbfs (pagesize $ps) at $DIR"
else
	echo "hugetlbfs already mounted at $DIR"
fi
echo "DPDK can now run without --no-huge (add --huge-dir $DIR if it is not the only hugetlbfs mount)"
