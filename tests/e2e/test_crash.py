#!/usr/bin/env python3
"""test_crash.py - kill -9 at random moments, restart on the same data dir:
nothing acknowledged is lost, nothing is oversold, every order settles once.

The seed is printed; rerun one with FS_SEED=<seed>. FS_CRASH_ROUNDS sets the
number of kill/restart rounds (default 8)."""
import os
import random
import sys
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
ROUNDS = int(os.environ.get("FS_CRASH_ROUNDS", "8"))
STOCK = 300
print("test_crash: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)


class Ledger:
    """What the clients were promised, and what they are unsure about."""

    def __init__(self):
        self.lock = threading.Lock()
        self.acked = {}            # rid -> (token, key, body)
        self.uncertain = []        # (token, key): sent, no answer
        self.cancel_acked = set()  # rids
        self.cancel_uncertain = set()
        self.refused = 0
        self.granted_this_round = 0


class CrashTest(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)
        self.srv = fc.Server(workers=2)

    def tearDown(self):
        self.srv.cleanup()

    def counters(self, sku):
        c = self.srv.counters(sku)
        self.assertTrue(fc.conserved(c), c)
        return c

    # ------------------------------------------------------------ reservations
    def client(self, port, sku, ledger, stop, tid, rnd, seed):
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
                    live = [r for r in ledger.acked if r not in ledger.cancel_acked
                            and r not in ledger.cancel_uncertain]
                if live and rng.random() < 0.15:
                    rid = rng.choice(live)
                    tok = ledger.acked[rid][0]
                    try:
                        r = conn.request("DELETE", "/v1/reservations/" + rid, fc.auth(tok))
                    except (OSError, fc.ConnectionClosed, ValueError):
                        with ledger.lock:
                            ledger.cancel_uncertain.add(rid)
                        return
                    with ledger.lock:
                        if r.status == 200:
                            ledger.cancel_acked.add(rid)
                        else:
                            ledger.cancel_uncertain.add(rid)   # checked after restart
                            print("unexpected cancel answer %r" % r, file=sys.stderr)
                    continue
                user = "c%d-%d-%d-%s" % (rnd, tid, n, uuid.uuid4().hex[:4])
                tok = fc.mint_token(self.secret, user)
                k = uuid.uuid4().hex
                try:
                    r = conn.request("POST", "/v1/skus/%s/reservations" % sku,
                                     {"Authorization": "Bearer " + tok, "Idempotency-Key": k}, {"quantity": 1})
                except (OSError, fc.ConnectionClosed, ValueError):
                    with ledger.lock:
                        ledger.uncertain.append((tok, k))
                    return
                with ledger.lock:
                    if r.status in (200, 201):
                        b = r.json()
                        ledger.acked[b["reservation_id"]] = (tok, k, b)
                        ledger.granted_this_round += 1
                    elif r.status == 409:
                        ledger.refused += 1
                    else:
                        ledger.uncertain.append((tok, k))
                        print("unexpected reserve answer %r" % r, file=sys.stderr)
        finally:
            conn.close()

    def verify(self, sku, ledger, when):
        # 1. requests that got no answer: a repeat with the same key settles them
        with ledger.lock:
            pending, ledger.uncertain = ledger.uncertain, []
        for tok, k in pending:
            r = self.srv.reserve(tok, sku, k, 1)
            self.assertIn(r.status, (200, 201, 409), "%s: repeat of an unanswered request: %r" % (when, r))
            if r.status in (200, 201):
                b = r.json()
                ledger.acked[b["reservation_id"]] = (tok, k, b)
        # 2. every acknowledged reservation is there, with the right status
        live = 0
        for rid, (tok, k, b) in sorted(ledger.acked.items()):
            r = self.srv.get_res(tok, rid)
            self.assertEqual(r.status, 200, "%s: acknowledged reservation %s lost: %r" % (when, rid, r))
            st = r.json()["status"]
            if rid in ledger.cancel_acked:
                self.assertEqual(st, "CANCELLED", "%s: acknowledged cancel of %s lost" % (when, rid))
            elif rid in ledger.cancel_uncertain:
                self.assertIn(st, ("RESERVED", "CANCELLED"), when)
                if st == "CANCELLED":
                    ledger.cancel_acked.add(rid)
                ledger.cancel_uncertain.discard(rid)
            else:
                self.assertEqual(st, "RESERVED", "%s: %s" % (when, rid))
            if st == "RESERVED":
                live += 1
            # 3. and an idempotent repeat gives the original answer
            if self.rng.random() < 0.1:
                r = self.srv.reserve(tok, sku, k, 1)
                self.assertEqual(r.status, 200, "%s: %r" % (when, r))
                self.assertEqual(r.json(), b, when)
        c = self.counters(sku)
        self.assertEqual(c["total"], STOCK, when)
        self.assertEqual(c["sold"], 0, when)
        self.assertEqual(c["reserved"], live, "%s: counters %r, live acknowledged reservations %d"
                         % (when, c, live))
        self.assertLessEqual(live, STOCK)

    def test_kill9_during_reservations(self):
        sku = "crash"
        self.srv.start()
        self.secret = self.srv.secret()
        self.srv.create_sale(sku, STOCK, per_user=1, hold="600s")
        ledger = Ledger()
        for rnd in range(ROUNDS):
            stop = threading.Event()
            ledger.granted_this_round = 0
            threads = [threading.Thread(target=self.client,
                                        args=(self.srv.port, sku, ledger, stop, t, rnd, self.rng.random()))
                       for t in range(3)]
            for t in threads:
                t.start()
            delay = self.rng.uniform(0.05, 0.6)
            time.sleep(delay)
            self.srv.kill9()
            stop.set()
            for t in threads:
                t.join(30)
                self.assertFalse(t.is_alive(), "client thread hung")
            print("round %d: killed after %.3f s, %d granted this round, %d acked, %d cancels acked, "
                  "%d refused, %d unanswered" % (rnd, delay, ledger.granted_this_round, len(ledger.acked),
                                                 len(ledger.cancel_acked), ledger.refused, len(ledger.uncertain)),
                  file=sys.stderr, flush=True)
            if self.rng.random() < 0.3:
                # kill it again while it recovers
                self.srv.start(wait=False)
                time.sleep(self.rng.uniform(0.0, 0.15))
                self.srv.kill9()
            self.srv.start()
            self.verify(sku, ledger, "round %d (seed %d)" % (rnd, SEED))
        self.assertGreater(len(ledger.acked), 0)
        rc = self.srv.stop()
        self.assertEqual(rc, 0)
        self.srv.start()
        self.verify(sku, ledger, "after a clean restart (seed %d)" % SEED)
        if fc.Server.port_busy_retries:
            print("NOTE: %d restarts found the port still held by the killed instance "
                  "(see test_restart_right_after_exit_binds)" % fc.Server.port_busy_retries, file=sys.stderr)

    def test_restart_right_after_exit_binds(self):
        """A supervisor restarts flashsaled at once after it died (kill -9, here
        while reservations are being journaled) or stopped (SIGTERM): the new
        instance must get its port, not exit with 'Address already in use'."""
        failures = []
        self.srv.start()
        self.secret = self.srv.secret()
        self.srv.create_sale("busy", 1000000, per_user=1, hold="600s")

        def load(port, stop):
            try:
                with fc.Conn(port, timeout=5) as c:
                    while not stop.is_set():
                        c.request("POST", "/v1/skus/busy/reservations",
                                  fc.auth(fc.mint_token(self.secret, uuid.uuid4().hex)) |
                                  {"Idempotency-Key": uuid.uuid4().hex}, {"quantity": 1})
            except (OSError, fc.ConnectionClosed, ValueError):
                pass

        n = 12
        for i in range(n):
            stop = threading.Event()
            threads = [threading.Thread(target=load, args=(self.srv.port, stop)) for _ in range(2)]
            for t in threads:
                t.start()
            time.sleep(0.15)
            if i % 4 == 3:
                self.assertEqual(self.srv.stop(), 0)
            else:
                self.srv.kill9()
            try:
                self.srv.start(retry_busy=False)
            except RuntimeError as e:
                failures.append("%s: %s" % ("SIGTERM" if i % 4 == 3 else "kill -9", str(e).splitlines()[-1]))
                self.srv.start()
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(failures, [], "restart on the same port failed %d/%d times" % (len(failures), n))

    # ------------------------------------------------------------ payments
    def test_kill9_during_checkouts(self):
        sku = "crashpay"
        self.srv.start()
        self.secret = self.srv.secret()
        n = 12
        self.srv.create_sale(sku, 20, per_user=1, hold="600s")
        users = []
        for i in range(n):
            tok = fc.mint_token(self.secret, "payer-%d" % i)
            r = self.srv.reserve(tok, sku, uuid.uuid4().hex, 1)
            self.assertEqual(r.status, 201, r)
            users.append((tok, r.json()["reservation_id"], uuid.uuid4().hex))
        answers = {}
        lock = threading.Lock()

        def pay(i):
            tok, rid, k = users[i]
            ptok = "tok_slow_500" if i % 4 else "tok_decline"
            try:
                with fc.Conn(self.srv.port, timeout=10) as c:
                    r = c.request("POST", "/v1/reservations/%s/checkout" % rid,
                                  {"Authorization": "Bearer " + tok, "Idempotency-Key": k},
                                  {"payment_token": ptok})
            except (OSError, fc.ConnectionClosed, ValueError) as e:
                r = e
            with lock:
                answers[i] = r

        threads = [threading.Thread(target=pay, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        delay = self.rng.uniform(0.15, 0.75)
        time.sleep(delay)
        self.srv.kill9()
        for t in threads:
            t.join(30)
        print("checkouts: killed after %.3f s; answers before the kill: %s" % (
            delay, {i: getattr(a, "status", "none") for i, a in sorted(answers.items())}), file=sys.stderr)
        self.srv.start()

        def settled(i):
            tok, rid, k = users[i]
            j = self.srv.get_res(tok, rid).json()
            oid = j.get("order_id")
            if oid is None:
                return j["status"] == "RESERVED" and (j, None)
            o = self.srv.get_order(tok, oid)
            self.assertEqual(o.status, 200, o)
            return o.json()["status"] in ("PAID", "FAILED") and (j, o.json())

        final = {}
        for i in range(n):
            v = fc.wait_for(lambda: settled(i), timeout=15, interval=0.1)
            tok, rid, k = users[i]
            self.assertTrue(v, "seed %d: reservation %s / its order never settled: %r %r" % (
                SEED, rid, self.srv.get_res(tok, rid),
                self.srv.get_order(tok, self.srv.get_res(tok, rid).json().get("order_id", "x"))))
            final[i] = v
        print("checkouts settled after restart: %s" % {
            i: (res["status"], order and order["status"]) for i, (res, order) in sorted(final.items())},
            file=sys.stderr)
        paid = 0
        for i, (res, order) in final.items():
            a = answers.get(i)
            ans = a if isinstance(a, fc.Response) else None
            if ans is not None and ans.status == 200:
                self.assertIsNotNone(order, "a PAID answer but no order after restart")
                self.assertEqual(order["status"], "PAID", "seed %d: acknowledged PAID order lost" % SEED)
                self.assertEqual(order["order_id"], ans.json()["order_id"])
            if ans is not None and ans.status == 402:
                self.assertEqual(order["status"], "FAILED")
            if order is not None:
                # a repeat with the same key answers the final outcome, same order
                tok, rid, k = users[i]
                r = self.srv.checkout(tok, rid, k, "tok_slow_500" if i % 4 else "tok_decline")
                self.assertIn(r.status, (200, 402), r)
                self.assertEqual(r.json()["order_id"], order["order_id"])
                self.assertEqual(r.status == 200, order["status"] == "PAID", (r, order))
                self.assertEqual(res["status"], "CONFIRMED" if order["status"] == "PAID" else res["status"])
                if order["status"] == "PAID":
                    paid += 1
        c = self.counters(sku)
        live = sum(1 for res, order in final.values() if order is None)
        self.assertEqual(c["sold"], paid, (c, paid))
        self.assertEqual(c["reserved"], live, (c, live))
        self.assertEqual(c["available"], 20 - paid - live)
        # and the outcome is stable: nothing charged twice or flipped later
        time.sleep(1.0)
        self.srv.restart(kill=True)
        c2 = self.counters(sku)
        self.assertEqual((c2["sold"], c2["reserved"], c2["available"]), (c["sold"], c["reserved"], c["available"]))
        for i, (res, order) in final.items():
            if order is not None:
                tok = users[i][0]
                o = self.srv.get_order(tok, order["order_id"]).json()
                self.assertEqual(o["status"], order["status"])


if __name__ == "__main__":
    unittest.main(verbosity=2)
