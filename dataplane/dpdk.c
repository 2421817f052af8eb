/* dpdk.c - the DPDK side of the DPDK backend (see dpdk.h): EAL, mbuf pool,
 * one port with one rx/tx queue pair per stack lcore ("lane"), and the
 * run-to-completion loop of each lane. TCP/IP lives behind
 * dataplane/lwip_glue.h: this file moves frames as bytes and never includes
 * an lwIP header (the two header sets clash: struct ip6_hdr, IP_DF).
 *
 * Per loop: rx burst -> dp_lwip_input per frame (copied into a pbuf, the
 * mbufs are freed at once) -> dp_lwip_poll (timers, writer answers,
 * tcp_write) -> one tx burst of every frame lwIP produced during the loop.
 *
 * Lanes. lwIP keeps its state in globals, so one process holds one stack:
 * with one lane the loop runs on an lcore thread of flashsaled itself; with
 * N lanes flashsaled (the primary: port, writer, journal, admin) forks one
 * process per lane after the port is started. A forked lane inherits the
 * port's queues as they are (the af_packet vdev's per-queue sockets and
 * their mmap'd rings, a NIC's BARs and DMA memory), the mbuf pool (DPDK
 * memory is MAP_SHARED: hugepages, or the memfd of --no-huge), the writer's
 * rings and the snapshot (MAP_SHARED by flashsaled) and its counters
 * (struct lane_shared below). It never calls into the EAL: only rx/tx
 * bursts, mbufs and rte_ring. Why fork and not DPDK's own secondary
 * processes (exec + rte_eal_init --proc-type=secondary): a secondary
 * attaches to the ethdev but cannot poll an af_packet (or tap) queue -- its
 * socket and ring mapping exist only in the primary (the driver's probe for
 * secondaries says "TODO: request info from primary to set up Rx and Tx").
 * The supervisor thread restarts a lane that dies; the writer never
 * notices beyond answers for the dead lane's slots, which the successor
 * drops (its slots start at a new generation).
 */
#include "dataplane/dpdk.h"
#include "dataplane/backend.h"
#include "dataplane/lwip_glue.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <rte_common.h>
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_pause.h>
#include <rte_ring.h>

#define RX_BURST        32
#define TX_BURST        64
#define RX_DESC         1024
#define TX_DESC         1024
#define MBUF_COUNT      8191          /* 2^n - 1: the mempool ring's best size */
#define MBUF_CACHE      256
#define TX_RETRIES      4
/* Idle back-off: rte_pause() for IDLE_SPIN_US after the last work, then
 * sleeps whose length grows with the idle time: short while traffic is
 * merely bursty (a 2-core box: the load generator shares the CPUs), 1 ms
 * once really idle (lwIP's timers want ~1 ms ticks; ~1000 wake-ups/s). */
#define IDLE_SPIN_US    500
#define IDLE_SHORT_MS   20            /* idle less than this: 50 us sleeps */
#define IDLE_MEDIUM_MS  200           /* idle less than this: 250 us sleeps */
#define IDLE_SLEEP_US_SHORT  50
#define IDLE_SLEEP_US_MEDIUM 250
#define IDLE_SLEEP_US_MAX    1000
#define FRAME_BYTES_MAX 16384         /* a chained (multi-segment) frame is linearised */
#define EAL_ARGS_MAX    64
#define ARP_RING_SLOTS  256           /* ARP replies handed to another lane */
#define ARP_BURST       16
#define RESTART_MIN_MS  100           /* a dead lane is restarted after this... */
#define RESTART_MAX_MS  5000          /* ...doubling up to this while it keeps dying young */
#define LANE_YOUNG_MS   2000
#define STOP_WAIT_MS    5000          /* a lane that ignores stop this long is killed */

_Static_assert(TX_BURST <= 65535 && RX_BURST <= 65535, "burst sizes are uint16_t");
_Static_assert(((MBUF_COUNT + 1) & MBUF_COUNT) == 0, "mempool size is 2^n - 1");

/* What the primary reads of a lane: in MAP_SHARED memory, written by the
 * lane's process (counters) and by the supervisor (pid, restarts). */
struct lane_shared {
	struct dp_stats stats;
	struct dp_lwip_tcp_stats tcp;
	_Atomic uint64_t rx_packets, tx_packets, tx_dropped, loops, idle_sleeps, arp_shared;
	_Atomic uint64_t restarts;
	_Atomic int state;            /* 0 starting, 1 running, -1 failed, 2 stopped */
	_Atomic int stop;
	_Atomic int pid;              /* the lane's process (0: in flashsaled itself, or down) */
	char err[256];
};

/* One stack lcore; process-local (each lane process has its own copy). */
struct lane {
	struct dp_dpdk *d;
	uint32_t index;               /* == its rx/tx queue id */
	unsigned lcore;               /* EAL lcore id, or RTE_MAX_LCORE: none of its own */
	rte_cpuset_t cpus;
	struct fs_port *wport;
	struct lane_shared *sh;
	struct rte_ring *arp;         /* ARP replies other lanes received (MP/SC) */
	uint32_t incarnation;         /* 0, then +1 per restart */
	pid_t pid;                    /* supervisor's view */
	int64_t started_ms, restart_at_ms;
	int64_t backoff_ms;
	pthread_t thread;             /* one lane: the thread when no lcore is free */
	struct dp_lwip *stack;        /* in the process running the lane */
	struct rte_mbuf *tx[TX_BURST];
	uint16_t tx_n;
	uint8_t frame[FRAME_BYTES_MAX];
};

struct dp_dpdk {
	struct dp_dpdk_config cfg;
	uint16_t port;
	struct rte_mempool *pool;
	uint32_t lane_count;
	struct lane *lanes;
	struct lane_shared *sh;       /* lane_count, MAP_SHARED */
	pid_t primary;
	pthread_t supervisor;
	_Atomic int stopping;
	int running;
	uint32_t ip_be, mask_be, gw_be;
	struct rte_ether_addr mac;
	uint16_t mtu;
};

static int eal_ready;             /* rte_eal_init succeeded in this process */

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------ tx */

static void tx_flush(struct lane *l)
{
	uint16_t sent = 0;
	for (int i = 0; i <= TX_RETRIES && sent < l->tx_n; i++)
		sent += rte_eth_tx_burst(l->d->port, (uint16_t)l->index, l->tx + sent, (uint16_t)(l->tx_n - sent));
	atomic_fetch_add_explicit(&l->sh->tx_packets, sent, memory_order_relaxed);
	if (sent < l->tx_n) {
		atomic_fetch_add_explicit(&l->sh->tx_dropped, (uint64_t)(l->tx_n - sent), memory_order_relaxed);
		rte_pktmbuf_free_bulk(l->tx + sent, (unsigned)(l->tx_n - sent));
	}
	l->tx_n = 0;
}

/* dp_lwip_tx_buf_fn: room in a fresh mbuf queued for this loop's tx burst. */
static uint8_t *tx_buf(void *ctx, uint32_t len)
{
	struct lane *l = ctx;
	if (l->tx_n == TX_BURST)
		tx_flush(l);
	struct rte_mbuf *m = rte_pktmbuf_alloc(l->d->pool);
	if (m == NULL)
		return NULL;
	if (len > UINT16_MAX || len > rte_pktmbuf_tailroom(m)) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	char *p = rte_pktmbuf_append(m, (uint16_t)len);
	assert(p != NULL);
	l->tx[l->tx_n++] = m;
	return (uint8_t *)p;
}

/* ------------------------------------------------------------ the loop */

static void idle_sleep(struct lane *l, uint32_t us)
{
	struct fs_port *port = l->wport;
	/* Announce sleep, re-check the answer ring, then block on the writer's
	 * eventfd at most `us` (the idle protocol of common/fs_ring.h). */
	atomic_store_explicit(&port->producer.sleeping, 1, memory_order_seq_cst);
	if (fs_ring_count(&port->answers) == 0) {
		struct pollfd pfd = { .fd = port->producer.fd, .events = POLLIN };
		struct timespec ts = { .tv_sec = 0, .tv_nsec = (long)us * 1000 };
		if (ppoll(&pfd, 1, &ts, NULL) > 0) {
			uint64_t v;
			ssize_t r = read(port->producer.fd, &v, sizeof v);
			(void)r;
		}
		atomic_fetch_add_explicit(&l->sh->idle_sleeps, 1, memory_order_relaxed);
	}
	atomic_store_explicit(&port->producer.sleeping, 0, memory_order_seq_cst);
}

/* The wall clock in ms from the TSC, re-read from CLOCK_REALTIME every
 * second: one rdtsc per loop instead of a clock_gettime (which cost ~9% of
 * the lcore under load). */
struct tsc_clock {
	uint64_t tsc0, tsc_per_ms, resync_tsc;
	int64_t ms0;
};

static void clock_sync(struct tsc_clock *k, uint64_t tsc)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	k->ms0 = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
	k->tsc0 = tsc;
	k->resync_tsc = tsc + k->tsc_per_ms * 1000;
}

static int64_t clock_ms(struct tsc_clock *k, uint64_t tsc)
{
	if (tsc >= k->resync_tsc)
		clock_sync(k, tsc);
	return k->ms0 + (int64_t)((tsc - k->tsc0) / k->tsc_per_ms);
}

/* An ARP reply answers the lane that asked, but the NIC (or af_packet's
 * fanout) hashes it to any queue: every other lane gets a copy, so each
 * stack learns the peer's MAC whichever lane asked. Requests are not
 * shared: the lane that receives one answers it (one reply per request). */
static int is_arp_reply(const uint8_t *f, uint32_t len)
{
	return len >= 22 && f[12] == 0x08 && f[13] == 0x06 && f[20] == 0 && f[21] == 2;
}

static void share_arp(struct lane *l, struct rte_mbuf *m)
{
	struct dp_dpdk *d = l->d;
	for (uint32_t j = 0; j < d->lane_count; j++) {
		if (j == l->index)
			continue;
		struct rte_mbuf *copy = rte_pktmbuf_copy(m, d->pool, 0, UINT32_MAX);
		if (copy == NULL)
			continue;
		if (rte_ring_mp_enqueue(d->lanes[j].arp, copy) != 0)
			rte_pktmbuf_free(copy);
		else
			atomic_fetch_add_explicit(&l->sh->arp_shared, 1, memory_order_relaxed);
	}
}

static void input(struct lane *l, struct rte_mbuf *m)
{
	uint32_t len = rte_pktmbuf_pkt_len(m);
	const uint8_t *f;
	if (m->nb_segs == 1)
		f = rte_pktmbuf_mtod(m, const uint8_t *);
	else if (len <= FRAME_BYTES_MAX)
		f = rte_pktmbuf_read(m, 0, len, l->frame);
	else
		return;
	dp_lwip_input(l->stack, f, len);
}

static int lane_main(void *arg)
{
	struct lane *l = arg;
	struct dp_dpdk *d = l->d;
	struct dp_worker_config wc = d->cfg.worker;
	wc.index = l->index;
	wc.wport = l->wport;
	struct dp_lwip_config lc = {
		.ip_be = d->ip_be, .netmask_be = d->mask_be, .gateway_be = d->gw_be,
		.mtu = d->mtu, .port = d->cfg.tcp_port, .worker = wc,
		.tx_buf = tx_buf, .tx_ctx = l, .stats = &l->sh->stats, .tcp = &l->sh->tcp,
		.gen_base = l->incarnation << 24,
	};
	memcpy(lc.mac, d->mac.addr_bytes, 6);
	char err[256];
	l->tx_n = 0;
	l->stack = dp_lwip_open(&lc, err, sizeof err);
	if (l->stack == NULL) {
		snprintf(l->sh->err, sizeof l->sh->err, "%s", err);
		atomic_store(&l->sh->state, -1);
		return -1;
	}
	tx_flush(l);   /* the gratuitous ARP */
	atomic_store(&l->sh->state, 1);

	struct rte_mbuf *rx[RX_BURST];
	void *arp[ARP_BURST];
	const uint64_t spin_tsc = rte_get_tsc_hz() / 1000000 * IDLE_SPIN_US;
	struct tsc_clock clk = { .tsc_per_ms = rte_get_tsc_hz() / 1000 };
	assert(clk.tsc_per_ms > 0);
	clock_sync(&clk, rte_rdtsc());
	uint64_t idle_since = 0;
	const int shared_arp = d->lane_count > 1;
	while (!atomic_load_explicit(&l->sh->stop, memory_order_relaxed)) {
		uint16_t n = rte_eth_rx_burst(d->port, (uint16_t)l->index, rx, RX_BURST);
		for (uint16_t i = 0; i < n; i++) {
			if (shared_arp && is_arp_reply(rte_pktmbuf_mtod(rx[i], const uint8_t *), rte_pktmbuf_data_len(rx[i])))
				share_arp(l, rx[i]);
			input(l, rx[i]);
		}
		if (n) {
			rte_pktmbuf_free_bulk(rx, n);
			atomic_fetch_add_explicit(&l->sh->rx_packets, n, memory_order_relaxed);
		}
		if (shared_arp) {
			unsigned k = rte_ring_sc_dequeue_burst(l->arp, arp, ARP_BURST, NULL);
			for (unsigned i = 0; i < k; i++)
				input(l, arp[i]);
			if (k)
				rte_pktmbuf_free_bulk((struct rte_mbuf **)arp, k);
			n = (uint16_t)(n + k);
		}
		uint64_t tsc = rte_rdtsc();
		uint32_t work = n + dp_lwip_poll(l->stack, clock_ms(&clk, tsc));
		if (l->tx_n)
			tx_flush(l);
		atomic_fetch_add_explicit(&l->sh->loops, 1, memory_order_relaxed);
		if (work || d->cfg.busy_poll) {
			idle_since = 0;
			if (!work)
				rte_pause();
			continue;
		}
		if (idle_since == 0)
			idle_since = tsc;
		if (tsc - idle_since < spin_tsc) {
			rte_pause();
			continue;
		}
		uint64_t idle_ms = (tsc - idle_since) / clk.tsc_per_ms;
		idle_sleep(l, idle_ms < IDLE_SHORT_MS ? IDLE_SLEEP_US_SHORT :
		              idle_ms < IDLE_MEDIUM_MS ? IDLE_SLEEP_US_MEDIUM : IDLE_SLEEP_US_MAX);
	}
	dp_lwip_close(l->stack);   /* RST to every client, on the stack's thread */
	tx_flush(l);
	atomic_store(&l->sh->state, 2);
	return 0;
}

static void *own_thread_main(void *arg)
{
	lane_main(arg);
	return NULL;
}

/* ------------------------------------------------------------ lane processes */

/* In the child after fork(): only this thread exists. It never returns. */
static void lane_child(struct lane *l)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);   /* a lane never outlives flashsaled */
	if (getppid() != l->d->primary)
		_exit(1);
	sigset_t all;
	sigemptyset(&all);
	pthread_sigmask(SIG_SETMASK, &all, NULL);
	signal(SIGINT, SIG_IGN);            /* ^C reaches the whole group: the primary stops us */
	signal(SIGTERM, SIG_DFL);
	signal(SIGPIPE, SIG_IGN);
	char name[16];
	snprintf(name, sizeof name, "fs-lane%u", l->index);
	prctl(PR_SET_NAME, name);
	/* The lcore id picks the mempool's per-lcore cache. The first
	 * incarnation owns its lcore's cache; a restarted one runs without (a
	 * lane killed mid-operation may have left that cache inconsistent, and
	 * the mbufs in it are given up: at most 1.5 x MBUF_CACHE per lane). */
	RTE_PER_LCORE(_lcore_id) = l->lcore < RTE_MAX_LCORE && l->incarnation == 0 ? l->lcore : LCORE_ID_ANY;
	if (l->lcore < RTE_MAX_LCORE)
		sched_setaffinity(0, sizeof l->cpus, &l->cpus);
	atomic_store(&l->sh->pid, (int)getpid());
	_exit(lane_main(l) == 0 ? 0 : 3);
}

static int lane_fork(struct lane *l)
{
	atomic_store(&l->sh->state, 0);
	atomic_store(&l->sh->stop, 0);
	l->sh->err[0] = 0;
	pid_t pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0)
		lane_child(l);
	l->pid = pid;
	atomic_store(&l->sh->pid, (int)pid);
	l->started_ms = mono_ms();
	return 0;
}

static int lane_wait_running(struct lane *l, int ms)
{
	for (int i = 0; i < ms && atomic_load(&l->sh->state) == 0; i++) {
		if (l->pid > 0) {
			int st;
			if (waitpid(l->pid, &st, WNOHANG) == l->pid) {
				l->pid = 0;
				if (l->sh->err[0] == 0)
					snprintf(l->sh->err, sizeof l->sh->err, "lane %u's process exited during start-up "
					         "(status %d)", l->index, st);
				return -1;
			}
		}
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	return atomic_load(&l->sh->state) == 1 ? 0 : -1;
}

static void lanes_stop(struct dp_dpdk *d);

/* Restarts lanes whose process died (crash, kill -9): connections on that
 * lane are gone (their peers get RST from the successor's stack), the
 * writer and the other lanes go on. On `stopping` it stops the lanes
 * itself before it returns: a lane it forked has PR_SET_PDEATHSIG tied to
 * this thread, and must get its graceful stop (RST to its clients) first. */
static void *supervisor_main(void *arg)
{
	struct dp_dpdk *d = arg;
	while (!atomic_load(&d->stopping)) {
		int64_t now = mono_ms();
		for (uint32_t i = 0; i < d->lane_count && !atomic_load(&d->stopping); i++) {
			struct lane *l = &d->lanes[i];
			if (l->pid > 0) {
				int st;
				if (waitpid(l->pid, &st, WNOHANG) != l->pid)
					continue;
				int young = now - l->started_ms < LANE_YOUNG_MS;
				l->backoff_ms = young ? (l->backoff_ms ? l->backoff_ms * 2 : RESTART_MIN_MS) : RESTART_MIN_MS;
				if (l->backoff_ms > RESTART_MAX_MS)
					l->backoff_ms = RESTART_MAX_MS;
				printf("flashsaled: dpdk: lane %u (pid %d) %s %d; restarting it in %lld ms (its "
				       "connections are reset, the writer and the other lanes go on)\n", i, (int)l->pid,
				       WIFSIGNALED(st) ? "killed by signal" : "exited with status",
				       WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st), (long long)l->backoff_ms);
				l->pid = 0;
				atomic_store(&l->sh->pid, 0);
				atomic_store(&l->sh->state, 0);
				atomic_store(&l->sh->stats.conns_open, 0);
				atomic_store(&l->sh->tcp.pcbs_live, 0);
				l->restart_at_ms = now + l->backoff_ms;
			} else if (now >= l->restart_at_ms) {
				l->incarnation++;
				if (lane_fork(l) != 0) {
					l->restart_at_ms = now + RESTART_MAX_MS;
					continue;
				}
				atomic_fetch_add(&l->sh->restarts, 1);
				printf("flashsaled: dpdk: lane %u restarted (pid %d, restart %u)\n", i, (int)l->pid,
				       l->incarnation);
			}
		}
		struct timespec ts = { 0, 20 * 1000000 };
		nanosleep(&ts, NULL);
	}
	lanes_stop(d);
	return NULL;
}

static void lanes_stop(struct dp_dpdk *d)
{
	for (uint32_t i = 0; i < d->lane_count; i++)
		atomic_store(&d->lanes[i].sh->stop, 1);
	int64_t deadline = mono_ms() + STOP_WAIT_MS;
	for (uint32_t i = 0; i < d->lane_count; i++) {
		struct lane *l = &d->lanes[i];
		while (l->pid > 0) {
			int st;
			if (waitpid(l->pid, &st, WNOHANG) == l->pid) {
				l->pid = 0;
				break;
			}
			if (mono_ms() > deadline) {
				kill(l->pid, SIGKILL);
				waitpid(l->pid, &st, 0);
				l->pid = 0;
				break;
			}
			struct timespec ts = { 0, 5 * 1000000 };
			nanosleep(&ts, NULL);
		}
		atomic_store(&l->sh->pid, 0);
	}
}

/* ------------------------------------------------------------ start-up */

static int parse_ipv4(const char *s, uint32_t *be)
{
	struct in_addr a;
	if (s == NULL || inet_pton(AF_INET, s, &a) != 1)
		return -1;
	*be = a.s_addr;
	return 0;
}

static int parse_cidr(const char *s, uint32_t *ip_be, uint32_t *mask_be)
{
	char host[32];
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	if (n == 0 || n >= sizeof host)
		return -1;
	memcpy(host, s, n);
	host[n] = 0;
	long bits = 24;
	if (slash) {
		char *e;
		bits = strtol(slash + 1, &e, 10);
		if (*e || e == slash + 1 || bits < 1 || bits > 32)
			return -1;
	}
	if (parse_ipv4(host, ip_be) != 0)
		return -1;
	*mask_be = htonl(bits == 32 ? 0xffffffffu : ~(0xffffffffu >> bits));
	return 0;
}

static int has_arg(int argc, char **argv, const char *prefix)
{
	for (int i = 0; i < argc; i++)
		if (strncmp(argv[i], prefix, strlen(prefix)) == 0)
			return 1;
	return 0;
}

static long meminfo(const char *key)
{
	FILE *f = fopen("/proc/meminfo", "r");
	if (f == NULL)
		return -1;
	char line[256];
	long v = -1;
	size_t k = strlen(key);
	while (fgets(line, sizeof line, f))
		if (strncmp(line, key, k) == 0 && line[k] == ':') {
			v = strtol(line + k + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static int hugetlbfs_mounted(void)
{
	FILE *f = fopen("/proc/mounts", "r");
	if (f == NULL)
		return 0;
	char line[512];
	int found = 0;
	while (!found && fgets(line, sizeof line, f))
		found = strstr(line, " hugetlbfs ") != NULL;
	fclose(f);
	return found;
}

/* The reasons EAL gives are terse; name the usual cause and its fix first. */
static int precheck_hugepages(int argc, char **argv, char *err, size_t err_len)
{
	if (has_arg(argc, argv, "--no-huge"))
		return 0;
	long free_pages = meminfo("HugePages_Free");
	if (free_pages <= 0) {
		snprintf(err, err_len, "--dpdk: no free hugepages (HugePages_Free: %ld). Fix: run "
		         "'hugepages/reserve.sh 512' as root (1 GiB of 2 MiB pages), or add '--no-huge -m 512' "
		         "to the --dpdk arguments for development", free_pages);
		return -1;
	}
	if (!hugetlbfs_mounted()) {
		snprintf(err, err_len, "--dpdk: hugepages are reserved but no hugetlbfs is mounted. Fix: run "
		         "'hugepages/reserve.sh N' (it mounts /dev/hugepages), or add '--no-huge -m 512'");
		return -1;
	}
	return 0;
}

static int split_args(const char *s, char **argv, int max)
{
	int argc = 0;
	argv[argc++] = strdup("flashsaled");
	const char *p = s ? s : "";
	while (*p) {
		while (*p == ' ' || *p == '\t')
			p++;
		if (!*p)
			break;
		const char *start = p;
		while (*p && *p != ' ' && *p != '\t')
			p++;
		if (argc == max - 1)
			return -1;
		argv[argc++] = strndup(start, (size_t)(p - start));
	}
	argv[argc] = NULL;
	return argc;
}

static int eal_init(const struct dp_dpdk_config *cfg, char *err, size_t err_len)
{
	if (eal_ready)
		return 0;
	static char *argv[EAL_ARGS_MAX];   /* EAL keeps pointers into argv */
	int argc = split_args(cfg->eal_args, argv, EAL_ARGS_MAX);
	if (argc < 0) {
		snprintf(err, err_len, "--dpdk: more than %d EAL arguments", EAL_ARGS_MAX - 2);
		return -1;
	}
	if (precheck_hugepages(argc, argv, err, err_len) != 0)
		return -1;
	/* Hugepage files unlinked as soon as they are mapped: a crashed or
	 * killed process gives its pages back instead of leaving rtemap_*
	 * files that hold them until someone deletes them. */
	if (!has_arg(argc, argv, "--no-huge") && !has_arg(argc, argv, "--huge-unlink") &&
	    !has_arg(argc, argv, "--in-memory") && argc < EAL_ARGS_MAX - 1) {
		argv[argc++] = strdup("--huge-unlink");
		argv[argc] = NULL;
	}
	/* rte_eal_init pins the calling thread to the main lcore; the caller
	 * (flashsaled's main thread) starts more threads afterwards, which
	 * must not inherit that pinning. */
	cpu_set_t saved;
	int have_saved = pthread_getaffinity_np(pthread_self(), sizeof saved, &saved) == 0;
	int rc = rte_eal_init(argc, argv);
	if (have_saved)
		pthread_setaffinity_np(pthread_self(), sizeof saved, &saved);
	if (rc < 0) {
		int e = rte_errno;
		snprintf(err, err_len, "--dpdk: EAL initialisation failed: %s (%s). Check the EAL arguments "
		         "'%s' (see the lines above); for development use '--no-huge -m 512 --no-shconf "
		         "--vdev=net_af_packet0,iface=IF'%s", rte_strerror(e), e == EALREADY ? "already initialised" :
		         e == EACCES ? "permission denied: run as root" : e == ENOMEM ? "out of memory: more -m or hugepages" :
		         "see above", cfg->eal_args ? cfg->eal_args : "",
		         e == EACCES ? "" : "; a second DPDK process needs its own --file-prefix or --no-shconf");
		return -1;
	}
	eal_ready = 1;
	return 0;
}

static int port_init(struct dp_dpdk *d, char *err, size_t err_len)
{
	uint16_t avail = rte_eth_dev_count_avail();
	if (avail == 0) {
		snprintf(err, err_len, "--dpdk: no DPDK port. Fix: bind a NIC to vfio-pci "
		         "(dpdk-devbind.py --bind=vfio-pci PCI_ADDR) and pass its -a PCI_ADDR, or add "
		         "--vdev=net_af_packet0,iface=IF (any Linux interface, e.g. one end of a veth pair)");
		return -1;
	}
	if (!rte_eth_dev_is_valid_port(d->cfg.port_id)) {
		snprintf(err, err_len, "--dpdk: port %u does not exist (%u port(s) found)", d->cfg.port_id, avail);
		return -1;
	}
	d->port = d->cfg.port_id;
	int socket = rte_eth_dev_socket_id(d->port);
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(d->port, &info);
	if (rc == 0 && (info.max_rx_queues < d->lane_count || info.max_tx_queues < d->lane_count)) {
		snprintf(err, err_len, "--dpdk: --workers %u needs %u rx/tx queue pairs, port %u (%s) has %u/%u. Fix: "
		         "add qpairs=%u to the af_packet vdev (--vdev=net_af_packet0,iface=IF,qpairs=%u), or fewer "
		         "--workers", d->lane_count, d->lane_count, d->port, info.driver_name ? info.driver_name : "?",
		         info.max_rx_queues, info.max_tx_queues, d->lane_count, d->lane_count);
		return -1;
	}
	d->pool = rte_pktmbuf_pool_create("fs_mbufs", MBUF_COUNT, MBUF_CACHE, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
	                                  socket < 0 ? (int)rte_socket_id() : socket);
	if (d->pool == NULL) {
		snprintf(err, err_len, "--dpdk: cannot create the mbuf pool (%d mbufs): %s. Fix: more memory "
		         "(-m 512, or more hugepages)", MBUF_COUNT, rte_strerror(rte_errno));
		return -1;
	}
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof conf);
	conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
	conf.txmode.mq_mode = RTE_ETH_MQ_TX_NONE;
	/* Several lanes: the NIC spreads flows by RSS over the 4-tuple, so a
	 * connection's packets all reach one lane. A vdev without RSS spreads
	 * them itself (af_packet: the kernel's PACKET_FANOUT_HASH). */
	if (rc == 0 && d->lane_count > 1) {
		uint64_t hf = (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP) & info.flow_type_rss_offloads;
		if (hf) {
			conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
			conf.rx_adv_conf.rss_conf.rss_hf = hf;
		}
	}
	/* lwIP computes and checks every checksum in software: no offloads, so
	 * the same code runs on a vdev and on a real NIC. */
	uint16_t nb_rx = RX_DESC, nb_tx = TX_DESC;
	uint16_t q = (uint16_t)d->lane_count;
	unsigned sock = (unsigned)socket < RTE_MAX_NUMA_NODES ? (unsigned)socket : 0;
	if (rc == 0)
		rc = rte_eth_dev_configure(d->port, q, q, &conf);
	if (rc == 0)
		rc = rte_eth_dev_adjust_nb_rx_tx_desc(d->port, &nb_rx, &nb_tx);
	for (uint16_t i = 0; rc == 0 && i < q; i++) {
		rc = rte_eth_rx_queue_setup(d->port, i, nb_rx, sock, NULL, d->pool);
		if (rc == 0)
			rc = rte_eth_tx_queue_setup(d->port, i, nb_tx, sock, NULL);
	}
	if (rc == 0)
		rc = rte_eth_dev_start(d->port);
	if (rc != 0) {
		snprintf(err, err_len, "--dpdk: cannot set up port %u (%s) with %u queue pair(s): %s", d->port,
		         info.driver_name ? info.driver_name : "?", q, rte_strerror(rc < 0 ? -rc : rc));
		return -1;
	}
	rte_eth_macaddr_get(d->port, &d->mac);
	if (rte_eth_dev_get_mtu(d->port, &d->mtu) != 0 || d->mtu == 0)
		d->mtu = 1500;
	if (d->mtu > RTE_MBUF_DEFAULT_DATAROOM - RTE_ETHER_HDR_LEN - RTE_ETHER_CRC_LEN)
		d->mtu = 1500;   /* no jumbo frames: lwIP frames fit one mbuf */
	return 0;
}

/* Lane i runs on the i-th worker lcore of the EAL arguments (-l 0,1,2 ->
 * lanes on lcores 1 and 2); lanes beyond them get no lcore of their own
 * (not pinned, no mempool cache). */
static int lanes_init(struct dp_dpdk *d, char *err, size_t err_len)
{
	d->lanes = calloc(d->lane_count, sizeof *d->lanes);
	d->sh = mmap(NULL, d->lane_count * sizeof *d->sh, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (d->lanes == NULL || d->sh == MAP_FAILED) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	unsigned lc = (unsigned)-1;
	for (uint32_t i = 0; i < d->lane_count; i++) {
		struct lane *l = &d->lanes[i];
		l->d = d;
		l->index = i;
		l->sh = &d->sh[i];
		l->wport = d->cfg.lanes > 1 ? d->cfg.wports[i] : d->cfg.worker.wport;
		lc = lc < RTE_MAX_LCORE || i == 0 ? rte_get_next_lcore(lc, 1, 0) : RTE_MAX_LCORE;
		l->lcore = lc;
		if (lc < RTE_MAX_LCORE)
			l->cpus = rte_lcore_cpuset(lc);
		if (d->lane_count > 1) {
			char name[RTE_RING_NAMESIZE];
			snprintf(name, sizeof name, "fs_arp%u", i);
			l->arp = rte_ring_create(name, ARP_RING_SLOTS, rte_socket_id(), RING_F_SC_DEQ);
			if (l->arp == NULL) {
				snprintf(err, err_len, "--dpdk: cannot create ring %s: %s", name, rte_strerror(rte_errno));
				return -1;
			}
		}
	}
	return 0;
}

static int start_one_lane_here(struct dp_dpdk *d)
{
	struct lane *l = &d->lanes[0];
	int rc;
	if (l->lcore < RTE_MAX_LCORE) {
		rc = rte_eal_remote_launch(lane_main, l, l->lcore);
	} else {
		/* Only the main lcore was given: a thread pinned to its CPUs. */
		l->cpus = rte_lcore_cpuset(rte_get_main_lcore());
		rc = pthread_create(&l->thread, NULL, own_thread_main, l);
		if (rc == 0) {
			pthread_setaffinity_np(l->thread, sizeof l->cpus, &l->cpus);
			pthread_setname_np(l->thread, "fs-dpdk");
		}
	}
	if (rc != 0)
		return -1;
	return lane_wait_running(l, 10000);
}

static void stop_one_lane_here(struct dp_dpdk *d)
{
	struct lane *l = &d->lanes[0];
	atomic_store(&l->sh->stop, 1);
	if (l->lcore < RTE_MAX_LCORE)
		rte_eal_wait_lcore(l->lcore);
	else
		pthread_join(l->thread, NULL);
}

struct dp_dpdk *dp_dpdk_start(const struct dp_dpdk_config *cfg, char *err, size_t err_len)
{
	assert(cfg->worker.conn_max > 0 && cfg->worker.snap != NULL);
	assert(cfg->lanes <= 1 ? cfg->worker.wport != NULL : cfg->wports != NULL);
	struct dp_dpdk *d = calloc(1, sizeof *d);
	if (d == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	d->cfg = *cfg;
	d->lane_count = cfg->lanes ? cfg->lanes : 1;
	d->primary = getpid();
	if (cfg->ip == NULL || parse_cidr(cfg->ip, &d->ip_be, &d->mask_be) != 0) {
		snprintf(err, err_len, "--ip: '%s' is not A.B.C.D/N (the DPDK backend needs its own address)",
		         cfg->ip ? cfg->ip : "(missing)");
		goto fail;
	}
	if (cfg->gateway && parse_ipv4(cfg->gateway, &d->gw_be) != 0) {
		snprintf(err, err_len, "--gateway: '%s' is not an IPv4 address", cfg->gateway);
		goto fail;
	}
	if (eal_init(cfg, err, err_len) != 0 || port_init(d, err, err_len) != 0)
		goto fail;
	if (lanes_init(d, err, err_len) != 0)
		goto fail_port;

	if (d->lane_count == 1) {
		if (start_one_lane_here(d) != 0) {
			struct lane *l = &d->lanes[0];
			snprintf(err, err_len, "--dpdk: %s", l->sh->err[0] ? l->sh->err : "the stack lcore did not start in 10 s");
			stop_one_lane_here(d);
			goto fail_port;
		}
	} else {
		fflush(NULL);   /* nothing buffered is written twice by the children */
		for (uint32_t i = 0; i < d->lane_count; i++) {
			struct lane *l = &d->lanes[i];
			if (lane_fork(l) != 0 || lane_wait_running(l, 10000) != 0) {
				snprintf(err, err_len, "--dpdk: lane %u: %s", i, l->sh->err[0] ? l->sh->err :
				         "its process did not start in 10 s");
				lanes_stop(d);
				goto fail_port;
			}
		}
		if (pthread_create(&d->supervisor, NULL, supervisor_main, d) != 0) {
			snprintf(err, err_len, "--dpdk: cannot start the lane supervisor thread");
			lanes_stop(d);
			goto fail_port;
		}
		pthread_setname_np(d->supervisor, "fs-dpdk-sup");
	}
	d->running = 1;
	if (!cfg->quiet) {
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &d->ip_be, ip, sizeof ip);
		struct rte_eth_dev_info info;
		rte_eth_dev_info_get(d->port, &info);
		printf("flashsaled: dpdk: port %u (%s) mac " RTE_ETHER_ADDR_PRT_FMT " mtu %u, lwIP %s/%s port %u, "
		       "%u lane(s), %s\n", d->port, info.driver_name, RTE_ETHER_ADDR_BYTES(&d->mac), d->mtu, ip,
		       strchr(cfg->ip, '/') ? strchr(cfg->ip, '/') + 1 : "24", cfg->tcp_port, d->lane_count,
		       cfg->busy_poll ? "busy-poll" : "idle back-off");
		for (uint32_t i = 0; i < d->lane_count; i++) {
			struct lane *l = &d->lanes[i];
			char where[64];
			if (l->lcore < RTE_MAX_LCORE)
				snprintf(where, sizeof where, "lcore %u", l->lcore);
			else
				snprintf(where, sizeof where, "%s", d->lane_count == 1 ? "a thread on the main lcore" :
				         "no lcore of its own (not pinned: give -l one lcore per lane)");
			printf("flashsaled: dpdk: lane %u: queue %u, %s, %s\n", i, i, where,
			       d->lane_count == 1 ? "in this process" : "own process (own lwIP stack)");
		}
	}
	return d;
fail_port:
	rte_eth_dev_stop(d->port);
	rte_eth_dev_close(d->port);
fail:
	free(d->lanes);
	free(d);
	return NULL;
}

void dp_dpdk_stop(struct dp_dpdk *d)
{
	if (d == NULL || !d->running)
		return;
	d->running = 0;
	if (d->lane_count == 1) {
		stop_one_lane_here(d);
	} else {
		atomic_store(&d->stopping, 1);
		pthread_join(d->supervisor, NULL);   /* it stops the lanes */
	}
	rte_eth_dev_stop(d->port);
	rte_eth_dev_close(d->port);
	/* Frees the mempool and deletes the hugepage files: a stopped process
	 * must not keep its pages allocated (FACTS.md). */
	rte_eal_cleanup();
}

uint32_t dp_dpdk_lanes(const struct dp_dpdk *d) { return d->lane_count; }

const struct dp_stats *dp_dpdk_worker_stats(const struct dp_dpdk *d, uint32_t lane)
{
	assert(lane < d->lane_count);
	return &d->sh[lane].stats;
}

/* ------------------------------------------------------------ metrics */

int dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_port_stats *s)
{
	memset(s, 0, sizeof *s);
	for (uint32_t i = 0; i < d->lane_count; i++) {
		const struct lane_shared *sh = &d->sh[i];
		const struct dp_lwip_tcp_stats *t = &sh->tcp;
		s->rx_frames += atomic_load(&t->rx_frames);
		s->tx_frames += atomic_load(&t->tx_frames);
		s->rx_drop_nomem += atomic_load(&t->rx_drop_nomem);
		s->tx_drop_nobuf += atomic_load(&t->tx_drop_nobuf);
		s->tcp_accepted += atomic_load(&t->pcbs_accepted);
		s->tcp_reset += atomic_load(&t->pcbs_reset);
		s->tcp_aborted += atomic_load(&t->pcbs_aborted);
		s->tcp_live += atomic_load(&t->pcbs_live);
		s->tcp_write_blocked += atomic_load(&t->write_blocked);
		s->tx_dropped += atomic_load(&sh->tx_dropped);
		s->loops += atomic_load(&sh->loops);
		s->idle_sleeps += atomic_load(&sh->idle_sleeps);
	}
	if (!d->running)
		return -1;
	struct rte_eth_stats e;
	if (rte_eth_stats_get(d->port, &e) != 0)
		return -1;
	s->ipackets = e.ipackets;
	s->opackets = e.opackets;
	s->ibytes = e.ibytes;
	s->obytes = e.obytes;
	s->imissed = e.imissed;
	s->ierrors = e.ierrors;
	s->oerrors = e.oerrors;
	s->rx_nombuf = e.rx_nombuf;
	return 0;
}

static size_t put(char *buf, size_t cap, size_t n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static size_t put(char *buf, size_t cap, size_t n, const char *fmt, ...)
{
	if (n >= cap)
		return n;
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(buf + n, cap - n, fmt, ap);
	va_end(ap);
	return k < 0 ? cap : n + (size_t)k;
}

/* Per lane: packets, drops, connections, answers by status (the HTTP
 * names of the io_uring backend are the sums, rendered by the admin). */
static size_t lane_metrics(const struct dp_dpdk *d, char *buf, size_t cap, size_t n)
{
	static const char *const head[] = {
		"# TYPE flashsale_dpdk_lane_packets_total counter\n",
		"# TYPE flashsale_dpdk_lane_drops_total counter\n",
		"# TYPE flashsale_dpdk_lane_connections_open gauge\n",
		"# TYPE flashsale_dpdk_lane_connections_accepted_total counter\n",
		"# TYPE flashsale_dpdk_lane_answers_total counter\n",
		"# TYPE flashsale_dpdk_lane_up gauge\n",
		"# TYPE flashsale_dpdk_lane_pid gauge\n",
		"# TYPE flashsale_dpdk_lane_restarts_total counter\n",
		"# TYPE flashsale_dpdk_lane_arp_shared_total counter\n",
	};
	for (unsigned k = 0; k < sizeof head / sizeof head[0]; k++) {
		n = put(buf, cap, n, "%s", head[k]);
		for (uint32_t i = 0; i < d->lane_count; i++) {
			struct lane_shared *sh = &d->sh[i];
			switch (k) {
			case 0:
				n = put(buf, cap, n, "flashsale_dpdk_lane_packets_total{lane=\"%u\",dir=\"rx\"} %llu\n"
				        "flashsale_dpdk_lane_packets_total{lane=\"%u\",dir=\"tx\"} %llu\n",
				        i, (unsigned long long)atomic_load(&sh->rx_packets),
				        i, (unsigned long long)atomic_load(&sh->tx_packets));
				break;
			case 1:
				n = put(buf, cap, n, "flashsale_dpdk_lane_drops_total{lane=\"%u\",reason=\"tx_full\"} %llu\n"
				        "flashsale_dpdk_lane_drops_total{lane=\"%u\",reason=\"stack_rx_nomem\"} %llu\n"
				        "flashsale_dpdk_lane_drops_total{lane=\"%u\",reason=\"stack_tx_nobuf\"} %llu\n"
				        "flashsale_dpdk_lane_drops_total{lane=\"%u\",reason=\"ring_full\"} %llu\n",
				        i, (unsigned long long)atomic_load(&sh->tx_dropped),
				        i, (unsigned long long)atomic_load(&sh->tcp.rx_drop_nomem),
				        i, (unsigned long long)atomic_load(&sh->tcp.tx_drop_nobuf),
				        i, (unsigned long long)atomic_load(&sh->stats.ring_full));
				break;
			case 2:
				n = put(buf, cap, n, "flashsale_dpdk_lane_connections_open{lane=\"%u\"} %llu\n", i,
				        (unsigned long long)atomic_load(&sh->stats.conns_open));
				break;
			case 3:
				n = put(buf, cap, n, "flashsale_dpdk_lane_connections_accepted_total{lane=\"%u\"} %llu\n", i,
				        (unsigned long long)atomic_load(&sh->stats.conns_accepted));
				break;
			case 4:
				for (int st = 0; st < DP_ST_COUNT; st++) {
					uint64_t v = 0;
					for (int r = 0; r < DP_R_COUNT; r++)
						v += atomic_load(&sh->stats.answers[r][st]);
					if (v)
						n = put(buf, cap, n, "flashsale_dpdk_lane_answers_total{lane=\"%u\",status=\"%d\"} %llu\n",
						        i, dp_status_of_slot(st), (unsigned long long)v);
				}
				break;
			case 5:
				n = put(buf, cap, n, "flashsale_dpdk_lane_up{lane=\"%u\"} %d\n", i, atomic_load(&sh->state) == 1);
				break;
			case 6:
				n = put(buf, cap, n, "flashsale_dpdk_lane_pid{lane=\"%u\"} %d\n", i, atomic_load(&sh->pid));
				break;
			case 7:
				n = put(buf, cap, n, "flashsale_dpdk_lane_restarts_total{lane=\"%u\"} %llu\n", i,
				        (unsigned long long)atomic_load(&sh->restarts));
				break;
			default:
				n = put(buf, cap, n, "flashsale_dpdk_lane_arp_shared_total{lane=\"%u\"} %llu\n", i,
				        (unsigned long long)atomic_load(&sh->arp_shared));
				break;
			}
		}
	}
	return n;
}

size_t dp_dpdk_metrics(const struct dp_dpdk *d, char *buf, size_t cap)
{
	struct dp_dpdk_port_stats s;
	dp_dpdk_stats(d, &s);
	unsigned p = d->port;
	size_t n = put(buf, cap, 0,
		"# TYPE flashsale_dpdk_packets_total counter\n"
		"flashsale_dpdk_packets_total{port=\"%u\",dir=\"rx\"} %llu\n"
		"flashsale_dpdk_packets_total{port=\"%u\",dir=\"tx\"} %llu\n"
		"# TYPE flashsale_dpdk_bytes_total counter\n"
		"flashsale_dpdk_bytes_total{port=\"%u\",dir=\"rx\"} %llu\n"
		"flashsale_dpdk_bytes_total{port=\"%u\",dir=\"tx\"} %llu\n"
		"# TYPE flashsale_dpdk_drops_total counter\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"rx_missed\"} %llu\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"rx_errors\"} %llu\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"rx_nombuf\"} %llu\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"tx_errors\"} %llu\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"tx_full\"} %llu\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"stack_rx_nomem\"} %llu\n"
		"flashsale_dpdk_drops_total{port=\"%u\",reason=\"stack_tx_nobuf\"} %llu\n"
		"# TYPE flashsale_dpdk_tcp_connections_total counter\n"
		"flashsale_dpdk_tcp_connections_total{event=\"accepted\"} %llu\n"
		"flashsale_dpdk_tcp_connections_total{event=\"reset\"} %llu\n"
		"flashsale_dpdk_tcp_connections_total{event=\"aborted\"} %llu\n"
		"# TYPE flashsale_dpdk_tcp_connections_open gauge\n"
		"flashsale_dpdk_tcp_connections_open %llu\n"
		"# TYPE flashsale_dpdk_tcp_write_blocked_total counter\n"
		"flashsale_dpdk_tcp_write_blocked_total %llu\n"
		"# TYPE flashsale_dpdk_loops_total counter\n"
		"flashsale_dpdk_loops_total %llu\n"
		"# TYPE flashsale_dpdk_idle_sleeps_total counter\n"
		"flashsale_dpdk_idle_sleeps_total %llu\n"
		"# TYPE flashsale_dpdk_lanes gauge\n"
		"flashsale_dpdk_lanes %u\n"
		"# TYPE flashsale_dpdk_mbufs_free gauge\n"
		"flashsale_dpdk_mbufs_free %u\n"
		"# TYPE flashsale_dpdk_mbufs gauge\n"
		"flashsale_dpdk_mbufs %u\n",
		p, (unsigned long long)s.ipackets, p, (unsigned long long)s.opackets,
		p, (unsigned long long)s.ibytes, p, (unsigned long long)s.obytes,
		p, (unsigned long long)s.imissed, p, (unsigned long long)s.ierrors,
		p, (unsigned long long)s.rx_nombuf, p, (unsigned long long)s.oerrors,
		p, (unsigned long long)s.tx_dropped, p, (unsigned long long)s.rx_drop_nomem,
		p, (unsigned long long)s.tx_drop_nobuf,
		(unsigned long long)s.tcp_accepted, (unsigned long long)s.tcp_reset,
		(unsigned long long)s.tcp_aborted, (unsigned long long)s.tcp_live,
		(unsigned long long)s.tcp_write_blocked, (unsigned long long)s.loops,
		(unsigned long long)s.idle_sleeps, d->lane_count,
		d->running ? rte_mempool_avail_count(d->pool) : 0, (unsigned)MBUF_COUNT);
	n = lane_metrics(d, buf, cap, n);
	if (n >= cap) {
		if (cap)
			buf[0] = 0;
		return 0;
	}
	return n;
}

/* ---- the DPDK backend (backend.h): N lanes, lane i is worker i */

/* Nothing to claim before recovery: the port is taken by the EAL at start. */
static int dpdk_claim(struct dp_backend *b, char *err, size_t err_len)
{
	assert(b->self == NULL);
	if (b->cfg.worker_count < 1 || b->cfg.worker_count > DP_WORKERS_MAX || b->cfg.ip == NULL) {
		snprintf(err, err_len, "--dpdk: 1..%d stack lanes (--workers) and --ip are required", DP_WORKERS_MAX);
		return -1;
	}
	return 0;
}

static int dpdk_start(struct dp_backend *b, char *err, size_t err_len)
{
	assert(b->self == NULL);
	struct dp_dpdk_config ddc = { .eal_args = b->cfg.eal_args, .ip = b->cfg.ip, .gateway = b->cfg.gateway,
	                              .tcp_port = b->cfg.listen_port, .busy_poll = b->cfg.busy_poll,
	                              .worker = b->cfg.worker, .lanes = b->cfg.worker_count,
	                              .wports = b->cfg.wports };
	ddc.worker.index = 0;
	ddc.worker.cpu = -1;
	ddc.worker.listen_fd = -1;
	ddc.worker.wport = b->cfg.wports[0];
	b->self = dp_dpdk_start(&ddc, err, err_len);
	return b->self ? 0 : -1;
}

static void dpdk_stop(struct dp_backend *b) { dp_dpdk_stop(b->self); }

static uint32_t dpdk_stats(const struct dp_backend *b, const struct dp_stats **out, uint32_t max)
{
	if (b->self == NULL)
		return 0;
	uint32_t n = dp_dpdk_lanes(b->self);
	if (n > max)
		n = max;
	for (uint32_t i = 0; i < n; i++)
		out[i] = dp_dpdk_worker_stats(b->self, i);
	return n;
}

static size_t dpdk_metrics(const struct dp_backend *b, char *buf, size_t cap)
{
	return b->self ? dp_dpdk_metrics(b->self, buf, cap) : 0;
}

const struct dp_backend_ops dp_dpdk_ops = {
	.name = "dpdk", .claim = dpdk_claim, .start = dpdk_start, .stop = dpdk_stop,
	.stats = dpdk_stats, .metrics = dpdk_metrics,
};
