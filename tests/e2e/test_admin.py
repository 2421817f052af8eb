#!/usr/bin/env python3
"""test_admin.py - the operator surface: flashctl verbs and exit codes, --help,
bad flags, metrics, the admin socket's mode, drain, and an idle server's CPU."""
import base64
import json
import os
import stat
import subprocess
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SALE_FIELDS = {"sku", "state", "total", "available", "reserved", "sold", "version"}


def claims_of(token):
    part = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))


def one_line(text):
    return text.strip() != "" and "\n" not in text.strip()


class AdminTest(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = fc.Server(workers=1)
        try:
            cls.srv.start()
        except Exception:
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            cls.srv.cleanup()

    def sku_name(self):
        return "adm-" + uuid.uuid4().hex[:8]

    def ok_json(self, *args):
        p = self.srv.admin(*args)
        self.assertEqual(p.returncode, 0, (args, p.stdout, p.stderr))
        j = json.loads(p.stdout)
        return j

    def refused(self, *args):
        p = self.srv.admin(*args)
        self.assertEqual(p.returncode, 1, (args, p.stdout, p.stderr))
        self.assertTrue(one_line(p.stderr + p.stdout), "reason expected on one line: %r %r" % (p.stdout, p.stderr))
        return p

    def bad_usage(self, *args, admin=True):
        p = self.srv.admin(*args) if admin else fc.flashctl(*args)
        self.assertEqual(p.returncode, 2, (args, p.stdout, p.stderr))
        self.assertTrue(p.stderr.strip(), "no reason printed for %r" % (args,))
        return p

    # ---- help and flags
    def test_help(self):
        for prog in (fc.FLASHSALED, fc.FLASHCTL):
            with self.subTest(prog=prog):
                p = subprocess.run([prog, "--help"], capture_output=True, text=True, timeout=10)
                self.assertEqual(p.returncode, 0, p)
                self.assertIn("usage", (p.stdout + p.stderr).lower())
        p = subprocess.run([fc.FLASHSALED, "--help"], capture_output=True, text=True, timeout=10)
        for flag in ("--listen", "--data-dir", "--jwt-secret-file", "--admin", "--workers", "--config"):
            self.assertIn(flag, p.stdout)
        p = subprocess.run([fc.FLASHCTL, "--help"], capture_output=True, text=True, timeout=10)
        for verb in ("sale create", "open", "pause", "freeze", "resume", "close", "status", "token", "metrics"):
            self.assertIn(verb, p.stdout)

    def test_flashsaled_bad_flags(self):
        d = self.srv.data_dir
        for args in (["--bogus"], ["--workers", "abc"], ["--workers", "0"], ["--listen", "nope"],
                     ["--workers"], ["unexpected"], ["--listen", "127.0.0.1:99999"],
                     ["--request-timeout-ms", "-5"], ["--config", "/nonexistent/flashsale.conf"]):
            with self.subTest(args=args):
                p = subprocess.run([fc.FLASHSALED, "--data-dir", os.path.join(d, "never"), "--no-demo"] + args,
                                   capture_output=True, text=True, timeout=20)
                self.assertNotEqual(p.returncode, 0, p)
                out = p.stdout + p.stderr
                self.assertTrue(one_line(out), "expected a one-line reason, got %d lines:\n%s"
                                % (len(out.strip().splitlines()), out))

    def test_flashsaled_port_in_use(self):
        p = subprocess.run([fc.FLASHSALED, "--listen", "127.0.0.1:%d" % self.srv.port, "--no-demo",
                            "--data-dir", os.path.join(self.srv.data_dir, "second")],
                           capture_output=True, text=True, timeout=30)
        self.assertNotEqual(p.returncode, 0, p)
        self.assertTrue(p.stderr.strip(), p)
        self.assertTrue(self.srv.alive())

    def test_flashctl_bad_usage(self):
        sku = self.sku_name()
        for args in ([], ["sale"], ["sale", "create"], ["sale", "create", sku],
                     ["sale", "create", sku, "--stock", "abc"], ["sale", "create", sku, "--stock", "5", "--hold", "xyz"],
                     ["sale", "frobnicate", sku], ["sale", "open"], ["stock"], ["stock", "add", sku],
                     ["stock", "add", sku, "lots"], ["nosuchcommand"], ["--bogus-flag", "x", "metrics"]):
            with self.subTest(args=args):
                self.bad_usage(*args)
        self.bad_usage("token", admin=False)
        self.bad_usage("token", "--user", "u", "--ttl", "forever", "--jwt-secret-file", self.srv.secret_file,
                       admin=False)
        # the failed create above made nothing
        self.refused("sale", "status", sku)

    def test_flashctl_unreachable(self):
        p = fc.flashctl("--admin", "unix:" + os.path.join(self.srv.data_dir, "nope.sock"), "sale", "status", "demo")
        self.assertEqual(p.returncode, 1, p)
        self.assertTrue(one_line(p.stderr), p)

    # ---- sale verbs
    def test_sale_lifecycle(self):
        sku = self.sku_name()
        j = self.ok_json("sale", "create", sku, "--stock", "10", "--per-user", "2", "--hold", "2s",
                         "--waitlist", "3")
        self.assertTrue(SALE_FIELDS <= set(j), j)
        self.assertEqual((j["sku"], j["state"], j["total"], j["available"]), (sku, "scheduled", 10, 10))
        self.refused("sale", "create", sku, "--stock", "5")          # exists
        self.assertEqual(self.srv.counters(sku)["total"], 10)
        v = j["version"]
        for verb, state in (("open", "open"), ("pause", "paused"), ("resume", "open"),
                            ("freeze", "frozen"), ("resume", "open")):
            with self.subTest(verb=verb):
                j = self.ok_json("sale", verb, sku)
                self.assertEqual((j["sku"], j["state"]), (sku, state))
                self.assertGreater(j["version"], v)
                v = j["version"]
                self.assertEqual(self.srv.counters(sku)["state"], state)
        tok = self.srv.token("adm-user-" + uuid.uuid4().hex[:6])
        r = self.srv.reserve(tok, sku, uuid.uuid4().hex, 1)
        self.assertEqual(r.status, 201, r)
        st = self.ok_json("sale", "status", sku)
        g = self.srv.counters(sku)
        for f in ("sku", "state", "total", "available", "reserved", "sold"):
            self.assertEqual(st[f], g[f], f)
        self.assertEqual((st["available"], st["reserved"]), (9, 1))
        j = self.ok_json("stock", "add", sku, "5")
        self.assertEqual((j["total"], j["available"], j["reserved"]), (15, 14, 1))
        g = self.srv.counters(sku)
        self.assertEqual((g["total"], g["available"], g["reserved"]), (15, 14, 1))
        self.assertTrue(fc.conserved(g), g)
        j = self.ok_json("sale", "close", sku)
        self.assertEqual(j["state"], "closed")
        r = self.srv.reserve(self.srv.token("late-" + uuid.uuid4().hex[:6]), sku, uuid.uuid4().hex, 1)
        self.assertEqual(r.status, 403, r)
        self.refused("sale", "open", sku)   # a closed sale stays closed
        self.assertEqual(self.srv.counters(sku)["state"], "closed")

    def test_unknown_sku_refused(self):
        for args in (("sale", "status", "nope-sku"), ("sale", "open", "nope-sku"), ("sale", "pause", "nope-sku"),
                     ("sale", "freeze", "nope-sku"), ("sale", "resume", "nope-sku"), ("sale", "close", "nope-sku"),
                     ("stock", "add", "nope-sku", "3")):
            with self.subTest(args=args):
                self.refused(*args)
        self.assertEqual(self.srv.sku("nope-sku").status, 404)

    def test_create_refuses_bad_values(self):
        sku = self.sku_name()
        p = self.srv.admin("sale", "create", sku, "--stock", "5", "--hold", "0s")
        self.assertIn(p.returncode, (1, 2), p)
        self.assertEqual(self.srv.sku(sku).status, 404)
        p = self.srv.admin("sale", "create", sku, "--stock", "5", "--default-tier", "9")
        self.assertIn(p.returncode, (1, 2), p)
        self.assertEqual(self.srv.sku(sku).status, 404)

    def test_admin_actions_survive_restart(self):
        sku = self.sku_name()
        self.ok_json("sale", "create", sku, "--stock", "4")
        self.ok_json("sale", "open", sku)
        self.ok_json("stock", "add", sku, "6")
        self.ok_json("sale", "freeze", sku)
        srv2 = fc.Server(data_dir=self.srv.data_dir, port=self.srv.port)
        self.srv.stop()
        try:
            srv2.start()
            c = srv2.counters(sku)
            self.assertEqual((c["state"], c["total"], c["available"]), ("frozen", 10, 10))
        finally:
            srv2.stop()
            self.srv.start()

    # ---- tokens
    def test_token(self):
        t0 = int(time.time())
        tok = self.srv.token("tok-user", tier=2, ttl="1h")
        self.assertEqual(len(tok.split(".")), 3)
        c = claims_of(tok)
        self.assertEqual(c["sub"], "tok-user")
        self.assertEqual(c["tier"], 2)
        self.assertTrue(t0 + 3590 <= c["exp"] <= t0 + 3610, c)
        tok2 = self.srv.token("tok-user2")
        self.assertNotIn("tier", claims_of(tok2))
        # the documented contract: HS256 with the secret file's bytes, trailing whitespace stripped
        py = fc.mint_token(self.srv.secret(), "tok-user", exp=c["exp"], tier=2)
        self.assertEqual(claims_of(py), c)
        self.assertEqual(self.srv.reserve(py, "demo", uuid.uuid4().hex).status, 201)

    # ---- files and metrics
    def test_admin_socket_and_secret_modes(self):
        sock = os.path.join(self.srv.data_dir, "admin.sock")
        st = os.stat(sock)
        self.assertTrue(stat.S_ISSOCK(st.st_mode))
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))
        st = os.stat(self.srv.secret_file)
        self.assertEqual(stat.S_IMODE(st.st_mode), 0o600, oct(st.st_mode))

    def test_metrics(self):
        self.srv.call("GET", "/v1/skus/demo")
        self.srv.call("GET", "/v1/skus/none")
        p = self.srv.admin("metrics")
        self.assertEqual(p.returncode, 0, p)
        text = p.stdout
        self.assertIn("flashsale_http_answers_total", text)
        self.assertIn("flashsale_fdatasync_seconds", text)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name_labels, _, value = line.rpartition(" ")
                self.assertTrue(name_labels, line)
                float(value)   # every sample line is "name{labels} number"
        answers = [ln for ln in text.splitlines() if ln.startswith("flashsale_http_answers_total")]
        self.assertTrue(any(ln.split()[-1] != "0" for ln in answers), answers)
        self.assertTrue(any('status="404"' in ln for ln in answers), answers)
        # not on the public port
        self.assertEqual(self.srv.call("GET", "/metrics").status, 404)

    def test_tcp_admin_port(self):
        port = fc.free_port()
        srv = fc.Server(workers=1, demo=False, extra=["--admin", "127.0.0.1:%d" % port])
        try:
            srv.start()
            tokfile = os.path.join(srv.data_dir, "admin.token")
            self.assertTrue(os.path.exists(tokfile))
            self.assertEqual(stat.S_IMODE(os.stat(tokfile).st_mode), 0o600)
            addr = "127.0.0.1:%d" % port
            p = fc.flashctl("--admin", addr, "--admin-token-file", tokfile, "metrics")
            self.assertEqual(p.returncode, 0, p)
            self.assertIn("flashsale_http_answers_total", p.stdout)
            p = fc.flashctl("--admin", addr, "--admin-token-file", tokfile, "sale", "create", "tcp", "--stock", "3")
            self.assertEqual(p.returncode, 0, p)
            bad = os.path.join(srv.data_dir, "wrong.token")
            with open(bad, "w") as f:
                f.write("0" * 64 + "\n")
            p = fc.flashctl("--admin", addr, "--admin-token-file", bad, "sale", "open", "tcp")
            self.assertNotEqual(p.returncode, 0, p)
            self.assertEqual(srv.counters("tcp")["state"], "scheduled")
            with open(tokfile) as f:
                admin_token = f.read().strip()
            with fc.Conn(port) as c:   # the admin port answers one request per connection
                r = c.request("GET", "/metrics")
                self.assertEqual(r.status, 401, r)
            with fc.Conn(port) as c:
                r = c.request("GET", "/metrics", {"Authorization": "Bearer " + admin_token})
                self.assertEqual(r.status, 200, r)
                self.assertIn(b"flashsale_fdatasync_seconds", r.body)
        finally:
            srv.cleanup()

    def test_z_drain(self):
        srv = fc.Server(workers=1)
        try:
            srv.start()
            p = srv.admin("drain")
            self.assertEqual(p.returncode, 0, p)
            self.assertEqual(srv.call("GET", "/readyz").status, 503)
            self.assertEqual(srv.call("GET", "/healthz").status, 200)
            self.assertEqual(srv.stop(), 0)
        finally:
            srv.cleanup()

    def test_idle_cpu(self):
        pid = self.srv.proc.pid
        time.sleep(1.0)

        def cpu_ticks():
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return int(fields[11]) + int(fields[12])   # utime + stime (fields 14, 15)

        hz = os.sysconf("SC_CLK_TCK")
        # keep an idle keep-alive connection open too: it must not make anything spin
        with self.srv.conn() as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
            a, t0 = cpu_ticks(), time.time()
            time.sleep(3.0)
            b, t1 = cpu_ticks(), time.time()
        share = (b - a) / hz / (t1 - t0)
        print("idle flashsaled CPU: %.2f%% of one core" % (share * 100), file=sys.stderr)
        self.assertLess(share, 0.05, "idle flashsaled used %.1f%% CPU" % (share * 100))

    def test_tables_faulted_in_at_start(self):
        """By default the writer's tables are resident before the server
        answers (the first second of a sale pays no page faults) and the
        start-up log says how long that took; --no-prefault leaves them to
        first use. Small capacities keep this quick."""
        caps = ["--users-max", "50000", "--reservations-max", "100000", "--orders-max", "20000",
                "--idempotency-keys-max", "200000", "--no-demo"]
        rss, reserved = {}, {}
        for prefault in (True, False):
            srv = fc.Server(workers=1, demo=False, extra=caps, prefault=prefault)
            try:
                srv.start()
                with open("/proc/%d/status" % srv.proc.pid) as f:
                    rss[prefault] = next(int(l.split()[1]) for l in f if l.startswith("VmRSS:")) / 1024.0
                log = srv.log()
                line = next(l for l in log.splitlines() if "writer tables (fixed at start-up)" in l)
                reserved[prefault] = float(line.rsplit(":", 1)[1].split()[0])
                if prefault:
                    self.assertRegex(log, r"writer tables faulted in at start-up in \d+ ms")
                else:
                    self.assertIn("writer tables fault in on first use (--no-prefault)", log)
            finally:
                srv.stop()
                srv.cleanup()
        print("RSS with prefault %.0f MiB, without %.0f MiB, tables %.0f MiB"
              % (rss[True], rss[False], reserved[True]), file=sys.stderr)
        self.assertGreater(reserved[True], 20)
        self.assertGreaterEqual(rss[True] - rss[False], 0.9 * reserved[True])


if __name__ == "__main__":
    unittest.main(verbosity=2)
