/* payment.c - the payment thread and the built-in test provider.
 *
 * Charges wait in a fixed table (one slot per charge the ring can hold)
 * with the time their outcome is due; the thread sleeps until the earliest
 * due time or a kick from the writer. Provider errors are retried with the
 * same idempotency key (the order id) and doubling backoff; consecutive
 * errors open a circuit breaker that the dataplane reads to answer new
 * checkouts 503 at once instead of piling them up.
 */
#include "writer/payment.h"

#include <assert.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct pay_slot {
	struct wr_charge c;
	int64_t  due_ms;
	uint32_t attempts;
	uint8_t  used;
	uint8_t  outcome;        /* decided outcome to report at due_ms, 0 = ask again */
};

struct payments {
	struct pay_config cfg;
	struct pay_slot *slots;
	uint32_t slot_count;
	uint32_t used_count;
	uint32_t consecutive_errors;
	int64_t  breaker_until_ms;
	pthread_t thread;
	_Atomic int stop;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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

/* One attempt at the test provider: the outcome and when it is known. */
static int attempt(struct payments *p, struct pay_slot *s, int64_t t)
{
	uint32_t delay_ms;
	int out = pay_test_token(s->c.token, s->c.token_len, &delay_ms);
	s->attempts++;
	if (out == 0) {
		s->outcome = FS_PAY_OK;
		s->due_ms = t + delay_ms;
		return 0;
	}
	if (out == FS_PAY_ERROR && s->attempts < p->cfg.retry_count_max) {
		s->outcome = 0;   /* retry with the same key after a backoff */
		s->due_ms = t + ((int64_t)p->cfg.retry_backoff_ms << (s->attempts - 1));
		return 0;
	}
	s->outcome = (uint8_t)out;
	s->due_ms = t;
	return 0;
}

static void breaker_note(struct payments *p, int outcome, int64_t t)
{
	if (outcome != FS_PAY_ERROR) {
		p->consecutive_errors = 0;
		return;
	}
	if (++p->consecutive_errors >= p->cfg.breaker_failures) {
		p->breaker_until_ms = t + p->cfg.breaker_open_ms;
		atomic_store(p->cfg.payments_open, 0);
	}
}

/* Reports a final outcome to the writer; returns 0 when its ring is full
 * (the slot stays and is tried again next round). */
static int report(struct payments *p, struct pay_slot *s)
{
	struct fs_cmd *c = fs_ring_slot(&p->cfg.port->cmds);
	if (c == NULL)
		return 0;
	memset(c, 0, sizeof *c);
	c->type = FS_CMD_PAY_RESULT;
	c->ref = s->c.order_no;
	c->pay = s->outcome;
	const char *why = s->outcome == FS_PAY_OK ? "charged" : fs_pay_reason_name(s->outcome);
	c->text_len = (uint8_t)strlen(why);
	memcpy(c->text, why, c->text_len);
	fs_ring_produce(&p->cfg.port->cmds, 1);
	fs_wake(p->cfg.port->writer);
	atomic_fetch_sub(p->cfg.outstanding, 1);
	s->used = 0;
	p->used_count--;
	return 1;
}

static void take_new(struct payments *p, int64_t t)
{
	for (uint32_t i = 0; i < p->slot_count && p->used_count < p->slot_count; i++) {
		struct pay_slot *s = &p->slots[i];
		if (s->used)
			continue;
		if (fs_ring_dequeue_burst(p->cfg.charges, &s->c, 1) == 0)
			return;
		s->used = 1;
		s->attempts = 0;
		p->used_count++;
		attempt(p, s, t);
	}
}

/* Reports what is due; returns the next due time (INT64_MAX when none). */
static int64_t settle(struct payments *p, int64_t t)
{
	int64_t next = INT64_MAX;
	for (uint32_t i = 0; i < p->slot_count; i++) {
		struct pay_slot *s = &p->slots[i];
		if (!s->used)
			continue;
		if (s->due_ms <= t && s->outcome == 0)
			attempt(p, s, t);
		if (s->due_ms <= t && s->outcome != 0) {
			breaker_note(p, s->outcome, t);
			if (report(p, s))
				continue;
			s->due_ms = t + 1;
		}
		if (s->due_ms < next)
			next = s->due_ms;
	}
	return next;
}

static void *pay_main(void *arg)
{
	struct payments *p = arg;
	while (!atomic_load(&p->stop)) {
		int64_t t = now_ms();
		if (p->breaker_until_ms != 0 && t >= p->breaker_until_ms) {
			p->breaker_until_ms = 0;   /* half-open: let the next charge try */
			atomic_store(p->cfg.payments_open, 1);
		}
		take_new(p, t);
		int64_t next = settle(p, t);
		if (p->breaker_until_ms != 0 && p->breaker_until_ms < next)
			next = p->breaker_until_ms;
		atomic_store(&p->cfg.waker->sleeping, 1);
		if (fs_ring_count(p->cfg.charges) == 0 || p->used_count == p->slot_count) {
			int64_t wait = next == INT64_MAX ? 1000 : next - now_ms();
			if (wait > 1000)
				wait = 1000;
			struct pollfd pf = { .fd = p->cfg.waker->fd, .events = POLLIN };
			if (wait > 0)
				poll(&pf, 1, (int)wait);
		}
		atomic_store(&p->cfg.waker->sleeping, 0);
		uint64_t v;
		ssize_t r = read(p->cfg.waker->fd, &v, sizeof v);
		(void)r;
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
	p->slot_count = fs_ring_capacity(cfg->charges);
	p->slots = calloc(p->slot_count, sizeof *p->slots);
	if (p->slots == NULL || pthread_create(&p->thread, NULL, pay_main, p) != 0) {
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
	free(p->slots);
	free(p);
}
