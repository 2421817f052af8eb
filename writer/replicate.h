/* replicate.h - a shard's journal replicated through Kafka, with fencing
 * written into the log itself.
 *
 * The log is ONE partition (0) of the topic `flashsale.<shard>.journal`.
 * Each message is a 16-byte header {magic "FSRL", kind, epoch} and then:
 *   RP_BATCH  the journal batch exactly as journaled (64-byte header + body)
 *   RP_FENCE  the new primary's epoch begins here (u64: its last seq then)
 *   RP_HEARTBEAT  the primary is alive (u64: its clock, ms); counts for nothing
 *
 * Every reader decides what counts with the same rule, applied in log
 * order (rp_rule): a fence with a higher epoch raises the current epoch; a
 * batch counts when its epoch is the current one, its seq is the next one
 * and its chain hash matches; a batch of an older epoch (a fenced primary
 * that kept writing) or a repeat of a seq already counted is skipped.
 *
 * A primary acknowledges a batch only when (1) it is fdatasync'd locally,
 * (2) the broker acknowledged it with acks=all (idempotent producer), and
 * (3) nothing but this primary's own records lies between its previous
 * record and this one in the partition: if the delivered offset is not the
 * next expected one, the gap is read back and a fence with a higher epoch
 * in it means this node is fenced. Promotion writes a fence, then applies
 * every batch before it: a batch is either before the fence (counted, and
 * applied by the new primary) or after it (skipped by every reader, and
 * never acknowledged by its writer). See README "Losing the primary".
 *
 * Threads: rp_ship, rp_follow and rp_promote_* run on the writer thread;
 * rp_stats and rp_request_promote may be called from any thread.
 */
#ifndef WR_REPLICATE_H
#define WR_REPLICATE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "writer/journal.h"

#define RP_MAGIC 0x4c525346u   /* "FSRL" */
enum { RP_BATCH = 1, RP_FENCE = 2, RP_HEARTBEAT = 3 };
#define RP_HEARTBEAT_MS 200   /* a primary with nothing to ship writes a heartbeat this often */
enum { RP_ROLE_PRIMARY = 0, RP_ROLE_STANDBY = 1, RP_ROLE_FENCED = 2 };

struct rp_config {
	const char *brokers;        /* bootstrap servers */
	const char *shard;          /* topic flashsale.<shard>.journal */
	const char *data_dir;       /* <data_dir>/replica.epoch: the epoch this node holds as primary */
	const char *journal_dir;
	int standby;                /* 1: follow the log; 0: be the primary */
	_Atomic uint64_t *lag_ms_out;   /* standby: the replication lag is published here (may be NULL) */
	uint32_t failover_after_ms;     /* standby: promote itself when the current epoch's primary wrote
	                                   nothing (no batch, no heartbeat) for this long; 0 = never */
	int quiet;
};

struct rp_stats {
	uint32_t role;              /* RP_ROLE_* */
	uint64_t epoch;             /* the log's current epoch as this node knows it */
	uint64_t my_epoch;          /* the epoch this node writes with (0: none) */
	uint64_t applied_seq;       /* last batch counted (standby) or shipped (primary) */
	uint64_t log_end_offset;    /* high watermark last seen */
	uint64_t next_offset;       /* next offset to read (standby) or expected for the next produce */
	uint64_t lag_records;       /* standby: records in the log not applied yet */
	uint64_t lag_ms;            /* standby: age of the newest unapplied record's batch, 0 when caught up */
	uint64_t shipped, skipped, fence_checks, produce_retries;
	int promote_pending;
	uint64_t primary_silent_ms;    /* standby: since the last record of the current epoch */
	uint64_t auto_promotions;
	char last_error[160];
};

/* The counting rule (pure: no I/O), for every reader of the log. */
struct rp_rule {
	uint64_t epoch;           /* highest fence seen */
	uint64_t seq;             /* last counted batch */
	uint8_t sha[16];          /* SHA-256 (first 16 bytes) of its header; zeros before seq 1 */
};
enum { RP_RULE_BROKEN = -1, RP_RULE_SKIP = 0, RP_RULE_COUNTED = 1, RP_RULE_FENCE = 2 };

/* Applies one log message (value bytes) to *st. RP_RULE_COUNTED: a batch
 * that counts (*b filled, pointing into msg); RP_RULE_FENCE: a fence raised
 * the epoch; RP_RULE_SKIP: nothing changes (a fenced writer's batch, a
 * repeat, a heartbeat, a fence that raises nothing, not our message);
 * RP_RULE_BROKEN: a batch of the current epoch that is out of sequence, off
 * the chain or damaged: the log cannot be followed (st unchanged). */
int rp_rule_apply(struct rp_rule *st, const void *msg, size_t len, struct jr_batch *b);

/* The log message for a journal batch (header + body as journaled), a
 * fence or a heartbeat: writes RP header + payload into out (cap bytes);
 * returns its length, or 0 when it does not fit. */
size_t rp_msg_build(uint32_t kind, uint64_t epoch, const void *payload, size_t len, uint8_t *out, size_t cap);

struct rp;

/* Start-up, before the writer opens its journal. Reads the whole log.
 * Primary: refuses (NULL, reason in err) unless this node holds the log's
 * current epoch (data_dir/replica.epoch) or the log is empty (then it
 * writes the first fence, epoch 1); local batches the log lacks are
 * shipped before it returns (they were never acknowledged; now they are
 * in the log). Standby (resync): local batches that do not match the log's
 * counted chain (never acknowledged by construction) are removed from the
 * local journal, which then holds a prefix of the log. */
struct rp *rp_open(const struct rp_config *cfg, char *err, size_t err_len);
void rp_close(struct rp *r);

/* Primary: ships one journaled batch (bytes as on disk: header + body) and
 * waits for it: retries while the brokers are down or refuse. Returns 0
 * when it counts in the log, -1 when this node is fenced (from now on it
 * ships nothing), -2 when *stop became set first. */
int rp_ship(struct rp *r, const uint8_t *batch, uint32_t len, const _Atomic int *stop);

/* Primary, writer thread, every loop: writes a heartbeat when nothing was
 * shipped for RP_HEARTBEAT_MS (it is fence-checked like a batch). 0, or -1
 * when this node is fenced. */
int rp_tick(struct rp *r, const _Atomic int *stop);

/* Standby: waits up to wait_ms for the next counted batch. 1 = *b filled
 * (valid until the next call; b->offset is the log offset), 0 = none yet,
 * 2 = a requested promotion is complete: this node is the primary now,
 * -1 = the log cannot be followed (reason in rp_stats.last_error). */
int rp_follow(struct rp *r, int wait_ms, struct jr_batch *b);

/* Any thread: asks the standby to promote itself at its next rp_follow. */
void rp_request_promote(struct rp *r);
void rp_stats(struct rp *r, struct rp_stats *out);

/* Removes every batch after `keep_seq` from the journal in dir (not open
 * by a writer). 0 or -1 with a reason in err. */
int rp_truncate_journal(const char *dir, uint64_t keep_seq, char *err, size_t err_len);

#endif
