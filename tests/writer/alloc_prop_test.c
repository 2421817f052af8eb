/* alloc_prop_test.c - randomized property test of the decide step against
 * the reference model (tests/writer/model.c).
 *
 * Random batches of commands (few SKUs with small stock, few users, small
 * tables, per-user limits, waitlists, random time advances, random due
 * processing with wr_due, checkouts and payment outcomes, plus garbage:
 * unknown SKUs and references, other users' reservations, reused keys,
 * late duplicates) go through wr_decide() and through the model. After every
 * batch it compares:
 *  - every answer (routing origin and tag, HTTP status, error, body kind,
 *    reservation and order numbers and statuses, quantity, expiry, amount,
 *    paid_at, SKU counters; waitlist positions as API.md promises them);
 *  - the journal records: exactly the commands the model says change state,
 *    in order, each with the OUT fields the model expects, each followed by
 *    exactly the model's PROMOTE records;
 *  - the charges checkouts ask for;
 *  - every SKU's published state and counters, and the table usage;
 *  - wr_due()'s output (due, ordered, complete) before the batch;
 *  - replay: the records go, batch by batch, through a second state with
 *    replay=1, which must regenerate them byte for byte; state digests of
 *    the two are compared every 16 batches and at the end of an epoch.
 * A run is a series of epochs (fresh state, fresh model), each
 * FS_PROP_EPOCH commands long (default 6000), so tables fill up (503
 * overloaded) and start over.
 *
 * Environment: FS_SEED (default: the time; printed as seed=N),
 * FS_PROP_STEPS (commands, default 400000), FS_PROP_EPOCH,
 * FS_PROP_PAY_INVALID=0 to stop sending FS_PAY_INVALID payment outcomes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fs_cmd.h"
#include "writer/alloc.h"
#include "writer/record.h"
#include "tests/writer/model.h"

#define BATCH_MAX   48u
#define DUE_MAX     64u
#define CMD_MAX     (BATCH_MAX + DUE_MAX)
#define USER_POOL   40u
#define RING        64u
#define ORIGIN_NONE 0xffu

struct prop {
	uint64_t seed, rng;
	uint64_t steps, epoch_len;
	int pay_invalid;
	/* per epoch */
	struct wr_limits lim;
	struct wr_state *st, *rst;
	struct model *m;
	struct wr_batch_out out, rout;
	struct fs_cmd cmds[CMD_MAX], input[CMD_MAX], rcmds[CMD_MAX * 6];
	struct m_effect eff[CMD_MAX];
	uint32_t *orig_pos;            /* [res_no]: position in the first (202) answer */
	int64_t t;
	uint64_t tag, key_seq;
	struct fs_cmd recent_res[RING], recent_co[RING];
	uint32_t recent_res_n, recent_co_n;
	char sku_names[M_SKU_MAX][8];
	uint32_t sku_names_n;
	/* progress */
	uint64_t done, epoch, batch;
	uint64_t stat_ans[FS_ERR_COUNT], stat_promote, stat_wait, stat_paid, stat_expire, stat_serve, stat_reclaim, stat_refund, stat_archive;
	uint64_t stat_users_gone;   /* users reclaimed (live users fell after a batch) */
	uint32_t users_before;
};

static struct prop P;

/* ---- randomness ------------------------------------------------------------- */

static uint64_t rnd64(void)
{
	uint64_t z = (P.rng += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rnd(uint32_t n) { return n ? (uint32_t)(rnd64() % n) : 0; }
static int chance(uint32_t percent) { return rnd(100) < percent; }

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

/* ---- failure reports ---------------------------------------------------------- */

static void dump_cmd(const char *what, uint32_t i, const struct fs_cmd *c)
{
	fprintf(stderr, "  %s[%u] %-14s origin=%u tag=%llu sku=%.*s user=%.*s key=%.*s text=%.*s q=%u ref=%llu pay=%u\n",
	        what, i, fs_cmd_type_name((enum fs_cmd_type)c->type), c->origin, (unsigned long long)c->tag,
	        c->sku_len, c->sku, c->user_len, c->user, c->key_len, c->key, c->text_len, c->text,
	        c->quantity, (unsigned long long)c->ref, c->pay);
}

static void dump_ans(const char *what, uint8_t origin, const struct fs_ans *a)
{
	fprintf(stderr, "  %s: origin=%u tag=%llu http=%u err=%s body=%u res=%llu/%s order=%llu/%s reason=%u q=%u "
	        "pos=%u exp=%lld paid=%lld amount=%lld sale[st=%u t=%llu a=%llu r=%llu s=%llu v=%llu]\n",
	        what, origin, (unsigned long long)a->tag, a->http, fs_err_name((enum fs_err)a->err), a->body,
	        (unsigned long long)a->res_no, fs_res_status_name((enum fs_res_status)a->res_status),
	        (unsigned long long)a->order_no, fs_order_status_name((enum fs_order_status)a->order_status),
	        a->reason, a->quantity, a->position, (long long)a->expires_at_ms, (long long)a->paid_at_ms,
	        (long long)a->amount_cents, a->state, (unsigned long long)a->total,
	        (unsigned long long)a->available, (unsigned long long)a->reserved, (unsigned long long)a->sold,
	        (unsigned long long)a->version);
}

static void dump_batch(uint32_t n)
{
	fprintf(stderr, "batch (t=%lld):\n", (long long)P.t);
	for (uint32_t i = 0; i < n; i++)
		dump_cmd("cmd", i, &P.input[i]);
}

#define FAIL(n, ...) do {                                                              \
		dump_batch(n);                                                         \
		fprintf(stderr, "seed=%llu epoch=%llu batch=%llu step=%llu: ",        \
		        (unsigned long long)P.seed, (unsigned long long)P.epoch,       \
		        (unsigned long long)P.batch, (unsigned long long)P.done);      \
		fail_msg(__VA_ARGS__);                                                 \
	} while (0)

/* ---- set-up ---------------------------------------------------------------------- */

static void out_init(struct wr_batch_out *o, uint32_t n, uint32_t sku_max)
{
	memset(o, 0, sizeof *o);
	o->answer_count_max = 5 * n;
	o->answers = calloc(o->answer_count_max, sizeof *o->answers);
	o->records_cap = wr_batch_records_cap(n, sku_max);   /* as writer.c sizes it */
	o->records = malloc(o->records_cap);
	o->charges = calloc(n, sizeof *o->charges);
	o->sku_touched = calloc(sku_max, sizeof(uint32_t));
	assert_true(o->answers && o->records && o->charges && o->sku_touched);
}

static void out_free(struct wr_batch_out *o)
{
	free(o->answers);
	free(o->records);
	free(o->charges);
	free(o->sku_touched);
}

static void epoch_begin(void)
{
	P.users_before = 0;   /* a fresh state: no user went */
	struct wr_limits *l = &P.lim;
	int tight = chance(50);          /* tables that fill up (503 overloaded), or roomy ones */
	l->sku_count_max = 6;
	l->user_count_max = tight ? 32 : USER_POOL;   /* of a pool of 40: new users refused */
	l->reservation_count_max = tight ? 700 : 6000;
	l->order_count_max = tight ? 220 : 6000;
	l->idem_count_max = tight ? 820 : 12000;
	l->holding_count_max = tight ? 90 : 6 * USER_POOL;
	l->quantity_max = 3;
	P.st = wr_state_new(l);
	P.rst = wr_state_new(l);
	P.m = model_new(l);
	assert_true(P.st && P.rst && P.m);
	out_init(&P.out, CMD_MAX, l->sku_count_max);
	out_init(&P.rout, CMD_MAX * 6, l->sku_count_max);
	/* retention: off, or short enough to reclaim within an epoch (the
	 * replayed state rst has none: it follows the journaled RECLAIMs) */
	int64_t retention = chance(50) ? 0 : 1 + (int64_t)rnd(20000);
	wr_state_set_retention(P.st, retention);
	model_set_retention(P.m, retention);
	P.orig_pos = calloc(l->reservation_count_max + P.epoch_len + 1, sizeof *P.orig_pos);
	assert_non_null(P.orig_pos);
	P.t = 1700000000000LL + (int64_t)rnd(1000000);
	P.recent_res_n = P.recent_co_n = 0;
	P.sku_names_n = 0;
}

static void epoch_end(void)
{
	if (wr_state_digest(P.st) != wr_state_digest(P.rst))
		fail_msg("seed=%llu epoch=%llu: replayed state digest differs at the end of the epoch",
		         (unsigned long long)P.seed, (unsigned long long)P.epoch);
	wr_state_free(P.st);
	wr_state_free(P.rst);
	model_free(P.m);
	out_free(&P.out);
	out_free(&P.rout);
	free(P.orig_pos);
	P.epoch++;
}

/* ---- the workload --------------------------------------------------------------- */

static void pick_user(char *buf, size_t cap)
{
	snprintf(buf, cap, "user-%u", rnd(USER_POOL));
}

static const char *pick_sku(void)
{
	if (P.sku_names_n == 0 || chance(3))
		return "no-such-sku";
	return P.sku_names[rnd(P.sku_names_n)];
}

/* A reservation number, preferring one whose status is in `want` (a mask of
 * 1 << status); sometimes out of range. */
static uint64_t pick_res(uint32_t want)
{
	uint64_t n = model_res_count(P.m);
	if (n == 0 || chance(3))
		return rnd(3) == 0 ? 0 : n + 1 + rnd(3);
	uint64_t r = 1 + rnd((uint32_t)n);
	for (int i = 0; i < 6; i++) {
		if (want & (1u << model_res_status(P.m, r)))
			break;
		r = 1 + rnd((uint32_t)n);
	}
	return r;
}

/* The owner of res_no most of the time, someone else otherwise. */
static void owner_or_other(uint64_t res_no, uint32_t owner_percent, struct fs_cmd *c)
{
	if (res_no >= 1 && res_no <= model_res_count(P.m) && chance(owner_percent)) {
		uint8_t len;
		const char *u = model_res_user(P.m, res_no, &len);
		memcpy(c->user, u, len);
		c->user_len = len;
		return;
	}
	char user[24];
	pick_user(user, sizeof user);
	tc_set(c->user, &c->user_len, FS_ID_LEN_MAX, user);
}

static void remember(struct fs_cmd *ring, uint32_t *n, const struct fs_cmd *c)
{
	ring[*n % RING] = *c;
	(*n)++;
}

static void gen_reserve(struct fs_cmd *c)
{
	if (P.recent_res_n != 0 && chance(15)) {   /* a repeat, sometimes a misuse of the key */
		*c = P.recent_res[rnd(P.recent_res_n < RING ? P.recent_res_n : RING)];
		c->tag = 0;
		if (chance(20))
			c->quantity = 1 + rnd(P.lim.quantity_max);
		if (chance(10))
			tc_set(c->sku, &c->sku_len, FS_SKU_LEN_MAX, pick_sku());
		return;
	}
	char user[24], key[24];
	pick_user(user, sizeof user);
	if (chance(1))
		user[0] = '\0';
	snprintf(key, sizeof key, "k%llu", (unsigned long long)++P.key_seq);
	if (chance(1))
		key[0] = '\0';
	uint32_t p = rnd(100), q = p < 70 ? 1 : p < 90 ? 2 : p < 97 ? 3 : p < 99 ? 0 : P.lim.quantity_max + 1;
	tc_reserve(c, pick_sku(), user, key, q);
	if (chance(20))
		tc_set(c->text, &c->text_len, FS_ID_LEN_MAX, "device-1");
	remember(P.recent_res, &P.recent_res_n, c);
}

static void gen_checkout(struct fs_cmd *c)
{
	if (P.recent_co_n != 0 && chance(25)) {
		*c = P.recent_co[rnd(P.recent_co_n < RING ? P.recent_co_n : RING)];
		c->tag = 0;
		if (chance(20))
			c->ref = pick_res(1u << FS_RES_RESERVED);
		return;
	}
	static const char *tokens[4] = { "tok_ok_1", "tok_decline", "tok_down", "visa_4242" };
	char key[24];
	snprintf(key, sizeof key, "c%llu", (unsigned long long)++P.key_seq);
	if (chance(2))
		key[0] = '\0';
	uint64_t r = pick_res(1u << FS_RES_RESERVED);
	if (chance(25))   /* the hold closest to its deadline: checkout vs expiry */
		model_next_expiry(P.m, &r);
	tc_checkout(c, "x", key, r, chance(1) ? "" : tokens[rnd(4)]);
	owner_or_other(r, 92, c);
	remember(P.recent_co, &P.recent_co_n, c);
}

static void gen_pay(struct fs_cmd *c)
{
	uint64_t n = model_order_count(P.m);
	uint64_t o = n ? 1 + rnd((uint32_t)n) : 1;
	for (int i = 0; i < 6 && n; i++) {
		if (model_order_status(P.m, o) == FS_ORDER_PENDING)
			break;
		o = 1 + rnd((uint32_t)n);
	}
	if (chance(2))
		o = n + 1 + rnd(3);
	uint32_t p = rnd(100);
	uint8_t pay = p < 52 ? FS_PAY_OK : p < 74 ? FS_PAY_DECLINED : p < 88 ? FS_PAY_ERROR :
	              p < 97 ? FS_PAY_INVALID : (rnd(2) ? 0 : 9);
	if (pay == FS_PAY_INVALID && !P.pay_invalid)
		pay = FS_PAY_DECLINED;
	tc_pay(c, o, pay);
	c->origin = 9;   /* the payment thread's ring */
}

/* flashctl order refund (mostly of a PAID order, sometimes a repeat or a
 * wrong one), and the payment thread's outcome of a refund in flight. */
static void gen_refund(struct fs_cmd *c)
{
	uint64_t n = model_order_count(P.m);
	uint64_t o = n ? 1 + rnd((uint32_t)n) : 1;
	for (int i = 0; i < 6 && n && model_order_status(P.m, o) != FS_ORDER_PAID; i++)
		o = 1 + rnd((uint32_t)n);
	tc_reset(c, FS_CMD_REFUND);
	c->ref = chance(2) ? n + 1 + rnd(3) : o;
	c->quantity = chance(5) ? 2 : rnd(2);   /* restock, or a bad value */
	tc_set(c->key, &c->key_len, FS_ID_LEN_MAX, "uid:0");
}

static void gen_refund_result(struct fs_cmd *c)
{
	uint64_t n = model_order_count(P.m);
	uint64_t o = n ? 1 + rnd((uint32_t)n) : 1;
	for (int i = 0; i < 8 && n && model_order_status(P.m, o) != FS_ORDER_REFUNDING; i++)
		o = 1 + rnd((uint32_t)n);
	uint32_t p = rnd(100);
	tc_pay(c, o, p < 70 ? FS_PAY_OK : p < 85 ? FS_PAY_DECLINED : p < 97 ? FS_PAY_ERROR : 9);
	c->type = FS_CMD_REFUND_RESULT;
	c->origin = 9;   /* the payment thread's ring */
}

static void gen_create(struct fs_cmd *c, int must_work)
{
	char name[8];
	int fresh = must_work || chance(60);
	if (fresh)
		snprintf(name, sizeof name, "s%u", P.sku_names_n);
	else
		snprintf(name, sizeof name, "%s", P.sku_names_n ? P.sku_names[rnd(P.sku_names_n)] : "s0");
	uint32_t per_user = chance(50) ? 0 : 1 + rnd(3);
	uint32_t waitlist = chance(30) ? 0 : 1 + rnd(12);
	tc_create(c, name, 1 + rnd(12), per_user, 300 + rnd(2700), waitlist);
	c->sale.price_cents = rnd(5000);
	if (chance(25))
		c->sale.opens_at_ms = P.t + rnd(5000);
	if (!must_work && chance(10)) {   /* bad arguments */
		switch (rnd(4)) {
		case 0: c->sale.hold_ms = 0; break;
		case 1: c->sale.default_tier = 5; break;
		case 2: c->sale.price_cents = -1; break;
		default: c->sku_len = 0; break;
		}
	}
}

static void gen_one(struct fs_cmd *c)
{
	uint32_t p = rnd(1000);
	char user[24];
	if (p < 340) {
		gen_reserve(c);
	} else if (p < 440) {
		uint64_t r = pick_res(1u << FS_RES_RESERVED | 1u << FS_RES_WAITLISTED);
		tc_cancel(c, "x", r);
		owner_or_other(r, 85, c);
	} else if (p < 580) {
		gen_checkout(c);
	} else if (p < 700) {
		gen_pay(c);
	} else if (p < 720) {
		tc_reset(c, FS_CMD_EXPIRE);
		c->ref = pick_res(1u << FS_RES_RESERVED);
	} else if (p < 760) {
		uint64_t r = pick_res(0xff);
		tc_get(c, FS_CMD_RES_GET, "x", r);
		owner_or_other(r, 80, c);
	} else if (p < 790) {
		pick_user(user, sizeof user);
		tc_get(c, FS_CMD_ORDER_GET, user, 1 + rnd((uint32_t)model_order_count(P.m) + 2));
	} else if (p < 800) {
		tc_admin(c, FS_CMD_SALE_GET, pick_sku());
	} else if (p < 845) {
		uint32_t v = rnd(1000);
		uint8_t verb = v < 250 ? FS_CMD_SALE_OPEN : v < 330 ? FS_CMD_SALE_PAUSE : v < 380 ? FS_CMD_SALE_FREEZE :
		               v < 700 ? FS_CMD_SALE_RESUME : v < 701 ? FS_CMD_SALE_CLOSE :
		               v < 880 ? FS_CMD_STOCK_ADD : FS_CMD_STOCK_REMOVE;
		tc_admin(c, verb, pick_sku());
		if (verb == FS_CMD_STOCK_ADD || verb == FS_CMD_STOCK_REMOVE)
			c->quantity = chance(20) ? 5 + rnd(8) : rnd(5);
	} else if (p < 855) {
		tc_admin(c, FS_CMD_WAITLIST_SERVE, pick_sku());
	} else if (p < 860) {
		gen_create(c, 0);
	} else if (p < 863) {
		tc_reset(c, chance(50) ? FS_CMD_PROMOTE : (uint8_t)(FS_CMD_TYPE_COUNT + rnd(100)));
		c->ref = pick_res(0xff);
	} else if (p < 880) {
		gen_refund(c);
	} else if (p < 895) {
		gen_refund_result(c);
	} else if (p < 896) {   /* lifetime: a sale closes, and is archived once retention reclaimed it */
		tc_admin(c, chance(40) ? FS_CMD_SALE_CLOSE : FS_CMD_SALE_ARCHIVE, pick_sku());
	} else {
		gen_reserve(c);
	}
	if (c->origin == 0)
		c->origin = (uint8_t)(1 + rnd(4));
}

static void advance_time(void)
{
	uint32_t p = rnd(100);
	if (p < 35)
		return;
	if (p < 70)
		P.t += 1 + rnd(100);
	else if (p < 90)
		P.t += 100 + rnd(900);
	else if (p < 95)
		P.t += 1000 + rnd(3000);
	else {
		int64_t next = model_next_expiry(P.m, NULL);
		if (next != INT64_MAX) {
			int64_t to = next - (int64_t)rnd(2);   /* exactly the deadline, or 1 ms before */
			if (to > P.t)
				P.t = to;
		}
	}
}

/* ---- comparisons -------------------------------------------------------------------- */

static int is_read(uint8_t type)
{
	return type == FS_CMD_RES_GET || type == FS_CMD_ORDER_GET || type == FS_CMD_SALE_GET;
}

/* Compares got with the model's expectation; returns NULL or what differs. */
static const char *ans_diff(const struct m_ans *want, uint8_t origin, const struct fs_ans *got,
                            int version_uncertain)
{
	const struct fs_ans *w = &want->ans;
	if (origin != want->origin) return "origin";
	if (got->http != w->http) return "http";
	if (got->err != w->err) return "err";
	if (got->body != w->body) return "body";
	if (got->res_status != w->res_status) return "res_status";
	if (got->order_status != w->order_status) return "order_status";
	if (got->reason != w->reason) return "reason";
	if (got->quantity != w->quantity) return "quantity";
	if (got->res_no != w->res_no) return "res_no";
	if (got->order_no != w->order_no) return "order_no";
	if (got->expires_at_ms != w->expires_at_ms) return "expires_at_ms";
	if (got->paid_at_ms != w->paid_at_ms) return "paid_at_ms";
	if (got->amount_cents != w->amount_cents) return "amount_cents";
	if (got->state != w->state) return "state";
	if (got->total != w->total || got->available != w->available || got->reserved != w->reserved ||
	    got->sold != w->sold)
		return "sale counters";
	if (!version_uncertain && got->version != w->version) return "version";
	if (got->sku_len != w->sku_len || memcmp(got->sku, w->sku, w->sku_len) != 0) return "sku";
	switch (want->pos_rule) {
	case 0:
		if (got->position != 0) return "position (want none)";
		break;
	case 1:
		if (got->position < want->pos_min || got->position > want->pos_max)
			return "position (outside exact..joins)";
		break;
	default:
		if (got->position != P.orig_pos[w->res_no]) return "position (not the original answer's)";
		break;
	}
	return NULL;
}

static void check_batch(uint32_t n, uint32_t nd)
{
	struct wr_batch_out *o = &P.out;
	/* records and OUT fields */
	uint32_t off = 0;
	uint8_t uncertain[M_SKU_MAX] = { 0 };
	for (uint32_t i = 0; i < n; i++) {
		struct fs_cmd *c = &P.cmds[i];
		struct m_effect *e = &P.eff[i];
		int jour = e->journaled;
		if (jour < 0) {   /* a SERVE the model had nothing for */
			jour = c->err == FS_OK;
			if (jour)
				model_serve_journaled(P.m, c->sku, c->sku_len);
		}
		int got_jour = c->err == FS_OK && !is_read(c->type);
		if (jour != got_jour)
			FAIL(n, "cmd %u (%s): journaled=%d, model says %d (err %s)", i,
			     fs_cmd_type_name((enum fs_cmd_type)c->type), got_jour, jour,
			     fs_err_name((enum fs_err)c->err));
		if (!jour)
			continue;
		if (c->out_status != e->out_status || c->out_ref != e->out_ref || c->out_val != e->out_val)
			FAIL(n, "cmd %u (%s): out status/ref/val %u/%llu/%lld, model %u/%llu/%lld", i,
			     fs_cmd_type_name((enum fs_cmd_type)c->type), c->out_status,
			     (unsigned long long)c->out_ref, (long long)c->out_val, e->out_status,
			     (unsigned long long)e->out_ref, (long long)e->out_val);
		uint8_t want[WR_REC_BYTES_MAX];
		uint32_t wlen = wr_rec_encode(c, want);
		if (off + wlen > o->records_len || memcmp(o->records + off, want, wlen) != 0)
			FAIL(n, "cmd %u (%s): its record is missing or differs", i,
			     fs_cmd_type_name((enum fs_cmd_type)c->type));
		off += wlen;
		for (uint32_t k = 0; k < e->promoted_count; k++) {
			struct fs_cmd d;
			uint32_t used = off < o->records_len ? wr_rec_decode(o->records + off, o->records_len - off, &d) : 0;
			if (used == 0 || d.type != FS_CMD_PROMOTE || d.ref != e->promoted[k] ||
			    d.out_val != e->promoted_expires[k] || d.out_status != FS_RES_RESERVED)
				FAIL(n, "cmd %u (%s): promotion %u: want PROMOTE of %llu expiring %lld", i,
				     fs_cmd_type_name((enum fs_cmd_type)c->type), k,
				     (unsigned long long)e->promoted[k], (long long)e->promoted_expires[k]);
			off += used;
			P.stat_promote++;
		}
		if (off < o->records_len) {
			struct fs_cmd d;
			if (wr_rec_decode(o->records + off, o->records_len - off, &d) != 0 && d.type == FS_CMD_PROMOTE)
				FAIL(n, "cmd %u (%s): promoted more than the model (%u)", i,
				     fs_cmd_type_name((enum fs_cmd_type)c->type), e->promoted_count);
		}
		if (c->type == FS_CMD_EXPIRE) P.stat_expire++;
		if (c->type == FS_CMD_WAITLIST_SERVE) P.stat_serve++;
		if (c->type == FS_CMD_RECLAIM) P.stat_reclaim++;
		if (c->type == FS_CMD_SALE_ARCHIVE) P.stat_archive++;
		if (c->type == FS_CMD_REFUND_RESULT && c->pay == FS_PAY_OK) P.stat_refund++;
	}
	if (off != o->records_len)
		FAIL(n, "records the model does not expect after the last command (%u of %u bytes)", off, o->records_len);

	/* answers: each expected one exactly once, nothing else */
	uint32_t want_count = 0;
	for (uint32_t i = 0; i < n; i++)
		want_count += P.eff[i].answer_count;
	if (o->answer_count != want_count) {
		for (uint32_t i = 0; i < o->answer_count; i++)
			dump_ans("got", o->answers[i].origin, &o->answers[i].ans);
		FAIL(n, "%u answers, model expects %u", o->answer_count, want_count);
	}
	for (uint32_t i = 0; i < n; i++) {
		const struct m_effect *e = &P.eff[i];
		const struct fs_cmd *c = &P.cmds[i];
		for (uint32_t k = 0; k < e->answer_count; k++) {
			const struct m_ans *w = &e->answers[k];
			const struct wr_answer *got = NULL;
			for (uint32_t j = 0; j < o->answer_count && got == NULL; j++)
				if (o->answers[j].ans.tag == w->ans.tag)
					got = &o->answers[j];
			if (got == NULL)
				FAIL(n, "cmd %u (%s): no answer with tag %llu", i,
				     fs_cmd_type_name((enum fs_cmd_type)c->type), (unsigned long long)w->ans.tag);
			int sku_idx = -1;
			if (w->ans.body == FS_BODY_SALE)
				sku_idx = wr_sku_find(P.st, w->ans.sku, w->ans.sku_len);
			const char *why = ans_diff(w, got->origin, &got->ans, sku_idx >= 0 && uncertain[sku_idx]);
			if (why != NULL) {
				dump_ans("want", w->origin, &w->ans);
				dump_ans("got ", got->origin, &got->ans);
				FAIL(n, "cmd %u (%s): answer differs: %s", i, fs_cmd_type_name((enum fs_cmd_type)c->type), why);
			}
			P.stat_ans[got->ans.err]++;
			if (got->ans.http == 202 && got->ans.body == FS_BODY_RES) {
				P.stat_wait++;
				P.orig_pos[got->ans.res_no] = got->ans.position;
			}
			if (got->ans.order_status == FS_ORDER_PAID && got->ans.body == FS_BODY_CHECKOUT)
				P.stat_paid++;
		}
		if (e->journaled < 0 && c->err == FS_OK) {
			int s = wr_sku_find(P.st, c->sku, c->sku_len);
			if (s >= 0)
				uncertain[s] = 1;
		}
	}

	/* charges */
	uint32_t ch = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct m_effect *e = &P.eff[i];
		if (!e->charge)
			continue;
		if (ch >= o->charge_count)
			FAIL(n, "cmd %u: the model expects a charge for order %llu", i, (unsigned long long)e->ch.order_no);
		const struct wr_charge *g = &o->charges[ch++];
		if (g->kind != e->ch.kind || g->order_no != e->ch.order_no || g->amount_cents != e->ch.amount_cents ||
		    g->token_len != e->ch.token_len || memcmp(g->token, e->ch.token, g->token_len) != 0 ||
		    g->user_len != e->ch.user_len || memcmp(g->user, e->ch.user, g->user_len) != 0)
			FAIL(n, "cmd %u: charge differs (order %llu amount %lld, model order %llu amount %lld)", i,
			     (unsigned long long)g->order_no, (long long)g->amount_cents,
			     (unsigned long long)e->ch.order_no, (long long)e->ch.amount_cents);
	}
	if (ch != o->charge_count)
		FAIL(n, "%u charges, model expects %u", o->charge_count, ch);

	/* counters and usage */
	/* the model's sales by name: the writer reuses archived slots, the
	 * model keeps every sale it ever created (the usage compares the
	 * live counts, so no writer sale is missing from the model) */
	for (uint32_t ms = 0; ms < model_sku_count(P.m); ms++) {
		struct wr_sku_view v;
		struct m_sku_view mv;
		model_sku_view(P.m, ms, &mv);
		if (mv.gone)
			continue;
		int s = wr_sku_find(P.st, mv.name, mv.name_len);
		if (s < 0)
			FAIL(n, "sku %.*s: the model has it, the writer does not", mv.name_len, mv.name);
		wr_sku_view(P.st, (uint32_t)s, &v);
		if (v.available + v.reserved + v.sold != v.total)
			FAIL(n, "sku %u: available %llu + reserved %llu + sold %llu != total %llu", s,
			     (unsigned long long)v.available, (unsigned long long)v.reserved,
			     (unsigned long long)v.sold, (unsigned long long)v.total);
		if (v.state != mv.state || v.total != mv.total || v.available != mv.available ||
		    v.reserved != mv.reserved || v.sold != mv.sold || v.version != mv.version ||
		    v.waitlist_count != mv.waitlist_count)
			FAIL(n, "sku %u: state %u total %llu avail %llu res %llu sold %llu version %llu wl %u; "
			     "model: %u %llu %llu %llu %llu %llu %u", s, v.state, (unsigned long long)v.total,
			     (unsigned long long)v.available, (unsigned long long)v.reserved,
			     (unsigned long long)v.sold, (unsigned long long)v.version, v.waitlist_count,
			     mv.state, (unsigned long long)mv.total, (unsigned long long)mv.available,
			     (unsigned long long)mv.reserved, (unsigned long long)mv.sold,
			     (unsigned long long)mv.version, mv.waitlist_count);
	}
	struct wr_usage u, mu;
	wr_usage(P.st, &u);
	model_usage(P.m, &mu);
	if (memcmp(&u, &mu, sizeof u) != 0)
		FAIL(n, "usage skus/users/res/orders/idem/holdings %u/%u/%u/%u/%u/%u, model %u/%u/%u/%u/%u/%u",
		     u.skus, u.users, u.reservations, u.orders, u.idem_keys, u.holdings,
		     mu.skus, mu.users, mu.reservations, mu.orders, mu.idem_keys, mu.holdings);
	for (uint32_t s = 0; s < wr_sku_count(P.st); s++) {   /* every writer sale is a live model sale */
		struct wr_sku_view v;
		wr_sku_view(P.st, s, &v);
		if (v.name_len != 0 && wr_sku_find(P.st, v.name, v.name_len) != (int)s)
			FAIL(n, "writer slot %u (%.*s) is not found by its name", s, v.name_len, v.name);
	}
	if (u.users < P.users_before)
		P.stat_users_gone += P.users_before - u.users;
	P.users_before = u.users;
	(void)nd;
}

/* The batch's records through the replay state: the same bytes again. */
static void check_replay(uint32_t n)
{
	uint32_t off = 0, k = 0;
	while (off < P.out.records_len) {
		assert_true(k < CMD_MAX * 6);
		uint32_t used = wr_rec_decode(P.out.records + off, P.out.records_len - off, &P.rcmds[k]);
		if (used == 0)
			FAIL(n, "record at offset %u does not decode", off);
		off += used;
		k++;
	}
	if (k != P.out.record_count)
		FAIL(n, "%u records decoded, record_count says %u", k, P.out.record_count);
	if (k == 0)
		return;
	wr_decide(P.rst, P.rcmds, k, P.t, 1, &P.rout);
	if (P.rout.records_len != P.out.records_len ||
	    memcmp(P.rout.records, P.out.records, P.out.records_len) != 0)
		FAIL(n, "replay regenerated different records (%u bytes, live %u)", P.rout.records_len,
		     P.out.records_len);
	if (P.batch % 16 == 0 && wr_state_digest(P.st) != wr_state_digest(P.rst))
		FAIL(n, "replayed state digest differs");
}

/* ---- the run ----------------------------------------------------------------------------- */

static void run_batch(uint32_t nd, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (P.cmds[i].tag == 0)
			P.cmds[i].tag = ++P.tag;
		P.input[i] = P.cmds[i];
	}
	for (uint32_t i = 0; i < n; i++)
		model_decide(P.m, &P.input[i], P.t, &P.eff[i]);
	wr_decide(P.st, P.cmds, n, P.t, 0, &P.out);
	check_batch(n, nd);
	check_replay(n);
	P.batch++;
	P.done += n;
}

/* The SKUs that exist (the model agrees on them, see check_batch). */
static void learn_skus(void)
{
	P.sku_names_n = wr_sku_count(P.st);
	for (uint32_t s = 0; s < P.sku_names_n; s++) {
		struct wr_sku_view v;
		wr_sku_view(P.st, s, &v);
		snprintf(P.sku_names[s], sizeof P.sku_names[s], "%.*s", v.name_len, v.name);
	}
}

static void epoch_run(uint64_t len)
{
	epoch_begin();
	/* the sales: 3 to 5, most opened at once */
	uint32_t n = 0, skus = 3 + rnd(3);
	for (uint32_t s = 0; s < skus; s++) {
		gen_create(&P.cmds[n], 1);
		memcpy(P.sku_names[P.sku_names_n], P.cmds[n].sku, P.cmds[n].sku_len);
		P.sku_names[P.sku_names_n][P.cmds[n].sku_len] = '\0';
		P.sku_names_n++;
		int scheduled = P.cmds[n].sale.opens_at_ms != 0;
		n++;
		if (!scheduled)
			tc_admin(&P.cmds[n++], FS_CMD_SALE_OPEN, P.sku_names[P.sku_names_n - 1]);
	}
	run_batch(0, n);
	learn_skus();
	uint64_t end = P.done + len;
	while (P.done < end) {
		advance_time();
		uint32_t nd = 0;
		if (chance(75)) {
			uint32_t max = chance(50) ? DUE_MAX : 1 + rnd(8);
			nd = wr_due(P.st, P.t, P.cmds, max);
			const char *why = model_due_check(P.m, P.t, P.cmds, nd, max);
			if (why != NULL) {
				for (uint32_t i = 0; i < nd; i++)
					dump_cmd("due", i, &P.cmds[i]);
				FAIL(0, "%s", why);
			}
		}
		uint32_t k = chance(10) ? 1 : 1 + rnd(BATCH_MAX);
		for (uint32_t i = 0; i < k; i++)
			gen_one(&P.cmds[nd + i]);
		run_batch(nd, nd + k);
		learn_skus();
	}
	epoch_end();
}

static void test_alloc_matches_model(void **state)
{
	(void)state;
	memset(&P, 0, sizeof P);
	P.seed = env_u64("FS_SEED", (uint64_t)time(NULL));
	P.steps = env_u64("FS_PROP_STEPS", 400000);
	P.epoch_len = env_u64("FS_PROP_EPOCH", 6000);
	P.pay_invalid = (int)env_u64("FS_PROP_PAY_INVALID", 1);
	P.rng = P.seed;
	printf("alloc_prop: seed=%llu steps=%llu epoch=%llu (FS_SEED, FS_PROP_STEPS, FS_PROP_EPOCH)\n",
	       (unsigned long long)P.seed, (unsigned long long)P.steps, (unsigned long long)P.epoch_len);
	fflush(stdout);
	struct timespec t0, t1;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	while (P.done < P.steps) {
		uint64_t left = P.steps - P.done;
		epoch_run(left < P.epoch_len ? left : P.epoch_len);
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	double s = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
	printf("alloc_prop: %llu commands in %llu batches, %llu epochs, %.2f s (%.0f commands/s)\n",
	       (unsigned long long)P.done, (unsigned long long)P.batch, (unsigned long long)P.epoch, s,
	       (double)P.done / s);
	printf("alloc_prop: answers by error:");
	for (int e = 0; e < FS_ERR_COUNT; e++)
		if (P.stat_ans[e])
			printf(" %s=%llu", fs_err_name((enum fs_err)e), (unsigned long long)P.stat_ans[e]);
	printf("\nalloc_prop: waitlisted=%llu promoted=%llu expired=%llu serves=%llu paid=%llu reclaims=%llu "
	       "refunds=%llu users_reclaimed=%llu archived=%llu\n",
	       (unsigned long long)P.stat_wait, (unsigned long long)P.stat_promote,
	       (unsigned long long)P.stat_expire, (unsigned long long)P.stat_serve,
	       (unsigned long long)P.stat_paid, (unsigned long long)P.stat_reclaim,
	       (unsigned long long)P.stat_refund, (unsigned long long)P.stat_users_gone,
	       (unsigned long long)P.stat_archive);
	/* the workload must reach the interesting paths, or it proves little */
	assert_true(P.stat_ans[FS_ERR_SOLD_OUT] > 0 || P.steps < 20000);
	assert_true(P.stat_promote > 0 || P.steps < 20000);
	assert_true(P.stat_reclaim > 0 || P.steps < 20000);
	assert_true(P.stat_archive > 0 || P.steps < 20000);
	assert_true(P.stat_refund > 0 || P.steps < 20000);
	assert_true(P.stat_users_gone > 0 || P.steps < 20000);
	assert_true(P.stat_ans[FS_ERR_LIMIT_REACHED] > 0 || P.steps < 20000);
	assert_true(P.stat_ans[FS_ERR_OVERLOADED] > 0 || P.steps < 20000);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_matches_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
