/* flashsale_loader.c - `flashsale-loader`: consumes the journal topic the
 * Kafka sink writes and applies it to PostgreSQL with the SAME function the
 * direct sink uses (pg_apply_batch), so both paths give identical tables.
 *
 * Records are grouped by seq until all `n` of a batch are in; batches are
 * applied strictly in order (cursor + 1) under the sink_cursor row `--cursor`
 * (default "loader"), which is also the dedup rule: any (seq, idx) <= the
 * cursor is dropped (writer/EVENTS.md, "Kafka encoding"). Offsets are not
 * committed: a restart re-reads the topic and skips what is applied.
 */
#define JSMN_STATIC
#include <jsmn.h>

#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

#include "common/fs_shard.h"
#include "writer/sink/pg_apply.h"
#include "writer/sink/sink_model.h"

#define LD_TOKENS_MAX 64

struct pending {
	uint64_t seq;             /* key */
	uint32_t n, got;
	int64_t time_ms;
	struct fs_cmd *recs;      /* n records; type 0 = not yet received */
};

struct loader {
	PGconn *pg;
	struct pg_apply *apply;
	const char *conninfo, *cursor_name;
	uint64_t cursor;
	struct sm_tab pending;    /* struct pending by seq */
	uint64_t applied_batches, applied_records, dropped, bad;
};

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void usage(FILE *f)
{
	fprintf(f, "usage: flashsale-loader --kafka BROKERS --topic T --postgres CONNINFO\n"
	           "                        [--cursor NAME] [--group ID] [--until-seq N]\n"
	           "  Applies the journal topic written by flashsaled's Kafka sink to PostgreSQL.\n"
	           "  --cursor: sink_cursor row (default loader); --group: consumer group\n"
	           "  (default flashsale-loader); --until-seq: exit 0 once batch N is applied.\n"
	           "  --shard NAME --shard-map FILE: the topic of appliance NAME (flashsaled --shard,\n"
	           "  default topic flashsale.journal.NAME): rows carry shard NAME, ids its index.\n"
	           "  --writer K: writer shard K of a box run with --writers N > 1 (default topic\n"
	           "  flashsale.journal[.NAME].wK): rows labelled wK (NAME/wK), ids with K in bits 48..55.\n");
}

/* ------------------------------------------------------------ JSON decode */

static int tok_eq(const char *js, const jsmntok_t *t, const char *s)
{
	size_t n = strlen(s);
	return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n && memcmp(js + t->start, s, n) == 0;
}

static int64_t tok_i64(const char *js, const jsmntok_t *t)
{
	return strtoll(js + t->start, NULL, 10);
}

static uint64_t tok_u64(const char *js, const jsmntok_t *t)
{
	return strtoull(js + t->start, NULL, 10);
}

/* Decodes a JSON string token into a byte field (see the encoding rules). */
static int tok_bytes(const char *js, const jsmntok_t *t, char *dst, uint8_t *dst_len, size_t cap)
{
	size_t len = 0;
	for (int i = t->start; i < t->end; i++) {
		char ch = js[i];
		if (ch == '\\' && i + 1 < t->end) {
			ch = js[++i];
			if (ch == 'u' && i + 4 < t->end) {
				char hex[5] = {js[i + 1], js[i + 2], js[i + 3], js[i + 4], 0};
				ch = (char)strtoul(hex, NULL, 16);
				i += 4;
			} else if (ch == 'n' || ch == 't' || ch == 'r') {
				ch = ch == 'n' ? '\n' : ch == 't' ? '\t' : '\r';
			}
		}
		if (len == cap)
			return -1;
		dst[len++] = ch;
	}
	*dst_len = (uint8_t)len;
	return 0;
}

static uint8_t type_parse(const char *js, const jsmntok_t *t)
{
	for (uint8_t i = 1; i < FS_CMD_TYPE_COUNT; i++)
		if (tok_eq(js, t, fs_cmd_type_name(i)))
			return i;
	return 0;
}

static void sale_field(const char *js, const jsmntok_t *k, const jsmntok_t *v, struct fs_sale_args *s)
{
	if (tok_eq(js, k, "total")) s->total = tok_u64(js, v);
	else if (tok_eq(js, k, "per_user")) s->per_user = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "hold_ms")) s->hold_ms = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "waitlist_max")) s->waitlist_max = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "default_tier")) s->default_tier = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "price_cents")) s->price_cents = tok_i64(js, v);
	else if (tok_eq(js, k, "opens_at_ms")) s->opens_at_ms = tok_i64(js, v);
}

struct msg_head {
	uint64_t seq;
	uint32_t idx, n;
	int64_t time_ms;
};

/* One key/value pair of the top-level object. 0, or -1 when malformed. */
static int field(const char *js, const jsmntok_t *k, const jsmntok_t *v, struct msg_head *h, struct fs_cmd *c)
{
	if (tok_eq(js, k, "seq")) h->seq = tok_u64(js, v);
	else if (tok_eq(js, k, "idx")) h->idx = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "n")) h->n = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "time_ms")) h->time_ms = tok_i64(js, v);
	else if (tok_eq(js, k, "type")) c->type = type_parse(js, v);
	else if (tok_eq(js, k, "sku")) return tok_bytes(js, v, c->sku, &c->sku_len, FS_SKU_LEN_MAX);
	else if (tok_eq(js, k, "user")) return tok_bytes(js, v, c->user, &c->user_len, FS_ID_LEN_MAX);
	else if (tok_eq(js, k, "key")) return tok_bytes(js, v, c->key, &c->key_len, FS_ID_LEN_MAX);
	else if (tok_eq(js, k, "text")) return tok_bytes(js, v, c->text, &c->text_len, FS_ID_LEN_MAX);
	else if (tok_eq(js, k, "qty")) c->quantity = (uint32_t)tok_u64(js, v);
	else if (tok_eq(js, k, "ref")) c->ref = tok_u64(js, v);
	else if (tok_eq(js, k, "out_ref")) c->out_ref = tok_u64(js, v);
	else if (tok_eq(js, k, "out_status")) c->out_status = (uint8_t)tok_u64(js, v);
	else if (tok_eq(js, k, "out_val")) c->out_val = tok_i64(js, v);
	else if (tok_eq(js, k, "pay")) c->pay = (uint8_t)tok_u64(js, v);
	return 0;
}

/* Parses a message value into h and c. 0, or -1 when malformed. */
static int decode(const char *js, size_t len, struct msg_head *h, struct fs_cmd *c)
{
	jsmn_parser p;
	jsmntok_t t[LD_TOKENS_MAX];
	jsmn_init(&p);
	int count = jsmn_parse(&p, js, len, t, LD_TOKENS_MAX);
	if (count < 1 || t[0].type != JSMN_OBJECT)
		return -1;
	memset(h, 0, sizeof *h);
	memset(c, 0, sizeof *c);
	for (int i = 1; i + 1 < count;) {
		if (t[i + 1].type == JSMN_OBJECT) {   /* "sale": flat object of numbers */
			int pairs = t[i + 1].size;
			for (int j = 0; j < pairs && i + 3 + 2 * j < count; j++)
				sale_field(js, &t[i + 2 + 2 * j], &t[i + 3 + 2 * j], &c->sale);
			i += 2 + 2 * pairs;
			continue;
		}
		if (field(js, &t[i], &t[i + 1], h, c) != 0)
			return -1;
		i += 2;
	}
	return c->type && h->seq && h->n && h->idx < h->n ? 0 : -1;
}

/* ------------------------------------------------------------- applying */

static void pending_drop(struct loader *l, struct pending *p)
{
	free(p->recs);
	sm_tab_remove(&l->pending, p->seq);
}

static int pg_connect(struct loader *l)
{
	char err[512];
	if (l->pg)
		PQfinish(l->pg);
	l->pg = PQconnectdb(l->conninfo);
	if (PQstatus(l->pg) != CONNECTION_OK || pg_migrate(l->pg, err, sizeof err) != 0 ||
	    pg_cursor_get(l->pg, l->cursor_name, &l->cursor, err, sizeof err) != 0) {
		fprintf(stderr, "flashsale-loader: postgres: %s\n",
		        PQstatus(l->pg) != CONNECTION_OK ? PQerrorMessage(l->pg) : err);
		return -1;
	}
	return 0;
}

/* Applies every complete batch that is next in line. 0, or -1 on a data
 * error (the loader stops: the topic does not match the tables). */
static int apply_ready(struct loader *l)
{
	struct pending *p;
	while ((p = sm_tab_find(&l->pending, l->cursor + 1)) && p->got == p->n) {
		char err[512];
		struct jr_batch b = {.seq = p->seq, .time_ms = p->time_ms, .record_count = p->n};
		int rc = pg_apply_batch(l->apply, l->pg, l->cursor_name, &b, p->recs, p->n, err, sizeof err);
		if (rc == PG_APPLY_ERR_DATA) {
			fprintf(stderr, "flashsale-loader: %s\n", err);
			return -1;
		}
		if (rc == PG_APPLY_ERR_DB || rc == PG_APPLY_ERR_GAP) {
			fprintf(stderr, "flashsale-loader: batch %" PRIu64 ": %s (reconnecting)\n", p->seq, err);
			sleep(1);
			if (pg_connect(l) != 0)
				continue;
			continue;
		}
		l->cursor = p->seq;
		l->applied_batches++;
		l->applied_records += p->n;
		pending_drop(l, p);
	}
	return 0;
}

/* Files one message under its batch. */
static void take(struct loader *l, const rd_kafka_message_t *m)
{
	struct msg_head h;
	struct fs_cmd c;
	if (decode(m->payload, m->len, &h, &c) != 0) {
		l->bad++;
		return;
	}
	if (h.seq <= l->cursor) {   /* dedup: already applied */
		l->dropped++;
		return;
	}
	struct pending *p = sm_tab_upsert(&l->pending, h.seq);
	if (!p || (!p->recs && !(p->recs = calloc(h.n, sizeof *p->recs)))) {
		fprintf(stderr, "flashsale-loader: out of memory\n");
		exit(2);
	}
	if (p->n == 0) {
		p->n = h.n;
		p->time_ms = h.time_ms;
	}
	if (h.n != p->n || p->recs[h.idx].type != 0) {   /* duplicate (or inconsistent) */
		l->dropped++;
		return;
	}
	p->recs[h.idx] = c;
	p->got++;
}

static rd_kafka_t *consumer(const char *brokers, const char *group, const char *topic)
{
	char err[512];
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "group.id", group, err, sizeof err) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "auto.offset.reset", "earliest", err, sizeof err) != RD_KAFKA_CONF_OK ||
	    rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err) != RD_KAFKA_CONF_OK) {
		fprintf(stderr, "flashsale-loader: kafka: %s\n", err);
		return NULL;
	}
	rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
	if (!rk) {
		fprintf(stderr, "flashsale-loader: kafka: %s\n", err);
		return NULL;
	}
	rd_kafka_poll_set_consumer(rk);
	rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(topics, topic, RD_KAFKA_PARTITION_UA);
	rd_kafka_resp_err_t e = rd_kafka_subscribe(rk, topics);
	rd_kafka_topic_partition_list_destroy(topics);
	if (e) {
		fprintf(stderr, "flashsale-loader: subscribe %s: %s\n", topic, rd_kafka_err2str(e));
		rd_kafka_destroy(rk);
		return NULL;
	}
	return rk;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{"kafka", required_argument, NULL, 'k'}, {"topic", required_argument, NULL, 't'},
		{"postgres", required_argument, NULL, 'p'}, {"cursor", required_argument, NULL, 'c'},
		{"group", required_argument, NULL, 'g'}, {"until-seq", required_argument, NULL, 'u'},
		{"help", no_argument, NULL, 'h'}, {"shard", required_argument, NULL, 's'},
		{"shard-map", required_argument, NULL, 'm'}, {"writer", required_argument, NULL, 'w'},
		{NULL, 0, NULL, 0}};
	const char *shard = NULL, *map_path = NULL;
	long writer = -1;   /* --writer K; -1: a box with one writer */
	const char *brokers = NULL, *topic = NULL, *group = "flashsale-loader";
	struct loader l = {.cursor_name = "loader"};
	uint64_t until = 0;
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'k': brokers = optarg; break;
		case 't': topic = optarg; break;
		case 'p': l.conninfo = optarg; break;
		case 'c': l.cursor_name = optarg; break;
		case 'g': group = optarg; break;
		case 'u': until = strtoull(optarg, NULL, 10); break;
		case 's': shard = optarg; break;
		case 'm': map_path = optarg; break;
		case 'w': {
			char *end;
			writer = strtol(optarg, &end, 10);
			if (end == optarg || *end != 0 || writer < 0 || writer >= (long)FS_SHARD_WRITERS_MAX) {
				fprintf(stderr, "flashsale-loader: --writer %s: want 0..%u\n", optarg, FS_SHARD_WRITERS_MAX - 1);
				return 2;
			}
			break;
		}
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	static char shard_topic[128];
	char label[FS_SHARD_LABEL_LEN_MAX + 1] = "";
	int appliance = 0;
	if (shard != NULL || map_path != NULL) {
		static struct fs_shard_map map;
		char err[256];
		if (shard == NULL || map_path == NULL || fs_shard_load(&map, map_path, err, sizeof err) != 0 ||
		    (appliance = fs_shard_appliance_index(&map, shard)) < 0) {
			fprintf(stderr, "flashsale-loader: --shard NAME and --shard-map FILE (declaring NAME) go together\n");
			return 2;
		}
	}
	/* the names flashsaled's sink gives this shard (any N > K names writer K alike) */
	uint32_t wk = writer < 0 ? 0 : (uint32_t)writer, wn = writer < 0 ? 1 : FS_SHARD_WRITERS_MAX;
	if (fs_shard_sink_name(label, sizeof label, FS_SHARD_LABEL, shard, NULL, wk, wn) != 0 ||
	    fs_shard_sink_name(shard_topic, sizeof shard_topic, FS_SHARD_TOPIC, shard, NULL, wk, wn) != 0)
		return 2;
	if (topic == NULL && (shard != NULL || writer >= 0))
		topic = shard_topic;
	if (!brokers || !topic || !l.conninfo || optind != argc) {
		fprintf(stderr, "flashsale-loader: --kafka, --topic and --postgres are required\n");
		return 2;
	}
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	if (!(l.apply = pg_apply_new()) || sm_tab_init(&l.pending, sizeof(struct pending), 256) != 0 ||
	    pg_connect(&l) != 0)
		return 2;
	pg_apply_set_shard(l.apply, label, (uint32_t)appliance, wk);
	rd_kafka_t *rk = consumer(brokers, group, topic);
	if (!rk)
		return 2;
	int rc = 0;
	while (!stop_flag && (until == 0 || l.cursor < until)) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
		if (!m)
			continue;
		if (!m->err)
			take(&l, m);
		rd_kafka_message_destroy(m);
		if (apply_ready(&l) != 0) {
			rc = 1;
			break;
		}
	}
	printf("flashsale-loader: applied %" PRIu64 " batches (%" PRIu64 " records), cursor %" PRIu64
	       ", dropped %" PRIu64 " duplicates, %" PRIu64 " malformed\n",
	       l.applied_batches, l.applied_records, l.cursor, l.dropped, l.bad);
	rd_kafka_consumer_close(rk);
	rd_kafka_destroy(rk);
	for (size_t i = 0; i < l.pending.cap; i++) {
		struct pending *p = sm_tab_slot(&l.pending, i);
		if (p)
			free(p->recs);
	}
	sm_tab_free(&l.pending);
	pg_apply_free(l.apply);
	PQfinish(l.pg);
	return rc;
}
