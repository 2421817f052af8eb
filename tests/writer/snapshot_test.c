/* snapshot_test.c - snapshot files of the writer's state (writer/snapshot.c):
 * a save/load round trip gives a state that is equal (same digest) AND
 * decides the same (a random workload continued on the original and on the
 * loaded copy produces byte-identical journal records and answers); any
 * single bit flip or truncation of the file is refused with the file and an
 * offset named; a snapshot taken with other limits is refused.
 *
 * The workload is random; its seed is printed (FS_SEED=N reruns one).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/fs_cmd.h"
#include "writer/alloc.h"
#include "writer/record.h"
#include "writer/snapshot.h"

#define BATCH 64u
#define SKUS  3u
#define T0    1700000000000LL

static uint64_t rng_state;
static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

static void limits(struct wr_limits *l)
{
	l->sku_count_max = 8;
	l->user_count_max = 200;
	l->reservation_count_max = 4000;
	l->order_count_max = 2000;
	l->idem_count_max = 8000;
	l->holding_count_max = 1000;
	l->quantity_max = 4;
}

static void out_init(struct wr_batch_out *o)
{
	memset(o, 0, sizeof *o);
	o->answer_count_max = 5 * BATCH;
	o->answers = calloc(o->answer_count_max, sizeof *o->answers);
	o->records_cap = BATCH * (WR_REC_BYTES_MAX + 4 * (WR_REC_FIXED_BYTES + FS_SKU_LEN_MAX + 8)) + WR_REC_BYTES_MAX * 9;
	o->records = malloc(o->records_cap);
	o->charges = calloc(BATCH, sizeof *o->charges);
	o->sku_touched = calloc(8, sizeof(uint32_t));
	assert_true(o->answers && o->records && o->charges && o->sku_touched);
}

static void out_free(struct wr_batch_out *o)
{
	free(o->answers);
	free(o->records);
	free(o->charges);
	free(o->sku_touched);
}

static void set(char *dst, uint8_t *len, const char *s)
{
	*len = (uint8_t)strlen(s);
	memcpy(dst, s, *len);
}

static void own_ref(struct fs_cmd *c);

/* A random command of the workload; res_max/order_max bound the refs. */
static void random_cmd(struct fs_cmd *c, uint64_t res_max, uint64_t order_max, uint32_t step)
{
	memset(c, 0, sizeof *c);
	c->origin = 1;
	c->tag = (uint64_t)step + 1;
	char buf[64];
	snprintf(buf, sizeof buf, "sku%u", rnd(SKUS));
	set(c->sku, &c->sku_len, buf);
	snprintf(buf, sizeof buf, "user%u", rnd(150));
	set(c->user, &c->user_len, buf);
	uint32_t pick = rnd(100);
	if (pick < 55) {
		c->type = FS_CMD_RESERVE;
		c->quantity = 1 + rnd(2);
		snprintf(buf, sizeof buf, "k%u", rnd(3000));
		set(c->key, &c->key_len, buf);
		if (rnd(3) == 0) {
			snprintf(buf, sizeof buf, "dev%u", rnd(40));
			set(c->text, &c->text_len, buf);
		}
	} else if (pick < 70) {
		c->type = FS_CMD_CANCEL;
		c->ref = 1 + rnd((uint32_t)res_max + 1);
		own_ref(c);
	} else if (pick < 85) {
		c->type = FS_CMD_CHECKOUT;
		c->ref = 1 + rnd((uint32_t)res_max + 1);
		snprintf(buf, sizeof buf, "ck%u", rnd(3000));
		set(c->key, &c->key_len, buf);
		set(c->text, &c->text_len, "tok_ok");
		own_ref(c);
	} else if (pick < 95) {
		c->type = FS_CMD_PAY_RESULT;
		c->origin = 0xff;
		c->ref = 1 + rnd((uint32_t)order_max + 1);
		c->pay = rnd(3) ? FS_PAY_OK : FS_PAY_DECLINED;
	} else if (pick < 97) {
		c->type = FS_CMD_USER_TIER;
		c->quantity = rnd(5);
	} else if (pick < 99) {
		c->type = FS_CMD_IP_RULE;
		snprintf(buf, sizeof buf, "10.%u.0.0/16", rnd(5));
		set(c->text, &c->text_len, buf);
		c->quantity = 1 + rnd(2);
	} else {
		c->type = FS_CMD_EXPIRE;
		c->origin = 0xff;
		c->ref = 1 + rnd((uint32_t)res_max + 1);
	}
}

/* Reservations made so far and their users, learnt from the records, so
 * cancels and checkouts mostly name a reservation of their own user. */
static struct { uint64_t res_no; char user[FS_ID_LEN_MAX]; uint8_t len; } made[8192];
static uint32_t made_count;

static void learn(const struct wr_batch_out *o)
{
	for (uint32_t off = 0; off < o->records_len;) {
		struct fs_cmd c;
		uint32_t used = wr_rec_decode(o->records + off, o->records_len - off, &c);
		assert_true(used > 0);
		off += used;
		if (c.type == FS_CMD_RESERVE && made_count < 8192) {
			made[made_count].res_no = c.out_ref;
			memcpy(made[made_count].user, c.user, c.user_len);
			made[made_count++].len = c.user_len;
		}
	}
}

static void own_ref(struct fs_cmd *c)
{
	if (made_count == 0 || rnd(10) == 0)
		return;
	uint32_t i = made_count - 1 - rnd(made_count < 200 ? made_count : 200);
	c->ref = made[i].res_no;
	memcpy(c->user, made[i].user, made[i].len);
	c->user_len = made[i].len;
}

struct run {
	struct wr_state *st;
	struct wr_batch_out out;
	int64_t t;
};

/* Decides `batches` random batches (plus due timers) on every state in
 * runs[0..n), checking they all produce the same records and answers. */
static void drive(struct run *runs, int n, uint32_t batches)
{
	struct fs_cmd cmds[BATCH], copy[BATCH];
	for (uint32_t b = 0; b < batches; b++) {
		int64_t t = runs[0].t + 500 + rnd(3000);
		struct wr_usage u;
		wr_usage(runs[0].st, &u);
		uint32_t k = wr_due(runs[0].st, t, cmds, BATCH / 4);
		for (int r = 1; r < n; r++) {
			struct fs_cmd due[BATCH];
			assert_int_equal(wr_due(runs[r].st, t, due, BATCH / 4), k);
		}
		for (uint32_t want = BATCH / 2 + rnd(BATCH / 2); k < want; k++)
			random_cmd(&cmds[k], u.reservations, u.orders, b * BATCH + k);
		for (int r = 0; r < n; r++) {
			memcpy(copy, cmds, k * sizeof *cmds);
			wr_decide(runs[r].st, copy, k, t, 0, &runs[r].out);
			runs[r].t = t;
		}
		learn(&runs[0].out);
		for (int r = 1; r < n; r++) {
			assert_int_equal(runs[r].out.records_len, runs[0].out.records_len);
			assert_memory_equal(runs[r].out.records, runs[0].out.records, runs[0].out.records_len);
			/* the answers are equal but for checkout outcomes: requests
			 * that waited on a payment before the snapshot died with the
			 * process that took them (a loaded state has no waiters), so
			 * which repeat waits and which is told 202 at once may differ */
			uint32_t i0 = 0, i1 = 0;
			const struct wr_batch_out *o0 = &runs[0].out, *o1 = &runs[r].out;
			for (;;) {
				while (i0 < o0->answer_count && o0->answers[i0].ans.body == FS_BODY_CHECKOUT)
					i0++;
				while (i1 < o1->answer_count && o1->answers[i1].ans.body == FS_BODY_CHECKOUT)
					i1++;
				if (i0 == o0->answer_count || i1 == o1->answer_count)
					break;
				assert_memory_equal(&o0->answers[i0], &o1->answers[i1], sizeof o0->answers[i0]);
				i0++, i1++;
			}
			assert_int_equal(o0->answer_count - i0, o1->answer_count - i1);
		}
	}
}

static char dir[PATH_MAX];

static void create_sales(struct run *r)
{
	struct fs_cmd c[SKUS * 2];
	for (uint32_t i = 0; i < SKUS; i++) {
		char name[16];
		memset(&c[2 * i], 0, 2 * sizeof *c);
		snprintf(name, sizeof name, "sku%u", i);
		c[2 * i].type = FS_CMD_SALE_CREATE;
		set(c[2 * i].sku, &c[2 * i].sku_len, name);
		c[2 * i].sale.total = 300;
		c[2 * i].sale.per_user = 3;
		c[2 * i].sale.hold_ms = 20000;
		c[2 * i].sale.waitlist_max = i == 1 ? 50 : 0;
		c[2 * i].sale.default_tier = 4;
		c[2 * i].sale.price_cents = 100;
		c[2 * i + 1].type = FS_CMD_SALE_OPEN;
		set(c[2 * i + 1].sku, &c[2 * i + 1].sku_len, name);
	}
	wr_decide(r->st, c, SKUS * 2, r->t, 0, &r->out);
}

static void snapshot_roundtrip(void **state)
{
	(void)state;
	struct wr_limits l;
	limits(&l);
	struct run runs[2];
	memset(runs, 0, sizeof runs);
	runs[0].st = wr_state_new(&l);
	assert_non_null(runs[0].st);
	out_init(&runs[0].out);
	runs[0].t = T0;
	create_sales(&runs[0]);
	drive(runs, 1, 200);
	struct wr_snap_stamp stamp = { .seq = 4242, .time_ms = runs[0].t };
	memset(stamp.chain, 0xab, sizeof stamp.chain);
	char err[PATH_MAX + 256];
	assert_int_equal(wr_snapshot_write(dir, runs[0].st, &stamp, 0, err, sizeof err), 0);
	uint64_t seqs[4];
	assert_int_equal(wr_snapshot_list(dir, seqs, 4), 1);
	assert_int_equal(seqs[0], 4242);
	char path[PATH_MAX + 64];
	wr_snapshot_path(path, sizeof path, dir, 4242);
	runs[1].st = wr_state_new(&l);
	out_init(&runs[1].out);
	struct wr_snap_stamp got;
	uint64_t bytes = 0;
	assert_int_equal(wr_snapshot_load(path, runs[1].st, &got, &bytes, err, sizeof err), 0);
	assert_int_equal(got.seq, 4242);
	assert_int_equal(got.time_ms, stamp.time_ms);
	assert_memory_equal(got.chain, stamp.chain, 16);
	assert_true(bytes > 0);
	runs[1].t = runs[0].t;
	assert_int_equal(wr_state_time_ms(runs[1].st), runs[0].t);
	assert_int_equal(wr_state_digest(runs[1].st), wr_state_digest(runs[0].st));
	struct wr_usage u0, u1;
	wr_usage(runs[0].st, &u0);
	wr_usage(runs[1].st, &u1);
	assert_memory_equal(&u0, &u1, sizeof u0);
	if (u0.reservations < 100 || u0.orders < 10)
		fail_msg("workload too thin: %u reservations, %u orders", u0.reservations, u0.orders);
	/* same decisions from here on */
	drive(runs, 2, 200);
	assert_int_equal(wr_state_digest(runs[1].st), wr_state_digest(runs[0].st));
	/* another limit set refuses it, naming the file */
	struct wr_limits other = l;
	other.user_count_max = 300;
	struct wr_state *o = wr_state_new(&other);
	assert_int_equal(wr_snapshot_load(path, o, &got, NULL, err, sizeof err), -1);
	assert_non_null(strstr(err, path));
	assert_non_null(strstr(err, "limits"));
	wr_state_free(o);
	for (int r = 0; r < 2; r++) {
		wr_state_free(runs[r].st);
		out_free(&runs[r].out);
	}
}

/* Every bit flip (at random offsets) and every truncation is refused with
 * the file and an offset in the reason; the original still loads. */
static void snapshot_damage(void **state)
{
	(void)state;
	struct wr_limits l;
	limits(&l);
	struct run r;
	memset(&r, 0, sizeof r);
	r.st = wr_state_new(&l);
	out_init(&r.out);
	r.t = T0;
	create_sales(&r);
	drive(&r, 1, 50);
	struct wr_snap_stamp stamp = { .seq = 7, .time_ms = r.t };
	strcat(dir, "/damage");
	assert_int_equal(mkdir(dir, 0700), 0);
	char err[PATH_MAX + 256], path[PATH_MAX + 64], bad[PATH_MAX + 80];
	assert_int_equal(wr_snapshot_write(dir, r.st, &stamp, 0, err, sizeof err), 0);
	wr_snapshot_path(path, sizeof path, dir, 7);
	FILE *f = fopen(path, "rb");
	assert_non_null(f);
	static uint8_t img[4 << 20];
	size_t size = fread(img, 1, sizeof img, f);
	fclose(f);
	assert_true(size > 1000 && size < sizeof img);
	snprintf(bad, sizeof bad, "%s/bad.snap", dir);
	for (int i = 0; i < 300; i++) {
		int trunc = i % 3 == 0;
		size_t at = rnd((uint32_t)size);
		uint8_t bit = (uint8_t)(1u << rnd(8));
		f = fopen(bad, "wb");
		assert_non_null(f);
		if (trunc) {
			assert_int_equal(fwrite(img, 1, at, f), at);
		} else {
			img[at] ^= bit;
			assert_int_equal(fwrite(img, 1, size, f), size);
			img[at] ^= bit;
		}
		fclose(f);
		struct wr_state *s = wr_state_new(&l);
		struct wr_snap_stamp got;
		int rc = wr_snapshot_load(bad, s, &got, NULL, err, sizeof err);
		if (rc == 0)
			fail_msg("damage %s at %zu (bit %u) was accepted", trunc ? "truncation" : "flip", at, bit);
		assert_non_null(strstr(err, bad));
		assert_non_null(strstr(err, "offset"));
		wr_state_free(s);
	}
	struct wr_state *s = wr_state_new(&l);
	struct wr_snap_stamp got;
	assert_int_equal(wr_snapshot_load(path, s, &got, NULL, err, sizeof err), 0);
	assert_int_equal(wr_state_digest(s), wr_state_digest(r.st));
	wr_state_free(s);
	/* prune keeps the newest, removes leftovers of a crash */
	snprintf(bad, sizeof bad, "%s/%s/.tmp-00000000000000000009.snap", dir, WR_SNAP_SUBDIR);
	f = fopen(bad, "wb");
	assert_non_null(f);
	fclose(f);
	stamp.seq = 8;
	assert_int_equal(wr_snapshot_write(dir, r.st, &stamp, 0, err, sizeof err), 0);
	assert_int_equal(wr_snapshot_prune(dir, 1), 8);
	uint64_t seqs[4];
	assert_int_equal(wr_snapshot_list(dir, seqs, 4), 1);
	assert_int_equal(seqs[0], 8);
	assert_int_equal(access(bad, F_OK), -1);
	wr_state_free(r.st);
	out_free(&r.out);
}

int main(void)
{
	const char *env = getenv("FS_SEED");
	uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ (uint64_t)getpid();
	if (seed == 0)
		seed = 1;
	rng_state = seed;
	printf("snapshot_test: seed %" PRIu64 " (rerun with FS_SEED=%" PRIu64 ")\n", seed, seed);
	snprintf(dir, sizeof dir, "/tmp/fs-snapshot-test-XXXXXX");
	if (mkdtemp(dir) == NULL)
		return 1;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(snapshot_roundtrip),
		cmocka_unit_test(snapshot_damage),
	};
	int rc = cmocka_run_group_tests(tests, NULL, NULL);
	char cmd[PATH_MAX + 16];
	snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
	if (system(cmd) != 0)
		rc = rc ? rc : 1;
	return rc;
}
