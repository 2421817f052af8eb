/* dpdk.h - the DPDK dataplane backend: the NIC is driven from user space
 * (poll-mode driver), TCP/IP is lwIP's (dataplane/lwip_glue.h), HTTP and
 * routing are the same connection protocol as the io_uring backend
 * (dataplane/conn.h).
 *
 * Each stack lcore ("lane") runs the whole stack for the flows the NIC
 * hashes to its queue, run to completion:
 *   rx burst -> lwIP input -> conn protocol -> writer ring
 *   writer answers -> HTTP answer -> tcp_write -> tx burst (flushed once per loop)
 *   lwIP timers about every 1 ms.
 * Debian's liblwip keeps global state (one instance per process), so one
 * lane runs in flashsaled itself, and N lanes (--workers N) run in N
 * processes forked from flashsaled after the port is set up with N queue
 * pairs: each has its own lwIP with the same IP and MAC, its own port to
 * the writer, and its counters in shared memory. The NIC's RSS (or
 * af_packet's fanout hash, qpairs=N) keeps a connection on one lane; ARP
 * replies are copied to every lane; a lane that dies is restarted by a
 * supervisor thread (its connections are reset; the writer and the other
 * lanes go on). Lane i runs on the i-th worker lcore of the EAL arguments
 * (`-l 0,1,2` -> lanes on lcores 1 and 2); with one lane and only the main
 * lcore, on a thread pinned to that lcore's CPU.
 *
 * Idle: after ~200 us without packets or answers the loop backs off from
 * rte_pause() to sleeping (up to 1 ms, woken at once by the writer's
 * eventfd), so a 2-core box stays usable; busy_poll keeps it spinning (bare
 * metal, dedicated cores).
 */
#ifndef DP_DPDK_H
#define DP_DPDK_H

#include <stddef.h>
#include <stdint.h>
#include "dataplane/worker.h"

struct dp_dpdk_config {
	const char *eal_args;         /* e.g. "-l 0,1 --no-huge -m 512 --no-shconf --vdev=net_af_packet0,iface=veth0" */
	const char *ip;               /* "A.B.C.D/N": the stack's address on the port */
	const char *gateway;          /* "A.B.C.D" or NULL */
	uint16_t port_id;             /* ethdev port (0: the first one) */
	uint16_t tcp_port;            /* the public API's TCP port */
	int busy_poll;                /* never sleep when idle */
	int quiet;                    /* no start-up lines on stdout */
	struct dp_worker_config worker;   /* as for dp_worker_start; listen_fd and cpu unused; with
	                                     one lane its wport is the lane's port to the writer */
	uint32_t lanes;               /* stack lcores (0 means 1); > 1: one process per lane */
	struct fs_port *const *wports;   /* lanes > 1: lane i's port to the writer (MAP_SHARED memory,
	                                     like worker.snap and worker.ready: the lanes' processes
	                                     read them) */
};

struct dp_dpdk;

/* Initialises the EAL (once per process; the caller thread's CPU affinity
 * is restored afterwards), the mbuf pool and the port, and starts the lanes
 * (and, with more than one, their supervisor thread). Returns NULL with a one-line reason and the fix in err: no
 * hugepages (reserve them with hugepages/reserve.sh, or pass --no-huge -m
 * 512 for development), no NIC (bind one to vfio-pci, or pass
 * --vdev=net_af_packet0,iface=IF), bad --ip/--gateway, EAL errors. */
struct dp_dpdk *dp_dpdk_start(const struct dp_dpdk_config *cfg, char *err, size_t err_len);

/* Stops the lanes (connections are reset; lane processes that do not stop
 * within 5 s are killed), stops and closes the port and
 * cleans up the EAL (hugepage files deleted): DPDK cannot be started again
 * in this process. The counters stay readable for the rest of the process. */
void dp_dpdk_stop(struct dp_dpdk *d);

uint32_t dp_dpdk_lanes(const struct dp_dpdk *d);

/* Lane i's HTTP-level counters, same struct as dp_worker_stats (for the
 * admin's flashsale_http_* metrics); shared memory, readable while the
 * lane's process restarts and after dp_dpdk_stop. */
const struct dp_stats *dp_dpdk_worker_stats(const struct dp_dpdk *d, uint32_t lane);

struct dp_dpdk_port_stats {
	uint64_t ipackets, opackets, ibytes, obytes;   /* rte_eth_stats */
	uint64_t imissed, ierrors, oerrors, rx_nombuf;
	uint64_t tx_dropped;          /* tx burst refused them after retries */
	uint64_t rx_frames, tx_frames, rx_drop_nomem, tx_drop_nobuf;   /* at the stack */
	uint64_t tcp_accepted, tcp_reset, tcp_aborted, tcp_live, tcp_write_blocked;
	uint64_t loops, idle_sleeps;
};

/* Fills *s (any thread). Returns 0, or -1 when the port stats are not
 * readable (the other fields are still filled). */
int dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_port_stats *s);

/* Appends Prometheus text (flashsale_dpdk_* port and TCP counters, summed
 * over the lanes, then flashsale_dpdk_lane_*{lane="i"}: packets, drops,
 * connections, answers by status, up, pid, restarts) to buf, and the mbuf
 * pool's free count (a lane killed mid-burst takes its mbufs with it).
 * Returns the bytes written (< cap, NUL-terminated), 0 when cap is small. */
size_t dp_dpdk_metrics(const struct dp_dpdk *d, char *buf, size_t cap);

#endif
