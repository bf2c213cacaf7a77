"""What the two DP benchmarks (``bench_dp.py``, ``bench_dp_network.py``) share: the mean
and spread of a row over games, its table cell, and the two panels of the figure
(accuracy and membership AUC against epsilon, one colour per setting)."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any

__all__ = ["summary", "fmt", "attack_metrics", "draw_setting", "save"]

Row = dict[str, Any]


def summary(per_game: Sequence[dict[str, float]], key: str) -> dict[str, float]:
    """Mean and standard deviation of ``key`` over the games (NaN when none ran)."""
    vals = [r[key] for r in per_game]
    if not vals:
        return {"mean": math.nan, "std": math.nan}
    return {
        "mean": statistics.fmean(vals),
        "std": statistics.stdev(vals) if len(vals) > 1 else 0.0,
    }


def fmt(s: dict[str, float], digits: int = 3) -> str:
    if math.isnan(s["mean"]):
        return "-"
    return f"{s['mean']:.{digits}f} ± {s['std']:.{digits}f}"


def attack_metrics(threshold: Any, lira: Any) -> dict[str, float]:
    """One game's attack figures, from the threshold and the LiRA attacks' results."""
    assert threshold.metrics is not None and lira.metrics is not None
    return {
        "auc_threshold": threshold.metrics.auc,
        "auc_lira": lira.metrics.auc,
        "tpr_at_1pct_lira": lira.metrics.tpr_at_1pct_fpr,
        "advantage_lira": lira.metrics.advantage,
    }


def save(fig: Any, title: str, path: Any) -> None:
    """Title, lay out, write at 120 dpi and close a figure."""
    import matplotlib.pyplot as plt

    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def draw_setting(axes: Any, rows: Sequence[Row], name: str, color: str) -> list[Row]:
    """One setting's curves on the two panels: accuracy and LiRA AUC of the DP rows
    (finite epsilon) with error bars, the row without DP as a dashed line, and the
    threshold attack's AUC; returns the DP rows drawn."""
    dp = [r for r in rows if r["delta"] and math.isfinite(r["epsilon"])]
    base = next(r for r in rows if not r["delta"])
    eps = [r["epsilon"] for r in dp]
    for ax, key, label in (
        (axes[0], "accuracy", "accuracy (non-members)"),
        (axes[1], "auc_lira", "membership AUC (LiRA)"),
    ):
        ax.errorbar(
            eps,
            [r[key]["mean"] for r in dp],
            yerr=[r[key]["std"] for r in dp],
            marker="o",
            color=color,
            capsize=3,
            label=f"{name}, DP",
        )
        ax.axhline(base[key]["mean"], color=color, ls="--", lw=1, label=f"{name}, no DP")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("epsilon (delta 1e-5)")
        ax.set_ylabel(label)
    axes[1].plot(
        eps,
        [r["auc_threshold"]["mean"] for r in dp],
        marker="x",
        ls=":",
        color=color,
        label=f"{name}, DP, threshold attack",
    )
    return dp
