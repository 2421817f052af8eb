/* sink.c - the generic sink thread (contract in sink.h): tail the journal up
 * to the writer's durable sequence, decode, hand batches to the backend,
 * retry with backoff, sleep when caught up, count everything; for a backend
 * that wants the model, start it from its checkpoint and checkpoint it. */
#include "writer/sink/sink.h"
#include "writer/sink/sink_ckpt.h"
#include "writer/sink/sink_seed.h"
#include "common/fs_clock.h"
#include "common/fs_shard.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "writer/record.h"

#define SINK_IDLE_MS_MIN     1
#define SINK_IDLE_MS_MAX     10
#define SINK_BACKOFF_MS_MIN  100
#define SINK_BACKOFF_MS_MAX  5000
#define SINK_BUSY_MS         1
#define SINK_TEXT_BYTES      1024
#define SINK_LAG_OBS_MAX     256   /* durable sequences seen and not yet applied (lag_note) */

/* When the thread first saw the writer's durable sequence at `seq`. */
struct lag_obs { uint64_t seq; int64_t mono_ms; };

struct sink {
	struct sink_config cfg;
	char dir[SINK_TEXT_BYTES], address[SINK_TEXT_BYTES], name[128], topic[256], data_dir[SINK_TEXT_BYTES];
	char shard[FS_SHARD_LABEL_LEN_MAX + 1];   /* every string of cfg is copied: the caller's may go */
	const struct sink_ops *ops;
	pthread_t thread;
	int efd;                       /* eventfd: notify and stop */
	_Atomic int stop;
	_Atomic int sleeping;

	/* thread-owned */
	void *st;                      /* backend state, NULL while closed */
	struct jr_reader *reader;
	uint64_t skip_until;           /* batches <= this were applied before (open's cursor) */
	uint64_t expect_seq;           /* the first batch read after open must be this one (0: checked) */
	struct sink_model model;
	char ckpt_path[SINK_CKPT_PATH_BYTES];   /* wants_model: the model checkpoint */
	int64_t ckpt_next_ms;          /* monotonic: no checkpoint before this */
	int64_t ckpt_hold_ms;          /* monotonic: since when a due checkpoint holds reading (0: not) */
	struct fs_cmd *recs;
	uint32_t *sku_idx;
	uint32_t rec_cap;
	struct jr_batch batch;         /* the batch in hand (valid until the next jr_reader_next) */
	int have_batch;
	uint32_t idle_ms, backoff_ms;
	struct lag_obs lag_obs[SINK_LAG_OBS_MAX];   /* a FIFO, oldest first */
	uint32_t lag_head, lag_count;

	/* stats */
	_Atomic uint64_t read_seq, applied_seq, batches, rows, errors, opens;
	_Atomic int connected;
	_Atomic int stopped;           /* a poison batch: see SINK_REJECTED */
	_Atomic uint64_t stopped_seq;
	_Atomic uint64_t ckpt_seq;     /* wants_model: seq of the model checkpoint on disk (0: none usable) */
	_Atomic uint64_t checkpoints;
	_Atomic int64_t behind_since_ms;   /* monotonic: the oldest batch not applied was durable by then; 0 = none */
	uint64_t reject_seq;           /* batch rejected reject_count times in a row */
	uint32_t reject_count;
	pthread_mutex_t err_lock;      /* guards last_error only (never taken by the writer) */
	char last_error[160];
};

static void note_error(struct sink *s, const char *what, const char *detail)
{
	char msg[sizeof s->last_error];
	snprintf(msg, sizeof msg, "%s: %s", what, detail);
	for (char *p = msg; *p; p++)   /* libpq messages span lines: keep logs one line each */
		if (*p == '\n' || *p == '\t')
			*p = ' ';
	atomic_fetch_add(&s->errors, 1);
	pthread_mutex_lock(&s->err_lock);
	int changed = strcmp(s->last_error, msg) != 0;
	memcpy(s->last_error, msg, sizeof msg);
	pthread_mutex_unlock(&s->err_lock);
	/* Log when the reason changes or when retries reached the slowest pace,
	 * so a long outage prints one line per 5 s, not one per attempt. */
	if (changed || s->backoff_ms >= SINK_BACKOFF_MS_MAX)
		fprintf(stderr, "sink %s: %s\n", s->ops->name, msg);
}

/* Sleeps up to ms, returning early on sink_notify/sink_stop. */
static void nap(struct sink *s, uint32_t ms)
{
	struct pollfd p = {.fd = s->efd, .events = POLLIN};
	atomic_store(&s->sleeping, 1);
	if (!atomic_load(&s->stop) && poll(&p, 1, (int)ms) > 0) {
		uint64_t v;
		ssize_t n = read(s->efd, &v, sizeof v);
		(void)n;
	}
	atomic_store(&s->sleeping, 0);
}

static void backoff(struct sink *s)
{
	s->backoff_ms = s->backoff_ms ? s->backoff_ms * 2 : SINK_BACKOFF_MS_MIN;
	if (s->backoff_ms > SINK_BACKOFF_MS_MAX)
		s->backoff_ms = SINK_BACKOFF_MS_MAX;
	assert(s->backoff_ms >= SINK_BACKOFF_MS_MIN && s->backoff_ms <= SINK_BACKOFF_MS_MAX);
	/* The stop flag is checked by nap(); sink_stop also writes the eventfd. */
	nap(s, s->backoff_ms);
}

static void backend_close(struct sink *s)
{
	if (s->st)
		s->ops->close(s->st);
	s->st = NULL;
	s->have_batch = 0;
	atomic_store(&s->connected, 0);
	if (s->reader)
		jr_reader_close(s->reader);
	s->reader = NULL;
	assert(s->st == NULL && s->reader == NULL && !s->have_batch);
}

/* Starts the model from its checkpoint when there is a usable one (valid,
 * and at or before the cursor unless the backend is state-only), else
 * empty (rebuilt from batch 1). 0, or -1 when out of memory. */
static int model_start(struct sink *s, uint64_t cursor)
{
	assert(s->ops->wants_model && s->ckpt_path[0] != '\0');
	char why[128] = "";
	sm_free(&s->model);
	int rc = sink_ckpt_read(s->ckpt_path, &s->model, 0, why, sizeof why);
	if (rc == 1 && s->ops->resume == NULL && s->model.last_seq > cursor) {
		snprintf(why, sizeof why, "at batch %" PRIu64 ", past the cursor %" PRIu64, s->model.last_seq, cursor);
		sm_free(&s->model);
		rc = -1;
	}
	if (rc == -2) {
		note_error(s, "model checkpoint", "out of memory");
		return -1;
	}
	if (rc == -1) {
		char msg[sizeof why + 32];
		snprintf(msg, sizeof msg, "%s; rebuilding from batch 1", why);
		note_error(s, "model checkpoint refused", msg);
	}
	if (rc != 1 && sm_init(&s->model, 0) != 0) {
		note_error(s, "model", "out of memory");
		return -1;
	}
	atomic_store(&s->ckpt_seq, rc == 1 ? s->model.last_seq : 0);
	return 0;
}

/* Opens the backend and positions the reader after its cursor, or after the
 * model's checkpoint when the backend wants the model. 0 or -1. */
static int backend_open(struct sink *s)
{
	assert(s->st == NULL && s->reader == NULL && !s->have_batch);
	char err[256] = "";
	uint64_t cursor = 0;
	s->st = s->ops->open(&s->cfg, &cursor, err, sizeof err);
	if (!s->st) {
		note_error(s, "open", err);
		return -1;
	}
	if (s->ops->wants_model && model_start(s, cursor) != 0) {
		backend_close(s);
		return -1;
	}
	uint64_t from = s->ops->wants_model ? s->model.last_seq : cursor;
	s->reader = jr_reader_open(s->cfg.journal_dir, err, sizeof err);
	if (!s->reader || jr_reader_seek(s->reader, from) != 0) {
		note_error(s, "journal", s->reader ? "seek failed" : err);
		backend_close(s);
		return -1;
	}
	if (s->ops->wants_model && s->ops->resume && s->ops->resume(s->st, &s->model, err, sizeof err) != 0) {
		note_error(s, "resume", err[0] ? err : "failed");
		backend_close(s);
		return -1;
	}
	/* The model must see every batch after `from`, so the first one read is
	 * checked (read_next); cursor-only backends resume as they always did. */
	s->expect_seq = s->ops->wants_model ? from + 1 : 0;
	s->ckpt_hold_ms = 0;
	s->skip_until = cursor;
	atomic_store(&s->applied_seq, cursor);
	atomic_store(&s->connected, 1);
	atomic_fetch_add(&s->opens, 1);
	assert(s->st != NULL && s->reader != NULL);
	return 0;
}

static void tick(struct sink *s)
{
	char err[256] = "";
	if (s->st && s->ops->tick && s->ops->tick(s->st, fs_mono_ms(), err, sizeof err) < 0)
		note_error(s, "tick", err[0] ? err : "failed");
}

/* Decodes the batch's body into s->recs. 0, or -1 when malformed. */
static int decode_batch(struct sink *s, const struct jr_batch *b)
{
	if (b->record_count > s->rec_cap) {
		struct fs_cmd *r = realloc(s->recs, (size_t)b->record_count * sizeof *r);
		uint32_t *k = realloc(s->sku_idx, (size_t)b->record_count * sizeof *k);
		if (r)
			s->recs = r;
		if (k)
			s->sku_idx = k;
		if (!r || !k)
			return -1;
		s->rec_cap = b->record_count;
	}
	assert(s->rec_cap >= b->record_count);
	return wr_rec_decode_batch(b->body, b->body_len, b->record_count, s->recs, s->rec_cap) < 0 ? -1 : 0;
}

/* The journal no longer holds the batch the model needs next (segments
 * deleted while the checkpoint was lost or refused): delivering from this
 * model would be wrong, so close and let the open/retry loop say so. */
static void model_gap(struct sink *s)
{
	char msg[96];
	snprintf(msg, sizeof msg, "model needs batch %" PRIu64 ", journal starts at %" PRIu64 ": cannot resume",
	         s->expect_seq, s->batch.seq);
	if (s->backoff_ms == 0 || s->backoff_ms >= SINK_BACKOFF_MS_MAX)
		fprintf(stderr, "sink %s: the model needs batch %" PRIu64 " but the journal now starts at %s: "
		        "segments were deleted while its model checkpoint %s was missing or refused, so this sink "
		        "cannot resume; restore the checkpoint, or the deleted segments (from --archive)\n",
		        s->ops->name, s->expect_seq, s->batch.file, s->ckpt_path);
	note_error(s, "journal", msg);
	backend_close(s);
}

/* The journal starts after the batch the model needs: seed the model from
 * the writer's newest snapshot the journal goes on from (sink_seed.h) and
 * read on after it. A backend with a cursor takes only a snapshot at or
 * before it (the batches after the cursor are delivered again, from the
 * model as it was then); a fresh one (cursor 0) starts at the snapshot,
 * since what came before it is gone, and says so. 1 seeded, 0 not. */
static int model_seed(struct sink *s)
{
	uint64_t first = s->batch.seq;   /* the oldest batch the journal still holds */
	uint64_t to = s->ops->resume != NULL || s->skip_until == 0 ? UINT64_MAX : s->skip_until;
	struct sink_model seeded;
	char err[512] = "";
	int rc = sink_seed_from_snapshot(s->cfg.data_dir, first - 1, to, &seeded, err, sizeof err);
	if (rc != 1) {
		if (rc < 0)
			note_error(s, "model seed", rc == -2 ? "out of memory" : err);
		return 0;
	}
	if (jr_reader_seek(s->reader, seeded.last_seq) != 0) {
		sm_free(&seeded);
		return 0;
	}
	sm_free(&s->model);
	s->model = seeded;
	s->expect_seq = seeded.last_seq + 1;
	fprintf(stderr, "sink %s: model seeded from the snapshot at batch %" PRIu64 " (no usable checkpoint; the "
	        "journal starts at batch %" PRIu64 ")%s\n", s->ops->name, seeded.last_seq, first,
	        s->ops->resume == NULL && s->skip_until == 0 ? ": delivering from the batch after it, the ones "
	        "before it are no longer in the journal" : "");
	return 1;
}

/* Reads the next batch into hand. 1 = have one, 0 = caught up, -1 = error. */
static int read_next(struct sink *s)
{
	assert(s->reader != NULL && !s->have_batch);
	char err[256] = "";
	for (;;) {
		uint64_t durable = atomic_load(s->cfg.durable_seq);
		int rc = jr_reader_next(s->reader, durable, &s->batch, err, sizeof err);
		if (rc <= 0) {
			if (rc < 0)
				note_error(s, "journal", err);
			return rc;
		}
		assert(s->batch.seq <= durable);   /* invariant 7: never past the durable sequence */
		if (s->expect_seq != 0 && s->batch.seq != s->expect_seq) {
			if (s->batch.seq > s->expect_seq && model_seed(s))
				continue;
			model_gap(s);
			return -1;
		}
		s->expect_seq = 0;
		if (decode_batch(s, &s->batch) != 0) {
			snprintf(err, sizeof err, "batch %" PRIu64 " in %s: records do not decode",
			         s->batch.seq, s->batch.file);
			note_error(s, "journal", err);
			return -1;
		}
		if (s->ops->wants_model &&
		    sm_apply_batch(&s->model, s->batch.seq, s->batch.time_ms, s->recs,
		                   s->batch.record_count, s->sku_idx) < 0) {
			note_error(s, "model", "out of memory");
			return -1;
		}
		if (s->batch.seq > s->skip_until) {
			assert(s->batch.record_count <= s->rec_cap);
			return 1;
		}
	}
}

/* One step of the loop: returns 1 after progress, 0 when idle, -1 on error. */
static int step(struct sink *s)
{
	if (!s->have_batch) {
		int rc = read_next(s);
		if (rc <= 0)
			return rc;
		s->have_batch = 1;
	}
	assert(s->st != NULL && s->have_batch);
	const struct jr_batch *b = &s->batch;
	char err[256] = "";
	int rc = s->ops->apply_batch(s->st, b, s->recs, b->record_count,
	                             s->ops->wants_model ? &s->model : NULL, s->sku_idx, err, sizeof err);
	if (rc == SINK_OK) {
		s->have_batch = 0;
		atomic_store(&s->read_seq, b->seq);
		atomic_fetch_add(&s->batches, 1);
		atomic_fetch_add(&s->rows, b->record_count);
		tick(s);
		atomic_store(&s->applied_seq, s->ops->durable_cursor(s->st));
		return 1;
	}
	if (rc == SINK_BUSY) {
		tick(s);
		nap(s, SINK_BUSY_MS);
		return 1;
	}
	char what[64];
	snprintf(what, sizeof what, "apply batch %" PRIu64, b->seq);
	note_error(s, what, err[0] ? err : "failed");
	if (rc == SINK_REJECTED) {
		s->reject_count = s->reject_seq == b->seq ? s->reject_count + 1 : 1;
		s->reject_seq = b->seq;
		if (s->reject_count >= SINK_REJECT_ATTEMPTS) {
			/* A batch the target refuses as data never applies: retrying
			 * forever would only hide it behind a growing lag. Stop, say so. */
			fprintf(stderr, "sink %s: STOPPED at batch %" PRIu64 " (%s offset %" PRIu64 "): the target "
			        "rejected its data %u times (%s); later batches are not applied; fix the target "
			        "and restart flashsaled to resume from this batch\n", s->ops->name, b->seq, b->file,
			        b->offset, s->reject_count, err[0] ? err : "rejected");
			atomic_store(&s->stopped_seq, b->seq);
			atomic_store(&s->stopped, 1);
			backend_close(s);
		}
	} else {
		s->reject_count = 0;
	}
	if (rc == SINK_RESET)
		backend_close(s);
	return -1;
}

/* Caught up: a backend that holds batches to write them together writes
 * them now. 0, or -1 after a failure (noted; a reset closes the backend). */
static int flush(struct sink *s)
{
	if (!s->st || s->ops->flush == NULL)
		return 0;
	char err[256] = "";
	int rc = s->ops->flush(s->st, err, sizeof err);
	if (rc == SINK_OK)
		return 0;
	note_error(s, "flush", err[0] ? err : "failed");
	if (rc == SINK_RESET || rc == SINK_REJECTED)
		backend_close(s);   /* reopened from its cursor: the held batches are read again */
	return -1;
}

static void idle(struct sink *s)
{
	if (flush(s) != 0) {
		backoff(s);
		return;
	}
	tick(s);
	atomic_store(&s->applied_seq, s->ops->durable_cursor(s->st));
	nap(s, s->idle_ms);
	s->idle_ms = s->idle_ms * 2 > SINK_IDLE_MS_MAX ? SINK_IDLE_MS_MAX : s->idle_ms * 2;
	assert(s->idle_ms <= SINK_IDLE_MS_MAX);
}

/* Writes the model checkpoint when one is due. */
static void ckpt_write(struct sink *s)
{
	char err[SINK_CKPT_PATH_BYTES + 64] = "";
	uint64_t seq = s->model.last_seq;
	if (sink_ckpt_write(s->ckpt_path, &s->model, err, sizeof err) != 0) {
		note_error(s, "model checkpoint", err);   /* the old one stays; tried again next interval */
		return;
	}
	assert(seq > atomic_load(&s->ckpt_seq));
	atomic_store(&s->ckpt_seq, seq);
	atomic_fetch_add(&s->checkpoints, 1);
}

/* The model checkpoint, once per turn of the loop while open: due every
 * SINK_CKPT_EVERY_MS when the model moved, written only with no batch in
 * hand (the model then stands exactly at the last batch taken) and, unless
 * the backend is state-only, once its cursor has reached the model (after
 * a crash, batches after the cursor are delivered again, from the model as
 * it was then). Returns 1 while a due checkpoint holds reading new batches
 * so the cursor catches up (Kafka: acknowledgements, its cursor file),
 * SINK_CKPT_HOLD_MS at most; under a load that never lets it, the next
 * interval tries again. */
static int ckpt_turn(struct sink *s)
{
	if (!s->ops->wants_model || s->have_batch || !s->st)
		return 0;
	int64_t now = fs_mono_ms();
	if (now < s->ckpt_next_ms || s->model.last_seq <= atomic_load(&s->ckpt_seq))
		return 0;
	if (s->ops->resume == NULL && s->ops->durable_cursor(s->st) < s->model.last_seq) {
		if (s->ckpt_hold_ms == 0)
			s->ckpt_hold_ms = now;
		if (now - s->ckpt_hold_ms < SINK_CKPT_HOLD_MS)
			return 1;
		s->ckpt_hold_ms = 0;
		s->ckpt_next_ms = now + SINK_CKPT_EVERY_MS;
		return 0;
	}
	s->ckpt_hold_ms = 0;
	ckpt_write(s);
	/* a big model (millions of live holds: hundreds of MiB) is written less
	 * often, so checkpoints take at most 1/SINK_CKPT_DUTY of the thread and
	 * of the disk the journal's fdatasyncs share */
	int64_t took_ms = fs_mono_ms() - now;
	int64_t every_ms = took_ms * SINK_CKPT_DUTY > SINK_CKPT_EVERY_MS ? took_ms * SINK_CKPT_DUTY : SINK_CKPT_EVERY_MS;
	s->ckpt_next_ms = now + every_ms;
	return 0;
}

/* The lag in time: each turn of the loop notes the durable sequence when it
 * moved (a FIFO of (seq, when first seen)) and drops what is applied; the
 * front is when the oldest batch not yet applied was durable, so the lag is
 * now - front.mono_ms (to within one turn of the loop, which a
 * sink_notify() starts). When the FIFO is full the newest entry takes the
 * new sequence and keeps its older time: the lag then reads high, never low. */
static void lag_note(struct sink *s)
{
	uint64_t durable = atomic_load(s->cfg.durable_seq);
	uint64_t applied = atomic_load(&s->applied_seq);
	uint32_t last = (s->lag_head + s->lag_count - 1) % SINK_LAG_OBS_MAX;
	if (durable > applied && (s->lag_count == 0 || durable > s->lag_obs[last].seq)) {
		if (s->lag_count == SINK_LAG_OBS_MAX) {
			s->lag_obs[last].seq = durable;
		} else {
			last = (s->lag_head + s->lag_count++) % SINK_LAG_OBS_MAX;
			s->lag_obs[last] = (struct lag_obs){ durable, fs_mono_ms() };
		}
	}
	while (s->lag_count > 0 && s->lag_obs[s->lag_head].seq <= applied) {
		s->lag_head = (s->lag_head + 1) % SINK_LAG_OBS_MAX;
		s->lag_count--;
	}
	assert(s->lag_count <= SINK_LAG_OBS_MAX);
	atomic_store(&s->behind_since_ms, s->lag_count ? s->lag_obs[s->lag_head].mono_ms : 0);
}

static void *sink_main(void *arg)
{
	struct sink *s = arg;
	while (!atomic_load(&s->stop)) {
		lag_note(s);
		if (atomic_load(&s->stopped)) {
			nap(s, 1000);   /* until sink_stop: nothing more is applied */
			continue;
		}
		if (!s->st && backend_open(s) != 0) {
			backoff(s);
			continue;
		}
		int rc = ckpt_turn(s) ? 0 : step(s);
		if (rc > 0) {
			s->idle_ms = SINK_IDLE_MS_MIN;
			s->backoff_ms = 0;
		} else if (rc == 0) {
			idle(s);
		} else {
			tick(s);
			backoff(s);
		}
	}
	backend_close(s);
	return NULL;
}

/* Backends the build lacks resolve to NULL (meson defines SINK_HAVE_*). */
#ifndef SINK_HAVE_POSTGRES
const struct sink_ops *sink_ops_postgres(void) { return NULL; }
#endif
#ifndef SINK_HAVE_KAFKA
const struct sink_ops *sink_ops_kafka(void) { return NULL; }
#endif
#ifndef SINK_HAVE_REDIS
const struct sink_ops *sink_ops_redis(void) { return NULL; }
#endif

static const struct sink_ops *ops_for(enum sink_kind kind)
{
	switch (kind) {
	case SINK_POSTGRES: return sink_ops_postgres();
	case SINK_KAFKA:    return sink_ops_kafka();
	case SINK_REDIS:    return sink_ops_redis();
	default:            return NULL;
	}
}

static void copy_str(char *dst, size_t cap, const char **field, const char *src, const char *dflt)
{
	snprintf(dst, cap, "%s", src ? src : dflt);
	*field = dst;
}

struct sink *sink_start(const struct sink_config *cfg, char *err, size_t err_len)
{
	const struct sink_ops *ops = ops_for(cfg->kind);
	if (!ops || !cfg->journal_dir || !cfg->durable_seq || !cfg->address) {
		snprintf(err, err_len, "sink: %s", ops ? "journal_dir, durable_seq and address are required"
		                                         : "unknown kind or not built in");
		return NULL;
	}
	struct sink *s = calloc(1, sizeof *s);
	if (!s) {
		snprintf(err, err_len, "sink: out of memory");
		return NULL;
	}
	s->cfg = *cfg;
	s->ops = ops;
	copy_str(s->dir, sizeof s->dir, &s->cfg.journal_dir, cfg->journal_dir, "");
	copy_str(s->address, sizeof s->address, &s->cfg.address, cfg->address, "");
	copy_str(s->name, sizeof s->name, &s->cfg.name, cfg->name, "sink");
	copy_str(s->topic, sizeof s->topic, &s->cfg.topic, cfg->topic, "flashsale.journal");
	copy_str(s->data_dir, sizeof s->data_dir, &s->cfg.data_dir, cfg->data_dir, cfg->journal_dir);
	if (cfg->shard != NULL && strlen(cfg->shard) > FS_SHARD_LABEL_LEN_MAX) {
		snprintf(err, err_len, "sink: shard label '%s' longer than %u bytes", cfg->shard, FS_SHARD_LABEL_LEN_MAX);
		free(s);
		return NULL;
	}
	copy_str(s->shard, sizeof s->shard, &s->cfg.shard, cfg->shard, "");
	if (ops->wants_model && sink_ckpt_path(s->ckpt_path, sizeof s->ckpt_path, s->cfg.data_dir, ops->name,
	                                       s->cfg.name) != 0) {
		snprintf(err, err_len, "sink: data_dir '%s' too long for the model checkpoint's path", s->cfg.data_dir);
		free(s);
		return NULL;
	}
	if (!s->cfg.redis_updates_per_s)
		s->cfg.redis_updates_per_s = 100;
	if (!s->cfg.redis_ttl_s)
		s->cfg.redis_ttl_s = 5;
	s->idle_ms = SINK_IDLE_MS_MIN;
	s->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	pthread_mutex_init(&s->err_lock, NULL);
	if (s->efd < 0 || pthread_create(&s->thread, NULL, sink_main, s) != 0) {
		snprintf(err, err_len, "sink: cannot start thread: %s", strerror(errno));
		if (s->efd >= 0)
			close(s->efd);
		pthread_mutex_destroy(&s->err_lock);
		free(s);
		return NULL;
	}
	return s;
}

void sink_notify(struct sink *s)
{
	if (s && atomic_load(&s->sleeping)) {
		uint64_t one = 1;
		ssize_t n = write(s->efd, &one, sizeof one);  /* EAGAIN when already poked: fine */
		(void)n;
	}
}

void sink_stats(struct sink *s, struct sink_stats *out)
{
	memset(out, 0, sizeof *out);
	out->durable_seq = atomic_load(s->cfg.durable_seq);
	out->read_seq = atomic_load(&s->read_seq);
	out->applied_seq = atomic_load(&s->applied_seq);
	out->lag_batches = out->durable_seq > out->applied_seq ? out->durable_seq - out->applied_seq : 0;
	int64_t since = atomic_load(&s->behind_since_ms), now = fs_mono_ms();
	out->lag_ms = out->lag_batches && since && now > since ? (uint64_t)(now - since) : 0;
	out->batches = atomic_load(&s->batches);
	out->rows = atomic_load(&s->rows);
	out->errors = atomic_load(&s->errors);
	out->opens = atomic_load(&s->opens);
	out->connected = atomic_load(&s->connected);
	out->stopped = atomic_load(&s->stopped);
	out->stopped_seq = atomic_load(&s->stopped_seq);
	out->has_model = s->ops->wants_model;
	out->model_checkpoint_seq = atomic_load(&s->ckpt_seq);
	out->checkpoints = atomic_load(&s->checkpoints);
	pthread_mutex_lock(&s->err_lock);
	memcpy(out->last_error, s->last_error, sizeof out->last_error);
	pthread_mutex_unlock(&s->err_lock);
}

uint64_t sink_gate_seq(struct sink *s)
{
	return s->ops->wants_model ? atomic_load(&s->ckpt_seq) : atomic_load(&s->applied_seq);
}

void sink_stop(struct sink *s)
{
	if (!s)
		return;
	atomic_store(&s->stop, 1);
	uint64_t one = 1;
	ssize_t n = write(s->efd, &one, sizeof one);
	(void)n;
	pthread_join(s->thread, NULL);
	close(s->efd);
	sm_free(&s->model);
	free(s->recs);
	free(s->sku_idx);
	pthread_mutex_destroy(&s->err_lock);
	free(s);
}
