/* backup.h - `flashctl backup DIR`: a consistent, verified copy of a
 * running appliance's data dir.
 *
 * A fresh snapshot is taken, then copied with every journal segment from
 * the one holding the batch after it to the newest, the secrets (jwt.secret,
 * admin.token) and the waiting rooms' draw seeds. The copy is verified
 * before success: the snapshot's checksums, and the journal opened from the
 * snapshot (checksums, sequence, chain from the snapshot's hash on; a batch
 * caught half-written at the end is truncated as a torn tail). DIR is then
 * a valid --data-dir for flashsaled on any machine.
 */
#ifndef CTL_BACKUP_H
#define CTL_BACKUP_H

#include <stddef.h>
#include <stdint.h>

struct writer;

/* Backs up data_dir into dest (created; must not exist or be empty).
 * Returns 0 with the snapshot's sequence and the last batch copied, or -1
 * with a one-line reason (the partial copy is left for inspection). Runs
 * on the admin thread: blocks for the snapshot and the copy. */
int ctl_backup(struct writer *w, const char *data_dir, const char *dest, uint64_t *snap_seq,
               uint64_t *last_seq, char *err, size_t err_len);

/* Copies data_dir's secrets (jwt.secret, admin.token) into dest, which
 * exists (writer shards: DIR holds them, each DIR/shard-K its own backup).
 * 0, or -1 with a reason. */
int ctl_backup_secrets(const char *data_dir, const char *dest, char *err, size_t err_len);

#endif
