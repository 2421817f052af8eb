/* sink_pg.c - the PostgreSQL sink backend: one libpq connection, schema
 * migrations at open, every batch through pg_apply (exactly once by the
 * sink_cursor row named cfg->name).
 *
 * Batches are written in runs: while the sink is behind, apply_batch holds
 * up to PG_RUN_BATCHES_MAX consecutive batches (PG_RUN_RECORDS_MAX records)
 * and writes them in one transaction (pg_apply_run), so the statements and
 * the commit of a transaction are paid once per run, not per batch; a sink
 * that is caught up writes each batch alone (the thread's flush). A run the
 * database refuses as data is not guessed at: the sink reopens from its
 * cursor and writes those batches one by one, so the refusal (and a stop
 * after SINK_REJECT_ATTEMPTS) names the one batch at fault. */
#include "writer/sink/sink.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "writer/sink/pg_apply.h"

#define PG_RUN_BATCHES_MAX 64u
#define PG_RUN_RECORDS_MAX 16384u

struct pg_sink {
	PGconn *conn;
	struct pg_apply *apply;
	char name[128];
	uint64_t applied;        /* last seq committed (or found committed) */
	/* the run held: records back to back, each with its batch seq, time, index */
	struct fs_cmd *run_recs;
	uint64_t *run_seq;
	int64_t *run_time;
	uint32_t *run_idx;
	uint32_t run_n, run_cap, run_batches;
	uint64_t run_first, run_last;
};

/* After a refused run, the batches up to this one are written alone. Per
 * sink thread (one per sink), so it outlives the reopen that follows. */
static _Thread_local uint64_t single_until;

static void pg_sink_close(void *st)
{
	struct pg_sink *p = st;
	if (!p)
		return;
	if (p->conn)
		PQfinish(p->conn);
	pg_apply_free(p->apply);
	free(p->run_recs);
	free(p->run_seq);
	free(p->run_time);
	free(p->run_idx);
	free(p);
}

static void *pg_sink_open(const struct sink_config *cfg, uint64_t *cursor, char *err, size_t err_len)
{
	struct pg_sink *p = calloc(1, sizeof *p);
	if (!p || !(p->apply = pg_apply_new())) {
		snprintf(err, err_len, "out of memory");
		pg_sink_close(p);
		return NULL;
	}
	snprintf(p->name, sizeof p->name, "%s", cfg->name);
	pg_apply_set_shard(p->apply, cfg->shard ? cfg->shard : "", cfg->appliance, cfg->writer);
	p->conn = PQconnectdb(cfg->address);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		snprintf(err, err_len, "connect: %s", PQerrorMessage(p->conn));
		pg_sink_close(p);
		return NULL;
	}
	if (pg_migrate(p->conn, err, err_len) != 0 || pg_cursor_get(p->conn, p->name, cursor, err, err_len) != 0) {
		pg_sink_close(p);
		return NULL;
	}
	p->applied = *cursor;
	return p;
}

/* Room for `more` records in the run. 0, or -1 when out of memory. */
static int run_reserve(struct pg_sink *p, uint32_t more)
{
	if (p->run_n + more <= p->run_cap)
		return 0;
	uint32_t cap = p->run_n + more;
	struct fs_cmd *r = realloc(p->run_recs, (size_t)cap * sizeof *r);
	if (r)
		p->run_recs = r;
	uint64_t *q = realloc(p->run_seq, (size_t)cap * sizeof *q);
	if (q)
		p->run_seq = q;
	int64_t *t = realloc(p->run_time, (size_t)cap * sizeof *t);
	if (t)
		p->run_time = t;
	uint32_t *x = realloc(p->run_idx, (size_t)cap * sizeof *x);
	if (x)
		p->run_idx = x;
	if (!r || !q || !t || !x)
		return -1;
	p->run_cap = cap;
	return 0;
}

static void run_add(struct pg_sink *p, const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n)
{
	assert(p->run_batches == 0 || b->seq == p->run_last + 1);
	assert(p->run_n + n <= p->run_cap);
	memcpy(p->run_recs + p->run_n, recs, (size_t)n * sizeof *recs);
	for (uint32_t i = 0; i < n; i++) {
		p->run_seq[p->run_n + i] = b->seq;
		p->run_time[p->run_n + i] = b->time_ms;
		p->run_idx[p->run_n + i] = i;
	}
	p->run_n += n;
	if (p->run_batches++ == 0)
		p->run_first = b->seq;
	p->run_last = b->seq;
}

/* Writes the run held in one transaction. Returns enum sink_rc. */
static int run_write(struct pg_sink *p, char *err, size_t err_len)
{
	if (p->run_batches == 0)
		return SINK_OK;
	if (PQstatus(p->conn) != CONNECTION_OK) {
		PQreset(p->conn);
		if (PQstatus(p->conn) != CONNECTION_OK) {
			snprintf(err, err_len, "reconnect: %s", PQerrorMessage(p->conn));
			return SINK_RETRY;
		}
	}
	int rc = pg_apply_run(p->apply, p->conn, p->name, p->run_first, p->run_last, p->run_recs, p->run_n,
	                      p->run_seq, p->run_time, p->run_idx, err, err_len);
	if (rc == PG_APPLY_DONE || rc == PG_APPLY_SKIPPED) {
		p->applied = p->run_last;
		p->run_n = p->run_batches = 0;
		return SINK_OK;
	}
	if (rc == PG_APPLY_ERR_GAP)
		return SINK_RESET;   /* the table's cursor moved behind us: resume from it */
	int data = rc == PG_APPLY_ERR_DATA || (PQstatus(p->conn) == CONNECTION_OK && pg_apply_rejected());
	if (!data)
		return SINK_RETRY;   /* the run stays held; the same batch comes again */
	if (p->run_batches > 1) {
		single_until = p->run_last;   /* find the batch at fault: reopen, one batch at a time */
		return SINK_RESET;
	}
	return SINK_REJECTED;   /* records that refer to rows the table lacks, or refused by the server */
}

static int pg_sink_apply(void *st, const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n,
                         const struct sink_model *m, const uint32_t *sku_idx, char *err, size_t err_len)
{
	struct pg_sink *p = st;
	assert(p && b && m == NULL);
	(void)sku_idx;
	if (p->run_batches == 0 || b->seq > p->run_last) {   /* else: the batch again after a failed write */
		if (p->run_batches > 0 && b->seq != p->run_last + 1) {
			snprintf(err, err_len, "batch %llu after %llu", (unsigned long long)b->seq,
			         (unsigned long long)p->run_last);
			return SINK_RESET;
		}
		if (run_reserve(p, n) != 0) {
			snprintf(err, err_len, "out of memory for a run of %u records", p->run_n + n);
			return SINK_RETRY;
		}
		run_add(p, b, recs, n);
		if (p->run_batches < PG_RUN_BATCHES_MAX && p->run_n < PG_RUN_RECORDS_MAX && b->seq > single_until)
			return SINK_OK;   /* held: written with the next ones, or by flush when caught up */
	}
	return run_write(p, err, err_len);
}

static int pg_sink_flush(void *st, char *err, size_t err_len)
{
	struct pg_sink *p = st;
	int rc = run_write(p, err, err_len);
	/* a single held batch refused as data: the thread reopens and gives it
	 * again through apply_batch, which counts the refusals */
	if (rc == SINK_REJECTED)
		single_until = p->run_last > single_until ? p->run_last : single_until;
	return rc;
}

static uint64_t pg_sink_cursor(void *st)
{
	return ((struct pg_sink *)st)->applied;
}

static const struct sink_ops pg_ops = {
	.name = "postgres",
	.wants_model = 0,
	.open = pg_sink_open,
	.apply_batch = pg_sink_apply,
	.durable_cursor = pg_sink_cursor,
	.tick = NULL,
	.close = pg_sink_close,
	.flush = pg_sink_flush,
};

const struct sink_ops *sink_ops_postgres(void)
{
	return &pg_ops;
}
