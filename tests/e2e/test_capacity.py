#!/usr/bin/env python3
"""test_capacity.py - one data dir, ten times its reservation capacity.

Small tables (--reservations-max 2000 --idempotency-keys-max 4000
--users-max 1000 --retention 2s): ten cycles of 2000 reservations, each
cycle ending them by cancel, checkout (paid) and hold expiry, with kill -9
restarts and a snapshot between cycles. Checked: no 503 overloaded once the
retention has passed, counters conserved (sold = paid orders), every
acknowledged decision readable until its retention ends, and after it a
reclaimed reservation or order answers 404 with the documented detail.
FS_CAPACITY_CYCLES sets the number of cycles (default 10)."""
import os
import random
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
CYCLES = int(os.environ.get("FS_CAPACITY_CYCLES", "10"))
PER_CYCLE = 2000
HOLD_S = 4            # long enough to cancel and pay a third each on a loaded box
USERS = 500
print("test_capacity: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)
DETAIL = "expired from the appliance; see the system of record"


def pipelined(srv, reqs, conns=16):
    """Answers to reqs (method, path, headers, body), in order: one request
    at a time per keep-alive connection, `conns` connections in parallel
    (so the writer groups them into batches). Not HTTP pipelining: several
    POSTs pipelined on one connection got answers that did not match their
    requests, on main too (reported, left to the dataplane's owners)."""
    out = [None] * len(reqs)

    def worker(k):
        with srv.conn(timeout=60) as c:
            for i in range(k, len(reqs), conns):
                out[i] = c.request(*reqs[i])
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert all(r is not None for r in out)
    return out


def req(method, path, tok, key=None, body=b""):
    h = {"Authorization": "Bearer " + tok}
    if key is not None:
        h["Idempotency-Key"] = key
    return (method, path, h, body)


def table_used(srv, table):
    for line in srv.admin_ok("metrics").splitlines():
        if line.startswith('flashsale_table_used{table="%s"}' % table):
            return int(line.split()[1])
    raise AssertionError("no table_used for " + table)


class Capacity(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)
        self.srv = fc.Server(demo=False, extra=[
            "--reservations-max", "2000", "--idempotency-keys-max", "4000", "--users-max", "1000",
            "--retention", "2s", "--snapshot-every-mb", "0"])

    def tearDown(self):
        self.srv.cleanup()

    def test_ten_times_capacity(self):
        srv = self.srv.start()
        srv.create_sale("cap", 10 ** 6, per_user=0, hold="%ds" % HOLD_S)
        secret = srv.secret()
        toks = [fc.mint_token(secret, "cu%d" % u, tier=0) for u in range(USERS)]
        paid_total = 0
        old = []            # (tok, rid, oid) of earlier cycles: reclaimed by now
        for cycle in range(CYCLES):
            # ---- reserve 2000: the whole table, none refused
            who = [toks[(cycle * 7 + i) % USERS] for i in range(PER_CYCLE)]
            t_reserve = time.time()
            rs = pipelined(srv, [req("POST", "/v1/skus/cap/reservations", who[i], "c%d-%d" % (cycle, i))
                                 for i in range(PER_CYCLE)])
            statuses = [r.status for r in rs]
            self.assertEqual(statuses.count(201), PER_CYCLE,
                             "cycle %d: %s" % (cycle, {s: statuses.count(s) for s in set(statuses)}))
            rids = [r.json()["reservation_id"] for r in rs]
            # ---- end them: a third cancelled, a third paid, a third expire
            fate = [self.rng.randrange(3) for _ in range(PER_CYCLE)]
            cancels = [i for i in range(PER_CYCLE) if fate[i] == 0]
            pays = [i for i in range(PER_CYCLE) if fate[i] == 1]
            t_cancel = time.time()
            rc = pipelined(srv, [req("DELETE", "/v1/reservations/" + rids[i], who[i]) for i in cancels])
            self.assertTrue(all(r.status == 200 for r in rc), [(r.status, r.body[:80]) for r in rc if r.status != 200][:3])
            t_pay = time.time()
            rp = pipelined(srv, [req("POST", "/v1/reservations/%s/checkout" % rids[i], who[i],
                                     "co%d-%d" % (cycle, i), {"payment_token": "tok_ok"}) for i in pays])
            self.assertTrue(all(r.status == 200 for r in rp), [r for r in rp if r.status != 200][:3])
            oids = {i: r.json()["order_id"] for i, r in zip(pays, rp)}
            paid_total += len(pays)
            time.sleep(max(0.0, t_reserve + HOLD_S + 0.3 - time.time()))   # the rest's holds pass
            # ---- every acknowledged decision reads back until its retention
            # ends: a 404 is allowed only once 2 s have passed since the
            # earliest moment it could have ended (client clock, lower bound)
            want = {0: "CANCELLED", 1: "CONFIRMED", 2: "EXPIRED"}
            ended_after = {0: t_cancel, 1: t_pay, 2: t_reserve + HOLD_S}
            sample = self.rng.sample(range(PER_CYCLE), 300)
            rg = pipelined(srv, [req("GET", "/v1/reservations/" + rids[i], who[i]) for i in sample])
            t_read = time.time()
            readable = 0
            for i, r in zip(sample, rg):
                if r.status == 404 and r.json().get("detail") == DETAIL:
                    self.assertGreaterEqual(t_read, ended_after[fate[i]] + 2.0, (cycle, i, "reclaimed early"))
                    continue
                self.assertEqual(r.status, 200, (cycle, i, r))
                if fate[i] == 2 and r.json()["status"] == "RESERVED":
                    continue   # its expiry may still be on its way
                self.assertEqual(r.json()["status"], want[fate[i]], (cycle, i))
                readable += 1
            self.assertGreater(readable, 0)
            c = srv.counters("cap")
            self.assertTrue(fc.conserved(c), c)
            self.assertEqual(c["sold"], paid_total)
            # ---- earlier cycles: reclaimed, and say so
            for tok, rid, oid in self.rng.sample(old, min(20, len(old))):
                r = srv.get_res(tok, rid)
                self.assertEqual(r.status, 404, r)
                self.assertEqual(r.json(), {"error": "not_found", "detail": DETAIL})
                if oid:
                    r = srv.get_order(tok, oid)
                    self.assertEqual(r.status, 404, r)
                    self.assertEqual(r.json()["detail"], DETAIL)
            old += [(who[i], rids[i], oids.get(i)) for i in self.rng.sample(range(PER_CYCLE), 50)]
            # ---- restarts (kill -9) and a snapshot now and then
            if cycle % 3 == 1:
                srv.admin_ok("snapshot")
            if cycle % 3 == 2:
                srv.kill9()
                srv.start()
                self.assertEqual(srv.counters("cap")["sold"], paid_total)
            # ---- the retention passes: the table empties by itself (after a
            # restart the gauge holds the replayed fill at once, so this waits)
            self.assertTrue(fc.wait_for(lambda: table_used(srv, "reservations") == 0, timeout=15),
                            "cycle %d: %d reservations still live" % (cycle, table_used(srv, "reservations")))
            self.assertEqual(table_used(srv, "orders"), 0)
            self.assertEqual(table_used(srv, "idempotency_keys"), 0)
        c = srv.counters("cap")
        self.assertEqual((c["sold"], c["reserved"]), (paid_total, 0))
        srv.kill9()
        srv.start()
        self.assertEqual(srv.counters("cap"), c)


if __name__ == "__main__":
    unittest.main(verbosity=2)
