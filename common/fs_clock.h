/* fs_clock.h - the two clocks, in milliseconds, one definition each.
 *
 * fs_wall_ms: CLOCK_REALTIME. For times that mean something outside the
 *   process: batch times written to the journal, token expiry, sale
 *   openings, TTLs and anything compared with them.
 * fs_mono_ms: CLOCK_MONOTONIC. For intervals and deadlines inside the
 *   process (timeouts, back-off), which must not jump with the wall clock.
 */
#ifndef FS_CLOCK_H
#define FS_CLOCK_H

#include <stdint.h>
#include <time.h>

static inline int64_t fs_clock_ms(clockid_t id)
{
	struct timespec ts;
	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static inline int64_t fs_wall_ms(void) { return fs_clock_ms(CLOCK_REALTIME); }
static inline int64_t fs_mono_ms(void) { return fs_clock_ms(CLOCK_MONOTONIC); }

/* CLOCK_MONOTONIC in microseconds: request latency (stamped once per loop). */
static inline int64_t fs_mono_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
