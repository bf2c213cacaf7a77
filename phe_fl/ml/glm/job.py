"""A training job, declared once and checked before any key work starts.

Key generation is the expensive and collective part of a job; a typo in the config or a
shard with the wrong shape must be refused before every party has spent minutes on
keys. Every check raises :class:`~phe_fl.errors.ParameterError` with a message that says
which party or field is wrong and what to change.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.params import PARAMETER_SETS, ParameterSet, get_parameter_set
from phe_fl.ml.activations import FitMethod, PolyActivation, fit_sigmoid, identity_activation
from phe_fl.ml.glm.layout import GLMLayout
from phe_fl.ml.jobs import DEFAULT_PARAMS, check_common_fields, is_int, is_real

__all__ = ["Model", "TrainingJob", "clip_features", "clip_rows", "design_matrix"]


Model = Literal["logistic", "linear"]


@dataclass(frozen=True)
class TrainingJob:
    """Everything the parties agree on before training.

    ``batch_size`` is per party and per iteration (a party with fewer samples uses them
    all); the update is ``w <- w - learning_rate * mean gradient`` over the global batch,
    plus, when ``momentum`` ``mu`` is positive, the heavy-ball term
    ``mu * (w_t - w_{t-1})`` (the previous step is kept encrypted next to the weights), or
    with ``nesterov`` Nesterov's momentum (:mod:`phe_fl.ml.loop`; one more level an
    iteration).
    ``activation_bound`` is the half-width ``a`` of the interval ``[-a, a]`` on which the
    sigmoid is approximated; standardized data with small weights keeps margins in it.
    ``allow_model_decryption`` is each party's explicit consent to reveal the trained
    model: the model is decrypted only if every party's config says so.

    ``feature_clip`` bounds every feature the model sees to ``[-c, c]`` (:func:`clip_features`):
    each party's shard at PREPARE (after standardization), the plaintext twin, and the
    querier's samples before they are encrypted, so the clip is part of the model. A rare
    one-hot column is hundreds of deviations away from its mean after standardization;
    unclipped, one such sample throws the margin ``x . w`` far outside ``[-a, a]``, where the
    polynomial is no sigmoid and training diverges. ``math.inf`` turns the clip off.

    ``dp_noise_multiplier`` ``sigma > 0`` turns on differentially private training
    (logistic regression only; ``0`` is off): every design row (features after
    standardization and ``feature_clip``, intercept included) is scaled down to L2 norm at
    most ``dp_clip`` ``C`` (:func:`clip_rows`, on every path like the feature clip), each
    party samples its batch by Poisson sampling from a CSPRNG, and the sum of the global
    batch's gradients gets Gaussian noise of standard deviation ``sigma * Delta`` per
    weight, ``Delta = B * C`` (:attr:`dp_sensitivity`, :attr:`dp_residual_bound`), each of
    the ``N`` parties encrypting its share of variance ``(sigma * Delta)^2 / N`` into its
    own contribution. See :mod:`phe_fl.ml.glm` and :mod:`phe_fl.privacy.accounting`.

    The defaults converge on ordinary standardized tables (measured with the plaintext
    twin on breast cancer, diabetes, digits and a wide synthetic table with rare one-hot
    columns, 10 to 400 iterations): learning rate 0.2, the degree-5 least-squares sigmoid
    on [-10, 10] (degree 5 turns back towards the interval outside it, unlike degrees 3
    and 7, see :mod:`phe_fl.ml`), features clipped to 4 deviations, and the 128-bit
    :data:`DEFAULT_PARAMS`.
    """

    n_features: int
    model: Model = "logistic"
    learning_rate: float = 0.2
    batch_size: int = 16
    iterations: int = 10
    activation_degree: int = 5
    activation_bound: float = 10.0
    activation_method: FitMethod = "lstsq"
    params: str = DEFAULT_PARAMS
    fit_intercept: bool = True
    allow_model_decryption: bool = False
    momentum: float = 0.0
    feature_clip: float = 4.0
    dp_noise_multiplier: float = 0.0
    dp_clip: float = 1.0
    nesterov: bool = False

    def __post_init__(self) -> None:
        def bad(field: str, why: str) -> ParameterError:
            return ParameterError(f"training job: {field} {why}")

        check_common_fields(self, bad)
        if self.model not in ("logistic", "linear"):
            raise bad("model", f"must be 'logistic' or 'linear', got {self.model!r}")
        if self.model == "logistic":
            if not is_int(self.activation_degree) or not 1 <= self.activation_degree <= 31:
                raise bad(
                    "activation_degree",
                    f"must be an integer in 1..31 (3 is typical), got {self.activation_degree!r}",
                )
            if not is_real(self.activation_bound) or not self.activation_bound > 0:
                raise bad(
                    "activation_bound",
                    f"must be a finite number > 0, got {self.activation_bound!r}",
                )
        clip = self.feature_clip
        numeric = isinstance(clip, int | float | np.integer | np.floating)
        if not numeric or isinstance(clip, bool) or not float(clip) > 0:  # NaN fails too
            raise bad(
                "feature_clip",
                f"must be a number > 0 (4.0 is typical for standardized features, inf turns "
                f"the clip off), got {clip!r}",
            )
        sigma = self.dp_noise_multiplier
        if not is_real(sigma) or not float(sigma) >= 0:
            raise bad(
                "dp_noise_multiplier",
                f"must be a finite number >= 0 (0 turns differential privacy off), got {sigma!r}",
            )
        if not is_real(self.dp_clip) or not float(self.dp_clip) > 0:
            raise bad(
                "dp_clip",
                f"must be a finite number > 0 (the L2 bound of every design row), got "
                f"{self.dp_clip!r}",
            )
        if self.dp and self.model != "logistic":
            raise bad(
                "dp_noise_multiplier",
                f"differential privacy is implemented for model 'logistic' only (its residual "
                f"p(z) - y is bounded on the activation's interval), got model {self.model!r}; "
                f"set dp_noise_multiplier=0",
            )
        self.check_fits()

    @classmethod
    def from_record(cls, fields: Mapping[str, Any]) -> TrainingJob:
        """The job a stored record holds (its fields, as ``dataclasses.asdict`` wrote them)."""
        return cls(**fields)

    # -- derived --------------------------------------------------------------------------
    @property
    def parameter_set(self) -> ParameterSet:
        return get_parameter_set(self.params)

    @property
    def n_weights(self) -> int:
        return self.n_features + int(self.fit_intercept)

    @property
    def activation(self) -> PolyActivation:
        if self.model == "linear":
            return identity_activation()
        return fit_sigmoid(
            int(self.activation_degree), float(self.activation_bound), self.activation_method
        )

    @property
    def depth_per_iteration(self) -> int:
        """Levels one iteration takes off the weights: 1 for ``X * w``, then the activation
        (the learning rate and the data ride on its coefficient multiplications), and 1
        for Nesterov's ``mu * d`` on the weights' path."""
        return 1 + self.activation.depth + int(self.nesterov and self.momentum > 0)

    @property
    def dp(self) -> bool:
        """Differentially private training is on (``dp_noise_multiplier > 0``)."""
        return float(self.dp_noise_multiplier) > 0

    @property
    def dp_residual_bound(self) -> float:
        """``B``: the largest ``|p(z) - y|`` for ``z`` in ``[-a, a]`` and ``y`` in {0, 1},
        i.e. ``max(|p(z)|, |1 - p(z)|)`` over the interval, from the exact extremes of the
        fitted polynomial ``p`` (endpoints and the roots of ``p'``; slightly above 1 where
        the fit overshoots: 1.083 for the default degree 5 on [-10, 10]). Holds only
        while margins stay in ``[-a, a]``: outside, the polynomial is unbounded."""
        if self.model != "logistic":
            raise ParameterError(
                "training job: dp_residual_bound is defined for model 'logistic' only"
            )
        return _residual_bound(
            int(self.activation_degree), float(self.activation_bound), self.activation_method
        )

    @property
    def dp_sensitivity(self) -> float:
        """``Delta = B * C``: the L2 bound of one record's gradient ``(p(z_i) - y_i) x_i``
        (``||x_i|| <= dp_clip``), under the same margin condition as
        :attr:`dp_residual_bound`."""
        return self.dp_residual_bound * float(self.dp_clip)

    @property
    def dp_noise_std(self) -> float:
        """Standard deviation of the Gaussian noise on each weight's gradient *sum* over the
        global batch: ``sigma * Delta`` (0 without DP)."""
        return float(self.dp_noise_multiplier) * self.dp_sensitivity if self.dp else 0.0

    @property
    def label_values(self) -> tuple[float, ...] | None:
        """Allowed labels (``None``: any real target, linear regression)."""
        return (0.0, 1.0) if self.model == "logistic" else None

    @property
    def layout(self) -> GLMLayout:
        return GLMLayout(self.parameter_set.slots, self.n_weights)

    @property
    def n_weight_ciphertexts(self) -> int:
        """The model's ciphertexts: one (every weight fits one ciphertext's block)."""
        return 1

    def rotation_indices(self) -> tuple[int, ...]:
        """The rotation keys this job needs (pass to ``LocalFederation.setup``)."""
        return self.layout.rotation_indices()

    def check_fits(self) -> None:
        """Refuse a job whose iteration does not fit between two refreshes, or whose model
        does not fit the slots, saying what to change."""
        ps = self.parameter_set
        need, have = self.depth_per_iteration, ps.usable_levels
        if need > have:
            advice = []
            if self.model == "logistic":
                max_deg = (1 << (have - 1)) - 1 if have >= 2 else 0
                if max_deg >= 1:
                    advice.append(f"lower activation_degree to at most {max_deg}")
            fitting = [
                p.name
                for p in PARAMETER_SETS.values()
                if p.usable_levels >= need and self.n_weights <= (p.slots + 1) // 2
            ]
            advice.append(
                f"use a parameter set with at least {need} usable levels (mult_depth >= "
                f"{need + ps.refresh_min_levels}"
                + (f", e.g. {', '.join(fitting)})" if fitting else ")")
            )
            raise ParameterError(
                f"training job: one iteration needs {need} levels (1 for X*w + "
                f"{self.activation.depth} for the degree-{self.activation.degree} activation"
                f"{' + 1 for Nesterov momentum' if need > 1 + self.activation.depth else ''}) "
                f"but parameter set {ps.name!r} has only {have} usable levels between "
                f"refreshes (mult_depth {ps.mult_depth} minus {ps.refresh_min_levels} kept for "
                f"the refresh); " + " or ".join(advice)
            )
        self.layout  # noqa: B018 - raises if the model does not fit the slots


def clip_features(job: TrainingJob, x: FloatArray) -> FloatArray:
    """``x`` (samples x features) with every value bounded to ``[-job.feature_clip,
    job.feature_clip]``: what every party applies to its standardized shard at PREPARE,
    what the twin trains on and what a querier's standardized samples go through before
    encryption (:func:`~phe_fl.ml.glm.design_matrix` calls it, so every path that builds
    the model's inputs clips the same way)."""
    arr = np.asarray(x, dtype=np.float64)
    c = float(job.feature_clip)
    if math.isinf(c):
        return arr
    return np.asarray(np.clip(arr, -c, c), dtype=np.float64)


def clip_rows(job: TrainingJob, rows: FloatArray) -> FloatArray:
    """Design ``rows`` (after the feature clip, intercept column included) scaled down to
    L2 norm at most ``job.dp_clip`` when the job is differentially private (unchanged
    otherwise): the per-record bound ``||x_i|| <= C`` the noise is calibrated on.
    :func:`~phe_fl.ml.glm.design_matrix` applies it, so parties, the twin and the
    querier's samples all see the same transformation."""
    arr = np.asarray(rows, dtype=np.float64)
    if not job.dp:
        return arr
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    factor = np.minimum(1.0, float(job.dp_clip) / np.maximum(norms, 1e-300))
    return np.asarray(arr * factor, dtype=np.float64)


@functools.lru_cache(maxsize=64)
def _residual_bound(degree: int, bound: float, method: FitMethod) -> float:
    """Exact extremes of ``p`` on ``[-a, a]``: the endpoints and the real roots of ``p'``
    inside (``|p - y|`` is largest where ``p`` is)."""
    p = fit_sigmoid(degree, bound, method)
    deriv = np.polynomial.polynomial.polyder(np.asarray(p.coefficients))
    roots = np.polynomial.polynomial.polyroots(deriv) if deriv.size > 1 else np.array([])
    real = roots[np.abs(roots.imag) <= 1e-9].real
    z = np.concatenate([[-bound, bound], real[np.abs(real) <= bound]])
    v = p(z)
    return float(max(np.max(np.abs(v)), np.max(np.abs(1.0 - v))))


def design_matrix(job: TrainingJob, x: FloatArray) -> FloatArray:
    """Features clipped to the job's ``feature_clip`` (:func:`clip_features`)
    plus, when fitting an intercept, a trailing column of ones, and for a differentially
    private job every row scaled to L2 norm at most ``dp_clip``
    (:func:`clip_rows`): the model's input on every path (each party's
    shard, the twin, the querier's samples)."""
    x = clip_features(job, x)
    if job.fit_intercept:
        x = np.hstack([x, np.ones((x.shape[0], 1))])
    return clip_rows(job, x)
