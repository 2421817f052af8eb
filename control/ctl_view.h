/* ctl_view.h - the operator's live figures, computed from flashsaled's
 * Prometheus text (GET /metrics on the admin socket): per-SKU units and
 * state, requests per second by route and status class, latency p50/p99 by
 * route, batch size and fdatasync latency, ring depth, sink lag, refusals by
 * reason, the payment breaker, waiting-room depth. One scrape is a
 * ctl_scrape; two scrapes make a ctl_view (rates and quantiles over the
 * interval). Shared by `flashctl top` and flashsale-control's dashboard so
 * both show the same numbers. Pure: no I/O, fixed sizes, no allocation.
 */
#ifndef CTL_VIEW_H
#define CTL_VIEW_H

#include <stddef.h>
#include <stdint.h>

#define CTL_ROUTES      8       /* flashsale_http_answers_total route labels */
#define CTL_CLASSES     6       /* status class: 0 other, 1xx..5xx */
#define CTL_SKUS_MAX    32      /* SKUs shown (the first 32 in /metrics order) */
#define CTL_REASONS_MAX 32
#define CTL_SINKS_MAX   4
#define CTL_LE_MAX      40      /* histogram buckets kept */

extern const char *const ctl_route_names[CTL_ROUTES];

struct ctl_hist {
	uint32_t n;
	double le[CTL_LE_MAX];     /* upper bounds, ascending; +Inf as HUGE_VAL */
	double cum[CTL_LE_MAX];    /* cumulative counts */
};

struct ctl_sku {
	char name[33];
	char state[16];
	double total, available, reserved, sold, version, queued, waitlist;
	double granted, refused;   /* reservations, counters */
};

struct ctl_scrape {
	double t_s;                               /* monotonic seconds of the scrape */
	double answers[CTL_ROUTES][CTL_CLASSES];  /* counters */
	struct ctl_hist latency[CTL_ROUTES];      /* all status classes of a route */
	struct ctl_hist fsync, batch;
	uint32_t sku_count;
	struct ctl_sku sku[CTL_SKUS_MAX];
	uint32_t reason_count;
	struct { char name[32]; double total; } reason[CTL_REASONS_MAX];   /* refusals, every command */
	double ring_depth, ring_full;
	uint32_t sink_count;
	struct { char name[16]; double lag, lag_s, connected; } sink[CTL_SINKS_MAX];   /* lag: batches */
	double payments_outstanding, breaker_open, batches, journal_seq, writer_owed_ms;
	/* --replicate (writer/replicate.h): repl_role -1 when not replicated,
	 * else 0 primary, 1 standby, 2 fenced */
	double repl_role, repl_epoch, repl_lag_ms, repl_lag_records;
	/* --shard NAME --shard-map (flashsale_shard_info): "" when not sharded */
	char shard[32];
	double shard_index, shard_count;
};

struct ctl_view {
	struct ctl_scrape cur;
	double dt_s;                              /* 0: first scrape, rates are 0 */
	double rps[CTL_ROUTES][CTL_CLASSES];
	double rps_total;
	double p50_ms[CTL_ROUTES], p99_ms[CTL_ROUTES];   /* -1: no requests in the interval */
	double fsync_p50_ms, fsync_p99_ms, batch_p50, batch_p99;
	double reason_rate[CTL_REASONS_MAX];
	double granted_rate[CTL_SKUS_MAX], refused_rate[CTL_SKUS_MAX];
};

/* Parses Prometheus text into *s (zeroed first; unknown series ignored;
 * SKUs past CTL_SKUS_MAX dropped). Returns the number of samples read. */
int ctl_scrape_parse(const char *text, double t_s, struct ctl_scrape *s);

/* Builds the view of cur over the interval since prev (prev NULL or older
 * than cur: rates over dt; NULL: cumulative quantiles, zero rates). */
void ctl_view_make(const struct ctl_scrape *prev, const struct ctl_scrape *cur, struct ctl_view *v);

/* The q-quantile (0..1) of a histogram's counts between two scrapes (a NULL
 * older: since start), linearly interpolated inside the bucket; -1 when it
 * holds no observations. */
double ctl_hist_quantile(const struct ctl_hist *older, const struct ctl_hist *newer, double q);

/* Writes the view as one JSON object (no history) into buf. Returns the
 * length, or -1 when cap is too small. */
int ctl_view_json(const struct ctl_view *v, char *buf, size_t cap);

#endif
