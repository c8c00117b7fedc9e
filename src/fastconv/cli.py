"""The ``fastconv`` command line: one sub-command per job, each in its own module."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fastconv", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    check = commands.add_parser("check", help="verify every available backend against the reference")
    check.add_argument("--backends", help="comma-separated backend names (default: all available)")
    check.set_defaults(run=_run_check)

    args = parser.parse_args(argv)
    return args.run(args)


def _run_check(args) -> int:
    from .verify import run_check

    names = args.backends.split(",") if args.backends else None
    return run_check(names, out=sys.stdout)


if __name__ == "__main__":
    sys.exit(main())
