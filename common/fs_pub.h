/* fs_pub.h - the writer's published reservations and orders: what a
 * dataplane worker (a thread, or a forked DPDK lane process) reads to
 * answer GET /v1/reservations/{id} and GET /v1/orders/{id} without the
 * writer.
 *
 * One MAP_SHARED region, sized from the writer's limits and mapped before
 * any lane is forked. Only the writer stores into it, and only what a
 * durable journal batch holds (ARCHITECTURE.md invariant 3): after each
 * batch's fdatasync it republishes the reservations and orders the batch
 * changed, before any answer of that batch leaves.
 *
 * Consistency: every reservation and order slot is a seqlock. A waitlisted
 * or queued reservation's position also depends on its SKU's served
 * counters, so each SKU has a seqlock too, which the writer holds odd while
 * it republishes that SKU's reservations and counters: a reader that finds
 * both counts unchanged saw one batch boundary's state, never a mix.
 * Readers never wait on the writer for long: after FS_PUB_TRIES attempts
 * that met the writer mid-publish they give up (FS_PUB_BUSY) and the caller
 * asks the writer instead.
 *
 * Numbers are never reused, but ring slots are: a reservation number n
 * lives in slot (n - 1) & (res_slots - 1) while res_floor < n <= res_count.
 * The writer publishes the floors before it reuses a slot and the counts
 * after it filled the new slots.
 */
#ifndef FS_PUB_H
#define FS_PUB_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"

#define FS_PUB_TRIES 256     /* seqlock attempts before a read gives up */

struct fs_pub_sku {
	_Alignas(64) _Atomic uint64_t seq;    /* odd while the writer publishes this SKU */
	_Atomic uint64_t wl_served, pq_served; /* the SKU's waitlist / waiting-room heads */
	_Atomic uint32_t drawn;               /* the waiting room's draw happened */
	uint8_t name_len;                     /* written once, before any slot names the SKU */
	char name[FS_SKU_LEN_MAX];
};

struct fs_pub_res {
	_Atomic uint32_t seq;                 /* 0: never written; odd: being written */
	_Atomic uint32_t user;                /* index into the user names */
	_Atomic uint64_t res_no;              /* which number the slot holds */
	_Atomic int64_t  expires_ms;
	_Atomic uint64_t order_no;
	_Atomic uint64_t ticket;              /* waitlist ticket (WAITLISTED), draw ticket (QUEUED) */
	_Atomic uint32_t qty;
	_Atomic uint16_t sku;                 /* the writer's SKU index */
	_Atomic uint8_t  status;              /* enum fs_res_status */
	uint8_t _pad;
};
_Static_assert(sizeof(struct fs_pub_res) == 48, "one reservation slot: 48 bytes");

struct fs_pub_order {
	_Atomic uint32_t seq;
	_Atomic uint32_t user;
	_Atomic uint64_t order_no;
	_Atomic uint64_t res_no;
	_Atomic int64_t  paid_at_ms;
	_Atomic uint32_t qty;
	_Atomic uint16_t sku;
	_Atomic uint8_t  status;              /* enum fs_order_status */
	uint8_t _pad;
};
_Static_assert(sizeof(struct fs_pub_order) == 40, "one order slot: 40 bytes");

/* A user's name, written once before any slot names the user (users are
 * never reclaimed: an index always means the same name). */
struct fs_pub_user {
	uint8_t len;
	char name[FS_ID_LEN_MAX];
};

struct fs_pub {
	uint64_t bytes;                       /* of the whole mapping */
	uint32_t res_slots, order_slots;      /* powers of two */
	uint32_t user_max, sku_max;
	_Atomic uint64_t res_floor, res_count;     /* live numbers: (floor, count] */
	_Atomic uint64_t order_floor, order_count;
	_Atomic uint64_t busy;                /* reads that gave up on a publishing writer */
	/* the tables follow, at these offsets from the start of the mapping */
	uint64_t off_skus, off_res, off_orders, off_users;
};

/* Sizes from the writer's limits (slot counts rounded up to powers of two). */
uint64_t fs_pub_bytes(uint32_t sku_max, uint32_t user_max, uint32_t res_max, uint32_t order_max);
/* Maps the region MAP_SHARED (zero-filled) and lays it out. NULL when the
 * memory cannot be mapped. fs_pub_unmap() releases it. */
struct fs_pub *fs_pub_map(uint32_t sku_max, uint32_t user_max, uint32_t res_max, uint32_t order_max);
void fs_pub_unmap(struct fs_pub *p);

static inline struct fs_pub_sku *fs_pub_skus(const struct fs_pub *p)
{
	return (struct fs_pub_sku *)((char *)p + p->off_skus);
}
static inline struct fs_pub_res *fs_pub_res_slots(const struct fs_pub *p)
{
	return (struct fs_pub_res *)((char *)p + p->off_res);
}
static inline struct fs_pub_order *fs_pub_order_slots(const struct fs_pub *p)
{
	return (struct fs_pub_order *)((char *)p + p->off_orders);
}
static inline struct fs_pub_user *fs_pub_users(const struct fs_pub *p)
{
	return (struct fs_pub_user *)((char *)p + p->off_users);
}

/* ---- writer side (one thread) ---------------------------------------------- */

/* What the writer publishes of one reservation / order. */
struct fs_pub_res_view {
	uint64_t res_no, order_no, ticket;
	int64_t expires_ms;
	uint32_t user, qty;
	uint16_t sku;
	uint8_t status;
};
struct fs_pub_order_view {
	uint64_t order_no, res_no;
	int64_t paid_at_ms;
	uint32_t user, qty;
	uint16_t sku;
	uint8_t status;
};

void fs_pub_set_user(struct fs_pub *p, uint32_t idx, const char *name, size_t len);
void fs_pub_set_sku_name(struct fs_pub *p, uint32_t idx, const char *name, size_t len);
/* Opens / closes a SKU's publish window (its seqlock odd in between). */
void fs_pub_sku_begin(struct fs_pub *p, uint32_t idx);
void fs_pub_sku_end(struct fs_pub *p, uint32_t idx);
/* Inside the SKU's window: its queue counters; a reservation of it. */
void fs_pub_sku_queue(struct fs_pub *p, uint32_t idx, uint64_t wl_served, uint64_t pq_served, uint32_t drawn);
void fs_pub_res_store(struct fs_pub *p, const struct fs_pub_res_view *v);
void fs_pub_order_store(struct fs_pub *p, const struct fs_pub_order_view *v);
/* Floors before reusing slots, counts after filling them. */
void fs_pub_floors(struct fs_pub *p, uint64_t res_floor, uint64_t order_floor);
void fs_pub_counts(struct fs_pub *p, uint64_t res_count, uint64_t order_count);

/* ---- reader side (any thread or lane) -------------------------------------- */

enum fs_pub_rc { FS_PUB_OK = 0, FS_PUB_NOT_FOUND, FS_PUB_RECLAIMED, FS_PUB_BUSY };

/* Reads reservation res_no for `user` into *a as the writer would answer a
 * read of it (body FS_BODY_RES, http 200, position filled for waitlisted
 * and queued entries). NOT_FOUND also for another user's reservation;
 * RECLAIMED when retention reclaimed it; BUSY when the writer kept
 * publishing it (nothing is written to *a then, except by OK). */
enum fs_pub_rc fs_pub_res_read(const struct fs_pub *p, uint64_t res_no, const char *user, size_t user_len,
                               struct fs_ans *a);
/* The same for order order_no (body FS_BODY_ORDER). */
enum fs_pub_rc fs_pub_order_read(const struct fs_pub *p, uint64_t order_no, const char *user, size_t user_len,
                                 struct fs_ans *a);

#endif
