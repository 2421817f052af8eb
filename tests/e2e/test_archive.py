#!/usr/bin/env python3
"""test_archive.py - `flashctl sale archive SKU` end to end (issue 15).

Needs a real PostgreSQL (FS_TEST_PG, as test_sinks_e2e.py; exits 77
without it). flashsaled --postgres DB --retention 1s --skus-max 2:
  1. sale A: 6 users reserve, 2 pay, 1 cancels, 3 holds expire (1 s).
     Archive while open: 409 bad_state. A second sale B fills the table: a
     third one is refused 503 overloaded.
  2. PostgreSQL away, A closed, retention passes: archive answers 409
     sinks_behind (the sink has not consumed the close). PostgreSQL back,
     the sink catches up: archive 200; GET /v1/skus/A 404; A's reservation
     and order ids answer 404 with the reclaimed detail.
  3. The slot is free: C is created. B (no reservation) closed and archived
     at once; A is created again with fresh counters, a reservation of the
     new A reads back with sku "A".
  4. kill -9 and restart: the new A and C are there, B stays archived.
  5. PostgreSQL: the old A's row is in sales_archive with its final counters
     (sold 2), `sales` holds the new A and C; flashsale-reconcile: 0
     differences. `flashctl report B` is the statement of an archived sale.
"""
import os
import random
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402
from test_sinks_e2e import (psql, wait_lag_zero, Fatal, check, FAILURES,  # noqa: E402
                            pg_or_skip, scratch_db, drop_scratch_db, check_reconcile)

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))


def refused(srv, args, word):
    p = srv.admin(*args)
    return p.returncode != 0 and word in (p.stdout + p.stderr), (p.returncode, p.stdout.strip(), p.stderr.strip())


def sale_A(srv, secret, rng):
    """6 reservations on A: 2 paid, 1 cancelled, 3 left to expire. Returns
    (token, reservation id, order id) of a paid one."""
    toks = [fc.mint_token(secret, f"a-u{i}", tier=0) for i in range(6)]
    rids = []
    for i, t in enumerate(toks):
        r = srv.reserve(t, "A", f"k{i}")
        if r.status != 201:
            raise Fatal(f"reserve on A: {r.status} {r.body[:200]!r}")
        rids.append(r.json()["reservation_id"])
    order = rng.sample(range(6), 6)
    paid = None
    for i in order[:2]:
        r = srv.checkout(toks[i], rids[i], f"co{i}", "tok_ok")
        if r.status != 200:
            raise Fatal(f"checkout on A: {r.status} {r.body[:200]!r}")
        paid = (toks[i], rids[i], r.json()["order_id"])
    r = srv.cancel(toks[order[2]], rids[order[2]])
    if r.status != 200:
        raise Fatal(f"cancel on A: {r.status}")
    return paid


def main():
    pg = pg_or_skip("test_archive")
    if not pg:
        return 77
    print(f"test_archive: seed {SEED} (rerun with FS_SEED={SEED})", flush=True)
    rng = random.Random(SEED)
    dbname, conninfo = scratch_db(pg, "fs_e2e_archive")
    srv = fc.Server(demo=False, extra=["--postgres", conninfo, "--retention", "1s", "--skus-max", "2", "--no-pin"])
    try:
        srv.start()
        secret = srv.secret()
        # -- 1. a sale, refusals while it is open and while the table is full
        srv.create_sale("A", 10, per_user=1, hold="1s")
        tok, rid, oid = sale_A(srv, secret, rng)
        ok, why = refused(srv, ["sale", "archive", "A"], "bad_state")
        check(ok, f"an open sale is not archived (409 bad_state): {why}")
        srv.create_sale("B", 5)
        ok, why = refused(srv, ["sale", "create", "C", "--stock", "1"], "overloaded")
        check(ok, f"--skus-max 2: a third sale is refused (503 overloaded): {why}")

        # -- 2. the sink must have consumed the sale first
        ok, _ = wait_lag_zero(srv, ["A"], sinks=("postgres",), timeout=60)
        check(ok, "the PostgreSQL sink caught up")
        psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS false")
        psql(pg, f"SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{dbname}'")
        srv.admin_ok("sale", "close", "A")
        time.sleep(3.0)   # holds expire (1 s), retention reclaims them (1 s after)
        ok, why = refused(srv, ["sale", "archive", "A"], "sinks_behind")
        check(ok, f"with PostgreSQL away, archive answers 409 sinks_behind: {why}")
        psql(pg, f"ALTER DATABASE {dbname} ALLOW_CONNECTIONS true")
        ok, _ = wait_lag_zero(srv, ["A"], sinks=("postgres",), timeout=60)
        check(ok, "the PostgreSQL sink caught up after the outage")
        p = None
        for _ in range(50):   # 409 retained until the RECLAIM of its last reservation
            p = srv.admin("sale", "archive", "A")
            if p.returncode == 0:
                break
            time.sleep(0.2)
        check(p.returncode == 0, f"archive A once the sink consumed it: {p.stdout.strip()} {p.stderr.strip()}")
        check(srv.sku("A").status == 404, "GET /v1/skus/A after the archive: 404")
        r = srv.get_res(tok, rid)
        check(r.status == 404 and "expired from the appliance" in r.body.decode(),
              f"the archived sale's reservation: 404 reclaimed ({r.status} {r.body[:120]!r})")
        r = srv.get_order(tok, oid)
        check(r.status == 404, f"the archived sale's order: 404 ({r.status})")

        # -- 3. the slot is reused; the name can be created again
        srv.create_sale("C", 3)
        srv.admin_ok("sale", "close", "B")
        srv.admin_ok("sale", "archive", "B")
        srv.create_sale("A", 7, per_user=1, hold="60s")
        c = srv.counters("A")
        check(c["total"] == 7 and c["sold"] == 0 and c["available"] == 7, f"the new A starts fresh: {c}")
        t2 = fc.mint_token(secret, "a2-u0", tier=0)
        r = srv.reserve(t2, "A", "n0")
        rid2 = r.json()["reservation_id"] if r.status == 201 else None
        check(rid2 is not None, f"a reservation on the new A: {r.status}")
        r = srv.get_res(t2, rid2)
        check(r.status == 200 and r.json()["sku"] == "A", f"it reads back with sku A: {r.status} {r.body[:160]!r}")

        # -- 4. kill -9: the archive and the reuse come back from the journal
        srv.kill9()
        srv.start()
        c = srv.counters("A")
        check(c["total"] == 7 and c["reserved"] == 1, f"after kill -9 the new A is back: {c}")
        check(srv.counters("C")["total"] == 3, "C is back")
        check(srv.sku("B").status == 404, "B stays archived")
        r = srv.get_res(t2, rid2)
        check(r.status == 200 and r.json()["sku"] == "A", "the new A's reservation reads back after the restart")

        # -- 5. PostgreSQL and the journal agree
        ok, _ = wait_lag_zero(srv, ["A", "C"], sinks=("postgres",), timeout=60)
        check(ok, "the sink caught up after the restart")
        rows = psql(conninfo, "SELECT sku, total, sold, available + reserved FROM sales_archive ORDER BY archived_seq")
        check(rows.splitlines() == ["A|10|2|8", "B|5|0|5"], f"sales_archive holds the old A and B: {rows!r}")
        rows = psql(conninfo, "SELECT sku, total FROM sales ORDER BY sku")
        check(rows.splitlines() == ["A|7", "C|3"], f"sales holds the new A and C: {rows!r}")
        rep = srv.admin("report", "B", "--data-dir", srv.data_dir)
        check(rep.returncode == 0 and "archived           at batch" in rep.stdout,
              f"report of an archived sale: {rep.stdout[-300:]} {rep.stderr[-300:]}")
        srv.stop()
        check_reconcile(srv.data_dir, conninfo, "reconcile")
    except Fatal as e:
        check(False, f"stopped early: {e}")
        print(srv.log()[-3000:])
    finally:
        srv.cleanup()
        drop_scratch_db(pg, dbname)
    print(f"test_archive: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
