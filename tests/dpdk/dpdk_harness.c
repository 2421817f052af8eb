/* dpdk_harness.c - a small flashsaled for the DPDK backend's tests: the
 * writer, the payment thread, the admin socket and ONE DPDK dataplane,
 * wired as control/flashsaled.c wires them, with the same flags as
 * `flashsaled --dpdk` (the subset the tests use). It also writes the
 * backend's counters to DATA_DIR/dpdk.metrics every 100 ms, so tests can
 * watch connections drain without an admin /metrics hook.
 *
 *   dpdk_harness --dpdk "<EAL args>" --ip A.B.C.D/N [--gateway G]
 *                [--listen HOST:PORT (port only)] [--data-dir DIR]
 *                [--connections N] [--busy-poll] [--no-demo] [--unsafe-no-sync]
 */
#include "common/fs_jwt.h"
#include "common/fs_snapshot.h"
#include "control/admin.h"
#include "dataplane/dpdk.h"
#include "writer/payment.h"
#include "writer/writer.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stop_signal;
static void on_signal(int sig) { stop_signal = sig; }

static void die(const char *msg, const char *arg)
{
	fprintf(stderr, "dpdk_harness: %s%s\n", msg, arg ? arg : "");
	exit(2);
}

static char *path_in(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *p = malloc(n);
	snprintf(p, n, "%s/%s", dir, name);
	return p;
}

static void create_demo(struct fs_port *port)
{
	struct fs_cmd cmd;
	struct fs_ans ans;
	memset(&cmd, 0, sizeof cmd);
	memcpy(cmd.sku, "demo", 4);
	cmd.sku_len = 4;
	cmd.type = FS_CMD_SALE_CREATE;
	cmd.sale.total = 10000;
	cmd.sale.per_user = 1;
	cmd.sale.hold_ms = 120000;
	cmd.sale.default_tier = 4;
	cmd.sale.price_cents = 1999;
	if (ctl_admin_call(port, &cmd, &ans, 5000) != 0 || (ans.http != 201 && ans.err != FS_ERR_EXISTS))
		die("cannot create the demo SKU", NULL);
	if (ans.http != 201)
		return;
	cmd.type = FS_CMD_SALE_OPEN;
	if (ctl_admin_call(port, &cmd, &ans, 5000) != 0 || ans.http != 200)
		die("cannot open the demo SKU", NULL);
}

static void write_metrics(struct dp_dpdk *d, const char *path)
{
	static char buf[8192];
	const struct dp_stats *st = dp_dpdk_worker_stats(d);
	int n = snprintf(buf, sizeof buf, "flashsale_connections_open %llu\nflashsale_connections_accepted_total %llu\n",
	                 (unsigned long long)atomic_load(&((struct dp_stats *)st)->conns_open),
	                 (unsigned long long)atomic_load(&((struct dp_stats *)st)->conns_accepted));
	n += (int)dp_dpdk_metrics(d, buf + n, sizeof buf - (size_t)n);
	char tmp[4096];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (f == NULL)
		return;
	fwrite(buf, 1, (size_t)n, f);
	fclose(f);
	rename(tmp, path);
}

enum { O_DPDK = 1, O_IP, O_GW, O_LISTEN, O_DATA, O_CONNS, O_BUSY, O_NO_DEMO, O_NO_SYNC, O_HELP };

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dpdk", 1, 0, O_DPDK }, { "ip", 1, 0, O_IP }, { "gateway", 1, 0, O_GW },
		{ "listen", 1, 0, O_LISTEN }, { "data-dir", 1, 0, O_DATA }, { "connections", 1, 0, O_CONNS },
		{ "busy-poll", 0, 0, O_BUSY }, { "no-demo", 0, 0, O_NO_DEMO },
		{ "unsafe-no-sync", 0, 0, O_NO_SYNC }, { "help", 0, 0, O_HELP }, { 0, 0, 0, 0 } };
	const char *eal = NULL, *ip = NULL, *gw = NULL, *data_dir = "./var";
	uint16_t tcp_port = 8080;
	uint32_t conn_max = 10000;
	int busy = 0, demo = 1, no_sync = 0, opt;
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case O_DPDK:    eal = optarg; break;
		case O_IP:      ip = optarg; break;
		case O_GW:      gw = optarg; break;
		case O_LISTEN: {
			const char *c = strrchr(optarg, ':');
			long p = strtol(c ? c + 1 : optarg, NULL, 10);
			if (p < 1 || p > 65535)
				die("--listen: bad port in ", optarg);
			tcp_port = (uint16_t)p;
			break;
		}
		case O_DATA:    data_dir = optarg; break;
		case O_CONNS:   conn_max = (uint32_t)strtoul(optarg, NULL, 10); break;
		case O_BUSY:    busy = 1; break;
		case O_NO_DEMO: demo = 0; break;
		case O_NO_SYNC: no_sync = 1; break;
		case O_HELP:    puts("dpdk_harness --dpdk \"<EAL args>\" --ip A.B.C.D/N [--gateway G] [--listen H:P] "
		                     "[--data-dir D] [--connections N] [--busy-poll] [--no-demo] [--unsafe-no-sync]");
		                return 0;
		default:        return 2;
		}
	}
	if (eal == NULL || ip == NULL)
		die("--dpdk and --ip are required", NULL);
	if (conn_max == 0)
		die("--connections must be > 0", NULL);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (mkdir(data_dir, 0700) != 0 && errno != EEXIST)
		die("cannot create --data-dir ", data_dir);
	char *secret = path_in(data_dir, "jwt.secret");
	if (access(secret, F_OK) != 0 && fs_secret_create(secret) != 0)
		die("cannot create ", secret);
	static uint8_t jwt_key[FS_SECRET_LEN_MAX];
	char err[512];
	int key_len = fs_secret_load(secret, jwt_key, err, sizeof err);
	if (key_len <= 0)
		die(err, NULL);
	struct fs_snapshot *snap = mmap(NULL, sizeof *snap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (snap == MAP_FAILED)
		die("out of memory", NULL);
	struct wr_limits limits;
	wr_limits_default(&limits);
	struct wr_config wc = {
		.data_dir = data_dir, .limits = limits, .batch_count_max = WR_BATCH_COUNT_MAX,
		.port_count = 3, .ring_slots = 4096, .segment_bytes = 64ull << 20, .charge_slots = 4096,
		.no_sync = no_sync, .quiet = 1,
	};
	_Atomic int ready = 0;
	struct writer *w = wr_open(&wc, snap, err, sizeof err);
	if (w == NULL)
		die(err, NULL);
	if (wr_start(w, -1) != 0)
		die("cannot start the writer", NULL);
	const struct wr_metrics *m = wr_metrics(w);
	struct pay_config pc = { .charges = wr_charge_ring(w), .waker = wr_charge_waker(w), .port = wr_port(w, 2),
	                         .outstanding = &((struct wr_metrics *)m)->charges_outstanding,
	                         .payments_open = &snap->payments_open };
	struct payments *pay = pay_start(&pc);
	if (pay == NULL)
		die("cannot start the payment thread", NULL);
	if (demo)
		create_demo(wr_port(w, 1));
	struct dp_dpdk_config dc = {
		.eal_args = eal, .ip = ip, .gateway = gw, .port_id = 0, .tcp_port = tcp_port, .busy_poll = busy,
		.worker = {
			.index = 0, .cpu = -1, .listen_fd = -1, .conn_max = conn_max,
			.wport = wr_port(w, 0), .snap = snap, .jwt_key = jwt_key, .jwt_key_len = (size_t)key_len,
			.limits = { .request_line_max = 2048, .header_count_max = 32, .header_bytes_max = 8192,
			            .body_bytes_max = 4096 },
			.idle_timeout_ms = 60000, .request_timeout_ms = 10000,
			.quantity_max = limits.quantity_max, .ready = &ready,
		},
	};
	struct dp_dpdk *d = dp_dpdk_start(&dc, err, sizeof err);
	if (d == NULL) {
		fprintf(stderr, "dpdk_harness: %s\n", err);
		return 3;
	}
	char *unix_path = path_in(data_dir, "admin.sock");
	struct ctl_admin_config ac = { .unix_path = unix_path, .writer = w, .port = wr_port(w, 1), .snap = snap,
	                               .workers = NULL, .worker_count = 0, .ready = &ready };
	struct ctl_admin *admin = ctl_admin_start(&ac, err, sizeof err);
	if (admin == NULL)
		die(err, NULL);
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	signal(SIGPIPE, SIG_IGN);
	atomic_store(&ready, 1);
	char *metrics = path_in(data_dir, "dpdk.metrics");
	printf("dpdk_harness: ready: http://%s port %u, admin unix:%s\n", ip, tcp_port, unix_path);
	while (!stop_signal) {
		write_metrics(d, metrics);
		struct timespec ts = { 0, 100000000 };
		nanosleep(&ts, NULL);
	}
	atomic_store(&ready, 0);
	dp_dpdk_stop(d);
	write_metrics(d, metrics);
	ctl_admin_stop(admin);
	pay_stop(pay);
	wr_close(w);
	printf("dpdk_harness: stopped\n");
	return 0;
}
