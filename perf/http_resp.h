/* http_resp.h - minimal HTTP/1.1 response framing for the load generator:
 * status code, Content-Length body, Connection: close, and one string field
 * out of a flat JSON body. Pure: no I/O, no allocation (picohttpparser's
 * contract: 0 = need more bytes, -1 = malformed, n = bytes of one answer).
 */
#ifndef PERF_HTTP_RESP_H
#define PERF_HTTP_RESP_H

#include <stdbool.h>
#include <stddef.h>

#define HR_HEADER_LEN_MAX 8192   /* a longer header block is malformed */

struct hr_resp {
	int    status;        /* 100..599 */
	size_t header_len;    /* through the blank line */
	size_t body_len;
	bool   close;         /* Connection: close */
};

/* Frames one answer at the start of buf. Answers without Content-Length
 * (chunked, or read-until-close) are reported as malformed: every server we
 * measure sends a length. Returns total length, 0 (incomplete) or -1. */
long hr_parse(const char *buf, size_t len, struct hr_resp *out);

/* Copies the string value of "key" from a flat JSON object into out
 * (NUL-terminated, no unescaping). Returns its length, or -1 when absent or
 * longer than cap - 1. */
int hr_json_str(const char *body, size_t len, const char *key, char *out, size_t cap);

#endif
