/* admin.c - the admin socket and the Prometheus metrics (see admin.h).
 * Not on any hot path: one thread, blocking I/O with timeouts.
 */
#include "control/admin.h"
#include "control/backup.h"
#include "control/writers.h"
#include "dataplane/http.h"
#include "dataplane/response.h"
#include "dataplane/backend.h"
#include "common/fs_cidr.h"
#include "common/fs_pub.h"
#include "common/fs_clock.h"
#include "common/fs_fault.h"
#include "writer/draw.h"
#include "writer/pay/payment.h"
#include "writer/writer.h"
#include "writer/replicate.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define ADMIN_REQ_BYTES   8192
/* /metrics is sized for the largest catalogue: 10 lines of at most ~110
 * bytes per SKU (units, version, state, reservations, waitlist, waiting
 * room), FS_SNAP_SKU_MAX of them at 1,536 bytes each with room to spare,
 * plus 128 KiB for everything else. A body that would not fit is answered
 * 500 naming the size, never cut short or dropped (a per-SKU series added
 * later must grow this). */
#define ADMIN_BODY_BYTES  ((size_t)(128u << 10) + (size_t)FS_SNAP_SKU_MAX * 1536u)
#define ADMIN_OUT_BYTES   (ADMIN_BODY_BYTES + 4096u)

struct ctl_admin {
	struct ctl_admin_config cfg;
	int unix_fd, tcp_fd, stop_fd;
	int spare_fd;                  /* held back so the operator gets in at EMFILE */
	pthread_t thread;
	char *out;                     /* response buffer */
	char *body;                    /* metrics/status body (ADMIN_BODY_BYTES) */
	uint64_t tag;
	char ident[FS_ADMIN_IDENT_LEN_MAX + 1];   /* who sent the request in progress: "uid:N" or
	                                          * "token:" + the admin token file's name */
};

/* ---- calls into the writer ------------------------------------------------ */

int ctl_admin_call(struct fs_port *port, struct fs_cmd *cmd, struct fs_ans *ans, int timeout_ms)
{
	static _Atomic uint64_t tag_next = 1;
	uint64_t tag = atomic_fetch_add(&tag_next, 1);
	struct fs_cmd *slot = fs_ring_slot(&port->cmds);
	if (slot == NULL)
		return -2;
	*slot = *cmd;
	slot->tag = tag;
	fs_ring_produce(&port->cmds, 1);
	fs_wake(port->writer);
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (;;) {
		atomic_store(&port->producer.sleeping, 1);
		if (fs_ring_dequeue_burst(&port->answers, ans, 1) == 1) {
			atomic_store(&port->producer.sleeping, 0);
			if (ans->tag == tag)
				return 0;
			continue;   /* a late answer to an earlier timed-out call */
		}
		struct pollfd p = { .fd = port->producer.fd, .events = POLLIN };
		poll(&p, 1, 100);
		uint64_t v;
		ssize_t r = read(port->producer.fd, &v, sizeof v);
		(void)r;
		atomic_store(&port->producer.sleeping, 0);
		struct timespec t1;
		clock_gettime(CLOCK_MONOTONIC, &t1);
		if ((t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000 > timeout_ms)
			return -1;
	}
}

/* ---- small parsing helpers ------------------------------------------------ */

/* Finds `name=` in the query of the request line; copies its value. */
static int query_get(const char *req, size_t len, const char *name, char *val, size_t cap)
{
	const char *eol = memchr(req, '\r', len);
	const char *q = memchr(req, '?', eol ? (size_t)(eol - req) : len);
	if (q == NULL)
		return -1;
	const char *end = memchr(q, ' ', (size_t)((eol ? eol : req + len) - q));
	if (end == NULL)
		return -1;
	size_t nlen = strlen(name);
	for (const char *p = q + 1; p < end;) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		if ((size_t)(stop - p) > nlen && memcmp(p, name, nlen) == 0 && p[nlen] == '=') {
			size_t vlen = (size_t)(stop - p) - nlen - 1;
			if (vlen >= cap)
				return -1;
			memcpy(val, p + nlen + 1, vlen);
			val[vlen] = 0;
			return 0;
		}
		p = stop + 1;
	}
	return -1;
}

/* Reads an unsigned decimal query value; def when absent; -1 when malformed. */
static int query_u64(const char *req, size_t len, const char *name, uint64_t def, uint64_t *out)
{
	char v[32];
	if (query_get(req, len, name, v, sizeof v) != 0) {
		*out = def;
		return 0;
	}
	char *e;
	errno = 0;
	unsigned long long x = strtoull(v, &e, 10);
	if (errno || e == v || *e || v[0] == '-')
		return -1;
	*out = x;
	return 0;
}

/* ---- handlers ---------------------------------------------------------------- */

static int respond(struct ctl_admin *a, int http, const char *ctype, const char *body, size_t len)
{
	return dp_resp_raw(a->out, ADMIN_OUT_BYTES, http, ctype, body, len, 0);
}

/* Writer shard `shard`'s answer: its numbers become public ids (pubid.h). */
static int respond_ans(struct ctl_admin *a, const struct fs_ans *ans, uint32_t shard)
{
	struct dp_id_owner owner = { a->cfg.appliance, shard };
	return dp_resp_answer(a->out, ADMIN_OUT_BYTES, ans, owner, 0);
}

/* The appliance of the shard map that owns SKU cmd->sku when it is not
 * this one, else -1. */
static int sku_elsewhere(const struct ctl_admin *a, const struct fs_cmd *cmd)
{
	if (a->cfg.shards == NULL)
		return -1;
	uint32_t owner = fs_shard_appliance_of(a->cfg.shards, cmd->sku, cmd->sku_len);
	return owner == a->cfg.appliance ? -1 : (int)owner;
}

/* 421 for a SKU another appliance owns: no sale of it is created, opened
 * or reported here (exactly one writer per SKU across the boxes). */
static int respond_misdirected(struct ctl_admin *a, const struct fs_cmd *cmd, uint32_t owner)
{
	const struct fs_shard_appliance *o = &a->cfg.shards->appliances[owner];
	int n = snprintf(a->body, ADMIN_BODY_BYTES,
	                 "{\"error\":\"misdirected\",\"shard\":\"%s\",\"address\":\"%s\",\"detail\":"
	                 "\"SKU %.*s belongs to shard %s (--shard-map); this is shard %s\"}",
	                 o->name, o->addr, cmd->sku_len, cmd->sku, o->name, a->cfg.shard_name);
	return respond(a, 421, "application/json", a->body, (size_t)n);
}

/* Every journaled admin command carries who asked (fs_cmd.h). */
static void stamp_ident(const struct ctl_admin *a, struct fs_cmd *cmd)
{
	size_t n = strlen(a->ident);
	assert(n > 0 && n <= FS_ADMIN_IDENT_LEN_MAX && n <= sizeof cmd->key);
	memcpy(cmd->key, a->ident, n);
	cmd->key_len = (uint8_t)n;
}

/* The writer shard that owns a SKU (the dataplane decides the same way). */
static uint32_t sku_shard(const struct ctl_admin *a, const char *sku, size_t len)
{
	if (a->cfg.writer_count <= 1)
		return 0;
	uint32_t k = fs_shard_writer_of(a->cfg.shard_map, sku, len, a->cfg.writer_count);
	assert(k < a->cfg.writer_count);
	return k;
}

/* Writer shard k's label: none with one writer (the series are as they
 * were before shards), else writer="k". */
static const char *shard_label(const struct ctl_admin *a, uint32_t k, char buf[24])
{
	if (a->cfg.writer_count <= 1)
		return "";
	snprintf(buf, 24, "writer=\"%u\"", k);
	return buf;
}

/* The writer shard whose journal sink i reads. */
static uint32_t sink_shard(const struct ctl_admin *a, uint32_t i)
{
	uint32_t k = a->cfg.sink_shards ? a->cfg.sink_shards[i] : 0;
	assert(k < a->cfg.writer_count);
	return k;
}

/* A command about one SKU goes to its owner; one about no SKU (IP rules,
 * user tiers: every shard decides with them) to every shard, answered
 * with the first refusal, else the last answer. */
static int call_writer(struct ctl_admin *a, struct fs_cmd *cmd)
{
	struct fs_ans ans;
	if (cmd->type != FS_CMD_SALE_GET)
		stamp_ident(a, cmd);
	uint32_t first = cmd->sku_len ? sku_shard(a, cmd->sku, cmd->sku_len) : 0;
	uint32_t end = cmd->sku_len ? first + 1 : a->cfg.writer_count, k;
	for (k = first; k < end; k++) {
		struct fs_cmd c = *cmd;
		if (ctl_admin_call(a->cfg.ports[k], &c, &ans, 5000) != 0)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 503, "overloaded", "writer did not answer", 0);
		if (ans.http >= 300)
			break;
	}
	return respond_ans(a, &ans, k < end ? k : end - 1);
}

static int sale_create(struct ctl_admin *a, const char *req, size_t len, struct fs_cmd *cmd)
{
	uint64_t stock, per_user, hold_ms, waitlist, tier, price, opens, window, outflow;
	if (query_u64(req, len, "stock", UINT64_MAX, &stock) || stock == UINT64_MAX ||
	    query_u64(req, len, "per_user", 1, &per_user) || query_u64(req, len, "hold_ms", 120000, &hold_ms) ||
	    query_u64(req, len, "waitlist", 0, &waitlist) || query_u64(req, len, "default_tier", 4, &tier) ||
	    query_u64(req, len, "price_cents", 0, &price) || query_u64(req, len, "opens_at_ms", 0, &opens) ||
	    query_u64(req, len, "prequeue_window_ms", 0, &window) || query_u64(req, len, "outflow_per_s", 0, &outflow) ||
	    window > UINT32_MAX || outflow > UINT32_MAX || (window > 0 && opens == 0) ||
	    per_user > UINT32_MAX || hold_ms > UINT32_MAX || waitlist > UINT32_MAX || tier > 4)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request",
		                     "stock required; numbers must be non-negative integers", 0);
	cmd->type = FS_CMD_SALE_CREATE;
	cmd->sale.total = stock;
	cmd->sale.per_user = (uint32_t)per_user;
	cmd->sale.hold_ms = (uint32_t)hold_ms;
	cmd->sale.waitlist_max = (uint32_t)waitlist;
	cmd->sale.default_tier = (uint32_t)tier;
	cmd->sale.price_cents = (int64_t)price;
	cmd->sale.opens_at_ms = (int64_t)opens;
	cmd->sale.prequeue_window_ms = (uint32_t)window;
	cmd->sale.outflow_per_s = (uint32_t)outflow;
	if (window > 0) {   /* a waiting room: commit to a secret seed now */
		char commit[65], err[256];
		if (wr_draw_seed_create(a->cfg.shard_dirs[sku_shard(a, cmd->sku, cmd->sku_len)], cmd->sku, cmd->sku_len, commit, err, sizeof err) != 0)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 503, "overloaded", err, 0);
		memcpy(cmd->text, commit, 64);
		cmd->text_len = 64;
	}
	return call_writer(a, cmd);
}

static const char *role_name(uint32_t role)
{
	return role == RP_ROLE_PRIMARY ? "primary" : role == RP_ROLE_STANDBY ? "standby" : "fenced";
}

/* The replication state as a JSON object (no braces around the caller's). */
static int repl_json(struct ctl_admin *a, char *b, size_t cap)
{
	struct rp_stats st;
	a->cfg.repl_stats(a->cfg.repl, &st);
	for (char *c = st.last_error; *c; c++)   /* keep the JSON string plain */
		if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20)
			*c = '\'';
	return snprintf(b, cap, "{\"role\":\"%s\",\"epoch\":%llu,\"my_epoch\":%llu,\"fenced\":%s,"
	                "\"applied_seq\":%llu,\"log_end_offset\":%llu,\"next_offset\":%llu,\"lag_records\":%llu,"
	                "\"lag_ms\":%llu,\"promote_pending\":%s,\"shipped\":%llu,\"skipped\":%llu,"
	                "\"fence_checks\":%llu,\"produce_retries\":%llu,\"primary_silent_ms\":%llu,"
	                "\"auto_promotions\":%llu,\"last_error\":\"%s\"}",
	                role_name(st.role), (unsigned long long)st.epoch, (unsigned long long)st.my_epoch,
	                st.role == RP_ROLE_FENCED ? "true" : "false", (unsigned long long)st.applied_seq,
	                (unsigned long long)st.log_end_offset, (unsigned long long)st.next_offset,
	                (unsigned long long)st.lag_records, (unsigned long long)st.lag_ms,
	                st.promote_pending ? "true" : "false", (unsigned long long)st.shipped,
	                (unsigned long long)st.skipped, (unsigned long long)st.fence_checks,
	                (unsigned long long)st.produce_retries, (unsigned long long)st.primary_silent_ms,
	                (unsigned long long)st.auto_promotions, st.last_error);
}

/* POST /admin/promote: waits (bounded) until the standby is the primary. */
static int promote(struct ctl_admin *a)
{
	if (a->cfg.repl == NULL)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 409, "bad_state", "not replicated (--replicate kafka --standby)", 0);
	struct rp_stats st;
	a->cfg.repl_stats(a->cfg.repl, &st);
	if (st.role == RP_ROLE_FENCED)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 409, "bad_state", "this node is fenced: restart it with --standby", 0);
	if (st.role == RP_ROLE_STANDBY) {
		a->cfg.repl_promote(a->cfg.repl);
		for (int i = 0; i < 6000; i++) {   /* 60 s: the log up to the fence is applied first */
			a->cfg.repl_stats(a->cfg.repl, &st);
			if ((st.role == RP_ROLE_PRIMARY && atomic_load(&a->cfg.snap->role) == FS_ROLE_PRIMARY) ||
			    !st.promote_pending)
				break;
			struct timespec ts = { 0, 10 * 1000000L };
			nanosleep(&ts, NULL);
		}
		if (st.role != RP_ROLE_PRIMARY)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 503, "overloaded",
			                     st.last_error[0] ? st.last_error : "promotion did not finish", 0);
	}
	int n = repl_json(a, a->body, ADMIN_BODY_BYTES);
	return respond(a, 200, "application/json", a->body, (size_t)n);
}

/* A standby's writer takes no commands: its sale status comes from the
 * published snapshot. 0, or -1 for an unknown SKU. */
static int sale_from_snapshot(struct ctl_admin *a, const struct fs_cmd *cmd, struct fs_ans *ans)
{
	const struct fs_snapshot *snap = a->cfg.snaps[sku_shard(a, cmd->sku, cmd->sku_len)];
	int idx = fs_snap_find(snap, cmd->sku, cmd->sku_len);
	if (idx < 0)
		return -1;
	struct fs_sku_read v;
	fs_snap_read(snap, idx, &v);
	memset(ans, 0, sizeof *ans);
	ans->http = 200;
	memcpy(ans->sku, cmd->sku, cmd->sku_len);
	ans->sku_len = cmd->sku_len;
	ans->state = (uint8_t)v.state;
	ans->total = v.total;
	ans->available = v.available;
	ans->reserved = v.reserved;
	ans->sold = v.sold;
	ans->version = v.version;
	return 0;
}

static int sale_status(struct ctl_admin *a, struct fs_cmd *cmd)
{
	cmd->type = FS_CMD_SALE_GET;
	struct fs_ans ans;
	uint32_t shard = sku_shard(a, cmd->sku, cmd->sku_len);
	struct writer *w = a->cfg.writers[shard];
	if (atomic_load(&a->cfg.snaps[shard]->role) != FS_ROLE_PRIMARY) {
		if (sale_from_snapshot(a, cmd, &ans) != 0)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 404, "unknown_sku", NULL, 0);
	} else if (ctl_admin_call(a->cfg.ports[shard], cmd, &ans, 5000) != 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 503, "overloaded", "writer did not answer", 0);
	if (ans.http != 200)
		return respond_ans(a, &ans, shard);
	const struct wr_metrics *m = wr_metrics(w);
	uint64_t ok = 0, refused = 0;
	for (int e = 0; e < FS_ERR_COUNT; e++) {
		uint64_t v = atomic_load(&((struct wr_metrics *)m)->outcomes[FS_CMD_RESERVE][e]);
		if (e == FS_OK)
			ok += v;
		else if (e != FS_ERR_EXISTS)   /* an idempotent repeat is neither */
			refused += v;
	}
	uint64_t durable = atomic_load(wr_durable_seq(w));
	int n = snprintf(a->body, ADMIN_BODY_BYTES,
	                 "{\"sku\":\"%.*s\",\"state\":\"%s\",\"total\":%llu,\"available\":%llu,"
	                 "\"reserved\":%llu,\"sold\":%llu,\"version\":%llu,"
	                 "\"reservations_granted_total\":%llu,\"reservations_refused_total\":%llu,"
	                 "\"writer_shard\":%u,\"writer_shards\":%u,\"journal_seq\":%llu,\"shard\":\"%s\",",
	                 ans.sku_len, ans.sku, fs_sale_state_name(ans.state),
	                 (unsigned long long)ans.total, (unsigned long long)ans.available,
	                 (unsigned long long)ans.reserved, (unsigned long long)ans.sold,
	                 (unsigned long long)ans.version, (unsigned long long)ok,
	                 (unsigned long long)refused, shard, a->cfg.writer_count, (unsigned long long)durable,
	                 a->cfg.shard_name ? a->cfg.shard_name : "");
	if (ans.has_draw) {
		char commit[65];
		wr_hex(ans.draw_commit, 32, commit);
		n += snprintf(a->body + n, ADMIN_BODY_BYTES - (size_t)n,
		              "\"waiting_room\":{\"draw_commit_sha256\":\"%s\",\"drawn\":%s,\"queued\":%u},",
		              commit, ans.drawn ? "true" : "false", ans.queued);
	}
	n += snprintf(a->body + n, ADMIN_BODY_BYTES - (size_t)n, "\"sinks\":[");
	for (uint32_t i = 0, listed = 0; i < a->cfg.sink_count; i++) {
		if (sink_shard(a, i) != shard)
			continue;   /* another shard's journal: not this SKU's */
		uint64_t applied = a->cfg.sink_applied(a->cfg.sinks[i]);
		uint64_t lag_ms = a->cfg.sink_lag_ms ? a->cfg.sink_lag_ms(a->cfg.sinks[i]) : 0;
		n += snprintf(a->body + n, ADMIN_BODY_BYTES - (size_t)n,
		              "%s{\"name\":\"%s\",\"applied_seq\":%llu,\"lag\":%llu,\"lag_s\":%.3f}",
		              listed++ ? "," : "", a->cfg.sink_names[i], (unsigned long long)applied,
		              (unsigned long long)(durable - (applied < durable ? applied : durable)), (double)lag_ms / 1000.0);
	}
	n += snprintf(a->body + n, ADMIN_BODY_BYTES - (size_t)n, "]");
	if (a->cfg.repl) {
		n += snprintf(a->body + n, ADMIN_BODY_BYTES - (size_t)n, ",\"replication\":");
		n += repl_json(a, a->body + n, ADMIN_BODY_BYTES - (size_t)n);
	}
	n += snprintf(a->body + n, ADMIN_BODY_BYTES - (size_t)n, "}");
	return respond(a, 200, "application/json", a->body, (size_t)n);
}

/* Appends one formatted line to the metrics body. */
static size_t put(char *b, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static _Thread_local int put_overflow;   /* the admin thread's: set when a line did not fit */
static size_t put(char *b, size_t n, const char *fmt, ...)
{
	assert(n <= ADMIN_BODY_BYTES);
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(b + n, ADMIN_BODY_BYTES - n, fmt, ap);
	va_end(ap);
	if (k < 0 || (size_t)k >= ADMIN_BODY_BYTES - n) {
		b[n] = 0;
		put_overflow = 1;
		return n;
	}
	return n + (size_t)k;
}

/* One Prometheus sample with its TYPE line. */
static size_t put_scalar(char *b, size_t n, const char *name, const char *type, uint64_t v)
{
	return put(b, n, "# TYPE %s %s\n%s %llu\n", name, type, name, (unsigned long long)v);
}

static const char *route_names[DP_R_COUNT] = { "sku_get", "reserve", "reservation_get", "cancel",
                                               "checkout", "order_get", "health", "other" };

/* Request latency per route and status class (only the pairs that answered). */
static size_t metrics_latency(const struct dp_stats *const *workers, uint32_t worker_count, char *b, size_t n)
{
	n = put(b, n, "# TYPE flashsale_http_request_seconds histogram\n");
	static const char *const classes[DP_CLASSES] = { "other", "1xx", "2xx", "3xx", "4xx", "5xx" };
	for (int r = 0; r < DP_R_COUNT; r++)
		for (int k = 0; k < DP_CLASSES; k++) {
			uint64_t bucket[DP_LAT_BUCKETS] = { 0 }, sum_us = 0, total = 0;
			for (uint32_t i = 0; i < worker_count; i++) {
				struct dp_stats *st = (struct dp_stats *)workers[i];
				for (int q = 0; q < DP_LAT_BUCKETS; q++)
					bucket[q] += atomic_load_explicit(&st->lat[r][k][q], memory_order_relaxed);
				sum_us += atomic_load_explicit(&st->lat_sum_us[r][k], memory_order_relaxed);
			}
			for (int q = 0; q < DP_LAT_BUCKETS; q++)
				total += bucket[q];
			if (total == 0)
				continue;
			uint64_t cum = 0;
			for (int q = 0; q < DP_LAT_BUCKETS - 1; q++) {
				cum += bucket[q];
				n = put(b, n, "flashsale_http_request_seconds_bucket{route=\"%s\",class=\"%s\",le=\"%g\"} %llu\n",
				        route_names[r], classes[k], dp_lat_bound_us[q] / 1e6, (unsigned long long)cum);
			}
			n = put(b, n, "flashsale_http_request_seconds_bucket{route=\"%s\",class=\"%s\",le=\"+Inf\"} %llu\n"
			        "flashsale_http_request_seconds_sum{route=\"%s\",class=\"%s\"} %g\n"
			        "flashsale_http_request_seconds_count{route=\"%s\",class=\"%s\"} %llu\n",
			        route_names[r], classes[k], (unsigned long long)total, route_names[r], classes[k],
			        (double)sum_us / 1e6, route_names[r], classes[k], (unsigned long long)total);
		}
	return n;
}

/* The HTTP counters of every worker, the same for either backend. */
static size_t metrics_dataplane(struct ctl_admin *a, char *b, size_t n)
{
	const struct dp_stats *workers[DP_WORKERS_MAX];
	const struct dp_backend *dp = a->cfg.dataplane;
	uint32_t worker_count = dp ? dp->ops->stats(dp, workers, DP_WORKERS_MAX) : 0;
	assert(worker_count <= DP_WORKERS_MAX);
	n = put(b, n, "# TYPE flashsale_http_answers_total counter\n");
	uint64_t conns = 0, accepted = 0, refused = 0, ring_full = 0, timeouts = 0;
	uint64_t slow = 0, ip_refused = 0, lingered = 0, accept_errors = 0, sq_full = 0, nobufs = 0, parked = 0;
	for (int r = 0; r < DP_R_COUNT; r++)
		for (int s = 0; s < DP_ST_COUNT; s++) {
			uint64_t v = 0;
			for (uint32_t i = 0; i < worker_count; i++)
				v += atomic_load(&((struct dp_stats *)workers[i])->answers[r][s]);
			if (v)
				n = put(b, n, "flashsale_http_answers_total{route=\"%s\",status=\"%d\"} %llu\n",
				        route_names[r], dp_status_of_slot(s), (unsigned long long)v);
		}
	for (uint32_t i = 0; i < worker_count; i++) {
		const struct dp_stats *st = workers[i];
		conns += atomic_load(&((struct dp_stats *)st)->conns_open);
		accepted += atomic_load(&((struct dp_stats *)st)->conns_accepted);
		refused += atomic_load(&((struct dp_stats *)st)->conns_refused);
		ring_full += atomic_load(&((struct dp_stats *)st)->ring_full);
		timeouts += atomic_load(&((struct dp_stats *)st)->conns_timed_out);
		slow += atomic_load(&((struct dp_stats *)st)->conns_slow_readers);
		ip_refused += atomic_load(&((struct dp_stats *)st)->conns_ip_refused);
		lingered += atomic_load(&((struct dp_stats *)st)->conns_lingered);
		accept_errors += atomic_load(&((struct dp_stats *)st)->accept_errors);
		sq_full += atomic_load(&((struct dp_stats *)st)->sq_full);
		nobufs += atomic_load(&((struct dp_stats *)st)->recv_nobufs);
		parked += atomic_load(&((struct dp_stats *)st)->recv_parked);
	}
	n = metrics_latency(workers, worker_count, b, n);
	n = put_scalar(b, n, "flashsale_connections_open", "gauge", conns);
	n = put_scalar(b, n, "flashsale_connections_accepted_total", "counter", accepted);
	n = put_scalar(b, n, "flashsale_connections_refused_total", "counter", refused);
	n = put_scalar(b, n, "flashsale_connections_timed_out_total", "counter", timeouts);
	n = put_scalar(b, n, "flashsale_connections_slow_reader_closed_total", "counter", slow);
	n = put_scalar(b, n, "flashsale_connections_per_ip_refused_total", "counter", ip_refused);
	n = put_scalar(b, n, "flashsale_connections_lingering_closes_total", "counter", lingered);
	n = put_scalar(b, n, "flashsale_accept_errors_total", "counter", accept_errors);
	n = put_scalar(b, n, "flashsale_io_sq_full_total", "counter", sq_full);
	n = put_scalar(b, n, "flashsale_io_recv_nobufs_total", "counter", nobufs);
	n = put_scalar(b, n, "flashsale_io_recv_parked_total", "counter", parked);
	n = put_scalar(b, n, "flashsale_ring_full_total", "counter", ring_full);
	n = put(b, n, "# TYPE flashsale_ring_depth gauge\n");
	for (uint32_t k = 0; k < a->cfg.writer_count; k++)
		for (uint32_t i = 0; i < worker_count; i++) {
			char lb[24];
			const char *l = shard_label(a, k, lb);
			n = put(b, n, "flashsale_ring_depth{%s%sworker=\"%u\"} %u\n", l, l[0] ? "," : "", i,
			        fs_ring_count(&wr_port(a->cfg.writers[k], i)->cmds));
		}
	if (dp && dp->ops->metrics && n < ADMIN_BODY_BYTES)
		n += dp->ops->metrics(dp, b + n, ADMIN_BODY_BYTES - n);   /* the backend's own (DPDK port, TCP) */
	return n;
}

/* One counter or gauge of struct wr_metrics, a sample per writer shard. */
static size_t put_writer_field(struct ctl_admin *a, char *b, size_t n, const char *name, const char *type, size_t off)
{
	n = put(b, n, "# TYPE %s %s\n", name, type);
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		char lb[24];
		const char *l = shard_label(a, k, lb);
		const _Atomic uint64_t *v = (const _Atomic uint64_t *)((const char *)wr_metrics(a->cfg.writers[k]) + off);
		n = put(b, n, "%s%s%s%s %llu\n", name, l[0] ? "{" : "", l, l[0] ? "}" : "",
		        (unsigned long long)atomic_load((_Atomic uint64_t *)v));
	}
	return n;
}

static const struct { const char *name, *type; size_t off; } writer_fields[] = {
	{ "flashsale_writer_batches_total", "counter", offsetof(struct wr_metrics, batches) },
	{ "flashsale_writer_commands_total", "counter", offsetof(struct wr_metrics, commands) },
	{ "flashsale_journal_records_total", "counter", offsetof(struct wr_metrics, records) },
	{ "flashsale_journal_bytes", "gauge", offsetof(struct wr_metrics, journal_bytes) },
	{ "flashsale_journal_seq", "gauge", offsetof(struct wr_metrics, durable_seq) },
	{ "flashsale_payments_outstanding", "gauge", offsetof(struct wr_metrics, charges_outstanding) },
	{ "flashsale_risk_flags_total", "counter", offsetof(struct wr_metrics, risk_flags) },
	{ NULL, NULL, 0 },   /* flashsale_writer_owed_ms: from the snapshot */
	{ "flashsale_snapshots_total", "counter", offsetof(struct wr_metrics, snapshots) },
	{ "flashsale_snapshot_failures_total", "counter", offsetof(struct wr_metrics, snapshot_failures) },
	{ "flashsale_snapshot_seq", "gauge", offsetof(struct wr_metrics, snapshot_seq) },
	{ "flashsale_snapshot_bytes", "gauge", offsetof(struct wr_metrics, snapshot_bytes) },
	{ "flashsale_snapshot_fork_us_max", "gauge", offsetof(struct wr_metrics, snapshot_fork_us_max) },
	{ "flashsale_snapshot_write_ms", "gauge", offsetof(struct wr_metrics, snapshot_write_ms_last) },
	{ "flashsale_journal_first_seq", "gauge", offsetof(struct wr_metrics, journal_first_seq) },
	{ "flashsale_journal_segments_dropped_total", "counter", offsetof(struct wr_metrics, segments_dropped) },
	{ "flashsale_journal_segments_held_by_sinks", "gauge", offsetof(struct wr_metrics, segments_held_by_sinks) },
	{ "flashsale_startup_snapshot_ms", "gauge", offsetof(struct wr_metrics, startup_snapshot_ms) },
	{ "flashsale_startup_tail_ms", "gauge", offsetof(struct wr_metrics, startup_tail_ms) },
	{ "flashsale_startup_tail_batches", "gauge", offsetof(struct wr_metrics, replayed_batches) },
	{ "flashsale_journal_append_failures_total", "counter", offsetof(struct wr_metrics, journal_append_failures) },
	{ "flashsale_journal_stalls_total", "counter", offsetof(struct wr_metrics, journal_stalls) },
	{ "flashsale_journal_stalled", "gauge", offsetof(struct wr_metrics, journal_stalled) },
	{ "flashsale_journal_stall_refused_total", "counter", offsetof(struct wr_metrics, journal_stall_refused) },
	{ "flashsale_journal_prepare_failures_total", "counter", offsetof(struct wr_metrics, journal_prep_failures) },
};

static size_t metrics_writer_hist(struct ctl_admin *a, char *b, size_t n)
{
	n = put(b, n, "# TYPE flashsale_fdatasync_seconds histogram\n");
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		struct wr_metrics *m = (struct wr_metrics *)wr_metrics(a->cfg.writers[k]);
		char lb[24];
		const char *l = shard_label(a, k, lb), *c = l[0] ? "," : "";
		uint64_t cum = 0;
		for (int i = 0; i < WR_FSYNC_BUCKETS; i++) {
			cum += atomic_load(&m->fsync_hist[i]);
			n = put(b, n, "flashsale_fdatasync_seconds_bucket{%s%sle=\"%g\"} %llu\n", l, c, (double)(2ull << i) / 1e6,
			        (unsigned long long)cum);
		}
		n = put(b, n, "flashsale_fdatasync_seconds_bucket{%s%sle=\"+Inf\"} %llu\n", l, c, (unsigned long long)cum);
		n = put(b, n, "flashsale_fdatasync_seconds_sum%s%s%s %g\nflashsale_fdatasync_seconds_count%s%s%s %llu\n",
		        l[0] ? "{" : "", l, l[0] ? "}" : "", (double)atomic_load(&m->fsync_ns_sum) / 1e9,
		        l[0] ? "{" : "", l, l[0] ? "}" : "", (unsigned long long)cum);
	}
	n = put(b, n, "# TYPE flashsale_batch_commands histogram\n");
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		struct wr_metrics *m = (struct wr_metrics *)wr_metrics(a->cfg.writers[k]);
		char lb[24];
		const char *l = shard_label(a, k, lb), *c = l[0] ? "," : "";
		uint64_t cum = 0;
		for (int i = 0; i < WR_BATCH_BUCKETS; i++) {
			cum += atomic_load(&m->batch_hist[i]);
			n = put(b, n, "flashsale_batch_commands_bucket{%s%sle=\"%llu\"} %llu\n", l, c, (2ull << i) - 1,
			        (unsigned long long)cum);
		}
		n = put(b, n, "flashsale_batch_commands_bucket{%s%sle=\"+Inf\"} %llu\nflashsale_batch_commands_count%s%s%s %llu\n",
		        l, c, (unsigned long long)cum, l[0] ? "{" : "", l, l[0] ? "}" : "", (unsigned long long)cum);
	}
	return n;
}

static size_t metrics_writer(struct ctl_admin *a, char *b, size_t n)
{
	for (size_t f = 0; f < sizeof writer_fields / sizeof writer_fields[0]; f++) {
		if (writer_fields[f].name != NULL) {
			n = put_writer_field(a, b, n, writer_fields[f].name, writer_fields[f].type, writer_fields[f].off);
			continue;
		}
		n = put(b, n, "# TYPE flashsale_writer_owed_ms gauge\n");
		for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
			int64_t busy = atomic_load(&a->cfg.snaps[k]->writer_busy_since_ms);
			int64_t now_ms = fs_wall_ms();
			char lb[24];
			const char *l = shard_label(a, k, lb);
			n = put(b, n, "flashsale_writer_owed_ms%s%s%s %llu\n", l[0] ? "{" : "", l, l[0] ? "}" : "",
			        (unsigned long long)(busy && now_ms > busy ? (uint64_t)(now_ms - busy) : 0));
		}
	}
	if (a->cfg.shards != NULL)   /* --shard NAME --shard-map: which appliance this is */
		n = put(b, n, "# TYPE flashsale_shard_info gauge\nflashsale_shard_info{shard=\"%s\",index=\"%u\",shards=\"%u\"} 1\n",
		        a->cfg.shard_name, a->cfg.appliance, a->cfg.shards->appliance_count);
	/* reservation/order reads that met the writer mid-publish too often and
	 * were sent to it instead of being answered from common/fs_pub.h */
	n = put(b, n, "# TYPE flashsale_published_reads_busy_total counter\n");
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		const struct fs_pub *pub = a->cfg.snaps[k]->pub;
		char lb[24];
		const char *l = shard_label(a, k, lb);
		n = put(b, n, "flashsale_published_reads_busy_total%s%s%s %llu\n", l[0] ? "{" : "", l, l[0] ? "}" : "",
		        (unsigned long long)(pub ? atomic_load(&((struct fs_pub *)pub)->busy) : 0));
	}
	n = metrics_writer_hist(a, b, n);
	n = put(b, n, "# TYPE flashsale_decisions_total counter\n");
	for (int t = 1; t < FS_CMD_TYPE_COUNT; t++)
		for (int e = 0; e < FS_ERR_COUNT; e++)
			for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
				struct wr_metrics *m = (struct wr_metrics *)wr_metrics(a->cfg.writers[k]);
				uint64_t v = atomic_load(&m->outcomes[t][e]);
				char lb[24];
				const char *l = shard_label(a, k, lb);
				if (v)
					n = put(b, n, "flashsale_decisions_total{%s%scommand=\"%s\",outcome=\"%s\"} %llu\n", l,
					        l[0] ? "," : "", fs_cmd_type_name(t), fs_err_name(e), (unsigned long long)v);
			}
	n = put(b, n, "# TYPE flashsale_table_used gauge\n");
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		struct wr_usage u;
		wr_table_usage(a->cfg.writers[k], &u);
		char lb[24];
		const char *l = shard_label(a, k, lb), *c = l[0] ? "," : "";
		n = put(b, n, "flashsale_table_used{%s%stable=\"users\"} %u\nflashsale_table_used{%s%stable=\"reservations\"} %u\n"
		        "flashsale_table_used{%s%stable=\"orders\"} %u\nflashsale_table_used{%s%stable=\"idempotency_keys\"} %u\n"
		        "flashsale_table_used{%s%stable=\"holdings\"} %u\nflashsale_table_used{%s%stable=\"skus\"} %u\n", l, c,
		        u.users, l, c, u.reservations, l, c, u.orders, l, c, u.idem_keys, l, c, u.holdings, l, c, u.skus);
	}
	return n;
}

/* Every SKU of every writer shard: (shard, index) pairs in order. */
#define FOR_EACH_SKU(a, k, s, i) \
	for (uint32_t k = 0; k < (a)->cfg.writer_count; k++) \
		for (const struct fs_snapshot *s = (a)->cfg.snaps[k]; s != NULL; s = NULL) \
			for (uint32_t i = 0; i < atomic_load(&((struct fs_snapshot *)s)->count); i++) \
				if (s->skus[i].name_len != 0)   /* not an archived sale's free entry */

static size_t metrics_skus(struct ctl_admin *a, char *b, size_t n)
{
	static const char *fields[4] = { "total", "available", "reserved", "sold" };
	/* which writer shard owns each SKU (fixed at start-up) */
	n = put(b, n, "# TYPE flashsale_sku_writer gauge\n");
	FOR_EACH_SKU(a, k, s, i)
		n = put(b, n, "flashsale_sku_writer{sku=\"%.*s\",writer=\"%u\"} 1\n", s->skus[i].name_len, s->skus[i].name, k);
	n = put(b, n, "# TYPE flashsale_sku_units gauge\n");
	FOR_EACH_SKU(a, k, s, i) {
		struct fs_sku_read v;
		fs_snap_read(s, (int)i, &v);
		uint64_t vals[4] = { v.total, v.available, v.reserved, v.sold };
		for (int f = 0; f < 4; f++)
			n = put(b, n, "flashsale_sku_units{sku=\"%.*s\",kind=\"%s\"} %llu\n", s->skus[i].name_len,
			        s->skus[i].name, fields[f], (unsigned long long)vals[f]);
	}
	n = put(b, n, "# TYPE flashsale_sku_version gauge\n");
	FOR_EACH_SKU(a, k, s, i) {
		struct fs_sku_read v;
		fs_snap_read(s, (int)i, &v);
		n = put(b, n, "flashsale_sku_version{sku=\"%.*s\"} %llu\n", s->skus[i].name_len, s->skus[i].name,
		        (unsigned long long)v.version);
	}
	/* one series per SKU with value 1 for its state (an "info" gauge) */
	n = put(b, n, "# TYPE flashsale_sku_state gauge\n");
	FOR_EACH_SKU(a, k, s, i) {
		struct fs_sku_read v;
		fs_snap_read(s, (int)i, &v);
		n = put(b, n, "flashsale_sku_state{sku=\"%.*s\",state=\"%s\"} 1\n", s->skus[i].name_len,
		        s->skus[i].name, fs_sale_state_name((enum fs_sale_state)v.state));
	}
	n = put(b, n, "# TYPE flashsale_sku_reservations_total counter\n");
	FOR_EACH_SKU(a, k, s, i)
		n = put(b, n, "flashsale_sku_reservations_total{sku=\"%.*s\",outcome=\"granted\"} %llu\n"
		        "flashsale_sku_reservations_total{sku=\"%.*s\",outcome=\"refused\"} %llu\n",
		        s->skus[i].name_len, s->skus[i].name, (unsigned long long)atomic_load(&s->skus[i].granted),
		        s->skus[i].name_len, s->skus[i].name, (unsigned long long)atomic_load(&s->skus[i].refused));
	/* waitlist and waiting-room depth, as the writer last published them */
	n = put(b, n, "# TYPE flashsale_waitlist_depth gauge\n# TYPE flashsale_waiting_room_queued gauge\n");
	FOR_EACH_SKU(a, k, s, i) {
		struct fs_sku_read v;
		fs_snap_read(s, (int)i, &v);
		n = put(b, n, "flashsale_waitlist_depth{sku=\"%.*s\"} %u\nflashsale_waiting_room_queued{sku=\"%.*s\"} %u\n",
		        s->skus[i].name_len, s->skus[i].name, v.waitlist_count, s->skus[i].name_len, s->skus[i].name,
		        v.queued);
	}
	const struct fs_snapshot *s = a->cfg.snap;
	uint32_t open_all = 1;
	for (uint32_t k = 0; k < a->cfg.writer_count; k++)
		open_all &= atomic_load(&a->cfg.snaps[k]->payments_open) != 0;
	(void)s;
	n = put_scalar(b, n, "flashsale_payments_breaker_open", "gauge", open_all ? 0 : 1);   /* any shard's */
	n = put(b, n, "# TYPE flashsale_sink_lag_batches gauge\n");
	for (uint32_t i = 0; i < a->cfg.sink_count; i++) {
		uint64_t durable = atomic_load(wr_durable_seq(a->cfg.writers[sink_shard(a, i)]));
		uint64_t applied = a->cfg.sink_applied(a->cfg.sinks[i]);
		n = put(b, n, "flashsale_sink_lag_batches{sink=\"%s\"} %llu\n", a->cfg.sink_names[i],
		        (unsigned long long)(applied < durable ? durable - applied : 0));
		if (a->cfg.sink_stopped)
			n = put(b, n, "flashsale_sink_stopped{sink=\"%s\"} %d\n", a->cfg.sink_names[i],
			        a->cfg.sink_stopped(a->cfg.sinks[i]));
	}
	if (a->cfg.sink_lag_ms != NULL) {   /* the same lag in time: what an alert threshold means */
		n = put(b, n, "# TYPE flashsale_sink_lag_seconds gauge\n");
		for (uint32_t i = 0; i < a->cfg.sink_count; i++)
			n = put(b, n, "flashsale_sink_lag_seconds{sink=\"%s\"} %.3f\n", a->cfg.sink_names[i],
			        (double)a->cfg.sink_lag_ms(a->cfg.sinks[i]) / 1000.0);
	}
	if (a->cfg.sink_connected != NULL) {
		n = put(b, n, "# TYPE flashsale_sink_connected gauge\n# TYPE flashsale_sink_errors_total counter\n");
		for (uint32_t i = 0; i < a->cfg.sink_count; i++) {
			uint64_t errors = 0;
			int up = a->cfg.sink_connected(a->cfg.sinks[i], &errors);
			n = put(b, n, "flashsale_sink_connected{sink=\"%s\"} %d\nflashsale_sink_errors_total{sink=\"%s\"} %llu\n",
			        a->cfg.sink_names[i], up, a->cfg.sink_names[i], (unsigned long long)errors);
		}
	}
	if (a->cfg.sink_model_seq != NULL) {   /* the journal after it is what a Kafka/Redis sink needs */
		n = put(b, n, "# TYPE flashsale_sink_model_checkpoint_seq gauge\n");
		for (uint32_t i = 0; i < a->cfg.sink_count; i++) {
			uint64_t seq = 0;
			if (a->cfg.sink_model_seq(a->cfg.sinks[i], &seq))
				n = put(b, n, "flashsale_sink_model_checkpoint_seq{sink=\"%s\"} %llu\n", a->cfg.sink_names[i],
				        (unsigned long long)seq);
		}
	}
	return n;
}

/* The payment thread's counters (writer/pay/payment.h). */
static size_t metrics_payments(struct ctl_admin *a, char *b, size_t n)
{
	if (a->cfg.payments_of[0] == NULL)
		return n;
	/* every writer shard has its payment thread: their sum (breaker: the worst) */
	struct pay_stats s;
	memset(&s, 0, sizeof s);
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		struct pay_stats t;
		pay_stats_get(a->cfg.payments_of[k], &t);
		s.charges += t.charges, s.attempts += t.attempts, s.attempt_errors += t.attempt_errors;
		s.paid += t.paid, s.declined += t.declined, s.invalid += t.invalid, s.unavailable += t.unavailable;
		s.breaker_opened += t.breaker_opened, s.in_flight += t.in_flight;
		s.breaker = t.breaker > s.breaker ? t.breaker : s.breaker;
	}
	n = put_scalar(b, n, "flashsale_payment_charges_total", "counter", s.charges);
	n = put_scalar(b, n, "flashsale_payment_attempts_total", "counter", s.attempts);
	n = put_scalar(b, n, "flashsale_payment_attempt_errors_total", "counter", s.attempt_errors);
	n = put(b, n, "# TYPE flashsale_payment_outcomes_total counter\n");
	const struct { const char *name; uint64_t v; } outcomes[] = {
		{ "paid", s.paid }, { "declined", s.declined }, { "invalid", s.invalid }, { "unavailable", s.unavailable } };
	for (size_t i = 0; i < sizeof outcomes / sizeof outcomes[0]; i++)
		n = put(b, n, "flashsale_payment_outcomes_total{outcome=\"%s\"} %llu\n", outcomes[i].name,
		        (unsigned long long)outcomes[i].v);
	n = put_scalar(b, n, "flashsale_payment_breaker_opened_total", "counter", s.breaker_opened);
	n = put_scalar(b, n, "flashsale_payment_kept_pending_total", "counter", s.kept_pending);
	n = put_scalar(b, n, "flashsale_payment_in_flight", "gauge", s.in_flight);
	n = put_scalar(b, n, "flashsale_payment_breaker_state", "gauge", s.breaker);
	return n;
}

static size_t metrics_replication(struct ctl_admin *a, char *b, size_t n)
{
	if (a->cfg.repl == NULL)
		return n;
	struct rp_stats st;
	a->cfg.repl_stats(a->cfg.repl, &st);
	n = put(b, n, "# TYPE flashsale_replication_role gauge\n");
	for (uint32_t r = 0; r < 3; r++)
		n = put(b, n, "flashsale_replication_role{role=\"%s\"} %d\n", role_name(r), st.role == r);
	n = put_scalar(b, n, "flashsale_replication_epoch", "gauge", st.epoch);
	n = put_scalar(b, n, "flashsale_replication_fenced", "gauge", st.role == RP_ROLE_FENCED);
	n = put_scalar(b, n, "flashsale_replication_applied_seq", "gauge", st.applied_seq);
	n = put_scalar(b, n, "flashsale_replication_lag_records", "gauge", st.lag_records);
	n = put_scalar(b, n, "flashsale_replication_lag_ms", "gauge", st.lag_ms);
	n = put_scalar(b, n, "flashsale_replication_shipped_total", "counter", st.shipped);
	n = put_scalar(b, n, "flashsale_replication_skipped_total", "counter", st.skipped);
	n = put_scalar(b, n, "flashsale_replication_fence_checks_total", "counter", st.fence_checks);
	n = put_scalar(b, n, "flashsale_replication_produce_retries_total", "counter", st.produce_retries);
	return n;
}

static int metrics(struct ctl_admin *a)
{
	put_overflow = 0;
	size_t n = metrics_writer(a, a->body, 0);
	n = metrics_replication(a, a->body, n);
	n = metrics_dataplane(a, a->body, n);
	n = metrics_payments(a, a->body, n);
	n = metrics_skus(a, a->body, n);
	if (put_overflow) {
		char why[96];
		snprintf(why, sizeof why, "metrics body over %zu bytes", (size_t)ADMIN_BODY_BYTES);
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 500, "internal", why, 0);
	}
	return respond(a, 200, "text/plain; version=0.0.4", a->body, n);
}

static int route_sale(struct ctl_admin *a, const struct dp_request *r, const char *req, size_t len)
{
	struct fs_cmd cmd;
	memset(&cmd, 0, sizeof cmd);
	const char *p = r->path.p + strlen("/admin/sales/");
	size_t plen = r->path.len - strlen("/admin/sales/");
	const char *slash = memchr(p, '/', plen);
	size_t sku_len = slash ? (size_t)(slash - p) : plen;
	if (sku_len == 0 || sku_len > FS_SKU_LEN_MAX)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "SKU must be 1..32 bytes", 0);
	for (size_t i = 0; i < sku_len; i++)
		if (!((p[i] >= 'a' && p[i] <= 'z') || (p[i] >= 'A' && p[i] <= 'Z') || (p[i] >= '0' && p[i] <= '9') ||
		      p[i] == '-' || p[i] == '_' || p[i] == '.'))
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "SKU may use A-Z a-z 0-9 . _ -", 0);
	memcpy(cmd.sku, p, sku_len);
	cmd.sku_len = (uint8_t)sku_len;
	int owner = sku_elsewhere(a, &cmd);
	if (owner >= 0)
		return respond_misdirected(a, &cmd, (uint32_t)owner);
	if (slash == NULL) {
		if (r->method == DP_M_GET)
			return sale_status(a, &cmd);
		if (r->method == DP_M_POST)
			return sale_create(a, req, len, &cmd);
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 405, "method_not_allowed", NULL, 0);
	}
	if (r->method != DP_M_POST)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 405, "method_not_allowed", NULL, 0);
	const char *verb = slash + 1;
	size_t vlen = plen - sku_len - 1;
	static const struct { const char *name; uint8_t type; } verbs[] = {
		{ "open", FS_CMD_SALE_OPEN }, { "pause", FS_CMD_SALE_PAUSE }, { "freeze", FS_CMD_SALE_FREEZE },
		{ "resume", FS_CMD_SALE_RESUME }, { "close", FS_CMD_SALE_CLOSE }, { "stock", FS_CMD_STOCK_ADD },
		{ "archive", FS_CMD_SALE_ARCHIVE } };
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++) {
		if (strlen(verbs[i].name) != vlen || memcmp(verbs[i].name, verb, vlen) != 0)
			continue;
		cmd.type = verbs[i].type;
		if (cmd.type == FS_CMD_STOCK_ADD) {
			uint64_t add, remove;
			if (query_u64(req, len, "add", 0, &add) || query_u64(req, len, "remove", 0, &remove) ||
			    (add == 0) == (remove == 0) || add > UINT32_MAX || remove > UINT32_MAX)
				return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request",
				                     "add=N or remove=N (1..4294967295) required", 0);
			cmd.quantity = (uint32_t)(add ? add : remove);
			if (remove) {   /* journaled with who asked */
				cmd.type = FS_CMD_STOCK_REMOVE;
				cmd.user_len = (uint8_t)strlen(a->ident);
				memcpy(cmd.user, a->ident, cmd.user_len);
			}
		}
		return call_writer(a, &cmd);
	}
	return dp_resp_error(a->out, ADMIN_OUT_BYTES, 404, "not_found", NULL, 0);
}

/* POST /admin/orders/{id}/refund[?restock=1]: PAID -> REFUNDED through the
 * provider (writer/alloc.c decide_refund). Waits up to ADMIN_REFUND_MS for
 * the provider's outcome; past that the refund goes on (202 REFUNDING) and
 * the same call later reads its outcome. */
#define ADMIN_REFUND_MS 10000
static int route_order(struct ctl_admin *a, const struct dp_request *r, const char *req, size_t len)
{
	const char *p = r->path.p + strlen("/admin/orders/");
	size_t plen = r->path.len - strlen("/admin/orders/");
	if (r->method != DP_M_POST)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 405, "method_not_allowed", NULL, 0);
	if (plen != FS_PUBID_LEN + 7 || memcmp(p + FS_PUBID_LEN, "/refund", 7) != 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 404, "not_found", NULL, 0);
	uint64_t restock;
	struct fs_cmd cmd;
	memset(&cmd, 0, sizeof cmd);
	cmd.type = FS_CMD_REFUND;
	struct dp_id_owner owner;
	cmd.ref = dp_id_parse(p, FS_PUBID_LEN, 'o', &owner);
	if (cmd.ref != 0 && (owner.appliance != a->cfg.appliance || owner.writer >= a->cfg.writer_count))
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 404, "not_found", "no order of this appliance has this id", 0);
	if (cmd.ref == 0 || query_u64(req, len, "restock", 0, &restock) != 0 || restock > 1)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "an order id o<16 hex> and restock=0|1", 0);
	cmd.quantity = (uint32_t)restock;
	stamp_ident(a, &cmd);
	fprintf(stderr, "admin: refund %.*s%s asked by %s\n", FS_PUBID_LEN, p, restock ? " (restock)" : "", a->ident);
	struct fs_ans ans;
	int rc = ctl_admin_call(a->cfg.ports[owner.writer], &cmd, &ans, ADMIN_REFUND_MS);   /* the order's shard */
	if (rc == -2)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 503, "overloaded", "the writer's admin ring is full", 0);
	if (rc != 0) {
		char body[128];
		int n = snprintf(body, sizeof body, "{\"order_id\":\"%.*s\",\"status\":\"REFUNDING\"}", FS_PUBID_LEN, p);
		return respond(a, 202, "application/json", body, (size_t)n);
	}
	return respond_ans(a, &ans, owner.writer);
}

/* POST /admin/ip?cidr=C&action=deny|allow|remove, GET /admin/ip */
static int route_ip(struct ctl_admin *a, const struct dp_request *r, const char *req, size_t len)
{
	if (r->method == DP_M_GET) {
		size_t n = 0;
		n += (size_t)snprintf(a->body + n, ADMIN_BODY_BYTES - n, "{\"rules\":[");
		uint32_t count = atomic_load(&a->cfg.snap->ip_count);
		for (uint32_t i = 0; i < count && i < FS_IP_RULES_MAX; i++) {
			struct fs_cidr c = { atomic_load(&a->cfg.snap->ip_net[i]), atomic_load(&a->cfg.snap->ip_mask[i]) };
			char txt[32];
			fs_cidr_format(&c, txt, sizeof txt);
			n += (size_t)snprintf(a->body + n, ADMIN_BODY_BYTES - n, "%s{\"cidr\":\"%s\",\"action\":\"%s\"}",
			                      i ? "," : "", txt, atomic_load(&a->cfg.snap->ip_action[i]) == 2 ? "allow" : "deny");
		}
		n += (size_t)snprintf(a->body + n, ADMIN_BODY_BYTES - n, "]}");
		return respond(a, 200, "application/json", a->body, n);
	}
	char cidr[40], action[16];
	struct fs_cidr parsed;
	if (query_get(req, len, "cidr", cidr, sizeof cidr) != 0 || fs_cidr_parse(cidr, strlen(cidr), &parsed) != 0 ||
	    query_get(req, len, "action", action, sizeof action) != 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "cidr=A.B.C.D[/N] and action=deny|allow|remove", 0);
	struct fs_cmd cmd;
	memset(&cmd, 0, sizeof cmd);
	cmd.type = FS_CMD_IP_RULE;
	cmd.quantity = strcmp(action, "deny") == 0 ? 1 : strcmp(action, "allow") == 0 ? 2 :
	               strcmp(action, "remove") == 0 ? 0 : 99;
	if (cmd.quantity == 99)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "action=deny|allow|remove", 0);
	cmd.text_len = (uint8_t)strlen(cidr);
	memcpy(cmd.text, cidr, cmd.text_len);
	return call_writer(a, &cmd);
}

/* POST /admin/tiers?user=U&tier=0..4|clear */
static int route_tier(struct ctl_admin *a, const char *req, size_t len)
{
	char user[FS_ID_LEN_MAX + 1], tier[8];
	if (query_get(req, len, "user", user, sizeof user) != 0 || user[0] == 0 ||
	    query_get(req, len, "tier", tier, sizeof tier) != 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "user=U (1..64 bytes) and tier=0..4|clear", 0);
	struct fs_cmd cmd;
	memset(&cmd, 0, sizeof cmd);
	cmd.type = FS_CMD_USER_TIER;
	if (strcmp(tier, "clear") == 0)
		cmd.quantity = 255;
	else if (tier[0] >= '0' && tier[0] <= '4' && tier[1] == 0)
		cmd.quantity = (uint32_t)(tier[0] - '0');
	else
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "tier=0..4|clear", 0);
	cmd.user_len = (uint8_t)strlen(user);
	memcpy(cmd.user, user, cmd.user_len);
	return call_writer(a, &cmd);
}

#ifdef FS_FAULTS
/* POST /admin/fault?writer_stall_ms=N | ?skew_sku=S | ?dp_sq_full=N (debug build only; fs_fault.h) */
static int route_fault(struct ctl_admin *a, const char *req, size_t len)
{
	uint64_t ms;
	char sku[FS_SKU_LEN_MAX + 1];
	if (query_get(req, len, "skew_sku", sku, sizeof sku) == 0 && sku[0]) {
		memcpy(fs_fault_skew_sku, sku, strlen(sku));
		atomic_store(&fs_fault_skew_len, (uint32_t)strlen(sku));
	} else if (query_u64(req, len, "writer_stall_ms", 0, &ms) == 0 && ms > 0 && ms <= 60000) {
		atomic_store(&fs_fault_writer_stall_ms, (uint32_t)ms);
	} else if (query_u64(req, len, "dp_sq_full", 0, &ms) == 0 && ms > 0 && ms <= 1000000) {
		atomic_store(&fs_fault_dp_sq_full, (uint32_t)ms);
	} else {
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request",
		                     "writer_stall_ms=1..60000, skew_sku=S or dp_sq_full=1..1000000", 0);
	}
	fprintf(stderr, "admin: TEST FAULT armed (debug build)\n");
	return respond(a, 200, "application/json", "{\"ok\":true}", 11);
}
#endif
/* POST /admin/snapshot: a snapshot now, of every writer shard; answers
 * shard 0's journal sequence as "seq" (and each shard's under "shards"). */
static int route_snapshot(struct ctl_admin *a)
{
	char err[256], body[1024];
	int len = 0;
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		int64_t seq = wr_snapshot_now(a->cfg.writers[k], 600000, err, sizeof err);
		if (seq < 0)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 500, "snapshot_failed", err, 0);
		if (k == 0)
			len = snprintf(body, sizeof body, "{\"seq\":%lld", (long long)seq);
		if (a->cfg.writer_count > 1)
			len += snprintf(body + len, sizeof body - (size_t)len, "%s{\"writer\":%u,\"seq\":%lld}",
			                k ? "," : ",\"shards\":[", k, (long long)seq);
	}
	len += snprintf(body + len, sizeof body - (size_t)len, a->cfg.writer_count > 1 ? "]}" : "}");
	return respond(a, 200, "application/json", body, (size_t)len);
}

/* Writer shards: DIR/writers and DIR's secrets, then each shard into
 * DIR/shard-K (ctl_backup each: a snapshot per shard, taken one after the
 * other; each shard's copy is consistent on its own, as its SKUs are). */
static int backup_shards(struct ctl_admin *a, const char *dir, char *body, size_t cap, char *err, size_t err_len)
{
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "backup: mkdir %.900s: %s", dir, strerror(errno));
		return -1;
	}
	if (ctl_writers_layout(dir, a->cfg.writer_count, err, err_len) != 0)
		return -1;
	size_t n = (size_t)snprintf(body, cap, "{\"shards\":[");
	for (uint32_t k = 0; k < a->cfg.writer_count; k++) {
		char sub[1100];
		uint64_t seq = 0, last = 0;
		ctl_writer_dir(sub, sizeof sub, dir, a->cfg.writer_count, k);
		if (rmdir(sub) != 0 ||   /* ctl_writers_layout made it; ctl_backup wants a new or empty one */
		    ctl_backup(a->cfg.writers[k], a->cfg.shard_dirs[k], sub, &seq, &last, err, err_len) != 0)
			return -1;
		n += (size_t)snprintf(body + n, cap - n, "%s{\"writer\":%u,\"snapshot_seq\":%llu,\"last_seq\":%llu}",
		                      k ? "," : "", k, (unsigned long long)seq, (unsigned long long)last);
	}
	snprintf(body + n, cap - n, "]}");
	return ctl_backup_secrets(a->cfg.data_dir, dir, err, err_len);
}

/* POST /admin/backup?dir=DIR: a consistent, verified copy (ctl_backup). */
static int route_backup(struct ctl_admin *a, const char *req, size_t len)
{
	char dir[1024], err[1024], body[2048];
	if (query_get(req, len, "dir", dir, sizeof dir) != 0 || dir[0] == 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 400, "bad_request", "dir= is required", 0);
	uint64_t seq = 0, last = 0;
	if (a->cfg.writer_count > 1) {
		if (backup_shards(a, dir, body, sizeof body, err, sizeof err) != 0)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 500, "backup_failed", err, 0);
		return respond(a, 200, "application/json", body, strlen(body));
	}
	if (ctl_backup(a->cfg.writer, a->cfg.data_dir, dir, &seq, &last, err, sizeof err) != 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, 500, "backup_failed", err, 0);
	int n = snprintf(body, sizeof body, "{\"snapshot_seq\":%llu,\"last_seq\":%llu}",
	                 (unsigned long long)seq, (unsigned long long)last);
	return respond(a, 200, "application/json", body, (size_t)n);
}

static int handle(struct ctl_admin *a, const char *req, size_t len, int over_tcp)
{
	static const struct dp_http_limits lim = { 2048, 32, ADMIN_REQ_BYTES, 1024 };
	struct dp_request r;
	int rc = dp_http_parse(req, len, &lim, &r);
	if (rc <= 0)
		return dp_resp_error(a->out, ADMIN_OUT_BYTES, rc < 0 ? -rc : 400, "bad_request", "malformed request", 0);
	if (over_tcp) {
		size_t tl = strlen(a->cfg.admin_token);
		struct dp_slice h = r.authorization;
		if (h.len != tl + 7 || strncasecmp(h.p, "Bearer ", 7) != 0 || CRYPTO_memcmp(h.p + 7, a->cfg.admin_token, tl) != 0)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 401, "unauthorized", "admin token required", 0);
	}
	if (r.path.len == 8 && memcmp(r.path.p, "/metrics", 8) == 0)
		return metrics(a);
	if (r.method == DP_M_POST)   /* the verbs that are not journaled leave this line (who and what) */
		fprintf(stderr, "admin: POST %.*s by %s\n", (int)(r.path.len < 200 ? r.path.len : 200), r.path.p, a->ident);
	if (r.path.len == 12 && memcmp(r.path.p, "/admin/drain", 12) == 0 && r.method == DP_M_POST) {
		atomic_store(a->cfg.ready, 0);
		return respond(a, 200, "application/json", "{\"ok\":true}", 11);
	}
	if (r.path.len == 15 && memcmp(r.path.p, "/admin/snapshot", 15) == 0 && r.method == DP_M_POST)
		return route_snapshot(a);
	if (r.path.len == 13 && memcmp(r.path.p, "/admin/backup", 13) == 0 && r.method == DP_M_POST)
		return route_backup(a, req, len);
	if (r.path.len == 14 && memcmp(r.path.p, "/admin/promote", 14) == 0 && r.method == DP_M_POST)
		return promote(a);
	if (r.path.len == 18 && memcmp(r.path.p, "/admin/replication", 18) == 0) {
		if (a->cfg.repl == NULL)
			return dp_resp_error(a->out, ADMIN_OUT_BYTES, 404, "not_found", "not replicated", 0);
		int n = repl_json(a, a->body, ADMIN_BODY_BYTES);
		return respond(a, 200, "application/json", a->body, (size_t)n);
	}
	if (r.path.len > 13 && memcmp(r.path.p, "/admin/sales/", 13) == 0)
		return route_sale(a, &r, req, len);
	if (r.path.len > 14 && memcmp(r.path.p, "/admin/orders/", 14) == 0)
		return route_order(a, &r, req, len);
	if (r.path.len == 9 && memcmp(r.path.p, "/admin/ip", 9) == 0)
		return route_ip(a, &r, req, len);
	if (r.path.len == 12 && memcmp(r.path.p, "/admin/tiers", 12) == 0 && r.method == DP_M_POST)
		return route_tier(a, req, len);
#ifdef FS_FAULTS
	if (r.path.len == 12 && memcmp(r.path.p, "/admin/fault", 12) == 0 && r.method == DP_M_POST)
		return route_fault(a, req, len);
#endif
	return dp_resp_error(a->out, ADMIN_OUT_BYTES, 404, "not_found", NULL, 0);
}

/* ---- connections ------------------------------------------------------------
 *
 * One thread serves up to ADMIN_CONNS_MAX connections at once from a poll
 * loop, so a client that trickles its request (slowloris) holds one slot,
 * not the admin surface: every request must arrive whole within
 * ADMIN_REQUEST_MS of its accept, and on the TCP port the admin token is
 * checked as soon as the Authorization line arrives (a wrong one, or a
 * header section that ends without one, is answered 401 and closed at
 * once). When every slot is taken, a new connection evicts the oldest one
 * that has not shown the token (Unix socket connections count as
 * authorized: the socket is 0600). Answers are sent with a deadline too.
 * Out of descriptors (EMFILE), the thread gives up a descriptor it holds in
 * reserve to accept the operator anyway, and otherwise pauses accepting
 * for ADMIN_ACCEPT_BACKOFF_MS instead of spinning on a readable listener. */

#define ADMIN_CONNS_MAX   16
#define ADMIN_REQUEST_MS  5000
#define ADMIN_SEND_MS     5000
#define ADMIN_ACCEPT_BACKOFF_MS 100

struct admin_conn {
	int fd;                     /* -1: free */
	int over_tcp;
	int authorized;
	int64_t accepted_ms;        /* monotonic */
	size_t len;
	char req[ADMIN_REQ_BYTES + 1024];
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The token check on the bytes so far: 1 authorized, -1 refused (a wrong
 * token, or the headers ended without one), 0 not decided yet. */
static int auth_state(const struct ctl_admin *a, const char *req, size_t len)
{
	size_t tl = strlen(a->cfg.admin_token);
	for (size_t i = 0; i + 2 <= len; i++) {
		if (req[i] != '\r' || req[i + 1] != '\n')
			continue;
		const char *line = req + i + 2;
		size_t rest = len - i - 2;
		if (rest >= 2 && line[0] == '\r' && line[1] == '\n')
			return -1;                       /* end of headers, no token */
		if (rest < 14 || strncasecmp(line, "authorization:", 14) != 0)
			continue;
		const char *eol = memchr(line, '\n', rest);
		if (eol == NULL)
			return 0;                        /* the line is still arriving */
		const char *v = line + 14;
		while (v < eol && (*v == ' ' || *v == '\t'))
			v++;
		const char *e = eol;
		while (e > v && (e[-1] == '\r' || e[-1] == ' ' || e[-1] == '\t'))
			e--;
		size_t vl = (size_t)(e - v);
		return vl == tl + 7 && strncasecmp(v, "Bearer ", 7) == 0 &&
		       CRYPTO_memcmp(v + 7, a->cfg.admin_token, tl) == 0 ? 1 : -1;
	}
	return 0;
}

/* Sends n bytes of a->out within ADMIN_SEND_MS, then closes the connection. */
static void send_and_close(struct ctl_admin *a, struct admin_conn *c, int n)
{
	int64_t deadline = mono_ms() + ADMIN_SEND_MS;
	for (int off = 0; n > 0 && off < n;) {
		ssize_t w = send(c->fd, a->out + off, (size_t)(n - off), MSG_NOSIGNAL | MSG_DONTWAIT);
		if (w > 0) {
			off += (int)w;
			continue;
		}
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
			break;
		int64_t left = deadline - mono_ms();
		struct pollfd p = { .fd = c->fd, .events = POLLOUT };
		if (left <= 0 || poll(&p, 1, (int)left) <= 0)
			break;
	}
	close(c->fd);
	c->fd = -1;
}

static void conn_refuse(struct ctl_admin *a, struct admin_conn *c, int http, const char *err, const char *detail)
{
	int n = dp_resp_error(a->out, ADMIN_OUT_BYTES, http, err, detail, 0);
	send_and_close(a, c, n);
}

/* Reads what arrived; answers once the request is whole (or broken). */
static void conn_read(struct ctl_admin *a, struct admin_conn *c)
{
	static const struct dp_http_limits lim = { 2048, 32, ADMIN_REQ_BYTES, 1024 };
	ssize_t r = recv(c->fd, c->req + c->len, sizeof c->req - c->len, MSG_DONTWAIT);
	if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
		return;
	if (r <= 0) {
		close(c->fd);
		c->fd = -1;
		return;
	}
	c->len += (size_t)r;
	if (!c->authorized) {
		int st = auth_state(a, c->req, c->len);
		if (st < 0)
			{ conn_refuse(a, c, 401, "unauthorized", "admin token required"); return; }
		c->authorized = st > 0;
	}
	struct dp_request dr;
	int rc = dp_http_parse(c->req, c->len, &lim, &dr);
	if (rc == 0 && c->len < sizeof c->req)
		return;
	if (!c->authorized)   /* a whole request always reaches the end of its headers */
		{ conn_refuse(a, c, 401, "unauthorized", "admin token required"); return; }
	if (c->over_tcp) {   /* who asked, journaled with every admin command */
		snprintf(a->ident, sizeof a->ident, "token:%.25s", a->cfg.admin_token_name ? a->cfg.admin_token_name : "admin");
	} else {
		struct ucred cred;
		socklen_t cl = sizeof cred;
		if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &cl) == 0)
			snprintf(a->ident, sizeof a->ident, "uid:%u", (unsigned)cred.uid);
		else
			snprintf(a->ident, sizeof a->ident, "uid:unknown");
	}
	int n = handle(a, c->req, c->len, c->over_tcp);
	send_and_close(a, c, n);
}

/* A free slot for a new connection: a free one, else the oldest one that
 * has not shown the token (closed), else NULL. */
static struct admin_conn *conn_slot(struct admin_conn *conns)
{
	struct admin_conn *oldest = NULL;
	for (int i = 0; i < ADMIN_CONNS_MAX; i++) {
		if (conns[i].fd < 0)
			return &conns[i];
		if (!conns[i].authorized && (oldest == NULL || conns[i].accepted_ms < oldest->accepted_ms))
			oldest = &conns[i];
	}
	if (oldest != NULL) {
		close(oldest->fd);
		oldest->fd = -1;
	}
	return oldest;
}

static void *admin_main(void *arg)
{
	struct ctl_admin *a = arg;
	struct admin_conn *conns = calloc(ADMIN_CONNS_MAX, sizeof *conns);
	assert(conns != NULL);
	for (int i = 0; i < ADMIN_CONNS_MAX; i++)
		conns[i].fd = -1;
	int64_t accept_resume_ms = 0;
	for (;;) {
		struct pollfd p[3 + ADMIN_CONNS_MAX];
		int idx[ADMIN_CONNS_MAX];
		int64_t now = mono_ms(), wait = -1;
		int accepting = now >= accept_resume_ms;
		if (!accepting)
			wait = accept_resume_ms - now;
		if (a->spare_fd < 0)
			a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		p[0] = (struct pollfd){ .fd = a->stop_fd, .events = POLLIN };
		p[1] = (struct pollfd){ .fd = accepting ? a->unix_fd : -1, .events = POLLIN };
		p[2] = (struct pollfd){ .fd = accepting ? a->tcp_fd : -1, .events = POLLIN };
		int np = 3;
		for (int i = 0; i < ADMIN_CONNS_MAX; i++) {
			if (conns[i].fd < 0)
				continue;
			int64_t left = conns[i].accepted_ms + ADMIN_REQUEST_MS - now;
			if (left <= 0) {   /* the whole request did not arrive in time */
				conn_refuse(a, &conns[i], 408, "request_timeout", NULL);
				continue;
			}
			wait = wait < 0 || left < wait ? left : wait;
			idx[np - 3] = i;
			p[np++] = (struct pollfd){ .fd = conns[i].fd, .events = POLLIN };
		}
		if (poll(p, (nfds_t)np, (int)wait) < 0 && errno != EINTR)
			break;
		if (p[0].revents)
			break;
		for (int k = 3; k < np; k++)
			if (p[k].revents)
				conn_read(a, &conns[idx[k - 3]]);
		for (int i = 1; i < 3; i++) {
			if (!(p[i].revents & POLLIN))
				continue;
			int fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			if (fd < 0 && (errno == EMFILE || errno == ENFILE) && a->spare_fd >= 0) {
				close(a->spare_fd);   /* the reserve: re-taken at the next round */
				a->spare_fd = -1;
				fd = accept4(p[i].fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
			}
			if (fd < 0) {
				if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
					accept_resume_ms = mono_ms() + ADMIN_ACCEPT_BACKOFF_MS;
				continue;
			}
			struct admin_conn *c = conn_slot(conns);
			if (c == NULL) {   /* every slot holds an authorized request in progress */
				close(fd);
				continue;
			}
			c->fd = fd;
			c->over_tcp = i == 2;
			c->authorized = i == 1;
			c->accepted_ms = mono_ms();
			c->len = 0;
		}
	}
	for (int i = 0; i < ADMIN_CONNS_MAX; i++)
		if (conns[i].fd >= 0)
			close(conns[i].fd);
	free(conns);
	return NULL;
}

static int unix_listen(const char *path, char *err, size_t err_len)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	if (strlen(path) >= sizeof sa.sun_path) {
		snprintf(err, err_len, "--admin unix:%s: path too long", path);
		return -1;
	}
	strcpy(sa.sun_path, path);
	unlink(path);   /* a leftover socket (or a symlink: unlink never follows one) */
	errno = 0;
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	mode_t old = umask(0177);
	int rc = fd >= 0 ? bind(fd, (struct sockaddr *)&sa, sizeof sa) : -1;
	umask(old);
	/* The umask made the socket 0600 as bind created it. No chmod by path
	 * afterwards: it would follow a symlink swapped in meanwhile; check the
	 * entry itself (lstat) instead. */
	struct stat st;
	if (rc != 0 || listen(fd, 64) != 0 || lstat(path, &st) != 0 || !S_ISSOCK(st.st_mode) ||
	    (st.st_mode & 0077) != 0) {
		snprintf(err, err_len, "cannot listen on unix:%s: %s", path,
		         rc != 0 || errno != 0 ? strerror(errno) : "not a private socket after bind");
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int tcp_listen(const char *host, uint16_t port, char *err, size_t err_len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    listen(fd, 64) != 0) {
		snprintf(err, err_len, "cannot listen on admin %s:%u: %s", host, port, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

struct ctl_admin *ctl_admin_start(const struct ctl_admin_config *cfg, char *err, size_t err_len)
{
	struct ctl_admin *a = calloc(1, sizeof *a);
	assert(a != NULL);
	a->cfg = *cfg;
	if (a->cfg.writer_count == 0) {   /* one writer: the singular fields */
		a->cfg.writer_count = 1;
		a->cfg.writers[0] = cfg->writer;
		a->cfg.ports[0] = cfg->port;
		a->cfg.snaps[0] = cfg->snap;
		a->cfg.payments_of[0] = cfg->payments;
		a->cfg.shard_dirs[0] = cfg->data_dir;
	}
	assert(a->cfg.writer_count <= FS_SHARD_WRITERS_MAX);
	assert(a->cfg.writers[0] == cfg->writer && a->cfg.ports[0] == cfg->port && a->cfg.snaps[0] == cfg->snap);
	a->unix_fd = a->tcp_fd = -1;
	a->out = malloc(ADMIN_OUT_BYTES);
	a->body = malloc(ADMIN_BODY_BYTES);
	a->stop_fd = eventfd(0, EFD_CLOEXEC);
	a->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	if (cfg->unix_path && (a->unix_fd = unix_listen(cfg->unix_path, err, err_len)) < 0)
		goto fail;
	if (cfg->tcp_host && (a->tcp_fd = tcp_listen(cfg->tcp_host, cfg->tcp_port, err, err_len)) < 0)
		goto fail;
	if (pthread_create(&a->thread, NULL, admin_main, a) != 0) {
		snprintf(err, err_len, "cannot start the admin thread");
		goto fail;
	}
	pthread_setname_np(a->thread, "fs-admin");
	return a;
fail:
	if (a->unix_fd >= 0)
		close(a->unix_fd);
	free(a->out);
	free(a->body);
	free(a);
	return NULL;
}

void ctl_admin_stop(struct ctl_admin *a)
{
	if (a == NULL)
		return;
	uint64_t one = 1;
	ssize_t r = write(a->stop_fd, &one, sizeof one);
	(void)r;
	pthread_join(a->thread, NULL);
	if (a->unix_fd >= 0) {
		close(a->unix_fd);
		if (a->cfg.unix_path)
			unlink(a->cfg.unix_path);
	}
	if (a->tcp_fd >= 0)
		close(a->tcp_fd);
	if (a->spare_fd >= 0)
		close(a->spare_fd);
	free(a->out);
	free(a->body);
	free(a);
}
