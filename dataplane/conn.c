/* conn.c - the connection protocol (see conn.h). No sockets here. */
#include "dataplane/conn.h"
#include "dataplane/pubid.h"
#include "dataplane/response.h"

#include <assert.h>
#include <string.h>

int dp_status_slot(int http)
{
	static const int codes[DP_ST_OTHER] = { 200, 201, 202, 400, 401, 402, 403, 404, 405, 408,
	                                        409, 410, 413, 414, 421, 422, 429, 431, 501, 503, 505 };
	for (int i = 0; i < DP_ST_OTHER; i++)
		if (codes[i] == http)
			return i;
	return DP_ST_OTHER;
}

int dp_status_of_slot(int slot)
{
	static const int codes[DP_ST_COUNT] = { 200, 201, 202, 400, 401, 402, 403, 404, 405, 408,
	                                        409, 410, 413, 414, 421, 422, 429, 431, 501, 503, 505, 0 };
	return codes[slot];
}

const uint32_t dp_lat_bound_us[DP_LAT_BUCKETS - 1] = { 50, 100, 250, 500, 1000, 2500, 5000, 10000, 25000,
                                                       50000, 100000, 250000, 500000, 1000000, 2500000 };

/* Counts an answer and its latency (since c->request_us). */
static void count(struct dp_proto *p, const struct dp_conn *c, int route, int http)
{
	atomic_fetch_add_explicit(&p->stats->answers[route][dp_status_slot(http)], 1, memory_order_relaxed);
	int cls = http >= 100 && http < 600 ? http / 100 : 0;
	int64_t us = c->request_us > 0 && p->now_us >= c->request_us ? p->now_us - c->request_us : 0;
	int b = 0;
	while (b < DP_LAT_BUCKETS - 1 && (uint64_t)us > dp_lat_bound_us[b])
		b++;
	atomic_fetch_add_explicit(&p->stats->lat[route][cls][b], 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&p->stats->lat_sum_us[route][cls], (uint64_t)us, memory_order_relaxed);
}

static int out_room(const struct dp_conn *c) { return DP_OUT_BYTES - c->out_len >= DP_ANSWER_BYTES_MAX; }

uint64_t dp_conn_bytes(uint32_t conn_max) { return (uint64_t)conn_max * sizeof(struct dp_conn); }

static void consume(struct dp_conn *c, uint32_t n, int64_t now_ms)
{
	assert(n <= c->in_len);
	memmove(c->in, c->in + n, c->in_len - n);
	c->in_len -= n;
	c->request_start_ms = c->in_len ? now_ms : 0;
}

/* A HEAD answer is the GET answer's head (Content-Length kept), no body. */
static uint32_t head_only(const char *ans, uint32_t len)
{
	for (uint32_t i = 0; i + 3 < len; i++)
		if (ans[i] == '\r' && ans[i + 1] == '\n' && ans[i + 2] == '\r' && ans[i + 3] == '\n')
			return i + 4;
	return len;
}

/* A parse error: answer and close (the stream cannot be resynchronised).
 * The client may still be sending (a body we refused unread): `linger`
 * asks the backend for a lingering close (RFC 9112 section 9.6), so the
 * answer is not lost to a reset. */
static void parse_error_detail(struct dp_proto *p, struct dp_conn *c, int status, const char *why)
{
	const char *detail = why != NULL ? why : status == 413 ? "body too large" : status == 431 ? "headers too large" :
	                     status == 414 ? "request line too long" : status == 501 ? "Transfer-Encoding not supported" :
	                     status == 505 ? "HTTP version not supported" : "malformed request";
	const char *err = status == 413 ? "payload_too_large" : status == 431 ? "headers_too_large" :
	                  status == 414 ? "uri_too_long" : status == 501 ? "not_implemented" :
	                  status == 505 ? "http_version_not_supported" : "bad_request";
	int n = dp_resp_error(c->out + c->out_len, DP_OUT_BYTES - c->out_len, status, err, detail, 0);
	assert(n > 0);
	c->out_len += (uint32_t)n;
	c->closing = 1;
	c->linger = 1;
	c->in_len = 0;
	count(p, c, DP_R_OTHER, status);
}

static void parse_error(struct dp_proto *p, struct dp_conn *c, int status)
{
	parse_error_detail(p, c, status, NULL);
}

/* Pushes a routed command to the writer, or answers 503 when the ring or
 * the in-flight budget is full. Returns 1 when the connection now waits. */
static int push(struct dp_proto *p, struct dp_conn *c, const struct fs_cmd *cmd, uint32_t shard, int route,
                int keep_alive)
{
	assert(shard < (p->cfg->writer_count ? p->cfg->writer_count : 1));
	struct fs_port *port = p->cfg->writer_count > 1 ? p->cfg->wports[shard] : p->cfg->wport;
	struct fs_cmd *slot = port->inflight < port->inflight_max ? fs_ring_slot(&port->cmds) : NULL;
	if (slot == NULL) {
		atomic_fetch_add_explicit(&port->full_count, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&p->stats->ring_full, 1, memory_order_relaxed);
		int n = dp_resp_error(c->out + c->out_len, DP_OUT_BYTES - c->out_len, 503, "overloaded",
		                      NULL, keep_alive);
		assert(n > 0);
		c->out_len += (uint32_t)n;
		count(p, c, route, 503);
		return 0;
	}
	*slot = *cmd;
	slot->tag = dp_tag(c);
	/* Counted before it is published: a DPDK lane process killed between
	 * the two leaves its successor one in-flight slot short (harmless),
	 * never one answer more than it counts (dp_conn_drain asserts that). */
	port->inflight++;
	fs_ring_produce(&port->cmds, 1);
	p->cmds_pushed++;
	p->shards_pushed |= 1u << shard;
	c->waiting = 1;
	c->wait_keep_alive = (uint8_t)keep_alive;
	c->wait_route = (uint8_t)route;
	return 1;
}

void dp_conn_drive(struct dp_proto *p, struct dp_conn *c)
{
	int64_t now = p->mono_ms;
	while (!c->waiting && !c->closing && c->in_len > 0 && out_room(c)) {
		struct dp_request req;
		int r = dp_http_parse(c->in, c->in_len, &p->cfg->limits, &req);
		if (r == 0) {
			if (c->in_len == DP_IN_BYTES)
				parse_error(p, c, 431);
			else if (c->request_start_ms == 0)
				c->request_start_ms = now;
			return;
		}
		/* read whole now, or (a request that arrived in pieces) when it began */
		c->request_us = c->request_start_ms ? p->now_us - (now - c->request_start_ms) * 1000 : p->now_us;
		if (r < 0)
			{ parse_error(p, c, -r); return; }
		if (req.http_minor == 1 && !req.has_host)   /* RFC 9112 section 3.2 */
			{ parse_error_detail(p, c, 400, "Host header required in HTTP/1.1"); return; }
		struct fs_cmd cmd;
		struct dp_route_result res;
		dp_route(&p->route, &req, &c->auth, &cmd, c->out + c->out_len, DP_OUT_BYTES - c->out_len, &res);
		int keep_alive = req.keep_alive;
		if (req.method == DP_M_HEAD && res.kind == DP_ROUTE_RESPOND)
			res.out_len = head_only(c->out + c->out_len, res.out_len);
		consume(c, (uint32_t)r, now);   /* req's slices are dead from here on */
		if (res.kind == DP_ROUTE_RESPOND) {
			c->out_len += res.out_len;
			count(p, c, res.route, res.http);
		} else {
			push(p, c, &cmd, res.shard, res.route, keep_alive);
		}
		if (!keep_alive && !c->waiting)
			c->closing = 1;
	}
}

void dp_conn_answered(struct dp_proto *p, struct dp_conn *c, const struct fs_ans *a, uint32_t shard)
{
	assert(c->waiting);
	assert(DP_OUT_BYTES - c->out_len >= DP_ANSWER_BYTES_MAX);
	/* the writer shard's own numbers become public ids here (pubid.h) */
	struct dp_id_owner owner = { p->route.appliance, shard };
	int n = dp_resp_answer(c->out + c->out_len, DP_OUT_BYTES - c->out_len, a, owner, c->wait_keep_alive);
	assert(n > 0);
	c->out_len += (uint32_t)n;
	c->waiting = 0;
	count(p, c, c->wait_route, a->http);
	if (!c->wait_keep_alive)
		c->closing = 1;
	dp_conn_drive(p, c);
}

uint32_t dp_conn_drain(struct dp_proto *p, struct fs_port *port, uint32_t shard, struct dp_conn *conns, uint32_t conn_max,
                       void (*answered)(void *ctx, struct dp_conn *c),
                       void (*orphan)(void *ctx, struct dp_conn *c), void *ctx)
{
	struct fs_ans a[64];
	uint32_t total = 0, got;
	while ((got = fs_ring_dequeue_burst(&port->answers, a, 64)) > 0) {
		total += got;
		assert(port->inflight >= got);
		port->inflight -= got;
		for (uint32_t i = 0; i < got; i++) {
			uint32_t idx = (uint32_t)a[i].tag;
			uint32_t gen = (uint32_t)(a[i].tag >> 32);
			assert(idx < conn_max);
			struct dp_conn *c = &conns[idx];
			if (c->gen != gen || !c->waiting)
				continue;   /* cannot happen: the slot waits for its answer */
			if (!c->active) {   /* the client left while the writer decided */
				c->waiting = 0;
				assert(c->ops_inflight > 0);
				c->ops_inflight--;
				orphan(ctx, c);
				continue;
			}
			dp_conn_answered(p, c, &a[i], shard);
			answered(ctx, c);
		}
	}
	return total;
}

void dp_conn_timeout(struct dp_proto *p, struct dp_conn *c)
{
	int n = dp_resp_error(c->out + c->out_len, DP_OUT_BYTES - c->out_len, 408, "request_timeout", NULL, 0);
	if (n > 0)
		c->out_len += (uint32_t)n;
	c->closing = 1;
	c->in_len = 0;
	if (c->request_start_ms)
		c->request_us = p->now_us - (p->mono_ms - c->request_start_ms) * 1000;
	count(p, c, DP_R_OTHER, 408);
}
