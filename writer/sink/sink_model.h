/* sink_model.h - an in-memory projection of the journal (per-SKU counters,
 * reservations, orders) built by applying records exactly as writer/EVENTS.md
 * says. It knows nothing about PostgreSQL, Redis or Kafka.
 *
 * Users: the sink thread (Redis needs the counters, Kafka needs the SKU of
 * records that only carry a reservation/order number) and flashsale-reconcile
 * (the independent model it compares PostgreSQL against). pg_apply.c does NOT
 * use it on purpose, so reconcile checks one implementation with another.
 *
 * Memory grows with the number of SKUs and reservations (hash tables double
 * when 3/4 full); with `keep_terminal` = 0 finished reservations and orders
 * are dropped, which bounds a sink's model by the live holds.
 */
#ifndef WR_SINK_MODEL_H
#define WR_SINK_MODEL_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"

#define SM_NO_SKU UINT32_MAX

/* A hash table of fixed-size elements whose first 8 bytes are a non-zero
 * uint64 key. Open addressing, linear probing, backward-shift deletion. */
struct sm_tab {
	uint8_t *slots;
	size_t elem_bytes;
	size_t cap;       /* power of two */
	size_t count;
};

/* Initialises an empty table; returns 0, or -1 when out of memory. */
int sm_tab_init(struct sm_tab *t, size_t elem_bytes, size_t cap_initial);
void sm_tab_free(struct sm_tab *t);
/* Returns the element with `key`, or NULL. */
void *sm_tab_find(const struct sm_tab *t, uint64_t key);
/* Returns the element with `key`, inserting a zeroed one (key set) when
 * missing; NULL only when out of memory. Pointers die on the next insert. */
void *sm_tab_upsert(struct sm_tab *t, uint64_t key);
/* Removes `key` if present. */
void sm_tab_remove(struct sm_tab *t, uint64_t key);
/* Iteration: returns the element at slot i or NULL when that slot is empty. */
void *sm_tab_slot(const struct sm_tab *t, size_t i);

struct sm_sku {
	char     sku[FS_SKU_LEN_MAX + 1]; /* NUL-terminated copy */
	uint8_t  sku_len;
	uint8_t  state;                   /* stored enum fs_sale_state */
	uint8_t  archived;                /* FS_CMD_SALE_ARCHIVE: gone from the writer; never found
	                                   * again (a model without terminal rows reuses the entry) */
	struct fs_sale_args sale;
	int64_t  total, available, reserved, sold; /* signed: negatives are anomalies */
	uint64_t version;                 /* seq of the last batch that touched it */
	uint64_t api_version;             /* "version" as GET /v1/skus/{sku} shows it */
};

struct sm_res {
	uint64_t no;            /* key */
	uint64_t order_no;      /* 0 until checkout */
	int64_t  expires_at_ms; /* 0 when none (waitlisted) */
	uint64_t created_seq;
	uint32_t sku_idx;
	uint32_t quantity;
	uint8_t  status;        /* enum fs_res_status */
};

struct sm_order {
	uint64_t no;            /* key */
	uint64_t res_no;
	int64_t  amount_cents;
	int64_t  paid_at_ms;    /* 0 unless paid */
	uint8_t  status;        /* enum fs_order_status */
	uint8_t  pay;           /* enum fs_pay of the result, 0 while pending */
};

struct sink_model {
	struct sm_sku *skus;
	uint32_t sku_count, sku_cap;
	struct sm_tab res;      /* struct sm_res */
	struct sm_tab orders;   /* struct sm_order */
	int keep_terminal;
	uint64_t last_seq;      /* last batch applied */
	uint64_t records;       /* records applied */
	uint64_t anomalies;     /* records that did not fit the model (unknown ref, bad state) */
	char     anomaly[160];  /* the first anomaly, for messages */
};

/* Initialises an empty model; returns 0 or -1 (out of memory). */
int sm_init(struct sink_model *m, int keep_terminal);
void sm_free(struct sink_model *m);

/* Index of a SKU or SM_NO_SKU. */
uint32_t sm_sku_find(const struct sink_model *m, const char *sku, size_t len);

/* Applies one batch. Returns 1 when applied, 0 when skipped because
 * seq <= last_seq (idempotent), -1 when out of memory (model unchanged for
 * this batch only partially: treat as fatal). For each record, sku_idx[i]
 * (when not NULL) receives the SKU it touched or SM_NO_SKU. Records that do
 * not fit (unknown reference, non-OK err) bump `anomalies` and are skipped. */
int sm_apply_batch(struct sink_model *m, uint64_t seq, int64_t time_ms,
                   const struct fs_cmd *recs, uint32_t n, uint32_t *sku_idx);

/* The published state (sold_out derived: stored open and available == 0). */
uint8_t sm_public_state(const struct sm_sku *s);

#endif
