/* io_uring.c - the default I/O backend: one io_uring per worker thread.
 *
 * Per loop: reap completions (multishot accept, receives, sends, the
 * eventfd the writer kicks, a 1 s housekeeping timeout), drain the answer
 * ring, queue sends for connections with output, then ONE submit -- which
 * also blocks when there is nothing to do (no spinning when idle).
 * Connection slots are reserved at start-up; a slot is reused only when no
 * operation on it is in flight, and every completion carries the slot's
 * generation so a late completion never touches a reused slot's buffers.
 *
 * Connection lifetime (no client can keep a slot without making progress):
 * a request must arrive whole within request_timeout_ms (408), output must
 * drain within send_timeout_ms (else the connection is closed and counted
 * as a slow reader), an idle keep-alive connection goes after
 * idle_timeout_ms, and an error answered before the request was read whole
 * ends in a lingering close (write side shut, input discarded for at most
 * DP_LINGER_MS / DP_LINGER_BYTES). Every deadline is on CLOCK_MONOTONIC.
 * An accept that fails for want of descriptors pauses accepting for
 * DP_ACCEPT_BACKOFF_MS instead of re-arming at once (which would spin).
 *
 * A full submission queue never aborts: sqe_get submits to make room, and
 * when the kernel takes nothing (its completion queue overflowed: it
 * refuses submissions until completions are reaped) the operation is not
 * armed now but retried next loop, after the reap -- a receive or send
 * through the flush list, accept/eventfd/timer through their armed flags.
 * Completions are consumed one by one as they are handled, so the kernel
 * can move overflowed completions into the queue while a reap is long.
 *
 * Receives (--recv): multishot by default where the kernel takes it -- one
 * receive per connection stays armed and fills buffers of a ring provided
 * at start-up (DP_RBUF_COUNT x DP_RBUF_BYTES, printed), instead of a poll
 * armed per request. Each buffer's bytes are copied into the connection's
 * `in` and the buffer goes back to the ring in the same reap. Back-pressure:
 * when `in` has less than a buffer's room (or the connection closes), the
 * multishot is cancelled; bytes the kernel had already delivered beyond
 * `in` stay parked in their buffers (a chain per connection, fed into `in`
 * first as it frees) -- parking is bounded by the ring, and while half of
 * it is parked, receives are one-shot into `in` (needing no ring buffer),
 * so no client can starve the others by holding buffers. A receive that
 * found the ring empty (ENOBUFS ends a multishot) is re-armed one-shot once,
 * never in a loop. The top DP_RBUF_BYTES of `in` are always filled by
 * one-shot receives of the exact room, so the 431 of an overlong request
 * stays what it was. A kernel that refuses the buffer ring at start-up, or
 * the multishot receive at its first use (EINVAL), leaves the worker on
 * one-shot receives.
 */
#include "dataplane/conn.h"
#include "common/fs_clock.h"
#include "dataplane/backend.h"
#include "dataplane/response.h"
#include "common/fs_fault.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING_ENTRIES 4096
#define HOUSEKEEP_MS 250
/* The provided-buffer ring of multishot receives, per worker: fixed at
 * start-up, prefaulted. A buffer is held only between a completion and the
 * copy into `in` in the same reap, unless parked (see the top). */
#define DP_RBUF_COUNT 1024u
#define DP_RBUF_BYTES 4096u
#define DP_RBUF_GROUP 0
_Static_assert((DP_RBUF_COUNT & (DP_RBUF_COUNT - 1)) == 0 && DP_RBUF_COUNT <= 32768, "ring size: power of two, 16-bit ids");
_Static_assert(DP_RBUF_BYTES <= DP_IN_BYTES && DP_RBUF_BYTES <= UINT16_MAX, "a buffer fits `in` and a u16 length");

enum { OP_ACCEPT = 1, OP_RECV, OP_SEND, OP_EVENT, OP_TIMER, OP_CANCEL, OP_RECVM };

struct dp_worker {
	struct dp_worker_config cfg;
	struct io_uring ring;
	int listen_fd;
	struct dp_conn *conns;
	uint32_t *free_list;
	uint32_t free_count;
	uint32_t *flush;              /* connections with output to send */
	uint32_t flush_count;
	struct dp_proto proto;
	struct dp_stats stats;
	struct fs_jwt_key jwt;
	uint64_t event_buf;
	struct __kernel_timespec tick;
	pthread_t thread;
	_Atomic int stop;
	int accept_armed;
	int event_armed, timer_armed;
	int ring_disabled;            /* created R_DISABLED: the worker enables it */
	int64_t accept_resume_ms;     /* monotonic: no accept before this (EMFILE back-off) */
	int recv_multishot;           /* multishot receives into the buffer ring (else one-shot) */
	struct io_uring_buf_ring *br; /* the provided-buffer ring (NULL: one-shot only) */
	char *rbuf;                   /* DP_RBUF_COUNT x DP_RBUF_BYTES */
	uint16_t *rbuf_next;          /* parked chains: the next buffer of a connection's chain */
	uint16_t *rbuf_len;           /* parked buffers: the bytes the kernel put there */
	uint32_t rbuf_parked;         /* buffers parked now, all connections */
};

static inline uint64_t ud_make(int op, uint32_t idx, uint32_t gen)
{
	return (uint64_t)op << 56 | (uint64_t)(gen & 0xffffff) << 32 | idx;
}

/* A free submission entry; when the queue is full, submits what it holds
 * first. NULL when the kernel took nothing (completion queue overflowed, or
 * out of memory): the caller arms the operation again next loop. */
static struct io_uring_sqe *sqe_get(struct dp_worker *w)
{
#ifdef FS_FAULTS
	uint32_t starve = atomic_load_explicit(&fs_fault_dp_sq_full, memory_order_relaxed);
	if (starve > 0 && atomic_compare_exchange_strong(&fs_fault_dp_sq_full, &starve, starve - 1)) {
		atomic_fetch_add_explicit(&w->stats.sq_full, 1, memory_order_relaxed);
		return NULL;   /* test fault: as if the kernel refused the submission */
	}
#endif
	struct io_uring_sqe *sqe = io_uring_get_sqe(&w->ring);
	if (sqe == NULL) {
		io_uring_submit(&w->ring);
		sqe = io_uring_get_sqe(&w->ring);
	}
	if (sqe == NULL)
		atomic_fetch_add_explicit(&w->stats.sq_full, 1, memory_order_relaxed);
	return sqe;
}

static void arm_accept(struct dp_worker *w)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	if (sqe == NULL)
		return;   /* accept_armed stays 0: the loop arms it again */
	io_uring_prep_multishot_accept(sqe, w->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	io_uring_sqe_set_data64(sqe, ud_make(OP_ACCEPT, 0, 0));
	w->accept_armed = 1;
}

static void arm_event(struct dp_worker *w)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	w->event_armed = sqe != NULL;
	if (sqe == NULL)
		return;
	io_uring_prep_read(sqe, w->cfg.wport->producer.fd, &w->event_buf, sizeof w->event_buf, 0);
	io_uring_sqe_set_data64(sqe, ud_make(OP_EVENT, 0, 0));
}

static void arm_timer(struct dp_worker *w)
{
	struct io_uring_sqe *sqe = sqe_get(w);
	w->timer_armed = sqe != NULL;
	if (sqe == NULL)
		return;
	w->tick.tv_sec = 0;
	w->tick.tv_nsec = HOUSEKEEP_MS * 1000000LL;
	io_uring_prep_timeout(sqe, &w->tick, 0, 0);
	io_uring_sqe_set_data64(sqe, ud_make(OP_TIMER, 0, 0));
}

static void mark_flush(struct dp_worker *w, struct dp_conn *c);

/* Gives a provided buffer back to the kernel's ring. */
static void rbuf_return(struct dp_worker *w, uint16_t bid)
{
	assert(w->br != NULL && bid < DP_RBUF_COUNT);
	io_uring_buf_ring_add(w->br, w->rbuf + (size_t)bid * DP_RBUF_BYTES, DP_RBUF_BYTES, bid,
	                      io_uring_buf_ring_mask(DP_RBUF_COUNT), 0);
	io_uring_buf_ring_advance(w->br, 1);
}

/* Parks buffer bid (len_bytes delivered, the first off_bytes already in
 * `in`) at the end of the connection's chain. */
static void held_park(struct dp_worker *w, struct dp_conn *c, uint16_t bid, uint32_t len_bytes, uint32_t off_bytes)
{
	assert(off_bytes < len_bytes && len_bytes <= DP_RBUF_BYTES);
	assert(c->held_count < DP_RBUF_COUNT && w->rbuf_parked < DP_RBUF_COUNT);
	w->rbuf_len[bid] = (uint16_t)len_bytes;
	if (c->held_count == 0) {
		c->held_head = bid;
		c->held_off = off_bytes;
	} else {
		assert(off_bytes == 0);   /* bytes arrive in order: nothing jumps the chain */
		w->rbuf_next[c->held_tail] = bid;
	}
	c->held_tail = bid;
	c->held_count++;
	w->rbuf_parked++;
	atomic_fetch_add_explicit(&w->stats.recv_parked, 1, memory_order_relaxed);
}

/* Drops the head of the chain (its bytes are in `in` or discarded). */
static void held_pop(struct dp_worker *w, struct dp_conn *c)
{
	assert(c->held_count > 0 && w->rbuf_parked > 0);
	uint16_t bid = c->held_head;
	c->held_head = w->rbuf_next[bid];
	c->held_count--;
	c->held_off = 0;
	w->rbuf_parked--;
	rbuf_return(w, bid);
}

/* Discards every parked byte (the connection closes or lingers). */
static void held_release(struct dp_worker *w, struct dp_conn *c)
{
	while (c->held_count > 0)
		held_pop(w, c);
	assert(c->held_count == 0);
}

/* Moves parked bytes into `in` as it frees, parsing as it goes, before any
 * new byte is received (order kept). */
static void held_feed(struct dp_worker *w, struct dp_conn *c)
{
	assert(c->active && !c->draining);
	while (c->held_count > 0 && c->in_len < DP_IN_BYTES && !c->closing) {
		uint16_t bid = c->held_head;
		assert(c->held_off < w->rbuf_len[bid]);
		uint32_t n = w->rbuf_len[bid] - c->held_off;
		if (n > DP_IN_BYTES - c->in_len)
			n = DP_IN_BYTES - c->in_len;
		memcpy(c->in + c->in_len, w->rbuf + (size_t)bid * DP_RBUF_BYTES + c->held_off, n);
		c->in_len += n;
		c->held_off += n;
		if (c->held_off == w->rbuf_len[bid])
			held_pop(w, c);
		dp_conn_drive(&w->proto, c);
	}
	if (c->out_len)
		mark_flush(w, c);
}

/* 1 when the next receive may be multishot: the worker has the ring, at
 * least one whole buffer fits in `in`, the ring is not half parked, and
 * this connection did not just find it empty. */
static int recv_multishot_ok(const struct dp_worker *w, const struct dp_conn *c)
{
	return w->recv_multishot && !c->recv_skip_multi && DP_IN_BYTES - c->in_len >= DP_RBUF_BYTES &&
	       w->rbuf_parked < DP_RBUF_COUNT / 2;
}

/* Asks the kernel to end the connection's multishot receive (its last
 * completion comes without IORING_CQE_F_MORE). */
static void recv_stop(struct dp_worker *w, struct dp_conn *c)
{
	assert(c->recv_armed && c->recv_multi);
	if (c->recv_cancel)
		return;
	struct io_uring_sqe *sqe = sqe_get(w);
	if (sqe == NULL) {
		mark_flush(w, c);   /* flush_all asks again */
		return;
	}
	io_uring_prep_cancel64(sqe, ud_make(OP_RECVM, c->idx, c->gen), 0);
	io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, 0, 0));
	c->recv_cancel = 1;
}

static void arm_recv_oneshot(struct dp_worker *w, struct dp_conn *c, struct io_uring_sqe *sqe)
{
	assert(c->in_len < DP_IN_BYTES);
	io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, DP_IN_BYTES - c->in_len, 0);
	io_uring_sqe_set_data64(sqe, ud_make(OP_RECV, c->idx, c->gen));
	c->recv_off = c->in_len;
	c->recv_multi = 0;
	c->recv_skip_multi = 0;
}

static void arm_recv_multishot(struct dp_worker *w, struct dp_conn *c, struct io_uring_sqe *sqe)
{
	assert(w->br != NULL && c->held_count == 0);
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = DP_RBUF_GROUP;
	io_uring_sqe_set_data64(sqe, ud_make(OP_RECVM, c->idx, c->gen));
	c->recv_off = c->in_len;
	c->recv_multi = 1;
	c->recv_cancel = 0;
}

/* Keeps the connection's receive as its state asks: parked bytes first,
 * then a receive armed while `in` has room and the connection reads on
 * (a multishot one is cancelled once it has not a buffer's room any more). */
static void arm_recv(struct dp_worker *w, struct dp_conn *c)
{
	if (c->held_count > 0 && c->active && !c->draining)
		held_feed(w, c);
	int stopped = (c->closing && !c->draining) || c->held_count > 0;
	if (c->recv_armed) {
		if (c->recv_multi && (stopped || DP_IN_BYTES - c->in_len < DP_RBUF_BYTES))
			recv_stop(w, c);
		return;
	}
	if (stopped || c->in_len == DP_IN_BYTES)
		return;
	struct io_uring_sqe *sqe = sqe_get(w);
	if (sqe == NULL) {
		mark_flush(w, c);   /* flush_all arms it again */
		return;
	}
	if (recv_multishot_ok(w, c))
		arm_recv_multishot(w, c, sqe);
	else
		arm_recv_oneshot(w, c, sqe);
	c->recv_armed = 1;
	c->ops_inflight++;
}

static void mark_flush(struct dp_worker *w, struct dp_conn *c)
{
	if (c->dirty)
		return;
	c->dirty = 1;
	assert(w->flush_count < 2 * w->cfg.conn_max);   /* flush_all: a pass may re-add each once */
	w->flush[w->flush_count++] = c->idx;
}

static void conn_release_if_idle(struct dp_worker *w, struct dp_conn *c)
{
	if (c->active || c->ops_inflight != 0 || c->fd >= 0)
		return;
	c->gen++;
	assert(w->free_count < w->cfg.conn_max);
	w->free_list[w->free_count++] = c->idx;
}

/* Closes the socket; the slot returns to the free list once nothing of it
 * is in flight (shutdown makes a pending receive complete). */
static void conn_close(struct dp_worker *w, struct dp_conn *c)
{
	if (!c->active)
		return;
	c->active = 0;
	if (c->ip_counted)
		dp_iplimit_release(w->cfg.iplimit, c->auth.peer_ip);
	c->ip_counted = 0;
	held_release(w, c);
	shutdown(c->fd, SHUT_RDWR);   /* also ends a multishot receive (its last completion: 0) */
	close(c->fd);
	c->fd = -1;
	if (c->waiting)
		c->ops_inflight++;   /* the writer's answer still counts against the port */
	atomic_fetch_sub_explicit(&w->stats.conns_open, 1, memory_order_relaxed);
	conn_release_if_idle(w, c);
}

/* The answer to an error is out: shut the write side (the client reads
 * EOF after it) and discard what the client still sends, so closing does
 * not reset the connection before the client read the answer. Bounded by
 * DP_LINGER_MS (housekeep) and DP_LINGER_BYTES (on_recv). */
static void linger_start(struct dp_worker *w, struct dp_conn *c)
{
	assert(c->active && c->closing && !c->draining);
	shutdown(c->fd, SHUT_WR);
	c->draining = 1;
	c->drain_start_ms = w->proto.mono_ms;
	c->drained_bytes = 0;
	c->in_len = 0;
	held_release(w, c);
	atomic_fetch_add_explicit(&w->stats.conns_lingered, 1, memory_order_relaxed);
	arm_recv(w, c);
}

static void send_pending(struct dp_worker *w, struct dp_conn *c)
{
	if (!c->active || c->send_armed)
		return;
	if (c->out_sent == c->out_len) {
		c->out_len = c->out_sent = 0;
		c->out_since_ms = 0;
		if (c->closing && !c->waiting && !c->draining)
			c->linger ? linger_start(w, c) : conn_close(w, c);
		return;
	}
	if (c->out_since_ms == 0)
		c->out_since_ms = w->proto.mono_ms;   /* the send deadline starts */
	struct io_uring_sqe *sqe = sqe_get(w);
	if (sqe == NULL) {
		mark_flush(w, c);   /* sent next loop */
		return;
	}
	io_uring_prep_send(sqe, c->fd, c->out + c->out_sent, c->out_len - c->out_sent, MSG_NOSIGNAL);
	io_uring_sqe_set_data64(sqe, ud_make(OP_SEND, c->idx, c->gen));
	c->send_armed = 1;
	c->ops_inflight++;
}

static void refuse_connection(struct dp_worker *w, int fd, const char *why)
{
	char buf[256];
	int n = dp_resp_error(buf, sizeof buf, 503, "overloaded", why, 0);
	ssize_t r = send(fd, buf, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	(void)r;
	close(fd);
	atomic_fetch_add_explicit(&w->stats.conns_refused, 1, memory_order_relaxed);
}

static void on_accept(struct dp_worker *w, struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		w->accept_armed = 0;
	if (cqe->res < 0) {
		if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOBUFS || cqe->res == -ENOMEM) {
			/* Out of descriptors or memory: re-arming now would fail again at
			 * once (a spin). Pause; connections wait in the listen backlog. */
			atomic_fetch_add_explicit(&w->stats.accept_errors, 1, memory_order_relaxed);
			w->accept_resume_ms = w->proto.mono_ms + DP_ACCEPT_BACKOFF_MS;
			struct io_uring_sqe *sqe = w->accept_armed ? sqe_get(w) : NULL;
			if (sqe != NULL) {   /* none: the accept stays armed and fails again */
				io_uring_prep_cancel64(sqe, ud_make(OP_ACCEPT, 0, 0), 0);
				io_uring_sqe_set_data64(sqe, ud_make(OP_CANCEL, 0, 0));
			}
		}
		return;
	}
	int fd = cqe->res;
	if (w->free_count == 0)
		{ refuse_connection(w, fd, "connection limit reached"); return; }
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
	struct sockaddr_in peer;
	socklen_t peer_len = sizeof peer;
	uint32_t peer_ip = getpeername(fd, (struct sockaddr *)&peer, &peer_len) == 0 &&
	                   peer.sin_family == AF_INET ? ntohl(peer.sin_addr.s_addr) : 0;
	int ip_counted = 0;
	if (w->cfg.iplimit != NULL && peer_ip != 0 && !fs_cidr_match_any(w->cfg.trusted, w->cfg.trusted_count, peer_ip)) {
		if (dp_iplimit_acquire(w->cfg.iplimit, peer_ip) != 0) {
			atomic_fetch_add_explicit(&w->stats.conns_ip_refused, 1, memory_order_relaxed);
			refuse_connection(w, fd, "connection limit per address reached");
			return;
		}
		ip_counted = 1;
	}
	struct dp_conn *c = &w->conns[w->free_list[--w->free_count]];
	assert(!c->active && c->ops_inflight == 0);
	uint32_t idx = c->idx, gen = c->gen;
	memset(c, 0, offsetof(struct dp_conn, in));
	c->idx = idx;
	c->gen = gen;
	c->fd = fd;
	c->active = 1;
	c->auth.peer_ip = peer_ip;
	c->ip_counted = (uint8_t)ip_counted;
	c->last_ms = w->proto.mono_ms;
	atomic_fetch_add_explicit(&w->stats.conns_accepted, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&w->stats.conns_open, 1, memory_order_relaxed);
	arm_recv(w, c);
}

static struct dp_conn *conn_of(struct dp_worker *w, uint64_t ud)
{
	uint32_t idx = (uint32_t)ud;
	uint32_t gen = (uint32_t)(ud >> 32) & 0xffffff;
	assert(idx < w->cfg.conn_max);
	struct dp_conn *c = &w->conns[idx];
	assert((c->gen & 0xffffff) == gen);   /* slots are not reused while ops are in flight */
	(void)gen;
	return c;
}

static void on_recv(struct dp_worker *w, struct dp_conn *c, int res)
{
	assert(c->recv_armed && !c->recv_multi && c->held_count == 0);
	c->recv_armed = 0;
	c->ops_inflight--;
	if (!c->active)
		{ conn_release_if_idle(w, c); return; }
	if (res <= 0)
		{ conn_close(w, c); return; }
	atomic_fetch_add_explicit(&w->stats.bytes_in, (uint64_t)res, memory_order_relaxed);
	if (c->draining) {   /* lingering close: discard, up to DP_LINGER_BYTES */
		c->drained_bytes += (uint64_t)res;
		if (c->drained_bytes > DP_LINGER_BYTES)
			{ conn_close(w, c); return; }
		arm_recv(w, c);
		return;
	}
	/* While the receive was in flight, an answer may have let the
	 * connection parse and consume (compact) its input: the bytes landed
	 * at recv_off, above the data. Move them down to the end of the data
	 * (the regions never overlap the compaction: it only writes below
	 * in_len <= recv_off). Without this a pipelining client's next
	 * requests were parsed from stale bytes. */
	assert(c->recv_off >= c->in_len && c->recv_off + (uint32_t)res <= DP_IN_BYTES);
	if (c->recv_off != c->in_len)
		memmove(c->in + c->in_len, c->in + c->recv_off, (size_t)res);
	c->in_len += (uint32_t)res;
	c->last_ms = w->proto.mono_ms;
	dp_conn_drive(&w->proto, c);
	if (c->out_len)
		mark_flush(w, c);
	arm_recv(w, c);
}

/* A multishot receive's bytes in buffer bid: discarded while lingering,
 * else copied into `in` (what does not fit is parked) and parsed. */
static void recv_bytes(struct dp_worker *w, struct dp_conn *c, uint16_t bid, uint32_t len_bytes)
{
	assert(bid < DP_RBUF_COUNT && len_bytes <= DP_RBUF_BYTES);
	if (!c->active || len_bytes == 0)
		{ rbuf_return(w, bid); return; }
	atomic_fetch_add_explicit(&w->stats.bytes_in, len_bytes, memory_order_relaxed);
	c->last_ms = w->proto.mono_ms;
	if (c->draining) {   /* lingering close: discard, up to DP_LINGER_BYTES */
		rbuf_return(w, bid);
		c->drained_bytes += len_bytes;
		if (c->drained_bytes > DP_LINGER_BYTES)
			conn_close(w, c);
		return;
	}
	uint32_t room = DP_IN_BYTES - c->in_len;
	uint32_t n = c->held_count > 0 ? 0 : len_bytes < room ? len_bytes : room;
	memcpy(c->in + c->in_len, w->rbuf + (size_t)bid * DP_RBUF_BYTES, n);
	c->in_len += n;
	if (n < len_bytes)
		held_park(w, c, bid, len_bytes, n);
	else
		rbuf_return(w, bid);
	dp_conn_drive(&w->proto, c);
	if (c->out_len)
		mark_flush(w, c);
}

static void on_recvm(struct dp_worker *w, struct dp_conn *c, const struct io_uring_cqe *cqe)
{
	int res = cqe->res;
	int more = (cqe->flags & IORING_CQE_F_MORE) != 0;
	assert(c->recv_armed && c->recv_multi);
	assert(res > 0 || !more);   /* an error or the end of input ends the multishot */
	assert(res <= 0 || (cqe->flags & IORING_CQE_F_BUFFER));   /* bytes come in a provided buffer */
	if (cqe->flags & IORING_CQE_F_BUFFER)
		recv_bytes(w, c, (uint16_t)(cqe->flags >> IORING_CQE_BUFFER_SHIFT), res > 0 ? (uint32_t)res : 0);
	if (!more) {
		c->recv_armed = 0;
		c->recv_multi = 0;
		c->recv_cancel = 0;
		c->ops_inflight--;
	}
	if (!c->active) {
		if (!more)
			conn_release_if_idle(w, c);
		return;
	}
	if (res == -ENOBUFS) {   /* the ring ran out: one one-shot receive, then multishot again */
		atomic_fetch_add_explicit(&w->stats.recv_nobufs, 1, memory_order_relaxed);
		c->recv_skip_multi = 1;
	} else if (res == -EINVAL) {   /* the kernel refuses multishot receives: one-shot from now on */
		if (w->recv_multishot)
			fprintf(stderr, "flashsaled: worker %u: the kernel refused a multishot receive; receives are one-shot\n",
			        w->cfg.index);
		w->recv_multishot = 0;
	} else if (res == 0 || (res < 0 && res != -ECANCELED)) {
		conn_close(w, c);
		return;
	}
	arm_recv(w, c);
}

static void on_send(struct dp_worker *w, struct dp_conn *c, int res)
{
	c->send_armed = 0;
	c->ops_inflight--;
	if (!c->active)
		{ conn_release_if_idle(w, c); return; }
	if (res <= 0)
		{ conn_close(w, c); return; }
	atomic_fetch_add_explicit(&w->stats.bytes_out, (uint64_t)res, memory_order_relaxed);
	c->out_sent += (uint32_t)res;
	c->last_ms = w->proto.mono_ms;
	if (c->out_sent == c->out_len) {
		c->out_len = c->out_sent = 0;
		dp_conn_drive(&w->proto, c);   /* output had been full: parse on */
		arm_recv(w, c);
	}
	mark_flush(w, c);
}

/* Enforces every connection's deadlines: ends lingering closes, closes
 * slow readers (output pending longer than send_timeout_ms, whatever else
 * the connection does), answers 408 to slow requests and closes idle
 * keep-alive connections. */
static void housekeep(struct dp_worker *w)
{
	int64_t now = w->proto.mono_ms;
	for (uint32_t i = 0; i < w->cfg.conn_max; i++) {
		struct dp_conn *c = &w->conns[i];
		if (!c->active)
			continue;
		if (c->draining) {
			if (now - c->drain_start_ms > DP_LINGER_MS)
				conn_close(w, c);
			continue;
		}
		if (c->out_since_ms != 0 && now - c->out_since_ms > w->cfg.send_timeout_ms) {
			atomic_fetch_add_explicit(&w->stats.conns_slow_readers, 1, memory_order_relaxed);
			conn_close(w, c);
			continue;
		}
		if (c->waiting || c->send_armed)
			continue;
		if (c->request_start_ms && now - c->request_start_ms > w->cfg.request_timeout_ms) {
			dp_conn_timeout(&w->proto, c);
			atomic_fetch_add_explicit(&w->stats.conns_timed_out, 1, memory_order_relaxed);
			mark_flush(w, c);
		} else if (c->in_len == 0 && now - c->last_ms > w->cfg.idle_timeout_ms) {
			atomic_fetch_add_explicit(&w->stats.conns_timed_out, 1, memory_order_relaxed);
			conn_close(w, c);
		}
	}
}

static uint32_t reap(struct dp_worker *w)
{
	struct io_uring_cqe *cqe;
	unsigned head, n = 0;
	io_uring_for_each_cqe(&w->ring, head, cqe) {
		n++;
		uint64_t ud = io_uring_cqe_get_data64(cqe);
		switch ((int)(ud >> 56)) {
		case OP_ACCEPT: on_accept(w, cqe); break;
		case OP_RECV:   on_recv(w, conn_of(w, ud), cqe->res); break;
		case OP_RECVM:  on_recvm(w, conn_of(w, ud), cqe); break;
		case OP_SEND:   on_send(w, conn_of(w, ud), cqe->res); break;
		case OP_EVENT:  atomic_fetch_add_explicit(&w->stats.wakeups, 1, memory_order_relaxed);
		                arm_event(w); break;
		case OP_TIMER:  housekeep(w); arm_timer(w); break;
		case OP_CANCEL: break;
		default:        assert(0 && "unknown completion");
		}
		io_uring_cq_advance(&w->ring, 1);   /* room for overflowed completions at once */
	}
	return n;
}

static void answered_cb(void *ctx, struct dp_conn *c)
{
	struct dp_worker *w = ctx;
	mark_flush(w, c);
	arm_recv(w, c);
}

static void orphan_cb(void *ctx, struct dp_conn *c) { conn_release_if_idle(ctx, c); }

/* This worker's port to writer shard k (one writer: wport). */
static struct fs_port *shard_port(const struct dp_worker *w, uint32_t k)
{
	return w->cfg.writer_count > 1 ? w->cfg.wports[k] : w->cfg.wport;
}

static uint32_t shard_count(const struct dp_worker *w) { return w->cfg.writer_count > 1 ? w->cfg.writer_count : 1; }

static uint32_t drain_answers(struct dp_worker *w)
{
	uint32_t n = 0;
	for (uint32_t k = 0; k < shard_count(w); k++)
		n += dp_conn_drain(&w->proto, shard_port(w, k), k, w->conns, w->cfg.conn_max, answered_cb, orphan_cb, w);
	return n;
}

/* Kicks each writer shard this loop pushed to (only if it sleeps). */
static void kick_writers(struct dp_worker *w)
{
	for (uint32_t k = 0; k < shard_count(w); k++)
		if (w->proto.shards_pushed & (1u << k))
			fs_wake(shard_port(w, k)->writer);
	w->proto.shards_pushed = 0;
	w->proto.cmds_pushed = 0;
}

/* Idle: tells every shard it sleeps (they share the producer eventfd armed
 * in arm_event), then 1 when an answer arrived meanwhile. */
static int announce_sleep(struct dp_worker *w, int sleeping)
{
	int pending = 0;
	for (uint32_t k = 0; k < shard_count(w); k++) {
		struct fs_port *port = shard_port(w, k);
		atomic_store_explicit(&port->producer.sleeping, sleeping, memory_order_seq_cst);
		pending |= fs_ring_count(&port->answers) != 0;
	}
	return pending;
}

/* Sends what connections have pending and arms the receives a full
 * submission queue held back. What cannot be submitted now is marked again
 * (after the n taken here) and waits for the next loop. */
static void flush_all(struct dp_worker *w)
{
	uint32_t n = w->flush_count;
	for (uint32_t i = 0; i < n; i++) {
		struct dp_conn *c = &w->conns[w->flush[i]];
		c->dirty = 0;
		send_pending(w, c);
		if (c->active)
			arm_recv(w, c);
	}
	assert(w->flush_count >= n);
	memmove(w->flush, w->flush + n, (w->flush_count - n) * sizeof *w->flush);
	w->flush_count -= n;
}

static void *worker_main(void *arg)
{
	struct dp_worker *w = arg;
	if (w->ring_disabled) {
		/* SINGLE_ISSUER binds the ring to the task that enables it
		 * (liburing 2.3 declares io_uring_enable_rings but does not export it) */
		long rc = syscall(__NR_io_uring_register, w->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS, NULL, 0);
		assert(rc == 0);
		(void)rc;
	}
	arm_accept(w);
	arm_event(w);
	arm_timer(w);
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		w->proto.route.now_ms = fs_wall_ms();
		w->proto.now_us = fs_mono_us();
		w->proto.mono_ms = w->proto.now_us / 1000;
		w->proto.route.ready = atomic_load_explicit(w->cfg.ready, memory_order_relaxed);
		uint32_t work = reap(w);
		work += drain_answers(w);
		if (w->proto.cmds_pushed)
			kick_writers(w);   /* one kick per burst and shard, only if it sleeps */
		flush_all(w);
		if (w->proto.cmds_pushed)
			kick_writers(w);   /* parked input parsed in flush_all may have pushed more */
		if (!w->accept_armed && w->proto.mono_ms >= w->accept_resume_ms)
			arm_accept(w);
		if (!w->event_armed)
			arm_event(w);
		if (!w->timer_armed)
			arm_timer(w);
		work += w->flush_count;   /* held back by a full queue: no sleeping */
		if (work) {
			/* also runs the deferred task work, so the next reap sees it */
			io_uring_submit_and_get_events(&w->ring);
			continue;
		}
		/* idle: announce sleep, re-check the answer ring, then block */
		if (!announce_sleep(w, 1))
			io_uring_submit_and_wait(&w->ring, 1);
		else
			io_uring_submit(&w->ring);
		(void)announce_sleep(w, 0);
	}
	return NULL;
}

static int bind_retry(int fd, const struct sockaddr_in *sa)
{
	/* A process killed a moment ago may hold the port for a few ms more
	 * (io_uring tears down late): a supervisor's immediate restart retries
	 * for up to 2 s before it gives up. */
	int rc = bind(fd, (const struct sockaddr *)sa, sizeof *sa);
	for (int i = 0; rc != 0 && errno == EADDRINUSE && i < 100; i++) {
		struct timespec pause = { 0, 20 * 1000000 };
		nanosleep(&pause, NULL);
		rc = bind(fd, (const struct sockaddr *)sa, sizeof *sa);
	}
	return rc;
}

/* One SO_REUSEPORT listener per worker, so the kernel spreads connections
 * over the workers (one shared listener let a single worker take most of
 * them). SO_REUSEPORT alone would let a second server on the same port
 * silently take half of the connections; a probe bind without it first
 * makes that second server fail to start instead. */
int dp_listen_group(const char *host, uint16_t port, uint32_t count, int *fds, char *err, size_t err_len)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		snprintf(err, err_len, "--listen: '%s' is not an IPv4 address", host);
		return -1;
	}
	int one = 1;
	int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (probe < 0 || bind_retry(probe, &sa) != 0) {
		snprintf(err, err_len, "cannot listen on %s:%u: %s", host, port, strerror(errno));
		if (probe >= 0)
			close(probe);
		return -1;
	}
	close(probe);
	for (uint32_t i = 0; i < count; i++) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 4096) != 0) {
			snprintf(err, err_len, "cannot listen on %s:%u: %s", host, port, strerror(errno));
			if (fd >= 0)
				close(fd);
			while (i > 0)
				close(fds[--i]);
			return -1;
		}
		fds[i] = fd;
	}
	return 0;
}

/* The worker's ring: only its thread submits, so completions' task work
 * runs when it asks for events (DEFER_TASKRUN) instead of interrupting it
 * with signals and IPIs (a sixth of its samples under load). Kernels
 * without those flags (< 6.1) get COOP_TASKRUN, then a plain ring. */
static int ring_init(struct dp_worker *w)
{
	static const unsigned tries[] = {
		IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_R_DISABLED,
		IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
		0,
	};
	int rc = -EINVAL;
	for (size_t i = 0; i < sizeof tries / sizeof tries[0]; i++) {
		struct io_uring_params params = { .flags = IORING_SETUP_CQSIZE | tries[i],
		                                  .cq_entries = RING_ENTRIES * 4 };
		rc = io_uring_queue_init_params(RING_ENTRIES, &w->ring, &params);
		if (rc != -EINVAL)
			break;
	}
	if (rc == 0)
		w->ring_disabled = (w->ring.flags & IORING_SETUP_R_DISABLED) != 0;
	return rc;
}

static uint64_t rbuf_ring_bytes(void)
{
	uint64_t page = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t bytes = DP_RBUF_COUNT * sizeof(struct io_uring_buf);
	return (bytes + page - 1) / page * page;
}

/* Reserves and registers the provided-buffer ring (liburing 2.3 has no
 * io_uring_setup_buf_ring: mmap and register by hand). Returns 0, or
 * -errno (the kernel refused it: receives stay one-shot). */
static int rbuf_init(struct dp_worker *w)
{
	void *br = mmap(NULL, rbuf_ring_bytes(), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	void *bufs = mmap(NULL, (size_t)DP_RBUF_COUNT * DP_RBUF_BYTES, PROT_READ | PROT_WRITE,
	                  MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
	w->rbuf_next = calloc(DP_RBUF_COUNT, sizeof *w->rbuf_next);
	w->rbuf_len = calloc(DP_RBUF_COUNT, sizeof *w->rbuf_len);
	int rc = br == MAP_FAILED || bufs == MAP_FAILED || !w->rbuf_next || !w->rbuf_len ? -ENOMEM : 0;
	if (rc == 0) {
		io_uring_buf_ring_init(br);
		struct io_uring_buf_reg reg = { .ring_addr = (uintptr_t)br, .ring_entries = DP_RBUF_COUNT,
		                                .bgid = DP_RBUF_GROUP };
		rc = io_uring_register_buf_ring(&w->ring, &reg, 0);
	}
	if (rc != 0) {
		if (br != MAP_FAILED)
			munmap(br, rbuf_ring_bytes());
		if (bufs != MAP_FAILED)
			munmap(bufs, (size_t)DP_RBUF_COUNT * DP_RBUF_BYTES);
		return rc;
	}
	w->br = br;
	w->rbuf = bufs;
	for (uint16_t bid = 0; bid < DP_RBUF_COUNT; bid++)
		io_uring_buf_ring_add(w->br, w->rbuf + (size_t)bid * DP_RBUF_BYTES, DP_RBUF_BYTES, bid,
		                      io_uring_buf_ring_mask(DP_RBUF_COUNT), bid);
	io_uring_buf_ring_advance(w->br, DP_RBUF_COUNT);
	return 0;
}

/* Picks the worker's receive mode and says which in one start-up line. */
static void recv_mode_init(struct dp_worker *w)
{
	int rc = w->cfg.recv_multishot ? rbuf_init(w) : 0;
	w->recv_multishot = w->cfg.recv_multishot && rc == 0;
	if (w->recv_multishot)
		printf("flashsaled: worker %u: receives multishot, buffer ring %u x %u B (%.1f MiB)\n", w->cfg.index,
		       DP_RBUF_COUNT, DP_RBUF_BYTES, DP_RBUF_COUNT * (double)DP_RBUF_BYTES / (1 << 20));
	else if (w->cfg.recv_multishot)
		printf("flashsaled: worker %u: receives one-shot (the kernel refused the buffer ring: %s)\n",
		       w->cfg.index, strerror(-rc));
	else
		printf("flashsaled: worker %u: receives one-shot (--recv oneshot)\n", w->cfg.index);
	fflush(stdout);
}

struct dp_worker *dp_worker_start(const struct dp_worker_config *cfg, char *err, size_t err_len)
{
	assert(cfg->conn_max > 0 && cfg->wport != NULL && cfg->snap != NULL);
	struct dp_worker *w = calloc(1, sizeof *w);
	if (w == NULL)
		return NULL;
	w->cfg = *cfg;
	w->listen_fd = cfg->listen_fd;
	assert(w->listen_fd >= 0);
	w->conns = mmap(NULL, dp_conn_bytes(cfg->conn_max), PROT_READ | PROT_WRITE,
	                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	w->free_list = calloc(cfg->conn_max, sizeof(uint32_t));
	w->flush = calloc(2 * (size_t)cfg->conn_max, sizeof(uint32_t));
	int rc = ring_init(w);
	if (w->conns == MAP_FAILED || !w->free_list || !w->flush || rc < 0) {
		snprintf(err, err_len, "worker %u: cannot set up io_uring or connections (%s)", cfg->index,
		         rc < 0 ? strerror(-rc) : "out of memory");
		free(w);
		return NULL;
	}
	for (uint32_t i = 0; i < cfg->conn_max; i++) {
		w->conns[i].idx = i;
		w->conns[i].fd = -1;
		w->free_list[i] = cfg->conn_max - 1 - i;
	}
	w->free_count = cfg->conn_max;
	recv_mode_init(w);
	w->proto.cfg = &w->cfg;
	w->proto.stats = &w->stats;
	w->proto.route.snap = cfg->snap;
	w->proto.route.writer_count = cfg->writer_count;
	w->proto.route.shard_map = cfg->shard_map;
	w->proto.route.appliance = cfg->appliance;
	for (uint32_t k = 0; k < cfg->writer_count; k++) {
		assert(cfg->wports[k] != NULL && cfg->snaps[k] != NULL);
		assert(cfg->wports[k]->producer.fd == cfg->wport->producer.fd);   /* one eventfd to sleep on */
		w->proto.route.snaps[k] = cfg->snaps[k];
	}
	w->proto.route.sku_cache = calloc(1, sizeof *w->proto.route.sku_cache);   /* NULL: no cache */
	w->proto.route.tok_cache = calloc(1, sizeof *w->proto.route.tok_cache);   /* NULL: no cache */
	if (fs_jwt_key_init(&w->jwt, cfg->jwt_key, cfg->jwt_key_len) != 0) {
		snprintf(err, err_len, "worker %u: OpenSSL cannot provide HMAC-SHA256", cfg->index);
		return NULL;
	}
	w->proto.route.jwt = &w->jwt;
	w->proto.route.trusted = cfg->trusted;
	w->proto.route.trusted_count = cfg->trusted_count;
	w->proto.route.quantity_max = cfg->quantity_max;
	w->proto.route.shards = cfg->shards;
	if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
		snprintf(err, err_len, "worker %u: cannot start thread", cfg->index);
		return NULL;
	}
	char name[16];
	snprintf(name, sizeof name, "fs-worker-%u", cfg->index);
	pthread_setname_np(w->thread, name);
	if (cfg->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cfg->cpu, &set);
		pthread_setaffinity_np(w->thread, sizeof set, &set);
	}
	return w;
}

void dp_worker_stop(struct dp_worker *w)
{
	if (w == NULL)
		return;
	atomic_store(&w->stop, 1);
	uint64_t one = 1;
	ssize_t r = write(w->cfg.wport->producer.fd, &one, sizeof one);
	(void)r;
	pthread_join(w->thread, NULL);
	for (uint32_t i = 0; i < w->cfg.conn_max; i++)
		if (w->conns[i].fd >= 0)
			close(w->conns[i].fd);
	io_uring_queue_exit(&w->ring);
}

void dp_worker_free(struct dp_worker *w)
{
	if (w == NULL)
		return;
	munmap(w->conns, dp_conn_bytes(w->cfg.conn_max));
	if (w->br != NULL) {
		munmap(w->br, rbuf_ring_bytes());
		munmap(w->rbuf, (size_t)DP_RBUF_COUNT * DP_RBUF_BYTES);
	}
	free(w->rbuf_next);
	free(w->rbuf_len);
	free(w->free_list);
	free(w->flush);
	free(w->proto.route.sku_cache);
	free(w->proto.route.tok_cache);
	fs_jwt_key_free(&w->jwt);
	free(w);
}

const struct dp_stats *dp_worker_stats(const struct dp_worker *w) { return &w->stats; }

/* ---- the io_uring backend (backend.h): SO_REUSEPORT listeners, one worker per listener */

struct uring_group {
	uint32_t count;               /* listeners bound */
	uint32_t started;             /* workers running */
	int listen_fds[DP_WORKERS_MAX];
	struct dp_worker *workers[DP_WORKERS_MAX];
};

static int uring_claim(struct dp_backend *b, char *err, size_t err_len)
{
	assert(b->self == NULL);
	assert(b->cfg.worker_count > 0 && b->cfg.worker_count <= DP_WORKERS_MAX);
	struct uring_group *g = calloc(1, sizeof *g);
	if (g == NULL) {
		snprintf(err, err_len, "out of memory");
		return -1;
	}
	if (dp_listen_group(b->cfg.listen_host, b->cfg.listen_port, b->cfg.worker_count, g->listen_fds,
	                    err, err_len) != 0) {
		free(g);
		return -1;
	}
	g->count = b->cfg.worker_count;
	b->self = g;
	return 0;
}

static int uring_start(struct dp_backend *b, char *err, size_t err_len)
{
	struct uring_group *g = b->self;
	assert(g != NULL && g->started == 0);
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	for (uint32_t i = 0; i < g->count; i++) {
		struct dp_worker_config dc = b->cfg.worker;
		dc.index = i;
		uint32_t base = b->cfg.worker_cpu_base ? b->cfg.worker_cpu_base : 1;
		dc.cpu = b->cfg.pin && cores > (long)base ? (int)(base + i % (uint32_t)(cores - (long)base)) : -1;
		dc.listen_fd = g->listen_fds[i];
		dc.wport = b->cfg.wports[i];
		for (uint32_t k = 0; k < dc.writer_count; k++)
			dc.wports[k] = b->cfg.shard_wports[k][i];
		assert(dc.writer_count <= 1 || dc.wports[0] == dc.wport);
		g->workers[i] = dp_worker_start(&dc, err, err_len);
		if (g->workers[i] == NULL)
			return -1;
		g->started++;
	}
	assert(g->started == g->count);
	return 0;
}

static void uring_stop(struct dp_backend *b)
{
	struct uring_group *g = b->self;
	if (g == NULL)
		return;
	for (uint32_t i = 0; i < g->started; i++)
		dp_worker_stop(g->workers[i]);
	for (uint32_t i = 0; i < g->count; i++)
		close(g->listen_fds[i]);
	g->count = 0;   /* the workers' counters stay readable */
}

static uint32_t uring_stats(const struct dp_backend *b, const struct dp_stats **out, uint32_t max)
{
	const struct uring_group *g = b->self;
	uint32_t n = 0;
	for (; g != NULL && n < g->started && n < max; n++)
		out[n] = dp_worker_stats(g->workers[n]);
	return n;
}

static void uring_free(struct dp_backend *b)
{
	struct uring_group *g = b->self;
	if (g == NULL)
		return;
	for (uint32_t i = 0; i < g->started; i++)
		dp_worker_free(g->workers[i]);
	free(g);
	b->self = NULL;
}

const struct dp_backend_ops dp_io_uring_ops = {
	.name = "io_uring", .claim = uring_claim, .start = uring_start, .stop = uring_stop,
	.stats = uring_stats, .metrics = NULL, .free = uring_free,
};
