/* json.c - the two request bodies the public API accepts, read with jsmn
 * over a fixed token array on the stack.
 *
 * jsmn is a tokenizer, not a validator: even in strict mode it lets through
 * shapes such as {"a" "b"} or {"a":1,,}. So after tokenizing we walk the
 * bytes between the tokens ourselves and accept exactly one flat JSON
 * object: '{' (key ':' scalar) separated by ',' '}' with whitespace around,
 * nothing but whitespace after it, no duplicate keys, no nested values.
 * Every refusal comes with a short detail string for the 400 answer.
 */
#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include "dataplane/json.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

#define JSON_TOKENS_MAX 16   /* the object + 7 key/value pairs */

static const char detail_malformed[] = "malformed JSON";
static const char detail_not_object[] = "body must be a JSON object";
static const char detail_nested[] = "body must be a flat JSON object";
static const char detail_too_many[] = "too many fields";
static const char detail_duplicate[] = "duplicate key";
static const char detail_key_escape[] = "escapes in keys are not supported";
static const char detail_token_required[] = "payment_token required";
static const char detail_token_invalid[] =
	"payment_token must be 1 to 64 printable ASCII characters";

struct flat_object {
	jsmntok_t tok[JSON_TOKENS_MAX];
	int pairs;   /* key i is tok[1 + 2i], its value tok[2 + 2i] */
};

static int is_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static size_t skip_ws(const char *s, size_t pos, size_t len)
{
	while (pos < len && is_ws(s[pos]))
		pos++;
	return pos;
}

/* true/false/null or a JSON number (RFC 8259 grammar). */
static int scalar_valid(const char *s, size_t len)
{
	if ((len == 4 && (memcmp(s, "true", 4) == 0 || memcmp(s, "null", 4) == 0)) ||
	    (len == 5 && memcmp(s, "false", 5) == 0))
		return 1;
	size_t i = 0;
	if (i < len && s[i] == '-')
		i++;
	if (i < len && s[i] == '0') {
		i++;
	} else {
		if (i >= len || s[i] < '1' || s[i] > '9')
			return 0;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
	}
	if (i < len && s[i] == '.') {
		size_t d = ++i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return 0;
	}
	if (i < len && (s[i] == 'e' || s[i] == 'E')) {
		i++;
		if (i < len && (s[i] == '+' || s[i] == '-'))
			i++;
		size_t d = i;
		while (i < len && s[i] >= '0' && s[i] <= '9')
			i++;
		if (i == d)
			return 0;
	}
	return i == len;
}

/* A string token's bytes: no raw control characters (jsmn checked the
 * escapes). */
static int string_valid(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20)
			return 0;
	}
	return 1;
}

/* Checks one value token sits at `pos` and returns the position after it,
 * or 0 when it does not. */
static size_t value_at(const char *s, size_t pos, const jsmntok_t *t)
{
	size_t start = (size_t)t->start, end = (size_t)t->end;
	if (t->type == JSMN_STRING) {
		if (start != pos + 1 || s[pos] != '"' || !string_valid(s + start, end - start))
			return 0;
		return end + 1;
	}
	if (t->type != JSMN_PRIMITIVE || start != pos || !scalar_valid(s + start, end - start))
		return 0;
	return end;
}

/* Checks the bytes between the tokens: exactly the punctuation of one flat
 * object. Returns NULL or a detail string. */
static const char *flat_object_syntax(const char *s, size_t len, const struct flat_object *o)
{
	const jsmntok_t *obj = &o->tok[0];
	size_t pos = skip_ws(s, (size_t)obj->start + 1, len);
	for (int k = 0; k < o->pairs; k++) {
		const jsmntok_t *key = &o->tok[1 + 2 * k];
		const jsmntok_t *val = &o->tok[2 + 2 * k];
		if (k > 0) {
			if (pos >= len || s[pos] != ',')
				return detail_malformed;
			pos = skip_ws(s, pos + 1, len);
		}
		if (key->type != JSMN_STRING || key->size != 1)
			return detail_malformed;
		pos = value_at(s, pos, key);
		if (pos == 0)
			return detail_malformed;
		pos = skip_ws(s, pos, len);
		if (pos >= len || s[pos] != ':')
			return detail_malformed;
		pos = value_at(s, skip_ws(s, pos + 1, len), val);
		if (pos == 0)
			return detail_malformed;
		pos = skip_ws(s, pos, len);
	}
	if (pos >= len || s[pos] != '}' || pos + 1 != (size_t)obj->end)
		return detail_malformed;
	return NULL;
}

static int key_equals(const char *s, const jsmntok_t *t, const char *lit)
{
	size_t n = strlen(lit);
	return (size_t)(t->end - t->start) == n && memcmp(s + t->start, lit, n) == 0;
}

/* Refuses two keys with the same bytes, and keys holding escapes (two
 * spellings of one key would otherwise slip past the duplicate check). */
static const char *flat_object_keys(const char *s, const struct flat_object *o)
{
	for (int a = 0; a < o->pairs; a++) {
		const jsmntok_t *ka = &o->tok[1 + 2 * a];
		size_t a_len = (size_t)(ka->end - ka->start);
		if (memchr(s + ka->start, '\\', a_len) != NULL)
			return detail_key_escape;
		for (int b = 0; b < a; b++) {
			const jsmntok_t *kb = &o->tok[1 + 2 * b];
			if ((size_t)(kb->end - kb->start) == a_len &&
			    memcmp(s + ka->start, s + kb->start, a_len) == 0)
				return detail_duplicate;
		}
	}
	return NULL;
}

/* RFC 3629 UTF-8 (no overlongs, no surrogates, <= U+10FFFF): JSON text
 * must be UTF-8 (API.md), and jsmn does not check it. */
static int utf8_valid(const unsigned char *s, size_t len)
{
	for (size_t i = 0; i < len;) {
		unsigned char c = s[i];
		size_t n = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
		if (n == 0 || i + n > len || (n == 2 && c < 0xc2) || (n == 4 && c > 0xf4))
			return 0;
		for (size_t k = 1; k < n; k++)
			if ((s[i + k] & 0xc0) != 0x80)
				return 0;
		if ((n == 3 && c == 0xe0 && s[i + 1] < 0xa0) || (n == 3 && c == 0xed && s[i + 1] > 0x9f) ||
		    (n == 4 && c == 0xf0 && s[i + 1] < 0x90) || (n == 4 && c == 0xf4 && s[i + 1] > 0x8f))
			return 0;
		i += n;
	}
	return 1;
}

/* Tokenizes and validates a flat object filling s[0..len) (whitespace
 * around it allowed). Returns NULL or a detail string. */
static const char *flat_object_read(const char *s, size_t len, struct flat_object *o)
{
	if (!utf8_valid((const unsigned char *)s, len))
		return "body is not valid UTF-8";
	jsmn_parser parser;
	jsmn_init(&parser);
	int count = jsmn_parse(&parser, s, len, o->tok, JSON_TOKENS_MAX);
	if (count == JSMN_ERROR_NOMEM)
		return detail_too_many;
	if (count < 1)
		return detail_malformed;
	if (o->tok[0].type != JSMN_OBJECT)
		return detail_not_object;
	if (skip_ws(s, 0, len) != (size_t)o->tok[0].start ||
	    skip_ws(s, (size_t)o->tok[0].end, len) != len)
		return detail_malformed;
	for (int i = 1; i < count; i++) {
		if (o->tok[i].type == JSMN_OBJECT || o->tok[i].type == JSMN_ARRAY)
			return detail_nested;
	}
	if (count != 1 + 2 * o->tok[0].size)
		return detail_malformed;
	o->pairs = o->tok[0].size;
	const char *d = flat_object_syntax(s, len, o);
	if (d == NULL)
		d = flat_object_keys(s, o);
	return d;
}

static const char *quantity_detail(uint32_t quantity_max)
{
	static _Thread_local char text[64];
	int n = snprintf(text, sizeof(text), "quantity must be an integer between 1 and %u",
	                 quantity_max);
	assert(n > 0 && (size_t)n < sizeof(text));
	(void)n;
	return text;
}

/* The detail for a bad quantity names quantity_max, so it lives in a
 * thread-local buffer: valid until this thread's next call. */
int dp_json_reserve_body(const char *body, size_t len, uint32_t quantity_max,
                         uint32_t *quantity, const char **detail)
{
	assert(quantity != NULL && detail != NULL);
	assert(quantity_max >= 1);
	assert(body != NULL || len == 0);
	if (skip_ws(body, 0, len) == len) {
		*quantity = 1;
		return 0;
	}
	struct flat_object o;
	*detail = flat_object_read(body, len, &o);
	if (*detail != NULL)
		return -1;
	uint32_t q = 1;
	for (int k = 0; k < o.pairs; k++) {
		if (!key_equals(body, &o.tok[1 + 2 * k], "quantity"))
			continue;
		const jsmntok_t *v = &o.tok[2 + 2 * k];
		const char *p = body + v->start;
		size_t n = (size_t)(v->end - v->start);
		uint64_t value = 0;
		int ok = v->type == JSMN_PRIMITIVE && n >= 1 && n <= 10 && p[0] != '0';
		for (size_t i = 0; ok && i < n; i++) {
			ok = p[i] >= '0' && p[i] <= '9';
			value = value * 10 + (uint64_t)(p[i] - '0');
		}
		if (!ok || value < 1 || value > quantity_max) {
			*detail = quantity_detail(quantity_max);
			return -1;
		}
		q = (uint32_t)value;
	}
	assert(q >= 1 && q <= quantity_max);
	*quantity = q;
	return 0;
}

int dp_json_checkout_body(const char *body, size_t len, char token[64], const char **detail)
{
	assert(token != NULL && detail != NULL);
	assert(body != NULL || len == 0);
	if (skip_ws(body, 0, len) == len) {
		*detail = detail_token_required;
		return -1;
	}
	struct flat_object o;
	*detail = flat_object_read(body, len, &o);
	if (*detail != NULL)
		return -1;
	for (int k = 0; k < o.pairs; k++) {
		if (!key_equals(body, &o.tok[1 + 2 * k], "payment_token"))
			continue;
		const jsmntok_t *v = &o.tok[2 + 2 * k];
		const char *p = body + v->start;
		size_t n = (size_t)(v->end - v->start);
		int ok = v->type == JSMN_STRING && n >= 1 && n <= 64;
		for (size_t i = 0; ok && i < n; i++) {
			unsigned char c = (unsigned char)p[i];
			ok = c >= 0x20 && c < 0x7f && c != '"' && c != '\\';
		}
		if (!ok) {
			*detail = detail_token_invalid;
			return -1;
		}
		memcpy(token, p, n);
		return (int)n;
	}
	*detail = detail_token_required;
	return -1;
}
