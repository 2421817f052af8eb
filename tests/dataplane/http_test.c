/* http_test.c - dp_http_parse: framing, limits, smuggling shapes, partial
 * input at every split point, pipelining.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "dataplane/http.h"

static const struct dp_http_limits lim = {
	.request_line_max = 256,
	.header_count_max = 8,
	.header_bytes_max = 512,
	.body_bytes_max = 64,
};

static int parse(const char *s, struct dp_request *req)
{
	return dp_http_parse(s, strlen(s), &lim, req);
}

static void assert_slice(struct dp_slice s, const char *want)
{
	assert_int_equal(s.len, strlen(want));
	if (s.len > 0)
		assert_memory_equal(s.p, want, s.len);
}

static void test_simple_get(void **state)
{
	(void)state;
	const char *s = "GET /v1/skus/demo?x=1 HTTP/1.1\r\nHost: a\r\n\r\n";
	struct dp_request req;
	assert_int_equal(parse(s, &req), (int)strlen(s));
	assert_int_equal(req.method, DP_M_GET);
	assert_int_equal(req.keep_alive, 1);
	assert_int_equal(req.http_minor, 1);
	assert_slice(req.path, "/v1/skus/demo");
	assert_true(req.path.p == s + 4);
	assert_int_equal(req.body.len, 0);
	assert_int_equal(req.authorization.len, 0);
}

static void test_post_with_body_and_headers(void **state)
{
	(void)state;
	const char *s =
		"POST /v1/skus/demo/reservations HTTP/1.1\r\n"
		"Host: x\r\n"
		"Authorization: Bearer abc.def.ghi  \r\n"
		"Idempotency-Key: k-1\r\n"
		"X-Device-Id: dev7\r\n"
		"X-Forwarded-For: 10.0.0.1, 10.0.0.2\r\n"
		"Content-Type: application/json\r\n"
		"Content-Length: 14\r\n"
		"\r\n"
		"{\"quantity\":2}";
	struct dp_request req;
	assert_int_equal(parse(s, &req), (int)strlen(s));
	assert_int_equal(req.method, DP_M_POST);
	assert_slice(req.path, "/v1/skus/demo/reservations");
	assert_slice(req.authorization, "Bearer abc.def.ghi");
	assert_slice(req.idempotency_key, "k-1");
	assert_slice(req.device_id, "dev7");
	assert_slice(req.forwarded_for, "10.0.0.1, 10.0.0.2");
	assert_slice(req.content_type, "application/json");
	assert_slice(req.body, "{\"quantity\":2}");
	assert_true(req.body.p == s + strlen(s) - 14);
}

static void test_methods(void **state)
{
	(void)state;
	struct dp_request req;
	assert_int_equal(parse("DELETE /v1/reservations/r1 HTTP/1.1\r\n\r\n", &req), 39);
	assert_int_equal(req.method, DP_M_DELETE);
	assert_true(parse("HEAD / HTTP/1.1\r\n\r\n", &req) > 0);
	assert_int_equal(req.method, DP_M_HEAD);
	assert_true(parse("PUT / HTTP/1.1\r\n\r\n", &req) > 0);
	assert_int_equal(req.method, DP_M_PUT);
	assert_true(parse("OPTIONS / HTTP/1.1\r\n\r\n", &req) > 0);
	assert_int_equal(req.method, DP_M_OTHER);
	assert_int_equal(parse("CONNECT a:443 HTTP/1.1\r\n\r\n", &req), -400);
}

static void test_pipelined(void **state)
{
	(void)state;
	const char *first = "POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc";
	const char *second = "GET /b HTTP/1.1\r\nConnection: close\r\n\r\n";
	char buf[512];
	snprintf(buf, sizeof(buf), "%s%s", first, second);
	struct dp_request req;
	int n = parse(buf, &req);
	assert_int_equal(n, (int)strlen(first));
	assert_slice(req.path, "/a");
	assert_slice(req.body, "abc");
	assert_int_equal(req.keep_alive, 1);
	int m = parse(buf + n, &req);
	assert_int_equal(m, (int)strlen(second));
	assert_slice(req.path, "/b");
	assert_int_equal(req.keep_alive, 0);

	/* a bodiless GET followed by a partial request */
	const char *get = "GET /c HTTP/1.1\r\n\r\n";
	snprintf(buf, sizeof(buf), "%sGET /d HT", get);
	assert_int_equal(parse(buf, &req), (int)strlen(get));
	assert_int_equal(parse(buf + strlen(get), &req), 0);
	/* garbage behind a complete request is the next call's problem */
	snprintf(buf, sizeof(buf), "%s\x01\x02garbage", get);
	assert_int_equal(parse(buf, &req), (int)strlen(get));
}

static void test_partial_at_every_split(void **state)
{
	(void)state;
	static const char *const reqs[] = {
		"POST /v1/skus/demo/reservations?q=1 HTTP/1.1\r\n"
		"Authorization: Bearer t\r\nIdempotency-Key: abc\r\n"
		"Content-Length: 14\r\n\r\n{\"quantity\":1}",
		"GET / HTTP/1.0\r\n\r\n",
		"\r\nGET /x HTTP/1.1\r\nX-Empty:\r\nHost: h\r\n\r\n",
		"GET /x HTTP/1.1\nHost: h\n\n",
	};
	for (size_t r = 0; r < sizeof(reqs) / sizeof(reqs[0]); r++) {
		const char *s = reqs[r];
		size_t len = strlen(s);
		struct dp_request req;
		for (size_t i = 0; i < len; i++)
			assert_int_equal(dp_http_parse(s, i, &lim, &req), 0);
		assert_int_equal(dp_http_parse(s, len, &lim, &req), (int)len);
	}
}

static void test_request_line_limit(void **state)
{
	(void)state;
	char buf[1024];
	struct dp_request req;
	/* "GET " + path + " HTTP/1.1" = exactly request_line_max bytes passes */
	size_t path_len = lim.request_line_max - 4 - 9;
	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', path_len - 1);
	sprintf(buf + 4 + path_len, " HTTP/1.1\r\n\r\n");
	assert_int_equal(parse(buf, &req), (int)strlen(buf));
	assert_int_equal(req.path.len, path_len);
	/* one byte more does not */
	memcpy(buf, "GET /", 5);
	memset(buf + 5, 'a', path_len);
	sprintf(buf + 5 + path_len, " HTTP/1.1\r\n\r\n");
	assert_int_equal(parse(buf, &req), -414);
	/* and is refused before its end arrives */
	memset(buf + 5, 'a', 400);
	assert_int_equal(dp_http_parse(buf, lim.request_line_max + 1, &lim, &req), 0);
	assert_int_equal(dp_http_parse(buf, lim.request_line_max + 2, &lim, &req), -414);
	/* endless blank lines count too */
	memset(buf, '\n', 400);
	assert_int_equal(dp_http_parse(buf, 400, &lim, &req), -414);
}

static void test_header_count_limit(void **state)
{
	(void)state;
	char buf[1024];
	struct dp_request req;
	size_t n = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
	for (uint32_t i = 0; i < lim.header_count_max; i++)
		n += (size_t)sprintf(buf + n, "X-H%u: v\r\n", i);
	sprintf(buf + n, "\r\n");
	assert_int_equal(parse(buf, &req), (int)strlen(buf));
	/* one more header, request still incomplete: refused already */
	sprintf(buf + n, "X-Extra: v\r\n");
	assert_int_equal(parse(buf, &req), -431);
}

static void test_header_bytes_limit(void **state)
{
	(void)state;
	char buf[2048];
	struct dp_request req;
	/* header section (after the request line, blank line included) of exactly
	 * header_bytes_max bytes passes */
	const char *line = "GET / HTTP/1.1\r\n";
	size_t value_len = lim.header_bytes_max - strlen("X-Big: \r\n\r\n");
	int n = sprintf(buf, "%sX-Big: ", line);
	memset(buf + n, 'v', value_len);
	sprintf(buf + n + value_len, "\r\n\r\n");
	assert_int_equal(parse(buf, &req), (int)strlen(buf));
	memset(buf + n, 'v', value_len + 1);
	sprintf(buf + n + value_len + 1, "\r\n\r\n");
	assert_int_equal(parse(buf, &req), -431);
	/* an endless value is refused before it ends */
	memset(buf + n, 'v', 1000);
	assert_int_equal(dp_http_parse(buf, (size_t)n + 600, &lim, &req), -431);
	/* an endless header name too */
	n = sprintf(buf, "%s", line);
	memset(buf + n, 'N', 1000);
	assert_int_equal(dp_http_parse(buf, (size_t)n + 600, &lim, &req), -431);
}

static void test_body_limit(void **state)
{
	(void)state;
	char buf[512];
	struct dp_request req;
	sprintf(buf, "POST / HTTP/1.1\r\nContent-Length: %u\r\n\r\n", lim.body_bytes_max);
	size_t n = strlen(buf);
	memset(buf + n, 'b', lim.body_bytes_max);
	assert_int_equal(dp_http_parse(buf, n + lim.body_bytes_max, &lim, &req),
	                 (int)(n + lim.body_bytes_max));
	assert_int_equal(req.body.len, lim.body_bytes_max);
	/* over the limit: refused with the headers, before any body byte */
	sprintf(buf, "POST / HTTP/1.1\r\nContent-Length: %u\r\n\r\n", lim.body_bytes_max + 1);
	assert_int_equal(parse(buf, &req), -413);
	/* ... even before the headers end */
	sprintf(buf, "POST / HTTP/1.1\r\nContent-Length: 999999\r\nHost: x");
	assert_int_equal(parse(buf, &req), -413);
	/* a length that overflows 64 bits is malformed */
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
	                       &req), -400);
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", &req), -400);
}

static void test_transfer_encoding(void **state)
{
	(void)state;
	struct dp_request req;
	assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
	                       "3\r\nabc\r\n0\r\n\r\n", &req), -501);
	assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", &req), -501);
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n"
	                       "Transfer-Encoding: chunked\r\n\r\nabc", &req), -400);
	assert_int_equal(parse("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
	                       "Content-Length: 3\r\n\r\nabc", &req), -400);
	assert_int_equal(parse("POST / HTTP/1.1\r\ntransfer-encoding: identity\r\n"
	                       "content-length: 3\r\n\r\nabc", &req), -400);
}

static void test_duplicates(void **state)
{
	(void)state;
	struct dp_request req;
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n"
	                       "Content-Length: 3\r\n\r\nabc", &req), -400);
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length: 3\r\n"
	                       "content-length: 4\r\n\r\nabcd", &req), -400);
	assert_int_equal(parse("GET / HTTP/1.1\r\nAuthorization: a\r\n"
	                       "Authorization: b\r\n\r\n", &req), -400);
	assert_int_equal(parse("GET / HTTP/1.1\r\nIdempotency-Key: a\r\n"
	                       "IDEMPOTENCY-KEY: a\r\n\r\n", &req), -400);
	/* repeated headers we do not act on are fine */
	assert_true(parse("GET / HTTP/1.1\r\nAccept: a\r\nAccept: b\r\n\r\n", &req) > 0);
}

static void test_connection_and_versions(void **state)
{
	(void)state;
	struct dp_request req;
	assert_true(parse("GET / HTTP/1.1\r\nConnection: close\r\n\r\n", &req) > 0);
	assert_int_equal(req.keep_alive, 0);
	assert_true(parse("GET / HTTP/1.1\r\nConnection: keep-alive\r\n\r\n", &req) > 0);
	assert_int_equal(req.keep_alive, 1);
	assert_true(parse("GET / HTTP/1.0\r\n\r\n", &req) > 0);
	assert_int_equal(req.keep_alive, 0);
	assert_int_equal(req.http_minor, 0);
	assert_true(parse("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &req) > 0);
	assert_int_equal(req.keep_alive, 1);
	assert_int_equal(parse("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", &req), -505);
	assert_int_equal(parse("GET / HTTP/2.0\r\n\r\n", &req), -505);
	assert_int_equal(parse("GET / HTTP/1.2\r\n\r\n", &req), -505);
	assert_int_equal(parse("GET / HTTP/0.9\r\n\r\n", &req), -505);
	assert_int_equal(parse("GET / HTTP/1.1x\r\n\r\n", &req), -400);
	/* an HTTP/0.9 request line (no version) */
	assert_int_equal(parse("GET /\r\n\r\n", &req), -505);
}

static void test_garbage(void **state)
{
	(void)state;
	struct dp_request req;
	static const char tls[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n";
	assert_int_equal(dp_http_parse(tls, sizeof(tls) - 1, &lim, &req), -400);
	assert_int_equal(parse("hello world\r\n\r\n", &req), -400);
	assert_int_equal(parse("GET / HTTP/1.1\r\nBad Header: x\r\n\r\n", &req), -400);
	assert_int_equal(parse("POST / HTTP/1.1\r\nContent-Length : 2\r\n\r\n{}", &req), -400);
	static const char nul_name[] = "GET / HTTP/1.1\r\nX\0Y: v\r\n\r\n";
	assert_int_equal(dp_http_parse(nul_name, sizeof(nul_name) - 1, &lim, &req), -400);
	assert_int_equal(parse("GET / HTTP/1.1\r\n: novalue\r\n\r\n", &req), -400);
	assert_int_equal(parse("GET / HTTP/1.1\r\nX-Folded: a\r\n b\r\n\r\n", &req), -400);
	assert_int_equal(dp_http_parse("", 0, &lim, &req), 0);
	/* deterministic random bytes never crash and never claim more than given */
	char buf[300];
	uint32_t x = 7;
	for (int round = 0; round < 3000; round++) {
		size_t len = (size_t)(round % 299) + 1;
		size_t off = 0;
		if (round % 3 == 0)
			off = (size_t)sprintf(buf, "GET / HTTP/1.1\r\n");
		for (size_t i = off; i < len; i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = (x >> 16) % 5 == 0 ? "\r\n: "[(x >> 8) & 3] : (char)(x >> 20);
		}
		int n = dp_http_parse(buf, len < off ? off : len, &lim, &req);
		assert_true(n <= (int)(len < off ? off : len));
	}
}

static void test_header_names_any_case(void **state)
{
	(void)state;
	const char *s =
		"POST /x HTTP/1.1\r\n"
		"aUtHoRiZaTiOn: Bearer t\r\n"
		"IDEMPOTENCY-KEY: K\r\n"
		"x-device-id: d\r\n"
		"X-FORWARDED-for: 1.2.3.4\r\n"
		"CONTENT-type:application/json\r\n"
		"cOnTeNt-LeNgTh: 2\r\n"
		"\r\n{}";
	struct dp_request req;
	assert_int_equal(parse(s, &req), (int)strlen(s));
	assert_slice(req.authorization, "Bearer t");
	assert_slice(req.idempotency_key, "K");
	assert_slice(req.device_id, "d");
	assert_slice(req.forwarded_for, "1.2.3.4");
	assert_slice(req.content_type, "application/json");
	assert_slice(req.body, "{}");
	/* a name that merely starts like one of ours is not ours */
	assert_true(parse("GET / HTTP/1.1\r\nAuthorization-X: a\r\n\r\n", &req) > 0);
	assert_int_equal(req.authorization.len, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_simple_get),
		cmocka_unit_test(test_post_with_body_and_headers),
		cmocka_unit_test(test_methods),
		cmocka_unit_test(test_pipelined),
		cmocka_unit_test(test_partial_at_every_split),
		cmocka_unit_test(test_request_line_limit),
		cmocka_unit_test(test_header_count_limit),
		cmocka_unit_test(test_header_bytes_limit),
		cmocka_unit_test(test_body_limit),
		cmocka_unit_test(test_transfer_encoding),
		cmocka_unit_test(test_duplicates),
		cmocka_unit_test(test_connection_and_versions),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_header_names_any_case),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
