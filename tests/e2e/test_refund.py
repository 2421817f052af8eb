#!/usr/bin/env python3
"""test_refund.py - flashctl order refund end to end (issue 16), and every
admin command journaled with who asked.

RefundTest (built-in provider, no services needed):
- a PAID order refunded without --restock: REFUNDED (customer GET too), its
  unit leaves the sale (sold and total shrink, available unchanged); a repeat
  answers 200 with nothing journaled; refunds of a failed order (409
  bad_state), of an unknown order (404) and a malformed id (usage, exit 2)
  change nothing;
- with --restock the unit goes back to available;
- after a restart the counters are the same, `flashctl report` counts the
  refunds, and `flashsale-journal dump` shows refund, refund_result and the
  sale commands with by=uid:<our uid>;
- over the admin TCP port the identity is token:<token file name>.

RefundCrashPostgresTest (real PostgreSQL from FS_TEST_PG, the HTTP provider
payprovider.py; skipped loudly without FS_TEST_PG):
- a refund whose provider answer is slow: flashsaled is killed (-9) as soon
  as the provider saw the first attempt (the refund is made there, the
  answer not yet sent). After the restart the refund is sent again with the
  same key refund-<order id>: the provider answers 409 and the order is
  REFUNDED; the provider refunded that key exactly once, and no key was
  charged twice;
- a second order refunded with --restock meanwhile;
- the PostgreSQL sink carries it: orders rows REFUNDED, the sales row equals
  GET /v1/skus/{sku}, journal_events holds the refund with the admin
  identity, and flashsale-reconcile finds 0 differences."""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402
import payprovider as pp  # noqa: E402

JOURNAL_TOOL = os.path.join(fc.BUILD, "tools", "flashsale-journal")
RECONCILE = os.path.join(fc.BUILD, "tools", "flashsale-reconcile")


def dump(data_dir):
    d = subprocess.run([JOURNAL_TOOL, "dump", data_dir], capture_output=True, text=True, timeout=60)
    assert d.returncode == 0, d.stderr
    return d.stdout


def paid_order(srv, sku, user, token="tok_ok"):
    t = srv.py_token(user)
    r = srv.reserve(t, sku, "k-" + user, 1)
    assert r.status == 201, r
    c = srv.checkout(t, r.json()["reservation_id"], "c-" + user, token)
    assert c.status == 200 and c.json()["status"] == "PAID", c
    return t, c.json()["order_id"]


class RefundTest(unittest.TestCase):
    def test_refund_leaves_or_returns_the_unit_and_is_journaled_with_who(self):
        uid = os.getuid()
        with fc.Server() as srv:
            srv.create_sale("rf", 5, extra=["--price-cents", "250"])
            ta, oa = paid_order(srv, "rf", "alice")
            tb, ob = paid_order(srv, "rf", "bob")
            tc = srv.py_token("carol")
            rc = srv.reserve(tc, "rf", "k-carol", 1).json()["reservation_id"]
            fail = srv.checkout(tc, rc, "c-carol", "tok_decline")
            self.assertEqual(fail.status, 402)
            self.assertEqual(srv.counters("rf")["sold"], 2)

            p = srv.admin("order", "refund", oa)
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["status"], "REFUNDED")
            c = srv.counters("rf")
            self.assertEqual((c["total"], c["available"], c["reserved"], c["sold"]), (4, 3, 0, 1), c)
            self.assertEqual(srv.get_order(ta, oa).json()["status"], "REFUNDED")
            rid_a = srv.get_order(ta, oa).json()["reservation_id"]
            again = srv.checkout(ta, rid_a, "c-alice", "tok_ok")   # the checkout's repeat: it did succeed
            self.assertEqual((again.status, again.json()["status"]), (200, "REFUNDED"), again)
            records = dump(srv.data_dir).count("refund_result")
            p = srv.admin("order", "refund", oa)                 # a repeat: the outcome, nothing new
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertEqual(json.loads(p.stdout)["status"], "REFUNDED")
            self.assertEqual(dump(srv.data_dir).count("refund_result"), records)
            self.assertEqual(srv.counters("rf")["total"], 4)

            p = srv.admin("order", "refund", fail.json()["order_id"])   # FAILED: nothing to refund
            self.assertEqual(p.returncode, 1)
            self.assertIn("bad_state", p.stderr)
            p = srv.admin("order", "refund", "o00000000000000ff")
            self.assertEqual(p.returncode, 1)
            self.assertIn("404", p.stderr)
            self.assertEqual(srv.admin("order", "refund", "r0000000000000001").returncode, 2)
            self.assertEqual(srv.admin("order", "refund", ob, "--restok").returncode, 2)

            p = srv.admin("order", "refund", ob, "--restock")
            self.assertEqual(p.returncode, 0, p.stderr)
            c = srv.counters("rf")
            self.assertEqual((c["total"], c["available"], c["reserved"], c["sold"]), (4, 4, 0, 0), c)
            self.assertTrue(fc.conserved(c), c)
            srv.admin_ok("sale", "pause", "rf")

            srv.restart()
            c2 = srv.counters("rf")
            self.assertEqual((c2["total"], c2["available"], c2["sold"]), (4, 4, 0), c2)
            self.assertEqual(srv.get_order(tb, ob).json()["status"], "REFUNDED")
            rep = srv.admin("report", "rf", "--data-dir", srv.data_dir)
            fc.log("test_refund: report:\n" + rep.stdout)
            self.assertEqual(rep.returncode, 0, rep.stderr)
            self.assertRegex(rep.stdout, r"refunded +2 \(1 units back on sale, 1 units out of the sale; 5\.00 refunded\)")
            self.assertRegex(rep.stdout, r"paid +0 ")
            self.assertRegex(rep.stdout, r"revenue +0\.00")

            out = dump(srv.data_dir)
            refunds = [ln for ln in out.splitlines() if ln.strip().startswith("refund ")]
            self.assertEqual(len(refunds), 2, out[-3000:])
            for ln in refunds:
                self.assertIn("by=uid:%d" % uid, ln)
            self.assertIn("q=1", refunds[1])                     # the restock flag
            for verb in ("sale_create", "sale_open", "sale_pause"):
                ln = [x for x in out.splitlines() if x.strip().startswith(verb) and "sku=rf " in x]
                self.assertTrue(ln and all("by=uid:%d" % uid in x for x in ln), (verb, ln))

    def test_identity_over_the_admin_port_is_the_token_name(self):
        port = fc.free_port()
        srv = fc.Server(extra=["--admin", "127.0.0.1:%d" % port])
        try:
            srv.start()
            srv.create_sale("tk", 3)
            tok = os.path.join(srv.data_dir, "admin.token")
            p = fc.flashctl("--admin", "127.0.0.1:%d" % port, "--admin-token-file", tok, "sale", "freeze", "tk")
            self.assertEqual(p.returncode, 0, p.stderr)
            ln = [x for x in dump(srv.data_dir).splitlines() if x.strip().startswith("sale_freeze")]
            self.assertEqual(len(ln), 1, ln)
            self.assertIn("by=token:admin.token", ln[0])
        finally:
            srv.cleanup()


def psql(conninfo, sql):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                       capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise AssertionError("psql %r: %s" % (sql, r.stderr.strip()))
    return r.stdout.strip()


class RefundCrashPostgresTest(unittest.TestCase):
    def setUp(self):
        self.pg = os.environ.get("FS_TEST_PG")
        if not self.pg or shutil.which("psql") is None:
            fc.log("test_refund: SKIP the PostgreSQL refund test: FS_TEST_PG is not set or psql is missing")
            self.skipTest("FS_TEST_PG is not set (./setup.sh test sets it) or psql is missing")
        self.db = "fs_refund_%d" % os.getpid()
        psql(self.pg, "DROP DATABASE IF EXISTS %s" % self.db)
        psql(self.pg, "CREATE DATABASE %s" % self.db)
        self.conninfo = "%s dbname=%s" % (self.pg, self.db)
        self.tmp = tempfile.mkdtemp(prefix="fs-refund-")
        self.provider = pp.Provider(os.path.join(self.tmp, "pay.json")).start()
        self.srv = fc.Server(extra=["--payment-provider", self.provider.url, "--postgres", self.conninfo])

    def tearDown(self):
        self.srv.cleanup()
        self.provider.stop()
        shutil.rmtree(self.tmp, ignore_errors=True)
        try:
            psql(self.pg, "DROP DATABASE IF EXISTS %s WITH (FORCE)" % self.db)
        except AssertionError as e:
            fc.log("test_refund: cannot drop %s: %s" % (self.db, e))

    def test_kill9_mid_refund_retried_with_the_same_key_refunded_once(self):
        srv, prov = self.srv, self.provider
        srv.start()
        srv.create_sale("crf", 4, extra=["--price-cents", "999"])
        ta, oa = paid_order(srv, "crf", "alice", "tok_ok_slowrefund")
        tb, ob = paid_order(srv, "crf", "bob")
        key = "refund-" + oa
        prov.set_refund_rule("tok_ok_slowrefund", "slow", 30000)   # refunded at once, answered 30 s later
        bg = subprocess.Popen([fc.FLASHCTL, "--admin", srv.admin_addr, "order", "refund", oa],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertTrue(fc.wait_for(lambda: prov.refunds().get(key, {}).get("attempts", 0) >= 1, timeout=10),
                            prov.refunds())
            srv.kill9()                                  # the answer is still on its way
        finally:
            bg.communicate(timeout=30)
        self.assertEqual(prov.refunds()[key]["refunded"], 1)
        srv.start()                                      # the REFUNDING order's refund goes out again
        self.assertTrue(fc.wait_for(lambda: srv.get_order(ta, oa).json()["status"] == "REFUNDED", timeout=20),
                        (srv.get_order(ta, oa).json(), prov.refunds(), srv.log()))
        rec = prov.refunds()[key]
        fc.log("test_refund: provider's record of %s: %r" % (key, rec))
        self.assertEqual(rec["refunded"], 1, rec)
        self.assertGreaterEqual(rec["attempts"], 2, rec)
        self.assertIn(409, rec["answers"], rec)
        self.assertTrue(rec["refund"], rec)
        self.assertEqual(pp.check_never_charged_twice(prov.keys()), [])

        p = srv.admin("order", "refund", ob, "--restock")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(prov.refunds()["refund-" + ob]["refunded"], 1)
        c = srv.counters("crf")
        self.assertEqual((c["total"], c["available"], c["sold"]), (3, 3, 0), c)

        def pg_caught_up():
            st = json.loads(srv.admin_ok("sale", "status", "crf"))
            return all(s["lag"] == 0 for s in st["sinks"]) and st["sinks"]
        self.assertTrue(fc.wait_for(pg_caught_up, timeout=30), srv.admin_ok("sale", "status", "crf"))
        rows = psql(self.conninfo, "SELECT order_id, status FROM orders ORDER BY order_id").splitlines()
        self.assertEqual(rows, ["%s|REFUNDED" % oa, "%s|REFUNDED" % ob], rows)
        sale = psql(self.conninfo, "SELECT total, available, reserved, sold FROM sales WHERE sku = 'crf'")
        self.assertEqual(sale, "%d|%d|%d|%d" % (c["total"], c["available"], c["reserved"], c["sold"]))
        who = psql(self.conninfo, "SELECT idempotency_key FROM journal_events WHERE type = 'refund' ORDER BY seq")
        self.assertEqual(who.splitlines(), ["uid:%d" % os.getuid()] * 2, who)
        r = subprocess.run([RECONCILE, "--journal", os.path.join(srv.data_dir, "journal"),
                            "--postgres", self.conninfo], capture_output=True, text=True, timeout=120)
        out = (r.stdout + r.stderr).strip()
        fc.log("test_refund: reconcile: " + out.splitlines()[-1] if out else "")
        self.assertEqual(r.returncode, 0, out[-3000:])
        self.assertRegex(out, r": 0 differences")


if __name__ == "__main__":
    unittest.main(verbosity=2)
