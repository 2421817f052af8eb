/* rate_socket_test.c - flashload's engine over real sockets against a tiny
 * slow server thread (one request at a time, a fixed sleep each). Open loop
 * faster than the server can answer must report the queueing delay from the
 * intended send times; the bounds are ratios against a model built from the
 * server's own measured service times, never absolute times. */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "fl_engine.h"

#define SLOW_REQ_MAX   1000
#define SLOW_DELAY_NS  (5 * 1000 * 1000L)

struct slow_server {
	int listen_fd;
	uint16_t port;
	uint64_t service_ns[SLOW_REQ_MAX];   /* each answer's measured time */
	unsigned served;
};

static const char ANSWER[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

/* Answers every complete GET on fd, one at a time; returns on close. */
static void serve_conn(struct slow_server *s, int fd)
{
	char buf[8192];
	size_t len = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 10000) <= 0)      /* bounded: a stuck client ends it */
			return;
		ssize_t n = read(fd, buf + len, sizeof(buf) - len);
		if (n <= 0)
			return;
		len += (size_t)n;
		char *end;
		while ((end = memmem(buf, len, "\r\n\r\n", 4)) != NULL && s->served < SLOW_REQ_MAX) {
			uint64_t t0 = fl_now_ns();
			struct timespec d = { 0, SLOW_DELAY_NS };
			nanosleep(&d, NULL);
			if (write(fd, ANSWER, sizeof(ANSWER) - 1) != (ssize_t)sizeof(ANSWER) - 1)
				return;
			s->service_ns[s->served++] = fl_now_ns() - t0;
			size_t used = (size_t)(end + 4 - buf);
			memmove(buf, buf + used, len - used);
			len -= used;
		}
		if (len == sizeof(buf) || s->served == SLOW_REQ_MAX)
			return;
	}
}

static void *server_main(void *arg)
{
	struct slow_server *s = arg;
	for (int conns = 0; conns < 4; conns++) {
		struct pollfd p = { .fd = s->listen_fd, .events = POLLIN };
		if (poll(&p, 1, conns == 0 ? 10000 : 100) <= 0)   /* a reconnect comes at once */
			break;
		int fd = accept(s->listen_fd, NULL, NULL);
		if (fd < 0)
			break;
		serve_conn(s, fd);
		close(fd);
		if (s->served == SLOW_REQ_MAX)
			break;
	}
	return NULL;
}

static void server_start(struct slow_server *s, pthread_t *tid)
{
	memset(s, 0, sizeof(*s));
	s->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
	assert_true(s->listen_fd >= 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	assert_int_equal(bind(s->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->listen_fd, 8), 0);
	assert_int_equal(getsockname(s->listen_fd, (struct sockaddr *)&a, &alen), 0);
	s->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(tid, NULL, server_main, s), 0);
}

static struct fl_results *run_against(struct slow_server *s, double rate, double duration_s)
{
	struct fl_config c;
	fl_config_default(&c);
	c.addr.sin_port = htons(s->port);
	c.connections = 1;
	c.rate_per_s = rate;
	c.duration_s = duration_s;
	c.drain_ns = 20ull * 1000 * 1000 * 1000;     /* a bound, not a threshold */
	c.start_delay_ns = 20 * 1000 * 1000;
	assert_null(fl_config_check(&c));
	struct fl_results *r = NULL;
	assert_int_equal(fl_run(&c, &r), 0);
	return r;
}

/* Median of the model latency: the server works back to back from the first
 * intended send, so request k ends at the sum of the first k+1 measured
 * service times and was intended at k * interval. */
static double model_p50_ns(const struct slow_server *s, double rate)
{
	double done = 0, interval = 1e9 / rate;
	double *lat = malloc(s->served * sizeof(*lat));
	assert_non_null(lat);
	for (unsigned k = 0; k < s->served; k++) {
		done += (double)s->service_ns[k];
		lat[k] = done - k * interval;
	}
	/* latencies grow with k: the middle one is the median */
	double p50 = lat[s->served / 2];
	free(lat);
	return p50;
}

static double mean_service_ns(const struct slow_server *s)
{
	double sum = 0;
	for (unsigned k = 0; k < s->served; k++)
		sum += (double)s->service_ns[k];
	return sum / s->served;
}

static void test_open_loop_reports_queueing(void **state)
{
	(void)state;
	struct slow_server s;
	pthread_t tid;
	server_start(&s, &tid);
	/* 400 req/s asked of a server that does at most ~200/s */
	struct fl_results *r = run_against(&s, 400.0, 0.5);
	pthread_join(tid, NULL);
	close(s.listen_fd);
	assert_int_equal(r->answers, 200);          /* the backlog was sent too */
	assert_int_equal(r->unsent_backlog, 0);
	assert_int_equal(s.served, 200);
	assert_int_equal(r->status[FL_OP_READ][200], 200);
	double p50 = (double)hist_percentile_ns(&r->all, 50);
	double model = model_p50_ns(&s, 400.0);
	double service = mean_service_ns(&s);
	/* model ~ 50 service times; a closed-loop client would see ~1 */
	assert_true(p50 > 10.0 * service);
	assert_true(p50 > 0.5 * model && p50 < 2.0 * model);
	assert_true((double)r->all.max_ns > (double)hist_percentile_ns(&r->all, 50));
	fl_results_free(r);
}

static void test_closed_loop_sees_service_time(void **state)
{
	(void)state;
	struct slow_server s;
	pthread_t tid;
	server_start(&s, &tid);
	struct fl_results *r = run_against(&s, 0.0, 0.3);
	pthread_join(tid, NULL);
	close(s.listen_fd);
	assert_true(r->answers > 0);
	assert_int_equal(r->answers, s.served);
	/* closed loop measures from the actual send: about one service time */
	double p50 = (double)hist_percentile_ns(&r->all, 50);
	assert_true(p50 >= 0.99 * (double)SLOW_DELAY_NS);
	assert_true(p50 < 10.0 * mean_service_ns(&s));
	fl_results_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_loop_reports_queueing),
		cmocka_unit_test(test_closed_loop_sees_service_time),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
