/* http.c - HTTP/1.1 request framing on top of Node's http_parser.
 *
 * dp_http_parse() runs a fresh parser over the front of the caller's buffer
 * each time (see http.h for why re-scanning is fine: requests are bounded by
 * the limits). The callbacks only record slices into that buffer and count;
 * the parser is paused in on_message_complete so a pipelined request behind
 * this one is left for the next call.
 *
 * Limits are checked while parsing, so a client learns it is over a limit
 * as soon as the bytes that break it arrive, not when the request ends:
 *   request line: from the first byte to the LF of the request line
 *     (blank lines before it count), CR excluded: -414;
 *   header count and header bytes (after the request line up to and
 *     including the blank line that ends the headers): -431;
 *   Content-Length above body_bytes_max: -413.
 * Framing that two servers could read two ways is refused: Transfer-Encoding
 * (we accept no chunked requests: -501, or -400 with Content-Length too),
 * duplicate Content-Length, folded header lines, and duplicates of the
 * headers we act on (Authorization, Idempotency-Key, X-Device-Id,
 * X-Forwarded-For, Content-Type, Host): -400. Whether Host is present is
 * reported (has_host); the connection refuses HTTP/1.1 without it (RFC 9112
 * section 3.2), since that is a rule about the request, not its framing.
 */
#include "dataplane/http.h"

#include <assert.h>
#include <http_parser.h>
#include <string.h>

enum header_kind {
	H_OTHER = 0, H_AUTHORIZATION, H_IDEMPOTENCY_KEY, H_DEVICE_ID, H_FORWARDED_FOR,
	H_CONTENT_TYPE, H_CONTENT_LENGTH, H_TRANSFER_ENCODING, H_HOST, H_KIND_COUNT
};

static const char *const header_names[H_KIND_COUNT] = {
	[H_OTHER] = "",
	[H_AUTHORIZATION] = "authorization",
	[H_IDEMPOTENCY_KEY] = "idempotency-key",
	[H_DEVICE_ID] = "x-device-id",
	[H_FORWARDED_FOR] = "x-forwarded-for",
	[H_CONTENT_TYPE] = "content-type",
	[H_CONTENT_LENGTH] = "content-length",
	[H_TRANSFER_ENCODING] = "transfer-encoding",
	[H_HOST] = "host",
};

enum last_cb { LAST_NONE = 0, LAST_FIELD, LAST_VALUE };

struct parse_ctx {
	const char *buf;
	size_t len;
	const struct dp_http_limits *lim;
	struct dp_request *req;
	const char *headers_start;   /* first byte after the request line's LF */
	struct dp_slice url;
	struct dp_slice name;        /* header being read */
	struct dp_slice value;
	uint32_t header_count;
	uint32_t kinds_seen;         /* bit per enum header_kind */
	int err;                     /* -(HTTP status) decided by a callback */
	uint8_t last;                /* enum last_cb */
	uint8_t kind;                /* enum header_kind of `name`, once classified */
	uint8_t classified;
	uint8_t headers_done;
	uint8_t complete;
};

static int ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + ('a' - 'A') : c;
}

static int name_equals(struct dp_slice name, const char *lower)
{
	size_t len = strlen(lower);
	if (name.len != len)
		return 0;
	for (size_t i = 0; i < len; i++) {
		if (ascii_lower((unsigned char)name.p[i]) != lower[i])
			return 0;
	}
	return 1;
}

/* RFC 9110 token characters: a name with anything else (a space before the
 * colon, say) is refused, since a proxy in front might read it another way. */
static int name_is_token(struct dp_slice name)
{
	if (name.len == 0)
		return 0;
	for (uint32_t i = 0; i < name.len; i++) {
		unsigned char c = (unsigned char)name.p[i];
		int alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
		if (!alnum && (c == 0 || strchr("!#$%&'*+-.^_`|~", c) == NULL))
			return 0;
	}
	return 1;
}

static uint8_t header_classify(struct dp_slice name)
{
	for (int k = H_OTHER + 1; k < H_KIND_COUNT; k++) {
		if (name_equals(name, header_names[k]))
			return (uint8_t)k;
	}
	return H_OTHER;
}

/* Appends a callback's piece to a slice. The pieces of one element are
 * contiguous in the buffer; a gap means a folded line (obs-fold) or a
 * parser surprise, and we refuse it. Returns 0 or -1. */
static int slice_extend(struct dp_slice *s, const char *at, size_t len)
{
	if (s->p == NULL) {
		s->p = at;
		s->len = (uint32_t)len;
		return 0;
	}
	if (at != s->p + s->len)
		return -1;
	s->len += (uint32_t)len;
	return 0;
}

static int fail(struct parse_ctx *ctx, int status)
{
	assert(status < 0);
	if (ctx->err == 0)
		ctx->err = status;
	return -1;
}

static struct parse_ctx *ctx_of(http_parser *p)
{
	struct parse_ctx *ctx = p->data;
	assert(ctx != NULL && ctx->req != NULL);
	return ctx;
}

/* Fails with -431 once the header section reaches past header_bytes_max. */
static int header_bytes_check(struct parse_ctx *ctx, const char *end)
{
	assert(ctx->headers_start != NULL && end >= ctx->headers_start);
	if ((size_t)(end - ctx->headers_start) > ctx->lim->header_bytes_max)
		return fail(ctx, -431);
	return 0;
}

/* The name is complete (its value started or the headers ended): decide
 * what it is and refuse framing ambiguities at once. */
static int header_name_done(struct parse_ctx *ctx)
{
	if (ctx->classified)
		return 0;
	ctx->classified = 1;
	if (!name_is_token(ctx->name))
		return fail(ctx, -400);
	ctx->kind = header_classify(ctx->name);
	if (ctx->kind == H_OTHER)
		return 0;
	if (ctx->kinds_seen & (1u << ctx->kind))
		return fail(ctx, -400);
	ctx->kinds_seen |= 1u << ctx->kind;
	return 0;
}

static int content_length_check(struct parse_ctx *ctx, struct dp_slice v)
{
	if (v.len == 0)
		return fail(ctx, -400);
	uint64_t n = 0;
	for (uint32_t i = 0; i < v.len; i++) {
		if (v.p[i] < '0' || v.p[i] > '9')
			return fail(ctx, -400);
		n = n * 10 + (uint64_t)(v.p[i] - '0');
		if (n > ctx->lim->body_bytes_max)
			return fail(ctx, -413);
	}
	return 0;
}

/* Stores the header just read into the request, if it is one we act on. */
static int header_done(struct parse_ctx *ctx)
{
	if (ctx->name.p == NULL)
		return 0;
	if (header_name_done(ctx) != 0)
		return -1;
	struct dp_slice v = ctx->value;
	while (v.len > 0 && (v.p[v.len - 1] == ' ' || v.p[v.len - 1] == '\t'))
		v.len--;
	struct dp_request *req = ctx->req;
	int rc = 0;
	switch (ctx->kind) {
	case H_AUTHORIZATION: req->authorization = v; break;
	case H_IDEMPOTENCY_KEY: req->idempotency_key = v; break;
	case H_DEVICE_ID: req->device_id = v; break;
	case H_FORWARDED_FOR: req->forwarded_for = v; break;
	case H_CONTENT_TYPE: req->content_type = v; break;
	case H_CONTENT_LENGTH: rc = content_length_check(ctx, v); break;
	default: break;
	}
	memset(&ctx->name, 0, sizeof(ctx->name));
	memset(&ctx->value, 0, sizeof(ctx->value));
	ctx->classified = 0;
	ctx->kind = H_OTHER;
	return rc;
}

static int on_url(http_parser *p, const char *at, size_t len)
{
	struct parse_ctx *ctx = ctx_of(p);
	if (slice_extend(&ctx->url, at, len) != 0)
		return fail(ctx, -400);
	return 0;
}

static int on_header_field(http_parser *p, const char *at, size_t len)
{
	struct parse_ctx *ctx = ctx_of(p);
	int continues = ctx->last == LAST_FIELD && ctx->name.p != NULL &&
	                at == ctx->name.p + ctx->name.len;
	if (!continues) {
		if (header_done(ctx) != 0)
			return -1;
		ctx->header_count++;
		if (ctx->header_count > ctx->lim->header_count_max)
			return fail(ctx, -431);
	}
	ctx->last = LAST_FIELD;
	if (slice_extend(&ctx->name, at, len) != 0)
		return fail(ctx, -400);
	return header_bytes_check(ctx, at + len);
}

static int on_header_value(http_parser *p, const char *at, size_t len)
{
	struct parse_ctx *ctx = ctx_of(p);
	if (ctx->last != LAST_FIELD && ctx->last != LAST_VALUE)
		return fail(ctx, -400);
	if (header_name_done(ctx) != 0)
		return -1;
	ctx->last = LAST_VALUE;
	if (slice_extend(&ctx->value, at, len) != 0)
		return fail(ctx, -400);
	return header_bytes_check(ctx, at + len);
}

static uint8_t method_of(unsigned m)
{
	switch (m) {
	case HTTP_GET: return DP_M_GET;
	case HTTP_HEAD: return DP_M_HEAD;
	case HTTP_POST: return DP_M_POST;
	case HTTP_PUT: return DP_M_PUT;
	case HTTP_DELETE: return DP_M_DELETE;
	default: return DP_M_OTHER;
	}
}

static int on_headers_complete(http_parser *p)
{
	struct parse_ctx *ctx = ctx_of(p);
	if (header_done(ctx) != 0)
		return -1;
	uint32_t te = ctx->kinds_seen & (1u << H_TRANSFER_ENCODING);
	uint32_t cl = ctx->kinds_seen & (1u << H_CONTENT_LENGTH);
	if (te && cl)
		return fail(ctx, -400);
	if (te)
		return fail(ctx, -501);
	if (p->http_major != 1 || p->http_minor > 1)
		return fail(ctx, -505);
	/* CONNECT would make http_parser stop at the headers and leave a body
	 * to be read as the next request; we are not a proxy. */
	if (p->method == HTTP_CONNECT || ctx->url.p == NULL)
		return fail(ctx, -400);
	if (cl && p->content_length > ctx->lim->body_bytes_max)
		return fail(ctx, -413);
	struct dp_request *req = ctx->req;
	req->method = method_of(p->method);
	req->http_minor = (uint8_t)p->http_minor;
	req->keep_alive = http_should_keep_alive(p) ? 1 : 0;
	req->has_host = (ctx->kinds_seen & (1u << H_HOST)) ? 1 : 0;
	ctx->headers_done = 1;
	return 0;
}

static int on_body(http_parser *p, const char *at, size_t len)
{
	struct parse_ctx *ctx = ctx_of(p);
	if (slice_extend(&ctx->req->body, at, len) != 0)
		return fail(ctx, -400);
	if (ctx->req->body.len > ctx->lim->body_bytes_max)
		return fail(ctx, -413);
	return 0;
}

static int on_message_complete(http_parser *p)
{
	struct parse_ctx *ctx = ctx_of(p);
	assert(ctx->headers_done);
	ctx->complete = 1;
	http_parser_pause(p, 1);
	return 0;
}

static const http_parser_settings parser_settings = {
	.on_url = on_url,
	.on_header_field = on_header_field,
	.on_header_value = on_header_value,
	.on_headers_complete = on_headers_complete,
	.on_body = on_body,
	.on_message_complete = on_message_complete,
};

/* Checks the version at the end of a complete request line. Returns 0 when
 * it is HTTP/1.0 or HTTP/1.1 or not recognisably a version (the parser then
 * refuses it), -505 for another HTTP version (HTTP/2's preface included). */
static int version_check(const char *line, size_t len)
{
	const char *sp = NULL;
	for (size_t i = len; i > 0; i--) {
		if (line[i - 1] == ' ') {
			sp = line + i;
			break;
		}
	}
	if (sp == NULL)
		return 0;
	size_t v_len = (size_t)(line + len - sp);
	if (v_len < 6 || memcmp(sp, "HTTP/", 5) != 0)
		return 0;
	if (v_len == 8 && (memcmp(sp, "HTTP/1.1", 8) == 0 || memcmp(sp, "HTTP/1.0", 8) == 0))
		return 0;
	for (size_t i = 5; i < v_len; i++) {
		if ((sp[i] < '0' || sp[i] > '9') && sp[i] != '.')
			return 0;
	}
	return -505;
}

/* Finds the request line. Returns 1 and sets *headers_start when its LF is
 * in the buffer, 0 when it is still arriving, or -414 / -505. */
static int request_line_scan(const char *buf, size_t len, uint32_t line_max,
                             const char **headers_start)
{
	size_t window = len < (size_t)line_max + 2 ? len : (size_t)line_max + 2;
	size_t start = 0;
	while (start < window && (buf[start] == '\r' || buf[start] == '\n'))
		start++;
	const char *lf = start < window ? memchr(buf + start, '\n', window - start) : NULL;
	if (lf == NULL) {
		/* Without its LF the line is at least len - 1 bytes (a CR may end it). */
		return len > (size_t)line_max + 1 ? -414 : 0;
	}
	size_t line_end = (size_t)(lf - buf);
	if (line_end > start && buf[line_end - 1] == '\r')
		line_end--;
	if (line_end > line_max)
		return -414;
	*headers_start = lf + 1;
	return version_check(buf + start, line_end - start) ? -505 : 1;
}

static int parser_error_status(const struct parse_ctx *ctx, enum http_errno e)
{
	uint32_t te = ctx->kinds_seen & (1u << H_TRANSFER_ENCODING);
	uint32_t cl = ctx->kinds_seen & (1u << H_CONTENT_LENGTH);
	if (te && cl)
		return -400;
	if (te || e == HPE_INVALID_TRANSFER_ENCODING)
		return -501;
	if (e == HPE_HEADER_OVERFLOW)
		return -431;
	return -400;
}

/* Bytes of the header section seen so far (complete or not). */
static size_t header_bytes_seen(const struct parse_ctx *ctx, size_t parsed)
{
	const char *end = ctx->buf + ctx->len;
	if (ctx->req->body.p != NULL)
		end = ctx->req->body.p;
	else if (ctx->complete)
		end = ctx->buf + parsed;
	assert(end >= ctx->headers_start);
	return (size_t)(end - ctx->headers_start);
}

static void path_set(struct dp_request *req, struct dp_slice url)
{
	uint32_t n = 0;
	while (n < url.len && url.p[n] != '?' && url.p[n] != '#')
		n++;
	req->path.p = url.p;
	req->path.len = n;
}

int dp_http_parse(const char *buf, size_t len, const struct dp_http_limits *lim,
                  struct dp_request *req)
{
	assert(buf != NULL || len == 0);
	assert(lim != NULL && req != NULL);
	assert(lim->request_line_max > 0 && lim->header_count_max > 0);
	memset(req, 0, sizeof(*req));
	if (len == 0)
		return 0;

	struct parse_ctx ctx;
	memset(&ctx, 0, sizeof(ctx));
	ctx.buf = buf;
	ctx.len = len;
	ctx.lim = lim;
	ctx.req = req;
	int line = request_line_scan(buf, len, lim->request_line_max, &ctx.headers_start);
	if (line <= 0)
		return line;

	http_parser parser;
	http_parser_init(&parser, HTTP_REQUEST);
	parser.data = &ctx;
	size_t parsed = http_parser_execute(&parser, &parser_settings, buf, len);
	assert(parsed <= len);
	if (ctx.err != 0)
		return ctx.err;
	enum http_errno e = HTTP_PARSER_ERRNO(&parser);
	if (e != HPE_OK && e != HPE_PAUSED)
		return parser_error_status(&ctx, e);
	if (header_bytes_seen(&ctx, parsed) > lim->header_bytes_max)
		return -431;
	if (!ctx.complete)
		return 0;

	assert(ctx.headers_done && ctx.url.p != NULL);
	assert(parsed > 0 && parsed <= (size_t)INT32_MAX);
	assert(req->body.len <= lim->body_bytes_max);
	path_set(req, ctx.url);
	return (int)parsed;
}
