/* sink_pg.c - the PostgreSQL sink backend: one libpq connection, schema
 * migrations at open, every batch through pg_apply_batch (exactly once by
 * the sink_cursor row named cfg->name). */
#include "writer/sink/sink.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <libpq-fe.h>

#include "writer/sink/pg_apply.h"

struct pg_sink {
	PGconn *conn;
	struct pg_apply *apply;
	char name[128];
	uint64_t applied;        /* last seq committed (or found committed) */
};

static void pg_sink_close(void *st)
{
	struct pg_sink *p = st;
	if (!p)
		return;
	if (p->conn)
		PQfinish(p->conn);
	pg_apply_free(p->apply);
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

static int pg_sink_apply(void *st, const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n,
                         const struct sink_model *m, const uint32_t *sku_idx, char *err, size_t err_len)
{
	struct pg_sink *p = st;
	assert(p && b && m == NULL);
	if (PQstatus(p->conn) != CONNECTION_OK) {
		PQreset(p->conn);
		if (PQstatus(p->conn) != CONNECTION_OK) {
			snprintf(err, err_len, "reconnect: %s", PQerrorMessage(p->conn));
			return SINK_RETRY;
		}
	}
	int rc = pg_apply_batch(p->apply, p->conn, p->name, b, recs, n, err, err_len);
	switch (rc) {
	case PG_APPLY_DONE:
	case PG_APPLY_SKIPPED:
		p->applied = b->seq;
		return SINK_OK;
	case PG_APPLY_ERR_GAP:
		return SINK_RESET;   /* the table's cursor moved behind us: resume from it */
	case PG_APPLY_ERR_DATA:
		return SINK_REJECTED;   /* records that refer to rows the table lacks */
	default:
		/* the server refused the rows themselves (the connection is fine) */
		if (PQstatus(p->conn) == CONNECTION_OK && pg_apply_rejected())
			return SINK_REJECTED;
		return SINK_RETRY;
	}
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
};

const struct sink_ops *sink_ops_postgres(void)
{
	return &pg_ops;
}
