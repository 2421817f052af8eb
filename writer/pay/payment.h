/* payment.h - the payment thread: takes charges the writer hands over once
 * a checkout is durable, asks a provider, and reports each outcome back to
 * the writer as a PAY_RESULT command. Never runs on the writer or dataplane
 * cores; a slow provider delays only its own orders (their holds stay
 * extended while PAYING, so a slow payment can never let a unit be resold).
 *
 * Never charged twice: every attempt at a charge, the retries after a
 * provider error and the re-issue after a crash (writer.c charges PENDING
 * orders again at start-up) carry the same idempotency key, the order id
 * "o%016x". A provider that honours the key charges a card at most once.
 *
 * The thread owns a fixed slot table, one slot per charge the charge ring
 * can hold, so every charge the writer admitted has a place and at most that
 * many are in flight. Providers sit behind struct pay_provider_ops: the
 * built-in test provider (payment.c, API.md token semantics) and the HTTP
 * provider (pay_http.c, the contract at the top of that file). Both are
 * driven by the thread's one poll() loop; neither ever blocks it.
 */
#ifndef WR_PAYMENT_H
#define WR_PAYMENT_H

#include <poll.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "common/fs_port.h"
#include "writer/alloc.h"

/* start() has no room for another attempt now (every connection is busy):
 * the thread keeps the charge waiting and asks again after advance(). */
#define PAY_BUSY (-1)

/* Called by a provider's advance() for each attempt that finished:
 * `outcome` is enum fs_pay (FS_PAY_ERROR for a timeout or an I/O error). */
typedef void pay_done_fn(void *ctx, uint32_t slot, int outcome);

/* A provider. One attempt per slot at a time; `slot` < the slot count given
 * when the provider was made. Every function runs on the payment thread. */
struct pay_provider_ops {
	const char *name;
	/* Begins one attempt at charge c (idempotency key: the order id).
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

struct pay_config {
	struct fs_ring *charges;          /* writer -> payments (struct wr_charge) */
	struct fs_waker *waker;           /* ours: the writer kicks it after pushing */
	struct fs_port *port;             /* payments -> writer (PAY_RESULT) */
	_Atomic uint64_t *outstanding;    /* charges handed over and not yet reported */
	_Atomic uint32_t *payments_open;  /* 0 while the circuit breaker is open */
	const char *provider_url;         /* http://HOST[:PORT]/PATH, or NULL: the test provider */
	uint32_t retry_count_max;         /* attempts per charge on provider errors, e.g. 3 */
	uint32_t retry_backoff_ms;        /* first backoff, doubled each retry, e.g. 50 */
	uint32_t breaker_failures;        /* orders in a row failed as unavailable that open it, e.g. 3 */
	uint32_t breaker_open_ms;         /* how long it stays open, e.g. 1000 */
	uint32_t attempt_timeout_ms;      /* HTTP: connect + request + answer, e.g. 2000 */
	uint32_t connection_count_max;    /* HTTP: connections to the provider, e.g. 64 */
};

enum pay_breaker { PAY_BREAKER_CLOSED = 0, PAY_BREAKER_OPEN = 1, PAY_BREAKER_HALF_OPEN = 2 };

/* Counters since pay_start() (monotonic; read from any thread). */
struct pay_stats {
	uint64_t charges;          /* taken from the ring */
	uint64_t attempts;         /* provider attempts started */
	uint64_t attempt_errors;   /* attempts that ended FS_PAY_ERROR */
	uint64_t paid, declined, invalid, unavailable;   /* outcomes reported */
	uint64_t breaker_opened;   /* transitions to open (closed or half-open -> open) */
	uint32_t in_flight;        /* charges held in the slot table */
	uint32_t breaker;          /* enum pay_breaker */
};

struct payments;

/* Starts the payment thread with the provider cfg->provider_url names (the
 * built-in test provider when NULL). Zero tuning fields take the defaults
 * shown above. Returns NULL when the URL is unusable (see
 * pay_provider_check()) or the thread cannot start. */
struct payments *pay_start(const struct pay_config *cfg);
/* Stops the thread; charges still in flight are not reported (the writer
 * charges their PENDING orders again, with the same key, at the next start). */
void pay_stop(struct payments *p);
void pay_stats_get(const struct payments *p, struct pay_stats *s);

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
