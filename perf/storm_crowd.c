/* storm_crowd.c - the crowd of perf/storm: simulated humans and bots storming
 * one SKU of a running flashsaled (perf/storm starts the server, creates and
 * opens the sale, runs this program, then verifies the journal).
 *
 * The crowd (every number is a flag; see usage()):
 *   - H humans and B bots, B = H * s / (1 - s) so that bots are the share s
 *     of the population. Each agent is one user (sub "storm-h<i>" or
 *     "storm-b<i>") with its own HS256 token minted here from the server's
 *     secret file; half of each kind carry `tier: 4`, half no tier claim (the
 *     sale's default tier applies). Bots get no special treatment from the
 *     server: they just send faster.
 *   - Arrivals: every agent arrives once, in a random order (a bot is as
 *     likely as a human to be early). The arrival rate ramps linearly from 0
 *     to (1 - read_share) * rate over --ramp seconds, then stays flat. A
 *     human opens the page (GET /v1/skus/S), thinks U(0, 2 * think) and
 *     clicks reserve; a bot POSTs the moment it arrives (zero think time).
 *   - After an answer, a human waits U(0.5, 1.5) * interval before the next
 *     step (Retry-After on a 429); a bot waits interval / speedup (100x
 *     faster) and ignores Retry-After. Transport errors are retried with the
 *     same Idempotency-Key; 429/403/503 with a new one.
 *   - A winner (201) checks out with --pay (human after U(0.5, 1.5) *
 *     pay_think, bot at once) and leaves. A loser (409) lingers for --linger
 *     seconds: a human polls the page every interval and clicks again when
 *     units show up; a bot keeps POSTing every interval / speedup.
 *   - Independently, the crowd's page refreshes: GET /v1/skus/S at
 *     read_share * rate (ramped the same way), so reads are 95 % of the
 *     crowd's target rate as in the reference design's read/write mix.
 *
 * Every read is checked: sold + reserved <= total and available + reserved +
 * sold == total (oversell must be 0). Latencies are measured from the
 * intended send time (open loop: time spent queued in this generator counts,
 * no coordinated omission) and, separately, from the actual send.
 *
 * Protocol with perf/storm: after minting and connecting, prints "ready" on
 * stdout and waits for one line on stdin; T0 (the clock's zero) is when that
 * line arrives ("go", or "go U": the waiting room opens at unix ms U). Writes its results as JSON to --out.
 *
 * The waiting room (--waiting-room, --opens-at-ms U: the sale was created
 * with --opens-at U --prequeue-window; the server opens it by itself at U):
 * an attempt before the opening (or while the drawn queue is not drained)
 * gets 202 {"status":"QUEUED","reservation_id","position"}. A queued agent
 * then polls GET /v1/reservations/{id} with its token: not before the
 * opening (the position is 0, unknown, until the draw), then a human every
 * U(0.5, 1.5) * --queue-poll-ms, a bot every --bot-poll-ms (default 100: 10x
 * a human; 100x would be ~50k polls/s from the queued bots alone, past this
 * one-core crowd, and polling faster cannot change the draw, only when the
 * bot learns its result). RESERVED: a win (checkout as after a 201);
 * REJECTED: a loser (lingers as after a 409); QUEUED/WAITLISTED: poll again.
 * "Early" agents are those whose first attempt was sent more than
 * --early-margin-ms (100) before the opening: each must get a 202 QUEUED
 * with a reservation id and a position (reported per agent).
 *
 * Threads: T threads, each with its own epoll loop over its share of the
 * keep-alive connections, its own agents (arrival rank % T), its own share
 * of the read stream; one request in flight per connection.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/fs_jwt.h"
#include "hist.h"
#include "http_resp.h"

#define NS_PER_S      1000000000ull
#define NS_PER_MS     1000000ull
#define IN_CAP        16384
#define OUT_CAP       2048
#define TOKEN_CAP     512
#define THREADS_MAX   16
#define CONNS_MAX     8192
#define EVENTS_MAX    256
#define SKU_MAX       32
#define PAYTOK_MAX    64
#define SERIES_MAX    4000

/* ---- configuration ---------------------------------------------------- */

struct cfg {
	struct sockaddr_in addr;
	char     sku[SKU_MAX + 1];
	const char *secret_path;
	const char *out_path;
	char     pay[PAYTOK_MAX + 1];
	uint32_t humans;
	double   bot_share;
	double   rate;             /* target requests/s after the ramp */
	double   read_share;       /* of rate: page refreshes */
	double   ramp_s;
	double   duration_s;       /* hard cap, from T0 */
	double   think_ms;         /* human: mean of the page -> click delay */
	double   interval_ms;      /* human: between steps; bots: / speedup */
	double   pay_think_ms;     /* human: reservation -> checkout */
	double   speedup;          /* bots vs humans */
	double   linger_s;
	double   after_sellout_s;  /* end this long after every unit is paid; < 0: never */
	double   timeout_ms;
	double   drain_s;
	unsigned threads;
	unsigned connections;
	uint64_t seed;
	int      cpu;              /* -1: no pinning */
	bool     no_wait;          /* start at once (no ready/go handshake) */
	bool     waiting_room;     /* the sale has a waiting room opening at opens_at_ms */
	int64_t  opens_at_ms;      /* unix ms (CLOCK_REALTIME) */
	double   queue_poll_ms;    /* human: between polls of a queued reservation */
	double   bot_poll_ms;      /* bot: same */
	double   early_margin_ms;  /* "early": first attempt sent this long before the opening */
};

static struct cfg C;

/* ---- answers ---------------------------------------------------------- */

enum ep { EP_READ, EP_RESERVE, EP_CHECKOUT, EP_POLL, EP_COUNT };
static const char *ep_name[EP_COUNT] = { "read", "reserve", "checkout", "poll" };

enum who { W_HUMAN, W_BOT, W_STREAM, W_COUNT };
static const char *who_name[W_COUNT] = { "human", "bot", "page_refresh" };

enum rs {
	RS_200, RS_201, RS_202, RS_SOLD_OUT, RS_LIMIT, RS_RATE, RS_NOT_OPEN, RS_FROZEN,
	RS_OVERLOADED, RS_PAID, RS_DECLINED, RS_EXPIRED, RS_ALREADY, RS_409_OTHER,
	RS_4XX, RS_5XX, RS_TRANSPORT, RS_TIMEOUT,
	RS_QUEUED,                                  /* 202 QUEUED (waiting room) */
	RS_P_QUEUED, RS_P_RESERVED, RS_P_REJECTED, RS_P_WAITLISTED, RS_P_OTHER,  /* 200 to a poll */
	RS_COUNT
};
static const char *rs_name[RS_COUNT] = {
	"200", "201", "202 waitlisted", "409 sold_out", "409 limit_reached",
	"429 rate_limited", "403 sale_not_open", "503 frozen", "503 overloaded",
	"200 PAID", "402 payment_failed", "410 expired", "409 already_checked_out",
	"409 other", "4xx other", "5xx other", "transport error", "timeout",
	"202 queued", "200 QUEUED", "200 RESERVED", "200 REJECTED", "200 WAITLISTED", "200 other" };

/* ---- agents ----------------------------------------------------------- */

enum aop { OP_NONE, OP_PAGE, OP_RESERVE, OP_CHECKOUT, OP_POLL, OP_RES_POLL };

#define AF_WON       0x01
#define AF_PAID      0x02
#define AF_FINAL     0x04   /* got a 201/409 to a reservation */
#define AF_ANSWERED  0x08   /* got any HTTP answer to a reservation */
#define AF_GOT429    0x10
#define AF_SAME_KEY  0x20   /* retry the last attempt with its key */
#define AF_DONE      0x40
#define AF_LINGER    0x80
#define AF_QUEUED    0x100  /* got a 202 QUEUED (waiting room) */
#define AF_FIRST_Q   0x200  /* its first answer was 202 QUEUED with a reservation id and a position */
#define AF_REJECTED  0x400  /* its queued entry was REJECTED */

struct agent {
	uint64_t res_no;
	uint64_t arrive_ns;        /* intended, from T0 */
	uint64_t first_answer_ns;  /* first HTTP answer to a reservation, from T0 */
	uint64_t linger_until_ns;
	uint64_t first_try_ns;     /* first reservation attempt actually sent, from T0, + 1; 0 = none */
	uint32_t tok_off;
	uint32_t queue_pos;        /* first queue position seen */
	uint16_t attempts;
	uint16_t pay_tries;
	uint8_t  kind;             /* W_HUMAN | W_BOT */
	uint8_t  op;
	uint8_t  first_rs;         /* enum rs of the first answer to a reservation */
	uint16_t flags;
};

static struct agent *g_agents;
static uint32_t g_agent_count;
static char *g_tokens;
static uint64_t g_run_id;
static atomic_uint_fast64_t g_agents_left;
static volatile sig_atomic_t g_stop;
static uint64_t g_t0;
static uint64_t g_open_rel_ns;                /* waiting room: the opening, from T0 */
static atomic_uint_fast64_t g_all_sold_abs;   /* first read with sold == total */
static atomic_int g_ended_by;                 /* enum end_reason */

enum end_reason { END_NONE, END_ALL_DONE, END_DURATION, END_AFTER_SELLOUT, END_SIGNAL };
static const char *end_name[] = { "none", "all_done", "duration", "after_sellout", "signal" };

/* ---- per-second series ------------------------------------------------ */

struct second {
	uint64_t answers, reads, reserves, checkouts, errors;
	uint64_t won[2], sold_out, rate_limited, paid;
	int64_t  version;          /* snapshot of the highest version read, -1 none */
	uint64_t available, reserved, sold, total;
};

/* ---- threads ---------------------------------------------------------- */

enum req_kind { RK_NONE, RK_STREAM, RK_AGENT };
enum conn_state { CS_DEAD, CS_CONNECTING, CS_IDLE, CS_BUSY };

struct conn {
	int      fd;
	uint8_t  state;
	uint8_t  req;              /* enum req_kind */
	uint8_t  op;               /* the agent op in flight */
	bool     want_out;
	uint32_t agent;
	uint64_t intended_ns, sent_ns;   /* absolute monotonic */
	size_t   in_len, out_len, out_off;
	char     in[IN_CAP];
	char     out[OUT_CAP];
};

struct event { uint64_t due; uint32_t agent; };

struct stats {
	struct hist lat[EP_COUNT];       /* from intended send time */
	struct hist svc[EP_COUNT];       /* from actual send */
	struct hist backlog;             /* dispatch - intended */
	uint64_t ans[EP_COUNT][W_COUNT][RS_COUNT];
	uint64_t sent, answered, transport, timeouts, reconnects, unanswered_end, connect_errors;
	uint64_t reads_checked, violations, max_committed, bad_reads;
	uint64_t total_seen;
	uint64_t units[2], paid[2], declined[2];
	uint64_t arrived[2], arrived_before_sellout[2];
	uint64_t q429[2], q429_with_pos[2], max_queue_pos;
	uint64_t agents_429[2];
	/* humans whose intended arrival is in the first second */
	uint64_t fs_arrived, fs_answered, fs_final, fs_429, fs_429_pos, fs_max_pos, fs_unanswered;
	struct hist fs_first_answer;
	uint64_t sold_out_ns, last_201_ns, all_sold_ns;   /* from T0; 0 = never */
	uint64_t first_win_ns;                            /* from T0; 0 = never */
	uint64_t streams_sent;
};

struct thr {
	unsigned id;
	pthread_t tid;
	int epfd;
	struct conn *conns;
	unsigned nconn;
	uint32_t *idle;
	unsigned nidle;
	struct event *heap;
	uint32_t nheap, capheap;
	uint64_t next_rank;              /* next arrival rank owned (rank % T == id) */
	uint64_t next_read;              /* read stream index (j * T + id) */
	uint64_t rng;
	uint32_t agents_mine, agents_done;
	uint64_t sold_out_seen_ns;       /* local: first time this thread saw sold out */
	struct second *series;
	uint32_t nseries;
	struct stats st;
};

static uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t x = *s;
	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	*s = x;
	return x;
}

static double rng_unit(uint64_t *s)
{
	return (double)(rng_next(s) >> 11) * (1.0 / 9007199254740992.0);
}

static void on_sigint(int sig)
{
	(void)sig;
	g_stop = 1;
}

/* Intended time (ns from T0) of the n-th event (n = 0, 1, ...) of a stream
 * whose rate ramps linearly from 0 to `peak` per second over ramp_s, then
 * stays at `peak`. */
static uint64_t ramp_time_ns(double n, double peak, double ramp_s)
{
	if (peak <= 0)
		return UINT64_MAX;
	double k = n + 0.5, t;
	if (ramp_s <= 0)
		t = k / peak;
	else if (k < peak * ramp_s / 2)
		t = sqrt(2.0 * ramp_s * k / peak);
	else
		t = ramp_s + (k - peak * ramp_s / 2) / peak;
	return (uint64_t)(t * 1e9);
}

static uint64_t arrival_ns(uint64_t rank)
{
	return ramp_time_ns((double)rank, C.rate * (1.0 - C.read_share), C.ramp_s);
}

static uint64_t read_ns(uint64_t j)
{
	return ramp_time_ns((double)j, C.rate * C.read_share, C.ramp_s);
}

/* ---- event heap (due, agent), one pending event per agent ---------------- */

static void heap_push(struct thr *t, uint64_t due, uint32_t agent)
{
	if (t->nheap == t->capheap) {
		uint32_t cap = t->capheap ? t->capheap * 2 : 1024;
		struct event *h = realloc(t->heap, cap * sizeof(*h));
		if (h == NULL) {
			fprintf(stderr, "storm_crowd: out of memory (event heap)\n");
			exit(2);
		}
		t->heap = h;
		t->capheap = cap;
	}
	uint32_t i = t->nheap++;
	while (i > 0) {
		uint32_t p = (i - 1) / 2;
		if (t->heap[p].due <= due)
			break;
		t->heap[i] = t->heap[p];
		i = p;
	}
	t->heap[i] = (struct event){ due, agent };
}

static struct event heap_pop(struct thr *t)
{
	struct event top = t->heap[0];
	struct event last = t->heap[--t->nheap];
	uint32_t i = 0, n = t->nheap;
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		uint64_t md = last.due;
		if (l < n && t->heap[l].due < md) { m = l; md = t->heap[l].due; }
		if (r < n && t->heap[r].due < md) { m = r; }
		if (m == i)
			break;
		t->heap[i] = t->heap[m];
		i = m;
	}
	if (n > 0)
		t->heap[i] = last;
	return top;
}

/* ---- small JSON helpers ----------------------------------------------- */

/* Unsigned integer value of "key" in a flat JSON body; -1 when absent,
 * -2 when negative or malformed. */
static int64_t json_u64(const char *body, size_t len, const char *key)
{
	char pat[40];
	int pl = snprintf(pat, sizeof(pat), "\"%s\":", key);
	const char *p = memmem(body, len, pat, (size_t)pl);
	if (p == NULL)
		return -1;
	p += pl;
	const char *end = body + len;
	while (p < end && *p == ' ')
		p++;
	if (p == end || *p < '0' || *p > '9')
		return -2;
	int64_t v = 0;
	while (p < end && *p >= '0' && *p <= '9')
		v = v * 10 + (*p++ - '0');
	return v;
}

/* ---- connections ------------------------------------------------------ */

static void ep_ctl(struct thr *t, int op, struct conn *c, uint32_t events)
{
	struct epoll_event ev = { .events = events, .data.u32 = (uint32_t)(c - t->conns) };
	if (epoll_ctl(t->epfd, op, c->fd, &ev) != 0 && op != EPOLL_CTL_DEL) {
		perror("storm_crowd: epoll_ctl");
		exit(2);
	}
}

static void conn_open(struct thr *t, struct conn *c)
{
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		perror("storm_crowd: socket");
		exit(2);
	}
	int one = 1;
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	c->in_len = c->out_len = c->out_off = 0;
	c->req = RK_NONE;
	c->want_out = true;
	if (connect(c->fd, (struct sockaddr *)&C.addr, sizeof(C.addr)) == 0) {
		c->state = CS_IDLE;
		c->want_out = false;
		ep_ctl(t, EPOLL_CTL_ADD, c, EPOLLIN);
		t->idle[t->nidle++] = (uint32_t)(c - t->conns);
		return;
	}
	if (errno != EINPROGRESS) {
		/* the server is gone or refusing: the periodic check retries */
		close(c->fd);
		c->fd = -1;
		c->state = CS_DEAD;
		t->st.connect_errors++;
		return;
	}
	c->state = CS_CONNECTING;
	ep_ctl(t, EPOLL_CTL_ADD, c, EPOLLIN | EPOLLOUT);
}

static void conn_close(struct thr *t, struct conn *c)
{
	if (c->state == CS_IDLE) {           /* keep the idle stack to live connections */
		uint32_t me = (uint32_t)(c - t->conns);
		for (unsigned i = 0; i < t->nidle; i++) {
			if (t->idle[i] == me) {
				t->idle[i] = t->idle[--t->nidle];
				break;
			}
		}
	}
	if (c->fd >= 0) {
		epoll_ctl(t->epfd, EPOLL_CTL_DEL, c->fd, NULL);
		close(c->fd);
	}
	c->fd = -1;
	c->state = CS_DEAD;
	c->req = RK_NONE;
}

/* ---- per-second series ------------------------------------------------ */

static struct second *sec_at(struct thr *t, uint64_t abs_ns)
{
	uint64_t rel = abs_ns > g_t0 ? abs_ns - g_t0 : 0;
	uint64_t i = rel / NS_PER_S;
	if (i >= t->nseries)
		i = t->nseries - 1;
	return &t->series[i];
}

/* ---- agent life ------------------------------------------------------- */

static double interval_ns(const struct agent *a, struct thr *t)
{
	if (a->kind == W_BOT)
		return C.interval_ms * NS_PER_MS / C.speedup;
	return C.interval_ms * NS_PER_MS * (0.5 + rng_unit(&t->rng));
}

/* Between two polls of a queued reservation. */
static double poll_ns(const struct agent *a, struct thr *t)
{
	if (a->kind == W_BOT)
		return C.bot_poll_ms * NS_PER_MS;
	return C.queue_poll_ms * NS_PER_MS * (0.5 + rng_unit(&t->rng));
}

static void agent_done(struct thr *t, struct agent *a)
{
	if (a->flags & AF_DONE)
		return;
	a->flags |= AF_DONE;
	a->op = OP_NONE;
	t->agents_done++;
	atomic_fetch_sub(&g_agents_left, 1);
}

static void agent_at(struct thr *t, struct agent *a, uint64_t due, uint8_t op)
{
	a->op = op;
	heap_push(t, due, (uint32_t)(a - g_agents));
}

static void agent_linger(struct thr *t, struct agent *a, uint64_t now)
{
	if (!(a->flags & AF_LINGER)) {
		a->flags |= AF_LINGER;
		a->linger_until_ns = now + (uint64_t)(C.linger_s * 1e9);
	}
	uint64_t due = now + (uint64_t)interval_ns(a, t);
	if (due >= a->linger_until_ns) {
		agent_done(t, a);
		return;
	}
	agent_at(t, a, due, a->kind == W_BOT ? OP_RESERVE : OP_POLL);
}

/* Builds the agent's next request into c->out. */
static void build_agent_request(struct thr *t, struct conn *c, struct agent *a)
{
	const char *tok = g_tokens + a->tok_off;
	uint32_t idx = (uint32_t)(a - g_agents);
	int n;
	switch (a->op) {
	case OP_PAGE:
	case OP_POLL:
		n = snprintf(c->out, OUT_CAP, "GET /v1/skus/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", C.sku);
		break;
	case OP_RESERVE:
		if (!(a->flags & AF_SAME_KEY))
			a->attempts++;
		a->flags &= (uint16_t)~AF_SAME_KEY;
		n = snprintf(c->out, OUT_CAP,
		             "POST /v1/skus/%s/reservations HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		             "Authorization: Bearer %s\r\nIdempotency-Key: st%" PRIx64 "-%c%u-%u\r\n"
		             "Content-Type: application/json\r\nContent-Length: 14\r\n\r\n{\"quantity\":1}",
		             C.sku, tok, g_run_id, a->kind == W_BOT ? 'b' : 'h', idx, a->attempts);
		break;
	case OP_CHECKOUT: {
		char body[PAYTOK_MAX + 32];
		int bl = snprintf(body, sizeof(body), "{\"payment_token\":\"%s\"}", C.pay);
		n = snprintf(c->out, OUT_CAP,
		             "POST /v1/reservations/r%016" PRIx64 "/checkout HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		             "Authorization: Bearer %s\r\nIdempotency-Key: pay%" PRIx64 "-%u\r\n"
		             "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s",
		             a->res_no, tok, g_run_id, idx, bl, body);
		break;
	}
	case OP_RES_POLL:
		n = snprintf(c->out, OUT_CAP,
		             "GET /v1/reservations/r%016" PRIx64 " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
		             "Authorization: Bearer %s\r\n\r\n", a->res_no, tok);
		break;
	default:
		assert(0);
		n = 0;
	}
	assert(n > 0 && n < OUT_CAP);
	(void)t;
	c->out_len = (size_t)n;
}

static void conn_send(struct thr *t, struct conn *c)
{
	while (c->out_off < c->out_len) {
		ssize_t w = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
		if (w > 0) {
			c->out_off += (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			if (!c->want_out) {
				c->want_out = true;
				ep_ctl(t, EPOLL_CTL_MOD, c, EPOLLIN | EPOLLOUT);
			}
			return;
		}
		return;   /* error: the read side sees it */
	}
	if (c->want_out) {
		c->want_out = false;
		ep_ctl(t, EPOLL_CTL_MOD, c, EPOLLIN);
	}
}

static void dispatch(struct thr *t, uint8_t req, uint32_t agent, uint64_t intended, uint64_t now)
{
	assert(t->nidle > 0);
	struct conn *c = &t->conns[t->idle[--t->nidle]];
	assert(c->state == CS_IDLE);
	c->req = req;
	c->agent = agent;
	c->intended_ns = intended;
	c->sent_ns = now;
	c->out_off = 0;
	if (req == RK_STREAM) {
		int n = snprintf(c->out, OUT_CAP, "GET /v1/skus/%s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", C.sku);
		c->out_len = (size_t)n;
		c->op = OP_POLL;
		t->st.streams_sent++;
	} else {
		struct agent *a = &g_agents[agent];
		c->op = a->op;
		if (a->op == OP_RESERVE && a->first_try_ns == 0)
			a->first_try_ns = now - g_t0 + 1;
		build_agent_request(t, c, a);
	}
	c->state = CS_BUSY;
	t->st.sent++;
	hist_record(&t->st.backlog, now > intended ? now - intended : 0);
	conn_send(t, c);
}

/* ---- answers ---------------------------------------------------------- */

static enum rs classify(int ep, int status, const char *body, size_t len)
{
	char err[48];
	int el = hr_json_str(body, len, "error", err, sizeof(err));
	if (el < 0)
		err[0] = 0;
	switch (status) {
	case 200:
		if (ep == EP_POLL) {
			char st[24];
			if (hr_json_str(body, len, "status", st, sizeof(st)) < 0)
				return RS_P_OTHER;
			if (strcmp(st, "QUEUED") == 0) return RS_P_QUEUED;
			if (strcmp(st, "RESERVED") == 0) return RS_P_RESERVED;
			if (strcmp(st, "REJECTED") == 0) return RS_P_REJECTED;
			if (strcmp(st, "WAITLISTED") == 0) return RS_P_WAITLISTED;
			return RS_P_OTHER;
		}
		if (ep == EP_CHECKOUT)
			return memmem(body, len, "\"PAID\"", 6) ? RS_PAID : RS_200;
		return RS_200;
	case 201: return RS_201;
	case 202: return memmem(body, len, "\"QUEUED\"", 8) ? RS_QUEUED : RS_202;
	case 402: return RS_DECLINED;
	case 403: return strcmp(err, "sale_not_open") == 0 ? RS_NOT_OPEN : RS_4XX;
	case 409:
		if (strcmp(err, "sold_out") == 0) return RS_SOLD_OUT;
		if (strcmp(err, "limit_reached") == 0) return RS_LIMIT;
		if (strcmp(err, "already_checked_out") == 0) return RS_ALREADY;
		return RS_409_OTHER;
	case 410: return RS_EXPIRED;
	case 429: return RS_RATE;
	case 503:
		if (strcmp(err, "frozen") == 0) return RS_FROZEN;
		if (strcmp(err, "overloaded") == 0) return RS_OVERLOADED;
		return RS_5XX;
	default:
		return status >= 500 ? RS_5XX : RS_4XX;
	}
}

static void mark_sold_out(struct thr *t, uint64_t now)
{
	uint64_t rel = now - g_t0;
	if (t->st.sold_out_ns == 0 || rel < t->st.sold_out_ns)
		t->st.sold_out_ns = rel;
	if (t->sold_out_seen_ns == 0)
		t->sold_out_seen_ns = now;
}

/* A 200 to GET /v1/skus/S: invariants and the series. */
static void on_read(struct thr *t, const char *body, size_t len, uint64_t now)
{
	int64_t total = json_u64(body, len, "total"), avail = json_u64(body, len, "available");
	int64_t resv = json_u64(body, len, "reserved"), sold = json_u64(body, len, "sold");
	int64_t ver = json_u64(body, len, "version");
	if (total < 0 || avail < 0 || resv < 0 || sold < 0 || ver < 0) {
		t->st.bad_reads++;
		if (avail == -2 || resv == -2 || sold == -2)   /* a negative counter */
			t->st.violations++;
		return;
	}
	t->st.reads_checked++;
	if (resv + sold > total || avail + resv + sold != total)
		t->st.violations++;
	if ((uint64_t)(resv + sold) > t->st.max_committed)
		t->st.max_committed = (uint64_t)(resv + sold);
	if ((uint64_t)total > t->st.total_seen)
		t->st.total_seen = (uint64_t)total;
	if (avail == 0 && total > 0)
		mark_sold_out(t, now);
	if (sold == total && total > 0 && t->st.all_sold_ns == 0) {
		t->st.all_sold_ns = now - g_t0;
		uint_fast64_t zero = 0;
		atomic_compare_exchange_strong(&g_all_sold_abs, &zero, now);
	}
	struct second *s = sec_at(t, now);
	s->reads++;
	if (ver > s->version) {
		s->version = ver;
		s->available = (uint64_t)avail;
		s->reserved = (uint64_t)resv;
		s->sold = (uint64_t)sold;
		s->total = (uint64_t)total;
	}
}

/* The agent's request failed without an HTTP answer. */
static void agent_transport_failure(struct thr *t, struct agent *a, uint8_t op, uint64_t now)
{
	if (op == OP_RESERVE)
		a->flags |= AF_SAME_KEY;
	agent_at(t, a, now + (uint64_t)interval_ns(a, t), op);
}

/* The agent holds a unit (a 201, or its queued entry became RESERVED). */
static void agent_won(struct thr *t, struct agent *a, uint64_t now)
{
	int k = a->kind;
	uint64_t rel = now - g_t0;
	if (!(a->flags & AF_WON)) {
		a->flags |= AF_WON;
		t->st.units[k]++;
		sec_at(t, now)->won[k]++;
		if (rel > t->st.last_201_ns)
			t->st.last_201_ns = rel;
		if (t->st.first_win_ns == 0 || rel < t->st.first_win_ns)
			t->st.first_win_ns = rel;
	}
	double think = k == W_BOT ? 0 : C.pay_think_ms * NS_PER_MS * (0.5 + rng_unit(&t->rng));
	agent_at(t, a, now + (uint64_t)think, OP_CHECKOUT);
}

static void on_agent_answer(struct thr *t, struct agent *a, uint8_t op, int status, enum rs r,
                            const char *body, size_t len, uint64_t now, uint64_t c_intended)
{
	int k = a->kind;
	uint64_t rel = now - g_t0;
	switch (op) {
	case OP_PAGE:
	case OP_POLL:
		if (status == 200)
			on_read(t, body, len, now);
		if (op == OP_PAGE) {
			double think = C.think_ms * NS_PER_MS * 2.0 * rng_unit(&t->rng);
			agent_at(t, a, now + (uint64_t)think, OP_RESERVE);
			return;
		}
		{
			int64_t avail = status == 200 ? json_u64(body, len, "available") : 0;
			if (avail > 0 && !(a->flags & AF_WON)) {
				double think = C.think_ms * NS_PER_MS * 2.0 * rng_unit(&t->rng);
				agent_at(t, a, now + (uint64_t)think, OP_RESERVE);
				return;
			}
		}
		agent_linger(t, a, now);
		return;
	case OP_RESERVE: {
		/* a 202 QUEUED, or the 200 repeat of one (same Idempotency-Key) */
		bool queued = r == RS_QUEUED || (r == RS_200 && memmem(body, len, "\"QUEUED\"", 8));
		if (!(a->flags & AF_ANSWERED)) {
			a->flags |= AF_ANSWERED;
			a->first_answer_ns = rel;
			a->first_rs = (uint8_t)(queued ? RS_QUEUED : r);
			if (k == W_HUMAN && a->arrive_ns < NS_PER_S) {
				/* from the click (the intended send of the first attempt) */
				t->st.fs_answered++;
				hist_record(&t->st.fs_first_answer, now - c_intended);
			}
		}
		struct second *s = sec_at(t, now);
		if (queued) {
			char rid[40];
			if (hr_json_str(body, len, "reservation_id", rid, sizeof(rid)) != 17 || rid[0] != 'r') {
				t->st.ans[EP_RESERVE][k][RS_4XX]++;
				agent_done(t, a);
				return;
			}
			a->res_no = strtoull(rid + 1, NULL, 16);
			if (!(a->flags & AF_QUEUED) && a->first_rs == RS_QUEUED && json_u64(body, len, "position") >= 0)
				a->flags |= AF_FIRST_Q;
			if (!(a->flags & AF_FINAL) && k == W_HUMAN && a->arrive_ns < NS_PER_S)
				t->st.fs_final++;
			a->flags |= AF_QUEUED | AF_FINAL;
			a->flags &= (uint16_t)~AF_REJECTED;
			/* nothing to learn before the draw: the first poll after the opening */
			uint64_t open_abs = g_t0 + g_open_rel_ns;
			uint64_t from = now > open_abs ? now : open_abs;
			double first = poll_ns(a, t) * rng_unit(&t->rng);
			agent_at(t, a, from + (uint64_t)first, OP_RES_POLL);
			return;
		}
		if (r == RS_201 || (r == RS_200 && memmem(body, len, "reservation_id", 14))) {
			char rid[40];
			if (hr_json_str(body, len, "reservation_id", rid, sizeof(rid)) != 17 || rid[0] != 'r') {
				t->st.ans[EP_RESERVE][k][RS_4XX]++;
				agent_done(t, a);
				return;
			}
			a->res_no = strtoull(rid + 1, NULL, 16);
			if (!(a->flags & AF_FINAL) && k == W_HUMAN && a->arrive_ns < NS_PER_S)
				t->st.fs_final++;
			a->flags |= AF_FINAL;
			agent_won(t, a, now);
			return;
		}
		switch (r) {
		case RS_SOLD_OUT:
		case RS_LIMIT:
		case RS_202:
			if (!(a->flags & AF_FINAL) && k == W_HUMAN && a->arrive_ns < NS_PER_S)
				t->st.fs_final++;
			a->flags |= AF_FINAL;
			if (r == RS_SOLD_OUT) {
				s->sold_out++;
				mark_sold_out(t, now);
			}
			if (r == RS_202 || (a->flags & AF_WON)) {
				agent_done(t, a);
				return;
			}
			agent_linger(t, a, now);
			return;
		case RS_RATE: {
			s->rate_limited++;
			t->st.q429[k]++;
			int64_t pos = json_u64(body, len, "queue_position");
			int64_t after = json_u64(body, len, "retry_after_ms");
			if (pos > 0) {
				t->st.q429_with_pos[k]++;
				if ((uint64_t)pos > t->st.max_queue_pos)
					t->st.max_queue_pos = (uint64_t)pos;
			}
			if (!(a->flags & AF_GOT429)) {
				a->flags |= AF_GOT429;
				t->st.agents_429[k]++;
				a->queue_pos = pos > 0 ? (uint32_t)pos : 0;
				if (k == W_HUMAN && a->arrive_ns < NS_PER_S) {
					t->st.fs_429++;
					if (pos > 0) {
						t->st.fs_429_pos++;
						if ((uint64_t)pos > t->st.fs_max_pos)
							t->st.fs_max_pos = (uint64_t)pos;
					}
				}
			}
			uint64_t wait = k == W_BOT || after <= 0 ? (uint64_t)interval_ns(a, t)
			                                         : (uint64_t)after * NS_PER_MS;
			agent_at(t, a, now + wait, OP_RESERVE);
			return;
		}
		case RS_NOT_OPEN:
		case RS_OVERLOADED:
		case RS_FROZEN:
		case RS_5XX:
			agent_at(t, a, now + (uint64_t)interval_ns(a, t), OP_RESERVE);
			return;
		default:
			agent_done(t, a);   /* 400/401/404...: a bug somewhere, counted */
			return;
		}
	}
	case OP_RES_POLL:
		switch (r) {
		case RS_P_RESERVED:
			agent_won(t, a, now);
			return;
		case RS_P_QUEUED:
		case RS_P_WAITLISTED:
			agent_at(t, a, now + (uint64_t)poll_ns(a, t), OP_RES_POLL);
			return;
		case RS_P_REJECTED:
			a->flags |= AF_REJECTED;
			agent_linger(t, a, now);
			return;
		case RS_OVERLOADED:
		case RS_FROZEN:
		case RS_5XX:
			agent_at(t, a, now + (uint64_t)poll_ns(a, t), OP_RES_POLL);
			return;
		default:
			agent_done(t, a);   /* CANCELLED/EXPIRED/404...: counted */
			return;
		}
	case OP_CHECKOUT:
		switch (r) {
		case RS_PAID:
		case RS_ALREADY:
			if (!(a->flags & AF_PAID)) {
				a->flags |= AF_PAID;
				t->st.paid[k]++;
				sec_at(t, now)->paid++;
			}
			agent_done(t, a);
			return;
		case RS_DECLINED:
			t->st.declined[k]++;
			agent_done(t, a);
			return;
		case RS_OVERLOADED:
		case RS_5XX:
			if (++a->pay_tries < 5) {
				agent_at(t, a, now + (uint64_t)interval_ns(a, t), OP_CHECKOUT);
				return;
			}
			agent_done(t, a);
			return;
		default:
			agent_done(t, a);
			return;
		}
	default:
		assert(0);
	}
}

static int op_ep(uint8_t op)
{
	return op == OP_RESERVE ? EP_RESERVE : op == OP_CHECKOUT ? EP_CHECKOUT :
	       op == OP_RES_POLL ? EP_POLL : EP_READ;
}

/* The request on c got no answer (error, close, timeout): reconnect, retry. */
static void conn_failed(struct thr *t, struct conn *c, bool timeout, uint64_t now)
{
	uint8_t req = c->req, op = c->op;
	uint32_t agent = c->agent;
	bool was_busy = c->state == CS_BUSY;
	conn_close(t, c);
	t->st.reconnects++;
	if (was_busy) {
		int who = req == RK_STREAM ? W_STREAM : g_agents[agent].kind;
		t->st.ans[op_ep(op)][who][timeout ? RS_TIMEOUT : RS_TRANSPORT]++;
		if (timeout)
			t->st.timeouts++;
		else
			t->st.transport++;
		sec_at(t, now)->errors++;
		if (req == RK_AGENT)
			agent_transport_failure(t, &g_agents[agent], op, now);
	}
	if (!g_stop)
		conn_open(t, c);
}

static void conn_readable(struct thr *t, struct conn *c, uint64_t now)
{
	for (;;) {
		if (c->in_len == IN_CAP) {
			conn_failed(t, c, false, now);
			return;
		}
		ssize_t n = recv(c->fd, c->in + c->in_len, IN_CAP - c->in_len, 0);
		if (n > 0) {
			size_t room = IN_CAP - c->in_len;
			c->in_len += (size_t)n;
			if ((size_t)n < room)
				break;           /* the socket is drained */
			continue;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		conn_failed(t, c, false, now);   /* EOF or error */
		return;
	}
	if (c->state != CS_BUSY) {          /* bytes nobody asked for */
		conn_failed(t, c, false, now);
		return;
	}
	struct hr_resp hr;
	long total = hr_parse(c->in, c->in_len, &hr);
	if (total == 0)
		return;
	if (total < 0 || (size_t)total != c->in_len) {
		conn_failed(t, c, false, now);
		return;
	}
	const char *body = c->in + hr.header_len;
	size_t blen = hr.body_len;
	uint8_t req = c->req, op = c->op;
	uint32_t agent = c->agent;
	uint64_t intended = c->intended_ns;
	int ep = op_ep(op);
	int who = req == RK_STREAM ? W_STREAM : g_agents[agent].kind;
	enum rs r = classify(ep, hr.status, body, blen);
	t->st.answered++;
	t->st.ans[ep][who][r]++;
	hist_record(&t->st.lat[ep], now - c->intended_ns);
	hist_record(&t->st.svc[ep], now - c->sent_ns);
	struct second *s = sec_at(t, now);
	s->answers++;
	if (ep == EP_RESERVE)
		s->reserves++;
	else if (ep == EP_CHECKOUT)
		s->checkouts++;
	/* the connection is free again before the agent schedules its next step */
	c->in_len = 0;
	c->req = RK_NONE;
	if (hr.close) {
		conn_close(t, c);
		if (!g_stop)
			conn_open(t, c);
	} else {
		c->state = CS_IDLE;
		t->idle[t->nidle++] = (uint32_t)(c - t->conns);
	}
	if (req == RK_STREAM) {
		if (hr.status == 200)
			on_read(t, body, blen, now);
	} else {
		on_agent_answer(t, &g_agents[agent], op, hr.status, r, body, blen, now, intended);
	}
}

static void conn_event(struct thr *t, struct conn *c, uint32_t events, uint64_t now)
{
	if (c->state == CS_CONNECTING) {
		int err = 0;
		socklen_t el = sizeof(err);
		getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el);
		if (err != 0 || (events & (EPOLLERR | EPOLLHUP))) {
			conn_close(t, c);           /* the periodic check reconnects */
			t->st.connect_errors++;
			return;
		}
		c->state = CS_IDLE;
		c->want_out = false;
		ep_ctl(t, EPOLL_CTL_MOD, c, EPOLLIN);
		t->idle[t->nidle++] = (uint32_t)(c - t->conns);
		return;
	}
	if (events & EPOLLIN) {
		conn_readable(t, c, now);
		if (c->state == CS_DEAD || c->fd < 0)
			return;
	}
	if ((events & EPOLLOUT) && c->state == CS_BUSY && c->out_off < c->out_len)
		conn_send(t, c);
	if ((events & (EPOLLERR | EPOLLHUP)) && c->state != CS_CONNECTING && !(events & EPOLLIN))
		conn_failed(t, c, false, now);
}

/* ---- the loop --------------------------------------------------------- */

static bool arrivals_left(const struct thr *t)
{
	return t->next_rank < g_agent_count;
}

static void arrive(struct thr *t, struct agent *a, uint64_t intended_rel)
{
	int k = a->kind;
	t->st.arrived[k]++;
	if (t->st.sold_out_ns == 0 || intended_rel < t->st.sold_out_ns)
		t->st.arrived_before_sellout[k]++;
	if (k == W_HUMAN && a->arrive_ns < NS_PER_S)
		t->st.fs_arrived++;
	a->op = k == W_BOT ? OP_RESERVE : OP_PAGE;
}

static void *thread_main(void *arg)
{
	struct thr *t = arg;
	if (C.cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(C.cpu, &set);
		pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
	}
	uint64_t end = g_t0 + (uint64_t)(C.duration_s * 1e9);
	uint64_t timeout_ns = (uint64_t)(C.timeout_ms * NS_PER_MS);
	uint64_t last_check = g_t0;
	bool reads_on = C.rate * C.read_share > 0;
	struct epoll_event evs[EVENTS_MAX];

	uint64_t after_ns = C.after_sellout_s >= 0 ? (uint64_t)(C.after_sellout_s * 1e9) : UINT64_MAX;
	for (;;) {
		uint64_t now = now_ns();
		int why = END_NONE;
		uint64_t sold_abs = atomic_load(&g_all_sold_abs);
		if (g_stop)
			why = END_SIGNAL;
		else if (atomic_load(&g_agents_left) == 0)
			why = END_ALL_DONE;
		else if (now >= end)
			why = END_DURATION;
		else if (sold_abs && after_ns != UINT64_MAX && now >= sold_abs + after_ns)
			why = END_AFTER_SELLOUT;
		if (why != END_NONE) {
			int none = END_NONE;
			atomic_compare_exchange_strong(&g_ended_by, &none, why);
			break;
		}
		/* hand out due work, earliest intended first, while connections are idle */
		while (t->nidle > 0) {
			uint64_t ta = arrivals_left(t) ? g_t0 + arrival_ns(t->next_rank) : UINT64_MAX;
			uint64_t tr = reads_on ? g_t0 + read_ns(t->next_read * C.threads + t->id) : UINT64_MAX;
			uint64_t th = t->nheap ? t->heap[0].due : UINT64_MAX;
			uint64_t first = ta < tr ? ta : tr;
			if (th < first)
				first = th;
			if (first > now)
				break;
			if (first == th) {
				struct event e = heap_pop(t);
				dispatch(t, RK_AGENT, e.agent, e.due, now);
			} else if (first == ta) {
				struct agent *a = &g_agents[t->next_rank];
				t->next_rank += C.threads;
				arrive(t, a, ta - g_t0);
				dispatch(t, RK_AGENT, (uint32_t)(a - g_agents), ta, now);
			} else {
				t->next_read++;
				dispatch(t, RK_STREAM, 0, tr, now);
			}
		}
		/* sleep until the next due item (if a connection is free) or an event */
		uint64_t wake = end;
		if (t->nidle > 0) {
			uint64_t ta = arrivals_left(t) ? g_t0 + arrival_ns(t->next_rank) : UINT64_MAX;
			uint64_t tr = reads_on ? g_t0 + read_ns(t->next_read * C.threads + t->id) : UINT64_MAX;
			uint64_t th = t->nheap ? t->heap[0].due : UINT64_MAX;
			if (ta < wake) wake = ta;
			if (tr < wake) wake = tr;
			if (th < wake) wake = th;
		}
		if (wake > now + 50 * NS_PER_MS)
			wake = now + 50 * NS_PER_MS;     /* check the end conditions */
		/* at least 200 µs per sleep: fewer wake-ups, a few requests per
		 * wake-up (each keeps its intended time, so the delay is counted) */
		uint64_t d = wake > now ? wake - now : 0;
		if (d > 0 && d < 200 * 1000)
			d = 200 * 1000;
		struct timespec ts = { (time_t)(d / NS_PER_S), (long)(d % NS_PER_S) };
		int n = epoll_pwait2(t->epfd, evs, EVENTS_MAX, &ts, NULL);
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = &t->conns[evs[i].data.u32];
			if (c->fd < 0)
				continue;
			conn_event(t, c, evs[i].events, now);
		}
		if (now - last_check > 100 * NS_PER_MS) {
			last_check = now;
			for (unsigned i = 0; i < t->nconn; i++) {
				struct conn *c = &t->conns[i];
				if (c->state == CS_BUSY && now - c->sent_ns > timeout_ns)
					conn_failed(t, c, true, now);
				else if (c->state == CS_DEAD)
					conn_open(t, c);
			}
		}
	}
	/* drain: no new requests; wait for what is in flight */
	uint64_t drain_end = now_ns() + (uint64_t)(C.drain_s * 1e9);
	for (;;) {
		unsigned busy = 0;
		for (unsigned i = 0; i < t->nconn; i++)
			busy += t->conns[i].state == CS_BUSY;
		uint64_t now = now_ns();
		if (busy == 0 || now >= drain_end)
			break;
		uint64_t d = drain_end - now;
		if (d > 10 * NS_PER_MS)
			d = 10 * NS_PER_MS;
		struct timespec ts = { 0, (long)d };
		int n = epoll_pwait2(t->epfd, evs, EVENTS_MAX, &ts, NULL);
		now = now_ns();
		for (int i = 0; i < n; i++) {
			struct conn *c = &t->conns[evs[i].data.u32];
			if (c->fd < 0)
				continue;
			if (c->state == CS_BUSY && (evs[i].events & EPOLLIN)) {
				/* answers still count; the agents' next steps will not be sent */
				conn_readable(t, c, now);
			} else if (c->state == CS_BUSY) {
				conn_event(t, c, evs[i].events, now);
			}
		}
	}
	for (unsigned i = 0; i < t->nconn; i++) {
		if (t->conns[i].state == CS_BUSY)
			t->st.unanswered_end++;
		conn_close(t, &t->conns[i]);
	}
	return NULL;
}

/* ---- results ---------------------------------------------------------- */

static void merge(struct stats *d, const struct stats *s)
{
	for (int e = 0; e < EP_COUNT; e++) {
		hist_merge(&d->lat[e], &s->lat[e]);
		hist_merge(&d->svc[e], &s->svc[e]);
		for (int w = 0; w < W_COUNT; w++)
			for (int r = 0; r < RS_COUNT; r++)
				d->ans[e][w][r] += s->ans[e][w][r];
	}
	hist_merge(&d->backlog, &s->backlog);
	hist_merge(&d->fs_first_answer, &s->fs_first_answer);
#define SUM(f) d->f += s->f
	SUM(sent); SUM(answered); SUM(transport); SUM(timeouts); SUM(reconnects); SUM(unanswered_end);
	SUM(connect_errors);
	SUM(reads_checked); SUM(violations); SUM(bad_reads); SUM(streams_sent);
	for (int k = 0; k < 2; k++) {
		SUM(units[k]); SUM(paid[k]); SUM(declined[k]); SUM(arrived[k]);
		SUM(arrived_before_sellout[k]); SUM(q429[k]); SUM(q429_with_pos[k]); SUM(agents_429[k]);
	}
	SUM(fs_arrived); SUM(fs_answered); SUM(fs_final); SUM(fs_429); SUM(fs_429_pos); SUM(fs_unanswered);
#undef SUM
#define MAX(f) if (s->f > d->f) d->f = s->f
	MAX(max_committed); MAX(total_seen); MAX(max_queue_pos); MAX(fs_max_pos); MAX(last_201_ns);
#undef MAX
#define MINNZ(f) if (s->f && (!d->f || s->f < d->f)) d->f = s->f
	MINNZ(sold_out_ns); MINNZ(all_sold_ns); MINNZ(first_win_ns);
#undef MINNZ
}

static void json_hist(FILE *f, const struct hist *h)
{
	fprintf(f, "{\"count\":%" PRIu64, h->count);
	if (h->count) {
		static const double ps[] = { 50, 90, 95, 99, 99.9 };
		static const char *pn[] = { "p50", "p90", "p95", "p99", "p999" };
		for (int i = 0; i < 5; i++)
			fprintf(f, ",\"%s\":%.3f", pn[i], hist_percentile_ns(h, ps[i]) / 1e6);
		fprintf(f, ",\"max\":%.3f,\"mean\":%.3f", h->max_ns / 1e6, hist_mean_ns(h) / 1e6);
	}
	fputc('}', f);
}

static void json_opt_s(FILE *f, const char *name, uint64_t ns)
{
	if (ns)
		fprintf(f, "\"%s\":%.3f", name, ns / 1e9);
	else
		fprintf(f, "\"%s\":null", name);
}

/* The waiting room, per agent (computed once the threads are done). */
struct wroom {
	uint64_t early[2], early_queued[2], early_unanswered[2], early_other[2];
	uint64_t early_rs[RS_COUNT];      /* first answers of early agents that were not 202 QUEUED */
	uint64_t at_opening[2];           /* first attempt within the margin of the opening */
	uint64_t queued[2], won_early[2], won_late[2], rejected[2], still_queued[2];
	uint64_t fs_queued;               /* first-second humans whose first answer was 202 QUEUED + id + position */
};

static void wroom_count(struct wroom *w)
{
	memset(w, 0, sizeof(*w));
	uint64_t margin = (uint64_t)(C.early_margin_ms * NS_PER_MS);
	for (uint32_t i = 0; i < g_agent_count; i++) {
		const struct agent *a = &g_agents[i];
		int k = a->kind;
		bool early = a->first_try_ns != 0 && a->first_try_ns - 1 + margin <= g_open_rel_ns;
		if (a->first_try_ns != 0 && !early && a->first_try_ns - 1 <= g_open_rel_ns + margin)
			w->at_opening[k]++;
		if (early) {
			w->early[k]++;
			if (a->flags & AF_FIRST_Q)
				w->early_queued[k]++;
			else if (!(a->flags & AF_ANSWERED))
				w->early_unanswered[k]++;
			else {
				w->early_other[k]++;
				w->early_rs[a->first_rs < RS_COUNT ? a->first_rs : RS_4XX]++;
			}
		}
		if (k == W_HUMAN && a->arrive_ns < NS_PER_S && (a->flags & AF_FIRST_Q))
			w->fs_queued++;
		if (a->flags & AF_QUEUED)
			w->queued[k]++;
		if (a->flags & AF_WON) {
			if (early)
				w->won_early[k]++;
			else
				w->won_late[k]++;
		}
		if (a->flags & AF_REJECTED)
			w->rejected[k]++;
		else if ((a->flags & AF_QUEUED) && !(a->flags & AF_WON))
			w->still_queued[k]++;
	}
}

static void json_wroom(FILE *f, const struct wroom *w)
{
#define PAIR(name, v) fprintf(f, "\"%s\":{\"humans\":%" PRIu64 ",\"bots\":%" PRIu64 "},", name, v[0], v[1])
	fprintf(f, "\"waiting_room\":{\"opens_at_ms\":%" PRId64 ",\"opening_s\":%.3f,\"early_margin_ms\":%.1f,"
	        "\"queue_poll_ms\":%.1f,\"bot_poll_ms\":%.1f,",
	        C.opens_at_ms, g_open_rel_ns / 1e9, C.early_margin_ms, C.queue_poll_ms, C.bot_poll_ms);
	PAIR("early", w->early);
	PAIR("early_queued", w->early_queued);
	PAIR("early_unanswered", w->early_unanswered);
	PAIR("early_other", w->early_other);
	PAIR("at_opening", w->at_opening);
	PAIR("queued", w->queued);
	PAIR("won_early", w->won_early);
	PAIR("won_late", w->won_late);
	PAIR("rejected", w->rejected);
	PAIR("still_queued", w->still_queued);
#undef PAIR
	fprintf(f, "\"early_other_answers\":{");
	bool first = true;
	for (int r = 0; r < RS_COUNT; r++) {
		if (!w->early_rs[r])
			continue;
		fprintf(f, "%s\"%s\":%" PRIu64, first ? "" : ",", rs_name[r], w->early_rs[r]);
		first = false;
	}
	fprintf(f, "},\"first_second_humans_queued\":%" PRIu64 "},\n", w->fs_queued);
}

static int write_json(const char *path, const struct stats *st, const struct second *ser, uint32_t nser,
                      double elapsed_s, uint32_t bots, const struct wroom *wr)
{
	FILE *f = strcmp(path, "-") == 0 ? stdout : fopen(path, "w");
	if (f == NULL) {
		perror(path);
		return -1;
	}
	fprintf(f, "{\"config\":{\"sku\":\"%s\",\"humans\":%u,\"bots\":%u,\"bot_share\":%.4f,"
	        "\"rate\":%.1f,\"read_share\":%.3f,\"ramp_s\":%.3f,\"duration_s\":%.3f,\"think_ms\":%.1f,"
	        "\"interval_ms\":%.1f,\"pay_think_ms\":%.1f,\"speedup\":%.1f,\"linger_s\":%.3f,\"after_sellout_s\":%.3f,"
	        "\"threads\":%u,\"connections\":%u,\"pay\":\"%s\",\"seed\":%" PRIu64 "},\n",
	        C.sku, C.humans, bots, C.bot_share, C.rate, C.read_share, C.ramp_s, C.duration_s,
	        C.think_ms, C.interval_ms, C.pay_think_ms, C.speedup, C.linger_s, C.after_sellout_s, C.threads,
	        C.connections, C.pay, C.seed);
	fprintf(f, "\"elapsed_s\":%.3f,\"ended_by\":\"%s\",\"agents_left\":%" PRIu64 ",\n", elapsed_s,
	        end_name[atomic_load(&g_ended_by)], (uint64_t)atomic_load(&g_agents_left));
	json_opt_s(f, "sold_out_s", st->sold_out_ns);
	fputc(',', f);
	json_opt_s(f, "last_201_s", st->last_201_ns);
	fputc(',', f);
	json_opt_s(f, "all_sold_s", st->all_sold_ns);
	fputc(',', f);
	json_opt_s(f, "first_win_s", st->first_win_ns);
	fprintf(f, ",\n");
	if (wr != NULL)
		json_wroom(f, wr);
	fprintf(f, "\"population\":{\"humans\":%u,\"bots\":%u,\"arrived_humans\":%" PRIu64
	        ",\"arrived_bots\":%" PRIu64 ",\"arrived_before_sellout_humans\":%" PRIu64
	        ",\"arrived_before_sellout_bots\":%" PRIu64 "},\n",
	        C.humans, bots, st->arrived[0], st->arrived[1], st->arrived_before_sellout[0],
	        st->arrived_before_sellout[1]);
	fprintf(f, "\"units\":{\"humans\":%" PRIu64 ",\"bots\":%" PRIu64 "},"
	        "\"paid\":{\"humans\":%" PRIu64 ",\"bots\":%" PRIu64 "},"
	        "\"declined\":{\"humans\":%" PRIu64 ",\"bots\":%" PRIu64 "},\n",
	        st->units[0], st->units[1], st->paid[0], st->paid[1], st->declined[0], st->declined[1]);
	fprintf(f, "\"answers\":{");
	for (int e = 0; e < EP_COUNT; e++) {
		fprintf(f, "%s\"%s\":{", e ? "," : "", ep_name[e]);
		bool firstw = true;
		for (int w = 0; w < W_COUNT; w++) {
			bool any = false;
			for (int r = 0; r < RS_COUNT; r++)
				any |= st->ans[e][w][r] != 0;
			if (!any)
				continue;
			fprintf(f, "%s\"%s\":{", firstw ? "" : ",", who_name[w]);
			firstw = false;
			bool firstr = true;
			for (int r = 0; r < RS_COUNT; r++) {
				if (!st->ans[e][w][r])
					continue;
				fprintf(f, "%s\"%s\":%" PRIu64, firstr ? "" : ",", rs_name[r], st->ans[e][w][r]);
				firstr = false;
			}
			fputc('}', f);
		}
		fputc('}', f);
	}
	fprintf(f, "},\n\"latency_ms\":{");
	for (int e = 0; e < EP_COUNT; e++) {
		fprintf(f, "%s\"%s\":", e ? "," : "", ep_name[e]);
		json_hist(f, &st->lat[e]);
	}
	fprintf(f, "},\n\"service_latency_ms\":{");
	for (int e = 0; e < EP_COUNT; e++) {
		fprintf(f, "%s\"%s\":", e ? "," : "", ep_name[e]);
		json_hist(f, &st->svc[e]);
	}
	fprintf(f, "},\n\"generator_backlog_ms\":");
	json_hist(f, &st->backlog);
	fprintf(f, ",\n\"first_second_humans\":{\"arrived\":%" PRIu64 ",\"answered\":%" PRIu64
	        ",\"final\":%" PRIu64 ",\"got_429\":%" PRIu64 ",\"got_429_with_position\":%" PRIu64
	        ",\"max_queue_position\":%" PRIu64 ",\"unanswered\":%" PRIu64 ",\"first_answer_ms\":",
	        st->fs_arrived, st->fs_answered, st->fs_final, st->fs_429, st->fs_429_pos, st->fs_max_pos,
	        st->fs_unanswered);
	json_hist(f, &st->fs_first_answer);
	fprintf(f, "},\n\"rate_limited\":{\"answers_humans\":%" PRIu64 ",\"answers_bots\":%" PRIu64
	        ",\"with_position_humans\":%" PRIu64 ",\"with_position_bots\":%" PRIu64
	        ",\"agents_humans\":%" PRIu64 ",\"agents_bots\":%" PRIu64 ",\"max_queue_position\":%" PRIu64 "},\n",
	        st->q429[0], st->q429[1], st->q429_with_pos[0], st->q429_with_pos[1],
	        st->agents_429[0], st->agents_429[1], st->max_queue_pos);
	fprintf(f, "\"oversell\":{\"reads_checked\":%" PRIu64 ",\"violations\":%" PRIu64
	        ",\"unparsable_reads\":%" PRIu64 ",\"max_committed\":%" PRIu64 ",\"total\":%" PRIu64 "},\n",
	        st->reads_checked, st->violations, st->bad_reads, st->max_committed, st->total_seen);
	fprintf(f, "\"requests\":{\"sent\":%" PRIu64 ",\"answered\":%" PRIu64 ",\"transport_errors\":%" PRIu64
	        ",\"timeouts\":%" PRIu64 ",\"unanswered_at_end\":%" PRIu64 ",\"reconnects\":%" PRIu64
	        ",\"connect_errors\":%" PRIu64 ",\"page_refreshes\":%" PRIu64 "},\n",
	        st->sent, st->answered, st->transport, st->timeouts, st->unanswered_end, st->reconnects,
	        st->connect_errors, st->streams_sent);
	fprintf(f, "\"series\":[");
	for (uint32_t i = 0; i < nser; i++) {
		const struct second *s = &ser[i];
		fprintf(f, "%s\n{\"t\":%u,\"answers\":%" PRIu64 ",\"reads\":%" PRIu64 ",\"reserves\":%" PRIu64
		        ",\"checkouts\":%" PRIu64 ",\"errors\":%" PRIu64 ",\"won_humans\":%" PRIu64
		        ",\"won_bots\":%" PRIu64 ",\"paid\":%" PRIu64 ",\"sold_out_answers\":%" PRIu64
		        ",\"rate_limited\":%" PRIu64,
		        i ? "," : "", i, s->answers, s->reads, s->reserves, s->checkouts, s->errors,
		        s->won[0], s->won[1], s->paid, s->sold_out, s->rate_limited);
		if (s->version >= 0)
			fprintf(f, ",\"available\":%" PRIu64 ",\"reserved\":%" PRIu64 ",\"sold\":%" PRIu64
			        ",\"total\":%" PRIu64 ",\"version\":%" PRId64,
			        s->available, s->reserved, s->sold, s->total, s->version);
		fputc('}', f);
	}
	fprintf(f, "]}\n");
	if (f != stdout && fclose(f) != 0) {
		perror(path);
		return -1;
	}
	return 0;
}

/* ---- flags ------------------------------------------------------------ */

static void usage(FILE *f)
{
	fprintf(f,
	  "usage: storm_crowd --port P --secret-file F --out FILE [options]\n"
	  "  (normally run by perf/storm; see the top of perf/storm_crowd.c for the model)\n"
	  "  --port P              flashsaled on 127.0.0.1:P\n"
	  "  --sku S               default storm\n"
	  "  --secret-file F       HS256 key file (bytes minus trailing whitespace)\n"
	  "  --humans N            default 200000\n"
	  "  --bot-share S         bots' share of the population, default 0.05\n"
	  "  --rate R              crowd's target requests/s after the ramp, default 20000\n"
	  "  --read-share X        share of R that is page refreshes, default 0.95\n"
	  "  --ramp S              seconds to reach R, default 3\n"
	  "  --duration S          hard cap from T0, default 60\n"
	  "  --think-ms T          human page -> click delay, uniform mean T, default 300\n"
	  "  --interval-ms T       human step interval (bots: / speedup), default 1000\n"
	  "  --pay-think-ms T      human reservation -> checkout, default 1000\n"
	  "  --speedup X           bots vs humans, default 100\n"
	  "  --linger S            losers keep polling/hammering this long, default 2\n"
	  "  --after-sellout S     end S seconds after every unit is paid (< 0: never), default 5\n"
	  "  --pay TOKEN           payment token, default tok_ok\n"
	  "  --threads N           default 1\n"
	  "  --connections N       keep-alive connections in all, default 256\n"
	  "  --timeout-ms T        per answer, default 10000\n"
	  "  --drain S             wait for answers after the end, default 3\n"
	  "  --seed N              default 1\n"
	  "  --cpu N               pin every thread to CPU N\n"
	  "  --no-wait             start at once instead of waiting for a line on stdin\n"
	  "  --waiting-room        the sale has a waiting room (see the top of this file)\n"
	  "  --opens-at-ms U       its opening, unix ms (else from the go line: \"go U\")\n"
	  "  --queue-poll-ms T     human: between polls of a queued reservation, U(0.5, 1.5) * T, default 1000\n"
	  "  --bot-poll-ms T       bot: between polls, default 100\n"
	  "  --early-margin-ms T   early = first attempt sent > T before the opening, default 100\n");
}

static int parse_flags(int argc, char **argv)
{
	memset(&C, 0, sizeof(C));
	C.addr.sin_family = AF_INET;
	C.addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	snprintf(C.sku, sizeof(C.sku), "storm");
	snprintf(C.pay, sizeof(C.pay), "tok_ok");
	C.humans = 200000;
	C.bot_share = 0.05;
	C.rate = 20000;
	C.read_share = 0.95;
	C.ramp_s = 3;
	C.duration_s = 60;
	C.think_ms = 300;
	C.interval_ms = 1000;
	C.pay_think_ms = 1000;
	C.speedup = 100;
	C.linger_s = 2;
	C.after_sellout_s = 5;
	C.timeout_ms = 10000;
	C.drain_s = 3;
	C.threads = 1;
	C.connections = 256;
	C.seed = 1;
	C.cpu = -1;
	C.queue_poll_ms = 1000;
	C.bot_poll_ms = 100;
	C.early_margin_ms = 100;
	int port = 0;
	static const struct option opts[] = {
		{"port", 1, 0, 'p'}, {"sku", 1, 0, 's'}, {"secret-file", 1, 0, 'k'}, {"out", 1, 0, 'o'},
		{"humans", 1, 0, 'H'}, {"bot-share", 1, 0, 'b'}, {"rate", 1, 0, 'r'},
		{"read-share", 1, 0, 'R'}, {"ramp", 1, 0, 'a'}, {"duration", 1, 0, 'd'},
		{"think-ms", 1, 0, 't'}, {"interval-ms", 1, 0, 'i'}, {"pay-think-ms", 1, 0, 'P'},
		{"speedup", 1, 0, 'x'}, {"linger", 1, 0, 'l'}, {"after-sellout", 1, 0, 'A'}, {"pay", 1, 0, 'y'},
		{"threads", 1, 0, 'T'}, {"connections", 1, 0, 'c'}, {"timeout-ms", 1, 0, 'O'},
		{"drain", 1, 0, 'D'}, {"seed", 1, 0, 'S'}, {"cpu", 1, 0, 'C'}, {"no-wait", 0, 0, 'n'},
		{"waiting-room", 0, 0, 'w'}, {"opens-at-ms", 1, 0, 'W'}, {"queue-poll-ms", 1, 0, 'q'},
		{"bot-poll-ms", 1, 0, 'Q'}, {"early-margin-ms", 1, 0, 'm'},
		{"help", 0, 0, 'h'}, {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (o) {
		case 'p': port = atoi(optarg); break;
		case 's':
			if (strlen(optarg) == 0 || strlen(optarg) > SKU_MAX) {
				fprintf(stderr, "storm_crowd: --sku: 1..%d bytes\n", SKU_MAX);
				return 2;
			}
			snprintf(C.sku, sizeof(C.sku), "%s", optarg);
			break;
		case 'k': C.secret_path = optarg; break;
		case 'o': C.out_path = optarg; break;
		case 'H': C.humans = (uint32_t)strtoul(optarg, NULL, 10); break;
		case 'b': C.bot_share = atof(optarg); break;
		case 'r': C.rate = atof(optarg); break;
		case 'R': C.read_share = atof(optarg); break;
		case 'a': C.ramp_s = atof(optarg); break;
		case 'd': C.duration_s = atof(optarg); break;
		case 't': C.think_ms = atof(optarg); break;
		case 'i': C.interval_ms = atof(optarg); break;
		case 'P': C.pay_think_ms = atof(optarg); break;
		case 'x': C.speedup = atof(optarg); break;
		case 'l': C.linger_s = atof(optarg); break;
		case 'A': C.after_sellout_s = atof(optarg); break;
		case 'y':
			if (strlen(optarg) == 0 || strlen(optarg) > PAYTOK_MAX || strpbrk(optarg, "\"\\")) {
				fprintf(stderr, "storm_crowd: --pay: 1..%d plain bytes\n", PAYTOK_MAX);
				return 2;
			}
			snprintf(C.pay, sizeof(C.pay), "%s", optarg);
			break;
		case 'T': C.threads = (unsigned)atoi(optarg); break;
		case 'c': C.connections = (unsigned)atoi(optarg); break;
		case 'O': C.timeout_ms = atof(optarg); break;
		case 'D': C.drain_s = atof(optarg); break;
		case 'S': C.seed = strtoull(optarg, NULL, 10); break;
		case 'C': C.cpu = atoi(optarg); break;
		case 'n': C.no_wait = true; break;
		case 'w': C.waiting_room = true; break;
		case 'W': C.opens_at_ms = strtoll(optarg, NULL, 10); break;
		case 'q': C.queue_poll_ms = atof(optarg); break;
		case 'Q': C.bot_poll_ms = atof(optarg); break;
		case 'm': C.early_margin_ms = atof(optarg); break;
		case 'h': usage(stdout); exit(0);
		default: usage(stderr); return 2;
		}
	}
	const char *bad = NULL;
	if (optind != argc) bad = "unexpected argument";
	else if (port <= 0 || port > 65535) bad = "--port 1..65535 required";
	else if (C.secret_path == NULL) bad = "--secret-file required";
	else if (C.out_path == NULL) bad = "--out required";
	else if (C.humans == 0 || C.humans > 10000000) bad = "--humans 1..10000000";
	else if (!(C.bot_share >= 0 && C.bot_share < 0.9)) bad = "--bot-share 0..0.9";
	else if (!(C.rate > 0 && C.rate <= 10e6)) bad = "--rate 0..10000000";
	else if (!(C.read_share >= 0 && C.read_share < 1)) bad = "--read-share 0..<1";
	else if (!(C.ramp_s >= 0 && C.ramp_s <= 600)) bad = "--ramp 0..600";
	else if (!(C.duration_s > 0 && C.duration_s <= SERIES_MAX - 20)) bad = "--duration 0..3980";
	else if (!(C.think_ms >= 0) || !(C.interval_ms > 0) || !(C.pay_think_ms >= 0)) bad = "bad --*-ms";
	else if (!(C.speedup >= 1)) bad = "--speedup >= 1";
	else if (!(C.linger_s >= 0)) bad = "--linger >= 0";
	else if (C.threads < 1 || C.threads > THREADS_MAX) bad = "--threads 1..16";
	else if (C.connections < C.threads || C.connections > CONNS_MAX) bad = "--connections threads..8192";
	else if (!(C.timeout_ms > 0) || !(C.drain_s >= 0 && C.drain_s <= 60)) bad = "bad --timeout-ms/--drain";
	else if (C.waiting_room && C.no_wait && C.opens_at_ms <= 0) bad = "--waiting-room --no-wait needs --opens-at-ms";
	else if (!(C.queue_poll_ms > 0) || !(C.bot_poll_ms > 0) || !(C.early_margin_ms >= 0))
		bad = "bad --queue-poll-ms/--bot-poll-ms/--early-margin-ms";
	if (bad) {
		fprintf(stderr, "storm_crowd: %s\n", bad);
		return 2;
	}
	C.addr.sin_port = htons((uint16_t)port);
	return 0;
}

int main(int argc, char **argv)
{
	int rc = parse_flags(argc, argv);
	if (rc)
		return rc;
	uint8_t key[FS_SECRET_LEN_MAX];
	char err[160];
	int key_len = fs_secret_load(C.secret_path, key, err, sizeof(err));
	if (key_len <= 0) {
		fprintf(stderr, "storm_crowd: %s\n", err);
		return 2;
	}
	uint32_t bots = (uint32_t)llround(C.humans * C.bot_share / (1.0 - C.bot_share));
	g_agent_count = C.humans + bots;
	g_agents = calloc(g_agent_count, sizeof(*g_agents));
	g_tokens = malloc((size_t)g_agent_count * TOKEN_CAP);
	if (g_agents == NULL || g_tokens == NULL) {
		fprintf(stderr, "storm_crowd: out of memory for %u agents\n", g_agent_count);
		return 2;
	}
	/* kinds: bots are a random subset of the arrival ranks (Fisher-Yates) */
	uint64_t rng = C.seed * 0x9E3779B97F4A7C15ull + 1;
	for (uint32_t i = 0; i < g_agent_count; i++)
		g_agents[i].kind = i < bots ? W_BOT : W_HUMAN;
	for (uint32_t i = g_agent_count - 1; i > 0; i--) {
		uint32_t j = (uint32_t)(rng_next(&rng) % (i + 1));
		uint8_t k = g_agents[i].kind;
		g_agents[i].kind = g_agents[j].kind;
		g_agents[j].kind = k;
	}
	g_run_id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	size_t used = 0;
	uint32_t nh = 0, nb = 0;
	int64_t exp_s = (int64_t)time(NULL) + 86400;
	for (uint32_t i = 0; i < g_agent_count; i++) {
		struct agent *a = &g_agents[i];
		uint32_t ord = a->kind == W_BOT ? nb++ : nh++;
		struct fs_claims c = { .tier = (ord & 1) ? -1 : 4, .dev_len = 0, .exp_s = exp_s };
		c.sub_len = (uint8_t)snprintf(c.sub, sizeof(c.sub), "storm-%c%u", a->kind == W_BOT ? 'b' : 'h', ord);
		int n = fs_jwt_mint(key, (size_t)key_len, &c, g_tokens + used, TOKEN_CAP);
		if (n <= 0) {
			fprintf(stderr, "storm_crowd: fs_jwt_mint failed\n");
			return 2;
		}
		a->tok_off = (uint32_t)used;
		a->arrive_ns = arrival_ns(i);
		used += (size_t)n + 1;
	}
	atomic_store(&g_agents_left, g_agent_count);

	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_sigint;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);

	uint32_t nser = (uint32_t)(C.duration_s + C.drain_s + 3);
	struct thr *th = calloc(C.threads, sizeof(*th));
	if (th == NULL)
		return 2;
	for (unsigned i = 0; i < C.threads; i++) {
		struct thr *t = &th[i];
		t->id = i;
		t->next_rank = i;
		t->rng = C.seed * 0xD1B54A32D192ED03ull + i * 7919 + 17;
		t->nconn = C.connections / C.threads + (i < C.connections % C.threads);
		t->conns = calloc(t->nconn, sizeof(*t->conns));
		t->idle = calloc(t->nconn, sizeof(*t->idle));
		t->series = calloc(nser, sizeof(*t->series));
		t->nseries = nser;
		t->epfd = epoll_create1(EPOLL_CLOEXEC);
		if (t->conns == NULL || t->idle == NULL || t->series == NULL || t->epfd < 0) {
			fprintf(stderr, "storm_crowd: out of memory or epoll\n");
			return 2;
		}
		for (uint32_t s = 0; s < nser; s++)
			t->series[s].version = -1;
		for (int e = 0; e < EP_COUNT; e++) {
			hist_reset(&t->st.lat[e]);
			hist_reset(&t->st.svc[e]);
		}
		hist_reset(&t->st.backlog);
		hist_reset(&t->st.fs_first_answer);
		for (unsigned c = 0; c < t->nconn; c++) {
			t->conns[c].fd = -1;
			conn_open(t, &t->conns[c]);
		}
	}
	/* wait for every connection to be up (bounded) */
	uint64_t until = now_ns() + 5 * NS_PER_S;
	for (;;) {
		unsigned up = 0, want = 0;
		for (unsigned i = 0; i < C.threads; i++) {
			struct thr *t = &th[i];
			struct epoll_event evs[EVENTS_MAX];
			int n = epoll_wait(t->epfd, evs, EVENTS_MAX, 5);
			for (int e = 0; e < n; e++)
				conn_event(t, &t->conns[evs[e].data.u32], evs[e].events, now_ns());
			up += t->nidle;
			want += t->nconn;
		}
		if (up == want)
			break;
		for (unsigned i = 0; i < C.threads; i++)
			for (unsigned c = 0; c < th[i].nconn; c++)
				if (th[i].conns[c].state == CS_DEAD)
					conn_open(&th[i], &th[i].conns[c]);
		if (now_ns() > until) {
			fprintf(stderr, "storm_crowd: only %u of %u connections came up\n", up, want);
			return 1;
		}
	}
	for (unsigned i = 0; i < C.threads; i++)
		th[i].st.reconnects = th[i].st.connect_errors = 0;
	if (!C.no_wait) {
		printf("ready %u agents (%u humans, %u bots), %u connections\n", g_agent_count, C.humans, bots,
		       C.connections);
		fflush(stdout);
		char line[64];
		if (fgets(line, sizeof(line), stdin) == NULL) {
			fprintf(stderr, "storm_crowd: stdin closed before go\n");
			return 1;
		}
		long long u;
		if (sscanf(line, "go %lld", &u) == 1 && u > 0)
			C.opens_at_ms = u;
		if (C.waiting_room && C.opens_at_ms <= 0) {
			fprintf(stderr, "storm_crowd: --waiting-room: no opening time (--opens-at-ms or \"go U\")\n");
			return 2;
		}
	}
	g_t0 = now_ns();
	if (C.waiting_room) {
		struct timespec wall;
		clock_gettime(CLOCK_REALTIME, &wall);
		int64_t wall_ms = (int64_t)wall.tv_sec * 1000 + wall.tv_nsec / 1000000;
		g_open_rel_ns = C.opens_at_ms > wall_ms ? (uint64_t)(C.opens_at_ms - wall_ms) * NS_PER_MS : 0;
	}
	for (unsigned i = 0; i < C.threads; i++) {
		if (pthread_create(&th[i].tid, NULL, thread_main, &th[i]) != 0) {
			fprintf(stderr, "storm_crowd: pthread_create failed\n");
			return 2;
		}
	}
	for (unsigned i = 0; i < C.threads; i++)
		pthread_join(th[i].tid, NULL);
	double elapsed = (now_ns() - g_t0) / 1e9;

	struct stats *tot = calloc(1, sizeof(*tot));
	struct second *ser = calloc(nser, sizeof(*ser));
	if (tot == NULL || ser == NULL)
		return 2;
	for (int e = 0; e < EP_COUNT; e++) {
		hist_reset(&tot->lat[e]);
		hist_reset(&tot->svc[e]);
	}
	hist_reset(&tot->backlog);
	hist_reset(&tot->fs_first_answer);
	for (uint32_t s = 0; s < nser; s++)
		ser[s].version = -1;
	uint32_t last_used = 0;
	for (unsigned i = 0; i < C.threads; i++) {
		merge(tot, &th[i].st);
		for (uint32_t s = 0; s < nser; s++) {
			struct second *d = &ser[s], *x = &th[i].series[s];
			d->answers += x->answers; d->reads += x->reads; d->reserves += x->reserves;
			d->checkouts += x->checkouts; d->errors += x->errors; d->won[0] += x->won[0];
			d->won[1] += x->won[1]; d->sold_out += x->sold_out; d->rate_limited += x->rate_limited;
			d->paid += x->paid;
			if (x->version > d->version) {
				d->version = x->version; d->available = x->available; d->reserved = x->reserved;
				d->sold = x->sold; d->total = x->total;
			}
			if (x->answers)
				last_used = s > last_used ? s : last_used;
		}
	}
	/* first-second humans that never got an answer */
	for (uint32_t i = 0; i < g_agent_count; i++) {
		struct agent *a = &g_agents[i];
		if (a->kind == W_HUMAN && a->arrive_ns < NS_PER_S && !(a->flags & AF_ANSWERED) &&
		    a->arrive_ns <= (uint64_t)(elapsed * 1e9))
			tot->fs_unanswered++;
	}
	struct wroom wr;
	if (C.waiting_room)
		wroom_count(&wr);
	rc = write_json(C.out_path, tot, ser, last_used + 1, elapsed, bots, C.waiting_room ? &wr : NULL) != 0;
	for (unsigned i = 0; i < C.threads; i++) {
		close(th[i].epfd);
		free(th[i].conns);
		free(th[i].idle);
		free(th[i].series);
		free(th[i].heap);
	}
	free(th);
	free(tot);
	free(ser);
	free(g_agents);
	free(g_tokens);
	return rc;
}
