# SPDX-License-Identifier: GPL-2.0
"""Tests of the benchmark runner (scripts/bench.py) on synthetic kvt_bench
output, and of kvt.boot() with an explicit plan, on a fake QEMU.

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import io
import json
import os
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

    def test_intree_has_no_hrtimer_figures_and_negative_is_early(self):
        s = bench.summarize_group([run("intree", "past", lateness=(-3, 0, 5), early=0)])
        self.assertIsNone(s["hrtimer_ops_per_irq"])
        self.assertEqual(s["early"], 1)

    def test_summary_order(self):
        runs = [run("vtimer", "wfi"), run("intree", "wfi"), run("vtimer", "busy"),
                run("intree", "busy", config="riscv-nosstc"), run("intree", "busy")]
        self.assertEqual(list(bench.summarize(runs)),
                         [("riscv-sstc", "busy", "intree"), ("riscv-sstc", "busy", "vtimer"),
                          ("riscv-sstc", "wfi", "intree"), ("riscv-sstc", "wfi", "vtimer"),
                          ("riscv-nosstc", "busy", "intree")])


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
        self.assertTrue(lines[0].startswith("config"))
        json.dumps(rows)  # goes into bench.json

    def test_spread(self):
        runs = [run("intree", "wfi", rep=0, lateness=(1, 2, 3)),
                run("intree", "wfi", rep=1, lateness=(5, 6, 7)),
                run("vtimer", "wfi", rep=0, lateness=(1,))]
        lines = bench.spread_lines(bench.summarize(runs))
        self.assertEqual(lines[1].split(), ["riscv-sstc", "wfi", "1..1", "2..6", "1..1", "3..7"])
        lines = bench.spread_lines(bench.summarize(runs[:2]))
        self.assertEqual(lines[1].split(), ["riscv-sstc", "wfi", "-", "2..6", "-", "3..7"])


class GoalTest(unittest.TestCase):
    def evaluate(self, runs):
        return {(g["goal"], g["config"], g["workload"]): g
                for g in bench.goals(bench.summarize(runs))}

    def test_met(self):
        runs = [run("intree", "wfi", lateness=[10] * 50 + [100] * 50, exits=10, ipis=5),
                run("vtimer", "wfi", lateness=[10] * 50 + [50] * 50, exits=10, ipis=5),
                run("intree", "busy", exits=4), run("vtimer", "busy", exits=0)]
        g = self.evaluate(runs)
        self.assertTrue(g[("wfi p99 <= in-tree/2", "riscv-sstc", "wfi")]["met"])
        self.assertTrue(g[("wfi p50 <= in-tree", "riscv-sstc", "wfi")]["met"])
        self.assertTrue(g[("busy (Sstc): 0 exits/irq", "riscv-sstc", "busy")]["met"])
        self.assertTrue(all(x["met"] for x in g.values()))
        self.assertEqual(bench.ours_early(bench.summarize(runs)), 0)

    def test_not_met(self):
        runs = [run("intree", "wfi", lateness=[10] * 99 + [100], exits=1, ipis=0),
                run("vtimer", "wfi", lateness=[11] * 99 + [51], exits=20, ipis=20, early=2),
                run("intree", "busy"), run("vtimer", "busy", exits=1, ecall_exits=1)]
        g = self.evaluate(runs)
        self.assertFalse(g[("wfi p99 <= in-tree/2", "riscv-sstc", "wfi")]["met"])
        self.assertFalse(g[("wfi p50 <= in-tree", "riscv-sstc", "wfi")]["met"])
        self.assertFalse(g[("busy (Sstc): 0 exits/irq", "riscv-sstc", "busy")]["met"])
        self.assertFalse(g[("exits/irq <= in-tree", "riscv-sstc", "wfi")]["met"])
        self.assertFalse(g[("ipis/irq <= in-tree", "riscv-sstc", "wfi")]["met"])
        self.assertFalse(g[("0 early", "riscv-sstc", "wfi (vtimer)")]["met"])
        self.assertTrue(g[("0 early", "riscv-sstc", "wfi (intree)")]["met"])
        self.assertEqual(bench.ours_early(bench.summarize(runs)), 2)
        self.assertTrue(any(l.startswith("NOT MET") for l in
                            bench.goal_lines(list(g.values()))))

    def test_host_exits_and_noise(self):
        # A spinning Sstc guest: host-tick exits on both sides, none of its
        # own; 7 IPIs against 6 in 1000 interrupts is counting noise, 40
        # against 6 is not.
        lat = [1] * 1000
        runs = [run("intree", "busy", lateness=lat, exits=300, ipis=6),
                run("vtimer", "busy", lateness=lat, exits=300, ipis=7, ecall_exits=0),
                run("intree", "wfi", lateness=lat, exits=1000, ipis=6),
                run("vtimer", "wfi", lateness=lat, exits=1000, ipis=40)]
        g = self.evaluate(runs)
        self.assertTrue(g[("busy (Sstc): 0 exits/irq", "riscv-sstc", "busy")]["met"])
        self.assertEqual(g[("ipis/irq <= in-tree", "riscv-sstc", "busy")]["met"], "noise")
        self.assertFalse(g[("ipis/irq <= in-tree", "riscv-sstc", "wfi")]["met"])
        self.assertTrue(bench.within_noise(7, 6))
        self.assertFalse(bench.within_noise(40, 6))
        self.assertFalse(bench.within_noise(None, 6))
        lines = bench.goal_lines([x for x in g.values() if x["workload"] == "busy"])
        self.assertTrue(any(l.startswith("~MET") for l in lines), lines)

    def test_no_data_and_sbi(self):
        runs = [run("intree", "wfi", config="riscv-nosstc", mode="sbi"),
                run("vtimer", "busy", config="riscv-nosstc", mode="sbi", exits=8)]
        g = self.evaluate(runs)
        self.assertIsNone(g[("wfi p99 <= in-tree/2", "riscv-nosstc", "wfi")]["met"])
        self.assertIsNone(g[("exits/irq <= in-tree", "riscv-nosstc", "busy")]["met"])
        self.assertNotIn(("busy (Sstc): 0 exits/irq", "riscv-nosstc", "busy"), g)
        self.assertIn("n/a", bench.goal_lines(list(g.values()))[0])


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

    def test_write_outputs_and_rst(self):
        with tempfile.TemporaryDirectory() as d:
            summary, rows, gs = bench.write_outputs(Path(d), self.RUNS, self.META, [])
            doc = json.loads((Path(d) / "bench.json").read_text())
            self.assertEqual(len(doc["runs"]), len(self.RUNS))
            self.assertEqual(len(doc["summary"]), 2 * 2 * len(bench.WORKLOADS))
            self.assertEqual(doc["meta"]["git"], "abc123")
            ET.parse(Path(d) / "lateness-cdf.svg")
        rst = bench.rst_table(rows, gs, self.META)
        self.assertIn("``scripts/bench.py --reps 2``", rst)
        self.assertIn("-icount shift=3,sleep=off", rst)
        rules = [l for l in rst.splitlines() if l.startswith("====")]
        self.assertEqual(len(rules), 3)
        self.assertNotIn("linux-source", rst)
        meta = dict(self.META, linux_source="6.12.118-1~deb12u1")
        rst = bench.rst_table(rows, gs, meta)
        self.assertIn(", host kernels from Debian linux-source-6.12 6.12.118-1~deb12u1.", rst)


class PlanTest(unittest.TestCase):
    def test_bench_configs_and_steps(self):
        plan = kvt.load_plan()
        names = bench.bench_configs(plan)
        self.assertIn("riscv-sstc", names)
        self.assertIn("riscv-nosstc", names)
        for n in names:
            self.assertTrue(plan["config"][n].get("icount"), n)
        argv = bench.bench_argv(3, 100, ["wfi", "busy"], "advance_max_ns=0")
        test = {"id": "kvt_bench", "argv": argv, "timeout": 600}
        steps = bench.bench_steps(test, kvm_module=True)
        self.assertEqual(steps[0][0], "host.insmod_kvm")
        self.assertEqual(steps[-1], ("bench.kvt_bench",
                                     "run 600 bench.kvt_bench /bin/kvt_bench -k "
                                     "/lib/modules/kvm_vtimer.ko -r 3 -o advance_max_ns=0 "
                                     "-n 100 -w wfi,busy"))
        with self.assertRaises(SystemExit):
            bench.bench_argv(1, 0, [], "a=1 b=2")
        self.assertNotIn("vtimer.insmod", [t for t, _ in steps])
        self.assertEqual([t for t, _ in bench.bench_steps(test, False) if t],
                         ["bench.kvt_bench"])


class MainTest(unittest.TestCase):
    """bench.main()'s exit status, with the builds and boots replaced."""

    def main(self, runs, problems=(), built=True, args=()):
        with tempfile.TemporaryDirectory() as d:
            sel = Path(d) / "sel"
            sel.mkdir()
            if built:
                (sel / "kvt_bench").write_bytes(b"x")
            rec = {"config": "riscv-sstc", "wall": 1.0, "console": "x", "results": []}
            with mock.patch.object(kvt, "prepare", return_value=(None, None, sel, {})), \
                    mock.patch.object(bench, "bench_boot",
                                      return_value=(runs, rec, list(problems))), \
                    mock.patch("sys.stdout"):
                return bench.main(["--out", str(Path(d) / "out"), *args, "riscv-sstc"])

    GOOD = [run("intree", "wfi", lateness=(10, 20)), run("vtimer", "wfi", lateness=(1, 2))]

    def test_kernel_source_version_in_the_outputs(self):
        with tempfile.TemporaryDirectory() as d, \
                mock.patch.object(kvt, "linux_source_version", return_value="6.12.118-1~deb12u1"), \
                mock.patch.object(kvt, "prepare", return_value=(None, None, Path(d), {})), \
                mock.patch.object(bench, "bench_boot", return_value=(
                    self.GOOD, {"config": "riscv-sstc", "wall": 1.0, "console": "x",
                                "results": []}, [])), \
                mock.patch("sys.stdout", new_callable=io.StringIO) as out:
            (Path(d) / "kvt_bench").write_bytes(b"x")
            self.assertEqual(bench.main(["--out", str(Path(d) / "out"), "riscv-sstc"]), 0)
            doc = json.loads((Path(d) / "out" / "bench.json").read_text())
        self.assertEqual(doc["meta"]["linux_source"], "6.12.118-1~deb12u1")
        self.assertEqual(out.getvalue().splitlines()[0],
                         "# host kernels: Debian linux-source-6.12 6.12.118-1~deb12u1")

    def test_exit_status(self):
        self.assertEqual(self.main(self.GOOD), 0)
        self.assertEqual(self.main(self.GOOD, built=False), bench.KSFT_SKIP)
        self.assertEqual(self.main([]), 1)
        self.assertEqual(self.main(self.GOOD, problems=["boot failed"]), 1)
        early = [self.GOOD[0], run("vtimer", "wfi", lateness=(-1, 2))]
        self.assertEqual(self.main(early), 1)
        intree_early = [run("intree", "wfi", lateness=(-1, 20)), self.GOOD[1]]
        self.assertEqual(self.main(intree_early), 0)
        slow = [self.GOOD[0], run("vtimer", "wfi", lateness=(10, 20))]
        self.assertEqual(self.main(slow), 0)
        self.assertEqual(self.main(slow, args=["--strict"]), 1)


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
            for f in ("Image", "init", "sel/kvt_bench"):
                (d / f).parent.mkdir(exist_ok=True)
                (d / f).write_bytes(b"x")
            test = {"id": "kvt_bench", "argv": ["kvt_bench", "-r", "1"], "timeout": 5}
            steps = bench.bench_steps(test, kvm_module=False)
            console = [console_line(run("intree", "wfi")), console_line(run("vtimer", "wfi")),
                       "    " + bench.DONE, "ok 1 bench.kvt_bench # time=3.0s", kvt.PLAN_DONE]
            plan = {"config": {"c": {"arch": "riscv", "qemu": [], "icount": "shift=3"}},
                    "test": [], "xfail": []}
            env = {"FAKE_CONSOLE": "\n".join(console) + "\n"}
            with mock.patch.dict(kvt.QEMU, {"riscv": (str(qemu), "ttyS0", [])}), \
                    mock.patch.dict(os.environ, env):
                runs, rec, problems = bench.bench_boot(
                    plan, "c", (d / "Image", d / "init", d / "sel", {}), test, False,
                    outdir=d / "out")
            self.assertEqual((d / "out" / "plan").read_text(),
                             "phase bench\nrun 5 bench.kvt_bench /bin/kvt_bench -r 1\n")
            self.assertIn("-icount", (d / "out" / "qemu.cmd").read_text())
            self.assertEqual(problems, [])
            self.assertEqual([r["config"] for r in runs], ["c", "c"])
            self.assertEqual([r["status"] for r in rec["results"]], ["pass", "pass"])

            # Without the end marker and with a failed step: problems.
            env["FAKE_CONSOLE"] = "not ok 1 bench.kvt_bench # time=3.0s exit=1\n"
            with mock.patch.dict(kvt.QEMU, {"riscv": (str(qemu), "ttyS0", [])}), \
                    mock.patch.dict(os.environ, env):
                runs, rec, problems = bench.bench_boot(
                    plan, "c", (d / "Image", d / "init", d / "sel", {}), test, False,
                    outdir=d / "out")
            self.assertEqual(runs, [])
            self.assertEqual(len(problems), 4)  # step, console, no done, no results


if __name__ == "__main__":
    unittest.main()
