#!/usr/bin/env python3
"""test_runbook.py - the runbook verbs end to end.

preflight:
- against a real PostgreSQL this test starts (initdb + pg_ctl, as setup.sh
  does; root only) and a flashsaled streaming to it: GO, with the sink
  connected; then PostgreSQL is stopped (pg_ctl stop): NO-GO, exit 1, the
  PostgreSQL row says UNREACHABLE;
- a nearly full disk: --data-dir on a small tmpfs (root only) filled to a
  few MiB free: the journal-disk row is NO-GO for the expected sale, GO for
  a small one.
Needs root for the tmpfs and for runuser postgres; skips loudly otherwise.
The fdatasync threshold is raised in these tests (--fdatasync-p99-max-ms):
the shared test box's fsync latency is not what they check."""
import os
import shutil
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

PGBIN = "/usr/lib/postgresql/15/bin"
LAX_SYNC = ["--fdatasync-p99-max-ms", "100000"]


def rows(out):
    """{check: (line, verdict)} of a preflight table."""
    r = {}
    for ln in out.splitlines()[1:]:
        if not ln.strip() or ln.startswith(("GO:", "NO-GO:")):
            continue
        verdict = ln.split()[-1]
        r[ln[:26].strip()] = (ln, verdict)
    return r


class OwnPostgres:
    """A throw-away PostgreSQL cluster on a free port (root: runuser postgres)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="fs-pf-pg-")
        self.port = fc.free_port()
        shutil.chown(self.dir, "postgres")
        pg = lambda *a: subprocess.run(["runuser", "-u", "postgres", "--"] + list(a), check=True,  # noqa: E731
                                       capture_output=True, timeout=120)
        self.pg = pg
        pg(PGBIN + "/initdb", "--no-sync", "-A", "trust", "-U", "postgres", "-D", self.dir + "/data")
        self.start()
        pg(PGBIN + "/createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "flashsale")
        self.conninfo = "host=127.0.0.1 port=%d user=postgres dbname=flashsale" % self.port

    def start(self):
        self.pg(PGBIN + "/pg_ctl", "-w", "-D", self.dir + "/data", "-l", self.dir + "/log", "-o",
                "-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off" % (self.port, self.dir), "start")

    def stop(self):
        subprocess.run(["runuser", "-u", "postgres", "--", PGBIN + "/pg_ctl", "-D", self.dir + "/data", "-m",
                        "fast", "-w", "stop"], capture_output=True, timeout=60)

    def cleanup(self):
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def can_root_services():
    return os.geteuid() == 0 and os.path.exists(PGBIN + "/initdb") and shutil.which("runuser")


class PreflightTest(unittest.TestCase):
    @unittest.skipUnless(can_root_services(), "needs root and PostgreSQL 15 binaries (runuser postgres)")
    def test_go_then_postgres_stopped_is_no_go(self):
        pg = OwnPostgres()
        srv = None
        try:
            srv = fc.Server(extra=["--postgres", pg.conninfo]).start()
            args = ["preflight", "--data-dir", srv.data_dir, "--postgres", pg.conninfo, "--expect-rps", "100",
                    "--expect-users", "1000"] + LAX_SYNC
            redis = os.environ.get("FS_TEST_REDIS")
            if redis:
                args += ["--redis", redis]
            fc.wait_for(lambda: "sink postgres" in srv.admin(*args).stdout, timeout=10)
            p = srv.admin(*args)
            fc.log("test_runbook: preflight, all up:\n" + p.stdout)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            r = rows(p.stdout)
            self.assertEqual(r["PostgreSQL"][1], "GO", r)
            self.assertIn("reachable", r["PostgreSQL"][0])
            self.assertEqual(r["sink postgres"][1], "GO", r)
            self.assertEqual(r["journal disk free"][1], "GO", r)
            if redis:
                self.assertEqual(r["Redis"][1], "GO", r)
            self.assertTrue(p.stdout.rstrip().splitlines()[-1].startswith("GO:"), p.stdout)
            pg.stop()
            p = srv.admin(*args)
            fc.log("test_runbook: preflight, PostgreSQL stopped:\n" + p.stdout)
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            r = rows(p.stdout)
            self.assertEqual(r["PostgreSQL"][1], "NO-GO", r)
            self.assertIn("UNREACHABLE", r["PostgreSQL"][0])
            self.assertTrue(p.stdout.rstrip().splitlines()[-1].startswith("NO-GO:"), p.stdout)
        finally:
            if srv:
                srv.cleanup()
            pg.cleanup()

    @unittest.skipUnless(os.geteuid() == 0, "mounting a small tmpfs needs root")
    def test_nearly_full_disk_is_no_go(self):
        mnt = tempfile.mkdtemp(prefix="fs-pf-tmpfs-")
        m = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=80m", "tmpfs", mnt], capture_output=True, text=True)
        if m.returncode != 0:
            os.rmdir(mnt)
            fc.log("test_runbook: SKIP nearly-full disk: cannot mount a tmpfs: " + m.stderr.strip())
            self.skipTest("cannot mount a tmpfs here: " + m.stderr.strip())
        try:
            p = fc.flashctl("--admin", "unix:" + mnt + "/none.sock", "preflight", "--data-dir", mnt,
                            "--expect-rps", "10", "--expect-minutes", "1", "--expect-users", "10", *LAX_SYNC)
            r = rows(p.stdout)
            self.assertEqual(r["journal disk free"][1], "GO", p.stdout)   # empty 80 MiB >= one 64 MiB segment
            with open(os.path.join(mnt, "filler"), "wb") as f:            # leave ~6 MiB
                f.write(b"\0" * (74 << 20))
            p = fc.flashctl("--admin", "unix:" + mnt + "/none.sock", "preflight", "--data-dir", mnt,
                            "--expect-rps", "1000", "--expect-minutes", "10", "--expect-users", "10", *LAX_SYNC)
            fc.log("test_runbook: preflight on a nearly full disk:\n" + p.stdout)
            self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
            r = rows(p.stdout)
            self.assertEqual(r["journal disk free"][1], "NO-GO", r)
            self.assertIn("MiB free on " + mnt, r["journal disk free"][0])
        finally:
            subprocess.run(["umount", mnt], capture_output=True)
            os.rmdir(mnt)

    def test_bad_usage(self):
        p = fc.flashctl("preflight", "--expect-rps", "many")
        self.assertEqual(p.returncode, 2)
        self.assertIn("not a number", p.stderr)


class ReportTest(unittest.TestCase):
    def test_closing_statement_from_the_journal(self):
        with fc.Server() as srv:
            srv.create_sale("rep", 5, extra=["--price-cents", "250"])
            toks = {u: srv.py_token(u) for u in ("paid", "declined", "cancelled", "holder")}
            rid = {}
            for u, t in toks.items():
                r = srv.reserve(t, "rep", "k-" + u, 1)
                self.assertEqual(r.status, 201, r)
                rid[u] = r.json()["reservation_id"]
            self.assertEqual(srv.checkout(toks["paid"], rid["paid"], "c1", "tok_ok").status, 200)
            self.assertEqual(srv.checkout(toks["declined"], rid["declined"], "c2", "tok_decline").status, 402)
            self.assertEqual(srv.cancel(toks["cancelled"], rid["cancelled"]).status, 200)
            for i in range(3):   # refused: one per user
                self.assertEqual(srv.reserve(toks["holder"], "rep", "again%d" % i, 1).status, 409)
            p = srv.admin("report", "rep", "--data-dir", srv.data_dir)
            fc.log("test_runbook: flashctl report rep:\n" + p.stdout)
            self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
            out = p.stdout
            c = srv.counters("rep")

            def field(name):
                ln = [x for x in out.splitlines() if x.strip().startswith(name)]
                self.assertEqual(len(ln), 1, (name, out))
                return ln[0].split()[len(name.split())]
            self.assertEqual(int(field("sold")), c["sold"])
            self.assertEqual(int(field("sold")), 1)
            self.assertEqual(int(field("held (reserved)")), 1)
            self.assertEqual(int(field("available")), c["available"])
            self.assertEqual(int(field("returned")), 2)
            self.assertEqual(int(field("paid")), 1)
            self.assertEqual(int(field("failed")), 1)
            self.assertEqual(field("revenue"), "2.50")
            self.assertIn("zero-oversell proof  HOLDS", out)
            self.assertIn("1 users with a paid order; bot-flagged: 0", out)
            self.assertRegex(out, r"limit_reached +3")
            srv.stop()
            p = srv.admin("report", "rep", "--data-dir", srv.data_dir)   # offline: the journal alone
            self.assertEqual(p.returncode, 0, p.stderr)
            self.assertIn("sold               1", p.stdout)
            self.assertIn("unavailable", p.stdout)
            self.assertEqual(srv.admin("report", "nosuch", "--data-dir", srv.data_dir).returncode, 1)


class StockRemoveTest(unittest.TestCase):
    def test_remove_only_from_available_journaled_with_who(self):
        with fc.Server() as srv:
            srv.create_sale("rm", 10)
            for i in range(3):
                self.assertEqual(srv.reserve(srv.py_token("r%d" % i), "rm", "k", 1).status, 201)
            p = srv.admin("stock", "remove", "rm", 8)            # only 7 are available
            self.assertEqual(p.returncode, 1)
            self.assertIn("409", p.stderr)
            self.assertIn("bad_state", p.stderr)
            self.assertEqual(srv.counters("rm")["total"], 10)    # nothing changed
            srv.admin_ok("stock", "remove", "rm", 7)
            c = srv.counters("rm")
            self.assertEqual((c["total"], c["available"], c["reserved"]), (3, 0, 3), c)
            self.assertTrue(fc.conserved(c), c)
            self.assertEqual(srv.admin("stock", "remove", "rm", "0").returncode, 1)
            self.assertEqual(srv.admin("stock", "remove", "rm", "x").returncode, 2)
            srv.restart()
            c = srv.counters("rm")
            self.assertEqual((c["total"], c["available"], c["reserved"]), (3, 0, 3), c)
            tool = os.path.join(fc.BUILD, "tools", "flashsale-journal")
            d = subprocess.run([tool, "dump", srv.data_dir], capture_output=True, text=True, timeout=60)
            lines = [ln for ln in d.stdout.splitlines() if "stock_remove" in ln]
            self.assertEqual(len(lines), 1, d.stdout[-2000:])
            self.assertIn("user=uid:%d" % os.getuid(), lines[0])
            self.assertIn("q=7", lines[0])


if __name__ == "__main__":
    unittest.main(verbosity=2)
