/* journal_fuzz.c - libFuzzer target for journal segments and records
 * (writer/journal.c, writer/record.c), the start-up path of a damaged disk.
 *
 * The input is written as the only segment of a fresh journal directory;
 * then the sequential reader (sinks, tools) walks it, and jr_open (the
 * writer's start-up: verify, repair a torn tail, replay) opens it with a
 * callback that decodes every record and replays the batch through the
 * decide step, as wr_open does. A corrupt journal must be refused with a
 * message, never crash; whatever is accepted must decode.
 * The first input byte picks a variant: a raw segment, or a segment that
 * starts with a valid batch (built here from the rest of the input's
 * records) so the fuzzer reaches the record decoder behind valid checksums.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <unistd.h>
#include <sys/stat.h>

#include "writer/alloc.h"
#include "writer/journal.h"
#include "writer/record.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define CMD_CAP 4096

static char dir[256], seg[300];
static struct fs_cmd cmds[CMD_CAP];
static struct wr_state *st;
static struct wr_batch_out out;

static int replay(void *arg, const struct jr_batch *b)
{
	(void)arg;
	uint32_t n = 0, off = 0;
	while (off < b->body_len) {
		if (n >= CMD_CAP)
			return -1;
		uint32_t used = wr_rec_decode(b->body + off, b->body_len - off, &cmds[n]);
		if (used == 0)
			return -1;
		CHECK(used <= b->body_len - off);
		off += used;
		n++;
	}
	if (n != b->record_count)
		return -1;
	wr_decide(st, cmds, n, b->time_ms, 1, &out);
	return 0;
}

static struct wr_state *fresh_state(void)
{
	struct wr_limits l;
	wr_limits_default(&l);
	l.sku_count_max = 8; l.user_count_max = 64; l.reservation_count_max = 256; l.order_count_max = 128;
	l.idem_count_max = 512; l.holding_count_max = 64; l.quantity_max = 4;
	struct wr_state *s = wr_state_new(&l);
	CHECK(s != NULL);
	return s;
}

static void setup(void)
{
	snprintf(dir, sizeof dir, "%s/journal_fuzz.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
	mkdir(dir, 0755);
	snprintf(seg, sizeof seg, "%s/00000000000000000001.seg", dir);
	st = fresh_state();
	out.answer_count_max = 5 * CMD_CAP;
	out.answers = calloc(out.answer_count_max, sizeof *out.answers);
	out.records_cap = JR_BODY_BYTES_MAX + 64 * WR_REC_BYTES_MAX;
	out.records = malloc(out.records_cap);
	out.charges = calloc(CMD_CAP, sizeof *out.charges);
	out.sku_touched = calloc(8, sizeof(uint32_t));
	CHECK(out.answers && out.records && out.charges && out.sku_touched);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (st == NULL)
		setup();
	if (size == 0 || size > (1u << 16))
		return 0;
	int fd = open(seg, O_RDWR | O_CREAT | O_TRUNC, 0644);
	CHECK(fd >= 0);
	if (data[0] & 1) {
		CHECK(write(fd, data + 1, size - 1) == (ssize_t)(size - 1));
	} else {
		/* a valid first batch whose body is the input: jr_append builds it */
		close(fd);
		unlink(seg);
		struct jr_config jc = { .dir = dir, .segment_bytes = 1u << 17, .no_sync = 1 };
		struct journal *j = jr_open(&jc, NULL, NULL, NULL, 0);
		CHECK(j != NULL);
		uint32_t count = 0, off = 0, used;
		while (off < size - 1 && count < CMD_CAP &&
		       (used = wr_rec_decode(data + 1 + off, (uint32_t)(size - 1 - off), &cmds[count])) != 0) {
			off += used;
			count++;
		}
		jr_append(j, 1700000000000LL, count, data + 1, (uint32_t)(size - 1));
		jr_close(j);
		fd = open(seg, O_RDONLY);
		CHECK(fd >= 0);
	}
	close(fd);
	char err[512];
	struct jr_reader *r = jr_reader_open(dir, err, sizeof err);
	if (r != NULL) {
		struct jr_batch b;
		int rc;
		for (int i = 0; i < 10000 && (rc = jr_reader_next(r, UINT64_MAX, &b, err, sizeof err)) == 1; i++)
			CHECK(b.body_len <= JR_BODY_BYTES_MAX);
		jr_reader_close(r);
	}
	wr_state_free(st);   /* replay starts from an empty state, as start-up does */
	st = fresh_state();
	struct jr_config jc = { .dir = dir, .segment_bytes = 1u << 17 };
	struct journal *j = jr_open(&jc, replay, NULL, err, sizeof err);
	if (j != NULL)
		jr_close(j);
	else
		CHECK(err[0] != '\0');   /* a refusal always says why */
	unlink(seg);
	return 0;
}
