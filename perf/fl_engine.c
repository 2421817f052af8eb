/* fl_engine.c - flashload's per-thread epoll loops (see fl_engine.h).
 *
 * Each thread owns its connections, its schedule and its histograms; the
 * only shared state is the per-second series, merged under a mutex once a
 * second per thread, and the final totals, merged after join. Allocation
 * happens before the clock starts; the loop itself does none.
 */
#include "fl_engine.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "http_resp.h"
#include "load_rate.h"

#define FL_IN_CAP        (64 * 1024)
#define FL_OUT_CAP       (64 * 1024)
#define FL_REQ_LEN_MAX   2048            /* one request, token included */
#define FL_TICK_NS       (10 * 1000 * 1000ull)
#define FL_EVENTS_MAX    256
#define FL_RES_ID_MAX    72
#define NS_PER_S         1000000000ull

volatile sig_atomic_t fl_stop;

enum conn_state { CONN_DEAD, CONN_CONNECTING, CONN_READY };

struct fl_conn {
	int      fd;
	enum conn_state state;
	uint32_t index;
	struct lr_inflight inflight;
	uint64_t progress_ns;             /* last send or answer: timeouts */
	uint32_t user;                    /* of the reservation to check out */
	size_t   in_len;
	size_t   out_len, out_off;
	bool     want_out;                /* EPOLLOUT armed */
	char     in[FL_IN_CAP];
	char     out[FL_OUT_CAP];
};

struct fl_series {
	pthread_mutex_t lock;
	uint32_t count;
	struct fl_second *seconds;
};

struct fl_thread {
	const struct fl_config *cfg;
	unsigned id;
	pthread_t tid;
	int epfd;
	struct fl_conn *conns;
	unsigned conn_count;
	unsigned cursor;                  /* round robin for open-loop dispatch */
	bool open_loop;
	struct lr_sched sched;
	uint64_t start_ns, end_ns;
	uint64_t seq;                     /* Idempotency-Key counter */
	uint64_t rng;
	uint64_t last_tick_ns;
	uint64_t last_answer_ns;
	bool starved;                     /* open loop: due requests, no free slot */
	uint32_t sec_index;
	uint64_t sec_answers, sec_errors;
	struct hist sec_hist;
	struct fl_series *series;
	struct fl_results res;
	int err;
};

/* ---- small helpers ---------------------------------------------------- */

uint64_t fl_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;   /* xorshift64 */
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

const char *fl_err_name(enum fl_err e)
{
	static const char *names[FL_E_COUNT] = {
		"connect", "read", "write", "parse", "lost", "timeout", "no_reservation_id" };
	assert(e < FL_E_COUNT);
	return names[e];
}

const char *fl_op_name(enum fl_op op)
{
	static const char *names[FL_OP_COUNT] = { "read", "reserve", "checkout" };
	assert(op < FL_OP_COUNT);
	return names[op];
}

void fl_config_default(struct fl_config *c)
{
	memset(c, 0, sizeof(*c));
	c->addr.sin_family = AF_INET;
	c->addr.sin_port = htons(8080);
	c->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	snprintf(c->host, sizeof(c->host), "127.0.0.1:8080");
	c->connections = 10;
	c->threads = 1;
	c->pipeline = 1;
	c->duration_s = 10.0;
	c->scenario = FL_SC_READS;
	c->mixed_reserve_pct = 5;
	snprintf(c->sku, sizeof(c->sku), "demo");
	snprintf(c->payment_token, sizeof(c->payment_token), "tok_slow_200");
	c->timeout_ns = 10 * NS_PER_S;
	c->drain_ns = 2 * NS_PER_S;
	c->start_delay_ns = 100 * 1000 * 1000ull;
}

const char *fl_config_check(const struct fl_config *c)
{
	if (c->threads < 1 || c->threads > FL_THREADS_MAX)
		return "--threads must be 1..64";
	if (c->connections < c->threads || c->connections > FL_CONNS_MAX)
		return "--connections must be >= --threads and <= 20000";
	if (c->pipeline < 1 || c->pipeline > FL_PIPELINE_MAX)
		return "--pipeline must be 1..32";
	if (!(c->duration_s > 0.0 && c->duration_s <= FL_DURATION_S_MAX))
		return "--duration must be in (0, 600] seconds";
	if (c->rate_per_s < 0.0 || c->rate_per_s > 1e8)
		return "--rate must be 0 (closed loop) .. 1e8";
	if (c->scenario != FL_SC_READS && c->users == 0)
		return "this scenario needs tokens (--users and --jwt-secret-file)";
	if (c->scenario == FL_SC_CHECKOUT && c->pipeline != 1)
		return "--scenario checkout needs --pipeline 1";
	if (c->mixed_reserve_pct > 100)
		return "mixed reservation share must be 0..100";
	return NULL;
}

/* ---- requests --------------------------------------------------------- */

static const char *token_of(const struct fl_thread *t, uint32_t user)
{
	assert(user < t->cfg->users);
	return t->cfg->tokens + t->cfg->token_off[user];
}

/* Appends one request to c->out; returns false when it does not fit. */
static bool build_request(struct fl_thread *t, struct fl_conn *c, enum fl_op op,
                          const char *res_id)
{
	const struct fl_config *cfg = t->cfg;
	char *dst = c->out + c->out_len;
	size_t cap = FL_OUT_CAP - c->out_len;
	if (cap > FL_REQ_LEN_MAX)
		cap = FL_REQ_LEN_MAX;
	int n;
	char sku[FL_SKU_LEN_MAX + 16];
	if (cfg->sku_count > 1)   /* many SKUs (writer shards): one at random per request */
		snprintf(sku, sizeof sku, "%s-%u", cfg->sku, (unsigned)(rng_next(&t->rng) % cfg->sku_count));
	else
		snprintf(sku, sizeof sku, "%s", cfg->sku);
	if (op == FL_OP_READ) {
		n = snprintf(dst, cap, "GET /v1/skus/%s HTTP/1.1\r\nHost: %s\r\n\r\n",
		             sku, cfg->host);
	} else if (op == FL_OP_RESERVE) {
		c->user = (uint32_t)(rng_next(&t->rng) % cfg->users);
		n = snprintf(dst, cap,
		             "POST /v1/skus/%s/reservations HTTP/1.1\r\nHost: %s\r\n"
		             "Authorization: Bearer %s\r\nIdempotency-Key: fl-%016llx-%u-%llu\r\n"
		             "Content-Type: application/json\r\nContent-Length: 14\r\n\r\n"
		             "{\"quantity\":1}",
		             sku, cfg->host, token_of(t, c->user),
		             (unsigned long long)cfg->run_id, t->id, (unsigned long long)t->seq++);
	} else {
		assert(res_id != NULL);
		char body[128];
		int body_len = snprintf(body, sizeof(body), "{\"payment_token\":\"%s\"}",
		                        cfg->payment_token);
		assert(body_len > 0 && (size_t)body_len < sizeof(body));
		n = snprintf(dst, cap,
		             "POST /v1/reservations/%s/checkout HTTP/1.1\r\nHost: %s\r\n"
		             "Authorization: Bearer %s\r\nIdempotency-Key: fl-%016llx-%u-%llu\r\n"
		             "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		             res_id, cfg->host, token_of(t, c->user),
		             (unsigned long long)cfg->run_id, t->id, (unsigned long long)t->seq++,
		             body_len, body);
	}
	if (n <= 0 || (size_t)n >= cap)
		return false;
	c->out_len += (size_t)n;
	assert(c->out_len <= FL_OUT_CAP);
	return true;
}

static enum fl_op pick_op(struct fl_thread *t)
{
	switch (t->cfg->scenario) {
	case FL_SC_READS:
		return FL_OP_READ;
	case FL_SC_RESERVE:
	case FL_SC_CHECKOUT:
		return FL_OP_RESERVE;
	case FL_SC_MIXED:
		return rng_next(&t->rng) % 100 < t->cfg->mixed_reserve_pct ? FL_OP_RESERVE
		                                                            : FL_OP_READ;
	}
	return FL_OP_READ;
}

/* ---- connections ------------------------------------------------------ */

static void count_error(struct fl_thread *t, enum fl_err e, uint64_t n)
{
	t->res.errors[e] += n;
	t->sec_errors += n;
}

static void conn_close(struct fl_thread *t, struct fl_conn *c, enum fl_err lost_as)
{
	if (c->fd >= 0) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	if (c->inflight.count > 0)
		count_error(t, lost_as, c->inflight.count);
	c->fd = -1;
	c->state = CONN_DEAD;
	c->in_len = c->out_len = c->out_off = 0;
	c->want_out = false;
	lr_inflight_reset(&c->inflight);
}

static void conn_open(struct fl_thread *t, struct fl_conn *c)
{
	assert(c->state == CONN_DEAD && c->fd < 0);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		count_error(t, FL_E_CONNECT, 1);
		return;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	int rc = connect(fd, (const struct sockaddr *)&t->cfg->addr, sizeof(t->cfg->addr));
	if (rc < 0 && errno != EINPROGRESS) {
		close(fd);
		count_error(t, FL_E_CONNECT, 1);
		return;
	}
	struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = c->index };
	if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) < 0) {
		close(fd);
		count_error(t, FL_E_CONNECT, 1);
		return;
	}
	c->fd = fd;
	c->state = CONN_CONNECTING;
	c->want_out = true;
	c->progress_ns = fl_now_ns();
	t->res.reconnects++;
}

static void conn_want_out(struct fl_thread *t, struct fl_conn *c, bool want)
{
	if (c->want_out == want)
		return;
	struct epoll_event ev = { .events = EPOLLIN | (want ? EPOLLOUT : 0u),
	                          .data.u32 = c->index };
	epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev);
	c->want_out = want;
}

/* Writes what is queued; arms EPOLLOUT on a short write. */
static void conn_flush(struct fl_thread *t, struct fl_conn *c)
{
	if (c->state != CONN_READY)
		return;
	while (c->out_off < c->out_len) {
		ssize_t n = write(c->fd, c->out + c->out_off, c->out_len - c->out_off);
		if (n > 0) {
			c->out_off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			conn_want_out(t, c, true);
			return;
		}
		conn_close(t, c, FL_E_WRITE);
		return;
	}
	c->out_off = c->out_len = 0;
	conn_want_out(t, c, false);
}

/* Queues one request with its intended send time. */
static bool conn_send(struct fl_thread *t, struct fl_conn *c, enum fl_op op,
                      uint64_t intended_ns, const char *res_id)
{
	assert(c->state == CONN_READY);
	assert(c->inflight.count < t->cfg->pipeline);
	if (!build_request(t, c, op, res_id))
		return false;
	bool ok = lr_inflight_push(&c->inflight, intended_ns, (uint8_t)op);
	assert(ok);
	t->res.sent++;
	return true;
}

static bool conn_has_slot(const struct fl_thread *t, const struct fl_conn *c)
{
	return c->state == CONN_READY && c->inflight.count < t->cfg->pipeline;
}

/* ---- answers ---------------------------------------------------------- */

static void flush_second(struct fl_thread *t)
{
	struct fl_series *s = t->series;
	if (t->sec_answers == 0 && t->sec_errors == 0)
		return;
	uint32_t i = t->sec_index < s->count ? t->sec_index : s->count - 1;
	pthread_mutex_lock(&s->lock);
	s->seconds[i].answers += t->sec_answers;
	s->seconds[i].errors += t->sec_errors;
	hist_merge(&s->seconds[i].latency, &t->sec_hist);
	pthread_mutex_unlock(&s->lock);
	hist_reset(&t->sec_hist);
	t->sec_answers = t->sec_errors = 0;
}

static void roll_second(struct fl_thread *t, uint64_t now_ns)
{
	uint32_t idx = now_ns > t->start_ns ? (uint32_t)((now_ns - t->start_ns) / NS_PER_S) : 0;
	if (idx != t->sec_index) {
		flush_second(t);
		t->sec_index = idx;
	}
}

static void record_answer(struct fl_thread *t, enum fl_op op, int status, uint64_t latency_ns)
{
	assert(op < FL_OP_COUNT && status >= 100 && status < FL_STATUS_MAX);
	hist_record(&t->res.all, latency_ns);
	hist_record(&t->res.op[op], latency_ns);
	hist_record(&t->sec_hist, latency_ns);
	t->res.status[op][status]++;
	t->res.answers++;
	t->sec_answers++;
	t->last_answer_ns = fl_now_ns();
}

/* One framed answer: records it, and for checkout chains the next step. */
static void on_answer(struct fl_thread *t, struct fl_conn *c, const struct hr_resp *r,
                      const char *body, uint64_t now_ns)
{
	uint8_t op;
	uint64_t latency_ns = lr_inflight_pop(&c->inflight, now_ns, &op);
	record_answer(t, (enum fl_op)op, r->status, latency_ns);
	c->progress_ns = now_ns;
	if (t->cfg->scenario != FL_SC_CHECKOUT || op != FL_OP_RESERVE)
		return;
	if (r->status != 200 && r->status != 201)
		return;
	char res_id[FL_RES_ID_MAX];
	if (hr_json_str(body, r->body_len, "reservation_id", res_id, sizeof(res_id)) <= 0) {
		count_error(t, FL_E_NO_RES_ID, 1);
		return;
	}
	if (!r->close && now_ns < t->end_ns + t->cfg->drain_ns)
		conn_send(t, c, FL_OP_CHECKOUT, now_ns, res_id);
}

/* Reads and frames every complete answer; closes on error or close. */
static void conn_read(struct fl_thread *t, struct fl_conn *c, uint64_t now_ns)
{
	for (int rounds = 0; rounds < 16; rounds++) {
		if (c->in_len == FL_IN_CAP) {
			conn_close(t, c, FL_E_PARSE);
			return;
		}
		ssize_t n = read(c->fd, c->in + c->in_len, FL_IN_CAP - c->in_len);
		if (n == 0) {
			conn_close(t, c, FL_E_LOST);
			return;
		}
		if (n < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return;
			conn_close(t, c, FL_E_READ);
			return;
		}
		c->in_len += (size_t)n;
		size_t off = 0;
		for (;;) {
			struct hr_resp r;
			long len = hr_parse(c->in + off, c->in_len - off, &r);
			if (len == 0)
				break;
			if (len < 0 || c->inflight.count == 0) {
				count_error(t, FL_E_PARSE, 1);
				conn_close(t, c, FL_E_LOST);
				return;
			}
			on_answer(t, c, &r, c->in + off + r.header_len, now_ns);
			off += (size_t)len;
			if (r.close) {
				conn_close(t, c, FL_E_LOST);
				return;
			}
		}
		memmove(c->in, c->in + off, c->in_len - off);
		c->in_len -= off;
		if (c->out_len > c->out_off)
			conn_flush(t, c);     /* a chained checkout */
		if (c->state != CONN_READY)
			return;
		if ((size_t)n < FL_IN_CAP / 2)
			return;
	}
}

static void conn_event(struct fl_thread *t, struct fl_conn *c, uint32_t events, uint64_t now_ns)
{
	if (c->state == CONN_CONNECTING) {
		int err = 0;
		socklen_t len = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len);
		if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
			conn_close(t, c, FL_E_CONNECT);
			count_error(t, FL_E_CONNECT, 1);
			return;
		}
		c->state = CONN_READY;
		c->progress_ns = now_ns;
		conn_want_out(t, c, false);
	}
	if (events & (EPOLLIN | EPOLLERR | EPOLLHUP))
		conn_read(t, c, now_ns);
	if (c->state == CONN_READY && (events & EPOLLOUT))
		conn_flush(t, c);
}

/* ---- scheduling ------------------------------------------------------- */

/* Closed loop: every ready connection keeps `pipeline` requests in flight. */
static void fill_closed(struct fl_thread *t, uint64_t now_ns)
{
	for (unsigned i = 0; i < t->conn_count; i++) {
		struct fl_conn *c = &t->conns[i];
		bool queued = false;
		while (conn_has_slot(t, c) && conn_send(t, c, pick_op(t), now_ns, NULL))
			queued = true;
		if (queued)
			conn_flush(t, c);
	}
}

/* Finds a connection with a free slot, round robin; NULL when none. */
static struct fl_conn *free_conn(struct fl_thread *t)
{
	for (unsigned k = 0; k < t->conn_count; k++) {
		struct fl_conn *c = &t->conns[t->cursor];
		t->cursor = (t->cursor + 1) % t->conn_count;
		if (conn_has_slot(t, c))
			return c;
	}
	return NULL;
}

/* Open loop: hands every due request to a connection with a free slot.
 * Sets t->starved when requests are due but every connection is busy (the
 * loop then sleeps until an answer frees one instead of spinning). */
static void fill_open(struct fl_thread *t, uint64_t now_ns)
{
	t->starved = false;
	for (;;) {
		struct fl_conn *c = free_conn(t);
		if (c == NULL) {
			t->starved = lr_next_ns(&t->sched) <= now_ns;
			return;
		}
		uint64_t intended_ns;
		if (!lr_take_due(&t->sched, now_ns, &intended_ns))
			return;
		conn_send(t, c, pick_op(t), intended_ns, NULL);
		conn_flush(t, c);
	}
}

/* Every tick: timeouts, reconnects. */
static void tick(struct fl_thread *t, uint64_t now_ns)
{
	for (unsigned i = 0; i < t->conn_count; i++) {
		struct fl_conn *c = &t->conns[i];
		if (c->state == CONN_DEAD) {
			if (now_ns < t->end_ns)
				conn_open(t, c);
			continue;
		}
		bool waiting = c->inflight.count > 0 || c->state == CONN_CONNECTING;
		if (waiting && now_ns - c->progress_ns > t->cfg->timeout_ns)
			conn_close(t, c, FL_E_TIMEOUT);
	}
}

static uint64_t inflight_total(const struct fl_thread *t)
{
	uint64_t n = 0;
	for (unsigned i = 0; i < t->conn_count; i++)
		n += t->conns[i].inflight.count;
	return n;
}

static uint64_t next_wake_ns(struct fl_thread *t, uint64_t now_ns)
{
	uint64_t wake = t->last_tick_ns + FL_TICK_NS;
	if (now_ns < t->start_ns && t->start_ns < wake)
		wake = t->start_ns;
	if (now_ns < t->end_ns && t->end_ns < wake)
		wake = t->end_ns;
	if (t->open_loop && !t->starved && now_ns >= t->start_ns) {
		uint64_t next = lr_next_ns(&t->sched);
		if (next < wake)
			wake = next;
	}
	return wake;
}

static void wait_events(struct fl_thread *t, uint64_t now_ns)
{
	struct epoll_event evs[FL_EVENTS_MAX];
	uint64_t wake = next_wake_ns(t, now_ns);
	uint64_t wait_ns = wake > now_ns ? wake - now_ns : 0;
	struct timespec ts = { .tv_sec = (time_t)(wait_ns / NS_PER_S),
	                       .tv_nsec = (long)(wait_ns % NS_PER_S) };
	int n = epoll_pwait2(t->epfd, evs, FL_EVENTS_MAX, &ts, NULL);
	uint64_t after_ns = fl_now_ns();
	for (int i = 0; i < n; i++) {
		assert(evs[i].data.u32 < t->conn_count);
		struct fl_conn *c = &t->conns[evs[i].data.u32];
		if (c->fd >= 0)
			conn_event(t, c, evs[i].events, after_ns);
	}
}

static void thread_loop(struct fl_thread *t)
{
	uint64_t hard_end_ns = t->end_ns + t->cfg->drain_ns;
	for (unsigned i = 0; i < t->conn_count; i++)
		conn_open(t, &t->conns[i]);
	t->res.reconnects = 0;
	t->last_tick_ns = fl_now_ns();
	for (;;) {
		uint64_t now_ns = fl_now_ns();
		if (fl_stop && t->end_ns > now_ns) {
			t->end_ns = now_ns;
			t->sched.issued_max = t->sched.issued;
		}
		bool sending = now_ns >= t->start_ns && now_ns < t->end_ns;
		/* open loop: requests intended before the end are still sent in the
		 * drain window, so a slow server's backlog is measured, not dropped */
		bool backlog = t->open_loop && t->sched.issued < t->sched.issued_max;
		if (!sending && now_ns >= t->end_ns &&
		    ((inflight_total(t) == 0 && !backlog) || now_ns >= hard_end_ns))
			break;
		if (t->open_loop && now_ns >= t->start_ns)
			fill_open(t, now_ns);
		else if (sending)
			fill_closed(t, now_ns);
		if (now_ns - t->last_tick_ns >= FL_TICK_NS) {
			tick(t, now_ns);
			t->last_tick_ns = now_ns;
		}
		roll_second(t, now_ns);
		wait_events(t, now_ns);
	}
	if (t->open_loop)
		t->res.unsent_backlog = t->sched.issued_max - t->sched.issued;
	for (unsigned i = 0; i < t->conn_count; i++)
		conn_close(t, &t->conns[i], FL_E_TIMEOUT);
	flush_second(t);
}

static void pin(const struct fl_thread *t)
{
	if (t->cfg->cpu_count == 0)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(t->cfg->cpus[t->id % t->cfg->cpu_count], &set);
	if (pthread_setaffinity_np(pthread_self(), sizeof(set), &set) != 0)
		fprintf(stderr, "flashload: cannot pin thread %u to CPU %d\n", t->id,
		        t->cfg->cpus[t->id % t->cfg->cpu_count]);
}

static void *thread_main(void *arg)
{
	struct fl_thread *t = arg;
	pin(t);
	prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);   /* open loop wants µs wake-ups */
	t->epfd = epoll_create1(EPOLL_CLOEXEC);
	if (t->epfd < 0) {
		t->err = errno;
		return NULL;
	}
	thread_loop(t);
	close(t->epfd);
	return NULL;
}

/* ---- run -------------------------------------------------------------- */

static void results_reset(struct fl_results *r)
{
	hist_reset(&r->all);
	for (int i = 0; i < FL_OP_COUNT; i++)
		hist_reset(&r->op[i]);
	memset(r->status, 0, sizeof(r->status));
	memset(r->errors, 0, sizeof(r->errors));
	r->answers = r->sent = r->unsent_backlog = r->reconnects = 0;
	r->elapsed_s = 0;
	r->second_count = 0;
	r->seconds = NULL;
}

static void results_merge(struct fl_results *target, const struct fl_results *source)
{
	hist_merge(&target->all, &source->all);
	for (int i = 0; i < FL_OP_COUNT; i++) {
		hist_merge(&target->op[i], &source->op[i]);
		for (int s = 0; s < FL_STATUS_MAX; s++)
			target->status[i][s] += source->status[i][s];
	}
	for (int e = 0; e < FL_E_COUNT; e++)
		target->errors[e] += source->errors[e];
	target->answers += source->answers;
	target->sent += source->sent;
	target->unsent_backlog += source->unsent_backlog;
	target->reconnects += source->reconnects;
}

static int threads_setup(const struct fl_config *cfg, struct fl_thread *ts,
                         struct fl_series *series, uint64_t start_ns)
{
	uint64_t end_ns = start_ns + (uint64_t)(cfg->duration_s * 1e9);
	for (unsigned i = 0; i < cfg->threads; i++) {
		struct fl_thread *t = &ts[i];
		t->cfg = cfg;
		t->id = i;
		t->conn_count = cfg->connections / cfg->threads +
		                (i < cfg->connections % cfg->threads ? 1u : 0u);
		t->conns = calloc(t->conn_count, sizeof(*t->conns));
		if (t->conns == NULL)
			return -1;
		for (unsigned k = 0; k < t->conn_count; k++) {
			t->conns[k].fd = -1;
			t->conns[k].index = k;
		}
		t->open_loop = cfg->rate_per_s > 0.0;
		if (t->open_loop)   /* each thread: its share, phase-shifted */
			lr_sched_init(&t->sched, start_ns + (uint64_t)(1e9 / cfg->rate_per_s * i),
			              cfg->rate_per_s / cfg->threads,
			              (uint64_t)(cfg->rate_per_s / cfg->threads * cfg->duration_s + 0.5) + 0u);
		t->start_ns = start_ns;
		t->end_ns = end_ns;
		t->rng = (cfg->run_id ^ (0x9E3779B97F4A7C15ull * (i + 1))) | 1u;
		t->series = series;
		hist_reset(&t->sec_hist);
		results_reset(&t->res);
	}
	return 0;
}

void fl_results_free(struct fl_results *r)
{
	if (r == NULL)
		return;
	free(r->seconds);
	free(r);
}

static int run_threads(const struct fl_config *cfg, struct fl_thread *ts)
{
	unsigned started = 0;
	int rc = 0;
	for (; started < cfg->threads; started++) {
		if (pthread_create(&ts[started].tid, NULL, thread_main, &ts[started]) != 0) {
			rc = -1;
			fl_stop = 1;
			break;
		}
	}
	for (unsigned i = 0; i < started; i++)
		pthread_join(ts[i].tid, NULL);
	return rc;
}

int fl_run(const struct fl_config *cfg, struct fl_results **out)
{
	assert(cfg != NULL && out != NULL);
	assert(fl_config_check(cfg) == NULL);
	struct fl_results *r = malloc(sizeof(*r));
	struct fl_thread *ts = calloc(cfg->threads, sizeof(*ts));
	struct fl_series series = { .count = (uint32_t)(cfg->duration_s + cfg->drain_ns / 1e9) + 2u };
	series.seconds = calloc(series.count, sizeof(*series.seconds));
	int rc = -1;
	if (r == NULL || ts == NULL || series.seconds == NULL)
		goto out;
	results_reset(r);
	for (uint32_t i = 0; i < series.count; i++)
		hist_reset(&series.seconds[i].latency);
	pthread_mutex_init(&series.lock, NULL);
	uint64_t start_ns = fl_now_ns() + cfg->start_delay_ns;
	if (threads_setup(cfg, ts, &series, start_ns) == 0 && run_threads(cfg, ts) == 0)
		rc = 0;
	pthread_mutex_destroy(&series.lock);
	/* elapsed = start to the last answer (at least the asked duration) */
	uint64_t finish_ns = start_ns + (uint64_t)(cfg->duration_s * 1e9);
	for (unsigned i = 0; i < cfg->threads; i++) {
		results_merge(r, &ts[i].res);
		if (ts[i].last_answer_ns > finish_ns)
			finish_ns = ts[i].last_answer_ns;
		if (ts[i].err != 0)
			rc = -1;
	}
	r->elapsed_s = (double)(finish_ns - start_ns) / 1e9;
	r->second_count = series.count;
	r->seconds = series.seconds;
	series.seconds = NULL;
out:
	if (ts != NULL)
		for (unsigned i = 0; i < cfg->threads; i++)
			free(ts[i].conns);
	free(ts);
	free(series.seconds);
	if (rc != 0) {
		fl_results_free(r);
		r = NULL;
	}
	*out = r;
	return rc;
}
