/* test_ckpt.c - model checkpoints (writer/sink/sink_ckpt.h), no servers
 * needed: a checkpoint reads back as the model it was written from (every
 * SKU, reservation and order), and the loaded model goes on exactly as the
 * original; a flipped bit, a truncated or extended file, another format
 * version or another keep_terminal rule is refused; a crash between the
 * temporary file and the rename leaves the previous checkpoint whole. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include "sink_testlib.h"
#include "writer/sink/sink_ckpt.h"

#define RECS_MAX 64

static uint8_t *slurp(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	CHECK(f != NULL);
	struct stat st;
	CHECK(fstat(fileno(f), &st) == 0);
	uint8_t *p = malloc((size_t)st.st_size + 1);
	CHECK(p && fread(p, 1, (size_t)st.st_size, f) == (size_t)st.st_size);
	fclose(f);
	*len = (size_t)st.st_size;
	return p;
}

static void spill(const char *path, const uint8_t *p, size_t len)
{
	FILE *f = fopen(path, "wb");
	CHECK(f && fwrite(p, 1, len, f) == len && fclose(f) == 0);
}

/* Every entry of a is in b, equal byte for byte, and the counts match. */
static int tables_equal(const struct sm_tab *a, const struct sm_tab *b)
{
	if (a->count != b->count || a->elem_bytes != b->elem_bytes)
		return 0;
	for (size_t i = 0; i < a->cap; i++) {
		const uint8_t *e = sm_tab_slot(a, i);
		uint64_t key;
		if (!e)
			continue;
		memcpy(&key, e, sizeof key);
		const uint8_t *f = sm_tab_find(b, key);
		if (!f || memcmp(e, f, a->elem_bytes) != 0)
			return 0;
	}
	return 1;
}

static int models_equal(const struct sink_model *a, const struct sink_model *b)
{
	return a->sku_count == b->sku_count && a->last_seq == b->last_seq && a->records == b->records &&
	       a->anomalies == b->anomalies && strcmp(a->anomaly, b->anomaly) == 0 &&
	       a->keep_terminal == b->keep_terminal &&
	       (a->sku_count == 0 || memcmp(a->skus, b->skus, a->sku_count * sizeof *a->skus) == 0) &&
	       tables_equal(&a->res, &b->res) && tables_equal(&a->orders, &b->orders);
}

/* Applies generated batches until seq `upto`. */
static void advance(struct gen *g, struct sink_model *m, uint64_t upto)
{
	struct fs_cmd recs[RECS_MAX];
	for (uint64_t seq = m->last_seq + 1; seq <= upto; seq++) {
		uint32_t n = gen_batch(g, recs, RECS_MAX);
		CHECK(sm_apply_batch(m, seq, gen_time_ms(g), recs, n, NULL) == 1);
	}
	CHECK(m->last_seq == upto);
}

/* Expects `path` refused (-1) with err mentioning `why` (NULL: any). */
static void expect_refused(const char *path, const char *why, const char *what)
{
	struct sink_model m;
	char err[200] = "";
	int rc = sink_ckpt_read(path, &m, 0, err, sizeof err);
	if (rc != -1 || (why && !strstr(err, why))) {
		fprintf(stderr, "%s: read returned %d (%s), want -1 (%s)\n", what, rc, err, why ? why : "any");
		exit(1);
	}
	CHECK(m.skus == NULL && m.res.slots == NULL && m.orders.slots == NULL);   /* left zeroed */
}

static void test_round_trip(const char *path)
{
	struct gen *g = gen_new(11, 5, 400, 30);
	struct gen *g2 = gen_new(11, 5, 400, 30);   /* the same workload, for the loaded copy */
	struct sink_model m, back;
	CHECK(sm_init(&m, 0) == 0);
	advance(g, &m, 3000);
	while (m.orders.count == 0 || m.res.count < 10)   /* live holds and a pending order to save */
		advance(g, &m, m.last_seq + 1);
	CHECK(m.sku_count == 5 && m.anomalies == 0);
	char err[200] = "";
	CHECK(sink_ckpt_read(path, &back, 0, err, sizeof err) == 0);   /* none yet */
	CHECK(sink_ckpt_write(path, &m, err, sizeof err) == 0);
	CHECK(access(path, F_OK) == 0);
	char tmp[SINK_CKPT_PATH_BYTES + 8];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	CHECK(access(tmp, F_OK) != 0);   /* renamed away */
	CHECK(sink_ckpt_read(path, &back, 0, err, sizeof err) == 1);
	CHECK(models_equal(&m, &back));
	printf("round trip: seq %llu, %u skus, %zu reservations, %zu orders\n", (unsigned long long)m.last_seq,
	       m.sku_count, m.res.count, m.orders.count);
	/* The loaded model goes on exactly as the original (the copy's tables
	 * were sized anew: lookups, inserts and removals must still agree). */
	struct fs_cmd recs[RECS_MAX];
	for (uint64_t seq = 1; seq <= m.last_seq; seq++)
		(void)gen_batch(g2, recs, RECS_MAX);
	uint64_t upto = m.last_seq + 2000;
	advance(g, &m, upto);
	advance(g2, &back, upto);
	CHECK(back.anomalies == 0 && models_equal(&m, &back));
	/* An empty model round-trips too. */
	struct sink_model empty, empty_back;
	CHECK(sm_init(&empty, 0) == 0);
	CHECK(sink_ckpt_write(path, &empty, err, sizeof err) == 0);
	CHECK(sink_ckpt_read(path, &empty_back, 0, err, sizeof err) == 1);
	CHECK(models_equal(&empty, &empty_back));
	sm_free(&empty);
	sm_free(&empty_back);
	sm_free(&m);
	sm_free(&back);
	gen_free(g);
	gen_free(g2);
}

static void test_damage(const char *path)
{
	struct gen *g = gen_new(5, 3, 200, 10);
	struct sink_model m;
	CHECK(sm_init(&m, 0) == 0);
	advance(g, &m, 1500);
	char err[200] = "";
	CHECK(sink_ckpt_write(path, &m, err, sizeof err) == 0);
	size_t len;
	uint8_t *good = slurp(path, &len);
	CHECK(len > sizeof(struct sink_ckpt_header) + 200);
	/* A flipped bit anywhere: header, SKUs, tables, the checksum itself. */
	size_t step = len / 257 + 1, tried = 0;
	for (size_t off = 0; off < len; off += step, tried++) {
		for (int bit = 0; bit < 8; bit += 3) {
			good[off] ^= (uint8_t)(1u << bit);
			spill(path, good, len);
			char what[64];
			snprintf(what, sizeof what, "bit %d of byte %zu flipped", bit, off);
			expect_refused(path, NULL, what);
			good[off] ^= (uint8_t)(1u << bit);
		}
	}
	good[len - 1] ^= 0x80;   /* the last byte of the checksum */
	spill(path, good, len);
	expect_refused(path, "checksum", "last byte flipped");
	good[len - 1] ^= 0x80;
	/* Truncated anywhere, or extended. */
	const size_t cuts[] = {0, 1, 63, 64, 64 + 160, len / 2, len - 8, len - 1};
	for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
		spill(path, good, cuts[i]);
		char what[64];
		snprintf(what, sizeof what, "truncated to %zu of %zu bytes", cuts[i], len);
		expect_refused(path, NULL, what);
	}
	uint8_t *longer = malloc(len + 1);
	CHECK(longer);
	memcpy(longer, good, len);
	longer[len] = 0;
	spill(path, longer, len + 1);
	expect_refused(path, "length", "one byte appended");
	free(longer);
	/* Another format version, with a checksum that matches: refused for
	 * the version, not by accident. */
	struct sink_ckpt_header h;
	memcpy(&h, good, sizeof h);
	h.version = SINK_CKPT_VERSION + 1;
	memcpy(good, &h, sizeof h);
	uint64_t sum = XXH3_64bits(good, len - 8);
	memcpy(good + len - 8, &sum, sizeof sum);
	spill(path, good, len);
	expect_refused(path, "version", "another format version");
	h.version = SINK_CKPT_VERSION;
	memcpy(good, &h, sizeof h);
	sum = XXH3_64bits(good, len - 8);
	memcpy(good + len - 8, &sum, sizeof sum);
	spill(path, good, len);   /* restored: readable again, but not as a keep_terminal model */
	struct sink_model back;
	CHECK(sink_ckpt_read(path, &back, 0, err, sizeof err) == 1 && models_equal(&m, &back));
	sm_free(&back);
	CHECK(sink_ckpt_read(path, &back, 1, err, sizeof err) == -1 && strstr(err, "keep_terminal"));
	printf("damage: %zu offsets x 3 bits, 8 truncations, an extension and a version refused\n", tried);
	free(good);
	sm_free(&m);
	gen_free(g);
}

static void test_crash_before_rename(const char *path)
{
	struct gen *g = gen_new(3, 4, 300, 0);
	struct sink_model m, a, back;
	char err[200] = "";
	CHECK(sm_init(&m, 0) == 0);
	advance(g, &m, 800);
	CHECK(sink_ckpt_write(path, &m, err, sizeof err) == 0);
	CHECK(sink_ckpt_read(path, &a, 0, err, sizeof err) == 1);   /* checkpoint A */
	advance(g, &m, 1600);
	/* The new one is written and synced, then the process dies. */
	CHECK(sink_ckpt_write_tmp(path, &m, err, sizeof err) == 0);
	CHECK(sink_ckpt_read(path, &back, 0, err, sizeof err) == 1);
	CHECK(back.last_seq == 800 && models_equal(&a, &back));
	sm_free(&back);
	/* Or dies mid-write: a torn temporary file changes nothing either. */
	char tmp[SINK_CKPT_PATH_BYTES + 8];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	CHECK(truncate(tmp, 100) == 0);
	CHECK(sink_ckpt_read(path, &back, 0, err, sizeof err) == 1 && models_equal(&a, &back));
	sm_free(&back);
	/* The next attempt overwrites the leftover and commits. */
	CHECK(sink_ckpt_write(path, &m, err, sizeof err) == 0);
	CHECK(sink_ckpt_read(path, &back, 0, err, sizeof err) == 1);
	CHECK(back.last_seq == 1600 && models_equal(&m, &back));
	CHECK(access(tmp, F_OK) != 0);
	printf("crash between write and rename: the previous checkpoint (seq 800) stays whole\n");
	sm_free(&back);
	sm_free(&a);
	sm_free(&m);
	gen_free(g);
}

int main(void)
{
	char *dir = test_tmpdir("ckpt");
	char path[SINK_CKPT_PATH_BYTES];
	CHECK(sink_ckpt_path(path, sizeof path, dir, "redis", "flashsaled") == 0);
	CHECK(strstr(path, "/sink-redis-flashsaled.model") != NULL);
	test_round_trip(path);
	test_damage(path);
	test_crash_before_rename(path);
	test_rmdir(dir);
	free(dir);
	printf("sinks_ckpt: ok\n");
	return 0;
}
