/* admission.c - every rule that decides whether a command reaches the
 * decide step (admission.h): journal budget, payment capacity, tier
 * resolution, risk scoring and the per-user/device/IP token buckets.
 * Runs on the writer thread only, once per command, before wr_decide().
 */
#include "writer/admission.h"
#include "writer/fairness.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

struct wr_admission {
	struct wr_admission_config cfg;   /* defaults filled in */
	struct fr_table *user_buckets;
	struct fr_table *device_buckets;
	struct fr_table *ip_buckets;      /* risk: users per IP */
	struct fr_table *ip_rate_buckets; /* --ip-rate */
	_Atomic uint64_t *risk_flags;     /* metric, may be NULL */
	struct fs_cmd flags[WR_FLAGS_PER_BATCH];
	uint32_t flag_count;
};

struct wr_admission *wr_admission_new(const struct wr_admission_config *cfg,
                                      _Atomic uint64_t *risk_flags)
{
	assert(cfg->user_count_max > 0);
	struct wr_admission *ad = calloc(1, sizeof *ad);
	if (ad == NULL)
		return NULL;
	ad->cfg = *cfg;
	if (ad->cfg.risk_regular_streak == 0)
		ad->cfg.risk_regular_streak = 8;
	if (ad->cfg.risk_device_users == 0)
		ad->cfg.risk_device_users = 4;
	if (ad->cfg.risk_ip_users == 0)
		ad->cfg.risk_ip_users = 50;
	ad->risk_flags = risk_flags;
	ad->user_buckets = fr_new(cfg->user_count_max);
	ad->device_buckets = fr_new(cfg->user_count_max);
	ad->ip_buckets = fr_new(cfg->user_count_max);
	ad->ip_rate_buckets = fr_new(cfg->user_count_max);
	if (!ad->user_buckets || !ad->device_buckets || !ad->ip_buckets || !ad->ip_rate_buckets) {
		wr_admission_free(ad);
		return NULL;
	}
	return ad;
}

void wr_admission_prefault(struct wr_admission *ad)
{
	fr_prefault(ad->user_buckets);
	fr_prefault(ad->device_buckets);
	fr_prefault(ad->ip_buckets);
	fr_prefault(ad->ip_rate_buckets);
}

void wr_admission_free(struct wr_admission *ad)
{
	if (ad == NULL)
		return;
	fr_free(ad->user_buckets);
	fr_free(ad->device_buckets);
	fr_free(ad->ip_buckets);
	fr_free(ad->ip_rate_buckets);
	free(ad);
}

int wr_admission_batch(const struct wr_admission *ad, struct wr_admission_batch *b, int64_t t_ms,
                       uint64_t journal_bytes, uint64_t charges_outstanding)
{
	b->t_ms = t_ms;
	b->journal_full = ad->cfg.journal_budget_bytes != 0 && journal_bytes >= ad->cfg.journal_budget_bytes;
	b->charges = charges_outstanding;
	return b->journal_full;
}

/* The tier a reservation attempt is admitted at: the token's claim, else
 * the operator's table, else the sale's default; a risk flag lowers it to 1
 * (never raises it; tier 0, exempt, is for trusted clients and stays). */
static int effective_tier(const struct wr_state *st, const struct fs_cmd *c, int *flagged_out)
{
	int flagged;
	int table = wr_user_tier(st, c->user, c->user_len, &flagged);
	*flagged_out = flagged;
	int tier = 4;
	if (c->claim_tier != 0) {
		tier = c->claim_tier - 1;
	} else if (table >= 0) {
		tier = table;
	} else {
		int d = wr_sku_default_tier(st, c->sku, c->sku_len);
		if (d >= 0)
			tier = d;
	}
	if (tier < 0 || tier > 4)
		tier = 1;
	if (flagged && tier > 1)
		tier = 1;
	assert(tier >= 0 && tier <= 4);
	return tier;
}

/* The risk signals of one attempt; returns the reason to flag the user, or
 * NULL. Only non-exempt clients are scored, and IP signals skip trusted
 * and allow-listed addresses. */
static const char *risk_reason(struct wr_admission *ad, const struct fs_cmd *c, int64_t t_ms)
{
	uint64_t user_hash = XXH3_64bits(c->user, c->user_len);
	if (fr_regularity(ad->user_buckets, c->user, c->user_len, t_ms) >= ad->cfg.risk_regular_streak)
		return "regular_timing";
	if (c->text_len != 0 &&
	    fr_distinct(ad->device_buckets, c->text, c->text_len, user_hash) > ad->cfg.risk_device_users)
		return "shared_device";
	if (c->client_ip != 0 && !c->ip_trusted &&
	    fr_distinct(ad->ip_buckets, (const char *)&c->client_ip, sizeof c->client_ip, user_hash) >
	        ad->cfg.risk_ip_users)
		return "many_users_one_ip";
	return NULL;
}

/* Queues a journaled risk decision for this batch (bounded per batch; a
 * user not flagged now is flagged at the next attempt). */
static void risk_flag(struct wr_admission *ad, const struct fs_cmd *c, const char *why)
{
	assert(ad->flag_count <= WR_FLAGS_PER_BATCH);
	if (ad->flag_count >= WR_FLAGS_PER_BATCH)
		return;
	for (uint32_t i = 0; i < ad->flag_count; i++)
		if (ad->flags[i].user_len == c->user_len && memcmp(ad->flags[i].user, c->user, c->user_len) == 0)
			return;
	size_t why_len = strlen(why);
	assert(why_len <= sizeof ad->flags[0].text);
	struct fs_cmd *f = &ad->flags[ad->flag_count++];
	memset(f, 0, sizeof *f);
	f->type = FS_CMD_RISK_FLAG;
	f->origin = WR_ORIGIN_NONE;
	f->quantity = 1;
	memcpy(f->user, c->user, c->user_len);
	f->user_len = c->user_len;
	f->text_len = (uint8_t)why_len;
	memcpy(f->text, why, f->text_len);
	if (ad->risk_flags)
		atomic_fetch_add_explicit(ad->risk_flags, 1, memory_order_relaxed);
}

/* Rate limits (fairness.h) for one reservation attempt: 1 admitted, 0 over
 * quota (verdict filled), -1 when a bucket table is full. A refusal by a
 * later bucket refunds the tokens the earlier ones took. */
static int rate_admit(struct wr_admission *ad, const struct wr_state *st, const struct fs_cmd *c,
                      int64_t t_ms, struct fr_verdict *v)
{
	int flagged;
	int tier = effective_tier(st, c, &flagged);
	if (tier != 0) {
		const char *why = flagged ? NULL : risk_reason(ad, c, t_ms);
		if (why != NULL) {
			risk_flag(ad, c, why);
			tier = 1;
		}
	}
	int r = fr_take(ad->user_buckets, c->user, c->user_len, tier, t_ms, v);
	if (r == 1 && c->text_len != 0 && tier != 0) {
		r = fr_take(ad->device_buckets, c->text, c->text_len, tier, t_ms, v);
		if (r != 1)
			fr_refund(ad->user_buckets, c->user, c->user_len);
	}
	if (r == 1 && ad->cfg.ip_rate_per_min != 0 && c->client_ip != 0 && !c->ip_trusted && tier != 0) {
		r = fr_take_rate(ad->ip_rate_buckets, (const char *)&c->client_ip, sizeof c->client_ip,
		                 ad->cfg.ip_rate_per_min, t_ms, v);
		if (r != 1) {
			fr_refund(ad->user_buckets, c->user, c->user_len);
			if (c->text_len != 0)
				fr_refund(ad->device_buckets, c->text, c->text_len);
		}
	}
	assert(r >= -1 && r <= 1);
	return r;
}

int wr_admit(struct wr_admission *ad, struct wr_admission_batch *b, const struct wr_state *st,
             const struct fs_cmd *c, struct fs_ans *refusal)
{
	assert(c->type < FS_CMD_TYPE_COUNT);
	int charge = c->type == FS_CMD_CHECKOUT || c->type == FS_CMD_REFUND;   /* each may hand one over */
	int refuse = (b->journal_full && (c->type == FS_CMD_RESERVE || c->type == FS_CMD_CHECKOUT)) ||
	             (charge && b->charges >= ad->cfg.charge_capacity);
	/* every checkout (and refund) of the batch counts, refused or not: conservative */
	if (charge)
		b->charges++;
	struct fr_verdict v = { 0 };
	int rate = 1;
	if (!refuse && c->type == FS_CMD_RESERVE && c->origin != WR_ORIGIN_NONE) {
		rate = rate_admit(ad, st, c, b->t_ms, &v);
		refuse = rate != 1;
	}
	if (!refuse)
		return 1;
	memset(refusal, 0, sizeof *refusal);
	refusal->tag = c->tag;
	refusal->http = 503;
	refusal->err = FS_ERR_OVERLOADED;
	refusal->body = FS_BODY_ERROR;
	if (rate == 0) {
		refusal->http = 429;
		refusal->err = FS_ERR_RATE_LIMITED;
		refusal->expires_at_ms = v.retry_after_ms;   /* response.c: retry_after_ms */
		refusal->position = v.queue_position;
	}
	return 0;
}

uint32_t wr_admission_flags(struct wr_admission *ad, struct fs_cmd *out, uint32_t max)
{
	uint32_t n = ad->flag_count < max ? ad->flag_count : max;
	memcpy(out, ad->flags, (size_t)n * sizeof *out);
	ad->flag_count = 0;
	assert(n <= WR_FLAGS_PER_BATCH);
	return n;
}

uint32_t wr_admission_sweep(struct wr_admission *ad, int64_t now_ms, int64_t idle_ms, uint32_t slots)
{
	assert(ad != NULL);
	return fr_sweep(ad->user_buckets, now_ms, idle_ms, slots) + fr_sweep(ad->device_buckets, now_ms, idle_ms, slots) +
	       fr_sweep(ad->ip_buckets, now_ms, idle_ms, slots) + fr_sweep(ad->ip_rate_buckets, now_ms, idle_ms, slots);
}
