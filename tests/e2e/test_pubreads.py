#!/usr/bin/env python3
"""test_pubreads.py - reservation and order reads are answered by the workers
from the writer's published state, never by the writer, and every read shows
a durable state.

A storm of reservations, cancels, checkouts and short holds that expire
(promoting waitlisted entries) runs on a 2-worker server while reader
threads read every known reservation and order, by its owner (200) and by
another user (404). Afterwards:
  - /metrics: the writer decided no read (flashsale_decisions_total has no
    res_get/order_get beyond the reads that gave up on a publishing writer,
    flashsale_published_reads_busy_total);
  - the journal (flashsale-journal dump): every read's status and expires_at
    is a state that reservation had after some durable batch, and one reader
    never sees a reservation's history go backwards; every order read is a
    state its order had.
FS_SEED picks the workload's seed (printed).
"""
import datetime
import os
import random
import re
import subprocess
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

USERS = 48
STOCK = 12
STORM_S = 6.0
JOURNAL = os.path.join(fc.BUILD, "tools", "flashsale-journal")
# enum fs_res_status -> the public status (PAYING reads RESERVED)
RES_STATUS = {1: "WAITLISTED", 2: "RESERVED", 3: "RESERVED", 4: "CONFIRMED", 5: "CANCELLED", 6: "EXPIRED",
              7: "CANCELLED", 8: "QUEUED", 9: "REJECTED"}
ORDER_OF_RES = {3: "PENDING", 4: "PAID", 7: "FAILED"}


def ms_of(ts):
    d = datetime.datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc)
    return int(round(d.timestamp() * 1000))


def journal_histories(data_dir):
    """{res_no: [(status name, expires_ms or 0), ...]} and {order_no: [(status, paid), ...]}
    after each durable record, from the journal."""
    out = subprocess.run([JOURNAL, "dump", data_dir], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    res, orders, order_res = {}, {}, {}
    expires = {}
    rec = re.compile(r"^\s+(\w+)\s+err=(\w+)\s.*?ref=(\d+) out_ref=(\d+) status=(\d+) val=(-?\d+)")
    for line in out.stdout.splitlines():
        m = rec.match(line)
        if not m or m.group(2) != "ok":
            continue
        kind, ref, out_ref, status, val = m.group(1), int(m.group(3)), int(m.group(4)), int(m.group(5)), \
            int(m.group(6))
        if kind == "reserve":
            r = out_ref
            expires[r] = val
        elif kind in ("promote", "admit"):
            r = ref
            expires[r] = val if val else expires.get(r, 0)
        elif kind in ("cancel", "expire", "checkout"):
            r = ref
            if kind == "checkout":
                order_res[out_ref] = r
                orders.setdefault(out_ref, []).append("PENDING")
        elif kind == "pay_result":
            r = order_res[ref]
            orders[ref].append(ORDER_OF_RES.get(status, "?"))
        else:
            continue
        res.setdefault(r, []).append((RES_STATUS[status], expires.get(r, 0)))
    return res, orders


class PubReadsTest(unittest.TestCase):
    def test_reads_during_a_storm_are_durable_states(self):
        seed = int(os.environ.get("FS_SEED", random.randrange(1 << 30)))
        print("test_pubreads: FS_SEED=%d" % seed, file=sys.stderr)
        srv = fc.Server(workers=2, demo=False)
        srv.start()
        try:
            self.storm(srv, seed)
        finally:
            srv.stop()
            srv.cleanup()

    def storm(self, srv, seed):
        srv.create_sale("peak", STOCK, per_user=1, hold="2s", waitlist=USERS)
        secret = srv.secret()
        tokens = [fc.mint_token(secret, "u%d" % i, tier=0) for i in range(USERS)]
        known = {}            # res id -> user index
        orders = {}           # order id -> user index
        lock = threading.Lock()
        stop = threading.Event()
        reads = []            # (reader, "r"/"o", id, status, expires_ms or 0)
        errors = []

        def writer_thread(idx):
            rnd = random.Random(seed * 31 + idx)
            c = fc.Conn(srv.port, timeout=30)
            try:
                mine = [u for u in range(USERS) if u % 4 == idx]
                for u in mine:
                    h = {"Authorization": "Bearer " + tokens[u], "Idempotency-Key": "k%d" % u}
                    r = c.request("POST", "/v1/skus/peak/reservations", h, {"quantity": 1})
                    if r.status in (201, 202):
                        with lock:
                            known[r.json()["reservation_id"]] = u
                    elif r.status != 409:
                        errors.append("reserve u%d: %r" % (u, r))
                while not stop.is_set():
                    with lock:
                        own = [(rid, u) for rid, u in known.items() if u in mine]
                    if not own:
                        time.sleep(0.05)
                        continue
                    rid, u = rnd.choice(own)
                    h = {"Authorization": "Bearer " + tokens[u]}
                    if rnd.random() < 0.3:
                        r = c.request("POST", "/v1/reservations/%s/checkout" % rid,
                                      dict(h, **{"Idempotency-Key": "c" + rid}),
                                      {"payment_token": rnd.choice(["tok_ok", "tok_decline", "tok_slow_300"])})
                        if r.status in (200, 402) and "order_id" in r.json():
                            with lock:
                                orders[r.json()["order_id"]] = u
                    elif rnd.random() < 0.2:
                        c.request("DELETE", "/v1/reservations/" + rid, h)
                    time.sleep(rnd.random() * 0.1)
            finally:
                c.close()

        def reader_thread(idx):
            rnd = random.Random(seed * 17 + idx)
            c = fc.Conn(srv.port, timeout=30)
            try:
                while not stop.is_set():
                    with lock:
                        items = [("r", k, u) for k, u in known.items()] + [("o", k, u) for k, u in orders.items()]
                    if not items:
                        time.sleep(0.01)
                        continue
                    kind, ident, u = rnd.choice(items)
                    path = ("/v1/reservations/" if kind == "r" else "/v1/orders/") + ident
                    r = c.request("GET", path, {"Authorization": "Bearer " + tokens[u]})
                    if r.status != 200:
                        errors.append("owner read %s: %r" % (path, r))
                        continue
                    b = r.json()
                    if kind == "r":
                        exp = ms_of(b["expires_at"]) if "expires_at" in b else 0
                        reads.append((idx, kind, ident, b["status"], exp))
                    else:
                        reads.append((idx, kind, ident, b["status"], 0))
                    other = tokens[(u + 1 + rnd.randrange(USERS - 1)) % USERS]
                    r = c.request("GET", path, {"Authorization": "Bearer " + other})
                    if r.status != 404 or r.json() != {"error": "not_found"}:
                        errors.append("another user's read %s: %r" % (path, r))
            finally:
                c.close()

        threads = [threading.Thread(target=writer_thread, args=(i,)) for i in range(4)]
        threads += [threading.Thread(target=reader_thread, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        time.sleep(STORM_S)
        stop.set()
        for t in threads:
            t.join(60)
        self.assertFalse(any(t.is_alive() for t in threads), "storm threads hung")
        self.assertEqual(errors, [], "seed %d" % seed)
        self.assertGreater(len(reads), 200, "the readers read too little to prove anything")

        metrics = srv.admin_ok("metrics")
        busy = int(re.search(r"^flashsale_published_reads_busy_total (\d+)", metrics, re.M).group(1))
        by_writer = sum(int(v) for v in re.findall(
            r'^flashsale_decisions_total\{command="(?:res_get|order_get)",outcome="\w+"\} (\d+)', metrics, re.M))
        # a fallback is counted when the read gives up, its decision after the
        # writer answered it: never more decisions than fallbacks
        self.assertLessEqual(by_writer, busy, "reads reached the writer beyond the busy fallbacks")
        print("test_pubreads: %d reads, %d reservations, %d orders, %d sent to the writer (busy)" %
              (len(reads), len(known), len(orders), busy), file=sys.stderr)

        res_hist, order_hist = journal_histories(srv.data_dir)
        pos = {}
        statuses = set()
        for reader, kind, ident, status, exp in reads:
            no = int(ident[1:], 16)
            if kind == "o":
                self.assertIn(status, order_hist.get(no, []), "seed %d: order %s read %s, never durable" %
                              (seed, ident, status))
                continue
            hist = res_hist.get(no, [])
            start = pos.get((reader, no), 0)
            at = next((i for i in range(start, len(hist)) if hist[i] == (status, exp)), None)
            self.assertIsNotNone(at, "seed %d: reservation %s read (%s, %d) after position %d of its durable "
                                 "history %r" % (seed, ident, status, exp, start, hist))
            pos[(reader, no)] = at
            statuses.add(status)
        # the storm must have moved reservations through several states
        self.assertTrue({"RESERVED", "WAITLISTED"} <= statuses, statuses)


if __name__ == "__main__":
    unittest.main()
