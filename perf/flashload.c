/* flashload.c - HTTP/1.1 keep-alive load generator that speaks the flashsale
 * API (API.md): flags, JWT minting, server CPU accounting, text and JSON
 * reports around the engine in fl_engine.c.
 *
 *   flashload --url http://127.0.0.1:8080 --scenario reads --sku demo \
 *             --connections 50 --threads 1 --duration 10 [--rate 20000] \
 *             [--cpu 1] [--server-pid PID] [--json out.json]
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "fl_engine.h"
#include "proc_cpu.h"

#include "common/fs_jwt.h"

#define FL_USERS_MAX      1000000
#define FL_TOKEN_LEN_MAX  512
#define FL_PIDS_MAX       16

struct options {
	struct fl_config cfg;
	const char *url;
	const char *json_path;
	const char *label;
	const char *secret_path;
	int tier;
	uint32_t users;
	uint32_t user_base;           /* first user number (fl-user-<base+u>) */
	int pids[FL_PIDS_MAX];
	size_t pid_count;
	bool quiet;
};

struct cpu_figures {
	int64_t before_us, after_us;
	bool ok;
};

static void usage(FILE *f)
{
	fprintf(f,
	  "usage: flashload --url http://127.0.0.1:8080 [options]\n"
	  "  --scenario reads|reserve|mixed|checkout   (default reads)\n"
	  "  --sku S                 SKU (default demo)\n"
	  "  --sku-count N           N > 1: SKUs S-0 .. S-(N-1), one picked at random per request\n"
	  "  --connections N         keep-alive connections in all (default 10)\n"
	  "  --threads T             load threads (default 1)\n"
	  "  --cpu LIST              pin threads to CPUs, e.g. 1 or 0,2-3\n"
	  "  --duration S            seconds, at most 600 (default 10)\n"
	  "  --rate R                open loop: R requests/s, latency from the intended\n"
	  "                          send time (no coordinated omission); default closed loop\n"
	  "  --pipeline K            requests in flight per connection (default 1, max 32)\n"
	  "  --users N               users to mint tokens for (default 1000)\n"
  "  --user-base B           name them fl-user-B.. (default 0): a second run\n"
  "                          with another base meets users the server never saw\n"
	  "  --jwt-secret-file F     secret to mint HS256 tokens with\n"
	  "  --tier T                token tier claim (default 0: exempt from rate limits)\n"
	  "  --payment-token T       checkout payment token (default tok_slow_200)\n"
	  "  --mixed-reserve-pct P   mixed: reservation share (default 5)\n"
	  "  --timeout S             seconds to wait for one answer (default 10)\n"
	  "  --server-pid PID[,PID]  report the server's CPU-µs per request\n"
	  "  --json FILE             write every figure and a per-second series\n"
	  "  --label NAME            name of this run in the JSON\n"
	  "  --quiet                 only the one-line summary\n");
}

static int die(const char *msg)
{
	fprintf(stderr, "flashload: %s\n", msg);
	return 2;
}

/* http://A.B.C.D:PORT or http://localhost:PORT (path ignored). */
static const char *parse_url(const char *url, struct fl_config *cfg)
{
	if (strncmp(url, "http://", 7) != 0)
		return "--url must start with http://";
	char host[40];
	const char *p = url + 7;
	size_t n = strcspn(p, ":/");
	if (n == 0 || n >= sizeof(host))
		return "--url: bad host";
	memcpy(host, p, n);
	host[n] = '\0';
	long port = 80;
	if (p[n] == ':') {
		char *end;
		port = strtol(p + n + 1, &end, 10);
		if (port < 1 || port > 65535 || (*end != '\0' && *end != '/'))
			return "--url: bad port";
	}
	const char *ip = strcmp(host, "localhost") == 0 ? "127.0.0.1" : host;
	if (inet_pton(AF_INET, ip, &cfg->addr.sin_addr) != 1)
		return "--url: host must be an IPv4 address or localhost";
	cfg->addr.sin_family = AF_INET;
	cfg->addr.sin_port = htons((uint16_t)port);
	snprintf(cfg->host, sizeof(cfg->host), "%s:%ld", host, port);
	return NULL;
}

/* "1", "0,2-3" -> cpus. */
static const char *parse_cpus(const char *s, struct fl_config *cfg)
{
	cfg->cpu_count = 0;
	while (*s != '\0') {
		char *end;
		long a = strtol(s, &end, 10), b = a;
		if (end == s || a < 0 || a > 4095)
			return "--cpu: bad list";
		if (*end == '-') {
			s = end + 1;
			b = strtol(s, &end, 10);
			if (end == s || b < a || b > 4095)
				return "--cpu: bad range";
		}
		for (long c = a; c <= b; c++) {
			if (cfg->cpu_count == FL_THREADS_MAX)
				return "--cpu: too many CPUs";
			cfg->cpus[cfg->cpu_count++] = (int)c;
		}
		s = *end == ',' ? end + 1 : end;
		if (*end != ',' && *end != '\0')
			return "--cpu: bad list";
	}
	return cfg->cpu_count ? NULL : "--cpu: empty list";
}

static const char *parse_pids(const char *s, struct options *o)
{
	o->pid_count = 0;
	while (*s != '\0') {
		char *end;
		long pid = strtol(s, &end, 10);
		if (end == s || pid <= 0 || o->pid_count == FL_PIDS_MAX)
			return "--server-pid: bad list";
		o->pids[o->pid_count++] = (int)pid;
		if (*end != ',' && *end != '\0')
			return "--server-pid: bad list";
		s = *end == ',' ? end + 1 : end;
	}
	return NULL;
}

static const char *parse_scenario(const char *s, struct fl_config *cfg)
{
	static const char *names[] = { "reads", "reserve", "mixed", "checkout" };
	for (int i = 0; i < 4; i++)
		if (strcmp(s, names[i]) == 0) {
			cfg->scenario = (enum fl_scenario)i;
			return NULL;
		}
	return "--scenario must be reads, reserve, mixed or checkout";
}

static const char *scenario_name(enum fl_scenario s)
{
	static const char *names[] = { "reads", "reserve", "mixed", "checkout" };
	return names[s];
}

static const char *parse_number(const char *s, double lo, double hi, double *out)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (end == s || errno != 0 || v < lo || v > hi || (*end != '\0' && strcmp(end, "s") != 0))
		return "bad number";
	*out = v;
	return NULL;
}

static const char *copy_bounded(char *dst, size_t cap, const char *src, const char *what)
{
	if (strlen(src) >= cap || strpbrk(src, " \r\n\"/") != NULL)
		return what;
	snprintf(dst, cap, "%s", src);
	return NULL;
}

/* Applies one long option; returns NULL or a reason. */
static const char *apply_option(struct options *o, const char *name, const char *val)
{
	struct fl_config *c = &o->cfg;
	double v;
	const char *e = NULL;
	if (strcmp(name, "url") == 0) { o->url = val; return parse_url(val, c); }
	if (strcmp(name, "scenario") == 0) return parse_scenario(val, c);
	if (strcmp(name, "sku") == 0) return copy_bounded(c->sku, sizeof(c->sku), val, "--sku: 1..32 bytes");
	if (strcmp(name, "payment-token") == 0)
		return copy_bounded(c->payment_token, sizeof(c->payment_token), val, "--payment-token: bad");
	if (strcmp(name, "cpu") == 0) return parse_cpus(val, c);
	if (strcmp(name, "server-pid") == 0) return parse_pids(val, o);
	if (strcmp(name, "json") == 0) { o->json_path = val; return NULL; }
	if (strcmp(name, "label") == 0) { o->label = val; return NULL; }
	if (strcmp(name, "jwt-secret-file") == 0) { o->secret_path = val; return NULL; }
	if (strcmp(name, "connections") == 0 && !(e = parse_number(val, 1, FL_CONNS_MAX, &v))) c->connections = (unsigned)v;
	else if (strcmp(name, "sku-count") == 0 && !(e = parse_number(val, 1, 100000, &v))) c->sku_count = (unsigned)v;
	else if (strcmp(name, "threads") == 0 && !(e = parse_number(val, 1, FL_THREADS_MAX, &v))) c->threads = (unsigned)v;
	else if (strcmp(name, "pipeline") == 0 && !(e = parse_number(val, 1, FL_PIPELINE_MAX, &v))) c->pipeline = (unsigned)v;
	else if (strcmp(name, "duration") == 0 && !(e = parse_number(val, 0.001, FL_DURATION_S_MAX, &v))) c->duration_s = v;
	else if (strcmp(name, "rate") == 0 && !(e = parse_number(val, 0, 1e8, &v))) c->rate_per_s = v;
	else if (strcmp(name, "users") == 0 && !(e = parse_number(val, 1, FL_USERS_MAX, &v))) o->users = (uint32_t)v;
	else if (strcmp(name, "user-base") == 0 && !(e = parse_number(val, 0, 1e9, &v))) o->user_base = (uint32_t)v;
	else if (strcmp(name, "tier") == 0 && !(e = parse_number(val, 0, 4, &v))) o->tier = (int)v;
	else if (strcmp(name, "mixed-reserve-pct") == 0 && !(e = parse_number(val, 0, 100, &v))) c->mixed_reserve_pct = (unsigned)v;
	else if (strcmp(name, "timeout") == 0 && !(e = parse_number(val, 0.01, 600, &v))) c->timeout_ns = (uint64_t)(v * 1e9);
	return e;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longs[] = {
		{"url", 1, 0, 0}, {"scenario", 1, 0, 0}, {"sku", 1, 0, 0}, {"sku-count", 1, 0, 0},
		{"connections", 1, 0, 0}, {"threads", 1, 0, 0}, {"cpu", 1, 0, 0},
		{"duration", 1, 0, 0}, {"rate", 1, 0, 0}, {"pipeline", 1, 0, 0},
		{"users", 1, 0, 0}, {"user-base", 1, 0, 0}, {"jwt-secret-file", 1, 0, 0}, {"tier", 1, 0, 0},
		{"payment-token", 1, 0, 0}, {"mixed-reserve-pct", 1, 0, 0},
		{"timeout", 1, 0, 0}, {"server-pid", 1, 0, 0}, {"json", 1, 0, 0},
		{"label", 1, 0, 0}, {"quiet", 0, 0, 'q'}, {"help", 0, 0, 'h'}, {0, 0, 0, 0}
	};
	for (;;) {
		int idx = 0;
		int ch = getopt_long(argc, argv, "hq", longs, &idx);
		if (ch == -1)
			break;
		if (ch == 'h') {
			usage(stdout);
			exit(0);
		}
		if (ch == 'q') {
			o->quiet = true;
			continue;
		}
		if (ch != 0)
			return die("bad flag (see --help)");
		const char *e = apply_option(o, longs[idx].name, optarg);
		if (e != NULL) {
			fprintf(stderr, "flashload: --%s %s: %s\n", longs[idx].name, optarg, e);
			return 2;
		}
	}
	if (optind != argc)
		return die("unexpected argument (see --help)");
	if (o->url == NULL)
		return die("--url is required");
	return 0;
}

/* ---- tokens ----------------------------------------------------------- */

static char *g_tokens;
static uint32_t *g_token_off;

static int mint_tokens(struct options *o)
{
	if (o->cfg.scenario == FL_SC_READS)
		return 0;
	if (o->secret_path == NULL)
		return die("this scenario needs --jwt-secret-file");
	uint8_t key[FS_SECRET_LEN_MAX];
	char err[160];
	int key_len = fs_secret_load(o->secret_path, key, err, sizeof(err));
	if (key_len <= 0) {
		fprintf(stderr, "flashload: %s\n", err);
		return 2;
	}
	g_tokens = malloc((size_t)o->users * FL_TOKEN_LEN_MAX);
	g_token_off = malloc((size_t)o->users * sizeof(*g_token_off));
	if (g_tokens == NULL || g_token_off == NULL)
		return die("out of memory for tokens");
	size_t used = 0;
	for (uint32_t u = 0; u < o->users; u++) {
		struct fs_claims c = { .tier = (int8_t)o->tier, .dev_len = 0,
		                       .exp_s = (int64_t)time(NULL) + 86400 };
		c.sub_len = (uint8_t)snprintf(c.sub, sizeof(c.sub), "fl-user-%u", o->user_base + u);
		int n = fs_jwt_mint(key, (size_t)key_len, &c, g_tokens + used, FL_TOKEN_LEN_MAX);
		if (n <= 0)
			return die("fs_jwt_mint failed");
		g_token_off[u] = (uint32_t)used;
		used += (size_t)n + 1u;
	}
	o->cfg.tokens = g_tokens;
	o->cfg.token_off = g_token_off;
	o->cfg.users = o->users;
	return 0;
}

/* ---- reports ---------------------------------------------------------- */

static const double g_curve_p[] = { 1, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95,
                                    97.5, 99, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999, 100 };

static double us(uint64_t ns) { return (double)ns / 1000.0; }

static void print_latency_row(const char *name, const struct hist *h)
{
	if (h->count == 0)
		return;
	printf("  %-9s %10.1f %10.1f %10.1f %10.1f %10.1f %10.1f %10llu\n", name,
	       us(hist_percentile_ns(h, 50)), us(hist_percentile_ns(h, 90)),
	       us(hist_percentile_ns(h, 99)), us(hist_percentile_ns(h, 99.9)),
	       us(h->max_ns), hist_mean_ns(h) / 1000.0, (unsigned long long)h->count);
}

static double cpu_per_req(const struct cpu_figures *cpu, const struct fl_results *r)
{
	if (!cpu->ok || r->answers == 0)
		return -1;
	return (double)(cpu->after_us - cpu->before_us) / (double)r->answers;
}

static void print_text(const struct options *o, const struct fl_results *r,
                       const struct cpu_figures *cpu)
{
	const struct fl_config *c = &o->cfg;
	double rps = r->answers / r->elapsed_s;
	printf("flashload %s %s sku=%s: %u connections, %u threads, pipeline %u, ",
	       scenario_name(c->scenario), o->url, c->sku, c->connections, c->threads, c->pipeline);
	if (c->rate_per_s > 0)
		printf("open loop %.0f req/s, %.1f s\n", c->rate_per_s, c->duration_s);
	else
		printf("closed loop, %.1f s\n", c->duration_s);
	printf("  answers %llu in %.2f s = %.1f req/s (sent %llu, unsent backlog %llu, reconnects %llu)\n",
	       (unsigned long long)r->answers, r->elapsed_s, rps, (unsigned long long)r->sent,
	       (unsigned long long)r->unsent_backlog, (unsigned long long)r->reconnects);
	for (int op = 0; op < FL_OP_COUNT; op++) {
		if (r->op[op].count == 0)
			continue;
		printf("  status %-8s", fl_op_name((enum fl_op)op));
		for (int s = 0; s < FL_STATUS_MAX; s++)
			if (r->status[op][s])
				printf(" %d=%llu", s, (unsigned long long)r->status[op][s]);
		printf("\n");
	}
	printf("  errors  ");
	uint64_t errors = 0;
	for (int e = 0; e < FL_E_COUNT; e++)
		if (r->errors[e]) {
			printf(" %s=%llu", fl_err_name((enum fl_err)e), (unsigned long long)r->errors[e]);
			errors += r->errors[e];
		}
	printf(errors ? "\n" : " none\n");
	printf("  latency µs       p50        p90        p99      p99.9        max       mean      count\n");
	print_latency_row("all", &r->all);
	for (int op = 0; op < FL_OP_COUNT; op++)
		if (r->op[op].count != r->all.count)
			print_latency_row(fl_op_name((enum fl_op)op), &r->op[op]);
	if (cpu->ok)
		printf("  server CPU-µs/req: %.2f (server CPU %.3f s over %llu answers)\n",
		       cpu_per_req(cpu, r), (double)(cpu->after_us - cpu->before_us) / 1e6,
		       (unsigned long long)r->answers);
}

static void json_latency(FILE *f, const struct hist *h)
{
	fprintf(f, "{\"count\":%llu,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
	        "\"max\":%.1f,\"mean\":%.1f,\"curve\":[",
	        (unsigned long long)h->count, us(hist_percentile_ns(h, 50)),
	        us(hist_percentile_ns(h, 90)), us(hist_percentile_ns(h, 99)),
	        us(hist_percentile_ns(h, 99.9)), us(h->max_ns), hist_mean_ns(h) / 1000.0);
	size_t n = sizeof(g_curve_p) / sizeof(g_curve_p[0]);
	for (size_t i = 0; i < n && h->count; i++)
		fprintf(f, "%s[%g,%.1f]", i ? "," : "", g_curve_p[i],
		        us(hist_percentile_ns(h, g_curve_p[i])));
	fprintf(f, "]}");
}

static void json_series(FILE *f, const struct fl_results *r)
{
	fprintf(f, "\"series\":[");
	bool first = true;
	for (uint32_t i = 0; i < r->second_count; i++) {
		const struct fl_second *s = &r->seconds[i];
		if (s->answers == 0 && s->errors == 0)
			continue;
		fprintf(f, "%s{\"t\":%u,\"answers\":%llu,\"errors\":%llu,\"p50_us\":%.1f,"
		        "\"p99_us\":%.1f,\"max_us\":%.1f}", first ? "" : ",", i,
		        (unsigned long long)s->answers, (unsigned long long)s->errors,
		        us(hist_percentile_ns(&s->latency, 50)),
		        us(hist_percentile_ns(&s->latency, 99)), us(s->latency.max_ns));
		first = false;
	}
	fprintf(f, "]");
}

static void json_status(FILE *f, const struct fl_results *r)
{
	fprintf(f, "\"status\":{");
	bool first_op = true;
	for (int op = 0; op < FL_OP_COUNT; op++) {
		if (r->op[op].count == 0)
			continue;
		fprintf(f, "%s\"%s\":{", first_op ? "" : ",", fl_op_name((enum fl_op)op));
		bool first = true;
		for (int s = 0; s < FL_STATUS_MAX; s++)
			if (r->status[op][s]) {
				fprintf(f, "%s\"%d\":%llu", first ? "" : ",", s,
				        (unsigned long long)r->status[op][s]);
				first = false;
			}
		fprintf(f, "}");
		first_op = false;
	}
	fprintf(f, "},\"errors\":{");
	for (int e = 0; e < FL_E_COUNT; e++)
		fprintf(f, "%s\"%s\":%llu", e ? "," : "", fl_err_name((enum fl_err)e),
		        (unsigned long long)r->errors[e]);
	fprintf(f, "}");
}

static int write_json(const struct options *o, const struct fl_results *r,
                      const struct cpu_figures *cpu)
{
	const struct fl_config *c = &o->cfg;
	FILE *f = fopen(o->json_path, "w");
	if (f == NULL) {
		fprintf(stderr, "flashload: %s: %s\n", o->json_path, strerror(errno));
		return -1;
	}
	fprintf(f, "{\"tool\":\"flashload\",\"label\":\"%s\",\"scenario\":\"%s\",\"url\":\"%s\","
	        "\"sku\":\"%s\",\"connections\":%u,\"threads\":%u,\"pipeline\":%u,"
	        "\"rate\":%.1f,\"duration_s\":%.3f,\"elapsed_s\":%.3f,\"answers\":%llu,"
	        "\"sent\":%llu,\"unsent_backlog\":%llu,\"reconnects\":%llu,\"rps\":%.1f,",
	        o->label ? o->label : "", scenario_name(c->scenario), o->url, c->sku,
	        c->connections, c->threads, c->pipeline, c->rate_per_s, c->duration_s,
	        r->elapsed_s, (unsigned long long)r->answers, (unsigned long long)r->sent,
	        (unsigned long long)r->unsent_backlog, (unsigned long long)r->reconnects,
	        r->answers / r->elapsed_s);
	if (cpu->ok)
		fprintf(f, "\"server_cpu_us\":%lld,\"server_cpu_us_per_req\":%.3f,",
		        (long long)(cpu->after_us - cpu->before_us), cpu_per_req(cpu, r));
	json_status(f, r);
	fprintf(f, ",\"latency_us\":");
	json_latency(f, &r->all);
	fprintf(f, ",\"latency_by_op_us\":{");
	bool first = true;
	for (int op = 0; op < FL_OP_COUNT; op++) {
		if (r->op[op].count == 0)
			continue;
		fprintf(f, "%s\"%s\":", first ? "" : ",", fl_op_name((enum fl_op)op));
		json_latency(f, &r->op[op]);
		first = false;
	}
	fprintf(f, "},");
	json_series(f, r);
	fprintf(f, "}\n");
	return fclose(f) == 0 ? 0 : -1;
}

/* ---- main ------------------------------------------------------------- */

static void on_signal(int sig)
{
	(void)sig;
	fl_stop = 1;
}

static uint64_t random_run_id(void)
{
	uint64_t id = 0;
	if (getrandom(&id, sizeof(id), 0) != (ssize_t)sizeof(id))
		id = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
	return id;
}

int main(int argc, char **argv)
{
	struct options o = { .users = 1000, .tier = 0 };
	fl_config_default(&o.cfg);
	int rc = parse_args(argc, argv, &o);
	if (rc != 0)
		return rc;
	o.cfg.run_id = random_run_id();
	if ((rc = mint_tokens(&o)) != 0)
		return rc;
	const char *why = fl_config_check(&o.cfg);
	if (why != NULL)
		return die(why);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);

	struct cpu_figures cpu = { 0 };
	if (o.pid_count)
		cpu.before_us = proc_cpu_us(o.pids, o.pid_count);
	struct fl_results *r = NULL;
	if (fl_run(&o.cfg, &r) != 0)
		return die("could not start the load threads");
	if (o.pid_count) {
		cpu.after_us = proc_cpu_us(o.pids, o.pid_count);
		cpu.ok = cpu.before_us >= 0 && cpu.after_us >= cpu.before_us;
		if (!cpu.ok)
			fprintf(stderr, "flashload: cannot read /proc for --server-pid\n");
	}
	if (o.quiet)
		printf("%.1f req/s p50 %.1f µs p99 %.1f µs answers %llu\n", r->answers / r->elapsed_s,
		       us(hist_percentile_ns(&r->all, 50)), us(hist_percentile_ns(&r->all, 99)),
		       (unsigned long long)r->answers);
	else
		print_text(&o, r, &cpu);
	if (o.json_path != NULL && write_json(&o, r, &cpu) != 0)
		rc = 1;
	if (r->answers == 0)
		rc = 1;
	fl_results_free(r);
	free(g_tokens);
	free(g_token_off);
	return rc;
}
