/* flashsale_journal.c - offline journal tool: verify, dump, stats.
 *
 *   flashsale-journal verify DIR   checksums, chain, sequence, AND a pure
 *                                  replay through the decide step that must
 *                                  regenerate every batch byte for byte and
 *                                  conserve units in every SKU
 *   flashsale-journal dump DIR     one line per batch and per record
 *   flashsale-journal stats DIR    record counts by type and the final
 *                                  counters per SKU from a pure replay
 *   flashsale-journal draw DIR SKU re-derive a waiting room's draw from the
 *                                  journal alone: the revealed seed must
 *                                  match the commitment journaled at the
 *                                  sale's creation, and the admissions must
 *                                  follow the shuffle that seed gives
 *
 * DIR is the journal directory (DATA_DIR/journal) or the data dir itself.
 * When the journal no longer starts at batch 1 (segments before a snapshot
 * were deleted or archived), verify/stats start from the newest valid
 * snapshot in DATA_DIR/snapshots (its checksums verified, the state loaded)
 * and replay the tail after it.
 * Exit status: 0 when the journal is sound, 1 on damage or divergence, 2 on
 * bad usage.
 */
#include "common/fs_cmd.h"
#include "writer/alloc.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/draw.h"
#include "writer/snapshot.h"

#include <dirent.h>
#include <errno.h>

#include <openssl/sha.h>

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage[] =
"usage: flashsale-journal verify|dump|stats DIR\n"
"  verify  check checksums, the hash chain and sequence, and replay every batch through the\n"
"          decide step: it must regenerate each batch byte for byte and conserve every SKU\n"
"  dump    print every batch and record\n"
"  stats   record counts by type and the final counters per SKU (pure replay)\n"
"  draw DIR SKU  verify a waiting room's draw: seed vs commitment, admissions vs shuffle\n"
"DIR is a journal directory or a data dir containing journal/; a journal that no longer starts\n"
"at batch 1 is checked from the newest valid snapshot in DIR/snapshots plus the tail after it.\n";

struct replay {
	struct wr_state *st;
	struct fs_cmd *cmds;
	uint32_t cmd_cap;
	struct wr_batch_out out;
	uint64_t batches, records;
	uint64_t by_type[FS_CMD_TYPE_COUNT];
};

static int replay_init(struct replay *r, const struct wr_limits *lim)
{
	struct wr_limits l;
	wr_limits_default(&l);
	if (lim != NULL)
		l = *lim;
	r->st = wr_state_new(&l);
	r->cmd_cap = WR_REC_COUNT_MAX(JR_BODY_BYTES_MAX);
	r->cmds = calloc(r->cmd_cap, sizeof *r->cmds);
	int out = wr_batch_out_alloc(&r->out, r->cmd_cap, wr_replay_records_cap(JR_BODY_BYTES_MAX, l.sku_count_max),
	                             l.sku_count_max);
	return r->st && r->cmds && out == 0 ? 0 : -1;
}

/* Frees what replay_init allocated (NULL-safe: also after a failed init). */
static void replay_free(struct replay *r)
{
	wr_state_free(r->st);
	free(r->cmds);
	wr_batch_out_free(&r->out);
	r->st = NULL;
	r->cmds = NULL;
	memset(&r->out, 0, sizeof r->out);
}

/* Decodes one batch into r->cmds; returns the count, or -1 if malformed. */
static int decode(struct replay *r, const struct jr_batch *b)
{
	return wr_rec_decode_batch(b->body, b->body_len, b->record_count, r->cmds, r->cmd_cap);
}

static void print_record(const struct fs_cmd *c)
{
	/* A checkout's text is the payment token: kept in the journal only so a
	 * charge in flight at a crash can be retried; never printed. */
	int secret = c->type == FS_CMD_CHECKOUT && c->text_len != 0;
	/* an admin command's key is who asked (fs_cmd.h): shown as by= */
	int admin = (c->type >= FS_CMD_SALE_CREATE && c->type <= FS_CMD_STOCK_ADD) || c->type == FS_CMD_IP_RULE ||
	            c->type == FS_CMD_USER_TIER || c->type == FS_CMD_STOCK_REMOVE || c->type == FS_CMD_REFUND ||
	            c->type == FS_CMD_SALE_ARCHIVE;
	printf("  %-14s err=%-16s sku=%.*s user=%.*s %s=%.*s q=%u ref=%" PRIu64 " out_ref=%" PRIu64
	       " status=%u val=%" PRId64 "%s%.*s\n", fs_cmd_type_name(c->type), fs_err_name(c->err),
	       c->sku_len, c->sku, c->user_len, c->user, admin ? "by" : "key", c->key_len, c->key, c->quantity, c->ref,
	       c->out_ref, c->out_status, c->out_val, c->text_len ? " text=" : "",
	       secret ? 10 : c->text_len, secret ? "(redacted)" : c->text);
}

static int check_conservation(struct replay *r, const struct jr_batch *b)
{
	for (uint32_t i = 0; i < wr_sku_count(r->st); i++) {
		struct wr_sku_view v;
		wr_sku_view(r->st, i, &v);
		if (v.available + v.reserved + v.sold != v.total) {
			printf("CONSERVATION VIOLATED after batch %" PRIu64 " (%s offset %" PRIu64 "): sku %.*s\n",
			       b->seq, b->file, b->offset, v.name_len, v.name);
			return -1;
		}
	}
	return 0;
}

/* First sequence of the oldest segment in dir (0 when there is none). */
static uint64_t first_segment(const char *dir)
{
	uint64_t first = 0;
	DIR *d = opendir(dir);
	for (struct dirent *e; d && (e = readdir(d)) != NULL;) {
		if (strlen(e->d_name) != 24 || strcmp(e->d_name + 20, ".seg") != 0)
			continue;
		uint64_t s = strtoull(e->d_name, NULL, 10);
		if (first == 0 || s < first)
			first = s;
	}
	if (d)
		closedir(d);
	return first;
}

/* Loads the newest valid snapshot of data_dir that the journal continues
 * (its next batch is in a kept segment) into r. Returns its seq, or 0. */
static uint64_t from_snapshot(struct replay *r, const char *data_dir, uint64_t first)
{
	uint64_t seqs[WR_SNAP_LIST_MAX];
	int n = wr_snapshot_list(data_dir, seqs, WR_SNAP_LIST_MAX);
	for (int i = 0; i < n; i++) {
		char path[4200], err[4400];
		struct wr_limits l;
		struct wr_snap_stamp stamp;
		wr_snapshot_path(path, sizeof path, data_dir, seqs[i]);
		if (seqs[i] + 1 < first) {
			printf("snapshot %s: the journal after it is gone (starts at batch %" PRIu64 ")\n", path, first);
			continue;
		}
		if (wr_snapshot_limits(path, &l, err, sizeof err) != 0 || replay_init(r, &l) != 0 ||
		    wr_snapshot_load(path, r->st, &stamp, NULL, err, sizeof err) != 0) {
			printf("REFUSED %s\n", err);
			replay_free(r);   /* the next snapshot starts afresh */
			continue;
		}
		printf("from snapshot %s (batch %" PRIu64 ", checksums verified)\n", path, stamp.seq);
		return stamp.seq;
	}
	return 0;
}

static int run(const char *dir, const char *data_dir, int mode)
{
	char err[512];
	struct jr_reader *rd = jr_reader_open(dir, err, sizeof err);
	if (rd == NULL) {
		fprintf(stderr, "flashsale-journal: %s\n", err);
		return 1;
	}
	struct replay r;
	memset(&r, 0, sizeof r);
	int status = 1;   /* every exit frees (LeakSanitizer runs this tool in the ASan e2e suites) */
	uint64_t first = first_segment(dir);
	if (first > 1) {
		uint64_t seq = from_snapshot(&r, data_dir, first);
		if (seq == 0) {
			printf("DAMAGED: the journal starts at batch %" PRIu64 " and no valid snapshot in %s/%s "
			       "continues it\n", first, data_dir, WR_SNAP_SUBDIR);
			goto done;
		}
		if (jr_reader_seek(rd, seq) != 0) {
			fprintf(stderr, "flashsale-journal: %s: %s\n", dir, strerror(errno));
			goto done;
		}
	} else if (replay_init(&r, NULL) != 0) {
		fprintf(stderr, "flashsale-journal: out of memory\n");
		goto done;
	}
	struct jr_batch b;
	int rc;
	while ((rc = jr_reader_next(rd, UINT64_MAX, &b, err, sizeof err)) == 1) {
		int n = decode(&r, &b);
		if (n < 0) {
			printf("MALFORMED RECORD in batch %" PRIu64 " (%s offset %" PRIu64 ")\n", b.seq, b.file, b.offset);
			goto done;
		}
		if (mode == 'd') {
			printf("batch %" PRIu64 " time_ms=%" PRId64 " records=%u bytes=%u (%s @%" PRIu64 ")\n",
			       b.seq, b.time_ms, b.record_count, b.body_len, b.file, b.offset);
			for (int i = 0; i < n; i++)
				print_record(&r.cmds[i]);
		}
		for (int i = 0; i < n; i++)
			r.by_type[r.cmds[i].type]++;
		wr_decide(r.st, r.cmds, (uint32_t)n, b.time_ms, 1, &r.out);
		if (r.out.records_len != b.body_len || memcmp(r.out.records, b.body, b.body_len) != 0) {
			printf("REPLAY DIVERGED at batch %" PRIu64 " (%s offset %" PRIu64 ")\n", b.seq, b.file, b.offset);
			goto done;
		}
		if (check_conservation(&r, &b) != 0)
			goto done;
		r.batches++;
		r.records += (uint64_t)n;
	}
	if (rc < 0) {
		printf("DAMAGED: %s\n", err);
		goto done;
	}
	if (mode == 's') {
		printf("records by type:\n");
		for (int t = 1; t < FS_CMD_TYPE_COUNT; t++)
			if (r.by_type[t])
				printf("  %-16s %" PRIu64 "\n", fs_cmd_type_name(t), r.by_type[t]);
		printf("skus:\n");
		for (uint32_t i = 0; i < wr_sku_count(r.st); i++) {
			struct wr_sku_view v;
			wr_sku_view(r.st, i, &v);
			printf("  %.*s state=%s total=%" PRIu64 " available=%" PRIu64 " reserved=%" PRIu64
			       " sold=%" PRIu64 " waitlist=%u version=%" PRIu64 "\n", v.name_len, v.name,
			       fs_sale_state_name(v.state), v.total, v.available, v.reserved, v.sold,
			       v.waitlist_count, v.version);
		}
	}
	printf("ok: %" PRIu64 " batches, %" PRIu64 " records, state digest %016" PRIx64 "\n", r.batches,
	       r.records, wr_state_digest(r.st));
	status = 0;
done:
	replay_free(&r);
	jr_reader_close(rd);
	return status;
}

/* ---- draw verification -------------------------------------------------- */

struct draw_check {
	const char *sku;
	size_t sku_len;
	uint8_t commit[32];
	int have_commit, drawn;
	uint8_t seed[32];
	uint32_t *queued;          /* live queued reservation numbers, join order */
	uint32_t queued_count, cap;
	uint32_t *expected;        /* drawn order */
	uint32_t expected_count, admitted, mismatches;
	uint32_t cancelled_before_admit;
};

static int sku_is(const struct fs_cmd *c, const struct draw_check *d)
{
	return c->sku_len == d->sku_len && memcmp(c->sku, d->sku, d->sku_len) == 0;
}

static int unhex32(const char *s, size_t len, uint8_t out[32])
{
	if (len != 64)
		return -1;
	for (int i = 0; i < 32; i++) {
		unsigned v;
		char two[3] = { s[2 * i], s[2 * i + 1], 0 };
		if (sscanf(two, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

static void draw_remove(uint32_t *v, uint32_t *n, uint32_t res_no)
{
	for (uint32_t i = 0; i < *n; i++)
		if (v[i] == res_no) {
			memmove(v + i, v + i + 1, (*n - i - 1) * sizeof *v);
			(*n)--;
			return;
		}
}

/* Follows one record; returns -1 on a verdict that fails. */
static int draw_follow(struct draw_check *d, const struct fs_cmd *c)
{
	if (c->type == FS_CMD_SALE_CREATE && sku_is(c, d) && c->sale.prequeue_window_ms > 0)
		d->have_commit = unhex32(c->text, c->text_len, d->commit) == 0;
	if (c->type == FS_CMD_RESERVE && sku_is(c, d) && c->out_status == FS_RES_QUEUED && !d->drawn &&
	    d->queued_count < d->cap)
		d->queued[d->queued_count++] = (uint32_t)c->out_ref;
	if (c->type == FS_CMD_CANCEL && !d->drawn)
		draw_remove(d->queued, &d->queued_count, (uint32_t)c->ref);
	if (c->type == FS_CMD_CANCEL && d->drawn)
		for (uint32_t i = d->admitted; i < d->expected_count; i++)
			if (d->expected[i] == (uint32_t)c->ref) {
				memmove(d->expected + i, d->expected + i + 1, (d->expected_count - i - 1) * sizeof(uint32_t));
				d->expected_count--;
				d->cancelled_before_admit++;
				break;
			}
	if (c->type == FS_CMD_SALE_OPEN && sku_is(c, d) && c->text_len == 64 && !d->drawn) {
		uint8_t hash[32];
		if (unhex32(c->text, c->text_len, d->seed) != 0)
			return -1;
		SHA256(d->seed, 32, hash);
		if (!d->have_commit || memcmp(hash, d->commit, 32) != 0) {
			printf("DRAW INVALID: the revealed seed does not match the commitment\n");
			return -1;
		}
		memcpy(d->expected, d->queued, d->queued_count * sizeof(uint32_t));
		d->expected_count = d->queued_count;
		wr_draw_shuffle(d->expected, d->expected_count, d->seed);
		d->drawn = 1;
	}
	if (c->type == FS_CMD_ADMIT && sku_is(c, d) && d->drawn && d->admitted < d->expected_count) {
		if (d->expected[d->admitted] != (uint32_t)c->ref) {
			printf("DRAW MISMATCH: admission %u is r%016llx, the draw says r%016llx\n", d->admitted + 1,
			       (unsigned long long)c->ref, (unsigned long long)d->expected[d->admitted]);
			d->mismatches++;
		}
		d->admitted++;
	}
	return 0;
}

/* Frees a successful draw check (LeakSanitizer, as for run()). */
static void draw_free(struct draw_check *d, struct fs_cmd *cmds, struct jr_reader *rd)
{
	free(d->queued);
	free(d->expected);
	free(cmds);
	jr_reader_close(rd);
}

static int run_draw(const char *dir, const char *sku)
{
	char err[512];
	struct jr_reader *rd = jr_reader_open(dir, err, sizeof err);
	if (rd == NULL) {
		fprintf(stderr, "flashsale-journal: %s\n", err);
		return 1;
	}
	struct draw_check d = { .sku = sku, .sku_len = strlen(sku), .cap = 4000000 };
	d.queued = calloc(d.cap, sizeof(uint32_t));
	d.expected = calloc(d.cap, sizeof(uint32_t));
	uint32_t cmd_cap = WR_REC_COUNT_MAX(JR_BODY_BYTES_MAX);
	struct fs_cmd *cmds = calloc(cmd_cap, sizeof *cmds);
	int status = 1;   /* every exit frees, as in run() */
	if (!d.queued || !d.expected || !cmds) {
		fprintf(stderr, "flashsale-journal: out of memory\n");
		goto done;
	}
	struct jr_batch b;
	int rc;
	while ((rc = jr_reader_next(rd, UINT64_MAX, &b, err, sizeof err)) == 1) {
		int n = wr_rec_decode_batch(b.body, b.body_len, b.record_count, cmds, cmd_cap);
		if (n < 0) {
			printf("DAMAGED: %s offset %" PRIu64 ": malformed record in batch %" PRIu64 "\n",
			       b.file, b.offset, b.seq);
			goto done;
		}
		for (int i = 0; i < n; i++)
			if (draw_follow(&d, &cmds[i]) != 0)
				goto done;
	}
	if (rc < 0) {
		printf("DAMAGED: %s\n", err);
		goto done;
	}
	if (!d.have_commit) {
		printf("sku %s has no waiting room (no committed draw)\n", sku);
		goto done;
	}
	char hex[65];
	wr_hex(d.commit, 32, hex);
	printf("commitment sha256 %s\n", hex);
	if (!d.drawn) {
		printf("not drawn yet: %u entries queued\n", d.queued_count);
		status = 0;
		goto done;
	}
	wr_hex(d.seed, 32, hex);
	printf("revealed seed     %s (matches the commitment)\n", hex);
	printf("drawn entries %u, admitted %u, cancelled before admission %u, mismatches %u\n",
	       d.expected_count + d.cancelled_before_admit, d.admitted, d.cancelled_before_admit, d.mismatches);
	if (d.mismatches) {
		printf("DRAW NOT FOLLOWED\n");
		goto done;
	}
	printf("ok: the admission order follows the committed draw\n");
	status = 0;
done:
	draw_free(&d, cmds, rd);
	return status;
}

int main(int argc, char **argv)
{
	if (argc == 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		fputs(usage, stdout);
		return 0;
	}
	if (argc == 4 && strcmp(argv[1], "draw") == 0) {
		char jdir[4096];
		struct stat jsb;
		snprintf(jdir, sizeof jdir, "%s/journal", argv[2]);
		if (stat(jdir, &jsb) != 0 || !S_ISDIR(jsb.st_mode))
			snprintf(jdir, sizeof jdir, "%s", argv[2]);
		return run_draw(jdir, argv[3]);
	}
	if (argc != 3) {
		fputs(usage, stderr);
		return 2;
	}
	int mode = strcmp(argv[1], "verify") == 0 ? 'v' : strcmp(argv[1], "dump") == 0 ? 'd' :
	           strcmp(argv[1], "stats") == 0 ? 's' : 0;
	if (mode == 0) {
		fprintf(stderr, "flashsale-journal: unknown command '%s'\n%s", argv[1], usage);
		return 2;
	}
	char dir[4096], data_dir[4096];
	struct stat sb;
	snprintf(dir, sizeof dir, "%s/journal", argv[2]);
	snprintf(data_dir, sizeof data_dir, "%s", argv[2]);
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(dir, sizeof dir, "%s", argv[2]);
		snprintf(data_dir, sizeof data_dir, "%s/..", argv[2]);   /* DATA_DIR/journal given */
	}
	if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		fprintf(stderr, "flashsale-journal: '%s' is not a directory\n", argv[2]);
		return 2;
	}
	return run(dir, data_dir, mode);
}
