/* fs_shard.c - the shard map (fs_shard.h): parse the text, answer who owns
 * a SKU. Pure apart from fs_shard_load's one read of the file.
 */
#include "common/fs_shard.h"

#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAP_FILE_BYTES_MAX (1u << 20)
#define MAP_WORDS_MAX 4

uint64_t fs_shard_hash(const char *sku, size_t len)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (size_t i = 0; i < len; i++) {
		h ^= (uint8_t)sku[i];
		h *= UINT64_C(0x100000001b3);
	}
	/* MurmurHash3's fmix64: FNV-1a alone leaves the last bytes of short,
	 * similar names (sku-1, sku-2) out of the high bits and the low residues */
	h ^= h >> 33;
	h *= UINT64_C(0xff51afd7ed558ccd);
	h ^= h >> 33;
	h *= UINT64_C(0xc4ceb9fe1a85ec53);
	h ^= h >> 33;
	return h;
}

static int fail(char *err, size_t err_len, unsigned line, const char *fmt, ...)
{
	char what[160];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	snprintf(err, err_len, "line %u: %s", line, what);
	return -1;
}

/* Splits one line in place into at most MAP_WORDS_MAX words; a '#' ends
 * it. Returns the count, or MAP_WORDS_MAX + 1 when there are more. */
static unsigned split_words(char *line, char *words[MAP_WORDS_MAX])
{
	unsigned n = 0;
	char *p = line;
	for (;;) {
		while (*p == ' ' || *p == '\t' || *p == '\r')
			p++;
		if (*p == '\0' || *p == '#')
			return n;
		if (n == MAP_WORDS_MAX)
			return MAP_WORDS_MAX + 1;
		words[n++] = p;
		while (*p != '\0' && *p != ' ' && *p != '\t' && *p != '\r' && *p != '#')
			p++;
		if (*p == '#') {
			*p = '\0';
			return n;
		}
		if (*p != '\0')
			*p++ = '\0';
	}
}

static struct fs_shard_pin *pin_find(struct fs_shard_map *m, const char *sku)
{
	for (uint32_t i = 0; i < m->pin_count; i++)
		if (strcmp(m->pins[i].sku, sku) == 0)
			return &m->pins[i];
	return NULL;
}

/* The pin of `sku`, made when new. NULL when the table is full. */
static struct fs_shard_pin *pin_get(struct fs_shard_map *m, const char *sku)
{
	struct fs_shard_pin *p = pin_find(m, sku);
	if (p != NULL)
		return p;
	if (m->pin_count == FS_SHARD_PINS_MAX)
		return NULL;
	p = &m->pins[m->pin_count++];
	memset(p, 0, sizeof *p);
	memcpy(p->sku, sku, strlen(sku) + 1);
	p->appliance = -1;
	p->writer = -1;
	return p;
}

static int valid_sku(const char *sku)
{
	size_t len = strlen(sku);
	if (len == 0 || len > FS_SKU_LEN_MAX)
		return 0;
	for (size_t i = 0; i < len; i++) {
		char c = sku[i];
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_' || c == '.'))
			return 0;
	}
	return 1;
}

static int valid_addr(const char *addr)
{
	const char *colon = strrchr(addr, ':');
	if (colon == NULL || colon == addr || strlen(addr) > FS_SHARD_ADDR_LEN_MAX)
		return 0;
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	return errno == 0 && *end == '\0' && colon[1] != '\0' && port >= 1 && port <= 65535;
}

static int parse_shard(struct fs_shard_map *m, char **w, unsigned n, unsigned line,
                       char *err, size_t err_len)
{
	if (n != 3)
		return fail(err, err_len, line, "want: shard NAME HOST:PORT");
	if (strlen(w[1]) > FS_SHARD_NAME_LEN_MAX || !valid_sku(w[1]))
		return fail(err, err_len, line, "shard name '%s': 1-%u of [A-Za-z0-9._-]", w[1],
		            FS_SHARD_NAME_LEN_MAX);
	if (!valid_addr(w[2]))
		return fail(err, err_len, line, "address '%s': want HOST:PORT", w[2]);
	if (fs_shard_appliance_index(m, w[1]) >= 0)
		return fail(err, err_len, line, "shard '%s' declared twice", w[1]);
	if (m->appliance_count == FS_SHARD_APPLIANCES_MAX)
		return fail(err, err_len, line, "more than %u shards", FS_SHARD_APPLIANCES_MAX);
	struct fs_shard_appliance *a = &m->appliances[m->appliance_count++];
	memcpy(a->name, w[1], strlen(w[1]) + 1);
	memcpy(a->addr, w[2], strlen(w[2]) + 1);
	return 0;
}

static int parse_pin(struct fs_shard_map *m, char **w, unsigned n, unsigned line,
                     char *err, size_t err_len)
{
	int is_writer = strcmp(w[0], "writer") == 0;
	if (n != 3)
		return fail(err, err_len, line, is_writer ? "want: writer SKU N" : "want: sku SKU NAME");
	if (!valid_sku(w[1]))
		return fail(err, err_len, line, "SKU '%s': 1-%u of [A-Za-z0-9._-]", w[1], FS_SKU_LEN_MAX);
	struct fs_shard_pin *p = pin_get(m, w[1]);
	if (p == NULL)
		return fail(err, err_len, line, "more than %u pinned SKUs", FS_SHARD_PINS_MAX);
	if (is_writer) {
		char *end;
		errno = 0;
		long k = strtol(w[2], &end, 10);
		if (errno != 0 || *end != '\0' || w[2][0] == '\0' || k < 0 ||
		    k >= (long)FS_SHARD_WRITERS_MAX)
			return fail(err, err_len, line, "writer shard '%s': want 0..%u", w[2],
			            FS_SHARD_WRITERS_MAX - 1);
		if (p->writer >= 0)
			return fail(err, err_len, line, "SKU '%s' pinned to a writer twice", w[1]);
		p->writer = (int16_t)k;
		return 0;
	}
	int a = fs_shard_appliance_index(m, w[2]);
	if (a < 0)
		return fail(err, err_len, line, "shard '%s' is not declared above", w[2]);
	if (p->appliance >= 0)
		return fail(err, err_len, line, "SKU '%s' pinned to a shard twice", w[1]);
	p->appliance = (int16_t)a;
	return 0;
}

int fs_shard_parse(struct fs_shard_map *m, const char *text, char *err, size_t err_len)
{
	assert(m != NULL && text != NULL);
	memset(m, 0, sizeof *m);
	unsigned line_no = 0;
	const char *p = text;
	while (*p != '\0') {
		const char *nl = strchr(p, '\n');
		size_t len = nl != NULL ? (size_t)(nl - p) : strlen(p);
		char line[256];
		line_no++;
		if (len >= sizeof line)
			return fail(err, err_len, line_no, "longer than %zu bytes", sizeof line - 1);
		memcpy(line, p, len);
		line[len] = '\0';
		p += len + (nl != NULL);
		char *w[MAP_WORDS_MAX];
		unsigned n = split_words(line, w);
		if (n == 0)
			continue;
		if (n > MAP_WORDS_MAX)
			return fail(err, err_len, line_no, "too many words");
		int rc;
		if (strcmp(w[0], "shard") == 0)
			rc = parse_shard(m, w, n, line_no, err, err_len);
		else if (strcmp(w[0], "sku") == 0 || strcmp(w[0], "writer") == 0)
			rc = parse_pin(m, w, n, line_no, err, err_len);
		else
			rc = fail(err, err_len, line_no, "unknown directive '%s' (shard, sku, writer)", w[0]);
		if (rc != 0)
			return rc;
	}
	for (uint32_t i = 0; i < m->pin_count; i++)
		if (m->pins[i].appliance >= 0 && m->appliance_count == 0)
			return fail(err, err_len, line_no, "internal: pin without shards");
	return 0;
}

int fs_shard_load(struct fs_shard_map *m, const char *path, char *err, size_t err_len)
{
	FILE *f = fopen(path, "rb");
	if (f == NULL) {
		snprintf(err, err_len, "%s: %s", path, strerror(errno));
		return -1;
	}
	char *text = malloc(MAP_FILE_BYTES_MAX + 1);
	if (text == NULL) {
		fclose(f);
		snprintf(err, err_len, "%s: out of memory", path);
		return -1;
	}
	size_t n = fread(text, 1, MAP_FILE_BYTES_MAX + 1, f);
	int bad = ferror(f);
	fclose(f);
	int rc = -1;
	if (bad)
		snprintf(err, err_len, "%s: read error", path);
	else if (n > MAP_FILE_BYTES_MAX)
		snprintf(err, err_len, "%s: larger than %u bytes", path, MAP_FILE_BYTES_MAX);
	else if (memchr(text, '\0', n) != NULL)
		snprintf(err, err_len, "%s: holds a NUL byte", path);
	else {
		char why[200];
		text[n] = '\0';
		rc = fs_shard_parse(m, text, why, sizeof why);
		if (rc != 0)
			snprintf(err, err_len, "%s: %s", path, why);
	}
	free(text);
	return rc;
}

int fs_shard_check_writers(const struct fs_shard_map *m, uint32_t writers, char *err, size_t err_len)
{
	for (uint32_t i = 0; m != NULL && i < m->pin_count; i++)
		if (m->pins[i].writer >= 0 && (uint32_t)m->pins[i].writer >= writers) {
			snprintf(err, err_len, "SKU '%s' pinned to writer shard %d, but --writers is %u",
			         m->pins[i].sku, m->pins[i].writer, writers);
			return -1;
		}
	return 0;
}

int fs_shard_appliance_index(const struct fs_shard_map *m, const char *name)
{
	for (uint32_t i = 0; i < m->appliance_count; i++)
		if (strcmp(m->appliances[i].name, name) == 0)
			return (int)i;
	return -1;
}

static const struct fs_shard_pin *pin_of(const struct fs_shard_map *m, const char *sku, size_t len)
{
	if (m == NULL || len > FS_SKU_LEN_MAX)
		return NULL;
	for (uint32_t i = 0; i < m->pin_count; i++)
		if (strncmp(m->pins[i].sku, sku, len) == 0 && m->pins[i].sku[len] == '\0')
			return &m->pins[i];
	return NULL;
}

uint32_t fs_shard_appliance_of(const struct fs_shard_map *m, const char *sku, size_t len)
{
	if (m == NULL || m->appliance_count == 0)
		return 0;
	const struct fs_shard_pin *p = pin_of(m, sku, len);
	if (p != NULL && p->appliance >= 0)
		return (uint32_t)p->appliance;
	return (uint32_t)(fs_shard_hash(sku, len) % m->appliance_count);
}

uint32_t fs_shard_writer_of(const struct fs_shard_map *m, const char *sku, size_t len,
                            uint32_t writers)
{
	assert(writers >= 1 && writers <= FS_SHARD_WRITERS_MAX);
	const struct fs_shard_pin *p = pin_of(m, sku, len);
	if (p != NULL && p->writer >= 0)
		return (uint32_t)p->writer % writers;
	/* the high half, so the writer does not follow the appliance choice */
	return (uint32_t)((fs_shard_hash(sku, len) >> 32) % writers);
}

int fs_shard_sink_name(char *out, size_t out_len, enum fs_shard_naming what, const char *name,
                       const char *topic_base, uint32_t writer, uint32_t writers)
{
	assert(out != NULL && out_len > 0);
	assert(writers >= 1 && writers <= FS_SHARD_WRITERS_MAX && writer < writers);
	const char *nm = name != NULL ? name : "";
	char suffix[16] = "";
	if (writers > 1)
		snprintf(suffix, sizeof suffix, "w%u", writer);
	int n;
	switch (what) {
	case FS_SHARD_LABEL:   /* NAME, NAME/wK, wK */
		n = snprintf(out, out_len, "%s%s%s", nm, nm[0] && suffix[0] ? "/" : "", suffix);
		break;
	case FS_SHARD_CURSOR:  /* flashsaled[.NAME][.wK] */
		n = snprintf(out, out_len, "flashsaled%s%s%s%s", nm[0] ? "." : "", nm, suffix[0] ? "." : "", suffix);
		break;
	default:               /* BASE or flashsale.journal[.NAME], then [.wK] */
		assert(what == FS_SHARD_TOPIC);
		if (topic_base != NULL)
			n = snprintf(out, out_len, "%s%s%s", topic_base, suffix[0] ? "." : "", suffix);
		else
			n = snprintf(out, out_len, "flashsale.journal%s%s%s%s", nm[0] ? "." : "", nm,
			             suffix[0] ? "." : "", suffix);
		break;
	}
	return n < 0 || (size_t)n >= out_len ? -1 : 0;
}
