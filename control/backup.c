/* backup.c - a consistent, verified copy of the data dir (see backup.h). */
#include "control/backup.h"
#include "writer/journal.h"
#include "writer/snapshot.h"
#include "writer/writer.h"
#include "writer/sink/sink_ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define BK_PATH (PATH_MAX + 320)

/* Copies src to dst and fsyncs it. 0, or -1 with the reason in err. */
static int copy_file(const char *src, const char *dst, char *err, size_t err_len)
{
	int in = open(src, O_RDONLY | O_CLOEXEC);
	int out = in < 0 ? -1 : open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	int rc = in < 0 || out < 0 ? -1 : 0;
	static char buf[1 << 20];   /* the admin thread only */
	while (rc == 0) {
		ssize_t n = read(in, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -1 : 0;
			break;
		}
		for (ssize_t done = 0; done < n && rc == 0;) {
			ssize_t k = write(out, buf + done, (size_t)(n - done));
			if (k < 0 && errno == EINTR)
				continue;
			if (k <= 0)
				rc = -1;
			else
				done += k;
		}
	}
	if (rc == 0 && fsync(out) != 0)
		rc = -1;
	if (rc != 0)
		snprintf(err, err_len, "backup: copying %s to %s: %s", src, dst, strerror(errno));
	if (in >= 0)
		close(in);
	if (out >= 0)
		close(out);
	return rc;
}

static int fsync_dir(const char *dir)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc = fd < 0 || fsync(fd) != 0 ? -1 : 0;
	if (fd >= 0)
		close(fd);
	return rc;
}

/* Copies the regular files of src_dir whose names `want` accepts. */
static int copy_dir(const char *src_dir, const char *dst_dir, int (*want)(const char *, void *), void *arg,
                    char *err, size_t err_len)
{
	DIR *d = opendir(src_dir);
	if (d == NULL)
		return errno == ENOENT ? 0 : -1;
	if (mkdir(dst_dir, 0700) != 0 && errno != EEXIST) {
		closedir(d);
		snprintf(err, err_len, "backup: mkdir %s: %s", dst_dir, strerror(errno));
		return -1;
	}
	int rc = 0;
	struct dirent *e;
	while (rc == 0 && (e = readdir(d)) != NULL) {
		char src[BK_PATH], dst[BK_PATH];
		struct stat sb;
		if (snprintf(src, sizeof src, "%s/%s", src_dir, e->d_name) >= (int)sizeof src ||
		    snprintf(dst, sizeof dst, "%s/%s", dst_dir, e->d_name) >= (int)sizeof dst)
			continue;
		if (e->d_name[0] == '.' || stat(src, &sb) != 0 || !S_ISREG(sb.st_mode) || !want(e->d_name, arg))
			continue;
		rc = copy_file(src, dst, err, err_len);
	}
	closedir(d);
	return rc != 0 ? rc : fsync_dir(dst_dir);
}

static int want_secret(const char *name, void *arg)
{
	(void)arg;
	return strcmp(name, "jwt.secret") == 0 || strcmp(name, "admin.token") == 0;
}

static int want_any(const char *name, void *arg)
{
	(void)arg;
	(void)name;
	return 1;
}

/* What the sinks need to resume where they were in a restored copy: the
 * model checkpoints of Kafka/Redis sinks (sink-<kind>-<name>.model, never
 * a half-written .tmp) and the Kafka sink's cursor files. */
static int want_sink_state(const char *name, void *arg)
{
	(void)arg;
	size_t n = strlen(name);
	return (n > 11 && strncmp(name, "sink-", 5) == 0 && strcmp(name + n - 6, ".model") == 0) ||
	       (n > 13 && strncmp(name, "kafka-", 6) == 0 && strcmp(name + n - 7, ".cursor") == 0);
}

/* The oldest batch a model checkpoint in `dir` stands at, or `upto` when
 * none is older: the copied journal must go on from there for that sink. */
static uint64_t oldest_model_seq(const char *dir, uint64_t upto)
{
	DIR *d = opendir(dir);
	if (d == NULL)
		return upto;
	char path[BK_PATH];
	for (struct dirent *e; (e = readdir(d)) != NULL;) {
		uint64_t seq;
		size_t n = strlen(e->d_name);
		if (n <= 6 || strcmp(e->d_name + n - 6, ".model") != 0 || !want_sink_state(e->d_name, NULL))
			continue;
		snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
		if (sink_ckpt_seq(path, &seq) == 0 && seq < upto)
			upto = seq;
	}
	closedir(d);
	return upto;
}

/* Journal segments holding batches after `after` (by name: a segment is
 * named by its first batch; the one before the first such also counts). */
static int want_segment(const char *name, void *arg)
{
	const uint64_t *bounds = arg;   /* [0] = start segment's first seq */
	if (strlen(name) != 24 || strcmp(name + 20, ".seg") != 0)
		return 0;
	return strtoull(name, NULL, 10) >= bounds[0];
}

/* The first seq of the segment that holds batch after + 1. */
static uint64_t start_segment(const char *jdir, uint64_t after)
{
	uint64_t start = 1;
	DIR *d = opendir(jdir);
	if (d == NULL)
		return 1;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		if (strlen(e->d_name) != 24 || strcmp(e->d_name + 20, ".seg") != 0)
			continue;
		uint64_t s = strtoull(e->d_name, NULL, 10);
		if (s <= after + 1 && s > start)
			start = s;
	}
	closedir(d);
	return start;
}

int ctl_backup(struct writer *w, const char *data_dir, const char *dest, uint64_t *snap_seq,
               uint64_t *last_seq, char *err, size_t err_len)
{
	if (mkdir(dest, 0700) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "backup: mkdir %s: %s", dest, strerror(errno));
		return -1;
	}
	DIR *d = opendir(dest);
	int entries = 0;
	for (struct dirent *e; d && (e = readdir(d)) != NULL;)
		entries += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
	if (d)
		closedir(d);
	if (d == NULL || entries > 0) {
		snprintf(err, err_len, "backup: %s must be a new or empty directory", dest);
		return -1;
	}
	int64_t seq = wr_snapshot_now(w, 600000, err, err_len);
	if (seq < 0)
		return -1;
	char src[BK_PATH], dst[BK_PATH], sdir[BK_PATH], jsrc[BK_PATH], jdst[BK_PATH];
	snprintf(sdir, sizeof sdir, "%s/%s", dest, WR_SNAP_SUBDIR);
	if (mkdir(sdir, 0755) != 0) {
		snprintf(err, err_len, "backup: mkdir %s: %s", sdir, strerror(errno));
		return -1;
	}
	wr_snapshot_path(src, sizeof src, data_dir, (uint64_t)seq);
	wr_snapshot_path(dst, sizeof dst, dest, (uint64_t)seq);
	if (copy_file(src, dst, err, err_len) != 0 || fsync_dir(sdir) != 0)
		return -1;
	/* the sinks' state first (each at or before the durable batch), then the
	 * journal from the oldest of it or the snapshot, whichever is older:
	 * segments after a sink's checkpoint are kept (the segment gate) */
	if (copy_dir(data_dir, dest, want_sink_state, NULL, err, err_len) != 0)
		return -1;
	uint64_t durable = atomic_load(wr_durable_seq(w));
	snprintf(jsrc, sizeof jsrc, "%s/journal", data_dir);
	snprintf(jdst, sizeof jdst, "%s/journal", dest);
	uint64_t bounds[1] = { start_segment(jsrc, oldest_model_seq(dest, (uint64_t)seq)) };
	snprintf(src, sizeof src, "%s/draws", data_dir);
	snprintf(dst, sizeof dst, "%s/draws", dest);
	if (copy_dir(jsrc, jdst, want_segment, bounds, err, err_len) != 0 ||
	    copy_dir(data_dir, dest, want_secret, NULL, err, err_len) != 0 ||
	    copy_dir(src, dst, want_any, NULL, err, err_len) != 0 || fsync_dir(dest) != 0) {
		if (err[0] == 0)
			snprintf(err, err_len, "backup: copying into %s: %s", dest, strerror(errno));
		return -1;
	}
	/* verify: the snapshot's checksums, then the journal from it */
	struct wr_snap_stamp stamp;
	wr_snapshot_path(dst, sizeof dst, dest, (uint64_t)seq);
	if (wr_snapshot_load(dst, NULL, &stamp, NULL, err, err_len) != 0)
		return -1;
	struct jr_config jc = { .dir = jdst, .segment_bytes = 64u << 20, .after_seq = stamp.seq };
	memcpy(jc.after_chain, stamp.chain, 16);
	char jerr[1024];
	struct journal *j = jr_open(&jc, NULL, NULL, jerr, sizeof jerr);
	if (j == NULL) {
		snprintf(err, err_len, "backup: the copy does not verify: %s", jerr);
		return -1;
	}
	*last_seq = jr_last_seq(j);
	jr_close(j);
	if (*last_seq < durable) {
		snprintf(err, err_len, "backup: the copy ends at batch %" PRIu64 ", before batch %" PRIu64
		         " that was durable when it began", *last_seq, durable);
		return -1;
	}
	*snap_seq = (uint64_t)seq;
	return 0;
}

int ctl_backup_secrets(const char *data_dir, const char *dest, char *err, size_t err_len)
{
	if (copy_dir(data_dir, dest, want_secret, NULL, err, err_len) != 0 || fsync_dir(dest) != 0) {
		if (err[0] == 0)
			snprintf(err, err_len, "backup: copying the secrets into %s: %s", dest, strerror(errno));
		return -1;
	}
	return 0;
}
