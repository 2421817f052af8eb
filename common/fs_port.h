/* fs_port.h - one producer's connection to the writer: a command ring in,
 * an answer ring out, and the eventfds that wake a sleeping side.
 *
 * Flow control: a producer keeps at most `inflight_max` commands without an
 * answer (checkouts count until their payment outcome is answered). The
 * answer ring holds inflight_max answers, so the writer never finds it full
 * and never waits on a producer.
 */
#ifndef FS_PORT_H
#define FS_PORT_H

#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include "common/fs_cmd.h"
#include "common/fs_ring.h"

/* A sleeping consumer's flag and the eventfd that wakes it. */
struct fs_waker {
	_Alignas(64) _Atomic int sleeping;
	int fd;
};

struct fs_port {
	struct fs_ring cmds;          /* producer -> writer */
	struct fs_ring answers;       /* writer -> producer */
	uint32_t inflight_max;        /* == answer ring capacity */
	uint32_t inflight;            /* producer-owned count */
	struct fs_waker producer;     /* the writer wakes the producer after answering */
	struct fs_waker *writer;      /* the producer wakes the writer after a burst */
	_Alignas(64) _Atomic uint64_t full_count;   /* commands refused: ring full */
};

/* Wakes the consumer behind w if it said it is going to sleep (see the idle
 * protocol in fs_ring.h). Costs a syscall only when it sleeps. */
static inline void fs_wake(struct fs_waker *w)
{
	if (atomic_load_explicit(&w->sleeping, memory_order_seq_cst)) {
		uint64_t one = 1;
		ssize_t r = write(w->fd, &one, sizeof one);
		(void)r;   /* EAGAIN means a wake-up is already pending */
	}
}

#endif
