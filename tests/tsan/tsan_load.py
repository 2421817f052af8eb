#!/usr/bin/env python3
"""tsan_load.py - flashsaled built with ThreadSanitizer under a short load.

Two dataplane workers, the writer, the payment thread (built-in provider,
slow and failing tokens too), the admin thread and the rings between them
all run at once: CLIENTS client threads reserve, read, cancel and check out
on keep-alive connections for SECONDS seconds while the admin socket reads
metrics and pauses/resumes the sale; then SIGTERM. ThreadSanitizer reports
go to the server's log; the test fails on any report ("WARNING:
ThreadSanitizer") or a non-zero exit. Run from the build-tsan directory
(./setup.sh test builds it); elsewhere (no TSan build) it skips.
FS_SEED=N replays the clients' choices."""
import os
import random
import sys
import threading
import time
import unittest
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
import fsclient as fc  # noqa: E402

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
print("tsan_load: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)
CLIENTS = 8
SECONDS = float(os.environ.get("FS_TSAN_SECONDS", "20"))
TOKENS = ["tok_ok", "tok_ok", "tok_slow_50", "tok_decline", "tok_down", "junk"]


def client(srv, n, stop, counts, lock):
    rnd = random.Random(SEED * 100 + n)
    tok = srv.py_token("tsan%d" % n, tier=0)
    held = []
    with srv.conn(timeout=60) as c:
        auth = {"Authorization": "Bearer " + tok}
        while not stop.is_set():
            p = rnd.random()
            if p < 0.5 or not held:
                r = c.request("POST", "/v1/skus/tsan/reservations",
                              dict(auth, **{"Idempotency-Key": uuid.uuid4().hex}), {"quantity": 1})
                if r.status == 201:
                    held.append(r.json()["reservation_id"])
            elif p < 0.7:
                rid = held.pop(rnd.randrange(len(held)))
                r = c.request("POST", "/v1/reservations/%s/checkout" % rid,
                              dict(auth, **{"Idempotency-Key": uuid.uuid4().hex}),
                              {"payment_token": rnd.choice(TOKENS)})
            elif p < 0.85:
                rid = held.pop(rnd.randrange(len(held)))
                r = c.request("DELETE", "/v1/reservations/" + rid, auth)
            else:
                r = c.request("GET", "/v1/skus/tsan")
            with lock:
                counts[r.status] = counts.get(r.status, 0) + 1


class TsanLoad(unittest.TestCase):
    def test_threads_under_load(self):
        if "tsan" not in os.path.basename(os.path.normpath(fc.BUILD)):
            raise unittest.SkipTest("not the ThreadSanitizer build (FS_BUILD=%s)" % fc.BUILD)
        with open(fc.FLASHSALED, "rb") as f:   # the server really is instrumented: gcc links
            instrumented = b"__tsan_init" in f.read()   # libtsan.so, the binary calls __tsan_init
        self.assertTrue(instrumented, "%s is not built with -fsanitize=thread" % fc.FLASHSALED)
        srv = fc.Server(workers=2)
        srv.start(timeout=120)
        counts, lock, stop = {}, threading.Lock(), threading.Event()
        try:
            srv.create_sale("tsan", 100000, per_user=100000)
            threads = [threading.Thread(target=client, args=(srv, i, stop, counts, lock)) for i in range(CLIENTS)]
            for t in threads:
                t.start()
            deadline = time.time() + SECONDS
            while time.time() < deadline:
                srv.admin("metrics")
                srv.admin("sale", "pause", "tsan")
                srv.admin("sale", "resume", "tsan")
                time.sleep(0.5)
            stop.set()
            for t in threads:
                t.join(120)
        finally:
            stop.set()
            rc = srv.stop(timeout=120)
            with open(srv.log_path, "rb") as f:
                log = f.read().decode("utf-8", "replace")
            srv.cleanup()
        print("tsan_load: answers by status %s" % sorted(counts.items()), file=sys.stderr)
        reports = log.count("WARNING: ThreadSanitizer")
        self.assertEqual(reports, 0, "ThreadSanitizer reports in the server log:\n" + log[:20000])
        self.assertEqual(rc, 0, log[-4000:])
        self.assertGreater(counts.get(201, 0), 0, counts)


if __name__ == "__main__":
    unittest.main()
