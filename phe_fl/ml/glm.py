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

Differentially private training (``job.dp_noise_multiplier = sigma > 0``, logistic only),
DP-SGD with the noise added under encryption:

* every design row is scaled to L2 norm at most ``C = job.dp_clip`` (:func:`design_matrix`);
* each party samples its batch of iteration ``t`` by Poisson sampling: every row
  independently with probability ``q = request.sample_rate`` (``global_batch / total
  rows``, the same for all parties), and ``eta = learning_rate / global_batch`` uses the
  *expected* global batch, a public number, so the sampled size is never needed;
* while every margin is in ``[-a, a]``, one record's gradient ``(p(z_i) - y_i) x_i`` has
  L2 norm at most ``Delta = B * C`` (``B = job.dp_residual_bound``), so the sum over the
  batch has sensitivity ``Delta`` (add or remove one record) and gets Gaussian noise
  ``N(0, (sigma * Delta)^2)`` per weight: each of the ``N`` parties adds its share
  ``N(0, (sigma * Delta)^2 / N)`` (times ``eta``) to the slots of its gradient ciphertext
  that carry the weights' gradient (``[0, d)`` of block 0; the root's all-reduce spreads
  it like the gradient), so nobody knows the total noise. The noise is a plaintext added
  to the party's own ciphertext (``Enc(g) + n = Enc(g + n)``): the same as adding an
  encryption of ``n``, one encryption cheaper;
* a party's sampling and noise come from a generator seeded with 128 bits from
  :mod:`secrets` when the party is built, derived per iteration: a retried MAP for the
  same iteration gets the same batch and the same noise (never a second draw), and a
  federation node also keeps the whole answer (noise included) for retries;
* the guarantee is conditional on the margins staying in ``[-a, a]`` (outside it the
  polynomial residual is unbounded): the feature and row clips keep them there in
  practice, the twin checks every iteration and the encrypted run with
  ``check_margins_every``; a DP run whose check finds margins outside stops with
  :class:`DPMarginError`. Accounting: :mod:`phe_fl.privacy.accounting`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
import secrets
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
    RowCounter,
)
from phe_fl.ml.job import (
    Shard,
    ShardWorker,
    TrainingJob,
    clip_features,
    clip_rows,
    require_job_params,
    validate_shard,
    validate_shards,
)
from phe_fl.ml.packing import chunks

__all__ = [
    "batch_rows",
    "design_matrix",
    "dp_draws",
    "DPMarginError",
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


class DPMarginError(ProtocolError):
    """A differentially private run found margins outside the activation's interval: the
    per-record gradient bound the noise is calibrated on no longer holds, so the run stops
    rather than release a model without its guarantee."""


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
    plus, when fitting an intercept, a trailing column of ones, and for a differentially
    private job every row scaled to L2 norm at most ``dp_clip``
    (:func:`~phe_fl.ml.job.clip_rows`): the model's input on every path (each party's
    shard, the twin, the querier's samples)."""
    x = clip_features(job, x)
    if job.fit_intercept:
        x = np.hstack([x, np.ones((x.shape[0], 1))])
    return clip_rows(job, x)


def dp_draws(
    seed: int, iteration: int, n_rows: int, sample_rate: float, n_weights: int
) -> tuple[npt.NDArray[np.intp], FloatArray]:
    """A party's randomness for ``iteration`` of a differentially private job: the rows of
    its Poisson-sampled batch (each of ``n_rows`` with probability ``sample_rate``) and
    ``n_weights`` standard normal values (its noise share before scaling). A function of
    ``(seed, iteration)`` only, so the same iteration always gets the same draws; the seed
    is 128 bits from :mod:`secrets` (:class:`GLMParty`), fixed only by tests."""
    gen = np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(iteration,))))
    rows = np.flatnonzero(gen.random(n_rows) < sample_rate).astype(np.intp)
    return rows, np.asarray(gen.standard_normal(n_weights), dtype=np.float64)


def _check_sample_rate(where: str, rate: float) -> float:
    q = float(rate)
    if not (math.isfinite(q) and 0.0 < q <= 1.0):
        raise ProtocolError(
            f"{where}: a differentially private job needs the request's sample_rate in (0, 1] "
            f"(Poisson sampling), got {rate!r}"
        )
    return q


# -- MAP: a party ------------------------------------------------------------------------
class GLMParty(ShardWorker[TrainingJob]):
    """One party's training endpoint: its shard stays here as plaintext.

    A differentially private job needs ``n_parties`` (each party adds ``1/N`` of the noise
    variance). ``dp_seed`` is the party's secret sampling and noise seed: drawn from
    :mod:`secrets` (128 bits) when not given; pass one only in tests or to restore a seed
    the node persisted for this job (so a restarted node redraws nothing)."""

    def __init__(
        self,
        index: int,
        job: TrainingJob,
        shard: Shard,
        *,
        n_parties: int | None = None,
        dp_seed: int | None = None,
    ) -> None:
        x, y = validate_shard(job, shard, party=index)
        super().__init__(index, job, design_matrix(job, x), y)
        self._n_parties = 0
        self._dp_seed = 0
        self._dp_rates: dict[int, float] = {}
        if job.dp:
            if isinstance(n_parties, bool) or not isinstance(n_parties, int) or n_parties < 1:
                raise ParameterError(
                    f"party {index}: a differentially private job needs n_parties (a positive "
                    f"integer: each party adds 1/N of the noise variance), got {n_parties!r}"
                )
            self._n_parties = n_parties
            self._dp_seed = secrets.randbits(128) if dp_seed is None else int(dp_seed)

    def batch_at(self, request: MapRequest) -> npt.NDArray[np.intp]:
        """Rows of this party's batch for ``request``: the fixed window of
        :func:`batch_rows`, or with DP the Poisson sample of :func:`dp_draws`."""
        return self._draws(request)[0]

    def _draws(self, request: MapRequest) -> tuple[npt.NDArray[np.intp], FloatArray | None]:
        if not self.job.dp:
            return batch_rows(self.n_samples, self.job.batch_size, request.iteration), None
        where = f"party {self.index}"
        q = _check_sample_rate(where, request.sample_rate)
        seen = self._dp_rates.setdefault(request.iteration, q)
        if seen != q:
            raise ProtocolError(
                f"{where}: iteration {request.iteration} was asked with sample_rate {seen!r} "
                f"before and {q!r} now; a retry must repeat the request"
            )
        return dp_draws(self._dp_seed, request.iteration, self.n_samples, q, self.job.n_weights)

    def noise_share_std(self, request: MapRequest) -> float:
        """Standard deviation of this party's noise share on each weight's gradient sum,
        ``sigma * Delta / sqrt(N)`` (before the ``eta`` factor); 0 without DP."""
        if not self.job.dp:
            return 0.0
        return self.job.dp_noise_std / math.sqrt(self._n_parties)

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
        rows, noise = self._draws(request)
        x, y = self._x[rows], self._y[rows]
        if not len(rows):  # an empty Poisson sample: one zero row contributes exactly 0
            x, y = np.zeros((1, self.job.n_weights)), np.zeros(1)
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
        if noise is not None:
            # the weights' gradient sits at [0, d) of each block before the root's
            # all-reduce; one copy of the noise in block 0 is what it sums to
            vec = np.zeros(layout.samples_per_ct * layout.block)
            vec[: self.job.n_weights] = eta * self.noise_share_std(request) * noise
            # noise far below the ciphertext's precision would round to nothing (and OpenFHE
            # refuses to encode it): only a negligible noise multiplier gets here
            if float(np.abs(vec).max()) * out.scaling_factor >= 2.0**16:
                out = ctx.add_plain(out, vec)
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
        rows = self.batch_at(request)
        x = self._x[rows] if len(rows) else np.zeros((1, self.job.n_weights))
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
        self.total_rows = 0
        """Differentially private jobs: training rows over all parties (public)."""
        if job.dp:
            if not isinstance(federation, RowCounter):
                raise ParameterError(
                    "training job: dp_noise_multiplier > 0 needs a federation that reports its "
                    "total row count (total_rows(), for the sampling rate); this one does not"
                )
            self.total_rows = int(federation.total_rows())
            if self.total_rows < 1:
                raise ParameterError("training job: no training rows for the sampling rate")

    def sample_rate(self, iteration: int) -> float:
        """Differentially private jobs: each record's inclusion probability at
        ``iteration``, ``q = global_batch / total_rows`` (the expected global batch is then
        the federation's ``global_batch``); 0 without DP (fixed batches)."""
        if not self.job.dp:
            return 0.0
        return min(1.0, self.federation.global_batch(iteration) / self.total_rows)

    def map_request(self, iteration: int, weights: Ciphertext) -> MapRequest:
        """What the root broadcasts for ``iteration`` (with DP, the sampling rate too)."""
        return MapRequest(
            iteration,
            weights,
            self.federation.global_batch(iteration),
            sample_rate=self.sample_rate(iteration),
        )

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
        request = self.map_request(iteration, sent)
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

    def judge_margins(self, iteration: int, report: IterationReport) -> MarginCheck | None:
        """What ``iteration``'s margin check found when margins left the activation's
        interval (None when the check did not run or found them inside): reported as a
        :class:`MarginWarning`, and for a differentially private job the run stops with
        :class:`DPMarginError` (the per-record bound the noise is calibrated on is gone).
        Every training loop calls it after each step (this one's, the federation's)."""
        if report.margin_low is None or report.margin_high is None:
            return None
        found = MarginCheck(
            iteration,
            report.margin_low,
            report.margin_high,
            float(self.job.activation_bound),
            overflowed=math.isinf(report.margin_low),
        )
        if not found.left:
            return None
        _report_margin(found)
        if self.job.dp:
            raise DPMarginError(
                f"differentially private training stopped: {found.message()}; the "
                f"per-record bound dp_residual_bound * dp_clip no longer holds"
            )
        return found

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
        request = self.map_request(iteration, w)
        g = fed.aggregate(fed.margin_moments(request, power))
        ctx = fed.ctx
        for step in self.layout.sample_sum_steps:
            g = ctx.add(g, ctx.rotate(g, step))
        total = float(fed.decrypt_if_agreed(g, length=1)[0])
        a = float(self.job.activation_bound)
        # with Poisson batches the sampled size is unknown (and not released): the total
        # row count bounds it, so the lower bound stays a lower bound
        n = self.total_rows if self.job.dp else request.global_batch
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
        ``allow_model_decryption``.

        In a differentially private job, margins the check finds outside the interval stop
        the run with :class:`DPMarginError` (the noise is calibrated on them staying in).
        The decrypted power sum of each check is a release of its own, outside the DP
        accounting: it reaches whoever fuses the decryption (the root) and the reports."""
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
            if not reported:
                reported = self.judge_margins(it, report) is not None
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
        w = w + d
        history.append(w.copy())
        margins.append(worst)
        bound = float(job.activation_bound)
        if job.model == "logistic" and left is None and not worst <= bound:
            left = MarginCheck(it, worst, worst, bound, overflowed=not math.isfinite(worst))
            _report_margin(left)
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


# -- in-process setup --------------------------------------------------------------------
def setup_local(
    job: TrainingJob,
    shards: Sequence[Shard],
    *,
    consents: Sequence[bool] | None = None,
    rng: random.Random | None = None,
    wire: bool = True,
    dp_seeds: Sequence[int] | None = None,
) -> LocalTrainingFederation:
    """Validate the job and every shard, then (only then) run key generation with exactly
    the job's rotation keys. ``consents`` overrides each party's ``allow_model_decryption``
    (as if each party had its own copy of the config). ``dp_seeds`` (tests only) fixes each
    party's sampling and noise seed, which is otherwise drawn from :mod:`secrets`."""
    checked = validate_shards(job, shards)
    if consents is not None and len(consents) != len(checked):
        raise ParameterError(f"{len(consents)} consents for {len(checked)} parties")
    jobs = [
        job if consents is None else dataclasses.replace(job, allow_model_decryption=bool(c))
        for c in (consents if consents is not None else [job.allow_model_decryption] * len(checked))
    ]
    if dp_seeds is not None and len(dp_seeds) != len(checked):
        raise ParameterError(f"{len(dp_seeds)} dp_seeds for {len(checked)} parties")
    workers = [
        GLMParty(
            i,
            j,
            s,
            n_parties=len(checked),
            dp_seed=None if dp_seeds is None else dp_seeds[i],
        )
        for i, (j, s) in enumerate(zip(jobs, checked, strict=True))
    ]
    fed = LocalFederation.setup(
        job.parameter_set, len(checked), rotations=job.rotation_indices(), rng=rng, wire=wire
    )
    return LocalTrainingFederation(fed, workers)
