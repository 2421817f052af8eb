/* fs_fault.c - the test-only fault switches (see fs_fault.h). */
#include "common/fs_fault.h"

#ifdef FS_FAULTS
_Atomic uint32_t fs_fault_writer_stall_ms;
_Atomic uint32_t fs_fault_dp_sq_full;
_Atomic uint32_t fs_fault_skew_len;
char fs_fault_skew_sku[FS_SKU_LEN_MAX];
#else
typedef int fs_fault_none;   /* ISO C: a translation unit is never empty */
#endif
