/* load_rate.h - the open-loop request schedule and the per-connection
 * in-flight FIFO, with no I/O and no clock of their own (callers pass
 * now_ns), so tests drive them with an injected clock.
 *
 * Open loop (as wrk2): request i is INTENDED to be sent at
 * start_ns + i * interval. A request that could not be sent on time (all
 * connections busy because the server is slow) stays in the backlog and
 * keeps its intended time; its latency is measured from that intended time,
 * so the queueing delay a real client would see is counted (no coordinated
 * omission). Closed loop: the intended time is the actual send time.
 */
#ifndef PERF_LOAD_RATE_H
#define PERF_LOAD_RATE_H

#include <stdbool.h>
#include <stdint.h>

struct lr_sched {
	uint64_t start_ns;
	double   interval_ns;   /* 1e9 / rate */
	uint64_t issued;        /* requests handed out so far */
	uint64_t issued_max;    /* bound on the whole run */
};

/* rate_per_s > 0. issued_max bounds the number of requests ever issued. */
void lr_sched_init(struct lr_sched *s, uint64_t start_ns, double rate_per_s,
                   uint64_t issued_max);

/* Intended send time of request i. */
uint64_t lr_intended_ns(const struct lr_sched *s, uint64_t i);

/* If the next request is due (intended time <= now_ns) and issued_max is not
 * reached: hands it out (issued++), stores its intended time and returns
 * true. Otherwise returns false and changes nothing. */
bool lr_take_due(struct lr_sched *s, uint64_t now_ns, uint64_t *intended_ns);

/* Requests due at now_ns but not yet handed out. */
uint64_t lr_backlog(const struct lr_sched *s, uint64_t now_ns);

/* Intended time of the next request (UINT64_MAX once issued_max is reached). */
uint64_t lr_next_ns(const struct lr_sched *s);

/* In-flight requests of one connection, oldest first: HTTP/1.1 answers come
 * back in order, so the head is the one the next answer belongs to. */
#define LR_INFLIGHT_MAX 64

struct lr_inflight {
	uint64_t intended_ns[LR_INFLIGHT_MAX];
	uint8_t  op[LR_INFLIGHT_MAX];        /* caller's request kind */
	uint32_t head;
	uint32_t count;
};

void lr_inflight_reset(struct lr_inflight *f);

/* Appends; returns false (and changes nothing) when full. */
bool lr_inflight_push(struct lr_inflight *f, uint64_t intended_ns, uint8_t op);

/* Removes the oldest entry and returns its latency at now_ns (0 if now_ns is
 * before the intended time); *op gets its kind. f must not be empty. */
uint64_t lr_inflight_pop(struct lr_inflight *f, uint64_t now_ns, uint8_t *op);

/* Intended time of the oldest entry; f must not be empty. */
uint64_t lr_inflight_oldest_ns(const struct lr_inflight *f);

#endif
