/* sink_ckpt.h - model checkpoints: a sink thread's projection (struct
 * sink_model: SKU counters, live reservations and orders) saved in a file,
 * so that a sink that keeps a model (Kafka, Redis: sink_ops.wants_model)
 * resumes from it at (re)open instead of replaying the journal from batch
 * 1 -- which is what lets the writer delete the segments before it.
 *
 * One file per sink, `<data_dir>/sink-<kind>-<name>.model`:
 *
 *   struct sink_ckpt_header (host byte order: little endian on x86-64, arm64)
 *   anomaly text (160 bytes)
 *   sku_count x struct sm_sku
 *   res_count x struct sm_res       (the res table's entries, slot order)
 *   order_count x struct sm_order   (the orders table's entries)
 *   xxh3-64 of every byte above (8 bytes)
 *
 * The entries are the in-memory structs as they are: the file is read by
 * the binary that wrote it (or a later one with the same layout); the
 * header carries each struct's size and the format version, and a file
 * whose sizes, version, length or checksum do not match is refused, never
 * half-used. The checksum is xxh3-64, as the journal's batches: libxxhash
 * is already a dependency (zlib is not) and it is fast enough that a
 * checkpoint costs what its write(2) and fdatasync cost.
 *
 * Writing is the pattern of common/fs_u64file.h: PATH.tmp written and
 * fdatasync'd, renamed over PATH, the directory fsync'd; a crash at any
 * point leaves the previous checkpoint or the new one, never a torn one.
 * Cost: O(SKUs + the res/order tables' capacity), i.e. bounded by the peak
 * number of live reservations and orders (keep_terminal 0 drops finished
 * ones), not by the length of the history.
 */
#ifndef WR_SINK_CKPT_H
#define WR_SINK_CKPT_H

#include <stddef.h>
#include <stdint.h>
#include "writer/sink/sink_model.h"

#define SINK_CKPT_MAGIC   0x4c444f4d4b4e4953ull  /* "SINKMODL" as little-endian bytes */
#define SINK_CKPT_VERSION 1
#define SINK_CKPT_PATH_BYTES 1024

struct sink_ckpt_header {
	uint64_t magic;           /* SINK_CKPT_MAGIC */
	uint32_t version;         /* SINK_CKPT_VERSION */
	uint32_t keep_terminal;   /* the model's; a model with the other rule is refused */
	uint64_t seq;             /* the model's last_seq: the last batch folded in */
	uint64_t records;
	uint64_t anomalies;
	uint64_t res_count;
	uint64_t order_count;
	uint32_t sku_count;
	uint16_t sku_bytes;       /* sizeof(struct sm_sku) of the writer */
	uint8_t  res_bytes;       /* sizeof(struct sm_res) */
	uint8_t  order_bytes;     /* sizeof(struct sm_order) */
};
_Static_assert(sizeof(struct sink_ckpt_header) == 64, "checkpoint header is 64 bytes on disk");
_Static_assert(sizeof(struct sm_res) < 256 && sizeof(struct sm_order) < 256, "entry sizes fit a byte");

/* `<data_dir>/sink-<kind>-<name>.model` into out. 0, or -1 when too long. */
int sink_ckpt_path(char *out, size_t cap, const char *data_dir, const char *kind, const char *name);

/* Writes the model to PATH.tmp and fdatasyncs it (not yet the checkpoint).
 * 0, or -1 with errno set and err saying what failed. */
int sink_ckpt_write_tmp(const char *path, const struct sink_model *m, char *err, size_t err_len);
/* Renames PATH.tmp over PATH and fsyncs the directory: 0, or -1 (err set;
 * after a failed directory fsync PATH may or may not survive a crash). */
int sink_ckpt_commit(const char *path, char *err, size_t err_len);
/* Both: the model is the checkpoint once this returns 0. */
int sink_ckpt_write(const char *path, const struct sink_model *m, char *err, size_t err_len);

/* Loads the checkpoint into *m (initialised here; keep_terminal must match
 * the file's). Returns 1 loaded, 0 no checkpoint (no file), -1 unreadable
 * or damaged (err says why, without the path), -2 out of memory. Unless it returns 1, *m is
 * left zeroed (free, not initialised): the caller sm_init()s its own. */
int sink_ckpt_read(const char *path, struct sink_model *m, int keep_terminal, char *err, size_t err_len);

/* The batch the checkpoint at `path` stands at, from its header alone (for
 * flashctl backup, which keeps the journal after it; the whole file is
 * checked when a sink loads it). 0, or -1 when absent or not a checkpoint
 * of this version. */
int sink_ckpt_seq(const char *path, uint64_t *seq);

#endif
