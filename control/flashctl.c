/* flashctl.c - the operator CLI. Sale verbs and metrics go to flashsaled's
 * admin socket (HTTP/1.1, one request per connection); `token` mints a JWT
 * locally from the shared secret file.
 */
#include "common/fs_jwt.h"
#include "control/ctl_client.h"
#include "control/ctl_view.h"
#include "control/preflight.h"
#include "control/report.h"
#include "control/shardmap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

static const char usage[] =
"usage: flashctl [--admin unix:PATH|HOST:PORT] [--admin-token-file F] COMMAND ...\n"
"  sale create SKU --stock N [--per-user N] [--hold 120s] [--waitlist N]\n"
"                  [--default-tier T] [--opens-at RFC3339] [--price-cents N]\n"
"                  [--prequeue-window 10m --outflow N]   a waiting room: attempts in the window\n"
"                  before --opens-at queue up (202 QUEUED); at the opening they are shuffled with a\n"
"                  seed committed now (SHA-256 in `sale status`, seed revealed in the journal) and\n"
"                  admitted N per second in that order; later arrivals queue behind\n"
"  sale open|pause|freeze|resume|close SKU\n"
"  sale archive SKU           a closed sale gives its slot back (--skus-max counts live sales) once\n"
"                             --retention reclaimed its reservations (else 409 retained) and every\n"
"                             sink consumed it (else 409 sinks_behind); the name may be created again\n"
"  sale status SKU            counters (as GET /v1/skus/SKU) plus rates and sink lag\n"
"  stock add SKU N            add N units to a sale\n"
"  stock remove SKU N         take N units out of a sale, only from available (never below reserved +\n"
"                             sold; 409 bad_state otherwise)\n"
"  order refund ORDER_ID [--restock]\n"
"                             PAID -> REFUNDED through the payment provider (idempotency key\n"
"                             refund-ORDER_ID, retried after a crash, never refunded twice); the units\n"
"                             leave the sale unless --restock puts them back on sale; waits up to\n"
"                             10 s for the provider (then 202 REFUNDING: ask again to read the outcome)\n";
static const char usage2[] =
"  ip deny|allow|remove CIDR  the operator's IP lists (journaled); deny: 403 at the edge;\n"
"                             allow: exempt from IP-based limits and scores\n"
"  ip list                    the IP rules in force\n"
"  tier set USER T            a user's tier (0..4) when the token has no tier claim\n"
"  tier clear USER            remove the entry (and the user's risk flag)\n"
"  metrics                    Prometheus text from the admin socket\n"
"  preflight [--config FLASHSALED.conf] [--data-dir DIR] [--postgres C] [--redis H:P] [--kafka B]\n"
"            [--payment-provider URL] [--expect-rps N] [--expect-minutes M] [--expect-users N]\n"
"            [--dpdk [--iface IF]]\n"
"                             go/no-go table before a sale: journal disk free vs the expected bytes,\n"
"                             measured fdatasync p99, PostgreSQL/Redis/Kafka reachable, sinks\n"
"                             connected and caught up, payment provider reachable, clock sync,\n"
"                             capacities vs the crowd (hugepages, NIC link with --dpdk); exit 1 on\n"
"                             any NO-GO\n"
"  report SKU [--data-dir DIR] [--shard-map FILE]  closing statement of a sale from its journal\n"
"                             (pure replay; with writer shards, the journal of the SKU's shard): units\n"
"                             sold/held/available/returned, orders paid/failed/pending, revenue,\n"
"                             the zero-oversell proof, the bot-flagged share of winners; refusals\n"
"                             by reason from the running flashsaled (they are not journaled)\n"
"  top [--interval-ms 1000] [--frames N]\n"
"                             live view in the terminal (plain ANSI, redrawn in place): per SKU\n"
"                             units, state, grant/refusal rates and a stock sparkline; req/s and\n"
"                             latency p50/p99 by route; batch size, fdatasync, rings, sinks,\n"
"                             refusals by reason, payment breaker. --frames N: stop after N\n"
"                             frames (no screen clearing when stdout is not a terminal)\n"
"  drain                      /readyz answers 503 from now on (before a stop)\n"
"  snapshot                   snapshot the writer's state now; prints its journal sequence\n"
"  backup DIR                 a consistent copy (fresh snapshot + journal tail), verified; DIR\n"
"                             (new or empty) is then a valid --data-dir\n"
"  promote                    (a --standby flashsaled) fence the old primary, apply the log up to the\n"
"                             fence, then take writes; prints role, epoch and the last applied seq\n"
"  replication                role, epoch, replication lag and fencing state (--replicate)\n"
"  token --user U [--tier T] [--ttl 1h] [--device D] [--jwt-secret-file F]\n"
"                             print an HS256 JWT (default secret ./var/jwt.secret)\n"
"Defaults: --admin unix:./var/admin.sock; a TCP admin needs --admin-token-file (./var/admin.token).\n"
"Every admin command is journaled with who asked: uid:N (the admin socket's peer) or token:NAME\n"
"(the admin token file's name, over TCP).\n"
"Exit status: 0 on success, 1 when flashsaled refused (its reason is printed), 2 on bad usage.\n";

/* A string of its own: C11 caps one literal at 4095 bytes. */
static const char usage_shards[] =
"Appliances as shards (README \"Shards behind nginx\"):\n"
"  shard-map --nginx|--haproxy --map FILE [--skus A,B,...] [--listen HOST:PORT] [--out FILE]\n"
"                             the proxy configuration for appliances as shards (README \"Shards behind\n"
"                             nginx\"): SKU routes by the map's pins and the SKUs listed, ids by the\n"
"                             shard index they carry; other SKUs go to the first shard (421 if not its)\n"
"  report SKU on a box that does not own SKU names the shard that does\n";

static const char *admin = "unix:./var/admin.sock";
static const char *admin_token_file = "./var/admin.token";

static int fail(const char *fmt, const char *arg)
{
	fprintf(stderr, "flashctl: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(2);
}

/* "500ms", "120s", "2m", "1h", or plain seconds -> milliseconds. */
static uint64_t parse_duration_ms(const char *v)
{
	char *e;
	errno = 0;
	double x = strtod(v, &e);
	if (errno || e == v || x < 0)
		fail("'%s' is not a duration (500ms, 120s, 2m, 1h)", v);
	double mult = 1000;
	if (strcmp(e, "ms") == 0) mult = 1;
	else if (strcmp(e, "s") == 0 || *e == 0) mult = 1000;
	else if (strcmp(e, "m") == 0) mult = 60000;
	else if (strcmp(e, "h") == 0) mult = 3600000;
	else fail("'%s' is not a duration (500ms, 120s, 2m, 1h)", v);
	return (uint64_t)(x * mult);
}

static uint64_t parse_num(const char *name, const char *v)
{
	char *e;
	errno = 0;
	unsigned long long x = strtoull(v, &e, 10);
	if (errno || e == v || *e || v[0] == '-')
		fail("--%s needs a non-negative integer", name);
	return x;
}

static int64_t parse_rfc3339_ms(const char *v)
{
	struct tm tm;
	memset(&tm, 0, sizeof tm);
	const char *e = strptime(v, "%Y-%m-%dT%H:%M:%S", &tm);
	if (e == NULL)
		fail("--opens-at: '%s' is not RFC 3339 (2026-11-25T18:00:00Z)", v);
	int64_t ms = 0;
	if (*e == '.') {
		int digits = 0;
		for (e++; *e >= '0' && *e <= '9'; e++, digits++)
			if (digits < 3)
				ms = ms * 10 + (*e - '0');
		while (digits++ < 3)
			ms *= 10;
	}
	if (strcmp(e, "Z") != 0 && strcmp(e, "+00:00") != 0)
		fail("--opens-at: '%s' must be UTC (end with Z)", v);
	return (int64_t)timegm(&tm) * 1000 + ms;
}

static int connect_admin(void)
{
	if (strncmp(admin, "unix:", 5) == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (strlen(admin + 5) >= sizeof sa.sun_path)
			fail("--admin: path too long: %s", admin);
		strcpy(sa.sun_path, admin + 5);
		int fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
			fprintf(stderr, "flashctl: cannot reach flashsaled at %s: %s\n", admin, strerror(errno));
			exit(1);
		}
		return fd;
	}
	char host[64];
	const char *colon = strrchr(admin, ':');
	if (colon == NULL || (size_t)(colon - admin) >= sizeof host)
		fail("--admin: '%s' is neither unix:PATH nor HOST:PORT", admin);
	memcpy(host, admin, (size_t)(colon - admin));
	host[colon - admin] = 0;
	char *end;
	unsigned long port = strtoul(colon + 1, &end, 10);   /* atoi took "99999" as port 34463 */
	if (end == colon + 1 || *end != 0 || port == 0 || port > 65535)
		fail("--admin: '%s' has no valid port", admin);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1)
		fail("--admin: '%s' is not an IPv4 address", host);
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	if (connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		fprintf(stderr, "flashctl: cannot reach flashsaled at %s: %s\n", admin, strerror(errno));
		exit(1);
	}
	return fd;
}

/* Sends one request; prints the body; returns the exit status. */
static int call(const char *method, const char *target)
{
	char auth[FS_SECRET_LEN_MAX + 64] = "";
	if (strncmp(admin, "unix:", 5) != 0) {
		uint8_t tok[FS_SECRET_LEN_MAX + 1];
		char err[256];
		int n = fs_secret_load(admin_token_file, tok, err, sizeof err);
		if (n <= 0)
			fail("%s", err);
		snprintf(auth, sizeof auth, "Authorization: Bearer %.*s\r\n", n, (char *)tok);
	}
	char req[1024];
	int len = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: flashsaled\r\n%sContent-Length: 0\r\n"
	                   "Connection: close\r\n\r\n", method, target, auth);
	int fd = connect_admin();
	if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len)
		fail("%s", "cannot send to flashsaled");
	static char resp[512 * 1024];
	size_t got = 0;
	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (poll(&p, 1, 65000) <= 0)   /* promote applies the log first */
			fail("%s", "no answer from flashsaled within 10 s");
		ssize_t r = recv(fd, resp + got, sizeof resp - 1 - got, 0);
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	resp[got] = 0;
	int status = 0;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1)
		fail("%s", "malformed answer from flashsaled");
	char *body = strstr(resp, "\r\n\r\n");
	body = body ? body + 4 : resp + got;
	if (status >= 200 && status < 300) {
		fputs(body, stdout);
		if (got && body[strlen(body) - 1] != '\n')
			putchar('\n');
		return 0;
	}
	fprintf(stderr, "flashctl: %d %s\n", status, body);
	return 1;
}

static int cmd_sale_create(int argc, char **argv)
{
	if (argc < 1)
		fail("%s", "sale create needs a SKU");
	const char *sku = argv[0];
	char q[512];
	int n = snprintf(q, sizeof q, "/admin/sales/%s?", sku);
	int have_stock = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			fail("%s needs a value", a);
		i++;
		if (strcmp(a, "--stock") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&stock=%llu", (unsigned long long)parse_num("stock", v)), have_stock = 1;
		else if (strcmp(a, "--per-user") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&per_user=%llu", (unsigned long long)parse_num("per-user", v));
		else if (strcmp(a, "--hold") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&hold_ms=%llu", (unsigned long long)parse_duration_ms(v));
		else if (strcmp(a, "--waitlist") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&waitlist=%llu", (unsigned long long)parse_num("waitlist", v));
		else if (strcmp(a, "--default-tier") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&default_tier=%llu", (unsigned long long)parse_num("default-tier", v));
		else if (strcmp(a, "--price-cents") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&price_cents=%llu", (unsigned long long)parse_num("price-cents", v));
		else if (strcmp(a, "--prequeue-window") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&prequeue_window_ms=%llu", (unsigned long long)parse_duration_ms(v));
		else if (strcmp(a, "--outflow") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&outflow_per_s=%llu", (unsigned long long)parse_num("outflow", v));
		else if (strcmp(a, "--opens-at") == 0)
			n += snprintf(q + n, sizeof q - (size_t)n, "&opens_at_ms=%lld", (long long)parse_rfc3339_ms(v));
		else
			fail("sale create: unknown option %s", a);
	}
	if (!have_stock)
		fail("%s", "sale create needs --stock N");
	return call("POST", q);
}

static int cmd_sale(int argc, char **argv)
{
	if (argc < 2)
		fail("%s", "sale needs a verb and a SKU (see --help)");
	if (strcmp(argv[0], "create") == 0)
		return cmd_sale_create(argc - 1, argv + 1);
	char target[256];
	if (strcmp(argv[0], "status") == 0) {
		snprintf(target, sizeof target, "/admin/sales/%s", argv[1]);
		return call("GET", target);
	}
	static const char *verbs[] = { "open", "pause", "freeze", "resume", "close", "archive" };
	for (size_t i = 0; i < sizeof verbs / sizeof verbs[0]; i++)
		if (strcmp(argv[0], verbs[i]) == 0) {
			snprintf(target, sizeof target, "/admin/sales/%s/%s", argv[1], verbs[i]);
			return call("POST", target);
		}
	return fail("unknown sale verb '%s' (see --help)", argv[0]);
}

static int cmd_token(int argc, char **argv)
{
	const char *user = NULL, *secret = "./var/jwt.secret", *dev = NULL;
	int tier = -1;
	uint64_t ttl_ms = 3600000;
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v == NULL)
			fail("%s needs a value", a);
		i++;
		if (strcmp(a, "--user") == 0) user = v;
		else if (strcmp(a, "--tier") == 0) {
			tier = (int)parse_num("tier", v);
			if (tier > 4)
				fail("%s", "--tier must be 0..4");
		} else if (strcmp(a, "--ttl") == 0) ttl_ms = parse_duration_ms(v);
		else if (strcmp(a, "--jwt-secret-file") == 0) secret = v;
		else if (strcmp(a, "--device") == 0) dev = v;
		else fail("token: unknown option %s", a);
	}
	if (user == NULL || strlen(user) == 0 || strlen(user) > FS_ID_LEN_MAX)
		fail("%s", "token needs --user U (1..64 bytes)");
	uint8_t key[FS_SECRET_LEN_MAX];
	char err[256];
	int key_len = fs_secret_load(secret, key, err, sizeof err);
	if (key_len <= 0)
		fail("%s", err);
	struct fs_claims c;
	memset(&c, 0, sizeof c);
	memcpy(c.sub, user, strlen(user));
	c.sub_len = (uint8_t)strlen(user);
	c.tier = (int8_t)tier;
	if (dev) {
		if (strlen(dev) > FS_ID_LEN_MAX)
			fail("%s", "--device: at most 64 bytes");
		memcpy(c.dev, dev, strlen(dev));
		c.dev_len = (uint8_t)strlen(dev);
	}
	c.exp_s = (int64_t)time(NULL) + (int64_t)(ttl_ms / 1000);
	char tok[FS_JWT_LEN_MAX];
	if (fs_jwt_mint(key, (size_t)key_len, &c, tok, sizeof tok) < 0)
		fail("%s", "cannot mint the token");
	puts(tok);
	return 0;
}

/* ---- top ------------------------------------------------------------------ */

#define TOP_SPARK 40   /* stock samples kept per SKU for the sparkline */

struct top_spark {
	char name[33];
	uint32_t n;
	double v[TOP_SPARK];   /* available, oldest first */
};

static double mono_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Eight-level sparkline of v[0..n) scaled to [0, top], UTF-8 blocks. */
static void sparkline(FILE *f, const double *v, uint32_t n, double top)
{
	static const char *const bars[8] = { "\u2581", "\u2582", "\u2583", "\u2584", "\u2585", "\u2586",
	                                     "\u2587", "\u2588" };
	for (uint32_t i = 0; i < n; i++) {
		int lvl = top > 0 ? (int)(v[i] / top * 7.0 + 0.5) : 0;
		fputs(bars[lvl < 0 ? 0 : lvl > 7 ? 7 : lvl], f);
	}
}

static void top_frame(FILE *f, const struct ctl_view *v, struct top_spark *sp, int tty)
{
	const char *eol = tty ? "\033[K\n" : "\n";
	const struct ctl_scrape *s = &v->cur;
	char stamp[32];
	time_t now = time(NULL);
	struct tm tm;
	gmtime_r(&now, &tm);
	strftime(stamp, sizeof stamp, "%H:%M:%SZ", &tm);
	if (tty)
		fputs("\033[H", f);
	fprintf(f, "\033[1mflashsale top\033[0m  %s  %s  journal seq %.0f  %.0f req/s", stamp, admin,
	        s->journal_seq, v->rps_total);
	static const char *const roles[3] = { "primary", "standby", "FENCED" };
	if (s->repl_role >= 0 && s->repl_role <= 2)
		fprintf(f, "  %s epoch %.0f lag %.0f ms (%.0f records)", roles[(int)s->repl_role], s->repl_epoch,
		        s->repl_lag_ms, s->repl_lag_records);
	fputs(eol, f);
	fprintf(f, "%s", eol);
	fprintf(f, "\033[1m%-16s %-9s %9s %9s %9s %9s %9s %9s %9s  %s\033[0m%s", "SKU", "state", "total", "available",
	        "reserved", "sold", "waiting", "granted/s", "refused/s", "available over time", eol);
	for (uint32_t i = 0; i < s->sku_count; i++) {
		const struct ctl_sku *k = &s->sku[i];
		struct top_spark *p = &sp[i];
		if (strcmp(p->name, k->name) != 0) {
			memset(p, 0, sizeof *p);
			snprintf(p->name, sizeof p->name, "%.32s", k->name);
		}
		if (p->n == TOP_SPARK)
			memmove(p->v, p->v + 1, sizeof p->v[0] * (TOP_SPARK - 1)), p->n--;
		p->v[p->n++] = k->available;
		const char *color = strcmp(k->state, "frozen") == 0 ? "\033[1;36m" : strcmp(k->state, "open") == 0 ?
		                    "\033[32m" : "\033[33m";
		fprintf(f, "%-16s %s%-9s\033[0m %9.0f %9.0f %9.0f %9.0f %9.0f %9.1f %9.1f  ", k->name, color, k->state,
		        k->total, k->available, k->reserved, k->sold, k->queued + k->waitlist, v->granted_rate[i],
		        v->refused_rate[i]);
		sparkline(f, p->v, p->n, k->total);
		fputs(eol, f);
	}
	fprintf(f, "%s\033[1m%-16s %9s %9s %9s %9s %9s\033[0m%s", eol, "route", "2xx/s", "4xx/s", "5xx/s",
	        "p50 ms", "p99 ms", eol);
	for (int r = 0; r < CTL_ROUTES; r++) {
		double any = 0;
		for (int c = 0; c < CTL_CLASSES; c++)
			any += s->answers[r][c];
		if (any == 0)
			continue;
		fprintf(f, "%-16s %9.1f %9.1f %9.1f ", ctl_route_names[r], v->rps[r][2], v->rps[r][4], v->rps[r][5]);
		if (v->p50_ms[r] < 0)
			fprintf(f, "%9s %9s%s", "-", "-", eol);
		else
			fprintf(f, "%9.2f %9.2f%s", v->p50_ms[r], v->p99_ms[r], eol);
	}
	char b50[16] = "-", b99[16] = "-", f50[16] = "-", f99[16] = "-";
	if (v->batch_p50 >= 0)
		snprintf(b50, sizeof b50, "%.1f", v->batch_p50), snprintf(b99, sizeof b99, "%.1f", v->batch_p99);
	if (v->fsync_p50_ms >= 0)
		snprintf(f50, sizeof f50, "%.3f", v->fsync_p50_ms), snprintf(f99, sizeof f99, "%.3f", v->fsync_p99_ms);
	fprintf(f, "%swriter: batch p50 %s p99 %s  fdatasync p50 %s ms p99 %s ms  ring depth %.0f  ring full %.0f%s",
	        eol, b50, b99, f50, f99, s->ring_depth, s->ring_full, eol);
	fprintf(f, "payments: breaker %s  in flight %.0f%s", s->breaker_open > 0 ? "\033[1;31mOPEN\033[0m" : "closed",
	        s->payments_outstanding, eol);
	fprintf(f, "sinks:");
	for (uint32_t i = 0; i < s->sink_count; i++)
		fprintf(f, "  %s lag %.0f batches %.1f s%s", s->sink[i].name, s->sink[i].lag, s->sink[i].lag_s,
		        s->sink[i].connected == 0 ? " \033[1;31mDISCONNECTED\033[0m" : "");
	fprintf(f, "%s%srefusals:", s->sink_count ? "" : " none", eol);
	for (uint32_t i = 0; i < s->reason_count; i++)
		fprintf(f, "  %s %.1f/s (%.0f)", s->reason[i].name, v->reason_rate[i], s->reason[i].total);
	fputs(eol, f);
	if (tty)
		fputs("\033[J", f);
	else
		fputs("--\n", f);
	fflush(f);
}

static int cmd_top(int argc, char **argv)
{
	uint64_t interval_ms = 1000, frames = 0;
	for (int i = 0; i < argc; i++) {
		if (i + 1 >= argc)
			fail("%s needs a value", argv[i]);
		if (strcmp(argv[i], "--interval-ms") == 0)
			interval_ms = parse_num("interval-ms", argv[++i]);
		else if (strcmp(argv[i], "--frames") == 0)
			frames = parse_num("frames", argv[++i]);
		else
			fail("top: unknown option %s", argv[i]);
	}
	if (interval_ms < 100)
		interval_ms = 100;
	char tok[FS_SECRET_LEN_MAX + 1] = "", err[512];
	if (strncmp(admin, "unix:", 5) != 0 && ctl_client_token(admin_token_file, tok, sizeof tok, err, sizeof err) != 0)
		fail("%s", err);
	static char buf[512 * 1024];
	static struct ctl_scrape a, b;
	static struct ctl_view v;
	static struct top_spark sp[CTL_SKUS_MAX];
	struct ctl_scrape *prev = NULL, *cur = &a;
	int tty = isatty(STDOUT_FILENO);
	if (tty)
		fputs("\033[2J", stdout);
	for (uint64_t f = 0; frames == 0 || f < frames; f++) {
		const char *body;
		int st = ctl_client_call(admin, tok[0] ? tok : NULL, "GET", "/metrics", buf, sizeof buf, &body, 5000,
		                         err, sizeof err);
		if (st != 200) {
			fprintf(stderr, "flashctl: top: %s\n", st < 0 ? err : "GET /metrics refused");
			return 1;
		}
		ctl_scrape_parse(body, mono_s(), cur);
		ctl_view_make(prev, cur, &v);
		top_frame(stdout, &v, sp, tty);
		prev = cur;
		cur = cur == &a ? &b : &a;
		if (frames == 0 || f + 1 < frames)
			usleep((useconds_t)(interval_ms * 1000));
	}
	return 0;
}

int main(int argc, char **argv)
{
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			fputs(usage2, stdout);
			fputs(usage_shards, stdout);
			return 0;
		}
		if (strcmp(argv[i], "--admin") != 0 && strcmp(argv[i], "--admin-token-file") != 0)
			fail("unknown option %s (see --help)", argv[i]);
		if (i + 1 >= argc)
			fail("%s needs a value", argv[i]);
		if (strcmp(argv[i], "--admin") == 0)
			admin = argv[++i];
		else
			admin_token_file = argv[++i];
	}
	if (i >= argc)
		fail("%s", "a command is needed (see --help)");
	const char *cmd = argv[i++];
	if (strcmp(cmd, "sale") == 0)
		return cmd_sale(argc - i, argv + i);
	if (strcmp(cmd, "token") == 0)
		return cmd_token(argc - i, argv + i);
	if (strcmp(cmd, "ip") == 0 && argc - i == 1 && strcmp(argv[i], "list") == 0)
		return call("GET", "/admin/ip");
	if (strcmp(cmd, "ip") == 0 && argc - i == 2) {
		char target[256];
		snprintf(target, sizeof target, "/admin/ip?cidr=%s&action=%s", argv[i + 1], argv[i]);
		return call("POST", target);
	}
	if (strcmp(cmd, "tier") == 0 && argc - i == 3 && strcmp(argv[i], "set") == 0) {
		char target[256];
		snprintf(target, sizeof target, "/admin/tiers?user=%s&tier=%s", argv[i + 1], argv[i + 2]);
		return call("POST", target);
	}
	if (strcmp(cmd, "tier") == 0 && argc - i == 2 && strcmp(argv[i], "clear") == 0) {
		char target[256];
		snprintf(target, sizeof target, "/admin/tiers?user=%s&tier=clear", argv[i + 1]);
		return call("POST", target);
	}
	if (strcmp(cmd, "shard-map") == 0)
		return ctl_shard_map(argc - i, argv + i);
	if (strcmp(cmd, "report") == 0) {
		char tok[FS_SECRET_LEN_MAX + 1] = "", err[512];
		if (strncmp(admin, "unix:", 5) != 0 && ctl_client_token(admin_token_file, tok, sizeof tok, err, sizeof err) != 0)
			fail("%s", err);
		return ctl_report(argc - i, argv + i, admin, tok[0] ? tok : NULL);
	}
	if (strcmp(cmd, "preflight") == 0) {
		char tok[FS_SECRET_LEN_MAX + 1] = "", err[512];
		if (strncmp(admin, "unix:", 5) != 0 && ctl_client_token(admin_token_file, tok, sizeof tok, err, sizeof err) != 0)
			fail("%s", err);
		return ctl_preflight(argc - i, argv + i, admin, tok[0] ? tok : NULL);
	}
	if (strcmp(cmd, "top") == 0)
		return cmd_top(argc - i, argv + i);
	if (strcmp(cmd, "metrics") == 0)
		return call("GET", "/metrics");
	if (strcmp(cmd, "drain") == 0)
		return call("POST", "/admin/drain");
	if (strcmp(cmd, "snapshot") == 0 && argc - i == 0)
		return call("POST", "/admin/snapshot");
	if (strcmp(cmd, "backup") == 0 && argc - i == 1) {
		char abs[4096], target[4200];
		const char *d = argv[i];
		if (d[0] != '/' && getcwd(abs, sizeof abs - strlen(d) - 2) != NULL)
			d = strcat(strcat(abs, "/"), argv[i]);
		if (strpbrk(d, " &?#%\r\n") != NULL)
			fail("backup: '%s' must not contain spaces or & ? # %%", argv[i]);
		snprintf(target, sizeof target, "/admin/backup?dir=%s", d);
		return call("POST", target);
	}
	if (strcmp(cmd, "promote") == 0)
		return call("POST", "/admin/promote");
	if (strcmp(cmd, "replication") == 0)
		return call("GET", "/admin/replication");
	if (strcmp(cmd, "order") == 0 && (argc - i == 2 || (argc - i == 3 && strcmp(argv[i + 2], "--restock") == 0)) &&
	    strcmp(argv[i], "refund") == 0) {
		char target[256];
		if (fs_pubid_parse(argv[i + 1], strlen(argv[i + 1]), 'o') == 0)
			fail("order refund: '%s' is not an order id (o + 16 hex digits)", argv[i + 1]);
		snprintf(target, sizeof target, "/admin/orders/%s/refund%s", argv[i + 1], argc - i == 3 ? "?restock=1" : "");
		return call("POST", target);
	}
	if (strcmp(cmd, "stock") == 0 && argc - i == 3 && (strcmp(argv[i], "add") == 0 || strcmp(argv[i], "remove") == 0)) {
		char target[256];
		snprintf(target, sizeof target, "/admin/sales/%s/stock?%s=%llu", argv[i + 1], argv[i],
		         (unsigned long long)parse_num(argv[i], argv[i + 2]));
		return call("POST", target);
	}
	return fail("unknown command '%s' (see --help)", cmd);
}
