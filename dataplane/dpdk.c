/* dpdk.c - the DPDK side of the DPDK backend (see dpdk.h): EAL, mbuf pool,
 * one port with one rx and one tx queue, and the run-to-completion loop on
 * one lcore. TCP/IP lives behind dataplane/lwip_glue.h: this file moves
 * frames as bytes and never includes an lwIP header (the two header sets
 * clash: struct ip6_hdr, IP_DF).
 *
 * Per loop: rx burst -> dp_lwip_input per frame (copied into a pbuf, the
 * mbufs are freed at once) -> dp_lwip_poll (timers, writer answers,
 * tcp_write) -> one tx burst of every frame lwIP produced during the loop.
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
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

_Static_assert(TX_BURST <= 65535 && RX_BURST <= 65535, "burst sizes are uint16_t");
_Static_assert(((MBUF_COUNT + 1) & MBUF_COUNT) == 0, "mempool size is 2^n - 1");

struct dp_dpdk {
	struct dp_dpdk_config cfg;
	uint16_t port;
	struct rte_mempool *pool;
	struct dp_lwip *stack;        /* owned by the loop's thread */
	unsigned lcore;               /* RTE_MAX_LCORE: runs on own_thread */
	pthread_t own_thread;
	rte_cpuset_t own_cpus;
	_Atomic int state;            /* 0 starting, 1 running, -1 failed, 2 stopped */
	_Atomic int stop;
	char err[256];
	uint32_t ip_be, mask_be, gw_be;
	struct rte_ether_addr mac;
	uint16_t mtu;
	struct rte_mbuf *tx[TX_BURST];
	uint16_t tx_n;
	_Atomic uint64_t tx_dropped, loops, idle_sleeps;
	uint8_t frame[FRAME_BYTES_MAX];
};

static int eal_ready;             /* rte_eal_init succeeded in this process */

/* ------------------------------------------------------------ tx */

static void tx_flush(struct dp_dpdk *d)
{
	uint16_t sent = 0;
	for (int i = 0; i <= TX_RETRIES && sent < d->tx_n; i++)
		sent += rte_eth_tx_burst(d->port, 0, d->tx + sent, (uint16_t)(d->tx_n - sent));
	if (sent < d->tx_n) {
		atomic_fetch_add_explicit(&d->tx_dropped, (uint64_t)(d->tx_n - sent), memory_order_relaxed);
		rte_pktmbuf_free_bulk(d->tx + sent, (unsigned)(d->tx_n - sent));
	}
	d->tx_n = 0;
}

/* dp_lwip_tx_buf_fn: room in a fresh mbuf queued for this loop's tx burst. */
static uint8_t *tx_buf(void *ctx, uint32_t len)
{
	struct dp_dpdk *d = ctx;
	if (d->tx_n == TX_BURST)
		tx_flush(d);
	struct rte_mbuf *m = rte_pktmbuf_alloc(d->pool);
	if (m == NULL)
		return NULL;
	if (len > UINT16_MAX || len > rte_pktmbuf_tailroom(m)) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	char *p = rte_pktmbuf_append(m, (uint16_t)len);
	assert(p != NULL);
	d->tx[d->tx_n++] = m;
	return (uint8_t *)p;
}

/* ------------------------------------------------------------ the loop */

static void idle_sleep(struct dp_dpdk *d, uint32_t us)
{
	struct fs_port *port = d->cfg.worker.wport;
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
		atomic_fetch_add_explicit(&d->idle_sleeps, 1, memory_order_relaxed);
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

static int stack_main(void *arg)
{
	struct dp_dpdk *d = arg;
	struct dp_lwip_config lc = {
		.ip_be = d->ip_be, .netmask_be = d->mask_be, .gateway_be = d->gw_be,
		.mtu = d->mtu, .port = d->cfg.tcp_port, .worker = d->cfg.worker,
		.tx_buf = tx_buf, .tx_ctx = d,
	};
	memcpy(lc.mac, d->mac.addr_bytes, 6);
	char err[256];
	d->stack = dp_lwip_open(&lc, err, sizeof err);
	if (d->stack == NULL) {
		snprintf(d->err, sizeof d->err, "%s", err);
		atomic_store(&d->state, -1);
		return -1;
	}
	tx_flush(d);   /* the gratuitous ARP */
	atomic_store(&d->state, 1);

	struct rte_mbuf *rx[RX_BURST];
	const uint64_t spin_tsc = rte_get_tsc_hz() / 1000000 * IDLE_SPIN_US;
	struct tsc_clock clk = { .tsc_per_ms = rte_get_tsc_hz() / 1000 };
	assert(clk.tsc_per_ms > 0);
	clock_sync(&clk, rte_rdtsc());
	uint64_t idle_since = 0;
	while (!atomic_load_explicit(&d->stop, memory_order_relaxed)) {
		uint16_t n = rte_eth_rx_burst(d->port, 0, rx, RX_BURST);
		for (uint16_t i = 0; i < n; i++) {
			struct rte_mbuf *m = rx[i];
			uint32_t len = rte_pktmbuf_pkt_len(m);
			if (m->nb_segs == 1) {
				dp_lwip_input(d->stack, rte_pktmbuf_mtod(m, const void *), len);
			} else if (len <= FRAME_BYTES_MAX) {
				const void *f = rte_pktmbuf_read(m, 0, len, d->frame);
				dp_lwip_input(d->stack, f, len);
			}
		}
		if (n)
			rte_pktmbuf_free_bulk(rx, n);
		uint64_t tsc = rte_rdtsc();
		uint32_t work = n + dp_lwip_poll(d->stack, clock_ms(&clk, tsc));
		if (d->tx_n)
			tx_flush(d);
		atomic_fetch_add_explicit(&d->loops, 1, memory_order_relaxed);
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
		idle_sleep(d, idle_ms < IDLE_SHORT_MS ? IDLE_SLEEP_US_SHORT :
		              idle_ms < IDLE_MEDIUM_MS ? IDLE_SLEEP_US_MEDIUM : IDLE_SLEEP_US_MAX);
	}
	dp_lwip_close(d->stack);   /* RST to every client, on the stack's thread */
	tx_flush(d);
	atomic_store(&d->state, 2);
	return 0;
}

static void *own_thread_main(void *arg)
{
	stack_main(arg);
	return NULL;
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
	d->pool = rte_pktmbuf_pool_create("fs_mbufs", MBUF_COUNT, MBUF_CACHE, 0, RTE_MBUF_DEFAULT_BUF_SIZE,
	                                  socket < 0 ? (int)rte_socket_id() : socket);
	if (d->pool == NULL) {
		snprintf(err, err_len, "--dpdk: cannot create the mbuf pool (%d mbufs): %s. Fix: more memory "
		         "(-m 512, or more hugepages)", MBUF_COUNT, rte_strerror(rte_errno));
		return -1;
	}
	struct rte_eth_dev_info info;
	int rc = rte_eth_dev_info_get(d->port, &info);
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof conf);
	conf.rxmode.mq_mode = RTE_ETH_MQ_RX_NONE;
	conf.txmode.mq_mode = RTE_ETH_MQ_TX_NONE;
	/* lwIP computes and checks every checksum in software: no offloads, so
	 * the same code runs on a vdev and on a real NIC. */
	uint16_t nb_rx = RX_DESC, nb_tx = TX_DESC;
	if (rc == 0)
		rc = rte_eth_dev_configure(d->port, 1, 1, &conf);
	if (rc == 0)
		rc = rte_eth_dev_adjust_nb_rx_tx_desc(d->port, &nb_rx, &nb_tx);
	if (rc == 0)
		rc = rte_eth_rx_queue_setup(d->port, 0, nb_rx, (unsigned)socket < RTE_MAX_NUMA_NODES ? (unsigned)socket : 0,
		                            NULL, d->pool);
	if (rc == 0)
		rc = rte_eth_tx_queue_setup(d->port, 0, nb_tx, (unsigned)socket < RTE_MAX_NUMA_NODES ? (unsigned)socket : 0,
		                            NULL);
	if (rc == 0)
		rc = rte_eth_dev_start(d->port);
	if (rc != 0) {
		snprintf(err, err_len, "--dpdk: cannot set up port %u (%s): %s", d->port,
		         info.driver_name ? info.driver_name : "?", rte_strerror(rc < 0 ? -rc : rc));
		return -1;
	}
	rte_eth_macaddr_get(d->port, &d->mac);
	if (rte_eth_dev_get_mtu(d->port, &d->mtu) != 0 || d->mtu == 0)
		d->mtu = 1500;
	if (d->mtu > RTE_MBUF_DEFAULT_DATAROOM - RTE_ETHER_HDR_LEN - RTE_ETHER_CRC_LEN)
		d->mtu = 1500;   /* no jumbo frames: lwIP frames fit one mbuf */
	return 0;
}

struct dp_dpdk *dp_dpdk_start(const struct dp_dpdk_config *cfg, char *err, size_t err_len)
{
	assert(cfg->worker.conn_max > 0 && cfg->worker.wport != NULL && cfg->worker.snap != NULL);
	struct dp_dpdk *d = calloc(1, sizeof *d);
	if (d == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	d->cfg = *cfg;
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

	d->lcore = rte_get_next_lcore((unsigned)-1, 1, 0);
	int rc;
	if (d->lcore < RTE_MAX_LCORE) {
		rc = rte_eal_remote_launch(stack_main, d, d->lcore);
	} else {
		/* Only the main lcore was given: a thread pinned to its CPUs. */
		d->own_cpus = rte_lcore_cpuset(rte_get_main_lcore());
		rc = pthread_create(&d->own_thread, NULL, own_thread_main, d);
		if (rc == 0) {
			pthread_setaffinity_np(d->own_thread, sizeof d->own_cpus, &d->own_cpus);
			pthread_setname_np(d->own_thread, "fs-dpdk");
		}
	}
	if (rc != 0) {
		snprintf(err, err_len, "--dpdk: cannot start the stack lcore %u (%d)", d->lcore, rc);
		goto fail_port;
	}
	for (int i = 0; i < 10000 && atomic_load(&d->state) == 0; i++) {
		struct timespec ts = { 0, 1000000 };
		nanosleep(&ts, NULL);
	}
	if (atomic_load(&d->state) != 1) {
		snprintf(err, err_len, "--dpdk: %s", d->err[0] ? d->err : "the stack lcore did not start in 10 s");
		atomic_store(&d->stop, 1);
		if (d->lcore < RTE_MAX_LCORE)
			rte_eal_wait_lcore(d->lcore);
		else
			pthread_join(d->own_thread, NULL);
		goto fail_port;
	}
	if (!cfg->quiet) {
		char ip[INET_ADDRSTRLEN];
		inet_ntop(AF_INET, &d->ip_be, ip, sizeof ip);
		struct rte_eth_dev_info info;
		rte_eth_dev_info_get(d->port, &info);
		printf("flashsaled: dpdk: port %u (%s) mac " RTE_ETHER_ADDR_PRT_FMT " mtu %u, lwIP %s/%s port %u on "
		       "%s %u, %s\n", d->port, info.driver_name, RTE_ETHER_ADDR_BYTES(&d->mac), d->mtu, ip,
		       strchr(cfg->ip, '/') ? strchr(cfg->ip, '/') + 1 : "24", cfg->tcp_port,
		       d->lcore < RTE_MAX_LCORE ? "lcore" : "thread on main lcore",
		       d->lcore < RTE_MAX_LCORE ? d->lcore : rte_get_main_lcore(),
		       cfg->busy_poll ? "busy-poll" : "idle back-off");
	}
	return d;
fail_port:
	rte_eth_dev_stop(d->port);
	rte_eth_dev_close(d->port);
fail:
	free(d);
	return NULL;
}

void dp_dpdk_stop(struct dp_dpdk *d)
{
	if (d == NULL || atomic_load(&d->state) != 1)
		return;
	atomic_store(&d->stop, 1);
	if (d->lcore < RTE_MAX_LCORE)
		rte_eal_wait_lcore(d->lcore);
	else
		pthread_join(d->own_thread, NULL);
	rte_eth_dev_stop(d->port);
	rte_eth_dev_close(d->port);
	/* Frees the mempool and deletes the hugepage files: a stopped process
	 * must not keep its pages allocated (FACTS.md). */
	rte_eal_cleanup();
}

const struct dp_stats *dp_dpdk_worker_stats(const struct dp_dpdk *d) { return dp_lwip_stats(d->stack); }

/* ------------------------------------------------------------ metrics */

int dp_dpdk_stats(const struct dp_dpdk *d, struct dp_dpdk_port_stats *s)
{
	memset(s, 0, sizeof *s);
	const struct dp_lwip_tcp_stats *t = dp_lwip_tcp_stats(d->stack);
	s->rx_frames = atomic_load(&t->rx_frames);
	s->tx_frames = atomic_load(&t->tx_frames);
	s->rx_drop_nomem = atomic_load(&t->rx_drop_nomem);
	s->tx_drop_nobuf = atomic_load(&t->tx_drop_nobuf);
	s->tcp_accepted = atomic_load(&t->pcbs_accepted);
	s->tcp_reset = atomic_load(&t->pcbs_reset);
	s->tcp_aborted = atomic_load(&t->pcbs_aborted);
	s->tcp_live = atomic_load(&t->pcbs_live);
	s->tcp_write_blocked = atomic_load(&t->write_blocked);
	s->tx_dropped = atomic_load(&d->tx_dropped);
	s->loops = atomic_load(&d->loops);
	s->idle_sleeps = atomic_load(&d->idle_sleeps);
	if (atomic_load(&d->state) != 1)
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

size_t dp_dpdk_metrics(const struct dp_dpdk *d, char *buf, size_t cap)
{
	struct dp_dpdk_port_stats s;
	dp_dpdk_stats(d, &s);
	unsigned p = d->port;
	int n = snprintf(buf, cap,
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
		"flashsale_dpdk_idle_sleeps_total %llu\n",
		p, (unsigned long long)s.ipackets, p, (unsigned long long)s.opackets,
		p, (unsigned long long)s.ibytes, p, (unsigned long long)s.obytes,
		p, (unsigned long long)s.imissed, p, (unsigned long long)s.ierrors,
		p, (unsigned long long)s.rx_nombuf, p, (unsigned long long)s.oerrors,
		p, (unsigned long long)s.tx_dropped, p, (unsigned long long)s.rx_drop_nomem,
		p, (unsigned long long)s.tx_drop_nobuf,
		(unsigned long long)s.tcp_accepted, (unsigned long long)s.tcp_reset,
		(unsigned long long)s.tcp_aborted, (unsigned long long)s.tcp_live,
		(unsigned long long)s.tcp_write_blocked, (unsigned long long)s.loops,
		(unsigned long long)s.idle_sleeps);
	if (n < 0 || (size_t)n >= cap) {
		if (cap)
			buf[0] = 0;
		return 0;
	}
	return (size_t)n;
}

/* ---- the DPDK backend (backend.h): one stack lcore, one worker's counters */

/* Nothing to claim before recovery: the port is taken by the EAL at start. */
static int dpdk_claim(struct dp_backend *b, char *err, size_t err_len)
{
	assert(b->self == NULL);
	if (b->cfg.worker_count != 1 || b->cfg.ip == NULL) {
		snprintf(err, err_len, "--dpdk: one stack lcore (--workers 1) and --ip are required");
		return -1;
	}
	return 0;
}

static int dpdk_start(struct dp_backend *b, char *err, size_t err_len)
{
	assert(b->self == NULL && b->cfg.worker_count == 1);
	struct dp_dpdk_config ddc = { .eal_args = b->cfg.eal_args, .ip = b->cfg.ip, .gateway = b->cfg.gateway,
	                              .tcp_port = b->cfg.listen_port, .busy_poll = b->cfg.busy_poll,
	                              .worker = b->cfg.worker };
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
	if (b->self == NULL || max == 0)
		return 0;
	out[0] = dp_dpdk_worker_stats(b->self);
	return 1;
}

static size_t dpdk_metrics(const struct dp_backend *b, char *buf, size_t cap)
{
	return b->self ? dp_dpdk_metrics(b->self, buf, cap) : 0;
}

const struct dp_backend_ops dp_dpdk_ops = {
	.name = "dpdk", .claim = dpdk_claim, .start = dpdk_start, .stop = dpdk_stop,
	.stats = dpdk_stats, .metrics = dpdk_metrics,
};
