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


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",")]


def _cmd_certs(args: argparse.Namespace) -> int:
    from pathlib import Path

    from phe_fl.errors import ParameterError
    from phe_fl.federation.certs import create_federation, issue_certificate

    out = Path(args.out)
    hosts = _csv(args.hosts)
    if args.add_node is not None or args.add_querier is not None:
        if args.nodes is not None or args.queriers is not None:
            raise ParameterError(
                "--add-node/--add-querier cannot be combined with --nodes/--queriers"
            )
        ca_dir = Path(args.ca) if args.ca else out
        options = {"hosts": hosts, "days": args.days, "overwrite": args.overwrite}
        if args.add_node is not None:
            member = issue_certificate(ca_dir, "node", args.add_node, out, **options)
            print(f"issued node:{args.add_node} (CA certificate: {member.ca})")
        else:
            member = issue_certificate(ca_dir, "querier", args.add_querier, out, **options)
            print(f"issued querier:{args.add_querier} (CA certificate: {member.ca})")
        files = [member.cert, member.key]
    else:
        if args.nodes is None:
            raise ParameterError("give --nodes ID,ID,... (or --add-node/--add-querier ID)")
        if args.ca:
            raise ParameterError("--ca is only for --add-node/--add-querier")
        if args.queriers is None:
            queriers = ["querier"]
        else:
            queriers = _csv(args.queriers) if args.queriers.strip() else []
        fed = create_federation(
            out,
            _csv(args.nodes),
            queriers,
            hosts=hosts,
            days=args.days,
            overwrite=args.overwrite,
        )
        files = fed.files()
        print(
            f"created federation CA with {len(fed.nodes)} node(s), {len(fed.queriers)} querier(s)"
        )
    for path in files:
        print(f"  wrote {path}")
    print("keep the *.key files private (mode 0600); ca.key is needed only to add members")
    return 0


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
    certs = sub.add_parser(
        "certs",
        help="create a federation CA and member certificates for mutual TLS, or add a member",
    )
    certs.add_argument("--out", required=True, help="output folder (the federation folder)")
    certs.add_argument("--nodes", help="comma-separated node ids, e.g. 0,1,2,3,4")
    certs.add_argument(
        "--queriers", help="comma-separated querier ids (default: querier; empty for none)"
    )
    add = certs.add_mutually_exclusive_group()
    add.add_argument("--add-node", metavar="ID", help="issue one more node certificate")
    add.add_argument("--add-querier", metavar="ID", help="issue one more querier certificate")
    certs.add_argument("--ca", help="folder holding ca.pem and ca.key for --add-* (default: --out)")
    certs.add_argument(
        "--hosts",
        default="localhost,127.0.0.1",
        help="comma-separated DNS names / IP addresses the certificates are valid for",
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    certs.add_argument("--overwrite", action="store_true", help="replace existing files")
    certs.set_defaults(func=_cmd_certs)
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
