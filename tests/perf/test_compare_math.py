#!/usr/bin/env python3
"""test_compare_math.py - the arithmetic perf/compare judges goals with.

perf/compare turns /metrics histograms, /proc tick counts and interleaved
rounds into the ratios and verdicts a performance engineer reads; a slip
there (a cumulative bucket read as a plain count, a median of an even
list, a PASS on the wrong side of a target) would mislead silently. Each
function gets inputs whose right answer is worked out by hand here.
"""
import importlib.machinery
import importlib.util
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
COMPARE = os.path.join(HERE, "..", "..", "perf", "compare")


def load_compare():
    loader = importlib.machinery.SourceFileLoader("perf_compare", COMPARE)
    spec = importlib.util.spec_from_loader("perf_compare", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


pc = load_compare()
INF = float("inf")


class JournalDelta(unittest.TestCase):
    # cumulative Prometheus buckets (le in seconds), as /metrics prints them
    before = {"fsync": {0.000256: 10, 0.000512: 20, 0.001024: 20, 0.002048: 20, 0.004096: 20,
                        0.008192: 20, INF: 20}}
    after = {"fsync": {0.000256: 10, 0.000512: 80, 0.001024: 108, 0.002048: 115, 0.004096: 116,
                       0.008192: 119, INF: 120}}

    def test_counts_percentiles_and_stalls(self):
        j = pc.journal_delta(self.before, self.after, 2.0, 3000)
        # 100 fdatasyncs in the run: 60 <= 512 µs, 28 <= 1 ms, 7 <= 2 ms, 1 <= 4 ms, 3 <= 8 ms, 1 above
        self.assertEqual(j["fdatasyncs"], 100)
        self.assertEqual(j["answers_per_fdatasync"], 30)
        self.assertAlmostEqual(j["fdatasync_p50_us_le"], 512)     # 60 % are within 512 µs
        self.assertAlmostEqual(j["fdatasync_p99_us_le"], 8192)    # the 99th is in the 4-8 ms bucket
        self.assertEqual(j["over_4ms"], 4)                        # 3 in (4, 8] ms and 1 above
        self.assertEqual(j["over_4ms_per_s"], 2.0)

    def test_nothing_happened(self):
        self.assertIsNone(pc.journal_delta(self.before, self.before, 2.0, 0))
        self.assertIsNone(pc.journal_delta(None, self.after, 2.0, 10))


class ThreadSplit(unittest.TestCase):
    def test_shares_and_exited_threads(self):
        before = {"fs-worker-0": 100, "fs-writer": 50, "io-wq": 10, "(process)": 160}
        # 200 ticks in the run: worker 120, writer 20, io-wq 40 (live), 20 by threads gone since
        after = {"fs-worker-0": 220, "fs-writer": 70, "io-wq": 50, "(process)": 360}
        split = pc.thread_split(before, after)
        self.assertEqual(split, {"fs-worker-0": 0.6, "io-wq": 0.2, "fs-writer": 0.1, "exited": 0.1})
        self.assertEqual(list(split)[0], "fs-worker-0")   # largest first

    def test_no_time(self):
        self.assertEqual(pc.thread_split({"(process)": 5}, {"(process)": 5}), {})


class Rounds(unittest.TestCase):
    def test_median(self):
        self.assertEqual(pc.median([3, 1, 2]), 2)
        self.assertEqual(pc.median([4, 1, 3, 2]), 2.5)
        self.assertEqual(pc.median([None, 5]), 5)
        self.assertIsNone(pc.median([None]))

    def round(self, ours_cpu, nginx_cpu):
        side = lambda cpu: {"rps": 100.0, "p99_us": 1000.0, "cpu_us_per_req": cpu}
        return {"ours": side(ours_cpu), "nginx": side(nginx_cpu),
                "ours-wrk": side(ours_cpu), "nginx-wrk": side(nginx_cpu)}

    def test_verdict_is_the_median_of_the_rounds(self):
        # per-round CPU ratios 0.60, 0.70, 0.65: median 0.65 <= 2/3 -> PASS, although one round fails
        rounds = [self.round(6.0, 10.0), self.round(7.0, 10.0), self.round(6.5, 10.0)]
        checks = {c["ratio"]: c for c in pc.ratios([], rounds)}
        cpu = checks["reads CPU-µs/req ours / nginx (flashload), median of 3 interleaved rounds"]
        self.assertAlmostEqual(cpu["value"], 0.65)
        self.assertEqual(cpu["verdict"], "PASS")
        self.assertEqual([round(v, 2) for v in cpu["rounds"]], [0.6, 0.7, 0.65])
        rps = checks["reads req/s ours / nginx (wrk), median of 3 interleaved rounds"]
        self.assertEqual((rps["value"], rps["verdict"]), (1.0, "PASS"))   # >= 1 holds at equality

    def test_reserve_ratios_in_a_round(self):
        side = lambda rps, p99, cpu: {"rps": rps, "p99_us": p99, "cpu_us_per_req": cpu}
        one = {"ours": side(100000.0, 900.0, 6.0), "nginx": side(90000.0, 1000.0, 10.0),
               "ours-reserve": side(60000.0, 1500.0, 9.0), "redis": side(50000.0, 1100.0, 18.0),
               "fsync": side(None, 500.0, None)}
        checks = {c["ratio"].split(",")[0]: c for c in pc.ratios([], [one])}
        self.assertAlmostEqual(checks["reserve CPU-µs/op ours / redis-lua"]["value"], 0.5)   # 9 / 18
        self.assertEqual(checks["reserve CPU-µs/op ours / redis-lua"]["verdict"], "PASS")     # <= holds at equality
        self.assertAlmostEqual(checks["reserve req/s / our reads req/s"]["value"], 0.6)       # 60k / 100k reads
        self.assertEqual(checks["reserve req/s / our reads req/s"]["verdict"], "FAIL")
        self.assertAlmostEqual(checks["reserve p99 / fdatasync p99"]["value"], 3.0)           # 1500 / 500
        self.assertEqual(checks["reserve p99 / fdatasync p99"]["verdict"], "FAIL")
        # a round without Redis (not installed) leaves that ratio n/a, the others stand
        del one["redis"]
        checks = {c["ratio"].split(",")[0]: c for c in pc.ratios([], [one])}
        self.assertEqual(checks["reserve CPU-µs/op ours / redis-lua"]["verdict"], "n/a")
        self.assertEqual(checks["reserve p99 / fdatasync p99"]["verdict"], "FAIL")

    def test_fail_side(self):
        rounds = [self.round(7.0, 10.0)]
        checks = {c["ratio"]: c for c in pc.ratios([], rounds)}
        self.assertEqual(checks["reads CPU-µs/req ours / nginx (wrk), median of 1 interleaved rounds"]["verdict"],
                         "FAIL")

    def test_no_rounds_no_rows(self):
        names = [c["ratio"] for c in pc.ratios([], None)]
        self.assertFalse(any("interleaved" in n for n in names))
        self.assertTrue(all(c["verdict"] == "n/a" for c in pc.ratios([], None)))


if __name__ == "__main__":
    sys.exit(0 if unittest.main(exit=False, verbosity=1).result.wasSuccessful() else 1)
