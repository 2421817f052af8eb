/* test_loader.c - journal -> Kafka sink -> mock cluster -> flashsale-loader
 * -> PostgreSQL gives the same tables as journal -> PostgreSQL sink
 * (FS_TEST_PG; Kafka is librdkafka's mock cluster). The topic holds batches
 * 1..30 twice (the sink re-sent them after losing its cursor file): the
 * loader's dedup rule must drop the copies. */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "sink_testlib.h"
#include "writer/sink/sink.h"

#define TOPIC "fs.loader.journal"

static _Atomic uint64_t durable;

static void run_sink(enum sink_kind kind, const char *dir, const char *address, uint64_t last)
{
	char err[256];
	struct sink_config cfg = {.kind = kind, .journal_dir = dir, .durable_seq = &durable, .address = address,
	                          .topic = TOPIC, .name = "sink"};
	struct sink *s = sink_start(&cfg, err, sizeof err);
	CHECK(s != NULL);
	struct sink_stats st;
	for (int i = 0; i < 6000; i++) {
		sink_stats(s, &st);
		if (st.applied_seq >= last)
			break;
		usleep(10000);
	}
	sink_stop(s);
	CHECK(st.applied_seq == last);
}

int main(void)
{
	test_pg_base();
	char err[256], ci_loader[512], ci_direct[512];
	PGconn *loader_db = test_pg_fresh("fs_sink_loader", ci_loader, sizeof ci_loader);
	PGconn *direct_db = test_pg_fresh("fs_sink_loader_direct", ci_direct, sizeof ci_direct);
	rd_kafka_t *mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, rd_kafka_conf_new(), err, sizeof err);
	CHECK(mock_rk != NULL);
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mock_rk, 3);
	CHECK(mc && rd_kafka_mock_topic_create(mc, TOPIC, 3, 3) == RD_KAFKA_RESP_ERR_NO_ERROR);
	char brokers[256];
	snprintf(brokers, sizeof brokers, "%s", rd_kafka_mock_cluster_bootstraps(mc));

	char *dir = test_tmpdir("loader");
	struct gen *g = gen_new(33, 3, 300, 20);
	uint64_t records = 0;
	uint64_t last = gen_journal(g, dir, 50, 300, &records);
	atomic_store(&durable, 30);
	run_sink(SINK_KAFKA, dir, brokers, 30);
	char path[512];
	snprintf(path, sizeof path, "%s/kafka-sink.cursor", dir);
	CHECK(unlink(path) == 0);                 /* lost cursor: batches 1..30 are sent again */
	atomic_store(&durable, last);
	run_sink(SINK_KAFKA, dir, brokers, last);
	run_sink(SINK_POSTGRES, dir, ci_direct, last);

	char cmd[2048];
	snprintf(cmd, sizeof cmd, "timeout 120 '%s/flashsale-loader' --kafka '%s' --topic %s --postgres '%s' "
	         "--until-seq %" PRIu64, FS_BUILD_DIR, brokers, TOPIC, ci_loader, last);
	FILE *p = popen(cmd, "r");
	CHECK(p != NULL);
	char line[512];
	unsigned long long dropped = 0;
	while (fgets(line, sizeof line, p)) {
		fputs(line, stdout);
		const char *d = strstr(line, "dropped ");
		if (d)
			dropped = strtoull(d + 8, NULL, 10);
	}
	int status = pclose(p);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	CHECK(dropped > 0);

	CHECK(test_pg_int(loader_db, "SELECT seq FROM sink_cursor WHERE name = 'loader'") == (long long)last);
	CHECK((uint64_t)test_pg_int(loader_db, "SELECT count(*) FROM journal_events") == records);
	char *a = test_pg_digest(loader_db), *b = test_pg_digest(direct_db);
	CHECK(strcmp(a, b) == 0);
	printf("loader: %" PRIu64 " records (%llu copies dropped) -> same tables as the direct sink\n", records, dropped);
	free(a);
	free(b);
	gen_free(g);
	test_rmdir(dir);
	free(dir);
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(mock_rk);
	PQfinish(loader_db);
	PQfinish(direct_db);
	printf("sinks_loader: ok\n");
	return 0;
}
