/* test_model.c - sink_model and its hash table, no servers needed: the
 * projection of a generated workload keeps every SKU conserved, sees no
 * anomaly, is idempotent by seq, and pruning keeps only live holds. */
#include <assert.h>
#include <string.h>

#include "sink_testlib.h"
#include "writer/sink/sink_model.h"

static void test_tab(void)
{
	struct sm_tab t;
	CHECK(sm_tab_init(&t, 16, 4) == 0);
	for (uint64_t k = 1; k <= 20000; k++) {
		uint64_t *e = sm_tab_upsert(&t, k * 7919);
		CHECK(e && e[0] == k * 7919);
		e[1] = k;
	}
	CHECK(t.count == 20000);
	for (uint64_t k = 1; k <= 20000; k += 2)
		sm_tab_remove(&t, k * 7919);
	CHECK(t.count == 10000);
	for (uint64_t k = 1; k <= 20000; k++) {
		uint64_t *e = sm_tab_find(&t, k * 7919);
		CHECK((k % 2 == 0) == (e != NULL));
		CHECK(!e || e[1] == k);
	}
	sm_tab_free(&t);
}

static void check_conserved(const struct sink_model *m)
{
	for (uint32_t k = 0; k < m->sku_count; k++) {
		const struct sm_sku *s = &m->skus[k];
		CHECK(s->available >= 0 && s->reserved >= 0 && s->sold >= 0);
		CHECK(s->available + s->reserved + s->sold == s->total);
	}
}

static void test_model(int keep_terminal)
{
	struct gen *g = gen_new(7, 3, 50, 20);
	struct sink_model m;
	CHECK(sm_init(&m, keep_terminal) == 0);
	struct fs_cmd recs[256];
	uint32_t idx[256];
	uint64_t sold_seen = 0;
	for (uint64_t seq = 1; seq <= 2000; seq++) {
		uint32_t n = gen_batch(g, recs, 256);
		CHECK(sm_apply_batch(&m, seq, gen_time_ms(g), recs, n, idx) == 1);
		CHECK(sm_apply_batch(&m, seq, gen_time_ms(g), recs, n, idx) == 0);  /* idempotent */
		for (uint32_t i = 0; i < n; i++)
			CHECK(idx[i] < m.sku_count);
		check_conserved(&m);
	}
	CHECK(m.anomalies == 0);
	for (uint32_t k = 0; k < m.sku_count; k++)
		sold_seen += (uint64_t)m.skus[k].sold;
	CHECK(sold_seen > 0);
	if (!keep_terminal) {
		for (size_t i = 0; i < m.res.cap; i++) {
			const struct sm_res *r = sm_tab_slot(&m.res, i);
			CHECK(!r || r->status == FS_RES_RESERVED || r->status == FS_RES_WAITLISTED ||
			      r->status == FS_RES_PAYING);
		}
	}
	/* A record about an unknown reservation is an anomaly, not a crash. */
	struct fs_cmd bad = {.type = FS_CMD_EXPIRE, .ref = 999999999};
	CHECK(sm_apply_batch(&m, 5000, 0, &bad, 1, idx) == 1);
	CHECK(m.anomalies == 1 && idx[0] == SM_NO_SKU);
	sm_free(&m);
	gen_free(g);
}

static struct fs_cmd sku_rec(uint8_t type, const char *sku, uint8_t out_status)
{
	struct fs_cmd c;
	memset(&c, 0, sizeof c);
	c.type = type;
	c.sku_len = (uint8_t)strlen(sku);
	memcpy(c.sku, sku, c.sku_len);
	c.out_status = out_status;
	c.sale.total = 5;
	c.sale.hold_ms = 1000;
	return c;
}

/* An archived sale is never found again; a model without terminal rows
 * (Kafka, Redis) gives its entry to the next sale, one with them
 * (reconcile) keeps it, since its rows still name the entry. Archiving a
 * sale that is not closed is an anomaly. */
static void test_archive(int keep_terminal)
{
	struct sink_model m;
	CHECK(sm_init(&m, keep_terminal) == 0);
	uint32_t idx[4];
	struct fs_cmd b1[3] = { sku_rec(FS_CMD_SALE_CREATE, "a", FS_SALE_SCHEDULED),
	                        sku_rec(FS_CMD_SALE_CLOSE, "a", FS_SALE_CLOSED),
	                        sku_rec(FS_CMD_SALE_ARCHIVE, "a", FS_SALE_CLOSED) };
	CHECK(sm_apply_batch(&m, 1, 0, b1, 3, idx) == 1);
	CHECK(idx[2] == 0 && m.skus[0].archived && sm_sku_find(&m, "a", 1) == SM_NO_SKU);
	struct fs_cmd b2[2] = { sku_rec(FS_CMD_SALE_CREATE, "b", FS_SALE_SCHEDULED),
	                        sku_rec(FS_CMD_SALE_CREATE, "a", FS_SALE_SCHEDULED) };
	CHECK(sm_apply_batch(&m, 2, 0, b2, 2, idx) == 1);
	CHECK(m.anomalies == 0);
	CHECK(idx[0] == (keep_terminal ? 1u : 0u));        /* b took a's entry, or a new one */
	CHECK(sm_sku_find(&m, "a", 1) == idx[1] && !m.skus[idx[1]].archived && m.skus[idx[1]].total == 5);
	CHECK(m.sku_count == (keep_terminal ? 3u : 2u));
	struct fs_cmd b3 = sku_rec(FS_CMD_SALE_ARCHIVE, "b", FS_SALE_CLOSED);
	CHECK(sm_apply_batch(&m, 3, 0, &b3, 1, idx) == 1);
	CHECK(m.anomalies == 1);                           /* b was never closed */
	sm_free(&m);
}

int main(void)
{
	test_tab();
	test_model(1);
	test_model(0);
	test_archive(1);
	test_archive(0);
	printf("sinks_model: ok\n");
	return 0;
}
