/* mockkafka.c - a Kafka cluster for end-to-end tests: librdkafka's mock
 * cluster (it speaks the Kafka protocol on loopback) in a process of its
 * own, so several flashsaled processes share it.
 *
 *   mockkafka BROKERS TOPIC...     creates each topic (1 partition,
 *                                  replication factor BROKERS), prints
 *                                  "bootstrap HOST:PORT,..." on stdout
 * then obeys one command per stdin line (answering "ok" or "error ..."):
 *   down ID | up ID                a broker stops/starts answering
 *   leader TOPIC ID                moves partition 0's leader to broker ID
 *   errors N CODE                  the next N Produce requests fail with CODE
 *                                  (a Kafka error code, e.g. 19 NOT_ENOUGH_REPLICAS)
 *   rtt ID MS                      broker ID answers MS later
 * and exits at end of input.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>

#define KAFKA_API_PRODUCE 0

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: mockkafka BROKERS TOPIC...\n");
		return 2;
	}
	int brokers = atoi(argv[1]);
	char err[256];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	rd_kafka_conf_set(conf, "log_level", "2", err, sizeof err);
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
	if (rk == NULL) {
		fprintf(stderr, "mockkafka: %s\n", err);
		return 1;
	}
	rd_kafka_mock_cluster_t *mc = rd_kafka_mock_cluster_new(rk, brokers);
	if (mc == NULL) {
		fprintf(stderr, "mockkafka: cannot create the mock cluster\n");
		return 1;
	}
	for (int i = 2; i < argc; i++)
		if (rd_kafka_mock_topic_create(mc, argv[i], 1, brokers) != RD_KAFKA_RESP_ERR_NO_ERROR) {
			fprintf(stderr, "mockkafka: cannot create topic %s\n", argv[i]);
			return 1;
		}
	printf("bootstrap %s\n", rd_kafka_mock_cluster_bootstraps(mc));
	fflush(stdout);
	char line[512];
	while (fgets(line, sizeof line, stdin)) {
		char topic[256];
		int a, b;
		rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
		if (sscanf(line, "down %d", &a) == 1)
			e = rd_kafka_mock_broker_set_down(mc, a);
		else if (sscanf(line, "up %d", &a) == 1)
			e = rd_kafka_mock_broker_set_up(mc, a);
		else if (sscanf(line, "leader %255s %d", topic, &a) == 2)
			e = rd_kafka_mock_partition_set_leader(mc, topic, 0, a);
		else if (sscanf(line, "rtt %d %d", &a, &b) == 2)
			e = rd_kafka_mock_broker_set_rtt(mc, a, b);
		else if (sscanf(line, "errors %d %d", &a, &b) == 2) {
			for (int i = 0; i < a; i++)
				rd_kafka_mock_push_request_errors(mc, KAFKA_API_PRODUCE, 1, (rd_kafka_resp_err_t)b);
		} else {
			printf("error unknown command\n");
			fflush(stdout);
			continue;
		}
		if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
			printf("error %s\n", rd_kafka_err2str(e));
		else
			printf("ok\n");
		fflush(stdout);
	}
	rd_kafka_mock_cluster_destroy(mc);
	rd_kafka_destroy(rk);
	return 0;
}
