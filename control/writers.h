/* writers.h - the data dir of a box with writer shards (flashsaled
 * --writers N): where each shard keeps its journal, snapshots and draw
 * seeds, and the check that a data dir is started with the count it was
 * made for (a SKU's history lives in exactly one shard's journal, so
 * reopening it with another count would put the SKU on another writer).
 *
 *   --writers 1 (default)   DIR/journal, DIR/snapshots, DIR/draws (as ever)
 *   --writers N > 1         DIR/writers ("N\n", written once, fsync'd) and
 *                           DIR/shard-0 .. DIR/shard-{N-1}, each laid out
 *                           like a one-writer DIR; the secrets stay in DIR
 */
#ifndef CTL_WRITERS_H
#define CTL_WRITERS_H

#include <stddef.h>
#include <stdint.h>

#define CTL_WRITERS_FILE "writers"

/* Shard k's directory: data_dir itself with one writer, else
 * data_dir/shard-k. Returns 0, or -1 when it does not fit in cap. */
int ctl_writer_dir(char *out, size_t cap, const char *data_dir, uint32_t writers, uint32_t k);

/* The writer count data_dir was made for: the number in DIR/writers, 1
 * without that file; -1 (reason in err) when the file is unreadable. */
int ctl_writers_of(const char *data_dir, char *err, size_t err_len);

/* Checks that data_dir (which exists) fits `writers` and, the first time
 * a fresh dir is started with N > 1, writes DIR/writers and makes the
 * shard dirs. Refuses (-1, one line in err) a count other than the one
 * the dir was made for, a one-writer journal or snapshot when N > 1, and
 * a shard-K dir with K >= N. */
int ctl_writers_layout(const char *data_dir, uint32_t writers, char *err, size_t err_len);

#endif
