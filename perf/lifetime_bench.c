/* lifetime_bench.c - what snapshots buy at start-up, and what they cost.
 *
 *   lifetime_bench [DECISIONS_MILLIONS...]   (default: 1 4)
 *
 * For each history length it journals that many reservations (distinct
 * keys, a quarter of them cancelled; batches of 4096, no fdatasync) in a
 * temp dir, then measures:
 *   - start-up by full replay (jr_open from batch 1 through the decide step),
 *   - a snapshot taken as the writer takes it (snapshotter.h: a thread
 *     replays its own copy of the state up to the batch and writes it;
 *     one halfway first, so the measured one, 64 batches before the end,
 *     replays one interval): its bytes and time, the writer's hand-over,
 *     and the longest batch the writer decided while it was taken,
 *   - start-up from the snapshot + a tail of 64 batches (load time, tail
 *     time).
 * Prints one table row per length. Not a test: numbers go to RESULTS.md.
 */
#include "writer/alloc.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/snapshot.h"
#include "writer/snapshotter.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define BATCH 4096u

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct wr_batch_out out;
static struct fs_cmd cmds[BATCH * 2];

static void out_init(uint32_t n)
{
	out.answer_count_max = 5 * n;
	out.answers = calloc(out.answer_count_max, sizeof *out.answers);
	out.records_cap = n * (WR_REC_BYTES_MAX + 4 * (WR_REC_FIXED_BYTES + FS_SKU_LEN_MAX + 8)) + WR_REC_BYTES_MAX * 1100;
	out.records = malloc(out.records_cap);
	out.charges = calloc(n, sizeof *out.charges);
	out.sku_touched = calloc(1024, sizeof(uint32_t));
}

static void limits(struct wr_limits *l, uint64_t decisions)
{
	wr_limits_default(l);
	l->reservation_count_max = (uint32_t)decisions + 1000;
	l->idem_count_max = (uint32_t)decisions + 1000;
}

struct replay { struct wr_state *st; uint64_t batches; };

static int replay_fn(void *arg, const struct jr_batch *b)
{
	struct replay *r = arg;
	uint32_t n = 0;
	for (uint32_t off = 0; off < b->body_len; n++)
		off += wr_rec_decode(b->body + off, b->body_len - off, &cmds[n]);
	wr_decide(r->st, cmds, n, b->time_ms, 1, &out);
	r->batches++;
	return 0;
}

/* One batch: reservations k..k+n of distinct users; every 4th command
 * cancels a reservation of the previous batch. */
static uint32_t make_batch(uint64_t k, uint32_t n, const uint64_t *res_of)
{
	uint32_t c = 0;
	for (uint32_t i = 0; i < n; i++, c++) {
		struct fs_cmd *x = &cmds[c];
		memset(x, 0, sizeof *x);
		if ((k + i) % 4 == 3 && res_of != NULL) {
			x->type = FS_CMD_CANCEL;
			/* the reservation made one place earlier in the previous batch */
			x->ref = res_of[(k + i - 1) % BATCH];
			x->user_len = (uint8_t)snprintf(x->user, sizeof x->user, "u%llu",
			                                (unsigned long long)((k + i - 1 - BATCH) % 1000000));
			continue;
		}
		x->type = FS_CMD_RESERVE;
		x->quantity = 1;
		memcpy(x->sku, "bench", 5);
		x->sku_len = 5;
		x->user_len = (uint8_t)snprintf(x->user, sizeof x->user, "u%llu", (unsigned long long)((k + i) % 1000000));
		x->key_len = (uint8_t)snprintf(x->key, sizeof x->key, "k%llu", (unsigned long long)(k + i));
	}
	return c;
}

static void run(uint64_t decisions)
{
	char dir[] = "/tmp/fs-lifetime-bench-XXXXXX", jdir[256];
	if (mkdtemp(dir) == NULL)
		exit(1);
	snprintf(jdir, sizeof jdir, "%s/journal", dir);
	struct wr_limits l;
	limits(&l, decisions);
	struct wr_state *st = wr_state_new(&l);
	struct jr_config jc = { .dir = jdir, .segment_bytes = 256u << 20, .no_sync = 1 };
	char err[1024];
	struct journal *j = jr_open(&jc, NULL, NULL, err, sizeof err);
	if (!st || !j) {
		fprintf(stderr, "lifetime_bench: %s\n", err);
		exit(1);
	}
	int64_t t = 1700000000000LL;
	memset(cmds, 0, 2 * sizeof *cmds);
	cmds[0].type = FS_CMD_SALE_CREATE;
	memcpy(cmds[0].sku, "bench", 5);
	cmds[0].sku_len = 5;
	cmds[0].sale.total = decisions * 2;
	cmds[0].sale.hold_ms = 3600000;
	cmds[1] = cmds[0];
	cmds[1].type = FS_CMD_SALE_OPEN;
	wr_decide(st, cmds, 2, t, 0, &out);
	jr_append(j, t, out.record_count, out.records, out.records_len);
	static uint64_t res_of[BATCH];
	/* the snapshot after the batch at snap_k: a tail of about 64 batches */
	uint64_t snap_k = decisions / BATCH > 66 ? (decisions / BATCH - 64) * BATCH : BATCH;
	/* an earlier one, halfway: the snapshotter's first request replays the
	 * whole history up to it; the measured one (snap_k) an interval */
	uint64_t half_k = snap_k / 2 / BATCH * BATCH;
	struct wr_snap_stamp stamp = { 0 };
	double fork_ms = 0, after_fork_ms = 0, plain_ms = 0, snap_write_s = 0, snap_t0 = 0;
	int snapping = 0;
	struct wr_snapshotter_result snap_res = { 0 };
	struct wr_snapshotter_config sc = { .data_dir = dir, .journal_dir = jdir, .limits = l };
	struct wr_snapshotter *snapper = wr_snapshotter_new(&sc, err, sizeof err);
	if (snapper == NULL) {
		fprintf(stderr, "lifetime_bench: %s\n", err);
		exit(1);
	}
	for (uint64_t k = 0; k < decisions; k += BATCH) {
		uint32_t n = make_batch(k, BATCH, res_of);
		double b0 = now_s();
		wr_decide(st, cmds, n, ++t, 0, &out);
		double b1 = now_s();
		if (k < snap_k && (b1 - b0) * 1e3 > plain_ms && k + 64 * BATCH >= snap_k)
			plain_ms = (b1 - b0) * 1e3;   /* the longest of the 64 batches before it */
		for (uint32_t i = 0; i < n; i++)
			if (cmds[i].type == FS_CMD_RESERVE)
				res_of[(k + i) % BATCH] = cmds[i].out_ref;
		jr_append(j, t, out.record_count, out.records, out.records_len);
		while (k == snap_k && snapping) {   /* the halfway one is still being taken */
			struct wr_snapshotter_result res;
			snapping = !wr_snapshotter_poll(snapper, &res);
			usleep(1000);
		}
		if ((k == snap_k || k == half_k) && !snapping) {
			/* the writer's snapshot: hand the sequence to the snapshotter
			 * thread, which replays its own copy up to it and writes it */
			stamp.seq = jr_last_seq(j);
			double f0 = now_s();
			if (wr_snapshotter_request(snapper, stamp.seq) != 0)
				exit(1);
			fork_ms = (now_s() - f0) * 1e3;
			snap_t0 = f0;
			snapping = 1;
		} else if (snapping) {
			double ms = (b1 - b0) * 1e3;
			if (ms > after_fork_ms)
				after_fork_ms = ms;
			struct wr_snapshotter_result res;
			if (wr_snapshotter_poll(snapper, &res)) {
				snapping = 0;
				snap_write_s = now_s() - snap_t0;
				snap_res = res;
			}
		}
	}
	while (snapping) {   /* history ended before the snapshot: wait for it */
		struct wr_snapshotter_result res;
		if (wr_snapshotter_poll(snapper, &res)) {
			snapping = 0;
			snap_write_s = now_s() - snap_t0;
			snap_res = res;
		}
		usleep(1000);
	}
	wr_snapshotter_free(snapper);
	if (!snap_res.ok || snap_res.seq != stamp.seq) {
		fprintf(stderr, "lifetime_bench: the snapshot failed\n");
		exit(1);
	}
	struct wr_usage u;
	wr_usage(st, &u);
	jr_close(j);
	wr_state_free(st);
	/* start-up 1: full replay */
	struct replay r = { wr_state_new(&l), 0 };
	jc.after_seq = 0;
	double r0 = now_s();
	j = jr_open(&jc, replay_fn, &r, err, sizeof err);
	double full_s = now_s() - r0;
	jr_close(j);
	wr_state_free(r.st);
	/* start-up 2: snapshot + tail */
	char path[512];
	wr_snapshot_path(path, sizeof path, dir, stamp.seq);
	struct stat sb;
	stat(path, &sb);
	struct replay r2 = { wr_state_new(&l), 0 };
	struct wr_snap_stamp got;
	double l0 = now_s();
	if (wr_snapshot_load(path, r2.st, &got, NULL, err, sizeof err) != 0) {
		fprintf(stderr, "lifetime_bench: %s\n", err);
		exit(1);
	}
	double l1 = now_s();
	jc.after_seq = got.seq;
	memcpy(jc.after_chain, got.chain, 16);
	j = jr_open(&jc, replay_fn, &r2, err, sizeof err);
	double l2 = now_s();
	if (j == NULL) {
		fprintf(stderr, "lifetime_bench: %s\n", err);
		exit(1);
	}
	jr_close(j);
	wr_state_free(r2.st);
	printf("| %.1f M | %u | %.2f s | %.2f s + %.2f s (%llu batches) | %.1f MiB | %.2f s (replay %.2f s of %llu batches, write %.2f s) | %.3f ms | %.1f ms (vs %.1f ms) |\n",
	       (double)decisions / 1e6, u.reservations, full_s, l1 - l0, l2 - l1, (unsigned long long)r2.batches,
	       (double)sb.st_size / (1 << 20), snap_write_s, snap_res.replay_ms / 1e3,
	       (unsigned long long)snap_res.batches, snap_res.write_ms / 1e3, fork_ms, after_fork_ms, plain_ms);
	fflush(stdout);
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "lifetime_bench: could not remove %s\n", dir);
}

int main(int argc, char **argv)
{
	out_init(BATCH * 2);
	printf("| decisions | live reservations | full replay | snapshot load + tail | snapshot | snapshot time | hand-over | longest batch while it was taken |\n");
	printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
	if (argc == 1) {
		run(1000000);
		run(4000000);
	}
	for (int i = 1; i < argc; i++)
		run((uint64_t)(atof(argv[i]) * 1e6));
	return 0;
}
