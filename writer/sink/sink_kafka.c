/* sink_kafka.c - the Kafka sink backend (librdkafka idempotent producer).
 *
 * One message per journal record: key = the record's SKU (records that only
 * name a reservation/order get it from the sink thread's model), value = the
 * compact JSON in writer/EVENTS.md ("Kafka encoding"), headers `seq` and
 * `idx` (decimal). The default partitioner hashes the key, so every record
 * of a SKU goes to one partition, in journal order (idempotence keeps order
 * across retries): give the topic one partition per SKU shard, or more.
 *
 * The cursor advances only when the delivery reports of a WHOLE batch (and
 * of every batch before it) came back without error; it is persisted in
 * `<data_dir>/kafka-<name>.cursor` (write tmp, fsync, rename, fsync dir) at
 * most every 100 ms and on close, and the persisted value is the sink's
 * durable cursor. After a restart or a delivery failure the sink resends
 * from the cursor, so consumers see each (seq, idx) at least once and drop
 * any (seq, idx) <= the last one they applied. The model the records' SKUs
 * come from starts from the sink thread's model checkpoint, which is never
 * past the cursor (sink.h), so the journal before it may be deleted.
 */
#include "common/fs_u64file.h"
#include "writer/sink/sink.h"
#include "common/fs_clock.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <librdkafka/rdkafka.h>

#define KF_RING          4096u    /* batches in flight (power of two) */
#define KF_JSON_BYTES    2048u
#define KF_PATH_BYTES    1024u
#define KF_PERSIST_MS    100
#define KF_CLOSE_FLUSH_MS 5000

_Static_assert((KF_RING & (KF_RING - 1)) == 0, "ring size is a power of two");

struct kf_slot {
	uint64_t seq;             /* 0 = free */
	uint32_t remaining;       /* delivery reports still expected */
	uint32_t produced;        /* records handed to librdkafka so far */
	uint32_t complete;        /* 1 once every record was handed over */
};

struct kafka_sink {
	rd_kafka_t *rk;
	char topic[256];
	char cursor_path[KF_PATH_BYTES];
	struct kf_slot ring[KF_RING];
	uint64_t first_seq;       /* oldest batch in flight (when in_flight > 0) */
	uint32_t in_flight;
	uint64_t durable;         /* every record of batches <= durable is acknowledged */
	uint64_t persisted;       /* value in the cursor file */
	int64_t persisted_ms;
	int failed;               /* a delivery failed: resend from the cursor */
	char fail_reason[160];
	uint64_t delivered;
};

/* ---------------------------------------------------------------- cursor */

static uint64_t cursor_read(const char *path) { return fs_u64file_read(path); }

static int cursor_write(const char *path, uint64_t seq) { return fs_u64file_write(path, seq, 0644); }

/* ------------------------------------------------------------- delivery */

static struct kf_slot *slot_of(struct kafka_sink *k, uint64_t seq)
{
	struct kf_slot *s = &k->ring[seq & (KF_RING - 1)];
	return s->seq == seq ? s : NULL;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	struct kafka_sink *k = opaque;
	uint64_t seq = (uint64_t)(uintptr_t)msg->_private;
	struct kf_slot *s = slot_of(k, seq);
	(void)rk;
	if (msg->err) {
		if (!k->failed)
			snprintf(k->fail_reason, sizeof k->fail_reason, "delivery of batch %" PRIu64 ": %s", seq,
			         rd_kafka_err2str(msg->err));
		k->failed = 1;
		return;
	}
	if (!s)
		return;   /* a batch abandoned by a reset */
	assert(s->remaining > 0);
	s->remaining--;
	k->delivered++;
}

/* Pops fully acknowledged batches off the ring, in order. */
static void advance(struct kafka_sink *k)
{
	while (k->in_flight > 0 && !k->failed) {
		struct kf_slot *s = slot_of(k, k->first_seq);
		assert(s != NULL);
		if (s->remaining > 0 || !s->complete)
			return;
		k->durable = s->seq;
		s->seq = 0;
		k->first_seq++;
		k->in_flight--;
	}
}

static int persist(struct kafka_sink *k, int64_t now_ms, int force, char *err, size_t err_len)
{
	if (k->durable == k->persisted || (!force && now_ms - k->persisted_ms < KF_PERSIST_MS))
		return 0;
	if (cursor_write(k->cursor_path, k->durable) != 0) {
		int n = snprintf(err, err_len, "kafka cursor %.200s: %s", k->cursor_path, strerror(errno));
		(void)n;
		return -1;
	}
	k->persisted = k->durable;
	k->persisted_ms = now_ms;
	return 0;
}

/* ------------------------------------------------------------ JSON value */

static void js_str(char *out, size_t cap, size_t *len, const char *name, const char *s, size_t n)
{
	*len += (size_t)snprintf(out + *len, cap - *len, ",\"%s\":\"", name);
	for (size_t i = 0; i < n && *len + 8 < cap; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			*len += (size_t)snprintf(out + *len, cap - *len, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			*len += (size_t)snprintf(out + *len, cap - *len, "\\u%04x", ch);
		else
			out[(*len)++] = (char)ch;
	}
	*len += (size_t)snprintf(out + *len, cap - *len, "\"");
}

/* The record as compact JSON (format in writer/EVENTS.md). Returns length. */
static size_t record_json(const struct jr_batch *b, uint32_t idx, const struct fs_cmd *c,
                          const char *sku, size_t sku_len, char *out, size_t cap)
{
	size_t len = (size_t)snprintf(out, cap,
		"{\"seq\":%" PRIu64 ",\"idx\":%u,\"n\":%u,\"time_ms\":%" PRId64 ",\"type\":\"%s\"",
		b->seq, idx, b->record_count, b->time_ms, fs_cmd_type_name(c->type));
	js_str(out, cap, &len, "sku", sku, sku_len);
	if (c->user_len)
		js_str(out, cap, &len, "user", c->user, c->user_len);
	if (c->key_len)
		js_str(out, cap, &len, "key", c->key, c->key_len);
	if (c->text_len && c->type != FS_CMD_CHECKOUT)   /* payment tokens stay out of the log */
		js_str(out, cap, &len, "text", c->text, c->text_len);
	len += (size_t)snprintf(out + len, cap - len,
		",\"qty\":%u,\"ref\":%" PRIu64 ",\"out_ref\":%" PRIu64 ",\"out_status\":%u,\"out_val\":%" PRId64
		",\"pay\":%u", c->quantity, c->ref, c->out_ref, c->out_status, c->out_val, c->pay);
	if (c->type == FS_CMD_SALE_CREATE)
		len += (size_t)snprintf(out + len, cap - len,
			",\"sale\":{\"total\":%" PRIu64 ",\"per_user\":%u,\"hold_ms\":%u,\"waitlist_max\":%u,"
			"\"default_tier\":%u,\"price_cents\":%" PRId64 ",\"opens_at_ms\":%" PRId64 "}",
			c->sale.total, c->sale.per_user, c->sale.hold_ms, c->sale.waitlist_max, c->sale.default_tier,
			c->sale.price_cents, c->sale.opens_at_ms);
	len += (size_t)snprintf(out + len, cap - len, "}");
	assert(len < cap);
	return len;
}

/* ------------------------------------------------------------------ ops */

static void kafka_sink_close(void *st)
{
	struct kafka_sink *k = st;
	if (!k)
		return;
	char err[512];
	if (k->rk) {
		if (k->failed)
			rd_kafka_purge(k->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
		else
			rd_kafka_flush(k->rk, KF_CLOSE_FLUSH_MS);
		rd_kafka_poll(k->rk, 0);
		advance(k);
		if (persist(k, fs_mono_ms(), 1, err, sizeof err) != 0)
			fprintf(stderr, "sink kafka: %s\n", err);
		rd_kafka_destroy(k->rk);
	}
	free(k);
}

static int conf_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *err, size_t err_len)
{
	return rd_kafka_conf_set(conf, key, value, err, err_len) == RD_KAFKA_CONF_OK ? 0 : -1;
}

static void *kafka_sink_open(const struct sink_config *cfg, uint64_t *cursor, char *err, size_t err_len)
{
	struct kafka_sink *k = calloc(1, sizeof *k);
	if (!k) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	snprintf(k->topic, sizeof k->topic, "%s", cfg->topic);
	snprintf(k->cursor_path, sizeof k->cursor_path, "%s/kafka-%s.cursor", cfg->data_dir, cfg->name);
	k->durable = k->persisted = cursor_read(k->cursor_path);
	rd_kafka_conf_t *conf = rd_kafka_conf_new();
	if (conf_set(conf, "bootstrap.servers", cfg->address, err, err_len) != 0 ||
	    conf_set(conf, "enable.idempotence", "true", err, err_len) != 0 ||
	    conf_set(conf, "acks", "all", err, err_len) != 0 ||
	    conf_set(conf, "linger.ms", "5", err, err_len) != 0) {
		rd_kafka_conf_destroy(conf);
		free(k);
		return NULL;
	}
	rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
	rd_kafka_conf_set_opaque(conf, k);
	k->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, err_len);
	if (!k->rk) {
		rd_kafka_conf_destroy(conf);
		free(k);
		return NULL;
	}
	*cursor = k->durable;
	return k;
}

/* Produces records [s->produced, n) of batch b. SINK_OK, SINK_BUSY (queue
 * full: resume later from s->produced) or SINK_RETRY. */
static int produce_records(struct kafka_sink *k, struct kf_slot *s, const struct jr_batch *b,
                           const struct fs_cmd *recs, uint32_t n, const struct sink_model *m,
                           const uint32_t *sku_idx, char *err, size_t err_len)
{
	char json[KF_JSON_BYTES], seq_text[24], idx_text[16];
	snprintf(seq_text, sizeof seq_text, "%" PRIu64, b->seq);
	for (uint32_t i = s->produced; i < n; i++) {
		const struct fs_cmd *c = &recs[i];
		const char *sku = c->sku;
		size_t sku_len = c->sku_len;
		if (sku_len == 0 && sku_idx[i] != SM_NO_SKU) {
			sku = m->skus[sku_idx[i]].sku;
			sku_len = m->skus[sku_idx[i]].sku_len;
		}
		size_t len = record_json(b, i, c, sku, sku_len, json, sizeof json);
		snprintf(idx_text, sizeof idx_text, "%u", i);
		rd_kafka_resp_err_t e = rd_kafka_producev(k->rk, RD_KAFKA_V_TOPIC(k->topic),
			RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_KEY(sku, sku_len),
			RD_KAFKA_V_VALUE(json, len), RD_KAFKA_V_HEADER("seq", seq_text, -1),
			RD_KAFKA_V_HEADER("idx", idx_text, -1),
			RD_KAFKA_V_OPAQUE((void *)(uintptr_t)b->seq), RD_KAFKA_V_END);
		if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
			rd_kafka_poll(k->rk, 0);
			return SINK_BUSY;
		}
		if (e) {
			snprintf(err, err_len, "kafka produce: %s", rd_kafka_err2str(e));
			return SINK_RETRY;
		}
		s->produced = i + 1;
		s->remaining++;
	}
	return SINK_OK;
}

static int kafka_sink_apply(void *st, const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n,
                            const struct sink_model *m, const uint32_t *sku_idx, char *err, size_t err_len)
{
	struct kafka_sink *k = st;
	assert(k && b && m);
	if (k->failed) {
		snprintf(err, err_len, "%s", k->fail_reason);
		return SINK_RESET;
	}
	struct kf_slot *s = slot_of(k, b->seq);
	if (!s) {   /* a new batch: take a slot */
		advance(k);
		if (k->in_flight == KF_RING)
			return SINK_BUSY;
		assert(k->in_flight == 0 || b->seq == k->first_seq + k->in_flight);
		if (k->in_flight == 0)
			k->first_seq = b->seq;
		s = &k->ring[b->seq & (KF_RING - 1)];
		*s = (struct kf_slot){.seq = b->seq};
		k->in_flight++;
	}
	int rc = produce_records(k, s, b, recs, n, m, sku_idx, err, err_len);
	if (rc != SINK_OK)
		return rc;
	s->complete = 1;
	rd_kafka_poll(k->rk, 0);
	return SINK_OK;
}

static int kafka_sink_tick(void *st, int64_t now_ms, char *err, size_t err_len)
{
	struct kafka_sink *k = st;
	rd_kafka_poll(k->rk, 0);
	advance(k);
	if (k->failed) {
		snprintf(err, err_len, "%s", k->fail_reason);
		return -1;
	}
	return persist(k, now_ms, 0, err, err_len);
}

/* The cursor in the file, not the acknowledged one: it is what open
 * returns after a crash, and the model checkpoint (sink.h) must never pass
 * it. It trails the acknowledgements by KF_PERSIST_MS at most. */
static uint64_t kafka_sink_cursor(void *st)
{
	return ((struct kafka_sink *)st)->persisted;
}

static const struct sink_ops kafka_ops = {
	.name = "kafka",
	.wants_model = 1,
	.open = kafka_sink_open,
	.apply_batch = kafka_sink_apply,
	.durable_cursor = kafka_sink_cursor,
	.tick = kafka_sink_tick,
	.close = kafka_sink_close,
};

const struct sink_ops *sink_ops_kafka(void)
{
	return &kafka_ops;
}
