"""The GLM packing and level bookkeeping, checked exactly on a slot-level simulator
(no encryption): the training code must reproduce the plaintext twin to float
precision for any shape, including several chunks per party and uneven shards."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import LevelError
from phe_fl.mhe import INSECURE_TEST, N15_128
from phe_fl.ml import GLMLayout, GLMParty, MapRequest, Trainer, TrainingJob, train_plaintext
from tests.ml.ml_slot_sim import SlotFederation


@pytest.mark.parametrize(
    ("n_features", "fit_intercept", "expected_block"),
    [(1, False, 1), (1, True, 4), (2, True, 8), (4, False, 8), (8, True, 32), (30, True, 64)],
)
def test_block_sizes(n_features: int, fit_intercept: bool, expected_block: int) -> None:
    job = TrainingJob(n_features=n_features, fit_intercept=fit_intercept, params=INSECURE_TEST.name)
    layout = job.layout
    assert layout.block == expected_block
    assert layout.block >= 2 * job.n_weights - 1
    assert layout.samples_per_ct * layout.block == INSECURE_TEST.slots


def test_rotation_indices_are_exactly_the_needed_ones() -> None:
    job = TrainingJob(n_features=8, params=INSECURE_TEST.name)  # 9 weights: D = 32, 64 per ct
    assert job.rotation_indices() == (1, 2, 4, 8, 9, 16, 32, 64, 128, 256, 512, 1024)
    layout = GLMLayout(slots=N15_128.slots, n_weights=31)
    assert set(layout.rotation_indices()) == {1, 2, 4, 8, 16, 32, 31} | {64 << t for t in range(8)}


def _run_sim(job: TrainingJob, shards: list, params=INSECURE_TEST):  # type: ignore[no-untyped-def]
    workers = [GLMParty(i, job, s) for i, s in enumerate(shards)]
    fed = SlotFederation(workers, params)
    return Trainer(job, fed).train(), fed  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("model", "n_features", "fit_intercept", "sizes", "batch_size", "degree"),
    [
        ("logistic", 8, True, (16, 16, 16), 16, 3),
        ("logistic", 30, True, (40, 50), 40, 3),  # 32 samples per ct: 2 chunks per party
        ("logistic", 5, False, (7, 30, 12), 10, 7),  # uneven shards, wrap-around batches
        ("logistic", 1, True, (9, 9), 9, 5),
        ("linear", 3, True, (20, 11), 8, 3),
        ("linear", 30, False, (70,), 70, 3),  # 3 chunks, one party
    ],
)
def test_slot_simulation_matches_twin(
    breast_cancer, split, model, n_features, fit_intercept, sizes, batch_size, degree
) -> None:  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    if model == "linear":  # any real target will do
        y = x[:, -1] * 0.5 + 0.1
    shards = split(x[:, :n_features], y, sizes)
    job = TrainingJob(
        n_features=n_features,
        model=model,
        fit_intercept=fit_intercept,
        batch_size=batch_size,
        iterations=6,
        learning_rate=0.3,
        activation_degree=degree,
        activation_bound=6.0,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    trained, fed = _run_sim(job, shards)
    twin = train_plaintext(job, shards)
    slots = trained.weights[0].v
    layout = job.layout
    w = layout.weights_from_slots(slots)
    np.testing.assert_allclose(w, twin.weights, rtol=0, atol=1e-12)
    # the weights are replicated in every block and the guard slots stay zero
    np.testing.assert_allclose(slots, layout.weights_vector(twin.weights), rtol=0, atol=1e-12)
    assert np.abs(twin.weights).max() > 1e-3  # it actually trained
    # level bookkeeping: one refresh whenever the next iteration would strand the weights
    depth = job.depth_per_iteration
    level, expected = INSECURE_TEST.mult_depth, []
    for _ in range(job.iterations):
        refresh = level - depth < INSECURE_TEST.refresh_min_levels
        level = (INSECURE_TEST.mult_depth if refresh else level) - depth
        expected.append(int(refresh))
    assert trained.refreshes_per_iteration == expected
    assert fed.refreshes == sum(expected)
    assert sorted(set(fed.ctx.rotations)) == list(job.rotation_indices())


def test_more_iterations_per_refresh_on_deeper_params(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    shards = split(x[:, :4], y, (16, 16))
    job = TrainingJob(  # 8 usable levels, the degree-3 sigmoid: 3 levels per iteration
        n_features=4, iterations=6, params=N15_128.name, activation_degree=3, activation_bound=3.0
    )
    trained, _ = _run_sim(job, shards, N15_128)
    assert job.depth_per_iteration == 3
    # 11 levels: 11 -> 8 -> 5 (3 left: refreshable) -> refresh -> 8 -> 5 -> refresh ...
    assert trained.refreshes_per_iteration == [0, 0, 1, 0, 1, 0]


def test_party_refuses_weights_without_enough_levels(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    job = TrainingJob(n_features=4, params=INSECURE_TEST.name, activation_degree=3)
    party = GLMParty(0, job, split(x[:, :4], y, (8,))[0])
    fed = SlotFederation([party])
    w = fed.encrypt(job.layout.weights_vector(np.zeros(5)))
    w.level = INSECURE_TEST.mult_depth - 2  # 2 levels left, an iteration needs 3
    with pytest.raises(LevelError, match="party 0: weights have 2 levels left"):
        party.gradient(MapRequest(0, (w,), 8))  # type: ignore[arg-type]
