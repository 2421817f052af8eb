/* ctl_view.c - the operator's live figures from Prometheus text (see ctl_view.h). */
#include "control/ctl_view.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *const ctl_route_names[CTL_ROUTES] = { "sku_get", "reserve", "reservation_get", "cancel",
                                                  "checkout", "order_get", "health", "other" };

/* Copies label `key`'s value out of `{a="x",b="y"}` (lab, len); 0 or -1. */
static int label(const char *lab, size_t len, const char *key, char *out, size_t cap)
{
	size_t kl = strlen(key);
	for (size_t i = 0; i + kl + 2 <= len; i++) {
		if ((i == 0 || lab[i - 1] == '{' || lab[i - 1] == ',') && memcmp(lab + i, key, kl) == 0 &&
		    lab[i + kl] == '=' && lab[i + kl + 1] == '"') {
			const char *v = lab + i + kl + 2;
			const char *e = memchr(v, '"', len - (size_t)(v - lab));
			if (e == NULL || (size_t)(e - v) >= cap)
				return -1;
			memcpy(out, v, (size_t)(e - v));
			out[e - v] = 0;
			return 0;
		}
	}
	return -1;
}

/* Copies src into dst (cap bytes), cut to fit, NUL-terminated. */
static void copy(char *dst, size_t cap, const char *src)
{
	size_t n = strnlen(src, cap - 1);
	memcpy(dst, src, n);
	dst[n] = 0;
}

static int route_index(const char *name)
{
	for (int r = 0; r < CTL_ROUTES; r++)
		if (strcmp(ctl_route_names[r], name) == 0)
			return r;
	return -1;
}

static struct ctl_sku *sku_slot(struct ctl_scrape *s, const char *name)
{
	for (uint32_t i = 0; i < s->sku_count; i++)
		if (strcmp(s->sku[i].name, name) == 0)
			return &s->sku[i];
	if (s->sku_count == CTL_SKUS_MAX)
		return NULL;
	struct ctl_sku *k = &s->sku[s->sku_count++];
	copy(k->name, sizeof k->name, name);
	snprintf(k->state, sizeof k->state, "unknown");
	return k;
}

/* Adds a cumulative bucket: to the bucket with the same bound when there is
 * one (series of one histogram summed), else appended in ascending order. */
static void hist_add(struct ctl_hist *h, const char *le, double v)
{
	double bound = strcmp(le, "+Inf") == 0 ? HUGE_VAL : strtod(le, NULL);
	for (uint32_t i = 0; i < h->n; i++)
		if (h->le[i] == bound) {
			h->cum[i] += v;
			return;
		}
	if (h->n == CTL_LE_MAX)
		return;
	if (h->n > 0 && !(bound > h->le[h->n - 1]))
		return;   /* out of order: not ours */
	h->le[h->n] = bound;
	h->cum[h->n] = v;
	h->n++;
}

static void sample(struct ctl_scrape *s, const char *name, const char *lab, size_t lab_len, double v)
{
	char a[64], b[64];
	if (strcmp(name, "flashsale_http_answers_total") == 0) {
		if (label(lab, lab_len, "route", a, sizeof a) || label(lab, lab_len, "status", b, sizeof b))
			return;
		int r = route_index(a), st = atoi(b);
		if (r >= 0)
			s->answers[r][st >= 100 && st < 600 ? st / 100 : 0] += v;
	} else if (strcmp(name, "flashsale_http_request_seconds_bucket") == 0) {
		/* per route and class; the view sums the classes of a route */
		if (label(lab, lab_len, "route", a, sizeof a) || label(lab, lab_len, "le", b, sizeof b))
			return;
		int r = route_index(a);
		if (r >= 0)
			hist_add(&s->latency[r], b, v);
	} else if (strcmp(name, "flashsale_fdatasync_seconds_bucket") == 0) {
		if (label(lab, lab_len, "le", b, sizeof b) == 0)
			hist_add(&s->fsync, b, v);
	} else if (strcmp(name, "flashsale_batch_commands_bucket") == 0) {
		if (label(lab, lab_len, "le", b, sizeof b) == 0)
			hist_add(&s->batch, b, v);
	} else if (strcmp(name, "flashsale_sku_units") == 0) {
		struct ctl_sku *k;
		if (label(lab, lab_len, "sku", a, sizeof a) || label(lab, lab_len, "kind", b, sizeof b) ||
		    (k = sku_slot(s, a)) == NULL)
			return;
		if (strcmp(b, "total") == 0) k->total = v;
		else if (strcmp(b, "available") == 0) k->available = v;
		else if (strcmp(b, "reserved") == 0) k->reserved = v;
		else if (strcmp(b, "sold") == 0) k->sold = v;
	} else if (strcmp(name, "flashsale_sku_version") == 0 || strcmp(name, "flashsale_waiting_room_queued") == 0 ||
	           strcmp(name, "flashsale_waitlist_depth") == 0 ||
	           strcmp(name, "flashsale_sku_state") == 0 || strcmp(name, "flashsale_sku_reservations_total") == 0) {
		struct ctl_sku *k;
		if (label(lab, lab_len, "sku", a, sizeof a) || (k = sku_slot(s, a)) == NULL)
			return;
		if (strcmp(name, "flashsale_sku_version") == 0)
			k->version = v;
		else if (strcmp(name, "flashsale_waiting_room_queued") == 0)
			k->queued = v;
		else if (strcmp(name, "flashsale_waitlist_depth") == 0)
			k->waitlist = v;
		else if (strcmp(name, "flashsale_sku_state") == 0) {
			if (v > 0 && label(lab, lab_len, "state", b, sizeof b) == 0)
				copy(k->state, sizeof k->state, b);
		} else if (label(lab, lab_len, "outcome", b, sizeof b) == 0) {
			if (strcmp(b, "granted") == 0)
				k->granted = v;
			else
				k->refused += v;
		}
	} else if (strcmp(name, "flashsale_decisions_total") == 0) {
		if (label(lab, lab_len, "outcome", b, sizeof b) || strcmp(b, "ok") == 0 || strcmp(b, "exists") == 0)
			return;
		uint32_t i = 0;
		while (i < s->reason_count && strcmp(s->reason[i].name, b) != 0)
			i++;
		if (i == s->reason_count) {
			if (i == CTL_REASONS_MAX)
				return;
			copy(s->reason[i].name, sizeof s->reason[i].name, b);
			s->reason_count++;
		}
		s->reason[i].total += v;
	} else if (strcmp(name, "flashsale_ring_depth") == 0) {
		s->ring_depth += v;
	} else if (strcmp(name, "flashsale_ring_full_total") == 0) {
		s->ring_full = v;
	} else if (strcmp(name, "flashsale_sink_lag_batches") == 0 || strcmp(name, "flashsale_sink_connected") == 0 ||
	           strcmp(name, "flashsale_sink_lag_seconds") == 0) {
		if (label(lab, lab_len, "sink", a, sizeof a))
			return;
		uint32_t i = 0;
		while (i < s->sink_count && strcmp(s->sink[i].name, a) != 0)
			i++;
		if (i == s->sink_count) {
			if (i == CTL_SINKS_MAX)
				return;
			copy(s->sink[i].name, sizeof s->sink[i].name, a);
			s->sink[i].connected = -1;
			s->sink_count++;
		}
		if (strcmp(name, "flashsale_sink_lag_batches") == 0)
			s->sink[i].lag = v;
		else if (strcmp(name, "flashsale_sink_lag_seconds") == 0)
			s->sink[i].lag_s = v;
		else
			s->sink[i].connected = v;
	/* writer shards (flashsaled --writers N) label these writer="K":
	 * the view shows the sum (the worst for the owed time) */
	} else if (strcmp(name, "flashsale_payments_outstanding") == 0) {
		s->payments_outstanding += v;
	} else if (strcmp(name, "flashsale_payments_breaker_open") == 0) {
		s->breaker_open = v;
	} else if (strcmp(name, "flashsale_writer_batches_total") == 0) {
		s->batches += v;
	} else if (strcmp(name, "flashsale_journal_seq") == 0) {
		s->journal_seq += v;
	} else if (strcmp(name, "flashsale_writer_owed_ms") == 0) {
		s->writer_owed_ms = v > s->writer_owed_ms ? v : s->writer_owed_ms;
	} else if (strcmp(name, "flashsale_replication_role") == 0 && v > 0) {
		static const char *const roles[3] = { "primary", "standby", "fenced" };
		for (int r = 0; r < 3 && label(lab, lab_len, "role", a, sizeof a) == 0; r++)
			if (strcmp(a, roles[r]) == 0)
				s->repl_role = r;
	} else if (strcmp(name, "flashsale_shard_info") == 0) {
		if (label(lab, lab_len, "shard", s->shard, sizeof s->shard) != 0)
			s->shard[0] = 0;
		if (label(lab, lab_len, "index", a, sizeof a) == 0)
			s->shard_index = strtod(a, NULL);
		if (label(lab, lab_len, "shards", a, sizeof a) == 0)
			s->shard_count = strtod(a, NULL);
	} else if (strcmp(name, "flashsale_replication_epoch") == 0) {
		s->repl_epoch = v;
	} else if (strcmp(name, "flashsale_replication_lag_ms") == 0) {
		s->repl_lag_ms = v;
	} else if (strcmp(name, "flashsale_replication_lag_records") == 0) {
		s->repl_lag_records = v;
	}
}

int ctl_scrape_parse(const char *text, double t_s, struct ctl_scrape *s)
{
	assert(text != NULL && s != NULL);
	memset(s, 0, sizeof *s);
	s->t_s = t_s;
	s->repl_role = -1;
	int count = 0;
	for (const char *p = text; *p;) {
		const char *eol = strchr(p, '\n');
		size_t len = eol ? (size_t)(eol - p) : strlen(p);
		if (len > 0 && p[0] != '#' && len < 1024) {
			char line[1024];
			memcpy(line, p, len);
			line[len] = 0;
			char *brace = strchr(line, '{'), *sp = strrchr(line, ' ');
			if (sp != NULL) {
				const char *lab = "";
				size_t lab_len = 0;
				char *end = sp;
				if (brace != NULL && brace < sp) {
					char *close = strrchr(line, '}');
					if (close != NULL && close < sp) {
						lab = brace;
						lab_len = (size_t)(close - brace + 1);
					}
					end = brace;
				}
				char name[128];
				copy(name, (size_t)(end - line) + 1 < sizeof name ? (size_t)(end - line) + 1 : sizeof name, line);
				char *e;
				double v = strtod(sp + 1, &e);
				if (e != sp + 1) {
					sample(s, name, lab, lab_len, v);
					count++;
				}
			}
		}
		if (eol == NULL)
			break;
		p = eol + 1;
	}
	return count;
}

double ctl_hist_quantile(const struct ctl_hist *older, const struct ctl_hist *newer, double q)
{
	assert(q >= 0 && q <= 1);
	uint32_t n = newer->n;
	int use_old = older != NULL && older->n == n;
	double total = n ? newer->cum[n - 1] - (use_old ? older->cum[n - 1] : 0) : 0;
	if (total <= 0)
		return -1;
	double rank = q * total, prev_cum = 0, prev_le = 0;
	for (uint32_t i = 0; i < n; i++) {
		double c = newer->cum[i] - (use_old ? older->cum[i] : 0);
		if (c >= rank && c > prev_cum) {
			if (isinf(newer->le[i]))
				return prev_le;   /* beyond the last finite bound: report that bound */
			return prev_le + (newer->le[i] - prev_le) * (rank - prev_cum) / (c - prev_cum);
		}
		prev_cum = c;
		prev_le = isinf(newer->le[i]) ? prev_le : newer->le[i];
	}
	return prev_le;
}

void ctl_view_make(const struct ctl_scrape *prev, const struct ctl_scrape *cur, struct ctl_view *v)
{
	memset(v, 0, sizeof *v);
	v->cur = *cur;
	if (prev != NULL && cur->t_s > prev->t_s && cur->batches >= prev->batches)
		v->dt_s = cur->t_s - prev->t_s;
	else
		prev = NULL;   /* first scrape, or flashsaled restarted: counters began again */
	for (int r = 0; r < CTL_ROUTES; r++) {
		for (int c = 0; c < CTL_CLASSES && prev; c++) {
			double d = cur->answers[r][c] - prev->answers[r][c];
			v->rps[r][c] = d > 0 ? d / v->dt_s : 0;
			v->rps_total += v->rps[r][c];
		}
		double p50 = ctl_hist_quantile(prev ? &prev->latency[r] : NULL, &cur->latency[r], 0.5);
		double p99 = ctl_hist_quantile(prev ? &prev->latency[r] : NULL, &cur->latency[r], 0.99);
		v->p50_ms[r] = p50 < 0 ? -1 : p50 * 1000;
		v->p99_ms[r] = p99 < 0 ? -1 : p99 * 1000;
	}
	double f50 = ctl_hist_quantile(prev ? &prev->fsync : NULL, &cur->fsync, 0.5);
	double f99 = ctl_hist_quantile(prev ? &prev->fsync : NULL, &cur->fsync, 0.99);
	v->fsync_p50_ms = f50 < 0 ? -1 : f50 * 1000;
	v->fsync_p99_ms = f99 < 0 ? -1 : f99 * 1000;
	v->batch_p50 = ctl_hist_quantile(prev ? &prev->batch : NULL, &cur->batch, 0.5);
	v->batch_p99 = ctl_hist_quantile(prev ? &prev->batch : NULL, &cur->batch, 0.99);
	for (uint32_t i = 0; i < cur->reason_count && prev; i++)
		for (uint32_t j = 0; j < prev->reason_count; j++)
			if (strcmp(cur->reason[i].name, prev->reason[j].name) == 0) {
				double d = cur->reason[i].total - prev->reason[j].total;
				v->reason_rate[i] = d > 0 ? d / v->dt_s : 0;
			}
	for (uint32_t i = 0; i < cur->sku_count && prev; i++)
		for (uint32_t j = 0; j < prev->sku_count; j++)
			if (strcmp(cur->sku[i].name, prev->sku[j].name) == 0) {
				double g = cur->sku[i].granted - prev->sku[j].granted;
				double f = cur->sku[i].refused - prev->sku[j].refused;
				v->granted_rate[i] = g > 0 ? g / v->dt_s : 0;
				v->refused_rate[i] = f > 0 ? f / v->dt_s : 0;
			}
}

/* Appends to buf; sets *n past cap on overflow. */
static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
	if (*n >= cap)
		return;
	va_list ap;
	va_start(ap, fmt);
	int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
	va_end(ap);
	*n += k > 0 ? (size_t)k : 0;
}

/* JSON numbers: -1 (none) stays -1; NaN/inf never leave. */
static double num(double x) { return isfinite(x) ? x : -1; }

int ctl_view_json(const struct ctl_view *v, char *buf, size_t cap)
{
	const struct ctl_scrape *s = &v->cur;
	size_t n = 0;
	put(buf, cap, &n, "{\"interval_s\":%.3f,\"rps_total\":%.1f,\"routes\":[", v->dt_s, v->rps_total);
	for (int r = 0; r < CTL_ROUTES; r++) {
		put(buf, cap, &n, "%s{\"route\":\"%s\",\"rps\":{\"2xx\":%.1f,\"3xx\":%.1f,\"4xx\":%.1f,\"5xx\":%.1f,"
		    "\"other\":%.1f},\"answers_total\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}", r ? "," : "",
		    ctl_route_names[r], v->rps[r][2], v->rps[r][3], v->rps[r][4], v->rps[r][5], v->rps[r][0] + v->rps[r][1],
		    s->answers[r][0] + s->answers[r][1] + s->answers[r][2] + s->answers[r][3] + s->answers[r][4] + s->answers[r][5],
		    num(v->p50_ms[r]), num(v->p99_ms[r]));
	}
	put(buf, cap, &n, "],\"skus\":[");
	for (uint32_t i = 0; i < s->sku_count; i++) {
		const struct ctl_sku *k = &s->sku[i];
		put(buf, cap, &n, "%s{\"sku\":\"%s\",\"state\":\"%s\",\"total\":%.0f,\"available\":%.0f,\"reserved\":%.0f,"
		    "\"sold\":%.0f,\"version\":%.0f,\"waiting_room\":%.0f,\"waitlist\":%.0f,\"granted_total\":%.0f,\"refused_total\":%.0f,"
		    "\"granted_per_s\":%.1f,\"refused_per_s\":%.1f}", i ? "," : "", k->name, k->state, k->total,
		    k->available, k->reserved, k->sold, k->version, k->queued, k->waitlist, k->granted, k->refused,
		    v->granted_rate[i], v->refused_rate[i]);
	}
	put(buf, cap, &n, "],\"refusals\":[");
	for (uint32_t i = 0; i < s->reason_count; i++)
		put(buf, cap, &n, "%s{\"reason\":\"%s\",\"total\":%.0f,\"per_s\":%.1f}", i ? "," : "", s->reason[i].name,
		    s->reason[i].total, v->reason_rate[i]);
	put(buf, cap, &n, "],\"sinks\":[");
	for (uint32_t i = 0; i < s->sink_count; i++)
		put(buf, cap, &n, "%s{\"sink\":\"%s\",\"lag_batches\":%.0f,\"lag_s\":%.3f,\"connected\":%.0f}",
		    i ? "," : "", s->sink[i].name, s->sink[i].lag, s->sink[i].lag_s, s->sink[i].connected);
	put(buf, cap, &n, "],\"writer\":{\"batch_p50\":%.1f,\"batch_p99\":%.1f,\"fdatasync_p50_ms\":%.3f,"
	    "\"fdatasync_p99_ms\":%.3f,\"batches_total\":%.0f,\"journal_seq\":%.0f,\"owed_ms\":%.0f},"
	    "\"rings\":{\"depth\":%.0f,\"full_total\":%.0f},"
	    "\"payments\":{\"outstanding\":%.0f,\"breaker_open\":%s},",
	    num(v->batch_p50), num(v->batch_p99), num(v->fsync_p50_ms), num(v->fsync_p99_ms), s->batches,
	    s->journal_seq, s->writer_owed_ms, s->ring_depth, s->ring_full, s->payments_outstanding,
	    s->breaker_open > 0 ? "true" : "false");
	if (s->shard[0])   /* names are [A-Za-z0-9._-]: no escaping */
		put(buf, cap, &n, "\"shard\":{\"name\":\"%s\",\"index\":%.0f,\"of\":%.0f},", s->shard, s->shard_index,
		    s->shard_count);
	else
		put(buf, cap, &n, "\"shard\":null,");
	static const char *const roles[3] = { "primary", "standby", "fenced" };
	if (s->repl_role >= 0 && s->repl_role <= 2)
		put(buf, cap, &n, "\"replication\":{\"role\":\"%s\",\"epoch\":%.0f,\"lag_ms\":%.0f,\"lag_records\":%.0f}}",
		    roles[(int)s->repl_role], s->repl_epoch, s->repl_lag_ms, s->repl_lag_records);
	else
		put(buf, cap, &n, "\"replication\":null}");
	return n < cap ? (int)n : -1;
}
