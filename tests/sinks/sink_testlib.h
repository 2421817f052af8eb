/* sink_testlib.h - shared scaffolding for the sink tests: a deterministic
 * workload generator that emits valid journal records (it plays the
 * writer), journal writing, fresh PostgreSQL databases, checks. */
#ifndef SINK_TESTLIB_H
#define SINK_TESTLIB_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include "common/fs_cmd.h"

#define CHECK(cond) do { if (!(cond)) { \
	fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); exit(1); } } while (0)
#define SKIP_EXIT 77

struct gen;

/* A workload over `sku_count` SKUs of `stock` units each (waitlist on when
 * `waitlist` > 0): reserve, cancel, expire, checkout, pay ok/declined,
 * stock_add, promote -- always consistent with writer/EVENTS.md. */
struct gen *gen_new(uint32_t seed, uint32_t sku_count, uint64_t stock, uint32_t waitlist);
void gen_free(struct gen *g);
/* Fills recs[0..max) with the next batch; returns the record count (>= 1).
 * The first batch creates and opens the sales. */
uint32_t gen_batch(struct gen *g, struct fs_cmd *recs, uint32_t max);
/* Time of the batch last generated (ms since the epoch, advancing). */
int64_t gen_time_ms(const struct gen *g);

/* Encodes records into body (room for n * WR_REC_BYTES_MAX); returns bytes. */
uint32_t gen_encode(const struct fs_cmd *recs, uint32_t n, uint8_t *body);

/* Appends `batches` generated batches of up to `per_batch` records to the
 * journal in dir (created if missing). Returns the last seq. */
uint64_t gen_journal(struct gen *g, const char *dir, uint32_t batches, uint32_t per_batch,
                     uint64_t *records_out);

/* Makes a fresh temporary directory under /tmp; returns a static-ish copy. */
char *test_tmpdir(const char *tag);
void test_rmdir(const char *dir);

#ifdef SINK_HAVE_POSTGRES
#include <libpq-fe.h>
/* FS_TEST_PG or exit 77 with "skipped: ..." */
const char *test_pg_base(void);
/* Creates a fresh database `name` (dropped first) and returns a connection
 * to it, writing its conninfo into out (for child processes). */
PGconn *test_pg_fresh(const char *name, char *conninfo_out, size_t out_len);
/* Runs a query returning one value; returns it as int64 (fails the test on error). */
long long test_pg_int(PGconn *c, const char *sql);
/* Returns a malloc'd md5 over the projection tables (sales, reservations,
 * orders, journal_events) -- equal digests = equal contents. */
char *test_pg_digest(PGconn *c);
#endif

#endif
