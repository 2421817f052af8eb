/* flashctl.c - the operator CLI. Sale verbs and metrics go to flashsaled's
 * admin socket (HTTP/1.1, one request per connection); `token` mints a JWT
 * locally from the shared secret file.
 */
#include "common/fs_jwt.h"

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
"  sale status SKU            counters (as GET /v1/skus/SKU) plus rates and sink lag\n"
"  stock add SKU N            add N units to a sale\n"
"  ip deny|allow|remove CIDR  the operator's IP lists (journaled); deny: 403 at the edge;\n"
"                             allow: exempt from IP-based limits and scores\n"
"  ip list                    the IP rules in force\n"
"  tier set USER T            a user's tier (0..4) when the token has no tier claim\n"
"  tier clear USER            remove the entry (and the user's risk flag)\n"
"  metrics                    Prometheus text from the admin socket\n"
"  drain                      /readyz answers 503 from now on (before a stop)\n"
"  token --user U [--tier T] [--ttl 1h] [--device D] [--jwt-secret-file F]\n"
"                             print an HS256 JWT (default secret ./var/jwt.secret)\n"
"Defaults: --admin unix:./var/admin.sock; a TCP admin needs --admin-token-file (./var/admin.token).\n"
"Exit status: 0 on success, 1 when flashsaled refused (its reason is printed), 2 on bad usage.\n";

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
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(colon + 1)) };
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
		if (poll(&p, 1, 10000) <= 0)
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
	static const char *verbs[] = { "open", "pause", "freeze", "resume", "close" };
	for (size_t i = 0; i < 5; i++)
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

int main(int argc, char **argv)
{
	int i = 1;
	for (; i < argc && argv[i][0] == '-'; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			fputs(usage, stdout);
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
	if (strcmp(cmd, "metrics") == 0)
		return call("GET", "/metrics");
	if (strcmp(cmd, "drain") == 0)
		return call("POST", "/admin/drain");
	if (strcmp(cmd, "stock") == 0 && argc - i == 3 && strcmp(argv[i], "add") == 0) {
		char target[256];
		snprintf(target, sizeof target, "/admin/sales/%s/stock?add=%llu", argv[i + 1],
		         (unsigned long long)parse_num("add", argv[i + 2]));
		return call("POST", target);
	}
	return fail("unknown command '%s' (see --help)", cmd);
}
