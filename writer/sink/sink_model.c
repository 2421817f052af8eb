/* sink_model.c - in-memory projection of the journal per writer/EVENTS.md
 * (see sink_model.h). Used by sink threads and flashsale-reconcile. */
#include "writer/sink/sink_model.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- hash table of elements keyed by a leading non-zero uint64 ---- */

static uint64_t key_hash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ull;
	k ^= k >> 33;
	return k;
}

static uint64_t slot_key(const struct sm_tab *t, size_t i)
{
	uint64_t k;
	memcpy(&k, t->slots + i * t->elem_bytes, sizeof k);
	return k;
}

int sm_tab_init(struct sm_tab *t, size_t elem_bytes, size_t cap_initial)
{
	assert(elem_bytes >= sizeof(uint64_t));
	size_t cap = 16;
	while (cap < cap_initial)
		cap *= 2;
	t->slots = calloc(cap, elem_bytes);
	t->elem_bytes = elem_bytes;
	t->cap = cap;
	t->count = 0;
	return t->slots ? 0 : -1;
}

void sm_tab_free(struct sm_tab *t)
{
	free(t->slots);
	memset(t, 0, sizeof *t);
}

static size_t tab_probe(const struct sm_tab *t, uint64_t key)
{
	size_t mask = t->cap - 1;
	size_t i = (size_t)key_hash(key) & mask;
	/* bounded: the table grows before it fills (count < cap), so an empty
	 * slot ends every probe */
	for (size_t probe = 0; probe <= mask; probe++) {
		uint64_t k = slot_key(t, i);
		if (k == 0 || k == key)
			return i;
		i = (i + 1) & mask;
	}
	assert(!"sink model table without an empty slot");
	return 0;
}

void *sm_tab_find(const struct sm_tab *t, uint64_t key)
{
	assert(key != 0 && t->count < t->cap);
	size_t i = tab_probe(t, key);
	return slot_key(t, i) == key ? t->slots + i * t->elem_bytes : NULL;
}

static int tab_grow(struct sm_tab *t)
{
	struct sm_tab bigger;
	if (sm_tab_init(&bigger, t->elem_bytes, t->cap * 2) != 0)
		return -1;
	for (size_t i = 0; i < t->cap; i++) {
		uint64_t k = slot_key(t, i);
		if (k == 0)
			continue;
		size_t j = tab_probe(&bigger, k);
		memcpy(bigger.slots + j * t->elem_bytes, t->slots + i * t->elem_bytes, t->elem_bytes);
		bigger.count++;
	}
	assert(bigger.count == t->count);
	free(t->slots);
	*t = bigger;
	return 0;
}

void *sm_tab_upsert(struct sm_tab *t, uint64_t key)
{
	assert(key != 0);
	if ((t->count + 1) * 4 > t->cap * 3 && tab_grow(t) != 0)
		return NULL;
	size_t i = tab_probe(t, key);
	uint8_t *e = t->slots + i * t->elem_bytes;
	if (slot_key(t, i) == 0) {
		memset(e, 0, t->elem_bytes);
		memcpy(e, &key, sizeof key);
		t->count++;
	}
	return e;
}

void sm_tab_remove(struct sm_tab *t, uint64_t key)
{
	size_t mask = t->cap - 1;
	size_t i = tab_probe(t, key);
	if (slot_key(t, i) != key)
		return;
	/* Backward-shift: move later members of the probe run into the hole. */
	size_t hole = i;
	for (size_t j = (i + 1) & mask; slot_key(t, j) != 0; j = (j + 1) & mask) {
		size_t home = (size_t)key_hash(slot_key(t, j)) & mask;
		int movable = hole <= j ? (home <= hole || home > j) : (home <= hole && home > j);
		if (movable) {
			memcpy(t->slots + hole * t->elem_bytes, t->slots + j * t->elem_bytes, t->elem_bytes);
			hole = j;
		}
	}
	memset(t->slots + hole * t->elem_bytes, 0, t->elem_bytes);
	t->count--;
}

void *sm_tab_slot(const struct sm_tab *t, size_t i)
{
	assert(i < t->cap);
	return slot_key(t, i) ? t->slots + i * t->elem_bytes : NULL;
}

/* ---- the model ---- */

int sm_init(struct sink_model *m, int keep_terminal)
{
	memset(m, 0, sizeof *m);
	m->keep_terminal = keep_terminal;
	if (sm_tab_init(&m->res, sizeof(struct sm_res), 1024) != 0)
		return -1;
	if (sm_tab_init(&m->orders, sizeof(struct sm_order), 1024) != 0) {
		sm_tab_free(&m->res);
		return -1;
	}
	return 0;
}

void sm_free(struct sink_model *m)
{
	free(m->skus);
	sm_tab_free(&m->res);
	sm_tab_free(&m->orders);
	memset(m, 0, sizeof *m);
}

uint32_t sm_sku_find(const struct sink_model *m, const char *sku, size_t len)
{
	for (uint32_t i = 0; i < m->sku_count; i++)
		if (m->skus[i].sku_len == len && !m->skus[i].archived && memcmp(m->skus[i].sku, sku, len) == 0)
			return i;
	return SM_NO_SKU;
}

uint8_t sm_public_state(const struct sm_sku *s)
{
	if (s->state == FS_SALE_OPEN && s->available == 0)
		return FS_SALE_SOLD_OUT;
	return s->state;
}

static void anomaly(struct sink_model *m, uint64_t seq, uint32_t idx, const char *what)
{
	if (m->anomalies++ == 0)
		snprintf(m->anomaly, sizeof m->anomaly, "seq %llu record %u: %s",
		         (unsigned long long)seq, idx, what);
}

/* An archived sale's entry a new one may take: only when no terminal row
 * is kept (those would name the entry), so the model stays as small as the
 * writer's live sales. */
static uint32_t sku_reusable(const struct sink_model *m)
{
	for (uint32_t i = 0; !m->keep_terminal && i < m->sku_count; i++)
		if (m->skus[i].archived)
			return i;
	return SM_NO_SKU;
}

static uint32_t sku_create(struct sink_model *m, const struct fs_cmd *c)
{
	uint32_t reuse = sku_reusable(m);
	if (reuse == SM_NO_SKU && m->sku_count == m->sku_cap) {
		uint32_t cap = m->sku_cap ? m->sku_cap * 2 : 16;
		struct sm_sku *n = realloc(m->skus, cap * sizeof *n);
		if (!n)
			return SM_NO_SKU;
		m->skus = n;
		m->sku_cap = cap;
	}
	struct sm_sku *s = &m->skus[reuse != SM_NO_SKU ? reuse : m->sku_count];
	memset(s, 0, sizeof *s);
	memcpy(s->sku, c->sku, c->sku_len);
	s->sku_len = c->sku_len;
	s->state = c->out_status;
	s->sale = c->sale;
	s->total = s->available = (int64_t)c->sale.total;
	return reuse != SM_NO_SKU ? reuse : m->sku_count++;
}

/* Moves q units of a reservation between counters: +1 = hold, -1 = release,
 * 2 = sell (reserved -> sold). */
static void move_units(struct sm_sku *s, int64_t q, int how)
{
	if (how == 1) {
		s->available -= q;
		s->reserved += q;
	} else if (how == -1) {
		s->available += q;
		s->reserved -= q;
	} else {
		s->reserved -= q;
		s->sold += q;
	}
}

static int res_terminal(uint8_t st)
{
	return st == FS_RES_CONFIRMED || st == FS_RES_CANCELLED || st == FS_RES_EXPIRED ||
	       st == FS_RES_FAILED || st == FS_RES_REJECTED;
}

static void res_settle(struct sink_model *m, struct sm_res *r)
{
	if (!m->keep_terminal && res_terminal(r->status))
		sm_tab_remove(&m->res, r->no);
}

/* Each apply_* returns the SKU index touched, SM_NO_SKU when the record does
 * not fit (anomaly noted), or SM_NO_SKU - 1 when out of memory. */
#define SM_OOM (SM_NO_SKU - 1)

static uint32_t apply_sku_cmd(struct sink_model *m, const struct fs_cmd *c, uint64_t seq, uint32_t idx)
{
	uint32_t k = sm_sku_find(m, c->sku, c->sku_len);
	if (c->type == FS_CMD_SALE_CREATE) {
		if (k != SM_NO_SKU) {
			anomaly(m, seq, idx, "sale created twice");
			return SM_NO_SKU;
		}
		k = sku_create(m, c);
		return k == SM_NO_SKU ? SM_OOM : k;
	}
	if (k == SM_NO_SKU) {
		anomaly(m, seq, idx, "unknown sku");
		return SM_NO_SKU;
	}
	if (c->type == FS_CMD_SALE_ARCHIVE) {
		if (m->skus[k].state != FS_SALE_CLOSED || m->skus[k].reserved != 0)
			anomaly(m, seq, idx, "archive of a sale that is not closed or still holds units");
		m->skus[k].archived = 1;
		return k;
	}
	if (c->type == FS_CMD_STOCK_ADD) {
		m->skus[k].total += c->quantity;
		m->skus[k].available += c->quantity;
	} else if (c->type == FS_CMD_STOCK_REMOVE) {
		m->skus[k].total -= c->quantity;
		m->skus[k].available -= c->quantity;
	} else {
		m->skus[k].state = c->out_status;
	}
	return k;
}

static uint32_t apply_reserve(struct sink_model *m, const struct fs_cmd *c, uint64_t seq, uint32_t idx)
{
	uint32_t k = sm_sku_find(m, c->sku, c->sku_len);
	if (k == SM_NO_SKU || c->out_ref == 0 || sm_tab_find(&m->res, c->out_ref)) {
		anomaly(m, seq, idx, "reserve: unknown sku or duplicate reservation");
		return SM_NO_SKU;
	}
	struct sm_res *r = sm_tab_upsert(&m->res, c->out_ref);
	if (!r)
		return SM_OOM;
	r->sku_idx = k;
	r->quantity = c->quantity;
	r->created_seq = seq;
	r->status = c->out_status == FS_RES_WAITLISTED || c->out_status == FS_RES_QUEUED ?
	            c->out_status : FS_RES_RESERVED;
	if (r->status == FS_RES_RESERVED) {
		r->expires_at_ms = c->out_val;
		move_units(&m->skus[k], r->quantity, 1);
	}
	return k;
}

static uint32_t apply_res_change(struct sink_model *m, const struct fs_cmd *c, uint64_t seq, uint32_t idx)
{
	struct sm_res *r = sm_tab_find(&m->res, c->ref);
	if (!r) {
		anomaly(m, seq, idx, "unknown reservation");
		return SM_NO_SKU;
	}
	uint32_t k = r->sku_idx;
	struct sm_sku *s = &m->skus[k];
	uint8_t was = r->status;
	if ((c->type == FS_CMD_PROMOTE && was == FS_RES_WAITLISTED) ||
	    (c->type == FS_CMD_ADMIT && was == FS_RES_QUEUED && c->out_status == FS_RES_RESERVED)) {
		r->status = FS_RES_RESERVED;
		r->expires_at_ms = c->out_val;
		move_units(s, r->quantity, 1);
	} else if (c->type == FS_CMD_ADMIT && was == FS_RES_QUEUED &&
	           (c->out_status == FS_RES_WAITLISTED || c->out_status == FS_RES_REJECTED)) {
		r->status = c->out_status;
	} else if (c->type == FS_CMD_CANCEL &&
	           (was == FS_RES_RESERVED || was == FS_RES_WAITLISTED || was == FS_RES_QUEUED)) {
		r->status = FS_RES_CANCELLED;
		if (was == FS_RES_RESERVED)
			move_units(s, r->quantity, -1);
	} else if (c->type == FS_CMD_EXPIRE && was == FS_RES_RESERVED) {
		r->status = FS_RES_EXPIRED;
		move_units(s, r->quantity, -1);
	} else if (c->type == FS_CMD_EXPIRE && (was == FS_RES_WAITLISTED || was == FS_RES_QUEUED) &&
	           s->state == FS_SALE_CLOSED) {
		r->status = FS_RES_EXPIRED;   /* a closed sale's waiting entry: it held no units */
	} else {
		anomaly(m, seq, idx, "reservation not in a state this record applies to");
		return SM_NO_SKU;
	}
	res_settle(m, r);
	return k;
}

static uint32_t apply_checkout(struct sink_model *m, const struct fs_cmd *c, uint64_t seq, uint32_t idx)
{
	struct sm_res *r = sm_tab_find(&m->res, c->ref);
	if (!r || r->status != FS_RES_RESERVED || c->out_ref == 0 || sm_tab_find(&m->orders, c->out_ref)) {
		anomaly(m, seq, idx, "checkout: reservation not RESERVED or duplicate order");
		return SM_NO_SKU;
	}
	uint32_t k = r->sku_idx;
	uint64_t res_no = r->no;
	r->status = FS_RES_PAYING;
	r->order_no = c->out_ref;
	struct sm_order *o = sm_tab_upsert(&m->orders, c->out_ref);
	if (!o)
		return SM_OOM;
	o->res_no = res_no;
	o->amount_cents = c->out_val;
	o->status = FS_ORDER_PENDING;
	return k;
}

static uint32_t apply_pay_result(struct sink_model *m, const struct fs_cmd *c, int64_t time_ms,
                                 uint64_t seq, uint32_t idx)
{
	struct sm_order *o = sm_tab_find(&m->orders, c->ref);
	struct sm_res *r = o ? sm_tab_find(&m->res, o->res_no) : NULL;
	if (!o || !r || o->status != FS_ORDER_PENDING || r->status != FS_RES_PAYING) {
		anomaly(m, seq, idx, "pay_result: order not PENDING");
		return SM_NO_SKU;
	}
	uint32_t k = r->sku_idx;
	o->pay = c->pay;
	if (c->pay == FS_PAY_OK) {
		o->status = FS_ORDER_PAID;
		o->paid_at_ms = time_ms;
		r->status = FS_RES_CONFIRMED;
		move_units(&m->skus[k], r->quantity, 2);
	} else {
		o->status = FS_ORDER_FAILED;
		r->status = FS_RES_FAILED;
		move_units(&m->skus[k], r->quantity, -1);
	}
	if (!m->keep_terminal)
		sm_tab_remove(&m->orders, o->no);
	res_settle(m, r);
	return k;
}

/* REFUND and REFUND_RESULT carry the order's SKU, and REFUND_RESULT its
 * quantity and restock flag, so they apply even when the model dropped the
 * finished order (keep_terminal 0). */
static uint32_t apply_refund(struct sink_model *m, const struct fs_cmd *c, uint64_t seq, uint32_t idx)
{
	uint32_t k = sm_sku_find(m, c->sku, c->sku_len);
	struct sm_order *o = sm_tab_find(&m->orders, c->ref);
	uint8_t want = c->type == FS_CMD_REFUND ? FS_ORDER_PAID : FS_ORDER_REFUNDING;
	if (k == SM_NO_SKU || (o != NULL && o->status != want) || (o == NULL && m->keep_terminal)) {
		anomaly(m, seq, idx, "refund: unknown sku, or order not in the state it applies to");
		return SM_NO_SKU;
	}
	if (c->type == FS_CMD_REFUND_RESULT && c->pay == FS_PAY_OK) {
		struct sm_sku *s = &m->skus[k];
		s->sold -= c->quantity;
		if (c->out_val)
			s->available += c->quantity;
		else
			s->total -= c->quantity;
	}
	if (o != NULL)
		o->status = c->out_status;
	return k;
}

static uint32_t apply_record(struct sink_model *m, const struct fs_cmd *c, int64_t time_ms,
                             uint64_t seq, uint32_t idx)
{
	if (c->err != FS_OK) {
		anomaly(m, seq, idx, "journaled record with err != OK");
		return SM_NO_SKU;
	}
	switch (c->type) {
	case FS_CMD_SALE_CREATE: case FS_CMD_SALE_OPEN: case FS_CMD_SALE_PAUSE:
	case FS_CMD_SALE_FREEZE: case FS_CMD_SALE_RESUME: case FS_CMD_SALE_CLOSE:
	case FS_CMD_STOCK_ADD: case FS_CMD_STOCK_REMOVE: case FS_CMD_SALE_ARCHIVE:
		return apply_sku_cmd(m, c, seq, idx);
	case FS_CMD_RESERVE:
		return apply_reserve(m, c, seq, idx);
	case FS_CMD_PROMOTE: case FS_CMD_CANCEL: case FS_CMD_EXPIRE: case FS_CMD_ADMIT:
		return apply_res_change(m, c, seq, idx);
	case FS_CMD_WAITLIST_SERVE: case FS_CMD_WAITROOM_SERVE:
		return sm_sku_find(m, c->sku, c->sku_len);   /* their effect is in the records after them */
	case FS_CMD_CHECKOUT:
		return apply_checkout(m, c, seq, idx);
	case FS_CMD_PAY_RESULT:
		return apply_pay_result(m, c, time_ms, seq, idx);
	case FS_CMD_REFUND: case FS_CMD_REFUND_RESULT:
		return apply_refund(m, c, seq, idx);
	case FS_CMD_RECLAIM: case FS_CMD_RISK_FLAG:
		/* the writer forgot ended rows / lowered a tier: no row of the
		 * sinks changes (they keep the history); tests/sim found these
		 * counted as anomalies */
		return SM_NO_SKU;
	default:
		anomaly(m, seq, idx, "record type that is never journaled");
		return SM_NO_SKU;
	}
}

int sm_apply_batch(struct sink_model *m, uint64_t seq, int64_t time_ms,
                   const struct fs_cmd *recs, uint32_t n, uint32_t *sku_idx)
{
	assert(n == 0 || recs != NULL);
	if (seq <= m->last_seq)
		return 0;
	for (uint32_t i = 0; i < n; i++) {
		uint32_t k = apply_record(m, &recs[i], time_ms, seq, i);
		if (k == SM_OOM)
			return -1;
		/* "version" as GET /v1/skus shows it counts one per command that
		 * changed the SKU; derived records (PROMOTE, ADMIT, an invariant
		 * freeze) ride on the command before them */
		const struct fs_cmd *c = &recs[i];
		int derived = c->type == FS_CMD_PROMOTE || c->type == FS_CMD_ADMIT ||
		              (c->type == FS_CMD_SALE_FREEZE && c->text_len == 9 && memcmp(c->text, "invariant", 9) == 0);
		if (k != SM_NO_SKU && k < m->sku_count) {
			m->skus[k].version = seq;
			if (!derived)
				m->skus[k].api_version++;
		}
		if (sku_idx)
			sku_idx[i] = k;
	}
	m->last_seq = seq;
	m->records += n;
	return 1;
}
