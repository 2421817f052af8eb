#!/usr/bin/env python3
"""test_sinks_ckpt.py - Kafka and Redis sinks resume from their model
checkpoint, so journal segments go while they are configured.

Needs a real Redis (FS_TEST_REDIS host:port; exits 77 without it); the Kafka
sink runs too when the mock cluster helper tests/e2e/mockkafka was built.
flashsaled --redis ADDR [--kafka MOCK] --segment-mb 1 --snapshot-every-mb 1:
  1. reservations and cancels over ~2 segments, plus live holds; the sinks
     catch up and write their model checkpoints (DATA/sink-<kind>-<name>.model,
     flashsale_sink_model_checkpoint_seq); two snapshots: segments before
     them are deleted (journal_first_seq > 1, segment 1 gone), none held.
  2. more load, then kill -9 and restart: the sinks start from their
     checkpoints (batch 1 no longer exists). More load, including cancels of
     holds made before the kill (their reservations are only in the
     checkpointed model): Redis stock:<sku> equals the API's counters, Kafka
     lag 0, no sink error, no refusal in the log.
  2b. flashctl backup copies the checkpoints (and the journal after the
     oldest of them); a server started on the copy resumes its sinks from
     them without an error, and Redis equals the copy's counters.
  3. the Redis checkpoint damaged (a flipped byte), restart: the sink refuses
     it, and since the journal no longer starts at batch 1 it seeds its model
     from the writer's newest snapshot (writer/sink/sink_seed.c): cancels of
     holds only that seed knows keep Redis equal to the API, and it
     checkpoints again; Kafka, whose checkpoint is intact, goes on. 3b: the
     Kafka checkpoint deleted: it seeds from a snapshot at or before its
     cursor and catches up.
"""
import json
import os
import random
import re
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fsclient as fc  # noqa: E402

SEED = int(os.environ.get("FS_SEED", random.SystemRandom().randrange(1 << 30)))
FAILURES = []


class Fatal(Exception):
    pass


def check(ok, what):
    print(f"{'ok  ' if ok else 'FAIL'} {what}", flush=True)
    if not ok:
        FAILURES.append(what)
    return ok


def metrics(srv):
    out = {}
    for line in srv.admin_ok("metrics").splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def metric(srv, name):
    m = metrics(srv)
    if name not in m:
        raise Fatal("no metric " + name)
    return int(m[name])


def sale_status(srv, sku):
    return json.loads(srv.admin_ok("sale", "status", sku))


def round_trip(srv, secret, sku, tag, n, conns=8, keep=0):
    """n reservations by distinct users with long ids (bigger records fill
    segments sooner) over `conns` connections in parallel; all but the last
    `keep` are cancelled. Returns [(reservation id, token)] of the kept."""
    pad = "x" * 40
    kept, errors = [[] for _ in range(conns)], []

    def worker(w):
        try:
            with srv.conn(timeout=60) as c:
                for start in range(w * 50, n, conns * 50):
                    reqs, toks = [], []
                    for i in range(start, min(n, start + 50)):
                        tok = fc.mint_token(secret, f"{tag}-{i}-{pad}", tier=0)
                        toks.append(tok)
                        reqs.append(fc.Conn.build("POST", f"/v1/skus/{sku}/reservations",
                                                  {"Authorization": "Bearer " + tok,
                                                   "Idempotency-Key": f"k-{tag}-{i}-{pad}"}, b""))
                    cancels = []
                    for i, (tok, r) in enumerate(zip(toks, c.pipeline(reqs))):
                        if r.status != 201:
                            raise Fatal(f"reservation answered {r.status}: {r.body[:200]!r}")
                        rid = r.json()["reservation_id"]
                        if start + i >= n - keep:
                            kept[w].append((rid, tok))
                        else:
                            cancels.append(fc.Conn.build("DELETE", "/v1/reservations/" + rid,
                                                         {"Authorization": "Bearer " + tok}, None))
                    for r in c.pipeline(cancels) if cancels else []:
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
    return [x for part in kept for x in part]


class Redis:
    def __init__(self, addr):
        host, _, port = addr.rpartition(":")
        self.s = socket.create_connection((host or "127.0.0.1", int(port)), timeout=5)
        self.f = self.s.makefile("rb")

    def get(self, key):
        self.s.sendall(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key.encode()))
        line = self.f.readline()
        if not line.startswith(b"$"):
            raise Fatal(f"redis GET {key}: {line!r}")
        n = int(line[1:])
        return None if n < 0 else self.f.read(n + 2)[:-2]

    def close(self):
        self.s.close()


def redis_matches(srv, rd, sku):
    got = rd.get("stock:" + sku)
    return got is not None and json.loads(got) == srv.counters(sku)


def caught_up(srv, sku, sinks):
    """Every sink's lag is 0 and its model checkpoint reached the journal."""
    st = sale_status(srv, sku)
    lags = {x["name"]: x["lag"] for x in st["sinks"]}
    m = metrics(srv)
    return (all(lags.get(s) == 0 for s in sinks) and
            all(m.get(f'flashsale_sink_model_checkpoint_seq{{sink="{s}"}}', -1) >= st["journal_seq"]
                for s in sinks))


def sink_errors(srv, sinks):
    m = metrics(srv)
    return {s: int(m.get(f'flashsale_sink_errors_total{{sink="{s}"}}', -1)) for s in sinks}


def seg_files(srv):
    d = os.path.join(srv.data_dir, "journal")
    return sorted(f for f in os.listdir(d) if re.match(r"^\d{20}\.seg$", f))


def main():
    addr = os.environ.get("FS_TEST_REDIS")
    if not addr:
        print("skipped: FS_TEST_REDIS is not set (host:port of a Redis this test may write stock:* keys to)")
        return 77
    print(f"test_sinks_ckpt: seed {SEED}", flush=True)
    sku = "ck%06d" % (SEED % 1000000)   # stock:<sku> keys of their own on a shared Redis
    mock, rd, srv = None, None, None
    try:
        if fc.MockKafka.available():
            mock = fc.MockKafka("flashsale.journal")
            bootstrap = mock.bootstrap
        else:
            print(f"no {fc.MOCKKAFKA} (a build without librdkafka): the Kafka part is skipped")
        sinks = ["redis"] + (["kafka"] if mock else [])
        extra = ["--redis", addr, "--segment-mb", "1", "--snapshot-every-mb", "1", "--no-pin"]
        if mock:
            extra += ["--kafka", bootstrap]
        srv = fc.Server(demo=False, extra=extra)
        srv.start()
        rd = Redis(addr)
        srv.create_sale(sku, 1000000, per_user=0, hold="600s")
        secret = srv.secret()

        # -- 1. checkpoints written, segments before the snapshots deleted
        holds = []
        for r in range(2):
            holds += round_trip(srv, secret, sku, f"a{SEED}-{r}", 3000, keep=100)
        check(fc.wait_for(lambda: caught_up(srv, sku, sinks), timeout=60),
              f"the sinks ({', '.join(sinks)}) caught up and checkpointed their models")
        for s in sinks:
            path = os.path.join(srv.data_dir, f"sink-{s}-flashsaled.model")
            check(os.path.exists(path), f"{s}: model checkpoint {os.path.basename(path)} exists")
        for _ in range(2):
            srv.admin_ok("snapshot")
        check(fc.wait_for(lambda: metric(srv, "flashsale_journal_first_seq") > 1 and
                          metric(srv, "flashsale_journal_segments_held_by_sinks") == 0, timeout=20),
              f"with {' and '.join(sinks)} configured, segments before the snapshots were deleted "
              f"(first kept batch {metric(srv, 'flashsale_journal_first_seq')}, none held by a sink)")
        check("00000000000000000001.seg" not in seg_files(srv), f"segment 1 is gone ({seg_files(srv)[:3]}...)")
        first_kept = metric(srv, "flashsale_journal_first_seq")

        # -- 2. kill -9 and restart: the sinks resume from their checkpoints
        holds += round_trip(srv, secret, sku, f"b{SEED}", 1500, keep=50)
        time.sleep(0.3)
        before = {s: metric(srv, f'flashsale_sink_model_checkpoint_seq{{sink="{s}"}}') for s in sinks}
        srv.kill9()
        srv.start()
        after = {s: metric(srv, f'flashsale_sink_model_checkpoint_seq{{sink="{s}"}}') for s in sinks}
        check(fc.wait_for(lambda: all(metric(srv, f'flashsale_sink_model_checkpoint_seq{{sink="{s}"}}') >=
                                      max(before[s], 1) for s in sinks), timeout=10),
              f"after kill -9 the sinks started from their checkpoints (before {before}, at start {after}); "
              f"the journal starts at batch {first_kept}")
        random.Random(SEED).shuffle(holds)
        for rid, tok in holds[:len(holds) // 2]:   # reservations only the checkpointed model knows
            r = srv.cancel(tok, rid)
            if r.status != 200:
                raise Fatal(f"cancel of a pre-kill hold answered {r.status}: {r.body[:200]!r}")
        round_trip(srv, secret, sku, f"c{SEED}", 600, keep=20)
        c = srv.counters(sku)
        check(fc.conserved(c) and c["reserved"] == len(holds) - len(holds) // 2 + 20, f"counters: {c}")
        check(fc.wait_for(lambda: redis_matches(srv, rd, sku), timeout=20),
              f"Redis stock:{sku} equals the API's counters ({rd.get('stock:' + sku)!r})")
        check(fc.wait_for(lambda: caught_up(srv, sku, sinks), timeout=60), "the sinks caught up again")
        errs = sink_errors(srv, sinks)
        check(all(v == 0 for v in errs.values()), f"no sink error since the restart: {errs}")
        log = srv.log()
        check("model checkpoint" not in log and "cannot resume" not in log,
              "the log has no checkpoint refusal: " + "; ".join(
                  ln for ln in log.splitlines() if "sink" in ln)[-600:])

        # -- 2b. a backup restored into a new data dir: its sinks resume from
        # the checkpoints it copied, with the journal after them
        bdir = srv.data_dir + "-backup"
        srv.admin_ok("backup", bdir)
        copied = sorted(f for f in os.listdir(bdir) if f.startswith("sink-") and f.endswith(".model"))
        check(copied == sorted(f"sink-{s}-flashsaled.model" for s in sinks),
              f"the backup holds the sinks' model checkpoints: {copied}")
        srv.stop()
        rst = fc.Server(demo=False, extra=extra, data_dir=bdir)
        try:
            rst.start()
            for rid, tok in holds[len(holds) // 2:len(holds) // 2 + 10]:
                r = rst.cancel(tok, rid)
                if r.status != 200:
                    raise Fatal(f"restored copy: cancel of a hold answered {r.status}: {r.body[:200]!r}")
            check(fc.wait_for(lambda: redis_matches(rst, rd, sku), timeout=20),
                  f"restored copy: Redis stock:{sku} equals its counters ({rd.get('stock:' + sku)!r})")
            check(fc.wait_for(lambda: caught_up(rst, sku, sinks), timeout=60), "restored copy: the sinks caught up")
            log = rst.log()
            check("cannot resume" not in log and "model checkpoint refused" not in log and
                  all(v == 0 for v in sink_errors(rst, sinks).values()),
                  f"restored copy: the sinks resumed without an error ({sink_errors(rst, sinks)})")
        finally:
            rst.stop()
            subprocess.run(["rm", "-rf", bdir])
        srv.start()   # the original again: its Redis keys go back to its own counters
        check(fc.wait_for(lambda: redis_matches(srv, rd, sku), timeout=20) or True, "original restarted")

        # -- 3. a damaged Redis checkpoint: refused, and the sink will not guess
        srv.stop()
        path = os.path.join(srv.data_dir, "sink-redis-flashsaled.model")
        with open(path, "r+b") as f:
            f.seek(os.path.getsize(path) // 2)
            b = f.read(1)
            f.seek(-1, os.SEEK_CUR)
            f.write(bytes([b[0] ^ 0x10]))
        srv.start()
        srv.reserve(fc.mint_token(secret, f"d{SEED}"), sku, f"d{SEED}", 1)   # a batch for the sink to need
        check(fc.wait_for(lambda: "model seeded from the snapshot" in srv.log(), timeout=15),
              "with its checkpoint damaged (and batch 1 gone) the Redis sink seeds its model from the snapshot")
        log = srv.log()
        check("model checkpoint refused" in log and "checksum" in log,
              "it logged why the checkpoint was refused: " + "; ".join(
                  ln for ln in log.splitlines() if "model checkpoint" in ln)[:300])
        check("cannot resume" not in log, "it did not give up")
        for rid, tok in holds[len(holds) // 2 + 10:len(holds) // 2 + 30]:   # holds the seed must know
            r = srv.cancel(tok, rid)
            if r.status != 200:
                raise Fatal(f"cancel after the seed answered {r.status}: {r.body[:200]!r}")
        check(fc.wait_for(lambda: redis_matches(srv, rd, sku), timeout=20),
              f"after the seed Redis stock:{sku} equals the API's counters ({rd.get('stock:' + sku)!r})")
        check(fc.wait_for(lambda: metric(srv, 'flashsale_sink_model_checkpoint_seq{sink="redis"}') > 0,
                          timeout=20), "and it checkpoints its model again")
        if mock:
            check(fc.wait_for(lambda: sale_status(srv, sku)["sinks"] and
                              {x["name"]: x["lag"] for x in sale_status(srv, sku)["sinks"]}["kafka"] == 0,
                              timeout=30) and sink_errors(srv, ["kafka"])["kafka"] == 0,
                  "the Kafka sink, its checkpoint intact, goes on without an error")
        # -- 3b. a Kafka sink that lost its checkpoint seeds only from a snapshot at or before its cursor
        if mock:
            srv.stop()
            os.remove(os.path.join(srv.data_dir, "sink-kafka-flashsaled.model"))
            srv.start()
            round_trip(srv, secret, sku, f"e{SEED}", 200, keep=0)
            check(fc.wait_for(lambda: caught_up(srv, sku, sinks), timeout=60),
                  "with its checkpoint gone the Kafka sink caught up again")
            log = srv.log()
            seeded = "sink kafka: model seeded from the snapshot" in log
            gave_up = "sink kafka: the model needs batch" in log
            check(seeded and not gave_up, "the Kafka sink seeded its model (a snapshot at or before its cursor): "
                  + "; ".join(ln for ln in log.splitlines() if "sink kafka" in ln)[:400])
    except Fatal as e:
        check(False, f"stopped early: {e}")
        if srv:
            print(srv.log()[-3000:])
    finally:
        if rd:
            rd.close()
        if srv:
            srv.cleanup()
        if mock:
            mock.close()
    print(f"test_sinks_ckpt: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
