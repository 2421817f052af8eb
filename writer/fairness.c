/* fairness.c - per-client token buckets with queue tickets (fairness.h). */
#include "writer/fairness.h"
#include "common/fs_prefault.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <xxhash.h>

/* One token is 60,000 units, so a tier of R tokens/min adds exactly R units
 * per millisecond: integer arithmetic with no rounding drift. */
#define UNIT 60000

struct fr_bucket {
	uint64_t key;            /* xxh3-64 of the client key, 0 = empty */
	int64_t  last_ms;        /* time of the last refill */
	int64_t  units;          /* tokens x UNIT */
	uint64_t ticket;         /* queue ticket while over quota, 0 = none */
	uint32_t rate;           /* tokens per minute */
	uint32_t gap_ms;         /* risk: the last gap between two attempts */
	int64_t  seen_ms;        /* risk: the last attempt */
	uint64_t other;          /* risk: the last user seen with this key (device, IP) */
	uint32_t streak;         /* risk: gaps in a row within 2 ms of the one before */
	uint32_t distinct;       /* risk: times the user behind this key changed */
};

struct fr_table {
	struct fr_bucket *b;
	uint64_t mask;
	uint32_t count;
	uint32_t count_max;
	uint64_t tickets_issued;
	uint64_t tickets_served;
	uint64_t sweep_at;       /* fr_sweep's next slot */
	size_t bytes;
};

uint32_t fr_tier_rate_per_min(int tier)
{
	static const uint32_t rate[5] = { 0, 1, 50, 100, 200 };
	assert(tier >= 0 && tier <= 4);
	return rate[tier];
}

struct fr_table *fr_new(uint32_t count_max)
{
	assert(count_max > 0);
	uint64_t slots = 16;
	while (slots < (uint64_t)count_max + count_max / 2)
		slots <<= 1;
	struct fr_table *t = calloc(1, sizeof *t);
	if (t == NULL)
		return NULL;
	t->bytes = slots * sizeof(struct fr_bucket);
	t->b = mmap(NULL, t->bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (t->b == MAP_FAILED) {
		free(t);
		return NULL;
	}
	t->mask = slots - 1;
	t->count_max = count_max;
	return t;
}

void fr_prefault(struct fr_table *t)
{
	assert(t != NULL);
	/* resident for good: 2 MiB pages keep the page tables (and so the
	 * snapshot's fork, which copies them) small */
	madvise(t->b, t->bytes, MADV_HUGEPAGE);
	fs_prefault(t->b, t->bytes);
}

void fr_free(struct fr_table *t)
{
	if (t == NULL)
		return;
	munmap(t->b, t->bytes);
	free(t);
}

uint32_t fr_count(const struct fr_table *t) { return t->count; }

static struct fr_bucket *find(struct fr_table *t, uint64_t key, int create)
{
	assert(key != 0 && t->count <= t->count_max);
	/* bounded: slots >= 1.5 x count_max, so an empty slot ends every probe */
	uint64_t i = key & t->mask;
	for (uint64_t probe = 0; probe <= t->mask; probe++, i = (i + 1) & t->mask) {
		struct fr_bucket *b = &t->b[i];
		if (b->key == key)
			return b;
		if (b->key == 0) {
			if (!create || t->count >= t->count_max)
				return NULL;
			t->count++;
			b->key = key;
			b->last_ms = 0;
			return b;
		}
	}
	assert(!"bucket table without an empty slot");
	return NULL;
}

/* Empties slot i (backward-shift deletion: every other key stays
 * reachable from its home slot). */
static void drop_at(struct fr_table *t, uint64_t i)
{
	assert(t->b[i].key != 0 && t->count > 0);
	uint64_t j = (i + 1) & t->mask;
	for (uint64_t probe = 0; probe <= t->mask && t->b[j].key != 0; probe++, j = (j + 1) & t->mask) {
		uint64_t home = t->b[j].key & t->mask;
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			t->b[i] = t->b[j];
			i = j;
		}
	}
	memset(&t->b[i], 0, sizeof t->b[i]);
	t->count--;
}

uint32_t fr_sweep(struct fr_table *t, int64_t now_ms, int64_t idle_ms, uint32_t slots)
{
	assert(idle_ms >= 60000);
	uint32_t dropped = 0;
	for (uint32_t n = 0; n < slots && t->count > 0; n++) {
		uint64_t i = t->sweep_at;
		const struct fr_bucket *b = &t->b[i];
		int64_t used = b->last_ms > b->seen_ms ? b->last_ms : b->seen_ms;
		if (b->key != 0 && used + idle_ms <= now_ms) {
			if (b->ticket != 0)
				t->tickets_served++;   /* a client that never came back leaves the queue */
			drop_at(t, i);   /* slot i may hold a moved bucket now: look again */
			dropped++;
			continue;
		}
		t->sweep_at = (i + 1) & t->mask;
	}
	return dropped;
}

static uint64_t key_of(const char *key, size_t len) { return XXH3_64bits(key, len) | 1; }

static void refill(struct fr_bucket *b, uint32_t rate, int64_t now_ms)
{
	int64_t cap = (int64_t)rate * UNIT;
	if (b->last_ms == 0 || b->rate != rate) {   /* new, or its rate changed: start full */
		b->units = b->last_ms == 0 || b->units > cap ? cap : b->units;
		b->rate = rate;
		b->last_ms = now_ms;
		return;
	}
	if (now_ms > b->last_ms) {
		int64_t add = (now_ms - b->last_ms) * (int64_t)rate;
		b->units = b->units + add > cap ? cap : b->units + add;
		b->last_ms = now_ms;
	}
	assert(b->units >= 0 && b->units <= cap);
}

int fr_take(struct fr_table *t, const char *key, size_t len, int tier, int64_t now_ms,
            struct fr_verdict *v)
{
	return tier == 0 ? 1 : fr_take_rate(t, key, len, fr_tier_rate_per_min(tier), now_ms, v);
}

int fr_take_rate(struct fr_table *t, const char *key, size_t len, uint32_t rate_per_min, int64_t now_ms,
                 struct fr_verdict *v)
{
	assert(rate_per_min > 0);
	struct fr_bucket *b = find(t, key_of(key, len), 1);
	if (b == NULL)
		return -1;
	refill(b, rate_per_min, now_ms);
	if (b->units >= UNIT) {
		b->units -= UNIT;
		if (b->ticket != 0) {
			b->ticket = 0;
			t->tickets_served++;
		}
		return 1;
	}
	if (b->ticket == 0)
		b->ticket = ++t->tickets_issued;
	int64_t rate = rate_per_min;
	int64_t missing = UNIT - b->units;
	v->retry_after_ms = (uint32_t)((missing + rate - 1) / rate);   /* ceil: never too early */
	uint64_t ahead = b->ticket > t->tickets_served ? b->ticket - t->tickets_served : 1;
	v->queue_position = ahead > UINT32_MAX ? UINT32_MAX : (uint32_t)ahead;
	return 0;
}

uint32_t fr_regularity(struct fr_table *t, const char *key, size_t len, int64_t now_ms)
{
	struct fr_bucket *b = find(t, key_of(key, len), 1);
	if (b == NULL)
		return 0;
	/* Gaps under 10 ms come from one client's parallel connections (or a
	 * burst) and say nothing about think time: they are not compared. A
	 * machine shows the same gap (within 1/8, at least 2 ms) 8 times in a
	 * row; a human's think time varies far more. */
	if (b->seen_ms != 0 && now_ms - b->seen_ms >= 10) {
		uint32_t gap = (uint32_t)(now_ms - b->seen_ms > UINT32_MAX ? UINT32_MAX : now_ms - b->seen_ms);
		int64_t diff = (int64_t)gap - (int64_t)b->gap_ms;
		int64_t tolerance = gap / 8 > 2 ? gap / 8 : 2;   /* a machine's clock, not a human's */
		b->streak = gap < 5000 && diff <= tolerance && diff >= -tolerance ? b->streak + 1 : 0;
		b->gap_ms = gap;
		b->seen_ms = now_ms;
	} else if (b->seen_ms == 0) {
		b->seen_ms = now_ms;
	}
	return b->streak;
}

uint32_t fr_distinct(struct fr_table *t, const char *key, size_t len, uint64_t other)
{
	struct fr_bucket *b = find(t, key_of(key, len), 1);
	if (b == NULL)
		return 0;
	if (b->other != other) {
		b->other = other;
		b->distinct++;
	}
	return b->distinct;
}

void fr_refund(struct fr_table *t, const char *key, size_t len)
{
	struct fr_bucket *b = find(t, key_of(key, len), 0);
	if (b == NULL)
		return;
	int64_t cap = (int64_t)b->rate * UNIT;
	b->units = b->units + UNIT > cap ? cap : b->units + UNIT;
}
