/* writer.h - the writer thread: drain the producers' rings, decide the
 * batch, append it to the journal (one write + fdatasync), publish the
 * snapshot, and only then release the answers (invariant 3).
 */
#ifndef WR_WRITER_H
#define WR_WRITER_H

#include <stdatomic.h>
#include <stdint.h>
#include "common/fs_port.h"
#include "common/fs_snapshot.h"
#include "writer/alloc.h"
#include "common/fs_shard.h"

#define WR_BATCH_COUNT_MAX  8192u
#define WR_PORT_COUNT_MAX   64u
#define WR_FSYNC_BUCKETS    20        /* 2^i microseconds, i = 0..19 */
#define WR_BATCH_BUCKETS    14        /* 2^i commands, i = 0..13 */

struct writer;

struct wr_config {
	const char *data_dir;             /* the journal lives in data_dir/journal */
	struct wr_limits limits;
	uint32_t batch_count_max;         /* <= WR_BATCH_COUNT_MAX */
	uint32_t port_count;              /* producers (workers, admin, payments) */
	uint32_t ring_slots;              /* per port and direction, power of two */
	uint64_t segment_bytes;
	uint64_t journal_budget_bytes;    /* 0 = unlimited; past it reservations get 503 */
	uint32_t charge_slots;            /* payments in flight, power of two */
	int      no_sync;                 /* benchmarks only */
	int      no_prefault;             /* leave the tables to fault in on first use (tests) */
	int      quiet;
	uint32_t ip_rate_per_min;         /* per-IP bucket for untrusted clients; 0 = off (default) */
	uint32_t risk_regular_streak;     /* gaps in a row within 2 ms that flag a client (default 8) */
	uint32_t risk_device_users;       /* users on one device id before it flags (default 4) */
	uint32_t risk_ip_users;           /* users from one untrusted IP before it flags (default 50) */
	/* lifetime (snapshot.h): a snapshot every this many journal bytes
	 * (0 = only on request); journal segments before the older kept
	 * snapshot and consumed by every sink are deleted, or moved to
	 * archive_dir when it is set */
	uint64_t snapshot_every_bytes;
	const char *archive_dir;
	uint32_t snapshot_pace_us;        /* tests only: slow snapshot writing down (see snapshot.h) */
	uint64_t retention_ms;            /* ended reservations/orders/keys kept this long (0 = forever) */
	/* Called by wr_open once the ports exist, before the tables are faulted
	 * in and the journal is replayed: the dataplane starts here and answers
	 * (503 recovering) while the rest of wr_open runs. NULL: nothing. */
	void (*before_replay)(void *arg, struct writer *w);
	void *before_replay_arg;
	uint32_t replay_pace_us;          /* tests only: each replayed batch takes this much longer */
	/* writer shards (flashsaled --writers N): this writer is shard
	 * shard_index of shard_count and owns exactly the SKUs
	 * fs_shard_writer_of(shard_map, sku, shard_count) gives it; a sale
	 * created for any other SKU is a routing bug (asserted: one SKU, one
	 * writer). shard_count 0 or 1: it owns every SKU. */
	uint32_t shard_index, shard_count;
	const struct fs_shard_map *shard_map;
	/* port i's producer eventfd is producer_fds[i] for i < producer_fd_count
	 * (the caller's, never closed here: every shard of a box wakes a
	 * worker through one fd, so the worker sleeps on one); the rest are
	 * made here. */
	const int *producer_fds;
	uint32_t producer_fd_count;
};

struct wr_metrics {
	_Atomic uint64_t batches, commands, records, journal_bytes, durable_seq;
	_Atomic uint64_t fsync_ns_sum, fsync_ns_max;
	_Atomic uint64_t fsync_hist[WR_FSYNC_BUCKETS];
	_Atomic uint64_t batch_hist[WR_BATCH_BUCKETS];
	_Atomic uint64_t outcomes[FS_CMD_TYPE_COUNT][FS_ERR_COUNT];
	_Atomic uint64_t charges_outstanding;
	uint64_t tables_fault_ms;     /* start-up: faulting every table in took this long (0: --no-prefault) */
	_Atomic uint64_t replayed_batches;
	_Atomic uint64_t risk_flags;
	/* lifetime */
	_Atomic uint64_t snapshots, snapshot_failures, snapshot_seq, snapshot_bytes;
	_Atomic uint64_t snapshot_fork_us_max, snapshot_write_ms_last;
	_Atomic uint64_t segments_dropped, journal_first_seq, segments_held_by_sinks;
	_Atomic uint64_t startup_snapshot_ms, startup_tail_ms;
	/* the journal refused an append (disk full, I/O error): the batch is
	 * held, unanswered, and retried; commands meanwhile get 503 */
	_Atomic uint64_t journal_append_failures;   /* failed attempts, retries included */
	_Atomic uint64_t journal_stalls;            /* episodes */
	_Atomic uint64_t journal_stalled;           /* 1 while one lasts */
	_Atomic uint64_t journal_stall_refused;     /* commands answered 503 during stalls */
	_Atomic uint64_t journal_prep_failures;     /* the segment preparer could not make one */
	_Atomic uint64_t standby_batches;    /* log batches applied as a standby */
};

struct writer;
struct jr_batch;

/* Replication (writer/replicate.h) as the writer sees it. ship: after the
 * local fdatasync of a batch (bytes = header + body as journaled), blocks
 * until the batch counts in the log; 0 = yes, -1 = this node is fenced
 * (the batch is answered 503 standby, never acknowledged), -2 = *stop was
 * set first. follow: a standby's next batch of the log (b->body is
 * preceded by its 64-byte header); 1 = *b filled, 0 = none within wait_ms,
 * 2 = promoted (this node is the primary now), -1 = cannot follow. */
struct wr_repl_ops {
	int (*ship)(void *arg, const uint8_t *batch, uint32_t len, const _Atomic int *stop);
	int (*follow)(void *arg, int wait_ms, struct jr_batch *b);
	/* primary, every loop and at least every tick_every_ms when idle:
	 * heartbeats; -1 = this node is fenced */
	int (*tick)(void *arg, const _Atomic int *stop);
	uint32_t tick_every_ms;
	void *arg;
};

/* Opens the journal under cfg->data_dir, replays it into a fresh state
 * (verifying every regenerated record against the journal), publishes the
 * snapshot, and prepares the ports. Returns NULL with a one-line reason in
 * err (journal damage names the file and offset). */
struct writer *wr_open(const struct wr_config *cfg, struct fs_snapshot *snap, char *err, size_t err_len);

struct fs_port *wr_port(struct writer *w, uint32_t i);

/* The ring of charges for the payment thread (struct wr_charge slots) and
 * the waker of its consumer. */
struct fs_ring *wr_charge_ring(struct writer *w);
struct fs_waker *wr_charge_waker(struct writer *w);

/* Called on the writer thread after each durable batch (for the sinks:
 * must not block). Set before wr_start. */
void wr_on_durable(struct writer *w, void (*fn)(void *arg), void *arg);

/* Writer thread only: fills an opening's text with the sale's draw seed
 * when the sale has an undrawn waiting room (0), -1 when the seed file is
 * missing or wrong (the decide step will then refuse the opening). */
int wr_reveal_seed(struct writer *w, struct fs_cmd *c);

/* Before wr_start: every batch is shipped through ops (primary), or the
 * writer follows the log and takes no writes (standby = 1) until promoted. */
void wr_set_replication(struct writer *w, const struct wr_repl_ops *ops, int standby);

/* Starts the writer thread (pinned to cpu when cpu >= 0). Returns 0 or -1. */
int wr_start(struct writer *w, int cpu);
/* Asks the thread to finish the batch in hand and stop; joins it. */
void wr_stop(struct writer *w);
void wr_close(struct writer *w);

/* The lowest journal sequence every sink has consumed (UINT64_MAX when
 * there is no sink; 0 when one must keep everything, e.g. it rebuilds its
 * projection from batch 1): segments after it are never deleted. Called on
 * the writer thread; must not block. Set before wr_start. */
void wr_on_segment_gate(struct writer *w, uint64_t (*fn)(void *arg), void *arg);

/* Takes a snapshot now (any thread but the writer's): waits up to
 * timeout_ms for a snapshot started after this call to be durable.
 * Returns its journal sequence (>= 0), or -1 with the reason in err. */
int64_t wr_snapshot_now(struct writer *w, int timeout_ms, char *err, size_t err_len);

const struct wr_metrics *wr_metrics(const struct writer *w);
/* The durable sequence (sinks never read past it). */
const _Atomic uint64_t *wr_durable_seq(const struct writer *w);
void wr_print_budget(const struct wr_config *cfg);
/* Bytes of the published reservations and orders (common/fs_pub.h) for l. */
uint64_t wr_pub_bytes(const struct wr_limits *l);
const char *wr_journal_dir(const struct writer *w);
/* 1 when writer shard cfg owns the SKU (always with one shard). Pure. */
int wr_owns_sku(const struct wr_config *cfg, const char *sku, size_t len);
/* Usage of the fixed tables (approximate while running). */
void wr_table_usage(const struct writer *w, struct wr_usage *u);

#endif
