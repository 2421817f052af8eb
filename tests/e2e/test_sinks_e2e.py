#!/usr/bin/env python3
"""test_sinks_e2e.py - the HTTP API end to end with the PostgreSQL and Redis
sinks on, then reconcile (issue 6).

Needs a real PostgreSQL and Redis (setup.sh test starts both):
  FS_TEST_PG     libpq conninfo (key=value or URI) of a role that may CREATE
                 DATABASE: this test creates its own database and drops it;
  FS_TEST_REDIS  host:port of a Redis this test may write stock:<sku> keys to.
Without them (or without psql / the binaries) it prints `skipped: <reason>`
and exits 77.

Flow:
  1. flashsaled --postgres <our database> --redis <FS_TEST_REDIS>, 2 workers;
     two sales: sinks-a (400 units, 2 per user) and sinks-b (40 units, sells out).
  2. A burst: 160 users over 32 keep-alive connections reserve on both SKUs
     (plus an idempotent repeat), then cancel, check out with tok_ok, check
     out with tok_decline, or keep their hold.
  3. Every sink's lag reaches 0 in `flashctl sale status` (bounded wait);
     flashsale-reconcile exits 0 with "0 differences" and compared every batch
     of the journal; PostgreSQL holds as many reservations / PAID orders as
     the burst was granted; Redis stock:<sku> equals GET /v1/skus/<sku> and
     has a TTL in 1..5 s.
  4. PostgreSQL goes away: ALTER DATABASE ... ALLOW_CONNECTIONS false and
     its backends terminated. A second burst of reservations and checkouts
     meanwhile is answered as fast as before (never stalls: every answer in
     < 2 s, all 201/200); the PostgreSQL sink's lag grows while Redis keeps
     up. Connections are allowed again: the sink catches up (lag 0),
     reconcile is still 0 differences, Redis still equals the API.
  5. flashsaled stops cleanly and `flashsale-journal verify` accepts the journal.
"""
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient  # noqa: E402

BUILD = fsclient.BUILD
RECONCILE = os.path.join(BUILD, "tools", "flashsale-reconcile")
JOURNAL_TOOL = os.path.join(BUILD, "tools", "flashsale-journal")
LAG_WAIT_S = 30.0
STALL_S = 2.0

FAILURES = []


def check(ok, what):
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILURES.append(what)
    return ok


class Fatal(Exception):
    pass


def need(ok, what):
    if not check(ok, what):
        raise Fatal(what)


# ---------------------------------------------------------------- PostgreSQL

def psql(conninfo, sql, timeout=30):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo,
                        "-c", sql], capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise Fatal(f"psql {sql!r}: {r.stderr.strip()}")
    return r.stdout.strip()


def with_dbname(conninfo, dbname):
    """The conninfo with another database (key=value: a later keyword wins)."""
    if conninfo.startswith(("postgres://", "postgresql://")):
        u = urllib.parse.urlsplit(conninfo)
        return urllib.parse.urlunsplit((u.scheme, u.netloc, "/" + dbname, u.query, u.fragment))
    return f"{conninfo} dbname={dbname}"


def pg_or_skip(name):
    """FS_TEST_PG when this PostgreSQL test can run (psql and
    flashsale-reconcile at hand), else None after saying why it skips."""
    pg = os.environ.get("FS_TEST_PG")
    if not pg:
        print("skipped: FS_TEST_PG is not set (libpq conninfo of a PostgreSQL this test may create databases in)")
        return None
    if shutil.which("psql") is None or not os.access(RECONCILE, os.X_OK):
        print(f"skipped: psql or flashsale-reconcile missing ({name})")
        return None
    return pg


def scratch_db(pg, prefix):
    """Creates a database of its own for one test run: (name, conninfo)."""
    dbname = f"{prefix}_{os.getpid()}_{int(time.time())}"
    psql(pg, f"CREATE DATABASE {dbname}")
    return dbname, with_dbname(pg, dbname)


def drop_scratch_db(pg, dbname):
    """Drops it again, sessions and all; a failure here is only a leftover."""
    try:
        psql(pg, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
    except Fatal as e:
        print(f"warning: could not drop database {dbname}: {e}")


# ---------------------------------------------------------------- Redis (RESP)

class Redis:
    def __init__(self, addr):
        host, _, port = addr.rpartition(":")
        self.sock = socket.create_connection((host or "127.0.0.1", int(port)), timeout=5)
        self.f = self.sock.makefile("rb")

    def cmd(self, *args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a.encode() if isinstance(a, str) else a
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        self.sock.sendall(out)
        return self._reply()

    def _reply(self):
        line = self.f.readline()
        if not line:
            raise Fatal("redis closed the connection")
        t, rest = line[:1], line[1:].rstrip(b"\r\n")
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise Fatal(f"redis error: {rest.decode()}")
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            return data[:-2]
        if t == b"*":
            return [self._reply() for _ in range(int(rest))]
        raise Fatal(f"redis: unexpected reply {line!r}")

    def close(self):
        self.sock.close()


# ---------------------------------------------------------------- the crowd

def burst(server, secret, users, sku_plan, conns=32, prefix="u"):
    """Runs `users` users over `conns` keep-alive connections; each user does
    the steps of sku_plan(i) -> list of (sku, action). Returns a list of
    per-user result dicts and the max answer latency (s)."""
    results = [None] * users
    lat_max = [0.0]
    lock = threading.Lock()
    errors = []

    def timed(c, method, path, headers, body=None):
        t = time.monotonic()
        r = c.request(method, path, headers, body)
        d = time.monotonic() - t
        with lock:
            lat_max[0] = max(lat_max[0], d)
        return r

    def worker(w):
        try:
            with fsclient.Conn(server.port, timeout=15) as c:
                for i in range(w, users, conns):
                    user = f"{prefix}{i}"
                    h = {"Authorization": "Bearer " + fsclient.mint_token(secret, user)}
                    out = {"user": user, "steps": []}
                    for sku, action in sku_plan(i):
                        key = f"{prefix}-{sku}-{i}"
                        r = timed(c, "POST", f"/v1/skus/{sku}/reservations",
                                  dict(h, **{"Idempotency-Key": key}), {"quantity": 1})
                        step = {"sku": sku, "action": action, "reserve": r.status, "body": r.json()}
                        if r.status == 201:
                            rid = r.json()["reservation_id"]
                            if i % 5 == 0:   # an idempotent repeat: same answer, 200
                                r2 = timed(c, "POST", f"/v1/skus/{sku}/reservations",
                                           dict(h, **{"Idempotency-Key": key}), {"quantity": 1})
                                step["repeat"] = r2.status
                                step["repeat_same"] = r2.status == 200 and r2.json().get("reservation_id") == rid
                            step["rid"] = rid
                            if action == "cancel":
                                step["final"] = timed(c, "DELETE", f"/v1/reservations/{rid}", h).status
                            elif action in ("tok_ok", "tok_decline"):
                                step["final"] = timed(c, "POST", f"/v1/reservations/{rid}/checkout",
                                                      dict(h, **{"Idempotency-Key": "pay-" + key}),
                                                      {"payment_token": action}).status
                        out["steps"].append(step)
                    results[i] = out
        except Exception as e:  # noqa: BLE001 - reported as a failure below
            with lock:
                errors.append(f"worker {w}: {e!r}")

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    need(not errors and all(r is not None for r in results), f"burst of {users} users finished ({errors[:3]})")
    return results, lat_max[0]


def plan_a(i):
    """sinks-a: cancel / pay ok / pay declined / keep the hold; sinks-b: pay ok or keep."""
    act = ("cancel", "tok_ok", "tok_decline", "hold")[i % 4]
    return [("sinks-a", act), ("sinks-b", "tok_ok" if i % 3 == 0 else "hold")]


def tally(results):
    """Per SKU: granted reservations, expected counters after the actions."""
    t = {}
    for r in results:
        for s in r["steps"]:
            d = t.setdefault(s["sku"], {"granted": 0, "reserved": 0, "sold": 0, "returned": 0,
                                        "codes": {}, "final_codes": {}, "repeat_bad": 0})
            d["codes"][s["reserve"]] = d["codes"].get(s["reserve"], 0) + 1
            if s["reserve"] != 201:
                continue
            d["granted"] += 1
            if "repeat" in s and not s["repeat_same"]:
                d["repeat_bad"] += 1
            f = s.get("final")
            if f is not None:
                d["final_codes"][f"{s['action']}:{f}"] = d["final_codes"].get(f"{s['action']}:{f}", 0) + 1
            if s["action"] == "tok_ok" and f == 200:
                d["sold"] += 1
            elif (s["action"] == "cancel" and f == 200) or (s["action"] == "tok_decline" and f == 402):
                d["returned"] += 1
            else:
                d["reserved"] += 1
    return t


# ---------------------------------------------------------------- checks

def sale_status(server, sku):
    p = server.admin("sale", "status", sku)
    if p.returncode != 0:
        raise Fatal(f"flashctl sale status {sku}: {p.stderr.strip()}")
    return json.loads(p.stdout)


def wait_lag_zero(server, skus, sinks=("postgres", "redis"), timeout=LAG_WAIT_S):
    """Waits until every sink's lag is 0 for every sku; returns (ok, last status)."""
    end = time.monotonic() + timeout
    last = None
    while True:
        sts = [sale_status(server, s) for s in skus]
        last = sts
        ok = all({x["name"] for x in st["sinks"]} >= set(sinks) and all(x["lag"] == 0 for x in st["sinks"])
                 for st in sts)
        if ok or time.monotonic() > end:
            return ok, last
        time.sleep(0.1)


def wait_for_sink(server, sku, name, timeout):
    """True once the sink `name` has lag 0 for sku (others may lag)."""
    end = time.monotonic() + timeout
    while True:
        lags = {x["name"]: x["lag"] for x in sale_status(server, sku)["sinks"]}
        if lags.get(name) == 0:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


def reconcile(data_dir, conninfo, journal=None, timeout=120):
    """flashsale-reconcile of DATA_DIR/journal (or of the segments in
    `journal`) against PostgreSQL: (exit code, output, match of its summary)."""
    journal = journal or os.path.join(data_dir, "journal")
    r = subprocess.run([RECONCILE, "--journal", journal, "--postgres", conninfo],
                       capture_output=True, text=True, timeout=timeout)
    out = (r.stdout + r.stderr).strip()
    m = re.search(r"compared (\d+) batches.*journal has (\d+) batches\): (\d+) differences", out)
    return r.returncode, out, m


def check_reconcile(data_dir, conninfo, when, journal=None, timeout=120):
    rc, out, m = reconcile(data_dir, conninfo, journal, timeout)
    check(rc == 0 and m is not None and m.group(3) == "0",
          f"{when}: flashsale-reconcile exit {rc}: {out.splitlines()[-1] if out else ''}")
    check(m is not None and m.group(1) == m.group(2),
          f"{when}: reconcile compared every journal batch ({m.group(1) if m else '?'} of "
          f"{m.group(2) if m else '?'})")
    if rc != 0:
        print(out[-3000:])


def check_redis(server, redis, skus, when):
    for sku in skus:
        end = time.monotonic() + 5
        while True:
            api = server.counters(sku)
            raw = redis.cmd("GET", f"stock:{sku}")
            cached = json.loads(raw) if raw else None
            if cached == api or time.monotonic() > end:
                break
            time.sleep(0.05)
        if cached == api:
            check(True, f"{when}: redis stock:{sku} == GET /v1/skus/{sku} ({raw.decode()})")
        else:
            diff = {k: (cached.get(k) if cached else None, api.get(k))
                    for k in sorted(set(api) | set(cached or {})) if (cached or {}).get(k) != api.get(k)}
            check(False, f"{when}: redis stock:{sku} == GET /v1/skus/{sku}: differs in "
                         f"{{field: (redis, api)}} {diff}")
        ttl = redis.cmd("TTL", f"stock:{sku}")
        check(isinstance(ttl, int) and 1 <= ttl <= 5, f"{when}: redis stock:{sku} TTL {ttl} in 1..5 s")


def check_counters(server, tallies, totals, when):
    for sku, d in tallies.items():
        c = server.counters(sku)
        check(fsclient.conserved(c), f"{when}: {sku} conserved: {c}")
        exp = {"reserved": d["reserved"], "sold": d["sold"], "available": totals[sku] - d["reserved"] - d["sold"]}
        got = {k: c[k] for k in exp}
        check(got == exp, f"{when}: {sku} counters {got} == expected from the answers {exp}")


# ---------------------------------------------------------------- main

def main():
    pg, rd = os.environ.get("FS_TEST_PG"), os.environ.get("FS_TEST_REDIS")
    if not pg:
        print("skipped: FS_TEST_PG is not set (libpq conninfo of a PostgreSQL this test may create databases in)")
        return 77
    if not rd:
        print("skipped: FS_TEST_REDIS is not set (host:port of a Redis this test may write to)")
        return 77
    if shutil.which("psql") is None:
        print("skipped: psql not found (apt-get install postgresql-client)")
        return 77
    missing = [p for p in (fsclient.FLASHSALED, fsclient.FLASHCTL, RECONCILE, JOURNAL_TOOL)
               if not os.access(p, os.X_OK)]
    if missing:
        print(f"skipped: not built: {', '.join(missing)}")
        return 77
    dbname = f"fs_e2e_sinks_{os.getpid()}_{int(time.time())}"
    try:
        psql(pg, f"CREATE DATABASE {dbname}")
    except Fatal as e:
        print(f"FAIL: cannot create a database with FS_TEST_PG: {e}")
        return 1
    conninfo = with_dbname(pg, dbname)
    server = None
    redis = None
    try:
        redis = Redis(rd)
        for sku in ("sinks-a", "sinks-b"):     # a leftover key must not pass for ours
            redis.cmd("DEL", f"stock:{sku}")
        server = fsclient.Server(workers=2, demo=False,
                                 extra=["--postgres", conninfo, "--redis", rd, "--no-pin"])
        server.start()
        totals = {"sinks-a": 400, "sinks-b": 40}
        server.create_sale("sinks-a", totals["sinks-a"], per_user=2)
        server.create_sale("sinks-b", totals["sinks-b"], per_user=1)
        secret = server.secret()

        # -- 2. the burst
        t0 = time.monotonic()
        res1, lat1 = burst(server, secret, 160, plan_a, conns=32, prefix="u")
        t1 = tally(res1)
        print(f"burst 1: {time.monotonic() - t0:.2f} s, max answer {1000 * lat1:.1f} ms, "
              f"{json.dumps(t1, sort_keys=True)}")
        a, b = t1["sinks-a"], t1["sinks-b"]
        check(a["codes"] == {201: 160}, f"sinks-a: every user got 201 ({a['codes']})")
        check(b["granted"] == 40 and b["codes"].get(409, 0) == 120, f"sinks-b: 40 granted, 120 sold_out ({b['codes']})")
        check(a["repeat_bad"] == 0 and b["repeat_bad"] == 0, "idempotent repeats returned the original answer")
        check(a["final_codes"] == {"cancel:200": 40, "tok_ok:200": 40, "tok_decline:402": 40},
              f"sinks-a: cancels 200, tok_ok 200, tok_decline 402 ({a['final_codes']})")
        check_counters(server, t1, totals, "after burst 1")

        # -- 3. lag 0, reconcile, Redis
        ok, st = wait_lag_zero(server, ["sinks-a", "sinks-b"])
        need(ok, f"every sink's lag reached 0 within {LAG_WAIT_S:g} s ({[s['sinks'] for s in st]})")
        check_reconcile(server.data_dir, conninfo, "after burst 1")
        n_res = int(psql(conninfo, "SELECT count(*) FROM reservations"))
        n_paid = int(psql(conninfo, "SELECT count(*) FROM orders WHERE status = 'PAID'"))
        check(n_res == a["granted"] + b["granted"],
              f"PostgreSQL holds {n_res} reservations == {a['granted'] + b['granted']} granted")
        check(n_paid == a["sold"] + b["sold"], f"PostgreSQL holds {n_paid} PAID orders == {a['sold'] + b['sold']} paid")
        check_redis(server, redis, ["sinks-a", "sinks-b"], "after burst 1")

        # -- 4. PostgreSQL goes away while the sale goes on
        psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        psql(pg, f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{dbname}'")
        seq_before = sale_status(server, "sinks-a")["journal_seq"]
        t0 = time.monotonic()
        res2, lat2 = burst(server, secret, 80, lambda i: [("sinks-a", ("tok_ok", "hold")[i % 2])],
                           conns=16, prefix="v")
        d2 = time.monotonic() - t0
        t2 = tally(res2)["sinks-a"]
        print(f"burst 2 (PostgreSQL away): {d2:.2f} s, max answer {1000 * lat2:.1f} ms, {json.dumps(t2, sort_keys=True)}")
        check(t2["codes"] == {201: 80} and t2["final_codes"] == {"tok_ok:200": 40},
              f"with PostgreSQL away every reservation got 201 and every tok_ok checkout 200 "
              f"({t2['codes']}, {t2['final_codes']})")
        check(lat2 < STALL_S, f"with PostgreSQL away no answer took >= {STALL_S:g} s (max {1000 * lat2:.1f} ms)")
        time.sleep(1.0)
        st = sale_status(server, "sinks-a")
        lags = {s["name"]: s["lag"] for s in st["sinks"]}
        check(st["journal_seq"] > seq_before and lags.get("postgres", 0) > 0,
              f"the PostgreSQL sink lags while its database is away ({lags}, journal_seq {st['journal_seq']})")
        lag_s = {s["name"]: s["lag_s"] for s in st["sinks"]}
        time.sleep(1.0)
        lag_s2 = {s["name"]: s["lag_s"] for s in sale_status(server, "sinks-a")["sinks"]}
        check(lag_s.get("postgres", 0) >= 0.5 and lag_s2.get("postgres", 0) >= lag_s["postgres"] + 0.5,
              f"the PostgreSQL sink's lag in seconds grows while its database is away ({lag_s} then {lag_s2})")
        m = re.search(r'^flashsale_sink_lag_seconds\{sink="postgres"\} ([0-9.]+)$',
                      server.admin("metrics").stdout, re.M)
        check(m is not None and float(m.group(1)) >= lag_s2["postgres"],
              f"/metrics flashsale_sink_lag_seconds{{sink=postgres}} {m.group(1) if m else None} >= {lag_s2['postgres']}")
        ok_r = wait_for_sink(server, "sinks-a", "redis", timeout=10)
        check(ok_r, "the Redis sink keeps up (lag 0) while PostgreSQL is away")
        check_redis(server, redis, ["sinks-a"], "PostgreSQL away")
        psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        t0 = time.monotonic()
        ok, st = wait_lag_zero(server, ["sinks-a", "sinks-b"])
        need(ok, f"the PostgreSQL sink caught up (lag 0) within {LAG_WAIT_S:g} s after the database came back "
                 f"({[s['sinks'] for s in st]})")
        print(f"caught up {time.monotonic() - t0:.2f} s after connections were allowed again")
        check(all(x["lag_s"] == 0 for x in st[0]["sinks"] + st[1]["sinks"]),
              f"caught up: every sink's lag in seconds is 0 ({[x['sinks'] for x in st]})")
        t_all = dict(t1)
        t_all["sinks-a"] = dict(t1["sinks-a"])
        for k in ("granted", "reserved", "sold", "returned"):
            t_all["sinks-a"][k] += t2[k]
        check_counters(server, t_all, totals, "after burst 2")
        check_reconcile(server.data_dir, conninfo, "after the outage")
        n_res = int(psql(conninfo, "SELECT count(*) FROM reservations"))
        granted = t_all["sinks-a"]["granted"] + t_all["sinks-b"]["granted"]
        check(n_res == granted, f"after the outage PostgreSQL holds {n_res} reservations == {granted} granted")
        check_redis(server, redis, ["sinks-a", "sinks-b"], "after the outage")

        # -- 5. clean stop, journal verify
        rc = server.stop()
        check(rc == 0, f"flashsaled stopped cleanly (exit {rc})")
        v = subprocess.run([JOURNAL_TOOL, "verify", server.data_dir], capture_output=True, text=True, timeout=120)
        check(v.returncode == 0, f"flashsale-journal verify: {(v.stdout + v.stderr).strip()[-300:]}")
    except Fatal as e:
        print(f"stopping early: {e}")
        if server is not None:
            print(server.log())
    finally:
        if server is not None:
            server.cleanup()
        if redis is not None:
            redis.close()
        try:
            psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
            psql(pg, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        except (Fatal, subprocess.SubprocessError) as e:
            print(f"warning: could not drop database {dbname}: {e}")
    if FAILURES:
        print(f"{len(FAILURES)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
