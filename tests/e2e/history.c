/* history.c - a long history in a data dir, fast: N decisions through the
 * real writer (writer.h: its batch loop, decide step, journal, snapshotter
 * and segment deletion, all in this process), fed through its rings the way
 * a dataplane worker feeds them, without HTTP. The end-to-end tests then
 * start the real flashsaled on the data dir (test_history.py).
 *
 *   history --data-dir D --decisions N [--snapshot-every-mb M] [--segment-mb S]
 *           [--retention-ms R] [--hold-ms H] [--users-max U] [--reservations-max R]
 *           [--idempotency-keys-max K] [--sku S] [--rate PER_S] [--sync]
 *
 * Workload: one sale S (created and opened when missing), reservations by
 * users u0..u99999 in turn (a fresh idempotency key each), and every other
 * decision cancels one of them; the rest expire after the hold. Without
 * --sync the journal is not fdatasync'd (its bytes are the same). --rate
 * paces the commands (in-process the writer decides faster than any HTTP
 * client can ask, and a snapshot competes with it for the CPU). At the end
 * it prints one line of JSON: decisions acknowledged, the last durable
 * batch, snapshots taken, the sale's counters. Exit 0, or 1 with a reason.
 */
#include "common/fs_port.h"
#include "common/fs_snapshot.h"
#include "writer/writer.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define USERS      100000u
#define INFLIGHT   1024u
#define PENDING    8192u    /* reservations waiting for their cancel */

struct opts {
	const char *data_dir, *sku;
	uint64_t decisions, snapshot_every_mb, segment_mb, retention_ms, hold_ms;
	uint32_t users_max, res_max, idem_max;
	uint64_t rate;               /* decisions/s at most (0 = as fast as it goes) */
	int sync;
};

static void usage(void)
{
	fprintf(stderr, "usage: history --data-dir D --decisions N [--snapshot-every-mb M] [--segment-mb S] "
	        "[--retention-ms R] [--hold-ms H] [--users-max U] [--reservations-max R] "
	        "[--idempotency-keys-max K] [--sku S] [--rate PER_S] [--sync]\n");
	exit(2);
}

static void parse(int argc, char **argv, struct opts *o)
{
	*o = (struct opts){ .sku = "hist", .snapshot_every_mb = 8, .segment_mb = 4, .retention_ms = 1000,
	                    .hold_ms = 1000, .users_max = 200000, .res_max = 1000000, .idem_max = 2000000 };
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (strcmp(a, "--sync") == 0) { o->sync = 1; continue; }
		if (v == NULL)
			usage();
		i++;
		if (strcmp(a, "--data-dir") == 0) o->data_dir = v;
		else if (strcmp(a, "--sku") == 0) o->sku = v;
		else if (strcmp(a, "--decisions") == 0) o->decisions = strtoull(v, NULL, 10);
		else if (strcmp(a, "--snapshot-every-mb") == 0) o->snapshot_every_mb = strtoull(v, NULL, 10);
		else if (strcmp(a, "--segment-mb") == 0) o->segment_mb = strtoull(v, NULL, 10);
		else if (strcmp(a, "--retention-ms") == 0) o->retention_ms = strtoull(v, NULL, 10);
		else if (strcmp(a, "--hold-ms") == 0) o->hold_ms = strtoull(v, NULL, 10);
		else if (strcmp(a, "--rate") == 0) o->rate = strtoull(v, NULL, 10);
		else if (strcmp(a, "--users-max") == 0) o->users_max = (uint32_t)strtoul(v, NULL, 10);
		else if (strcmp(a, "--reservations-max") == 0) o->res_max = (uint32_t)strtoul(v, NULL, 10);
		else if (strcmp(a, "--idempotency-keys-max") == 0) o->idem_max = (uint32_t)strtoul(v, NULL, 10);
		else usage();
	}
	if (o->data_dir == NULL || o->decisions == 0 || o->segment_mb == 0 || strlen(o->sku) >= FS_SKU_LEN_MAX)
		usage();
}

/* One admin command through port p, waiting for its answer. */
static struct fs_ans admin(struct fs_port *p, const struct fs_cmd *c)
{
	struct fs_cmd *slot;
	while ((slot = fs_ring_slot(&p->cmds)) == NULL)
		usleep(1000);
	*slot = *c;
	fs_ring_produce(&p->cmds, 1);
	fs_wake(p->writer);
	struct fs_ans a;
	while (fs_ring_dequeue_burst(&p->answers, &a, 1) == 0)
		usleep(500);
	return a;
}

static void sale_cmd(struct fs_cmd *c, uint8_t type, const char *sku)
{
	memset(c, 0, sizeof *c);
	c->type = type;
	c->sku_len = (uint8_t)strlen(sku);
	memcpy(c->sku, sku, c->sku_len);
}

struct feed {
	struct fs_port *port;
	const char *sku;
	uint64_t next_key;
	uint64_t pending[PENDING];    /* (user << 40 | res_no) waiting for a cancel */
	uint32_t pending_head, pending_len;
	uint64_t acks, refused;
};

static void fill(struct feed *f, struct fs_cmd *c)
{
	memset(c, 0, offsetof(struct fs_cmd, sku));
	c->claim_tier = 1;   /* tier 0: no rate limit */
	if (f->pending_len > 0 && (f->next_key & 1)) {
		uint64_t v = f->pending[f->pending_head];
		f->pending_head = (f->pending_head + 1) % PENDING;
		f->pending_len--;
		c->type = FS_CMD_CANCEL;
		c->ref = v & ((UINT64_C(1) << 40) - 1);
		c->user_len = (uint8_t)snprintf(c->user, sizeof c->user, "u%llu", (unsigned long long)(v >> 40));
		c->tag = 0;
		f->next_key++;
		return;
	}
	uint64_t user = f->next_key % USERS;
	c->type = FS_CMD_RESERVE;
	c->quantity = 1;
	c->sku_len = (uint8_t)strlen(f->sku);
	memcpy(c->sku, f->sku, c->sku_len);
	c->user_len = (uint8_t)snprintf(c->user, sizeof c->user, "u%llu", (unsigned long long)user);
	c->key_len = (uint8_t)snprintf(c->key, sizeof c->key, "k%llu-%ld", (unsigned long long)f->next_key,
	                               (long)time(NULL));
	c->tag = user + 1;
	f->next_key++;
}

static void take_answers(struct feed *f, uint32_t *inflight)
{
	struct fs_ans a[64];
	uint32_t got = fs_ring_dequeue_burst(&f->port->answers, a, 64);
	for (uint32_t i = 0; i < got; i++) {
		if (a[i].http == 200 || a[i].http == 201)
			f->acks++;
		else if (f->refused++ == 0)
			fprintf(stderr, "history: first refusal: HTTP %u (error %u)\n", a[i].http, a[i].err);
		if (a[i].http == 201 && a[i].tag != 0 && f->pending_len < PENDING) {
			f->pending[(f->pending_head + f->pending_len) % PENDING] = (a[i].tag - 1) << 40 | a[i].res_no;
			f->pending_len++;
		}
	}
	*inflight -= got;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int run(struct feed *f, uint64_t decisions, uint64_t rate)
{
	uint32_t inflight = 0;
	double t0 = now_s();
	while (f->acks < decisions || inflight > 0) {
		uint32_t pushed = 0;
		uint64_t allowed = rate ? (uint64_t)((now_s() - t0) * (double)rate) + 64 : UINT64_MAX;
		while (f->acks + inflight < decisions && inflight < INFLIGHT && f->acks + f->refused + inflight < allowed) {
			struct fs_cmd *c = fs_ring_slot(&f->port->cmds);
			if (c == NULL)
				break;
			fill(f, c);
			fs_ring_produce(&f->port->cmds, 1);
			inflight++;
			pushed++;
		}
		if (pushed)
			fs_wake(f->port->writer);
		take_answers(f, &inflight);
		if (f->refused > decisions / 10 + 1000) {
			fprintf(stderr, "history: %llu commands refused (tables full?)\n", (unsigned long long)f->refused);
			return -1;
		}
		if (!pushed)
			usleep(50);
	}
	return 0;
}

int main(int argc, char **argv)
{
	struct opts o;
	parse(argc, argv, &o);
	struct fs_snapshot *snap = mmap(NULL, sizeof *snap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct wr_config wc = { .data_dir = o.data_dir, .batch_count_max = 8192, .port_count = 2, .ring_slots = 4096,
	                        .segment_bytes = o.segment_mb << 20, .charge_slots = 64, .quiet = 1,
	                        .no_sync = !o.sync, .no_prefault = 1, .snapshot_every_bytes = o.snapshot_every_mb << 20,
	                        .retention_ms = o.retention_ms };
	wr_limits_default(&wc.limits);
	wc.limits.user_count_max = o.users_max;
	wc.limits.reservation_count_max = o.res_max;
	wc.limits.idem_count_max = o.idem_max;
	char err[1024];
	struct writer *w = snap == MAP_FAILED ? NULL : wr_open(&wc, snap, err, sizeof err);
	if (w == NULL) {
		fprintf(stderr, "history: %s\n", snap == MAP_FAILED ? "out of memory" : err);
		return 1;
	}
	wr_start(w, -1);
	struct fs_port *adm = wr_port(w, 1);
	struct fs_cmd c;
	sale_cmd(&c, FS_CMD_SALE_CREATE, o.sku);
	c.sale.total = UINT64_C(1) << 40;
	c.sale.hold_ms = (uint32_t)o.hold_ms;
	admin(adm, &c);   /* 409 exists when the data dir had it */
	sale_cmd(&c, FS_CMD_SALE_OPEN, o.sku);
	admin(adm, &c);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	static struct feed f;
	f = (struct feed){ .port = wr_port(w, 0), .sku = o.sku };
	int rc = run(&f, o.decisions, o.rate);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	sale_cmd(&c, FS_CMD_SALE_GET, o.sku);
	struct fs_ans s = admin(adm, &c);
	const struct wr_metrics *m = wr_metrics(w);
	uint64_t seq = atomic_load(wr_durable_seq(w));
	uint64_t snaps = atomic_load(&((struct wr_metrics *)m)->snapshots);
	uint64_t dropped = atomic_load(&((struct wr_metrics *)m)->segments_dropped);
	wr_close(w);   /* a snapshot being written is finished first */
	printf("{\"decisions\": %llu, \"refused\": %llu, \"seconds\": %.2f, \"seq\": %llu, \"snapshots\": %llu, "
	       "\"segments_dropped\": %llu, \"total\": %llu, \"available\": %llu, \"reserved\": %llu, \"sold\": %llu}\n",
	       (unsigned long long)f.acks, (unsigned long long)f.refused,
	       (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9, (unsigned long long)seq,
	       (unsigned long long)snaps, (unsigned long long)dropped, (unsigned long long)s.total,
	       (unsigned long long)s.available, (unsigned long long)s.reserved, (unsigned long long)s.sold);
	return rc == 0 ? 0 : 1;
}
