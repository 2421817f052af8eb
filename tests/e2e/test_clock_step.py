#!/usr/bin/env python3
"""test_clock_step.py - a wall-clock step neither fires nor disables the
connection deadlines (issue 14): they run on CLOCK_MONOTONIC.

flashsaled runs under libfaketime (Debian package `faketime`) with its
offset in a file read on every call and the monotonic clock left real
(DONT_FAKE_MONOTONIC=1): the test steps the wall clock back and forth
while connections are open.
  - a request started just before the clock steps back 2 h still gets its
    408 (a wall-clock deadline would wait 2 h more);
  - an idle keep-alive connection survives a step 2 h forward (a wall-clock
    deadline would close it at once).
Skipped (exit 77) without libfaketime."""
import glob
import os
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

LIBS = glob.glob("/usr/lib/*/faketime/libfaketimeMT.so.1")


class FakeClockServer(fc.Server):
    def __init__(self, offset_file, **kw):
        super().__init__(**kw)
        self.offset_file = offset_file

    def argv(self):
        return ["env", "LD_PRELOAD=" + LIBS[0], "FAKETIME_TIMESTAMP_FILE=" + self.offset_file,
                "FAKETIME_NO_CACHE=1", "DONT_FAKE_MONOTONIC=1"] + super().argv()


class ClockStepTest(unittest.TestCase):
    def test_deadlines_ignore_wall_clock_steps(self):
        data = fc.tempfile.mkdtemp(prefix="fs-clock-")
        offset = os.path.join(data, "faketime.rc")

        def step(s):
            with open(offset + ".tmp", "w") as f:
                f.write(s + "\n")
            os.replace(offset + ".tmp", offset)
        step("+0")
        with FakeClockServer(offset, workers=1, data_dir=data,
                             extra=["--idle-timeout-ms", "30000", "--request-timeout-ms", "2000"]) as srv:
            idle = srv.conn(timeout=10)
            self.assertEqual(idle.request("GET", "/healthz").status, 200)
            slow = srv.conn(timeout=60)
            slow.send_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")    # the request starts ...
            time.sleep(0.5)                                         # (let the server see it first)
            step("-7200")                                           # ... and the clock steps back 2 h
            raw = slow.read_until_close(60)
            self.assertTrue(raw.startswith(b"HTTP/1.1 408"), raw[:200])
            step("+7200")                                           # now 2 h forward
            time.sleep(2)                                           # several housekeeping rounds
            self.assertEqual(idle.request("GET", "/healthz").status, 200, "idle connection closed by a clock step")
            idle.close()
            slow.close()
            self.assertTrue(srv.alive())


if __name__ == "__main__":
    if not LIBS:
        print("test_clock_step.py: SKIPPED: libfaketime not installed (apt-get install faketime)", file=sys.stderr)
        sys.exit(77)
    unittest.main(verbosity=2)
