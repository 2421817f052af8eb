/* snapshot.h - snapshots of the writer's whole state on disk, so start-up
 * is the latest valid snapshot plus the journal's tail (not the whole
 * history), and journal segments before it can go.
 *
 * A snapshot is DATA_DIR/snapshots/NNNNNNNNNNNNNNNNNNNN.snap, named by the
 * journal sequence of the last batch it contains (20 decimal digits):
 *
 *   header (64 bytes, little endian): magic "FSSNAP01", version, the journal
 *     sequence and batch time it follows, the first 16 bytes of SHA-256 of
 *     that batch's header (the chain: batch seq+1 must name it as its
 *     previous), the section count, and the xxh3-64 of the 56 bytes before.
 *   sections (alloc.h WR_IMG_*): u32 id, u32 zero, u64 length, payload,
 *     zero padding to 8, u64 xxh3-64 of the 16-byte section header and the
 *     payload.
 *   trailer: u32 0xffffffff, u32 zero, u64 section count, u64 xxh3-64 of
 *     every section hash in order (a file cut at a section boundary fails).
 *
 * It is written to a temporary file (.tmp-SEQ.snap), fdatasync'd, renamed
 * into place and the directory fsync'd: a crash at any point leaves either
 * no snapshot of that sequence or a complete one.
 */
#ifndef WR_SNAPSHOT_H
#define WR_SNAPSHOT_H

#include <stddef.h>
#include <stdint.h>
#include "writer/alloc.h"

#define WR_SNAP_SUBDIR      "snapshots"
#define WR_SNAP_KEEP        2      /* the newest and the one before it */
#define WR_SNAP_LIST_MAX    64

struct wr_snap_stamp {
	uint64_t seq;        /* last journal batch inside the snapshot (0: empty journal) */
	int64_t  time_ms;    /* that batch's time */
	uint8_t  chain[16];  /* first 16 bytes of SHA-256 of that batch's header */
};

/* Writes st as DATA_DIR/snapshots/SEQ.snap (temp file, fdatasync, rename,
 * directory fsync). Uses a static buffer and no malloc; calls from several
 * threads take turns.
 * `pace_us` > 0 sleeps that long before every section and after every
 * 64 KiB (tests of a crash in the middle). Returns 0, or -1 with a one-line reason in err. */
int wr_snapshot_write(const char *data_dir, const struct wr_state *st, const struct wr_snap_stamp *stamp,
                      uint32_t pace_us, char *err, size_t err_len);

/* Sequences of the snapshots in DATA_DIR/snapshots, newest first (at most
 * max). Returns how many (0 when the directory does not exist). */
int wr_snapshot_list(const char *data_dir, uint64_t *seqs, int max);

/* The path of snapshot `seq`. */
void wr_snapshot_path(char *out, size_t cap, const char *data_dir, uint64_t seq);

/* Verifies a snapshot file and, when st is not NULL, loads it into st (a
 * fresh state from wr_state_new with the same limits). Returns 0 with the
 * stamp filled (and *bytes, when not NULL, the file size), or -1 with a
 * reason naming the file and byte offset of the damage. On failure st is
 * left half-loaded: free it. */
int wr_snapshot_load(const char *path, struct wr_state *st, struct wr_snap_stamp *stamp, uint64_t *bytes,
                     char *err, size_t err_len);

/* The table limits snapshot `path` was taken with (tools size their state
 * from it). Returns 0, or -1 with the reason in err. */
int wr_snapshot_limits(const char *path, struct wr_limits *out, char *err, size_t err_len);

/* Removes every snapshot but the newest `keep`, and leftover temp files.
 * Returns the oldest kept sequence (0 when none is kept). */
uint64_t wr_snapshot_prune(const char *data_dir, int keep);

#endif
