"""Privacy accounting of differentially private training, with Google's ``dp-accounting``.

A differentially private GLM job (:class:`~phe_fl.ml.glm.TrainingJob` with
``dp_noise_multiplier = sigma > 0``) runs ``steps = iterations`` steps of DP-SGD: each
step sums the per-record gradients of a batch in which every record takes part
independently with probability ``q`` (Poisson sampling at every party, ``q = global batch
/ total rows``), each gradient bounded in L2 norm by ``Delta`` (``job.dp_sensitivity``),
and adds Gaussian noise of standard deviation ``sigma * Delta`` per coordinate (under
encryption, in shares). That is the subsampled Gaussian mechanism composed ``steps``
times, which the RDP accountant bounds (``PoissonSampledDpEvent(q, GaussianDpEvent(sigma))``
self-composed, add-or-remove-one neighbouring relation): :func:`epsilon_spent`.

What the numbers assume, stated plainly:

* **Poisson subsampling.** The accountant's amplification by sampling holds only if the
  batch is a secret Poisson sample. phe-fl's DP jobs do sample that way (each party draws
  its own rows from a CSPRNG-seeded generator, :func:`phe_fl.ml.glm.dp_draws`), and divide
  the noisy sum by the *expected* batch size, a public number, never by the sampled one.
  Jobs without DP use fixed consecutive windows (:func:`phe_fl.ml.jobs.batch_rows`), for
  which this accounting would not hold (the usual DP-SGD gap of shuffled fixed batches);
  this module is only for DP jobs.
* **The margin condition.** ``Delta`` bounds a record's gradient only while its margin
  ``x . w`` stays in the activation's interval; a run whose margin check finds otherwise
  stops (:class:`phe_fl.ml.glm.DPMarginError`), but the encrypted run checks only the
  iterations it is asked to (``check_margins_every``).
* **Public sizes.** The total row count and the expected batch size are treated as public
  (every party's row count is in its audit log).
* What is released is the final model (and its predictions): everything else is
  encrypted. The margin check's decrypted scalars are extra releases not counted here.
"""

from __future__ import annotations

import importlib
import math

from phe_fl.errors import ParameterError
from phe_fl.ml.glm import TrainingJob

__all__ = ["epsilon_spent", "noise_for", "job_epsilon", "job_sample_rate"]

_MAX_SIGMA = 1e4


def _check(sample_rate: float, steps: int, delta: float) -> None:
    if not isinstance(sample_rate, int | float) or not 0.0 < float(sample_rate) <= 1.0:
        raise ParameterError(f"sample_rate must be in (0, 1], got {sample_rate!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ParameterError(f"steps must be an integer >= 0, got {steps!r}")
    if not isinstance(delta, int | float) or not 0.0 < float(delta) < 1.0:
        raise ParameterError(f"delta must be in (0, 1), got {delta!r}")


def epsilon_spent(noise_multiplier: float, sample_rate: float, steps: int, delta: float) -> float:
    """Epsilon of ``steps`` Poisson-subsampled Gaussian steps (noise multiplier ``sigma``,
    sampling rate ``q``) at ``delta``, by dp-accounting's RDP accountant. ``inf`` when
    ``sigma`` is 0 and at least one step runs; 0 for no step."""
    _check(sample_rate, steps, delta)
    sigma = float(noise_multiplier)
    if not math.isfinite(sigma) or sigma < 0:
        raise ParameterError(f"noise_multiplier must be a finite number >= 0, got {sigma!r}")
    if steps == 0:
        return 0.0
    if sigma == 0.0:
        return math.inf
    # imported by name: dp-accounting ships no type information (and is needed only here)
    dp_event = importlib.import_module("dp_accounting.dp_event")
    rdp_privacy_accountant = importlib.import_module("dp_accounting.rdp.rdp_privacy_accountant")
    event = dp_event.SelfComposedDpEvent(
        dp_event.PoissonSampledDpEvent(float(sample_rate), dp_event.GaussianDpEvent(sigma)),
        steps,
    )
    accountant = rdp_privacy_accountant.RdpAccountant()
    accountant.compose(event)
    return float(accountant.get_epsilon(float(delta)))


def noise_for(
    epsilon: float, delta: float, sample_rate: float, steps: int, *, tolerance: float = 1e-4
) -> float:
    """The smallest noise multiplier whose :func:`epsilon_spent` is at most ``epsilon``
    (bisection to a relative ``tolerance``; the result errs on the side of more noise)."""
    _check(sample_rate, steps, delta)
    if not isinstance(epsilon, int | float) or not math.isfinite(epsilon) or epsilon <= 0:
        raise ParameterError(f"epsilon must be a finite number > 0, got {epsilon!r}")
    if steps == 0:
        return 0.0

    def eps(sigma: float) -> float:
        return epsilon_spent(sigma, sample_rate, steps, delta)

    lo, hi = 0.0, 1.0
    while eps(hi) > epsilon:
        lo, hi = hi, hi * 2
        if hi > _MAX_SIGMA:
            raise ParameterError(
                f"no noise multiplier up to {_MAX_SIGMA:g} reaches epsilon {epsilon} at delta "
                f"{delta} in {steps} steps at sampling rate {sample_rate}"
            )
    while hi - lo > tolerance * hi:
        mid = (lo + hi) / 2
        if eps(mid) > epsilon:
            lo = mid
        else:
            hi = mid
    return hi


def job_sample_rate(global_batch: int, total_rows: int) -> float:
    """``q = global_batch / total_rows``: what :meth:`phe_fl.ml.glm.GLMUpdate.sample_rate`
    sends the parties (``global_batch`` is the federation's, the sum over parties of
    ``min(batch_size, rows)``)."""
    for name, v in (("global_batch", global_batch), ("total_rows", total_rows)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ParameterError(f"{name} must be a positive integer, got {v!r}")
    if global_batch > total_rows:
        raise ParameterError(f"global_batch {global_batch} exceeds total_rows {total_rows}")
    return global_batch / total_rows


def job_epsilon(job: TrainingJob, global_batch: int, total_rows: int, delta: float) -> float:
    """Epsilon a differentially private ``job`` spends at ``delta`` on a federation with
    ``total_rows`` rows and global batch ``global_batch`` (sampling rate ``global_batch /
    total_rows``, ``job.iterations`` steps); the root checks it against its budget before
    training and reports it. Refused for a job without DP (no finite epsilon)."""
    if not job.dp:
        raise ParameterError(
            "job_epsilon: the job is not differentially private (dp_noise_multiplier is 0)"
        )
    q = job_sample_rate(global_batch, total_rows)
    return epsilon_spent(float(job.dp_noise_multiplier), q, int(job.iterations), delta)
