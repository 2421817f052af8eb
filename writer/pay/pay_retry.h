/* pay_retry.h - the payment thread's retry rule, pure (no I/O, no clock):
 * what follows an attempt at a charge. payment.c applies it on the payment
 * thread; the deterministic simulation (tests/sim) applies the same code
 * under simulated time, so the rule it proves is the one that runs.
 *
 * The rule: an error is retried with the same idempotency key after a
 * backoff that doubles (capped at PAY_BACKOFF_MS_MAX). After
 * attempt_count_max attempts the order FAILS provider_unavailable only if
 * no attempt may have reached the provider: once one may have (a timeout
 * or a connection lost after the request left, or a charge re-issued after
 * a restart), a charge may exist that only the provider knows about, so
 * the order stays PENDING (its unit held, never resold) and is asked again,
 * with the same key, until the provider gives a definitive answer
 * (charged, already charged, declined).
 */
#ifndef WR_PAY_RETRY_H
#define WR_PAY_RETRY_H

#include <stdint.h>

/* An attempt's outcome besides enum fs_pay: a provider error that charged
 * nothing for certain (no byte of the request left, or the provider gave a
 * whole answer that the contract says charges nothing). FS_PAY_ERROR from a
 * provider means the outcome is unknown: the attempt may have charged. */
#define PAY_ERROR_CLEAN (-2)

#define PAY_BACKOFF_MS_MAX 5000

struct pay_retry_rule {
	uint32_t attempt_count_max;   /* e.g. 3 */
	uint32_t backoff_ms;          /* first backoff, doubled each retry, e.g. 50 */
};

/* After attempt number `attempts` (1-based) ended with `outcome` (enum
 * fs_pay, or PAY_ERROR_CLEAN): sets *uncertain once an attempt may have
 * charged (never clears it). Returns the outcome to report (enum fs_pay:
 * FS_PAY_ERROR for provider_unavailable), or 0 to try again after
 * *backoff_ms, which it then sets (> 0). */
int pay_retry_next(const struct pay_retry_rule *r, uint32_t attempts, int outcome, uint8_t *uncertain,
                   int64_t *backoff_ms);

#endif
