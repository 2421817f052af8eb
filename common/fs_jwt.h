/* fs_jwt.h - HS256 JSON Web Tokens: verify (dataplane) and mint (flashctl,
 * load generators, tests), and the secret file they share.
 *
 * The HMAC key is the secret file's bytes with trailing whitespace removed
 * (API.md), so any client holding the file can mint tokens. Verification
 * uses OpenSSL's HMAC and CRYPTO_memcmp (constant time), enforces `exp`,
 * requires `sub`, and never allocates.
 */
#ifndef FS_JWT_H
#define FS_JWT_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"

#define FS_SECRET_LEN_MAX 512
#define FS_JWT_LEN_MAX    1024   /* longest token we accept */

struct fs_claims {
	char     sub[FS_ID_LEN_MAX];
	uint8_t  sub_len;           /* 1..64 */
	int8_t   tier;              /* -1 when absent, else 0..4 */
	uint8_t  dev_len;           /* 0 when absent */
	char     dev[FS_ID_LEN_MAX];
	int64_t  exp_s;             /* seconds since the epoch */
};

/* Reads the secret file into key (trailing whitespace removed). Returns the
 * key length (> 0), or -1 with a one-line reason in err (missing file,
 * empty, longer than FS_SECRET_LEN_MAX). */
int fs_secret_load(const char *path, uint8_t key[FS_SECRET_LEN_MAX], char *err, size_t err_len);

/* Creates `path` (mode 0600) holding 32 random bytes as 64 hex chars and a
 * newline, unless it exists. Returns 0, or -1 with errno set. */
int fs_secret_create(const char *path);

/* Verifies an HS256 token (the bytes after "Bearer "). Returns 0 and fills
 * *out, or -1 when the token is malformed, badly signed, has another alg,
 * lacks sub/exp, has a sub longer than 64 bytes or a tier outside 0..4, or
 * exp <= now_s. Never allocates; *out is unspecified on failure. */
int fs_jwt_verify(const uint8_t *key, size_t key_len, const char *tok, size_t tok_len,
                  int64_t now_s, struct fs_claims *out);

/* Writes a signed token for `c` (tier < 0 and dev_len == 0 are omitted) into
 * out (NUL-terminated). Returns its length, or -1 when cap is too small. */
int fs_jwt_mint(const uint8_t *key, size_t key_len, const struct fs_claims *c,
                char *out, size_t cap);

/* A key prepared once per thread at start-up, so verification skips the
 * algorithm look-up that OpenSSL's one-shot HMAC() repeats on every call
 * (about 0.6 us instead of 3-4 us per token on a 2-core test box).
 * fs_jwt_key_init allocates (OpenSSL objects) and returns 0, or -1 when
 * OpenSSL cannot provide HMAC-SHA256; fs_jwt_key_free releases them.
 * A prepared key is used by one thread at a time. */
struct fs_jwt_key {
	void *mac_ctx;              /* EVP_MAC_CTX *, keyed with HMAC-SHA256 */
};
int fs_jwt_key_init(struct fs_jwt_key *k, const uint8_t *key, size_t key_len);
void fs_jwt_key_free(struct fs_jwt_key *k);

/* fs_jwt_verify with a prepared key: same checks, same results. */
int fs_jwt_verify_prepared(struct fs_jwt_key *k, const char *tok, size_t tok_len,
                           int64_t now_s, struct fs_claims *out);

#endif
