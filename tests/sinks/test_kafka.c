/* test_kafka.c - the Kafka sink against librdkafka's mock cluster (3 brokers,
 * no server needed): every record arrives exactly once, in journal order per
 * SKU (key), with seq/idx headers; produce errors injected with
 * rd_kafka_mock_push_request_errors are retried; the cursor file survives a
 * restart and the second run sends only what the first did not. */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#include "sink_testlib.h"
#include "writer/sink/sink.h"

#define TOPIC      "fs.test.journal"
#define PARTITIONS 4
#define KAFKA_API_PRODUCE 0

static _Atomic uint64_t durable;

static void wait_applied(struct sink *s, uint64_t seq)
{
	struct sink_stats st;
	for (int i = 0; i < 6000; i++) {
		sink_stats(s, &st);
		if (st.applied_seq >= seq)
			return;
		usleep(10000);
	}
	fprintf(stderr, "kafka sink stuck at %" PRIu64 " (want %" PRIu64 "): %s\n", st.applied_seq, seq, st.last_error);
	exit(1);
}

static struct sink *start(const char *dir, const char *brokers)
{
	char err[256];
	struct sink_config cfg = {.kind = SINK_KAFKA, .journal_dir = dir, .durable_seq = &durable,
	                          .address = brokers, .topic = TOPIC, .name = "test"};
	struct sink *s = sink_start(&cfg, err, sizeof err);
	CHECK(s != NULL);
	return s;
}

static uint64_t header_u64(rd_kafka_message_t *m, const char *name)
{
	rd_kafka_headers_t *h = NULL;
	const void *v;
	size_t len;
	CHECK(rd_kafka_message_headers(m, &h) == RD_KAFKA_RESP_ERR_NO_ERROR);
	CHECK(rd_kafka_header_get_last(h, name, &v, &len) == RD_KAFKA_RESP_ERR_NO_ERROR);
	char text[32];
	CHECK(len < sizeof text);
	memcpy(text, v, len);
	text[len] = 0;
	return strtoull(text, NULL, 10);
}

struct seen {
	char sku[FS_SKU_LEN_MAX + 1];
	uint64_t pos;   /* seq << 20 | idx of the last record of this SKU */
};

/* Consumes the whole topic; checks order per SKU and no duplicate. Returns
 * the number of messages. */
static uint64_t consume_all(const char *brokers, uint64_t expected)
{
	char err[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	CHECK(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) == RD_KAFKA_CONF_OK);
	CHECK(rd_kafka_conf_set(conf, "group.id", "fs-test", err, sizeof err) == RD_KAFKA_CONF_OK);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
	CHECK(rk != NULL);
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(PARTITIONS);
	for (int p = 0; p < PARTITIONS; p++)
		rd_kafka_topic_partition_list_add(parts, TOPIC, p)->offset = RD_KAFKA_OFFSET_BEGINNING;
	CHECK(rd_kafka_assign(rk, parts) == RD_KAFKA_RESP_ERR_NO_ERROR);
	rd_kafka_topic_partition_list_destroy(parts);
	struct seen seen[16] = {{{0}}};
	uint64_t got = 0;
	/* give up after 5 s without a message (a loaded CI box stalls the mock) */
	for (int idle = 0; idle < 50 && got < expected + 1;) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (!m) {
			idle++;
			continue;
		}
		idle = 0;
		if (m->err) {
			rd_kafka_message_destroy(m);
			continue;
		}
		uint64_t pos = header_u64(m, "seq") << 20 | header_u64(m, "idx");
		CHECK(m->key_len > 0 && m->key_len <= FS_SKU_LEN_MAX);
		int k = 0;
		while (k < 16 && seen[k].sku[0] && (strlen(seen[k].sku) != m->key_len ||
		       memcmp(seen[k].sku, m->key, m->key_len) != 0))
			k++;
		CHECK(k < 16);
		if (!seen[k].sku[0])
			memcpy(seen[k].sku, m->key, m->key_len);
		CHECK(pos > seen[k].pos);   /* in order, and no duplicate */
		seen[k].pos = pos;
		char needle[64];
		snprintf(needle, sizeof needle, "\"sku\":\"%s\"", seen[k].sku);
		CHECK(memmem(m->payload, m->len, needle, strlen(needle)) != NULL);
		got++;
		rd_kafka_message_destroy(m);
	}
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	return got;
}

int main(void)
{
	char err[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_t *mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	CHECK(mock_rk != NULL);
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(mock_rk, 3);
	CHECK(mc != NULL);
	CHECK(rd_kafka_mock_topic_create(mc, TOPIC, PARTITIONS, 3) == RD_KAFKA_RESP_ERR_NO_ERROR);
	char brokers[256];
	snprintf(brokers, sizeof brokers, "%s", rd_kafka_mock_cluster_bootstraps(mc));

	char *dir = test_tmpdir("kafka");
	struct gen *g = gen_new(21, 3, 400, 20);
	uint64_t records = 0;
	uint64_t last = gen_journal(g, dir, 60, 300, &records);

	/* Retriable produce errors: the idempotent producer retries them. */
	rd_kafka_mock_push_request_errors(mc, KAFKA_API_PRODUCE, 4, RD_KAFKA_RESP_ERR_NOT_LEADER_FOR_PARTITION,
	                                  RD_KAFKA_RESP_ERR_REQUEST_TIMED_OUT, RD_KAFKA_RESP_ERR__TRANSPORT,
	                                  RD_KAFKA_RESP_ERR_NOT_ENOUGH_REPLICAS);
	atomic_store(&durable, 30);
	struct sink *s = start(dir, brokers);
	wait_applied(s, 30);
	sink_stop(s);
	char path[512];
	snprintf(path, sizeof path, "%s/kafka-test.cursor", dir);
	FILE *f = fopen(path, "r");
	unsigned long long cursor = 0;
	CHECK(f && fscanf(f, "%llu", &cursor) == 1 && cursor == 30);
	fclose(f);

	/* Restart: resumes after the cursor. */
	atomic_store(&durable, last);
	s = start(dir, brokers);
	wait_applied(s, last);
	struct sink_stats st;
	sink_stats(s, &st);
	CHECK(st.batches == last - 30);
	sink_stop(s);

	uint64_t got = consume_all(brokers, records);
	printf("kafka: %" PRIu64 " records in %" PRIu64 " batches produced, %" PRIu64 " consumed\n", records, last, got);
	CHECK(got == records);

	gen_free(g);
	test_rmdir(dir);
	free(dir);
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(mock_rk);
	printf("sinks_kafka: ok\n");
	return 0;
}
