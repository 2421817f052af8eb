#!/bin/sh
# release.sh [--umount] - give hugepages back: delete leftover page files
# (mapped by no process) in every hugetlbfs mount, then set every node's
# pools to 0 pages (pages still mapped by a running process stay with it as
# surplus until it exits). --umount also unmounts HUGE_DIR (/dev/hugepages).
set -u
[ "$(id -u)" = 0 ] || { echo "$0: needs root" >&2; exit 1; }
DIR=${HUGE_DIR:-/dev/hugepages}
awk '$3 == "hugetlbfs" { print $2 }' /proc/mounts | while read -r d; do
	kept=0; deleted=0
	for f in $(find "$d" -maxdepth 2 -type f 2>/dev/null); do
		if grep -qF " $f" /proc/[0-9]*/maps 2>/dev/null; then
			kept=$((kept + 1))
		else
			rm -f "$f" && deleted=$((deleted + 1))
		fi
	done
	echo "$d: deleted $deleted leftover page file(s), kept $kept mapped by running processes"
done
for f in /sys/devices/system/node/node[0-9]*/hugepages/hugepages-*/nr_hugepages \
         /sys/kernel/mm/hugepages/hugepages-*/nr_hugepages; do
	[ -w "$f" ] && echo 0 > "$f"
done
if [ "${1:-}" = "--umount" ] && awk -v d="$DIR" '$2 == d && $3 == "hugetlbfs" { f = 1 } END { exit !f }' /proc/mounts; then
	umount "$DIR" && echo "unmounted $DIR"
fi
grep -E '^HugePages_(Total|Free|Surp)' /proc/meminfo
