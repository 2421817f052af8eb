/* jwt_test.c - HS256 tokens: mint/verify round trip and every refusal the
 * contract in common/fs_jwt.h names, plus the secret file helpers.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/fs_jwt.h"

static const uint8_t key[] = "0123456789abcdef0123456789abcdef";
#define KEY_LEN (sizeof(key) - 1)
#define NOW_S 1700000000

static struct fs_claims claims(const char *sub, int64_t exp_s, int tier, const char *dev)
{
	struct fs_claims c;
	memset(&c, 0, sizeof(c));
	c.sub_len = (uint8_t)strlen(sub);
	memcpy(c.sub, sub, c.sub_len);
	c.exp_s = exp_s;
	c.tier = (int8_t)tier;
	if (dev != NULL) {
		c.dev_len = (uint8_t)strlen(dev);
		memcpy(c.dev, dev, c.dev_len);
	}
	return c;
}

static void b64url(const uint8_t *src, size_t len, char *out)
{
	int n = EVP_EncodeBlock((unsigned char *)out, src, (int)len);
	while (n > 0 && out[n - 1] == '=')
		n--;
	out[n] = '\0';
	for (int i = 0; i < n; i++) {
		if (out[i] == '+')
			out[i] = '-';
		else if (out[i] == '/')
			out[i] = '_';
	}
}

/* Builds a token from raw header and claims JSON, signed with `key`, using
 * OpenSSL's base64 (an implementation independent of the one under test). */
static int forge(const char *header, const char *payload, char *out)
{
	char h[512], p[1024];
	b64url((const uint8_t *)header, strlen(header), h);
	b64url((const uint8_t *)payload, strlen(payload), p);
	int n = sprintf(out, "%s.%s", h, p);
	uint8_t sig[32];
	unsigned sig_len = 0;
	HMAC(EVP_sha256(), key, (int)KEY_LEN, (const uint8_t *)out, (size_t)n, sig, &sig_len);
	out[n++] = '.';
	b64url(sig, sig_len, out + n);
	return (int)strlen(out);
}

static int verify_str(const char *tok, struct fs_claims *out)
{
	return fs_jwt_verify(key, KEY_LEN, tok, strlen(tok), NOW_S, out);
}

static void test_round_trip(void **state)
{
	(void)state;
	struct fs_claims c = claims("user-42", NOW_S + 60, 3, "device\"7\\");
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, KEY_LEN, &c, tok, sizeof(tok));
	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(tok));
	struct fs_claims out;
	assert_int_equal(fs_jwt_verify(key, KEY_LEN, tok, (size_t)n, NOW_S, &out), 0);
	assert_int_equal(out.sub_len, 7);
	assert_memory_equal(out.sub, "user-42", 7);
	assert_int_equal(out.exp_s, NOW_S + 60);
	assert_int_equal(out.tier, 3);
	assert_int_equal(out.dev_len, 9);
	assert_memory_equal(out.dev, "device\"7\\", 9);
}

static void test_round_trip_optional_absent(void **state)
{
	(void)state;
	struct fs_claims c = claims("u", NOW_S + 1, -1, NULL);
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, KEY_LEN, &c, tok, sizeof(tok));
	assert_true(n > 0);
	struct fs_claims out;
	assert_int_equal(verify_str(tok, &out), 0);
	assert_int_equal(out.tier, -1);
	assert_int_equal(out.dev_len, 0);
	assert_int_equal(out.sub_len, 1);
}

static void test_interop_with_independent_encoder(void **state)
{
	(void)state;
	char tok[2048];
	forge("{\"alg\":\"HS256\",\"typ\":\"JWT\"}",
	      "{\"sub\":\"alice\",\"iat\":1,\"exp\":1700000100,\"aud\":[\"x\",{\"y\":2}],\"tier\":0}", tok);
	struct fs_claims out;
	assert_int_equal(verify_str(tok, &out), 0);
	assert_memory_equal(out.sub, "alice", 5);
	assert_int_equal(out.tier, 0);

	/* and what we mint, an independent HMAC accepts */
	struct fs_claims c = claims("bob", NOW_S + 5, 1, NULL);
	char minted[FS_JWT_LEN_MAX + 1];
	assert_true(fs_jwt_mint(key, KEY_LEN, &c, minted, sizeof(minted)) > 0);
	char *last_dot = strrchr(minted, '.');
	uint8_t sig[32];
	unsigned sig_len = 0;
	HMAC(EVP_sha256(), key, (int)KEY_LEN, (const uint8_t *)minted, (size_t)(last_dot - minted), sig,
	     &sig_len);
	char sig_b64[64];
	b64url(sig, sig_len, sig_b64);
	assert_string_equal(last_dot + 1, sig_b64);
}

static void test_expired(void **state)
{
	(void)state;
	struct fs_claims c = claims("user", NOW_S, -1, NULL);
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, KEY_LEN, &c, tok, sizeof(tok));
	assert_true(n > 0);
	struct fs_claims out;
	assert_int_equal(fs_jwt_verify(key, KEY_LEN, tok, (size_t)n, NOW_S, &out), -1);
	assert_int_equal(fs_jwt_verify(key, KEY_LEN, tok, (size_t)n, NOW_S - 1, &out), 0);
}

static void test_bad_signature(void **state)
{
	(void)state;
	struct fs_claims c = claims("user", NOW_S + 60, 2, NULL);
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, KEY_LEN, &c, tok, sizeof(tok));
	assert_true(n > 0);
	struct fs_claims out;
	/* flip every character in turn, signature and payload alike */
	for (int i = 0; i < n; i++) {
		char saved = tok[i];
		tok[i] = saved == 'A' ? 'B' : 'A';
		if (saved == '.')
			tok[i] = 'A';
		assert_int_equal(verify_str(tok, &out), -1);
		tok[i] = saved;
	}
	assert_int_equal(verify_str(tok, &out), 0);
	/* another key */
	static const uint8_t other[] = "another secret";
	assert_int_equal(fs_jwt_verify(other, sizeof(other) - 1, tok, (size_t)n, NOW_S, &out), -1);
	/* truncated and extended */
	assert_int_equal(fs_jwt_verify(key, KEY_LEN, tok, (size_t)n - 1, NOW_S, &out), -1);
	tok[n] = 'A';
	tok[n + 1] = '\0';
	assert_int_equal(fs_jwt_verify(key, KEY_LEN, tok, (size_t)n + 1, NOW_S, &out), -1);
}

static void test_alg_none_and_others(void **state)
{
	(void)state;
	char tok[2048];
	struct fs_claims out;
	const char *payload = "{\"sub\":\"mallory\",\"exp\":1800000000}";
	/* correctly signed with the key, but claiming another algorithm */
	forge("{\"alg\":\"none\",\"typ\":\"JWT\"}", payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	forge("{\"alg\":\"HS512\"}", payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	forge("{\"typ\":\"JWT\"}", payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	forge("{\"alg\":\"HS256\",\"alg\":\"none\"}", payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	forge("[\"HS256\"]", payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	/* the classic unsigned token: header.payload. */
	char h[256], p[256];
	b64url((const uint8_t *)"{\"alg\":\"none\"}", 14, h);
	b64url((const uint8_t *)payload, strlen(payload), p);
	sprintf(tok, "%s.%s.", h, p);
	assert_int_equal(verify_str(tok, &out), -1);
	/* sanity: the same payload with HS256 passes */
	forge("{\"alg\":\"HS256\"}", payload, tok);
	assert_int_equal(verify_str(tok, &out), 0);
}

static void test_claims_required_and_ranges(void **state)
{
	(void)state;
	const char *hdr = "{\"alg\":\"HS256\",\"typ\":\"JWT\"}";
	char tok[2048];
	struct fs_claims out;
	static const char *const bad[] = {
		"{\"exp\":1800000000}",                         /* no sub */
		"{\"sub\":\"a\"}",                              /* no exp */
		"{\"sub\":\"\",\"exp\":1800000000}",            /* empty sub */
		"{\"sub\":1,\"exp\":1800000000}",               /* sub not a string */
		"{\"sub\":\"a\",\"exp\":\"1800000000\"}",       /* exp a string */
		"{\"sub\":\"a\",\"exp\":1.8e9}",                /* exp not an integer */
		"{\"sub\":\"a\",\"exp\":1800000000,\"tier\":5}",
		"{\"sub\":\"a\",\"exp\":1800000000,\"tier\":-1}",
		"{\"sub\":\"a\",\"exp\":1800000000,\"tier\":\"1\"}",
		"{\"sub\":\"a\",\"exp\":1800000000,\"sub\":\"b\"}", /* duplicate */
		"{\"sub\":\"a\",\"exp\":1800000000,\"dev\":7}",
		"{\"sub\":\"a\",\"exp\":1800000000} x",
		"[\"sub\",\"exp\"]",
		"not json",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		forge(hdr, bad[i], tok);
		assert_int_equal(verify_str(tok, &out), -1);
	}
	/* sub of 64 bytes passes, 65 does not; dev likewise */
	char payload[512];
	char sub[66];
	memset(sub, 'x', sizeof(sub));
	sub[64] = '\0';
	sprintf(payload, "{\"sub\":\"%s\",\"exp\":1800000000,\"dev\":\"%s\"}", sub, sub);
	forge(hdr, payload, tok);
	assert_int_equal(verify_str(tok, &out), 0);
	assert_int_equal(out.sub_len, 64);
	assert_int_equal(out.dev_len, 64);
	sub[64] = 'x';
	sub[65] = '\0';
	sprintf(payload, "{\"sub\":\"%s\",\"exp\":1800000000}", sub);
	forge(hdr, payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	sprintf(payload, "{\"sub\":\"a\",\"exp\":1800000000,\"dev\":\"%s\"}", sub);
	forge(hdr, payload, tok);
	assert_int_equal(verify_str(tok, &out), -1);
	/* escapes in sub are resolved */
	forge(hdr, "{\"sub\":\"a\\u0041\\/b\",\"exp\":1800000000,\"tier\":4}", tok);
	assert_int_equal(verify_str(tok, &out), 0);
	assert_int_equal(out.sub_len, 4);
	assert_memory_equal(out.sub, "aA/b", 4);
	assert_int_equal(out.tier, 4);
}

static void test_garbage(void **state)
{
	(void)state;
	struct fs_claims out;
	static const char *const bad[] = {
		"", ".", "..", "a.b.c", "Bearer x.y.z", "eyJhbGciOiJIUzI1NiJ9",
		"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0",
		"!!!.???.***",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(verify_str(bad[i], &out), -1);
	/* deterministic pseudo-random bytes, with dots sprinkled in */
	char buf[256];
	uint32_t x = 12345;
	for (int round = 0; round < 2000; round++) {
		size_t len = (size_t)(round % 255) + 1;
		for (size_t i = 0; i < len; i++) {
			x = x * 1103515245u + 12345u;
			buf[i] = (x >> 16) % 7 == 0 ? '.' : (char)(x >> 20);
		}
		assert_int_equal(fs_jwt_verify(key, KEY_LEN, buf, len, NOW_S, &out), -1);
	}
	/* too long */
	static char huge[FS_JWT_LEN_MAX + 2];
	memset(huge, 'A', sizeof(huge));
	assert_int_equal(fs_jwt_verify(key, KEY_LEN, huge, sizeof(huge), NOW_S, &out), -1);
}

static void test_mint_cap_too_small(void **state)
{
	(void)state;
	struct fs_claims c = claims("user", NOW_S + 60, 1, "dev");
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, KEY_LEN, &c, tok, sizeof(tok));
	assert_true(n > 0);
	char small[FS_JWT_LEN_MAX + 1];
	assert_int_equal(fs_jwt_mint(key, KEY_LEN, &c, small, (size_t)n), -1);
	assert_int_equal(fs_jwt_mint(key, KEY_LEN, &c, small, (size_t)n + 1), n);
	assert_string_equal(small, tok);
	assert_int_equal(fs_jwt_mint(key, KEY_LEN, &c, small, 0), -1);
}

static void test_prepared_key_agrees(void **state)
{
	(void)state;
	struct fs_jwt_key k;
	assert_int_equal(fs_jwt_key_init(&k, key, KEY_LEN), 0);
	struct fs_claims c = claims("prepared", NOW_S + 60, 2, "d");
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(key, KEY_LEN, &c, tok, sizeof(tok));
	assert_true(n > 0);
	struct fs_claims out;
	/* used many times, it keeps giving the same answers as the raw key */
	for (int round = 0; round < 3; round++) {
		assert_int_equal(fs_jwt_verify_prepared(&k, tok, (size_t)n, NOW_S, &out), 0);
		assert_memory_equal(out.sub, "prepared", 8);
		assert_int_equal(out.tier, 2);
		for (int i = 0; i < n; i++) {
			char saved = tok[i];
			tok[i] = saved == 'x' ? 'y' : 'x';
			assert_int_equal(fs_jwt_verify_prepared(&k, tok, (size_t)n, NOW_S, &out),
			                 fs_jwt_verify(key, KEY_LEN, tok, (size_t)n, NOW_S, &out));
			tok[i] = saved;
		}
	}
	assert_int_equal(fs_jwt_verify_prepared(&k, tok, (size_t)n, NOW_S + 60, &out), -1);
	fs_jwt_key_free(&k);
	assert_null(k.mac_ctx);

	/* a key prepared from another secret refuses the token */
	static const uint8_t other[] = "0123456789abcdef0123456789abcdeF";
	assert_int_equal(fs_jwt_key_init(&k, other, sizeof(other) - 1), 0);
	assert_int_equal(fs_jwt_verify_prepared(&k, tok, (size_t)n, NOW_S, &out), -1);
	fs_jwt_key_free(&k);
}

static void temp_path(char *out, size_t cap, const char *name)
{
	const char *dir = getenv("TMPDIR");
	snprintf(out, cap, "%s/fs_jwt_test_%d_%s", dir ? dir : "/tmp", (int)getpid(), name);
	unlink(out);
}

static void write_file(const char *path, const char *data, size_t len)
{
	FILE *f = fopen(path, "wb");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	fclose(f);
}

static void test_secret_load(void **state)
{
	(void)state;
	char path[256];
	temp_path(path, sizeof(path), "secret");
	uint8_t k[FS_SECRET_LEN_MAX];
	char err[256];

	write_file(path, "s3cret \t\r\n\n", 11);
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), 6);
	assert_memory_equal(k, "s3cret", 6);

	write_file(path, " in side ", 9);  /* leading and inner spaces kept */
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), 8);
	assert_memory_equal(k, " in side", 8);

	write_file(path, " \n\t\n", 4);
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), -1);
	assert_non_null(strstr(err, "empty"));
	assert_null(strchr(err, '\n'));

	static char big[FS_SECRET_LEN_MAX + 1];
	memset(big, 'k', sizeof(big));
	write_file(path, big, sizeof(big));
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), -1);
	write_file(path, big, FS_SECRET_LEN_MAX);
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), FS_SECRET_LEN_MAX);

	unlink(path);
	err[0] = '\0';
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), -1);
	assert_true(strlen(err) > 0);
	assert_null(strchr(err, '\n'));
}

static void test_secret_create(void **state)
{
	(void)state;
	char path[256];
	temp_path(path, sizeof(path), "created");
	assert_int_equal(fs_secret_create(path), 0);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size, 65);

	uint8_t k[FS_SECRET_LEN_MAX];
	char err[256];
	assert_int_equal(fs_secret_load(path, k, err, sizeof(err)), 64);
	for (int i = 0; i < 64; i++)
		assert_non_null(strchr("0123456789abcdef", k[i]));

	/* never replaced */
	assert_int_equal(fs_secret_create(path), -1);
	assert_int_equal(errno, EEXIST);
	uint8_t again[FS_SECRET_LEN_MAX];
	assert_int_equal(fs_secret_load(path, again, err, sizeof(err)), 64);
	assert_memory_equal(k, again, 64);

	/* a second file holds another secret */
	char path2[256];
	temp_path(path2, sizeof(path2), "created2");
	assert_int_equal(fs_secret_create(path2), 0);
	assert_int_equal(fs_secret_load(path2, again, err, sizeof(err)), 64);
	assert_memory_not_equal(k, again, 64);

	/* a token minted with the loaded key verifies */
	struct fs_claims c = claims("u1", NOW_S + 10, -1, NULL);
	char tok[FS_JWT_LEN_MAX + 1];
	int n = fs_jwt_mint(k, 64, &c, tok, sizeof(tok));
	struct fs_claims out;
	assert_int_equal(fs_jwt_verify(k, 64, tok, (size_t)n, NOW_S, &out), 0);
	assert_int_equal(fs_jwt_verify(again, 64, tok, (size_t)n, NOW_S, &out), -1);
	unlink(path);
	unlink(path2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_round_trip),
		cmocka_unit_test(test_round_trip_optional_absent),
		cmocka_unit_test(test_interop_with_independent_encoder),
		cmocka_unit_test(test_expired),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_alg_none_and_others),
		cmocka_unit_test(test_claims_required_and_ranges),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_mint_cap_too_small),
		cmocka_unit_test(test_prepared_key_agrees),
		cmocka_unit_test(test_secret_load),
		cmocka_unit_test(test_secret_create),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
