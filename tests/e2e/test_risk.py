#!/usr/bin/env python3
"""test_risk.py - the operator's IP lists and tier table, and risk scoring.

- `flashctl ip deny CIDR` answers 403 at the edge; `allow` beats deny; both
  are journaled (they survive a restart).
- `flashctl tier set USER T` applies to tokens without a tier claim.
- Many users from one untrusted IP (seen through a trusted proxy's
  X-Forwarded-For) drop to tier 1; a client with zero think time (regular
  gaps) drops to tier 1; each decision is journaled (risk_flag records) and
  counted in /metrics."""
import os
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient  # noqa: E402


class Risk(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.s = fsclient.Server(workers=1, demo=False, extra=["--risk-ip-users", "5"])
        cls.s.start()
        cls.s.create_sale("r", 100000, per_user=0)

    @classmethod
    def tearDownClass(cls):
        cls.s.stop()
        cls.s.cleanup()

    def reserve(self, user, key, xff=None, tier=None):
        h = {"X-Forwarded-For": xff} if xff else None
        tok = self.s.py_token(user, tier=tier) if tier is not None else self.s.py_token(user)
        return self.s.call("POST", "/v1/skus/r/reservations", token=tok, key=key, headers=h, body=b"{}")

    def test_deny_and_allow_lists(self):
        self.s.admin_ok("ip", "deny", "203.0.113.0/24")
        r = self.reserve("d1", "k1", xff="203.0.113.9")
        self.assertEqual(r.status, 403, r)
        self.assertEqual(r.json()["error"], "forbidden")
        self.assertEqual(self.reserve("d2", "k1", xff="198.51.100.1").status, 201)
        self.s.admin_ok("ip", "allow", "203.0.113.9/32")
        self.assertEqual(self.reserve("d3", "k1", xff="203.0.113.9").status, 201)
        self.assertIn("203.0.113.0/24", self.s.admin_ok("ip", "list"))
        bad = self.s.admin("ip", "deny", "300.1.1.1/8")
        self.assertEqual(bad.returncode, 1)
        self.s.admin_ok("ip", "remove", "203.0.113.9/32")
        self.assertEqual(self.reserve("d4", "k1", xff="203.0.113.9").status, 403)
        self.s.admin_ok("ip", "remove", "203.0.113.0/24")
        self.assertEqual(self.reserve("d5", "k1", xff="203.0.113.9").status, 201)

    def test_tier_table(self):
        self.s.admin_ok("tier", "set", "slow-user", "1")
        codes = [self.reserve("slow-user", "t%d" % i).status for i in range(3)]
        self.assertEqual(codes, [201, 429, 429])
        self.s.admin_ok("tier", "clear", "slow-user")

    def test_many_users_from_one_ip_drop_to_tier1(self):
        codes = []
        for u in range(10):
            user = "nat-%d" % u
            codes.append([self.reserve(user, "n%d" % i, xff="192.0.2.77").status for i in range(3)])
        # the first 5 users are fine (tier 4); later ones are flagged: 1 attempt, then 429
        self.assertEqual(codes[0], [201, 201, 201])
        self.assertEqual(codes[9], [201, 429, 429])
        m = self.s.admin_ok("metrics")
        flags = [l for l in m.splitlines() if l.startswith("flashsale_risk_flags_total")]
        self.assertTrue(flags and int(flags[0].split()[1]) >= 1, flags)

    def test_per_device_purchase_limit(self):
        """A device may hold as many units of a sale as one user."""
        self.s.create_sale("one-each", 100, per_user=1)
        def r(user, dev):
            return self.s.call("POST", "/v1/skus/one-each/reservations", token=self.s.py_token(user),
                               key="k", headers={"X-Device-Id": dev}, body=b"{}").status
        self.assertEqual(r("dev-a", "phone-1"), 201)
        self.assertEqual(r("dev-b", "phone-1"), 409)    # limit_reached: the device has its unit
        self.assertEqual(r("dev-c", "phone-2"), 201)

    def test_zero_think_time_is_flagged_and_journaled(self):
        statuses = []
        with self.s.conn() as c:
            tok = self.s.py_token("metronome")
            t0 = time.monotonic()
            for i in range(40):
                # a metronome: attempts on an absolute 50 ms grid, so the gaps
                # stay equal (sleep jitter does not accumulate)
                time.sleep(max(0.0, t0 + 0.05 * i - time.monotonic()))
                r = c.request("POST", "/v1/skus/r/reservations",
                              {"Authorization": "Bearer " + tok, "Idempotency-Key": "m%d" % i}, b"{}")
                statuses.append(r.status)
        self.assertIn(429, statuses, statuses)
        self.assertLess(statuses.count(201), 40)
        tool = os.path.join(fsclient.BUILD, "tools", "flashsale-journal")
        out = subprocess.run([tool, "dump", self.s.data_dir], capture_output=True, text=True, timeout=60).stdout
        flagged = [l for l in out.splitlines() if "risk_flag" in l and "user=metronome" in l]
        self.assertEqual(len(flagged), 1, flagged)
        self.assertIn("regular_timing", flagged[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
