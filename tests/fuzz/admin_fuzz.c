/* admin_fuzz.c - libFuzzer target for the admin protocol (control/admin.c):
 * one request on the admin socket or the TCP admin port (HTTP framing, the
 * admin token, routes, query arguments of sale create/stock/ip/tiers),
 * handled exactly as the admin thread handles it, against a REAL writer
 * (wr_open + wr_start on a journal in memory, no fdatasync): every admin
 * verb the fuzzer finds goes through the decide step and the journal.
 * admin.c is included so its static handler is reached without a socket.
 *
 * Invariants: an answer is written for every input, fits the buffer, is an
 * HTTP/1.1 status line with a 3-digit code; over TCP without the token it
 * is 401; the writer's counters stay conserved (available + reserved + sold
 * == total for every published SKU).
 */
#include "control/admin.c"

#define CHECK(cond) do { if (!(cond)) abort(); } while (0)

static struct ctl_admin A;
static struct fs_snapshot *snap;
static struct writer *w;
static _Atomic int ready = 1;
static char data_dir[256];

static void setup(void)
{
	snprintf(data_dir, sizeof data_dir, "%s/admin_fuzz.%d", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp",
	         (int)getpid());
	mkdir(data_dir, 0700);
	snap = calloc(1, sizeof *snap);
	CHECK(snap != NULL);
	struct wr_config wc;
	memset(&wc, 0, sizeof wc);
	wc.data_dir = data_dir;
	wr_limits_default(&wc.limits);
	wc.limits.sku_count_max = 64; wc.limits.user_count_max = 256; wc.limits.reservation_count_max = 1024;
	wc.limits.order_count_max = 256; wc.limits.idem_count_max = 1024; wc.limits.holding_count_max = 256;
	wc.batch_count_max = 64;
	wc.port_count = 2;
	wc.ring_slots = 64;
	wc.segment_bytes = 1u << 20;
	wc.charge_slots = 64;
	wc.no_sync = 1;
	wc.quiet = 1;
	char err[512];
	w = wr_open(&wc, snap, err, sizeof err);
	if (w == NULL) {
		fprintf(stderr, "admin_fuzz: %s\n", err);
		abort();
	}
	CHECK(wr_start(w, -1) == 0);
	A.cfg.writer = w;
	A.cfg.port = wr_port(w, 0);
	A.cfg.snap = snap;
	A.cfg.ready = &ready;
	A.cfg.data_dir = data_dir;
	A.cfg.admin_token = "fuzz-admin-token";
	A.cfg.writer_count = 1;   /* what ctl_admin_start fills in for one writer */
	A.cfg.writers[0] = w;
	A.cfg.ports[0] = A.cfg.port;
	A.cfg.snaps[0] = snap;
	A.cfg.shard_dirs[0] = data_dir;
	A.out = malloc(ADMIN_OUT_BYTES);
	A.body = malloc(ADMIN_OUT_BYTES);
	CHECK(A.out && A.body);
}

/* One writer for the whole run, made before the first input (so its
 * buffers are not taken for a leak of that input). */
int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	(void)argc;
	(void)argv;
	setup();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > ADMIN_REQ_BYTES)
		return 0;
	int over_tcp = data[0] & 1;
	char *req = malloc(size);   /* exact size: a read past the end is caught */
	CHECK(req != NULL);
	memcpy(req, data + 1, size - 1);
	/* who asked, as conn_step sets it before handle() */
	snprintf(A.ident, sizeof A.ident, over_tcp ? "token:fuzz" : "uid:0");
	int n = handle(&A, req, size - 1, over_tcp);
	CHECK(n > 12 && n <= ADMIN_OUT_BYTES);
	CHECK(memcmp(A.out, "HTTP/1.1 ", 9) == 0);
	CHECK(A.out[9] >= '1' && A.out[9] <= '5' && A.out[10] >= '0' && A.out[10] <= '9');
	if (over_tcp && memmem(req, size - 1, "fuzz-admin-token", 16) == NULL)
		CHECK(memcmp(A.out + 9, "401", 3) == 0 || memcmp(A.out + 9, "400", 3) == 0 ||
		      (A.out[9] == '4' && A.out[10] != '0') || A.out[9] == '5');
	free(req);
	uint32_t count = atomic_load(&snap->count);
	for (uint32_t i = 0; i < count && i < FS_SNAP_SKU_MAX; i++) {
		struct fs_sku_read r;
		fs_snap_read(snap, (int)i, &r);
		CHECK(r.available + r.reserved + r.sold == r.total);
	}
	atomic_store(&ready, 1);
	return 0;
}
