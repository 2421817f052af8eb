#!/usr/bin/env python3
"""test_shards.py - appliances as shards behind a real nginx (issue 19).

Needs a real PostgreSQL (FS_TEST_PG, as test_sinks_e2e.py: a role that may
CREATE DATABASE), Debian's nginx and psql; without them it prints
`skipped: <reason>` and exits 77.

Flow:
  1. A shard map: `shard east`, `shard west` (127.0.0.1, free ports), two
     pinned SKUs (one each), six more placed by the hash. Two flashsaled
     processes, --shard east / --shard west, one JWT secret, both streaming to
     ONE PostgreSQL database.
  2. Every SKU's sale is created by trying east, then west: exactly one of
     them accepts, the other refuses with 421 misdirected naming the owner.
  3. `flashctl shard-map --nginx --map MAP --skus <the 6 hashed>` writes
     the proxy configuration; `nginx -t` accepts it; nginx runs it.
  4. A storm through nginx: 240 users over 16 keep-alive connections, one
     reservation each on the 8 SKUs (30 attempts on 25 units per SKU), then a
     read of every granted reservation, a checkout of every other one and a
     read of each order, all through the proxy. Every reservation id carries
     its owner's index; no answer through the proxy is a 421; each box's
     /metrics counts exactly the reservations for the SKUs it owns and no
     421; counters conserve with zero oversell.
  5. Straight to the wrong box: GET /v1/skus/S, POST a reservation, GET a
     reservation and GET an order of the other shard all answer 421
     {"error":"misdirected","shard":OWNER}.
  6. Both PostgreSQL sinks catch up (sale status lag 0); flashsale-reconcile
     --shard east and --shard west each report 0 differences over their own
     rows; PostgreSQL holds each shard's reservations under its shard name.
  7. `flashctl report` names the owner on the wrong box and shows the shard on
     the right one; `sale status` and /metrics show the shard.
  8. When HAProxy is installed: `flashctl shard-map --haproxy` passes
     `haproxy -c`, and through a running HAProxy every SKU, reservation and
     order read reaches its owner (200, never 421).
  9. East restarted with a map that pins one of its SKUs to west refuses to
     start (exit 2): one SKU never has two writers.
Seedless: the storm is deterministic (user i takes SKU i % 8).
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient  # noqa: E402

BUILD = fsclient.BUILD
RECONCILE = os.path.join(BUILD, "tools", "flashsale-reconcile")
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
STOCK = 25
USERS = 240
CONNS = 16
PINNED = {"sh-pin-w": "west", "sh-pin-e": "east"}
HASHED = ["sh-%d" % i for i in range(6)]
SKUS = list(PINNED) + HASHED

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


def psql(conninfo, sql, timeout=30):
    r = subprocess.run(["psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", conninfo, "-c", sql],
                       capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        raise Fatal(f"psql {sql!r}: {r.stderr.strip()}")
    return r.stdout.strip()


def metric_sum(server, pattern):
    """Sum of the /metrics samples whose line matches the regex pattern."""
    out = server.admin_ok("metrics")
    return sum(int(float(line.rsplit(" ", 1)[1])) for line in out.splitlines()
               if not line.startswith("#") and re.search(pattern, line))


def start_boxes(tmp, map_path, conninfo):
    ports = {"east": fsclient.free_port(), "west": fsclient.free_port()}
    with open(map_path, "w") as f:
        f.write("# test_shards.py\nshard east 127.0.0.1:%d\nshard west 127.0.0.1:%d\n" % (ports["east"], ports["west"]))
        for sku, shard in PINNED.items():
            f.write(f"sku {sku} {shard}\n")
    boxes = {}
    for name in ("east", "west"):
        os.makedirs(os.path.join(tmp, name))
        extra = ["--shard", name, "--shard-map", map_path, "--postgres", conninfo]
        if name == "west":   # one secret: a token is good at every box
            extra += ["--jwt-secret-file", boxes["east"].secret_file]
        boxes[name] = fsclient.Server(workers=1, demo=False, port=ports[name], extra=extra,
                                      data_dir=os.path.join(tmp, name)).start()
    return boxes


def create_sales(boxes):
    """Each SKU on whichever box accepts it; the other must answer 421."""
    owner = {}
    for sku in SKUS:
        got = {}
        for name in ("east", "west"):
            got[name] = boxes[name].admin("sale", "create", sku, "--stock", STOCK, "--per-user", 1,
                                          "--hold", "300s")
        ok = [n for n, p in got.items() if p.returncode == 0]
        need(len(ok) == 1, f"sale {sku}: exactly one shard accepts it ({ok})")
        other = "west" if ok[0] == "east" else "east"
        refusal = got[other].stdout + got[other].stderr
        check('"misdirected"' in refusal and f'"shard":"{ok[0]}"' in refusal,
              f"sale {sku}: {other} refuses it naming the owner {ok[0]}: {refusal.strip()[:160]}")
        owner[sku] = ok[0]
        boxes[ok[0]].admin_ok("sale", "open", sku)
    for sku, shard in PINNED.items():
        check(owner[sku] == shard, f"pinned {sku} lives on {shard}")
    return owner


def start_nginx(tmp, map_path):
    port = fsclient.free_port()
    conf = os.path.join(tmp, "nginx.conf")
    p = fsclient.flashctl("shard-map", "--nginx", "--map", map_path, "--skus", ",".join(HASHED),
                          "--listen", "127.0.0.1:%d" % port, "--out", conf)
    need(p.returncode == 0, f"flashctl shard-map --nginx: rc {p.returncode} {p.stderr.strip()}")
    glob = f"pid {tmp}/nginx.pid; error_log {tmp}/nginx-error.log;"
    t = subprocess.run([NGINX, "-t", "-p", tmp, "-c", conf, "-g", glob], capture_output=True, text=True)
    need(t.returncode == 0, f"nginx -t accepts the generated configuration: {t.stderr.strip()[-300:]}")
    proc = subprocess.Popen([NGINX, "-p", tmp, "-c", conf, "-g", glob + " daemon off;"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    end = time.monotonic() + 10
    while time.monotonic() < end:
        try:
            with fsclient.Conn(port, timeout=2) as c:
                if c.request("GET", "/nothing").status == 404:
                    return proc, port
        except (OSError, fsclient.ConnectionClosed):
            time.sleep(0.05)
    raise Fatal("nginx did not come up")


def storm(port, secret, owner):
    """Returns per-user results: (sku, reserve status, body, read status, checkout status, order read)."""
    results = [None] * USERS
    lock = threading.Lock()
    errors = []

    def worker(w):
        try:
            with fsclient.Conn(port, timeout=15) as c:
                for i in range(w, USERS, CONNS):
                    sku = SKUS[i % len(SKUS)]
                    tok = fsclient.mint_token(secret, "shard-user-%d" % i)
                    h = {"Authorization": "Bearer " + tok, "Idempotency-Key": "k%d" % i}
                    r = c.request("POST", f"/v1/skus/{sku}/reservations", h, {"quantity": 1})
                    row = [sku, r.status, r.json() if r.body else {}, None, None, None]
                    if r.status == 201:
                        rid = row[2]["reservation_id"]
                        g = c.request("GET", "/v1/reservations/" + rid, {"Authorization": "Bearer " + tok})
                        row[3] = (g.status, g.json().get("sku") if g.body else None)
                        if (i // len(SKUS)) % 2 == 0:   # every other user of each SKU
                            h2 = {"Authorization": "Bearer " + tok, "Idempotency-Key": "c%d" % i}
                            k = c.request("POST", f"/v1/reservations/{rid}/checkout", h2, {"payment_token": "tok_ok"})
                            row[4] = (k.status, k.json() if k.body else {})
                            if k.status == 200:
                                o = c.request("GET", "/v1/orders/" + row[4][1]["order_id"],
                                              {"Authorization": "Bearer " + tok})
                                row[5] = (o.status, o.json().get("reservation_id") if o.body else None)
                    with lock:
                        results[i] = row
        except Exception as e:  # noqa: BLE001 - reported as a failure below
            with lock:
                errors.append(repr(e))

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(CONNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    need(not errors, f"storm through nginx ran without errors ({errors[:3]})")
    return results


def check_storm(results, owner, boxes, proxy_port):
    index = {"east": "00", "west": "01"}
    granted = {s: 0 for s in SKUS}
    paid = {s: 0 for s in SKUS}
    statuses = {}
    for sku, st, body, read, co, order in results:
        statuses[st] = statuses.get(st, 0) + 1
        if st == 201:
            granted[sku] += 1
            rid = body["reservation_id"]
            if rid[1:3] != index[owner[sku]]:
                check(False, f"{rid} ({sku}) carries its owner's index {index[owner[sku]]}")
            if read != (200, sku):
                check(False, f"read of {rid} through nginx reached its owner: {read}")
            if co is not None:
                if co[0] != 200 or co[1].get("status") != "PAID":
                    check(False, f"checkout of {rid} through nginx: {co}")
                else:
                    paid[sku] += 1
                    if co[1]["order_id"][1:3] != index[owner[sku]] or order != (200, rid):
                        check(False, f"order {co[1]['order_id']} of {rid}: owner index and read {order}")
    print(f"storm answers by status: {statuses}")
    check(set(statuses) <= {201, 409}, f"every reservation through nginx is 201 or 409 sold_out ({statuses})")
    check(all(granted[s] == STOCK for s in SKUS), f"each SKU granted exactly its stock ({granted})")
    per_box = {"east": 0, "west": 0}
    for i in range(USERS):
        per_box[owner[SKUS[i % len(SKUS)]]] += 1
    for name, box in boxes.items():
        n = metric_sum(box, r'^flashsale_http_answers_total\{route="reserve",')
        check(n == per_box[name], f"{name} answered {n} reservations: exactly those of its SKUs ({per_box[name]})")
        m = metric_sum(box, r'^flashsale_http_answers_total\{.*status="421"')
        check(m == 0, f"{name}: no request through nginx was misdirected (421 count {m})")
    for sku in SKUS:
        with fsclient.Conn(proxy_port) as c:
            r = c.request("GET", "/v1/skus/" + sku)
        c_ = r.json() if r.status == 200 else {}
        check(r.status == 200 and fsclient.conserved(c_) and c_["sold"] == paid[sku] and
              c_["reserved"] == granted[sku] - paid[sku] and c_["available"] == 0,
              f"{sku} via nginx: {r.status} {c_} (granted {granted[sku]}, paid {paid[sku]})")
    return granted, paid


def check_misdirected(boxes, owner, results, secret):
    west_sku = next(s for s in SKUS if owner[s] == "west")
    east_sku = next(s for s in SKUS if owner[s] == "east")
    tok = fsclient.mint_token(secret, "shard-misdirected")
    for wrong, sku, right in (("east", west_sku, "west"), ("west", east_sku, "east")):
        r = boxes[wrong].call("GET", "/v1/skus/" + sku)
        check(r.status == 421 and r.json() == {"error": "misdirected", "shard": right},
              f"GET /v1/skus/{sku} at {wrong}: 421 naming {right} ({r.status} {r.body[:80]!r})")
        r = boxes[wrong].reserve(tok, sku, "mis-" + sku, quantity=1)
        check(r.status == 421 and r.json().get("shard") == right, f"reserve {sku} at {wrong}: 421 ({r.status})")
        row = next(x for x in results if x[0] == sku and x[4] is not None and x[4][0] == 200)
        rid, oid = row[2]["reservation_id"], row[4][1]["order_id"]
        r = boxes[wrong].call("GET", "/v1/reservations/" + rid, tok)
        check(r.status == 421 and r.json().get("shard") == right, f"GET reservation {rid} at {wrong}: 421 ({r.status})")
        r = boxes[wrong].call("GET", "/v1/orders/" + oid, tok)
        check(r.status == 421 and r.json().get("shard") == right, f"GET order {oid} at {wrong}: 421 ({r.status})")


def wait_sink(box, skus, timeout=30):
    end = time.monotonic() + timeout
    while True:
        lags = [x["lag"] for s in skus for x in json.loads(box.admin_ok("sale", "status", s))["sinks"]]
        if lags and all(v == 0 for v in lags):
            return True
        if time.monotonic() > end:
            return False
        time.sleep(0.1)


def check_postgres(boxes, owner, granted, conninfo, map_path):
    for name, box in boxes.items():
        mine = [s for s in SKUS if owner[s] == name]
        need(wait_sink(box, mine), f"{name}: the PostgreSQL sink caught up (lag 0)")
        r = subprocess.run([RECONCILE, "--journal", os.path.join(box.data_dir, "journal"), "--postgres", conninfo,
                            "--shard", name, "--shard-map", map_path], capture_output=True, text=True, timeout=120)
        last = (r.stdout + r.stderr).strip().splitlines()[-1:] or [""]
        check(r.returncode == 0 and last[0].endswith(" 0 differences"), f"reconcile --shard {name}: {last[0]}")
        if r.returncode != 0:
            print(r.stdout[-2000:])
        n = int(psql(conninfo, f"SELECT count(*) FROM reservations WHERE shard = '{name}'"))
        check(n == sum(granted[s] for s in mine), f"postgres: {n} reservations carry shard {name}")
        wrong = int(psql(conninfo, f"SELECT count(*) FROM sales WHERE shard = '{name}' AND sku NOT IN "
                                   f"({','.join(repr(s) for s in mine)})"))
        check(wrong == 0, f"postgres: the sales of shard {name} are its own SKUs")
        cur = psql(conninfo, f"SELECT seq FROM sink_cursor WHERE name = 'flashsaled.{name}'")
        check(cur.isdigit() and int(cur) > 0, f"postgres: cursor flashsaled.{name} at {cur}")


class NoLeakCheck:
    """In an ASan build: exit statuses as the code chose them. flashctl report
    and a flashsaled refusing to start exit without freeing what they hold
    (leak checking would turn their status into 1); the leak check of
    the running paths is the ASan e2e suites' job."""

    def __enter__(self):
        self.old = os.environ.get("ASAN_OPTIONS")
        os.environ["ASAN_OPTIONS"] = (self.old + ":" if self.old else "") + "detect_leaks=0"

    def __exit__(self, *a):
        if self.old is None:
            del os.environ["ASAN_OPTIONS"]
        else:
            os.environ["ASAN_OPTIONS"] = self.old


def check_operator_views(boxes, owner):
    sku = next(s for s in SKUS if owner[s] == "west")
    with NoLeakCheck():
        p = boxes["east"].admin("report", sku, "--data-dir", boxes["east"].data_dir)
        check(p.returncode == 1 and "belongs to shard west" in p.stdout,
              f"report {sku} at east names west: {p.stdout.strip()}")
        p = boxes["west"].admin("report", sku, "--data-dir", boxes["west"].data_dir)
        check(p.returncode == 0 and re.search(r"shard +west", p.stdout) is not None,
              f"report {sku} at west shows its shard (rc {p.returncode}) {p.stderr.strip()[-200:]}")
    st = json.loads(boxes["west"].admin_ok("sale", "status", sku))
    check(st.get("shard") == "west", f"sale status {sku} shows shard west ({st.get('shard')})")
    check(metric_sum(boxes["east"], r'^flashsale_shard_info\{shard="east",index="0",shards="2"\}') == 1,
          "east's /metrics: flashsale_shard_info{shard=east,index=0,shards=2}")


def check_haproxy(tmp, map_path, owner, results, secret):
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        print("skipped: the HAProxy part (haproxy not installed)")
        return
    port = fsclient.free_port()
    cfg = os.path.join(tmp, "haproxy.cfg")
    p = fsclient.flashctl("shard-map", "--haproxy", "--map", map_path, "--skus", ",".join(HASHED),
                          "--listen", "127.0.0.1:%d" % port, "--out", cfg)
    need(p.returncode == 0, f"flashctl shard-map --haproxy: rc {p.returncode} {p.stderr.strip()}")
    t = subprocess.run([haproxy, "-c", "-f", cfg], capture_output=True, text=True)
    need(t.returncode == 0, f"haproxy -c accepts the generated configuration: {(t.stdout + t.stderr).strip()[-300:]}")
    proc = subprocess.Popen([haproxy, "-db", "-f", cfg], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                with fsclient.Conn(port, timeout=2) as c:
                    if c.request("GET", "/nothing").status == 404:
                        break
            except (OSError, fsclient.ConnectionClosed):
                time.sleep(0.05)
        bad = []
        with fsclient.Conn(port, timeout=10) as c:
            for sku in SKUS:
                r = c.request("GET", "/v1/skus/" + sku)
                if r.status != 200 or r.json().get("sku") != sku:
                    bad.append((sku, r.status))
            for i, row in enumerate(results):
                if row[4] is not None and row[4][0] == 200:
                    tok = fsclient.mint_token(secret, "shard-user-%d" % i)
                    rid, oid = row[2]["reservation_id"], row[4][1]["order_id"]
                    for path in ("/v1/reservations/" + rid, "/v1/orders/" + oid):
                        r = c.request("GET", path, {"Authorization": "Bearer " + tok})
                        if r.status != 200:
                            bad.append((path, r.status))
        check(not bad, f"through HAProxy every SKU and id read reached its owner ({bad[:4]})")
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def check_restart_refused(boxes, owner, tmp, map_path):
    east = boxes["east"]
    sku = next(s for s in HASHED if owner[s] == "east")
    moved = os.path.join(tmp, "moved.map")
    with open(map_path) as f, open(moved, "w") as g:
        g.write(f.read() + f"sku {sku} west\n")
    east.stop()
    i = east.extra.index("--shard-map")
    east.extra[i + 1] = moved
    east.starts += 1
    with open(east.log_path, "wb") as logf, NoLeakCheck():
        rc = subprocess.run(east.argv(), stdout=logf, stderr=subprocess.STDOUT, timeout=60).returncode
    check(rc == 2 and "one SKU, one writer" in east.log(),
          f"east refuses to start when the map gives its sale {sku} to west (rc {rc})")


def main():
    pg = os.environ.get("FS_TEST_PG")
    if not pg:
        print("skipped: FS_TEST_PG is not set (libpq conninfo of a PostgreSQL this test may create databases in)")
        return 77
    if shutil.which("psql") is None or not os.path.exists(NGINX):
        print("skipped: psql or nginx not found (apt-get install postgresql-client nginx)")
        return 77
    t0 = time.monotonic()
    dbname = "fs_e2e_shards_%d" % os.getpid()
    tmp = tempfile.mkdtemp(prefix="fs-shards-")
    if os.geteuid() == 0:
        os.chmod(tmp, 0o755)   # nginx workers run as nobody
    conninfo = f"{pg} dbname={dbname}"
    boxes, nginx = {}, None
    try:
        psql(pg, f"CREATE DATABASE {dbname}")
        map_path = os.path.join(tmp, "shards.map")
        boxes = start_boxes(tmp, map_path, conninfo)
        owner = create_sales(boxes)
        print("owners:", owner)
        need(set(owner.values()) == {"east", "west"}, "both shards own SKUs")
        nginx, proxy_port = start_nginx(tmp, map_path)
        secret = boxes["east"].secret()
        results = storm(proxy_port, secret, owner)
        granted, _ = check_storm(results, owner, boxes, proxy_port)
        check_misdirected(boxes, owner, results, secret)
        check_postgres(boxes, owner, granted, conninfo, map_path)
        check_operator_views(boxes, owner)
        check_haproxy(tmp, map_path, owner, results, secret)
        check_restart_refused(boxes, owner, tmp, map_path)
    except Fatal as e:
        print(f"FATAL: {e}")
        FAILURES.append(str(e))
    finally:
        if nginx is not None:
            nginx.terminate()
            try:
                nginx.wait(10)
            except subprocess.TimeoutExpired:
                nginx.kill()
        for b in boxes.values():
            b.cleanup()
        try:
            psql(pg, f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
        except Fatal:
            pass
        if not os.environ.get("FS_KEEP"):
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"test_shards: {len(FAILURES)} failure(s) in {time.monotonic() - t0:.1f} s")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
