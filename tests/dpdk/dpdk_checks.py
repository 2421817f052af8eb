#!/usr/bin/env python3
"""dpdk_checks.py - checks of the DPDK backend run from the client network
namespace of tests/dpdk/veth_test.sh (python3 stdlib only; needs root for the
raw ICMP socket).

  --base http://IP:PORT   the server (lwIP's address on the veth bed)
  --data-dir DIR          the server's data dir (jwt.secret for tokens)
  --metrics FILE          counters the server writes every 100 ms
                          (flashsale_connections_open ...)

ARP and ICMP (answered by lwIP), GET/POST over keep-alive and pipelining,
Connection: close, many concurrent connections, and clients that vanish
mid-request (FIN, RST, and while their command is at the writer) leaving no
connection behind.
"""
import argparse
import json
import os
import socket
import struct
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


def conn(timeout=10.0):
    return fc.Conn(PORT, host=HOST, timeout=timeout)


def metrics_text():
    """The server's counters: the file dpdk_harness writes, or flashctl
    metrics (flashsaled --dpdk with dp_dpdk_metrics in the admin /metrics)."""
    if os.path.exists(A.metrics):
        with open(A.metrics) as f:
            return f.read()
    p = fc.flashctl("--admin", "unix:" + os.path.join(A.data_dir, "admin.sock"), "metrics", timeout=10)
    if p.returncode != 0:
        raise AssertionError("flashctl metrics failed: %r" % p.stderr)
    return p.stdout


def metric(name):
    text = metrics_text()
    # the DPDK backend's own gauge first: it counts the stack's connections
    for want in ("flashsale_dpdk_tcp_connections_open", name) if name == "flashsale_connections_open" else (name,):
        for line in text.splitlines():
            if line.startswith(want + " "):
                return int(float(line.split()[1]))
    raise AssertionError("no %s in the server's metrics (admin /metrics must include dp_dpdk_metrics)" % name)


def wait_open_conns(target, timeout=15.0):
    deadline = time.time() + timeout
    v = None
    while time.time() < deadline:
        v = metric("flashsale_connections_open")
        if v == target:
            return
        time.sleep(0.1)
    raise AssertionError("flashsale_connections_open stays %r, want %r" % (v, target))


def token(user):
    return fc.mint_token(fc.read_secret(os.path.join(A.data_dir, "jwt.secret")), user)


# ---------------------------------------------------------------- checks

def icmp_checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    s = (s >> 16) + (s & 0xffff)
    s += s >> 16
    return ~s & 0xffff


def t_icmp_echo():
    """Three echo requests, three matching replies (ARP resolved on the way)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    s.settimeout(2.0)
    ident = os.getpid() & 0xffff
    for seq in range(1, 4):
        payload = b"flashsale-dpdk-%d" % seq
        hdr = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
        pkt = struct.pack("!BBHHH", 8, 0, icmp_checksum(hdr + payload), ident, seq) + payload
        s.sendto(pkt, (HOST, 0))
        deadline = time.time() + 2.0
        while True:
            if time.time() > deadline:
                raise AssertionError("no echo reply for seq %d" % seq)
            data, addr = s.recvfrom(2048)
            ihl = (data[0] & 0xf) * 4
            typ, _, _, rid, rseq = struct.unpack("!BBHHH", data[ihl:ihl + 8])
            if addr[0] == HOST and typ == 0 and rid == ident and rseq == seq:
                assert data[ihl + 8:] == payload, "echo payload differs"
                break
    s.close()


def t_arp_learned():
    """The kernel of the client namespace resolved lwIP's address."""
    with open("/proc/net/arp") as f:
        rows = [ln.split() for ln in f.read().splitlines()[1:]]
    row = [r for r in rows if r[0] == HOST]
    assert row and row[0][2] == "0x2" and row[0][3] != "00:00:00:00:00:00", rows


def t_get_demo():
    with conn() as c:
        r = c.request("GET", "/v1/skus/demo")
        assert r.status == 200, r
        assert r.header("content-type", "").startswith("application/json"), r.headers
        j = r.json()
        assert j["sku"] == "demo" and j["total"] == 10000, j
        assert set(j) >= {"sku", "state", "total", "available", "reserved", "sold", "version"}, j
        r = c.request("GET", "/v1/skus/nope")
        assert r.status == 404 and r.json()["error"] == "unknown_sku", r


def t_reserve_idempotent():
    tok = token("dpdk-" + uuid.uuid4().hex[:8])
    key = uuid.uuid4().hex
    h = {"Authorization": "Bearer " + tok, "Idempotency-Key": key}
    with conn() as c:
        r1 = c.request("POST", "/v1/skus/demo/reservations", h, {"quantity": 1})
        assert r1.status == 201, r1
        r2 = c.request("POST", "/v1/skus/demo/reservations", h, {"quantity": 1})
        assert r2.status == 200 and r2.json()["reservation_id"] == r1.json()["reservation_id"], (r1, r2)
        rid = r1.json()["reservation_id"]
        r3 = c.request("GET", "/v1/reservations/" + rid, {"Authorization": "Bearer " + tok})
        assert r3.status == 200 and r3.json()["status"] == "RESERVED", r3


def t_pipelining():
    """Reads and a writer command mixed in one write: answers in order."""
    tok = token("dpdk-pipe-" + uuid.uuid4().hex[:8])
    reqs = [fc.Conn.build("GET", "/v1/skus/demo") for _ in range(8)]
    reqs.insert(4, fc.Conn.build("POST", "/v1/skus/demo/reservations",
                                 {"Authorization": "Bearer " + tok, "Idempotency-Key": uuid.uuid4().hex},
                                 {"quantity": 1}))
    reqs.append(fc.Conn.build("GET", "/healthz"))
    with conn() as c:
        rs = c.pipeline(reqs)
    assert [r.status for r in rs] == [200] * 4 + [201] + [200] * 5, [r.status for r in rs]


def t_connection_close():
    with conn() as c:
        c.send_raw(fc.Conn.build("GET", "/v1/skus/demo", close=True))
        data = c.read_until_close(timeout=5)
    assert data.startswith(b"HTTP/1.1 200") and data.endswith(b"}"), data[:200]


def t_large_request_431():
    """Headers past the limit: 431 and the connection is closed."""
    with conn() as c:
        c.send_raw(b"GET /v1/skus/demo HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n")
        data = c.read_until_close(timeout=5)
    assert data.startswith(b"HTTP/1.1 431"), data[:200]


def t_many_connections():
    """400 connections open at once, 10 keep-alive requests each."""
    n_conn, n_req, errors = 400, 10, []
    socks = []
    try:
        for _ in range(n_conn):
            socks.append(conn(timeout=20))
        deadline = time.time() + 5
        while metric("flashsale_connections_open") < n_conn and time.time() < deadline:
            time.sleep(0.05)
        got = metric("flashsale_connections_open")
        assert got >= n_conn, "server counts %d open, want >= %d" % (got, n_conn)

        def worker(group):
            try:
                for _ in range(n_req):
                    for c in group:
                        c.send_raw(fc.Conn.build("GET", "/v1/skus/demo"))
                    for c in group:
                        r = c.read_response()
                        assert r.status == 200, r
            except Exception as e:  # noqa: BLE001
                errors.append(repr(e))
        ths = [threading.Thread(target=worker, args=(socks[i::8],)) for i in range(8)]
        for t in ths:
            t.start()
        for t in ths:
            t.join(120)
        assert not errors, errors[:3]
    finally:
        for c in socks:
            c.close()
    wait_open_conns(0)


def t_vanishing_clients():
    """Partial requests then FIN, partial requests then RST, and clients
    that reset while their reservation is at the writer: nothing leaks."""
    wait_open_conns(0)
    partial = b"GET /v1/skus/demo HTTP/1.1\r\nHost: x\r\nX-Half: "
    for i in range(150):
        s = socket.create_connection((HOST, PORT), timeout=5)
        s.sendall(partial)
        if i % 2:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST
        s.close()
    for i in range(50):
        s = socket.create_connection((HOST, PORT), timeout=5)
        s.sendall(fc.Conn.build("POST", "/v1/skus/demo/reservations",
                                {"Authorization": "Bearer " + token("vanish-%d-%s" % (i, uuid.uuid4().hex[:6])),
                                 "Idempotency-Key": uuid.uuid4().hex}, {"quantity": 1}))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
    # Half-close after a whole request: the answer still comes, then EOF.
    s = socket.create_connection((HOST, PORT), timeout=5)
    s.sendall(fc.Conn.build("GET", "/v1/skus/demo"))
    s.shutdown(socket.SHUT_WR)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    assert data.startswith(b"HTTP/1.1 200"), data[:100]
    wait_open_conns(0)
    # and the server still serves
    with conn() as c:
        assert c.request("GET", "/v1/skus/demo").status == 200


def t_http_counters():
    """/metrics carries the same HTTP counters under --dpdk as under io_uring
    (dataplane/backend.h): answers by route and status, connections, ring
    depth, besides the backend's own flashsale_dpdk_* samples."""
    before = 0
    for line in metrics_text().splitlines():
        if line.startswith('flashsale_http_answers_total{route="sku_get",status="200"} '):
            before = int(float(line.split()[1]))
    with conn() as c:
        assert c.request("GET", "/v1/skus/demo").status == 200
    text = metrics_text()
    for name in ("flashsale_connections_open ", "flashsale_connections_accepted_total ",
                 'flashsale_ring_depth{worker="0"} ', "flashsale_dpdk_tcp_connections_open "):
        assert any(line.startswith(name) for line in text.splitlines()), "no %s in /metrics" % name.strip()
    after = [int(float(line.split()[1])) for line in text.splitlines()
             if line.startswith('flashsale_http_answers_total{route="sku_get",status="200"} ')]
    assert after and after[0] >= before + 1, (before, after)


def t_ip_rules():
    """flashctl ip deny of the client's address answers 403 on the DPDK path
    too (lwIP gives the route the peer address), and ip remove lifts it."""
    sock = os.path.join(A.data_dir, "admin.sock")
    with conn() as c:
        me = c.sock.getsockname()[0]

    def reserve():
        tok = token("dpdk-ip-" + uuid.uuid4().hex[:8])
        with conn() as c:
            return c.request("POST", "/v1/skus/demo/reservations",
                             {"Authorization": "Bearer " + tok, "Idempotency-Key": uuid.uuid4().hex},
                             {"quantity": 1})
    p = fc.flashctl("--admin", "unix:" + sock, "ip", "deny", me + "/32")
    assert p.returncode == 0, p.stdout + p.stderr
    try:
        deadline = time.time() + 5   # the rule reaches the lanes with the next published state
        r = reserve()
        while r.status != 403 and time.time() < deadline:
            time.sleep(0.1)
            r = reserve()
        assert r.status == 403, "reservation from a denied address: %r" % r
    finally:
        p = fc.flashctl("--admin", "unix:" + sock, "ip", "remove", me + "/32")
        assert p.returncode == 0, p.stdout + p.stderr
    deadline = time.time() + 5
    r = reserve()
    while r.status == 403 and time.time() < deadline:
        time.sleep(0.1)
        r = reserve()
    assert r.status == 201, "after ip remove: %r" % r


def t_per_ip_cap():
    """--connections-per-ip: one address gets the cap and a clear 503 past
    it (per lane with several lanes: a lane process counts its own)."""
    cap, lanes = A.per_ip, int(os.environ.get("FS_DPDK_LANES", "1") or 1)
    if cap <= 0:
        return
    wait_open_conns(0)
    before = metric("flashsale_connections_per_ip_refused_total")
    extra = 16
    socks, refused = [], 0
    try:
        for _ in range(cap + extra):
            c = conn(timeout=10)
            socks.append(c)
        for c in socks:   # an accepted one answers its GET; a refused one got the 503 at once
            c.send_raw(fc.Conn.build("GET", "/v1/skus/demo"))
            try:
                r = c.read_response()
            except (OSError, fc.ConnectionClosed):
                raise AssertionError("a connection got neither an answer nor the 503")
            if r.status == 503:
                assert b"connection limit per address" in r.body, r
                refused += 1
            else:
                assert r.status == 200, r
    finally:
        for c in socks:
            c.close()
    after = metric("flashsale_connections_per_ip_refused_total")
    assert after - before == refused, "metric moved %d, refused %d" % (after - before, refused)
    if lanes == 1:
        assert refused == extra, "cap %d: %d of %d connections refused, want %d" % (cap, refused, cap + extra, extra)
    else:
        assert refused <= extra, refused
    wait_open_conns(0)


def main():
    global A, HOST, PORT
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--per-ip", type=int, default=0, help="the server's --connections-per-ip (0: off)")
    A = ap.parse_args()
    u = urlparse(A.base)
    HOST, PORT = u.hostname, u.port or 80
    check("ICMP echo answered by lwIP", t_icmp_echo)
    check("ARP resolved", t_arp_learned)
    check("GET /v1/skus/demo 200 JSON, unknown 404", t_get_demo)
    check("reservation 201, idempotent repeat 200, read back", t_reserve_idempotent)
    check("pipelining in order (reads + a writer command)", t_pipelining)
    check("Connection: close", t_connection_close)
    check("431 on oversized headers", t_large_request_431)
    check("400 concurrent keep-alive connections", t_many_connections)
    check("vanishing clients leak no connection", t_vanishing_clients)
    check("HTTP counters in /metrics as with io_uring", t_http_counters)
    check("ip deny / remove of the client's address", t_ip_rules)
    check("per-IP connection cap", t_per_ip_cap)
    if FAILED:
        print("%d check(s) failed: %s" % (len(FAILED), ", ".join(FAILED)))
        return 1
    print("all %s checks passed" % "DPDK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
