#!/usr/bin/env python3
"""test_lifetime.py - snapshots, start-up from snapshot + tail, damaged
snapshots, kill -9 while a snapshot is written, segments dropped behind a
snapshot, and `flashctl backup` restored on another port.

Every claim is checked against what the clients were acknowledged: each
acknowledged reservation must read back with the status it was left in.
Random choices print their seed (FS_SEED=N reruns one)."""
import glob
import json
import os
import random
import re
import shutil
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
print("test_lifetime: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)
JOURNAL_TOOL = os.path.join(fc.BUILD, "tools", "flashsale-journal")


def burst(srv, sku, n, tag):
    """n reservations of distinct exempt users, pipelined 50 at a time.
    Returns {rid: (token, status)} for the acknowledged ones."""
    secret = srv.secret()
    acked = {}
    with srv.conn(timeout=30) as c:
        for start in range(0, n, 50):
            reqs, toks = [], []
            for i in range(start, min(n, start + 50)):
                tok = fc.mint_token(secret, "%s-u%d" % (tag, i), tier=0)
                toks.append(tok)
                reqs.append(fc.Conn.build("POST", "/v1/skus/%s/reservations" % sku,
                                          {"Authorization": "Bearer " + tok,
                                           "Idempotency-Key": "k-%s-%d" % (tag, i)}, b""))
            for tok, r in zip(toks, c.pipeline(reqs)):
                if r.status == 201:
                    acked[r.json()["reservation_id"]] = (tok, "RESERVED")
    return acked


def cancel_some(srv, acked, rng, k):
    for rid in rng.sample(sorted(acked), k):
        tok, _ = acked[rid]
        r = srv.cancel(tok, rid)
        assert r.status == 200, r
        acked[rid] = (tok, "CANCELLED")


def check_all(test, srv, acked, sample=None, rng=None):
    rids = sorted(acked)
    if sample is not None and len(rids) > sample:
        rids = rng.sample(rids, sample)
    for rid in rids:
        tok, status = acked[rid]
        r = srv.get_res(tok, rid)
        test.assertEqual(r.status, 200, (rid, r))
        test.assertEqual(r.json()["status"], status, rid)


def snapshot(srv):
    out = srv.admin_ok("snapshot")
    return json.loads(out)["seq"]


def metric(srv, name):
    for line in srv.admin_ok("metrics").splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise AssertionError("no metric " + name)


def startup_line(srv):
    m = re.search(r"start-up: snapshot (\d+) loaded .*journal tail of (\d+) batches", srv.log())
    assert m, srv.log()
    return int(m.group(1)), int(m.group(2))


def snap_path(srv, seq):
    return os.path.join(srv.data_dir, "snapshots", "%020d.snap" % seq)


class Lifetime(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)
        self.srv = None
        self.dirs = []

    def tearDown(self):
        if self.srv:
            self.srv.cleanup()
        for d in self.dirs:
            shutil.rmtree(d, ignore_errors=True)

    def server(self, *extra, data_dir=None):
        return fc.Server(demo=False, data_dir=data_dir, extra=["--snapshot-every-mb", "0"] + list(extra))

    def test_restart_from_snapshot_plus_tail(self):
        srv = self.srv = self.server().start()
        srv.create_sale("s", 5000)
        acked = burst(srv, "s", 300, "a")
        cancel_some(srv, acked, self.rng, 40)
        seq = snapshot(srv)
        self.assertGreater(seq, 0)
        self.assertTrue(os.path.exists(snap_path(srv, seq)))
        acked.update(burst(srv, "s", 200, "b"))
        cancel_some(srv, acked, self.rng, 20)
        before = srv.counters("s")
        batches = metric(srv, "flashsale_writer_batches_total")
        srv.kill9()
        srv.start()
        loaded, tail = startup_line(srv)
        self.assertEqual(loaded, seq)
        self.assertGreater(tail, 0)
        self.assertLess(tail, batches)
        self.assertEqual(srv.counters("s"), before)
        check_all(self, srv, acked)
        # the tail replayed decisions identically: one more snapshot + restart
        seq2 = snapshot(srv)
        self.assertGreater(seq2, seq)
        srv.stop()
        srv.start()
        self.assertEqual(startup_line(srv), (seq2, 0))
        self.assertEqual(srv.counters("s"), before)

    def test_damaged_snapshots_fall_back(self):
        srv = self.srv = self.server().start()
        srv.create_sale("s", 5000)
        acked = burst(srv, "s", 200, "a")
        seq1 = snapshot(srv)
        acked.update(burst(srv, "s", 200, "b"))
        cancel_some(srv, acked, self.rng, 30)
        seq2 = snapshot(srv)
        acked.update(burst(srv, "s", 100, "c"))
        before = srv.counters("s")
        srv.stop()
        p2 = snap_path(srv, seq2)
        good = open(p2, "rb").read()
        # a bit flip anywhere in the newest snapshot: refused, previous used
        at = self.rng.randrange(len(good))
        bad = bytearray(good)
        bad[at] ^= 1 << self.rng.randrange(8)
        open(p2, "wb").write(bad)
        srv.start()
        self.assertIn("refusing snapshot %s offset" % p2, srv.log())
        self.assertEqual(startup_line(srv)[0], seq1)
        self.assertEqual(srv.counters("s"), before)
        check_all(self, srv, acked)
        srv.stop()
        # truncated: same
        open(p2, "wb").write(good[:self.rng.randrange(len(good))])
        srv.start()
        self.assertIn("refusing snapshot %s offset" % p2, srv.log())
        self.assertEqual(startup_line(srv)[0], seq1)
        self.assertEqual(srv.counters("s"), before)
        srv.stop()
        # none valid: the journal still starts at batch 1, so a full replay
        p1 = snap_path(srv, seq1)
        open(p1, "r+b").truncate(100)
        srv.start()
        self.assertIn("refusing snapshot %s offset" % p1, srv.log())
        self.assertEqual(startup_line(srv)[0], 0)
        self.assertEqual(srv.counters("s"), before)
        check_all(self, srv, acked)

    def test_kill9_while_writing_a_snapshot(self):
        os.environ["FS_TEST_SNAPSHOT_PACE_US"] = "60000"   # ~1 s per snapshot
        try:
            srv = self.srv = self.server().start()
        finally:
            del os.environ["FS_TEST_SNAPSHOT_PACE_US"]
        srv.create_sale("s", 20000)
        acked = {}
        good = 0
        for rnd in range(4):
            acked.update(burst(srv, "s", 150, "r%d" % rnd))
            before = srv.counters("s")
            t = threading.Thread(target=lambda: srv.admin("snapshot"))
            t.start()
            time.sleep(self.rng.uniform(0.05, 1.0))
            if rnd % 2 == 0:
                srv.kill9()           # mid-snapshot (its writer is a thread of flashsaled)
            else:
                srv.stop()            # a clean stop finishes the snapshot being written
            t.join(60)
            srv.start()
            self.assertEqual(srv.counters("s"), before)
            check_all(self, srv, acked, sample=100, rng=self.rng)
            good = snapshot(srv)      # the next one succeeds
            for f in glob.glob(os.path.join(srv.data_dir, "snapshots", "*.snap")):
                self.assertRegex(os.path.basename(f), r"^\d{20}\.snap$")
        self.assertGreater(good, 0)
        srv.kill9()
        srv.start()
        self.assertEqual(startup_line(srv)[0], good)
        check_all(self, srv, acked)
        self.assertEqual(glob.glob(os.path.join(srv.data_dir, "snapshots", ".tmp-*")), [])

    def test_segments_dropped_then_backup_restored(self):
        arch = tempfile.mkdtemp(prefix="fs-arch-")
        self.dirs.append(arch)
        srv = self.srv = fc.Server(demo=False, extra=["--segment-mb", "1", "--snapshot-every-mb", "1",
                                                       "--archive", arch]).start()
        srv.create_sale("s", 200000)
        acked = {}
        for i in range(12):
            acked.update(burst(srv, "s", 1500, "g%d" % i))
        self.assertTrue(fc.wait_for(lambda: metric(srv, "flashsale_journal_first_seq") > 1, timeout=20),
                        "no segment was dropped")
        self.assertGreater(metric(srv, "flashsale_snapshots_total"), 1)
        archived = glob.glob(os.path.join(arch, "*.seg"))
        live = glob.glob(os.path.join(srv.data_dir, "journal", "*.seg"))
        self.assertGreater(len(archived), 0)
        # kept: the segments after the older of the two kept snapshots
        self.assertLessEqual(len(live), 6, live)
        # the closing statement once the journal no longer starts at batch 1
        c = srv.counters("s")
        p = srv.admin("report", "s", "--data-dir", srv.data_dir)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("from a snapshot", p.stdout)
        self.assertIn("zero-oversell proof  HOLDS", p.stdout)
        for field in ("total", "sold", "available"):
            self.assertRegex(p.stdout, r"\n  %s +%d\n" % (field, c[field]))
        self.assertRegex(p.stdout, r"\n  held \(reserved\) +%d\n" % c["reserved"])
        before = srv.counters("s")
        srv.kill9()
        srv.start()
        self.assertGreater(startup_line(srv)[0], 0)
        self.assertEqual(srv.counters("s"), before)
        check_all(self, srv, acked, sample=300, rng=self.rng)

        # backup under load, restored into a new data dir on another port
        stop = threading.Event()
        during = {}

        def load():
            i = 0
            while not stop.is_set():
                during.update(burst(srv, "s", 50, "L%d" % i))
                i += 1
        th = threading.Thread(target=load)
        th.start()
        time.sleep(0.3)
        acked_before = dict(acked)
        dest = os.path.join(tempfile.mkdtemp(prefix="fs-bk-"), "copy")
        self.dirs.append(os.path.dirname(dest))
        p = srv.admin("backup", dest, timeout=120)
        stop.set()
        th.join(60)
        self.assertEqual(p.returncode, 0, p.stderr + p.stdout)
        info = json.loads(p.stdout)
        self.assertGreater(info["last_seq"], info["snapshot_seq"] - 1)
        self.assertNotEqual(srv.admin("backup", dest).returncode, 0)   # not over an existing copy
        if os.path.exists(JOURNAL_TOOL):
            v = subprocess.run([JOURNAL_TOOL, "verify", dest], capture_output=True, text=True, timeout=120)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)
        final = srv.counters("s")
        srv.stop()
        copy = fc.Server(demo=False, data_dir=dest, extra=["--snapshot-every-mb", "0"])
        try:
            copy.start()
            self.assertEqual(startup_line(copy)[0], info["snapshot_seq"])
            c = copy.counters("s")
            self.assertTrue(fc.conserved(c), c)
            self.assertGreaterEqual(c["version"], before["version"])
            self.assertLessEqual(c["version"], final["version"])
            check_all(self, copy, acked_before, sample=300, rng=self.rng)
            # a restored copy takes new decisions
            more = burst(copy, "s", 10, "after")
            self.assertEqual(len(more), 10)
        finally:
            copy.stop()


if __name__ == "__main__":
    unittest.main(verbosity=2)
