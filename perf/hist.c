/* hist.c - log-linear latency histogram: bucket mapping, record, merge,
 * percentiles. See hist.h for the error bound. */
#include "hist.h"

#include <assert.h>
#include <string.h>

_Static_assert(HIST_BUCKET_COUNT == 3840, "bucket count changed: update docs");

void hist_reset(struct hist *h)
{
	assert(h != NULL);
	memset(h, 0, sizeof(*h));
	h->min_ns = UINT64_MAX;
}

uint32_t hist_index(uint64_t value_ns)
{
	if (value_ns > HIST_VALUE_NS_MAX)
		value_ns = HIST_VALUE_NS_MAX;
	if (value_ns < HIST_SUB_COUNT)
		return (uint32_t)value_ns;
	unsigned msb = 63u - (unsigned)__builtin_clzll(value_ns);
	unsigned shift = msb - HIST_SUB_BITS;
	uint64_t sub = (value_ns >> shift) - HIST_SUB_COUNT;
	assert(sub < HIST_SUB_COUNT);
	uint32_t index = (shift + 1u) * HIST_SUB_COUNT + (uint32_t)sub;
	assert(index < HIST_BUCKET_COUNT);
	return index;
}

uint64_t hist_lowest_ns(uint32_t index)
{
	assert(index < HIST_BUCKET_COUNT);
	if (index < HIST_SUB_COUNT)
		return index;
	uint32_t shift = index / HIST_SUB_COUNT - 1u;
	uint64_t sub = index % HIST_SUB_COUNT;
	return (HIST_SUB_COUNT + sub) << shift;
}

uint64_t hist_highest_ns(uint32_t index)
{
	assert(index < HIST_BUCKET_COUNT);
	if (index < HIST_SUB_COUNT)
		return index;
	uint32_t shift = index / HIST_SUB_COUNT - 1u;
	return hist_lowest_ns(index) + (UINT64_C(1) << shift) - 1u;
}

void hist_record(struct hist *h, uint64_t value_ns)
{
	assert(h != NULL);
	if (value_ns > HIST_VALUE_NS_MAX) {
		h->clamped++;
		value_ns = HIST_VALUE_NS_MAX;
	}
	h->buckets[hist_index(value_ns)]++;
	h->count++;
	h->sum_ns += (double)value_ns;
	if (value_ns < h->min_ns)
		h->min_ns = value_ns;
	if (value_ns > h->max_ns)
		h->max_ns = value_ns;
}

void hist_merge(struct hist *target, const struct hist *source)
{
	assert(target != NULL && source != NULL && target != source);
	if (source->count == 0)
		return;
	for (uint32_t i = 0; i < HIST_BUCKET_COUNT; i++)
		target->buckets[i] += source->buckets[i];
	target->count += source->count;
	target->clamped += source->clamped;
	target->sum_ns += source->sum_ns;
	if (source->min_ns < target->min_ns)
		target->min_ns = source->min_ns;
	if (source->max_ns > target->max_ns)
		target->max_ns = source->max_ns;
}

uint64_t hist_percentile_ns(const struct hist *h, double p)
{
	assert(h != NULL);
	assert(p > 0.0 && p <= 100.0);
	if (h->count == 0)
		return 0;
	double rank_exact = (p / 100.0) * (double)h->count;
	uint64_t rank = (uint64_t)rank_exact;
	if ((double)rank < rank_exact)
		rank++;     /* ceil without libm */
	if (rank < 1)
		rank = 1;
	if (rank > h->count)
		rank = h->count;
	uint64_t seen = 0;
	for (uint32_t i = 0; i < HIST_BUCKET_COUNT; i++) {
		seen += h->buckets[i];
		if (seen >= rank) {
			uint64_t v = hist_highest_ns(i);
			if (v > h->max_ns)
				v = h->max_ns;
			if (v < h->min_ns)
				v = h->min_ns;
			return v;
		}
	}
	assert(0 && "counts do not add up to count");
	return h->max_ns;
}

double hist_mean_ns(const struct hist *h)
{
	assert(h != NULL);
	return h->count ? h->sum_ns / (double)h->count : 0.0;
}
