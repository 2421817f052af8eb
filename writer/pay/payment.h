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
 * Never FAILED when it may have been charged: an order whose attempt may
 * have reached the provider (a timeout after the request left, a charge
 * re-issued after a restart) is never concluded FAILED on provider errors;
 * it stays PENDING and is asked again until the provider answers
 * (pay_retry.h).
 *
 * The thread owns a fixed slot table, one slot per charge the charge ring
 * can hold, so every charge the writer admitted has a place and at most that
 * many are in flight. It asks the provider through struct pay_provider_ops
 * (pay_provider.h), which it drives from its one poll() loop.
 */
#ifndef WR_PAYMENT_H
#define WR_PAYMENT_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "common/fs_port.h"
#include "writer/alloc.h"
#include "writer/pay/pay_provider.h"

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
	uint64_t order_id_bits;           /* ORed into order numbers the provider sees: the owner
	                                   * bits of the public id (fs_shard.h); 0 with one writer */
};

enum pay_breaker { PAY_BREAKER_CLOSED = 0, PAY_BREAKER_OPEN = 1, PAY_BREAKER_HALF_OPEN = 2 };

/* Counters since pay_start() (monotonic; read from any thread). */
struct pay_stats {
	uint64_t charges;          /* taken from the ring */
	uint64_t attempts;         /* provider attempts started */
	uint64_t attempt_errors;   /* attempts that ended FS_PAY_ERROR */
	uint64_t paid, declined, invalid, unavailable;   /* outcomes reported */
	uint64_t breaker_opened;   /* transitions to open (closed or half-open -> open) */
	uint64_t refunded, refund_failed;   /* refund outcomes reported */
	uint64_t kept_pending;     /* charges out of attempts kept PENDING: one may have charged */
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

#endif
