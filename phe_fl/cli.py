"""The ``phe-fl`` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from phe_fl.errors import PheFlError

__all__ = ["main"]


def _cmd_params(args: argparse.Namespace) -> int:
    from phe_fl.mhe import PARAMETER_SETS

    print(f"{'name':<20} {'ring':>6} {'slots':>6} {'depth':>5} {'usable':>6} {'security':<12}")
    for p in PARAMETER_SETS.values():
        sec = "128-bit" if p.secure else "INSECURE"
        print(
            f"{p.name:<20} {'2^' + str(p.log_ring_dim):>6} {p.slots:>6} {p.mult_depth:>5} "
            f"{p.usable_levels:>6} {sec:<12}"
        )
    print("usable = multiplicative levels between two collective refreshes")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from phe_fl.demo import run_demo

    result = run_demo(args.providers, args.params)
    return 0 if result.refused_without_all else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="phe-fl", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run N data providers as separate processes on this machine")
    demo.add_argument(
        "--providers", type=int, default=5, help="number of data providers (default 5)"
    )
    demo.add_argument(
        "--params", default="n14-depth5-128", help="parameter set (see `phe-fl params`)"
    )
    demo.set_defaults(func=_cmd_demo)
    params = sub.add_parser("params", help="list the named parameter sets")
    params.set_defaults(func=_cmd_params)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except PheFlError as exc:
        print(f"phe-fl: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("phe-fl: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
