/* json_test.c - the reservation and checkout body readers: what they
 * accept, and a clear refusal for everything else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "dataplane/json.h"

static int reserve(const char *s, uint32_t *q, const char **detail)
{
	*q = 12345;
	*detail = NULL;
	return dp_json_reserve_body(s, strlen(s), 5, q, detail);
}

static void test_reserve_valid(void **state)
{
	(void)state;
	uint32_t q;
	const char *d;
	assert_int_equal(reserve("{\"quantity\":1}", &q, &d), 0);
	assert_int_equal(q, 1);
	assert_int_equal(reserve(" \r\n{ \"quantity\" :\t5 } \n", &q, &d), 0);
	assert_int_equal(q, 5);
	assert_int_equal(reserve("{\"note\":\"hi\",\"quantity\":3,\"x\":null,\"y\":-1.5e3,\"z\":true}",
	                         &q, &d), 0);
	assert_int_equal(q, 3);
	assert_int_equal(reserve("{}", &q, &d), 0);
	assert_int_equal(q, 1);
}

static void test_reserve_empty_body(void **state)
{
	(void)state;
	uint32_t q = 0;
	const char *d = NULL;
	assert_int_equal(dp_json_reserve_body(NULL, 0, 5, &q, &d), 0);
	assert_int_equal(q, 1);
	q = 0;
	assert_int_equal(reserve("  \r\n", &q, &d), 0);
	assert_int_equal(q, 1);
}

static void test_reserve_bad_quantity(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"{\"quantity\":0}",
		"{\"quantity\":-1}",
		"{\"quantity\":6}",
		"{\"quantity\":4294967297}",
		"{\"quantity\":99999999999999999999999}",
		"{\"quantity\":1.0}",
		"{\"quantity\":1.5}",
		"{\"quantity\":1e0}",
		"{\"quantity\":\"1\"}",
		"{\"quantity\":true}",
		"{\"quantity\":null}",
		"{\"quantity\":-0}",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t q;
		const char *d;
		assert_int_equal(reserve(bad[i], &q, &d), -1);
		assert_non_null(d);
		assert_string_equal(d, "quantity must be an integer between 1 and 5");
	}
	uint32_t q;
	const char *d;
	assert_int_equal(dp_json_reserve_body("{\"quantity\":2}", 14, 1, &q, &d), -1);
	assert_string_equal(d, "quantity must be an integer between 1 and 1");
}

static void test_reserve_malformed(void **state)
{
	(void)state;
	static const struct { const char *body; const char *detail; } bad[] = {
		{ "{", "malformed JSON" },
		{ "{\"quantity\":1", "malformed JSON" },
		{ "{\"quantity\":1}x", "malformed JSON" },
		{ "{\"quantity\":1} {}", "malformed JSON" },
		{ "{\"quantity\":1}}", "malformed JSON" },
		{ "{\"quantity\" 1}", "malformed JSON" },
		{ "{\"a\" \"b\"}", "malformed JSON" },
		{ "{\"a\":1,,\"quantity\":2}", "malformed JSON" },
		{ "{\"a\":1,}", "malformed JSON" },
		{ "{,\"a\":1}", "malformed JSON" },
		{ "{\"a\":1 \"b\":2}", "malformed JSON" },
		{ "{\"a\":tru}", "malformed JSON" },
		{ "{\"a\":1.}", "malformed JSON" },
		{ "{\"a\":\"x\ty\"}", "malformed JSON" },
		{ "{quantity:1}", "malformed JSON" },
		{ "{'quantity':1}", "malformed JSON" },
		{ "{\"quantity\":+1}", "malformed JSON" },
		{ "{\"quantity\":01}", "malformed JSON" },
		{ "\"quantity\"", "body must be a JSON object" },
		{ "[1]", "body must be a JSON object" },
		{ "1", "malformed JSON" },
		{ "{\"quantity\":{\"n\":1}}", "body must be a flat JSON object" },
		{ "{\"x\":[1,2]}", "body must be a flat JSON object" },
		{ "{\"quantity\":1,\"quantity\":2}", "duplicate key" },
		{ "{\"a\":1,\"b\":1,\"a\":1}", "duplicate key" },
		{ "{\"quantit\\u0079\":1}", "escapes in keys are not supported" },
		{ "{\"a\":1,\"b\":2,\"c\":3,\"d\":4,\"e\":5,\"f\":6,\"g\":7,\"h\":8}", "too many fields" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		uint32_t q;
		const char *d;
		assert_int_equal(reserve(bad[i].body, &q, &d), -1);
		assert_non_null(d);
		assert_string_equal(d, bad[i].detail);
	}
	/* a NUL byte inside or after the object */
	uint32_t q;
	const char *d;
	assert_int_equal(dp_json_reserve_body("{\"quantity\":1}\0", 15, 5, &q, &d), -1);
	assert_int_equal(dp_json_reserve_body("{\"a\":\"\0\"}", 9, 5, &q, &d), -1);
	/* the body is bounded by len, not by a terminator */
	assert_int_equal(dp_json_reserve_body("{\"quantity\":2}garbage", 14, 5, &q, &d), 0);
	assert_int_equal(q, 2);
}

static void test_checkout(void **state)
{
	(void)state;
	char tok[64];
	const char *d = NULL;
	const char *s = "{\"payment_token\":\"tok_ok_123\"}";
	assert_int_equal(dp_json_checkout_body(s, strlen(s), tok, &d), 10);
	assert_memory_equal(tok, "tok_ok_123", 10);

	s = "{\"other\":1, \"payment_token\" : \"tok_slow_200\" }";
	assert_int_equal(dp_json_checkout_body(s, strlen(s), tok, &d), 12);
	assert_memory_equal(tok, "tok_slow_200", 12);

	char body[128];
	char t64[65];
	memset(t64, 'x', 64);
	t64[64] = '\0';
	strcpy(body, "{\"payment_token\":\"");
	strcat(body, t64);
	strcat(body, "\"}");
	assert_int_equal(dp_json_checkout_body(body, strlen(body), tok, &d), 64);
	assert_memory_equal(tok, t64, 64);
}

static void test_checkout_bad(void **state)
{
	(void)state;
	static const struct { const char *body; const char *detail; } bad[] = {
		{ "", "payment_token required" },
		{ "{}", "payment_token required" },
		{ "{\"token\":\"tok_ok\"}", "payment_token required" },
		{ "{\"payment_token\":\"\"}", "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":1}", "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":null}", "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":\"a\\\"b\"}", "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":\"a\\\\b\"}", "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":\"tok\xc3\xa9\"}", "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
		  "payment_token must be 1 to 64 printable ASCII characters" },
		{ "{\"payment_token\":\"a\",\"payment_token\":\"b\"}", "duplicate key" },
		{ "{\"payment_token\":[\"a\"]}", "body must be a flat JSON object" },
		{ "{\"payment_token\":\"a\"", "malformed JSON" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char tok[64];
		const char *d = NULL;
		assert_int_equal(dp_json_checkout_body(bad[i].body, strlen(bad[i].body), tok, &d), -1);
		assert_non_null(d);
		assert_string_equal(d, bad[i].detail);
	}
}

static void test_random_bytes_never_crash(void **state)
{
	(void)state;
	char buf[64];
	uint32_t x = 99;
	static const char alphabet[] = "{}[]\":,0123456789-+.eE tfnrulasquantity_\\";
	for (int round = 0; round < 20000; round++) {
		size_t len = (size_t)(round % 63) + 1;
		for (size_t i = 0; i < len; i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = alphabet[(x >> 16) % (sizeof(alphabet) - 1)];
		}
		uint32_t q = 0;
		const char *d = NULL;
		if (dp_json_reserve_body(buf, len, 10, &q, &d) == 0)
			assert_true(q >= 1 && q <= 10);
		else
			assert_non_null(d);
		char tok[64];
		int n = dp_json_checkout_body(buf, len, tok, &d);
		assert_true(n == -1 || (n >= 1 && n <= 64));
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_reserve_valid),
		cmocka_unit_test(test_reserve_empty_body),
		cmocka_unit_test(test_reserve_bad_quantity),
		cmocka_unit_test(test_reserve_malformed),
		cmocka_unit_test(test_checkout),
		cmocka_unit_test(test_checkout_bad),
		cmocka_unit_test(test_random_bytes_never_crash),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
