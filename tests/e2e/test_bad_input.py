#!/usr/bin/env python3
"""test_bad_input.py - bad bytes get a clear error and change nothing; the
server never crashes and keeps answering. After every test: /healthz answers,
the process lives, and the SKU counters are what the test expects."""
import os
import random
import socket
import struct
import sys
import time
import unittest
import uuid

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SKU = "bad"
REQUEST_TIMEOUT_S = 1.0


def key():
    return uuid.uuid4().hex


def rst_close(sock):
    """Closes with a RST (SO_LINGER 0): the peer vanishes."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    sock.close()


class BadInputTest(unittest.TestCase):
    srv = None

    @classmethod
    def setUpClass(cls):
        cls.srv = fc.Server(workers=1, extra=["--request-timeout-ms", str(int(REQUEST_TIMEOUT_S * 1000))])
        try:
            cls.srv.start()
            cls.srv.create_sale(SKU, 100, per_user=5)
            cls.secret = cls.srv.secret()
            cls.tok = fc.mint_token(cls.secret, "bad-input-user")
        except Exception:
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            cls.srv.cleanup()

    def setUp(self):
        self.before = self.counters()
        self.expect_reserved_delta = 0

    def tearDown(self):
        self.assertTrue(self.srv.alive(), "flashsaled died:\n" + self.srv.log())
        r = self.srv.call("GET", "/healthz")
        self.assertEqual(r.status, 200, r)
        after = self.counters()
        self.assertEqual(after["total"], self.before["total"])
        self.assertEqual(after["sold"], self.before["sold"])
        self.assertEqual(after["reserved"], self.before["reserved"] + self.expect_reserved_delta,
                         "counters changed: %r -> %r" % (self.before, after))

    def counters(self):
        c = self.srv.counters(SKU)
        self.assertTrue(fc.conserved(c), c)
        return c

    def path(self):
        return "/v1/skus/%s/reservations" % SKU

    def post_raw_body(self, body, extra_headers=None):
        h = {"Authorization": "Bearer " + self.tok, "Idempotency-Key": key()}
        h.update(extra_headers or {})
        with self.srv.conn() as c:
            return c.request("POST", self.path(), h, body)

    def assert_bad_request(self, r):
        self.assertEqual(r.status, 400, r)
        j = r.json()
        self.assertEqual(j.get("error"), "bad_request", j)
        self.assertIn("detail", j, j)

    def raw_exchange(self, data, timeout=5.0):
        """Sends bytes and returns everything the server answers until it closes
        or goes quiet for `timeout`."""
        with self.srv.conn(timeout=timeout) as c:
            try:
                c.send_raw(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            out = b""
            try:
                out = c.read_until_close(timeout)
            except socket.timeout:
                out = c.buf
            except ConnectionResetError:
                pass
            return out

    def first_status(self, raw):
        self.assertTrue(raw.startswith(b"HTTP/1.1 "), raw[:200])
        return int(raw[9:12])

    # ---- JSON bodies
    def test_malformed_json(self):
        for body in (b"{", b"}", b"not json", b'{"quantity":}', b'{"quantity":1', b'{"quantity" 1}',
                     b"[1]", b'"quantity"', b"null", b'{"quantity":1}x', b'{"quantity":1,}',
                     b"\x00\x01\x02", b'{"quantity":1}\x00', b"\xff\xfe{}", b'{"q\xffuantity":1}',
                     b'{"quantity":1,"quantity":2}'):
            with self.subTest(body=body):
                r = self.post_raw_body(body)
                if body == b'{"quantity":1,"quantity":2}' and r.status == 201:
                    self.fail("duplicate key accepted: %r" % r)
                self.assert_bad_request(r)

    def test_bad_quantity(self):
        for q in (b"0", b"-1", b'"1"', b"1.5", b"1e0", b"99999999999999999999", b"4294967297",
                  b"1000000", b"true", b"null", b"[1]", b"{}", b"01", b"+1", b"0x1", b"-0"):
            with self.subTest(quantity=q):
                r = self.post_raw_body(b'{"quantity":' + q + b"}")
                self.assert_bad_request(r)

    def test_bad_idempotency_key(self):
        r = self.post_raw_body(b'{"quantity":1}', {"Idempotency-Key": "k" * 65})
        self.assert_bad_request(r)

    # ---- framing limits
    def test_oversize_body_413_header_only(self):
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s\r\n"
               "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n" % (self.path(), self.tok, key()))
        raw = self.raw_exchange(req.encode(), timeout=5)
        self.assertEqual(self.first_status(raw), 413, raw[:300])

    def test_oversize_body_413_with_body(self):
        body = b'{"quantity":1,"pad":"' + b"a" * 5000 + b'"}'
        req = fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + self.tok,
                                                  "Idempotency-Key": key()}, body)
        raw = self.raw_exchange(req, timeout=5)
        self.assertEqual(self.first_status(raw), 413, raw[:300])

    def test_body_just_under_limit_ok(self):
        pad = 4000 - len(b'{"quantity":1,"pad":""}')
        body = b'{"quantity":1,"pad":"' + b"a" * pad + b'"}'
        r = self.post_raw_body(body)
        self.assertIn(r.status, (201, 400), r)   # unknown keys may be ignored or refused
        if r.status == 201:
            self.expect_reserved_delta = 1

    def test_oversize_headers_431(self):
        req = ("GET /v1/skus/%s HTTP/1.1\r\nHost: x\r\nX-Big: %s\r\n\r\n" % (SKU, "a" * 10000)).encode()
        raw = self.raw_exchange(req)
        self.assertEqual(self.first_status(raw), 431, raw[:300])

    def test_too_many_headers_431(self):
        req = "GET /v1/skus/%s HTTP/1.1\r\nHost: x\r\n" % SKU
        req += "".join("X-H%d: v\r\n" % i for i in range(200))
        raw = self.raw_exchange((req + "\r\n").encode())
        self.assertEqual(self.first_status(raw), 431, raw[:300])

    def test_oversize_headers_in_pieces_431(self):
        """The limit holds when headers trickle in (no unbounded buffering)."""
        with self.srv.conn(timeout=5) as c:
            c.send_raw("GET /v1/skus/%s HTTP/1.1\r\nHost: x\r\n" % SKU)
            status = None
            try:
                for i in range(40):
                    c.send_raw("X-Pad-%d: %s\r\n" % (i, "b" * 500))
                c.send_raw("\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            try:
                status = c.read_response().status
            except (fc.ConnectionClosed, ConnectionResetError):
                pass
        self.assertEqual(status, 431)

    def test_long_request_line(self):
        raw = self.raw_exchange(("GET /v1/skus/%s HTTP/1.1\r\nHost: x\r\n\r\n" % ("a" * 5000)).encode())
        self.assertIn(self.first_status(raw), (400, 404, 414, 431), raw[:300])

    def test_chunked_body(self):
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
               "e\r\n{\"quantity\":1}\r\n0\r\n\r\n" % (self.path(), self.tok, key()))
        raw = self.raw_exchange(req.encode())
        self.assertIn(self.first_status(raw), (400, 501), raw[:300])

    def test_chunked_and_content_length(self):
        req = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s\r\n"
               "Content-Length: 14\r\nTransfer-Encoding: chunked\r\n\r\n"
               "e\r\n{\"quantity\":1}\r\n0\r\n\r\n" % (self.path(), self.tok, key()))
        raw = self.raw_exchange(req.encode())
        self.assertIn(self.first_status(raw), (400, 501), raw[:300])

    def test_duplicate_content_length_and_auth(self):
        for extra in ("Content-Length: 14\r\nContent-Length: 15\r\n",
                      "Content-Length: 14\r\nAuthorization: Bearer x\r\n",
                      "Content-Length: 14\r\nIdempotency-Key: other\r\n",
                      "Content-Length: abc\r\n", "Content-Length: -1\r\n",
                      "Content-Length : 14\r\n"):
            with self.subTest(extra=extra):
                req = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s\r\n"
                       "%s\r\n{\"quantity\":1}" % (self.path(), self.tok, key(), extra))
                raw = self.raw_exchange(req.encode())
                self.assertEqual(self.first_status(raw), 400, raw[:300])

    def test_garbage_bytes(self):
        rng = random.Random(1234)
        blobs = [b"\x00" * 100, b"\r\n\r\n", b"GET\r\n\r\n", b"HELLO WORLD\r\n\r\n",
                 b"GET / HTTP/9.9\r\n\r\n", b"GET /\x00/ HTTP/1.1\r\n\r\n",
                 b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(rng.randrange(256) for _ in range(300)),
                 b"GET /v1/skus/bad HTTP/1.1\r\nHost x\r\n\r\n",
                 b"GET /v1/skus/bad HTTP/1.1\r\n Folded: x\r\n\r\n"]
        blobs += [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 3000))) + b"\r\n\r\n" for _ in range(20)]
        for i, blob in enumerate(blobs):
            with self.subTest(i=i, head=blob[:30]):
                raw = self.raw_exchange(blob, timeout=REQUEST_TIMEOUT_S + 4)
                if raw:
                    self.assertTrue(raw.startswith(b"HTTP/1.1 4") or raw.startswith(b"HTTP/1.1 5"), raw[:200])
                    self.assertFalse(raw.startswith(b"HTTP/1.1 500"), raw[:200])
                self.assertEqual(self.srv.call("GET", "/healthz").status, 200)

    def test_unknown_method(self):
        for m in ("FOO", "PATCH", "OPTIONS", "TRACE", "CONNECT"):
            with self.subTest(method=m):
                raw = self.raw_exchange(("%s /v1/skus/%s HTTP/1.1\r\nHost: x\r\n\r\n" % (m, SKU)).encode())
                if raw:
                    self.assertIn(self.first_status(raw), (400, 405, 501), raw[:200])

    # ---- connections that misbehave
    def test_half_request_then_close(self):
        for part in (b"GET /v1/skus/bad HT", b"POST /v1/skus/bad/reservations HTTP/1.1\r\nContent-Length: 14\r\n",
                     fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + self.tok,
                                                         "Idempotency-Key": key()}, b'{"quantity":1}')[:-5]):
            with self.subTest(part=part[:40]):
                c = fc.Conn(self.srv.port)
                c.send_raw(part)
                c.close()
                time.sleep(0.05)
                self.assertEqual(self.srv.call("GET", "/healthz").status, 200)

    def test_vanish_mid_request_rst(self):
        for i in range(20):
            c = fc.Conn(self.srv.port)
            req = fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + self.tok,
                                                      "Idempotency-Key": key()}, b'{"quantity":1}')
            c.send_raw(req[: len(req) * (i + 1) // 22])
            rst_close(c.sock)
        time.sleep(0.1)
        self.assertEqual(self.srv.call("GET", "/healthz").status, 200)

    def test_vanish_before_reading_answer(self):
        """A client that sends a whole request and leaves: the server survives,
        and the decision (if made) is durable and visible with the same key."""
        tok = fc.mint_token(self.secret, "vanisher-" + key()[:6])
        k = key()
        c = fc.Conn(self.srv.port)
        c.send_raw(fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + tok, "Idempotency-Key": k},
                                 {"quantity": 1}))
        rst_close(c.sock)
        time.sleep(0.2)
        r = self.srv.reserve(tok, SKU, k, 1)
        self.assertIn(r.status, (200, 201), r)
        self.expect_reserved_delta = 1
        r2 = self.srv.reserve(tok, SKU, k, 1)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.body, r.body)

    def test_pipelined_in_order(self):
        tok = fc.mint_token(self.secret, "pipeliner-" + key()[:6])
        k = key()
        reqs = [fc.Conn.build("GET", "/healthz"),
                fc.Conn.build("GET", "/v1/skus/" + SKU),
                fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + tok, "Idempotency-Key": k},
                              {"quantity": 1}),
                fc.Conn.build("GET", "/v1/skus/nope"),
                fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + tok, "Idempotency-Key": k},
                              {"quantity": 1}),
                fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + tok, "Idempotency-Key": key()},
                              {"quantity": 0}),
                fc.Conn.build("GET", "/v1/skus/" + SKU),
                fc.Conn.build("DELETE", "/v1/skus/" + SKU),
                fc.Conn.build("GET", "/readyz")]
        with self.srv.conn() as c:
            rs = c.pipeline(reqs)
            self.assertEqual([r.status for r in rs], [200, 200, 201, 404, 200, 400, 200, 405, 200], rs)
            self.assertEqual(rs[1].json()["sku"], SKU)
            self.assertEqual(rs[3].json()["error"], "unknown_sku")
            self.assertEqual(rs[4].body, rs[2].body)
            self.assertEqual(rs[6].json()["reserved"], rs[1].json()["reserved"] + 1)
            # the connection still works afterwards
            self.assertEqual(c.request("GET", "/healthz").status, 200)
        self.expect_reserved_delta = 1

    def test_head_has_no_body(self):
        """HEAD answers carry headers only (RFC 9110 9.3.2): a body would be read
        as the next pipelined answer."""
        with self.srv.conn() as c:
            c.send_raw(fc.Conn.build("HEAD", "/v1/skus/" + SKU) + fc.Conn.build("GET", "/healthz"))
            h = c.read_response(head_request=True)
            self.assertEqual(h.status, 200, h)
            self.assertTrue(int(h.header("content-length", "0")) > 0, h.headers)
            try:
                nxt = c.read_response()
            except ValueError as e:
                self.fail("HEAD answer carried a body: the next answer starts with %r (%s)" % (c.buf[:60], e))
            self.assertEqual(nxt.status, 200, nxt)
            self.assertEqual(nxt.json(), {"ok": True})

    def test_query_string_ignored(self):
        r = self.srv.call("GET", "/v1/skus/%s?x=1&y" % SKU)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["sku"], SKU)

    def test_pipelined_many_gets(self):
        n = 200
        reqs = [fc.Conn.build("GET", "/v1/skus/%s" % (SKU if i % 3 else "nope%d" % i)) for i in range(n)]
        with self.srv.conn() as c:
            rs = c.pipeline(reqs)
        self.assertEqual([r.status for r in rs], [200 if i % 3 else 404 for i in range(n)])

    def test_pipelined_byte_by_byte(self):
        reqs = b"".join([fc.Conn.build("GET", "/v1/skus/" + SKU), fc.Conn.build("GET", "/healthz")])
        with self.srv.conn() as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for i in range(len(reqs)):
                c.send_raw(reqs[i:i + 1])
                if i % 16 == 0:
                    time.sleep(0.002)
            a, b = c.read_response(), c.read_response()
        self.assertEqual((a.status, b.status), (200, 200))
        self.assertEqual(a.json()["sku"], SKU)

    def test_pipelined_close_in_middle(self):
        reqs = [fc.Conn.build("GET", "/healthz"), fc.Conn.build("GET", "/v1/skus/" + SKU, close=True),
                fc.Conn.build("GET", "/readyz")]
        with self.srv.conn() as c:
            c.send_raw(b"".join(reqs))
            a, b = c.read_response(), c.read_response()
            self.assertEqual((a.status, b.status), (200, 200))
            rest = c.read_until_close(5)
        self.assertEqual(rest, b"", "answered past Connection: close: %r" % rest[:200])

    def test_pipelined_after_bad_request(self):
        """An answered 400 (bad JSON) leaves the connection usable for the next request."""
        reqs = [fc.Conn.build("POST", self.path(), {"Authorization": "Bearer " + self.tok,
                                                    "Idempotency-Key": key()}, b"{oops"),
                fc.Conn.build("GET", "/v1/skus/" + SKU)]
        with self.srv.conn() as c:
            c.send_raw(b"".join(reqs))
            a = c.read_response()
            self.assert_bad_request(a)
            if a.header("connection", "").lower() != "close":
                self.assertEqual(c.read_response().status, 200)

    def test_slowloris(self):
        """A request that never completes: 408 or close within the request timeout."""
        with self.srv.conn(timeout=2) as c:
            t0 = time.time()
            c.send_raw(b"GET /v1/skus/bad HTTP/1.1\r\nHost: x\r\n")
            closed_at = None
            got = b""
            i = 0
            while time.time() - t0 < REQUEST_TIMEOUT_S + 6:
                try:
                    c.sock.settimeout(0.2)
                    chunk = c.sock.recv(4096)
                    if not chunk:
                        closed_at = time.time()
                        break
                    got += chunk
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed_at = time.time()
                    break
                try:
                    c.send_raw(b"X-Drip-%d: a\r\n" % i)
                    i += 1
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.time()
                    break
        self.assertIsNotNone(closed_at, "slowloris connection still open after %.1f s (got %r)"
                             % (time.time() - t0, got[:200]))
        if got:
            self.assertTrue(got.startswith(b"HTTP/1.1 408"), got[:200])
        self.assertLess(closed_at - t0, REQUEST_TIMEOUT_S + 5)

    def test_slowloris_body(self):
        """Headers whole, body never finishes: 408 or close."""
        with self.srv.conn(timeout=REQUEST_TIMEOUT_S + 6) as c:
            t0 = time.time()
            c.send_raw("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\nIdempotency-Key: %s\r\n"
                       "Content-Length: 14\r\n\r\n{\"q" % (self.path(), self.tok, key()))
            try:
                raw = c.read_until_close(REQUEST_TIMEOUT_S + 6)
            except socket.timeout:
                self.fail("connection with an unfinished body still open after %.1f s" % (time.time() - t0))
        if raw:
            self.assertTrue(raw.startswith(b"HTTP/1.1 408"), raw[:200])
        self.assertLess(time.time() - t0, REQUEST_TIMEOUT_S + 5)

    def test_idle_keepalive_connection_is_fine(self):
        """An idle keep-alive connection (no partial request) is not cut by the request timeout."""
        with self.srv.conn() as c:
            self.assertEqual(c.request("GET", "/healthz").status, 200)
            time.sleep(REQUEST_TIMEOUT_S + 0.5)
            self.assertEqual(c.request("GET", "/healthz").status, 200)

    def test_many_connections_opened_and_dropped(self):
        socks = []
        try:
            for _ in range(200):
                socks.append(socket.create_connection(("127.0.0.1", self.srv.port), timeout=5))
        finally:
            for s in socks:
                rst_close(s)
        time.sleep(0.1)
        self.assertEqual(self.srv.call("GET", "/healthz").status, 200)


if __name__ == "__main__":
    unittest.main(verbosity=2)
