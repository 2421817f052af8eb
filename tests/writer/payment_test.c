/* payment_test.c - the payment thread driven through real rings, as
 * writer.c drives it: charges go in on an fs_ring of struct wr_charge, the
 * outcomes come back as PAY_RESULT commands on an fs_port's command ring.
 *
 *  - pay_test_token for every token family;
 *  - the test provider's outcomes and reasons, retries of tok_down;
 *  - the circuit breaker: opens after N orders failed as unavailable,
 *    half-opens after the cooldown, a failed probe opens it again, a
 *    success closes it, a charge that arrives while it is open waits;
 *  - the HTTP provider against a fake provider in this process (a poll()
 *    server thread): the contract's answers, retries with the same key,
 *    an answer lost after the charge (409 on the retry: charged once),
 *    timeouts, chunked and close-delimited bodies, keep-alive reuse, a
 *    refused connection, many charges in flight on a bounded pool;
 *  - never FAILED when it may have been charged: answers lost for more
 *    attempts than retry_count_max end PAID (charged once), a provider that
 *    never answers keeps the order PENDING, and so does a charge re-issued
 *    after a restart while nothing listens (tests/sim seeds 1000 and 1002
 *    found orders charged and FAILED).
 *
 * No assertion is about time: outcomes are awaited with generous timeouts
 * and the breaker is checked through its counters.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "writer/pay/payment.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define WAIT_MS_MAX   30000   /* generous: a loaded 2-core box still passes */
#define CHARGE_SLOTS  256
#define RESULT_SLOTS  1024

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- the harness: the writer's side of the rings ------------------------- */

struct harness {
	struct fs_ring charges;
	struct fs_waker pay_waker;       /* the payment thread's */
	struct fs_port port;             /* payments -> writer */
	struct fs_waker writer_waker;    /* ours: the payment thread kicks it */
	_Atomic uint64_t outstanding;
	_Atomic uint32_t payments_open;
	struct payments *p;
	uint8_t results[1 << 12];        /* enum fs_pay by order number */
	char reasons[1 << 12][32];
	uint64_t next_order;
};

static struct harness H;   /* static: the wakers are 64-byte aligned */
static _Alignas(64) uint8_t charge_mem[CHARGE_SLOTS * sizeof(struct wr_charge)];
static _Alignas(64) uint8_t cmd_mem[RESULT_SLOTS * sizeof(struct fs_cmd)];
static _Alignas(64) uint8_t ans_mem[2 * sizeof(struct fs_ans)];

static void harness_start(struct pay_config *cfg)
{
	memset(&H, 0, sizeof H);
	fs_ring_init(&H.charges, charge_mem, CHARGE_SLOTS, sizeof(struct wr_charge));
	fs_ring_init(&H.port.cmds, cmd_mem, RESULT_SLOTS, sizeof(struct fs_cmd));
	fs_ring_init(&H.port.answers, ans_mem, 2, sizeof(struct fs_ans));
	H.pay_waker.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	H.writer_waker.fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	assert_true(H.pay_waker.fd >= 0 && H.writer_waker.fd >= 0);
	H.port.writer = &H.writer_waker;
	H.next_order = 1;
	cfg->charges = &H.charges;
	cfg->waker = &H.pay_waker;
	cfg->port = &H.port;
	cfg->outstanding = &H.outstanding;
	cfg->payments_open = &H.payments_open;
	H.p = pay_start(cfg);
	assert_non_null(H.p);
	assert_int_equal(atomic_load(&H.payments_open), 1);
}

static void harness_stop(void)
{
	pay_stop(H.p);
	close(H.pay_waker.fd);
	close(H.writer_waker.fd);
}

/* Hands one charge over as writer.c does; returns its order number. */
static uint64_t charge_as(const char *token, const char *user, int64_t amount_cents, uint8_t reissued)
{
	struct wr_charge c;
	memset(&c, 0, sizeof c);
	c.reissued = reissued;
	c.order_no = H.next_order++;
	assert_true(c.order_no < sizeof H.results);
	c.amount_cents = amount_cents;
	c.token_len = (uint8_t)strlen(token);
	memcpy(c.token, token, c.token_len);
	c.user_len = (uint8_t)strlen(user);
	memcpy(c.user, user, c.user_len);
	assert_int_equal(fs_ring_enqueue_burst(&H.charges, &c, 1), 1);
	atomic_fetch_add(&H.outstanding, 1);
	fs_wake(&H.pay_waker);
	return c.order_no;
}

static uint64_t charge(const char *token, const char *user, int64_t amount_cents)
{
	return charge_as(token, user, amount_cents, 0);
}

/* Drains the results, sleeping on our eventfd as the writer does. */
static void drain_results(int wait_ms)
{
	struct fs_cmd c;
	uint32_t got = 0;
	while (fs_ring_dequeue_burst(&H.port.cmds, &c, 1) == 1) {
		assert_int_equal(c.type, FS_CMD_PAY_RESULT);
		assert_true(c.ref > 0 && c.ref < H.next_order);
		assert_int_equal(H.results[c.ref], 0);   /* one outcome per order */
		assert_true(c.pay >= FS_PAY_OK && c.pay <= FS_PAY_INVALID);
		assert_true(c.text_len < sizeof H.reasons[0]);
		H.results[c.ref] = c.pay;
		memcpy(H.reasons[c.ref], c.text, c.text_len);
		H.reasons[c.ref][c.text_len] = 0;
		got++;
	}
	if (got || wait_ms == 0)
		return;
	atomic_store(&H.writer_waker.sleeping, 1);
	if (fs_ring_count(&H.port.cmds) == 0) {
		struct pollfd pf = { .fd = H.writer_waker.fd, .events = POLLIN };
		poll(&pf, 1, wait_ms);
	}
	atomic_store(&H.writer_waker.sleeping, 0);
	uint64_t v;
	ssize_t r = read(H.writer_waker.fd, &v, sizeof v);
	(void)r;
}

static int outcome_of(uint64_t order_no)
{
	int64_t until = mono_ms() + WAIT_MS_MAX;
	while (H.results[order_no] == 0 && mono_ms() < until)
		drain_results(50);
	assert_int_not_equal(H.results[order_no], 0);
	return H.results[order_no];
}

static void wait_all(void)
{
	int64_t until = mono_ms() + WAIT_MS_MAX;
	while (atomic_load(&H.outstanding) != 0 && mono_ms() < until)
		drain_results(50);
	drain_results(0);
	assert_int_equal(atomic_load(&H.outstanding), 0);
	for (uint64_t o = 1; o < H.next_order; o++)
		assert_int_not_equal(H.results[o], 0);
}

static int wait_open(uint32_t want)
{
	int64_t until = mono_ms() + WAIT_MS_MAX;
	while (atomic_load(&H.payments_open) != want && mono_ms() < until) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return atomic_load(&H.payments_open) == want;
}

/* ---- pay_test_token ------------------------------------------------------- */

static int tt(const char *s, uint32_t *delay)
{
	return pay_test_token(s, strlen(s), delay);
}

static void test_token_families(void **state)
{
	(void)state;
	uint32_t d = 7;
	assert_int_equal(tt("tok_ok", &d), FS_PAY_OK);
	assert_int_equal(d, 0);
	assert_int_equal(tt("tok_ok_visa_4242", &d), FS_PAY_OK);
	assert_int_equal(tt("tok_decline", &d), FS_PAY_DECLINED);
	assert_int_equal(tt("tok_declined_insufficient", &d), FS_PAY_DECLINED);
	assert_int_equal(tt("tok_down", &d), FS_PAY_ERROR);
	assert_int_equal(tt("tok_down_forever", &d), FS_PAY_ERROR);
	d = 7;
	assert_int_equal(tt("tok_slow_250", &d), 0);
	assert_int_equal(d, 250);
	assert_int_equal(tt("tok_slow_0", &d), 0);
	assert_int_equal(d, 0);
	assert_int_equal(tt("tok_slow_30x", &d), 0);     /* digits, then anything */
	assert_int_equal(d, 30);
	assert_int_equal(tt("tok_slow_99999999999", &d), 0);
	assert_true(d >= 600000 && d < 6000000);           /* bounded, no overflow */
	assert_int_equal(tt("tok_slow_", &d), FS_PAY_INVALID);
	assert_int_equal(tt("tok_slow_x", &d), FS_PAY_INVALID);
	assert_int_equal(tt("tok_slow", &d), FS_PAY_INVALID);
	assert_int_equal(tt("visa_4242", &d), FS_PAY_INVALID);
	assert_int_equal(tt("", &d), FS_PAY_INVALID);
	assert_int_equal(tt("tok_", &d), FS_PAY_INVALID);
	assert_int_equal(tt("TOK_OK", &d), FS_PAY_INVALID);
	assert_int_equal(tt(" tok_ok", &d), FS_PAY_INVALID);
	/* the length bounds the token: "tok_o" of "tok_ok" */
	assert_int_equal(pay_test_token("tok_ok", 5, &d), FS_PAY_INVALID);
	assert_int_equal(pay_test_token("tok_slow_12", 10, &d), 0);
	assert_int_equal(d, 1);
}

/* ---- the thread with the test provider ---------------------------------- */

static void test_provider_outcomes(void **state)
{
	(void)state;
	struct pay_config cfg = { .retry_count_max = 3, .retry_backoff_ms = 1, .breaker_failures = 100 };
	harness_start(&cfg);
	uint64_t ok = charge("tok_ok", "alice", 1999);
	uint64_t dec = charge("tok_decline", "bob", 1999);
	uint64_t inv = charge("visa_4242", "carol", 1999);
	uint64_t slow = charge("tok_slow_50", "dave", 1999);
	uint64_t down = charge("tok_down", "erin", 1999);
	wait_all();
	assert_int_equal(H.results[ok], FS_PAY_OK);
	assert_string_equal(H.reasons[ok], "charged");
	assert_int_equal(H.results[dec], FS_PAY_DECLINED);
	assert_string_equal(H.reasons[dec], "card_declined");
	assert_int_equal(H.results[inv], FS_PAY_INVALID);
	assert_string_equal(H.reasons[inv], "invalid_token");
	assert_int_equal(H.results[slow], FS_PAY_OK);
	assert_int_equal(H.results[down], FS_PAY_ERROR);
	assert_string_equal(H.reasons[down], "provider_unavailable");
	struct pay_stats s;
	pay_stats_get(H.p, &s);
	assert_int_equal(s.charges, 5);
	assert_int_equal(s.attempts, 4 + 3);         /* tok_down: retry_count_max attempts */
	assert_int_equal(s.attempt_errors, 3);
	assert_int_equal(s.paid, 2);
	assert_int_equal(s.declined, 1);
	assert_int_equal(s.invalid, 1);
	assert_int_equal(s.unavailable, 1);
	assert_int_equal(s.in_flight, 0);
	assert_int_equal(s.breaker_opened, 0);
	harness_stop();
}

/* More charges than fit at once: the slot table (the ring's capacity)
 * bounds what is held; every one is answered. */
static void test_many_slow_in_flight(void **state)
{
	(void)state;
	struct pay_config cfg = { 0 };
	harness_start(&cfg);
	uint32_t n = 0;
	for (int round = 0; round < 3; round++) {
		for (int i = 0; i < CHARGE_SLOTS - 8; i++, n++)
			charge("tok_slow_100", "many", 100);
		wait_all();
	}
	struct pay_stats s;
	pay_stats_get(H.p, &s);
	assert_int_equal(s.charges, n);
	assert_int_equal(s.paid, n);
	assert_int_equal(s.attempts, n);
	for (uint64_t o = 1; o < H.next_order; o++)
		assert_int_equal(H.results[o], FS_PAY_OK);
	harness_stop();
}

static void wait_opened(uint64_t n)
{
	struct pay_stats s;
	int64_t until = mono_ms() + WAIT_MS_MAX;
	do
		pay_stats_get(H.p, &s);
	while (s.breaker_opened < n && mono_ms() < until);
	assert_int_equal(s.breaker_opened, n);
}

/* breaker_failures = 2 orders in a row failed as unavailable; each tok_down
 * charge makes retry_count_max = 3 attempts first. */
static void test_breaker(void **state)
{
	(void)state;
	struct pay_config cfg = { .retry_count_max = 3, .retry_backoff_ms = 1, .breaker_failures = 2,
	                          .breaker_open_ms = 50 };
	harness_start(&cfg);
	struct pay_stats s;

	/* one failed order: below the threshold, the breaker stays closed */
	assert_int_equal(outcome_of(charge("tok_down", "u", 1)), FS_PAY_ERROR);
	pay_stats_get(H.p, &s);
	assert_int_equal(s.attempts, 3);
	assert_int_equal(s.breaker_opened, 0);
	assert_int_equal(s.breaker, PAY_BREAKER_CLOSED);
	assert_int_equal(atomic_load(&H.payments_open), 1);

	/* the second one opens it (after its own 3 attempts) */
	assert_int_equal(outcome_of(charge("tok_down", "u", 1)), FS_PAY_ERROR);
	pay_stats_get(H.p, &s);
	assert_int_equal(s.attempts, 6);
	assert_int_equal(s.breaker_opened, 1);

	/* after the cooldown it half-opens: payments_open is 1 again */
	assert_true(wait_open(1));
	pay_stats_get(H.p, &s);
	assert_int_equal(s.breaker, PAY_BREAKER_HALF_OPEN);

	/* each attempt of a failing order is a probe that opens it again; the
	 * order still gets its 3 attempts, one per half-open */
	assert_int_equal(outcome_of(charge("tok_down", "u", 1)), FS_PAY_ERROR);
	pay_stats_get(H.p, &s);
	assert_int_equal(s.attempts, 9);
	assert_int_equal(s.attempt_errors, 9);
	assert_int_equal(s.breaker_opened, 4);

	/* a successful probe closes it */
	assert_true(wait_open(1));
	assert_int_equal(outcome_of(charge("tok_ok", "u", 1)), FS_PAY_OK);
	pay_stats_get(H.p, &s);
	assert_int_equal(s.breaker, PAY_BREAKER_CLOSED);
	assert_int_equal(s.breaker_opened, 4);

	/* an answer in between starts the count again */
	assert_int_equal(outcome_of(charge("tok_down", "u", 1)), FS_PAY_ERROR);
	assert_int_equal(outcome_of(charge("tok_decline", "u", 1)), FS_PAY_DECLINED);
	assert_int_equal(outcome_of(charge("tok_down", "u", 1)), FS_PAY_ERROR);
	pay_stats_get(H.p, &s);
	assert_int_equal(s.breaker_opened, 4);
	assert_int_equal(s.breaker, PAY_BREAKER_CLOSED);

	/* one more opens it; a charge handed over now is not failed by the
	 * breaker: it waits, goes out as a probe, and is paid */
	uint64_t d = charge("tok_down", "u", 1);
	assert_int_equal(outcome_of(d), FS_PAY_ERROR);
	wait_opened(5);
	uint64_t ok = charge("tok_ok", "u", 1);
	assert_int_equal(outcome_of(ok), FS_PAY_OK);
	wait_all();
	pay_stats_get(H.p, &s);
	assert_int_equal(s.breaker, PAY_BREAKER_CLOSED);
	assert_int_equal(s.breaker_opened, 5);
	assert_int_equal(atomic_load(&H.payments_open), 1);
	harness_stop();
}

/* ---- a fake HTTP provider ---------------------------------------------------- */

#define FAKE_CONNS 128
#define FAKE_KEYS  1024

struct fake_conn {
	int fd;
	size_t in_len;
	char in[8192];
	int64_t answer_at;      /* INT64_MAX: never (tok_hang) */
	int pending;
	char out[1024];
	size_t out_len;
	int close_after;
};

struct fake_key {
	char key[40];
	char order_id[40];
	char token[80];
	char user[80];
	char body[600];
	uint32_t attempts;
	uint32_t charged;
};

struct fake {
	int lfd;
	uint16_t port;
	pthread_t thread;
	_Atomic int stop;
	pthread_mutex_t mu;
	int close_after_answer;         /* close every connection after answering (no header) */
	struct fake_conn conns[FAKE_CONNS];
	struct fake_key keys[FAKE_KEYS];
	uint32_t key_count;
	uint32_t accepted;
	uint32_t requests;
	uint32_t pending_now, pending_max;
};

static struct fake F;

static struct fake_key *fake_key_get(const char *key)
{
	for (uint32_t i = 0; i < F.key_count; i++)
		if (strcmp(F.keys[i].key, key) == 0)
			return &F.keys[i];
	assert_true(F.key_count < FAKE_KEYS);
	struct fake_key *k = &F.keys[F.key_count++];
	snprintf(k->key, sizeof k->key, "%s", key);
	return k;
}

/* Copies the header value or JSON string member after `name`. */
static void grab(const char *s, const char *name, char *out, size_t cap, char stop)
{
	out[0] = 0;
	const char *p = strstr(s, name);
	if (p == NULL)
		return;
	p += strlen(name);
	size_t n = 0;
	while (*p && *p != stop && *p != '\r' && n + 1 < cap) {
		if (stop == '"' && *p == '\\' && p[1])
			p++;
		out[n++] = *p++;
	}
	out[n] = 0;
}

static void fake_answer(struct fake_conn *c, int status, const char *body, int chunked)
{
	const char *reason = status == 200 ? "OK" : status == 402 ? "Payment Required" :
	                     status == 409 ? "Conflict" : "Error";
	if (chunked) {
		size_t half = strlen(body) / 2;
		c->out_len = (size_t)snprintf(c->out, sizeof c->out,
		    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
		    "%zx\r\n%.*s\r\n%zx;ext=1\r\n%s\r\n0\r\n\r\n", status, reason,
		    half, (int)half, body, strlen(body) - half, body + half);
	} else if (c->close_after == 2) {   /* close-delimited, HTTP/1.0 */
		c->out_len = (size_t)snprintf(c->out, sizeof c->out,
		    "HTTP/1.0 %d %s\r\nContent-Type: application/json\r\n\r\n%s", status, reason, body);
	} else {
		c->out_len = (size_t)snprintf(c->out, sizeof c->out,
		    "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n%s\r\n%s",
		    status, reason, strlen(body), c->close_after ? "Connection: close\r\n" : "", body);
	}
}

/* Decides the answer to one whole request by its token (see the list at the
 * top of the file). Returns 0, or -1 to drop the connection unanswered. */
static int fake_request(struct fake_conn *c, const char *req, int64_t now)
{
	char key[40], token[80], user[80], order_id[40];
	grab(req, "\r\nIdempotency-Key: ", key, sizeof key, '\r');
	const char *body = strstr(req, "\r\n\r\n");
	assert_non_null(body);
	body += 4;
	grab(body, "\"payment_token\":\"", token, sizeof token, '"');
	grab(body, "\"user\":\"", user, sizeof user, '"');
	grab(body, "\"order_id\":\"", order_id, sizeof order_id, '"');
	pthread_mutex_lock(&F.mu);
	F.requests++;
	struct fake_key *k = fake_key_get(key);
	k->attempts++;
	snprintf(k->token, sizeof k->token, "%s", token);
	snprintf(k->user, sizeof k->user, "%s", user);
	snprintf(k->order_id, sizeof k->order_id, "%s", order_id);
	snprintf(k->body, sizeof k->body, "%s", body);
	uint32_t attempts = k->attempts, charged = k->charged;
	pthread_mutex_unlock(&F.mu);
	c->answer_at = now;
	c->close_after = F.close_after_answer;
	int status = 200, chunked = 0;
	const char *answer = "{\"status\":\"charged\"}";
	if (strncmp(token, "tok_hang", 8) == 0) {
		c->answer_at = INT64_MAX;
		c->pending = 1;
		return 0;
	}
	if (strncmp(token, "tok_decline", 11) == 0) {
		status = 402;
		answer = "{\"status\":\"declined\",\"reason\":\"card_declined\"}";
	} else if (strncmp(token, "tok_invalid", 11) == 0) {
		status = 402;
		answer = "{\"reason\":\"invalid_token\",\"status\":\"declined\",\"extra\":{\"reason\":\"x\"}}";
	} else if (strncmp(token, "tok_500", 7) == 0) {
		status = 500;
		answer = "{\"error\":\"internal\"}";
	} else if (strncmp(token, "tok_bad200", 10) == 0) {
		answer = "{\"status\":\"maybe\"}";
	} else if (strncmp(token, "tok_flaky", 9) == 0 && attempts == 1) {
		status = 503;
		answer = "{}";
	} else if (strncmp(token, "tok_lostmany", 12) == 0 && attempts <= 6) {
		pthread_mutex_lock(&F.mu);
		k->charged += k->charged == 0;   /* charged once; six answers in a row lost */
		pthread_mutex_unlock(&F.mu);
		return -1;
	} else if (strncmp(token, "tok_lost", 8) == 0 && attempts == 1) {
		pthread_mutex_lock(&F.mu);
		k->charged++;      /* charged, and the answer never arrives */
		pthread_mutex_unlock(&F.mu);
		return -1;
	} else if (charged) {
		status = 409;
		answer = "{\"status\":\"already_charged\"}";
	} else {
		if (strncmp(token, "tok_chunked", 11) == 0)
			chunked = 1;
		if (strncmp(token, "tok_http10", 10) == 0)
			c->close_after = 2;
		if (strncmp(token, "tok_slow_", 9) == 0)
			c->answer_at = now + atoi(token + 9);
		pthread_mutex_lock(&F.mu);
		k->charged++;
		pthread_mutex_unlock(&F.mu);
	}
	fake_answer(c, status, answer, chunked);
	c->pending = 1;
	return 0;
}

static void fake_drop(struct fake_conn *c)
{
	if (c->pending) {
		pthread_mutex_lock(&F.mu);
		F.pending_now--;
		pthread_mutex_unlock(&F.mu);
	}
	close(c->fd);
	c->fd = -1;
	c->pending = 0;
	c->in_len = 0;
}

static void fake_read(struct fake_conn *c, int64_t now)
{
	ssize_t n = recv(c->fd, c->in + c->in_len, sizeof c->in - 1 - c->in_len, MSG_DONTWAIT);
	if (n == 0 || (n < 0 && errno != EAGAIN)) {
		fake_drop(c);
		return;
	}
	if (n < 0)
		return;
	c->in_len += (size_t)n;
	c->in[c->in_len] = 0;
	char *head_end = strstr(c->in, "\r\n\r\n");
	if (head_end == NULL || c->pending)
		return;
	char cl[16];
	grab(c->in, "\r\nContent-Length: ", cl, sizeof cl, '\r');
	size_t whole = (size_t)(head_end + 4 - c->in) + (size_t)atoi(cl);
	if (c->in_len < whole)
		return;
	assert_int_equal(c->in_len, whole);   /* one request at a time per connection */
	pthread_mutex_lock(&F.mu);
	if (++F.pending_now > F.pending_max)
		F.pending_max = F.pending_now;
	pthread_mutex_unlock(&F.mu);
	c->pending = 1;
	if (fake_request(c, c->in, now) != 0)
		fake_drop(c);
}

static void *fake_main(void *arg)
{
	(void)arg;
	struct pollfd pf[FAKE_CONNS + 1];
	while (!atomic_load(&F.stop)) {
		int64_t now = mono_ms(), next = now + 20;
		for (int i = 0; i < FAKE_CONNS; i++) {
			struct fake_conn *c = &F.conns[i];
			if (c->fd < 0 || !c->pending || c->answer_at > now)
				continue;
			ssize_t w = send(c->fd, c->out, c->out_len, MSG_NOSIGNAL);
			(void)w;
			pthread_mutex_lock(&F.mu);
			F.pending_now--;
			pthread_mutex_unlock(&F.mu);
			c->pending = 0;
			c->in_len = 0;
			if (c->close_after)
				fake_drop(c);
		}
		uint32_t n = 0;
		pf[n++] = (struct pollfd){ .fd = F.lfd, .events = POLLIN };
		for (int i = 0; i < FAKE_CONNS; i++) {
			struct fake_conn *c = &F.conns[i];
			pf[n++] = (struct pollfd){ .fd = c->fd, .events = POLLIN };
			if (c->fd >= 0 && c->pending && c->answer_at < next)
				next = c->answer_at;
		}
		int wait = (int)(next - now);
		poll(pf, n, wait < 0 ? 0 : wait);
		now = mono_ms();
		if (pf[0].revents & POLLIN) {
			int fd = accept(F.lfd, NULL, NULL);
			if (fd >= 0) {
				int i = 0;
				while (i < FAKE_CONNS && F.conns[i].fd >= 0)
					i++;
				assert_true(i < FAKE_CONNS);
				memset(&F.conns[i], 0, sizeof F.conns[i]);
				F.conns[i].fd = fd;
				pthread_mutex_lock(&F.mu);
				F.accepted++;
				pthread_mutex_unlock(&F.mu);
			}
		}
		for (int i = 0; i < FAKE_CONNS; i++)
			if (F.conns[i].fd >= 0 && pf[i + 1].revents)
				fake_read(&F.conns[i], now);
	}
	for (int i = 0; i < FAKE_CONNS; i++)
		if (F.conns[i].fd >= 0)
			close(F.conns[i].fd);
	return NULL;
}

static void fake_start(int close_after_answer)
{
	memset(&F, 0, sizeof F);
	pthread_mutex_init(&F.mu, NULL);
	F.close_after_answer = close_after_answer;
	for (int i = 0; i < FAKE_CONNS; i++)
		F.conns[i].fd = -1;
	F.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(F.lfd >= 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(F.lfd, (struct sockaddr *)&a, sizeof a), 0);
	assert_int_equal(listen(F.lfd, 256), 0);
	socklen_t al = sizeof a;
	getsockname(F.lfd, (struct sockaddr *)&a, &al);
	F.port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&F.thread, NULL, fake_main, NULL), 0);
}

static void fake_stop(void)
{
	atomic_store(&F.stop, 1);
	pthread_join(F.thread, NULL);
	close(F.lfd);
}

static struct fake_key *fake_find(uint64_t order_no)
{
	char id[FS_PUBID_LEN + 1];
	fs_pubid_format(id, 'o', order_no);
	pthread_mutex_lock(&F.mu);
	struct fake_key *k = NULL;
	for (uint32_t i = 0; i < F.key_count; i++)
		if (strcmp(F.keys[i].key, id) == 0)
			k = &F.keys[i];
	pthread_mutex_unlock(&F.mu);
	assert_non_null(k);
	if (k == NULL)
		abort();
	return k;
}

static void http_start_with(struct pay_config *cfg, const char *path)
{
	char url[128];
	snprintf(url, sizeof url, "http://127.0.0.1:%u%s", F.port, path);
	cfg->provider_url = url;
	harness_start(cfg);   /* the provider copies what it needs from the URL */
}

/* ---- HTTP provider tests ------------------------------------------------------- */

static void test_http_contract(void **state)
{
	(void)state;
	fake_start(0);
	struct pay_config cfg = { .retry_count_max = 3, .retry_backoff_ms = 1, .breaker_failures = 1000,
	                          .attempt_timeout_ms = 300 };
	http_start_with(&cfg, "/v1/charge");
	uint64_t ok = charge("tok_ok", "al\"ice\\", 1999);
	uint64_t dec = charge("tok_decline", "bob", 500);
	uint64_t inv = charge("tok_invalid", "carol", 500);
	uint64_t e500 = charge("tok_500", "dave", 500);
	uint64_t flaky = charge("tok_flaky", "erin", 500);
	uint64_t lost = charge("tok_lost", "frank", 500);
	uint64_t bad = charge("tok_bad200", "hal", 500);
	uint64_t chunk = charge("tok_chunked", "ivy", 500);
	uint64_t h10 = charge("tok_http10", "jo", 500);
	wait_all();
	assert_int_equal(H.results[ok], FS_PAY_OK);
	assert_int_equal(H.results[dec], FS_PAY_DECLINED);
	assert_string_equal(H.reasons[dec], "card_declined");
	assert_int_equal(H.results[inv], FS_PAY_INVALID);
	assert_string_equal(H.reasons[inv], "invalid_token");
	assert_int_equal(H.results[e500], FS_PAY_ERROR);
	assert_string_equal(H.reasons[e500], "provider_unavailable");
	assert_int_equal(H.results[flaky], FS_PAY_OK);
	assert_int_equal(H.results[lost], FS_PAY_OK);      /* the retry got 409: already charged */
	assert_int_equal(H.results[bad], FS_PAY_ERROR);
	assert_int_equal(H.results[chunk], FS_PAY_OK);
	assert_int_equal(H.results[h10], FS_PAY_OK);
	harness_stop();
	fake_stop();

	/* what the provider saw: the key is the order id on every attempt */
	struct fake_key *k = fake_find(ok);
	assert_string_equal(k->order_id, k->key);
	assert_string_equal(k->user, "al\"ice\\");
	assert_string_equal(k->token, "tok_ok");
	assert_non_null(strstr(k->body, "\"amount_cents\":1999,\"currency\":\"USD\""));
	assert_int_equal(k->attempts, 1);
	assert_int_equal(fake_find(e500)->attempts, 3);
	assert_int_equal(fake_find(flaky)->attempts, 2);
	assert_int_equal(fake_find(lost)->attempts, 2);
	assert_int_equal(fake_find(dec)->attempts, 1);
	for (uint32_t i = 0; i < F.key_count; i++)
		assert_true(F.keys[i].charged <= 1);   /* attempts repeat, charges never */
	assert_int_equal(fake_find(lost)->charged, 1);
	assert_int_equal(fake_find(dec)->charged, 0);
}

/* Attempts the fake provider saw for an order, read under its lock (its
 * thread is still serving). */
static uint32_t fake_attempts(uint64_t order_no)
{
	struct fake_key *k = fake_find(order_no);
	pthread_mutex_lock(&F.mu);
	uint32_t n = k->attempts;
	pthread_mutex_unlock(&F.mu);
	return n;
}

/* Attempts whose outcome is unknown (the request left, no answer came):
 * the order is never concluded FAILED. Answers lost six times in a row
 * (more than retry_count_max) end PAID on the 409, charged once; a provider
 * that never answers keeps the order PENDING, asked again and again. */
static void test_http_unknown_never_failed(void **state)
{
	(void)state;
	fake_start(0);
	struct pay_config cfg = { .retry_count_max = 3, .retry_backoff_ms = 1, .breaker_failures = 1000,
	                          .attempt_timeout_ms = 100 };
	http_start_with(&cfg, "/v1/charge");
	uint64_t lost = charge("tok_lostmany", "kim", 700);
	uint64_t hang = charge("tok_hang", "gina", 500);
	assert_int_equal(outcome_of(lost), FS_PAY_OK);
	int64_t until = mono_ms() + WAIT_MS_MAX;
	while (fake_attempts(hang) < 6 && mono_ms() < until)
		drain_results(50);
	assert_true(fake_attempts(hang) >= 6);   /* past retry_count_max, still asked */
	drain_results(0);
	assert_int_equal(H.results[hang], 0);          /* no outcome: still PENDING */
	struct pay_stats s;
	pay_stats_get(H.p, &s);
	assert_int_equal(s.kept_pending, 2);
	assert_int_equal(s.unavailable, 0);
	assert_int_equal(s.in_flight, 1);
	harness_stop();
	fake_stop();
	assert_int_equal(fake_find(lost)->charged, 1);
	assert_true(fake_find(lost)->attempts >= 7);
	assert_int_equal(fake_find(hang)->charged, 0);
}

/* One charge after another: the connection is kept alive and reused. A
 * provider that closes after every answer costs a fresh connection each
 * time, never an attempt. */
static void test_http_keep_alive(void **state)
{
	(void)state;
	for (int closing = 0; closing < 2; closing++) {
		fake_start(closing);
		struct pay_config cfg = { .retry_count_max = 3, .retry_backoff_ms = 1 };
		http_start_with(&cfg, "/charge");
		for (int i = 0; i < 5; i++)
			assert_int_equal(outcome_of(charge("tok_ok", "k", 1)), FS_PAY_OK);
		struct pay_stats s;
		pay_stats_get(H.p, &s);
		assert_int_equal(s.attempts, 5);
		assert_int_equal(s.attempt_errors, 0);
		harness_stop();
		fake_stop();
		assert_int_equal(F.requests, 5);
		if (!closing)
			assert_int_equal(F.accepted, 1);
	}
}

/* Many slow charges at once on a pool of 8 connections: all answered, never
 * more than 8 requests at the provider at a time, several in parallel. */
static void test_http_many_in_flight(void **state)
{
	(void)state;
	fake_start(0);
	struct pay_config cfg = { .connection_count_max = 8, .attempt_timeout_ms = 20000 };
	http_start_with(&cfg, "/charge");
	for (int i = 0; i < 64; i++)
		charge("tok_slow_100", "m", 1);
	wait_all();
	struct pay_stats s;
	pay_stats_get(H.p, &s);
	assert_int_equal(s.paid, 64);
	assert_int_equal(s.attempts, 64);
	harness_stop();
	fake_stop();
	assert_true(F.pending_max <= 8);
	assert_true(F.pending_max >= 2);
	assert_true(F.accepted <= 8);
	for (uint32_t i = 0; i < F.key_count; i++)
		assert_int_equal(F.keys[i].charged, 1);
}

/* Nothing listens: connection errors, retries, provider_unavailable, and the
 * breaker opens. */
static void test_http_refused_opens_breaker(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t al = sizeof a;
	getsockname(fd, (struct sockaddr *)&a, &al);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u/charge", ntohs(a.sin_port));
	struct pay_config cfg = { .provider_url = url, .retry_count_max = 3, .retry_backoff_ms = 1,
	                          .breaker_failures = 1, .breaker_open_ms = 60000 };
	harness_start(&cfg);   /* bound, not listening: connect is refused */
	assert_int_equal(outcome_of(charge("tok_ok", "r", 1)), FS_PAY_ERROR);
	struct pay_stats s;
	pay_stats_get(H.p, &s);
	assert_int_equal(s.attempts, 3);
	assert_int_equal(s.breaker_opened, 1);
	assert_int_equal(s.breaker, PAY_BREAKER_OPEN);
	assert_int_equal(atomic_load(&H.payments_open), 0);
	harness_stop();
	close(fd);
}

/* A charge re-issued after a restart may have been charged by the last
 * run: refused connections alone never fail it. A fresh charge with the same
 * errors fails as unavailable after retry_count_max attempts. */
static void test_reissued_refused_stays_pending(void **state)
{
	(void)state;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
	socklen_t al = sizeof a;
	getsockname(fd, (struct sockaddr *)&a, &al);
	char url[64];
	snprintf(url, sizeof url, "http://127.0.0.1:%u/charge", ntohs(a.sin_port));
	struct pay_config cfg = { .provider_url = url, .retry_count_max = 3, .retry_backoff_ms = 1,
	                          .breaker_failures = 1000000 };
	harness_start(&cfg);   /* bound, not listening: connect is refused */
	uint64_t again = charge_as("tok_ok", "r", 1, 1);
	uint64_t fresh = charge("tok_ok", "s", 1);
	assert_int_equal(outcome_of(fresh), FS_PAY_ERROR);
	struct pay_stats s;
	int64_t until = mono_ms() + WAIT_MS_MAX;
	do {
		drain_results(20);
		pay_stats_get(H.p, &s);
	} while (s.attempts < 3 + 6 && mono_ms() < until);
	assert_true(s.attempts >= 3 + 6);
	assert_int_equal(H.results[again], 0);
	assert_int_equal(s.kept_pending, 1);
	assert_int_equal(s.unavailable, 1);
	harness_stop();
	close(fd);
}

static void test_provider_url_check(void **state)
{
	(void)state;
	char err[256];
	assert_int_equal(pay_provider_check("http://127.0.0.1:8099/charge", err, sizeof err), 0);
	assert_int_equal(pay_provider_check("http://127.0.0.1", err, sizeof err), 0);
	assert_int_equal(pay_provider_check("http://[::1]:80/x", err, sizeof err), 0);
	assert_int_equal(pay_provider_check("http://localhost:9/", err, sizeof err), 0);
	assert_int_equal(pay_provider_check("https://pay.example/charge", err, sizeof err), -1);
	assert_non_null(strstr(err, "https"));
	assert_int_equal(pay_provider_check("ftp://x/", err, sizeof err), -1);
	assert_int_equal(pay_provider_check("http://", err, sizeof err), -1);
	assert_int_equal(pay_provider_check("http://h:99999/", err, sizeof err), -1);
	assert_int_equal(pay_provider_check("http://h:0/", err, sizeof err), -1);
	assert_int_equal(pay_provider_check("http://h:12a/", err, sizeof err), -1);
	assert_int_equal(pay_provider_check("http://127.0.0.1/a b", err, sizeof err), -1);
	struct pay_config cfg = { .provider_url = "https://x/" };
	struct fs_waker w = { .fd = -1 };
	struct fs_port port;
	_Atomic uint64_t out = 0;
	_Atomic uint32_t open = 0;
	_Alignas(64) uint8_t mem[2 * sizeof(struct wr_charge)];
	struct fs_ring r;
	fs_ring_init(&r, mem, 2, sizeof(struct wr_charge));
	cfg.charges = &r;
	cfg.waker = &w;
	cfg.port = &port;
	cfg.outstanding = &out;
	cfg.payments_open = &open;
	assert_null(pay_start(&cfg));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_token_families),
		cmocka_unit_test(test_provider_outcomes),
		cmocka_unit_test(test_many_slow_in_flight),
		cmocka_unit_test(test_breaker),
		cmocka_unit_test(test_http_contract),
		cmocka_unit_test(test_http_keep_alive),
		cmocka_unit_test(test_http_many_in_flight),
		cmocka_unit_test(test_http_refused_opens_breaker),
		cmocka_unit_test(test_http_unknown_never_failed),
		cmocka_unit_test(test_reissued_refused_stays_pending),
		cmocka_unit_test(test_provider_url_check),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
