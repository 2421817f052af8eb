#!/usr/bin/env python3
"""test_many_conns.py - the io_uring dataplane under many connections at once.

10,000 clients connect to one worker and each sends a request at once, in
waves, so that accept and receive completions pile up faster than the
worker reaps them: the completion queue overflows and the submission queue
fills while the worker arms receives and sends. The server must never
abort (it once died on an assertion in sqe_get at ~10k connections) and
must answer every request; a second round on the same keep-alive
connections must be answered too. FS_MANY_CONNS=N changes the count."""
import os
import resource
import selectors
import signal
import socket
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

N = int(os.environ.get("FS_MANY_CONNS", "10000"))
# the client holds N sockets: raise its descriptor limit as far as allowed
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
if _hard != resource.RLIM_INFINITY and _hard < N + 256:
    fc.log("test_many_conns: descriptor hard limit %d: %d connections instead of %d" % (_hard, _hard - 256, N))
    N = _hard - 256
resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, min(_hard, N + 256)) if _hard != resource.RLIM_INFINITY
                                            else N + 256, _hard))
REQ = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"
DEADLINE_S = 120   # generous: a loaded 2-core box still passes


def open_all(port, n):
    """n non-blocking connections; each sends REQ as soon as it is connected."""
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex(("127.0.0.1", port))
        socks.append(s)
        sel.register(s, selectors.EVENT_WRITE)
    return sel, socks


def answer_all(sel, socks, first, sent_already=False):
    """Sends REQ on each socket once writable (first round) or at once, then
    reads until every socket has one whole 200 answer. Returns how many
    answered 200."""
    pending = {s.fileno(): b"" for s in socks}
    sent = set()
    if not first:
        for s in socks:
            if not sent_already:
                s.sendall(REQ)
            sent.add(s.fileno())
            sel.modify(s, selectors.EVENT_READ)
    ok = 0
    deadline = time.time() + DEADLINE_S
    while pending and time.time() < deadline:
        for key, ev in sel.select(timeout=1):
            s = key.fileobj
            fd = s.fileno()
            if fd not in pending:
                continue
            if ev & selectors.EVENT_WRITE and fd not in sent:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise AssertionError("connect failed: %s" % os.strerror(err))
                s.sendall(REQ)
                sent.add(fd)
                sel.modify(s, selectors.EVENT_READ)
                continue
            data = s.recv(4096)
            if not data:
                raise AssertionError("connection closed before its answer (server alive: see test)")
            buf = pending[fd] + data
            head, sep, body = buf.partition(b"\r\n\r\n")
            if not sep:
                pending[fd] = buf
                continue
            length = 0
            for line in head.split(b"\r\n")[1:]:
                k, _, v = line.partition(b":")
                if k.strip().lower() == b"content-length":
                    length = int(v)
            if len(body) < length:
                pending[fd] = buf
                continue
            ok += head.startswith(b"HTTP/1.1 200")
            del pending[fd]
    return ok


class ManyConnections(unittest.TestCase):
    def test_ten_thousand_at_once(self):
        srv = fc.Server(workers=1, extra=["--connections", str(N + 100)])
        srv.start()
        socks = []
        try:
            sel, socks = open_all(srv.port, N)
            ok = answer_all(sel, socks, True)
            self.assertTrue(srv.alive(), "flashsaled died:\n%s" % srv.log())
            self.assertEqual(ok, N)
            # the worker is stopped while every connection sends its next
            # request: the completions reach it all at once, more than its
            # completion queue holds
            os.kill(srv.proc.pid, signal.SIGSTOP)
            try:
                for s in socks:
                    s.send(REQ)
            finally:
                os.kill(srv.proc.pid, signal.SIGCONT)
            ok = answer_all(sel, socks, False, sent_already=True)
            self.assertTrue(srv.alive(), "flashsaled died:\n%s" % srv.log())
            self.assertEqual(ok, N)
            ok = answer_all(sel, socks, False)   # and again, running
            self.assertTrue(srv.alive(), "flashsaled died:\n%s" % srv.log())
            self.assertEqual(ok, N)
        finally:
            for s in socks:
                s.close()
            alive = srv.alive()
            log = srv.log()
            rc = srv.stop()
            srv.cleanup()
        self.assertTrue(alive, log)
        self.assertEqual(rc, 0, log)


if __name__ == "__main__":
    unittest.main()
