#!/usr/bin/env python3
"""test_api.py - every row and every error answer of API.md over real sockets."""
import base64
import json
import os
import re
import sys
import time
import unittest
import uuid
from datetime import datetime, timezone

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

RES_ID = re.compile(r"^r[0-9a-f]{16}$")
ORDER_ID = re.compile(r"^o[0-9a-f]{16}$")
SKU_FIELDS = {"sku", "state", "total", "available", "reserved", "sold", "version"}


def key():
    return uuid.uuid4().hex


def parse_time(s):
    assert isinstance(s, str) and s.endswith("Z"), s
    s = s[:-1]
    fmt = "%Y-%m-%dT%H:%M:%S.%f" if "." in s else "%Y-%m-%dT%H:%M:%S"
    return datetime.strptime(s, fmt).replace(tzinfo=timezone.utc).timestamp()


class ApiTest(unittest.TestCase):
    srv = None
    seq = 0

    @classmethod
    def setUpClass(cls):
        cls.srv = fc.Server(workers=2)
        try:
            cls.srv.start()
            cls.secret = cls.srv.secret()
        except Exception:
            cls.srv.cleanup()
            raise

    @classmethod
    def tearDownClass(cls):
        if cls.srv:
            cls.srv.cleanup()

    # ---- helpers
    def new_sku(self, stock, per_user=1, hold="120s", waitlist=None, open_=True, extra=()):
        ApiTest.seq += 1
        sku = "api%d-%s" % (ApiTest.seq, uuid.uuid4().hex[:6])
        self.srv.create_sale(sku, stock, per_user=per_user, hold=hold, waitlist=waitlist,
                             open_=open_, extra=extra)
        return sku

    def user(self, name=None):
        ApiTest.seq += 1
        u = name or "u%d-%s" % (ApiTest.seq, uuid.uuid4().hex[:6])
        return fc.mint_token(self.secret, u)

    def counters(self, sku):
        r = self.srv.sku(sku)
        self.assertEqual(r.status, 200, r)
        c = r.json()
        self.assertTrue(fc.conserved(c), "conservation broken: %r" % c)
        return c

    def assert_error(self, r, status, error):
        self.assertEqual(r.status, status, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"), r.headers)
        self.assertEqual(r.json().get("error"), error, r)

    def reserve_ok(self, tok, sku, quantity=None):
        r = self.srv.reserve(tok, sku, key(), quantity)
        self.assertEqual(r.status, 201, r)
        return r.json()

    # ---- GET sku
    def test_get_sku_fields_and_404(self):
        sku = self.new_sku(7)
        r = self.srv.sku(sku)
        self.assertEqual(r.status, 200, r)
        self.assertTrue(r.header("content-type", "").startswith("application/json"))
        c = r.json()
        self.assertTrue(SKU_FIELDS <= set(c), c)
        self.assertEqual(c["sku"], sku)
        self.assertEqual(c["state"], "open")
        self.assertEqual((c["total"], c["available"], c["reserved"], c["sold"]), (7, 7, 0, 0))
        self.assertIsInstance(c["version"], int)
        self.assert_error(self.srv.sku("no-such-sku"), 404, "unknown_sku")
        self.assert_error(self.srv.reserve(self.user(), "no-such-sku", key()), 404, "unknown_sku")

    def test_demo_sku(self):
        c = self.counters("demo")
        self.assertEqual(c["total"], 10000)
        self.assertEqual(c["state"], "open")

    def test_sku_states(self):
        sku = self.new_sku(3, open_=False)
        self.assertEqual(self.counters(sku)["state"], "scheduled")
        for verb, state in (("open", "open"), ("pause", "paused"), ("resume", "open"),
                            ("freeze", "frozen"), ("resume", "open"), ("close", "closed")):
            self.srv.admin_ok("sale", verb, sku)
            self.assertEqual(self.counters(sku)["state"], state, verb)

    # ---- reserve
    def test_reserve_201_fields_and_counters(self):
        sku = self.new_sku(5, hold="120s")
        before = self.counters(sku)
        t0 = time.time()
        r = self.srv.reserve(self.user(), sku, key(), 1)
        self.assertEqual(r.status, 201, r)
        b = r.json()
        self.assertTrue(RES_ID.match(b["reservation_id"]), b)
        self.assertEqual(b["sku"], sku)
        self.assertEqual(b["quantity"], 1)
        self.assertEqual(b["status"], "RESERVED")
        exp = parse_time(b["expires_at"])
        self.assertTrue(t0 + 100 < exp < t0 + 140, (t0, b["expires_at"]))
        after = self.counters(sku)
        self.assertEqual(after["available"], before["available"] - 1)
        self.assertEqual(after["reserved"], before["reserved"] + 1)
        self.assertGreater(after["version"], before["version"])

    def test_reserve_default_quantity_empty_body(self):
        sku = self.new_sku(5)
        r = self.srv.reserve(self.user(), sku, key())   # Content-Length: 0
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["quantity"], 1)
        r = self.srv.reserve(self.user(), sku, key(), body={})
        self.assertEqual(r.status, 201, r)
        self.assertEqual(r.json()["quantity"], 1)
        self.assertEqual(self.counters(sku)["reserved"], 2)

    def test_reserve_quantity_2(self):
        sku = self.new_sku(5, per_user=2)
        b = self.reserve_ok(self.user(), sku, 2)
        self.assertEqual(b["quantity"], 2)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"]), (3, 2))

    def test_idempotent_repeat(self):
        sku = self.new_sku(5, per_user=3)
        tok = self.user()
        k = key()
        r1 = self.srv.reserve(tok, sku, k, 1)
        self.assertEqual(r1.status, 201, r1)
        c1 = self.counters(sku)
        r2 = self.srv.reserve(tok, sku, k, 1)
        self.assertEqual(r2.status, 200, r2)
        self.assertEqual(r2.body, r1.body)
        # also on the same keep-alive connection, twice
        with self.srv.conn() as c:
            for _ in range(2):
                r3 = c.request("POST", "/v1/skus/%s/reservations" % sku,
                               {"Authorization": "Bearer " + tok, "Idempotency-Key": k}, {"quantity": 1})
                self.assertEqual(r3.status, 200, r3)
                self.assertEqual(r3.body, r1.body)
        c2 = self.counters(sku)
        self.assertEqual((c1["available"], c1["reserved"]), (c2["available"], c2["reserved"]))

    def test_same_key_other_user_is_not_the_first_users_answer(self):
        sku = self.new_sku(5)
        k = key()
        r1 = self.srv.reserve(self.user(), sku, k)
        self.assertEqual(r1.status, 201, r1)
        r2 = self.srv.reserve(self.user(), sku, k)
        self.assertNotEqual(r2.body, r1.body, "another user got the first user's reservation")
        if r2.status in (200, 201):
            self.assertNotEqual(r2.json()["reservation_id"], r1.json()["reservation_id"])

    def test_idempotency_key_required(self):
        sku = self.new_sku(5)
        before = self.counters(sku)
        r = self.srv.reserve(self.user(), sku, None, 1)
        self.assert_error(r, 400, "bad_request")
        self.assertEqual(self.counters(sku)["reserved"], before["reserved"])

    def test_sold_out(self):
        sku = self.new_sku(2)
        self.reserve_ok(self.user(), sku)
        self.reserve_ok(self.user(), sku)
        for _ in range(3):
            self.assert_error(self.srv.reserve(self.user(), sku, key()), 409, "sold_out")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 2, 0))

    def test_sold_out_quantity_larger_than_available(self):
        sku = self.new_sku(3, per_user=3)
        self.reserve_ok(self.user(), sku, 2)
        self.assert_error(self.srv.reserve(self.user(), sku, key(), 2), 409, "sold_out")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"]), (1, 2))

    def test_limit_reached(self):
        sku = self.new_sku(10, per_user=1)
        tok = self.user()
        self.reserve_ok(tok, sku)
        self.assert_error(self.srv.reserve(tok, sku, key()), 409, "limit_reached")
        sku2 = self.new_sku(10, per_user=2)
        tok2 = self.user()
        self.reserve_ok(tok2, sku2)
        self.assert_error(self.srv.reserve(tok2, sku2, key(), 2), 409, "limit_reached")
        self.reserve_ok(tok2, sku2)
        self.assert_error(self.srv.reserve(tok2, sku2, key()), 409, "limit_reached")
        self.assertEqual(self.counters(sku)["reserved"], 1)
        self.assertEqual(self.counters(sku2)["reserved"], 2)

    def test_limit_counts_per_user_not_per_token(self):
        sku = self.new_sku(10, per_user=1)
        name = "same-user-" + uuid.uuid4().hex[:6]
        self.reserve_ok(fc.mint_token(self.secret, name, ttl=3600), sku)
        self.assert_error(self.srv.reserve(self.srv.token(name), sku, key()), 409, "limit_reached")

    # ---- authentication
    def test_401(self):
        sku = self.new_sku(5)
        before = self.counters(sku)
        now = int(time.time())
        good = self.user()
        h, c, s = good.split(".")
        bad_tokens = {
            "malformed": "not-a-jwt",
            "two parts": h + "." + c,
            "badly signed": fc.mint_token(b"some other secret", "mallory"),
            "tampered claims": h + "." + fc.b64url(json.dumps({"sub": "admin", "exp": now + 999}).encode()) + "." + s,
            "expired": fc.mint_token(self.secret, "late", exp=now - 30),
            "no exp": self._raw_token({"sub": "noexp"}),
            "no sub": self._raw_token({"exp": now + 3600}),
            "alg none": fc.b64url(b'{"alg":"none","typ":"JWT"}') + "." + c + ".",
            "empty": "",
        }
        for why, tok in bad_tokens.items():
            with self.subTest(why=why):
                r = self.srv.call("POST", "/v1/skus/%s/reservations" % sku, headers={
                    "Authorization": "Bearer " + tok, "Idempotency-Key": key()}, body={"quantity": 1})
                self.assert_error(r, 401, "unauthorized")
        for why, hv in (("missing", None), ("basic", "Basic dXNlcjpwYXNz"), ("bare token", good)):
            with self.subTest(why=why):
                r = self.srv.call("POST", "/v1/skus/%s/reservations" % sku, headers={
                    "Authorization": hv, "Idempotency-Key": key()}, body={"quantity": 1})
                self.assert_error(r, 401, "unauthorized")
        # the other authenticated endpoints
        rid = "r" + "0" * 15 + "1"
        for method, path, body in (("GET", "/v1/reservations/" + rid, None),
                                   ("DELETE", "/v1/reservations/" + rid, None),
                                   ("POST", "/v1/reservations/%s/checkout" % rid, {"payment_token": "tok_ok"}),
                                   ("GET", "/v1/orders/o" + "0" * 15 + "1", None)):
            with self.subTest(path=path, method=method):
                r = self.srv.call(method, path, headers={"Idempotency-Key": key()}, body=body)
                self.assert_error(r, 401, "unauthorized")
        after = self.counters(sku)
        self.assertEqual((before["available"], before["reserved"]), (after["available"], after["reserved"]))

    def _raw_token(self, claims):
        import hashlib
        import hmac
        h = fc.b64url(b'{"alg":"HS256","typ":"JWT"}')
        c = fc.b64url(json.dumps(claims).encode())
        sig = hmac.new(self.secret, (h + "." + c).encode(), hashlib.sha256).digest()
        return h + "." + c + "." + fc.b64url(sig)

    def test_401_token_expires_while_connection_open(self):
        sku = self.new_sku(5, per_user=5)
        tok = self.srv.token("ttl-user-" + uuid.uuid4().hex[:6], ttl="2s")
        claims = json.loads(base64.urlsafe_b64decode(tok.split(".")[1] + "==="))
        self.assertLessEqual(claims["exp"], time.time() + 3, claims)
        with self.srv.conn() as c:
            hdr = {"Authorization": "Bearer " + tok}
            t = time.time()
            r = c.request("POST", "/v1/skus/%s/reservations" % sku, dict(hdr, **{"Idempotency-Key": key()}), {})
            if t < claims["exp"] - 0.5:   # still valid when sent (a slow machine may be past it)
                self.assertEqual(r.status, 201, r)
            while time.time() < claims["exp"] + 1.2:
                time.sleep(0.1)
            # the same connection (a server may cache a verified token per connection)
            r = c.request("POST", "/v1/skus/%s/reservations" % sku, dict(hdr, **{"Idempotency-Key": key()}), {})
            self.assert_error(r, 401, "unauthorized")
        r = self.srv.reserve(tok, sku, key())
        self.assert_error(r, 401, "unauthorized")

    def test_token_from_flashctl_with_tier(self):
        sku = self.new_sku(5)
        r = self.srv.reserve(self.srv.token("tiered-" + uuid.uuid4().hex[:6], tier=2), sku, key())
        self.assertEqual(r.status, 201, r)

    # ---- sale states
    def test_403_sale_not_open_created(self):
        sku = self.new_sku(5, open_=False)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 403, "sale_not_open")
        self.assertEqual(self.counters(sku)["available"], 5)

    def test_403_paused_then_resume(self):
        sku = self.new_sku(5)
        self.srv.admin_ok("sale", "pause", sku)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 403, "sale_not_open")
        self.assertEqual(self.counters(sku)["available"], 5)
        self.srv.admin_ok("sale", "resume", sku)
        self.reserve_ok(self.user(), sku)

    def test_403_closed(self):
        sku = self.new_sku(5)
        self.srv.admin_ok("sale", "close", sku)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 403, "sale_not_open")

    def test_503_frozen_then_resume(self):
        sku = self.new_sku(5)
        self.srv.admin_ok("sale", "freeze", sku)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 503, "frozen")
        self.assertEqual(self.counters(sku)["available"], 5)
        self.srv.admin_ok("sale", "resume", sku)
        self.reserve_ok(self.user(), sku)

    # ---- reservation read / cancel
    def test_get_reservation_owner_and_other_user(self):
        sku = self.new_sku(5)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        r = self.srv.get_res(tok, b["reservation_id"])
        self.assertEqual(r.status, 200, r)
        g = r.json()
        for f in ("reservation_id", "sku", "quantity", "status", "expires_at"):
            self.assertEqual(g[f], b[f], f)
        self.assertNotIn("order_id", g)
        other = self.user()
        self.assertEqual(self.srv.get_res(other, b["reservation_id"]).status, 404)
        self.assertEqual(self.srv.cancel(other, b["reservation_id"]).status, 404)
        self.assertEqual(self.srv.checkout(other, b["reservation_id"], key(), "tok_ok").status, 404)
        self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "RESERVED")
        self.assertEqual(self.counters(sku)["reserved"], 1)
        for bad in ("r" + "f" * 16, "r0000000000000000", "nope", "r123", "o" + b["reservation_id"][1:]):
            with self.subTest(id=bad):
                self.assertEqual(self.srv.get_res(tok, bad).status, 404)
                self.assertEqual(self.srv.cancel(tok, bad).status, 404)
        self.assertEqual(self.srv.call("GET", "/v1/reservations/%s/other" % b["reservation_id"], tok).status, 404)

    def test_cancel_returns_stock_once(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        self.assertEqual(self.counters(sku)["available"], 2)
        r = self.srv.cancel(tok, b["reservation_id"])
        self.assertEqual(r.status, 200, r)
        j = r.json()
        self.assertEqual(j["status"], "CANCELLED")
        self.assertEqual(j["reservation_id"], b["reservation_id"])
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (3, 0, 0))
        r2 = self.srv.cancel(tok, b["reservation_id"])
        self.assertIn(r2.status, (200, 409), r2)
        if r2.status == 409:
            self.assertEqual(r2.json()["error"], "not_cancellable")
        else:
            self.assertEqual(r2.json()["status"], "CANCELLED")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (3, 0, 0))
        self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "CANCELLED")
        # the per-user limit is freed too: the user may reserve again
        self.reserve_ok(tok, sku)
        # checkout of a cancelled reservation is refused and sells nothing
        r3 = self.srv.checkout(tok, b["reservation_id"], key(), "tok_ok")
        self.assertNotEqual(r3.status, 200, r3)
        self.assertEqual(self.counters(sku)["sold"], 0)

    def test_cancel_after_paid_not_cancellable(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_ok")
        self.assertEqual(r.status, 200, r)
        self.assert_error(self.srv.cancel(tok, b["reservation_id"]), 409, "not_cancellable")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (2, 0, 1))

    # ---- checkout
    def test_checkout_ok_and_order(self):
        sku = self.new_sku(4, per_user=2, extra=["--price-cents", "1999"])
        tok = self.user()
        b = self.reserve_ok(tok, sku, 2)
        r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_ok_visa")
        self.assertEqual(r.status, 200, r)
        o = r.json()
        self.assertTrue(ORDER_ID.match(o["order_id"]), o)
        self.assertEqual(o["reservation_id"], b["reservation_id"])
        self.assertEqual(o["status"], "PAID")
        self.assertIsInstance(o["amount"], int)
        self.assertEqual(o["amount"], 2 * 1999)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (2, 0, 2))
        g = self.srv.get_order(tok, o["order_id"])
        self.assertEqual(g.status, 200, g)
        gj = g.json()
        self.assertEqual(gj["order_id"], o["order_id"])
        self.assertEqual(gj["reservation_id"], b["reservation_id"])
        self.assertEqual(gj["sku"], sku)
        self.assertEqual(gj["quantity"], 2)
        self.assertEqual(gj["status"], "PAID")
        self.assertIn("paid_at", gj)
        self.assertLess(abs(parse_time(gj["paid_at"]) - time.time()), 120)
        rs = self.srv.get_res(tok, b["reservation_id"]).json()
        self.assertEqual(rs["status"], "CONFIRMED")
        self.assertEqual(rs.get("order_id"), o["order_id"])
        self.assertEqual(self.srv.get_order(self.user(), o["order_id"]).status, 404)
        self.assertEqual(self.srv.get_order(tok, "o" + "f" * 16).status, 404)
        self.assertEqual(self.srv.get_order(tok, b["reservation_id"]).status, 404)

    def test_checkout_decline_returns_unit(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_decline_x")
        self.assertEqual(r.status, 402, r)
        j = r.json()
        self.assertEqual(j["status"], "FAILED")
        self.assertEqual(j["reason"], "card_declined")
        self.assertTrue(ORDER_ID.match(j["order_id"]), j)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (3, 0, 0))
        g = self.srv.get_order(tok, j["order_id"])
        self.assertEqual(g.status, 200, g)
        self.assertEqual(g.json()["status"], "FAILED")
        self.assertNotEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "RESERVED")
        # the unit is back exactly once: a cancel now changes nothing
        self.srv.cancel(tok, b["reservation_id"])
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (3, 0, 0))

    def test_checkout_invalid_token(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        try:
            r = self.srv.checkout(tok, b["reservation_id"], key(), "visa_4242")
        except (TimeoutError, fc.ConnectionClosed) as e:
            self.fail("checkout with payment_token visa_4242: no answer (%r); expected 402 invalid_token; "
                      "reservation now %r" % (e, self.srv.get_res(tok, b["reservation_id"])))
        self.assertEqual(r.status, 402, r)
        self.assertEqual(r.json()["reason"], "invalid_token")
        self.assertEqual(r.json()["status"], "FAILED")
        self.assertEqual(self.counters(sku)["available"], 3)

    def test_checkout_bad_body(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        path = "/v1/reservations/%s/checkout" % b["reservation_id"]
        for body in (b"", b"{}", b"{", b'{"payment_token":5}', b"[]"):
            with self.subTest(body=body):
                r = self.srv.call("POST", path, tok, key(), body)
                self.assert_error(r, 400, "bad_request")
        self.assert_error(self.srv.call("POST", path, tok, None, {"payment_token": "tok_ok"}), 400, "bad_request")
        self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "RESERVED")
        self.assertEqual(self.counters(sku)["reserved"], 1)

    def test_checkout_slow_300(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        t0 = time.time()
        r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_slow_300")
        dt = time.time() - t0
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "PAID")
        self.assertGreaterEqual(dt, 0.3)
        self.assertEqual(self.counters(sku)["sold"], 1)

    def test_checkout_slow_extends_hold(self):
        sku = self.new_sku(1, hold="1s")
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        t0 = time.time()
        r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_slow_1500")
        self.assertGreaterEqual(time.time() - t0, 1.5)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "PAID")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 0, 1))
        # not resold: another user is refused, and nothing comes back later
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 409, "sold_out")
        time.sleep(1.2)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 0, 1))
        self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "CONFIRMED")

    def test_checkout_while_slow_in_flight_not_resold(self):
        """During a slow charge past the hold, the unit is not handed to someone else."""
        sku = self.new_sku(1, hold="1s")
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        with self.srv.conn() as c:
            c.send_raw(c.build("POST", "/v1/reservations/%s/checkout" % b["reservation_id"],
                               {"Authorization": "Bearer " + tok, "Idempotency-Key": key()},
                               {"payment_token": "tok_slow_2000"}))
            time.sleep(1.4)   # past the original hold
            self.assert_error(self.srv.reserve(self.user(), sku, key()), 409, "sold_out")
            cc = self.counters(sku)
            self.assertEqual(cc["available"], 0, cc)
            r = c.read_response()
        self.assertEqual(r.status, 200, r)
        cc = self.counters(sku)
        self.assertEqual((cc["available"], cc["reserved"], cc["sold"]), (0, 0, 1))

    def test_checkout_after_expiry_410(self):
        sku = self.new_sku(2, hold="1s")
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        self.assertTrue(fc.wait_for(lambda: self.counters(sku)["available"] == 2, timeout=6),
                        "hold of 1 s not given back within 6 s: %r" % self.counters(sku))
        self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "EXPIRED")
        r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_ok")
        self.assert_error(r, 410, "expired")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (2, 0, 0))
        r = self.srv.cancel(tok, b["reservation_id"])
        self.assertIn(r.status, (200, 409), r)
        self.assertEqual(self.counters(sku)["available"], 2)

    def test_hold_expiry_gives_unit_back(self):
        sku = self.new_sku(1, hold="1s")
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 409, "sold_out")
        ok = fc.wait_for(lambda: self.counters(sku)["available"] == 1, timeout=5)
        self.assertTrue(ok, "unit not back 5 s after a 1 s hold: %r" % self.counters(sku))
        self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "EXPIRED")
        # someone else can have it now
        self.reserve_ok(self.user(), sku)

    def test_second_checkout(self):
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        k1 = key()
        r1 = self.srv.checkout(tok, b["reservation_id"], k1, "tok_ok")
        self.assertEqual(r1.status, 200, r1)
        r2 = self.srv.checkout(tok, b["reservation_id"], key(), "tok_ok")
        self.assert_error(r2, 409, "already_checked_out")
        r3 = self.srv.checkout(tok, b["reservation_id"], k1, "tok_ok")
        self.assertEqual(r3.status, 200, r3)
        self.assertEqual(r3.json()["order_id"], r1.json()["order_id"])
        self.assertEqual(r3.body, r1.body)
        self.assertEqual(self.counters(sku)["sold"], 1)

    def test_second_checkout_after_decline(self):
        """A declined reservation gave its unit back: it cannot be paid later."""
        sku = self.new_sku(1)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        k1 = key()
        r1 = self.srv.checkout(tok, b["reservation_id"], k1, "tok_decline")
        self.assertEqual(r1.status, 402, r1)
        other = self.user()
        self.reserve_ok(other, sku)  # the unit went to someone else
        r2 = self.srv.checkout(tok, b["reservation_id"], key(), "tok_ok")
        self.assertNotEqual(r2.status, 200, r2)
        r3 = self.srv.checkout(tok, b["reservation_id"], k1, "tok_ok")
        self.assertEqual(r3.status, 402, r3)
        self.assertEqual(r3.body, r1.body)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 1, 0))

    def test_checkout_same_key_concurrent(self):
        """Two in-flight checkouts with the same key get the same order."""
        sku = self.new_sku(3)
        tok = self.user()
        b = self.reserve_ok(tok, sku)
        k = key()
        req = fc.Conn.build("POST", "/v1/reservations/%s/checkout" % b["reservation_id"],
                            {"Authorization": "Bearer " + tok, "Idempotency-Key": k},
                            {"payment_token": "tok_slow_400"})
        with self.srv.conn() as c1, self.srv.conn() as c2:
            c1.send_raw(req)
            time.sleep(0.1)
            c2.send_raw(req)
            a1, a2 = c1.read_response(), c2.read_response()
        self.assertEqual(a1.status, 200, a1)
        self.assertEqual(a2.status, 200, a2)
        self.assertEqual(a1.json()["order_id"], a2.json()["order_id"])
        self.assertEqual(self.counters(sku)["sold"], 1)

    def test_z_provider_down_and_breaker(self):
        """tok_down: retried, then 402 provider_unavailable (unit back); repeated
        provider failures open a 1 s breaker: checkouts 503 overloaded, nothing changes."""
        sku = self.new_sku(10, per_user=10)
        tok = self.user()
        held = [self.reserve_ok(tok, sku) for _ in range(5)]
        failed, breaker_seen = 0, False
        for b in held[:4]:
            t0 = time.time()
            r = self.srv.checkout(tok, b["reservation_id"], key(), "tok_down")
            if r.status == 503:
                self.assertGreater(failed, 0, "503 before any provider failure: %r" % r)
                self.assert_error(r, 503, "overloaded")
                self.assertEqual(self.srv.get_res(tok, b["reservation_id"]).json()["status"], "RESERVED")
                breaker_seen = True
                break
            self.assertEqual(r.status, 402, r)
            self.assertEqual(r.json()["reason"], "provider_unavailable")
            self.assertEqual(r.json()["status"], "FAILED")
            self.assertGreater(time.time() - t0, 0.05)   # it was retried with a backoff
            failed += 1
        self.assertTrue(breaker_seen, "no 503 overloaded after %d provider_unavailable checkouts in a row" % failed)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (5 + failed, 5 - failed, 0))
        time.sleep(1.5)   # the breaker half-opens after 1 s
        r3 = self.srv.checkout(tok, held[4]["reservation_id"], key(), "tok_ok")
        self.assertEqual(r3.status, 200, r3)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (5 + failed, 4 - failed, 1))

    def test_reservation_statuses_are_documented(self):
        """GET /v1/reservations/{id} only answers the statuses API.md lists."""
        documented = {"WAITLISTED", "RESERVED", "CONFIRMED", "CANCELLED", "EXPIRED"}
        sku = self.new_sku(5, per_user=5)
        tok = self.user()
        seen = {}
        b = self.reserve_ok(tok, sku)
        self.srv.checkout(tok, b["reservation_id"], key(), "tok_decline")
        seen["after a declined payment"] = self.srv.get_res(tok, b["reservation_id"]).json()["status"]
        b = self.reserve_ok(tok, sku)
        with self.srv.conn() as c:
            c.send_raw(c.build("POST", "/v1/reservations/%s/checkout" % b["reservation_id"],
                               {"Authorization": "Bearer " + tok, "Idempotency-Key": key()},
                               {"payment_token": "tok_slow_500"}))
            time.sleep(0.2)
            seen["during a checkout"] = self.srv.get_res(tok, b["reservation_id"]).json()["status"]
            self.assertEqual(c.read_response().status, 200)
        seen["after a paid checkout"] = self.srv.get_res(tok, b["reservation_id"]).json()["status"]
        bad = {k: v for k, v in seen.items() if v not in documented}
        self.assertEqual(bad, {}, "undocumented reservation statuses (API.md lists %s)" % sorted(documented))

    # ---- waitlist
    def test_waitlist(self):
        sku = self.new_sku(1, per_user=1, waitlist=5)
        t1, t2, t3 = self.user(), self.user(), self.user()
        b1 = self.reserve_ok(t1, sku)
        r2 = self.srv.reserve(t2, sku, key())
        self.assertEqual(r2.status, 202, r2)
        w2 = r2.json()
        self.assertEqual(w2["status"], "WAITLISTED")
        self.assertTrue(RES_ID.match(w2["reservation_id"]), w2)
        self.assertEqual(w2["position"], 1)
        r3 = self.srv.reserve(t3, sku, key())
        self.assertEqual(r3.status, 202, r3)
        self.assertEqual(r3.json()["position"], 2)
        self.assertEqual(self.srv.get_res(t2, w2["reservation_id"]).json()["status"], "WAITLISTED")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"]), (0, 1))
        self.assertEqual(self.srv.cancel(t1, b1["reservation_id"]).status, 200)
        ok = fc.wait_for(lambda: self.srv.get_res(t2, w2["reservation_id"]).json()["status"] == "RESERVED", 5)
        self.assertTrue(ok, self.srv.get_res(t2, w2["reservation_id"]))
        self.assertEqual(self.srv.get_res(t3, r3.json()["reservation_id"]).json()["status"], "WAITLISTED")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 1, 0))
        # the promoted reservation can be paid
        r = self.srv.checkout(t2, w2["reservation_id"], key(), "tok_ok")
        self.assertEqual(r.status, 200, r)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 0, 1))

    def test_waitlist_checkout_cancel_stock_add(self):
        sku = self.new_sku(1, per_user=1, waitlist=5)
        t1, t2, t3 = self.user(), self.user(), self.user()
        self.reserve_ok(t1, sku)
        w2 = self.srv.reserve(t2, sku, key()).json()
        w3 = self.srv.reserve(t3, sku, key()).json()
        self.assertEqual((w2["status"], w3["status"]), ("WAITLISTED", "WAITLISTED"))
        # a waitlisted reservation holds no unit: it cannot be paid
        r = self.srv.checkout(t2, w2["reservation_id"], key(), "tok_ok")
        self.assertNotEqual(r.status, 200, r)
        self.assertIn(r.status // 100, (4,), r)
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 1, 0))
        # leaving the waitlist
        r = self.srv.cancel(t2, w2["reservation_id"])
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.json()["status"], "CANCELLED")
        c = self.counters(sku)
        self.assertEqual((c["available"], c["reserved"], c["sold"]), (0, 1, 0))
        # added stock goes to the next waiter (t3), not to the cancelled one
        self.srv.admin_ok("stock", "add", sku, "1")
        ok = fc.wait_for(lambda: self.srv.get_res(t3, w3["reservation_id"]).json()["status"] == "RESERVED", 5)
        self.assertTrue(ok, self.srv.get_res(t3, w3["reservation_id"]))
        self.assertEqual(self.srv.get_res(t2, w2["reservation_id"]).json()["status"], "CANCELLED")
        c = self.counters(sku)
        self.assertEqual((c["total"], c["available"], c["reserved"], c["sold"]), (2, 0, 2, 0))

    def test_waitlist_full_sold_out(self):
        sku = self.new_sku(1, per_user=1, waitlist=1)
        self.reserve_ok(self.user(), sku)
        self.assertEqual(self.srv.reserve(self.user(), sku, key()).status, 202)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 409, "sold_out")

    def test_waitlist_off_sold_out(self):
        sku = self.new_sku(1, per_user=1)
        self.reserve_ok(self.user(), sku)
        self.assert_error(self.srv.reserve(self.user(), sku, key()), 409, "sold_out")

    # ---- health, methods
    def test_health(self):
        for p in ("/healthz", "/readyz"):
            r = self.srv.call("GET", p)
            self.assertEqual(r.status, 200, r)

    def test_405(self):
        tok = self.user()
        cases = (("DELETE", "/v1/skus/demo"), ("POST", "/v1/skus/demo"), ("PUT", "/v1/skus/demo"),
                 ("GET", "/v1/skus/demo/reservations"), ("PUT", "/v1/skus/demo/reservations"),
                 ("PUT", "/v1/reservations/r0000000000000001"),
                 ("GET", "/v1/reservations/r0000000000000001/checkout"),
                 ("POST", "/v1/orders/o0000000000000001"), ("DELETE", "/v1/orders/o0000000000000001"),
                 ("POST", "/healthz"), ("DELETE", "/readyz"))
        before = self.counters("demo")
        for m, p in cases:
            with self.subTest(method=m, path=p):
                r = self.srv.call(m, p, tok, key(), {"quantity": 1} if m in ("POST", "PUT") else None)
                self.assertEqual(r.status, 405, r)
        self.assertEqual(self.counters("demo")["reserved"], before["reserved"])

    def test_404_paths(self):
        for p in ("/", "/v1", "/v1/skus/", "/v2/skus/demo", "/v1/skus/demo/other", "/nothing"):
            with self.subTest(path=p):
                self.assertEqual(self.srv.call("GET", p).status, 404)

    def test_keepalive_and_connection_close(self):
        with self.srv.conn() as c:
            for _ in range(5):
                r = c.request("GET", "/v1/skus/demo")
                self.assertEqual(r.status, 200, r)
            r = c.request("GET", "/v1/skus/demo", close=True)
            self.assertEqual(r.status, 200, r)
            self.assertTrue(c.is_closed_by_peer(5), "server kept the connection after Connection: close")

    def test_http10_closes(self):
        with self.srv.conn() as c:
            c.send_raw(b"GET /healthz HTTP/1.0\r\n\r\n")
            r = c.read_response()
            self.assertEqual(r.status, 200, r)
            self.assertTrue(c.is_closed_by_peer(5))


if __name__ == "__main__":
    unittest.main(verbosity=2)
