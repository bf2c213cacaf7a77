"""Observer (b): the server of a plain federated setup, which sees every party's update.

For comparison with phe-fl, whose aggregators see only ciphertexts, this is FedAvg
(McMahan et al. 2017) of logistic regression over numpy parties, in the clear: each round
the server sends the global weights ``w_t``, party ``k`` runs ``local_epochs`` of gradient
descent on its rows and returns ``delta_kt = w_k - w_t``, the server averages the deltas
weighted by the parties' row counts. Features are standardized with pooled statistics and
clipped, as phe-fl's PREPARE does, so both systems train on the same inputs.

Two attacks of the passive server, both from per-sample gradients at the ``w_t`` it sent:

* ``"similarity"`` (:func:`gradient_scores`): the gradient attack of Nasr et al. (S&P
  2019) in an unsupervised form: a row's gradient points the way its owner's update moved
  if the row was in that party's batch. The score is the largest, over parties, of the
  mean over rounds of the cosine between the row's gradient and the party's descent
  direction ``-delta_kt`` minus the round's average direction over parties (every row's
  gradient shares the population's mean direction, which says nothing about membership).
* ``"decomposition"`` (:func:`decomposition_scores`): with one local step a party's update
  is exactly ``-lr / n_k`` times the sum of its rows' gradients, so its whole trajectory
  over the rounds is a non-negative combination of the candidates' gradient trajectories
  (``rounds x (features + 1)`` equations). Non-negative least squares over the audited
  rows recovers the coefficients: about 1 (after scaling by ``n_k / lr``) for a row of
  party ``k``, 0 for a row nobody held. The score is the largest coefficient over
  parties. With several local steps the update is no longer linear in the gradients at
  ``w_t`` and the attack weakens; both are reported.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.ml.activations import sigmoid
from phe_fl.ml.datasets import apply_standardization, split, standardize
from phe_fl.privacy.attacks import AttackResult, AuditData, confidence_signal
from phe_fl.privacy.metrics import FloatArray, attack_metrics, roc_curve
from phe_fl.privacy.models import as_probabilities

__all__ = [
    "FedAvgConfig",
    "FedAvgTranscript",
    "ServerAttack",
    "train_fedavg",
    "gradient_scores",
    "decomposition_scores",
    "gradient_attack",
]

ServerAttack = Literal["similarity", "decomposition"]


@dataclass(frozen=True)
class FedAvgConfig:
    """Plain FedAvg of logistic regression. ``batch_size`` per local step (``None``: the
    party's whole shard, one step per local epoch)."""

    n_parties: int = 4
    rounds: int = 20
    learning_rate: float = 0.2
    local_epochs: int = 1
    batch_size: int | None = None
    feature_clip: float = 4.0

    def __post_init__(self) -> None:
        for name in ("n_parties", "rounds", "local_epochs"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ParameterError(f"FedAvg: {name} must be a positive integer, got {v!r}")
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ParameterError(
                f"FedAvg: batch_size must be a positive integer or None, got {b!r}"
            )
        for name in ("learning_rate", "feature_clip"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or not v > 0 or math.isnan(v):
                raise ParameterError(f"FedAvg: {name} must be a number > 0, got {v!r}")


def _inputs(z: FloatArray, clip: float) -> FloatArray:
    c = np.clip(z, -clip, clip)
    return np.hstack([c, np.ones((c.shape[0], 1))])


@dataclass
class FedAvgTranscript:
    """Everything the server saw: the global weights it sent each round (``globals[t]``)
    and every party's update (``updates[t][k]``), plus the pooled statistics and the
    party sizes it needs to score rows and weigh updates."""

    config: FedAvgConfig
    mean: FloatArray
    std: FloatArray
    party_sizes: list[int]
    globals: list[FloatArray] = field(default_factory=list)
    updates: list[FloatArray] = field(default_factory=list)
    weights: FloatArray = field(default_factory=lambda: np.zeros(0))

    def design(self, x: FloatArray) -> FloatArray:
        """Raw rows as the model sees them: standardized, clipped, with a column of ones."""
        return _inputs(apply_standardization(x, self.mean, self.std), self.config.feature_clip)

    def __call__(self, x: FloatArray) -> FloatArray:
        """The trained global model's probabilities (what a querier of it would get)."""
        rows = self.design(np.asarray(x, dtype=np.float64))
        return as_probabilities(sigmoid(rows @ self.weights), rows.shape[0])


def train_fedavg(
    x: FloatArray, y: FloatArray, config: FedAvgConfig, seed: int = 0
) -> FedAvgTranscript:
    """Train plain FedAvg on ``(x, y)`` dealt IID to ``config.n_parties`` parties (the
    same seeded split as phe-fl's experiments) and record the server's view."""
    shards, mean, std = standardize(split(x, y, config.n_parties, "iid", seed))
    tr = FedAvgTranscript(config, mean, std, [int(s[1].size) for s in shards])
    data = [(_inputs(xs, config.feature_clip), ys) for xs, ys in shards]
    sizes = np.asarray(tr.party_sizes, dtype=np.float64)
    w: FloatArray = np.zeros(data[0][0].shape[1])
    for _ in range(config.rounds):
        tr.globals.append(w.copy())
        deltas = np.empty((len(data), w.size))
        for k, (xk, yk) in enumerate(data):
            wk: FloatArray = w.copy()
            b = yk.size if config.batch_size is None else min(config.batch_size, yk.size)
            for _ in range(config.local_epochs):
                for start in range(0, yk.size, b):
                    xb, yb = xk[start : start + b], yk[start : start + b]
                    wk = wk - config.learning_rate * xb.T @ (sigmoid(xb @ wk) - yb) / yb.size
            deltas[k] = wk - w
        tr.updates.append(deltas)
        w = w + (sizes[:, None] * deltas).sum(axis=0) / sizes.sum()
    tr.weights = w
    return tr


def gradient_scores(transcript: FedAvgTranscript, x: FloatArray, y: FloatArray) -> FloatArray:
    """The server's membership score of each row (see the module doc)."""
    rows = transcript.design(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    n_parties = len(transcript.party_sizes)
    total = np.zeros((rows.shape[0], n_parties))
    for w, deltas in zip(transcript.globals, transcript.updates, strict=True):
        g = rows * (sigmoid(rows @ w) - y)[:, None]  # per-sample gradients at w_t
        u = -deltas - (-deltas).mean(axis=0)  # each party's direction minus the round's mean
        gn = g / np.maximum(np.linalg.norm(g, axis=1, keepdims=True), 1e-12)
        un = u / np.maximum(np.linalg.norm(u, axis=1, keepdims=True), 1e-12)
        total += gn @ un.T
    return np.asarray(total.max(axis=1) / len(transcript.globals), dtype=np.float64)


def _gradients(transcript: FedAvgTranscript, x: FloatArray, y: FloatArray) -> FloatArray:
    """Every row's gradient trajectory: ``rows x (rounds * (features + 1))``."""
    rows = transcript.design(np.asarray(x, dtype=np.float64))
    y = np.asarray(y, dtype=np.float64)
    return np.concatenate(
        [rows * (sigmoid(rows @ w) - y)[:, None] for w in transcript.globals], axis=1
    )


def decomposition_scores(transcript: FedAvgTranscript, x: FloatArray, y: FloatArray) -> FloatArray:
    """The server's decomposition score of each row, the rows given scored jointly (see
    the module doc)."""
    nnls: Callable[..., Any] = importlib.import_module("scipy.optimize").nnls
    g = _gradients(transcript, x, y).T  # equations x candidates
    best: FloatArray = np.zeros(g.shape[1])
    scale = transcript.config.learning_rate
    for k, n_k in enumerate(transcript.party_sizes):
        u = np.concatenate([-deltas[k] for deltas in transcript.updates]) * n_k / scale
        coef = np.asarray(nnls(g, u, maxiter=50 * g.shape[1])[0], dtype=np.float64)
        best = np.asarray(np.maximum(best, coef), dtype=np.float64)
    return best


def gradient_attack(
    transcript: FedAvgTranscript,
    data: AuditData,
    *,
    method: ServerAttack = "similarity",
    observer: str = "FedAvg server (plain FL)",
    model_name: str = "logistic regression (plain FedAvg)",
) -> AttackResult:
    """The server's attack on the audited rows; the details also give the threshold
    attack's AUC against the FedAvg model (what a querier of it would learn)."""
    mx, my = data.members
    nx, ny = data.nonmembers
    if method == "similarity":
        roc = roc_curve(gradient_scores(transcript, mx, my), gradient_scores(transcript, nx, ny))
        name = "gradient similarity to observed updates (Nasr et al., unsupervised)"
    elif method == "decomposition":
        both = decomposition_scores(transcript, np.vstack([mx, nx]), np.concatenate([my, ny]))
        roc = roc_curve(both[: my.size], both[my.size :])
        name = "update decomposition (non-negative least squares on per-sample gradients)"
    else:
        raise ParameterError(
            f"server attack must be 'similarity' or 'decomposition', got {method!r}"
        )
    q = roc_curve(confidence_signal(transcript, mx, my), confidence_signal(transcript, nx, ny))
    cfg = transcript.config
    return AttackResult(
        observer,
        name,
        model_name,
        roc,
        attack_metrics(roc),
        details={
            "rounds": cfg.rounds,
            "parties": cfg.n_parties,
            "local_epochs": cfg.local_epochs,
            "querier_threshold_auc": attack_metrics(q).auc,
        },
    )
