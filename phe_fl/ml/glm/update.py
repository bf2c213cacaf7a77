"""REDUCE for a GLM: the root's side of :class:`~phe_fl.ml.loop.Trainer` for logistic and
linear regression."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, FloatArray
from phe_fl.ml.federation import Federation, MapRequest, MarginProbe, RowCounter
from phe_fl.ml.glm.job import TrainingJob
from phe_fl.ml.glm.margins import DPMarginError, MarginCheck, report_margin
from phe_fl.ml.loop import Decrypt, IterationReport, Prepared
from phe_fl.ml.packing import rotsum
from phe_fl.ml.staging import with_levels

__all__ = ["GLMUpdate", "decrypt_glm"]


class GLMUpdate:
    """A GLM's side of :class:`~phe_fl.ml.loop.Trainer` at the root (see
    :mod:`phe_fl.ml.glm`): levels tracked on the one weight ciphertext, refreshed only
    when an iteration would leave it unrefreshable, the broadcast copy at the fewest
    levels that keep that schedule, the consented margin check."""

    refreshes_weights_every_iteration = False

    def __init__(self, job: TrainingJob, federation: Federation) -> None:
        self.job = job
        self.federation = federation
        self.layout = job.layout
        self._warned = False
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

    @property
    def checks_margins(self) -> bool:
        return self.job.model == "logistic"

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
            (weights,),
            self.federation.global_batch(iteration),
            sample_rate=self.sample_rate(iteration),
        )

    def initial_vectors(self, initial: FloatArray | None) -> list[FloatArray]:
        w0 = np.zeros(self.job.n_weights) if initial is None else np.asarray(initial, float)
        if w0.shape != (self.job.n_weights,):
            raise ParameterError(
                f"initial weights: {self.job.n_weights} values expected (intercept last), got "
                f"shape {w0.shape}"
            )
        return [self.layout.weights_vector(w0)]

    def prepare(
        self, weights: list[Ciphertext], iteration: int, *, final: bool, check_margins: bool
    ) -> Prepared:
        """``w`` refreshed if the iteration would leave it unrefreshable; the margin check
        when asked; the broadcast copy at :meth:`broadcast_levels`."""
        params = self.federation.ctx.params
        (w,), refreshes = with_levels(
            weights,
            self.job.depth_per_iteration + params.refresh_min_levels,
            self.federation.refresh_many,
        )
        check = self.check_margins(w, iteration) if check_margins else None
        sent = self.federation.ctx.drop_levels(w, self.broadcast_levels(w, final=final))
        margin = None if check is None else (check.low, check.high)
        return Prepared([w], self.map_request(iteration, sent), refreshes, margin)

    def broadcast_levels(self, w: Ciphertext, *, final: bool = False) -> int:
        """Levels the copy of ``w`` broadcast for MAP keeps (``w`` after its refresh, if
        any): the fewer, the smaller the message down the tree.

        The gradient comes back ``depth_per_iteration`` levels below the copy, and the
        updated weights sit at the gradient's level. If they are going to be refreshed
        before the next iteration anyway (they would have fewer than ``depth +
        refresh_min_levels`` levels left), they only need to stay refreshable: the copy
        keeps ``depth + refresh_min_levels`` levels and the refresh schedule is unchanged.
        Otherwise dropping levels would force an extra refresh, so the copy keeps them all;
        likewise on the ``final`` iteration, whose weights are the model (what is done
        with it next is not known here). With momentum the kept step needs nothing more:
        the loop keeps ``mu * d`` at or above the gradient's level."""
        depth = self.job.depth_per_iteration
        needed = depth + self.federation.ctx.params.refresh_min_levels
        if final or w.levels_left - depth >= needed:
            return w.levels_left
        return min(w.levels_left, needed)

    def step(self, combined: Sequence[Ciphertext]) -> list[Ciphertext]:
        """The combined gradient summed over samples (an all-reduce: the sum lands in every
        block) and aligned on the weights' positions."""
        ctx = self.federation.ctx
        (g,) = combined
        g = rotsum(ctx, g, self.layout.sample_sum_steps)
        if self.layout.align_step:
            g = ctx.rotate(g, self.layout.align_step)
        return [g]

    def judge(self, report: IterationReport) -> None:
        """What the iteration's margin check found, when margins left the activation's
        interval: reported as a :class:`~phe_fl.ml.glm.MarginWarning` (once per run), and
        for a differentially private job the run stops with
        :class:`~phe_fl.ml.glm.DPMarginError` (the per-record bound the noise is
        calibrated on is gone)."""
        if report.margin_low is None or report.margin_high is None:
            return
        found = MarginCheck(
            report.iteration,
            report.margin_low,
            report.margin_high,
            float(self.job.activation_bound),
            overflowed=math.isinf(report.margin_low),
        )
        if not found.left:
            return
        if not self._warned:
            report_margin(found)
            self._warned = True
        if self.job.dp:
            raise DPMarginError(
                f"differentially private training stopped: {found.message()}; the "
                f"per-record bound dp_residual_bound * dp_clip no longer holds"
            )

    def check_margins(self, w: Ciphertext, iteration: int) -> MarginCheck | None:
        """The consented margin check of ``iteration``'s batch on weights ``w``: each party
        computes its encrypted power sum of margins (:meth:`GLMParty.margin_moment`), the
        sums are added, and the one scalar is decrypted collectively, which needs every
        party's ``allow_model_decryption`` (it says how large the margins are, a function
        of the model and the data). The power is 8 when ``w`` has 5 levels (what a
        refreshed-enough ``w`` has for activations of degree 4 and more), else 4 or 2, so
        the bounds are within a factor ``n^(1/p)`` (1.6 for 48 samples at ``p = 8``).
        ``None`` when ``w`` has fewer than 3 levels, the model is linear (no interval) or
        the federation does not offer the check (:class:`~phe_fl.ml.federation.MarginProbe`)."""
        fed = self.federation
        if self.job.model != "logistic" or not isinstance(fed, MarginProbe):
            return None
        power = next((p for p in (8, 4, 2) if w.levels_left >= 1 + p.bit_length()), 0)
        if not power:
            return None
        request = self.map_request(iteration, w)
        ctx = self.federation.ctx
        g = rotsum(ctx, ctx.sum(fed.margin_moments(request, power)), self.layout.sample_sum_steps)
        total = float(self.federation.decrypt_if_agreed(g, length=1)[0])
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


def decrypt_glm(job: TrainingJob, weights: Sequence[Ciphertext], decrypt: Decrypt) -> FloatArray:
    """The plaintext weights (intercept last) from the model's one ciphertext, decrypted
    by ``decrypt`` (a consented collective decryption)."""
    if len(weights) != 1:
        raise ProtocolError(f"{len(weights)} weight ciphertexts, a GLM has one")
    layout = job.layout
    return layout.weights_from_slots(decrypt(weights[0], length=layout.block))
