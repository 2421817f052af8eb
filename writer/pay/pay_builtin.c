/* pay_builtin.c - the built-in test provider (pay_provider.h): decides every
 * attempt at once from the payment token (API.md): tok_ok* is charged,
 * tok_decline* declined, tok_down* a provider error, tok_slow_<ms> charged
 * and known <ms> later, anything else an invalid token. A refund is made at
 * once, except for a tok_down* order (a provider error). Used when
 * flashsaled runs without --payment-provider.
 */
#include "writer/pay/pay_provider.h"
#include "writer/pay/pay_retry.h"

#include <assert.h>
#include <string.h>

static int has_prefix(const char *s, size_t len, const char *p)
{
	size_t n = strlen(p);
	return len >= n && memcmp(s, p, n) == 0;
}

int pay_test_token(const char *token, size_t len, uint32_t *delay_ms)
{
	*delay_ms = 0;
	if (has_prefix(token, len, "tok_ok"))
		return FS_PAY_OK;
	if (has_prefix(token, len, "tok_decline"))
		return FS_PAY_DECLINED;
	if (has_prefix(token, len, "tok_down"))
		return FS_PAY_ERROR;
	if (has_prefix(token, len, "tok_slow_")) {
		uint32_t ms = 0;
		size_t i = 9;
		for (; i < len && token[i] >= '0' && token[i] <= '9' && ms < 600000; i++)
			ms = ms * 10 + (uint32_t)(token[i] - '0');
		if (i == 9)
			return FS_PAY_INVALID;
		*delay_ms = ms;
		return 0;
	}
	return FS_PAY_INVALID;
}

/* Every attempt is decided at once from the token; tok_slow_<ms> is charged
 * and known <ms> later. Nothing is ever in flight inside the provider. */
static int test_start(void *self, uint32_t slot, const struct wr_charge *c, int64_t t, int64_t *due_ms)
{
	uint32_t delay_ms;
	int out = pay_test_token(c->token, c->token_len, &delay_ms);
	if (c->kind == WR_CHARGE_REFUND) {   /* refunds: made, known at once, unless the provider is down */
		out = out == FS_PAY_ERROR ? FS_PAY_ERROR : FS_PAY_OK;
		delay_ms = 0;
	}
	*due_ms = t + delay_ms;
	if (out == FS_PAY_ERROR)
		return PAY_ERROR_CLEAN;   /* tok_down: an unreachable provider charged nothing */
	return out == 0 ? FS_PAY_OK : out;
}

static uint32_t test_pollfds(void *self, struct pollfd *pfd, uint32_t max) { return 0; }

static int64_t test_advance(void *self, const struct pollfd *pfd, uint32_t n, int64_t t,
                            pay_done_fn *done, void *ctx)
{
	return INT64_MAX;
}

static void test_close(void *self) { }

int pay_test_provider_open(struct pay_provider_ops *ops, uint32_t slot_count, char *err, size_t err_len)
{
	assert(ops != NULL && slot_count > 0);
	*ops = (struct pay_provider_ops){ .name = "test", .start = test_start, .pollfds = test_pollfds,
	                                  .advance = test_advance, .close = test_close, .self = NULL };
	return 0;
}
