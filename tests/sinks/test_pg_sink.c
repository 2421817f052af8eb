/* test_pg_sink.c - the PostgreSQL sink thread over a real journal and a real
 * PostgreSQL (FS_TEST_PG): it never reads past the writer's durable seq,
 * catches up when poked, resumes after a restart without gap or duplicate,
 * and survives an unreachable database (counts errors, keeps retrying). */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sink_testlib.h"
#include "writer/sink/sink.h"
#include "writer/sink/pg_apply.h"

static _Atomic uint64_t durable;

/* Waits (bounded, to fail instead of hanging) until the sink's cursor
 * reaches seq. */
static void wait_applied(struct sink *s, uint64_t seq)
{
	struct sink_stats st;
	for (int i = 0; i < 6000; i++) {
		sink_stats(s, &st);
		if (st.applied_seq >= seq)
			return;
		usleep(10000);
	}
	fprintf(stderr, "sink stuck at %" PRIu64 " (want %" PRIu64 "), errors %" PRIu64 ": %s\n",
	        st.applied_seq, seq, st.errors, st.last_error);
	exit(1);
}

static struct sink *start(const char *dir, const char *conninfo)
{
	char err[256];
	struct sink_config cfg = {.kind = SINK_POSTGRES, .journal_dir = dir, .durable_seq = &durable,
	                          .address = conninfo, .name = "sink"};
	struct sink *s = sink_start(&cfg, err, sizeof err);
	CHECK(s != NULL);
	return s;
}

int main(void)
{
	test_pg_base();
	char conninfo[512];
	PGconn *c = test_pg_fresh("fs_sink_thread", conninfo, sizeof conninfo);
	char *dir = test_tmpdir("pgsink");
	struct gen *g = gen_new(3, 3, 300, 30);
	uint64_t records = 0;
	uint64_t last = gen_journal(g, dir, 60, 300, &records);
	CHECK(last == 60);

	/* Only half is durable: the sink must stop there. */
	atomic_store(&durable, 30);
	struct sink *s = start(dir, conninfo);
	wait_applied(s, 30);
	usleep(200000);
	struct sink_stats st;
	sink_stats(s, &st);
	CHECK(st.applied_seq == 30 && st.read_seq == 30 && st.lag_batches == 0);
	CHECK(test_pg_int(c, "SELECT seq FROM sink_cursor WHERE name = 'sink'") == 30);
	CHECK(test_pg_int(c, "SELECT max(seq) FROM journal_events") == 30);

	atomic_store(&durable, last);
	sink_notify(s);
	wait_applied(s, last);
	sink_stats(s, &st);
	CHECK(st.batches == 60 && st.rows == records && st.errors == 0 && st.opens == 1);
	sink_stop(s);

	/* Restart after more batches: resumes after its cursor. */
	last = gen_journal(g, dir, 40, 300, &records);
	CHECK(last == 100);
	atomic_store(&durable, last);
	s = start(dir, conninfo);
	wait_applied(s, last);
	sink_stats(s, &st);
	CHECK(st.batches == 40);
	sink_stop(s);
	CHECK((uint64_t)test_pg_int(c, "SELECT count(*) FROM journal_events") == records);
	CHECK(test_pg_int(c, "SELECT count(DISTINCT seq) FROM journal_events") == 100);
	CHECK(test_pg_int(c, "SELECT count(*) FROM sales WHERE available + reserved + sold <> total") == 0);

	/* A batch the database refuses inside a run (a sink far behind writes
	 * up to 64 batches per transaction): the run is not guessed at, the
	 * sink writes those batches one by one, keeps the ones before the bad
	 * batch and stops at exactly that batch. */
	char conninfo2[512];
	PGconn *c2 = test_pg_fresh("fs_sink_thread_poison", conninfo2, sizeof conninfo2);
	char *dir2 = test_tmpdir("pgsink-poison");
	struct gen *g2 = gen_new(5, 3, 300, 30);
	uint64_t records2 = 0;
	CHECK(gen_journal(g2, dir2, 60, 100, &records2) == 60);
	atomic_store(&durable, 60);
	char err[256];
	CHECK(pg_migrate(c2, err, sizeof err) == 0);
	CHECK(PQresultStatus(PQexec(c2, "INSERT INTO journal_events (seq, idx, batch_time, type, quantity, out_val, "
	                                "pay, shard) VALUES (37, 0, now(), 'planted', 0, 0, 0, '')")) == PGRES_COMMAND_OK);
	s = start(dir2, conninfo2);
	for (int i = 0; i < 3000; i++) {
		sink_stats(s, &st);
		if (st.stopped)
			break;
		usleep(10000);
	}
	CHECK(st.stopped == 1 && st.stopped_seq == 37);
	CHECK(test_pg_int(c2, "SELECT seq FROM sink_cursor WHERE name = 'sink'") == 36);
	CHECK(test_pg_int(c2, "SELECT max(seq) FROM journal_events WHERE type <> 'planted'") == 36);
	printf("a refused batch inside a run: stopped at batch %" PRIu64 " (%s)\n", st.stopped_seq, st.last_error);
	sink_stop(s);
	gen_free(g2);
	test_rmdir(dir2);
	free(dir2);
	PQfinish(c2);

	/* An unreachable database: errors are counted, nothing crashes. */
	s = start(dir, "host=127.0.0.1 port=1 connect_timeout=1");
	for (int i = 0; i < 500; i++) {
		sink_stats(s, &st);
		if (st.errors >= 2)
			break;
		usleep(10000);
	}
	CHECK(st.errors >= 2 && st.connected == 0 && st.applied_seq == 0);
	printf("unreachable database reported as: %s\n", st.last_error);
	sink_stop(s);

	gen_free(g);
	test_rmdir(dir);
	free(dir);
	PQfinish(c);
	printf("sinks_pg_sink: ok\n");
	return 0;
}
