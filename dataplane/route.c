/* route.c - the public API's routing table (API.md): reads are answered
 * from the snapshot on the worker, state changes become commands.
 */
#include "dataplane/route.h"
#include "dataplane/json.h"
#include "dataplane/pubid.h"
#include "dataplane/response.h"
#include "common/fs_pub.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <xxhash.h>

#define DP_WRITER_STALL_MS 2000   /* /healthz: a batch in progress this long = a stalled writer */

static int slice_eq(struct dp_slice s, const char *lit)
{
	size_t n = strlen(lit);
	return s.len == n && memcmp(s.p, lit, n) == 0;
}

static int starts_with(const char *p, size_t len, const char *lit, size_t *rest)
{
	size_t n = strlen(lit);
	if (len < n || memcmp(p, lit, n) != 0)
		return 0;
	*rest = n;
	return 1;
}

static void respond_error(struct dp_route_result *res, char *out, size_t cap, int keep_alive,
                          int http, const char *error, const char *detail)
{
	int n = dp_resp_error(out, cap, http, error, detail, keep_alive);
	assert(n > 0);
	res->kind = DP_ROUTE_RESPOND;
	res->http = (uint16_t)http;
	res->out_len = (uint32_t)n;
}

/* 421 {"error":"misdirected","shard":"NAME"}: appliance `owner` of the
 * shard map serves this (a proxy with a stale map, or a client that came
 * straight to the wrong box). Not a hot path: snprintf is fine. */
static void respond_misdirected(const struct dp_route_ctx *ctx, int keep_alive, uint32_t owner,
                                char *out, size_t cap, struct dp_route_result *res)
{
	assert(ctx->shards != NULL && owner < ctx->shards->appliance_count && owner != ctx->appliance);
	char body[96];
	int bl = snprintf(body, sizeof body, "{\"error\":\"misdirected\",\"shard\":\"%s\"}",
	                  ctx->shards->appliances[owner].name);
	assert(bl > 0 && (size_t)bl < sizeof body);   /* names are <= 31 bytes of [A-Za-z0-9._-] */
	int n = dp_resp_raw(out, cap, 421, "application/json", body, (size_t)bl, keep_alive);
	assert(n > 0);
	res->kind = DP_ROUTE_RESPOND;
	res->http = 421;
	res->out_len = (uint32_t)n;
}

/* For a SKU this box has no sale of: answers 421 and returns 1 when the
 * shard map gives it to another appliance, else returns 0 (the caller
 * answers unknown_sku). Every sale a box holds is one the map gives it
 * (admin refuses the others, start-up refuses a journal holding one), so
 * the served path never pays the map's look-up. */
static int sku_misdirected(const struct dp_route_ctx *ctx, int keep_alive, struct dp_slice sku,
                           char *out, size_t cap, struct dp_route_result *res)
{
	if (ctx->shards == NULL)
		return 0;
	uint32_t owner = fs_shard_appliance_of(ctx->shards, sku.p, sku.len);
	if (owner == ctx->appliance)
		return 0;
	respond_misdirected(ctx, keep_alive, owner, out, cap, res);
	return 1;
}

/* 1 when a parsed id belongs here; else answers (421 for another
 * appliance of the map, 404 for an owner that does not exist) and returns 0. */
static int id_here(const struct dp_route_ctx *ctx, int keep_alive, struct dp_id_owner owner,
                   char *out, size_t cap, struct dp_route_result *res)
{
	if (owner.appliance != ctx->appliance) {
		if (ctx->shards != NULL && owner.appliance < ctx->shards->appliance_count)
			respond_misdirected(ctx, keep_alive, owner.appliance, out, cap, res);
		else
			respond_error(res, out, cap, keep_alive, 404, "not_found", NULL);
		return 0;
	}
	if (owner.writer >= (ctx->writer_count ? ctx->writer_count : 1)) {   /* no such writer shard */
		respond_error(res, out, cap, keep_alive, 404, "not_found", NULL);
		return 0;
	}
	return 1;
}

/* Splits "/v1/<coll>/<id>[/<tail>]": id and optional tail. 0 when malformed. */
static int split_path(struct dp_slice path, size_t prefix, struct dp_slice *id, struct dp_slice *tail)
{
	const char *p = path.p + prefix;
	size_t len = path.len - prefix;
	const char *slash = memchr(p, '/', len);
	id->p = p;
	id->len = (uint32_t)(slash ? (size_t)(slash - p) : len);
	tail->p = slash ? slash + 1 : NULL;
	tail->len = slash ? (uint32_t)(len - id->len - 1) : 0;
	return id->len > 0;
}

/* An Idempotency-Key or X-Device-Id the system will store and hand to its
 * sinks: 1..FS_ID_LEN_MAX bytes of printable ASCII (0x20..0x7e). Anything
 * else is refused at the edge, so no sink meets bytes it cannot store (a
 * PostgreSQL text column maps invalid UTF-8 to '?', and two keys that
 * differ only there would collide on its unique index). */
static int id_header_valid(struct dp_slice v)
{
	if (v.len == 0 || v.len > FS_ID_LEN_MAX)
		return 0;
	for (uint32_t i = 0; i < v.len; i++)
		if ((unsigned char)v.p[i] < 0x20 || (unsigned char)v.p[i] > 0x7e)
			return 0;
	return 1;
}

/* The writer shard that owns a SKU (fixed at start-up: the same map and
 * count as flashsaled's writers) and its snapshot. */
static uint32_t sku_shard(const struct dp_route_ctx *ctx, struct dp_slice sku)
{
	if (ctx->writer_count <= 1)
		return 0;
	uint32_t k = fs_shard_writer_of(ctx->shard_map, sku.p, sku.len, ctx->writer_count);
	assert(k < ctx->writer_count);
	return k;
}

static const struct fs_snapshot *shard_snap(const struct dp_route_ctx *ctx, uint32_t k)
{
	assert(k < (ctx->writer_count ? ctx->writer_count : 1));
	return ctx->writer_count <= 1 ? ctx->snap : ctx->snaps[k];
}

/* Verifies the bearer token (cached per connection); 0 when authorized. */
static int authenticate(const struct dp_route_ctx *ctx, const struct dp_request *req,
                        struct dp_auth_cache *auth)
{
	struct dp_slice a = req->authorization;
	if (a.len <= 7 || strncasecmp(a.p, "Bearer ", 7) != 0)
		return -1;
	const char *tok = a.p + 7;
	size_t tok_len = a.len - 7;
	XXH128_hash_t h = XXH3_128bits(tok, tok_len);
	int64_t now_s = ctx->now_ms / 1000;
	if (auth->tok_hash[0] == h.low64 && auth->tok_hash[1] == h.high64 && auth->claims.exp_s > now_s)
		return 0;
	auth->tok_hash[0] = auth->tok_hash[1] = 0;
	struct dp_token_cache_entry *e = ctx->tok_cache ?
	        &ctx->tok_cache->e[h.low64 & (DP_TOKEN_CACHE_SLOTS - 1)] : NULL;
	if (e != NULL && e->tok_hash[0] == h.low64 && e->tok_hash[1] == h.high64 && e->claims.exp_s > now_s) {
		auth->claims = e->claims;   /* verified on another of this worker's connections */
	} else {
		if (fs_jwt_verify_prepared(ctx->jwt, tok, tok_len, now_s, &auth->claims) != 0)
			return -1;
		if (e != NULL) {
			e->claims = auth->claims;
			e->tok_hash[0] = h.low64;
			e->tok_hash[1] = h.high64;
		}
	}
	assert(auth->claims.sub_len > 0 && auth->claims.sub_len <= FS_ID_LEN_MAX);
	auth->tok_hash[0] = h.low64;
	auth->tok_hash[1] = h.high64;
	return 0;
}

static int trusted_ip(const struct dp_route_ctx *ctx, uint32_t ip)
{
	for (uint32_t i = 0; i < ctx->trusted_count; i++)
		if (fs_cidr_match(&ctx->trusted[i], ip))
			return 1;
	return 0;
}

/* The client: the socket peer, or -- only when the peer is a trusted proxy
 * -- the last address in X-Forwarded-For (the one that proxy added). */
static uint32_t client_ip(const struct dp_route_ctx *ctx, const struct dp_request *req,
                          const struct dp_auth_cache *auth)
{
	uint32_t ip = auth->peer_ip;
	struct dp_slice x = req->forwarded_for;
	if (ip == 0 || x.len == 0 || !trusted_ip(ctx, ip))
		return ip;
	uint32_t start = x.len;
	while (start > 0 && x.p[start - 1] != ',')
		start--;
	while (start < x.len && x.p[start] == ' ')
		start++;
	uint32_t end = x.len;
	while (end > start && x.p[end - 1] == ' ')
		end--;
	struct fs_cidr c;
	if (fs_cidr_parse(x.p + start, end - start, &c) != 0 || c.mask != 0xffffffffu)
		return ip;
	return c.net;
}

static void cmd_user(struct fs_cmd *cmd, const struct dp_auth_cache *auth)
{
	memcpy(cmd->user, auth->claims.sub, auth->claims.sub_len);
	cmd->user_len = auth->claims.sub_len;
}

/* Renders SKU idx's answer into out from a consistent read; returns bytes
 * and, in *seq, the entry's seqlock count the read was taken at. */
static int render_sku(const struct fs_snapshot *snap, int idx, struct dp_slice sku, int keep_alive,
                      char *out, size_t cap, uint64_t *seq)
{
	struct fs_sku_read v;
	*seq = fs_snap_read_seq(snap, idx, &v);
	struct fs_ans a;
	memset(&a, 0, sizeof a);
	a.http = 200;
	a.body = FS_BODY_SALE;
	memcpy(a.sku, sku.p, sku.len);
	a.sku_len = (uint8_t)sku.len;
	a.state = (uint8_t)v.state;
	a.total = v.total;
	a.available = v.available;
	a.reserved = v.reserved;
	a.sold = v.sold;
	a.version = v.version;
	return dp_resp_answer(out, cap, &a, (struct dp_id_owner){ 0, 0 }, keep_alive);   /* no ids */
}

/* A standby's read is as stale as its replication lag: say so in a header
 * after the status line. Returns the new length (unchanged when no room). */
static int add_lag_header(const struct dp_route_ctx *ctx, char *out, size_t cap, int n)
{
	char h[64];
	int hl = snprintf(h, sizeof h, "X-Replication-Lag-Ms: %llu\r\n",
	                  (unsigned long long)atomic_load_explicit(&((struct fs_snapshot *)ctx->snap)->repl_lag_ms,
	                                                           memory_order_relaxed));
	char *eol = memchr(out, '\n', (size_t)n);
	if (eol == NULL || (size_t)n + (size_t)hl > cap)
		return n;
	size_t at = (size_t)(eol - out) + 1;
	memmove(out + at + hl, out + at, (size_t)n - at);
	memcpy(out + at, h, (size_t)hl);
	return n + hl;
}

static void route_sku_get(const struct dp_route_ctx *ctx, const struct dp_request *req, struct dp_slice sku,
                          char *out, size_t cap, struct dp_route_result *res)
{
	uint32_t shard = sku_shard(ctx, sku);
	const struct fs_snapshot *snap = shard_snap(ctx, shard);
	int idx = fs_snap_find(snap, sku.p, sku.len);
	if (idx < 0 && sku_misdirected(ctx, req->keep_alive, sku, out, cap, res))
		return;
	if (idx < 0)
		{ respond_error(res, out, cap, req->keep_alive, 404, "unknown_sku", NULL); return; }
	res->kind = DP_ROUTE_RESPOND;
	res->http = 200;
	if (atomic_load_explicit(&((struct fs_snapshot *)snap)->role, memory_order_relaxed) != FS_ROLE_PRIMARY) {
		uint64_t seq;   /* a standby: rendered each time, with the lag (never cached) */
		int n = render_sku(snap, idx, sku, req->keep_alive, out, cap, &seq);
		assert(n > 0);
		res->out_len = (uint32_t)add_lag_header(ctx, out, cap, n);
		return;
	}
	struct dp_sku_cache_entry *e = ctx->sku_cache && req->keep_alive ?
	        &ctx->sku_cache->e[((uint32_t)idx + shard * 7u) & (DP_SKU_CACHE_SLOTS - 1)] : NULL;
	if (e != NULL && e->idx == idx && e->shard == shard && e->seq == fs_snap_seq(snap, idx) && e->len <= cap) {
		memcpy(out, e->bytes, e->len);   /* nothing published since it was rendered */
		res->out_len = e->len;
		return;
	}
	uint64_t seq;
	int n = render_sku(snap, idx, sku, req->keep_alive, out, cap, &seq);
	assert(n > 0);
	res->out_len = (uint32_t)n;
	if (e != NULL && (size_t)n <= sizeof e->bytes) {
		memcpy(e->bytes, out, (size_t)n);
		e->len = (uint32_t)n;
		e->idx = idx;
		e->shard = shard;
		e->seq = seq;
	}
}

static void route_reserve(const struct dp_route_ctx *ctx, const struct dp_request *req, struct dp_slice sku,
                          struct dp_auth_cache *auth, struct fs_cmd *cmd, char *out, size_t cap,
                          struct dp_route_result *res)
{
	int ka = req->keep_alive;
	if (authenticate(ctx, req, auth) != 0)
		{ respond_error(res, out, cap, ka, 401, "unauthorized", NULL); return; }
	if (!id_header_valid(req->idempotency_key))
		{ respond_error(res, out, cap, ka, 400, "bad_request", "Idempotency-Key header (1..64 printable ASCII bytes) required"); return; }
	if (req->device_id.len != 0 && !id_header_valid(req->device_id))
		{ respond_error(res, out, cap, ka, 400, "bad_request", "X-Device-Id header: 1..64 printable ASCII bytes"); return; }
	uint32_t qty;
	const char *detail = NULL;
	if (dp_json_reserve_body(req->body.p, req->body.len, ctx->quantity_max, &qty, &detail) != 0)
		{ respond_error(res, out, cap, ka, 400, "bad_request", detail); return; }
	uint32_t shard = sku_shard(ctx, sku);
	const struct fs_snapshot *snap = shard_snap(ctx, shard);
	int idx = fs_snap_find(snap, sku.p, sku.len);
	if (idx < 0 && sku_misdirected(ctx, ka, sku, out, cap, res))
		return;
	if (idx < 0)
		{ respond_error(res, out, cap, ka, 404, "unknown_sku", NULL); return; }
	struct fs_sku_read v;
	fs_snap_read(snap, idx, &v);
	/* Most of a flash sale's traffic arrives after sell-out: answer it here.
	 * A user who ever got a reservation may be repeating a request whose
	 * answer was lost; the writer's holder filter sends those (and a few
	 * false positives) on to the writer, which answers them exactly. */
	if (v.state == FS_SALE_SOLD_OUT && !v.waitlist_open &&
	    !fs_snap_holder_test(snap, auth->claims.sub, auth->claims.sub_len))
		{ respond_error(res, out, cap, ka, 409, "sold_out", NULL); return; }
	if (atomic_load_explicit(&((struct fs_snapshot *)snap)->journal_full, memory_order_relaxed))
		{ respond_error(res, out, cap, ka, 503, "overloaded", "journal disk budget reached"); return; }
	if (atomic_load_explicit(&((struct fs_snapshot *)snap)->journal_stalled, memory_order_relaxed))
		{ respond_error(res, out, cap, ka, 503, "overloaded", "journal cannot write (disk full?)"); return; }
	memset(cmd, 0, offsetof(struct fs_cmd, sku));
	cmd->type = FS_CMD_RESERVE;
	cmd->quantity = qty;
	memcpy(cmd->sku, sku.p, sku.len);
	cmd->sku_len = (uint8_t)sku.len;
	cmd_user(cmd, auth);
	memcpy(cmd->key, req->idempotency_key.p, req->idempotency_key.len);
	cmd->key_len = (uint8_t)req->idempotency_key.len;
	cmd->claim_tier = auth->claims.tier >= 0 ? (uint8_t)(auth->claims.tier + 1) : 0;
	cmd->client_ip = client_ip(ctx, req, auth);
	cmd->ip_trusted = (uint8_t)(cmd->client_ip == 0 || trusted_ip(ctx, cmd->client_ip) ||
	                            fs_snap_ip_verdict(ctx->snap, cmd->client_ip) == 2);
	/* the device for per-device limits: the token's claim, else the header */
	struct dp_slice dev = { auth->claims.dev, auth->claims.dev_len };
	if (dev.len == 0)
		dev = req->device_id;
	assert(dev.len <= FS_ID_LEN_MAX);   /* claims are bounded; the header was checked above */
	if (dev.len)   /* no device: dev.p may be NULL, and memcpy(_, NULL, 0) is undefined */
		memcpy(cmd->text, dev.p, dev.len);
	cmd->text_len = (uint8_t)dev.len;
	res->kind = DP_ROUTE_COMMAND;
	res->shard = shard;
}

/* A read of reservation / order `no` from the writer's published state
 * (common/fs_pub.h): the same answer the writer gives, built by the same
 * renderer. 0 when answered; -1 when there is no published state or the
 * writer kept republishing it (the caller then asks the writer). */
static int answer_published(const struct dp_route_ctx *ctx, const struct dp_request *req, int order,
                            struct dp_id_owner owner, uint64_t no, const struct dp_auth_cache *auth,
                            char *out, size_t cap, struct dp_route_result *res)
{
	const struct fs_pub *pub = shard_snap(ctx, owner.writer)->pub;   /* the owning writer shard's */
	if (pub == NULL)
		return -1;
	struct fs_ans a;
	const char *user = auth->claims.sub;
	size_t len = auth->claims.sub_len;
	enum fs_pub_rc rc = order ? fs_pub_order_read(pub, no, user, len, &a) : fs_pub_res_read(pub, no, user, len, &a);
	if (rc == FS_PUB_BUSY)
		return -1;
	if (rc != FS_PUB_OK) {   /* as the writer's answer_error() builds it */
		memset(&a, 0, sizeof a);
		a.err = (uint8_t)(rc == FS_PUB_RECLAIMED ? FS_ERR_RECLAIMED : FS_ERR_NOT_FOUND);
		a.http = (uint16_t)fs_err_http((enum fs_err)a.err);
		a.body = FS_BODY_ERROR;
	}
	int n = dp_resp_answer(out, cap, &a, owner, req->keep_alive);
	assert(n > 0);
	res->kind = DP_ROUTE_RESPOND;
	res->http = a.http;
	res->out_len = (uint32_t)n;
	return 0;
}

static void route_res(const struct dp_route_ctx *ctx, const struct dp_request *req, struct dp_slice id,
                      struct dp_slice tail, struct dp_auth_cache *auth, struct fs_cmd *cmd,
                      char *out, size_t cap, struct dp_route_result *res)
{
	int ka = req->keep_alive;
	int checkout = slice_eq(tail, "checkout");
	if (tail.p != NULL && !checkout)
		{ respond_error(res, out, cap, ka, 404, "not_found", NULL); return; }
	res->route = checkout ? DP_R_CHECKOUT : req->method == DP_M_DELETE ? DP_R_CANCEL : DP_R_RES_GET;
	if (checkout ? req->method != DP_M_POST : (req->method != DP_M_GET && req->method != DP_M_DELETE))
		{ respond_error(res, out, cap, ka, 405, "method_not_allowed", NULL); return; }
	if (authenticate(ctx, req, auth) != 0)
		{ respond_error(res, out, cap, ka, 401, "unauthorized", NULL); return; }
	struct dp_id_owner owner;
	uint64_t res_no = dp_id_parse(id.p, id.len, 'r', &owner);
	uint32_t shard = owner.writer;
	if (res_no == 0)
		{ respond_error(res, out, cap, ka, 404, "not_found", NULL); return; }
	if (!id_here(ctx, ka, owner, out, cap, res))
		return;
	if (!checkout && req->method == DP_M_GET && answer_published(ctx, req, 0, owner, res_no, auth, out, cap, res) == 0)
		return;
	memset(cmd, 0, offsetof(struct fs_cmd, sku));
	cmd->ref = res_no;
	res->shard = shard;
	cmd_user(cmd, auth);
	if (!checkout) {
		cmd->type = req->method == DP_M_DELETE ? FS_CMD_CANCEL : FS_CMD_RES_GET;
		res->kind = DP_ROUTE_COMMAND;
		return;
	}
	if (!id_header_valid(req->idempotency_key))
		{ respond_error(res, out, cap, ka, 400, "bad_request", "Idempotency-Key header (1..64 printable ASCII bytes) required"); return; }
	const char *detail = NULL;
	int tl = dp_json_checkout_body(req->body.p, req->body.len, cmd->text, &detail);
	if (tl <= 0)
		{ respond_error(res, out, cap, ka, 400, "bad_request", detail ? detail : "payment_token required"); return; }
	if (!atomic_load_explicit(&((struct fs_snapshot *)shard_snap(ctx, shard))->payments_open, memory_order_relaxed))
		{ respond_error(res, out, cap, ka, 503, "overloaded", "payment provider unavailable"); return; }
	cmd->text_len = (uint8_t)tl;
	cmd->type = FS_CMD_CHECKOUT;
	memcpy(cmd->key, req->idempotency_key.p, req->idempotency_key.len);
	cmd->key_len = (uint8_t)req->idempotency_key.len;
	res->kind = DP_ROUTE_COMMAND;
}

static void route_order(const struct dp_route_ctx *ctx, const struct dp_request *req, struct dp_slice id,
                        struct dp_slice tail, struct dp_auth_cache *auth, struct fs_cmd *cmd,
                        char *out, size_t cap, struct dp_route_result *res)
{
	int ka = req->keep_alive;
	res->route = DP_R_ORDER_GET;
	if (tail.p != NULL)
		{ respond_error(res, out, cap, ka, 404, "not_found", NULL); return; }
	if (req->method != DP_M_GET)
		{ respond_error(res, out, cap, ka, 405, "method_not_allowed", NULL); return; }
	if (authenticate(ctx, req, auth) != 0)
		{ respond_error(res, out, cap, ka, 401, "unauthorized", NULL); return; }
	struct dp_id_owner owner;
	uint64_t order_no = dp_id_parse(id.p, id.len, 'o', &owner);
	uint32_t shard = owner.writer;
	if (order_no == 0)
		{ respond_error(res, out, cap, ka, 404, "not_found", NULL); return; }
	if (!id_here(ctx, ka, owner, out, cap, res))
		return;
	if (answer_published(ctx, req, 1, owner, order_no, auth, out, cap, res) == 0)
		return;
	memset(cmd, 0, offsetof(struct fs_cmd, sku));
	cmd->type = FS_CMD_ORDER_GET;
	cmd->ref = order_no;
	res->shard = shard;
	cmd_user(cmd, auth);
	res->kind = DP_ROUTE_COMMAND;
}

static void route_health(const struct dp_route_ctx *ctx, const struct dp_request *req, int ready_check,
                         char *out, size_t cap, struct dp_route_result *res)
{
	/* a writer (any shard) inside one batch for > 2 s owes its answers: not healthy */
	int stalled = 0;
	for (uint32_t k = 0; k < (ctx->writer_count ? ctx->writer_count : 1); k++) {
		int64_t busy = atomic_load_explicit(&((struct fs_snapshot *)shard_snap(ctx, k))->writer_busy_since_ms,
		                                    memory_order_relaxed);
		stalled |= busy != 0 && ctx->now_ms - busy > DP_WRITER_STALL_MS;
	}
	int ok = !stalled && (!ready_check || ctx->ready == 1);
	const char *body = ok ? "{\"ok\":true}" : stalled && !ready_check ? "{\"ok\":false,\"reason\":\"writer_stalled\"}" :
	                   ctx->ready == DP_READY_RECOVERING ? "{\"ok\":false,\"reason\":\"recovering\"}" :
	                   "{\"ok\":false}";
	int n = dp_resp_raw(out, cap, ok ? 200 : 503, "application/json", body, strlen(body), req->keep_alive);
	assert(n > 0);
	res->kind = DP_ROUTE_RESPOND;
	res->http = ok ? 200 : 503;
	res->out_len = (uint32_t)n;
}

void dp_route(const struct dp_route_ctx *ctx, const struct dp_request *req,
              struct dp_auth_cache *auth, struct fs_cmd *cmd,
              char *out, size_t cap, struct dp_route_result *res)
{
	memset(res, 0, sizeof *res);
	res->route = DP_R_OTHER;
	struct dp_slice path = req->path, id, tail;
	size_t rest;
	int ka = req->keep_alive;
	if (slice_eq(path, "/healthz") || slice_eq(path, "/readyz")) {
		res->route = DP_R_HEALTH;
		if (req->method != DP_M_GET && req->method != DP_M_HEAD)
			{ respond_error(res, out, cap, ka, 405, "method_not_allowed", NULL); return; }
		{ route_health(ctx, req, slice_eq(path, "/readyz"), out, cap, res); return; }
	}
	/* start-up replay: nothing but health is served until the state is whole */
	if (ctx->ready == DP_READY_RECOVERING) {
		respond_error(res, out, cap, ka, 503, "recovering", "replaying the journal: retry in a moment");
		return;
	}
	/* the operator's deny list (journaled `flashctl ip deny`); allow wins */
	uint32_t ip = client_ip(ctx, req, auth);
	if (ip != 0 && fs_snap_ip_verdict(ctx->snap, ip) == 1) {
		respond_error(res, out, cap, ka, 403, "forbidden", "address denied by the operator");
		return;
	}
	int standby = atomic_load_explicit(&((struct fs_snapshot *)ctx->snap)->role, memory_order_relaxed) !=
	              FS_ROLE_PRIMARY;
	if (starts_with(path.p, path.len, "/v1/skus/", &rest) && split_path(path, rest, &id, &tail)) {
		if (tail.p == NULL) {
			res->route = DP_R_SKU_GET;
			if (req->method != DP_M_GET && req->method != DP_M_HEAD)
				{ respond_error(res, out, cap, ka, 405, "method_not_allowed", NULL); return; }
			{ route_sku_get(ctx, req, id, out, cap, res); return; }
		}
		if (slice_eq(tail, "reservations")) {
			res->route = DP_R_RESERVE;
			if (req->method != DP_M_POST)
				{ respond_error(res, out, cap, ka, 405, "method_not_allowed", NULL); return; }
			if (id.len > FS_SKU_LEN_MAX)
				{ respond_error(res, out, cap, ka, 404, "unknown_sku", NULL); return; }
			if (standby)
				{ respond_error(res, out, cap, ka, 503, "standby", "this appliance is a standby: writes go to the primary"); return; }
			{ route_reserve(ctx, req, id, auth, cmd, out, cap, res); return; }
		}
	}
	/* a standby (or a fenced old primary) serves SKU reads only */
	if (standby)
		{ respond_error(res, out, cap, ka, 503, "standby", "this appliance is a standby: writes go to the primary"); return; }
	if (starts_with(path.p, path.len, "/v1/reservations/", &rest) && split_path(path, rest, &id, &tail))
		{ route_res(ctx, req, id, tail, auth, cmd, out, cap, res); return; }
	if (starts_with(path.p, path.len, "/v1/orders/", &rest) && split_path(path, rest, &id, &tail))
		{ route_order(ctx, req, id, tail, auth, cmd, out, cap, res); return; }
	respond_error(res, out, cap, ka, 404, "not_found", NULL);
}
