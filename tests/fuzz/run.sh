#!/bin/sh
# run.sh - builds the HTTP fuzz target with libFuzzer, ASan and UBSan and
# runs it for $1 seconds (default 20) from a small seed corpus. Exits 0 when
# no input crashed it; otherwise non-zero, with the crashing input copied
# to ${FUZZ_ARTIFACTS:-.}/.
#   tests/fuzz/run.sh [seconds]
# More sources (e.g. dataplane/route.c) go in SRCS; extra link flags in LIBS.
set -eu

seconds=${1:-20}
root=$(cd "$(dirname "$0")/../.." && pwd)
SRCS="dataplane/http.c dataplane/json.c dataplane/response.c dataplane/route.c common/fs_cmd.c common/fs_jwt.c"
LIBS="-lhttp_parser -lcrypto -lxxhash"
artifacts=${FUZZ_ARTIFACTS:-.}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/http_fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

srcs=""
for s in $SRCS; do
	srcs="$srcs $root/$s"
done
# shellcheck disable=SC2086
clang -std=c11 -g -O1 -D_GNU_SOURCE -I"$root" \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	"$root/tests/fuzz/http_fuzz.c" $srcs $LIBS -o "$tmp/http_fuzz"

corpus="$tmp/corpus"
mkdir -p "$corpus"
printf 'GET /v1/skus/demo HTTP/1.1\r\nHost: localhost\r\n\r\n' > "$corpus/get"
printf 'POST /v1/skus/demo/reservations HTTP/1.1\r\nAuthorization: Bearer a.b.c\r\nIdempotency-Key: k1\r\nContent-Type: application/json\r\nContent-Length: 14\r\n\r\n{"quantity":1}' > "$corpus/reserve"
printf 'POST /v1/reservations/r0000000000000001/checkout HTTP/1.1\r\nIdempotency-Key: k2\r\nContent-Length: 29\r\n\r\n{"payment_token":"tok_ok_1"}\n' > "$corpus/checkout"
printf 'DELETE /v1/reservations/r0000000000000001 HTTP/1.0\r\nConnection: keep-alive\r\nX-Device-Id: d\r\nX-Forwarded-For: 10.0.0.1\r\n\r\nGET /healthz HTTP/1.1\r\nConnection: close\r\n\r\n' > "$corpus/pipelined"
printf 'POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n' > "$corpus/chunked"

echo "http-fuzz: running ${seconds}s"
status=0
(cd "$tmp" && ./http_fuzz -max_total_time="$seconds" -max_len=2048 -timeout=10 \
	-rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$tmp/" corpus) \
	> "$tmp/log" 2>&1 || status=$?
tail -n 25 "$tmp/log"
if [ "$status" -ne 0 ]; then
	for f in "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-* "$tmp"/oom-*; do
		[ -e "$f" ] && cp "$f" "$artifacts/" && echo "http-fuzz: input saved as $artifacts/$(basename "$f")"
	done
	echo "http-fuzz: FAILED (exit $status)"
	exit 1
fi
echo "http-fuzz: OK"
