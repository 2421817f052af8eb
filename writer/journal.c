/* journal.c - the durable, tamper-evident, append-only journal (format and
 * contract in journal.h).
 *
 * Three parts share one verifying scanner (struct jr_scan):
 *   - jr_open walks every segment with it, replays each batch, and decides
 *     what a bad batch means: a torn tail (zeroed, appending resumes there)
 *     or damage (start-up fails naming the file and the offset);
 *   - jr_append builds header+body+pad in a buffer allocated at open and
 *     hands it to io_uring as one write linked to an fdatasync;
 *   - jr_reader tails the segment files with pread for sinks and tools.
 *
 * The scanner reads through a window buffer (read-ahead) and never trusts a
 * window for a negative answer: before it reports "end of data" or "bad
 * batch" it re-reads the bytes from the file, because a reader tailing a
 * live journal may hold a window read before the writer wrote those bytes.
 */
#include "writer/journal.h"

#include <assert.h>
#include <pthread.h>
#include <stdatomic.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <liburing.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "the journal is little endian on disk");
_Static_assert(JR_HEADER_BYTES % 8 == 0, "batches are 8-byte aligned");

#define JR_ALIGN_BYTES        8u
#define JR_PATH_BYTES_MAX     1024u
#define JR_SEG_NAME_BYTES     24u            /* 20 digits + ".seg" */
#define JR_SEGMENT_COUNT_MAX  (1u << 20)
#define JR_READ_AHEAD_BYTES   (256u << 10)
#define JR_FRESH_READ_BYTES   4096u
#define JR_BATCH_BYTES_MAX    (JR_HEADER_BYTES + JR_BODY_BYTES_MAX + JR_ALIGN_BYTES)
#define JR_ZERO_CHUNK_BYTES   (64u << 10)
#define JR_MSG_BYTES          (JR_PATH_BYTES_MAX + 256u)
#define JR_RING_ENTRIES       4u
#define JR_FILE_MODE          0600   /* segments hold user ids and payment references */
#define JR_ZERO_RUN_WORDS     64u    /* 512 bytes: a sector */

enum sc_status {
	SC_FATAL = -2,   /* damage that is never a torn tail (msg set) */
	SC_BAD   = -1,   /* bad batch: torn tail if nothing valid follows (msg set) */
	SC_END   = 0,    /* zero header or no room for a header: end of segment data */
	SC_BATCH = 1,    /* a verified batch */
};

/* A verifying sequential scanner over one segment file at a time. */
struct jr_scan {
	char path[JR_PATH_BYTES_MAX];
	int fd;
	uint64_t size;         /* file size in bytes (refreshed on fresh reads) */
	uint64_t off;          /* offset of the next header */
	uint64_t seg_first;    /* first seq of the open segment (its name) */
	uint64_t last_seq;     /* seq of the last verified batch (or start - 1) */
	int have_prev;         /* 1 when prev_sha is known (chain checked) */
	uint8_t prev_sha[16];
	uint8_t *buf;          /* window: file bytes [win_off, win_off + win_len) */
	uint64_t cap;
	uint64_t win_off;
	uint64_t win_len;
	char msg[JR_MSG_BYTES];
};

struct journal {
	struct io_uring ring;
	char dir[JR_PATH_BYTES_MAX];
	char path[JR_PATH_BYTES_MAX];  /* current segment */
	int dirfd;                     /* also holds the flock */
	int fd;                        /* current segment, -1 before the first */
	uint64_t seg_size;             /* current segment's file size */
	uint64_t off;                  /* append offset in the current segment */
	uint64_t segment_bytes;
	uint64_t last_seq;
	uint8_t prev_sha[16];
	uint64_t bytes;
	uint64_t dropped_bytes;        /* file sizes of segments dropped since open */
	uint64_t first_seq;            /* first seq of the oldest segment */
	uint64_t after_seq;            /* jr_config.after_seq */
	uint8_t after_chain[16];
	uint64_t last_sync_ns;
	int no_sync;
	int spare_fd;                  /* a descriptor held back for the next segment (EMFILE) */
	_Atomic uint64_t prep_failures;
	int prep_errno_logged;         /* preparer: the last failure logged (0 after a success) */
	const struct jr_io *io;        /* tests only: replaces append_submit */
	uint8_t *buf;                  /* JR_BATCH_BYTES_MAX, built per append */
	/* segment preparer (prezero): owns prep_path until prep_ready */
	int prezero;
	int prep_started;
	pthread_t prep_thread;
	pthread_mutex_t prep_mu;
	pthread_cond_t prep_cv;
	int prep_wanted, prep_ready, prep_stop;
	int prep_fd;
	int prep_ready_seen;           /* writer-side: asked for this segment already */
	char prep_path[JR_PATH_BYTES_MAX];
};

struct jr_reader {
	char dir[JR_PATH_BYTES_MAX];
	uint64_t skip_seq;             /* batches <= this are verified, not returned */
	struct jr_scan scan;
};

static const uint8_t jr_zeros[JR_ZERO_CHUNK_BYTES];

static int prep_start(struct journal *j);
static void prep_stop(struct journal *j);
static void prep_wait_ready(struct journal *j);

/* ---- small helpers ---------------------------------------------------- */

static uint64_t round_up8(uint64_t n)
{
	return (n + JR_ALIGN_BYTES - 1) & ~(uint64_t)(JR_ALIGN_BYTES - 1);
}

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void set_err(char *err, size_t err_len, const char *msg)
{
	if (err != NULL && err_len > 0)
		snprintf(err, err_len, "%s", msg);
}

static void seg_path(char *out, const char *dir, uint64_t first_seq)
{
	assert(first_seq > 0);
	assert(strlen(dir) + 1 + JR_SEG_NAME_BYTES < JR_PATH_BYTES_MAX);
	snprintf(out, JR_PATH_BYTES_MAX, "%s/%020" PRIu64 ".seg", dir, first_seq);
}

static void header_sha16(const uint8_t header[JR_HEADER_BYTES], uint8_t out[16])
{
	uint8_t digest[SHA256_DIGEST_LENGTH];
	SHA256(header, JR_HEADER_BYTES, digest);
	memcpy(out, digest, 16);
}

static int is_zero(const uint8_t *p, uint64_t len)
{
	for (uint64_t i = 0; i < len; i++)
		if (p[i] != 0)
			return 0;
	return 1;
}

/* 1 when p holds a header whose magic matches and whose header_hash verifies. */
static int header_valid(const uint8_t *p)
{
	struct jr_header h;
	memcpy(&h, p, sizeof h);
	return h.magic == JR_MAGIC && XXH3_64bits(p, 56) == h.header_hash;
}

static int pread_full(int fd, uint8_t *buf, uint64_t len, uint64_t off, uint64_t *got)
{
	uint64_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		if (n == 0)
			break;
		done += (uint64_t)n;
	}
	*got = done;
	assert(done <= len);
	return 0;
}

static int pwrite_full(int fd, const uint8_t *buf, uint64_t len, uint64_t off)
{
	uint64_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, buf + done, len - done, (off_t)(off + done));
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		done += (uint64_t)n;
	}
	assert(done == len);
	return 0;
}

/* mkdir -p. Returns 0, or -1 with errno set. */
static int mkdir_p(const char *dir)
{
	char tmp[JR_PATH_BYTES_MAX];
	size_t len = strlen(dir);
	assert(len > 0 && len < sizeof tmp);
	memcpy(tmp, dir, len + 1);
	for (size_t i = 1; i <= len; i++) {
		if (tmp[i] != '/' && tmp[i] != '\0')
			continue;
		char saved = tmp[i];
		tmp[i] = '\0';
		if (mkdir(tmp, 0755) != 0 && errno != EEXIST)
			return -1;
		tmp[i] = saved;
	}
	struct stat st;
	if (stat(dir, &st) != 0)
		return -1;
	if (!S_ISDIR(st.st_mode)) {
		errno = ENOTDIR;
		return -1;
	}
	return 0;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x > y) - (x < y);
}

/* Parses a segment file name; returns its first seq or 0 if not a segment. */
static uint64_t seg_name_seq(const char *name)
{
	if (strlen(name) != JR_SEG_NAME_BYTES || strcmp(name + 20, ".seg") != 0)
		return 0;
	uint64_t seq = 0;
	for (int i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9')
			return 0;
		if (seq > (UINT64_MAX - 9) / 10)
			return 0;
		seq = seq * 10 + (uint64_t)(name[i] - '0');
	}
	return seq;
}

/* Lists the segments of dir, sorted by first seq. Returns the count (and a
 * malloc'd array in *out, NULL when 0), or -1 with errno set. */
static int64_t seg_list(const char *dir, uint64_t **out)
{
	*out = NULL;
	DIR *d = opendir(dir);
	if (d == NULL)
		return -1;
	uint64_t *seqs = NULL;
	uint64_t count = 0, cap = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		uint64_t seq = seg_name_seq(e->d_name);
		if (seq == 0)
			continue;
		if (count == cap) {
			cap = cap == 0 ? 16 : cap * 2;
			uint64_t *grown = cap <= JR_SEGMENT_COUNT_MAX ? realloc(seqs, cap * sizeof *seqs) : NULL;
			if (grown == NULL) {
				free(seqs);
				closedir(d);
				errno = ENOMEM;
				return -1;
			}
			seqs = grown;
		}
		seqs[count++] = seq;
	}
	closedir(d);
	if (count > 0)
		qsort(seqs, count, sizeof *seqs, cmp_u64);
	assert(count <= JR_SEGMENT_COUNT_MAX);
	*out = seqs;
	return (int64_t)count;
}

/* ---- the scanner -------------------------------------------------------- */

static int sc_init(struct jr_scan *s)
{
	memset(s, 0, sizeof *s);
	s->fd = -1;
	s->cap = JR_BATCH_BYTES_MAX + JR_READ_AHEAD_BYTES;
	s->buf = malloc(s->cap);
	return s->buf == NULL ? -1 : 0;
}

static void sc_close_segment(struct jr_scan *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
	s->win_len = 0;
}

static void sc_free(struct jr_scan *s)
{
	sc_close_segment(s);
	free(s->buf);
	s->buf = NULL;
}

/* Opens segment `first_seq` of dir for scanning from offset 0. Returns 0, or
 * -1 with errno set (ENOENT: the segment does not exist yet). */
static int sc_open_segment(struct jr_scan *s, const char *dir, uint64_t first_seq)
{
	char path[JR_PATH_BYTES_MAX];
	seg_path(path, dir, first_seq);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	struct stat st;
	if (fstat(fd, &st) != 0) {
		close(fd);
		return -1;
	}
	sc_close_segment(s);
	memcpy(s->path, path, sizeof path);
	s->fd = fd;
	s->size = (uint64_t)st.st_size;
	s->off = 0;
	s->seg_first = first_seq;
	assert(s->win_len == 0);
	return 0;
}

/* Returns a pointer to file bytes [off, off + len), from the window unless
 * `fresh` or missing, or NULL when the file is shorter (or on a read error,
 * with errno set and *io_error = 1). */
static const uint8_t *sc_fetch(struct jr_scan *s, uint64_t off, uint64_t len, int fresh, int *io_error)
{
	assert(len <= s->cap);
	assert(s->fd >= 0);
	if (!fresh && off >= s->win_off && off + len <= s->win_off + s->win_len)
		return s->buf + (off - s->win_off);
	uint64_t want = fresh ? JR_FRESH_READ_BYTES : JR_READ_AHEAD_BYTES;
	want = len > want ? len : want;
	want = want > s->cap ? s->cap : want;
	uint64_t got = 0;
	s->win_len = 0;
	if (pread_full(s->fd, s->buf, want, off, &got) != 0) {
		*io_error = 1;
		return NULL;
	}
	s->win_off = off;
	s->win_len = got;
	return got >= len ? s->buf : NULL;
}

static enum sc_status sc_fail(struct jr_scan *s, enum sc_status st, const char *reason)
{
	assert(st == SC_FATAL || st == SC_BAD);
	snprintf(s->msg, sizeof s->msg, "%s offset %" PRIu64 ": %s", s->path, s->off, reason);
	return st;
}

/* Checks the fields of a header whose hash verified. */
static enum sc_status sc_check_header(struct jr_scan *s, const struct jr_header *h)
{
	char reason[128];
	if (h->version != JR_VERSION) {
		snprintf(reason, sizeof reason, "unsupported version %u", (unsigned)h->version);
		return sc_fail(s, SC_FATAL, reason);
	}
	if (h->seq != s->last_seq + 1) {
		snprintf(reason, sizeof reason, "sequence gap (expected %" PRIu64 ", found %" PRIu64 ")",
		         s->last_seq + 1, h->seq);
		return sc_fail(s, SC_FATAL, reason);
	}
	if (s->have_prev && memcmp(h->prev_sha256, s->prev_sha, 16) != 0)
		return sc_fail(s, SC_FATAL, "broken chain (previous header hash does not match)");
	if (h->body_len > JR_BODY_BYTES_MAX) {
		snprintf(reason, sizeof reason, "body length %u over the limit", (unsigned)h->body_len);
		return sc_fail(s, SC_FATAL, reason);
	}
	if (s->off + JR_HEADER_BYTES + h->body_len > s->size)
		return sc_fail(s, SC_BAD, "body beyond end of file");
	return SC_BATCH;
}

/* One attempt at the batch at s->off (see sc_next). */
static enum sc_status sc_try(struct jr_scan *s, int fresh, struct jr_batch *b)
{
	int io_error = 0;
	if (fresh) {
		struct stat st;
		if (fstat(s->fd, &st) != 0)
			return sc_fail(s, SC_FATAL, strerror(errno));
		s->size = (uint64_t)st.st_size;
	}
	if (s->off + JR_HEADER_BYTES > s->size)
		return SC_END;
	const uint8_t *p = sc_fetch(s, s->off, JR_HEADER_BYTES, fresh, &io_error);
	if (p == NULL)
		return io_error ? sc_fail(s, SC_FATAL, strerror(errno)) : SC_END;
	uint8_t raw[JR_HEADER_BYTES];
	struct jr_header h;
	memcpy(raw, p, sizeof raw);
	memcpy(&h, p, sizeof h);
	if (is_zero(raw, sizeof raw))
		return SC_END;
	if (!header_valid(raw))
		return sc_fail(s, SC_BAD, "bad header checksum");
	enum sc_status st = sc_check_header(s, &h);
	if (st != SC_BATCH)
		return st;
	const uint8_t *body = sc_fetch(s, s->off + JR_HEADER_BYTES, h.body_len, 0, &io_error);
	if (body == NULL)
		return io_error ? sc_fail(s, SC_FATAL, strerror(errno)) : sc_fail(s, SC_BAD, "body beyond end of file");
	if (XXH3_64bits(body, h.body_len) != h.body_hash)
		return sc_fail(s, SC_BAD, "body checksum mismatch");
	*b = (struct jr_batch){ .seq = h.seq, .time_ms = h.time_ms, .record_count = h.record_count,
	                        .body_len = h.body_len, .body = body, .file = s->path, .offset = s->off };
	s->last_seq = h.seq;
	header_sha16(raw, s->prev_sha);
	s->have_prev = 1;
	s->off += round_up8(JR_HEADER_BYTES + (uint64_t)h.body_len);
	return SC_BATCH;
}

/* Verifies the batch at s->off. SC_BATCH: *b is filled (body in the window,
 * valid until the next scanner call) and the scanner moved past it. Any
 * other answer leaves s->off unchanged; it was confirmed by a fresh read. */
static enum sc_status sc_next(struct jr_scan *s, struct jr_batch *b)
{
	assert(s->fd >= 0);
	assert(s->off % JR_ALIGN_BYTES == 0);
	enum sc_status st = sc_try(s, 0, b);
	if (st == SC_BATCH || st == SC_FATAL)
		return st;
	return sc_try(s, 1, b);
}

/* Scans the current segment from `from` (exclusive for headers) to its end:
 * returns 1 when a valid batch header follows, else 0, and in *written_end
 * the end of the last non-zero 8-byte word (>= from). -1 on a read error. */
static int sc_scan_rest(struct jr_scan *s, uint64_t from, uint64_t *written_end)
{
	assert(from % JR_ALIGN_BYTES == 0);
	int io_error = 0;
	*written_end = from;
	for (uint64_t pos = from; pos < s->size; pos += JR_ALIGN_BYTES) {
		uint64_t word = s->size - pos < JR_ALIGN_BYTES ? s->size - pos : JR_ALIGN_BYTES;
		const uint8_t *p = sc_fetch(s, pos, word, 0, &io_error);
		if (p == NULL)
			return io_error ? -1 : 0;
		if (!is_zero(p, word))
			*written_end = pos + word;
		if (pos == from || pos + JR_HEADER_BYTES > s->size)
			continue;
		uint32_t magic;
		memcpy(&magic, p, sizeof magic);
		if (magic != JR_MAGIC)
			continue;
		p = sc_fetch(s, pos, JR_HEADER_BYTES, 0, &io_error);
		if (p == NULL)
			return io_error ? -1 : 0;
		if (header_valid(p))
			return 1;
	}
	assert(*written_end <= s->size);
	return 0;
}

/* ---- torn tail or damage ------------------------------------------------ */

/* What an append writes in the header's flags (journal.h): how a torn write
 * of this batch would show, so start-up can tell one from a complete batch
 * that was damaged later. */
static uint16_t tail_flags(const uint8_t *body, uint32_t body_len)
{
	uint32_t trail = 0;
	while (trail < body_len && trail < JR_FLAG_TRAIL_MAX && body[body_len - 1 - trail] == 0)
		trail++;
	uint16_t flags = (uint16_t)trail;
	uint32_t run = 0;   /* consecutive zero 8-byte words (the body is 8-aligned in the file) */
	for (uint32_t w = 0; w + 8 <= body_len; w += 8) {
		uint64_t v;
		memcpy(&v, body + w, sizeof v);
		run = v == 0 ? run + 1 : 0;
		if (run == JR_ZERO_RUN_WORDS) {
			flags |= JR_FLAG_ZERO_RUN;
			break;
		}
	}
	return flags;
}

/* 1 when changing one bit of raw makes it a valid header (then done so). */
static int header_fix_one_bit(uint8_t raw[JR_HEADER_BYTES])
{
	for (uint32_t bit = 0; bit < JR_HEADER_BYTES * 8; bit++) {
		raw[bit / 8] ^= (uint8_t)(1u << (bit % 8));
		if (header_valid(raw))
			return 1;
		raw[bit / 8] ^= (uint8_t)(1u << (bit % 8));
	}
	return 0;
}

/* 1 when the body, as read, is what header h was written with except for
 * one bit (the last byte that should be non-zero reads zero: the bit that
 * made it zero flipped). */
static int body_fix_last_byte(uint8_t *body, const struct jr_header *h, uint32_t at)
{
	for (uint32_t bit = 0; bit < 8; bit++) {
		body[at] = (uint8_t)(1u << bit);
		if (XXH3_64bits(body, h->body_len) == h->body_hash)
			return 1;
	}
	body[at] = 0;
	return 0;
}

/* The last batch of the journal is bad (s->off) and nothing valid follows.
 * A torn write -- the append never completed, so it was never acknowledged:
 * some of its 512-byte sectors, or a prefix of it, reached the disk and the
 * rest of the pre-zeroed segment still reads zero -- may be truncated. A
 * complete batch with a bad checksum is damage to an acknowledged decision
 * and must be refused. Torn evidence: no valid header (one that one flipped
 * bit does not explain), a body beyond the file, more trailing zero bytes
 * than the batch was written with, or a run of 512 zero bytes it was
 * written without (a lost sector). Returns 1 (damage, reason in why), 0
 * (torn), or -1 (read error: errno). */
static int tail_damaged(struct jr_scan *s, char *why, size_t why_len)
{
	uint8_t raw[JR_HEADER_BYTES];
	uint64_t got;
	if (pread_full(s->fd, raw, sizeof raw, s->off, &got) != 0)
		return -1;
	if (got < sizeof raw || is_zero(raw, sizeof raw))
		return 0;
	int header_flipped = 0;
	if (!header_valid(raw)) {
		if (!header_fix_one_bit(raw))
			return 0;   /* a header that never arrived whole */
		header_flipped = 1;
	}
	struct jr_header h;
	memcpy(&h, raw, sizeof h);
	if (h.body_len == 0 || h.body_len > JR_BODY_BYTES_MAX || s->off + JR_HEADER_BYTES + h.body_len > s->size)
		return 0;
	uint8_t *body = malloc(h.body_len);
	if (body == NULL)
		return -1;
	int rc = pread_full(s->fd, body, h.body_len, s->off + JR_HEADER_BYTES, &got);
	int damaged = 0;
	if (rc == 0 && got == h.body_len) {
		uint32_t trail = 0, want = h.flags & JR_FLAG_TRAIL_MAX;
		while (trail < h.body_len && body[h.body_len - 1 - trail] == 0)
			trail++;
		if (header_flipped)
			damaged = XXH3_64bits(body, h.body_len) == h.body_hash;
		else if (trail > want)
			damaged = want < JR_FLAG_TRAIL_MAX && body_fix_last_byte(body, &h, h.body_len - 1 - want);
		else
			damaged = (h.flags & JR_FLAG_ZERO_RUN) || !(tail_flags(body, h.body_len) & JR_FLAG_ZERO_RUN);
	}
	free(body);
	if (rc != 0)
		return -1;
	if (damaged)
		snprintf(why, why_len, "%s offset %" PRIu64 ": batch %" PRIu64 " is complete but its %s checksum is "
		         "bad: damage, not a torn write (it may have been acknowledged)", s->path, s->off, h.seq,
		         header_flipped ? "header" : "body");
	return damaged;
}

/* ---- jr_open ------------------------------------------------------------ */

struct jr_replay {
	jr_batch_fn fn;
	void *arg;
	uint64_t torn_off;        /* where appending resumes in the last segment */
	uint64_t torn_bytes;      /* 0: nothing to zero */
};

/* Replays one segment. Returns 0, or -1 with the reason in err. */
static int open_replay_segment(struct journal *j, struct jr_scan *s, int is_last,
                               struct jr_replay *rp, char *err, size_t err_len)
{
	struct jr_batch b;
	for (;;) {
		enum sc_status st = sc_next(s, &b);
		if (st == SC_BATCH) {
			assert(b.seq == j->last_seq + 1);
			j->last_seq = b.seq;
			j->bytes += round_up8(JR_HEADER_BYTES + (uint64_t)b.body_len);
			if (b.seq == j->after_seq && memcmp(s->prev_sha, j->after_chain, 16) != 0) {
				snprintf(err, err_len, "journal: %s offset %" PRIu64 ": batch %" PRIu64 " is not the one the "
				         "snapshot follows (chain hash differs)", b.file, b.offset, b.seq);
				return -1;
			}
			if (b.seq <= j->after_seq)
				continue;   /* inside the snapshot: verified, not replayed */
			int rc = rp->fn != NULL ? rp->fn(rp->arg, &b) : 0;
			if (rc != 0) {
				snprintf(err, err_len, "journal: %s offset %" PRIu64 ": replay failed (%d)", b.file, b.offset, rc);
				return -1;
			}
			continue;
		}
		if (st == SC_FATAL || (st == SC_BAD && !is_last)) {
			snprintf(err, err_len, "journal: %s", s->msg);
			return -1;
		}
		if (st == SC_END && !is_last)
			return 0;
		/* The last segment: nothing valid may follow the end of the data. */
		uint64_t written_end = 0;
		int follows = sc_scan_rest(s, s->off, &written_end);
		if (follows != 0) {
			if (st == SC_END || follows < 0)
				snprintf(err, err_len, "journal: %s offset %" PRIu64 ": %s", s->path, s->off,
				         follows < 0 ? strerror(errno) : "valid batch after the end of the data");
			else
				snprintf(err, err_len, "journal: %s", s->msg);
			return -1;
		}
		if (st == SC_BAD) {
			char why[JR_MSG_BYTES];
			int dmg = tail_damaged(s, why, sizeof why);
			if (dmg != 0) {
				snprintf(err, err_len, "journal: %s", dmg < 0 ? strerror(errno) : why);
				return -1;
			}
		}
		rp->torn_off = s->off;
		rp->torn_bytes = written_end - s->off;
		return 0;
	}
}

/* Walks every segment in order. Returns 0 and leaves j->path/seg_size/off on
 * the last segment (or no segment), or -1 with the reason in err. */
static int open_replay(struct journal *j, struct jr_replay *rp, char *err, size_t err_len)
{
	uint64_t *seqs = NULL;
	int64_t count = seg_list(j->dir, &seqs);
	if (count < 0) {
		snprintf(err, err_len, "journal: %s: %s", j->dir, strerror(errno));
		return -1;
	}
	struct jr_scan s;
	if (sc_init(&s) != 0) {
		free(seqs);
		snprintf(err, err_len, "journal: out of memory");
		return -1;
	}
	int rc = 0;
	j->first_seq = count > 0 ? seqs[0] : j->after_seq + 1;
	if (j->after_seq > 0) {
		/* From a snapshot: the journal may start later than batch 1, but
		 * never after the snapshot's next batch. */
		if (count > 0 && seqs[0] > j->after_seq + 1) {
			char path[JR_PATH_BYTES_MAX];
			seg_path(path, j->dir, seqs[0]);
			snprintf(err, err_len, "journal: %s offset 0: starts at batch %" PRIu64 " but the snapshot "
			         "ends at batch %" PRIu64 ": the batches between are missing", path, seqs[0], j->after_seq);
			rc = -1;
		}
		j->last_seq = count > 0 ? seqs[0] - 1 : j->after_seq;
		if (count == 0 || seqs[0] == j->after_seq + 1)
			memcpy(j->prev_sha, j->after_chain, 16);   /* else zeros (batch 1) or learnt */
	}
	for (int64_t i = 0; i < count && rc == 0; i++) {
		if (seqs[i] != j->last_seq + 1) {
			char path[JR_PATH_BYTES_MAX];
			seg_path(path, j->dir, seqs[i]);
			snprintf(err, err_len, "journal: %s offset 0: sequence gap (expected %" PRIu64 ", found %" PRIu64 ")",
			         path, j->last_seq + 1, seqs[i]);
			rc = -1;
		} else if (sc_open_segment(&s, j->dir, seqs[i]) != 0) {
			snprintf(err, err_len, "journal: %s: %s", s.path, strerror(errno));
			rc = -1;
		} else {
			s.last_seq = j->last_seq;
			/* the chain starts from zeros at seq 1, from the snapshot's
			 * value right after it, and is learnt from the first batch
			 * read in a segment that starts before the snapshot */
			s.have_prev = i > 0 || seqs[i] == 1 || seqs[i] == j->after_seq + 1;
			memcpy(s.prev_sha, j->prev_sha, 16);
			rc = open_replay_segment(j, &s, i == count - 1, rp, err, err_len);
			memcpy(j->prev_sha, s.prev_sha, 16);
			memcpy(j->path, s.path, sizeof j->path);
			j->seg_size = s.size;
			j->off = s.off;   /* a stop leaves the scanner on the bad batch */
		}
	}
	sc_free(&s);
	free(seqs);
	return rc;
}

/* Zeroes the torn tail of the last segment and makes that durable. */
static int open_truncate_tail(struct journal *j, const struct jr_replay *rp, char *err, size_t err_len)
{
	assert(j->fd >= 0 && rp->torn_bytes > 0);
	assert(rp->torn_off == j->off);
	for (uint64_t done = 0; done < rp->torn_bytes;) {
		uint64_t n = rp->torn_bytes - done;
		n = n > sizeof jr_zeros ? sizeof jr_zeros : n;
		if (pwrite_full(j->fd, jr_zeros, n, rp->torn_off + done) != 0) {
			snprintf(err, err_len, "journal: %s: zeroing torn tail: %s", j->path, strerror(errno));
			return -1;
		}
		done += n;
	}
	if (fdatasync(j->fd) != 0) {
		snprintf(err, err_len, "journal: %s: fdatasync: %s", j->path, strerror(errno));
		return -1;
	}
	fprintf(stderr, "journal: torn tail in %s at offset %" PRIu64 " (%" PRIu64 " bytes) truncated\n",
	        j->path, rp->torn_off, rp->torn_bytes);
	return 0;
}

static int open_dir(struct journal *j, const struct jr_config *cfg, char *err, size_t err_len)
{
	size_t len = strlen(cfg->dir);
	if (len == 0 || len + 1 + JR_SEG_NAME_BYTES >= JR_PATH_BYTES_MAX) {
		set_err(err, err_len, "journal: directory name empty or too long");
		return -1;
	}
	memcpy(j->dir, cfg->dir, len + 1);
	if (mkdir_p(j->dir) != 0) {
		snprintf(err, err_len, "journal: mkdir %s: %s", j->dir, strerror(errno));
		return -1;
	}
	j->dirfd = open(j->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (j->dirfd < 0) {
		snprintf(err, err_len, "journal: open %s: %s", j->dir, strerror(errno));
		return -1;
	}
	if (flock(j->dirfd, LOCK_EX | LOCK_NB) != 0) {
		snprintf(err, err_len, "journal: %s is in use by another writer (%s)", j->dir, strerror(errno));
		return -1;
	}
	return 0;
}

/* Allocates the journal and its fixed resources. */
static struct journal *open_alloc(const struct jr_config *cfg, char *err, size_t err_len)
{
	struct journal *j = calloc(1, sizeof *j);
	if (j == NULL) {
		set_err(err, err_len, "journal: out of memory");
		return NULL;
	}
	j->dirfd = -1;
	j->fd = -1;
	j->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	j->ring.ring_fd = -1;
	j->segment_bytes = cfg->segment_bytes;
	j->no_sync = cfg->no_sync;
	j->io = cfg->io;
	j->buf = aligned_alloc(4096, (JR_BATCH_BYTES_MAX + 4095) / 4096 * 4096);
	if (j->buf == NULL) {
		set_err(err, err_len, "journal: out of memory");
		return j;
	}
	int rc = io_uring_queue_init(JR_RING_ENTRIES, &j->ring, 0);
	if (rc < 0) {
		j->ring.ring_fd = -1;
		snprintf(err, err_len, "journal: io_uring_queue_init: %s", strerror(-rc));
	}
	return j;
}

/* A start-up on a full disk says so in one line (it is not an error:
 * reads are served, writes wait for space with 503s, see jr_append). */
static void open_space_check(const struct journal *j)
{
	struct statvfs sv;
	if (fstatvfs(j->dirfd, &sv) != 0)
		return;
	uint64_t free_bytes = (uint64_t)sv.f_bavail * sv.f_frsize;
	if (free_bytes < j->segment_bytes)   /* the next rotation would fail */
		fprintf(stderr, "journal: %s has %" PRIu64 " MiB free, less than one segment (%" PRIu64
		        " MiB): writes get 503 until space is freed; reads are served\n", j->dir,
		        free_bytes >> 20, j->segment_bytes >> 20);
}

struct journal *jr_open(const struct jr_config *cfg, jr_batch_fn fn, void *arg,
                        char *err, size_t err_len)
{
	assert(cfg != NULL && cfg->dir != NULL);
	char scratch[JR_MSG_BYTES];
	if (err == NULL || err_len == 0) {
		err = scratch;
		err_len = sizeof scratch;
	}
	err[0] = '\0';
	if (cfg->segment_bytes < JR_HEADER_BYTES || cfg->segment_bytes > (1ull << 40)) {
		set_err(err, err_len, "journal: segment_bytes out of range");
		return NULL;
	}
	struct journal *j = open_alloc(cfg, err, err_len);
	if (j == NULL || err[0] != '\0' || open_dir(j, cfg, err, err_len) != 0) {
		jr_close(j);
		return NULL;
	}
	j->after_seq = cfg->after_seq;
	memcpy(j->after_chain, cfg->after_chain, 16);
	struct jr_replay rp = { .fn = fn, .arg = arg };
	if (open_replay(j, &rp, err, err_len) != 0) {
		jr_close(j);
		return NULL;
	}
	if (j->last_seq < j->after_seq) {
		snprintf(err, err_len, "journal: %s ends at batch %" PRIu64 ", before batch %" PRIu64
		         " that the snapshot follows (the journal lost batches)", j->dir, j->last_seq, j->after_seq);
		jr_close(j);
		return NULL;
	}
	if (j->path[0] != '\0') {
		j->fd = open(j->path, O_RDWR | O_CLOEXEC);
		if (j->fd < 0 || (rp.torn_bytes > 0 && open_truncate_tail(j, &rp, err, err_len) != 0)) {
			if (j->fd < 0)
				snprintf(err, err_len, "journal: open %s: %s", j->path, strerror(errno));
			jr_close(j);
			return NULL;
		}
	}
	if (cfg->prezero) {
		if (prep_start(j) != 0) {
			set_err(err, err_len, "journal: cannot start the segment preparer");
			jr_close(j);
			return NULL;
		}
		if (j->fd < 0)
			prep_wait_ready(j);   /* a fresh journal starts on a zeroed segment */
	}
	open_space_check(j);
	assert(j->off <= j->seg_size);
	assert(j->off % JR_ALIGN_BYTES == 0);
	return j;
}

/* ---- the segment preparer -------------------------------------------------- */

#define JR_PREP_CHUNK_BYTES (1u << 20)

/* Writes `size` bytes of zeros to a new DIR/.next-segment.tmp and syncs it.
 * Returns the open fd, or -1. Runs without the lock: the file is private to
 * the preparer until it is published with prep_ready. */
static int prep_make(const char *path, uint64_t size)
{
	unlink(path);   /* a leftover of a crash */
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, JR_FILE_MODE);
	if (fd < 0)
		return -1;
	static const uint8_t zeros[JR_PREP_CHUNK_BYTES];
	for (uint64_t off = 0; off < size;) {
		uint64_t n = size - off < JR_PREP_CHUNK_BYTES ? size - off : JR_PREP_CHUNK_BYTES;
		if (pwrite_full(fd, zeros, n, off) != 0) {
			close(fd);
			unlink(path);
			return -1;
		}
		/* start write-back chunk by chunk and pace ourselves, so preparing
		 * never floods the disk the live segment's fdatasyncs wait on */
		sync_file_range(fd, (off_t)off, (off_t)n, SYNC_FILE_RANGE_WRITE);
		off += n;
		struct timespec pause = { 0, 1000000 };
		nanosleep(&pause, NULL);
	}
	if (fdatasync(fd) != 0) {
		close(fd);
		unlink(path);
		return -1;
	}
	return fd;
}

static void *prep_main(void *arg)
{
	struct journal *j = arg;
	pthread_mutex_lock(&j->prep_mu);
	while (!j->prep_stop) {
		if (!j->prep_wanted || j->prep_ready) {
			pthread_cond_wait(&j->prep_cv, &j->prep_mu);
			continue;
		}
		j->prep_wanted = 0;
		pthread_mutex_unlock(&j->prep_mu);
		int fd = prep_make(j->prep_path, j->segment_bytes);
		int saved = errno;
		if (fd < 0) {
			/* Not fatal: appending makes the segment itself at rotation (and
			 * retries until it can). Logged once per distinct reason. */
			atomic_fetch_add(&j->prep_failures, 1);
			if (j->prep_errno_logged != saved)
				fprintf(stderr, "journal: cannot prepare the next segment in %s (%s); "
				        "it will be made at rotation\n", j->dir, strerror(saved));
			j->prep_errno_logged = saved;
		} else {
			j->prep_errno_logged = 0;
		}
		pthread_mutex_lock(&j->prep_mu);
		if (fd >= 0) {
			j->prep_fd = fd;
			j->prep_ready = 1;
			pthread_cond_broadcast(&j->prep_cv);
		}
	}
	pthread_mutex_unlock(&j->prep_mu);
	return NULL;
}

static int prep_start(struct journal *j)
{
	int n = snprintf(j->prep_path, sizeof j->prep_path, "%s/.next-segment.tmp", j->dir);
	if (n < 0 || (size_t)n >= sizeof j->prep_path)   /* open_dir left room for a segment name */
		return -1;
	pthread_mutex_init(&j->prep_mu, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);   /* the wait below is a timeout, not a date */
	pthread_cond_init(&j->prep_cv, &ca);
	pthread_condattr_destroy(&ca);
	j->prep_fd = -1;
	j->prep_wanted = j->fd < 0;   /* a fresh journal needs its first segment now */
	if (pthread_create(&j->prep_thread, NULL, prep_main, j) != 0)
		return -1;
	j->prep_started = 1;
	return 0;
}

static void prep_stop(struct journal *j)
{
	if (!j->prep_started)
		return;
	pthread_mutex_lock(&j->prep_mu);
	j->prep_stop = 1;
	pthread_cond_broadcast(&j->prep_cv);
	pthread_mutex_unlock(&j->prep_mu);
	pthread_join(j->prep_thread, NULL);
	if (j->prep_ready) {
		close(j->prep_fd);
		unlink(j->prep_path);
	}
	j->prep_started = 0;
}

/* Takes the prepared segment as `path` when one of at least `size` bytes is
 * ready: renamed under the lock (so the preparer cannot unlink it), the
 * directory synced, and the next one asked for. Returns its fd, or -1. */
static int prep_take(struct journal *j, const char *path, uint64_t size)
{
	if (!j->prep_started || size > j->segment_bytes)
		return -1;
	int fd = -1;
	pthread_mutex_lock(&j->prep_mu);
	if (j->prep_ready && rename(j->prep_path, path) == 0) {
		fd = j->prep_fd;
		j->prep_ready = 0;
		j->prep_fd = -1;
	}
	pthread_mutex_unlock(&j->prep_mu);
	if (fd >= 0 && fsync(j->dirfd) != 0) {
		int saved = errno;
		close(fd);
		unlink(path);   /* a retry starts this segment again */
		errno = saved;
		return -1;
	}
	return fd;
}

/* Asks for the next segment once the live one is half full: early enough to
 * be ready at rotation, late enough not to compete with start-up. */
static void prep_maybe_ask(struct journal *j)
{
	if (!j->prep_started || j->off < j->seg_size / 2)
		return;
	pthread_mutex_lock(&j->prep_mu);
	if (!j->prep_ready && !j->prep_wanted) {
		j->prep_wanted = 1;
		pthread_cond_broadcast(&j->prep_cv);
	}
	pthread_mutex_unlock(&j->prep_mu);
	j->prep_ready_seen = 1;
}

/* A fresh journal waits for its first prepared segment (jr_open). */
static void prep_wait_ready(struct journal *j)
{
	pthread_mutex_lock(&j->prep_mu);
	while (!j->prep_ready && !j->prep_stop) {
		struct timespec ts;
		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += 1;
		if (pthread_cond_timedwait(&j->prep_cv, &j->prep_mu, &ts) != 0)
			break;   /* give up after a second: fallocate then */
	}
	pthread_mutex_unlock(&j->prep_mu);
}

/* ---- jr_append ---------------------------------------------------------- */

/* Makes room for `batch_bytes` at j->off: grows an empty segment, or creates
 * the segment that starts at `seq`. Returns 0, or -1 with errno set. */
static int append_make_room(struct journal *j, uint64_t seq, uint64_t batch_bytes)
{
	if (j->fd >= 0 && j->off + batch_bytes <= j->seg_size)
		return 0;
	uint64_t size = batch_bytes > j->segment_bytes ? batch_bytes : j->segment_bytes;
	if (j->fd >= 0 && j->off == 0) {
		/* An empty segment (created, then a crash before its first batch). */
		if (fallocate(j->fd, 0, 0, (off_t)size) != 0 || fsync(j->fd) != 0)
			return -1;
		j->seg_size = size;
		return 0;
	}
	char path[JR_PATH_BYTES_MAX];
	seg_path(path, j->dir, seq);
	/* The descriptor held back for this moment: at EMFILE the segment can
	 * still be opened (the old one is closed right after). */
	if (j->spare_fd >= 0) {
		close(j->spare_fd);
		j->spare_fd = -1;
	}
	int fd = prep_take(j, path, size);
	if (fd < 0) {
		fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, JR_FILE_MODE);
		if (fd < 0 && errno == EEXIST) {
			/* left by an earlier attempt at this sequence that failed
			 * (nothing was ever appended to it): start it again */
			unlink(path);
			fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, JR_FILE_MODE);
		}
		if (fd < 0) {
			int saved = errno;
			j->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			errno = saved;
			return -1;
		}
		if (fallocate(fd, 0, 0, (off_t)size) != 0 || fsync(fd) != 0 || fsync(j->dirfd) != 0) {
			/* ENOSPC, typically: remove the half-made segment so a retry
			 * starts clean (a crash before the unlink leaves an empty
			 * segment, which jr_open accepts and appending grows). */
			int saved = errno;
			close(fd);
			unlink(path);
			j->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			errno = saved;
			return -1;
		}
	}
	if (j->fd >= 0)
		close(j->fd);
	j->fd = fd;
	if (j->spare_fd < 0)
		j->spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	j->prep_ready_seen = 0;
	memcpy(j->path, path, sizeof path);
	j->seg_size = size;
	j->off = 0;
	assert(j->off + batch_bytes <= j->seg_size);
	return 0;
}

/* Writes header + body + pad into j->buf; returns the batch bytes. */
static uint64_t append_build(struct journal *j, uint64_t seq, int64_t time_ms, uint32_t record_count,
                             const void *body, uint32_t body_len)
{
	struct jr_header h;
	memset(&h, 0, sizeof h);
	h.magic = JR_MAGIC;
	h.version = JR_VERSION;
	h.record_count = record_count;
	h.seq = seq;
	h.time_ms = time_ms;
	h.body_len = body_len;
	h.body_hash = XXH3_64bits(body, body_len);
	h.flags = tail_flags(body, body_len);
	memcpy(h.prev_sha256, j->prev_sha, 16);
	memcpy(j->buf, &h, sizeof h);
	h.header_hash = XXH3_64bits(j->buf, 56);
	memcpy(j->buf, &h, sizeof h);
	if (body_len > 0)
		memcpy(j->buf + JR_HEADER_BYTES, body, body_len);
	uint64_t total = round_up8(JR_HEADER_BYTES + (uint64_t)body_len);
	memset(j->buf + JR_HEADER_BYTES + body_len, 0, total - JR_HEADER_BYTES - body_len);
	assert(header_valid(j->buf));
	assert(total <= JR_BATCH_BYTES_MAX);
	return total;
}

/* Queues the write of j->buf (linked to an fdatasync unless no_sync);
 * returns how many completions to expect. */
static unsigned append_prep(struct journal *j, uint64_t total)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&j->ring);
	assert(sqe != NULL);
	io_uring_prep_write(sqe, j->fd, j->buf, (unsigned)total, j->off);
	sqe->user_data = 1;
	if (j->no_sync)
		return 1;
	sqe->flags |= IOSQE_IO_LINK;
	sqe = io_uring_get_sqe(&j->ring);
	assert(sqe != NULL);
	io_uring_prep_fsync(sqe, j->fd, IORING_FSYNC_DATASYNC);
	sqe->user_data = 2;
	return 2;
}

/* Reaps `wanted` completions. Returns 0 when the write wrote all `total`
 * bytes and the sync succeeded, else -1 with errno set (EIO: short write). */
static int append_reap(struct journal *j, unsigned wanted, uint64_t total)
{
	int result = 0;
	for (unsigned i = 0; i < wanted; i++) {
		struct io_uring_cqe *cqe;
		int rc;
		do
			rc = io_uring_wait_cqe(&j->ring, &cqe);
		while (rc == -EINTR);
		if (rc < 0) {
			errno = -rc;
			return -1;
		}
		int res = cqe->res;
		int is_write = cqe->user_data == 1;
		io_uring_cqe_seen(&j->ring, cqe);
		if (result == 0 && res < 0) {
			errno = -res;      /* a failed write cancels the linked sync */
			result = -1;
		} else if (result == 0 && is_write && (uint64_t)res != total) {
			errno = EIO;
			result = -1;
		}
	}
	assert(io_uring_cq_ready(&j->ring) == 0);
	return result;
}

/* One write + fdatasync, one submit, one wait. Returns 0 or -1 (errno). */
static int append_submit(struct journal *j, uint64_t total)
{
	assert(io_uring_sq_ready(&j->ring) == 0);
	unsigned wanted = append_prep(j, total);
	/* A signal may interrupt the wait; a retry submits only what the kernel
	 * has not consumed yet, so nothing is written twice. */
	int rc;
	do
		rc = io_uring_submit_and_wait(&j->ring, wanted);
	while (rc == -EINTR);
	if (rc < 0) {
		errno = -rc;
		return -1;
	}
	return append_reap(j, wanted, total);
}

uint64_t jr_append(struct journal *j, int64_t time_ms, uint32_t record_count,
                   const void *body, uint32_t body_len)
{
	assert(j != NULL);
	assert(body != NULL || body_len == 0);
	assert(body_len <= JR_BODY_BYTES_MAX);
	uint64_t seq = j->last_seq + 1;
	uint64_t total = round_up8(JR_HEADER_BYTES + (uint64_t)body_len);
	if (append_make_room(j, seq, total) != 0)
		return 0;   /* nothing written: a retry starts over */
	append_build(j, seq, time_ms, record_count, body, body_len);
	uint64_t start_ns = now_ns();
	int rc = j->io != NULL ? j->io->write_sync(j->io->ctx, j->fd, j->buf, (size_t)total, j->off)
	                       : append_submit(j, total);
	if (rc != 0)
		return 0;   /* j->off, last_seq, prev_sha unchanged: a retry rewrites it whole */
	j->last_sync_ns = now_ns() - start_ns;
	header_sha16(j->buf, j->prev_sha);
	j->last_seq = seq;
	j->off += total;
	j->bytes += total;
	assert(j->off <= j->seg_size);
	if (j->off >= j->seg_size / 2 && !j->prep_ready_seen)
		prep_maybe_ask(j);
	return seq;
}

uint64_t jr_last_seq(const struct journal *j)
{
	assert(j != NULL);
	return j->last_seq;
}

uint64_t jr_bytes(const struct journal *j)
{
	assert(j != NULL);
	return j->bytes > j->dropped_bytes ? j->bytes - j->dropped_bytes : 0;
}

uint64_t jr_bytes_total(const struct journal *j)
{
	assert(j != NULL);
	return j->bytes;
}

void jr_last_chain(const struct journal *j, uint8_t out[16])
{
	assert(j != NULL);
	memcpy(out, j->prev_sha, 16);
}

uint64_t jr_first_seq(const struct journal *j)
{
	assert(j != NULL);
	return j->first_seq ? j->first_seq : 1;
}

/* Copies src to dst (created), fsync'd. Returns 0 or -1 (errno). */
static int copy_file_synced(const char *src, const char *dst)
{
	int in = open(src, O_RDONLY | O_CLOEXEC);
	if (in < 0)
		return -1;
	int out = open(dst, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, JR_FILE_MODE);
	if (out < 0) {
		int saved = errno;
		close(in);
		errno = saved;
		return -1;
	}
	static uint8_t buf[1 << 16];   /* writer thread only */
	int rc = 0;
	for (uint64_t off = 0;;) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -1 : 0;
			break;
		}
		if (pwrite_full(out, buf, (uint64_t)n, off) != 0) {
			rc = -1;
			break;
		}
		off += (uint64_t)n;
	}
	int saved = errno;
	if (rc == 0 && fsync(out) != 0)
		rc = -1, saved = errno;
	close(in);
	close(out);
	errno = saved;
	return rc;
}

int jr_drop_segments(struct journal *j, uint64_t upto_seq, const char *archive_dir)
{
	assert(j != NULL);
	uint64_t *seqs = NULL;
	int64_t count = seg_list(j->dir, &seqs);
	if (count < 0)
		return -1;
	int dropped = 0, rc = 0;
	/* segment i holds batches [seqs[i], seqs[i+1]); the last one is live */
	for (int64_t i = 0; i + 1 < count && seqs[i + 1] - 1 <= upto_seq; i++) {
		char path[JR_PATH_BYTES_MAX];
		seg_path(path, j->dir, seqs[i]);
		struct stat sb;
		uint64_t size = stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0;
		if (archive_dir != NULL) {
			char dst[JR_PATH_BYTES_MAX + JR_SEG_NAME_BYTES + 2];
			snprintf(dst, sizeof dst, "%s/%s", archive_dir, path + strlen(j->dir) + 1);
			if (rename(path, dst) != 0 && (errno != EXDEV || copy_file_synced(path, dst) != 0 ||
			                               unlink(path) != 0)) {
				rc = -1;
				break;
			}
		} else if (unlink(path) != 0) {
			rc = -1;
			break;
		}
		j->dropped_bytes += size;
		j->first_seq = seqs[i + 1];
		dropped++;
	}
	int saved = errno;
	free(seqs);
	if (dropped > 0)
		fsync(j->dirfd);
	errno = saved;
	return rc != 0 && dropped == 0 ? -1 : dropped;
}

uint64_t jr_prep_failures(const struct journal *j)
{
	assert(j != NULL);
	return atomic_load(&((struct journal *)j)->prep_failures);
}

const uint8_t *jr_last_batch(const struct journal *j)
{
	assert(j != NULL && j->last_seq > 0);
	return j->buf;
}

uint64_t jr_last_sync_ns(const struct journal *j)
{
	assert(j != NULL);
	return j->last_sync_ns;
}

void jr_close(struct journal *j)
{
	if (j == NULL)
		return;
	prep_stop(j);
	if (j->ring.ring_fd >= 0)
		io_uring_queue_exit(&j->ring);
	if (j->fd >= 0)
		close(j->fd);
	if (j->dirfd >= 0)
		close(j->dirfd);   /* releases the flock */
	if (j->spare_fd >= 0)
		close(j->spare_fd);
	free(j->buf);
	free(j);
}

/* ---- jr_reader ---------------------------------------------------------- */

struct jr_reader *jr_reader_open(const char *dir, char *err, size_t err_len)
{
	assert(dir != NULL);
	size_t len = strlen(dir);
	if (len == 0 || len + 1 + JR_SEG_NAME_BYTES >= JR_PATH_BYTES_MAX) {
		set_err(err, err_len, "journal: directory name empty or too long");
		return NULL;
	}
	struct jr_reader *r = calloc(1, sizeof *r);
	if (r == NULL || sc_init(&r->scan) != 0) {
		free(r);
		set_err(err, err_len, "journal: out of memory");
		return NULL;
	}
	memcpy(r->dir, dir, len + 1);
	if (jr_reader_seek(r, 0) != 0) {
		if (err != NULL && err_len > 0)
			snprintf(err, err_len, "journal: %s: %s", dir, strerror(errno));
		jr_reader_close(r);
		return NULL;
	}
	return r;
}

int jr_reader_seek(struct jr_reader *r, uint64_t after_seq)
{
	assert(r != NULL);
	assert(after_seq < UINT64_MAX);
	uint64_t *seqs = NULL;
	int64_t count = seg_list(r->dir, &seqs);
	if (count < 0)
		return -1;
	/* Start in the last segment whose first seq is <= after_seq + 1. */
	uint64_t start = count > 0 ? seqs[0] : 1;
	for (int64_t i = 0; i < count; i++)
		if (seqs[i] <= after_seq + 1)
			start = seqs[i];
	free(seqs);
	struct jr_scan *s = &r->scan;
	sc_close_segment(s);
	s->path[0] = '\0';
	s->last_seq = start - 1;
	s->have_prev = start == 1;   /* mid-journal: the chain is checked from the first batch read */
	memset(s->prev_sha, 0, sizeof s->prev_sha);
	r->skip_seq = after_seq;
	assert(s->fd < 0);
	return 0;
}

/* 1 when the segment that would hold the batch after the last one exists
 * and is not the open one. */
static int reader_next_segment_exists(const struct jr_reader *r)
{
	char path[JR_PATH_BYTES_MAX];
	if (r->scan.last_seq + 1 == r->scan.seg_first)
		return 0;
	seg_path(path, r->dir, r->scan.last_seq + 1);
	struct stat st;
	return stat(path, &st) == 0;
}

/* 1 when any segment newer than the open one exists (0 none, -1 error). */
static int reader_later_segment_exists(const struct jr_reader *r)
{
	uint64_t *seqs = NULL;
	int64_t count = seg_list(r->dir, &seqs);
	if (count < 0)
		return -1;
	int later = count > 0 && seqs[count - 1] > r->scan.seg_first;
	free(seqs);
	assert(r->scan.fd >= 0);
	return later;
}

/* The open segment is final (a newer one exists): the writer may have
 * finished this batch between our read and the check, so look once more.
 * Returns 2 (*b holds a batch), 1 (moved on to the next segment) or -1. */
static int reader_final_segment(struct jr_reader *r, struct jr_batch *b, char *err, size_t err_len)
{
	struct jr_scan *s = &r->scan;
	enum sc_status again = sc_next(s, b);
	if (again == SC_BATCH)
		return 2;
	if (again != SC_END) {
		snprintf(err, err_len, "journal: %s", s->msg);
		return -1;
	}
	sc_close_segment(s);
	s->path[0] = '\0';
	assert(s->fd < 0);
	return 1;
}

/* Handles a non-batch scan answer: 2 = *b holds a batch (the data changed
 * under us), 1 = moved to the next segment, 0 = nothing more yet, -1 =
 * damage (message in err). */
static int reader_on_stop(struct jr_reader *r, enum sc_status st, struct jr_batch *b,
                          char *err, size_t err_len)
{
	struct jr_scan *s = &r->scan;
	assert(st != SC_BATCH);
	if (st == SC_FATAL) {
		snprintf(err, err_len, "journal: %s", s->msg);
		return -1;
	}
	if (st == SC_END)
		return reader_next_segment_exists(r) ? reader_final_segment(r, b, err, err_len) : 0;
	int later = reader_later_segment_exists(r);
	if (later > 0)
		return reader_final_segment(r, b, err, err_len);
	/* A bad batch in the newest segment with nothing valid after it is a
	 * write in progress (or a torn tail that jr_open will truncate). */
	uint64_t written_end;
	int follows = later < 0 ? -1 : sc_scan_rest(s, s->off, &written_end);
	if (follows == 0)
		return 0;
	snprintf(err, err_len, "journal: %s", follows < 0 ? strerror(errno) : s->msg);
	return -1;
}

int jr_reader_next(struct jr_reader *r, uint64_t seq_max, struct jr_batch *b,
                   char *err, size_t err_len)
{
	assert(r != NULL && b != NULL);
	char scratch[JR_MSG_BYTES];
	if (err == NULL || err_len == 0) {
		err = scratch;
		err_len = sizeof scratch;
	}
	struct jr_scan *s = &r->scan;
	for (;;) {
		if (s->last_seq >= seq_max)
			return 0;
		if (s->fd < 0 && sc_open_segment(s, r->dir, s->last_seq + 1) != 0) {
			if (errno == ENOENT)
				return 0;
			snprintf(err, err_len, "journal: open segment %" PRIu64 " in %s: %s", s->last_seq + 1,
			         r->dir, strerror(errno));
			return -1;
		}
		enum sc_status st = sc_next(s, b);
		int rc = st == SC_BATCH ? 2 : reader_on_stop(r, st, b, err, err_len);
		if (rc <= 0)
			return rc;
		if (rc == 2 && b->seq > r->skip_seq) {
			assert(b->seq == s->last_seq);
			return 1;
		}
	}
}

void jr_reader_chain(const struct jr_reader *r, uint8_t out[16])
{
	assert(r != NULL && r->scan.have_prev);
	memcpy(out, r->scan.prev_sha, 16);
}

void jr_reader_close(struct jr_reader *r)
{
	if (r == NULL)
		return;
	sc_free(&r->scan);
	free(r);
}
