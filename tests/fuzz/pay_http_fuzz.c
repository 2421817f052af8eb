/* pay_http_fuzz.c - libFuzzer target for the payment provider's HTTP
 * answers as writer/pay/pay_http.c reads them (resp_parse: status line,
 * headers, Content-Length, chunked bodies, interim 1xx answers, bodies
 * delimited by the close; resp_outcome: the JSON body per the contract).
 * The file is included so its static parser is reached without a socket.
 *
 * The input arrives in two reads (split at a point the first byte picks),
 * the second with EOF. Invariants: a parsed answer's body lies inside the
 * connection's buffers, its status has 3 digits, an outcome is an enum
 * fs_pay value.
 */
#include "writer/pay/pay_http.c"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static void check_resp(const struct http_conn *c, const struct http_resp *r)
{
	CHECK(r->status >= 0 && r->status <= 999);
	const char *lo1 = c->in, *hi1 = c->in + sizeof c->in;
	const char *lo2 = c->body, *hi2 = c->body + sizeof c->body;
	CHECK(r->body_len == 0 || (r->body >= lo1 && r->body + r->body_len <= hi1) ||
	      (r->body >= lo2 && r->body + r->body_len <= hi2));
	for (int refund = 0; refund <= 1; refund++) {
		int o = resp_outcome(r, refund);
		CHECK(o == FS_PAY_OK || o == FS_PAY_DECLINED || o == FS_PAY_ERROR || o == FS_PAY_INVALID);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct http_conn c;
	if (size < 1)
		return 0;
	size_t split = data[0] % (size);
	data++;
	size--;
	if (split > size)
		split = size;
	memset(&c, 0, sizeof c);
	struct http_resp r;
	size_t first = split < sizeof c.in ? split : sizeof c.in;
	memcpy(c.in, data, first);
	c.in_len = (uint32_t)first;
	int rc = resp_parse(&c, 0, &r);
	if (rc == 1) {
		check_resp(&c, &r);
		return 0;
	}
	if (rc < 0)
		return 0;
	size_t more = size - first;
	if (more > sizeof c.in - c.in_len)
		more = sizeof c.in - c.in_len;
	memcpy(c.in + c.in_len, data + first, more);
	c.in_len += (uint32_t)more;
	rc = resp_parse(&c, 1, &r);
	if (rc == 1)
		check_resp(&c, &r);
	return 0;
}
