# SPDX-License-Identifier: GPL-2.0
"""Tests of the benchmark runner (scripts/bench.py) on synthetic kvt_bench
output, and of kvt.boot() with an explicit plan, on a fake QEMU.

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import io
import json
import os
import re
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import kvt  # noqa: E402


def run(backend, workload, rep=0, lateness=(1, 2, 3, 4), config="riscv-sstc", **kw):
    r = {"backend": backend, "mode": "sstc", "workload": workload, "rep": rep,
         "hz": 10_000_000, "irqs": len(lateness), "lateness": list(lateness),
         "early": 0, "exits": 0, "ipis": 0,
         "hrtimer_starts": None if backend == "intree" else 0,
         "hrtimer_cancels": None if backend == "intree" else 0,
         "guest_ns": 1000, "config": config}
    r.update(kw)
    return r


def console_line(r):
    r = {k: v for k, v in r.items() if k != "config"}
    return "    " + bench.PREFIX + json.dumps(r)


class ConfigParamsTest(unittest.TestCase):
    def test_cli_over_config_over_none(self):
        plan = {"config": {"a": {"bench_module_params": "advance_max_ns=100000"}, "b": {}}}
        self.assertEqual(bench.config_params(plan, "a"), "advance_max_ns=100000")
        self.assertEqual(bench.config_params(plan, "a", "advance_max_ns=0"), "advance_max_ns=0")
        self.assertEqual(bench.config_params(plan, "b"), "")
        self.assertEqual(bench.advance_cap_ns(bench.config_params(plan, "a")), 100000)


class ParseTest(unittest.TestCase):
    def test_lines_among_other_output(self):
        a, b = run("intree", "wfi"), run("vtimer", "wfi", lateness=(0, -1))
        console = ["[    1.0] kvm: loaded", "KTAP version 1",
                   console_line(a) + "\r", "    # other comment", console_line(b),
                   "    # kvt-bench {\"backend\": \"vtimer\", [  2.0] cut",
                   "    # kvt-bench [1, 2]",
                   "    " + bench.DONE, "ok 2 bench.kvt_bench # time=10.0s"]
        runs, done, bad = bench.parse_console(console)
        self.assertEqual([r["backend"] for r in runs], ["intree", "vtimer"])
        self.assertEqual(runs[1]["lateness"], [0, -1])
        self.assertTrue(done)
        self.assertEqual(len(bad), 2)

    def test_unfinished(self):
        runs, done, bad = bench.parse_console([console_line(run("intree", "busy"))])
        self.assertEqual((len(runs), done, bad), (1, False, []))


class StatsTest(unittest.TestCase):
    def test_nearest_rank(self):
        v = [15, 20, 35, 40, 50]
        self.assertEqual(bench.percentile(v, 5), 15)
        self.assertEqual(bench.percentile(v, 30), 20)
        self.assertEqual(bench.percentile(v, 40), 20)
        self.assertEqual(bench.percentile(v, 50), 35)
        self.assertEqual(bench.percentile(v, 100), 50)
        self.assertEqual(bench.percentile(list(range(1, 101)), 99), 99)
        self.assertEqual(bench.percentile(list(range(100, 0, -1)), 50), 50)
        self.assertEqual(bench.percentile([7], 99), 7)
        self.assertEqual(bench.percentile([3, 1], 0), 1)
        self.assertIsNone(bench.percentile([], 50))

    def test_group_summary(self):
        runs = [run("vtimer", "wfi", rep=1, lateness=range(101, 201), exits=50, ipis=10,
                    hrtimer_starts=100, hrtimer_cancels=20),
                run("vtimer", "wfi", rep=0, lateness=range(1, 101), exits=150, ipis=0,
                    hrtimer_starts=100, hrtimer_cancels=80, early=1)]
        s = bench.summarize_group(runs)
        self.assertEqual(s["reps"], 2)
        self.assertEqual(s["irqs"], 200)
        self.assertEqual(s["lateness_ticks"], {"p50": 100, "p99": 198, "max": 200})
        self.assertAlmostEqual(s["lateness_ns"]["p50"], 10_000)  # 100 ticks at 10 MHz
        self.assertEqual(s["exits_per_irq"], 1.0)
        self.assertEqual(s["ipis_per_irq"], 0.05)
        self.assertEqual(s["hrtimer_ops_per_irq"], 1.5)
        self.assertEqual(s["early"], 1)
        self.assertEqual([x["rep"] for x in s["per_rep"]], [0, 1])
        self.assertEqual(s["spread"]["p50"], [50, 150])
        self.assertEqual(s["spread"]["p99"], [99, 199])
        # No module figures in these runs: no spin time either.
        self.assertIsNone(s["spin_us_per_irq"])

    def test_spin_time_per_interrupt(self):
        ours = bench.summarize_group([
            run("vtimer", "wfi", rep=0, lateness=range(100), module={"spin_ns": 1_500_000}),
            run("vtimer", "wfi", rep=1, lateness=range(100), module={"spin_ns": 500_000})])
        self.assertEqual(ours["spin_ns"], 2_000_000)
        self.assertEqual(ours["spin_us_per_irq"], 10.0)  # 2 ms over 200 interrupts
        # The in-tree timer never waits before guest entry.
        base = bench.summarize_group([run("intree", "wfi", lateness=range(100))])
        self.assertEqual(base["spin_us_per_irq"], 0)
        # One run of ours without the figure (an older module): none.
        mixed = bench.summarize_group([
            run("vtimer", "wfi", rep=0, module={"spin_ns": 10}),
            run("vtimer", "wfi", rep=1, module={"irqs": 4})])
        self.assertIsNone(mixed["spin_us_per_irq"])

    def test_untrapped_time_per_interrupt(self):
        ours = bench.summarize_group([
            run("vtimer", "wfi", rep=0, lateness=range(100),
                module={"spin_ns": 0, "untrapped_ns": 30_000_000}),
            run("vtimer", "wfi", rep=1, lateness=range(100),
                module={"spin_ns": 0, "untrapped_ns": 10_000_000})])
        self.assertEqual(ours["untrapped_ns"], 40_000_000)
        self.assertEqual(ours["untrapped_us_per_irq"], 200.0)  # 40 ms over 200
        base = bench.summarize_group([run("intree", "wfi", lateness=range(100))])
        self.assertEqual(base["untrapped_us_per_irq"], 0)
        # A module without the figure: none, and the table says n/a.
        old = bench.summarize_group([run("vtimer", "wfi", module={"spin_ns": 0})])
        self.assertIsNone(old["untrapped_us_per_irq"])

    def test_vcpu_thread_time_per_interrupt(self):
        # Both timers: the vCPU thread's schedstat over each run.
        s = bench.summarize_group([
            run("intree", "migrate", rep=0, lateness=range(100),
                thread={"run_ns": 9_000_000, "wait_ns": 3_000_000, "slices": 110}),
            run("intree", "migrate", rep=1, lateness=range(100),
                thread={"run_ns": 11_000_000, "wait_ns": 1_000_000, "slices": 112})])
        self.assertEqual(s["thread_us_per_irq"], 100.0)  # 20 ms over 200
        self.assertEqual(s["thread_wait_us_per_irq"], 20.0)
        row = bench.ratio_rows({("c", "sbi", "migrate", "intree"): s})[0]
        self.assertEqual(row["thread us/irq"]["intree"], 100.0)
        # A kvt_bench without the figure: none, and the table says n/a.
        old = bench.summarize_group([
            run("intree", "migrate", rep=0, thread={"run_ns": 1, "wait_ns": 1}),
            run("intree", "migrate", rep=1)])
        self.assertIsNone(old["thread_us_per_irq"])

    def test_guest_exits(self):
        # The guest's own exits: SBI calls and WFIs on RISC-V, HVCs and WFIs
        # on arm64 (whose runs have no ecall_exits).
        rv = bench.summarize_group([run("intree", "wfi", lateness=range(10), ecall_exits=5,
                                        wfi_exits=10)])
        self.assertEqual(rv["guest_exits_per_irq"], 1.5)
        arm = bench.summarize_group([run("intree", "wfi", lateness=range(10), hvc_exits=0,
                                         wfi_exits=10, mode="ptimer", hz=62_500_000,
                                         config="arm64-nvhe")])
        self.assertEqual(arm["guest_exits_per_irq"], 1.0)
        self.assertEqual(arm["mode"], "ptimer")
        self.assertAlmostEqual(arm["lateness_ns"]["p50"], 64)  # 4 ticks of 16 ns

    def test_intree_has_no_hrtimer_figures_and_negative_is_early(self):
        s = bench.summarize_group([run("intree", "past", lateness=(-3, 0, 5), early=0)])
        self.assertIsNone(s["hrtimer_ops_per_irq"])
        self.assertEqual(s["early"], 1)

    def test_summary_order(self):
        runs = [run("vtimer", "wfi"), run("intree", "wfi"), run("vtimer", "busy"),
                run("intree", "busy", config="riscv-nosstc"), run("intree", "busy")]
        self.assertEqual(list(bench.summarize(runs)),
                         [("riscv-sstc", "sstc", "busy", "intree"),
                          ("riscv-sstc", "sstc", "busy", "vtimer"),
                          ("riscv-sstc", "sstc", "wfi", "intree"),
                          ("riscv-sstc", "sstc", "wfi", "vtimer"),
                          ("riscv-nosstc", "sstc", "busy", "intree")])

    def test_modes_apart(self):
        # One config, both timer modes: one summary each, modes as they came.
        runs = [run("vtimer", "wfi", mode="sbi"), run("vtimer", "wfi", mode="sstc"),
                run("intree", "wfi", mode="sbi"), run("intree", "wfi", mode=None)]
        self.assertEqual(list(bench.summarize(runs)),
                         [("riscv-sstc", "sbi", "wfi", "intree"),
                          ("riscv-sstc", "sbi", "wfi", "vtimer"),
                          ("riscv-sstc", "sstc", "wfi", "vtimer"),
                          ("riscv-sstc", "?", "wfi", "intree")])


class RatioTest(unittest.TestCase):
    def test_formatting(self):
        self.assertEqual(bench.fmt_ratio(5, 10), "0.50 (5/10)")
        self.assertEqual(bench.fmt_ratio(0, 0), "0/0")
        self.assertEqual(bench.fmt_ratio(3, 0), "3/0")
        self.assertEqual(bench.fmt_ratio(0.125, 0), "0.125/0")
        self.assertEqual(bench.fmt_ratio(None, 4), "-/4")
        self.assertEqual(bench.fmt_ratio(1.5, None), "1.5/-")
        self.assertEqual(bench.fmt_ratio(None, None), "n/a")
        self.assertEqual(bench.fmt_ratio(1.5, 3), "0.50 (1.5/3)")
        self.assertIsNone(bench.ratio(0, 0))
        self.assertEqual(bench.fmt_ratio(2, 10**6), "2e-06 (2/1000000)")
        self.assertEqual(bench.fmt_ratio(3, 100), "0.03 (3/100)")

    def test_table_with_zeros_and_missing(self):
        runs = [run("intree", "busy", lateness=(0, 0)), run("vtimer", "busy", lateness=(0, 0)),
                run("intree", "wfi", lateness=(10, 20), exits=4, ipis=2),
                run("vtimer", "wfi", lateness=(5, 5), exits=0, ipis=2,
                    module={"spin_ns": 3000}),
                run("intree", "storm")]
        rows = bench.ratio_rows(bench.summarize(runs))
        by = {r["workload"]: r for r in rows}
        self.assertEqual(by["busy"]["p50"]["text"], "0/0")
        self.assertEqual(by["busy"]["exits/irq"]["text"], "0/0")
        self.assertEqual(by["busy"]["hrtimer ops/irq"]["text"], "0/-")
        self.assertEqual(by["wfi"]["p99"]["text"], "0.25 (5/20)")
        self.assertEqual(by["wfi"]["exits/irq"]["text"], "0 (0/2)")
        self.assertEqual(by["wfi"]["ipis/irq"]["text"], "1.00 (1/1)")
        # Host CPU us per interrupt spent waiting: 3 us over 2; in-tree 0.
        self.assertEqual(by["wfi"]["spin us/irq"]["text"], "1.5/0")
        self.assertEqual(by["busy"]["spin us/irq"]["text"], "-/0")
        self.assertEqual(by["storm"]["p50"]["text"], "-/2")
        self.assertEqual(by["storm"]["reps"], "0/1")
        lines = bench.table(rows)
        self.assertEqual(len(lines), 4)
        self.assertEqual(lines[0].split()[:3], ["config", "mode", "workload"])
        self.assertIn("spin us/irq", lines[0])
        self.assertEqual(by["wfi"]["mode"], "sstc")
        # Into bench.json, the spin figures with both sides.
        doc = json.loads(json.dumps(rows))
        self.assertEqual(doc[1]["spin us/irq"],
                         {"ours": 1.5, "intree": 0, "ratio": None, "text": "1.5/0"})

    def test_spread(self):
        runs = [run("intree", "wfi", rep=0, lateness=(1, 2, 3)),
                run("intree", "wfi", rep=1, lateness=(5, 6, 7)),
                run("vtimer", "wfi", rep=0, lateness=(1,))]
        lines = bench.spread_lines(bench.summarize(runs))
        self.assertEqual(lines[1].split(),
                         ["riscv-sstc", "sstc", "wfi", "1..1", "2..6", "1..1", "3..7"])
        lines = bench.spread_lines(bench.summarize(runs[:2]))
        self.assertEqual(lines[1].split(),
                         ["riscv-sstc", "sstc", "wfi", "-", "2..6", "-", "3..7"])


def gap(backend, mode, gap_max, gap_p50=3, rep=0, config="riscv-sstc", deadlines=100):
    return {"backend": backend, "mode": mode, "hz": 10_000_000, "deadlines": deadlines,
            "gap_max": gap_max, "gap_p50": gap_p50, "config": config, "rep": rep}


def workloads_of(config, mode, backend, lateness, **kw):
    """One run of every workload."""
    return [run(backend, w, config=config, mode=mode, lateness=lateness, **kw)
            for w in bench.WORKLOADS]


# The shipped figures of the tests: riscv-nosstc/sbi only.
BASELINE = {("riscv-nosstc", "sbi", w): {"ours": {"p50": 40, "p99": 200, "max": 900,
                                                   "hz": 10_000_000}}
            for w in bench.WORKLOADS}
TARGETS = {("riscv-sstc", "sstc"): "direct", ("riscv-sstc", "sbi"): "emulated",
           ("riscv-nosstc", "sbi"): "emulated",
           ("arm64-vhe", "vtimer"): "direct", ("arm64-nvhe", "ptimer"): "emulated"}


def good_runs():
    """Every goal met where measured: Sstc with busy at 5 ticks, wfi at
    6; SBI under the baseline; in-tree slower, with a longer tail."""
    lat_ours = [5] * 90 + [8] * 10
    lat_base = [30] * 90 + [300] * 10
    runs = []
    for c, m in (("riscv-sstc", "sstc"), ("riscv-nosstc", "sbi")):
        runs += workloads_of(c, m, "intree", lat_base, exits=100, ipis=4)
        runs += workloads_of(c, m, "vtimer", lat_ours, exits=100, ipis=4,
                             module={"spin_ns": 200_000})
    gaps = [gap(b, m, g, config=c)
            for c, modes in (("riscv-sstc", ("sbi", "sstc")), ("riscv-nosstc", ("sbi",)))
            for m in modes for b, g in (("intree", 400), ("vtimer", 400))]
    return runs, gaps


def evaluate(runs, gaps=(), targets=None, baseline=None, cap_ns=None):
    gs = bench.evaluate_goals(bench.summarize(runs), bench.summarize_gaps(gaps),
                              TARGETS if targets is None else targets,
                              BASELINE if baseline is None else baseline, cap_ns)
    return {(g["goal"], g["config"], g["mode"]): g for g in gs}


def replace(runs, config, mode, workload, backend, **kw):
    """RUNS with one run's fields changed."""
    out = []
    for r in runs:
        if (r["config"], r["mode"], r["workload"], r["backend"]) == (config, mode, workload,
                                                                    backend):
            r = dict(r, **kw)
            if "lateness" in kw:
                r["irqs"] = len(kw["lateness"])
        out.append(r)
    return out


class GoalTest(unittest.TestCase):
    def status(self, g, goal, config, mode):
        return g[(goal, config, mode)]["status"]

    def test_all_met_where_measured(self):
        runs, gaps = good_runs()
        g = evaluate(runs, gaps)
        for goal in (0, 2, 3, 4, 5, 6):
            self.assertEqual(self.status(g, goal, "riscv-nosstc", "sbi"), "met", goal)
        for goal in (0, 1, 3, 4, 5, 6):
            self.assertEqual(self.status(g, goal, "riscv-sstc", "sstc"), "met", goal)
        # Goal 1 is for direct timers, goal 2 for emulated ones.
        self.assertNotIn((1, "riscv-nosstc", "sbi"), g)
        self.assertNotIn((2, "riscv-sstc", "sstc"), g)
        # riscv-sstc's SBI mode: busy gap only (kvt_bench uses Sstc there).
        self.assertEqual(self.status(g, 0, "riscv-sstc", "sbi"), "met")
        for goal in (2, 3, 4, 5, 6):
            self.assertEqual(self.status(g, goal, "riscv-sstc", "sbi"), "not measured", goal)
        self.assertFalse(any(x["status"] == "MISSED" for x in g.values()))
        self.assertEqual(bench.ours_early(bench.summarize(runs)), 0)

    def test_not_measured_is_never_met(self):
        runs, gaps = good_runs()
        g = evaluate(runs, gaps)
        # arm64: no figures in these runs.
        for goal in (0, 1, 3, 4, 5, 6):
            self.assertEqual(self.status(g, goal, "arm64-vhe", "vtimer"), "not measured")
        self.assertEqual(self.status(g, 2, "arm64-nvhe", "ptimer"), "not measured")
        # No baseline for the mode: the goal is not measured, even with
        # every other figure there and met.
        g = evaluate(runs, gaps, baseline={})
        self.assertEqual(self.status(g, 2, "riscv-nosstc", "sbi"), "not measured")
        self.assertTrue(g[(2, "riscv-nosstc", "sbi")]["detail"].startswith(
            "no figures for shipped busy p50, shipped busy p99, shipped wfi p50"))
        # One workload missing: goals over every workload are not measured.
        part = [r for r in runs if r["workload"] != "storm"]
        g = evaluate(part, gaps)
        for goal in (2, 4, 5, 6):
            self.assertEqual(self.status(g, goal, "riscv-nosstc", "sbi"), "not measured")
        self.assertEqual(self.status(g, 3, "riscv-nosstc", "sbi"), "met")
        # No busy gap: goal 0 not measured.
        g = evaluate(runs, [x for x in gaps if x["backend"] == "vtimer"])
        self.assertEqual(self.status(g, 0, "riscv-sstc", "sstc"), "not measured")
        # A mode of unknown kind: goals 1 and 2 cannot be judged.
        g = evaluate(runs, gaps, targets={("riscv-sstc", "sstc"): None})
        self.assertEqual(self.status(g, 1, "riscv-sstc", "sstc"), "not measured")
        self.assertEqual(self.status(g, 2, "riscv-sstc", "sstc"), "not measured")
        self.assertIn("bench_modes", g[(1, "riscv-sstc", "sstc")]["detail"])
        # An older module without spin_ns: goal 5 not measured.
        old = [dict(r, module={}) if r["backend"] == "vtimer" else r for r in runs]
        g = evaluate(old, gaps)
        self.assertEqual(self.status(g, 5, "riscv-sstc", "sstc"), "not measured")
        self.assertEqual(g[(5, "riscv-sstc", "sstc")]["detail"],
                         "no figures for busy spin us/irq, wfi spin us/irq, storm spin us/irq, "
                         "past spin us/irq, migrate spin us/irq")

    def test_missed_busy_gap(self):
        runs, gaps = good_runs()
        gaps.append(gap("vtimer", "sbi", 401, rep=1))
        g = evaluate(runs, gaps)
        self.assertEqual(self.status(g, 0, "riscv-sstc", "sbi"), "MISSED")
        self.assertIn("ours 401 vs in-tree 400", g[(0, "riscv-sstc", "sbi")]["detail"])
        self.assertEqual(self.status(g, 0, "riscv-sstc", "sstc"), "met")

    def test_busy_gap_spin_per_deadline(self):
        # The module's spin in kvt_busy_gap (ns, per mode) is the guest's
        # time lost to the advance: per deadline over the reps that carry
        # it; the in-tree timer's record has null (it cannot spin).
        gaps = [gap("intree", "sbi", 400) | {"spin_ns": None},
                gap("vtimer", "sbi", 300) | {"spin_ns": 30_000},
                gap("vtimer", "sbi", 350, rep=1) | {"spin_ns": 10_000}]
        gsum = bench.summarize_gaps(gaps)
        self.assertEqual(gsum[("riscv-sstc", "sbi", "vtimer")]["spin_us_per_deadline"], 0.2)
        self.assertIsNone(gsum[("riscv-sstc", "sbi", "intree")]["spin_us_per_deadline"])
        head, body = bench.gap_cells(gsum)
        self.assertEqual(body[0][head.index("spin us/deadline")], "0.2/0")
        # No thread figures in these records.
        self.assertEqual(body[0][head.index("wait us at max")], "-/-")
        g = evaluate(good_runs()[0], gaps)
        self.assertIn("ours spun 0.2 us per deadline", g[(0, "riscv-sstc", "sbi")]["detail"])
        # Records from before the figure: not shown.
        gsum = bench.summarize_gaps([gap("intree", "sbi", 400), gap("vtimer", "sbi", 300)])
        head, body = bench.gap_cells(gsum)
        self.assertEqual(body[0][head.index("spin us/deadline")], "-/0")

    def test_busy_gap_wait_at_max(self):
        # The vCPU thread's runnable wait in the repetition of the longest
        # gap: whether the host's scheduler made it.
        th = lambda w: {"thread": {"run_ns": 10**8, "wait_ns": w, "slices": 1}}
        gaps = [gap("intree", "sbi", 400) | th(47_000),
                gap("vtimer", "sbi", 32_314) | th(46_000),
                gap("vtimer", "sbi", 350, rep=1) | th(3_100_000)]
        gsum = bench.summarize_gaps(gaps)
        self.assertEqual(gsum[("riscv-sstc", "sbi", "vtimer")]["wait_us_at_max"], 46)
        head, body = bench.gap_cells(gsum)
        self.assertEqual(body[0][head.index("wait us at max")], "46/47")

    def test_arm64_busy_gap(self):
        # kvt_busy_gap runs on arm64 too, one line per EL1 timer, its modes
        # those of the configs' bench_modes: goal 0 is judged as on RISC-V.
        runs, gaps = good_runs()
        arm = [gap(b, m, g, config=c, gap_p50=40) | {"hz": 62_500_000}
               for c in ("arm64-vhe", "arm64-nvhe") for m in ("vtimer", "ptimer")
               for b, g in (("intree", 900), ("vtimer", 800))]
        plan = kvt.load_plan()
        targets = bench.goal_targets(plan, ["arm64-vhe", "arm64-nvhe"], gap_runs=arm)
        self.assertEqual(targets, {("arm64-vhe", "vtimer"): "direct",
                                   ("arm64-vhe", "ptimer"): "direct",
                                   ("arm64-nvhe", "vtimer"): "direct",
                                   ("arm64-nvhe", "ptimer"): "emulated"})
        g = evaluate(runs, gaps + arm, targets=targets)
        for t in targets:
            self.assertEqual(self.status(g, 0, *t), "met", t)
        self.assertEqual(g[(0, "arm64-nvhe", "ptimer")]["detail"],
                         "longest gap ours 800 vs in-tree 900 ticks, over 100 and 100 "
                         "deadlines; p50 40 vs 40")
        # No kvt_bench runs there: the other goals stay not measured.
        self.assertEqual(self.status(g, 1, "arm64-vhe", "vtimer"), "not measured")
        self.assertEqual(self.status(g, 2, "arm64-nvhe", "ptimer"), "not measured")
        # One repetition of ours longer than the in-tree timer's longest.
        worse = gap("vtimer", "ptimer", 901, rep=1, config="arm64-nvhe") | {"hz": 62_500_000}
        g = evaluate(runs, gaps + arm + [worse], targets=targets)
        self.assertEqual(self.status(g, 0, "arm64-nvhe", "ptimer"), "MISSED")
        self.assertEqual(self.status(g, 0, "arm64-nvhe", "vtimer"), "met")
        self.assertEqual(self.status(g, 0, "arm64-vhe", "ptimer"), "met")

    def test_missed_direct(self):
        runs, gaps = good_runs()
        # wfi p50 3 ticks above busy's: beyond the 2 allowed.
        slow = replace(runs, "riscv-sstc", "sstc", "wfi", "vtimer", lateness=[8] * 100)
        g = evaluate(slow, gaps)
        self.assertEqual(self.status(g, 1, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(g[(1, "riscv-sstc", "sstc")]["detail"], "wfi p50 8 vs busy p50 5 + 2")
        # Exactly 2 above is within.
        ok = replace(runs, "riscv-sstc", "sstc", "wfi", "vtimer", lateness=[7] * 90 + [16] * 10)
        self.assertEqual(self.status(evaluate(ok, gaps), 1, "riscv-sstc", "sstc"), "met")
        # p99 beyond twice busy's.
        tail = replace(runs, "riscv-sstc", "sstc", "wfi", "vtimer", lateness=[5] * 90 + [17] * 10)
        self.assertEqual(self.status(evaluate(tail, gaps), 1, "riscv-sstc", "sstc"), "MISSED")
        # More exits per interrupt than in-tree on the WFI guest.
        ex = replace(runs, "riscv-sstc", "sstc", "wfi", "vtimer", exits=200)
        g = evaluate(ex, gaps)
        self.assertEqual(self.status(g, 1, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(self.status(g, 4, "riscv-sstc", "sstc"), "MISSED")

    def test_missed_emulated(self):
        runs, gaps = good_runs()
        # p99 above the shipped figure on one workload.
        worse = replace(runs, "riscv-nosstc", "sbi", "storm", "vtimer",
                        lateness=[5] * 90 + [250] * 10)
        g = evaluate(worse, gaps)
        self.assertEqual(self.status(g, 2, "riscv-nosstc", "sbi"), "MISSED")
        self.assertEqual(g[(2, "riscv-nosstc", "sbi")]["detail"], "storm p99 250 vs shipped 200")
        # max above the in-tree timer's (still under the shipped max: that
        # one is not a goal).
        lmax = replace(runs, "riscv-nosstc", "sbi", "past", "vtimer", lateness=[5] * 99 + [301])
        g = evaluate(lmax, gaps)
        self.assertEqual(g[(2, "riscv-nosstc", "sbi")]["detail"], "past max 301 vs in-tree 300")
        # A baseline at another counter frequency is converted: 40 ticks
        # at 5 MHz are 80 at this run's 10 MHz.
        base = {k: {"ours": dict(v["ours"], hz=5_000_000)} for k, v in BASELINE.items()}
        g = evaluate(runs, gaps, baseline=base)
        self.assertIn("busy p50 5 vs shipped 80", g[(2, "riscv-nosstc", "sbi")]["detail"])

    def test_missed_migrate(self):
        runs, gaps = good_runs()
        # p99 more than half the in-tree timer's (300).
        r = replace(runs, "riscv-sstc", "sstc", "migrate", "vtimer", lateness=[5] * 90 + [151] * 10)
        g = evaluate(r, gaps)
        self.assertEqual(self.status(g, 3, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(g[(3, "riscv-sstc", "sstc")]["detail"], "p99 151 vs 0.5x in-tree 300")
        r = replace(runs, "riscv-sstc", "sstc", "migrate", "vtimer", lateness=[5] * 90 + [150] * 10)
        self.assertEqual(self.status(evaluate(r, gaps), 3, "riscv-sstc", "sstc"), "met")

    def test_missed_ipis_and_noise(self):
        runs, gaps = good_runs()
        lat = [5] * 1000
        # 7 IPIs against 6 in 1000 interrupts: counting noise, met; 40: not.
        noisy = replace(runs, "riscv-sstc", "sstc", "busy", "intree", lateness=lat, ipis=6)
        noisy = replace(noisy, "riscv-sstc", "sstc", "busy", "vtimer", lateness=lat, ipis=7)
        g = evaluate(noisy, gaps)
        self.assertEqual(self.status(g, 4, "riscv-sstc", "sstc"), "met")
        self.assertIn("within counting noise: 7 against 6", g[(4, "riscv-sstc", "sstc")]["detail"])
        many = replace(noisy, "riscv-sstc", "sstc", "busy", "vtimer", ipis=40)
        g = evaluate(many, gaps)
        self.assertEqual(self.status(g, 4, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(g[(4, "riscv-sstc", "sstc")]["detail"],
                         "busy ipis/irq ours 0.04 vs in-tree 0.006")
        # The in-tree timer lost a run: 2132 exits in 1000 interrupts
        # against 1672 in 800 is 2132 against 2090, within noise; compared
        # unscaled it would not be.
        lost = replace(runs, "riscv-sstc", "sstc", "busy", "intree", lateness=[5] * 800,
                       exits=1672)
        lost = replace(lost, "riscv-sstc", "sstc", "busy", "vtimer", lateness=lat, exits=2132)
        g = evaluate(lost, gaps)
        self.assertEqual(self.status(g, 4, "riscv-sstc", "sstc"), "met")
        self.assertIn("within counting noise: 2132 against 2090, in-tree scaled to 1000 "
                      "interrupts", g[(4, "riscv-sstc", "sstc")]["detail"])
        self.assertFalse(bench.within_noise(2132, 1672))
        self.assertTrue(bench.within_noise(7, 6))
        self.assertFalse(bench.within_noise(40, 6))
        self.assertFalse(bench.within_noise(None, 6))

    def test_spin_cost(self):
        runs, gaps = good_runs()
        # 200 us over 100 interrupts: 2 us each, under the 50 us cap.
        g = evaluate(runs, gaps)
        self.assertIn("wfi spin us/irq ours 2 vs in-tree 0 (cap 50)",
                      g[(5, "riscv-sstc", "sstc")]["detail"])
        # With a cap of 1 us (advance_max_ns=1000), 2 us is above it.
        g = evaluate(runs, gaps, cap_ns=bench.advance_cap_ns("advance_max_ns=1000"))
        self.assertEqual(self.status(g, 5, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(bench.advance_cap_ns(""), bench.ADVANCE_MAX_NS)
        self.assertEqual(bench.advance_cap_ns("other=3"), bench.ADVANCE_MAX_NS)

    def test_default_cap_is_the_modules(self):
        shim = (kvt.ROOT / "shim" / "common.c").read_text()
        m = re.search(r"static unsigned int advance_max_ns = .*: (\d+);", shim)
        self.assertIsNotNone(m)
        self.assertEqual(int(m.group(1)), bench.ADVANCE_MAX_NS)

    def test_goals_1_and_2_by_timer_kind(self):
        none = (lambda *_: None)
        for n, kind in ((1, bench.DIRECT), (2, bench.EMULATED)):
            other = bench.EMULATED if kind == bench.DIRECT else bench.DIRECT
            self.assertIsNone(bench.goal_checks(n, "c", "m", other, none, none, {}, None))
            self.assertIsNotNone(bench.goal_checks(n, "c", "m", kind, none, none, {}, None))
            unknown = bench.goal_checks(n, "c", "m", None, none, none, {}, None)
            self.assertEqual([(x["met"], x["detail"]) for x in unknown],
                             [(None, "mode m is not in c's bench_modes (selftests/plan.toml)")])

    def test_early_fails(self):
        runs, gaps = good_runs()
        # One early interrupt of ours: goals 1 and 6 missed.
        r = replace(runs, "riscv-sstc", "sstc", "past", "vtimer", lateness=[-1] + [5] * 99)
        g = evaluate(r, gaps)
        self.assertEqual(self.status(g, 6, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(g[(6, "riscv-sstc", "sstc")]["detail"],
                         "past ours 1 early of 100, in-tree 0 of 100")
        self.assertEqual(self.status(g, 1, "riscv-sstc", "sstc"), "MISSED")
        self.assertEqual(bench.ours_early(bench.summarize(r)), 1)
        # The in-tree timer's early interrupts (counted by kvt_bench even
        # without a negative sample) are shown, but goal 6 is ours.
        r = replace(runs, "riscv-nosstc", "sbi", "wfi", "intree", early=2)
        g = evaluate(r, gaps)
        self.assertEqual(self.status(g, 6, "riscv-nosstc", "sbi"), "met")
        self.assertIn("(in-tree: 2 early of", g[(6, "riscv-nosstc", "sbi")]["detail"])
        self.assertEqual(bench.ours_early(bench.summarize(r)), 0)
        # Met: the interrupts counted.
        g = evaluate(runs, gaps)
        self.assertEqual(g[(6, "riscv-sstc", "sstc")]["detail"],
                         "none in 500 interrupts of ours, 500 of in-tree")

    def test_lines_and_summary(self):
        runs, gaps = good_runs()
        runs = replace(runs, "riscv-sstc", "sstc", "migrate", "vtimer", lateness=[5] * 99 + [301])
        gs = bench.evaluate_goals(bench.summarize(runs), bench.summarize_gaps(gaps), TARGETS,
                                  BASELINE)
        lines = bench.goal_lines(gs)
        line_re = re.compile(r"^goal (\d) \(([A-Za-z ]+)\) ([\w-]+)/(\w+): "
                             r"(met|MISSED|not measured) \((.+)\)$")
        for line in lines:
            self.assertRegex(line, line_re)
        self.assertIn("goal 3 (migrate) riscv-sstc/sstc: MISSED (max 301 vs in-tree 300)", lines)
        self.assertIn("goal 1 (direct timer) arm64-vhe/vtimer: not measured "
                      "(no kvt_bench figures for this config and mode)", lines)
        # In goal order, then config/mode.
        self.assertEqual([int(line_re.match(x).group(1)) for x in lines],
                         sorted(int(line_re.match(x).group(1)) for x in lines))
        summ = bench.goal_summary(gs)
        self.assertEqual(summ["counts"]["MISSED"], 1)
        self.assertEqual(sum(summ["counts"].values()), len(gs))
        self.assertIn("missed: 3 riscv-sstc/sstc", summ["line"])
        json.dumps(gs)  # goes into bench.json

    def test_targets(self):
        plan = kvt.load_plan()
        t = bench.goal_targets(plan, ["riscv-nosstc"])
        self.assertEqual(t, {("riscv-nosstc", "sbi"): "emulated"})
        t = bench.goal_targets(plan, ["riscv-sstc", "riscv-nosstc"], declared=True)
        self.assertEqual(t[("riscv-sstc", "sstc")], "direct")
        self.assertEqual(t[("riscv-sstc", "sbi")], "emulated")
        self.assertEqual(t[("arm64-vhe", "vtimer")], "direct")
        self.assertEqual(t[("arm64-nvhe", "ptimer")], "emulated")
        self.assertEqual(list(t)[:3], [("riscv-sstc", "sstc"), ("riscv-sstc", "sbi"),
                                       ("riscv-nosstc", "sbi")])
        # A mode the results have but the plan does not declare.
        t = bench.goal_targets(plan, ["riscv-nosstc"], [run("vtimer", "wfi", config="x")],
                               [gap("vtimer", "sbi", 3, config="riscv-nosstc")])
        self.assertEqual(t, {("riscv-nosstc", "sbi"): "emulated", ("x", "sstc"): None})


class BaselineTest(unittest.TestCase):
    def test_repo_baseline(self):
        figs, meta = bench.load_baseline()
        self.assertEqual(meta["path"], "Documentation/bench/baseline.toml")
        self.assertEqual(meta["source"], "Documentation/bench/results.rst")
        for c, m in (("riscv-sstc", "sstc"), ("riscv-nosstc", "sbi")):
            for w in bench.WORKLOADS:
                f = figs[(c, m, w)]
                self.assertEqual(f["ours"]["hz"], 10_000_000)
                self.assertLessEqual(f["ours"]["p50"], f["ours"]["p99"])
                self.assertLessEqual(f["intree"]["p99"], f["intree"]["max"])
        self.assertEqual(len(figs), 10)
        self.assertEqual(figs[("riscv-nosstc", "sbi", "wfi")]["ours"]["p99"], 224)

    def test_baseline_is_the_shipped_table(self):
        # Every figure must match the table it was taken from: the version
        # of results.rst in the history whose run was made at the
        # baseline's git revision (it has been republished since).
        figs, meta = bench.load_baseline()
        marker = f"(git {meta['git']})"

        def git(*args):
            return subprocess.run(["git", "-C", str(kvt.ROOT), *args],
                                  capture_output=True, text=True)

        log = git("log", "--format=%H", "--", meta["source"])
        if log.returncode:
            self.skipTest(f"no git history here: {log.stderr.strip()}")
        shipped = (git("show", f"{c}:{meta['source']}").stdout
                   for c in log.stdout.split())
        rst = next((t for t in shipped if marker in t), None)
        self.assertIsNotNone(rst, f"no version of {meta['source']} made at {marker}")
        rows = [line.split() for line in rst.splitlines() if line.startswith("riscv-")]
        fig_re = re.compile(r"\((\d+)/(\d+)\)")
        seen = 0
        for row in rows:
            c, w = row[0], row[1]
            cells = [fig_re.search(x) for x in row[3:]]
            cells = [x for x in cells if x][:3]
            m = "sstc" if c == "riscv-sstc" else "sbi"
            f = figs[(c, m, w)]
            for key, cell in zip(("p50", "p99", "max"), cells):
                self.assertEqual(f["ours"][key], int(cell.group(1)), (c, w, key))
                self.assertEqual(f["intree"][key], int(cell.group(2)), (c, w, key))
            seen += 1
        self.assertEqual(seen, 10)

    def test_missing_file(self):
        self.assertEqual(bench.load_baseline("/nonexistent/baseline.toml"), ({}, {}))


class GapTest(unittest.TestCase):
    def test_parse(self):
        good = gap("vtimer", "sbi", 42)
        lines = ["random", bench.GAP_PREFIX + json.dumps(good) + "\r",
                 bench.GAP_PREFIX + "{\"backend\": [  3.1] cut",
                 bench.GAP_PREFIX + json.dumps({"backend": "x"}),
                 "# kvt-busy-gap-other {}"]
        recs, bad = bench.parse_gap_lines(lines)
        self.assertEqual(recs, [good])
        self.assertEqual(len(bad), 2)
        # arm64's, per EL1 timer (kvt_busy_gap.c's report()).
        recs, bad = bench.parse_gap_lines([
            '# kvt-busy-gap {"backend": "intree", "mode": "ptimer", "hz": 62500000, '
            '"deadlines": 100, "gap_max": 1234, "gap_p50": 56}'])
        self.assertEqual((recs[0]["mode"], recs[0]["gap_max"], bad), ("ptimer", 1234, []))

    def test_summary(self):
        gs = bench.summarize_gaps([gap("vtimer", "sbi", 10, 2, rep=0),
                                   gap("vtimer", "sbi", 30, 4, rep=1),
                                   gap("vtimer", "sbi", 20, 3, rep=2),
                                   gap("intree", "sbi", 25, 1),
                                   gap("intree", "sstc", 5, 1)])
        self.assertEqual(list(gs), [("riscv-sstc", "sbi", "intree"),
                                    ("riscv-sstc", "sbi", "vtimer"),
                                    ("riscv-sstc", "sstc", "intree")])
        s = gs[("riscv-sstc", "sbi", "vtimer")]
        self.assertEqual((s["gap_max"], s["gap_p50"], s["reps"], s["deadlines"]),
                         (30, 3, 3, 300))
        self.assertEqual(s["spread"]["gap_max"], [10, 30])
        head, body = bench.gap_cells(gs)
        self.assertEqual(body[0][:5], ["riscv-sstc", "sbi", "3/1", "1.20 (30/25)", "3.00 (3/1)"])
        self.assertEqual(body[1][:4], ["riscv-sstc", "sstc", "0/1", "-/5"])
        self.assertEqual(len(bench.text_table(head, body)), 3)
        # The in-tree timer's early interrupts, counted per (config, mode).
        gs = bench.summarize_gaps([dict(gap("intree", "sbi", 25, 1, rep=0), early=2),
                                   dict(gap("intree", "sbi", 25, 1, rep=1), early=1),
                                   gap("vtimer", "sbi", 20, 1)])
        self.assertEqual(gs[("riscv-sstc", "sbi", "intree")]["early"], 3)
        self.assertEqual(gs[("riscv-sstc", "sbi", "vtimer")]["early"], 0)

    def test_results_by_step(self):
        gaps = bench.gap_tests(2)
        self.assertEqual([(g["rep"], g["backend"]) for g in gaps],
                         [(0, "intree"), (0, "vtimer"), (1, "intree"), (1, "vtimer")])
        self.assertEqual(gaps[0]["argv"], ["kvt_busy_gap"])
        self.assertEqual(bench.gap_tests(1, irqs=5000)[0]["argv"], ["kvt_busy_gap", "-n", "1000"])

        def step(g, *recs):
            return ["    " + bench.GAP_PREFIX + json.dumps(r) for r in recs] + [
                f"ok 1 bench.{g['id']} # time=1.0s"]

        console = [*step(gaps[0], gap("intree", "sbi", 7), gap("intree", "sstc", 8)),
                   *step(gaps[1], gap("vtimer", "sbi", 6)),
                   *step(gaps[2], gap("vtimer", "sbi", 9)),   # module still loaded
                   *step(gaps[3], gap("vtimer", "sbi", 5))]
        recs, problems = bench.gap_results("c", console, gaps)
        self.assertEqual([(r["config"], r["rep"], r["backend"], r["mode"], r["gap_max"])
                          for r in recs],
                         [("c", 0, "intree", "sbi", 7), ("c", 0, "intree", "sstc", 8),
                          ("c", 0, "vtimer", "sbi", 6), ("c", 1, "vtimer", "sbi", 5)])
        self.assertEqual(problems, ["c: kvt_busy_gap.1.intree ran with vtimer, not intree"])


class OutputTest(unittest.TestCase):
    RUNS = [run(b, w, rep=i, config=c, lateness=lat)
            for c in ("riscv-sstc", "riscv-nosstc")
            for w in bench.WORKLOADS
            for i in range(2)
            for b, lat in (("intree", (-2, 0, 3, 3, 40, 10**6)), ("vtimer", (0, 1, 1, 2)))]
    META = {"command": "scripts/bench.py --reps 2", "date": "2026-11-01 10:00 UTC",
            "git": "abc123", "reps": 2, "irqs": 0, "kvt_bench": "kvt_bench -k x",
            "configs": {"riscv-sstc": {"qemu": ["-M", "virt"], "icount": "shift=3,sleep=off"}}}

    def test_svg_is_well_formed(self):
        summary = bench.summarize(self.RUNS)
        root = ET.fromstring(bench.svg_plot(summary, self.RUNS, "a <title> & more"))
        self.assertEqual(root.tag, "{http://www.w3.org/2000/svg}svg")
        lines = root.findall(".//{http://www.w3.org/2000/svg}polyline")
        self.assertEqual(len(lines), 2 * 2 * len(bench.WORKLOADS))
        for pl in lines:
            for pt in pl.get("points").split():
                x, y = map(float, pt.split(","))
                self.assertTrue(0 <= x <= float(root.get("width")), pt)
                self.assertTrue(0 <= y <= float(root.get("height")), pt)

    def test_svg_edge_cases(self):
        ET.fromstring(bench.svg_plot({}, []))
        one = [run("vtimer", "wfi", lateness=(0,))]
        ET.fromstring(bench.svg_plot(bench.summarize(one), one))
        empty = [run("vtimer", "wfi", lateness=())]
        ET.fromstring(bench.svg_plot(bench.summarize(empty), empty))

    def test_cdf_points(self):
        self.assertEqual(bench.cdf_points([3, 1, 3, 2]), [(1, 0.25), (2, 0.5), (3, 1.0)])

    GAPS = [gap(b, m, g, rep=i, config=c)
            for c, modes in (("riscv-sstc", ("sbi", "sstc")), ("riscv-nosstc", ("sbi",)))
            for m in modes for i in range(2) for b, g in (("intree", 50), ("vtimer", 40))]

    def test_write_outputs_and_rst(self):
        targets = dict(TARGETS)
        with tempfile.TemporaryDirectory() as d:
            summary, rows, gs, gsum = bench.write_outputs(
                Path(d), self.RUNS, self.META, [], self.GAPS, targets)
            doc = json.loads((Path(d) / "bench.json").read_text())
            self.assertEqual(len(doc["runs"]), len(self.RUNS))
            self.assertEqual(len(doc["summary"]), 2 * 2 * len(bench.WORKLOADS))
            self.assertEqual(doc["meta"]["git"], "abc123")
            self.assertEqual(len(doc["busy_gap"]["runs"]), len(self.GAPS))
            self.assertEqual(len(doc["busy_gap"]["summary"]), 6)
            self.assertEqual(doc["baseline"]["path"], "Documentation/bench/baseline.toml")
            self.assertEqual(len(doc["goals"]), len(gs))
            self.assertEqual(sum(doc["goal_summary"].values()), len(gs))
            # The host CPU time per interrupt, in the summaries and ratios.
            self.assertIn("spin_us_per_irq", doc["summary"][0])
            self.assertIn("spin us/irq", doc["ratios"][0])
            ET.parse(Path(d) / "lateness-cdf.svg")
        self.assertEqual({(g["config"], g["mode"]) for g in gs}, set(targets))
        # Without targets: the modes of the configs that ran, of the kinds
        # in selftests/plan.toml.
        with tempfile.TemporaryDirectory() as d:
            _, _, gs, _ = bench.write_outputs(Path(d), self.RUNS, self.META, [], self.GAPS)
        self.assertEqual(sorted({(g["config"], g["mode"], g["kind"]) for g in gs}),
                         [("riscv-nosstc", "sbi", "emulated"),
                          ("riscv-nosstc", "sstc", None),   # RUNS say sstc there
                          ("riscv-sstc", "sbi", "emulated"), ("riscv-sstc", "sstc", "direct")])
        rst = bench.rst_table(rows, gs, self.META, gsum)
        self.assertIn("``scripts/bench.py --reps 2``", rst)
        self.assertIn("-icount shift=3,sleep=off", rst)
        rules = [l for l in rst.splitlines() if l.startswith("====")]
        self.assertEqual(len(rules), 6)  # the ratio and busy-gap tables
        self.assertIn("- goal 0 (busy gap) riscv-sstc/sbi: met (longest gap ours 40 vs "
                      "in-tree 50 ticks", rst)
        self.assertIn("spin us/irq", rst)
        self.assertNotIn("linux-source", rst)
        meta = dict(self.META, linux_source="6.12.118-1~deb12u1")
        self.assertIn(", host kernels from Debian linux-source-6.12 6.12.118-1~deb12u1.",
                      bench.rst_table(rows, gs, meta))
        self.assertEqual(len([l for l in bench.rst_table(rows, gs, self.META).splitlines()
                              if l.startswith("====")]), 3)

    def test_print_report(self):
        summary = bench.summarize(self.RUNS)
        gsum = bench.summarize_gaps(self.GAPS)
        gs = bench.evaluate_goals(summary, gsum, TARGETS, BASELINE)
        with mock.patch("sys.stdout", new_callable=io.StringIO) as out:
            bench.print_report(summary, bench.ratio_rows(summary), gs, Path("o"), gsum)
        text = out.getvalue()
        self.assertIn("# busy gap (kvt_busy_gap)", text)
        self.assertIn("  goal 6 (no early) riscv-sstc/sstc: met (none in 40 interrupts of ours "
                      "(in-tree: 10 early of 60))", text)
        self.assertIn("# goals: ", text)
        self.assertIn("(--strict fails on MISSED only)", text)


class PlanTest(unittest.TestCase):
    def test_bench_configs_and_steps(self):
        plan = kvt.load_plan()
        names = bench.bench_configs(plan)
        self.assertIn("riscv-sstc", names)
        self.assertIn("riscv-nosstc", names)
        for n in names:
            self.assertTrue(plan["config"][n].get("icount"), n)
        argv = bench.bench_argv(3, 100, ["wfi", "busy"], "advance_max_ns=0", ["sstc", "sbi"])
        test = {"id": "kvt_bench", "argv": argv, "timeout": 600}
        steps = bench.bench_steps(test, kvm_module=True)
        self.assertEqual(steps[0][0], "host.insmod_kvm")
        # Proactive compaction off before the benchmark: kcompactd's
        # 500 ms wakeups fell on ours' runs.
        self.assertIn((None, "write /proc/sys/vm/compaction_proactiveness 0"), steps)
        self.assertEqual(steps[-1], ("bench.kvt_bench",
                                     "run 600 bench.kvt_bench /bin/kvt_bench -k "
                                     "/lib/modules/kvm_vtimer.ko -r 3 -m sstc,sbi "
                                     "-o advance_max_ns=0 -n 100 -w wfi,busy"))
        with self.assertRaises(SystemExit):
            bench.bench_argv(1, 0, [], "a=1 b=2")
        # kvt_busy_gap after kvt_bench: in-tree, then ours between an insmod
        # (with the module parameters) and an rmmod, once per repetition.
        gsteps = bench.bench_steps(test, True, bench.gap_tests(2, timeout=99),
                                   "advance_max_ns=0")
        self.assertEqual(gsteps[:len(steps)], steps)
        self.assertEqual([line for _, line in gsteps[len(steps):]], [
            "run 99 bench.kvt_busy_gap.0.intree /bin/kvt_busy_gap",
            "insmod 60 bench.insmod.0 /lib/modules/kvm_vtimer.ko advance_max_ns=0",
            "run 99 bench.kvt_busy_gap.0.vtimer /bin/kvt_busy_gap",
            "rmmod 60 bench.rmmod.0 kvm_vtimer",
            "run 99 bench.kvt_busy_gap.1.intree /bin/kvt_busy_gap",
            "insmod 60 bench.insmod.1 /lib/modules/kvm_vtimer.ko advance_max_ns=0",
            "run 99 bench.kvt_busy_gap.1.vtimer /bin/kvt_busy_gap",
            "rmmod 60 bench.rmmod.1 kvm_vtimer"])
        self.assertEqual(bench.bench_steps(test, True, bench.gap_tests(1))[-3][1],
                         "insmod 60 bench.insmod.0 /lib/modules/kvm_vtimer.ko")
        self.assertNotIn("vtimer.insmod", [t for t, _ in steps])
        self.assertEqual([t for t, _ in bench.bench_steps(test, False) if t],
                         ["bench.kvt_bench"])

    def test_modes_per_config(self):
        # kvt_bench measures each timer mode the plan declares for the
        # config, in its order; the default timeout is per rep and mode.
        plan = kvt.load_plan()
        names = bench.bench_configs(plan)
        for n in ("arm64-vhe", "arm64-nvhe", "arm64-ecv"):
            self.assertIn(n, names)
        want = {"riscv-sstc": ["sstc", "sbi"], "riscv-nosstc": ["sbi"],
                "arm64-vhe": ["vtimer", "ptimer"], "arm64-nvhe": ["vtimer", "ptimer"],
                "arm64-ecv": ["vtimer", "ptimer"]}
        for n, modes in want.items():
            self.assertEqual(bench.bench_modes(plan, n), modes, n)
            t = bench.bench_test(plan, n, 2, 0, [])
            self.assertEqual(t["argv"], ["kvt_bench", "-k", bench.MODULE, "-r", "2",
                                         "-m", ",".join(modes)], n)
            self.assertEqual(t["timeout"],
                             bench.SECS_FIXED + bench.SECS_PER_REP * 2 * len(modes), n)
        # Every benchmark config declares its modes, each of a known kind.
        for n in names:
            kinds = plan["config"][n].get("bench_modes")
            self.assertTrue(kinds, n)
            self.assertLessEqual(set(kinds.values()), {bench.DIRECT, bench.EMULATED}, n)
        self.assertEqual(bench.bench_test(plan, "riscv-sstc", 1, 0, [], timeout=7)["timeout"],
                         7)


class MainTest(unittest.TestCase):
    """bench.main()'s exit status, with the builds and boots replaced."""

    def main(self, runs, problems=(), built=True, args=(), gaps=(), configs=("riscv-sstc",)):
        with tempfile.TemporaryDirectory() as d:
            sel = Path(d) / "sel"
            sel.mkdir()
            if built:
                (sel / "kvt_bench").write_bytes(b"x")
                (sel / "kvt_busy_gap").write_bytes(b"x")
            rec = {"config": "riscv-sstc", "wall": 1.0, "console": "x", "results": []}
            boot = mock.Mock(return_value=(runs, list(gaps), rec, list(problems)))
            with mock.patch.object(kvt, "prepare", return_value=(None, None, sel, {})), \
                    mock.patch.object(bench, "bench_boot", boot), \
                    mock.patch("sys.stdout", new_callable=io.StringIO) as out:
                status = bench.main(["--out", str(Path(d) / "out"), *args, *configs])
            self.out = out.getvalue()
            self.boot = boot
            if (Path(d) / "out" / "bench.json").exists():
                self.doc = json.loads((Path(d) / "out" / "bench.json").read_text())
            return status

    GOOD = [run("intree", "wfi", lateness=(10, 20)), run("vtimer", "wfi", lateness=(1, 2))]

    def test_kernel_source_version_in_the_outputs(self):
        with mock.patch.object(kvt, "linux_source_version", return_value="6.12.118-1~deb12u1"):
            self.assertEqual(self.main(self.GOOD), 0)
        self.assertEqual(self.doc["meta"]["linux_source"], "6.12.118-1~deb12u1")
        self.assertEqual(self.out.splitlines()[0],
                         "# host kernels: Debian linux-source-6.12 6.12.118-1~deb12u1")

    def test_extra_and_lost(self):
        # Runs kvt_bench gave up (lost) or with interrupts after the last
        # (extra): the in-tree timer's are reported, ours fail the bench.
        intree = [run("intree", "migrate", lateness=(10, 20), extra=1),
                  run("intree", "migrate", rep=1, lateness=(10,), irqs=1, lost=1),
                  run("vtimer", "migrate", lateness=(1, 2)), *self.GOOD]
        self.assertEqual(self.main(intree), 0)
        self.assertIn("# in-tree timer: riscv-sstc/sstc/migrate: 1 extra, 1 lost run ",
                      self.out)
        s = self.doc["summary"]
        self.assertEqual([(x["backend"], x["extra"], x["lost"]) for x in s
                          if x["workload"] == "migrate"], [("intree", 1, 1), ("vtimer", 0, 0)])
        ours = [*self.GOOD, run("intree", "busy"), run("vtimer", "busy", lost=1)]
        self.assertEqual(self.main(ours), 1)
        self.assertIn("# bench: FAILED: ours, riscv-sstc/sstc/busy: 0 extra, 1 lost run "
                      "(a correctness bug)", self.out)
        self.assertEqual(self.main([*self.GOOD, run("vtimer", "busy", extra=2)]), 1)

    def test_exit_status(self):
        self.assertEqual(self.main(self.GOOD), 0)
        self.assertEqual(self.main(self.GOOD, built=False), bench.KSFT_SKIP)
        self.assertEqual(self.main([]), 1)
        self.assertEqual(self.main(self.GOOD, problems=["boot failed"]), 1)
        early = [self.GOOD[0], run("vtimer", "wfi", lateness=(-1, 2))]
        self.assertEqual(self.main(early), 1)
        intree_early = [run("intree", "wfi", lateness=(-1, 20)), self.GOOD[1]]
        self.assertEqual(self.main(intree_early), 0)
        # A goal MISSED (migrate max above the in-tree timer's): --strict
        # fails.
        slow = [*self.GOOD, run("intree", "migrate", lateness=(10, 20)),
                run("vtimer", "migrate", lateness=(1, 21))]
        self.assertEqual(self.main(slow), 0)
        self.assertIn("goal 3 (migrate) riscv-sstc/sstc: MISSED "
                      "(p99 21 vs 0.5x in-tree 20; max 21 vs in-tree 20)", self.out)
        self.assertIn("goal 4 (exits and IPIs) riscv-sstc/sstc: not measured (no figures "
                      "for busy exits/irq, busy ipis/irq, storm exits/irq, storm ipis/irq, "
                      "past exits/irq, past ipis/irq)", self.out)
        self.assertEqual(self.main(slow, args=["--strict"]), 1)
        self.assertIn("# bench: FAILED: goals MISSED (--strict)", self.out)
        # Only goals not measured (most workloads missing here): --strict
        # passes, and says which.
        self.assertEqual(self.main(self.GOOD, args=["--strict"]), 0)
        self.assertIn("goal 3 (migrate) riscv-sstc/sstc: not measured", self.out)
        self.assertIn(" 0 MISSED, ", self.out)

    def test_strict_with_everything_measured(self):
        runs, gaps = good_runs()
        runs = [r for r in runs if r["config"] == "riscv-nosstc"]
        gaps = [g for g in gaps if g["config"] == "riscv-nosstc"]
        self.assertEqual(self.main(runs, gaps=gaps, args=["--strict"],
                                   configs=["riscv-nosstc"]), 0)
        # The repository's baseline: riscv-nosstc's shipped p50 and p99.
        self.assertIn("goal 2 (emulated timer) riscv-nosstc/sbi: met", self.out)
        self.assertEqual(self.doc["goal_summary"], {"met": 6, "MISSED": 0, "not measured": 0})
        worse = replace(runs, "riscv-nosstc", "sbi", "wfi", "vtimer", lateness=[300] * 100)
        self.assertEqual(self.main(worse, gaps=gaps, args=["--strict"],
                                   configs=["riscv-nosstc"]), 1)
        self.assertIn("goal 2 (emulated timer) riscv-nosstc/sbi: MISSED (wfi p50 300 vs "
                      "shipped 35; wfi p99 300 vs shipped 224)", self.out)

    def test_targets_and_busy_gap_runs(self):
        # No config named: every benchmark config, each with its own
        # kvt_bench modes; the modes without figures (arm64's here) are
        # listed as not measured.
        self.main(self.GOOD, configs=())
        self.assertIn("goal 1 (direct timer) arm64-vhe/vtimer: not measured", self.out)
        self.assertIn("goal 2 (emulated timer) arm64-nvhe/ptimer: not measured", self.out)
        booted = {c.args[1]: c.args[3]["argv"] for c in self.boot.call_args_list}
        self.assertEqual(booted["arm64-nvhe"][-4:],
                         ["-m", "vtimer,ptimer", "-o", "advance_max_ns=100000"])
        self.assertEqual(booted["riscv-nosstc"][-4:],
                         ["-m", "sbi", "-o", "advance_max_ns=100000"])
        self.assertEqual(self.doc["meta"]["configs"]["arm64-nvhe"]["module_params"],
                         "advance_max_ns=100000")
        self.assertEqual(self.doc["meta"]["configs"]["arm64-ecv"]["modes"], ["vtimer", "ptimer"])
        self.assertIn("-m sstc,sbi", self.doc["meta"]["configs"]["riscv-sstc"]["kvt_bench"])
        # Named: only those.
        self.main(self.GOOD)
        self.assertNotIn("arm64", self.out)
        self.assertIn("goal 0 (busy gap) riscv-sstc/sbi: not measured", self.out)
        # kvt_busy_gap runs go to the boot, per repetition, with the
        # module's parameters; not with --no-busy-gap or without busy.
        self.main(self.GOOD, args=["--reps", "3", "--module-params", "advance_max_ns=7"])
        kw = self.boot.call_args.kwargs
        self.assertEqual(len(kw["gaps"]), 6)
        self.assertEqual(kw["params"], "advance_max_ns=7")
        self.assertEqual(kw["gaps"][0]["timeout"], 120)  # selftests/plan.toml's
        self.main(self.GOOD, args=["--no-busy-gap"])
        self.assertEqual(self.boot.call_args.kwargs["gaps"], [])
        self.main(self.GOOD, args=["--workloads", "wfi"])
        self.assertEqual(self.boot.call_args.kwargs["gaps"], [])
        self.main(self.GOOD, args=["--workloads", "wfi,busy"])
        self.assertEqual(len(self.boot.call_args.kwargs["gaps"]), 10)
        # arm64 as RISC-V: its runs, and goal 0 per EL1 timer from them.
        arm = [gap(b, m, 500, config="arm64-vhe") for m in ("vtimer", "ptimer")
               for b in ("intree", "vtimer")]
        self.main(self.GOOD, gaps=arm, configs=["arm64-vhe"])
        self.assertEqual(len(self.boot.call_args.kwargs["gaps"]), 10)
        self.assertIn("goal 0 (busy gap) arm64-vhe/vtimer: met", self.out)
        self.assertIn("goal 0 (busy gap) arm64-vhe/ptimer: met", self.out)


FAKE_QEMU = r"""#!/usr/bin/env python3
import os, sys
serial = next(a[5:] for a in sys.argv if a.startswith("file:"))
open(serial, "w").write(os.environ["FAKE_CONSOLE"])
"""


class BootTest(unittest.TestCase):
    """kvt.boot() with explicit steps, on a QEMU that only writes a console."""

    def test_boot_with_steps(self):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            qemu = d / "qemu"
            qemu.write_text(FAKE_QEMU)
            qemu.chmod(0o755)
            for f in ("Image", "init", "sel/kvt_bench", "sel/kvt_busy_gap"):
                (d / f).parent.mkdir(exist_ok=True)
                (d / f).write_bytes(b"x")
            test = {"id": "kvt_bench", "argv": ["kvt_bench", "-r", "1"], "timeout": 5}
            gaps = bench.gap_tests(1, timeout=5)
            steps = bench.bench_steps(test, False, gaps)
            console = [console_line(run("intree", "wfi")), console_line(run("vtimer", "wfi")),
                       "    " + bench.DONE, "ok 1 bench.kvt_bench # time=3.0s",
                       "    " + bench.GAP_PREFIX + json.dumps(gap("intree", "sbi", 9)),
                       "ok 2 bench.kvt_busy_gap.0.intree # time=1.0s",
                       "ok 3 bench.insmod.0 # time=0.1s",
                       "    " + bench.GAP_PREFIX + json.dumps(gap("vtimer", "sbi", 8)),
                       "ok 4 bench.kvt_busy_gap.0.vtimer # time=1.0s",
                       "ok 5 bench.rmmod.0 # time=0.1s", kvt.PLAN_DONE]
            plan = {"config": {"c": {"arch": "riscv", "qemu": [], "icount": "shift=3"}},
                    "test": [], "xfail": []}
            env = {"FAKE_CONSOLE": "\n".join(console) + "\n"}
            with mock.patch.dict(kvt.QEMU, {"riscv": (str(qemu), "ttyS0", [])}), \
                    mock.patch.dict(os.environ, env):
                runs, gap_runs, rec, problems = bench.bench_boot(
                    plan, "c", (d / "Image", d / "init", d / "sel", {}), test, False,
                    outdir=d / "out", gaps=gaps)
            self.assertEqual((d / "out" / "plan").read_text(),
                             "write /proc/sys/vm/compaction_proactiveness 0\n"
                             "phase bench\nrun 5 bench.kvt_bench /bin/kvt_bench -r 1\n"
                             "run 5 bench.kvt_busy_gap.0.intree /bin/kvt_busy_gap\n"
                             "insmod 60 bench.insmod.0 /lib/modules/kvm_vtimer.ko\n"
                             "run 5 bench.kvt_busy_gap.0.vtimer /bin/kvt_busy_gap\n"
                             "rmmod 60 bench.rmmod.0 kvm_vtimer\n")
            self.assertIn("-icount", (d / "out" / "qemu.cmd").read_text())
            self.assertEqual(problems, [])
            self.assertEqual([r["config"] for r in runs], ["c", "c"])
            self.assertEqual([(r["config"], r["backend"], r["gap_max"]) for r in gap_runs],
                             [("c", "intree", 9), ("c", "vtimer", 8)])
            self.assertEqual([r["status"] for r in rec["results"]], ["pass"] * 6)

            # Without the end marker and with a failed step: problems.
            env["FAKE_CONSOLE"] = "not ok 1 bench.kvt_bench # time=3.0s exit=1\n"
            with mock.patch.dict(kvt.QEMU, {"riscv": (str(qemu), "ttyS0", [])}), \
                    mock.patch.dict(os.environ, env):
                runs, _, rec, problems = bench.bench_boot(
                    plan, "c", (d / "Image", d / "init", d / "sel", {}), test, False,
                    outdir=d / "out")
            self.assertEqual(runs, [])
            self.assertEqual(len(problems), 4)  # step, console, no done, no results


if __name__ == "__main__":
    unittest.main()
