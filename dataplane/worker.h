/* worker.h - one dataplane worker: a thread pinned to a core that owns its
 * listener, its connections and its port to the writer (shared-nothing).
 * The connection protocol (conn.c) knows no sockets; the I/O backend
 * (io_uring.c) knows no HTTP.
 */
#ifndef DP_WORKER_H
#define DP_WORKER_H

#include <stdatomic.h>
#include <stdint.h>
#include "common/fs_port.h"
#include "common/fs_snapshot.h"
#include "common/fs_shard.h"
#include "dataplane/http.h"
#include "common/fs_cidr.h"
#include "dataplane/route.h"
#include "dataplane/iplimit.h"

#define DP_IN_BYTES   16384    /* one connection's unparsed input */
#define DP_OUT_BYTES  16384    /* one connection's unsent output */
#define DP_ANSWER_BYTES_MAX 1024
/* Lingering close after an error answered before the request was read
 * whole: the answer is sent, the write side shut, and input discarded
 * until the client closes, for at most this long and this many bytes. */
#define DP_LINGER_MS     5000
#define DP_LINGER_BYTES  (8u << 20)
/* After EMFILE/ENFILE on accept, accepting pauses this long (no spin). */
#define DP_ACCEPT_BACKOFF_MS 100

enum { DP_ST_200, DP_ST_201, DP_ST_202, DP_ST_400, DP_ST_401, DP_ST_402, DP_ST_403,
       DP_ST_404, DP_ST_405, DP_ST_408, DP_ST_409, DP_ST_410, DP_ST_413, DP_ST_414,
       DP_ST_421, DP_ST_422, DP_ST_429, DP_ST_431, DP_ST_501, DP_ST_503, DP_ST_505, DP_ST_OTHER,
       DP_ST_COUNT };
int dp_status_slot(int http);
int dp_status_of_slot(int slot);

/* Request latency buckets (upper bounds in microseconds, then +Inf): from
 * the loop iteration that read a request whole to the one that produced its
 * answer (a writer round trip included), per route and status class. */
#define DP_LAT_BUCKETS 16
#define DP_CLASSES     6      /* 0: other, 1..5: 1xx..5xx */
extern const uint32_t dp_lat_bound_us[DP_LAT_BUCKETS - 1];

struct dp_stats {
	_Atomic uint64_t answers[DP_R_COUNT][DP_ST_COUNT];
	_Atomic uint64_t lat[DP_R_COUNT][DP_CLASSES][DP_LAT_BUCKETS];
	_Atomic uint64_t lat_sum_us[DP_R_COUNT][DP_CLASSES];
	_Atomic uint64_t conns_accepted, conns_open, conns_refused, conns_timed_out;
	_Atomic uint64_t conns_slow_readers;   /* closed: output not drained within send_timeout_ms */
	_Atomic uint64_t conns_ip_refused;     /* refused: the address holds connections_per_ip already */
	_Atomic uint64_t conns_lingered;       /* error answers followed by a lingering close */
	_Atomic uint64_t accept_errors;        /* accept failed (EMFILE, ENFILE, ...): accepting paused */
	_Atomic uint64_t ring_full, bytes_in, bytes_out, wakeups;
	_Atomic uint64_t sq_full;              /* io_uring: no submission entry; the operation waited a loop */
	_Atomic uint64_t recv_nobufs;          /* io_uring: a multishot receive found the buffer ring empty */
	_Atomic uint64_t recv_parked;          /* io_uring: provided buffers parked because `in` was full */
};

struct dp_worker_config {
	uint32_t index;
	int cpu;                        /* -1: not pinned */
	int listen_fd;                  /* this worker's listener (dp_listen_group) */
	uint32_t conn_max;              /* connections this worker holds at most */
	struct fs_port *wport;          /* to the writer (writer shard 0) */
	const struct fs_snapshot *snap; /* writer shard 0's */
	/* writer shards (flashsaled --writers N): shard k's port and snapshot;
	 * [0] is wport/snap. writer_count 0 or 1: one writer, wport/snap only.
	 * All of this worker's ports share one producer eventfd. */
	uint32_t writer_count;
	struct fs_port *wports[FS_SHARD_WRITERS_MAX];
	const struct fs_snapshot *snaps[FS_SHARD_WRITERS_MAX];
	const struct fs_shard_map *shard_map;
	uint32_t appliance;             /* this box's index in the map's appliances (0: alone; shards below) */
	const uint8_t *jwt_key;
	size_t jwt_key_len;
	struct dp_http_limits limits;
	uint32_t idle_timeout_ms;       /* keep-alive connection with nothing to do */
	uint32_t request_timeout_ms;    /* a request must arrive whole within this */
	uint32_t send_timeout_ms;       /* pending output must drain within this, else close */
	struct dp_iplimit *iplimit;     /* per-IP connection cap for untrusted peers; NULL = off */
	uint32_t quantity_max;
	_Atomic int *ready;             /* 0 while recovering or draining */
	const struct fs_cidr *trusted;  /* trusted proxies/addresses: X-Forwarded-For believed, no IP limits */
	uint32_t trusted_count;
	const struct fs_shard_map *shards; /* --shard-map with appliances; NULL: every SKU is ours */
	uint8_t recv_multishot;         /* io_uring: multishot receives into a buffer ring (--recv) */
};

struct dp_worker;

/* Binds `count` SO_REUSEPORT listeners on host:port, one per worker, after
 * checking nobody else listens there. Returns 0, or -1 with a reason. */
int dp_listen_group(const char *host, uint16_t port, uint32_t count, int *fds, char *err, size_t err_len);

/* Reserves every connection and starts the thread on the shared listener.
 * Returns NULL with a reason in err. */
struct dp_worker *dp_worker_start(const struct dp_worker_config *cfg, char *err, size_t err_len);
void dp_worker_stop(struct dp_worker *w);
/* Frees a stopped worker (its counters die with it: stop readers first). */
void dp_worker_free(struct dp_worker *w);
const struct dp_stats *dp_worker_stats(const struct dp_worker *w);
uint64_t dp_conn_bytes(uint32_t conn_max);

#endif
