#!/usr/bin/env python3
"""test_sink_poison.py - no user input can stall the system of record
(issue 14), against a real PostgreSQL (FS_TEST_PG; skipped with exit 77
when it is not set).

1. Keys that differ only in bytes PostgreSQL cannot store (`a\\xff` vs
   `a?`: invalid UTF-8 becomes '?' and the two rows collide) are refused at
   the edge (400), so the sink keeps up: every reservation reaches
   PostgreSQL and applied_seq catches up with the journal.
2. A batch the database itself refuses (here: a row already holding the
   same (user_id, idempotency_key), a unique violation) stops the sink with
   a clear error and `flashsale_sink_stopped{sink="postgres"} 1` instead of
   being retried forever; decisions go on.
"""
import os
import re
import shutil
import subprocess
import sys
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

PG = os.environ.get("FS_TEST_PG")
SKU = "sinkp"


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                       capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        raise AssertionError("psql %r: %s" % (sql, r.stderr.strip()))
    return r.stdout.strip()


def metric(srv, pattern):
    m = re.search(pattern, srv.admin_ok("metrics"), re.M)
    return int(m.group(1)) if m else None


class SinkPoisonTest(unittest.TestCase):
    def setUp(self):
        self.db = "fs_poison_%s" % uuid.uuid4().hex[:10]
        psql(PG, "CREATE DATABASE %s" % self.db)
        parts = [p for p in PG.split() if not p.startswith("dbname=")]
        self.conninfo = " ".join(parts + ["dbname=" + self.db])
        self.srv = fc.Server(workers=1, demo=False, extra=["--postgres", self.conninfo])
        self.srv.start()
        self.srv.create_sale(SKU, 100000, per_user=1000, hold="3600s")

    def tearDown(self):
        self.srv.cleanup()
        psql(PG, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db)

    def raw_reserve(self, tok, key_bytes):
        with self.srv.conn() as c:
            c.send_raw(b"POST /v1/skus/" + SKU.encode() + b"/reservations HTTP/1.1\r\nHost: x\r\n"
                       b"Authorization: Bearer " + tok.encode() + b"\r\nIdempotency-Key: " + key_bytes +
                       b"\r\nContent-Length: 0\r\n\r\n")
            return c.read_response()

    def pg_count(self, where="true"):
        return int(psql(self.conninfo, "SELECT count(*) FROM reservations WHERE %s" % where))

    def test_edge_refuses_unstorable_keys_and_sink_keeps_up(self):
        tok = self.srv.py_token("pg-user-1", tier=0)
        self.assertEqual(self.raw_reserve(tok, b"a\xff").status, 400)
        self.assertEqual(self.raw_reserve(tok, b"a\x00b").status, 400)
        self.assertEqual(self.raw_reserve(tok, b"a?").status, 201)
        other = self.srv.py_token("pg-user-2", tier=0)
        for i in range(20):
            self.assertEqual(self.srv.reserve(other, SKU, "k-%d" % i).status, 201)
        self.assertTrue(fc.wait_for(lambda: self.pg_count() == 21, timeout=60),
                        "PostgreSQL has %d of 21 reservations" % self.pg_count())
        lag = fc.wait_for(lambda: metric(self.srv, r'^flashsale_sink_lag_batches\{sink="postgres"\} (\d+)$') == 0,
                          timeout=60)
        self.assertTrue(lag, "the sink did not catch up")
        self.assertEqual(metric(self.srv, r'^flashsale_sink_stopped\{sink="postgres"\} (\d+)$'), 0)

    def test_rejected_batch_stops_the_sink(self):
        tok = self.srv.py_token("pg-user-3", tier=0)
        self.assertEqual(self.srv.reserve(tok, SKU, "before").status, 201)
        self.assertTrue(fc.wait_for(lambda: self.pg_count() == 1, timeout=60))
        # the database will refuse the next reservation's row (unique violation)
        psql(self.conninfo, "INSERT INTO reservations (reservation_id, sku, user_id, quantity, status, "
                            "idempotency_key, created_seq) VALUES ('rpoison', '%s', 'pg-user-3', 1, 'RESERVED', "
                            "'dup', 0)" % SKU)
        self.assertEqual(self.srv.reserve(tok, SKU, "dup").status, 201)
        stopped = fc.wait_for(lambda: metric(self.srv, r'^flashsale_sink_stopped\{sink="postgres"\} (\d+)$') == 1,
                              timeout=120)
        self.assertTrue(stopped, "the sink never stopped on a rejected batch:\n" + self.srv.log())
        log = self.srv.log()
        self.assertIn("STOPPED at batch", log)
        self.assertIn("duplicate key", log)
        # decisions go on; the server is fine
        for i in range(5):
            self.assertEqual(self.srv.reserve(tok, SKU, "after-%d" % i).status, 201)
        self.assertTrue(self.srv.alive())


if __name__ == "__main__":
    if not PG or shutil.which("psql") is None:
        print("test_sink_poison.py: SKIPPED: FS_TEST_PG is not set (or no psql): ./setup.sh test starts a "
              "PostgreSQL and sets it", file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2)
