/* alloc.h - the allocator: the decide step and the sales state it owns.
 *
 * wr_decide() is a pure function of (state, batch of commands, batch time):
 * it mutates the state, fills one answer per command that can be answered
 * now (plus answers to earlier checkouts whose payment result arrived), and
 * encodes the journal records of every command that changed state. It does
 * no I/O and reads no clock, so replaying the journal's records through it
 * rebuilds the same state (ARCHITECTURE.md invariant 4).
 *
 * Every table is sized once by wr_state_new() from struct wr_limits; a full
 * table is an explicit FS_ERR_OVERLOADED answer, never growth.
 *
 * Lifetime: FS_CMD_SALE_ARCHIVE frees a closed sale's slot once retention
 * reclaimed all its reservations (else 409 retained); the writer checks
 * first that every sink consumed the sale (else 409 sinks_behind).
 *
 * Semantics (API.md):
 *  - A sale's stored state is scheduled/open/paused/frozen/closed; it is
 *    published as sold_out while open with available == 0.
 *  - available + reserved + sold == total for every SKU after every batch;
 *    a violation freezes the SKU (journaled as a derived freeze record).
 *  - reserved counts RESERVED and PAYING units; WAITLISTED units are not
 *    counted anywhere until promoted.
 *  - Holds of one SKU expire in creation order (same hold_ms, monotonic
 *    batch time), so each SKU keeps a FIFO of holds: the next deadline is
 *    at its head. PAYING holds never expire (the payment's outcome decides).
 */
#ifndef WR_ALLOC_H
#define WR_ALLOC_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"

struct wr_limits {
	uint32_t sku_count_max;          /* e.g. 1024 */
	uint32_t user_count_max;         /* distinct users, e.g. 1,000,000 */
	uint32_t reservation_count_max;  /* e.g. 4,000,000 */
	uint32_t order_count_max;        /* e.g. 1,000,000 */
	uint32_t idem_count_max;         /* idempotency keys, e.g. 10,000,000 */
	uint32_t holding_count_max;      /* (user, sku) pairs, e.g. 2,000,000 */
	uint32_t quantity_max;           /* units in one reservation, e.g. 100 */
};

void wr_limits_default(struct wr_limits *l);
/* Bytes wr_state_new() will reserve for these limits. */
uint64_t wr_state_bytes(const struct wr_limits *l);

struct wr_state;

/* Allocates every table (anonymous mmap, pages touched on use). Returns
 * NULL when memory cannot be reserved. */
struct wr_state *wr_state_new(const struct wr_limits *l);
void wr_state_free(struct wr_state *st);
/* Faults every page of the state in (common/fs_prefault.h): the writer does
 * it at start-up, so no decision of the sale's first second takes a fault. */
void wr_state_prefault(struct wr_state *st);

/* The origin of a command no port sent (timers, derived records, risk
 * flags): its answer, if any, goes nowhere. */
#define WR_ORIGIN_NONE 0xffu

/* An answer the writer must route: `origin` is the producer's ring index. */
struct wr_answer {
	uint8_t origin;
	uint8_t _pad[7];
	struct fs_ans ans;
};

/* What the payment thread asks the provider for. */
enum wr_charge_kind { WR_CHARGE_PAY = 0, WR_CHARGE_REFUND = 1 };

/* A charge (or a refund of a paid order) the payment thread must make once
 * the batch is durable. */
struct wr_charge {
	uint64_t order_no;
	int64_t  amount_cents;
	uint8_t  token_len;
	char     token[FS_ID_LEN_MAX];
	uint8_t  user_len;
	char     user[FS_ID_LEN_MAX];
	uint8_t  kind;              /* enum wr_charge_kind */
	uint8_t  reissued;          /* 1: handed again after a restart (an earlier
	                             * attempt may have reached the provider) */
	uint8_t  _pad[4];
};
_Static_assert(sizeof(struct wr_charge) % 8 == 0, "charges travel in rings");

struct wr_batch_out {
	struct wr_answer *answers;  /* room for answer_count_max */
	uint32_t answer_count_max;  /* >= 5 * command count (own + payment waiters) */
	uint32_t answer_count;
	uint8_t *records;           /* encoded journal records (record.h) */
	uint32_t records_cap;       /* >= command count * 2 * WR_REC_BYTES_MAX */
	uint32_t records_len;
	uint32_t record_count;
	struct wr_charge *charges;  /* room for one per command */
	uint32_t charge_count;
	uint32_t sku_touched_count; /* SKUs whose counters/state changed */
	uint32_t *sku_touched;      /* room for sku_count_max indexes */
	/* Reservations and orders whose published answer changed (each comes
	 * with a journal record, so touched_cap = the most records a batch
	 * holds); the writer republishes them once the batch is durable
	 * (common/fs_pub.h). May repeat a number. NULL: not tracked. */
	uint64_t *res_touched, *order_touched;
	uint32_t res_touched_count, order_touched_count;
	uint32_t touched_cap;
	/* SKUs whose every hold or queued entry changed at once, with no record
	 * each (a resume gives holds their frozen time back; a draw numbers the
	 * waiting room): republished whole (wr_sku_each_queued). Distinct,
	 * room for sku_count_max; NULL: not tracked. */
	uint32_t *sku_resweep;
	uint32_t sku_resweep_count;
};

/* The one sizing rule of a decide step's output. A batch of cmd_count
 * commands over sku_count_max SKUs writes at most
 * wr_batch_records_cap(cmd_count, sku_count_max) bytes of records (each
 * command's record and its promotions, one freeze per SKU). A batch
 * replayed from a journal body of body_bytes regenerates that body, with
 * room for the freezes: wr_replay_records_cap(). */
uint32_t wr_batch_records_cap(uint32_t cmd_count, uint32_t sku_count_max);
uint32_t wr_replay_records_cap(uint32_t body_bytes, uint32_t sku_count_max);

/* Allocates out for batches of up to cmd_count commands: 5 answers per
 * command, records_cap bytes of records (one of the rules above), one
 * charge per command, sku_count_max touched SKUs. Returns 0, or -1 when out
 * of memory (out is then safe to pass to wr_batch_out_free). */
int wr_batch_out_alloc(struct wr_batch_out *out, uint32_t cmd_count, uint32_t records_cap,
                       uint32_t sku_count_max);
void wr_batch_out_free(struct wr_batch_out *out);

/* Decides cmds[0..n) at batch time t_ms (must be >= every earlier batch
 * time). When `replay` is non-zero the commands come from the journal:
 * derived records in the input are skipped (they are regenerated), and
 * answers are produced but meant to be dropped. Fills `out`. Each command's
 * err/out_* fields are written back into cmds[]. */
void wr_decide(struct wr_state *st, struct fs_cmd *cmds, uint32_t n, int64_t t_ms,
               int replay, struct wr_batch_out *out);

/* Writes up to max EXPIRE commands for holds whose deadline <= t_ms, and
 * SALE_OPEN commands for scheduled sales whose opens_at <= t_ms, in a
 * deterministic order. Returns how many. Drops stale entries from the hold
 * FIFOs as it walks them (no logical change). */
uint32_t wr_due(struct wr_state *st, int64_t t_ms, struct fs_cmd *out, uint32_t max);

/* Retention (live only: replay follows the journaled RECLAIM records):
 * wr_due() asks for a RECLAIM of the oldest reservations once they ended
 * (CONFIRMED, CANCELLED, EXPIRED, FAILED, REJECTED) retention_ms ago and
 * no FIFO points at them; their idempotency keys, their orders and their
 * orders' keys go with them. Numbers are never reused: a reclaimed one
 * reads 404 FS_ERR_RECLAIMED. 0 (the default) keeps everything. */
void wr_state_set_retention(struct wr_state *st, int64_t retention_ms);

/* Read access for the published reservations and orders (common/fs_pub.h):
 * the live numbers are (floor, count]; 0 and a view when no is live, else -1. */
struct fs_pub_res_view;
struct fs_pub_order_view;
void wr_pub_bounds(const struct wr_state *st, uint64_t *res_floor, uint64_t *res_count,
                   uint64_t *order_floor, uint64_t *order_count);
int wr_pub_res(const struct wr_state *st, uint64_t res_no, struct fs_pub_res_view *v);
int wr_pub_order(const struct wr_state *st, uint64_t order_no, struct fs_pub_order_view *v);
/* User idx's name (users are never reclaimed), idx < wr_user_count(). */
const char *wr_user_name(const struct wr_state *st, uint32_t idx, size_t *len);
uint32_t wr_user_count(const struct wr_state *st);
/* Calls fn for every reservation in SKU sku_idx's hold FIFO and waiting
 * room (live or not yet trimmed), in FIFO order. */
void wr_sku_each_queued(const struct wr_state *st, uint32_t sku_idx, void (*fn)(void *arg, uint64_t res_no),
                        void *arg);
/* A SKU's waitlist and waiting-room heads and whether it was drawn. */
void wr_sku_queue(const struct wr_state *st, uint32_t sku_idx, uint64_t *wl_served, uint64_t *pq_served,
                  uint32_t *drawn);

/* Earliest hold deadline, opening time or reclaim, or INT64_MAX when none. */
int64_t wr_next_deadline(const struct wr_state *st);

/* Read access for the writer (snapshot publishing, metrics, recovery). */
struct wr_sku_view {
	char     name[FS_SKU_LEN_MAX];
	uint8_t  name_len;
	uint8_t  state;          /* published enum fs_sale_state (sold_out derived) */
	uint8_t  waitlist_open;  /* a reservation attempt could join the waitlist */
	uint64_t total, available, reserved, sold, version;
	uint32_t waitlist_count;
	uint32_t per_user;
	uint32_t hold_ms;
	uint32_t default_tier;
	int64_t  price_cents;
	uint8_t  has_draw;       /* a waiting room with a committed draw */
	uint8_t  drawn;
	uint8_t  draw_commit[32];/* SHA-256 of the draw seed */
	uint32_t queued;         /* live QUEUED entries */
};

/* Fairness rules. The operator's tier for a user (-1 when none) and whether
 * the risk score flagged the user (tier lowered to 1). */
int wr_user_tier(const struct wr_state *st, const char *user, size_t len, int *flagged);
struct fs_cidr;
/* The operator's IP rules (action 1 deny, 2 allow), up to max; returns n. */
uint32_t wr_ip_rules(const struct wr_state *st, struct fs_cidr *rules, uint8_t *actions, uint32_t max);

/* SKU slots ever used: indexes 0..count-1. A slot whose view has name_len
 * 0 is free (its sale was archived) and publishes nothing. */
uint32_t wr_sku_count(const struct wr_state *st);
/* The sale's default tier (API.md), or -1 when there is no such SKU. */
int wr_sku_default_tier(const struct wr_state *st, const char *name, size_t len);
void wr_sku_view(const struct wr_state *st, uint32_t sku_idx, struct wr_sku_view *v);
int wr_sku_find(const struct wr_state *st, const char *name, size_t len); /* -1 when absent */

/* Orders still PENDING or REFUNDING with an order number > after (after
 * replay: their charges or refunds must be retried with the same
 * idempotency key), in order, marked reissued. Writes up to max charges;
 * returns how many. */
uint32_t wr_pending_charges(const struct wr_state *st, uint64_t after, struct wr_charge *out, uint32_t max);

struct wr_usage {
	uint32_t users, reservations, orders, idem_keys, holdings;   /* live entries */
	uint32_t skus;               /* sales created and not archived */
	uint64_t order_no_max;       /* orders numbered 1..this were ever made */
};
void wr_usage(const struct wr_state *st, struct wr_usage *u);

/* SHA-256-free 64-bit digest of the logical state (SKUs, reservations,
 * orders, holdings, idempotency map), for replay-equality checks. */
uint64_t wr_state_digest(const struct wr_state *st);

/* ---- the state image (snapshots, writer/snapshot.c) ----------------------
 * wr_state_image() describes the whole logical state at a batch boundary as
 * numbered sections (WR_IMG_*): for each one it calls sink->section(id,
 * bytes) and then sink->data() until exactly `bytes` were handed over. It
 * reads the state only (a forked child may run it on its copy-on-write
 * view) and does no I/O itself. Returns 0, or the first non-zero return of
 * a callback. Sparse hash tables are written as (slot index, slot) pairs,
 * so a load puts every entry back in the same slot.
 *
 * Loading: on a state fresh from wr_state_new() with the SAME limits, hand
 * each section to wr_state_image_load() in the order they were written,
 * then call wr_state_image_done(). Both return 0, or -1 with a one-line
 * reason in err (the state is then unusable: free it). Volatile fields
 * (requests waiting on a payment) are cleared. */
enum wr_img_section {
	WR_IMG_META = 1, WR_IMG_SKUS, WR_IMG_SKU_SLOTS, WR_IMG_USERS, WR_IMG_USER_SLOTS,
	WR_IMG_RES, WR_IMG_ORDERS, WR_IMG_HOLDS, WR_IMG_DEV_HOLDS, WR_IMG_IDEM, WR_IMG_TIERS,
	WR_IMG_IP_RULES, WR_IMG_COUNT
};
struct wr_image_sink {
	int (*section)(void *arg, uint32_t id, uint64_t bytes);
	int (*data)(void *arg, const void *p, size_t n);
	void *arg;
};
int wr_state_image(const struct wr_state *st, const struct wr_image_sink *sink);
int wr_state_image_load(struct wr_state *st, uint32_t id, const uint8_t *p, uint64_t len,
                        char *err, size_t err_len);
int wr_state_image_done(struct wr_state *st, char *err, size_t err_len);
/* The limits a WR_IMG_META section was taken with: 0, or -1 when malformed. */
int wr_state_image_limits(const uint8_t *meta, uint64_t len, struct wr_limits *out);
/* Batch time of the last decided batch (0 for a fresh state). */
int64_t wr_state_time_ms(const struct wr_state *st);
/* Calls fn for every user that holds or held units of any sale (the
 * dataplane's holder filter is rebuilt from it after a snapshot load). */
void wr_each_holder(const struct wr_state *st, void (*fn)(void *arg, const char *user, size_t len), void *arg);

#endif
