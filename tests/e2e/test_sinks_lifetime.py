#!/usr/bin/env python3
"""test_sinks_lifetime.py - the PostgreSQL sink holds journal segments back
while snapshots are taken, then lets them go (issue 15).

Needs a real PostgreSQL (FS_TEST_PG, as test_sinks_e2e.py; exits 77
without it). flashsaled --postgres DB --segment-mb 1 --snapshot-every-mb 1
--archive ARCH:
  1. PostgreSQL up: reservations and cancels over ~2 segments, the sink
     catches up, snapshots are taken: segments are archived (journal_first_seq
     moves) and none is held by a sink.
  2. PostgreSQL away (connections refused, backends terminated): ~3 more
     segments and two snapshots. The segments the sink has not consumed stay:
     the first kept segment holds the batch after the sink's cursor,
     flashsale_journal_segments_held_by_sinks is 1 -- while without the gate
     they would have gone (the older kept snapshot is past the cursor).
  3. PostgreSQL back: the sink catches up (lag 0), a snapshot, and the held
     segments go (journal_first_seq passes the old cursor, held 0).
  4. flashsale-reconcile over the whole history (the archive + the live
     journal, linked into one directory): 0 differences, every batch
     compared; the counters are conserved and PostgreSQL holds every
     acknowledged reservation.
"""
import os
import random
import re
import shutil
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402
from test_sinks_e2e import (psql, sale_status, wait_lag_zero, Fatal, check, FAILURES,  # noqa: E402
                            pg_or_skip, scratch_db, drop_scratch_db, check_reconcile)

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))


def metric(srv, name):
    for line in srv.admin_ok("metrics").splitlines():
        if line.startswith(name + " "):
            return int(float(line.split()[1]))
    raise Fatal("no metric " + name)


def round_trip(srv, secret, tag, n, conns=16):
    """n reservations by distinct users with long ids (bigger records, so
    fewer requests fill a segment), then a cancel of each, over `conns`
    connections in parallel (so the writer groups them into large batches:
    the PostgreSQL sink applies one transaction per batch). Returns the
    acknowledged reservation ids."""
    pad = "x" * 40
    out, errors = [[] for _ in range(conns)], []

    def worker(w):
        try:
            with srv.conn(timeout=60) as c:
                for start in range(w * 50, n, conns * 50):
                    reqs, toks = [], []
                    for i in range(start, min(n, start + 50)):
                        tok = fc.mint_token(secret, f"{tag}-{i}-{pad}", tier=0)
                        toks.append(tok)
                        reqs.append(fc.Conn.build("POST", "/v1/skus/pgl/reservations",
                                                  {"Authorization": "Bearer " + tok,
                                                   "Idempotency-Key": f"k-{tag}-{i}-{pad}"}, b""))
                    cancels = []
                    for tok, r in zip(toks, c.pipeline(reqs)):
                        if r.status != 201:
                            raise Fatal(f"reservation answered {r.status}: {r.body[:200]!r}")
                        rid = r.json()["reservation_id"]
                        out[w].append(rid)
                        cancels.append(fc.Conn.build("DELETE", "/v1/reservations/" + rid,
                                                     {"Authorization": "Bearer " + tok}, None))
                    for r in c.pipeline(cancels):
                        if r.status != 200:
                            raise Fatal(f"cancel answered {r.status}: {r.body[:200]!r}")
        except Exception as e:  # noqa: BLE001 - reported by the caller
            errors.append(e)
    ts = [threading.Thread(target=worker, args=(w,)) for w in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    if errors:
        raise Fatal(str(errors[0]))
    return [rid for part in out for rid in part]


def cursor(srv):
    """(journal_seq, the PostgreSQL sink's last applied batch)."""
    st = sale_status(srv, "pgl")
    lag = {x["name"]: x["lag"] for x in st["sinks"]}["postgres"]
    return st["journal_seq"], st["journal_seq"] - lag


def main():
    pg = pg_or_skip("test_sinks_lifetime")
    if not pg:
        return 77
    print(f"test_sinks_lifetime: seed {SEED}", flush=True)
    dbname, conninfo = scratch_db(pg, "fs_e2e_sinklife")
    arch = tempfile.mkdtemp(prefix="fs-arch-")
    merged = tempfile.mkdtemp(prefix="fs-merged-")
    srv = fc.Server(demo=False, extra=["--postgres", conninfo, "--segment-mb", "1", "--snapshot-every-mb", "1",
                                       "--archive", arch, "--no-pin"])
    try:
        srv.start()
        srv.create_sale("pgl", 1000000, per_user=0)
        secret = srv.secret()
        acked = []
        # -- 1. PostgreSQL up: segments go once snapshots pass them
        for r in range(2):
            acked += round_trip(srv, secret, f"a{r}", 3000)
        ok, _ = wait_lag_zero(srv, ["pgl"], sinks=("postgres",), timeout=120)
        check(ok, "the PostgreSQL sink caught up")
        for _ in range(2):
            srv.admin_ok("snapshot")
        check(fc.wait_for(lambda: metric(srv, "flashsale_journal_first_seq") > 1, timeout=20),
              "with PostgreSQL up, segments before the snapshots were archived")
        check(metric(srv, "flashsale_journal_segments_held_by_sinks") == 0, "no segment held by a sink")

        # -- 2. PostgreSQL away: what it has not consumed stays
        psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        psql(pg, f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{dbname}'")
        time.sleep(0.5)
        for r in range(3):
            acked += round_trip(srv, secret, f"b{r}", 3000)
        for _ in range(2):
            srv.admin_ok("snapshot")
        time.sleep(2.5)   # segment deletion is looked at once a second
        seq, cur = cursor(srv)
        first = metric(srv, "flashsale_journal_first_seq")
        snap = metric(srv, "flashsale_snapshot_seq")
        print(f"PostgreSQL away: journal_seq {seq}, sink cursor {cur}, first kept batch {first}, "
              f"newest snapshot {snap}", flush=True)
        check(cur < seq, f"the sink lags while PostgreSQL is away (cursor {cur} < {seq})")
        check(first <= cur + 1, f"the first kept segment holds the batch after the sink's cursor ({first} <= {cur + 1})")
        snaps = sorted(int(f[:20]) for f in os.listdir(os.path.join(srv.data_dir, "snapshots"))
                       if re.match(r"^\d{20}\.snap$", f))
        check(len(snaps) == 2 and snaps[0] > cur + 1,
              f"without the sink's gate those segments would have gone (kept snapshots {snaps}, cursor {cur})")
        check(metric(srv, "flashsale_journal_segments_held_by_sinks") == 1, "segments_held_by_sinks is 1")

        # -- 3. PostgreSQL back: it catches up, then the segments go
        psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        ok, _ = wait_lag_zero(srv, ["pgl"], sinks=("postgres",), timeout=120)
        check(ok, "the PostgreSQL sink caught up after the outage")
        srv.admin_ok("snapshot")
        moved = fc.wait_for(lambda: metric(srv, "flashsale_journal_first_seq") > cur + 1 and
                            metric(srv, "flashsale_journal_segments_held_by_sinks") == 0, timeout=20)
        check(moved, f"the held segments went once it caught up (first kept batch "
                     f"{metric(srv, 'flashsale_journal_first_seq')} > {cur + 1})")

        # -- 4. reconcile over the archive + the live journal
        c = srv.counters("pgl")
        check(fc.conserved(c) and c["reserved"] == 0 and c["sold"] == 0, f"counters conserved: {c}")
        n_res = int(psql(conninfo, "SELECT count(*) FROM reservations"))
        check(n_res == len(acked), f"PostgreSQL holds {n_res} reservations == {len(acked)} acknowledged")
        srv.stop()
        for d in (arch, os.path.join(srv.data_dir, "journal")):
            for f in os.listdir(d):
                if f.endswith(".seg"):
                    os.symlink(os.path.join(d, f), os.path.join(merged, f))
        check_reconcile(None, conninfo, "reconcile over archive + journal", journal=merged, timeout=300)
    except Fatal as e:
        check(False, f"stopped early: {e}")
        print(srv.log()[-3000:])
    finally:
        srv.cleanup()
        shutil.rmtree(arch, ignore_errors=True)
        shutil.rmtree(merged, ignore_errors=True)
        drop_scratch_db(pg, dbname)
    print(f"test_sinks_lifetime: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
