/* replicate_test.c - unit tests of writer/replicate.c without a broker:
 * the counting rule every reader of the log applies (fences, a fenced
 * writer's batches, repeats, gaps, chain breaks, damage, heartbeats, two
 * fences of one epoch) and the resync truncation of a local journal (in a
 * segment, at a segment boundary, nothing to cut), each checked by
 * reopening the journal and appending after the cut.
 *
 * Batch bodies come from a seeded generator; the seed is printed, set
 * RP_TEST_SEED to replay a run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "writer/journal.h"
#include "writer/replicate.h"

#define BATCHES   60u
#define MSG_BYTES (16u + JR_HEADER_BYTES + 4096u)

static uint64_t seed;

struct logmsg {
	uint8_t bytes[MSG_BYTES];
	size_t len;
};

static uint64_t next_rand(uint64_t *s)
{
	*s += 0x9e3779b97f4a7c15ull;
	uint64_t x = *s;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static void tmpdir(char *out, size_t cap)
{
	snprintf(out, cap, "/tmp/rp-test-XXXXXX");
	assert_non_null(mkdtemp(out));
}

static void rmdir_all(const char *dir)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
	assert_int_equal(system(cmd), 0);
}

/* Journals n batches with seeded bodies under dir; when msgs is not NULL,
 * each batch also becomes a log message of `epoch`. */
static void make_journal(const char *dir, uint32_t n, uint64_t s, uint64_t epoch, struct logmsg *msgs)
{
	struct jr_config cfg = { .dir = dir, .segment_bytes = 32u << 10 };
	char err[512];
	struct journal *j = jr_open(&cfg, NULL, NULL, err, sizeof err);
	assert_non_null(j);
	uint8_t body[4096];
	for (uint32_t i = 0; i < n; i++) {
		uint32_t len = 64 + (uint32_t)(next_rand(&s) % 3000);
		for (uint32_t k = 0; k < len; k++)
			body[k] = (uint8_t)next_rand(&s);
		uint64_t seq = jr_append(j, 1000 + i, 1, body, len);
		assert_int_equal(seq, i + 1);
		if (msgs)
			msgs[i].len = rp_msg_build(RP_BATCH, epoch, jr_last_batch(j), JR_HEADER_BYTES + len,
			                           msgs[i].bytes, MSG_BYTES);
	}
	jr_close(j);
}

static size_t fence(uint64_t epoch, uint8_t *out)
{
	uint64_t after = 0;
	return rp_msg_build(RP_FENCE, epoch, &after, 8, out, MSG_BYTES);
}

static int apply(struct rp_rule *st, const struct logmsg *m)
{
	struct jr_batch b;
	return rp_rule_apply(st, m->bytes, m->len, &b);
}

static void test_rule(void **state)
{
	(void)state;
	char dir[64], other[64];
	tmpdir(dir, sizeof dir);
	tmpdir(other, sizeof other);
	static struct logmsg e1[BATCHES], e2[BATCHES], alien[BATCHES];
	make_journal(dir, 10, seed, 1, e1);
	/* the same journal's batches 6.. written again by the next primary */
	for (uint32_t i = 0; i < 10; i++) {
		e2[i] = e1[i];
		uint64_t epoch = 2;
		memcpy(e2[i].bytes + 8, &epoch, 8);
	}
	make_journal(other, 10, seed + 1, 1, alien);

	struct rp_rule st = { 0 };
	struct logmsg f;
	struct jr_batch b;
	/* a batch before any fence belongs to no epoch: skipped */
	assert_int_equal(apply(&st, &e1[0]), RP_RULE_SKIP);
	f.len = fence(1, f.bytes);
	assert_int_equal(apply(&st, &f), RP_RULE_FENCE);
	assert_int_equal(st.epoch, 1);
	for (uint32_t i = 0; i < 5; i++) {
		assert_int_equal(rp_rule_apply(&st, e1[i].bytes, e1[i].len, &b), RP_RULE_COUNTED);
		assert_int_equal(b.seq, i + 1);
		assert_int_equal(b.time_ms, 1000 + i);
	}
	/* a repeat (a produce retried after an unknown outcome) */
	assert_int_equal(apply(&st, &e1[2]), RP_RULE_SKIP);
	assert_int_equal(apply(&st, &e1[4]), RP_RULE_SKIP);
	assert_int_equal(st.seq, 5);
	/* a gap and a foreign chain cannot be followed; nothing changes */
	struct rp_rule before = st;
	assert_int_equal(apply(&st, &e1[6]), RP_RULE_BROKEN);
	assert_int_equal(apply(&st, &alien[5]), RP_RULE_BROKEN);
	assert_memory_equal(&st, &before, sizeof st);
	/* damage in the body */
	struct logmsg bad = e1[5];
	bad.bytes[bad.len - 1] ^= 0x40;
	assert_int_equal(apply(&st, &bad), RP_RULE_BROKEN);
	/* not our message, a heartbeat: nothing */
	struct logmsg junk = { .len = 20 };
	memset(junk.bytes, 'x', junk.len);
	assert_int_equal(apply(&st, &junk), RP_RULE_SKIP);
	uint64_t now = 12345;
	struct logmsg hb;
	hb.len = rp_msg_build(RP_HEARTBEAT, 1, &now, 8, hb.bytes, MSG_BYTES);
	assert_int_equal(apply(&st, &hb), RP_RULE_SKIP);
	assert_memory_equal(&st, &before, sizeof st);
	/* the standby fences epoch 2: the old primary's batch 6 after it counts
	 * for nothing, the new primary's batch 6 does */
	f.len = fence(2, f.bytes);
	assert_int_equal(apply(&st, &f), RP_RULE_FENCE);
	assert_int_equal(apply(&st, &e1[5]), RP_RULE_SKIP);
	assert_int_equal(st.seq, 5);
	assert_int_equal(apply(&st, &e2[5]), RP_RULE_COUNTED);
	assert_int_equal(st.seq, 6);
	/* a second fence of the same epoch (two standbys promoted at once) and
	 * an older one raise nothing */
	assert_int_equal(apply(&st, &f), RP_RULE_SKIP);
	f.len = fence(1, f.bytes);
	assert_int_equal(apply(&st, &f), RP_RULE_SKIP);
	assert_int_equal(apply(&st, &e2[6]), RP_RULE_COUNTED);
	assert_int_equal(st.epoch, 2);
	assert_int_equal(st.seq, 7);
	rmdir_all(dir);
	rmdir_all(other);
}

static uint32_t count_segments(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	uint32_t n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL)
		n += strlen(e->d_name) == 24 && strcmp(e->d_name + 20, ".seg") == 0;
	closedir(d);
	return n;
}

static int seg_exists(const char *dir, uint64_t first)
{
	char p[600];
	snprintf(p, sizeof p, "%s/%020" PRIu64 ".seg", dir, first);
	return access(p, F_OK) == 0;
}

struct count_ctx {
	uint64_t last;
};

static int count_batch(void *arg, const struct jr_batch *b)
{
	struct count_ctx *c = arg;
	assert_int_equal(b->seq, c->last + 1);
	c->last = b->seq;
	return 0;
}

/* Reopens the journal: it must end at `want`, take batch want+1 and verify. */
static void reopen_check(const char *dir, uint64_t want)
{
	struct jr_config cfg = { .dir = dir, .segment_bytes = 32u << 10 };
	char err[512];
	struct count_ctx c = { 0 };
	struct journal *j = jr_open(&cfg, count_batch, &c, err, sizeof err);
	if (j == NULL)
		fail_msg("reopen after truncation: %s", err);
	assert_int_equal(c.last, want);
	assert_int_equal(jr_last_seq(j), want);
	assert_int_equal(jr_append(j, 99999, 1, "after", 5), want + 1);
	jr_close(j);
	c.last = 0;
	j = jr_open(&cfg, count_batch, &c, err, sizeof err);
	assert_non_null(j);
	assert_int_equal(c.last, want + 1);
	jr_close(j);
}

static void test_truncate(void **state)
{
	(void)state;
	char dir[64], err[512];
	/* in the middle of a segment */
	tmpdir(dir, sizeof dir);
	make_journal(dir, BATCHES, seed + 2, 1, NULL);
	uint32_t segs = count_segments(dir);
	assert_true(segs >= 3);
	uint64_t keep = 1 + next_rand(&seed) % (BATCHES - 2);
	print_message("truncate after %" PRIu64 " of %u batches in %u segments\n", keep, BATCHES, segs);
	assert_int_equal(rp_truncate_journal(dir, keep, err, sizeof err), 0);
	reopen_check(dir, keep);
	rmdir_all(dir);
	/* at a segment boundary: the segment that starts after the cut goes */
	tmpdir(dir, sizeof dir);
	make_journal(dir, BATCHES, seed + 3, 1, NULL);
	uint64_t first = 0;
	for (uint64_t s = 2; s <= BATCHES && first == 0; s++)
		if (seg_exists(dir, s))
			first = s;
	assert_true(first > 1);
	assert_int_equal(rp_truncate_journal(dir, first - 1, err, sizeof err), 0);
	assert_false(seg_exists(dir, first));
	reopen_check(dir, first - 1);
	rmdir_all(dir);
	/* nothing after the cut, and a cut to empty */
	tmpdir(dir, sizeof dir);
	make_journal(dir, 5, seed + 4, 1, NULL);
	assert_int_equal(rp_truncate_journal(dir, 5, err, sizeof err), 0);
	reopen_check(dir, 5);
	assert_int_equal(rp_truncate_journal(dir, 0, err, sizeof err), 0);
	reopen_check(dir, 0);
	rmdir_all(dir);
}

int main(void)
{
	const char *env = getenv("RP_TEST_SEED");
	seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	printf("replicate_test seed=%" PRIu64 " (RP_TEST_SEED to replay)\n", seed);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rule),
		cmocka_unit_test(test_truncate),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
