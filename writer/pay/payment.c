/* payment.c - the payment thread (payment.h); its providers are in
 * pay_builtin.c and pay_http.c (pay_provider.h).
 *
 * Charges wait in a fixed table (one slot per charge the ring can hold).
 * A slot is WAITING (for its first attempt or a retry at due_ms), IN FLIGHT
 * (the provider has an attempt), or DECIDED (its outcome is reported to the
 * writer at due_ms). The thread sleeps in one poll() on the writer's kick,
 * the provider's sockets and the earliest due time.
 *
 * A refund of a paid order (struct wr_charge kind WR_CHARGE_REFUND) takes
 * the same path and is reported as a REFUND_RESULT command; its key is
 * "refund-" + the order id.
 *
 * Provider errors (timeouts, refused connections, answers outside the
 * contract) are retried with the same idempotency key (the order id) and a
 * doubling backoff, up to retry_count_max attempts; then the order fails
 * with provider_unavailable, unless an attempt may have charged (a timeout
 * after the request left, a re-issued charge): such an order stays PENDING
 * and is asked again until the provider answers (pay_retry.h, the rule the
 * simulation proves). breaker_failures orders in a row that failed
 * that way open a circuit breaker: payments_open drops to 0 (the dataplane
 * answers new checkouts 503 at once instead of piling them up) and no
 * attempt starts. After breaker_open_ms it half-opens: payments_open is 1
 * again and a single probe attempt goes out; a probe that fails opens it
 * again, any answer that is not an error closes it. Charges already
 * admitted are never failed by the breaker alone: they wait for it, so an
 * order fails as unavailable only after the provider was asked
 * retry_count_max times.
 */
#include "writer/pay/payment.h"
#include "writer/pay/pay_retry.h"
#include "common/fs_clock.h"

#include <assert.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAY_WAIT_MS_MAX 1000

enum slot_state { SLOT_FREE = 0, SLOT_WAITING, SLOT_IN_FLIGHT, SLOT_DECIDED };

/* The state of a slot; its charge lives in charges[] with the same index,
 * so the scans of every loop touch 16 bytes per slot, not a whole charge. */
struct pay_slot {
	int64_t  due_ms;         /* WAITING: next attempt; IN_FLIGHT: the provider's
	                          * deadline; DECIDED: when to report */
	uint32_t attempts;
	uint8_t  state;          /* enum slot_state */
	uint8_t  outcome;        /* DECIDED: enum fs_pay */
	uint8_t  probe;          /* this attempt is the half-open probe */
	uint8_t  uncertain;      /* an attempt may have charged: never FAILED on errors */
};
_Static_assert(sizeof(struct pay_slot) == 16, "the loops scan every slot: keep them small");

struct pay_counters {
	_Atomic uint64_t charges, attempts, attempt_errors, paid, declined, invalid, unavailable;
	_Atomic uint64_t breaker_opened, refunded, refund_failed, kept_pending;
	_Atomic uint32_t in_flight, breaker;
};

struct payments {
	struct pay_config cfg;
	struct pay_provider_ops prov;
	struct pay_retry_rule rule;
	struct pay_slot *slots;
	struct wr_charge *charges;   /* slot_count, same index as slots */
	uint32_t slot_count;
	uint32_t used_count;
	uint32_t cursor;             /* round-robin start of the attempt scan */
	uint32_t consecutive_errors;
	uint32_t breaker;            /* enum pay_breaker */
	uint32_t probe_in_flight;
	int64_t  breaker_until_ms;
	struct pollfd *pfd;          /* [0] = our waker, then the provider's */
	uint32_t pfd_max;
	struct pay_counters n;
	pthread_t thread;
	_Atomic int stop;
};

static void bump(_Atomic uint64_t *c) { atomic_fetch_add_explicit(c, 1, memory_order_relaxed); }

/* ---- the circuit breaker ------------------------------------------------- */

static void breaker_set(struct payments *p, uint32_t state, int64_t t)
{
	p->breaker = state;
	atomic_store_explicit(&p->n.breaker, state, memory_order_relaxed);
	if (state == PAY_BREAKER_OPEN) {
		p->breaker_until_ms = t + p->cfg.breaker_open_ms;
		bump(&p->n.breaker_opened);
	}
	atomic_store(p->cfg.payments_open, state == PAY_BREAKER_OPEN ? 0u : 1u);
}

/* Every attempt's outcome passes here (`final`: the charge's last attempt).
 * breaker_failures charges in a row that failed as unavailable open the
 * breaker; a failed half-open probe opens it again at once; any answer from
 * the provider closes it and starts the count again. */
static void breaker_note(struct payments *p, int outcome, int final, int64_t t)
{
	if (outcome != FS_PAY_ERROR) {
		p->consecutive_errors = 0;
		if (p->breaker != PAY_BREAKER_CLOSED)
			breaker_set(p, PAY_BREAKER_CLOSED, t);
		return;
	}
	if (p->breaker == PAY_BREAKER_HALF_OPEN) {
		breaker_set(p, PAY_BREAKER_OPEN, t);
		return;
	}
	if (final && p->breaker == PAY_BREAKER_CLOSED && ++p->consecutive_errors >= p->cfg.breaker_failures)
		breaker_set(p, PAY_BREAKER_OPEN, t);
}

static void breaker_tick(struct payments *p, int64_t t)
{
	if (p->breaker == PAY_BREAKER_OPEN && t >= p->breaker_until_ms)
		breaker_set(p, PAY_BREAKER_HALF_OPEN, t);   /* let one probe try */
}

/* ---- slots ------------------------------------------------------------- */

/* An attempt ended (outcome: enum fs_pay or PAY_ERROR_CLEAN): retry after
 * a backoff, or decide (pay_retry_next). */
static void attempt_done(struct payments *p, struct pay_slot *s, int outcome, int64_t t, int64_t due_ms)
{
	assert(s->state == SLOT_IN_FLIGHT || s->state == SLOT_WAITING);
	assert(outcome == PAY_ERROR_CLEAN || (outcome >= FS_PAY_OK && outcome <= FS_PAY_INVALID));
	if (s->probe) {
		s->probe = 0;
		p->probe_in_flight = 0;
	}
	int error = outcome == FS_PAY_ERROR || outcome == PAY_ERROR_CLEAN;
	if (error)
		bump(&p->n.attempt_errors);
	int64_t backoff = 0;
	int decided = pay_retry_next(&p->rule, s->attempts, outcome, &s->uncertain, &backoff);
	breaker_note(p, error ? FS_PAY_ERROR : outcome, decided != 0 || s->attempts >= p->cfg.retry_count_max, t);
	if (decided == 0) {
		if (s->attempts == p->cfg.retry_count_max)
			bump(&p->n.kept_pending);   /* out of attempts, but it may have charged */
		s->state = SLOT_WAITING;   /* again with the same key, after a backoff */
		s->due_ms = t + backoff;
		return;
	}
	assert(decided >= FS_PAY_OK && decided <= FS_PAY_INVALID);
	s->state = SLOT_DECIDED;
	s->outcome = (uint8_t)decided;
	s->due_ms = due_ms;
}

static void on_done(void *ctx, uint32_t slot, int outcome)
{
	struct payments *p = ctx;
	assert(slot < p->slot_count);
	struct pay_slot *s = &p->slots[slot];
	assert(s->state == SLOT_IN_FLIGHT);
	int64_t t = fs_mono_ms();
	attempt_done(p, s, outcome, t, t);
}

/* Reports a final outcome to the writer; returns 0 when its ring is full
 * (the slot stays and is tried again next round). The counters move before
 * the command is published, so whoever reads the result sees them. */
static int report(struct payments *p, uint32_t i)
{
	struct pay_slot *s = &p->slots[i];
	assert(s->state == SLOT_DECIDED);
	struct fs_cmd *c = fs_ring_slot(&p->cfg.port->cmds);
	if (c == NULL)
		return 0;
	memset(c, 0, sizeof *c);
	int refund = p->charges[i].kind == WR_CHARGE_REFUND;
	c->type = refund ? FS_CMD_REFUND_RESULT : FS_CMD_PAY_RESULT;
	c->ref = p->charges[i].order_no;
	c->pay = s->outcome;
	const char *why = s->outcome != FS_PAY_OK ? fs_pay_reason_name(s->outcome) : refund ? "refunded" : "charged";
	c->text_len = (uint8_t)strlen(why);
	memcpy(c->text, why, c->text_len);
	if (refund)
		bump(s->outcome == FS_PAY_OK ? &p->n.refunded : &p->n.refund_failed);
	else switch (s->outcome) {
	case FS_PAY_OK:       bump(&p->n.paid); break;
	case FS_PAY_DECLINED: bump(&p->n.declined); break;
	case FS_PAY_INVALID:  bump(&p->n.invalid); break;
	default:              bump(&p->n.unavailable); break;
	}
	s->state = SLOT_FREE;
	p->used_count--;
	atomic_store_explicit(&p->n.in_flight, p->used_count, memory_order_relaxed);
	atomic_fetch_sub(p->cfg.outstanding, 1);
	fs_ring_produce(&p->cfg.port->cmds, 1);
	fs_wake(p->cfg.port->writer);
	return 1;
}

static void take_new(struct payments *p, int64_t t)
{
	for (uint32_t i = 0; i < p->slot_count && p->used_count < p->slot_count; i++) {
		struct pay_slot *s = &p->slots[i];
		if (s->state != SLOT_FREE)
			continue;
		struct wr_charge *c = &p->charges[i];
		if (fs_ring_dequeue_burst(p->cfg.charges, c, 1) == 0)
			break;
		assert(c->order_no != 0 && c->token_len <= FS_ID_LEN_MAX && c->user_len <= FS_ID_LEN_MAX);
		assert(c->kind == WR_CHARGE_PAY || c->kind == WR_CHARGE_REFUND);
		s->state = SLOT_WAITING;
		s->due_ms = t;
		s->attempts = 0;
		s->probe = 0;
		s->uncertain = c->reissued;   /* the last run may have charged it */
		p->used_count++;
		bump(&p->n.charges);
	}
	atomic_store_explicit(&p->n.in_flight, p->used_count, memory_order_relaxed);
}

/* Whether the breaker lets another attempt start now. */
static int may_attempt(const struct payments *p)
{
	return p->breaker == PAY_BREAKER_CLOSED ||
	       (p->breaker == PAY_BREAKER_HALF_OPEN && !p->probe_in_flight);
}

/* Starts the attempts that are due, round-robin from the cursor so a busy
 * provider serves every waiting charge in turn. Returns 1 when the provider
 * had no room for one (it says so again after advance() frees some). */
static int start_due(struct payments *p, int64_t t)
{
	for (uint32_t k = 0; k < p->slot_count && may_attempt(p); k++) {
		uint32_t i = (p->cursor + k) % p->slot_count;
		struct pay_slot *s = &p->slots[i];
		if (s->state != SLOT_WAITING || s->due_ms > t)
			continue;
		int64_t due = t;
		/* the provider sees the public order id (the idempotency key: two
		 * writer shards number their orders alike); PAY_RESULT keeps ours */
		struct wr_charge pub = p->charges[i];
		pub.order_no |= p->cfg.order_id_bits;
		int out = p->prov.start(p->prov.self, i, &pub, t, &due);
		if (out == PAY_BUSY) {
			p->cursor = i;     /* first in line when a connection frees up */
			return 1;
		}
		assert(out == PAY_ERROR_CLEAN || (out >= 0 && out <= FS_PAY_INVALID));
		s->attempts++;
		bump(&p->n.attempts);
		s->state = SLOT_IN_FLIGHT;
		s->due_ms = due;       /* in flight: the provider reports by then */
		if (p->breaker == PAY_BREAKER_HALF_OPEN) {
			s->probe = 1;
			p->probe_in_flight = 1;
		}
		if (out != 0)
			attempt_done(p, s, out, t, due < t ? t : due);
	}
	return 0;
}

/* Reports what is decided and due; returns the next time a slot needs the
 * thread (INT64_MAX: none). Waiting slots count only when an attempt could
 * start (breaker closed or probing, provider not busy). */
static int64_t settle(struct payments *p, int64_t t, int waiting_count)
{
	int64_t next = INT64_MAX;
	for (uint32_t i = 0; i < p->slot_count && p->used_count > 0; i++) {
		struct pay_slot *s = &p->slots[i];
		if (s->state == SLOT_DECIDED && s->due_ms <= t) {
			if (report(p, i))
				continue;
			s->due_ms = t + 1;   /* the writer's ring is full: next round */
		}
		if (s->state == SLOT_FREE || (s->state == SLOT_WAITING && !waiting_count))
			continue;
		if (s->due_ms < next)
			next = s->due_ms;
	}
	if (p->breaker == PAY_BREAKER_OPEN && p->breaker_until_ms < next)
		next = p->breaker_until_ms;
	return next;
}

static void *pay_main(void *arg)
{
	struct payments *p = arg;
	int64_t prov_next = INT64_MAX;
	while (!atomic_load(&p->stop)) {
		int64_t t = fs_mono_ms();
		breaker_tick(p, t);
		take_new(p, t);
		int busy = start_due(p, t);
		int64_t next = settle(p, t, !busy && may_attempt(p));
		if (prov_next < next)
			next = prov_next;
		atomic_store(&p->cfg.waker->sleeping, 1);
		uint32_t nfd = 1 + p->prov.pollfds(p->prov.self, p->pfd + 1, p->pfd_max - 1);
		assert(nfd <= p->pfd_max);
		p->pfd[0] = (struct pollfd){ .fd = p->cfg.waker->fd, .events = POLLIN };
		int64_t wait = next == INT64_MAX ? PAY_WAIT_MS_MAX : next - fs_mono_ms();
		if (fs_ring_count(p->cfg.charges) != 0 && p->used_count < p->slot_count)
			wait = 0;
		if (wait > PAY_WAIT_MS_MAX)
			wait = PAY_WAIT_MS_MAX;
		if (wait < 0)
			wait = 0;
		int r = poll(p->pfd, nfd, (int)wait);
		atomic_store(&p->cfg.waker->sleeping, 0);
		if (r > 0 && (p->pfd[0].revents & POLLIN)) {
			uint64_t v;
			ssize_t got = read(p->cfg.waker->fd, &v, sizeof v);
			(void)got;
		}
		prov_next = p->prov.advance(p->prov.self, p->pfd + 1, nfd - 1, fs_mono_ms(), on_done, p);
	}
	return NULL;
}

struct payments *pay_start(const struct pay_config *cfg)
{
	assert(cfg->charges && cfg->port && cfg->waker && cfg->outstanding && cfg->payments_open);
	struct payments *p = calloc(1, sizeof *p);
	if (p == NULL)
		return NULL;
	p->cfg = *cfg;
	if (p->cfg.retry_count_max == 0)
		p->cfg.retry_count_max = 3;
	if (p->cfg.retry_backoff_ms == 0)
		p->cfg.retry_backoff_ms = 50;
	if (p->cfg.breaker_failures == 0)
		p->cfg.breaker_failures = 3;
	if (p->cfg.breaker_open_ms == 0)
		p->cfg.breaker_open_ms = 1000;
	if (p->cfg.attempt_timeout_ms == 0)
		p->cfg.attempt_timeout_ms = 2000;
	if (p->cfg.connection_count_max == 0)
		p->cfg.connection_count_max = 64;
	p->rule = (struct pay_retry_rule){ .attempt_count_max = p->cfg.retry_count_max,
	                                   .backoff_ms = p->cfg.retry_backoff_ms };
	p->slot_count = fs_ring_capacity(cfg->charges);
	p->slots = calloc(p->slot_count, sizeof *p->slots);
	p->charges = calloc(p->slot_count, sizeof *p->charges);
	p->pfd_max = 1 + p->cfg.connection_count_max;
	p->pfd = calloc(p->pfd_max, sizeof *p->pfd);
	char err[256];
	int rc = -1;
	if (p->slots != NULL && p->charges != NULL && p->pfd != NULL) {
		rc = cfg->provider_url == NULL
		     ? pay_test_provider_open(&p->prov, p->slot_count, err, sizeof err)
		     : pay_http_provider_open(&p->prov, cfg->provider_url, p->slot_count,
		                              p->cfg.connection_count_max, p->cfg.attempt_timeout_ms,
		                              err, sizeof err);
	}
	if (rc != 0) {
		free(p->pfd);
		free(p->charges);
		free(p->slots);
		free(p);
		return NULL;
	}
	atomic_store(p->cfg.payments_open, 1);
	if (pthread_create(&p->thread, NULL, pay_main, p) != 0) {
		p->prov.close(p->prov.self);
		free(p->pfd);
		free(p->charges);
		free(p->slots);
		free(p);
		return NULL;
	}
	pthread_setname_np(p->thread, "fs-payments");
	return p;
}

void pay_stop(struct payments *p)
{
	if (p == NULL)
		return;
	atomic_store(&p->stop, 1);
	uint64_t one = 1;
	ssize_t r = write(p->cfg.waker->fd, &one, sizeof one);
	(void)r;
	pthread_join(p->thread, NULL);
	p->prov.close(p->prov.self);
	free(p->pfd);
	free(p->charges);
	free(p->slots);
	free(p);
}

void pay_stats_get(const struct payments *p, struct pay_stats *s)
{
	struct pay_counters *n = &((struct payments *)p)->n;
	s->charges = atomic_load_explicit(&n->charges, memory_order_relaxed);
	s->attempts = atomic_load_explicit(&n->attempts, memory_order_relaxed);
	s->attempt_errors = atomic_load_explicit(&n->attempt_errors, memory_order_relaxed);
	s->paid = atomic_load_explicit(&n->paid, memory_order_relaxed);
	s->declined = atomic_load_explicit(&n->declined, memory_order_relaxed);
	s->invalid = atomic_load_explicit(&n->invalid, memory_order_relaxed);
	s->unavailable = atomic_load_explicit(&n->unavailable, memory_order_relaxed);
	s->breaker_opened = atomic_load_explicit(&n->breaker_opened, memory_order_relaxed);
	s->refunded = atomic_load_explicit(&n->refunded, memory_order_relaxed);
	s->refund_failed = atomic_load_explicit(&n->refund_failed, memory_order_relaxed);
	s->kept_pending = atomic_load_explicit(&n->kept_pending, memory_order_relaxed);
	s->in_flight = atomic_load_explicit(&n->in_flight, memory_order_relaxed);
	s->breaker = atomic_load_explicit(&n->breaker, memory_order_relaxed);
}
