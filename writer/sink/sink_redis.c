/* sink_redis.c - the Redis sink backend (hiredis 0.14): publishes each SKU's
 * public counters as `SET stock:<sku> <json> EX <ttl>` and `PUBLISH
 * stock:<sku> <json>`, with <json> exactly the body of GET /v1/skus/<sku>:
 *   {"sku":"demo","state":"open","total":10000,"available":9990,"reserved":7,"sold":3,"version":42}
 * (state is the published one: sold_out when open with nothing available).
 *
 * The counters come from the sink thread's model (wants_model = 1: it
 * starts from its model checkpoint, or replays the journal from batch 1
 * without one, so Redis needs no cursor of its own). Redis is state-only
 * (`resume`): after an open the whole model is sent, so the keys come back
 * even when no batch follows.
 * Rate limit: at most `redis_updates_per_s` updates per SKU; a SKU touched
 * more often is marked dirty and its LATEST state is sent when its window
 * opens (coalescing). A key is also refreshed (SET only) when half its TTL
 * has passed, so a quiet SKU never vanishes while the sink runs. A lost
 * connection is re-opened with backoff (100 ms .. 5 s); nothing is lost
 * because the state, not the events, is what gets sent.
 */
#include "writer/sink/sink.h"
#include "common/fs_clock.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <hiredis/hiredis.h>

#define RD_JSON_BYTES   512
#define RD_HOST_BYTES   256
#define RD_RETRY_MS_MIN 100
#define RD_RETRY_MS_MAX 5000

struct rd_sku {
	int64_t sent_ms;        /* last SET (0 = never) */
	uint8_t dirty;          /* changed since the last SET/PUBLISH */
};

struct redis_sink {
	redisContext *ctx;
	char host[RD_HOST_BYTES];
	int port;
	const struct sink_model *m;  /* the thread's model (stable address) */
	struct rd_sku *skus;
	uint32_t sku_cap;
	uint32_t gap_ms;             /* 1000 / updates_per_s */
	uint32_t ttl_s;
	uint64_t applied_seq;        /* last batch folded in */
	uint64_t published_seq;      /* applied_seq when nothing was left dirty */
	int64_t retry_at_ms;         /* no reconnect before this */
	uint32_t retry_ms;
	uint64_t updates, publishes, refreshes, failures;
};

static int parse_address(struct redis_sink *r, const char *address)
{
	const char *colon = strrchr(address, ':');
	size_t host_len = colon ? (size_t)(colon - address) : strlen(address);
	if (host_len == 0 || host_len >= RD_HOST_BYTES)
		return -1;
	memcpy(r->host, address, host_len);
	r->host[host_len] = 0;
	if (colon == NULL) {
		r->port = 6379;
		return 0;
	}
	char *end;
	long port = strtol(colon + 1, &end, 10);   /* atoi took "6379x" as 6379 */
	if (end == colon + 1 || *end != 0 || port <= 0 || port >= 65536)
		return -1;
	r->port = (int)port;
	return 0;
}

static void disconnect(struct redis_sink *r, int64_t now_ms)
{
	if (r->ctx)
		redisFree(r->ctx);
	r->ctx = NULL;
	r->retry_ms = r->retry_ms ? r->retry_ms * 2 : RD_RETRY_MS_MIN;
	if (r->retry_ms > RD_RETRY_MS_MAX)
		r->retry_ms = RD_RETRY_MS_MAX;
	r->retry_at_ms = now_ms + r->retry_ms;
	r->failures++;
}

/* Connects when needed and allowed: 0 when connected, 1 while waiting for
 * the next attempt, -1 when an attempt failed (err set). */
static int ensure_connected(struct redis_sink *r, int64_t now_ms, char *err, size_t err_len)
{
	if (r->ctx)
		return 0;
	if (now_ms < r->retry_at_ms)
		return 1;
	struct timeval tv = {.tv_sec = 1};
	r->ctx = redisConnectWithTimeout(r->host, r->port, tv);
	if (!r->ctx || r->ctx->err || redisSetTimeout(r->ctx, tv) != REDIS_OK) {
		snprintf(err, err_len, "redis %s:%d: %s", r->host, r->port, r->ctx ? r->ctx->errstr : "out of memory");
		disconnect(r, now_ms);
		return -1;
	}
	r->retry_ms = 0;
	/* Everything may have expired while we were away: resend all. */
	for (uint32_t k = 0; k < r->sku_cap; k++)
		r->skus[k].dirty = 1;
	return 0;
}

static void redis_sink_close(void *st)
{
	struct redis_sink *r = st;
	if (!r)
		return;
	if (r->ctx)
		redisFree(r->ctx);
	free(r->skus);
	free(r);
}

static void *redis_sink_open(const struct sink_config *cfg, uint64_t *cursor, char *err, size_t err_len)
{
	struct redis_sink *r = calloc(1, sizeof *r);
	if (!r || parse_address(r, cfg->address) != 0) {
		snprintf(err, err_len, "redis: bad address '%s' (want host:port)", cfg->address);
		free(r);
		return NULL;
	}
	r->gap_ms = cfg->redis_updates_per_s ? 1000 / cfg->redis_updates_per_s : 10;
	r->ttl_s = cfg->redis_ttl_s ? cfg->redis_ttl_s : 5;
	if (ensure_connected(r, fs_mono_ms(), err, err_len) != 0) {
		redis_sink_close(r);
		return NULL;
	}
	*cursor = 0;   /* the state is rebuilt from the journal: no cursor needed */
	return r;
}

static int grow(struct redis_sink *r, uint32_t count)
{
	if (count <= r->sku_cap)
		return 0;
	uint32_t cap = count * 2;
	struct rd_sku *n = realloc(r->skus, cap * sizeof *n);
	if (!n)
		return -1;
	memset(n + r->sku_cap, 0, (cap - r->sku_cap) * sizeof *n);
	r->skus = n;
	r->sku_cap = cap;
	return 0;
}

static int redis_sink_apply(void *st, const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n,
                            const struct sink_model *m, const uint32_t *sku_idx, char *err, size_t err_len)
{
	struct redis_sink *r = st;
	assert(r && m && b);
	r->m = m;
	if (grow(r, m->sku_count) != 0) {
		snprintf(err, err_len, "redis: out of memory");
		return SINK_RETRY;
	}
	for (uint32_t i = 0; i < n; i++)
		if (sku_idx[i] != SM_NO_SKU)
			r->skus[sku_idx[i]].dirty = 1;
	r->applied_seq = b->seq;
	return SINK_OK;   /* sent by the tick that follows, within the rate limit */
}

static void json_str(char *out, size_t cap, size_t *len, const char *s)
{
	for (; *s && *len + 8 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			*len += (size_t)snprintf(out + *len, cap - *len, "\\%c", ch);
		else if (ch < 0x20 || ch >= 0x7f)
			*len += (size_t)snprintf(out + *len, cap - *len, "\\u%04x", ch);
		else
			out[(*len)++] = (char)ch;
	}
	out[*len] = 0;
}

/* The GET /v1/skus/{sku} body for s. Returns its length. */
static size_t sku_json(const struct sm_sku *s, char *out, size_t cap)
{
	size_t len = (size_t)snprintf(out, cap, "{\"sku\":\"");
	json_str(out, cap, &len, s->sku);
	len += (size_t)snprintf(out + len, cap - len,
		"\",\"state\":\"%s\",\"total\":%" PRId64 ",\"available\":%" PRId64 ",\"reserved\":%" PRId64
		",\"sold\":%" PRId64 ",\"version\":%" PRIu64 "}", fs_sale_state_name(sm_public_state(s)),
		s->total, s->available, s->reserved, s->sold, s->api_version);
	assert(len < cap);
	return len;
}

/* Queues the commands for SKU k; returns how many replies to expect. */
static int queue_sku(struct redis_sink *r, uint32_t k, int publish)
{
	const struct sm_sku *s = &r->m->skus[k];
	char json[RD_JSON_BYTES], key[FS_SKU_LEN_MAX + 16];
	size_t len = sku_json(s, json, sizeof json);
	int key_len = snprintf(key, sizeof key, "stock:%s", s->sku);
	redisAppendCommand(r->ctx, "SET %b %b EX %u", key, (size_t)key_len, json, len, r->ttl_s);
	if (!publish)
		return 1;
	redisAppendCommand(r->ctx, "PUBLISH %b %b", key, (size_t)key_len, json, len);
	return 2;
}

/* Sends every SKU whose window is open; 0 or -1 (connection dropped). */
static int flush(struct redis_sink *r, int64_t now_ms, char *err, size_t err_len)
{
	int replies = 0, still_dirty = 0;
	for (uint32_t k = 0; k < r->m->sku_count; k++) {
		struct rd_sku *x = &r->skus[k];
		if (r->m->skus[k].archived) {   /* its stock:<sku> key runs out with its TTL */
			x->dirty = 0;
			continue;
		}
		int window = now_ms - x->sent_ms >= (int64_t)r->gap_ms;
		int stale = now_ms - x->sent_ms >= (int64_t)r->ttl_s * 500;
		if ((x->dirty && window) || stale) {
			replies += queue_sku(r, k, x->dirty);
			r->publishes += x->dirty;
			r->refreshes += !x->dirty;
			x->dirty = 0;
			x->sent_ms = now_ms;
			r->updates++;
		}
		still_dirty |= x->dirty;
	}
	for (int i = 0; i < replies; i++) {
		redisReply *reply = NULL;
		if (redisGetReply(r->ctx, (void **)&reply) != REDIS_OK || !reply || reply->type == REDIS_REPLY_ERROR) {
			snprintf(err, err_len, "redis %s:%d: %s", r->host, r->port,
			         reply ? reply->str : r->ctx->errstr);
			if (reply)
				freeReplyObject(reply);
			disconnect(r, now_ms);
			return -1;
		}
		freeReplyObject(reply);
	}
	if (!still_dirty)
		r->published_seq = r->applied_seq;
	return 0;
}

static int redis_sink_tick(void *st, int64_t now_ms, char *err, size_t err_len)
{
	struct redis_sink *r = st;
	if (!r->m)
		return 0;   /* nothing applied yet */
	int rc = ensure_connected(r, now_ms, err, err_len);
	if (rc != 0)
		return rc < 0 ? -1 : 0;
	return flush(r, now_ms, err, err_len);
}

/* Right after open, from the model the thread started from (a checkpoint):
 * every SKU is sent at the next tick. */
static int redis_sink_resume(void *st, const struct sink_model *m, char *err, size_t err_len)
{
	struct redis_sink *r = st;
	assert(r && m);
	r->m = m;
	if (grow(r, m->sku_count) != 0) {
		snprintf(err, err_len, "redis: out of memory");
		return -1;
	}
	for (uint32_t k = 0; k < m->sku_count; k++)
		r->skus[k].dirty = 1;
	r->applied_seq = m->last_seq;
	return 0;
}

static uint64_t redis_sink_cursor(void *st)
{
	return ((struct redis_sink *)st)->published_seq;
}

static const struct sink_ops redis_ops = {
	.name = "redis",
	.wants_model = 1,
	.open = redis_sink_open,
	.apply_batch = redis_sink_apply,
	.durable_cursor = redis_sink_cursor,
	.tick = redis_sink_tick,
	.close = redis_sink_close,
	.resume = redis_sink_resume,
};

const struct sink_ops *sink_ops_redis(void)
{
	return &redis_ops;
}
