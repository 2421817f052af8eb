/* journal_test.c - unit tests of writer/journal.c: round trip, rotation,
 * torn tails at every byte of the last batch, damage detection (checksums,
 * chain, sequence), and the tailing reader.
 *
 * Batch contents are a pure function of (seed, seq, generation), so the
 * replay callback can check every byte without keeping copies. The seed is
 * printed; set JR_TEST_SEED to replay a run.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#include "writer/journal.h"

#define SEQ_MAX      4096u
#define ERR_BYTES    1024u
#define PATH_BYTES   512u

static uint64_t test_seed;

static uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

/* Body length of batch `seq` in generation `gen`, in [0, max_bytes]. */
static uint32_t body_len_of(uint64_t seq, uint8_t gen, uint32_t max_bytes)
{
	return (uint32_t)(mix64(test_seed ^ (seq * 1315423911ull) ^ ((uint64_t)gen << 56)) % (max_bytes + 1u));
}

/* Fills a body with non-zero bytes (so any zeroed byte is detectable). */
static void body_fill(uint64_t seq, uint8_t gen, uint8_t *out, uint32_t len)
{
	uint64_t state = mix64(test_seed + seq * 7919u + gen);
	for (uint32_t i = 0; i < len; i++) {
		if (i % 8 == 0)
			state = mix64(state);
		out[i] = (uint8_t)(1u + (uint8_t)(state >> (8 * (i % 8))) % 255u);
	}
}

static int64_t time_of(uint64_t seq) { return 1700000000000ll + (int64_t)seq * 7; }
static uint32_t count_of(uint64_t seq) { return (uint32_t)(seq % 97u); }

/* What the replay callback expects and what it saw. */
struct expect {
	uint8_t  gen[SEQ_MAX + 1];       /* generation of each seq's body */
	uint32_t len_max;                /* body length bound passed to body_len_of */
	uint32_t fixed_len[SEQ_MAX + 1]; /* when non-zero: this length instead */
	uint64_t offset[SEQ_MAX + 1];    /* seen offsets */
	char     file[SEQ_MAX + 1][PATH_BYTES];
	uint64_t count;
	uint64_t mismatches;
	int      fail_at_seq;            /* callback returns 7 at this seq */
	uint8_t  scratch[JR_BODY_BYTES_MAX];
};

static uint32_t expect_len(const struct expect *e, uint64_t seq)
{
	return e->fixed_len[seq] != 0 ? e->fixed_len[seq] - 1 : body_len_of(seq, e->gen[seq], e->len_max);
}

static int check_batch(struct expect *e, const struct jr_batch *b)
{
	uint64_t seq = e->count + 1;
	int ok = b->seq == seq && seq <= SEQ_MAX;
	if (ok) {
		uint32_t len = expect_len(e, seq);
		body_fill(seq, e->gen[seq], e->scratch, len);
		ok = b->body_len == len && b->time_ms == time_of(seq) && b->record_count == count_of(seq) &&
		     memcmp(b->body, e->scratch, len) == 0;
		e->offset[seq] = b->offset;
		snprintf(e->file[seq], PATH_BYTES, "%s", b->file);
	}
	/* A segment is named after its first batch. */
	const char *base = strrchr(b->file, '/');
	if (b->offset == 0 && (base == NULL || strtoull(base + 1, NULL, 10) != b->seq))
		ok = 0;
	e->mismatches += !ok;
	e->count++;
	return 0;
}

static int replay_cb(void *arg, const struct jr_batch *b)
{
	struct expect *e = arg;
	check_batch(e, b);
	return e->fail_at_seq != 0 && (uint64_t)e->fail_at_seq == b->seq ? 7 : 0;
}

static struct expect *expect_new(uint32_t len_max)
{
	struct expect *e = calloc(1, sizeof *e);
	assert_non_null(e);
	e->len_max = len_max;
	return e;
}

static void expect_restart(struct expect *e)
{
	e->count = 0;
	e->mismatches = 0;
}

static uint64_t append_seq(struct journal *j, struct expect *e, uint64_t seq)
{
	static uint8_t body[JR_BODY_BYTES_MAX];
	uint32_t len = expect_len(e, seq);
	body_fill(seq, e->gen[seq], body, len);
	return jr_append(j, time_of(seq), count_of(seq), body, len);
}

/* ---- directories and files ------------------------------------------- */

static void make_dir(char out[PATH_BYTES])
{
	snprintf(out, PATH_BYTES, "/tmp/jrtest.XXXXXX");
	assert_non_null(mkdtemp(out));
}

static void empty_dir(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	struct dirent *de;
	char path[PATH_BYTES * 2];
	while ((de = readdir(d)) != NULL) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
		assert_int_equal(unlink(path), 0);
	}
	closedir(d);
}

static void remove_dir(const char *dir)
{
	empty_dir(dir);
	assert_int_equal(rmdir(dir), 0);
}

static int count_segments(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	int n = 0;
	struct dirent *de;
	while ((de = readdir(d)) != NULL)
		n += strlen(de->d_name) == 24 && strcmp(de->d_name + 20, ".seg") == 0;
	closedir(d);
	return n;
}

static void seg_name(char out[PATH_BYTES], const char *dir, uint64_t first_seq)
{
	int n = snprintf(out, PATH_BYTES, "%s/%020" PRIu64 ".seg", dir, first_seq);
	assert_true(n > 0 && n < (int)PATH_BYTES);
}

static void file_rw(const char *path, uint64_t off, void *buf, size_t len, int write)
{
	int fd = open(path, write ? O_WRONLY : O_RDONLY);
	assert_true(fd >= 0);
	ssize_t n = write ? pwrite(fd, buf, len, (off_t)off) : pread(fd, buf, len, (off_t)off);
	assert_int_equal(n, (ssize_t)len);
	close(fd);
}

static void flip_bit(const char *path, uint64_t off, unsigned bit)
{
	uint8_t byte;
	file_rw(path, off, &byte, 1, 0);
	byte ^= (uint8_t)(1u << bit);
	file_rw(path, off, &byte, 1, 1);
}

/* Rewrites a header through `edit`, then re-seals its header_hash. */
static void reseal_header(const char *path, uint64_t off, void (*edit)(struct jr_header *h))
{
	struct jr_header h;
	file_rw(path, off, &h, sizeof h, 0);
	edit(&h);
	h.header_hash = XXH3_64bits(&h, 56);
	file_rw(path, off, &h, sizeof h, 1);
}

static struct journal *open_or_fail(const struct jr_config *cfg, struct expect *e)
{
	char err[ERR_BYTES] = "";
	if (e != NULL)
		expect_restart(e);
	struct journal *j = jr_open(cfg, e != NULL ? replay_cb : NULL, e, err, sizeof err);
	if (j == NULL)
		print_error("jr_open: %s\n", err);
	assert_non_null(j);
	return j;
}

/* Silences stderr (torn-tail lines) while a loop runs; returns the saved fd. */
static int stderr_to(const char *path)
{
	fflush(stderr);
	int saved = dup(2);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(saved >= 0 && fd >= 0);
	dup2(fd, 2);
	close(fd);
	return saved;
}

static void stderr_restore(int saved)
{
	fflush(stderr);
	dup2(saved, 2);
	close(saved);
}

/* ---- 1. round trip ----------------------------------------------------- */

static void test_round_trip(void **state)
{
	(void)state;
	char dir[PATH_BYTES];
	make_dir(dir);
	struct expect *e = expect_new(6000);
	for (uint64_t s = 1; s <= SEQ_MAX; s += 17)
		e->fixed_len[s] = 1;                 /* some empty bodies */
	struct jr_config cfg = { .dir = dir, .segment_bytes = 1u << 20 };
	struct journal *j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 0);
	assert_int_equal(jr_last_seq(j), 0);
	for (uint64_t s = 1; s <= 200; s++) {
		assert_int_equal(append_seq(j, e, s), s);
		assert_true(jr_last_sync_ns(j) > 0);
	}
	uint64_t bytes = jr_bytes(j);
	jr_close(j);

	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 200);
	assert_int_equal(e->mismatches, 0);
	assert_int_equal(jr_last_seq(j), 200);
	assert_int_equal(jr_bytes(j), bytes);
	for (uint64_t s = 201; s <= 260; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);

	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 260);
	assert_int_equal(e->mismatches, 0);
	jr_close(j);
	free(e);
	remove_dir(dir);
}

/* ---- 1b. pre-zeroed segments -------------------------------------------- */

/* With prezero the segments come from the background preparer: rotations
 * rename a zero-written file into place, replay sees every batch, and
 * nothing is left behind after close (the temp file is not a segment). */
static void test_prezero_rotation(void **state)
{
	(void)state;
	char dir[PATH_BYTES];
	make_dir(dir);
	struct expect *e = expect_new(4000);
	struct jr_config cfg = { .dir = dir, .segment_bytes = 64u << 10, .prezero = 1 };
	struct journal *j = open_or_fail(&cfg, e);
	for (uint64_t s = 1; s <= 300; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);
	int segments = count_segments(dir);
	assert_true(segments >= 5);
	char tmp[PATH_BYTES * 2];
	snprintf(tmp, sizeof tmp, "%s/.next-segment.tmp", dir);
	assert_int_equal(access(tmp, F_OK), -1);     /* removed at close */
	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 300);
	assert_int_equal(e->mismatches, 0);
	for (uint64_t s = 301; s <= 400; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);
	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 400);
	assert_int_equal(e->mismatches, 0);
	jr_close(j);
	/* a leftover temp file from a crash is neither a segment nor a problem */
	int fd = open(tmp, O_CREAT | O_WRONLY, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "garbage", 7), 7);
	close(fd);
	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 400);
	jr_close(j);
	free(e);
	remove_dir(dir);
}

/* ---- 2. rotation -------------------------------------------------------- */

static void test_rotation(void **state)
{
	(void)state;
	char dir[PATH_BYTES];
	make_dir(dir);
	struct expect *e = expect_new(4000);
	e->fixed_len[101] = 200000 + 1;          /* > segment_bytes */
	e->fixed_len[102] = 10 + 1;
	e->fixed_len[103] = JR_BODY_BYTES_MAX + 1;
	struct jr_config cfg = { .dir = dir, .segment_bytes = 64u << 10 };
	struct journal *j = open_or_fail(&cfg, e);
	for (uint64_t s = 1; s <= 130; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);
	assert_true(count_segments(dir) >= 5);

	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 130);
	assert_int_equal(e->mismatches, 0);
	/* The big batches have segments of their own, sized to fit. */
	char path[PATH_BYTES];
	seg_name(path, dir, 101);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true((uint64_t)st.st_size >= 200000 + JR_HEADER_BYTES);
	assert_string_equal(e->file[101], path);
	assert_int_equal(e->offset[101], 0);
	seg_name(path, dir, 103);
	assert_string_equal(e->file[103], path);
	assert_int_equal(e->offset[103], 0);
	for (uint64_t s = 131; s <= 140; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);
	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 140);
	assert_int_equal(e->mismatches, 0);
	jr_close(j);
	free(e);
	remove_dir(dir);
}

/* ---- 3. torn tails -------------------------------------------------------- */

#define TORN_N         5u
#define TORN_LAST_LEN  200u     /* body of the last batch: 64 + 200 = 264 bytes */
#define TORN_NEW_LEN   100u     /* body of the batch appended after the truncation */
#define TORN_GARBAGE_EXTRA 64u  /* garbage also lands past the torn batch */

/* Set by torn_build: what is left is not what a torn write leaves, so
 * jr_open must refuse it. Garbage over the body of a batch whose header
 * arrived is damage (a torn write leaves the pre-zeroed segment's zeros);
 * so is zeroing exactly one one-bit byte at the end (one flipped bit does
 * the same). */
static int torn_expect_damage;

/* Builds N batches, keeps the first k bytes of the last one and overwrites
 * the rest with zeros or garbage. Returns the last batch's offset. */
static uint64_t torn_build(const struct jr_config *cfg, struct expect *e, uint64_t k, int garbage)
{
	empty_dir(cfg->dir);
	struct journal *j = open_or_fail(cfg, NULL);
	uint64_t off = 0;
	for (uint64_t s = 1; s <= TORN_N; s++) {
		off = jr_bytes(j);
		assert_int_equal(append_seq(j, e, s), s);
	}
	jr_close(j);
	uint64_t total = JR_HEADER_BYTES + TORN_LAST_LEN;
	uint64_t end = garbage ? total + TORN_GARBAGE_EXTRA : total;
	uint8_t junk[JR_HEADER_BYTES + TORN_LAST_LEN + TORN_GARBAGE_EXTRA];
	uint8_t orig[JR_HEADER_BYTES + TORN_LAST_LEN];
	char path[PATH_BYTES];
	seg_name(path, cfg->dir, 1);
	file_rw(path, off + k, orig, total - k, 0);
	for (uint64_t i = 0; i < end - k; i++)
		junk[i] = garbage ? (uint8_t)mix64(test_seed ^ (k << 20) ^ i) : 0;
	/* Random garbage may repeat the byte it overwrites (1 in 256): then the
	 * batch would not be torn at k. The first torn byte always differs. */
	if (garbage && junk[0] == orig[0])
		junk[0] ^= 0x5a;
	/* Garbage that ends in a zero byte where the body ends would look like
	 * a lost last byte (a torn write); keep the test to one kind. */
	if (garbage && junk[total - 1 - k] == 0)
		junk[total - 1 - k] = 0xa5;
	file_rw(path, off + k, junk, end - k, 1);
	uint32_t nonzero = 0, bits = 0;
	for (uint64_t i = 0; i < total - k; i++) {
		nonzero += orig[i] != 0;
		bits += (uint32_t)__builtin_popcount(orig[i]);
	}
	torn_expect_damage = k >= JR_HEADER_BYTES && (garbage || (nonzero == 1 && bits == 1));
	return off;
}

/* jr_open refuses the last batch as damage, naming its file and offset. */
static void torn_refused(const struct jr_config *cfg, uint64_t off)
{
	char err[ERR_BYTES] = "", where[PATH_BYTES * 2], path[PATH_BYTES];
	seg_name(path, cfg->dir, 1);
	assert_null(jr_open(cfg, NULL, NULL, err, sizeof err));
	snprintf(where, sizeof where, "%s offset %" PRIu64 ":", path, off);
	if (strstr(err, where) == NULL || strstr(err, "damage, not a torn write") == NULL)
		print_error("got '%s', want '%s'\n", err, where);
	assert_non_null(strstr(err, where));
	assert_non_null(strstr(err, "damage, not a torn write"));
}

static void torn_check(const struct jr_config *cfg, struct expect *e, uint64_t off, uint64_t k, int garbage)
{
	e->gen[TORN_N] = 0;
	struct journal *j = open_or_fail(cfg, e);
	if (e->count != TORN_N - 1 || e->mismatches != 0)
		print_error("torn k=%" PRIu64 " garbage=%d: %" PRIu64 " batches\n", k, garbage, e->count);
	assert_int_equal(e->count, TORN_N - 1);
	assert_int_equal(e->mismatches, 0);
	assert_int_equal(jr_last_seq(j), TORN_N - 1);
	assert_int_equal(jr_bytes(j), off);
	e->gen[TORN_N] = 1;
	e->fixed_len[TORN_N] = TORN_NEW_LEN + 1;
	assert_int_equal(append_seq(j, e, TORN_N), TORN_N);
	jr_close(j);
	j = open_or_fail(cfg, e);
	assert_int_equal(e->count, TORN_N);
	assert_int_equal(e->mismatches, 0);
	jr_close(j);
	/* The torn bytes past the new batch were zeroed. */
	uint8_t rest[JR_HEADER_BYTES + TORN_LAST_LEN + TORN_GARBAGE_EXTRA];
	uint64_t from = off + JR_HEADER_BYTES + TORN_NEW_LEN;
	uint64_t len = off + JR_HEADER_BYTES + TORN_LAST_LEN + TORN_GARBAGE_EXTRA - from;
	char path[PATH_BYTES];
	seg_name(path, cfg->dir, 1);
	file_rw(path, from, rest, len, 0);
	for (uint64_t i = 0; i < len; i++)
		assert_int_equal(rest[i], 0);
	e->fixed_len[TORN_N] = TORN_LAST_LEN + 1;
	e->gen[TORN_N] = 0;
}

static void test_torn_tail_every_offset(void **state)
{
	(void)state;
	char dir[PATH_BYTES];
	make_dir(dir);
	struct expect *e = expect_new(300);
	e->fixed_len[TORN_N] = TORN_LAST_LEN + 1;
	struct jr_config cfg = { .dir = dir, .segment_bytes = 64u << 10, .no_sync = 1 };
	int saved = stderr_to("/dev/null");
	for (int garbage = 0; garbage <= 1; garbage++) {
		for (uint64_t k = 1; k < JR_HEADER_BYTES + TORN_LAST_LEN; k++) {
			uint64_t off = torn_build(&cfg, e, k, garbage);
			if (torn_expect_damage)
				torn_refused(&cfg, off);
			else
				torn_check(&cfg, e, off, k, garbage);
		}
	}
	stderr_restore(saved);

	/* The one line it logs. */
	char log_path[PATH_BYTES];
	assert_true(snprintf(log_path, sizeof log_path, "%s.log", dir) < (int)sizeof log_path);
	uint64_t off = torn_build(&cfg, e, 100, 0);
	saved = stderr_to(log_path);
	expect_restart(e);
	struct journal *j = jr_open(&cfg, replay_cb, e, NULL, 0);
	stderr_restore(saved);
	assert_non_null(j);
	jr_close(j);
	char line[PATH_BYTES * 2] = "", want[PATH_BYTES * 2], seg[PATH_BYTES];
	FILE *f = fopen(log_path, "r");
	assert_non_null(f);
	assert_non_null(fgets(line, sizeof line, f));
	fclose(f);
	unlink(log_path);
	seg_name(seg, dir, 1);
	snprintf(want, sizeof want, "journal: torn tail in %s at offset %" PRIu64 " (104 bytes) truncated\n", seg, off);
	assert_string_equal(line, want);
	free(e);
	remove_dir(dir);
}

/* ---- 4. damage ------------------------------------------------------------ */

#define DMG_N 10u

static void dmg_build(const struct jr_config *cfg, struct expect *e, uint64_t n)
{
	empty_dir(cfg->dir);
	struct journal *j = open_or_fail(cfg, NULL);
	for (uint64_t s = 1; s <= n; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);
	j = open_or_fail(cfg, e);     /* records every batch's file and offset */
	assert_int_equal(e->count, n);
	jr_close(j);
}

/* jr_open must fail, naming the batch's file and offset and `what`. */
static void dmg_expect_fail(const struct jr_config *cfg, struct expect *e, uint64_t seq, const char *what)
{
	char err[ERR_BYTES] = "", where[PATH_BYTES * 2];
	struct journal *j = jr_open(cfg, NULL, NULL, err, sizeof err);
	assert_null(j);
	snprintf(where, sizeof where, "%s offset %" PRIu64 ":", e->file[seq], e->offset[seq]);
	if (strstr(err, where) == NULL || strstr(err, what) == NULL)
		print_error("got '%s', want '%s' and '%s'\n", err, where, what);
	assert_non_null(strstr(err, where));
	assert_non_null(strstr(err, what));
}

static void edit_prev(struct jr_header *h) { h->prev_sha256[3] ^= 0x10; }
static void edit_seq(struct jr_header *h) { h->seq += 1; }

static void test_damage(void **state)
{
	(void)state;
	char dir[PATH_BYTES];
	make_dir(dir);
	struct expect *e = expect_new(400);
	for (uint64_t s = 1; s <= DMG_N; s++)
		e->fixed_len[s] = 300 + 1;
	struct jr_config cfg = { .dir = dir, .segment_bytes = 1u << 20, .no_sync = 1 };

	dmg_build(&cfg, e, DMG_N);
	flip_bit(e->file[3], e->offset[3] + JR_HEADER_BYTES + 150, 2);
	dmg_expect_fail(&cfg, e, 3, "body checksum mismatch");

	dmg_build(&cfg, e, DMG_N);
	flip_bit(e->file[5], e->offset[5] + 20, 0);
	dmg_expect_fail(&cfg, e, 5, "bad header checksum");

	dmg_build(&cfg, e, DMG_N);
	reseal_header(e->file[6], e->offset[6], edit_prev);
	dmg_expect_fail(&cfg, e, 6, "broken chain");

	dmg_build(&cfg, e, DMG_N);
	reseal_header(e->file[6], e->offset[6], edit_seq);
	dmg_expect_fail(&cfg, e, 6, "sequence gap (expected 6, found 7)");

	/* A zeroed header with valid batches after it is not the end. */
	dmg_build(&cfg, e, DMG_N);
	uint8_t zeros[JR_HEADER_BYTES] = { 0 };
	file_rw(e->file[4], e->offset[4], zeros, sizeof zeros, 1);
	dmg_expect_fail(&cfg, e, 4, "valid batch after the end");

	/* The replay callback can stop start-up. */
	dmg_build(&cfg, e, DMG_N);
	e->fail_at_seq = 8;
	char err[ERR_BYTES] = "", where[PATH_BYTES * 2];
	expect_restart(e);
	assert_null(jr_open(&cfg, replay_cb, e, err, sizeof err));
	e->fail_at_seq = 0;
	snprintf(where, sizeof where, "%s offset %" PRIu64 ":", e->file[8], e->offset[8]);
	assert_non_null(strstr(err, where));

	/* A second writer on the same directory is refused. */
	struct journal *j = open_or_fail(&cfg, NULL);
	assert_null(jr_open(&cfg, NULL, NULL, err, sizeof err));
	assert_non_null(strstr(err, "in use"));
	jr_close(j);
	free(e);
	remove_dir(dir);
}

/* Damage in a segment that is not the last is never a torn tail. */
static void test_damage_segments(void **state)
{
	(void)state;
	char dir[PATH_BYTES];
	make_dir(dir);
	struct expect *e = expect_new(400);
	for (uint64_t s = 1; s <= DMG_N; s++)
		e->fixed_len[s] = 1000 + 1;          /* 3 batches per 4 KiB segment */
	struct jr_config cfg = { .dir = dir, .segment_bytes = 4096, .no_sync = 1 };

	dmg_build(&cfg, e, DMG_N);
	assert_string_equal(e->file[3], e->file[1]);
	assert_string_not_equal(e->file[4], e->file[3]);
	flip_bit(e->file[3], e->offset[3] + JR_HEADER_BYTES + 999, 7);
	dmg_expect_fail(&cfg, e, 3, "body checksum mismatch");

	dmg_build(&cfg, e, DMG_N);
	flip_bit(e->file[3], e->offset[3] + 8, 1);
	dmg_expect_fail(&cfg, e, 3, "bad header checksum");

	/* A missing segment is a sequence gap named at the next one. */
	dmg_build(&cfg, e, DMG_N);
	assert_int_equal(unlink(e->file[4]), 0);
	char err[ERR_BYTES] = "";
	assert_null(jr_open(&cfg, NULL, NULL, err, sizeof err));
	assert_non_null(strstr(err, "sequence gap (expected 4, found 7)"));
	assert_non_null(strstr(err, e->file[7]));

	/* A segment whose name is not its first seq. */
	dmg_build(&cfg, e, DMG_N);
	char renamed[PATH_BYTES];
	seg_name(renamed, dir, 8);
	assert_int_equal(rename(e->file[7], renamed), 0);
	assert_null(jr_open(&cfg, NULL, NULL, err, sizeof err));
	assert_non_null(strstr(err, "sequence gap (expected 7, found 8)"));
	assert_non_null(strstr(err, renamed));

	/* The same damage in the last segment's last batch is refused too: the
	 * batch is complete, so it may have been acknowledged (tests/sim found it
	 * truncated as a torn tail). In the body, in the header, at the end. */
	dmg_build(&cfg, e, DMG_N);
	flip_bit(e->file[DMG_N], e->offset[DMG_N] + JR_HEADER_BYTES + 10, 3);
	dmg_expect_fail(&cfg, e, DMG_N, "damage, not a torn write");
	dmg_build(&cfg, e, DMG_N);
	flip_bit(e->file[DMG_N], e->offset[DMG_N] + 30, 6);
	dmg_expect_fail(&cfg, e, DMG_N, "header checksum is bad");
	dmg_build(&cfg, e, DMG_N);
	flip_bit(e->file[DMG_N], e->offset[DMG_N] + JR_HEADER_BYTES + 999, 0);   /* its last byte */
	dmg_expect_fail(&cfg, e, DMG_N, "damage, not a torn write");

	/* A torn write of it (its last sector never arrived: zeros) is a torn tail. */
	dmg_build(&cfg, e, DMG_N);
	uint8_t zeros[16] = { 0 };
	file_rw(e->file[DMG_N], e->offset[DMG_N] + JR_HEADER_BYTES + 1000 - sizeof zeros, zeros, sizeof zeros, 1);
	int saved = stderr_to("/dev/null");
	struct journal *j = open_or_fail(&cfg, e);
	stderr_restore(saved);
	assert_int_equal(e->count, DMG_N - 1);
	assert_int_equal(e->mismatches, 0);
	jr_close(j);
	free(e);
	remove_dir(dir);
}

static void reader_expect(struct jr_reader *r, struct expect *e, uint64_t seq_max, uint64_t want_seq)
{
	struct jr_batch b;
	char err[ERR_BYTES] = "";
	int rc = jr_reader_next(r, seq_max, &b, err, sizeof err);
	if (rc < 0)
		print_error("reader: %s\n", err);
	if (want_seq == 0) {
		assert_int_equal(rc, 0);
		return;
	}
	assert_int_equal(rc, 1);
	assert_int_equal(b.seq, want_seq);
	e->count = want_seq - 1;
	e->mismatches = 0;
	check_batch(e, &b);
	assert_int_equal(e->mismatches, 0);
}

/* A crash right after a segment was created, before or during its first
 * batch: the empty or torn segment is where appending resumes. */
static void test_crash_shapes(void **state)
{
	(void)state;
	char dir[PATH_BYTES], path[PATH_BYTES], err[ERR_BYTES] = "";
	make_dir(dir);
	struct expect *e = expect_new(400);
	e->fixed_len[4] = 10000 + 1;             /* bigger than a segment */
	struct jr_config cfg = { .dir = dir, .segment_bytes = 4096, .no_sync = 1 };
	struct journal *j = open_or_fail(&cfg, NULL);
	for (uint64_t s = 1; s <= 3; s++)
		assert_int_equal(append_seq(j, e, s), s);
	jr_close(j);
	seg_name(path, dir, 4);
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL, 0644);   /* created, never sized */
	assert_true(fd >= 0);
	close(fd);
	struct jr_reader *r = jr_reader_open(dir, err, sizeof err);
	assert_non_null(r);
	for (uint64_t s = 1; s <= 3; s++)
		reader_expect(r, e, UINT64_MAX, s);
	reader_expect(r, e, UINT64_MAX, 0);

	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 3);
	assert_int_equal(append_seq(j, e, 4), 4);  /* grows the empty segment */
	assert_int_equal(append_seq(j, e, 5), 5);
	jr_close(j);
	reader_expect(r, e, UINT64_MAX, 4);
	reader_expect(r, e, UINT64_MAX, 5);
	reader_expect(r, e, UINT64_MAX, 0);
	jr_reader_close(r);
	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 5);
	assert_int_equal(e->mismatches, 0);
	assert_string_equal(e->file[4], path);
	jr_close(j);

	/* Torn first batch of the newest segment (batch 5, offset 0): the
	 * second half of its header never arrived. */
	seg_name(path, dir, 5);
	assert_string_equal(e->file[5], path);
	uint8_t half[JR_HEADER_BYTES / 2] = { 0 };
	file_rw(path, JR_HEADER_BYTES / 2, half, sizeof half, 1);
	int saved = stderr_to("/dev/null");
	j = open_or_fail(&cfg, e);
	stderr_restore(saved);
	assert_int_equal(e->count, 4);
	e->gen[5] = 1;
	assert_int_equal(append_seq(j, e, 5), 5);
	jr_close(j);
	j = open_or_fail(&cfg, e);
	assert_int_equal(e->count, 5);
	assert_int_equal(e->mismatches, 0);
	assert_string_equal(e->file[5], path);
	jr_close(j);
	free(e);
	remove_dir(dir);
}

/* ---- 5. reader ------------------------------------------------------------ */

static void test_reader(void **state)
{
	(void)state;
	char dir[PATH_BYTES], err[ERR_BYTES] = "";
	make_dir(dir);
	struct expect *e = expect_new(3000);
	struct jr_config cfg = { .dir = dir, .segment_bytes = 16u << 10, .no_sync = 1 };
	struct journal *j = open_or_fail(&cfg, NULL);
	struct jr_reader *r = jr_reader_open(dir, err, sizeof err);
	assert_non_null(r);
	reader_expect(r, e, UINT64_MAX, 0);

	/* Tail while appending; the reader never passes seq_max. */
	uint64_t next = 1;
	for (uint64_t s = 1; s <= 300; s++) {
		assert_int_equal(append_seq(j, e, s), s);
		uint64_t seq_max = s - s % 3;
		while (next <= seq_max)
			reader_expect(r, e, seq_max, next++);
		reader_expect(r, e, seq_max, 0);
	}
	while (next <= 300)
		reader_expect(r, e, 300, next++);
	reader_expect(r, e, UINT64_MAX, 0);
	assert_true(count_segments(dir) >= 10);

	/* Seek: to the start, mid-segment, across a segment boundary, the end. */
	assert_int_equal(jr_reader_seek(r, 0), 0);
	reader_expect(r, e, 300, 1);
	assert_int_equal(jr_reader_seek(r, 150), 0);
	reader_expect(r, e, 300, 151);
	reader_expect(r, e, 300, 152);
	struct jr_batch b;
	uint64_t boundary = 0;
	for (uint64_t s = 2; s <= 300 && boundary == 0; s++) {
		assert_int_equal(jr_reader_seek(r, s - 1), 0);
		assert_int_equal(jr_reader_next(r, 300, &b, err, sizeof err), 1);
		assert_int_equal(b.seq, s);
		if (b.offset == 0 && s > 200)
			boundary = s;
	}
	assert_true(boundary > 0);
	assert_int_equal(jr_reader_seek(r, boundary - 1), 0);
	reader_expect(r, e, 300, boundary);
	assert_int_equal(jr_reader_seek(r, boundary), 0);
	reader_expect(r, e, 300, boundary + 1);
	assert_int_equal(jr_reader_seek(r, 299), 0);
	reader_expect(r, e, UINT64_MAX, 300);
	reader_expect(r, e, UINT64_MAX, 0);

	/* A write in progress at the tail (garbage) is "not yet", not damage. */
	uint64_t tail_off = 0;
	char tail_file[PATH_BYTES];
	{
		assert_int_equal(jr_reader_seek(r, 299), 0);
		assert_int_equal(jr_reader_next(r, 300, &b, err, sizeof err), 1);
		tail_off = b.offset + ((JR_HEADER_BYTES + b.body_len + 7u) & ~7u);
		snprintf(tail_file, sizeof tail_file, "%s", b.file);
	}
	uint8_t junk[100];
	memset(junk, 0x5a, sizeof junk);
	file_rw(tail_file, tail_off, junk, sizeof junk, 1);
	reader_expect(r, e, UINT64_MAX, 0);
	uint8_t zeros[100] = { 0 };
	file_rw(tail_file, tail_off, zeros, sizeof zeros, 1);

	/* New appends are picked up after a seek to the end. */
	assert_int_equal(jr_reader_seek(r, 300), 0);
	reader_expect(r, e, UINT64_MAX, 0);
	for (uint64_t s = 301; s <= 320; s++)
		assert_int_equal(append_seq(j, e, s), s);
	for (uint64_t s = 301; s <= 320; s++)
		reader_expect(r, e, UINT64_MAX, s);
	reader_expect(r, e, UINT64_MAX, 0);
	jr_close(j);

	/* Damage in the last batch of an earlier segment: -1, file named. */
	uint64_t victim = 0;
	for (uint64_t s = 2; s < 300 && victim == 0; s++)
		if (strcmp(e->file[s], e->file[s + 1]) != 0 && e->fixed_len[s] == 0 && expect_len(e, s) > 0)
			victim = s;
	assert_true(victim > 0);
	assert_int_equal(jr_reader_seek(r, victim - 1), 0);
	flip_bit(e->file[victim], e->offset[victim] + JR_HEADER_BYTES, 4);
	char where[PATH_BYTES * 2];
	snprintf(where, sizeof where, "%s offset %" PRIu64 ": body checksum mismatch", e->file[victim], e->offset[victim]);
	assert_int_equal(jr_reader_next(r, 300, &b, err, sizeof err), -1);
	assert_non_null(strstr(err, where));
	/* And in the middle of a segment. */
	assert_int_equal(jr_reader_seek(r, 0), 0);
	flip_bit(e->file[victim - 1], e->offset[victim - 1] + 30, 4);
	int rc = 1;
	for (uint64_t i = 0; i < victim && rc == 1; i++)
		rc = jr_reader_next(r, 300, &b, err, sizeof err);
	assert_int_equal(rc, -1);
	assert_non_null(strstr(err, "bad header checksum"));
	jr_reader_close(r);
	free(e);
	remove_dir(dir);
}

int main(void)
{
	const char *env = getenv("JR_TEST_SEED");
	test_seed = env != NULL ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	printf("journal_test seed=%" PRIu64 " (JR_TEST_SEED to replay)\n", test_seed);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_prezero_rotation),
		cmocka_unit_test(test_rotation),
		cmocka_unit_test(test_torn_tail_every_offset),
		cmocka_unit_test(test_damage),
		cmocka_unit_test(test_damage_segments),
		cmocka_unit_test(test_crash_shapes),
		cmocka_unit_test(test_reader),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
