/* sim.c - deterministic simulation of the whole appliance in one thread,
 * under simulated time, driven by one 64-bit seed (the VOPR idea).
 *
 * What is real: the decide step (writer/alloc.c), record encoding
 * (writer/record.c), admission (writer/admission.c: tiers, token buckets,
 * payment capacity), the journal
 * (writer/journal.c: segments, chain, torn-tail repair, replay), the
 * writer's own recovery (wr_open: replay, divergence check, re-charging
 * PENDING orders), the journal reader and the sinks' apply logic
 * (writer/sink/sink_model.c), the payment thread's retry rule
 * (writer/pay/pay_retry.c). What is simulated: the clock, the disk (one
 * narrow hook, struct jr_io, replaces io_uring write + fdatasync), the
 * clients, the payment thread's slots and the payment provider.
 *
 * The disk: slow fsync (time passes, more commands pile up), a crash in
 * the middle of an append (each 512-byte sector of the file independently
 * written or lost, or the write stopped at a byte: torn and lost writes
 * before fdatasync; what was not written reads zero, as in the pre-zeroed
 * segment), a crash right after a complete write whose answer was
 * never delivered, ENOSPC (a prefix written, the append fails: the writer
 * stops, the process restarts), bit flips in durable batches found at
 * start-up, the last acknowledged batch included (must be refused with
 * the file named, never truncated as a torn tail; then the operator
 * restores the byte), and kill -9 between batches.
 * The clients: many users with retries of the same idempotency key after
 * a lost answer, cancels, checkouts with tokens that pay, decline, hit a
 * down provider or are invalid, reads, expiry by the passing of time,
 * admin pause/freeze/resume/open/stock-add, and tier-1 bots hammering.
 * The provider: slow (past the attempt timeout: the charge happened but the
 * answer is lost), down for a while, duplicate outcome deliveries.
 *
 * After every batch it checks, against the reference model
 * (tests/writer/model.c): every answer, every SKU's counters and state,
 * conservation (available + reserved + sold == total) and zero oversell;
 * replay of the batch's records regenerates them byte for byte; at every
 * crash point: the real recovery (wr_open) succeeds (or refuses a bit flip
 * naming the file), every acknowledged batch is there, the recovered state
 * digest equals the durable prefix's, every acknowledged reservation and
 * paid order is in it, repeats of acknowledged keys get the same
 * reservation, the orders left PENDING are exactly the ones re-charged;
 * the sink model, caught up, agrees with the writer and never applies a
 * batch twice; each order is charged at most once and each reservation
 * has at most one charged order; an order the provider charged never ends
 * FAILED (its attempts timed out: it stays PENDING until the provider
 * answers); admitted attempts never exceed a tier's bucket.
 *
 *   sim [--seed S] [--seeds N] [--seed-list S1,S2,...] [--ticks T] [--dir D] [-v]
 * A failure prints "seed=S" and exits 1; `tests/sim/run --seed S` replays it.
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fs_cmd.h"
#include "common/fs_ring.h"
#include "common/fs_snapshot.h"
#include "writer/admission.h"
#include "writer/alloc.h"
#include "writer/fairness.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/snapshot.h"
#include "writer/writer.h"
#include "writer/pay/pay_retry.h"
#include "writer/sink/sink_model.h"
#include "tests/writer/model.h"

#define SKUS         3u
#define USERS        48u
#define BOTS         6u
#define BATCH_MAX    48u
#define DUE_MAX      32u
#define CMD_MAX      (BATCH_MAX + DUE_MAX)
#define PEND_MAX     512u
#define REQ_CAP      (1u << 15)        /* outstanding requests by tag (ring) */
#define KEY_MAX      (1u << 16)        /* idempotency keys per seed */
#define PAY_SLOTS    512u
#define SEG_BYTES    (48u << 10)       /* small segments: rotations are frequent */
#define ORIGIN_NONE  0xffu
#define ORIGIN_ADMIN 0u
#define ORIGIN_PAY   5u
#define ATTEMPT_TIMEOUT_MS 2000
#define PAY_ATTEMPTS 3u
#define PAY_WAITING  (-100)            /* a slot's outcome while it waits out a backoff */

/* ---- the run's state ----------------------------------------------------------- */

enum fault { FAULT_NONE = 0, FAULT_TORN, FAULT_UNACKED, FAULT_ENOSPC };

struct req {                      /* a client request in flight, by tag */
	uint64_t tag;
	struct fs_cmd cmd;            /* as sent (for a retry) */
	uint32_t key_no;              /* index of its idempotency key, 0 when none */
};

struct hist {                     /* one decided batch, for rebuilding the model */
	int64_t t;
	uint32_t first, n;
};

struct pay_slot {
	uint64_t order_no;
	char token[FS_ID_LEN_MAX];
	uint8_t token_len;
	uint32_t attempt;
	int64_t due;
	int outcome;                  /* of the attempt in flight */
	uint8_t uncertain;            /* pay_retry_next: an attempt may have charged */
	int used;
};

struct batch_loc {                /* where batch seq lives (for bit flips) */
	uint32_t path_idx;
	uint64_t off;
	uint32_t len;                 /* header + body: what the checksums cover */
};

struct sim {
	uint64_t seed, rng;
	uint64_t ticks;
	int verbose;
	char root[256], data[300], jdir[320];
	int64_t t;
	struct wr_limits lim;
	struct wr_state *st, *dur;    /* live state; the durable prefix rebuilt by replay */
	struct journal *j;
	struct jr_io io;
	struct model *m;
	struct wr_admission *adm;     /* the writer's admission (buckets, capacities) */
	uint64_t acked_seq;
	char sku[SKUS][8];
	/* the batch in hand */
	struct fs_cmd cmds[CMD_MAX], input[CMD_MAX], rcmds[CMD_MAX * 6];
	struct m_effect eff[CMD_MAX];
	struct wr_batch_out out, rout;
	/* history of every decided batch that counts (for the model) */
	struct fs_cmd *h_cmds;
	uint8_t *h_served;
	uint32_t h_len, h_cap;
	struct hist *h;
	uint32_t h_n, h_cap_b;
	/* disk */
	enum fault fault;
	int64_t fsync_ms;
	char (*paths)[320];
	uint32_t path_n;
	struct batch_loc *loc;        /* [seq] */
	uint64_t loc_cap;
	/* clients */
	struct fs_cmd pend[PEND_MAX];
	uint32_t pend_n;
	struct req *reqs;             /* REQ_CAP */
	uint64_t tag;
	uint32_t key_n;
	uint64_t *ack_res;            /* [key_no]: reservation acknowledged for that key */
	uint8_t *key_user;            /* [key_no]: user index */
	uint8_t *ack_order;           /* [order_no]: 1 when the client was told PAID */
	uint64_t user_res[USERS + BOTS][4];
	struct fs_cmd last_reserve[USERS + BOTS];
	uint32_t last_reserve_key[USERS + BOTS];
	/* fairness check: attempts admitted since the buckets were fresh */
	uint32_t admitted[USERS + BOTS];
	int64_t bucket_born;
	/* payments */
	struct pay_slot pay[PAY_SLOTS];
	uint8_t *ledger;              /* [order_no]: charges the provider made */
	int provider_down;
	int64_t provider_slow_ms;     /* 0 = fast */
	int64_t provider_until;
	/* sink */
	struct sink_model sm;
	struct jr_reader *reader;
	struct fs_cmd *sink_recs;
	/* figures */
	uint64_t st_batches, st_cmds, st_crashes, st_torn, st_unacked, st_enospc, st_kills, st_flips;
	uint64_t st_slow_fsync, st_retries, st_repeat_checked, st_429, st_paid, st_pay_dup, st_pay_err;
	uint64_t st_kept_pending, st_sink_batches, st_sink_dups, st_sink_restarts, st_recharged;
	uint64_t st_inflight_survived, st_snapshots, st_reclaims, st_archives;
	int64_t retention_ms;         /* 0: ended rows kept forever; else reclaimed after this */
	int lifetime;                 /* sales are closed, archived and created again (gen_lifetime) */
};

static struct sim S;
/* --no-lifetime: the workload as it was before sale archive (sim-regress
 * replays the seeds that found bugs then, exactly as they ran) */
static int g_no_lifetime;

/* ---- helpers ------------------------------------------------------------------- */

static uint64_t rnd64(void)
{
	uint64_t z = (S.rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}
static uint32_t rnd(uint32_t n) { return n ? (uint32_t)(rnd64() % n) : 0; }
static int chance(uint32_t per_mille) { return rnd(1000) < per_mille; }

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "sim: FAILED seed=%" PRIu64 " t=%" PRId64 " batch=%" PRIu64 " crashes=%" PRIu64 ": ",
	        S.seed, S.t, S.st_batches, S.st_crashes);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\nsim: replay with: tests/sim/run --seed %" PRIu64 " --ticks %" PRIu64 "\n", S.seed, S.ticks);
	exit(1);
}

#define CHECK(cond, ...) do { if (!(cond)) die(__VA_ARGS__); } while (0)

static void *xcalloc(size_t n, size_t sz)
{
	void *p = calloc(n, sz);
	if (p == NULL) {
		fprintf(stderr, "sim: out of memory\n");
		exit(2);
	}
	return p;
}

static void user_name(uint32_t u, char *buf, size_t cap)
{
	if (u < USERS)
		snprintf(buf, cap, "u%02u", u);
	else
		snprintf(buf, cap, "bot%u", u - USERS);
}

static int user_index(const struct fs_cmd *c)
{
	char name[16];
	for (uint32_t u = 0; u < USERS + BOTS; u++) {
		user_name(u, name, sizeof name);
		if (strlen(name) == c->user_len && memcmp(name, c->user, c->user_len) == 0)
			return (int)u;
	}
	return -1;
}

static void out_init(struct wr_batch_out *o, uint32_t n)
{
	memset(o, 0, sizeof *o);
	o->answer_count_max = 5 * n;
	o->answers = xcalloc(o->answer_count_max, sizeof *o->answers);
	o->records_cap = n * (WR_REC_BYTES_MAX + 4 * (WR_REC_FIXED_BYTES + FS_SKU_LEN_MAX + 8)) +
	                 WR_REC_BYTES_MAX * (S.lim.sku_count_max + 1);
	o->records = xcalloc(1, o->records_cap);
	o->charges = xcalloc(n, sizeof *o->charges);
	o->sku_touched = xcalloc(S.lim.sku_count_max, sizeof(uint32_t));
}

static void out_free(struct wr_batch_out *o)
{
	free(o->answers);
	free(o->records);
	free(o->charges);
	free(o->sku_touched);
}

static uint32_t decode_all(const uint8_t *body, uint32_t len, struct fs_cmd *cmds, uint32_t cap)
{
	uint32_t n = 0, off = 0;
	while (off < len) {
		CHECK(n < cap, "a batch with more records than expected");
		uint32_t used = wr_rec_decode(body + off, len - off, &cmds[n]);
		CHECK(used != 0, "record at offset %u does not decode", off);
		off += used;
		n++;
	}
	return n;
}

/* ---- the simulated disk ---------------------------------------------------------- */

static void remember_loc(int fd, uint64_t off, size_t len)
{
	char link[64], path[320];
	snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, path, sizeof path - 1);
	CHECK(n > 0, "readlink of a segment fd");
	path[n] = 0;
	uint32_t idx = S.path_n;
	for (uint32_t i = 0; i < S.path_n; i++)
		if (strcmp(S.paths[i], path) == 0)
			idx = i;
	if (idx == S.path_n) {
		S.paths = realloc(S.paths, (S.path_n + 1) * sizeof *S.paths);
		CHECK(S.paths != NULL, "oom");
		snprintf(S.paths[S.path_n++], sizeof S.paths[0], "%s", path);
	}
	uint64_t seq = S.acked_seq + 1;
	if (seq >= S.loc_cap) {
		S.loc_cap = S.loc_cap ? S.loc_cap * 2 : 1024;
		S.loc = realloc(S.loc, S.loc_cap * sizeof *S.loc);
		CHECK(S.loc != NULL, "oom");
	}
	S.loc[seq].path_idx = idx;
	S.loc[seq].off = off;
	S.loc[seq].len = (uint32_t)len;
}

/* jr_io.write_sync: the fault chosen for this append happens here. */
static int sim_write_sync(void *ctx, int fd, const void *buf, size_t len, uint64_t off)
{
	(void)ctx;
	const uint8_t *p = buf;
	const struct jr_header *h = buf;
	remember_loc(fd, off, JR_HEADER_BYTES + (size_t)h->body_len);
	switch (S.fault) {
	case FAULT_NONE:
	case FAULT_UNACKED:
		CHECK(pwrite(fd, p, len, (off_t)off) == (ssize_t)len, "pwrite: %s", strerror(errno));
		if (S.fault == FAULT_NONE)
			return 0;
		errno = EIO;   /* the process dies before the answer leaves */
		return -1;
	case FAULT_TORN: {
		if (rnd(2)) {   /* the write stopped at a byte: a prefix arrived */
			size_t cut = rnd((uint32_t)len);
			if (cut)
				CHECK(pwrite(fd, p, cut, (off_t)off) == (ssize_t)cut, "pwrite");
			errno = EIO;
			return -1;
		}
		/* each 512-byte sector of the file independently reached the
		 * platter or not (the rest of the pre-zeroed segment reads zero) */
		for (size_t s = 0; s < len;) {
			size_t k = 512 - (size_t)((off + s) % 512);
			k = len - s < k ? len - s : k;
			if (rnd(2))
				CHECK(pwrite(fd, p + s, k, (off_t)(off + s)) == (ssize_t)k, "pwrite");
			s += k;
		}
		errno = EIO;
		return -1;
	}
	case FAULT_ENOSPC: {
		size_t k = rnd((uint32_t)len);
		k &= ~(size_t)511;
		if (k)
			CHECK(pwrite(fd, p, k, (off_t)off) == (ssize_t)k, "pwrite");
		errno = ENOSPC;
		return -1;
	}
	}
	return -1;
}

/* A snapshot of the durable state, as the writer takes them: the next
 * real start-up (wr_open) loads the newest and replays only the tail. */
static void snapshot_take(int64_t t_batch)
{
	struct wr_snap_stamp stamp = { .seq = S.acked_seq, .time_ms = t_batch };
	jr_last_chain(S.j, stamp.chain);
	char err[512];
	CHECK(wr_snapshot_write(S.data, S.dur, &stamp, 0, err, sizeof err) == 0, "snapshot: %s", err);
	wr_snapshot_prune(S.data, WR_SNAP_KEEP);
	S.st_snapshots++;
}

static void pick_fault(void)
{
	S.fault = FAULT_NONE;
	S.fsync_ms = 0;
	uint32_t p = rnd(1000);
	if (p < 6)
		S.fault = FAULT_TORN;
	else if (p < 9)
		S.fault = FAULT_UNACKED;
	else if (p < 11)
		S.fault = FAULT_ENOSPC;
	else if (p < 60)
		S.fsync_ms = 20 + rnd(800);      /* slow fsync */
	else
		S.fsync_ms = rnd(2);
}

/* ---- the model's history --------------------------------------------------------- */

static void hist_add(const struct fs_cmd *in, const uint8_t *served, uint32_t n, int64_t t)
{
	if (S.h_len + n > S.h_cap) {
		S.h_cap = (S.h_len + n) * 2;
		S.h_cmds = realloc(S.h_cmds, S.h_cap * sizeof *S.h_cmds);
		S.h_served = realloc(S.h_served, S.h_cap);
		CHECK(S.h_cmds && S.h_served, "oom");
	}
	if (S.h_n == S.h_cap_b) {
		S.h_cap_b = S.h_cap_b ? S.h_cap_b * 2 : 1024;
		S.h = realloc(S.h, S.h_cap_b * sizeof *S.h);
		CHECK(S.h != NULL, "oom");
	}
	memcpy(S.h_cmds + S.h_len, in, n * sizeof *in);
	memcpy(S.h_served + S.h_len, served, n);
	S.h[S.h_n++] = (struct hist){ t, S.h_len, n };
	S.h_len += n;
}

/* A fresh model fed every batch that counts (what the durable state holds),
 * then restarted (no request waits on a payment any more). Waiters only
 * decide answers, never state, so earlier restarts need no replaying. */
static void model_rebuild(void)
{
	model_free(S.m);
	S.m = model_new(&S.lim);
	CHECK(S.m != NULL, "model_new");
	model_set_retention(S.m, S.retention_ms);
	struct m_effect e;
	for (uint32_t b = 0; b < S.h_n; b++)
		for (uint32_t i = 0; i < S.h[b].n; i++) {
			uint32_t k = S.h[b].first + i;
			model_decide(S.m, &S.h_cmds[k], S.h[b].t, &e);
			if (e.journaled < 0 && S.h_served[k])
				model_serve_journaled(S.m, S.h_cmds[k].sku, S.h_cmds[k].sku_len);
		}
	model_restart(S.m);
}

/* ---- checks ------------------------------------------------------------------------ */

static void check_counters(struct wr_state *st, const char *when)
{
	/* by name: the writer reuses archived slots, the model keeps every sale
	 * it created (the usage below compares the live counts) */
	for (uint32_t ms = 0; ms < model_sku_count(S.m); ms++) {
		struct wr_sku_view v;
		struct m_sku_view mv;
		model_sku_view(S.m, ms, &mv);
		if (mv.gone)
			continue;
		int s = wr_sku_find(st, mv.name, mv.name_len);
		CHECK(s >= 0, "%s: sku %.*s: the model has it, the writer does not", when, mv.name_len, mv.name);
		wr_sku_view(st, (uint32_t)s, &v);
		CHECK(v.available + v.reserved + v.sold == v.total, "%s: sku %u: conservation: %" PRIu64 " + %" PRIu64
		      " + %" PRIu64 " != %" PRIu64, when, s, v.available, v.reserved, v.sold, v.total);
		CHECK(v.sold + v.reserved <= v.total, "%s: sku %u: oversold", when, s);
		CHECK(v.state == mv.state && v.total == mv.total && v.available == mv.available &&
		      v.reserved == mv.reserved && v.sold == mv.sold && v.waitlist_count == mv.waitlist_count,
		      "%s: sku %u: state %u t/a/r/s %" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 " wl %u; model %u "
		      "%" PRIu64 "/%" PRIu64 "/%" PRIu64 "/%" PRIu64 " wl %u", when, s, v.state, v.total, v.available,
		      v.reserved, v.sold, v.waitlist_count, mv.state, mv.total, mv.available, mv.reserved, mv.sold,
		      mv.waitlist_count);
	}
	struct wr_usage u, mu;
	memset(&u, 0, sizeof u);
	memset(&mu, 0, sizeof mu);
	wr_usage(st, &u);
	model_usage(S.m, &mu);
	CHECK(u.users == mu.users && u.reservations == mu.reservations && u.orders == mu.orders &&
	      u.idem_keys == mu.idem_keys && u.holdings == mu.holdings && u.skus == mu.skus,
	      "%s: table usage users/res/orders/idem/holdings/skus %u/%u/%u/%u/%u/%u, "
	      "model %u/%u/%u/%u/%u/%u", when, u.users, u.reservations, u.orders, u.idem_keys, u.holdings, u.skus,
	      mu.users, mu.reservations, mu.orders, mu.idem_keys, mu.holdings, mu.skus);
}

static int is_read(uint8_t type)
{
	return type == FS_CMD_RES_GET || type == FS_CMD_ORDER_GET || type == FS_CMD_SALE_GET;
}

/* The batch's answers and records against the model's effects. */
static void check_batch(uint32_t n, uint8_t *served)
{
	uint32_t want = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &S.cmds[i];
		const struct m_effect *e = &S.eff[i];
		int jour = e->journaled;
		served[i] = 0;
		if (jour < 0) {
			jour = c->err == FS_OK;
			if (jour) {
				model_serve_journaled(S.m, c->sku, c->sku_len);
				served[i] = 1;
			}
		}
		int got = c->err == FS_OK && !is_read(c->type);
		CHECK(jour == got, "cmd %u (%s): journaled=%d, model says %d (err %s)", i,
		      fs_cmd_type_name((enum fs_cmd_type)c->type), got, jour, fs_err_name((enum fs_err)c->err));
		if (jour)
			CHECK(c->out_status == e->out_status && c->out_ref == e->out_ref && c->out_val == e->out_val,
			      "cmd %u (%s): out fields differ from the model", i, fs_cmd_type_name((enum fs_cmd_type)c->type));
		want += e->answer_count;
	}
	CHECK(S.out.answer_count == want, "%u answers, model expects %u", S.out.answer_count, want);
	for (uint32_t i = 0; i < n; i++)
		for (uint32_t k = 0; k < S.eff[i].answer_count; k++) {
			const struct fs_ans *w = &S.eff[i].answers[k].ans;
			const struct fs_ans *g = NULL;
			for (uint32_t a = 0; a < S.out.answer_count && g == NULL; a++)
				if (S.out.answers[a].ans.tag == w->tag)
					g = &S.out.answers[a].ans;
			CHECK(g != NULL, "cmd %u: no answer with tag %" PRIu64, i, w->tag);
			CHECK(g->http == w->http && g->err == w->err && g->res_no == w->res_no &&
			      g->order_no == w->order_no && g->res_status == w->res_status &&
			      g->order_status == w->order_status && g->quantity == w->quantity &&
			      g->expires_at_ms == w->expires_at_ms && g->amount_cents == w->amount_cents,
			      "cmd %u (%s): answer http %u err %s res %" PRIu64 "/%u order %" PRIu64 "/%u q %u exp %" PRId64
			      " amount %" PRId64 "; model http %u err %s res %" PRIu64 "/%u order %" PRIu64 "/%u q %u exp %"
			      PRId64 " amount %" PRId64, i,
			      fs_cmd_type_name((enum fs_cmd_type)S.input[i].type), g->http,
			      fs_err_name((enum fs_err)g->err), g->res_no, g->res_status, g->order_no, g->order_status,
			      g->quantity, g->expires_at_ms, g->amount_cents,
			      w->http, fs_err_name((enum fs_err)w->err), w->res_no, w->res_status, w->order_no,
			      w->order_status, w->quantity, w->expires_at_ms, w->amount_cents);
		}
	uint32_t ch = 0;
	for (uint32_t i = 0; i < n; i++)
		if (S.eff[i].charge) {
			CHECK(ch < S.out.charge_count && S.out.charges[ch].order_no == S.eff[i].ch.order_no &&
			      S.out.charges[ch].amount_cents == S.eff[i].ch.amount_cents,
			      "cmd %u: charge differs from the model", i);
			ch++;
		}
	CHECK(ch == S.out.charge_count, "%u charges, model expects %u", S.out.charge_count, ch);
}

/* Replays records through `dur` (replay=1): the same bytes must come back. */
static void dur_apply(const uint8_t *records, uint32_t len, uint32_t count, int64_t t)
{
	uint32_t k = decode_all(records, len, S.rcmds, CMD_MAX * 6);
	CHECK(k == count, "%u records decoded, record_count %u", k, count);
	wr_decide(S.dur, S.rcmds, k, t, 1, &S.rout);
	CHECK(S.rout.records_len == len && memcmp(S.rout.records, records, len) == 0,
	      "replay regenerated different records (%u bytes, journaled %u)", S.rout.records_len, len);
}

/* What the recovered appliance holds: every acknowledged decision. */
static void check_acks(void)
{
	for (uint32_t k = 1; k <= S.key_n; k++) {
		uint64_t r = S.ack_res[k];
		if (r == 0)
			continue;
		CHECK(r <= model_res_count(S.m), "acknowledged reservation %" PRIu64 " (key k%u) is gone", r, k);
		uint8_t len;
		const char *u = model_res_user(S.m, r, &len);
		char name[16];
		user_name(S.key_user[k], name, sizeof name);
		CHECK(len == strlen(name) && memcmp(u, name, len) == 0, "reservation %" PRIu64 " changed owner", r);
	}
	for (uint64_t o = 1; o <= S.lim.order_count_max; o++)
		if (S.ack_order[o])
			CHECK(model_order_status(S.m, o) == FS_ORDER_PAID, "order %" PRIu64 " was answered PAID and is "
			      "%u after recovery", o, model_order_status(S.m, o));
}

/* ---- payments: the thread's retry policy and the provider ----------------------------------- */

static int token_is(const struct pay_slot *p, const char *prefix)
{
	size_t n = strlen(prefix);
	return p->token_len >= n && memcmp(p->token, prefix, n) == 0;
}

static void pay_attempt(struct pay_slot *p)
{
	p->attempt++;
	if (S.provider_down || token_is(p, "tok_down")) {
		p->outcome = PAY_ERROR_CLEAN;   /* refused: nothing reached the provider */
		p->due = S.t + 1 + rnd(5);
		return;
	}
	int64_t lat = 1 + rnd(30) + S.provider_slow_ms;
	if (token_is(p, "tok_ok")) {
		/* the provider honours the key: a second charge of an order is a 409 (paid) */
		if (S.ledger[p->order_no] == 0)
			S.ledger[p->order_no] = 1;
		p->outcome = FS_PAY_OK;
	} else if (token_is(p, "tok_decline")) {
		p->outcome = FS_PAY_DECLINED;
	} else {
		p->outcome = FS_PAY_INVALID;
	}
	if (lat > ATTEMPT_TIMEOUT_MS) {   /* the answer never comes in time: outcome unknown */
		p->outcome = FS_PAY_ERROR;
		lat = ATTEMPT_TIMEOUT_MS;
	}
	p->due = S.t + lat;
}

static void pay_take(const struct wr_charge *c)
{
	for (uint32_t i = 0; i < PAY_SLOTS; i++)
		if (!S.pay[i].used) {
			struct pay_slot *p = &S.pay[i];
			memset(p, 0, sizeof *p);
			p->used = 1;
			p->order_no = c->order_no;
			memcpy(p->token, c->token, c->token_len);
			p->token_len = c->token_len;
			p->uncertain = c->reissued;
			pay_attempt(p);
			return;
		}
	die("payment slots exhausted");
}

static void admission_new(void);

static void pend_push(const struct fs_cmd *c)
{
	if (S.pend_n < PEND_MAX)
		S.pend[S.pend_n++] = *c;
}

static void pay_advance(void)
{
	if (S.t >= S.provider_until) {   /* the provider's weather changes */
		uint32_t p = rnd(100);
		S.provider_down = p < 10;
		S.provider_slow_ms = p >= 10 && p < 25 ? 200 + rnd(3000) : 0;
		S.provider_until = S.t + 500 + rnd(8000);
	}
	for (uint32_t i = 0; i < PAY_SLOTS; i++) {
		struct pay_slot *p = &S.pay[i];
		if (!p->used || p->due > S.t)
			continue;
		if (p->outcome == PAY_WAITING) {
			pay_attempt(p);
			continue;
		}
		/* the real rule (writer/pay/pay_retry.c), as payment.c applies it */
		const struct pay_retry_rule rule = { .attempt_count_max = PAY_ATTEMPTS, .backoff_ms = 50 };
		int64_t back = 0;
		int decided = pay_retry_next(&rule, p->attempt, p->outcome, &p->uncertain, &back);
		if (decided == 0) {
			S.st_pay_err++;
			S.st_kept_pending += p->attempt == PAY_ATTEMPTS;
			p->due = S.t + back;
			p->outcome = PAY_WAITING;
			continue;
		}
		struct fs_cmd c;
		tc_pay(&c, p->order_no, (uint8_t)decided);
		c.origin = ORIGIN_PAY;
		pend_push(&c);
		if (chance(50)) {   /* a duplicate delivery of the same outcome */
			pend_push(&c);
			S.st_pay_dup++;
		}
		p->used = 0;
	}
}

/* Each order at most one charge; each reservation at most one charged order;
 * a PAID order was charged, a declined or invalid one was not. */
static void check_charges(void)
{
	uint64_t orders = model_order_count(S.m);
	for (uint64_t o = 1; o <= orders; o++) {
		uint8_t s = model_order_status(S.m, o);
		CHECK(S.ledger[o] <= 1, "order %" PRIu64 " charged %u times", o, S.ledger[o]);
		if (s == FS_ORDER_PAID)
			CHECK(S.ledger[o] == 1, "order %" PRIu64 " PAID but never charged", o);
		/* a charge whose answers were lost must not free the unit for resale */
		CHECK(!(S.ledger[o] && s == FS_ORDER_FAILED), "order %" PRIu64 " was charged and is FAILED", o);
		for (uint64_t q = o + 1; q <= orders; q++)
			if (S.ledger[o] && S.ledger[q])
				CHECK(model_order_res(S.m, o) != model_order_res(S.m, q),
				      "reservation %" PRIu64 " charged twice (orders %" PRIu64 " and %" PRIu64 ")",
				      model_order_res(S.m, o), o, q);
	}
}

/* ---- the sink ------------------------------------------------------------------------------- */

static void sink_reopen(void)
{
	if (S.reader)
		jr_reader_close(S.reader);
	char err[256];
	S.reader = jr_reader_open(S.jdir, err, sizeof err);
	CHECK(S.reader != NULL, "jr_reader_open: %s", err);
	CHECK(jr_reader_seek(S.reader, S.sm.last_seq) == 0, "jr_reader_seek");
}

static void sink_check(void)
{
	CHECK(S.sm.anomalies == 0, "sink model anomaly: %s", S.sm.anomaly);
	struct wr_usage u;
	wr_usage(S.st, &u);
	uint32_t sink_live = 0;
	for (uint32_t k = 0; k < S.sm.sku_count; k++)
		sink_live += !S.sm.skus[k].archived;
	CHECK(sink_live == u.skus, "sink has %u live SKUs, writer %u", sink_live, u.skus);
	for (uint32_t s = 0; s < wr_sku_count(S.st); s++) {
		struct wr_sku_view v;
		wr_sku_view(S.st, s, &v);
		if (v.name_len == 0)
			continue;   /* an archived sale's free slot */
		uint32_t k = sm_sku_find(&S.sm, v.name, v.name_len);
		CHECK(k != SM_NO_SKU, "sink lacks sku %.*s", v.name_len, v.name);
		const struct sm_sku *x = &S.sm.skus[k];
		CHECK(x->total == (int64_t)v.total && x->available == (int64_t)v.available &&
		      x->reserved == (int64_t)v.reserved && x->sold == (int64_t)v.sold && sm_public_state(x) == v.state,
		      "sink sku %.*s: %" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 " state %u, writer %" PRIu64 "/%" PRIu64
		      "/%" PRIu64 "/%" PRIu64 " state %u", v.name_len, v.name, x->total, x->available, x->reserved, x->sold,
		      sm_public_state(x), v.total, v.available, v.reserved, v.sold, v.state);
	}
	for (uint64_t o = 1; o <= model_order_count(S.m); o++) {
		const struct sm_order *so = sm_tab_find(&S.sm.orders, o);
		CHECK(so != NULL && so->status == model_order_status(S.m, o), "sink order %" PRIu64 " status %d, model %u",
		      o, so ? so->status : -1, model_order_status(S.m, o));
	}
}

static void sink_step(int catch_up)
{
	if (!catch_up && !chance(300))
		return;
	if (chance(5)) {   /* the sink process restarts from nothing */
		sm_free(&S.sm);
		CHECK(sm_init(&S.sm, 1) == 0, "sm_init");
		S.st_sink_restarts++;
		sink_reopen();
	}
	uint32_t k = catch_up ? UINT32_MAX : 1 + rnd(6);
	for (uint32_t i = 0; i < k; i++) {
		struct jr_batch b;
		char err[256];
		int rc = jr_reader_next(S.reader, S.acked_seq, &b, err, sizeof err);
		CHECK(rc >= 0, "sink reader: %s", err);
		if (rc == 0)
			break;
		uint32_t n = decode_all(b.body, b.body_len, S.sink_recs, JR_BODY_BYTES_MAX / WR_REC_FIXED_BYTES + 1);
		CHECK(n == b.record_count, "sink: record count");
		int a = sm_apply_batch(&S.sm, b.seq, b.time_ms, S.sink_recs, n, NULL);
		CHECK(a == 1, "sink: batch %" PRIu64 " not applied (%d, last %" PRIu64 ")", b.seq, a, S.sm.last_seq);
		S.st_sink_batches++;
		if (chance(100)) {   /* delivered twice: must be skipped */
			CHECK(sm_apply_batch(&S.sm, b.seq, b.time_ms, S.sink_recs, n, NULL) == 0, "sink applied a batch twice");
			S.st_sink_dups++;
		}
	}
	if (S.sm.last_seq == S.acked_seq)
		sink_check();
}

/* ---- clients --------------------------------------------------------------------------------- */

static struct req *req_slot(uint64_t tag) { return &S.reqs[tag % REQ_CAP]; }

static void client_send(struct fs_cmd *c, uint32_t key_no)
{
	c->tag = ++S.tag;
	struct req *r = req_slot(c->tag);
	if (r->tag != 0)
		r->tag = 0;   /* a request so old its client gave up */
	r->tag = c->tag;
	r->cmd = *c;
	r->key_no = key_no;
	pend_push(c);
}

static uint32_t new_key(uint32_t user, char *buf, size_t cap, char prefix)
{
	CHECK(S.key_n + 1 < KEY_MAX, "keys exhausted");
	uint32_t k = ++S.key_n;
	S.key_user[k] = (uint8_t)user;
	snprintf(buf, cap, "%c%u", prefix, k);
	return k;
}

static uint64_t own_res(uint32_t u)
{
	uint64_t r = S.user_res[u][rnd(4)];
	if (r == 0 || chance(50))
		r = S.user_res[u][0];
	return r;
}

static void gen_client(void)
{
	uint32_t u = chance(150) ? USERS + rnd(BOTS) : rnd(USERS);
	char name[16], key[24];
	user_name(u, name, sizeof name);
	struct fs_cmd c;
	uint32_t p = rnd(1000), key_no = 0;
	if (u >= USERS || p < 450) {
		if (S.last_reserve[u].type == FS_CMD_RESERVE && chance(120)) {   /* a retry with the same key */
			c = S.last_reserve[u];
			key_no = S.last_reserve_key[u];
			S.st_retries++;
		} else {
			key_no = new_key(u, key, sizeof key, 'k');
			tc_reserve(&c, S.sku[rnd(SKUS)], name, key, chance(800) ? 1 : 1 + rnd(3));
			if (u >= USERS)
				c.claim_tier = 2;   /* tier 1: one attempt a minute */
			if (chance(100))
				tc_set(c.text, &c.text_len, FS_ID_LEN_MAX, u >= USERS ? "dev-bot" : "dev-shared");
			S.last_reserve[u] = c;
			S.last_reserve_key[u] = key_no;
		}
	} else if (p < 600) {
		tc_cancel(&c, name, chance(900) ? own_res(u) : 1 + rnd(40));
	} else if (p < 850) {
		static const char *tokens[] = { "tok_ok_1", "tok_ok_2", "tok_ok_3", "tok_decline", "tok_down", "visa" };
		key_no = new_key(u, key, sizeof key, 'c');
		tc_checkout(&c, name, key, own_res(u), tokens[rnd(6)]);
	} else if (p < 930) {
		tc_get(&c, FS_CMD_RES_GET, name, own_res(u));
	} else {
		tc_get(&c, FS_CMD_ORDER_GET, name, 1 + rnd(20));
	}
	c.origin = (uint8_t)(1 + rnd(4));
	client_send(&c, key_no);
}

/* A sale's lifetime: closed now and then, archived once retention
 * reclaimed it (409 retained / sinks_behind until then), and the name
 * created and opened again as a new sale. */
static void gen_lifetime(const char *sku)
{
	uint32_t r = rnd(10);
	struct fs_cmd c;
	if (r < 2) {
		tc_admin(&c, FS_CMD_SALE_CLOSE, sku);
	} else if (r < 6) {
		tc_admin(&c, FS_CMD_SALE_ARCHIVE, sku);
		tc_set(c.key, &c.key_len, FS_ID_LEN_MAX, "uid:0");
	} else {
		tc_create(&c, sku, 5 + rnd(40), rnd(3), 3000 + rnd(20000), rnd(2) ? 0 : 1 + rnd(8));
		c.sale.price_cents = 100 + rnd(5000);
		c.origin = ORIGIN_ADMIN;
		client_send(&c, 0);
		tc_admin(&c, FS_CMD_SALE_OPEN, sku);
	}
	c.origin = ORIGIN_ADMIN;
	client_send(&c, 0);
}

static void gen_admin(void)
{
	uint32_t v = rnd(100);

	uint8_t verb = v < 30 ? FS_CMD_SALE_PAUSE : v < 45 ? FS_CMD_SALE_FREEZE : v < 80 ? FS_CMD_SALE_RESUME :
	               v < 90 ? FS_CMD_SALE_OPEN : v < 99 ? FS_CMD_STOCK_ADD : FS_CMD_SALE_GET;
	struct fs_cmd c;
	tc_admin(&c, verb, S.sku[rnd(SKUS)]);
	if (verb == FS_CMD_STOCK_ADD)
		c.quantity = 1 + rnd(5);
	c.origin = ORIGIN_ADMIN;
	client_send(&c, 0);
}

/* An answer reaches its client. */
static void deliver(const struct fs_ans *a)
{
	struct req *r = req_slot(a->tag);
	if (r->tag != a->tag)
		return;
	const struct fs_cmd *c = &r->cmd;
	int u = user_index(c);
	if (c->type == FS_CMD_RESERVE && r->key_no && (a->http == 200 || a->http == 201 || a->http == 202)) {
		uint64_t *ack = &S.ack_res[r->key_no];
		if (*ack != 0) {
			/* the same reservation, unless it and its key were reclaimed (retention) */
			CHECK(a->res_no == *ack || *ack <= model_res_floor(S.m), "a repeat of key k%u got reservation %"
			      PRIu64 ", first answer %" PRIu64, r->key_no, a->res_no, *ack);
			S.st_repeat_checked++;
		}
		*ack = a->res_no;
		if (u >= 0) {
			memmove(&S.user_res[u][1], &S.user_res[u][0], 3 * sizeof(uint64_t));
			S.user_res[u][0] = a->res_no;
		}
	}
	if (c->type == FS_CMD_CHECKOUT && a->order_status == FS_ORDER_PAID && a->http == 200) {
		CHECK(a->order_no <= S.lim.order_count_max, "order number out of range");
		S.ack_order[a->order_no] = 1;
		S.st_paid++;
	}
	if (a->http != 202 || c->type != FS_CMD_CHECKOUT)
		r->tag = 0;   /* answered (a 202 PENDING checkout waits on) */
}

/* Everything in flight dies with the process: clients whose request got no
 * answer send it again (same key) a little later, most of them. */
static void clients_lose_answers(void)
{
	S.pend_n = 0;
	struct fs_cmd *again = xcalloc(REQ_CAP, sizeof *again);
	uint32_t n = 0;
	for (uint32_t i = 0; i < REQ_CAP; i++) {
		struct req *r = &S.reqs[i];
		if (r->tag == 0)
			continue;
		if (r->cmd.origin != ORIGIN_ADMIN && chance(800) && n < PEND_MAX / 2)
			again[n++] = r->cmd;
		r->tag = 0;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct fs_cmd c = again[i];
		/* the key's number follows from its text ("k123", "c45") */
		char kb[FS_ID_LEN_MAX + 1];
		memcpy(kb, c.key, c.key_len);
		kb[c.key_len] = 0;
		uint32_t key_no = c.key_len > 1 ? (uint32_t)strtoul(kb + 1, NULL, 10) : 0;
		client_send(&c, key_no);
		S.st_retries++;
	}
	free(again);
}

/* ---- the writer's batch and its crash ------------------------------------------------------ */

static void journal_open(void)
{
	struct jr_config jc = { .dir = S.jdir, .segment_bytes = SEG_BYTES, .io = &S.io };
	char err[512];
	S.j = jr_open(&jc, NULL, NULL, err, sizeof err);
	CHECK(S.j != NULL, "jr_open: %s", err);
}

static int replay_cb(void *arg, const struct jr_batch *b)
{
	(void)arg;
	uint32_t n = decode_all(b->body, b->body_len, S.rcmds, CMD_MAX * 6);
	CHECK(n == b->record_count, "replay: record count");
	wr_decide(S.st, S.rcmds, n, b->time_ms, 1, &S.rout);
	CHECK(S.rout.records_len == b->body_len && memcmp(S.rout.records, b->body, b->body_len) == 0,
	      "replay of batch %" PRIu64 " (%s offset %" PRIu64 ") diverged", b->seq, b->file, b->offset);
	return 0;
}

static void flip_and_expect_refusal(struct wr_config *wc, struct fs_snapshot *snap)
{
	if (S.acked_seq < 3)
		return;
	/* any acknowledged batch, the last one too (it used to be truncated as a torn tail) */
	uint64_t seq = 1 + rnd((uint32_t)S.acked_seq);
	const struct batch_loc *l = &S.loc[seq];
	const char *path = S.paths[l->path_idx];
	uint64_t at = l->off + rnd(l->len);
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0, "open %s", path);
	uint8_t b, f;
	CHECK(pread(fd, &b, 1, (off_t)at) == 1, "pread");
	f = (uint8_t)(b ^ (1u << rnd(8)));
	CHECK(pwrite(fd, &f, 1, (off_t)at) == 1, "pwrite");
	char err[512];
	struct writer *w = wr_open(wc, snap, err, sizeof err);
	const char *base = strrchr(path, '/');
	base = base ? base + 1 : path;
	CHECK(w == NULL, "a flipped bit in batch %" PRIu64 " (%s offset %" PRIu64 ") was not noticed", seq, path, at);
	CHECK(strstr(err, base) != NULL, "the refusal does not name the file: %s", err);
	CHECK(pwrite(fd, &b, 1, (off_t)at) == 1, "pwrite");   /* the operator restores the byte */
	close(fd);
	S.st_flips++;
	if (S.verbose)
		printf("sim: flip in batch %" PRIu64 " refused: %s\n", seq, err);
}

/* The process died (kill -9, a crash mid-append, ENOSPC): recover as
 * flashsaled does and check that nothing acknowledged is lost. `inflight`
 * is the batch whose append failed (never answered), or NULL. */
static void crash_recover(const struct fs_cmd *in, const uint8_t *served, uint32_t n,
                          const struct wr_batch_out *inflight, int64_t t_in)
{
	S.st_crashes++;
	jr_close(S.j);
	S.j = NULL;
	wr_state_free(S.st);
	S.st = NULL;
	for (uint32_t i = 0; i < PAY_SLOTS; i++)   /* the payment thread dies too */
		S.pay[i].used = 0;
	clients_lose_answers();

	/* the real start-up: wr_open replays, checks, truncates a torn tail */
	struct fs_snapshot *snap = xcalloc(1, sizeof *snap);
	struct wr_config wc = { .data_dir = S.data, .limits = S.lim, .batch_count_max = 64, .port_count = 2,
	                        .ring_slots = 64, .segment_bytes = SEG_BYTES, .charge_slots = 4096,
	                        .retention_ms = (uint64_t)S.retention_ms, .no_sync = 1, .quiet = 1 };
	if (chance(250))
		flip_and_expect_refusal(&wc, snap);
	char err[512];
	struct writer *w = wr_open(&wc, snap, err, sizeof err);
	CHECK(w != NULL, "start-up after a crash failed: %s", err);
	uint64_t last = atomic_load(wr_durable_seq(w));
	CHECK(last == S.acked_seq || (inflight != NULL && last == S.acked_seq + 1),
	      "recovered up to batch %" PRIu64 ", acknowledged %" PRIu64 "%s", last, S.acked_seq,
	      inflight ? " (+1 in flight)" : "");
	if (last == S.acked_seq + 1) {   /* the unanswered batch made it: it counts */
		dur_apply(inflight->records, inflight->records_len, inflight->record_count, t_in);
		hist_add(in, served, n, t_in);
		S.acked_seq = last;
		S.st_inflight_survived++;
	}
	model_rebuild();
	/* the published snapshot is the durable state */
	for (uint32_t s = 0; s < wr_sku_count(S.dur); s++) {
		struct wr_sku_view v;
		wr_sku_view(S.dur, s, &v);
		if (v.name_len == 0)
			continue;   /* an archived sale's free slot publishes nothing */
		int idx = fs_snap_find(snap, v.name, v.name_len);
		CHECK(idx >= 0, "snapshot lacks %.*s", v.name_len, v.name);
		struct fs_sku_read r;
		fs_snap_read(snap, idx, &r);
		CHECK(r.total == v.total && r.available == v.available && r.reserved == v.reserved && r.sold == v.sold,
		      "snapshot of %.*s after recovery differs from the durable state", v.name_len, v.name);
	}
	/* orders PENDING at the crash are re-charged, each once, with its key */
	struct wr_charge ch;
	uint64_t pending_model = 0, handed = 0;
	for (uint64_t o = 1; o <= model_order_count(S.m); o++)
		pending_model += model_order_status(S.m, o) == FS_ORDER_PENDING;
	while (fs_ring_dequeue_burst(wr_charge_ring(w), &ch, 1) == 1) {
		CHECK(model_order_status(S.m, ch.order_no) == FS_ORDER_PENDING, "re-charge of order %" PRIu64
		      " that is not PENDING", ch.order_no);
		pay_take(&ch);
		handed++;
	}
	CHECK(handed == pending_model, "%" PRIu64 " orders re-charged, %" PRIu64 " PENDING", handed, pending_model);
	S.st_recharged += handed;
	wr_close(w);
	free(snap);

	/* the simulation's writer continues from its own replay of the same journal */
	S.st = wr_state_new(&S.lim);
	CHECK(S.st != NULL, "wr_state_new");
	struct jr_config jc = { .dir = S.jdir, .segment_bytes = SEG_BYTES, .io = &S.io };
	S.j = jr_open(&jc, replay_cb, NULL, err, sizeof err);
	CHECK(S.j != NULL, "jr_open after recovery: %s", err);
	wr_state_set_retention(S.st, S.retention_ms);   /* after replay, as wr_open does */
	CHECK(jr_last_seq(S.j) == S.acked_seq, "second open sees batch %" PRIu64 ", first %" PRIu64,
	      jr_last_seq(S.j), S.acked_seq);
	CHECK(wr_state_digest(S.st) == wr_state_digest(S.dur), "recovered state differs from the durable prefix");
	check_counters(S.st, "after recovery");
	check_acks();
	check_charges();
	wr_admission_free(S.adm);   /* admission is volatile: a restart refills every bucket */
	admission_new();
	memset(S.admitted, 0, sizeof S.admitted);
	S.bucket_born = S.t;
	sink_reopen();
	S.t += 200 + rnd(2000);   /* the restart takes a while */
}

static uint32_t pay_in_use(void)
{
	uint32_t n = 0;
	for (uint32_t i = 0; i < PAY_SLOTS; i++)
		n += S.pay[i].used;
	return n;
}

/* The writer's admission with the risk scoring out of reach (the reference
 * model has no risk flags): buckets per tier, the payment capacity. */
static void admission_new(void)
{
	struct wr_admission_config ac = { .user_count_max = 256, .charge_capacity = PAY_SLOTS / 2,
	                                  .risk_regular_streak = UINT32_MAX, .risk_device_users = UINT32_MAX,
	                                  .risk_ip_users = UINT32_MAX };
	S.adm = wr_admission_new(&ac, NULL);
	CHECK(S.adm != NULL, "wr_admission_new");
}

/* Admission the state machine does not own (writer/admission.c): refused
 * commands are answered at once and never reach the decide step. */
static int admit(struct wr_admission_batch *ab, struct fs_cmd *c)
{
	struct fs_ans refusal;
	memset(&refusal, 0, sizeof refusal);
	int ok = wr_admit(S.adm, ab, S.st, c, &refusal);
	int u = user_index(c);
	if (ok && c->type == FS_CMD_RESERVE && u >= 0) {
		int tier = c->claim_tier ? c->claim_tier - 1 : wr_sku_default_tier(S.st, c->sku, c->sku_len);
		if (tier < 0)
			tier = 4;
		S.admitted[u]++;
		uint64_t rate = fr_tier_rate_per_min(tier);
		uint64_t bound = rate + rate * (uint64_t)(S.t - S.bucket_born) / 60000 + 1;
		CHECK(tier == 0 || S.admitted[u] <= bound, "user %u admitted %u times, bucket allows %" PRIu64,
		      u, S.admitted[u], bound);
	}
	if (ok)
		return 1;
	CHECK(refusal.http == 429 || refusal.http == 503, "admission refused with %u", refusal.http);
	CHECK(refusal.http != 429 || refusal.expires_at_ms > 0, "429 without retry_after");
	refusal.tag = c->tag;
	deliver(&refusal);
	S.st_429 += refusal.http == 429;
	return 0;
}

static void writer_batch(void)
{
	uint32_t n = wr_due(S.st, S.t, S.cmds, DUE_MAX);
	const char *why = model_due_check(S.m, S.t, S.cmds, n, DUE_MAX);
	CHECK(why == NULL, "wr_due: %s", why);
	for (uint32_t i = 0; i < n; i++) {
		S.cmds[i].origin = ORIGIN_NONE;
		S.cmds[i].tag = ++S.tag;   /* answers are matched by tag */
	}
	struct wr_admission_batch ab;
	wr_admission_batch(S.adm, &ab, S.t, jr_bytes(S.j), pay_in_use());
	uint32_t take = 0;
	while (take < S.pend_n && n < CMD_MAX) {
		struct fs_cmd *c = &S.pend[take++];
		if (admit(&ab, c))
			S.cmds[n++] = *c;
	}
	struct fs_cmd flags[4];
	CHECK(wr_admission_flags(S.adm, flags, 4) == 0, "a risk flag with risk scoring off");
	memmove(S.pend, S.pend + take, (S.pend_n - take) * sizeof *S.pend);
	S.pend_n -= take;
	if (n == 0)
		return;
	memcpy(S.input, S.cmds, n * sizeof *S.cmds);
	for (uint32_t i = 0; i < n; i++)
		model_decide(S.m, &S.input[i], S.t, &S.eff[i]);
	wr_decide(S.st, S.cmds, n, S.t, 0, &S.out);
	uint8_t served[CMD_MAX];
	check_batch(n, served);
	check_counters(S.st, "after a batch");
	S.st_batches++;
	S.st_cmds += n;
	for (uint32_t i = 0; i < n; i++) {
		S.st_reclaims += S.cmds[i].type == FS_CMD_RECLAIM && S.cmds[i].err == FS_OK;
		S.st_archives += S.cmds[i].type == FS_CMD_SALE_ARCHIVE && S.cmds[i].err == FS_OK;
	}
	int64_t t_batch = S.t;
	if (S.out.record_count > 0) {
		pick_fault();
		uint64_t seq = jr_append(S.j, S.t, S.out.record_count, S.out.records, S.out.records_len);
		if (seq == 0) {
			S.st_torn += S.fault == FAULT_TORN;
			S.st_unacked += S.fault == FAULT_UNACKED;
			S.st_enospc += S.fault == FAULT_ENOSPC;
			CHECK(S.fault != FAULT_NONE, "jr_append failed without a fault: %s", strerror(errno));
			crash_recover(S.input, served, n, &S.out, S.t);
			return;
		}
		CHECK(seq == S.acked_seq + 1, "journal sequence %" PRIu64 " after %" PRIu64, seq, S.acked_seq);
		S.acked_seq = seq;
		dur_apply(S.out.records, S.out.records_len, S.out.record_count, S.t);
		if (chance(15))
			snapshot_take(S.t);
		if (S.fsync_ms >= 20)
			S.st_slow_fsync++;
		S.t += S.fsync_ms;   /* the fsync took this long: the next batch is later */
	}
	hist_add(S.input, served, n, t_batch);
	if (S.st_batches % 8 == 0)
		CHECK(wr_state_digest(S.st) == wr_state_digest(S.dur), "live state differs from its replay");
	/* invariant 3: answers and charges leave only now */
	for (uint32_t i = 0; i < S.out.answer_count; i++)
		if (S.out.answers[i].origin != ORIGIN_NONE)
			deliver(&S.out.answers[i].ans);
	for (uint32_t i = 0; i < S.out.charge_count; i++)
		pay_take(&S.out.charges[i]);
}

/* ---- one seed ------------------------------------------------------------------------------- */

/* Open file descriptors of this process: a restart must not leak any. */
static uint32_t fd_count(void)
{
	uint32_t n = 0;
	char link[64], path[64];
	for (int fd = 0; fd < 65536; fd++) {
		snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
		if (readlink(link, path, sizeof path) > 0)
			n++;
	}
	return n;
}

static void run_seed(uint64_t seed, uint64_t ticks, int verbose, const char *base)
{
	uint32_t fds_before = fd_count();
	memset(&S, 0, sizeof S);
	S.seed = seed;
	S.rng = seed;
	S.ticks = ticks;
	S.verbose = verbose;
	snprintf(S.root, sizeof S.root, "%s/sim-%" PRIu64 "-XXXXXX", base, seed);
	CHECK(mkdtemp(S.root) != NULL, "mkdtemp %s: %s", S.root, strerror(errno));
	snprintf(S.data, sizeof S.data, "%s", S.root);
	snprintf(S.jdir, sizeof S.jdir, "%s/journal", S.root);
	S.io.write_sync = sim_write_sync;
	S.lim = (struct wr_limits){ .sku_count_max = 8, .user_count_max = 128, .reservation_count_max = 6000,
	                            .order_count_max = 3000, .idem_count_max = 20000, .holding_count_max = 400,
	                            .quantity_max = 3 };
	S.st = wr_state_new(&S.lim);
	S.dur = wr_state_new(&S.lim);
	S.m = model_new(&S.lim);
	S.retention_ms = rnd(3) == 0 ? 0 : 2000 + rnd(60000);   /* reclaim ended rows in 2 of 3 seeds */
	/* odd seeds with retention: sales are closed, archived and created again
	 * (no draw from the stream: the other seeds run as before) */
	S.lifetime = !g_no_lifetime && S.retention_ms > 0 && (seed & 1);
	CHECK(S.st && S.dur && S.m, "allocation");
	wr_state_set_retention(S.st, S.retention_ms);
	model_set_retention(S.m, S.retention_ms);
	admission_new();
	CHECK(S.st && S.dur && S.m, "allocation");
	out_init(&S.out, CMD_MAX);
	out_init(&S.rout, CMD_MAX * 6);
	S.reqs = xcalloc(REQ_CAP, sizeof *S.reqs);
	S.ack_res = xcalloc(KEY_MAX, sizeof *S.ack_res);
	S.key_user = xcalloc(KEY_MAX, 1);
	S.ack_order = xcalloc(S.lim.order_count_max + 2, 1);
	S.ledger = xcalloc(S.lim.order_count_max + 2, 1);
	S.sink_recs = xcalloc(JR_BODY_BYTES_MAX / WR_REC_FIXED_BYTES + 1, sizeof *S.sink_recs);
	CHECK(sm_init(&S.sm, 1) == 0, "sm_init");
	S.t = 1700000000000LL + rnd(1000000000);
	S.bucket_born = S.t;
	journal_open();
	sink_reopen();

	/* the sales */
	for (uint32_t s = 0; s < SKUS; s++) {
		snprintf(S.sku[s], sizeof S.sku[s], "sku%u", s);
		struct fs_cmd c;
		tc_create(&c, S.sku[s], 5 + rnd(40), rnd(3), 3000 + rnd(20000), rnd(2) ? 0 : 1 + rnd(8));
		c.sale.price_cents = 100 + rnd(5000);
		c.origin = ORIGIN_ADMIN;
		client_send(&c, 0);
		tc_admin(&c, FS_CMD_SALE_OPEN, S.sku[s]);
		c.origin = ORIGIN_ADMIN;
		client_send(&c, 0);
	}
	for (uint64_t tick = 0; tick < S.ticks; tick++) {
		uint32_t p = rnd(100);
		S.t += p < 40 ? 0 : p < 80 ? 1 + rnd(50) : p < 97 ? 50 + rnd(1000) : 1000 + rnd(10000);
		uint32_t arrivals = rnd(100) < 10 ? 20 + rnd(40) : rnd(6);   /* bursts */
		for (uint32_t i = 0; i < arrivals; i++)
			gen_client();
		if (chance(15))
			gen_admin();
		if (S.lifetime && chance(8))
			gen_lifetime(S.sku[rnd(SKUS)]);
		pay_advance();
		if (chance(4)) {   /* kill -9 between batches */
			S.st_kills++;
			crash_recover(NULL, NULL, 0, NULL, 0);
			continue;
		}
		writer_batch();
		sink_step(0);
		if (tick % 64 == 0)
			check_charges();
	}
	/* drain: payments settle, the sink catches up, a last restart loses nothing */
	for (int i = 0; i < 400; i++) {
		S.t += 100;
		pay_advance();
		writer_batch();
	}
	sink_step(1);
	S.st_kills++;
	crash_recover(NULL, NULL, 0, NULL, 0);
	sink_step(1);
	check_charges();

	jr_close(S.j);
	if (S.reader)
		jr_reader_close(S.reader);
	wr_state_free(S.st);
	wr_state_free(S.dur);
	model_free(S.m);
	wr_admission_free(S.adm);
	sm_free(&S.sm);
	out_free(&S.out);
	out_free(&S.rout);
	free(S.reqs);
	free(S.ack_res);
	free(S.key_user);
	free(S.ack_order);
	free(S.ledger);
	free(S.sink_recs);
	free(S.h_cmds);
	free(S.h_served);
	free(S.h);
	free(S.paths);
	free(S.loc);
	uint32_t fds_after = fd_count();
	CHECK(fds_after == fds_before, "%u file descriptors open after the run, %u before: %" PRIu64
	      " restarts leaked %u", fds_after, fds_before, S.st_crashes, fds_after - fds_before);
	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", S.root);
	if (system(cmd) != 0)
		fprintf(stderr, "sim: could not remove %s\n", S.root);
}

/* ---- main ------------------------------------------------------------------------------------- */

struct totals {
	uint64_t seeds, batches, cmds, crashes, kills, torn, unacked, enospc, flips, slow, retries, repeats;
	uint64_t r429, paid, dups, pay_err, kept_pending, sink_batches, sink_dups, sink_restarts, recharged, survived;
	uint64_t snapshots, reclaims, archives;
};

int main(int argc, char **argv)
{
	uint64_t seed = 0, seeds = 1, ticks = 3000;
	uint64_t list[64];
	uint32_t list_n = 0;
	int have_seed = 0, verbose = 0;
	/* the simulated disk needs no real one: memory is faster (the journal
	 * still fsyncs its directory and new segments) */
	const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--seed") == 0 && i + 1 < argc) {
			seed = strtoull(argv[++i], NULL, 0);
			have_seed = 1;
		} else if (strcmp(argv[i], "--seed-list") == 0 && i + 1 < argc) {
			for (char *p = argv[++i]; *p && list_n < 64; p += *p == ',') {
				char *end;
				list[list_n++] = strtoull(p, &end, 0);
				if (end == p) {
					fprintf(stderr, "sim: --seed-list wants S1,S2,...\n");
					return 2;
				}
				p = end;
			}
			have_seed = 1;
		} else if (strcmp(argv[i], "--seeds") == 0 && i + 1 < argc) {
			seeds = strtoull(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--ticks") == 0 && i + 1 < argc) {
			ticks = strtoull(argv[++i], NULL, 0);
		} else if (strcmp(argv[i], "--dir") == 0 && i + 1 < argc) {
			base = argv[++i];
		} else if (strcmp(argv[i], "-v") == 0) {
			verbose = 1;
		} else if (strcmp(argv[i], "--no-lifetime") == 0) {
			g_no_lifetime = 1;
		} else {
			fprintf(stderr, "usage: sim [--seed S] [--seeds N] [--seed-list S1,S2,...] [--ticks T] [--dir D] [--no-lifetime] [-v]\n");
			return 2;
		}
	}
	if (!have_seed) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec;
	}
	struct totals T = { 0 };
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	if (list_n > 0) {
		seeds = list_n;
		seed = list[0];
	}
	for (uint64_t k = 0; k < seeds; k++) {
		uint64_t s = list_n > 0 ? list[k] : seed + k;
		printf("sim: seed=%" PRIu64 "\n", s);
		fflush(stdout);
		run_seed(s, ticks, verbose, base);
		T.seeds++;
		T.batches += S.st_batches; T.cmds += S.st_cmds; T.crashes += S.st_crashes; T.kills += S.st_kills;
		T.torn += S.st_torn; T.unacked += S.st_unacked; T.enospc += S.st_enospc; T.flips += S.st_flips;
		T.slow += S.st_slow_fsync; T.retries += S.st_retries; T.repeats += S.st_repeat_checked;
		T.r429 += S.st_429; T.paid += S.st_paid; T.dups += S.st_pay_dup; T.pay_err += S.st_pay_err;
		T.kept_pending += S.st_kept_pending; T.sink_batches += S.st_sink_batches;
		T.sink_dups += S.st_sink_dups; T.sink_restarts += S.st_sink_restarts; T.recharged += S.st_recharged;
		T.survived += S.st_inflight_survived;
		T.snapshots += S.st_snapshots;
		T.reclaims += S.st_reclaims;
		T.archives += S.st_archives;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double secs = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("sim: %" PRIu64 " seeds from %" PRIu64 " OK in %.1f s: %" PRIu64 " batches, %" PRIu64 " commands\n",
	       T.seeds, seed, secs, T.batches, T.cmds);
	printf("sim: faults: %" PRIu64 " restarts (%" PRIu64 " kill -9 between batches, %" PRIu64 " torn appends, %" PRIu64
	       " complete but unanswered, %" PRIu64 " ENOSPC; %" PRIu64 " in-flight batches survived), %" PRIu64
	       " bit flips refused, %" PRIu64 " slow fsyncs\n", T.crashes, T.kills, T.torn, T.unacked, T.enospc,
	       T.survived, T.flips, T.slow);
	printf("sim: clients: %" PRIu64 " retries, %" PRIu64 " repeats answered with the original reservation, %" PRIu64
	       " rate-limited; payments: %" PRIu64 " paid answers, %" PRIu64 " provider errors retried, %" PRIu64
	       " duplicate outcomes, %" PRIu64 " re-charged after a restart, %" PRIu64 " orders kept PENDING past their"
	       " last attempt (may have charged), 0 charged-but-FAILED\n",
	       T.retries, T.repeats, T.r429, T.paid, T.pay_err, T.dups, T.recharged, T.kept_pending);
	printf("sim: lifetime: %" PRIu64 " snapshots taken (start-ups load the newest and replay the tail), %" PRIu64
	       " reclaims journaled (retention), %" PRIu64 " sales archived (and created again)\n", T.snapshots,
	       T.reclaims, T.archives);
	printf("sim: sink: %" PRIu64 " batches applied, %" PRIu64 " duplicates skipped, %" PRIu64 " restarts\n",
	       T.sink_batches, T.sink_dups, T.sink_restarts);
	return 0;
}
