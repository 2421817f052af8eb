/* backend.h - the dataplane's I/O backends behind one ops struct, as Redis
 * puts ae_epoll.c and ae_kqueue.c behind aeApi*: the process (control/
 * flashsaled.c) picks one by name and drives it the same way, and the admin
 * socket reads the same HTTP counters (dp_stats) from either.
 *
 *   io_uring (io_uring.c): one worker thread per core, kernel sockets,
 *     SO_REUSEPORT listeners bound by claim() before recovery starts;
 *   dpdk (dpdk.c): N lanes (one process, lcore, rx/tx queue pair and lwIP
 *     stack each) run the NIC, lwIP and the same connection protocol
 *     (conn.c); dpdk_none.c stands in where DPDK is not built.
 *
 * Lifetime: claim (before the journal is replayed: fail fast on a taken
 * port) -> start (the writer is running) -> stop (connections closed; the
 * counters stay readable for the rest of the process).
 */
#ifndef DP_BACKEND_H
#define DP_BACKEND_H

#include <stddef.h>
#include <stdint.h>
#include "dataplane/worker.h"

#define DP_WORKERS_MAX 60

struct dp_backend_config {
	const char *listen_host;          /* io_uring: the public API's address */
	uint16_t listen_port;             /* both: the public API's TCP port */
	uint32_t worker_count;            /* io_uring: threads; dpdk: lanes (processes) */
	int pin;                          /* io_uring: worker i on CPU base + i % (cores - base) */
	uint32_t worker_cpu_base;         /* io_uring: base above (0 means 1: core 0 is the writer's;
	                                   * N with N writer shards on cores 0..N-1) */
	struct fs_port *wports[DP_WORKERS_MAX];   /* worker i's port to the writer (dpdk: MAP_SHARED) */
	/* io_uring with writer shards: worker i's port to shard k is
	 * shard_wports[k][i] (shard_wports[0] == wports); writer_count and the
	 * snapshots are in `worker`. The DPDK backend takes one writer only. */
	struct fs_port *shard_wports[FS_SHARD_WRITERS_MAX][DP_WORKERS_MAX];
	struct dp_worker_config worker;   /* the rest of every worker's config */
	const char *eal_args;             /* dpdk: EAL arguments */
	const char *ip;                   /* dpdk: A.B.C.D/N of the stack */
	const char *gateway;              /* dpdk: A.B.C.D or NULL */
	int busy_poll;                    /* dpdk: never sleep when idle */
};

struct dp_backend;

struct dp_backend_ops {
	const char *name;
	/* Claims what others could take while the journal replays (io_uring:
	 * binds the listeners). Returns 0, or -1 with a one-line reason. */
	int (*claim)(struct dp_backend *b, char *err, size_t err_len);
	/* Starts serving. Returns 0, or -1 with a one-line reason and the fix. */
	int (*start)(struct dp_backend *b, char *err, size_t err_len);
	/* Stops serving: connections closed, threads joined. */
	void (*stop)(struct dp_backend *b);
	/* The HTTP counters of each worker (same struct for every backend),
	 * at most max; returns how many. Any thread, after start. */
	uint32_t (*stats)(const struct dp_backend *b, const struct dp_stats **out, uint32_t max);
	/* Prometheus samples of the backend's own (port, TCP stack) appended
	 * to buf; returns the bytes written (< cap). NULL: none. */
	size_t (*metrics)(const struct dp_backend *b, char *buf, size_t cap);
	/* Frees what stop() kept readable (the counters), once nobody reads
	 * them any more. NULL: nothing to free. */
	void (*free)(struct dp_backend *b);
};

extern const struct dp_backend_ops dp_io_uring_ops;
extern const struct dp_backend_ops dp_dpdk_ops;

struct dp_backend {
	const struct dp_backend_ops *ops;
	struct dp_backend_config cfg;
	void *self;                       /* the backend's own state */
};

#endif
