/* response.c - complete HTTP/1.1 answers (status line, headers, JSON body)
 * written into the caller's buffer, without allocation or snprintf.
 *
 * Every body is produced by a function over a small appender that counts
 * the bytes it would write even when they do not fit. An answer is made in
 * two passes over the same body function: the first only counts (giving
 * Content-Length without a scratch buffer), the second writes the headers
 * and then the body. Nothing is ever truncated: when the answer does not fit
 * the caller gets -1 and the buffer's contents are unspecified.
 */
#include "dataplane/response.h"

#include <assert.h>
#include <string.h>

struct out_buf {
	char *p;        /* NULL while counting */
	size_t cap;
	size_t n;       /* bytes produced so far, may exceed cap */
	struct dp_id_owner owner;   /* who minted the numbers put_pubid writes */
};

static void put(struct out_buf *b, const char *s, size_t len)
{
	if (len > 0 && b->p != NULL && b->n + len <= b->cap)   /* s may be NULL when len is 0 */
		memcpy(b->p + b->n, s, len);
	b->n += len;
}

static void put_str(struct out_buf *b, const char *s)
{
	put(b, s, strlen(s));
}

static void put_u64(struct out_buf *b, uint64_t v)
{
	char digits[20];
	size_t n = 0;
	do {
		digits[sizeof(digits) - 1 - n++] = (char)('0' + v % 10);
		v /= 10;
	} while (v != 0);
	put(b, digits + sizeof(digits) - n, n);
}

static void put_i64(struct out_buf *b, int64_t v)
{
	if (v < 0) {
		put(b, "-", 1);
		put_u64(b, (uint64_t)0 - (uint64_t)v);
	} else {
		put_u64(b, (uint64_t)v);
	}
}

/* A JSON string with quotes; '"', '\\' and control bytes escaped. */
static void put_json_str(struct out_buf *b, const char *s, size_t len)
{
	static const char hex[] = "0123456789abcdef";
	put(b, "\"", 1);
	size_t plain = 0;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		put(b, s + plain, i - plain);
		plain = i + 1;
		if (c == '"' || c == '\\') {
			char esc[2] = { '\\', (char)c };
			put(b, esc, 2);
		} else {
			char esc[6] = { '\\', 'u', '0', '0', hex[c >> 4], hex[c & 15] };
			put(b, esc, 6);
		}
	}
	put(b, s + plain, len - plain);
	put(b, "\"", 1);
}

/* ,"key": — the first field of an object passes first = 1. */
static void put_key(struct out_buf *b, const char *key, int first)
{
	put(b, first ? "{\"" : ",\"", 2);
	put_str(b, key);
	put(b, "\":", 2);
}

static void put_pubid(struct out_buf *b, char prefix, uint64_t no)
{
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, prefix, dp_id_public(b->owner, no));
	put(b, "\"", 1);
	put(b, id, FS_PUBID_LEN);
	put(b, "\"", 1);
}

static void put_time(struct out_buf *b, int64_t ms)
{
	char text[32];
	int n = dp_fmt_time_ms(text, ms);
	put(b, "\"", 1);
	put(b, text, (size_t)n);
	put(b, "\"", 1);
}

static const char *reason_phrase(int http)
{
	switch (http) {
	case 200: return "OK";
	case 201: return "Created";
	case 202: return "Accepted";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 402: return "Payment Required";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 410: return "Gone";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 421: return "Misdirected Request";
	case 422: return "Unprocessable Content";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Status";
	}
}

/* Days since 1970-01-01 to a civil date (proleptic Gregorian), after
 * Howard Hinnant's days_from_civil inverse. */
static void civil_from_days(int64_t days, int64_t *year, unsigned *month, unsigned *day)
{
	days += 719468;
	int64_t era = (days >= 0 ? days : days - 146096) / 146097;
	unsigned doe = (unsigned)(days - era * 146097);
	unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
	unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
	unsigned mp = (5 * doy + 2) / 153;
	*day = doy - (153 * mp + 2) / 5 + 1;
	*month = mp < 10 ? mp + 3 : mp - 9;
	*year = (int64_t)yoe + era * 400 + (*month <= 2);
}

static void put_digits(char *out, unsigned v, int width)
{
	for (int i = width - 1; i >= 0; i--) {
		out[i] = (char)('0' + v % 10);
		v /= 10;
	}
}

/* Times outside years 0000..9999 are clamped to its ends: the format has
 * four year digits, and a corrupt time must still print. */
int dp_fmt_time_ms(char out[32], int64_t ms)
{
	assert(out != NULL);
	const int64_t ms_min = -62167219200000;   /* 0000-01-01T00:00:00.000Z */
	const int64_t ms_max = 253402300799999;   /* 9999-12-31T23:59:59.999Z */
	if (ms < ms_min)
		ms = ms_min;
	if (ms > ms_max)
		ms = ms_max;
	int64_t ms_of_day = ms % 86400000;
	int64_t days = ms / 86400000;
	if (ms_of_day < 0) {
		ms_of_day += 86400000;
		days -= 1;
	}
	int64_t year;
	unsigned month, day;
	civil_from_days(days, &year, &month, &day);
	assert(year >= 0 && year <= 9999);
	unsigned msd = (unsigned)ms_of_day;
	memcpy(out, "0000-00-00T00:00:00.000Z", 25);
	put_digits(out, (unsigned)year, 4);
	put_digits(out + 5, month, 2);
	put_digits(out + 8, day, 2);
	put_digits(out + 11, msd / 3600000, 2);
	put_digits(out + 14, msd / 60000 % 60, 2);
	put_digits(out + 17, msd / 1000 % 60, 2);
	put_digits(out + 20, msd % 1000, 3);
	assert(out[24] == '\0');
	return 24;
}

/* Everything an answer needs besides its body. */
struct head {
	int http;
	const char *content_type;
	int keep_alive;
	int64_t retry_after_s;   /* < 0: no Retry-After header */
};

typedef void (*body_fn)(struct out_buf *b, const void *arg);

static void put_head(struct out_buf *b, const struct head *h, size_t body_len)
{
	put(b, "HTTP/1.1 ", 9);
	put_u64(b, (uint64_t)h->http);
	put(b, " ", 1);
	put_str(b, reason_phrase(h->http));
	put_str(b, "\r\nContent-Type: ");
	put_str(b, h->content_type);
	put_str(b, "\r\nContent-Length: ");
	put_u64(b, body_len);
	put(b, "\r\n", 2);
	if (!h->keep_alive)
		put_str(b, "Connection: close\r\n");
	if (h->retry_after_s >= 0) {
		put_str(b, "Retry-After: ");
		put_u64(b, (uint64_t)h->retry_after_s);
		put(b, "\r\n", 2);
	}
	put(b, "\r\n", 2);
}

/* Counts the body, then writes head and body. Returns bytes or -1. */
static int resp_write(char *out, size_t cap, const struct head *h, body_fn body, const void *arg)
{
	assert(out != NULL || cap == 0);
	assert(h->http >= 100 && h->http <= 999);
	struct out_buf count = { .p = NULL, .cap = 0, .n = 0 };
	body(&count, arg);
	struct out_buf b = { .p = out, .cap = cap, .n = 0 };
	put_head(&b, h, count.n);
	size_t head_len = b.n;
	body(&b, arg);
	if (b.n > cap || b.n > (size_t)INT32_MAX)
		return -1;
	assert(b.n == head_len + count.n);
	(void)head_len;
	return (int)b.n;
}

struct raw_arg { const char *body; size_t len; };

static void body_raw(struct out_buf *b, const void *arg)
{
	const struct raw_arg *r = arg;
	put(b, r->body, r->len);
}

int dp_resp_raw(char *out, size_t cap, int http, const char *content_type,
                const char *body, size_t body_len, int keep_alive)
{
	assert(content_type != NULL);
	assert(body != NULL || body_len == 0);
	struct head h = { http, content_type, keep_alive, -1 };
	struct raw_arg r = { body, body_len };
	return resp_write(out, cap, &h, body_raw, &r);
}

struct error_arg { const char *error; const char *detail; };

static void body_error(struct out_buf *b, const void *arg)
{
	const struct error_arg *e = arg;
	put_key(b, "error", 1);
	put_json_str(b, e->error, strlen(e->error));
	if (e->detail != NULL) {
		put_key(b, "detail", 0);
		put_json_str(b, e->detail, strlen(e->detail));
	}
	put(b, "}", 1);
}

int dp_resp_error(char *out, size_t cap, int http, const char *error,
                  const char *detail, int keep_alive)
{
	assert(error != NULL);
	struct head h = { http, "application/json", keep_alive, -1 };
	struct error_arg e = { error, detail };
	return resp_write(out, cap, &h, body_error, &e);
}

static void put_sku(struct out_buf *b, const struct fs_ans *a)
{
	size_t len = a->sku_len <= FS_SKU_LEN_MAX ? a->sku_len : FS_SKU_LEN_MAX;
	put_json_str(b, a->sku, len);
}

/* The status a client sees (API.md): a hold whose payment is in flight is
 * still RESERVED (its order shows PENDING), and a reservation whose payment
 * failed gave its unit back: CANCELLED (its order shows FAILED, reason). */
static const char *public_status(uint8_t s)
{
	if (s == FS_RES_PAYING)
		return "RESERVED";
	if (s == FS_RES_FAILED)
		return "CANCELLED";
	return fs_res_status_name((enum fs_res_status)s);
}

static void body_res(struct out_buf *b, const struct fs_ans *a)
{
	const char *status = public_status(a->res_status);
	if (a->res_status == FS_RES_WAITLISTED || a->res_status == FS_RES_QUEUED) {
		put_key(b, "status", 1);
		put_json_str(b, status, strlen(status));
		put_key(b, "reservation_id", 0);
		put_pubid(b, 'r', a->res_no);
		put_key(b, "position", 0);
		put_u64(b, a->position);
		put_key(b, "sku", 0);
		put_sku(b, a);
		put_key(b, "quantity", 0);
		put_u64(b, a->quantity);
		put(b, "}", 1);
		return;
	}
	put_key(b, "reservation_id", 1);
	put_pubid(b, 'r', a->res_no);
	put_key(b, "sku", 0);
	put_sku(b, a);
	put_key(b, "quantity", 0);
	put_u64(b, a->quantity);
	put_key(b, "status", 0);
	put_json_str(b, status, strlen(status));
	if (a->expires_at_ms != 0) {   /* none for a reservation that never held units */
		put_key(b, "expires_at", 0);
		put_time(b, a->expires_at_ms);
	}
	if (a->order_no != 0) {
		put_key(b, "order_id", 0);
		put_pubid(b, 'o', a->order_no);
	}
	put(b, "}", 1);
}

/* Opens an order body: "order_id" and "reservation_id". */
static void put_order_ids(struct out_buf *b, const struct fs_ans *a)
{
	put_key(b, "order_id", 1);
	put_pubid(b, 'o', a->order_no);
	put_key(b, "reservation_id", 0);
	put_pubid(b, 'r', a->res_no);
}

static void body_checkout(struct out_buf *b, const struct fs_ans *a)
{
	const char *status = fs_order_status_name((enum fs_order_status)a->order_status);
	put_order_ids(b, a);
	put_key(b, "status", 0);
	put_json_str(b, status, strlen(status));
	if (a->order_status == FS_ORDER_PAID) {
		put_key(b, "amount", 0);
		put_i64(b, a->amount_cents);
	} else if (a->order_status == FS_ORDER_FAILED) {
		const char *reason = fs_pay_reason_name(a->reason);
		put_key(b, "reason", 0);
		put_json_str(b, reason, strlen(reason));
	}
	put(b, "}", 1);
}

static void body_order(struct out_buf *b, const struct fs_ans *a)
{
	const char *status = fs_order_status_name((enum fs_order_status)a->order_status);
	put_order_ids(b, a);
	put_key(b, "sku", 0);
	put_sku(b, a);
	put_key(b, "quantity", 0);
	put_u64(b, a->quantity);
	put_key(b, "status", 0);
	put_json_str(b, status, strlen(status));
	if (a->paid_at_ms != 0) {
		put_key(b, "paid_at", 0);
		put_time(b, a->paid_at_ms);
	}
	put(b, "}", 1);
}

static void body_sale(struct out_buf *b, const struct fs_ans *a)
{
	const char *state = fs_sale_state_name((enum fs_sale_state)a->state);
	put_key(b, "sku", 1);
	put_sku(b, a);
	put_key(b, "state", 0);
	put_json_str(b, state, strlen(state));
	put_key(b, "total", 0);
	put_u64(b, a->total);
	put_key(b, "available", 0);
	put_u64(b, a->available);
	put_key(b, "reserved", 0);
	put_u64(b, a->reserved);
	put_key(b, "sold", 0);
	put_u64(b, a->sold);
	put_key(b, "version", 0);
	put_u64(b, a->version);
	put(b, "}", 1);
}

struct answer_arg {
	const struct fs_ans *a;
	struct dp_id_owner owner;
};

static void body_answer(struct out_buf *b, const void *arg)
{
	const struct fs_ans *a = ((const struct answer_arg *)arg)->a;
	b->owner = ((const struct answer_arg *)arg)->owner;
	switch (a->body) {
	case FS_BODY_RES: body_res(b, a); break;
	case FS_BODY_CHECKOUT: body_checkout(b, a); break;
	case FS_BODY_ORDER: body_order(b, a); break;
	case FS_BODY_SALE: body_sale(b, a); break;
	case FS_BODY_EMPTY: put_str(b, "{\"ok\":true}"); break;
	default: {
		const char *name = a->err == FS_ERR_RECLAIMED ? "not_found" : fs_err_name((enum fs_err)a->err);
		put_key(b, "error", 1);
		put_json_str(b, name, strlen(name));
		if (a->err == FS_ERR_RECLAIMED) {   /* API.md: reclaimed after --retention */
			static const char detail[] = "expired from the appliance; see the system of record";
			put_key(b, "detail", 0);
			put_json_str(b, detail, sizeof detail - 1);
		}
		if (a->err == FS_ERR_RATE_LIMITED) {
			put_key(b, "retry_after_ms", 0);
			put_i64(b, a->expires_at_ms < 0 ? 0 : a->expires_at_ms);
			put_key(b, "queue_position", 0);
			put_u64(b, a->position);
		}
		put(b, "}", 1);
		break;
	}
	}
}

#define DP_FROZEN_RETRY_S 5   /* Retry-After of a 503 frozen (reserve or checkout) */

/* For FS_ERR_RATE_LIMITED the answer carries retry_after_ms in
 * expires_at_ms and queue_position in position (fs_ans has no fields of its
 * own for them). A zero a->http means fs_err_http(a->err). */
int dp_resp_answer(char *out, size_t cap, const struct fs_ans *a, struct dp_id_owner owner, int keep_alive)
{
	assert(a != NULL);
	int http = a->http != 0 ? a->http : fs_err_http((enum fs_err)a->err);
	struct head h = { http, "application/json", keep_alive, -1 };
	if (a->body == FS_BODY_ERROR && a->err == FS_ERR_RATE_LIMITED) {
		int64_t ms = a->expires_at_ms < 0 ? 0 : a->expires_at_ms;
		h.retry_after_s = ms / 1000 + (ms % 1000 != 0);
	}
	if (a->body == FS_BODY_ERROR && a->err == FS_ERR_FROZEN)
		h.retry_after_s = DP_FROZEN_RETRY_S;   /* an operator is looking; holds wait meanwhile */
	struct answer_arg arg = { a, owner };
	return resp_write(out, cap, &h, body_answer, &arg);
}
