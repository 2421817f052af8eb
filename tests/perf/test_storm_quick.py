#!/usr/bin/env python3
"""test_storm_quick.py - perf/storm --quick as a test (suite 'perf').

Runs the flash-sale storm at quick scale (2,000 humans + 105 bots, 300
units, a few seconds; its own flashsaled on a free port and temp dir) and
asserts what must hold whatever the machine's speed:
  - zero oversell: sold + reserved <= total (and conservation) at every read
    the crowd made, and in the final counters;
  - `flashsale-journal verify` accepts the journal afterwards;
  - every request got an HTTP answer (no transport error, no timeout,
    nothing in flight at the end), and every human who arrived in the first
    second got an answer;
  - the sale sold out and the units the crowd was granted equal reserved + sold;
  - bots' share of the units <= 2 x their population share.
Why 2 x and not 1 x at this scale: the goal (bots' unit share <= their
population share) is for the full run. Here 300 units go to about 2,000
agents, so bots' expected haul is about 15 units and one standard deviation
of sampling noise is about 4 units (25 %); on top, bots click the moment
they arrive while humans think 0-600 ms after loading the page, which at
this scale (sold out 2.4 s in, inside the 3 s ramp) is worth about +20 %.
Measured over seeds 1-6: ratios 0.74-1.54, mean 1.2 (the test uses seed
1, whose early arrivals happen to hold 6 % bots: ratio 1.47-1.54). A server that let
speed win (e.g. first attempts answered 503/429 and retried 100x faster by
bots) pushes the ratio well past 2, which is what this catches.

Then the same quick storm with --waiting-room --after-sellout 2 (the sale opens by itself
about 2.9 s in, after ~375 agents have queued; outflow 250/s), asserting:
  - zero oversell, the journal verifies, every request answered, the sale
    sold out and units granted == reserved + sold;
  - `flashsale-journal draw` prints "ok: the admission order follows the
    committed draw";
  - every early arrival (first attempt sent > 100 ms before the opening)
    got a 202 QUEUED with a reservation id and a position, and so did every
    human who arrived in the first second.
Its bots' unit share is printed, not asserted: with the draw it is the
bots' share of the queued entries up to sampling noise (seed 1 queues
~7-8 % bots among ~300 entries), which says nothing about speed.

Latencies are printed, never asserted (a timed test on a shared box is a
flaky test). Skips (exit 77) when the binaries are not built. The build
directory comes from FS_BUILD (default: the repository's build/).
"""
import json
import os
import subprocess
import sys
import tempfile

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("FS_BUILD", os.path.join(REPO, "build"))
BOT_SHARE_SLACK = 2.0


def run_storm(extra):
    """(exit status, results dict or None) of perf/storm --quick + extra."""
    what = " ".join(["perf/storm --quick"] + extra)
    with tempfile.TemporaryDirectory(prefix="fs-storm-test-") as d:
        out = os.path.join(d, "storm.json")
        try:
            p = subprocess.run([sys.executable, os.path.join(REPO, "perf", "storm"), "--quick",
                                "--build-dir", BUILD, "--out", out] + extra,
                               capture_output=True, text=True, timeout=150)
        except subprocess.TimeoutExpired as e:
            print(f"FAIL: {what} ran past 150 s\n{e.stdout or ''}{e.stderr or ''}")
            return 1, None
        print(f"### {what}")
        print(p.stdout)
        if p.stderr:
            print(p.stderr, file=sys.stderr)
        if not os.path.exists(out):
            print(f"FAIL: {what} exited {p.returncode} without results")
            return p.returncode, None
        with open(out) as f:
            return p.returncode, json.load(f)


def main():
    need = [os.path.join(BUILD, p) for p in ("control/flashsaled", "control/flashctl",
                                              "tools/flashsale-journal", "perf/storm_crowd")]
    missing = [p for p in need if not os.access(p, os.X_OK)]
    if missing:
        print(f"skipped: not built: {', '.join(missing)}")
        return 77
    failures = []

    def check(ok, what):
        print(f"{'ok  ' if ok else 'FAIL'} {what}")
        if not ok:
            failures.append(what)

    rc, res = run_storm([])
    if res is None:
        return 1
    c = res["checks"]
    check(rc == 0, f"perf/storm exit status 0 (got {rc})")
    check(c["oversell_violations"] == 0 and c["reads_checked"] > 1000,
          f"oversell 0 ({c['oversell_violations']} violations in {c['reads_checked']} reads)")
    check(c["final_read"] and c["server_exit_ok"],
          f"flashsaled answered the final read and stopped cleanly (exit {res['server']['exit']})")
    check(c["journal_verify_ok"], f"journal verify: {res['journal_verify']['output'][-300:]}")
    check(c["every_request_answered"],
          f"every request answered (sent {res['requests']['sent']}, answered "
          f"{res['requests']['answered']}, unanswered {c['unanswered']})")
    fsh = res["first_second_humans"]
    check(c["first_second_humans_all_answered"],
          f"every human arriving in the first second answered ({fsh['answered']}/{fsh['arrived']})")
    check(c["sold_out"] and c["units_won"] == res["stock"],
          f"sold out: {c['units_won']} of {res['stock']} units granted")
    check(c["units_match_final"], f"units granted == reserved + sold ({res.get('final')})")
    check(c["bot_unit_share"] <= BOT_SHARE_SLACK * c["bot_population_share"],
          f"bots' unit share {100 * c['bot_unit_share']:.2f} % <= {BOT_SHARE_SLACK:g} x population "
          f"share {100 * c['bot_population_share']:.2f} % (ratio {c['bot_share_ratio']:.2f})")
    if not c["generator_kept_up"]:
        print("note: the load generator fell behind (a busy machine); the checks above do not depend on it")

    # the same storm through the waiting room
    rc, res = run_storm(["--waiting-room", "--after-sellout", "2"])
    if res is None:
        return 1
    c = res["checks"]
    wr = res["waiting_room"]
    check(rc == 0, f"waiting room: perf/storm exit status 0 (got {rc})")
    check(c["oversell_violations"] == 0 and c["reads_checked"] > 1000,
          f"waiting room: oversell 0 ({c['oversell_violations']} violations in {c['reads_checked']} reads)")
    check(c["final_read"] and c["server_exit_ok"],
          f"waiting room: final read answered, clean stop (exit {res['server']['exit']})")
    check(c["journal_verify_ok"], f"waiting room: journal verify: {res['journal_verify']['output'][-300:]}")
    check(c["draw_ok"], f"waiting room: flashsale-journal draw: {res['draw']['output'][-300:]}")
    check(c["every_request_answered"],
          f"waiting room: every request answered (sent {res['requests']['sent']}, answered "
          f"{res['requests']['answered']}, unanswered {c['unanswered']})")
    e, eq = wr["early"], wr["early_queued"]
    check(c["early_all_queued"] and c["early_arrivals"] >= res["stock"] // 2,
          f"waiting room: every early arrival got a 202 QUEUED with a reservation id and a position "
          f"({eq['humans']}/{e['humans']} humans, {eq['bots']}/{e['bots']} bots; other first answers "
          f"{wr['early_other_answers']}, unanswered {wr['early_unanswered']})")
    fsh = res["first_second_humans"]
    check(c["first_second_humans_queued"] is True,
          f"waiting room: every human arriving in the first second got a 202 QUEUED with a position "
          f"({wr['first_second_humans_queued']}/{fsh['arrived']})")
    check(c["sold_out"] and c["units_won"] == res["stock"] and c["units_match_final"],
          f"waiting room: sold out, {c['units_won']} of {res['stock']} units granted == reserved + sold")
    print(f"info: waiting room: bots' unit share {100 * c['bot_unit_share']:.2f} % (their share of the early "
          f"entries {100 * c['bot_share_of_early']:.2f} %, of the population "
          f"{100 * c['bot_population_share']:.2f} %); sold out "
          f"{'never' if c['sold_out_after_opening_s'] is None else '%.3f s' % c['sold_out_after_opening_s']} "
          f"after the opening")
    if failures:
        print(f"{len(failures)} check(s) failed")
        return 1
    print("all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
