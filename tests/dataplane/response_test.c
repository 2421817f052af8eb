/* response_test.c - every answer shape has exactly the fields API.md names,
 * a Content-Length equal to its body, and the right framing headers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include "dataplane/response.h"

#define NO_OWNER ((struct dp_id_owner){ 0, 0 })

struct parsed {
	int http;
	char head[1024];
	char body[1024];
	size_t body_len;
	jsmntok_t tok[64];
	int tok_count;
};

/* Splits an answer, checks its framing and tokenizes its JSON body. */
static void parse_answer(const char *out, int n, struct parsed *p)
{
	assert_true(n > 0);
	const char *sep = strstr(out, "\r\n\r\n");
	assert_non_null(sep);
	size_t head_len = (size_t)(sep - out) + 4;
	assert_true(head_len < sizeof(p->head));
	memcpy(p->head, out, head_len);
	p->head[head_len] = '\0';
	p->body_len = (size_t)n - head_len;
	assert_true(p->body_len < sizeof(p->body));
	memcpy(p->body, out + head_len, p->body_len);
	p->body[p->body_len] = '\0';
	assert_int_equal(sscanf(p->head, "HTTP/1.1 %d ", &p->http), 1);
	const char *cl = strstr(p->head, "\r\nContent-Length: ");
	assert_non_null(cl);
	assert_int_equal(strtoul(cl + 18, NULL, 10), p->body_len);
	jsmn_parser parser;
	jsmn_init(&parser);
	p->tok_count = jsmn_parse(&parser, p->body, p->body_len, p->tok, 64);
	assert_true(p->tok_count >= 1);
	assert_int_equal(p->tok[0].type, JSMN_OBJECT);
	assert_int_equal(p->tok[0].end, (int)p->body_len);
}

/* The body's keys, in order, joined by ','. Values are scalars. */
static void keys_of(const struct parsed *p, char *out)
{
	out[0] = '\0';
	assert_int_equal(p->tok_count, 1 + 2 * p->tok[0].size);
	for (int k = 0; k < p->tok[0].size; k++) {
		const jsmntok_t *t = &p->tok[1 + 2 * k];
		if (k > 0)
			strcat(out, ",");
		strncat(out, p->body + t->start, (size_t)(t->end - t->start));
	}
}

/* The raw text of key's value (strings without quotes). */
static void value_of(const struct parsed *p, const char *key, char *out)
{
	for (int k = 0; k < p->tok[0].size; k++) {
		const jsmntok_t *t = &p->tok[1 + 2 * k];
		if ((size_t)(t->end - t->start) == strlen(key) &&
		    memcmp(p->body + t->start, key, strlen(key)) == 0) {
			const jsmntok_t *v = t + 1;
			memcpy(out, p->body + v->start, (size_t)(v->end - v->start));
			out[v->end - v->start] = '\0';
			return;
		}
	}
	fail_msg("key %s missing", key);
}

static struct fs_ans ans(uint8_t body, uint16_t http)
{
	struct fs_ans a;
	memset(&a, 0, sizeof(a));
	a.body = body;
	a.http = http;
	memcpy(a.sku, "demo", 4);
	a.sku_len = 4;
	a.quantity = 2;
	a.res_no = 0x1a;
	a.expires_at_ms = 1795623764123;   /* 2026-11-25T16:22:44.123Z */
	return a;
}

static void answer(const struct fs_ans *a, struct parsed *p, char *keys)
{
	char out[2048];
	int n = dp_resp_answer(out, sizeof(out), a, NO_OWNER, 1);
	parse_answer(out, n, p);
	assert_int_equal(p->http, a->http);
	keys_of(p, keys);
}

static void test_time_format(void **state)
{
	(void)state;
	char t[32];
	assert_int_equal(dp_fmt_time_ms(t, 0), 24);
	assert_string_equal(t, "1970-01-01T00:00:00.000Z");
	dp_fmt_time_ms(t, 1795623764123);
	assert_string_equal(t, "2026-11-25T16:22:44.123Z");
	dp_fmt_time_ms(t, 951782400000 - 1);   /* leap day 2000 */
	assert_string_equal(t, "2000-02-28T23:59:59.999Z");
	dp_fmt_time_ms(t, 951782400000);
	assert_string_equal(t, "2000-02-29T00:00:00.000Z");
	dp_fmt_time_ms(t, -1);
	assert_string_equal(t, "1969-12-31T23:59:59.999Z");
	dp_fmt_time_ms(t, INT64_MAX);
	assert_string_equal(t, "9999-12-31T23:59:59.999Z");
	dp_fmt_time_ms(t, INT64_MIN);
	assert_string_equal(t, "0000-01-01T00:00:00.000Z");
}

static void test_reservation(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_RES, 201);
	a.res_status = FS_RES_RESERVED;
	answer(&a, &p, keys);
	assert_string_equal(keys, "reservation_id,sku,quantity,status,expires_at");
	value_of(&p, "reservation_id", v);
	assert_string_equal(v, "r000000000000001a");
	value_of(&p, "status", v);
	assert_string_equal(v, "RESERVED");
	value_of(&p, "quantity", v);
	assert_string_equal(v, "2");
	value_of(&p, "expires_at", v);
	assert_string_equal(v, "2026-11-25T16:22:44.123Z");
	assert_non_null(strstr(p.head, "HTTP/1.1 201 Created\r\n"));
	assert_non_null(strstr(p.head, "\r\nContent-Type: application/json\r\n"));
	assert_null(strstr(p.head, "Connection:"));
	assert_null(strstr(p.head, "Retry-After:"));

	/* with an order */
	a.res_status = FS_RES_CONFIRMED;
	a.order_no = 0xff;
	a.http = 200;
	answer(&a, &p, keys);
	assert_string_equal(keys, "reservation_id,sku,quantity,status,expires_at,order_id");
	value_of(&p, "order_id", v);
	assert_string_equal(v, "o00000000000000ff");
	value_of(&p, "status", v);
	assert_string_equal(v, "CONFIRMED");

	/* cancelled */
	a.res_status = FS_RES_CANCELLED;
	a.order_no = 0;
	answer(&a, &p, keys);
	assert_string_equal(keys, "reservation_id,sku,quantity,status,expires_at");
	value_of(&p, "status", v);
	assert_string_equal(v, "CANCELLED");
}

static void test_waitlisted(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_RES, 202);
	a.res_status = FS_RES_WAITLISTED;
	a.position = 17;
	answer(&a, &p, keys);
	assert_string_equal(keys, "status,reservation_id,position,sku,quantity");
	value_of(&p, "status", v);
	assert_string_equal(v, "WAITLISTED");
	value_of(&p, "position", v);
	assert_string_equal(v, "17");
	assert_non_null(strstr(p.head, "HTTP/1.1 202 Accepted\r\n"));
}

static void test_checkout(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_CHECKOUT, 200);
	a.order_no = 3;
	a.order_status = FS_ORDER_PAID;
	a.amount_cents = 1999;
	answer(&a, &p, keys);
	assert_string_equal(keys, "order_id,reservation_id,status,amount");
	value_of(&p, "amount", v);
	assert_string_equal(v, "1999");
	value_of(&p, "status", v);
	assert_string_equal(v, "PAID");
	value_of(&p, "order_id", v);
	assert_string_equal(v, "o0000000000000003");

	a.http = 402;
	a.order_status = FS_ORDER_FAILED;
	a.reason = FS_PAY_DECLINED;
	answer(&a, &p, keys);
	assert_string_equal(keys, "order_id,reservation_id,status,reason");
	value_of(&p, "status", v);
	assert_string_equal(v, "FAILED");
	value_of(&p, "reason", v);
	assert_string_equal(v, "card_declined");
	assert_non_null(strstr(p.head, "HTTP/1.1 402 Payment Required\r\n"));
}

static void test_order(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_ORDER, 200);
	a.order_no = 9;
	a.order_status = FS_ORDER_PENDING;
	answer(&a, &p, keys);
	assert_string_equal(keys, "order_id,reservation_id,sku,quantity,status");
	value_of(&p, "status", v);
	assert_string_equal(v, "PENDING");
	a.order_status = FS_ORDER_PAID;
	a.paid_at_ms = 1000;
	answer(&a, &p, keys);
	assert_string_equal(keys, "order_id,reservation_id,sku,quantity,status,paid_at");
	value_of(&p, "paid_at", v);
	assert_string_equal(v, "1970-01-01T00:00:01.000Z");
}

static void test_sale(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_SALE, 200);
	a.state = FS_SALE_SOLD_OUT;
	a.total = 10000;
	a.available = 0;
	a.reserved = 3;
	a.sold = 9997;
	a.version = UINT64_MAX;
	answer(&a, &p, keys);
	assert_string_equal(keys, "sku,state,total,available,reserved,sold,version");
	value_of(&p, "state", v);
	assert_string_equal(v, "sold_out");
	value_of(&p, "sold", v);
	assert_string_equal(v, "9997");
	value_of(&p, "version", v);
	assert_string_equal(v, "18446744073709551615");
	value_of(&p, "sku", v);
	assert_string_equal(v, "demo");
}

static void test_empty_and_errors(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_EMPTY, 200);
	answer(&a, &p, keys);
	assert_string_equal(keys, "ok");
	assert_string_equal(p.body, "{\"ok\":true}");

	for (int e = 1; e < FS_ERR_COUNT; e++) {
		if (e == FS_ERR_RATE_LIMITED)
			continue;
		a = ans(FS_BODY_ERROR, (uint16_t)fs_err_http((enum fs_err)e));
		a.err = (uint8_t)e;
		answer(&a, &p, keys);
		/* a reclaimed record says where its history went */
		assert_string_equal(keys, e == FS_ERR_RECLAIMED ? "error,detail" : "error");
		value_of(&p, "error", v);
		/* API.md: a reclaimed record answers 404 "not_found" (+ detail) */
		assert_string_equal(v, e == FS_ERR_RECLAIMED ? "not_found" : fs_err_name((enum fs_err)e));
		if (e == FS_ERR_FROZEN)   /* holds wait during a freeze: come back */
			assert_non_null(strstr(p.head, "\r\nRetry-After: "));
		else
			assert_null(strstr(p.head, "Retry-After"));
	}
	/* http 0 falls back to the error's code */
	a = ans(FS_BODY_ERROR, 0);
	a.err = FS_ERR_SOLD_OUT;
	char out[512];
	int n = dp_resp_answer(out, sizeof(out), &a, NO_OWNER, 1);
	parse_answer(out, n, &p);
	assert_int_equal(p.http, 409);
}

static void test_rate_limited(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[128];
	struct fs_ans a = ans(FS_BODY_ERROR, 429);
	a.err = FS_ERR_RATE_LIMITED;
	a.expires_at_ms = 1500;   /* retry_after_ms */
	a.position = 42;
	answer(&a, &p, keys);
	assert_string_equal(keys, "error,retry_after_ms,queue_position");
	value_of(&p, "retry_after_ms", v);
	assert_string_equal(v, "1500");
	value_of(&p, "queue_position", v);
	assert_string_equal(v, "42");
	assert_non_null(strstr(p.head, "\r\nRetry-After: 2\r\n"));
	assert_non_null(strstr(p.head, "HTTP/1.1 429 Too Many Requests\r\n"));

	char out[512];
	struct fs_ans limited = { .http = 429, .err = FS_ERR_RATE_LIMITED, .body = FS_BODY_ERROR,
	                          .expires_at_ms = 3000, .position = 7 };
	int n = dp_resp_answer(out, sizeof(out), &limited, NO_OWNER, 0);
	parse_answer(out, n, &p);
	assert_int_equal(p.http, 429);
	keys_of(&p, keys);
	assert_string_equal(keys, "error,retry_after_ms,queue_position");
	assert_non_null(strstr(p.head, "\r\nRetry-After: 3\r\n"));
	assert_non_null(strstr(p.head, "\r\nConnection: close\r\n"));
	limited.expires_at_ms = 1;
	limited.position = 0;
	n = dp_resp_answer(out, sizeof(out), &limited, NO_OWNER, 1);
	parse_answer(out, n, &p);
	assert_non_null(strstr(p.head, "\r\nRetry-After: 1\r\n"));
}

static void test_error_detail_and_escaping(void **state)
{
	(void)state;
	struct parsed p;
	char keys[256], v[256];
	char out[512];
	int n = dp_resp_error(out, sizeof(out), 400, "bad_request", "malformed JSON", 1);
	parse_answer(out, n, &p);
	assert_int_equal(p.http, 400);
	keys_of(&p, keys);
	assert_string_equal(keys, "error,detail");
	value_of(&p, "detail", v);
	assert_string_equal(v, "malformed JSON");
	n = dp_resp_error(out, sizeof(out), 401, "unauthorized", NULL, 1);
	parse_answer(out, n, &p);
	keys_of(&p, keys);
	assert_string_equal(keys, "error");
	assert_string_equal(p.body, "{\"error\":\"unauthorized\"}");
	n = dp_resp_error(out, sizeof(out), 400, "bad_request", "quote \" slash \\ nl \n", 1);
	parse_answer(out, n, &p);
	value_of(&p, "detail", v);
	assert_string_equal(v, "quote \\\" slash \\\\ nl \\u000a");

	/* a SKU with odd bytes stays valid JSON */
	struct fs_ans a = ans(FS_BODY_SALE, 200);
	memcpy(a.sku, "a\"b\\c\x01", 6);
	a.sku_len = 6;
	answer(&a, &p, keys);
	value_of(&p, "sku", v);
	assert_string_equal(v, "a\\\"b\\\\c\\u0001");
}

static void test_connection_close(void **state)
{
	(void)state;
	char out[512];
	struct parsed p;
	struct fs_ans a = ans(FS_BODY_EMPTY, 200);
	int n = dp_resp_answer(out, sizeof(out), &a, NO_OWNER, 0);
	parse_answer(out, n, &p);
	assert_non_null(strstr(p.head, "\r\nConnection: close\r\n"));
	n = dp_resp_error(out, sizeof(out), 413, "payload_too_large", NULL, 0);
	parse_answer(out, n, &p);
	assert_non_null(strstr(p.head, "\r\nConnection: close\r\n"));
	assert_non_null(strstr(p.head, "HTTP/1.1 413 "));
	n = dp_resp_raw(out, sizeof(out), 200, "text/plain", "ok\n", 3, 0);
	assert_true(n > 0);
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
	                         "Content-Length: 3\r\nConnection: close\r\n\r\nok\n");
	n = dp_resp_raw(out, sizeof(out), 503, "application/json", "", 0, 1);
	out[n] = '\0';
	assert_string_equal(out, "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
	                         "Content-Length: 0\r\n\r\n");
}

/* The public ids carry the owner (appliance bits 56..63, writer 48..55);
 * the owner 0/0 leaves the writer's numbers as they were before shards. */
static void test_ids_carry_owner(void **state)
{
	(void)state;
	struct fs_ans a = ans(FS_BODY_CHECKOUT, 200);
	a.order_no = 3;
	a.order_status = FS_ORDER_PAID;
	a.amount_cents = 100;
	char out[1024];
	int n = dp_resp_answer(out, sizeof(out), &a, (struct dp_id_owner){ 2, 1 }, 1);
	assert_true(n > 0);
	out[n] = 0;
	assert_non_null(strstr(out, "\"order_id\":\"o0201000000000003\""));
	assert_non_null(strstr(out, "\"reservation_id\":\"r020100000000001a\""));
	n = dp_resp_answer(out, sizeof(out), &a, NO_OWNER, 1);
	out[n] = 0;
	assert_non_null(strstr(out, "\"order_id\":\"o0000000000000003\""));
	/* and back: the local number and its owner */
	struct dp_id_owner o;
	assert_int_equal(dp_id_parse("r020100000000001a", 17, 'r', &o), 0x1a);
	assert_int_equal(o.appliance, 2);
	assert_int_equal(o.writer, 1);
	assert_int_equal(dp_id_parse("r020100000000001a", 17, 'o', &o), 0);
	assert_int_equal(dp_id_parse("rff00000000000000", 17, 'r', &o), 0);   /* no local number */
}

static void test_cap_too_small(void **state)
{
	(void)state;
	struct fs_ans a = ans(FS_BODY_RES, 201);
	a.res_status = FS_RES_RESERVED;
	a.order_no = 5;
	char out[1024];
	int n = dp_resp_answer(out, sizeof(out), &a, NO_OWNER, 1);
	assert_true(n > 0);
	char copy[1024];
	memcpy(copy, out, (size_t)n);
	for (int cap = 0; cap < n; cap++)
		assert_int_equal(dp_resp_answer(out, (size_t)cap, &a, NO_OWNER, 1), -1);
	assert_int_equal(dp_resp_answer(out, (size_t)n, &a, NO_OWNER, 1), n);
	assert_memory_equal(out, copy, (size_t)n);
	/* nothing written past cap */
	memset(out, 'Z', sizeof(out));
	assert_int_equal(dp_resp_answer(out, (size_t)n - 1, &a, NO_OWNER, 1), -1);
	for (size_t i = (size_t)n - 1; i < sizeof(out); i++)
		assert_int_equal(out[i], 'Z');
	n = dp_resp_error(out, sizeof(out), 400, "bad_request", "x", 1);
	assert_int_equal(dp_resp_error(out, (size_t)n - 1, 400, "bad_request", "x", 1), -1);
	n = dp_resp_raw(out, sizeof(out), 200, "text/plain", "abc", 3, 1);
	assert_int_equal(dp_resp_raw(out, (size_t)n - 1, 200, "text/plain", "abc", 3, 1), -1);
	struct fs_ans limited = { .http = 429, .err = FS_ERR_RATE_LIMITED, .body = FS_BODY_ERROR,
	                          .expires_at_ms = 1, .position = 1 };
	assert_int_equal(dp_resp_answer(out, 10, &limited, NO_OWNER, 1), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_time_format),
		cmocka_unit_test(test_reservation),
		cmocka_unit_test(test_waitlisted),
		cmocka_unit_test(test_checkout),
		cmocka_unit_test(test_order),
		cmocka_unit_test(test_sale),
		cmocka_unit_test(test_empty_and_errors),
		cmocka_unit_test(test_rate_limited),
		cmocka_unit_test(test_error_detail_and_escaping),
		cmocka_unit_test(test_connection_close),
		cmocka_unit_test(test_ids_carry_owner),
		cmocka_unit_test(test_cap_too_small),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
