"""fsclient.py - helpers for flashsale end-to-end tests (python3 stdlib only).

- free_port(), Server (start/stop/kill -9/restart flashsaled on a temp data dir),
- flashctl() / Server.admin() / Server.token() (tokens minted by the CLI),
- mint_token() (HS256 from python with the secret file's bytes, trailing
  whitespace stripped: the documented contract, for bulk minting),
- Conn: a raw-socket HTTP/1.1 client: keep-alive, pipelining (several requests
  in one write, answers read in order by Content-Length), Connection: close,
  arbitrary bytes. Every socket operation has a timeout.

The build directory comes from the environment variable FS_BUILD
(default: build/ at the top of this checkout).
"""
import base64
import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

BUILD = os.environ.get("FS_BUILD", os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "build"))
FLASHSALED = os.path.join(BUILD, "control", "flashsaled")
FLASHCTL = os.path.join(BUILD, "control", "flashctl")
# FS_BASE_URL=http://HOST:PORT (+ FS_DATA_DIR=DIR): attach to a server that is
# already running (the DPDK backend on its veth bed, tests/dpdk/veth_test.sh)
# instead of starting one; tests that restart or kill it are skipped.
BASE_URL = os.environ.get("FS_BASE_URL")
SOCK_TIMEOUT = 10.0


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------- HTTP client

class Response:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers          # lower-case name -> value (last wins)
        self.body = body
        self.raw_head = raw_head

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return "<%d %s %r>" % (self.status, self.reason, self.body[:300])


class ConnectionClosed(Exception):
    pass


class Conn:
    """One TCP connection speaking raw HTTP/1.1."""

    def __init__(self, port, host="127.0.0.1", timeout=SOCK_TIMEOUT):
        self.host, self.port = host, port
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.settimeout(timeout)
        self.buf = b""

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def settimeout(self, t):
        self.sock.settimeout(t)

    def send_raw(self, data):
        if isinstance(data, str):
            data = data.encode()
        self.sock.sendall(data)

    @staticmethod
    def build(method, path, headers=None, body=None, close=False, host="127.0.0.1"):
        """Bytes of one request. body: bytes, str or a JSON-able object."""
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
        if isinstance(body, str):
            body = body.encode()
        lines = ["%s %s HTTP/1.1" % (method, path), "Host: %s" % host]
        hdrs = dict(headers or {})
        for k, v in hdrs.items():
            if v is not None:
                lines.append("%s: %s" % (k, v))
        if body is not None:
            if not any(k.lower() == "content-length" for k in hdrs):
                lines.append("Content-Length: %d" % len(body))
            if not any(k.lower() == "content-type" for k in hdrs):
                lines.append("Content-Type: application/json")
        if close:
            lines.append("Connection: close")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")

    def _fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionClosed("peer closed (buffered %r)" % self.buf[:200])
        self.buf += chunk

    def read_response(self, head_request=False):
        """Reads one answer (status line, headers, Content-Length body)."""
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise ValueError("bad status line %r" % lines[0])
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(":")
            headers[k.strip().lower()] = v.strip()
        if "transfer-encoding" in headers:
            raise ValueError("server answered with Transfer-Encoding: %r" % headers)
        n = 0 if head_request or status in (204, 304) or 100 <= status < 200 \
            else int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return Response(status, reason, headers, body, head)

    def request(self, method, path, headers=None, body=None, close=False):
        self.send_raw(self.build(method, path, headers, body, close))
        return self.read_response(head_request=(method == "HEAD"))

    def pipeline(self, reqs):
        """reqs: list of request bytes (see build()). One write, answers in order."""
        self.send_raw(b"".join(reqs))
        return [self.read_response() for _ in reqs]

    def read_until_close(self, timeout=SOCK_TIMEOUT):
        """Everything until the peer closes (or raises socket.timeout)."""
        self.sock.settimeout(timeout)
        data = self.buf
        self.buf = b""
        while True:
            try:
                chunk = self.sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data

    def is_closed_by_peer(self, timeout=2.0):
        """True when the peer closed (EOF/RST) within timeout, with no more data."""
        self.sock.settimeout(timeout)
        try:
            chunk = self.sock.recv(1)
        except ConnectionResetError:
            return True
        except socket.timeout:
            return False
        return chunk == b""


def auth(token):
    return {"Authorization": "Bearer " + token}


# ---------------------------------------------------------------- tokens

def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def read_secret(path):
    with open(path, "rb") as f:
        return f.read().rstrip(b" \t\r\n\x0b\x0c")


def mint_token(secret, sub, exp=None, tier=None, dev=None, ttl=3600, header=None):
    """HS256 JWT signed with `secret` (bytes). exp defaults to now + ttl."""
    hdr = header if header is not None else {"alg": "HS256", "typ": "JWT"}
    claims = {"sub": sub, "exp": int(time.time()) + ttl if exp is None else exp}
    if tier is not None:
        claims["tier"] = tier
    if dev is not None:
        claims["dev"] = dev
    h = b64url(json.dumps(hdr, separators=(",", ":")).encode())
    c = b64url(json.dumps(claims, separators=(",", ":")).encode())
    sig = hmac.new(secret, (h + "." + c).encode(), hashlib.sha256).digest()
    return h + "." + c + "." + b64url(sig)


MOCKKAFKA = os.environ.get("FS_MOCKKAFKA", os.path.join(BUILD, "tests", "e2e", "mockkafka"))


class MockKafka:
    """librdkafka's mock cluster in a helper process of its own
    (tests/e2e/mockkafka.c), so several flashsaled processes share it:
    bootstrap servers, fault commands. MockKafka.available() says whether
    this build has the helper (it needs librdkafka)."""

    @staticmethod
    def available():
        return os.path.exists(MOCKKAFKA)

    def __init__(self, *topics, brokers=1):
        self.proc = subprocess.Popen([MOCKKAFKA, str(brokers)] + list(topics), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, bufsize=1)
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "bootstrap":
            self.close()
            raise RuntimeError("mockkafka said %r" % line)
        self.bootstrap = line[1]

    def cmd(self, line):
        """One fault command (mockkafka.c): down ID, up ID, leader TOPIC ID, ..."""
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer == "ok", (line, answer)

    def close(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stdout.close()


def flashctl(*args, timeout=30):
    """Runs flashctl; returns CompletedProcess (text)."""
    return subprocess.run([FLASHCTL] + [str(a) for a in args], capture_output=True,
                          text=True, timeout=timeout)


# ---------------------------------------------------------------- server

class Server:
    """A flashsaled on 127.0.0.1:<free port> with a temp data dir.

    Use as a context manager or call stop() in a finally block; cleanup()
    also removes the data dir."""

    def __init__(self, workers=1, demo=True, extra=None, data_dir=None, port=None, prefault=False):
        self.workers = workers
        self.demo = demo
        # Faulting ~1.6 GiB of tables in takes seconds on a fresh VM: tests
        # start servers with --no-prefault unless they test the start-up itself.
        self.prefault = prefault
        self.extra = list(extra or [])
        self.own_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="fs-e2e-")
        self.port = port or free_port()
        self.proc = None
        self.logf = None
        self.starts = 0
        self.host = "127.0.0.1"
        self.attached = bool(BASE_URL)
        if self.attached:
            from urllib.parse import urlparse
            u = urlparse(BASE_URL)
            self.host, self.port = u.hostname, u.port or 80
            self.own_dir = False
            self.data_dir = os.environ.get("FS_DATA_DIR") or self.data_dir

    # -- life cycle
    def argv(self):
        a = [FLASHSALED, "--listen", "127.0.0.1:%d" % self.port, "--data-dir", self.data_dir,
             "--workers", str(self.workers)]
        if not self.demo:
            a.append("--no-demo")
        if not self.prefault:
            a.append("--no-prefault")
        return a + self.extra

    @property
    def log_path(self):
        return os.path.join(self.data_dir, "server-%d.log" % self.starts)

    # How often start() found the port still held by the previous instance
    # (see start(retry_busy=...)); reported by the tests that care.
    port_busy_retries = 0

    def start(self, wait=True, timeout=30, retry_busy=True):
        """Starts flashsaled; with wait, until /readyz answers 200.

        retry_busy: right after a previous instance on the same port exited
        (kill -9 especially), the kernel may still hold its listening socket
        for a few ms (io_uring tears its rings down asynchronously), and
        flashsaled exits with 'Address already in use'. With retry_busy the
        start is retried for up to 3 s (counted in Server.port_busy_retries);
        test_crash.py checks that without it."""
        if self.attached:
            if self.starts:
                import unittest
                raise unittest.SkipTest("FS_BASE_URL: cannot restart an attached server")
            self.starts += 1
            return self
        assert self.proc is None or self.proc.poll() is not None
        deadline = time.time() + 3
        while True:
            self.starts += 1
            self.logf = open(self.log_path, "wb")
            self.proc = subprocess.Popen(self.argv(), stdout=self.logf, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
            if not wait:
                return self
            try:
                self.wait_healthy(timeout)
                return self
            except RuntimeError:
                if not (retry_busy and self.proc.poll() is not None and "Address already in use" in self.log()
                        and time.time() < deadline):
                    raise
                Server.port_busy_retries += 1
                log("fsclient: port %d still busy after the previous flashsaled exited; retrying" % self.port)
                self.logf.close()
                self.logf = None
                time.sleep(0.05)

    def wait_healthy(self, timeout=30, path="/readyz"):
        """/readyz (200 once the admin socket is up too; /healthz answers earlier)."""
        deadline = time.time() + timeout
        last = None
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError("flashsaled exited rc=%s:\n%s" % (self.proc.returncode, self.log()))
            try:
                with Conn(self.port, host=self.host, timeout=2) as c:
                    r = c.request("GET", path)
                    if r.status == 200:
                        return
                    last = r
            except (OSError, ConnectionClosed, ValueError) as e:
                last = e
            time.sleep(0.05)
        raise RuntimeError("flashsaled not healthy after %ss (%r):\n%s" % (timeout, last, self.log()))

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")[-4000:]
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout=15):
        """SIGTERM, then SIGKILL if it did not exit. Returns the exit code."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                rc = self.proc.wait(10)
                log("flashsaled ignored SIGTERM for %ss; killed" % timeout)
        if self.logf:
            self.logf.close()
            self.logf = None
        return rc

    def kill9(self):
        if self.attached and self.starts:
            import unittest
            raise unittest.SkipTest("FS_BASE_URL: cannot kill an attached server")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self.logf:
            self.logf.close()
            self.logf = None

    def restart(self, kill=False, timeout=30):
        self.kill9() if kill else self.stop()
        return self.start(timeout=timeout)

    def cleanup(self):
        if self.attached:
            return
        try:
            self.kill9()
        finally:
            if self.own_dir and not os.environ.get("FS_KEEP"):
                shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self):
        if self.proc is None:
            self.start()
        return self

    def __exit__(self, *a):
        self.cleanup()

    # -- control plane
    @property
    def admin_addr(self):
        return "unix:" + os.path.join(self.data_dir, "admin.sock")

    @property
    def secret_file(self):
        return os.path.join(self.data_dir, "jwt.secret")

    def admin(self, *args, timeout=30):
        return flashctl("--admin", self.admin_addr, *args, timeout=timeout)

    def admin_ok(self, *args):
        p = self.admin(*args)
        if p.returncode != 0:
            raise AssertionError("flashctl %s -> rc=%d out=%r err=%r" % (
                " ".join(map(str, args)), p.returncode, p.stdout, p.stderr))
        return p.stdout

    def create_sale(self, sku, stock, per_user=1, hold="120s", waitlist=None, open_=True, extra=()):
        args = ["sale", "create", sku, "--stock", stock, "--per-user", per_user, "--hold", hold]
        if waitlist is not None:
            args += ["--waitlist", waitlist]
        self.admin_ok(*(args + list(extra)))
        if open_:
            self.admin_ok("sale", "open", sku)

    def token(self, user, tier=None, ttl=None):
        args = ["token", "--user", user, "--jwt-secret-file", self.secret_file]
        if tier is not None:
            args += ["--tier", tier]
        if ttl is not None:
            args += ["--ttl", ttl]
        p = flashctl(*args)
        if p.returncode != 0:
            raise AssertionError("flashctl token failed: %r %r" % (p.stdout, p.stderr))
        return p.stdout.strip()

    def secret(self):
        return read_secret(self.secret_file)

    def py_token(self, user, **kw):
        return mint_token(self.secret(), user, **kw)

    # -- public API shortcuts (a fresh connection each, closed after)
    def conn(self, timeout=SOCK_TIMEOUT):
        return Conn(self.port, host=self.host, timeout=timeout)

    def call(self, method, path, token=None, key=None, body=None, headers=None):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = "Bearer " + token
        if key is not None:
            h["Idempotency-Key"] = key
        with self.conn() as c:
            return c.request(method, path, h, body)

    def sku(self, sku):
        return self.call("GET", "/v1/skus/" + sku)

    def counters(self, sku):
        r = self.sku(sku)
        assert r.status == 200, r
        return r.json()

    def reserve(self, token, sku, key, quantity=None, body=None):
        if body is None and quantity is not None:
            body = {"quantity": quantity}
        return self.call("POST", "/v1/skus/%s/reservations" % sku, token, key, body if body is not None else b"")

    def get_res(self, token, rid):
        return self.call("GET", "/v1/reservations/" + rid, token)

    def cancel(self, token, rid):
        return self.call("DELETE", "/v1/reservations/" + rid, token)

    def checkout(self, token, rid, key, payment_token):
        return self.call("POST", "/v1/reservations/%s/checkout" % rid, token, key,
                         {"payment_token": payment_token})

    def get_order(self, token, oid):
        return self.call("GET", "/v1/orders/" + oid, token)


def conserved(c):
    """available + reserved + sold == total, all >= 0."""
    return (c["available"] + c["reserved"] + c["sold"] == c["total"]
            and c["available"] >= 0 and c["reserved"] >= 0 and c["sold"] >= 0)


def never_reading(port, n, hogs):
    """Opens n connections to port with a tiny receive window, to send on
    and never read (slow readers), appending each to hogs as it opens (the
    caller closes them, also after a failure midway)."""
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        hogs.append(s)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(5)
        s.connect(("127.0.0.1", port))
        s.setblocking(False)
    return hogs


def pipeline_until_stalled(hogs, blob, pause_s=0.05, chunk=1 << 20):
    """Sends blob on every hog until ten rounds in a row move no byte: the
    server stopped reading them (its output to them stays unread). Returns
    the bytes sent on each."""
    sent = [0] * len(hogs)
    stalled = 0
    while stalled < 10:
        progress = False
        for i, s in enumerate(hogs):
            try:
                while sent[i] < len(blob):
                    sent[i] += s.send(blob[sent[i]:sent[i] + chunk])
                    progress = True
            except BlockingIOError:
                pass
        stalled = 0 if progress else stalled + 1
        time.sleep(pause_s)
    return sent


def wait_for(pred, timeout=5.0, interval=0.05):
    """Polls pred() until truthy or timeout; returns the last value."""
    deadline = time.time() + timeout
    v = pred()
    while not v and time.time() < deadline:
        time.sleep(interval)
        v = pred()
    return v
