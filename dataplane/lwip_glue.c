/* lwip_glue.c - lwIP raw API under the connection protocol (see
 * lwip_glue.h). No DPDK here: frames arrive and leave as plain bytes.
 *
 * A TCP connection maps to one dp_conn slot (reserved at start-up, like the
 * io_uring backend) plus the lwIP PCB and a chain of received pbufs not yet
 * copied into c->in. Flow control is TCP's: tcp_recved() opens the window
 * only for bytes moved into c->in, so a client that pipelines faster than
 * we answer is slowed by its own window, not by our memory.
 *
 * Output: answers are appended to c->out by the protocol, then copied into
 * lwIP's send buffer (tcp_write COPY) as far as tcp_sndbuf allows, and sent
 * with one tcp_output per connection per loop. The rest waits for the
 * `sent` callback (ACKs free send buffer).
 *
 * Closing: a slot is closed when the client sends FIN (after its buffered
 * requests are answered), on RST/lwIP error (the PCB is gone already), on
 * Connection: close once the answer is in lwIP's buffer (tcp_close sends it
 * before the FIN), or by housekeeping timeouts. A slot whose command is at
 * the writer returns to the free list only when the answer comes back, as
 * in io_uring.c, so a late answer never reaches a reused slot.
 *
 * lwIP allocates PCBs, segments and pbufs with malloc (Debian builds it with
 * MEM_LIBC_MALLOC/MEMP_MEM_MALLOC): that is the one place the DPDK backend
 * allocates after start-up; our own tables are fixed.
 */
#include "dataplane/lwip_glue.h"
#include "common/fs_cidr.h"
#include "common/fs_clock.h"
#include "dataplane/iplimit.h"
#include "dataplane/conn.h"
#include "dataplane/response.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <time.h>

#include <lwip/init.h>
#include <lwip/etharp.h>
#include <lwip/ethip6.h>
#include <lwip/ip4_addr.h>
#include <lwip/netif.h>
#include <lwip/pbuf.h>
#include <lwip/tcp.h>
#include <lwip/timeouts.h>
#include <netif/ethernet.h>

#define HOUSEKEEP_MS 250

struct glue_conn {
	struct tcp_pcb *pcb;          /* NULL once closed or reset */
	struct pbuf *pending;         /* received, not yet in c->in */
	uint8_t peer_fin;             /* the client half-closed */
};

struct dp_lwip {
	struct dp_lwip_config cfg;
	struct netif netif;
	struct tcp_pcb *listener;
	struct dp_conn *conns;
	struct glue_conn *gc;
	uint32_t *free_list;
	uint32_t free_count;
	uint32_t *flush;              /* connections to pull/drive/write this loop */
	uint32_t flush_count;
	struct dp_proto proto;
	struct dp_stats *stats;       /* cfg.stats */
	struct dp_lwip_tcp_stats *tcp;   /* cfg.tcp */
	struct fs_jwt_key jwt;
	uint32_t timer_ms;            /* now_ms (low bits) of the last sys_check_timeouts */
	int64_t housekeep_ms;
};

/* lwIP is a process-wide singleton (globals), so is the stack on top. */
static struct dp_lwip *the_stack;
static int lwip_initialised;

static inline void bump(_Atomic uint64_t *v, uint64_t n) { atomic_fetch_add_explicit(v, n, memory_order_relaxed); }
static inline void drop(_Atomic uint64_t *v, uint64_t n) { atomic_fetch_sub_explicit(v, n, memory_order_relaxed); }

/* ------------------------------------------------------------ link layer */

static err_t link_output(struct netif *netif, struct pbuf *p)
{
	struct dp_lwip *g = netif->state;
	uint8_t *buf = g->cfg.tx_buf(g->cfg.tx_ctx, p->tot_len);
	if (buf == NULL) {
		bump(&g->tcp->tx_drop_nobuf, 1);
		return ERR_OK;   /* dropped like a full NIC queue: TCP retransmits */
	}
	u16_t n = pbuf_copy_partial(p, buf, p->tot_len, 0);
	assert(n == p->tot_len);
	(void)n;
	bump(&g->tcp->tx_frames, 1);
	bump(&g->tcp->tx_bytes, p->tot_len);
	return ERR_OK;
}

static err_t netif_setup(struct netif *n)
{
	struct dp_lwip *g = n->state;
	n->name[0] = 'd';
	n->name[1] = 'p';
	n->output = etharp_output;
	n->output_ip6 = ethip6_output;
	n->linkoutput = link_output;
	n->mtu = g->cfg.mtu;
	n->hwaddr_len = 6;
	memcpy(n->hwaddr, g->cfg.mac, 6);
	n->flags = NETIF_FLAG_BROADCAST | NETIF_FLAG_ETHARP | NETIF_FLAG_ETHERNET;
	return ERR_OK;
}

void dp_lwip_input(struct dp_lwip *g, const void *frame, uint32_t len)
{
	assert(g == the_stack);
	bump(&g->tcp->rx_frames, 1);
	bump(&g->tcp->rx_bytes, len);
	if (len == 0 || len > 0xffff)
		{ bump(&g->tcp->rx_drop_nomem, 1); return; }
	struct pbuf *p = pbuf_alloc(PBUF_RAW, (u16_t)len, PBUF_RAM);
	if (p == NULL)
		{ bump(&g->tcp->rx_drop_nomem, 1); return; }
	pbuf_take(p, frame, (u16_t)len);
	if (g->netif.input(p, &g->netif) != ERR_OK)
		pbuf_free(p);
}

/* ------------------------------------------------------------ connections */

static void mark_flush(struct dp_lwip *g, struct dp_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = 1;
	assert(g->flush_count < g->cfg.worker.conn_max);
	g->flush[g->flush_count++] = c->idx;
}

static void release_if_idle(struct dp_lwip *g, struct dp_conn *c)
{
	if (c->active || c->ops_inflight != 0 || c->dirty)
		return;
	assert(g->gc[c->idx].pcb == NULL && g->gc[c->idx].pending == NULL);
	c->gen++;
	assert(g->free_count < g->cfg.worker.conn_max);
	g->free_list[g->free_count++] = c->idx;
}

static void detach(struct tcp_pcb *pcb)
{
	tcp_arg(pcb, NULL);
	tcp_recv(pcb, NULL);   /* lwIP's tcp_recv_null acknowledges and drops */
	tcp_sent(pcb, NULL);
	tcp_err(pcb, NULL);
}

/* Ends the connection: graceful close (queued output, then FIN) unless
 * `abort`, which sends RST. Returns ERR_ABRT when the PCB was aborted (a
 * callback of that PCB must then return ERR_ABRT to lwIP). */
static err_t conn_close(struct dp_lwip *g, struct dp_conn *c, int abort)
{
	if (!c->active)
		return ERR_OK;
	struct glue_conn *x = &g->gc[c->idx];
	err_t rc = ERR_OK;
	c->active = 0;
	if (c->ip_counted)
		dp_iplimit_release(g->cfg.worker.iplimit, c->auth.peer_ip);
	c->ip_counted = 0;
	if (x->pcb != NULL) {
		/* Acknowledge what we will never read, or tcp_close turns into RST
		 * and may destroy the last answer on its way out. */
		if (x->pending != NULL)
			tcp_recved(x->pcb, x->pending->tot_len);
		detach(x->pcb);
		if (abort || tcp_close(x->pcb) != ERR_OK) {
			tcp_abort(x->pcb);
			bump(&g->tcp->pcbs_aborted, 1);
			rc = ERR_ABRT;
		}
		x->pcb = NULL;
		drop(&g->tcp->pcbs_live, 1);
	}
	if (x->pending != NULL) {
		pbuf_free(x->pending);
		x->pending = NULL;
	}
	if (c->waiting)
		c->ops_inflight++;   /* the writer's answer still counts against the port */
	drop(&g->stats->conns_open, 1);
	release_if_idle(g, c);
	return rc;
}

/* Moves received bytes into c->in as far as it has room; opens the TCP
 * window by exactly that much. Returns the bytes moved. */
static uint32_t pull(struct dp_lwip *g, struct dp_conn *c)
{
	struct glue_conn *x = &g->gc[c->idx];
	uint32_t moved = 0;
	while (x->pending != NULL && c->in_len < DP_IN_BYTES) {
		uint32_t room = DP_IN_BYTES - c->in_len;
		uint32_t want = x->pending->tot_len < room ? x->pending->tot_len : room;
		u16_t n = pbuf_copy_partial(x->pending, c->in + c->in_len, (u16_t)want, 0);
		assert(n == want);
		if (n == 0)
			break;
		c->in_len += n;
		moved += n;
		x->pending = pbuf_free_header(x->pending, n);
	}
	if (moved == 0)
		return 0;
	assert(moved <= DP_IN_BYTES && x->pcb != NULL);
	tcp_recved(x->pcb, (u16_t)moved);
	bump(&g->stats->bytes_in, moved);
	c->last_ms = g->proto.route.now_ms;
	return moved;
}

/* Copies c->out into lwIP's send buffer as far as it has room. Returns 1
 * when anything was queued (the caller sends with tcp_output). */
static int push_out(struct dp_lwip *g, struct dp_conn *c)
{
	struct tcp_pcb *pcb = g->gc[c->idx].pcb;
	assert(pcb != NULL && c->out_sent <= c->out_len);
	uint32_t left = c->out_len - c->out_sent;
	if (left == 0)
		return 0;
	uint32_t room = tcp_sndbuf(pcb);
	uint32_t n = left < room ? left : room;
	if (n == 0 || tcp_sndqueuelen(pcb) >= TCP_SND_QUEUELEN)
		{ bump(&g->tcp->write_blocked, 1); return 0; }
	err_t e = tcp_write(pcb, c->out + c->out_sent, (u16_t)n, TCP_WRITE_FLAG_COPY);
	if (e == ERR_MEM)
		{ bump(&g->tcp->write_blocked, 1); return 0; }
	if (e != ERR_OK)
		{ conn_close(g, c, 1); return 0; }
	c->out_sent += n;
	bump(&g->stats->bytes_out, n);
	c->last_ms = g->proto.route.now_ms;
	if (c->out_sent == c->out_len)
		c->out_len = c->out_sent = 0;
	return 1;
}

/* Input -> protocol -> output until nothing moves (bounded), then one
 * tcp_output, then the close when one is due. */
static void service(struct dp_lwip *g, struct dp_conn *c)
{
	int queued = 0;
	for (int round = 0; round < 8; round++) {
		uint32_t moved = pull(g, c);
		dp_conn_drive(&g->proto, c);
		int q = push_out(g, c);
		if (!c->active)
			return;
		queued |= q;
		if (moved == 0 && q == 0)
			break;
	}
	struct glue_conn *x = &g->gc[c->idx];
	if (queued)
		tcp_output(x->pcb);
	if (c->out_len == 0 && !c->waiting && (c->closing || x->peer_fin))
		conn_close(g, c, 0);
}

static err_t on_recv(void *arg, struct tcp_pcb *pcb, struct pbuf *p, err_t err)
{
	struct dp_lwip *g = the_stack;
	struct dp_conn *c = arg;
	if (c == NULL) {   /* cannot happen: detach() clears the callback */
		if (p != NULL) {
			tcp_recved(pcb, p->tot_len);
			pbuf_free(p);
		}
		return ERR_OK;
	}
	struct glue_conn *x = &g->gc[c->idx];
	assert(c->active && x->pcb == pcb);
	if (p == NULL) {   /* FIN: answer what is buffered, then close */
		x->peer_fin = 1;
		mark_flush(g, c);
		return ERR_OK;
	}
	if (err != ERR_OK) {
		pbuf_free(p);
		return ERR_OK;
	}
	if (x->pending == NULL)
		x->pending = p;
	else
		pbuf_cat(x->pending, p);
	mark_flush(g, c);
	return ERR_OK;
}

static err_t on_sent(void *arg, struct tcp_pcb *pcb, u16_t len)
{
	struct dp_conn *c = arg;
	if (c != NULL && c->active) {
		c->last_ms = the_stack->proto.route.now_ms;
		if (c->out_len != 0 || the_stack->gc[c->idx].pending != NULL)
			mark_flush(the_stack, c);
	}
	return ERR_OK;
}

/* The PCB is already freed by lwIP (RST received, retransmissions gave up). */
static void on_err(void *arg, err_t err)
{
	struct dp_lwip *g = the_stack;
	struct dp_conn *c = arg;
	if (c == NULL || !c->active)
		return;
	struct glue_conn *x = &g->gc[c->idx];
	x->pcb = NULL;
	drop(&g->tcp->pcbs_live, 1);
	bump(&g->tcp->pcbs_reset, 1);
	conn_close(g, c, 1);
}

static err_t refuse(struct dp_lwip *g, struct tcp_pcb *pcb, const char *why)
{
	char buf[256];
	int n = dp_resp_error(buf, sizeof buf, 503, "overloaded", why, 0);
	bump(&g->stats->conns_refused, 1);
	detach(pcb);
	if (n > 0 && tcp_write(pcb, buf, (u16_t)n, TCP_WRITE_FLAG_COPY) == ERR_OK && tcp_close(pcb) == ERR_OK)
		return ERR_OK;
	tcp_abort(pcb);
	return ERR_ABRT;
}

static err_t on_accept(void *arg, struct tcp_pcb *pcb, err_t err)
{
	struct dp_lwip *g = arg;
	if (err != ERR_OK || pcb == NULL)
		return ERR_VAL;
	if (g->free_count == 0)
		return refuse(g, pcb, "connection limit reached");
	/* the client's address, as the io_uring backend's getpeername gives it:
	 * IP rules, --ip-rate, risk by IP and the per-IP connection cap see it */
	const struct dp_worker_config *wc = &g->cfg.worker;
	uint32_t peer_ip = IP_IS_V4(&pcb->remote_ip) ? lwip_ntohl(ip_2_ip4(&pcb->remote_ip)->addr) : 0;
	int ip_counted = 0;
	if (wc->iplimit != NULL && peer_ip != 0 && !fs_cidr_match_any(wc->trusted, wc->trusted_count, peer_ip)) {
		if (dp_iplimit_acquire(wc->iplimit, peer_ip) != 0) {
			bump(&g->stats->conns_ip_refused, 1);
			return refuse(g, pcb, "connection limit per address reached");
		}
		ip_counted = 1;
	}
	struct dp_conn *c = &g->conns[g->free_list[--g->free_count]];
	assert(!c->active && c->ops_inflight == 0 && !c->dirty);
	uint32_t idx = c->idx, gen = c->gen;
	memset(c, 0, offsetof(struct dp_conn, in));
	c->idx = idx;
	c->gen = gen;
	c->fd = -1;
	c->active = 1;
	c->auth.peer_ip = peer_ip;
	c->ip_counted = (uint8_t)ip_counted;
	c->last_ms = g->proto.route.now_ms;
	struct glue_conn *x = &g->gc[idx];
	assert(x->pcb == NULL && x->pending == NULL);
	x->pcb = pcb;
	x->peer_fin = 0;
	tcp_arg(pcb, c);
	tcp_recv(pcb, on_recv);
	tcp_sent(pcb, on_sent);
	tcp_err(pcb, on_err);
	tcp_nagle_disable(pcb);
	bump(&g->stats->conns_accepted, 1);
	bump(&g->stats->conns_open, 1);
	bump(&g->tcp->pcbs_accepted, 1);
	bump(&g->tcp->pcbs_live, 1);
	return ERR_OK;
}

/* ------------------------------------------------------------ the loop */

static void answered_cb(void *ctx, struct dp_conn *c) { mark_flush(ctx, c); }
static void orphan_cb(void *ctx, struct dp_conn *c) { release_if_idle(ctx, c); }

static uint32_t drain_answers(struct dp_lwip *g)
{
	return dp_conn_drain(&g->proto, g->cfg.worker.wport, 0, g->conns, g->cfg.worker.conn_max,
	                     answered_cb, orphan_cb, g);
}

static uint32_t flush_all(struct dp_lwip *g)
{
	uint32_t n = g->flush_count;
	/* service() may mark more connections (it never marks others today,
	 * but the bound is the array, not this loop's start). */
	for (uint32_t i = 0; i < g->flush_count; i++) {
		struct dp_conn *c = &g->conns[g->flush[i]];
		c->dirty = 0;
		if (c->active)
			service(g, c);
		else
			release_if_idle(g, c);
	}
	g->flush_count = 0;
	return n;
}

/* Closes idle keep-alive connections and answers 408 to slow requests. */
static void housekeep(struct dp_lwip *g)
{
	int64_t now = g->proto.route.now_ms;
	const struct dp_worker_config *cfg = &g->cfg.worker;
	for (uint32_t i = 0; i < cfg->conn_max; i++) {
		struct dp_conn *c = &g->conns[i];
		if (!c->active || c->waiting)
			continue;
		if (c->out_len != 0) {   /* a client that stopped reading: the send deadline */
			if (now - c->last_ms > cfg->send_timeout_ms) {
				bump(&g->stats->conns_slow_readers, 1);
				conn_close(g, c, 1);
			}
		} else if (c->request_start_ms && now - c->request_start_ms > cfg->request_timeout_ms) {
			dp_conn_timeout(&g->proto, c);
			bump(&g->stats->conns_timed_out, 1);
			mark_flush(g, c);
		} else if (c->in_len == 0 && now - c->last_ms > cfg->idle_timeout_ms) {
			bump(&g->stats->conns_timed_out, 1);
			conn_close(g, c, 0);
		}
	}
}

uint32_t dp_lwip_poll(struct dp_lwip *g, int64_t now_ms)
{
	assert(g == the_stack);
	struct fs_port *port = g->cfg.worker.wport;
	g->proto.route.now_ms = now_ms;
	g->proto.now_us = fs_mono_us();
	g->proto.mono_ms = now_ms;   /* this backend's deadlines run on the TSC clock dpdk.c gives */
	g->proto.route.ready = atomic_load_explicit(g->cfg.worker.ready, memory_order_relaxed);
	if ((uint32_t)now_ms != g->timer_ms) {   /* lwIP's timers: once per millisecond */
		g->timer_ms = (uint32_t)now_ms;
		sys_check_timeouts();
	}
	uint32_t work = drain_answers(g);
	work += flush_all(g);
	if (g->proto.cmds_pushed) {
		fs_wake(port->writer);   /* one kick per loop, only if it sleeps */
		g->proto.cmds_pushed = 0;
	}
	if (g->proto.route.now_ms - g->housekeep_ms >= HOUSEKEEP_MS) {
		g->housekeep_ms = g->proto.route.now_ms;
		housekeep(g);
		flush_all(g);
	}
	return work;
}

/* ------------------------------------------------------------ life cycle */

/* Frees what dp_lwip_open reserved before it failed (found by cppcheck:
 * every failure path leaked the slot table and the struct). */
static void open_undo(struct dp_lwip *g, int jwt_ready)
{
	if (g->conns != NULL && g->conns != MAP_FAILED)
		munmap(g->conns, dp_conn_bytes(g->cfg.worker.conn_max));
	free(g->gc);
	free(g->free_list);
	free(g->flush);
	free(g->proto.route.sku_cache);
	free(g->proto.route.tok_cache);
	if (jwt_ready)
		fs_jwt_key_free(&g->jwt);
	free(g);
}

struct dp_lwip *dp_lwip_open(const struct dp_lwip_config *cfg, char *err, size_t err_len)
{
	const struct dp_worker_config *wc = &cfg->worker;
	assert(wc->conn_max > 0 && wc->wport != NULL && wc->snap != NULL && cfg->tx_buf != NULL);
	assert(cfg->stats != NULL && cfg->tcp != NULL);
	if (the_stack != NULL) {
		snprintf(err, err_len, "the lwIP stack is a process-wide singleton: one DPDK dataplane per process");
		return NULL;
	}
	struct dp_lwip *g = calloc(1, sizeof *g);
	if (g == NULL) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	g->cfg = *cfg;
	g->stats = cfg->stats;
	g->tcp = cfg->tcp;
	atomic_store(&g->stats->conns_open, 0);
	atomic_store(&g->tcp->pcbs_live, 0);
	g->conns = mmap(NULL, dp_conn_bytes(wc->conn_max), PROT_READ | PROT_WRITE,
	                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	g->gc = calloc(wc->conn_max, sizeof *g->gc);
	g->free_list = calloc(wc->conn_max, sizeof(uint32_t));
	g->flush = calloc(wc->conn_max, sizeof(uint32_t));
	if (g->conns == MAP_FAILED || g->gc == NULL || g->free_list == NULL || g->flush == NULL) {
		snprintf(err, err_len, "cannot reserve %u connections: out of memory", wc->conn_max);
		open_undo(g, 0);
		return NULL;
	}
	for (uint32_t i = 0; i < wc->conn_max; i++) {
		g->conns[i].idx = i;
		g->conns[i].gen = cfg->gen_base;
		g->conns[i].fd = -1;
		g->free_list[i] = wc->conn_max - 1 - i;
	}
	g->free_count = wc->conn_max;
	g->proto.cfg = &g->cfg.worker;
	g->proto.stats = cfg->stats;
	g->proto.route.snap = wc->snap;
	g->proto.route.quantity_max = wc->quantity_max;
	g->proto.route.shards = wc->shards;
	g->proto.route.appliance = wc->appliance;
	g->proto.route.trusted = wc->trusted;            /* X-Forwarded-For from them is believed */
	g->proto.route.trusted_count = wc->trusted_count;
	g->proto.route.now_ms = fs_wall_ms();
	/* the lane's own answer and token caches, as an io_uring worker's (NULL: none) */
	g->proto.route.sku_cache = calloc(1, sizeof *g->proto.route.sku_cache);
	g->proto.route.tok_cache = calloc(1, sizeof *g->proto.route.tok_cache);
	if (fs_jwt_key_init(&g->jwt, wc->jwt_key, wc->jwt_key_len) != 0) {
		snprintf(err, err_len, "OpenSSL cannot provide HMAC-SHA256");
		open_undo(g, 0);
		return NULL;
	}
	g->proto.route.jwt = &g->jwt;

	if (!lwip_initialised) {
		unsigned seed;
		if (getrandom(&seed, sizeof seed, 0) != sizeof seed)
			seed = (unsigned)time(NULL);
		srand(seed);   /* LWIP_RAND() is rand(): local ports and more */
		lwip_init();   /* never tcpip_init(): this thread is the stack */
		lwip_initialised = 1;
	}
	the_stack = g;
	ip4_addr_t ip, mask, gw;
	ip.addr = cfg->ip_be;
	mask.addr = cfg->netmask_be;
	gw.addr = cfg->gateway_be;
	if (netif_add(&g->netif, &ip, &mask, &gw, g, netif_setup, ethernet_input) == NULL) {
		snprintf(err, err_len, "lwIP refused the interface");
		the_stack = NULL;
		open_undo(g, 1);
		return NULL;
	}
	netif_set_default(&g->netif);
	netif_set_up(&g->netif);
	netif_set_link_up(&g->netif);   /* announces the address (gratuitous ARP) */

	struct tcp_pcb *pcb = tcp_new_ip_type(IPADDR_TYPE_V4);
	err_t e = pcb ? tcp_bind(pcb, IP4_ADDR_ANY, cfg->port) : ERR_MEM;
	if (e != ERR_OK) {
		snprintf(err, err_len, "lwIP cannot bind TCP port %u (error %d)", cfg->port, (int)e);
		if (pcb)
			tcp_close(pcb);
		netif_remove(&g->netif);
		the_stack = NULL;
		open_undo(g, 1);
		return NULL;
	}
	g->listener = tcp_listen(pcb);
	if (g->listener == NULL) {
		snprintf(err, err_len, "lwIP cannot listen on TCP port %u: out of memory", cfg->port);
		netif_remove(&g->netif);
		the_stack = NULL;
		open_undo(g, 1);
		return NULL;
	}
	tcp_arg(g->listener, g);
	tcp_accept(g->listener, on_accept);
	g->timer_ms = (uint32_t)g->proto.route.now_ms;
	g->housekeep_ms = g->proto.route.now_ms;
	return g;
}

void dp_lwip_close(struct dp_lwip *g)
{
	if (g == NULL)
		return;
	assert(g == the_stack);
	for (uint32_t i = 0; i < g->cfg.worker.conn_max; i++)
		if (g->conns[i].active)
			conn_close(g, &g->conns[i], 1);
	if (g->listener != NULL)
		tcp_close(g->listener);
	netif_set_down(&g->netif);
	netif_remove(&g->netif);
	fs_jwt_key_free(&g->jwt);
	free(g->proto.route.sku_cache);
	free(g->proto.route.tok_cache);
	g->proto.route.sku_cache = NULL;
	g->proto.route.tok_cache = NULL;
	the_stack = NULL;
	/* The slots stay mapped: the admin thread may still read the stats. */
}

const struct dp_stats *dp_lwip_stats(const struct dp_lwip *g) { return g->stats; }
const struct dp_lwip_tcp_stats *dp_lwip_tcp_stats(const struct dp_lwip *g) { return g->tcp; }
