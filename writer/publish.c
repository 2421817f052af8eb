/* publish.c - stores a durable batch's changed reservations, orders and
 * queue counters into the shared published region (publish.h).
 *
 * Order of stores, which the readers in common/fs_pub.c rely on: names of
 * new users and SKUs; the floors (before any reclaimed slot is reused);
 * for every SKU whose reservations or queue counters change, its window
 * opens, the reservation slots and counters are stored, the window
 * closes; the order slots; the counts (after the slots they cover).
 */
#include "writer/publish.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int wr_publisher_init(struct wr_publisher *pb, struct fs_pub *pub, uint32_t sku_max)
{
	memset(pb, 0, sizeof *pb);
	assert(pub != NULL && sku_max <= pub->sku_max);
	pb->pub = pub;
	pb->sku_max = sku_max;
	pb->mark = calloc(sku_max, 1);
	pb->set = calloc(sku_max, sizeof *pb->set);
	pb->wl_served = calloc(sku_max, sizeof *pb->wl_served);
	pb->pq_served = calloc(sku_max, sizeof *pb->pq_served);
	pb->drawn = calloc(sku_max, 1);
	return pb->mark && pb->set && pb->wl_served && pb->pq_served && pb->drawn ? 0 : -1;
}

void wr_publisher_free(struct wr_publisher *pb)
{
	free(pb->mark);
	free(pb->set);
	free(pb->wl_served);
	free(pb->pq_served);
	free(pb->drawn);
	memset(pb, 0, sizeof *pb);
}

static void names(struct wr_publisher *pb, const struct wr_state *st)
{
	for (uint32_t n = wr_user_count(st); pb->users_named < n; pb->users_named++) {
		size_t len;
		const char *name = wr_user_name(st, pb->users_named, &len);
		fs_pub_set_user(pb->pub, pb->users_named, name, len);
	}
	for (uint32_t n = wr_sku_count(st); pb->skus_named < n; pb->skus_named++) {
		struct wr_sku_view v;
		wr_sku_view(st, pb->skus_named, &v);
		fs_pub_set_sku_name(pb->pub, pb->skus_named, v.name, v.name_len);
	}
}

static void floors(struct wr_publisher *pb, const struct wr_state *st)
{
	uint64_t rf, rc, of, oc;
	wr_pub_bounds(st, &rf, &rc, &of, &oc);
	fs_pub_floors(pb->pub, rf, of);
}

static void counts(struct wr_publisher *pb, const struct wr_state *st)
{
	uint64_t rf, rc, of, oc;
	wr_pub_bounds(st, &rf, &rc, &of, &oc);
	fs_pub_counts(pb->pub, rc, oc);
}

/* Adds SKU idx to the set and opens its window (once per publish). */
static uint32_t set_add(struct wr_publisher *pb, uint32_t count, uint32_t idx)
{
	assert(idx < pb->sku_max);
	if (pb->mark[idx])
		return count;
	pb->mark[idx] = 1;
	pb->set[count] = idx;
	fs_pub_sku_begin(pb->pub, idx);
	return count + 1;
}

/* Whether SKU idx's queue counters differ from the published ones. */
static int queue_moved(const struct wr_publisher *pb, const struct wr_state *st, uint32_t idx)
{
	uint64_t wl, pq;
	uint32_t drawn;
	wr_sku_queue(st, idx, &wl, &pq, &drawn);
	return wl != pb->wl_served[idx] || pq != pb->pq_served[idx] || drawn != pb->drawn[idx];
}

/* Stores the queue counters of every SKU in the set and closes the windows. */
static void set_close(struct wr_publisher *pb, const struct wr_state *st, uint32_t count)
{
	for (uint32_t i = 0; i < count; i++) {
		uint32_t idx = pb->set[i];
		uint64_t wl, pq;
		uint32_t drawn;
		wr_sku_queue(st, idx, &wl, &pq, &drawn);
		fs_pub_sku_queue(pb->pub, idx, wl, pq, drawn);
		pb->wl_served[idx] = wl;
		pb->pq_served[idx] = pq;
		pb->drawn[idx] = (uint8_t)drawn;
		fs_pub_sku_end(pb->pub, idx);
		pb->mark[idx] = 0;
	}
}

/* A reclaimed user's entry is reused for a new user (alloc.c's free
 * list): its published name is rewritten before the first reservation that
 * names the new user. Every reservation of the old one is below the floor
 * by then (a user goes only with its last reservation), so a reader of
 * those answers from the floor, never from the name. */
static void name_user(struct wr_publisher *pb, const struct wr_state *st, uint32_t idx)
{
	size_t len;
	const char *name = wr_user_name(st, idx, &len);
	const struct fs_pub_user *u = &fs_pub_users(pb->pub)[idx];
	if (u->len != len || memcmp(u->name, name, len) != 0)
		fs_pub_set_user(pb->pub, idx, name, len);
}

static void store_res(struct wr_publisher *pb, const struct wr_state *st, uint64_t res_no)
{
	struct fs_pub_res_view v;
	if (wr_pub_res(st, res_no, &v) != 0)
		return;   /* reclaimed in the same batch: the floor answers for it */
	assert(pb->mark[v.sku]);
	name_user(pb, st, v.user);
	fs_pub_res_store(pb->pub, &v);
}

static void store_order(struct wr_publisher *pb, const struct wr_state *st, uint64_t order_no)
{
	struct fs_pub_order_view v;
	if (wr_pub_order(st, order_no, &v) == 0)
		fs_pub_order_store(pb->pub, &v);
}

struct sweep { struct wr_publisher *pb; const struct wr_state *st; };
static void sweep_one(void *arg, uint64_t res_no)
{
	struct sweep *sw = arg;
	store_res(sw->pb, sw->st, res_no);
}

/* Every live reservation of the SKUs in the set (the draw renumbered a
 * whole waiting room; start-up publishes all). */
static void store_all_res_of_set(struct wr_publisher *pb, const struct wr_state *st)
{
	uint64_t rf, rc, of, oc;
	wr_pub_bounds(st, &rf, &rc, &of, &oc);
	for (uint64_t no = rf + 1; no <= rc; no++) {
		struct fs_pub_res_view v;
		if (wr_pub_res(st, no, &v) == 0 && pb->mark[v.sku]) {
			name_user(pb, st, v.user);
			fs_pub_res_store(pb->pub, &v);
		}
	}
}

void wr_publish_all(struct wr_publisher *pb, const struct wr_state *st)
{
	names(pb, st);
	floors(pb, st);
	uint32_t count = 0;
	for (uint32_t i = 0; i < wr_sku_count(st); i++)
		count = set_add(pb, count, i);
	store_all_res_of_set(pb, st);
	set_close(pb, st, count);
	uint64_t rf, rc, of, oc;
	wr_pub_bounds(st, &rf, &rc, &of, &oc);
	for (uint64_t no = of + 1; no <= oc; no++)
		store_order(pb, st, no);
	counts(pb, st);
}

/* A sale created into an archived sale's slot (alloc.c's free list): its
 * published name is rewritten inside the SKU's window, after the floors
 * (every reservation and order of the archived sale is below them: archive
 * waits for retention), so a reader that copied the old name mid-change
 * sees the window move and retries into the floor's answer. */
static void renames(struct wr_publisher *pb, const struct wr_state *st, const struct fs_cmd *cmds, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		if (cmds[i].type != FS_CMD_SALE_CREATE || cmds[i].err != FS_OK)
			continue;
		int idx = wr_sku_find(st, cmds[i].sku, cmds[i].sku_len);
		if (idx < 0)
			continue;   /* archived again in the same batch */
		const struct fs_pub_sku *k = &fs_pub_skus(pb->pub)[idx];
		if (k->name_len == cmds[i].sku_len && memcmp(k->name, cmds[i].sku, cmds[i].sku_len) == 0)
			continue;
		fs_pub_sku_begin(pb->pub, (uint32_t)idx);
		fs_pub_set_sku_name(pb->pub, (uint32_t)idx, cmds[i].sku, cmds[i].sku_len);
		fs_pub_sku_end(pb->pub, (uint32_t)idx);
	}
}

/* Commands whose effect on the queues names no reservation (a reclaim
 * trims every SKU's heads; a serve may only skip cancelled entries). */
static int moves_queues(const struct fs_cmd *c)
{
	return c->err == FS_OK && (c->type == FS_CMD_RECLAIM || c->type == FS_CMD_WAITLIST_SERVE ||
	                           c->type == FS_CMD_WAITROOM_SERVE || c->type == FS_CMD_SALE_OPEN);
}

void wr_publish_batch(struct wr_publisher *pb, const struct wr_state *st, const struct wr_batch_out *out,
                      const struct fs_cmd *cmds, uint32_t n)
{
	names(pb, st);
	floors(pb, st);
	renames(pb, st, cmds, n);
	uint32_t count = 0;
	for (uint32_t i = 0; i < out->res_touched_count; i++) {
		struct fs_pub_res_view v;
		if (wr_pub_res(st, out->res_touched[i], &v) == 0)
			count = set_add(pb, count, v.sku);
	}
	for (uint32_t i = 0; out->sku_resweep != NULL && i < out->sku_resweep_count; i++)
		count = set_add(pb, count, out->sku_resweep[i]);
	int all = 0;
	for (uint32_t i = 0; i < n && !all; i++)
		all = moves_queues(&cmds[i]);
	uint32_t sku_count = wr_sku_count(st);
	for (uint32_t i = 0; i < (all ? sku_count : out->sku_touched_count); i++) {
		uint32_t idx = all ? i : out->sku_touched[i];
		if (!pb->mark[idx] && queue_moved(pb, st, idx))
			count = set_add(pb, count, idx);
	}
	/* leaving a freeze gives every live hold of the sale its frozen time
	 * back (alloc.c holds_unfreeze, no record per hold): republish them all */
	int redraw = 0;
	for (uint32_t i = 0; i < n; i++)
		if (cmds[i].type == FS_CMD_SALE_RESUME && cmds[i].err == FS_OK) {
			int idx = wr_sku_find(st, cmds[i].sku, cmds[i].sku_len);
			assert(idx >= 0);
			count = set_add(pb, count, (uint32_t)idx);
			redraw = 1;
		}
	for (uint32_t i = 0; i < count && !redraw; i++) {
		uint64_t wl, pq;
		uint32_t drawn;
		wr_sku_queue(st, pb->set[i], &wl, &pq, &drawn);
		redraw = drawn != pb->drawn[pb->set[i]];
	}
	if (redraw)
		store_all_res_of_set(pb, st);   /* the draw numbered every queued entry */
	else {
		for (uint32_t i = 0; i < out->res_touched_count; i++)
			store_res(pb, st, out->res_touched[i]);
		struct sweep sw = { pb, st };
		for (uint32_t i = 0; out->sku_resweep != NULL && i < out->sku_resweep_count; i++)
			wr_sku_each_queued(st, out->sku_resweep[i], sweep_one, &sw);   /* a resume moved every hold */
	}
	set_close(pb, st, count);
	for (uint32_t i = 0; i < out->order_touched_count; i++)
		store_order(pb, st, out->order_touched[i]);
	counts(pb, st);
}
