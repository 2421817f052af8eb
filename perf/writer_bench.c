/* writer_bench.c - the writer alone, durable: decisions/s and ack latency
 * with group commit, beside the disk's own fdatasync latency measured in
 * the same run on the same directory.
 *
 *   writer_bench [--dir D] [--seconds S] [--inflight N] [--producers P]
 *
 * P producer threads (like dataplane workers) each keep up to N RESERVE
 * commands in flight on their own port; the tag carries the send time, so
 * the ack latency is send -> answer (which leaves only after the batch's
 * fdatasync). Then 2000 x (4 KiB pwrite + fdatasync) on a plain file in the
 * same directory give the floor. Prints both and the ratios.
 */
#include "common/fs_port.h"
#include "common/fs_snapshot.h"
#include "writer/writer.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define LAT_MAX 4000000

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

struct producer {
	struct fs_port *port;
	uint32_t id;
	uint32_t inflight_max;
	int64_t end_ns;
	uint64_t acks, sent;
	uint32_t *lat_us;      /* LAT_MAX samples */
	uint64_t lat_count;
	pthread_t thread;
};

static void fill(struct fs_cmd *c, uint32_t producer, uint64_t n)
{
	memset(c, 0, offsetof(struct fs_cmd, sku));
	c->type = FS_CMD_RESERVE;
	c->quantity = 1;
	memcpy(c->sku, "bench", 5);
	c->sku_len = 5;
	c->user_len = (uint8_t)snprintf(c->user, sizeof c->user, "p%u-u%llu", producer, (unsigned long long)(n % 200000));
	c->key_len = (uint8_t)snprintf(c->key, sizeof c->key, "k%llu", (unsigned long long)n);
	c->claim_tier = 1;   /* tier 0: exempt from rate limits */
}

static void *produce(void *arg)
{
	struct producer *p = arg;
	struct fs_port *port = p->port;
	uint32_t inflight = 0;
	while (now_ns() < p->end_ns || inflight > 0) {
		int pushed = 0;
		while (now_ns() < p->end_ns && inflight < p->inflight_max) {
			struct fs_cmd *c = fs_ring_slot(&port->cmds);
			if (c == NULL)
				break;
			fill(c, p->id, p->sent++);
			c->tag = (uint64_t)now_ns();
			fs_ring_produce(&port->cmds, 1);
			inflight++;
			pushed = 1;
		}
		if (pushed)
			fs_wake(port->writer);
		struct fs_ans a[64];
		uint32_t got = fs_ring_dequeue_burst(&port->answers, a, 64);
		int64_t t = now_ns();
		for (uint32_t i = 0; i < got; i++) {
			if (p->lat_count < LAT_MAX)
				p->lat_us[p->lat_count++] = (uint32_t)((t - (int64_t)a[i].tag) / 1000);
			if (a[i].http == 201)
				p->acks++;
		}
		inflight -= got;
		if (got == 0 && !pushed) {
			/* idle protocol, as a dataplane worker does */
			atomic_store(&port->producer.sleeping, 1);
			if (fs_ring_count(&port->answers) == 0) {
				uint64_t v;
				struct timespec ts = { 0, 200000 };
				if (read(port->producer.fd, &v, sizeof v) < 0)
					nanosleep(&ts, NULL);
			}
			atomic_store(&port->producer.sleeping, 0);
		}
	}
	return NULL;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

static uint32_t pct(uint32_t *v, uint64_t n, double q)
{
	return n ? v[(uint64_t)(q * (double)(n - 1))] : 0;
}

/* The disk's own fdatasync: 4 KiB appends in the same directory. */
static void disk_fsync(const char *dir, uint32_t *lat, uint64_t n, uint32_t *p50, uint32_t *p99)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/fsync-probe", dir);
	int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
	static char buf[4096];
	memset(buf, 'x', sizeof buf);
	for (uint64_t i = 0; i < n; i++) {
		int64_t t0 = now_ns();
		if (write(fd, buf, sizeof buf) != (ssize_t)sizeof buf || fdatasync(fd) != 0) {
			perror("fsync probe");
			exit(1);
		}
		lat[i] = (uint32_t)((now_ns() - t0) / 1000);
	}
	close(fd);
	unlink(path);
	qsort(lat, n, sizeof *lat, cmp_u32);
	*p50 = pct(lat, n, 0.50);
	*p99 = pct(lat, n, 0.99);
}

int main(int argc, char **argv)
{
	const char *dir = NULL;
	double seconds = 5;
	uint32_t inflight = 256, producers = 1;
	for (int i = 1; i + 1 < argc; i += 2) {
		if (strcmp(argv[i], "--dir") == 0) dir = argv[i + 1];
		else if (strcmp(argv[i], "--seconds") == 0) seconds = atof(argv[i + 1]);
		else if (strcmp(argv[i], "--inflight") == 0) inflight = (uint32_t)atoi(argv[i + 1]);
		else if (strcmp(argv[i], "--producers") == 0) producers = (uint32_t)atoi(argv[i + 1]);
		else { fprintf(stderr, "usage: writer_bench [--dir D] [--seconds S] [--inflight N] [--producers P]\n"); return 2; }
	}
	char tmpl[] = "/var/tmp/writer_bench.XXXXXX";
	if (dir == NULL && (dir = mkdtemp(tmpl)) == NULL) {
		perror("mkdtemp");
		return 1;
	}
	if (producers < 1 || producers > 8 || inflight < 1 || inflight > 4096 || seconds <= 0 || seconds > 600) {
		fprintf(stderr, "writer_bench: producers 1..8, inflight 1..4096, seconds (0, 600]\n");
		return 2;
	}
	struct fs_snapshot *snap = mmap(NULL, sizeof *snap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct wr_config wc = { .data_dir = dir, .batch_count_max = WR_BATCH_COUNT_MAX, .port_count = producers + 1,
	                        .ring_slots = 4096, .segment_bytes = 64u << 20, .charge_slots = 64, .quiet = 1 };
	wr_limits_default(&wc.limits);
	char err[512];
	struct writer *w = wr_open(&wc, snap, err, sizeof err);
	if (w == NULL) {
		fprintf(stderr, "writer_bench: %s\n", err);
		return 1;
	}
	wr_start(w, -1);
	/* the sale, through the last port */
	struct fs_port *admin = wr_port(w, producers);
	struct fs_cmd c;
	memset(&c, 0, sizeof c);
	c.type = FS_CMD_SALE_CREATE;
	memcpy(c.sku, "bench", 5);
	c.sku_len = 5;
	c.sale.total = UINT64_C(1) << 40;
	c.sale.hold_ms = 120000;
	c.sale.default_tier = 0;
	for (int step = 0; step < 2; step++) {
		*(struct fs_cmd *)fs_ring_slot(&admin->cmds) = c;
		fs_ring_produce(&admin->cmds, 1);
		fs_wake(admin->writer);
		struct fs_ans a;
		while (fs_ring_dequeue_burst(&admin->answers, &a, 1) == 0)
			usleep(1000);
		c.type = FS_CMD_SALE_OPEN;
	}
	struct producer p[8];
	int64_t end = now_ns() + (int64_t)(seconds * 1e9);
	int64_t t0 = now_ns();
	for (uint32_t i = 0; i < producers; i++) {
		p[i] = (struct producer){ .port = wr_port(w, i), .id = i, .inflight_max = inflight, .end_ns = end };
		p[i].lat_us = malloc(sizeof(uint32_t) * LAT_MAX);
		pthread_create(&p[i].thread, NULL, produce, &p[i]);
	}
	uint64_t acks = 0, n = 0;
	uint32_t *all = malloc(sizeof(uint32_t) * LAT_MAX * producers);
	for (uint32_t i = 0; i < producers; i++) {
		pthread_join(p[i].thread, NULL);
		acks += p[i].acks;
		memcpy(all + n, p[i].lat_us, p[i].lat_count * sizeof(uint32_t));
		n += p[i].lat_count;
	}
	double elapsed = (double)(now_ns() - t0) / 1e9;
	const struct wr_metrics *m = wr_metrics(w);
	uint64_t batches = atomic_load(&((struct wr_metrics *)m)->batches);
	wr_close(w);
	qsort(all, n, sizeof *all, cmp_u32);
	uint32_t ack50 = pct(all, n, 0.5), ack99 = pct(all, n, 0.99);
	uint32_t *lat = malloc(sizeof(uint32_t) * 2000);
	uint32_t f50, f99;
	disk_fsync(dir, lat, 2000, &f50, &f99);
	printf("writer_bench: %u producer(s) x %u in flight, %.1f s, journal in %s\n", producers, inflight, elapsed, dir);
	printf("  durable decisions: %llu acked, %.0f/s, %llu batches (%.1f decisions/batch)\n",
	       (unsigned long long)acks, (double)acks / elapsed, (unsigned long long)batches,
	       batches ? (double)acks / (double)batches : 0.0);
	printf("  ack latency   p50 %u us  p99 %u us\n", ack50, ack99);
	printf("  disk 4 KiB append+fdatasync  p50 %u us  p99 %u us\n", f50, f99);
	printf("  ratio ack p99 / fdatasync p99 = %.2f (goal <= 2.0)\n", f99 ? (double)ack99 / f99 : 0.0);
	return 0;
}
