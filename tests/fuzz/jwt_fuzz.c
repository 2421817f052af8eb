/* jwt_fuzz.c - libFuzzer target for JWT verification (common/fs_jwt.c).
 *
 * Two ways in, chosen by the first byte:
 *  - the bytes are the token itself (header.payload.signature, any bytes);
 *  - the bytes are a claims payload (any JSON or not) and the harness signs
 *    it with the key, so the claim parser behind a valid signature is
 *    reached on every input.
 * Invariants: an accepted token has a sub of 1..64 bytes, a tier of -1 or
 * 0..4, a dev of at most 64 bytes and exp > now; the prepared key and the
 * one-shot verify agree; minting the accepted claims again verifies.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>

#include "common/fs_jwt.h"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define NOW_S 1700000000

static const uint8_t key[] = "fuzz-secret-0123456789abcdef";

static size_t b64url(const uint8_t *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	size_t o = 0, i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = tab[v >> 18 & 63]; out[o++] = tab[v >> 12 & 63];
		out[o++] = tab[v >> 6 & 63]; out[o++] = tab[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = tab[v >> 18 & 63]; out[o++] = tab[v >> 12 & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = tab[v >> 18 & 63]; out[o++] = tab[v >> 12 & 63]; out[o++] = tab[v >> 6 & 63];
	}
	return o;
}

static void check_claims(const struct fs_claims *c)
{
	CHECK(c->sub_len >= 1 && c->sub_len <= FS_ID_LEN_MAX);
	CHECK(c->tier == -1 || (c->tier >= 0 && c->tier <= 4));
	CHECK(c->dev_len <= FS_ID_LEN_MAX);
	CHECK(c->exp_s > NOW_S);
}

static void verify(const char *tok, size_t len)
{
	static struct fs_jwt_key pk;
	static int pk_ready;
	if (!pk_ready) {
		CHECK(fs_jwt_key_init(&pk, key, sizeof key - 1) == 0);
		pk_ready = 1;
	}
	struct fs_claims a, b;
	int ra = fs_jwt_verify(key, sizeof key - 1, tok, len, NOW_S, &a);
	int rb = fs_jwt_verify_prepared(&pk, tok, len, NOW_S, &b);
	CHECK(ra == rb);
	if (ra != 0)
		return;
	check_claims(&a);
	CHECK(a.sub_len == b.sub_len && memcmp(a.sub, b.sub, a.sub_len) == 0 && a.tier == b.tier &&
	      a.exp_s == b.exp_s && a.dev_len == b.dev_len);
	char again[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, sizeof key - 1, &a, again, sizeof again);
	if (n > 0) {
		struct fs_claims c;
		CHECK(fs_jwt_verify(key, sizeof key - 1, again, (size_t)n, NOW_S, &c) == 0);
		CHECK(c.sub_len == a.sub_len && memcmp(c.sub, a.sub, a.sub_len) == 0 && c.tier == a.tier);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0 || size > 900)
		return 0;
	if (data[0] & 1) {   /* the token as given */
		char *tok = malloc(size - 1 ? size - 1 : 1);
		CHECK(tok != NULL);
		memcpy(tok, data + 1, size - 1);
		verify(tok, size - 1);
		free(tok);
		return 0;
	}
	/* a claims payload behind a valid HS256 signature */
	static const char hdr[] = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char tok[2048];
	size_t o = b64url((const uint8_t *)hdr, sizeof hdr - 1, tok);
	tok[o++] = '.';
	o += b64url(data + 1, size - 1, tok + o);
	unsigned int mac_len = 0;
	uint8_t mac[EVP_MAX_MD_SIZE];
	CHECK(HMAC(EVP_sha256(), key, (int)(sizeof key - 1), (const uint8_t *)tok, o, mac, &mac_len) != NULL);
	tok[o++] = '.';
	o += b64url(mac, mac_len, tok + o);
	verify(tok, o);
	return 0;
}
