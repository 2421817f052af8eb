#!/usr/bin/env python3
"""test_writers.py - writer shards in one process (flashsaled --writers 2):
8 SKUs on 2 writer shards under concurrent load from many users, with
kill -9 in the middle of it.

Checks: every SKU is owned by the shard the map (or the hash) gives it and
shows it in /metrics and `sale status`; reservation and order ids carry
their shard and route back to it; per-SKU conservation and zero oversell;
nothing acknowledged is lost on either shard across kill -9; each shard's
journal verifies and replays alone (flashsale-journal verify/stats on
DIR/shard-K) and holds only its own SKUs; a data dir refuses to start with
another writer count or a map that moves a SKU with history; combinations
not built for shards are refused at start; a backup has one verified copy
per shard. With --redis, --postgres and --kafka: one sink per shard;
PostgreSQL rows carry their writer shard, each shard's Kafka topic loads
into PostgreSQL (flashsale-loader --writer K), and reconcile per shard finds
0 differences.

The seed is printed; rerun one with FS_SEED=<seed>. FS_WRITERS_ROUNDS sets
the number of load + kill -9 rounds (default 2)."""
import os
import random
import json
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
ROUNDS = int(os.environ.get("FS_WRITERS_ROUNDS", "2"))
print("test_writers: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)

JOURNAL_TOOL = os.path.join(fc.BUILD, "tools", "flashsale-journal")
SKUS = ["sku-%d" % i for i in range(8)]
STOCK = 40
# sku-0..2 pinned to writer 0, sku-3..5 to writer 1; sku-6, sku-7 by hash
PINS = {"sku-0": 0, "sku-1": 0, "sku-2": 0, "sku-3": 1, "sku-4": 1, "sku-5": 1}
LIMITS = ["--users-max", "20000", "--reservations-max", "40000", "--orders-max", "20000",
          "--idempotency-keys-max", "80000", "--connections", "256"]


def shard_hash(name):
    """common/fs_shard.c: FNV-1a 64, then MurmurHash3's fmix64."""
    m = (1 << 64) - 1
    h = 0xcbf29ce484222325
    for b in name.encode():
        h = ((h ^ b) * 0x100000001b3) & m
    h ^= h >> 33
    h = (h * 0xff51afd7ed558ccd) & m
    h ^= h >> 33
    h = (h * 0xc4ceb9fe1a85ec53) & m
    h ^= h >> 33
    return h


def owner(sku, writers=2):
    return PINS[sku] if sku in PINS else (shard_hash(sku) >> 32) % writers


def id_shard(public_id):
    """bits 48..55 of the number behind "r"/"o" + 16 hex digits."""
    return (int(public_id[1:], 16) >> 48) & 0xff


class Ledger:
    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}            # rid -> (sku, token, key, body)
        self.uncertain = []        # (sku, token, key): sent, no answer
        self.cancel_acked = set()
        self.cancel_uncertain = set()


class WritersTest(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)
        self.tmp = tempfile.mkdtemp(prefix="fs-writers-")
        self.map_path = os.path.join(self.tmp, "shards.map")
        with open(self.map_path, "w") as f:
            f.write("# test_writers: pinned SKUs; the others go by hash\n")
            for sku, w in sorted(PINS.items()):
                f.write("writer %s %d\n" % (sku, w))
        self.srv = fc.Server(workers=2, demo=False,
                             extra=["--writers", "2", "--shard-map", self.map_path] + LIMITS)

    def tearDown(self):
        self.srv.cleanup()
        subprocess.run(["rm", "-rf", self.tmp])

    # ------------------------------------------------------------ helpers
    def counters(self, sku):
        c = self.srv.counters(sku)
        self.assertTrue(fc.conserved(c), c)
        return c

    def start_other(self, *extra, data_dir=None):
        """flashsaled with other flags on this data dir: (rc, output)."""
        argv = [fc.FLASHSALED, "--listen", "127.0.0.1:%d" % fc.free_port(), "--data-dir",
                data_dir or self.srv.data_dir, "--workers", "1", "--no-demo", "--no-prefault"] + LIMITS + list(extra)
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=20)
        except subprocess.TimeoutExpired:
            self.fail("flashsaled %r did not refuse to start" % (extra,))
        return p.returncode, p.stdout + p.stderr

    def client(self, port, ledger, stop, tid, rnd, seed):
        rng = random.Random(seed)
        n = 0
        try:
            conn = fc.Conn(port, timeout=10)
        except OSError:
            return
        try:
            while not stop.is_set():
                n += 1
                with ledger.lock:
                    mine = [r for r in ledger.acked if r not in ledger.cancel_acked
                            and r not in ledger.cancel_uncertain]
                if mine and rng.random() < 0.1:
                    rid = rng.choice(mine)
                    tok = ledger.acked[rid][1]
                    try:
                        r = conn.request("DELETE", "/v1/reservations/" + rid, fc.auth(tok))
                    except (OSError, fc.ConnectionClosed, ValueError):
                        with ledger.lock:
                            ledger.cancel_uncertain.add(rid)
                        return
                    with ledger.lock:
                        (ledger.cancel_acked if r.status == 200 else ledger.cancel_uncertain).add(rid)
                    continue
                sku = rng.choice(SKUS)
                tok = fc.mint_token(self.secret, "u%d-%d-%d-%s" % (rnd, tid, n, uuid.uuid4().hex[:6]))
                k = uuid.uuid4().hex
                try:
                    r = conn.request("POST", "/v1/skus/%s/reservations" % sku,
                                     {"Authorization": "Bearer " + tok, "Idempotency-Key": k}, {"quantity": 1})
                except (OSError, fc.ConnectionClosed, ValueError):
                    with ledger.lock:
                        ledger.uncertain.append((sku, tok, k))
                    return
                with ledger.lock:
                    if r.status in (200, 201):
                        b = r.json()
                        ledger.acked[b["reservation_id"]] = (sku, tok, k, b)
                    elif r.status != 409:   # 409 sold_out
                        ledger.uncertain.append((sku, tok, k))
                        print("unexpected reserve answer %r" % r, file=sys.stderr)
        finally:
            conn.close()

    def verify(self, ledger, when):
        """Every acknowledged reservation is on its shard with its status;
        counters conserve and equal the live acknowledged reservations."""
        with ledger.lock:
            pending, ledger.uncertain = ledger.uncertain, []
        for sku, tok, k in pending:   # a repeat with the same key settles an unanswered request
            r = self.srv.reserve(tok, sku, k, 1)
            self.assertIn(r.status, (200, 201, 409), "%s: repeat of an unanswered request: %r" % (when, r))
            if r.status in (200, 201):
                b = r.json()
                ledger.acked[b["reservation_id"]] = (sku, tok, k, b)
        live = {s: 0 for s in SKUS}
        per_shard = [0, 0]
        for rid, (sku, tok, k, b) in sorted(ledger.acked.items()):
            self.assertEqual(id_shard(rid), owner(sku), "%s: %s of %s names the wrong shard" % (when, rid, sku))
            per_shard[id_shard(rid)] += 1
            r = self.srv.get_res(tok, rid)
            self.assertEqual(r.status, 200, "%s: acknowledged reservation %s (%s) lost: %r" % (when, rid, sku, r))
            self.assertEqual(r.json()["sku"], sku, when)
            st = r.json()["status"]
            if rid in ledger.cancel_acked:
                self.assertEqual(st, "CANCELLED", "%s: acknowledged cancel of %s lost" % (when, rid))
            elif rid in ledger.cancel_uncertain:
                self.assertIn(st, ("RESERVED", "CANCELLED"), when)
                if st == "CANCELLED":
                    ledger.cancel_acked.add(rid)
                ledger.cancel_uncertain.discard(rid)
            else:
                self.assertIn(st, ("RESERVED", "PAID"), "%s: %s" % (when, rid))
            if st == "RESERVED":
                live[sku] += 1
        for sku in SKUS:
            c = self.counters(sku)
            self.assertEqual(c["total"], STOCK, when)
            self.assertEqual(c["reserved"] + c["sold"], live[sku] + self.sold.get(sku, 0),
                             "%s: %s counters %r, live acknowledged %d" % (when, sku, c, live[sku]))
            self.assertLessEqual(c["reserved"] + c["sold"], STOCK, "%s: %s oversold" % (when, sku))
        return per_shard

    def shard_dir(self, k, data_dir=None):
        return os.path.join(data_dir or self.srv.data_dir, "shard-%d" % k)

    def journal_skus(self, k, data_dir=None):
        """`flashsale-journal stats` of shard k alone: {sku: (total, available, reserved, sold)}."""
        p = subprocess.run([JOURNAL_TOOL, "stats", self.shard_dir(k, data_dir)], capture_output=True,
                           text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout

    # ------------------------------------------------------------ the test
    def test_two_shards_under_load_and_kill9(self):
        self.srv.start()
        self.secret = self.srv.secret()
        self.sold = {}
        log = self.srv.log()
        self.assertIn("2 writer shards", log)
        self.assertIn("pinned writer shards", log)
        for sku in SKUS:
            self.srv.create_sale(sku, STOCK, hold="600s")
        # ownership: /metrics and sale status show the shard the map or the hash gives
        metrics = self.srv.admin_ok("metrics")
        for sku in SKUS:
            self.assertIn('flashsale_sku_writer{sku="%s",writer="%d"} 1' % (sku, owner(sku)), metrics)
            st = self.srv.admin_ok("sale", "status", sku)
            self.assertIn('"writer_shard":%d' % owner(sku), st)
        self.assertRegex(metrics, r'flashsale_journal_seq\{writer="1"\} [1-9]')
        self.assertEqual(sorted({owner(s) for s in SKUS}), [0, 1])

        ledger = Ledger()
        for rnd in range(ROUNDS):
            stop = threading.Event()
            threads = [threading.Thread(target=self.client,
                                        args=(self.srv.port, ledger, stop, t, rnd, self.rng.randrange(1 << 30)))
                       for t in range(12)]
            for t in threads:
                t.start()
            time.sleep(1.0 + self.rng.random() * 1.5)
            # a slow box: let both shards acknowledge something before the kill
            def both_shards():
                with ledger.lock:
                    return {id_shard(r) for r in ledger.acked} >= {0, 1}
            fc.wait_for(both_shards, timeout=20)
            self.srv.kill9()      # while the clients are mid-request
            stop.set()
            for t in threads:
                t.join(30)
            self.srv.start()
            per_shard = self.verify(ledger, "round %d after kill -9" % rnd)
            print("round %d: %d acknowledged reservations (shard 0: %d, shard 1: %d)"
                  % (rnd, len(ledger.acked), per_shard[0], per_shard[1]), file=sys.stderr)
            self.assertTrue(per_shard[0] > 0 and per_shard[1] > 0, per_shard)

        # checkouts are paid by the owning shard's payment thread; order ids carry it
        for k in (0, 1):
            rid, (sku, tok, key, b) = next((r, v) for r, v in sorted(ledger.acked.items())
                                           if id_shard(r) == k and r not in ledger.cancel_acked)
            r = self.srv.checkout(tok, rid, "ck-" + rid, "tok_ok")
            self.assertIn(r.status, (200, 201, 202), r)
            oid = r.json()["order_id"]
            self.assertEqual(id_shard(oid), k, oid)
            o = fc.wait_for(lambda: self.srv.get_order(tok, oid).json().get("status") == "PAID", timeout=10)
            self.assertTrue(o, self.srv.get_order(tok, oid))
            self.sold[sku] = self.sold.get(sku, 0) + 1
            ledger.acked.pop(rid)
        # an id of a shard this box does not have is not found, never routed elsewhere
        tok = fc.mint_token(self.secret, "nobody")
        self.assertEqual(self.srv.get_res(tok, "r0005000000000001").status, 404)
        self.verify(ledger, "after checkouts")

        # a backup: DIR/writers, the secrets, and a verified copy per shard
        bdir = os.path.join(self.tmp, "backup")
        out = self.srv.admin_ok("backup", bdir)
        self.assertIn('"shards"', out)
        for k in (0, 1):
            p = subprocess.run([JOURNAL_TOOL, "verify", self.shard_dir(k, bdir)], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertTrue(os.path.exists(os.path.join(bdir, "jwt.secret")))

        live_counters = {sku: self.counters(sku) for sku in SKUS}
        self.assertEqual(self.srv.stop(), 0)
        # each shard's journal verifies and replays alone, and holds only its SKUs
        for k in (0, 1):
            p = subprocess.run([JOURNAL_TOOL, "verify", self.shard_dir(k)], capture_output=True, text=True,
                               timeout=120)
            self.assertEqual(p.returncode, 0, "shard %d: %s" % (k, p.stdout + p.stderr))
            stats = self.journal_skus(k)
            for sku in SKUS:
                found = re.search(r"\b%s\b" % re.escape(sku), stats) is not None
                self.assertEqual(found, owner(sku) == k, "shard %d stats vs %s:\n%s" % (k, sku, stats))
                if found:
                    c = live_counters[sku]
                    line = next(ln for ln in stats.splitlines() if re.search(r"\b%s\b" % re.escape(sku), ln))
                    for field in ("total", "available", "reserved", "sold"):
                        self.assertIn(" %s=%d" % (field, c[field]), line, "%s: %s" % (sku, line))

        # the data dir starts only with the count and map it was made with
        rc, out = self.start_other("--writers", "1")
        self.assertEqual(rc, 2, out)
        self.assertIn("--writers 2", out)
        rc, out = self.start_other("--writers", "3", "--shard-map", self.map_path)
        self.assertEqual(rc, 2, out)
        moved = os.path.join(self.tmp, "moved.map")
        with open(moved, "w") as f:
            f.write("writer sku-0 1\n")
        rc, out = self.start_other("--writers", "2", "--shard-map", moved)
        self.assertEqual(rc, 2, out)
        self.assertIn("sku-0", out)
        # a one-writer data dir with a journal is not reopened as shards
        one = fc.Server(workers=1, demo=True, extra=LIMITS)
        try:
            one.start()
            one.stop()
            rc, out = self.start_other("--writers", "2", data_dir=one.data_dir)
            self.assertEqual(rc, 2, out)
            self.assertIn("one-writer journal", out)
        finally:
            one.cleanup()
        # what is not built for shards is refused, not half done
        repl_map = os.path.join(self.tmp, "repl.map")
        with open(repl_map, "w") as f:
            f.write("shard east 127.0.0.1:9\n")
            f.writelines("writer %s %d\n" % (sku, w) for sku, w in sorted(PINS.items()))
        rc, out = self.start_other("--writers", "2", "--replicate", "kafka", "--kafka", "127.0.0.1:1",
                                   "--shard", "east", "--shard-map", repl_map)
        self.assertEqual(rc, 2, out)
        self.assertIn("does not run with --replicate", out)
        # and the same flags start it again, everything still there
        self.srv.start()
        for sku in SKUS:
            self.assertEqual(self.counters(sku), live_counters[sku])
        # flashctl report finds each SKU's journal in its shard
        for sku in ("sku-0", "sku-3", "sku-7"):
            p = self.srv.admin("report", sku, "--data-dir", self.srv.data_dir)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            self.assertIn("closing statement for sale %s (journal %s/journal" % (sku, self.shard_dir(owner(sku))),
                          p.stdout)
            self.assertIn("sold               %d" % live_counters[sku]["sold"], p.stdout)

    def test_redis_sink_per_shard(self):
        """--redis with writer shards: one sink per shard, each SKU's stock:<sku>
        equal to the API's answer (needs FS_TEST_REDIS, as ./setup.sh test sets)."""
        addr = os.environ.get("FS_TEST_REDIS")
        if not addr:
            self.skipTest("FS_TEST_REDIS not set (./setup.sh test starts Redis)")
        self.srv.extra += ["--redis", addr]
        self.srv.start()
        tag = uuid.uuid4().hex[:6]
        skus = ["rd%s-%d" % (tag, i) for i in range(8)]
        for sku in skus:
            self.srv.create_sale(sku, STOCK)
        secret = self.srv.secret()
        for i in range(40):
            sku = skus[i % len(skus)]
            r = self.srv.reserve(fc.mint_token(secret, "rd-user-%d" % i), sku, "rd-%s-%d" % (tag, i), 1)
            self.assertEqual(r.status, 201, r)
        host, _, port = addr.rpartition(":")
        rs = socket.create_connection((host or "127.0.0.1", int(port)), timeout=5)
        f = rs.makefile("rb")

        def redis_get(key):
            rs.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()))
            line = f.readline()
            self.assertTrue(line.startswith(b"$"), line)
            n = int(line[1:])
            return None if n < 0 else f.read(n + 2)[:-2]
        try:
            for sku in skus:
                api = self.counters(sku)
                ok = fc.wait_for(lambda: (redis_get("stock:" + sku) or b"null") and
                                 json.loads(redis_get("stock:" + sku) or b"null") == api, timeout=10)
                self.assertTrue(ok, "%s: redis %r, api %r" % (sku, redis_get("stock:" + sku), api))
        finally:
            rs.close()
        metrics = self.srv.admin_ok("metrics")
        for k in (0, 1):
            self.assertIn('flashsale_sink_lag_batches{sink="redis-shard-%d"}' % k, metrics)
        st = json.loads(self.srv.admin_ok("sale", "status", skus[0]))
        k = st["writer_shard"]
        self.assertEqual([x["name"] for x in st["sinks"]], ["redis-shard-%d" % k])

    def test_postgres_sink_per_shard(self):
        """--postgres with writer shards: one sink per shard under its own cursor
        (flashsaled.wK), rows labelled wK with ids carrying K; flashsale-reconcile
        --writer K finds 0 differences against each shard's journal, after a
        kill -9 too (needs FS_TEST_PG, as ./setup.sh test sets)."""
        pg, conninfo = self.fresh_db("fs_e2e_writers_pg")
        psql = self.psql
        try:
            self.srv.extra += ["--postgres", conninfo]
            self.srv.start()
            secret = self.srv.secret()
            for sku in SKUS:
                self.srv.create_sale(sku, STOCK, hold="600s")
            acked = {}     # rid -> (sku, token)
            for i in range(64):
                sku = SKUS[i % len(SKUS)]
                tok = fc.mint_token(secret, "pg-user-%d" % i)
                r = self.srv.reserve(tok, sku, "pg-key-%d" % i, 1)
                self.assertEqual(r.status, 201, r)
                acked[r.json()["reservation_id"]] = (sku, tok)
            paid, paid_rids = {}, set()
            for k in (0, 1):   # a checkout on each shard: the order rows carry it
                rid, (sku, tok) = next((r, v) for r, v in sorted(acked.items()) if id_shard(r) == k)
                r = self.srv.checkout(tok, rid, "pg-ck-" + rid, "tok_ok")
                self.assertIn(r.status, (200, 201, 202), r)
                oid = r.json()["order_id"]
                self.assertEqual(id_shard(oid), k, oid)
                ok = fc.wait_for(lambda: self.srv.get_order(tok, oid).json().get("status") == "PAID", timeout=15)
                self.assertTrue(ok, self.srv.get_order(tok, oid))
                paid[oid] = k
                paid_rids.add(rid)
            self.srv.kill9()   # the sinks resume from their own cursors
            self.srv.start()
            cancelled = sorted(r for r in acked if r not in paid_rids)[:8]
            for rid in cancelled:
                self.assertEqual(self.srv.cancel(acked[rid][1], rid).status, 200)

            def caught_up():
                for sku in SKUS:
                    st = json.loads(self.srv.admin_ok("sale", "status", sku))
                    if [x["name"] for x in st["sinks"]] != ["postgres-shard-%d" % owner(sku)]:
                        self.fail("%s: sinks %r" % (sku, st["sinks"]))
                    if any(x["lag"] != 0 for x in st["sinks"]):
                        return False
                return True
            self.assertTrue(fc.wait_for(caught_up, timeout=30), "the PostgreSQL sinks did not catch up: %s\n%s" % (
                [json.loads(self.srv.admin_ok("sale", "status", s))["sinks"] for s in SKUS[:2]], self.srv.log()))
            for k in (0, 1):
                label = "w%d" % k
                mine = sorted(r for r in acked if id_shard(r) == k)
                got = psql(conninfo, "SELECT reservation_id FROM reservations WHERE shard = '%s' "
                                     "ORDER BY reservation_id" % label).split()
                self.assertEqual(got, mine, "shard %d: reservation rows" % k)
                orders = psql(conninfo, "SELECT order_id, status FROM orders WHERE shard = '%s'" % label).split()
                self.assertEqual(orders, ["%s|PAID" % o for o, kk in paid.items() if kk == k])
                skus = set(psql(conninfo, "SELECT sku FROM sales WHERE shard = '%s'" % label).split())
                self.assertEqual(skus, {s for s in SKUS if owner(s) == k})
                self.assertRegex(psql(conninfo, "SELECT seq FROM sink_cursor WHERE name = 'flashsaled.w%d'" % k),
                                 r"^[1-9][0-9]*$")
                self.reconcile(k, conninfo)
            cancelled_rows = psql(conninfo, "SELECT count(*) FROM reservations WHERE status = 'CANCELLED'")
            self.assertEqual(int(cancelled_rows), len(cancelled))
            # reconcile of one shard's journal against the other shard's rows finds them different
            p = subprocess.run([os.path.join(fc.BUILD, "tools", "flashsale-reconcile"), "--journal",
                                os.path.join(self.shard_dir(0), "journal"), "--postgres", conninfo,
                                "--writer", "1"], capture_output=True, text=True, timeout=120)
            self.assertEqual(p.returncode, 1, p.stdout[-2000:] + p.stderr)
        finally:
            self.srv.stop()
            psql(pg, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % conninfo.rsplit("=", 1)[1])

    def test_kafka_sink_per_shard(self):
        """--kafka with writer shards: each shard's records go to its own topic
        (flashsale.journal.wK); flashsale-loader --writer K carries each topic
        into PostgreSQL and reconcile --writer K finds 0 differences (needs
        FS_TEST_PG and the mock cluster helper tests/e2e/mockkafka)."""
        if not fc.MockKafka.available():
            self.skipTest("no %s (a build without librdkafka)" % fc.MOCKKAFKA)
        pg, conninfo = self.fresh_db("fs_e2e_writers_kafka")
        topics = ["flashsale.journal.w0", "flashsale.journal.w1"]
        mock = fc.MockKafka(*topics)
        try:
            bootstrap = mock.bootstrap
            self.srv.extra += ["--kafka", bootstrap]
            self.srv.start()
            secret = self.srv.secret()
            for sku in SKUS:
                self.srv.create_sale(sku, STOCK, hold="600s")
            acked = {}
            for i in range(32):
                tok = fc.mint_token(secret, "kf-user-%d" % i)
                r = self.srv.reserve(tok, SKUS[i % len(SKUS)], "kf-key-%d" % i, 1)
                self.assertEqual(r.status, 201, r)
                acked[r.json()["reservation_id"]] = tok
            for rid in sorted(acked)[::5]:
                self.assertEqual(self.srv.cancel(acked[rid], rid).status, 200)
            applied = {}

            def delivered():
                for sku in SKUS:
                    st = json.loads(self.srv.admin_ok("sale", "status", sku))
                    self.assertEqual([x["name"] for x in st["sinks"]], ["kafka-shard-%d" % owner(sku)], st)
                    if st["sinks"][0]["lag"] != 0:
                        return False
                    applied[owner(sku)] = st["sinks"][0]["applied_seq"]
                return True
            self.assertTrue(fc.wait_for(delivered, timeout=30), "the Kafka sinks did not deliver everything")
            for k in (0, 1):
                p = subprocess.run([os.path.join(fc.BUILD, "tools", "flashsale-loader"), "--kafka", bootstrap,
                                    "--postgres", conninfo, "--writer", str(k), "--cursor", "loader.w%d" % k,
                                    "--group", "writers-test-%d" % k, "--until-seq", str(applied[k])],
                                   capture_output=True, text=True, timeout=120)
                self.assertEqual(p.returncode, 0, "loader --writer %d: %s%s" % (k, p.stdout[-2000:], p.stderr[-2000:]))
                mine = sorted(r for r in acked if id_shard(r) == k)
                got = self.psql(conninfo, "SELECT reservation_id FROM reservations WHERE shard = 'w%d' "
                                          "ORDER BY reservation_id" % k).split()
                self.assertEqual(got, mine, "shard %d: rows loaded from its topic" % k)
                self.reconcile(k, conninfo, "--cursor", "loader.w%d" % k)
        finally:
            self.srv.stop()
            mock.close()
            self.psql(pg, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % conninfo.rsplit("=", 1)[1])

    # ------------------------------------------------------------ PostgreSQL helpers
    def psql(self, conninfo, sql):
        r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, 0, "psql %r: %s" % (sql, r.stderr))
        return r.stdout.strip()

    def fresh_db(self, prefix):
        """(FS_TEST_PG, conninfo of a new database); skips without FS_TEST_PG."""
        pg = os.environ.get("FS_TEST_PG")
        if not pg:
            self.skipTest("FS_TEST_PG not set (./setup.sh test starts PostgreSQL)")
        dbname = "%s_%d" % (prefix, os.getpid())
        self.psql(pg, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % dbname)
        self.psql(pg, "CREATE DATABASE %s" % dbname)
        return pg, "%s dbname=%s" % (pg, dbname)

    def reconcile(self, k, conninfo, *extra):
        """flashsale-reconcile of writer shard k's journal: 0 differences."""
        p = subprocess.run([os.path.join(fc.BUILD, "tools", "flashsale-reconcile"), "--journal",
                            os.path.join(self.shard_dir(k), "journal"), "--postgres", conninfo,
                            "--writer", str(k)] + list(extra), capture_output=True, text=True, timeout=120)
        last = (p.stdout.strip().splitlines() or [""])[-1]
        self.assertEqual(p.returncode, 0, "reconcile --writer %d:\n%s%s" % (k, p.stdout[-3000:], p.stderr))
        self.assertTrue(last.endswith(" 0 differences"), last)


if __name__ == "__main__":
    unittest.main()
