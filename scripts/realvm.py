#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""make realvm: real guests on a real VMM, in-tree timer against ours.

    realvm.py [CONFIG...]          boot each config of selftests/realvm.toml
    realvm.py --short [CONFIG...]  only the [short] step (make check)

In each emulated host (the plan.toml config of the same name, with the
settings of selftests/realvm.toml over it) Debian's QEMU runs Debian's guest
kernel with KVM, step by step (kvt_realvm), on KVM's timer, after insmod
kvm_vtimer.ko and after rmmod again (A-B-A).  The packages come from Debian
trixie through scripts/fetch-debian.sh.  Results are kvt.py's (pass, fail,
xfail, ...); the figures (clock, cyclictest percentiles, save/restore,
module statistics) go to build/realvm/realvm.json with the package versions
that produced them, and a cyclictest table is printed.
"""

import argparse
import concurrent.futures
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import kvt

ROOT = kvt.ROOT
REALVM_PLAN = Path(os.environ.get("KVT_REALVM_PLAN", ROOT / "selftests" / "realvm.toml"))
OUT = kvt.BUILD / "realvm"
PHASES = ("intree", "vtimer", "intree2")
TRIPLET = {"riscv": "riscv64-linux-gnu", "arm64": "aarch64-linux-gnu"}
CROSS = {"riscv": "riscv64-linux-gnu-", "arm64": "aarch64-linux-gnu-"}
# The busybox applets the guest's /init uses.
APPLETS = ("sh", "mount", "mkdir", "sed", "awk", "date", "sleep", "cat", "touch",
           "poweroff", "uname", "kill")


def load():
    """plan.toml with realvm.toml's configs laid over it, and the steps."""
    plan = kvt.load_plan()
    with open(REALVM_PLAN, "rb") as f:
        rv = tomllib.load(f)
    configs = {}
    for name, over in rv["config"].items():
        configs[name] = dict(plan["config"][name], **over)
        # A config's test selection is plan.toml's business, not ours.
        configs[name].pop("tests", None)
        configs[name].pop("skip_tests", None)
    merged = dict(plan, config=configs, xfail=rv.get("xfail", []))
    return merged, rv["step"], rv.get("short")


def short_steps(steps, short):
    """The [short] table's one step, with its own loop count and timeout."""
    base = next((s for s in steps if s["id"] == short["step"]), None)
    if base is None:
        raise SystemExit(f"realvm: [short] names no step {short['step']}")
    argv = list(base["argv"][:2])
    if "loops" in short:
        argv.append(str(short["loops"]))
    return [dict(base, argv=argv, timeout=short.get("timeout", base["timeout"]))]


def phase_backend(phase):
    """The backend a phase runs: intree2 is the in-tree timer again."""
    return "intree" if phase.startswith("intree") else phase


def steps_of(steps, kvm_module, phases=PHASES):
    """The /plan lines of one boot: every step on each phase, kvm_vtimer
    loaded for "vtimer" and unloaded (must succeed) after it."""
    out = []
    if kvm_module:
        out.append(("host.insmod_kvm", "insmod 60 host.insmod_kvm /lib/modules/kvm.ko"))
    for phase in phases:
        out.append((None, f"phase {phase}"))
        if phase == "vtimer":
            out.append(("vtimer.insmod", "insmod 60 vtimer.insmod /lib/modules/kvm_vtimer.ko"))
        for s in steps:
            tid = f"{phase}.{s['id']}"
            argv = [s["argv"][0], s["argv"][1], str(s["timeout"]), *s["argv"][2:]]
            # Live save, hugetlbfs memory, functions to profile (kvt_realvm.c).
            opts = [f for f, on in (("-l", s.get("live")), ("-H", s.get("huge"))) if on]
            if s.get("trace"):
                opts += ["-T", ",".join(s["trace"])]
            argv[:0] = opts
            out.append((tid, f"run {s['timeout']} {tid} /bin/kvt_realvm {' '.join(argv)}"))
        if phase == "vtimer":
            out.append(("vtimer.rmmod", "rmmod 60 vtimer.rmmod kvm_vtimer"))
    return out


def build_runner(arch):
    out = kvt.BUILD / f"kvt_realvm-{arch}"
    src = ROOT / "selftests" / "realvm" / "kvt_realvm.c"
    srcs = (src, ROOT / "selftests" / "host" / "line_out.h")
    if not out.exists() or out.stat().st_mtime < max(s.stat().st_mtime for s in srcs):
        out.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([f"{CROSS[arch]}gcc", "-static", "-O2", "-Wall", "-Wextra", "-Werror",
                        "-pthread", "-o", str(out), str(src), "-lm"], check=True)
    return out


def add_tree(cpio, src, dst, seen):
    """Add the tree SRC below DST of the archive: directories, files (with
    their modes) and symbolic links, each path once."""
    for dirpath, dirnames, filenames in os.walk(src):
        rel = os.path.relpath(dirpath, src)
        base = dst if rel == "." else f"{dst}/{rel}" if dst else rel
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            arc = f"{base}/{name}" if base else name
            if arc in seen:
                continue
            seen.add(arc)
            if p.is_symlink():
                cpio.symlink(arc, os.readlink(p))
            elif p.is_dir():
                cpio.dir(arc)
            else:
                cpio.file(arc, p.read_bytes(), p.stat().st_mode & 0o7777)
        dirnames.sort()


def guest_initrd(debian, arch):
    """The guest's initramfs: Debian's busybox, cyclictest and stress-ng
    (the `guest` set of fetch-debian.sh) and our /init."""
    cpio, seen = kvt.Cpio(), set()
    cpio.dir("dev")
    cpio.chardev("dev/console", 5, 1)
    seen.add("dev")
    for d in ("proc", "sys", "tmp", "root"):
        cpio.dir(d)
        seen.add(d)
    busybox = None
    for cand in ("usr/bin/busybox", "bin/busybox"):
        if (Path(debian) / "guest" / cand).exists():
            busybox = cand
            break
    if busybox is None:
        raise SystemExit("realvm: no busybox in the guest set")
    cpio.file("init", (ROOT / "selftests" / "realvm" / "guest-init.sh").read_bytes(), 0o755)
    seen.add("init")
    # The tree first: the kernel's unpacker makes no parent directories.
    add_tree(cpio, Path(debian) / "guest", "", seen)
    for a in APPLETS:
        if f"usr/bin/{a}" not in seen:
            cpio.symlink(f"usr/bin/{a}", "busybox")
            seen.add(f"usr/bin/{a}")
    return cpio.finish()


def build_host_initramfs(path, arch, plan_text, prepared, debian, runner, initrd):
    """The emulated host's initramfs: our /init and plan, the modules, the
    VMM (the `vmm` set of fetch-debian.sh, merged /usr), kvt_realvm, and the
    guest's kernel and initramfs in /guest."""
    _, init, _, modules = prepared
    cpio, seen = kvt.Cpio(), set()
    for d in ("bin", "dev", "proc", "sys", "tmp", "guest", "usr", "usr/lib",
              "usr/lib/modules"):
        cpio.dir(d)
        seen.add(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.file("init", init.read_bytes(), 0o755)
    cpio.file("plan", plan_text.encode())
    cpio.file("bin/kvt_realvm", runner.read_bytes(), 0o755)
    seen.update({"init", "plan", "bin/kvt_realvm"})
    for name, mod in modules.items():
        cpio.file(f"usr/lib/modules/{name}", Path(mod).read_bytes())
        seen.add(f"usr/lib/modules/{name}")
    # Merged /usr: /lib is usr/lib (the dynamic linker, /lib/modules).
    cpio.symlink("lib", "usr/lib")
    seen.add("lib")
    cpio.file("guest/kernel", (Path(debian) / "guest-kernel").read_bytes())
    cpio.file("guest/initrd.cpio", initrd)
    seen.update({"guest/kernel", "guest/initrd.cpio"})
    add_tree(cpio, Path(debian) / "vmm", "", seen)
    path.write_bytes(cpio.finish())


def fetch_debian(arch):
    return Path(kvt.sh(kvt.SCRIPTS / "fetch-debian.sh", arch))


def boot_one(plan, name, steps, prepared, debian, runner, out, phases):
    cfg = plan["config"][name]
    arch = cfg["arch"]
    outdir = out / name
    outdir.mkdir(parents=True, exist_ok=True)
    plan_steps = steps_of(steps, "kvm.ko" in prepared[3], phases)
    plan_text = "".join(line + "\n" for _, line in plan_steps)
    initrd = guest_initrd(debian, arch)

    def make_initramfs(path, *_):
        build_host_initramfs(path, arch, plan_text, prepared, debian, runner, initrd)

    # kvt.boot() packs plan.toml tests; ours are the steps (timeouts only).
    tests = [{"id": s["id"], "argv": ["kvt_realvm"], "timeout": s["timeout"]}
             for s in steps for _ in phases]
    return kvt.boot(plan, name, prepared, tests, steps=plan_steps, outdir=outdir,
                    initramfs=make_initramfs, xfail_backend=phase_backend)


# ---------------------------------------------------------------- figures

FIG_RE = re.compile(r"^# ([a-z_0-9]+): (.*)$")


def cyclictest_stats(lines):
    """Percentiles of a cyclictest -h histogram (1 us buckets, counts per
    thread, summed): min, p50, p99, p99.9, max in us, loops, overflows."""
    hist, maxes, mins, overflows, total = {}, [], [], 0, 0
    in_hist = False
    for l in lines:
        if l.startswith("# Histogram") and "Overflow" not in l:
            in_hist = True
            continue
        m = re.match(r"^(\d{6})((?:\s+\d+)+)\s*$", l)
        if in_hist and m:
            n = sum(int(x) for x in m.group(2).split())
            hist[int(m.group(1))] = hist.get(int(m.group(1)), 0) + n
            continue
        if l.startswith("# Min Latencies:"):
            mins = [int(x) for x in l.split(":")[1].split()]
        elif l.startswith("# Max Latencies:"):
            maxes = [int(x) for x in l.split(":")[1].split()]
        elif l.startswith("# Histogram Overflows:"):
            overflows = sum(int(x) for x in l.split(":")[1].split())
        elif l.startswith("# Total:"):
            total = sum(int(x) for x in l.split(":")[1].split())
    if not hist and not maxes:
        return None
    count = sum(hist.values()) + overflows

    def pct(p):
        want = p * count
        acc = 0
        for us in sorted(hist):
            acc += hist[us]
            if acc >= want:
                return us
        return max(maxes) if maxes else None  # in the overflow

    return {"loops": total or count, "min": min(mins) if mins else min(hist),
            "p50": pct(0.50), "p99": pct(0.99), "p999": pct(0.999),
            "max": max(maxes) if maxes else max(hist), "overflows": overflows}


def figures(outdir, tid):
    path = Path(outdir) / f"{tid}.log"
    if not path.exists():
        return {}
    lines = path.read_text(errors="replace").splitlines()
    figs = {}
    for l in lines:
        m = FIG_RE.match(l)
        t = m and m.group(1) == "trace" and re.match(r"(\S+) (\d+) calls (\d+) us$", m.group(2))
        if t:
            # kvt_realvm -T: the function profiler's calls and time.
            figs.setdefault("trace", {})[t.group(1)] = {"calls": int(t.group(2)),
                                                        "us": int(t.group(3))}
        elif m and m.group(1) not in ("histogram",):
            figs.setdefault(m.group(1), m.group(2))
    cyc = cyclictest_stats(lines)
    if cyc:
        figs["cyclictest"] = cyc
    return figs


def versions(debian):
    out = {}
    vfile = Path(debian) / "versions.txt"
    if vfile.exists():
        for l in vfile.read_text().splitlines():
            parts = l.split()
            if len(parts) >= 2:
                out[parts[0]] = parts[1]
    return out


def table(results):
    """The cyclictest rows: config, step, and per phase p50/p99/p99.9/max."""
    rows = ["| config | step | " + " | ".join(
        f"{p} p50 / p99 / p99.9 / max (us)" for p in PHASES) + " |",
        "|---|---|" + "---|" * len(PHASES)]
    for name, r in results.items():
        for step in r["steps"]:
            cells = []
            for p in PHASES:
                c = r["figures"].get(f"{p}.{step}", {}).get("cyclictest")
                cells.append(f"{c['p50']} / {c['p99']} / {c['p999']} / {c['max']}"
                             if c else "-")
            if any(c != "-" for c in cells):
                rows.append(f"| {name} | {step} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*")
    ap.add_argument("--short", action="store_true",
                    help="only the [short] step of selftests/realvm.toml")
    ap.add_argument("--variant", help="boot this kernel variant (configs/VARIANT.config), "
                    "for example trace for the steps with `trace`")
    ap.add_argument("--phases", default=",".join(PHASES),
                    help="the phases a boot runs, of " + ", ".join(PHASES))
    ap.add_argument("-j", "--jobs", type=int, default=int(os.environ.get("KVT_BOOTS", "2")))
    args = ap.parse_args()
    plan, steps, short = load()
    out = OUT
    if args.short:
        if not short:
            raise SystemExit("realvm: selftests/realvm.toml has no [short] table")
        steps = short_steps(steps, short)
        out = kvt.BUILD / "realvm-short"
    # make check's short run tests our timer (insmod, the step, rmmod);
    # the in-tree comparison is make realvm's.
    phases = ("vtimer",) if args.short else tuple(args.phases.split(","))
    if any(p not in PHASES for p in phases):
        raise SystemExit(f"realvm: phases are {', '.join(PHASES)}")
    names = args.configs or list(plan["config"])
    if args.short:
        # make check passes its CONFIGS: run those that have a real guest.
        names = [n for n in names if n in plan["config"]]
        if not names:
            out.mkdir(parents=True, exist_ok=True)
            (out / "results.txt").write_text("")
            print("realvm: none of these configs has a real-guest run")
            return 0
    for n in names:
        if n not in plan["config"]:
            raise SystemExit(f"realvm: unknown config {n} (have: {', '.join(plan['config'])})")
    arches = list(dict.fromkeys(plan["config"][n]["arch"] for n in names))
    prepared, debian, runner = {}, {}, {}
    for arch in arches:
        debian[arch] = fetch_debian(arch)
        prepared[arch] = kvt.prepare(arch, [], args.variant)
        runner[arch] = build_runner(arch)
    boots = {}
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futs = {}
        for n in names:
            arch = plan["config"][n]["arch"]
            kvt.log(f"realvm: booting {n}")
            futs[pool.submit(boot_one, plan, n, steps, prepared[arch], debian[arch],
                             runner[arch], out, phases)] = n
        for fut in concurrent.futures.as_completed(futs):
            b = fut.result()
            boots[b.config] = b
            kvt.log(f"realvm: {b.config} done in {b.wall:.0f}s")
    results = {}
    for n in names:
        b = boots[n]
        arch = plan["config"][n]["arch"]
        outdir = out / n
        results[n] = {
            "arch": arch, "wall_s": round(b.wall, 1),
            "qemu": (outdir / "qemu.cmd").read_text().strip(),
            "steps": [s["id"] for s in steps],
            "results": {r.test: r.status for r in b.results},
            "figures": {f"{p}.{s['id']}": figures(outdir, f"{p}.{s['id']}")
                        for p in phases for s in steps},
            "debian": versions(debian[arch]),
            "debian_dir": str(debian[arch]),
            "host_kernel": str(prepared[arch][0]),
            "linux_source": kvt.linux_source_version(),
        }
    out.mkdir(parents=True, exist_ok=True)
    (out / "realvm.json").write_text(json.dumps(results, indent=1) + "\n")
    print("# cyclictest in the guest (us of guest time), in-tree / ours / in-tree again")
    print(table(results))
    print(f"# figures and versions: {out / 'realvm.json'}")
    (out / "results.txt").write_text(kvt.linux_source_line() + "\n" + "".join(
        r.line() + "\n" for n in names for r in boots[n].results))
    counts = kvt.report([boots[n] for n in names])
    return 1 if counts["fail"] else 0


if __name__ == "__main__":
    sys.exit(main())
