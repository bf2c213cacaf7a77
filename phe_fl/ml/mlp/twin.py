"""The plaintext twin of network training: exactly the encrypted run's math in numpy."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from phe_fl.mhe.context import FloatArray
from phe_fl.ml.jobs import Shard, batch_rows, validate_shards
from phe_fl.ml.mlp.job import MLPJob
from phe_fl.ml.mlp.passes import with_bias

__all__ = ["MLPPlaintextResult", "train_plaintext_mlp", "mlp_scores", "mlp_predict"]


@dataclass
class MLPPlaintextResult:
    """The twin's weights, and per iteration the largest |pre-activation| seen by the
    hidden and output polynomials (beyond their intervals they stop approximating)."""

    weights: list[FloatArray]
    max_abs_hidden: list[float]
    max_abs_output: list[float]


def twin_forward(
    job: MLPJob, weights: Sequence[FloatArray], x: FloatArray
) -> tuple[list[FloatArray], list[FloatArray]]:
    """Inputs (bias included) and pre-activations of every layer, samples in rows."""
    g = job.hidden_act
    a = with_bias(x)
    acts, zs = [a], []
    for k, w in enumerate(weights, start=1):
        z = a @ np.asarray(w).T
        zs.append(z)
        if k < len(weights):
            a = with_bias(g(z))
            acts.append(a)
    return acts, zs


def train_plaintext_mlp(
    job: MLPJob, shards: Sequence[Shard], initial: Sequence[FloatArray] | None = None
) -> MLPPlaintextResult:
    """Exactly the encrypted run's math in numpy: same polynomials, batches and update."""
    data = [(x, y.astype(np.intp)) for x, y in validate_shards(job, shards)]
    dg, sig = job.hidden_act.derivative(), job.output_act
    ws = [np.array(w, dtype=np.float64) for w in (initial or job.initial_weights())]
    ds = [np.zeros_like(w) for w in ws]
    max_h, max_o = [], []
    for it in range(job.iterations):
        batches = [batch_rows(len(y), job.batch_size, it) for _, y in data]
        eta = job.learning_rate / sum(len(r) for r in batches)
        grads = [np.zeros_like(w) for w in ws]
        worst_h = worst_o = 0.0
        for (x, y), rows in zip(data, batches, strict=True):
            acts, zs = twin_forward(job, ws, x[rows])
            worst_o = max(worst_o, float(np.abs(zs[-1]).max()))
            if len(zs) > 1:
                worst_h = max(worst_h, max(float(np.abs(z).max()) for z in zs[:-1]))
            e = eta * (sig(zs[-1]) - np.eye(job.n_classes)[y[rows]])
            for k in range(len(ws), 0, -1):
                grads[k - 1] += e.T @ acts[k - 1]
                if k > 1:
                    e = (e @ ws[k - 1][:, :-1]) * dg(zs[k - 2])
        for k in range(len(ws)):
            ds[k] = job.momentum * ds[k] - grads[k]
            ws[k] = ws[k] + (job.momentum * ds[k] - grads[k] if job.nesterov else ds[k])
        max_h.append(worst_h)
        max_o.append(worst_o)
    return MLPPlaintextResult(ws, max_h, max_o)


def mlp_scores(job: MLPJob, weights: Sequence[FloatArray], x: FloatArray) -> FloatArray:
    """Output pre-activations of the (plaintext) model: the hidden polynomial is part of
    the model; argmax over classes is the prediction."""
    return twin_forward(job, weights, np.asarray(x, dtype=np.float64))[1][-1]


def mlp_predict(job: MLPJob, weights: Sequence[FloatArray], x: FloatArray) -> npt.NDArray[np.intp]:
    return np.asarray(np.argmax(mlp_scores(job, weights, x), axis=1), dtype=np.intp)
