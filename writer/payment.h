/* payment.h - the payment thread: takes charges the writer hands over once
 * a checkout is durable, asks a provider, and reports each outcome back to
 * the writer as a PAY_RESULT command. Never runs on the writer or dataplane
 * cores; a slow provider delays only its own orders (their holds stay
 * extended while PAYING, so a slow payment can never let a unit be resold).
 */
#ifndef WR_PAYMENT_H
#define WR_PAYMENT_H

#include <stdatomic.h>
#include <stdint.h>
#include "common/fs_port.h"
#include "writer/alloc.h"

/* A provider: start() begins a charge and returns an outcome (enum fs_pay)
 * now, or 0 when the outcome comes later through poll(). */
struct pay_provider_ops {
	const char *name;
	int  (*start)(void *self, const struct wr_charge *c, int64_t now_ms, int64_t *due_ms);
	void *self;
};

struct pay_config {
	struct fs_ring *charges;          /* writer -> payments (struct wr_charge) */
	struct fs_waker *waker;           /* ours: the writer kicks it after pushing */
	struct fs_port *port;             /* payments -> writer (PAY_RESULT) */
	_Atomic uint64_t *outstanding;    /* charges handed over and not yet reported */
	_Atomic uint32_t *payments_open;  /* 0 while the circuit breaker is open */
	uint32_t retry_count_max;         /* attempts per charge on provider errors, e.g. 3 */
	uint32_t retry_backoff_ms;        /* first backoff, doubled each retry, e.g. 50 */
	uint32_t breaker_failures;        /* consecutive errors that open the breaker, e.g. 3 */
	uint32_t breaker_open_ms;         /* how long it stays open, e.g. 1000 */
};

struct payments;

/* Starts the payment thread with the built-in test provider (API.md token
 * semantics). Returns NULL when the thread cannot start. */
struct payments *pay_start(const struct pay_config *cfg);
void pay_stop(struct payments *p);

/* Test provider decision for a token, at the first attempt (pure, for tests):
 * returns enum fs_pay, or 0 with *delay_ms set for tok_slow_<ms>. */
int pay_test_token(const char *token, size_t len, uint32_t *delay_ms);

#endif
