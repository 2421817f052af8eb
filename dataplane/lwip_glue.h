/* lwip_glue.h - the user-space TCP/IP stack of the DPDK backend (lwIP raw
 * API) behind a narrow interface that names neither DPDK nor lwIP types:
 * DPDK and lwIP headers cannot share a translation unit (FACTS.md), so
 * dpdk.c moves frames as plain bytes and this side knows no mbufs.
 *
 * One stack per process, driven from ONE thread. Debian's liblwip keeps its
 * state (PCB lists, timers, netif list) in globals and is thread-safe only
 * under the tcpip core lock, so there is one lwIP instance per PROCESS: the
 * DPDK backend runs one process per stack lcore (see dpdk.c). Everything
 * here is called from that thread only, except dp_lwip_stats /
 * dp_lwip_tcp_stats (atomic counters, any thread, any process when the
 * caller placed them in shared memory).
 *
 * Per loop the owner calls dp_lwip_input once per received frame, then
 * dp_lwip_poll once: lwIP timers (about every 1 ms), the writer's answers,
 * HTTP output into TCP (tcp_write + tcp_output), writer kicks, housekeeping.
 * Frames lwIP sends go out through cfg->tx_buf (a buffer in a fresh mbuf).
 */
#ifndef DP_LWIP_GLUE_H
#define DP_LWIP_GLUE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "dataplane/worker.h"

/* Returns room for one outgoing frame of len bytes (queued for the next tx
 * burst), or NULL when no buffer is free: the frame is dropped and counted,
 * TCP retransmits. */
typedef uint8_t *(*dp_lwip_tx_buf_fn)(void *ctx, uint32_t len);

struct dp_lwip_tcp_stats;

struct dp_lwip_config {
	uint32_t ip_be, netmask_be, gateway_be;   /* network byte order; gateway 0 = none */
	uint8_t mac[6];
	uint16_t mtu;
	uint16_t port;                            /* TCP port of the public API */
	struct dp_worker_config worker;           /* conn_max, wport, snap, jwt, limits, timeouts */
	dp_lwip_tx_buf_fn tx_buf;
	void *tx_ctx;
	struct dp_stats *stats;                   /* HTTP counters, caller-owned (shared memory) */
	struct dp_lwip_tcp_stats *tcp;            /* TCP counters, caller-owned (shared memory) */
	uint32_t gen_base;                        /* first generation of every slot: a restarted
	                                             lcore ignores answers meant for its predecessor */
};

/* TCP-level counters of the stack (lwIP's own stats are compiled out in
 * Debian's build, so these are counted at the glue). */
struct dp_lwip_tcp_stats {
	_Atomic uint64_t rx_frames, rx_bytes, rx_drop_nomem;
	_Atomic uint64_t tx_frames, tx_bytes, tx_drop_nobuf;
	_Atomic uint64_t pcbs_accepted, pcbs_reset, pcbs_aborted, write_blocked;
	_Atomic uint64_t pcbs_live;               /* lwIP PCBs we own (not yet closed) */
};

struct dp_lwip;

/* lwip_init (once per process), one Ethernet netif up with cfg's address,
 * a listener on cfg->port, cfg->worker.conn_max connection slots reserved.
 * The gauges in cfg->stats / cfg->tcp (open connections, live PCBs) are
 * reset to 0; the counters keep counting across restarts.
 * Returns NULL with a one-line reason in err (second stack, out of memory,
 * port taken). Must be called on the thread that will drive the stack. */
struct dp_lwip *dp_lwip_open(const struct dp_lwip_config *cfg, char *err, size_t err_len);

/* Feeds one received Ethernet frame (copied: the caller may free it at once). */
void dp_lwip_input(struct dp_lwip *g, const void *frame, uint32_t len);

/* Timers, writer answers, output, housekeeping. now_ms is the wall clock
 * (CLOCK_REALTIME, ms: token expiry, timeouts); the caller may derive it
 * from the TSC instead of a clock_gettime per loop. lwIP's timers run when
 * it changes. Returns how much work it found (answers drained +
 * connections serviced); 0 means idle. */
uint32_t dp_lwip_poll(struct dp_lwip *g, int64_t now_ms);

/* Aborts every connection (RST) and the listener; frees the slots. */
void dp_lwip_close(struct dp_lwip *g);

const struct dp_stats *dp_lwip_stats(const struct dp_lwip *g);
const struct dp_lwip_tcp_stats *dp_lwip_tcp_stats(const struct dp_lwip *g);

#endif
