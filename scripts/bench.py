#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""The timer benchmark: KVM's in-tree timer against kvm_vtimer.ko.

    bench.py [CONFIG...] [--reps N] [--irqs N] [--workloads W,...] [--out DIR]
             [--module-params NAME=VALUE] [--publish] [--strict]

Boots each benchmark config of selftests/plan.toml (those with
`bench = true`; default: all of them) one at a time, under the config's
-icount, with a plan that loads kvm.ko and runs the kvt_bench selftest once.
kvt_bench does the interleaving itself: for each repetition, the in-tree
timer then ours (insmod, run, rmmod), each workload in a fresh VM.  It prints
one `# kvt-bench {json}` line per (rep, backend, workload), then
`# kvt-bench-done`.

Outputs, in DIR (default build/bench):
    bench.json         every run as kvt_bench printed it, plus per
                       (config, workload, backend) summaries, the
                       ours/in-tree ratios and the goals
    lateness-cdf.svg   CDF of lateness per config x workload, both backends
and on stdout the ours/in-tree table and each goal, met or not.
--publish copies the plot and an RST table to Documentation/bench/.

Exit status: 0 when the benchmark ran (whether or not the performance goals
were met; --strict makes an unmet goal exit 1), 1 when it could not run
(build or boot failed, kvt_bench failed or printed nothing) or when any of
our interrupts fired early (a correctness bug), 4 when kvt_bench is not
built for any asked config.
"""

import argparse
import datetime
import json
import math
import shlex
import shutil
import subprocess
import sys
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
# Wall seconds kvt_bench may take inside the emulated host, per repetition
# (both backends, every workload), plus a fixed part for the boot's start.
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


def run_spin_ns(run):
    """Host CPU time one run spent waiting for deadlines before guest entry,
    in ns: kvm_vtimer's spin_ns; 0 for the in-tree timer, which never
    waits; None if the module did not report it."""
    if run.get("backend") == BASE:
        return 0
    return (run.get("module") or {}).get("spin_ns")


def summarize_group(runs):
    """One (config, workload, backend): lateness pooled over the reps, the
    counters per interrupt, and the per-rep spread."""
    lat, lat_ns, reps = [], [], []
    irqs = exits = ipis = guest_exits = 0
    starts = cancels = 0
    spin_ns = 0
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
        # The exits the guest asks for (SBI calls, WFI); the rest are host
        # interrupts (its tick, IPIs).
        guest_exits += (r.get("ecall_exits") or 0) + (r.get("wfi_exits") or 0)
        ipis += r.get("ipis") or 0
        if r.get("hrtimer_starts") is None or r.get("hrtimer_cancels") is None:
            no_hrtimer = True
        else:
            starts += r["hrtimer_starts"]
            cancels += r["hrtimer_cancels"]
        rs = run_spin_ns(r)
        spin_ns = None if rs is None or spin_ns is None else spin_ns + rs
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
        "mode": ",".join(sorted({str(r.get("mode")) for r in runs})),
        "hz": first.get("hz"), "reps": len(runs), "irqs": irqs,
        "samples": len(lat),
        "lateness_ticks": {"p50": percentile(lat, 50), "p99": percentile(lat, 99),
                           "max": max(lat) if lat else None},
        "lateness_ns": {"p50": percentile(lat_ns, 50), "p99": percentile(lat_ns, 99),
                        "max": max(lat_ns) if lat_ns else None},
        "early": sum(run_early(r) for r in runs),
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
        "spread": {"p50": spread("p50"), "p99": spread("p99"), "max": spread("max"),
                   "exits_per_irq": spread("exits_per_irq")},
        "per_rep": reps,
    }


def workload_key(w):
    return (WORKLOADS.index(w) if w in WORKLOADS else len(WORKLOADS), w)


def summarize(runs):
    """Summaries keyed (config, workload, backend), in config, workload
    and backend order."""
    groups = {}
    for r in runs:
        groups.setdefault((r.get("config"), r["workload"], r["backend"]), []).append(r)
    configs = list(dict.fromkeys(r.get("config") for r in runs))
    order = sorted(groups, key=lambda k: (configs.index(k[0]), workload_key(k[1]),
                                          k[2] != BASE, k[2]))
    return {k: summarize_group(groups[k]) for k in order}


def pairs(summary):
    """(config, workload, in-tree summary or None, ours or None)."""
    seen = list(dict.fromkeys((c, w) for c, w, _ in summary))
    return [(c, w, summary.get((c, w, BASE)), summary.get((c, w, OURS))) for c, w in seen]


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
)


def ratio_rows(summary):
    """One row per (config, workload): the figures of both backends and
    their ratio, for the JSON and the table."""
    rows = []
    for c, w, base, ours in pairs(summary):
        row = {"config": c, "workload": w,
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
    head = ["config", "workload", "reps", *(n for n, _ in RATIO_COLS)]
    body = [[r["config"], r["workload"], r["reps"], *(r[n]["text"] for n, _ in RATIO_COLS)]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return ["  ".join(x.ljust(wd) for x, wd in zip(line, widths)).rstrip()
            for line in (head, *body)]


GOALS = ("wfi p99 <= in-tree/2", "wfi p50 <= in-tree", "busy (Sstc): 0 exits/irq",
         "exits/irq <= in-tree", "ipis/irq <= in-tree", "0 early")


def spread_lines(summary):
    """Per (config, workload): min..max over the repetitions of each
    backend's per-rep p50 and p99, to judge the ratios by."""
    def mm(s, key):
        v = s and s["spread"][key]
        return f"{fmt_num(v[0])}..{fmt_num(v[1])}" if v else "-"

    head = ["config", "workload", "ours p50", "in-tree p50", "ours p99", "in-tree p99"]
    body = [[c, w, mm(o, "p50"), mm(b, "p50"), mm(o, "p99"), mm(b, "p99")]
            for c, w, b, o in pairs(summary)]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    return ["  ".join(x.ljust(wd) for x, wd in zip(line, widths)).rstrip()
            for line in (head, *body)]


def goals(summary):
    """The issue's goals, one entry per place each applies:
    {"goal", "config", "workload", "met": True/False/None, "detail"}.
    met is None where there is no data to judge."""
    out = []

    def add(goal, c, w, met, detail, **kw):
        out.append({"goal": goal, "config": c, "workload": w, "met": met, "detail": detail,
                    **kw})

    for c, w, base, ours in pairs(summary):
        if w == "wfi":
            if base and ours:
                o, b = ours["lateness_ticks"], base["lateness_ticks"]
                met = None if None in (o["p99"], b["p99"]) else o["p99"] <= b["p99"] / 2
                add("wfi p99 <= in-tree/2", c, w, met,
                    f"ours {fmt_num(o['p99'])}, in-tree {fmt_num(b['p99'])} ticks")
                met = None if None in (o["p50"], b["p50"]) else o["p50"] <= b["p50"]
                add("wfi p50 <= in-tree", c, w, met,
                    f"ours {fmt_num(o['p50'])}, in-tree {fmt_num(b['p50'])} ticks")
            else:
                add("wfi p99 <= in-tree/2", c, w, None, "no data for both backends")
                add("wfi p50 <= in-tree", c, w, None, "no data for both backends")
        if w == "busy" and ours and "sstc" in ours["mode"].split(","):
            # The guest's own exits (SBI calls, WFI): a spinning Sstc guest
            # needs none for its timer.  Host interrupts (the host's tick)
            # make the other exits, for either backend.
            e = ours.get("guest_exits_per_irq")
            add("busy (Sstc): 0 exits/irq", c, w, None if e is None else e == 0,
                f"{fmt_num(e)} guest exits/irq; {fmt_num(ours['exits_per_irq'])} in all"
                f" (host interrupts), in-tree {fmt_num(base['exits_per_irq'] if base else None)}")
        for key, count, name in (("exits_per_irq", "exits", "exits/irq"),
                                 ("ipis_per_irq", "ipis", "ipis/irq")):
            o = ours[key] if ours else None
            b = base[key] if base else None
            met = None if o is None or b is None else o <= b
            detail = f"ours {fmt_num(o)}, in-tree {fmt_num(b)}"
            if met is False and within_noise(ours.get(count), base.get(count)):
                met = "noise"
                detail += f" ({ours.get(count)} against {base.get(count)}: within counting noise)"
            add(f"{name} <= in-tree", c, w, met, detail)
        for s in (base, ours):
            if s:
                add("0 early", c, f"{w} ({s['backend']})", s["early"] == 0,
                    f"{s['early']} early of {s['irqs']}", irqs=s["irqs"])
    return out


def within_noise(ours, base):
    """Whether two event counts over the same number of interrupts differ
    by less than twice the Poisson spread of the larger (small counts of
    rare events, such as a few IPIs in a thousand interrupts)."""
    if ours is None or base is None:
        return False
    return abs(ours - base) <= 2 * math.sqrt(max(ours, base, 1))


def goal_lines(gs):
    """One line per goal and config: NOT MET if it fails anywhere, n/a if
    nowhere to judge, else MET; with the figures of each workload."""
    word = {True: "MET", False: "NOT MET", None: "n/a", "noise": "~MET"}
    groups = {}
    for g in sorted(gs, key=lambda g: GOALS.index(g["goal"])):
        groups.setdefault((g["goal"], g["config"]), []).append(g)
    lines = []
    for (goal, c), entries in groups.items():
        mets = [e["met"] for e in entries]
        if False in mets:
            met = False
        elif all(m is None for m in mets):
            met = None
        else:
            met = "noise" if "noise" in mets else True
        if goal == "0 early" and met:
            detail = f"none in {sum(e['irqs'] for e in entries)} interrupts"
        else:
            bad = {False: [False], "noise": ["noise"]}.get(met)
            shown = [e for e in entries if e["met"] in bad] if bad else entries
            detail = "; ".join(f"{e['workload']} {e['detail']}" for e in shown)
        lines.append(f"{word[met]:8} {goal}, {c}: {detail}")
    return lines


def ours_early(summary):
    return sum(s["early"] for (_, _, b), s in summary.items() if b == OURS)


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
    """An SVG of the lateness CDFs: one panel per (config, workload), x in
    ticks on a symmetric log scale, both backends.  No dependencies."""
    lat = {}
    for r in runs:
        lat.setdefault((r.get("config"), r["workload"], r["backend"]), []).extend(
            r.get("lateness") or [])
    configs = list(dict.fromkeys(c for c, _, _ in summary))
    works = sorted({w for _, w, _ in summary}, key=workload_key)
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
    for ci, c in enumerate(configs):
        for wi, w in enumerate(works):
            x0, y0 = 5 + wi * pw, top + ci * ph
            px, py, iw, ih = x0 + ml, y0 + mt, pw - ml - mr, ph - mt - mb
            o.append(f'<text x="{px}" y="{y0 + 14}" font-weight="bold">'
                     f'{escape(str(c))} / {escape(w)}</text>')
            series = {b: lat.get((c, w, b), []) for b in (BASE, OURS)}
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
                sm = summary.get((c, w, b))
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


def rst_table(rows, gs, meta):
    """Documentation/bench/results.rst: the command, the ratio table and
    the goals, as RST."""
    head = ["config", "workload", "reps", *(n for n, _ in RATIO_COLS)]
    body = [[r["config"], r["workload"], r["reps"], *(r[n]["text"] for n, _ in RATIO_COLS)]
            for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *body)]
    rule = "  ".join("=" * w for w in widths)

    def fmt(line):
        return "  ".join(x.ljust(w) for x, w in zip(line, widths)).rstrip()

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
            rule, fmt(head), rule, *map(fmt, body), rule, "", "Goals:", ""]
    out += [f"- {line}" for line in goal_lines(gs)]
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


def write_outputs(out, runs, meta, boots):
    """bench.json and lateness-cdf.svg in OUT; returns (summary, rows, goals)."""
    summary = summarize(runs)
    rows = ratio_rows(summary)
    gs = goals(summary)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"meta": meta, "boots": boots, "runs": runs,
           "summary": list(summary.values()), "ratios": rows, "goals": gs}
    (out / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    (out / "lateness-cdf.svg").write_text(
        svg_plot(summary, runs, f"kvm_vtimer benchmark: lateness CDF ({meta['date']}, "
                                f"git {meta['git']})"))
    return summary, rows, gs


def print_report(summary, rows, gs, out, meta=None):
    if meta and "linux_source" in meta:
        print(f"# host kernels: Debian {kvt.LINUX_SOURCE} "
              f"{meta['linux_source'] or '(not installed)'}")
    print("# benchmark: ours (kvm_vtimer) / in-tree; lateness in timer ticks")
    for line in table(rows):
        print(f"  {line}")
    print("# spread over the repetitions: min..max of the per-rep lateness p50, p99")
    for line in spread_lines(summary):
        print(f"  {line}")
    print("# goals")
    for line in goal_lines(gs):
        print(f"  {line}")
    print(f"# outputs: {out / 'bench.json'}, {out / 'lateness-cdf.svg'}")


# ---------------------------------------------------------------- boots


def bench_configs(plan):
    return [n for n, c in plan["config"].items() if c.get("bench")]


def bench_argv(reps, irqs, workloads, params=""):
    argv = [BENCH_BIN, "-k", MODULE, "-r", str(reps)]
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


def bench_steps(test, kvm_module):
    """The plan of a benchmark boot: the host's own setup steps of
    kvt.plan_steps (kvm.ko), then kvt_bench once."""
    setup = [s for s in kvt.plan_steps([], kvm_module) if s[0] and s[0].startswith("host.")]
    tid = f"bench.{test['id']}"
    return [*setup, (None, "phase bench"),
            (tid, f"run {test['timeout']} {tid} /bin/{' '.join(test['argv'])}")]


def has_bench(selftests):
    return any(Path(selftests).rglob(BENCH_BIN))


def bench_boot(plan, name, prepared, test, echo, outdir=None):
    """Boot NAME with the benchmark plan, its console etc. in OUTDIR
    (default build/runs/bench-NAME); (runs, boot record, problems)."""
    steps = bench_steps(test, "kvm.ko" in prepared[3])
    b = kvt.boot(plan, name, prepared, [test], echo=echo, steps=steps,
                 outdir=outdir or kvt.BUILD / "runs" / f"bench-{name}")
    console = b.log_path.read_text(errors="replace").splitlines()
    runs, done, bad = parse_console(console)
    for r in runs:
        r["config"] = name
    problems = [f"{r.config}/{r.test}: {r.status} {r.note}".strip()
                for r in b.results if r.status not in ("pass", "skip")]
    skipped = [r for r in b.results if r.status == "skip"]
    if bad:
        problems.append(f"{name}: {len(bad)} kvt-bench lines did not parse, e.g. {bad[0][:120]}")
    if not done and not skipped:
        problems.append(f"{name}: kvt_bench did not print {DONE!r}")
    if not runs and not skipped:
        problems.append(f"{name}: no kvt-bench results")
    record = {"config": name, "wall": round(b.wall, 1), "console": str(b.log_path),
              "results": [{"test": r.test, "status": r.status, "note": r.note}
                          for r in b.results]}
    for r in skipped:
        kvt.log(f"bench: {name}: kvt_bench skipped: {r.note}")
    return runs, record, problems


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="*", help="plan configs (default: all with bench = true)")
    ap.add_argument("--reps", type=int, default=5, help="ABAB repetitions (default 5)")
    ap.add_argument("--irqs", type=int, default=0,
                    help="interrupts per run (default: kvt_bench's own)")
    ap.add_argument("--module-params", default="",
                    help="one kvm_vtimer parameter for its runs, e.g. advance_max_ns=0")
    ap.add_argument("--workloads", default="",
                    help=f"comma-separated subset of {','.join(WORKLOADS)}")
    ap.add_argument("--timeout", type=int, default=0,
                    help=f"seconds for kvt_bench per boot (default "
                         f"{SECS_FIXED} + {SECS_PER_REP} per rep)")
    ap.add_argument("--out", type=Path, default=OUT, help=f"output directory (default {OUT})")
    ap.add_argument("--publish", action="store_true",
                    help="copy the plot and an RST table to Documentation/bench/")
    ap.add_argument("--strict", action="store_true", help="exit 1 if a goal is not met")
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
    test = {"id": BENCH_BIN,
            "argv": bench_argv(args.reps, args.irqs, workloads, args.module_params),
            "timeout": args.timeout or SECS_FIXED + SECS_PER_REP * args.reps}

    meta = {"command": shlex.join(["scripts/bench.py", *(argv if argv is not None
                                                           else sys.argv[1:])]),
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "git": git_rev(), "reps": args.reps, "irqs": args.irqs,
            "kvt_bench": shlex.join(test["argv"]),
            "linux_source": kvt.linux_source_version(),
            "qemu_version": "; ".join(dict.fromkeys(
                qemu_version(kvt.QEMU[plan["config"][n]["arch"]][0]) for n in names)),
            "configs": {n: {"qemu": plan["config"][n]["qemu"],
                            "icount": plan["config"][n].get("icount"),
                            "smp": plan["config"][n].get("smp", 4)} for n in names}}
    prepared, runs, boots, problems = {}, [], [], []
    for n in names:
        arch = plan["config"][n]["arch"]
        if arch not in prepared:
            prepared[arch] = kvt.prepare(arch, [test])
        if not has_bench(prepared[arch][2]):
            kvt.log(f"bench: {n}: {BENCH_BIN} is not built for {arch}; skipped")
            continue
        kvt.log(f"bench: booting {n} ({args.reps} reps, icount "
                f"{plan['config'][n].get('icount')}), at most {test['timeout']}s")
        r, rec, p = bench_boot(plan, n, prepared[arch], test, args.verbose)
        kvt.log(f"bench: {n} done in {rec['wall']:.0f}s: {len(r)} runs")
        runs += r
        boots.append(rec)
        problems += p
    if not boots:
        kvt.log(f"bench: {BENCH_BIN} is not built for any of {', '.join(names)}")
        return KSFT_SKIP

    summary, rows, gs = write_outputs(args.out, runs, meta, boots)
    print_report(summary, rows, gs, args.out, meta)
    if args.publish:
        PUBLISH.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.out / "lateness-cdf.svg", PUBLISH / "lateness-cdf.svg")
        (PUBLISH / "results.rst").write_text(rst_table(rows, gs, meta))
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
    if args.strict and any(g["met"] is False for g in gs):
        print("# bench: FAILED: goals not met (--strict)")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
