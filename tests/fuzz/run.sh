#!/bin/sh
# run.sh - builds one libFuzzer target with ASan and UBSan (clang) and runs
# it for $1 seconds (default 20) from its seed corpus tests/fuzz/corpus/<target>/
# (copied: the run's new inputs are not written back). Exits 0 when no input
# crashed it; otherwise non-zero, with the crashing input copied to
# ${FUZZ_ARTIFACTS:-.}/. The last lines say how many inputs were executed.
#   tests/fuzz/run.sh [seconds] [target]     target: http (default), json, jwt, journal, pay_http, admin, lwip
# A crash found once becomes a regression case: copy it into the target's
# corpus directory; every later run executes it first.
set -eu

seconds=${1:-20}
target=${2:-http}
root=$(cd "$(dirname "$0")/../.." && pwd)
case "$target" in
http)     SRCS="dataplane/http.c dataplane/json.c dataplane/response.c dataplane/route.c common/fs_cmd.c common/fs_jwt.c common/fs_pub.c common/fs_shard.c"
          LIBS="-lhttp_parser -lcrypto -lxxhash"; MAXLEN=2048 ;;
json)     SRCS="dataplane/json.c"; LIBS=""; MAXLEN=512 ;;
jwt)      SRCS="common/fs_jwt.c"; LIBS="-lcrypto"; MAXLEN=900 ;;
journal)  SRCS=$(cd "$root" && echo writer/*.c common/*.c)
          LIBS="-luring -lcrypto -lxxhash -lpthread -lrdkafka"; MAXLEN=8192 ;;
pay_http) SRCS="common/fs_cmd.c"; LIBS=""; MAXLEN=4200 ;;
admin)    SRCS="$(cd "$root" && echo dataplane/http.c dataplane/response.c dataplane/io_uring.c dataplane/conn.c \
          dataplane/route.c dataplane/json.c dataplane/iplimit.c control/backup.c control/writers.c common/*.c writer/*.c writer/pay/*.c \
          writer/sink/sink_ckpt.c writer/sink/sink_model.c)"   # backup copies the sinks' model checkpoints
          LIBS="-lhttp_parser -luring -lcrypto -lxxhash -lpthread -lrdkafka"; MAXLEN=2048
          # one writer lives for the whole run (threads, journal): LeakSanitizer
          # takes its buffers for a leak of whichever input it checks; leaks of
          # the admin thread are caught by the ASan e2e run instead
          EXTRA="-detect_leaks=0"; export ASAN_OPTIONS=detect_leaks=0 ;;
lwip)     SRCS="$(cd "$root" && echo dataplane/lwip_glue.c dataplane/conn.c dataplane/http.c dataplane/response.c \
          dataplane/route.c dataplane/json.c dataplane/iplimit.c common/*.c writer/*.c)"
          LIBS="-I/usr/include/lwip -llwip -lhttp_parser -luring -lcrypto -lxxhash -lpthread -lrdkafka"; MAXLEN=4096
          # one writer and one lwIP stack live for the whole run (as for admin)
          EXTRA="-detect_leaks=0"; export ASAN_OPTIONS=detect_leaks=0 ;;
*) echo "run.sh: unknown target $target" >&2; exit 2 ;;
esac
artifacts=${FUZZ_ARTIFACTS:-.}
EXTRA=${EXTRA:-}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/${target}_fuzz.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

srcs=""
for s in $SRCS; do
	srcs="$srcs $root/$s"
done
# shellcheck disable=SC2086
clang -std=c11 -g -O1 -D_GNU_SOURCE -I"$root" \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	"$root/tests/fuzz/${target}_fuzz.c" $srcs $LIBS -o "$tmp/fuzz"

corpus="$tmp/corpus"
mkdir -p "$corpus"
cp "$root/tests/fuzz/corpus/$target/"* "$corpus/" 2>/dev/null || true

echo "$target-fuzz: running ${seconds}s from $(ls "$corpus" | wc -l) seeds"
status=0
# the journal target writes segments: keep them in memory when we can
scratch=$tmp
[ -w /dev/shm ] && scratch=$(mktemp -d /dev/shm/fuzz.XXXXXX) && trap 'rm -rf "$tmp" "$scratch"' EXIT INT TERM
# shellcheck disable=SC2086
(cd "$tmp" && TMPDIR=$scratch ./fuzz -max_total_time="$seconds" -max_len="$MAXLEN" -timeout=10 $EXTRA \
	-rss_limit_mb=1024 -print_final_stats=1 -artifact_prefix="$tmp/" corpus) \
	> "$tmp/log" 2>&1 || status=$?
tail -n 25 "$tmp/log"; [ "$status" -eq 0 ] || grep -m3 -E "ERROR|==[0-9]+==|Assertion|abort" "$tmp/log" || true
execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$tmp/log" | tail -n 1)
echo "$target-fuzz: ${execs:-?} inputs executed in ${seconds}s"
if [ "$status" -ne 0 ]; then
	for f in "$tmp"/crash-* "$tmp"/leak-* "$tmp"/timeout-* "$tmp"/oom-*; do
		[ -e "$f" ] && cp "$f" "$artifacts/" && echo "$target-fuzz: input saved as $artifacts/$(basename "$f")"
	done
	echo "$target-fuzz: FAILED (exit $status)"
	exit 1
fi
echo "$target-fuzz: OK"
