/* alloc.c - the allocator: sales state and the pure decide step.
 *
 * Only the writer thread calls into this file (invariant 1). Every table is
 * reserved at start-up by wr_state_new(); nothing here allocates afterwards.
 * See alloc.h for the semantics and writer/EVENTS.md for what each journal
 * record means to the outside world.
 */
#include "writer/alloc.h"
#include "common/fs_prefault.h"
#include "writer/draw.h"
#include "writer/record.h"
#include "common/fs_cidr.h"
#include "common/fs_pub.h"
#include "common/fs_fault.h"

#include <assert.h>
#include <limits.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <openssl/sha.h>
#include <xxhash.h>

#define NIL 0u                   /* "no reservation" in the intrusive lists */
/* Promotions one command may make; more wait for the writer-generated
 * WAITLIST_SERVE commands of later batches. This bounds a batch's records. */
#define PROMOTE_PER_CMD 4u
/* Admissions one WAITROOM_SERVE command may make (same reason). */
#define ADMIT_PER_CMD 16u
/* Requests that wait on one order's payment outcome (the checkout and its
 * concurrent repeats); more repeats are answered 202 PENDING at once. */
#define WR_ORDER_WAITERS 4

/* An intrusive FIFO of reservation numbers, linked through one of the
 * uint32_t link fields of struct wr_res (NIL-terminated). */
struct wr_fifo { uint32_t head, tail; };

struct wr_sku {
	char     name[FS_SKU_LEN_MAX];
	uint8_t  name_len;
	uint8_t  state;              /* stored: scheduled/open/paused/frozen/closed */
	uint8_t  touched;            /* in out->sku_touched this batch */
	uint8_t  _pad[5];
	uint64_t total, available, reserved, sold, version;
	struct fs_sale_args args;
	struct wr_fifo holds;        /* holds in creation (= deadline) order */
	struct wr_fifo wl;           /* waitlisted reservations */
	uint32_t wl_count;           /* live WAITLISTED entries */
	uint32_t free_next;          /* an archived (free) slot: the next free one's index + 1 */
	uint64_t wl_tickets;         /* tickets handed out */
	uint64_t wl_served;          /* tickets that left from the head */
	/* the waiting room (a drawn sale): entries in join order until the draw,
	 * in drawn order after it; later arrivals queue behind */
	uint8_t  draw_hash[32];      /* SHA-256 of the seed, committed at creation */
	uint8_t  has_draw;
	uint8_t  drawn;              /* the seed was revealed and the queue shuffled */
	uint8_t  _pad3[6];
	struct wr_fifo pq;           /* QUEUED reservations */
	uint32_t pq_count;           /* live QUEUED entries */
	uint32_t _pad4;
	uint64_t pq_tickets;         /* positions handed out (after the draw) */
	uint64_t pq_served;          /* entries that left the head */
	uint64_t pq_admitted;        /* admissions since the opening (outflow) */
	int64_t  opened_at_ms;
	int64_t  frozen_at_ms;       /* batch time of the freeze in force (state frozen) */
	uint64_t last_res_no;        /* its newest reservation (0: none): archive waits until
	                              * retention reclaimed it (res_floor >= it) */
};
/* A slot with name_len 0 is free: its sale was archived (FS_CMD_SALE_ARCHIVE)
 * and the next created sale takes it. Every other field is zero then, which
 * the timers' loops over all slots read as a sale with nothing due. */

struct wr_res {
	uint32_t sku;
	uint32_t user;
	uint32_t qty;
	uint8_t  status;             /* enum fs_res_status */
	uint8_t  orig_status;        /* status of the first answer (idempotent replay) */
	uint8_t  links;              /* FIFOs it is linked in (LINK_BIT_*) */
	uint8_t  _pad;
	int64_t  expires_ms;         /* 0 while WAITLISTED */
	uint64_t order_no;
	uint64_t wl_ticket;          /* waitlist ticket (position = ticket - served) */
	uint32_t exp_next;           /* next in the SKU's hold FIFO */
	uint32_t wl_next;            /* next in the SKU's waitlist */
	uint32_t orig_position;
	uint32_t pq_next;            /* next in the SKU's waiting room */
	uint64_t dev_hash;           /* device id the reservation was made from (0: none) */
	uint64_t pq_ticket;          /* waiting-room position ticket (after the draw) */
	int64_t  ended_ms;           /* batch time it reached a final status (0: not yet) */
	uint64_t idem_h0, idem_h1;   /* its idempotency key's slot identity (reclaim frees it) */
};

struct wr_order {
	uint64_t res_no;
	int64_t  amount_cents;
	int64_t  paid_at_ms;
	uint8_t  status;             /* enum fs_order_status */
	uint8_t  reason;             /* enum fs_pay of a failure */
	uint8_t  token_len;
	uint8_t  waiter_count;       /* volatile: requests waiting for the outcome */
	uint32_t user;
	uint8_t  waiter_origin[WR_ORDER_WAITERS];
	uint8_t  restock;            /* REFUNDING: the units go back on sale when refunded */
	uint64_t waiter_tag[WR_ORDER_WAITERS];
	char     token[FS_ID_LEN_MAX];
	uint64_t idem_h0, idem_h1;   /* its checkout key's slot identity */
};

struct wr_user {
	char     name[FS_ID_LEN_MAX];
	uint8_t  len;                /* 0: a free entry (reclaimed, on the free list) */
	uint8_t  _pad[3];
	uint32_t res_live;           /* its reservations not reclaimed yet; while free:
	                              * the next free entry's index + 1 (0 = none) */
};

struct wr_hold_slot { uint64_t key; uint32_t held; uint32_t bought; };  /* key 0 = empty */
/* Operator tier table and risk flags, by user (xxh3 of the id; key 0 = empty). */
struct wr_tier_slot { uint64_t key; int8_t tier; uint8_t flagged; uint8_t _pad[6]; };
#define WR_TIER_COUNT_MAX 131072u
#define WR_IP_RULES_MAX   256u
#define WR_RECLAIM_PER_CMD 1024u   /* reservations one RECLAIM frees (bounds a batch) */
struct wr_idem_slot { uint64_t h0, h1, val; };                           /* h0 0 = empty */

/* Hashes computed for a reservation a few commands ahead, when its table
 * slots were prefetched (the decide step is bound by cache misses). */
#define WR_PREFETCH_AHEAD 8
struct wr_pre { uint64_t user_hash; XXH128_hash_t idem_hash; };

struct wr_state {
	struct wr_limits lim;
	uint32_t sku_count;          /* slots ever used (live + free) */
	uint32_t skus_live;          /* created and not archived */
	uint32_t sku_free;           /* free list of archived slots: index + 1, 0 = empty */
	uint32_t user_count;         /* entries ever used (live + free) */
	uint32_t users_live;         /* interned and not reclaimed */
	uint32_t user_free;          /* free list of reclaimed entries: index + 1, 0 = empty */
	uint64_t res_count;          /* reservation numbers 1..res_count were handed out */
	uint64_t order_count;
	/* Retention (alloc.h): numbers <= the floors were reclaimed; the live
	 * ones, (floor, count], sit in rings of pow2 slots (number - 1) & mask. */
	uint64_t res_floor, order_floor;
	uint64_t res_mask, order_mask;
	int64_t  retention_ms;       /* live only (wr_due); 0 = keep forever */
	uint32_t idem_count;
	uint32_t hold_count;
	struct wr_sku *skus;
	uint16_t *sku_slots;         /* name hash -> sku index + 1 */
	uint32_t sku_slot_mask;
	struct wr_user *users;
	uint32_t *user_slots;        /* name hash -> user index + 1 */
	uint32_t user_slot_mask;
	struct wr_res *res;          /* index = reservation number - 1 */
	struct wr_order *orders;     /* index = order number - 1 */
	struct wr_hold_slot *holds;
	uint32_t hold_slot_mask;
	struct wr_hold_slot *dev_holds;  /* (device, sku) holdings: per-device limits */
	uint32_t dev_hold_count;
	struct wr_idem_slot *idem;
	uint64_t idem_slot_mask;
	int64_t  last_t_ms;
	uint32_t *scratch;           /* reservation_count_max entries: the draw's shuffle */
	struct wr_pre pre[WR_PREFETCH_AHEAD];  /* hashes of the commands ahead */
	const struct wr_pre *pre_cur;          /* the command being decided, or NULL */
	struct wr_tier_slot *tiers;
	uint32_t tier_slot_mask;
	uint32_t tier_count;
	uint32_t ip_rule_count;
	struct fs_cidr ip_rules[WR_IP_RULES_MAX];
	uint8_t ip_actions[WR_IP_RULES_MAX];
	size_t   bytes;
	void    *mem;
};

/* ---- set-up ------------------------------------------------------------ */

uint32_t wr_batch_records_cap(uint32_t cmd_count, uint32_t sku_count_max)
{
	/* a promotion record carries a SKU and no user, key or text */
	uint64_t per_cmd = WR_REC_BYTES_MAX + PROMOTE_PER_CMD * (WR_REC_FIXED_BYTES + FS_SKU_LEN_MAX + 8);
	uint64_t bytes = cmd_count * per_cmd + (uint64_t)WR_REC_BYTES_MAX * (sku_count_max + 1);
	assert(bytes <= UINT32_MAX);
	return (uint32_t)bytes;
}

uint32_t wr_replay_records_cap(uint32_t body_bytes, uint32_t sku_count_max)
{
	uint64_t bytes = body_bytes + (uint64_t)WR_REC_BYTES_MAX * (sku_count_max + 4);
	assert(bytes <= UINT32_MAX);
	return (uint32_t)bytes;
}

int wr_batch_out_alloc(struct wr_batch_out *out, uint32_t cmd_count, uint32_t records_cap,
                       uint32_t sku_count_max)
{
	assert(cmd_count > 0 && sku_count_max > 0);
	memset(out, 0, sizeof *out);
	out->answer_count_max = 5 * cmd_count;
	out->answers = calloc(out->answer_count_max, sizeof *out->answers);
	out->records_cap = records_cap;
	out->records = malloc(records_cap);
	out->charges = calloc(cmd_count, sizeof *out->charges);
	out->sku_touched = calloc(sku_count_max, sizeof(uint32_t));
	out->touched_cap = WR_REC_COUNT_MAX(records_cap) + 1;
	out->res_touched = calloc(out->touched_cap, sizeof(uint64_t));
	out->order_touched = calloc(out->touched_cap, sizeof(uint64_t));
	out->sku_resweep = calloc(sku_count_max, sizeof(uint32_t));
	return out->answers && out->records && out->charges && out->sku_touched && out->res_touched &&
	       out->order_touched && out->sku_resweep ? 0 : -1;
}

void wr_batch_out_free(struct wr_batch_out *out)
{
	free(out->answers);
	free(out->records);
	free(out->charges);
	free(out->sku_touched);
	free(out->res_touched);
	free(out->order_touched);
	free(out->sku_resweep);
	memset(out, 0, sizeof *out);
}

void wr_limits_default(struct wr_limits *l)
{
	l->sku_count_max = 1024;
	l->user_count_max = 1000000;
	l->reservation_count_max = 4000000;
	l->order_count_max = 1000000;
	l->idem_count_max = 10000000;
	l->holding_count_max = 2000000;
	l->quantity_max = 100;
}

static uint64_t pow2_at_least(uint64_t n)
{
	uint64_t p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

/* Open-addressing tables are sized to at most ~62% load. */
static uint64_t slots_for(uint64_t count_max) { return pow2_at_least(count_max + count_max / 2 + 16); }

static size_t align64(size_t n) { return (n + 63) & ~(size_t)63; }

struct layout { size_t skus, sku_slots, users, user_slots, res, orders, holds, dev_holds, idem, scratch, tiers, total; };

static void layout_compute(const struct wr_limits *l, struct layout *o)
{
	size_t off = 0;
	o->skus = off;       off += align64(sizeof(struct wr_sku) * l->sku_count_max);
	o->sku_slots = off;  off += align64(sizeof(uint16_t) * slots_for(l->sku_count_max));
	o->users = off;      off += align64(sizeof(struct wr_user) * l->user_count_max);
	o->user_slots = off; off += align64(sizeof(uint32_t) * slots_for(l->user_count_max));
	o->res = off;        off += align64(sizeof(struct wr_res) * pow2_at_least(l->reservation_count_max));
	o->orders = off;     off += align64(sizeof(struct wr_order) * pow2_at_least(l->order_count_max));
	o->holds = off;      off += align64(sizeof(struct wr_hold_slot) * slots_for(l->holding_count_max));
	o->dev_holds = off;  off += align64(sizeof(struct wr_hold_slot) * slots_for(l->holding_count_max));
	o->idem = off;       off += align64(sizeof(struct wr_idem_slot) * slots_for(l->idem_count_max));
	o->scratch = off;    off += align64(sizeof(uint32_t) * l->reservation_count_max);
	o->tiers = off;      off += align64(sizeof(struct wr_tier_slot) * slots_for(WR_TIER_COUNT_MAX));
	o->total = off;
}

uint64_t wr_state_bytes(const struct wr_limits *l)
{
	struct layout o;
	layout_compute(l, &o);
	return o.total + sizeof(struct wr_state);
}

struct wr_state *wr_state_new(const struct wr_limits *l)
{
	assert(l->sku_count_max > 0 && l->sku_count_max < 65535);
	assert(l->user_count_max > 0 && l->reservation_count_max > 0 && l->quantity_max > 0);
	struct layout o;
	layout_compute(l, &o);
	size_t bytes = o.total + align64(sizeof(struct wr_state));
	uint8_t *mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
	                    MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (mem == MAP_FAILED)
		return NULL;
	/* The tables are hundreds of MiB probed at random: 2 MiB pages cut the
	 * TLB misses of every lookup (a hint; ignored where THP is off). */
	madvise(mem, bytes, MADV_HUGEPAGE);
	struct wr_state *st = (struct wr_state *)mem;
	uint8_t *base = mem + align64(sizeof(struct wr_state));
	st->lim = *l;
	st->skus = (struct wr_sku *)(base + o.skus);
	st->sku_slots = (uint16_t *)(base + o.sku_slots);
	st->sku_slot_mask = (uint32_t)slots_for(l->sku_count_max) - 1;
	st->users = (struct wr_user *)(base + o.users);
	st->user_slots = (uint32_t *)(base + o.user_slots);
	st->user_slot_mask = (uint32_t)slots_for(l->user_count_max) - 1;
	st->res = (struct wr_res *)(base + o.res);
	st->orders = (struct wr_order *)(base + o.orders);
	st->res_mask = pow2_at_least(l->reservation_count_max) - 1;
	st->order_mask = pow2_at_least(l->order_count_max) - 1;
	st->holds = (struct wr_hold_slot *)(base + o.holds);
	st->hold_slot_mask = (uint32_t)slots_for(l->holding_count_max) - 1;
	st->dev_holds = (struct wr_hold_slot *)(base + o.dev_holds);
	st->idem = (struct wr_idem_slot *)(base + o.idem);
	st->idem_slot_mask = slots_for(l->idem_count_max) - 1;
	st->scratch = (uint32_t *)(base + o.scratch);
	st->tiers = (struct wr_tier_slot *)(base + o.tiers);
	st->tier_slot_mask = (uint32_t)slots_for(WR_TIER_COUNT_MAX) - 1;
	st->bytes = bytes;
	st->mem = mem;
	return st;
}

void wr_state_prefault(struct wr_state *st)
{
	assert(st != NULL);
	fs_prefault(st->mem, st->bytes);
}

void wr_state_free(struct wr_state *st)
{
	if (st)
		munmap(st->mem, st->bytes);
}

/* ---- lookups ------------------------------------------------------------ */

static uint64_t str_hash(const char *s, size_t len) { return XXH3_64bits(s, len); }

int wr_sku_find(const struct wr_state *st, const char *name, size_t len)
{
	if (len == 0 || len > FS_SKU_LEN_MAX)
		return -1;
	uint32_t i = (uint32_t)str_hash(name, len) & st->sku_slot_mask;
	/* bounded: the table keeps more slots than SKUs, so an empty slot ends
	 * every probe well before it wraps */
	for (uint32_t probe = 0; probe <= st->sku_slot_mask; probe++) {
		uint16_t v = st->sku_slots[i];
		if (v == 0)
			return -1;
		assert(v <= st->sku_count);
		const struct wr_sku *k = &st->skus[v - 1];
		if (k->name_len == len && memcmp(k->name, name, len) == 0)
			return v - 1;
		i = (i + 1) & st->sku_slot_mask;
	}
	assert(!"sku table without an empty slot");
	return -1;
}

/* Zeroes a SKU slot, all but `touched`: a slot this batch already listed
 * in out->sku_touched (archived, or archived and taken again in one batch)
 * stays listed once (conservation_check clears the flag). */
static void sku_clear(struct wr_sku *k)
{
	uint8_t touched = k->touched;
	memset(k, 0, sizeof *k);
	k->touched = touched;
}

static int sku_insert(struct wr_state *st, const char *name, size_t len)
{
	assert(st->skus_live < st->lim.sku_count_max);
	assert(len > 0 && len <= FS_SKU_LEN_MAX && wr_sku_find(st, name, len) < 0);
	uint32_t idx = st->sku_free ? st->sku_free - 1 : st->sku_count++;
	struct wr_sku *k = &st->skus[idx];
	if (st->sku_free) {
		assert(k->name_len == 0);
		st->sku_free = k->free_next;
	}
	st->skus_live++;
	assert(st->sku_count <= st->lim.sku_count_max && st->skus_live <= st->sku_count);
	sku_clear(k);
	memcpy(k->name, name, len);
	k->name_len = (uint8_t)len;
	uint32_t i = (uint32_t)str_hash(name, len) & st->sku_slot_mask;
	uint32_t probe = 0;
	for (; st->sku_slots[i] != 0 && probe <= st->sku_slot_mask; probe++)
		i = (i + 1) & st->sku_slot_mask;
	assert(probe <= st->sku_slot_mask && st->sku_slots[i] == 0);
	st->sku_slots[i] = (uint16_t)(idx + 1);
	assert(wr_sku_find(st, name, len) == (int)idx);
	return (int)idx;
}

/* Takes SKU idx's name out of the name table (backward-shift deletion, as
 * user_unlink does for users). */
static void sku_unlink(struct wr_state *st, uint32_t idx)
{
	const struct wr_sku *k = &st->skus[idx];
	uint32_t mask = st->sku_slot_mask;
	uint32_t i = (uint32_t)str_hash(k->name, k->name_len) & mask;
	uint32_t probe = 0;
	for (; probe <= mask && st->sku_slots[i] != idx + 1; probe++)
		i = (i + 1) & mask;
	assert(probe <= mask && st->sku_slots[i] == idx + 1);
	uint32_t j = (i + 1) & mask;
	for (probe = 0; probe <= mask && st->sku_slots[j] != 0; probe++, j = (j + 1) & mask) {
		const struct wr_sku *e = &st->skus[st->sku_slots[j] - 1];
		uint32_t home = (uint32_t)str_hash(e->name, e->name_len) & mask;
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			st->sku_slots[i] = st->sku_slots[j];
			i = j;
		}
	}
	st->sku_slots[i] = 0;
	assert(wr_sku_find(st, k->name, k->name_len) < 0);
}

/* Returns the user's index, interning it if new; -1 when the table is full
 * (nothing inserted) or the id is empty. `hash` is str_hash(name). */
static int64_t user_intern_h(struct wr_state *st, const char *name, size_t len, uint64_t hash, int create)
{
	if (len == 0 || len > FS_ID_LEN_MAX)
		return -1;
	assert(hash == str_hash(name, len));
	uint32_t i = (uint32_t)hash & st->user_slot_mask;
	uint32_t probe = 0;
	for (; probe <= st->user_slot_mask; probe++) {
		uint32_t v = st->user_slots[i];
		if (v == 0)
			break;
		const struct wr_user *u = &st->users[v - 1];
		if (u->len == len && memcmp(u->name, name, len) == 0)
			return v - 1;
		i = (i + 1) & st->user_slot_mask;
	}
	assert(probe <= st->user_slot_mask);   /* more slots than users: a probe ends empty */
	if (!create || st->users_live >= st->lim.user_count_max)
		return -1;
	uint32_t idx = st->user_free ? st->user_free - 1 : st->user_count++;
	if (st->user_free) {
		assert(st->users[idx].len == 0);
		st->user_free = st->users[idx].res_live;
	}
	st->users_live++;
	memset(&st->users[idx], 0, sizeof st->users[idx]);
	memcpy(st->users[idx].name, name, len);
	st->users[idx].len = (uint8_t)len;
	st->user_slots[i] = idx + 1;
	assert(st->user_count <= st->lim.user_count_max && st->users_live <= st->user_count);
	return idx;
}

/* Takes user idx out of the name table (backward-shift deletion, so every
 * other name stays reachable from its home slot). */
static void user_unlink(struct wr_state *st, uint32_t idx)
{
	const struct wr_user *u = &st->users[idx];
	uint32_t mask = st->user_slot_mask;
	uint32_t i = (uint32_t)str_hash(u->name, u->len) & mask;
	uint32_t probe = 0;
	for (; probe <= mask && st->user_slots[i] != idx + 1; probe++)
		i = (i + 1) & mask;
	assert(probe <= mask && st->user_slots[i] == idx + 1);
	uint32_t j = (i + 1) & mask;
	for (probe = 0; probe <= mask && st->user_slots[j] != 0; probe++, j = (j + 1) & mask) {
		const struct wr_user *e = &st->users[st->user_slots[j] - 1];
		uint32_t home = (uint32_t)str_hash(e->name, e->len) & mask;
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			st->user_slots[i] = st->user_slots[j];
			i = j;
		}
	}
	st->user_slots[i] = 0;
}



static struct wr_hold_slot *slot_find(struct wr_hold_slot *tab, uint32_t mask, uint32_t *count,
                                      uint32_t count_max, uint64_t key, int create)
{
	assert(key != 0 && *count <= count_max);
	uint32_t i = (uint32_t)XXH3_64bits(&key, sizeof key) & mask;
	for (uint32_t probe = 0; probe <= mask; probe++) {
		struct wr_hold_slot *h = &tab[i];
		if (h->key == key)
			return h;
		if (h->key == 0) {
			if (!create || *count >= count_max)
				return NULL;
			(*count)++;
			h->key = key;
			return h;
		}
		i = (i + 1) & mask;
	}
	assert(!"holding table without an empty slot");
	return NULL;
}

/* Removes slot h from a holding table (backward-shift deletion). */
static void slot_delete(struct wr_hold_slot *tab, uint32_t mask, uint32_t *count, struct wr_hold_slot *h)
{
	assert(h->key != 0 && *count > 0);
	uint32_t i = (uint32_t)(h - tab);
	uint32_t j = (i + 1) & mask;
	for (uint32_t probe = 0; probe <= mask && tab[j].key != 0; probe++, j = (j + 1) & mask) {
		uint32_t home = (uint32_t)XXH3_64bits(&tab[j].key, sizeof tab[j].key) & mask;
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			tab[i] = tab[j];
			i = j;
		}
	}
	memset(&tab[i], 0, sizeof tab[i]);
	(*count)--;
}

/* Units a user holds (reserved, waiting, paying) and bought, per SKU. */
static struct wr_hold_slot *hold_find(struct wr_state *st, uint32_t user, uint32_t sku, int create)
{
	uint64_t key = ((uint64_t)user << 16 | sku) + 1;
	return slot_find(st->holds, st->hold_slot_mask, &st->hold_count, st->lim.holding_count_max, key, create);
}

/* The same per device id (per-user AND per-device purchase limits: a
 * device may hold as many units of a sale as one user). */
static struct wr_hold_slot *dev_hold_find(struct wr_state *st, uint64_t dev_hash, uint32_t sku, int create)
{
	/* the SKU in the low 16 bits (as in the user holdings' keys): archiving
	 * a sale finds its entries; 48 bits of the device id's hash are left */
	assert(sku < 0xffff);
	uint64_t key = (dev_hash & ~UINT64_C(0xffff)) | (sku + 1);
	return slot_find(st->dev_holds, st->hold_slot_mask, &st->dev_hold_count, st->lim.holding_count_max,
	                 key, create);
}

static uint64_t dev_hash_of(const struct fs_cmd *c)
{
	return c->text_len ? XXH3_64bits(c->text, c->text_len) | 1 : 0;
}

/* Moves a reservation's units in its user's (and device's) holding. */
static void holding_move(struct wr_state *st, const struct wr_res *r, int64_t held, int64_t bought)
{
	struct wr_hold_slot *h = hold_find(st, r->user, r->sku, 0);
	assert(h != NULL && (int64_t)h->held + held >= 0 && (int64_t)h->bought + bought >= 0);
	h->held = (uint32_t)((int64_t)h->held + held);
	h->bought = (uint32_t)((int64_t)h->bought + bought);
	if (r->dev_hash == 0)
		return;
	struct wr_hold_slot *d = dev_hold_find(st, r->dev_hash, r->sku, 0);
	assert(d != NULL && (int64_t)d->held + held >= 0);
	d->held = (uint32_t)((int64_t)d->held + held);
	d->bought = (uint32_t)((int64_t)d->bought + bought);
}

enum { IDEM_RESERVE = 1, IDEM_CHECKOUT = 2 };

/* The identity of an idempotency key: the user id (length-prefixed), the
 * kind and the key bytes as one unambiguous input -- no seed (for short
 * inputs XXH3 mixes a seed in linearly, and keys of different users could
 * collide), and no user index, so it is known before any lookup (the decide
 * loop prefetches its slot a few commands ahead). */
static XXH128_hash_t idem_hash(const char *user, size_t ulen, int kind, const char *key, size_t len)
{
	uint8_t buf[2 + 2 * FS_ID_LEN_MAX];
	assert(ulen <= FS_ID_LEN_MAX && len <= FS_ID_LEN_MAX);
	buf[0] = (uint8_t)ulen;
	memcpy(buf + 1, user, ulen);
	buf[1 + ulen] = (uint8_t)kind;
	memcpy(buf + 2 + ulen, key, len);
	return XXH3_128bits(buf, 2 + ulen + len);
}

/* Finds the slot for the key hashed to h: the matching one, or the empty
 * one where it would go. NULL only when the table is full and it is absent. */
static struct wr_idem_slot *idem_slot(struct wr_state *st, XXH128_hash_t h)
{
	uint64_t h0 = h.low64 | 1;   /* 0 marks an empty slot */
	uint64_t i = h.high64 & st->idem_slot_mask;
	for (uint64_t probe = 0; probe <= st->idem_slot_mask; probe++) {
		struct wr_idem_slot *s = &st->idem[i];
		if (s->h0 == h0 && s->h1 == h.high64)
			return s;
		if (s->h0 == 0) {
			if (st->idem_count >= st->lim.idem_count_max)
				return NULL;
			s->h1 = h.high64;   /* h0 stays 0 until idem_claim() */
			return s;
		}
		i = (i + 1) & st->idem_slot_mask;
	}
	assert(!"idempotency table without an empty slot");
	return NULL;
}

static void idem_claim(struct wr_state *st, struct wr_idem_slot *s, XXH128_hash_t h, uint64_t val)
{
	assert(s->h0 == 0 && s->h1 == h.high64);
	assert(st->idem_count < st->lim.idem_count_max);
	s->h0 = h.low64 | 1;
	s->val = val;
	st->idem_count++;
}

/* The ring slot of a live reservation / order number. */
static struct wr_res *res_at(const struct wr_state *st, uint64_t res_no)
{
	assert(res_no > st->res_floor && res_no <= st->res_count);
	return &st->res[(res_no - 1) & st->res_mask];
}

static struct wr_order *order_at(const struct wr_state *st, uint64_t order_no)
{
	assert(order_no > st->order_floor && order_no <= st->order_count);
	return &st->orders[(order_no - 1) & st->order_mask];
}

/* Removes the key (h0, h1) from the idempotency table, shifting later
 * entries of its probe run back so every lookup still finds its key
 * (linear probing without tombstones). Absent keys change nothing. */
static void idem_delete(struct wr_state *st, uint64_t h0, uint64_t h1)
{
	uint64_t mask = st->idem_slot_mask;
	uint64_t i = h1 & mask;
	/* bounded: the table keeps more slots than keys, so an empty slot ends
	 * every probe run before it wraps */
	uint64_t probe = 0;
	for (; probe <= mask; probe++, i = (i + 1) & mask) {
		if (st->idem[i].h0 == 0)
			return;
		if (st->idem[i].h0 == h0 && st->idem[i].h1 == h1)
			break;
	}
	assert(probe <= mask);
	uint64_t j = (i + 1) & mask;
	for (probe = 0; probe <= mask; probe++, j = (j + 1) & mask) {
		struct wr_idem_slot *e = &st->idem[j];
		if (e->h0 == 0)
			break;
		uint64_t home = e->h1 & mask;
		/* e may move to the hole at i unless its home lies in (i, j] */
		int stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (!stays) {
			st->idem[i] = *e;
			i = j;
		}
	}
	assert(probe <= mask);   /* the run ended at an empty slot */
	memset(&st->idem[i], 0, sizeof st->idem[i]);
	assert(st->idem_count > 0);
	st->idem_count--;
}

static struct wr_res *res_get(struct wr_state *st, uint64_t res_no)
{
	if (res_no <= st->res_floor || res_no > st->res_count)
		return NULL;
	return res_at(st, res_no);
}

/* An order is gone with its reservation (its slot may linger a while). */
static struct wr_order *order_get(struct wr_state *st, uint64_t order_no)
{
	if (order_no <= st->order_floor || order_no > st->order_count)
		return NULL;
	struct wr_order *o = order_at(st, order_no);
	return o->res_no <= st->res_floor ? NULL : o;
}

/* Was this (well-formed, once handed out) number reclaimed by retention? */
static int res_reclaimed(const struct wr_state *st, uint64_t res_no)
{
	return res_no != 0 && res_no <= st->res_floor;
}

static int order_reclaimed(const struct wr_state *st, uint64_t order_no)
{
	return order_no != 0 && order_no <= st->order_count &&
	       (order_no <= st->order_floor || order_at(st, order_no)->res_no <= st->res_floor);
}

/* ---- published state and conservation ------------------------------------ */

static uint8_t sku_published_state(const struct wr_sku *k)
{
	if (k->state == FS_SALE_OPEN && k->available == 0)
		return FS_SALE_SOLD_OUT;
	return k->state;
}

static int sku_conserved(const struct wr_sku *k)
{
	return k->available <= k->total && k->reserved <= k->total && k->sold <= k->total &&
	       k->available + k->reserved + k->sold == k->total;
}

static void sku_touch(struct wr_state *st, struct wr_batch_out *out, uint32_t idx)
{
	assert(idx < st->sku_count);
	struct wr_sku *k = &st->skus[idx];
	k->version++;
	if (!k->touched) {
		k->touched = 1;
		assert(out->sku_touched_count < st->lim.sku_count_max);
		out->sku_touched[out->sku_touched_count++] = idx;
	}
}

/* Reservation res_no's (and its order's) published answer changed. Every
 * call comes with a record, so the lists cannot overflow touched_cap. */
static void res_touch(struct wr_batch_out *out, uint64_t res_no, uint64_t order_no)
{
	if (out->res_touched == NULL)
		return;
	assert(out->res_touched_count < out->touched_cap && out->order_touched_count < out->touched_cap);
	out->res_touched[out->res_touched_count++] = res_no;
	if (order_no != 0)
		out->order_touched[out->order_touched_count++] = order_no;
}

/* Every hold or queued entry of SKU idx changed without a record each. */
static void sku_resweep(const struct wr_state *st, struct wr_batch_out *out, uint32_t idx)
{
	if (out->sku_resweep == NULL)
		return;
	for (uint32_t i = 0; i < out->sku_resweep_count; i++)
		if (out->sku_resweep[i] == idx)
			return;
	assert(out->sku_resweep_count < st->lim.sku_count_max);
	out->sku_resweep[out->sku_resweep_count++] = idx;
}

/* ---- output helpers ------------------------------------------------------- */

static struct fs_ans *answer_new(struct wr_batch_out *out, uint8_t origin, uint64_t tag)
{
	assert(out->answer_count < out->answer_count_max);
	struct wr_answer *a = &out->answers[out->answer_count++];
	memset(a, 0, sizeof *a);
	a->origin = origin;
	a->ans.tag = tag;
	return &a->ans;
}

static void answer_error(struct wr_batch_out *out, const struct fs_cmd *c, enum fs_err e)
{
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	a->err = (uint8_t)e;
	a->http = (uint16_t)fs_err_http(e);
	a->body = FS_BODY_ERROR;
}

static void record_emit(struct wr_batch_out *out, const struct fs_cmd *c)
{
	assert(c->err == FS_OK);
	assert(out->records_len + WR_REC_BYTES_MAX <= out->records_cap);
	uint32_t before = out->records_len;
	out->records_len += wr_rec_encode(c, out->records + out->records_len);
	out->record_count++;
	assert(out->records_len > before && out->records_len % 8 == 0);   /* records stay 8-aligned */
}

static void fill_sale(const struct wr_state *st, uint32_t idx, struct fs_ans *a)
{
	const struct wr_sku *k = &st->skus[idx];
	a->body = FS_BODY_SALE;
	memcpy(a->sku, k->name, k->name_len);
	a->sku_len = k->name_len;
	a->state = sku_published_state(k);
	a->total = k->total;
	a->available = k->available;
	a->reserved = k->reserved;
	a->sold = k->sold;
	a->version = k->version;
	a->has_draw = k->has_draw;
	a->drawn = k->drawn;
	a->queued = k->pq_count;
	memcpy(a->draw_commit, k->draw_hash, 32);
}

static uint32_t res_position(const struct wr_state *st, const struct wr_res *r)
{
	const struct wr_sku *k = &st->skus[r->sku];
	if (r->status == FS_RES_QUEUED) {   /* unknown (0) until the draw */
		if (!k->drawn || r->pq_ticket == 0)
			return 0;
		uint64_t ahead = r->pq_ticket > k->pq_served ? r->pq_ticket - k->pq_served : 1;
		return (uint32_t)(ahead > UINT32_MAX ? UINT32_MAX : ahead);
	}
	uint64_t ahead = r->wl_ticket > k->wl_served ? r->wl_ticket - k->wl_served : 1;
	return (uint32_t)(ahead > UINT32_MAX ? UINT32_MAX : ahead);
}

static void fill_res(const struct wr_state *st, uint64_t res_no, struct fs_ans *a)
{
	const struct wr_res *r = &(*res_at(st, res_no));
	const struct wr_sku *k = &st->skus[r->sku];
	a->body = FS_BODY_RES;
	a->res_no = res_no;
	a->res_status = r->status;
	a->quantity = r->qty;
	a->expires_at_ms = r->expires_ms;
	a->order_no = r->order_no;
	memcpy(a->sku, k->name, k->name_len);
	a->sku_len = k->name_len;
	if (r->status == FS_RES_WAITLISTED || r->status == FS_RES_QUEUED)
		a->position = res_position(st, r);
}

static void fill_order(const struct wr_state *st, uint64_t order_no, struct fs_ans *a, int body)
{
	const struct wr_order *o = &(*order_at(st, order_no));
	fill_res(st, o->res_no, a);
	a->body = (uint8_t)body;
	a->order_no = order_no;
	a->order_status = o->status;
	a->reason = o->reason;
	a->amount_cents = o->amount_cents;
	a->paid_at_ms = o->paid_at_ms;
}

/* Journals a derived record (PROMOTE, ADMIT): the new status of reservation
 * res_no, a consequence of the command journaled before it. */
static void derived_emit(struct wr_state *st, struct wr_batch_out *out, uint8_t type,
                         const struct wr_sku *k, uint64_t res_no)
{
	const struct wr_res *r = &(*res_at(st, res_no));
	res_touch(out, res_no, 0);
	struct fs_cmd d;
	memset(&d, 0, sizeof d);
	d.type = type;
	d.ref = res_no;
	d.quantity = r->qty;
	d.out_status = r->status;
	d.out_val = r->status == FS_RES_RESERVED ? r->expires_ms : 0;
	memcpy(d.sku, k->name, k->name_len);
	d.sku_len = k->name_len;
	record_emit(out, &d);
}

/* ---- hold FIFO and waitlist ----------------------------------------------- */

#define LINK_HOLDS offsetof(struct wr_res, exp_next)
#define LINK_WL    offsetof(struct wr_res, wl_next)
#define LINK_PQ    offsetof(struct wr_res, pq_next)

static uint32_t *link_of(struct wr_state *st, uint64_t res_no, size_t link)
{
	assert(res_no != NIL && res_no <= st->res_count);
	return (uint32_t *)((uint8_t *)&(*res_at(st, res_no)) + link);
}

/* Which FIFO a link field belongs to, as a bit of wr_res.links: retention
 * never reclaims a reservation that a FIFO still points at. */
static uint8_t link_bit(size_t link)
{
	return link == LINK_HOLDS ? 1 : link == LINK_WL ? 2 : 4;
}

static void fifo_push(struct wr_state *st, struct wr_fifo *f, size_t link, uint64_t res_no)
{
	assert((f->head == NIL) == (f->tail == NIL));
	assert(res_no != f->tail);
	assert(!(res_at(st, res_no)->links & link_bit(link)));
	res_at(st, res_no)->links |= link_bit(link);
	*link_of(st, res_no, link) = NIL;
	if (f->tail != NIL)
		*link_of(st, f->tail, link) = (uint32_t)res_no;
	else
		f->head = (uint32_t)res_no;
	f->tail = (uint32_t)res_no;
	assert(f->head != NIL && *link_of(st, f->tail, link) == NIL);
}

/* Unlinks the head; returns it (NIL when empty). */
static uint64_t fifo_pop(struct wr_state *st, struct wr_fifo *f, size_t link)
{
	assert((f->head == NIL) == (f->tail == NIL));
	uint64_t res_no = f->head;
	if (res_no == NIL)
		return NIL;
	f->head = *link_of(st, res_no, link);
	if (f->head == NIL)
		f->tail = NIL;
	assert((f->head == NIL) == (f->tail == NIL));
	res_at(st, res_no)->links &= (uint8_t)~link_bit(link);
	return res_no;
}

static void hold_push(struct wr_state *st, struct wr_sku *k, uint64_t res_no)
{
	assert(k->holds.tail == NIL || (*res_at(st, k->holds.tail)).expires_ms <= (*res_at(st, res_no)).expires_ms);
	fifo_push(st, &k->holds, LINK_HOLDS, res_no);
}

static void waitlist_push(struct wr_state *st, struct wr_sku *k, uint64_t res_no)
{
	fifo_push(st, &k->wl, LINK_WL, res_no);
	k->wl_count++;
}

/* Moves returned units to the head of the waitlist, in order, while they
 * fit; each promotion is journaled as a derived PROMOTE record. */
static uint32_t waitlist_serve(struct wr_state *st, uint32_t sku_idx, int64_t t_ms, struct wr_batch_out *out)
{
	struct wr_sku *k = &st->skus[sku_idx];
	uint32_t promoted = 0;
	while (k->wl.head != NIL && promoted < PROMOTE_PER_CMD) {
		uint64_t res_no = k->wl.head;
		struct wr_res *r = &(*res_at(st, res_no));
		if (r->status != FS_RES_WAITLISTED) {   /* cancelled while waiting */
			fifo_pop(st, &k->wl, LINK_WL);
			k->wl_served++;
			continue;
		}
		if (k->state != FS_SALE_OPEN || k->available < r->qty)
			break;
		fifo_pop(st, &k->wl, LINK_WL);
		k->wl_served++;
		k->wl_count--;
		k->available -= r->qty;
		k->reserved += r->qty;
		r->status = FS_RES_RESERVED;
		r->expires_ms = t_ms + k->args.hold_ms;
		hold_push(st, k, res_no);
		derived_emit(st, out, FS_CMD_PROMOTE, k, res_no);
		promoted++;
	}
	return promoted;
}

/* Units wait while the waitlist's head could take them. */
static int waitlist_ready(const struct wr_state *st, const struct wr_sku *k)
{
	if (k->wl.head == NIL || k->state != FS_SALE_OPEN || k->available == 0)
		return 0;
	const struct wr_res *r = &(*res_at(st, k->wl.head));
	return r->status != FS_RES_WAITLISTED || r->qty <= k->available;
}

static void decide_serve(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	int idx = wr_sku_find(st, c->sku, c->sku_len);
	if (idx < 0 || !waitlist_ready(st, &st->skus[idx])) {
		c->err = FS_ERR_BAD_STATE;
		return;
	}
	/* journal the command first: replay then re-derives the same promotions */
	c->err = FS_OK;
	record_emit(out, c);
	waitlist_serve(st, (uint32_t)idx, t_ms, out);
	sku_touch(st, out, (uint32_t)idx);
}

/* Units of a live hold go back to available (cancel, expiry, failed payment). */
static void units_return(struct wr_state *st, struct wr_res *r)
{
	struct wr_sku *k = &st->skus[r->sku];
	assert(k->reserved >= r->qty);
	k->reserved -= r->qty;
	k->available += r->qty;
	holding_move(st, r, -(int64_t)r->qty, 0);
}

/* ---- the waiting room ----------------------------------------------------------- */

static void pq_push(struct wr_state *st, struct wr_sku *k, uint64_t res_no)
{
	fifo_push(st, &k->pq, LINK_PQ, res_no);
	k->pq_count++;
}

static int hexval(char c)
{
	return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* 64 lowercase hex chars -> 32 bytes; -1 when malformed. */
static int hex32(const char *s, size_t len, uint8_t out[32])
{
	if (len != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -1;
		out[i] = (uint8_t)(hi << 4 | lo);
	}
	return 0;
}

/* The draw at the opening: checks the revealed seed against the commitment,
 * shuffles the queued entries with it and numbers them in drawn order.
 * Returns 0, or -1 (nothing changed) when the seed does not match. */
static int draw(struct wr_state *st, struct wr_sku *k, const struct fs_cmd *c, int64_t t_ms)
{
	uint8_t seed[32], hash[32];
	if (hex32(c->text, c->text_len, seed) != 0)
		return -1;
	SHA256(seed, 32, hash);
	if (memcmp(hash, k->draw_hash, 32) != 0)
		return -1;
	uint32_t n = 0;
	for (uint64_t r = fifo_pop(st, &k->pq, LINK_PQ); r != NIL; r = fifo_pop(st, &k->pq, LINK_PQ))
		if ((*res_at(st, r)).status == FS_RES_QUEUED)
			st->scratch[n++] = (uint32_t)r;
	assert(n == k->pq_count);
	wr_draw_shuffle(st->scratch, n, seed);
	k->pq.head = k->pq.tail = NIL;
	k->pq_count = 0;
	for (uint32_t i = 0; i < n; i++) {
		pq_push(st, k, st->scratch[i]);
		res_at(st, st->scratch[i])->pq_ticket = ++k->pq_tickets;
	}
	k->drawn = 1;
	k->opened_at_ms = t_ms;
	return 0;
}

/* Queued entries the outflow rate allows out by t_ms (all when no rate). */
static uint64_t pq_due(const struct wr_sku *k, int64_t t_ms)
{
	if (k->pq_count == 0 || k->state != FS_SALE_OPEN || !k->drawn)
		return 0;
	if (k->args.outflow_per_s == 0)
		return k->pq_count;
	int64_t elapsed = t_ms - k->opened_at_ms;
	uint64_t allowed = (uint64_t)k->args.outflow_per_s +
	                   (uint64_t)(elapsed > 0 ? elapsed : 0) * k->args.outflow_per_s / 1000;
	return allowed > k->pq_admitted ? allowed - k->pq_admitted : 0;
}


/* Admits one queued entry as a fresh reservation attempt would be decided:
 * RESERVED if units are left, else WAITLISTED if the waitlist takes it,
 * else REJECTED (its hold on the per-user limit is released). */
static void admit_one(struct wr_state *st, struct wr_sku *k, uint64_t res_no, int64_t t_ms)
{
	struct wr_res *r = &(*res_at(st, res_no));
	assert(r->status == FS_RES_QUEUED);
	k->pq_count--;
	if (k->available >= r->qty) {
		k->available -= r->qty;
		k->reserved += r->qty;
		r->status = FS_RES_RESERVED;
		r->expires_ms = t_ms + k->args.hold_ms;
		hold_push(st, k, res_no);
	} else if (k->args.waitlist_max > k->wl_count && k->reserved > 0) {
		r->status = FS_RES_WAITLISTED;
		r->wl_ticket = ++k->wl_tickets;
		waitlist_push(st, k, res_no);
	} else {
		holding_move(st, r, -(int64_t)r->qty, 0);
		r->status = FS_RES_REJECTED;
		r->ended_ms = t_ms;
	}
}

static void decide_waitroom_serve(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	int idx = wr_sku_find(st, c->sku, c->sku_len);
	struct wr_sku *k = idx >= 0 ? &st->skus[idx] : NULL;
	uint64_t due = k ? pq_due(k, t_ms) : 0;
	if (due == 0) {
		c->err = FS_ERR_BAD_STATE;
		return;
	}
	c->err = FS_OK;
	record_emit(out, c);   /* replay re-derives the admissions from it */
	uint32_t admitted = 0;
	while (k->pq.head != NIL && admitted < ADMIT_PER_CMD && due > 0) {
		uint64_t res_no = fifo_pop(st, &k->pq, LINK_PQ);
		struct wr_res *r = &(*res_at(st, res_no));
		k->pq_served++;
		if (r->status != FS_RES_QUEUED)
			continue;   /* cancelled while queued */
		admit_one(st, k, res_no, t_ms);
		k->pq_admitted++;
		admitted++;
		due--;
		derived_emit(st, out, FS_CMD_ADMIT, k, res_no);
	}
	sku_touch(st, out, (uint32_t)idx);
}

/* ---- admin commands -------------------------------------------------------- */

static void decide_create(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	if (c->sku_len == 0 || wr_sku_find(st, c->sku, c->sku_len) >= 0) {
		c->err = c->sku_len == 0 ? FS_ERR_BAD_REQUEST : FS_ERR_EXISTS;
		{ answer_error(out, c, c->err); return; }
	}
	if (st->skus_live >= st->lim.sku_count_max) {   /* `flashctl sale archive` frees slots */
		c->err = FS_ERR_OVERLOADED;
		{ answer_error(out, c, c->err); return; }
	}
	if (c->sale.hold_ms == 0 || c->sale.default_tier > 4 || c->sale.price_cents < 0 ||
	    c->sale.price_cents > (INT64_C(1) << 40) ||
	    c->sale.total > (UINT64_C(1) << 48)) {
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	uint8_t commit[32];
	int drawn_sale = c->sale.prequeue_window_ms > 0;
	if (drawn_sale && (c->sale.opens_at_ms == 0 || hex32(c->text, c->text_len, commit) != 0)) {
		c->err = FS_ERR_BAD_REQUEST;   /* a waiting room needs an opening time and a commitment */
		{ answer_error(out, c, c->err); return; }
	}
	int idx = sku_insert(st, c->sku, c->sku_len);
	struct wr_sku *k = &st->skus[idx];
	k->args = c->sale;
	if (drawn_sale) {
		memcpy(k->draw_hash, commit, 32);
		k->has_draw = 1;
	}
	k->state = FS_SALE_SCHEDULED;
	k->total = k->available = c->sale.total;
	c->err = FS_OK;
	c->out_status = k->state;
	sku_touch(st, out, (uint32_t)idx);
	record_emit(out, c);
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	fill_sale(st, (uint32_t)idx, a);
	a->http = 201;
}

static void users_release(struct wr_state *st, uint32_t sku);

/* Returns the new stored state for an admin transition, or -1 if refused. */
static int transition(uint8_t type, uint8_t from)
{
	switch (type) {
	case FS_CMD_SALE_OPEN:
		return from == FS_SALE_SCHEDULED || from == FS_SALE_PAUSED || from == FS_SALE_OPEN ? FS_SALE_OPEN : -1;
	case FS_CMD_SALE_PAUSE:
		return from == FS_SALE_OPEN || from == FS_SALE_PAUSED ? FS_SALE_PAUSED : -1;
	case FS_CMD_SALE_FREEZE:
		return from != FS_SALE_CLOSED ? FS_SALE_FROZEN : -1;
	case FS_CMD_SALE_RESUME:
		return from == FS_SALE_PAUSED || from == FS_SALE_FROZEN || from == FS_SALE_OPEN ? FS_SALE_OPEN : -1;
	case FS_CMD_SALE_CLOSE:
		return FS_SALE_CLOSED;
	default:
		assert(0 && "not an admin transition");
		return -1;
	}
}

/* Leaving a freeze: every live hold of the sale gets the frozen time back
 * (a freeze keeps customers whole: no hold ran out while checkouts were
 * refused). All shift by the same amount, so the FIFO stays in deadline
 * order. Deterministic from the journaled freeze and resume batch times, so
 * replay shifts the same holds by the same amount; no record of its own. */
static void holds_unfreeze(struct wr_state *st, struct wr_sku *k, int64_t t_ms, struct wr_batch_out *out)
{
	assert(k->state == FS_SALE_FROZEN && t_ms >= k->frozen_at_ms);
	sku_resweep(st, out, (uint32_t)(k - st->skus));
	int64_t shift_ms = t_ms - k->frozen_at_ms;
	for (uint64_t res_no = k->holds.head; res_no != NIL; res_no = *link_of(st, res_no, LINK_HOLDS)) {
		struct wr_res *r = &(*res_at(st, res_no));
		if (r->status == FS_RES_RESERVED)
			r->expires_ms += shift_ms;
	}
	k->frozen_at_ms = 0;
}

static void decide_admin(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	int idx = wr_sku_find(st, c->sku, c->sku_len);
	if (idx < 0) {
		c->err = FS_ERR_UNKNOWN_SKU;
		{ answer_error(out, c, c->err); return; }
	}
	struct wr_sku *k = &st->skus[idx];
	if (c->type == FS_CMD_SALE_GET) {
		c->err = FS_OK;
		struct fs_ans *a = answer_new(out, c->origin, c->tag);
		fill_sale(st, (uint32_t)idx, a);
		a->http = 200;
		return;
	}
	if (c->type == FS_CMD_STOCK_ADD) {
		if (c->quantity == 0 || k->state == FS_SALE_CLOSED) {
			c->err = c->quantity == 0 ? FS_ERR_BAD_REQUEST : FS_ERR_BAD_STATE;
			{ answer_error(out, c, c->err); return; }
		}
		k->total += c->quantity;
		k->available += c->quantity;
	} else if (c->type == FS_CMD_STOCK_REMOVE) {
		/* only units nobody holds: never below reserved + sold */
		if (c->quantity == 0 || c->quantity > k->available) {
			c->err = c->quantity == 0 ? FS_ERR_BAD_REQUEST : FS_ERR_BAD_STATE;
			{ answer_error(out, c, c->err); return; }
		}
		uint64_t held = k->reserved + k->sold;
		k->total -= c->quantity;
		k->available -= c->quantity;
		assert(k->total >= held && k->available + held == k->total);
	} else {
		int to = transition(c->type, k->state);
		if (to < 0) {
			c->err = FS_ERR_BAD_STATE;
			{ answer_error(out, c, c->err); return; }
		}
		/* a drawn sale opens only with the seed that matches its commitment */
		if (to == FS_SALE_OPEN && k->has_draw && !k->drawn && draw(st, k, c, t_ms) != 0) {
			c->err = FS_ERR_BAD_STATE;
			{ answer_error(out, c, c->err); return; }
		}
		if (to == FS_SALE_OPEN && !k->has_draw && k->opened_at_ms == 0)
			k->opened_at_ms = t_ms;
		if (to == FS_SALE_FROZEN && k->state != FS_SALE_FROZEN)
			k->frozen_at_ms = t_ms;
		else if (to != FS_SALE_FROZEN && k->state == FS_SALE_FROZEN)
			holds_unfreeze(st, k, t_ms, out);
		k->state = (uint8_t)to;
		if (to == FS_SALE_CLOSED)
			users_release(st, (uint32_t)idx);
	}
	c->err = FS_OK;
	c->out_status = k->state;
	sku_touch(st, out, (uint32_t)idx);
	record_emit(out, c);
	waitlist_serve(st, (uint32_t)idx, t_ms, out);
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	fill_sale(st, (uint32_t)idx, a);
	a->http = 200;
}

/* ---- customer commands ----------------------------------------------------- */

static enum fs_err sale_admits(const struct wr_sku *k)
{
	switch (k->state) {
	case FS_SALE_OPEN:   return FS_OK;
	case FS_SALE_FROZEN: return FS_ERR_FROZEN;
	default:             return FS_ERR_SALE_NOT_OPEN;
	}
}

static void answer_res(struct wr_state *st, const struct fs_cmd *c, uint64_t res_no, int http,
                       struct wr_batch_out *out)
{
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	fill_res(st, res_no, a);
	a->http = (uint16_t)http;
}

/* The original answer of a reservation, for an idempotent repeat. */
static void answer_res_original(struct wr_state *st, const struct fs_cmd *c, uint64_t res_no,
                                struct wr_batch_out *out)
{
	const struct wr_res *r = &(*res_at(st, res_no));
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	fill_res(st, res_no, a);
	a->http = 200;
	a->res_status = r->orig_status;
	a->order_no = 0;
	a->position = r->orig_position;
	if (r->orig_status == FS_RES_WAITLISTED)
		a->expires_at_ms = 0;
}

static void decide_reserve(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	int sku = wr_sku_find(st, c->sku, c->sku_len);
	assert(st->sku_count < UINT16_MAX);   /* out_sku holds a SKU index + 1 */
	c->out_sku = (uint16_t)(sku + 1);
	if (sku < 0) {
		c->err = FS_ERR_UNKNOWN_SKU;
		{ answer_error(out, c, c->err); return; }
	}
	if (c->quantity == 0 || c->quantity > st->lim.quantity_max || c->key_len == 0) {
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	if (c->user_len == 0) {
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	/* Look up without creating anything: a refused command must leave the
	 * state exactly as it was (it is not journaled, so replay never sees it). */
	const struct wr_pre *pre = st->pre_cur;
	uint64_t uh = pre ? pre->user_hash : str_hash(c->user, c->user_len);
	XXH128_hash_t ih = pre ? pre->idem_hash : idem_hash(c->user, c->user_len, IDEM_RESERVE, c->key, c->key_len);
	int64_t user = user_intern_h(st, c->user, c->user_len, uh, 0);
	struct wr_idem_slot *is = NULL;
	struct wr_hold_slot *h = NULL;
	if (user >= 0) {
		is = idem_slot(st, ih);
		if (is != NULL && is->h0 != 0) {   /* a repeat: the original answer, or a misuse of the key */
			const struct wr_res *r = &(*res_at(st, is->val));
			c->err = r->sku == (uint32_t)sku && r->qty == c->quantity ? FS_OK : FS_ERR_KEY_REUSED;
			if (c->err != FS_OK)
				{ answer_error(out, c, c->err); return; }
			c->err = FS_ERR_EXISTS;   /* answered, but nothing to journal */
			{ answer_res_original(st, c, is->val, out); return; }
		}
		h = hold_find(st, (uint32_t)user, (uint32_t)sku, 0);
	}
	struct wr_sku *k = &st->skus[sku];
	/* The waiting room: in the pre-queue window of a drawn sale, and after
	 * its opening until the drawn queue is drained, attempts queue up. */
	int queue = k->has_draw && ((k->state == FS_SALE_SCHEDULED &&
	                             t_ms >= k->args.opens_at_ms - (int64_t)k->args.prequeue_window_ms) ||
	                            (k->state == FS_SALE_OPEN && k->pq_count > 0));
	enum fs_err e = queue ? FS_OK : sale_admits(k);
	if (e != FS_OK) {
		c->err = (uint8_t)e;
		{ answer_error(out, c, e); return; }
	}
	uint64_t held = h ? (uint64_t)h->held + h->bought : 0;
	uint64_t dev = dev_hash_of(c);
	struct wr_hold_slot *dh = dev ? dev_hold_find(st, dev, (uint32_t)sku, 0) : NULL;
	uint64_t dev_held = dh ? (uint64_t)dh->held + dh->bought : 0;
	if (k->args.per_user != 0 && (held + c->quantity > k->args.per_user ||
	                              dev_held + c->quantity > k->args.per_user)) {
		c->err = FS_ERR_LIMIT_REACHED;
		{ answer_error(out, c, c->err); return; }
	}
	uint8_t status;
	if (queue)
		status = FS_RES_QUEUED;
	else if (k->available >= c->quantity && k->wl_count == 0)
		status = FS_RES_RESERVED;   /* units waiting for the waitlist are not for newcomers */
	else if (k->args.waitlist_max > k->wl_count && (k->reserved > 0 || k->wl_count > 0))
		status = FS_RES_WAITLISTED;
	else {
		c->err = FS_ERR_SOLD_OUT;
		{ answer_error(out, c, c->err); return; }
	}
	if (st->res_count - st->res_floor >= st->lim.reservation_count_max || st->idem_count >= st->lim.idem_count_max ||
	    (user < 0 && st->users_live >= st->lim.user_count_max) ||
	    (h == NULL && st->hold_count >= st->lim.holding_count_max) ||
	    (dev != 0 && dh == NULL && st->dev_hold_count >= st->lim.holding_count_max)) {
		c->err = FS_ERR_OVERLOADED;
		{ answer_error(out, c, c->err); return; }
	}
	/* admitted: create what is missing */
	if (user < 0) {
		user = user_intern_h(st, c->user, c->user_len, uh, 1);
		is = idem_slot(st, ih);
	}
	if (h == NULL)
		h = hold_find(st, (uint32_t)user, (uint32_t)sku, 1);
	if (dev != 0 && dh == NULL)
		dh = dev_hold_find(st, dev, (uint32_t)sku, 1);
	assert(dev == 0 || dh != NULL);
	assert(user >= 0 && is != NULL && is->h0 == 0 && h != NULL);
	uint64_t res_no = ++st->res_count;
	k->last_res_no = res_no;
	struct wr_res *r = &(*res_at(st, res_no));
	memset(r, 0, sizeof *r);
	r->sku = (uint32_t)sku;
	r->user = (uint32_t)user;
	st->users[user].res_live++;
	r->qty = c->quantity;
	r->status = r->orig_status = status;
	r->dev_hash = dev;
	h->held += c->quantity;
	if (dh != NULL)
		dh->held += c->quantity;
	idem_claim(st, is, ih, res_no);
	r->idem_h0 = ih.low64 | 1;
	r->idem_h1 = ih.high64;
	if (status == FS_RES_RESERVED) {
		k->available -= c->quantity;
		k->reserved += c->quantity;
		r->expires_ms = t_ms + k->args.hold_ms;
		hold_push(st, k, res_no);
	} else if (status == FS_RES_QUEUED) {
		pq_push(st, k, res_no);
		if (k->drawn)   /* after the draw, later arrivals line up behind */
			r->pq_ticket = ++k->pq_tickets;
		r->orig_position = res_position(st, r);
	} else {
		r->wl_ticket = ++k->wl_tickets;
		waitlist_push(st, k, res_no);
		r->orig_position = res_position(st, r);
	}
	c->err = FS_OK;
	c->out_ref = res_no;
	c->out_status = status;
	c->out_val = r->expires_ms;
	sku_touch(st, out, (uint32_t)sku);
	res_touch(out, res_no, 0);
	record_emit(out, c);
	answer_res(st, c, res_no, status == FS_RES_RESERVED ? 201 : 202, out);
}

/* Queued and waitlisted entries hold a place, not units: cancelling one
 * releases its share of the per-user limit only. */
static void release_place(struct wr_state *st, struct wr_sku *k, struct wr_res *r)
{
	holding_move(st, r, -(int64_t)r->qty, 0);
	if (r->status == FS_RES_WAITLISTED) {
		assert(k->wl_count > 0);
		k->wl_count--;
	} else {
		assert(r->status == FS_RES_QUEUED && k->pq_count > 0);
		k->pq_count--;
	}
}

/* Journals a command that changed reservation r: its outcome is r's new
 * status, and the record names r's SKU (the command may not have). */
static void record_res_change(struct wr_state *st, struct fs_cmd *c, uint64_t res_no, const struct wr_res *r,
                              struct wr_batch_out *out)
{
	const struct wr_sku *k = &st->skus[r->sku];
	assert(res_at(st, res_no) == r);
	res_touch(out, res_no, r->order_no);
	c->err = FS_OK;
	c->out_status = r->status;
	memcpy(c->sku, k->name, k->name_len);
	c->sku_len = k->name_len;
	sku_touch(st, out, r->sku);
	record_emit(out, c);
}

/* Finds the caller's own reservation; another user's is "not found". */
static struct wr_res *res_owned(struct wr_state *st, const struct fs_cmd *c, uint64_t res_no)
{
	struct wr_res *r = res_get(st, res_no);
	if (r == NULL)
		return NULL;
	const struct wr_user *u = &st->users[r->user];
	if (u->len != c->user_len || memcmp(u->name, c->user, c->user_len) != 0)
		return NULL;
	return r;
}

static void decide_cancel(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	struct wr_res *r = res_owned(st, c, c->ref);
	if (r == NULL) {
		c->err = FS_ERR_NOT_FOUND;
		{ answer_error(out, c, c->err); return; }
	}
	if (r->status == FS_RES_CANCELLED) {   /* a second cancel is harmless */
		c->err = FS_ERR_EXISTS;
		{ answer_res(st, c, c->ref, 200, out); return; }
	}
	if (r->status != FS_RES_RESERVED && r->status != FS_RES_WAITLISTED && r->status != FS_RES_QUEUED) {
		c->err = FS_ERR_NOT_CANCELLABLE;
		{ answer_error(out, c, c->err); return; }
	}
	struct wr_sku *k = &st->skus[r->sku];
	if (r->status == FS_RES_RESERVED)
		units_return(st, r);
	else
		release_place(st, k, r);
	r->status = FS_RES_CANCELLED;
	r->ended_ms = t_ms;
	record_res_change(st, c, c->ref, r, out);
	waitlist_serve(st, r->sku, t_ms, out);
	answer_res(st, c, c->ref, 200, out);
}

/* Unlinks the ended entries at the heads of a closed sale's waitlist and
 * waiting room (no draw comes after a close, so the waiting room's order
 * no longer matters): the wr_due walk then starts at a live entry. */
static void closed_queues_trim(struct wr_state *st, struct wr_sku *k)
{
	assert(k->state == FS_SALE_CLOSED);
	while (k->wl.head != NIL && res_at(st, k->wl.head)->status != FS_RES_WAITLISTED) {
		fifo_pop(st, &k->wl, LINK_WL);
		k->wl_served++;
	}
	while (k->pq.head != NIL && res_at(st, k->pq.head)->status != FS_RES_QUEUED) {
		fifo_pop(st, &k->pq, LINK_PQ);
		k->pq_served++;
	}
}

/* A closed sale's waitlisted or queued reservation will never get units:
 * the writer expires it (wr_due), so it ends and retention can reclaim it
 * -- and every reservation after it (reclaim goes in number order), and
 * the sale can be archived. No units move (it held none). */
static void expire_waiting(struct wr_state *st, struct fs_cmd *c, struct wr_res *r, int64_t t_ms,
                           struct wr_batch_out *out)
{
	struct wr_sku *k = &st->skus[r->sku];
	release_place(st, k, r);
	r->status = FS_RES_EXPIRED;
	r->ended_ms = t_ms;
	closed_queues_trim(st, k);
	record_res_change(st, c, c->ref, r, out);
	answer_res(st, c, c->ref, 200, out);
}

static void decide_expire(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	struct wr_res *r = res_get(st, c->ref);
	if (r != NULL && (r->status == FS_RES_WAITLISTED || r->status == FS_RES_QUEUED) &&
	    st->skus[r->sku].state == FS_SALE_CLOSED) {
		expire_waiting(st, c, r, t_ms, out);
		return;
	}
	if (r == NULL || r->status != FS_RES_RESERVED || r->expires_ms > t_ms ||
	    st->skus[r->sku].state == FS_SALE_FROZEN) {
		c->err = FS_ERR_NOT_CANCELLABLE;   /* stale: already gone or paying; or frozen: holds wait */
		{ answer_error(out, c, c->err); return; }
	}
	units_return(st, r);
	r->status = FS_RES_EXPIRED;
	r->ended_ms = t_ms;
	record_res_change(st, c, c->ref, r, out);
	waitlist_serve(st, r->sku, t_ms, out);
	answer_res(st, c, c->ref, 200, out);
}

static enum fs_err checkout_refusal(const struct wr_res *r, int64_t t_ms)
{
	switch (r->status) {
	case FS_RES_RESERVED:  return r->expires_ms <= t_ms ? FS_ERR_EXPIRED : FS_OK;
	case FS_RES_PAYING:
	case FS_RES_CONFIRMED: return FS_ERR_ALREADY_CHECKED_OUT;
	case FS_RES_EXPIRED:   return FS_ERR_EXPIRED;
	default:               return FS_ERR_BAD_STATE;
	}
}

/* A repeat of a checkout: the order's outcome when known, else wait for it
 * (at most WR_ORDER_WAITERS requests; more get 202 PENDING at once). An
 * order kept PENDING after an attempt that may have charged (pay_retry.c)
 * makes its waiters wait until the provider answers (RELIABILITY.md). */
static void checkout_repeat(struct wr_state *st, struct fs_cmd *c, uint64_t order_no, struct wr_batch_out *out)
{
	struct wr_order *o = &(*order_at(st, order_no));
	c->err = FS_ERR_EXISTS;
	if (o->status == FS_ORDER_PENDING && o->waiter_count < WR_ORDER_WAITERS && c->origin != WR_ORIGIN_NONE) {
		o->waiter_origin[o->waiter_count] = c->origin;
		o->waiter_tag[o->waiter_count++] = c->tag;
		return;
	}
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	fill_order(st, order_no, a, FS_BODY_CHECKOUT);
	/* paid and since refunded (or refunding): the checkout itself succeeded */
	a->http = o->status == FS_ORDER_FAILED ? 402 : o->status == FS_ORDER_PENDING ? 202 : 200;
}

static void decide_checkout(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	struct wr_res *r = res_owned(st, c, c->ref);
	if (r == NULL) {
		c->err = FS_ERR_NOT_FOUND;
		{ answer_error(out, c, c->err); return; }
	}
	if (c->key_len == 0 || c->text_len == 0) {
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	XXH128_hash_t ih = idem_hash(c->user, c->user_len, IDEM_CHECKOUT, c->key, c->key_len);
	struct wr_idem_slot *is = idem_slot(st, ih);
	if (is != NULL && is->h0 != 0) {
		if ((*order_at(st, is->val)).res_no != c->ref) {
			c->err = FS_ERR_KEY_REUSED;
			{ answer_error(out, c, c->err); return; }
		}
		{ checkout_repeat(st, c, is->val, out); return; }
	}
	if (is == NULL || st->order_count - st->order_floor >= st->lim.order_count_max) {
		c->err = FS_ERR_OVERLOADED;
		{ answer_error(out, c, c->err); return; }
	}
	enum fs_err e = st->skus[r->sku].state == FS_SALE_FROZEN ? FS_ERR_FROZEN : checkout_refusal(r, t_ms);
	if (e != FS_OK) {
		c->err = (uint8_t)e;
		{ answer_error(out, c, e); return; }
	}
	struct wr_sku *k = &st->skus[r->sku];
	uint64_t order_no = ++st->order_count;
	struct wr_order *o = &(*order_at(st, order_no));
	memset(o, 0, sizeof *o);
	o->res_no = c->ref;
	o->user = r->user;
	o->status = FS_ORDER_PENDING;
	o->amount_cents = (int64_t)r->qty * k->args.price_cents;
	o->token_len = c->text_len;
	memcpy(o->token, c->text, c->text_len);
	o->waiter_count = 0;
	if (c->origin != WR_ORIGIN_NONE) {
		o->waiter_origin[0] = c->origin;
		o->waiter_tag[0] = c->tag;
		o->waiter_count = 1;
	}
	idem_claim(st, is, ih, order_no);
	o->idem_h0 = ih.low64 | 1;
	o->idem_h1 = ih.high64;
	r->status = FS_RES_PAYING;
	r->order_no = order_no;
	c->out_ref = order_no;
	c->out_val = o->amount_cents;
	record_res_change(st, c, c->ref, r, out);
	struct wr_charge *ch = &out->charges[out->charge_count++];
	ch->kind = WR_CHARGE_PAY;   /* the buffer is reused: a refund may have been here */
	ch->order_no = order_no;
	ch->reissued = 0;
	ch->amount_cents = o->amount_cents;
	ch->token_len = o->token_len;
	memcpy(ch->token, o->token, o->token_len);
	ch->user_len = st->users[r->user].len;
	memcpy(ch->user, st->users[r->user].name, ch->user_len);
}

static void decide_pay_result(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	struct wr_order *o = order_get(st, c->ref);
	if (o == NULL || o->status != FS_ORDER_PENDING ||
	    (c->pay != FS_PAY_OK && c->pay != FS_PAY_DECLINED && c->pay != FS_PAY_ERROR &&
	     c->pay != FS_PAY_INVALID)) {
		c->err = FS_ERR_BAD_STATE;   /* late duplicate: the outcome is already known */
		return;
	}
	struct wr_res *r = &(*res_at(st, o->res_no));
	struct wr_sku *k = &st->skus[r->sku];
	assert(r->status == FS_RES_PAYING);
	if (c->pay == FS_PAY_OK) {
		assert(k->reserved >= r->qty);
		holding_move(st, r, -(int64_t)r->qty, r->qty);
		k->reserved -= r->qty;
		k->sold += r->qty;
		r->status = FS_RES_CONFIRMED;
		r->ended_ms = t_ms;
		o->status = FS_ORDER_PAID;
		o->paid_at_ms = t_ms;
	} else {
		units_return(st, r);
		r->status = FS_RES_FAILED;
		r->ended_ms = t_ms;
		o->status = FS_ORDER_FAILED;
		o->reason = c->pay;
	}
	record_res_change(st, c, o->res_no, r, out);
	if (c->pay != FS_PAY_OK)
		waitlist_serve(st, r->sku, t_ms, out);
	for (uint32_t i = 0; i < o->waiter_count; i++) {
		struct fs_ans *a = answer_new(out, o->waiter_origin[i], o->waiter_tag[i]);
		fill_order(st, c->ref, a, FS_BODY_CHECKOUT);
		a->http = o->status == FS_ORDER_PAID ? 200 : 402;
	}
	o->waiter_count = 0;
}

/* ---- refunds ---------------------------------------------------------------- */

/* The provider's request for a refund of order_no (the payment thread
 * sends it once the REFUND record is durable). */
static void refund_charge(const struct wr_state *st, uint64_t order_no, struct wr_charge *ch)
{
	const struct wr_order *o = &(*order_at(st, order_no));
	assert(o->status == FS_ORDER_REFUNDING);
	memset(ch, 0, sizeof *ch);
	ch->kind = WR_CHARGE_REFUND;
	ch->order_no = order_no;
	ch->amount_cents = o->amount_cents;
	ch->token_len = o->token_len;
	memcpy(ch->token, o->token, o->token_len);
	ch->user_len = st->users[o->user].len;
	memcpy(ch->user, st->users[o->user].name, ch->user_len);
}

/* Journals a refund command: its outcome is the order's new status, and
 * the record names the order's SKU. */
static void record_order_change(struct wr_state *st, struct fs_cmd *c, const struct wr_order *o,
                                const struct wr_res *r, struct wr_batch_out *out)
{
	const struct wr_sku *k = &st->skus[r->sku];
	c->err = FS_OK;
	c->out_status = o->status;
	memcpy(c->sku, k->name, k->name_len);
	c->sku_len = k->name_len;
	sku_touch(st, out, r->sku);
	res_touch(out, o->res_no, c->ref);   /* the published order reads see the change */
	record_emit(out, c);
}

/* FS_CMD_REFUND (admin): a PAID order becomes REFUNDING and its refund goes
 * to the provider; the admin's request waits for the outcome like a
 * checkout does. A repeat while refunding waits too; a repeat once
 * REFUNDED is answered 200 with the order (nothing journaled). */
static void decide_refund(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	struct wr_order *o = order_get(st, c->ref);
	if (o == NULL) {
		c->err = order_reclaimed(st, c->ref) ? FS_ERR_RECLAIMED : FS_ERR_NOT_FOUND;
		{ answer_error(out, c, c->err); return; }
	}
	if (o->status == FS_ORDER_REFUNDED || o->status == FS_ORDER_REFUNDING) {
		c->err = FS_ERR_EXISTS;   /* not journaled: a repeat */
		if (o->status == FS_ORDER_REFUNDING && o->waiter_count < WR_ORDER_WAITERS && c->origin != WR_ORIGIN_NONE) {
			o->waiter_origin[o->waiter_count] = c->origin;
			o->waiter_tag[o->waiter_count++] = c->tag;
			return;
		}
		struct fs_ans *a = answer_new(out, c->origin, c->tag);
		fill_order(st, c->ref, a, FS_BODY_ORDER);
		a->http = o->status == FS_ORDER_REFUNDED ? 200 : 202;
		return;
	}
	if (o->status != FS_ORDER_PAID || c->quantity > 1) {
		c->err = o->status != FS_ORDER_PAID ? FS_ERR_BAD_STATE : FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	struct wr_res *r = &(*res_at(st, o->res_no));
	assert(r->status == FS_RES_CONFIRMED);
	o->status = FS_ORDER_REFUNDING;
	o->restock = (uint8_t)c->quantity;
	o->reason = 0;
	o->waiter_count = 0;
	if (c->origin != WR_ORIGIN_NONE) {
		o->waiter_origin[0] = c->origin;
		o->waiter_tag[0] = c->tag;
		o->waiter_count = 1;
	}
	c->out_val = o->amount_cents;
	record_order_change(st, c, o, r, out);
	refund_charge(st, c->ref, &out->charges[out->charge_count++]);
}

/* FS_CMD_REFUND_RESULT (payment thread): refunded, the units leave `sold`:
 * back to available with --restock, else out of the sale (total shrinks);
 * a refund the provider refused leaves the order PAID (the operator may
 * ask again: same idempotency key). */
static void decide_refund_result(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	struct wr_order *o = order_get(st, c->ref);
	if (o == NULL || o->status != FS_ORDER_REFUNDING ||
	    (c->pay != FS_PAY_OK && c->pay != FS_PAY_DECLINED && c->pay != FS_PAY_ERROR &&
	     c->pay != FS_PAY_INVALID)) {
		c->err = FS_ERR_BAD_STATE;   /* late duplicate: the outcome is already known */
		return;
	}
	struct wr_res *r = &(*res_at(st, o->res_no));
	struct wr_sku *k = &st->skus[r->sku];
	assert(r->status == FS_RES_CONFIRMED && k->sold >= r->qty);
	c->quantity = r->qty;
	c->out_val = o->restock;
	if (c->pay == FS_PAY_OK) {
		k->sold -= r->qty;
		if (o->restock)
			k->available += r->qty;
		else
			k->total -= r->qty;
		o->status = FS_ORDER_REFUNDED;
	} else {
		o->status = FS_ORDER_PAID;
		o->reason = c->pay;
	}
	record_order_change(st, c, o, r, out);
	if (c->pay == FS_PAY_OK && o->restock)
		waitlist_serve(st, r->sku, t_ms, out);
	for (uint32_t i = 0; i < o->waiter_count; i++) {
		struct fs_ans *a = answer_new(out, o->waiter_origin[i], o->waiter_tag[i]);
		fill_order(st, c->ref, a, FS_BODY_ORDER);
		a->http = o->status == FS_ORDER_REFUNDED ? 200 : 402;
	}
	o->waiter_count = 0;
}

static void decide_read(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	c->err = FS_ERR_NOT_FOUND;
	if (c->type == FS_CMD_RES_GET ? res_reclaimed(st, c->ref) : order_reclaimed(st, c->ref)) {
		c->err = FS_ERR_RECLAIMED;   /* 404 "expired from the appliance" */
		{ answer_error(out, c, c->err); return; }
	}
	if (c->type == FS_CMD_RES_GET) {
		if (res_owned(st, c, c->ref) == NULL)
			{ answer_error(out, c, c->err); return; }
		c->err = FS_OK;
		{ answer_res(st, c, c->ref, 200, out); return; }
	}
	struct wr_order *o = order_get(st, c->ref);
	if (o == NULL)
		{ answer_error(out, c, c->err); return; }
	const struct wr_user *u = &st->users[o->user];
	if (u->len != c->user_len || memcmp(u->name, c->user, c->user_len) != 0)
		{ answer_error(out, c, c->err); return; }
	c->err = FS_OK;
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	fill_order(st, c->ref, a, FS_BODY_ORDER);
	a->http = 200;
}

/* ---- read access for the published reservations and orders ------------------ */

void wr_pub_bounds(const struct wr_state *st, uint64_t *res_floor, uint64_t *res_count,
                   uint64_t *order_floor, uint64_t *order_count)
{
	*res_floor = st->res_floor;
	*res_count = st->res_count;
	*order_floor = st->order_floor;
	*order_count = st->order_count;
	assert(*res_floor <= *res_count && *order_floor <= *order_count);
}

int wr_pub_res(const struct wr_state *st, uint64_t res_no, struct fs_pub_res_view *v)
{
	if (res_no <= st->res_floor || res_no > st->res_count)
		return -1;
	const struct wr_res *r = res_at(st, res_no);
	assert(r->sku < st->sku_count && r->user < st->user_count);
	v->res_no = res_no;
	v->order_no = r->order_no;
	v->ticket = r->status == FS_RES_QUEUED ? r->pq_ticket : r->status == FS_RES_WAITLISTED ? r->wl_ticket : 0;
	v->expires_ms = r->expires_ms;
	v->user = r->user;
	v->qty = r->qty;
	v->sku = (uint16_t)r->sku;
	v->status = r->status;
	return 0;
}

int wr_pub_order(const struct wr_state *st, uint64_t order_no, struct fs_pub_order_view *v)
{
	if (order_no <= st->order_floor || order_no > st->order_count)
		return -1;
	const struct wr_order *o = order_at(st, order_no);
	if (o->res_no <= st->res_floor)
		return -1;   /* gone with its reservation */
	const struct wr_res *r = res_at(st, o->res_no);
	v->order_no = order_no;
	v->res_no = o->res_no;
	v->paid_at_ms = o->paid_at_ms;
	v->user = o->user;
	v->qty = r->qty;
	v->sku = (uint16_t)r->sku;
	v->status = o->status;
	assert(o->user == r->user);
	return 0;
}

const char *wr_user_name(const struct wr_state *st, uint32_t idx, size_t *len)
{
	assert(idx < st->user_count);
	*len = st->users[idx].len;
	return st->users[idx].name;
}

uint32_t wr_user_count(const struct wr_state *st) { return st->user_count; }

void wr_sku_each_queued(const struct wr_state *st, uint32_t sku_idx, void (*fn)(void *arg, uint64_t res_no),
                        void *arg)
{
	assert(sku_idx < st->sku_count);
	struct wr_state *m = (struct wr_state *)st;   /* link_of reads only */
	const struct wr_sku *k = &st->skus[sku_idx];
	for (uint64_t no = k->holds.head; no != NIL; no = *link_of(m, no, LINK_HOLDS))
		fn(arg, no);
	for (uint64_t no = k->pq.head; no != NIL; no = *link_of(m, no, LINK_PQ))
		fn(arg, no);
}

void wr_sku_queue(const struct wr_state *st, uint32_t sku_idx, uint64_t *wl_served, uint64_t *pq_served,
                  uint32_t *drawn)
{
	assert(sku_idx < st->sku_count);
	const struct wr_sku *k = &st->skus[sku_idx];
	*wl_served = k->wl_served;
	*pq_served = k->pq_served;
	*drawn = k->drawn;
}

/* ---- fairness rules: operator tier table, risk flags, IP lists ------------------ */

static struct wr_tier_slot *tier_find(struct wr_state *st, const char *user, size_t len, int create)
{
	uint64_t key = XXH3_64bits(user, len) | 1;
	uint32_t i = (uint32_t)key & st->tier_slot_mask;
	for (uint32_t probe = 0; probe <= st->tier_slot_mask; probe++, i = (i + 1) & st->tier_slot_mask) {
		struct wr_tier_slot *t = &st->tiers[i];
		if (t->key == key)
			return t;
		if (t->key == 0) {
			if (!create || st->tier_count >= WR_TIER_COUNT_MAX)
				return NULL;
			st->tier_count++;
			t->key = key;
			t->tier = -1;
			return t;
		}
	}
	assert(!"tier table without an empty slot");
	return NULL;
}

int wr_user_tier(const struct wr_state *st, const char *user, size_t len, int *flagged)
{
	struct wr_tier_slot *t = tier_find((struct wr_state *)st, user, len, 0);
	*flagged = t ? t->flagged : 0;
	return t ? t->tier : -1;
}

uint32_t wr_ip_rules(const struct wr_state *st, struct fs_cidr *rules, uint8_t *actions, uint32_t max)
{
	uint32_t n = st->ip_rule_count < max ? st->ip_rule_count : max;
	memcpy(rules, st->ip_rules, n * sizeof *rules);
	memcpy(actions, st->ip_actions, n);
	return n;
}

static void answer_empty(struct wr_batch_out *out, const struct fs_cmd *c)
{
	struct fs_ans *a = answer_new(out, c->origin, c->tag);
	a->http = 200;
	a->body = FS_BODY_EMPTY;
}

static void decide_ip_rule(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	struct fs_cidr r;
	if (fs_cidr_parse(c->text, c->text_len, &r) != 0 || c->quantity > 2) {
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	uint32_t i = 0;
	while (i < st->ip_rule_count && (st->ip_rules[i].net != r.net || st->ip_rules[i].mask != r.mask))
		i++;
	if (c->quantity == 0) {   /* remove */
		if (i == st->ip_rule_count) {
			c->err = FS_ERR_NOT_FOUND;
			{ answer_error(out, c, c->err); return; }
		}
		st->ip_rule_count--;
		memmove(st->ip_rules + i, st->ip_rules + i + 1, (st->ip_rule_count - i) * sizeof r);
		memmove(st->ip_actions + i, st->ip_actions + i + 1, st->ip_rule_count - i);
	} else {
		if (i == st->ip_rule_count) {
			if (st->ip_rule_count >= WR_IP_RULES_MAX) {
				c->err = FS_ERR_OVERLOADED;
				{ answer_error(out, c, c->err); return; }
			}
			st->ip_rules[st->ip_rule_count++] = r;
		}
		st->ip_actions[i] = (uint8_t)c->quantity;
	}
	c->err = FS_OK;
	record_emit(out, c);
	answer_empty(out, c);
}

static void decide_user_tier(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	if (c->user_len == 0 || (c->quantity > 4 && c->quantity != 255)) {
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	struct wr_tier_slot *t = tier_find(st, c->user, c->user_len, 1);
	if (t == NULL) {
		c->err = FS_ERR_OVERLOADED;
		{ answer_error(out, c, c->err); return; }
	}
	t->tier = c->quantity == 255 ? -1 : (int8_t)c->quantity;
	if (c->quantity == 255)
		t->flagged = 0;   /* the operator clears the entry, risk flag included */
	c->err = FS_OK;
	record_emit(out, c);
	answer_empty(out, c);
}

/* A risk decision of the writer's admission: the user's tier is lowered for
 * good (journaled, so a restart keeps it). */
static void decide_risk_flag(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	struct wr_tier_slot *t = c->user_len ? tier_find(st, c->user, c->user_len, 1) : NULL;
	if (t == NULL || t->flagged) {
		c->err = t == NULL ? FS_ERR_OVERLOADED : FS_ERR_EXISTS;
		return;
	}
	t->flagged = 1;
	c->err = FS_OK;
	record_emit(out, c);
}

/* ---- retention: reclaiming ended reservations, orders and keys ------------------ */

static int res_final(uint8_t status)
{
	return status == FS_RES_CONFIRMED || status == FS_RES_CANCELLED || status == FS_RES_EXPIRED ||
	       status == FS_RES_FAILED || status == FS_RES_REJECTED;
}

/* Unlinks the ended entries at the heads of every sale's FIFOs (as the
 * batch loop's timers do for holds; a waiting room only once drawn: the
 * draw itself drops its ended entries; a closed one's has no draw to come). Deterministic: after it, the FIFOs
 * are the same whether or not the timers popped some of them before, so
 * the `links` bits that gate reclaim are too. */
static void fifos_trim(struct wr_state *st)
{
	for (uint32_t s = 0; s < st->sku_count; s++) {
		struct wr_sku *k = &st->skus[s];
		while (k->holds.head != NIL && res_at(st, k->holds.head)->status != FS_RES_RESERVED)
			fifo_pop(st, &k->holds, LINK_HOLDS);
		while (k->wl.head != NIL && res_at(st, k->wl.head)->status != FS_RES_WAITLISTED) {
			fifo_pop(st, &k->wl, LINK_WL);
			k->wl_served++;
		}
		while ((k->drawn || k->state == FS_SALE_CLOSED) && k->pq.head != NIL &&
		       res_at(st, k->pq.head)->status != FS_RES_QUEUED) {   /* closed: no draw comes */
			fifo_pop(st, &k->pq, LINK_PQ);
			k->pq_served++;
		}
	}
}

/* Is the reservation's order waiting for the provider's answer to a
 * refund? Its REFUND_RESULT must find the order: retention waits for it
 * (the order, and every reservation after this one, stay until it comes). */
static int res_refund_in_flight(const struct wr_state *st, const struct wr_res *r)
{
	return r->order_no != 0 && order_at(st, r->order_no)->status == FS_ORDER_REFUNDING;
}

/* Can reservation res_no be reclaimed at t_ms (retention_ms after it
 * ended; 0 = any ended one)? */
static int res_reclaimable(const struct wr_state *st, uint64_t res_no, int64_t t_ms, int64_t retention_ms)
{
	const struct wr_res *r = res_at(st, res_no);
	return res_final(r->status) && r->links == 0 && r->ended_ms + retention_ms <= t_ms &&
	       !res_refund_in_flight(st, r);
}

/* Is res_no among the ended entries at the head of FIFO f (which the trim
 * of decide_reclaim will unlink)? */
static int in_ended_prefix(const struct wr_state *st, const struct wr_fifo *f, size_t link, uint8_t live,
                           uint64_t res_no)
{
	for (uint64_t r = f->head; r != NIL; r = *(const uint32_t *)((const uint8_t *)res_at(st, r) + link)) {
		if (res_at(st, r)->status == live)
			return 0;
		if (r == res_no)
			return 1;
	}
	return 0;
}

/* The timers' view (wr_due, live only): reclaimable once decide_reclaim
 * has trimmed the FIFOs -- computed without touching the waitlist and the
 * waiting room, whose trims count as served places (decide only). */
static int res_due_reclaim(struct wr_state *st, uint64_t res_no, int64_t t_ms)
{
	const struct wr_res *r = res_at(st, res_no);
	if (!res_final(r->status) || r->ended_ms + st->retention_ms > t_ms || res_refund_in_flight(st, r))
		return 0;
	const struct wr_sku *k = &st->skus[r->sku];
	return (!(r->links & 1) || in_ended_prefix(st, &k->holds, LINK_HOLDS, FS_RES_RESERVED, res_no)) &&
	       (!(r->links & 2) || in_ended_prefix(st, &k->wl, LINK_WL, FS_RES_WAITLISTED, res_no)) &&
	       (!(r->links & 4) || ((k->drawn || k->state == FS_SALE_CLOSED) &&
	                            in_ended_prefix(st, &k->pq, LINK_PQ, FS_RES_QUEUED, res_no)));
}

/* A user whose last reservation was just reclaimed goes too, with its
 * holdings, unless it holds units or bought some in a sale that is not
 * closed (the per-user limit of that sale must still count them). Part of
 * the RECLAIM decision, so replay frees the same users. Costs one holding
 * lookup per SKU. The entry goes on the free list: the next new user takes
 * it (no live reservation or order names it any more). */
static void user_reclaim(struct wr_state *st, uint32_t user)
{
	assert(st->users[user].res_live == 0);
	for (uint32_t s = 0; s < st->sku_count; s++) {
		const struct wr_hold_slot *h = hold_find(st, user, s, 0);
		if (h != NULL && (h->held != 0 || (h->bought != 0 && st->skus[s].state != FS_SALE_CLOSED)))
			return;
	}
	for (uint32_t s = 0; s < st->sku_count; s++) {
		struct wr_hold_slot *h = hold_find(st, user, s, 0);
		if (h != NULL)
			slot_delete(st->holds, st->hold_slot_mask, &st->hold_count, h);
	}
	user_unlink(st, user);
	memset(&st->users[user], 0, sizeof st->users[user]);
	st->users[user].res_live = st->user_free;   /* the free list's link */
	st->user_free = user + 1;
	assert(st->users_live > 0);
	st->users_live--;
}

/* A sale closed: the users kept only because they bought in it (their
 * reservations are all reclaimed) may go now. One pass over the holding
 * table (tens of ms for the default 4 M slots, once per sale); the
 * candidates are collected first (in the draw's scratch), since a reclaim
 * moves other holdings around. At most reservation_count_max per close;
 * the rest stay until a later close or reclaim looks at them. */
static void users_release(struct wr_state *st, uint32_t sku)
{
	uint32_t n = 0;
	for (uint64_t i = 0; i <= st->hold_slot_mask && n < st->lim.reservation_count_max; i++) {
		const struct wr_hold_slot *h = &st->holds[i];
		if (h->key == 0 || ((h->key - 1) & 0xffff) != sku)
			continue;
		uint32_t user = (uint32_t)((h->key - 1) >> 16);
		assert(user < st->user_count && st->users[user].len != 0);
		if (st->users[user].res_live == 0)
			st->scratch[n++] = user;
	}
	for (uint32_t i = 0; i < n; i++)
		user_reclaim(st, st->scratch[i]);
}

/* FS_CMD_RECLAIM: frees the reservations up to number c->ref (each ended
 * and unlinked, else the command is refused), the idempotency keys of
 * them and of their orders, and the order slots whose reservations are
 * gone. The writer decided WHEN (wr_due, with --retention); the journal
 * records WHAT, so a replay frees exactly the same entries whatever the
 * retention is then. */
static void decide_reclaim(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	fifos_trim(st);
	if (c->ref <= st->res_floor || c->ref > st->res_count || c->ref - st->res_floor > WR_RECLAIM_PER_CMD) {
		c->err = FS_ERR_BAD_STATE;
		return;
	}
	for (uint64_t no = st->res_floor + 1; no <= c->ref; no++)
		if (!res_reclaimable(st, no, t_ms, 0)) {
			c->err = FS_ERR_BAD_STATE;
			return;
		}
	for (uint64_t no = st->res_floor + 1; no <= c->ref; no++) {
		struct wr_res *r = res_at(st, no);
		idem_delete(st, r->idem_h0, r->idem_h1);
		if (r->order_no != 0) {
			const struct wr_order *o = order_at(st, r->order_no);
			idem_delete(st, o->idem_h0, o->idem_h1);
		}
		uint32_t user = r->user;
		memset(r, 0, sizeof *r);
		assert(st->users[user].len != 0 && st->users[user].res_live > 0);
		if (--st->users[user].res_live == 0)
			user_reclaim(st, user);
	}
	st->res_floor = c->ref;
	while (st->order_floor < st->order_count && order_at(st, st->order_floor + 1)->res_no <= st->res_floor) {
		memset(order_at(st, st->order_floor + 1), 0, sizeof(struct wr_order));
		st->order_floor++;
	}
	c->err = FS_OK;
	c->out_ref = st->order_floor;
	record_emit(out, c);
}

/* Removes every entry of SKU sku from a holding table whose keys carry the
 * SKU + 1 in their low 16 bits (user and device holdings). One pass; after
 * a deletion the same slot is looked at again, since the backward shift may
 * have moved a later entry into it (one that wrapped round to the front was
 * already looked at). */
static void holdings_drop_sku(struct wr_hold_slot *tab, uint32_t mask, uint32_t *count, uint32_t sku)
{
	for (uint64_t i = 0; i <= mask;) {
		struct wr_hold_slot *h = &tab[i];
		if (h->key != 0 && (h->key & 0xffff) == ((uint64_t)sku + 1) % 0x10000) {
			assert(h->held == 0);   /* nothing held: every reservation of the sale was reclaimed */
			slot_delete(tab, mask, count, h);
			continue;
		}
		i++;
	}
}

/* FS_CMD_SALE_ARCHIVE: a closed sale whose reservations were all reclaimed
 * (so no reservation, order, idempotency key or queue names it) gives its
 * slot back: its user and device holdings go, its name leaves the table
 * (it may be created again), and the next SALE_CREATE takes the slot. The
 * sinks' part (they must have consumed the sale) is the writer's check
 * before the command is decided (live only, like RECLAIM's timing); the
 * journal records that it happened, so replay frees the same slot. */
static void decide_archive(struct wr_state *st, struct fs_cmd *c, struct wr_batch_out *out)
{
	int idx = wr_sku_find(st, c->sku, c->sku_len);
	if (idx < 0) {
		c->err = FS_ERR_UNKNOWN_SKU;
		{ answer_error(out, c, c->err); return; }
	}
	struct wr_sku *k = &st->skus[idx];
	if (k->state != FS_SALE_CLOSED || k->last_res_no > st->res_floor) {
		c->err = k->state != FS_SALE_CLOSED ? FS_ERR_BAD_STATE : FS_ERR_RETAINED;
		{ answer_error(out, c, c->err); return; }
	}
	assert(k->holds.head == NIL && k->wl.head == NIL && k->pq.head == NIL && k->reserved == 0);
	assert(k->wl_count == 0 && k->pq_count == 0);
	holdings_drop_sku(st->holds, st->hold_slot_mask, &st->hold_count, (uint32_t)idx);
	holdings_drop_sku(st->dev_holds, st->hold_slot_mask, &st->dev_hold_count, (uint32_t)idx);
	sku_unlink(st, (uint32_t)idx);
	sku_clear(k);
	k->free_next = st->sku_free;
	st->sku_free = (uint32_t)idx + 1;
	assert(st->skus_live > 0);
	st->skus_live--;
	c->err = FS_OK;
	c->out_status = FS_SALE_CLOSED;
	record_emit(out, c);
	answer_empty(out, c);
}

void wr_state_set_retention(struct wr_state *st, int64_t retention_ms)
{
	assert(retention_ms >= 0);
	st->retention_ms = retention_ms;
}

/* ---- the decide step -------------------------------------------------------- */

static void decide_one(struct wr_state *st, struct fs_cmd *c, int64_t t_ms, struct wr_batch_out *out)
{
	c->err = FS_OK;
	c->out_ref = 0;
	c->out_val = 0;
	c->out_status = 0;
	if (c->sku_len > FS_SKU_LEN_MAX || c->user_len > FS_ID_LEN_MAX || c->key_len > FS_ID_LEN_MAX ||
	    c->text_len > FS_ID_LEN_MAX) {   /* producers use fs_field_set; never trust it */
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
	switch (c->type) {
	case FS_CMD_SALE_CREATE:  { decide_create(st, c, out); return; }
	case FS_CMD_SALE_OPEN:
	case FS_CMD_SALE_PAUSE:
	case FS_CMD_SALE_FREEZE:
	case FS_CMD_SALE_RESUME:
	case FS_CMD_SALE_CLOSE:
	case FS_CMD_STOCK_ADD:
	case FS_CMD_STOCK_REMOVE:
	case FS_CMD_SALE_GET:     { decide_admin(st, c, t_ms, out); return; }
	case FS_CMD_RESERVE:      { decide_reserve(st, c, t_ms, out); return; }
	case FS_CMD_CANCEL:       { decide_cancel(st, c, t_ms, out); return; }
	case FS_CMD_EXPIRE:       { decide_expire(st, c, t_ms, out); return; }
	case FS_CMD_CHECKOUT:     { decide_checkout(st, c, t_ms, out); return; }
	case FS_CMD_PAY_RESULT:   { decide_pay_result(st, c, t_ms, out); return; }
	case FS_CMD_RES_GET:
	case FS_CMD_ORDER_GET:    { decide_read(st, c, out); return; }
	case FS_CMD_WAITLIST_SERVE: { decide_serve(st, c, t_ms, out); return; }
	case FS_CMD_WAITROOM_SERVE: { decide_waitroom_serve(st, c, t_ms, out); return; }
	case FS_CMD_IP_RULE:      { decide_ip_rule(st, c, out); return; }
	case FS_CMD_USER_TIER:    { decide_user_tier(st, c, out); return; }
	case FS_CMD_RISK_FLAG:    { decide_risk_flag(st, c, out); return; }
	case FS_CMD_RECLAIM:      { decide_reclaim(st, c, t_ms, out); return; }
	case FS_CMD_SALE_ARCHIVE: { decide_archive(st, c, out); return; }
	case FS_CMD_REFUND:       { decide_refund(st, c, out); return; }
	case FS_CMD_REFUND_RESULT: { decide_refund_result(st, c, t_ms, out); return; }
	default:
		c->err = FS_ERR_BAD_REQUEST;
		{ answer_error(out, c, c->err); return; }
	}
}

/* Invariant 2, checked at the batch boundary for every SKU the batch touched:
 * a violation freezes the SKU (journaled), it never sells on. */
static void conservation_check(struct wr_state *st, struct wr_batch_out *out)
{
	for (uint32_t i = 0; i < out->sku_touched_count; i++) {
		struct wr_sku *k = &st->skus[out->sku_touched[i]];
		k->touched = 0;
		if (sku_conserved(k) || k->state == FS_SALE_FROZEN)
			continue;
		fprintf(stderr, "writer: INVARIANT VIOLATED sku=%.*s total=%llu available=%llu "
		        "reserved=%llu sold=%llu: freezing\n", k->name_len, k->name,
		        (unsigned long long)k->total, (unsigned long long)k->available,
		        (unsigned long long)k->reserved, (unsigned long long)k->sold);
		k->state = FS_SALE_FROZEN;
		k->frozen_at_ms = st->last_t_ms;
		struct fs_cmd f;
		memset(&f, 0, sizeof f);
		f.type = FS_CMD_SALE_FREEZE;
		f.out_status = FS_SALE_FROZEN;
		memcpy(f.sku, k->name, k->name_len);
		f.sku_len = k->name_len;
		memcpy(f.text, "invariant", 9);
		f.text_len = 9;
		record_emit(out, &f);
	}
}

/* Hashes a reservation's user and idempotency key and starts loading the
 * two table slots they land in, so they are in cache when it is decided. */
static void prefetch(struct wr_state *st, const struct fs_cmd *c, struct wr_pre *p)
{
	if (c->type != FS_CMD_RESERVE || c->user_len > FS_ID_LEN_MAX || c->key_len > FS_ID_LEN_MAX)
		return;
	p->user_hash = str_hash(c->user, c->user_len);
	p->idem_hash = idem_hash(c->user, c->user_len, IDEM_RESERVE, c->key, c->key_len);
	__builtin_prefetch(&st->user_slots[p->user_hash & st->user_slot_mask]);
	__builtin_prefetch(&st->idem[p->idem_hash.high64 & st->idem_slot_mask]);
}

/* The second stage, half the distance ahead, once the user slot is in
 * cache: starts loading the user record and the user's holding of the SKU
 * the slot points at (a hint: a probe past a collided slot finds the rest). */
static void prefetch2(struct wr_state *st, const struct fs_cmd *c, const struct wr_pre *p)
{
	if (c->type != FS_CMD_RESERVE || c->user_len > FS_ID_LEN_MAX || c->key_len > FS_ID_LEN_MAX)
		return;
	uint32_t v = st->user_slots[p->user_hash & st->user_slot_mask];
	if (v == 0)
		return;   /* a new user: no record, no holding yet */
	__builtin_prefetch(&st->users[v - 1]);
	int sku = wr_sku_find(st, c->sku, c->sku_len);
	if (sku < 0)
		return;
	uint64_t key = ((uint64_t)(v - 1) << 16 | (uint32_t)sku) + 1;   /* hold_find's key */
	__builtin_prefetch(&st->holds[(uint32_t)XXH3_64bits(&key, sizeof key) & st->hold_slot_mask]);
}

void wr_decide(struct wr_state *st, struct fs_cmd *cmds, uint32_t n, int64_t t_ms,
               int replay, struct wr_batch_out *out)
{
	assert(t_ms >= st->last_t_ms);
	assert(out->answer_count_max >= 5 * n);   /* own answers + up to 4 waiters per payment */
	out->answer_count = 0;
	out->records_len = 0;
	out->record_count = 0;
	out->charge_count = 0;
	out->sku_touched_count = 0;
	out->res_touched_count = 0;
	out->order_touched_count = 0;
	out->sku_resweep_count = 0;
	st->last_t_ms = t_ms;
	for (uint32_t i = 0; i < n && i < WR_PREFETCH_AHEAD; i++)
		prefetch(st, &cmds[i], &st->pre[i % WR_PREFETCH_AHEAD]);
	for (uint32_t i = 0; i < n; i++) {
		struct fs_cmd *c = &cmds[i];
		struct wr_pre cur = st->pre[i % WR_PREFETCH_AHEAD];
		if (i + WR_PREFETCH_AHEAD < n)
			prefetch(st, &cmds[i + WR_PREFETCH_AHEAD], &st->pre[i % WR_PREFETCH_AHEAD]);
		if (i + WR_PREFETCH_AHEAD / 2 < n)
			prefetch2(st, &cmds[i + WR_PREFETCH_AHEAD / 2], &st->pre[(i + WR_PREFETCH_AHEAD / 2) % WR_PREFETCH_AHEAD]);
		st->pre_cur = c->type == FS_CMD_RESERVE && c->user_len <= FS_ID_LEN_MAX &&
		              c->key_len <= FS_ID_LEN_MAX ? &cur : NULL;
		if (replay && (c->type == FS_CMD_PROMOTE || c->type == FS_CMD_ADMIT ||
		               (c->type == FS_CMD_SALE_FREEZE && c->text_len == 9 &&
		                memcmp(c->text, "invariant", 9) == 0)))
			continue;   /* derived: regenerated by the command before it */
		if (replay)
			c->origin = WR_ORIGIN_NONE;
		decide_one(st, c, t_ms, out);
	}
	st->pre_cur = NULL;
#ifdef FS_FAULTS
	/* test-only (debug build): break conservation on one SKU, live only */
	uint32_t skew_len = replay ? 0 : atomic_exchange(&fs_fault_skew_len, 0);
	int skew = skew_len ? wr_sku_find(st, fs_fault_skew_sku, skew_len) : -1;
	if (skew >= 0) {
		st->skus[skew].available += 1;
		sku_touch(st, out, (uint32_t)skew);
	}
#endif
	conservation_check(st, out);
}

/* ---- timers ----------------------------------------------------------------- */

/* A writer-generated command (no producer waits for its answer). */
static struct fs_cmd *due_cmd(struct fs_cmd *c, uint8_t type, const struct wr_sku *k)
{
	memset(c, 0, sizeof *c);
	c->type = type;
	c->origin = WR_ORIGIN_NONE;
	if (k != NULL) {
		memcpy(c->sku, k->name, k->name_len);
		c->sku_len = k->name_len;
	}
	return c;
}

/* EXPIRE commands for a closed sale's waitlisted, then queued, entries in
 * FIFO order (expire_waiting trims the ended heads, so each walk starts at
 * a live one; the walk is bounded all the same). */
static uint32_t due_closed_waiting(const struct wr_state *st, const struct wr_sku *k, struct fs_cmd *out, uint32_t n,
                                   uint32_t max)
{
	uint32_t steps = 0;
	for (uint64_t no = k->wl.head; no != NIL && n < max && steps < 4 * max; no = res_at(st, no)->wl_next, steps++)
		if (res_at(st, no)->status == FS_RES_WAITLISTED)
			due_cmd(&out[n++], FS_CMD_EXPIRE, NULL)->ref = no;
	for (uint64_t no = k->pq.head; no != NIL && n < max && steps < 4 * max; no = res_at(st, no)->pq_next, steps++)
		if (res_at(st, no)->status == FS_RES_QUEUED)
			due_cmd(&out[n++], FS_CMD_EXPIRE, NULL)->ref = no;
	return n;
}

uint32_t wr_due(struct wr_state *st, int64_t t_ms, struct fs_cmd *out, uint32_t max)
{
	uint32_t n = 0;
	for (uint32_t s = 0; s < st->sku_count && n < max; s++) {
		struct wr_sku *k = &st->skus[s];
		if (k->state == FS_SALE_SCHEDULED && k->args.opens_at_ms != 0 && k->args.opens_at_ms <= t_ms)
			due_cmd(&out[n++], FS_CMD_SALE_OPEN, k);
		for (uint64_t due = pq_due(k, t_ms); due > 0 && n < max; due -= due > ADMIT_PER_CMD ? ADMIT_PER_CMD : due)
			due_cmd(&out[n++], FS_CMD_WAITROOM_SERVE, k);
		if (waitlist_ready(st, k) && n < max)
			due_cmd(&out[n++], FS_CMD_WAITLIST_SERVE, k);
		/* a frozen sale keeps its customers whole: no hold expires while it is frozen */
		while (k->state != FS_SALE_FROZEN && k->holds.head != NIL && n < max) {
			struct wr_res *r = res_at(st, k->holds.head);
			if (r->status == FS_RES_RESERVED && r->expires_ms > t_ms)
				break;
			if (r->status == FS_RES_RESERVED)
				due_cmd(&out[n++], FS_CMD_EXPIRE, NULL)->ref = k->holds.head;
			fifo_pop(st, &k->holds, LINK_HOLDS);   /* stale or handed out: leave the FIFO */
		}
		if (k->state == FS_SALE_CLOSED && (k->wl_count > 0 || k->pq_count > 0))
			n = due_closed_waiting(st, k, out, n, max);
	}
	if (st->retention_ms > 0 && n < max && st->res_floor < st->res_count) {
		uint64_t to = st->res_floor;
		while (to < st->res_count && to - st->res_floor < WR_RECLAIM_PER_CMD &&
		       res_due_reclaim(st, to + 1, t_ms))
			to++;
		if (to > st->res_floor)
			due_cmd(&out[n++], FS_CMD_RECLAIM, NULL)->ref = to;
	}
	assert(n <= max);
	return n;
}

int64_t wr_next_deadline(const struct wr_state *st)
{
	int64_t next = INT64_MAX;
	for (uint32_t s = 0; s < st->sku_count; s++) {
		const struct wr_sku *k = &st->skus[s];
		if (k->state == FS_SALE_SCHEDULED && k->args.opens_at_ms != 0 && k->args.opens_at_ms < next)
			next = k->args.opens_at_ms;
		if (waitlist_ready(st, k))
			next = INT64_MIN;
		if (k->pq_count > 0 && k->drawn && k->state == FS_SALE_OPEN) {
			int64_t d = INT64_MIN;   /* no rate: admit now */
			if (k->args.outflow_per_s != 0) {
				int64_t ahead = (int64_t)(k->pq_admitted + 1) - (int64_t)k->args.outflow_per_s;
				d = k->opened_at_ms + (ahead * 1000 + k->args.outflow_per_s - 1) / k->args.outflow_per_s;
			}
			if (d < next)
				next = d;
		}
		if (k->state == FS_SALE_CLOSED && (k->wl_count > 0 || k->pq_count > 0))
			next = INT64_MIN;   /* its waiting entries expire now (due_closed_waiting) */
		if (k->holds.head != NIL && k->state != FS_SALE_FROZEN) {   /* frozen: holds wait */
			const struct wr_res *r = res_at(st, k->holds.head);
			int64_t d = r->status == FS_RES_RESERVED ? r->expires_ms : 0;  /* stale: now */
			if (d < next)
				next = d;
		}
	}
	/* the oldest reservation's reclaim (a linked one waits for its FIFO
	 * head, which the timers above cover; one whose refund is in flight
	 * for its REFUND_RESULT, a command that wakes the writer anyway) */
	if (st->retention_ms > 0 && st->res_floor < st->res_count) {
		const struct wr_res *r = res_at(st, st->res_floor + 1);
		if (res_final(r->status) && !res_refund_in_flight(st, r) && r->ended_ms + st->retention_ms < next)
			next = r->ended_ms + st->retention_ms;
	}
	return next;
}

/* ---- views -------------------------------------------------------------------- */

uint32_t wr_sku_count(const struct wr_state *st) { return st->sku_count; }

int wr_sku_default_tier(const struct wr_state *st, const char *name, size_t len)
{
	int idx = wr_sku_find(st, name, len);
	return idx < 0 ? -1 : (int)st->skus[idx].args.default_tier;
}

void wr_sku_view(const struct wr_state *st, uint32_t idx, struct wr_sku_view *v)
{
	assert(idx < st->sku_count);
	const struct wr_sku *k = &st->skus[idx];
	memcpy(v->name, k->name, k->name_len);
	v->name_len = k->name_len;
	v->state = sku_published_state(k);
	v->waitlist_open = k->state == FS_SALE_OPEN && k->args.waitlist_max > k->wl_count && k->reserved > 0;
	v->total = k->total;
	v->available = k->available;
	v->reserved = k->reserved;
	v->sold = k->sold;
	v->version = k->version;
	v->waitlist_count = k->wl_count;
	v->per_user = k->args.per_user;
	v->hold_ms = k->args.hold_ms;
	v->default_tier = k->args.default_tier;
	v->has_draw = k->has_draw;
	v->drawn = k->drawn;
	memcpy(v->draw_commit, k->draw_hash, 32);
	v->queued = k->pq_count;
	v->price_cents = k->args.price_cents;
}

uint32_t wr_pending_charges(const struct wr_state *st, uint64_t after, struct wr_charge *out, uint32_t max)
{
	uint32_t n = 0;
	for (uint64_t i = after > st->order_floor ? after : st->order_floor; i < st->order_count && n < max; i++) {
		const struct wr_order *o = order_at(st, i + 1);
		if (o->status == FS_ORDER_REFUNDING) {
			refund_charge(st, i + 1, &out[n++]);
			continue;
		}
		if (o->status != FS_ORDER_PENDING)
			continue;
		struct wr_charge *c = &out[n++];
		memset(c, 0, sizeof *c);
		c->order_no = i + 1;
		c->amount_cents = o->amount_cents;
		c->token_len = o->token_len;
		memcpy(c->token, o->token, o->token_len);
		c->user_len = st->users[o->user].len;
		memcpy(c->user, st->users[o->user].name, c->user_len);
		c->reissued = 1;   /* an earlier run may have charged it: never FAILED on errors alone */
	}
	return n;
}

void wr_usage(const struct wr_state *st, struct wr_usage *u)
{
	memset(u, 0, sizeof *u);   /* callers compare whole structs (padding included) */
	u->users = st->users_live;
	u->skus = st->skus_live;
	u->reservations = (uint32_t)(st->res_count - st->res_floor);
	u->orders = (uint32_t)(st->order_count - st->order_floor);
	u->order_no_max = st->order_count;
	u->idem_keys = st->idem_count;
	u->holdings = st->hold_count;
}

uint64_t wr_state_digest(const struct wr_state *st)
{
	XXH3_state_t *h = XXH3_createState();
	assert(h != NULL);
	XXH3_64bits_reset(h);
	for (uint32_t s = 0; s < st->sku_count; s++) {
		const struct wr_sku *k = &st->skus[s];
		uint64_t f[8] = { k->total, k->available, k->reserved, k->sold, k->version,
		                  k->state, k->wl_count, k->wl_tickets };
		XXH3_64bits_update(h, k->name, k->name_len);
		XXH3_64bits_update(h, f, sizeof f);
	}
	for (uint64_t i = st->res_floor; i < st->res_count; i++) {
		const struct wr_res *r = res_at(st, i + 1);
		uint64_t f[7] = { r->sku, r->user, r->qty, r->status, (uint64_t)r->expires_ms,
		                  r->order_no, r->wl_ticket };
		XXH3_64bits_update(h, f, sizeof f);
	}
	for (uint64_t i = st->order_floor; i < st->order_count; i++) {
		const struct wr_order *o = order_at(st, i + 1);
		uint64_t f[5] = { o->res_no, (uint64_t)o->amount_cents, (uint64_t)o->paid_at_ms,
		                  o->status, o->reason };
		XXH3_64bits_update(h, f, sizeof f);
	}
	uint64_t f[7] = { st->users_live, st->idem_count, st->hold_count, st->res_count, st->dev_hold_count,
	                  st->res_floor, st->order_floor };
	XXH3_64bits_update(h, f, sizeof f);
	uint64_t d = XXH3_64bits_digest(h);
	XXH3_freeState(h);
	return d;
}

/* ---- the state image (snapshots) ------------------------------------------------ */

#define WR_IMG_VERSION 3u   /* 2: users reclaimed (live count, free list, res_live);
                             * 3: sales archived (free slots, last_res_no, device
                             * holding keys carry the SKU) */

/* The scalars of struct wr_state, as one fixed little-endian section. */
struct wr_img_meta {
	uint32_t version;
	uint32_t meta_bytes;
	struct wr_limits lim;
	uint32_t sku_count, user_count;
	uint64_t res_count, order_count;
	uint32_t idem_count, hold_count, dev_hold_count, tier_count;
	uint32_t ip_rule_count, _pad;
	int64_t  last_t_ms;
	uint64_t res_floor, order_floor;
	uint32_t users_live, user_free;
	uint32_t skus_live, sku_free;
};

int64_t wr_state_time_ms(const struct wr_state *st) { return st->last_t_ms; }

int wr_state_image_limits(const uint8_t *meta, uint64_t len, struct wr_limits *out)
{
	struct wr_img_meta m;
	if (len != sizeof m)
		return -1;
	memcpy(&m, meta, sizeof m);
	if (m.version != WR_IMG_VERSION || m.meta_bytes != sizeof m)
		return -1;
	*out = m.lim;
	return 0;
}

/* Is the slot in use? Its first `key_bytes` bytes are its key (0 = empty). */
static int slot_used(const uint8_t *slot, size_t key_bytes)
{
	for (size_t i = 0; i < key_bytes; i++)
		if (slot[i] != 0)
			return 1;
	return 0;
}

/* A sparse table as (u64 slot index, slot bytes) pairs: `used` of them. */
static int img_sparse(const struct wr_image_sink *s, uint32_t id, const void *tab, size_t slot_bytes,
                      uint64_t nslots, uint64_t used, size_t key_bytes)
{
	int rc = s->section(s->arg, id, used * (8 + slot_bytes));
	const uint8_t *p = tab;
	uint64_t emitted = 0;
	for (uint64_t i = 0; i < nslots && rc == 0; i++, p += slot_bytes) {
		if (!slot_used(p, key_bytes))
			continue;
		if (++emitted > used)
			return -1;   /* the count disagrees with the table: refuse to write a bad image */
		rc = s->data(s->arg, &i, sizeof i);
		if (rc == 0)
			rc = s->data(s->arg, p, slot_bytes);
	}
	return rc != 0 ? rc : emitted == used ? 0 : -1;
}

static int img_dense(const struct wr_image_sink *s, uint32_t id, const void *p, uint64_t bytes)
{
	int rc = s->section(s->arg, id, bytes);
	return rc != 0 || bytes == 0 ? rc : s->data(s->arg, p, bytes);
}

int wr_state_image(const struct wr_state *st, const struct wr_image_sink *s)
{
	assert(st != NULL && s != NULL && st->pre_cur == NULL);
	struct wr_img_meta m;
	memset(&m, 0, sizeof m);
	m.version = WR_IMG_VERSION;
	m.meta_bytes = sizeof m;
	m.lim = st->lim;
	m.sku_count = st->sku_count;
	m.user_count = st->user_count;
	m.res_count = st->res_count;
	m.order_count = st->order_count;
	m.idem_count = st->idem_count;
	m.hold_count = st->hold_count;
	m.dev_hold_count = st->dev_hold_count;
	m.tier_count = st->tier_count;
	m.ip_rule_count = st->ip_rule_count;
	m.last_t_ms = st->last_t_ms;
	m.res_floor = st->res_floor;
	m.order_floor = st->order_floor;
	m.users_live = st->users_live;
	m.user_free = st->user_free;
	m.skus_live = st->skus_live;
	m.sku_free = st->sku_free;
	int rc = img_dense(s, WR_IMG_META, &m, sizeof m);
	if (rc == 0)
		rc = img_dense(s, WR_IMG_SKUS, st->skus, (uint64_t)st->sku_count * sizeof *st->skus);
	if (rc == 0)
		rc = img_dense(s, WR_IMG_SKU_SLOTS, st->sku_slots, ((uint64_t)st->sku_slot_mask + 1) * sizeof *st->sku_slots);
	if (rc == 0)
		rc = img_dense(s, WR_IMG_USERS, st->users, (uint64_t)st->user_count * sizeof *st->users);
	if (rc == 0)
		rc = img_sparse(s, WR_IMG_USER_SLOTS, st->user_slots, sizeof *st->user_slots,
		                (uint64_t)st->user_slot_mask + 1, st->users_live, sizeof *st->user_slots);
	if (rc == 0)
		rc = s->section(s->arg, WR_IMG_RES, (st->res_count - st->res_floor) * sizeof *st->res);
	for (uint64_t no = st->res_floor + 1; rc == 0 && no <= st->res_count; no++)
		rc = s->data(s->arg, res_at(st, no), sizeof *st->res);
	if (rc == 0)
		rc = s->section(s->arg, WR_IMG_ORDERS, (st->order_count - st->order_floor) * sizeof *st->orders);
	for (uint64_t no = st->order_floor + 1; rc == 0 && no <= st->order_count; no++)
		rc = s->data(s->arg, order_at(st, no), sizeof *st->orders);
	if (rc == 0)
		rc = img_sparse(s, WR_IMG_HOLDS, st->holds, sizeof *st->holds, (uint64_t)st->hold_slot_mask + 1,
		                st->hold_count, sizeof(uint64_t));
	if (rc == 0)
		rc = img_sparse(s, WR_IMG_DEV_HOLDS, st->dev_holds, sizeof *st->dev_holds,
		                (uint64_t)st->hold_slot_mask + 1, st->dev_hold_count, sizeof(uint64_t));
	if (rc == 0)
		rc = img_sparse(s, WR_IMG_IDEM, st->idem, sizeof *st->idem, st->idem_slot_mask + 1,
		                st->idem_count, sizeof(uint64_t));
	if (rc == 0)
		rc = img_sparse(s, WR_IMG_TIERS, st->tiers, sizeof *st->tiers, (uint64_t)st->tier_slot_mask + 1,
		                st->tier_count, sizeof(uint64_t));
	if (rc == 0) {
		rc = s->section(s->arg, WR_IMG_IP_RULES, (uint64_t)st->ip_rule_count * (sizeof *st->ip_rules + 1));
		if (rc == 0 && st->ip_rule_count > 0)
			rc = s->data(s->arg, st->ip_rules, st->ip_rule_count * sizeof *st->ip_rules);
		if (rc == 0 && st->ip_rule_count > 0)
			rc = s->data(s->arg, st->ip_actions, st->ip_rule_count);
	}
	return rc;
}

static int img_fail(char *err, size_t err_len, const char *what, uint32_t id)
{
	snprintf(err, err_len, "section %u: %s", (unsigned)id, what);
	return -1;
}

/* Puts (index, slot) pairs back; every index must be inside the table. */
static int img_load_sparse(void *tab, size_t slot_bytes, uint64_t nslots, uint64_t used, const uint8_t *p,
                           uint64_t len, uint32_t id, char *err, size_t err_len)
{
	if (len != used * (8 + slot_bytes))
		return img_fail(err, err_len, "length does not match the entry count", id);
	for (uint64_t k = 0; k < used; k++, p += 8 + slot_bytes) {
		uint64_t idx;
		memcpy(&idx, p, sizeof idx);
		if (idx >= nslots || !slot_used(p + 8, slot_bytes < 8 ? slot_bytes : 8))
			return img_fail(err, err_len, "slot index out of range or empty entry", id);
		memcpy((uint8_t *)tab + idx * slot_bytes, p + 8, slot_bytes);
	}
	return 0;
}

static int img_load_dense(void *dst, uint64_t want, const uint8_t *p, uint64_t len, uint32_t id,
                          char *err, size_t err_len)
{
	if (len != want)
		return img_fail(err, err_len, "length does not match the entry count", id);
	if (len)
		memcpy(dst, p, len);
	return 0;
}

int wr_state_image_load(struct wr_state *st, uint32_t id, const uint8_t *p, uint64_t len, char *err, size_t err_len)
{
	assert(st != NULL && (p != NULL || len == 0));
	if (id == WR_IMG_META) {
		struct wr_img_meta m;
		if (len != sizeof m)
			return img_fail(err, err_len, "meta section of the wrong size (another version?)", id);
		memcpy(&m, p, sizeof m);
		if (m.version != WR_IMG_VERSION || m.meta_bytes != sizeof m)
			return img_fail(err, err_len, "unsupported state image version", id);
		if (memcmp(&m.lim, &st->lim, sizeof m.lim) != 0) {
			snprintf(err, err_len, "taken with other table limits (skus %u users %u reservations %u "
			         "orders %u idempotency keys %u holdings %u); start with the same limits",
			         m.lim.sku_count_max, m.lim.user_count_max, m.lim.reservation_count_max,
			         m.lim.order_count_max, m.lim.idem_count_max, m.lim.holding_count_max);
			return -1;
		}
		if (m.sku_count > st->lim.sku_count_max || m.user_count > st->lim.user_count_max ||
		    m.res_floor > m.res_count || m.order_floor > m.order_count ||
		    m.res_count - m.res_floor > st->lim.reservation_count_max ||
		    m.order_count - m.order_floor > st->lim.order_count_max ||
		    m.idem_count > st->lim.idem_count_max || m.hold_count > st->lim.holding_count_max ||
		    m.dev_hold_count > st->lim.holding_count_max || m.tier_count > WR_TIER_COUNT_MAX ||
		    m.ip_rule_count > WR_IP_RULES_MAX || m.users_live > m.user_count || m.user_free > m.user_count ||
		    m.skus_live > m.sku_count || m.sku_free > m.sku_count)
			return img_fail(err, err_len, "counts over the table limits", id);
		st->sku_count = m.sku_count;
		st->user_count = m.user_count;
		st->users_live = m.users_live;
		st->user_free = m.user_free;
		st->skus_live = m.skus_live;
		st->sku_free = m.sku_free;
		st->res_count = m.res_count;
		st->order_count = m.order_count;
		st->idem_count = m.idem_count;
		st->hold_count = m.hold_count;
		st->dev_hold_count = m.dev_hold_count;
		st->tier_count = m.tier_count;
		st->ip_rule_count = m.ip_rule_count;
		st->last_t_ms = m.last_t_ms;
		st->res_floor = m.res_floor;
		st->order_floor = m.order_floor;
		return 0;
	}
	switch (id) {
	case WR_IMG_SKUS:
		return img_load_dense(st->skus, (uint64_t)st->sku_count * sizeof *st->skus, p, len, id, err, err_len);
	case WR_IMG_SKU_SLOTS:
		return img_load_dense(st->sku_slots, ((uint64_t)st->sku_slot_mask + 1) * sizeof *st->sku_slots,
		                      p, len, id, err, err_len);
	case WR_IMG_USERS:
		return img_load_dense(st->users, (uint64_t)st->user_count * sizeof *st->users, p, len, id, err, err_len);
	case WR_IMG_USER_SLOTS:
		return img_load_sparse(st->user_slots, sizeof *st->user_slots, (uint64_t)st->user_slot_mask + 1,
		                       st->users_live, p, len, id, err, err_len);
	case WR_IMG_RES:
		if (len != (st->res_count - st->res_floor) * sizeof *st->res)
			return img_fail(err, err_len, "length does not match the entry count", id);
		for (uint64_t no = st->res_floor + 1; no <= st->res_count; no++, p += sizeof *st->res)
			memcpy(res_at(st, no), p, sizeof *st->res);
		return 0;
	case WR_IMG_ORDERS:
		if (len != (st->order_count - st->order_floor) * sizeof *st->orders)
			return img_fail(err, err_len, "length does not match the entry count", id);
		for (uint64_t no = st->order_floor + 1; no <= st->order_count; no++, p += sizeof *st->orders)
			memcpy(order_at(st, no), p, sizeof *st->orders);
		return 0;
	case WR_IMG_HOLDS:
		return img_load_sparse(st->holds, sizeof *st->holds, (uint64_t)st->hold_slot_mask + 1, st->hold_count,
		                       p, len, id, err, err_len);
	case WR_IMG_DEV_HOLDS:
		return img_load_sparse(st->dev_holds, sizeof *st->dev_holds, (uint64_t)st->hold_slot_mask + 1,
		                       st->dev_hold_count, p, len, id, err, err_len);
	case WR_IMG_IDEM:
		return img_load_sparse(st->idem, sizeof *st->idem, st->idem_slot_mask + 1, st->idem_count,
		                       p, len, id, err, err_len);
	case WR_IMG_TIERS:
		return img_load_sparse(st->tiers, sizeof *st->tiers, (uint64_t)st->tier_slot_mask + 1, st->tier_count,
		                       p, len, id, err, err_len);
	case WR_IMG_IP_RULES:
		if (len != (uint64_t)st->ip_rule_count * (sizeof *st->ip_rules + 1))
			return img_fail(err, err_len, "length does not match the entry count", id);
		memcpy(st->ip_rules, p, st->ip_rule_count * sizeof *st->ip_rules);
		memcpy(st->ip_actions, p + st->ip_rule_count * sizeof *st->ip_rules, st->ip_rule_count);
		return 0;
	default:
		return img_fail(err, err_len, "unknown section", id);
	}
}

int wr_state_image_done(struct wr_state *st, char *err, size_t err_len)
{
	/* Nothing waits on a payment across a restart: those requests died with
	 * the process that took them. */
	for (uint64_t no = st->order_floor + 1; no <= st->order_count; no++)
		order_at(st, no)->waiter_count = 0;
	uint32_t free_slots = 0;
	for (uint32_t s = 0; s < st->sku_count; s++)
		free_slots += st->skus[s].name_len == 0;
	if (free_slots != st->sku_count - st->skus_live) {
		snprintf(err, err_len, "%u archived sale slots, the counts say %u", free_slots,
		         st->sku_count - st->skus_live);
		return -1;
	}
	for (uint32_t f = st->sku_free, n = 0; f != 0; f = st->skus[f - 1].free_next, n++)
		if (n >= free_slots || f > st->sku_count || st->skus[f - 1].name_len != 0) {
			snprintf(err, err_len, "the archived sale slots' free list is broken");
			return -1;
		}
	for (uint32_t s = 0; s < st->sku_count; s++) {
		struct wr_sku *k = &st->skus[s];
		k->touched = 0;
		if (!sku_conserved(k) && k->state != FS_SALE_FROZEN) {
			snprintf(err, err_len, "sale %.*s does not conserve its units", k->name_len, k->name);
			return -1;
		}
		if (k->holds.tail > st->res_count || k->wl.tail > st->res_count || k->pq.tail > st->res_count ||
		    (k->holds.head != NIL && k->holds.head <= st->res_floor) ||
		    (k->wl.head != NIL && k->wl.head <= st->res_floor) || (k->pq.head != NIL && k->pq.head <= st->res_floor)) {
			snprintf(err, err_len, "sale %.*s links to a reservation that does not exist", k->name_len, k->name);
			return -1;
		}
	}
	for (uint64_t no = st->res_floor + 1; no <= st->res_count; no++) {
		const struct wr_res *r = res_at(st, no);
		if (r->sku >= st->sku_count || st->skus[r->sku].name_len == 0 || r->user >= st->user_count || st->users[r->user].len == 0 ||
		    r->order_no > st->order_count ||
		    (r->order_no != 0 && r->order_no <= st->order_floor)) {
			snprintf(err, err_len, "reservation %llu refers outside the tables", (unsigned long long)no);
			return -1;
		}
	}
	return 0;
}

void wr_each_holder(const struct wr_state *st, void (*fn)(void *arg, const char *user, size_t len), void *arg)
{
	for (uint64_t i = 0; i <= st->hold_slot_mask; i++) {
		const struct wr_hold_slot *h = &st->holds[i];
		if (h->key == 0 || h->held + h->bought == 0)
			continue;
		uint64_t user = (h->key - 1) >> 16;
		if (user < st->user_count && st->users[user].len != 0)
			fn(arg, st->users[user].name, st->users[user].len);
	}
}
