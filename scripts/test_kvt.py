# SPDX-License-Identifier: GPL-2.0
"""Tests of the test bed itself: /init's KTAP output, the initramfs writer
and how a console becomes results.  Run by `make check` on the host:

    python3 -m unittest discover -s scripts -p 'test_*.py'
"""

import fnmatch
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

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

    def test_timeout_kills_the_process_group(self):
        marker = self.tmp / "survivor"
        script = self.tmp / "fork.sh"
        script.write_text(f"#!/bin/sh\n(sleep 3; touch {marker}) &\nsleep 30\n")
        script.chmod(0o755)
        self.run_plan(f"run 1 a.fork {script}\n")
        subprocess.run(["sleep", "3.5"])
        self.assertFalse(marker.exists(), "a child of a timed-out step survived")


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

    def test_shipped_plan_is_well_formed(self):
        plan = kvt.load_plan()
        ids = {t["id"] for t in plan["test"]}
        for x in plan.get("xfail", []):
            self.assertIn(x["config"], (*plan["config"], "*"))
            self.assertIn(x["backend"], (*kvt.BACKENDS, "*"))
            self.assertIn(x["test"], ids)
            self.assertTrue(x["reason"])
        for cfg in plan["config"].values():
            self.assertIn(cfg["arch"], kvt.QEMU)


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

    def test_test_output_is_not_a_splat(self):
        r = self.classify(["    WARNING: printed by a test", kvt.PLAN_DONE])
        self.assertEqual(r["console"].status, "pass")

    def test_unfinished_boot_fails(self):
        r = self.classify(["ok 1 intree.t1 # time=1.0s"])
        self.assertEqual(r["console"].status, "fail")


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

    def test_empty_and_populated_cache(self):
        with tempfile.TemporaryDirectory() as d:
            cache = Path(d)
            self.prune(cache)
            for i in range(3):
                k = cache / f"kernel-riscv-k{i}"
                k.mkdir()
                (k / ".kvt-ready").touch()
                os.utime(k, (1000 + i, 1000 + i))
            (cache / "kernel-arm64-unfinished").mkdir()
            (cache / "src-unused").mkdir()
            (cache / "src-used").mkdir()
            (cache / "kernel-riscv-k2" / "source").symlink_to(cache / "src-used")
            self.prune(cache)
            self.assertEqual(sorted(p.name for p in cache.iterdir()),
                             ["kernel-riscv-k1", "kernel-riscv-k2", "src-used"])
