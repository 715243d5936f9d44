# SPDX-License-Identifier: GPL-2.0
"""Tests of the test bed itself: /init's KTAP output, the initramfs writer
and how a console becomes results.  Run by `make check` on the host:

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import fnmatch
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest
from pathlib import Path
from unittest import mock

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kvt  # noqa: E402

PLAN = {
    "config": {"c": {"arch": "riscv", "qemu": []}},
    "test": [{"id": "t1", "argv": ["t1"], "timeout": 5},
             {"id": "t2", "argv": ["t2", "-x"], "timeout": 5, "arch": "arm64"}],
    "xfail": [{"config": "c", "backend": "intree", "test": "t1", "reason": "known"}],
}


class InitTest(unittest.TestCase):
    """The emulated host's /init, built for this machine and run as an
    ordinary process (it then mounts nothing and does not power off)."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = Path(tempfile.mkdtemp())
        cls.init = cls.tmp / "init"
        subprocess.run(["gcc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(cls.init),
                        str(kvt.ROOT / "selftests/host/init.c")], check=True)
        skip = cls.tmp / "skip.sh"
        skip.write_text("#!/bin/sh\necho because\nexit 4\n")
        skip.chmod(0o755)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp)

    def run_plan(self, text):
        plan = self.tmp / "plan"
        plan.write_text(text)
        res = subprocess.run([str(self.init), str(plan)], capture_output=True,
                             text=True, timeout=30)
        self.assertEqual(res.returncode, 0)
        return res.stdout.splitlines()

    def test_results_and_output(self):
        lines = self.run_plan(
            "phase p\n"
            "run 5 a.ok /bin/echo hi there\n"
            "run 5 a.fail /bin/false\n"
            f"run 5 a.skip {self.tmp}/skip.sh\n"
            "run 1 a.hang /bin/sleep 30\n"
            "run 5 a.noexec /nonexistent\n"
            "insmod 5 a.insmod /nonexistent.ko\n"
            "bogus line\n")
        self.assertEqual(lines[:3], ["KTAP version 1", "1..6", "# phase p"])
        res = {m.group(3): m for m in map(kvt.RESULT_RE.match, lines) if m}
        self.assertEqual(list(res), ["a.ok", "a.fail", "a.skip", "a.hang", "a.noexec",
                                     "a.insmod"])
        self.assertEqual([res[k].group(2) for k in res], ["1", "2", "3", "4", "5", "6"])
        self.assertEqual(res["a.ok"].group(1), "ok")
        self.assertIn("    hi there", lines)
        self.assertEqual((res["a.fail"].group(1), res["a.fail"].group(5)),
                         ("not ok", "exit=1"))
        self.assertEqual((res["a.skip"].group(1), res["a.skip"].group(5)), ("ok", "SKIP"))
        self.assertEqual(res["a.hang"].group(1), "not ok")
        self.assertEqual(res["a.hang"].group(5), "TIMEOUT 1s")
        self.assertLess(float(res["a.hang"].group(4)), 5)
        self.assertEqual(res["a.noexec"].group(5), "exit=127")
        self.assertTrue(res["a.insmod"].group(5).startswith("open /nonexistent.ko"))
        self.assertIn("# init: bad plan line: bogus", lines)
        self.assertEqual(lines[-1], kvt.PLAN_DONE)

    def test_write_verb(self):
        target = self.tmp / "written"
        target.write_text("")
        lines = self.run_plan(f"write {target} scan\ncat {target}\n"
                              f"write {self.tmp}/no/such x\n")
        self.assertEqual(target.read_text(), "scan")
        self.assertIn("    scan", lines)
        self.assertTrue(any(l.startswith(f"# init: write x to {self.tmp}/no/such: ")
                            for l in lines), lines)
        self.assertEqual(lines[1], "1..0")

    def test_timeout_kills_the_process_group(self):
        marker = self.tmp / "survivor"
        script = self.tmp / "fork.sh"
        script.write_text(f"#!/bin/sh\n(sleep 3; touch {marker}) &\nsleep 30\n")
        script.chmod(0o755)
        self.run_plan(f"run 1 a.fork {script}\n")
        subprocess.run(["sleep", "3.5"])
        self.assertFalse(marker.exists(), "a child of a timed-out step survived")

    def test_timeout_lists_the_steps_tasks(self):
        # What a step stuck in the kernel would leave to see: its tasks'
        # states and wait channels, before the kill.
        script = self.tmp / "two.sh"
        script.write_text("#!/bin/sh\nsleep 30 &\nsleep 30\n")
        script.chmod(0o755)
        # 3 s: time to exec the script on a loaded machine.
        lines = self.run_plan(f"run 3 a.two {script}\n")
        head = [l for l in lines if l.startswith("# init: step ")]
        self.assertEqual(len(head), 1, lines)
        self.assertIn("past its deadline", head[0])
        tasks = [l for l in lines if l.startswith("# init:   ")]
        self.assertEqual(sum("(two.sh) S wchan=" in l for l in tasks), 1, tasks)
        self.assertEqual(sum("(sleep) S wchan=" in l for l in tasks), 2, tasks)
        res = [m for m in map(kvt.RESULT_RE.match, lines) if m]
        self.assertEqual(res[0].group(5), "TIMEOUT 3s")


class CpioTest(unittest.TestCase):
    def test_archive_lists_with_cpio(self):
        c = kvt.Cpio()
        c.dir("bin")
        c.chardev("dev/console", 5, 1)
        c.file("bin/x", b"abc", 0o755)
        with tempfile.NamedTemporaryFile() as f:
            f.write(c.finish())
            f.flush()
            out = subprocess.run(["cpio", "-itv", "-F", f.name], capture_output=True,
                                 text=True, check=True).stdout.splitlines()
        self.assertEqual(len(out), 3)
        self.assertTrue(out[0].startswith("d") and out[0].endswith(" bin"))
        self.assertTrue(out[1].startswith("c") and "5," in out[1])
        self.assertTrue(out[2].startswith("-rwxr-xr-x") and out[2].endswith(" bin/x"))


class PlanTest(unittest.TestCase):
    def test_steps_run_each_backend(self):
        tests = kvt.tests_for(PLAN, "riscv")
        self.assertEqual([t["id"] for t in tests], ["t1"])
        steps = kvt.plan_steps(tests, kvm_module=True)
        self.assertEqual([tid for tid, _ in steps if tid],
                         ["host.insmod_kvm", "intree.t1", "vtimer.insmod", "vtimer.t1",
                          "vtimer.rmmod"])
        self.assertIn((None, "phase vtimer"), steps)
        self.assertIn(("intree.t1", "run 5 intree.t1 /bin/t1"), steps)

    def test_config_test_selection(self):
        plan = {"config": {"all": {"arch": "arm64"},
                           "few": {"arch": "arm64", "tests": ["a*"]},
                           "rest": {"arch": "arm64", "skip_tests": ["a*"]},
                           "none": {"arch": "arm64", "tests": ["x"]}},
                "test": [{"id": "a1"}, {"id": "a2"}, {"id": "b"},
                         {"id": "r", "arch": "riscv"}]}
        ids = lambda n: [t["id"] for t in kvt.tests_of(plan, n)]  # noqa: E731
        self.assertEqual(ids("all"), ["a1", "a2", "b"])
        self.assertEqual(ids("few"), ["a1", "a2"])
        self.assertEqual(ids("rest"), ["b"])
        with self.assertRaises(SystemExit):
            kvt.tests_of(plan, "none")

    def test_shipped_plan_is_well_formed(self):
        plan = kvt.load_plan()
        ids = {t["id"] for t in plan["test"]}
        for x in plan.get("xfail", []):
            # A config name or a glob (riscv-sstc* also covers its variants).
            self.assertTrue(fnmatch.filter(plan["config"], x["config"]), x["config"])
            self.assertIn(x["backend"], (*kvt.BACKENDS, "*"))
            # A test id or a glob of some.
            self.assertTrue(fnmatch.filter(ids, x["test"]), x["test"])
            self.assertTrue(x["reason"])
        for name, cfg in plan["config"].items():
            self.assertIn(cfg["arch"], kvt.QEMU)
            self.assertTrue(kvt.tests_of(plan, name), name)
            for b in cfg.get("backends", kvt.BACKENDS):
                self.assertIn(b, kvt.BACKENDS)


class QemuBinaryTest(unittest.TestCase):
    """kvt.qemu_binary(): the system's QEMU unless a config asks for ours
    (`qemu_build`, scripts/build-qemu.sh), built once per run."""

    def setUp(self):
        self.built = mock.patch.dict(kvt._qemu_built, clear=True)
        self.built.start()
        self.addCleanup(self.built.stop)

    def test_system_qemu_by_default(self):
        with mock.patch.object(kvt, "sh") as sh:
            self.assertEqual(kvt.qemu_binary({"arch": "arm64"}), "qemu-system-aarch64")
            self.assertEqual(kvt.qemu_binary({"arch": "riscv"}), "qemu-system-riscv64")
            sh.assert_not_called()

    def test_built_once_and_claimed(self):
        with tempfile.TemporaryDirectory() as d, \
                mock.patch.object(kvt, "sh", return_value=f"{d}/qemu-system-aarch64") as sh, \
                mock.patch.object(kvt, "claim") as claim:
            cfg = {"arch": "arm64", "qemu_build": True}
            self.assertEqual(kvt.qemu_binary(cfg), f"{d}/qemu-system-aarch64")
            self.assertEqual(kvt.qemu_binary(cfg), f"{d}/qemu-system-aarch64")
            sh.assert_called_once_with(kvt.SCRIPTS / "build-qemu.sh")
            claim.assert_called_once_with(Path(d))

    def test_refused_off_arm64_and_failure_not_kept(self):
        with self.assertRaises(SystemExit):
            kvt.qemu_binary({"arch": "riscv", "qemu_build": True})
        with mock.patch.object(kvt, "sh", side_effect=SystemExit("kvt: build failed")):
            with self.assertRaises(SystemExit):
                kvt.qemu_binary({"arch": "arm64", "qemu_build": True})
        self.assertEqual(kvt._qemu_built, {})


class ClassifyTest(unittest.TestCase):
    EXPECTED = ["intree.t1", "intree.t2", "vtimer.t1", "vtimer.t2", "vtimer.t3"]

    def classify(self, console):
        res = kvt.classify(PLAN, "c", self.EXPECTED, console, 1.0, "QEMU exited")
        return {r.test: r for r in res}

    def test_statuses(self):
        console = [
            "ok 1 intree.t1 # time=1.0s",  # xfail-listed, passed
            "    ==== Test Assertion Failure ====",
            "      arch_timer.c:42: false",
            "not ok 2 intree.t2 # time=2.0s exit=254",
            "not ok 3 vtimer.t1 # time=0.5s TIMEOUT 5s",
            "    1..0 # SKIP - no Sstc",
            "ok 4 vtimer.t2 # time=0.1s SKIP",
            "[    1.0] ok 5 vtimer.t3 # time=0.1s",  # not at line start: not ours
            kvt.PLAN_DONE,
        ]
        r = self.classify(console)
        self.assertEqual(r["intree.t1"].status, "xpass")
        self.assertEqual(r["intree.t2"].status, "fail")
        self.assertIn("arch_timer.c:42", r["intree.t2"].note)
        self.assertEqual(r["vtimer.t1"].status, "fail")
        self.assertEqual(r["vtimer.t2"].status, "skip")
        self.assertIn("no Sstc", r["vtimer.t2"].note)
        self.assertEqual(r["vtimer.t3"].status, "fail")
        self.assertIn("not run", r["vtimer.t3"].note)
        self.assertEqual(r["console"].status, "pass")

    def test_expected_failure(self):
        r = self.classify(["not ok 1 intree.t1 # time=1.0s exit=1", kvt.PLAN_DONE])
        self.assertEqual(r["intree.t1"].status, "xfail")
        self.assertIn("known", r["intree.t1"].note)

    def test_splat_fails_the_boot(self):
        for splat in ("[ 2.0] WARNING: CPU: 1 PID: 7 at x.c:1 f+0x0", "[ 2.0] Call Trace:",
                      "[ 2.0] BUG: sleeping function called from invalid context",
                      "[ 2.0] Unable to handle kernel paging request: Oops [#1]"):
            r = self.classify(["ok 1 intree.t1 # time=1.0s", splat, kvt.PLAN_DONE])
            self.assertEqual(r["console"].status, "fail", splat)

    def test_sysrq_dump_of_a_hung_step_is_not_a_splat(self):
        # /init dumps the CPUs of a step past its deadline: its call traces
        # are not reports, up to the next phase; a BUG still is one.
        dump = ["# phase intree", "# init: step 90 past its deadline; its tasks ...",
                "[ 9.0] sysrq: Show backtrace of all active CPUs",
                "[ 9.1] NMI backtrace for cpu 1", "[ 9.1] Call Trace:",
                "[ 9.1] [<ffffffff80001000>] handle_exception+0x0/0x10",
                "not ok 1 intree.t1 # time=1.0s TIMEOUT 1s"]
        r = self.classify([*dump, kvt.PLAN_DONE])
        self.assertEqual(r["console"].status, "pass", r["console"].note)
        r = self.classify([*dump, "[ 9.2] BUG: soft lockup - CPU#0 stuck for 22s!",
                           kvt.PLAN_DONE])
        self.assertEqual(r["console"].status, "fail")
        r = self.classify([*dump, "# phase vtimer", "[ 9.3] Call Trace:", kvt.PLAN_DONE])
        self.assertEqual(r["console"].status, "fail")

    def test_test_output_is_not_a_splat(self):
        r = self.classify(["    WARNING: printed by a test", kvt.PLAN_DONE])
        self.assertEqual(r["console"].status, "pass")

    def test_unfinished_boot_fails(self):
        r = self.classify(["ok 1 intree.t1 # time=1.0s"])
        self.assertEqual(r["console"].status, "fail")


RT_PLAN = {
    "config": {"c": {"arch": "riscv", "qemu": []},
               "c-rt": {"arch": "riscv", "qemu": [], "variant": "rt"},
               "c-debug": {"arch": "riscv", "qemu": [], "variant": "debug"}},
    "test": PLAN["test"],
    "known_report": [{"id": "reset", "variants": ["rt"], "backends": ["intree", "vtimer"],
                      "header": "BUG: sleeping function called from invalid context",
                      "match": "reset_cntx_lock.*kvm_riscv_reset_vcpu",
                      "exclude": "kvm_vtimer|vcpu_timer", "reason": "not timer code"}],
}

RT_SPLAT = [
    "[   10.0] BUG: sleeping function called from invalid context at kernel/locking/spinlock_rt.c:48",
    "[   10.0] in_atomic(): 1, irqs_disabled(): 0, non_block: 0, pid: 90, name: t1",
    "    a test's own line in between",
    "[   10.0]  #0: ff60 (&vcpu->arch.reset_cntx_lock){+.+.}-{2:2}, at: kvm_riscv_reset_vcpu+0xc6",
    "[   10.0] Preemption disabled at:",
    "[   10.0] [<ffffffff0001>] kvm_riscv_reset_vcpu+0x2a/0x3c0 [kvm]",
    "[   10.0] Call Trace:",
    "[   10.0] [<ffffffff0002>] dump_backtrace+0x1c/0x24",
    "[   10.0] [<ffffffff0003>] kvm_riscv_reset_vcpu+0x80/0x3c0 [kvm]",
]


class MendConsoleTest(unittest.TestCase):
    def test_result_line_cut_by_a_kernel_message(self):
        console = ["ok 26 vtimer.kvt_stress # time=7[ 1488.147365] kvm_vtimer: unloaded",
                   "54.0s", "[ 1488.2] next", "ok 27 vtimer.rmmod # time=0.9s",
                   "    out[    1.000000] x", "[    1.100000] y", "put", "end"]
        self.assertEqual(kvt.mend_console(console), [
            "[ 1488.147365] kvm_vtimer: unloaded", "ok 26 vtimer.kvt_stress # time=754.0s",
            "[ 1488.2] next", "ok 27 vtimer.rmmod # time=0.9s",
            "[    1.000000] x", "[    1.100000] y", "    output", "end"])
        # Whole lines stay as they are.
        self.assertEqual(kvt.mend_console(["[ 1.000000] a [ 2.000000] b", "x"]),
                         ["[ 1.000000] a [ 2.000000] b", "x"])


class KnownReportTest(unittest.TestCase):
    """Kernel reports the plan knows (the RT kvm_riscv_reset_vcpu one) are
    xfail results with their evidence; any other still fails the boot."""

    def classify(self, name, console):
        res = kvt.classify(RT_PLAN, name, [], console + [kvt.PLAN_DONE], 1.0, "x")
        return {r.test: r for r in res}

    def test_known_report_is_xfail_per_phase(self):
        console = ["# phase intree", *RT_SPLAT, *RT_SPLAT, "# phase vtimer", *RT_SPLAT]
        r = self.classify("c-rt", console)
        self.assertEqual(r["console"].status, "pass")
        self.assertEqual(r["intree.report.reset"].status, "xfail")
        self.assertIn("2 reports", r["intree.report.reset"].note)
        self.assertIn("reset_cntx_lock", r["intree.report.reset"].note)
        self.assertIn("not timer code", r["intree.report.reset"].note)
        self.assertEqual(r["vtimer.report.reset"].status, "xfail")
        self.assertIn("1 reports", r["vtimer.report.reset"].note)

    def test_known_report_elsewhere_fails(self):
        # Another variant, or before the first phase: not the known report.
        for name, console in (("c", ["# phase intree", *RT_SPLAT]),
                              ("c-debug", ["# phase vtimer", *RT_SPLAT]),
                              ("c-rt", RT_SPLAT)):
            r = self.classify(name, console)
            self.assertEqual(r["console"].status, "fail", (name, console[0]))
            self.assertIn("sleeping function", r["console"].note)

    def test_other_report_beside_a_known_one_fails(self):
        other = ["[   11.0] BUG: scheduling while atomic: t1/90/0x00000002",
                 "[   11.0] Call Trace:",
                 "[   11.0] [<ffffffff0004>] kvm_riscv_reset_vcpu+0x80/0x3c0 [kvm]"]
        r = self.classify("c-rt", ["# phase vtimer", *RT_SPLAT, *other])
        self.assertEqual(r["console"].status, "fail")
        self.assertIn("scheduling while atomic", r["console"].note)
        self.assertEqual(r["vtimer.report.reset"].status, "xfail")

    def test_same_header_other_trace_fails(self):
        splat = [l.replace("kvm_riscv_reset_vcpu", "kvt_vcpu_reset") for l in RT_SPLAT]
        r = self.classify("c-rt", ["# phase vtimer", *splat])
        self.assertEqual(r["console"].status, "fail")
        # In kvm_riscv_reset_vcpu, but the timer's code sleeps: not known.
        ours = RT_SPLAT + ["[   10.0] [<ffffffff0005>] hrtimer_cancel+0x6c/0x94",
                           "[   10.0] [<ffffffff0006>] kvt_vcpu_reset+0x10/0x40 [kvm_vtimer]"]
        r = self.classify("c-rt", ["# phase vtimer", *ours])
        self.assertEqual(r["console"].status, "fail")

    def test_report_ends_with_its_call_trace(self):
        # A module's message after the trace is not part of the report.
        after = ["[   10.1] kvm_vtimer: version 0.2.0 unloaded"]
        r = self.classify("c-rt", ["# phase vtimer", *RT_SPLAT, *after, *RT_SPLAT])
        self.assertEqual(r["console"].status, "pass")
        self.assertIn("2 reports", r["vtimer.report.reset"].note)
        blocks = kvt.kernel_reports(RT_SPLAT + after)
        self.assertEqual(len(blocks), 1)
        self.assertNotIn(after[0], blocks[0][1])

    def test_debug_reports_are_splats(self):
        for line in ("[ 5.0] UBSAN: shift-out-of-bounds in rust/kvm_vtimer.rs:10:5",
                     "[ 5.0] BUG: KASAN: slab-use-after-free in hrtimer_start_range_ns",
                     "[ 5.0] WARNING: possible circular locking dependency detected",
                     "[ 5.0] kmemleak: 2 new suspected memory leaks (see /sys/kernel/debug/kmemleak)"):
            r = self.classify("c-debug", ["# phase vtimer", line])
            self.assertEqual(r["console"].status, "fail", line)

    def test_shipped_known_reports_are_well_formed(self):
        plan = kvt.load_plan()
        variants = {c.get("variant", "") for c in plan["config"].values()}
        for k in plan.get("known_report", []):
            self.assertTrue(k["id"] and k["reason"])
            re.compile(k["header"])
            re.compile(k["match"])
            for v in k["variants"]:
                self.assertIn(v, variants | {"*"})
            for b in k["backends"]:
                self.assertIn(b, (*kvt.BACKENDS, "host", "*"))


class VariantTest(unittest.TestCase):
    """Kernel variants: which configs a make target boots, the kernels
    they need, the kmemleak steps, and the cache keys of scripts/env.sh."""

    def test_configs_and_kernels(self):
        self.assertEqual(kvt.configs_of_variant(RT_PLAN), ["c"])
        self.assertEqual(kvt.configs_of_variant(RT_PLAN, "rt"), ["c-rt"])
        self.assertEqual(kvt.kernel_of(RT_PLAN, "c"), ("riscv", None))
        self.assertEqual(kvt.kernel_of(RT_PLAN, "c-debug"), ("riscv", "debug"))
        plan = kvt.load_plan()
        for n, c in plan["config"].items():
            if c.get("variant"):
                self.assertTrue((kvt.ROOT / "configs" / f"{c['variant']}.config").exists(), n)

    def test_kmemleak_steps(self):
        steps = kvt.plan_steps(kvt.tests_for(PLAN, "riscv"), kvm_module=True, kmemleak=True)
        ids = [tid for tid, _ in steps if tid]
        self.assertEqual(ids, ["host.insmod_kvm", "intree.t1", "intree.kmemleak",
                               "vtimer.insmod", "vtimer.t1", "vtimer.rmmod",
                               "vtimer.kmemleak"])
        lines = [line for _, line in steps]
        self.assertLess(lines.index("write /sys/kernel/debug/kmemleak clear"),
                        lines.index("run 5 intree.t1 /bin/t1"))
        self.assertNotIn("intree.kmemleak", [t for t, _ in kvt.plan_steps([], True)])
        steps = kvt.plan_steps(kvt.tests_for(PLAN, "riscv"), True, backends=["vtimer"])
        self.assertEqual([tid for tid, _ in steps if tid],
                         ["host.insmod_kvm", "vtimer.insmod", "vtimer.t1", "vtimer.rmmod"])

    def env(self, script):
        return subprocess.run(["bash", "-c", f'set -euo pipefail; . "{kvt.ROOT}/scripts/env.sh"; '
                               + script], capture_output=True, text=True, check=True).stdout

    def test_keys_and_fragments(self):
        plain, debug, rt = self.env("kvt_kernel_dir riscv; kvt_kernel_dir riscv debug;"
                                    " kvt_kernel_dir riscv rt").split()
        self.assertRegex(plain, r"/kernel-riscv-[0-9a-f]{16}$")
        self.assertRegex(debug, r"/kernel-riscv-debug-[0-9a-f]{16}$")
        self.assertRegex(rt, r"/kernel-riscv-rt-[0-9a-f]{16}$")
        # The plain fragment is configs/riscv.config as it is.
        base = (kvt.ROOT / "configs/riscv.config").read_text()
        self.assertEqual(self.env("kvt_fragment riscv"), base)
        # A variant's symbol replaces the base's line for it.
        frag = self.env("kvt_fragment riscv rt").splitlines()
        self.assertNotIn("CONFIG_PREEMPT_VOLUNTARY=y", frag)
        self.assertNotIn("CONFIG_TRANSPARENT_HUGEPAGE=y", frag)
        self.assertIn("CONFIG_PREEMPT_RT=y", frag)
        self.assertIn("CONFIG_KVM=m", frag)
        frag = self.env("kvt_fragment riscv debug").splitlines()
        self.assertIn("CONFIG_PREEMPT_VOLUNTARY=y", frag)
        for opt in ("KASAN", "PROVE_LOCKING", "DEBUG_ATOMIC_SLEEP", "DEBUG_OBJECTS_TIMERS",
                    "DEBUG_KMEMLEAK", "UBSAN"):
            self.assertIn(f"CONFIG_{opt}=y", frag)

    def test_prune_keeps_two_per_variant(self):
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d)
            names = ["kernel-riscv-a1", "kernel-riscv-a2", "kernel-riscv-a3",
                     "kernel-riscv-debug-b1", "kernel-riscv-debug-b2", "kernel-riscv-rt-c1"]
            for i, n in enumerate(names):
                (cache / n).mkdir()
                (cache / n / ".kvt-ready").touch()
                os.utime(cache / n, (1000 + i, 1000 + i))
            subprocess.run(["bash", "-c", f'set -euo pipefail; export KVT_CACHE="{cache}"; '
                            f'. "{kvt.ROOT}/scripts/env.sh"; kvt_prune'], check=True)
            self.assertEqual(sorted(p.name for p in cache.iterdir()), names[1:])


class RustLibSrcTest(unittest.TestCase):
    """scripts/env.sh's kvt_rust_lib_src: the library source of the rustc
    the kernels build with, not the newest one there is."""

    def lib_src(self, version_line, dirs):
        with tempfile.TemporaryDirectory() as d:
            d = Path(d)
            rustc = d / "rustc"
            rustc.write_text(f"#!/bin/sh\necho '{version_line}'\n")
            rustc.chmod(0o755)
            src = d / "src"
            for v in dirs:
                (src / f"rustc-{v}" / "library").mkdir(parents=True)
            res = subprocess.run(
                ["bash", "-c", f'set -euo pipefail; . "{kvt.ROOT}/scripts/env.sh"; '
                 f'kvt_rust_lib_src "{rustc}" "{src}"'], capture_output=True, text=True)
            return res.returncode, res.stdout.replace(str(src), "SRC").strip(), res.stderr

    def test_the_matching_version(self):
        rc, out, _ = self.lib_src("rustc 1.95.0 (abc 2026-03-21) (built from a source tarball)",
                                  ["1.94.1", "1.95.0", "1.96.0"])
        self.assertEqual((rc, out), (0, "SRC/rustc-1.95.0/library"))

    def test_no_match_fails_and_says_why(self):
        rc, out, err = self.lib_src("rustc 1.97.0 (abc 2026-07-01)", ["1.95.0", "1.96.0"])
        self.assertNotEqual(rc, 0)
        self.assertEqual(out, "")
        self.assertIn("rustc-1.97.0/library", err)
        self.assertIn("rustc-1.95.0 rustc-1.96.0", err)
        self.assertIn("rust-web-src", err)
        rc, _, err = self.lib_src("not a rustc", ["1.96.0"])
        self.assertNotEqual(rc, 0)
        self.assertIn("no version", err)


# A QEMU that prints "qemu: first", waits for the file FAKE_GO (at most
# 30 s), prints FAKE_FLOOD bytes, writes FAKE_CONSOLE as its serial console,
# prints "qemu: last" and exits.
FAKE_QEMU = r"""#!/usr/bin/env python3
import os, socket, sys, threading, time
serial = next(a[5:] for a in sys.argv if a.startswith("file:"))
mon = next(a[5:].split(",")[0] for a in sys.argv if a.startswith("unix:"))

def monitor():
    # A monitor that answers `info registers -a` for two RISC-V CPUs.
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(mon)
    srv.listen(1)
    c, _ = srv.accept()
    if b"info registers -a" in c.recv(100):
        c.sendall(b"CPU#0\n V      =   0\n pc       ffffffff80001010\n"
                  b"CPU#1\n V      =   1\n pc       0000000000400000\n")
    time.sleep(5)

threading.Thread(target=monitor, daemon=True).start()
open(serial, "w").write("[    1.0] booting\n")
print("qemu: first", flush=True)
end = time.monotonic() + 30
while not os.path.exists(os.environ["FAKE_GO"]) and time.monotonic() < end:
    time.sleep(0.05)
flood = int(os.environ.get("FAKE_FLOOD", "0"))
for _ in range(flood // 100):
    sys.stdout.write("x" * 99 + "\n")
open(serial, "w").write(os.environ["FAKE_CONSOLE"])
print("qemu: last", flush=True)
"""


class BootOutputTest(unittest.TestCase):
    """kvt.boot() on a fake QEMU: its own output reaches qemu.out while it
    runs, a lot of it does not stop it, and the wall-clock limit holds."""

    PLAN = {"config": {"c": {"arch": "riscv", "qemu": []}}, "test": [], "xfail": []}
    STEPS = [(None, "phase p"), ("p.t1", "run 5 p.t1 /bin/t1"),
             ("p.t2", "run 5 p.t2 /bin/t2")]

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        qemu = self.tmp / "qemu"
        qemu.write_text(FAKE_QEMU)
        qemu.chmod(0o755)
        self.go = self.tmp / "go"
        self.out = self.tmp / "out"
        self.env = {"FAKE_GO": str(self.go),
                    "FAKE_CONSOLE": "ok 1 p.t1 # time=1.0s\n" + kvt.PLAN_DONE + "\n"}
        for patch in (mock.patch.dict(kvt.QEMU, {"riscv": (str(qemu), "ttyS0", [])}),
                      mock.patch.dict(os.environ, self.env)):
            patch.start()
            self.addCleanup(patch.stop)

    def boot(self):
        return kvt.boot(self.PLAN, "c", (self.tmp / "Image", None, None, {}), [],
                        steps=self.STEPS, outdir=self.out,
                        initramfs=lambda path, text: path.write_bytes(b""))

    def results(self, b):
        return {r.test: r for r in b.results}

    def test_lines_arrive_before_qemu_exits(self):
        done = []
        t = threading.Thread(target=lambda: done.append(self.boot()))
        t.start()
        try:
            qemu_out = self.out / "qemu.out"
            end = time.monotonic() + 20
            while time.monotonic() < end and not (
                    qemu_out.exists() and "qemu: first" in qemu_out.read_text()):
                time.sleep(0.05)
            # QEMU still waits for FAKE_GO, and its first line is there.
            self.assertTrue(t.is_alive())
            self.assertTrue(qemu_out.exists(), "no qemu.out while QEMU runs")
            self.assertEqual(qemu_out.read_text(), "qemu: first\n")
        finally:
            self.go.touch()
            t.join(60)
        self.assertFalse(t.is_alive())
        r = self.results(done[0])
        self.assertEqual(r["p.t1"].status, "pass")
        # A step without a result: why, from QEMU's last line.
        self.assertEqual(r["p.t2"].note, "not run: qemu: last")
        self.assertEqual(r["console"].status, "pass")
        self.assertEqual((self.out / "qemu.out").read_text(), "qemu: first\nqemu: last\n")

    def test_much_output_does_not_block_qemu(self):
        # More than a pipe holds (64 KiB): QEMU would block in write() until
        # the wall-clock limit if nobody read it while it runs.
        os.environ["FAKE_FLOOD"] = str(1 << 20)
        self.go.touch()
        with mock.patch.object(kvt, "BOOT_SLACK", 15):
            b = self.boot()
        r = self.results(b)
        self.assertEqual(r["console"].status, "pass", r["console"].note)
        self.assertLess(b.wall, 15)
        lines = (self.out / "qemu.out").read_text().splitlines()
        self.assertEqual(len(lines), 2 + (1 << 20) // 100)
        self.assertEqual(lines[-1], "qemu: last")

    def test_timeout_and_no_stale_output(self):
        # A qemu.out of an earlier boot goes; a QEMU over its limit is killed,
        # after its monitor said where its CPUs were.
        self.out.mkdir()
        (self.out / "qemu.out").write_text("old\n")
        build = self.tmp / "k" / "build"
        (build / "arch/riscv/boot").mkdir(parents=True)
        (build / "System.map").write_text("ffffffff80001000 T handle_exception\n"
                                          "ffffffff80001000 a an_absolute\n"
                                          "ffffffff80002000 T _end_of_it\n")
        logged = []
        with mock.patch.object(kvt, "BOOT_SLACK", 1), \
                mock.patch.object(kvt, "log", logged.append):
            b = kvt.boot(self.PLAN, "c", (build / "arch/riscv/boot/Image", None, None, {}),
                         [], steps=self.STEPS, outdir=self.out,
                         initramfs=lambda path, text: path.write_bytes(b""))
        r = self.results(b)
        self.assertEqual(r["console"].status, "fail")
        self.assertIn("QEMU timed out after 1s; its CPUs were at "
                      "CPU0 handle_exception+0x10, CPU1 0x400000", r["console"].note)
        self.assertIn("pc       ffffffff80001010",
                      (self.out / "hung-registers.txt").read_text())
        # The console's end goes to the log (a CI log has no console.log).
        self.assertTrue(any("the plan did not finish" in l for l in logged), logged)
        self.assertIn("#   [    1.0] booting", logged)
        self.assertIn("QEMU timed out after 1s", r["p.t1"].note)
        self.assertLess(b.wall, 10)
        self.assertEqual((self.out / "qemu.out").read_text(), "qemu: first\n")


# dpkg-query -W -f=FORMAT PACKAGE for an installed linux-source-6.12 of
# version $FAKE_LINUX (none if it is empty).
FAKE_DPKG_QUERY = r"""#!/bin/bash
fmt=${2#-f=}
[ -n "$FAKE_LINUX" ] || { echo "dpkg-query: no packages found matching $3" >&2; exit 1; }
fmt=${fmt//'${Status}'/install ok installed}
printf '%b' "${fmt//'${Version}'/$FAKE_LINUX}"
"""


class LinuxSourceTest(unittest.TestCase):
    """The linux-source-6.12 version: in the results, a change since the
    last kernel build said in one line, KVT_LINUX_VERSION enforced, and the
    cache key as it always was."""

    def setUp(self):
        self.tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.tmp)
        (self.tmp / "bin").mkdir()
        fake = self.tmp / "bin" / "dpkg-query"
        fake.write_text(FAKE_DPKG_QUERY)
        fake.chmod(0o755)
        self.cache = self.tmp / "cache"
        self.cache.mkdir()

    def env_sh(self, script, linux, pin=None):
        env = dict(os.environ, PATH=f"{self.tmp / 'bin'}:{os.environ['PATH']}",
                   FAKE_LINUX=linux, KVT_CACHE=str(self.cache))
        env.pop("KVT_LINUX_VERSION", None)
        if pin is not None:
            env["KVT_LINUX_VERSION"] = pin
        return subprocess.run(["bash", "-c", f'set -euo pipefail; . "{kvt.ROOT}/scripts/env.sh"; '
                               + script], capture_output=True, text=True, env=env)

    def test_change_is_said_once(self):
        note = "kvt_note_linux_version"
        res = self.env_sh(note, "6.12.117-1~deb12u1")
        self.assertEqual((res.returncode, res.stderr), (0, ""))
        self.assertEqual(self.env_sh(note, "6.12.117-1~deb12u1").stderr, "")
        res = self.env_sh(note, "6.12.118-1~deb12u1")
        self.assertEqual(res.returncode, 0)
        self.assertEqual(len(res.stderr.splitlines()), 1)
        self.assertIn("linux-source-6.12 changed: 6.12.117-1~deb12u1 -> 6.12.118-1~deb12u1,"
                      " kernels will be rebuilt", res.stderr)
        self.assertEqual(self.env_sh(note, "6.12.118-1~deb12u1").stderr, "")
        self.assertEqual((self.cache / "linux-source-6.12.last").read_text(),
                         "6.12.118-1~deb12u1\n")

    def test_pinned_version(self):
        res = self.env_sh("echo ok", "6.12.118-1~deb12u1", pin="6.12.118-1~deb12u1")
        self.assertEqual((res.returncode, res.stdout), (0, "ok\n"))
        res = self.env_sh("echo ok", "6.12.118-1~deb12u1", pin="6.12.117-1~deb12u1")
        self.assertNotEqual(res.returncode, 0)
        self.assertEqual(res.stdout, "")
        self.assertIn("KVT_LINUX_VERSION=6.12.117-1~deb12u1, but linux-source-6.12"
                      " 6.12.118-1~deb12u1 is installed", res.stderr)
        self.assertIn("setup-deps.sh", res.stderr)
        res = self.env_sh("echo ok", "", pin="6.12.117-1~deb12u1")
        self.assertNotEqual(res.returncode, 0)
        self.assertIn("linux-source-6.12 is not installed", res.stderr)

    def test_source_key_is_unchanged(self):
        # The key is what it was before the version was pinned or noted:
        # a different one would rebuild every cached kernel.
        version = "6.12.118-1~deb12u1"
        patches = b"".join(p.read_bytes()
                           for p in sorted((kvt.ROOT / "patches/linux-6.12").glob("*.patch")))
        want = hashlib.sha256(version.encode() + b"\n" + patches).hexdigest()[:16]
        for pin in (None, version):
            res = self.env_sh("kvt_src_key", version, pin)
            self.assertEqual(res.stdout.strip(), want, pin)

    def test_version_in_the_results(self):
        env = {"PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}"}
        kvt.linux_source_version.cache_clear()
        self.addCleanup(kvt.linux_source_version.cache_clear)
        with mock.patch.dict(os.environ, dict(env, FAKE_LINUX="6.12.118-1~deb12u1")):
            self.assertEqual(kvt.linux_source_version(), "6.12.118-1~deb12u1")
            b = kvt.Boot("c", "riscv", [kvt.Result("c", "t", "pass", 1.0)], Path("x"), 1.0)
            with mock.patch("sys.stdout", new_callable=io.StringIO) as out:
                kvt.report([b])
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[0], "# host kernels: Debian linux-source-6.12 6.12.118-1~deb12u1")
        self.assertEqual(lines[-1], "1 passed, 0 failed, 0 skipped")
        kvt.linux_source_version.cache_clear()
        with mock.patch.dict(os.environ, dict(env, FAKE_LINUX="")):
            self.assertEqual(kvt.linux_source_version(), "")
            self.assertIn("(not installed)", kvt.linux_source_line())


class CountsTest(unittest.TestCase):
    def test_cargo_and_unittest_logs(self):
        with tempfile.TemporaryDirectory() as d:
            cargo = Path(d) / "cargo.log"
            cargo.write_text("test result: ok. 4 passed; 0 failed; 1 ignored; 0 measured\n"
                             "test result: FAILED. 2 passed; 3 failed; 0 ignored;\n")
            unit = Path(d) / "unit.log"
            unit.write_text("Ran 7 tests in 1.0s\n\nFAILED (failures=1, errors=1, skipped=2)\n")
            self.assertEqual(kvt.host_counts(cargo, unit),
                             {"pass": 9, "fail": 5, "skip": 3})


if __name__ == "__main__":
    unittest.main()


def kernel_tool_tree():
    """checkpatch.pl and what it reads, from Debian's linux-source-6.12,
    extracted once into the cache."""
    cache = Path(os.environ.get("KVT_CACHE", Path.home() / ".cache/kvm-vtimer"))
    tree = cache / "checkpatch"
    if not (tree / "scripts/checkpatch.pl").exists():
        tree.mkdir(parents=True, exist_ok=True)
        subprocess.run(["tar", "-xf", "/usr/src/linux-source-6.12.tar.xz", "-C", str(tree),
                        "--strip-components=1", "--wildcards",
                        "*/scripts/checkpatch.pl", "*/scripts/spelling.txt",
                        "*/scripts/const_structs.checkpatch", "*/MAINTAINERS"], check=True)
    return tree


class StyleTest(unittest.TestCase):
    """Kernel style: checkpatch --strict on the patch series and our C,
    rustfmt with the kernel's settings on the Rust."""

    MAINTAINERS_Q = "does MAINTAINERS need updating?"

    @classmethod
    def setUpClass(cls):
        cls.tree = kernel_tool_tree()

    def checkpatch(self, *args):
        # UNKNOWN_COMMIT_ID looks commit ids up in the git repository it
        # runs in: ours is not the kernel's history, so the upstream commit
        # patch 0005 cites cannot be found here.
        res = subprocess.run(["perl", str(self.tree / "scripts/checkpatch.pl"), "--strict",
                              "--no-tree", "--terse", "--show-types",
                              "--ignore", "UNKNOWN_COMMIT_ID", *args],
                             capture_output=True, text=True)
        return [l for l in res.stdout.splitlines() if ": ERROR:" in l or ": WARNING:" in l
                or ": CHECK:" in l]

    def kvm_patterns(self):
        text = (self.tree / "MAINTAINERS").read_text(errors="replace")
        section = text.split("\nKERNEL VIRTUAL MACHINE (KVM)\n", 1)[1].split("\n\n", 1)[0]
        return [l.split("\t", 1)[1] for l in section.splitlines() if l.startswith("F:\t")]

    def test_patch_series(self):
        patches = sorted((kvt.ROOT / "patches/linux-6.12").glob("*.patch"))
        self.assertTrue(patches)
        patterns = self.kvm_patterns()
        for p in patches:
            # Files the patch creates.
            new = re.findall(r"^--- /dev/null\n\+\+\+ b/(\S+)", p.read_text(), re.M)
            for line in self.checkpatch(str(p)):
                if self.MAINTAINERS_Q not in line:
                    self.fail(f"{p.name}: {line}")
                # Only for new files the KVM entry already covers.
                for f in new:
                    self.assertTrue(any(fnmatch.fnmatch(f, pat.rstrip("/") + ("*" if pat.endswith("/") else ""))
                                        for pat in patterns),
                                    f"{p.name}: {f} is not covered by MAINTAINERS")

    def test_c_sources(self):
        files = [str(f) for f in [*(kvt.ROOT / "selftests").rglob("*.[ch]"),
                                  *(kvt.ROOT / "shim").glob("*.c"),
                                  *(kvt.ROOT / "include").glob("*.h")]]
        self.assertEqual(self.checkpatch("-f", *files), [])

    def test_rustfmt(self):
        res = subprocess.run(["rustfmt", "--check", "--edition", "2021",
                              str(kvt.ROOT / "rust/kvm_vtimer.rs")], capture_output=True, text=True)
        self.assertEqual(res.returncode, 0, res.stdout[-2000:])
        res = subprocess.run(["cargo", "fmt", "--check"], cwd=kvt.ROOT / "host",
                             capture_output=True, text=True)
        self.assertEqual(res.returncode, 0, res.stdout[-2000:])


class CachePruneTest(unittest.TestCase):
    """scripts/env.sh's kvt_prune, as the build scripts run it (set -euo
    pipefail): a fresh, empty cache must not fail it."""

    def prune(self, cache):
        subprocess.run(["bash", "-c", f'set -euo pipefail; export KVT_CACHE="{cache}"; '
                        f'. "{kvt.ROOT}/scripts/env.sh"; kvt_prune'], check=True)

    @staticmethod
    def built(cache, prefix, n):
        """N finished entries PREFIX0..PREFIXn-1, the last the newest."""
        for i in range(n):
            e = cache / f"{prefix}{i}"
            e.mkdir()
            (e / ".kvt-ready").touch()
            os.utime(e, (1000 + i, 1000 + i))

    def test_empty_and_populated_cache(self):
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d)
            self.prune(cache)
            self.built(cache, "kernel-riscv-k", 3)
            (cache / "kernel-arm64-unfinished").mkdir()
            os.utime(cache / "kernel-arm64-unfinished", (1000, 1000))
            (cache / "src-unused").mkdir()
            (cache / "src-used").mkdir()
            (cache / "kernel-riscv-k2" / "source").symlink_to(cache / "src-used")
            self.prune(cache)
            self.assertEqual(sorted(p.name for p in cache.iterdir()),
                             ["kernel-riscv-k1", "kernel-riscv-k2", "src-used"])

    def test_entries_in_use_and_builds_under_way_stay(self):
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d)
            for i in range(5):
                s = cache / f"selftests-riscv-s{i}"
                s.mkdir()
                (s / ".kvt-ready").touch()
            # s0 is used by a live run (this one), s1 by one that is gone.
            (cache / "selftests-riscv-s0" / f".kvt-user-{os.getpid()}").touch()
            (cache / "selftests-riscv-s1" / ".kvt-user-999999999").touch()
            for i in range(5):
                os.utime(cache / f"selftests-riscv-s{i}", (1000 + i, 1000 + i))
            # A build under way, and one that failed long ago.
            (cache / "selftests-arm64-building").mkdir()
            old = cache / "selftests-arm64-failed"
            old.mkdir()
            os.utime(old, (1000, 1000))
            self.prune(cache)
            self.assertEqual(sorted(p.name for p in cache.iterdir()),
                             ["selftests-arm64-building", "selftests-riscv-s0",
                              "selftests-riscv-s2", "selftests-riscv-s3",
                              "selftests-riscv-s4"])

    def test_two_patched_qemus_stay(self):
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d)
            self.built(cache, "qemu-aarch64-q", 3)
            # build-qemu.sh's meson, old: not a qemu-* entry, so it stays.
            (cache / "meson-venv").mkdir()
            os.utime(cache / "meson-venv", (1000, 1000))
            self.prune(cache)
            self.assertEqual(sorted(p.name for p in cache.iterdir()),
                             ["meson-venv", "qemu-aarch64-q1", "qemu-aarch64-q2"])

    def test_claim_marks_until_exit(self):
        with tempfile.TemporaryDirectory() as d:
            code = (f"import sys; sys.path.insert(0, {str(kvt.ROOT / 'scripts')!r}); "
                    f"import kvt, os; kvt.claim({d!r}); "
                    f"print(os.path.exists(os.path.join({d!r}, f'.kvt-user-{{os.getpid()}}')))")
            out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                 text=True, check=True).stdout
            self.assertEqual(out.strip(), "True")
            self.assertEqual(list(Path(d).iterdir()), [])


class WhyFailedTest(unittest.TestCase):
    def test_assertion_in_a_header_or_a_source(self):
        for where in ("kvt_common.h:120", "kvt_bench.c:48"):
            lines = ["==== Test Assertion Failure ====", f"  {where}: x == y", "  pid=1"]
            self.assertEqual(kvt.why_failed(lines), f"{where}: x == y")
        self.assertEqual(kvt.why_failed(["a", "last"]), "last")
