#!/usr/bin/env python3
"""test_standby.py - losing the primary: --replicate kafka, --standby,
flashctl promote with fencing, resync of a returning old primary.

Real processes throughout: a Kafka mock cluster of 3 brokers in a helper
process of its own (tests/e2e/mockkafka.c: librdkafka's mock, which speaks
the Kafka protocol on loopback), a primary and a standby flashsaled sharing
it, and a load driver that records every acknowledged reservation.

- failover: storm on the primary, kill -9 at a random moment, promote the
  standby: every acknowledged reservation is on the new primary, counters
  conserved, no oversell, `flashsale-journal verify` passes on both; the old
  primary comes back with --standby, resyncs and converges.
- split brain: SIGSTOP the primary under load, promote, SIGCONT: the old
  primary acknowledges nothing the new one lacks, answers 503 standby, and
  its unacknowledged tail is dropped when it returns as a standby.
- broker faults: produce errors (retried), a leader change, every broker
  down (decisions wait: no answer until the brokers are back).

The seed is printed; rerun with FS_SEED=<seed>."""
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402
from test_diskfull import fill  # noqa: E402

JOURNAL_TOOL = os.path.join(fc.BUILD, "tools", "flashsale-journal")
SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
print("test_standby: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)
SHARD = "s1"
TOPIC = "flashsale.%s.journal" % SHARD
SKU = "hot"
STOCK = 5000
# small fixed tables: several servers start per test, each prefaulting its tables
SMALL_TABLES = ["--users-max", "50000", "--reservations-max", "50000", "--orders-max", "10000",
                "--idempotency-keys-max", "100000"]


class Driver:
    """Reservation storm against one port; records what was acknowledged."""

    def __init__(self, port, secret, threads=3, prefix="u"):
        self.port, self.secret, self.prefix = port, secret, prefix
        self.lock = threading.Lock()
        self.acked = {}          # rid -> (user, token, t_ack)
        self.answers = []        # (t_sent, t_answer, status, error)
        self.stop = threading.Event()
        self.threads = [threading.Thread(target=self.run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self.threads:
            t.start()
        return self

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def run(self, tid):
        n = 0
        conn = None
        while not self.stop.is_set():
            if conn is None:
                try:
                    conn = fc.Conn(self.port, timeout=5)
                except OSError:
                    time.sleep(0.05)
                    continue
            n += 1
            user = "%s%d-%d-%s" % (self.prefix, tid, n, uuid.uuid4().hex[:6])
            tok = fc.mint_token(self.secret, user)
            body = json.dumps({"quantity": 1}).encode()
            headers = dict(fc.auth(tok))
            headers["Idempotency-Key"] = "k-" + user
            headers["Content-Type"] = "application/json"
            t0 = time.time()
            try:
                r = conn.request("POST", "/v1/skus/%s/reservations" % SKU, headers, body)
            except (OSError, fc.ConnectionClosed, ValueError):
                conn.close()
                conn = None
                time.sleep(0.02)
                continue
            t1 = time.time()
            err = None
            if r.status != 201:
                try:
                    err = r.json().get("error")
                except ValueError:
                    err = "?"
            with self.lock:
                self.answers.append((t0, t1, r.status, err))
                if r.status == 201:
                    self.acked[r.json()["reservation_id"]] = (user, tok, t1)
        if conn is not None:
            conn.close()


def admin_json(srv, *args):
    return json.loads(srv.admin_ok(*args))


class StandbyTest(unittest.TestCase):
    def setUp(self):
        self.rng = random.Random(SEED)
        self.kafka = fc.MockKafka(TOPIC, brokers=3)
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            if s.proc is not None and s.proc.poll() is None:
                try:
                    s.proc.send_signal(signal.SIGCONT)
                except OSError:
                    pass
            s.cleanup()
        self.kafka.close()

    def server(self, standby=False, secret_from=None, data_dir=None, more=()):
        extra = ["--no-pin", "--replicate", "kafka", "--kafka", self.kafka.bootstrap, "--shard", SHARD] + list(more)
        extra += SMALL_TABLES
        if standby:
            extra.append("--standby")
        if secret_from is not None:
            extra += ["--jwt-secret-file", secret_from.secret_file]
        s = fc.Server(workers=1, demo=False, extra=extra, data_dir=data_dir)
        self.servers.append(s)
        return s

    def pair(self):
        primary = self.server().start()
        primary.create_sale(SKU, STOCK)
        standby = self.server(standby=True, secret_from=primary).start()
        return primary, standby

    def sku(self, srv):
        c = srv.counters(SKU)
        self.assertTrue(fc.conserved(c), c)
        self.assertLessEqual(c["reserved"] + c["sold"], c["total"])
        return c

    def verify_journal(self, srv):
        p = subprocess.run([JOURNAL_TOOL, "verify", os.path.join(srv.data_dir, "journal")],
                           capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        return p.stdout.strip().splitlines()[-1]

    def assert_all_present(self, srv, acked):
        for rid, (user, tok, _) in acked.items():
            r = srv.get_res(tok, rid)
            self.assertEqual(r.status, 200, "acknowledged reservation %s of %s missing: %r" % (rid, user, r))
            self.assertEqual(r.json()["status"], "RESERVED")

    def storm_until(self, drv, extra_s):
        """Lets the storm run until it has 30 acknowledgements (a loaded box
        is slow), then a random while longer: the fault strikes mid-storm."""
        fc.wait_for(lambda: len(drv.acked) >= 30, timeout=20)
        time.sleep(self.rng.random() * extra_s)

    def promote(self, srv):
        t0 = time.time()
        st = admin_json(srv, "promote")
        self.assertEqual(st["role"], "primary", st)
        return t0, time.time(), st

    def wait_caught_up(self, standby, primary):
        want = self.sku(primary)
        ok = fc.wait_for(lambda: standby.counters(SKU) == want, timeout=30)
        self.assertTrue(ok, (standby.counters(SKU), want))

    def metric(self, srv, name):
        for line in srv.admin_ok("metrics").splitlines():
            if line.startswith(name + " "):
                return int(float(line.split()[1]))
        return None

    # ------------------------------------------------------------------ tests
    @unittest.skipUnless(os.geteuid() == 0, "needs root to mount a tmpfs")
    def test_standby_disk_full(self):
        """The standby's journal disk fills while the primary decides on: the
        standby holds the log batch its journal refused, stays up (reads
        served, writes 503 standby, /metrics shows the stall), and once space
        returns it applies the batch and catches up by itself; promoted, it
        holds every acknowledged reservation, and its journal verifies."""
        base = tempfile.mkdtemp(prefix="fs-standby-full-")
        mnt = os.path.join(base, "mnt")
        os.mkdir(mnt)
        rc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt], capture_output=True, text=True)
        if rc.returncode != 0:
            shutil.rmtree(base, ignore_errors=True)
            self.skipTest("cannot mount a tmpfs: %s" % rc.stderr.strip())
        try:
            # only the standby's journal is on the small tmpfs (data/journal -> mnt/journal)
            data = os.path.join(base, "data")
            os.mkdir(data, 0o700)
            os.mkdir(os.path.join(mnt, "journal"), 0o700)
            os.symlink(os.path.join(mnt, "journal"), os.path.join(data, "journal"))
            primary = self.server().start()
            primary.create_sale(SKU, 40000)
            standby = self.server(standby=True, secret_from=primary, data_dir=data,
                                  more=["--segment-mb", "1"]).start()
            self.wait_caught_up(standby, primary)
            filler = os.path.join(mnt, "filler")
            filled = fill(filler)
            fc.log("standby's disk full: filler %d KiB" % (filled >> 10))
            secret = fc.read_secret(primary.secret_file)
            drv = Driver(primary.port, secret).start()
            try:
                # about 1 MiB of log needs a new segment the standby cannot make
                held = fc.wait_for(lambda: not standby.alive() or self.metric(standby, "flashsale_journal_stalled") == 1,
                                   timeout=240)
                self.assertTrue(standby.alive(), "the standby died on a full disk:\n" + standby.log())
                self.assertTrue(held, "the standby never stalled: %d acknowledged" % len(drv.acked))
                self.assertGreaterEqual(self.metric(standby, "flashsale_journal_append_failures_total"), 1)
                r = standby.sku(SKU)                      # reads go on, with the lag
                self.assertEqual(r.status, 200, r)
                tok = fc.mint_token(secret, "probe-full")
                r = standby.reserve(tok, SKU, "probe-full-1", quantity=1)
                self.assertEqual((r.status, r.json()["error"]), (503, "standby"))
                acked_while_full = len(drv.acked)
                time.sleep(1)
                self.assertTrue(standby.alive())
                self.assertGreater(len(drv.acked), acked_while_full, "the primary must decide on meanwhile")
            finally:
                drv.finish()
            os.unlink(filler)
            self.wait_caught_up(standby, primary)        # by itself, the held batch first
            self.assertEqual(self.metric(standby, "flashsale_journal_stalled"), 0)
            self.assertIn("journal takes writes again", standby.log())
            self.assertGreater(len(drv.acked), 0)
            self.promote(standby)                         # a standby serves SKU reads only
            self.assert_all_present(standby, drv.acked)
            self.sku(standby)
            self.assertEqual(standby.stop(), 0, standby.log())
            fc.log("standby journal: %s" % self.verify_journal(standby))
        finally:
            for s in self.servers:
                s.cleanup()
            self.servers = []
            subprocess.run(["umount", "-l", mnt], capture_output=True)
            shutil.rmtree(base, ignore_errors=True)

    def test_failover_kill9(self):
        primary, standby = self.pair()
        secret = fc.read_secret(primary.secret_file)
        # the standby serves reads with its lag and refuses writes
        r = standby.sku(SKU)
        self.assertEqual(r.status, 200)
        self.assertIsNotNone(r.header("X-Replication-Lag-Ms"), r.headers)
        tok = fc.mint_token(secret, "probe")
        r = standby.reserve(tok, SKU, "probe-1", quantity=1)
        self.assertEqual((r.status, r.json()["error"]), (503, "standby"))
        st = admin_json(standby, "sale", "status", SKU)
        self.assertEqual((st["replication"]["role"], st["replication"]["epoch"]), ("standby", 1), st)
        self.assertEqual(admin_json(primary, "sale", "status", SKU)["replication"]["role"], "primary")
        self.assertIn('flashsale_replication_role{role="standby"} 1', standby.admin_ok("metrics"))
        top = standby.admin_ok("top", "--frames", "1", "--interval-ms", "100")
        self.assertIn("standby epoch 1 lag", top)

        drv = Driver(primary.port, secret).start()
        self.storm_until(drv, 1.5)
        primary.kill9()
        t_kill = time.time()
        drv.finish()
        self.assertGreater(len(drv.acked), 0, "no reservation acknowledged before the kill")
        t0, t1, st = self.promote(standby)
        fc.log("failover: %d acknowledged before kill -9 (answers %s); promote took %.0f ms; epoch %d, seq %d" % (
            len(drv.acked), sorted(set((a[2], a[3]) for a in drv.answers)), (t1 - t0) * 1000, st["epoch"],
            st["applied_seq"]))
        self.assert_all_present(standby, drv.acked)
        c = self.sku(standby)
        self.assertGreaterEqual(c["reserved"], len(drv.acked))
        # the new primary takes writes; failover time = last old ack -> first new ack
        drv2 = Driver(standby.port, secret, prefix="n").start()
        fc.wait_for(lambda: len(drv2.acked) > 0, timeout=20)
        drv2.finish()
        self.assertGreater(len(drv2.acked), 0)
        first_new = min(v[2] for v in drv2.acked.values())
        last_old = max(v[2] for v in drv.acked.values())
        fc.log("failover: last ack of the old primary -> first ack of the new one: %.0f ms (kill at +%.0f ms)" % (
            (first_new - last_old) * 1000, (t_kill - last_old) * 1000))
        self.assert_all_present(standby, drv.acked)
        c = self.sku(standby)
        self.assertGreaterEqual(c["reserved"], len(drv.acked) + len(drv2.acked))
        # the old primary returns as a standby: resync, then follow
        old = self.server(standby=True, secret_from=primary, data_dir=primary.data_dir)
        old.own_dir = False
        old.start()
        self.wait_caught_up(old, standby)
        rep = admin_json(old, "replication")
        self.assertEqual(rep["role"], "standby")
        self.assertEqual(rep["epoch"], st["epoch"])
        old.stop()
        standby.stop()
        a, b = self.verify_journal(old), self.verify_journal(standby)
        self.assertEqual(a.split("state digest")[-1], b.split("state digest")[-1], (a, b))

    def test_split_brain(self):
        primary, standby = self.pair()
        secret = fc.read_secret(primary.secret_file)
        drv = Driver(primary.port, secret).start()
        self.storm_until(drv, 1.0)
        primary.proc.send_signal(signal.SIGSTOP)
        time.sleep(0.2)
        t0, t1, st = self.promote(standby)
        primary.proc.send_signal(signal.SIGCONT)
        time.sleep(1.0)
        drv.finish()
        # every acknowledgement of the old primary is on the new one
        self.assert_all_present(standby, drv.acked)
        after = [a for a in drv.answers if a[0] > t1]
        fc.log("split brain: %d acked, %d answers after the promotion: %s" % (
            len(drv.acked), len(after), sorted(set((a[2], a[3]) for a in after))))
        self.assertTrue(any(a[2] == 503 and a[3] == "standby" for a in after), after[:20])
        self.assertFalse(any(a[2] == 201 for a in after), "the old primary acknowledged after the promotion")
        rep = admin_json(primary, "replication")
        self.assertEqual(rep["role"], "fenced", rep)
        # the new primary is the only one taking writes
        r = standby.reserve(fc.mint_token(secret, "after"), SKU, "after-1", quantity=1)
        self.assertEqual(r.status, 201, r)
        r = primary.reserve(fc.mint_token(secret, "after2"), SKU, "after-2", quantity=1)
        self.assertEqual((r.status, r.json()["error"]), (503, "standby"))
        # the old primary returns as a standby: its unacknowledged tail (if
        # it decided a batch before it saw the fence; usually its heartbeat
        # sees the fence first) goes
        primary.stop()
        local_last = int(self.verify_journal(primary).split()[1])
        old = self.server(standby=True, secret_from=primary, data_dir=primary.data_dir)
        old.own_dir = False
        old.start()
        fc.log("split brain: old primary's journal ends at %d, the log's epoch 1 at %d" % (local_last, st["applied_seq"]))
        if local_last > st["applied_seq"]:
            self.assertIn("resync: dropping local batches from seq %d" % (st["applied_seq"] + 1), old.log())
        else:
            self.assertNotIn("resync: dropping", old.log())
        self.wait_caught_up(old, standby)
        old.stop()
        standby.stop()
        self.verify_journal(old)
        self.verify_journal(standby)

    def test_auto_failover(self):
        primary = self.server().start()
        primary.create_sale(SKU, STOCK)
        standby = self.server(standby=True, secret_from=primary, more=["--failover-after", "3000"]).start()
        secret = fc.read_secret(primary.secret_file)
        # an idle primary's heartbeats keep the standby a standby
        time.sleep(4.5)
        rep = admin_json(standby, "replication")
        self.assertEqual(rep["role"], "standby", rep)
        self.assertEqual(rep["auto_promotions"], 0, rep)
        drv = Driver(primary.port, secret).start()
        self.storm_until(drv, 1.0)
        primary.kill9()
        drv.finish()
        self.assertTrue(fc.wait_for(lambda: admin_json(standby, "replication")["role"] == "primary", timeout=30),
                        standby.log())
        rep = admin_json(standby, "replication")
        fc.log("auto failover: %d acked before kill -9; promoted at epoch %d" % (len(drv.acked), rep["epoch"]))
        self.assertEqual((rep["epoch"], rep["auto_promotions"]), (2, 1), rep)
        self.assert_all_present(standby, drv.acked)
        self.sku(standby)
        r = standby.reserve(fc.mint_token(secret, "auto"), SKU, "auto-1", quantity=1)
        self.assertEqual(r.status, 201, r)

    def test_resync_drops_unacknowledged_tail(self):
        primary, standby = self.pair()
        secret = fc.read_secret(primary.secret_file)
        for i in range(5):
            r = primary.reserve(fc.mint_token(secret, "a%d" % i), SKU, "a%d" % i, quantity=1)
            self.assertEqual(r.status, 201, r)
        self.wait_caught_up(standby, primary)
        # the brokers go away: the next decision is journaled on the primary's
        # disk but cannot reach the log, so it is never acknowledged
        for b in (1, 2, 3):
            self.kafka.cmd("down %d" % b)
        box = {}

        def lost():
            try:
                box["r"] = primary.reserve(fc.mint_token(secret, "lost"), SKU, "lost-1", quantity=1)
            except (OSError, fc.ConnectionClosed, ValueError) as e:
                box["e"] = e
        t = threading.Thread(target=lost, daemon=True)
        t.start()
        t.join(3.0)
        primary.kill9()
        t.join(15)
        self.assertNotIn("r", box, "answered without the log: %r" % box.get("r"))
        local_last = int(self.verify_journal(primary).split()[1])
        for b in (1, 2, 3):
            self.kafka.cmd("up %d" % b)
        _, _, st = self.promote(standby)
        self.assertEqual(local_last, st["applied_seq"] + 1, (local_last, st))
        # the old primary refuses to come back as a primary ...
        again = self.server(secret_from=primary, data_dir=primary.data_dir)
        again.own_dir = False
        with self.assertRaises(RuntimeError):
            again.start(timeout=60)
        self.assertIn("start with --standby", again.log())
        # ... and as a standby drops the batch nobody was told about
        old = self.server(standby=True, secret_from=primary, data_dir=primary.data_dir)
        old.own_dir = False
        old.start()
        self.assertIn("resync: dropping local batches from seq %d" % local_last, old.log())
        r = standby.reserve(fc.mint_token(secret, "b0"), SKU, "b0", quantity=1)
        self.assertEqual(r.status, 201, r)
        self.wait_caught_up(old, standby)
        lost_tok = fc.mint_token(secret, "lost")
        self.assertEqual(standby.reserve(lost_tok, SKU, "lost-1", quantity=1).status, 201)   # new, not a replay
        old.stop()
        standby.stop()
        a, b = self.verify_journal(old), self.verify_journal(standby)
        fc.log("resync: %s | %s" % (a, b))

    def test_broker_faults(self):
        primary, standby = self.pair()
        secret = fc.read_secret(primary.secret_file)
        acked = {}

        def reserve(srv, user, timeout=30):
            tok = fc.mint_token(secret, user)
            with fc.Conn(srv.port, timeout=timeout) as c:
                headers = dict(fc.auth(tok))
                headers["Idempotency-Key"] = "k-" + user
                r = c.request("POST", "/v1/skus/%s/reservations" % SKU, headers, b'{"quantity":1}')
            if r.status == 201:
                acked[r.json()["reservation_id"]] = (user, tok, time.time())
            return r

        # retriable produce errors (NOT_ENOUGH_REPLICAS = 19, REQUEST_TIMED_OUT = 7)
        self.kafka.cmd("errors 3 19")
        self.kafka.cmd("errors 2 7")
        for i in range(5):
            self.assertEqual(reserve(primary, "e%d" % i).status, 201)
        # a leader change
        self.kafka.cmd("leader %s 2" % TOPIC)
        for i in range(5):
            self.assertEqual(reserve(primary, "l%d" % i).status, 201)
        # every broker down: the decision waits, unacknowledged
        for b in (1, 2, 3):
            self.kafka.cmd("down %d" % b)
        box = {}
        t = threading.Thread(target=lambda: box.update(r=reserve(primary, "d0", timeout=60)), daemon=True)
        t.start()
        t.join(3.0)
        self.assertTrue(t.is_alive(), "answered while every broker was down: %r" % box.get("r"))
        for b in (1, 2, 3):
            self.kafka.cmd("up %d" % b)
        t.join(60)
        self.assertFalse(t.is_alive())
        self.assertIn(box["r"].status, (201, 503), box["r"])
        rep = admin_json(primary, "replication")
        fc.log("broker faults: produce retries %d, %d acked" % (rep["produce_retries"], len(acked)))
        self.wait_caught_up(standby, primary)
        self.assert_all_present(primary, acked)
        # the standby holds them too: promote it and look
        primary.kill9()
        self.promote(standby)
        self.assert_all_present(standby, acked)
        self.sku(standby)


if __name__ == "__main__":
    unittest.main(verbosity=2)
