/* http_resp.c - HTTP/1.1 response framing (see http_resp.h). */
#include "http_resp.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Parses a decimal of at most 12 digits; -1 when none or too long. */
static long parse_len(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	long v = 0;
	int digits = 0;
	while (p < end && *p >= '0' && *p <= '9' && digits < 12) {
		v = v * 10 + (*p - '0');
		p++;
		digits++;
	}
	return digits == 0 ? -1 : v;
}

static bool header_is(const char *line, size_t line_len, const char *name)
{
	size_t n = strlen(name);
	return line_len > n && line[n] == ':' && strncasecmp(line, name, n) == 0;
}

/* Walks the header lines; fills body_len (-1 when absent) and close. */
static void scan_headers(const char *p, const char *end, long *body_len, bool *close)
{
	*body_len = -1;
	*close = false;
	while (p < end) {
		const char *eol = memchr(p, '\n', (size_t)(end - p));
		if (eol == NULL)
			eol = end;
		size_t line_len = (size_t)(eol - p);
		if (header_is(p, line_len, "content-length"))
			*body_len = parse_len(p + 15, eol);
		else if (header_is(p, line_len, "connection"))
			*close = memmem(p, line_len, "close", 5) != NULL ||
			         memmem(p, line_len, "Close", 5) != NULL;
		p = eol + 1;
	}
}

long hr_parse(const char *buf, size_t len, struct hr_resp *out)
{
	assert(buf != NULL && out != NULL);
	size_t scan = len < HR_HEADER_LEN_MAX ? len : HR_HEADER_LEN_MAX;
	const char *blank = memmem(buf, scan, "\r\n\r\n", 4);
	if (blank == NULL)
		return len >= HR_HEADER_LEN_MAX ? -1 : 0;
	if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0 || buf[8] != ' ')
		return -1;
	int status = 0;
	for (int i = 9; i < 12; i++) {
		if (buf[i] < '0' || buf[i] > '9')
			return -1;
		status = status * 10 + (buf[i] - '0');
	}
	if (status < 100 || status > 599)
		return -1;
	const char *first_eol = memchr(buf, '\n', (size_t)(blank - buf) + 2);
	assert(first_eol != NULL);
	long body_len;
	bool close;
	scan_headers(first_eol + 1, blank + 2, &body_len, &close);
	bool no_body = status == 204 || status == 304 || status < 200;
	if (body_len < 0 && !no_body)
		return -1;
	if (no_body)
		body_len = 0;
	out->status = status;
	out->header_len = (size_t)(blank - buf) + 4;
	out->body_len = (size_t)body_len;
	out->close = close;
	size_t total = out->header_len + out->body_len;
	return total <= len ? (long)total : 0;
}

/* After a "key" match: skips `\s*:\s*"`; returns the value start or NULL. */
static const char *value_start(const char *p, const char *end)
{
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	if (p == end || *p != ':')
		return NULL;
	p++;
	while (p < end && (*p == ' ' || *p == '\t'))
		p++;
	return p < end && *p == '"' ? p + 1 : NULL;
}

int hr_json_str(const char *body, size_t len, const char *key, char *out, size_t cap)
{
	assert(body != NULL && key != NULL && out != NULL && cap > 0);
	char pat[72];
	int pat_len = snprintf(pat, sizeof(pat), "\"%s\"", key);
	if (pat_len <= 0 || (size_t)pat_len >= sizeof(pat))
		return -1;
	const char *end = body + len;
	const char *p = body;
	for (int tries = 0; tries < 64; tries++) {   /* "key" may also be a value */
		const char *hit = memmem(p, (size_t)(end - p), pat, (size_t)pat_len);
		if (hit == NULL)
			return -1;
		p = hit + pat_len;
		const char *v = value_start(p, end);
		if (v == NULL)
			continue;
		const char *q = memchr(v, '"', (size_t)(end - v));
		if (q == NULL || (size_t)(q - v) >= cap)
			return -1;
		memcpy(out, v, (size_t)(q - v));
		out[q - v] = '\0';
		return (int)(q - v);
	}
	return -1;
}
