/* http.h - HTTP/1.1 request framing on top of Node's http_parser.
 *
 * A pure function: it parses one request from the front of a buffer, does
 * no I/O and no allocation, and points into the caller's buffer. The caller
 * (the connection) keeps unparsed bytes and calls again when more arrive;
 * parsing restarts from the request's first byte each time, which keeps the
 * parser stateless between calls (requests are bounded by the limits, so the
 * re-scan of a partial request is bounded too).
 */
#ifndef DP_HTTP_H
#define DP_HTTP_H

#include <stddef.h>
#include <stdint.h>

enum dp_method { DP_M_OTHER = 0, DP_M_GET, DP_M_HEAD, DP_M_POST, DP_M_PUT, DP_M_DELETE };

struct dp_http_limits {
	uint32_t request_line_max;   /* bytes of method + target + version, e.g. 2048 */
	uint32_t header_count_max;   /* e.g. 32 */
	uint32_t header_bytes_max;   /* all header lines together, e.g. 8192 */
	uint32_t body_bytes_max;     /* Content-Length ceiling, e.g. 4096 */
};

struct dp_slice { const char *p; uint32_t len; };   /* len 0 = absent */

struct dp_request {
	uint8_t  method;             /* enum dp_method */
	uint8_t  keep_alive;         /* 1 unless Connection: close / HTTP/1.0 without keep-alive */
	uint8_t  http_minor;
	uint8_t  has_host;           /* a Host header was present (once: a second one is -400) */
	struct dp_slice path;        /* target without the query string */
	struct dp_slice authorization;   /* whole header value */
	struct dp_slice idempotency_key;
	struct dp_slice device_id;       /* X-Device-Id */
	struct dp_slice forwarded_for;   /* X-Forwarded-For */
	struct dp_slice content_type;
	struct dp_slice body;
};

/* Parses one request at the start of buf[0..len).
 * Returns n > 0: a complete request of n bytes (req filled, slices point into buf);
 *          0:     incomplete, call again with more bytes (no limit exceeded yet);
 *         < 0:    -(HTTP status) to answer before closing: -400 malformed
 *                 (also: smuggling shapes such as Content-Length with
 *                 Transfer-Encoding, duplicate Content-Length), -413 body
 *                 over the limit, -431 headers over a limit, -414 request
 *                 line too long, -501 Transfer-Encoding on a request,
 *                 -505 HTTP version other than 1.0/1.1. */
int dp_http_parse(const char *buf, size_t len, const struct dp_http_limits *lim,
                  struct dp_request *req);

#endif
