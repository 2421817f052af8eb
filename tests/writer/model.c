/* model.c - the reference model of the decide step (see model.h).
 *
 * Everything is an array; every question is answered by a linear scan of
 * the reservations, orders or users. Counters are kept only where API.md
 * defines them (total/available/reserved/sold/version of a SKU); a user's
 * holding for the per-user limit is recomputed from the reservations'
 * statuses every time.
 */
#include "tests/writer/model.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct m_sku {
	char     name[FS_SKU_LEN_MAX];
	uint8_t  name_len;
	uint8_t  state;                 /* stored state (never sold_out) */
	uint64_t total, available, reserved, sold, version;
	struct fs_sale_args args;
	uint64_t wl[M_WL_MAX];          /* WAITLISTED reservations, first in line first */
	uint32_t wl_len;
	uint32_t joins;                 /* reservations that ever joined the waitlist */
	int64_t  frozen_at_ms;          /* when the freeze in force began */
	uint8_t  gone;                  /* archived: its name may be created again */
	uint32_t slot;                  /* the writer's table slot: it walks them in order (wr_due) */
};

struct m_user {
	char    name[FS_ID_LEN_MAX];
	uint8_t len;
	uint8_t gone;                   /* reclaimed: a later arrival of the name is a new user */
};

struct m_res {
	uint32_t sku, user, qty;
	uint8_t  status;
	uint8_t  orig_status;           /* status of the first answer */
	int64_t  expires_ms;            /* 0 while waitlisted */
	int64_t  orig_expires_ms;
	uint64_t order_no;
	uint64_t reserved_seq;          /* when it (last) became RESERVED */
	char     key[FS_ID_LEN_MAX];
	uint8_t  key_len;
	char     dev[FS_ID_LEN_MAX];        /* device id it was made from */
	uint8_t  dev_len;
	int64_t  ended_ms;              /* when it reached a final status */
	uint64_t wl_seq;                /* its place among the SKU's waitlist joins (0: never) */
};

struct m_order {
	uint64_t res_no;
	uint32_t user;
	uint8_t  status, reason;
	int64_t  amount, paid_at;
	char     key[FS_ID_LEN_MAX];
	uint8_t  key_len;
	char     token[FS_ID_LEN_MAX];
	uint8_t  token_len;
	int      has_waiter;              /* waiters (at most 4) */
	uint8_t  restock;                 /* REFUNDING: units go back on sale when refunded */
	uint8_t  waiter_origin[4];
	uint64_t waiter_tag[4];
};

struct model {
	struct wr_limits lim;
	struct m_sku skus[M_SKU_HIST];  /* every sale ever created; never reused */
	uint32_t sku_count, skus_live;
	/* the writer's slots (alloc.h): an archived sale's slot is taken by the
	 * next created sale, the most recently freed first */
	uint32_t slots_used, slot_free[M_SKU_MAX], slot_free_n;
	struct m_user *users;           /* never reused: grows past user_count_max once users go */
	uint32_t user_count, user_cap;
	uint32_t users_live;
	struct m_res *res;              /* index = reservation number - 1 */
	uint64_t res_count;
	struct m_order *orders;         /* index = order number - 1 */
	uint64_t order_count;
	uint8_t *pair_seen;             /* [user * M_SKU_HIST + sku]: has had a reservation */
	uint32_t pair_count;
	uint32_t dev_pair_count;        /* distinct (device, sku) seen: the writer's device table */
	uint32_t idem_count;            /* reserve keys + checkout keys claimed */
	uint64_t reserved_seq;
	/* retention: rows <= the floors were reclaimed (kept here only for the
	 * per-user and per-device limits, which outlive them) */
	uint64_t res_floor, order_floor;
	uint64_t res_cap, order_cap;
	int64_t  retention_ms;
};

struct model *model_new(const struct wr_limits *lim)
{
	assert(lim->sku_count_max <= M_SKU_MAX);
	struct model *m = calloc(1, sizeof *m);
	assert(m != NULL);
	m->lim = *lim;
	m->user_cap = lim->user_count_max;
	m->users = calloc(m->user_cap, sizeof *m->users);
	m->res_cap = lim->reservation_count_max;
	m->order_cap = lim->order_count_max;
	m->res = calloc(m->res_cap, sizeof *m->res);
	m->orders = calloc(m->order_cap, sizeof *m->orders);
	m->pair_seen = calloc((size_t)lim->user_count_max * M_SKU_HIST, 1);
	assert(m->users && m->res && m->orders && m->pair_seen);
	return m;
}

void model_free(struct model *m)
{
	if (m == NULL)
		return;
	free(m->users);
	free(m->res);
	free(m->orders);
	free(m->pair_seen);
	free(m);
}

/* ---- lookups: linear scans ------------------------------------------------ */

static int same(const char *a, size_t alen, const char *b, size_t blen)
{
	return alen == blen && memcmp(a, b, alen) == 0;
}

static int sku_find(const struct model *m, const char *name, size_t len)
{
	for (uint32_t i = 0; i < m->sku_count; i++)
		if (!m->skus[i].gone && same(m->skus[i].name, m->skus[i].name_len, name, len))
			return (int)i;
	return -1;
}

static int user_find(const struct model *m, const char *name, size_t len)
{
	for (uint32_t i = 0; i < m->user_count; i++)
		if (!m->users[i].gone && same(m->users[i].name, m->users[i].len, name, len))
			return (int)i;
	return -1;
}

static struct m_res *res_get(struct model *m, uint64_t res_no)
{
	return res_no > m->res_floor && res_no <= m->res_count ? &m->res[res_no - 1] : NULL;
}

/* An order goes with its reservation. */
static struct m_order *order_get(struct model *m, uint64_t order_no)
{
	if (order_no <= m->order_floor || order_no > m->order_count)
		return NULL;
	struct m_order *o = &m->orders[order_no - 1];
	return o->res_no <= m->res_floor ? NULL : o;
}

static int final_status(uint8_t s)
{
	return s == FS_RES_CONFIRMED || s == FS_RES_CANCELLED || s == FS_RES_EXPIRED || s == FS_RES_FAILED ||
	       s == FS_RES_REJECTED;
}

/* Is an ended reservation still behind a live one in its sale's holds or
 * waitlist (first come, first out)? `due` is the timers' view at t_ms,
 * where a hold past its deadline has already left (its EXPIRE is due),
 * unless its sale is frozen (holds wait then). */
static int res_blocked(const struct model *m, const struct m_res *x, int due, int64_t t_ms)
{
	for (uint64_t i = m->res_floor; i < m->res_count; i++) {
		const struct m_res *y = &m->res[i];
		if (y->sku != x->sku)
			continue;
		if (y->status == FS_RES_RESERVED && x->reserved_seq != 0 && y->reserved_seq < x->reserved_seq &&
		    !(due && y->expires_ms <= t_ms && m->skus[y->sku].state != FS_SALE_FROZEN))
			return 1;
		if (y->status == FS_RES_WAITLISTED && x->wl_seq != 0 && y->wl_seq < x->wl_seq)
			return 1;
	}
	return 0;
}

/* The reservations a RECLAIM at t_ms may free: up to this number. */
static uint64_t reclaim_target(const struct model *m, int64_t t_ms, int64_t retention_ms, int due)
{
	uint64_t to = m->res_floor;
	while (to < m->res_count && to - m->res_floor < 1024) {
		const struct m_res *r = &m->res[to];
		if (!final_status(r->status) || r->ended_ms + retention_ms > t_ms || res_blocked(m, r, due, t_ms))
			break;
		if (r->order_no != 0 && m->orders[r->order_no - 1].status == FS_ORDER_REFUNDING)
			break;   /* its REFUND_RESULT must still find the order */
		to++;
	}
	return to;
}

void model_set_retention(struct model *m, int64_t retention_ms) { m->retention_ms = retention_ms; }
uint64_t model_res_floor(const struct model *m) { return m->res_floor; }

/* After a RECLAIM: a user none of whose reservations is left goes, with
 * its holdings, unless it bought units of a sale that is not closed (that
 * sale's per-user limit still counts them). */
static void user_maybe_gone(struct model *m, uint32_t user)
{
	if (m->users[user].gone)
		return;
	for (uint64_t i = m->res_floor; i < m->res_count; i++)
		if (m->res[i].user == user)
			return;
	for (uint64_t i = 0; i < m->res_floor; i++) {
		const struct m_res *r = &m->res[i];
		if (r->user == user && r->status == FS_RES_CONFIRMED && m->skus[r->sku].state != FS_SALE_CLOSED)
			return;
	}
	m->users[user].gone = 1;
	m->users_live--;
	for (uint32_t s = 0; s < M_SKU_HIST; s++)
		if (m->pair_seen[(size_t)user * M_SKU_HIST + s]) {
			m->pair_seen[(size_t)user * M_SKU_HIST + s] = 0;
			m->pair_count--;
		}
}

static void do_reclaim(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	if (c->ref <= m->res_floor || c->ref > reclaim_target(m, t_ms, 0, 0))
		return;   /* refused, not journaled, no answer */
	uint64_t from = m->res_floor;
	for (uint64_t no = m->res_floor + 1; no <= c->ref; no++) {
		const struct m_res *r = &m->res[no - 1];
		m->idem_count -= 1 + (r->order_no != 0);   /* its key and its order's key */
	}
	m->res_floor = c->ref;
	for (uint64_t no = from + 1; no <= c->ref; no++)
		user_maybe_gone(m, m->res[no - 1].user);
	while (m->order_floor < m->order_count && m->orders[m->order_floor].res_no <= m->res_floor)
		m->order_floor++;
	e->journaled = 1;
	e->out_ref = m->order_floor;
}

/* The reservation res_no if the command's user owns it. */
static struct m_res *res_owned(struct model *m, const struct fs_cmd *c, uint64_t res_no)
{
	struct m_res *r = res_get(m, res_no);
	if (r == NULL)
		return NULL;
	const struct m_user *u = &m->users[r->user];
	return same(u->name, u->len, c->user, c->user_len) ? r : NULL;
}

/* Units of this SKU the user holds (waitlisted, reserved, paying) or bought. */
static uint64_t user_units(const struct model *m, uint32_t user, uint32_t sku)
{
	uint64_t n = 0;
	for (uint64_t i = 0; i < m->res_count; i++) {
		const struct m_res *r = &m->res[i];
		if (r->user != user || r->sku != sku)
			continue;
		if (r->status == FS_RES_WAITLISTED || r->status == FS_RES_RESERVED ||
		    r->status == FS_RES_PAYING || r->status == FS_RES_CONFIRMED)
			n += r->qty;
	}
	return n;
}

/* The same for a device id: a device may hold as many units as one user. */
static uint64_t device_units(const struct model *m, const char *dev, uint8_t len, uint32_t sku, int *seen)
{
	uint64_t n = 0;
	*seen = 0;
	for (uint64_t i = 0; i < m->res_count; i++) {
		const struct m_res *r = &m->res[i];
		if (r->sku != sku || r->dev_len != len || memcmp(r->dev, dev, len) != 0)
			continue;
		*seen = 1;
		if (r->status == FS_RES_WAITLISTED || r->status == FS_RES_RESERVED ||
		    r->status == FS_RES_PAYING || r->status == FS_RES_CONFIRMED)
			n += r->qty;
	}
	return n;
}

static uint8_t published(const struct m_sku *k)
{
	return k->state == FS_SALE_OPEN && k->available == 0 ? FS_SALE_SOLD_OUT : k->state;
}

/* 1-based place in the waitlist, 0 when not there. */
static uint32_t wl_position(const struct m_sku *k, uint64_t res_no)
{
	for (uint32_t i = 0; i < k->wl_len; i++)
		if (k->wl[i] == res_no)
			return i + 1;
	return 0;
}

static void wl_remove(struct m_sku *k, uint64_t res_no)
{
	uint32_t p = wl_position(k, res_no);
	assert(p != 0);
	memmove(&k->wl[p - 1], &k->wl[p], (k->wl_len - p) * sizeof k->wl[0]);
	k->wl_len--;
}

/* ---- answers ------------------------------------------------------------- */

static struct m_ans *ans_new(struct m_effect *e, uint8_t origin, uint64_t tag)
{
	assert(e->answer_count < 5);
	struct m_ans *a = &e->answers[e->answer_count++];
	memset(a, 0, sizeof *a);
	a->origin = origin;
	a->ans.tag = tag;
	return a;
}

static void ans_error(struct m_effect *e, const struct fs_cmd *c, enum fs_err err)
{
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	a->ans.http = (uint16_t)fs_err_http(err);
	a->ans.err = (uint8_t)err;
	a->ans.body = FS_BODY_ERROR;
}

static void fill_sale(const struct model *m, uint32_t sku, struct m_ans *a)
{
	const struct m_sku *k = &m->skus[sku];
	a->ans.body = FS_BODY_SALE;
	memcpy(a->ans.sku, k->name, k->name_len);
	a->ans.sku_len = k->name_len;
	a->ans.state = published(k);
	a->ans.total = k->total;
	a->ans.available = k->available;
	a->ans.reserved = k->reserved;
	a->ans.sold = k->sold;
	a->ans.version = k->version;
}

static void fill_res(const struct model *m, uint64_t res_no, struct m_ans *a)
{
	const struct m_res *r = &m->res[res_no - 1];
	const struct m_sku *k = &m->skus[r->sku];
	a->ans.body = FS_BODY_RES;
	a->ans.res_no = res_no;
	a->ans.res_status = r->status;
	a->ans.quantity = r->qty;
	a->ans.expires_at_ms = r->expires_ms;
	a->ans.order_no = r->order_no;
	memcpy(a->ans.sku, k->name, k->name_len);
	a->ans.sku_len = k->name_len;
	if (r->status == FS_RES_WAITLISTED) {
		a->pos_rule = 1;
		a->pos_min = wl_position(k, res_no);
		a->pos_max = k->joins;
		a->ans.position = a->pos_min;
	}
}

static void fill_order(const struct model *m, uint64_t order_no, struct m_ans *a, uint8_t body)
{
	const struct m_order *o = &m->orders[order_no - 1];
	fill_res(m, o->res_no, a);
	a->ans.body = body;
	a->ans.order_no = order_no;
	a->ans.order_status = o->status;
	a->ans.reason = o->reason;
	a->ans.amount_cents = o->amount;
	a->ans.paid_at_ms = o->paid_at;
}

/* ---- the waitlist -------------------------------------------------------- */

/* Hands available units to the head of the waitlist, first come first
 * served, while the head's quantity fits; at most M_PROMOTE_MAX. */
static void serve(struct model *m, uint32_t sku, int64_t t_ms, struct m_effect *e)
{
	struct m_sku *k = &m->skus[sku];
	while (k->wl_len > 0 && e->promoted_count < M_PROMOTE_MAX) {
		uint64_t res_no = k->wl[0];
		struct m_res *r = &m->res[res_no - 1];
		assert(r->status == FS_RES_WAITLISTED);
		if (k->state != FS_SALE_OPEN || k->available < r->qty)
			break;
		wl_remove(k, res_no);
		k->available -= r->qty;
		k->reserved += r->qty;
		r->status = FS_RES_RESERVED;
		r->expires_ms = t_ms + k->args.hold_ms;
		r->reserved_seq = ++m->reserved_seq;
		e->promoted[e->promoted_count] = res_no;
		e->promoted_expires[e->promoted_count] = r->expires_ms;
		e->promoted_count++;
	}
}

static int serve_ready(const struct model *m, uint32_t sku)
{
	const struct m_sku *k = &m->skus[sku];
	return k->state == FS_SALE_OPEN && k->wl_len > 0 && m->res[k->wl[0] - 1].qty <= k->available;
}

/* A live hold's units go back to the SKU. */
static void units_back(struct model *m, struct m_res *r)
{
	struct m_sku *k = &m->skus[r->sku];
	assert(k->reserved >= r->qty);
	k->reserved -= r->qty;
	k->available += r->qty;
}

/* ---- admin ----------------------------------------------------------------- */

static void do_create(struct model *m, const struct fs_cmd *c, struct m_effect *e)
{
	if (c->sku_len == 0)
		{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
	if (sku_find(m, c->sku, c->sku_len) >= 0)
		{ ans_error(e, c, FS_ERR_EXISTS); return; }
	if (m->skus_live >= m->lim.sku_count_max)
		{ ans_error(e, c, FS_ERR_OVERLOADED); return; }
	if (c->sale.hold_ms == 0 || c->sale.default_tier > 4 || c->sale.price_cents < 0 ||
	    c->sale.total > (UINT64_C(1) << 48))
		{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
	assert(m->sku_count < M_SKU_HIST);   /* the workload creates at most this many */
	uint32_t idx = m->sku_count++;
	m->skus_live++;
	struct m_sku *k = &m->skus[idx];
	memset(k, 0, sizeof *k);
	k->slot = m->slot_free_n ? m->slot_free[--m->slot_free_n] : m->slots_used++;
	memcpy(k->name, c->sku, c->sku_len);
	k->name_len = c->sku_len;
	k->args = c->sale;
	k->state = FS_SALE_SCHEDULED;
	k->total = k->available = c->sale.total;
	k->version = 1;
	e->journaled = 1;
	e->out_status = FS_SALE_SCHEDULED;
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	fill_sale(m, idx, a);
	a->ans.http = 201;
}

/* FS_CMD_SALE_ARCHIVE: a closed sale none of whose reservations is still
 * kept goes; its per-user and per-device holdings go with it. */
static void do_archive(struct model *m, const struct fs_cmd *c, struct m_effect *e)
{
	int idx = sku_find(m, c->sku, c->sku_len);
	if (idx < 0)
		{ ans_error(e, c, FS_ERR_UNKNOWN_SKU); return; }
	struct m_sku *k = &m->skus[idx];
	if (k->state != FS_SALE_CLOSED)
		{ ans_error(e, c, FS_ERR_BAD_STATE); return; }
	for (uint64_t i = m->res_floor; i < m->res_count; i++)
		if (m->res[i].sku == (uint32_t)idx)
			{ ans_error(e, c, FS_ERR_RETAINED); return; }
	for (uint32_t u = 0; u < m->user_count; u++)
		if (m->pair_seen[(size_t)u * M_SKU_HIST + (uint32_t)idx]) {
			m->pair_seen[(size_t)u * M_SKU_HIST + (uint32_t)idx] = 0;
			m->pair_count--;
		}
	for (uint64_t i = 0; i < m->res_count; i++) {   /* distinct devices of the sale */
		const struct m_res *r = &m->res[i];
		if (r->sku != (uint32_t)idx || r->dev_len == 0)
			continue;
		uint64_t first = i;
		for (uint64_t j = 0; j < i && first == i; j++)
			if (m->res[j].sku == r->sku && m->res[j].dev_len == r->dev_len &&
			    memcmp(m->res[j].dev, r->dev, r->dev_len) == 0)
				first = j;
		m->dev_pair_count -= first == i;
	}
	k->gone = 1;
	m->skus_live--;
	assert(m->slot_free_n < M_SKU_MAX);
	m->slot_free[m->slot_free_n++] = k->slot;
	e->journaled = 1;
	e->out_status = FS_SALE_CLOSED;
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	a->ans.http = 200;
	a->ans.body = FS_BODY_EMPTY;
}

/* The stored state an admin verb leads to from `from`, or -1 (bad_state). */
static int admin_to(uint8_t type, uint8_t from)
{
	switch (type) {
	case FS_CMD_SALE_OPEN:
		if (from == FS_SALE_SCHEDULED || from == FS_SALE_PAUSED || from == FS_SALE_OPEN)
			return FS_SALE_OPEN;
		return -1;
	case FS_CMD_SALE_PAUSE:
		if (from == FS_SALE_OPEN || from == FS_SALE_PAUSED)
			return FS_SALE_PAUSED;
		return -1;
	case FS_CMD_SALE_FREEZE:
		if (from != FS_SALE_CLOSED)
			return FS_SALE_FROZEN;
		return -1;
	case FS_CMD_SALE_RESUME:
		if (from == FS_SALE_PAUSED || from == FS_SALE_FROZEN || from == FS_SALE_OPEN)
			return FS_SALE_OPEN;
		return -1;
	case FS_CMD_SALE_CLOSE:
		return FS_SALE_CLOSED;
	default:
		return -1;
	}
}

static void do_admin(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	int idx = sku_find(m, c->sku, c->sku_len);
	if (idx < 0)
		{ ans_error(e, c, FS_ERR_UNKNOWN_SKU); return; }
	struct m_sku *k = &m->skus[idx];
	if (c->type == FS_CMD_SALE_GET) {
		struct m_ans *a = ans_new(e, c->origin, c->tag);
		fill_sale(m, (uint32_t)idx, a);
		a->ans.http = 200;
		return;
	}
	if (c->type == FS_CMD_STOCK_ADD) {
		if (c->quantity == 0)
			{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
		if (k->state == FS_SALE_CLOSED)
			{ ans_error(e, c, FS_ERR_BAD_STATE); return; }
		k->total += c->quantity;
		k->available += c->quantity;
	} else if (c->type == FS_CMD_STOCK_REMOVE) {
		if (c->quantity == 0)
			{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
		if (c->quantity > k->available)   /* only from available */
			{ ans_error(e, c, FS_ERR_BAD_STATE); return; }
		k->total -= c->quantity;
		k->available -= c->quantity;
	} else {
		int to = admin_to(c->type, k->state);
		if (to < 0)
			{ ans_error(e, c, FS_ERR_BAD_STATE); return; }
		if (to == FS_SALE_FROZEN && k->state != FS_SALE_FROZEN)
			k->frozen_at_ms = t_ms;
		if (to != FS_SALE_FROZEN && k->state == FS_SALE_FROZEN) {
			/* holds get the frozen time back: none ran out during the freeze */
			for (uint64_t i = 0; i < m->res_count; i++) {
				struct m_res *r = &m->res[i];
				if (r->sku != (uint32_t)idx || r->status != FS_RES_RESERVED)
					continue;
				r->expires_ms += t_ms - k->frozen_at_ms;
				if (r->orig_status == FS_RES_RESERVED)
					r->orig_expires_ms = r->expires_ms;
			}
		}
		k->state = (uint8_t)to;
		if (to == FS_SALE_CLOSED)   /* users kept for their purchases in it may go */
			for (uint32_t u = 0; u < m->user_count; u++)
				user_maybe_gone(m, u);
	}
	k->version++;
	e->journaled = 1;
	e->out_status = k->state;
	serve(m, (uint32_t)idx, t_ms, e);
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	fill_sale(m, (uint32_t)idx, a);
	a->ans.http = 200;
}

/* ---- customers ----------------------------------------------------------- */

static void do_reserve(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	int sku = sku_find(m, c->sku, c->sku_len);
	if (sku < 0)
		{ ans_error(e, c, FS_ERR_UNKNOWN_SKU); return; }
	if (c->quantity == 0 || c->quantity > m->lim.quantity_max || c->key_len == 0 || c->user_len == 0)
		{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
	int user = user_find(m, c->user, c->user_len);
	if (user >= 0) {
		/* the same user and key again: the original answer, or a misuse */
		for (uint64_t i = m->res_floor; i < m->res_count; i++) {
			struct m_res *r = &m->res[i];
			if (r->user != (uint32_t)user || !same(r->key, r->key_len, c->key, c->key_len))
				continue;
			if (r->sku != (uint32_t)sku || r->qty != c->quantity)
				{ ans_error(e, c, FS_ERR_KEY_REUSED); return; }
			struct m_ans *a = ans_new(e, c->origin, c->tag);
			fill_res(m, i + 1, a);
			a->ans.http = 200;
			a->ans.res_status = r->orig_status;
			a->ans.expires_at_ms = r->orig_expires_ms;
			a->ans.order_no = 0;
			a->ans.position = 0;
			a->pos_rule = r->orig_status == FS_RES_WAITLISTED ? 2 : 0;
			return;
		}
	}
	struct m_sku *k = &m->skus[sku];
	if (k->state == FS_SALE_FROZEN)
		{ ans_error(e, c, FS_ERR_FROZEN); return; }
	if (k->state != FS_SALE_OPEN)
		{ ans_error(e, c, FS_ERR_SALE_NOT_OPEN); return; }
	uint64_t held = user >= 0 ? user_units(m, (uint32_t)user, (uint32_t)sku) : 0;
	int dev_seen = 0;
	uint64_t dev_held = c->text_len ? device_units(m, c->text, c->text_len, (uint32_t)sku, &dev_seen) : 0;
	if (k->args.per_user != 0 && (held + c->quantity > k->args.per_user ||
	                              dev_held + c->quantity > k->args.per_user))
		{ ans_error(e, c, FS_ERR_LIMIT_REACHED); return; }
	uint8_t status;
	if (k->available >= c->quantity && k->wl_len == 0)   /* waiters first */
		status = FS_RES_RESERVED;
	else if (k->args.waitlist_max > k->wl_len && (k->reserved > 0 || k->wl_len > 0))
		status = FS_RES_WAITLISTED;
	else
		{ ans_error(e, c, FS_ERR_SOLD_OUT); return; }
	int new_pair = user < 0 || !m->pair_seen[(size_t)user * M_SKU_HIST + (uint32_t)sku];
	if (m->res_count - m->res_floor >= m->lim.reservation_count_max || m->idem_count >= m->lim.idem_count_max ||
	    (user < 0 && m->users_live >= m->lim.user_count_max) ||
	    (new_pair && m->pair_count >= m->lim.holding_count_max) ||
	    (c->text_len && !dev_seen && m->dev_pair_count >= m->lim.holding_count_max))
		{ ans_error(e, c, FS_ERR_OVERLOADED); return; }
	if (c->text_len && !dev_seen)
		m->dev_pair_count++;
	if (user < 0) {
		if (m->user_count == m->user_cap) {   /* indices are never reused */
			m->users = realloc(m->users, 2 * m->user_cap * sizeof *m->users);
			m->pair_seen = realloc(m->pair_seen, 2 * (size_t)m->user_cap * M_SKU_HIST);
			assert(m->users != NULL && m->pair_seen != NULL);
			memset(m->users + m->user_cap, 0, m->user_cap * sizeof *m->users);
			memset(m->pair_seen + (size_t)m->user_cap * M_SKU_HIST, 0, (size_t)m->user_cap * M_SKU_HIST);
			m->user_cap *= 2;
		}
		m->users_live++;
		user = (int)m->user_count++;
		memcpy(m->users[user].name, c->user, c->user_len);
		m->users[user].len = c->user_len;
	}
	if (new_pair) {
		m->pair_seen[(size_t)user * M_SKU_HIST + (uint32_t)sku] = 1;
		m->pair_count++;
	}
	if (m->res_count == m->res_cap) {
		m->res_cap *= 2;
		m->res = realloc(m->res, m->res_cap * sizeof *m->res);
		assert(m->res != NULL);
	}
	uint64_t res_no = ++m->res_count;
	struct m_res *r = &m->res[res_no - 1];
	memset(r, 0, sizeof *r);
	r->sku = (uint32_t)sku;
	r->user = (uint32_t)user;
	r->qty = c->quantity;
	r->status = r->orig_status = status;
	memcpy(r->key, c->key, c->key_len);
	r->key_len = c->key_len;
	memcpy(r->dev, c->text, c->text_len);
	r->dev_len = c->text_len;
	m->idem_count++;
	if (status == FS_RES_RESERVED) {
		k->available -= c->quantity;
		k->reserved += c->quantity;
		r->expires_ms = t_ms + k->args.hold_ms;
		r->reserved_seq = ++m->reserved_seq;
	} else {
		assert(k->wl_len < M_WL_MAX);
		k->wl[k->wl_len++] = res_no;
		k->joins++;
		r->wl_seq = k->joins;
	}
	r->orig_expires_ms = r->expires_ms;
	k->version++;
	e->journaled = 1;
	e->out_ref = res_no;
	e->out_status = status;
	e->out_val = r->expires_ms;
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	fill_res(m, res_no, a);
	a->ans.http = status == FS_RES_RESERVED ? 201 : 202;
}

static void do_cancel(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	struct m_res *r = res_owned(m, c, c->ref);
	if (r == NULL)
		{ ans_error(e, c, FS_ERR_NOT_FOUND); return; }
	if (r->status == FS_RES_CANCELLED) {   /* twice: harmless, nothing changes */
		struct m_ans *a = ans_new(e, c->origin, c->tag);
		fill_res(m, c->ref, a);
		a->ans.http = 200;
		return;
	}
	if (r->status != FS_RES_RESERVED && r->status != FS_RES_WAITLISTED)
		{ ans_error(e, c, FS_ERR_NOT_CANCELLABLE); return; }
	struct m_sku *k = &m->skus[r->sku];
	if (r->status == FS_RES_RESERVED)
		units_back(m, r);
	else
		wl_remove(k, c->ref);
	r->status = FS_RES_CANCELLED;
	r->ended_ms = t_ms;
	k->version++;
	e->journaled = 1;
	e->out_status = FS_RES_CANCELLED;
	serve(m, r->sku, t_ms, e);
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	fill_res(m, c->ref, a);
	a->ans.http = 200;
}

/* A closed sale's waitlisted reservation never gets units: it expires
 * (the writer asks for it at once), holding none. */
static int waits_in_closed(const struct model *m, const struct m_res *r)
{
	return r->status == FS_RES_WAITLISTED && m->skus[r->sku].state == FS_SALE_CLOSED;
}

static void do_expire(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	struct m_res *r = res_get(m, c->ref);
	if (r != NULL && waits_in_closed(m, r)) {
		wl_remove(&m->skus[r->sku], c->ref);
		r->status = FS_RES_EXPIRED;
		r->ended_ms = t_ms;
		m->skus[r->sku].version++;
		e->journaled = 1;
		e->out_status = FS_RES_EXPIRED;
		struct m_ans *a = ans_new(e, c->origin, c->tag);
		fill_res(m, c->ref, a);
		a->ans.http = 200;
		return;
	}
	if (r == NULL || r->status != FS_RES_RESERVED || r->expires_ms > t_ms ||
	    m->skus[r->sku].state == FS_SALE_FROZEN)   /* a frozen sale's holds do not expire */
		{ ans_error(e, c, FS_ERR_NOT_CANCELLABLE); return; }
	units_back(m, r);
	r->status = FS_RES_EXPIRED;
	r->ended_ms = t_ms;
	m->skus[r->sku].version++;
	e->journaled = 1;
	e->out_status = FS_RES_EXPIRED;
	serve(m, r->sku, t_ms, e);
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	fill_res(m, c->ref, a);
	a->ans.http = 200;
}

static void do_checkout(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	struct m_res *r = res_owned(m, c, c->ref);
	if (r == NULL)
		{ ans_error(e, c, FS_ERR_NOT_FOUND); return; }
	if (c->key_len == 0 || c->text_len == 0)
		{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
	struct m_order *seen = NULL;
	for (uint64_t i = m->order_floor; i < m->order_count && seen == NULL; i++) {
		struct m_order *o = &m->orders[i];
		if (o->res_no > m->res_floor && o->user == r->user && same(o->key, o->key_len, c->key, c->key_len))
			seen = o;
	}
	if (seen != NULL) {
		if (seen->res_no != c->ref)
			{ ans_error(e, c, FS_ERR_KEY_REUSED); return; }
		uint64_t order_no = (uint64_t)(seen - m->orders) + 1;
		if (seen->status == FS_ORDER_PENDING && seen->has_waiter < 4) {
			/* answered when the payment's outcome comes */
			seen->waiter_origin[seen->has_waiter] = c->origin;
			seen->waiter_tag[seen->has_waiter++] = c->tag;
			return;
		}
		struct m_ans *a = ans_new(e, c->origin, c->tag);
		fill_order(m, order_no, a, FS_BODY_CHECKOUT);
		a->ans.http = seen->status == FS_ORDER_FAILED ? 402 : seen->status == FS_ORDER_PENDING ? 202 : 200;
		return;
	}
	if (m->idem_count >= m->lim.idem_count_max || m->order_count - m->order_floor >= m->lim.order_count_max)
		{ ans_error(e, c, FS_ERR_OVERLOADED); return; }
	if (m->skus[r->sku].state == FS_SALE_FROZEN)
		{ ans_error(e, c, FS_ERR_FROZEN); return; }
	switch (r->status) {
	case FS_RES_RESERVED:
		if (r->expires_ms <= t_ms)
			{ ans_error(e, c, FS_ERR_EXPIRED); return; }
		break;
	case FS_RES_PAYING:
	case FS_RES_CONFIRMED:
		{ ans_error(e, c, FS_ERR_ALREADY_CHECKED_OUT); return; }
	case FS_RES_EXPIRED:
		{ ans_error(e, c, FS_ERR_EXPIRED); return; }
	default:
		{ ans_error(e, c, FS_ERR_BAD_STATE); return; }
	}
	struct m_sku *k = &m->skus[r->sku];
	if (m->order_count == m->order_cap) {
		m->order_cap *= 2;
		m->orders = realloc(m->orders, m->order_cap * sizeof *m->orders);
		assert(m->orders != NULL);
	}
	uint64_t order_no = ++m->order_count;
	struct m_order *o = &m->orders[order_no - 1];
	memset(o, 0, sizeof *o);
	o->res_no = c->ref;
	o->user = r->user;
	o->status = FS_ORDER_PENDING;
	o->amount = (int64_t)r->qty * k->args.price_cents;
	memcpy(o->key, c->key, c->key_len);
	o->key_len = c->key_len;
	memcpy(o->token, c->text, c->text_len);
	o->token_len = c->text_len;
	o->has_waiter = 1;
	o->waiter_origin[0] = c->origin;
	o->waiter_tag[0] = c->tag;
	m->idem_count++;
	r->status = FS_RES_PAYING;
	r->order_no = order_no;
	k->version++;
	e->journaled = 1;
	e->out_ref = order_no;
	e->out_status = FS_RES_PAYING;
	e->out_val = o->amount;
	e->charge = 1;
	memset(&e->ch, 0, sizeof e->ch);
	e->ch.order_no = order_no;
	e->ch.amount_cents = o->amount;
	e->ch.token_len = o->token_len;
	memcpy(e->ch.token, o->token, o->token_len);
	e->ch.user_len = m->users[r->user].len;
	memcpy(e->ch.user, m->users[r->user].name, e->ch.user_len);
}

static void do_pay_result(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	struct m_order *o = order_get(m, c->ref);
	if (o == NULL || o->status != FS_ORDER_PENDING ||
	    (c->pay != FS_PAY_OK && c->pay != FS_PAY_DECLINED && c->pay != FS_PAY_ERROR &&
	     c->pay != FS_PAY_INVALID))
		return;   /* a late duplicate or garbage: refused, nobody waits for it */
	struct m_res *r = &m->res[o->res_no - 1];
	struct m_sku *k = &m->skus[r->sku];
	assert(r->status == FS_RES_PAYING);
	if (c->pay == FS_PAY_OK) {
		k->reserved -= r->qty;
		k->sold += r->qty;
		r->status = FS_RES_CONFIRMED;
		r->ended_ms = t_ms;
		o->status = FS_ORDER_PAID;
		o->paid_at = t_ms;
	} else {
		units_back(m, r);
		r->status = FS_RES_FAILED;
		r->ended_ms = t_ms;
		o->status = FS_ORDER_FAILED;
		o->reason = c->pay;
	}
	k->version++;
	e->journaled = 1;
	e->out_status = r->status;
	if (c->pay != FS_PAY_OK)
		serve(m, r->sku, t_ms, e);
	for (int i = 0; i < o->has_waiter; i++) {
		struct m_ans *a = ans_new(e, o->waiter_origin[i], o->waiter_tag[i]);
		fill_order(m, c->ref, a, FS_BODY_CHECKOUT);
		a->ans.http = o->status == FS_ORDER_PAID ? 200 : 402;
	}
	o->has_waiter = 0;
}

/* flashctl order refund: PAID -> REFUNDING, the refund goes to the provider;
 * the admin's request waits for the outcome (like a checkout). */
static void do_refund(struct model *m, const struct fs_cmd *c, struct m_effect *e)
{
	struct m_order *o = order_get(m, c->ref);
	if (o == NULL) {
		int gone = c->ref != 0 && c->ref <= m->order_count;
		{ ans_error(e, c, gone ? FS_ERR_RECLAIMED : FS_ERR_NOT_FOUND); return; }
	}
	if (o->status == FS_ORDER_REFUNDING && o->has_waiter < 4) {
		o->waiter_origin[o->has_waiter] = c->origin;
		o->waiter_tag[o->has_waiter++] = c->tag;
		return;
	}
	if (o->status == FS_ORDER_REFUNDING || o->status == FS_ORDER_REFUNDED) {
		struct m_ans *a = ans_new(e, c->origin, c->tag);
		fill_order(m, c->ref, a, FS_BODY_ORDER);
		a->ans.http = o->status == FS_ORDER_REFUNDED ? 200 : 202;
		return;
	}
	if (o->status != FS_ORDER_PAID)
		{ ans_error(e, c, FS_ERR_BAD_STATE); return; }
	if (c->quantity > 1)
		{ ans_error(e, c, FS_ERR_BAD_REQUEST); return; }
	struct m_res *r = &m->res[o->res_no - 1];
	assert(r->status == FS_RES_CONFIRMED);
	o->status = FS_ORDER_REFUNDING;
	o->restock = (uint8_t)c->quantity;
	o->reason = 0;
	o->has_waiter = 1;
	o->waiter_origin[0] = c->origin;
	o->waiter_tag[0] = c->tag;
	m->skus[r->sku].version++;
	e->journaled = 1;
	e->out_status = FS_ORDER_REFUNDING;
	e->out_val = o->amount;
	e->charge = 1;
	memset(&e->ch, 0, sizeof e->ch);
	e->ch.kind = WR_CHARGE_REFUND;
	e->ch.order_no = c->ref;
	e->ch.amount_cents = o->amount;
	e->ch.token_len = o->token_len;
	memcpy(e->ch.token, o->token, o->token_len);
	e->ch.user_len = m->users[o->user].len;
	memcpy(e->ch.user, m->users[o->user].name, e->ch.user_len);
}

/* The provider's outcome: refunded, the units leave `sold` (back to
 * available with restock, else out of the sale); refused, PAID again. */
static void do_refund_result(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	struct m_order *o = order_get(m, c->ref);
	if (o == NULL || o->status != FS_ORDER_REFUNDING ||
	    (c->pay != FS_PAY_OK && c->pay != FS_PAY_DECLINED && c->pay != FS_PAY_ERROR &&
	     c->pay != FS_PAY_INVALID))
		return;
	struct m_res *r = &m->res[o->res_no - 1];
	struct m_sku *k = &m->skus[r->sku];
	if (c->pay == FS_PAY_OK) {
		assert(k->sold >= r->qty);
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
	k->version++;
	e->journaled = 1;
	e->out_status = o->status;
	e->out_val = o->restock;
	if (c->pay == FS_PAY_OK && o->restock)
		serve(m, r->sku, t_ms, e);
	for (int i = 0; i < o->has_waiter; i++) {
		struct m_ans *a = ans_new(e, o->waiter_origin[i], o->waiter_tag[i]);
		fill_order(m, c->ref, a, FS_BODY_ORDER);
		a->ans.http = o->status == FS_ORDER_REFUNDED ? 200 : 402;
	}
	o->has_waiter = 0;
}

static void do_read(struct model *m, const struct fs_cmd *c, struct m_effect *e)
{
	int gone = c->type == FS_CMD_RES_GET ? c->ref != 0 && c->ref <= m->res_floor :
	           c->ref != 0 && c->ref <= m->order_count &&
	           (c->ref <= m->order_floor || m->orders[c->ref - 1].res_no <= m->res_floor);
	if (gone)
		{ ans_error(e, c, FS_ERR_RECLAIMED); return; }
	if (c->type == FS_CMD_RES_GET) {
		if (res_owned(m, c, c->ref) == NULL)
			{ ans_error(e, c, FS_ERR_NOT_FOUND); return; }
		struct m_ans *a = ans_new(e, c->origin, c->tag);
		fill_res(m, c->ref, a);
		a->ans.http = 200;
		return;
	}
	struct m_order *o = order_get(m, c->ref);
	if (o == NULL || !same(m->users[o->user].name, m->users[o->user].len, c->user, c->user_len))
		{ ans_error(e, c, FS_ERR_NOT_FOUND); return; }
	struct m_ans *a = ans_new(e, c->origin, c->tag);
	fill_order(m, c->ref, a, FS_BODY_ORDER);
	a->ans.http = 200;
}

static void do_serve(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	int idx = sku_find(m, c->sku, c->sku_len);
	if (idx < 0)
		return;
	if (!serve_ready(m, (uint32_t)idx)) {
		e->journaled = -1;   /* nothing to do; the allocator may still journal it */
		return;
	}
	e->journaled = 1;
	serve(m, (uint32_t)idx, t_ms, e);
	m->skus[idx].version++;
}

void model_serve_journaled(struct model *m, const char *sku, uint8_t sku_len)
{
	int idx = sku_find(m, sku, sku_len);
	assert(idx >= 0);
	m->skus[idx].version++;
}

void model_decide(struct model *m, const struct fs_cmd *c, int64_t t_ms, struct m_effect *e)
{
	memset(e, 0, sizeof *e);
	switch (c->type) {
	case FS_CMD_SALE_CREATE: do_create(m, c, e); break;
	case FS_CMD_SALE_OPEN:
	case FS_CMD_SALE_PAUSE:
	case FS_CMD_SALE_FREEZE:
	case FS_CMD_SALE_RESUME:
	case FS_CMD_SALE_CLOSE:
	case FS_CMD_STOCK_ADD:
	case FS_CMD_STOCK_REMOVE:
	case FS_CMD_SALE_GET:    do_admin(m, c, t_ms, e); break;
	case FS_CMD_RESERVE:     do_reserve(m, c, t_ms, e); break;
	case FS_CMD_CANCEL:      do_cancel(m, c, t_ms, e); break;
	case FS_CMD_EXPIRE:      do_expire(m, c, t_ms, e); break;
	case FS_CMD_CHECKOUT:    do_checkout(m, c, t_ms, e); break;
	case FS_CMD_PAY_RESULT:  do_pay_result(m, c, t_ms, e); break;
	case FS_CMD_RES_GET:
	case FS_CMD_ORDER_GET:   do_read(m, c, e); break;
	case FS_CMD_WAITLIST_SERVE: do_serve(m, c, t_ms, e); break;
	case FS_CMD_RECLAIM:     do_reclaim(m, c, t_ms, e); break;
	case FS_CMD_SALE_ARCHIVE: do_archive(m, c, e); break;
	case FS_CMD_REFUND:      do_refund(m, c, e); break;
	case FS_CMD_REFUND_RESULT: do_refund_result(m, c, t_ms, e); break;
	default:                 ans_error(e, c, FS_ERR_BAD_REQUEST); break;
	}
}

/* ---- timers ----------------------------------------------------------------- */

const char *model_due_check(const struct model *m, int64_t t_ms, const struct fs_cmd *d,
                            uint32_t n, uint32_t max)
{
	static char msg[256];
	if (n > max)
		return "more commands than asked for";
	int last_sku = -1, last_kind = 0;   /* kind: 1 open, 2 serve, 3 expire */
	uint64_t last_seq = 0;
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &d[i];
		int sku, kind;
		uint64_t seq = 0;
		if (c->type == FS_CMD_EXPIRE && c->ref >= 1 && c->ref <= m->res_count &&
		    waits_in_closed(m, &m->res[c->ref - 1])) {
			sku = (int)m->skus[m->res[c->ref - 1].sku].slot;
			kind = 5;   /* after the sale's hold expiries, in waitlist (= number) order */
			seq = c->ref;
		} else if (c->type == FS_CMD_EXPIRE) {
			const struct m_res *r = c->ref >= 1 && c->ref <= m->res_count ? &m->res[c->ref - 1] : NULL;
			if (r == NULL || r->status != FS_RES_RESERVED || r->expires_ms > t_ms ||
			    m->skus[r->sku].state == FS_SALE_FROZEN) {
				snprintf(msg, sizeof msg, "due[%u]: EXPIRE of reservation %llu that is not due",
				         i, (unsigned long long)c->ref);
				return msg;
			}
			sku = (int)m->skus[r->sku].slot;
			kind = 3;
			seq = r->reserved_seq;
		} else if (c->type == FS_CMD_SALE_OPEN || c->type == FS_CMD_WAITLIST_SERVE) {
			sku = sku_find(m, c->sku, c->sku_len);
			if (sku < 0)
				return "due: a command for an unknown SKU";
			const struct m_sku *k = &m->skus[sku];
			sku = (int)k->slot;
			kind = c->type == FS_CMD_SALE_OPEN ? 1 : 2;
			if (kind == 1 && !(k->state == FS_SALE_SCHEDULED && k->args.opens_at_ms != 0 &&
			                   k->args.opens_at_ms <= t_ms)) {
				snprintf(msg, sizeof msg, "due[%u]: SALE_OPEN of %.*s that is not due", i,
				         k->name_len, k->name);
				return msg;
			}
		} else if (c->type == FS_CMD_RECLAIM) {
			uint64_t want = m->retention_ms > 0 ? reclaim_target(m, t_ms, m->retention_ms, 1) : m->res_floor;
			if (i != n - 1 || c->ref != want || want == m->res_floor) {
				snprintf(msg, sizeof msg, "due[%u]: RECLAIM up to %llu, model: up to %llu (floor %llu), last",
				         i, (unsigned long long)c->ref, (unsigned long long)want,
				         (unsigned long long)m->res_floor);
				return msg;
			}
			sku = INT32_MAX;
			kind = 4;
		} else {
			snprintf(msg, sizeof msg, "due[%u]: unexpected command type %u", i, c->type);
			return msg;
		}
		if (sku < last_sku || (sku == last_sku && (kind < last_kind ||
		    (kind == last_kind && ((kind != 3 && kind != 5) || seq <= last_seq))))) {
			snprintf(msg, sizeof msg, "due[%u]: out of order (sku %d kind %d after sku %d kind %d)",
			         i, sku, kind, last_sku, last_kind);
			return msg;
		}
		last_sku = sku;
		last_kind = kind;
		last_seq = seq;
	}
	if (n == max)
		return NULL;   /* truncated: the rest comes next time */
	/* complete: everything due is there */
	for (uint32_t s = 0; s < m->sku_count; s++) {
		const struct m_sku *k = &m->skus[s];
		int want_open = k->state == FS_SALE_SCHEDULED && k->args.opens_at_ms != 0 && k->args.opens_at_ms <= t_ms;
		int want_serve = serve_ready(m, s);
		int got_open = 0, got_serve = 0;
		for (uint32_t i = 0; i < n; i++) {
			if (!same(d[i].sku, d[i].sku_len, k->name, k->name_len))
				continue;
			got_open |= d[i].type == FS_CMD_SALE_OPEN;
			got_serve |= d[i].type == FS_CMD_WAITLIST_SERVE;
		}
		if (want_open && !got_open) {
			snprintf(msg, sizeof msg, "due: SALE_OPEN of %.*s missing", k->name_len, k->name);
			return msg;
		}
		if (want_serve && !got_serve) {
			snprintf(msg, sizeof msg, "due: WAITLIST_SERVE of %.*s missing (units wait at the head)",
			         k->name_len, k->name);
			return msg;
		}
	}
	if (m->retention_ms > 0 && reclaim_target(m, t_ms, m->retention_ms, 1) > m->res_floor &&
	    (n == 0 || d[n - 1].type != FS_CMD_RECLAIM))
		return "due: RECLAIM missing (ended reservations past the retention)";
	for (uint64_t i = m->res_floor; i < m->res_count; i++) {
		const struct m_res *r = &m->res[i];
		if (!waits_in_closed(m, r) &&
		    (r->status != FS_RES_RESERVED || r->expires_ms > t_ms || m->skus[r->sku].state == FS_SALE_FROZEN))
			continue;
		int got = 0;
		for (uint32_t j = 0; j < n && !got; j++)
			got = d[j].type == FS_CMD_EXPIRE && d[j].ref == i + 1;
		if (!got) {
			snprintf(msg, sizeof msg, "due: EXPIRE of reservation %llu (deadline %lld, now %lld) missing",
			         (unsigned long long)(i + 1), (long long)r->expires_ms, (long long)t_ms);
			return msg;
		}
	}
	return NULL;
}

/* ---- views -------------------------------------------------------------------- */

uint32_t model_sku_count(const struct model *m) { return m->sku_count; }

void model_sku_view(const struct model *m, uint32_t idx, struct m_sku_view *v)
{
	assert(idx < m->sku_count);
	const struct m_sku *k = &m->skus[idx];
	v->gone = k->gone;
	v->name_len = k->name_len;
	memcpy(v->name, k->name, k->name_len);
	v->state = published(k);
	v->total = k->total;
	v->available = k->available;
	v->reserved = k->reserved;
	v->sold = k->sold;
	v->version = k->version;
	v->waitlist_count = k->wl_len;
}

void model_usage(const struct model *m, struct wr_usage *u)
{
	memset(u, 0, sizeof *u);
	u->users = m->users_live;
	u->skus = m->skus_live;
	u->reservations = (uint32_t)(m->res_count - m->res_floor);
	u->orders = (uint32_t)(m->order_count - m->order_floor);
	u->order_no_max = m->order_count;
	u->idem_keys = m->idem_count;
	u->holdings = m->pair_count;
}

uint64_t model_res_count(const struct model *m) { return m->res_count; }
uint64_t model_order_count(const struct model *m) { return m->order_count; }

uint8_t model_res_status(const struct model *m, uint64_t res_no)
{
	return res_no >= 1 && res_no <= m->res_count ? m->res[res_no - 1].status : FS_RES_NONE;
}

const char *model_res_user(const struct model *m, uint64_t res_no, uint8_t *len)
{
	assert(res_no >= 1 && res_no <= m->res_count);
	const struct m_user *u = &m->users[m->res[res_no - 1].user];
	*len = u->len;
	return u->name;
}

int64_t model_res_expires(const struct model *m, uint64_t res_no)
{
	return res_no >= 1 && res_no <= m->res_count ? m->res[res_no - 1].expires_ms : 0;
}

uint8_t model_order_status(const struct model *m, uint64_t order_no)
{
	return order_no >= 1 && order_no <= m->order_count ? m->orders[order_no - 1].status : FS_ORDER_NONE;
}

void model_restart(struct model *m)
{
	for (uint64_t i = 0; i < m->order_count; i++)
		m->orders[i].has_waiter = 0;
}

uint64_t model_order_res(const struct model *m, uint64_t order_no)
{
	return order_no >= 1 && order_no <= m->order_count ? m->orders[order_no - 1].res_no : 0;
}

int64_t model_next_expiry(const struct model *m, uint64_t *res_no)
{
	int64_t next = INT64_MAX;
	for (uint64_t i = 0; i < m->res_count; i++) {
		if (m->res[i].status == FS_RES_RESERVED && m->res[i].expires_ms < next) {
			next = m->res[i].expires_ms;
			if (res_no)
				*res_no = i + 1;
		}
	}
	return next;
}

/* ---- command builders ----------------------------------------------------------- */

void tc_reset(struct fs_cmd *c, uint8_t type)
{
	memset(c, 0, sizeof *c);
	c->type = type;
}

void tc_set(char *dst, uint8_t *len, size_t cap, const char *s)
{
	int n = fs_field_set(dst, len, cap, s, strlen(s));
	assert(n >= 0);
	(void)n;
}

void tc_create(struct fs_cmd *c, const char *sku, uint64_t total, uint32_t per_user,
               uint32_t hold_ms, uint32_t waitlist_max)
{
	tc_reset(c, FS_CMD_SALE_CREATE);
	tc_set(c->sku, &c->sku_len, FS_SKU_LEN_MAX, sku);
	c->sale.total = total;
	c->sale.per_user = per_user;
	c->sale.hold_ms = hold_ms;
	c->sale.waitlist_max = waitlist_max;
	c->sale.default_tier = 4;
	c->sale.price_cents = 1999;
}

void tc_admin(struct fs_cmd *c, uint8_t type, const char *sku)
{
	tc_reset(c, type);
	tc_set(c->sku, &c->sku_len, FS_SKU_LEN_MAX, sku);
}

void tc_reserve(struct fs_cmd *c, const char *sku, const char *user, const char *key, uint32_t q)
{
	tc_reset(c, FS_CMD_RESERVE);
	tc_set(c->sku, &c->sku_len, FS_SKU_LEN_MAX, sku);
	tc_set(c->user, &c->user_len, FS_ID_LEN_MAX, user);
	tc_set(c->key, &c->key_len, FS_ID_LEN_MAX, key);
	c->quantity = q;
}

void tc_cancel(struct fs_cmd *c, const char *user, uint64_t res_no)
{
	tc_reset(c, FS_CMD_CANCEL);
	tc_set(c->user, &c->user_len, FS_ID_LEN_MAX, user);
	c->ref = res_no;
}

void tc_checkout(struct fs_cmd *c, const char *user, const char *key, uint64_t res_no, const char *token)
{
	tc_reset(c, FS_CMD_CHECKOUT);
	tc_set(c->user, &c->user_len, FS_ID_LEN_MAX, user);
	tc_set(c->key, &c->key_len, FS_ID_LEN_MAX, key);
	tc_set(c->text, &c->text_len, FS_ID_LEN_MAX, token);
	c->ref = res_no;
}

void tc_pay(struct fs_cmd *c, uint64_t order_no, uint8_t pay)
{
	tc_reset(c, FS_CMD_PAY_RESULT);
	c->ref = order_no;
	c->pay = pay;
	const char *why = pay == FS_PAY_OK ? "charged" : fs_pay_reason_name(pay);
	tc_set(c->text, &c->text_len, FS_ID_LEN_MAX, why);
}

void tc_get(struct fs_cmd *c, uint8_t type, const char *user, uint64_t ref)
{
	tc_reset(c, type);
	tc_set(c->user, &c->user_len, FS_ID_LEN_MAX, user);
	c->ref = ref;
}
