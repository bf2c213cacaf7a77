#!/usr/bin/env python3
"""Differential privacy (issue 12): accuracy and membership-attack AUC against epsilon.

phe-fl logistic regression on Breast Cancer Wisconsin (569 x 30), 4 parties (IID split,
pooled standardization as PREPARE does), trained by the plaintext twin, which runs the
encrypted run's math and, for a DP job, the same Poisson sampling and the same noise
distribution (each party's share of the Gaussian noise; equal to the encrypted run for the
same draws, checked in tests/unit/test_dp.py). Rows, for each of two settings:

* no DP (the job's defaults: learning rate 0.2, fixed batches, no row clip);
* DP machinery without noise (rows clipped to L2 norm ``dp_clip``, Poisson batches, noise
  multiplier ~0: epsilon infinite), to separate what the clip costs from what noise costs;
* DP at epsilon 1, 4 and 16 (delta 1e-5): the noise multiplier is the smallest reaching
  the target by dp-accounting's RDP accountant (``phe_fl.privacy.accounting.noise_for``)
  for the setting's sampling rate and iteration count.

Settings: ``standard`` (200 members, batch 25 per party, 40 iterations) and
``overfit-prone`` (20 members, 5 per party, 500 iterations: few rows, many passes, where
the attack has something to find). The querier's view (its predictions: the activation
polynomial clipped to [0, 1]) is attacked with phe_fl.privacy's population-calibrated
threshold attack and LiRA offline (reference models trained the same way, DP included,
on population rows). Accuracy is on the 200 non-members (never trained on). Every figure
is the mean (and standard deviation) over ``--seeds`` games (splits, trainings, noise).

The DP learning rate is lowered as the noise grows, by a rule on public numbers only
(:meth:`Setting.learning_rate`), so that the margins stay in the activation's interval;
a game whose margins still leave it stops (``DPMarginError``) and is counted.

The twin's party seeds are derived from the game's seed so the figure reproduces; in a
deployment every party draws its seed from ``secrets``.

    ./dev run python benchmarks/bench_dp.py          # ~4-5 min on two cores

Results: ``benchmarks/results/dp/`` (``dp.json``, ``dp.md``, ``dp.png``).
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
try:  # run from a checkout without installing: make phe_fl importable
    import phe_fl  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT))

from phe_fl.ml.datasets import load_dataset, split, standardize  # noqa: E402
from phe_fl.ml.glm import (  # noqa: E402
    DPMarginError,
    TrainingJob,  # noqa: E402
    train_plaintext,
)
from phe_fl.privacy.accounting import epsilon_spent, noise_for  # noqa: E402
from phe_fl.privacy.attacks import audit_split, reference_attack, threshold_attack  # noqa: E402
from phe_fl.privacy.audit import quiet_training  # noqa: E402
from phe_fl.privacy.models import GLMTwinModel  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from dp_figures import attack_metrics, draw_setting, fmt, save, summary  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "dp"
DELTA = 1e-5
PARTIES = 4
NO_NOISE = 1e-9  # "DP machinery, no noise": a noise multiplier nothing can see


@dataclass(frozen=True)
class Setting:
    name: str
    members: int
    batch_size: int  # per party
    iterations: int
    dp_learning_rate: float

    @property
    def sample_rate(self) -> float:
        return PARTIES * self.batch_size / self.members

    def learning_rate(self, job: TrainingJob) -> float:
        """The DP learning rate: ``dp_learning_rate``, lowered so that the noise's random
        walk over the run, ``lr * sigma * Delta * sqrt(iterations * weights) / G``, stays
        about 3 (the margins must stay in [-10, 10] for the guarantee to hold). A rule
        on public numbers only (sigma, batch, iterations, weights), so choosing it
        costs no privacy."""
        if not job.dp:
            return self.dp_learning_rate
        g = PARTIES * self.batch_size
        walk = job.dp_noise_std * math.sqrt(self.iterations * job.n_weights) / g
        return min(self.dp_learning_rate, 3.0 / walk)


SETTINGS = (
    Setting("standard", members=200, batch_size=25, iterations=40, dp_learning_rate=1.0),
    Setting("overfit-prone", members=20, batch_size=5, iterations=500, dp_learning_rate=0.2),
)


@dataclass(frozen=True)
class DPTwinTrainer:
    """:class:`phe_fl.privacy.models.GLMTwinTrainer` with the parties' DP seeds derived
    from the fit's seed (reproducible figure); the attack's reference models are trained
    the same way, noise included."""

    job: TrainingJob
    n_parties: int = PARTIES

    @property
    def name(self) -> str:
        return f"phe-fl logistic regression (twin), sigma {self.job.dp_noise_multiplier:.3g}"

    def fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> GLMTwinModel:
        shards, mean, std = standardize(split(x, y, self.n_parties, "iid", seed))
        seeds = [1_000_003 * seed + 7 * i + 1 for i in range(self.n_parties)]
        result = train_plaintext(self.job, shards, dp_seeds=seeds if self.job.dp else None)
        return GLMTwinModel(self.job, result.weights, mean, std, "activation")


def one_row(
    setting: Setting, label: str, job: TrainingJob, epsilon: float, args: argparse.Namespace
) -> dict[str, Any]:
    x, y, _ = load_dataset(args.dataset)
    per_seed: list[dict[str, float]] = []
    stopped = 0
    for seed in range(args.seeds):
        data = audit_split(x, y, members=setting.members, nonmembers=200, seed=seed)
        trainer = DPTwinTrainer(job)
        try:
            with quiet_training():
                target = trainer.fit(*data.members, seed)
                thr = threshold_attack(target, data, observer="querier")
                lira = reference_attack(
                    target, trainer, data, n_reference=args.reference_models, seed=seed
                )
        except DPMarginError:
            stopped += 1
            continue
        nx, ny = data.nonmembers
        acc = float(np.mean(np.argmax(target(nx), axis=1) == ny))
        per_seed.append({"accuracy": acc, **attack_metrics(thr, lira)})

    keys = ("accuracy", "auc_threshold", "auc_lira", "tpr_at_1pct_lira", "advantage_lira")
    return {
        "setting": setting.name,
        "row": label,
        "epsilon": epsilon,
        "delta": DELTA if job.dp else None,
        "noise_multiplier": float(job.dp_noise_multiplier),
        "learning_rate": job.learning_rate,
        "sample_rate": setting.sample_rate if job.dp else None,
        "iterations": job.iterations,
        "seeds_run": len(per_seed),
        "seeds_stopped_by_margin_check": stopped,
        **{k: summary(per_seed, k) for k in keys},
    }


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    out = [
        f"# Differential privacy: accuracy and membership-attack AUC ({args.dataset}, "
        f"{PARTIES} parties, plaintext twin)",
        "",
        f"Mean ± standard deviation over {args.seeds} games; LiRA offline with "
        f"{args.reference_models} reference models; delta {DELTA:g}; accuracy on 200 "
        f"non-members. Generated by `benchmarks/bench_dp.py`.",
        "",
    ]
    for setting in SETTINGS:
        out += [
            f"## {setting.name}: {setting.members} members, batch {setting.batch_size} per "
            f"party (sampling rate {setting.sample_rate:.2g} with DP), {setting.iterations} "
            f"iterations",
            "",
            "| model | epsilon | noise multiplier | learning rate | accuracy | AUC threshold "
            "| AUC LiRA | TPR@1% FPR LiRA | stopped |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            if r["setting"] != setting.name:
                continue
            eps = (
                "-"
                if not r["delta"]
                else ("inf" if math.isinf(r["epsilon"]) else f"{r['epsilon']:g}")
            )
            out.append(
                f"| {r['row']} | {eps} | {r['noise_multiplier']:.3g} | {r['learning_rate']:g} "
                f"| {fmt(r['accuracy'])} | {fmt(r['auc_threshold'])} | {fmt(r['auc_lira'])} "
                f"| {fmt(r['tpr_at_1pct_lira'])} | {r['seeds_stopped_by_margin_check']}/"
                f"{args.seeds} |"
            )
        out.append("")
    out += [
        "Rows: *no DP* is the job's defaults (fixed batches, no row clip); *clip only* has "
        "the DP machinery (rows clipped to L2 norm 1, Poisson batches) but no noise; the "
        "epsilon rows add the noise the RDP accountant asks for, with the learning rate "
        "lowered as the noise grows (a rule on public numbers, so that margins stay in the "
        "activation's interval); *clip only, lr of eps X* is that run without its noise, "
        "which separates what the noise does from what the smaller step does. *stopped*: "
        "games in which "
        "the margin check found margins outside the activation's interval (the DP run "
        "stops, the guarantee would not hold).",
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
        c = colors[setting.name]
        dp = draw_setting(axes, mine, setting.name, c)
        eps = [r["epsilon"] for r in dp]
        controls = []
        for r in dp:
            tag = r["row"].removeprefix("DP eps ")
            named = {x["row"]: x for x in mine}
            controls.append(named.get(f"clip only, lr of eps {tag}", named["clip only"]))
        axes[1].plot(
            eps,
            [r["auc_lira"]["mean"] for r in controls],
            marker="o",
            mfc="none",
            ls="-.",
            color=c,
            label=f"{setting.name}, same runs without the noise",
        )
    axes[1].axhline(0.5, color="gray", lw=0.8)
    axes[0].legend(fontsize=8)
    axes[1].legend(fontsize=7)
    save(
        fig,
        "phe-fl logistic regression, breast cancer, 4 parties: "
        "DP vs accuracy and membership inference",
        path,
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", default="breast_cancer")
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--reference-models", type=int, default=16)
    p.add_argument("--epsilons", type=float, nargs="+", default=[1.0, 4.0, 16.0])
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--replot", action="store_true", help="redraw dp.png from dp.json")
    args = p.parse_args()
    if args.replot:
        plot(json.loads((args.out / "dp.json").read_text())["rows"], args.out / "dp.png")
        return 0
    logging.getLogger("absl").setLevel(logging.ERROR)  # dp-accounting's order warnings
    t0 = time.perf_counter()
    x, _, desc = load_dataset(args.dataset)
    rows: list[dict[str, Any]] = []
    for setting in SETTINGS:
        base = TrainingJob(
            n_features=x.shape[1], batch_size=setting.batch_size, iterations=setting.iterations
        )
        rows.append(one_row(setting, "no DP", base, math.inf, args))
        dp = replace(base, learning_rate=setting.dp_learning_rate, dp_clip=1.0)
        rows.append(
            one_row(setting, "clip only", replace(dp, dp_noise_multiplier=NO_NOISE), math.inf, args)
        )
        for eps in args.epsilons:
            sigma = noise_for(eps, DELTA, setting.sample_rate, setting.iterations)
            spent = epsilon_spent(sigma, setting.sample_rate, setting.iterations, DELTA)
            job = replace(dp, dp_noise_multiplier=sigma)
            job = replace(job, learning_rate=setting.learning_rate(job))
            rows.append(one_row(setting, f"DP eps {eps:g}", job, spent, args))
            if job.learning_rate != dp.learning_rate:  # the same run without its noise
                control = replace(job, dp_noise_multiplier=NO_NOISE)
                label = f"clip only, lr of eps {eps:g}"
                rows.append(one_row(setting, label, control, math.inf, args))
            print(
                f"{setting.name} eps {eps:g}: sigma {sigma:.3f} ({time.perf_counter() - t0:.0f} s)"
            )
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {
        "dataset": desc,
        "parties": PARTIES,
        "seeds": args.seeds,
        "reference_models": args.reference_models,
        "delta": DELTA,
        "settings": [s.__dict__ for s in SETTINGS],
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "seconds": time.perf_counter() - t0,
    }
    (args.out / "dp.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    md = markdown(rows, args)
    (args.out / "dp.md").write_text(md)
    plot(rows, args.out / "dp.png")
    print(md)
    print(f"wrote {args.out} in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
