/* fs_ring.h - bounded lock-free single-producer/single-consumer ring of
 * fixed-size slots, with burst enqueue/dequeue and a sleeping-consumer
 * wake-up flag.
 *
 * Why our own and not ck_ring or rte_ring: we move fixed-size structs by
 * value in bursts (one release store per burst, not per item), need no EAL,
 * and pair the ring with the consumer's idle protocol below. It is small
 * enough to argue about in full:
 *
 * Memory ordering. `head` is written only by the producer, `tail` only by the
 * consumer. The producer writes slots [head, head+n) and then publishes them
 * with a release store of head; the consumer's acquire load of head makes
 * those slot writes visible before it reads them. Symmetrically the consumer
 * reads slots [tail, tail+n) and then releases them with a release store of
 * tail; the producer's acquire load of tail guarantees the consumer's reads
 * happened before the producer overwrites those slots. Each side caches the
 * other's index and reloads it only when the cache says "full"/"empty", so
 * the shared cache lines move once per burst, not per slot. Indices are free
 * running uint32_t; capacity is a power of two, so `head - tail` is the
 * fill count even across wrap-around.
 *
 * Idle protocol. A consumer about to block sets `*sleeping = 1` (seq_cst),
 * re-checks every ring it consumes, and only then blocks; a producer, after
 * publishing, loads the flag (seq_cst) and signals the consumer's eventfd when
 * it is set. The two seq_cst operations cannot both miss each other, so a
 * wake-up is never lost, and a busy consumer costs producers no syscall.
 */
#ifndef FS_RING_H
#define FS_RING_H

#include <assert.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>

struct fs_ring {
	_Alignas(64) _Atomic uint32_t head;   /* producer writes */
	uint32_t tail_cache;                  /* producer's copy of tail */
	_Alignas(64) _Atomic uint32_t tail;   /* consumer writes */
	uint32_t head_cache;                  /* consumer's copy of head */
	_Alignas(64) uint32_t mask;
	uint32_t slot_size;
	uint8_t *slots;                       /* (mask + 1) * slot_size bytes */
};

/* Initialises `r` over caller-owned memory of count * slot_size bytes.
 * `count` must be a power of two. */
static inline void fs_ring_init(struct fs_ring *r, void *mem, uint32_t count, uint32_t slot_size)
{
	assert(count >= 2 && (count & (count - 1)) == 0);
	assert(slot_size > 0 && slot_size % 8 == 0);
	atomic_store_explicit(&r->head, 0, memory_order_relaxed);
	atomic_store_explicit(&r->tail, 0, memory_order_relaxed);
	r->tail_cache = 0;
	r->head_cache = 0;
	r->mask = count - 1;
	r->slot_size = slot_size;
	r->slots = mem;
}

static inline uint32_t fs_ring_capacity(const struct fs_ring *r) { return r->mask + 1; }

/* Producer: copies up to n items; returns how many fit (0 when full). */
static inline uint32_t fs_ring_enqueue_burst(struct fs_ring *r, const void *items, uint32_t n)
{
	uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint32_t cap = r->mask + 1;
	if (cap - (head - r->tail_cache) < n)
		r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint32_t free_count = cap - (head - r->tail_cache);
	assert(free_count <= cap);
	if (n > free_count)
		n = free_count;
	const uint8_t *src = items;
	for (uint32_t i = 0; i < n; i++)
		memcpy(r->slots + (size_t)((head + i) & r->mask) * r->slot_size,
		       src + (size_t)i * r->slot_size, r->slot_size);
	atomic_store_explicit(&r->head, head + n, memory_order_release);
	return n;
}

/* Producer: reserves the next free slot for in-place filling, or NULL when
 * full. Publish with fs_ring_produce(r, 1). */
static inline void *fs_ring_slot(struct fs_ring *r)
{
	uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	if (head - r->tail_cache > r->mask) {
		r->tail_cache = atomic_load_explicit(&r->tail, memory_order_acquire);
		if (head - r->tail_cache > r->mask)
			return NULL;
	}
	return r->slots + (size_t)(head & r->mask) * r->slot_size;
}

static inline void fs_ring_produce(struct fs_ring *r, uint32_t n)
{
	uint32_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	atomic_store_explicit(&r->head, head + n, memory_order_release);
}

/* Consumer: copies up to n items out; returns how many (0 when empty). */
static inline uint32_t fs_ring_dequeue_burst(struct fs_ring *r, void *items, uint32_t n)
{
	uint32_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	if (r->head_cache - tail < n)
		r->head_cache = atomic_load_explicit(&r->head, memory_order_acquire);
	uint32_t avail = r->head_cache - tail;
	assert(avail <= r->mask + 1);
	if (n > avail)
		n = avail;
	uint8_t *dst = items;
	for (uint32_t i = 0; i < n; i++)
		memcpy(dst + (size_t)i * r->slot_size,
		       r->slots + (size_t)((tail + i) & r->mask) * r->slot_size, r->slot_size);
	atomic_store_explicit(&r->tail, tail + n, memory_order_release);
	return n;
}

/* Approximate fill count (for metrics and idle checks from either side). */
static inline uint32_t fs_ring_count(const struct fs_ring *r)
{
	uint32_t h = atomic_load_explicit(&((struct fs_ring *)r)->head, memory_order_acquire);
	uint32_t t = atomic_load_explicit(&((struct fs_ring *)r)->tail, memory_order_acquire);
	return h - t;
}

#endif
