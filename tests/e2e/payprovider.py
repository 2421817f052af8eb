#!/usr/bin/env python3
"""payprovider.py - a tiny payment provider speaking flashsaled's HTTP
provider contract (writer/pay/pay_http.c), for tests. python3 stdlib only.

    POST <any path>  Idempotency-Key: o...   {"order_id","amount_cents","currency",
                                              "payment_token","user"}
    200 {"status":"charged"}                      charged now
    402 {"status":"declined","reason":R}          declined (R: card_declined|invalid_token)
    409 {"status":"already_charged"}              this key was charged before
    5xx                                           a provider error (flashsaled retries)

It records every attempt by Idempotency-Key (attempts, the answers given,
whether and how many times the key was charged, the body fields) and keeps
the record in a JSON file (rewritten atomically after each attempt), so a
test can check that attempts repeat but charges never do.

Idempotency as a real provider does it: one lock per key, so an attempt that
arrives while an earlier one with the same key is still being processed
waits for it and then answers 409 (charged) or the same decline.

What an attempt gets, by its payment token (first match wins):
  - a rule set with set_rule(prefix, action, delay_ms) (or POST /_control
    {"token":prefix,"action":...,"delay_ms":N}); actions: ok, decline,
    invalid, fail (500), hang (no answer until the client gives up);
  - the global mode set with set_mode(action, delay_ms) (POST /_control
    {"mode":...}); "normal" turns it off;
  - tok_ok...            charged
  - tok_decline...       402 card_declined
  - tok_slow_<ms>...     charged, the answer sent <ms> later (the charge is
                         made first: a client that gives up or dies in the
                         meantime was charged anyway, and its retry gets 409)
  - tok_fail...          500, always
  - tok_flaky_<n>...     503 for the first <n> attempts of a key, then charged
  - anything else        402 invalid_token

Refunds (flashctl order refund): POST <path>/refund, Idempotency-Key
refund-o..., the charge's body plus "refund":true. Recorded apart (refunds(),
"refunds" in the file): 200 {"status":"refunded"} once per key, 409 for a key
already refunded, 402 {"status":"declined","reason":"not_charged"} for an
order this provider never charged. set_refund_rule(prefix, action, delay_ms)
by payment token: ok, fail (500), or slow (refunded at once, the answer sent
delay_ms later: a client that dies meanwhile was refunded anyway).

In-process:  p = Provider(record_path).start(); p.url; p.keys(); p.stop()
Standalone:  python3 payprovider.py --port 8099 --record /tmp/charges.json
"""
import argparse
import json
import os
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ORDER_ID = re.compile(r"^o[0-9a-f]{16}$")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256


class Provider:
    def __init__(self, record_path=None, port=0, host="127.0.0.1"):
        self.record_path = record_path
        self.host = host
        self.port = port
        self.lock = threading.Lock()
        self.key_locks = {}
        self.records = {}          # key -> record dict
        self.refund_records = {}   # refund key -> record dict
        self.refund_rules = []     # (prefix, action, delay_ms)
        self.rules = []            # (prefix, action, delay_ms)
        self.mode = None           # (action, delay_ms) or None
        self.server = None
        self.thread = None
        self.in_flight = 0
        self.in_flight_max = 0

    # ---------------------------------------------------------- life cycle
    def start(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                provider._handle(self)

        self.server = _Server((self.host, self.port), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                       daemon=True)
        self.thread.start()
        self._save()
        return self

    def stop(self):
        """Stops listening (new connections are refused); in-flight handlers finish."""
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self):
        return "http://%s:%d/charge" % (self.host, self.port)

    # ---------------------------------------------------------- behaviour
    def set_rule(self, prefix, action, delay_ms=0):
        with self.lock:
            self.rules = [r for r in self.rules if r[0] != prefix] + [(prefix, action, delay_ms)]

    def set_mode(self, action, delay_ms=0):
        with self.lock:
            self.mode = None if action in (None, "normal") else (action, delay_ms)

    def set_refund_rule(self, prefix, action, delay_ms=0):
        with self.lock:
            self.refund_rules = [r for r in self.refund_rules if r[0] != prefix] + [(prefix, action, delay_ms)]

    # ---------------------------------------------------------- records
    def refunds(self):
        with self.lock:
            return json.loads(json.dumps(self.refund_records))

    def keys(self):
        with self.lock:
            return json.loads(json.dumps(self.records))

    def attempts(self, key):
        with self.lock:
            r = self.records.get(key)
            return r["attempts"] if r else 0

    def total_attempts(self):
        with self.lock:
            return sum(r["attempts"] for r in self.records.values())

    def _save(self):
        if not self.record_path:
            return
        with self.lock:
            data = json.dumps({"keys": self.records, "refunds": self.refund_records,
                               "in_flight_max": self.in_flight_max},
                              indent=1, sort_keys=True)
        tmp = self.record_path + ".tmp.%d" % threading.get_ident()
        with open(tmp, "w") as f:
            f.write(data)
        os.replace(tmp, self.record_path)

    # ---------------------------------------------------------- one attempt
    def _decide(self, token, attempts):
        """(action, delay_ms) for an attempt with this token."""
        with self.lock:
            for prefix, action, delay in self.rules:
                if token.startswith(prefix):
                    return action, delay
            if self.mode is not None:
                return self.mode
        if token.startswith("tok_ok"):
            return "ok", 0
        if token.startswith("tok_decline"):
            return "decline", 0
        m = re.match(r"tok_slow_(\d+)", token)
        if m:
            return "ok", int(m.group(1))
        if token.startswith("tok_fail"):
            return "fail", 0
        m = re.match(r"tok_flaky_(\d+)", token)
        if m:
            return ("unavailable" if attempts <= int(m.group(1)) else "ok"), 0
        return "invalid", 0

    def _handle(self, h):
        try:
            n = int(h.headers.get("Content-Length", "0"))
            raw = h.rfile.read(n) if n > 0 else b""
        except (OSError, ValueError):
            h.close_connection = True
            return
        if h.path == "/_control":
            return self._control(h, raw)
        key = h.headers.get("Idempotency-Key", "")
        try:
            body = json.loads(raw.decode("utf-8"))
            assert isinstance(body, dict)
        except (ValueError, AssertionError):
            return self._answer(h, 400, {"error": "bad_json"})
        if not key:
            return self._answer(h, 400, {"error": "idempotency_key_required"})
        with self.lock:
            klock = self.key_locks.setdefault(key, threading.Lock())
            self.in_flight += 1
            self.in_flight_max = max(self.in_flight_max, self.in_flight)
        refund = h.path.endswith("/refund")
        try:
            with klock:   # attempts with one key are processed one at a time
                if refund:
                    status, answer, delay = self._refund(key, body)
                else:
                    status, answer, delay = self._attempt(key, body, h)
            self._save()
            if delay:
                time.sleep(delay / 1000.0)
            if status is None:      # hang: never answer, the client gives up
                time.sleep(30)
                h.close_connection = True
                return
            self._answer(h, status, answer)
        finally:
            with self.lock:
                self.in_flight -= 1

    def _attempt(self, key, body, h):
        token = str(body.get("payment_token", ""))
        with self.lock:
            r = self.records.setdefault(key, {
                "order_id": body.get("order_id"), "amount_cents": body.get("amount_cents"),
                "currency": body.get("currency"), "user": body.get("user"), "token": token,
                "content_type": h.headers.get("Content-Type"), "path": h.path,
                "attempts": 0, "charged": 0, "answers": [], "first_at": time.time()})
            r["attempts"] += 1
            attempts = r["attempts"]
            if r["charged"]:
                r["answers"].append(409)
                return 409, {"status": "already_charged"}, 0
            declined = r.get("declined")
        if declined:
            with self.lock:
                r["answers"].append(402)
            return 402, {"status": "declined", "reason": declined}, 0
        action, delay = self._decide(token, attempts)
        status, answer = {
            "ok": (200, {"status": "charged"}),
            "decline": (402, {"status": "declined", "reason": "card_declined"}),
            "invalid": (402, {"status": "declined", "reason": "invalid_token"}),
            "fail": (500, {"error": "internal"}),
            "unavailable": (503, {"error": "unavailable"}),
            "hang": (None, None),
        }[action]
        with self.lock:
            if status == 200:
                r["charged"] += 1
                r["charged_at"] = time.time()
            if status == 402:
                r["declined"] = answer["reason"]
            r["answers"].append(status if status is not None else "hang")
        return status, answer, delay

    def _refund(self, key, body):
        token = str(body.get("payment_token", ""))
        oid = body.get("order_id")
        with self.lock:
            r = self.refund_records.setdefault(key, {
                "order_id": oid, "amount_cents": body.get("amount_cents"), "refund": body.get("refund"),
                "attempts": 0, "refunded": 0, "answers": []})
            r["attempts"] += 1
            if r["refunded"]:
                r["answers"].append(409)
                return 409, {"status": "already_refunded"}, 0
            charged = self.records.get(oid, {}).get("charged", 0)
            action, delay = "ok", 0
            for prefix, a, d in self.refund_rules:
                if token.startswith(prefix):
                    action, delay = a, d
                    break
            if action == "fail":
                r["answers"].append(500)
                return 500, {"error": "internal"}, 0
            if not charged:
                r["answers"].append(402)
                return 402, {"status": "declined", "reason": "not_charged"}, 0
            r["refunded"] += 1
            r["refunded_at"] = time.time()
            r["answers"].append(200)
        return 200, {"status": "refunded"}, delay if action == "slow" else 0

    def _control(self, h, raw):
        try:
            c = json.loads(raw.decode("utf-8") or "{}")
            if "mode" in c:
                self.set_mode(c["mode"], int(c.get("delay_ms", 0)))
            if "token" in c:
                self.set_rule(c["token"], c["action"], int(c.get("delay_ms", 0)))
        except (ValueError, KeyError, TypeError) as e:
            return self._answer(h, 400, {"error": str(e)})
        return self._answer(h, 200, {"ok": True})

    @staticmethod
    def _answer(h, status, obj):
        data = json.dumps(obj).encode()
        try:
            h.send_response(status)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            h.wfile.write(data)
            h.wfile.flush()
        except OSError:
            h.close_connection = True   # the client went away (timed out, or killed)


def check_never_charged_twice(records):
    """Problems (strings) with a record: a key that is not an order id, a key
    charged more than once, an order id charged under two keys."""
    problems = []
    by_order = {}
    for key, r in records.items():
        if not ORDER_ID.match(key):
            problems.append("key %r is not an order id" % key)
        if r.get("order_id") != key:
            problems.append("key %r carries order_id %r" % (key, r.get("order_id")))
        if r.get("charged", 0) > 1:
            problems.append("key %r charged %d times" % (key, r["charged"]))
        if r.get("charged"):
            by_order.setdefault(r.get("order_id"), []).append(key)
    for oid, keys in by_order.items():
        if len(keys) > 1:
            problems.append("order %s charged under keys %r" % (oid, keys))
    return problems


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8099)
    ap.add_argument("--record", default="charges.json", help="JSON file of every attempt by key")
    ap.add_argument("--mode", default="normal", help="ok|decline|invalid|fail|hang|normal")
    ap.add_argument("--delay-ms", type=int, default=0, help="with --mode: answer this much later")
    a = ap.parse_args()
    p = Provider(a.record, a.port, a.host).start()
    p.set_mode(a.mode, a.delay_ms)
    print("payprovider: %s (record %s)" % (p.url, a.record), flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        p.stop()


if __name__ == "__main__":
    main()
