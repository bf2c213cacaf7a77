"""Models as an observer sees them: functions from rows to class probabilities.

An attack needs nothing but what the observer receives. The querier of phe-fl receives
one score per row (:func:`phe_fl.ml.glm.decode_scores`); the plaintext twin
computes the same polynomial math, so the twin's scores equal the querier's up to CKKS
noise (about 1e-5 after release rounding), far below what moves a membership score. A
scikit-learn estimator is seen through ``predict_proba``.

A reference attack also needs to train more models *the same way* as the target
(:class:`Trainer`): for a phe-fl GLM that is the twin trainer
(:func:`phe_fl.ml.glm.train_plaintext`, the exact math of the encrypted run) on the same
number of parties, with the same pooled standardization PREPARE applies; for an estimator,
a fresh clone with the same hyperparameters.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.ml.activations import sigmoid
from phe_fl.ml.datasets import apply_standardization, split, standardize
from phe_fl.ml.glm import TrainingJob, design_matrix, train_plaintext
from phe_fl.privacy.metrics import FloatArray

__all__ = [
    "ScoreFn",
    "Trainer",
    "GLMOutput",
    "GLMTwinModel",
    "GLMTwinTrainer",
    "SklearnModel",
    "SklearnTrainer",
    "as_probabilities",
    "label_logit",
]

ScoreFn = Callable[[FloatArray], FloatArray]
"""Rows (n x f) to class probabilities (n x classes; a length-n vector is read as the
probability of class 1 of a binary model)."""

GLMOutput = Literal["activation", "margin"]


class Trainer(Protocol):
    """Trains a model of the target's family with the target's procedure."""

    @property
    def name(self) -> str: ...

    def fit(self, x: FloatArray, y: FloatArray, seed: int) -> ScoreFn: ...


def as_probabilities(scores: object, n_rows: int) -> FloatArray:
    """``n x classes`` probabilities from a model's output (a vector: binary, class 1)."""
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim == 1:
        p = np.clip(arr, 0.0, 1.0)
        arr = np.column_stack([1.0 - p, p])
    if arr.ndim != 2 or arr.shape[0] != n_rows or arr.shape[1] < 2:
        raise ParameterError(
            f"a model must return {n_rows} probabilities (a vector) or {n_rows} x classes, "
            f"got shape {arr.shape}"
        )
    if not np.isfinite(arr).all():
        raise ParameterError("the model returned NaN or infinite scores")
    return arr


def label_logit(probabilities: FloatArray, y: FloatArray) -> FloatArray:
    """``log p_y - log(1 - p_y)`` of each row's true label: LiRA's logit-scaled confidence
    (roughly Gaussian across models, unlike ``p_y``), and minus it is monotone in the
    cross-entropy loss, so a threshold on it is the loss attack. Probabilities are bounded
    away from 0 and 1 by 1e-300 so that saturated rows keep a finite (large) score."""
    labels = np.asarray(y)
    k = probabilities.shape[1]
    idx = labels.astype(np.intp)
    if labels.ndim != 1 or labels.shape[0] != probabilities.shape[0]:
        raise ParameterError("labels must be a vector with one entry per row")
    if np.any(idx != labels) or np.any(idx < 0) or np.any(idx >= k):
        raise ParameterError(f"labels must be integers in 0..{k - 1}")
    rows = np.arange(idx.size)
    p = probabilities[rows, idx]
    rest = probabilities.sum(axis=1) - p
    tiny = 1e-300
    return np.asarray(
        np.log(np.maximum(p, tiny)) - np.log(np.maximum(rest, tiny)), dtype=np.float64
    )


# -- phe-fl's GLM through its plaintext twin ---------------------------------------------------
@dataclass(frozen=True)
class GLMTwinModel:
    """The querier's view of a phe-fl logistic-regression model: raw rows are standardized
    with the training's pooled statistics (what the querier is given by the stats job),
    clipped and scored exactly like :func:`~phe_fl.ml.glm.decode_scores`:
    ``output="activation"`` returns the activation polynomial clipped to [0, 1] (the
    default prediction), ``"margin"`` the exact sigmoid of the margin."""

    job: TrainingJob
    weights: FloatArray
    mean: FloatArray
    std: FloatArray
    output: GLMOutput = "activation"

    def __call__(self, x: FloatArray) -> FloatArray:
        rows = design_matrix(self.job, apply_standardization(x, self.mean, self.std))
        z = rows @ np.asarray(self.weights, dtype=np.float64)
        if self.output == "margin":
            p = sigmoid(z)
        else:
            p = np.clip(self.job.activation(z), 0.0, 1.0)
        return as_probabilities(p, rows.shape[0])


@dataclass(frozen=True)
class GLMTwinTrainer:
    """Trains a phe-fl logistic regression the way the federation does, in plaintext: the
    rows dealt to ``n_parties`` (seeded IID split), every shard standardized with the
    pooled statistics (PREPARE), then :func:`~phe_fl.ml.glm.train_plaintext`, which runs
    the encrypted run's polynomial gradient descent with its batches and update."""

    job: TrainingJob
    n_parties: int = 1
    output: GLMOutput = "activation"

    def __post_init__(self) -> None:
        if self.job.model != "logistic":
            raise ParameterError("membership audit: the GLM must be logistic regression")
        if isinstance(self.n_parties, bool) or not isinstance(self.n_parties, int):
            raise ParameterError(f"n_parties must be a positive integer, got {self.n_parties!r}")
        if self.n_parties < 1:
            raise ParameterError(f"n_parties must be a positive integer, got {self.n_parties!r}")
        if self.output not in ("activation", "margin"):
            raise ParameterError(f"output must be 'activation' or 'margin', got {self.output!r}")

    @property
    def name(self) -> str:
        return (
            f"phe-fl logistic regression (plaintext twin, {self.job.iterations} iterations, "
            f"{self.n_parties} parties, degree-{self.job.activation_degree} sigmoid)"
        )

    def fit(self, x: FloatArray, y: FloatArray, seed: int) -> GLMTwinModel:
        shards, mean, std = standardize(split(x, y, self.n_parties, "iid", seed))
        result = train_plaintext(self.job, shards)
        return GLMTwinModel(self.job, result.weights, mean, std, self.output)


# -- scikit-learn ------------------------------------------------------------------------------
@dataclass(frozen=True)
class SklearnModel:
    """A fitted estimator's ``predict_proba`` with one column per class ``0..n_classes-1``
    (a class the training rows lacked gets probability 0)."""

    estimator: Any
    n_classes: int

    def __call__(self, x: FloatArray) -> FloatArray:
        proba = np.asarray(self.estimator.predict_proba(x), dtype=np.float64)
        classes = np.asarray(self.estimator.classes_).astype(np.intp)
        out = np.zeros((proba.shape[0], self.n_classes))
        out[:, classes] = proba
        return as_probabilities(out, proba.shape[0])


@dataclass(frozen=True)
class SklearnTrainer:
    """Fresh clones of ``estimator`` (same hyperparameters), ``random_state`` set to the
    seed when the estimator (or a pipeline step) has one."""

    estimator: Any
    n_classes: int = 2
    label: str = field(default="")

    @property
    def name(self) -> str:
        return self.label or type(self.estimator).__name__

    def fit(self, x: FloatArray, y: FloatArray, seed: int) -> SklearnModel:
        from sklearn.base import clone

        est = clone(self.estimator)
        params = est.get_params(deep=True)
        seeded = {k: seed for k in params if k == "random_state" or k.endswith("__random_state")}
        if seeded:
            est.set_params(**seeded)
        est.fit(np.asarray(x, dtype=np.float64), np.asarray(y).astype(np.intp))
        return SklearnModel(est, self.n_classes)
