#!/usr/bin/env python3
"""lane_checks.py - checks of the DPDK backend on several lanes (flashsaled
--dpdk ... --workers N: one process and one lwIP stack per lane), run from the
client network namespace of tests/dpdk/veth_test.sh with FS_DPDK_LANES=N.

  --base http://IP:PORT   the server (lwIP's address on the veth bed)
  --data-dir DIR          the server's data dir (jwt.secret, admin.sock)
  --server-pid PID        flashsaled itself (the primary: writer, journal)
  --lanes N

Checks, each against the server's own counters (flashctl metrics):
  - many concurrent connections land on every lane (per-lane accepted);
  - a reservation storm through all lanes sells exactly the stock, never
    more, answered by every lane, and the SKU's counters agree;
  - kill -9 of one lane's process: a connection on another lane keeps being
    served, the killed lane's connection is reset, the primary (writer) is
    the same process and its journal goes on, the lane comes back (new pid,
    restarts 1) and takes new connections again.
"""
import argparse
import os
import re
import signal
import socket
import sys
import threading
import time
import uuid
from urllib.parse import urlparse

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import fsclient as fc  # noqa: E402

A = None
HOST = PORT = None
FAILED = []


def check(name, fn):
    t0 = time.time()
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        FAILED.append(name)
        print("FAIL: %s: %r" % (name, e), flush=True)
        return
    print("ok: %s (%.2f s)" % (name, time.time() - t0), flush=True)


def admin(*args):
    p = fc.flashctl("--admin", "unix:" + os.path.join(A.data_dir, "admin.sock"), *args, timeout=30)
    if p.returncode != 0:
        raise AssertionError("flashctl %s failed: %r %r" % (" ".join(args), p.stdout, p.stderr))
    return p.stdout


def metrics():
    """{(name, labels-string): value} of the server's /metrics."""
    out = {}
    for line in admin("metrics").splitlines():
        m = re.match(r'^([a-z_]+)(\{[^}]*\})? (\S+)$', line)
        if m:
            out[(m.group(1), m.group(2) or "")] = float(m.group(3))
    return out


def lane_values(m, name, extra=""):
    return [int(m.get((name, '{lane="%d"%s}' % (i, extra)), -1)) for i in range(A.lanes)]


def token(user):
    return fc.mint_token(fc.read_secret(os.path.join(A.data_dir, "jwt.secret")), user)


def conn(timeout=10.0):
    return fc.Conn(PORT, host=HOST, timeout=timeout)


def t_spread():
    before = lane_values(metrics(), "flashsale_dpdk_lane_connections_accepted_total")
    conns = [conn() for _ in range(64)]
    try:
        for c in conns:
            c.send_raw(fc.Conn.build("GET", "/healthz"))
        for c in conns:
            assert c.read_response().status == 200
    finally:
        for c in conns:
            c.close()
    after = lane_values(metrics(), "flashsale_dpdk_lane_connections_accepted_total")
    delta = [a - b for a, b in zip(after, before)]
    print("   64 connections per lane: %s" % delta, flush=True)
    assert sum(delta) == 64, delta
    assert all(d > 0 for d in delta), "a lane took no connection: %s" % delta


def t_storm():
    sku = "lanes-" + uuid.uuid4().hex[:8]
    stock, buyers, conns_n = 60, 400, 32
    admin("sale", "create", sku, "--stock", str(stock), "--per-user", "1", "--hold", "120s")
    admin("sale", "open", sku)
    before = metrics()
    results = []
    lock = threading.Lock()

    def worker(k):
        got = []
        with conn(timeout=30) as c:
            for i in range(k, buyers, conns_n):
                r = c.request("POST", "/v1/skus/%s/reservations" % sku,
                              {"Authorization": "Bearer " + token("storm-%s-%d" % (sku, i)),
                               "Idempotency-Key": "k-%d" % i}, b"")
                got.append(r.status)
        with lock:
            results.extend(got)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(conns_n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    assert len(results) == buyers, "answers %d of %d" % (len(results), buyers)
    won = results.count(201)
    other = sorted(set(results) - {201})
    c = fc.Conn(PORT, host=HOST).request("GET", "/v1/skus/" + sku).json()
    after = metrics()
    per_lane = [a - b for a, b in zip(lane_values(after, "flashsale_dpdk_lane_answers_total", ',status="201"'),
                                      lane_values(before, "flashsale_dpdk_lane_answers_total", ',status="201"'))]
    # a lane with no 201 yet has no sample: -1 before, -1 after
    print("   %d buyers, stock %d: %d x 201, others %s; 201s per lane %s; sku %s" % (
        buyers, stock, won, other, per_lane, c), flush=True)
    assert won == stock, "sold %d of a stock of %d" % (won, stock)
    assert c["available"] == 0 and c["reserved"] + c["sold"] == stock and fc.conserved(c), c
    assert all(x in (409, 410) for x in other) or not other, other
    assert all(p > 0 for p in per_lane), "a lane answered no 201: %s" % per_lane


def conn_on_lane(want, tries=64):
    """A keep-alive connection whose first request lane `want` answered
    (opened one at a time, each watched on the per-lane counters)."""
    for _ in range(tries):
        before = lane_values(metrics(), "flashsale_dpdk_lane_connections_accepted_total")
        c = conn()
        assert c.request("GET", "/healthz").status == 200
        after = lane_values(metrics(), "flashsale_dpdk_lane_connections_accepted_total")
        if after[want] == before[want] + 1:
            return c
        c.close()
    raise AssertionError("no connection landed on lane %d in %d tries" % (want, tries))


def t_kill_lane():
    victim, survivor = A.lanes - 1, 0
    sku = "kill-" + uuid.uuid4().hex[:8]
    admin("sale", "create", sku, "--stock", "10", "--per-user", "1", "--hold", "120s")
    admin("sale", "open", sku)
    m = metrics()
    pids = lane_values(m, "flashsale_dpdk_lane_pid")
    restarts = lane_values(m, "flashsale_dpdk_lane_restarts_total")
    seq0 = int(m[("flashsale_journal_seq", "")])
    assert all(p > 0 for p in pids) and len(set(pids)) == A.lanes, pids
    assert A.server_pid not in pids
    keep = conn_on_lane(survivor)
    doomed = conn_on_lane(victim)
    os.kill(pids[victim], signal.SIGKILL)
    print("   killed lane %d (pid %d)" % (victim, pids[victim]), flush=True)
    # the other lane serves on the same connection, reads and writes alike
    for i in range(20):
        assert keep.request("GET", "/v1/skus/demo").status == 200
    r = keep.request("POST", "/v1/skus/%s/reservations" % sku,
                     {"Authorization": "Bearer " + token("kill-" + uuid.uuid4().hex[:8]),
                      "Idempotency-Key": uuid.uuid4().hex}, b"")
    assert r.status == 201, r
    # the primary (writer, journal) is the same process and goes on
    os.kill(A.server_pid, 0)
    def restarted():
        mm = metrics()
        back = (lane_values(mm, "flashsale_dpdk_lane_up")[victim] == 1 and
                lane_values(mm, "flashsale_dpdk_lane_pid")[victim] not in (0, pids[victim]))
        return mm if back else None
    m = fc.wait_for(restarted, timeout=20, interval=0.1)
    assert m, "lane %d did not come back in 20 s" % victim
    pids2 = lane_values(m, "flashsale_dpdk_lane_pid")
    restarts2 = lane_values(m, "flashsale_dpdk_lane_restarts_total")
    assert pids2[victim] not in (0, pids[victim]) and pids2[survivor] == pids[survivor], (pids, pids2)
    assert restarts2[victim] == restarts[victim] + 1 and restarts2[survivor] == restarts[survivor], restarts2
    assert int(m[("flashsale_journal_seq", "")]) > seq0, "the journal did not go on"
    # the killed lane's connection is gone: the new stack resets it
    reset = False
    try:
        doomed.settimeout(10)
        r = doomed.request("GET", "/v1/skus/demo")
        reset = False
        print("   unexpected answer on the killed lane's connection: %r" % r, flush=True)
    except (ConnectionError, fc.ConnectionClosed, socket.timeout, OSError):
        reset = True
    assert reset, "a connection of the killed lane was still answered"
    keep.close()
    doomed.close()
    # what the dead lane took from the mbuf pool is bounded (its bursts and
    # its lcore's cache), and the pool still has most of its mbufs
    mm = metrics()
    free, total = int(mm[("flashsale_dpdk_mbufs_free", "")]), int(mm[("flashsale_dpdk_mbufs", "")])
    print("   mbufs free after the kill: %d of %d" % (free, total), flush=True)
    assert total - free <= 32 + 64 + 384 + 2 * 256, (free, total)
    # and the restarted lane takes new connections
    c = conn_on_lane(victim)
    assert c.request("GET", "/v1/skus/demo").status == 200
    c.close()


def main():
    global A, HOST, PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--server-pid", type=int, required=True)
    ap.add_argument("--lanes", type=int, required=True)
    A = ap.parse_args()
    u = urlparse(A.base)
    HOST, PORT = u.hostname, u.port or 80
    m = metrics()
    assert int(m[("flashsale_dpdk_lanes", "")]) == A.lanes, "flashsale_dpdk_lanes != %d" % A.lanes
    check("64 concurrent connections land on every lane", t_spread)
    check("reservation storm through every lane: exactly the stock sold", t_storm)
    check("kill -9 of a lane: the others serve, the writer goes on, the lane comes back", t_kill_lane)
    check("after the restart, connections land on every lane again", t_spread)
    if FAILED:
        print("%d lane check(s) failed: %s" % (len(FAILED), ", ".join(FAILED)))
        return 1
    print("all lane checks passed (%d lanes)" % A.lanes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
