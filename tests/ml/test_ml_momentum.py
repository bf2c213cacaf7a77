"""Momentum (heavy ball and Nesterov's): the encrypted trainer keeps the last step
encrypted and matches the plaintext twin; the job validates the coefficient."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from phe_fl.errors import ParameterError
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import Trainer, TrainingJob, train_plaintext
from phe_fl.ml.glm import design_matrix
from phe_fl.ml.jobs import batch_rows
from phe_fl.testing import setup_local


@pytest.mark.parametrize("value", [-0.1, 1.0, float("nan"), "0.9", True])
def test_momentum_is_validated(value: object) -> None:
    with pytest.raises(ParameterError, match="momentum"):
        TrainingJob(n_features=4, momentum=value)  # type: ignore[arg-type]


def test_twin_is_heavy_ball(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    """w_{t+1} = w_t - G_t + mu (w_t - w_{t-1}), G_t the (polynomial) mean gradient step."""
    x, y = breast_cancer
    shards = split(x[:, :4], y, (20, 20))
    base = TrainingJob(
        n_features=4, iterations=6, batch_size=8, learning_rate=0.5, params=INSECURE_TEST.name
    )
    job = dataclasses.replace(base, momentum=0.9)
    heavy, plain = train_plaintext(job, shards), train_plaintext(base, shards)
    data = [(design_matrix(job, a), b) for a, b in shards]

    def step(w: np.ndarray, it: int) -> np.ndarray:
        rows = [batch_rows(len(b), job.batch_size, it) for _, b in data]
        eta = job.learning_rate / sum(len(r) for r in rows)
        return sum(
            a[r].T @ (eta * (job.activation(a[r] @ w) - b[r]))
            for (a, b), r in zip(data, rows, strict=True)
        )

    h = heavy.history
    for t in range(job.iterations):
        prev = h[t - 1] if t else h[0]
        expected = h[t] - step(h[t], t) + 0.9 * (h[t] - prev)
        assert np.allclose(h[t + 1], expected, rtol=0, atol=1e-12)
        assert np.allclose(plain.history[t + 1], plain.history[t] - step(plain.history[t], t))
    assert np.array_equal(heavy.history[1], plain.history[1])
    assert not np.allclose(heavy.weights, plain.weights)


def test_encrypted_momentum_matches_twin(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    shards = split(x[:, :8], y, (16, 16, 16))
    job = TrainingJob(
        n_features=8,
        iterations=4,
        batch_size=16,
        learning_rate=0.3,
        momentum=0.9,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    fed = setup_local(job, shards)
    trainer = Trainer(job, fed)
    model = trainer.train()
    twin = train_plaintext(job, shards)
    layout = job.layout
    raw = layout.weights_from_slots(
        fed.fed.decrypt(model.weights[0], length=layout.block, decimals=12)
    )
    diff = np.abs(raw - twin.weights).max()
    print(f"\nmomentum 0.9, 3x16x8, 4 iterations: max|enc - twin| = {diff:.2e}")
    assert diff <= 1e-4
    assert np.abs(twin.weights - twin.history[1]).max() > 0.1
    # depth 3, 7 levels, refresh at 3: the weights need a refresh from iteration 1 on and
    # the kept step, which mu * d would leave below the gradient, is refreshed at REDUCE
    assert model.refreshes_per_iteration == [0, 2, 2, 2]
    for r in model.reports:
        assert r.levels_left_before - r.levels_left_after == job.depth_per_iteration
    assert model.deltas is not None
    assert model.deltas[0].levels_left == model.weights[0].levels_left
    # a new run starts without the old step
    assert trainer.encrypt_initial().deltas is None


def test_twin_is_nesterov(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    """Nesterov's momentum, gradient at the weights themselves (Sutskever's NAG rewritten
    for them): d_{t+1} = mu d_t - G_t, w_{t+1} = w_t + mu d_{t+1} - G_t."""
    x, y = breast_cancer
    shards = split(x[:, :4], y, (20, 20))
    heavy_job = TrainingJob(
        n_features=4,
        iterations=6,
        batch_size=8,
        learning_rate=0.5,
        momentum=0.9,
        activation_degree=3,
        params=INSECURE_TEST.name,
    )
    job = dataclasses.replace(heavy_job, nesterov=True)
    nag, heavy = train_plaintext(job, shards), train_plaintext(heavy_job, shards)
    data = [(design_matrix(job, a), b) for a, b in shards]
    h, d = nag.history, np.zeros(job.n_weights)
    for t in range(job.iterations):
        rows = [batch_rows(len(b), job.batch_size, t) for _, b in data]
        eta = job.learning_rate / sum(len(r) for r in rows)
        g = sum(
            a[r].T @ (eta * (job.activation(a[r] @ h[t]) - b[r]))
            for (a, b), r in zip(data, rows, strict=True)
        )
        d = 0.9 * d - g
        assert np.allclose(h[t + 1], h[t] + 0.9 * d - g, rtol=0, atol=1e-12)
    assert not np.allclose(nag.weights, heavy.weights)


@pytest.mark.parametrize("value", [1, "yes", None])
def test_nesterov_is_validated(value: object) -> None:
    with pytest.raises(ParameterError, match="nesterov"):
        TrainingJob(n_features=4, momentum=0.5, nesterov=value)  # type: ignore[arg-type]


def test_a_job_too_deep_for_nesterov_says_so() -> None:
    with pytest.raises(ParameterError, match="1 for Nesterov momentum"):
        TrainingJob(n_features=4, momentum=0.5, nesterov=True, params=INSECURE_TEST.name)


def test_encrypted_nesterov_matches_twin_one_level_deeper(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    """Nesterov's mu * d lies on the weights' path: one more level an iteration, counted
    in the job's depth, so the schedule of refreshes follows it."""
    x, y = breast_cancer
    shards = split(x[:, :8], y, (16, 16, 16))
    job = TrainingJob(
        n_features=8,
        iterations=4,
        batch_size=16,
        learning_rate=0.3,
        momentum=0.9,
        nesterov=True,
        activation_degree=3,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    assert (
        job.depth_per_iteration == dataclasses.replace(job, nesterov=False).depth_per_iteration + 1
    )
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    twin = train_plaintext(job, shards)
    layout = job.layout
    raw = layout.weights_from_slots(
        fed.fed.decrypt(model.weights[0], length=layout.block, decimals=12)
    )
    diff = np.abs(raw - twin.weights).max()
    print(f"\nNesterov 0.9, 3x16x8, 4 iterations: max|enc - twin| = {diff:.2e}")
    assert diff <= 1e-4
    for r in model.reports:
        assert r.levels_left_before - r.levels_left_after == job.depth_per_iteration
