/* flashsaled.c - the appliance process: parse flags, open (and replay) the
 * journal, start the writer, the payment thread, the dataplane workers and
 * the admin socket, and stop them in order on SIGINT/SIGTERM.
 */
#include "common/fs_jwt.h"
#include "common/fs_shard.h"
#include "common/fs_snapshot.h"
#include "control/admin.h"
#include "control/writers.h"
#include "dataplane/backend.h"
#include "dataplane/route.h"
#include "writer/pay/payment.h"
#include "writer/sink/sink.h"
#include "common/fs_cidr.h"
#include "writer/writer.h"
#include "writer/replicate.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <unistd.h>
#include <fcntl.h>


/* Exit statuses: 0 stopped on a signal; 2 bad flags or a start-up failure
 * (restartable); 3 the journal is damaged (never restart: an operator must
 * look at the file and offset printed on stderr). */
#define FS_EXIT_JOURNAL_DAMAGE 3

struct options {
	char listen_host[64];
	uint16_t listen_port;
	const char *data_dir;
	const char *jwt_secret_file;
	const char *admin;
	const char *admin_token_file;
	uint32_t workers;
	uint32_t conn_max;
	struct wr_limits limits;
	uint64_t segment_mb;
	uint64_t journal_budget_mb;
	uint32_t idle_timeout_ms;
	uint32_t request_timeout_ms;
	uint32_t send_timeout_ms;
	uint32_t conns_per_ip;
	int recv_oneshot;               /* --recv oneshot: no multishot receives (io_uring) */
	uint32_t fd_reserve;
	int conn_max_given;             /* --connections was set: never lowered to fit */
	uint32_t batch_max;
	int demo;
	int no_sync;
	int no_prefault;
	int pin;
	const char *dpdk;               /* EAL arguments: the DPDK backend instead of io_uring */
	const char *dpdk_ip;
	const char *dpdk_gateway;
	int busy_poll;
	const char *postgres;
	const char *kafka;
	const char *kafka_topic;
	const char *redis;
	struct fs_cidr trusted[16];
	uint32_t trusted_count;
	uint32_t ip_rate;
	uint32_t risk_ip_users;
	uint64_t snapshot_every_mb;
	uint64_t retention_ms;
	const char *archive;
	const char *payment_provider;
	const char *replicate;          /* "kafka": every batch also in flashsale.<shard>.journal */
	const char *shard;
	const char *shard_map;          /* --shard-map FILE: appliances and pins (common/fs_shard.h) */
	int standby;
	uint32_t failover_after_ms;
	uint32_t writers;               /* writer shards in this process (--writers) */
};

static const char usage[] =
"usage: flashsaled [options]\n"
"A flash-sale appliance: HTTP API on --listen, decisions journaled under --data-dir.\n"
"With no options: 127.0.0.1:8080, ./var, a demo SKU 'demo' (10,000 units, 1 per user, 120 s holds).\n"
"\n"
"  --listen HOST:PORT          public API address (default 127.0.0.1:8080)\n"
"  --data-dir DIR              journal, secrets and admin socket (default ./var)\n"
"  --jwt-secret-file F         HS256 key file (default DIR/jwt.secret, created 0600 if missing)\n"
"  --admin unix:PATH|HOST:PORT admin socket (default unix:DIR/admin.sock); a TCP admin port\n"
"                              requires 'Authorization: Bearer <admin token>'\n"
"  --admin-token-file F        admin token for a TCP admin port (default DIR/admin.token, created)\n"
"  --workers N                 dataplane worker threads (default: cores - 1, at least 1)\n"
"  --connections N             connections held per worker (default 10000); past it: 503\n"
"  --users-max N               distinct users (default 1000000)\n"
"  --reservations-max N        reservations kept (default 4000000)\n"
"  --orders-max N              orders kept (default 1000000)\n"
"  --idempotency-keys-max N    idempotency keys kept (default 10000000)\n"
"  --batch-max N               commands decided per journal batch (default 8192)\n"
"  --segment-mb N              journal segment size (default 64)\n"
"  --journal-budget-mb N       disk budget for the journal; past it reservations get 503 (default 0 = none)\n"
"  --idle-timeout-ms N         close keep-alive connections idle this long (default 60000)\n"
"  --request-timeout-ms N      a request must arrive whole within this (default 10000): 408\n"
"  --postgres CONNINFO         stream the journal to PostgreSQL (libpq conninfo; schema migrated at start)\n"
"  --kafka BROKERS             stream every journal record to Kafka (idempotent producer, key = SKU)\n"
"  --kafka-topic T             topic for --kafka (default flashsale.journal)\n"
"  --redis HOST:PORT           publish stock:<sku> availability (TTL 5 s, <= 100 updates/s per SKU)\n"
"  --payment-provider URL      charge through an HTTP provider (http://HOST[:PORT]/PATH) instead of\n"
"                              the built-in test provider (see Payments below)\n"
"  --trusted-proxy CIDR        believe X-Forwarded-For from it and skip IP-based limits for it\n"
"                              (repeatable; default 127.0.0.0/8)\n"
"  --ip-rate N                 attempts per minute per untrusted client IP (default 0: off; carrier\n"
"                              NAT puts many honest users behind one address)\n"
"  --risk-ip-users N           users from one untrusted IP before they drop to tier 1 (default 50)\n"
"  --no-demo                   do not create the demo SKU\n"
"  --no-pin                    do not pin threads to cores\n"
"  --dpdk \"EAL ARGS\"           DPDK backend (user-space TCP, lwIP) on the port the EAL args give, e.g.\n"
"                              \"-l 0,1 --vdev=net_af_packet0,iface=eth1\" (--no-huge -m 512 for development);\n"
"                              --workers N stack lanes (default 1), each its own process with its own\n"
"                              lwIP and rx/tx queue pair (give -l one lcore per lane plus the main one, and\n"
"                              a NIC with N queues or qpairs=N on af_packet); --listen gives the TCP port only\n"
"  --ip A.B.C.D/N              the DPDK backend's own address (required with --dpdk)\n"
"  --gateway A.B.C.D           its default gateway\n"
"  --busy-poll                 DPDK: never back off when idle (dedicated cores)\n"
"  --unsafe-no-sync            skip fdatasync (benchmarks of the CPU path only: NOT durable)\n"
"  --no-prefault                do not fault the writer's tables in at start-up (quick starts\n"
"                              in tests; the first decisions then pay page faults)\n"
"  --config FILE               read 'name = value' lines with the option names above\n"
"  --help                      this text\n"
"Exit status: 0 after SIGTERM/SIGINT, 2 on bad flags or a failed start, 3 when the journal is\n"
"damaged (stderr names the file and offset; do not restart before looking at it).\n"
"\n";

static const char usage_lifetime[] =
"Lifetime (one data dir for months):\n"
"  --skus-max N                sales held at once (default 1024, at most 1024); `flashctl sale archive`\n"
"                              frees a closed sale's slot\n"
"  --snapshot-every-mb N       snapshot the writer's state every N MiB of journal (default 256; 0 = only\n"
"                              on `flashctl snapshot`); start-up = latest valid snapshot + journal tail\n"
"  --retention DURATION        ended reservations/orders and their idempotency keys are reclaimed this\n"
"                              long after they end (default 24h; 0 = never); PostgreSQL keeps the history\n"
"  --archive DIR               journal segments older than the snapshots and consumed by every sink\n"
"                              move here (default: deleted)\n"
"\n";

/* Connection limits (a string of its own: C11 caps one literal at 4095 bytes). */
static const char usage_connections[] =
"Connection limits (the public port):\n"
"  --send-timeout-ms N         an answer must drain to the client within this, else the connection\n"
"                              is closed as a slow reader (default 10000)\n"
"  --connections-per-ip N      open connections per untrusted client IP, all workers together\n"
"                              (default 0: off, like --ip-rate); past it: 503\n"
"  --recv multishot|oneshot    io_uring receives: one multishot receive per connection into a\n"
"                              buffer ring, or one receive armed per read (default multishot;\n"
"                              one-shot where the kernel refuses the buffer ring)\n"
"  --fd-reserve N              descriptors needed beyond workers x connections (default 256); the\n"
"                              soft RLIMIT_NOFILE is raised to the sum, a lower hard limit refuses to start\n"
"\n";

static const char usage_replication[] =
"Replication (README \"Losing the primary\"):\n"
"  --replicate kafka           answer only when a batch is fdatasync'd AND in the Kafka log of the shard\n"
"                              (topic flashsale.<shard>.journal at --kafka BROKERS, acks=all); --kafka is\n"
"                              then the log's brokers (no record sink)\n"
"  --shard NAME                the shard this appliance serves: its replication log (--replicate) and,\n"
"                              with --shard-map, the SKUs it owns\n"
"  --shard-map FILE            appliances as shards (README \"Shards behind nginx\"): `shard NAME HOST:PORT`\n"
"                              lines (index = order), `sku SKU NAME` pins; other SKUs by a stable hash.\n"
"                              A SKU or id another shard owns gets 421 {\"error\":\"misdirected\",\"shard\"};\n"
"                              ids carry the shard index; PostgreSQL rows carry the shard name\n"
"  --standby                   follow the shard's log: serve SKU reads, answer writes 503 standby, until\n"
"                              'flashctl promote' fences the old primary and makes this one the primary\n"
"  --failover-after MS         (--standby) promote by itself when the primary wrote nothing (no batch,\n"
"                              no heartbeat: it writes one every 200 ms when idle) for MS (default 0: never)\n"
"\n";

static const char usage_writers[] =
"Writer shards (README \"Writer shards\"):\n"
"  --writers N                 N writer threads (1..16, default 1), each the only writer of its SKUs, with\n"
"                              its own journal, snapshots, sequence and chain under DIR/shard-K (N = 1: DIR\n"
"                              as ever); a SKU goes to the shard a stable hash of its name picks, unless\n"
"                              --shard-map pins it. A data dir starts only with the N it was made with.\n"
"                              Table limits (--users-max, ...) are per shard. Sinks: one per shard and\n"
"                              kind (postgres-shard-K ...), rows labelled wK (NAME/wK with --shard), ids\n"
"                              with K in bits 48..55, cursor flashsaled[.NAME].wK, Kafka topic T.wK.\n"
"                              Not with --dpdk, --replicate or --standby (refused)\n"
"  --shard-map FILE            `writer SKU K` lines pin SKUs to shards (format: common/fs_shard.h)\n"
"\n";

static const char usage_payments[] =
"Payments: the built-in test provider charges by token: tok_ok... charged, tok_decline... declined\n"
"(402 card_declined), tok_slow_<ms>... charged after <ms>, tok_down... unreachable (retried 3 times\n"
"with backoff, then 402 provider_unavailable; 3 failures in a row open a 1 s circuit breaker during\n"
"which checkouts get 503), anything else declined (invalid_token). The order id is the idempotency\n"
"key of every attempt, so a retried charge is never a second charge.\n"
"\n"
"With --payment-provider URL each attempt is POST URL, Content-Type: application/json,\n"
"Idempotency-Key: <order id o%016x>, body {\"order_id\",\"amount_cents\",\"currency\":\"USD\",\n"
"\"payment_token\",\"user\"}. Answers: 200 {\"status\":\"charged\"}: PAID; 402 {\"status\":\"declined\",\n"
"\"reason\":R}: FAILED (card_declined, or invalid_token when R is \"invalid_token\"); 409: this key was\n"
"already charged: PAID. Any other whole answer must mean NOT charged. Anything else, a connection\n"
"error or no whole answer within 2 s is retried with the same key (3 attempts, backoff 50 ms doubling,\n"
"capped at 5 s), then the order FAILED (provider_unavailable) -- unless an attempt may have reached\n"
"the provider (a timeout or a connection lost after the request left, or a charge re-issued after a\n"
"restart): such an order stays PENDING, its unit held, and is asked again until the provider answers\n"
"200, 402 or 409 (metric flashsale_payment_kept_pending_total). 3 orders failed in a row open the 1 s\n"
"breaker. Orders PENDING at a crash are charged again at start-up with the same key: the provider\n"
"must charge a key at most once (and answer 409 only for a key it charged). Plain http:// (put a TLS\n"
"proxy on loopback); the host is resolved at start-up; keep-alive connections, at most 64 requests\n"
"in flight.\n"
"Refunds (flashctl order refund) are POST URL/refund, Idempotency-Key: refund-<order id>, the same\n"
"body plus \"refund\":true. Answers: 200 {\"status\":\"refunded\"} or 409: REFUNDED; 402: refused,\n"
"the order stays PAID; errors are retried as for charges. A refund in flight at a crash is sent\n"
"again at start-up with the same key. The built-in provider refunds at once (tok_down...: an error).\n";

static volatile sig_atomic_t stop_signal;
static int workers_given;   /* --workers was set (the DPDK backend defaults to 1 lane) */
/* The handler also writes an eventfd that main() blocks on: a flag checked
 * before pause() loses a signal that lands between the check and the call
 * (flashsaled then ignores SIGTERM until a second one; seen once right
 * after start-up on a loaded box), an eventfd's count does not. write(2)
 * is async-signal-safe; the fd is made before the handlers are installed. */
static int stop_fd = -1;
static void on_signal(int sig)
{
	stop_signal = sig;
	uint64_t one = 1;
	ssize_t r = write(stop_fd, &one, sizeof one);
	(void)r;
}

static int die(const char *fmt, const char *arg)
{
	fprintf(stderr, "flashsaled: ");
	fprintf(stderr, fmt, arg);
	fprintf(stderr, "\n");
	exit(2);
}

/* "500ms", "2s", "30m", "24h", "7d" or plain seconds -> milliseconds. */
static uint64_t parse_duration_ms(const char *name, const char *v)
{
	char *e;
	errno = 0;
	unsigned long long x = strtoull(v, &e, 10);
	uint64_t unit = strcmp(e, "ms") == 0 ? 1 : (*e == 0 || strcmp(e, "s") == 0) ? 1000 :
	                strcmp(e, "m") == 0 ? 60000 : strcmp(e, "h") == 0 ? 3600000 :
	                strcmp(e, "d") == 0 ? 86400000 : 0;
	if (errno || e == v || v[0] == '-' || unit == 0 || x > (1ull << 40))
		die("--%s: expects a duration such as 500ms, 2s, 30m, 24h, 7d", name);
	return (uint64_t)x * unit;
}

static uint64_t parse_u64(const char *name, const char *v, uint64_t min, uint64_t max)
{
	char *e;
	errno = 0;
	unsigned long long x = strtoull(v, &e, 10);
	if (errno || e == v || *e || v[0] == '-' || x < min || x > max) {
		fprintf(stderr, "flashsaled: --%s: '%s' is not a number in %llu..%llu\n", name, v,
		        (unsigned long long)min, (unsigned long long)max);
		exit(2);
	}
	return x;
}

static void parse_listen(struct options *o, const char *v)
{
	const char *colon = strrchr(v, ':');
	if (colon == NULL || (size_t)(colon - v) >= sizeof o->listen_host || colon == v)
		die("--listen: '%s' is not HOST:PORT", v);
	memcpy(o->listen_host, v, (size_t)(colon - v));
	o->listen_host[colon - v] = 0;
	o->listen_port = (uint16_t)parse_u64("listen", colon + 1, 1, 65535);
}

enum { O_LISTEN = 1, O_DATA, O_SECRET, O_ADMIN, O_ADMIN_TOKEN, O_WORKERS, O_CONNS, O_USERS, O_RES, O_ORDERS,
       O_IDEM, O_BATCH, O_SEGMENT, O_BUDGET, O_IDLE, O_REQ, O_NO_DEMO, O_NO_PIN, O_NO_SYNC, O_NO_PREFAULT, O_CONFIG, O_HELP,
       O_PG, O_KAFKA, O_KAFKA_TOPIC, O_REDIS, O_TRUSTED, O_IP_RATE, O_RISK_IP, O_DPDK, O_DPDK_IP, O_DPDK_GW,
       O_BUSY_POLL, O_PAY, O_SNAP_EVERY, O_RETENTION, O_ARCHIVE,
       O_SEND_TIMEOUT, O_CONNS_PER_IP, O_FD_RESERVE, O_REPLICATE, O_SHARD, O_STANDBY, O_FAILOVER,
       O_WRITERS, O_SHARD_MAP, O_SKUS, O_RECV };

static const struct option long_opts[] = {
	{ "listen", 1, 0, O_LISTEN }, { "data-dir", 1, 0, O_DATA }, { "jwt-secret-file", 1, 0, O_SECRET },
	{ "admin", 1, 0, O_ADMIN }, { "admin-token-file", 1, 0, O_ADMIN_TOKEN }, { "workers", 1, 0, O_WORKERS },
	{ "connections", 1, 0, O_CONNS }, { "users-max", 1, 0, O_USERS }, { "skus-max", 1, 0, O_SKUS }, { "reservations-max", 1, 0, O_RES },
	{ "orders-max", 1, 0, O_ORDERS }, { "idempotency-keys-max", 1, 0, O_IDEM }, { "batch-max", 1, 0, O_BATCH },
	{ "segment-mb", 1, 0, O_SEGMENT }, { "journal-budget-mb", 1, 0, O_BUDGET },
	{ "idle-timeout-ms", 1, 0, O_IDLE }, { "request-timeout-ms", 1, 0, O_REQ },
	{ "send-timeout-ms", 1, 0, O_SEND_TIMEOUT }, { "connections-per-ip", 1, 0, O_CONNS_PER_IP },
	{ "fd-reserve", 1, 0, O_FD_RESERVE }, { "recv", 1, 0, O_RECV },
	{ "no-demo", 0, 0, O_NO_DEMO }, { "no-pin", 0, 0, O_NO_PIN }, { "unsafe-no-sync", 0, 0, O_NO_SYNC },
	{ "no-prefault", 0, 0, O_NO_PREFAULT },
	{ "config", 1, 0, O_CONFIG }, { "dpdk", 1, 0, O_DPDK }, { "ip", 1, 0, O_DPDK_IP },
	{ "gateway", 1, 0, O_DPDK_GW }, { "busy-poll", 0, 0, O_BUSY_POLL }, { "help", 0, 0, O_HELP }, { "postgres", 1, 0, O_PG },
	{ "kafka", 1, 0, O_KAFKA }, { "kafka-topic", 1, 0, O_KAFKA_TOPIC }, { "redis", 1, 0, O_REDIS },
	{ "snapshot-every-mb", 1, 0, O_SNAP_EVERY }, { "retention", 1, 0, O_RETENTION }, { "archive", 1, 0, O_ARCHIVE },
	{ "replicate", 1, 0, O_REPLICATE }, { "shard", 1, 0, O_SHARD }, { "standby", 0, 0, O_STANDBY },
	{ "failover-after", 1, 0, O_FAILOVER }, { "writers", 1, 0, O_WRITERS }, { "shard-map", 1, 0, O_SHARD_MAP },
	{ "payment-provider", 1, 0, O_PAY }, { "trusted-proxy", 1, 0, O_TRUSTED }, { "ip-rate", 1, 0, O_IP_RATE }, { "risk-ip-users", 1, 0, O_RISK_IP },
	{ 0, 0, 0, 0 } };

static void apply_config_file(struct options *o, const char *path);

/* Option strings live as long as the process, so they are copied into one
 * static arena instead of malloc'd: nothing is left to free at exit (the
 * ASan build runs the end-to-end suites with leak checking). */
static char opt_arena[32768];
static size_t opt_arena_used;

static char *keep(const char *s)
{
	size_t n = strlen(s) + 1;
	if (n > sizeof opt_arena - opt_arena_used)
		die("option strings longer than %s bytes in all", "32768");
	char *p = opt_arena + opt_arena_used;
	memcpy(p, s, n);
	opt_arena_used += n;
	return p;
}

static void apply(struct options *o, int opt, const char *v)
{
	switch (opt) {
	case O_LISTEN:  parse_listen(o, v); break;
	case O_DATA:    o->data_dir = keep(v); break;
	case O_SECRET:  o->jwt_secret_file = keep(v); break;
	case O_ADMIN:   o->admin = keep(v); break;
	case O_ADMIN_TOKEN: o->admin_token_file = keep(v); break;
	case O_WORKERS: o->workers = (uint32_t)parse_u64("workers", v, 1, DP_WORKERS_MAX); workers_given = 1; break;
	case O_CONNS:   o->conn_max = (uint32_t)parse_u64("connections", v, 1, 1000000); o->conn_max_given = 1; break;
	case O_SEND_TIMEOUT: o->send_timeout_ms = (uint32_t)parse_u64("send-timeout-ms", v, 100, 3600000); break;
	case O_CONNS_PER_IP: o->conns_per_ip = (uint32_t)parse_u64("connections-per-ip", v, 0, 1000000); break;
	case O_FD_RESERVE: o->fd_reserve = (uint32_t)parse_u64("fd-reserve", v, 0, 1000000); break;
	case O_SKUS:    o->limits.sku_count_max = (uint32_t)parse_u64("skus-max", v, 1, FS_SNAP_SKU_MAX); break;
	case O_USERS:   o->limits.user_count_max = (uint32_t)parse_u64("users-max", v, 1, 100000000); break;
	case O_RES:     o->limits.reservation_count_max = (uint32_t)parse_u64("reservations-max", v, 1, 200000000); break;
	case O_ORDERS:  o->limits.order_count_max = (uint32_t)parse_u64("orders-max", v, 1, 100000000); break;
	case O_IDEM:    o->limits.idem_count_max = (uint32_t)parse_u64("idempotency-keys-max", v, 1, 500000000); break;
	case O_BATCH:   o->batch_max = (uint32_t)parse_u64("batch-max", v, 1, WR_BATCH_COUNT_MAX); break;
	case O_SEGMENT: o->segment_mb = parse_u64("segment-mb", v, 1, 4096); break;
	case O_BUDGET:  o->journal_budget_mb = parse_u64("journal-budget-mb", v, 0, 1ull << 40); break;
	case O_IDLE:    o->idle_timeout_ms = (uint32_t)parse_u64("idle-timeout-ms", v, 100, 86400000); break;
	case O_REQ:     o->request_timeout_ms = (uint32_t)parse_u64("request-timeout-ms", v, 100, 3600000); break;
	case O_NO_DEMO: o->demo = 0; break;
	case O_NO_PIN:  o->pin = 0; break;
	case O_NO_SYNC: o->no_sync = 1; break;
	case O_NO_PREFAULT: o->no_prefault = 1; break;
	case O_CONFIG:  apply_config_file(o, v); break;
	case O_DPDK:    o->dpdk = keep(v); break;
	case O_DPDK_IP: o->dpdk_ip = keep(v); break;
	case O_DPDK_GW: o->dpdk_gateway = keep(v); break;
	case O_BUSY_POLL: o->busy_poll = 1; break;
	case O_PG:      o->postgres = keep(v); break;
	case O_KAFKA:   o->kafka = keep(v); break;
	case O_KAFKA_TOPIC: o->kafka_topic = keep(v); break;
	case O_REDIS:   o->redis = keep(v); break;
	case O_RECV:
		if (strcmp(v, "multishot") != 0 && strcmp(v, "oneshot") != 0)
			die("--recv: '%s' is not multishot or oneshot", v);
		o->recv_oneshot = strcmp(v, "oneshot") == 0;
		break;
	case O_REPLICATE:
		if (strcmp(v, "kafka") != 0)
			die("--replicate: '%s' is not supported (kafka)", v);
		o->replicate = "kafka";
		break;
	case O_SHARD:
		if (v[0] == 0 || strlen(v) > 200 || strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != strlen(v))
			die("--shard: '%s' must be 1..200 of A-Z a-z 0-9 . _ -", v);
		o->shard = keep(v);
		break;
	case O_SHARD_MAP: o->shard_map = keep(v); break;
	case O_STANDBY: o->standby = 1; break;
	case O_WRITERS: o->writers = (uint32_t)parse_u64("writers", v, 1, FS_SHARD_WRITERS_MAX); break;
	case O_FAILOVER: o->failover_after_ms = (uint32_t)parse_u64("failover-after", v, 0, 3600000); break;
	case O_TRUSTED:
		if (o->trusted_count >= 16 || fs_cidr_parse(v, strlen(v), &o->trusted[o->trusted_count]) != 0)
			die("--trusted-proxy: '%s' is not A.B.C.D[/N] (at most 16)", v);
		o->trusted_count++;
		break;
	case O_PAY: {
		char perr[512];
		if (pay_provider_check(v, perr, sizeof perr) != 0)
			die("--payment-provider: %s", perr);
		o->payment_provider = keep(v);
		break;
	}
	case O_IP_RATE: o->ip_rate = (uint32_t)parse_u64("ip-rate", v, 0, 1000000); break;
	case O_RISK_IP: o->risk_ip_users = (uint32_t)parse_u64("risk-ip-users", v, 1, 1000000); break;
	case O_SNAP_EVERY: o->snapshot_every_mb = parse_u64("snapshot-every-mb", v, 0, 1ull << 30); break;
	case O_RETENTION: o->retention_ms = parse_duration_ms("retention", v); break;
	case O_ARCHIVE: o->archive = keep(v); break;
	case O_HELP:    fputs(usage, stdout); fputs(usage_lifetime, stdout); fputs(usage_connections, stdout); fputs(usage_replication, stdout); fputs(usage_writers, stdout); fputs(usage_payments, stdout); exit(0);
	default:        fputs(usage, stderr); exit(2);
	}
}

/* "name = value" lines (# comments); names are the long options. */
static void apply_config_file(struct options *o, const char *path)
{
	FILE *f = fopen(path, "r");
	if (f == NULL)
		die("--config: cannot read '%s'", path);
	char line[512];
	while (fgets(line, sizeof line, f)) {
		char name[64], value[400];
		if (line[0] == '#' || line[0] == '\n')
			continue;
		int k = sscanf(line, " %63[a-z-] = %399[^\n]", name, value);
		if (k < 1)
			die("--config: malformed line '%s'", line);
		const struct option *opt = long_opts;
		while (opt->name && strcmp(opt->name, name) != 0)
			opt++;
		if (opt->name == NULL || opt->val == O_CONFIG)
			die("--config: unknown option '%s'", name);
		if (opt->has_arg && k < 2)
			die("--config: '%s' needs a value", name);
		apply(o, opt->val, value);
	}
	fclose(f);
}

static char *path_in(const char *dir, const char *name)
{
	char p[PATH_MAX];
	if ((size_t)snprintf(p, sizeof p, "%s/%s", dir, name) >= sizeof p)
		die("path too long under %s", dir);
	return keep(p);
}

/* The admin token file: 32 random bytes as hex, created 0600 if missing. */
static char *admin_token_load(const char *path)
{
	if (access(path, F_OK) != 0 && fs_secret_create(path) != 0)
		die("cannot create admin token file '%s'", path);
	static uint8_t key[FS_SECRET_LEN_MAX + 1];
	char err[256];
	int n = fs_secret_load(path, key, err, sizeof err);
	if (n <= 0)
		die("%s", err);
	key[n] = 0;
	return (char *)key;
}

static void create_demo(struct fs_port *port, const struct fs_snapshot *snap)
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
	memcpy(cmd.key, "flashsaled", 10);   /* who asked (fs_cmd.h): the embedded default itself */
	cmd.key_len = 10;
	if (ctl_admin_call(port, &cmd, &ans, 5000) != 0 || (ans.http != 201 && ans.err != FS_ERR_EXISTS)) {
		if (atomic_load(&((struct fs_snapshot *)snap)->journal_stalled)) {
			/* a full disk: serve what can be served, the writer retries */
			fprintf(stderr, "flashsaled: the demo SKU waits: the journal cannot write (disk full?)\n");
			return;
		}
		die("%s", "cannot create the demo SKU");
	}
	if (ans.http != 201)
		return;   /* it exists: the journal remembers its state */
	cmd.type = FS_CMD_SALE_OPEN;
	if (ctl_admin_call(port, &cmd, &ans, 5000) != 0 || ans.http != 200)
		die("%s", "cannot open the demo SKU");
	printf("flashsaled: created and opened the demo SKU 'demo' (10000 units, 1 per user, 120 s holds)\n");
}

struct sinks {
	uint32_t count;
	enum sink_kind kinds[3];
	struct sink *s[3];
	void *ptrs[3];
	const char *names[3];
};

static void sinks_notify(void *arg)
{
	struct sinks *sk = arg;
	for (uint32_t i = 0; i < sk->count; i++)
		sink_notify(sk->s[i]);
}

static uint64_t sink_applied(void *p)
{
	struct sink_stats st;
	sink_stats(p, &st);
	return st.applied_seq;
}

static uint64_t sink_lag_ms(void *p)
{
	struct sink_stats st;
	sink_stats(p, &st);
	return st.lag_ms;
}

static int sink_is_stopped(void *p)
{
	struct sink_stats st;
	sink_stats(p, &st);
	return st.stopped;
}

static int sink_connected(void *p, uint64_t *errors)
{
	struct sink_stats st;
	sink_stats(p, &st);
	*errors = st.errors;
	return st.connected;
}

/* 1 when the sink keeps a model (Kafka, Redis), with its checkpoint's seq. */
static int sink_model_seq(void *p, uint64_t *seq)
{
	struct sink_stats st;
	sink_stats(p, &st);
	*seq = st.model_checkpoint_seq;
	return st.has_model;
}

/* The journal segments the sinks still need: PostgreSQL resumes after its
 * cursor; Kafka and Redis start their projection from their model
 * checkpoint, so they need the batches after it (all of them while they
 * have none). sink_gate_seq says which. */
static uint64_t sinks_gate(void *arg)
{
	struct sinks *sk = arg;
	uint64_t low = UINT64_MAX;
	for (uint32_t i = 0; i < sk->count; i++) {
		uint64_t seq = sink_gate_seq(sk->s[i]);
		low = seq < low ? seq : low;
	}
	return low;
}

/* Sink threads tail the durable journal; each is off unless configured.
 * Appliances as shards: each its own PostgreSQL cursor and Kafka topic.
 * Writer shards (--writers N > 1): each writer K has its own sinks
 * ("<sink>-shard-K"), tailing its own journal under its own cursor, rows
 * labelled and ids numbered with K, Kafka topic BASE.wK
 * (fs_shard_sink_name). */
static void start_sinks(const struct options *o, struct writer *w, struct sinks *sk, uint32_t shard,
                        uint32_t shards, const char *dir, int sharded, uint32_t appliance)
{
	static char shard_names[FS_SHARD_WRITERS_MAX][3][32];
	char cursor[64], topic[160], label[FS_SHARD_LABEL_LEN_MAX + 1];   /* sink_start copies them */
	const char *name = sharded ? o->shard : "";
	if (fs_shard_sink_name(cursor, sizeof cursor, FS_SHARD_CURSOR, name, NULL, shard, shards) != 0 ||
	    fs_shard_sink_name(topic, sizeof topic, FS_SHARD_TOPIC, name, o->kafka_topic, shard, shards) != 0 ||
	    fs_shard_sink_name(label, sizeof label, FS_SHARD_LABEL, name, NULL, shard, shards) != 0)
		die("%s", "--kafka-topic or --shard too long for the sink names");
	const struct { const char *addr; enum sink_kind kind; const char *name; } want[3] = {
		{ o->postgres, SINK_POSTGRES, "postgres" }, { o->replicate ? NULL : o->kafka, SINK_KAFKA, "kafka" },
		{ o->redis, SINK_REDIS, "redis" } };
	char err[512];
	for (int i = 0; i < 3; i++) {
		if (want[i].addr == NULL)
			continue;
		struct sink_config c = { .kind = want[i].kind, .journal_dir = wr_journal_dir(w),
		                         .durable_seq = wr_durable_seq(w), .address = want[i].addr,
		                         .name = cursor, .topic = topic, .data_dir = dir, .shard = label,
		                         .appliance = appliance, .writer = shard };
		struct sink *s = sink_start(&c, err, sizeof err);
		if (s == NULL)
			die("%s", err);
		sk->s[sk->count] = s;
		sk->ptrs[sk->count] = s;
		snprintf(shard_names[shard][i], sizeof shard_names[shard][i], "%s-shard-%u", want[i].name, shard);
		sk->names[sk->count] = shards > 1 ? shard_names[shard][i] : want[i].name;
		sk->kinds[sk->count] = want[i].kind;
		sk->count++;
		printf("flashsaled: %s sink on (%s)\n", want[i].name, want[i].kind == SINK_POSTGRES ? "conninfo given" : want[i].addr);
	}
	if (sk->count)
		wr_on_durable(w, sinks_notify, sk);
	wr_on_segment_gate(w, sinks_gate, sk);
}

/* Descriptors the configured caps need: every connection slot of every
 * worker, plus a reserve for everything else (listeners, io_uring and
 * eventfds, journal segments and readers, the admin port's 16
 * connections, up to 64 payment connections, sink sockets). The soft
 * limit is raised to it; a hard limit below it refuses the start, naming
 * the number (a process that runs out of descriptors later fails in
 * worse places) -- unless --connections was left at its default, which is
 * then lowered to fit, in one line. */
#define FD_RESERVE_DEFAULT 256

static void descriptors_check(struct options *o)
{
	uint64_t need = (o->dpdk ? 0 : (uint64_t)o->workers * o->conn_max) + o->fd_reserve;
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur >= need)
		return;
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need && !o->conn_max_given && !o->dpdk &&
	    rl.rlim_max > (rlim_t)o->fd_reserve + o->workers) {
		uint32_t fit = (uint32_t)((rl.rlim_max - o->fd_reserve) / o->workers);
		printf("flashsaled: descriptors: hard limit %llu: connections per worker lowered from %u to %u "
		       "(set --connections, or raise the limit)\n", (unsigned long long)rl.rlim_max, o->conn_max, fit);
		o->conn_max = fit;
		need = (uint64_t)o->workers * o->conn_max + o->fd_reserve;
		if (rl.rlim_cur >= need)
			return;
	}
	if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need) {
		fprintf(stderr, "flashsaled: needs %llu descriptors (--workers %u x --connections %u + --fd-reserve %u), but "
		        "the hard limit is %llu: raise it (ulimit -Hn, LimitNOFILE=) or lower --connections\n",
		        (unsigned long long)need, o->workers, o->conn_max, o->fd_reserve, (unsigned long long)rl.rlim_max);
		exit(2);
	}
	rlim_t old = rl.rlim_cur;
	rl.rlim_cur = (rlim_t)need;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
		fprintf(stderr, "flashsaled: needs %llu descriptors; cannot raise the limit from %llu: %s\n",
		        (unsigned long long)need, (unsigned long long)old, strerror(errno));
		exit(2);
	}
	printf("flashsaled: descriptors: soft limit raised from %llu to %llu (%u workers x %u connections + %u)\n",
	       (unsigned long long)old, (unsigned long long)need, o->workers, o->conn_max, o->fd_reserve);
}

static void defaults(struct options *o)
{
	memset(o, 0, sizeof *o);
	strcpy(o->listen_host, "127.0.0.1");
	o->listen_port = 8080;
	o->data_dir = "./var";
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	o->workers = cores > 1 ? (uint32_t)(cores - 1) : 1;
	if (o->workers > DP_WORKERS_MAX)
		o->workers = DP_WORKERS_MAX;
	o->conn_max = 10000;
	wr_limits_default(&o->limits);
	o->segment_mb = 64;
	o->snapshot_every_mb = 256;
	o->retention_ms = 24ull * 3600 * 1000;
	o->idle_timeout_ms = 60000;
	o->request_timeout_ms = 10000;
	o->send_timeout_ms = 10000;
	o->fd_reserve = FD_RESERVE_DEFAULT;
	o->batch_max = WR_BATCH_COUNT_MAX;
	o->demo = 1;
	o->pin = 1;
	o->writers = 1;
}

/* ---- start-up: one function per step, run in the order of start_steps[] --- */

/* Everything the process starts; each step fills its part. */
struct daemon {
	struct options o;
	uint8_t jwt_key[FS_SECRET_LEN_MAX];
	int jwt_key_len;
	const char *unix_path;            /* the admin socket (always) */
	const char *tcp_host;             /* the admin TCP port's host, or NULL */
	uint16_t tcp_port;
	char admin_host[64];
	const char *admin_token;          /* required on the admin TCP port */
	const char *admin_token_name;     /* journaled as who asked: "token:NAME" */
	struct dp_backend dataplane;
	struct fs_snapshot *snap;
	struct wr_config wc;
	struct writer *w;
	struct sinks sks[FS_SHARD_WRITERS_MAX];   /* each writer shard's */
	void *sink_ptrs[3 * FS_SHARD_WRITERS_MAX];   /* every shard's, for the admin socket */
	const char *sink_names[3 * FS_SHARD_WRITERS_MAX];
	uint32_t sink_shards[3 * FS_SHARD_WRITERS_MAX];
	uint32_t sink_count;
	struct payments *pay;
	struct ctl_admin *admin;
	struct dp_iplimit *iplimit;       /* --connections-per-ip, NULL when off */
	struct rp *repl;                  /* --replicate: the shard's log */
	_Atomic int *ready;               /* 0 while recovering or draining (MAP_SHARED, like snap) */
	int dataplane_started;            /* by open_writer's before_replay (listen_early) */
	struct fs_shard_map shards;       /* --shard-map (static: the DPDK lanes inherit it at fork) */
	const struct fs_shard_map *map_in_use;   /* &shards when --shard-map is given (writer pins) */
	const struct fs_shard_map *owners;   /* &shards when it names appliances, else NULL */
	uint32_t appliance;               /* this box's index in owners */
	/* writer shards: [0] is w, snap, wc, pay above; one writer: count 1 */
	uint32_t writer_count;
	struct writer *ws[FS_SHARD_WRITERS_MAX];
	struct fs_snapshot *snaps[FS_SHARD_WRITERS_MAX];
	struct wr_config wcs[FS_SHARD_WRITERS_MAX];
	struct payments *pays[FS_SHARD_WRITERS_MAX];
	char shard_dirs[FS_SHARD_WRITERS_MAX][PATH_MAX];
	int producer_fds[DP_WORKERS_MAX];   /* worker i's eventfd, shared by its port to every shard */
};

/* The snapshot and the ready flag, MAP_SHARED: the DPDK backend's lane
 * processes (forked later, dataplane/dpdk.h) read them. Mapped before the
 * shard's log is opened (a standby publishes its lag into the snapshot). */
static void map_shared_state(struct daemon *d)
{
	d->snap = mmap(NULL, sizeof *d->snap, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	d->ready = mmap(NULL, sizeof *d->ready, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (d->snap == MAP_FAILED || d->ready == MAP_FAILED)
		die("%s", "out of memory");
}

/* --replicate kafka: the shard's log is read (and a standby's journal
 * resynced to it) before the writer replays the journal. */
#ifdef FS_HAVE_REPLICATE
static int repl_ship(void *arg, const uint8_t *batch, uint32_t len, const _Atomic int *stop)
{
	return rp_ship(arg, batch, len, stop);
}
static int repl_follow(void *arg, int wait_ms, struct jr_batch *b) { return rp_follow(arg, wait_ms, b); }
static int repl_tick(void *arg, const _Atomic int *stop) { return rp_tick(arg, stop); }
static void repl_stats(void *arg, struct rp_stats *st) { rp_stats(arg, st); }
static void repl_promote(void *arg) { rp_request_promote(arg); }

static void open_replication(struct daemon *d)
{
	const struct options *o = &d->o;
	map_shared_state(d);
	if (o->replicate == NULL)
		return;
	static char jdir[4096];
	snprintf(jdir, sizeof jdir, "%s/journal", o->data_dir);
	struct rp_config rc = { .brokers = o->kafka, .shard = o->shard, .data_dir = o->data_dir, .journal_dir = jdir,
	                        .standby = o->standby, .lag_ms_out = &d->snap->repl_lag_ms,
	                        .failover_after_ms = o->failover_after_ms };
	printf("flashsaled: replicate: reading the log flashsale.%s.journal at %s (%s) ...\n", o->shard, o->kafka,
	       o->standby ? "standby" : "primary");
	char err[512];
	d->repl = rp_open(&rc, err, sizeof err);
	if (d->repl == NULL)
		die("%s", err);
	struct rp_stats st;
	rp_stats(d->repl, &st);
	printf("flashsaled: replicate: %s, epoch %llu, log at seq %llu (offset %llu)\n",
	       o->standby ? "standby" : "primary", (unsigned long long)st.epoch, (unsigned long long)st.applied_seq,
	       (unsigned long long)st.log_end_offset);
}

/* Before the writer starts: it ships every batch, or follows the log. */
static void attach_replication(struct daemon *d)
{
	if (d->repl == NULL)
		return;
	struct wr_repl_ops ops = { .ship = repl_ship, .follow = repl_follow, .tick = repl_tick,
	                           .tick_every_ms = RP_HEARTBEAT_MS, .arg = d->repl };
	wr_set_replication(d->w, &ops, d->o.standby);
}
#else
static void open_replication(struct daemon *d)
{
	map_shared_state(d);
}
static void attach_replication(struct daemon *d) { (void)d; }
#endif

static void parse_args(struct daemon *d, int argc, char **argv)
{
	struct options *o = &d->o;
	defaults(o);
	int opt;
	opterr = 0;   /* our own one-line reasons */
	while ((opt = getopt_long(argc, argv, ":h", long_opts, NULL)) != -1) {
		if (opt == '?' || opt == ':')
			die(opt == ':' ? "option %s needs a value (see --help)" : "unknown option %s (see --help)",
			    argv[optind - 1]);
		apply(o, opt == 'h' ? O_HELP : opt, optarg);
	}
	if (optind < argc)
		die("unexpected argument '%s' (see --help)", argv[optind]);
}

/* --writers N > 1: what is not built for shards yet is refused here, never
 * half done (README "Writer shards"); the map is read and its pins checked
 * against N (a pin is never wrapped onto another shard). */
static void check_writers(struct daemon *d)
{
	const struct options *o = &d->o;
	d->writer_count = o->writers;
	if (o->writers > 1) {
		const char *what = o->dpdk ? "--dpdk (its lane processes have one port each)" :
		                   o->replicate ? "--replicate" : o->standby ? "--standby" : NULL;
		if (what != NULL)
			die("--writers N > 1 does not run with %s yet: use --writers 1 (README \"Writer shards\")", what);
	}
}

/* The data dir fits --writers (control/writers.h): made for this count, or
 * fresh; each shard's directory. */
static void check_layout(struct daemon *d)
{
	char err[1024];
	if (ctl_writers_layout(d->o.data_dir, d->writer_count, err, sizeof err) != 0)
		die("%s", err);
	for (uint32_t k = 0; k < d->writer_count; k++)
		if (ctl_writer_dir(d->shard_dirs[k], sizeof d->shard_dirs[k], d->o.data_dir, d->writer_count, k) != 0)
			die("--data-dir '%s' is too long", d->o.data_dir);
	if (d->writer_count > 1)
		printf("flashsaled: %u writer shards under %s/shard-0 .. shard-%u%s%s\n", d->writer_count, d->o.data_dir,
		       d->writer_count - 1, d->o.shard_map ? ", SKUs pinned by " : ", SKUs by hash",
		       d->o.shard_map ? d->o.shard_map : "");
}

/* Option defaults that depend on other options, and combinations refused. */
static void check_options(struct daemon *d)
{
	struct options *o = &d->o;
	if (o->trusted_count == 0) {
		fs_cidr_parse("127.0.0.0/8", 11, &o->trusted[0]);
		o->trusted_count = 1;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (o->dpdk && o->dpdk_ip == NULL)
		die("--dpdk needs --ip A.B.C.D/N (the stack's own address on the DPDK port)%s", "");
	if (!o->dpdk && (o->dpdk_ip || o->dpdk_gateway || o->busy_poll))
		die("--ip, --gateway and --busy-poll go with --dpdk%s", "");
	if (o->dpdk && !workers_given)
		o->workers = 1;   /* one stack lane unless asked: each more lane is a process (dataplane/dpdk.h) */
	descriptors_check(o);
	if (o->standby && !o->replicate)
		die("--standby follows a replicated log: add --replicate kafka --kafka BROKERS --shard NAME%s", "");
	if (o->failover_after_ms && !o->standby)
		die("--failover-after goes with --standby%s", "");
	if (o->failover_after_ms && o->failover_after_ms < 4 * RP_HEARTBEAT_MS)
		die("--failover-after: at least 800 ms (the primary's heartbeat is every 200 ms)%s", "");
	if (o->replicate && (!o->kafka || !o->shard))
		die("--replicate kafka needs --kafka BROKERS and --shard NAME%s", "");
#ifndef FS_HAVE_REPLICATE
	if (o->replicate)
		die("--replicate: this flashsaled was built without librdkafka (%s)", "apt-get install librdkafka-dev, rebuild");
#endif
	check_writers(d);
}

/* --shard-map FILE: load it; with `shard` lines, --shard NAME must be one
 * of them and gives this box's index (the bits 56..63 of its ids). */
static void load_shard_map(struct daemon *d)
{
	const struct options *o = &d->o;
	if (o->shard_map == NULL)
		return;
	char err[512];
	if (fs_shard_load(&d->shards, o->shard_map, err, sizeof err) != 0 ||
	    fs_shard_check_writers(&d->shards, d->writer_count, err, sizeof err) != 0) {
		fprintf(stderr, "flashsaled: --shard-map %s: %s\n", o->shard_map, err);
		exit(2);
	}
	d->map_in_use = &d->shards;   /* writer pins (--writers) */
	if (d->shards.appliance_count == 0)
		return;   /* writer pins only: every SKU is this box's */
	if (o->shard == NULL)
		die("--shard-map %s names appliances: add --shard NAME (which one this is)", o->shard_map);
	int idx = fs_shard_appliance_index(&d->shards, o->shard);
	if (idx < 0)
		die("--shard %s is not declared by a `shard` line of the --shard-map", o->shard);
	d->owners = &d->shards;
	d->appliance = (uint32_t)idx;
	printf("flashsaled: shard %s (%u of %u appliances in %s)\n", o->shard, d->appliance,
	       d->shards.appliance_count, o->shard_map);
}

/* Every sale in the journal must be one the map gives this box: a SKU that
 * moved to another shard would have two writers (refused, naming it). */
static void check_owned_skus(struct daemon *d)
{
	if (d->owners == NULL)
		return;
	for (uint32_t w = 0; w < d->writer_count; w++)
		for (uint32_t i = 0; i < atomic_load(&d->snaps[w]->count); i++) {
			const struct fs_snap_sku *k = &d->snaps[w]->skus[i];
			uint32_t owner = fs_shard_appliance_of(d->owners, k->name, k->name_len);
			if (owner == d->appliance)
				continue;
			fprintf(stderr, "flashsaled: the journal holds a sale of SKU %.*s, which the --shard-map gives to "
			        "shard %s, not %s: one SKU, one writer (pin it here with `sku %.*s %s`, or move its sale)\n",
			        k->name_len, k->name, d->owners->appliances[owner].name, d->o.shard, k->name_len, k->name,
			        d->o.shard);
			exit(2);
		}
}

/* The dataplane backend --dpdk chooses, and what it must hold before the
 * journal replays (io_uring: the listeners, so a taken port fails fast). */
static void claim_dataplane(struct daemon *d)
{
	const struct options *o = &d->o;
	struct dp_backend *b = &d->dataplane;
	b->ops = o->dpdk ? &dp_dpdk_ops : &dp_io_uring_ops;
	b->cfg.listen_host = o->listen_host;
	b->cfg.listen_port = o->listen_port;
	b->cfg.worker_count = o->workers;
	b->cfg.pin = o->pin;
	b->cfg.eal_args = o->dpdk;
	b->cfg.ip = o->dpdk_ip;
	b->cfg.gateway = o->dpdk_gateway;
	b->cfg.busy_poll = o->busy_poll;
	char err[512];
	if (b->ops->claim(b, err, sizeof err) != 0)
		die("%s", err);
}

static void load_secrets(struct daemon *d)
{
	struct options *o = &d->o;
	if (mkdir(o->data_dir, 0700) != 0 && errno != EEXIST)
		die("cannot create --data-dir '%s'", o->data_dir);
	if (o->jwt_secret_file == NULL) {
		o->jwt_secret_file = path_in(o->data_dir, "jwt.secret");
		if (access(o->jwt_secret_file, F_OK) != 0 && fs_secret_create(o->jwt_secret_file) != 0)
			die("cannot create '%s'", o->jwt_secret_file);
	}
	char err[512];
	d->jwt_key_len = fs_secret_load(o->jwt_secret_file, d->jwt_key, err, sizeof err);
	if (d->jwt_key_len <= 0)
		die("%s", err);
}

/* --admin: the local socket always, a TCP port (with its token) when asked. */
static void resolve_admin(struct daemon *d)
{
	const struct options *o = &d->o;
	if (o->admin == NULL) {
		d->unix_path = path_in(o->data_dir, "admin.sock");
	} else if (strncmp(o->admin, "unix:", 5) == 0) {
		d->unix_path = o->admin + 5;
	} else {
		const char *colon = strrchr(o->admin, ':');
		if (colon == NULL || (size_t)(colon - o->admin) >= sizeof d->admin_host)
			die("--admin: '%s' is neither unix:PATH nor HOST:PORT", o->admin);
		memcpy(d->admin_host, o->admin, (size_t)(colon - o->admin));
		d->admin_host[colon - o->admin] = 0;
		d->tcp_host = d->admin_host;
		d->tcp_port = (uint16_t)parse_u64("admin", colon + 1, 1, 65535);
		d->unix_path = path_in(o->data_dir, "admin.sock");   /* the local socket stays */
	}
	if (d->tcp_host) {
		const char *tf = o->admin_token_file ? o->admin_token_file : path_in(o->data_dir, "admin.token");
		const char *slash = strrchr(tf, '/');
		d->admin_token = admin_token_load(tf);
		d->admin_token_name = slash ? slash + 1 : tf;
	}
}

static void start_dataplane(struct daemon *d);

/* wr_open's before_replay: the ports exist, the journal is not replayed
 * yet. The dataplane starts now with the ready flag at
 * DP_READY_RECOVERING, so the listeners answer during replay (/healthz 200,
 * /readyz 503 recovering, every other route 503 recovering). */
static void listen_early(void *arg, struct writer *w)
{
	struct daemon *d = arg;
	assert(atomic_load(d->ready) == DP_READY_RECOVERING);
	d->ws[d->writer_count - 1] = w;   /* the last shard: the others have replayed */
	d->w = d->ws[0];
	start_dataplane(d);
	d->dataplane_started = 1;
}

/* Writer shard k's snapshot: shard 0's is mapped by open_replication. */
static struct fs_snapshot *shard_snapshot(struct daemon *d, uint32_t k)
{
	if (k == 0)
		return d->snap;
	struct fs_snapshot *s = mmap(NULL, sizeof *s, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (s == MAP_FAILED)
		die("%s", "out of memory");
	return s;
}

/* Opens writer shard k's journal and replays it. */
static void open_shard(struct daemon *d, uint32_t k)
{
	const struct options *o = &d->o;
	struct wr_config *wc = &d->wcs[k];
	*wc = (struct wr_config){
		.data_dir = d->shard_dirs[k], .limits = o->limits, .batch_count_max = o->batch_max,
		.port_count = o->workers + 2, .ring_slots = 4096, .segment_bytes = o->segment_mb << 20,
		.journal_budget_bytes = o->journal_budget_mb << 20, .charge_slots = 4096, .no_sync = o->no_sync, .no_prefault = o->no_prefault,
		.ip_rate_per_min = o->ip_rate, .risk_ip_users = o->risk_ip_users,
		.snapshot_every_bytes = o->snapshot_every_mb << 20, .archive_dir = o->archive,
		.retention_ms = o->retention_ms,
		.snapshot_pace_us = getenv("FS_TEST_SNAPSHOT_PACE_US") ?   /* crash tests only */
		                    (uint32_t)strtoul(getenv("FS_TEST_SNAPSHOT_PACE_US"), NULL, 10) : 0,
		.replay_pace_us = getenv("FS_TEST_REPLAY_PACE_US") ?       /* the recovery test only */
		                  (uint32_t)strtoul(getenv("FS_TEST_REPLAY_PACE_US"), NULL, 10) : 0,
		/* the listeners answer while the last shard replays (the others are done) */
		.before_replay = k + 1 == d->writer_count ? listen_early : NULL, .before_replay_arg = d,
		.shard_index = k, .shard_count = d->writer_count, .shard_map = d->map_in_use,
		/* every shard wakes worker i through shard 0's eventfd for it */
		.producer_fds = k > 0 ? d->producer_fds : NULL, .producer_fd_count = k > 0 ? o->workers : 0,
	};
	atomic_store(d->ready, DP_READY_RECOVERING);
	if (o->archive && mkdir(o->archive, 0755) != 0 && errno != EEXIST)
		die("cannot create --archive '%s'", o->archive);
	if (o->archive && d->writer_count > 1) {   /* segment names repeat across shards: one dir each */
		static char adirs[FS_SHARD_WRITERS_MAX][PATH_MAX];
		if (ctl_writer_dir(adirs[k], sizeof adirs[k], o->archive, d->writer_count, k) != 0 ||
		    (mkdir(adirs[k], 0755) != 0 && errno != EEXIST))
			die("cannot create a shard directory under --archive '%s'", o->archive);
		wc->archive_dir = adirs[k];
	}
	d->snaps[k] = shard_snapshot(d, k);
	printf("flashsaled: recovering from %s/journal ...\n", wc->data_dir);
	char err[512];
	d->ws[k] = wr_open(wc, d->snaps[k], err, sizeof err);
	if (d->ws[k] == NULL) {
		/* Damage names its file and offset ("journal: F offset N: ...", "replay
		 * diverged: F offset N ..."): exit FS_EXIT_JOURNAL_DAMAGE, which a
		 * supervisor must never answer with a restart (flashsale-control). */
		if (strstr(err, " offset ") != NULL) {
			fprintf(stderr, "flashsaled: journal damage: %s\n", err);
			exit(FS_EXIT_JOURNAL_DAMAGE);
		}
		die("%s", err);
	}
	if (k == 0)
		for (uint32_t i = 0; i < o->workers; i++)
			d->producer_fds[i] = wr_port(d->ws[0], i)->producer.fd;
	const struct wr_metrics *m = wr_metrics(d->ws[k]);
	printf("flashsaled: journal replayed: %llu batches, last sequence %llu\n",
	       (unsigned long long)atomic_load(&((struct wr_metrics *)m)->replayed_batches),
	       (unsigned long long)atomic_load(wr_durable_seq(d->ws[k])));
}

static void dataplane_free(struct daemon *d)
{
	if (d->dataplane.ops->free != NULL)
		d->dataplane.ops->free(&d->dataplane);
}

/* Stops the listeners and workers and frees them (no admin thread yet). */
static void dataplane_stop(struct daemon *d)
{
	d->dataplane.ops->stop(&d->dataplane);
	dataplane_free(d);
}

/* One SKU, one writer: every SKU a shard's journal holds must be one the
 * map gives that shard (a map edited between starts would otherwise put a
 * SKU with history in one shard on another). */
static void check_owners(struct daemon *d)
{
	for (uint32_t k = 0; k < d->writer_count; k++) {
		const struct fs_snapshot *s = d->snaps[k];
		for (uint32_t i = 0; i < atomic_load(&((struct fs_snapshot *)s)->count); i++) {
			const struct fs_snap_sku *e = &s->skus[i];
			uint32_t owner = fs_shard_writer_of(d->map_in_use, e->name, e->name_len, d->writer_count);
			if (d->writer_count > 1 && owner != k) {
				fprintf(stderr, "flashsaled: SKU '%.*s' lives in %s's journal but the shard map gives it to "
				        "writer %u: restore the map it was started with\n", e->name_len, e->name, d->shard_dirs[k], owner);
				/* the listeners started during the last replay (listen_early) read
				 * the shards' published state: stop them before closing what
				 * replayed (closing under them crashed the refusal, SIGSEGV) */
				if (d->dataplane_started)
					dataplane_stop(d);
				for (uint32_t j = d->writer_count; j-- > 0;)
					wr_close(d->ws[j]);
				exit(2);
			}
			assert(owner == k || d->writer_count <= 1);
		}
	}
}

/* The writers: open every shard's journal and replay it (shard 0's
 * snapshot is mapped by open_replication, which runs first). */
static void open_writer(struct daemon *d)
{
	const struct options *o = &d->o;
	for (uint32_t k = 0; k < d->writer_count; k++)
		open_shard(d, k);
	d->w = d->ws[0];
	d->wc = d->wcs[0];
	check_owners(d);
	const struct wr_metrics *m = wr_metrics(d->w);
	wr_print_budget(&d->wc);
	if (d->writer_count > 1)
		printf("flashsaled: the budget above is per writer shard: %u of them\n", d->writer_count);
	if (o->no_prefault)
		printf("flashsaled: writer tables fault in on first use (--no-prefault)\n");
	else
		printf("flashsaled: writer tables faulted in at start-up in %llu ms\n",
		       (unsigned long long)m->tables_fault_ms);
	printf("flashsaled: connections: %u workers x %u (%.0f MiB reserved)\n", o->workers, o->conn_max,
	       (double)dp_conn_bytes(o->conn_max) * o->workers / (1024.0 * 1024.0));
}

/* A standby's sinks would project a follower's journal: the primary's do. */
static void start_sinks_step(struct daemon *d)
{
	if (!d->o.standby)
		for (uint32_t k = 0; k < d->writer_count; k++) {
			start_sinks(&d->o, d->ws[k], &d->sks[k], k, d->writer_count, d->shard_dirs[k],
			            d->owners != NULL, d->appliance);
			for (uint32_t i = 0; i < d->sks[k].count; i++) {
				d->sink_ptrs[d->sink_count] = d->sks[k].ptrs[i];
				d->sink_names[d->sink_count] = d->sks[k].names[i];
				d->sink_shards[d->sink_count++] = k;
			}
		}
}

/* Writer shard k on core k while the cores allow one each and one more
 * for the workers (which then start after the writers' cores); with fewer
 * cores, shard k on core k % cores and the workers where they always go
 * (1 + i % (cores - 1)): on 2 cores with 2 shards, shard 0 has core 0 and
 * shard 1 shares core 1 with the workers (printed). */
static void start_writer(struct daemon *d)
{
	long cores = sysconf(_SC_NPROCESSORS_ONLN);
	uint32_t n = d->writer_count;
	for (uint32_t k = 0; k < n; k++) {
		int cpu = !d->o.pin ? -1 : n == 1 ? 0 : (int)(k % (uint32_t)(cores > 0 ? cores : 1));
		if (wr_start(d->ws[k], cpu) != 0)
			die("%s", "cannot start a writer thread");
	}
	d->dataplane.cfg.worker_cpu_base = d->o.pin && n > 1 && cores > (long)n ? n : 1;
	if (n > 1 && d->o.pin)
		printf("flashsaled: pinned writer shards 0..%u to cores 0..%u, workers from core %u%s\n", n - 1,
		       (unsigned)(cores > (long)n ? n - 1 : (uint32_t)cores - 1), d->dataplane.cfg.worker_cpu_base,
		       cores > (long)n ? "" : " (fewer cores than shards + 1: some share a core)");
}

/* Port o.workers is the admin's, o.workers + 1 the payment thread's: one
 * payment thread per writer shard, reporting to the shard that owns the
 * order. */
static void start_payments(struct daemon *d)
{
	const struct options *o = &d->o;
	for (uint32_t k = 0; k < d->writer_count; k++) {
		struct wr_metrics *m = (struct wr_metrics *)wr_metrics(d->ws[k]);
		struct pay_config pc = { .charges = wr_charge_ring(d->ws[k]), .waker = wr_charge_waker(d->ws[k]),
		                         .port = wr_port(d->ws[k], o->workers + 1), .outstanding = &m->charges_outstanding,
		                         .payments_open = &d->snaps[k]->payments_open, .provider_url = o->payment_provider,
		                         .order_id_bits = fs_id_compose(d->appliance, k, 0) };
		d->pays[k] = pay_start(&pc);
		if (d->pays[k] == NULL)
			die("%s", "cannot start the payment thread");
	}
	d->pay = d->pays[0];
	printf("flashsaled: payments: %s%s\n", o->payment_provider ? "HTTP provider " : "built-in test provider",
	       o->payment_provider ? o->payment_provider : " (tokens tok_ok, tok_decline, tok_slow_<ms>, tok_down)");
}

static void create_demo_step(struct daemon *d)
{
	if (d->owners != NULL && fs_shard_appliance_of(d->owners, "demo", 4) != d->appliance)
		return;   /* another shard owns the SKU 'demo' */
	uint32_t k = fs_shard_writer_of(d->map_in_use, "demo", 4, d->writer_count);
	if (d->o.demo && !d->o.standby)
		create_demo(wr_port(d->ws[k], d->o.workers), d->snaps[k]);
}

static void start_dataplane(struct daemon *d)
{
	if (d->dataplane_started)
		return;   /* listen_early started it before the replay */
	const struct options *o = &d->o;
	struct dp_backend *b = &d->dataplane;
	for (uint32_t i = 0; i < o->workers; i++) {
		b->cfg.wports[i] = wr_port(d->w, i);
		for (uint32_t k = 0; k < d->writer_count; k++)
			b->cfg.shard_wports[k][i] = wr_port(d->ws[k], i);
	}
	if (o->conns_per_ip != 0 && (d->iplimit = dp_iplimit_new(o->workers * o->conn_max, o->conns_per_ip)) == NULL)
		die("%s", "out of memory for --connections-per-ip");
	b->cfg.worker = (struct dp_worker_config){
		.listen_fd = -1, .cpu = -1, .conn_max = o->conn_max, .snap = d->snap,
		.jwt_key = d->jwt_key, .jwt_key_len = (size_t)d->jwt_key_len,
		.limits = { .request_line_max = 2048, .header_count_max = 32, .header_bytes_max = 8192,
		            .body_bytes_max = 4096 },
		.idle_timeout_ms = o->idle_timeout_ms, .request_timeout_ms = o->request_timeout_ms,
		.send_timeout_ms = o->send_timeout_ms, .iplimit = d->iplimit,
		.recv_multishot = !o->recv_oneshot,
		.quantity_max = o->limits.quantity_max, .ready = d->ready,
		.trusted = o->trusted, .trusted_count = o->trusted_count,
		.shards = d->owners,
		.writer_count = d->writer_count > 1 ? d->writer_count : 0, .shard_map = d->map_in_use,
		.appliance = d->appliance,
	};
	for (uint32_t k = 0; k < d->writer_count; k++)
		b->cfg.worker.snaps[k] = d->snaps[k];
	char err[512];
	if (b->ops->start(b, err, sizeof err) != 0)
		die("%s", err);
}

static void start_admin(struct daemon *d)
{
	struct ctl_admin_config ac = { .unix_path = d->unix_path, .tcp_host = d->tcp_host, .tcp_port = d->tcp_port,
	                               .admin_token = d->admin_token, .admin_token_name = d->admin_token_name,
	                               .writer = d->w,
	                               .port = wr_port(d->w, d->o.workers), .snap = d->snap,
	                               .dataplane = &d->dataplane, .payments = d->pay, .ready = d->ready, .data_dir = d->o.data_dir,
	                               .sink_count = d->sink_count, .sink_names = d->sink_names,
	                               .sink_applied = sink_applied, .sinks = d->sink_ptrs, .sink_shards = d->sink_shards,
	                               .sink_connected = sink_connected, .sink_stopped = sink_is_stopped,
	                               .writer_count = d->writer_count, .shard_map = d->map_in_use,
	                               .sink_lag_ms = sink_lag_ms, .sink_model_seq = sink_model_seq,
	                               .shards = d->owners, .appliance = d->appliance,
	                               .shard_name = d->owners ? d->o.shard : NULL };
	for (uint32_t k = 0; k < d->writer_count; k++) {
		ac.writers[k] = d->ws[k];
		ac.ports[k] = wr_port(d->ws[k], d->o.workers);
		ac.snaps[k] = d->snaps[k];
		ac.payments_of[k] = d->pays[k];
		ac.shard_dirs[k] = d->shard_dirs[k];
	}
#ifdef FS_HAVE_REPLICATE
	ac.repl = d->repl;
	ac.repl_stats = d->repl ? repl_stats : NULL;
	ac.repl_promote = d->repl ? repl_promote : NULL;
#endif
	char err[512];
	d->admin = ctl_admin_start(&ac, err, sizeof err);
	if (d->admin == NULL)
		die("%s", err);
}

static void install_signals(struct daemon *d)
{
	(void)d;
	stop_fd = eventfd(0, EFD_CLOEXEC);
	if (stop_fd < 0)
		die("%s", "cannot create the stop eventfd");
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);   /* SIGPIPE: ignored in main() before any thread */
}

/* Start-up, in order. A step that fails says why and exits 2 (die). */
static const struct { const char *name; void (*run)(struct daemon *d); } start_steps[] = {
	{ "check options", check_options },
	{ "load the shard map", load_shard_map },
	{ "claim the dataplane", claim_dataplane },
	{ "load secrets", load_secrets },
	{ "resolve the admin address", resolve_admin },
	{ "check the data dir's writer shards", check_layout },
	{ "open the shard's log (--replicate)", open_replication },
	{ "open the writer (replay)", open_writer },
	{ "check the journal's SKUs are this shard's", check_owned_skus },
	{ "attach replication", attach_replication },
	{ "start the sinks", start_sinks_step },
	{ "start the writer", start_writer },
	{ "start payments", start_payments },
	{ "create the demo sale", create_demo_step },
	{ "start the dataplane", start_dataplane },
	{ "start the admin socket", start_admin },
	{ "install signal handlers", install_signals },
};

/* Stop, in order: no new requests, then the producers of commands, then
 * the writer, then the readers of its journal. */
static void stop_all(struct daemon *d)
{
	atomic_store(d->ready, 0);
	d->dataplane.ops->stop(&d->dataplane);
	ctl_admin_stop(d->admin);   /* it reads the dataplane's counters until here */
	dataplane_free(d);
	for (uint32_t k = 0; k < d->writer_count; k++)
		pay_stop(d->pays[k]);
	for (uint32_t k = 0; k < d->writer_count; k++)
		wr_stop(d->ws[k]);
	for (uint32_t k = 0; k < d->writer_count; k++)
		for (uint32_t i = 0; i < d->sks[k].count; i++)
			sink_stop(d->sks[k].s[i]);
	for (uint32_t k = d->writer_count; k-- > 0;)   /* shard 0 last: the others use its workers' eventfds */
		wr_close(d->ws[k]);
	dp_iplimit_free(d->iplimit);
#ifdef FS_HAVE_REPLICATE
	rp_close(d->repl);
#endif
}

int main(int argc, char **argv)
{
	/* Before any thread exists, so every thread inherits it: a peer that
	 * closes (client, provider, sink target) is an EPIPE, never a kill. */
	signal(SIGPIPE, SIG_IGN);
	static struct daemon d;
	parse_args(&d, argc, argv);
	for (size_t i = 0; i < sizeof start_steps / sizeof start_steps[0]; i++)
		start_steps[i].run(&d);
	atomic_store(d.ready, 1);
	const struct options *o = &d.o;
	printf("flashsaled: ready: http://%s:%u (workers %u), admin unix:%s%s%s, journal %s%s\n",
	       o->listen_host, o->listen_port, o->workers, d.unix_path, d.tcp_host ? " and tcp " : "",
	       d.tcp_host ? o->admin : "", wr_journal_dir(d.w), o->no_sync ? " (NO fdatasync: not durable)" : "");
	while (!stop_signal) {   /* read returns once a handler wrote (or EINTR: re-check) */
		uint64_t v;
		ssize_t r = read(stop_fd, &v, sizeof v);
		(void)r;
	}
	printf("flashsaled: stopping (signal %d)\n", (int)stop_signal);
	stop_all(&d);
	printf("flashsaled: stopped\n");
	return 0;
}
