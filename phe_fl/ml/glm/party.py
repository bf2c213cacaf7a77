"""MAP for a GLM: one party's encrypted gradient from its plaintext shard (see
:mod:`phe_fl.ml.glm`), with differentially private sampling and noise when the job asks."""

from __future__ import annotations

import math
import secrets

import numpy as np
import numpy.typing as npt

from phe_fl.errors import LevelError, ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.ml.federation import MapRequest
from phe_fl.ml.glm.job import TrainingJob, design_matrix
from phe_fl.ml.jobs import Shard, ShardWorker, batch_rows, validate_shard
from phe_fl.ml.packing import chunks, rotsum
from phe_fl.ml.staging import Lockstep, computed

__all__ = ["dp_draws", "GLMParty"]


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

    def _weights(self, request: MapRequest) -> Ciphertext:
        if len(request.weights) != 1:
            raise ProtocolError(
                f"party {self.index}: got {len(request.weights)} weight ciphertexts, a GLM has one"
            )
        return request.weights[0]

    def start_map(self, request: MapRequest) -> Lockstep[list[Ciphertext]]:
        """MAP as a stage of the one loop (:class:`~phe_fl.ml.federation.MapWorker`): a
        GLM's needs no refresh, so it is finished at once with :meth:`gradient`."""
        steps = Lockstep([computed([self.gradient(request)])])
        steps.advance()
        return steps

    def gradient(self, request: MapRequest) -> Ciphertext:
        """Encrypted ``sum_i eta * x_ij * (p(x_i . w) - y_i)``, unreduced over samples
        (the root's all-reduce does that once for every party)."""
        if request.global_batch < 1:
            raise ProtocolError(f"party {self.index}: global batch must be positive")
        w = self._weights(request)
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
            z = rotsum(ctx, z, layout.feature_sum_steps)
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
        (:meth:`~phe_fl.ml.glm.GLMUpdate.check_margins`). ``power`` is a power of two; it
        costs ``2 + log2(power)`` levels of the weights."""
        w = self._weights(request)
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
            z = rotsum(ctx, z, layout.feature_sum_steps)
            first = np.zeros((layout.samples_per_ct, layout.block))
            first[: xc.shape[0], 0] = 1.0 / (2.0 * a)
            t = ctx.rescale(ctx.mul_plain(z, first.ravel()))
            for _ in range(power.bit_length() - 1):
                t = ctx.rescale(ctx.mul(t, t))
            out = t if out is None else ctx.add(out, t)
        assert out is not None
        return out
