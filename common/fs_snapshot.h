/* fs_snapshot.h - the writer's published read view of every SKU.
 *
 * Written only by the writer, after the batch that changed it is durable;
 * read lock-free by any dataplane worker. Each entry is a seqlock: the
 * writer makes `seq` odd, stores the fields, makes it even (release); a
 * reader retries while seq is odd or changed under it. An entry's name is
 * written before its slot in the name table is published with a release
 * store, so a reader that finds the slot sees the name.
 *
 * An archived sale (FS_CMD_SALE_ARCHIVE) leaves: its entry is marked free
 * (name_len 0) and a later new SKU takes it. Every change to the name table
 * besides an append happens with `names_seq` odd, and fs_snap_find retries
 * when it moved, so a probe never misses a name that a backward shift
 * moved under it. An entry's `seq` keeps counting across reuse, so a
 * cached (index, seq) pair never describes two SKUs.
 */
#ifndef FS_SNAPSHOT_H
#define FS_SNAPSHOT_H

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include "common/fs_cmd.h"

#define FS_SNAP_SKU_MAX   1024
#define FS_SNAP_SLOTS     2048            /* power of two, > 1.5 * FS_SNAP_SKU_MAX */
#define FS_HOLDER_BITS    (1u << 20)      /* filter of users who ever reserved */
#define FS_IP_RULES_MAX   256             /* operator deny/allow CIDRs */

_Static_assert((FS_SNAP_SLOTS & (FS_SNAP_SLOTS - 1)) == 0, "slots are masked: a power of two");
_Static_assert(FS_SNAP_SLOTS * 2 > FS_SNAP_SKU_MAX * 3, "an empty slot ends every probe");
_Static_assert(FS_SNAP_SKU_MAX < 65535, "a slot holds index + 1 in 16 bits");
_Static_assert((FS_HOLDER_BITS & (FS_HOLDER_BITS - 1)) == 0 && FS_HOLDER_BITS % 64 == 0,
               "holder bits are masked and stored 64 to a word");
enum fs_role { FS_ROLE_PRIMARY = 0, FS_ROLE_STANDBY = 1, FS_ROLE_FENCED = 2 };

struct fs_snap_sku {
	_Alignas(64) _Atomic uint64_t seq;
	_Atomic uint64_t total, available, reserved, sold, version;
	_Atomic uint32_t state;               /* published enum fs_sale_state */
	_Atomic uint32_t waitlist_open;
	_Atomic uint32_t waitlist_count;      /* for /metrics: waitlist depth */
	_Atomic uint32_t queued;              /* for /metrics: waiting-room depth */
	_Atomic uint64_t granted, refused;    /* for /metrics: reservation attempts (writer's counters,
	                                       * outside the seqlock: since start, not replayed) */
	char name[FS_SKU_LEN_MAX];
	uint8_t name_len;
};

struct fs_snapshot {
	_Atomic uint32_t count;                 /* entries ever used (live + free) */
	_Atomic uint64_t names_seq;             /* odd while an entry leaves or is reused */
	_Atomic uint16_t slots[FS_SNAP_SLOTS];  /* name hash -> index + 1 */
	struct fs_snap_sku skus[FS_SNAP_SKU_MAX];
	/* edge flags the writer and payment thread publish */
	_Atomic uint32_t payments_open;         /* 0 while the payment circuit breaker is open */
	_Atomic uint32_t journal_full;          /* 1 while the journal is over its disk budget */
	_Atomic int64_t writer_busy_since_ms;   /* wall ms the batch in progress began; 0 when idle
	                                         * (/healthz: 503 past 2 s, a stalled writer) */
	_Atomic uint32_t journal_stalled;       /* 1 while appends fail (disk full, I/O error) */
	/* replication (writer/replicate.h): FS_ROLE_*; a standby or a fenced old
	 * primary answers writes 503 standby at the edge; reads carry the lag */
	_Atomic uint32_t role;
	_Atomic uint64_t repl_lag_ms;
	/* Bit hash(user) is set (never cleared) once the user got a reservation:
	 * the edge may answer sold_out itself only for users whose bit is clear,
	 * so a retried request of a real holder always reaches the writer. */
	_Atomic uint64_t holder_bits[FS_HOLDER_BITS / 64];
	/* the operator's IP rules (journaled admin commands), seqlocked */
	_Atomic uint64_t ip_seq;
	_Atomic uint32_t ip_count;
	_Atomic uint32_t ip_net[FS_IP_RULES_MAX];
	_Atomic uint32_t ip_mask[FS_IP_RULES_MAX];
	_Atomic uint32_t ip_action[FS_IP_RULES_MAX];   /* 1 deny, 2 allow */
	/* the published reservations and orders (common/fs_pub.h), set by
	 * wr_open() before any worker or lane starts; NULL without a writer */
	struct fs_pub *pub;
};

/* 2 when an allow rule matches ip, else 1 when a deny rule does, else 0. */
static inline int fs_snap_ip_verdict(const struct fs_snapshot *cs, uint32_t ip)
{
	struct fs_snapshot *s = (struct fs_snapshot *)cs;
	for (;;) {
		uint64_t s1 = atomic_load_explicit(&s->ip_seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		int verdict = 0;
		uint32_t n = atomic_load_explicit(&s->ip_count, memory_order_relaxed);
		for (uint32_t i = 0; i < n && i < FS_IP_RULES_MAX && verdict != 2; i++) {
			uint32_t mask = atomic_load_explicit(&s->ip_mask[i], memory_order_relaxed);
			if ((ip & mask) == atomic_load_explicit(&s->ip_net[i], memory_order_relaxed)) {
				uint32_t a = atomic_load_explicit(&s->ip_action[i], memory_order_relaxed);
				verdict = a > (uint32_t)verdict ? (int)a : verdict;
			}
		}
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&s->ip_seq, memory_order_relaxed) == s1)
			return verdict;
	}
}

/* Writer only: replaces the published IP rules (n <= FS_IP_RULES_MAX). */
static inline void fs_snap_ip_publish(struct fs_snapshot *s, const uint32_t *net, const uint32_t *mask,
                                      const uint8_t *action, uint32_t n)
{
	assert(n <= FS_IP_RULES_MAX);
	uint64_t seq = atomic_load_explicit(&s->ip_seq, memory_order_relaxed);
	assert((seq & 1) == 0);   /* one writer: no publish is ever left half done */
	atomic_store_explicit(&s->ip_seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	for (uint32_t i = 0; i < n && i < FS_IP_RULES_MAX; i++) {
		atomic_store_explicit(&s->ip_net[i], net[i], memory_order_relaxed);
		atomic_store_explicit(&s->ip_mask[i], mask[i], memory_order_relaxed);
		atomic_store_explicit(&s->ip_action[i], action[i], memory_order_relaxed);
	}
	atomic_store_explicit(&s->ip_count, n, memory_order_relaxed);
	atomic_store_explicit(&s->ip_seq, seq + 2, memory_order_release);
	assert(atomic_load_explicit(&s->ip_count, memory_order_relaxed) == n);
}

struct fs_sku_read {
	uint64_t total, available, reserved, sold, version;
	uint32_t state;
	uint32_t waitlist_open;
	uint32_t waitlist_count, queued;
};

static inline uint32_t fs_snap_hash(const char *s, size_t len)
{
	uint32_t h = 2166136261u;             /* FNV-1a: short names, no dependency */
	for (size_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)s[i]) * 16777619u;
	return h;
}

static inline uint32_t fs_holder_bit(const char *user, size_t len)
{
	return (fs_snap_hash(user, len) * 2654435761u) & (FS_HOLDER_BITS - 1);
}

static inline int fs_snap_holder_test(const struct fs_snapshot *s, const char *user, size_t len)
{
	uint32_t b = fs_holder_bit(user, len);
	uint64_t w = atomic_load_explicit(&((struct fs_snapshot *)s)->holder_bits[b / 64], memory_order_acquire);
	return (int)((w >> (b % 64)) & 1);
}

/* Writer only. */
static inline void fs_snap_holder_set(struct fs_snapshot *s, const char *user, size_t len)
{
	uint32_t b = fs_holder_bit(user, len);
	atomic_fetch_or_explicit(&s->holder_bits[b / 64], UINT64_C(1) << (b % 64), memory_order_release);
}

static inline int fs_snap_probe(const struct fs_snapshot *s, const char *name, size_t len)
{
	uint32_t i = fs_snap_hash(name, len) & (FS_SNAP_SLOTS - 1);
	for (uint32_t probes = 0; probes < FS_SNAP_SLOTS; probes++) {
		uint16_t v = atomic_load_explicit(&((struct fs_snapshot *)s)->slots[i], memory_order_acquire);
		if (v == 0)
			return -1;
		const struct fs_snap_sku *k = &s->skus[(v - 1) % FS_SNAP_SKU_MAX];
		if (k->name_len == len && memcmp(k->name, name, len) == 0)
			return v - 1;
		i = (i + 1) & (FS_SNAP_SLOTS - 1);
	}
	return -2;   /* only while the table changes under the probe (names_seq moves) */
}

/* Returns the SKU's index, or -1 when no such SKU is published. */
static inline int fs_snap_find(const struct fs_snapshot *s, const char *name, size_t len)
{
	if (len == 0 || len > FS_SKU_LEN_MAX)
		return -1;
	_Atomic uint64_t *seq = &((struct fs_snapshot *)s)->names_seq;
	for (;;) {
		uint64_t s1 = atomic_load_explicit(seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		int idx = fs_snap_probe(s, name, len);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(seq, memory_order_relaxed) == s1) {
			assert(idx >= -1);   /* more slots than SKUs: a stable table ends every probe */
			return idx;
		}
	}
}

/* Writer only: the slot of the name table that holds index idx + 1. */
static inline uint32_t fs_snap_slot_of(const struct fs_snapshot *s, const char *name, size_t len, int idx)
{
	uint32_t i = fs_snap_hash(name, len) & (FS_SNAP_SLOTS - 1);
	uint32_t probe = 0;
	for (; probe < FS_SNAP_SLOTS && atomic_load_explicit(&((struct fs_snapshot *)s)->slots[i],
	                                                      memory_order_relaxed) != (uint16_t)(idx + 1); probe++)
		i = (i + 1) & (FS_SNAP_SLOTS - 1);
	assert(probe < FS_SNAP_SLOTS);
	return i;
}

/* Writer only: an archived sale's entry leaves the name table (backward
 * shift, with names_seq odd) and is marked free. Returns its index, or -1
 * when the name is not published. */
static inline int fs_snap_remove(struct fs_snapshot *s, const char *name, size_t len)
{
	int idx = fs_snap_find(s, name, len);
	if (idx < 0)
		return -1;
	uint64_t ns = atomic_load_explicit(&s->names_seq, memory_order_relaxed);
	atomic_store_explicit(&s->names_seq, ns + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	uint32_t i = fs_snap_slot_of(s, name, len, idx);
	uint32_t j = (i + 1) & (FS_SNAP_SLOTS - 1);
	for (uint32_t probe = 0; probe < FS_SNAP_SLOTS; probe++, j = (j + 1) & (FS_SNAP_SLOTS - 1)) {
		uint16_t v = atomic_load_explicit(&s->slots[j], memory_order_relaxed);
		if (v == 0)
			break;
		const struct fs_snap_sku *e = &s->skus[v - 1];
		uint32_t home = fs_snap_hash(e->name, e->name_len) & (FS_SNAP_SLOTS - 1);
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			atomic_store_explicit(&s->slots[i], v, memory_order_relaxed);
			i = j;
		}
	}
	atomic_store_explicit(&s->slots[i], 0, memory_order_relaxed);
	s->skus[idx].name_len = 0;
	atomic_store_explicit(&s->skus[idx].granted, 0, memory_order_relaxed);
	atomic_store_explicit(&s->skus[idx].refused, 0, memory_order_relaxed);
	atomic_store_explicit(&s->names_seq, ns + 2, memory_order_release);
	assert(fs_snap_find(s, name, len) < 0);
	return idx;
}

/* Copies a consistent view of SKU idx into *out; returns the entry's
 * (even) seqlock count it was read at: the same count later means the same
 * view (every publish moves it on by 2). */
static inline uint64_t fs_snap_read_seq(const struct fs_snapshot *s, int idx, struct fs_sku_read *out)
{
	assert(idx >= 0 && (uint32_t)idx < atomic_load_explicit(&((struct fs_snapshot *)s)->count,
	                                                        memory_order_relaxed));
	struct fs_snap_sku *k = (struct fs_snap_sku *)&s->skus[idx];
	for (;;) {
		uint64_t s1 = atomic_load_explicit(&k->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		out->total = atomic_load_explicit(&k->total, memory_order_relaxed);
		out->available = atomic_load_explicit(&k->available, memory_order_relaxed);
		out->reserved = atomic_load_explicit(&k->reserved, memory_order_relaxed);
		out->sold = atomic_load_explicit(&k->sold, memory_order_relaxed);
		out->version = atomic_load_explicit(&k->version, memory_order_relaxed);
		out->state = atomic_load_explicit(&k->state, memory_order_relaxed);
		out->waitlist_open = atomic_load_explicit(&k->waitlist_open, memory_order_relaxed);
		out->waitlist_count = atomic_load_explicit(&k->waitlist_count, memory_order_relaxed);
		out->queued = atomic_load_explicit(&k->queued, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&k->seq, memory_order_relaxed) == s1)
			return s1;
	}
}

static inline void fs_snap_read(const struct fs_snapshot *s, int idx, struct fs_sku_read *out)
{
	(void)fs_snap_read_seq(s, idx, out);
}

/* The entry's seqlock count now (odd while the writer is mid-publish, so it
 * never equals a count returned by fs_snap_read_seq then). */
static inline uint64_t fs_snap_seq(const struct fs_snapshot *s, int idx)
{
	return atomic_load_explicit(&((struct fs_snapshot *)s)->skus[idx].seq, memory_order_acquire);
}

/* Writer only: publishes (adding if new) one SKU's view. Returns -1 when
 * the snapshot is full. */
static inline int fs_snap_publish(struct fs_snapshot *s, const char *name, size_t len,
                                  const struct fs_sku_read *v)
{
	assert(len > 0 && len <= FS_SKU_LEN_MAX);
	int idx = fs_snap_find(s, name, len);
	int32_t new_slot = -1;
	uint64_t ns = 0;
	if (idx < 0) {
		uint32_t n = atomic_load_explicit(&s->count, memory_order_relaxed);
		uint32_t reuse = 0;   /* an archived sale's entry, first free one */
		while (reuse < n && s->skus[reuse].name_len != 0)
			reuse++;
		if (reuse == n && n >= FS_SNAP_SKU_MAX)
			return -1;
		if (reuse < n) {   /* readers may still probe past the old name: under names_seq */
			ns = atomic_load_explicit(&s->names_seq, memory_order_relaxed) + 1;
			atomic_store_explicit(&s->names_seq, ns, memory_order_relaxed);
			atomic_thread_fence(memory_order_release);
		}
		struct fs_snap_sku *k = &s->skus[reuse];
		memcpy(k->name, name, len);
		k->name_len = (uint8_t)len;
		idx = (int)reuse;
		if (reuse == n)
			atomic_store_explicit(&s->count, n + 1, memory_order_release);
		uint32_t i = fs_snap_hash(name, len) & (FS_SNAP_SLOTS - 1);
		uint32_t probe = 0;
		for (; atomic_load_explicit(&s->slots[i], memory_order_relaxed) != 0 && probe < FS_SNAP_SLOTS; probe++)
			i = (i + 1) & (FS_SNAP_SLOTS - 1);
		assert(probe < FS_SNAP_SLOTS);   /* n < FS_SNAP_SKU_MAX < FS_SNAP_SLOTS: a free slot exists */
		/* fields first (below, under the seqlock), then the slot */
		new_slot = (int32_t)i;
	}
	struct fs_snap_sku *k = &s->skus[idx];
	uint64_t seq = atomic_load_explicit(&k->seq, memory_order_relaxed);
	assert((seq & 1) == 0);   /* one writer: no publish is ever left half done */
	atomic_store_explicit(&k->seq, seq + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&k->total, v->total, memory_order_relaxed);
	atomic_store_explicit(&k->available, v->available, memory_order_relaxed);
	atomic_store_explicit(&k->reserved, v->reserved, memory_order_relaxed);
	atomic_store_explicit(&k->sold, v->sold, memory_order_relaxed);
	atomic_store_explicit(&k->version, v->version, memory_order_relaxed);
	atomic_store_explicit(&k->state, v->state, memory_order_relaxed);
	atomic_store_explicit(&k->waitlist_open, v->waitlist_open, memory_order_relaxed);
	atomic_store_explicit(&k->waitlist_count, v->waitlist_count, memory_order_relaxed);
	atomic_store_explicit(&k->queued, v->queued, memory_order_relaxed);
	atomic_store_explicit(&k->seq, seq + 2, memory_order_release);
	if (new_slot >= 0)
		atomic_store_explicit(&s->slots[new_slot], (uint16_t)(idx + 1), memory_order_release);
	if (ns & 1)
		atomic_store_explicit(&s->names_seq, ns + 1, memory_order_release);
	assert(fs_snap_find(s, name, len) == idx);
	return idx;
}

#endif
