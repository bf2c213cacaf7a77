"""Differentially private GLM training (issue 12): validation, the per-record bound, noise
under encryption equal to the twin's, no second draw on a retried MAP, accounting against
dp-accounting, and the stop when margins leave the interval."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import (
    DPMarginError,
    GLMParty,
    GLMUpdate,
    MapRequest,
    MarginWarning,
    Trainer,
    TrainingJob,
    dp_draws,
    train_plaintext,
)
from phe_fl.ml.glm import design_matrix
from phe_fl.privacy.accounting import epsilon_spent, job_epsilon, job_sample_rate, noise_for
from phe_fl.testing import LocalTrainingFederation, setup_local

SEEDS = (11, 22, 33)  # test-only party seeds: outside tests they come from `secrets`
N_FEATURES = 6


def _job(**kw: Any) -> TrainingJob:
    base: dict[str, Any] = dict(
        n_features=N_FEATURES,
        iterations=3,
        batch_size=8,
        learning_rate=0.5,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
        dp_noise_multiplier=1.0,
        dp_clip=1.0,
    )
    base.update(kw)
    return TrainingJob(**base)


def _shards() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    out = []
    for _ in SEEDS:
        x = rng.normal(size=(20, N_FEATURES))
        y = (x[:, 0] + 0.5 * rng.normal(size=20) > 0).astype(np.float64)
        out.append((x, y))
    return out


# -- validation ----------------------------------------------------------------------------
@pytest.mark.parametrize("value", [-0.1, math.nan, math.inf, "1", True, None])
def test_noise_multiplier_is_validated(value: object) -> None:
    with pytest.raises(ParameterError, match="dp_noise_multiplier"):
        _job(dp_noise_multiplier=value)


@pytest.mark.parametrize("value", [0, -1.0, math.nan, math.inf, "1", False])
def test_clip_is_validated(value: object) -> None:
    with pytest.raises(ParameterError, match="dp_clip"):
        _job(dp_clip=value)


def test_dp_is_logistic_only_and_off_by_default() -> None:
    with pytest.raises(ParameterError, match="dp_noise_multiplier.*logistic"):
        _job(model="linear")
    plain = TrainingJob(n_features=3, params=INSECURE_TEST.name)
    assert not plain.dp and plain.dp_noise_multiplier == 0.0 and plain.dp_noise_std == 0.0
    assert TrainingJob(n_features=3, model="linear", params=INSECURE_TEST.name).dp is False


def test_dp_party_needs_party_count_and_a_sample_rate() -> None:
    job = _job()
    with pytest.raises(ParameterError, match="n_parties"):
        GLMParty(0, job, _shards()[0])
    party = GLMParty(0, job, _shards()[0], n_parties=3)
    fed = setup_local(dataclasses.replace(job, dp_noise_multiplier=0.0), _shards()[:1])
    w = fed.encrypt(job.layout.weights_vector(np.zeros(job.n_weights)))
    with pytest.raises(ProtocolError, match="sample_rate"):
        party.gradient(MapRequest(0, (w,), 24))


# -- the per-record bound ------------------------------------------------------------------
@pytest.mark.parametrize(("degree", "bound"), [(3, 3.0), (5, 10.0), (7, 8.0)])
def test_residual_bound_is_the_polynomials_extreme(degree: int, bound: float) -> None:
    job = _job(activation_degree=degree, activation_bound=bound, params="n15-depth11-128")
    z = np.linspace(-bound, bound, 400_001)
    p = job.activation(z)
    grid = max(np.abs(p).max(), np.abs(1 - p).max())
    b = job.dp_residual_bound
    assert b > 0.5  # at least |p(0) - y| = 1/2; above 1 where the fit overshoots
    assert grid <= b + 1e-12 and b - grid < 1e-6
    assert job.dp_sensitivity == pytest.approx(b * job.dp_clip)
    assert job.dp_noise_std == pytest.approx(job.dp_noise_multiplier * b * job.dp_clip)


def test_rows_are_clipped_to_the_bound_on_every_path() -> None:
    x = np.random.default_rng(0).normal(scale=3.0, size=(50, N_FEATURES))
    rows = design_matrix(_job(dp_clip=0.7), x)
    assert np.linalg.norm(rows, axis=1).max() <= 0.7 + 1e-12
    short = design_matrix(_job(dp_clip=100.0), x)  # short rows are left alone
    assert np.array_equal(short, design_matrix(_job(dp_noise_multiplier=0.0), x))


# -- the twin ------------------------------------------------------------------------------
def test_twin_samples_by_poisson_and_adds_the_calibrated_noise() -> None:
    job = _job(iterations=1)
    shards = _shards()
    once = train_plaintext(job, shards, dp_seeds=SEEDS)
    assert np.array_equal(once.weights, train_plaintext(job, shards, dp_seeds=SEEDS).weights)
    assert not np.allclose(once.weights, train_plaintext(job, shards, dp_seeds=(1, 2, 3)).weights)
    # same seeds, (almost) no noise: same Poisson batches, so the difference is the noise
    quiet = train_plaintext(
        dataclasses.replace(job, dp_noise_multiplier=1e-12), shards, dp_seeds=SEEDS
    )
    global_batch = 3 * job.batch_size
    eta = job.learning_rate / global_batch
    q = global_batch / sum(len(y) for _, y in shards)
    expected = sum(dp_draws(s, 0, 20, q, job.n_weights)[1] for s in SEEDS)
    expected *= eta * job.dp_noise_std / math.sqrt(len(SEEDS))
    assert np.allclose(once.weights - quiet.weights, -expected, atol=1e-10)
    # over many seeds: the total noise on the sum has standard deviation sigma * Delta
    diffs = []
    for k in range(300):
        seeds = (3 * k, 3 * k + 1, 3 * k + 2)
        a = train_plaintext(job, shards, dp_seeds=seeds).weights
        b = train_plaintext(
            dataclasses.replace(job, dp_noise_multiplier=1e-12), shards, dp_seeds=seeds
        )
        diffs.append((a - b.weights) / eta)
    std = float(np.std(np.concatenate(diffs)))
    assert std == pytest.approx(job.dp_noise_std, rel=0.08)


def test_poisson_batches_have_the_expected_size() -> None:
    sizes = [len(dp_draws(5, it, 1000, 0.05, 3)[0]) for it in range(400)]
    assert np.mean(sizes) == pytest.approx(50, rel=0.05)
    assert len(set(sizes)) > 5  # the size varies: it is a Poisson sample, not a window


def test_twin_stops_when_margins_leave_the_interval() -> None:
    with (
        pytest.warns(MarginWarning),
        pytest.raises(DPMarginError, match="differentially private training stopped"),
    ):
        train_plaintext(_job(learning_rate=400.0, iterations=4), _shards(), dp_seeds=SEEDS)


# -- under encryption ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def dp_fed() -> LocalTrainingFederation:
    return setup_local(_job(), _shards(), dp_seeds=SEEDS)


def _decrypt(fed: LocalTrainingFederation, ct: Any, length: int) -> np.ndarray:
    return np.asarray(fed.fed.decrypt(ct, length=length, decimals=12))


def test_encrypted_dp_run_matches_the_twin_with_the_same_draws(
    dp_fed: LocalTrainingFederation,
) -> None:
    job = _job()
    model = Trainer(job, dp_fed).train()
    enc = job.layout.weights_from_slots(_decrypt(dp_fed, model.weights[0], job.layout.block))
    twin = train_plaintext(job, _shards(), dp_seeds=SEEDS)
    no_noise = train_plaintext(
        dataclasses.replace(job, dp_noise_multiplier=1e-12), _shards(), dp_seeds=SEEDS
    )
    diff = np.abs(enc - twin.weights).max()
    print(f"\nDP sigma 1, 3x20x{N_FEATURES}, 3 iterations: max|enc - twin| = {diff:.2e}")
    assert diff <= 1e-4
    # the noise moved the weights by about eta * sigma * Delta * sqrt(iterations)
    eta = job.learning_rate / (3 * job.batch_size)
    moved = np.abs(twin.weights - no_noise.weights).max()
    scale = eta * job.dp_noise_std * math.sqrt(job.iterations)
    assert 0.2 * scale < moved < 5 * scale


def test_a_retried_map_gets_the_same_noise_and_batch(dp_fed: LocalTrainingFederation) -> None:
    job = _job()
    trainer = Trainer(job, dp_fed)
    update = trainer.update
    assert isinstance(update, GLMUpdate)
    assert update.sample_rate(0) == pytest.approx(24 / 60)
    (w,) = trainer.encrypt_initial(np.full(job.n_weights, 0.1)).weights
    request = update.map_request(2, w)
    party = dp_fed.workers[1]
    assert isinstance(party, GLMParty)
    d = job.layout.block * job.layout.samples_per_ct
    first = _decrypt(dp_fed, party.gradient(request), d)
    again = _decrypt(dp_fed, party.gradient(request), d)
    assert np.abs(first - again).max() < 1e-4  # same noise, same rows: no second draw
    # the noise sits only on the weights' gradient slots of block 0
    twin_party = GLMParty(
        1,
        dataclasses.replace(job, dp_noise_multiplier=1e-12),
        _shards()[1],
        n_parties=3,
        dp_seed=SEEDS[1],
    )
    clean = _decrypt(dp_fed, twin_party.gradient(request), d)
    noise = first - clean
    assert np.abs(noise[: job.n_weights]).max() > 1e-3
    assert np.abs(noise[job.n_weights :]).max() < 1e-4  # CKKS noise only
    eta = job.learning_rate / request.global_batch
    expected = (
        eta
        * party.noise_share_std(request)
        * dp_draws(SEEDS[1], 2, 20, request.sample_rate, job.n_weights)[1]
    )
    assert np.allclose(noise[: job.n_weights], expected, atol=1e-5)
    with pytest.raises(ProtocolError, match="retry must repeat"):
        party.gradient(dataclasses.replace(request, sample_rate=0.5))


def test_encrypted_dp_run_stops_when_the_margin_check_finds_margins_outside(
    dp_fed: LocalTrainingFederation,
) -> None:
    job = _job(learning_rate=400.0, iterations=3)
    workers = [GLMParty(i, job, s, n_parties=3, dp_seed=SEEDS[i]) for i, s in enumerate(_shards())]
    fed = LocalTrainingFederation(dp_fed.fed, workers)  # the same keys, a new job
    with pytest.warns(MarginWarning), pytest.raises(DPMarginError, match="stopped"):
        Trainer(job, fed).train(check_margins_every=1)


def test_dp_trainer_needs_the_row_count() -> None:
    class NoRows:
        def __init__(self, inner: LocalTrainingFederation) -> None:
            self.ctx = inner.ctx

    with pytest.raises(ParameterError, match="total_rows"):
        Trainer(_job(), NoRows(setup_local(_job(dp_noise_multiplier=0.0), _shards()[:1])))  # type: ignore[arg-type]


# -- accounting ----------------------------------------------------------------------------
def test_epsilon_matches_dp_accounting() -> None:
    from dp_accounting import dp_event
    from dp_accounting.rdp import rdp_privacy_accountant

    acc = rdp_privacy_accountant.RdpAccountant()
    acc.compose(
        dp_event.SelfComposedDpEvent(
            dp_event.PoissonSampledDpEvent(0.01, dp_event.GaussianDpEvent(1.1)), 1000
        )
    )
    ours = epsilon_spent(1.1, 0.01, 1000, 1e-5)
    assert ours == pytest.approx(acc.get_epsilon(1e-5), rel=1e-12)
    assert 1.5 < ours < 2.0  # the known figure for these settings (about 1.71)


def test_epsilon_is_monotone_and_noise_for_inverts_it() -> None:
    eps = [epsilon_spent(s, 0.05, 100, 1e-5) for s in (0.8, 1.0, 1.5, 3.0)]
    assert all(a > b for a, b in zip(eps, eps[1:], strict=False))
    steps = [epsilon_spent(1.0, 0.05, t, 1e-5) for t in (10, 100, 400)]
    assert all(a < b for a, b in zip(steps, steps[1:], strict=False))
    rates = [epsilon_spent(1.0, q, 100, 1e-5) for q in (0.01, 0.05, 0.2)]
    assert all(a < b for a, b in zip(rates, rates[1:], strict=False))
    assert epsilon_spent(0.0, 0.05, 10, 1e-5) == math.inf
    assert epsilon_spent(1.0, 0.05, 0, 1e-5) == 0.0
    sigma = noise_for(2.0, 1e-5, 0.05, 100)
    assert epsilon_spent(sigma, 0.05, 100, 1e-5) <= 2.0
    assert epsilon_spent(sigma * 0.99, 0.05, 100, 1e-5) > 2.0


def test_job_epsilon() -> None:
    job = _job(iterations=50)
    assert job_sample_rate(24, 60) == pytest.approx(0.4)
    assert job_epsilon(job, 24, 60, 1e-5) == pytest.approx(epsilon_spent(1.0, 0.4, 50, 1e-5))
    with pytest.raises(ParameterError, match="not differentially private"):
        job_epsilon(_job(dp_noise_multiplier=0.0), 24, 60, 1e-5)
    with pytest.raises(ParameterError, match="delta"):
        epsilon_spent(1.0, 0.1, 10, 0.0)
    with pytest.raises(ParameterError, match="sample_rate"):
        epsilon_spent(1.0, 1.5, 10, 1e-5)
