#!/usr/bin/env python3
"""test_payments.py - checkout through a real HTTP payment provider
(payprovider.py) with flashsaled --payment-provider: paid, declined,
invalid token, provider errors retried with the same key, a provider that
is down (402 provider_unavailable, then the breaker answers 503), and a
kill -9 while charges are in flight: after the restart every order ends
PAID or FAILED, the provider charged each order id at most once (attempts
repeat, charges never), and the units are conserved.

The build directory comes from FS_BUILD (default: build/ at the top of this checkout).
"""
import os
import shutil
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
import payprovider as pp  # noqa: E402

DEMO_PRICE_CENTS = 1999


def key():
    return uuid.uuid4().hex


def has_provider_flag():
    try:
        out = subprocess.run([fc.FLASHSALED, "--help"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--payment-provider" in out


class PaymentsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if not has_provider_flag():
            raise unittest.SkipTest("%s has no --payment-provider flag" % fc.FLASHSALED)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="fs-pay-")
        self.record = os.path.join(self.tmp, "charges.json")
        self.provider = pp.Provider(self.record).start()
        self.srv = fc.Server(workers=1, extra=["--payment-provider", self.provider.url])
        try:
            self.srv.start()
            self.secret = self.srv.secret()
        except Exception:
            self.srv.cleanup()
            self.provider.stop()
            raise

    def tearDown(self):
        try:
            self.srv.cleanup()
        finally:
            self.provider.stop()
            if not os.environ.get("FS_KEEP"):
                shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- helpers
    def user(self):
        name = "payer-" + uuid.uuid4().hex[:8]
        return name, fc.mint_token(self.secret, name)

    def reserve_demo(self, tok):
        r = self.srv.reserve(tok, "demo", key())
        self.assertEqual(r.status, 201, r)
        return r.json()["reservation_id"]

    def counters(self):
        c = self.srv.counters("demo")
        self.assertTrue(fc.conserved(c), "conservation broken: %r" % c)
        return c

    def assert_never_charged_twice(self):
        problems = pp.check_never_charged_twice(self.provider.keys())
        self.assertEqual(problems, [], problems)

    # ---- the contract, one answer at a time
    def test_charge_paid(self):
        name, tok = self.user()
        rid = self.reserve_demo(tok)
        k = key()
        r = self.srv.checkout(tok, rid, k, "tok_ok_e2e")
        self.assertEqual(r.status, 200, r)
        body = r.json()
        self.assertEqual(body["status"], "PAID")
        self.assertEqual(body["amount"], DEMO_PRICE_CENTS)
        oid = body["order_id"]
        rec = self.provider.keys()[oid]   # the idempotency key is the order id
        self.assertEqual(rec["order_id"], oid)
        self.assertEqual(rec["amount_cents"], DEMO_PRICE_CENTS)
        self.assertEqual(rec["currency"], "USD")
        self.assertEqual(rec["user"], name)
        self.assertEqual(rec["token"], "tok_ok_e2e")
        self.assertEqual(rec["content_type"], "application/json")
        self.assertEqual(rec["path"], "/charge")
        self.assertEqual((rec["attempts"], rec["charged"]), (1, 1))
        # the client's retry is answered from the order, not charged again
        r2 = self.srv.checkout(tok, rid, k, "tok_ok_e2e")
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.body, r.body)
        self.assertEqual(self.provider.attempts(oid), 1)
        self.assertEqual(self.srv.get_order(tok, oid).json()["status"], "PAID")
        c = self.counters()
        self.assertEqual((c["reserved"], c["sold"]), (0, 1))
        self.assertTrue(os.path.exists(self.record))
        self.assert_never_charged_twice()
        # the payment thread's counters are in /metrics (one charge, one attempt, paid)
        m = self.srv.admin("metrics")
        self.assertEqual(m.returncode, 0, m)
        samples = dict(ln.rsplit(" ", 1) for ln in m.stdout.splitlines() if ln and not ln.startswith("#"))
        self.assertEqual(samples.get("flashsale_payment_charges_total"), "1", m.stdout)
        self.assertEqual(samples.get("flashsale_payment_attempts_total"), "1", m.stdout)
        self.assertEqual(samples.get('flashsale_payment_outcomes_total{outcome="paid"}'), "1", m.stdout)
        self.assertEqual(samples.get("flashsale_payment_in_flight"), "0", m.stdout)

    def test_decline_returns_unit(self):
        _, tok = self.user()
        rid = self.reserve_demo(tok)
        self.assertEqual(self.counters()["reserved"], 1)
        r = self.srv.checkout(tok, rid, key(), "tok_decline_e2e")
        self.assertEqual(r.status, 402, r)
        self.assertEqual(r.json()["status"], "FAILED")
        self.assertEqual(r.json()["reason"], "card_declined")
        rec = self.provider.keys()[r.json()["order_id"]]
        self.assertEqual((rec["attempts"], rec["charged"]), (1, 0))
        c = self.counters()
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (c["total"], 0, 0))

    def test_invalid_token(self):
        _, tok = self.user()
        rid = self.reserve_demo(tok)
        r = self.srv.checkout(tok, rid, key(), "visa_4242")
        self.assertEqual(r.status, 402, r)
        self.assertEqual(r.json()["reason"], "invalid_token")
        c = self.counters()
        self.assertEqual((c["reserved"], c["sold"]), (0, 0))

    def test_flaky_provider_retried_with_same_key(self):
        _, tok = self.user()
        rid = self.reserve_demo(tok)
        r = self.srv.checkout(tok, rid, key(), "tok_flaky_2")   # 503, 503, then charged
        self.assertEqual(r.status, 200, r)
        rec = self.provider.keys()[r.json()["order_id"]]
        self.assertEqual(rec["answers"], [503, 503, 200])
        self.assertEqual(rec["charged"], 1)
        self.assert_never_charged_twice()

    def test_provider_errors_then_breaker(self):
        users = [self.user()[1] for _ in range(4)]
        rids = [self.reserve_demo(t) for t in users]
        self.provider.set_mode("fail")   # 500 to everything
        t_fail = None
        for i in range(3):   # three orders in a row fail as unavailable
            r = self.srv.checkout(users[i], rids[i], key(), "tok_ok")
            self.assertEqual(r.status, 402, r)
            self.assertEqual(r.json()["status"], "FAILED")
            self.assertEqual(r.json()["reason"], "provider_unavailable")
            t_fail = time.time()
            rec = self.provider.keys()[r.json()["order_id"]]
            self.assertEqual(rec["answers"], [500, 500, 500])   # 3 attempts, one key
            self.assertEqual(rec["charged"], 0)
        # ... and open the breaker for 1 s: checkouts are refused at once
        b = self.srv.checkout(users[3], rids[3], key(), "tok_ok")
        if time.time() - t_fail < 0.8:
            self.assertEqual(b.status, 503, b)
            self.assertEqual(b.json()["error"], "overloaded")
            self.assertEqual(self.srv.get_res(users[3], rids[3]).json()["status"], "RESERVED")
        c = self.counters()
        self.assertEqual(c["sold"], 0)
        self.provider.set_mode("normal")
        ok = fc.wait_for(lambda: self.srv.checkout(users[3], rids[3], key(), "tok_ok").status == 200, 10, 0.3)
        self.assertTrue(ok)
        c = self.counters()
        self.assertEqual((c["reserved"], c["sold"]), (0, 1))
        self.assert_never_charged_twice()

    def test_provider_down(self):
        users = [self.user()[1] for _ in range(4)]
        rids = [self.reserve_demo(t) for t in users]
        self.provider.stop()   # nothing listens: every attempt is refused
        t_fail = None
        for i in range(3):
            r = self.srv.checkout(users[i], rids[i], key(), "tok_ok")
            self.assertEqual(r.status, 402, r)
            self.assertEqual(r.json()["reason"], "provider_unavailable")
            t_fail = time.time()
        b = self.srv.checkout(users[3], rids[3], key(), "tok_ok")
        if time.time() - t_fail < 0.8:
            self.assertEqual(b.status, 503, b)
        c = self.counters()
        self.assertEqual(c["sold"], 0)
        self.assertEqual(c["reserved"], 1 if b.status == 503 else 0)

    # ---- the crash
    def test_kill9_with_charges_in_flight(self):
        """kill -9 while slow charges (1 s) are in flight; restart on the same
        data dir: every order ends PAID or FAILED, each order id is charged at
        most once, the units add up."""
        n = 16
        users = [self.user() for _ in range(n)]
        rids = [self.reserve_demo(tok) for _, tok in users]
        keys = [key() for _ in range(n)]
        socks = []

        def send_checkout(i):
            tok = users[i][1]
            req = fc.Conn.build("POST", "/v1/reservations/%s/checkout" % rids[i],
                                {"Authorization": "Bearer " + tok, "Idempotency-Key": keys[i]},
                                {"payment_token": "tok_slow_1000"})
            s = socket.create_connection(("127.0.0.1", self.srv.port), timeout=10)
            s.sendall(req)
            socks.append(s)   # the answer dies with the server

        threads = [threading.Thread(target=send_checkout, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        seen = fc.wait_for(lambda: self.provider.total_attempts() >= n // 2, 20, 0.01)
        self.assertTrue(seen, "the provider saw %d attempts" % self.provider.total_attempts())
        self.srv.kill9()
        before = self.provider.keys()
        for s in socks:
            s.close()
        self.srv.start()

        # clients retry with their keys: each gets its order's outcome
        answers = [None] * n

        def retry(i):
            tok = users[i][1]
            with self.srv.conn(timeout=20) as c:
                answers[i] = c.request("POST", "/v1/reservations/%s/checkout" % rids[i],
                                       {"Authorization": "Bearer " + tok, "Idempotency-Key": keys[i]},
                                       {"payment_token": "tok_slow_1000"})

        threads = [threading.Thread(target=retry, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        orders = {}
        for i, a in enumerate(answers):
            self.assertIsNotNone(a, "checkout %d got no answer" % i)
            self.assertIn(a.status, (200, 402), a)
            oid = a.json()["order_id"]
            g = self.srv.get_order(users[i][1], oid)
            self.assertEqual(g.status, 200, g)
            self.assertIn(g.json()["status"], ("PAID", "FAILED"), g)
            self.assertEqual(g.json()["status"], a.json()["status"])
            orders[oid] = g.json()["status"]
        self.assertEqual(len(orders), n)

        after = self.provider.keys()
        self.assert_never_charged_twice()
        self.assertTrue(set(after) <= set(orders), set(after) - set(orders))
        for oid, status in orders.items():
            charged = after.get(oid, {}).get("charged", 0)
            self.assertEqual(charged, 1 if status == "PAID" else 0, (oid, status, after.get(oid)))
        # the orders in flight at the crash were asked again with the same key
        # and answered 409 (already charged) instead of being charged twice
        reissued = [k for k, r in after.items() if k in before and r["attempts"] > before[k]["attempts"]]
        self.assertTrue(reissued, "no charge was re-issued after the restart: %r" % after)
        self.assertTrue(any(409 in after[k]["answers"] for k in reissued), after)
        self.assertGreaterEqual(self.provider.in_flight_max, 2)   # many charges at once

        paid = sum(1 for s in orders.values() if s == "PAID")
        c = self.counters()
        self.assertEqual(c["total"], 10000)
        self.assertEqual((c["reserved"], c["sold"]), (0, paid))
        self.assertEqual(c["available"], c["total"] - paid)


if __name__ == "__main__":
    unittest.main(verbosity=2)
