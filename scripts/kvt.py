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
import atexit
import bisect
import concurrent.futures
import fnmatch
import functools
import os
import re
import shlex
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
import threading
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
# Console lines shown of a boot whose plan did not finish.
CONSOLE_TAIL = 40

QEMU = {
    "riscv": ("qemu-system-riscv64", "ttyS0", ["-bios", "default"]),
    "arm64": ("qemu-system-aarch64", "ttyAMA0", []),
}

PLAN_DONE = "# init: plan done, powering off"
RESULT_RE = re.compile(r"^(ok|not ok) (\d+) (\S+) # time=([\d.]+)s ?(.*)$")
# Kernel lines that fail a boot, whatever the tests said (KASAN, lockdep,
# DEBUG_ATOMIC_SLEEP and DEBUG_OBJECTS reports start with BUG: or WARNING:;
# UBSAN and kmemleak have their own).
SPLAT_RE = re.compile(
    r"Oops|BUG:|WARNING:|Call Trace|Kernel panic|hung_task|blocked for more than"
    r"|UBSAN:|suspected memory leak|rcu: INFO:|detected stalls"
)
# The kernel's sysrq dumps (/init's show_stuck()).
SYSRQ_RE = re.compile(r"sysrq: Show (Blocked State|backtrace of all active CPUs)")
# A printk line (printk.time=1).
KERNEL_LINE_RE = re.compile(r"^\[\s*\d+\.\d+\] ")
KERNEL_TS_RE = re.compile(r"\[\s*\d+\.\d{6}\] ")
# Lines of a report after its first: at most this many, up to the next one.
REPORT_LINES = 80
PHASE_RE = re.compile(r"^# phase (\S+)$")
# A line of a call trace: "[<ffffffff8021fd60>] dump_stack_lvl+0x2e/0x8e".
TRACE_FRAME_RE = re.compile(r"^\[\s*\d+\.\d+\]\s+(\[<[0-9a-f]+>\]|\? )")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


LINUX_SOURCE = "linux-source-6.12"


@functools.cache
def linux_source_version():
    """The installed version of Debian's linux-source-6.12, which the host
    kernels are built from ("" if it is not installed).  Asked once, when
    the kernels are prepared, so that every result of a run names the
    version its kernels came from."""
    try:
        res = subprocess.run(["dpkg-query", "-W", "-f=${Status} ${Version}", LINUX_SOURCE],
                             capture_output=True, text=True)
    except OSError:
        return ""
    status, _, version = res.stdout.rpartition(" ")
    return version if status == "install ok installed" else ""


def linux_source_line():
    """The results' header line that names the kernel source."""
    return f"# host kernels: Debian {LINUX_SOURCE} {linux_source_version() or '(not installed)'}"


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


def tests_of(plan, name):
    """The tests config NAME runs: its arch's, then only those its `tests`
    patterns match (if it has them), less those its `skip_tests` match."""
    cfg = plan["config"][name]
    tests = tests_for(plan, cfg["arch"])
    only, skip = cfg.get("tests"), cfg.get("skip_tests", [])
    tests = [t for t in tests
             if (only is None or any(fnmatch.fnmatchcase(t["id"], p) for p in only))
             and not any(fnmatch.fnmatchcase(t["id"], p) for p in skip)]
    if not tests:
        raise SystemExit(f"kvt: config {name} has no tests")
    return tests


def xfail_reason(plan, config, backend, test):
    for x in plan.get("xfail", []):
        if (
            fnmatch.fnmatchcase(config, x["config"])
            and x["backend"] in (backend, "*")
            and fnmatch.fnmatchcase(test, x["test"])
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

    def symlink(self, name, target):
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name, major, minor):
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def finish(self):
        self._entry("TRAILER!!!", 0)
        return bytes(self.data)


def plan_steps(tests, kvm_module, kmemleak=False, backends=BACKENDS):
    """The steps of one boot, as (test id or None, /plan line): the suite
    once per backend, kvm_vtimer loaded for the second.  With KMEMLEAK,
    what kmemleak knows at the start is cleared and each phase ends with a
    scan that must find nothing (BACKEND.kmemleak).  BACKENDS may leave
    a phase out (a config's `backends`)."""
    steps = []
    if kvm_module:
        steps.append(("host.insmod_kvm", "insmod 60 host.insmod_kvm /lib/modules/kvm.ko"))
    if kmemleak:
        steps.append((None, "write /sys/kernel/debug/kmemleak scan"))
        steps.append((None, "write /sys/kernel/debug/kmemleak clear"))
    for backend in backends:
        steps.append((None, f"phase {backend}"))
        if backend == "vtimer":
            steps.append(("vtimer.insmod",
                          "insmod 60 vtimer.insmod /lib/modules/kvm_vtimer.ko"))
        for t in tests:
            tid = f"{backend}.{t['id']}"
            steps.append((tid, f"run {t['timeout']} {tid} /bin/{' '.join(t['argv'])}"))
        if backend == "vtimer":
            steps.append(("vtimer.rmmod", "rmmod 60 vtimer.rmmod kvm_vtimer"))
        if kmemleak:
            steps.append((f"{backend}.kmemleak", f"kmemleak 300 {backend}.kmemleak"))
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
    srcs = (src, ROOT / "selftests" / "host" / "line_out.h")
    if not out.exists() or out.stat().st_mtime < max(s.stat().st_mtime for s in srcs):
        cross = {"riscv": "riscv64-linux-gnu-", "arm64": "aarch64-linux-gnu-"}[arch]
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [f"{cross}gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror",
             "-o", str(out), str(src)],
            check=True,
        )
    return out


def claim(entry):
    """Mark cache ENTRY as used by this process until it exits, so that
    another run's kvt_prune (scripts/env.sh) leaves it."""
    marker = Path(entry) / f".kvt-user-{os.getpid()}"
    marker.touch()
    atexit.register(marker.unlink, missing_ok=True)


_qemu_built = {}
_qemu_lock = threading.Lock()


def qemu_binary(cfg):
    """The QEMU a config boots: the system's, or with `qemu_build = true`
    (arm64 only) ours from Debian's source with patches/qemu
    (scripts/build-qemu.sh, built once per run)."""
    qemu = QEMU[cfg["arch"]][0]
    if not cfg.get("qemu_build"):
        return qemu
    if cfg["arch"] != "arm64":
        raise SystemExit("kvt: qemu_build is for arm64 configs only")
    with _qemu_lock:
        if qemu not in _qemu_built:
            path = Path(sh(SCRIPTS / "build-qemu.sh"))
            claim(path.parent)
            _qemu_built[qemu] = str(path)
        return _qemu_built[qemu]


def prepare(arch, tests, variant=None):
    """Build kernel, module, selftests and init for ARCH, with the kernel
    VARIANT (configs/VARIANT.config over configs/ARCH.config) if given."""
    v = [variant] if variant else []
    linux_source_version()
    kdir = Path(sh(SCRIPTS / "build-kernel.sh", arch, *v))
    claim(kdir)
    ko = sh(SCRIPTS / "build-module.sh", arch, *v)
    selftests = sh(SCRIPTS / "build-selftests.sh", arch, *v)
    claim(selftests)
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
                if re.search(r"\S+\.[ch]:\d+", nxt):
                    return nxt.strip()
    return lines[-1].strip() if lines else ""


def boot(plan, name, prepared, tests, echo=False, steps=None, outdir=None,
         initramfs=None, xfail_backend=None):
    """Boot config NAME and run its plan: plan_steps(TESTS), or STEPS as
    (test id or None, /plan line) when given (TESTS then only says which
    binaries to pack and the timeouts).  Outputs go to OUTDIR, by default
    build/runs/NAME.  INITRAMFS(path, plan_text), if given, writes the
    initramfs instead of build_initramfs(); XFAIL_BACKEND maps a phase to
    the backend the plan's xfails name."""
    cfg = plan["config"][name]
    arch = cfg["arch"]
    image, init, selftests, modules = prepared
    outdir = Path(outdir) if outdir else BUILD / "runs" / name
    outdir.mkdir(parents=True, exist_ok=True)
    initrd = outdir / "initramfs.cpio"
    if steps is None:
        # A slow (debug) kernel: every test gets `timeout_scale` times its time.
        scale = cfg.get("timeout_scale", 1)
        tests = [dict(t, timeout=int(t["timeout"] * scale)) for t in tests]
        steps = plan_steps(tests, "kvm.ko" in modules, cfg.get("kmemleak", False),
                           cfg.get("backends", BACKENDS))
    plan_text = "".join(line + "\n" for _, line in steps)
    (outdir / "plan").write_text(plan_text)
    if initramfs:
        initramfs(initrd, plan_text)
    else:
        build_initramfs(initrd, arch, plan_text, init, selftests, tests, modules)

    _, console, extra = QEMU[arch]
    qemu = qemu_binary(cfg)
    logf = outdir / "console.log"
    # A socket's path is short (108 bytes): outside OUTDIR unless asked.
    mondir = None if os.environ.get("KVT_MONITOR") else tempfile.mkdtemp(prefix="kvt-mon-")
    monitor = outdir / "monitor.sock" if mondir is None else Path(mondir) / "m.sock"
    monitor.unlink(missing_ok=True)
    argv = [qemu, *cfg["qemu"], *extra, "-smp", str(cfg.get("smp", 4)),
            "-m", cfg.get("mem", "1G"), "-display", "none",
            # The emulated host's QEMU monitor, for hung_cpus() and, with
            # KVT_MONITOR=1, in OUTDIR for a human to look at a hung host.
            "-monitor", f"unix:{monitor},server=on,wait=off",
            "-serial", f"file:{logf}", "-nic", "none", "-no-reboot",
            "-kernel", str(image), "-initrd", str(initrd),
            "-append", f"console={console} rdinit=/init panic=-1 printk.time=1"]
    if cfg.get("icount"):
        argv += ["-icount", cfg["icount"]]
    (outdir / "qemu.cmd").write_text(shlex.join(argv) + "\n")
    limit = BOOT_SLACK + 60 * len(modules) + 2 * sum(t["timeout"] for t in tests)

    logf.write_bytes(b"")
    # QEMU's own messages (its console is LOGF, which it writes itself),
    # read as they come: in qemu.out at once, and the pipe never fills.
    qemu_log = outdir / "qemu.out"
    qemu_log.unlink(missing_ok=True)
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    reader = LineReader(proc.stdout, qemu_log)
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
            where = hung_cpus(monitor, outdir / "hung-registers.txt", arch, image)
            proc.kill()
            proc.wait()
            timed_out = True
            break
        time.sleep(0.5)
    wall = time.monotonic() - start
    qemu_out = reader.finish().strip()
    console = mend_console(logf.read_text(errors="replace").splitlines())
    if mondir is not None:
        shutil.rmtree(mondir, ignore_errors=True)
    if timed_out:
        why = f"QEMU timed out after {limit}s" + (f"; its CPUs were at {where}" if where else "")
    else:
        why = qemu_out.splitlines()[-1] if qemu_out else "QEMU exited"
    b = Boot(name, arch, log_path=logf, wall=wall)
    b.results = classify(plan, name, [tid for tid, _ in steps if tid], console, wall, why,
                         xfail_backend)
    if PLAN_DONE not in console:
        # A CI log has no console.log: its end, where the host stopped.
        log(f"# {name}: the plan did not finish ({why}); the console's last lines:")
        for line in console[-CONSOLE_TAIL:]:
            log(f"#   {line}")
    for tid, lines in split_output(console).items():
        (outdir / f"{tid}.log").write_text("".join(l + "\n" for l in lines))
    return b


def hung_cpus(sock, path, arch, image, wait=10):
    """Where the CPUs of a hung emulated host are: `info registers -a`
    through its monitor SOCK, written to PATH, each CPU's program counter
    named from the kernel's System.map (next to IMAGE) when it is the
    host's.  "" if the monitor does not answer."""
    text = b""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(sock))
            s.sendall(b"info registers -a\n")
            end = time.monotonic() + wait
            while time.monotonic() < end:
                try:
                    chunk = s.recv(65536)
                except TimeoutError:
                    if text:
                        break
                    continue
                if not chunk:
                    break
                text += chunk
    except OSError as e:
        log(f"kvt: monitor {sock}: {e}")
        return ""
    out = text.decode(errors="replace")
    Path(path).write_text(out)
    pcs = re.findall(r"(?m)^\s*pc\s+([0-9a-f]{16})" if arch == "riscv"
                     else r"PC=([0-9a-f]{16})", out)
    symbols = system_map(Path(image).parents[3] / "System.map")
    return ", ".join(f"CPU{i} {name_pc(int(pc, 16), symbols)}" for i, pc in enumerate(pcs))


def system_map(path):
    """A kernel's text symbols from its System.map, by address."""
    syms = []
    try:
        with open(path) as f:
            for line in f:
                addr, kind, name = line.split()[:3]
                if kind in "tTwW":
                    syms.append((int(addr, 16), name))
    except (OSError, ValueError):
        return []
    syms.sort()
    return syms


def name_pc(pc, symbols):
    """PC as symbol+offset, or in hex when it is not in the kernel's text."""
    i = bisect.bisect_right(symbols, (pc, "\uffff")) - 1
    if i < 0 or i + 1 >= len(symbols):
        return f"{pc:#x}"
    addr, name = symbols[i]
    return f"{name}+{pc - addr:#x}"


class LineReader(threading.Thread):
    """A child's output pipe, read line by line as the child writes it:
    each line is appended to PATH at once (the file is made with the first
    line; none without output), so that `tail -f` follows a long run, and
    kept for finish().  Reading all the time, the pipe never fills, which
    would stop the child in its next write."""

    def __init__(self, pipe, path):
        super().__init__(daemon=True)
        self.pipe, self.path, self.lines = pipe, Path(path), []
        self.start()

    def run(self):
        out, writing = None, True
        try:
            for raw in iter(self.pipe.readline, b""):
                self.lines.append(raw)
                if not writing:
                    continue
                try:
                    if out is None:
                        out = open(self.path, "ab")
                    out.write(raw)
                    out.flush()
                except OSError as e:
                    # Go on reading: a full pipe would stop the child.
                    log(f"kvt: {self.path}: {e}; its lines are kept in memory only")
                    writing = False
        finally:
            if out is not None:
                try:
                    out.close()
                except OSError:
                    pass

    def finish(self, timeout=10):
        """All the output, once the child has exited (the pipe's end).  A
        process that inherited the pipe and outlives the child gets
        TIMEOUT seconds; then what came so far."""
        self.join(timeout)
        if not self.is_alive():
            self.pipe.close()
        return b"".join(self.lines).decode(errors="replace")


def mend_console(console):
    """Lines of ours cut by a kernel message.  The kernel prints to the
    serial console outside our write()s (on PREEMPT_RT from a printing
    thread, late), so "ok 26 x # time=7[ 12.3] msg" + "8.3s" happens: the
    kernel message goes on a line of its own, before ours made whole."""
    out, pending = [], None
    for raw in console:
        if pending is not None and not KERNEL_LINE_RE.match(raw):
            out.append(pending + raw)
            pending = None
            continue
        m = KERNEL_TS_RE.search(raw)
        if m and m.start() > 0 and pending is None:
            out.append(raw[m.start():])
            pending = raw[:m.start()]
            continue
        out.append(raw)
    if pending is not None:
        out.append(pending)
    return out


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


def classify(plan, name, expected, console, wall, why_incomplete, xfail_backend=None):
    """Results of one boot from its console: one per expected step, then
    the console check (the plan finished, no kernel splat).  XFAIL_BACKEND
    maps a phase to the backend name xfails use (default: itself)."""
    seen = {m.group(3): m for m in map(RESULT_RE.match, console) if m}
    output = split_output(console)
    results = []
    for tid in expected:
        m = seen.get(tid)
        backend, _, test = tid.partition(".")
        if xfail_backend:
            backend = xfail_backend(backend)
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

    splats, known = [], {}
    for phase, block in kernel_reports(console):
        k = known_report(plan, name, phase, block)
        if k is None:
            splats.append(block[0])
        else:
            known.setdefault((phase, k["id"]), (k, []))[1].append(block)
    # A known report is an expected failure of its phase, with its evidence.
    for (phase, kid), (k, blocks) in known.items():
        lines = [blocks[0][0].strip()]
        lines += [l.strip() for l in blocks[0][1:] if re.search(k["match"], l)][:1]
        results.append(Result(name, f"{phase}.report.{kid}", "xfail", 0.0,
                              f"{len(blocks)} reports, first: {' | '.join(lines)}"
                              f" ({k['reason']})"))
    if PLAN_DONE not in console:
        results.append(Result(name, "console", "fail", wall,
                              f"the plan did not finish: {why_incomplete}"))
    elif splats:
        results.append(Result(name, "console", "fail", wall,
                              f"kernel splat: {splats[0].strip()}"
                              + (f" (and {len(splats) - 1} more)" if len(splats) > 1 else "")))
    else:
        results.append(Result(name, "console", "pass", wall,
                              "plan finished; no Oops/BUG/WARNING/Call Trace/panic"
                              + (" other than the known reports" if known else "")))
    return results


def kernel_reports(console):
    """The kernel's reports on a console, as (phase, lines): a line
    SPLAT_RE matches, and the kernel lines after it up to the next such line
    or the end of its call trace (at most REPORT_LINES), so that a report is
    known by its whole text (a call trace names the function).  A `Call Trace` right after a report is
    part of it.  The phase is the backend whose `# phase` line came last
    ("host" before the first)."""
    reports, phase, current, in_trace = [], "host", None, False
    # After /init's sysrq dump of a step past its deadline, up to the next
    # phase: the call traces of that dump are not reports (the step's
    # TIMEOUT is); a BUG, WARNING, ... still is.
    asked = False
    for raw in console:
        m = PHASE_RE.match(raw)
        if m:
            phase, asked = m.group(1), False
            continue
        if raw.startswith("    "):
            continue
        asked = asked or bool(SYSRQ_RE.search(raw))
        head = SPLAT_RE.search(raw)
        if head and asked and head.group(0) == "Call Trace":
            head = None
        # A report ends with its call trace: the first line after the trace
        # that is not a frame is not part of it.
        if current and in_trace and not TRACE_FRAME_RE.search(raw):
            current = None
        if current and len(current[1]) <= REPORT_LINES and (
                not head or "Call Trace" in raw) and KERNEL_LINE_RE.match(raw):
            current[1].append(raw)
            in_trace = in_trace or "Call Trace" in raw
            continue
        if head:
            current = (phase, [raw])
            in_trace = "Call Trace" in raw
            reports.append(current)
    return reports


def known_report(plan, name, phase, block):
    """The plan's [[known_report]] that BLOCK (one kernel report, in PHASE)
    is, or None: its `header` regex finds the report's first line, its
    `match` regex a line of the report (the call trace), its `exclude`
    regex (if any) no line, the config's variant is one of its `variants`
    and the phase one of its `backends` ("*" for any; a report before the
    first phase is "host")."""
    variant = plan["config"].get(name, {}).get("variant", "")
    for k in plan.get("known_report", []):
        if variant not in k.get("variants", [variant]) and "*" not in k.get("variants", []):
            continue
        backends = k.get("backends", ["*"])
        if phase not in backends and "*" not in backends:
            continue
        if k.get("exclude") and any(re.search(k["exclude"], l) for l in block):
            continue
        if re.search(k["header"], block[0]) and any(re.search(k["match"], l)
                                                     for l in block[1:]):
            return k
    return None


# ---------------------------------------------------------------- commands


def report(boots, extra_counts=None):
    counts = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0, "xpass": 0}
    for k, v in (extra_counts or {}).items():
        counts[k] += v
    print(linux_source_line())
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


RESULT_LINE_RE = re.compile(r"^(PASS|FAIL|SKIP|XFAIL|XPASS)\s+\S+/\S+ \(")


def results_counts(path):
    """Totals of the result lines (Result.line()) that another runner
    saved, e.g. `realvm.py --short`; a missing file is one failure."""
    counts = {"pass": 0, "fail": 0, "skip": 0, "xfail": 0, "xpass": 0}
    p = Path(path)
    if not p.exists():
        print(f"FAIL {p.name}: no results (the run that writes them broke)")
        counts["fail"] += 1
        return counts
    for line in p.read_text().splitlines():
        m = RESULT_LINE_RE.match(line)
        if m:
            counts[m.group(1).lower()] += 1
    return counts


def cmd_suite(args):
    plan = load_plan()
    names = args.configs or configs_of_variant(plan, args.variant)
    for n in names:
        if n not in plan["config"]:
            raise SystemExit(f"kvt: unknown config {n} (have: {', '.join(plan['config'])})")
    # Build serially (one kernel build at a time), boot in parallel: icount
    # QEMU is single-threaded, so two boots use the two cores.  A kernel is
    # an (arch, variant) pair.
    prepared = {}
    for key in dict.fromkeys(kernel_of(plan, n) for n in names):
        prepared[key] = prepare(key[0], tests_for(plan, key[0]), key[1])
    # A QEMU of our own that does not build fails its configs, not the run.
    boots = {}
    for n in names:
        try:
            qemu_binary(plan["config"][n])
        except SystemExit as e:
            log(f"kvt: {n}: {e}")
            boots[n] = Boot(n, plan["config"][n]["arch"],
                            [Result(n, "qemu", "fail", note=str(e))])
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {}
        for n in names:
            if n in boots:
                continue
            log(f"kvt: booting {n}")
            futs[pool.submit(boot, plan, n, prepared[kernel_of(plan, n)],
                             tests_of(plan, n), args.verbose)] = n
        for fut in concurrent.futures.as_completed(futs):
            b = fut.result()
            boots[b.config] = b
            log(f"kvt: {b.config} done in {b.wall:.0f}s")
    extra = host_counts(args.cargo_log, args.unittest_log)
    for path in args.results_log or []:
        for k, v in results_counts(path).items():
            extra[k] = extra.get(k, 0) + v
    counts = report([boots[n] for n in names], extra)
    return 1 if counts["fail"] else 0


def kernel_of(plan, name):
    """The kernel config NAME boots: (arch, variant or None)."""
    cfg = plan["config"][name]
    return cfg["arch"], cfg.get("variant")


def configs_of_variant(plan, variant=None):
    """The configs whose kernel is VARIANT (None: the plain kernels)."""
    return [n for n, c in plan["config"].items() if c.get("variant") == variant]


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
    s.add_argument("--results-log", action="append",
                   help="saved result lines of another runner to count in (repeatable)")
    s.add_argument("--variant", help="with no CONFIG: the configs of this kernel variant"
                   " (debug, rt; default: the plain kernels)")
    s.set_defaults(func=cmd_suite)
    r = sub.add_parser("run", help="make run")
    r.set_defaults(func=cmd_run)
    args = ap.parse_args()
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()
