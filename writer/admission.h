/* admission.h - whether a command reaches the decide step.
 *
 * Every rule that may refuse a command before wr_decide() sees it lives in
 * admission.c, behind one entry point the batch loop calls once per command:
 *  - journal budget: past --journal-budget, reservations and checkouts get
 *    503 overloaded (the disk is kept for decisions already promised);
 *  - payment capacity: a checkout that would not fit in the charge ring gets
 *    503 overloaded;
 *  - for reservation attempts from a client (not the writer's own timers):
 *    tier resolution (token claim, operator table, sale default, risk flag),
 *    risk scoring (regular timing, shared device, many users on one IP:
 *    a flag lowers the user to tier 1 and is journaled with the batch),
 *    and the token buckets of fairness.h per user, per device and per IP.
 *
 * Admission state (buckets, risk counters) is volatile and owned by the
 * writer thread: it is not journaled, a restart refills every bucket. Only
 * the risk flags it raises become journaled decisions (FS_CMD_RISK_FLAG
 * commands the writer appends to the batch).
 */
#ifndef WR_ADMISSION_H
#define WR_ADMISSION_H

#include <stdatomic.h>
#include <stdint.h>
#include "common/fs_cmd.h"
#include "writer/alloc.h"

#define WR_FLAGS_PER_BATCH  64        /* risk decisions journaled per batch at most */

struct wr_admission_config {
	uint32_t user_count_max;          /* capacity of each bucket table */
	uint64_t journal_budget_bytes;    /* 0 = unlimited */
	uint32_t charge_capacity;         /* slots of the payment ring */
	uint32_t ip_rate_per_min;         /* per-IP bucket for untrusted clients; 0 = off */
	uint32_t risk_regular_streak;     /* 0 = default 8 */
	uint32_t risk_device_users;       /* 0 = default 4 */
	uint32_t risk_ip_users;           /* 0 = default 50 */
};

/* Facts of the batch in hand, read once by the loop before its first
 * command (wr_admission_batch) and updated by wr_admit as it admits. */
struct wr_admission_batch {
	int64_t  t_ms;                    /* the batch time */
	int      journal_full;            /* the journal is over its budget */
	uint64_t charges;                 /* outstanding charges + checkouts admitted so far */
};

struct wr_admission;

/* Reserves the bucket tables. Returns NULL when memory cannot be reserved.
 * risk_flags (may be NULL) is bumped once per risk flag raised. */
struct wr_admission *wr_admission_new(const struct wr_admission_config *cfg,
                                      _Atomic uint64_t *risk_flags);
void wr_admission_free(struct wr_admission *ad);
/* Faults its bucket tables in (start-up). */
void wr_admission_prefault(struct wr_admission *ad);

/* Starts a batch at t_ms: fills b from the journal's size and the charges
 * outstanding. Returns b->journal_full (the loop publishes it). */
int wr_admission_batch(const struct wr_admission *ad, struct wr_admission_batch *b, int64_t t_ms,
                       uint64_t journal_bytes, uint64_t charges_outstanding);

/* The entry point: decides whether command c may reach the decide step.
 * Returns 1 (admitted; nothing written to refusal), or 0 with the answer to
 * send at once in *refusal (503 overloaded, or 429 rate_limited with
 * retry_after_ms in expires_at_ms and the queue position). Reads st (tier
 * table, sale default tiers) and never changes it; updates the buckets and
 * b->charges. */
int wr_admit(struct wr_admission *ad, struct wr_admission_batch *b, const struct wr_state *st,
             const struct fs_cmd *c, struct fs_ans *refusal);

/* Moves the risk flags raised since the last call (at most max) into out,
 * as FS_CMD_RISK_FLAG commands from no port, to be decided and journaled
 * with the batch; returns how many. Flags that do not fit are dropped (the
 * user is flagged again at its next attempt). */
/* Drops buckets idle for idle_ms (fairness.h fr_sweep), up to `slots`
 * slots of each table per call: the writer calls it between batches, so
 * the tables hold the clients of the last idle_ms, not of all time.
 * Returns buckets dropped. */
uint32_t wr_admission_sweep(struct wr_admission *ad, int64_t now_ms, int64_t idle_ms, uint32_t slots);

uint32_t wr_admission_flags(struct wr_admission *ad, struct fs_cmd *out, uint32_t max);

#endif
