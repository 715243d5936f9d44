#!/usr/bin/env python3
# SPDX-License-Identifier: GPL-2.0
"""Boot configs again and again until a boot has a failure.

    flake.py [--boots N] [--plan PLAN] CONFIG...

Each round runs `kvt.py suite CONFIG...` (one boot per config, two at once)
on PLAN (default selftests/flake.toml: the upstream arm64 timer tests on our
backend only) and reads its summary line.  It stops at the first round with
a failure and prints how many rounds in a row passed, with the failing
results; exit status 0 only if all N rounds passed.  Expected failures of
the plan (xfail) do not count as flakes; an unexpected pass (xpass) does not
either, but is listed.
"""

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed(?:, (\d+) skipped)?$")


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("configs", nargs="+")
    ap.add_argument("--boots", type=int, default=20, help="rounds (default 20)")
    ap.add_argument("--plan", default=str(ROOT / "selftests" / "flake.toml"))
    args = ap.parse_args()
    env = dict(os.environ, KVT_PLAN=args.plan)
    start = time.monotonic()
    for i in range(1, args.boots + 1):
        t0 = time.monotonic()
        p = subprocess.run([sys.executable, str(ROOT / "scripts" / "kvt.py"), "suite",
                            *args.configs], env=env, capture_output=True, text=True)
        lines = p.stdout.strip().splitlines()
        m = SUMMARY.match(lines[-1]) if lines else None
        bad = [l for l in lines if l.startswith(("FAIL", "XPASS"))]
        took = time.monotonic() - t0
        if not m:
            print(f"round {i}: no summary line (exit {p.returncode})\n{p.stderr[-2000:]}")
            print(f"{i - 1} consecutive rounds without a flake")
            return 1
        passed, failed = int(m.group(1)), int(m.group(2))
        print(f"round {i}: {lines[-1]} ({took:.0f} s)", flush=True)
        for l in bad:
            print(f"  {l}")
        if failed or p.returncode:
            print(f"{i - 1} consecutive rounds without a flake, then a failure"
                  f" ({' '.join(args.configs)}; {time.monotonic() - start:.0f} s)")
            return 1
        if passed == 0:
            print("nothing passed: is the plan empty?")
            return 1
    print(f"{args.boots} consecutive rounds without a flake"
          f" ({' '.join(args.configs)}; {time.monotonic() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
