"""ROC, AUC, TPR at a low FPR and advantage of a membership attack.

A membership attack gives every audited row a score (higher: "more likely a member").
The auditor knows which rows were members, so the attack is judged as a binary test:
the ROC curve over every threshold, its area (0.5: the attack cannot tell members from
non-members), the true-positive rate at a false-positive rate of 0.1% and 1% (what
matters for the few individuals an attacker can be confident about, Carlini et al.
2022) and the advantage ``max(TPR - FPR)`` (Yeom et al. 2018).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from phe_fl.errors import ParameterError

__all__ = [
    "FloatArray",
    "RocCurve",
    "AttackMetrics",
    "roc_curve",
    "auc",
    "tpr_at_fpr",
    "advantage",
    "attack_metrics",
]

FloatArray = npt.NDArray[np.float64]

LOW_FPRS = (0.001, 0.01)
"""The false-positive rates every report states the TPR at."""


@dataclass(frozen=True)
class RocCurve:
    """Operating points of a threshold sweep, from (0, 0) to (1, 1), FPR non-decreasing.
    ``n_members`` and ``n_nonmembers`` fix the resolution: an FPR below
    ``1 / n_nonmembers`` can only be read as FPR 0."""

    fpr: FloatArray
    tpr: FloatArray
    n_members: int
    n_nonmembers: int


@dataclass(frozen=True)
class AttackMetrics:
    """The figures of one attack: the report's table row."""

    auc: float
    tpr_at_0_1pct_fpr: float
    tpr_at_1pct_fpr: float
    advantage: float


def _scores(name: str, values: object) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ParameterError(
            f"{name} must be a non-empty 1-D array of scores, got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ParameterError(f"{name} contain NaN or infinite scores")
    return arr


def roc_curve(member_scores: object, nonmember_scores: object) -> RocCurve:
    """The ROC of "member if score >= t" over every distinct threshold ``t``; tied scores
    move TPR and FPR together (one diagonal step), so ties never flatter an attack."""
    m = _scores("member scores", member_scores)
    n = _scores("non-member scores", nonmember_scores)
    scores = np.concatenate([m, n])
    is_member = np.concatenate([np.ones(m.size), np.zeros(n.size)])
    order = np.argsort(-scores, kind="mergesort")
    s, lab = scores[order], is_member[order]
    tp = np.cumsum(lab)
    fp = np.cumsum(1.0 - lab)
    last = np.r_[np.flatnonzero(np.diff(s) != 0), s.size - 1]  # end of each tie group
    tpr = np.r_[0.0, tp[last] / m.size]
    fpr = np.r_[0.0, fp[last] / n.size]
    return RocCurve(fpr, tpr, int(m.size), int(n.size))


def auc(roc: RocCurve) -> float:
    """Area under the ROC curve (trapezoids: a tie counts one half, as in Mann-Whitney U)."""
    return float(np.sum(np.diff(roc.fpr) * (roc.tpr[1:] + roc.tpr[:-1]) / 2.0))


def tpr_at_fpr(roc: RocCurve, fpr: float) -> float:
    """The best TPR among thresholds whose FPR is at most ``fpr`` (never interpolated:
    an attacker must pick a threshold)."""
    if not 0.0 <= fpr <= 1.0:
        raise ParameterError(f"target FPR must be in [0, 1], got {fpr!r}")
    ok = roc.fpr <= fpr + 1e-12
    return float(roc.tpr[ok].max())


def advantage(roc: RocCurve) -> float:
    """``max(TPR - FPR)`` over thresholds: the membership advantage of Yeom et al."""
    return float(np.max(roc.tpr - roc.fpr))


def attack_metrics(roc: RocCurve) -> AttackMetrics:
    return AttackMetrics(
        auc=auc(roc),
        tpr_at_0_1pct_fpr=tpr_at_fpr(roc, LOW_FPRS[0]),
        tpr_at_1pct_fpr=tpr_at_fpr(roc, LOW_FPRS[1]),
        advantage=advantage(roc),
    )
