"""Does the full benchmark time the C++ backend as a run of it alone would? (issue 20)

    python benchmarks/agreement.py [--match TEXT] [--null] [--budget S] [--out DIR]

Two runs of the kernel suite, each as ``fastconv bench`` makes it (every contender in a worker
process of its own, stopped while another runs; the rounds of each case spread over sweeps of the
suite): the full run (every available backend and PyTorch) and a cpp-only one (``--backends cpp``:
cpp and PyTorch). Run one after the other, the two met different states of these shared machines:
one run's times of every case came out 1.13x the other's on average (the cores on two dies for a
sweep, or a slower neighbour), another run 0.96x, so the per-shape comparison measured the machine
as much as the bench. Here the two runs take turns sweep by sweep (ABBA: the full run first in
sweeps 1 and 4, the cpp-only run in 2 and 3), each run's workers stopped while the other's run,
so both meet the same phases, and what is left between them is what the other contenders do to
cpp's times. ``--null`` runs two cpp-only runs the same way: the measurement's own spread.

Prints, per case, cpp's median in each run and their ratio, then the geometric mean and median of
the ratios and the cases outside 10%; writes both runs' bench.json (and report.md) under ``--out``.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from fastconv.bench import Config, Policy, load_suite
from fastconv.bench.report import write_reports
from fastconv.bench.runner import SuiteRun, resolve_backends
from fastconv.bench.suite import parse_passes, select


def config(backends, args) -> Config:
    suite = load_suite(None)
    policy = Policy() if args.budget is None else Policy(budget_s=args.budget)
    return Config(select(suite.shapes, args.match), parse_passes(None), backends, suite.dtype, None, policy,
                  command=f"benchmarks/agreement.py, backends {','.join(backends)}")


def cpp_medians(doc) -> dict:
    return {(r["shape"], r["pass_name"]): r["median_ms"] for r in doc["results"]
            if r["contender"] == "cpp" and r["status"] == "ok"}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--match", help="only the shapes whose name contains TEXT")
    ap.add_argument("--null", action="store_true", help="two cpp-only runs: the null control")
    ap.add_argument("--budget", type=float, help="timing budget per case and contender (default 0.5 s)")
    ap.add_argument("--out", default="bench-results/agreement")
    args = ap.parse_args()
    full = resolve_backends(None)[0]
    names = ("cpp-only", "cpp-only again") if args.null else ("full", "cpp-only")
    runs = [SuiteRun(config(("cpp",) if name.startswith("cpp") else full, args), sys.stderr) for name in names]
    try:
        for n in range(1, runs[0].sweeps + 1):
            for run in runs if n % 4 in (0, 1) else runs[::-1]:  # ABBA: order effects cancel
                run.sweep(n)
    finally:
        for run in runs:
            run.close()
    docs = [run.document() for run in runs]
    for name, doc in zip(names, docs):
        write_reports(doc, Path(args.out) / name.replace(" ", "-"), chart=False)
    a, b = (cpp_medians(d) for d in docs)
    keys = [k for k in a if k in b]
    ratios = {k: a[k] / b[k] for k in keys}
    print(f"cpp's median, {names[0]} run / {names[1]} run, the runs taking turns sweep by sweep:")
    for k in keys:
        flag = "  outside 10%" if abs(math.log(ratios[k])) > math.log(1.1) else ""
        print(f"  {k[0]:<34} {k[1]:<16} {a[k]:9.3f} ms {b[k]:9.3f} ms  {ratios[k]:.3f}{flag}")
    r = sorted(ratios.values())
    outside = sum(abs(math.log(x)) > math.log(1.1) for x in r)
    print(f"{len(r)} cases: geometric mean {math.exp(sum(map(math.log, r)) / len(r)):.3f}, median "
          f"{r[len(r) // 2]:.3f}, range {r[0]:.2f}-{r[-1]:.2f}, {outside} outside 10%")
    for name, doc in zip(names, docs):
        s = doc["settings"]
        print(f"{name}: sweeps began at " + ", ".join(f"{w['cpu_gflops']} GFLOP/s {w['core_round_trip_ns']} ns"
                                                     for w in s["sweeps"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
