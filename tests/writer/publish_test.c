/* publish_test.c - the published reservations and orders (writer/publish.c,
 * common/fs_pub.c) answer every read exactly as the writer does.
 *
 * A random workload (reservations with idempotent repeats, a waitlist,
 * cancels, checkouts, payment results, hold expiry, retention reclaim on
 * tables small enough that reclaimed ring slots are reused) runs through
 * the decide step; after each batch the writer's publisher stores it. Then
 * every reservation and order number (and one past the end), read by every
 * user, is answered twice: by the writer (a RES_GET / ORDER_GET command
 * through wr_decide) and from the published region, and both answers,
 * rendered by the dataplane's renderer, must be the same bytes. A publish
 * from scratch (start-up) must give the same answers as the batch-by-batch
 * one. FS_SEED picks the seed (printed), FS_PUBLISH_BATCHES the length.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/fs_pub.h"
#include "dataplane/response.h"
#include "writer/alloc.h"
#include "writer/publish.h"
#include "writer/record.h"
#include "tests/writer/model.h"

#define BATCH_MAX 64u
#define USERS     6
#define T0        1700000000000LL

static const char *const user_names[USERS] = { "ann", "bob", "cy", "dee", "eve-with-a-longer-name", "f" };

struct t {
	struct wr_limits lim;
	struct wr_state *st;
	struct wr_batch_out out;
	struct fs_pub *pub;
	struct wr_publisher pb;
	int64_t t;
	uint64_t tag;
	uint64_t reads;
	uint64_t seen_waitlisted, seen_orders, seen_reclaimed, seen_other_user;   /* what the reads covered */
};

static void setup_t(struct t *x)
{
	memset(x, 0, sizeof *x);
	x->lim = (struct wr_limits){ .sku_count_max = 4, .user_count_max = 16, .reservation_count_max = 24,
	                             .order_count_max = 8, .idem_count_max = 256, .holding_count_max = 64,
	                             .quantity_max = 3 };
	x->st = wr_state_new(&x->lim);
	assert_non_null(x->st);
	wr_state_set_retention(x->st, 2000);
	assert_int_equal(wr_batch_out_alloc(&x->out, BATCH_MAX * 2,
	                                    wr_batch_records_cap(BATCH_MAX * 2, x->lim.sku_count_max),
	                                    x->lim.sku_count_max), 0);
	x->pub = fs_pub_map(x->lim.sku_count_max, x->lim.user_count_max, x->lim.reservation_count_max,
	                    x->lim.order_count_max);
	assert_non_null(x->pub);
	assert_int_equal(wr_publisher_init(&x->pb, x->pub, x->lim.sku_count_max), 0);
	x->t = T0;
}

static void teardown_t(struct t *x)
{
	wr_publisher_free(&x->pb);
	fs_pub_unmap(x->pub);
	wr_batch_out_free(&x->out);
	wr_state_free(x->st);
}

/* Decides cmds (plus what is due), then publishes, as writer.c does after
 * the batch is durable. */
static void batch(struct t *x, struct fs_cmd *cmds, uint32_t n)
{
	struct fs_cmd all[BATCH_MAX * 2];
	uint32_t m = wr_due(x->st, x->t, all, BATCH_MAX);
	for (uint32_t i = 0; i < m; i++)
		all[i].origin = 0xff;
	for (uint32_t i = 0; i < n; i++) {
		all[m] = cmds[i];
		all[m].tag = ++x->tag;
		all[m].origin = 1;
		m++;
	}
	wr_decide(x->st, all, m, x->t, 0, &x->out);
	wr_publish_batch(&x->pb, x->st, &x->out, all, m);
}

static int render(const struct fs_ans *a, char *buf, size_t cap)
{
	int n = dp_resp_answer(buf, cap, a, (struct dp_id_owner){ 0, 0 }, 1);
	assert_true(n > 0);
	return n;
}

/* The writer's answer to a read, rendered. */
static int writer_read(struct t *x, uint8_t type, const char *user, uint64_t no, char *buf, size_t cap)
{
	struct fs_cmd c;
	tc_get(&c, type, user, no);
	c.tag = ++x->tag;
	c.origin = 1;
	wr_decide(x->st, &c, 1, x->t, 0, &x->out);
	assert_int_equal(x->out.record_count, 0);   /* reads journal nothing */
	assert_int_equal(x->out.answer_count, 1);
	return render(&x->out.answers[0].ans, buf, cap);
}

/* The published answer to the same read, rendered as route.c does. */
static int pub_read(const struct fs_pub *p, uint8_t type, const char *user, uint64_t no, char *buf, size_t cap)
{
	struct fs_ans a;
	enum fs_pub_rc rc = type == FS_CMD_ORDER_GET ? fs_pub_order_read(p, no, user, strlen(user), &a)
	                                             : fs_pub_res_read(p, no, user, strlen(user), &a);
	assert_int_not_equal(rc, FS_PUB_BUSY);   /* no writer is publishing now */
	if (rc != FS_PUB_OK) {
		memset(&a, 0, sizeof a);
		a.err = (uint8_t)(rc == FS_PUB_RECLAIMED ? FS_ERR_RECLAIMED : FS_ERR_NOT_FOUND);
		a.http = (uint16_t)fs_err_http((enum fs_err)a.err);
		a.body = FS_BODY_ERROR;
	}
	return render(&a, buf, cap);
}

static void compare_all(struct t *x, const struct fs_pub *p, unsigned seed, uint64_t step)
{
	struct wr_usage u;
	wr_usage(x->st, &u);
	uint64_t rf, rc, of, oc;
	wr_pub_bounds(x->st, &rf, &rc, &of, &oc);
	for (int kind = 0; kind < 2; kind++) {
		uint8_t type = kind ? FS_CMD_ORDER_GET : FS_CMD_RES_GET;
		uint64_t last = kind ? oc : rc, floor = kind ? of : rf;
		for (uint64_t no = floor > 3 ? floor - 3 : 1; no <= last + 1; no++)   /* a few reclaimed ones too */
			for (int i = 0; i < USERS; i++) {
				char w[1024], q[1024];
				int wn = writer_read(x, type, user_names[i], no, w, sizeof w);
				int qn = pub_read(p, type, user_names[i], no, q, sizeof q);
				x->reads++;
				x->seen_waitlisted += memmem(w, (size_t)wn, "\"WAITLISTED\"", 12) != NULL;
				x->seen_orders += kind && wn > 12 && memcmp(w, "HTTP/1.1 200", 12) == 0;
				x->seen_reclaimed += memmem(w, (size_t)wn, "expired from the appliance", 26) != NULL;
				if (wn != qn || memcmp(w, q, (size_t)wn) != 0)
					fail_msg("FS_SEED=%u step %llu: %s %llu by %s:\nwriter:    %.*s\npublished: %.*s", seed,
					         (unsigned long long)step, kind ? "order" : "reservation",
					         (unsigned long long)no, user_names[i], wn, w, qn, q);
			}
	}
}

static uint64_t rnd(uint64_t n) { return n ? (uint64_t)rand() % n : 0; }

static void random_cmd(struct t *x, struct fs_cmd *c)
{
	uint64_t rf, rc, of, oc;
	wr_pub_bounds(x->st, &rf, &rc, &of, &oc);
	const char *user = user_names[rnd(USERS)];
	char key[16];
	snprintf(key, sizeof key, "k%llu", (unsigned long long)rnd(40));   /* repeats happen */
	switch (rnd(7)) {
	case 6:   /* a freeze, later a resume: every hold gets the frozen time back */
		tc_admin(c, rnd(2) ? FS_CMD_SALE_FREEZE : FS_CMD_SALE_RESUME, rnd(2) ? "alpha" : "beta");
		break;
	case 0:
	case 1:
		tc_reserve(c, rnd(2) ? "alpha" : "beta", user, key, (uint32_t)(1 + rnd(2)));
		break;
	case 2:
		tc_cancel(c, user, rf + 1 + rnd(rc - rf + 1));
		break;
	case 3:
		tc_checkout(c, user, key, rf + 1 + rnd(rc - rf + 1), rnd(4) ? "tok_ok" : "tok_decline");
		break;
	default:
		tc_pay(c, of + 1 + rnd(oc - of + 1), (uint8_t)(1 + rnd(4)));
		break;
	}
}

static void test_published_reads_match_the_writer(void **state)
{
	(void)state;
	unsigned seed = getenv("FS_SEED") ? (unsigned)strtoul(getenv("FS_SEED"), NULL, 10) : (unsigned)time(NULL);
	uint64_t steps = getenv("FS_PUBLISH_BATCHES") ? strtoull(getenv("FS_PUBLISH_BATCHES"), NULL, 10) : 1500;
	printf("publish_test: FS_SEED=%u FS_PUBLISH_BATCHES=%llu\n", seed, (unsigned long long)steps);
	srand(seed);
	struct t x;
	setup_t(&x);
	struct fs_cmd c[2];
	tc_create(&c[0], "alpha", 4, 2, 3000, 5);
	tc_create(&c[1], "beta", 3, 3, 1500, 0);
	batch(&x, c, 2);
	tc_admin(&c[0], FS_CMD_SALE_OPEN, "alpha");
	tc_admin(&c[1], FS_CMD_SALE_OPEN, "beta");
	batch(&x, c, 2);
	uint64_t reclaimed_max = 0;
	for (uint64_t step = 0; step < steps; step++) {
		struct fs_cmd cmds[BATCH_MAX];
		uint32_t n = (uint32_t)(1 + rnd(6));
		for (uint32_t i = 0; i < n; i++)
			random_cmd(&x, &cmds[i]);
		x.t += (int64_t)rnd(900);
		batch(&x, cmds, n);
		compare_all(&x, x.pub, seed, step);
		uint64_t rf, rc, of, oc;
		wr_pub_bounds(x.st, &rf, &rc, &of, &oc);
		reclaimed_max = rf;
	}
	/* start-up: a region published from scratch answers the same */
	struct fs_pub *fresh = fs_pub_map(x.lim.sku_count_max, x.lim.user_count_max, x.lim.reservation_count_max,
	                                  x.lim.order_count_max);
	struct wr_publisher pb;
	assert_int_equal(wr_publisher_init(&pb, fresh, x.lim.sku_count_max), 0);
	wr_publish_all(&pb, x.st);
	compare_all(&x, fresh, seed, steps);
	wr_publisher_free(&pb);
	fs_pub_unmap(fresh);
	printf("publish_test: %llu reads compared; reservations reclaimed up to %llu (slots reused past %u)\n",
	       (unsigned long long)x.reads, (unsigned long long)reclaimed_max, x.pub->res_slots);
	printf("publish_test: answers seen: %llu waitlisted, %llu orders, %llu reclaimed\n",
	       (unsigned long long)x.seen_waitlisted, (unsigned long long)x.seen_orders,
	       (unsigned long long)x.seen_reclaimed);
	if (steps >= 500) {   /* the workload must have exercised these, or it proved little */
		assert_true(reclaimed_max > x.pub->res_slots);
		assert_true(x.seen_waitlisted > 0 && x.seen_orders > 0 && x.seen_reclaimed > 0);
	}
	teardown_t(&x);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_published_reads_match_the_writer),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
