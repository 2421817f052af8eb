/* fsync_bench.c - the disk's own durability cost, the anchor for reservation
 * ack latency: N times pwrite 4 KiB at the end of a file + fdatasync, then
 * p50/p99/p99.9/max and the stalls: calls over 4 ms, per second of the run
 * (a stall holds up every answer of a group commit, so a server's p99 can
 * show them where the disk's own p99 does not). Used by perf/compare.
 *
 *   fsync_bench [--dir DIR] [--count N] [--json FILE]
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FB_COUNT_MAX  100000
#define FB_BLOCK      4096
#define FB_STALL_NS   4000000u   /* a call this slow is a stall */

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static double pct_us(const uint64_t *sorted, long n, double p)
{
	long i = (long)((p / 100.0) * (double)n + 0.999999) - 1;
	if (i < 0)
		i = 0;
	if (i >= n)
		i = n - 1;
	return (double)sorted[i] / 1000.0;
}

int main(int argc, char **argv)
{
	const char *dir = ".", *json = NULL;
	long count = 1000;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
		else if (strcmp(argv[i], "--count") == 0) count = strtol(argv[i + 1], NULL, 10);
		else if (strcmp(argv[i], "--json") == 0) json = argv[i + 1];
		else { fprintf(stderr, "fsync_bench: unknown flag %s\n", argv[i]); return 2; }
	}
	if (argc % 2 == 0 || count < 1 || count > FB_COUNT_MAX) {
		fprintf(stderr, "usage: fsync_bench [--dir DIR] [--count 1..100000] [--json FILE]\n");
		return 2;
	}
	char path[4096];
	snprintf(path, sizeof(path), "%s/fsync_bench.%d.tmp", dir, (int)getpid());
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY | O_CLOEXEC, 0600);
	if (fd < 0) {
		fprintf(stderr, "fsync_bench: %s: %s\n", path, strerror(errno));
		return 1;
	}
	static char block[FB_BLOCK];
	memset(block, 'j', sizeof(block));
	uint64_t *lat = calloc((size_t)count, sizeof(*lat));
	assert(lat != NULL);
	uint64_t start_ns = now_ns(), stalls = 0;
	for (long i = 0; i < count; i++) {
		uint64_t t0 = now_ns();
		if (pwrite(fd, block, FB_BLOCK, (off_t)i * FB_BLOCK) != FB_BLOCK || fdatasync(fd) != 0) {
			fprintf(stderr, "fsync_bench: write/fdatasync: %s\n", strerror(errno));
			return 1;
		}
		lat[i] = now_ns() - t0;
		stalls += lat[i] > FB_STALL_NS;
	}
	double run_s = (double)(now_ns() - start_ns) / 1e9;
	close(fd);
	unlink(path);
	qsort(lat, (size_t)count, sizeof(*lat), cmp_u64);
	double p50 = pct_us(lat, count, 50), p99 = pct_us(lat, count, 99), p999 = pct_us(lat, count, 99.9);
	double max = (double)lat[count - 1] / 1000.0;
	double stalls_per_s = run_s > 0 ? (double)stalls / run_s : 0;
	printf("fdatasync 4 KiB append x%ld: p50 %.1f µs p99 %.1f µs p99.9 %.1f µs max %.1f µs, "
	       "%" PRIu64 " over 4 ms (%.1f/s)\n", count, p50, p99, p999, max, stalls, stalls_per_s);
	if (json != NULL) {
		FILE *f = fopen(json, "w");
		if (f == NULL)
			return 1;
		fprintf(f, "{\"tool\":\"fsync_bench\",\"count\":%ld,\"latency_us\":{\"p50\":%.1f,"
		        "\"p99\":%.1f,\"p99.9\":%.1f,\"max\":%.1f},\"stalls_over_4ms\":%" PRIu64
		        ",\"stalls_per_s\":%.2f}\n", count, p50, p99, p999, max, stalls, stalls_per_s);
		fclose(f);
	}
	free(lat);
	return 0;
}
