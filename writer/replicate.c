/* replicate.c - the journal replicated through a Kafka partition, fencing
 * by the log's own order (contract and argument in replicate.h and README
 * "Losing the primary"). librdkafka idempotent producer (acks=all), plain
 * assign()ed consumer on partition 0. Not on the request path: the writer
 * calls rp_ship once per batch (group commit amortises it like the
 * fdatasync) and rp_follow in standby.
 */
#include "common/fs_u64file.h"
#include "writer/replicate.h"
#include "writer/snapshot.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>
#include <librdkafka/rdkafka.h>

#define RP_HDR_BYTES        16u
#define RP_BUF_BYTES        (RP_HDR_BYTES + JR_HEADER_BYTES + JR_BODY_BYTES_MAX)
#define RP_SCAN_TIMEOUT_MS  30000
#define RP_RETRY_MS         50
#define RP_PATH_BYTES       1024

enum { RULE_BROKEN = RP_RULE_BROKEN, RULE_SKIP = RP_RULE_SKIP, RULE_COUNTED = RP_RULE_COUNTED,
       RULE_FENCE = RP_RULE_FENCE };

struct rp_msg {
	uint32_t kind;
	uint64_t epoch;
	const uint8_t *payload;
	size_t len;
};

struct rp {
	struct rp_config cfg;
	char topic[256];
	char epoch_path[RP_PATH_BYTES];
	rd_kafka_t *prod;
	rd_kafka_t *cons;
	struct rp_rule rule;
	int64_t next_offset;      /* consumer: next offset to read */
	int64_t checked_end;      /* primary: every record below this offset is known */
	uint64_t my_epoch;
	int fenced;
	_Atomic int promote_req;
	int promoting;
	int64_t fence_offset;     /* offset of the fence this node wrote to promote */
	uint64_t fence_epoch;
	int64_t epoch_from;       /* offset of the fence that raised the current epoch */
	int64_t last_produce_ms;  /* primary: when its last record was acknowledged */
	int64_t last_primary_ms;  /* standby: when the current epoch's primary was last heard of */
	int64_t known_end;        /* standby: the log end seen at start-up */
	int64_t give_up_ms;       /* start-up and promotion: produce retries end here (0: never) */
	rd_kafka_message_t *held; /* the message rp_follow's batch points into */
	uint8_t *buf;
	/* delivery report of the one message in flight */
	int dr_done;
	rd_kafka_resp_err_t dr_err;
	int64_t dr_offset;
	pthread_mutex_t mu;       /* guards st */
	struct rp_stats st;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };
	nanosleep(&ts, NULL);
}

static void set_error(struct rp *r, const char *fmt, const char *a, const char *b)
{
	char text[4096];
	snprintf(text, sizeof text, fmt, a, b);
	size_t n = strnlen(text, sizeof r->st.last_error - 1);
	pthread_mutex_lock(&r->mu);
	memcpy(r->st.last_error, text, n);
	r->st.last_error[n] = 0;
	pthread_mutex_unlock(&r->mu);
}

static void put_u32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }
static void put_u64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

/* Parses a log message; 0 or -1 when it is not ours. */
static int msg_parse(const void *data, size_t len, struct rp_msg *m)
{
	if (data == NULL || len < RP_HDR_BYTES)
		return -1;
	uint32_t magic;
	memcpy(&magic, data, 4);
	memcpy(&m->kind, (const uint8_t *)data + 4, 4);
	memcpy(&m->epoch, (const uint8_t *)data + 8, 8);
	m->payload = (const uint8_t *)data + RP_HDR_BYTES;
	m->len = len - RP_HDR_BYTES;
	return magic == RP_MAGIC && (m->kind == RP_BATCH || m->kind == RP_FENCE || m->kind == RP_HEARTBEAT) ? 0 : -1;
}

/* Checks a batch payload (header + body) and fills b. 0 or -1. */
static int batch_parse(const struct rp_msg *m, struct jr_batch *b, struct jr_header *h)
{
	if (m->len < JR_HEADER_BYTES)
		return -1;
	memcpy(h, m->payload, sizeof *h);
	if (h->magic != JR_MAGIC || XXH3_64bits(m->payload, 56) != h->header_hash ||
	    h->body_len != m->len - JR_HEADER_BYTES ||
	    XXH3_64bits(m->payload + JR_HEADER_BYTES, h->body_len) != h->body_hash)
		return -1;
	b->seq = h->seq;
	b->time_ms = h->time_ms;
	b->record_count = h->record_count;
	b->body_len = h->body_len;
	b->body = m->payload + JR_HEADER_BYTES;
	b->file = "kafka";
	return 0;
}

/* Applies the counting rule to one message. */
static int rule_apply(struct rp_rule *st, const struct rp_msg *m, struct jr_batch *b)
{
	if (m->kind == RP_FENCE) {
		if (m->epoch > st->epoch) {
			st->epoch = m->epoch;
			return RULE_FENCE;
		}
		return RULE_SKIP;
	}
	if (m->kind == RP_HEARTBEAT)
		return RULE_SKIP;
	struct jr_header h;
	if (batch_parse(m, b, &h) != 0)
		return RULE_BROKEN;
	if (m->epoch != st->epoch || h.seq <= st->seq)
		return RULE_SKIP;   /* a fenced writer's batch, or a repeat */
	if (h.seq != st->seq + 1 || memcmp(h.prev_sha256, st->sha, 16) != 0)
		return RULE_BROKEN;
	uint8_t digest[SHA256_DIGEST_LENGTH];
	SHA256(m->payload, JR_HEADER_BYTES, digest);
	memcpy(st->sha, digest, 16);
	st->seq = h.seq;
	return RULE_COUNTED;
}

int rp_rule_apply(struct rp_rule *st, const void *msg, size_t len, struct jr_batch *b)
{
	assert(st != NULL && b != NULL);
	struct rp_msg m;
	if (msg_parse(msg, len, &m) != 0)
		return RULE_SKIP;
	return rule_apply(st, &m, b);
}

size_t rp_msg_build(uint32_t kind, uint64_t epoch, const void *payload, size_t len, uint8_t *out, size_t cap)
{
	if (len + RP_HDR_BYTES > cap)
		return 0;
	put_u32(out, RP_MAGIC);
	put_u32(out + 4, kind);
	put_u64(out + 8, epoch);
	if (len)
		memcpy(out + RP_HDR_BYTES, payload, len);
	return len + RP_HDR_BYTES;
}

/* ---- epoch file ----------------------------------------------------------- */

static uint64_t epoch_read(const char *path) { return fs_u64file_read(path); }

static int epoch_write(const char *path, uint64_t epoch) { return fs_u64file_write(path, epoch, 0600); }

/* ---- Kafka handles --------------------------------------------------------- */

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *msg, void *opaque)
{
	struct rp *r = opaque;
	(void)rk;
	r->dr_err = msg->err;
	r->dr_offset = msg->offset;
	r->dr_done = 1;
}

static rd_kafka_t *kafka_new(struct rp *r, rd_kafka_type_t type, char *err, size_t err_len)
{
	rd_kafka_conf_t *c = rd_kafka_conf_new();
	/* a broker back from a failure is retried within 500 ms (default: up to 10 s) */
	const char *common[][2] = { { "bootstrap.servers", r->cfg.brokers }, { "log_level", "3" },
	                            { "reconnect.backoff.max.ms", "500" } };
	const char *producer[][2] = { { "enable.idempotence", "true" }, { "acks", "all" }, { "linger.ms", "0" },
	                              { "message.timeout.ms", "10000" }, { "retry.backoff.ms", "20" } };
	const char *consumer[][2] = { { "enable.auto.commit", "false" }, { "fetch.wait.max.ms", "5" },
	                              { "fetch.error.backoff.ms", "20" }, { "isolation.level", "read_committed" },
	                              { "enable.partition.eof", "false" },
	                              { "auto.offset.reset", "error" },
	                              { "queued.max.messages.kbytes", "16384" } };
	for (size_t i = 0; i < sizeof common / sizeof common[0]; i++)
		if (rd_kafka_conf_set(c, common[i][0], common[i][1], err, err_len) != RD_KAFKA_CONF_OK)
			goto bad;
	if (type == RD_KAFKA_PRODUCER) {
		for (size_t i = 0; i < sizeof producer / sizeof producer[0]; i++)
			if (rd_kafka_conf_set(c, producer[i][0], producer[i][1], err, err_len) != RD_KAFKA_CONF_OK)
				goto bad;
		rd_kafka_conf_set_dr_msg_cb(c, on_delivery);
		rd_kafka_conf_set_opaque(c, r);
	} else {
		/* assign() wants a group id; nothing is ever committed to it */
		char group[300];
		snprintf(group, sizeof group, "flashsale.%s.%s", r->cfg.shard, r->cfg.standby ? "standby" : "primary");
		if (rd_kafka_conf_set(c, "group.id", group, err, err_len) != RD_KAFKA_CONF_OK)
			goto bad;
		for (size_t i = 0; i < sizeof consumer / sizeof consumer[0]; i++)
			if (rd_kafka_conf_set(c, consumer[i][0], consumer[i][1], err, err_len) != RD_KAFKA_CONF_OK)
				goto bad;
	}
	rd_kafka_t *rk = rd_kafka_new(type, c, err, err_len);
	if (rk == NULL)
		rd_kafka_conf_destroy(c);   /* on failure the conf stays ours */
	return rk;
bad:
	rd_kafka_conf_destroy(c);
	return NULL;
}

static int assign_at(struct rp *r, int64_t offset)
{
	rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(1);
	rd_kafka_topic_partition_list_add(parts, r->topic, 0)->offset = offset;
	rd_kafka_resp_err_t e = rd_kafka_assign(r->cons, parts);
	rd_kafka_topic_partition_list_destroy(parts);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR)
		set_error(r, "assign %s: %s", r->topic, rd_kafka_err2str(e));
	return e == RD_KAFKA_RESP_ERR_NO_ERROR ? 0 : -1;
}

/* The partition's high watermark (next offset to be written), retried
 * for up to timeout_ms. -1 when the brokers do not answer. */
static int64_t log_end(struct rp *r, int timeout_ms)
{
	int64_t lo, hi;
	int64_t deadline = now_ms() + timeout_ms;
	for (;;) {
		rd_kafka_resp_err_t e = rd_kafka_query_watermark_offsets(r->cons, r->topic, 0, &lo, &hi, 2000);
		if (e == RD_KAFKA_RESP_ERR_NO_ERROR)
			return hi;
		if (now_ms() > deadline) {
			set_error(r, "log %s: %s", r->topic, rd_kafka_err2str(e));
			return -1;
		}
		sleep_ms(100);
	}
}

typedef int (*rp_visit_fn)(struct rp *r, const rd_kafka_message_t *m, void *arg);

/* Reads the records [from, to) in order through fn (which may stop the
 * scan by returning non-zero), then unassigns (nothing is fetched ahead
 * for nobody). 0, 1 when fn stopped it, -1 on timeout. */
static int read_range_assigned(struct rp *r, int64_t from, int64_t to, rp_visit_fn fn, void *arg);

static int read_range(struct rp *r, int64_t from, int64_t to, rp_visit_fn fn, void *arg)
{
	if (from >= to)
		return 0;
	if (assign_at(r, from) != 0)
		return -1;
	int rc = read_range_assigned(r, from, to, fn, arg);
	rd_kafka_assign(r->cons, NULL);
	return rc;
}

static int read_range_assigned(struct rp *r, int64_t from, int64_t to, rp_visit_fn fn, void *arg)
{
	int64_t next = from;
	int64_t deadline = now_ms() + RP_SCAN_TIMEOUT_MS;
	while (next < to) {
		rd_kafka_message_t *m = rd_kafka_consumer_poll(r->cons, 100);
		if (m == NULL || m->err || m->offset < next) {
			if (m != NULL && m->err)
				set_error(r, "log %s: %s", r->topic, rd_kafka_message_errstr(m));
			if (m != NULL)
				rd_kafka_message_destroy(m);
			if (now_ms() > deadline) {
				set_error(r, "log %s: reading it back timed out%s", r->topic, "");
				return -1;
			}
			continue;
		}
		next = m->offset + 1;
		deadline = now_ms() + RP_SCAN_TIMEOUT_MS;
		int stop = fn(r, m, arg);
		rd_kafka_message_destroy(m);
		if (stop)
			return 1;
	}
	return 0;
}

/* ---- producing ------------------------------------------------------------- */

/* Produces one record and waits for its delivery report. Returns its
 * offset, or -1 (error in r->dr_err), -2 when *stop was set first. */
static int64_t produce_wait(struct rp *r, const uint8_t *value, size_t len, const _Atomic int *stop)
{
	r->dr_done = 0;
	rd_kafka_resp_err_t e = rd_kafka_producev(r->prod, RD_KAFKA_V_TOPIC(r->topic), RD_KAFKA_V_PARTITION(0),
	                                          RD_KAFKA_V_VALUE((void *)value, len),
	                                          RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
	if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
		r->dr_err = e;
		rd_kafka_poll(r->prod, 10);
		return -1;
	}
	while (!r->dr_done) {
		rd_kafka_poll(r->prod, 5);
		if (((stop && atomic_load(stop)) || (r->give_up_ms && now_ms() > r->give_up_ms)) && !r->dr_done)
			return -2;
	}
	return r->dr_err == RD_KAFKA_RESP_ERR_NO_ERROR ? r->dr_offset : -1;
}

/* A fatal idempotence error leaves the producer unusable: start a new one
 * (a new producer id; the log's rule does not depend on it). */
static void producer_renew_if_fatal(struct rp *r)
{
	char why[256];
	if (rd_kafka_fatal_error(r->prod, why, sizeof why) == RD_KAFKA_RESP_ERR_NO_ERROR)
		return;
	set_error(r, "producer: %s (renewed)%s", why, "");
	rd_kafka_destroy(r->prod);
	char err[256];
	while ((r->prod = kafka_new(r, RD_KAFKA_PRODUCER, err, sizeof err)) == NULL)
		sleep_ms(RP_RETRY_MS);
}

struct gap_ctx {
	uint64_t my_epoch;
	int fenced;
};

static int gap_visit(struct rp *r, const rd_kafka_message_t *m, void *arg)
{
	struct gap_ctx *g = arg;
	struct rp_msg pm;
	(void)r;
	if (msg_parse(m->payload, m->len, &pm) == 0 && pm.kind == RP_FENCE && pm.epoch > g->my_epoch) {
		g->fenced = 1;
		return 1;
	}
	return 0;
}

/* Produces a record of this node's epoch, retrying until the brokers take
 * it; then checks the gap before it. Returns 0 (it counts), -1 fenced, -2
 * stopping. */
static int produce_checked(struct rp *r, uint32_t kind, const uint8_t *payload, size_t len, const _Atomic int *stop)
{
	assert(len + RP_HDR_BYTES <= RP_BUF_BYTES);
	if (r->fenced)
		return -1;
	put_u32(r->buf, RP_MAGIC);
	put_u32(r->buf + 4, kind);
	put_u64(r->buf + 8, r->my_epoch);
	if (payload != r->buf + RP_HDR_BYTES)
		memmove(r->buf + RP_HDR_BYTES, payload, len);
	for (;;) {
		int64_t off = produce_wait(r, r->buf, len + RP_HDR_BYTES, stop);
		if (off == -2)
			return -2;
		if (off >= 0) {
			if (off != r->checked_end) {
				/* someone else wrote since our last record: was it a fence? */
				struct gap_ctx g = { r->my_epoch, 0 };
				pthread_mutex_lock(&r->mu);
				r->st.fence_checks++;
				pthread_mutex_unlock(&r->mu);
				while (read_range(r, r->checked_end, off, gap_visit, &g) < 0)
					if (stop && atomic_load(stop))
						return -2;
				if (g.fenced) {
					r->fenced = 1;
					pthread_mutex_lock(&r->mu);
					r->st.role = RP_ROLE_FENCED;
					snprintf(r->st.last_error, sizeof r->st.last_error,
					         "fenced: a newer primary wrote a fence before offset %" PRId64, off);
					pthread_mutex_unlock(&r->mu);
					return -1;
				}
			}
			r->checked_end = off + 1;
			r->last_produce_ms = now_ms();
			return 0;
		}
		set_error(r, "produce to %s: %s (retrying)", r->topic, rd_kafka_err2str(r->dr_err));
		pthread_mutex_lock(&r->mu);
		r->st.produce_retries++;
		pthread_mutex_unlock(&r->mu);
		producer_renew_if_fatal(r);
		sleep_ms(RP_RETRY_MS);
		if ((stop && atomic_load(stop)) || (r->give_up_ms && now_ms() > r->give_up_ms))
			return -2;
	}
}

int rp_tick(struct rp *r, const _Atomic int *stop)
{
	if (r->fenced)
		return -1;
	int64_t now = now_ms();
	if (now - r->last_produce_ms < RP_HEARTBEAT_MS)
		return 0;
	put_u64(r->buf + RP_HDR_BYTES, (uint64_t)now);
	return produce_checked(r, RP_HEARTBEAT, r->buf + RP_HDR_BYTES, 8, stop) == -1 ? -1 : 0;
}

int rp_ship(struct rp *r, const uint8_t *batch, uint32_t len, const _Atomic int *stop)
{
	assert(r->my_epoch > 0 && r->prod != NULL);
	assert(len >= JR_HEADER_BYTES);
	memcpy(r->buf + RP_HDR_BYTES, batch, len);
	int rc = produce_checked(r, RP_BATCH, r->buf + RP_HDR_BYTES, len, stop);
	if (rc == 0) {
		struct jr_header h;
		memcpy(&h, batch, sizeof h);
		pthread_mutex_lock(&r->mu);
		r->st.applied_seq = h.seq;
		r->st.shipped++;
		r->st.next_offset = (uint64_t)r->checked_end;
		r->st.log_end_offset = (uint64_t)r->checked_end;
		pthread_mutex_unlock(&r->mu);
	}
	return rc;
}

/* ---- start-up: the whole log against the local journal ---------------------- */

struct scan_ctx {
	struct jr_reader *local;    /* NULL: no local journal */
	int local_done;             /* the local journal ended */
	int have_ahead;             /* `ahead` holds the next local batch */
	struct jr_batch ahead;      /* (its body is valid until the next jr_reader_next) */
	uint64_t diverged_seq;      /* first seq where local and log differ (0: none) */
	uint64_t local_matched;     /* last seq present in both, identical */
	struct rp_rule at_local;    /* rule state after local_matched */
	int64_t offset_at_local;    /* next offset after local_matched's record */
	int broken;
	int64_t broken_offset;
};

static int same_batch(const struct jr_batch *a, const struct jr_batch *b)
{
	return a->seq == b->seq && a->time_ms == b->time_ms && a->record_count == b->record_count &&
	       a->body_len == b->body_len && memcmp(a->body, b->body, a->body_len) == 0;
}

static int scan_visit(struct rp *r, const rd_kafka_message_t *m, void *arg)
{
	struct scan_ctx *s = arg;
	struct rp_msg pm;
	struct jr_batch lb, b;
	if (msg_parse(m->payload, m->len, &pm) != 0)
		return 0;   /* not ours: ignored by every reader */
	int k = rule_apply(&r->rule, &pm, &b);
	if (k == RULE_BROKEN) {
		s->broken = 1;
		s->broken_offset = m->offset;
		return 1;
	}
	if (k != RULE_COUNTED || s->diverged_seq != 0)
		return 0;
	if (s->local == NULL || s->local_done) {
		s->local_done = 1;
		return 0;
	}
	char err[256];
	if (!s->have_ahead) {
		if (jr_reader_next(s->local, UINT64_MAX, &s->ahead, err, sizeof err) != 1) {
			s->local_done = 1;
			return 0;
		}
		s->have_ahead = 1;
	}
	/* a local journal whose first segments went (a snapshot covers them)
	 * starts later: the log's batches before it are in that snapshot */
	if (b.seq >= s->ahead.seq) {
		lb = s->ahead;
		s->have_ahead = 0;
		if (!same_batch(&lb, &b)) {
			s->diverged_seq = b.seq;
			return 0;
		}
	}
	s->local_matched = b.seq;
	s->at_local = r->rule;
	s->offset_at_local = m->offset + 1;
	return 0;
}

/* Seq of the first local batch after `after` (0 when none). */
static uint64_t local_has_after(const char *dir, uint64_t after)
{
	char err[256];
	struct jr_reader *rd = jr_reader_open(dir, err, sizeof err);
	if (rd == NULL)
		return 0;
	struct jr_batch b;
	uint64_t seq = 0;
	if (jr_reader_seek(rd, after) == 0 && jr_reader_next(rd, UINT64_MAX, &b, err, sizeof err) == 1)
		seq = b.seq;
	jr_reader_close(rd);
	return seq;
}

static int scan_log(struct rp *r, struct scan_ctx *s, int64_t *end, char *err, size_t err_len)
{
	*end = log_end(r, RP_SCAN_TIMEOUT_MS);
	if (*end < 0) {
		snprintf(err, err_len, "replicate: cannot read the log %s at %s: %s", r->topic, r->cfg.brokers,
		         r->st.last_error);
		return -1;
	}
	struct stat sb;
	char jerr[256];
	s->local = stat(r->cfg.journal_dir, &sb) == 0 ? jr_reader_open(r->cfg.journal_dir, jerr, sizeof jerr) : NULL;
	s->offset_at_local = 0;
	int rc = read_range(r, 0, *end, scan_visit, s);
	if (s->local)
		jr_reader_close(s->local);
	if (rc < 0) {
		snprintf(err, err_len, "replicate: reading the log %s: %s", r->topic, r->st.last_error);
		return -1;
	}
	if (s->broken) {
		snprintf(err, err_len, "replicate: the log %s is damaged at offset %" PRId64
		         " (a batch out of sequence or off the chain)", r->topic, s->broken_offset);
		return -1;
	}
	return 0;
}

static int open_primary(struct rp *r, char *err, size_t err_len)
{
	struct scan_ctx s = { 0 };
	int64_t end;
	if (scan_log(r, &s, &end, err, err_len) != 0)
		return -1;
	uint64_t mine = epoch_read(r->epoch_path);
	if (s.diverged_seq != 0 || s.local_matched < r->rule.seq) {
		snprintf(err, err_len, "replicate: the log %s holds batches this node does not (from seq %" PRIu64
		         "): another node was primary; start with --standby to resync", r->topic,
		         s.diverged_seq ? s.diverged_seq : s.local_matched + 1);
		return -1;
	}
	if (r->rule.epoch != 0 && mine != r->rule.epoch) {
		snprintf(err, err_len, "replicate: fenced: the log %s is at epoch %" PRIu64 " and this node held epoch %"
		         PRIu64 "; start with --standby to resync", r->topic, r->rule.epoch, mine);
		return -1;
	}
	r->checked_end = end;
	r->give_up_ms = now_ms() + RP_SCAN_TIMEOUT_MS;   /* the brokers must take our records by then */
	r->prod = kafka_new(r, RD_KAFKA_PRODUCER, err, err_len);
	if (r->prod == NULL)
		return -1;
	if (r->rule.epoch == 0) {   /* the first primary of this log */
		r->my_epoch = mine + 1;
		uint8_t after[8];
		put_u64(after, r->rule.seq);
		memcpy(r->buf + RP_HDR_BYTES, after, 8);
		if (produce_checked(r, RP_FENCE, r->buf + RP_HDR_BYTES, 8, NULL) != 0 ||
		    epoch_write(r->epoch_path, r->my_epoch) != 0) {
			snprintf(err, err_len, "replicate: cannot write the first fence to %s (the brokers did not take it "
			         "within 30 s: %s)", r->topic, rd_kafka_err2str(r->dr_err));
			return -1;
		}
		r->rule.epoch = r->my_epoch;
	}
	r->my_epoch = r->rule.epoch;
	/* local batches that never reached the log: ship them now */
	char jerr[256];
	struct jr_reader *rd = jr_reader_open(r->cfg.journal_dir, jerr, sizeof jerr);
	uint64_t reshipped = 0;
	if (rd != NULL && jr_reader_seek(rd, r->rule.seq) == 0) {
		struct jr_batch b;
		while (jr_reader_next(rd, UINT64_MAX, &b, jerr, sizeof jerr) == 1) {
			/* rebuild header + body exactly as journaled: read the header back */
			uint8_t *p = r->buf + RP_HDR_BYTES;
			int fd = open(b.file, O_RDONLY | O_CLOEXEC);
			ssize_t got = fd >= 0 ? pread(fd, p, JR_HEADER_BYTES, (off_t)b.offset) : -1;
			if (fd >= 0)
				close(fd);
			if (got != JR_HEADER_BYTES) {
				snprintf(err, err_len, "replicate: cannot re-read %s", b.file);
				jr_reader_close(rd);
				return -1;
			}
			memcpy(p + JR_HEADER_BYTES, b.body, b.body_len);
			if (produce_checked(r, RP_BATCH, p, JR_HEADER_BYTES + b.body_len, NULL) != 0) {
				snprintf(err, err_len, "replicate: cannot ship the local tail to %s (fenced, or the brokers did not "
				         "take it within 30 s)", r->topic);
				jr_reader_close(rd);
				return -1;
			}
			r->rule.seq = b.seq;
			reshipped++;
		}
	}
	if (rd)
		jr_reader_close(rd);
	if (reshipped && !r->cfg.quiet)
		printf("flashsaled: replicate: shipped %" PRIu64 " local batches the log did not have yet\n", reshipped);
	r->give_up_ms = 0;   /* from now on a batch waits for the brokers as long as it takes */
	r->st.role = RP_ROLE_PRIMARY;
	r->st.epoch = r->st.my_epoch = r->my_epoch;
	r->st.applied_seq = r->rule.seq;
	r->st.next_offset = r->st.log_end_offset = (uint64_t)r->checked_end;
	return 0;
}

static int open_standby(struct rp *r, char *err, size_t err_len)
{
	struct scan_ctx s = { 0 };
	int64_t end;
	if (scan_log(r, &s, &end, err, err_len) != 0)
		return -1;
	uint64_t drop_from = s.diverged_seq;
	if (drop_from == 0) {
		uint64_t extra = local_has_after(r->cfg.journal_dir, s.local_matched);
		/* the local journal goes past the log's counted chain only when it
		 * holds batches that never reached the log */
		if (extra != 0 && s.local_matched == r->rule.seq)
			drop_from = extra;
	}
	if (drop_from != 0) {
		if (!r->cfg.quiet)
			printf("flashsaled: resync: dropping local batches from seq %" PRIu64
			       " (they never reached the log, so they were never acknowledged)\n", drop_from);
		if (rp_truncate_journal(r->cfg.journal_dir, drop_from - 1, err, err_len) != 0)
			return -1;
		/* a snapshot taken after the cut holds state the log never had */
		uint64_t seqs[WR_SNAP_LIST_MAX];
		int n = wr_snapshot_list(r->cfg.data_dir, seqs, WR_SNAP_LIST_MAX);
		for (int i = 0; i < n; i++)
			if (seqs[i] >= drop_from) {
				char path[RP_PATH_BYTES];
				wr_snapshot_path(path, sizeof path, r->cfg.data_dir, seqs[i]);
				if (unlink(path) != 0 && errno != ENOENT) {
					snprintf(err, err_len, "resync: cannot remove %s: %s", path, strerror(errno));
					return -1;
				}
				if (!r->cfg.quiet)
					printf("flashsaled: resync: removed snapshot %s (after the cut)\n", path);
			}
	}
	/* follow from just after the last batch both hold */
	struct rp_rule fresh = { 0 };
	uint64_t log_epoch = r->rule.epoch;
	r->rule = s.local_matched ? s.at_local : fresh;
	r->next_offset = s.local_matched ? s.offset_at_local : 0;
	if (assign_at(r, r->next_offset) != 0) {
		snprintf(err, err_len, "replicate: cannot assign %s", r->topic);
		return -1;
	}
	r->st.role = RP_ROLE_STANDBY;
	r->last_primary_ms = now_ms();   /* a dead primary is promoted over only after failover_after_ms */
	r->known_end = end;
	r->st.epoch = log_epoch;
	r->st.applied_seq = r->rule.seq;
	r->st.next_offset = (uint64_t)r->next_offset;
	r->st.log_end_offset = (uint64_t)end;
	return 0;
}

struct rp *rp_open(const struct rp_config *cfg, char *err, size_t err_len)
{
	struct rp *r = calloc(1, sizeof *r);
	if (r == NULL || (r->buf = malloc(RP_BUF_BYTES)) == NULL) {
		free(r);
		snprintf(err, err_len, "replicate: out of memory");
		return NULL;
	}
	r->cfg = *cfg;
	pthread_mutex_init(&r->mu, NULL);
	snprintf(r->topic, sizeof r->topic, "flashsale.%s.journal", cfg->shard);
	snprintf(r->epoch_path, sizeof r->epoch_path, "%s/replica.epoch", cfg->data_dir);
	r->cons = kafka_new(r, RD_KAFKA_CONSUMER, err, err_len);
	if (r->cons == NULL || (cfg->standby ? open_standby(r, err, err_len) : open_primary(r, err, err_len)) != 0) {
		rp_close(r);
		return NULL;
	}
	return r;
}

void rp_close(struct rp *r)
{
	if (r == NULL)
		return;
	if (r->held)
		rd_kafka_message_destroy(r->held);
	if (r->prod) {
		rd_kafka_flush(r->prod, 2000);
		rd_kafka_destroy(r->prod);
	}
	if (r->cons) {
		rd_kafka_assign(r->cons, NULL);
		rd_kafka_destroy(r->cons);
	}
	pthread_mutex_destroy(&r->mu);
	free(r->buf);
	free(r);
}

/* ---- standby ------------------------------------------------------------------ */

void rp_request_promote(struct rp *r)
{
	atomic_store(&r->promote_req, 1);
	pthread_mutex_lock(&r->mu);
	r->st.promote_pending = 1;
	pthread_mutex_unlock(&r->mu);
}

/* Writes the fence of the next epoch (the promotion's point of no return
 * for the old primary). 0, or -1 with the reason in last_error. */
static int promote_fence(struct rp *r)
{
	char err[256];
	if (r->prod == NULL && (r->prod = kafka_new(r, RD_KAFKA_PRODUCER, err, sizeof err)) == NULL) {
		set_error(r, "promote: %s%s", err, "");
		return -1;
	}
	r->fence_epoch = r->rule.epoch + 1;
	uint8_t v[RP_HDR_BYTES + 8];
	put_u32(v, RP_MAGIC);
	put_u32(v + 4, RP_FENCE);
	put_u64(v + 8, r->fence_epoch);
	put_u64(v + RP_HDR_BYTES, r->rule.seq);
	r->give_up_ms = now_ms() + RP_SCAN_TIMEOUT_MS;
	while (now_ms() < r->give_up_ms) {
		int64_t off = produce_wait(r, v, sizeof v, NULL);
		if (off >= 0) {
			r->give_up_ms = 0;
			r->fence_offset = off;
			r->promoting = 1;
			if (!r->cfg.quiet)
				printf("flashsaled: promote: fence of epoch %" PRIu64 " at offset %" PRId64
				       "; applying the log up to it\n", r->fence_epoch, off);
			return 0;
		}
		producer_renew_if_fatal(r);
		sleep_ms(RP_RETRY_MS);
	}
	r->give_up_ms = 0;
	set_error(r, "promote: cannot write the fence: %s%s", rd_kafka_err2str(r->dr_err), "");
	return -1;
}

/* The fence is read back: this node is the primary of its epoch. */
static int promote_finish(struct rp *r)
{
	/* two standbys promoted at once both fence epoch E+1: the first fence
	 * in the log raised it, the other one counts for nothing */
	if (r->rule.epoch != r->fence_epoch || r->epoch_from != r->fence_offset) {
		set_error(r, "promote: another node fenced the log first%s%s", "", "");
		r->promoting = 0;
		pthread_mutex_lock(&r->mu);
		r->st.promote_pending = 0;
		pthread_mutex_unlock(&r->mu);
		return 0;   /* still a standby: it follows the winner */
	}
	if (epoch_write(r->epoch_path, r->fence_epoch) != 0) {
		set_error(r, "promote: cannot write %s: %s", r->epoch_path, strerror(errno));
		r->promoting = 0;
		pthread_mutex_lock(&r->mu);
		r->st.promote_pending = 0;
		pthread_mutex_unlock(&r->mu);
		return 0;
	}
	r->my_epoch = r->fence_epoch;
	r->checked_end = r->next_offset;   /* every record below it was read */
	r->promoting = 0;
	rd_kafka_assign(r->cons, NULL);
	pthread_mutex_lock(&r->mu);
	r->st.role = RP_ROLE_PRIMARY;
	r->st.epoch = r->st.my_epoch = r->my_epoch;
	r->st.promote_pending = 0;
	r->st.lag_records = r->st.lag_ms = 0;
	pthread_mutex_unlock(&r->mu);
	if (r->cfg.lag_ms_out)
		atomic_store(r->cfg.lag_ms_out, 0);
	if (!r->cfg.quiet)
		printf("flashsaled: promote: primary of epoch %" PRIu64 " after seq %" PRIu64 "\n", r->my_epoch,
		       r->rule.seq);
	return 2;
}

static void follow_stats(struct rp *r, int64_t batch_time_ms)
{
	int64_t lo = 0, hi = 0;
	rd_kafka_get_watermark_offsets(r->cons, r->topic, 0, &lo, &hi);
	pthread_mutex_lock(&r->mu);
	r->st.epoch = r->rule.epoch;
	r->st.applied_seq = r->rule.seq;
	r->st.next_offset = (uint64_t)r->next_offset;
	if (hi > 0)
		r->st.log_end_offset = (uint64_t)hi;
	r->st.lag_records = hi > r->next_offset ? (uint64_t)(hi - r->next_offset) : 0;
	r->st.primary_silent_ms = (uint64_t)(now_ms() - r->last_primary_ms);
	if (r->st.lag_records == 0)
		r->st.lag_ms = 0;
	else if (batch_time_ms > 0)
		r->st.lag_ms = (uint64_t)(now_ms() > batch_time_ms ? now_ms() - batch_time_ms : 0);
	uint64_t lag_ms = r->st.lag_ms;
	pthread_mutex_unlock(&r->mu);
	if (r->cfg.lag_ms_out)
		atomic_store_explicit(r->cfg.lag_ms_out, lag_ms, memory_order_relaxed);
}

int rp_follow(struct rp *r, int wait_ms, struct jr_batch *b)
{
	if (r->held) {
		rd_kafka_message_destroy(r->held);
		r->held = NULL;
	}
	if (r->st.role == RP_ROLE_PRIMARY)
		return 2;
	if (atomic_exchange(&r->promote_req, 0) && !r->promoting && promote_fence(r) != 0) {
		pthread_mutex_lock(&r->mu);
		r->st.promote_pending = 0;
		pthread_mutex_unlock(&r->mu);
	}
	if (r->promoting && r->next_offset > r->fence_offset)
		return promote_finish(r);
	if (r->cfg.failover_after_ms) {
		/* silence counts only once this standby has read everything it
		 * knows of: a standby that is behind cannot tell a dead primary */
		int64_t lo = 0, hi = 0;
		rd_kafka_get_watermark_offsets(r->cons, r->topic, 0, &lo, &hi);
		if (r->next_offset < (hi > r->known_end ? hi : r->known_end))
			r->last_primary_ms = now_ms();
	}
	if (r->cfg.failover_after_ms && !r->promoting && now_ms() - r->last_primary_ms > r->cfg.failover_after_ms) {
		if (!r->cfg.quiet)
			printf("flashsaled: failover: nothing from the primary of epoch %" PRIu64 " for %u ms: promoting\n",
			       r->rule.epoch, r->cfg.failover_after_ms);
		pthread_mutex_lock(&r->mu);
		r->st.auto_promotions++;
		pthread_mutex_unlock(&r->mu);
		if (promote_fence(r) != 0)
			r->last_primary_ms = now_ms();   /* try again after another interval */
	}
	int64_t deadline = now_ms() + wait_ms;
	for (;;) {
		int64_t left = deadline - now_ms();
		rd_kafka_message_t *m = rd_kafka_consumer_poll(r->cons, left > 0 ? (int)left : 0);
		if (m == NULL) {
			follow_stats(r, 0);
			return 0;
		}
		if (m->err || m->offset < r->next_offset) {
			if (m->err && m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
				set_error(r, "follow %s: %s", r->topic, rd_kafka_message_errstr(m));
			rd_kafka_message_destroy(m);
			continue;
		}
		r->next_offset = m->offset + 1;
		struct rp_msg pm;
		int parsed = msg_parse(m->payload, m->len, &pm) == 0;
		int k = parsed ? rule_apply(&r->rule, &pm, b) : RULE_SKIP;
		if (k == RULE_FENCE)
			r->epoch_from = m->offset;
		/* the current epoch's primary is alive: its batch, its heartbeat, or
		 * the fence that just started its epoch */
		if (parsed && (k == RULE_FENCE || (k != RULE_BROKEN && pm.kind != RP_FENCE && pm.epoch == r->rule.epoch)))
			r->last_primary_ms = now_ms();
		if (k == RULE_BROKEN) {
			char off[32];
			snprintf(off, sizeof off, "%" PRId64, m->offset);
			set_error(r, "the log %s is damaged at offset %s: not following it", r->topic, off);
			rd_kafka_message_destroy(m);
			return -1;
		}
		if (k == RULE_SKIP) {
			pthread_mutex_lock(&r->mu);
			r->st.skipped++;
			pthread_mutex_unlock(&r->mu);
		}
		if (k != RULE_COUNTED) {
			rd_kafka_message_destroy(m);
			follow_stats(r, 0);
			if (r->promoting && r->next_offset > r->fence_offset)
				return promote_finish(r);
			continue;
		}
		b->offset = (uint64_t)m->offset;
		r->held = m;
		follow_stats(r, b->time_ms);
		return 1;
	}
}

void rp_stats(struct rp *r, struct rp_stats *out)
{
	pthread_mutex_lock(&r->mu);
	*out = r->st;
	pthread_mutex_unlock(&r->mu);
}

/* ---- truncation (resync) ------------------------------------------------------- */

static uint64_t seg_first_seq(const char *name)
{
	if (strlen(name) != 24 || strcmp(name + 20, ".seg") != 0)
		return 0;
	uint64_t v = 0;
	for (int i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	return v;
}

int rp_truncate_journal(const char *dir, uint64_t keep_seq, char *err, size_t err_len)
{
	char jerr[256];
	struct jr_reader *rd = jr_reader_open(dir, jerr, sizeof jerr);
	if (rd == NULL) {
		snprintf(err, err_len, "resync: %s", jerr);
		return -1;
	}
	struct jr_batch b;
	int got = jr_reader_seek(rd, keep_seq) == 0 ? jr_reader_next(rd, UINT64_MAX, &b, jerr, sizeof jerr) : -1;
	char file[PATH_MAX];
	uint64_t offset = 0, first = 0;
	if (got == 1) {
		snprintf(file, sizeof file, "%s", b.file);
		offset = b.offset;
		first = b.seq;
	}
	jr_reader_close(rd);
	if (got != 1) {
		if (got == 0)
			return 0;   /* nothing after keep_seq */
		snprintf(err, err_len, "resync: %s", jerr);
		return -1;
	}
	if (first != keep_seq + 1) {
		/* the batches to keep went with old segments (a snapshot holds them,
		 * with what follows): this journal cannot be cut there */
		snprintf(err, err_len, "resync: %s starts at batch %" PRIu64 ", after the cut at %" PRIu64
		         ": move the data dir aside and start an empty standby", dir, first, keep_seq);
		return -1;
	}
	/* later segments go; the one holding `first` is cut at its offset */
	DIR *d = opendir(dir);
	if (d == NULL) {
		snprintf(err, err_len, "resync: %s: %s", dir, strerror(errno));
		return -1;
	}
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		uint64_t s = seg_first_seq(e->d_name);
		if (s > first || (s == first && offset == 0)) {
			char p[PATH_MAX];
			snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
			if (unlink(p) != 0) {
				snprintf(err, err_len, "resync: unlink %s: %s", p, strerror(errno));
				closedir(d);
				return -1;
			}
		}
	}
	closedir(d);
	if (offset > 0) {
		int fd = open(file, O_WRONLY | O_CLOEXEC);
		struct stat st;
		if (fd < 0 || fstat(fd, &st) != 0) {
			snprintf(err, err_len, "resync: %s: %s", file, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		static const uint8_t zeros[1 << 16];
		for (uint64_t o = offset; o < (uint64_t)st.st_size;) {
			size_t n = (uint64_t)st.st_size - o < sizeof zeros ? (size_t)((uint64_t)st.st_size - o) : sizeof zeros;
			ssize_t w = pwrite(fd, zeros, n, (off_t)o);
			if (w <= 0) {
				snprintf(err, err_len, "resync: zeroing %s: %s", file, strerror(errno));
				close(fd);
				return -1;
			}
			o += (uint64_t)w;
		}
		int ok = fdatasync(fd) == 0;
		close(fd);
		if (!ok) {
			snprintf(err, err_len, "resync: fdatasync %s: %s", file, strerror(errno));
			return -1;
		}
	}
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}
