/* fairness_test.c - token buckets: exact refill arithmetic from the batch
 * time, tiers, tickets and positions that only go down. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <cmocka.h>

#include "writer/fairness.h"

static void test_tier_rates(void **state)
{
	(void)state;
	assert_int_equal(fr_tier_rate_per_min(0), 0);
	assert_int_equal(fr_tier_rate_per_min(1), 1);
	assert_int_equal(fr_tier_rate_per_min(2), 50);
	assert_int_equal(fr_tier_rate_per_min(3), 100);
	assert_int_equal(fr_tier_rate_per_min(4), 200);
}

/* Burst = one minute's tokens, then exactly rate/min afterwards. */
static void test_burst_then_refill(void **state)
{
	(void)state;
	struct fr_table *t = fr_new(16);
	struct fr_verdict v;
	int64_t now = 1000000;
	for (int i = 0; i < 50; i++)
		assert_int_equal(fr_take(t, "u", 1, 2, now, &v), 1);
	assert_int_equal(fr_take(t, "u", 1, 2, now, &v), 0);
	assert_int_equal(v.retry_after_ms, 1200);          /* 60000 / 50 */
	assert_int_equal(fr_take(t, "u", 1, 2, now + 1199, &v), 0);
	assert_int_equal(v.retry_after_ms, 1);
	assert_int_equal(fr_take(t, "u", 1, 2, now + 1200, &v), 1);
	/* many tiny steps add up exactly: no rounding drift */
	int64_t t1 = now + 1200;
	for (int ms = 1; ms < 1200; ms++)
		assert_int_equal(fr_take(t, "u", 1, 2, t1 + ms, &v), 0);
	assert_int_equal(fr_take(t, "u", 1, 2, t1 + 1200, &v), 1);
	fr_free(t);
}

static void test_tier1_one_per_minute(void **state)
{
	(void)state;
	struct fr_table *t = fr_new(16);
	struct fr_verdict v;
	assert_int_equal(fr_take(t, "bot", 3, 1, 5000, &v), 1);
	for (int i = 0; i < 19; i++) {
		assert_int_equal(fr_take(t, "bot", 3, 1, 5000, &v), 0);
		assert_int_equal(v.retry_after_ms, 60000);
	}
	assert_int_equal(fr_take(t, "bot", 3, 1, 64999, &v), 0);
	assert_int_equal(fr_take(t, "bot", 3, 1, 65000, &v), 1);
	fr_free(t);
}

static void test_exempt_and_full(void **state)
{
	(void)state;
	struct fr_table *t = fr_new(2);
	struct fr_verdict v;
	for (int i = 0; i < 1000; i++)
		assert_int_equal(fr_take(t, "lt", 2, 0, 1, &v), 1);   /* tier 0: never limited */
	assert_int_equal(fr_count(t), 0);
	assert_int_equal(fr_take(t, "a", 1, 4, 1, &v), 1);
	assert_int_equal(fr_take(t, "b", 1, 4, 1, &v), 1);
	assert_int_equal(fr_take(t, "c", 1, 4, 1, &v), -1);   /* table full: explicit */
	fr_free(t);
}

/* Tickets in arrival order; a client's position never goes up. */
static void test_positions_only_go_down(void **state)
{
	(void)state;
	struct fr_table *t = fr_new(64);
	struct fr_verdict v;
	char k[8];
	uint32_t last[10];
	for (int i = 0; i < 10; i++) {
		k[0] = (char)('a' + i);
		assert_int_equal(fr_take(t, k, 1, 1, 100, &v), 1);
		assert_int_equal(fr_take(t, k, 1, 1, 100, &v), 0);
		assert_int_equal(v.queue_position, (uint32_t)i + 1);
		last[i] = v.queue_position;
	}
	/* client 'a' is served after its minute: everyone behind moves up */
	assert_int_equal(fr_take(t, "a", 1, 1, 60100, &v), 1);
	for (int i = 1; i < 10; i++) {
		k[0] = (char)('a' + i);
		assert_int_equal(fr_take(t, k, 1, 1, 60099, &v), 0);
		assert_true(v.queue_position <= last[i]);
		assert_int_equal(v.queue_position, (uint32_t)i);
	}
	fr_free(t);
}

static void test_refund(void **state)
{
	(void)state;
	struct fr_table *t = fr_new(8);
	struct fr_verdict v;
	assert_int_equal(fr_take(t, "u", 1, 1, 10, &v), 1);
	fr_refund(t, "u", 1);
	assert_int_equal(fr_take(t, "u", 1, 1, 10, &v), 1);
	assert_int_equal(fr_take(t, "u", 1, 1, 10, &v), 0);
	fr_free(t);
}

/* A full table answers -1 (503) to a new client until the sweep drops the
 * buckets idle for the given time; the ones used since stay, keeping their
 * state, and every kept key is still found after the deletions. */
static void test_sweep_frees_idle_buckets(void **state)
{
	(void)state;
	struct fr_table *t = fr_new(64);
	struct fr_verdict v;
	char key[16];
	int64_t t0 = 1000000;
	for (int i = 0; i < 64; i++) {
		int len = snprintf(key, sizeof key, "u%d", i);
		assert_int_equal(fr_take(t, key, (size_t)len, 2, t0, &v), 1);
	}
	assert_int_equal(fr_take(t, "new", 3, 2, t0, &v), -1);
	/* the even ones come back an hour later: only the odd ones are idle */
	int64_t t1 = t0 + 3600000;
	for (int i = 0; i < 64; i += 2) {
		int len = snprintf(key, sizeof key, "u%d", i);
		assert_int_equal(fr_take(t, key, (size_t)len, 2, t1, &v), 1);
	}
	assert_int_equal(fr_sweep(t, t1 - 1, 3600000, 1u << 20), 0);   /* not idle long enough */
	assert_int_equal(fr_sweep(t, t1 + 1, 3600000, 1u << 20), 32);
	assert_int_equal(fr_count(t), 32);
	for (int i = 0; i < 64; i += 2) {   /* still there, with the token taken: 49 of 50 left */
		int len = snprintf(key, sizeof key, "u%d", i);
		for (int k = 0; k < 49; k++)
			assert_int_equal(fr_take(t, key, (size_t)len, 2, t1 + 1, &v), 1);
		assert_int_equal(fr_take(t, key, (size_t)len, 2, t1 + 1, &v), 0);
	}
	assert_int_equal(fr_count(t), 32);
	assert_int_equal(fr_take(t, "new", 3, 2, t1 + 1, &v), 1);
	fr_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tier_rates),
		cmocka_unit_test(test_burst_then_refill),
		cmocka_unit_test(test_tier1_one_per_minute),
		cmocka_unit_test(test_exempt_and_full),
		cmocka_unit_test(test_positions_only_go_down),
		cmocka_unit_test(test_refund),
		cmocka_unit_test(test_sweep_frees_idle_buckets),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
