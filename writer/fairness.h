/* fairness.h - admission by token buckets, per user and per device, kept in
 * the writer so they are exact however many worker cores and connections a
 * client uses (one owner, no cross-core races).
 *
 * Tiers (API.md): 1 = 1 attempt/min, 2 = 50/min, 3 = 100/min, 4 = 200/min,
 * burst = one minute's tokens; 0 = exempt. Arithmetic is exact integer
 * milli-tokens refilled from the batch time, so it is deterministic.
 *
 * Over quota, a client gets 429 with retry_after_ms (exactly when its next
 * token is due) and a queue position: tickets are handed out in arrival
 * order to clients that hit their limit; a client keeps its ticket until it
 * is admitted, and position = ticket - tickets served, so the position a
 * client sees only goes down.
 *
 * Bucket state is volatile (not journaled): a restart refills every bucket.
 */
#ifndef WR_FAIRNESS_H
#define WR_FAIRNESS_H

#include <stddef.h>
#include <stdint.h>

struct fr_table;

/* Reserves a table for count_max buckets; NULL when out of memory. */
struct fr_table *fr_new(uint32_t count_max);
void fr_free(struct fr_table *t);
/* Faults the table's pages in (start-up; see common/fs_prefault.h). */
void fr_prefault(struct fr_table *t);

/* Tokens per minute of a tier (0 = exempt). */
uint32_t fr_tier_rate_per_min(int tier);

struct fr_verdict {
	uint32_t retry_after_ms;
	uint32_t queue_position;
};

/* Takes one token from the bucket of `key` (created full at first sight)
 * for tier `tier` at time now_ms. Returns 1 when admitted, 0 when over quota
 * (verdict filled), -1 when the table is full (the caller answers 503). */
int fr_take(struct fr_table *t, const char *key, size_t len, int tier, int64_t now_ms,
            struct fr_verdict *v);

/* Risk signals (they only ever lower a client's tier):
 * fr_regularity records an attempt of `key` at now_ms and returns how many
 * gaps in a row were within 1/8 (at least 2 ms) of the gap before (zero
 * think time); fr_distinct records that `key` (a device, an IP) was used by
 * the user whose hash is `other` and returns how many times that user
 * changed (about how many users share it). 0 when the table is full. */
uint32_t fr_regularity(struct fr_table *t, const char *key, size_t len, int64_t now_ms);
uint32_t fr_distinct(struct fr_table *t, const char *key, size_t len, uint64_t other);

/* fr_take with an explicit rate (tokens per minute, > 0; burst = one
 * minute's tokens): per-IP buckets where the operator sets a rate. */
int fr_take_rate(struct fr_table *t, const char *key, size_t len, uint32_t rate_per_min, int64_t now_ms,
                 struct fr_verdict *v);

/* Gives back a token taken by fr_take (the other bucket of a pair refused). */
void fr_refund(struct fr_table *t, const char *key, size_t len);

uint32_t fr_count(const struct fr_table *t);
/* Drops buckets nobody used for idle_ms (a queue ticket they hold counts
 * as served),
 * looking at up to `slots` slots from where the last call stopped. A
 * bucket idle that long (>= 60 s) has refilled, so a fresh one is the same
 * to its client; what is lost is the risk memory of a client gone for
 * idle_ms. Without it the table fills with every client ever seen and then
 * answers 503 to every new one. Returns buckets dropped. */
uint32_t fr_sweep(struct fr_table *t, int64_t now_ms, int64_t idle_ms, uint32_t slots);

#endif
