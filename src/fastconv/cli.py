"""The ``fastconv`` command line: one sub-command per job, each in its own module.

- ``fastconv bench``: verify every backend against the reference, then time it next to PyTorch;
  writes ``bench-results/`` (``bench.json``, ``report.md``, ``speedup.png``).
- ``fastconv check``: verify every backend against the reference (and the reference against PyTorch).
- ``fastconv info``: backends (available or why not), versions, CPU features, threads, GPUs.
"""

from __future__ import annotations

import argparse
import shlex
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="verify every available backend against the reference")
    check.add_argument("--backends", help="comma-separated backend names (default: all available)")
    check.set_defaults(run=_run_check)

    bench = commands.add_parser(
        "bench", help="verify, then time every backend side by side with PyTorch",
        description="Verify every backend against the reference on each case, then time it next to "
                    "PyTorch (NCHW and channels_last). Prints a table and writes bench.json, report.md "
                    "and speedup.png into --out. Exit status 1 when a backend failed verification.")
    bench.add_argument("--shapes", metavar="FILE", help="a shapes JSON file (default: the shipped suite)")
    bench.add_argument("--backends", help="comma-separated fastconv backends (default: all available)")
    bench.add_argument("--passes", help="comma-separated: forward, backward-input, backward-weight, "
                                        "backward (= both backward passes); default: all")
    bench.add_argument("--match", metavar="TEXT", help="only the shapes whose name contains TEXT")
    bench.add_argument("--threads", type=int, help="threads for fastconv and PyTorch alike "
                                                   "(default: fastconv.get_num_threads())")
    bench.add_argument("--dtype", choices=("float32", "float64"), help="default: the suite's (float32)")
    bench.add_argument("--repeat", type=int, help="timed runs per case and contender "
                                                  "(default: as many as fit the budget, at least 3)")
    bench.add_argument("--budget", type=float, metavar="SECONDS",
                       help="timing budget per case and contender (default 0.5; --quick 0.05)")
    bench.add_argument("--quick", action="store_true",
                       help="the cheapest shape of each kind and a short budget: seconds")
    bench.add_argument("--out", default="bench-results", metavar="DIR", help="default: bench-results")
    bench.add_argument("--no-torch", action="store_true", help="leave PyTorch out")
    bench.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    bench.add_argument("--seed", type=int, default=0, help="seed of the input values (default 0)")
    bench.set_defaults(run=_run_bench)

    info = commands.add_parser("info", help="backends, versions, CPU features, threads, GPUs")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_run_info)

    args = parser.parse_args(argv)
    return args.run(args)


def _run_check(args) -> int:
    from .verify import run_check

    names = args.backends.split(",") if args.backends else None
    return run_check(names, out=sys.stdout)


def _run_bench(args) -> int:
    from .bench import bench

    try:
        return bench(shapes=args.shapes, backends=args.backends.split(",") if args.backends else None,
                     passes=args.passes, threads=args.threads, dtype=args.dtype, repeat=args.repeat,
                     budget=args.budget, quick=args.quick, match=args.match, out=args.out,
                     torch=not args.no_torch, chart=not args.no_chart, seed=args.seed,
                     command=shlex.join(["fastconv"] + sys.argv[1:]))
    except ValueError as exc:
        print(f"fastconv {exc}", file=sys.stderr)
        return 2


def _run_info(args) -> int:
    from .bench import info

    return info(as_json=args.json)


if __name__ == "__main__":
    sys.exit(main())
