#!/usr/bin/env python3
"""test_waitroom.py - the waiting room at sale start.

1,000 users arrive in the pre-queue window (over a few seconds, many
connections), each gets 202 QUEUED; at the opening the queue is drawn with
the seed committed at creation (its SHA-256 shown by `sale status` before
the opening), admitted at the outflow rate in the drawn order, and the draw
is re-derived from the journal alone by `flashsale-journal draw`. Arriving
early or sending many requests gives no advantage: one entry per user."""
import datetime
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient  # noqa: E402

USERS = 1000
STOCK = 100
OUTFLOW = 400


class WaitingRoom(unittest.TestCase):
    def test_draw_is_committed_followed_and_verifiable(self):
        s = fsclient.Server(workers=2, demo=False)
        s.start()
        try:
            self.run_sale(s)
        finally:
            s.stop()
            s.cleanup()

    def run_sale(self, s):
        opens = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=8)
        s.admin_ok("sale", "create", "drop", "--stock", STOCK, "--per-user", 1, "--hold", "120s",
                   "--prequeue-window", "10m", "--outflow", OUTFLOW,
                   "--opens-at", opens.strftime("%Y-%m-%dT%H:%M:%SZ"))
        status = json.loads(s.admin_ok("sale", "status", "drop"))
        commit = status["waiting_room"]["draw_commit_sha256"]
        self.assertEqual(len(commit), 64)
        self.assertFalse(status["waiting_room"]["drawn"])
        secret = s.secret()
        tokens = [fsclient.mint_token(secret, "u%04d" % i, tier=4) for i in range(USERS)]
        res_ids = [None] * USERS
        errors = []

        def arrive(lo, hi):
            try:
                with s.conn() as c:
                    for i in range(lo, hi):
                        # a bot-like user: 5 attempts with 5 keys -> still one entry
                        n = 5 if i % 50 == 0 else 1
                        for k in range(n):
                            r = c.request("POST", "/v1/skus/drop/reservations",
                                          {"Authorization": "Bearer " + tokens[i],
                                           "Idempotency-Key": "k%d" % k}, b'{"quantity":1}')
                            if k == 0:
                                if r.status != 202 or r.json()["status"] != "QUEUED":
                                    errors.append((i, r.status, r.body))
                                res_ids[i] = r.json().get("reservation_id")
                            elif r.status != 409:   # limit_reached: one place per user
                                errors.append((i, "repeat", r.status, r.body))
            except Exception as e:  # noqa: BLE001
                errors.append((lo, repr(e)))

        threads = [threading.Thread(target=arrive, args=(lo, lo + USERS // 20))
                   for lo in range(0, USERS, USERS // 20)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertEqual(errors, [])
        status = json.loads(s.admin_ok("sale", "status", "drop"))
        self.assertEqual(status["waiting_room"]["queued"], USERS)
        self.assertEqual(status["state"], "scheduled")
        # wait for the opening and the admissions (at OUTFLOW/s)
        deadline = time.time() + 40
        while time.time() < deadline:
            st = json.loads(s.admin_ok("sale", "status", "drop"))
            if st["waiting_room"]["drawn"] and st["waiting_room"]["queued"] == 0:
                break
            time.sleep(0.3)
        st = json.loads(s.admin_ok("sale", "status", "drop"))
        self.assertTrue(st["waiting_room"]["drawn"], st)
        self.assertEqual(st["waiting_room"]["queued"], 0, st)
        self.assertEqual(st["reserved"], STOCK)
        self.assertEqual(st["available"] + st["reserved"] + st["sold"], st["total"])
        # every user's entry ended RESERVED or REJECTED; exactly STOCK won
        outcomes = {}
        for i in (0, 1, 2, 500, 999):
            r = s.call("GET", "/v1/reservations/" + res_ids[i], token=tokens[i])
            self.assertEqual(r.status, 200, r)
            outcomes[i] = r.json()["status"]
            self.assertIn(outcomes[i], ("RESERVED", "REJECTED"))
        # the journal alone re-derives the draw; the revealed seed matches the commitment
        tool = os.path.join(fsclient.BUILD, "tools", "flashsale-journal")
        p = subprocess.run([tool, "draw", s.data_dir, "drop"], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertIn("ok: the admission order follows the committed draw", p.stdout)
        self.assertIn(commit, p.stdout)
        seed_hex = [l.split()[2] for l in p.stdout.splitlines() if l.startswith("revealed seed")][0]
        self.assertEqual(hashlib.sha256(bytes.fromhex(seed_hex)).hexdigest(), commit)
        self.assertIn("drawn entries %d, admitted %d" % (USERS, USERS), p.stdout)
        p = subprocess.run([tool, "verify", s.data_dir], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        # the draw is not the arrival order
        first = [l for l in subprocess.run([tool, "dump", s.data_dir], capture_output=True, text=True,
                                           timeout=60).stdout.splitlines() if " admit " in l][:20]
        refs = [int(l.split("ref=")[1].split()[0]) for l in first]
        self.assertNotEqual(refs, sorted(refs), "admissions came out in arrival order")


if __name__ == "__main__":
    unittest.main(verbosity=2)
