/* journal_bench.c - how close jr_append comes to the disk's own fdatasync.
 *
 * Measures, interleaved in rounds so that both see the same disk weather:
 *   (a) the disk: 4 KiB pwrite at the end of a plain file + fdatasync;
 *   (a') the same into a file preallocated with fallocate (what the journal
 *        writes into: unwritten extents that each fdatasync converts);
 *   (b) jr_append of 4 KiB batches (64-byte header + 4032-byte body), timed
 *        around the call, and the journal's own write+sync time
 *        (jr_last_sync_ns).
 * Prints p50/p99/max of each and the ratios (b)/(a). Usage:
 *   journal_bench [DIR (default /var/tmp)] [ITERATIONS (default 2000)]
 * It creates and removes a scratch directory under DIR.
 */
#include "writer/journal.h"

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define BENCH_BATCH_BYTES    4096u
#define BENCH_ROUND_COUNT    20u
#define BENCH_ITERATIONS_MAX 1000000u
#define BENCH_PATH_BYTES     512u

struct series {
	const char *name;
	uint64_t *ns;
	uint64_t count;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Percentile p (0..100] of a sorted series, nearest rank. */
static uint64_t pct(const struct series *s, double p)
{
	assert(s->count > 0);
	uint64_t rank = (uint64_t)(p / 100.0 * (double)s->count + 0.999999);
	rank = rank == 0 ? 1 : rank > s->count ? s->count : rank;
	return s->ns[rank - 1];
}

static void series_print(struct series *s)
{
	qsort(s->ns, s->count, sizeof *s->ns, cmp_u64);
	printf("%-36s n=%-6" PRIu64 " p50 %8.1f us   p99 %8.1f us   max %8.1f us\n", s->name, s->count,
	       (double)pct(s, 50) / 1e3, (double)pct(s, 99) / 1e3, (double)s->ns[s->count - 1] / 1e3);
}

/* One 4 KiB pwrite + fdatasync at *off; returns its latency in ns. */
static uint64_t disk_once(int fd, const uint8_t *buf, uint64_t *off)
{
	uint64_t t0 = now_ns();
	ssize_t n = pwrite(fd, buf, BENCH_BATCH_BYTES, (off_t)*off);
	if (n != (ssize_t)BENCH_BATCH_BYTES || fdatasync(fd) != 0) {
		perror("journal_bench: pwrite/fdatasync");
		exit(1);
	}
	*off += BENCH_BATCH_BYTES;
	return now_ns() - t0;
}

/* out = a/b; returns 0, or -1 when it does not fit. */
static int path_join(char *out, size_t out_len, const char *a, const char *b)
{
	int n = snprintf(out, out_len, "%s/%s", a, b);
	return n > 0 && (size_t)n < out_len ? 0 : -1;
}

static int open_file(const char *dir, const char *name, uint64_t prealloc_bytes)
{
	char path[BENCH_PATH_BYTES];
	if (path_join(path, sizeof path, dir, name) != 0) {
		fprintf(stderr, "journal_bench: path too long\n");
		exit(2);
	}
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || (prealloc_bytes > 0 && fallocate(fd, 0, 0, (off_t)prealloc_bytes) != 0) || fsync(fd) != 0) {
		perror(path);
		exit(1);
	}
	return fd;
}

/* Removes the scratch directory: its files, journal/ and its files. */
static void remove_tree(const char *dir)
{
	char path[BENCH_PATH_BYTES * 2];
	const char *subs[] = { "journal", "." };
	for (int i = 0; i < 2; i++) {
		char sub[BENCH_PATH_BYTES];
		if (path_join(sub, sizeof sub, dir, subs[i]) != 0)
			continue;
		DIR *d = opendir(sub);
		if (d == NULL)
			continue;
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			if (e->d_name[0] != '.' && path_join(path, sizeof path, sub, e->d_name) == 0)
				unlink(path);
		closedir(d);
		rmdir(sub);
	}
	rmdir(dir);
}

int main(int argc, char **argv)
{
	const char *base = argc > 1 ? argv[1] : "/var/tmp";
	uint64_t iterations = argc > 2 ? strtoull(argv[2], NULL, 10) : 2000;
	if (iterations < BENCH_ROUND_COUNT || iterations > BENCH_ITERATIONS_MAX) {
		fprintf(stderr, "journal_bench: ITERATIONS must be in [%u, %u]\n", BENCH_ROUND_COUNT, BENCH_ITERATIONS_MAX);
		return 2;
	}
	char dir[BENCH_PATH_BYTES], jdir[BENCH_PATH_BYTES + 16];
	snprintf(dir, sizeof dir, "%s/flashsale-journal-bench.XXXXXX", base);
	if (mkdtemp(dir) == NULL) {
		perror(dir);
		return 1;
	}
	if (path_join(jdir, sizeof jdir, dir, "journal") != 0)
		return 2;
	uint64_t per_round = iterations / BENCH_ROUND_COUNT;
	iterations = per_round * BENCH_ROUND_COUNT;
	uint64_t file_bytes = iterations * BENCH_BATCH_BYTES;

	static uint8_t buf[BENCH_BATCH_BYTES];
	for (uint32_t i = 0; i < sizeof buf; i++)
		buf[i] = (uint8_t)(i * 131u + 7u);
	int fd_append = open_file(dir, "append.dat", 0);
	int fd_prealloc = open_file(dir, "prealloc.dat", file_bytes);
	char err[1024];
	struct jr_config cfg = { .dir = jdir, .segment_bytes = file_bytes + (1u << 20) };
	struct journal *j = jr_open(&cfg, NULL, NULL, err, sizeof err);
	if (j == NULL) {
		fprintf(stderr, "journal_bench: %s\n", err);
		return 1;
	}
	struct series s[4] = {
		{ "(a)  disk: append 4K + fdatasync", NULL, 0 },
		{ "(a') disk: prealloc 4K + fdatasync", NULL, 0 },
		{ "(b)  jr_append 4K (call)", NULL, 0 },
		{ "(b') jr_append 4K (jr_last_sync_ns)", NULL, 0 },
	};
	for (int i = 0; i < 4; i++) {
		s[i].ns = calloc(iterations, sizeof *s[i].ns);
		assert(s[i].ns != NULL);
	}
	uint64_t off_append = 0, off_prealloc = 0;
	for (uint64_t round = 0; round < BENCH_ROUND_COUNT; round++) {
		for (uint64_t i = 0; i < per_round; i++)
			s[0].ns[s[0].count++] = disk_once(fd_append, buf, &off_append);
		for (uint64_t i = 0; i < per_round; i++)
			s[1].ns[s[1].count++] = disk_once(fd_prealloc, buf, &off_prealloc);
		for (uint64_t i = 0; i < per_round; i++) {
			uint64_t t0 = now_ns();
			if (jr_append(j, (int64_t)i, 1, buf, BENCH_BATCH_BYTES - JR_HEADER_BYTES) == 0) {
				perror("journal_bench: jr_append");
				return 1;
			}
			s[2].ns[s[2].count++] = now_ns() - t0;
			s[3].ns[s[3].count++] = jr_last_sync_ns(j);
		}
	}
	jr_close(j);
	close(fd_append);
	close(fd_prealloc);
	printf("journal_bench: %" PRIu64 " iterations each, %u interleaved rounds, in %s\n", iterations,
	       BENCH_ROUND_COUNT, base);
	for (int i = 0; i < 4; i++)
		series_print(&s[i]);
	printf("ratio jr_append/disk-append:   p50 %.2f  p99 %.2f\n", (double)pct(&s[2], 50) / (double)pct(&s[0], 50),
	       (double)pct(&s[2], 99) / (double)pct(&s[0], 99));
	printf("ratio jr_append/disk-prealloc: p50 %.2f  p99 %.2f\n", (double)pct(&s[2], 50) / (double)pct(&s[1], 50),
	       (double)pct(&s[2], 99) / (double)pct(&s[1], 99));
	for (int i = 0; i < 4; i++)
		free(s[i].ns);
	remove_tree(dir);
	return 0;
}
