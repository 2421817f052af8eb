/* iplimit_test.c - the per-IP connection cap against a reference model:
 * random acquires and releases over few addresses (so probe runs collide
 * and wrap, and backward-shift deletion is exercised), the seed printed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "dataplane/iplimit.h"

#define ADDRS 40
#define PER_IP 3

static void test_cap_and_release(void **state)
{
	(void)state;
	struct dp_iplimit *l = dp_iplimit_new(4, 2);
	assert_non_null(l);
	assert_int_equal(dp_iplimit_acquire(l, 7), 0);
	assert_int_equal(dp_iplimit_acquire(l, 7), 0);
	assert_int_equal(dp_iplimit_acquire(l, 7), -1);   /* third connection of one address */
	assert_int_equal(dp_iplimit_acquire(l, 8), 0);    /* another address is not affected */
	assert_int_equal(dp_iplimit_addresses(l), 2);
	dp_iplimit_release(l, 7);
	assert_int_equal(dp_iplimit_acquire(l, 7), 0);
	dp_iplimit_release(l, 7);
	dp_iplimit_release(l, 7);
	dp_iplimit_release(l, 8);
	assert_int_equal(dp_iplimit_addresses(l), 0);
	dp_iplimit_free(l);
}

static void test_random_against_model(void **state)
{
	(void)state;
	unsigned seed = (unsigned)time(NULL);
	const char *env = getenv("FS_SEED");
	if (env)
		seed = (unsigned)strtoul(env, NULL, 10);
	printf("iplimit_test: seed %u (FS_SEED=%u to repeat)\n", seed, seed);
	srand(seed);
	/* a tiny table: 64 slots for ADDRS addresses, so runs collide and wrap */
	struct dp_iplimit *l = dp_iplimit_new(ADDRS / 2, PER_IP);
	assert_non_null(l);
	uint32_t ip[ADDRS];
	unsigned held[ADDRS] = { 0 };
	for (int i = 0; i < ADDRS; i++)
		ip[i] = (uint32_t)rand() * 64u + (uint32_t)(i % 3);   /* clustered homes */
	for (int step = 0; step < 200000; step++) {
		int i = rand() % ADDRS;
		unsigned total = 0, used = 0;
		for (int k = 0; k < ADDRS; k++) {
			total += held[k];
			used += held[k] != 0;
		}
		if (rand() % 2 && held[i] > 0) {
			dp_iplimit_release(l, ip[i]);
			held[i]--;
		} else if (total < ADDRS / 2 || held[i] > 0) {   /* the workers' caps bound live connections */
			int rc = dp_iplimit_acquire(l, ip[i]);
			assert_int_equal(rc, held[i] < PER_IP ? 0 : -1);
			if (rc == 0)
				held[i]++;
		}
		used = 0;
		for (int k = 0; k < ADDRS; k++)
			used += held[k] != 0;
		assert_int_equal(dp_iplimit_addresses(l), used);
	}
	dp_iplimit_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_cap_and_release),
		cmocka_unit_test(test_random_against_model),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
