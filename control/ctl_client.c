/* ctl_client.c - one request to the admin socket (see ctl_client.h). */
#include "control/ctl_client.h"

#include <arpa/inet.h>
#include <assert.h>
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

static int connect_admin(const char *admin, char *err, size_t err_len)
{
	if (strncmp(admin, "unix:", 5) == 0) {
		struct sockaddr_un sa = { .sun_family = AF_UNIX };
		if (strlen(admin + 5) >= sizeof sa.sun_path) {
			snprintf(err, err_len, "admin path too long: %s", admin);
			return -1;
		}
		strcpy(sa.sun_path, admin + 5);
		int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
			snprintf(err, err_len, "cannot reach flashsaled at %s: %s", admin, strerror(errno));
			if (fd >= 0)
				close(fd);
			return -1;
		}
		return fd;
	}
	char host[64];
	const char *colon = strrchr(admin, ':');
	if (colon == NULL || (size_t)(colon - admin) >= sizeof host) {
		snprintf(err, err_len, "admin address '%s' is neither unix:PATH nor HOST:PORT", admin);
		return -1;
	}
	memcpy(host, admin, (size_t)(colon - admin));
	host[colon - admin] = 0;
	char *end = NULL;
	long port = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end != 0 || port < 1 || port > 65535) {
		snprintf(err, err_len, "admin address '%s' has no port 1..65535", admin);
		return -1;
	}
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
		snprintf(err, err_len, "admin address '%s' is not an IPv4 address", host);
		return -1;
	}
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		snprintf(err, err_len, "cannot reach flashsaled at %s: %s", admin, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

static int64_t now_ms(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (int64_t)t.tv_sec * 1000 + t.tv_nsec / 1000000;
}

int ctl_client_call(const char *admin, const char *token, const char *method, const char *target,
                    char *buf, size_t cap, const char **body, int timeout_ms, char *err, size_t err_len)
{
	assert(cap > 64 && admin != NULL && target != NULL);
	char req[2048];
	int len = snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: flashsaled\r\n%s%s%sContent-Length: 0\r\n"
	                   "Connection: close\r\n\r\n", method, target,
	                   token && strncmp(admin, "unix:", 5) != 0 ? "Authorization: Bearer " : "",
	                   token && strncmp(admin, "unix:", 5) != 0 ? token : "",
	                   token && strncmp(admin, "unix:", 5) != 0 ? "\r\n" : "");
	if (len <= 0 || (size_t)len >= sizeof req) {
		snprintf(err, err_len, "request target too long");
		return -1;
	}
	int fd = connect_admin(admin, err, err_len);
	if (fd < 0)
		return -1;
	if (send(fd, req, (size_t)len, MSG_NOSIGNAL) != len) {
		snprintf(err, err_len, "cannot send to flashsaled: %s", strerror(errno));
		close(fd);
		return -1;
	}
	int64_t deadline = now_ms() + timeout_ms;
	size_t got = 0;
	for (;;) {
		int64_t left = deadline - now_ms();
		struct pollfd p = { .fd = fd, .events = POLLIN };
		if (left <= 0 || poll(&p, 1, (int)left) <= 0) {
			snprintf(err, err_len, "no answer from flashsaled within %d ms", timeout_ms);
			close(fd);
			return -1;
		}
		ssize_t r = recv(fd, buf + got, cap - 1 - got, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
		if (got == cap - 1) {
			snprintf(err, err_len, "answer from flashsaled larger than %zu bytes", cap - 1);
			close(fd);
			return -1;
		}
	}
	close(fd);
	buf[got] = 0;
	int status = 0;
	if (sscanf(buf, "HTTP/1.%*d %d", &status) != 1) {
		snprintf(err, err_len, "malformed answer from flashsaled");
		return -1;
	}
	char *b = strstr(buf, "\r\n\r\n");
	*body = b ? b + 4 : buf + got;
	return status;
}

int ctl_client_token(const char *path, char *tok, size_t cap, char *err, size_t err_len)
{
	FILE *f = fopen(path, "r");
	if (f == NULL) {
		snprintf(err, err_len, "cannot read the admin token file '%s': %s", path, strerror(errno));
		return -1;
	}
	size_t n = fread(tok, 1, cap - 1, f);
	fclose(f);
	while (n > 0 && (tok[n - 1] == '\n' || tok[n - 1] == '\r' || tok[n - 1] == ' ' || tok[n - 1] == '\t'))
		n--;
	tok[n] = 0;
	if (n == 0) {
		snprintf(err, err_len, "the admin token file '%s' is empty", path);
		return -1;
	}
	return 0;
}
