/* ctl_view_test.c - the operator's view (control/ctl_view.c, behind the
 * dashboard and `flashctl top`) shows which shard a box is: the
 * flashsale_shard_info sample of /metrics becomes "shard":{name,index,of},
 * and a box without --shard-map shows "shard":null.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "control/ctl_view.h"

static void view_json(const char *metrics, char *out, size_t cap)
{
	static struct ctl_scrape s;
	static struct ctl_view v;
	assert_true(ctl_scrape_parse(metrics, 1.0, &s) >= 0);
	ctl_view_make(NULL, &s, &v);
	assert_true(ctl_view_json(&v, out, cap) > 0);
}

static void test_shard_shown(void **state)
{
	(void)state;
	static char out[65536];
	view_json("# TYPE flashsale_journal_seq gauge\nflashsale_journal_seq 7\n"
	          "# TYPE flashsale_shard_info gauge\nflashsale_shard_info{shard=\"west\",index=\"1\",shards=\"2\"} 1\n",
	          out, sizeof out);
	assert_non_null(strstr(out, "\"shard\":{\"name\":\"west\",\"index\":1,\"of\":2}"));
	view_json("# TYPE flashsale_journal_seq gauge\nflashsale_journal_seq 7\n", out, sizeof out);
	assert_non_null(strstr(out, "\"shard\":null"));
}

int main(void)
{
	const struct CMUnitTest tests[] = { cmocka_unit_test(test_shard_shown) };
	return cmocka_run_group_tests(tests, NULL, NULL);
}
