/* ring_test.c - the SPSC ring under a real race: a producer thread and a
 * consumer thread move millions of sequence numbers through a small ring in
 * random burst sizes (seed printed); the consumer checks that every value
 * arrives exactly once, in order, intact. A second test races the idle
 * protocol: a consumer that sleeps on an eventfd must never miss a wake-up
 * (a lost one would hang the test until its timeout). */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "common/fs_port.h"
#include "common/fs_ring.h"

#define ITEMS 3000000ull
#define SLOTS 64u

struct item { uint64_t seq; uint64_t check; };

struct race {
	struct fs_ring ring;
	struct item mem[SLOTS];
	uint64_t seed;
	uint64_t bad;
	struct fs_waker waker;
	int sleepy;   /* consumer uses the idle protocol */
};

static uint64_t rnd(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *producer(void *arg)
{
	struct race *r = arg;
	uint64_t s = r->seed, next = 0;
	struct item burst[SLOTS];
	while (next < ITEMS) {
		uint32_t want = (uint32_t)(rnd(&s) % SLOTS) + 1;
		if (next + want > ITEMS)
			want = (uint32_t)(ITEMS - next);
		for (uint32_t i = 0; i < want; i++)
			burst[i] = (struct item){ next + i, (next + i) * 0x9E3779B97F4A7C15ull };
		uint32_t put = fs_ring_enqueue_burst(&r->ring, burst, want);
		next += put;
		if (r->sleepy && put)
			fs_wake(&r->waker);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	struct race *r = arg;
	uint64_t s = r->seed ^ 0xabcdef, expect = 0;
	struct item burst[SLOTS];
	while (expect < ITEMS) {
		uint32_t want = (uint32_t)(rnd(&s) % SLOTS) + 1;
		uint32_t got = fs_ring_dequeue_burst(&r->ring, burst, want);
		for (uint32_t i = 0; i < got; i++, expect++)
			if (burst[i].seq != expect || burst[i].check != expect * 0x9E3779B97F4A7C15ull)
				r->bad++;
		if (got == 0 && r->sleepy) {
			atomic_store(&r->waker.sleeping, 1);
			if (fs_ring_count(&r->ring) == 0) {
				struct pollfd p = { .fd = r->waker.fd, .events = POLLIN };
				poll(&p, 1, 10000);   /* a lost wake-up shows as a 10 s stall */
			}
			atomic_store(&r->waker.sleeping, 0);
			uint64_t v;
			ssize_t n = read(r->waker.fd, &v, sizeof v);
			(void)n;
		}
	}
	return NULL;
}

static void run(int sleepy)
{
	struct race *r = calloc(1, sizeof *r);
	assert_non_null(r);
	const char *env = getenv("FS_SEED");
	r->seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) | 1;
	printf("ring_test: seed=%llu sleepy=%d\n", (unsigned long long)r->seed, sleepy);
	fs_ring_init(&r->ring, r->mem, SLOTS, sizeof(struct item));
	r->sleepy = sleepy;
	r->waker.fd = eventfd(0, EFD_NONBLOCK);
	assert_true(r->waker.fd >= 0);
	pthread_t p, c;
	assert_int_equal(pthread_create(&c, NULL, consumer, r), 0);
	assert_int_equal(pthread_create(&p, NULL, producer, r), 0);
	pthread_join(p, NULL);
	pthread_join(c, NULL);
	assert_int_equal(r->bad, 0);
	assert_int_equal(fs_ring_count(&r->ring), 0);
	close(r->waker.fd);
	free(r);
}

static void test_spsc_race(void **state) { (void)state; run(0); }
static void test_idle_protocol_race(void **state) { (void)state; run(1); }

static void test_full_and_empty(void **state)
{
	(void)state;
	struct fs_ring ring;
	uint64_t mem[4], v[8] = { 1, 2, 3, 4, 5, 6, 7, 8 }, out[8];
	fs_ring_init(&ring, mem, 4, sizeof(uint64_t));
	assert_int_equal(fs_ring_dequeue_burst(&ring, out, 8), 0);   /* empty: nothing */
	assert_int_equal(fs_ring_enqueue_burst(&ring, v, 8), 4);     /* full at capacity */
	assert_null(fs_ring_slot(&ring));
	assert_int_equal(fs_ring_enqueue_burst(&ring, v, 1), 0);
	assert_int_equal(fs_ring_dequeue_burst(&ring, out, 3), 3);
	assert_int_equal(out[0], 1);
	assert_int_equal(out[2], 3);
	assert_int_equal(fs_ring_count(&ring), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_full_and_empty),
		cmocka_unit_test(test_spsc_race),
		cmocka_unit_test(test_idle_protocol_race),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
