/* sink_seed.c - a sink's model from the writer's newest snapshot (see
 * sink_seed.h). */
#include "writer/sink/sink_seed.h"
#include "common/fs_pub.h"
#include "writer/alloc.h"
#include "writer/snapshot.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The SKUs in the writer's order: indexes then match the records' SKUs. */
static int seed_skus(const struct wr_state *st, struct sink_model *m)
{
	for (uint32_t i = 0; i < wr_sku_count(st); i++) {
		struct wr_sku_view v;
		wr_sku_view(st, i, &v);
		if (m->sku_count == m->sku_cap) {
			uint32_t cap = m->sku_cap ? m->sku_cap * 2 : 64;
			struct sm_sku *p = realloc(m->skus, (size_t)cap * sizeof *p);
			if (p == NULL)
				return -1;
			m->skus = p;
			m->sku_cap = cap;
		}
		struct sm_sku *s = &m->skus[m->sku_count++];
		memset(s, 0, sizeof *s);
		if (v.name_len == 0) {   /* an archived sale's free slot: kept so indexes match */
			s->archived = 1;
			s->state = FS_SALE_CLOSED;
			continue;
		}
		memcpy(s->sku, v.name, v.name_len);
		s->sku_len = v.name_len;
		/* the view derives sold_out; the model stores open (sm_public_state derives it) */
		s->state = v.state == FS_SALE_SOLD_OUT ? FS_SALE_OPEN : v.state;
		s->sale.total = v.total;
		s->sale.per_user = v.per_user;
		s->sale.hold_ms = v.hold_ms;
		s->sale.default_tier = v.default_tier;
		s->sale.price_cents = v.price_cents;
		s->total = (int64_t)v.total;
		s->available = (int64_t)v.available;
		s->reserved = (int64_t)v.reserved;
		s->sold = (int64_t)v.sold;
		s->api_version = v.version;
		assert(sm_sku_find(m, s->sku, s->sku_len) == m->sku_count - 1);
	}
	return 0;
}

static int res_live(uint8_t status)
{
	return status == FS_RES_WAITLISTED || status == FS_RES_RESERVED || status == FS_RES_PAYING ||
	       status == FS_RES_QUEUED;
}

/* The live reservations and the PENDING orders, as keep_terminal 0 keeps them. */
static int seed_tables(const struct wr_state *st, struct sink_model *m)
{
	uint64_t res_floor, res_count, order_floor, order_count;
	wr_pub_bounds(st, &res_floor, &res_count, &order_floor, &order_count);
	for (uint64_t no = res_floor + 1; no <= res_count; no++) {
		struct fs_pub_res_view v;
		if (wr_pub_res(st, no, &v) != 0 || !res_live(v.status))
			continue;
		struct sm_res *r = sm_tab_upsert(&m->res, no);
		if (r == NULL)
			return -1;
		r->order_no = v.order_no;
		r->expires_at_ms = v.expires_ms;
		r->sku_idx = v.sku;
		r->quantity = v.qty;
		r->status = v.status;
		assert(r->sku_idx < m->sku_count);
	}
	for (uint64_t no = order_floor + 1; no <= order_count; no++) {
		struct fs_pub_order_view v;
		if (wr_pub_order(st, no, &v) != 0 || v.status != FS_ORDER_PENDING)
			continue;
		struct sm_order *o = sm_tab_upsert(&m->orders, no);
		if (o == NULL)
			return -1;
		o->res_no = v.res_no;
		o->status = v.status;
	}
	return 0;
}

int sink_seed_from_snapshot(const char *data_dir, uint64_t from_seq, uint64_t to_seq, struct sink_model *m,
                            char *err, size_t err_len)
{
	memset(m, 0, sizeof *m);
	uint64_t seqs[WR_SNAP_LIST_MAX];
	int n = wr_snapshot_list(data_dir, seqs, WR_SNAP_LIST_MAX);
	int rc = 0;
	for (int i = 0; i < n && rc != 1; i++) {   /* newest first: the shortest tail */
		if (seqs[i] < from_seq || seqs[i] > to_seq)
			continue;
		char path[4200];
		struct wr_limits l;
		struct wr_snap_stamp stamp;
		struct wr_state *st = NULL;
		wr_snapshot_path(path, sizeof path, data_dir, seqs[i]);
		if (wr_snapshot_limits(path, &l, err, err_len) != 0 || (st = wr_state_new(&l)) == NULL ||
		    wr_snapshot_load(path, st, &stamp, NULL, err, err_len) != 0 || stamp.seq != seqs[i]) {
			if (st == NULL && err[0] == 0)
				snprintf(err, err_len, "out of memory for the state of snapshot %s", path);
			wr_state_free(st);
			rc = -1;
			continue;   /* an older one may still fit */
		}
		if (sm_init(m, 0) != 0 || seed_skus(st, m) != 0 || seed_tables(st, m) != 0) {
			wr_state_free(st);
			sm_free(m);
			return -2;
		}
		for (uint32_t k = 0; k < m->sku_count; k++)
			m->skus[k].version = stamp.seq;   /* at most: the last batch that touched it */
		m->last_seq = stamp.seq;
		wr_state_free(st);
		rc = 1;
	}
	return rc;
}
