/* flashsale_reconcile.c - `flashsale-reconcile`: checks the PostgreSQL
 * projection against the journal, the source of truth.
 *
 * It replays the journal (up to the batch PostgreSQL says it has applied)
 * into an independent in-memory model (writer/sink/sink_model.c, not the code
 * that wrote the tables), then compares every sale, reservation and order
 * row and the audit trail's size, printing each difference. Exit status:
 * 0 with "0 differences", 1 when any difference was found, 2 on usage or
 * connection errors.
 */
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "common/fs_shard.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/sink/sink_model.h"

#define DIFF_PRINT_MAX 200

struct rc_state {
	PGconn *pg;
	struct sink_model m;
	uint64_t cursor;          /* last batch PostgreSQL applied */
	uint64_t records;         /* journal records up to cursor */
	uint64_t journal_last;    /* last batch in the journal */
	uint64_t diffs;
	char where[96];           /* " WHERE shard = '...'" with --shard or --writer, else "" */
	uint32_t appliance;       /* --shard's index in --shard-map: the ids' bits 56..63 */
	uint32_t writer;          /* --writer: the ids' bits 48..55 */
};

/* A journal number as the public id its rows carry (common/fs_shard.h). */
static void id_format(const struct rc_state *st, char out[FS_PUBID_LEN + 1], char prefix, uint64_t no)
{
	fs_pubid_format(out, prefix, fs_id_compose(st->appliance, st->writer, no));
}

/* The journal number of a row's id; 0 when malformed or another shard's. */
static uint64_t id_parse(const struct rc_state *st, const char *id, char prefix)
{
	uint64_t no = fs_pubid_parse(id, strlen(id), prefix);
	return fs_id_appliance(no) == st->appliance && fs_id_writer(no) == st->writer ? fs_id_local(no) : 0;
}

static void diff(struct rc_state *st, const char *fmt, ...)
{
	if (st->diffs++ < DIFF_PRINT_MAX) {
		va_list ap;
		va_start(ap, fmt);
		vprintf(fmt, ap);
		va_end(ap);
		putchar('\n');
	}
}

static void usage(FILE *f)
{
	fprintf(f, "usage: flashsale-reconcile --journal DIR --postgres CONNINFO [--cursor NAME]\n"
	           "                           [--shard NAME --shard-map FILE] [--writer K]\n"
	           "  Replays the journal into an in-memory model and compares it with the PostgreSQL\n"
	           "  projection up to the batch the sink cursor NAME has applied (default: the highest\n"
	           "  cursor in sink_cursor). Prints each difference; exit 0 when there is none, 1 when\n"
	           "  there are differences, 2 on errors.\n"
	           "  --shard NAME --shard-map FILE: appliances sharing one database (flashsaled --shard):\n"
	           "  only rows whose shard column is NAME, ids of NAME's index in the map, and the\n"
	           "  cursor flashsaled.NAME unless --cursor says otherwise.\n"
	           "  --writer K: writer shard K of a box run with --writers N > 1 (--journal is its\n"
	           "  DIR/shard-K): rows labelled wK (NAME/wK with --shard), ids with K in bits 48..55,\n"
	           "  cursor flashsaled[.NAME].wK unless --cursor says otherwise.\n");
}

/* Runs `sql` with st->where appended (one shard's rows). Exits 2 on error. */
static PGresult *query(struct rc_state *st, const char *sql)
{
	char full[1024];
	int n = snprintf(full, sizeof full, "%s%s", sql, st->where);
	if (n < 0 || (size_t)n >= sizeof full) {
		fprintf(stderr, "flashsale-reconcile: query too long\n");
		exit(2);
	}
	sql = full;
	PGresult *r = PQexec(st->pg, sql);
	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		fprintf(stderr, "flashsale-reconcile: %s: %s", sql, PQresultErrorMessage(r));
		exit(2);
	}
	return r;
}

static int64_t col_i64(PGresult *r, int row, int col)
{
	return PQgetisnull(r, row, col) ? 0 : strtoll(PQgetvalue(r, row, col), NULL, 10);
}

static void read_cursor(struct rc_state *st, const char *name)
{
	char sql[256];
	if (name) {
		char *lit = PQescapeLiteral(st->pg, name, strlen(name));
		snprintf(sql, sizeof sql, "SELECT seq FROM sink_cursor WHERE name = %s", lit ? lit : "''");
		PQfreemem(lit);
	} else {
		snprintf(sql, sizeof sql, "SELECT max(seq) FROM sink_cursor");
	}
	char where[sizeof st->where];
	memcpy(where, st->where, sizeof where);
	st->where[0] = 0;   /* sink_cursor has no shard column: its name says it */
	PGresult *r = query(st, sql);
	memcpy(st->where, where, sizeof where);
	st->cursor = PQntuples(r) == 1 ? (uint64_t)col_i64(r, 0, 0) : 0;
	PQclear(r);
}

/* Replays journal batches up to st->cursor into the model. 0 or -1. */
static int replay(struct rc_state *st, const char *dir)
{
	char err[512];
	struct jr_reader *rd = jr_reader_open(dir, err, sizeof err);
	if (!rd) {
		fprintf(stderr, "flashsale-reconcile: %s\n", err);
		return -1;
	}
	uint32_t rec_cap = WR_REC_COUNT_MAX(JR_BODY_BYTES_MAX);
	struct fs_cmd *recs = malloc(rec_cap * sizeof *recs);
	struct jr_batch b;
	int rc = 0;
	if (recs == NULL) {   /* found by clang-tidy: rc and err were read uninitialised */
		snprintf(err, sizeof err, "out of memory for the record buffer");
		rc = -1;
	}
	while (recs && (rc = jr_reader_next(rd, UINT64_MAX, &b, err, sizeof err)) == 1) {
		st->journal_last = b.seq;
		if (b.seq > st->cursor)
			continue;
		int decoded = wr_rec_decode_batch(b.body, b.body_len, b.record_count, recs, rec_cap);
		if (decoded < 0) {
			diff(st, "journal: batch %" PRIu64 " (%s offset %" PRIu64 "): its records do not decode",
			     b.seq, b.file, b.offset);
			break;
		}
		uint32_t n = (uint32_t)decoded;
		if (sm_apply_batch(&st->m, b.seq, b.time_ms, recs, n, NULL) < 0) {
			fprintf(stderr, "flashsale-reconcile: out of memory\n");
			rc = -1;
			break;
		}
		st->records += n;
	}
	if (rc < 0)
		fprintf(stderr, "flashsale-reconcile: %s\n", err);
	free(recs);
	jr_reader_close(rd);
	return rc < 0 ? -1 : 0;
}

static void check_model(struct rc_state *st)
{
	if (st->m.anomalies)
		diff(st, "journal: %" PRIu64 " record(s) do not fit the model; first: %s", st->m.anomalies, st->m.anomaly);
	for (uint32_t k = 0; k < st->m.sku_count; k++) {
		const struct sm_sku *s = &st->m.skus[k];
		if (s->available < 0 || s->reserved < 0 || s->sold < 0 || s->available + s->reserved + s->sold != s->total)
			diff(st, "journal: sku %s not conserved: total %" PRId64 " available %" PRId64 " reserved %" PRId64
			     " sold %" PRId64, s->sku, s->total, s->available, s->reserved, s->sold);
	}
}

static void cmp_i64(struct rc_state *st, const char *what, const char *id, const char *field, int64_t journal,
                    int64_t pg)
{
	if (journal != pg)
		diff(st, "%s %s: %s is %" PRId64 " in postgres, %" PRId64 " per the journal", what, id, field, pg, journal);
}

static void cmp_str(struct rc_state *st, const char *what, const char *id, const char *field, const char *journal,
                    const char *pg)
{
	if (strcmp(journal, pg) != 0)
		diff(st, "%s %s: %s is '%s' in postgres, '%s' per the journal", what, id, field, pg, journal);
}

static void check_sales(struct rc_state *st)
{
	PGresult *r = query(st, "SELECT sku, state, total, available, reserved, sold, version, per_user, hold_ms, "
	                        "price_cents FROM sales");
	uint8_t *seen = calloc(st->m.sku_count + 1, 1);
	for (int i = 0; i < PQntuples(r); i++) {
		const char *sku = PQgetvalue(r, i, 0);
		uint32_t k = sm_sku_find(&st->m, sku, strlen(sku));
		if (k == SM_NO_SKU) {
			diff(st, "sale %s: in postgres, not in the journal", sku);
			continue;
		}
		const struct sm_sku *s = &st->m.skus[k];
		seen[k] = 1;
		cmp_str(st, "sale", sku, "state", fs_sale_state_name(s->state), PQgetvalue(r, i, 1));
		cmp_i64(st, "sale", sku, "total", s->total, col_i64(r, i, 2));
		cmp_i64(st, "sale", sku, "available", s->available, col_i64(r, i, 3));
		cmp_i64(st, "sale", sku, "reserved", s->reserved, col_i64(r, i, 4));
		cmp_i64(st, "sale", sku, "sold", s->sold, col_i64(r, i, 5));
		cmp_i64(st, "sale", sku, "version", (int64_t)s->version, col_i64(r, i, 6));
		cmp_i64(st, "sale", sku, "per_user", s->sale.per_user, col_i64(r, i, 7));
		cmp_i64(st, "sale", sku, "hold_ms", s->sale.hold_ms, col_i64(r, i, 8));
		cmp_i64(st, "sale", sku, "price_cents", s->sale.price_cents, col_i64(r, i, 9));
	}
	for (uint32_t k = 0; k < st->m.sku_count; k++)
		if (!seen[k] && !st->m.skus[k].archived)
			diff(st, "sale %s: in the journal, missing in postgres", st->m.skus[k].sku);
	free(seen);
	PQclear(r);
}

/* Archived sales (`flashctl sale archive`): each one's final counters in
 * sales_archive, stamped with the batch that archived it (its version). */
static void check_archived_sales(struct rc_state *st)
{
	uint32_t archived = 0;
	for (uint32_t k = 0; k < st->m.sku_count; k++)
		archived += st->m.skus[k].archived;
	PGresult *r = query(st, "SELECT sku, archived_seq, total, available, reserved, sold FROM sales_archive");
	for (uint32_t k = 0; k < st->m.sku_count; k++) {
		const struct sm_sku *s = &st->m.skus[k];
		if (!s->archived)
			continue;
		int row = -1;
		for (int i = 0; i < PQntuples(r) && row < 0; i++)
			if (strcmp(PQgetvalue(r, i, 0), s->sku) == 0 && (uint64_t)col_i64(r, i, 1) == s->version)
				row = i;
		if (row < 0) {
			diff(st, "sale %s archived at batch %" PRIu64 ": not in postgres's sales_archive", s->sku, s->version);
			continue;
		}
		cmp_i64(st, "archived sale", s->sku, "total", s->total, col_i64(r, row, 2));
		cmp_i64(st, "archived sale", s->sku, "available", s->available, col_i64(r, row, 3));
		cmp_i64(st, "archived sale", s->sku, "reserved", s->reserved, col_i64(r, row, 4));
		cmp_i64(st, "archived sale", s->sku, "sold", s->sold, col_i64(r, row, 5));
	}
	if ((uint32_t)PQntuples(r) > archived)
		diff(st, "sales_archive: %d row(s), the journal archived %u sale(s)", PQntuples(r), archived);
	PQclear(r);
}

/* Marks key as seen in `seen`; returns 1 when it was already there. */
static int mark(struct sm_tab *seen, uint64_t key)
{
	size_t before = seen->count;
	if (!sm_tab_upsert(seen, key)) {
		fprintf(stderr, "flashsale-reconcile: out of memory\n");
		exit(2);
	}
	return seen->count == before;
}

static void check_res_row(struct rc_state *st, PGresult *r, int i, struct sm_tab *seen)
{
	const char *id = PQgetvalue(r, i, 0);
	uint64_t no = id_parse(st, id, 'r');
	const struct sm_res *x = no ? sm_tab_find(&st->m.res, no) : NULL;
	if (!x) {
		diff(st, "reservation %s: in postgres, not in the journal", id);
		return;
	}
	mark(seen, no);
	char order[FS_PUBID_LEN + 1] = "";
	if (x->order_no)
		id_format(st, order, 'o', x->order_no);
	cmp_str(st, "reservation", id, "sku", st->m.skus[x->sku_idx].sku, PQgetvalue(r, i, 1));
	cmp_i64(st, "reservation", id, "quantity", x->quantity, col_i64(r, i, 2));
	cmp_str(st, "reservation", id, "status", fs_res_status_name(x->status), PQgetvalue(r, i, 3));
	cmp_str(st, "reservation", id, "order_id", order, PQgetvalue(r, i, 4));
	cmp_i64(st, "reservation", id, "expires_at_ms", x->expires_at_ms, col_i64(r, i, 5));
	cmp_i64(st, "reservation", id, "created_seq", (int64_t)x->created_seq, col_i64(r, i, 6));
}

static void check_reservations(struct rc_state *st)
{
	PGresult *r = query(st, "SELECT reservation_id, sku, quantity, status, coalesce(order_id, ''), "
	                        "(extract(epoch FROM expires_at) * 1000)::bigint, created_seq FROM reservations");
	struct sm_tab seen;
	if (sm_tab_init(&seen, sizeof(uint64_t), (size_t)PQntuples(r) * 2) != 0)
		exit(2);
	for (int i = 0; i < PQntuples(r); i++)
		check_res_row(st, r, i, &seen);
	for (size_t i = 0; i < st->m.res.cap; i++) {
		const struct sm_res *x = sm_tab_slot(&st->m.res, i);
		if (x && !sm_tab_find(&seen, x->no)) {
			char id[FS_PUBID_LEN + 1];
			id_format(st, id, 'r', x->no);
			diff(st, "reservation %s: in the journal, missing in postgres", id);
		}
	}
	sm_tab_free(&seen);
	PQclear(r);
}

static void check_order_row(struct rc_state *st, PGresult *r, int i, struct sm_tab *seen)
{
	const char *id = PQgetvalue(r, i, 0);
	uint64_t no = id_parse(st, id, 'o');
	const struct sm_order *o = no ? sm_tab_find(&st->m.orders, no) : NULL;
	if (!o) {
		diff(st, "order %s: in postgres, not in the journal", id);
		return;
	}
	mark(seen, no);
	char res[FS_PUBID_LEN + 1];
	id_format(st, res, 'r', o->res_no);
	cmp_str(st, "order", id, "reservation_id", res, PQgetvalue(r, i, 1));
	cmp_str(st, "order", id, "status", fs_order_status_name(o->status), PQgetvalue(r, i, 2));
	cmp_i64(st, "order", id, "amount_cents", o->amount_cents, col_i64(r, i, 3));
	cmp_i64(st, "order", id, "paid_at_ms", o->paid_at_ms, col_i64(r, i, 4));
}

static void check_orders(struct rc_state *st)
{
	PGresult *r = query(st, "SELECT order_id, reservation_id, status, amount_cents, "
	                        "(extract(epoch FROM paid_at) * 1000)::bigint FROM orders");
	struct sm_tab seen;
	if (sm_tab_init(&seen, sizeof(uint64_t), (size_t)PQntuples(r) * 2) != 0)
		exit(2);
	for (int i = 0; i < PQntuples(r); i++)
		check_order_row(st, r, i, &seen);
	for (size_t i = 0; i < st->m.orders.cap; i++) {
		const struct sm_order *o = sm_tab_slot(&st->m.orders, i);
		if (o && !sm_tab_find(&seen, o->no)) {
			char id[FS_PUBID_LEN + 1];
			id_format(st, id, 'o', o->no);
			diff(st, "order %s: in the journal, missing in postgres", id);
		}
	}
	sm_tab_free(&seen);
	PQclear(r);
}

static void check_events(struct rc_state *st)
{
	PGresult *r = query(st, "SELECT count(*), count(DISTINCT seq), coalesce(max(seq), 0) FROM journal_events");
	cmp_i64(st, "journal_events", "", "row count", (int64_t)st->records, col_i64(r, 0, 0));
	cmp_i64(st, "journal_events", "", "batch count", (int64_t)st->m.last_seq, col_i64(r, 0, 1));
	cmp_i64(st, "journal_events", "", "last seq", (int64_t)st->m.last_seq, col_i64(r, 0, 2));
	PQclear(r);
}

/* --shard NAME --shard-map FILE: one shard's rows, ids and cursor. 0 or -1. */
static int shard_select(struct rc_state *st, const char *shard, const char *map_path, const char **cursor,
                        char *cursor_name, size_t cursor_len)
{
	if (shard == NULL && map_path == NULL)
		return 0;
	if (shard == NULL || map_path == NULL) {
		fprintf(stderr, "flashsale-reconcile: --shard and --shard-map go together\n");
		return -1;
	}
	static struct fs_shard_map map;
	char err[256];
	if (fs_shard_load(&map, map_path, err, sizeof err) != 0) {
		fprintf(stderr, "flashsale-reconcile: --shard-map %s: %s\n", map_path, err);
		return -1;
	}
	int idx = fs_shard_appliance_index(&map, shard);
	if (idx < 0) {
		fprintf(stderr, "flashsale-reconcile: --shard %s: not a `shard` of %s\n", shard, map_path);
		return -1;
	}
	st->appliance = (uint32_t)idx;
	/* names are [A-Za-z0-9._-] (fs_shard_parse): no quoting needed */
	snprintf(st->where, sizeof st->where, " WHERE shard = '%s'", shard);
	if (*cursor == NULL) {
		snprintf(cursor_name, cursor_len, "flashsaled.%s", shard);
		*cursor = cursor_name;
	}
	return 0;
}

/* --writer K: writer shard K's rows, ids and cursor (fs_shard_sink_name; any
 * N > K gives the same names). 0 or -1. */
static int writer_select(struct rc_state *st, const char *writer, const char *shard, int cursor_given,
                         const char **cursor, char *cursor_name, size_t cursor_len)
{
	if (writer == NULL)
		return 0;
	char *end;
	unsigned long k = strtoul(writer, &end, 10);
	if (end == writer || *end != 0 || k >= FS_SHARD_WRITERS_MAX) {
		fprintf(stderr, "flashsale-reconcile: --writer %s: want 0..%u\n", writer, FS_SHARD_WRITERS_MAX - 1);
		return -1;
	}
	st->writer = (uint32_t)k;
	char label[FS_SHARD_LABEL_LEN_MAX + 1];
	const char *name = shard ? shard : "";
	if (fs_shard_sink_name(label, sizeof label, FS_SHARD_LABEL, name, NULL, st->writer, FS_SHARD_WRITERS_MAX) != 0 ||
	    (!cursor_given &&
	     fs_shard_sink_name(cursor_name, cursor_len, FS_SHARD_CURSOR, name, NULL, st->writer, FS_SHARD_WRITERS_MAX) != 0))
		return -1;
	snprintf(st->where, sizeof st->where, " WHERE shard = '%s'", label);
	if (!cursor_given)
		*cursor = cursor_name;
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"journal", required_argument, NULL, 'j'}, {"postgres", required_argument, NULL, 'p'},
		{"cursor", required_argument, NULL, 'c'}, {"help", no_argument, NULL, 'h'},
		{"shard", required_argument, NULL, 's'}, {"shard-map", required_argument, NULL, 'm'},
		{"writer", required_argument, NULL, 'w'}, {NULL, 0, NULL, 0}};
	const char *dir = NULL, *conninfo = NULL, *cursor = NULL, *shard = NULL, *map_path = NULL, *writer = NULL;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'j': dir = optarg; break;
		case 'p': conninfo = optarg; break;
		case 'c': cursor = optarg; break;
		case 's': shard = optarg; break;
		case 'm': map_path = optarg; break;
		case 'w': writer = optarg; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!dir || !conninfo || optind != argc) {
		fprintf(stderr, "flashsale-reconcile: --journal and --postgres are required\n");
		return 2;
	}
	struct rc_state st = {0};
	char cursor_name[64];
	int cursor_given = cursor != NULL;
	if (shard_select(&st, shard, map_path, &cursor, cursor_name, sizeof cursor_name) != 0 ||
	    writer_select(&st, writer, shard, cursor_given, &cursor, cursor_name, sizeof cursor_name) != 0)
		return 2;
	st.pg = PQconnectdb(conninfo);
	if (PQstatus(st.pg) != CONNECTION_OK) {
		fprintf(stderr, "flashsale-reconcile: postgres: %s", PQerrorMessage(st.pg));
		return 2;
	}
	if (sm_init(&st.m, 1) != 0)
		return 2;
	read_cursor(&st, cursor);
	if (replay(&st, dir) != 0)
		return 2;
	if (st.m.last_seq < st.cursor)
		diff(&st, "postgres cursor is at batch %" PRIu64 " but the journal ends at %" PRIu64,
		     st.cursor, st.journal_last);
	check_model(&st);
	check_sales(&st);
	check_archived_sales(&st);
	check_reservations(&st);
	check_orders(&st);
	check_events(&st);
	if (st.diffs > DIFF_PRINT_MAX)
		printf("... and %" PRIu64 " more\n", st.diffs - DIFF_PRINT_MAX);
	printf("compared %" PRIu64 " batches, %" PRIu64 " records (journal has %" PRIu64 " batches): %" PRIu64
	       " differences\n", st.m.last_seq, st.records, st.journal_last, st.diffs);
	sm_free(&st.m);
	PQfinish(st.pg);
	return st.diffs ? 1 : 0;
}
