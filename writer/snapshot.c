/* snapshot.c - snapshot files of the writer's state (format in snapshot.h).
 *
 * Writing streams the sections of wr_state_image() through one static
 * buffer (one snapshot at a time per process) with a running xxh3 per
 * section; nothing is allocated. The snapshot thread (snapshotter.c) runs
 * it on its own copy of the state while the writer goes on deciding. Loading maps the file read-only and
 * checks every hash before a section reaches the state.
 */
#define XXH_STATIC_LINKING_ONLY
#include "writer/snapshot.h"

#include <assert.h>
#include <pthread.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <xxhash.h>

#define SNAP_MAGIC        UINT64_C(0x3130504150534653)  /* "FSSNAP01" little endian */
#define SNAP_VERSION      1u
#define SNAP_HEADER_BYTES 64u
#define SNAP_TRAILER_ID   0xffffffffu
#define SNAP_BUF_BYTES    (1u << 20)
#define SNAP_PACE_BYTES   (64u << 10)

struct snap_header {
	uint64_t magic;
	uint32_t version;
	uint32_t section_count;
	uint64_t seq;
	int64_t  time_ms;
	uint8_t  chain[16];
	uint64_t _zero;
	uint64_t header_hash;   /* xxh3-64 of the 56 bytes above */
};
_Static_assert(sizeof(struct snap_header) == SNAP_HEADER_BYTES, "snapshot header is 64 bytes");

struct snap_sec { uint32_t id; uint32_t _zero; uint64_t bytes; };

/* The streaming writer (one at a time: the buffer is static). */
struct snap_out {
	int fd;
	uint8_t *buf;
	size_t len;
	uint64_t written;       /* bytes handed to write(2) */
	int open_section;
	uint64_t sec_left;
	uint64_t sec_bytes;
	uint32_t sections;
	XXH3_state_t sec_hash;
	XXH3_state_t all_hash;  /* of the section hashes */
	uint32_t pace_us;
	uint64_t paced;
	int err_no;
};

static uint8_t snap_buf[SNAP_BUF_BYTES];

static int out_flush(struct snap_out *o)
{
	size_t done = 0;
	while (done < o->len) {
		ssize_t n = write(o->fd, o->buf + done, o->len - done);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			o->err_no = n < 0 ? errno : EIO;
			return -1;
		}
		done += (size_t)n;
		o->written += (uint64_t)n;
		if (o->pace_us && o->written - o->paced >= SNAP_PACE_BYTES) {
			struct timespec ts = { .tv_sec = o->pace_us / 1000000, .tv_nsec = (long)(o->pace_us % 1000000) * 1000 };
			nanosleep(&ts, NULL);
			o->paced = o->written;
		}
	}
	o->len = 0;
	return 0;
}

static int out_put(struct snap_out *o, const void *p, size_t n)
{
	const uint8_t *s = p;
	while (n > 0) {
		size_t room = SNAP_BUF_BYTES - o->len;
		size_t k = n < room ? n : room;
		memcpy(o->buf + o->len, s, k);
		o->len += k;
		s += k;
		n -= k;
		if (o->len == SNAP_BUF_BYTES && out_flush(o) != 0)
			return -1;
	}
	return 0;
}

/* Closes the open section: padding, then its hash. */
static int out_end_section(struct snap_out *o)
{
	if (!o->open_section)
		return 0;
	if (o->sec_left != 0) {
		o->err_no = EPROTO;   /* the image handed over fewer bytes than announced */
		return -1;
	}
	static const uint8_t zeros[8];
	size_t pad = (size_t)((8 - o->sec_bytes % 8) % 8);
	uint64_t h = XXH3_64bits_digest(&o->sec_hash);
	XXH3_64bits_update(&o->all_hash, &h, sizeof h);
	o->open_section = 0;
	o->sections++;
	return out_put(o, zeros, pad) != 0 || out_put(o, &h, sizeof h) != 0 ? -1 : 0;
}

static int sink_section(void *arg, uint32_t id, uint64_t bytes)
{
	struct snap_out *o = arg;
	if (out_end_section(o) != 0)
		return -1;
	struct snap_sec s = { .id = id, .bytes = bytes };
	if (o->pace_us) {   /* tests: a window to crash in, whatever the size */
		struct timespec ts = { .tv_sec = o->pace_us / 1000000, .tv_nsec = (long)(o->pace_us % 1000000) * 1000 };
		nanosleep(&ts, NULL);
	}
	o->open_section = 1;
	o->sec_left = o->sec_bytes = bytes;
	XXH3_64bits_reset(&o->sec_hash);
	XXH3_64bits_update(&o->sec_hash, &s, sizeof s);   /* the hash covers id and length too */
	return out_put(o, &s, sizeof s);
}

static int sink_data(void *arg, const void *p, size_t n)
{
	struct snap_out *o = arg;
	if (!o->open_section || n > o->sec_left) {
		o->err_no = EPROTO;
		return -1;
	}
	o->sec_left -= n;
	XXH3_64bits_update(&o->sec_hash, p, n);
	return out_put(o, p, n);
}

static void snap_dir(char *out, size_t cap, const char *data_dir)
{
	snprintf(out, cap, "%s/%s", data_dir, WR_SNAP_SUBDIR);
}

void wr_snapshot_path(char *out, size_t cap, const char *data_dir, uint64_t seq)
{
	snprintf(out, cap, "%s/%s/%020" PRIu64 ".snap", data_dir, WR_SNAP_SUBDIR, seq);
}

static int write_locked(const char *data_dir, const struct wr_state *st, const struct wr_snap_stamp *stamp,
                        uint32_t pace_us, char *err, size_t err_len)
{
	assert(data_dir != NULL && st != NULL && stamp != NULL);
	char dir[PATH_MAX], tmp[PATH_MAX + 64], path[PATH_MAX + 64];
	snap_dir(dir, sizeof dir, data_dir);
	snprintf(tmp, sizeof tmp, "%s/.tmp-%020" PRIu64 ".snap", dir, stamp->seq);
	wr_snapshot_path(path, sizeof path, data_dir, stamp->seq);
	if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "snapshot: mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	struct snap_out o;
	memset(&o, 0, sizeof o);
	o.buf = snap_buf;
	o.pace_us = pace_us;
	o.fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);   /* user ids, keys, payment tokens of PENDING orders */
	if (o.fd < 0) {
		snprintf(err, err_len, "snapshot: create %s: %s", tmp, strerror(errno));
		return -1;
	}
	XXH3_64bits_reset(&o.all_hash);
	struct snap_header h;
	memset(&h, 0, sizeof h);
	h.magic = SNAP_MAGIC;
	h.version = SNAP_VERSION;
	h.section_count = WR_IMG_COUNT - 1;
	h.seq = stamp->seq;
	h.time_ms = stamp->time_ms;
	memcpy(h.chain, stamp->chain, sizeof h.chain);
	h.header_hash = XXH3_64bits(&h, offsetof(struct snap_header, header_hash));
	struct wr_image_sink sink = { .section = sink_section, .data = sink_data, .arg = &o };
	int rc = out_put(&o, &h, sizeof h);
	if (rc == 0)
		rc = wr_state_image(st, &sink);
	if (rc == 0)
		rc = out_end_section(&o);
	if (rc == 0) {
		struct snap_sec t = { .id = SNAP_TRAILER_ID, .bytes = o.sections };
		uint64_t all = XXH3_64bits_digest(&o.all_hash);
		rc = out_put(&o, &t, sizeof t) != 0 || out_put(&o, &all, sizeof all) != 0 ? -1 : 0;
	}
	if (rc == 0)
		rc = out_flush(&o);
	if (rc == 0 && fdatasync(o.fd) != 0) {
		o.err_no = errno;
		rc = -1;
	}
	if (close(o.fd) != 0 && rc == 0) {
		o.err_no = errno;
		rc = -1;
	}
	if (rc == 0 && rename(tmp, path) != 0) {
		o.err_no = errno;
		rc = -1;
	}
	if (rc == 0) {
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd < 0 || fsync(dfd) != 0) {
			o.err_no = errno;
			rc = -1;
		}
		if (dfd >= 0)
			close(dfd);
	}
	if (rc != 0) {
		snprintf(err, err_len, "snapshot: writing %s: %s", tmp,
		         o.err_no ? strerror(o.err_no) : "the state image failed its own checks");
		unlink(tmp);
		return -1;
	}
	return 0;
}

/* The static buffer serves one snapshot at a time: writers of one process
 * (tests open several) take turns. */
int wr_snapshot_write(const char *data_dir, const struct wr_state *st, const struct wr_snap_stamp *stamp,
                      uint32_t pace_us, char *err, size_t err_len)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&lock);
	int rc = write_locked(data_dir, st, stamp, pace_us, err, err_len);
	pthread_mutex_unlock(&lock);
	return rc;
}

static int cmp_desc(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return (x < y) - (x > y);
}

/* Parses "NNNNNNNNNNNNNNNNNNNN.snap"; 1 with *seq set, else 0. */
static int snap_name_seq(const char *name, uint64_t *seq)
{
	if (strlen(name) != 25 || strcmp(name + 20, ".snap") != 0)
		return 0;
	uint64_t v = 0;
	for (int i = 0; i < 20; i++) {
		if (name[i] < '0' || name[i] > '9' || v > (UINT64_MAX - 9) / 10)
			return 0;
		v = v * 10 + (uint64_t)(name[i] - '0');
	}
	*seq = v;
	return 1;
}

int wr_snapshot_list(const char *data_dir, uint64_t *seqs, int max)
{
	char dir[PATH_MAX];
	snap_dir(dir, sizeof dir, data_dir);
	DIR *d = opendir(dir);
	if (d == NULL)
		return 0;
	uint64_t found[WR_SNAP_LIST_MAX];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) != NULL) {
		uint64_t seq;
		if (!snap_name_seq(e->d_name, &seq))
			continue;
		if (n < WR_SNAP_LIST_MAX) {
			found[n++] = seq;
		} else {   /* keep the newest WR_SNAP_LIST_MAX */
			qsort(found, (size_t)n, sizeof *found, cmp_desc);
			if (seq > found[n - 1])
				found[n - 1] = seq;
		}
	}
	closedir(d);
	qsort(found, (size_t)n, sizeof *found, cmp_desc);
	int out = n < max ? n : max;
	memcpy(seqs, found, (size_t)out * sizeof *seqs);
	return out;
}

uint64_t wr_snapshot_prune(const char *data_dir, int keep)
{
	assert(keep >= 1);
	char dir[PATH_MAX];
	snap_dir(dir, sizeof dir, data_dir);
	uint64_t seqs[WR_SNAP_LIST_MAX];
	int n = wr_snapshot_list(data_dir, seqs, WR_SNAP_LIST_MAX);
	for (int i = keep; i < n; i++) {
		char path[PATH_MAX + 64];
		wr_snapshot_path(path, sizeof path, data_dir, seqs[i]);
		unlink(path);
	}
	DIR *d = opendir(dir);
	if (d != NULL) {
		struct dirent *e;
		while ((e = readdir(d)) != NULL)
			if (strncmp(e->d_name, ".tmp-", 5) == 0) {
				char path[PATH_MAX + 300];
				snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
				unlink(path);
			}
		closedir(d);
	}
	return n == 0 ? 0 : seqs[(n < keep ? n : keep) - 1];
}

static int load_fail(char *err, size_t err_len, const char *path, uint64_t off, const char *what)
{
	snprintf(err, err_len, "snapshot %s offset %" PRIu64 ": %s", path, off, what);
	return -1;
}

/* Walks the mapped file; loads each verified section into st (if any). */
static int load_mapped(const char *path, const uint8_t *p, uint64_t size, struct wr_state *st,
                       struct wr_snap_stamp *stamp, char *err, size_t err_len)
{
	struct snap_header h;
	if (size < SNAP_HEADER_BYTES)
		return load_fail(err, err_len, path, 0, "shorter than a header (truncated)");
	memcpy(&h, p, sizeof h);
	if (h.magic != SNAP_MAGIC)
		return load_fail(err, err_len, path, 0, "not a snapshot (bad magic)");
	if (h.header_hash != XXH3_64bits(p, offsetof(struct snap_header, header_hash)))
		return load_fail(err, err_len, path, 0, "header checksum mismatch");
	if (h.version != SNAP_VERSION)
		return load_fail(err, err_len, path, 0, "unsupported version");
	uint64_t off = SNAP_HEADER_BYTES;
	XXH3_state_t all;
	XXH3_64bits_reset(&all);
	uint32_t sections = 0;
	char why[512];
	for (;;) {
		struct snap_sec s;
		if (size - off < sizeof s)
			return load_fail(err, err_len, path, off, "truncated (no trailer)");
		memcpy(&s, p + off, sizeof s);
		if (s._zero != 0)
			return load_fail(err, err_len, path, off, "malformed section header");
		if (s.id == SNAP_TRAILER_ID) {
			uint64_t want;
			if (size - off < sizeof s + sizeof want)
				return load_fail(err, err_len, path, off, "truncated trailer");
			memcpy(&want, p + off + sizeof s, sizeof want);
			if (s.bytes != sections || sections != h.section_count || want != XXH3_64bits_digest(&all))
				return load_fail(err, err_len, path, off, "trailer does not match the sections (truncated?)");
			if (off + sizeof s + sizeof want != size)
				return load_fail(err, err_len, path, off + sizeof s + sizeof want, "bytes after the trailer");
			break;
		}
		uint64_t padded = (s.bytes + 7) / 8 * 8;
		if (s.bytes > size || size - off - sizeof s < padded + 8)
			return load_fail(err, err_len, path, off, "section runs past the end of the file (truncated)");
		const uint8_t *payload = p + off + sizeof s;
		uint64_t hash;
		memcpy(&hash, payload + padded, sizeof hash);
		if (XXH3_64bits(p + off, sizeof s + s.bytes) != hash)
			return load_fail(err, err_len, path, off, "section checksum mismatch");
		for (uint64_t i = s.bytes; i < padded; i++)
			if (payload[i] != 0)
				return load_fail(err, err_len, path, off + sizeof s + i, "non-zero padding");
		XXH3_64bits_update(&all, &hash, sizeof hash);
		if (st != NULL && wr_state_image_load(st, s.id, payload, s.bytes, why, sizeof why) != 0)
			return load_fail(err, err_len, path, off, why);
		sections++;
		off += sizeof s + padded + 8;
	}
	if (st != NULL && wr_state_image_done(st, why, sizeof why) != 0)
		return load_fail(err, err_len, path, off, why);
	stamp->seq = h.seq;
	stamp->time_ms = h.time_ms;
	memcpy(stamp->chain, h.chain, sizeof stamp->chain);
	return 0;
}

int wr_snapshot_load(const char *path, struct wr_state *st, struct wr_snap_stamp *stamp, uint64_t *bytes,
                     char *err, size_t err_len)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		snprintf(err, err_len, "snapshot %s: %s", path, strerror(errno));
		return -1;
	}
	struct stat sb;
	if (fstat(fd, &sb) != 0) {
		snprintf(err, err_len, "snapshot %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	uint64_t size = (uint64_t)sb.st_size;
	if (bytes)
		*bytes = size;
	if (size == 0) {
		close(fd);
		return load_fail(err, err_len, path, 0, "empty file (truncated)");
	}
	void *m = mmap(NULL, size, PROT_READ, MAP_PRIVATE, fd, 0);
	close(fd);
	if (m == MAP_FAILED) {
		snprintf(err, err_len, "snapshot %s: mmap: %s", path, strerror(errno));
		return -1;
	}
	madvise(m, size, MADV_SEQUENTIAL);
	int rc = load_mapped(path, m, size, st, stamp, err, err_len);
	munmap(m, size);
	return rc;
}

int wr_snapshot_limits(const char *path, struct wr_limits *out, char *err, size_t err_len)
{
	uint8_t buf[SNAP_HEADER_BYTES + sizeof(struct snap_sec) + 512];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n = fd < 0 ? -1 : pread(fd, buf, sizeof buf, 0);
	if (fd >= 0)
		close(fd);
	struct snap_sec s;
	if (n < (ssize_t)(SNAP_HEADER_BYTES + sizeof s))
		return load_fail(err, err_len, path, 0, n < 0 ? strerror(errno) : "truncated");
	memcpy(&s, buf + SNAP_HEADER_BYTES, sizeof s);
	if (s.id != WR_IMG_META || s.bytes > (uint64_t)n - SNAP_HEADER_BYTES - sizeof s ||
	    wr_state_image_limits(buf + SNAP_HEADER_BYTES + sizeof s, s.bytes, out) != 0)
		return load_fail(err, err_len, path, SNAP_HEADER_BYTES, "no readable state meta section");
	return 0;
}
