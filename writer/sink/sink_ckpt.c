/* sink_ckpt.c - model checkpoints (format and rules in sink_ckpt.h): write
 * a sink's projection to a file atomically, read it back only when every
 * byte checks out. */
#include "writer/sink/sink_ckpt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#define CKPT_ANOMALY_BYTES 160
#define CKPT_IO_BUF_BYTES  (64u << 10)
#define CKPT_CHUNK_ENTRIES 512          /* entries read per fread */
#define CKPT_TABLE_MAX     (1ull << 40) /* entries a table may claim: keeps length arithmetic exact */

_Static_assert(sizeof(((struct sink_model *)0)->anomaly) == CKPT_ANOMALY_BYTES, "anomaly text size on disk");
_Static_assert(sizeof(struct sm_sku) < 65536, "sku entry size fits 16 bits");

int sink_ckpt_path(char *out, size_t cap, const char *data_dir, const char *kind, const char *name)
{
	int n = snprintf(out, cap, "%s/sink-%s-%s.model", data_dir, kind, name);
	return n < 0 || (size_t)n >= cap ? -1 : 0;
}

/* ---- writing ---- */

struct ckpt_out {
	FILE *f;
	XXH3_state_t *h;
	int failed;
};

static void out_put(struct ckpt_out *o, const void *p, size_t len)
{
	if (o->failed || len == 0)
		return;
	if (fwrite(p, 1, len, o->f) != len || XXH3_64bits_update(o->h, p, len) != XXH_OK)
		o->failed = 1;
}

/* Every occupied slot of t, in slot order; returns how many. */
static uint64_t out_table(struct ckpt_out *o, const struct sm_tab *t)
{
	uint64_t n = 0;
	for (size_t i = 0; i < t->cap; i++) {
		const void *e = sm_tab_slot(t, i);
		if (e) {
			out_put(o, e, t->elem_bytes);
			n++;
		}
	}
	return n;
}

static void out_model(struct ckpt_out *o, const struct sink_model *m)
{
	struct sink_ckpt_header h = {
		.magic = SINK_CKPT_MAGIC, .version = SINK_CKPT_VERSION, .keep_terminal = (uint32_t)m->keep_terminal,
		.seq = m->last_seq, .records = m->records, .anomalies = m->anomalies,
		.res_count = m->res.count, .order_count = m->orders.count, .sku_count = m->sku_count,
		.sku_bytes = sizeof(struct sm_sku), .res_bytes = sizeof(struct sm_res),
		.order_bytes = sizeof(struct sm_order),
	};
	char anomaly[CKPT_ANOMALY_BYTES] = {0};
	snprintf(anomaly, sizeof anomaly, "%s", m->anomaly);
	out_put(o, &h, sizeof h);
	out_put(o, anomaly, sizeof anomaly);
	out_put(o, m->skus, (size_t)m->sku_count * sizeof *m->skus);
	uint64_t res = out_table(o, &m->res), orders = out_table(o, &m->orders);
	assert(res == m->res.count && orders == m->orders.count);   /* the header told the truth */
	uint64_t sum = XXH3_64bits_digest(o->h);
	if (!o->failed && fwrite(&sum, 1, sizeof sum, o->f) != sizeof sum)
		o->failed = 1;
}

int sink_ckpt_write_tmp(const char *path, const struct sink_model *m, char *err, size_t err_len)
{
	assert(path && m && m->res.elem_bytes == sizeof(struct sm_res) &&
	       m->orders.elem_bytes == sizeof(struct sm_order));
	char tmp[SINK_CKPT_PATH_BYTES + 8];
	if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) {
		snprintf(err, err_len, "path too long: %s", path);
		errno = ENAMETOOLONG;
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
	XXH3_state_t *h = XXH3_createState();
	if (!f || !h) {
		int e = errno ? errno : ENOMEM;
		snprintf(err, err_len, "%s: %s", tmp, strerror(e));
		if (f)
			fclose(f);
		else if (fd >= 0)
			close(fd);
		XXH3_freeState(h);
		errno = e;
		return -1;
	}
	setvbuf(f, NULL, _IOFBF, CKPT_IO_BUF_BYTES);
	struct ckpt_out o = {.f = f, .h = h};
	XXH3_64bits_reset(h);
	out_model(&o, m);
	XXH3_freeState(h);
	int e = 0;
	if (o.failed || fflush(f) != 0 || fdatasync(fileno(f)) != 0)
		e = errno ? errno : EIO;
	if (fclose(f) != 0 && e == 0)
		e = errno ? errno : EIO;
	if (e != 0) {
		snprintf(err, err_len, "write %s: %s", tmp, strerror(e));
		unlink(tmp);
		errno = e;
		return -1;
	}
	return 0;
}

int sink_ckpt_commit(const char *path, char *err, size_t err_len)
{
	char tmp[SINK_CKPT_PATH_BYTES + 8], dir[SINK_CKPT_PATH_BYTES];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	if (rename(tmp, path) != 0) {
		snprintf(err, err_len, "rename %s: %s", tmp, strerror(errno));
		return -1;
	}
	snprintf(dir, sizeof dir, "%s", path);
	char *slash = strrchr(dir, '/');
	if (slash)
		*slash = '\0';
	int dfd = open(slash ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int e = dfd < 0 || fsync(dfd) != 0 ? errno : 0;
	if (dfd >= 0)
		close(dfd);
	if (e != 0) {
		snprintf(err, err_len, "fsync directory %s: %s", slash ? dir : ".", strerror(e));
		errno = e;
		return -1;
	}
	return 0;
}

int sink_ckpt_write(const char *path, const struct sink_model *m, char *err, size_t err_len)
{
	if (sink_ckpt_write_tmp(path, m, err, err_len) != 0)
		return -1;
	return sink_ckpt_commit(path, err, err_len);
}

/* ---- reading ---- */

struct ckpt_in {
	FILE *f;
	XXH3_state_t *h;
};

/* Reads exactly len bytes into p and hashes them: 0 or -1 (short read). */
static int in_get(struct ckpt_in *in, void *p, size_t len)
{
	if (len == 0)
		return 0;
	if (fread(p, 1, len, in->f) != len)
		return -1;
	XXH3_64bits_update(in->h, p, len);
	return 0;
}

/* The header is one this binary can read, and the file is exactly as long
 * as it says. NULL or why not. */
static const char *header_problem(const struct sink_ckpt_header *h, int keep_terminal, uint64_t file_bytes)
{
	if (h->magic != SINK_CKPT_MAGIC)
		return "not a sink model checkpoint (bad magic)";
	if (h->version != SINK_CKPT_VERSION)
		return "format version not supported by this build";
	if (h->sku_bytes != sizeof(struct sm_sku) || h->res_bytes != sizeof(struct sm_res) ||
	    h->order_bytes != sizeof(struct sm_order))
		return "entry sizes differ from this build's";
	if (h->keep_terminal != (uint32_t)keep_terminal)
		return "written by a model that keeps other rows (keep_terminal differs)";
	if (h->res_count > CKPT_TABLE_MAX || h->order_count > CKPT_TABLE_MAX)
		return "table sizes out of range";
	uint64_t want = sizeof *h + CKPT_ANOMALY_BYTES + (uint64_t)h->sku_count * h->sku_bytes +
	                h->res_count * h->res_bytes + h->order_count * h->order_bytes + sizeof(uint64_t);
	if (want != file_bytes)
		return "length differs from what its header says (truncated or extended)";
	return NULL;
}

/* Reads `count` entries into table t (sized for them). NULL or why not. */
static const char *in_table(struct ckpt_in *in, struct sm_tab *t, uint64_t count, uint32_t sku_count, int is_res)
{
	uint8_t buf[CKPT_CHUNK_ENTRIES * sizeof(struct sm_res) + CKPT_CHUNK_ENTRIES * sizeof(struct sm_order)];
	for (uint64_t done = 0; done < count;) {
		size_t n = count - done < CKPT_CHUNK_ENTRIES ? (size_t)(count - done) : CKPT_CHUNK_ENTRIES;
		assert(n * t->elem_bytes <= sizeof buf);
		if (in_get(in, buf, n * t->elem_bytes) != 0)
			return "short read";
		for (size_t i = 0; i < n; i++) {
			const uint8_t *e = buf + i * t->elem_bytes;
			uint64_t key;
			memcpy(&key, e, sizeof key);
			if (key == 0 || sm_tab_find(t, key) != NULL)
				return "a table entry with key 0 or twice";
			if (is_res) {
				struct sm_res r;
				memcpy(&r, e, sizeof r);
				if (r.sku_idx >= sku_count)
					return "a reservation of an unknown SKU";
			}
			void *slot = sm_tab_upsert(t, key);
			if (!slot)
				return NULL;   /* out of memory: the caller sees the count short */
			memcpy(slot, e, t->elem_bytes);
		}
		done += n;
	}
	return NULL;
}

/* Sizes a table for `count` entries without growing while loading. */
static int tab_sized(struct sm_tab *t, size_t elem_bytes, uint64_t count)
{
	sm_tab_free(t);
	return sm_tab_init(t, elem_bytes, (size_t)(count + count / 2 + 16));
}

/* Loads the body after a valid header. 1, -1 (err set) or -2 (memory). */
static int in_model(struct ckpt_in *in, const struct sink_ckpt_header *h, struct sink_model *m,
                    int keep_terminal, char *err, size_t err_len)
{
	if (sm_init(m, keep_terminal) != 0 || tab_sized(&m->res, sizeof(struct sm_res), h->res_count) != 0 ||
	    tab_sized(&m->orders, sizeof(struct sm_order), h->order_count) != 0)
		return -2;
	char anomaly[CKPT_ANOMALY_BYTES];
	const char *why = in_get(in, anomaly, sizeof anomaly) != 0 ? "short read" : NULL;
	if (!why && h->sku_count > 0) {
		m->skus = malloc((size_t)h->sku_count * sizeof *m->skus);
		if (!m->skus)
			return -2;
		m->sku_cap = h->sku_count;
		if (in_get(in, m->skus, (size_t)h->sku_count * sizeof *m->skus) != 0)
			why = "short read";
		for (uint32_t k = 0; !why && k < h->sku_count; k++)
			if ((m->skus[k].sku_len == 0 && !m->skus[k].archived) || m->skus[k].sku_len > FS_SKU_LEN_MAX ||
			    m->skus[k].sku[m->skus[k].sku_len] != '\0')
				why = "a SKU entry with a bad name";
		m->sku_count = h->sku_count;
	}
	if (!why)
		why = in_table(in, &m->res, h->res_count, h->sku_count, 1);
	if (!why)
		why = in_table(in, &m->orders, h->order_count, h->sku_count, 0);
	if (!why && (m->res.count != h->res_count || m->orders.count != h->order_count))
		return -2;
	uint64_t sum = 0;
	if (!why && fread(&sum, 1, sizeof sum, in->f) != sizeof sum)
		why = "short read";
	if (!why && sum != XXH3_64bits_digest(in->h))
		why = "checksum mismatch (damaged)";
	if (why) {
		snprintf(err, err_len, "%s", why);
		return -1;
	}
	memcpy(m->anomaly, anomaly, sizeof m->anomaly);
	m->anomaly[sizeof m->anomaly - 1] = '\0';
	m->last_seq = h->seq;
	m->records = h->records;
	m->anomalies = h->anomalies;
	return 1;
}

int sink_ckpt_read(const char *path, struct sink_model *m, int keep_terminal, char *err, size_t err_len)
{
	memset(m, 0, sizeof *m);
	FILE *f = fopen(path, "rb");
	if (!f) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, err_len, "%s", strerror(errno));
		return -1;
	}
	XXH3_state_t *h = XXH3_createState();
	struct stat st;
	struct sink_ckpt_header hd;
	char why[160] = "";
	int rc = -1;
	if (!h) {
		rc = -2;
	} else if (fstat(fileno(f), &st) != 0) {
		snprintf(why, sizeof why, "%s", strerror(errno));
	} else {
		setvbuf(f, NULL, _IOFBF, CKPT_IO_BUF_BYTES);
		XXH3_64bits_reset(h);
		struct ckpt_in in = {.f = f, .h = h};
		const char *bad = in_get(&in, &hd, sizeof hd) != 0 ? "shorter than its header"
		                  : header_problem(&hd, keep_terminal, (uint64_t)st.st_size);
		if (bad)
			snprintf(why, sizeof why, "%s", bad);
		else
			rc = in_model(&in, &hd, m, keep_terminal, why, sizeof why);
	}
	fclose(f);
	XXH3_freeState(h);
	if (rc != 1) {
		sm_free(m);
		snprintf(err, err_len, "%s", rc == -2 ? "out of memory" : why);
		return rc;
	}
	assert(m->sku_count == hd.sku_count && m->last_seq == hd.seq);
	return 1;
}

int sink_ckpt_seq(const char *path, uint64_t *seq)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return -1;
	struct sink_ckpt_header hd;
	int ok = fread(&hd, sizeof hd, 1, f) == 1 && hd.magic == SINK_CKPT_MAGIC && hd.version == SINK_CKPT_VERSION;
	fclose(f);
	if (ok)
		*seq = hd.seq;
	return ok ? 0 : -1;
}
