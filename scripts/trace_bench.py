#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Trace the emulated host through a benchmark run.

    trace_bench.py [--mode M] [--workload W] [--reps N] [--gap-ms MS]
                   [--module-params NAME=VALUE] [--events SUBSYS/EVENT,...]
                   [--light] CONFIG

Boots CONFIG (a config of selftests/plan.toml) with the "trace"
kernel variant (configs/trace.config), turns on the host's scheduler,
hrtimer, IPI, interrupt and KVM entry/exit events (and --events), runs
kvt_bench with one workload and timer mode (both backends, REPS
repetitions; kvm_vtimer with the config's bench_module_params, as in a
benchmark run, or --module-params), and dumps the trace.  It then
reports every stretch longer than MS between two guest entries of a vCPU
thread, with what every host CPU did meanwhile: where a late interrupt's
time went (Documentation/benchmarks.rst, "migrate outliers").  Outputs in
build/trace-CONFIG/: console.log (the trace), report.txt (the runs' late
interrupts and the stretches), and how long the wakeups from WFI took,
from the host timer's expiry to the guest entry, on the timer's CPU or
another, with and without the entering CPU's own tick in between.
--light traces only what those reports need: under -icount each event
lengthens the path it is on.
"""

import argparse
import collections
import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench  # noqa: E402
import kvt  # noqa: E402

TRACEFS = "/sys/kernel/debug/tracing"
EVENTS = ["sched/sched_switch", "sched/sched_wakeup", "sched/sched_migrate_task",
          "timer/hrtimer_start", "timer/hrtimer_expire_entry", "timer/hrtimer_cancel",
          "ipi/ipi_send_cpu", "ipi/ipi_send_cpumask", "irq/irq_handler_entry",
          "kvm/kvm_entry", "kvm/kvm_exit"]
# --light: only what entry_gaps() and wake_paths() read.  Under -icount
# every traced event is instructions, and so time, on the path it is on:
# on arm64-vhe a blocked vCPU's interrupt came 193 us after its deadline
# (median) with EVENTS, 132 us with these, 27 us untraced.
LIGHT_EVENTS = ["timer/hrtimer_expire_entry", "kvm/kvm_entry", "kvm/kvm_exit"]
# A CPU's tick, and the other host timers that wake no vCPU (a sleeping
# task's, the lockup watchdog's).
TICKS = ("tick_nohz_handler", "tick_sched_timer")
NOT_WAKES = TICKS + ("hrtimer_wakeup", "watchdog_timer_fn")
# Per CPU; a run of 200 interrupts writes about 10000 events.
BUFFER_KB = 60000
# "    comm-pid  [cpu] flags  12.345678: event: details", as `cat` prints it.
EVENT_RE = re.compile(r"^\s+(.+)-(\d+)\s+\[(\d+)\]\s+(\S+)\s+([\d.]+): (\w+): (.*)$")

Event = collections.namedtuple("Event", "ts cpu comm pid name detail flags")


def parse_trace(lines):
    """The events of a trace dump, in time order."""
    out = []
    for line in lines:
        m = EVENT_RE.match(line)
        if m:
            comm, pid, cpu, flags, ts, name, detail = m.groups()
            out.append(Event(float(ts), int(cpu), comm, int(pid), name, detail, flags))
    out.sort(key=lambda e: e.ts)
    return out


# A guest exit for WFI, as kvm_exit prints it: RISC-V's scause (virtual
# instruction exception), arm64's exception class (WFx).
WFI_EXITS = ("SCAUSE:0x16", "(WFx)")


def wfi_exit(e):
    """Whether event E is a guest exit for WFI."""
    return e.name == "kvm_exit" and any(w in e.detail for w in WFI_EXITS)


def entry_gaps(events, min_s):
    """(pid, from, to) for each stretch longer than MIN_S seconds from a
    guest entry of a thread to its next, across a WFI exit: a vCPU waiting
    for its timer (not the main thread's gaps between its VMs)."""
    out = []
    last_entry, wfi = {}, set()
    for e in events:
        if wfi_exit(e):
            wfi.add(e.pid)
        elif e.name == "kvm_entry":
            a = last_entry.get(e.pid)
            if a is not None and e.pid in wfi and e.ts - a > min_s:
                out.append((e.pid, a, e.ts))
            last_entry[e.pid] = e.ts
            wfi.discard(e.pid)
    return out


def timer_function(e):
    """The callback an hrtimer event names ("function=..."), or ""."""
    m = re.search(r"function=(\S+)", e.detail)
    return m.group(1) if m else ""


def wake_paths(events):
    """(pid, cpu, expiry, entry, ticks) for each WFI wait of a vCPU thread
    that a host timer ended: the last expiry event before the guest entry
    of a timer not in NOT_WAKES (KVM's or kvm_vtimer's), the entry's time,
    and the TICKS expiries on the entering CPU between the two (its own
    tick inside the wakeup path)."""
    out = []
    wfi, last_wake = set(), {}
    for i, e in enumerate(events):
        if wfi_exit(e):
            wfi.add(e.pid)
            last_wake.pop(e.pid, None)
        elif e.name == "hrtimer_expire_entry":
            if not timer_function(e).startswith(NOT_WAKES):
                for pid in wfi:
                    last_wake[pid] = i
        elif e.name == "kvm_entry" and e.pid in wfi:
            wfi.discard(e.pid)
            w = last_wake.pop(e.pid, None)
            if w is None:
                continue
            ticks = [x for x in events[w + 1:i] if x.cpu == e.cpu
                     and x.name == "hrtimer_expire_entry"
                     and timer_function(x).startswith(TICKS)]
            out.append((e.pid, e.cpu, events[w], e.ts, ticks))
    return out


def wake_summary(paths):
    """Lines: per waking timer function, the wakeup paths' length (expiry
    to entry, us; kvm_vtimer's includes the wait for the deadline),
    median, p99 and max, of those that entered on the timer's CPU and on
    another (the vCPU thread moved meanwhile), each with and without a
    tick of the entering CPU inside; a line per group that has any."""
    out = []
    for fn in sorted({timer_function(p[2]) for p in paths}):
        for where, other in (("the timer's CPU", False), ("another CPU", True)):
            for label, tick in (("without", False), ("with", True)):
                us = sorted(round((c - w.ts) * 1e6) for _, cpu, w, c, t in paths
                            if timer_function(w) == fn and (cpu != w.cpu) == other
                            and bool(t) == tick)
                if us:
                    out.append(f"# wakeups by {fn} entering on {where}, {label} a tick of "
                               f"that CPU inside: {len(us)}, expiry to entry median "
                               f"{us[len(us) // 2]} us, p99 "
                               f"{us[min(len(us) - 1, len(us) * 99 // 100)]} us, max {us[-1]} us")
    return out


def window(events, start, end, pid, before=0.0002):
    """The events from BEFORE seconds ahead of START until END, as lines;
    hrtimer starts and cancels only of thread PID (others' are many)."""
    out = []
    for e in events:
        if not start - before <= e.ts <= end:
            continue
        if e.name in ("hrtimer_start", "hrtimer_cancel") and e.pid != pid:
            continue
        out.append(f"{e.ts:.6f} [{e.cpu}] {e.comm}-{e.pid} {e.flags} {e.name}: {e.detail[:140]}")
    return out


def late_runs(console, min_ms):
    """(backend, mode, workload, rep, [(index, ticks)]) for each kvt_bench
    run (bench.parse_console()), with its interrupts later than MIN_MS,
    in ticks of the run's own counter."""
    runs, _, _ = bench.parse_console(console)
    out = []
    for r in runs:
        min_ticks = min_ms * r["hz"] / 1000
        late = [(i, t) for i, t in enumerate(r.get("lateness", [])) if t > min_ticks]
        out.append((r["backend"], r["mode"], r["workload"], r["rep"], late))
    return out


def event_list(extra="", base=None):
    """BASE (default EVENTS) and the comma-separated EXTRA
    ("subsystem/event"), once each, in that order."""
    more = [e.strip() for e in extra.split(",") if e.strip()]
    for e in more:
        if not re.fullmatch(r"\w+/\w+", e):
            raise SystemExit(f"trace_bench: {e!r} is not subsystem/event")
    return list(dict.fromkeys((EVENTS if base is None else base) + more))


def steps(test, kvm_module, events=None):
    """The plan: the host's own setup (kvt.plan_steps(): kvm.ko),
    proactive compaction off as in a benchmark boot, the events (default
    EVENTS), kvt_bench traced, then the dump."""
    s = [st for st in kvt.plan_steps([], kvm_module) if st[0] and st[0].startswith("host.")]
    s += [(None, f"write {bench.COMPACTION_PROACTIVENESS} 0")]
    s += [(None, f"write {TRACEFS}/buffer_size_kb {BUFFER_KB}")]
    s += [(None, f"write {TRACEFS}/events/{ev}/enable 1") for ev in events or EVENTS]
    s += [(None, f"write {TRACEFS}/tracing_on 1"),
          (test["id"], f"run {test['timeout']} {test['id']} /bin/{' '.join(test['argv'])}"),
          (None, f"write {TRACEFS}/tracing_on 0"),
          (None, f"cat {TRACEFS}/per_cpu/cpu0/stats"),
          (None, f"cat {TRACEFS}/trace")]
    return s


def bench_argv(plan, config, mode, workload, reps, module_params=None):
    """kvt_bench's command line: MODE and WORKLOAD (each may be a
    comma-separated list), REPS repetitions, and kvm_vtimer's parameters
    as a benchmark run of CONFIG has them, unless MODULE_PARAMS is given."""
    params = bench.config_params(plan, config, module_params)
    return bench.bench_argv(reps, 0, [workload], params, [mode])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--mode", default="sbi", help="kvt_bench -m (default sbi)")
    ap.add_argument("--workload", default="migrate", help="kvt_bench -w (default migrate)")
    ap.add_argument("--reps", type=int, default=3, help="kvt_bench -r (default 3)")
    ap.add_argument("--gap-ms", type=float, default=10.0,
                    help="report stretches between guest entries longer than this")
    ap.add_argument("--module-params", default=None,
                    help="kvm_vtimer parameters for its runs, as bench.py takes them "
                         "(default: the config's bench_module_params, as a benchmark run)")
    ap.add_argument("--events", default="",
                    help="more trace events, comma-separated subsystem/event, e.g. "
                         "workqueue/workqueue_execute_start (what preempted a vCPU thread)")
    ap.add_argument("--light", action="store_true",
                    help="trace only guest entries and exits and hrtimer expiries (and "
                         "--events): the least added to a wakeup path")
    args = ap.parse_args(argv)
    events = event_list(args.events, LIGHT_EVENTS if args.light else None)
    plan = kvt.load_plan()
    cfg = plan["config"].get(args.config)
    if not cfg:
        ap.error(f"{args.config}: not a config of {kvt.PLAN}")
    test = {"id": "trace.bench", "timeout": 1500,
            "argv": bench_argv(plan, args.config, args.mode, args.workload, args.reps,
                               args.module_params)}
    prepared = kvt.prepare(cfg["arch"], [test], "trace")
    outdir = kvt.BUILD / f"trace-{args.config}"
    steps_ = steps(test, "kvm.ko" in prepared[3], events)
    b = kvt.boot(plan, args.config, prepared, [test], steps=steps_, outdir=outdir)
    bad = [r for r in b.results if r.status != "pass"]
    console = b.log_path.read_text(errors="replace").splitlines()
    events = parse_trace(console)
    report = [f"# {args.config}: {' '.join(test['argv'])}, {len(events)} events"]
    for backend, mode, wl, rep, late in late_runs(console, args.gap_ms / 2):
        report.append(f"# run {backend} {mode} {wl} rep {rep}: late interrupts "
                      f"(index, ticks) {late}")
    for pid, a, c in entry_gaps(events, args.gap_ms / 1000):
        report.append(f"## thread {pid}: no guest entry from {a:.6f} to {c:.6f} "
                      f"({(c - a) * 1000:.2f} ms)")
        report += window(events, a, c, pid)
    report += wake_summary(wake_paths(events))
    (outdir / "report.txt").write_text("".join(line + "\n" for line in report))
    print("\n".join(report))
    for r in bad:
        print(f"# trace_bench: {r.test}: {r.status} {r.note}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
