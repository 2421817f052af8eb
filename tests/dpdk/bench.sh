#!/bin/bash
# bench.sh - DPDK backend vs io_uring backend vs nginx on the veth bed of
# veth_test.sh (two namespaces, one veth pair), side by side in one run.
#
#   GET /v1/skus/demo (flashsale: DPDK+lwIP, then io_uring on the kernel's
#   TCP) and nginx serving a static file with the same body, wrk -t1 -cC on
#   CPU 0, the server's dataplane on CPU 1. Reported per server: req/s and
#   server CPU-us per request (utime+stime of every thread of the server
#   process from /proc/PID/task/*/stat over the run / requests answered).
#
# Caveat of the bed: a veth has no wire. The client's kernel TCP work for
# the server's answers runs in softirq context on the sending CPU, i.e. it is
# billed to the SERVER for both flashsale backends and nginx alike (DPDK:
# the af_packet sendto; kernel servers: their send). Figures are comparable
# with each other, not with a real NIC.
#
# FS_BENCH_PERF=DIR: perf-records (cpu-clock) the DPDK servers during their
# runs and writes each profile's top symbols to DIR/<name>.txt, with the
# share of lwIP's per-packet heap work (malloc/free family, pbuf_*, memp_*,
# mem_*) on the first line: Debian's lwIP mallocs every pbuf and segment.
#
# usage: bench.sh DPDK_SERVER FLASHSALED [SECONDS] [CONNECTIONS]
set -u
HARNESS=${1:?usage: bench.sh DPDK_SERVER FLASHSALED [SECONDS] [CONNECTIONS]}
FLASHSALED=${2:?}
SECS=${3:-5}; CONNS=${4:-50}
[ "$(id -u)" = 0 ] || { echo "skipped: needs root"; exit 77; }
command -v wrk >/dev/null || { echo "skipped: wrk is not installed"; exit 77; }
ID=$$; SNS=fsdb-s-$ID; CNS=fsdb-c-$ID; VS=fsbs$ID; VC=fsbc$ID
DATA=$(mktemp -d /tmp/fsdp-bench-XXXXXX)
PID=
cleanup() {
	[ -n "$PID" ] && kill "$PID" 2>/dev/null && sleep 0.5 && kill -9 "$PID" 2>/dev/null
	ip netns del "$SNS" 2>/dev/null; ip netns del "$CNS" 2>/dev/null; rm -rf "$DATA"
}
trap cleanup EXIT
ip netns add "$SNS" && ip netns add "$CNS" && ip link add "$VS" type veth peer name "$VC" || exit 77
ip link set "$VS" netns "$SNS"; ip link set "$VC" netns "$CNS"
ip -n "$SNS" link set lo up; ip -n "$SNS" link set "$VS" up
ip netns exec "$SNS" sysctl -qw "net.ipv6.conf.$VS.disable_ipv6=1"
ip netns exec "$SNS" ethtool -K "$VS" gro off lro off >/dev/null 2>&1
ip -n "$CNS" link set lo up; ip -n "$CNS" addr add 10.99.0.1/24 dev "$VC"; ip -n "$CNS" link set "$VC" up
ip netns exec "$CNS" sysctl -qw "net.ipv6.conf.$VC.disable_ipv6=1"
ip netns exec "$CNS" ethtool -K "$VC" tx off >/dev/null

# utime+stime of every thread of $1 and of its child processes (nginx workers)
# prints "user system" ticks
cpu_ticks() {
	local p pids="$1 $(pgrep -P "$1" | tr '\n' ' ')"
	for p in $pids; do cat /proc/"$p"/task/*/stat 2>/dev/null; done | awk '{ u += $14; s += $15 } END { print u + 0, s + 0 }'
}
wait_http() {
	for _ in $(seq 100); do
		ip netns exec "$CNS" curl -s -m 1 -o /dev/null "$1" && return 0; sleep 0.1
	done
	echo "server at $1 did not come up"; return 1
}
HZ=$(getconf CLK_TCK)
# run NAME URL: wrk on CPU 0 from the client namespace, CPU of $PID.
run() {
	local name=$1 url=$2
	wait_http "$url" || return
	ip netns exec "$CNS" taskset -c 0 wrk -t1 -c"$CONNS" -d1s "$url" >/dev/null   # warm-up
	local u0 s0 u1 s1; read -r u0 s0 < <(cpu_ticks "$PID")
	local perf_pid= tag; tag=$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_')
	if [ -n "${FS_BENCH_PERF:-}" ] && [ "${name#*DPDK}" != "$name" ] && command -v perf >/dev/null; then
		mkdir -p "$FS_BENCH_PERF"
		perf record -q -e cpu-clock -F 999 -o "$DATA/$tag.perf" -p "$(echo "$PID" $(pgrep -P "$PID") | tr ' ' ',')" \
			-- sleep "$SECS" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	local out; out=$(ip netns exec "$CNS" taskset -c 0 wrk -t1 -c"$CONNS" -d"${SECS}s" "$url")
	read -r u1 s1 < <(cpu_ticks "$PID")
	if [ -n "$perf_pid" ]; then
		wait "$perf_pid"
		perf report -q -i "$DATA/$tag.perf" --no-children --sort dso,symbol --stdio 2>/dev/null | grep -v '^$' > "$DATA/$tag.top"
		{ awk '/malloc|free|cfree|pbuf_|memp_|mem_malloc|mem_free|tcp_seg_free|tcp_create_segment/ { gsub("%", "", $1); s += $1 }
		       END { printf "lwIP heap work (malloc/free family, pbuf_*, memp_*): %.1f%% of the sampled CPU\n", s }' "$DATA/$tag.top"
		  head -40 "$DATA/$tag.top"; } > "$FS_BENCH_PERF/$tag.txt"
		echo "   profile: $FS_BENCH_PERF/$tag.txt ($(head -1 "$FS_BENCH_PERF/$tag.txt"))"
	fi
	local reqs; reqs=$(echo "$out" | awk '/requests in/ { print $1 }')
	local rps; rps=$(echo "$out" | awk '/Requests\/sec/ { print $2 }')
	local p99; p99=$(echo "$out" | awk '/Latency/ { print $2 }')
	local non2xx; non2xx=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
	awk -v n="$name" -v r="$rps" -v q="$reqs" -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v hz="$HZ" -v lat="$p99" -v bad="${non2xx:-0}" \
		'BEGIN { printf "%-30s %8.0f req/s %6.2f server CPU-us/req (user %5.2f + kernel %5.2f)  avg latency %s, non-2xx %s\n", n, r, (u + s) / hz * 1e6 / q, u / hz * 1e6 / q, s / hz * 1e6 / q, lat, bad }'
}

echo "veth bed, wrk -t1 -c$CONNS -d${SECS}s on CPU 0, server dataplane on CPU 1, $(nproc) CPUs"
# 1. DPDK + lwIP: one lane (lcore 1), then 2 lanes (two processes, two lwIP
#    stacks, af_packet qpairs=2; on a 2-core box the second lane has no
#    lcore of its own and shares the CPUs with wrk).
dpdk() {   # dpdk NAME LANES [flashsaled flags...]
	local name=$1 lanes=$2; shift 2
	local lc="0,1" vdev="net_af_packet0,iface=$VS"
	[ "$lanes" -gt 1 ] && vdev="$vdev,qpairs=$lanes,framecnt=4096"
	[ "$(nproc)" -gt "$lanes" ] && lc="0-$lanes"
	ip netns exec "$SNS" "$HARNESS" "$@" --dpdk "-l $lc --no-huge -m 512 --no-shconf --no-telemetry --no-pci --vdev=$vdev" \
		--ip 10.99.0.2/24 --listen 0.0.0.0:8080 --data-dir "$DATA/dpdk$lanes" --workers "$lanes" --unsafe-no-sync \
		>"$DATA/dpdk-$lanes.log" 2>&1 &
	PID=$!
	run "$name" http://10.99.0.2:8080/v1/skus/demo
	kill "$PID"; wait "$PID" 2>/dev/null; PID=
}
dpdk "flashsale DPDK 1 lane" 1
dpdk "flashsale DPDK 1 lane busy-poll" 1 --busy-poll
dpdk "flashsale DPDK 2 lanes" 2
# The kernel serves from here on: give the server end an address.
ip -n "$SNS" addr add 10.99.0.3/24 dev "$VS"
# 2. io_uring (worker pinned to CPU 1, writer to CPU 0)
ip netns exec "$SNS" "$FLASHSALED" --listen 10.99.0.3:8080 --data-dir "$DATA/uring" --workers 1 --unsafe-no-sync \
	>"$DATA/uring.log" 2>&1 &
PID=$!
run "flashsale io_uring 1 worker" http://10.99.0.3:8080/v1/skus/demo
body=$(ip netns exec "$CNS" curl -s http://10.99.0.3:8080/v1/skus/demo)
kill "$PID"; wait "$PID" 2>/dev/null; PID=
ip netns exec "$SNS" "$FLASHSALED" --listen 10.99.0.3:8080 --data-dir "$DATA/uring2" --workers 2 --unsafe-no-sync \
	>"$DATA/uring2.log" 2>&1 &
PID=$!
run "flashsale io_uring 2 workers" http://10.99.0.3:8080/v1/skus/demo
kill "$PID"; wait "$PID" 2>/dev/null; PID=
# 3. nginx, one worker on CPU 1, the same body as a static file
if command -v nginx >/dev/null; then
	mkdir -p "$DATA/www/v1/skus"; printf '%s' "$body" > "$DATA/www/v1/skus/demo"; chmod -R a+rX "$DATA"
	cat > "$DATA/nginx.conf" <<EOF
worker_processes 1; worker_cpu_affinity 10; daemon off; pid $DATA/nginx.pid; error_log $DATA/nginx.err;
events { worker_connections 4096; }
http { access_log off; default_type application/json; keepalive_requests 1000000;
  client_body_temp_path $DATA/ct; proxy_temp_path $DATA/pt; fastcgi_temp_path $DATA/ft; uwsgi_temp_path $DATA/ut; scgi_temp_path $DATA/st;
  server { listen 10.99.0.3:8081; root $DATA/www; location / { } } }
EOF
	ip netns exec "$SNS" nginx -c "$DATA/nginx.conf" >/dev/null 2>&1 &
	PID=$!
	run "nginx static (1 worker)" http://10.99.0.3:8081/v1/skus/demo
	kill "$PID"; wait "$PID" 2>/dev/null; PID=
fi
