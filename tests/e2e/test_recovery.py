#!/usr/bin/env python3
"""test_recovery.py - the listeners answer while flashsaled replays its
journal (issue 16): /readyz 503 {"reason":"recovering"}, /healthz 200 (the
writer owes no batch: it is not stalled), every other route 503
{"error":"recovering"}; then /readyz 200 and the replayed state is the one
before the restart.

The journal is made long (one batch per reservation, ~800 batches) and the
replay is slowed down by the test-only FS_TEST_REPLAY_PACE_US (each
replayed batch sleeps that long, here 2.5 ms: ~2 s of replay), so the
recovering window is wide enough to watch on any machine. The test polls
over fresh connections and asserts the sequence it saw, never a duration."""
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

BATCHES = 800
PACE_US = 2500


def probe(srv, path, token=None):
    """(status, json body or None) over a fresh connection; None when refused."""
    try:
        with fc.Conn(srv.port, host=srv.host, timeout=5) as c:
            r = c.request("GET", path, headers=fc.auth(token) if token else None)
            try:
                return r.status, r.json()
            except ValueError:
                return r.status, None
    except (OSError, fc.ConnectionClosed):
        return None, None


class RecoveryTest(unittest.TestCase):
    def test_listeners_answer_during_replay(self):
        with fc.Server() as srv:
            srv.create_sale("rec", BATCHES + 100, per_user=0)
            tok = srv.py_token("loader", tier=0)       # tier 0: exempt from the rate limits
            with srv.conn() as c:
                for i in range(BATCHES):                # one request at a time: one batch each
                    r = c.request("POST", "/v1/skus/rec/reservations",
                                  headers=dict(fc.auth(tok), **{"Idempotency-Key": "k%d" % i}),
                                  body=b'{"quantity":1}')
                    self.assertEqual(r.status, 201, r)
            before = srv.counters("rec")
            self.assertEqual(before["reserved"], BATCHES)
            srv.stop()
            os.environ["FS_TEST_REPLAY_PACE_US"] = str(PACE_US)
            try:
                srv.start(wait=False)
                seen = []
                deadline = time.time() + 60
                while time.time() < deadline:
                    ready = probe(srv, "/readyz")
                    health = probe(srv, "/healthz")
                    sku = probe(srv, "/v1/skus/rec")
                    seen.append((ready, health, sku))
                    if ready[0] == 200:
                        break
                    self.assertTrue(srv.alive(), srv.log())
                    time.sleep(0.02)
            finally:
                del os.environ["FS_TEST_REPLAY_PACE_US"]
            recovering = [s for s in seen if s[0][0] == 503]
            fc.log("test_recovery: %d probes, %d while recovering; first %r, last %r" %
                   (len(seen), len(recovering), seen[0], seen[-1]))
            self.assertEqual(seen[-1][0][0], 200, seen[-5:])
            self.assertGreater(len(recovering), 0, "no answer was seen while the journal replayed: %r" % seen[:5])
            for ready, health, sku in recovering:
                self.assertEqual(ready[1], {"ok": False, "reason": "recovering"}, ready)
                if health[0] is not None:
                    self.assertEqual(health[0], 200, health)
                if sku[0] is not None and sku[0] != 200:   # the replay may end between two probes
                    self.assertEqual(sku, (503, sku[1]), sku)
                    self.assertEqual(sku[1]["error"], "recovering", sku)
            self.assertTrue(any(h[0] == 200 for _, h, _ in recovering), recovering[:3])
            self.assertTrue(any(s[0] == 503 for _, _, s in recovering), recovering[:3])
            self.assertIn("replayed", srv.log())
            self.assertEqual(srv.counters("rec"), before)


if __name__ == "__main__":
    unittest.main(verbosity=2)
