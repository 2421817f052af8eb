/* snapshotter.c - the snapshot writer thread (see snapshotter.h): a second
 * copy of the state, caught up by replaying the durable journal only when a
 * snapshot is asked for, then written with wr_snapshot_write(). */
#include "writer/snapshotter.h"
#include "writer/journal.h"
#include "writer/record.h"
#include "writer/snapshot.h"

#include <assert.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct wr_snapshotter {
	struct wr_snapshotter_config cfg;
	char data_dir[PATH_MAX];
	char journal_dir[PATH_MAX];
	struct wr_state *st;           /* the copy (reserved at start-up, loaded on the first request) */
	int loaded;
	struct jr_reader *reader;
	uint64_t applied_seq;          /* st is the state after this batch */
	int64_t applied_t_ms;
	uint8_t applied_chain[16];
	int broken;                    /* replay diverged or the journal is damaged: no more snapshots */
	struct fs_cmd *cmds;
	uint32_t cmd_cap;
	struct wr_batch_out out;
	pthread_t thread;
	int started;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int asked;                     /* under mu */
	uint64_t want_seq;             /* under mu */
	int stop;                      /* under mu */
	_Atomic int busy;              /* a request is taken and not yet reported */
	_Atomic int done;              /* a result waits in `result` */
	struct wr_snapshotter_result result;
};

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Brings the copy to the writer's starting point: the snapshot it loaded
 * (base_seq), or an empty state at the journal's start. Returns 0 or -1. */
static int copy_init(struct wr_snapshotter *s)
{
	char err[PATH_MAX + 512];
	assert(s->st != NULL && !s->loaded && s->reader == NULL);
	s->loaded = 1;
	s->reader = jr_reader_open(s->journal_dir, err, sizeof err);
	if (s->reader == NULL) {
		fprintf(stderr, "writer: snapshotter: %s\n", err);
		return -1;
	}
	s->applied_seq = s->cfg.base_seq;
	if (s->cfg.base_seq != 0) {
		char path[PATH_MAX + 64];
		struct wr_snap_stamp stamp;
		wr_snapshot_path(path, sizeof path, s->data_dir, s->cfg.base_seq);
		if (wr_snapshot_load(path, s->st, &stamp, NULL, err, sizeof err) != 0) {
			fprintf(stderr, "writer: snapshotter: %s\n", err);
			return -1;
		}
		assert(stamp.seq == s->cfg.base_seq);
		s->applied_t_ms = stamp.time_ms;
		memcpy(s->applied_chain, stamp.chain, 16);
	}
	if (jr_reader_seek(s->reader, s->applied_seq) != 0) {
		perror("writer: snapshotter: journal");
		return -1;
	}
	return 0;
}

/* Re-decides one journal batch on the copy; it must regenerate the body. */
static int apply_batch(struct wr_snapshotter *s, const struct jr_batch *b)
{
	int n = wr_rec_decode_batch(b->body, b->body_len, b->record_count, s->cmds, s->cmd_cap);
	if (n < 0) {
		fprintf(stderr, "writer: snapshotter: %s offset %llu: malformed record in batch %llu\n", b->file,
		        (unsigned long long)b->offset, (unsigned long long)b->seq);
		return -1;
	}
	wr_decide(s->st, s->cmds, (uint32_t)n, b->time_ms, 1, &s->out);
	if (s->out.records_len != b->body_len || memcmp(s->out.records, b->body, b->body_len) != 0) {
		fprintf(stderr, "writer: snapshotter: replay diverged at %s offset %llu (batch %llu)\n", b->file,
		        (unsigned long long)b->offset, (unsigned long long)b->seq);
		return -1;
	}
	assert(b->seq == s->applied_seq + 1);
	s->applied_seq = b->seq;
	s->applied_t_ms = b->time_ms;
	jr_reader_chain(s->reader, s->applied_chain);
	return 0;
}

/* Replays the journal up to batch `seq` (durable, so it is on disk; a
 * rotation in progress may hide it for a moment). Returns batches or -1. */
static int64_t catch_up(struct wr_snapshotter *s, uint64_t seq)
{
	char err[PATH_MAX + 512];
	int64_t batches = 0;
	uint32_t empty = 0;
	while (s->applied_seq < seq) {
		struct jr_batch b;
		int rc = jr_reader_next(s->reader, seq, &b, err, sizeof err);
		if (rc < 0) {
			fprintf(stderr, "writer: snapshotter: %s\n", err);
			return -1;
		}
		if (rc == 0) {
			if (++empty > 10000) {   /* 10 s without the batch the writer made durable */
				fprintf(stderr, "writer: snapshotter: batch %llu is not in %s\n",
				        (unsigned long long)s->applied_seq + 1, s->journal_dir);
				return -1;
			}
			struct timespec ts = { 0, 1000000 };
			nanosleep(&ts, NULL);
			continue;
		}
		empty = 0;
		if (apply_batch(s, &b) != 0)
			return -1;
		batches++;
	}
	return batches;
}

/* One request: catch up to seq, write the file. */
static void take(struct wr_snapshotter *s, uint64_t seq, struct wr_snapshotter_result *r)
{
	uint64_t t0 = mono_ms();
	memset(r, 0, sizeof *r);
	if (!s->broken && !s->loaded && copy_init(s) != 0)
		s->broken = 1;
	int64_t batches = s->broken ? -1 : catch_up(s, seq);
	if (batches < 0) {
		s->broken = 1;
		return;
	}
	uint64_t t1 = mono_ms();
	struct wr_snap_stamp stamp = { .seq = s->applied_seq, .time_ms = s->applied_t_ms };
	memcpy(stamp.chain, s->applied_chain, 16);
	char err[PATH_MAX + 256];
	r->ok = wr_snapshot_write(s->data_dir, s->st, &stamp, s->cfg.pace_us, err, sizeof err) == 0;
	if (!r->ok)
		fprintf(stderr, "writer: snapshot: %s\n", err);
	r->seq = stamp.seq;
	r->batches = (uint64_t)batches;
	r->replay_ms = t1 - t0;
	r->write_ms = mono_ms() - t1;
}

static void *run(void *arg)
{
	struct wr_snapshotter *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->stop && !s->asked)
			pthread_cond_wait(&s->cv, &s->mu);
		if (s->stop)
			break;
		uint64_t seq = s->want_seq;
		s->asked = 0;
		pthread_mutex_unlock(&s->mu);
		take(s, seq, &s->result);
		atomic_store(&s->done, 1);
		pthread_mutex_lock(&s->mu);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}

struct wr_snapshotter *wr_snapshotter_new(const struct wr_snapshotter_config *cfg, char *err, size_t err_len)
{
	assert(cfg->data_dir != NULL && cfg->journal_dir != NULL);
	struct wr_snapshotter *s = calloc(1, sizeof *s);
	if (s == NULL) {
		snprintf(err, err_len, "out of memory for the snapshotter");
		return NULL;
	}
	s->cfg = *cfg;
	snprintf(s->data_dir, sizeof s->data_dir, "%s", cfg->data_dir);
	snprintf(s->journal_dir, sizeof s->journal_dir, "%s", cfg->journal_dir);
	s->cmd_cap = WR_REC_COUNT_MAX(JR_BODY_BYTES_MAX);
	s->cmds = calloc(s->cmd_cap, sizeof *s->cmds);
	s->st = wr_state_new(&cfg->limits);   /* address space now; pages as the copy fills */
	uint32_t skus = cfg->limits.sku_count_max;
	int out = wr_batch_out_alloc(&s->out, s->cmd_cap, wr_replay_records_cap(JR_BODY_BYTES_MAX, skus), skus);
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->cv, NULL);
	if (s->cmds == NULL || s->st == NULL || out != 0 || pthread_create(&s->thread, NULL, run, s) != 0) {
		snprintf(err, err_len, "cannot start the snapshotter (out of memory or threads)");
		wr_snapshotter_free(s);
		return NULL;
	}
	s->started = 1;
	return s;
}

int wr_snapshotter_request(struct wr_snapshotter *s, uint64_t seq)
{
	assert(s->started);
	if (atomic_load(&s->busy))
		return -1;
	atomic_store(&s->busy, 1);
	pthread_mutex_lock(&s->mu);
	s->want_seq = seq;
	s->asked = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	return 0;
}

int wr_snapshotter_poll(struct wr_snapshotter *s, struct wr_snapshotter_result *r)
{
	if (!atomic_load(&s->done))
		return 0;
	*r = s->result;
	atomic_store(&s->done, 0);
	atomic_store(&s->busy, 0);
	return 1;
}

void wr_snapshotter_free(struct wr_snapshotter *s)
{
	if (s == NULL)
		return;
	if (s->started) {
		pthread_mutex_lock(&s->mu);
		s->stop = 1;
		pthread_cond_signal(&s->cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
	}
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	jr_reader_close(s->reader);
	wr_state_free(s->st);
	free(s->cmds);
	wr_batch_out_free(&s->out);
	free(s);
}
