/* alloc_test.c - unit tests of the decide step (writer/alloc.c): every
 * command and every error answer, the waitlist, expiry, checkout and
 * payment, ownership, and replay determinism.
 *
 * Every batch goes through run(), which also checks, for every batch:
 *  - available + reserved + sold == total for every SKU (invariant 2);
 *  - the records are exactly the state-changing commands, in order, each
 *    byte-identical to wr_rec_encode() of the decided command, followed only
 *    by its own derived PROMOTE records (at most 4);
 *  - a batch that journals nothing leaves wr_state_digest() unchanged (a
 *    refused command changes nothing, so replay, which never sees it, ends
 *    in the same state).
 * The replay test's workload is random: FS_SEED picks the seed (printed),
 * FS_REPLAY_STEPS the number of commands (default 50000).
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

#define BATCH_MAX  256u
#define ORIGIN     3u          /* the reply ring of our pretend worker */
#define NO_ORIGIN  0xffu
#define T0         1700000000000LL
#define HOLD       120000u     /* 2 min holds */
#define PRICE      1999

struct h {
	struct wr_limits lim;
	struct wr_state *st;
	struct wr_batch_out out;
	int64_t t;
	uint64_t tag;
	uint32_t promotes;         /* PROMOTE records in the last batch */
};

static struct h *H;

static uint32_t records_cap_for(uint32_t n, uint32_t sku_max)
{
	return wr_batch_records_cap(n, sku_max);   /* as writer.c sizes it */
}

static void out_init(struct wr_batch_out *o, uint32_t n, uint32_t sku_max)
{
	memset(o, 0, sizeof *o);
	o->answer_count_max = 5 * n;
	o->answers = calloc(o->answer_count_max, sizeof *o->answers);
	o->records_cap = records_cap_for(n, sku_max);
	o->records = malloc(o->records_cap);
	o->charges = calloc(n, sizeof *o->charges);
	o->sku_touched = calloc(sku_max, sizeof(uint32_t));
	assert_non_null(o->answers);
	assert_non_null(o->records);
	assert_non_null(o->charges);
	assert_non_null(o->sku_touched);
}

static void out_free(struct wr_batch_out *o)
{
	free(o->answers);
	free(o->records);
	free(o->charges);
	free(o->sku_touched);
}

static void small_limits(struct wr_limits *l)
{
	l->sku_count_max = 8;
	l->user_count_max = 64;
	l->reservation_count_max = 512;
	l->order_count_max = 128;
	l->idem_count_max = 1024;
	l->holding_count_max = 256;
	l->quantity_max = 10;
}

static int setup_with(const struct wr_limits *l)
{
	H = calloc(1, sizeof *H);
	if (H == NULL)
		return -1;
	H->lim = *l;
	H->st = wr_state_new(l);
	if (H->st == NULL)
		return -1;
	out_init(&H->out, BATCH_MAX, l->sku_count_max);
	H->t = T0;
	return 0;
}

static int setup(void **state)
{
	(void)state;
	struct wr_limits l;
	small_limits(&l);
	return setup_with(&l);
}

static int teardown(void **state)
{
	(void)state;
	wr_state_free(H->st);
	out_free(&H->out);
	free(H);
	H = NULL;
	return 0;
}

static int is_read(uint8_t type)
{
	return type == FS_CMD_RES_GET || type == FS_CMD_ORDER_GET || type == FS_CMD_SALE_GET;
}

static void check_invariant(const struct wr_state *st)
{
	for (uint32_t i = 0; i < wr_sku_count(st); i++) {
		struct wr_sku_view v;
		wr_sku_view(st, i, &v);
		assert_int_equal(v.available + v.reserved + v.sold, v.total);
	}
}

/* Checks that out's records are exactly the journaled commands of
 * cmds[0..n) in order, each followed only by its own PROMOTE records. */
static void check_records(const struct fs_cmd *cmds, uint32_t n, const struct wr_batch_out *out,
                          uint32_t *promotes)
{
	uint32_t off = 0, count = 0;
	*promotes = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &cmds[i];
		if (c->err != FS_OK || is_read(c->type))
			continue;
		uint8_t want[WR_REC_BYTES_MAX];
		uint32_t wlen = wr_rec_encode(c, want);
		assert_true(off + wlen <= out->records_len);
		if (memcmp(out->records + off, want, wlen) != 0)
			fail_msg("record %u is not the decided command %u (%s)", count, i,
			         fs_cmd_type_name((enum fs_cmd_type)c->type));
		off += wlen;
		count++;
		uint32_t p = 0;
		while (off < out->records_len) {
			struct fs_cmd d;
			uint32_t used = wr_rec_decode(out->records + off, out->records_len - off, &d);
			assert_int_not_equal(used, 0);
			if (d.type != FS_CMD_PROMOTE)
				break;
			assert_int_equal(d.err, FS_OK);
			assert_int_equal(d.out_status, FS_RES_RESERVED);
			off += used;
			count++;
			p++;
		}
		assert_true(p <= 4);
		*promotes += p;
	}
	if (off != out->records_len)
		fail_msg("records after the last journaled command (%u of %u bytes used)", off, out->records_len);
	assert_int_equal(count, out->record_count);
}

/* Decides cmds[0..n) at H->t and checks the per-batch properties. */
static void run(struct fs_cmd *cmds, uint32_t n)
{
	assert_true(n <= BATCH_MAX);
	for (uint32_t i = 0; i < n; i++) {
		if (cmds[i].tag == 0)
			cmds[i].tag = ++H->tag;
		if (cmds[i].origin == 0)
			cmds[i].origin = ORIGIN;
	}
	uint64_t before = wr_state_digest(H->st);
	wr_decide(H->st, cmds, n, H->t, 0, &H->out);
	check_invariant(H->st);
	check_records(cmds, n, &H->out, &H->promotes);
	if (H->out.record_count == 0)
		assert_int_equal(wr_state_digest(H->st), before);
}

static const struct wr_answer *answer_for(uint64_t tag)
{
	const struct wr_answer *found = NULL;
	for (uint32_t i = 0; i < H->out.answer_count; i++) {
		if (H->out.answers[i].ans.tag != tag)
			continue;
		assert_null(found);   /* one answer per tag */
		found = &H->out.answers[i];
	}
	return found;
}

/* Decides one command alone; returns its answer (which must exist). */
static struct fs_ans one(struct fs_cmd *c)
{
	run(c, 1);
	const struct wr_answer *a = answer_for(c->tag);
	if (a == NULL)
		fail_msg("no answer to %s", fs_cmd_type_name((enum fs_cmd_type)c->type));
	assert_int_equal(a->origin, c->origin);
	return a->ans;
}

/* Decides one command alone that must not be answered now. */
static void one_silent(struct fs_cmd *c)
{
	run(c, 1);
	assert_null(answer_for(c->tag));
}

static void expect_err(struct fs_cmd *c, enum fs_err e)
{
	struct fs_ans a = one(c);
	if (a.err != e)
		fail_msg("%s: got %s (%u), want %s", fs_cmd_type_name((enum fs_cmd_type)c->type),
		         fs_err_name((enum fs_err)a.err), a.http, fs_err_name(e));
	assert_int_equal(a.http, fs_err_http(e));
	assert_int_equal(a.body, FS_BODY_ERROR);
	assert_int_equal(H->out.record_count, 0);
}

static void view(const char *sku, struct wr_sku_view *v)
{
	int idx = wr_sku_find(H->st, sku, strlen(sku));
	assert_true(idx >= 0);
	wr_sku_view(H->st, (uint32_t)idx, v);
}

static void expect_counts(const char *sku, uint64_t total, uint64_t avail, uint64_t reserved, uint64_t sold)
{
	struct wr_sku_view v;
	view(sku, &v);
	assert_int_equal(v.total, total);
	assert_int_equal(v.available, avail);
	assert_int_equal(v.reserved, reserved);
	assert_int_equal(v.sold, sold);
}

/* The i-th record of the last batch. */
static void rec_at(uint32_t i, struct fs_cmd *d)
{
	uint32_t off = 0;
	for (uint32_t k = 0;; k++) {
		assert_true(off < H->out.records_len);
		uint32_t used = wr_rec_decode(H->out.records + off, H->out.records_len - off, d);
		assert_int_not_equal(used, 0);
		if (k == i)
			return;
		off += used;
	}
}

/* ---- scenario helpers ------------------------------------------------------- */

static void make_sale(const char *sku, uint64_t total, uint32_t per_user, uint32_t waitlist)
{
	struct fs_cmd c;
	tc_create(&c, sku, total, per_user, HOLD, waitlist);
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 201);
	tc_admin(&c, FS_CMD_SALE_OPEN, sku);
	a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.state, total ? FS_SALE_OPEN : FS_SALE_SOLD_OUT);
}

static struct fs_ans reserve(const char *sku, const char *user, const char *key, uint32_t q)
{
	struct fs_cmd c;
	tc_reserve(&c, sku, user, key, q);
	return one(&c);
}

static uint64_t reserve_ok(const char *sku, const char *user, const char *key, uint32_t q)
{
	struct fs_ans a = reserve(sku, user, key, q);
	if (a.http != 201)
		fail_msg("reserve %s/%s: %u %s", user, key, a.http, fs_err_name((enum fs_err)a.err));
	assert_int_equal(a.res_status, FS_RES_RESERVED);
	return a.res_no;
}

static struct fs_ans res_get(const char *user, uint64_t res_no)
{
	struct fs_cmd c;
	tc_get(&c, FS_CMD_RES_GET, user, res_no);
	return one(&c);
}

static uint8_t status_of(const char *user, uint64_t res_no)
{
	struct fs_ans a = res_get(user, res_no);
	assert_int_equal(a.http, 200);
	return a.res_status;
}

static struct fs_ans cancel(const char *user, uint64_t res_no)
{
	struct fs_cmd c;
	tc_cancel(&c, user, res_no);
	return one(&c);
}

/* Checkout that starts a payment: returns the order number and the tag the
 * outcome will be answered to. */
static uint64_t checkout_ok(const char *user, const char *key, uint64_t res_no, uint64_t *tag)
{
	struct fs_cmd c;
	tc_checkout(&c, user, key, res_no, "tok_ok_1");
	one_silent(&c);
	assert_int_equal(c.err, FS_OK);
	assert_int_equal(H->out.charge_count, 1);
	if (tag)
		*tag = c.tag;
	return H->out.charges[0].order_no;
}

static const struct wr_answer *pay(uint64_t order_no, uint8_t p)
{
	struct fs_cmd c;
	tc_pay(&c, order_no, p);
	c.origin = 7;   /* the payment thread's ring: never answered there */
	run(&c, 1);
	assert_null(answer_for(c.tag));
	return H->out.answer_count ? &H->out.answers[0] : NULL;
}

static uint32_t due(int64_t t, struct fs_cmd *d, uint32_t max)
{
	uint32_t n = wr_due(H->st, t, d, max);
	for (uint32_t i = 0; i < n; i++)
		assert_int_equal(d[i].origin, NO_ORIGIN);
	return n;
}

/* ---- sale create / admin ----------------------------------------------------- */

static void test_create_ok(void **state)
{
	(void)state;
	struct fs_cmd c;
	tc_create(&c, "sku1", 100, 2, HOLD, 0);
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 201);
	assert_int_equal(a.body, FS_BODY_SALE);
	assert_int_equal(a.state, FS_SALE_SCHEDULED);
	assert_int_equal(a.total, 100);
	assert_int_equal(a.available, 100);
	assert_int_equal(a.reserved + a.sold, 0);
	assert_int_equal(a.sku_len, 4);
	assert_memory_equal(a.sku, "sku1", 4);
	assert_int_equal(H->out.record_count, 1);
	struct fs_cmd d;
	rec_at(0, &d);
	assert_int_equal(d.type, FS_CMD_SALE_CREATE);
	assert_int_equal(d.out_status, FS_SALE_SCHEDULED);
	assert_int_equal(d.sale.total, 100);
	assert_int_equal(d.sale.per_user, 2);
	assert_int_equal(d.sale.hold_ms, HOLD);
	assert_int_equal(H->out.sku_touched_count, 1);
	/* scheduled: not open to customers */
	tc_reserve(&c, "sku1", "u1", "k1", 1);
	expect_err(&c, FS_ERR_SALE_NOT_OPEN);
}

static void test_create_errors(void **state)
{
	(void)state;
	struct fs_cmd c;
	make_sale("a", 10, 0, 0);
	tc_create(&c, "a", 10, 0, HOLD, 0);
	expect_err(&c, FS_ERR_EXISTS);
	tc_create(&c, "", 10, 0, HOLD, 0);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_create(&c, "b", 10, 0, 0, 0);                  /* no hold time */
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_create(&c, "b", 10, 0, HOLD, 0);
	c.sale.default_tier = 5;
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_create(&c, "b", 10, 0, HOLD, 0);
	c.sale.price_cents = -1;
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_create(&c, "b", (UINT64_C(1) << 48) + 1, 0, HOLD, 0);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	/* the SKU table is full: an explicit answer, never growth */
	for (uint32_t i = 1; i < H->lim.sku_count_max; i++) {
		char name[16];
		snprintf(name, sizeof name, "s%u", i);
		tc_create(&c, name, 1, 0, HOLD, 0);
		assert_int_equal(one(&c).http, 201);
	}
	tc_create(&c, "last", 1, 0, HOLD, 0);
	expect_err(&c, FS_ERR_OVERLOADED);
	assert_int_equal(wr_sku_count(H->st), H->lim.sku_count_max);
}

/* Brings a fresh SKU to a stored state. */
static void sale_in_state(const char *sku, uint8_t s)
{
	struct fs_cmd c;
	tc_create(&c, sku, 5, 0, HOLD, 0);
	assert_int_equal(one(&c).http, 201);
	uint8_t verb = 0;
	switch (s) {
	case FS_SALE_SCHEDULED: return;
	case FS_SALE_OPEN:   verb = FS_CMD_SALE_OPEN; break;
	case FS_SALE_PAUSED: verb = FS_CMD_SALE_OPEN; break;
	case FS_SALE_FROZEN: verb = FS_CMD_SALE_FREEZE; break;
	case FS_SALE_CLOSED: verb = FS_CMD_SALE_CLOSE; break;
	default: fail();
	}
	tc_admin(&c, verb, sku);
	assert_int_equal(one(&c).http, 200);
	if (s == FS_SALE_PAUSED) {
		tc_admin(&c, FS_CMD_SALE_PAUSE, sku);
		assert_int_equal(one(&c).http, 200);
	}
	struct wr_sku_view v;
	view(sku, &v);
	assert_int_equal(v.state, s);
}

static void test_admin_transitions(void **state)
{
	(void)state;
	static const uint8_t from[5] = { FS_SALE_SCHEDULED, FS_SALE_OPEN, FS_SALE_PAUSED,
	                                 FS_SALE_FROZEN, FS_SALE_CLOSED };
	static const uint8_t verbs[5] = { FS_CMD_SALE_OPEN, FS_CMD_SALE_PAUSE, FS_CMD_SALE_FREEZE,
	                                  FS_CMD_SALE_RESUME, FS_CMD_SALE_CLOSE };
	/* want[verb][from]: the new stored state, or 0xff for 409 bad_state */
	static const uint8_t X = 0xff;
	static const uint8_t want[5][5] = {
		/* open   */ { FS_SALE_OPEN, FS_SALE_OPEN, FS_SALE_OPEN, X, X },
		/* pause  */ { X, FS_SALE_PAUSED, FS_SALE_PAUSED, X, X },
		/* freeze */ { FS_SALE_FROZEN, FS_SALE_FROZEN, FS_SALE_FROZEN, FS_SALE_FROZEN, X },
		/* resume */ { X, FS_SALE_OPEN, FS_SALE_OPEN, FS_SALE_OPEN, X },
		/* close  */ { FS_SALE_CLOSED, FS_SALE_CLOSED, FS_SALE_CLOSED, FS_SALE_CLOSED, FS_SALE_CLOSED },
	};
	for (uint32_t v = 0; v < 5; v++) {
		for (uint32_t f = 0; f < 5; f++) {
			/* a fresh state per case: 25 SKUs do not fit the table */
			teardown(NULL);
			struct wr_limits l;
			small_limits(&l);
			assert_int_equal(setup_with(&l), 0);
			sale_in_state("s", from[f]);
			struct fs_cmd c;
			tc_admin(&c, verbs[v], "s");
			struct fs_ans a = one(&c);
			struct wr_sku_view sv;
			view("s", &sv);
			if (want[v][f] == X) {
				if (a.err != FS_ERR_BAD_STATE)
					fail_msg("%s from %s: got %u, want 409 bad_state",
					         fs_cmd_type_name((enum fs_cmd_type)verbs[v]),
					         fs_sale_state_name((enum fs_sale_state)from[f]), a.http);
				assert_int_equal(a.http, 409);
				assert_int_equal(H->out.record_count, 0);
				assert_int_equal(sv.state, from[f]);
			} else {
				if (a.http != 200)
					fail_msg("%s from %s: got %u %s, want 200",
					         fs_cmd_type_name((enum fs_cmd_type)verbs[v]),
					         fs_sale_state_name((enum fs_sale_state)from[f]), a.http,
					         fs_err_name((enum fs_err)a.err));
				assert_int_equal(a.body, FS_BODY_SALE);
				assert_int_equal(a.state, want[v][f]);
				assert_int_equal(sv.state, want[v][f]);
				assert_int_equal(H->out.record_count, 1);
				struct fs_cmd d;
				rec_at(0, &d);
				assert_int_equal(d.type, verbs[v]);
				assert_int_equal(d.out_status, want[v][f]);
			}
		}
	}
	struct fs_cmd c;
	for (uint32_t v = 0; v < 5; v++) {
		tc_admin(&c, verbs[v], "nope");
		expect_err(&c, FS_ERR_UNKNOWN_SKU);
	}
}

static void test_sale_get_and_sold_out_state(void **state)
{
	(void)state;
	make_sale("s", 2, 0, 0);
	struct fs_cmd c;
	tc_admin(&c, FS_CMD_SALE_GET, "s");
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_SALE);
	assert_int_equal(a.state, FS_SALE_OPEN);
	assert_int_equal(H->out.record_count, 0);   /* a read: never journaled */
	uint64_t version = a.version;
	reserve_ok("s", "u1", "k", 2);
	tc_admin(&c, FS_CMD_SALE_GET, "s");
	a = one(&c);
	assert_int_equal(a.state, FS_SALE_SOLD_OUT);   /* open with nothing available */
	assert_int_equal(a.available, 0);
	assert_int_equal(a.reserved, 2);
	assert_true(a.version > version);
	tc_admin(&c, FS_CMD_SALE_GET, "nope");
	expect_err(&c, FS_ERR_UNKNOWN_SKU);
}

static void test_stock_add(void **state)
{
	(void)state;
	make_sale("s", 1, 0, 0);
	struct fs_cmd c;
	tc_admin(&c, FS_CMD_STOCK_ADD, "s");
	c.quantity = 4;
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.total, 5);
	assert_int_equal(a.available, 5);
	assert_int_equal(H->out.record_count, 1);
	expect_counts("s", 5, 5, 0, 0);
	tc_admin(&c, FS_CMD_STOCK_ADD, "s");
	c.quantity = 0;
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_admin(&c, FS_CMD_STOCK_ADD, "nope");
	c.quantity = 1;
	expect_err(&c, FS_ERR_UNKNOWN_SKU);
	tc_admin(&c, FS_CMD_SALE_CLOSE, "s");
	assert_int_equal(one(&c).http, 200);
	tc_admin(&c, FS_CMD_STOCK_ADD, "s");
	c.quantity = 1;
	expect_err(&c, FS_ERR_BAD_STATE);
	expect_counts("s", 5, 5, 0, 0);
}

/* A scheduled sale opens by itself at opens_at (wr_due), not a ms before. */
static void test_scheduled_open(void **state)
{
	(void)state;
	struct fs_cmd c, d[8];
	tc_create(&c, "s", 3, 0, HOLD, 0);
	c.sale.opens_at_ms = T0 + 5000;
	assert_int_equal(one(&c).http, 201);
	assert_int_equal(wr_next_deadline(H->st), T0 + 5000);
	assert_int_equal(due(T0 + 4999, d, 8), 0);
	H->t = T0 + 5000;
	assert_int_equal(due(H->t, d, 8), 1);
	assert_int_equal(d[0].type, FS_CMD_SALE_OPEN);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	struct wr_sku_view v;
	view("s", &v);
	assert_int_equal(v.state, FS_SALE_OPEN);
	assert_int_equal(due(H->t, d, 8), 0);
	reserve_ok("s", "u", "k", 1);
}

/* ---- reserve ------------------------------------------------------------------ */

static void test_reserve_ok(void **state)
{
	(void)state;
	make_sale("s", 10, 0, 0);
	H->t = T0 + 42;
	struct fs_cmd c;
	tc_reserve(&c, "s", "alice", "key-1", 3);
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 201);
	assert_int_equal(a.err, FS_OK);
	assert_int_equal(a.body, FS_BODY_RES);
	assert_int_equal(a.res_no, 1);
	assert_int_equal(a.res_status, FS_RES_RESERVED);
	assert_int_equal(a.quantity, 3);
	assert_int_equal(a.expires_at_ms, T0 + 42 + HOLD);
	assert_int_equal(a.order_no, 0);
	assert_int_equal(a.position, 0);
	assert_int_equal(a.sku_len, 1);
	assert_memory_equal(a.sku, "s", 1);
	/* the decided command carries the outcome, and so does its record */
	assert_int_equal(c.err, FS_OK);
	assert_int_equal(c.out_ref, 1);
	assert_int_equal(c.out_status, FS_RES_RESERVED);
	assert_int_equal(c.out_val, T0 + 42 + HOLD);
	struct fs_cmd d;
	rec_at(0, &d);
	assert_int_equal(d.type, FS_CMD_RESERVE);
	assert_int_equal(d.out_ref, 1);
	assert_int_equal(d.quantity, 3);
	assert_memory_equal(d.user, "alice", 5);
	expect_counts("s", 10, 7, 3, 0);
	assert_int_equal(reserve_ok("s", "bob", "key-1", 1), 2);   /* numbers go up */
}

static void test_reserve_idempotent_repeat(void **state)
{
	(void)state;
	make_sale("s", 10, 0, 0);
	struct fs_cmd c;
	tc_reserve(&c, "s", "alice", "k1", 2);
	struct fs_ans first = one(&c);
	assert_int_equal(first.http, 201);
	/* later, and after the reservation changed, the repeat still gets the
	 * original answer: same number, status, expiry; nothing journaled */
	for (int round = 0; round < 3; round++) {
		H->t += 1000;
		if (round == 1)
			assert_int_equal(cancel("alice", first.res_no).http, 200);
		if (round == 2) {
			tc_admin(&c, FS_CMD_SALE_FREEZE, "s");
			assert_int_equal(one(&c).http, 200);
		}
		tc_reserve(&c, "s", "alice", "k1", 2);
		struct fs_ans again = one(&c);
		assert_int_equal(again.http, 200);
		assert_int_equal(H->out.record_count, 0);
		struct fs_ans want = first;
		want.http = 200;
		want.tag = again.tag;
		assert_memory_equal(&again, &want, sizeof want);
	}
	expect_counts("s", 10, 10, 0, 0);   /* the repeats took nothing */
	/* after a checkout and payment too: the original answer has no order */
	tc_admin(&c, FS_CMD_SALE_RESUME, "s");
	one(&c);
	tc_reserve(&c, "s", "bob", "k1", 1);
	first = one(&c);
	assert_int_equal(first.http, 201);
	uint64_t o = checkout_ok("bob", "ck", first.res_no, NULL);
	pay(o, FS_PAY_OK);
	tc_reserve(&c, "s", "bob", "k1", 1);
	struct fs_ans again = one(&c);
	struct fs_ans want = first;
	want.http = 200;
	want.tag = again.tag;
	assert_memory_equal(&again, &want, sizeof want);
	assert_int_equal(again.order_no, 0);
	assert_int_equal(again.res_status, FS_RES_RESERVED);
	assert_int_equal(status_of("bob", first.res_no), FS_RES_CONFIRMED);
}

static void test_reserve_key_reused(void **state)
{
	(void)state;
	make_sale("s", 10, 0, 0);
	make_sale("t", 10, 0, 0);
	reserve_ok("s", "alice", "k1", 1);
	struct fs_cmd c;
	tc_reserve(&c, "s", "alice", "k1", 2);   /* same key, other quantity */
	expect_err(&c, FS_ERR_KEY_REUSED);
	assert_int_equal(fs_err_http(FS_ERR_KEY_REUSED), 422);
	tc_reserve(&c, "t", "alice", "k1", 1);   /* same key, other SKU */
	expect_err(&c, FS_ERR_KEY_REUSED);
	/* keys are per user */
	reserve_ok("s", "bob", "k1", 2);
	expect_counts("s", 10, 7, 3, 0);
	expect_counts("t", 10, 10, 0, 0);
}

/* Idempotency keys belong to one user: another user's key never answers
 * for yours. "abcdefgh" of the first user and "accdeffh" of the second
 * are different keys of different users (they differ where the two users'
 * hash seeds differ, which an (user, key) hash must not cancel out). */
static void test_idem_keys_of_other_users(void **state)
{
	(void)state;
	make_sale("s", 10, 0, 0);
	uint64_t ra = reserve_ok("s", "alice", "abcdefgh", 1);   /* the first user */
	uint64_t rb = reserve_ok("s", "bob", "bob-key-1", 1);     /* the second user */
	struct fs_ans a = reserve("s", "bob", "accdeffh", 1);
	if (a.http != 201)
		fail_msg("bob's new key \"accdeffh\" was answered as alice's \"abcdefgh\": %u %s, "
		         "reservation %llu (alice's is %llu)", a.http, fs_err_name((enum fs_err)a.err),
		         (unsigned long long)a.res_no, (unsigned long long)ra);
	assert_int_not_equal(a.res_no, ra);
	expect_counts("s", 10, 7, 3, 0);
	/* checkout keys too */
	checkout_ok("alice", "abcdefgh", ra, NULL);
	struct fs_cmd c;
	tc_checkout(&c, "bob", "accdeffh", rb, "tok_ok");
	run(&c, 1);
	if (c.err != FS_OK)
		fail_msg("bob's checkout key \"accdeffh\" was taken for alice's \"abcdefgh\": %s",
		         fs_err_name((enum fs_err)c.err));
}

static void test_reserve_errors(void **state)
{
	(void)state;
	struct fs_cmd c;
	tc_reserve(&c, "nope", "u", "k", 1);
	expect_err(&c, FS_ERR_UNKNOWN_SKU);
	make_sale("s", 100, 0, 0);
	tc_reserve(&c, "s", "u", "k", 0);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_reserve(&c, "s", "u", "k", H->lim.quantity_max + 1);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_reserve(&c, "s", "u", "", 1);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_reserve(&c, "s", "", "k", 1);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	reserve_ok("s", "u", "k", H->lim.quantity_max);
	/* not open: paused / scheduled / closed -> 403, frozen -> 503 */
	tc_admin(&c, FS_CMD_SALE_PAUSE, "s");
	one(&c);
	tc_reserve(&c, "s", "u", "k2", 1);
	expect_err(&c, FS_ERR_SALE_NOT_OPEN);
	assert_int_equal(fs_err_http(FS_ERR_SALE_NOT_OPEN), 403);
	tc_admin(&c, FS_CMD_SALE_FREEZE, "s");
	one(&c);
	tc_reserve(&c, "s", "u", "k2", 1);
	expect_err(&c, FS_ERR_FROZEN);
	assert_int_equal(fs_err_http(FS_ERR_FROZEN), 503);
	tc_admin(&c, FS_CMD_SALE_RESUME, "s");
	one(&c);
	reserve_ok("s", "u", "k2", 1);
	tc_admin(&c, FS_CMD_SALE_CLOSE, "s");
	one(&c);
	tc_reserve(&c, "s", "u", "k3", 1);
	expect_err(&c, FS_ERR_SALE_NOT_OPEN);
	tc_create(&c, "later", 5, 0, HOLD, 0);
	one(&c);
	tc_reserve(&c, "later", "u", "k4", 1);
	expect_err(&c, FS_ERR_SALE_NOT_OPEN);
}

static void test_reserve_sold_out(void **state)
{
	(void)state;
	make_sale("s", 2, 0, 0);
	reserve_ok("s", "u1", "k", 1);
	struct fs_cmd c;
	tc_reserve(&c, "s", "u2", "k", 2);   /* only one left */
	expect_err(&c, FS_ERR_SOLD_OUT);
	reserve_ok("s", "u2", "k", 1);
	tc_reserve(&c, "s", "u3", "k", 1);
	expect_err(&c, FS_ERR_SOLD_OUT);
	assert_int_equal(fs_err_http(FS_ERR_SOLD_OUT), 409);
	expect_counts("s", 2, 0, 2, 0);
}

/* per_user counts what a user holds (reserved, paying) plus what they paid. */
static void test_reserve_limit(void **state)
{
	(void)state;
	make_sale("s", 100, 2, 0);
	struct fs_cmd c;
	tc_reserve(&c, "s", "u", "big", 3);
	expect_err(&c, FS_ERR_LIMIT_REACHED);
	uint64_t r1 = reserve_ok("s", "u", "k1", 1);
	uint64_t r2 = reserve_ok("s", "u", "k2", 1);
	tc_reserve(&c, "s", "u", "k3", 1);
	expect_err(&c, FS_ERR_LIMIT_REACHED);
	assert_int_equal(fs_err_http(FS_ERR_LIMIT_REACHED), 409);
	reserve_ok("s", "other", "k3", 2);   /* per user, not per SKU */
	assert_int_equal(cancel("u", r2).http, 200);
	uint64_t r3 = reserve_ok("s", "u", "k3", 1);   /* a cancel gives room back */
	(void)r3;
	/* paid units count too */
	uint64_t order = checkout_ok("u", "c1", r1, NULL);
	assert_non_null(pay(order, FS_PAY_OK));
	assert_int_equal(status_of("u", r1), FS_RES_CONFIRMED);
	tc_reserve(&c, "s", "u", "k4", 1);
	expect_err(&c, FS_ERR_LIMIT_REACHED);
	/* a declined payment gives room back */
	order = checkout_ok("u", "c2", r3, NULL);
	tc_reserve(&c, "s", "u", "k4", 1);
	expect_err(&c, FS_ERR_LIMIT_REACHED);   /* paying still counts */
	assert_non_null(pay(order, FS_PAY_DECLINED));
	reserve_ok("s", "u", "k4", 1);
}

/* ---- waitlist ------------------------------------------------------------------ */

static void test_waitlist_join(void **state)
{
	(void)state;
	make_sale("s", 1, 0, 2);
	/* nothing held yet and nothing left is impossible here; a unit held: */
	reserve_ok("s", "u1", "k", 1);
	struct fs_cmd c;
	tc_reserve(&c, "s", "u2", "k", 1);
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 202);
	assert_int_equal(a.body, FS_BODY_RES);
	assert_int_equal(a.res_status, FS_RES_WAITLISTED);
	assert_int_equal(a.position, 1);
	assert_int_equal(a.expires_at_ms, 0);
	assert_int_equal(c.out_status, FS_RES_WAITLISTED);
	assert_int_equal(c.out_val, 0);
	uint64_t w2 = a.res_no;
	tc_reserve(&c, "s", "u3", "k", 1);
	a = one(&c);
	assert_int_equal(a.http, 202);
	assert_int_equal(a.position, 2);
	tc_reserve(&c, "s", "u4", "k", 1);   /* the waitlist is full */
	expect_err(&c, FS_ERR_SOLD_OUT);
	expect_counts("s", 1, 0, 1, 0);      /* waitlisted units are counted nowhere */
	struct wr_sku_view v;
	view("s", &v);
	assert_int_equal(v.waitlist_count, 2);
	/* a repeat of a waitlisted reservation: the original 202 answer, as 200 */
	tc_reserve(&c, "s", "u2", "k", 1);
	a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.res_no, w2);
	assert_int_equal(a.res_status, FS_RES_WAITLISTED);
	assert_int_equal(a.position, 1);
	/* RES_GET shows the live status and position */
	a = res_get("u2", w2);
	assert_int_equal(a.res_status, FS_RES_WAITLISTED);
	assert_int_equal(a.position, 1);
	/* checkout of a waitlisted reservation is refused */
	tc_checkout(&c, "u2", "c", w2, "tok_ok");
	expect_err(&c, FS_ERR_BAD_STATE);
}

static void test_waitlist_needs_units_held(void **state)
{
	(void)state;
	make_sale("s", 1, 0, 5);
	uint64_t r = reserve_ok("s", "u1", "k", 1);
	uint64_t o = checkout_ok("u1", "c", r, NULL);
	assert_non_null(pay(o, FS_PAY_OK));
	/* all sold, nothing held: no unit can come back, so no waitlist */
	struct fs_cmd c;
	tc_reserve(&c, "s", "u2", "k", 1);
	expect_err(&c, FS_ERR_SOLD_OUT);
	/* the waitlist is off by default */
	make_sale("t", 1, 0, 0);
	reserve_ok("t", "u1", "k2", 1);
	tc_reserve(&c, "t", "u2", "k2", 1);
	expect_err(&c, FS_ERR_SOLD_OUT);
}

/* Fills "s" (stock 1, waitlist 3) with a holder and three waiters. */
static void waitlist_setup(uint64_t *holder, uint64_t w[3])
{
	make_sale("s", 1, 0, 3);
	*holder = reserve_ok("s", "h", "k", 1);
	for (int i = 0; i < 3; i++) {
		char user[16];
		snprintf(user, sizeof user, "w%d", i);
		struct fs_ans a = reserve("s", user, "k", 1);
		assert_int_equal(a.http, 202);
		w[i] = a.res_no;
	}
}

static void expect_promoted(uint64_t res_no, const char *user)
{
	struct fs_ans a = res_get(user, res_no);
	assert_int_equal(a.res_status, FS_RES_RESERVED);
	assert_int_equal(a.expires_at_ms, H->t + HOLD);
}

/* The PROMOTE record that follows the record at index i. */
static void expect_promote_record(uint32_t i, uint64_t res_no)
{
	struct fs_cmd d;
	rec_at(i, &d);
	assert_int_equal(d.type, FS_CMD_PROMOTE);
	assert_int_equal(d.ref, res_no);
	assert_int_equal(d.out_status, FS_RES_RESERVED);
	assert_int_equal(d.out_val, H->t + HOLD);
}

static void test_waitlist_promote_on_cancel(void **state)
{
	(void)state;
	uint64_t holder, w[3];
	waitlist_setup(&holder, w);
	H->t += 500;
	assert_int_equal(cancel("h", holder).http, 200);
	assert_int_equal(H->out.record_count, 2);
	struct fs_cmd d;
	rec_at(0, &d);
	assert_int_equal(d.type, FS_CMD_CANCEL);
	expect_promote_record(1, w[0]);
	expect_promoted(w[0], "w0");
	assert_int_equal(res_get("w1", w[1]).position, 1);
	assert_int_equal(res_get("w2", w[2]).position, 2);
	expect_counts("s", 1, 0, 1, 0);
}

static void test_waitlist_promote_on_expiry(void **state)
{
	(void)state;
	uint64_t holder, w[3];
	waitlist_setup(&holder, w);
	struct fs_cmd d[8];
	H->t = T0 + HOLD;
	assert_int_equal(due(H->t, d, 8), 1);
	assert_int_equal(d[0].type, FS_CMD_EXPIRE);
	assert_int_equal(d[0].ref, holder);
	run(d, 1);
	assert_int_equal(H->out.record_count, 2);
	expect_promote_record(1, w[0]);
	expect_promoted(w[0], "w0");
	assert_int_equal(status_of("h", holder), FS_RES_EXPIRED);
}

static void test_waitlist_promote_on_failed_payment(void **state)
{
	(void)state;
	uint64_t holder, w[3];
	waitlist_setup(&holder, w);
	uint64_t order = checkout_ok("h", "c", holder, NULL);
	H->t += 100;
	assert_non_null(pay(order, FS_PAY_ERROR));
	assert_int_equal(H->out.record_count, 2);
	struct fs_cmd d;
	rec_at(0, &d);
	assert_int_equal(d.type, FS_CMD_PAY_RESULT);
	expect_promote_record(1, w[0]);
	expect_promoted(w[0], "w0");
	/* a paid order returns nothing to the waitlist */
	order = checkout_ok("w0", "c", w[0], NULL);
	assert_non_null(pay(order, FS_PAY_OK));
	assert_int_equal(H->out.record_count, 1);
	assert_int_equal(status_of("w1", w[1]), FS_RES_WAITLISTED);
}

static void test_waitlist_cancel_waiting(void **state)
{
	(void)state;
	uint64_t holder, w[3];
	waitlist_setup(&holder, w);
	struct fs_ans a = cancel("w0", w[0]);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.res_status, FS_RES_CANCELLED);
	assert_int_equal(H->out.record_count, 1);
	expect_counts("s", 1, 0, 1, 0);   /* no counter moves */
	struct wr_sku_view v;
	view("s", &v);
	assert_int_equal(v.waitlist_count, 2);
	/* the next one in line gets the unit, not the cancelled one */
	assert_int_equal(cancel("h", holder).http, 200);
	assert_int_equal(H->out.record_count, 2);
	expect_promote_record(1, w[1]);
	assert_int_equal(status_of("w0", w[0]), FS_RES_CANCELLED);
	assert_int_equal(status_of("w2", w[2]), FS_RES_WAITLISTED);
	/* the freed waitlist place can be taken again */
	a = reserve("s", "w3", "k", 1);
	assert_int_equal(a.http, 202);
	assert_true(a.position >= 2);   /* an upper bound: w2 is ahead */
}

/* At most 4 promotions follow one command; WAITLIST_SERVE from wr_due
 * serves the rest, in order. */
static void test_waitlist_serve_rest(void **state)
{
	(void)state;
	make_sale("s", 10, 0, 8);
	uint64_t big = reserve_ok("s", "h", "k", 10);
	uint64_t w[7];
	for (int i = 0; i < 7; i++) {
		char user[16];
		snprintf(user, sizeof user, "w%d", i);
		struct fs_ans a = reserve("s", user, "k", 1);
		assert_int_equal(a.http, 202);
		w[i] = a.res_no;
	}
	struct fs_cmd d[8];
	assert_int_equal(due(H->t, d, 8), 0);
	H->t += 10;
	assert_int_equal(cancel("h", big).http, 200);
	assert_int_equal(H->out.record_count, 5);
	for (uint32_t i = 0; i < 4; i++)
		expect_promote_record(1 + i, w[i]);
	expect_counts("s", 10, 6, 4, 0);
	assert_int_equal(wr_next_deadline(H->st), INT64_MIN);   /* work is waiting now */
	H->t += 10;
	assert_int_equal(due(H->t, d, 8), 1);
	assert_int_equal(d[0].type, FS_CMD_WAITLIST_SERVE);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	assert_int_equal(H->out.record_count, 4);
	rec_at(0, &d[1]);
	assert_int_equal(d[1].type, FS_CMD_WAITLIST_SERVE);
	for (uint32_t i = 0; i < 3; i++)
		expect_promote_record(1 + i, w[4 + i]);
	expect_counts("s", 10, 3, 7, 0);
	assert_int_equal(due(H->t, d, 8), 0);
	/* a SERVE with nothing to do is refused and journals nothing */
	tc_admin(&d[0], FS_CMD_WAITLIST_SERVE, "s");
	run(d, 1);
	assert_int_not_equal(d[0].err, FS_OK);
	assert_int_equal(H->out.record_count, 0);
}

/* Adding stock or resuming a sale serves the waitlist too. */
static void test_waitlist_stock_add_and_resume(void **state)
{
	(void)state;
	uint64_t holder, w[3];
	waitlist_setup(&holder, w);
	struct fs_cmd c;
	tc_admin(&c, FS_CMD_SALE_PAUSE, "s");
	one(&c);
	tc_admin(&c, FS_CMD_STOCK_ADD, "s");
	c.quantity = 2;
	one(&c);
	assert_int_equal(H->out.record_count, 1);   /* paused: nobody promoted */
	struct fs_cmd d[4];
	assert_int_equal(due(H->t, d, 4), 0);
	tc_admin(&c, FS_CMD_SALE_RESUME, "s");
	one(&c);
	assert_int_equal(H->out.record_count, 3);
	expect_promote_record(1, w[0]);
	expect_promote_record(2, w[1]);
	expect_counts("s", 3, 0, 3, 0);
	(void)holder;
}

/* A waitlisted reservation with a bigger quantity than what came back keeps
 * its place: the ones behind it wait (first come, first served). */
static void test_waitlist_head_blocks(void **state)
{
	(void)state;
	make_sale("s", 2, 0, 3);
	uint64_t a = reserve_ok("s", "a", "k", 1);
	reserve_ok("s", "b", "k", 1);
	struct fs_ans big = reserve("s", "c", "k", 2);
	assert_int_equal(big.http, 202);
	struct fs_ans small = reserve("s", "d", "k", 1);
	assert_int_equal(small.http, 202);
	assert_int_equal(cancel("a", a).http, 200);
	assert_int_equal(H->out.record_count, 1);   /* c needs 2, only 1 back */
	assert_int_equal(status_of("d", small.res_no), FS_RES_WAITLISTED);
	expect_counts("s", 2, 1, 1, 0);
}

/* ---- cancel ------------------------------------------------------------------------ */

static void test_cancel(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 2);
	struct fs_cmd c;
	tc_cancel(&c, "mallory", r);          /* another user's: not found */
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_cancel(&c, "alice", r + 100);
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_cancel(&c, "alice", 0);
	expect_err(&c, FS_ERR_NOT_FOUND);
	expect_counts("s", 5, 3, 2, 0);
	struct fs_ans a = cancel("alice", r);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_RES);
	assert_int_equal(a.res_status, FS_RES_CANCELLED);
	assert_int_equal(a.res_no, r);
	assert_int_equal(H->out.record_count, 1);
	struct fs_cmd d;
	rec_at(0, &d);
	assert_int_equal(d.type, FS_CMD_CANCEL);
	assert_int_equal(d.ref, r);
	assert_int_equal(d.out_status, FS_RES_CANCELLED);
	assert_int_equal(d.sku_len, 1);   /* the record names the SKU */
	expect_counts("s", 5, 5, 0, 0);
	/* twice: harmless, the units came back exactly once */
	a = cancel("alice", r);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.res_status, FS_RES_CANCELLED);
	assert_int_equal(H->out.record_count, 0);
	expect_counts("s", 5, 5, 0, 0);
	/* nor can it expire later */
	struct fs_cmd due_cmds[4];
	assert_int_equal(due(T0 + 10 * HOLD, due_cmds, 4), 0);
}

static void test_cancel_not_cancellable(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t paying = reserve_ok("s", "u", "k1", 1);
	uint64_t paid = reserve_ok("s", "u", "k2", 1);
	uint64_t expired = reserve_ok("s", "u", "k3", 1);
	uint64_t failed = reserve_ok("s", "u", "k4", 1);
	checkout_ok("u", "c1", paying, NULL);
	uint64_t o = checkout_ok("u", "c2", paid, NULL);
	pay(o, FS_PAY_OK);
	o = checkout_ok("u", "c4", failed, NULL);
	pay(o, FS_PAY_DECLINED);
	H->t = T0 + HOLD;
	struct fs_cmd d[4];
	assert_int_equal(due(H->t, d, 4), 1);
	assert_int_equal(d[0].ref, expired);
	run(d, 1);
	uint64_t refs[4] = { paying, paid, expired, failed };
	for (int i = 0; i < 4; i++) {
		struct fs_cmd c;
		tc_cancel(&c, "u", refs[i]);
		expect_err(&c, FS_ERR_NOT_CANCELLABLE);
	}
	expect_counts("s", 5, 3, 1, 1);
}

/* ---- expiry ------------------------------------------------------------------------- */

static void test_expiry_exact_deadline(void **state)
{
	(void)state;
	make_sale("s", 3, 0, 0);
	H->t = T0 + 7;
	uint64_t r = reserve_ok("s", "u", "k", 2);
	int64_t deadline = T0 + 7 + HOLD;
	assert_int_equal(wr_next_deadline(H->st), deadline);
	struct fs_cmd d[4];
	H->t = deadline - 1;
	assert_int_equal(due(H->t, d, 4), 0);
	/* an EXPIRE sent early is refused and changes nothing */
	tc_reset(&d[0], FS_CMD_EXPIRE);
	d[0].ref = r;
	expect_err(&d[0], FS_ERR_NOT_CANCELLABLE);
	assert_int_equal(status_of("u", r), FS_RES_RESERVED);
	H->t = deadline;
	assert_int_equal(due(H->t, d, 4), 1);
	assert_int_equal(d[0].type, FS_CMD_EXPIRE);
	assert_int_equal(d[0].ref, r);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	assert_int_equal(H->out.record_count, 1);
	const struct wr_answer *a = answer_for(d[0].tag);
	assert_non_null(a);
	assert_int_equal(a->origin, NO_ORIGIN);
	assert_int_equal(a->ans.res_status, FS_RES_EXPIRED);
	expect_counts("s", 3, 3, 0, 0);
	assert_int_equal(status_of("u", r), FS_RES_EXPIRED);
	assert_int_equal(due(H->t + HOLD, d, 4), 0);
	assert_int_equal(wr_next_deadline(H->st), INT64_MAX);
	/* an EXPIRE repeated (say, a stale one) is refused: units back once */
	tc_reset(&d[0], FS_CMD_EXPIRE);
	d[0].ref = r;
	expect_err(&d[0], FS_ERR_NOT_CANCELLABLE);
	expect_counts("s", 3, 3, 0, 0);
}

/* wr_due hands out holds in deadline order and respects max. */
static void test_expiry_order_and_max(void **state)
{
	(void)state;
	make_sale("s", 10, 0, 0);
	uint64_t r[5];
	for (int i = 0; i < 5; i++) {
		char key[16];
		snprintf(key, sizeof key, "k%d", i);
		H->t = T0 + i;
		r[i] = reserve_ok("s", "u", key, 1);
	}
	assert_int_equal(cancel("u", r[1]).http, 200);   /* a stale entry */
	struct fs_cmd d[8];
	H->t = T0 + HOLD + 3;   /* r0..r3 are due, r4 not */
	assert_int_equal(due(H->t, d, 2), 2);
	assert_int_equal(d[0].ref, r[0]);
	assert_int_equal(d[1].ref, r[2]);
	run(d, 2);
	assert_int_equal(due(H->t, d, 8), 1);
	assert_int_equal(d[0].ref, r[3]);
	run(d, 1);
	assert_int_equal(due(H->t, d, 8), 0);
	expect_counts("s", 10, 9, 1, 0);
}

/* ---- checkout and payment --------------------------------------------------------------- */

/* Retention never takes an order whose refund is in flight: its
 * REFUND_RESULT must find it (else the outcome is lost, and no restart
 * re-sends it). The reservations after it wait too; the writer does not
 * spin on the blocked reclaim; once refunded, everything goes. */
static void test_retention_waits_for_refund(void **state)
{
	(void)state;
	const int64_t retention_ms = 60000;
	wr_state_set_retention(H->st, retention_ms);
	make_sale("s", 5, 0, 0);
	uint64_t r1 = reserve_ok("s", "alice", "k1", 1);
	uint64_t r2 = reserve_ok("s", "bob", "k2", 1);
	uint64_t o1 = checkout_ok("alice", "ck1", r1, NULL);
	pay(o1, FS_PAY_OK);
	assert_int_equal(cancel("bob", r2).http, 200);
	struct fs_cmd c;
	tc_reset(&c, FS_CMD_REFUND);
	c.ref = o1;
	c.quantity = 1;
	tc_set(c.key, &c.key_len, FS_ID_LEN_MAX, "uid:0");
	run(&c, 1);
	assert_int_equal(c.err, FS_OK);
	assert_int_equal(H->out.charge_count, 1);   /* the refund goes to the provider */
	/* long past the retention: nothing is due, and no deadline asks the writer to look */
	H->t += 10 * retention_ms;
	struct fs_cmd d[8];
	for (uint32_t i = 0, n = due(H->t, d, 8); i < n; i++)
		assert_int_not_equal(d[i].type, FS_CMD_RECLAIM);
	assert_true(wr_next_deadline(H->st) > H->t);
	/* a RECLAIM asked for anyway (a journal of an older binary, a bad producer) is refused */
	tc_reset(&c, FS_CMD_RECLAIM);
	c.ref = r1;
	c.origin = NO_ORIGIN;
	run(&c, 1);
	assert_int_equal(c.err, FS_ERR_BAD_STATE);
	/* the outcome lands on the order, then retention takes both reservations */
	tc_pay(&c, o1, FS_PAY_OK);
	c.type = FS_CMD_REFUND_RESULT;
	c.origin = 9;
	run(&c, 1);
	assert_int_equal(c.err, FS_OK);
	tc_get(&c, FS_CMD_ORDER_GET, "alice", o1);
	assert_int_equal(one(&c).order_status, FS_ORDER_REFUNDED);
	expect_counts("s", 5, 5, 0, 0);   /* restocked */
	uint32_t n = due(H->t, d, 8);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].type, FS_CMD_RECLAIM);
	assert_int_equal(d[0].ref, r2);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	assert_int_equal(res_get("bob", r2).err, FS_ERR_RECLAIMED);
}

/* ---- lifetime: sale archive ------------------------------------------------------ */

/* The state image in memory (snapshot.c writes the same sections to a file). */
struct img_buf { uint8_t *p; size_t len, cap; uint32_t ids[WR_IMG_COUNT]; uint64_t sizes[WR_IMG_COUNT]; uint32_t n; };
static int img_section(void *arg, uint32_t id, uint64_t bytes)
{
	struct img_buf *b = arg;
	assert_true(b->n < WR_IMG_COUNT);
	b->ids[b->n] = id;
	b->sizes[b->n++] = bytes;
	return 0;
}
static int img_data(void *arg, const void *p, size_t n)
{
	struct img_buf *b = arg;
	if (b->len + n > b->cap) {
		b->cap = (b->len + n) * 2;
		b->p = realloc(b->p, b->cap);
		assert_non_null(b->p);
	}
	memcpy(b->p + b->len, p, n);
	b->len += n;
	return 0;
}
static struct wr_state *image_copy(const struct wr_state *st)
{
	struct img_buf b = { 0 };
	struct wr_image_sink sink = { img_section, img_data, &b };
	assert_int_equal(wr_state_image(st, &sink), 0);
	struct wr_state *cp = wr_state_new(&H->lim);
	assert_non_null(cp);
	char err[256];
	size_t off = 0;
	for (uint32_t i = 0; i < b.n; i++) {
		if (wr_state_image_load(cp, b.ids[i], b.p + off, b.sizes[i], err, sizeof err) != 0)
			fail_msg("image section %u: %s", b.ids[i], err);
		off += b.sizes[i];
	}
	if (wr_state_image_done(cp, err, sizeof err) != 0)
		fail_msg("image: %s", err);
	free(b.p);
	return cp;
}

static struct fs_ans archive(const char *sku)
{
	struct fs_cmd c;
	tc_admin(&c, FS_CMD_SALE_ARCHIVE, sku);
	tc_set(c.key, &c.key_len, FS_ID_LEN_MAX, "uid:0");
	return one(&c);
}

static struct fs_ans reserve_dev(const char *sku, const char *user, const char *key, const char *dev)
{
	struct fs_cmd c;
	tc_reserve(&c, sku, user, key, 1);
	tc_set(c.text, &c.text_len, FS_ID_LEN_MAX, dev);
	return one(&c);
}

static void close_sale(const char *sku)
{
	struct fs_cmd c;
	tc_admin(&c, FS_CMD_SALE_CLOSE, sku);
	assert_int_equal(one(&c).http, 200);
}

static void test_archive_frees_slot(void **state)
{
	(void)state;
	wr_state_set_retention(H->st, 1000);
	char name[16];
	for (uint32_t s = 0; s < H->lim.sku_count_max; s++) {
		snprintf(name, sizeof name, "s%u", s);
		make_sale(name, 5, 1, 0);
	}
	struct fs_cmd c;
	tc_create(&c, "s8", 5, 1, HOLD, 0);
	expect_err(&c, FS_ERR_OVERLOADED);                 /* the table is full */
	uint64_t r1 = reserve_dev("s0", "alice", "k1", "dev-1").res_no;
	uint64_t r2 = reserve_dev("s0", "bob", "k2", "dev-2").res_no;
	assert_true(r1 && r2);
	pay(checkout_ok("alice", "ck1", r1, NULL), FS_PAY_OK);
	assert_int_equal(cancel("bob", r2).http, 200);
	assert_int_equal(archive("s0").err, FS_ERR_BAD_STATE);   /* open */
	close_sale("s0");
	assert_int_equal(archive("s0").err, FS_ERR_RETAINED);    /* its reservations are kept */
	H->t += 2000;
	struct fs_cmd d[8];
	uint32_t n = due(H->t, d, 8);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].type, FS_CMD_RECLAIM);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	struct fs_ans a = archive("s0");
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_EMPTY);
	struct fs_cmd rec;
	rec_at(0, &rec);
	assert_int_equal(rec.type, FS_CMD_SALE_ARCHIVE);   /* journaled */
	assert_int_equal(wr_sku_find(H->st, "s0", 2), -1);
	assert_int_equal(archive("s0").err, FS_ERR_UNKNOWN_SKU);
	struct wr_usage u;
	wr_usage(H->st, &u);
	assert_int_equal(u.skus, H->lim.sku_count_max - 1);
	assert_int_equal(u.holdings, 0);                    /* alice's and bob's holdings of s0 went */
	assert_int_equal(u.reservations, 0);
	/* the slot is taken by the next sale */
	make_sale("s8", 5, 1, 0);
	assert_int_equal(wr_sku_find(H->st, "s8", 2), 0);
	tc_create(&c, "s0", 5, 1, HOLD, 0);
	expect_err(&c, FS_ERR_OVERLOADED);
	close_sale("s1");
	assert_int_equal(archive("s1").http, 200);          /* no reservation: at once */
	/* the name comes back as a new sale: alice and her device start from 0 */
	make_sale("s0", 5, 1, 0);
	assert_int_equal(wr_sku_find(H->st, "s0", 2), 1);
	assert_int_equal(reserve_dev("s0", "alice", "k3", "dev-1").http, 201);
	expect_counts("s0", 5, 4, 1, 0);
	/* a snapshot keeps the free list: both states take the same slot next */
	close_sale("s5");
	assert_int_equal(archive("s5").http, 200);
	struct wr_state *cp = image_copy(H->st);
	assert_int_equal(wr_state_digest(cp), wr_state_digest(H->st));
	struct wr_state *orig = H->st;
	for (int i = 0; i < 2; i++) {
		H->st = i == 0 ? orig : cp;
		make_sale("s9", 5, 1, 0);
		assert_int_equal(wr_sku_find(H->st, "s9", 2), 5);
	}
	H->st = orig;
	assert_int_equal(wr_state_digest(cp), wr_state_digest(orig));
	wr_state_free(cp);
}

/* Closing a sale ends its waitlisted entries (they will never get units):
 * the writer expires them at once. Before, they stayed WAITLISTED forever,
 * and since retention reclaims in number order, every later reservation of
 * every sale stayed too: the tables filled up for good. */
static void test_close_expires_waitlist(void **state)
{
	(void)state;
	wr_state_set_retention(H->st, 1000);
	make_sale("w", 1, 1, 8);
	make_sale("o", 9, 0, 0);
	uint64_t held = reserve_ok("w", "alice", "k1", 1);
	struct fs_ans a = reserve("w", "bob", "k2", 1);
	assert_int_equal(a.res_status, FS_RES_WAITLISTED);
	uint64_t waiting = a.res_no;
	uint64_t later = reserve_ok("o", "carol", "k3", 1);   /* another sale's, after it */
	assert_int_equal(cancel("carol", later).http, 200);
	assert_int_equal(cancel("alice", held).http, 200);      /* bob's place comes up: promoted */
	assert_int_equal(status_of("bob", waiting), FS_RES_RESERVED);
	a = reserve("w", "dave", "k4", 1);
	assert_int_equal(a.res_status, FS_RES_WAITLISTED);
	uint64_t dave = a.res_no;
	close_sale("w");
	assert_true(wr_next_deadline(H->st) <= H->t);           /* the writer must look now */
	struct fs_cmd d[8];
	uint32_t n = due(H->t, d, 8);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].type, FS_CMD_EXPIRE);
	assert_int_equal(d[0].ref, dave);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	assert_int_equal(d[0].out_status, FS_RES_EXPIRED);
	assert_int_equal(status_of("dave", dave), FS_RES_EXPIRED);
	expect_counts("w", 1, 0, 1, 0);                          /* bob still holds his unit */
	assert_int_equal(cancel("bob", waiting).http, 200);
	/* past the retention everything goes, carol's later one included; then the archive */
	H->t += 2000;
	n = due(H->t, d, 8);
	assert_int_equal(n, 1);
	assert_int_equal(d[0].type, FS_CMD_RECLAIM);
	assert_int_equal(d[0].ref, dave);
	run(d, 1);
	assert_int_equal(d[0].err, FS_OK);
	assert_int_equal(res_get("carol", later).err, FS_ERR_RECLAIMED);
	assert_int_equal(archive("w").http, 200);
}

static void test_checkout_paid(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 2);
	H->t += 1000;
	struct fs_cmd c;
	tc_checkout(&c, "alice", "ck", r, "tok_ok_visa");
	c.origin = 5;
	one_silent(&c);   /* no answer until the payment's outcome is known */
	uint64_t waiter = c.tag;
	assert_int_equal(c.err, FS_OK);
	assert_int_equal(c.out_ref, 1);
	assert_int_equal(c.out_status, FS_RES_PAYING);
	assert_int_equal(c.out_val, 2 * PRICE);
	assert_int_equal(H->out.record_count, 1);
	assert_int_equal(H->out.charge_count, 1);
	const struct wr_charge *ch = &H->out.charges[0];
	assert_int_equal(ch->order_no, 1);
	assert_int_equal(ch->amount_cents, 2 * PRICE);
	assert_int_equal(ch->token_len, 11);
	assert_memory_equal(ch->token, "tok_ok_visa", 11);
	assert_int_equal(ch->user_len, 5);
	assert_memory_equal(ch->user, "alice", 5);
	struct wr_charge pend[4];
	assert_int_equal(wr_pending_charges(H->st, 0, pend, 4), 1);
	assert_int_equal(pend[0].order_no, 1);
	/* the order and the reservation while paying */
	tc_get(&c, FS_CMD_ORDER_GET, "alice", 1);
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_ORDER);
	assert_int_equal(a.order_status, FS_ORDER_PENDING);
	assert_int_equal(a.res_no, r);
	a = res_get("alice", r);
	assert_int_equal(a.res_status, FS_RES_PAYING);
	assert_int_equal(a.order_no, 1);
	expect_counts("s", 5, 3, 2, 0);
	/* the outcome: answered to the checkout's origin and tag */
	H->t += 200;
	const struct wr_answer *w = pay(1, FS_PAY_OK);
	assert_non_null(w);
	assert_int_equal(H->out.answer_count, 1);
	assert_int_equal(w->origin, 5);
	assert_int_equal(w->ans.tag, waiter);
	assert_int_equal(w->ans.http, 200);
	assert_int_equal(w->ans.body, FS_BODY_CHECKOUT);
	assert_int_equal(w->ans.order_no, 1);
	assert_int_equal(w->ans.res_no, r);
	assert_int_equal(w->ans.order_status, FS_ORDER_PAID);
	assert_int_equal(w->ans.res_status, FS_RES_CONFIRMED);
	assert_int_equal(w->ans.amount_cents, 2 * PRICE);
	assert_int_equal(w->ans.paid_at_ms, H->t);
	struct fs_cmd d;
	rec_at(0, &d);
	assert_int_equal(d.type, FS_CMD_PAY_RESULT);
	assert_int_equal(d.out_status, FS_RES_CONFIRMED);
	expect_counts("s", 5, 3, 0, 2);
	assert_int_equal(wr_pending_charges(H->st, 0, pend, 4), 0);
	tc_get(&c, FS_CMD_ORDER_GET, "alice", 1);
	a = one(&c);
	assert_int_equal(a.order_status, FS_ORDER_PAID);
	assert_int_equal(a.paid_at_ms, H->t);
	/* a late duplicate of the outcome changes nothing */
	assert_null(pay(1, FS_PAY_DECLINED));
	assert_int_equal(H->out.record_count, 0);
	expect_counts("s", 5, 3, 0, 2);
}

static void test_checkout_declined(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 2);
	uint64_t tag;
	uint64_t o = checkout_ok("alice", "ck", r, &tag);
	const struct wr_answer *w = pay(o, FS_PAY_DECLINED);
	assert_non_null(w);
	assert_int_equal(w->ans.tag, tag);
	assert_int_equal(w->ans.http, 402);
	assert_int_equal(w->ans.body, FS_BODY_CHECKOUT);
	assert_int_equal(w->ans.order_status, FS_ORDER_FAILED);
	assert_int_equal(w->ans.reason, FS_PAY_DECLINED);
	assert_string_equal(fs_pay_reason_name(w->ans.reason), "card_declined");
	assert_int_equal(w->ans.res_status, FS_RES_FAILED);
	expect_counts("s", 5, 5, 0, 0);   /* units back */
	/* a failed reservation can be neither paid again nor cancelled */
	struct fs_cmd c;
	tc_checkout(&c, "alice", "ck2", r, "tok_ok");
	expect_err(&c, FS_ERR_BAD_STATE);
	/* the provider being down is a failure too (after the payment thread's retries) */
	r = reserve_ok("s", "alice", "k2", 1);
	o = checkout_ok("alice", "ck3", r, &tag);
	w = pay(o, FS_PAY_ERROR);
	assert_non_null(w);
	assert_int_equal(w->ans.http, 402);
	assert_int_equal(w->ans.reason, FS_PAY_ERROR);
	expect_counts("s", 5, 5, 0, 0);
}

/* API.md: the built-in provider declines any other token "with reason
 * invalid_token"; payment.c reports that as FS_PAY_INVALID. The decide step
 * must fail the order (402, units back) like any other decline. */
static void test_checkout_invalid_token(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	uint64_t tag;
	uint64_t o = checkout_ok("alice", "ck", r, &tag);
	const struct wr_answer *w = pay(o, FS_PAY_INVALID);
	if (w == NULL)
		fail_msg("PAY_RESULT with FS_PAY_INVALID was dropped: order %llu stays PENDING, "
		         "its units stay held forever and the checkout is never answered",
		         (unsigned long long)o);
	assert_int_equal(w->ans.tag, tag);
	assert_int_equal(w->ans.http, 402);
	assert_int_equal(w->ans.order_status, FS_ORDER_FAILED);
	assert_int_equal(w->ans.reason, FS_PAY_INVALID);
	expect_counts("s", 5, 5, 0, 0);
	/* garbage outcome values are refused */
	r = reserve_ok("s", "alice", "k2", 1);
	o = checkout_ok("alice", "ck2", r, NULL);
	assert_null(pay(o, 0));
	assert_null(pay(o, 9));
	assert_int_equal(H->out.record_count, 0);
}

static void test_checkout_errors(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	struct fs_cmd c;
	tc_checkout(&c, "bob", "ck", r, "tok_ok");   /* not the owner */
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_checkout(&c, "alice", "ck", r + 9, "tok_ok");
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_checkout(&c, "alice", "", r, "tok_ok");
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_checkout(&c, "alice", "ck", r, "");
	expect_err(&c, FS_ERR_BAD_REQUEST);
	/* a cancelled reservation cannot be checked out */
	uint64_t r2 = reserve_ok("s", "alice", "k2", 1);
	cancel("alice", r2);
	tc_checkout(&c, "alice", "ck", r2, "tok_ok");
	expect_err(&c, FS_ERR_BAD_STATE);
	expect_counts("s", 5, 4, 1, 0);
}

static void test_checkout_after_expiry(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	uint64_t r2 = reserve_ok("s", "alice", "k2", 1);
	/* at the deadline, before the EXPIRE is decided: already expired */
	H->t = T0 + HOLD;
	struct fs_cmd c;
	tc_checkout(&c, "alice", "ck", r, "tok_ok");
	expect_err(&c, FS_ERR_EXPIRED);
	assert_int_equal(fs_err_http(FS_ERR_EXPIRED), 410);
	/* the writer puts due EXPIREs first in a batch: a checkout in the same
	 * batch sees the expiry */
	struct fs_cmd b[4];
	assert_int_equal(due(H->t, b, 4), 2);
	tc_checkout(&b[2], "alice", "ck2", r2, "tok_ok");
	run(b, 3);
	const struct wr_answer *a = answer_for(b[2].tag);
	assert_non_null(a);
	assert_int_equal(a->ans.err, FS_ERR_EXPIRED);
	assert_int_equal(H->out.charge_count, 0);
	tc_checkout(&c, "alice", "ck", r, "tok_ok");
	expect_err(&c, FS_ERR_EXPIRED);
	expect_counts("s", 5, 5, 0, 0);
}

static void test_checkout_twice(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	make_sale("t", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	uint64_t tag;
	uint64_t o = checkout_ok("alice", "ck", r, &tag);
	struct fs_cmd c;
	tc_checkout(&c, "alice", "other-key", r, "tok_ok");   /* paying */
	expect_err(&c, FS_ERR_ALREADY_CHECKED_OUT);
	assert_int_equal(fs_err_http(FS_ERR_ALREADY_CHECKED_OUT), 409);
	/* the same key for another reservation is a misuse */
	uint64_t r2 = reserve_ok("t", "alice", "k2", 1);
	tc_checkout(&c, "alice", "ck", r2, "tok_ok");
	expect_err(&c, FS_ERR_KEY_REUSED);
	assert_int_equal(pay(o, FS_PAY_OK)->ans.tag, tag);
	tc_checkout(&c, "alice", "other-key", r, "tok_ok");   /* paid */
	expect_err(&c, FS_ERR_ALREADY_CHECKED_OUT);
	/* the same key again: the same order, answered at once, no new charge */
	tc_checkout(&c, "alice", "ck", r, "tok_ok");
	struct fs_ans a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_CHECKOUT);
	assert_int_equal(a.order_no, o);
	assert_int_equal(a.order_status, FS_ORDER_PAID);
	assert_int_equal(H->out.record_count, 0);
	assert_int_equal(H->out.charge_count, 0);
	/* and for a failed order: 402 again */
	o = checkout_ok("alice", "ck2", r2, NULL);
	pay(o, FS_PAY_DECLINED);
	tc_checkout(&c, "alice", "ck2", r2, "tok_ok");
	a = one(&c);
	assert_int_equal(a.http, 402);
	assert_int_equal(a.order_no, o);
	assert_int_equal(a.order_status, FS_ORDER_FAILED);
	expect_counts("s", 5, 4, 0, 1);
	expect_counts("t", 5, 5, 0, 0);
}

/* A retry of a checkout while the payment is still running gets the same
 * order (never a second order or charge). */
static void test_checkout_repeat_while_paying(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	uint64_t o = checkout_ok("alice", "ck", r, NULL);
	struct fs_cmd c;
	tc_checkout(&c, "alice", "ck", r, "tok_ok_1");
	run(&c, 1);
	assert_int_equal(H->out.record_count, 0);
	assert_int_equal(H->out.charge_count, 0);
	const struct wr_answer *a = answer_for(c.tag);
	if (a != NULL) {   /* answered at once: it must name the same, unpaid order */
		assert_int_equal(a->ans.order_no, o);
		assert_int_equal(a->ans.order_status, FS_ORDER_PENDING);
	}
	pay(o, FS_PAY_OK);
	assert_true(H->out.answer_count >= 1);
	for (uint32_t i = 0; i < H->out.answer_count; i++) {
		assert_int_equal(H->out.answers[i].ans.order_no, o);
		assert_int_equal(H->out.answers[i].ans.order_status, FS_ORDER_PAID);
	}
}

/* A hold that is paying is never expired: the payment's outcome decides. */
static void test_expiry_races_checkout(void **state)
{
	(void)state;
	make_sale("s", 2, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	H->t = T0 + HOLD - 1;
	uint64_t o = checkout_ok("alice", "ck", r, NULL);
	struct fs_cmd d[4];
	assert_int_equal(wr_next_deadline(H->st) <= T0 + HOLD, 1);   /* a stale head is fine */
	H->t = T0 + HOLD;
	assert_int_equal(due(H->t, d, 4), 0);
	H->t = T0 + 10 * HOLD;
	assert_int_equal(due(H->t, d, 4), 0);
	assert_int_equal(wr_next_deadline(H->st), INT64_MAX);
	tc_reset(&d[0], FS_CMD_EXPIRE);   /* even if someone asks */
	d[0].ref = r;
	expect_err(&d[0], FS_ERR_NOT_CANCELLABLE);
	assert_int_equal(status_of("alice", r), FS_RES_PAYING);
	const struct wr_answer *w = pay(o, FS_PAY_OK);
	assert_non_null(w);
	assert_int_equal(w->ans.http, 200);
	expect_counts("s", 2, 1, 0, 1);
}

/* ---- reads and ownership ------------------------------------------------------------------ */

static void test_reads_ownership(void **state)
{
	(void)state;
	make_sale("s", 5, 0, 0);
	uint64_t r = reserve_ok("s", "alice", "k", 1);
	uint64_t o = checkout_ok("alice", "ck", r, NULL);
	struct fs_cmd c;
	struct fs_ans a = res_get("alice", r);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_RES);
	assert_int_equal(a.res_no, r);
	assert_int_equal(H->out.record_count, 0);
	tc_get(&c, FS_CMD_RES_GET, "bob", r);
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_get(&c, FS_CMD_RES_GET, "alice", r + 1);
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_get(&c, FS_CMD_RES_GET, "alice", 0);
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_get(&c, FS_CMD_ORDER_GET, "alice", o);
	a = one(&c);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_ORDER);
	assert_int_equal(a.order_no, o);
	assert_int_equal(H->out.record_count, 0);
	tc_get(&c, FS_CMD_ORDER_GET, "bob", o);
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_get(&c, FS_CMD_ORDER_GET, "alice", o + 1);
	expect_err(&c, FS_ERR_NOT_FOUND);
	tc_get(&c, FS_CMD_ORDER_GET, "alice", 0);
	expect_err(&c, FS_ERR_NOT_FOUND);
	/* unknown command types are bad requests */
	tc_reset(&c, FS_CMD_NONE);
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_reset(&c, FS_CMD_PROMOTE);   /* derived: never an input */
	c.ref = r;
	expect_err(&c, FS_ERR_BAD_REQUEST);
	tc_reset(&c, 200);
	expect_err(&c, FS_ERR_BAD_REQUEST);
}

/* ---- capacity: explicit answers, and a refusal leaves no trace ---------------------------- */

static int setup_tiny(void **state)
{
	(void)state;
	struct wr_limits l;
	small_limits(&l);
	l.user_count_max = 4;
	l.reservation_count_max = 6;
	l.order_count_max = 2;
	l.idem_count_max = 9;
	l.holding_count_max = 4;
	return setup_with(&l);
}

static void test_capacity(void **state)
{
	(void)state;
	make_sale("s", 1, 0, 0);
	make_sale("big", 100, 0, 0);
	uint64_t r = reserve_ok("s", "u0", "k", 1);
	/* a crowd of new users finds it sold out: no user slot is used up */
	for (int i = 0; i < 20; i++) {
		char user[16];
		snprintf(user, sizeof user, "x%d", i);
		struct fs_cmd c;
		tc_reserve(&c, "s", user, "k", 1);
		expect_err(&c, FS_ERR_SOLD_OUT);
	}
	struct wr_usage u;
	wr_usage(H->st, &u);
	assert_int_equal(u.users, 1);
	assert_int_equal(u.holdings, 1);
	cancel("u0", r);
	reserve_ok("s", "x0", "k", 1);   /* a unit came back: a new user gets it */
	reserve_ok("big", "u2", "k", 1);
	reserve_ok("big", "u3", "k", 1);
	wr_usage(H->st, &u);
	assert_int_equal(u.users, 4);
	struct fs_cmd c;
	tc_reserve(&c, "big", "u4", "k", 1);   /* the user table is full */
	expect_err(&c, FS_ERR_OVERLOADED);
	assert_int_equal(fs_err_http(FS_ERR_OVERLOADED), 503);
	reserve_ok("big", "u2", "k2", 1);       /* known users go on: res 5 */
	tc_reserve(&c, "big", "u0", "kb", 1);   /* a 5th holding (u0, big) */
	expect_err(&c, FS_ERR_OVERLOADED);
	tc_reserve(&c, "s", "u0", "k9", 1);     /* (u0, s) exists, but s is sold out */
	expect_err(&c, FS_ERR_SOLD_OUT);
	tc_reserve(&c, "big", "u0", "kb", 1);
	expect_err(&c, FS_ERR_OVERLOADED);
	reserve_ok("big", "u3", "k2", 1);       /* res 6: the table is full */
	tc_reserve(&c, "big", "u3", "k3", 1);
	expect_err(&c, FS_ERR_OVERLOADED);
	/* repeats are still answered from the idempotency map */
	tc_reserve(&c, "big", "u3", "k2", 1);
	assert_int_equal(one(&c).http, 200);
	/* orders: two fit, the third is overloaded */
	checkout_ok("u2", "c", 3, NULL);
	checkout_ok("u3", "c", 4, NULL);
	tc_checkout(&c, "u2", "c2", 5, "tok_ok");
	expect_err(&c, FS_ERR_OVERLOADED);
	wr_usage(H->st, &u);
	assert_int_equal(u.reservations, 6);
	assert_int_equal(u.orders, 2);
	assert_int_equal(u.idem_keys, 8);
	assert_int_equal(u.holdings, 4);
}

/* ---- replay determinism --------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rnd64(void)
{
	uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

static uint32_t rnd(uint32_t n) { return (uint32_t)(rnd64() % n); }

static uint64_t env_u64(const char *name, uint64_t dflt)
{
	const char *s = getenv(name);
	return s && *s ? strtoull(s, NULL, 0) : dflt;
}

struct batch_log {
	int64_t t;
	uint32_t len, count;
	uint8_t *bytes;
};

/* A random mixed workload: few SKUs, few users, small stock. owner[r] is
 * the user index of reservation r (learned from decided reserves), so that
 * cancels and checkouts are mostly the owner's; orders[] are the orders
 * whose outcome is still to be reported. */
#define RP_RES_MAX (1u << 16)
static uint8_t rp_owner[RP_RES_MAX + 1];
static uint64_t rp_orders[1024];
static uint32_t rp_order_n;
static uint64_t rp_res_n, rp_key_seq;

static void rp_user(uint64_t r, char *user, size_t cap)
{
	if (r >= 1 && r <= rp_res_n && rnd(10) != 0)
		snprintf(user, cap, "u%u", rp_owner[r]);
	else
		snprintf(user, cap, "u%u", rnd(12));
}

static uint32_t random_batch(struct fs_cmd *b, uint32_t n)
{
	static const char *skus[3] = { "s0", "s1", "s2" };
	for (uint32_t i = 0; i < n; i++) {
		char user[16], key[24];
		uint32_t p = rnd(100);
		uint64_t r = 1 + rnd((uint32_t)rp_res_n + 1);
		if (rp_res_n > 8 && rnd(2))
			r = rp_res_n - rnd(8);   /* recent ones are live more often */
		rp_user(r, user, sizeof user);
		if (p < 45) {
			uint64_t kn = rp_key_seq != 0 && rnd(5) == 0 ? 1 + rnd((uint32_t)rp_key_seq) : ++rp_key_seq;
			snprintf(user, sizeof user, "u%u", rnd(12));
			snprintf(key, sizeof key, "k%llu", (unsigned long long)kn);
			tc_reserve(&b[i], skus[rnd(3)], user, key, 1 + rnd(2));
		} else if (p < 58) {
			tc_cancel(&b[i], user, r);
		} else if (p < 75) {
			snprintf(key, sizeof key, "c%u", rnd(40));
			tc_checkout(&b[i], user, key, r, "tok_ok");
		} else if (p < 88) {
			static const uint8_t pays[4] = { FS_PAY_OK, FS_PAY_OK, FS_PAY_DECLINED, FS_PAY_ERROR };
			uint64_t o = rp_order_n && rnd(8) ? rp_orders[rnd(rp_order_n)] : 1 + rnd(64);
			tc_pay(&b[i], o, pays[rnd(4)]);
		} else if (p < 92) {
			tc_admin(&b[i], FS_CMD_STOCK_ADD, skus[rnd(3)]);
			b[i].quantity = rnd(6);
		} else if (p < 95) {
			static const uint8_t verbs[5] = { FS_CMD_SALE_PAUSE, FS_CMD_SALE_FREEZE, FS_CMD_SALE_RESUME,
			                                  FS_CMD_SALE_RESUME, FS_CMD_SALE_OPEN };
			tc_admin(&b[i], verbs[rnd(5)], skus[rnd(3)]);
		} else {
			tc_get(&b[i], rnd(2) ? FS_CMD_RES_GET : FS_CMD_ORDER_GET, user, r);
		}
	}
	return n;
}

/* Learns owners and pending orders from a decided batch. */
static void rp_learn(const struct fs_cmd *b, uint32_t n, const struct wr_batch_out *out)
{
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &b[i];
		if (c->type == FS_CMD_RESERVE && c->err == FS_OK && c->out_ref <= RP_RES_MAX) {
			rp_owner[c->out_ref] = (uint8_t)atoi(c->user + 1);
			if (c->out_ref > rp_res_n)
				rp_res_n = c->out_ref;
		}
		if (c->type == FS_CMD_PAY_RESULT && c->err == FS_OK)
			for (uint32_t k = 0; k < rp_order_n; k++)
				if (rp_orders[k] == c->ref)
					rp_orders[k] = rp_orders[--rp_order_n];
	}
	for (uint32_t i = 0; i < out->charge_count && rp_order_n < 1024; i++)
		rp_orders[rp_order_n++] = out->charges[i].order_no;
}

static void test_replay_determinism(void **state)
{
	(void)state;
	uint64_t seed = env_u64("FS_SEED", (uint64_t)time(NULL));
	uint64_t steps = env_u64("FS_REPLAY_STEPS", 50000);
	printf("replay: seed=%llu steps=%llu\n", (unsigned long long)seed, (unsigned long long)steps);
	rng_state = seed;
	teardown(NULL);
	struct wr_limits l;
	small_limits(&l);
	l.reservation_count_max = 1u << 16;
	l.order_count_max = 1u << 15;
	l.idem_count_max = 1u << 17;
	assert_int_equal(setup_with(&l), 0);

	uint32_t log_cap = 1024, log_n = 0;
	struct batch_log *log = calloc(log_cap, sizeof *log);
	assert_non_null(log);
	struct fs_cmd b[64];
	/* the sales */
	static const uint32_t wl[3] = { 0, 3, 8 };
	for (uint32_t s = 0; s < 3; s++) {
		char name[16];
		snprintf(name, sizeof name, "s%u", s);
		tc_create(&b[2 * s], name, 3 + 2 * s, s, 500 + 300 * s, wl[s]);
		tc_admin(&b[2 * s + 1], FS_CMD_SALE_OPEN, name);
	}
	uint32_t n = 6;
	uint64_t done = 0;
	rp_res_n = rp_key_seq = 0;
	rp_order_n = 0;
	for (;;) {
		wr_decide(H->st, b, n, H->t, 0, &H->out);
		check_invariant(H->st);
		uint32_t promotes;
		check_records(b, n, &H->out, &promotes);
		rp_learn(b, n, &H->out);
		if (H->out.record_count != 0) {
			if (log_n == log_cap) {
				log_cap *= 2;
				log = realloc(log, log_cap * sizeof *log);
				assert_non_null(log);
			}
			struct batch_log *e = &log[log_n++];
			e->t = H->t;
			e->len = H->out.records_len;
			e->count = H->out.record_count;
			e->bytes = malloc(e->len);
			assert_non_null(e->bytes);
			memcpy(e->bytes, H->out.records, e->len);
		}
		done += n;
		if (done >= steps)
			break;
		/* the next batch: due timers first, like the writer */
		uint32_t adv = rnd(10);
		H->t += adv < 4 ? 0 : adv < 8 ? rnd(200) : rnd(1500);
		n = wr_due(H->st, H->t, b, 16);
		n += random_batch(b + n, 1 + rnd(40));
	}

	/* replay into a fresh state, batch by batch */
	struct wr_state *fresh = wr_state_new(&l);
	assert_non_null(fresh);
	struct wr_batch_out out;
	out_init(&out, 1024, l.sku_count_max);
	struct fs_cmd *cmds = calloc(1024, sizeof *cmds);
	assert_non_null(cmds);
	for (uint32_t i = 0; i < log_n; i++) {
		const struct batch_log *e = &log[i];
		int k = wr_rec_decode_batch(e->bytes, e->len, e->count, cmds, 1024);
		assert_int_equal(k, e->count);
		wr_decide(fresh, cmds, (uint32_t)k, e->t, 1, &out);
		if (out.records_len != e->len || memcmp(out.records, e->bytes, e->len) != 0)
			fail_msg("seed=%llu: replay of batch %u (t=%lld) regenerated different records",
			         (unsigned long long)seed, i, (long long)e->t);
		for (uint32_t j = 0; j < out.answer_count; j++)
			assert_int_equal(out.answers[j].origin, NO_ORIGIN);
	}
	struct wr_usage u1, u2;
	wr_usage(H->st, &u1);
	wr_usage(fresh, &u2);
	if (memcmp(&u1, &u2, sizeof u1) != 0)
		fail_msg("seed=%llu: usage differs after replay: live users=%u res=%u orders=%u idem=%u "
		         "holdings=%u, replayed users=%u res=%u orders=%u idem=%u holdings=%u",
		         (unsigned long long)seed, u1.users, u1.reservations, u1.orders, u1.idem_keys,
		         u1.holdings, u2.users, u2.reservations, u2.orders, u2.idem_keys, u2.holdings);
	if (wr_state_digest(fresh) != wr_state_digest(H->st))
		fail_msg("seed=%llu: replayed state digest differs", (unsigned long long)seed);
	for (uint32_t s = 0; s < wr_sku_count(H->st); s++) {
		struct wr_sku_view a, c;
		memset(&a, 0, sizeof a);
		memset(&c, 0, sizeof c);
		wr_sku_view(H->st, s, &a);
		wr_sku_view(fresh, s, &c);
		assert_memory_equal(&a, &c, sizeof a);
	}
	uint64_t sold = 0;
	for (uint32_t s = 0; s < wr_sku_count(H->st); s++) {
		struct wr_sku_view v;
		wr_sku_view(H->st, s, &v);
		sold += v.sold;
	}
	printf("replay: %u batches, %llu reservations, %llu orders, %llu units sold: replayed identically\n",
	       log_n, (unsigned long long)u1.reservations, (unsigned long long)u1.orders,
	       (unsigned long long)sold);
	for (uint32_t i = 0; i < log_n; i++)
		free(log[i].bytes);
	free(log);
	free(cmds);
	out_free(&out);
	wr_state_free(fresh);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_create_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_create_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_admin_transitions, setup, teardown),
		cmocka_unit_test_setup_teardown(test_sale_get_and_sold_out_state, setup, teardown),
		cmocka_unit_test_setup_teardown(test_stock_add, setup, teardown),
		cmocka_unit_test_setup_teardown(test_scheduled_open, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_idempotent_repeat, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_key_reused, setup, teardown),
		cmocka_unit_test_setup_teardown(test_idem_keys_of_other_users, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_sold_out, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reserve_limit, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_join, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_needs_units_held, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_promote_on_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_promote_on_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_promote_on_failed_payment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_cancel_waiting, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_serve_rest, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_stock_add_and_resume, setup, teardown),
		cmocka_unit_test_setup_teardown(test_waitlist_head_blocks, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_cancel_not_cancellable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry_exact_deadline, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry_order_and_max, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_paid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_retention_waits_for_refund, setup, teardown),
		cmocka_unit_test_setup_teardown(test_archive_frees_slot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_close_expires_waitlist, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_declined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_invalid_token, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_errors, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_after_expiry, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_twice, setup, teardown),
		cmocka_unit_test_setup_teardown(test_checkout_repeat_while_paying, setup, teardown),
		cmocka_unit_test_setup_teardown(test_expiry_races_checkout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_reads_ownership, setup, teardown),
		cmocka_unit_test_setup_teardown(test_capacity, setup_tiny, teardown),
		cmocka_unit_test_setup_teardown(test_replay_determinism, setup, teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
