/* lwip_fuzz.c - libFuzzer target for the DPDK backend's receive path:
 * Ethernet/IP/TCP frames into lwIP (Debian's liblwip) and the glue on top
 * of it (dataplane/lwip_glue.c: accept, receive into connection slots, the
 * HTTP connection protocol, output back into TCP), against a REAL writer
 * (wr_open + wr_start on a journal in TMPDIR, no fdatasync), as the admin
 * target does.
 *
 * An input is a list of operations, each one byte of opcode and its
 * arguments; the harness plays a TCP client that tracks the stack's
 * sequence numbers from the frames the stack sends, so the fuzzer reaches
 * established connections and the HTTP path, not only the header checks:
 *   0 RAW    u16 len, len bytes       a frame as is (Ethernet header and all)
 *   1 SYN    u8 conn                  a SYN from client port 40000+conn
 *   2 DATA   u8 conn, u16 len, bytes  a segment with the right seq/ack
 *   3 FIN    u8 conn                  4 RST u8 conn
 *   5 MUT    u8 conn, u8 field, u32 v a segment whose field is v (seq, ack,
 *                                     window, flags, offset, ip length, ttl,
 *                                     checksum left wrong)
 *   6 TIME   u16 ms                   the clock moves (lwIP timers, timeouts)
 * Checksums are computed right unless MUT says otherwise; the harness
 * answers the stack's ARP questions for the client. LWIP_FUZZ_VERBOSE=1
 * prints, per input, what reached the stack (accepted connections, HTTP
 * bytes in and out): the seed corpus reaches the HTTP path. Invariants: no
 * crash, no sanitizer report, no lwIP assertion (which aborts); every frame
 * the stack sends fits the MTU.
 */
#include "dataplane/lwip_glue.h"
#include "common/fs_snapshot.h"
#include "writer/writer.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)
#define MTU        1500u
#define FRAME_MAX  (MTU + 14u)
#define CONNS      8u

static const uint8_t server_mac[6] = { 0x02, 0, 0, 0, 0, 0x02 };
static const uint8_t client_mac[6] = { 0x02, 0, 0, 0, 0, 0x09 };
static const uint32_t server_ip = 0x0a000002;   /* 10.0.0.2, host order */
static const uint32_t client_ip = 0x0a000009;   /* 10.0.0.9 */

struct client_conn {
	uint32_t snd_nxt;      /* our next sequence number */
	uint32_t rcv_nxt;      /* the stack's next, as we acknowledge it */
	int synced;            /* the stack's SYN-ACK was seen */
};

static struct dp_lwip *stack;
static struct writer *w;
static struct fs_snapshot *snap;
static struct dp_stats stats;
static struct dp_lwip_tcp_stats tcp_stats;
static uint8_t tx[FRAME_MAX + 64];
static struct client_conn cc[CONNS];
static int64_t now_ms = 1700000000000;
static int arp_asked;   /* the stack asked who has client_ip */

/* ---- frames ---------------------------------------------------------------- */

static uint16_t csum_fold(uint32_t sum)
{
	while (sum >> 16)
		sum = (sum & 0xffff) + (sum >> 16);
	return (uint16_t)~sum;
}

static uint32_t csum_add(uint32_t sum, const uint8_t *p, size_t n)
{
	for (size_t i = 0; i + 1 < n; i += 2)
		sum += (uint32_t)p[i] << 8 | p[i + 1];
	if (n & 1)
		sum += (uint32_t)p[n - 1] << 8;
	return sum;
}

/* Builds Ethernet + IPv4 + TCP to the server; returns the frame length. */
static uint32_t build(uint8_t *f, uint32_t c, uint8_t flags, const uint8_t *data, uint32_t len,
                      uint32_t seq, uint32_t ack)
{
	memcpy(f, server_mac, 6);
	memcpy(f + 6, client_mac, 6);
	f[12] = 0x08; f[13] = 0x00;
	uint8_t *ip = f + 14, *t = ip + 20;
	uint16_t tot = (uint16_t)(20 + 20 + len);
	memset(ip, 0, 20);
	ip[0] = 0x45; ip[2] = (uint8_t)(tot >> 8); ip[3] = (uint8_t)tot; ip[8] = 64; ip[9] = 6;
	uint32_t s = htonl(client_ip), d = htonl(server_ip);
	memcpy(ip + 12, &s, 4);
	memcpy(ip + 16, &d, 4);
	uint16_t ic = csum_fold(csum_add(0, ip, 20));
	ip[10] = (uint8_t)(ic >> 8); ip[11] = (uint8_t)ic;
	memset(t, 0, 20);
	uint16_t sport = (uint16_t)(40000 + c), dport = 80;
	t[0] = (uint8_t)(sport >> 8); t[1] = (uint8_t)sport; t[2] = (uint8_t)(dport >> 8); t[3] = (uint8_t)dport;
	uint32_t nseq = htonl(seq), nack = htonl(ack);
	memcpy(t + 4, &nseq, 4);
	memcpy(t + 8, &nack, 4);
	t[12] = 5 << 4; t[13] = flags; t[14] = 0xff; t[15] = 0xff;
	if (len)
		memcpy(t + 20, data, len);
	uint8_t pseudo[12];
	memcpy(pseudo, ip + 12, 8);
	pseudo[8] = 0; pseudo[9] = 6; pseudo[10] = (uint8_t)((20 + len) >> 8); pseudo[11] = (uint8_t)(20 + len);
	uint16_t tc = csum_fold(csum_add(csum_add(0, pseudo, 12), t, 20 + len));
	t[16] = (uint8_t)(tc >> 8); t[17] = (uint8_t)tc;
	return 14 + tot;
}

/* A frame the stack sent: learn the sequence numbers of our connections. */
static void observe(const uint8_t *f, uint32_t len)
{
	CHECK(len <= FRAME_MAX);
	if (len >= 42 && f[12] == 0x08 && f[13] == 0x06 && f[21] == 1) {   /* ARP request */
		uint32_t target;
		memcpy(&target, f + 38, 4);
		arp_asked |= ntohl(target) == client_ip;
		return;
	}
	if (len < 14 + 20 + 20 || f[12] != 0x08 || f[13] != 0x00 || f[14 + 9] != 6)
		return;
	const uint8_t *ip = f + 14, *t = ip + (ip[0] & 0xf) * 4;
	if (t + 20 > f + len)
		return;
	uint16_t dport = (uint16_t)(t[2] << 8 | t[3]);
	if (dport < 40000 || dport >= 40000 + CONNS)
		return;
	struct client_conn *c = &cc[dport - 40000];
	uint32_t seq, ack;
	memcpy(&seq, t + 4, 4);
	memcpy(&ack, t + 8, 4);
	seq = ntohl(seq);
	uint16_t iplen = (uint16_t)(ip[2] << 8 | ip[3]);
	uint32_t hl = (ip[0] & 0xf) * 4u, thl = (t[12] >> 4) * 4u;
	uint32_t data = iplen > hl + thl ? iplen - hl - thl : 0;
	uint8_t flags = t[13];
	if (flags & 0x02) {   /* SYN-ACK */
		c->rcv_nxt = seq + 1;
		c->synced = 1;
	} else if (c->synced) {
		c->rcv_nxt = seq + data + ((flags & 0x01) ? 1 : 0);
	}
	if (flags & 0x04)
		c->synced = 0;   /* reset */
}

/* The glue copies each outgoing frame into the buffer tx_buf hands out
 * before it asks for the next one: the previous frame is complete then. */
static uint32_t tx_len;

static void tx_observe(void)
{
	if (tx_len)
		observe(tx, tx_len);
	tx_len = 0;
}

static uint8_t *tx_buf(void *ctx, uint32_t len)
{
	(void)ctx;
	CHECK(len <= FRAME_MAX);   /* nothing bigger than the MTU leaves */
	tx_observe();
	tx_len = len;
	return tx;
}

/* The client's ARP reply to the stack. */
static void arp_reply(void)
{
	uint8_t f[42];
	memcpy(f, server_mac, 6);
	memcpy(f + 6, client_mac, 6);
	f[12] = 0x08; f[13] = 0x06;
	f[14] = 0; f[15] = 1; f[16] = 0x08; f[17] = 0; f[18] = 6; f[19] = 4; f[20] = 0; f[21] = 2;
	uint32_t cip = htonl(client_ip), sip = htonl(server_ip);
	memcpy(f + 22, client_mac, 6);
	memcpy(f + 28, &cip, 4);
	memcpy(f + 32, server_mac, 6);
	memcpy(f + 38, &sip, 4);
	dp_lwip_input(stack, f, sizeof f);
	tx_observe();
}

/* The stack runs: timers, answers, output; what it sent is observed, and
 * an ARP question for the client is answered. */
static void run(void)
{
	dp_lwip_poll(stack, now_ms);
	tx_observe();
	for (int i = 0; i < 2 && arp_asked; i++) {
		arp_asked = 0;
		arp_reply();
		dp_lwip_poll(stack, now_ms);
		tx_observe();
	}
}

static void feed(const uint8_t *f, uint32_t len)
{
	dp_lwip_input(stack, f, len);
	tx_observe();
	run();
}

static void setup(void)
{
	char dir[256];
	snprintf(dir, sizeof dir, "%s/lwip_fuzz.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp", (int)getpid());
	mkdir(dir, 0700);
	snap = calloc(1, sizeof *snap);
	CHECK(snap != NULL);
	struct wr_config wc;
	memset(&wc, 0, sizeof wc);
	wc.data_dir = dir;
	wr_limits_default(&wc.limits);
	wc.limits.sku_count_max = 16; wc.limits.user_count_max = 256; wc.limits.reservation_count_max = 1024;
	wc.limits.order_count_max = 256; wc.limits.idem_count_max = 1024; wc.limits.holding_count_max = 256;
	wc.batch_count_max = 64;
	wc.port_count = 1;
	wc.ring_slots = 64;
	wc.segment_bytes = 1u << 20;
	wc.charge_slots = 64;
	wc.no_sync = 1;
	wc.quiet = 1;
	char err[512];
	w = wr_open(&wc, snap, err, sizeof err);
	if (w == NULL) {
		fprintf(stderr, "lwip_fuzz: %s\n", err);
		abort();
	}
	CHECK(wr_start(w, -1) == 0);
	static _Atomic int ready = 1;
	static const uint8_t key[] = "lwip-fuzz-secret-0123456789abcdef";
	struct dp_lwip_config lc = {
		.ip_be = htonl(server_ip), .netmask_be = htonl(0xffffff00), .gateway_be = 0, .mtu = MTU, .port = 80,
		.tx_buf = tx_buf, .tx_ctx = NULL, .stats = &stats, .tcp = &tcp_stats,
	};
	memcpy(lc.mac, server_mac, 6);
	lc.worker.conn_max = CONNS;
	lc.worker.cpu = -1;
	lc.worker.listen_fd = -1;
	lc.worker.wport = wr_port(w, 0);
	lc.worker.snap = snap;
	lc.worker.jwt_key = key;
	lc.worker.jwt_key_len = sizeof key - 1;
	lc.worker.limits = (struct dp_http_limits){ 2048, 32, 8192, 4096 };
	lc.worker.idle_timeout_ms = 60000;
	lc.worker.request_timeout_ms = 10000;
	lc.worker.send_timeout_ms = 10000;
	lc.worker.quantity_max = 4;
	lc.worker.ready = &ready;
	stack = dp_lwip_open(&lc, err, sizeof err);
	if (stack == NULL) {
		fprintf(stderr, "lwip_fuzz: %s\n", err);
		abort();
	}
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setup();
	return 0;
}

/* ---- one input ------------------------------------------------------------- */

struct input {
	const uint8_t *p;
	size_t n;
};

static int take(struct input *in, void *out, size_t k)
{
	if (in->n < k)
		return -1;
	memcpy(out, in->p, k);
	in->p += k;
	in->n -= k;
	return 0;
}

static void segment(uint32_t c, uint8_t flags, const uint8_t *data, uint32_t len)
{
	static uint8_t f[FRAME_MAX];
	struct client_conn *k = &cc[c];
	uint32_t n = build(f, c, flags, data, len, k->snd_nxt, k->rcv_nxt);
	k->snd_nxt += len + ((flags & 0x03) ? 1 : 0);   /* SYN and FIN take one */
	feed(f, n);
}

/* A segment with one field replaced (checksums as they fall). */
static void mutated(uint32_t c, uint8_t field, uint32_t v)
{
	static uint8_t f[FRAME_MAX];
	struct client_conn *k = &cc[c];
	uint32_t n = build(f, c, 0x18, (const uint8_t *)"GET / HTTP/1.1\r\n", 16, k->snd_nxt, k->rcv_nxt);
	uint8_t *ip = f + 14, *t = ip + 20;
	uint32_t nv = htonl(v);
	switch (field % 8) {
	case 0: memcpy(t + 4, &nv, 4); break;              /* seq */
	case 1: memcpy(t + 8, &nv, 4); break;              /* ack */
	case 2: t[14] = (uint8_t)(v >> 8); t[15] = (uint8_t)v; break;   /* window */
	case 3: t[13] = (uint8_t)v; break;                 /* flags */
	case 4: t[12] = (uint8_t)v; break;                 /* data offset (options) */
	case 5: ip[2] = (uint8_t)(v >> 8); ip[3] = (uint8_t)v; break;   /* IP total length */
	case 6: ip[8] = (uint8_t)v; ip[0] = (uint8_t)(v >> 8); break;   /* ttl, version/ihl */
	default: t[16] ^= (uint8_t)v; t[17] ^= (uint8_t)(v >> 8); break; /* TCP checksum */
	}
	feed(f, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct input in = { data, size };
	uint8_t op;
	memset(cc, 0, sizeof cc);
	for (uint32_t c = 0; c < CONNS; c++)
		cc[c].snd_nxt = 1000u * (c + 1);
	while (take(&in, &op, 1) == 0) {
		uint8_t c8 = 0;
		uint16_t len = 0;
		switch (op % 7) {
		case 0: {   /* RAW */
			static uint8_t f[FRAME_MAX];
			if (take(&in, &len, 2) != 0)
				return 0;
			len = (uint16_t)(len % (FRAME_MAX + 1));
			if (len > in.n)
				len = (uint16_t)in.n;
			memcpy(f, in.p, len);
			in.p += len;
			in.n -= len;
			uint8_t *frame = malloc(len ? len : 1);   /* exact size: a read past it is caught */
			CHECK(frame != NULL);
			memcpy(frame, f, len);
			feed(frame, len);
			free(frame);
			break;
		}
		case 1:
			if (take(&in, &c8, 1) != 0)
				return 0;
			cc[c8 % CONNS].synced = 0;
			segment(c8 % CONNS, 0x02, NULL, 0);
			if (cc[c8 % CONNS].synced)
				segment(c8 % CONNS, 0x10, NULL, 0);   /* the handshake's ACK */
			break;
		case 2: {
			static uint8_t d[MTU];
			if (take(&in, &c8, 1) != 0 || take(&in, &len, 2) != 0)
				return 0;
			len = (uint16_t)(len % (MTU - 40 + 1));
			if (len > in.n)
				len = (uint16_t)in.n;
			memcpy(d, in.p, len);
			in.p += len;
			in.n -= len;
			segment(c8 % CONNS, 0x18, d, len);
			break;
		}
		case 3:
		case 4:
			if (take(&in, &c8, 1) != 0)
				return 0;
			segment(c8 % CONNS, op % 7 == 3 ? 0x11 : 0x04, NULL, 0);
			break;
		case 5: {
			uint8_t field;
			uint32_t v;
			if (take(&in, &c8, 1) != 0 || take(&in, &field, 1) != 0 || take(&in, &v, 4) != 0)
				return 0;
			mutated(c8 % CONNS, field, v);
			break;
		}
		default:
			if (take(&in, &len, 2) != 0)
				return 0;
			now_ms += len % 5000;
			run();
			break;
		}
	}
	/* the answers the writer gives arrive; then every connection is reset,
	 * so the next input starts from a listening stack */
	for (int i = 0; i < 3; i++) {
		usleep(200);
		run();
	}
	for (uint32_t c = 0; c < CONNS; c++)
		if (cc[c].synced)
			segment(c, 0x04, NULL, 0);
	now_ms += 1000;
	run();
	if (getenv("LWIP_FUZZ_VERBOSE"))   /* is the corpus reaching the HTTP path? */
		fprintf(stderr, "lwip_fuzz: accepted %llu, rx frames %llu, tx frames %llu, bytes in %llu out %llu\n",
		        (unsigned long long)tcp_stats.pcbs_accepted, (unsigned long long)tcp_stats.rx_frames,
		        (unsigned long long)tcp_stats.tx_frames, (unsigned long long)stats.bytes_in,
		        (unsigned long long)stats.bytes_out);
	return 0;
}
