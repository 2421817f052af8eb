#!/usr/bin/env python3
"""test_dashboard.py - the operator dashboard in a real headless browser
(Debian's chromium + chromium-driver + python3-selenium).

flashsale-control supervises a flashsaled; a reservation storm runs; the page
is loaded in chromium and read through the DOM:
- during the storm, the numbers it renders for the SKU are those of
  GET /v1/skus/{sku} within a refresh: the page reaches the version the API
  showed before (polled; one scrape plus one page refresh when the box is
  quiet, the number of refreshes it took is logged), never shows a version
  the API had not reached after, and available + reserved + sold == total;
- after the storm, the page converges to exactly GET /v1/skus/{sku};
- `flashctl sale freeze` shows on the page within 2 s (polled);
- the stock chart has drawn its three lines;
- off loopback, /api/state needs the admin token (401 without it).
A screenshot is saved as a test artefact: BUILD/test-artefacts/dashboard.png.
Skips (loudly) when selenium or chromium is missing."""
import os
import sys

try:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
except ImportError:
    # Debian's python3-selenium lives in /usr/bin/python3's dist-packages; a
    # python3 earlier in PATH (pyenv) does not see it: run under Debian's.
    if os.path.exists("/usr/bin/python3") and os.path.realpath(sys.executable) != os.path.realpath("/usr/bin/python3") \
            and not os.environ.get("FS_DASH_REEXEC"):
        os.environ["FS_DASH_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    webdriver = None

import json  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import unittest  # noqa: E402
import urllib.error  # noqa: E402
import urllib.request  # noqa: E402
import uuid  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402
from test_control import Control  # noqa: E402

CHROMIUM = os.environ.get("FS_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("FS_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTEFACTS = os.path.join(fc.BUILD, "test-artefacts")


def browser():
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1400,1000", "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)


@unittest.skipIf(webdriver is None, "python3-selenium is not installed (apt-get install python3-selenium)")
@unittest.skipIf(not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
                 "chromium/chromedriver missing (apt-get install chromium chromium-driver)")
class DashboardTest(unittest.TestCase):
    def setUp(self):
        self.ctl = None
        self.drv = None

    def tearDown(self):
        if self.drv:
            self.drv.quit()
        if self.ctl:
            self.ctl.cleanup()

    def row(self, sku):
        """The SKU's row as rendered: {field: text}, or None."""
        js = """const tr = document.querySelector('#skus tr[data-sku="' + arguments[0] + '"]');
                if (!tr) return null; const o = {};
                for (const td of tr.children) o[td.className.split(' ')[0]] = td.textContent;
                o.refresh = document.getElementById('refresh-count').textContent; return o;"""
        return self.drv.execute_script(js, sku)

    def refreshes(self):
        return int(self.drv.find_element(By.ID, "refresh-count").text or "0")

    def wait_refreshes(self, n, timeout=20):
        start = self.refreshes()
        self.assertTrue(fc.wait_for(lambda: self.refreshes() >= start + n, timeout=timeout),
                        "the page stopped refreshing")

    def test_dashboard_in_chromium_during_a_storm(self):
        self.ctl = ctl = Control().start()
        ctl.wait_ready()
        srv = ctl.srv
        srv.create_sale("storm", 3000)
        secret = srv.secret()
        stop = threading.Event()
        granted = [0]
        errors = [0]

        def storm(tid):
            i = 0
            while not stop.is_set():
                try:   # a connection the server closes (deadlines, caps) is replaced
                    with srv.conn() as c:
                        while not stop.is_set():
                            i += 1
                            tok = fc.mint_token(secret, "s%d-%d" % (tid, i))
                            r = c.request("POST", "/v1/skus/storm/reservations",
                                          {"Authorization": "Bearer " + tok, "Idempotency-Key": str(uuid.uuid4())},
                                          b"")
                            if r.status == 201:
                                granted[0] += 1
                except (OSError, fc.ConnectionClosed, ValueError):
                    errors[0] += 1
                    time.sleep(0.01)
        threads = [threading.Thread(target=storm, args=(t,)) for t in range(3)]
        for t in threads:
            t.start()
        try:
            self.drv = browser()
            self.drv.get("http://127.0.0.1:%d/" % ctl.dash_port)
            self.assertTrue(fc.wait_for(lambda: self.row("storm") is not None, timeout=30),
                            "the page never showed the SKU")
            checked = 0
            for _ in range(3):
                # the page catches up with what the API said before (one
                # scrape + one page refresh; polled, bounded on a loaded box)
                # and never shows more than the API says after
                before = srv.counters("storm")["version"]
                r0 = self.refreshes()
                self.assertTrue(fc.wait_for(lambda: int(self.row("storm")["version"]) >= before, timeout=15),
                                (before, self.row("storm")))
                row = self.row("storm")
                after = srv.counters("storm")["version"]
                v = int(row["version"])
                fc.log("test_dashboard: API version %d, page %d after %d page refreshes, API then %d"
                       % (before, v, self.refreshes() - r0, after))
                self.assertTrue(before <= v <= after, (before, row, after))
                self.assertEqual(int(row["available"]) + int(row["reserved"]) + int(row["sold"]), int(row["total"]), row)
                checked += 1
            self.assertGreater(granted[0], 0, "the storm reserved nothing")
            self.assertTrue(fc.wait_for(lambda: float(self.drv.find_element(By.ID, "rps-total").text or 0) > 0,
                                        timeout=10), "the page never showed the storm's req/s")
            rps = self.drv.find_element(By.ID, "rps-total").text
            fc.log("test_dashboard: %d in-storm checks, %d granted so far, page shows %s req/s, %d reconnects"
                   % (checked, granted[0], rps, errors[0]))
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        # quiet: the page converges to GET /v1/skus/storm exactly
        api = srv.counters("storm")

        def matches():
            r = self.row("storm")
            return r and all(int(r[k]) == api[k] for k in ("total", "available", "reserved", "sold", "version"))
        self.assertTrue(fc.wait_for(matches, timeout=10), (self.row("storm"), api))
        # the chart: three polylines with points
        pts = self.drv.execute_script("""return Array.from(document.querySelectorAll('svg[data-sku="storm"] polyline'))
                                         .map(p => p.getAttribute('points').split(' ').length);""")
        self.assertEqual(len(pts), 3, pts)
        self.assertGreater(min(pts), 2, pts)
        # a freeze shows within 2 s
        srv.admin_ok("sale", "freeze", "storm")
        t0 = time.time()
        shown = fc.wait_for(lambda: (self.row("storm") or {}).get("state") == "frozen", timeout=2.0, interval=0.02)
        took = time.time() - t0
        fc.log("test_dashboard: freeze shown after %.2f s" % took)
        os.makedirs(ARTEFACTS, exist_ok=True)
        shot = os.path.join(ARTEFACTS, "dashboard.png")
        self.drv.save_screenshot(shot)
        fc.log("test_dashboard: screenshot %s" % shot)
        self.assertTrue(shown, "the freeze did not show within 2 s: %r" % self.row("storm"))
        self.assertGreater(os.path.getsize(shot), 1000)
        self.assertEqual(ctl.stop(), 0)

    def test_off_loopback_needs_the_admin_token(self):
        self.ctl = ctl = Control(dash_host="0.0.0.0", extra_srv=["--admin", "127.0.0.1:%d" % fc.free_port()]).start()
        ctl.wait_ready()
        url = "http://127.0.0.1:%d/api/state" % ctl.dash_port
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(url, timeout=5)
        self.assertEqual(e.exception.code, 401)
        bad = urllib.request.Request(url, headers={"Authorization": "Bearer nope"})
        with self.assertRaises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(bad, timeout=5)
        self.assertEqual(e.exception.code, 401)
        with open(os.path.join(ctl.data_dir, "admin.token")) as f:
            token = f.read().strip()
        st = ctl.state(token=token)
        self.assertEqual(st["control"]["state"], "running")
        # the page itself (no data) loads; with #token= it shows the figures
        self.drv = browser()
        self.drv.get("http://127.0.0.1:%d/#token=%s" % (ctl.dash_port, token))
        self.assertTrue(fc.wait_for(lambda: self.row("demo") is not None, timeout=30), "no figures with the token")
        self.assertEqual(ctl.stop(), 0)


if __name__ == "__main__":
    unittest.main(verbosity=2)
