#!/usr/bin/env python3
"""Differential privacy on a network (issue 12): accuracy and membership-attack AUC of a
neural network trained by phe-fl's FedAvg jobs, with and without DP, at several epsilons.

The network is the digits app's MLP (64-32-10, 2,410 parameters, ReLU) on scikit-learn's
8x8 digits, 4 parties. Each game deals the digits (1,797 rows) into members (the target's
training rows, split evenly over the parties), non-members and population rows; the
target is trained by the FedAvg twin (:func:`phe_fl.fedavg.twin.plain_fedavg`: every site
runs exactly the node code, :class:`phe_fl.fedavg.site.Site`; an encrypted run equals it
within the release precision plus, with DP, noise of the same distribution, which
``tests/e2e/test_fedavg.py`` checks over real node processes). Rows:

* no DP: FedAvg with the app's own local training (SGD with momentum, ``--local-epochs``
  epochs per round, batch 8): what a federation trains without DP, and what overfits;
* clip only: the DP rounds (Poisson batches, per-example gradients clipped to ``C``)
  without noise (noise multiplier 1e-9: epsilon infinite), separating what clipping costs
  from what noise costs;
* DP at each ``--epsilons`` (delta 1e-5): the noise multiplier is the smallest that reaches
  the target by dp-accounting's RDP accountant for the job's sampling rate and rounds
  (:func:`phe_fl.privacy.accounting.noise_for`).

The querier's view (the model's class probabilities) is attacked with the population-
calibrated threshold attack and LiRA offline (reference models trained the same way, DP
included, on population rows). Accuracy is on the non-members. Every figure is the mean
and standard deviation over ``--seeds`` games.

    ./dev run python benchmarks/bench_dp_network.py        # ~15 min on two cores

Results: ``benchmarks/results/dp/`` (``dp-network.json``, ``dp-network.md``,
``dp-network.png``).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
try:  # run from a checkout without installing: make phe_fl importable
    import phe_fl  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from phe_fl.fedavg.app import App  # noqa: E402
from phe_fl.fedavg.examples import TorchApp, _digits_mlp_model  # noqa: E402
from phe_fl.fedavg.job import FedAvgSpec  # noqa: E402
from phe_fl.fedavg.site import Site, load_into  # noqa: E402
from phe_fl.fedavg.twin import plain_fedavg  # noqa: E402
from phe_fl.privacy.accounting import epsilon_spent, noise_for  # noqa: E402
from phe_fl.privacy.attacks import audit_split, reference_attack, threshold_attack  # noqa: E402
from phe_fl.privacy.metrics import FloatArray  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dp_figures import attack_metrics, draw_setting, fmt, save, summary  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "dp"
DELTA = 1e-5
PARTIES = 4
NO_NOISE = 1e-9
APP = f"{__name__}:app" if __name__ != "__main__" else "bench_dp_network:app"


@dataclass(frozen=True)
class Setting:
    """One membership game: ``members`` rows train the target; without DP ``plain_rounds``
    rounds of ``local_epochs`` local epochs, with DP ``rounds`` DP-SGD steps at sampling
    rate ``sample_rate`` and learning rate ``dp_learning_rate``."""

    name: str
    members: int
    nonmembers: int
    sample_rate: float
    rounds: int
    dp_learning_rate: float
    plain_rounds: int = 20
    local_epochs: int = 5


SETTINGS = (
    Setting("standard", 600, 300, sample_rate=0.5, rounds=100, dp_learning_rate=2.0),
    Setting("overfit-prone", 200, 200, sample_rate=1.0, rounds=50, dp_learning_rate=2.0),
)


def app(options: Mapping[str, Any]) -> App:
    """A site's app over the rows a game gives it (in-process only: arrays in options)."""
    x = torch.as_tensor(np.asarray(options["x"], dtype=np.float32))
    y = torch.as_tensor(np.asarray(options["y"], dtype=np.int64))
    return TorchApp(
        build=_digits_mlp_model,
        x_train=x,
        y_train=y,
        x_test=x[:0],
        y_test=y[:0],
        seed=int(options.get("seed", 0)),
        shard=int(options.get("shard", 0)),
        device=torch.device("cpu"),
    )


@dataclass(frozen=True)
class NetworkModel:
    """The querier's view: class probabilities of the released network."""

    model: torch.nn.Module

    def __call__(self, x: FloatArray) -> FloatArray:
        with torch.no_grad():
            logits = self.model(torch.as_tensor(np.asarray(x, dtype=np.float32)))
            return np.asarray(torch.softmax(logits.double(), dim=1).numpy(), dtype=np.float64)


@dataclass(frozen=True)
class FedAvgTrainer:
    """Trains the target, and LiRA's reference models, the same way: ``spec`` over
    ``PARTIES`` sites (rows dealt round-robin), DP seeds derived from the fit's seed."""

    spec: FedAvgSpec

    @property
    def name(self) -> str:
        return f"digits MLP, FedAvg, sigma {self.spec.dp_noise_multiplier:.3g}"

    def fit(self, x: FloatArray, y: FloatArray, seed: int) -> NetworkModel:
        sites = [
            Site(
                f"site-{i}",
                {"digits": APP},
                {"x": x[i::PARTIES], "y": y[i::PARTIES], "seed": 0, "shard": i},
                n_parties=PARTIES,
            )
            for i in range(PARTIES)
        ]
        spec = replace(self.spec, seed=seed)
        seeds = [1_000_003 * seed + 7 * i + 1 for i in range(PARTIES)] if spec.dp else None
        layout, rounds = plain_fedavg(sites, spec, dp_seeds=seeds)
        model = _digits_mlp_model()
        load_into(model, layout, rounds[-1].global_values)
        model.eval()
        return NetworkModel(model)


def one_row(
    setting: Setting, label: str, spec: FedAvgSpec, epsilon: float, args: argparse.Namespace
) -> dict[str, Any]:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.float64)
    per_seed: list[dict[str, float]] = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        data = audit_split(x, y, members=setting.members, nonmembers=setting.nonmembers, seed=seed)
        trainer = FedAvgTrainer(spec)
        target = trainer.fit(*data.members, seed)
        thr = threshold_attack(target, data, observer="querier")
        lira = reference_attack(target, trainer, data, n_reference=args.reference_models, seed=seed)
        nx, ny = data.nonmembers
        mx, my = data.members
        per_seed.append(
            {
                "accuracy": float(np.mean(np.argmax(target(nx), axis=1) == ny)),
                "train_accuracy": float(np.mean(np.argmax(target(mx), axis=1) == my)),
                **attack_metrics(thr, lira),
            }
        )

    keys = (
        "accuracy",
        "train_accuracy",
        "auc_threshold",
        "auc_lira",
        "tpr_at_1pct_lira",
        "advantage_lira",
    )
    row = {
        "setting": setting.name,
        "row": label,
        "epsilon": epsilon,
        "delta": DELTA if spec.dp else None,
        "noise_multiplier": float(spec.dp_noise_multiplier),
        "sample_rate": spec.dp_sample_rate if spec.dp else None,
        "learning_rate": spec.learning_rate,
        "rounds": spec.rounds,
        "local_epochs": spec.epochs,
        "seconds": time.perf_counter() - t0,
        **{k: summary(per_seed, k) for k in keys},
    }
    print(
        f"{setting.name}, {label}: accuracy {row['accuracy']['mean']:.3f}, "
        f"AUC LiRA {row['auc_lira']['mean']:.3f}, "
        f"threshold {row['auc_threshold']['mean']:.3f} ({row['seconds']:.0f} s)",
        flush=True,
    )
    return row


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"# Differential privacy on a network: accuracy and membership-attack AUC (digits, "
        f"MLP 64-32-10, {PARTIES} parties, FedAvg)",
        "",
        f"Mean ± standard deviation over {args.seeds} games; the rest of the 1,797 digits "
        f"after members and non-members is the population; LiRA offline with "
        f"{args.reference_models} reference models; delta {DELTA:g}; accuracy on the "
        "non-members. Generated by `benchmarks/bench_dp_network.py`.",
        "",
    ]
    for setting in SETTINGS:
        out += [
            f"## {setting.name}: {setting.members} members, {setting.nonmembers} non-members",
            "",
            "| model | epsilon | noise multiplier | sampling rate | rounds | learning rate "
            "| accuracy | training accuracy | AUC threshold | AUC LiRA | TPR@1% FPR LiRA |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["setting"] != setting.name:
                continue
            eps = (
                "-"
                if not r["delta"]
                else "inf"
                if math.isinf(r["epsilon"])
                else f"{r['epsilon']:.3g}"
            )
            q = "-" if r["sample_rate"] is None else f"{r['sample_rate']:g}"
            out.append(
                f"| {r['row']} | {eps} | {r['noise_multiplier']:.3g} | {q} | {r['rounds']} "
                f"| {r['learning_rate']:g} | {fmt(r['accuracy'])} | {fmt(r['train_accuracy'])} "
                f"| {fmt(r['auc_threshold'])} | {fmt(r['auc_lira'])} "
                f"| {fmt(r['tpr_at_1pct_lira'])} |"
            )
        out.append("")
    out += [
        "Rows: *no DP* is FedAvg with the app's own local training (SGD, momentum 0.9, "
        "5 local epochs of batch 8 per round, learning rate 0.05), which overfits the "
        "members; *clip only* runs the DP rounds (Poisson batches at the sampling rate, "
        "one DP-SGD step per round, per-example gradients clipped to L2 norm "
        f"{args.clip:g}) without noise; the epsilon rows add the noise the RDP accountant "
        "asks for. Over real node processes the same rounds add the same noise under "
        "encryption, each node a share (`tests/e2e/test_fedavg.py` checks its spread).",
        "",
    ]
    return "\n".join(out)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = {"standard": "tab:blue", "overfit-prone": "tab:red"}
    for setting in SETTINGS:
        mine = [r for r in rows if r["setting"] == setting.name]
        draw_setting(axes, mine, setting.name, colors[setting.name])
    axes[1].axhline(0.5, color="gray", lw=0.8)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7)
    save(fig, "phe-fl FedAvg, digits MLP 64-32-10, 4 parties: DP vs accuracy and membership", path)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--reference-models", type=int, default=16)
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--replot", action="store_true", help="redraw the PNG from the JSON")
    args = p.parse_args()
    if args.replot:
        rows = json.loads((args.out / "dp-network.json").read_text())["rows"]
        plot(rows, args.out / "dp-network.png")
        return 0
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's order warnings
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    for setting in SETTINGS:
        plain = FedAvgSpec(
            "digits",
            rounds=setting.plain_rounds,
            epochs=setting.local_epochs,
            batch_size=8,
            learning_rate=0.05,
        )
        rows.append(one_row(setting, "no DP", plain, math.inf, args))
        q = setting.sample_rate
        dp = FedAvgSpec(
            "digits",
            rounds=setting.rounds,
            learning_rate=setting.dp_learning_rate,
            dp_noise_multiplier=NO_NOISE,
            dp_clip=args.clip,
            dp_sample_rate=q,
        )
        rows.append(one_row(setting, "clip only", dp, math.inf, args))
        for eps in args.epsilons:
            sigma = noise_for(eps, DELTA, q, setting.rounds)
            spent = epsilon_spent(sigma, q, setting.rounds, DELTA)
            spec = replace(dp, dp_noise_multiplier=sigma)
            rows.append(one_row(setting, f"DP eps {eps:g}", spec, spent, args))
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": "scikit-learn digits (1,797 x 64, 10 classes)",
        "model": "MLP 64-32-10 (ReLU), phe_fl.fedavg.examples digits app",
        "parties": PARTIES,
        "seeds": args.seeds,
        "settings": [setting.__dict__ for setting in SETTINGS],
        "reference_models": args.reference_models,
        "delta": DELTA,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "seconds": time.perf_counter() - t0,
    }
    (args.out / "dp-network.json").write_text(
        json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n"
    )
    md = markdown(rows, args)
    (args.out / "dp-network.md").write_text(md)
    plot(rows, args.out / "dp-network.png")
    print(md)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
