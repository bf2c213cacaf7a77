"""Logistic and linear regression trained with the model kept encrypted
(MAP-COMBINE-REDUCE), and the plaintext twin that computes exactly the same math.

One iteration, with ``eta = learning_rate / global_batch`` and ``p`` the activation
polynomial (the fitted sigmoid, or the identity for linear regression):

* MAP (each party, on its plaintext batch and the encrypted weights ``w``):
  ``z_i = x_i . w`` (one ct x pt product and a rotate-and-add over the features), then
  ``u_ij = eta * x_ij * (p(z_i) - y_i)`` with ``eta * x_ij`` folded into the activation's
  coefficient multiplications: ``1 + depth(p)`` levels in all, no masking;
* COMBINE: the parties' ``u`` are added;
* REDUCE (root): sum over samples (rotations), align onto the weights, ``w <- w - G``;
  with momentum ``mu > 0`` (heavy ball, shared notes §7.5) the root keeps the last step
  ``d_t = w_t - w_{t-1}`` encrypted and updates ``d_{t+1} = mu * d_t - G``,
  ``w_{t+1} = w_t + d_{t+1}``.

With the sigmoid, ``p(z) - y`` is the gradient of the cross-entropy, so no derivative
polynomial is needed; with the identity it is the gradient of half the squared error.

Levels are tracked on the weights: before an iteration that would leave them with too
few levels to be refreshed afterwards, the root asks for a collective refresh. The count
per iteration is reported. The copy broadcast for MAP travels at the lowest level that
keeps this schedule (:meth:`GLMTrainer.broadcast_levels`): when the updated weights are
going to be refreshed before the next iteration anyway, MAP's depth plus what the refresh
needs; otherwise all the levels the weights have.

Momentum costs no level on the weights' path: ``mu * d_t`` takes one level off ``d_t``, which
sits at the weights' level, while ``G`` is ``depth_per_iteration >= 2`` levels below it, so
``d_{t+1}`` and ``w_{t+1}`` end at ``G``'s level exactly as without momentum. Only after a
refresh of ``w`` is ``d_t`` too deep for that; it is then refreshed in the same round
(two refreshes instead of one, each a separate collective protocol instance), so the
refresh count doubles while the number of refresh rounds stays the same.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from phe_fl.errors import LevelError, ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml.activations import sigmoid
from phe_fl.ml.federation import (
    Federation,
    LocalTrainingFederation,
    MapRequest,
    MarginProbe,
)
from phe_fl.ml.job import (
    Shard,
    ShardWorker,
    TrainingJob,
    clip_features,
    require_job_params,
    validate_shard,
    validate_shards,
)
from phe_fl.ml.packing import chunks

__all__ = [
    "batch_rows",
    "design_matrix",
    "GLMParty",
    "IterationReport",
    "MarginCheck",
    "MarginWarning",
    "EncryptedModel",
    "GLMTrainer",
    "PlaintextResult",
    "train_plaintext",
    "setup_local",
    "predict_proba",
    "predict",
]


log = logging.getLogger("phe_fl.ml")
"""Per-iteration progress (INFO) and margins that left the activation's interval (WARNING)."""


class MarginWarning(UserWarning):
    """Margins ``x . w`` left the interval the activation polynomial was fitted on: the
    polynomial is no sigmoid there and training may diverge (lower the learning rate,
    tighten ``feature_clip`` or widen ``activation_bound``)."""


@dataclass(frozen=True)
class MarginCheck:
    """How far the margins of one iteration's global batch went.

    ``low <= max |x_i . w| <= high``. The twin knows the maximum exactly (``low ==
    high``); the encrypted run learns only the consented power sum ``S = sum_i (z_i /
    2a)^p`` over the ``n`` samples of the batch, from which ``low = 2a (S / n)^(1/p)`` and
    ``high = 2a S^(1/p)``. ``left`` is certain: the margins left ``[-a, a]`` (``low > a``).
    ``overflowed``: the margins were too large to measure (``S`` came back negative or not
    finite because CKKS could not hold it, or the twin's margins overflowed float64); this
    is reported as left as well."""

    iteration: int
    low: float
    high: float
    bound: float
    overflowed: bool = False

    @property
    def left(self) -> bool:
        return self.overflowed or self.low > self.bound

    def message(self) -> str:
        if self.overflowed:
            seen = "too large to measure (it overflowed)"
        elif self.low == self.high:
            seen = f"{self.low:.4g}"
        else:
            seen = f"between {self.low:.4g} and {self.high:.4g}"
        return (
            f"iteration {self.iteration}: largest margin |x . w| {seen}, outside the "
            f"activation's interval [-{self.bound:g}, {self.bound:g}]: the polynomial is no "
            f"sigmoid there and training may diverge; lower learning_rate, tighten "
            f"feature_clip or widen activation_bound"
        )


def _report_margin(check: MarginCheck) -> None:
    log.warning("%s", check.message())
    warnings.warn(check.message(), MarginWarning, stacklevel=3)


# -- shared by the encrypted run and the twin ---------------------------------------------
def batch_rows(n_samples: int, batch_size: int, iteration: int) -> npt.NDArray[np.intp]:
    """Rows of a shard used at ``iteration``: consecutive windows that wrap around, so
    every party and the twin agree on the batches without exchanging anything."""
    b = min(batch_size, n_samples)
    start = (iteration * b) % n_samples
    return (start + np.arange(b)) % n_samples


def design_matrix(job: TrainingJob, x: FloatArray) -> FloatArray:
    """Features clipped to the job's ``feature_clip`` (:func:`~phe_fl.ml.job.clip_features`)
    plus, when fitting an intercept, a trailing column of ones: the model's input on every
    path (each party's shard, the twin, the querier's samples)."""
    x = clip_features(job, x)
    if job.fit_intercept:
        return np.hstack([x, np.ones((x.shape[0], 1))])
    return x


# -- MAP: a party ------------------------------------------------------------------------
class GLMParty(ShardWorker[TrainingJob]):
    """One party's training endpoint: its shard stays here as plaintext."""

    def __init__(self, index: int, job: TrainingJob, shard: Shard) -> None:
        x, y = validate_shard(job, shard, party=index)
        super().__init__(index, job, design_matrix(job, x), y)

    def gradient(self, request: MapRequest) -> Ciphertext:
        """Encrypted ``sum_i eta * x_ij * (p(x_i . w) - y_i)``, unreduced over samples
        (the root's all-reduce does that once for every party)."""
        if request.global_batch < 1:
            raise ProtocolError(f"party {self.index}: global batch must be positive")
        w = request.weights
        ctx: Context = w.context
        layout = self.job.layout
        if ctx.params.name != self.job.params:
            raise ProtocolError(
                f"party {self.index}: weights use parameter set {ctx.params.name!r}, the job "
                f"declares {self.job.params!r}"
            )
        if w.levels_left < self.job.depth_per_iteration:
            raise LevelError(
                f"party {self.index}: weights have {w.levels_left} levels left, an iteration "
                f"needs {self.job.depth_per_iteration}; the root must refresh them first"
            )
        act = self.job.activation
        eta = self.job.learning_rate / request.global_batch
        rows = batch_rows(self.n_samples, self.job.batch_size, request.iteration)
        x, y = self._x[rows], self._y[rows]
        out: Ciphertext | None = None
        for sl in chunks(len(rows), layout.samples_per_ct):
            xc, yc = x[sl], y[sl]
            z = ctx.rescale(ctx.mul_plain(w, layout.forward_vector(xc)))
            for step in layout.feature_sum_steps:
                z = ctx.add(z, ctx.rotate(z, step))
            back = layout.backward_vector(xc)
            u = act.encrypted(
                ctx, z, scale=eta * back, shift=-eta * layout.per_sample_vector(yc) * back
            )
            out = u if out is None else ctx.add(out, u)
        assert out is not None  # a validated shard has at least one sample
        return out

    def margin_moment(self, request: MapRequest, power: int) -> Ciphertext:
        """Encrypted ``sum_i (z_i / 2a)^power`` over this party's batch at
        ``request.iteration`` (``z_i = x_i . w``, ``a`` the activation's half-width), at
        slot 0 of each sample's block and zero elsewhere: the consented margin check
        (:meth:`GLMTrainer.check_margins`). ``power`` is a power of two; it costs ``2 +
        log2(power)`` levels of the weights."""
        w = request.weights
        ctx: Context = w.context
        layout = self.job.layout
        if power < 2 or power & (power - 1):
            raise ProtocolError(f"party {self.index}: margin power must be 2, 4, 8, ...")
        need = 1 + power.bit_length()
        if w.levels_left < need:
            raise LevelError(
                f"party {self.index}: the margin check needs {need} levels, the weights have "
                f"{w.levels_left}"
            )
        a = float(self.job.activation_bound)
        rows = batch_rows(self.n_samples, self.job.batch_size, request.iteration)
        x = self._x[rows]
        out: Ciphertext | None = None
        for sl in chunks(len(rows), layout.samples_per_ct):
            xc = x[sl]
            z = ctx.rescale(ctx.mul_plain(w, layout.forward_vector(xc)))
            for step in layout.feature_sum_steps:
                z = ctx.add(z, ctx.rotate(z, step))
            first = np.zeros((layout.samples_per_ct, layout.block))
            first[: xc.shape[0], 0] = 1.0 / (2.0 * a)
            t = ctx.rescale(ctx.mul_plain(z, first.ravel()))
            for _ in range(power.bit_length() - 1):
                t = ctx.rescale(ctx.mul(t, t))
            out = t if out is None else ctx.add(out, t)
        assert out is not None
        return out


# -- REDUCE: the root --------------------------------------------------------------------
@dataclass(frozen=True)
class IterationReport:
    iteration: int
    refreshes: int
    levels_left_before: int
    """Levels of the weights MAP computed on (the copy broadcast to the parties)."""
    levels_left_after: int
    seconds: float
    levels_dropped: int = 0
    """Levels the broadcast copy shed below the root's weights (see
    :meth:`GLMTrainer.broadcast_levels`)."""
    margin_low: float | None = None
    """With the margin check on, a lower bound of the largest margin of this iteration's
    batch (``None``: not checked); see :class:`MarginCheck`."""
    margin_high: float | None = None
    """The matching upper bound."""


@dataclass
class EncryptedModel:
    """The trained model: still encrypted, with what the run cost."""

    job: TrainingJob
    weights: Ciphertext
    reports: list[IterationReport] = field(default_factory=list)

    @property
    def refreshes_per_iteration(self) -> list[int]:
        return [r.refreshes for r in self.reports]

    @property
    def total_refreshes(self) -> int:
        return sum(self.refreshes_per_iteration)

    def decrypt(self, federation: Federation) -> FloatArray:
        """The plaintext weights (intercept last), only if every party agreed."""
        layout = self.job.layout
        slots = federation.decrypt_if_agreed(self.weights, length=layout.block)
        return layout.weights_from_slots(slots)


class GLMTrainer:
    """The root's side of training: owns the encrypted model, never a secret share."""

    def __init__(self, job: TrainingJob, federation: Federation) -> None:
        require_job_params(job, federation.ctx.params.name)
        self.job = job
        self.federation = federation
        self.layout = job.layout
        self.delta: Ciphertext | None = None
        """With momentum: the last step ``w_t - w_{t-1}`` (encrypted), ``None`` before the
        first step; reset by :meth:`encrypt_initial`."""

    def encrypt_initial(self, initial_weights: FloatArray | None = None) -> Ciphertext:
        w0 = np.zeros(self.job.n_weights) if initial_weights is None else initial_weights
        self.delta = None
        return self.federation.encrypt(self.layout.weights_vector(w0))

    def ensure_levels(self, w: Ciphertext) -> tuple[Ciphertext, int]:
        """Refresh ``w`` if the next iteration would leave it unrefreshable."""
        params = self.federation.ctx.params
        if w.levels_left - self.job.depth_per_iteration >= params.refresh_min_levels:
            return w, 0
        return self.federation.refresh(w), 1

    def ensure_delta_levels(self, w: Ciphertext) -> int:
        """With momentum: refresh the kept step if ``mu * d`` would land deeper than the
        next gradient (which happens right after ``w`` was refreshed); return how many
        refreshes that took (0 or 1)."""
        d = self.delta
        if d is None or not self.job.momentum:
            return 0
        if d.levels_left - 1 >= w.levels_left - self.job.depth_per_iteration:
            return 0
        self.delta = self.federation.refresh(d)
        return 1

    def broadcast_levels(self, w: Ciphertext, *, final: bool = False) -> int:
        """Levels the copy of ``w`` broadcast for MAP keeps (``w`` after
        :meth:`ensure_levels`): the fewer, the smaller the message down the tree.

        The gradient comes back ``depth_per_iteration`` levels below the copy, and the
        updated weights sit at the gradient's level. If they are going to be refreshed
        before the next iteration anyway (they would have fewer than ``depth +
        refresh_min_levels`` levels left), they only need to stay refreshable: the copy
        keeps ``depth + refresh_min_levels`` levels and the refresh schedule is unchanged.
        Otherwise dropping levels would force an extra refresh, so the copy keeps them all;
        likewise on the ``final`` iteration, whose weights are the model (what is done
        with it next is not known here). With momentum the kept step ``d`` needs nothing
        more: :meth:`ensure_delta_levels` keeps ``mu * d`` at or above the gradient's level.
        """
        depth = self.job.depth_per_iteration
        needed = depth + self.federation.ctx.params.refresh_min_levels
        if final or w.levels_left - depth >= needed:
            return w.levels_left
        return min(w.levels_left, needed)

    def reduce(self, w: Ciphertext, combined: Ciphertext) -> Ciphertext:
        """Sum the combined gradient over samples, align it on the weights, step (with
        momentum, also update the kept step :attr:`delta`)."""
        ctx = self.federation.ctx
        g = combined
        for step in self.layout.sample_sum_steps:
            g = ctx.add(g, ctx.rotate(g, step))
        if self.layout.align_step:
            g = ctx.rotate(g, self.layout.align_step)
        mu = float(self.job.momentum)
        if not mu:
            return ctx.sub(w, g)
        if self.delta is None:
            d = ctx.negate(g)
        else:
            d = ctx.sub(ctx.rescale(ctx.mul_plain(self.delta, mu)), g)
        self.delta = d
        return ctx.add(w, d)

    def step(
        self, w: Ciphertext, iteration: int, *, final: bool = False, check_margins: bool = False
    ) -> tuple[Ciphertext, IterationReport]:
        """One iteration; ``final``: the last one of the run (its weights are the model,
        so the copy broadcast for MAP keeps all their levels); ``check_margins``: run the
        consented margin check (:meth:`check_margins`) on the batch this iteration trains
        on, its bounds land in the report."""
        t0 = time.perf_counter()
        w, refreshes = self.ensure_levels(w)
        refreshes += self.ensure_delta_levels(w)
        check = self.check_margins(w, iteration) if check_margins else None
        sent = self.federation.ctx.drop_levels(w, self.broadcast_levels(w, final=final))
        request = MapRequest(iteration, sent, self.federation.global_batch(iteration))
        combined = self.federation.aggregate(self.federation.map(request))
        new = self.reduce(w, combined)
        report = IterationReport(
            iteration,
            refreshes,
            sent.levels_left,
            new.levels_left,
            time.perf_counter() - t0,
            levels_dropped=w.levels_left - sent.levels_left,
            margin_low=None if check is None else check.low,
            margin_high=None if check is None else check.high,
        )
        return new, report

    def check_margins(self, w: Ciphertext, iteration: int) -> MarginCheck | None:
        """The consented margin check of ``iteration``'s batch on weights ``w``: each party
        computes its encrypted power sum of margins (:meth:`GLMParty.margin_moment`), the
        sums are added, and the one scalar is decrypted collectively, which needs every
        party's ``allow_model_decryption`` (it says how large the margins are, a function
        of the model and the data). The power is 8 when ``w`` has 5 levels (what a
        refreshed-enough ``w`` has for activations of degree 4 and more), else 4 or 2, so
        the bounds are within a factor ``n^(1/p)`` (1.6 for 48 samples at ``p = 8``).
        ``None`` when ``w`` has fewer than 3 levels, the model is linear (no interval) or
        the federation does not offer the check (:class:`MarginProbe`)."""
        fed = self.federation
        if self.job.model != "logistic" or not isinstance(fed, MarginProbe):
            return None
        power = next((p for p in (8, 4, 2) if w.levels_left >= 1 + p.bit_length()), 0)
        if not power:
            return None
        request = MapRequest(iteration, w, fed.global_batch(iteration))
        g = fed.aggregate(fed.margin_moments(request, power))
        ctx = fed.ctx
        for step in self.layout.sample_sum_steps:
            g = ctx.add(g, ctx.rotate(g, step))
        total = float(fed.decrypt_if_agreed(g, length=1)[0])
        a = float(self.job.activation_bound)
        n = request.global_batch
        if not math.isfinite(total) or total < -1e-3:
            return MarginCheck(iteration, math.inf, math.inf, a, overflowed=True)
        total = max(total, 0.0)
        low = 2 * a * (total / n) ** (1 / power)
        high = 2 * a * total ** (1 / power)
        return MarginCheck(iteration, low, high, a)

    def train(
        self,
        initial_weights: FloatArray | None = None,
        *,
        iterations: int | None = None,
        on_iteration: Callable[[IterationReport], None] | None = None,
        check_margins_every: int = 0,
    ) -> EncryptedModel:
        """Every iteration from fresh weights; ``on_iteration`` sees each report as it
        comes (a federation streams them to the querier); each iteration is also logged at
        INFO on the ``phe_fl.ml`` logger.

        ``check_margins_every=k > 0`` runs the consented margin check
        (:meth:`check_margins`) at every ``k``-th iteration (not at iteration 0 when the
        weights start at zero) on the weights and batch that iteration trains on; margins
        that certainly left the activation's interval are reported with a
        :class:`MarginWarning` and a WARNING log line naming the iteration and the margin,
        once per run, and each checked iteration's bounds land in its report
        (``margin_low``, ``margin_high``). The check is one more MAP-sized round and one
        collective decryption of a scalar, so it needs every party's
        ``allow_model_decryption``."""
        n_iter = self.job.iterations if iterations is None else iterations
        every = check_margins_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ParameterError(f"check_margins_every must be an integer >= 0, got {every!r}")
        w = self.encrypt_initial(initial_weights)
        model = EncryptedModel(self.job, w)
        reported = False
        for it in range(n_iter):
            check = bool(every) and it % every == 0 and (it > 0 or initial_weights is not None)
            w, report = self.step(w, it, final=it == n_iter - 1, check_margins=check)
            model.reports.append(report)
            log.info(
                "GLM iteration %d/%d: %.2f s, %d refresh(es), %d levels left",
                it + 1,
                n_iter,
                report.seconds,
                report.refreshes,
                report.levels_left_after,
            )
            if report.margin_low is not None and report.margin_high is not None and not reported:
                found = MarginCheck(
                    it,
                    report.margin_low,
                    report.margin_high,
                    float(self.job.activation_bound),
                    overflowed=math.isinf(report.margin_low),
                )
                if found.left:
                    reported = True
                    _report_margin(found)
            if on_iteration is not None:
                on_iteration(report)
        model.weights = w
        return model


# -- the plaintext twin ------------------------------------------------------------------
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
    job: TrainingJob, shards: Sequence[Shard], initial_weights: FloatArray | None = None
) -> PlaintextResult:
    """Exactly the encrypted run's math in numpy: same clip, polynomial, batches and update.
    The first iteration whose margins leave the activation's interval is reported
    (:attr:`PlaintextResult.left_interval`, a :class:`MarginWarning` and a WARNING on the
    ``phe_fl.ml`` logger)."""
    data = [(design_matrix(job, x), y) for x, y in validate_shards(job, shards)]
    act = job.activation
    w = np.zeros(job.n_weights) if initial_weights is None else np.array(initial_weights, float)
    d = np.zeros_like(w)  # the last step w_t - w_{t-1} (momentum)
    history, margins = [w.copy()], []
    left: MarginCheck | None = None
    for it in range(job.iterations):
        batches = [batch_rows(len(y), job.batch_size, it) for _, y in data]
        eta = job.learning_rate / sum(len(r) for r in batches)
        g = np.zeros_like(w)
        worst = 0.0
        for (x, y), rows in zip(data, batches, strict=True):
            xb, yb = x[rows], y[rows]
            z = xb @ w
            worst = max(worst, float(np.abs(z).max()))
            g += xb.T @ (eta * (act(z) - yb))
        d = job.momentum * d - g
        w = w + d
        history.append(w.copy())
        margins.append(worst)
        bound = float(job.activation_bound)
        if job.model == "logistic" and left is None and not worst <= bound:
            left = MarginCheck(it, worst, worst, bound, overflowed=not math.isfinite(worst))
            _report_margin(left)
    return PlaintextResult(w, history, margins, left)


def predict_proba(job: TrainingJob, weights: FloatArray, x: FloatArray) -> FloatArray:
    """Plaintext prediction with the exact sigmoid (logistic) or the identity (linear)."""
    z = design_matrix(job, x) @ np.asarray(weights, dtype=np.float64)
    return sigmoid(z) if job.model == "logistic" else z


def predict(job: TrainingJob, weights: FloatArray, x: FloatArray) -> FloatArray:
    p = predict_proba(job, weights, x)
    return (p >= 0.5).astype(np.float64) if job.model == "logistic" else p


# -- in-process setup --------------------------------------------------------------------
def setup_local(
    job: TrainingJob,
    shards: Sequence[Shard],
    *,
    consents: Sequence[bool] | None = None,
    rng: random.Random | None = None,
    wire: bool = True,
) -> LocalTrainingFederation:
    """Validate the job and every shard, then (only then) run key generation with exactly
    the job's rotation keys. ``consents`` overrides each party's ``allow_model_decryption``
    (as if each party had its own copy of the config)."""
    checked = validate_shards(job, shards)
    if consents is not None and len(consents) != len(checked):
        raise ParameterError(f"{len(consents)} consents for {len(checked)} parties")
    jobs = [
        job if consents is None else dataclasses.replace(job, allow_model_decryption=bool(c))
        for c in (consents if consents is not None else [job.allow_model_decryption] * len(checked))
    ]
    workers = [GLMParty(i, j, s) for i, (j, s) in enumerate(zip(jobs, checked, strict=True))]
    fed = LocalFederation.setup(
        job.parameter_set, len(checked), rotations=job.rotation_indices(), rng=rng, wire=wire
    )
    return LocalTrainingFederation(fed, workers)
