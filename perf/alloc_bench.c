/* alloc_bench.c - decisions per second of the decide step (wr_decide) on
 * one core, in memory: no journal, no rings, no I/O. ARCHITECTURE.md's
 * target: >= 10 million decisions/s.
 *
 * One SKU with a huge stock and no per-user limit; batches of 8192 RESERVE
 * commands (the writer's batch size under load). Phases:
 *   new users     every command from a user never seen (interns the user,
 *                 a holding, an idempotency key, a reservation)
 *   known users   the same users again, fresh keys (the steady state)
 *   repeats       the known-users commands again, same keys (idempotent
 *                 repeats: answered from the idempotency map, not journaled)
 *   sold out      a SKU with nothing left, known users, fresh keys
 *   new users, sold out   strangers to a sold-out SKU (looked up, refused,
 *                 nothing created)
 * Only wr_decide() is timed (wall clock and thread CPU time); building the
 * commands is not. The state is faulted in before the first phase (as the
 * writer does at start-up), so "new users" pays no first-touch faults.
 * Cache misses per decision: `perf stat -e cache-misses` where the machine
 * has a PMU (the shared 2-core VM has none).
 *
 * usage: alloc_bench [USERS (default 1000000)] [ROUNDS of the known-users
 *        phase (default 3)]
 * FS_BENCH_PHASE=known loops only that phase (for perf record).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/fs_cmd.h"
#include "writer/alloc.h"
#include "writer/record.h"

#define BATCH 8192u

struct bench {
	struct wr_state *st;
	struct wr_batch_out out;
	struct fs_cmd *cmds;
	uint32_t users;
	uint64_t key_seq;
	int64_t t;
};

static double now_s(clockid_t clk)
{
	struct timespec ts;
	clock_gettime(clk, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void fill(struct fs_cmd *c, const char *sku, uint32_t user, uint64_t key)
{
	memset(c, 0, sizeof *c);
	c->type = FS_CMD_RESERVE;
	c->quantity = 1;
	c->sku_len = (uint8_t)strlen(sku);
	memcpy(c->sku, sku, c->sku_len);
	c->user_len = (uint8_t)snprintf(c->user, sizeof c->user, "user-%08u", user);
	c->key_len = (uint8_t)snprintf(c->key, sizeof c->key, "idem-%012" PRIu64, key);
	c->tag = key;
}

struct result {
	uint64_t decisions, ok, records;
	double wall, cpu;
};

static void decide(struct bench *b, uint32_t n, struct result *r)
{
	double w0 = now_s(CLOCK_MONOTONIC), c0 = now_s(CLOCK_THREAD_CPUTIME_ID);
	wr_decide(b->st, b->cmds, n, b->t, 0, &b->out);
	r->wall += now_s(CLOCK_MONOTONIC) - w0;
	r->cpu += now_s(CLOCK_THREAD_CPUTIME_ID) - c0;
	r->decisions += n;
	r->records += b->out.record_count;
	for (uint32_t i = 0; i < n; i++)
		r->ok += b->cmds[i].err == FS_OK || b->cmds[i].err == FS_ERR_EXISTS;
	b->t++;
}

/* One pass over every user: a reserve each, with fresh keys (or the keys
 * of the pass that started at key_base, to repeat it). */
static void pass(struct bench *b, const char *sku, uint32_t user_base, uint64_t key_base,
                 struct result *r)
{
	for (uint32_t u = 0; u < b->users; u += BATCH) {
		uint32_t n = b->users - u < BATCH ? b->users - u : BATCH;
		for (uint32_t i = 0; i < n; i++)
			fill(&b->cmds[i], sku, user_base + u + i, key_base + u + i);
		decide(b, n, r);
	}
}

static void report(const char *name, const struct result *r, const char *expect)
{
	printf("%-24s %10" PRIu64 " %9.3f %9.3f %14.0f %8.1f %8.1f  %s (%" PRIu64 " ok)\n", name,
	       r->decisions, r->wall, r->cpu, (double)r->decisions / r->cpu, r->cpu * 1e9 / (double)r->decisions,
	       r->wall * 1e9 / (double)r->decisions, expect, r->ok);
}

static void admin(struct bench *b, uint8_t type, const char *sku, uint64_t total)
{
	struct fs_cmd *c = &b->cmds[0];
	memset(c, 0, sizeof *c);
	c->type = type;
	c->sku_len = (uint8_t)strlen(sku);
	memcpy(c->sku, sku, c->sku_len);
	c->sale.total = total;
	c->sale.hold_ms = 3600u * 1000u;   /* nothing expires during the run */
	c->sale.price_cents = 100;
	c->sale.default_tier = 0;
	wr_decide(b->st, b->cmds, 1, b->t, 0, &b->out);
	if (c->err != FS_OK) {
		fprintf(stderr, "alloc_bench: %s %s: %s\n", fs_cmd_type_name((enum fs_cmd_type)type), sku,
		        fs_err_name((enum fs_err)c->err));
		exit(1);
	}
}

int main(int argc, char **argv)
{
	struct bench b = { 0 };
	b.users = argc > 1 ? (uint32_t)strtoul(argv[1], NULL, 0) : 1000000u;
	uint32_t rounds = argc > 2 ? (uint32_t)strtoul(argv[2], NULL, 0) : 3u;
	const char *only = getenv("FS_BENCH_PHASE");
	if (b.users == 0 || rounds == 0) {
		fprintf(stderr, "usage: alloc_bench [USERS] [ROUNDS]\n");
		return 2;
	}
	uint64_t res_max = (uint64_t)b.users * (rounds + 1) + 16;
	struct wr_limits l;
	wr_limits_default(&l);
	l.sku_count_max = 4;
	l.user_count_max = 2 * b.users + 16;
	l.reservation_count_max = (uint32_t)res_max;
	l.order_count_max = 16;
	l.idem_count_max = (uint32_t)res_max;
	l.holding_count_max = (uint32_t)(2 * (uint64_t)b.users + 16);
	b.st = wr_state_new(&l);
	b.cmds = calloc(BATCH, sizeof *b.cmds);
	int out = wr_batch_out_alloc(&b.out, BATCH, wr_batch_records_cap(BATCH, l.sku_count_max), l.sku_count_max);
	if (!b.st || !b.cmds || out != 0) {
		fprintf(stderr, "alloc_bench: out of memory (state %.0f MiB)\n", (double)wr_state_bytes(&l) / 1048576.0);
		return 1;
	}
	wr_state_prefault(b.st);   /* as the writer does at start-up */
	b.t = 1700000000000LL;
	admin(&b, FS_CMD_SALE_CREATE, "big", UINT64_C(1) << 40);
	admin(&b, FS_CMD_SALE_OPEN, "big", 0);
	admin(&b, FS_CMD_SALE_CREATE, "gone", 1);
	admin(&b, FS_CMD_SALE_OPEN, "gone", 0);
	fill(&b.cmds[0], "gone", 0, 0);   /* user 0 takes the one unit */
	wr_decide(b.st, b.cmds, 1, b.t, 0, &b.out);

	printf("alloc_bench: %u users, batches of %u RESERVE, state reserved %.0f MiB (faulted in before the phases)\n",
	       b.users, BATCH, (double)wr_state_bytes(&l) / 1048576.0);
	printf("%-24s %10s %9s %9s %14s %8s %8s\n", "phase", "decisions", "wall s", "cpu s",
	       "decisions/s", "ns/dec", "wall ns");

	if (only && strcmp(only, "known") == 0) {   /* for perf record: warm up, then loop */
		struct result warm = { 0 }, r = { 0 };
		pass(&b, "big", 0, b.key_seq, &warm);
		b.key_seq += b.users;
		for (uint32_t k = 0; k < rounds; k++) {
			pass(&b, "big", 0, b.key_seq, &r);
			b.key_seq += b.users;
		}
		report("known users", &r, "201 reserved");
		return 0;
	}

	struct result r_new = { 0 }, r_known = { 0 }, r_rep = { 0 }, r_sold = { 0 }, r_strangers = { 0 };
	uint64_t first_keys = b.key_seq + 1;
	pass(&b, "big", 0, first_keys, &r_new);
	b.key_seq += b.users + 1;
	report("new users", &r_new, "201 reserved");
	uint64_t known_keys = 0;
	for (uint32_t k = 0; k < rounds; k++) {
		known_keys = b.key_seq;
		pass(&b, "big", 0, b.key_seq, &r_known);
		b.key_seq += b.users;
	}
	report("known users", &r_known, "201 reserved");
	pass(&b, "big", 0, known_keys, &r_rep);
	report("repeats", &r_rep, "200 original answer");
	pass(&b, "gone", 0, b.key_seq, &r_sold);
	b.key_seq += b.users;
	report("sold out", &r_sold, "409 sold_out");
	pass(&b, "gone", b.users + 1, b.key_seq, &r_strangers);
	b.key_seq += b.users;
	report("new users, sold out", &r_strangers, "409 sold_out");
	struct result all = { 0 };
	const struct result *parts[5] = { &r_new, &r_known, &r_rep, &r_sold, &r_strangers };
	for (int i = 0; i < 5; i++) {
		all.decisions += parts[i]->decisions;
		all.ok += parts[i]->ok;
		all.wall += parts[i]->wall;
		all.cpu += parts[i]->cpu;
	}
	report("all", &all, "");
	struct wr_sku_view v;
	wr_sku_view(b.st, 0, &v);
	printf("alloc_bench: big: reserved %llu available %llu; goal >= 10000000 decisions/s on one core\n",
	       (unsigned long long)v.reserved, (unsigned long long)v.available);
	wr_state_free(b.st);
	return 0;
}
