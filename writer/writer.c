/* writer.c - the writer thread and its batch loop.
 *
 *   drain every port's command ring (<= batch_count_max, due timers first)
 *   -> admit: refuse at once what must not reach the decide step (admission.c)
 *   -> decide the whole batch in memory (alloc.c, pure)
 *   -> journal: append ONE batch, io_uring write + fdatasync (journal.c)
 *   -> publish the snapshot of the SKUs it touched
 *   -> release the answers to the ports' answer rings, hand charges to the
 *      payment thread
 *
 * While the journal write is in flight new commands pile up in the rings, so
 * the next batch is larger: the fdatasync is paid per batch, not per
 * request (group commit). With nothing to do the thread sleeps on an
 * eventfd (idle protocol in common/fs_ring.h) until a producer or the next
 * hold deadline wakes it.
 *
 * A journal that cannot append (disk full, an I/O error) never stops the
 * process: the batch already decided stays held, unanswered and
 * unpublished, and is appended again with back-off until it is durable.
 * Meanwhile every new command is answered 503 at once (`overloaded`;
 * `frozen` for checkouts), the edge refuses reservations itself, snapshot
 * reads go on, and payment results wait for the journal (never dropped).
 * When an append succeeds again everything resumes by itself.
 */
#include "writer/writer.h"
#include "common/fs_clock.h"
#include "common/fs_fault.h"
#include "common/fs_cidr.h"
#include "writer/admission.h"
#include "writer/draw.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/snapshot.h"
#include "writer/publish.h"
#include "common/fs_prefault.h"
#include "writer/snapshotter.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FOLLOW_WAIT_MS 20
#define IDLE_WAIT_MS_MAX 1000

struct replay_ctx;
#define STALL_RETRY_MS_MIN 20
#define STALL_RETRY_MS_MAX 1000
#ifndef WR_IDLE_YIELDS
#define WR_IDLE_YIELDS 16   /* yields before an idle writer sleeps */
#endif

struct writer {
	struct wr_config cfg;
	struct wr_state *st;
	struct journal *j;
	struct fs_snapshot *snap;
	uint16_t snap_of_sku[FS_SNAP_SKU_MAX];   /* writer SKU index -> snapshot index (publish_sku) */
	/* the last durable batch that touched each SKU index (the snapshot's
	 * batch for those the replayed tail did not touch): `sale archive`
	 * waits until every sink is past it */
	uint64_t sku_seq[FS_SNAP_SKU_MAX];
	uint32_t port_count;
	struct fs_port ports[WR_PORT_COUNT_MAX];
	struct fs_waker wake;             /* the writer's own */
	struct fs_ring charges;
	struct fs_waker charge_waker;     /* the payment thread's */
	struct fs_cmd *cmds;              /* batch_count_max */
	struct wr_batch_out out;
	struct wr_metrics m;
	pthread_t thread;
	int started;
	_Atomic int stop;
	int64_t last_t_ms;
	char journal_dir[PATH_MAX];
	void *mem;
	size_t mem_bytes;
	void (*on_durable)(void *);
	void *on_durable_arg;
	uint64_t recharge_after;          /* PENDING orders of the last stop handed up to here */
	uint64_t recharge_max;            /* ... and up to this order number */
	struct wr_admission *admission;
	_Atomic uint32_t usage[6];
	/* snapshots (snapshot.h, snapshotter.h): at most one being written */
	struct wr_snapshotter *snapper;   /* NULL when snapshots are off */
	int snap_busy;
	struct wr_snap_stamp snap_pending;
	uint64_t snap_started_ns;
	uint64_t snap_seq;                /* newest durable snapshot (0: none) */
	uint64_t snap_oldest_kept;        /* segments wholly before it may go */
	uint64_t snap_mark_bytes;         /* jr_bytes_total() when the last one started */
	uint64_t snap_req_taken;          /* requests the running child answers */
	_Atomic uint64_t snap_req;        /* requests made (wr_snapshot_now) */
	_Atomic uint64_t snap_done;       /* requests answered */
	_Atomic int64_t snap_result;      /* seq of the last answer, -1 when it failed */
	int64_t drop_next_ms;
	uint64_t (*segment_gate)(void *);
	void *segment_gate_arg;
	/* journal stall (see the top): the held batch and what waits for it */
	int stalled;
	uint32_t held_n;                  /* commands of the held batch in cmds[] */
	int64_t held_t_ms;
	uint32_t retry_ms;
	int64_t retry_at_ms;              /* monotonic */
	int64_t stall_start_ms;           /* monotonic */
	int stall_errno;
	struct fs_cmd *deferred;          /* payment results that arrived during a stall */
	uint32_t deferred_count, deferred_cap;
	struct wr_repl_ops repl;          /* ship == NULL: single-box */
	uint32_t role;                    /* FS_ROLE_*, writer thread only (published in snap->role) */
	struct replay_ctx *follow_rc;     /* standby: buffers to re-decide log batches */
	struct jr_batch follow_held;      /* standby: a log batch the local journal refused (the
	                                   * follower keeps its bytes until the next follow call) */
	int follow_holding;               /* follow_held is retried (uses the stall's retry fields) */
	struct fs_pub *pub;               /* published reservations and orders (MAP_SHARED) */
	struct wr_publisher publisher;
};

/* Nanoseconds on the monotonic clock (start-up and snapshot timings). */
static uint64_t mono_ns(void) { return (uint64_t)fs_mono_us() * 1000u; }

/* ---- replay --------------------------------------------------------------- */

struct replay_ctx {
	struct writer *w;
	struct fs_cmd *cmds;
	uint32_t cmd_cap;
	struct wr_batch_out out;
	char *err;
	size_t err_len;
};

static int replay_batch(void *arg, const struct jr_batch *b)
{
	struct replay_ctx *rc = arg;
	int decoded = wr_rec_decode_batch(b->body, b->body_len, b->record_count, rc->cmds, rc->cmd_cap);
	if (decoded < 0)
		goto bad;
	uint32_t n = (uint32_t)decoded;
	wr_decide(rc->w->st, rc->cmds, n, b->time_ms, 1, &rc->out);
	/* invariant 4: the decide step regenerates exactly the journaled records */
	if (rc->out.records_len != b->body_len || memcmp(rc->out.records, b->body, b->body_len) != 0) {
		snprintf(rc->err, rc->err_len, "replay diverged: %s offset %llu (batch %llu) decides "
		         "differently than it was journaled", b->file, (unsigned long long)b->offset,
		         (unsigned long long)b->seq);
		return -1;
	}
	for (uint32_t i = 0; i < n; i++)
		if (rc->cmds[i].type == FS_CMD_RESERVE && rc->cmds[i].err == FS_OK)
			fs_snap_holder_set(rc->w->snap, rc->cmds[i].user, rc->cmds[i].user_len);
	for (uint32_t i = 0; i < rc->out.sku_touched_count; i++)
		rc->w->sku_seq[rc->out.sku_touched[i]] = b->seq;
	rc->w->last_t_ms = b->time_ms;
	atomic_fetch_add(&rc->w->m.replayed_batches, 1);
	if (rc->w->cfg.replay_pace_us)   /* tests only: a replay long enough to watch */
		usleep(rc->w->cfg.replay_pace_us);
	atomic_store(&rc->w->m.durable_seq, b->seq);
	return 0;
bad:
	snprintf(rc->err, rc->err_len, "journal: %s offset %llu: malformed record in batch %llu",
	         b->file, (unsigned long long)b->offset, (unsigned long long)b->seq);
	return -1;
}

/* Buffers for decoding and re-deciding the largest possible batch. */
static int replay_ctx_init(struct replay_ctx *rc, struct writer *w)
{
	uint32_t skus = w->cfg.limits.sku_count_max;
	rc->w = w;
	rc->cmd_cap = WR_REC_COUNT_MAX(JR_BODY_BYTES_MAX);
	rc->cmds = calloc(rc->cmd_cap, sizeof *rc->cmds);
	int out = wr_batch_out_alloc(&rc->out, rc->cmd_cap, wr_replay_records_cap(JR_BODY_BYTES_MAX, skus), skus);
	return rc->cmds && out == 0 ? 0 : -1;
}

static void replay_ctx_free(struct replay_ctx *rc)
{
	free(rc->cmds);
	wr_batch_out_free(&rc->out);
}

/* ---- set-up ---------------------------------------------------------------- */

static void publish_sku(struct writer *w, uint32_t idx)
{
	struct wr_sku_view v;
	wr_sku_view(w->st, idx, &v);
	if (v.name_len == 0)
		return;   /* a free slot: its sale was archived */
	struct fs_sku_read r = { v.total, v.available, v.reserved, v.sold, v.version, v.state, v.waitlist_open,
	                         v.waitlist_count, v.queued };
	int rc = fs_snap_publish(w->snap, v.name, v.name_len, &r);
	assert(rc >= 0 && idx < w->cfg.limits.sku_count_max);
	w->snap_of_sku[idx] = (uint16_t)rc;
}

/* The SKUs a decided batch changed: archived sales leave the published
 * view first (a sale created later in the batch may take the entry), then
 * every touched one is republished. */
static void publish_batch_skus(struct writer *w, const struct wr_batch_out *out, const struct fs_cmd *cmds,
                               uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (cmds[i].type == FS_CMD_SALE_ARCHIVE && cmds[i].err == FS_OK) {
			int gone = fs_snap_remove(w->snap, cmds[i].sku, cmds[i].sku_len);
			assert(gone >= 0);
			(void)gone;
		}
	for (uint32_t i = 0; i < out->sku_touched_count; i++)
		publish_sku(w, out->sku_touched[i]);
}

/* Has some sink not consumed the last batch that touched the sale yet? A
 * sale is archived only once they have (API.md: its sinks consumed it). */
static int sinks_behind(struct writer *w, const struct fs_cmd *c)
{
	int idx = wr_sku_find(w->st, c->sku, c->sku_len);
	if (idx < 0 || w->segment_gate == NULL)
		return 0;   /* unknown: the decide step answers it */
	return w->segment_gate(w->segment_gate_arg) < w->sku_seq[idx];
}

static void publish_ip_rules(struct writer *w)
{
	struct fs_cidr rules[FS_IP_RULES_MAX];
	uint8_t actions[FS_IP_RULES_MAX];
	uint32_t net[FS_IP_RULES_MAX], mask[FS_IP_RULES_MAX];
	uint32_t n = wr_ip_rules(w->st, rules, actions, FS_IP_RULES_MAX);
	for (uint32_t i = 0; i < n; i++) {
		net[i] = rules[i].net;
		mask[i] = rules[i].mask;
	}
	fs_snap_ip_publish(w->snap, net, mask, actions, n);
}

/* Hands charges of orders left PENDING by the last stop to the payment
 * thread, as far as its ring has room; returns how many. Orders created
 * since the start are charged by their checkout, never here. */
static uint32_t recharge(struct writer *w)
{
	uint32_t handed = 0;
	while (w->recharge_after < w->recharge_max) {
		uint32_t room = fs_ring_capacity(&w->charges) - fs_ring_count(&w->charges);
		struct wr_charge ch[64];
		uint32_t got = wr_pending_charges(w->st, w->recharge_after, ch, room < 64 ? room : 64);
		if (got == 0) {
			if (room > 0)
				w->recharge_after = w->recharge_max;   /* none left */
			break;
		}
		for (uint32_t i = 0; i < got && ch[i].order_no <= w->recharge_max; i++) {
			uint32_t ok = fs_ring_enqueue_burst(&w->charges, &ch[i], 1);
			assert(ok == 1);
			(void)ok;
			atomic_fetch_add(&w->m.charges_outstanding, 1);
			w->recharge_after = ch[i].order_no;
			handed++;
		}
		if (ch[got - 1].order_no > w->recharge_max)
			w->recharge_after = w->recharge_max;
	}
	if (handed)
		fs_wake(&w->charge_waker);
	return handed;
}

static int eventfd_new(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

static int alloc_buffers(struct writer *w)
{
	const struct wr_config *c = &w->cfg;
	size_t ring_bytes = (size_t)c->ring_slots * (sizeof(struct fs_cmd) + sizeof(struct fs_ans));
	size_t bytes = ring_bytes * w->port_count + (size_t)c->charge_slots * sizeof(struct wr_charge);
	/* MAP_SHARED: the DPDK backend's lane processes (forked, dataplane/dpdk.h)
	 * produce into these rings too. */
	w->mem = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (w->mem == MAP_FAILED)
		return -1;
	w->mem_bytes = bytes;
	uint8_t *p = w->mem;
	w->wake.fd = eventfd_new();
	w->charge_waker.fd = eventfd_new();
	if (w->wake.fd < 0 || w->charge_waker.fd < 0)
		return -1;
	for (uint32_t i = 0; i < w->port_count; i++) {
		struct fs_port *pt = &w->ports[i];
		fs_ring_init(&pt->cmds, p, c->ring_slots, sizeof(struct fs_cmd));
		p += (size_t)c->ring_slots * sizeof(struct fs_cmd);
		fs_ring_init(&pt->answers, p, c->ring_slots, sizeof(struct fs_ans));
		p += (size_t)c->ring_slots * sizeof(struct fs_ans);
		pt->inflight_max = c->ring_slots;
		pt->producer.fd = i < c->producer_fd_count ? c->producer_fds[i] : eventfd_new();
		pt->writer = &w->wake;
		if (pt->producer.fd < 0)
			return -1;
	}
	fs_ring_init(&w->charges, p, c->charge_slots, sizeof(struct wr_charge));
	w->cmds = calloc(c->batch_count_max, sizeof *w->cmds);
	uint32_t records_cap = wr_batch_records_cap(c->batch_count_max, c->limits.sku_count_max);
	/* payment results a stall holds back: at most one per charge in flight */
	w->deferred_cap = c->charge_slots;
	w->deferred = calloc(w->deferred_cap, sizeof *w->deferred);
	if (!w->cmds || !w->deferred ||
	    wr_batch_out_alloc(&w->out, c->batch_count_max, records_cap, c->limits.sku_count_max) != 0)
		return -1;
	assert(w->out.records_cap <= JR_BODY_BYTES_MAX);
	return 0;
}

static void holder_set(void *arg, const char *user, size_t len)
{
	fs_snap_holder_set(arg, user, len);
}

/* Loads the newest valid snapshot into w->st and points the journal's
 * start after it (jc->after_seq stays 0 when none is valid). A damaged
 * one is refused loudly (file and offset) and the one before is tried.
 * Returns 0, or -1 when a fresh state cannot be reserved. */
static int snapshot_load_latest(struct writer *w, struct jr_config *jc, int *refused)
{
	uint64_t seqs[WR_SNAP_LIST_MAX];
	int n = wr_snapshot_list(w->cfg.data_dir, seqs, WR_SNAP_LIST_MAX);
	for (int i = 0; i < n; i++) {
		char path[PATH_MAX + 64], why[PATH_MAX + 512];
		struct wr_snap_stamp stamp;
		uint64_t bytes = 0;
		wr_snapshot_path(path, sizeof path, w->cfg.data_dir, seqs[i]);
		int ok = wr_snapshot_load(path, w->st, &stamp, &bytes, why, sizeof why) == 0;
		if (ok && stamp.seq != seqs[i]) {
			ok = 0;
			snprintf(why, sizeof why, "snapshot %s offset 0: its header names batch %llu", path,
			         (unsigned long long)stamp.seq);
		}
		if (ok) {
			jc->after_seq = stamp.seq;
			memcpy(jc->after_chain, stamp.chain, 16);
			w->last_t_ms = stamp.time_ms;
			w->snap_seq = stamp.seq;
			w->snap_oldest_kept = i + 1 < n ? seqs[i + 1] : stamp.seq;
			for (uint32_t k = 0; k < FS_SNAP_SKU_MAX; k++)
				w->sku_seq[k] = stamp.seq;   /* each SKU's last change is at or before it */
			atomic_store(&w->m.snapshot_seq, stamp.seq);
			atomic_store(&w->m.snapshot_bytes, bytes);
			atomic_store(&w->m.durable_seq, stamp.seq);
			wr_each_holder(w->st, holder_set, w->snap);
			return 0;
		}
		fprintf(stderr, "flashsaled: refusing %s; trying the one before\n", why);
		(*refused)++;
		wr_state_free(w->st);
		w->st = wr_state_new(&w->cfg.limits);
		if (w->st == NULL)
			return -1;
		if (!w->cfg.no_prefault)   /* as wr_open did for the first one */
			wr_state_prefault(w->st);
	}
	return 0;
}

/* Publishes the tables' fill for /metrics (flashsale_table_used). */
static void publish_usage(struct writer *w)
{
	struct wr_usage u;
	wr_usage(w->st, &u);
	atomic_store_explicit(&w->usage[0], u.users, memory_order_relaxed);
	atomic_store_explicit(&w->usage[1], u.reservations, memory_order_relaxed);
	atomic_store_explicit(&w->usage[2], u.orders, memory_order_relaxed);
	atomic_store_explicit(&w->usage[3], u.idem_keys, memory_order_relaxed);
	atomic_store_explicit(&w->usage[4], u.holdings, memory_order_relaxed);
	atomic_store_explicit(&w->usage[5], u.skus, memory_order_relaxed);
}

struct writer *wr_open(const struct wr_config *cfg, struct fs_snapshot *snap, char *err, size_t err_len)
{
	assert(cfg->batch_count_max > 0 && cfg->batch_count_max <= WR_BATCH_COUNT_MAX);
	assert(cfg->port_count > 0 && cfg->port_count < WR_PORT_COUNT_MAX);
	assert(cfg->limits.sku_count_max <= FS_SNAP_SKU_MAX);
	/* Shared memory (zero-filled like calloc): the ports and wakers inside
	 * are used by forked DPDK lane processes as well as by threads. */
	struct writer *w = mmap(NULL, sizeof *w, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (w == MAP_FAILED) {
		snprintf(err, err_len, "out of memory");
		return NULL;
	}
	w->cfg = *cfg;
	w->snap = snap;
	w->port_count = cfg->port_count;
	w->wake.fd = w->charge_waker.fd = -1;   /* wr_close closes only what was made */
	for (uint32_t i = 0; i < w->port_count; i++)
		w->ports[i].producer.fd = -1;
	snprintf(w->journal_dir, sizeof w->journal_dir, "%s/journal", cfg->data_dir);
	w->st = wr_state_new(&cfg->limits);
	struct wr_admission_config ac = {
		.user_count_max = cfg->limits.user_count_max, .journal_budget_bytes = cfg->journal_budget_bytes,
		.charge_capacity = cfg->charge_slots, .ip_rate_per_min = cfg->ip_rate_per_min,
		.risk_regular_streak = cfg->risk_regular_streak, .risk_device_users = cfg->risk_device_users,
		.risk_ip_users = cfg->risk_ip_users,
	};
	w->admission = wr_admission_new(&ac, &w->m.risk_flags);
	const struct wr_limits *l = &cfg->limits;
	w->pub = fs_pub_map(l->sku_count_max, l->user_count_max, l->reservation_count_max, l->order_count_max);
	if (w->st == NULL || alloc_buffers(w) != 0 || w->admission == NULL || w->pub == NULL ||
	    wr_publisher_init(&w->publisher, w->pub, l->sku_count_max) != 0) {
		uint64_t need = wr_state_bytes(l) + wr_pub_bytes(l);
		snprintf(err, err_len, "cannot reserve memory for the tables (%llu bytes)", (unsigned long long)need);
		wr_close(w);
		return NULL;
	}
	snap->pub = w->pub;   /* before any worker or lane starts: they read it from here */
	if (cfg->before_replay != NULL)   /* the listeners answer while we recover */
		cfg->before_replay(cfg->before_replay_arg, w);
	if (!cfg->no_prefault) {   /* before replay: the first decision must not fault */
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		wr_state_prefault(w->st);
		wr_admission_prefault(w->admission);
		fs_prefault(w->pub, w->pub->bytes);
		clock_gettime(CLOCK_MONOTONIC, &t1);
		w->m.tables_fault_ms = (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000 +
		                                  (t1.tv_nsec - t0.tv_nsec) / 1000000);
	}
	struct replay_ctx rc = { .err = err, .err_len = err_len };
	if (replay_ctx_init(&rc, w) != 0) {
		snprintf(err, err_len, "out of memory for replay buffers");
		replay_ctx_free(&rc);
		wr_close(w);
		return NULL;
	}
	err[0] = 0;
	struct jr_config jc = { .dir = w->journal_dir, .segment_bytes = cfg->segment_bytes, .no_sync = cfg->no_sync,
	                        .prezero = !cfg->no_sync };
	int refused = 0;
	uint64_t s0 = mono_ns();
	if (snapshot_load_latest(w, &jc, &refused) != 0) {
		snprintf(err, err_len, "cannot reserve memory for the tables");
		replay_ctx_free(&rc);
		wr_close(w);
		return NULL;
	}
	uint64_t s1 = mono_ns();
	char jerr[512];
	w->j = jr_open(&jc, replay_batch, &rc, jerr, sizeof jerr);
	replay_ctx_free(&rc);
	if (w->j == NULL) {
		if (err[0] == 0 && refused > 0 && jc.after_seq == 0)
			snprintf(err, err_len, "no valid snapshot (%d refused, see above) and the journal cannot be "
			         "replayed from its start: %s", refused, jerr);
		else if (err[0] == 0)
			snprintf(err, err_len, "%s", jerr);
		wr_close(w);
		return NULL;
	}
	uint64_t s2 = mono_ns();
	atomic_store(&w->m.startup_snapshot_ms, (s1 - s0) / 1000000);
	atomic_store(&w->m.startup_tail_ms, (s2 - s1) / 1000000);
	atomic_store(&w->m.journal_first_seq, jr_first_seq(w->j));
	w->snap_mark_bytes = jr_bytes_total(w->j);
	struct wr_snapshotter_config sc = { .data_dir = cfg->data_dir, .journal_dir = w->journal_dir,
	                                    .limits = cfg->limits, .base_seq = jc.after_seq,
	                                    .pace_us = cfg->snapshot_pace_us };
	w->snapper = wr_snapshotter_new(&sc, err, err_len);
	if (w->snapper == NULL) {
		wr_close(w);
		return NULL;
	}
	wr_state_set_retention(w->st, (int64_t)cfg->retention_ms);   /* after replay: it follows the journal */
	if (!cfg->quiet)
		printf("flashsaled: start-up: snapshot %llu loaded in %.1f ms; journal tail of %llu batches "
		       "replayed in %.1f ms\n", (unsigned long long)jc.after_seq, (double)(s1 - s0) / 1e6,
		       (unsigned long long)atomic_load(&w->m.replayed_batches), (double)(s2 - s1) / 1e6);
	for (uint32_t i = 0; i < wr_sku_count(w->st); i++)
		publish_sku(w, i);
	wr_publish_all(&w->publisher, w->st);
	publish_ip_rules(w);
	publish_usage(w);   /* the replayed fill, before the first batch: /metrics never reads 0 after a restart */
	/* orders PENDING at the last stop: charge again with the same idempotency
	 * key (the ring takes what fits now; the loop hands over the rest) */
	struct wr_usage u;
	wr_usage(w->st, &u);
	w->recharge_max = u.order_no_max;
	uint32_t pending = recharge(w);
	if (pending && !cfg->quiet)
		printf("flashsaled: payments in flight at the last stop: retrying them\n");
	atomic_store(&snap->payments_open, 1);
	atomic_store(&w->m.journal_bytes, jr_bytes(w->j));
	atomic_store(&w->m.durable_seq, jr_last_seq(w->j));
	return w;
}

struct fs_port *wr_port(struct writer *w, uint32_t i)
{
	assert(i < w->port_count);
	return &w->ports[i];
}

struct fs_ring *wr_charge_ring(struct writer *w) { return &w->charges; }
struct fs_waker *wr_charge_waker(struct writer *w) { return &w->charge_waker; }
const struct wr_metrics *wr_metrics(const struct writer *w) { return &w->m; }
const _Atomic uint64_t *wr_durable_seq(const struct writer *w) { return &w->m.durable_seq; }
const char *wr_journal_dir(const struct writer *w) { return w->journal_dir; }

void wr_table_usage(const struct writer *w, struct wr_usage *u)
{
	u->users = atomic_load(&((struct writer *)w)->usage[0]);
	u->reservations = atomic_load(&((struct writer *)w)->usage[1]);
	u->orders = atomic_load(&((struct writer *)w)->usage[2]);
	u->idem_keys = atomic_load(&((struct writer *)w)->usage[3]);
	u->holdings = atomic_load(&((struct writer *)w)->usage[4]);
	u->skus = atomic_load(&((struct writer *)w)->usage[5]);
}

void wr_print_budget(const struct wr_config *c)
{
	const struct wr_limits *l = &c->limits;
	double mib = 1024.0 * 1024.0;
	printf("flashsaled: writer tables (fixed at start-up): skus %u, users %u, reservations %u, "
	       "orders %u, idempotency keys %u, holdings %u: %.0f MiB reserved\n",
	       l->sku_count_max, l->user_count_max, l->reservation_count_max, l->order_count_max,
	       l->idem_count_max, l->holding_count_max, (double)wr_state_bytes(l) / mib);
	printf("flashsaled: snapshot thread's copy of the tables: %.0f MiB reserved, touched as it fills\n",
	       (double)wr_state_bytes(l) / mib);
	printf("flashsaled: rings: %u ports x %u slots x 2 (%.1f MiB), batch <= %u commands, "
	       "journal segments %.0f MiB\n", c->port_count, c->ring_slots,
	       (double)c->port_count * c->ring_slots * (sizeof(struct fs_cmd) + sizeof(struct fs_ans)) / mib,
	       c->batch_count_max, (double)c->segment_bytes / mib);
	printf("flashsaled: published reservations and orders (shared with the workers): %.0f MiB\n",
	       (double)wr_pub_bytes(l) / mib);
}

uint64_t wr_pub_bytes(const struct wr_limits *l)
{
	return fs_pub_bytes(l->sku_count_max, l->user_count_max, l->reservation_count_max, l->order_count_max);
}

/* ---- the batch loop ------------------------------------------------------------ */

static uint32_t log2_bucket(uint64_t v, uint32_t buckets)
{
	uint32_t b = 0;
	while (v > 1 && b + 1 < buckets) {
		v >>= 1;
		b++;
	}
	return b;
}

/* A scheduled opening of a drawn sale reveals its seed (draw.h). Without
 * the seed file the sale cannot open: it stays scheduled, loudly. */
static void reveal_seeds(struct writer *w, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct fs_cmd *c = &w->cmds[i];
		if (c->type != FS_CMD_SALE_OPEN)
			continue;
		if (wr_reveal_seed(w, c) != 0)
			fprintf(stderr, "writer: sale %.*s: its draw seed file is missing or does not match "
			        "the commitment; it stays scheduled\n", c->sku_len, c->sku);
	}
}

int wr_reveal_seed(struct writer *w, struct fs_cmd *c)
{
	int idx = wr_sku_find(w->st, c->sku, c->sku_len);
	if (idx < 0)
		return 0;
	struct wr_sku_view v;
	wr_sku_view(w->st, (uint32_t)idx, &v);
	if (!v.has_draw || v.drawn)
		return 0;
	char hex[65];
	if (wr_draw_seed_load(w->cfg.data_dir, c->sku, c->sku_len, v.draw_commit, hex) != 0)
		return -1;
	memcpy(c->text, hex, 64);
	c->text_len = 64;
	return 0;
}

int wr_owns_sku(const struct wr_config *cfg, const char *sku, size_t len)
{
	if (cfg->shard_count <= 1)
		return 1;
	assert(cfg->shard_index < cfg->shard_count);
	return fs_shard_writer_of(cfg->shard_map, sku, len, cfg->shard_count) == cfg->shard_index;
}

/* Gathers due timers, then every port's commands, up to batch_count_max. */
static uint32_t gather(struct writer *w, int64_t t_ms)
{
	uint32_t max = w->cfg.batch_count_max;
	uint32_t n = wr_due(w->st, t_ms, w->cmds, max / 8);
	reveal_seeds(w, n);
	/* payment results held back by a journal stall go first, in order */
	uint32_t d = w->deferred_count < max - n ? w->deferred_count : max - n;
	memcpy(w->cmds + n, w->deferred, d * sizeof *w->cmds);
	memmove(w->deferred, w->deferred + d, (w->deferred_count - d) * sizeof *w->deferred);
	w->deferred_count -= d;
	n += d;
	for (uint32_t i = 0; i < w->port_count && n < max; i++) {
		uint32_t got = fs_ring_dequeue_burst(&w->ports[i].cmds, w->cmds + n, max - n);
		for (uint32_t k = 0; k < got; k++) {
			w->cmds[n + k].origin = (uint8_t)i;
			if (w->cmds[n + k].type == FS_CMD_SALE_OPEN)   /* an operator's `sale open` */
				wr_reveal_seed(w, &w->cmds[n + k]);
			if (w->cmds[n + k].type == FS_CMD_SALE_CREATE)   /* where a SKU enters a writer */
				assert(wr_owns_sku(&w->cfg, w->cmds[n + k].sku, w->cmds[n + k].sku_len));
		}
		n += got;
	}
	return n;
}

static void answer_now(struct writer *w, const struct fs_cmd *c, const struct fs_ans *a)
{
	assert(c->origin < w->port_count);
	uint32_t ok = fs_ring_enqueue_burst(&w->ports[c->origin].answers, a, 1);
	assert(ok == 1);   /* flow control: see fs_port.h */
	(void)ok;
	fs_wake(&w->ports[c->origin].producer);
}

/* admit: every command passes wr_admit() once (admission.c). Refused
 * commands are answered at once (not journaled: they change no sales
 * state) and removed from the batch; the rest keep their order, followed by
 * the risk flags admission raised (decided and journaled with the batch). */
static uint32_t admit(struct writer *w, uint32_t n, int64_t t_ms)
{
	struct wr_admission_batch b;
	int journal_full = wr_admission_batch(w->admission, &b, t_ms, jr_bytes(w->j),
	                                      atomic_load_explicit(&w->m.charges_outstanding, memory_order_relaxed));
	atomic_store_explicit(&w->snap->journal_full, (uint32_t)journal_full, memory_order_relaxed);
	uint32_t kept = 0;
	for (uint32_t i = 0; i < n; i++) {
		struct fs_cmd *c = &w->cmds[i];
		struct fs_ans refusal;
		if (c->type == FS_CMD_SALE_ARCHIVE && sinks_behind(w, c)) {
			refusal = (struct fs_ans){ .tag = c->tag, .http = 409, .err = FS_ERR_SINKS_BEHIND,
			                           .body = FS_BODY_ERROR };
		} else if (wr_admit(w->admission, &b, w->st, c, &refusal)) {
			if (kept != i)
				w->cmds[kept] = *c;
			kept++;
			continue;
		}
		atomic_fetch_add_explicit(&w->m.outcomes[c->type][refusal.err], 1, memory_order_relaxed);
		answer_now(w, c, &refusal);
	}
	assert(kept <= n && n <= w->cfg.batch_count_max);
	kept += wr_admission_flags(w->admission, w->cmds + kept, w->cfg.batch_count_max - kept);
	return kept;
}

/* Hands the batch's answers to their ports and its charges to the payment
 * thread. Pre: the batch is durable (make_durable ran). */
static void release(struct writer *w)
{
	assert(w->out.record_count == 0 || atomic_load(&w->m.durable_seq) == jr_last_seq(w->j));
	assert(w->out.answer_count <= w->out.answer_count_max);
	assert(w->out.charge_count + fs_ring_count(&w->charges) <= fs_ring_capacity(&w->charges));
	uint64_t woken[(WR_PORT_COUNT_MAX + 63) / 64] = { 0 };
	for (uint32_t i = 0; i < w->out.answer_count; i++) {
		const struct wr_answer *a = &w->out.answers[i];
		if (a->origin == WR_ORIGIN_NONE)
			continue;
		assert(a->origin < w->port_count);
		/* flow control (fs_port.h) guarantees room: never wait on a producer */
		uint32_t ok = fs_ring_enqueue_burst(&w->ports[a->origin].answers, &a->ans, 1);
		assert(ok == 1);
		(void)ok;
		woken[a->origin / 64] |= UINT64_C(1) << (a->origin % 64);
	}
	for (uint32_t i = 0; i < w->port_count; i++)
		if (woken[i / 64] & (UINT64_C(1) << (i % 64)))
			fs_wake(&w->ports[i].producer);
	for (uint32_t i = 0; i < w->out.charge_count; i++) {
		uint32_t ok = fs_ring_enqueue_burst(&w->charges, &w->out.charges[i], 1);
		assert(ok == 1);   /* admit() kept checkouts within the ring */
		(void)ok;
		atomic_fetch_add(&w->m.charges_outstanding, 1);
	}
	if (w->out.charge_count)
		fs_wake(&w->charge_waker);
}

static void account(struct writer *w, uint32_t n)
{
	struct wr_metrics *m = &w->m;
	atomic_fetch_add_explicit(&m->batches, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->commands, n, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->records, w->out.record_count, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->batch_hist[log2_bucket(n, WR_BATCH_BUCKETS)], 1, memory_order_relaxed);
	for (uint32_t i = 0; i < n; i++) {
		const struct fs_cmd *c = &w->cmds[i];
		atomic_fetch_add_explicit(&m->outcomes[c->type][c->err], 1, memory_order_relaxed);
		if (c->type == FS_CMD_RESERVE && c->out_sku != 0 && c->out_sku <= w->cfg.limits.sku_count_max &&
		    c->err != FS_ERR_EXISTS) {
			struct fs_snap_sku *k = &w->snap->skus[w->snap_of_sku[c->out_sku - 1]];
			atomic_fetch_add_explicit(c->err == FS_OK ? &k->granted : &k->refused, 1, memory_order_relaxed);
		}
	}
	publish_usage(w);
}

/* Appends the decided batch. 0 when durable (or nothing to journal), -1
 * (errno set) when the journal refused it: nothing of it was answered or
 * published, and it may be appended again as it is; -2 when it is on the
 * local disk but may not be acknowledged (replicated: fenced, or stopping
 * while the log was unreachable). */
static int make_durable(struct writer *w, int64_t t_ms)
{
	if (w->out.record_count == 0)
		return 0;
	uint64_t seq = jr_append(w->j, t_ms, w->out.record_count, w->out.records, w->out.records_len);
	if (seq == 0) {
		atomic_fetch_add_explicit(&w->m.journal_append_failures, 1, memory_order_relaxed);
		return -1;
	}
	uint64_t ns = jr_last_sync_ns(w->j);
	struct wr_metrics *m = &w->m;
	atomic_fetch_add_explicit(&m->fsync_ns_sum, ns, memory_order_relaxed);
	if (ns > atomic_load_explicit(&m->fsync_ns_max, memory_order_relaxed))
		atomic_store_explicit(&m->fsync_ns_max, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->fsync_hist[log2_bucket(ns / 1000, WR_FSYNC_BUCKETS)], 1, memory_order_relaxed);
	atomic_store_explicit(&m->journal_bytes, jr_bytes(w->j), memory_order_relaxed);
	atomic_store_explicit(&m->journal_prep_failures, jr_prep_failures(w->j), memory_order_relaxed);
	if (w->repl.ship != NULL) {
		int rc = w->repl.ship(w->repl.arg, jr_last_batch(w->j), JR_HEADER_BYTES + w->out.records_len, &w->stop);
		if (rc != 0) {
			if (rc == -1) {
				fprintf(stderr, "writer: fenced: a newer primary owns the log; answering 503 standby from now on\n");
				w->role = FS_ROLE_FENCED;
				atomic_store(&w->snap->role, FS_ROLE_FENCED);
			}
			return -2;
		}
	}
	atomic_store_explicit(&m->durable_seq, seq, memory_order_release);
	assert(jr_last_seq(w->j) == seq);
	if (w->on_durable)
		w->on_durable(w->on_durable_arg);
	return 0;
}

/* A batch that may not be acknowledged (fenced, or stopping while its
 * produce waited): every answer says 503 standby, no charge is handed
 * over (the next primary charges PENDING orders), nothing is published. */
static void refuse_batch(struct writer *w)
{
	for (uint32_t i = 0; i < w->out.answer_count; i++) {
		struct fs_ans *a = &w->out.answers[i].ans;
		uint64_t tag = a->tag;
		memset(a, 0, sizeof *a);
		a->tag = tag;
		a->http = 503;
		a->err = FS_ERR_STANDBY;
		a->body = FS_BODY_ERROR;
	}
	w->out.charge_count = 0;
	w->out.record_count = 0;   /* nothing of it is promised (release() checks) */
	if (!atomic_load(&w->stop))
		release(w);
}

void wr_on_durable(struct writer *w, void (*fn)(void *arg), void *arg)
{
	assert(!w->started);
	w->on_durable = fn;
	w->on_durable_arg = arg;
}

/* The batch's decisions are durable: publish them and answer. */
static void after_durable(struct writer *w, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++)
		if (w->cmds[i].type == FS_CMD_RESERVE && w->cmds[i].err == FS_OK)
			fs_snap_holder_set(w->snap, w->cmds[i].user, w->cmds[i].user_len);
	uint64_t seq = jr_last_seq(w->j);
	for (uint32_t i = 0; i < w->out.sku_touched_count; i++)
		w->sku_seq[w->out.sku_touched[i]] = seq;
	publish_batch_skus(w, &w->out, w->cmds, n);
	wr_publish_batch(&w->publisher, w->st, &w->out, w->cmds, n);   /* before release(): a 201 read back finds it */
	for (uint32_t i = 0; i < n; i++)
		if (w->cmds[i].type == FS_CMD_IP_RULE && w->cmds[i].err == FS_OK) {
			publish_ip_rules(w);
			break;
		}
	release(w);
	account(w, n);
}

/* The journal refused an append (errno says why): the first retry is due
 * soon, and the stall shows in the snapshot and the metrics. Shared by the
 * primary's held batch and the standby's held log batch. */
static void stall_mark(struct writer *w)
{
	w->stall_errno = errno;
	w->retry_ms = STALL_RETRY_MS_MIN;
	w->stall_start_ms = fs_mono_ms();
	w->retry_at_ms = w->stall_start_ms + w->retry_ms;
	atomic_store(&w->snap->journal_stalled, 1);
	atomic_store(&w->m.journal_stalled, 1);
	atomic_fetch_add(&w->m.journal_stalls, 1);
}

/* A retry failed too: the next one waits twice as long (20 ms .. 1 s); a
 * new reason is logged once. */
static void stall_backoff(struct writer *w, const char *who)
{
	w->retry_ms = w->retry_ms * 2 > STALL_RETRY_MS_MAX ? STALL_RETRY_MS_MAX : w->retry_ms * 2;
	w->retry_at_ms = fs_mono_ms() + w->retry_ms;
	if (errno != w->stall_errno) {
		w->stall_errno = errno;
		fprintf(stderr, "writer: %sjournal append still failing (%s)\n", who, strerror(errno));
	}
}

static void stall_unmark(struct writer *w)
{
	atomic_store(&w->snap->journal_stalled, 0);
	atomic_store(&w->m.journal_stalled, 0);
}

static void stall_begin(struct writer *w, uint32_t n, int64_t t_ms)
{
	assert(!w->stalled && n > 0);
	w->stalled = 1;
	w->held_n = n;
	w->held_t_ms = t_ms;
	stall_mark(w);
	fprintf(stderr, "writer: journal append failed (%s): the batch is held unanswered and retried; "
	        "commands get 503 until the journal takes writes again\n", strerror(w->stall_errno));
}

/* Answers every command waiting in the ports 503 (the journal cannot take
 * them), except payment results: those are kept for after the stall. */
static void stall_refuse(struct writer *w)
{
	for (uint32_t p = 0; p < w->port_count; p++) {
		for (;;) {
			/* a burst never holds more than the deferred buffer can take */
			uint32_t room = w->deferred_cap - w->deferred_count;
			struct fs_cmd cmds[32];
			uint32_t got = fs_ring_dequeue_burst(&w->ports[p].cmds, cmds, room < 32 ? room : 32);
			if (got == 0)
				break;
			for (uint32_t i = 0; i < got; i++) {
				struct fs_cmd *c = &cmds[i];
				c->origin = (uint8_t)p;
				if (c->type == FS_CMD_PAY_RESULT) {
					w->deferred[w->deferred_count++] = *c;
					continue;
				}
				struct fs_ans a = { .tag = c->tag, .http = 503, .body = FS_BODY_ERROR,
				                    .err = c->type == FS_CMD_CHECKOUT ? FS_ERR_FROZEN : FS_ERR_OVERLOADED };
				atomic_fetch_add_explicit(&w->m.outcomes[c->type][a.err], 1, memory_order_relaxed);
				atomic_fetch_add_explicit(&w->m.journal_stall_refused, 1, memory_order_relaxed);
				answer_now(w, c, &a);
			}
		}
	}
}

static int rings_empty(struct writer *w);

/* Sleeps until a producer kicks the eventfd or wait_ms pass (no sleep when
 * a ring already holds work, or wait_ms <= 0). The sleeping flag goes up
 * before the rings are checked, so a producer that enqueues after the
 * check sees it and kicks. */
static void sleep_until_kick(struct writer *w, int64_t wait_ms)
{
	atomic_store_explicit(&w->wake.sleeping, 1, memory_order_seq_cst);
	if (wait_ms > 0 && rings_empty(w) && !atomic_load(&w->stop)) {
		struct pollfd p = { .fd = w->wake.fd, .events = POLLIN };
		poll(&p, 1, wait_ms > INT32_MAX ? INT32_MAX : (int)wait_ms);
	}
	atomic_store_explicit(&w->wake.sleeping, 0, memory_order_seq_cst);
	uint64_t v;
	ssize_t r = read(w->wake.fd, &v, sizeof v);
	(void)r;
}

/* One round of a stall: refuse what waits, sleep until a producer kicks or
 * the next retry is due, retry the held batch when due. */
static void stall_step(struct writer *w)
{
	assert(w->stalled);
	stall_refuse(w);
	int64_t wait = w->retry_at_ms - fs_mono_ms();
	if (wait > 0) {
		sleep_until_kick(w, wait);
		return;
	}
	atomic_store(&w->m.journal_prep_failures, jr_prep_failures(w->j));
	int durable = make_durable(w, w->held_t_ms);
	if (durable == -2) {   /* appended, but not in the log: never acknowledged */
		w->stalled = 0;
		stall_unmark(w);
		refuse_batch(w);
		return;
	}
	if (durable != 0) {
		stall_backoff(w, "");
		return;
	}
	w->stalled = 0;
	stall_unmark(w);
	fprintf(stderr, "writer: the journal takes writes again after %lld ms; the held batch is durable "
	        "and answered\n", (long long)(fs_mono_ms() - w->stall_start_ms));
	after_durable(w, w->held_n);
}

/* One batch: admit -> decide -> journal -> publish -> release (or, when
 * the journal refuses the append, hold it: see the stall above). */
static void process_batch(struct writer *w, uint32_t n, int64_t t_ms)
{
	assert(n > 0 && n <= w->cfg.batch_count_max);
	assert(t_ms >= w->last_t_ms);   /* batch time never goes backwards (invariant 4) */
	assert(!w->stalled);
	n = admit(w, n, t_ms);
	if (n == 0)
		return;
	wr_decide(w->st, w->cmds, n, t_ms, 0, &w->out);
#ifdef FS_FAULTS
	uint32_t stall_ms = atomic_exchange(&fs_fault_writer_stall_ms, 0);
	if (stall_ms)
		usleep(stall_ms * 1000u);   /* test-only: a writer stuck inside a batch */
#endif
	/* invariant 3: nothing leaves before this */
	int durable = make_durable(w, t_ms);
	if (durable == -2) {
		refuse_batch(w);
		return;
	}
	if (durable != 0) {
		stall_begin(w, n, t_ms);
		return;
	}
	after_durable(w, n);
}

static int rings_empty(struct writer *w)
{
	for (uint32_t i = 0; i < w->port_count; i++)
		if (fs_ring_count(&w->ports[i].cmds) != 0)
			return 0;
	return 1;
}

/* Blocks until a producer kicks the eventfd or the next deadline passes. */
static void idle_wait(struct writer *w)
{
	int64_t next = wr_next_deadline(w->st);
	int64_t wait_ms = w->repl.tick ? (int64_t)w->repl.tick_every_ms : IDLE_WAIT_MS_MAX;
	if (next != INT64_MAX) {
		int64_t d = next - fs_wall_ms() + 1;
		wait_ms = d < 0 ? 0 : (d < wait_ms ? d : wait_ms);
	}
	sleep_until_kick(w, wait_ms);
}

/* ---- snapshots and segment retention -------------------------------------------- */

/* Asks the snapshotter (snapshotter.h) for a snapshot of the state after
 * the last durable batch. The writer only hands over a sequence number: the
 * snapshotter brings its own copy of the state up to it by replaying the
 * journal and writes that, so no page of the writer's tables is shared or
 * copied (a fork's copy-on-write faults stalled the batches after it for
 * seconds, perf/RESULTS.md). The stall metric times this hand-over. */
static void snapshot_start(struct writer *w)
{
	assert(!w->snap_busy && w->snapper != NULL);
	struct wr_snap_stamp stamp = { .seq = jr_last_seq(w->j), .time_ms = w->last_t_ms };
	jr_last_chain(w->j, stamp.chain);
	uint64_t t0 = mono_ns();
	int rc = wr_snapshotter_request(w->snapper, stamp.seq);
	uint64_t stall_us = (mono_ns() - t0) / 1000;
	if (stall_us > atomic_load(&w->m.snapshot_fork_us_max))
		atomic_store(&w->m.snapshot_fork_us_max, stall_us);
	assert(rc == 0);   /* never busy: the writer asks only after the last one was reported */
	w->snap_busy = 1;
	w->snap_pending = stamp;
	w->snap_started_ns = t0;
	w->snap_mark_bytes = jr_bytes_total(w->j);
}

/* Deletes (or archives) the segments wholly before the older kept snapshot
 * that every sink has consumed: a damaged newest snapshot still has the one
 * before it and its whole tail. */
static void segments_drop(struct writer *w, int64_t t_ms)
{
	if (w->snap_oldest_kept == 0 || t_ms < w->drop_next_ms)
		return;
	w->drop_next_ms = t_ms + 1000;
	uint64_t upto = w->snap_oldest_kept;
	uint64_t gate = w->segment_gate ? w->segment_gate(w->segment_gate_arg) : UINT64_MAX;
	atomic_store_explicit(&w->m.segments_held_by_sinks, gate < upto, memory_order_relaxed);
	if (gate < upto)
		upto = gate;
	if (upto <= jr_first_seq(w->j))
		return;
	int n = jr_drop_segments(w->j, upto, w->cfg.archive_dir);
	if (n < 0) {
		fprintf(stderr, "writer: cannot %s old journal segments: %s\n",
		        w->cfg.archive_dir ? "archive" : "delete", strerror(errno));
		w->drop_next_ms = t_ms + 60000;
		return;
	}
	if (n > 0) {
		atomic_fetch_add(&w->m.segments_dropped, (uint64_t)n);
		atomic_store(&w->m.journal_first_seq, jr_first_seq(w->j));
		atomic_store(&w->m.journal_bytes, jr_bytes(w->j));
	}
}

/* A snapshot the snapshotter finished: the newest durable one, older
 * ones pruned (or, failed, the previous one stays). */
static void snapshot_done(struct writer *w, const struct wr_snapshotter_result *res)
{
	int ok = res->ok;
	w->snap_busy = 0;
	if (ok) {
		assert(res->seq == w->snap_pending.seq);
		w->snap_seq = res->seq;
		w->snap_oldest_kept = wr_snapshot_prune(w->cfg.data_dir, WR_SNAP_KEEP);
		char path[PATH_MAX + 64];
		struct stat sb;
		wr_snapshot_path(path, sizeof path, w->cfg.data_dir, w->snap_seq);
		atomic_store(&w->m.snapshot_bytes, stat(path, &sb) == 0 ? (uint64_t)sb.st_size : 0);
		atomic_fetch_add(&w->m.snapshots, 1);
		atomic_store(&w->m.snapshot_seq, w->snap_seq);
		atomic_store(&w->m.snapshot_write_ms_last, (mono_ns() - w->snap_started_ns) / 1000000);
		w->drop_next_ms = 0;
	} else {
		fprintf(stderr, "writer: snapshot of batch %llu failed; the previous one stays\n",
		        (unsigned long long)w->snap_pending.seq);
		atomic_fetch_add(&w->m.snapshot_failures, 1);
	}
	atomic_store(&w->snap_result, ok ? (int64_t)w->snap_seq : -1);
	atomic_store(&w->snap_done, w->snap_req_taken);
}

/* Takes a finished snapshot's result, starts one when asked for or due,
 * and lets old segments go. Called between batches. */
static void snapshot_poll(struct writer *w, int64_t t_ms)
{
	struct wr_snapshotter_result res;
	if (w->snap_busy && !wr_snapshotter_poll(w->snapper, &res))
		goto drop;
	if (w->snap_busy)
		snapshot_done(w, &res);
	uint64_t req = atomic_load(&w->snap_req);
	/* Due every interval, busy or idle: taking one costs the writer a
	 * hand-over, not a stall, so restart time stays within an interval
	 * (plus the one being written) under endless load. */
	uint64_t since = jr_bytes_total(w->j) - w->snap_mark_bytes;
	int due = w->cfg.snapshot_every_bytes != 0 && since >= w->cfg.snapshot_every_bytes;
	if (req != w->snap_req_taken || due) {
		w->snap_req_taken = req;
		if (jr_last_seq(w->j) == w->snap_seq && w->snap_seq != 0) {
			/* nothing new since the last one: it is the answer */
			w->snap_mark_bytes = jr_bytes_total(w->j);
			atomic_store(&w->snap_result, (int64_t)w->snap_seq);
			atomic_store(&w->snap_done, req);
		} else {
			snapshot_start(w);
		}
	}
drop:
	segments_drop(w, t_ms);
}

int64_t wr_snapshot_now(struct writer *w, int timeout_ms, char *err, size_t err_len)
{
	uint64_t ticket = atomic_fetch_add(&w->snap_req, 1) + 1;
	uint64_t one = 1;
	ssize_t r = write(w->wake.fd, &one, sizeof one);
	(void)r;
	for (int waited = 0; waited <= timeout_ms; waited += 10) {
		if (atomic_load(&w->snap_done) >= ticket) {
			int64_t seq = atomic_load(&w->snap_result);
			if (seq < 0)
				snprintf(err, err_len, "the snapshot failed (see flashsaled's log)");
			return seq;
		}
		struct timespec ts = { 0, 10 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	snprintf(err, err_len, "no snapshot finished within %d ms", timeout_ms);
	return -1;
}

void wr_on_segment_gate(struct writer *w, uint64_t (*fn)(void *arg), void *arg)
{
	assert(!w->started);
	w->segment_gate = fn;
	w->segment_gate_arg = arg;
}

/* ---- standby: follow the log ------------------------------------------------- */

/* Every command that reaches a standby (or a fenced old primary) gets 503
 * standby; the dataplane answers most of them itself (snap->role). */
static void answer_standby(struct writer *w)
{
	struct fs_cmd c;
	for (uint32_t i = 0; i < w->port_count; i++)
		while (fs_ring_dequeue_burst(&w->ports[i].cmds, &c, 1) == 1) {
			struct fs_ans a = { .tag = c.tag, .http = 503, .err = FS_ERR_STANDBY, .body = FS_BODY_ERROR };
			c.origin = (uint8_t)i;
			answer_now(w, &c, &a);
		}
}

/* Applies one batch of the log: the local journal gets the same bytes
 * (fdatasync'd), then the decide step re-decides it through the replay
 * path, which checks it regenerates exactly the journaled records. */
static int apply_log_batch(struct writer *w, const struct jr_batch *b)
{
	struct replay_ctx *rc = w->follow_rc;
	if (b->seq != jr_last_seq(w->j) + 1) {
		snprintf(rc->err, rc->err_len, "log batch %llu does not follow local batch %llu",
		         (unsigned long long)b->seq, (unsigned long long)jr_last_seq(w->j));
		return -1;
	}
	uint64_t seq = jr_append(w->j, b->time_ms, b->record_count, b->body, b->body_len);
	if (seq == 0) {
		atomic_fetch_add_explicit(&w->m.journal_append_failures, 1, memory_order_relaxed);
		return -2;   /* nothing appended (journal.h): the same batch may be applied again */
	}
	if (memcmp(jr_last_batch(w->j), b->body - JR_HEADER_BYTES, JR_HEADER_BYTES) != 0) {
		snprintf(rc->err, rc->err_len, "log batch %llu: local header differs (chain broken)",
		         (unsigned long long)b->seq);
		return -1;
	}
	struct jr_batch local = *b;
	local.file = "kafka log";
	if (replay_batch(rc, &local) != 0)
		return -1;
	publish_batch_skus(w, &rc->out, rc->cmds, b->record_count < rc->cmd_cap ? b->record_count : rc->cmd_cap);
	wr_publish_batch(&w->publisher, w->st, &rc->out, rc->cmds,
	                 b->record_count < rc->cmd_cap ? b->record_count : rc->cmd_cap);
	for (uint32_t i = 0; i < b->record_count && i < rc->cmd_cap; i++)
		if (rc->cmds[i].type == FS_CMD_IP_RULE) {
			publish_ip_rules(w);
			break;
		}
	atomic_store_explicit(&w->m.journal_bytes, jr_bytes(w->j), memory_order_relaxed);
	atomic_fetch_add_explicit(&w->m.standby_batches, 1, memory_order_relaxed);
	return 0;
}

static void become_primary(struct writer *w)
{
	struct wr_usage u;
	wr_usage(w->st, &u);
	w->recharge_after = 0;
	w->recharge_max = u.orders;   /* PENDING orders: charged again (same key) */
	recharge(w);
	w->role = FS_ROLE_PRIMARY;
	atomic_store(&w->snap->role, FS_ROLE_PRIMARY);
}

/* A standby's local journal refused a log batch (a full disk, say): the
 * batch is held and applied again, with the primary's stall back-off,
 * until the journal takes it; the log is not read on meanwhile, so nothing
 * is skipped and the standby stays a consistent prefix of the log. A
 * promotion waits for the held batch (it is handled in the follow call). */
static void follow_hold(struct writer *w, const struct jr_batch *b)
{
	assert(!w->follow_holding);
	w->follow_held = *b;
	w->follow_holding = 1;
	stall_mark(w);
	fprintf(stderr, "writer: standby: journal append failed (%s): log batch %llu is held and applied again "
	        "until the journal takes writes\n", strerror(w->stall_errno), (unsigned long long)b->seq);
}

/* One round of a held log batch: wait for the retry time (a kick ends the
 * wait early: commands are answered 503 standby meanwhile), then apply it
 * again. 0 while it stays held, 1 once applied, -1 when it cannot be. */
static int follow_retry(struct writer *w)
{
	assert(w->follow_holding);
	int64_t wait = w->retry_at_ms - fs_mono_ms();
	if (wait > 0) {
		sleep_until_kick(w, wait);
		return 0;
	}
	int rc = apply_log_batch(w, &w->follow_held);
	if (rc == -2) {
		stall_backoff(w, "standby: ");
		return 0;
	}
	w->follow_holding = 0;
	stall_unmark(w);
	if (rc == 0)
		fprintf(stderr, "writer: standby: the journal takes writes again after %lld ms; following the log\n",
		        (long long)(fs_mono_ms() - w->stall_start_ms));
	return rc == 0 ? 1 : -1;
}

static void standby_round(struct writer *w)
{
	answer_standby(w);
	if (w->role == FS_ROLE_FENCED || w->repl.follow == NULL) {
		sleep_until_kick(w, 100);
		return;
	}
	struct jr_batch b;
	int rc;
	if (w->follow_holding) {
		rc = follow_retry(w);
		if (rc >= 0)
			return;   /* still held, or applied: the next round follows on */
	} else {
		rc = w->repl.follow(w->repl.arg, FOLLOW_WAIT_MS, &b);
		if (rc == 1) {
			int applied = apply_log_batch(w, &b);
			if (applied == -2) {
				follow_hold(w, &b);
				return;
			}
			if (applied != 0)
				rc = -1;
		}
	}
	if (rc == 2)
		become_primary(w);
	if (rc < 0) {
		fprintf(stderr, "writer: standby stops following the log: %s\n",
		        w->follow_rc->err[0] ? w->follow_rc->err : "see sale status");
		w->role = FS_ROLE_FENCED;   /* read-only from here on */
		atomic_store(&w->snap->role, FS_ROLE_FENCED);
	}
}

void wr_set_replication(struct writer *w, const struct wr_repl_ops *ops, int standby)
{
	assert(!w->started);
	w->repl = *ops;
	if (!standby)
		return;
	static char err[256];
	w->follow_rc = calloc(1, sizeof *w->follow_rc);
	assert(w->follow_rc != NULL);
	w->follow_rc->err = err;
	w->follow_rc->err_len = sizeof err;
	if (replay_ctx_init(w->follow_rc, w) != 0) {
		fprintf(stderr, "writer: out of memory for the standby's replay buffers\n");
		abort();
	}
	w->role = FS_ROLE_STANDBY;
	atomic_store(&w->snap->role, FS_ROLE_STANDBY);
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint32_t idle_rounds = 0;
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
		if (w->role != FS_ROLE_PRIMARY) {
			standby_round(w);
			continue;
		}
		if (w->stalled) {   /* before any snapshot: the held batch is not durable */
			stall_step(w);
			continue;
		}
		if (w->repl.tick && w->repl.tick(w->repl.arg, &w->stop) == -1) {
			fprintf(stderr, "writer: fenced: a newer primary owns the log; answering 503 standby from now on\n");
			w->role = FS_ROLE_FENCED;
			atomic_store(&w->snap->role, FS_ROLE_FENCED);
			continue;
		}
		snapshot_poll(w, fs_wall_ms());
		if (w->cfg.retention_ms > 0)   /* fairness buckets of clients gone for the retention */
			wr_admission_sweep(w->admission, fs_wall_ms(),
			                   w->cfg.retention_ms > 60000 ? (int64_t)w->cfg.retention_ms : 60000, 1024);
		int64_t t = fs_wall_ms();
		if (t < w->last_t_ms)
			t = w->last_t_ms;   /* batch time never goes backwards */
		uint32_t n = gather(w, t);
		if (n == 0) {
			/* back off: a few yields (cheap when load is bursty), then sleep */
			if (++idle_rounds < WR_IDLE_YIELDS)
				sched_yield();
			else
				idle_wait(w);
			continue;
		}
		idle_rounds = 0;
		w->last_t_ms = t;
		atomic_store_explicit(&w->snap->writer_busy_since_ms, fs_wall_ms(), memory_order_relaxed);
		process_batch(w, n, t);
		atomic_store_explicit(&w->snap->writer_busy_since_ms, 0, memory_order_relaxed);
		if (w->recharge_after < w->recharge_max)
			recharge(w);
	}
	return NULL;
}

int wr_start(struct writer *w, int cpu)
{
	if (pthread_create(&w->thread, NULL, writer_main, w) != 0)
		return -1;
	pthread_setname_np(w->thread, "fs-writer");
	if (cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(cpu, &set);
		pthread_setaffinity_np(w->thread, sizeof set, &set);
	}
	w->started = 1;
	return 0;
}

void wr_stop(struct writer *w)
{
	if (!w->started)
		return;
	atomic_store(&w->stop, 1);
	uint64_t one = 1;
	ssize_t r = write(w->wake.fd, &one, sizeof one);
	(void)r;
	pthread_join(w->thread, NULL);
	w->started = 0;
}

void wr_close(struct writer *w)
{
	if (w == NULL)
		return;
	wr_stop(w);
	while (w->snap_busy) {   /* a snapshot being written is finished and counted */
		struct wr_snapshotter_result res;
		if (wr_snapshotter_poll(w->snapper, &res))
			snapshot_done(w, &res);
		else
			usleep(1000);
	}
	wr_snapshotter_free(w->snapper);
	if (w->j)
		jr_close(w->j);
	if (w->follow_rc) {
		replay_ctx_free(w->follow_rc);
		free(w->follow_rc);
	}
	wr_state_free(w->st);
	wr_admission_free(w->admission);
	if (w->pub != NULL) {
		if (w->snap != NULL && w->snap->pub == w->pub)
			w->snap->pub = NULL;
		wr_publisher_free(&w->publisher);
		fs_pub_unmap(w->pub);
	}
	free(w->cmds);
	wr_batch_out_free(&w->out);
	free(w->deferred);
	/* the eventfds (found by tests/sim: every open/close leaked 2 + ports) */
	if (w->wake.fd >= 0)
		close(w->wake.fd);
	if (w->charge_waker.fd >= 0)
		close(w->charge_waker.fd);
	for (uint32_t i = w->cfg.producer_fd_count; i < w->port_count; i++)   /* the caller's stay open */
		if (w->ports[i].producer.fd >= 0)
			close(w->ports[i].producer.fd);
	if (w->mem && w->mem != MAP_FAILED)
		munmap(w->mem, w->mem_bytes);
	munmap(w, sizeof *w);
}
