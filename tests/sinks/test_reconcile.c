/* test_reconcile.c - flashsale-reconcile against a projection the sink
 * wrote (FS_TEST_PG): 0 differences and exit 0; then each kind of tampering
 * (a counter, a status, a missing order, a missing audit row) is reported
 * and exits 1. */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "sink_testlib.h"
#include "writer/sink/sink.h"

static _Atomic uint64_t durable;
static char journal_dir[256], conninfo[512];

/* Runs the tool; returns its exit status and whether `want` was printed. */
static int reconcile(const char *want, int *found)
{
	char cmd[1024], line[512];
	snprintf(cmd, sizeof cmd, "'%s/flashsale-reconcile' --journal '%s' --postgres '%s' --cursor sink",
	         FS_BUILD_DIR, journal_dir, conninfo);
	FILE *p = popen(cmd, "r");
	CHECK(p != NULL);
	*found = 0;
	while (fgets(line, sizeof line, p)) {
		fputs(line, stdout);
		if (strstr(line, want))
			*found = 1;
	}
	int status = pclose(p);
	CHECK(WIFEXITED(status));
	return WEXITSTATUS(status);
}

static void tamper(PGconn *c, const char *sql, const char *undo, const char *want)
{
	PGresult *r = PQexec(c, sql);
	CHECK(PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "1") == 0);
	PQclear(r);
	int found;
	CHECK(reconcile(want, &found) == 1);
	CHECK(found);
	if (undo) {
		r = PQexec(c, undo);
		CHECK(PQresultStatus(r) == PGRES_COMMAND_OK);
		PQclear(r);
		CHECK(reconcile("0 differences", &found) == 0 && found);
	}
}

int main(void)
{
	test_pg_base();
	PGconn *c = test_pg_fresh("fs_sink_reconcile", conninfo, sizeof conninfo);
	char *dir = test_tmpdir("reconcile");
	snprintf(journal_dir, sizeof journal_dir, "%s", dir);
	struct gen *g = gen_new(11, 4, 200, 20);
	uint64_t last = gen_journal(g, dir, 80, 400, NULL);
	atomic_store(&durable, last);
	char err[256];
	struct sink_config cfg = {.kind = SINK_POSTGRES, .journal_dir = dir, .durable_seq = &durable,
	                          .address = conninfo, .name = "sink"};
	struct sink *s = sink_start(&cfg, err, sizeof err);
	CHECK(s != NULL);
	struct sink_stats st;
	for (int i = 0; i < 6000; i++) {
		sink_stats(s, &st);
		if (st.applied_seq == last)
			break;
		usleep(10000);
	}
	sink_stop(s);
	CHECK(st.applied_seq == last);

	int found;
	CHECK(reconcile("0 differences", &found) == 0 && found);
	/* sold and total together: the table's CHECKs hold whatever sku-1 has left */
	tamper(c, "UPDATE sales SET total = total + 1, sold = sold + 1 WHERE sku = 'sku-1'",
	       "UPDATE sales SET total = total - 1, sold = sold - 1 WHERE sku = 'sku-1'",
	       "sale sku-1: sold is");
	tamper(c, "UPDATE reservations SET status = 'CANCELLED' WHERE reservation_id = "
	          "(SELECT min(reservation_id) FROM reservations WHERE status = 'CONFIRMED')",
	       "UPDATE reservations SET status = 'CONFIRMED' WHERE reservation_id = "
	          "(SELECT min(reservation_id) FROM reservations WHERE order_id IS NOT NULL AND status = 'CANCELLED')",
	       "status is 'CANCELLED' in postgres, 'CONFIRMED' per the journal");
	tamper(c, "DELETE FROM journal_events WHERE (seq, idx) = (5, 0)", NULL, "journal_events : row count");
	tamper(c, "DELETE FROM orders WHERE order_id = (SELECT min(order_id) FROM orders)", NULL,
	       "missing in postgres");
	gen_free(g);
	test_rmdir(dir);
	free(dir);
	PQfinish(c);
	printf("sinks_reconcile: ok\n");
	return 0;
}
