/* fs_fault.h - test-only fault switches. They exist only when FS_FAULTS is
 * defined, which meson does for the debug build alone (buildtype=debug):
 * the release build has no switch and no code behind it. The admin socket
 * sets them (POST /admin/fault, debug build only); e2e tests probe for that
 * route and skip where it answers 404.
 *   writer_stall_ms  the writer sleeps this long inside its next batch
 *                    (after deciding, before the journal write): a stalled
 *                    writer for /healthz;
 *   skew_sku         the decide step adds one phantom available unit to this
 *                    SKU in its next batch: a broken conservation invariant,
 *                    which must freeze the sale;
 *   dp_sq_full       the io_uring workers find no submission entry for the
 *                    next N operations they arm, as when the kernel refuses
 *                    submissions (completion queue overflow): each must be
 *                    armed again later, never lost, never an abort.
 */
#ifndef FS_FAULT_H
#define FS_FAULT_H

#ifdef FS_FAULTS
#include <stdatomic.h>
#include <stdint.h>
#include "common/fs_cmd.h"

extern _Atomic uint32_t fs_fault_writer_stall_ms;
extern _Atomic uint32_t fs_fault_dp_sq_full;
extern _Atomic uint32_t fs_fault_skew_len;           /* 0: off; else the length of fs_fault_skew_sku */
extern char fs_fault_skew_sku[FS_SKU_LEN_MAX];       /* written before fs_fault_skew_len (release) */
#endif

#endif
