/* draw.c - the waiting room's draw (see draw.h): seed files, and the
 * generator that shuffles the queue with a revealed seed. */
#include "writer/draw.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

void wr_hex(const uint8_t *bytes, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[bytes[i] >> 4];
		out[2 * i + 1] = digits[bytes[i] & 15];
	}
	out[2 * n] = 0;
}

static uint64_t rotl64(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256** seeded with SHA-256(seed): the documented draw generator
 * (see EVENTS.md), so anyone can re-derive the order from the journal. */
struct draw_rng { uint64_t s[4]; };

static void draw_rng_init(struct draw_rng *g, const uint8_t seed[32])
{
	uint8_t key[32];
	SHA256(seed, 32, key);
	memcpy(g->s, key, sizeof g->s);
	if ((g->s[0] | g->s[1] | g->s[2] | g->s[3]) == 0)
		g->s[0] = 1;
}

static uint64_t draw_rng_next(struct draw_rng *g)
{
	uint64_t *s = g->s;
	uint64_t result = rotl64(s[1] * 5, 7) * 9;
	uint64_t t = s[1] << 17;
	s[2] ^= s[0];
	s[3] ^= s[1];
	s[1] ^= s[2];
	s[0] ^= s[3];
	s[2] ^= t;
	s[3] = rotl64(s[3], 45);
	return result;
}

void wr_draw_shuffle(uint32_t *v, uint32_t n, const uint8_t seed[32])
{
	struct draw_rng g;
	draw_rng_init(&g, seed);
	for (uint32_t i = n; i > 1; i--) {   /* Fisher-Yates, from the end */
		uint32_t j = (uint32_t)(draw_rng_next(&g) % i);
		uint32_t tmp = v[i - 1];
		v[i - 1] = v[j];
		v[j] = tmp;
	}
}

static int seed_path(char *out, size_t cap, const char *data_dir, const char *sku, size_t sku_len,
                     const uint8_t commit[32])
{
	char prefix[17];
	wr_hex(commit, 8, prefix);
	int n = snprintf(out, cap, "%s/draws/%.*s-%s.seed", data_dir, (int)sku_len, sku, prefix);
	return n > 0 && (size_t)n < cap ? 0 : -1;
}

int wr_draw_seed_create(const char *data_dir, const char *sku, size_t sku_len,
                        char commit_hex[65], char *err, size_t err_len)
{
	uint8_t seed[32], commit[32];
	if (getrandom(seed, sizeof seed, 0) != (ssize_t)sizeof seed) {
		snprintf(err, err_len, "draw: getrandom: %s", strerror(errno));
		return -1;
	}
	SHA256(seed, sizeof seed, commit);
	char dir[4096], path[4096], hex[65];
	snprintf(dir, sizeof dir, "%s/draws", data_dir);
	if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
		snprintf(err, err_len, "draw: mkdir %s: %s", dir, strerror(errno));
		return -1;
	}
	if (seed_path(path, sizeof path, data_dir, sku, sku_len, commit) != 0) {
		snprintf(err, err_len, "draw: path too long");
		return -1;
	}
	wr_hex(seed, sizeof seed, hex);
	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 || write(fd, hex, 64) != 64 || fsync(fd) != 0) {
		snprintf(err, err_len, "draw: cannot write %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	int dfd = open(dir, O_RDONLY | O_DIRECTORY);
	if (dfd >= 0) {
		fsync(dfd);
		close(dfd);
	}
	wr_hex(commit, sizeof commit, commit_hex);
	return 0;
}

int wr_draw_seed_load(const char *data_dir, const char *sku, size_t sku_len,
                      const uint8_t commit[32], char seed_hex[65])
{
	char path[4096];
	if (seed_path(path, sizeof path, data_dir, sku, sku_len, commit) != 0)
		return -1;
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, seed_hex, 64);
	close(fd);
	if (n != 64)
		return -1;
	seed_hex[64] = 0;
	uint8_t seed[32], hash[32];
	for (int i = 0; i < 32; i++) {
		unsigned v;
		if (sscanf(seed_hex + 2 * i, "%2x", &v) != 1)
			return -1;
		seed[i] = (uint8_t)v;
	}
	SHA256(seed, sizeof seed, hash);
	return memcmp(hash, commit, 32) == 0 ? 0 : -1;
}
