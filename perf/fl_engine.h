/* fl_engine.h - flashload's engine: T threads, each with its own epoll loop
 * over its share of N keep-alive HTTP/1.1 connections, sending our API's
 * requests closed-loop or open-loop (load_rate.h) and recording latencies
 * (hist.h). flashload.c is only flags and printing around fl_run(), so
 * tests drive the same engine against their own servers.
 */
#ifndef PERF_FL_ENGINE_H
#define PERF_FL_ENGINE_H

#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>

#include "hist.h"

#define FL_THREADS_MAX      64
#define FL_CONNS_MAX        20000
#define FL_PIPELINE_MAX     32
#define FL_DURATION_S_MAX   600.0
#define FL_STATUS_MAX       600
#define FL_SKU_LEN_MAX      32
#define FL_PAYTOK_LEN_MAX   64

enum fl_scenario { FL_SC_READS, FL_SC_RESERVE, FL_SC_MIXED, FL_SC_CHECKOUT };

enum fl_op { FL_OP_READ, FL_OP_RESERVE, FL_OP_CHECKOUT, FL_OP_COUNT };

enum fl_err {
	FL_E_CONNECT,    /* connect() failed or refused */
	FL_E_READ,       /* read error or reset */
	FL_E_WRITE,      /* write error */
	FL_E_PARSE,      /* malformed answer */
	FL_E_LOST,       /* in flight on a connection the server closed */
	FL_E_TIMEOUT,    /* no answer within timeout, or not drained at the end */
	FL_E_NO_RES_ID,  /* checkout: a 2xx reservation without reservation_id */
	FL_E_COUNT
};

struct fl_config {
	struct sockaddr_in addr;
	char     host[64];                  /* Host header */
	unsigned connections;               /* total, split over threads */
	unsigned threads;
	unsigned pipeline;                  /* requests in flight per connection */
	double   duration_s;
	double   rate_per_s;                /* 0: closed loop */
	enum fl_scenario scenario;
	unsigned mixed_reserve_pct;         /* mixed: share of reservations */
	char     sku[FL_SKU_LEN_MAX + 1];
	unsigned sku_count;                 /* > 1: each request picks SKU "<sku>-<i>", i < sku_count, at random */
	char     payment_token[FL_PAYTOK_LEN_MAX + 1];
	const char     *tokens;             /* arena of NUL-terminated JWTs */
	const uint32_t *token_off;          /* users offsets into tokens */
	uint32_t users;                     /* 0: no Authorization header */
	int      cpus[FL_THREADS_MAX];      /* pin thread i to cpus[i % cpu_count] */
	unsigned cpu_count;
	uint64_t timeout_ns;                /* per answer */
	uint64_t drain_ns;                  /* after duration: wait for answers */
	uint64_t run_id;                    /* makes Idempotency-Keys unique */
	uint64_t start_delay_ns;            /* connect phase before the clock starts */
};

/* One second of the run (time series for plots), by answer time. */
struct fl_second {
	uint64_t answers;
	uint64_t errors;
	struct hist latency;
};

struct fl_results {
	struct hist all;                    /* every answer */
	struct hist op[FL_OP_COUNT];
	uint64_t status[FL_OP_COUNT][FL_STATUS_MAX];
	uint64_t errors[FL_E_COUNT];
	uint64_t answers;
	uint64_t sent;
	uint64_t unsent_backlog;            /* open loop: due but never sent */
	uint64_t reconnects;
	double   elapsed_s;                 /* start to last answer/drain end */
	uint32_t second_count;
	struct fl_second *seconds;          /* second_count entries */
};

/* Set (from a signal handler) to stop every running fl_run early. */
extern volatile sig_atomic_t fl_stop;

/* Fills defaults: 1 thread, 10 connections, pipeline 1, 10 s, closed loop,
 * reads of "demo", 5 % reservations in mixed, timeout 10 s, drain 2 s. */
void fl_config_default(struct fl_config *c);

/* Checks bounds; returns NULL or a one-line reason. */
const char *fl_config_check(const struct fl_config *c);

/* Runs the load. Allocates *r (free with fl_results_free). Returns 0, or -1
 * with errno when threads or memory could not be had. */
int fl_run(const struct fl_config *c, struct fl_results **r);

void fl_results_free(struct fl_results *r);

const char *fl_err_name(enum fl_err e);
const char *fl_op_name(enum fl_op op);

/* Monotonic clock in ns. */
uint64_t fl_now_ns(void);

#endif
