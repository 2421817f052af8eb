/* journal.h - the durable, tamper-evident, append-only journal.
 *
 * The journal is a directory of segment files `NNNNNNNNNNNNNNNNNNNN.seg`
 * (20-digit decimal sequence number of the segment's first batch), each
 * preallocated to `segment_bytes` and filled with batches back to back:
 *
 *   struct jr_header (64 bytes, little endian)     body (body_len bytes)   pad to 8
 *
 * The header carries a magic, a version, the batch sequence number (1, 2,
 * 3, ... with no gap across segments), the batch time, the record count, the
 * body length, the xxh3-64 of the body, the SHA-256 of the previous batch's
 * header (all zero for sequence 1: the chain), and the xxh3-64 of the header
 * itself. A batch that does not fit in the current segment starts a new one.
 *
 * Writes go through io_uring: one write of header+body linked to an
 * fdatasync, one submit, one wait. jr_append returns only after the
 * fdatasync completed, which is what lets the writer release answers.
 *
 * Start-up (jr_open) reads every segment in order, checks every header and
 * body, the sequence and the chain, and hands each batch to a callback (the
 * writer replays it through the decide step). After the last valid batch of
 * the LAST segment, bytes that are all zero are free space; a partial batch
 * followed only by zeros/garbage to the end of the last segment is a torn
 * tail: it is zeroed (logged) and appending continues right there. Partial
 * means what a write that never completed leaves in a pre-zeroed segment
 * (some sectors or a prefix arrived, the rest reads zero): no whole header,
 * or more trailing zero bytes than the batch was written with, or a run of
 * 512 zero bytes it was written without (the header's flags record both).
 * A COMPLETE last batch with a bad checksum (say one flipped bit) is damage:
 * it may have been acknowledged, so it is refused, never truncated.
 * Any other damage -- a bad checksum with a valid batch after it, a broken
 * chain, a sequence gap, damage in a segment that is not the last -- makes
 * jr_open fail with a message naming the file and the byte offset.
 */
#ifndef WR_JOURNAL_H
#define WR_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#define JR_MAGIC          0x524a4c46u  /* "FLJR" as little-endian bytes */
#define JR_VERSION        1
#define JR_HEADER_BYTES   64
#define JR_BODY_BYTES_MAX (8u << 20)
#define JR_FLAG_TRAIL_MAX 0x7fffu      /* flags & this: trailing zero bytes of the body (capped) */
#define JR_FLAG_ZERO_RUN  0x8000u      /* the body holds 64 zero 8-byte words in a row */

/* Every field is naturally aligned and there is no hidden padding: the
 * first 56 bytes are exactly what header_hash covers. (The magic is 32 bits
 * so that a 16-byte chain hash and four 64-bit fields fit in 56 bytes.) */
struct jr_header {
	uint32_t magic;           /* JR_MAGIC */
	uint16_t version;         /* JR_VERSION */
	uint16_t flags;           /* JR_FLAG_*: how a torn write of this batch would show */
	uint64_t seq;
	int64_t  time_ms;
	uint64_t body_hash;       /* xxh3-64 of the body */
	uint32_t record_count;
	uint32_t body_len;
	uint8_t  prev_sha256[16]; /* first 16 bytes of SHA-256(previous header) */
	uint64_t header_hash;     /* xxh3-64 of the 56 bytes above */
};
_Static_assert(sizeof(struct jr_header) == JR_HEADER_BYTES, "journal header is 64 bytes on disk");
_Static_assert(offsetof(struct jr_header, header_hash) == 56, "header_hash follows 56 hashed bytes");

/* An injectable write path, for fault-injection tests only (tests/sim):
 * when jr_config.io is set, jr_append hands each batch (header + body + pad,
 * `len` bytes at offset `off` of segment `fd`) to write_sync instead of the
 * io_uring write + fdatasync. It returns 0 once the bytes are durable, or -1
 * with errno set (the append then fails exactly as an I/O error does).
 * NULL (every real caller) keeps the io_uring path unchanged. */
struct jr_io {
	int (*write_sync)(void *ctx, int fd, const void *buf, size_t len, uint64_t off);
	void *ctx;
};

struct jr_config {
	const char *dir;            /* created if missing */
	uint64_t segment_bytes;     /* preallocation and rotation size, e.g. 64 MiB */
	int      no_sync;           /* 1 = skip fdatasync (benchmarks of the decide path only) */
	int      prezero;           /* 1 = segments are written with zeros before use (see below) */
	/* Start-up from a snapshot (snapshot.h): batches <= after_seq are
	 * verified but not handed to the callback, the journal may begin with
	 * any segment that holds batch after_seq + 1 (earlier ones were dropped),
	 * and batch after_seq must hash to after_chain (or, when it is not
	 * there, batch after_seq + 1 must name after_chain as its previous).
	 * 0 = replay everything from batch 1. */
	uint64_t after_seq;
	uint8_t  after_chain[16];
	const struct jr_io *io;     /* NULL: io_uring (see struct jr_io) */
};

/* Pre-zeroed segments. On ext4 an fdatasync after writing into a fallocated
 * (unwritten) extent must also commit the extent conversion; into blocks
 * that were already written it flushes data only: measured here p50 ~160 us
 * against ~245 us. With prezero, a background thread prepares the NEXT
 * segment as DIR/.next-segment.tmp (zeros written, fdatasync'd) and a
 * rotation renames it into place; a fresh journal's first segment is
 * prepared before jr_open returns. Without it, segments are fallocated. */

struct jr_batch {
	uint64_t seq;
	int64_t  time_ms;
	uint32_t record_count;
	uint32_t body_len;
	const uint8_t *body;
	const char *file;           /* segment path, for messages */
	uint64_t offset;            /* byte offset of the header in that file */
};

/* Called for each valid batch in order; a non-zero return stops jr_open,
 * which then fails with that batch's file and offset in the message. */
typedef int (*jr_batch_fn)(void *arg, const struct jr_batch *b);

struct journal;

/* Opens (creating if needed) the journal in cfg->dir, verifies it, truncates
 * a torn tail, and replays every batch through `fn` (may be NULL). Returns
 * the journal ready for appending, or NULL with a one-line reason in `err`
 * (naming the file and offset when the data is damaged). */
struct journal *jr_open(const struct jr_config *cfg, jr_batch_fn fn, void *arg,
                        char *err, size_t err_len);

/* Appends one batch and waits until it is durable (io_uring write +
 * fdatasync). Returns its sequence number, or 0 on an I/O error (errno set:
 * ENOSPC when no segment can be made, EIO for a short write, ...). A failed
 * append changes nothing the journal promised: the same batch may be
 * appended again (it is written whole again at the same offset, so a
 * retry after a failed fdatasync re-dirties every byte it covers), and the
 * writer retries until it succeeds instead of stopping. */
uint64_t jr_append(struct journal *j, int64_t time_ms, uint32_t record_count,
                   const void *body, uint32_t body_len);

uint64_t jr_last_seq(const struct journal *j);     /* 0 when empty */
uint64_t jr_bytes(const struct journal *j);        /* bytes of batches on disk (dropped segments
                                                    * count as their file size) */
uint64_t jr_bytes_total(const struct journal *j);  /* bytes appended or replayed since open; never falls */
/* The chain value of the last batch: first 16 bytes of SHA-256 of its header. */
void jr_last_chain(const struct journal *j, uint8_t out[16]);

/* Removes the segments whose batches are all <= upto_seq (never the one
 * being appended to), oldest first: unlinked, or moved into archive_dir
 * when it is not NULL (renamed, or copied + fsync'd across file systems).
 * Returns how many went (0 or more), or -1 with errno set when the first
 * failure stopped it (what went before stays gone). */
int jr_drop_segments(struct journal *j, uint64_t upto_seq, const char *archive_dir);
/* First sequence of the oldest segment (1 when none was dropped or empty). */
uint64_t jr_first_seq(const struct journal *j);
/* Latency of the last append's write+fdatasync, in nanoseconds. */
uint64_t jr_last_sync_ns(const struct journal *j);
/* Times the background preparer failed to make the next segment (each is
 * logged; appending then makes the segment itself). */
uint64_t jr_prep_failures(const struct journal *j);
/* The last appended batch as written (64-byte header, then the body),
 * valid until the next jr_append. */
const uint8_t *jr_last_batch(const struct journal *j);
void jr_close(struct journal *j);

/* Sequential reader over a journal directory for sinks and tools: it never
 * reads past `seq_max` (a sink passes the writer's durable sequence). */
struct jr_reader;
struct jr_reader *jr_reader_open(const char *dir, char *err, size_t err_len);
/* Positions the reader so that the next batch returned has seq > after_seq.
 * The chain is verified from the first batch the reader reads after this
 * (from seq 1 when it starts at the first segment). Returns 0, or -1 with
 * errno set when the directory cannot be listed. */
int jr_reader_seek(struct jr_reader *r, uint64_t after_seq);
/* Returns 1 with *b filled (body valid until the next call), 0 when no batch
 * <= seq_max is available yet, -1 on damage (message in err). */
int jr_reader_next(struct jr_reader *r, uint64_t seq_max, struct jr_batch *b,
                   char *err, size_t err_len);
/* The chain value (first 16 bytes of SHA-256 of the header) of the batch
 * jr_reader_next returned last: what a snapshot of the state after it is
 * stamped with (snapshotter.c). */
void jr_reader_chain(const struct jr_reader *r, uint8_t out[16]);
void jr_reader_close(struct jr_reader *r);

#endif
