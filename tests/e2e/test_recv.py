#!/usr/bin/env python3
"""test_recv.py - the io_uring worker's receives (issue 13): multishot
receives into a provided-buffer ring (DP_RBUF_COUNT x DP_RBUF_BYTES per
worker), and the one-shot receives of --recv oneshot, take the same hard
cases:

- pipelines far larger than one provided buffer (and than the 16 KiB input
  buffer), requests straddling buffer boundaries, pipelined reservations
  that wait on the writer while more input arrives: every answer, in order;
- back-pressure: clients that pipeline megabytes and do not read park what
  the kernel delivered beyond their input buffer; other clients keep being
  served meanwhile, and a parked client that reads at last gets every answer
  (no byte lost or repeated across the parking);
- buffer-ring exhaustion: hundreds of connections burst at once (many times
  the ring); every connection gets all its answers, the server keeps
  answering and its memory does not grow from round to round.
Each test asserts the end state, never how fast it got there."""
import os
import re
import selectors
import socket
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SKU = "recvsku"
GET = fc.Conn.build("GET", "/v1/skus/demo")


def metric(text, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    return int(m.group(1)) if m else None


def answers(data):
    """Status codes of the answers in data, in order (bodies are JSON and
    never hold a status line)."""
    return [int(m.group(1)) for m in re.finditer(rb"HTTP/1\.1 (\d{3}) ", data)]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        return int(re.search(r"^VmRSS:\s+(\d+) kB", f.read(), re.M).group(1))


def burst(port, blobs, expect, timeout=120, rcvbuf=None):
    """One connection per blob; writes every blob at once (interleaved,
    non-blocking) and reads each connection until it holds expect[i]
    answers. Returns the bytes each connection received."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in blobs:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
        socks.append(s)
    sent = [0] * len(blobs)
    got = [bytearray() for _ in blobs]
    count = [0] * len(blobs)
    for i, s in enumerate(socks):
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
    deadline = time.time() + timeout
    try:
        while any(count[i] < expect[i] for i in range(len(blobs))):
            if time.time() > deadline:
                raise AssertionError("burst: %d connections short of their answers" %
                                     sum(count[i] < expect[i] for i in range(len(blobs))))
            for key, ev in sel.select(1.0):
                i = key.data
                s = socks[i]
                if ev & selectors.EVENT_WRITE and sent[i] < len(blobs[i]):
                    try:
                        sent[i] += s.send(blobs[i][sent[i]:sent[i] + (1 << 20)])
                    except BlockingIOError:
                        pass
                    if sent[i] == len(blobs[i]):
                        sel.modify(s, selectors.EVENT_READ, i)
                if ev & selectors.EVENT_READ:
                    try:
                        chunk = s.recv(1 << 20)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        raise AssertionError("burst: connection %d closed after %d of %d answers" %
                                             (i, count[i], expect[i]))
                    got[i] += chunk
                    count[i] = got[i].count(b"HTTP/1.1 ")
    finally:
        for s in socks:
            sel.unregister(s)
            s.close()
    return [bytes(g) for g in got]


class RecvBase:
    """The cases, run once per receive mode (subclasses set MODE)."""
    MODE = None
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = fc.Server(workers=1, extra=["--recv", cls.MODE, "--send-timeout-ms", "60000",
                                              "--request-timeout-ms", "60000", "--idle-timeout-ms", "60000"])
        try:
            cls.srv.start()
            cls.srv.create_sale(SKU, 100000, per_user=100000)
            cls.tok = cls.srv.py_token("recv-user", tier=0)
        except Exception:
            cls.srv.cleanup()
            raise
        cls.multishot = "receives multishot" in cls.srv.log()
        fc.log("%s: %s" % (cls.MODE, [ln for ln in cls.srv.log().splitlines() if "receives" in ln]))

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            cls.srv.stop()
            text = cls.srv.log()   # the ASan/UBSan build (FS_BUILD=build-debug) reports here
            cls.srv.cleanup()
            if "Sanitizer" in text or "runtime error" in text:
                raise AssertionError("flashsaled (%s) reported:\n%s" % (cls.MODE, text[-4000:]))

    def tearDown(self):
        self.assertTrue(self.srv.alive(), "flashsaled died:\n" + self.srv.log())

    def metrics(self):
        return self.srv.admin_ok("metrics")

    def test_mode_line(self):
        """The start-up line names the receive mode the worker uses."""
        lines = [ln for ln in self.srv.log().splitlines() if "worker 0: receives" in ln]
        self.assertEqual(len(lines), 1, self.srv.log())
        if self.MODE == "oneshot":
            self.assertIn("one-shot (--recv oneshot)", lines[0])
        else:   # multishot, or one-shot with the kernel's reason
            self.assertTrue("multishot, buffer ring 1024 x 4096 B" in lines[0] or "refused" in lines[0], lines[0])

    def test_pipeline_larger_than_buffers(self):
        """4,000 GETs (~160 KiB, ten times `in`) in one write, padded so
        requests straddle every buffer boundary: 4,000 answers, all 200."""
        reqs = [fc.Conn.build("GET", "/v1/skus/demo", {"X-Pad": "p" * (i * 37 % 1500)}) for i in range(4000)]
        blob = b"".join(reqs)
        self.assertGreater(len(blob), 10 * 16384)
        got = burst(self.srv.port, [blob], [len(reqs)])[0]
        st = answers(got)
        self.assertEqual(len(st), len(reqs))
        self.assertEqual(set(st), {200})

    def test_pipelined_reservations_in_order(self):
        """300 reservations in one write: each waits on the writer while the
        rest keeps arriving (the input fills, receiving stops and resumes).
        Every one is answered 201, in order, each with its own id."""
        keys = ["rk-%d-%s" % (j, uuid.uuid4().hex[:8]) for j in range(300)]
        reqs = [fc.Conn.build("POST", "/v1/skus/%s/reservations" % SKU,
                              {"Authorization": "Bearer " + self.tok, "Idempotency-Key": k,
                               "X-Pad": "q" * 200}, b"") for k in keys]
        with self.srv.conn(timeout=60) as c:
            rs = c.pipeline(reqs)
        self.assertEqual([r.status for r in rs], [201] * len(keys), [r for r in rs if r.status != 201][:3])
        self.assertEqual(len({r.json()["reservation_id"] for r in rs}), len(keys))

    def test_back_pressure(self):
        """8 clients pipeline ~2 MiB each and do not read. Meanwhile 20 other
        clients are served 50 requests each. Then one of the 8 reads: every
        answer to what it sent, all 200 (the parked bytes were neither lost
        nor repeated)."""
        hogs = []
        try:
            fc.never_reading(self.srv.port, 8, hogs)
            blob = GET * 50000
            sent = fc.pipeline_until_stalled(hogs, blob)
            fc.log("hogs: %d KiB pipelined each, at least" % (min(sent) >> 10))
            # the others: answered while the hogs hold their input
            got = burst(self.srv.port, [GET * 50] * 20, [50] * 20, timeout=60)
            for g in got:
                self.assertEqual(answers(g), [200] * 50)
            text = self.metrics()
            fc.log("parked %s, nobufs %s" % (metric(text, "flashsale_io_recv_parked_total"),
                                             metric(text, "flashsale_io_recv_nobufs_total")))
            if self.multishot:
                self.assertGreater(metric(text, "flashsale_io_recv_parked_total"), 0)
            # a hog reads at last: an answer for every request it sent whole
            h = hogs[0]
            h.setblocking(True)
            h.settimeout(60)
            whole = sent[0] // len(GET)
            data = bytearray()
            while data.count(b"HTTP/1.1 ") < whole:
                chunk = h.recv(1 << 20)
                self.assertTrue(chunk, "the hog's connection closed after %d of %d answers" %
                                (data.count(b"HTTP/1.1 "), whole))
                data += chunk
            self.assertEqual(set(answers(bytes(data))), {200})
            self.assertEqual(len(answers(bytes(data))), whole)
        finally:
            for s in hogs:
                s.close()
        with self.srv.conn() as c:
            self.assertEqual(c.request("GET", "/v1/skus/demo").status, 200)

    def test_ring_exhaustion(self):
        """300 connections burst 48 KiB of GETs each at once (14 MiB: many
        times the 4 MiB ring), three rounds: every connection gets all its
        answers, and the server's memory does not grow after the first."""
        per = 48 * 1024 // len(GET)
        rss = []
        for rnd in range(3):
            got = burst(self.srv.port, [GET * per] * 300, [per] * 300, timeout=180)
            for g in got:
                self.assertEqual(answers(g), [200] * per)
            rss.append(rss_kib(self.srv.proc.pid))
            with self.srv.conn() as c:
                self.assertEqual(c.request("GET", "/v1/skus/demo").status, 200)
        text = self.metrics()
        fc.log("rss KiB by round %s; nobufs %s, parked %s" % (rss, metric(text, "flashsale_io_recv_nobufs_total"),
                                                              metric(text, "flashsale_io_recv_parked_total")))
        self.assertLess(rss[2] - rss[0], 8 * 1024, "the server grew by %d KiB" % (rss[2] - rss[0]))
        if self.multishot:   # the ring did run out, and that was survived
            self.assertGreater(metric(text, "flashsale_io_recv_nobufs_total"), 0)


class MultishotTest(RecvBase, unittest.TestCase):
    MODE = "multishot"


class OneshotTest(RecvBase, unittest.TestCase):
    MODE = "oneshot"


if __name__ == "__main__":
    unittest.main(verbosity=2)
