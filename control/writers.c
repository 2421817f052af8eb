/* writers.c - the data dir layout of writer shards (writers.h). */
#include "control/writers.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int ctl_writer_dir(char *out, size_t cap, const char *data_dir, uint32_t writers, uint32_t k)
{
	assert(k < (writers ? writers : 1));
	int n = writers <= 1 ? snprintf(out, cap, "%s", data_dir) : snprintf(out, cap, "%s/shard-%u", data_dir, k);
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

int ctl_writers_of(const char *data_dir, char *err, size_t err_len)
{
	char path[4096];
	snprintf(path, sizeof path, "%s/%s", data_dir, CTL_WRITERS_FILE);
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		if (errno == ENOENT)
			return 1;
		snprintf(err, err_len, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	char line[32], *end = NULL;
	unsigned long n = fgets(line, sizeof line, f) ? strtoul(line, &end, 10) : 0;
	int ok = end != NULL && end != line && (*end == '\n' || *end == 0) && n >= 2 && n <= 16;
	fclose(f);
	if (!ok) {
		snprintf(err, err_len, "%s: expected a writer count 2..16", path);
		return -1;
	}
	return (int)n;
}

/* 1 when dir holds an entry whose name ends with suffix. */
static int dir_has(const char *dir, const char *suffix)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	int found = 0;
	size_t sl = strlen(suffix);
	for (struct dirent *e; !found && (e = readdir(d)) != NULL;) {
		size_t l = strlen(e->d_name);
		found = l > sl && strcmp(e->d_name + l - sl, suffix) == 0;
	}
	closedir(d);
	return found;
}

/* The first shard-K entry with K >= writers, or -1. */
static long extra_shard(const char *data_dir, uint32_t writers)
{
	DIR *d = opendir(data_dir);
	long extra = -1;
	for (struct dirent *e; d && extra < 0 && (e = readdir(d)) != NULL;) {
		char *end;
		if (strncmp(e->d_name, "shard-", 6) != 0)
			continue;
		long k = strtol(e->d_name + 6, &end, 10);
		if (*end == 0 && k >= (long)writers)
			extra = k;
	}
	if (d)
		closedir(d);
	return extra;
}

static int write_marker(const char *data_dir, uint32_t writers, char *err, size_t err_len)
{
	char path[4096], tmp[4200], text[16];
	snprintf(path, sizeof path, "%s/%s", data_dir, CTL_WRITERS_FILE);
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	int len = snprintf(text, sizeof text, "%u\n", writers);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int ok = fd >= 0 && write(fd, text, (size_t)len) == len && fsync(fd) == 0;
	if (fd >= 0)
		close(fd);
	ok = ok && rename(tmp, path) == 0;
	int dfd = ok ? open(data_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC) : -1;
	ok = ok && dfd >= 0 && fsync(dfd) == 0;
	if (dfd >= 0)
		close(dfd);
	if (!ok)
		snprintf(err, err_len, "cannot write %s: %s", path, strerror(errno));
	return ok ? 0 : -1;
}

int ctl_writers_layout(const char *data_dir, uint32_t writers, char *err, size_t err_len)
{
	assert(writers >= 1 && writers <= 16);
	int made = ctl_writers_of(data_dir, err, err_len);
	if (made < 0)
		return -1;
	if (made != 1 && (uint32_t)made != writers) {
		snprintf(err, err_len, "the data dir %s holds %d writer shards (%s/%s): start it with --writers %d",
		         data_dir, made, data_dir, CTL_WRITERS_FILE, made);
		return -1;
	}
	long extra = extra_shard(data_dir, writers);
	if (extra >= 0) {
		snprintf(err, err_len, "the data dir %s holds %s/shard-%ld, more shards than --writers %u: start it with "
		         "the count in %s/%s", data_dir, data_dir, extra, writers, data_dir, CTL_WRITERS_FILE);
		return -1;
	}
	if (writers == 1 || made == (int)writers)
		return 0;
	char jdir[4096], sdir[4096];
	snprintf(jdir, sizeof jdir, "%s/journal", data_dir);
	snprintf(sdir, sizeof sdir, "%s/snapshots", data_dir);
	if (dir_has(jdir, ".seg") || dir_has(sdir, ".snap")) {
		snprintf(err, err_len, "the data dir %s holds a one-writer journal (%s): --writers %u needs a fresh data "
		         "dir (or start this one with --writers 1)", data_dir, jdir, writers);
		return -1;
	}
	for (uint32_t k = 0; k < writers; k++) {
		char dir[4096];
		if (ctl_writer_dir(dir, sizeof dir, data_dir, writers, k) != 0 || (mkdir(dir, 0700) != 0 && errno != EEXIST)) {
			snprintf(err, err_len, "cannot create %s: %s", dir, strerror(errno));
			return -1;
		}
	}
	return write_marker(data_dir, writers, err, err_len);
}
