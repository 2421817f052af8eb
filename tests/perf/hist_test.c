/* hist_test.c - perf/hist.c: known distributions in, known percentiles out,
 * within the stated relative error (1/128 above the true value). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <cmocka.h>

#include "hist.h"

#define REL_ERR (1.0 / HIST_SUB_COUNT)

static struct hist *new_hist(void)
{
	struct hist *h = malloc(sizeof(*h));
	assert_non_null(h);
	hist_reset(h);
	return h;
}

/* Reported value v for a true value t: t <= v <= t * (1 + REL_ERR). */
static void assert_close(uint64_t reported, double truth)
{
	if (!((double)reported >= truth * (1.0 - 1e-9) &&
	      (double)reported <= truth * (1.0 + REL_ERR) + 1.0))
		fail_msg("reported %llu, true %.1f", (unsigned long long)reported, truth);
}

static void test_mapping_bounds(void **state)
{
	(void)state;
	for (uint64_t v = 0; v < 5000; v++) {
		uint32_t i = hist_index(v);
		assert_true(hist_lowest_ns(i) <= v && v <= hist_highest_ns(i));
	}
	for (uint64_t v = 1000; v < HIST_VALUE_NS_MAX; v = v * 1.37 + 11) {
		uint32_t i = hist_index(v);
		assert_true(hist_lowest_ns(i) <= v && v <= hist_highest_ns(i));
		double width = (double)(hist_highest_ns(i) - hist_lowest_ns(i) + 1);
		assert_true(width / (double)hist_lowest_ns(i) <= REL_ERR);
		if (i + 1 < HIST_BUCKET_COUNT)   /* buckets tile the line */
			assert_int_equal(hist_highest_ns(i) + 1, hist_lowest_ns(i + 1));
	}
	assert_int_equal(hist_index(HIST_VALUE_NS_MAX), HIST_BUCKET_COUNT - 1);
}

static void test_uniform(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	for (uint64_t us = 1; us <= 100000; us++)     /* 1 µs .. 100 ms, once each */
		hist_record(h, us * 1000);
	assert_int_equal(h->count, 100000);
	assert_close(hist_percentile_ns(h, 50), 50000e3);
	assert_close(hist_percentile_ns(h, 90), 90000e3);
	assert_close(hist_percentile_ns(h, 99), 99000e3);
	assert_close(hist_percentile_ns(h, 99.9), 99900e3);
	assert_int_equal(hist_percentile_ns(h, 100), 100000000);
	assert_int_equal(h->min_ns, 1000);
	assert_int_equal(h->max_ns, 100000000);
	assert_true(fabs(hist_mean_ns(h) - 50000.5e3) < 1.0);
	free(h);
}

/* Exponential with mean 1 ms, sampled at its exact quantiles. */
static void test_exponential(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	const int n = 200000;
	const double mean_ns = 1e6;
	for (int i = 0; i < n; i++)
		hist_record(h, (uint64_t)ceil(-log(1.0 - (i + 0.5) / n) * mean_ns));
	const double ps[] = { 50, 90, 99, 99.9 };
	for (size_t k = 0; k < 4; k++) {
		double truth = -log(1.0 - ps[k] / 100.0) * mean_ns;
		uint64_t got = hist_percentile_ns(h, ps[k]);
		assert_true(fabs((double)got - truth) / truth < 0.01);
	}
	free(h);
}

/* 99 % fast, 1 % one-second stalls: p99 is fast, p99.9 is the stall. */
static void test_bimodal(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	for (int i = 0; i < 99000; i++)
		hist_record(h, 100000);        /* 100 µs */
	for (int i = 0; i < 1000; i++)
		hist_record(h, 1000000000);    /* 1 s */
	assert_close(hist_percentile_ns(h, 50), 100000);
	assert_close(hist_percentile_ns(h, 99), 100000);
	assert_close(hist_percentile_ns(h, 99.9), 1e9);
	assert_int_equal(hist_percentile_ns(h, 100), 1000000000);
	free(h);
}

static void test_merge_equals_single(void **state)
{
	(void)state;
	struct hist *a = new_hist(), *b = new_hist(), *all = new_hist();
	for (uint64_t v = 1; v < 300000; v += 7) {
		hist_record(v % 2 ? a : b, v * 311);
		hist_record(all, v * 311);
	}
	hist_merge(a, b);
	assert_int_equal(a->count, all->count);
	assert_int_equal(a->min_ns, all->min_ns);
	assert_int_equal(a->max_ns, all->max_ns);
	assert_memory_equal(a->buckets, all->buckets, sizeof(a->buckets));
	for (double p = 1; p <= 100; p += 0.5)
		assert_int_equal(hist_percentile_ns(a, p), hist_percentile_ns(all, p));
	free(a); free(b); free(all);
}

static void test_clamp_and_empty(void **state)
{
	(void)state;
	struct hist *h = new_hist();
	assert_int_equal(hist_percentile_ns(h, 50), 0);
	assert_true(hist_mean_ns(h) == 0.0);
	hist_record(h, HIST_VALUE_NS_MAX + 12345);   /* over ~68.7 s */
	hist_record(h, 5);
	assert_int_equal(h->clamped, 1);
	assert_int_equal(h->max_ns, HIST_VALUE_NS_MAX);
	assert_int_equal(hist_percentile_ns(h, 100), HIST_VALUE_NS_MAX);
	assert_int_equal(hist_percentile_ns(h, 50), 5);
	free(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_mapping_bounds),
		cmocka_unit_test(test_uniform),
		cmocka_unit_test(test_exponential),
		cmocka_unit_test(test_bimodal),
		cmocka_unit_test(test_merge_equals_single),
		cmocka_unit_test(test_clamp_and_empty),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
