/* cmd_test.c - public ids and the enum names/HTTP codes of common/fs_cmd.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "common/fs_cmd.h"

static void test_pubid_round_trip(void **state)
{
	(void)state;
	static const uint64_t numbers[] = { 1, 2, 15, 16, 0xabcdef, UINT64_MAX, 0x8000000000000000ull };
	for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
		char id[FS_PUBID_LEN + 1];
		fs_pubid_format(id, 'r', numbers[i]);
		assert_int_equal(strlen(id), FS_PUBID_LEN);
		assert_int_equal(id[0], 'r');
		assert_int_equal(fs_pubid_parse(id, FS_PUBID_LEN, 'r'), numbers[i]);
		assert_int_equal(fs_pubid_parse(id, FS_PUBID_LEN, 'o'), 0);
		fs_pubid_format(id, 'o', numbers[i]);
		assert_int_equal(fs_pubid_parse(id, FS_PUBID_LEN, 'o'), numbers[i]);
	}
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, 'r', 0x1a2b);
	assert_string_equal(id, "r0000000000001a2b");
}

static void test_pubid_malformed(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"r0000000000000000",   /* value 0 */
		"R0000000000001a2b",   /* prefix case */
		"r0000000000001A2B",   /* uppercase hex */
		"r000000000001a2b",    /* 15 digits */
		"r00000000000001a2b",  /* 17 digits */
		"x0000000000001a2b",
		"r000000000000 1a2",
		"r-000000000001a2b",
		"r00000000000g1a2b",
		"",
		"r",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(fs_pubid_parse(bad[i], strlen(bad[i]), 'r'), 0);
	assert_int_equal(fs_pubid_parse("r0000000000001a2b", 16, 'r'), 0);
	assert_int_equal(fs_pubid_parse(NULL, 0, 'r'), 0);
}

static void test_names_and_codes(void **state)
{
	(void)state;
	static const char *const names[FS_ERR_COUNT] = {
		"ok", "sold_out", "limit_reached", "rate_limited", "sale_not_open", "frozen",
		"overloaded", "unknown_sku", "not_found", "not_cancellable", "expired",
		"already_checked_out", "bad_request", "exists", "bad_state", "idempotency_key_reused",
		"forbidden", "reclaimed", "standby", "retained", "sinks_behind",
	};
	static const int codes[FS_ERR_COUNT] = {
		200, 409, 409, 429, 403, 503, 503, 404, 404, 409, 410, 409, 400, 409, 409, 422, 403, 404, 503, 409, 409,
	};
	for (int e = 0; e < FS_ERR_COUNT; e++) {
		assert_string_equal(fs_err_name((enum fs_err)e), names[e]);
		assert_int_equal(fs_err_http((enum fs_err)e), codes[e]);
	}
	assert_string_equal(fs_err_name(FS_ERR_COUNT), "unknown");
	assert_int_equal(fs_err_http(FS_ERR_COUNT), 500);

	assert_string_equal(fs_sale_state_name(FS_SALE_SCHEDULED), "scheduled");
	assert_string_equal(fs_sale_state_name(FS_SALE_SOLD_OUT), "sold_out");
	assert_string_equal(fs_sale_state_name(FS_SALE_CLOSED), "closed");
	assert_string_equal(fs_res_status_name(FS_RES_WAITLISTED), "WAITLISTED");
	assert_string_equal(fs_res_status_name(FS_RES_PAYING), "PAYING");
	assert_string_equal(fs_res_status_name(FS_RES_CONFIRMED), "CONFIRMED");
	assert_string_equal(fs_res_status_name(FS_RES_EXPIRED), "EXPIRED");
	assert_string_equal(fs_res_status_name(FS_RES_QUEUED), "QUEUED");
	assert_string_equal(fs_res_status_name(FS_RES_REJECTED), "REJECTED");
	assert_string_equal(fs_order_status_name(FS_ORDER_PENDING), "PENDING");
	assert_string_equal(fs_order_status_name(FS_ORDER_PAID), "PAID");
	assert_string_equal(fs_order_status_name(FS_ORDER_FAILED), "FAILED");
	assert_string_equal(fs_cmd_type_name(FS_CMD_SALE_CREATE), "sale_create");
	assert_string_equal(fs_cmd_type_name(FS_CMD_RESERVE), "reserve");
	assert_string_equal(fs_cmd_type_name(FS_CMD_PAY_RESULT), "pay_result");
	for (int t = 0; t < FS_CMD_TYPE_COUNT; t++)
		assert_string_not_equal(fs_cmd_type_name((enum fs_cmd_type)t), "unknown");
	assert_string_equal(fs_cmd_type_name(FS_CMD_TYPE_COUNT), "unknown");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pubid_round_trip),
		cmocka_unit_test(test_pubid_malformed),
		cmocka_unit_test(test_names_and_codes),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
