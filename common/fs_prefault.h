/* fs_prefault.h - fault in a fixed table's pages at start-up, so the first
 * touch of a new user, key or reservation in the first second of a sale
 * costs what the millionth does (no page-fault storm, no zeroing of 2 MiB
 * pages inside a decision). One madvise(MADV_POPULATE_WRITE) where the
 * kernel has it (5.14+), else one write per 4 KiB page.
 */
#ifndef FS_PREFAULT_H
#define FS_PREFAULT_H

#include <stddef.h>
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* p: page-aligned start of an anonymous private writable mapping. Returns 0,
 * or -1 when the memory cannot be committed (the caller may go on: the
 * pages then fault in on first use, as before). */
static inline int fs_prefault(void *p, size_t bytes)
{
	if (bytes == 0)
		return 0;
	if (madvise(p, bytes, MADV_POPULATE_WRITE) == 0)
		return 0;
	volatile char *c = p;
	for (size_t off = 0; off < bytes; off += 4096)
		c[off] = c[off];
	return 0;
}

#endif
