/* hist.h - fixed-memory log-linear latency histogram (HDR-style).
 *
 * Values are nanoseconds. Below 2^HIST_SUB_BITS ns every value has its own
 * bucket; above, each power of two is split into 2^HIST_SUB_BITS equal
 * buckets, so a reported value is never more than 1/128 (0.78 %) above the
 * true one. Values above HIST_VALUE_NS_MAX (~68.7 s) are clamped to it and
 * counted in `clamped`. No allocation: a histogram is one flat struct
 * (about 30 KiB) the caller owns; record is a handful of instructions.
 */
#ifndef PERF_HIST_H
#define PERF_HIST_H

#include <stdint.h>

#define HIST_SUB_BITS     7
#define HIST_SUB_COUNT    (1u << HIST_SUB_BITS)                 /* 128 */
#define HIST_MSB_MAX      35                                    /* 2^36 ns ~ 68.7 s */
#define HIST_VALUE_NS_MAX ((UINT64_C(1) << (HIST_MSB_MAX + 1)) - 1)
#define HIST_BUCKET_COUNT ((HIST_MSB_MAX - HIST_SUB_BITS + 2) * HIST_SUB_COUNT)

struct hist {
	uint64_t count;
	uint64_t clamped;          /* values above HIST_VALUE_NS_MAX */
	uint64_t min_ns;           /* UINT64_MAX while empty */
	uint64_t max_ns;
	double   sum_ns;           /* for the mean */
	uint64_t buckets[HIST_BUCKET_COUNT];
};

/* Empties h. */
void hist_reset(struct hist *h);

/* Adds one value (ns). */
void hist_record(struct hist *h, uint64_t value_ns);

/* Adds every count of source into target; source is unchanged. */
void hist_merge(struct hist *target, const struct hist *source);

/* The value at percentile p (0 < p <= 100): the highest value that shares a
 * bucket with the ceil(p/100 * count)-th smallest value, clamped to
 * [min, max]. Returns 0 for an empty histogram. */
uint64_t hist_percentile_ns(const struct hist *h, double p);

/* Mean in ns (0 when empty). */
double hist_mean_ns(const struct hist *h);

/* Bucket mapping, exposed for tests: index of a value, and the lowest and
 * highest values that map to an index. */
uint32_t hist_index(uint64_t value_ns);
uint64_t hist_lowest_ns(uint32_t index);
uint64_t hist_highest_ns(uint32_t index);

#endif
