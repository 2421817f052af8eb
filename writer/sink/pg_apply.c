/* pg_apply.c - one journal batch -> one PostgreSQL transaction (contract in
 * pg_apply.h, effects in writer/EVENTS.md).
 *
 * A batch is folded in memory first, so the database sees a handful of
 * statements per batch whatever its size:
 *   1. lock the consumer's cursor row; skip (seq <= cursor) or refuse a gap;
 *   2. find every reservation/order the batch refers to but did not create,
 *      and fetch them in two `= ANY($1)` queries;
 *   3. apply the records in order to those rows and to per-SKU deltas;
 *   4. COPY journal_events, new reservations and new orders; update changed
 *      old rows with one `UPDATE ... FROM unnest(...)` each; one statement
 *      per SKU touched; advance the cursor; COMMIT.
 * Strings from the journal are byte strings: bytes that are not valid UTF-8
 * (and NUL) are stored as '?', since PostgreSQL text must be UTF-8.
 */
#include "writer/sink/pg_apply.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "writer/sink/sink_model.h"   /* sm_tab only: the apply logic is independent */

#define PA_SKUS_MAX 4096u       /* distinct SKUs in one batch */

struct pa_buf {
	char *p;
	size_t len, cap;
};

struct pa_res {
	uint64_t no;               /* key */
	uint64_t order_no;
	int64_t  expires_at_ms;
	uint32_t quantity;
	uint32_t sku_slot;
	uint32_t rec;              /* RESERVE record index when is_new */
	uint8_t  status;
	uint8_t  is_new, known, dirty;
};

struct pa_order {
	uint64_t no;               /* key */
	uint64_t res_no;
	int64_t  amount_cents;
	int64_t  paid_at_ms;
	uint32_t rec;              /* CHECKOUT record index when is_new */
	uint32_t reason_rec;       /* PAY_RESULT record with the reason, UINT32_MAX if none */
	uint8_t  status;
	uint8_t  is_new, known, dirty;
};

struct pa_sku {
	char     sku[FS_SKU_LEN_MAX + 1];
	uint8_t  sku_len;
	uint8_t  created, state_set, state;
	uint8_t  archived;         /* FS_CMD_SALE_ARCHIVE: the row moves to sales_archive */
	uint32_t create_rec;
	uint64_t version;          /* seq of the last batch of the run that touched it */
	int64_t  d_total, d_available, d_reserved, d_sold;
};

struct pg_apply {
	struct sm_tab res;         /* struct pa_res */
	struct sm_tab orders;      /* struct pa_order */
	struct pa_sku *skus;
	uint32_t sku_count;
	uint32_t *rec_sku;         /* per record: SKU slot, PA_NO_SKU, or UINT32_MAX */
	uint32_t rec_cap;
	struct pa_buf buf, arr[4];
	uint64_t last_rows;
	const struct fs_cmd *recs;
	uint64_t seq;              /* the (last) batch applied */
	int64_t time_ms;
	/* a run of several batches (pg_apply_run): each record's batch seq,
	 * batch time and index in its batch; NULL for one batch (seq, time_ms, i) */
	const uint64_t *rec_seq_v;
	const int64_t *rec_time_v;
	const uint32_t *rec_idx_v;
	char shard[FS_SHARD_LABEL_LEN_MAX + 1];  /* every row's shard column ("" without --shard) */
	uint32_t appliance;        /* ids are written with it and ... */
	uint32_t writer;           /* ... this writer shard (common/fs_shard.h) */
};

/* Record i's batch seq, batch time and index in its batch. */
static uint64_t rec_seq(const struct pg_apply *a, uint32_t i) { return a->rec_seq_v ? a->rec_seq_v[i] : a->seq; }
static int64_t rec_time(const struct pg_apply *a, uint32_t i) { return a->rec_time_v ? a->rec_time_v[i] : a->time_ms; }
static uint32_t rec_idx(const struct pg_apply *a, uint32_t i) { return a->rec_idx_v ? a->rec_idx_v[i] : i; }

/* ---------------------------------------------------------------- buffers */

static int buf_reserve(struct pa_buf *b, size_t more)
{
	if (b->len + more + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < b->len + more + 1)
		cap *= 2;
	char *p = realloc(b->p, cap);
	if (!p)
		return -1;
	b->p = p;
	b->cap = cap;
	return 0;
}

static void buf_putc(struct pa_buf *b, char ch)
{
	if (buf_reserve(b, 1) == 0)
		b->p[b->len++] = ch;
}

static void buf_puts(struct pa_buf *b, const char *s)
{
	size_t n = strlen(s);
	if (buf_reserve(b, n) == 0) {
		memcpy(b->p + b->len, s, n);
		b->len += n;
	}
}

static void buf_printf(struct pa_buf *b, const char *fmt, ...)
{
	char tmp[128];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	assert(n >= 0 && (size_t)n < sizeof tmp);
	buf_puts(b, tmp);
}

/* Length of the valid UTF-8 sequence at s (1..4), or 0 when invalid/NUL. */
static size_t utf8_seq(const uint8_t *s, size_t len)
{
	if (s[0] == 0)
		return 0;
	if (s[0] < 0x80)
		return 1;
	size_t n = s[0] >= 0xf0 && s[0] <= 0xf4 ? 4 : s[0] >= 0xe0 ? 3 : s[0] >= 0xc2 && s[0] < 0xe0 ? 2 : 0;
	if (n == 0 || n > len)
		return 0;
	for (size_t i = 1; i < n; i++)
		if ((s[i] & 0xc0) != 0x80)
			return 0;
	return n;
}

/* Appends a byte string escaped for COPY text format (quote = 0) or for a
 * double-quoted array element (quote = 1). */
static void buf_text(struct pa_buf *b, const char *str, size_t len, int quote)
{
	const uint8_t *s = (const uint8_t *)str;
	for (size_t i = 0; i < len;) {
		size_t n = utf8_seq(s + i, len - i);
		if (n == 0) {
			buf_putc(b, '?');
			i++;
			continue;
		}
		if (n > 1) {
			for (size_t k = 0; k < n; k++)
				buf_putc(b, (char)s[i + k]);
			i += n;
			continue;
		}
		char ch = (char)s[i++];
		if (!quote && (ch == '\\' || ch == '\t' || ch == '\n' || ch == '\r')) {
			buf_putc(b, '\\');
			ch = ch == '\t' ? 't' : ch == '\n' ? 'n' : ch == '\r' ? 'r' : '\\';
		} else if (quote && (ch == '\\' || ch == '"')) {
			buf_putc(b, '\\');
		}
		buf_putc(b, ch);
	}
}

static void buf_ts(struct pa_buf *b, int64_t ms)
{
	time_t sec = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&sec, &tm);
	buf_printf(b, "%04d-%02d-%02d %02d:%02d:%02d.%03d+00", tm.tm_year + 1900, tm.tm_mon + 1,
	           tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ms % 1000));
}

/* The public id of the journal's (local) number: the one clients were
 * given (dataplane/pubid.h), so rows of several appliances and writer
 * shards never collide. */
static void buf_pubid(const struct pg_apply *a, struct pa_buf *b, char prefix, uint64_t no)
{
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, prefix, fs_id_compose(a->appliance, a->writer, no));
	buf_puts(b, id);
}

/* COPY text helpers: a field separator and NULL. */
static void col(struct pa_buf *b) { buf_putc(b, '\t'); }
static void null_field(struct pa_buf *b) { buf_puts(b, "\\N"); }

/* ------------------------------------------------------------ allocation */

struct pg_apply *pg_apply_new(void)
{
	struct pg_apply *a = calloc(1, sizeof *a);
	if (!a)
		return NULL;
	a->skus = calloc(PA_SKUS_MAX, sizeof *a->skus);
	if (!a->skus || sm_tab_init(&a->res, sizeof(struct pa_res), 4096) != 0 ||
	    sm_tab_init(&a->orders, sizeof(struct pa_order), 1024) != 0) {
		pg_apply_free(a);
		return NULL;
	}
	return a;
}

void pg_apply_set_shard(struct pg_apply *a, const char *shard, uint32_t appliance, uint32_t writer)
{
	assert(a != NULL && shard != NULL && strlen(shard) <= FS_SHARD_LABEL_LEN_MAX);
	assert(appliance < FS_SHARD_APPLIANCES_MAX && writer < FS_SHARD_WRITERS_MAX);
	memcpy(a->shard, shard, strlen(shard) + 1);
	a->appliance = appliance;
	a->writer = writer;
}

void pg_apply_free(struct pg_apply *a)
{
	if (!a)
		return;
	sm_tab_free(&a->res);
	sm_tab_free(&a->orders);
	free(a->skus);
	free(a->rec_sku);
	free(a->buf.p);
	for (int i = 0; i < 4; i++)
		free(a->arr[i].p);
	free(a);
}

uint64_t pg_apply_last_rows(const struct pg_apply *a)
{
	return a->last_rows;
}

/* Empties the per-batch tables, shrinking tables a huge batch inflated. */
static int reset_batch(struct pg_apply *a, uint32_t n)
{
	if (a->res.count || a->res.cap > 4096) {
		sm_tab_free(&a->res);
		if (sm_tab_init(&a->res, sizeof(struct pa_res), 4096) != 0)
			return -1;
	}
	if (a->orders.count || a->orders.cap > 1024) {
		sm_tab_free(&a->orders);
		if (sm_tab_init(&a->orders, sizeof(struct pa_order), 1024) != 0)
			return -1;
	}
	a->sku_count = 0;
	if (n > a->rec_cap) {
		uint32_t *p = realloc(a->rec_sku, (size_t)n * sizeof *p);
		if (!p)
			return -1;
		a->rec_sku = p;
		a->rec_cap = n;
	}
	return 0;
}

/* --------------------------------------------------------------- database */

static void set_err(char *err, size_t err_len, const char *what, const char *detail)
{
	snprintf(err, err_len, "%s: %s", what, detail ? detail : "");
	size_t n = strlen(err);
	while (n > 0 && (err[n - 1] == '\n' || err[n - 1] == ' '))
		err[--n] = 0;
}

static void rollback(PGconn *c)
{
	if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
		PQclear(PQexec(c, "ROLLBACK"));
}

/* Runs a command expecting `want`; on failure fills err and returns -1. */
/* The SQLSTATE of the last failed command on this thread ("" when the
 * failure had no server answer): see pg_apply_rejected(). */
static _Thread_local char last_sqlstate[6];

int pg_apply_rejected(void)
{
	/* class 22 data exception (e.g. 22021 bytes that are not UTF-8),
	 * class 23 integrity constraint violation: the same rows fail again */
	return (last_sqlstate[0] == '2' && (last_sqlstate[1] == '2' || last_sqlstate[1] == '3'));
}

static int exec_ok(PGconn *c, PGresult *r, ExecStatusType want, const char *what,
                   char *err, size_t err_len)
{
	int ok = r && PQresultStatus(r) == want;
	if (!ok) {
		const char *st = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
		snprintf(last_sqlstate, sizeof last_sqlstate, "%s", st ? st : "");
	}
	if (!ok)
		set_err(err, err_len, what, r ? PQresultErrorMessage(r) : PQerrorMessage(c));
	PQclear(r);
	return ok ? 0 : -1;
}

static int exec_params(PGconn *c, const char *sql, int n, const char *const *v,
                       const char *what, char *err, size_t err_len)
{
	PGresult *r = PQexecParams(c, sql, n, NULL, v, NULL, NULL, 0);
	return exec_ok(c, r, PGRES_COMMAND_OK, what, err, err_len);
}

static int copy_in(PGconn *c, const char *sql, const struct pa_buf *b, char *err, size_t err_len)
{
	PGresult *r = PQexec(c, sql);
	if (exec_ok(c, r, PGRES_COPY_IN, sql, err, err_len) != 0)
		return -1;
	int ok = PQputCopyData(c, b->p, (int)b->len) == 1 && PQputCopyEnd(c, NULL) == 1;
	PGresult *done = PQgetResult(c);
	if (!ok) {
		set_err(err, err_len, "copy", PQerrorMessage(c));
		PQclear(done);
		while ((done = PQgetResult(c)) != NULL)
			PQclear(done);
		return -1;
	}
	int rc = exec_ok(c, done, PGRES_COMMAND_OK, sql, err, err_len);
	while ((done = PQgetResult(c)) != NULL)
		PQclear(done);
	return rc;
}

int pg_cursor_get(PGconn *c, const char *name, uint64_t *seq, char *err, size_t err_len)
{
	const char *v[1] = {name};
	if (exec_params(c, "INSERT INTO sink_cursor (name, seq) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
	                1, v, "cursor insert", err, err_len) != 0)
		return -1;
	PGresult *r = PQexecParams(c, "SELECT seq FROM sink_cursor WHERE name = $1", 1, NULL, v, NULL, NULL, 0);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		set_err(err, err_len, "cursor select", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
		PQclear(r);
		return -1;
	}
	*seq = strtoull(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return 0;
}

/* Locks the cursor row inside the open transaction. Returns its seq or -1. */
static int64_t cursor_lock(PGconn *c, const char *name, char *err, size_t err_len)
{
	const char *v[1] = {name};
	if (exec_params(c, "INSERT INTO sink_cursor (name, seq) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING",
	                1, v, "cursor insert", err, err_len) != 0)
		return -1;
	PGresult *r = PQexecParams(c, "SELECT seq FROM sink_cursor WHERE name = $1 FOR UPDATE", 1, NULL, v,
	                           NULL, NULL, 0);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
		set_err(err, err_len, "cursor lock", r ? PQresultErrorMessage(r) : PQerrorMessage(c));
		PQclear(r);
		return -1;
	}
	int64_t seq = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	return seq;
}

/* ------------------------------------------------------- folding a batch */

static uint8_t status_parse(const char *s, int order)
{
	for (uint8_t i = 0; i < (order ? FS_ORDER_REFUNDED + 1 : FS_RES_STATUS_COUNT); i++) {
		const char *name = order ? fs_order_status_name(i) : fs_res_status_name(i);
		if (strcmp(s, name) == 0)
			return i;
	}
	return 0;
}

/* Slot of a SKU in the batch's SKU table (added when missing), or UINT32_MAX. */
static uint32_t sku_slot(struct pg_apply *a, const char *sku, size_t len)
{
	assert(len <= FS_SKU_LEN_MAX);
	for (uint32_t i = 0; i < a->sku_count; i++)   /* an archived one is another sale of the name */
		if (a->skus[i].sku_len == len && !a->skus[i].archived && memcmp(a->skus[i].sku, sku, len) == 0)
			return i;
	if (a->sku_count == PA_SKUS_MAX)
		return UINT32_MAX;
	struct pa_sku *s = &a->skus[a->sku_count];
	memset(s, 0, sizeof *s);
	memcpy(s->sku, sku, len);
	s->sku_len = (uint8_t)len;
	return a->sku_count++;
}

static int refers_to_res(uint8_t type)
{
	return type == FS_CMD_CANCEL || type == FS_CMD_EXPIRE || type == FS_CMD_PROMOTE ||
	       type == FS_CMD_CHECKOUT || type == FS_CMD_ADMIT;
}

/* Pass 1: registers rows the batch creates and rows it needs from the
 * database (known = 0). Returns 0 or -1 (out of memory). */
static int collect(struct pg_apply *a, const struct fs_cmd *recs, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &recs[i];
		if (c->type == FS_CMD_RESERVE && c->out_ref) {
			struct pa_res *r = sm_tab_upsert(&a->res, c->out_ref);
			if (!r)
				return -1;
			r->is_new = r->known = 1;
			r->rec = i;
		} else if (refers_to_res(c->type) && c->ref && !sm_tab_find(&a->res, c->ref)) {
			if (!sm_tab_upsert(&a->res, c->ref))
				return -1;
		}
		if (c->type == FS_CMD_CHECKOUT && c->out_ref) {
			struct pa_order *o = sm_tab_upsert(&a->orders, c->out_ref);
			if (!o)
				return -1;
			o->is_new = o->known = 1;
			o->rec = i;
		} else if ((c->type == FS_CMD_PAY_RESULT || c->type == FS_CMD_REFUND || c->type == FS_CMD_REFUND_RESULT) &&
		           c->ref && !sm_tab_find(&a->orders, c->ref)) {
			if (!sm_tab_upsert(&a->orders, c->ref))
				return -1;
		}
	}
	return 0;
}

/* The journal's number of a row's id (the rows fetched are the ones asked
 * for, so they carry this apply's appliance). */
static uint64_t id_local(const char *id, char prefix)
{
	return fs_id_local(fs_pubid_parse(id, FS_PUBID_LEN, prefix));
}

/* Builds "{"id","id",...}" of the ids of unknown rows. Returns the count. */
static size_t unknown_ids(const struct pg_apply *a, const struct sm_tab *t, int order, struct pa_buf *out)
{
	size_t count = 0;
	out->len = 0;
	buf_putc(out, '{');
	for (size_t i = 0; i < t->cap; i++) {
		const uint8_t *e = sm_tab_slot(t, i);
		if (!e)
			continue;
		int known = order ? ((const struct pa_order *)e)->known : ((const struct pa_res *)e)->known;
		if (known)
			continue;
		if (count++)
			buf_putc(out, ',');
		buf_pubid(a, out, order ? 'o' : 'r', ((const struct pa_res *)e)->no);
	}
	buf_putc(out, '}');
	out->p[out->len] = 0;
	return count;
}

static int fetch_orders(struct pg_apply *a, PGconn *c, char *err, size_t err_len)
{
	if (unknown_ids(a, &a->orders, 1, &a->arr[0]) == 0)
		return 0;
	const char *v[1] = {a->arr[0].p};
	PGresult *r = PQexecParams(c, "SELECT order_id, reservation_id, status, amount_cents FROM orders "
	                              "WHERE order_id = ANY($1::text[])", 1, NULL, v, NULL, NULL, 0);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
		return exec_ok(c, r, PGRES_TUPLES_OK, "fetch orders", err, err_len);
	for (int i = 0; i < PQntuples(r); i++) {
		struct pa_order *o = sm_tab_find(&a->orders, id_local(PQgetvalue(r, i, 0), 'o'));
		uint64_t res_no = id_local(PQgetvalue(r, i, 1), 'r');
		if (!o || res_no == 0)
			continue;
		o->known = 1;
		o->res_no = res_no;
		o->status = status_parse(PQgetvalue(r, i, 2), 1);
		o->amount_cents = strtoll(PQgetvalue(r, i, 3), NULL, 10);
		o->reason_rec = UINT32_MAX;
		if (!sm_tab_find(&a->res, res_no) && !sm_tab_upsert(&a->res, res_no)) {
			PQclear(r);
			set_err(err, err_len, "fetch orders", "out of memory");
			return -1;
		}
	}
	PQclear(r);
	return 0;
}

static int fetch_res(struct pg_apply *a, PGconn *c, char *err, size_t err_len)
{
	if (unknown_ids(a, &a->res, 0, &a->arr[0]) == 0)
		return 0;
	const char *v[1] = {a->arr[0].p};
	PGresult *r = PQexecParams(c,
		"SELECT reservation_id, sku, quantity, status, order_id, "
		"(extract(epoch FROM expires_at) * 1000)::bigint FROM reservations "
		"WHERE reservation_id = ANY($1::text[])", 1, NULL, v, NULL, NULL, 0);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK)
		return exec_ok(c, r, PGRES_TUPLES_OK, "fetch reservations", err, err_len);
	for (int i = 0; i < PQntuples(r); i++) {
		struct pa_res *x = sm_tab_find(&a->res, id_local(PQgetvalue(r, i, 0), 'r'));
		const char *sku = PQgetvalue(r, i, 1);
		if (!x || strlen(sku) > FS_SKU_LEN_MAX)
			continue;
		x->sku_slot = sku_slot(a, sku, strlen(sku));
		if (x->sku_slot == UINT32_MAX)
			break;
		x->known = 1;
		x->quantity = (uint32_t)strtoul(PQgetvalue(r, i, 2), NULL, 10);
		x->status = status_parse(PQgetvalue(r, i, 3), 0);
		x->order_no = PQgetisnull(r, i, 4) ? 0 : id_local(PQgetvalue(r, i, 4), 'o');
		x->expires_at_ms = PQgetisnull(r, i, 5) ? 0 : strtoll(PQgetvalue(r, i, 5), NULL, 10);
	}
	PQclear(r);
	return 0;
}

/* Moves q units: how = 1 hold, -1 release, 2 sell. */
static void units(struct pa_sku *s, int64_t q, int how)
{
	if (how == 1) {
		s->d_available -= q;
		s->d_reserved += q;
	} else if (how == -1) {
		s->d_available += q;
		s->d_reserved -= q;
	} else {
		s->d_reserved -= q;
		s->d_sold += q;
	}
}

/* Pass 2 helpers: each returns the SKU slot touched or UINT32_MAX when the
 * record does not fit the rows (data error). */
static uint32_t fold_sku_cmd(struct pg_apply *a, const struct fs_cmd *c, uint32_t i)
{
	uint32_t k = sku_slot(a, c->sku, c->sku_len);
	if (k == UINT32_MAX)
		return k;
	struct pa_sku *s = &a->skus[k];
	if (c->type == FS_CMD_SALE_CREATE) {
		s->created = 1;
		s->create_rec = i;
		s->d_total += (int64_t)c->sale.total;
		s->d_available += (int64_t)c->sale.total;
	} else if (c->type == FS_CMD_STOCK_ADD) {
		s->d_total += c->quantity;
		s->d_available += c->quantity;
		return k;
	} else if (c->type == FS_CMD_STOCK_REMOVE) {
		s->d_total -= c->quantity;
		s->d_available -= c->quantity;
		return k;
	} else if (c->type == FS_CMD_SALE_ARCHIVE) {
		s->archived = 1;
		return k;
	}
	s->state_set = 1;
	s->state = c->out_status;
	return k;
}

static uint32_t fold_reserve(struct pg_apply *a, const struct fs_cmd *c)
{
	struct pa_res *r = sm_tab_find(&a->res, c->out_ref);
	uint32_t k = sku_slot(a, c->sku, c->sku_len);
	if (!r || k == UINT32_MAX)
		return UINT32_MAX;
	r->sku_slot = k;
	r->quantity = c->quantity;
	r->status = c->out_status == FS_RES_WAITLISTED || c->out_status == FS_RES_QUEUED ?
	            c->out_status : FS_RES_RESERVED;
	if (r->status == FS_RES_RESERVED) {
		r->expires_at_ms = c->out_val;
		units(&a->skus[k], r->quantity, 1);
	}
	return k;
}

static uint32_t fold_res_change(struct pg_apply *a, const struct fs_cmd *c)
{
	struct pa_res *r = sm_tab_find(&a->res, c->ref);
	if (!r || !r->known)
		return UINT32_MAX;
	struct pa_sku *s = &a->skus[r->sku_slot];
	if (c->type == FS_CMD_PROMOTE || (c->type == FS_CMD_ADMIT && c->out_status == FS_RES_RESERVED)) {
		r->status = FS_RES_RESERVED;
		r->expires_at_ms = c->out_val;
		units(s, r->quantity, 1);
	} else if (c->type == FS_CMD_ADMIT) {
		r->status = c->out_status;   /* WAITLISTED or REJECTED: no units */
	} else if (c->type == FS_CMD_CANCEL) {
		if (r->status == FS_RES_RESERVED)
			units(s, r->quantity, -1);
		r->status = FS_RES_CANCELLED;
	} else {   /* EXPIRE: a hold, or a closed sale's waitlisted / queued entry (no units) */
		if (r->status == FS_RES_RESERVED)
			units(s, r->quantity, -1);
		r->status = FS_RES_EXPIRED;
	}
	r->dirty = 1;
	return r->sku_slot;
}

static uint32_t fold_checkout(struct pg_apply *a, const struct fs_cmd *c)
{
	struct pa_res *r = sm_tab_find(&a->res, c->ref);
	struct pa_order *o = sm_tab_find(&a->orders, c->out_ref);
	if (!r || !r->known || !o)
		return UINT32_MAX;
	r->status = FS_RES_PAYING;
	r->order_no = c->out_ref;
	r->dirty = 1;
	o->res_no = r->no;
	o->amount_cents = c->out_val;
	o->status = FS_ORDER_PENDING;
	o->reason_rec = UINT32_MAX;
	return r->sku_slot;
}

static uint32_t fold_pay_result(struct pg_apply *a, const struct fs_cmd *c, uint32_t i)
{
	struct pa_order *o = sm_tab_find(&a->orders, c->ref);
	struct pa_res *r = o && o->known ? sm_tab_find(&a->res, o->res_no) : NULL;
	if (!r || !r->known)
		return UINT32_MAX;
	struct pa_sku *s = &a->skus[r->sku_slot];
	if (c->pay == FS_PAY_OK) {
		o->status = FS_ORDER_PAID;
		o->paid_at_ms = rec_time(a, i);
		r->status = FS_RES_CONFIRMED;
		units(s, r->quantity, 2);
	} else {
		o->status = FS_ORDER_FAILED;
		o->reason_rec = i;
		r->status = FS_RES_FAILED;
		units(s, r->quantity, -1);
	}
	o->dirty = r->dirty = 1;
	return r->sku_slot;
}

/* REFUND: PAID -> REFUNDING. REFUND_RESULT: refunded, the units leave
 * `sold` (back to available when out_val says restock, else out of total),
 * or refused (PAID again). The record carries the SKU and the quantity. */
static uint32_t fold_refund(struct pg_apply *a, const struct fs_cmd *c)
{
	struct pa_order *o = sm_tab_find(&a->orders, c->ref);
	uint32_t k = sku_slot(a, c->sku, c->sku_len);
	uint8_t want = c->type == FS_CMD_REFUND ? FS_ORDER_PAID : FS_ORDER_REFUNDING;
	if (!o || !o->known || o->status != want || k == UINT32_MAX)
		return UINT32_MAX;
	if (c->type == FS_CMD_REFUND_RESULT && c->pay == FS_PAY_OK) {
		struct pa_sku *s = &a->skus[k];
		s->d_sold -= c->quantity;
		if (c->out_val)
			s->d_available += c->quantity;
		else
			s->d_total -= c->quantity;
	}
	o->status = c->out_status;
	o->dirty = 1;
	return k;
}

/* fold_record: a record that changes no row (its event row has no SKU). */
#define PA_NO_SKU (UINT32_MAX - 1)

static uint32_t fold_record(struct pg_apply *a, const struct fs_cmd *c, uint32_t i)
{
	switch (c->type) {
	case FS_CMD_RECLAIM: case FS_CMD_RISK_FLAG:
		return PA_NO_SKU;   /* the writer forgot ended rows / lowered a tier: the tables keep them */
	case FS_CMD_SALE_CREATE: case FS_CMD_SALE_OPEN: case FS_CMD_SALE_PAUSE:
	case FS_CMD_SALE_FREEZE: case FS_CMD_SALE_RESUME: case FS_CMD_SALE_CLOSE:
	case FS_CMD_STOCK_ADD: case FS_CMD_STOCK_REMOVE: case FS_CMD_SALE_ARCHIVE:
		return fold_sku_cmd(a, c, i);
	case FS_CMD_RESERVE:
		return fold_reserve(a, c);
	case FS_CMD_PROMOTE: case FS_CMD_CANCEL: case FS_CMD_EXPIRE: case FS_CMD_ADMIT:
		return fold_res_change(a, c);
	case FS_CMD_WAITLIST_SERVE: case FS_CMD_WAITROOM_SERVE:
		return sku_slot(a, c->sku, c->sku_len);   /* their effect is in the records after them */
	case FS_CMD_CHECKOUT:
		return fold_checkout(a, c);
	case FS_CMD_PAY_RESULT:
		return fold_pay_result(a, c, i);
	case FS_CMD_REFUND: case FS_CMD_REFUND_RESULT:
		return fold_refund(a, c);
	default:
		return UINT32_MAX;
	}
}

static int fold(struct pg_apply *a, const struct fs_cmd *recs, uint32_t n, char *err, size_t err_len)
{
	for (uint32_t i = 0; i < n; i++) {
		a->rec_sku[i] = fold_record(a, &recs[i], i);
		if (a->rec_sku[i] < a->sku_count)
			a->skus[a->rec_sku[i]].version = rec_seq(a, i);
		if (a->rec_sku[i] == UINT32_MAX) {
			char what[96];
			snprintf(what, sizeof what, "seq %" PRIu64 " record %u (%s)", rec_seq(a, i), rec_idx(a, i),
			         fs_cmd_type_name(recs[i].type));
			set_err(err, err_len, what, "refers to an unknown reservation/order/sku");
			return -1;
		}
	}
	return 0;
}

/* ------------------------------------------------------------ writing */

static const char *out_status_name(const struct fs_cmd *c)
{
	if ((c->type >= FS_CMD_SALE_CREATE && c->type <= FS_CMD_SALE_CLOSE) || c->type == FS_CMD_SALE_ARCHIVE)
		return fs_sale_state_name(c->out_status);
	if (c->type == FS_CMD_STOCK_ADD || c->type == FS_CMD_STOCK_REMOVE || c->out_status == 0)
		return NULL;
	if (c->type == FS_CMD_REFUND || c->type == FS_CMD_REFUND_RESULT)
		return fs_order_status_name(c->out_status);
	return fs_res_status_name(c->out_status);
}

static void event_row(struct pg_apply *a, struct pa_buf *b, const struct fs_cmd *c, uint32_t i)
{
	const struct pa_sku *s = a->rec_sku[i] == PA_NO_SKU ? NULL : &a->skus[a->rec_sku[i]];
	buf_printf(b, "%" PRIu64 "\t%u\t", rec_seq(a, i), rec_idx(a, i));
	buf_ts(b, rec_time(a, i));
	col(b);
	buf_puts(b, fs_cmd_type_name(c->type));
	col(b);
	if (c->user_len) buf_text(b, c->user, c->user_len, 0); else null_field(b);
	col(b);
	if (s) buf_text(b, s->sku, s->sku_len, 0); else null_field(b);
	col(b);
	if (c->key_len) buf_text(b, c->key, c->key_len, 0); else null_field(b);
	col(b);
	int order_ref = c->type == FS_CMD_PAY_RESULT || c->type == FS_CMD_REFUND || c->type == FS_CMD_REFUND_RESULT;
	if (c->ref) buf_pubid(a, b, order_ref ? 'o' : 'r', c->ref); else null_field(b);
	buf_printf(b, "\t%u\t", c->quantity);
	if (c->out_ref) buf_pubid(a, b, c->type == FS_CMD_CHECKOUT || c->type == FS_CMD_RECLAIM ? 'o' : 'r', c->out_ref);
	else null_field(b);
	col(b);
	const char *st = out_status_name(c);
	if (st) buf_puts(b, st); else null_field(b);
	buf_printf(b, "\t%" PRId64 "\t%u\t", c->out_val, c->pay);
	int detail = c->text_len && (c->type == FS_CMD_PAY_RESULT || c->type == FS_CMD_SALE_FREEZE ||
	                             c->type == FS_CMD_REFUND_RESULT);
	if (detail) buf_text(b, c->text, c->text_len, 0); else null_field(b);
	col(b);
	buf_puts(b, a->shard);
	buf_putc(b, '\n');
}

static int write_events(struct pg_apply *a, PGconn *c, const struct fs_cmd *recs, uint32_t n,
                        char *err, size_t err_len)
{
	a->buf.len = 0;
	for (uint32_t i = 0; i < n; i++)
		event_row(a, &a->buf, &recs[i], i);
	if (buf_reserve(&a->buf, 0) != 0) {
		set_err(err, err_len, "events", "out of memory");
		return -1;
	}
	return copy_in(c, "COPY journal_events (seq, idx, batch_time, type, user_id, sku, idempotency_key, "
	                  "ref, quantity, out_ref, out_status, out_val, pay, detail, shard) FROM STDIN", &a->buf,
	               err, err_len);
}

static int write_sku(struct pg_apply *a, PGconn *c, const struct pa_sku *s, char *err, size_t err_len)
{
	char v_num[12][24];
	char sku[FS_SKU_LEN_MAX + 1];
	memcpy(sku, s->sku, s->sku_len);
	sku[s->sku_len] = 0;
	snprintf(v_num[0], 24, "%" PRId64, s->d_total);
	snprintf(v_num[1], 24, "%" PRId64, s->d_available);
	snprintf(v_num[2], 24, "%" PRId64, s->d_reserved);
	snprintf(v_num[3], 24, "%" PRId64, s->d_sold);
	snprintf(v_num[4], 24, "%" PRIu64, s->version);
	const char *state = s->state_set ? fs_sale_state_name(s->state) : NULL;
	if (!s->created) {
		const char *v[7] = {sku, state, v_num[0], v_num[1], v_num[2], v_num[3], v_num[4]};
		PGresult *r = PQexecParams(c, "UPDATE sales SET state = COALESCE($2, state), total = total + $3, "
		                              "available = available + $4, reserved = reserved + $5, "
		                              "sold = sold + $6, version = $7 WHERE sku = $1",
		                           7, NULL, v, NULL, NULL, 0);
		int found = r && strcmp(PQcmdTuples(r), "1") == 0;
		if (exec_ok(c, r, PGRES_COMMAND_OK, "update sales", err, err_len) != 0)
			return -1;
		if (!found)
			set_err(err, err_len, "update sales", "unknown sku");
		return found ? 0 : -1;
	}
	const struct fs_sale_args *g = &a->recs[s->create_rec].sale;
	snprintf(v_num[5], 24, "%u", g->per_user);
	snprintf(v_num[6], 24, "%u", g->hold_ms);
	snprintf(v_num[7], 24, "%u", g->waitlist_max);
	snprintf(v_num[8], 24, "%u", g->default_tier);
	snprintf(v_num[9], 24, "%" PRId64, g->price_cents);
	snprintf(v_num[10], 24, "%" PRId64, g->opens_at_ms);
	const char *v[14] = {sku, state, v_num[0], v_num[1], v_num[2], v_num[3], v_num[5], v_num[6],
	                     v_num[7], v_num[8], v_num[9], g->opens_at_ms ? v_num[10] : NULL, v_num[4], a->shard};
	return exec_params(c, "INSERT INTO sales (sku, state, total, available, reserved, sold, per_user, "
	                      "hold_ms, waitlist_max, default_tier, price_cents, opens_at, version, shard) VALUES "
	                      "($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, "
	                      "timestamptz 'epoch' + $12::bigint * interval '1 millisecond', $13, $14)",
	                   14, v, "insert sales", err, err_len);
}

/* An archived sale's row leaves `sales` for `sales_archive` (stamped with
 * the batch that archived it: its version), so its name can be created
 * again. Slots are written in the order the run met them: an archived
 * sale's before a new sale of the same name. */
static int archive_sku(PGconn *c, const struct pa_sku *s, char *err, size_t err_len)
{
	char sku[FS_SKU_LEN_MAX + 1], seq[24];
	memcpy(sku, s->sku, s->sku_len);
	sku[s->sku_len] = 0;
	snprintf(seq, sizeof seq, "%" PRIu64, s->version);
	const char *v[2] = {sku, seq};
	if (exec_params(c, "INSERT INTO sales_archive SELECT s.*, $2::bigint FROM sales s WHERE s.sku = $1",
	                2, v, "archive sale", err, err_len) != 0)
		return -1;
	return exec_params(c, "DELETE FROM sales WHERE sku = $1", 1, v, "archive sale", err, err_len);
}

static int write_skus(struct pg_apply *a, PGconn *c, char *err, size_t err_len)
{
	for (uint32_t k = 0; k < a->sku_count; k++) {
		if (write_sku(a, c, &a->skus[k], err, err_len) != 0)
			return -1;
		if (a->skus[k].archived && archive_sku(c, &a->skus[k], err, err_len) != 0)
			return -1;
	}
	return 0;
}

static void res_row(struct pg_apply *a, struct pa_buf *b, const struct pa_res *r)
{
	const struct fs_cmd *c = &a->recs[r->rec];
	const struct pa_sku *s = &a->skus[r->sku_slot];
	buf_pubid(a, b, 'r', r->no);
	col(b);
	buf_text(b, s->sku, s->sku_len, 0);
	col(b);
	buf_text(b, c->user, c->user_len, 0);
	buf_printf(b, "\t%u\t%s\t", r->quantity, fs_res_status_name(r->status));
	if (r->expires_at_ms) buf_ts(b, r->expires_at_ms); else null_field(b);
	col(b);
	if (c->key_len) buf_text(b, c->key, c->key_len, 0); else null_field(b);
	col(b);
	if (r->order_no) buf_pubid(a, b, 'o', r->order_no); else null_field(b);
	buf_printf(b, "\t%" PRIu64 "\t%s\n", rec_seq(a, r->rec), a->shard);
}

/* Appends one element to an array literal under construction. */
static void arr_add(struct pa_buf *b, const char *s, size_t len)
{
	buf_putc(b, b->len == 0 ? '{' : ',');
	if (!s) {
		buf_puts(b, "NULL");
		return;
	}
	buf_putc(b, '"');
	buf_text(b, s, len, 1);
	buf_putc(b, '"');
}

static void arr_id(const struct pg_apply *a, struct pa_buf *b, char prefix, uint64_t no)
{
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, prefix, fs_id_compose(a->appliance, a->writer, no));
	arr_add(b, no ? id : NULL, FS_PUBID_LEN);
}

static void arr_i64(struct pa_buf *b, int64_t v, int is_null)
{
	char tmp[24];
	int n = snprintf(tmp, sizeof tmp, "%" PRId64, v);
	arr_add(b, is_null ? NULL : tmp, (size_t)n);
}

static int arr_close(struct pg_apply *a, int count, char *err, size_t err_len)
{
	for (int i = 0; i < count; i++) {
		buf_putc(&a->arr[i], '}');
		if (buf_reserve(&a->arr[i], 0) != 0) {
			set_err(err, err_len, "arrays", "out of memory");
			return -1;
		}
		a->arr[i].p[a->arr[i].len] = 0;
	}
	return 0;
}

static void rows_reset(struct pg_apply *a)
{
	a->buf.len = 0;
	for (int i = 0; i < 4; i++)
		a->arr[i].len = 0;
}

/* Writes what rows_reset() began: the new rows in a->buf with COPY, the
 * changed ones from the four arrays with one UPDATE ... FROM unnest(). */
static int rows_flush(struct pg_apply *a, PGconn *c, size_t fresh, const char *copy_sql, size_t changed,
                      const char *update_sql, const char *what, char *err, size_t err_len)
{
	a->last_rows += fresh + changed;
	if (fresh && copy_in(c, copy_sql, &a->buf, err, err_len) != 0)
		return -1;
	if (!changed)
		return 0;
	if (arr_close(a, 4, err, err_len) != 0)
		return -1;
	const char *v[4] = {a->arr[0].p, a->arr[1].p, a->arr[2].p, a->arr[3].p};
	return exec_params(c, update_sql, 4, v, what, err, err_len);
}

static int write_res(struct pg_apply *a, PGconn *c, char *err, size_t err_len)
{
	rows_reset(a);
	size_t fresh = 0, changed = 0;
	for (size_t i = 0; i < a->res.cap; i++) {
		const struct pa_res *r = sm_tab_slot(&a->res, i);
		if (!r)
			continue;
		assert(r->known);
		if (r->is_new) {
			res_row(a, &a->buf, r);
			fresh++;
		} else if (r->dirty) {
			arr_id(a, &a->arr[0], 'r', r->no);
			const char *st = fs_res_status_name(r->status);
			arr_add(&a->arr[1], st, strlen(st));
			arr_id(a, &a->arr[2], 'o', r->order_no);
			arr_i64(&a->arr[3], r->expires_at_ms, r->expires_at_ms == 0);
			changed++;
		}
	}
	return rows_flush(a, c, fresh, "COPY reservations (reservation_id, sku, user_id, quantity, status, "
	                  "expires_at, idempotency_key, order_id, created_seq, shard) FROM STDIN", changed,
	                  "UPDATE reservations r SET status = u.st, order_id = u.oid, "
	                  "expires_at = timestamptz 'epoch' + u.exp * interval '1 millisecond' "
	                  "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(id, st, oid, exp) "
	                  "WHERE r.reservation_id = u.id", "update reservations", err, err_len);
}

static void order_row(struct pg_apply *a, struct pa_buf *b, const struct pa_order *o)
{
	const struct fs_cmd *c = &a->recs[o->rec];
	const struct pa_res *r = sm_tab_find(&a->res, o->res_no);
	assert(r && r->known);
	const struct pa_sku *s = &a->skus[r->sku_slot];
	buf_pubid(a, b, 'o', o->no);
	col(b);
	buf_pubid(a, b, 'r', o->res_no);
	col(b);
	buf_text(b, s->sku, s->sku_len, 0);
	col(b);
	buf_text(b, c->user, c->user_len, 0);
	buf_printf(b, "\t%u\t%" PRId64 "\t%s\t", r->quantity, o->amount_cents, fs_order_status_name(o->status));
	if (o->reason_rec != UINT32_MAX) {
		const struct fs_cmd *p = &a->recs[o->reason_rec];
		buf_text(b, p->text, p->text_len, 0);
	} else {
		null_field(b);
	}
	col(b);
	if (o->paid_at_ms) buf_ts(b, o->paid_at_ms); else null_field(b);
	col(b);
	if (c->key_len) buf_text(b, c->key, c->key_len, 0); else null_field(b);
	buf_printf(b, "\t%" PRIu64 "\t%s\n", rec_seq(a, o->rec), a->shard);
}

static int write_orders(struct pg_apply *a, PGconn *c, char *err, size_t err_len)
{
	rows_reset(a);
	size_t fresh = 0, changed = 0;
	for (size_t i = 0; i < a->orders.cap; i++) {
		const struct pa_order *o = sm_tab_slot(&a->orders, i);
		if (!o)
			continue;
		if (o->is_new) {
			order_row(a, &a->buf, o);
			fresh++;
		} else if (o->dirty) {
			arr_id(a, &a->arr[0], 'o', o->no);
			const char *st = fs_order_status_name(o->status);
			arr_add(&a->arr[1], st, strlen(st));
			const struct fs_cmd *p = o->reason_rec != UINT32_MAX ? &a->recs[o->reason_rec] : NULL;
			arr_add(&a->arr[2], p ? p->text : NULL, p ? p->text_len : 0);
			arr_i64(&a->arr[3], o->paid_at_ms, o->paid_at_ms == 0);
			changed++;
		}
	}
	return rows_flush(a, c, fresh, "COPY orders (order_id, reservation_id, sku, user_id, quantity, "
	                  "amount_cents, status, reason, paid_at, idempotency_key, created_seq, shard) FROM STDIN", changed,
	                  "UPDATE orders o SET status = u.st, reason = u.reason, "
	                  "paid_at = COALESCE(timestamptz 'epoch' + u.paid * interval '1 millisecond', o.paid_at) "
	                  "FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[]) AS u(id, st, reason, paid) "
	                  "WHERE o.order_id = u.id", "update orders", err, err_len);
}

static int cursor_advance(PGconn *c, const char *name, uint64_t seq, char *err, size_t err_len)
{
	char s[24];
	snprintf(s, sizeof s, "%" PRIu64, seq);
	const char *v[2] = {name, s};
	return exec_params(c, "UPDATE sink_cursor SET seq = $2 WHERE name = $1", 2, v, "cursor advance",
	                   err, err_len);
}

/* Everything after the cursor check; -1 with err set on failure. */
static int apply_locked(struct pg_apply *a, PGconn *c, const char *cursor_name,
                        const struct fs_cmd *recs, uint32_t n, char *err, size_t err_len, int *data_err)
{
	if (collect(a, recs, n) != 0) {
		set_err(err, err_len, "collect", "out of memory");
		return -1;
	}
	if (fetch_orders(a, c, err, err_len) != 0 || fetch_res(a, c, err, err_len) != 0)
		return -1;
	if (fold(a, recs, n, err, err_len) != 0) {
		*data_err = 1;
		return -1;
	}
	a->last_rows = n + a->sku_count;
	if (write_events(a, c, recs, n, err, err_len) != 0 || write_skus(a, c, err, err_len) != 0 ||
	    write_res(a, c, err, err_len) != 0 || write_orders(a, c, err, err_len) != 0)
		return -1;
	if (cursor_advance(c, cursor_name, a->seq, err, err_len) != 0)
		return -1;
	return exec_ok(c, PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "commit", err, err_len);
}

/* One transaction for batches first..last (their records back to back). */
static int apply_txn(struct pg_apply *a, PGconn *c, const char *cursor_name, uint64_t first, uint64_t last,
                     const struct fs_cmd *recs, uint32_t n, char *err, size_t err_len)
{
	assert(first >= 1 && first <= last);
	if (reset_batch(a, n) != 0) {
		set_err(err, err_len, "apply", "out of memory");
		return PG_APPLY_ERR_DB;
	}
	a->recs = recs;
	a->seq = last;
	/* Every lookup and update here goes by primary key; without the first
	 * SET a young, unanalysed table gets sequential scans for `= ANY($1)`.
	 * synchronous_commit off is safe for a projection: a commit lost in a
	 * database crash takes its cursor with it, so the batch is re-applied
	 * from the journal; it saves a WAL flush wait per batch. */
	if (exec_ok(c, PQexec(c, "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL synchronous_commit = off"),
	            PGRES_COMMAND_OK, "begin", err, err_len) != 0)
		return PG_APPLY_ERR_DB;
	int64_t cur = cursor_lock(c, cursor_name, err, err_len);
	if (cur < 0 || (uint64_t)cur >= last || (uint64_t)cur + 1 != first) {
		rollback(c);
		if (cur < 0)
			return PG_APPLY_ERR_DB;
		if ((uint64_t)cur >= last)
			return PG_APPLY_SKIPPED;
		snprintf(err, err_len, "gap: batch %" PRIu64 " after cursor %" PRId64, first, cur);
		return PG_APPLY_ERR_GAP;
	}
	int data_err = 0;
	if (apply_locked(a, c, cursor_name, recs, n, err, err_len, &data_err) != 0) {
		rollback(c);
		return data_err ? PG_APPLY_ERR_DATA : PG_APPLY_ERR_DB;
	}
	return PG_APPLY_DONE;
}

int pg_apply_batch(struct pg_apply *a, PGconn *c, const char *cursor_name,
                   const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n,
                   char *err, size_t err_len)
{
	assert(a && c && cursor_name && b);
	assert(n == b->record_count && (n == 0 || recs));
	a->rec_seq_v = NULL;
	a->rec_time_v = NULL;
	a->rec_idx_v = NULL;
	a->time_ms = b->time_ms;
	return apply_txn(a, c, cursor_name, b->seq, b->seq, recs, n, err, err_len);
}

int pg_apply_run(struct pg_apply *a, PGconn *c, const char *cursor_name, uint64_t first_seq, uint64_t last_seq,
                 const struct fs_cmd *recs, uint32_t n, const uint64_t *seq, const int64_t *time_ms,
                 const uint32_t *idx, char *err, size_t err_len)
{
	assert(a && c && cursor_name && first_seq <= last_seq && (n == 0 || (recs && seq && time_ms && idx)));
	assert(n == 0 || (seq[0] >= first_seq && seq[n - 1] <= last_seq));
	a->rec_seq_v = seq;
	a->rec_time_v = time_ms;
	a->rec_idx_v = idx;
	int rc = apply_txn(a, c, cursor_name, first_seq, last_seq, recs, n, err, err_len);
	a->rec_seq_v = NULL;
	a->rec_time_v = NULL;
	a->rec_idx_v = NULL;
	return rc;
}

/* ------------------------------------------------------------ migrations */

/* Applies migration m unless schema_migrations lists it, in one transaction
 * under an advisory lock. Returns 0 or -1. */
static int migrate_one(PGconn *c, const struct pg_migration *m, char *err, size_t err_len)
{
	const char *v[1] = {m->name};
	if (exec_ok(c, PQexec(c, "BEGIN"), PGRES_COMMAND_OK, "begin", err, err_len) != 0)
		return -1;
	PGresult *r = PQexec(c, "SELECT pg_advisory_xact_lock(7418329001)");
	if (exec_ok(c, r, PGRES_TUPLES_OK, "migration lock", err, err_len) != 0)
		goto fail;
	r = PQexecParams(c, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, NULL, v, NULL, NULL, 0);
	if (!r || PQresultStatus(r) != PGRES_TUPLES_OK) {
		exec_ok(c, r, PGRES_TUPLES_OK, "schema_migrations", err, err_len);
		goto fail;
	}
	int done = PQntuples(r) > 0;
	PQclear(r);
	if (!done) {
		if (exec_ok(c, PQexec(c, m->sql), PGRES_COMMAND_OK, m->name, err, err_len) != 0)
			goto fail;
		if (exec_params(c, "INSERT INTO schema_migrations (version) VALUES ($1)", 1, v,
		                "schema_migrations", err, err_len) != 0)
			goto fail;
	}
	return exec_ok(c, PQexec(c, "COMMIT"), PGRES_COMMAND_OK, "commit", err, err_len);
fail:
	rollback(c);
	return -1;
}

int pg_migrate(PGconn *c, char *err, size_t err_len)
{
	assert(pg_migration_count > 0);
	PGresult *r = PQexec(c, "SET client_min_messages = warning;"
	                        "CREATE TABLE IF NOT EXISTS schema_migrations ("
	                        "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())");
	if (exec_ok(c, r, PGRES_COMMAND_OK, "schema_migrations", err, err_len) != 0)
		return -1;
	for (unsigned i = 0; i < pg_migration_count; i++) {
		assert(i == 0 || strcmp(pg_migrations[i - 1].name, pg_migrations[i].name) < 0);
		if (migrate_one(c, &pg_migrations[i], err, err_len) != 0)
			return -1;
	}
	return 0;
}
