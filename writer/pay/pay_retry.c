/* pay_retry.c - the payment thread's retry rule (pay_retry.h). */
#include "writer/pay/pay_retry.h"
#include "writer/alloc.h"

#include <assert.h>

int pay_retry_next(const struct pay_retry_rule *r, uint32_t attempts, int outcome, uint8_t *uncertain,
                   int64_t *backoff_ms)
{
	assert(r->attempt_count_max > 0 && r->backoff_ms > 0 && attempts > 0);
	assert(outcome == PAY_ERROR_CLEAN || (outcome >= FS_PAY_OK && outcome <= FS_PAY_INVALID));
	if (outcome == FS_PAY_ERROR)
		*uncertain = 1;
	if (outcome != FS_PAY_ERROR && outcome != PAY_ERROR_CLEAN)
		return outcome;   /* a definitive answer */
	if (attempts >= r->attempt_count_max && !*uncertain)
		return FS_PAY_ERROR;   /* nothing can have been charged: provider_unavailable */
	uint32_t shift = attempts - 1 < 20 ? attempts - 1 : 20;
	int64_t b = (int64_t)r->backoff_ms << shift;
	*backoff_ms = b < PAY_BACKOFF_MS_MAX ? b : PAY_BACKOFF_MS_MAX;
	assert(*backoff_ms > 0);
	return 0;
}
