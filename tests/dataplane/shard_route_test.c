/* shard_route_test.c - writer shards on the dataplane side: public ids
 * (dataplane/pubid.h) round-trip and refuse ids of other shards or
 * appliances, and dp_route sends each request to the right writer shard:
 * SKU routes by the map or the hash, id routes by the shard in the id,
 * reads from that shard's snapshot. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "common/fs_jwt.h"
#include "common/fs_shard.h"
#include "common/fs_snapshot.h"
#include "dataplane/http.h"
#include "dataplane/pubid.h"
#include "dataplane/route.h"

static void test_pubid_round_trip(void **state)
{
	(void)state;
	struct dp_id_owner owner;
	char id[FS_PUBID_LEN + 1];
	/* one writer, one appliance: the number is the id (ids from before shards) */
	assert_int_equal(dp_id_public((struct dp_id_owner){ 0, 0 }, 42), 42);
	fs_pubid_format(id, 'r', 42);
	assert_int_equal(dp_id_parse(id, FS_PUBID_LEN, 'r', &owner), 42);
	assert_int_equal(owner.appliance, 0);
	assert_int_equal(owner.writer, 0);
	assert_int_equal(dp_id_public((struct dp_id_owner){ 0, 3 }, 0), 0);   /* "no id" stays 0 */
	for (uint32_t a = 0; a < 4; a++)
		for (uint32_t k = 0; k < FS_SHARD_WRITERS_MAX; k++) {
			uint64_t no = (UINT64_C(1) << 47) + k * 7919u + 1;
			uint64_t pub = dp_id_public((struct dp_id_owner){ a, k }, no);
			assert_int_equal(fs_id_writer(pub), k);
			assert_int_equal(fs_id_appliance(pub), a);
			fs_pubid_format(id, 'o', pub);
			assert_int_equal(dp_id_parse(id, FS_PUBID_LEN, 'o', &owner), no);
			assert_int_equal(owner.writer, k);
			assert_int_equal(owner.appliance, a);
			assert_int_equal(dp_id_parse(id, FS_PUBID_LEN, 'r', &owner), 0);   /* wrong prefix */
		}
}

struct fixture {
	struct fs_snapshot snaps[2];
	struct fs_shard_map map;
	struct fs_jwt_key key;
	struct dp_route_ctx ctx;
	char token[512];
};

static struct fixture F;

static void setup_two_shards(void)
{
	memset(&F, 0, sizeof F);
	char err[128];
	assert_int_equal(fs_shard_parse(&F.map, "writer pinned-one 1\nwriter pinned-zero 0\n", err, sizeof err), 0);
	struct fs_sku_read v = { 10, 10, 0, 0, 2, FS_SALE_OPEN, 0, 0, 0 };
	assert_true(fs_snap_publish(&F.snaps[1], "pinned-one", 10, &v) >= 0);
	assert_true(fs_snap_publish(&F.snaps[0], "pinned-zero", 11, &v) >= 0);
	assert_int_equal(fs_jwt_key_init(&F.key, (const uint8_t *)"k", 1), 0);
	F.ctx = (struct dp_route_ctx){ .snap = &F.snaps[0], .jwt = &F.key, .now_ms = 1700000000000,
	                               .quantity_max = 10, .ready = 1, .writer_count = 2,
	                               .snaps = { &F.snaps[0], &F.snaps[1] }, .shard_map = &F.map };
	struct fs_claims c = { .sub_len = 2, .tier = -1, .exp_s = 1700000000 + 3600 };
	memcpy(c.sub, "u1", 2);
	assert_true(fs_jwt_mint((const uint8_t *)"k", 1, &c, F.token, sizeof F.token) > 0);
}

/* Routes one request; returns the result, the command in *cmd. */
static struct dp_route_result route(const char *method, const char *path, struct fs_cmd *cmd, char *out,
                                    size_t cap)
{
	char req[1024];
	int n = snprintf(req, sizeof req,
	                 "%s %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nIdempotency-Key: k1\r\n"
	                 "Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"quantity\":1}",
	                 method, path, F.token);
	struct dp_http_limits lim = { 2048, 32, 8192, 4096 };
	struct dp_request r;
	assert_true(dp_http_parse(req, (size_t)n, &lim, &r) > 0);
	struct dp_auth_cache auth;
	memset(&auth, 0, sizeof auth);
	struct dp_route_result res;
	dp_route(&F.ctx, &r, &auth, cmd, out, cap, &res);
	return res;
}

static void test_route_by_sku_and_id(void **state)
{
	(void)state;
	setup_two_shards();
	struct fs_cmd cmd;
	char out[2048];
	/* a SKU pinned to shard 1: read from shard 1's snapshot, reserve on shard 1 */
	struct dp_route_result res = route("GET", "/v1/skus/pinned-one", &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_RESPOND);
	assert_int_equal(res.http, 200);
	res = route("POST", "/v1/skus/pinned-one/reservations", &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(res.shard, 1);
	assert_int_equal(cmd.type, FS_CMD_RESERVE);
	res = route("POST", "/v1/skus/pinned-zero/reservations", &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(res.shard, 0);
	/* a SKU that lives on no shard (or in another shard's snapshot only) is unknown */
	res = route("GET", "/v1/skus/nowhere", &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	/* ids go to the shard they carry, with the shard's own number */
	res = route("GET", "/v1/reservations/r0001000000000005", &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(res.shard, 1);
	assert_int_equal(cmd.ref, 5);
	res = route("DELETE", "/v1/reservations/r0000000000000007", &cmd, out, sizeof out);
	assert_int_equal(res.shard, 0);
	assert_int_equal(cmd.ref, 7);
	res = route("GET", "/v1/orders/o0001000000000009", &cmd, out, sizeof out);
	assert_int_equal(res.shard, 1);
	assert_int_equal(cmd.ref, 9);
	/* a third shard or another appliance: 404, never another shard's reservation */
	res = route("GET", "/v1/reservations/r0002000000000005", &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	res = route("GET", "/v1/orders/o0100000000000009", &cmd, out, sizeof out);
	assert_int_equal(res.http, 404);
	/* unpinned SKUs go by the hash, the same function flashsaled uses */
	uint32_t k = fs_shard_writer_of(&F.map, "hashed", 6, 2);
	struct fs_sku_read v = { 10, 10, 0, 0, 2, FS_SALE_OPEN, 0, 0, 0 };
	assert_true(fs_snap_publish(&F.snaps[k], "hashed", 6, &v) >= 0);
	res = route("POST", "/v1/skus/hashed/reservations", &cmd, out, sizeof out);
	assert_int_equal(res.kind, DP_ROUTE_COMMAND);
	assert_int_equal(res.shard, k);
	fs_jwt_key_free(&F.key);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pubid_round_trip),
		cmocka_unit_test(test_route_by_sku_and_id),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
