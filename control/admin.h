/* admin.h - the operator surface inside flashsaled: a Unix socket (mode
 * 0600) and optionally a TCP port that requires the admin token. It speaks
 * HTTP/1.1 (one request per connection) and turns admin verbs into writer
 * commands on its own port, so every admin action is journaled like a
 * customer decision. GET /metrics serves Prometheus text.
 *
 *   POST /admin/sales/{sku}?stock=N&per_user=N&hold_ms=N&waitlist=N&default_tier=T&price_cents=N&opens_at_ms=N
 *   POST /admin/sales/{sku}/open|pause|freeze|resume|close
 *   POST /admin/sales/{sku}/stock?add=N|remove=N  (remove: only from available; journaled
 *                                    with the admin identity, "uid:N" or "admin-token")
 *   GET  /admin/sales/{sku}          counters, state, rates, sink lag
 *   POST /admin/drain                /readyz answers 503 from now on
 *   POST /admin/snapshot             a snapshot now: {"seq":N}
 *   POST /admin/backup?dir=DIR       a verified copy (backup.h): {"snapshot_seq","last_seq"}
 *                                    (writer shards: DIR/shard-K each, and "shards":[...])
 *   POST /admin/promote              a standby fences the old primary and becomes the primary
 *   GET  /admin/replication          role, epoch, lag, fencing state (--replicate)
 *   GET  /metrics
 */
#ifndef CTL_ADMIN_H
#define CTL_ADMIN_H

#include <stdatomic.h>
#include <stdint.h>
#include "common/fs_port.h"
#include "common/fs_shard.h"
#include "common/fs_snapshot.h"
#include "common/fs_shard.h"

struct writer;
struct dp_backend;
struct payments;
struct rp_stats;

struct ctl_admin_config {
	const char *unix_path;          /* NULL: none */
	const char *tcp_host;           /* NULL: none */
	uint16_t tcp_port;
	const char *admin_token;        /* required on TCP */
	const char *admin_token_name;   /* its name in the journal ("token:NAME"): the file's base name */
	struct writer *writer;
	struct fs_port *port;           /* the admin's port to the writer */
	struct fs_snapshot *snap;
	const struct dp_backend *dataplane;   /* its HTTP counters, whichever backend runs */
	const struct payments *payments;      /* its counters (pay_stats_get), or NULL */
	_Atomic int *ready;
	const char *data_dir;           /* draw seed files live under it */
	uint32_t sink_count;
	const char *const *sink_names;
	uint64_t (*sink_applied)(void *sink);   /* applied sequence of sink i */
	int (*sink_stopped)(void *sink);        /* 1 when sink i stopped at a batch its target rejects */
	uint64_t (*sink_lag_ms)(void *sink);    /* how long its oldest batch not applied is durable; NULL: not reported */
	void **sinks;
	const uint32_t *sink_shards;            /* writer shard whose journal sink i reads (NULL: shard 0) */
	int (*sink_connected)(void *sink, uint64_t *errors);   /* 1 while open; NULL: not reported */
	int (*sink_model_seq)(void *sink, uint64_t *seq);     /* 1 when sink i keeps a model (Kafka, Redis),
	                                                        * *seq its checkpoint's; NULL: not reported */
	/* writer shards (flashsaled --writers N): shard k's writer, admin port,
	 * snapshot, payments and directory; [0] repeats writer, port, snap,
	 * payments and data_dir. writer_count 0: one writer, the fields above.
	 * Verbs about one SKU go to its owner (fs_shard_writer_of with
	 * shard_map); status, metrics, snapshot, backup, IP rules and tiers
	 * fan out to every shard. */
	uint32_t writer_count;
	struct writer *writers[FS_SHARD_WRITERS_MAX];
	struct fs_port *ports[FS_SHARD_WRITERS_MAX];
	struct fs_snapshot *snaps[FS_SHARD_WRITERS_MAX];
	const struct payments *payments_of[FS_SHARD_WRITERS_MAX];
	const char *shard_dirs[FS_SHARD_WRITERS_MAX];
	const struct fs_shard_map *shard_map;
	void *repl;                                          /* NULL without --replicate */
	void (*repl_stats)(void *repl, struct rp_stats *out);
	void (*repl_promote)(void *repl);
	const struct fs_shard_map *shards;   /* --shard-map with appliances; NULL: every SKU is ours */
	uint32_t appliance;                  /* this box's index in shards */
	const char *shard_name;              /* --shard NAME, or NULL */
};

struct ctl_admin;

/* Binds the sockets and starts the admin thread; NULL with a reason in err. */
struct ctl_admin *ctl_admin_start(const struct ctl_admin_config *cfg, char *err, size_t err_len);
void ctl_admin_stop(struct ctl_admin *a);

/* Sends one command through the admin port and waits (bounded) for its
 * answer. For start-up (the demo sale) and the admin thread itself.
 * Returns 0 with *ans filled, -1 on timeout, -2 when the ring is full
 * (the command was not sent). */
int ctl_admin_call(struct fs_port *port, struct fs_cmd *cmd, struct fs_ans *ans, int timeout_ms);

#endif
