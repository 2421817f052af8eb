/* preflight.c - `flashctl preflight`: the go/no-go table before a sale.
 * Every check prints one row (check, measured, needed, verdict). GO and
 * WARN pass; any NO-GO makes the exit status 1. The inputs are flashsaled's
 * own config file (--config: data-dir, postgres, redis, kafka,
 * payment-provider, table capacities) plus overrides, and the running
 * flashsaled's /metrics when its admin socket answers (sink state and lag).
 *
 * Checks: journal disk free vs the sale's expected bytes; fdatasync p99
 * measured on the journal's file system; PostgreSQL (SELECT 1), Redis
 * (PING), Kafka brokers (TCP) reachable; sinks connected and caught up;
 * payment provider reachable (TCP); clock synchronised (adjtimex); table
 * capacities vs the expected crowd; with --dpdk, free hugepages and the
 * NIC's link. Bounded: each network check gives up after 3 s.
 */
#include "control/preflight.h"
#include "control/ctl_client.h"
#include "control/ctl_view.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/timex.h>
#include <time.h>
#include <unistd.h>
#ifdef CTL_HAVE_PQ
#include <libpq-fe.h>
#endif

#define NET_TIMEOUT_MS      3000
#define SYNC_SAMPLES        200        /* fdatasync calls measured */
#define SYNC_P99_MAX_MS     20        /* default of --fdatasync-p99-max-ms */
#define BYTES_PER_DECISION  256        /* journal bytes per decision when no flashsaled tells us */

struct pf {
	const char *data_dir, *postgres, *redis, *kafka, *pay, *iface;
	uint64_t expect_rps, expect_minutes, expect_users;
	uint64_t users_max, res_max, idem_max;
	uint64_t sync_p99_max_ms;
	int dpdk;
	int nogo, warn;
};

static void row(struct pf *p, const char *check, const char *got, const char *need, int verdict)
{
	static const char *const names[] = { "GO", "WARN", "NO-GO" };
	printf("%-26s %-44s %-28s %s\n", check, got, need, names[verdict]);
	if (verdict == 2)
		p->nogo++;
	else if (verdict == 1)
		p->warn++;
}

static char *dup_value(const char *v)
{
	char *s = strdup(v);
	size_t n = strlen(s);
	while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r'))
		s[--n] = 0;
	return s;
}

static uint64_t num(const char *name, const char *v)
{
	char *e;
	errno = 0;
	unsigned long long x = strtoull(v, &e, 10);
	if (errno || e == v || *e || v[0] == '-') {
		fprintf(stderr, "flashctl: preflight: %s: '%s' is not a number\n", name, v);
		exit(2);
	}
	return x;
}

/* flashsaled's "name = value" config: only the names preflight needs. */
static void read_config(struct pf *p, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		fprintf(stderr, "flashctl: preflight: cannot read --config '%s': %s\n", path, strerror(errno));
		exit(2);
	}
	char line[512];
	while (fgets(line, sizeof line, f)) {
		char name[64], value[400];
		if (line[0] == '#' || sscanf(line, " %63[a-z-] = %399[^\n]", name, value) != 2)
			continue;
		if (strcmp(name, "data-dir") == 0) p->data_dir = dup_value(value);
		else if (strcmp(name, "postgres") == 0) p->postgres = dup_value(value);
		else if (strcmp(name, "redis") == 0) p->redis = dup_value(value);
		else if (strcmp(name, "kafka") == 0) p->kafka = dup_value(value);
		else if (strcmp(name, "payment-provider") == 0) p->pay = dup_value(value);
		else if (strcmp(name, "users-max") == 0) p->users_max = num(name, value);
		else if (strcmp(name, "reservations-max") == 0) p->res_max = num(name, value);
		else if (strcmp(name, "idempotency-keys-max") == 0) p->idem_max = num(name, value);
		else if (strcmp(name, "dpdk") == 0) p->dpdk = 1;
	}
	fclose(f);
}

/* TCP connect to host:port within NET_TIMEOUT_MS; returns fd or -1 (reason in err). */
static int tcp_connect(const char *host, const char *port, char *err, size_t err_len)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM }, *res = NULL;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, err_len, "%s: %s", host, gai_strerror(rc));
		return -1;
	}
	int fd = socket(res->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0 || (connect(fd, res->ai_addr, res->ai_addrlen) != 0 && errno != EINPROGRESS)) {
		snprintf(err, err_len, "%s:%s: %s", host, port, strerror(errno));
		freeaddrinfo(res);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	freeaddrinfo(res);
	struct pollfd pfd = { .fd = fd, .events = POLLOUT };
	int soerr = 0;
	socklen_t sl = sizeof soerr;
	if (poll(&pfd, 1, NET_TIMEOUT_MS) != 1 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr) {
		snprintf(err, err_len, "%s:%s: %s", host, port, soerr ? strerror(soerr) : "timed out");
		close(fd);
		return -1;
	}
	int fl = fcntl(fd, F_GETFL);
	fcntl(fd, F_SETFL, fl & ~O_NONBLOCK);
	struct timeval tv = { NET_TIMEOUT_MS / 1000, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
	return fd;
}

/* Splits "host:port" (last colon) into its parts. */
static int split_hostport(const char *v, char *host, size_t host_cap, char *port, size_t port_cap)
{
	const char *c = strrchr(v, ':');
	if (c == NULL || c == v || (size_t)(c - v) >= host_cap || strlen(c + 1) >= port_cap)
		return -1;
	memcpy(host, v, (size_t)(c - v));
	host[c - v] = 0;
	strcpy(port, c + 1);
	return 0;
}

static void check_disk(struct pf *p, double bytes_per_decision)
{
	struct statvfs sv;
	char got[128], need[128];
	if (statvfs(p->data_dir, &sv) != 0) {
		snprintf(got, sizeof got, "%s: %s", p->data_dir, strerror(errno));
		row(p, "journal disk free", got, "a readable --data-dir", 2);
		return;
	}
	double free_b = (double)sv.f_bavail * (double)sv.f_frsize;
	/* every decision of the sale, twice over (segments are preallocated and
	 * snapshots/archives need room beside them) */
	double need_b = 2.0 * (double)p->expect_rps * (double)p->expect_minutes * 60.0 * bytes_per_decision;
	if (need_b < 64.0 * 1024 * 1024)
		need_b = 64.0 * 1024 * 1024;   /* at least one journal segment */
	snprintf(got, sizeof got, "%.1f MiB free on %s", free_b / 1048576.0, p->data_dir);
	snprintf(need, sizeof need, ">= %.1f MiB", need_b / 1048576.0);
	row(p, "journal disk free", got, need, free_b >= need_b ? 0 : 2);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static void check_fdatasync(struct pf *p)
{
	char path[4096], got[128], need[64];
	snprintf(path, sizeof path, "%s/.preflight-sync.XXXXXX", p->data_dir);
	int fd = mkstemp(path);
	snprintf(need, sizeof need, "p99 <= %llu ms", (unsigned long long)p->sync_p99_max_ms);
	if (fd < 0) {
		snprintf(got, sizeof got, "cannot create a file in %s: %s", p->data_dir, strerror(errno));
		row(p, "fdatasync p99", got, need, 2);
		return;
	}
	unlink(path);
	static char block[4096];
	static double ms[SYNC_SAMPLES];
	int failed = 0;
	for (int i = 0; i < SYNC_SAMPLES && !failed; i++) {
		memset(block, i, sizeof block);
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		failed = pwrite(fd, block, sizeof block, (off_t)i * (off_t)sizeof block) != (ssize_t)sizeof block ||
		         fdatasync(fd) != 0;
		clock_gettime(CLOCK_MONOTONIC, &b);
		ms[i] = (double)(b.tv_sec - a.tv_sec) * 1e3 + (double)(b.tv_nsec - a.tv_nsec) / 1e6;
	}
	close(fd);
	if (failed) {
		snprintf(got, sizeof got, "write+fdatasync failed: %s", strerror(errno));
		row(p, "fdatasync p99", got, need, 2);
		return;
	}
	qsort(ms, SYNC_SAMPLES, sizeof ms[0], cmp_double);
	double p50 = ms[SYNC_SAMPLES / 2], p99 = ms[SYNC_SAMPLES * 99 / 100];
	snprintf(got, sizeof got, "p50 %.3f ms, p99 %.3f ms (%d x 4 KiB)", p50, p99, SYNC_SAMPLES);
	row(p, "fdatasync p99", got, need, p99 <= (double)p->sync_p99_max_ms ? 0 : 2);
}

static void check_postgres(struct pf *p)
{
	if (p->postgres == NULL) {
		row(p, "PostgreSQL", "not configured (no --postgres)", "-", 0);
		return;
	}
#ifdef CTL_HAVE_PQ
	char conninfo[1024], got[256];
	snprintf(conninfo, sizeof conninfo, "%s connect_timeout=3", p->postgres);
	PGconn *c = PQconnectdb(conninfo);
	if (PQstatus(c) != CONNECTION_OK) {
		snprintf(got, sizeof got, "UNREACHABLE: %s", PQerrorMessage(c));
		for (char *s = got; *s; s++)
			if (*s == '\n' || *s == '\t')
				*s = ' ';
		row(p, "PostgreSQL", got, "connect + SELECT 1", 2);
		PQfinish(c);
		return;
	}
	PGresult *r = PQexec(c, "SELECT 1");
	int ok = PQresultStatus(r) == PGRES_TUPLES_OK;
	if (ok)
		snprintf(got, sizeof got, "reachable (server %d)", PQserverVersion(c));
	else
		snprintf(got, sizeof got, "SELECT 1 failed: %s", PQerrorMessage(c));
	PQclear(r);
	PQfinish(c);
	row(p, "PostgreSQL", got, "connect + SELECT 1", ok ? 0 : 2);
#else
	row(p, "PostgreSQL", "this flashctl was built without libpq", "libpq-dev", 2);
#endif
}

static void check_redis(struct pf *p)
{
	if (p->redis == NULL) {
		row(p, "Redis", "not configured (no --redis)", "-", 0);
		return;
	}
	char host[256], port[16], err[256], got[300];
	if (split_hostport(p->redis, host, sizeof host, port, sizeof port) != 0) {
		row(p, "Redis", "--redis is not HOST:PORT", "HOST:PORT", 2);
		return;
	}
	int fd = tcp_connect(host, port, err, sizeof err);
	if (fd < 0) {
		snprintf(got, sizeof got, "UNREACHABLE: %s", err);
		row(p, "Redis", got, "PING -> PONG", 2);
		return;
	}
	char buf[64] = "";
	ssize_t n = send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6 ? recv(fd, buf, sizeof buf - 1, 0) : -1;
	close(fd);
	int ok = n >= 5 && strncmp(buf, "+PONG", 5) == 0;
	snprintf(got, sizeof got, "%s %s", ok ? "reachable:" : "no PONG from", p->redis);
	row(p, "Redis", got, "PING -> PONG", ok ? 0 : 2);
}

static void check_kafka(struct pf *p)
{
	if (p->kafka == NULL) {
		row(p, "Kafka", "not configured (no --kafka)", "-", 0);
		return;
	}
	char list[512], got[300], err[256];
	snprintf(list, sizeof list, "%s", p->kafka);
	int up = 0, total = 0;
	char *save = NULL;
	for (char *b = strtok_r(list, ",", &save); b; b = strtok_r(NULL, ",", &save)) {
		char host[256], port[16];
		total++;
		if (split_hostport(b, host, sizeof host, port, sizeof port) != 0)
			continue;
		int fd = tcp_connect(host, port, err, sizeof err);
		if (fd >= 0) {
			up++;
			close(fd);
		}
	}
	snprintf(got, sizeof got, "%d of %d brokers accept TCP", up, total);
	row(p, "Kafka", got, "every broker", up == total && total > 0 ? 0 : 2);
}

static void check_payment(struct pf *p)
{
	if (p->pay == NULL) {
		row(p, "payment provider", "built-in TEST provider", "--payment-provider URL", 1);
		return;
	}
	char host[256] = "", port[16] = "80", err[256], got[300];
	const char *h = strncmp(p->pay, "http://", 7) == 0 ? p->pay + 7 : NULL;
	if (h == NULL) {
		row(p, "payment provider", "not an http:// URL", "http://HOST[:PORT]/PATH", 2);
		return;
	}
	size_t hl = strcspn(h, ":/");
	if (hl == 0 || hl >= sizeof host) {
		row(p, "payment provider", "no host in the URL", "http://HOST[:PORT]/PATH", 2);
		return;
	}
	memcpy(host, h, hl);
	if (h[hl] == ':')
		snprintf(port, sizeof port, "%.*s", (int)strcspn(h + hl + 1, "/"), h + hl + 1);
	int fd = tcp_connect(host, port, err, sizeof err);
	if (fd < 0) {
		snprintf(got, sizeof got, "UNREACHABLE: %s", err);
		row(p, "payment provider", got, "TCP connect", 2);
		return;
	}
	close(fd);
	snprintf(got, sizeof got, "reachable (%s:%s)", host, port);
	row(p, "payment provider", got, "TCP connect", 0);
}

static void check_clock(struct pf *p)
{
	struct timex tx;
	memset(&tx, 0, sizeof tx);
	int st = adjtimex(&tx);
	char got[128];
	int synced = st != -1 && st != TIME_ERROR && !(tx.status & STA_UNSYNC);
	snprintf(got, sizeof got, "%s (max error %ld us)", synced ? "synchronised" : "NOT synchronised", tx.maxerror);
	/* token expiry and scheduled openings use the wall clock: a drift is a
	 * risk, not a stop (a WARN) */
	row(p, "clock sync", got, "NTP synchronised", synced ? 0 : 1);
}

static void check_capacity(struct pf *p)
{
	char got[128], need[128];
	uint64_t users = p->users_max ? p->users_max : 1000000, res = p->res_max ? p->res_max : 4000000;
	uint64_t idem = p->idem_max ? p->idem_max : 10000000;
	uint64_t crowd = p->expect_users;
	uint64_t attempts = p->expect_rps * p->expect_minutes * 60;
	snprintf(got, sizeof got, "users-max %llu", (unsigned long long)users);
	snprintf(need, sizeof need, ">= %llu expected users", (unsigned long long)crowd);
	row(p, "capacity: users", got, need, users >= crowd ? 0 : 2);
	snprintf(got, sizeof got, "reservations-max %llu", (unsigned long long)res);
	snprintf(need, sizeof need, ">= %llu (one per user)", (unsigned long long)crowd);
	row(p, "capacity: reservations", got, need, res >= crowd ? 0 : 2);
	snprintf(got, sizeof got, "idempotency-keys-max %llu", (unsigned long long)idem);
	snprintf(need, sizeof need, ">= %llu attempts", (unsigned long long)attempts);
	row(p, "capacity: idempotency keys", got, need, idem >= attempts ? 0 : 1);
}

static void check_dpdk(struct pf *p)
{
	FILE *f = fopen("/proc/meminfo", "r");
	long free_pages = -1, size_kb = 0;
	char line[256];
	while (f && fgets(line, sizeof line, f)) {
		sscanf(line, "HugePages_Free: %ld", &free_pages);
		sscanf(line, "Hugepagesize: %ld kB", &size_kb);
	}
	if (f)
		fclose(f);
	char got[128];
	double mib = free_pages > 0 ? (double)free_pages * (double)size_kb / 1024.0 : 0;
	snprintf(got, sizeof got, "%ld free (%.0f MiB)", free_pages, mib);
	row(p, "hugepages (--dpdk)", got, ">= 512 MiB free", mib >= 512 ? 0 : 2);
	if (p->iface == NULL) {
		row(p, "NIC link (--dpdk)", "no --iface given", "--iface IF: operstate up", 1);
		return;
	}
	char path[256], state[32] = "";
	snprintf(path, sizeof path, "/sys/class/net/%s/operstate", p->iface);
	f = fopen(path, "r");
	if (f == NULL || fscanf(f, "%31s", state) != 1)
		snprintf(state, sizeof state, "unknown");
	if (f)
		fclose(f);
	snprintf(got, sizeof got, "%s: %s", p->iface, state);
	row(p, "NIC link (--dpdk)", got, "up", strcmp(state, "up") == 0 ? 0 : 2);
}

/* The running flashsaled (if its admin socket answers): sinks, bytes per decision. */
static double check_running(struct pf *p, const char *admin, const char *token)
{
	static char buf[512 * 1024];
	static struct ctl_scrape s;
	const char *body;
	char err[256], got[300];
	int st = ctl_client_call(admin, token, "GET", "/metrics", buf, sizeof buf, &body, NET_TIMEOUT_MS, err, sizeof err);
	if (st != 200) {
		snprintf(got, sizeof got, "not answering (%s)", st < 0 ? err : "GET /metrics refused");
		row(p, "flashsaled", got, "running (sinks checked then)", 1);
		return BYTES_PER_DECISION;
	}
	ctl_scrape_parse(body, 0, &s);
	snprintf(got, sizeof got, "running, journal seq %.0f", s.journal_seq);
	row(p, "flashsaled", got, "running", 0);
	for (uint32_t i = 0; i < s.sink_count; i++) {
		char name[64];
		snprintf(name, sizeof name, "sink %s", s.sink[i].name);
		snprintf(got, sizeof got, "%s, lag %.0f batches (%.1f s)",
		         s.sink[i].connected == 0 ? "DISCONNECTED" : "connected", s.sink[i].lag, s.sink[i].lag_s);
		row(p, name, got, "connected, lag < 1000", s.sink[i].connected == 0 ? 2 : s.sink[i].lag >= 1000 ? 1 : 0);
	}
	/* measured journal bytes per decision, when there is history */
	const char *jb = strstr(body, "\nflashsale_journal_bytes ");
	const char *rc = strstr(body, "\nflashsale_journal_records_total ");
	double bytes = jb ? strtod(jb + 25, NULL) : 0, recs = rc ? strtod(rc + 33, NULL) : 0;
	return recs >= 1000 && bytes > 0 ? bytes / recs : BYTES_PER_DECISION;
}

static const char pf_usage[] =
"usage: flashctl preflight [--config FLASHSALED.conf] [--data-dir DIR] [--postgres CONNINFO]\n"
"         [--redis HOST:PORT] [--kafka BROKERS] [--payment-provider URL] [--expect-rps N]\n"
"         [--expect-minutes M] [--expect-users N] [--fdatasync-p99-max-ms 20] [--dpdk [--iface IF]]\n"
"A go/no-go table; exit 1 on any NO-GO (WARN passes). Defaults: ./var, 1000 rps for 10 min,\n"
"100000 users; the rest from --config (flashsaled's own file) and the options.\n";

int ctl_preflight(int argc, char **argv, const char *admin, const char *token)
{
	struct pf p = { .data_dir = "./var", .expect_rps = 1000, .expect_minutes = 10, .expect_users = 100000,
	              .sync_p99_max_ms = SYNC_P99_MAX_MS };
	for (int i = 0; i < argc; i++) {
		const char *a = argv[i];
		if (strcmp(a, "--dpdk") == 0) {
			p.dpdk = 1;
			continue;
		}
		if (strcmp(a, "--help") == 0) {
			fputs(pf_usage, stdout);
			return 0;
		}
		if (i + 1 >= argc) {
			fprintf(stderr, "flashctl: preflight: %s needs a value\n%s", a, pf_usage);
			exit(2);
		}
		const char *v = argv[++i];
		if (strcmp(a, "--config") == 0) read_config(&p, v);
		else if (strcmp(a, "--data-dir") == 0) p.data_dir = v;
		else if (strcmp(a, "--postgres") == 0) p.postgres = v;
		else if (strcmp(a, "--redis") == 0) p.redis = v;
		else if (strcmp(a, "--kafka") == 0) p.kafka = v;
		else if (strcmp(a, "--payment-provider") == 0) p.pay = v;
		else if (strcmp(a, "--iface") == 0) p.iface = v;
		else if (strcmp(a, "--expect-rps") == 0) p.expect_rps = num(a, v);
		else if (strcmp(a, "--expect-minutes") == 0) p.expect_minutes = num(a, v);
		else if (strcmp(a, "--expect-users") == 0) p.expect_users = num(a, v);
		else if (strcmp(a, "--fdatasync-p99-max-ms") == 0) p.sync_p99_max_ms = num(a, v);
		else {
			fprintf(stderr, "flashctl: preflight: unknown option %s\n%s", a, pf_usage);
			exit(2);
		}
	}
	printf("%-26s %-44s %-28s %s\n", "CHECK", "MEASURED", "NEEDED", "VERDICT");
	double per_decision = check_running(&p, admin, token);
	check_disk(&p, per_decision);
	check_fdatasync(&p);
	check_postgres(&p);
	check_redis(&p);
	check_kafka(&p);
	check_payment(&p);
	check_clock(&p);
	check_capacity(&p);
	if (p.dpdk)
		check_dpdk(&p);
	printf("\n%s: %d no-go, %d warning%s\n", p.nogo ? "NO-GO" : "GO", p.nogo, p.warn, p.warn == 1 ? "" : "s");
	return p.nogo ? 1 : 0;
}
