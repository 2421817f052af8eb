#!/usr/bin/env python3
"""test_weekly.py - one data dir, a hundred weekly sales (issue 15).

flashsaled with small tables (--users-max 1000 --reservations-max 2000
--idempotency-keys-max 4000) and --retention 1s --snapshot-every-mb 1
--segment-mb 1 runs FS_WEEKS sales (default 100), each a "week": a sale of
40 units (1 per user) created and opened, 60 new users reserve (40 get
201, 20 sold_out), 16 check out and pay, 12 cancel, the rest let their hold
(1 s) expire, the sale is closed and a snapshot taken (`flashctl
snapshot`, the runbook's step after a sale: a week's journal is ~20 KiB,
under the smallest --snapshot-every-mb). 6,000 distinct users over the run: six
times the user table, so users must be reclaimed (with their holdings) once
their reservations are, including those who bought in a sale that closed.
Every 10 weeks flashsaled restarts (kill -9 and clean stop in turn).
The sale table holds 8 sales (--skus-max 8): each week the sales closed 4
or more weeks ago are archived (`flashctl sale archive`, retried while it
answers 409 retained: retention has not reclaimed their reservations yet),
so a hundred sales pass through 8 slots; an archived sale answers 404
unknown_sku, and archiving an open sale is refused 409 bad_state.

Checked every week: no answer is 503 overloaded; the counters of every sale
so far are conserved and sold equals the payments acknowledged in it; after
each restart every sale's state, total, sold and available + reserved are
what they were before it (holds may expire across it). After each
restart: it started from a snapshot, the journal tail it replayed is at most
2 intervals (2 MiB), the journal directory holds at most 5 MiB of segments,
at most 2 snapshots are kept and the newest is no larger than 4x the first
one taken after week 10 (state does not grow with history); the tables'
fill (flashsale_table_used) stays under their sizes.

CI runs 100 weeks (about a minute here); FS_WEEKS=1000 is the long version
(RELIABILITY.md)."""
import os
import random
import re
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402
from test_capacity import pipelined, req  # noqa: E402
from test_history import batches, snapshots  # noqa: E402

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
WEEKS = int(os.environ.get("FS_WEEKS", "100"))
print("test_weekly: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)
STOCK, USERS, PAY, CANCEL = 40, 60, 16, 12
MIB = 1 << 20


def table_used(srv):
    used = {}
    for line in srv.admin_ok("metrics").splitlines():
        m = re.match(r'flashsale_table_used\{table="(\w+)"\} (\d+)', line)
        if m:
            used[m.group(1)] = int(m.group(2))
    return used


class Weekly(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)
        self.srv = fc.Server(demo=False, extra=[
            "--users-max", "1000", "--reservations-max", "2000", "--idempotency-keys-max", "4000",
            "--retention", "1s", "--snapshot-every-mb", "1", "--segment-mb", "1", "--skus-max", "8"])

    def tearDown(self):
        self.srv.cleanup()

    def week(self, w, secret):
        srv = self.srv
        sku = "wk%d" % w
        srv.create_sale(sku, STOCK, per_user=1, hold="1s")
        toks = [fc.mint_token(secret, "w%d-u%d" % (w, i), tier=0) for i in range(USERS)]
        rs = pipelined(srv, [req("POST", "/v1/skus/%s/reservations" % sku, toks[i], "k%d-%d" % (w, i))
                             for i in range(USERS)], conns=8)
        codes = [r.status for r in rs]
        self.assertEqual(codes.count(201), STOCK, (w, {c: codes.count(c) for c in set(codes)}))
        self.assertEqual(codes.count(409), USERS - STOCK, (w, {c: codes.count(c) for c in set(codes)}))
        won = [(i, r.json()["reservation_id"]) for i, r in zip(range(USERS), rs) if r.status == 201]
        self.rng.shuffle(won)
        pays, cancels = won[:PAY], won[PAY:PAY + CANCEL]
        rp = pipelined(srv, [req("POST", "/v1/reservations/%s/checkout" % rid, toks[i], "co%d-%d" % (w, i),
                                 b'{"payment_token": "tok_ok"}') for i, rid in pays], conns=8)
        self.assertTrue(all(r.status == 200 for r in rp), [(r.status, r.body[:100]) for r in rp if r.status != 200][:3])
        rc = pipelined(srv, [req("DELETE", "/v1/reservations/" + rid, toks[i]) for i, rid in cancels], conns=8)
        self.assertTrue(all(r.status == 200 for r in rc), [(r.status, r.body[:100]) for r in rc if r.status != 200][:3])
        srv.admin_ok("sale", "close", sku)
        srv.admin_ok("snapshot")   # the runbook's step after a sale (a week's journal is ~20 KiB,
        return len(pays)           # far below --snapshot-every-mb 1)

    def archive(self, sku, timeout=15):
        """Archives a closed sale: 409 retained until retention reclaimed it."""
        deadline = time.time() + timeout
        while True:
            p = self.srv.admin("sale", "archive", sku)
            if p.returncode == 0:
                break
            self.assertIn("retained", p.stdout + p.stderr, (sku, p.stdout, p.stderr))
            self.assertLess(time.time(), deadline, "%s still retained after %d s" % (sku, timeout))
            time.sleep(0.2)
        self.assertEqual(self.srv.sku(sku).status, 404)

    def check_sales(self, paid):
        for w, n in paid.items():
            c = self.srv.counters("wk%d" % w)
            self.assertTrue(fc.conserved(c), c)
            self.assertEqual(c["sold"], n, (w, c))
            self.assertEqual(c["state"], "closed", (w, c))

    def kept(self, paid):
        """What a restart must keep of every sale (holds may expire meanwhile)."""
        out = {}
        for w in paid:
            c = self.srv.counters("wk%d" % w)
            out[w] = (c["state"], c["total"], c["sold"], c["available"] + c["reserved"])
        return out

    def check_disk(self, first_snap_bytes):
        d = self.srv.data_dir
        snaps = snapshots(d)
        self.assertTrue(1 <= len(snaps) <= 2, snaps)
        newest = snaps[-1]
        size = os.path.getsize(os.path.join(d, "snapshots", "%020d.snap" % newest))
        jdir = os.path.join(d, "journal")
        segs = sorted(os.listdir(jdir))
        tail = sum(sz for s in segs for seq, sz in batches(os.path.join(jdir, s)) if seq > newest)
        seg_bytes = sum(os.path.getsize(os.path.join(jdir, s)) for s in segs)
        self.assertLessEqual(tail, 2 * MIB)
        self.assertLessEqual(seg_bytes, 5 * MIB, segs)
        if first_snap_bytes:
            self.assertLessEqual(size, 4 * first_snap_bytes)
        return size, tail, seg_bytes

    def test_hundred_weekly_sales(self):
        srv = self.srv.start()
        secret = srv.secret()
        paid = {}
        archived = set()
        first_snap = 0
        t0 = time.time()
        for w in range(WEEKS):
            paid[w] = self.week(w, secret)
            if w == 0:   # an open sale is never archived
                srv.create_sale("probe", 1)
                p = srv.admin("sale", "archive", "probe")
                self.assertNotEqual(p.returncode, 0)
                self.assertIn("bad_state", p.stdout + p.stderr)
                srv.admin_ok("sale", "close", "probe")
                self.archive("probe")
            for old in [o for o in paid if o <= w - 4 and o not in archived]:
                self.archive("wk%d" % old)
                archived.add(old)
            used = table_used(srv)
            self.assertLessEqual(used.get("users", 0), 1000, used)
            self.assertLessEqual(used.get("skus", 0), 8, used)
            if w % 10 != 9:
                continue
            live = {o: n for o, n in paid.items() if o not in archived}
            before = self.kept(live)
            self.check_sales(live)
            if (w // 10) % 2 == 0:
                srv.kill9()
            else:
                srv.stop()
            size, tail, seg_bytes = self.check_disk(first_snap)
            srv.start()
            m = re.search(r"start-up: snapshot (\d+) loaded in ([\d.]+) ms; journal tail of (\d+) batches "
                          r"replayed in ([\d.]+) ms", srv.log())
            self.assertTrue(m, srv.log())
            self.assertGreater(int(m.group(1)), 0)
            print("test_weekly: week %d: %.0f s, users %d, snapshot %.0f KiB (loaded in %s ms), tail %.0f KiB "
                  "(%s batches, %s ms), journal %.1f MiB" % (w + 1, time.time() - t0, used.get("users", 0),
                                                             size / 1024, m.group(2), tail / 1024, m.group(3),
                                                             m.group(4), seg_bytes / MIB),
                  file=sys.stderr, flush=True)
            if w >= 10 and not first_snap:
                first_snap = size
            self.assertEqual(self.kept(live), before)
            for o in archived:   # archived stays archived across the restart
                self.assertEqual(srv.sku("wk%d" % o).status, 404)
        self.check_sales({o: n for o, n in paid.items() if o not in archived})
        self.assertGreaterEqual(len(archived), WEEKS - 4)


if __name__ == "__main__":
    unittest.main(verbosity=2)
