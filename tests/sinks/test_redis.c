/* test_redis.c - the Redis sink against a real Redis (FS_TEST_REDIS=host:port):
 * keys hold the GET /v1/skus JSON with a TTL; a burst is coalesced to at
 * most 100 PUBLISHes per SKU per second (driven by a fake clock, so no
 * wall-clock threshold); a quiet key is refreshed before its TTL lapses;
 * the sink thread reconnects after Redis drops its connection. */
#include <inttypes.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>
#include <hiredis/hiredis.h>

#include "sink_testlib.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/sink/sink.h"

static char host[128];
static int port;

static redisContext *connect_redis(void)
{
	redisContext *c = redisConnect(host, port);
	CHECK(c && !c->err);
	return c;
}

/* The JSON the sink must write, formatted independently. */
static void expected_json(const struct sm_sku *s, char *out, size_t cap)
{
	const char *state = s->state == FS_SALE_OPEN && s->available == 0 ? "sold_out" : fs_sale_state_name(s->state);
	snprintf(out, cap, "{\"sku\":\"%s\",\"state\":\"%s\",\"total\":%" PRId64 ",\"available\":%" PRId64
	         ",\"reserved\":%" PRId64 ",\"sold\":%" PRId64 ",\"version\":%" PRIu64 "}",
	         s->sku, state, s->total, s->available, s->reserved, s->sold, s->api_version);
}

static int key_equals(redisContext *c, const struct sm_sku *s)
{
	char want[512];
	expected_json(s, want, sizeof want);
	redisReply *r = redisCommand(c, "GET stock:%s", s->sku);
	CHECK(r != NULL);
	int eq = r->type == REDIS_REPLY_STRING && strcmp(r->str, want) == 0;
	freeReplyObject(r);
	return eq;
}

static long long cmd_int(redisContext *c, const char *cmd, const char *arg)
{
	redisReply *r = redisCommand(c, cmd, arg);
	CHECK(r && r->type == REDIS_REPLY_INTEGER);
	long long v = r->integer;
	freeReplyObject(r);
	return v;
}

/* Counts messages waiting on a subscriber (until 300 ms of silence). */
static int count_messages(redisContext *sub, char *last, size_t cap)
{
	struct timeval tv = {.tv_usec = 300000};
	redisSetTimeout(sub, tv);
	int count = 0;
	redisReply *r;
	while (redisGetReply(sub, (void **)&r) == REDIS_OK) {
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 3 && strcmp(r->element[0]->str, "message") == 0) {
			count++;
			snprintf(last, cap, "%s", r->element[2]->str);
		}
		freeReplyObject(r);
	}
	return count;
}

static void test_rate_limit(const char *address)
{
	const struct sink_ops *ops = sink_ops_redis();
	CHECK(ops != NULL);
	struct sink_config cfg = {.kind = SINK_REDIS, .address = address, .redis_updates_per_s = 100,
	                          .redis_ttl_s = 5};
	char err[256];
	uint64_t cursor = 99;
	void *st = ops->open(&cfg, &cursor, err, sizeof err);
	CHECK(st != NULL && cursor == 0);
	redisContext *c = connect_redis(), *sub = connect_redis();
	freeReplyObject(redisCommand(c, "DEL stock:sku-0 stock:sku-1"));
	freeReplyObject(redisCommand(sub, "SUBSCRIBE stock:sku-0"));

	struct gen *g = gen_new(5, 2, 1000, 0);
	struct sink_model m;
	CHECK(sm_init(&m, 0) == 0);
	struct fs_cmd recs[64];
	uint32_t idx[64];
	int64_t t = 1000000000000;
	for (uint64_t seq = 1; seq <= 1000; seq++, t++) {   /* 1000 batches in 1 s of fake time */
		uint32_t n = gen_batch(g, recs, 64);
		CHECK(sm_apply_batch(&m, seq, gen_time_ms(g), recs, n, idx) == 1);
		struct jr_batch b = {.seq = seq, .time_ms = gen_time_ms(g), .record_count = n};
		CHECK(ops->apply_batch(st, &b, recs, n, &m, idx, err, sizeof err) == SINK_OK);
		CHECK(ops->tick(st, t, err, sizeof err) == 0);
	}
	CHECK(ops->tick(st, t + 10, err, sizeof err) == 0);   /* the last window opens */
	CHECK(ops->durable_cursor(st) == 1000);
	CHECK(key_equals(c, &m.skus[0]) && key_equals(c, &m.skus[1]));
	long long ttl = cmd_int(c, "TTL %s", "stock:sku-0");
	CHECK(ttl > 0 && ttl <= 5);

	char last[512] = "", want[512];
	int published = count_messages(sub, last, sizeof last);
	expected_json(&m.skus[0], want, sizeof want);
	printf("burst of 1000 batches in 1 s (fake clock): %d publishes for sku-0\n", published);
	CHECK(published <= 1000 / 10 + 1);   /* <= 100 updates/s */
	CHECK(published >= 50);              /* and it does keep publishing */
	CHECK(strcmp(last, want) == 0);      /* the latest state wins */

	/* Quiet SKU: refreshed (SET) once half the TTL has passed. */
	CHECK(cmd_int(c, "DEL %s", "stock:sku-0") == 1);
	CHECK(ops->tick(st, t + 100, err, sizeof err) == 0);
	CHECK(cmd_int(c, "EXISTS %s", "stock:sku-0") == 0);
	CHECK(ops->tick(st, t + 10 + 2500, err, sizeof err) == 0);
	CHECK(key_equals(c, &m.skus[0]));

	ops->close(st);
	sm_free(&m);
	gen_free(g);
	redisFree(c);
	redisFree(sub);
}

static _Atomic uint64_t durable;

static void append(struct journal *j, struct gen *g, struct sink_model *m, uint32_t batches)
{
	struct fs_cmd recs[200];
	static uint8_t body[200 * WR_REC_BYTES_MAX];
	for (uint32_t i = 0; i < batches; i++) {
		uint32_t n = gen_batch(g, recs, 200);
		uint64_t seq = jr_append(j, gen_time_ms(g), n, body, gen_encode(recs, n, body));
		CHECK(seq != 0 && sm_apply_batch(m, seq, gen_time_ms(g), recs, n, NULL) == 1);
		atomic_store(&durable, seq);
	}
}

static void wait_keys(redisContext *c, const struct sink_model *m)
{
	for (int i = 0; i < 3000; i++) {
		uint32_t ok = 0;
		for (uint32_t k = 0; k < m->sku_count; k++)
			ok += (uint32_t)key_equals(c, &m->skus[k]);
		if (ok == m->sku_count)
			return;
		usleep(20000);
	}
	fprintf(stderr, "redis keys never matched the journal\n");
	exit(1);
}

static void test_thread_reconnect(const char *address)
{
	char *dir = test_tmpdir("redis");
	char err[512];
	struct jr_config jc = {.dir = dir, .segment_bytes = 1u << 20, .no_sync = 1};
	struct journal *j = jr_open(&jc, NULL, NULL, err, sizeof err);
	CHECK(j != NULL);
	struct gen *g = gen_new(9, 3, 500, 10);
	struct sink_model m;
	CHECK(sm_init(&m, 0) == 0);
	append(j, g, &m, 30);

	struct sink_config cfg = {.kind = SINK_REDIS, .journal_dir = dir, .durable_seq = &durable, .address = address};
	struct sink *s = sink_start(&cfg, err, sizeof err);
	CHECK(s != NULL);
	redisContext *c = connect_redis();
	wait_keys(c, &m);

	/* Redis drops every client connection (as on a restart). */
	freeReplyObject(redisCommand(c, "CLIENT KILL TYPE normal"));
	append(j, g, &m, 10);
	sink_notify(s);
	wait_keys(c, &m);
	struct sink_stats st;
	sink_stats(s, &st);
	printf("after a dropped connection: errors %" PRIu64 ", last: %s\n", st.errors, st.last_error);
	CHECK(st.errors >= 1 && st.applied_seq == 40);
	sink_stop(s);
	jr_close(j);
	redisFree(c);
	sm_free(&m);
	gen_free(g);
	test_rmdir(dir);
	free(dir);
}

int main(void)
{
	const char *address = getenv("FS_TEST_REDIS");
	if (!address || !*address) {
		printf("skipped: FS_TEST_REDIS is not set (host:port of a Redis this test may write stock:* keys to)\n");
		return SKIP_EXIT;
	}
	const char *colon = strrchr(address, ':');
	CHECK(colon && (size_t)(colon - address) < sizeof host);
	memcpy(host, address, (size_t)(colon - address));
	port = atoi(colon + 1);
	test_rate_limit(address);
	test_thread_reconnect(address);
	printf("sinks_redis: ok\n");
	return 0;
}
