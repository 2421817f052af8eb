/* sink.h - sinks: projections (PostgreSQL, Kafka, Redis) that tail the
 * durable journal on their own thread, never on the writer's hot path.
 *
 * One generic thread per sink (sink.c) reads batches with jr_reader, never
 * past the writer's durable sequence, decodes them, and hands each batch to
 * the sink's ops. A failed batch is retried as is after a backoff (100 ms
 * doubling to 5 s); when caught up the thread sleeps 1..10 ms or until the
 * writer pokes it with sink_notify(). The writer never waits for a sink:
 * its only costs are an atomic store of its durable sequence and, if it
 * wants low sink latency, sink_notify() (one atomic load, and a write(2) on
 * an eventfd only when the sink thread is asleep).
 *
 * Cursors: each sink reports the last sequence that is durable on ITS side
 * (committed in PostgreSQL, acknowledged by all Kafka brokers and written to
 * its cursor file, published to Redis); on (re)start it resumes right after
 * it. Applying is idempotent by sequence, so a restart may re-send a batch
 * but never skips one.
 *
 * Models: a backend that wants the projection (Kafka, Redis) gets it from
 * the thread, which folds every batch into a struct sink_model. The thread
 * checkpoints that model (sink_ckpt.h: `<data_dir>/sink-<kind>-<name>.model`)
 * at most every SINK_CKPT_EVERY_MS when it moved, and only at a batch the
 * backend's cursor has passed (a state-only backend, `resume` set, needs no
 * cursor); at (re)open it starts from the checkpoint and reads the journal
 * after it. So the journal up to the checkpoint is not needed again
 * (sink_gate_seq) and the writer may delete it. Without a valid checkpoint
 * the model is rebuilt from batch 1; when batch 1 is gone the sink says so
 * and retries, never delivering from a model that missed batches.
 */
#ifndef WR_SINK_H
#define WR_SINK_H

#include <stddef.h>
#include <stdint.h>
#include "common/fs_cmd.h"
#include "writer/journal.h"
#include "writer/sink/sink_model.h"

enum sink_kind { SINK_POSTGRES = 1, SINK_KAFKA = 2, SINK_REDIS = 3 };

struct sink_config {
	enum sink_kind kind;
	const char *journal_dir;                 /* the writer's journal directory */
	const _Atomic uint64_t *durable_seq;     /* the writer's last fdatasync'd seq; never read past */
	const char *address;                     /* libpq conninfo | Kafka bootstrap brokers | Redis host:port */
	const char *name;                        /* cursor name (PostgreSQL row, Kafka cursor file); default "sink" */
	const char *topic;                       /* Kafka topic; default "flashsale.journal" */
	const char *data_dir;                    /* Kafka: its cursor file; Kafka, Redis: the model checkpoint
	                                          * (sink_ckpt.h); default journal_dir */
	uint32_t redis_updates_per_s;            /* Redis: per-SKU rate limit; default 100 */
	uint32_t redis_ttl_s;                    /* Redis: key TTL; default 5 */
	const char *shard;                       /* PostgreSQL: the rows' shard column (fs_shard_sink_name's
	                                          * label); NULL: "" (one box, one writer) */
	uint32_t appliance;                      /* PostgreSQL: ids written as this appliance's ... */
	uint32_t writer;                         /* ... and this writer shard's (fs_shard.h) */
};

/* Return codes of sink_ops.apply_batch. */
enum sink_rc {
	SINK_OK = 0,        /* batch taken (applied, or queued for delivery) */
	SINK_BUSY = 1,      /* not taken yet (e.g. delivery window full): retry soon, not an error */
	SINK_RETRY = -1,    /* failed: back off and retry the same batch */
	SINK_RESET = -2,    /* failed: close, reopen, resume from durable_cursor() */
	SINK_REJECTED = -3  /* the target refused this batch's data itself (not a connection or
	                     * capacity problem): after SINK_REJECT_ATTEMPTS in a row the sink
	                     * STOPS with a clear error (stats.stopped) instead of retrying forever */
};
#define SINK_REJECT_ATTEMPTS 3

/* One sink backend. `open` connects and returns its state plus the cursor
 * to resume after (NULL with err set when it cannot: the thread retries with
 * backoff). `apply_batch` gets the batch, its decoded records, and -- when
 * `wants_model` -- the projection after this batch and per-record SKU index.
 * On failure it says why in err. `durable_cursor` is the last seq durable on
 * the sink's side: what `open` would return after a crash. `tick` (may
 * be NULL) runs after each batch taken and at least every 10 ms when idle
 * (flushes, delivery reports); it returns -1 with err set on a failure.
 *
 * `resume` (NULL: none) marks a wants_model backend that sends the model's
 * STATE, not its events (Redis): it may start from a model checkpoint newer
 * than its cursor, and right after open the thread hands it that model
 * once (it sends every SKU: no batch may follow for a while); 0, or -1 with
 * err set. A backend without it (Kafka) needs the model as it was at each
 * batch it delivers, so a checkpoint is used only when its seq <= the cursor. */
struct sink_ops {
	const char *name;
	int wants_model;
	void *(*open)(const struct sink_config *cfg, uint64_t *cursor, char *err, size_t err_len);
	int (*apply_batch)(void *st, const struct jr_batch *b, const struct fs_cmd *recs, uint32_t n,
	                   const struct sink_model *m, const uint32_t *sku_idx, char *err, size_t err_len);
	uint64_t (*durable_cursor)(void *st);
	int (*tick)(void *st, int64_t now_ms, char *err, size_t err_len);   /* now_ms: CLOCK_MONOTONIC */
	void (*close)(void *st);
	int (*resume)(void *st, const struct sink_model *m, char *err, size_t err_len);
	/* Optional: apply_batch may hold batches it took (SINK_OK) to write them
	 * together; the thread calls flush when it has no next batch to give
	 * (caught up), so nothing waits longer than that. Returns enum sink_rc
	 * (SINK_OK once written, durable_cursor then past them). */
	int (*flush)(void *st, char *err, size_t err_len);
};

#define SINK_CKPT_EVERY_MS 2000   /* model checkpoints: at most this often, only when the model moved */
#define SINK_CKPT_HOLD_MS  1000   /* a due checkpoint waits this long at most for the cursor to catch up */
#define SINK_CKPT_DUTY     50     /* ... and at most every 50x the last one's write time */

/* Backends (NULL when the build lacks the client library). */
const struct sink_ops *sink_ops_postgres(void);
const struct sink_ops *sink_ops_kafka(void);
const struct sink_ops *sink_ops_redis(void);

struct sink_stats {
	uint64_t durable_seq;      /* writer's durable seq when sampled */
	uint64_t read_seq;         /* last batch read from the journal and taken by the sink */
	uint64_t applied_seq;      /* sink's durable cursor */
	uint64_t lag_batches;      /* durable_seq - applied_seq */
	uint64_t lag_ms;           /* how long the oldest batch not applied has been durable (0: none) */
	uint64_t batches;          /* batches taken */
	uint64_t rows;             /* records taken */
	uint64_t errors;           /* failed attempts (open, read, apply) */
	uint64_t opens;            /* successful (re)opens */
	int      connected;        /* 1 while the backend is open */
	int      stopped;          /* 1 after a batch was rejected SINK_REJECT_ATTEMPTS times: no more applies */
	uint64_t stopped_seq;      /* the batch it stopped at */
	int      has_model;        /* 1 for a wants_model backend (Kafka, Redis) */
	uint64_t model_checkpoint_seq; /* has_model: seq of its durable model checkpoint (0: none yet) */
	uint64_t checkpoints;      /* model checkpoints written */
	char     last_error[160];
};

struct sink;

/* Starts the sink thread. Returns NULL (err set) only for a bad config or
 * when the thread cannot start; an unreachable backend is NOT an error (the
 * thread retries; see stats.errors and last_error). */
struct sink *sink_start(const struct sink_config *cfg, char *err, size_t err_len);

/* Wakes the sink thread if it sleeps (call after publishing durable_seq).
 * Never blocks. */
void sink_notify(struct sink *s);

/* A consistent-enough snapshot of the counters (each field atomic). */
void sink_stats(struct sink *s, struct sink_stats *out);

/* The last batch this sink never needs to read again, even after a crash:
 * its cursor, or for a wants_model sink its model checkpoint's seq (0 while
 * it has none). The writer deletes no journal segment past it. */
uint64_t sink_gate_seq(struct sink *s);

/* Stops the thread (finishing or abandoning the batch in flight), closes the
 * backend, frees everything. Safe with NULL. */
void sink_stop(struct sink *s);

#endif
