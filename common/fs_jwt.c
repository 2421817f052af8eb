/* fs_jwt.c - HS256 JSON Web Tokens: verify on the dataplane's hot path,
 * mint for flashctl, load generators and tests, and the secret file both
 * sides share.
 *
 * Verification never allocates in this file: the token is decoded into
 * fixed stack buffers (bounded by FS_JWT_LEN_MAX) and the claims are read
 * with jsmn over a fixed token array. The signature is checked before any
 * claim is trusted, with CRYPTO_memcmp so the comparison takes the same time
 * wherever the first wrong byte is. Only "alg":"HS256" is accepted; "none"
 * and every other algorithm are refused, so a token can never choose how it
 * is checked.
 */
#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include "common/fs_jwt.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>

#define JWT_SIG_BYTES      32   /* SHA-256 */
#define JWT_SIG_B64_CHARS  43   /* 32 bytes, base64url without padding */
#define JWT_JSON_BYTES_MAX (FS_JWT_LEN_MAX * 3 / 4 + 3)
#define JWT_TOKENS_MAX     32   /* jsmn tokens: 15 claims with scalar values */
#define SECRET_RANDOM_BYTES 32

/* {"alg":"HS256","typ":"JWT"}, the only header we mint. */
static const char jwt_header_b64[] = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9";

static const char b64url_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of one base64url character, or -1. */
static int b64url_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* Decodes unpadded base64url src[0..len) into out. Returns the number of
 * bytes written, or -1 when a character is outside the alphabet, the length
 * is impossible (len % 4 == 1), the output would exceed cap, or the unused
 * low bits of the last character are not zero (a non-canonical encoding,
 * refused so every decoded value has exactly one spelling). */
static int b64url_decode(const char *src, size_t len, uint8_t *out, size_t cap)
{
	if (len % 4 == 1)
		return -1;
	size_t out_len = len / 4 * 3 + (len % 4 == 0 ? 0 : len % 4 - 1);
	if (out_len > cap)
		return -1;
	uint32_t acc = 0;
	uint32_t acc_bits = 0;
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		int v = b64url_value((unsigned char)src[i]);
		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		acc_bits += 6;
		if (acc_bits >= 8) {
			acc_bits -= 8;
			out[n++] = (uint8_t)(acc >> acc_bits);
			acc &= (1u << acc_bits) - 1;
		}
	}
	if (acc != 0)
		return -1;
	assert(n == out_len);
	return (int)n;
}

/* Encodes src[0..len) as unpadded base64url into out. Returns the length,
 * or -1 when it would not fit in cap. Writes no terminator. */
static int b64url_encode(const uint8_t *src, size_t len, char *out, size_t cap)
{
	size_t out_len = len / 3 * 4 + (len % 3 == 0 ? 0 : len % 3 + 1);
	if (out_len > cap)
		return -1;
	size_t n = 0;
	size_t i = 0;
	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8 | src[i + 2];
		out[n++] = b64url_alphabet[v >> 18 & 63];
		out[n++] = b64url_alphabet[v >> 12 & 63];
		out[n++] = b64url_alphabet[v >> 6 & 63];
		out[n++] = b64url_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)src[i] << 16;
		out[n++] = b64url_alphabet[v >> 18 & 63];
		out[n++] = b64url_alphabet[v >> 12 & 63];
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)src[i] << 16 | (uint32_t)src[i + 1] << 8;
		out[n++] = b64url_alphabet[v >> 18 & 63];
		out[n++] = b64url_alphabet[v >> 12 & 63];
		out[n++] = b64url_alphabet[v >> 6 & 63];
	}
	assert(n == out_len);
	return (int)n;
}

/* Copies the JSON string body s[0..len) (between the quotes) into out,
 * resolving escapes. Returns the length, or -1 when it holds a raw control
 * character, an escape we do not read (\u above 0x7f), or exceeds cap. */
static int json_string_copy(const char *s, size_t len, char *out, size_t cap)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c < 0x20)
			return -1;
		if (c == '\\') {
			if (i + 1 >= len)
				return -1;
			char e = s[++i];
			switch (e) {
			case '"': case '\\': case '/': c = (unsigned char)e; break;
			case 'b': c = '\b'; break;
			case 'f': c = '\f'; break;
			case 'n': c = '\n'; break;
			case 'r': c = '\r'; break;
			case 't': c = '\t'; break;
			case 'u': {
				if (i + 4 >= len)
					return -1;
				uint32_t v = 0;
				for (int k = 1; k <= 4; k++) {
					char h = s[i + k];
					int d;
					if (h >= '0' && h <= '9')
						d = h - '0';
					else if (h >= 'a' && h <= 'f')
						d = h - 'a' + 10;
					else if (h >= 'A' && h <= 'F')
						d = h - 'A' + 10;
					else
						return -1;
					v = v << 4 | (uint32_t)d;
				}
				if (v > 0x7f)
					return -1;
				c = (unsigned char)v;
				i += 4;
				break;
			}
			default:
				return -1;
			}
		}
		if (n == cap)
			return -1;
		out[n++] = (char)c;
	}
	return (int)n;
}

/* Reads a JSON integer (optional '-', no leading zeros, at most 18 digits,
 * no fraction or exponent). Returns 0, or -1 when s is anything else. */
static int json_int64(const char *s, size_t len, int64_t *out)
{
	size_t i = 0;
	int negative = 0;
	if (len > 0 && s[0] == '-') {
		negative = 1;
		i = 1;
	}
	size_t digits = len - i;
	if (digits == 0 || digits > 18)
		return -1;
	if (s[i] == '0' && digits > 1)
		return -1;
	int64_t v = 0;
	for (; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	*out = negative ? -v : v;
	return 0;
}

static int tok_is(const char *json, const jsmntok_t *t, const char *lit)
{
	size_t lit_len = strlen(lit);
	return (size_t)(t->end - t->start) == lit_len &&
	       memcmp(json + t->start, lit, lit_len) == 0;
}

/* Index of the token after token i and everything nested inside it. */
static int tok_skip(const jsmntok_t *tok, int count, int i)
{
	int next = i + 1;
	while (next < count && tok[next].start < tok[i].end)
		next++;
	return next;
}

/* Tokenizes a JSON object that must fill json[0..len) (trailing
 * whitespace allowed). Returns the token count, or -1. */
static int json_object_tokens(const char *json, size_t len, jsmntok_t *tok, int tok_max)
{
	jsmn_parser parser;
	jsmn_init(&parser);
	int count = jsmn_parse(&parser, json, len, tok, (unsigned)tok_max);
	if (count < 1 || tok[0].type != JSMN_OBJECT)
		return -1;
	for (size_t i = (size_t)tok[0].end; i < len; i++) {
		if (json[i] != ' ' && json[i] != '\t' && json[i] != '\r' && json[i] != '\n')
			return -1;
	}
	return count;
}

/* Checks the decoded header: a JSON object whose "alg" is exactly "HS256".
 * Returns 0, or -1 (other alg, "none", duplicate alg, not an object). */
static int jwt_header_check(const char *json, size_t len)
{
	jsmntok_t tok[JWT_TOKENS_MAX];
	int count = json_object_tokens(json, len, tok, JWT_TOKENS_MAX);
	if (count < 0)
		return -1;
	int alg_seen = 0;
	int i = 1;
	for (int k = 0; k < tok[0].size; k++) {
		if (i + 1 >= count || tok[i].type != JSMN_STRING || tok[i].size != 1)
			return -1;
		const jsmntok_t *value = &tok[i + 1];
		if (tok_is(json, &tok[i], "alg")) {
			if (alg_seen || value->type != JSMN_STRING || !tok_is(json, value, "HS256"))
				return -1;
			alg_seen = 1;
		}
		i = tok_skip(tok, count, i + 1);
	}
	if (i != count || !alg_seen)
		return -1;
	return 0;
}

/* Reads sub, exp, tier, dev from the decoded claims into *out. Returns 0,
 * or -1 for a missing sub/exp, a wrong type, a value out of range or a
 * duplicate claim. Unknown claims are ignored. */
static int jwt_claims_read(const char *json, size_t len, struct fs_claims *out)
{
	jsmntok_t tok[JWT_TOKENS_MAX];
	int count = json_object_tokens(json, len, tok, JWT_TOKENS_MAX);
	if (count < 0)
		return -1;
	memset(out, 0, sizeof(*out));
	out->tier = -1;
	int sub_seen = 0, exp_seen = 0, tier_seen = 0, dev_seen = 0;
	int i = 1;
	for (int k = 0; k < tok[0].size; k++) {
		if (i + 1 >= count || tok[i].type != JSMN_STRING || tok[i].size != 1)
			return -1;
		const jsmntok_t *v = &tok[i + 1];
		const char *v_p = json + v->start;
		size_t v_len = (size_t)(v->end - v->start);
		if (tok_is(json, &tok[i], "sub")) {
			if (sub_seen++ || v->type != JSMN_STRING)
				return -1;
			int n = json_string_copy(v_p, v_len, out->sub, sizeof(out->sub));
			if (n < 1)
				return -1;
			out->sub_len = (uint8_t)n;
		} else if (tok_is(json, &tok[i], "exp")) {
			if (exp_seen++ || v->type != JSMN_PRIMITIVE ||
			    json_int64(v_p, v_len, &out->exp_s) != 0)
				return -1;
		} else if (tok_is(json, &tok[i], "tier")) {
			int64_t tier = 0;
			if (tier_seen++ || v->type != JSMN_PRIMITIVE ||
			    json_int64(v_p, v_len, &tier) != 0 || tier < 0 || tier > 4)
				return -1;
			out->tier = (int8_t)tier;
		} else if (tok_is(json, &tok[i], "dev")) {
			if (dev_seen++ || v->type != JSMN_STRING)
				return -1;
			int n = json_string_copy(v_p, v_len, out->dev, sizeof(out->dev));
			if (n < 0)
				return -1;
			out->dev_len = (uint8_t)n;
		}
		i = tok_skip(tok, count, i + 1);
	}
	if (i != count || !sub_seen || !exp_seen)
		return -1;
	assert(out->sub_len >= 1 && out->sub_len <= FS_ID_LEN_MAX);
	assert(out->tier >= -1 && out->tier <= 4);
	return 0;
}

/* Where a signature comes from: the raw key through OpenSSL's one-shot
 * HMAC(), or a prepared fs_jwt_key whose keyed EVP_MAC_CTX is reused. */
struct jwt_signer {
	const uint8_t *key;
	size_t key_len;
	EVP_MAC_CTX *mac;
};

/* Returns 0, or -1 when OpenSSL fails (never expected; the token is then
 * refused rather than checked against an unset signature). */
static int jwt_sign(const struct jwt_signer *s, const char *data, size_t len,
                    uint8_t sig[JWT_SIG_BYTES])
{
	if (s->mac != NULL) {
		size_t sig_len = 0;
		if (EVP_MAC_init(s->mac, NULL, 0, NULL) != 1 ||
		    EVP_MAC_update(s->mac, (const unsigned char *)data, len) != 1 ||
		    EVP_MAC_final(s->mac, sig, &sig_len, JWT_SIG_BYTES) != 1)
			return -1;
		assert(sig_len == JWT_SIG_BYTES);
		return 0;
	}
	unsigned int sig_len = 0;
	if (HMAC(EVP_sha256(), s->key, (int)s->key_len, (const unsigned char *)data, len,
	         sig, &sig_len) == NULL)
		return -1;
	assert(sig_len == JWT_SIG_BYTES);
	return 0;
}

static int jwt_verify(const struct jwt_signer *signer, const char *tok, size_t tok_len,
                      int64_t now_s, struct fs_claims *out)
{
	assert(out != NULL);
	if (tok == NULL || tok_len == 0 || tok_len > FS_JWT_LEN_MAX)
		return -1;
	const char *dot1 = memchr(tok, '.', tok_len);
	if (dot1 == NULL)
		return -1;
	size_t header_len = (size_t)(dot1 - tok);
	const char *payload = dot1 + 1;
	const char *dot2 = memchr(payload, '.', tok_len - header_len - 1);
	if (dot2 == NULL)
		return -1;
	size_t payload_len = (size_t)(dot2 - payload);
	const char *sig_b64 = dot2 + 1;
	size_t sig_b64_len = tok_len - (size_t)(sig_b64 - tok);
	if (header_len == 0 || payload_len == 0 || sig_b64_len != JWT_SIG_B64_CHARS)
		return -1;

	uint8_t sig_given[JWT_SIG_BYTES];
	if (b64url_decode(sig_b64, sig_b64_len, sig_given, sizeof(sig_given)) != JWT_SIG_BYTES)
		return -1;
	uint8_t sig_want[JWT_SIG_BYTES];
	if (jwt_sign(signer, tok, header_len + 1 + payload_len, sig_want) != 0)
		return -1;
	if (CRYPTO_memcmp(sig_given, sig_want, JWT_SIG_BYTES) != 0)
		return -1;

	char json[JWT_JSON_BYTES_MAX];
	int json_len = b64url_decode(tok, header_len, (uint8_t *)json, sizeof(json));
	if (json_len < 0 || jwt_header_check(json, (size_t)json_len) != 0)
		return -1;
	json_len = b64url_decode(payload, payload_len, (uint8_t *)json, sizeof(json));
	if (json_len < 0 || jwt_claims_read(json, (size_t)json_len, out) != 0)
		return -1;
	if (out->exp_s <= now_s)
		return -1;
	return 0;
}

int fs_jwt_verify(const uint8_t *key, size_t key_len, const char *tok, size_t tok_len,
                  int64_t now_s, struct fs_claims *out)
{
	assert(key != NULL && key_len > 0 && key_len <= FS_SECRET_LEN_MAX);
	struct jwt_signer signer = { key, key_len, NULL };
	return jwt_verify(&signer, tok, tok_len, now_s, out);
}

int fs_jwt_key_init(struct fs_jwt_key *k, const uint8_t *key, size_t key_len)
{
	assert(k != NULL && key != NULL);
	assert(key_len > 0 && key_len <= FS_SECRET_LEN_MAX);
	k->mac_ctx = NULL;
	EVP_MAC *mac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	if (mac == NULL)
		return -1;
	EVP_MAC_CTX *ctx = EVP_MAC_CTX_new(mac);
	EVP_MAC_free(mac);   /* the context holds its own reference */
	if (ctx == NULL)
		return -1;
	OSSL_PARAM params[2] = {
		OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	if (EVP_MAC_init(ctx, key, key_len, params) != 1) {
		EVP_MAC_CTX_free(ctx);
		return -1;
	}
	k->mac_ctx = ctx;
	return 0;
}

void fs_jwt_key_free(struct fs_jwt_key *k)
{
	assert(k != NULL);
	EVP_MAC_CTX_free(k->mac_ctx);
	k->mac_ctx = NULL;
}

int fs_jwt_verify_prepared(struct fs_jwt_key *k, const char *tok, size_t tok_len,
                           int64_t now_s, struct fs_claims *out)
{
	assert(k != NULL && k->mac_ctx != NULL);
	struct jwt_signer signer = { NULL, 0, k->mac_ctx };
	return jwt_verify(&signer, tok, tok_len, now_s, out);
}

/* Appends s[0..len) to out[*n..cap) as a JSON string body (no quotes),
 * escaping '"', '\\' and control characters. Returns 0, or -1 if full. */
static int json_escape_append(char *out, size_t cap, size_t *n, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			if (*n + 2 > cap)
				return -1;
			out[(*n)++] = '\\';
			out[(*n)++] = (char)c;
		} else if (c < 0x20) {
			if (*n + 6 > cap)
				return -1;
			memcpy(out + *n, "\\u00", 4);
			out[*n + 4] = hex[c >> 4];
			out[*n + 5] = hex[c & 15];
			*n += 6;
		} else {
			if (*n + 1 > cap)
				return -1;
			out[(*n)++] = (char)c;
		}
	}
	return 0;
}

static int str_append(char *out, size_t cap, size_t *n, const char *s)
{
	size_t len = strlen(s);
	if (*n + len > cap)
		return -1;
	memcpy(out + *n, s, len);
	*n += len;
	return 0;
}

static int int_append(char *out, size_t cap, size_t *n, int64_t v)
{
	char digits[24];
	int len = snprintf(digits, sizeof(digits), "%lld", (long long)v);
	assert(len > 0 && (size_t)len < sizeof(digits));
	return str_append(out, cap, n, digits);
}

/* Writes the claims object for c into json. Returns its length or -1. */
static int jwt_claims_write(const struct fs_claims *c, char *json, size_t cap)
{
	size_t n = 0;
	if (str_append(json, cap, &n, "{\"sub\":\"") != 0 ||
	    json_escape_append(json, cap, &n, c->sub, c->sub_len) != 0 ||
	    str_append(json, cap, &n, "\",\"exp\":") != 0 ||
	    int_append(json, cap, &n, c->exp_s) != 0)
		return -1;
	if (c->tier >= 0 && (str_append(json, cap, &n, ",\"tier\":") != 0 ||
	                     int_append(json, cap, &n, c->tier) != 0))
		return -1;
	if (c->dev_len > 0 && (str_append(json, cap, &n, ",\"dev\":\"") != 0 ||
	                       json_escape_append(json, cap, &n, c->dev, c->dev_len) != 0 ||
	                       str_append(json, cap, &n, "\"") != 0))
		return -1;
	if (str_append(json, cap, &n, "}") != 0)
		return -1;
	return (int)n;
}

/* Also returns -1 when the token would be longer than FS_JWT_LEN_MAX, since
 * fs_jwt_verify would refuse it. */
int fs_jwt_mint(const uint8_t *key, size_t key_len, const struct fs_claims *c,
                char *out, size_t cap)
{
	assert(key != NULL && key_len > 0 && key_len <= FS_SECRET_LEN_MAX);
	assert(c != NULL && out != NULL);
	assert(c->sub_len >= 1 && c->sub_len <= FS_ID_LEN_MAX);
	assert(c->dev_len <= FS_ID_LEN_MAX);
	assert(c->tier >= -1 && c->tier <= 4);

	char json[JWT_JSON_BYTES_MAX];
	int json_len = jwt_claims_write(c, json, sizeof(json));
	if (json_len < 0)
		return -1;
	size_t limit = cap == 0 ? 0 : cap - 1;   /* room for the NUL */
	if (limit > FS_JWT_LEN_MAX)
		limit = FS_JWT_LEN_MAX;
	size_t n = 0;
	if (str_append(out, limit, &n, jwt_header_b64) != 0 || str_append(out, limit, &n, ".") != 0)
		return -1;
	int enc = b64url_encode((const uint8_t *)json, (size_t)json_len, out + n, limit - n);
	if (enc < 0)
		return -1;
	n += (size_t)enc;
	uint8_t sig[JWT_SIG_BYTES];
	struct jwt_signer signer = { key, key_len, NULL };
	if (jwt_sign(&signer, out, n, sig) != 0)
		return -1;
	if (str_append(out, limit, &n, ".") != 0)
		return -1;
	enc = b64url_encode(sig, sizeof(sig), out + n, limit - n);
	if (enc < 0)
		return -1;
	n += (size_t)enc;
	assert(n <= FS_JWT_LEN_MAX && n < cap);
	out[n] = '\0';
	return (int)n;
}

static int is_space(unsigned char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

/* Strips control characters from a path before it goes into a one-line
 * message: a newline in a file name must not split the line. */
static void err_set(char *err, size_t err_len, const char *path, const char *why)
{
	if (err == NULL || err_len == 0)
		return;
	int n = snprintf(err, err_len, "jwt secret file %s: %s", path, why);
	for (int i = 0; i < n && (size_t)i < err_len - 1; i++) {
		if ((unsigned char)err[i] < 0x20)
			err[i] = '?';
	}
}

int fs_secret_load(const char *path, uint8_t key[FS_SECRET_LEN_MAX], char *err, size_t err_len)
{
	assert(path != NULL && key != NULL);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		err_set(err, err_len, path, strerror(errno));
		return -1;
	}
	/* Room for the key plus generous trailing whitespace; one byte more
	 * than that tells us the file is too long. */
	char buf[FS_SECRET_LEN_MAX + 256];
	size_t len = 0;
	while (len < sizeof(buf)) {
		ssize_t r = read(fd, buf + len, sizeof(buf) - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			err_set(err, err_len, path, strerror(errno));
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	if (len == sizeof(buf)) {
		err_set(err, err_len, path, "longer than 512 bytes");
		return -1;
	}
	while (len > 0 && is_space((unsigned char)buf[len - 1]))
		len--;
	if (len == 0) {
		err_set(err, err_len, path, "empty");
		return -1;
	}
	if (len > FS_SECRET_LEN_MAX) {
		err_set(err, err_len, path, "longer than 512 bytes");
		return -1;
	}
	memcpy(key, buf, len);
	return (int)len;
}

/* Fails with EEXIST when the file is already there (O_EXCL), so a secret is
 * never replaced behind the back of the clients that hold it. */
int fs_secret_create(const char *path)
{
	assert(path != NULL);
	uint8_t random[SECRET_RANDOM_BYTES];
	size_t got = 0;
	while (got < sizeof(random)) {
		ssize_t r = getrandom(random + got, sizeof(random) - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		got += (size_t)r;
	}
	static const char hex[] = "0123456789abcdef";
	char text[SECRET_RANDOM_BYTES * 2 + 1];
	for (size_t i = 0; i < sizeof(random); i++) {
		text[2 * i] = hex[random[i] >> 4];
		text[2 * i + 1] = hex[random[i] & 15];
	}
	text[sizeof(text) - 1] = '\n';

	int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0)
		return -1;
	size_t done = 0;
	int rc = fchmod(fd, 0600);
	while (rc == 0 && done < sizeof(text)) {
		ssize_t w = write(fd, text + done, sizeof(text) - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			rc = -1;
		else
			done += (size_t)w;
	}
	if (rc == 0)
		rc = fsync(fd);
	if (rc != 0) {
		int saved = errno;
		close(fd);
		unlink(path);
		errno = saved;
		return -1;
	}
	if (close(fd) != 0)
		return -1;
	return 0;
}
