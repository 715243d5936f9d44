# SPDX-License-Identifier: GPL-2.0
"""Tests of the real-guest tier's driver (scripts/realvm.py): its plan,
its steps and how the guest's output becomes figures."""

import fnmatch
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kvt  # noqa: E402
import realvm  # noqa: E402

# cyclictest -q -h output of two threads (rt-tests 2.6).
CYCLIC = """\
# Histogram
000010 000001\t000000
000011 000097\t000050
000012 000001\t000049
000040 000001\t000001
# Total: 000000100 000000100
# Min Latencies: 00010 00011
# Avg Latencies: 00011 00012
# Max Latencies: 00040 00052
# Histogram Overflows: 00000 00000
# Histogram Overflow at cycle number:
# Thread 0:
# Thread 1:
""".splitlines()


class CyclictestTest(unittest.TestCase):
    def test_percentiles_of_the_summed_histogram(self):
        s = realvm.cyclictest_stats(CYCLIC)
        self.assertEqual(s["loops"], 200)
        self.assertEqual(s["min"], 10)
        # 200 samples: the 100th is in bucket 11 (1 + 147 by then).
        self.assertEqual(s["p50"], 11)
        # The 198th: 1 + 147 + 50 = 198 in bucket 12.
        self.assertEqual(s["p99"], 12)
        self.assertEqual(s["p999"], 40)
        # The max is cyclictest's own, not the bucket.
        self.assertEqual(s["max"], 52)
        self.assertEqual(s["overflows"], 0)

    def test_overflowing_tail_takes_the_max(self):
        lines = ["# Histogram", "000005 000009", "# Total: 000000010",
                 "# Min Latencies: 00005", "# Max Latencies: 150000",
                 "# Histogram Overflows: 00001"]
        s = realvm.cyclictest_stats(lines)
        self.assertEqual(s["p50"], 5)
        self.assertEqual(s["p999"], 150000)

    def test_no_histogram(self):
        self.assertIsNone(realvm.cyclictest_stats(["# clock_drift_ms: 1.0"]))


class StepsTest(unittest.TestCase):
    def test_aba_phases(self):
        steps = [{"id": "boot", "argv": ["boot", "1"], "timeout": 60},
                 {"id": "cyc", "argv": ["cyclic", "2", "500"], "timeout": 90}]
        out = realvm.steps_of(steps, kvm_module=False)
        ids = [tid for tid, _ in out if tid]
        self.assertEqual(ids, ["intree.boot", "intree.cyc", "vtimer.insmod", "vtimer.boot",
                               "vtimer.cyc", "vtimer.rmmod", "intree2.boot", "intree2.cyc"])
        self.assertIn(("vtimer.cyc", "run 90 vtimer.cyc /bin/kvt_realvm cyclic 2 90 500"), out)
        self.assertEqual(realvm.phase_backend("intree2"), "intree")
        self.assertEqual(realvm.phase_backend("vtimer"), "vtimer")

    def test_live_and_huge_steps_pass_their_options_first(self):
        steps = [{"id": "sr", "argv": ["saverestore", "1", "500"], "timeout": 60,
                  "live": True, "huge": True},
                 {"id": "l", "argv": ["saverestore", "1"], "timeout": 60, "live": True}]
        out = dict(realvm.steps_of(steps, kvm_module=False))
        self.assertEqual(out["intree.sr"],
                         "run 60 intree.sr /bin/kvt_realvm -l -H saverestore 1 60 500")
        self.assertEqual(out["intree.l"], "run 60 intree.l /bin/kvt_realvm -l saverestore 1 60")

    def test_trace_step_passes_its_functions(self):
        steps = [{"id": "ls", "argv": ["saverestore", "1"], "timeout": 60, "live": True,
                  "trace": ["make_xfence_request", "gstage_op_pte"]}]
        out = dict(realvm.steps_of(steps, kvm_module=False))
        self.assertEqual(out["intree.ls"], "run 60 intree.ls /bin/kvt_realvm -l "
                         "-T make_xfence_request,gstage_op_pte saverestore 1 60")

    def test_trace_figures(self):
        with tempfile.TemporaryDirectory() as d:
            (Path(d) / "intree.ls.log").write_text(
                "# trace: make_xfence_request 29983 calls 101550943 us\n"
                "# trace: gstage_op_pte 29389 calls 101936061 us\n"
                "# wall_s: 189.1\n")
            figs = realvm.figures(d, "intree.ls")
        self.assertEqual(figs["trace"], {
            "make_xfence_request": {"calls": 29983, "us": 101550943},
            "gstage_op_pte": {"calls": 29389, "us": 101936061}})
        self.assertEqual(figs["wall_s"], "189.1")

    def test_trace_plan_is_well_formed(self):
        with open(realvm.ROOT / "selftests" / "realvm-trace.toml", "rb") as f:
            rv = realvm.tomllib.load(f)
        self.assertTrue(all(s.get("trace") for s in rv["step"]))
        self.assertEqual(set(rv["config"]) - set(kvt.load_plan()["config"]), set())

    def test_short_run_is_our_timer_only(self):
        steps = [{"id": "sr", "argv": ["saverestore", "1"], "timeout": 60}]
        ids = [tid for tid, _ in realvm.steps_of(steps, False, ("vtimer",)) if tid]
        self.assertEqual(ids, ["vtimer.insmod", "vtimer.sr", "vtimer.rmmod"])

    def test_short_step(self):
        steps = [{"id": "boot", "argv": ["boot", "1"], "timeout": 600},
                 {"id": "sr", "argv": ["saverestore", "1", "8000"], "timeout": 900}]
        out = realvm.short_steps(steps, {"step": "sr", "loops": 300, "timeout": 400})
        self.assertEqual(out, [{"id": "sr", "argv": ["saverestore", "1", "300"],
                                "timeout": 400}])
        with self.assertRaises(SystemExit):
            realvm.short_steps(steps, {"step": "nope"})

    def test_shipped_plan_is_well_formed(self):
        plan, steps, short = realvm.load()
        ids = {s["id"] for s in steps}
        self.assertEqual(len(ids), len(steps))
        self.assertIn(short["step"], ids)
        for name, cfg in plan["config"].items():
            self.assertIn(cfg["arch"], kvt.QEMU)
            self.assertTrue(cfg["qemu"], name)
        for x in plan["xfail"]:
            self.assertTrue(fnmatch.filter(plan["config"], x["config"]), x["config"])
            self.assertIn(x["backend"], (*realvm.PHASES, "*"))
            self.assertIn(x["test"], ids)
            self.assertTrue(x["reason"])

    def test_intree_xfail_covers_the_second_intree_phase(self):
        plan = {"config": {"c": {}}, "xfail": [
            {"config": "c", "backend": "intree", "test": "boot", "reason": "r"}]}
        console = ["not ok 1 intree2.boot # time=1.0s exit=1",
                   "not ok 2 vtimer.boot # time=1.0s exit=1",
                   kvt.PLAN_DONE]
        res = kvt.classify(plan, "c", ["intree2.boot", "vtimer.boot"], console, 1.0, "",
                           realvm.phase_backend)
        self.assertEqual([r.status for r in res], ["xfail", "fail", "pass"])


class CountsTest(unittest.TestCase):
    def test_results_log_counts(self):
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "results.txt"
            p.write_text("# host kernels: Debian linux-source-6.12 6.12.118-1~deb12u1\n"
                         "PASS  c/intree.sr (1.0s)\nFAIL  c/vtimer.sr (2.0s)  # why\n"
                         "XFAIL c/intree2.sr (1.0s)  # r\nnoise\n")
            c = kvt.results_counts(p)
            self.assertEqual((c["pass"], c["fail"], c["xfail"]), (1, 1, 1))
            self.assertEqual(kvt.results_counts(Path(d) / "missing")["fail"], 1)


class RunnerTest(unittest.TestCase):
    def test_runner_and_guest_script_build(self):
        """kvt_realvm compiles warning-free for this machine too (its logic
        is arch-neutral), and the guest's /init is valid sh."""
        with tempfile.TemporaryDirectory() as d:
            src = kvt.ROOT / "selftests" / "realvm" / "kvt_realvm.c"
            res = subprocess.run(["gcc", "-fsyntax-only", "-Wall", "-Wextra", "-Werror",
                                  "-D__riscv", str(src)], capture_output=True, text=True,
                                 cwd=d)
            self.assertEqual(res.returncode, 0, res.stderr)
        sh = kvt.ROOT / "selftests" / "realvm" / "guest-init.sh"
        res = subprocess.run(["sh", "-n", str(sh)], capture_output=True, text=True)
        self.assertEqual(res.returncode, 0, res.stderr)

    def test_symlink_in_cpio(self):
        c = kvt.Cpio()
        c.dir("usr")
        c.symlink("lib", "usr/lib")
        with tempfile.NamedTemporaryFile() as f:
            f.write(c.finish())
            f.flush()
            out = subprocess.run(["cpio", "-itv", "-F", f.name], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        self.assertTrue(out[1].startswith("l") and out[1].endswith("lib -> usr/lib"))


if __name__ == "__main__":
    unittest.main()
