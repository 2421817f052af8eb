#!/usr/bin/env python3
"""test_history.py - restart time and disk stay bounded by configuration,
not by history.

BoundedRestart: 1,000,000 decisions (reservations and cancels) go through
the real writer without HTTP (tests/e2e/history.c: its batch loop, journal,
snapshotter and segment deletion, no fdatasync) into a data dir with
--snapshot-every-mb 8 --segment-mb 4 --retention 1s. Then the real
flashsaled starts on that data dir. Checked: it starts from the newest
snapshot; the journal tail after it is at most one interval plus what was
appended while that snapshot was being written (2 intervals); no segment
lies wholly before the older kept snapshot (two are kept: a damaged newest
one falls back to the one before it), so the journal directory holds at
most 3 intervals + 2 segments whatever the history; the sale's counters are
the ones the history ended with; flashsale-journal verifies snapshot + tail;
the restart takes a tail of at most 2 intervals of batches. The history
is paced at FS_HISTORY_RATE decisions/s (default 100000, four times the
appliance's reservation target): in-process the writer alone would decide
faster than the snapshotter's copy replays on a loaded 2-core box.

FS_HISTORY_DECISIONS sets the history length (default 1000000; the long
version in RELIABILITY.md uses 10000000)."""
import json
import os
import random
import re
import struct
import subprocess
import sys
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

HISTORY = os.environ.get("FS_HISTORY", os.path.join(fc.BUILD, "tests", "e2e", "history"))
JOURNAL_TOOL = os.path.join(fc.BUILD, "tools", "flashsale-journal")
DECISIONS = int(os.environ.get("FS_HISTORY_DECISIONS", "1000000"))
# the appliance's own target is 25k reservations/s; 100k/s keeps CI short
RATE = int(os.environ.get("FS_HISTORY_RATE", "100000"))
SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
print("test_history: seed %d (rerun with FS_SEED=%d)" % (SEED, SEED), file=sys.stderr, flush=True)
INTERVAL = 8 << 20
SEGMENT = 4 << 20
LIMITS = ["--users-max", "200000", "--reservations-max", "1000000", "--idempotency-keys-max", "2000000"]


def batches(path):
    """(seq, bytes on disk) of every batch in a journal segment."""
    out = []
    with open(path, "rb") as f:
        data = f.read()
    off = 0
    while off + 64 <= len(data):
        magic, _ver, _flags, seq, _t, _h, _n, body_len = struct.unpack_from("<IHHQqQII", data, off)
        if magic != 0x524a4c46:
            break
        size = (64 + body_len + 7) & ~7
        out.append((seq, size))
        off += size
    return out


def snapshots(data_dir):
    d = os.path.join(data_dir, "snapshots")
    return sorted(int(f[:20]) for f in os.listdir(d) if re.match(r"^\d{20}\.snap$", f))


class BoundedRestart(unittest.TestCase):
    @staticmethod
    def journal(jdir, after):
        """(segment names, bytes of batches after `after`, bytes of all
        batches, last sequence) of a journal directory."""
        segs = sorted(os.listdir(jdir))
        tail = total = last = 0
        for s in segs:
            b = batches(os.path.join(jdir, s))
            tail += sum(size for seq, size in b if seq > after)
            total += sum(size for _seq, size in b)
            last = max([last] + [seq for seq, _ in b])
        return segs, tail, total, last

    def setUp(self):
        self.srv = fc.Server(demo=False, extra=LIMITS + [
            "--snapshot-every-mb", "8", "--segment-mb", "4", "--retention", "1s"])

    def tearDown(self):
        self.srv.cleanup()

    def test_restart_after_a_long_history(self):
        srv = self.srv
        run = subprocess.run([HISTORY, "--data-dir", srv.data_dir, "--decisions", str(DECISIONS),
                              "--snapshot-every-mb", "8", "--segment-mb", "4", "--retention-ms", "1000",
                              "--rate", str(RATE)],
                             capture_output=True, text=True, timeout=600)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        hist = json.loads(run.stdout.strip().splitlines()[-1])
        print("test_history: %s" % hist, file=sys.stderr, flush=True)
        self.assertEqual(hist["decisions"], DECISIONS)
        self.assertGreater(hist["segments_dropped"], 0)
        snaps = snapshots(srv.data_dir)
        self.assertTrue(1 <= len(snaps) <= 2, snaps)
        newest, oldest = snaps[-1], snaps[0]
        jdir = os.path.join(srv.data_dir, "journal")
        segs, tail_bytes, on_disk, last_seq = self.journal(jdir, newest)
        self.assertEqual(last_seq, hist["seq"])
        print("test_history: %d decisions, %d batches; snapshots %s; %d segments (%.1f MiB of batches); "
              "tail after the newest snapshot %.2f MiB (%d batches)"
              % (DECISIONS, last_seq, snaps, len(segs), on_disk / 2**20, tail_bytes / 2**20, last_seq - newest),
              file=sys.stderr, flush=True)
        self.assertLessEqual(tail_bytes, 2 * INTERVAL)
        # the real flashsaled on it: snapshot + that tail
        srv.start(timeout=120)
        m = re.search(r"start-up: snapshot (\d+) loaded .*journal tail of (\d+) batches", srv.log())
        self.assertTrue(m, srv.log())
        self.assertEqual(int(m.group(1)), newest)
        self.assertEqual(int(m.group(2)), last_seq - newest)
        # once running, it drops what lies before the older kept snapshot
        deadline = time.time() + 30
        while True:
            segs = sorted(os.listdir(jdir))
            # a segment just prepared holds no batch yet (pre-zeroed): skip it
            first = [b for b in (batches(os.path.join(jdir, x)) for x in segs) if b][:1]
            if not first or first[0][-1][0] > oldest or time.time() > deadline:
                break
            time.sleep(0.2)
        for x in segs:
            b = batches(os.path.join(jdir, x))
            if not b:
                continue   # prepared, not yet written
            self.assertGreater(b[-1][0], oldest, "segment %s lies wholly before snapshot %d" % (x, oldest))
        print("test_history: after the restart: %d segments" % len(segs), file=sys.stderr, flush=True)
        self.assertLessEqual(len(segs) * SEGMENT, 3 * INTERVAL + 2 * SEGMENT)
        c = srv.counters("hist")
        self.assertTrue(fc.conserved(c), c)
        self.assertEqual(c["total"], hist["total"])
        self.assertEqual(c["sold"], hist["sold"])
        self.assertLessEqual(c["reserved"], hist["reserved"])   # holds may have expired since
        srv.stop()
        if os.path.exists(JOURNAL_TOOL):
            v = subprocess.run([JOURNAL_TOOL, "verify", srv.data_dir], capture_output=True, text=True, timeout=300)
            self.assertEqual(v.returncode, 0, v.stdout + v.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
