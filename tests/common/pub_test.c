/* pub_test.c - the published reservations and orders (common/fs_pub.h):
 * layout, ownership, floors and slot reuse, the busy answer, and a race:
 * reader threads read while a writer thread publishes batch after batch,
 * and every read must be exactly one batch boundary's state (fields of one
 * batch, the position from the same batch's served counter), never a mix,
 * and never older than a read before it.
 * FS_SEED picks the race's seed (printed); FS_PUB_BATCHES its length.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "common/fs_pub.h"

#define SKUS   4
#define USERS  16
#define RES    64
#define ORDERS 16

static void name_all(struct fs_pub *p)
{
	char n[16];
	for (uint32_t u = 0; u < USERS; u++) {
		int len = snprintf(n, sizeof n, "user%u", u);
		fs_pub_set_user(p, u, n, (size_t)len);
	}
	for (uint32_t s = 0; s < SKUS; s++) {
		int len = snprintf(n, sizeof n, "sku%u", s);
		fs_pub_set_sku_name(p, s, n, (size_t)len);
	}
}

static void put_res(struct fs_pub *p, uint64_t no, uint32_t user, uint16_t sku, uint8_t status, uint64_t ticket)
{
	struct fs_pub_res_view v = { .res_no = no, .order_no = 0, .ticket = ticket, .expires_ms = 1700000000000LL,
	                             .user = user, .qty = 2, .sku = sku, .status = status };
	fs_pub_sku_begin(p, sku);
	fs_pub_res_store(p, &v);
	fs_pub_sku_queue(p, sku, 3, 0, 0);
	fs_pub_sku_end(p, sku);
}

static void test_layout(void **state)
{
	(void)state;
	struct fs_pub *p = fs_pub_map(SKUS, USERS, 100, 10);
	assert_non_null(p);
	assert_int_equal(p->res_slots, 128);      /* powers of two */
	assert_int_equal(p->order_slots, 16);
	assert_true(p->bytes == fs_pub_bytes(SKUS, USERS, 100, 10));
	assert_true(p->off_users + USERS * sizeof(struct fs_pub_user) <= p->bytes);
	assert_int_equal(p->off_skus % 64, 0);
	fs_pub_unmap(p);
}

static void test_read_owner_floor_reuse(void **state)
{
	(void)state;
	struct fs_pub *p = fs_pub_map(SKUS, USERS, RES, ORDERS);
	assert_non_null(p);
	name_all(p);
	struct fs_ans a;
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_NOT_FOUND);   /* nothing published */
	put_res(p, 1, 1, 2, FS_RES_RESERVED, 0);
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_NOT_FOUND);   /* count not yet moved */
	fs_pub_counts(p, 1, 0);
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_OK);
	assert_int_equal(a.http, 200);
	assert_int_equal(a.body, FS_BODY_RES);
	assert_int_equal(a.res_no, 1);
	assert_int_equal(a.quantity, 2);
	assert_int_equal(a.sku_len, 4);
	assert_memory_equal(a.sku, "sku2", 4);
	assert_int_equal(a.position, 0);                                               /* held: no position */
	assert_int_equal(fs_pub_res_read(p, 1, "user2", 5, &a), FS_PUB_NOT_FOUND);   /* another user's */
	assert_int_equal(fs_pub_res_read(p, 1, "user", 4, &a), FS_PUB_NOT_FOUND);    /* a prefix of the name */
	assert_int_equal(fs_pub_res_read(p, 2, "user1", 5, &a), FS_PUB_NOT_FOUND);
	/* waitlisted: position = ticket - served (3) */
	put_res(p, 2, 1, 2, FS_RES_WAITLISTED, 7);
	fs_pub_counts(p, 2, 0);
	assert_int_equal(fs_pub_res_read(p, 2, "user1", 5, &a), FS_PUB_OK);
	assert_int_equal(a.position, 4);
	/* reclaimed, then the slot reused by number 1 + RES */
	fs_pub_floors(p, 1, 0);
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_RECLAIMED);
	put_res(p, 1 + p->res_slots, 3, 0, FS_RES_RESERVED, 0);
	fs_pub_counts(p, 1 + p->res_slots, 0);
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_RECLAIMED);
	assert_int_equal(fs_pub_res_read(p, 1 + p->res_slots, "user3", 5, &a), FS_PUB_OK);
	assert_int_equal(a.res_no, 1 + p->res_slots);
	/* orders: not found past the count, gone with their reservation */
	struct fs_pub_order_view o = { .order_no = 1, .res_no = 2, .paid_at_ms = 5, .user = 1, .qty = 2, .sku = 2,
	                               .status = FS_ORDER_PAID };
	fs_pub_order_store(p, &o);
	assert_int_equal(fs_pub_order_read(p, 1, "user1", 5, &a), FS_PUB_NOT_FOUND);
	fs_pub_counts(p, 1 + p->res_slots, 1);
	assert_int_equal(fs_pub_order_read(p, 1, "user1", 5, &a), FS_PUB_OK);
	assert_int_equal(a.body, FS_BODY_ORDER);
	assert_int_equal(a.order_status, FS_ORDER_PAID);
	assert_int_equal(a.res_no, 2);
	assert_int_equal(a.paid_at_ms, 5);
	assert_int_equal(fs_pub_order_read(p, 1, "user3", 5, &a), FS_PUB_NOT_FOUND);
	fs_pub_floors(p, 2, 0);
	assert_int_equal(fs_pub_order_read(p, 1, "user1", 5, &a), FS_PUB_RECLAIMED);
	fs_pub_unmap(p);
}

/* A reader that keeps meeting an open window gives up and says so. */
static void test_busy(void **state)
{
	(void)state;
	struct fs_pub *p = fs_pub_map(SKUS, USERS, RES, ORDERS);
	name_all(p);
	put_res(p, 1, 1, 2, FS_RES_RESERVED, 0);
	fs_pub_counts(p, 1, 0);
	fs_pub_sku_begin(p, 2);
	struct fs_ans a;
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_BUSY);
	assert_int_equal(atomic_load(&p->busy), 1);
	fs_pub_sku_end(p, 2);
	assert_int_equal(fs_pub_res_read(p, 1, "user1", 5, &a), FS_PUB_OK);
	fs_pub_unmap(p);
}

/* ---- the race ------------------------------------------------------------------ */

/* The state of reservation r (1..RES) at batch k: every field derives from
 * k, and the position from ticket (2k + 5) and the SKU's served counter (k),
 * which the writer stores separately. */
static uint8_t st_status(uint64_t k, uint64_t r) { return (k + r) % 3 == 0 ? FS_RES_WAITLISTED : FS_RES_RESERVED; }

struct race {
	struct fs_pub *p;
	_Atomic int done;
	_Atomic uint64_t reads, busy;
	uint64_t batches;
	int failed;
	char why[256];
};

static void publish_batch(struct race *rc, uint64_t k, const uint64_t *touch, uint32_t n)
{
	struct fs_pub *p = rc->p;
	for (uint16_t s = 0; s < SKUS; s++)
		fs_pub_sku_begin(p, s);
	for (uint32_t i = 0; i < n; i++) {
		uint64_t r = touch[i];
		uint8_t status = st_status(k, r);
		struct fs_pub_res_view v = { .res_no = r, .order_no = status == FS_RES_RESERVED ? k : 0,
		                             .ticket = status == FS_RES_WAITLISTED ? 2 * k + 5 : 0,
		                             .expires_ms = (int64_t)(k * 1000 + r), .user = (uint32_t)(r % USERS),
		                             .qty = (uint32_t)(k % 7 + 1), .sku = (uint16_t)(r % SKUS), .status = status };
		fs_pub_res_store(p, &v);
	}
	for (uint16_t s = 0; s < SKUS; s++) {
		fs_pub_sku_queue(p, s, k, 0, 0);
		fs_pub_sku_end(p, s);
	}
}

static void *reader(void *arg)
{
	struct race *rc = arg;
	uint64_t last_k[RES + 1] = { 0 };
	uint64_t r = 1;
	char user[16];
	while (!atomic_load(&rc->done) && !rc->failed) {
		r = r % RES + 1;
		int len = snprintf(user, sizeof user, "user%u", (unsigned)(r % USERS));
		struct fs_ans a;
		enum fs_pub_rc got = fs_pub_res_read(rc->p, r, user, (size_t)len, &a);
		if (got == FS_PUB_BUSY) {
			atomic_fetch_add(&rc->busy, 1);
			continue;
		}
		atomic_fetch_add(&rc->reads, 1);
		uint64_t k = ((uint64_t)a.expires_at_ms - r) / 1000;
		int ok = got == FS_PUB_OK && (uint64_t)a.expires_at_ms == k * 1000 + r && a.quantity == k % 7 + 1 &&
		         a.res_status == st_status(k, r) && k >= last_k[r] &&
		         (a.res_status == FS_RES_WAITLISTED ? a.position == k + 5 && a.order_no == 0
		                                            : a.order_no == k && a.position == 0);
		if (!ok) {
			snprintf(rc->why, sizeof rc->why, "res %llu: rc %d k %llu (last %llu) status %u qty %u position %u "
			         "order %llu: not one batch's state", (unsigned long long)r, got, (unsigned long long)k,
			         (unsigned long long)last_k[r], a.res_status, a.quantity, a.position,
			         (unsigned long long)a.order_no);
			rc->failed = 1;
		}
		last_k[r] = k;
		/* another user's reservation is never shown */
		len = snprintf(user, sizeof user, "user%u", (unsigned)((r + 1) % USERS));
		got = fs_pub_res_read(rc->p, r, user, (size_t)len, &a);
		if (got != FS_PUB_NOT_FOUND && got != FS_PUB_BUSY) {
			snprintf(rc->why, sizeof rc->why, "res %llu shown to another user", (unsigned long long)r);
			rc->failed = 1;
		}
	}
	return NULL;
}

static void test_race(void **state)
{
	(void)state;
	unsigned seed = getenv("FS_SEED") ? (unsigned)strtoul(getenv("FS_SEED"), NULL, 10) : (unsigned)time(NULL);
	uint64_t batches = getenv("FS_PUB_BATCHES") ? strtoull(getenv("FS_PUB_BATCHES"), NULL, 10) : 200000;
	printf("pub_test race: FS_SEED=%u FS_PUB_BATCHES=%llu\n", seed, (unsigned long long)batches);
	srand(seed);
	struct race rc = { .p = fs_pub_map(SKUS, USERS, RES, ORDERS), .batches = batches };
	assert_non_null(rc.p);
	name_all(rc.p);
	/* batch 1 publishes everything, then each batch a random few */
	uint64_t all[RES];
	for (uint64_t r = 1; r <= RES; r++)
		all[r - 1] = r;
	publish_batch(&rc, 1, all, RES);
	fs_pub_counts(rc.p, RES, 0);
	/* every reservation's state depends on k here, so each batch
	 * republishes all of them, in a random order (the seed's) */
	pthread_t th[2];
	for (int i = 0; i < 2; i++)
		assert_int_equal(pthread_create(&th[i], NULL, reader, &rc), 0);
	for (uint64_t k = 2; k <= batches && !rc.failed; k++) {
		for (uint32_t i = RES - 1; i > 0; i--) {
			uint32_t j = (uint32_t)rand() % (i + 1);
			uint64_t t = all[i];
			all[i] = all[j];
			all[j] = t;
		}
		publish_batch(&rc, k, all, RES);
	}
	atomic_store(&rc.done, 1);
	for (int i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	printf("pub_test race: %llu reads, %llu gave up on a publishing writer\n",
	       (unsigned long long)atomic_load(&rc.reads), (unsigned long long)atomic_load(&rc.busy));
	if (rc.failed)
		fail_msg("FS_SEED=%u: %s", seed, rc.why);
	assert_true(atomic_load(&rc.reads) > 0);
	fs_pub_unmap(rc.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout),
		cmocka_unit_test(test_read_owner_floor_reuse),
		cmocka_unit_test(test_busy),
		cmocka_unit_test(test_race),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
