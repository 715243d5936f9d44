#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Boot the emulated KVM hosts under QEMU and run the selftest plan.

    kvt.py suite CONFIG...     run the plan of each config (one boot each)
    kvt.py run                 make run: riscv-sstc, insmod, arch_timer

For every config it builds (or reuses) the host kernel, kvm_vtimer.ko and the
selftests, packs them with our static /init into an initramfs, boots QEMU
with a wall-clock timeout and reads the KTAP lines /init prints.  A result is
pass, fail, skip, xfail (a failure the plan expects) or xpass (an expected
failure that passed).  A console that shows a kernel splat fails the boot.
"""

import argparse
import concurrent.futures
import os
import re
import shlex
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"
# KVT_PLAN: another plan, for experiments (e.g. a different icount shift).
PLAN = Path(os.environ.get("KVT_PLAN", ROOT / "selftests" / "plan.toml"))
BUILD = Path(os.environ.get("KVT_BUILD", ROOT / "build"))

BACKENDS = ("intree", "vtimer")
# Seconds a boot may take beyond the sum of its tests' timeouts.
BOOT_SLACK = 180

QEMU = {
    "riscv": ("qemu-system-riscv64", "ttyS0", ["-bios", "default"]),
    "arm64": ("qemu-system-aarch64", "ttyAMA0", []),
}

PLAN_DONE = "# init: plan done, powering off"
RESULT_RE = re.compile(r"^(ok|not ok) (\d+) (\S+) # time=([\d.]+)s ?(.*)$")
# Kernel lines that fail a boot, whatever the tests said.
SPLAT_RE = re.compile(
    r"Oops|BUG:|WARNING:|Call Trace|Kernel panic|hung_task|blocked for more than"
)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def sh(*argv):
    """Run a build script; its last line of output is its answer."""
    res = subprocess.run(argv, stdout=subprocess.PIPE, text=True)
    if res.returncode:
        raise SystemExit(f"kvt: {' '.join(map(str, argv))} failed")
    return res.stdout.strip().splitlines()[-1]


@dataclass
class Result:
    config: str
    test: str
    status: str  # pass fail skip xfail xpass
    secs: float = 0.0
    note: str = ""

    def line(self):
        note = f"  # {self.note}" if self.note else ""
        return f"{self.status.upper():5} {self.config}/{self.test} ({self.secs:.1f}s){note}"


@dataclass
class Boot:
    config: str
    arch: str
    results: list = field(default_factory=list)
    log_path: Path = None
    wall: float = 0.0


def load_plan():
    with open(PLAN, "rb") as f:
        return tomllib.load(f)


def tests_for(plan, arch, only=None):
    tests = [t for t in plan["test"] if t.get("arch", arch) == arch]
    if only:
        tests = [t for t in tests if t["id"] in only]
        if not tests:
            raise SystemExit(f"kvt: no test {only} for {arch}")
    return tests


def xfail_reason(plan, config, backend, test):
    for x in plan.get("xfail", []):
        if (
            x["config"] in (config, "*")
            and x["backend"] in (backend, "*")
            and x["test"] == test
        ):
            return x["reason"]
    return None


# ---------------------------------------------------------------- initramfs


class Cpio:
    """A newc archive, written without needing root for device nodes."""

    def __init__(self):
        self.data = bytearray()
        self.ino = 1

    def _entry(self, name, mode, body=b"", rdev=(0, 0)):
        name_b = name.encode() + b"\0"
        hdr = "070701" + "".join(
            f"{v:08x}"
            for v in (
                self.ino, mode, 0, 0, 1, 0, len(body), 0, 0,
                rdev[0], rdev[1], len(name_b), 0,
            )
        )
        self.ino += 1
        self.data += hdr.encode() + name_b
        self.data += b"\0" * (-len(self.data) % 4)
        self.data += body
        self.data += b"\0" * (-len(self.data) % 4)

    def dir(self, name):
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name, body, mode=0o644):
        self._entry(name, stat.S_IFREG | mode, body)

    def chardev(self, name, major, minor):
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def plan_steps(tests, kvm_module):
    """The steps of one boot, as (test id or None, /plan line): the suite
    once per backend, kvm_vtimer loaded for the second."""
    steps = []
    if kvm_module:
        steps.append(("host.insmod_kvm", "insmod 60 host.insmod_kvm /lib/modules/kvm.ko"))
    for backend in BACKENDS:
        steps.append((None, f"phase {backend}"))
        if backend == "vtimer":
            steps.append(("vtimer.insmod",
                          "insmod 60 vtimer.insmod /lib/modules/kvm_vtimer.ko"))
        for t in tests:
            tid = f"{backend}.{t['id']}"
            steps.append((tid, f"run {t['timeout']} {tid} /bin/{' '.join(t['argv'])}"))
        if backend == "vtimer":
            steps.append(("vtimer.rmmod", "rmmod 60 vtimer.rmmod kvm_vtimer"))
    return steps


def build_initramfs(path, arch, plan_text, init, selftests, tests, modules):
    cpio = Cpio()
    for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules"):
        cpio.dir(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("init", init.read_bytes(), 0o755)
    cpio.file("plan", plan_text.encode())
    for prog in sorted({Path(t["argv"][0]).name for t in tests}):
        src = next(Path(selftests).rglob(prog))
        cpio.file(f"bin/{prog}", src.read_bytes(), 0o755)
    for name, mod in modules.items():
        cpio.file(f"lib/modules/{name}", Path(mod).read_bytes())
    path.write_bytes(cpio.finish())


def build_init(arch):
    out = BUILD / f"init-{arch}"
    src = ROOT / "selftests" / "host" / "init.c"
    if not out.exists() or out.stat().st_mtime < src.stat().st_mtime:
        cross = {"riscv": "riscv64-linux-gnu-", "arm64": "aarch64-linux-gnu-"}[arch]
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [f"{cross}gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror",
             "-o", str(out), str(src)],
            check=True,
        )
    return out


def prepare(arch, tests):
    """Build kernel, module, selftests and init for ARCH."""
    kdir = Path(sh(SCRIPTS / "build-kernel.sh", arch))
    ko = sh(SCRIPTS / "build-module.sh", arch)
    selftests = sh(SCRIPTS / "build-selftests.sh", arch)
    init = build_init(arch)
    modules = {"kvm_vtimer.ko": ko}
    kvm_ko = kdir / "build" / "arch" / "riscv" / "kvm" / "kvm.ko"
    if arch == "riscv":
        modules["kvm.ko"] = kvm_ko
    image = kdir / "build" / {"riscv": "arch/riscv/boot/Image",
                              "arm64": "arch/arm64/boot/Image"}[arch]
    return image, init, selftests, modules


# ---------------------------------------------------------------- one boot


def why_skipped(lines):
    """The selftest's own reason for a skip: its last line that says so."""
    for l in reversed(lines):
        if "skip" in l.lower():
            return l.strip()
    return ""


def why_failed(lines):
    """Where a selftest's assertion failed (file:line), else its last line."""
    for i, l in enumerate(lines):
        if "Test Assertion Failure" in l:
            for nxt in lines[i + 1:i + 4]:
                if re.search(r"\S+\.c:\d+", nxt):
                    return nxt.strip()
    return lines[-1].strip() if lines else ""


def boot(plan, name, prepared, tests, echo=False):
    cfg = plan["config"][name]
    arch = cfg["arch"]
    image, init, selftests, modules = prepared
    outdir = BUILD / "runs" / name
    outdir.mkdir(parents=True, exist_ok=True)
    initrd = outdir / "initramfs.cpio"
    steps = plan_steps(tests, "kvm.ko" in modules)
    plan_text = "".join(line + "\n" for _, line in steps)
    (outdir / "plan").write_text(plan_text)
    build_initramfs(initrd, arch, plan_text, init, selftests, tests, modules)

    qemu, console, extra = QEMU[arch]
    logf = outdir / "console.log"
    argv = [qemu, *cfg["qemu"], *extra, "-smp", str(cfg.get("smp", 4)),
            "-m", cfg.get("mem", "1G"), "-display", "none", "-monitor", "none",
            "-serial", f"file:{logf}", "-nic", "none", "-no-reboot",
            "-kernel", str(image), "-initrd", str(initrd),
            "-append", f"console={console} rdinit=/init panic=-1 printk.time=1"]
    if cfg.get("icount"):
        argv += ["-icount", cfg["icount"]]
    (outdir / "qemu.cmd").write_text(shlex.join(argv) + "\n")
    limit = BOOT_SLACK + 60 * len(modules) + 2 * sum(t["timeout"] for t in tests)

    logf.write_bytes(b"")
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    pos = 0
    timed_out = False
    while True:
        done = proc.poll() is not None
        if echo:
            with open(logf, "rb") as f:
                f.seek(pos)
                chunk = f.read()
            # Only whole lines; the rest is read again next time.
            cut = chunk.rfind(b"\n") + 1
            pos += cut
            for raw in chunk[:cut].decode(errors="replace").splitlines():
                if RESULT_RE.match(raw):
                    log(f"  {name}: {raw}")
        if done:
            break
        if time.monotonic() - start > limit:
            proc.kill()
            proc.wait()
            timed_out = True
            break
        time.sleep(0.5)
    wall = time.monotonic() - start
    qemu_out = proc.stdout.read().decode(errors="replace").strip()
    if qemu_out:
        (outdir / "qemu.out").write_text(qemu_out + "\n")
    console = logf.read_text(errors="replace").splitlines()
    if timed_out:
        why = f"QEMU timed out after {limit}s"
    else:
        why = qemu_out.splitlines()[-1] if qemu_out else "QEMU exited"
    b = Boot(name, arch, log_path=logf, wall=wall)
    b.results = classify(plan, name, [tid for tid, _ in steps if tid], console, wall, why)
    for tid, lines in split_output(console).items():
        (outdir / f"{tid}.log").write_text("".join(l + "\n" for l in lines))
    return b


def split_output(console):
    """Each step's output: the indented lines before its result line."""
    output, current = {}, []
    for raw in console:
        if raw.startswith("    "):
            current.append(raw[4:])
            continue
        m = RESULT_RE.match(raw)
        if m:
            output[m.group(3)] = current
            current = []
    return output


def classify(plan, name, expected, console, wall, why_incomplete):
    """Results of one boot from its console: one per expected step, then
    the console check (the plan finished, no kernel splat)."""
    seen = {m.group(3): m for m in map(RESULT_RE.match, console) if m}
    output = split_output(console)
    results = []
    for tid in expected:
        m = seen.get(tid)
        backend, _, test = tid.partition(".")
        reason = xfail_reason(plan, name, backend, test)
        if m is None:
            results.append(Result(name, tid, "fail", 0.0, f"not run: {why_incomplete}"))
            continue
        ok, secs, note = m.group(1) == "ok", float(m.group(4)), m.group(5)
        if ok and note.startswith("SKIP"):
            status = "skip"
            note = why_skipped(output.get(tid, [])) or note
        elif ok:
            status = "xpass" if reason else "pass"
        else:
            status = "xfail" if reason else "fail"
            where = why_failed(output.get(tid, []))
            note = f"{note} {where}" if where else note
        if reason:
            note = f"{note} ({reason})".strip()
        results.append(Result(name, tid, status, secs, note))

    splats = [l for l in console if not l.startswith("    ") and SPLAT_RE.search(l)]
    if PLAN_DONE not in console:
        results.append(Result(name, "console", "fail", wall,
                              f"the plan did not finish: {why_incomplete}"))
    elif splats:
        results.append(Result(name, "console", "fail", wall,
                              f"kernel splat: {splats[0].strip()}"))
    else:
        results.append(Result(name, "console", "pass", wall,
                              "plan finished; no Oops/BUG/WARNING/Call Trace/panic"))
    return results


# ---------------------------------------------------------------- commands


def report(boots, extra_counts=None):
    counts = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0, "xpass": 0}
    for k, v in (extra_counts or {}).items():
        counts[k] += v
    for b in boots:
        print(f"# {b.config}: {b.wall:.0f}s wall, console in {b.log_path}")
        for r in b.results:
            print(r.line())
            counts[r.status] += 1
    print(f"xfail: {counts['xfail']}, xpass: {counts['xpass']}")
    print(f"{counts['pass']} passed, {counts['fail']} failed, {counts['skip']} skipped")
    return counts


def host_counts(cargo_log=None, unittest_log=None):
    """Totals of the saved host test outputs (`cargo test`, Python
    unittest), so that one summary line covers every test of `make check`."""
    counts = {"pass": 0, "fail": 0, "skip": 0}
    if cargo_log:
        for m in re.finditer(r"test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored",
                             Path(cargo_log).read_text()):
            counts["pass"] += int(m.group(1))
            counts["fail"] += int(m.group(2))
            counts["skip"] += int(m.group(3))
    if unittest_log:
        text = Path(unittest_log).read_text()
        ran = re.search(r"^Ran (\d+) tests?", text, re.M)
        if not ran:
            # No count means the run itself broke: that is a failure.
            counts["fail"] += 1
            return counts
        bad = {k: int(v) for k, v in re.findall(r"(failures|errors|skipped)=(\d+)", text)}
        fail = bad.get("failures", 0) + bad.get("errors", 0)
        counts["fail"] += fail
        counts["skip"] += bad.get("skipped", 0)
        counts["pass"] += int(ran.group(1)) - fail - bad.get("skipped", 0)
    return counts


def cmd_suite(args):
    plan = load_plan()
    names = args.configs or list(plan["config"])
    for n in names:
        if n not in plan["config"]:
            raise SystemExit(f"kvt: unknown config {n} (have: {', '.join(plan['config'])})")
    # Build serially (one kernel build at a time), boot in parallel: icount
    # QEMU is single-threaded, so two boots use the two cores.
    prepared = {}
    for arch in dict.fromkeys(plan["config"][n]["arch"] for n in names):
        prepared[arch] = prepare(arch, tests_for(plan, arch))
    boots = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {}
        for n in names:
            arch = plan["config"][n]["arch"]
            log(f"kvt: booting {n}")
            futs[pool.submit(boot, plan, n, prepared[arch], tests_for(plan, arch),
                             args.verbose)] = n
        for fut in concurrent.futures.as_completed(futs):
            b = fut.result()
            boots[b.config] = b
            log(f"kvt: {b.config} done in {b.wall:.0f}s")
    counts = report([boots[n] for n in names], host_counts(args.cargo_log, args.unittest_log))
    return 1 if counts["fail"] else 0


def cmd_run(args):
    plan = load_plan()
    name = "riscv-sstc"
    arch = plan["config"][name]["arch"]
    tests = tests_for(plan, arch, only=["arch_timer", "kvt_sbi_timer"])
    log(f"kvt: make run: {name}: the in-tree timer, then insmod kvm_vtimer.ko;"
        f" {', '.join(t['id'] for t in tests)}")
    b = boot(plan, name, prepare(arch, tests), tests, echo=True)
    console = b.log_path.read_text(errors="replace").splitlines()
    print(f"# {name}: the module's log ({b.log_path})")
    for l in console:
        if "kvm_vtimer" in l or "timer backend" in l:
            print(f"  {l}")
    print("# what the tests measured")
    for tid, lines in split_output(console).items():
        for l in lines:
            if l.startswith("# "):
                print(f"  {tid}: {l[2:]}")
    counts = report([b])
    return 1 if counts["fail"] else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("suite", help="run the plan on the given configs (default: all)")
    s.add_argument("configs", nargs="*")
    s.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("KVT_BOOTS", "2")),
                   help="boots at once (default 2)")
    s.add_argument("-v", "--verbose", action="store_true", help="echo results as they come")
    s.add_argument("--cargo-log", help="a saved `cargo test` output to count in")
    s.add_argument("--unittest-log", help="a saved Python unittest output to count in")
    s.set_defaults(func=cmd_suite)
    r = sub.add_parser("run", help="make run")
    r.set_defaults(func=cmd_run)
    args = ap.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
