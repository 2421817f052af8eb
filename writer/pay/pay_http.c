/* pay_http.c - the HTTP payment provider: a small non-blocking HTTP/1.1
 * client with a fixed pool of keep-alive connections, driven by the payment
 * thread's poll() loop (pay_provider.h). Plain http:// only: the provider (or a
 * TLS-terminating proxy in front of it) is on loopback or a private network.
 *
 * THE CONTRACT (flashsaled --payment-provider URL)
 *
 *   Each attempt at a charge is one request:
 *
 *     POST <URL path> HTTP/1.1
 *     Content-Type: application/json
 *     Idempotency-Key: o0000000000000007          (the order id)
 *
 *     {"order_id":"o0000000000000007","amount_cents":1999,"currency":"USD",
 *      "payment_token":"<as the customer sent it>","user":"<JWT sub>"}
 *
 *   The Idempotency-Key is the same for every attempt at one order: the
 *   retries after an error and the re-issue after flashsaled restarts. The
 *   provider must charge a key at most once.
 *
 *   Answers (any other status, a body outside the contract, a connection
 *   error, or no whole answer within the attempt timeout, 2 s by default,
 *   counted from the moment the attempt gets a connection, is an ERROR):
 *     200 {"status":"charged"}                   -> the order is PAID
 *     402 {"status":"declined","reason":"..."}   -> the order FAILED, reason
 *                                                   card_declined, or
 *                                                   invalid_token when the
 *                                                   provider's reason is
 *                                                   "invalid_token"
 *     409 (any body)                             -> this key was already
 *                                                   charged: PAID
 *   A refund of a paid order (flashctl order refund) is one request too, to
 *   the path with "/refund" appended, with Idempotency-Key "refund-" + the
 *   order id and the same body plus "refund":true:
 *     200 {"status":"refunded"}   -> REFUNDED
 *     409 (any body)              -> this key was already refunded: REFUNDED
 *     402 {"status":"declined"}   -> refused: the order stays PAID
 *   Errors are retried with the same key as for charges; a refund in flight
 *   when flashsaled stops is sent again, same key, at the next start.
 *
 *   A 409 must mean "already charged" and nothing else: a provider that
 *   sees an attempt while an earlier one with the same key is still being
 *   processed must wait for that one or answer a retryable error (5xx).
 *
 *   A whole answer outside the contract (a 5xx, a 200 without "charged")
 *   must mean the key was NOT charged. A timeout or a connection lost after
 *   the request left is an UNKNOWN outcome: the provider may have charged.
 *
 *   An ERROR is retried with the same key after a backoff that doubles
 *   (50 ms, 100 ms, ... capped at 5 s) up to 3 attempts in all; then the
 *   order FAILED with reason provider_unavailable and its unit goes back on
 *   sale, unless an attempt's outcome was UNKNOWN (or the charge was
 *   re-issued after a restart): then the order stays PENDING, its unit held,
 *   and is asked again with the same key until the provider answers 200,
 *   402 or 409 (pay_retry.h). 3 orders
 *   in a row failed that way open the circuit breaker for 1 s: new checkouts
 *   are answered 503 at once, no attempt goes out; then one probe attempt
 *   decides whether it closes again. (Defaults; see struct pay_config.)
 *   So an order the provider charged never ends FAILED, and charging
 *   again never happens.
 *
 *   The host is resolved once, at start-up. Answers are HTTP/1.1 (or 1.0)
 *   with Content-Length, chunked, or close-delimited bodies of at most
 *   4 KiB. Connections are kept alive and reused; at most
 *   connection_count_max (64) requests are in flight, further attempts wait
 *   in the payment thread's slot table, never in an unbounded queue.
 *
 * Memory is fixed when the provider is made: per connection one request
 * buffer and two answer buffers. A request that fails on a connection
 * reused from an earlier answer, before any byte of its answer arrived (the
 * provider closed an idle connection), is sent again at once on a fresh
 * connection: safe, because the key makes every attempt idempotent.
 */
#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include "writer/pay/pay_provider.h"
#include "writer/pay/pay_retry.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#define HTTP_HOST_LEN_MAX    255
#define HTTP_PATH_LEN_MAX    512
#define HTTP_REQ_BYTES_MAX   2048   /* head + path + a body of escaped fields */
#define HTTP_RESP_BYTES_MAX  4096
#define HTTP_JSON_TOKENS_MAX 64
#define HTTP_CONN_COUNT_MAX  4096

_Static_assert(HTTP_REQ_BYTES_MAX >= 256 + HTTP_PATH_LEN_MAX + HTTP_HOST_LEN_MAX + 8 + 200 +
               2 * 6 * FS_ID_LEN_MAX, "a request of the longest fields fits");

enum conn_state { CONN_CLOSED = 0, CONN_CONNECTING, CONN_SENDING, CONN_RECEIVING, CONN_IDLE };

struct http_conn {
	int      fd;
	uint8_t  state;          /* enum conn_state */
	uint8_t  reused;         /* this request went on a connection kept from an earlier answer */
	uint8_t  refund;         /* the attempt in flight is a refund */
	uint8_t  sent;           /* a byte of this attempt's request left: it may have charged */
	uint32_t slot;           /* the charge slot of the attempt in flight */
	int64_t  deadline_ms;
	uint32_t out_len, out_off;
	uint32_t in_len;
	char     out[HTTP_REQ_BYTES_MAX];
	char     in[HTTP_RESP_BYTES_MAX];
	char     body[HTTP_RESP_BYTES_MAX];   /* a chunked body, decoded */
};

struct http_url {
	char host[HTTP_HOST_LEN_MAX + 1];
	char port[8];
	char host_header[HTTP_HOST_LEN_MAX + 10];
	char path[HTTP_PATH_LEN_MAX + 1];
};

struct http_prov {
	struct http_url url;
	struct sockaddr_storage addr;
	socklen_t addr_len;
	uint32_t slot_count;
	uint32_t timeout_ms;
	uint32_t conn_count;
	struct http_conn *conns;
	uint32_t *pfd_conn;      /* connection index of each pollfd handed out */
	uint32_t pfd_count;
};

struct http_resp {
	int status;
	int close;               /* the connection cannot carry another request */
	const char *body;
	size_t body_len;
};

/* ---- URL --------------------------------------------------------------- */

/* Splits http://HOST[:PORT][/PATH]. Returns 0, or -1 with a reason. */
static int url_parse(const char *url, struct http_url *u, char *err, size_t err_len)
{
	memset(u, 0, sizeof *u);
	if (strncasecmp(url, "https://", 8) == 0) {
		snprintf(err, err_len, "payment provider '%s': https is not supported (plain http:// to a "
		         "provider or a TLS proxy on loopback or a private network)", url);
		return -1;
	}
	if (strncasecmp(url, "http://", 7) != 0) {
		snprintf(err, err_len, "payment provider '%s' is not an http://HOST[:PORT]/PATH URL", url);
		return -1;
	}
	const char *h = url + 7, *end = h;
	while (*end && *end != '/')
		end++;
	const char *port = NULL, *host_end = end;
	if (*h == '[') {   /* [v6]:port */
		const char *close = memchr(h, ']', (size_t)(end - h));
		if (close == NULL)
			goto bad;
		host_end = close + 1;
		if (host_end < end && *host_end != ':')
			goto bad;
		if (host_end < end)
			port = host_end + 1;
	} else {
		const char *colon = memchr(h, ':', (size_t)(end - h));
		if (colon != NULL) {
			host_end = colon;
			port = colon + 1;
		}
	}
	size_t hl = (size_t)(host_end - h);
	if (hl == 0 || hl > HTTP_HOST_LEN_MAX)
		goto bad;
	size_t pl = port ? (size_t)(end - port) : 0;
	if (port && (pl == 0 || pl > 5))
		goto bad;
	for (size_t i = 0; i < pl; i++)
		if (!isdigit((unsigned char)port[i]))
			goto bad;
	if (port && (atoi(port) > 65535 || atoi(port) == 0))
		goto bad;
	memcpy(u->host_header, h, (size_t)(end - h));
	if (*h == '[')
		memcpy(u->host, h + 1, hl - 2);
	else
		memcpy(u->host, h, hl);
	if (port)
		memcpy(u->port, port, pl);
	else
		memcpy(u->port, "80", 3);
	const char *path = *end ? end : "/";
	size_t len = strlen(path);
	if (len > HTTP_PATH_LEN_MAX)
		goto bad;
	for (size_t i = 0; i < len; i++)
		if ((unsigned char)path[i] <= ' ' || path[i] == 0x7f)
			goto bad;
	memcpy(u->path, path, len + 1);
	return 0;
bad:
	snprintf(err, err_len, "payment provider '%s' is not an http://HOST[:PORT]/PATH URL", url);
	return -1;
}

static int url_resolve(const struct http_url *u, struct sockaddr_storage *addr, socklen_t *addr_len,
                       char *err, size_t err_len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM };
	struct addrinfo *res = NULL;
	int rc = getaddrinfo(u->host, u->port, &hints, &res);
	if (rc != 0 || res == NULL) {
		snprintf(err, err_len, "payment provider host '%s': %s", u->host,
		         rc ? gai_strerror(rc) : "no address");
		return -1;
	}
	assert(res->ai_addrlen <= sizeof *addr);
	memcpy(addr, res->ai_addr, res->ai_addrlen);
	*addr_len = res->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

int pay_provider_check(const char *url, char *err, size_t err_len)
{
	struct http_url u;
	struct sockaddr_storage addr;
	socklen_t len;
	if (url_parse(url, &u, err, err_len) != 0)
		return -1;
	return url_resolve(&u, &addr, &len, err, err_len);
}

/* ---- request ------------------------------------------------------------ */

/* Appends s as the inside of a JSON string. Returns the new length, or -1
 * when it does not fit. */
static int json_escape(char *dst, size_t off, size_t cap, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	for (size_t i = 0; i < len; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (off + 6 >= cap)
			return -1;
		if (ch == '"' || ch == '\\') {
			dst[off++] = '\\';
			dst[off++] = (char)ch;
		} else if (ch < 0x20 || ch == 0x7f) {
			memcpy(dst + off, "\\u00", 4);
			dst[off + 4] = hex[ch >> 4];
			dst[off + 5] = hex[ch & 15];
			off += 6;
		} else {
			dst[off++] = (char)ch;
		}
	}
	return (int)off;
}

/* Writes the whole request of one attempt into c->out. Returns 0 or -1. */
static int request_build(const struct http_prov *h, struct http_conn *c, const struct wr_charge *ch)
{
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, 'o', ch->order_no);
	int refund = ch->kind == WR_CHARGE_REFUND;
	char body[2 * 6 * FS_ID_LEN_MAX + 200];
	int n = snprintf(body, sizeof body, "{\"order_id\":\"%s\",\"amount_cents\":%lld,\"currency\":\"USD\",%s"
	                 "\"payment_token\":\"", id, (long long)ch->amount_cents, refund ? "\"refund\":true," : "");
	assert(n > 0 && (size_t)n < sizeof body);
	n = json_escape(body, (size_t)n, sizeof body, ch->token, ch->token_len);
	if (n < 0 || (size_t)n + 12 >= sizeof body)
		return -1;
	memcpy(body + n, "\",\"user\":\"", 10);
	n = json_escape(body, (size_t)n + 10, sizeof body, ch->user, ch->user_len);
	if (n < 0 || (size_t)n + 3 >= sizeof body)
		return -1;
	memcpy(body + n, "\"}", 3);
	n += 2;
	int m = snprintf(c->out, sizeof c->out,
	                 "POST %s%s HTTP/1.1\r\nHost: %s\r\nUser-Agent: flashsaled\r\n"
	                 "Content-Type: application/json\r\nIdempotency-Key: %s%s\r\n"
	                 "Content-Length: %d\r\n\r\n%s", h->url.path, refund ? "/refund" : "",
	                 h->url.host_header, refund ? "refund-" : "", id, n, body);
	if (m < 0 || (size_t)m >= sizeof c->out)
		return -1;
	c->out_len = (uint32_t)m;
	c->refund = (uint8_t)refund;
	c->out_off = 0;
	c->sent = 0;
	c->in_len = 0;
	return 0;
}

/* ---- answer ------------------------------------------------------------- */

static const char *find_crlf(const char *p, const char *end)
{
	for (; p + 1 < end; p++)
		if (p[0] == '\r' && p[1] == '\n')
			return p;
	return NULL;
}

static int token_has(const char *v, size_t len, const char *word)
{
	size_t wl = strlen(word);
	for (size_t i = 0; i + wl <= len; i++)
		if (strncasecmp(v + i, word, wl) == 0)
			return 1;
	return 0;
}

/* Decodes a chunked body from p[0..n) into out. Returns the bytes of p it
 * used when the body is whole, 0 when more are needed, -1 when malformed. */
static long chunked_decode(const char *p, size_t n, char *out, size_t cap, size_t *out_len)
{
	const char *q = p, *end = p + n;
	size_t o = 0;
	for (;;) {
		const char *eol = find_crlf(q, end);
		if (eol == NULL)
			return 0;
		size_t size = 0, digits = 0;
		for (; q < eol && isxdigit((unsigned char)*q); q++, digits++) {
			if (size > cap)
				return -1;
			size = size * 16 + (size_t)(isdigit((unsigned char)*q) ? *q - '0' : (tolower((unsigned char)*q) - 'a' + 10));
		}
		if (digits == 0 || (q < eol && *q != ';' && *q != ' ' && *q != '\t'))
			return -1;
		q = eol + 2;
		if (size == 0) {   /* trailers, then an empty line */
			for (;;) {
				eol = find_crlf(q, end);
				if (eol == NULL)
					return 0;
				if (eol == q) {
					*out_len = o;
					return (long)(eol + 2 - p);
				}
				q = eol + 2;
			}
		}
		if (size > cap - o)
			return -1;
		if ((size_t)(end - q) < size + 2)
			return 0;
		if (q[size] != '\r' || q[size + 1] != '\n')
			return -1;
		memcpy(out + o, q, size);
		o += size;
		q += size + 2;
	}
}

/* Parses c->in[0..in_len). Returns 1 with *r filled when the answer is
 * whole, 0 when more bytes are needed, -1 when it is not HTTP or too big.
 * `eof`: the provider closed the connection. */
static int resp_parse(struct http_conn *c, int eof, struct http_resp *r)
{
	for (;;) {
		const char *in = c->in, *end = c->in + c->in_len;
		const char *head_end = NULL;
		for (const char *p = in; p + 3 < end; p++)
			if (p[0] == '\r' && p[1] == '\n' && p[2] == '\r' && p[3] == '\n') {
				head_end = p + 4;
				break;
			}
		if (head_end == NULL)
			return c->in_len == sizeof c->in || eof ? -1 : 0;
		if (end - in < 12 || memcmp(in, "HTTP/1.", 7) != 0 || (in[7] != '0' && in[7] != '1') ||
		    in[8] != ' ' || !isdigit((unsigned char)in[9]) || !isdigit((unsigned char)in[10]) ||
		    !isdigit((unsigned char)in[11]))
			return -1;
		memset(r, 0, sizeof *r);
		r->status = (in[9] - '0') * 100 + (in[10] - '0') * 10 + (in[11] - '0');
		int keep_alive = in[7] == '1', chunked = 0;
		long long content_length = -1;
		const char *line = find_crlf(in, head_end) + 2;
		while (line < head_end - 2) {
			const char *eol = find_crlf(line, head_end);
			const char *colon = memchr(line, ':', (size_t)(eol - line));
			if (colon == NULL)
				return -1;
			size_t nl = (size_t)(colon - line);
			const char *v = colon + 1;
			while (v < eol && (*v == ' ' || *v == '\t'))
				v++;
			size_t vl = (size_t)(eol - v);
			if (nl == 14 && strncasecmp(line, "content-length", 14) == 0) {
				long long x = 0;
				size_t i = 0;
				for (; i < vl && isdigit((unsigned char)v[i]) && x <= HTTP_RESP_BYTES_MAX; i++)
					x = x * 10 + (v[i] - '0');
				if (i == 0 || x > HTTP_RESP_BYTES_MAX)
					return -1;
				content_length = x;
			} else if (nl == 17 && strncasecmp(line, "transfer-encoding", 17) == 0) {
				chunked = token_has(v, vl, "chunked");
			} else if (nl == 10 && strncasecmp(line, "connection", 10) == 0) {
				if (token_has(v, vl, "close"))
					keep_alive = 0;
				else if (token_has(v, vl, "keep-alive"))
					keep_alive = 1;
			}
			line = eol + 2;
		}
		size_t head_len = (size_t)(head_end - in);
		if (r->status >= 100 && r->status < 200) {   /* interim answer: drop it */
			memmove(c->in, head_end, c->in_len - head_len);
			c->in_len -= (uint32_t)head_len;
			continue;
		}
		size_t avail = c->in_len - head_len, used;
		if (chunked) {
			long got = chunked_decode(head_end, avail, c->body, sizeof c->body, &r->body_len);
			if (got < 0)
				return -1;
			if (got == 0)
				return c->in_len == sizeof c->in || eof ? -1 : 0;
			r->body = c->body;
			used = (size_t)got;
		} else if (content_length >= 0) {
			if (head_len + (size_t)content_length > sizeof c->in)
				return -1;
			if (avail < (size_t)content_length)
				return eof ? -1 : 0;
			r->body = head_end;
			r->body_len = (size_t)content_length;
			used = (size_t)content_length;
		} else {   /* delimited by the close */
			if (!eof)
				return c->in_len == sizeof c->in ? -1 : 0;
			r->body = head_end;
			r->body_len = avail;
			used = avail;
			keep_alive = 0;
		}
		r->close = !keep_alive || eof || used != avail;
		return 1;
	}
}

static int tok_is(const char *json, const jsmntok_t *t, const char *lit)
{
	size_t n = strlen(lit);
	return t->type == JSMN_STRING && (size_t)(t->end - t->start) == n && memcmp(json + t->start, lit, n) == 0;
}

/* The string value of a top-level member of a JSON object, or NULL. */
static const jsmntok_t *json_member(const char *json, const jsmntok_t *tok, int count, const char *name)
{
	if (count < 1 || tok[0].type != JSMN_OBJECT)
		return NULL;
	int i = 1;
	while (i + 1 < count) {
		const jsmntok_t *k = &tok[i], *v = &tok[i + 1];
		if (tok_is(json, k, name))
			return v->type == JSMN_STRING ? v : NULL;
		int next = i + 2;   /* skip the value and whatever it contains */
		while (next < count && tok[next].start < v->end)
			next++;
		i = next;
	}
	return NULL;
}

/* The outcome an answer means (the contract above). */
static int resp_outcome(const struct http_resp *r, int refund)
{
	if (r->status == 409)
		return FS_PAY_OK;   /* this key was already charged (refunded) */
	if (r->status != 200 && r->status != 402)
		return FS_PAY_ERROR;
	jsmntok_t tok[HTTP_JSON_TOKENS_MAX];
	jsmn_parser parser;
	jsmn_init(&parser);
	int count = jsmn_parse(&parser, r->body, r->body_len, tok, HTTP_JSON_TOKENS_MAX);
	if (count < 1)
		return r->status == 402 ? FS_PAY_DECLINED : FS_PAY_ERROR;
	if (r->status == 200) {
		const jsmntok_t *s = json_member(r->body, tok, count, "status");
		return s != NULL && tok_is(r->body, s, refund ? "refunded" : "charged") ? FS_PAY_OK : FS_PAY_ERROR;
	}
	const jsmntok_t *why = json_member(r->body, tok, count, "reason");
	return why != NULL && tok_is(r->body, why, "invalid_token") ? FS_PAY_INVALID : FS_PAY_DECLINED;
}

/* ---- connections ---------------------------------------------------------- */

static void conn_close(struct http_conn *c)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = CONN_CLOSED;
	c->reused = 0;
}

/* Starts a connection. Returns 0 (connecting or connected) or -1. */
static int conn_open(struct http_prov *h, struct http_conn *c)
{
	assert(c->state == CONN_CLOSED && c->fd < 0);
	int fd = socket(h->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	c->fd = fd;
	c->reused = 0;
	if (connect(fd, (const struct sockaddr *)&h->addr, h->addr_len) == 0) {
		c->state = CONN_SENDING;
		return 0;
	}
	if (errno == EINPROGRESS) {
		c->state = CONN_CONNECTING;
		return 0;
	}
	conn_close(c);
	return -1;
}

/* Moves one attempt forward as far as the socket allows. Returns an
 * outcome (enum fs_pay) when the attempt ended, 0 while it goes on. */
static int conn_step(struct http_prov *h, struct http_conn *c)
{
	if (c->state == CONN_CONNECTING) {
		int soerr = 0;
		socklen_t sl = sizeof soerr;
		if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0)
			goto failed;
		struct pollfd pf = { .fd = c->fd, .events = POLLOUT };
		if (poll(&pf, 1, 0) <= 0 || !(pf.revents & POLLOUT))
			return 0;   /* not connected yet */
		c->state = CONN_SENDING;
	}
	if (c->state == CONN_SENDING) {
		while (c->out_off < c->out_len) {
			ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return 0;
			if (n <= 0)
				goto failed;
			c->sent = 1;
			c->out_off += (uint32_t)n;
		}
		c->state = CONN_RECEIVING;
	}
	assert(c->state == CONN_RECEIVING);
	for (;;) {
		int eof = 0;
		if (c->in_len < sizeof c->in) {
			ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - c->in_len, 0);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
				return 0;
			if (n < 0)
				goto failed;
			if (n == 0)
				eof = 1;
			c->in_len += (uint32_t)n;
		}
		if (eof && c->in_len == 0)
			goto failed;
		struct http_resp r;
		int rc = resp_parse(c, eof, &r);
		if (rc == 0 && !eof && c->in_len < sizeof c->in)
			continue;
		if (rc <= 0) {
			conn_close(c);
			return FS_PAY_ERROR;
		}
		int out = resp_outcome(&r, c->refund);
		if (out == FS_PAY_ERROR)
			out = PAY_ERROR_CLEAN;   /* a whole answer outside the contract: nothing charged */
		if (r.close) {
			conn_close(c);
		} else {
			c->state = CONN_IDLE;
			c->reused = 1;
			c->in_len = 0;
		}
		return out;
	}
failed:
	/* A kept-alive connection the provider closed before this request:
	 * send it again on a fresh one (same key, so it is safe), once. */
	if (c->reused && c->in_len == 0) {
		conn_close(c);
		c->out_off = 0;
		if (conn_open(h, c) == 0)
			return conn_step(h, c);
	}
	conn_close(c);
	return c->sent ? FS_PAY_ERROR : PAY_ERROR_CLEAN;   /* FS_PAY_ERROR: it may have charged */
}

/* ---- provider ops ---------------------------------------------------------- */

static int http_start(void *self, uint32_t slot, const struct wr_charge *ch, int64_t t, int64_t *due_ms)
{
	struct http_prov *h = self;
	assert(slot < h->slot_count);
	struct http_conn *c = NULL;
	for (uint32_t i = 0; i < h->conn_count && c == NULL; i++)
		if (h->conns[i].state == CONN_IDLE)
			c = &h->conns[i];
	for (uint32_t i = 0; i < h->conn_count && c == NULL; i++)
		if (h->conns[i].state == CONN_CLOSED)
			c = &h->conns[i];
	if (c == NULL)
		return PAY_BUSY;
	*due_ms = t;
	if (request_build(h, c, ch) != 0)
		return PAY_ERROR_CLEAN;   /* cannot happen with bounded fields (static assert) */
	c->slot = slot;
	c->deadline_ms = t + h->timeout_ms;
	if (c->state == CONN_IDLE)
		c->state = CONN_SENDING;
	else if (conn_open(h, c) != 0)
		return PAY_ERROR_CLEAN;
	int out = c->state == CONN_CONNECTING ? 0 : conn_step(h, c);
	if (out == 0)
		*due_ms = c->deadline_ms;
	return out;
}

static uint32_t http_pollfds(void *self, struct pollfd *pfd, uint32_t max)
{
	struct http_prov *h = self;
	uint32_t n = 0;
	for (uint32_t i = 0; i < h->conn_count; i++) {
		struct http_conn *c = &h->conns[i];
		if (c->state == CONN_CLOSED)
			continue;
		assert(n < max);
		short ev = c->state == CONN_CONNECTING || c->state == CONN_SENDING ? POLLOUT : POLLIN;
		pfd[n] = (struct pollfd){ .fd = c->fd, .events = ev, .revents = 0 };
		h->pfd_conn[n++] = i;
	}
	h->pfd_count = n;
	return n;
}

static int64_t http_advance(void *self, const struct pollfd *pfd, uint32_t pfd_count, int64_t t,
                            pay_done_fn *done, void *ctx)
{
	struct http_prov *h = self;
	assert(pfd_count == h->pfd_count);
	for (uint32_t k = 0; k < pfd_count; k++) {
		if (pfd[k].revents == 0)
			continue;
		struct http_conn *c = &h->conns[h->pfd_conn[k]];
		assert(c->fd == pfd[k].fd);
		if (c->state == CONN_IDLE) {
			conn_close(c);   /* an idle connection only ever reads its close */
			continue;
		}
		int out = conn_step(h, c);
		if (out != 0)
			done(ctx, c->slot, out);
	}
	h->pfd_count = 0;
	int64_t next = INT64_MAX;
	for (uint32_t i = 0; i < h->conn_count; i++) {
		struct http_conn *c = &h->conns[i];
		if (c->state != CONN_CONNECTING && c->state != CONN_SENDING && c->state != CONN_RECEIVING)
			continue;
		if (t >= c->deadline_ms) {
			conn_close(c);   /* its answer, if it ever comes, must not be read as the next one's */
			done(ctx, c->slot, c->sent ? FS_PAY_ERROR : PAY_ERROR_CLEAN);
			continue;
		}
		if (c->deadline_ms < next)
			next = c->deadline_ms;
	}
	return next;
}

static void http_close(void *self)
{
	struct http_prov *h = self;
	if (h == NULL)
		return;
	for (uint32_t i = 0; h->conns != NULL && i < h->conn_count; i++)   /* NULL: open ran out of memory */
		conn_close(&h->conns[i]);
	free(h->conns);
	free(h->pfd_conn);
	free(h);
}

int pay_http_provider_open(struct pay_provider_ops *ops, const char *url, uint32_t slot_count,
                           uint32_t connection_count_max, uint32_t attempt_timeout_ms,
                           char *err, size_t err_len)
{
	assert(ops != NULL && url != NULL && slot_count > 0);
	assert(connection_count_max > 0 && attempt_timeout_ms > 0);
	if (connection_count_max > HTTP_CONN_COUNT_MAX)
		connection_count_max = HTTP_CONN_COUNT_MAX;
	struct http_prov *h = calloc(1, sizeof *h);
	if (h == NULL) {
		snprintf(err, err_len, "out of memory for the payment provider");
		return -1;
	}
	if (url_parse(url, &h->url, err, err_len) != 0 ||
	    url_resolve(&h->url, &h->addr, &h->addr_len, err, err_len) != 0) {
		free(h);
		return -1;
	}
	h->slot_count = slot_count;
	h->timeout_ms = attempt_timeout_ms;
	h->conn_count = connection_count_max;
	h->conns = calloc(h->conn_count, sizeof *h->conns);
	h->pfd_conn = calloc(h->conn_count, sizeof *h->pfd_conn);
	if (h->conns == NULL || h->pfd_conn == NULL) {
		snprintf(err, err_len, "out of memory for %u payment connections", h->conn_count);
		http_close(h);
		return -1;
	}
	for (uint32_t i = 0; i < h->conn_count; i++)
		h->conns[i].fd = -1;
	*ops = (struct pay_provider_ops){ .name = "http", .start = http_start, .pollfds = http_pollfds,
	                                  .advance = http_advance, .close = http_close, .self = h };
	return 0;
}
