/* snapshotter.h - the snapshot writer: a thread of its own that keeps a
 * SECOND copy of the writer's state, brought up to date by replaying the
 * durable journal through the decide step, and writes that copy as a
 * snapshot (snapshot.h) when the writer asks.
 *
 * Why a replaying copy and not fork(): a fork shares the tables copy-on-
 * write, so every page the writer touches while the child writes costs a
 * fault that allocates and copies a fresh page; on the 2-core VM the first
 * batch after a fork took 1-8 s (perf/RESULTS.md, "Lifetime"). Here the
 * writer only hands over a sequence number: it never stops, never faults
 * and never shares a page with the snapshot. The price is a second copy of
 * the tables (wr_state_bytes() more address space, touched as it fills)
 * and the CPU of replaying each batch once more (the decide step alone,
 * about 0.1-1 us per decision), done only when a snapshot is due.
 *
 * The copy is exact because replay is (ARCHITECTURE.md invariant 4): each
 * replayed batch must regenerate the journaled bytes, or the snapshotter
 * stops for good with the batch's file and offset in its log line and every
 * later request fails (start-up would refuse the same journal).
 */
#ifndef WR_SNAPSHOTTER_H
#define WR_SNAPSHOTTER_H

#include <stddef.h>
#include <stdint.h>
#include "writer/alloc.h"

struct wr_snapshotter_config {
	const char *data_dir;        /* snapshots go to data_dir/snapshots */
	const char *journal_dir;
	struct wr_limits limits;     /* the writer's */
	uint64_t base_seq;           /* the snapshot the writer started from (0: the journal's start) */
	uint32_t pace_us;            /* tests only: wr_snapshot_write's pacing */
};

struct wr_snapshotter;

/* Reserves the second state and the replay buffers and starts the thread
 * (idle until asked). Returns NULL with a reason in err. */
struct wr_snapshotter *wr_snapshotter_new(const struct wr_snapshotter_config *cfg, char *err, size_t err_len);

/* Asks for a snapshot of the state after batch `seq` (durable already; 0
 * for an empty journal).
 * Never blocks on the work. Returns 0, or -1 when one is still running. */
int wr_snapshotter_request(struct wr_snapshotter *s, uint64_t seq);

struct wr_snapshotter_result {
	int      ok;
	uint64_t seq;                /* the snapshot's batch */
	uint64_t replay_ms;          /* catching up on the journal */
	uint64_t write_ms;           /* writing the file */
	uint64_t batches;            /* batches replayed for it */
};
/* 1 with *r filled when the request finished since the last call, else 0. */
int wr_snapshotter_poll(struct wr_snapshotter *s, struct wr_snapshotter_result *r);

/* Stops the thread (a snapshot being written is finished first) and frees
 * everything. NULL is fine. */
void wr_snapshotter_free(struct wr_snapshotter *s);

#endif
