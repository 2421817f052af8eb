/* pay_provider.h - a payment provider as the payment thread sees it: one
 * ops struct, and the two providers that fill it. The built-in test
 * provider (pay_builtin.c) decides from the token (API.md token semantics);
 * the HTTP provider (pay_http.c) speaks the contract at the top of that
 * file. The thread (payment.c) drives either from its one poll() loop and
 * never blocks on one; the providers know nothing of the thread.
 */
#ifndef WR_PAY_PROVIDER_H
#define WR_PAY_PROVIDER_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include "writer/alloc.h"

/* start() has no room for another attempt now (every connection is busy):
 * the thread keeps the charge waiting and asks again after advance(). */
#define PAY_BUSY (-1)

/* Called by a provider's advance() for each attempt that finished:
 * `outcome` is enum fs_pay, FS_PAY_ERROR when the attempt may have charged
 * (a timeout or an I/O error after the request left), or PAY_ERROR_CLEAN
 * (pay_retry.h) when it certainly charged nothing. */
typedef void pay_done_fn(void *ctx, uint32_t slot, int outcome);

/* A provider. One attempt per slot at a time; `slot` < the slot count given
 * when the provider was made. Every function runs on the payment thread. */
struct pay_provider_ops {
	const char *name;
	/* Begins one attempt at charge c (idempotency key: the order id), or at
	 * the refund of its order when c->kind is WR_CHARGE_REFUND (key:
	 * "refund-" + the order id; FS_PAY_OK means refunded).
	 * Returns the attempt's outcome (enum fs_pay) with *due_ms set to the
	 * time it is known (now, or later for tok_slow_<ms>); 0 when the outcome
	 * comes later through advance(); PAY_BUSY when it cannot start now. */
	int (*start)(void *self, uint32_t slot, const struct wr_charge *c, int64_t now_ms, int64_t *due_ms);
	/* Writes the descriptors the provider waits on (at most max); returns
	 * how many. The same array, with revents, goes back to advance(). */
	uint32_t (*pollfds)(void *self, struct pollfd *pfd, uint32_t max);
	/* Moves every attempt in flight forward (I/O, timeouts) and calls
	 * done() for each one that finished. Returns the next time it must run
	 * even without an event (INT64_MAX: none). */
	int64_t (*advance)(void *self, const struct pollfd *pfd, uint32_t pfd_count, int64_t now_ms,
	                   pay_done_fn *done, void *ctx);
	/* Drops every attempt in flight (their outcomes are never reported)
	 * and frees the provider. */
	void (*close)(void *self);
	void *self;
};

/* Validates a provider URL and resolves its host (for flag parsing: one
 * line in err). Returns 0, or -1 with the reason in err. */
int pay_provider_check(const char *url, char *err, size_t err_len);

/* Test provider decision for a token, at the first attempt (pure, for tests):
 * returns enum fs_pay, or 0 with *delay_ms set for tok_slow_<ms>. */
int pay_test_token(const char *token, size_t len, uint32_t *delay_ms);

/* The providers (for the thread and for tests). Each returns 0 and fills
 * *ops, or -1 with a one-line reason in err. slot_count bounds the slot
 * numbers start() will see. */
int pay_test_provider_open(struct pay_provider_ops *ops, uint32_t slot_count, char *err, size_t err_len);
int pay_http_provider_open(struct pay_provider_ops *ops, const char *url, uint32_t slot_count,
                           uint32_t connection_count_max, uint32_t attempt_timeout_ms,
                           char *err, size_t err_len);

#endif
