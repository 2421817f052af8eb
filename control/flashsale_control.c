/* flashsale_control.c - the control-plane process. It starts and supervises
 * one flashsaled (the command after `--`), restarts it with exponential
 * back-off after a crash, gives up after a crash loop, never restarts it
 * after journal damage (flashsaled's exit status 3: the file and offset are
 * logged and the process stays down, visibly, on stderr and the dashboard),
 * forwards SIGTERM/SIGINT as drain -> wait for in-flight checkouts and sink
 * lag -> stop, writes a pid file, and serves the operator dashboard (one
 * HTML page and a JSON endpoint) on --dashboard. It talks to flashsaled only
 * through the admin socket (GET /metrics, POST /admin/drain).
 *
 * One thread, one poll loop: the child's output pipe, a signalfd, the
 * dashboard listener, and a tick for scrapes and back-off. Every wait is
 * bounded; a dashboard client gets one request per connection.
 */
#include "control/ctl_client.h"
#include "control/ctl_view.h"
#include "control/dashboard_html.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define EXIT_JOURNAL_DAMAGE 3      /* flashsaled's status for a damaged journal */
#define HISTORY_POINTS      240     /* per SKU: 2 minutes at the default 500 ms */
#define LAST_LINES          16      /* child output kept to explain an exit */
#define METRICS_BYTES       (512 * 1024)
#define JSON_BYTES          (1024 * 1024)
#define DASH_REQ_BYTES      8192

enum state { ST_STARTING, ST_RUNNING, ST_BACKOFF, ST_DOWN, ST_DRAINING, ST_STOPPING };
static const char *const state_names[] = { "starting", "running", "restarting", "down", "draining", "stopping" };

struct options {
	char dash_host[64];
	uint16_t dash_port;                 /* 0: no dashboard */
	const char *pid_file;
	const char *admin;                  /* unix:PATH of the child's admin socket */
	const char *token_file;             /* dashboard off loopback; TCP admin */
	uint32_t backoff_ms, backoff_max_ms;
	uint32_t crash_loop;                /* crashes within crash_window_s that stop restarts */
	uint32_t crash_window_s;
	uint32_t drain_timeout_s;
	uint32_t refresh_ms;
	char **child_argv;
};

struct control {
	struct options o;
	enum state st;
	char reason[1024];                  /* why the child is down (state down/restarting) */
	pid_t child;
	int out_fd;                         /* the child's stdout+stderr */
	char line[2048];                    /* the current partial output line */
	size_t line_len;
	char last[LAST_LINES][512];
	uint32_t last_next;
	double started_s, ready_s, restart_at_s, drain_deadline_s, kill_at_s;
	uint32_t restarts, streak;          /* all restarts; crashes since the last stable run */
	double crash_times[64];
	uint32_t crash_count;
	int dash_fd, sig_fd;
	int dash_needs_token;
	char token[256];
	/* scrapes */
	char *metrics;
	struct ctl_scrape *prev, *cur;
	struct ctl_view view;
	int have_view;
	double last_scrape_s;
	char scrape_err[256];
	/* history: per SKU a ring of (t, available, reserved, sold) */
	struct { char name[33]; uint32_t n, next; float pt[HISTORY_POINTS][4]; } hist[CTL_SKUS_MAX];
	uint32_t hist_count;
	double t0;
	char *json;
};

static volatile int verbose = 1;

static double now_s(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	char stamp[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(stamp, sizeof stamp, "%H:%M:%SZ", &tm);
	va_list ap;
	va_start(ap, fmt);
	fprintf(stderr, "flashsale-control %s: ", stamp);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void die(const char *fmt, const char *arg)
{
	fprintf(stderr, "flashsale-control: ");
	fprintf(stderr, fmt, arg);
	fputc('\n', stderr);
	exit(2);
}

static const char usage[] =
"usage: flashsale-control [options] -- FLASHSALED [flashsaled options]\n"
"Starts and supervises one flashsaled, serves the operator dashboard, drains on SIGTERM.\n"
"\n"
"  --dashboard HOST:PORT   operator dashboard (default 127.0.0.1:9091; 'off': none). Off loopback\n"
"                          it requires the admin token (Authorization: Bearer, or #token=... in the URL)\n"
"  --pid-file F            (default DATA/flashsale-control.pid; refused while its pid lives)\n"
"  --admin unix:PATH       flashsaled's admin socket (default: from its --data-dir/--admin)\n"
"  --admin-token-file F    the admin token (default DATA/admin.token)\n"
"  --backoff-ms N          first restart delay after a crash, doubling (default 200)\n"
"  --backoff-max-ms N      longest restart delay (default 10000)\n"
"  --crash-loop N          after N crashes within --crash-window-s, stay down (default 5)\n"
"  --crash-window-s N      (default 60; a run this long resets the back-off)\n"
"  --drain-timeout-s N     on SIGTERM: wait this long for checkouts and sinks (default 30)\n"
"  --refresh-ms N          scrape interval of the dashboard figures (default 500)\n"
"  --config FILE           'name = value' lines with the option names above\n"
"Restart policy: exit 3 (journal damage) is never restarted: the file and offset are logged\n"
"and flashsale-control stays up with the child down until an operator acts. Any other exit\n"
"or signal is a crash: restart after the back-off. Exit status: 0 after a drained stop.\n";

static uint32_t parse_u32(const char *name, const char *v, uint32_t min, uint32_t max)
{
	char *e;
	errno = 0;
	unsigned long x = strtoul(v, &e, 10);
	if (errno || e == v || *e || v[0] == '-' || x < min || x > max) {
		fprintf(stderr, "flashsale-control: --%s: '%s' is not a number in %u..%u\n", name, v, min, max);
		exit(2);
	}
	return (uint32_t)x;
}

static void apply(struct options *o, const char *name, const char *v);

static void apply_config(struct options *o, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		die("--config: cannot read '%s'", path);
	char line[512];
	while (fgets(line, sizeof line, f)) {
		char name[64], value[400];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		if (sscanf(line, " %63[a-z-] = %399[^\n]", name, value) != 2 || strcmp(name, "config") == 0)
			die("--config: malformed line '%s'", line);
		apply(o, name, strdup(value));
	}
	fclose(f);
}

static void apply(struct options *o, const char *name, const char *v)
{
	if (strcmp(name, "dashboard") == 0) {
		if (strcmp(v, "off") == 0) {
			o->dash_port = 0;
			return;
		}
		const char *colon = strrchr(v, ':');
		struct in_addr a;
		if (colon == NULL || (size_t)(colon - v) >= sizeof o->dash_host)
			die("--dashboard: '%s' is not HOST:PORT", v);
		memcpy(o->dash_host, v, (size_t)(colon - v));
		o->dash_host[colon - v] = 0;
		if (inet_pton(AF_INET, o->dash_host, &a) != 1)
			die("--dashboard: '%s' is not an IPv4 address", o->dash_host);
		o->dash_port = (uint16_t)parse_u32("dashboard", colon + 1, 1, 65535);
	} else if (strcmp(name, "pid-file") == 0) o->pid_file = v;
	else if (strcmp(name, "admin") == 0) {
		if (strncmp(v, "unix:", 5) != 0)
			die("--admin: '%s' must be unix:PATH (the local socket)", v);
		o->admin = v;
	} else if (strcmp(name, "admin-token-file") == 0) o->token_file = v;
	else if (strcmp(name, "backoff-ms") == 0) o->backoff_ms = parse_u32(name, v, 1, 600000);
	else if (strcmp(name, "backoff-max-ms") == 0) o->backoff_max_ms = parse_u32(name, v, 1, 3600000);
	else if (strcmp(name, "crash-loop") == 0) o->crash_loop = parse_u32(name, v, 1, 64);
	else if (strcmp(name, "crash-window-s") == 0) o->crash_window_s = parse_u32(name, v, 1, 86400);
	else if (strcmp(name, "drain-timeout-s") == 0) o->drain_timeout_s = parse_u32(name, v, 0, 86400);
	else if (strcmp(name, "refresh-ms") == 0) o->refresh_ms = parse_u32(name, v, 50, 60000);
	else if (strcmp(name, "config") == 0) apply_config(o, v);
	else die("unknown option --%s (see --help)", name);
}

/* The child's data dir and admin socket, read from its own arguments. */
static const char *child_opt(char **argv, const char *name)
{
	size_t n = strlen(name);
	for (int i = 1; argv[i]; i++) {
		if (strcmp(argv[i], name) == 0 && argv[i + 1])
			return argv[i + 1];
		if (strncmp(argv[i], name, n) == 0 && argv[i][n] == '=')
			return argv[i] + n + 1;
	}
	return NULL;
}

static char *path_in(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	assert(p != NULL);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static void parse_options(struct options *o, int argc, char **argv)
{
	memset(o, 0, sizeof *o);
	strcpy(o->dash_host, "127.0.0.1");
	o->dash_port = 9091;
	o->backoff_ms = 200;
	o->backoff_max_ms = 10000;
	o->crash_loop = 5;
	o->crash_window_s = 60;
	o->drain_timeout_s = 30;
	o->refresh_ms = 500;
	int i = 1;
	for (; i < argc && strcmp(argv[i], "--") != 0; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
			exit(0);
		}
		if (strncmp(argv[i], "--", 2) != 0)
			die("unexpected argument '%s' (the flashsaled command goes after --)", argv[i]);
		const char *eq = strchr(argv[i], '=');
		char name[64];
		const char *v;
		if (eq) {
			snprintf(name, sizeof name, "%.*s", (int)(eq - argv[i] - 2), argv[i] + 2);
			v = eq + 1;
		} else {
			snprintf(name, sizeof name, "%s", argv[i] + 2);
			if (i + 1 >= argc)
				die("--%s needs a value", name);
			v = argv[++i];
		}
		apply(o, name, v);
	}
	if (i >= argc - 1)
		die("%s", "no flashsaled command: flashsale-control [options] -- FLASHSALED [its options]");
	o->child_argv = argv + i + 1;
	if (o->backoff_max_ms < o->backoff_ms)
		o->backoff_max_ms = o->backoff_ms;
	const char *data = child_opt(o->child_argv, "--data-dir");
	if (data == NULL)
		data = "./var";
	if (o->admin == NULL) {
		const char *a = child_opt(o->child_argv, "--admin");
		if (a && strncmp(a, "unix:", 5) == 0) {
			o->admin = a;
		} else {   /* the default, also kept beside a TCP admin port */
			char *p = path_in(data, "admin.sock");
			size_t n = strlen(p) + 6;
			char *u = malloc(n);
			assert(u != NULL);
			snprintf(u, n, "unix:%s", p);
			free(p);
			o->admin = u;
		}
	}
	if (o->pid_file == NULL) {
		if (mkdir(data, 0700) != 0 && errno != EEXIST)
			die("cannot create the data dir '%s' (for the pid file)", data);
		o->pid_file = path_in(data, "flashsale-control.pid");
	}
	if (o->token_file == NULL) {
		const char *t = child_opt(o->child_argv, "--admin-token-file");
		o->token_file = t ? t : path_in(data, "admin.token");
	}
}

/* ---- pid file ------------------------------------------------------------- */

static void pid_file_write(const char *path)
{
	FILE *f = fopen(path, "r");
	if (f) {
		long pid = 0;
		if (fscanf(f, "%ld", &pid) == 1 && pid > 0 && pid != getpid() && kill((pid_t)pid, 0) == 0) {
			fprintf(stderr, "flashsale-control: another flashsale-control runs (pid %ld, %s)\n", pid, path);
			exit(2);
		}
		fclose(f);
	}
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	f = fopen(tmp, "w");
	if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0 || rename(tmp, path) != 0) {
		fprintf(stderr, "flashsale-control: cannot write the pid file '%s': %s\n", path, strerror(errno));
		exit(2);
	}
}

/* ---- the child -------------------------------------------------------------- */

static void keep_line(struct control *c, const char *s, size_t n)
{
	snprintf(c->last[c->last_next % LAST_LINES], sizeof c->last[0], "%.*s", (int)n, s);
	c->last_next++;
}

/* Copies the child's output to our stderr and keeps its last lines. */
static void drain_output(struct control *c)
{
	char buf[8192];
	for (;;) {
		ssize_t r = read(c->out_fd, buf, sizeof buf);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0) {
			if (r == 0 || errno != EAGAIN) {
				if (c->line_len)
					keep_line(c, c->line, c->line_len);
				c->line_len = 0;
				close(c->out_fd);
				c->out_fd = -1;
			}
			return;
		}
		ssize_t w = write(STDERR_FILENO, buf, (size_t)r);
		(void)w;
		for (ssize_t i = 0; i < r; i++) {
			if (buf[i] == '\n' || c->line_len == sizeof c->line) {
				keep_line(c, c->line, c->line_len);
				c->line_len = 0;
			} else {
				c->line[c->line_len++] = buf[i];
			}
		}
	}
}

static void spawn(struct control *c)
{
	assert(c->child <= 0);
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0) {
		say("cannot create a pipe: %s", strerror(errno));
		exit(1);
	}
	pid_t ppid = getpid();
	pid_t pid = fork();
	if (pid < 0) {
		say("cannot fork: %s", strerror(errno));
		exit(1);
	}
	if (pid == 0) {
		/* flashsaled gets SIGTERM if we die; its own process group keeps a
		 * terminal's Ctrl-C for us (we drain first) */
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != ppid)
			_exit(1);
		setpgid(0, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		dup2(p[1], STDOUT_FILENO);
		dup2(p[1], STDERR_FILENO);
		execvp(c->o.child_argv[0], c->o.child_argv);
		fprintf(stderr, "flashsale-control: cannot run %s: %s\n", c->o.child_argv[0], strerror(errno));
		_exit(127);
	}
	close(p[1]);
	fcntl(p[0], F_SETFL, O_NONBLOCK);
	if (c->out_fd >= 0)
		close(c->out_fd);
	c->out_fd = p[0];
	c->child = pid;
	c->st = ST_STARTING;
	c->started_s = now_s();
	c->ready_s = 0;
	say("started flashsaled (pid %d, start %u)", (int)pid, c->restarts + 1);
}

/* The kept output line that explains a damage exit, or the last line. */
static const char *why_line(struct control *c)
{
	const char *fallback = "";
	for (uint32_t k = 0; k < LAST_LINES && k < c->last_next; k++) {
		const char *l = c->last[(c->last_next - 1 - k) % LAST_LINES];
		if (strstr(l, "journal") != NULL && strstr(l, "offset") != NULL)
			return l;
		if (k == 0)
			fallback = l;
	}
	return fallback;
}

static void on_child_exit(struct control *c, int status)
{
	if (c->out_fd >= 0)
		drain_output(c);
	double t = now_s();
	double ran = t - c->started_s;
	c->child = 0;
	char how[64];
	if (WIFEXITED(status))
		snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
	else
		snprintf(how, sizeof how, "signal %d", WIFSIGNALED(status) ? WTERMSIG(status) : 0);
	if (c->st == ST_STOPPING || c->st == ST_DRAINING) {
		say("flashsaled stopped (%s)", how);
		c->st = ST_STOPPING;
		return;
	}
	if (WIFEXITED(status) && WEXITSTATUS(status) == EXIT_JOURNAL_DAMAGE) {
		snprintf(c->reason, sizeof c->reason, "journal damage (%s): %s", how, why_line(c));
		c->st = ST_DOWN;
		say("flashsaled stopped on JOURNAL DAMAGE; NOT restarting. %s", why_line(c));
		say("it stays down until an operator has looked at that file and offset (see README, runbook)");
		return;
	}
	/* a crash: count it, then back off or give up */
	if (ran >= c->o.crash_window_s)
		c->streak = 0;
	c->crash_times[c->crash_count++ % 64] = t;
	uint32_t recent = 0;
	for (uint32_t k = 0; k < c->crash_count && k < 64; k++)
		if (t - c->crash_times[k] <= c->o.crash_window_s)
			recent++;
	if (recent >= c->o.crash_loop) {
		snprintf(c->reason, sizeof c->reason, "crash loop: %u crashes within %u s (last: %s; %s); not restarting",
		         recent, c->o.crash_window_s, how, why_line(c));
		c->st = ST_DOWN;
		say("%s", c->reason);
		return;
	}
	double delay_ms = c->o.backoff_ms;
	for (uint32_t k = 0; k < c->streak && delay_ms < c->o.backoff_max_ms; k++)
		delay_ms *= 2;
	if (delay_ms > c->o.backoff_max_ms)
		delay_ms = c->o.backoff_max_ms;
	c->streak++;
	c->restart_at_s = t + delay_ms / 1000.0;
	c->st = ST_BACKOFF;
	snprintf(c->reason, sizeof c->reason, "crashed (%s) after %.1f s; restart in %.0f ms", how, ran, delay_ms);
	say("flashsaled %s", c->reason);
}

/* ---- scraping ----------------------------------------------------------------- */

static void history_add(struct control *c, const struct ctl_scrape *s)
{
	for (uint32_t i = 0; i < s->sku_count; i++) {
		uint32_t h = 0;
		while (h < c->hist_count && strcmp(c->hist[h].name, s->sku[i].name) != 0)
			h++;
		if (h == c->hist_count) {
			if (h == CTL_SKUS_MAX)
				continue;
			snprintf(c->hist[h].name, sizeof c->hist[h].name, "%s", s->sku[i].name);
			c->hist_count++;
		}
		float *pt = c->hist[h].pt[c->hist[h].next];
		pt[0] = (float)(s->t_s - c->t0);
		pt[1] = (float)s->sku[i].available;
		pt[2] = (float)s->sku[i].reserved;
		pt[3] = (float)s->sku[i].sold;
		c->hist[h].next = (c->hist[h].next + 1) % HISTORY_POINTS;
		if (c->hist[h].n < HISTORY_POINTS)
			c->hist[h].n++;
	}
}

/* One GET /metrics; returns 0 when flashsaled answered. */
static int scrape(struct control *c)
{
	const char *body;
	int st = ctl_client_call(c->o.admin, NULL, "GET", "/metrics", c->metrics, METRICS_BYTES, &body, 1000,
	                         c->scrape_err, sizeof c->scrape_err);
	if (st != 200) {
		if (st > 0)
			snprintf(c->scrape_err, sizeof c->scrape_err, "GET /metrics answered %d", st);
		return -1;
	}
	c->scrape_err[0] = 0;
	struct ctl_scrape *t = c->prev;
	c->prev = c->cur;
	c->cur = t;
	ctl_scrape_parse(body, now_s(), c->cur);
	ctl_view_make(c->have_view ? c->prev : NULL, c->cur, &c->view);
	c->have_view = 1;
	c->last_scrape_s = c->cur->t_s;
	history_add(c, c->cur);
	return 0;
}

/* ---- drain and stop ------------------------------------------------------------ */

static void begin_drain(struct control *c, int sig)
{
	if (c->child <= 0 || c->st == ST_BACKOFF || c->st == ST_DOWN) {
		say("signal %d: flashsaled is not running; stopping", sig);
		if (c->child > 0)
			kill(c->child, SIGTERM);
		c->st = ST_STOPPING;
		c->kill_at_s = now_s() + 30;
		return;
	}
	if (c->st == ST_DRAINING || c->st == ST_STOPPING) {
		say("signal %d again: stopping flashsaled now", sig);
		kill(c->child, SIGTERM);
		c->st = ST_STOPPING;
		c->kill_at_s = now_s() + 30;
		return;
	}
	const char *body;
	char err[256];
	int st = ctl_client_call(c->o.admin, NULL, "POST", "/admin/drain", c->metrics, METRICS_BYTES, &body, 2000,
	                         err, sizeof err);
	say("signal %d: draining (readyz 503: %s), waiting up to %u s for in-flight checkouts and sinks",
	    sig, st == 200 ? "yes" : err, c->o.drain_timeout_s);
	c->st = ST_DRAINING;
	c->drain_deadline_s = now_s() + c->o.drain_timeout_s;
}

/* While draining: 1 once no checkout is outstanding and every sink caught up. */
static int drained(struct control *c)
{
	if (scrape(c) != 0)
		return 1;   /* it no longer answers: nothing more to wait for */
	if (c->cur->payments_outstanding > 0)
		return 0;
	for (uint32_t i = 0; i < c->cur->sink_count; i++)
		if (c->cur->sink[i].lag > 0)
			return 0;
	return 1;
}

/* ---- the dashboard --------------------------------------------------------------- */

static void json_str(char *out, size_t cap, size_t *n, const char *s)
{
	if (*n + 2 >= cap)
		return;
	out[(*n)++] = '"';
	for (; *s && *n + 8 < cap; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			*n += (size_t)snprintf(out + *n, cap - *n, "\\%c", ch);
		else if (ch < 0x20)
			*n += (size_t)snprintf(out + *n, cap - *n, "\\u%04x", ch);
		else
			out[(*n)++] = (char)ch;
	}
	out[(*n)++] = '"';
	out[*n] = 0;
}

static int state_json(struct control *c)
{
	size_t n = 0, cap = JSON_BYTES;
	char *b = c->json;
	double t = now_s();
	n += (size_t)snprintf(b + n, cap - n, "{\"control\":{\"state\":\"%s\",\"pid\":%d,\"restarts\":%u,"
	                      "\"up_s\":%.1f,\"refresh_ms\":%u,\"reason\":", state_names[c->st], (int)c->child,
	                      c->restarts, c->ready_s > 0 && c->child > 0 ? t - c->ready_s : 0.0, c->o.refresh_ms);
	json_str(b, cap, &n, c->st == ST_RUNNING ? "" : c->reason);
	n += (size_t)snprintf(b + n, cap - n, ",\"scrape_error\":");
	json_str(b, cap, &n, c->scrape_err);
	n += (size_t)snprintf(b + n, cap - n, ",\"scraped_ago_s\":%.2f},\"view\":",
	                      c->have_view ? t - c->last_scrape_s : -1.0);
	if (c->have_view) {
		int k = ctl_view_json(&c->view, b + n, cap - n);
		if (k < 0)
			return -1;
		n += (size_t)k;
	} else {
		n += (size_t)snprintf(b + n, cap - n, "null");
	}
	n += (size_t)snprintf(b + n, cap - n, ",\"history\":{");
	for (uint32_t h = 0; h < c->hist_count && n + 64 < cap; h++) {
		n += (size_t)snprintf(b + n, cap - n, "%s\"%s\":[", h ? "," : "", c->hist[h].name);
		uint32_t cnt = c->hist[h].n, first = (c->hist[h].next + HISTORY_POINTS - cnt) % HISTORY_POINTS;
		for (uint32_t k = 0; k < cnt && n + 80 < cap; k++) {
			const float *pt = c->hist[h].pt[(first + k) % HISTORY_POINTS];
			n += (size_t)snprintf(b + n, cap - n, "%s[%.2f,%.0f,%.0f,%.0f]", k ? "," : "", pt[0], pt[1], pt[2], pt[3]);
		}
		n += (size_t)snprintf(b + n, cap - n, "]");
	}
	n += (size_t)snprintf(b + n, cap - n, "}}");
	return n < cap ? (int)n : -1;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

static void answer(int fd, int status, const char *ctype, const char *body, size_t len)
{
	char head[512];
	const char *text = status == 200 ? "OK" : status == 401 ? "Unauthorized" : status == 404 ? "Not Found" :
	                   status == 405 ? "Method Not Allowed" : status == 503 ? "Service Unavailable" : "Internal Server Error";
	int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n"
	                 "Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n"
	                 "Content-Security-Policy: default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'\r\n"
	                 "Connection: close\r\n\r\n", status, text, ctype, len);
	send_all(fd, head, (size_t)n);
	send_all(fd, body, len);
}

/* Constant-time comparison of a presented token with ours. */
static int token_ok(const struct control *c, const char *p, size_t len)
{
	size_t tl = strlen(c->token);
	if (len != tl)
		return 0;
	unsigned char d = 0;
	for (size_t i = 0; i < len; i++)
		d |= (unsigned char)(p[i] ^ c->token[i]);
	return d == 0;
}

static void serve_dashboard(struct control *c, int fd)
{
	char req[DASH_REQ_BYTES + 1];
	size_t len = 0;
	double deadline = now_s() + 1.0;
	while (len < DASH_REQ_BYTES) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int left = (int)((deadline - now_s()) * 1000);
		if (left <= 0 || poll(&p, 1, left) <= 0)
			break;
		ssize_t r = recv(fd, req + len, DASH_REQ_BYTES - len, 0);
		if (r <= 0)
			break;
		len += (size_t)r;
		req[len] = 0;
		if (strstr(req, "\r\n\r\n"))
			break;
	}
	req[len] = 0;
	char method[8], target[256];
	if (sscanf(req, "%7s %255s HTTP/1.", method, target) != 2) {
		close(fd);
		return;
	}
	if (strcmp(method, "GET") != 0) {
		answer(fd, 405, "application/json", "{\"error\":\"method_not_allowed\"}", 30);
		close(fd);
		return;
	}
	char *q = strchr(target, '?');
	if (q)
		*q = 0;
	if (c->dash_needs_token && strcmp(target, "/") != 0) {
		/* the page itself holds no data; everything else needs the token */
		char err[512];
		if (ctl_client_token(c->o.token_file, c->token, sizeof c->token, err, sizeof err) != 0) {
			/* read per request: flashsaled may create the file after we start */
			char b[700];
			int n = snprintf(b, sizeof b, "{\"error\":\"unavailable\",\"detail\":\"no admin token to check against\"}");
			say("dashboard request refused: %s", err);
			answer(fd, 503, "application/json", b, (size_t)n);
			close(fd);
			return;
		}
		const char *h = strcasestr(req, "\r\nAuthorization: Bearer ");
		int ok = 0;
		if (h) {
			h += strlen("\r\nAuthorization: Bearer ");
			const char *e = strstr(h, "\r\n");
			ok = e && token_ok(c, h, (size_t)(e - h));
		}
		if (!ok) {
			const char *b = "{\"error\":\"unauthorized\",\"detail\":\"admin token required off loopback\"}";
			answer(fd, 401, "application/json", b, strlen(b));
			close(fd);
			return;
		}
	}
	if (strcmp(target, "/") == 0 || strcmp(target, "/index.html") == 0) {
		answer(fd, 200, "text/html; charset=utf-8", ctl_dashboard_html, sizeof ctl_dashboard_html - 1);
	} else if (strcmp(target, "/api/state") == 0) {
		int n = state_json(c);
		if (n < 0)
			answer(fd, 500, "application/json", "{\"error\":\"too_large\"}", 21);
		else
			answer(fd, 200, "application/json", c->json, (size_t)n);
	} else {
		answer(fd, 404, "application/json", "{\"error\":\"not_found\"}", 21);
	}
	close(fd);
}

static int dash_listen(struct control *c)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(c->o.dash_port) };
	inet_pton(AF_INET, c->o.dash_host, &sa.sin_addr);
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
	if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 64) != 0) {
		fprintf(stderr, "flashsale-control: cannot listen on --dashboard %s:%u: %s\n", c->o.dash_host,
		        c->o.dash_port, strerror(errno));
		exit(2);
	}
	c->dash_needs_token = (ntohl(sa.sin_addr.s_addr) >> 24) != 127;
	return fd;
}

/* ---- main loop -------------------------------------------------------------------- */

int main(int argc, char **argv)
{
	static struct control c;
	parse_options(&c.o, argc, argv);
	c.out_fd = -1;
	c.dash_fd = -1;
	c.t0 = now_s();
	c.metrics = malloc(METRICS_BYTES);
	c.json = malloc(JSON_BYTES);
	c.prev = calloc(1, sizeof *c.prev);
	c.cur = calloc(1, sizeof *c.cur);
	assert(c.metrics && c.json && c.prev && c.cur);
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGHUP);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	c.sig_fd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	if (c.sig_fd < 0)
		die("signalfd: %s", strerror(errno));
	pid_file_write(c.o.pid_file);
	if (c.o.dash_port) {
		c.dash_fd = dash_listen(&c);
		say("dashboard on http://%s:%u/%s", c.o.dash_host, c.o.dash_port,
		    c.dash_needs_token ? " (admin token required)" : "");
	}
	say("supervising %s (admin %s; back-off %u..%u ms, crash loop %u in %u s, pid file %s)",
	    c.o.child_argv[0], c.o.admin, c.o.backoff_ms, c.o.backoff_max_ms, c.o.crash_loop, c.o.crash_window_s,
	    c.o.pid_file);
	spawn(&c);
	double next_scrape = now_s();
	for (;;) {
		struct pollfd p[3] = { { .fd = c.sig_fd, .events = POLLIN }, { .fd = c.out_fd, .events = POLLIN },
		                       { .fd = c.dash_fd, .events = POLLIN } };
		int timeout = c.st == ST_DRAINING ? 100 : (int)c.o.refresh_ms;
		if (poll(p, 3, timeout) < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		if (p[1].revents)
			drain_output(&c);
		if (p[0].revents & POLLIN) {
			struct signalfd_siginfo si;
			while (read(c.sig_fd, &si, sizeof si) == sizeof si) {
				if (si.ssi_signo == SIGCHLD) {
					int status;
					pid_t pid;
					while ((pid = waitpid(-1, &status, WNOHANG)) > 0)
						if (pid == c.child)
							on_child_exit(&c, status);
				} else if (si.ssi_signo == SIGHUP) {
					say("SIGHUP ignored (flashsaled keeps running)");
				} else {
					begin_drain(&c, (int)si.ssi_signo);
				}
			}
		}
		if (p[2].revents & POLLIN) {
			int fd;
			while ((fd = accept4(c.dash_fd, NULL, NULL, SOCK_CLOEXEC)) >= 0)
				serve_dashboard(&c, fd);
		}
		double t = now_s();
		switch (c.st) {
		case ST_STARTING:
		case ST_RUNNING:
			if (t >= next_scrape) {
				next_scrape = t + c.o.refresh_ms / 1000.0;
				if (scrape(&c) == 0 && c.st == ST_STARTING) {
					c.st = ST_RUNNING;
					c.ready_s = now_s();
					say("flashsaled is up (pid %d, admin socket answers after %.2f s)", (int)c.child,
					    c.ready_s - c.started_s);
				}
			}
			break;
		case ST_BACKOFF:
			if (t >= c.restart_at_s) {
				c.restarts++;
				spawn(&c);
			}
			break;
		case ST_DRAINING:
			if (drained(&c) || t >= c.drain_deadline_s) {
				if (t >= c.drain_deadline_s)
					say("drain timeout (%u s): stopping anyway (outstanding checkouts %.0f)",
					    c.o.drain_timeout_s, c.cur->payments_outstanding);
				else
					say("drained: no checkout in flight, sinks caught up; stopping flashsaled");
				if (c.child > 0)
					kill(c.child, SIGTERM);
				c.st = ST_STOPPING;
				c.kill_at_s = t + 30;
			}
			break;
		case ST_STOPPING:
			if (c.child <= 0) {
				unlink(c.o.pid_file);
				say("stopped");
				return 0;
			}
			if (t >= c.kill_at_s) {
				say("flashsaled ignored SIGTERM for 30 s: SIGKILL");
				kill(c.child, SIGKILL);
				c.kill_at_s = t + 3600;
			}
			break;
		case ST_DOWN:
			break;
		}
	}
}
