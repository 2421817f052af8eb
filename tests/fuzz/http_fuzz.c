/* http_fuzz.c - libFuzzer target for the dataplane's pure request path:
 * HTTP framing (dp_http_parse) over pipelined input, the JSON body readers
 * on each complete request's body, and the error answer written for it.
 *
 * Invariants checked (a violation aborts, which libFuzzer reports):
 *  - a complete request claims no more bytes than it was given, every
 *    slice lies inside those bytes, body and path respect the limits;
 *  - every prefix of a complete request is incomplete (0), and the request
 *    alone parses to the same length;
 *  - an error is one of the statuses http.h names;
 *  - the JSON readers return in range or with a detail;
 *  - an answer fits its buffer and its Content-Length equals its body.
 *
 * To extend (e.g. routing): add the call to fuzz_request() below and the
 * source file to SRCS in run.sh.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dataplane/http.h"
#include "dataplane/route.h"
#include "common/fs_snapshot.h"
#include "dataplane/json.h"
#include "dataplane/response.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

#define PIPELINE_MAX 16

static const struct dp_http_limits fuzz_limits = {
	.request_line_max = 256,
	.header_count_max = 12,
	.header_bytes_max = 1024,
	.body_bytes_max = 256,
};

static void check_slice(struct dp_slice s, const char *base, size_t len)
{
	if (s.len == 0)
		return;
	CHECK(s.p != NULL);
	CHECK(s.p >= base && s.p + s.len <= base + len);
}

static void check_answer(const char *out, int n, size_t cap)
{
	CHECK(n > 0 && (size_t)n <= cap);
	const char *sep = memmem(out, (size_t)n, "\r\n\r\n", 4);
	CHECK(sep != NULL);
	size_t body_len = (size_t)n - (size_t)(sep + 4 - out);
	const char *cl = memmem(out, (size_t)(sep - out), "\r\nContent-Length: ", 18);
	CHECK(cl != NULL);
	size_t v = 0;
	for (const char *p = cl + 18; *p >= '0' && *p <= '9'; p++)
		v = v * 10 + (size_t)(*p - '0');
	CHECK(v == body_len);
}

static void check_status(int status)
{
	CHECK(status == -400 || status == -413 || status == -414 || status == -431 ||
	      status == -501 || status == -505);
}

static void fuzz_body(const struct dp_request *req)
{
	uint32_t quantity = 0;
	const char *detail = NULL;
	if (dp_json_reserve_body(req->body.p, req->body.len, 10, &quantity, &detail) == 0)
		CHECK(quantity >= 1 && quantity <= 10);
	else
		CHECK(detail != NULL && strlen(detail) > 0);

	char token[64];
	detail = NULL;
	int n = dp_json_checkout_body(req->body.p, req->body.len, token, &detail);
	CHECK(n == -1 || (n >= 1 && n <= 64));
	if (n == -1)
		CHECK(detail != NULL);
	else
		CHECK(memchr(token, '"', (size_t)n) == NULL &&
		      memmem(req->body.p, req->body.len, token, (size_t)n) != NULL);

	char out[1024];
	int w = dp_resp_error(out, sizeof(out), 400, "bad_request", detail, req->keep_alive);
	check_answer(out, w, sizeof(out));
	CHECK(dp_resp_error(out, 16, 400, "bad_request", detail, 1) == -1);
}

/* Routing: every request is either a whole HTTP answer or one well-formed
 * command, whatever the bytes. The snapshot holds one SKU, "demo". */
static struct fs_snapshot fuzz_snap;
static struct fs_jwt_key fuzz_key;
static struct dp_auth_cache fuzz_auth;

static void fuzz_route(const struct dp_request *req)
{
	static int ready;
	if (!ready) {
		struct fs_sku_read v = { 10, 5, 3, 2, 7, FS_SALE_OPEN, 0, 0, 0 };
		CHECK(fs_snap_publish(&fuzz_snap, "demo", 4, &v) == 0);
		CHECK(fs_jwt_key_init(&fuzz_key, (const uint8_t *)"k", 1) == 0);
		ready = 1;
	}
	struct dp_route_ctx ctx = { .snap = &fuzz_snap, .jwt = &fuzz_key, .now_ms = 1700000000000,
	                            .quantity_max = 100, .ready = 1 };
	struct fs_cmd cmd;
	struct dp_route_result res;
	char out[2048];
	dp_route(&ctx, req, &fuzz_auth, &cmd, out, sizeof out, &res);
	CHECK(res.route < DP_R_COUNT);
	if (res.route == DP_R_SKU_GET) {
		/* the worker's rendered-answer cache gives the same bytes, first
		 * and second time (and after a publish changed the SKU) */
		static struct dp_sku_cache cache;
		static uint64_t round;
		struct dp_route_ctx cached = ctx;
		cached.sku_cache = &cache;
		if (++round % 64 == 0) {
			struct fs_sku_read v = { 10, 5 - round % 4, 3 + round % 4, 2, 7 + round, FS_SALE_OPEN, 0 };
			CHECK(fs_snap_publish(&fuzz_snap, "demo", 4, &v) == 0);
			dp_route(&ctx, req, &fuzz_auth, &cmd, out, sizeof out, &res);
		}
		for (int i = 0; i < 2; i++) {
			char again[2048];
			struct dp_route_result res2;
			dp_route(&cached, req, &fuzz_auth, &cmd, again, sizeof again, &res2);
			CHECK(res2.kind == res.kind && res2.out_len == res.out_len &&
			      memcmp(again, out, res.out_len) == 0);
		}
	}
	if (res.kind == DP_ROUTE_RESPOND) {
		check_answer(out, (int)res.out_len, sizeof out);
		return;
	}
	CHECK(res.kind == DP_ROUTE_COMMAND);
	CHECK(cmd.type == FS_CMD_RESERVE || cmd.type == FS_CMD_CANCEL || cmd.type == FS_CMD_RES_GET ||
	      cmd.type == FS_CMD_CHECKOUT || cmd.type == FS_CMD_ORDER_GET);
	CHECK(cmd.user_len >= 1 && cmd.user_len <= FS_ID_LEN_MAX && cmd.key_len <= FS_ID_LEN_MAX);
	CHECK(cmd.sku_len <= FS_SKU_LEN_MAX && cmd.text_len <= FS_ID_LEN_MAX);
}

/* One complete request of n bytes at buf. */
static void fuzz_request(const char *buf, size_t n, const struct dp_request *req)
{
	check_slice(req->path, buf, n);
	check_slice(req->authorization, buf, n);
	check_slice(req->idempotency_key, buf, n);
	check_slice(req->device_id, buf, n);
	check_slice(req->forwarded_for, buf, n);
	check_slice(req->content_type, buf, n);
	check_slice(req->body, buf, n);
	CHECK(req->body.len <= fuzz_limits.body_bytes_max);
	CHECK(req->path.len <= fuzz_limits.request_line_max);
	CHECK(req->method <= DP_M_DELETE && req->keep_alive <= 1 && req->http_minor <= 1);

	/* Framing is a function of the request's own bytes. */
	struct dp_request again;
	CHECK(dp_http_parse(buf, n, &fuzz_limits, &again) == (int)n);
	CHECK(again.body.len == req->body.len && again.path.len == req->path.len);
	CHECK(dp_http_parse(buf, n - 1, &fuzz_limits, &again) == 0);

	fuzz_body(req);
	fuzz_route(req);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *buf = (const char *)data;
	size_t off = 0;
	for (int i = 0; i < PIPELINE_MAX && off < size; i++) {
		struct dp_request req;
		int n = dp_http_parse(buf + off, size - off, &fuzz_limits, &req);
		if (n == 0)
			break;
		if (n < 0) {
			check_status(n);
			char out[256];
			int w = dp_resp_error(out, sizeof(out), -n, "bad_request", NULL, 0);
			check_answer(out, w, sizeof(out));
			break;
		}
		CHECK((size_t)n <= size - off);
		fuzz_request(buf + off, (size_t)n, &req);
		off += (size_t)n;
	}
	return 0;
}
