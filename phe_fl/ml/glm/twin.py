"""The plaintext twin of GLM training: exactly the encrypted run's math in numpy."""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.ml.activations import sigmoid
from phe_fl.ml.glm.job import TrainingJob, design_matrix
from phe_fl.ml.glm.margins import DPMarginError, MarginCheck, report_margin
from phe_fl.ml.glm.party import dp_draws
from phe_fl.ml.jobs import Shard, batch_rows, validate_shards

__all__ = ["PlaintextResult", "train_plaintext", "predict_proba", "predict"]


@dataclass
class PlaintextResult:
    """The twin's weights after each iteration, and the largest margin |x . w| each
    iteration fed to the activation: margins beyond the activation's interval are where
    the polynomial stops looking like a sigmoid (lower the learning rate or widen it)."""

    weights: FloatArray
    history: list[FloatArray]
    max_abs_margin: list[float]
    left_interval: MarginCheck | None = None
    """The first iteration whose margins left the activation's interval (logistic
    regression; ``None`` if none did). It is also reported with a :class:`MarginWarning`."""


def train_plaintext(
    job: TrainingJob,
    shards: Sequence[Shard],
    initial_weights: FloatArray | None = None,
    *,
    dp_seeds: Sequence[int] | None = None,
) -> PlaintextResult:
    """Exactly the encrypted run's math in numpy: same clip, polynomial, batches and update.
    The first iteration whose margins leave the activation's interval is reported
    (:attr:`PlaintextResult.left_interval`, a :class:`MarginWarning` and a WARNING on the
    ``phe_fl.ml`` logger).

    A differentially private job samples and adds noise like the parties do
    (:func:`dp_draws`, one seed per shard: the parties' ``dp_seed`` gives the encrypted
    run's very draws; ``None`` draws fresh seeds from :mod:`secrets`), and stops with
    :class:`DPMarginError` at the first iteration whose margins leave the interval."""
    data = [(design_matrix(job, x), y) for x, y in validate_shards(job, shards)]
    seeds: list[int] = []
    if job.dp:
        seeds = (
            [secrets.randbits(128) for _ in data]
            if dp_seeds is None
            else [int(v) for v in dp_seeds]
        )
        if len(seeds) != len(data):
            raise ParameterError(f"{len(seeds)} dp_seeds for {len(data)} parties")
    total_rows = sum(len(y) for _, y in data)
    share_std = job.dp_noise_std / math.sqrt(len(data)) if job.dp else 0.0
    act = job.activation
    w = np.zeros(job.n_weights) if initial_weights is None else np.array(initial_weights, float)
    d = np.zeros_like(w)  # the last step w_t - w_{t-1} (momentum)
    history, margins = [w.copy()], []
    left: MarginCheck | None = None
    for it in range(job.iterations):
        fixed = [batch_rows(len(y), job.batch_size, it) for _, y in data]
        expected = sum(len(r) for r in fixed)  # the federation's (public) global batch
        eta = job.learning_rate / expected
        g = np.zeros_like(w)
        if job.dp:
            q = min(1.0, expected / total_rows)
            draws = [
                dp_draws(seed, it, len(y), q, job.n_weights)
                for seed, (_, y) in zip(seeds, data, strict=True)
            ]
            batches = [rows for rows, _ in draws]
            for _, noise in draws:
                g += eta * share_std * noise
        else:
            batches = fixed
        worst = 0.0
        for (x, y), rows in zip(data, batches, strict=True):
            if not len(rows):
                continue
            xb, yb = x[rows], y[rows]
            z = xb @ w
            worst = max(worst, float(np.abs(z).max()))
            g += xb.T @ (eta * (act(z) - yb))
        d = job.momentum * d - g
        w = w + (job.momentum * d - g if job.nesterov else d)
        history.append(w.copy())
        margins.append(worst)
        bound = float(job.activation_bound)
        if job.model == "logistic" and left is None and not worst <= bound:
            left = MarginCheck(it, worst, worst, bound, overflowed=not math.isfinite(worst))
            report_margin(left)
            if job.dp:
                raise DPMarginError(
                    f"differentially private training stopped: {left.message()}; the "
                    f"per-record bound dp_residual_bound * dp_clip no longer holds"
                )
    return PlaintextResult(w, history, margins, left)


def predict_proba(job: TrainingJob, weights: FloatArray, x: FloatArray) -> FloatArray:
    """Plaintext prediction with the exact sigmoid (logistic) or the identity (linear)."""
    z = design_matrix(job, x) @ np.asarray(weights, dtype=np.float64)
    return sigmoid(z) if job.model == "logistic" else z


def predict(job: TrainingJob, weights: FloatArray, x: FloatArray) -> FloatArray:
    p = predict_proba(job, weights, x)
    return (p >= 0.5).astype(np.float64) if job.model == "logistic" else p
