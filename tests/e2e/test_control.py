#!/usr/bin/env python3
"""test_control.py - flashsale-control supervising a real flashsaled.

- kill -9 the supervised flashsaled under reservation load: it is back after
  the back-off (a new pid, restarts = 1), and every reservation acknowledged
  before or after the kill is there with its status after the restart;
- a damaged journal: flashsaled exits 3, flashsale-control does NOT restart
  it, says why (the segment file and the offset) on stderr and on
  /api/state, and stays up until SIGTERM;
- a child that keeps failing at start-up: back-off restarts, then the crash
  loop limit stops them (state down, reason "crash loop");
- SIGTERM drains: a checkout in flight (a slow payment) completes before the
  stop; the order is PAID after a restart, not PENDING;
- the pid file is written and refused while its pid lives.
Deadlines below are liveness bounds (how long to wait before failing), not
speed assertions."""
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.request
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

CONTROL = os.path.join(fc.BUILD, "control", "flashsale-control")


class Control:
    """flashsale-control + its flashsaled on a temp data dir, free ports."""

    def __init__(self, data_dir=None, extra_ctl=(), extra_srv=(), child=None, dash_host="127.0.0.1"):
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="fs-ctl-")
        self.port = fc.free_port()
        self.dash_port = fc.free_port()
        self.dash_host = dash_host
        self.log_path = os.path.join(self.data_dir, "control-%d.log" % os.getpid())
        self.child = child or [fc.FLASHSALED, "--listen", "127.0.0.1:%d" % self.port, "--data-dir",
                               self.data_dir, "--workers", "1", "--no-pin"] + list(extra_srv)
        self.argv = [CONTROL, "--dashboard", "%s:%d" % (dash_host, self.dash_port), "--refresh-ms", "200",
                     "--backoff-ms", "200"] + list(extra_ctl) + ["--"] + self.child
        self.proc = None
        self.srv = fc.Server(data_dir=self.data_dir, port=self.port)   # for its client helpers only

    def start(self):
        if getattr(self, "logf", None):
            self.logf.close()
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self.logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
        return self

    def log(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def state(self, token=None):
        req = urllib.request.Request("http://127.0.0.1:%d/api/state" % self.dash_port)
        tf = os.path.join(self.data_dir, "admin.token")
        if token is None and self.dash_host != "127.0.0.1" and os.path.exists(tf):
            with open(tf) as f:
                token = f.read().strip()
        if token:
            req.add_header("Authorization", "Bearer " + token)
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def wait_state(self, pred, timeout=30, what="state"):
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError("flashsale-control exited rc=%s:\n%s" % (self.proc.returncode, self.log()[-3000:]))
            try:
                last = self.state()
                if pred(last):
                    return last
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError("%s not reached in %ss (last %r):\n%s" % (what, timeout, last, self.log()[-3000:]))

    def wait_ready(self, timeout=30):
        st = self.wait_state(lambda s: s["control"]["state"] == "running", timeout, "running")
        self.srv.proc = None
        self.srv.wait_healthy(timeout)
        return st

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                raise AssertionError("flashsale-control ignored SIGTERM for %ss" % timeout)
        return self.proc.returncode if self.proc else None

    def cleanup(self):
        try:
            if self.proc and self.proc.poll() is None:
                pid = None
                try:
                    pid = self.state()["control"]["pid"]
                except OSError:
                    pass
                self.proc.kill()
                self.proc.wait(10)
                if pid:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
        finally:
            self.logf.close()
            if not os.environ.get("FS_KEEP"):
                import shutil
                shutil.rmtree(self.data_dir, ignore_errors=True)


def alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


class ControlTest(unittest.TestCase):
    def setUp(self):
        self.ctl = None

    def tearDown(self):
        if self.ctl:
            self.ctl.cleanup()

    def test_kill9_under_load_restarts_and_keeps_every_acknowledged_reservation(self):
        self.ctl = ctl = Control().start()
        st = ctl.wait_ready()
        pid1 = st["control"]["pid"]
        self.assertTrue(alive(pid1))
        with open(os.path.join(ctl.data_dir, "flashsale-control.pid")) as f:
            self.assertEqual(int(f.read()), ctl.proc.pid)
        srv = ctl.srv
        srv.create_sale("k9", 100000)
        secret = srv.secret()
        acked = {}            # rid -> token
        errors = [0]
        stop = threading.Event()
        lock = threading.Lock()

        def load(tid):
            i = 0
            while not stop.is_set():
                i += 1
                user = "u%d-%d" % (tid, i)
                tok = fc.mint_token(secret, user)
                try:
                    r = srv.reserve(tok, "k9", str(uuid.uuid4()), 1)
                except (OSError, fc.ConnectionClosed, ValueError):
                    errors[0] += 1
                    time.sleep(0.01)
                    continue
                if r.status == 201:
                    with lock:
                        acked[r.json()["reservation_id"]] = tok
        threads = [threading.Thread(target=load, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        try:
            fc.wait_for(lambda: len(acked) >= 150, timeout=30)
            before = len(acked)
            self.assertGreaterEqual(before, 150)
            os.kill(pid1, signal.SIGKILL)
            t_kill = time.time()
            st = ctl.wait_state(lambda s: s["control"]["state"] == "running" and s["control"]["pid"] != pid1,
                                60, "running again")
            back_s = time.time() - t_kill
            fc.wait_for(lambda: len(acked) >= before + 100, timeout=30)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(st["control"]["restarts"], 1)
        self.assertIn("crashed (signal 9)", ctl.log())
        fc.log("test_control: back %.2f s after kill -9 (back-off 200 ms); %d acknowledged, %d client errors"
               % (back_s, len(acked), errors[0]))
        self.assertGreater(len(acked), before)
        missing = []
        for rid, tok in acked.items():
            r = srv.get_res(tok, rid)
            if r.status != 200 or r.json()["status"] != "RESERVED":
                missing.append((rid, r))
        self.assertEqual(missing, [])
        c = srv.counters("k9")
        self.assertTrue(fc.conserved(c), c)
        self.assertGreaterEqual(c["reserved"], len(acked))   # plus any answered-but-unread at the kill
        self.assertEqual(ctl.stop(), 0)
        self.assertFalse(os.path.exists(os.path.join(ctl.data_dir, "flashsale-control.pid")))

    def test_journal_damage_stays_down_and_says_why(self):
        self.ctl = ctl = Control().start()
        ctl.wait_ready()
        srv = ctl.srv
        srv.create_sale("dmg", 100)
        for i in range(5):
            self.assertEqual(srv.reserve(srv.py_token("d%d" % i), "dmg", "k%d" % i, 1).status, 201)
        self.assertEqual(ctl.stop(), 0)
        jdir = os.path.join(ctl.data_dir, "journal")
        segs = sorted(os.listdir(jdir))
        seg = os.path.join(jdir, segs[0])
        with open(seg, "r+b") as f:     # inside the first batch's body; valid batches follow
            f.seek(64 + 20)
            b = f.read(1)
            f.seek(64 + 20)
            f.write(bytes([b[0] ^ 0x5a]))
        ctl.start()
        st = ctl.wait_state(lambda s: s["control"]["state"] == "down", 60, "down")
        reason = st["control"]["reason"]
        self.assertIn("journal damage", reason)
        self.assertIn(segs[0], reason)
        self.assertIn("offset", reason)
        time.sleep(1.0)   # longer than the back-off: a restart would show now
        st = ctl.state()
        self.assertEqual(st["control"]["state"], "down")
        self.assertEqual(st["control"]["restarts"], 0)
        self.assertEqual(st["control"]["pid"], 0)
        self.assertIsNone(ctl.proc.poll(), "flashsale-control must stay up, visibly down")
        self.assertIn("JOURNAL DAMAGE; NOT restarting", ctl.log())
        self.assertEqual(ctl.log().count("started flashsaled"), 2)   # the first run, and this one only
        self.assertEqual(ctl.stop(), 0)

    def test_crash_loop_stops_restarts(self):
        busy = fc.free_port()
        import socket
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", busy))
        s.listen(1)
        try:
            data = tempfile.mkdtemp(prefix="fs-ctl-")
            child = [fc.FLASHSALED, "--listen", "127.0.0.1:%d" % busy, "--data-dir", data, "--workers", "1",
                     "--no-pin"]
            self.ctl = ctl = Control(data_dir=data, child=child,
                                     extra_ctl=["--crash-loop", "3", "--backoff-ms", "50"]).start()
            st = ctl.wait_state(lambda s: s["control"]["state"] == "down", 60, "down")
        finally:
            s.close()
        self.assertIn("crash loop: 3 crashes", st["control"]["reason"])
        self.assertEqual(st["control"]["restarts"], 2)
        log = ctl.log()
        self.assertIn("restart in 50 ms", log)
        self.assertIn("restart in 100 ms", log)   # the back-off doubles
        self.assertEqual(ctl.stop(), 0)

    def test_sigterm_drains_inflight_checkout(self):
        self.ctl = ctl = Control().start()
        ctl.wait_ready()
        srv = ctl.srv
        srv.create_sale("dr", 10, extra=["--price-cents", "500"])
        tok = srv.py_token("payer")
        r = srv.reserve(tok, "dr", "k1", 1)
        self.assertEqual(r.status, 201)
        rid = r.json()["reservation_id"]
        out = {}

        def checkout():
            try:
                out["r"] = srv.checkout(tok, rid, "c1", "tok_slow_2500")
            except Exception as e:   # noqa: BLE001 - reported below
                out["e"] = e
        th = threading.Thread(target=checkout)
        th.start()

        def outstanding():
            p = srv.admin("metrics")
            return any(ln.startswith("flashsale_payments_outstanding ") and not ln.endswith(" 0")
                       for ln in p.stdout.splitlines())
        self.assertTrue(fc.wait_for(outstanding, timeout=10), "the checkout never went in flight")
        ctl.proc.send_signal(signal.SIGTERM)
        rc = ctl.proc.wait(60)
        th.join(30)
        self.assertEqual(rc, 0, ctl.log()[-2000:])
        log = ctl.log()
        self.assertIn("draining", log)
        self.assertIn("drained: no checkout in flight", log)
        self.assertIn("r", out, out)
        self.assertIn(out["r"].status, (200, 202), out["r"])
        ctl.start()
        ctl.wait_ready()
        r = srv.get_res(tok, rid)
        oid = r.json().get("order_id")
        self.assertIsNotNone(oid, r)
        self.assertEqual(srv.get_order(tok, oid).json()["status"], "PAID")
        self.assertEqual(ctl.stop(), 0)

    def test_pid_file_refuses_a_second_control(self):
        self.ctl = ctl = Control().start()
        ctl.wait_ready()
        second = subprocess.run([CONTROL, "--dashboard", "off", "--", fc.FLASHSALED, "--data-dir", ctl.data_dir],
                                capture_output=True, text=True, timeout=30)
        self.assertEqual(second.returncode, 2)
        self.assertIn("another flashsale-control runs (pid %d" % ctl.proc.pid, second.stderr)
        self.assertEqual(ctl.stop(), 0)


class TopTest(unittest.TestCase):
    def test_top_renders_a_frame_against_a_live_server(self):
        import re
        with fc.Server() as srv:
            srv.create_sale("topsku", 50)
            for i in range(7):
                self.assertEqual(srv.reserve(srv.py_token("t%d" % i), "topsku", "k%d" % i, 1).status, 201)
            srv.admin_ok("sale", "freeze", "topsku")
            p = srv.admin("top", "--frames", "3", "--interval-ms", "200")
            self.assertEqual(p.returncode, 0, p.stderr)
            frames = [f for f in p.stdout.split("--\n") if f.strip()]
            self.assertEqual(len(frames), 3, p.stdout)
            frame = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", frames[-1])
            fc.log("test_control: flashctl top frame:\n" + frame)
            c = srv.counters("topsku")
            row = [ln for ln in frame.splitlines() if ln.startswith("topsku ")]
            self.assertEqual(len(row), 1, frame)
            f = row[0].split()
            self.assertEqual(f[1], "frozen")
            self.assertEqual([int(x) for x in f[2:6]], [c["total"], c["available"], c["reserved"], c["sold"]])
            self.assertEqual(f[-1], "\u2587\u2587\u2587")   # the sparkline: 3 samples of 43/50 available
            self.assertTrue(any(ln.startswith("reserve ") for ln in frame.splitlines()), frame)
            self.assertIn("fdatasync p50", frame)
            self.assertIn("payments: breaker closed", frame)
            bad = srv.admin("top", "--frames", "x")
            self.assertEqual(bad.returncode, 2)


def admin_raw(srv, method, target):
    """One request on the admin unix socket; (status, body)."""
    import socket as so
    s = so.socket(so.AF_UNIX, so.SOCK_STREAM)
    s.settimeout(10)
    s.connect(os.path.join(srv.data_dir, "admin.sock"))
    s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
               % (method, target)).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def parse_time(s):
    from datetime import datetime, timezone
    fmt = "%Y-%m-%dT%H:%M:%S.%fZ" if "." in s else "%Y-%m-%dT%H:%M:%SZ"
    return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).timestamp()


class FreezeTest(unittest.TestCase):
    def test_frozen_sale_keeps_holds_and_gives_the_time_back(self):
        with fc.Server() as srv:
            srv.create_sale("fz", 5, hold="2s", extra=["--price-cents", "100"])
            tok = srv.py_token("holder")
            r = srv.reserve(tok, "fz", "k1", 1)
            self.assertEqual(r.status, 201)
            rid, exp0 = r.json()["reservation_id"], parse_time(r.json()["expires_at"])
            srv.admin_ok("sale", "freeze", "fz")
            co = srv.checkout(tok, rid, "c1", "tok_ok")
            self.assertEqual(co.status, 503, co)
            self.assertEqual(co.json()["error"], "frozen")
            self.assertEqual(co.header("Retry-After"), "5")
            # past the hold's deadline, while frozen: it must still be RESERVED
            while time.time() < exp0 + 1.5:
                g = srv.get_res(tok, rid).json()
                self.assertEqual(g["status"], "RESERVED", g)
                time.sleep(0.2)
            self.assertEqual(srv.counters("fz")["reserved"], 1)
            srv.admin_ok("sale", "resume", "fz")
            g = srv.get_res(tok, rid).json()
            self.assertEqual(g["status"], "RESERVED", g)
            self.assertGreater(parse_time(g["expires_at"]), exp0 + 1.0, g)   # the frozen time came back
            co = srv.checkout(tok, rid, "c2", "tok_ok")
            self.assertEqual(co.status, 200, co)
            self.assertEqual(co.json()["status"], "PAID")
            # the shift is replayed the same way after a restart
            srv.restart()
            self.assertEqual(srv.counters("fz")["sold"], 1)


if __name__ == "__main__":
    unittest.main(verbosity=2)
