/* route_test.c - the routes' shard rules (route.c, used by both the
 * io_uring and the DPDK backends): with a shard map, a SKU or an id of
 * another appliance is answered 421 {"error":"misdirected","shard"} on the
 * worker; an id of this appliance reaches the writer as its local number;
 * without a map, an id carrying any owner bits is not found (never taken
 * for a local number).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dataplane/route.h"

static const uint8_t key[] = "route-test-secret";
static struct fs_snapshot snap;          /* empty: this box has no sale */
static struct fs_shard_map map;
static struct fs_jwt_key jwt;
static char token[FS_JWT_LEN_MAX];

static int setup(void **state)
{
	(void)state;
	char err[256];
	const char *text = "shard east 127.0.0.1:1\nshard west 127.0.0.1:2\nsku tv-west west\nsku tv-east east\n";
	assert_int_equal(fs_shard_parse(&map, text, err, sizeof err), 0);
	assert_int_equal(fs_jwt_key_init(&jwt, key, sizeof key - 1), 0);
	struct fs_claims c = { .sub = "u1", .sub_len = 2, .tier = -1, .exp_s = time(NULL) + 3600 };
	assert_true(fs_jwt_mint(key, sizeof key - 1, &c, token, sizeof token) > 0);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	fs_jwt_key_free(&jwt);
	return 0;
}

/* Routes one request on appliance `self` of `m` (NULL: no map). */
static void route(const struct fs_shard_map *m, uint32_t self, const char *method, const char *path,
                  const char *body, struct dp_route_result *res, struct fs_cmd *cmd, char *out, size_t cap)
{
	char raw[2048];
	int n = snprintf(raw, sizeof raw, "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
	                 "Idempotency-Key: k1\r\nContent-Length: %zu\r\n\r\n%s", method, path, token, strlen(body), body);
	struct dp_http_limits lim = { 2048, 32, 8192, 4096 };
	struct dp_request req;
	assert_int_equal(dp_http_parse(raw, (size_t)n, &lim, &req), n);
	struct dp_route_ctx ctx = { .snap = &snap, .jwt = &jwt, .now_ms = (int64_t)time(NULL) * 1000,
	                            .quantity_max = 10, .ready = 1, .shards = m, .appliance = self };
	struct dp_auth_cache auth;
	memset(&auth, 0, sizeof auth);
	dp_route(&ctx, &req, &auth, cmd, out, cap, res);
	if (res->kind == DP_ROUTE_RESPOND)
		out[res->out_len] = 0;
}

static void expect_misdirected(const char *out, const struct dp_route_result *res, const char *owner)
{
	char want[96];
	snprintf(want, sizeof want, "{\"error\":\"misdirected\",\"shard\":\"%s\"}", owner);
	assert_int_equal(res->kind, DP_ROUTE_RESPOND);
	assert_int_equal(res->http, 421);
	assert_non_null(strstr(out, "HTTP/1.1 421 Misdirected Request\r\n"));
	assert_non_null(strstr(out, want));
}

static void test_sku_of_another_shard(void **state)
{
	(void)state;
	struct dp_route_result res;
	struct fs_cmd cmd;
	char out[2048];
	route(&map, 0, "GET", "/v1/skus/tv-west", "", &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "west");
	route(&map, 0, "POST", "/v1/skus/tv-west/reservations", "{\"quantity\":1}", &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "west");
	route(&map, 1, "GET", "/v1/skus/tv-east", "", &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "east");
	/* its own SKU without a sale: unknown_sku, as before shards */
	route(&map, 0, "GET", "/v1/skus/tv-east", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	assert_non_null(strstr(out, "unknown_sku"));
	/* no map: every SKU is this box's */
	route(NULL, 0, "GET", "/v1/skus/tv-west", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
}

static void test_ids_by_owner(void **state)
{
	(void)state;
	struct dp_route_result res;
	struct fs_cmd cmd;
	char out[2048];
	/* west's reservation at east: 421 naming west, for read, cancel, checkout */
	route(&map, 0, "GET", "/v1/reservations/r0100000000000007", "", &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "west");
	route(&map, 0, "DELETE", "/v1/reservations/r0100000000000007", "", &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "west");
	route(&map, 0, "POST", "/v1/reservations/r0100000000000007/checkout", "{\"payment_token\":\"tok_ok\"}",
	      &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "west");
	route(&map, 0, "GET", "/v1/orders/o0100000000000003", "", &res, &cmd, out, sizeof out);
	expect_misdirected(out, &res, "west");
	/* at west: its own, handed to the writer as the local number */
	route(&map, 1, "GET", "/v1/reservations/r0100000000000007", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(cmd.type, FS_CMD_RES_GET);
	assert_int_equal(cmd.ref, 7);
	route(&map, 1, "GET", "/v1/orders/o0100000000000003", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(cmd.ref, 3);
	/* an appliance the map does not have, a writer shard this box does not run: not found */
	route(&map, 0, "GET", "/v1/reservations/r0500000000000007", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	route(&map, 0, "GET", "/v1/reservations/r0001000000000007", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	/* no map: owner bits make an id unknown, never another local number */
	route(NULL, 0, "GET", "/v1/reservations/r0100000000000007", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	route(NULL, 0, "GET", "/v1/reservations/r0000000000000007", "", &res, &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(cmd.ref, 7);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sku_of_another_shard),
		cmocka_unit_test(test_ids_by_owner),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
