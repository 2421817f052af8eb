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
 */
#include "writer/writer.h"
#include "common/fs_clock.h"
#include "common/fs_fault.h"
#include "common/fs_cidr.h"
#include "writer/admission.h"
#include "writer/draw.h"
#include "writer/journal.h"
#include "writer/record.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#define IDLE_WAIT_MS_MAX 1000
#ifndef WR_IDLE_YIELDS
#define WR_IDLE_YIELDS 16   /* yields before an idle writer sleeps */
#endif

struct writer {
	struct wr_config cfg;
	struct wr_state *st;
	struct journal *j;
	struct fs_snapshot *snap;
	uint16_t snap_of_sku[FS_SNAP_SKU_MAX];   /* writer SKU index -> snapshot index (publish_sku) */
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
	_Atomic uint32_t usage[5];
};

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
	rc->w->last_t_ms = b->time_ms;
	atomic_fetch_add(&rc->w->m.replayed_batches, 1);
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
	struct fs_sku_read r = { v.total, v.available, v.reserved, v.sold, v.version, v.state, v.waitlist_open,
	                         v.waitlist_count, v.queued };
	int rc = fs_snap_publish(w->snap, v.name, v.name_len, &r);
	assert(rc >= 0 && idx < w->cfg.limits.sku_count_max);
	w->snap_of_sku[idx] = (uint16_t)rc;
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
		pt->producer.fd = eventfd_new();
		pt->writer = &w->wake;
		if (pt->producer.fd < 0)
			return -1;
	}
	fs_ring_init(&w->charges, p, c->charge_slots, sizeof(struct wr_charge));
	w->cmds = calloc(c->batch_count_max, sizeof *w->cmds);
	uint32_t records_cap = wr_batch_records_cap(c->batch_count_max, c->limits.sku_count_max);
	if (!w->cmds || wr_batch_out_alloc(&w->out, c->batch_count_max, records_cap, c->limits.sku_count_max) != 0)
		return -1;
	assert(w->out.records_cap <= JR_BODY_BYTES_MAX);
	return 0;
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
	snprintf(w->journal_dir, sizeof w->journal_dir, "%s/journal", cfg->data_dir);
	w->st = wr_state_new(&cfg->limits);
	struct wr_admission_config ac = {
		.user_count_max = cfg->limits.user_count_max, .journal_budget_bytes = cfg->journal_budget_bytes,
		.charge_capacity = cfg->charge_slots, .ip_rate_per_min = cfg->ip_rate_per_min,
		.risk_regular_streak = cfg->risk_regular_streak, .risk_device_users = cfg->risk_device_users,
		.risk_ip_users = cfg->risk_ip_users,
	};
	w->admission = wr_admission_new(&ac, &w->m.risk_flags);
	if (w->st == NULL || alloc_buffers(w) != 0 || w->admission == NULL) {
		snprintf(err, err_len, "cannot reserve memory for the tables (%llu bytes)",
		         (unsigned long long)wr_state_bytes(&cfg->limits));
		wr_close(w);
		return NULL;
	}
	if (!cfg->no_prefault) {   /* before replay: the first decision must not fault */
		struct timespec t0, t1;
		clock_gettime(CLOCK_MONOTONIC, &t0);
		wr_state_prefault(w->st);
		wr_admission_prefault(w->admission);
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
	char jerr[512];
	w->j = jr_open(&jc, replay_batch, &rc, jerr, sizeof jerr);
	replay_ctx_free(&rc);
	if (w->j == NULL) {
		if (err[0] == 0)
			snprintf(err, err_len, "%s", jerr);
		wr_close(w);
		return NULL;
	}
	for (uint32_t i = 0; i < wr_sku_count(w->st); i++)
		publish_sku(w, i);
	publish_ip_rules(w);
	/* orders PENDING at the last stop: charge again with the same idempotency
	 * key (the ring takes what fits now; the loop hands over the rest) */
	struct wr_usage u;
	wr_usage(w->st, &u);
	w->recharge_max = u.orders;
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
}

void wr_print_budget(const struct wr_config *c)
{
	const struct wr_limits *l = &c->limits;
	double mib = 1024.0 * 1024.0;
	printf("flashsaled: writer tables (fixed at start-up): skus %u, users %u, reservations %u, "
	       "orders %u, idempotency keys %u, holdings %u: %.0f MiB reserved\n",
	       l->sku_count_max, l->user_count_max, l->reservation_count_max, l->order_count_max,
	       l->idem_count_max, l->holding_count_max, (double)wr_state_bytes(l) / mib);
	printf("flashsaled: rings: %u ports x %u slots x 2 (%.1f MiB), batch <= %u commands, "
	       "journal segments %.0f MiB\n", c->port_count, c->ring_slots,
	       (double)c->port_count * c->ring_slots * (sizeof(struct fs_cmd) + sizeof(struct fs_ans)) / mib,
	       c->batch_count_max, (double)c->segment_bytes / mib);
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

/* Gathers due timers, then every port's commands, up to batch_count_max. */
static uint32_t gather(struct writer *w, int64_t t_ms)
{
	uint32_t max = w->cfg.batch_count_max;
	uint32_t n = wr_due(w->st, t_ms, w->cmds, max / 8);
	reveal_seeds(w, n);
	for (uint32_t i = 0; i < w->port_count && n < max; i++) {
		uint32_t got = fs_ring_dequeue_burst(&w->ports[i].cmds, w->cmds + n, max - n);
		for (uint32_t k = 0; k < got; k++) {
			w->cmds[n + k].origin = (uint8_t)i;
			if (w->cmds[n + k].type == FS_CMD_SALE_OPEN)   /* an operator's `sale open` */
				wr_reveal_seed(w, &w->cmds[n + k]);
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
		if (wr_admit(w->admission, &b, w->st, c, &refusal)) {
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
	struct wr_usage u;
	wr_usage(w->st, &u);
	atomic_store_explicit(&w->usage[0], u.users, memory_order_relaxed);
	atomic_store_explicit(&w->usage[1], u.reservations, memory_order_relaxed);
	atomic_store_explicit(&w->usage[2], u.orders, memory_order_relaxed);
	atomic_store_explicit(&w->usage[3], u.idem_keys, memory_order_relaxed);
	atomic_store_explicit(&w->usage[4], u.holdings, memory_order_relaxed);
}

static void make_durable(struct writer *w, int64_t t_ms)
{
	if (w->out.record_count == 0)
		return;
	uint64_t seq = jr_append(w->j, t_ms, w->out.record_count, w->out.records, w->out.records_len);
	if (seq == 0) {
		/* Nothing of this batch was answered: stopping loses no promise. */
		fprintf(stderr, "writer: journal append failed (%s): stopping before answering\n",
		        strerror(errno));
		abort();
	}
	uint64_t ns = jr_last_sync_ns(w->j);
	struct wr_metrics *m = &w->m;
	atomic_fetch_add_explicit(&m->fsync_ns_sum, ns, memory_order_relaxed);
	if (ns > atomic_load_explicit(&m->fsync_ns_max, memory_order_relaxed))
		atomic_store_explicit(&m->fsync_ns_max, ns, memory_order_relaxed);
	atomic_fetch_add_explicit(&m->fsync_hist[log2_bucket(ns / 1000, WR_FSYNC_BUCKETS)], 1, memory_order_relaxed);
	atomic_store_explicit(&m->journal_bytes, jr_bytes(w->j), memory_order_relaxed);
	atomic_store_explicit(&m->durable_seq, seq, memory_order_release);
	assert(jr_last_seq(w->j) == seq);
	if (w->on_durable)
		w->on_durable(w->on_durable_arg);
}

void wr_on_durable(struct writer *w, void (*fn)(void *arg), void *arg)
{
	assert(!w->started);
	w->on_durable = fn;
	w->on_durable_arg = arg;
}

/* One batch: admit -> decide -> journal -> publish -> release. */
static void process_batch(struct writer *w, uint32_t n, int64_t t_ms)
{
	assert(n > 0 && n <= w->cfg.batch_count_max);
	assert(t_ms >= w->last_t_ms);   /* batch time never goes backwards (invariant 4) */
	n = admit(w, n, t_ms);
	if (n == 0)
		return;
	wr_decide(w->st, w->cmds, n, t_ms, 0, &w->out);
#ifdef FS_FAULTS
	uint32_t stall_ms = atomic_exchange(&fs_fault_writer_stall_ms, 0);
	if (stall_ms)
		usleep(stall_ms * 1000u);   /* test-only: a writer stuck inside a batch */
#endif
	make_durable(w, t_ms);   /* invariant 3: nothing leaves before this */
	for (uint32_t i = 0; i < n; i++)
		if (w->cmds[i].type == FS_CMD_RESERVE && w->cmds[i].err == FS_OK)
			fs_snap_holder_set(w->snap, w->cmds[i].user, w->cmds[i].user_len);
	for (uint32_t i = 0; i < w->out.sku_touched_count; i++)
		publish_sku(w, w->out.sku_touched[i]);
	for (uint32_t i = 0; i < n; i++)
		if (w->cmds[i].type == FS_CMD_IP_RULE && w->cmds[i].err == FS_OK) {
			publish_ip_rules(w);
			break;
		}
	release(w);
	account(w, n);
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
	atomic_store_explicit(&w->wake.sleeping, 1, memory_order_seq_cst);
	if (rings_empty(w) && !atomic_load(&w->stop)) {
		int64_t next = wr_next_deadline(w->st);
		int64_t wait_ms = IDLE_WAIT_MS_MAX;
		if (next != INT64_MAX) {
			int64_t d = next - fs_wall_ms() + 1;
			wait_ms = d < 0 ? 0 : (d < wait_ms ? d : wait_ms);
		}
		struct pollfd p = { .fd = w->wake.fd, .events = POLLIN };
		if (wait_ms > 0)
			poll(&p, 1, (int)wait_ms);
	}
	atomic_store_explicit(&w->wake.sleeping, 0, memory_order_seq_cst);
	uint64_t v;
	ssize_t r = read(w->wake.fd, &v, sizeof v);
	(void)r;
}

static void *writer_main(void *arg)
{
	struct writer *w = arg;
	uint32_t idle_rounds = 0;
	while (!atomic_load_explicit(&w->stop, memory_order_relaxed)) {
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
	if (w->j)
		jr_close(w->j);
	wr_state_free(w->st);
	wr_admission_free(w->admission);
	free(w->cmds);
	wr_batch_out_free(&w->out);
	if (w->mem && w->mem != MAP_FAILED)
		munmap(w->mem, w->mem_bytes);
	munmap(w, sizeof *w);
}
