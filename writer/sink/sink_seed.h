/* sink_seed.h - a sink's model (struct sink_model) from the writer's
 * newest snapshot, for a sink that has no usable model checkpoint of its
 * own (sink_ckpt.h) when the journal no longer starts at batch 1: a Kafka or
 * Redis sink added to an appliance that has been deleting segments, a
 * checkpoint lost or damaged, a data dir restored without one. Without it
 * such a sink could never start again: the batches its model would be
 * rebuilt from are gone.
 *
 * The seed holds what those sinks use of the model (sink.h): every SKU in
 * the writer's order (so SKU indexes match), its stored state, counters and
 * the "version" GET shows; the live reservations (not finished: what a
 * model with keep_terminal 0 keeps) with SKU, quantity, status, deadline and
 * order; the PENDING orders. Not what only flashsale-reconcile compares
 * (created_seq, amounts, paid_at): reconcile replays its own model. The
 * batch loads of the snapshot cost a second writer state for a moment
 * (the snapshot's own limits), once per seeding.
 */
#ifndef WR_SINK_SEED_H
#define WR_SINK_SEED_H

#include <stddef.h>
#include <stdint.h>
#include "writer/sink/sink_model.h"

/* Seeds *m (initialised here with keep_terminal 0) from the newest snapshot
 * in DATA_DIR/snapshots whose batch lies in [from_seq, to_seq] and that
 * verifies. Returns 1 seeded (m->last_seq = its batch), 0 none fits, -1 a
 * fitting one failed to load (err says why), -2 out of memory. Unless it
 * returns 1, *m is left freed (zeroed). */
int sink_seed_from_snapshot(const char *data_dir, uint64_t from_seq, uint64_t to_seq, struct sink_model *m,
                            char *err, size_t err_len);

#endif
