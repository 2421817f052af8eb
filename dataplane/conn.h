/* conn.h - the HTTP/1.1 connection protocol, independent of the I/O
 * backend: bytes in -> parse -> route -> answer bytes out, in order.
 *
 * Pipelining: requests are parsed in arrival order; a request that needs
 * the writer parks the connection (`waiting`) and later requests stay in
 * the input buffer until its answer is written, so answers always leave in
 * request order.
 */
#ifndef DP_CONN_H
#define DP_CONN_H

#include <stdint.h>
#include "dataplane/worker.h"

struct dp_conn {
	uint32_t idx;
	uint32_t gen;                 /* bumped on reuse: stale answers are dropped */
	int      fd;
	uint8_t  active;
	uint8_t  waiting;             /* a command of this connection is at the writer */
	uint8_t  closing;             /* close once the output is flushed */
	uint8_t  recv_armed;
	uint8_t  send_armed;
	uint8_t  dirty;               /* in the worker's flush list */
	uint8_t  wait_keep_alive;
	uint8_t  wait_route;
	uint8_t  linger;              /* closing after an error: half-close and drain first */
	uint8_t  draining;            /* backend: answer sent, SHUT_WR done, discarding input */
	uint8_t  ip_counted;          /* backend: counted in the per-IP connection cap */
	uint32_t ops_inflight;        /* backend operations not completed yet */
	uint32_t in_len;
	uint32_t recv_off;            /* backend: where the receive in flight writes (in_len when armed) */
	uint8_t  recv_multi;          /* backend: the armed receive is multishot (provided buffers) */
	uint8_t  recv_cancel;         /* backend: that multishot's cancel is submitted */
	uint8_t  recv_skip_multi;     /* backend: the next receive is one-shot (the buffer ring ran out) */
	uint16_t held_count;          /* backend: provided buffers parked while `in` is full */
	uint16_t held_head, held_tail;/* backend: their chain, oldest first */
	uint32_t held_off;            /* backend: bytes of the head buffer already moved to `in` */
	uint32_t out_len;
	uint32_t out_sent;
	int64_t  last_ms;             /* last byte received or answer sent */
	int64_t  request_start_ms;    /* first byte of the unparsed request, 0 if none */
	int64_t  request_us;          /* monotonic: when the request in progress was read whole */
	int64_t  out_since_ms;        /* output pending since (0: none): the send deadline */
	int64_t  drain_start_ms;      /* lingering close began */
	uint64_t drained_bytes;       /* discarded during the lingering close */
	struct dp_auth_cache auth;
	char in[DP_IN_BYTES];
	char out[DP_OUT_BYTES];
};

struct dp_proto {
	const struct dp_worker_config *cfg;
	struct dp_stats *stats;
	struct dp_route_ctx route;    /* route.now_ms: the wall clock (token expiry) */
	int64_t mono_ms;              /* CLOCK_MONOTONIC: every timeout and deadline */
	uint32_t cmds_pushed;         /* since the last writer kick */
	uint32_t shards_pushed;       /* bit k: writer shard k got some of them (kick each) */
	int64_t now_us;               /* monotonic, stamped once per loop iteration by the backend */
};

static inline uint64_t dp_tag(const struct dp_conn *c) { return (uint64_t)c->gen << 32 | c->idx; }

/* Parses and answers as many buffered requests as the connection's state
 * allows (not waiting, room for an answer). Consumes parsed bytes. */
void dp_conn_drive(struct dp_proto *p, struct dp_conn *c);

/* Writes writer shard `shard`'s answer for the parked request (its numbers
 * become public ids there, pubid.h), then drives on. */
void dp_conn_answered(struct dp_proto *p, struct dp_conn *c, const struct fs_ans *a, uint32_t shard);

/* Takes every answer waiting on the answer ring of `port` (writer shard
 * `shard`'s: its numbers become public ids, pubid.h) and
 * hands each to its connection (dp_conn_answered), then calls
 * answered(ctx, c) so the backend can send; a connection whose client left
 * while its command was at the writer stops waiting and goes to
 * orphan(ctx, c) so the backend can free its slot. Returns the count. */
uint32_t dp_conn_drain(struct dp_proto *p, struct fs_port *port, uint32_t shard, struct dp_conn *conns, uint32_t conn_max,
                       void (*answered)(void *ctx, struct dp_conn *c),
                       void (*orphan)(void *ctx, struct dp_conn *c), void *ctx);

/* Answers 408 and marks the connection closing (slow request). */
void dp_conn_timeout(struct dp_proto *p, struct dp_conn *c);

#endif
