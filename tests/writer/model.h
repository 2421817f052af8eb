/* model.h - a reference model of the decide step (writer/alloc.c), for the
 * property test, plus a few command builders the writer tests share.
 *
 * The model is deliberately naive: plain arrays and linear scans, one
 * function per command, no hashing, no intrusive lists, no tickets. It says,
 * for a command at a batch time, what API.md promises: the answer (HTTP
 * status, error, reservation/order numbers and statuses, counters), whether
 * the command is journaled, which waitlisted reservations are promoted after
 * it (FIFO, at most 4 per command), and the charge a checkout asks for.
 *
 * Where the allocator's representation legitimately differs from the model
 * the effect says so instead of pinning one answer:
 *  - waitlist position: the model knows the exact position; the allocator
 *    promises an upper bound (cancelled entries ahead still count), so a
 *    position is checked as exact <= got <= joins so far (pos_rule 1), or
 *    equal to the first answer's position for an idempotent repeat (2);
 *  - WAITLIST_SERVE with nothing to promote: the allocator may journal it
 *    (a cancelled entry at the head of its list) or refuse it (journaled = -1);
 *    the harness reports what happened with model_serve_journaled().
 */
#ifndef TESTS_WRITER_MODEL_H
#define TESTS_WRITER_MODEL_H

#include <stdint.h>
#include "common/fs_cmd.h"
#include "writer/alloc.h"

#define M_SKU_MAX 16      /* live sales */
#define M_SKU_HIST 1024   /* sales ever created (archived ones stay, marked gone) */
#define M_WL_MAX  64
#define M_PROMOTE_MAX 4

struct m_ans {
	uint8_t  origin;
	uint8_t  pos_rule;   /* 0: position must be 0; 1: pos_min <= got <= pos_max; 2: original */
	uint32_t pos_min, pos_max;
	struct fs_ans ans;   /* expected fields (position = exact when pos_rule 1) */
};

struct m_effect {
	int      journaled;            /* 1: one record, 0: none, -1: either (see top) */
	uint32_t promoted_count;
	uint64_t promoted[M_PROMOTE_MAX];
	int64_t  promoted_expires[M_PROMOTE_MAX];
	uint32_t answer_count;         /* 0, 1 or 2 (PAY_RESULT answers its waiter) */
	struct m_ans answers[5];     /* its own + up to 4 waiters on a payment outcome */
	int      charge;               /* a checkout asked for a charge */
	struct wr_charge ch;
	/* what the decided command's OUT fields must be when journaled */
	uint8_t  out_status;
	uint64_t out_ref;
	int64_t  out_val;
};

struct model;

/* A PAY_RESULT with FS_PAY_INVALID is a failed payment, reason
 * invalid_token (API.md: "anything else is declined with reason
 * invalid_token"); pay values outside enum fs_pay are refused. */
struct model *model_new(const struct wr_limits *lim);
void model_free(struct model *m);

/* Decides one command (inputs only are read) at batch time t_ms. */
void model_decide(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e);
/* The allocator journaled a WAITLIST_SERVE the model had nothing to do for. */
void model_serve_journaled(struct model *m, const char *sku, uint8_t sku_len);

/* The process restarted: requests that waited for a payment's outcome
 * died with their connections (the state replayed from the journal has no
 * waiters), nothing else changes. */
void model_restart(struct model *m);

/* Checks wr_due()'s output (n commands, asked for at most max) at t_ms:
 * every command is due, in the promised order, no duplicates, and, when
 * n < max, nothing due is missing. Returns NULL or a message. */
const char *model_due_check(const struct model *m, int64_t t_ms, const struct fs_cmd *d,
                            uint32_t n, uint32_t max);

/* What GET /v1/skus/{sku} would show (state is the published one). */
struct m_sku_view {
	uint8_t  state;
	uint64_t total, available, reserved, sold, version;
	uint32_t waitlist_count;
	uint8_t  gone;            /* archived (FS_CMD_SALE_ARCHIVE): not the writer's any more */
	uint8_t  name_len;
	char     name[FS_SKU_LEN_MAX];
};
/* Sales ever created, in creation order (the model's index is not the
 * writer's: the writer reuses archived slots; match them by name). */
uint32_t model_sku_count(const struct model *m);
void model_sku_view(const struct model *m, uint32_t idx, struct m_sku_view *v);
void model_usage(const struct model *m, struct wr_usage *u);

/* Retention (alloc.h wr_state_set_retention): the model checks wr_due's
 * RECLAIM against it; a RECLAIM decided reclaims what it names, if all of
 * that ended and sits behind no live hold or waitlist entry. */
void model_set_retention(struct model *m, int64_t retention_ms);
/* Reservations numbered up to this were reclaimed (retention). */
uint64_t model_res_floor(const struct model *m);

/* Read access for a workload generator. */
uint64_t model_res_count(const struct model *m);
uint64_t model_order_count(const struct model *m);
/* Reservation res_no (1-based): status, owner's user name, deadline. */
uint8_t model_res_status(const struct model *m, uint64_t res_no);
const char *model_res_user(const struct model *m, uint64_t res_no, uint8_t *len);
int64_t model_res_expires(const struct model *m, uint64_t res_no);
uint8_t model_order_status(const struct model *m, uint64_t order_no);
/* The reservation an order was made for, or 0 when there is no such order. */
uint64_t model_order_res(const struct model *m, uint64_t order_no);
/* The earliest deadline of a RESERVED hold (and, when res_no is not NULL,
 * that reservation), or INT64_MAX. */
int64_t model_next_expiry(const struct model *m, uint64_t *res_no);

/* ---- command builders (shared by the writer tests) ------------------------ */
void tc_reset(struct fs_cmd *c, uint8_t type);
void tc_set(char *dst, uint8_t *len, size_t cap, const char *s);
void tc_create(struct fs_cmd *c, const char *sku, uint64_t total, uint32_t per_user,
               uint32_t hold_ms, uint32_t waitlist_max);
void tc_admin(struct fs_cmd *c, uint8_t type, const char *sku);
void tc_reserve(struct fs_cmd *c, const char *sku, const char *user, const char *key, uint32_t q);
void tc_cancel(struct fs_cmd *c, const char *user, uint64_t res_no);
void tc_checkout(struct fs_cmd *c, const char *user, const char *key, uint64_t res_no, const char *token);
void tc_pay(struct fs_cmd *c, uint64_t order_no, uint8_t pay);
void tc_get(struct fs_cmd *c, uint8_t type, const char *user, uint64_t ref);

#endif
