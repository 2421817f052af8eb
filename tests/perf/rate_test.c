/* rate_test.c - perf/load_rate.c with an injected clock: the open-loop
 * schedule sends at the asked rate, and against a simulated slow server the
 * latency includes the queueing delay from the intended send time. Also the
 * response framing (http_resp.c) and /proc stat parsing (proc_cpu.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "hist.h"
#include "http_resp.h"
#include "load_rate.h"
#include "proc_cpu.h"

#define MS 1000000ull

static void test_schedule_rate(void **state)
{
	(void)state;
	struct lr_sched s;
	const uint64_t t0 = 5 * MS;
	lr_sched_init(&s, t0, 1000.0, 100);          /* 1 per ms, 100 in all */
	uint64_t when;
	assert_false(lr_take_due(&s, t0 - 1, &when));
	assert_true(lr_take_due(&s, t0, &when));
	assert_int_equal(when, t0);
	assert_false(lr_take_due(&s, t0 + MS / 2, &when));
	assert_int_equal(lr_next_ns(&s), t0 + MS);
	/* 10 ms later (a stalled client): 10 due, each keeps its intended time */
	assert_int_equal(lr_backlog(&s, t0 + 10 * MS), 10);
	for (uint64_t i = 1; i <= 10; i++) {
		assert_true(lr_take_due(&s, t0 + 10 * MS, &when));
		assert_int_equal(when, t0 + i * MS);
	}
	assert_false(lr_take_due(&s, t0 + 10 * MS, &when));
	assert_int_equal(lr_backlog(&s, t0 + 10 * MS), 0);
	/* the bound: never more than issued_max */
	uint64_t n = s.issued;
	while (lr_take_due(&s, t0 + 1000 * MS, &when))
		n++;
	assert_int_equal(n, 100);
	assert_int_equal(lr_next_ns(&s), UINT64_MAX);
	assert_int_equal(lr_backlog(&s, t0 + 1000 * MS), 0);
}

static void test_schedule_count_over_time(void **state)
{
	(void)state;
	struct lr_sched s;
	lr_sched_init(&s, 0, 333.0, 1000000);        /* awkward rate: 3.003 ms */
	uint64_t when, taken = 0;
	for (uint64_t now = 0; now < 3000 * MS; now += 7 * MS / 10)
		while (lr_take_due(&s, now, &when))
			taken++;
	/* 3 s at 333/s: 999 or 1000 (the first is at t = 0) */
	assert_true(taken >= 999 && taken <= 1000);
}

static void test_inflight_fifo(void **state)
{
	(void)state;
	struct lr_inflight f;
	lr_inflight_reset(&f);
	for (int i = 0; i < LR_INFLIGHT_MAX; i++)
		assert_true(lr_inflight_push(&f, (uint64_t)i * MS, (uint8_t)(i % 3)));
	assert_false(lr_inflight_push(&f, 0, 0));
	uint8_t op;
	assert_int_equal(lr_inflight_oldest_ns(&f), 0);
	assert_int_equal(lr_inflight_pop(&f, 10 * MS, &op), 10 * MS);
	assert_int_equal(op, 0);
	assert_int_equal(lr_inflight_pop(&f, 10 * MS, &op), 9 * MS);
	assert_int_equal(op, 1);
	assert_true(lr_inflight_push(&f, 99, 2));   /* wraps around */
	assert_int_equal(f.count, LR_INFLIGHT_MAX - 1);
	assert_int_equal(lr_inflight_pop(&f, 0, &op), 0);   /* never negative */
}

/* Discrete-event model of flashload's open loop against one FIFO server:
 * `conns` connections with one request in flight each, service_ns per
 * request. Uses the same schedule and FIFO as the engine. */
static void simulate(struct hist *h, double rate, uint64_t count, unsigned conns,
                     uint64_t service_ns)
{
	struct lr_sched s;
	lr_sched_init(&s, 0, rate, count);
	struct lr_inflight f[8];
	uint64_t done_at[8] = { 0 };
	assert_true(conns <= 8);
	for (unsigned c = 0; c < conns; c++)
		lr_inflight_reset(&f[c]);
	uint64_t server_free_ns = 0, now = 0, answered = 0;
	while (answered < count) {
		for (unsigned c = 0; c < conns; c++) {          /* dispatch */
			uint64_t intended;
			if (f[c].count == 0 && lr_take_due(&s, now, &intended)) {
				lr_inflight_push(&f[c], intended, 0);
				uint64_t begin = now > server_free_ns ? now : server_free_ns;
				server_free_ns = begin + service_ns;
				done_at[c] = server_free_ns;
			}
		}
		uint64_t next = UINT64_MAX;                      /* next event */
		for (unsigned c = 0; c < conns; c++) {
			if (f[c].count == 0 && lr_next_ns(&s) < next)
				next = lr_next_ns(&s);   /* a free connection waits for the schedule */
			if (f[c].count && done_at[c] < next)
				next = done_at[c];
		}
		assert_true(next != UINT64_MAX && next >= now);
		now = next;
		for (unsigned c = 0; c < conns; c++)
			if (f[c].count && done_at[c] <= now) {
				hist_record(h, lr_inflight_pop(&f[c], now, NULL));
				answered++;
			}
	}
}

static void test_fast_server_no_queueing(void **state)
{
	(void)state;
	struct hist *h = malloc(sizeof(*h));
	hist_reset(h);
	simulate(h, 1000.0, 500, 1, MS / 2);        /* 0.5 ms work every 1 ms */
	assert_int_equal(h->count, 500);
	assert_int_equal(h->max_ns, MS / 2);
	assert_int_equal(h->min_ns, MS / 2);
	free(h);
}

static void test_slow_server_counts_queueing(void **state)
{
	(void)state;
	struct hist *h = malloc(sizeof(*h));
	hist_reset(h);
	/* 1000 req/s asked, the server does 500/s: request k is intended at
	 * k ms and answered at (k+1)*2 ms, so its latency is (k+2) ms, not the
	 * 2 ms a closed-loop client would report. */
	simulate(h, 1000.0, 200, 1, 2 * MS);
	assert_int_equal(h->count, 200);
	assert_int_equal(h->min_ns, 2 * MS);
	assert_int_equal(h->max_ns, 201 * MS);
	uint64_t p50 = hist_percentile_ns(h, 50);    /* k = 99 -> 101 ms */
	assert_true(p50 >= 101 * MS && p50 <= 101 * MS + 101 * MS / 128);
	/* more connections do not hide it: the server is the queue */
	hist_reset(h);
	simulate(h, 1000.0, 200, 4, 2 * MS);
	assert_true(hist_percentile_ns(h, 50) > 50 * MS);
	free(h);
}

static void test_http_framing(void **state)
{
	(void)state;
	struct hr_resp r;
	const char *ok = "HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n"
	                 "content-length: 31\r\n\r\n{\"reservation_id\":\"r-42\",\"x\":1}";
	size_t ok_len = strlen(ok);
	assert_int_equal(hr_parse(ok, ok_len - 1, &r), 0);        /* body short */
	assert_int_equal(hr_parse(ok, 20, &r), 0);                /* headers short */
	assert_int_equal(hr_parse(ok, ok_len, &r), (long)ok_len);
	assert_int_equal(r.status, 201);
	assert_int_equal(r.body_len, 31);
	assert_false(r.close);
	char id[16];
	assert_int_equal(hr_json_str(ok + r.header_len, r.body_len, "reservation_id", id, sizeof(id)), 4);
	assert_string_equal(id, "r-42");
	assert_int_equal(hr_json_str(ok + r.header_len, r.body_len, "order_id", id, sizeof(id)), -1);
	assert_int_equal(hr_json_str(ok + r.header_len, r.body_len, "reservation_id", id, 4), -1);

	const char *spaced = "{\"sku\": \"reservation_id\", \"reservation_id\" : \"r-7\"}";
	assert_int_equal(hr_json_str(spaced, strlen(spaced), "reservation_id", id, sizeof(id)), 3);
	assert_string_equal(id, "r-7");

	const char *two = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nokHTTP/1.1";
	assert_int_equal(hr_parse(two, strlen(two), &r), (long)strlen(two) - 8);
	assert_true(r.close);
	const char *chunked = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n";
	assert_int_equal(hr_parse(chunked, strlen(chunked), &r), -1);
	const char *junk = "SSH-2.0-OpenSSH\r\n\r\n";
	assert_int_equal(hr_parse(junk, strlen(junk), &r), -1);
	const char *nobody = "HTTP/1.1 204 No Content\r\n\r\n";
	assert_int_equal(hr_parse(nobody, strlen(nobody), &r), (long)strlen(nobody));
}

static void test_proc_stat_line(void **state)
{
	(void)state;
	/* comm with spaces and ')' - utime 1234, stime 66 */
	const char *line = "4242 (nginx: wo)rker) S 1 4242 4242 0 -1 4194560 1069 0 0 0 "
	                   "1234 66 0 0 20 0 1 0 1000 1000 100\n";
	assert_int_equal(proc_stat_ticks(line), 1300);
	assert_int_equal(proc_stat_ticks("garbage"), -1);
	int self = (int)getpid();
	assert_true(proc_cpu_us(&self, 1) >= 0);
	int none = 0x7ffffff0;
	assert_int_equal(proc_cpu_us(&none, 1), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_schedule_rate),
		cmocka_unit_test(test_schedule_count_over_time),
		cmocka_unit_test(test_inflight_fifo),
		cmocka_unit_test(test_fast_server_no_queueing),
		cmocka_unit_test(test_slow_server_counts_queueing),
		cmocka_unit_test(test_http_framing),
		cmocka_unit_test(test_proc_stat_line),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
