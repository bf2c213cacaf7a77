"""``phe-fl audit membership``: the membership audit of a shipped dataset, from the shell.

phe_fl/cli.py wires it in with :func:`add_membership_parser` on the ``audit`` command's
subparsers; the parser's default ``func`` is :func:`run_membership`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from phe_fl.errors import ParameterError

__all__ = ["add_membership_parser", "run_membership"]


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {v}")
    return v


def _list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_membership_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``membership`` to ``subparsers`` (those of ``phe-fl audit``) and return it."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "membership",
        help="membership-inference audit of what each observer sees (report folder: ROC "
        "PNG, JSON, Markdown)",
        description="Train a model on a shipped dataset's member rows and attack it through "
        "what each observer receives: phe-fl's querier (its predictions, via the plaintext "
        "twin), a plain FedAvg server (updates in the clear), a phe-fl party (ciphertexts "
        "only: no attack applies). Runs in plaintext on the dataset, in one process.",
    )
    p.add_argument(
        "--dataset",
        default="diabetes",
        help="a shipped dataset (phe_fl.ml.datasets): breast_cancer, diabetes (default), digits",
    )
    p.add_argument("--out", required=True, help="report folder (created if needed)")
    p.add_argument(
        "--observers",
        type=_list,
        default=["querier", "server", "party"],
        help="comma-separated among querier, server, party (default: all)",
    )
    p.add_argument(
        "--models",
        type=_list,
        default=["glm"],
        help="targets for the querier: glm (phe-fl logistic regression), mlp (overfit "
        "network); comma-separated (default glm)",
    )
    p.add_argument("--members", type=_positive, default=200, help="member rows (default 200)")
    p.add_argument("--nonmembers", type=_positive, default=200, help="non-member rows (200)")
    p.add_argument(
        "--population", type=_positive, default=None, help="population rows (default: the rest)"
    )
    p.add_argument(
        "--reference-models", type=int, default=8, help="reference models (default 8; >= 2)"
    )
    p.add_argument("--parties", type=_positive, default=4, help="parties (default 4)")
    p.add_argument("--iterations", type=_positive, default=40, help="GLM iterations (40)")
    p.add_argument("--learning-rate", type=float, default=0.2, help="GLM and FedAvg (0.2)")
    p.add_argument("--batch-size", type=_positive, default=16, help="GLM batch per party (16)")
    p.add_argument("--activation-degree", type=_positive, default=5, help="GLM sigmoid (5)")
    p.add_argument(
        "--output",
        choices=["activation", "margin"],
        default="activation",
        help="what the querier receives from the GLM (default: the activation polynomial)",
    )
    p.add_argument(
        "--hidden", default="64", help="network hidden widths, comma-separated (default 64)"
    )
    p.add_argument("--epochs", type=_positive, default=300, help="network epochs (300)")
    p.add_argument("--fedavg-rounds", type=_positive, default=40, help="FedAvg rounds (40)")
    p.add_argument(
        "--fedavg-local-epochs", type=_positive, default=1, help="FedAvg local epochs (1)"
    )
    p.add_argument(
        "--digit",
        default="0",
        help="digits: the one-vs-rest digit, or 'all' for ten classes (network only)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the member/non-member split and training"
    )
    p.set_defaults(func=run_membership)
    return p


def run_membership(args: argparse.Namespace) -> int:
    """Run the audit the arguments describe, write the report folder, print the table."""
    from phe_fl.privacy.audit import membership_experiment

    try:
        hidden = [int(h) for h in _list(args.hidden)]
    except ValueError:
        raise ParameterError(f"--hidden must list integers, got {args.hidden!r}") from None
    if args.digit == "all":
        digit: int | None = None
    else:
        try:
            digit = int(args.digit)
        except ValueError:
            raise ParameterError(f"--digit must be 0..9 or 'all', got {args.digit!r}") from None
    report = membership_experiment(
        args.dataset,
        models=args.models,
        observers=args.observers,
        members=args.members,
        nonmembers=args.nonmembers,
        population=args.population,
        n_reference=args.reference_models,
        parties=args.parties,
        iterations=args.iterations,
        learning_rate=args.learning_rate,
        batch_size=args.batch_size,
        activation_degree=args.activation_degree,
        output=args.output,
        hidden=hidden,
        epochs=args.epochs,
        fedavg_rounds=args.fedavg_rounds,
        fedavg_local_epochs=args.fedavg_local_epochs,
        digit=digit,
        seed=args.seed,
    )
    paths = report.write(Path(args.out))
    print(report.to_markdown(), end="")
    print("written: " + ", ".join(str(p) for p in paths.values()))
    return 0
