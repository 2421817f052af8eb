/* fs_u64file.h - one unsigned number kept durably in a small text file
 * (the Kafka sink's cursor, the replication epoch). Written to PATH.tmp,
 * fsync'd, renamed over PATH, and the directory fsync'd, so a crash leaves
 * the old number or the new one, never a torn one. */
#ifndef FS_U64FILE_H
#define FS_U64FILE_H

#include <fcntl.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FS_U64FILE_PATH_BYTES 4096

/* The number in PATH; 0 when the file is missing or does not start with one. */
static inline uint64_t fs_u64file_read(const char *path)
{
	FILE *f = fopen(path, "r");
	unsigned long long v = 0;
	if (f) {
		if (fscanf(f, "%llu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

/* Atomically replaces PATH with V (file MODE). 0, or -1 (errno set) and
 * PATH unchanged. */
static inline int fs_u64file_write(const char *path, uint64_t v, mode_t mode)
{
	char tmp[FS_U64FILE_PATH_BYTES + 8], text[32];
	if (strlen(path) >= FS_U64FILE_PATH_BYTES)
		return -1;
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int len = snprintf(text, sizeof text, "%" PRIu64 "\n", v);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	int ok = write(fd, text, (size_t)len) == len && fsync(fd) == 0;
	close(fd);
	if (!ok || rename(tmp, path) != 0)
		return -1;
	char dir[FS_U64FILE_PATH_BYTES];
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = 0;
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	return 0;
}

#endif
