#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The timer benchmark: KVM's in-tree timer against kvm_vtimer.ko.

    bench.py [CONFIG...] [--reps N] [--irqs N] [--workloads W,...] [--out DIR]
             [--module-params NAME=VALUE] [--no-busy-gap] [--publish] [--strict]

Boots each benchmark config of selftests/plan.toml (those with
`bench = true`; default: all of them) one at a time, under the config's
-icount, with a plan that loads kvm.ko (RISC-V) and runs the kvt_bench
selftest once, in the timer modes of the config's `bench_modes` (-m).
kvt_bench does the interleaving itself: for each repetition, the in-tree
timer then ours (insmod, run, rmmod), each mode and workload in a fresh VM.
It prints one `# kvt-bench {json}` line per (rep, backend, mode, workload),
then `# kvt-bench-done`.  Then, in the same boot, kvt_busy_gap once per
repetition with the in-tree timer and once with ours (insmod, run, rmmod):
one `# kvt-busy-gap {json}` line per timer mode, the longest gap a running
guest sees between two counter reads around its deadlines.

Outputs, in DIR (default build/bench):
    bench.json         every run as kvt_bench and kvt_busy_gap printed it,
                       plus per (config, mode, workload, backend)
                       summaries, the ours/in-tree ratios and the goals
    lateness-cdf.svg   CDF of lateness per config x workload, both backends
and on stdout the ours/in-tree table, the busy-gap table and one line per
goal and (config, timer mode): met, MISSED or not measured, with its
figures, then a summary (Documentation/benchmarks.rst, Goals).
--publish copies the plot and an RST table to Documentation/bench/.

Exit status: 0 when the benchmark ran (whether or not the performance goals
were met; --strict makes a MISSED goal exit 1, not a goal without figures),
1 when it could not run (build or boot failed, kvt_bench failed or printed
nothing) or when any of our interrupts fired early (a correctness bug), 4
when kvt_bench is not built for any asked config.
"""

import argparse
import datetime
import json
import math
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from xml.sax.saxutils import escape

sys.path.insert(0, str(Path(__file__).resolve().parent))
import kvt  # noqa: E402

OUT = kvt.BUILD / "bench"
PUBLISH = kvt.ROOT / "Documentation" / "bench"
BENCH_BIN = "kvt_bench"
MODULE = "/lib/modules/kvm_vtimer.ko"
WORKLOADS = ("busy", "wfi", "storm", "past", "migrate")
OURS, BASE = "vtimer", "intree"
PREFIX = "# kvt-bench "
DONE = "# kvt-bench-done"
KSFT_SKIP = 4
# kvt_busy_gap: what a running guest loses around its deadlines (goal 0),
# run in the same boot, in-tree then ours, once per repetition.
GAP_BIN = "kvt_busy_gap"
GAP_PREFIX = "# kvt-busy-gap "
GAP_TIMEOUT = 120
GAP_MAX_DEADLINES = 1000
# The shipped figures goal 2 compares with.
BASELINE = kvt.ROOT / "Documentation" / "bench" / "baseline.toml"
# kvm_vtimer's default advance_max_ns (shim/common.c): the cap of goal 5.
ADVANCE_MAX_NS = 50000
# Wall seconds kvt_bench may take inside the emulated host (guest time of
# the emulated host, under -icount), per repetition and timer mode (both
# backends, every workload), plus a fixed part for the boot's start.
SECS_PER_REP = 240
SECS_FIXED = 120


# ---------------------------------------------------------------- parsing


def parse_console(console):
    """The runs kvt_bench printed on a console, as (runs, done, bad): the
    JSON objects, whether the end marker came, and the lines that began
    like ours but did not parse (a kernel message cut into one, say)."""
    runs, done, bad = [], False, []
    for raw in console:
        line = raw[4:] if raw.startswith("    ") else raw
        line = line.rstrip("\r")
        if line.startswith(DONE):
            done = True
        elif line.startswith(PREFIX):
            try:
                obj = json.loads(line[len(PREFIX):])
            except ValueError:
                bad.append(line)
                continue
            if not isinstance(obj, dict) or not {"backend", "workload"} <= obj.keys():
                bad.append(line)
                continue
            runs.append(obj)
    return runs, done, bad


# ---------------------------------------------------------------- statistics


def percentile(values, p):
    """Nearest-rank percentile: the smallest value with at least p% of the
    values at or below it.  None for no values."""
    if not values:
        return None
    s = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(s)))
    return s[min(rank, len(s)) - 1]


def per_irq(total, irqs):
    return None if total is None or not irqs else total / irqs


def run_irqs(run):
    """Interrupts of one run: its `irqs`, else how many lateness samples."""
    return run.get("irqs") or len(run.get("lateness") or [])


def run_early(run):
    """Early interrupts of one run: what kvt_bench counted, or the negative
    lateness samples if those are more."""
    lat = run.get("lateness") or []
    return max(run.get("early") or 0, sum(1 for t in lat if t < 0))


def run_module_ns(run, key):
    """A time in ns that kvm_vtimer counted over one run: `spin_ns`, host
    CPU time spent waiting for deadlines before guest entry, or
    `untrapped_ns`, time the vCPU spent in the guest with WFI untrapped, from
    each early entry to the next exit (the host CPU is the guest's there,
    even while it waits in WFI).  0 for the in-tree timer, which does
    neither; None if the module did not report it."""
    if run.get("backend") == BASE:
        return 0
    return (run.get("module") or {}).get(key)


def add_known(total, x):
    """TOTAL + X, where None (a run without the figure) makes the sum
    unknown for good."""
    return None if total is None or x is None else total + x


def summarize_group(runs):
    """One (config, workload, backend): lateness pooled over the reps, the
    counters per interrupt, and the per-rep spread."""
    lat, lat_ns, reps = [], [], []
    irqs = exits = ipis = guest_exits = 0
    starts = cancels = 0
    spin_ns = untrapped_ns = 0
    thread_run = thread_wait = 0
    no_hrtimer = False
    for r in sorted(runs, key=lambda r: r.get("rep", 0)):
        hz = r.get("hz") or 0
        rl = r.get("lateness") or []
        lat += rl
        if hz:
            lat_ns += [t * 1e9 / hz for t in rl]
        n = run_irqs(r)
        irqs += n
        exits += r.get("exits") or 0
        # The exits the guest asks for (SBI calls on RISC-V, HVCs on arm64,
        # WFI); the rest are host interrupts (its tick, IPIs) and, on arm64,
        # trapped timer registers.
        guest_exits += sum(r.get(k) or 0 for k in ("ecall_exits", "hvc_exits", "wfi_exits"))
        ipis += r.get("ipis") or 0
        if r.get("hrtimer_starts") is None or r.get("hrtimer_cancels") is None:
            no_hrtimer = True
        else:
            starts += r["hrtimer_starts"]
            cancels += r["hrtimer_cancels"]
        spin_ns = add_known(spin_ns, run_module_ns(r, "spin_ns"))
        untrapped_ns = add_known(untrapped_ns, run_module_ns(r, "untrapped_ns"))
        th = r.get("thread") or {}
        thread_run = add_known(thread_run, th.get("run_ns"))
        thread_wait = add_known(thread_wait, th.get("wait_ns"))
        reps.append({"rep": r.get("rep"), "p50": percentile(rl, 50),
                     "p99": percentile(rl, 99), "max": max(rl) if rl else None,
                     "early": run_early(r),
                     "exits_per_irq": per_irq(r.get("exits"), n),
                     "ipis_per_irq": per_irq(r.get("ipis"), n)})

    def spread(key):
        vals = [x[key] for x in reps if x[key] is not None]
        return [min(vals), max(vals)] if vals else None

    hrt = None if no_hrtimer else starts + cancels
    first = runs[0]
    return {
        "config": first.get("config"), "workload": first["workload"],
        "backend": first["backend"],
        "mode": ",".join(sorted({run_mode(r) for r in runs})),
        "hz": first.get("hz"), "reps": len(runs), "irqs": irqs,
        "samples": len(lat),
        "lateness_ticks": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                           "max": max(lat) if lat else None},
        "lateness_ns": {"p50": percentile(lat_ns, 50), "p99": percentile(lat_ns, 99),
                        "max": max(lat_ns) if lat_ns else None},
        "early": sum(run_early(r) for r in runs),
        # Interrupts after the last one, and runs kvt_bench gave up
        # waiting for (an interrupt lost): KVM's own timer only, else
        # kvt_bench fails.
        "extra": sum(r.get("extra") or 0 for r in runs),
        "lost": sum(1 for r in runs if r.get("lost")),
        "exits_per_irq": per_irq(exits, irqs),
        "guest_exits_per_irq": per_irq(guest_exits, irqs),
        "exits": exits,
        "ipis": ipis,
        "ipis_per_irq": per_irq(ipis, irqs),
        "hrtimer_starts_per_irq": None if no_hrtimer else per_irq(starts, irqs),
        "hrtimer_cancels_per_irq": None if no_hrtimer else per_irq(cancels, irqs),
        "hrtimer_ops_per_irq": per_irq(hrt, irqs),
        "spin_ns": spin_ns,
        # Host CPU time per interrupt spent waiting with interrupts off.
        "spin_us_per_irq": None if spin_ns is None else per_irq(spin_ns / 1000, irqs),
        "untrapped_ns": untrapped_ns,
        # Guest time per interrupt with WFI untrapped (direct_wfi).
        "untrapped_us_per_irq": (None if untrapped_ns is None
                                 else per_irq(untrapped_ns / 1000, irqs)),
        # The vCPU thread's time on a host CPU per interrupt (guest and
        # host side), and waiting runnable for one (its schedstat).
        "thread_us_per_irq": (None if thread_run is None
                              else per_irq(thread_run / 1000, irqs)),
        "thread_wait_us_per_irq": (None if thread_wait is None
                                   else per_irq(thread_wait / 1000, irqs)),
        "spread": {"p50": spread("p50"), "p99": spread("p99"), "max": spread("max"),
                   "exits_per_irq": spread("exits_per_irq")},
        "per_rep": reps,
    }


def workload_key(w):
    return (WORKLOADS.index(w) if w in WORKLOADS else len(WORKLOADS), w)


def run_mode(run):
    """The timer mode of one run, as kvt_bench prints it (its -m): "sstc"
    or "sbi" on RISC-V, "vtimer" or "ptimer" on arm64; "?" if the run does
    not say."""
    return str(run.get("mode") or "?")


def summarize(runs):
    """Summaries keyed (config, mode, workload, backend), in config, mode
    (as they came), workload and backend order."""
    groups = {}
    for r in runs:
        groups.setdefault((r.get("config"), run_mode(r), r["workload"], r["backend"]),
                          []).append(r)
    targets = list(dict.fromkeys((r.get("config"), run_mode(r)) for r in runs))
    order = sorted(groups, key=lambda k: (targets.index(k[:2]), workload_key(k[2]),
                                          k[3] != BASE, k[3]))
    return {k: summarize_group(groups[k]) for k in order}


def pairs(summary):
    """(config, mode, workload, in-tree summary or None, ours or None)."""
    seen = list(dict.fromkeys((c, m, w) for c, m, w, _ in summary))
    return [(c, m, w, summary.get((c, m, w, BASE)), summary.get((c, m, w, OURS)))
            for c, m, w in seen]


# ---------------------------------------------------------------- ratios, goals


def fmt_num(x):
    """A figure for the table: integers as such, others to 3 significant
    digits; None as n/a."""
    if x is None:
        return "n/a"
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.3g}"


def ratio(ours, base):
    """ours/in-tree as a number, or None when it has no value (a figure is
    missing or the in-tree one is 0)."""
    if ours is None or base is None or base == 0:
        return None
    return ours / base


def fmt_ratio(ours, base):
    """`0.42 (5/12)`; with a zero or missing figure just the two figures,
    e.g. `0/0`, `3/0`, `1.5/-` (no in-tree figure), or `n/a`."""
    if ours is None and base is None:
        return "n/a"
    if ours is None or base is None:
        return f"{'-' if ours is None else fmt_num(ours)}/{'-' if base is None else fmt_num(base)}"
    r = ratio(ours, base)
    if r is None:
        return f"{fmt_num(ours)}/{fmt_num(base)}"
    text = f"{r:.2f}" if abs(r) >= 0.01 else f"{r:.2g}"  # below 0.01: 2 digits
    return f"{text} ({fmt_num(ours)}/{fmt_num(base)})"


RATIO_COLS = (
    ("p50", lambda s: s["lateness_ticks"]["p50"]),
    ("p99", lambda s: s["lateness_ticks"]["p99"]),
    ("max", lambda s: s["lateness_ticks"]["max"]),
    ("exits/irq", lambda s: s["exits_per_irq"]),
    ("ipis/irq", lambda s: s["ipis_per_irq"]),
    ("hrtimer ops/irq", lambda s: s["hrtimer_ops_per_irq"]),
    ("spin us/irq", lambda s: s["spin_us_per_irq"]),
    ("untrapped us/irq", lambda s: s["untrapped_us_per_irq"]),
    ("thread us/irq", lambda s: s["thread_us_per_irq"]),
)


def ratio_rows(summary):
    """One row per (config, mode, workload): the figures of both backends
    and their ratio, for the JSON and the table."""
    rows = []
    for c, m, w, base, ours in pairs(summary):
        row = {"config": c, "mode": m, "workload": w,
               "reps": f"{ours['reps'] if ours else 0}/{base['reps'] if base else 0}"}
        for name, get in RATIO_COLS:
            o = get(ours) if ours else None
            b = get(base) if base else None
            row[name] = {"ours": o, "intree": b, "ratio": ratio(o, b),
                         "text": fmt_ratio(o, b)}
        rows.append(row)
    return rows


def table(rows):
    """The ours/in-tree table as text lines."""
    head, body = table_cells(rows)
    return text_table(head, body)


def table_cells(rows):
    head = ["config", "mode", "workload", "reps", *(n for n, _ in RATIO_COLS)]
    body = [[r["config"], r["mode"], r["workload"], r["reps"],
             *(r[n]["text"] for n, _ in RATIO_COLS)] for r in rows]
    return head, body


def text_table(head, body):
    """Columns padded to their widest cell, as text lines."""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return ["  ".join(x.ljust(wd) for x, wd in zip(line, widths)).rstrip()
            for line in (head, *body)]


def spread_lines(summary):
    """Per (config, mode, workload): min..max over the repetitions of each
    backend's per-rep p50 and p99, to judge the ratios by."""
    def mm(s, key):
        v = s and s["spread"][key]
        return f"{fmt_num(v[0])}..{fmt_num(v[1])}" if v else "-"

    head = ["config", "mode", "workload", "ours p50", "in-tree p50", "ours p99", "in-tree p99"]
    body = [[c, m, w, mm(o, "p50"), mm(b, "p50"), mm(o, "p99"), mm(b, "p99")]
            for c, m, w, b, o in pairs(summary)]
    return text_table(head, body)


def ours_early(summary):
    return sum(s["early"] for (_, _, _, b), s in summary.items() if b == OURS)


def faults(summary, backend):
    """Per (config, mode, workload) of BACKEND with extra interrupts or
    lost runs: `config/mode/workload: N extra, M lost runs` lines."""
    return [f"{c}/{m}/{w}: {s.get('extra', 0)} extra, {s.get('lost', 0)} lost "
            f"run{'s' if s.get('lost', 0) != 1 else ''}"
            for (c, m, w, b), s in summary.items()
            if b == backend and (s.get("extra") or s.get("lost"))]


# ---------------------------------------------------------------- busy gap


def parse_gap_lines(lines):
    """kvt_busy_gap's `# kvt-busy-gap {json}` records among a step's output
    lines, as (records, lines that began like one but did not parse)."""
    recs, bad = [], []
    for raw in lines:
        line = raw.rstrip("\r")
        if not line.startswith(GAP_PREFIX):
            continue
        try:
            obj = json.loads(line[len(GAP_PREFIX):])
        except ValueError:
            bad.append(line)
            continue
        if not isinstance(obj, dict) or not {"backend", "mode", "gap_max"} <= obj.keys():
            bad.append(line)
            continue
        recs.append(obj)
    return recs, bad


def summarize_gaps(gap_runs):
    """kvt_busy_gap per (config, mode, backend): the longest gap over all
    repetitions (goal 0's figure), the median of the per-rep medians, the
    module's spin per deadline (the guest's time lost to the advance; None
    for the in-tree timer, which has none, or a record without it), the
    runnable wait of the vCPU thread in the repetition of the longest gap
    (us; None without the record's "thread"), and the per-rep figures; gaps
    in counter ticks."""
    groups = {}
    for r in gap_runs:
        groups.setdefault((r.get("config"), run_mode(r), r["backend"]), []).append(r)
    targets = list(dict.fromkeys(k[:2] for k in groups))
    out = {}
    for k in sorted(groups, key=lambda k: (targets.index(k[:2]), k[2] != BASE, k[2])):
        rs = sorted(groups[k], key=lambda r: r.get("rep", 0))
        maxes = [r["gap_max"] for r in rs if r.get("gap_max") is not None]
        p50s = [r["gap_p50"] for r in rs if r.get("gap_p50") is not None]
        spun = [r for r in rs if r.get("spin_ns") is not None and r.get("deadlines")]
        spin_us = (sum(r["spin_ns"] for r in spun) / 1000 / sum(r["deadlines"] for r in spun)
                   if spun else None)
        worst = max((r for r in rs if r.get("gap_max") is not None),
                    key=lambda r: r["gap_max"], default=None)
        wait = worst and (worst.get("thread") or {}).get("wait_ns")
        wait_us = wait / 1000 if wait is not None else None
        out[k] = {"config": k[0], "mode": k[1], "backend": k[2], "hz": rs[0].get("hz"),
                  "reps": len(rs), "deadlines": sum(r.get("deadlines") or 0 for r in rs),
                  # Deadlines whose interrupt was pending before them: the
                  # in-tree timer's (counted); kvt_busy_gap fails on ours.
                  "early": sum(r.get("early") or 0 for r in rs),
                  "gap_max": max(maxes) if maxes else None,
                  "gap_p50": percentile(p50s, 50),
                  "spin_us_per_deadline": spin_us,
                  "wait_us_at_max": wait_us,
                  "spread": {"gap_max": [min(maxes), max(maxes)] if maxes else None,
                             "gap_p50": [min(p50s), max(p50s)] if p50s else None},
                  "per_rep": [{"rep": r.get("rep"), "gap_max": r.get("gap_max"),
                               "gap_p50": r.get("gap_p50")} for r in rs]}
    return out


def gap_pairs(gsum):
    """(config, mode, in-tree gap summary or None, ours or None)."""
    seen = list(dict.fromkeys((c, m) for c, m, _ in gsum))
    return [(c, m, gsum.get((c, m, BASE)), gsum.get((c, m, OURS))) for c, m in seen]


def gap_cells(gsum):
    """The busy-gap table: per (config, mode), ours / in-tree."""
    def mm(s):
        v = s and s["spread"]["gap_max"]
        return f"{fmt_num(v[0])}..{fmt_num(v[1])}" if v else "-"

    def fig(s, key):
        v = s and s.get(key)
        return "-" if v is None else fmt_num(v)

    head = ["config", "mode", "reps", "gap max", "gap p50", "spin us/deadline",
            "wait us at max", "ours max per rep", "in-tree max per rep"]
    body = []
    for c, m, b, o in gap_pairs(gsum):
        body.append([c, m, f"{o['reps'] if o else 0}/{b['reps'] if b else 0}",
                     fmt_ratio(o and o["gap_max"], b and b["gap_max"]),
                     fmt_ratio(o and o["gap_p50"], b and b["gap_p50"]),
                     f"{fig(o, 'spin_us_per_deadline')}/{'0' if b else '-'}",
                     f"{fig(o, 'wait_us_at_max')}/{fig(b, 'wait_us_at_max')}", mm(o), mm(b)])
    return head, body


# ---------------------------------------------------------------- goals
#
# Issue 13's goals, judged per (config, timer mode), ours against the
# in-tree timer of the same boot.  Each goal is a list of checks; a check
# is met (True), missed (False) or not measured (None: a figure it needs is
# missing).  A goal is MISSED if any check is missed, else not measured if
# any check is not measured (or it has none), else met: missing data never
# counts as met.  --strict fails on MISSED only.

MET, MISSED, NOT_MEASURED = "met", "MISSED", "not measured"
DIRECT, EMULATED = "direct", "emulated"
GOAL_NAMES = {
    0: "busy gap",
    1: "direct timer",
    2: "emulated timer",
    3: "migrate",
    4: "exits and IPIs",
    5: "spin cost",
    6: "no early",
}
# Goal 1: a blocked vCPU's p50 within this many ticks of a running one's,
# its p99 within this factor.
WFI_P50_SLACK = 2
WFI_P99_FACTOR = 2
# Goal 3: migrate p99 at most this fraction of the in-tree timer's.
MIGRATE_P99_FACTOR = 0.5


def check(what, ok, detail):
    return {"what": what, "met": ok, "detail": detail}


def lat(s, key):
    return s["lateness_ticks"][key] if s else None


def at_most(what, ours, limit, detail):
    """ours <= limit, or not measured if either figure is missing."""
    ok = None if ours is None or limit is None else ours <= limit
    return check(what, ok, detail)


def counts_check(what, ours, base, key, count):
    """An event count per interrupt, ours <= in-tree's; a difference of
    rare events within counting noise counts as met (noted).  The noise is
    judged over as many interrupts: the in-tree count scaled to ours where
    the two differ (a run the in-tree timer lost)."""
    o = ours[key] if ours else None
    b = base[key] if base else None
    detail = f"{what} ours {fmt_num(o)} vs in-tree {fmt_num(b)}"
    ok = None if o is None or b is None else o <= b
    if ok is False:
        oc, bc = ours.get(count), base.get(count)
        oi, bi = ours.get("irqs"), base.get("irqs")
        scaled = bc is not None and oi and bi and oi != bi
        if scaled:
            bc = round(bc * oi / bi)
        if within_noise(oc, bc):
            ok = True
            detail += (f" (within counting noise: {oc} against {bc}"
                       + (f", in-tree scaled to {oi} interrupts" if scaled else "") + ")")
    return check(what, ok, detail)


def within_noise(ours, base):
    """Whether two event counts over the same number of interrupts differ
    by less than twice the Poisson spread of the larger (small counts of
    rare events, such as a few IPIs in a thousand interrupts)."""
    if ours is None or base is None:
        return False
    return abs(ours - base) <= 2 * math.sqrt(max(ours, base, 1))


def goal_status(checks):
    mets = [c["met"] for c in checks]
    if False in mets:
        return MISSED
    if not mets or None in mets:
        return NOT_MEASURED
    return MET


def baseline_ticks(fig, hz):
    """A baseline figure in ticks of the current run's counter (the same
    unless the baseline's frequency differs)."""
    if fig is None or not hz or not fig.get("hz") or fig["hz"] == hz:
        return fig
    return {k: (v * hz / fig["hz"] if isinstance(v, (int, float)) and k != "hz" else v)
            for k, v in fig.items()}


def goal_checks(n, c, m, kind, S, G, baseline, cap_ns):
    """The checks of goal N for config C, mode M (of KIND), or None where
    the goal does not apply.  S(workload, backend) is a kvt_bench summary,
    G(backend) a kvt_busy_gap one, either None if not measured."""
    if n == 0:
        o, b = G(OURS), G(BASE)
        og, bg = o and o["gap_max"], b and b["gap_max"]
        detail = (f"longest gap ours {fmt_num(og)} vs in-tree {fmt_num(bg)} ticks"
                  if og is not None or bg is not None else "no kvt_busy_gap figures")
        if og is not None and bg is not None:
            detail += (f", over {o['deadlines']} and {b['deadlines']} deadlines; p50 "
                       f"{fmt_num(o['gap_p50'])} vs {fmt_num(b['gap_p50'])}")
            if o.get("spin_us_per_deadline") is not None:
                detail += f"; ours spun {fmt_num(o['spin_us_per_deadline'])} us per deadline"
        return [at_most("busy gap", og, bg, detail)]
    # Goal 1 is the direct timers', goal 2 the emulated ones'.
    kind_of_goal = {1: DIRECT, 2: EMULATED}.get(n)
    if kind_of_goal:
        if kind not in (DIRECT, EMULATED):
            return [check("timer kind", None,
                          f"mode {m} is not in {c}'s bench_modes (selftests/plan.toml)")]
        if kind != kind_of_goal:
            return None
    if n == 1:
        busy, wfi, wfi_b = S("busy", OURS), S("wfi", OURS), S("wfi", BASE)
        bp50, bp99 = lat(busy, "p50"), lat(busy, "p99")
        wp50, wp99 = lat(wfi, "p50"), lat(wfi, "p99")
        out = [at_most("wfi p50", wp50, None if bp50 is None else bp50 + WFI_P50_SLACK,
                       f"wfi p50 {fmt_num(wp50)} vs busy p50 {fmt_num(bp50)} "
                       f"+ {WFI_P50_SLACK}"),
               at_most("wfi p99", wp99, None if bp99 is None else bp99 * WFI_P99_FACTOR,
                       f"wfi p99 {fmt_num(wp99)} vs {WFI_P99_FACTOR}x busy p99 "
                       f"{fmt_num(bp99)}")]
        ours = [S(w, OURS) for w in WORKLOADS]
        have = [s for s in ours if s]
        early = sum(s["early"] for s in have)
        out.append(check("early", None if not have else early == 0,
                         f"{early} early of ours in {sum(s['irqs'] for s in have)}"
                         if have else "no runs of ours"))
        out.append(counts_check("wfi exits/irq", wfi, wfi_b, "exits_per_irq", "exits"))
        return out
    if n == 2:
        out = []
        for w in WORKLOADS:
            o, b = S(w, OURS), S(w, BASE)
            ship = baseline.get((c, m, w))
            ship = baseline_ticks(ship and ship.get("ours"), o and o.get("hz"))
            for key in ("p50", "p99"):
                ref = ship and ship.get(key)
                what = f"{w} {key}" if ref is not None else f"shipped {w} {key}"
                out.append(at_most(what, lat(o, key), ref,
                                   f"{w} {key} {fmt_num(lat(o, key))} vs shipped "
                                   f"{fmt_num(ref) if ref is not None else '-'}"))
            out.append(at_most(f"{w} max", lat(o, "max"), lat(b, "max"),
                               f"{w} max {fmt_num(lat(o, 'max'))} vs in-tree "
                               f"{fmt_num(lat(b, 'max'))}"))
        return out
    if n == 3:
        o, b = S("migrate", OURS), S("migrate", BASE)
        bp99 = lat(b, "p99")
        return [at_most("migrate p99", lat(o, "p99"),
                        None if bp99 is None else bp99 * MIGRATE_P99_FACTOR,
                        f"p99 {fmt_num(lat(o, 'p99'))} vs {MIGRATE_P99_FACTOR}x in-tree "
                        f"{fmt_num(bp99)}"),
                at_most("migrate max", lat(o, "max"), lat(b, "max"),
                        f"max {fmt_num(lat(o, 'max'))} vs in-tree {fmt_num(lat(b, 'max'))}")]
    if n == 4:
        out = []
        for w in WORKLOADS:
            o, b = S(w, OURS), S(w, BASE)
            out.append(counts_check(f"{w} exits/irq", o, b, "exits_per_irq", "exits"))
            out.append(counts_check(f"{w} ipis/irq", o, b, "ipis_per_irq", "ipis"))
        return out
    if n == 5:
        out = []
        cap_us = cap_ns / 1000
        for w in WORKLOADS:
            o, b = S(w, OURS), S(w, BASE)
            ou = o and o["spin_us_per_irq"]
            bu = b and b["spin_us_per_irq"]
            out.append(at_most(f"{w} spin us/irq", ou, cap_us,
                               f"{w} spin us/irq ours {fmt_num(ou)} vs in-tree "
                               f"{fmt_num(bu)} (cap {fmt_num(cap_us)})"))
        return out
    if n == 6:
        # Ours only: an early interrupt of KVM's own timer is an in-tree bug
        # (kvt_bench records them), shown beside ours but not our miss.
        out = []
        for w in WORKLOADS:
            s, b = S(w, OURS), S(w, BASE)
            base = f", in-tree {b['early']} of {b['irqs']}" if b else ""
            out.append({**check(f"{w} ours early", None if not s else s["early"] == 0,
                                f"{w} ours {s['early']} early of {s['irqs']}{base}" if s
                                else f"{w} ours -"),
                        "backend": OURS, "irqs": s["irqs"] if s else 0,
                        "base_early": b["early"] if b else 0, "base_irqs": b["irqs"] if b else 0})
        return out
    raise ValueError(n)


def evaluate_goals(summary, gsum, targets, baseline=None, cap_ns=None):
    """Every goal of every (config, mode) in TARGETS ({(config, mode):
    "direct", "emulated" or None if unknown}), in goal then target order:
    {"goal", "name", "config", "mode", "kind", "status", "checks",
    "detail"}.  BASELINE maps (config, mode, workload) to the shipped
    figures (load_baseline()); CAP_NS is the advance cap of the runs."""
    baseline = baseline or {}
    cap_ns = ADVANCE_MAX_NS if cap_ns is None else cap_ns
    out = []
    for n, name in GOAL_NAMES.items():
        for (c, m), kind in targets.items():
            checks = goal_checks(
                n, c, m, kind,
                lambda w, b, c=c, m=m: summary.get((c, m, w, b)),
                lambda b, c=c, m=m: gsum.get((c, m, b)),
                baseline, cap_ns)
            if checks is None:
                continue
            status = goal_status(checks)
            ran = any(k[:2] == (c, m) for k in summary)
            out.append({"goal": n, "name": name, "config": c, "mode": m, "kind": kind,
                        "status": status, "checks": checks,
                        "detail": goal_detail(n, status, checks, ran)})
    return out


def goal_detail(n, status, checks, ran=True):
    """The figures a goal's line shows: all of them when met, else the
    checks that decided it (missed, or not measured).  RAN: whether
    kvt_bench ran in this config and mode at all."""
    if (status == NOT_MEASURED and not ran and len(checks) > 1
            and all(c["met"] is None for c in checks)):
        return "no kvt_bench figures for this config and mode"
    if status == MET and n == 6:
        ours = sum(c["irqs"] for c in checks)
        early = sum(c["base_early"] for c in checks)
        base = sum(c["base_irqs"] for c in checks)
        return (f"none in {ours} interrupts of ours"
                + (f" (in-tree: {early} early of {base})" if early else f", {base} of in-tree"))
    if status == MET:
        shown = checks
    else:
        want = False if status == MISSED else None
        shown = [c for c in checks if c["met"] is want]
    if status == NOT_MEASURED and len(shown) > 2:
        return f"no figures for {', '.join(c['what'] for c in shown)}"
    return "; ".join(c["detail"] for c in shown) or "no checks"


def goal_lines(gs):
    """`goal N (name) config/mode: met|MISSED|not measured (figures)`."""
    return [f"goal {g['goal']} ({g['name']}) {g['config']}/{g['mode']}: {g['status']} "
            f"({g['detail']})" for g in gs]


def goal_summary(gs):
    counts = {s: sum(g["status"] == s for g in gs) for s in (MET, MISSED, NOT_MEASURED)}
    line = (f"goals: {counts[MET]} met, {counts[MISSED]} MISSED, "
            f"{counts[NOT_MEASURED]} not measured")
    missed = [f"{g['goal']} {g['config']}/{g['mode']}" for g in gs if g["status"] == MISSED]
    if missed:
        line += f"; missed: {', '.join(missed)}"
    return {"counts": counts, "line": line + " (--strict fails on MISSED only)"}


def goal_targets(plan, names, runs=(), gap_runs=(), declared=False):
    """{(config, mode): kind}: each mode in selftests/plan.toml's
    `bench_modes` of the configs NAMES (with DECLARED, of every config
    that has them, benchmarked or not: those are not measured), then any
    other (config, mode) the results have, of unknown kind."""
    cfgs = list(names)
    if declared:
        cfgs += [n for n, c in plan["config"].items() if c.get("bench_modes") and n not in cfgs]
    out = {}
    for n in cfgs:
        for m, kind in plan["config"].get(n, {}).get("bench_modes", {}).items():
            out[(n, m)] = kind
    for r in [*runs, *gap_runs]:
        out.setdefault((r.get("config"), run_mode(r)), None)
    return out


def load_baseline(path=None):
    """The shipped figures goal 2 compares with (Documentation/bench/
    baseline.toml), as {(config, mode, workload): {"ours": {...},
    "intree": {...}}}, each figure dict with its counter "hz"; and the
    file's provenance."""
    path = Path(path or BASELINE)
    if not path.exists():
        return {}, {}
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    figs = {}
    for fig in doc.get("figure", []):
        hz = fig.get("hz", doc.get("hz"))
        figs[(fig["config"], fig["mode"], fig["workload"])] = {
            b: dict(fig[b], hz=hz) for b in ("ours", "intree") if b in fig}
    meta = {k: v for k, v in doc.items() if k != "figure"}
    meta["path"] = str(path.relative_to(kvt.ROOT) if path.is_relative_to(kvt.ROOT) else path)
    return figs, meta


def config_params(plan, name, cli=""):
    """The module parameter of config NAME's runs: --module-params if
    given, else the config's `bench_module_params` (selftests/plan.toml),
    else none."""
    return cli or plan["config"][name].get("bench_module_params", "")


def advance_cap_ns(params):
    """advance_max_ns of our runs: from --module-params if set there, else
    the module's default."""
    name, _, value = params.partition("=")
    if name == "advance_max_ns" and value.strip().isdigit():
        return int(value)
    return ADVANCE_MAX_NS


# ---------------------------------------------------------------- plot


def symlog(x):
    return math.copysign(math.log10(1 + abs(x)), x)


def tick_label(v):
    a = abs(v)
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if a >= div:
            return f"{'-' if v < 0 else ''}{a / div:g}{suf}"
    return f"{v:g}"


def cdf_points(values):
    """(x, fraction at or below x) at each distinct value."""
    s = sorted(values)
    pts = []
    for i, v in enumerate(s):
        if pts and pts[-1][0] == v:
            pts[-1] = (v, (i + 1) / len(s))
        else:
            pts.append((v, (i + 1) / len(s)))
    return pts


# The plot's y: -log10(1 - F), so that 0.9, 0.99 and 0.999 are equally
# spaced and a p99 difference is as visible as a p50 one; capped at 0.999.
TAIL_MAX = 3.0


def tail(f):
    return min(TAIL_MAX, -math.log10(max(1e-12, 1 - f)))


COLORS = {BASE: "#d95f02", OURS: "#1b62a5"}
LABELS = {BASE: "in-tree", OURS: "ours (kvm_vtimer)"}


def svg_plot(summary, runs, title=""):
    """An SVG of the lateness CDFs: one panel per (config, mode, workload),
    x in ticks on a symmetric log scale, both backends.  No dependencies."""
    lat = {}
    for r in runs:
        lat.setdefault((r.get("config"), run_mode(r), r["workload"], r["backend"]),
                       []).extend(r.get("lateness") or [])
    configs = list(dict.fromkeys((c, m) for c, m, _, _ in summary))
    works = sorted({w for _, _, w, _ in summary}, key=workload_key)
    pw, ph = 250, 190          # panel
    ml, mr, mt, mb = 40, 12, 22, 50   # margins inside a panel
    top = 48
    width = max(1, len(works)) * pw + 10
    height = top + max(1, len(configs)) * ph + 10
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
         f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="10">',
         f'<rect width="{width}" height="{height}" fill="white"/>',
         f'<text x="8" y="16" font-size="13">{escape(title or "lateness CDF")}</text>']
    lx = 8
    for b in (BASE, OURS):
        o.append(f'<line x1="{lx}" y1="32" x2="{lx + 20}" y2="32" stroke="{COLORS[b]}" '
                 f'stroke-width="2"/>')
        o.append(f'<text x="{lx + 24}" y="35">{escape(LABELS[b])}</text>')
        lx += 150
    o.append(f'<text x="{lx}" y="35">x: lateness in ticks (symmetric log); '
             f'y: fraction of interrupts at or below x (tail stretched: '
             f'0.9, 0.99, 0.999 equally spaced)</text>')
    if not summary:
        o.append('<text x="8" y="70">no results</text>')
    for ci, (c, m) in enumerate(configs):
        for wi, w in enumerate(works):
            x0, y0 = 5 + wi * pw, top + ci * ph
            px, py, iw, ih = x0 + ml, y0 + mt, pw - ml - mr, ph - mt - mb
            o.append(f'<text x="{px}" y="{y0 + 14}" font-weight="bold">'
                     f'{escape(str(c))} ({escape(m)}) / {escape(w)}</text>')
            series = {b: lat.get((c, m, w, b), []) for b in (BASE, OURS)}
            vals = [v for s in series.values() for v in s]
            if not vals:
                o.append(f'<text x="{px + 10}" y="{py + ih / 2}">no data</text>')
                continue
            # Axis ends on decades: 0 or -10^k on the left, 10^k on the right.
            e_lo = min(0, math.floor(symlog(min(vals))))
            e_hi = max(1, math.ceil(symlog(max(vals))))
            lo = symlog(-10 ** -e_lo) if e_lo < 0 else 0.0
            hi = symlog(10 ** e_hi)

            def sx(v, lo=lo, hi=hi, px=px, iw=iw):
                return px + (symlog(v) - lo) / (hi - lo) * iw

            def sy(f, py=py, ih=ih):
                return py + ih - tail(f) / TAIL_MAX * ih

            o.append(f'<rect x="{px}" y="{py}" width="{iw}" height="{ih}" fill="none" '
                     f'stroke="#999"/>')
            for f in (0, 0.5, 0.9, 0.99, 0.999):
                y = sy(f)
                o.append(f'<line x1="{px}" y1="{y:.1f}" x2="{px + iw}" y2="{y:.1f}" '
                         f'stroke="#ddd"/>')
                o.append(f'<text x="{px - 3}" y="{y + 3:.1f}" text-anchor="end">{f:g}</text>')
            for e in range(e_lo, e_hi + 1):
                v = 0 if e == 0 else math.copysign(10 ** abs(e), e)
                x = sx(v)
                o.append(f'<line x1="{x:.1f}" y1="{py}" x2="{x:.1f}" y2="{py + ih}" '
                         f'stroke="#eee"/>')
                o.append(f'<text x="{x:.1f}" y="{py + ih + 12}" text-anchor="middle">'
                         f'{tick_label(v)}</text>')
            for b, s in series.items():
                if not s:
                    continue
                pts, prev = [], 0.0
                for v, f in cdf_points(s):
                    pts += [(sx(v), sy(prev)), (sx(v), sy(f))]
                    prev = f
                pts.append((px + iw, sy(prev)))
                o.append(f'<polyline fill="none" stroke="{COLORS[b]}" stroke-width="1.5" '
                         f'points="{" ".join(f"{x:.1f},{y:.1f}" for x, y in pts)}"/>')
            y = py + ih + 26
            for b in (OURS, BASE):
                sm = summary.get((c, m, w, b))
                if sm:
                    t = sm["lateness_ticks"]
                    o.append(f'<text x="{px}" y="{y}" font-size="9" fill="{COLORS[b]}">'
                             f'{"ours" if b == OURS else "in-tree"}: p50 {fmt_num(t["p50"])}'
                             f' p99 {fmt_num(t["p99"])} max {fmt_num(t["max"])} '
                             f'early {sm["early"]}</text>')
                    y += 11
    o.append("</svg>")
    return "\n".join(o) + "\n"


# ---------------------------------------------------------------- outputs


def rst_grid(head, body):
    """An RST simple table."""
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    rule = "  ".join("=" * w for w in widths)

    def fmt(line):
        return "  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()

    return [rule, fmt(head), rule, *map(fmt, body), rule]


def rst_table(rows, gs, meta, gsum=None):
    """Documentation/bench/results.rst: the command, the ratio table, the
    busy-gap table and the goals, as RST."""
    out = [".. SPDX-License-Identifier: GPL-2.0",
           "",
           ".. Generated by scripts/bench.py --publish; do not edit.",
           "",
           f"Made by ``{meta['command']}`` on {meta['date']} (git {meta['git']}), "
           f"{meta['reps']} repetition{'s' if meta['reps'] != 1 else ''} of "
           f"{meta['irqs'] or 'the default number of'} interrupts per workload, "
           f"{meta.get('qemu_version', 'QEMU')}"
           + (f", host kernels from Debian {kvt.LINUX_SOURCE} {meta['linux_source']}"
              if meta.get("linux_source") else "") + ".",
           ""]
    for c, info in meta["configs"].items():
        out.append(f"- {c}: ``{' '.join(info['qemu'])}``, ``-icount {info['icount']}``")
    out += ["", "Ratios ours / in-tree (lateness in ticks; figures in brackets):", "",
            *rst_grid(*table_cells(rows))]
    if gsum:
        out += ["", "Busy gap (``kvt_busy_gap``): the longest gap between two counter "
                "reads of a running guest around its deadlines, in ticks, ours / in-tree:",
                "", *rst_grid(*gap_cells(gsum))]
    out += ["", "Goals (``Documentation/benchmarks.rst``, Goals):", ""]
    out += [f"- {line}" for line in goal_lines(gs)]
    out += ["", goal_summary(gs)["line"]]
    return "\n".join(out) + "\n"


def qemu_version(binary):
    try:
        res = subprocess.run([binary, "--version"], capture_output=True, text=True)
        return res.stdout.splitlines()[0].strip() if res.stdout else binary
    except OSError:
        return binary


def git_rev():
    try:
        res = subprocess.run(["git", "-C", str(kvt.ROOT), "describe", "--always", "--dirty"],
                             capture_output=True, text=True)
        return res.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write_outputs(out, runs, meta, boots, gap_runs=(), targets=None, baseline=None,
                  cap_ns=None):
    """bench.json and lateness-cdf.svg in OUT; returns (summary, rows,
    goals, busy-gap summary).  TARGETS ({(config, mode): kind}) defaults
    to what the results have; BASELINE to Documentation/bench/baseline.toml."""
    summary = summarize(runs)
    rows = ratio_rows(summary)
    gsum = summarize_gaps(gap_runs)
    if targets is None:
        names = list(dict.fromkeys(r.get("config") for r in [*runs, *gap_runs]))
        targets = goal_targets(kvt.load_plan(), names, runs, gap_runs)
    figs, base_meta = load_baseline() if baseline is None else baseline
    gs = evaluate_goals(summary, gsum, targets, figs, cap_ns)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "boots": boots, "runs": runs,
           "summary": list(summary.values()), "ratios": rows,
           "busy_gap": {"runs": list(gap_runs), "summary": list(gsum.values())},
           "baseline": base_meta, "goals": gs, "goal_summary": goal_summary(gs)["counts"]}
    (out / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "lateness-cdf.svg").write_text(
        svg_plot(summary, runs, f"kvm_vtimer benchmark: lateness CDF ({meta['date']}, "
                                f"git {meta['git']})"))
    return summary, rows, gs, gsum


def print_report(summary, rows, gs, out, gsum=None, meta=None):
    if meta and "linux_source" in meta:
        print(f"# host kernels: Debian {kvt.LINUX_SOURCE} "
              f"{meta['linux_source'] or '(not installed)'}")
    print("# benchmark: ours (kvm_vtimer) / in-tree; lateness in timer ticks")
    for line in table(rows):
        print(f"  {line}")
    print("# spread over the repetitions: min..max of the per-rep lateness p50, p99")
    for line in spread_lines(summary):
        print(f"  {line}")
    if gsum:
        print("# busy gap (kvt_busy_gap): longest gap between two counter reads "
              "around a deadline, ticks, ours / in-tree")
        for line in text_table(*gap_cells(gsum)):
            print(f"  {line}")
    for line in faults(summary, BASE):
        print(f"# in-tree timer: {line} (kvt_bench gives up a run after its "
              "time; Documentation/benchmarks.rst)")
    for g in (gsum or {}).values():
        if g["backend"] == BASE and g.get("early"):
            print(f"# in-tree timer: {g['config']}/{g['mode']}/busy gap: {g['early']} of "
                  f"{g['deadlines']} deadlines early (Documentation/benchmarks.rst, "
                  "Faults of KVM's timer)")
    print("# goals (Documentation/benchmarks.rst, Goals)")
    for line in goal_lines(gs):
        print(f"  {line}")
    print(f"# {goal_summary(gs)['line']}")
    print(f"# outputs: {out / 'bench.json'}, {out / 'lateness-cdf.svg'}")


# ---------------------------------------------------------------- boots


def bench_configs(plan):
    return [n for n, c in plan["config"].items() if c.get("bench")]


def bench_argv(reps, irqs, workloads, params="", modes=()):
    argv = [BENCH_BIN, "-k", MODULE, "-r", str(reps)]
    if modes:
        argv += ["-m", ",".join(modes)]
    if params:
        # /plan lines split at blanks: one parameter, e.g. advance_max_ns=0.
        if any(c.isspace() for c in params):
            raise SystemExit("bench: --module-params takes one NAME=VALUE, no blanks")
        argv += ["-o", params]
    if irqs:
        argv += ["-n", str(irqs)]
    if workloads:
        argv += ["-w", ",".join(workloads)]
    return argv


def bench_modes(plan, name):
    """The timer modes config NAME declares (`bench_modes`), in order."""
    return list(plan["config"][name].get("bench_modes", {}))


def bench_test(plan, name, reps, irqs, workloads, params="", timeout=0):
    """The kvt_bench step of config NAME: in each of its timer modes, with
    TIMEOUT seconds (default SECS_FIXED + SECS_PER_REP per repetition and
    mode)."""
    modes = bench_modes(plan, name)
    return {"id": BENCH_BIN,
            "argv": bench_argv(reps, irqs, workloads, params, modes),
            "timeout": timeout or SECS_FIXED + SECS_PER_REP * reps * max(1, len(modes))}


# Proactive compaction: kcompactd wakes every 500 ms to score the host's
# fragmentation, and compacts for a millisecond or more, on whichever CPU
# its timer is, the vCPU's too.  Its period is about a repetition's (one
# run of each timer), so it kept falling on the same timer's runs: with it
# on, 13 of 100 riscv-sstc busy/storm runs of ours waited runnable over
# 1 ms, none of the in-tree timer's; off, 3 of 60 and none
# (Documentation/benchmarks.rst, "Background work on the vCPU's CPU").
# Off in a benchmark boot.
COMPACTION_PROACTIVENESS = "/proc/sys/vm/compaction_proactiveness"


def bench_steps(test, kvm_module, gaps=(), params=""):
    """The plan of a benchmark boot: the host's own setup steps of
    kvt.plan_steps (kvm.ko), proactive compaction off, kvt_bench once,
    then the kvt_busy_gap runs GAPS (gap_tests()), each of ours between an
    insmod (with PARAMS) and an rmmod of kvm_vtimer."""
    setup = [s for s in kvt.plan_steps([], kvm_module) if s[0] and s[0].startswith("host.")]
    tid = f"bench.{test['id']}"
    steps = [*setup, (None, f"write {COMPACTION_PROACTIVENESS} 0"), (None, "phase bench"),
             (tid, f"run {test['timeout']} {tid} /bin/{' '.join(test['argv'])}")]
    for g in gaps:
        tid = f"bench.{g['id']}"
        if g["backend"] == OURS:
            ins = f"bench.insmod.{g['rep']}"
            steps.append((ins, f"insmod 60 {ins} {MODULE} {params}".rstrip()))
        steps.append((tid, f"run {g['timeout']} {tid} /bin/{' '.join(g['argv'])}"))
        if g["backend"] == OURS:
            rm = f"bench.rmmod.{g['rep']}"
            steps.append((rm, f"rmmod 60 {rm} kvm_vtimer"))
    return steps


def gap_tests(reps, irqs=0, timeout=GAP_TIMEOUT):
    """kvt_busy_gap's runs of a benchmark boot: per repetition the in-tree
    timer, then ours; with IRQS, that many deadlines per mode (at most
    GAP_MAX_DEADLINES), else its default."""
    argv = [GAP_BIN]
    if irqs:
        argv += ["-n", str(min(irqs, GAP_MAX_DEADLINES))]
    return [{"id": f"{GAP_BIN}.{rep}.{backend}", "argv": argv, "timeout": timeout,
             "rep": rep, "backend": backend}
            for rep in range(reps) for backend in (BASE, OURS)]


def has_prog(selftests, name=BENCH_BIN):
    return any(Path(selftests).rglob(name))


def has_bench(selftests):
    return has_prog(selftests, BENCH_BIN)


def gap_results(name, console, gaps):
    """kvt_busy_gap's records of one boot's console, by step, as (records,
    problems); each record with its config and repetition."""
    output = kvt.split_output(kvt.mend_console(console))
    recs, problems = [], []
    for g in gaps:
        got, bad = parse_gap_lines(output.get(f"bench.{g['id']}", []))
        if bad:
            problems.append(f"{name}: {len(bad)} kvt-busy-gap lines of {g['id']} did not "
                            f"parse, e.g. {bad[0][:120]}")
        for r in got:
            if r["backend"] != g["backend"]:
                problems.append(f"{name}: {g['id']} ran with {r['backend']}, "
                                f"not {g['backend']}")
                continue
            recs.append({**r, "config": name, "rep": g["rep"]})
    return recs, problems


def bench_boot(plan, name, prepared, test, echo, outdir=None, gaps=(), params=""):
    """Boot NAME with the benchmark plan, its console etc. in OUTDIR
    (default build/runs/bench-NAME); (kvt_bench runs, kvt_busy_gap
    records, boot record, problems)."""
    steps = bench_steps(test, "kvm.ko" in prepared[3], gaps, params)
    b = kvt.boot(plan, name, prepared, [test, *gaps], echo=echo, steps=steps,
                 outdir=outdir or kvt.BUILD / "runs" / f"bench-{name}")
    console = b.log_path.read_text(errors="replace").splitlines()
    runs, done, bad = parse_console(console)
    for r in runs:
        r["config"] = name
    gap_runs, problems = gap_results(name, console, gaps)
    problems = [f"{r.config}/{r.test}: {r.status} {r.note}".strip()
                for r in b.results if r.status not in ("pass", "skip")] + problems
    skipped = [r for r in b.results if r.status == "skip"]
    bench_skipped = any(r.test == f"bench.{test['id']}" for r in skipped)
    if bad:
        problems.append(f"{name}: {len(bad)} kvt-bench lines did not parse, e.g. {bad[0][:120]}")
    if not done and not bench_skipped:
        problems.append(f"{name}: kvt_bench did not print {DONE!r}")
    if not runs and not bench_skipped:
        problems.append(f"{name}: no kvt-bench results")
    record = {"config": name, "wall": round(b.wall, 1), "console": str(b.log_path),
              "results": [{"test": r.test, "status": r.status, "note": r.note}
                          for r in b.results]}
    for r in skipped:
        kvt.log(f"bench: {name}: {r.test} skipped: {r.note}")
    return runs, gap_runs, record, problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", help="plan configs (default: all with bench = true)")
    ap.add_argument("--reps", type=int, default=5, help="ABAB repetitions (default 5)")
    ap.add_argument("--irqs", type=int, default=0,
                    help="interrupts per run (default: kvt_bench's own)")
    ap.add_argument("--module-params", default="",
                    help="one kvm_vtimer parameter for its runs, e.g. advance_max_ns=0 "
                    "(default: each config's bench_module_params)")
    ap.add_argument("--workloads", default="",
                    help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--timeout", type=int, default=0,
                    help=f"seconds for kvt_bench per boot (default "
                         f"{SECS_FIXED} + {SECS_PER_REP} per rep and timer mode)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    ap.add_argument("--publish", action="store_true",
                    help="copy the plot and an RST table to Documentation/bench/")
    ap.add_argument("--strict", action="store_true",
                    help="exit 1 if any measured goal is MISSED; goals not measured "
                         "(a figure missing, e.g. the busy gap with --no-busy-gap, or a "
                         "config or timer mode without runs) are listed but do not fail")
    ap.add_argument("--no-busy-gap", action="store_true",
                    help=f"do not run {GAP_BIN} (goal 0 is then not measured)")
    ap.add_argument("-v", "--verbose", action="store_true", help="echo the console results")
    args = ap.parse_args(argv)

    plan = kvt.load_plan()
    allowed = bench_configs(plan)
    names = args.configs or allowed
    for n in names:
        if n not in allowed:
            raise SystemExit(f"bench: {n} is not a benchmark config (have: {', '.join(allowed)})")
        if not plan["config"][n].get("icount"):
            raise SystemExit(f"bench: {n} has no icount: its figures would be noise")
    workloads = [w for w in args.workloads.split(",") if w]
    for w in workloads:
        if w not in WORKLOADS:
            raise SystemExit(f"bench: unknown workload {w} (have: {', '.join(WORKLOADS)})")
    params = {n: config_params(plan, n, args.module_params) for n in names}
    tests = {n: bench_test(plan, n, args.reps, args.irqs, workloads, params[n],
                           args.timeout) for n in names}

    meta = {"command": shlex.join(["scripts/bench.py", *(argv if argv is not None
                                                           else sys.argv[1:])]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git": git_rev(), "reps": args.reps, "irqs": args.irqs,
            "linux_source": kvt.linux_source_version(),
            "qemu_version": "; ".join(dict.fromkeys(
                qemu_version(kvt.qemu_binary(plan["config"][n])) for n in names)),
            "configs": {n: {"qemu": plan["config"][n]["qemu"],
                            "icount": plan["config"][n].get("icount"),
                            "smp": plan["config"][n].get("smp", 4),
                            "modes": bench_modes(plan, n),
                            "module_params": params[n],
                            "kvt_bench": shlex.join(tests[n]["argv"])} for n in names}}
    # The busy gap belongs to the busy workload: run when that is.
    want_gaps = not args.no_busy_gap and (not workloads or "busy" in workloads)
    gap_timeout = next((t["timeout"] for t in plan.get("test", []) if t["id"] == GAP_BIN),
                       GAP_TIMEOUT)
    prepared, runs, gap_runs, boots, problems = {}, [], [], [], []
    for n in names:
        arch, test = plan["config"][n]["arch"], tests[n]
        if arch not in prepared:
            prepared[arch] = kvt.prepare(arch, [test])
        if not has_bench(prepared[arch][2]):
            kvt.log(f"bench: {n}: {BENCH_BIN} is not built for {arch}; skipped")
            continue
        gaps = []
        if want_gaps and has_prog(prepared[arch][2], GAP_BIN):
            gaps = gap_tests(args.reps, args.irqs, gap_timeout)
            meta.setdefault("kvt_busy_gap", shlex.join(gaps[0]["argv"]))
        elif want_gaps:
            kvt.log(f"bench: {n}: {GAP_BIN} is not built for {arch}: goal 0 not measured")
        kvt.log(f"bench: booting {n} ({args.reps} reps, modes "
                f"{','.join(bench_modes(plan, n)) or '-'}, icount "
                f"{plan['config'][n].get('icount')}), at most {test['timeout']}s"
                + (f" and {len(gaps)} {GAP_BIN} runs" if gaps else ""))
        r, g, rec, p = bench_boot(plan, n, prepared[arch], test, args.verbose, gaps=gaps,
                                  params=params[n])
        kvt.log(f"bench: {n} done in {rec['wall']:.0f}s: {len(r)} runs, "
                f"{len(g)} busy-gap records")
        runs += r
        gap_runs += g
        boots.append(rec)
        problems += p
    if not boots:
        kvt.log(f"bench: {BENCH_BIN} is not built for any of {', '.join(names)}")
        return KSFT_SKIP

    # Every timer mode of the asked configs; with none asked, also those
    # of configs with bench_modes but no `bench = true`: not measured.
    targets = goal_targets(plan, names, runs, gap_runs, declared=not args.configs)
    summary, rows, gs, gsum = write_outputs(args.out, runs, meta, boots, gap_runs, targets,
                                            cap_ns=max(map(advance_cap_ns, params.values())))
    print_report(summary, rows, gs, args.out, gsum, meta)
    if args.publish:
        PUBLISH.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "lateness-cdf.svg", PUBLISH / "lateness-cdf.svg")
        (PUBLISH / "results.rst").write_text(rst_table(rows, gs, meta, gsum))
        print(f"# published to {PUBLISH}")
    status = 0
    for p in problems:
        print(f"# bench: FAILED: {p}")
        status = 1
    if not runs:
        print("# bench: FAILED: no results")
        status = 1
    if ours_early(summary):
        print(f"# bench: FAILED: {ours_early(summary)} early interrupts with ours "
              "(a correctness bug)")
        status = 1
    for line in faults(summary, OURS):
        print(f"# bench: FAILED: ours, {line} (a correctness bug)")
        status = 1
    if args.strict and any(g["status"] == MISSED for g in gs):
        print("# bench: FAILED: goals MISSED (--strict)")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
