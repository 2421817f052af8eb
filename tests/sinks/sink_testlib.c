/* sink_testlib.c - workload generator, journal writer and PostgreSQL helpers
 * for the sink tests (see sink_testlib.h). The generator keeps its own small
 * state (it is the "writer" here) and never uses sink_model, so the tests
 * compare independent implementations. */
#include "sink_testlib.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "writer/journal.h"
#include "writer/record.h"

#define GEN_SKUS_MAX 8
#define GEN_WAIT_MAX 4096

struct g_res {
	uint32_t sku, q;
	uint8_t status;
	uint32_t user;
	uint64_t order;
};

struct gen {
	uint64_t rng;
	uint32_t sku_count;
	uint64_t stock;
	uint32_t waitlist;
	int64_t avail[GEN_SKUS_MAX];
	uint32_t wait[GEN_SKUS_MAX][GEN_WAIT_MAX];   /* FIFO of reservation numbers */
	uint32_t wait_head[GEN_SKUS_MAX], wait_len[GEN_SKUS_MAX];
	struct g_res *res;        /* index = reservation number - 1 */
	uint32_t res_count, res_cap;
	uint32_t *live, live_count;     /* RESERVED or WAITLISTED */
	uint32_t *paying, paying_count; /* reservation numbers with a PENDING order */
	uint32_t *paid, paid_count;     /* reservation numbers with a PAID order (refundable) */
	uint64_t orders;
	int64_t time_ms;
	int created;
};

static uint32_t rnd(struct gen *g, uint32_t n)
{
	g->rng ^= g->rng << 13;
	g->rng ^= g->rng >> 7;
	g->rng ^= g->rng << 17;
	return (uint32_t)(g->rng % n);
}

struct gen *gen_new(uint32_t seed, uint32_t sku_count, uint64_t stock, uint32_t waitlist)
{
	assert(sku_count >= 1 && sku_count <= GEN_SKUS_MAX && waitlist <= GEN_WAIT_MAX);
	struct gen *g = calloc(1, sizeof *g);
	CHECK(g != NULL);
	g->rng = 0x9e3779b97f4a7c15ull ^ ((uint64_t)seed * 2654435761u + 1);
	g->sku_count = sku_count;
	g->stock = stock;
	g->waitlist = waitlist;
	g->time_ms = 1700000000000;
	return g;
}

void gen_free(struct gen *g)
{
	if (!g)
		return;
	free(g->res);
	free(g->live);
	free(g->paying);
	free(g->paid);
	free(g);
}

int64_t gen_time_ms(const struct gen *g)
{
	return g->time_ms;
}

static void set_sku(struct fs_cmd *c, uint32_t k)
{
	char s[16];
	int n = snprintf(s, sizeof s, "sku-%u", k);
	fs_field_set(c->sku, &c->sku_len, FS_SKU_LEN_MAX, s, (size_t)n);
}

static void set_str(char *dst, uint8_t *len, const char *fmt, unsigned long long v)
{
	char s[FS_ID_LEN_MAX];
	int n = snprintf(s, sizeof s, fmt, v);
	fs_field_set(dst, len, FS_ID_LEN_MAX, s, (size_t)n);
}

static struct fs_cmd *next(struct fs_cmd *recs, uint32_t *n, uint8_t type)
{
	struct fs_cmd *c = &recs[(*n)++];
	memset(c, 0, sizeof *c);
	c->type = type;
	c->err = FS_OK;
	return c;
}

static void create_sales(struct gen *g, struct fs_cmd *recs, uint32_t *n)
{
	for (uint32_t k = 0; k < g->sku_count; k++) {
		struct fs_cmd *c = next(recs, n, FS_CMD_SALE_CREATE);
		set_sku(c, k);
		c->sale.total = g->stock;
		c->sale.per_user = 2;
		c->sale.hold_ms = 120000;
		c->sale.waitlist_max = g->waitlist;
		c->sale.default_tier = 4;
		c->sale.price_cents = 1999;
		c->sale.opens_at_ms = k == 0 ? 0 : g->time_ms + 1000;
		c->out_status = FS_SALE_SCHEDULED;
		g->avail[k] = (int64_t)g->stock;
		c = next(recs, n, FS_CMD_SALE_OPEN);
		set_sku(c, k);
		c->out_status = FS_SALE_OPEN;
	}
	g->created = 1;
}

static void live_remove(struct gen *g, uint32_t i)
{
	g->live[i] = g->live[--g->live_count];
}

static uint32_t res_new(struct gen *g, uint32_t k, uint32_t q, uint8_t status)
{
	if (g->res_count == g->res_cap) {
		g->res_cap = g->res_cap ? g->res_cap * 2 : 1024;
		g->res = realloc(g->res, g->res_cap * sizeof *g->res);
		g->live = realloc(g->live, g->res_cap * sizeof *g->live);
		g->paying = realloc(g->paying, g->res_cap * sizeof *g->paying);
		g->paid = realloc(g->paid, g->res_cap * sizeof *g->paid);
		CHECK(g->res && g->live && g->paying && g->paid);
	}
	struct g_res *r = &g->res[g->res_count++];
	memset(r, 0, sizeof *r);
	r->sku = k;
	r->q = q;
	r->status = status;
	r->user = rnd(g, 5000);
	g->live[g->live_count++] = g->res_count;
	return g->res_count;
}

/* Emits PROMOTE records for the head of sku k's waitlist while units fit. */
static void promote(struct gen *g, uint32_t k, struct fs_cmd *recs, uint32_t *n)
{
	while (g->wait_len[k] > 0) {
		uint32_t no = g->wait[k][g->wait_head[k]];
		struct g_res *r = &g->res[no - 1];
		if (r->status == FS_RES_WAITLISTED && g->avail[k] < (int64_t)r->q)
			return;
		g->wait_head[k] = (g->wait_head[k] + 1) % GEN_WAIT_MAX;
		g->wait_len[k]--;
		if (r->status != FS_RES_WAITLISTED)
			continue;   /* cancelled while waiting */
		r->status = FS_RES_RESERVED;
		g->avail[k] -= r->q;
		struct fs_cmd *c = next(recs, n, FS_CMD_PROMOTE);
		c->ref = no;
		c->out_val = g->time_ms + 120000;
		c->out_status = FS_RES_RESERVED;
	}
}

static void do_reserve(struct gen *g, struct fs_cmd *recs, uint32_t *n)
{
	uint32_t k = rnd(g, g->sku_count), q = 1 + rnd(g, 2);
	uint8_t st;
	if (g->avail[k] >= (int64_t)q && g->wait_len[k] == 0)
		st = FS_RES_RESERVED;
	else if (g->wait_len[k] < g->waitlist)
		st = FS_RES_WAITLISTED;
	else
		return;   /* sold out: not journaled */
	uint32_t no = res_new(g, k, q, st);
	struct fs_cmd *c = next(recs, n, FS_CMD_RESERVE);
	set_sku(c, k);
	set_str(c->user, &c->user_len, "user-%llu", g->res[no - 1].user);
	set_str(c->key, &c->key_len, "idem-%llu", no);
	c->quantity = q;
	c->out_ref = no;
	c->out_status = st;
	if (st == FS_RES_RESERVED) {
		g->avail[k] -= q;
		c->out_val = g->time_ms + 120000;
	} else {
		uint32_t tail = (g->wait_head[k] + g->wait_len[k]) % GEN_WAIT_MAX;
		g->wait[k][tail] = no;
		g->wait_len[k]++;
	}
}

/* CANCEL (any live) or EXPIRE (RESERVED only) of a random live reservation. */
static void do_release(struct gen *g, struct fs_cmd *recs, uint32_t *n, uint8_t type)
{
	if (g->live_count == 0)
		return;
	uint32_t i = rnd(g, g->live_count), no = g->live[i];
	struct g_res *r = &g->res[no - 1];
	if (type == FS_CMD_EXPIRE && r->status != FS_RES_RESERVED)
		return;
	int held = r->status == FS_RES_RESERVED;
	live_remove(g, i);
	struct fs_cmd *c = next(recs, n, type);
	c->ref = no;
	if (type == FS_CMD_CANCEL)
		set_str(c->user, &c->user_len, "user-%llu", r->user);
	r->status = type == FS_CMD_CANCEL ? FS_RES_CANCELLED : FS_RES_EXPIRED;
	c->out_status = r->status;
	if (held) {
		g->avail[r->sku] += r->q;
		promote(g, r->sku, recs, n);
	}
}

static void do_checkout(struct gen *g, struct fs_cmd *recs, uint32_t *n)
{
	if (g->live_count == 0)
		return;
	uint32_t i = rnd(g, g->live_count), no = g->live[i];
	struct g_res *r = &g->res[no - 1];
	if (r->status != FS_RES_RESERVED)
		return;
	live_remove(g, i);
	r->status = FS_RES_PAYING;
	r->order = ++g->orders;
	g->paying[g->paying_count++] = no;
	struct fs_cmd *c = next(recs, n, FS_CMD_CHECKOUT);
	c->ref = no;
	set_str(c->user, &c->user_len, "user-%llu", r->user);
	set_str(c->key, &c->key_len, "pay-%llu", no);
	set_str(c->text, &c->text_len, "tok_ok_%llu", no);
	c->out_ref = r->order;
	c->out_val = (int64_t)r->q * 1999;
	c->out_status = FS_RES_PAYING;
}

static void do_pay(struct gen *g, struct fs_cmd *recs, uint32_t *n)
{
	if (g->paying_count == 0)
		return;
	uint32_t i = rnd(g, g->paying_count), no = g->paying[i];
	g->paying[i] = g->paying[--g->paying_count];
	struct g_res *r = &g->res[no - 1];
	int ok = rnd(g, 10) < 8;
	struct fs_cmd *c = next(recs, n, FS_CMD_PAY_RESULT);
	c->ref = r->order;
	c->pay = ok ? FS_PAY_OK : FS_PAY_DECLINED;
	r->status = ok ? FS_RES_CONFIRMED : FS_RES_FAILED;
	c->out_status = r->status;
	if (ok)
		g->paid[g->paid_count++] = no;
	if (!ok) {
		/* a reason with bytes that need escaping in COPY and arrays */
		const char *why = "card_declined\t\"x\"\\";
		fs_field_set(c->text, &c->text_len, FS_ID_LEN_MAX, why, strlen(why));
		g->avail[r->sku] += r->q;
		promote(g, r->sku, recs, n);
	}
}

/* flashctl order refund of a PAID order and the provider's outcome, in one
 * batch: refunded (the units back on sale with restock, else out of the
 * sale) or refused (PAID again). */
static void do_refund(struct gen *g, struct fs_cmd *recs, uint32_t *n)
{
	if (g->paid_count == 0)
		return;
	uint32_t i = rnd(g, g->paid_count), no = g->paid[i];
	struct g_res *r = &g->res[no - 1];
	int restock = (int)rnd(g, 2), ok = rnd(g, 10) < 8;
	struct fs_cmd *c = next(recs, n, FS_CMD_REFUND);
	set_sku(c, r->sku);
	set_str(c->key, &c->key_len, "uid:%llu", 1000ull);
	c->ref = r->order;
	c->quantity = (uint32_t)restock;
	c->out_status = FS_ORDER_REFUNDING;
	c->out_val = (int64_t)r->q * 1999;
	c = next(recs, n, FS_CMD_REFUND_RESULT);
	set_sku(c, r->sku);
	c->ref = r->order;
	c->pay = ok ? FS_PAY_OK : FS_PAY_DECLINED;
	c->quantity = r->q;
	c->out_val = restock;
	c->out_status = ok ? FS_ORDER_REFUNDED : FS_ORDER_PAID;
	const char *why = ok ? "refunded" : "card_declined";
	fs_field_set(c->text, &c->text_len, FS_ID_LEN_MAX, why, strlen(why));
	if (!ok)
		return;   /* still PAID: refundable again */
	g->paid[i] = g->paid[--g->paid_count];
	if (restock) {
		g->avail[r->sku] += r->q;
		promote(g, r->sku, recs, n);
	}
}

static void do_admin(struct gen *g, struct fs_cmd *recs, uint32_t *n)
{
	uint32_t k = rnd(g, g->sku_count);
	if (rnd(g, 2)) {
		struct fs_cmd *c = next(recs, n, FS_CMD_STOCK_ADD);
		set_sku(c, k);
		c->quantity = 3;
		g->avail[k] += 3;
		promote(g, k, recs, n);
		return;
	}
	struct fs_cmd *c = next(recs, n, FS_CMD_SALE_PAUSE);
	set_sku(c, k);
	c->out_status = FS_SALE_PAUSED;
	c = next(recs, n, FS_CMD_SALE_RESUME);
	set_sku(c, k);
	c->out_status = FS_SALE_OPEN;
}

uint32_t gen_batch(struct gen *g, struct fs_cmd *recs, uint32_t max)
{
	assert(max >= 4 * GEN_SKUS_MAX);
	uint32_t n = 0;
	g->time_ms += 7;
	if (!g->created)
		create_sales(g, recs, &n);
	uint32_t want = 1 + rnd(g, max / 2);
	while (n < want && n + 16 <= max) {
		uint32_t a = rnd(g, 100);
		if (a < 45)
			do_reserve(g, recs, &n);
		else if (a < 60)
			do_release(g, recs, &n, FS_CMD_CANCEL);
		else if (a < 70)
			do_release(g, recs, &n, FS_CMD_EXPIRE);
		else if (a < 85)
			do_checkout(g, recs, &n);
		else if (a < 96)
			do_pay(g, recs, &n);
		else if (a < 98)
			do_refund(g, recs, &n);
		else
			do_admin(g, recs, &n);
	}
	if (n == 0)
		do_admin(g, recs, &n);
	assert(n <= max);
	return n;
}

uint32_t gen_encode(const struct fs_cmd *recs, uint32_t n, uint8_t *body)
{
	uint32_t off = 0;
	for (uint32_t i = 0; i < n; i++)
		off += wr_rec_encode(&recs[i], body + off);
	return off;
}

uint64_t gen_journal(struct gen *g, const char *dir, uint32_t batches, uint32_t per_batch,
                     uint64_t *records_out)
{
	char err[512];
	struct jr_config cfg = {.dir = dir, .segment_bytes = 1u << 20, .no_sync = 1};
	struct journal *j = jr_open(&cfg, NULL, NULL, err, sizeof err);
	if (!j) {
		fprintf(stderr, "jr_open: %s\n", err);
		exit(1);
	}
	struct fs_cmd *recs = malloc(per_batch * sizeof *recs);
	uint8_t *body = malloc((size_t)per_batch * WR_REC_BYTES_MAX);
	CHECK(recs && body);
	uint64_t seq = jr_last_seq(j);
	for (uint32_t b = 0; b < batches; b++) {
		uint32_t n = gen_batch(g, recs, per_batch);
		uint32_t len = gen_encode(recs, n, body);
		seq = jr_append(j, g->time_ms, n, body, len);
		CHECK(seq != 0);
		if (records_out)
			*records_out += n;
	}
	jr_close(j);
	free(recs);
	free(body);
	return seq;
}

char *test_tmpdir(const char *tag)
{
	char tmpl[256];
	snprintf(tmpl, sizeof tmpl, "/tmp/fs-%s-XXXXXX", tag);
	char *d = mkdtemp(tmpl);
	CHECK(d != NULL);
	return strdup(d);
}

void test_rmdir(const char *dir)
{
	char cmd[600];
	assert(strncmp(dir, "/tmp/fs-", 8) == 0);
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	CHECK(system(cmd) == 0);
}

#ifdef SINK_HAVE_POSTGRES
const char *test_pg_base(void)
{
	const char *pg = getenv("FS_TEST_PG");
	if (!pg || !*pg) {
		printf("skipped: FS_TEST_PG is not set (a libpq conninfo of a PostgreSQL this test may create databases in)\n");
		fflush(stdout);
		exit(SKIP_EXIT);
	}
	return pg;
}

static void quiet(void *arg, const char *message)
{
	(void)arg;
	(void)message;
}

static PGconn *connect_db(const char *base, const char *dbname)
{
	const char *keys[] = {"dbname", "dbname", NULL};
	const char *vals[] = {base, dbname, NULL};
	PGconn *c = PQconnectdbParams(keys, vals, 1);
	if (PQstatus(c) != CONNECTION_OK) {
		fprintf(stderr, "connect %s: %s", dbname, PQerrorMessage(c));
		exit(1);
	}
	PQsetNoticeProcessor(c, quiet, NULL);
	return c;
}

PGconn *test_pg_fresh(const char *name, char *conninfo_out, size_t out_len)
{
	const char *base = test_pg_base();
	PGconn *admin = connect_db(base, "postgres");
	char sql[256];
	snprintf(sql, sizeof sql, "DROP DATABASE IF EXISTS %s WITH (FORCE)", name);
	PQclear(PQexec(admin, sql));
	snprintf(sql, sizeof sql, "CREATE DATABASE %s", name);
	PGresult *r = PQexec(admin, sql);
	if (PQresultStatus(r) != PGRES_COMMAND_OK) {
		fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
		exit(1);
	}
	PQclear(r);
	PQfinish(admin);
	PGconn *c = connect_db(base, name);
	/* A conninfo for child processes: the server's, with our database. */
	snprintf(conninfo_out, out_len, "host=%s port=%s user=%s dbname=%s", PQhost(c), PQport(c), PQuser(c), name);
	return c;
}

long long test_pg_int(PGconn *c, const char *sql)
{
	PGresult *r = PQexec(c, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		fprintf(stderr, "%s: %s", sql, PQresultErrorMessage(r));
		exit(1);
	}
	long long v = PQgetisnull(r, 0, 0) ? -1 : atoll(PQgetvalue(r, 0, 0));
	PQclear(r);
	return v;
}

char *test_pg_digest(PGconn *c)
{
	PGresult *r = PQexec(c,
		"SELECT (SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM sales t) || "
		"(SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM reservations t) || "
		"(SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM orders t) || "
		"(SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') FROM journal_events t)");
	CHECK(PQresultStatus(r) == PGRES_TUPLES_OK);
	char *d = strdup(PQgetvalue(r, 0, 0));
	PQclear(r);
	return d;
}
#endif
