"""Membership inference as an indistinguishability game (as ML Privacy Meter frames it).

The auditor holds three disjoint plaintext sets it is entitled to: rows that trained the
target (members), rows that did not (non-members) and population rows from the same
distribution (for calibration and reference models; never another institution's data in
a deployment, the pooled data of an experiment in a test). Each attack scores every
member and non-member from the target's outputs alone; the ROC over those scores says how
well the observer tells them apart.

* :func:`threshold_attack` (Yeom et al. 2018; ML Privacy Meter's population attack): the
  signal is the logit-scaled confidence in the true label (minus it is monotone in the
  loss); thresholds come from the population's signal quantiles, so a threshold chosen
  for FPR ``a`` on the population is reported with the FPR it really has on non-members.
* :func:`reference_attack`: LiRA offline (Carlini et al. 2022). ``k`` reference models are
  trained with the target's procedure on random population subsets of the target's
  training size (so none saw an audited row); the target's signal on a row is compared
  with the Gaussian its reference models give that row. Offline only: the online variant
  needs models trained *with* each audited row, ``k`` trainings per row.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.privacy.metrics import AttackMetrics, FloatArray, RocCurve, attack_metrics, roc_curve
from phe_fl.privacy.models import ScoreFn, Trainer, as_probabilities, label_logit

__all__ = [
    "AuditData",
    "AttackResult",
    "audit_split",
    "calibrated_points",
    "confidence_signal",
    "threshold_attack",
    "reference_attack",
    "not_applicable",
]

CALIBRATION_FPRS = (0.001, 0.01, 0.1)


@dataclass(frozen=True)
class AuditData:
    """The game's three disjoint sets (features, labels): ``members`` trained the target,
    ``nonmembers`` did not, ``population`` is for calibration and reference models."""

    members: tuple[FloatArray, FloatArray]
    nonmembers: tuple[FloatArray, FloatArray]
    population: tuple[FloatArray, FloatArray]

    def __post_init__(self) -> None:
        width = None
        for name in ("members", "nonmembers", "population"):
            x, y = getattr(self, name)
            x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
            if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0] or x.shape[0] == 0:
                raise ParameterError(
                    f"audit data: {name} must be (n x f features, n labels) with n > 0, got "
                    f"{x.shape} and {y.shape}"
                )
            if width is not None and x.shape[1] != width:
                raise ParameterError(f"audit data: {name} have {x.shape[1]} features, not {width}")
            width = x.shape[1]
            if not (np.isfinite(x).all() and np.isfinite(y).all()):
                raise ParameterError(f"audit data: {name} contain NaN or infinite values")
            object.__setattr__(self, name, (x, y))
        mx, nx, px = self.members[0], self.nonmembers[0], self.population[0]
        for a, b, what in (
            (mx, nx, "members and non-members"),
            (mx, px, "members and population"),
            (nx, px, "non-members and population"),
        ):
            if _shared_rows(a, b):
                raise ParameterError(f"audit data: {what} share rows; the sets must be disjoint")

    @property
    def sizes(self) -> dict[str, int]:
        return {
            "members": int(self.members[1].size),
            "nonmembers": int(self.nonmembers[1].size),
            "population": int(self.population[1].size),
        }


def _shared_rows(a: FloatArray, b: FloatArray) -> bool:
    seen = {r.tobytes() for r in np.ascontiguousarray(a)}
    return any(r.tobytes() in seen for r in np.ascontiguousarray(b))


def audit_split(
    x: FloatArray,
    y: FloatArray,
    *,
    members: int,
    nonmembers: int,
    population: int | None = None,
    seed: int = 0,
) -> AuditData:
    """Deal a pooled table into the game's disjoint sets by a seeded shuffle; the
    population takes the rest unless ``population`` caps it. Duplicate rows of the table
    are dropped first (a row in two sets would be both member and non-member)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ParameterError(f"need X (n x f) and y (n,), got {x.shape} and {y.shape}")
    _, first = np.unique(x, axis=0, return_index=True)
    keep = np.sort(first)
    x, y = x[keep], y[keep]
    for name, v in (("members", members), ("nonmembers", nonmembers)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name} must be a positive integer, got {v!r}")
    rest = x.shape[0] - members - nonmembers
    if population is not None and (
        isinstance(population, bool) or not isinstance(population, int) or population < 1
    ):
        raise ParameterError(f"population must be a positive integer, got {population!r}")
    n_pop = rest if population is None else population
    if n_pop < 1 or n_pop > rest:
        raise ParameterError(
            f"{x.shape[0]} distinct rows cannot give {members} members, {nonmembers} non-members "
            f"and a population of {n_pop if population is not None else 'at least 1'}"
        )
    order = np.random.default_rng(seed).permutation(x.shape[0])
    m = order[:members]
    n = order[members : members + nonmembers]
    p = order[members + nonmembers : members + nonmembers + n_pop]
    return AuditData((x[m], y[m]), (x[n], y[n]), (x[p], y[p]))


@dataclass(frozen=True)
class AttackResult:
    """One row of the report: what ``observer`` learns with ``attack`` against ``model``.
    ``roc``/``metrics`` are ``None`` when no attack applies (``note`` says why)."""

    observer: str
    attack: str
    model: str
    roc: RocCurve | None
    metrics: AttackMetrics | None
    n_reference: int | None = None
    note: str = ""
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def applicable(self) -> bool:
        return self.metrics is not None


def not_applicable(observer: str, model: str, note: str) -> AttackResult:
    return AttackResult(observer, "none applies", model, None, None, note=note)


def confidence_signal(model: ScoreFn, x: FloatArray, y: FloatArray) -> FloatArray:
    """The threshold attack's per-row signal: the logit confidence of the true label."""
    return label_logit(as_probabilities(model(x), x.shape[0]), y)


def calibrated_points(
    population_signal: FloatArray,
    member_signal: FloatArray,
    nonmember_signal: FloatArray,
    fprs: tuple[float, ...] = CALIBRATION_FPRS,
) -> list[dict[str, float]]:
    """For each target FPR ``a``: the threshold an attacker without any member would pick
    (the population's ``1 - a`` signal quantile), and the TPR and FPR it really reaches on
    the audited members and non-members. A realised FPR far above ``a`` would mean the
    population is not a fair stand-in for the non-members."""
    out = []
    for a in fprs:
        t = float(np.quantile(population_signal, 1.0 - a, method="higher"))
        out.append(
            {
                "target_fpr": a,
                "threshold": t,
                "tpr": float(np.mean(member_signal > t)),
                "fpr": float(np.mean(nonmember_signal > t)),
            }
        )
    return out


def threshold_attack(
    model: ScoreFn, data: AuditData, *, observer: str = "querier", model_name: str = ""
) -> AttackResult:
    """The loss/confidence threshold attack calibrated on population data (see the module
    doc): its ROC sweeps every threshold, ``details["calibrated"]`` the population's."""
    mx, my = data.members
    nx, ny = data.nonmembers
    px, py = data.population
    sm, sn, sp = (
        confidence_signal(model, mx, my),
        confidence_signal(model, nx, ny),
        confidence_signal(model, px, py),
    )
    roc = roc_curve(sm, sn)
    return AttackResult(
        observer,
        "loss threshold (population-calibrated)",
        model_name,
        roc,
        attack_metrics(roc),
        details={"calibrated": calibrated_points(sp, sm, sn)},
    )


Variance = Literal["global", "per_row"]


def reference_attack(
    model: ScoreFn,
    trainer: Trainer,
    data: AuditData,
    *,
    n_reference: int = 8,
    train_size: int | None = None,
    variance: Variance = "global",
    seed: int = 0,
    observer: str = "querier",
    model_name: str = "",
) -> AttackResult:
    """LiRA offline with ``n_reference`` reference models (see the module doc).

    Each reference model is ``trainer.fit`` on ``train_size`` population rows drawn
    without replacement (default: the member count, at most 80% of the population, so
    the reference sets differ). The score of a row is ``(phi - mu) / sigma``: ``phi`` its
    logit confidence under the target, ``mu`` the mean over the reference models;
    ``sigma`` one standard deviation pooled over every row (``"global"``, what LiRA
    recommends below about 64 models) or the row's own (``"per_row"``)."""
    if isinstance(n_reference, bool) or not isinstance(n_reference, int) or n_reference < 2:
        raise ParameterError(f"n_reference must be an integer >= 2, got {n_reference!r}")
    if variance not in ("global", "per_row"):
        raise ParameterError(f"variance must be 'global' or 'per_row', got {variance!r}")
    px, py = data.population
    n_pop = px.shape[0]
    size = data.sizes["members"] if train_size is None else train_size
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ParameterError(f"train_size must be an integer >= 2, got {size!r}")
    size = min(size, max(2, int(0.8 * n_pop)))
    if size > n_pop:
        raise ParameterError(f"a population of {n_pop} rows cannot train reference models")
    mx, my = data.members
    nx, ny = data.nonmembers
    ex = np.vstack([mx, nx])
    ey = np.concatenate([my, ny])
    rng = np.random.default_rng(seed)
    refs = np.empty((n_reference, ey.size))
    for k in range(n_reference):
        rows = rng.choice(n_pop, size=size, replace=False)
        ref = trainer.fit(px[rows], py[rows], seed + 1 + k)
        refs[k] = confidence_signal(ref, ex, ey)
    target = confidence_signal(model, ex, ey)
    mu = refs.mean(axis=0)
    if variance == "global":
        sigma = np.full_like(mu, max(float(np.std(refs - mu)), 1e-6))
    else:
        sigma = np.maximum(refs.std(axis=0, ddof=1), 1e-6)
    score = (target - mu) / sigma
    n_m = my.size
    roc = roc_curve(score[:n_m], score[n_m:])
    return AttackResult(
        observer,
        f"reference models (LiRA offline, {variance} variance)",
        model_name,
        roc,
        attack_metrics(roc),
        n_reference=n_reference,
        details={"reference_train_size": size},
    )
