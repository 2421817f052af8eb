/* test_seed.c - a sink's model seeded from a writer snapshot
 * (writer/sink/sink_seed.c) equals the model replayed from batch 1.
 *
 * The real decide step (writer/alloc.c) runs a random sale: four SKUs,
 * forty users reserving, cancelling, checking out, paid or declined, holds
 * expiring, a waitlist, retention reclaiming, pauses and stock added. Every
 * batch's records go into a sink model (the replay). At a random batch the
 * state is snapshotted (wr_snapshot_write) and a second model is seeded
 * from that file: what Kafka and Redis use of the model (every SKU's index,
 * name, state, counters and API version; the live reservations and PENDING
 * orders) must equal the replay's. Then both models take the same further
 * batches and must still agree, so a seeded sink goes on as a replayed one.
 * FS_SEED=N replays a run (the seed is printed); FS_SEED_DEBUG=1 prints the
 * refusals of batches that journaled nothing.
 */
#include "sink_testlib.h"

#include <inttypes.h>
#include <string.h>
#include <time.h>

#include "writer/alloc.h"
#include "writer/record.h"
#include "writer/snapshot.h"
#include "writer/sink/sink_model.h"
#include "writer/sink/sink_seed.h"

#define SKUS      4u
#define USERS     40u
#define CMDS_MAX  8u
#define RES_MAX   4096u

static uint64_t rng;
static struct wr_state *st;
static struct wr_batch_out out;
static struct fs_cmd recs[CMDS_MAX * 8 + SKUS];
static uint64_t seq;
static int64_t t_ms = 1700000000000LL;
static uint32_t res_user[RES_MAX + 1];       /* reservation number -> user + 1 */
static uint64_t pending[RES_MAX];            /* orders waiting for their payment */
static uint32_t pending_count;

static uint32_t rnd(uint32_t n)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return (uint32_t)(rng % n);
}

static void field(char *dst, uint8_t *len, size_t cap, const char *s)
{
	CHECK(fs_field_set(dst, len, cap, s, strlen(s)) >= 0);
}

static void cmd(struct fs_cmd *c, uint8_t type, uint32_t sku, int user)
{
	char name[16];
	memset(c, 0, sizeof *c);
	c->type = type;
	c->origin = 1;
	if (sku < SKUS) {
		snprintf(name, sizeof name, "s%u", sku);
		field(c->sku, &c->sku_len, FS_SKU_LEN_MAX, name);
	}
	if (user >= 0) {
		snprintf(name, sizeof name, "u%d", user);
		field(c->user, &c->user_len, FS_ID_LEN_MAX, name);
	}
}

/* Decides one batch and applies its records to every model given. */
static void run(struct fs_cmd *cmds, uint32_t n, struct sink_model **models, int model_count)
{
	wr_decide(st, cmds, n, t_ms, 0, &out);
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &cmds[i];
		if (c->err != FS_OK)
			continue;
		if (c->type == FS_CMD_RESERVE && c->out_ref != 0 && c->out_ref <= RES_MAX && res_user[c->out_ref] == 0) {
			char name[FS_ID_LEN_MAX + 1];
			memcpy(name, c->user, c->user_len);
			name[c->user_len] = 0;
			res_user[c->out_ref] = (uint32_t)strtoul(name + 1, NULL, 10) + 1;   /* "u<N>" */
		}
		if (c->type == FS_CMD_CHECKOUT && c->out_ref != 0 && pending_count < RES_MAX)
			pending[pending_count++] = c->out_ref;
	}
	if (out.record_count == 0) {
		if (getenv("FS_SEED_DEBUG"))
			for (uint32_t i = 0; i < n; i++)
				fprintf(stderr, "t=%lld type %s err %s\n", (long long)t_ms, fs_cmd_type_name((enum fs_cmd_type)cmds[i].type),
				        fs_err_name((enum fs_err)cmds[i].err));
		return;
	}
	seq++;
	int got = wr_rec_decode_batch(out.records, out.records_len, out.record_count, recs,
	                              sizeof recs / sizeof recs[0]);
	CHECK(got == (int)out.record_count);
	for (int k = 0; k < model_count; k++)
		CHECK(sm_apply_batch(models[k], seq, t_ms, recs, out.record_count, NULL) == 1);
}

/* The user a reservation was made for, or -1. */
static int user_of(uint64_t res_no)
{
	return res_no <= RES_MAX && res_user[res_no] ? (int)res_user[res_no] - 1 : -1;
}

static uint32_t next_batch(struct fs_cmd *cmds)
{
	uint32_t n = 1 + rnd(CMDS_MAX);
	uint64_t res_floor, res_count, of, oc;
	wr_pub_bounds(st, &res_floor, &res_count, &of, &oc);
	for (uint32_t i = 0; i < n; i++) {
		struct fs_cmd *c = &cmds[i];
		uint32_t p = rnd(100);
		uint64_t no = res_count > res_floor ? res_floor + 1 + rnd((uint32_t)(res_count - res_floor)) : 0;
		int u = no ? user_of(no) : -1;
		char key[24];
		if (p < 45 || (p < 75 && u < 0)) {
			int user = (int)rnd(USERS);
			cmd(c, FS_CMD_RESERVE, rnd(SKUS), user);
			snprintf(key, sizeof key, "k%" PRIu64 "-%u", seq, i);
			field(c->key, &c->key_len, FS_ID_LEN_MAX, key);
			c->quantity = 1 + rnd(2);
		} else if (p < 60) {
			cmd(c, FS_CMD_CANCEL, SKUS, u);
			c->ref = no;
		} else if (p < 75) {
			cmd(c, FS_CMD_CHECKOUT, SKUS, u);
			c->ref = no;
			snprintf(key, sizeof key, "c%" PRIu64 "-%u", seq, i);
			field(c->key, &c->key_len, FS_ID_LEN_MAX, key);
			field(c->text, &c->text_len, FS_ID_LEN_MAX, "tok_ok");
		} else if (p < 88 && pending_count > 0 && rnd(4) == 0) {   /* payments lag: orders stay PENDING */
			uint32_t j = rnd(pending_count);
			cmd(c, FS_CMD_PAY_RESULT, SKUS, -1);
			c->ref = pending[j];
			c->pay = rnd(4) ? FS_PAY_OK : FS_PAY_DECLINED;
			field(c->text, &c->text_len, FS_ID_LEN_MAX, c->pay == FS_PAY_OK ? "charged" : "declined");
			pending[j] = pending[--pending_count];
		} else if (p < 92) {
			cmd(c, FS_CMD_STOCK_ADD, rnd(2), -1);   /* s0, s1: s2 stays small */
			c->quantity = 1 + rnd(5);
		} else if (p < 96) {
			cmd(c, rnd(3) ? FS_CMD_SALE_RESUME : FS_CMD_SALE_PAUSE, rnd(SKUS), -1);
		} else {
			cmd(c, FS_CMD_RESERVE, rnd(SKUS), (int)rnd(USERS));   /* a repeat key: idempotent */
			snprintf(key, sizeof key, "k%" PRIu64 "-0", seq > 3 ? seq - 3 : 1);
			field(c->key, &c->key_len, FS_ID_LEN_MAX, key);
			c->quantity = 1;
		}
	}
	return n;
}

/* One step: the timers' commands, then a random batch. */
static void step(struct sink_model **models, int model_count)
{
	static struct fs_cmd cmds[64];
	t_ms += 50 + rnd(900);
	uint32_t due = wr_due(st, t_ms, cmds, 64);
	if (due > 0)
		run(cmds, due, models, model_count);
	uint32_t n = next_batch(cmds);
	run(cmds, n, models, model_count);
}

static void compare(const struct sink_model *a, const struct sink_model *b, const char *when)
{
	CHECK(a->sku_count == b->sku_count);
	for (uint32_t k = 0; k < a->sku_count; k++) {
		const struct sm_sku *x = &a->skus[k], *y = &b->skus[k];
		if (x->sku_len != y->sku_len || memcmp(x->sku, y->sku, x->sku_len) != 0 || x->state != y->state ||
		    x->total != y->total || x->available != y->available || x->reserved != y->reserved ||
		    x->sold != y->sold || x->api_version != y->api_version) {
			fprintf(stderr, "%s: SKU %u differs: %s %u %" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 " v%" PRIu64
			        " vs %s %u %" PRId64 "/%" PRId64 "/%" PRId64 "/%" PRId64 " v%" PRIu64 "\n", when, k,
			        x->sku, x->state, x->total, x->available, x->reserved, x->sold, x->api_version,
			        y->sku, y->state, y->total, y->available, y->reserved, y->sold, y->api_version);
			exit(1);
		}
	}
	CHECK(a->res.count == b->res.count);
	for (size_t i = 0; i < a->res.cap; i++) {
		const struct sm_res *x = sm_tab_slot(&a->res, i);
		if (x == NULL)
			continue;
		const struct sm_res *y = sm_tab_find(&b->res, x->no);
		if (y == NULL || y->order_no != x->order_no || y->expires_at_ms != x->expires_at_ms ||
		    y->sku_idx != x->sku_idx || y->quantity != x->quantity || y->status != x->status) {
			fprintf(stderr, "%s: reservation %" PRIu64 " differs (or missing in the seed)\n", when, x->no);
			exit(1);
		}
	}
	CHECK(a->orders.count == b->orders.count);
	for (size_t i = 0; i < a->orders.cap; i++) {
		const struct sm_order *x = sm_tab_slot(&a->orders, i);
		if (x == NULL)
			continue;
		const struct sm_order *y = sm_tab_find(&b->orders, x->no);
		CHECK(y != NULL && y->res_no == x->res_no && y->status == x->status);
	}
}

int main(void)
{
	const char *env = getenv("FS_SEED");
	uint32_t seed = env ? (uint32_t)strtoul(env, NULL, 10) : (uint32_t)time(NULL);
	printf("sinks_seed: seed %u (rerun with FS_SEED=%u)\n", seed, seed);
	rng = 0x9e3779b97f4a7c15ull ^ seed;
	struct wr_limits l;
	wr_limits_default(&l);
	l.sku_count_max = 16;
	l.user_count_max = 256;
	l.reservation_count_max = RES_MAX;
	l.order_count_max = RES_MAX;
	l.idem_count_max = 4 * RES_MAX;
	l.holding_count_max = 1024;
	CHECK((st = wr_state_new(&l)) != NULL);
	wr_state_set_retention(st, rnd(2) ? 3000 : 0);
	CHECK(wr_batch_out_alloc(&out, 64, wr_batch_records_cap(64, l.sku_count_max), l.sku_count_max) == 0);
	struct sink_model replayed, seeded;
	CHECK(sm_init(&replayed, 0) == 0);
	struct sink_model *one[1] = { &replayed };

	struct fs_cmd open[2 * SKUS];
	for (uint32_t k = 0; k < SKUS; k++) {
		cmd(&open[2 * k], FS_CMD_SALE_CREATE, k, -1);
		open[2 * k].sale.total = k == 2 ? 5 : 100 + 50 * k;   /* s2 is sold out most of the time */
		open[2 * k].sale.per_user = k == 3 ? 0 : 3;
		open[2 * k].sale.hold_ms = 20000 + 10000 * k;
		open[2 * k].sale.waitlist_max = k == 1 ? 8 : 0;
		open[2 * k].sale.price_cents = 1999;
		cmd(&open[2 * k + 1], FS_CMD_SALE_OPEN, k, -1);
	}
	run(open, 2 * SKUS, one, 1);
	uint32_t at = 200 + rnd(400);
	for (uint32_t i = 0; i < at; i++)
		step(one, 1);

	char *dir = test_tmpdir("seed");
	char err[512] = "";
	struct wr_snap_stamp stamp = { .seq = seq, .time_ms = t_ms };
	CHECK(wr_snapshot_write(dir, st, &stamp, 0, err, sizeof err) == 0);
	CHECK(sink_seed_from_snapshot(dir, seq + 1, UINT64_MAX, &seeded, err, sizeof err) == 0);   /* none that late */
	int rc = sink_seed_from_snapshot(dir, 0, seq, &seeded, err, sizeof err);
	if (rc != 1)
		fprintf(stderr, "seed: %d %s\n", rc, err);
	CHECK(rc == 1 && seeded.last_seq == seq);
	uint64_t live = replayed.res.count, paying = 0, orders_pending = pending_count;
	for (size_t i = 0; i < replayed.res.cap; i++) {
		const struct sm_res *r = sm_tab_slot(&replayed.res, i);
		paying += r != NULL && r->status == FS_RES_PAYING;
	}
	compare(&replayed, &seeded, "at the snapshot");
	struct sink_model *both[2] = { &replayed, &seeded };
	for (uint32_t i = 0; i < 300; i++)
		step(both, 2);
	compare(&replayed, &seeded, "300 steps after the snapshot");
	CHECK(replayed.anomalies == 0 && seeded.anomalies == 0);
	printf("sinks_seed: snapshot at batch %" PRIu64 " (%" PRIu64 " live reservations, %" PRIu64 " paying, %" PRIu64 " orders "
	       "pending): the seeded model equals the replay there and %" PRIu64 " batches later\n", stamp.seq, live,
	       paying, orders_pending, seq - stamp.seq);
	sm_free(&replayed);
	sm_free(&seeded);
	wr_batch_out_free(&out);
	wr_state_free(st);
	test_rmdir(dir);
	free(dir);
	return 0;
}
