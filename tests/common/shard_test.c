/* shard_test.c - the shard map of common/fs_shard.h: parsing (good and bad
 * maps), pinned and hashed owners, and ids that carry their shard. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/fs_shard.h"

#define HASH_OF_A UINT64_C(0x82a2a958a9bece5b)

static struct fs_shard_map map;   /* large: static, not on the stack */

static void test_parse_and_pins(void **state)
{
	(void)state;
	char err[256];
	const char *text =
		"# two appliances\n"
		"shard a 127.0.0.1:8081\n"
		"shard b 10.0.0.2:8080   # the second\n"
		"\n"
		"sku shoe-1 b\n"
		"writer shoe-1 1\n"
		"writer hat 0\n";
	assert_int_equal(fs_shard_parse(&map, text, err, sizeof err), 0);
	assert_int_equal(map.appliance_count, 2);
	assert_string_equal(map.appliances[1].addr, "10.0.0.2:8080");
	assert_int_equal(fs_shard_appliance_index(&map, "b"), 1);
	assert_int_equal(fs_shard_appliance_index(&map, "c"), -1);
	assert_int_equal(fs_shard_appliance_of(&map, "shoe-1", 6), 1);
	assert_int_equal(fs_shard_writer_of(&map, "shoe-1", 6, 2), 1);
	assert_int_equal(fs_shard_writer_of(&map, "hat", 3, 4), 0);
	assert_int_equal(fs_shard_check_writers(&map, 2, err, sizeof err), 0);
	assert_int_equal(fs_shard_check_writers(&map, 1, err, sizeof err), -1);
	assert_non_null(strstr(err, "shoe-1"));
}

static void test_bad_maps(void **state)
{
	(void)state;
	static const char *const bad[] = {
		"shard a\n",                               /* no address */
		"shard a host\n",                          /* no port */
		"shard a host:0\n",                        /* port out of range */
		"shard a host:99999\n",
		"shard a h:1\nshard a h:2\n",              /* twice */
		"sku x a\n",                               /* shard not declared */
		"shard a h:1\nsku x a\nsku x a\n",         /* SKU pinned twice */
		"writer x 16\n",                           /* past FS_SHARD_WRITERS_MAX */
		"writer x -1\n", "writer x 1z\n", "writer x\n",
		"writer bad/sku 0\n",
		"route x y\n",                             /* unknown directive */
		"shard a h:1 extra words here\n",
	};
	char err[256];
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		assert_int_equal(fs_shard_parse(&map, bad[i], err, sizeof err), -1);
		assert_non_null(strstr(err, "line "));
	}
}

/* Unpinned SKUs: the owner depends only on the name (every process agrees),
 * stays in range, and spreads over the shards. */
static void test_hash_owners(void **state)
{
	(void)state;
	char err[64];
	assert_int_equal(fs_shard_parse(&map, "shard a h:1\nshard b h:2\nshard c h:3\n", err,
	                                sizeof err), 0);
	unsigned per_appliance[3] = {0}, per_writer[4] = {0};
	for (int i = 0; i < 3000; i++) {
		char sku[16];
		int len = snprintf(sku, sizeof sku, "sku-%d", i);
		uint32_t a = fs_shard_appliance_of(&map, sku, (size_t)len);
		uint32_t w = fs_shard_writer_of(&map, sku, (size_t)len, 4);
		assert_true(a < 3 && w < 4);
		assert_int_equal(a, fs_shard_appliance_of(&map, sku, (size_t)len));
		assert_int_equal(w, fs_shard_writer_of(NULL, sku, (size_t)len, 4));
		per_appliance[a]++;
		per_writer[w]++;
	}
	for (int i = 0; i < 3; i++)
		assert_true(per_appliance[i] > 800);
	for (int i = 0; i < 4; i++)
		assert_true(per_writer[i] > 600);
	assert_int_equal(fs_shard_appliance_of(NULL, "x", 1), 0);
	/* FNV-1a 64 of "a" is 0xaf63dc4c8601ec8c (the published vector); the
	 * finalizer is fixed too, so a changed hash (which would move SKUs
	 * between shards of existing data dirs) fails here */
	assert_true(fs_shard_hash("a", 1) == HASH_OF_A);
}

static void test_ids_carry_the_shard(void **state)
{
	(void)state;
	uint64_t no = fs_id_compose(3, 7, 123456);
	assert_int_equal(fs_id_appliance(no), 3);
	assert_int_equal(fs_id_writer(no), 7);
	assert_true(fs_id_local(no) == 123456);
	assert_true(fs_id_compose(0, 0, 42) == 42);   /* one shard: ids as before */
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, 'r', fs_id_compose(0x2a, 1, 5));
	assert_string_equal(id, "r2a01000000000005");   /* a proxy reads "2a" */
	assert_true(fs_id_compose(1, 0, FS_ID_LOCAL_MASK + 1) == fs_id_compose(1, 0, 0));
}

/* Sink names: one writer keeps the names a box had before writer shards;
 * several give every writer its own label, cursor and topic. */
static void test_sink_names(void **state)
{
	(void)state;
	static const struct { enum fs_shard_naming what; const char *name, *base; uint32_t w, n; const char *want; } c[] = {
		{ FS_SHARD_LABEL, "", NULL, 0, 1, "" },
		{ FS_SHARD_LABEL, "east", NULL, 0, 1, "east" },
		{ FS_SHARD_LABEL, "east", NULL, 1, 2, "east/w1" },
		{ FS_SHARD_LABEL, NULL, NULL, 15, 16, "w15" },
		{ FS_SHARD_CURSOR, "", NULL, 0, 1, "flashsaled" },
		{ FS_SHARD_CURSOR, "east", NULL, 0, 1, "flashsaled.east" },
		{ FS_SHARD_CURSOR, "", NULL, 0, 2, "flashsaled.w0" },
		{ FS_SHARD_CURSOR, "east", NULL, 1, 2, "flashsaled.east.w1" },
		{ FS_SHARD_TOPIC, "", NULL, 0, 1, "flashsale.journal" },
		{ FS_SHARD_TOPIC, "east", NULL, 1, 4, "flashsale.journal.east.w1" },
		{ FS_SHARD_TOPIC, "east", "mine", 0, 1, "mine" },
		{ FS_SHARD_TOPIC, "", "mine", 3, 4, "mine.w3" },
	};
	char out[64];
	for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
		assert_int_equal(fs_shard_sink_name(out, sizeof out, c[i].what, c[i].name, c[i].base, c[i].w, c[i].n), 0);
		assert_string_equal(out, c[i].want);
	}
	char label[FS_SHARD_LABEL_LEN_MAX + 1];   /* the longest name and writer fit the label */
	assert_int_equal(fs_shard_sink_name(label, sizeof label, FS_SHARD_LABEL, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	                                    NULL, 15, 16), 0);
	assert_int_equal(strlen(label), FS_SHARD_LABEL_LEN_MAX);
	assert_int_equal(fs_shard_sink_name(out, 8, FS_SHARD_CURSOR, "east", NULL, 0, 1), -1);   /* too small */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_and_pins),
		cmocka_unit_test(test_bad_maps),
		cmocka_unit_test(test_hash_owners),
		cmocka_unit_test(test_ids_carry_the_shard),
		cmocka_unit_test(test_sink_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
