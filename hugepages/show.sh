#!/bin/sh
# show.sh - hugepages per NUMA node and size, hugetlbfs mounts, and the page
# files in them (a DPDK process that died leaves rtemap_* files behind; they
# keep their pages allocated until deleted: hugepages/release.sh).
for n in /sys/devices/system/node/node[0-9]*; do
	[ -d "$n/hugepages" ] || continue
	for s in "$n"/hugepages/hugepages-*; do
		[ -d "$s" ] || continue
		printf '%s %-22s total %6s  free %6s  surplus %6s\n' "$(basename "$n")" "$(basename "$s")" \
			"$(cat "$s/nr_hugepages")" "$(cat "$s/free_hugepages")" "$(cat "$s/surplus_hugepages")"
	done
done
grep -E '^(HugePages_|Hugepagesize)' /proc/meminfo
echo "hugetlbfs mounts:"
awk '$3 == "hugetlbfs" { print "  " $2 " (" $4 ")"; found = 1 } END { if (!found) print "  none (hugepages/reserve.sh mounts one)" }' /proc/mounts
awk '$3 == "hugetlbfs" { print $2 }' /proc/mounts | while read -r d; do
	n=0; left=0
	for f in $(find "$d" -maxdepth 2 -type f 2>/dev/null); do
		n=$((n + 1))
		grep -qF " $f" /proc/[0-9]*/maps 2>/dev/null || left=$((left + 1))
	done
	[ "$n" = 0 ] || echo "  $d: $n page file(s), $left LEFTOVER (mapped by no process: hugepages/release.sh deletes them)"
done
