/* fs_pub.c - the published reservations and orders (fs_pub.h): layout,
 * the writer's seqlocked stores and the readers' consistent reads.
 */
#include "common/fs_pub.h"

#include <assert.h>
#include <string.h>
#include <sys/mman.h>

static uint64_t pow2_at_least(uint64_t n)
{
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

static uint64_t align64(uint64_t n) { return (n + 63) & ~(uint64_t)63; }

struct layout { uint64_t skus, res, orders, users, bytes; uint32_t res_slots, order_slots; };

static void layout(struct layout *l, uint32_t sku_max, uint32_t user_max, uint32_t res_max, uint32_t order_max)
{
	l->res_slots = (uint32_t)pow2_at_least(res_max ? res_max : 1);
	l->order_slots = (uint32_t)pow2_at_least(order_max ? order_max : 1);
	l->skus = align64(sizeof(struct fs_pub));
	l->res = align64(l->skus + (uint64_t)sku_max * sizeof(struct fs_pub_sku));
	l->orders = align64(l->res + (uint64_t)l->res_slots * sizeof(struct fs_pub_res));
	l->users = align64(l->orders + (uint64_t)l->order_slots * sizeof(struct fs_pub_order));
	l->bytes = align64(l->users + (uint64_t)user_max * sizeof(struct fs_pub_user));
}

uint64_t fs_pub_bytes(uint32_t sku_max, uint32_t user_max, uint32_t res_max, uint32_t order_max)
{
	struct layout l;
	layout(&l, sku_max, user_max, res_max, order_max);
	return l.bytes;
}

struct fs_pub *fs_pub_map(uint32_t sku_max, uint32_t user_max, uint32_t res_max, uint32_t order_max)
{
	assert(sku_max > 0 && sku_max <= UINT16_MAX);
	struct layout l;
	layout(&l, sku_max, user_max, res_max, order_max);
	/* MAP_SHARED: forked DPDK lanes read it as the writer's threads do */
	void *m = mmap(NULL, l.bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		return NULL;
	struct fs_pub *p = m;
	p->bytes = l.bytes;
	p->res_slots = l.res_slots;
	p->order_slots = l.order_slots;
	p->user_max = user_max;
	p->sku_max = sku_max;
	p->off_skus = l.skus;
	p->off_res = l.res;
	p->off_orders = l.orders;
	p->off_users = l.users;
	assert((p->res_slots & (p->res_slots - 1)) == 0 && (p->order_slots & (p->order_slots - 1)) == 0);
	return p;
}

void fs_pub_unmap(struct fs_pub *p)
{
	if (p != NULL)
		munmap(p, p->bytes);
}

/* ---- writer side -------------------------------------------------------------- */

void fs_pub_set_user(struct fs_pub *p, uint32_t idx, const char *name, size_t len)
{
	assert(idx < p->user_max && len <= FS_ID_LEN_MAX);
	struct fs_pub_user *u = &fs_pub_users(p)[idx];
	memcpy(u->name, name, len);
	u->len = (uint8_t)len;
	/* published by the release store of the first slot that names it */
}

void fs_pub_set_sku_name(struct fs_pub *p, uint32_t idx, const char *name, size_t len)
{
	assert(idx < p->sku_max && len <= FS_SKU_LEN_MAX);
	struct fs_pub_sku *k = &fs_pub_skus(p)[idx];
	memcpy(k->name, name, len);
	k->name_len = (uint8_t)len;
}

void fs_pub_sku_begin(struct fs_pub *p, uint32_t idx)
{
	assert(idx < p->sku_max);
	struct fs_pub_sku *k = &fs_pub_skus(p)[idx];
	uint64_t s = atomic_load_explicit(&k->seq, memory_order_relaxed);
	assert((s & 1) == 0);   /* one writer: windows never nest */
	atomic_store_explicit(&k->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
}

void fs_pub_sku_end(struct fs_pub *p, uint32_t idx)
{
	assert(idx < p->sku_max);
	struct fs_pub_sku *k = &fs_pub_skus(p)[idx];
	uint64_t s = atomic_load_explicit(&k->seq, memory_order_relaxed);
	assert(s & 1);
	atomic_store_explicit(&k->seq, s + 1, memory_order_release);
}

void fs_pub_sku_queue(struct fs_pub *p, uint32_t idx, uint64_t wl_served, uint64_t pq_served, uint32_t drawn)
{
	struct fs_pub_sku *k = &fs_pub_skus(p)[idx];
	assert(atomic_load_explicit(&k->seq, memory_order_relaxed) & 1);   /* inside its window */
	atomic_store_explicit(&k->wl_served, wl_served, memory_order_relaxed);
	atomic_store_explicit(&k->pq_served, pq_served, memory_order_relaxed);
	atomic_store_explicit(&k->drawn, drawn, memory_order_relaxed);
}

void fs_pub_res_store(struct fs_pub *p, const struct fs_pub_res_view *v)
{
	assert(v->res_no != 0 && v->sku < p->sku_max && v->user < p->user_max);
	assert(atomic_load_explicit(&fs_pub_skus(p)[v->sku].seq, memory_order_relaxed) & 1);
	struct fs_pub_res *r = &fs_pub_res_slots(p)[(v->res_no - 1) & (p->res_slots - 1)];
	uint32_t s = atomic_load_explicit(&r->seq, memory_order_relaxed);
	assert((s & 1) == 0);
	atomic_store_explicit(&r->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&r->user, v->user, memory_order_relaxed);
	atomic_store_explicit(&r->res_no, v->res_no, memory_order_relaxed);
	atomic_store_explicit(&r->expires_ms, v->expires_ms, memory_order_relaxed);
	atomic_store_explicit(&r->order_no, v->order_no, memory_order_relaxed);
	atomic_store_explicit(&r->ticket, v->ticket, memory_order_relaxed);
	atomic_store_explicit(&r->qty, v->qty, memory_order_relaxed);
	atomic_store_explicit(&r->sku, v->sku, memory_order_relaxed);
	atomic_store_explicit(&r->status, v->status, memory_order_relaxed);
	atomic_store_explicit(&r->seq, s + 2, memory_order_release);
}

void fs_pub_order_store(struct fs_pub *p, const struct fs_pub_order_view *v)
{
	assert(v->order_no != 0 && v->res_no != 0 && v->sku < p->sku_max && v->user < p->user_max);
	struct fs_pub_order *o = &fs_pub_order_slots(p)[(v->order_no - 1) & (p->order_slots - 1)];
	uint32_t s = atomic_load_explicit(&o->seq, memory_order_relaxed);
	assert((s & 1) == 0);
	atomic_store_explicit(&o->seq, s + 1, memory_order_relaxed);
	atomic_thread_fence(memory_order_release);
	atomic_store_explicit(&o->user, v->user, memory_order_relaxed);
	atomic_store_explicit(&o->order_no, v->order_no, memory_order_relaxed);
	atomic_store_explicit(&o->res_no, v->res_no, memory_order_relaxed);
	atomic_store_explicit(&o->paid_at_ms, v->paid_at_ms, memory_order_relaxed);
	atomic_store_explicit(&o->qty, v->qty, memory_order_relaxed);
	atomic_store_explicit(&o->sku, v->sku, memory_order_relaxed);
	atomic_store_explicit(&o->status, v->status, memory_order_relaxed);
	atomic_store_explicit(&o->seq, s + 2, memory_order_release);
}

void fs_pub_floors(struct fs_pub *p, uint64_t res_floor, uint64_t order_floor)
{
	assert(res_floor >= atomic_load_explicit(&p->res_floor, memory_order_relaxed));
	assert(order_floor >= atomic_load_explicit(&p->order_floor, memory_order_relaxed));
	atomic_store_explicit(&p->res_floor, res_floor, memory_order_release);
	atomic_store_explicit(&p->order_floor, order_floor, memory_order_release);
}

void fs_pub_counts(struct fs_pub *p, uint64_t res_count, uint64_t order_count)
{
	assert(res_count >= atomic_load_explicit(&p->res_floor, memory_order_relaxed));
	atomic_store_explicit(&p->res_count, res_count, memory_order_release);
	atomic_store_explicit(&p->order_count, order_count, memory_order_release);
}

/* ---- reader side ------------------------------------------------------------- */

static int user_is(const struct fs_pub *p, uint32_t idx, const char *user, size_t len)
{
	if (idx >= p->user_max)
		return 0;
	const struct fs_pub_user *u = &fs_pub_users(p)[idx];
	return u->len == len && memcmp(u->name, user, len) == 0;
}

/* alloc.c res_position(), on the published counters. */
static uint32_t position(uint8_t status, uint64_t ticket, uint64_t wl_served, uint64_t pq_served, uint32_t drawn)
{
	uint64_t served = wl_served;
	if (status == FS_RES_QUEUED) {   /* unknown (0) until the draw */
		if (!drawn || ticket == 0)
			return 0;
		served = pq_served;
	}
	uint64_t ahead = ticket > served ? ticket - served : 1;
	return (uint32_t)(ahead > UINT32_MAX ? UINT32_MAX : ahead);
}

static void busy(const struct fs_pub *p)
{
	atomic_fetch_add_explicit(&((struct fs_pub *)p)->busy, 1, memory_order_relaxed);
}

enum fs_pub_rc fs_pub_res_read(const struct fs_pub *cp, uint64_t res_no, const char *user, size_t user_len,
                               struct fs_ans *a)
{
	struct fs_pub *p = (struct fs_pub *)cp;
	assert(res_no != 0);
	struct fs_pub_res *r = &fs_pub_res_slots(p)[(res_no - 1) & (p->res_slots - 1)];
	for (uint32_t tries = 0; tries < FS_PUB_TRIES; tries++) {
		if (res_no <= atomic_load_explicit(&p->res_floor, memory_order_acquire))
			return FS_PUB_RECLAIMED;
		if (res_no > atomic_load_explicit(&p->res_count, memory_order_acquire))
			return FS_PUB_NOT_FOUND;
		uint32_t s1 = atomic_load_explicit(&r->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		uint16_t sku = atomic_load_explicit(&r->sku, memory_order_relaxed);
		if (sku >= p->sku_max)
			continue;   /* torn: the recheck below would refuse it */
		struct fs_pub_sku *k = &fs_pub_skus(p)[sku];
		uint64_t k1 = atomic_load_explicit(&k->seq, memory_order_acquire);
		if (k1 & 1)
			continue;
		uint64_t no = atomic_load_explicit(&r->res_no, memory_order_relaxed);
		uint32_t uidx = atomic_load_explicit(&r->user, memory_order_relaxed);
		uint8_t status = atomic_load_explicit(&r->status, memory_order_relaxed);
		uint32_t qty = atomic_load_explicit(&r->qty, memory_order_relaxed);
		int64_t expires = atomic_load_explicit(&r->expires_ms, memory_order_relaxed);
		uint64_t order_no = atomic_load_explicit(&r->order_no, memory_order_relaxed);
		uint64_t ticket = atomic_load_explicit(&r->ticket, memory_order_relaxed);
		uint64_t wl = atomic_load_explicit(&k->wl_served, memory_order_relaxed);
		uint64_t pq = atomic_load_explicit(&k->pq_served, memory_order_relaxed);
		uint32_t drawn = atomic_load_explicit(&k->drawn, memory_order_relaxed);
		char name[FS_SKU_LEN_MAX];   /* renamed only in the SKU's window (publish.c) */
		uint8_t name_len = k->name_len % (FS_SKU_LEN_MAX + 1);
		memcpy(name, k->name, name_len);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&r->seq, memory_order_relaxed) != s1 ||
		    atomic_load_explicit(&k->seq, memory_order_relaxed) != k1)
			continue;
		if (no != res_no)
			continue;   /* the slot was reused: the floor has moved on */
		if (!user_is(p, uidx, user, user_len))
			return FS_PUB_NOT_FOUND;   /* another user's: 404 as for none */
		memset(a, 0, sizeof *a);
		a->http = 200;
		a->body = FS_BODY_RES;
		a->res_no = res_no;
		a->res_status = status;
		a->quantity = qty;
		a->expires_at_ms = expires;
		a->order_no = order_no;
		memcpy(a->sku, name, name_len);
		a->sku_len = name_len;
		if (status == FS_RES_WAITLISTED || status == FS_RES_QUEUED)
			a->position = position(status, ticket, wl, pq, drawn);
		return FS_PUB_OK;
	}
	busy(p);
	return FS_PUB_BUSY;
}

enum fs_pub_rc fs_pub_order_read(const struct fs_pub *cp, uint64_t order_no, const char *user, size_t user_len,
                                 struct fs_ans *a)
{
	struct fs_pub *p = (struct fs_pub *)cp;
	assert(order_no != 0);
	struct fs_pub_order *o = &fs_pub_order_slots(p)[(order_no - 1) & (p->order_slots - 1)];
	for (uint32_t tries = 0; tries < FS_PUB_TRIES; tries++) {
		if (order_no > atomic_load_explicit(&p->order_count, memory_order_acquire))
			return FS_PUB_NOT_FOUND;
		if (order_no <= atomic_load_explicit(&p->order_floor, memory_order_acquire))
			return FS_PUB_RECLAIMED;
		uint32_t s1 = atomic_load_explicit(&o->seq, memory_order_acquire);
		if (s1 & 1)
			continue;
		uint64_t no = atomic_load_explicit(&o->order_no, memory_order_relaxed);
		uint64_t res_no = atomic_load_explicit(&o->res_no, memory_order_relaxed);
		uint32_t uidx = atomic_load_explicit(&o->user, memory_order_relaxed);
		int64_t paid = atomic_load_explicit(&o->paid_at_ms, memory_order_relaxed);
		uint32_t qty = atomic_load_explicit(&o->qty, memory_order_relaxed);
		uint16_t sku = atomic_load_explicit(&o->sku, memory_order_relaxed);
		uint8_t status = atomic_load_explicit(&o->status, memory_order_relaxed);
		atomic_thread_fence(memory_order_acquire);
		if (atomic_load_explicit(&o->seq, memory_order_relaxed) != s1)
			continue;
		if (no != order_no || sku >= p->sku_max)
			continue;   /* reused slot: the floor has moved on */
		const struct fs_pub_sku *k = &fs_pub_skus(p)[sku];
		uint64_t k1 = atomic_load_explicit(&((struct fs_pub_sku *)k)->seq, memory_order_acquire);
		char name[FS_SKU_LEN_MAX];   /* renamed only in the SKU's window (publish.c) */
		uint8_t name_len = k->name_len % (FS_SKU_LEN_MAX + 1);
		memcpy(name, k->name, name_len);
		atomic_thread_fence(memory_order_acquire);
		if ((k1 & 1) || atomic_load_explicit(&((struct fs_pub_sku *)k)->seq, memory_order_relaxed) != k1)
			continue;
		if (res_no <= atomic_load_explicit(&p->res_floor, memory_order_acquire))
			return FS_PUB_RECLAIMED;   /* gone with its reservation */
		if (!user_is(p, uidx, user, user_len))
			return FS_PUB_NOT_FOUND;
		memset(a, 0, sizeof *a);
		a->http = 200;
		a->body = FS_BODY_ORDER;
		a->order_no = order_no;
		a->res_no = res_no;
		a->order_status = status;
		a->quantity = qty;
		a->paid_at_ms = paid;
		memcpy(a->sku, name, name_len);
		a->sku_len = name_len;
		return FS_PUB_OK;
	}
	busy(p);
	return FS_PUB_BUSY;
}
