/* record.h - how one decided command is stored in a journal batch body.
 *
 * A batch body is a sequence of records. Each record is a decided
 * `struct fs_cmd` (see common/fs_cmd.h: inputs plus the OUT fields the
 * decide step filled in: err, out_status, out_ref, out_val) in a compact little-endian
 * form -- a fixed part followed by the four strings at their actual length:
 *
 *   off size field
 *     0    2  record length in bytes, including this field, multiple of 8
 *     2    1  type (enum fs_cmd_type)
 *     3    1  err (enum fs_err, the outcome)
 *     4    1  pay (enum fs_pay)
 *     5    1  sku_len      6 1 user_len     7 1 key_len     8 1 text_len
 *     9    1  out_status   10 2 zero
 *    12    4  quantity
 *    16    8  ref          24 8 out_ref     32 8 out_val
 *    40   40  sale args (total u64, per_user u32, hold_ms u32, waitlist_max u32,
 *             default_tier u32, price_cents i64, opens_at_ms i64)
 *    80    8  prequeue_window_ms u32, outflow_per_s u32
 *    88    .  sku, user, key, text bytes back to back, then zero padding to 8
 *
 * `origin` and `tag` are volatile routing data and are NOT stored.
 * Only commands that changed state are journaled (err == FS_OK); derived
 * FS_CMD_PROMOTE records follow the command that freed the units.
 */
#ifndef WR_RECORD_H
#define WR_RECORD_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"

#define WR_REC_FIXED_BYTES 88
#define WR_REC_BYTES_MAX   (WR_REC_FIXED_BYTES + FS_SKU_LEN_MAX + 3 * FS_ID_LEN_MAX + 8)

/* Encodes c at out (room for WR_REC_BYTES_MAX); returns bytes written. */
uint32_t wr_rec_encode(const struct fs_cmd *c, uint8_t *out);

/* Decodes one record from buf[0..len); returns its length, or 0 when the
 * bytes are not a well-formed record (bad length, type, string lengths). */
uint32_t wr_rec_decode(const uint8_t *buf, uint32_t len, struct fs_cmd *c);

/* Most records a batch body of `bytes` can hold (each is >= the fixed part). */
#define WR_REC_COUNT_MAX(bytes) ((bytes) / WR_REC_FIXED_BYTES)

/* Decodes a whole batch body into cmds[0..cap). Returns the number of
 * records, or -1 when a record is malformed, the body holds more than cap
 * records, or the count is not record_count (bytes left over included).
 * On -1, cmds[] holds whatever decoded before the fault. */
int wr_rec_decode_batch(const uint8_t *body, uint32_t body_len, uint32_t record_count,
                        struct fs_cmd *cmds, uint32_t cap);

#endif
