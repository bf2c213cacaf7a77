"""Encrypted training (INSECURE_TEST parameters, parties in one process) against the
plaintext twin, refreshes included, and the consent rule for decrypting the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import (
    Federation,
    GLMParty,
    MapRequest,
    MapStage,
    ModelDecryptionRefused,
    Trainer,
    TrainingJob,
    predict,
    train_plaintext,
)
from phe_fl.testing import setup_local

TOL = 1e-3  # bound on max |encrypted - twin| over the weights


@pytest.fixture(scope="module")
def logistic_run(breast_cancer, split):  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    shards = split(x[:, :8], y, (16, 16, 16))  # 3 parties x 16 samples x 8 features
    job = TrainingJob(
        n_features=8,
        iterations=4,
        batch_size=16,
        learning_rate=1.0,
        activation_degree=3,
        activation_bound=3.0,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    fed = setup_local(job, shards)
    fed.sent = []  # type: ignore[attr-defined]  # the weights each MAP was broadcast with
    broadcast = fed.map_stage

    def recording_map(request: MapRequest, stage: int, refreshed: Any) -> MapStage:
        fed.sent.append(request.weights[0])  # type: ignore[attr-defined]
        return broadcast(request, stage, refreshed)

    fed.map_stage = recording_map  # type: ignore[method-assign]
    model = Trainer(job, fed).train()
    return job, shards, fed, model


def test_logistic_encrypted_matches_twin(logistic_run) -> None:  # type: ignore[no-untyped-def]
    job, shards, fed, model = logistic_run
    assert isinstance(fed, Federation)
    twin = train_plaintext(job, shards)
    released = model.decrypt(fed)
    layout = job.layout
    raw = layout.weights_from_slots(
        fed.fed.decrypt(model.weights[0], length=layout.block, decimals=12)
    )
    diff, raw_diff = np.abs(released - twin.weights).max(), np.abs(raw - twin.weights).max()
    print(
        f"\nlogistic 3x16x8, 4 iterations: max|enc - twin| = {diff:.2e} (released, "
        f"{INSECURE_TEST.release_decimals} decimals), {raw_diff:.2e} (raw)"
    )
    assert diff <= TOL and raw_diff <= 1e-4
    assert np.abs(twin.weights).max() > 0.1  # the model moved
    # the (approximated) model has learned something on its own training data
    x = np.vstack([s[0] for s in shards])
    y = np.concatenate([s[1] for s in shards])
    assert (predict(job, released, x) == y).mean() > 0.85


def test_levels_and_automatic_refresh(logistic_run) -> None:  # type: ignore[no-untyped-def]
    job, _, _, model = logistic_run
    # depth 3 per iteration, 7 levels, a refresh needs 3 left: 7 -> 4, then refresh each time
    assert job.depth_per_iteration == 3
    assert model.refreshes_per_iteration == [0, 1, 1, 1]
    assert model.total_refreshes == 3
    for r in model.reports:
        assert r.levels_left_before - r.levels_left_after == job.depth_per_iteration
        assert r.levels_left_after >= INSECURE_TEST.refresh_min_levels
    assert model.weights[0].levels_left == 4
    # the weights go down with 6 levels (MAP's 3 + the 3 the refresh of the result needs),
    # not 7: the root refreshes before each next iteration anyway; the last iteration's
    # weights are the model and keep their levels
    assert [r.levels_left_before for r in model.reports] == [6, 6, 6, 7]
    assert [r.levels_dropped for r in model.reports] == [1, 1, 1, 0]
    assert [r.levels_left_after for r in model.reports] == [3, 3, 3, 4]


def test_weights_are_sent_at_exactly_the_planned_level(logistic_run) -> None:  # type: ignore[no-untyped-def]
    job, _, fed, model = logistic_run
    sent = fed.sent
    assert [w.levels_left for w in sent] == [r.levels_left_before for r in model.reports]
    ctx = fed.ctx
    fresh = fed.encrypt(np.zeros(4))
    tower = len(fresh.to_bytes()) - len(ctx.drop_levels(fresh, fresh.levels_left - 1).to_bytes())
    for w in sent:
        # the bytes on the wire are those of a ciphertext at that level (metadata aside)
        at_level = len(ctx.drop_levels(fresh, w.levels_left).to_bytes())
        assert abs(len(w.to_bytes()) - at_level) < tower // 20, (w.levels_left, len(w.to_bytes()))
    full = len(fresh.to_bytes())
    print(
        f"\nweights down: {[len(w.to_bytes()) for w in sent]} bytes (a full-level ciphertext "
        f"is {full})"
    )
    assert len(sent[0].to_bytes()) < full - tower // 2


def _slot_run(job: TrainingJob, shards: list, params):  # type: ignore[no-untyped-def]
    from tests.ml.ml_slot_sim import SlotFederation

    fed = SlotFederation([GLMParty(i, job, s) for i, s in enumerate(shards)], params)
    return Trainer(job, fed).train(), fed  # type: ignore[arg-type]


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_broadcast_drops_levels_without_changing_the_refresh_schedule(
    breast_cancer, split, momentum
) -> None:  # type: ignore[no-untyped-def]
    """11 levels, depth 3, refresh at 3: 11 -> 8 -> 5 -> refresh. At 8 left the weights
    would need a refresh before the next iteration anyway, so they go down with 6 levels
    (2 dropped); at 11 they would not, so nothing is dropped. Same refreshes as keeping
    every level, same weights as the twin."""
    from phe_fl.mhe import N15_128

    x, y = breast_cancer
    shards = split(x[:, :4], y, (16, 16))
    job = TrainingJob(
        n_features=4,
        iterations=7,
        params=N15_128.name,
        learning_rate=0.2,
        momentum=momentum,
        activation_degree=3,
        activation_bound=3.0,
    )
    model, fed = _slot_run(job, shards, N15_128)
    assert job.depth_per_iteration == 3
    assert [r.levels_dropped for r in model.reports] == [0, 2, 0, 2, 0, 2, 0]
    assert [r.levels_left_before for r in model.reports] == [11, 6, 11, 6, 11, 6, 11]
    for r in model.reports:
        assert r.levels_left_before - r.levels_left_after == job.depth_per_iteration
    # the schedule of keeping every level: a refresh of w every second iteration (and of
    # the kept step, with momentum, in the same round)
    per_round = 2 if momentum else 1
    assert model.refreshes_per_iteration == [0, 0, per_round, 0, per_round, 0, per_round]
    assert fed.refreshes == model.total_refreshes
    twin = train_plaintext(job, shards)
    w = job.layout.weights_from_slots(model.weights[0].v)
    np.testing.assert_allclose(w, twin.weights, rtol=0, atol=1e-12)
    assert 1e-3 < np.abs(twin.weights).max() < 10  # it trained, and did not diverge
    assert model.weights[0].levels_left == 8  # the model keeps its levels


def test_decryption_needs_every_partys_consent(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    shards = split(x[:, :2], y, (8, 8))
    job = TrainingJob(  # consent not given
        n_features=2, iterations=1, batch_size=8, params=INSECURE_TEST.name
    )
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    with pytest.raises(ModelDecryptionRefused, match=r"parties \[0, 1\].*allow_model_decryption"):
        model.decrypt(fed)
    assert issubclass(ModelDecryptionRefused, ProtocolError)
    # one party withholding consent is enough to refuse
    half = setup_local(job, shards, consents=[True, False])
    model = Trainer(job, half).train()
    with pytest.raises(ModelDecryptionRefused, match=r"party \[1\]"):
        model.decrypt(half)


def test_linear_regression_two_chunks_per_party(breast_cancer, split) -> None:  # type: ignore[no-untyped-def]
    x, _ = breast_cancer
    target = 0.5 * x[:, 0] - 0.3 * x[:, 1] + 0.1  # a real-valued target
    shards = split(x, target, (40, 40))  # 30 features: 32 samples per ciphertext -> 2 chunks
    job = TrainingJob(
        n_features=30,
        model="linear",
        iterations=3,
        batch_size=40,
        learning_rate=0.2,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    assert job.layout.n_chunks(40) == 2
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    twin = train_plaintext(job, shards)
    diff = np.abs(model.decrypt(fed) - twin.weights).max()
    print(f"\nlinear 2x40x30, 3 iterations: max|enc - twin| = {diff:.2e}")
    assert diff <= TOL
    # depth 2 per iteration: 7 -> 5 -> 3 -> (refresh) -> 5
    assert model.refreshes_per_iteration == [0, 0, 1]


def test_trainer_refuses_a_federation_of_other_parameters(logistic_run) -> None:  # type: ignore[no-untyped-def]
    _, _, fed, _ = logistic_run
    other = TrainingJob(n_features=8, params="n15-depth11-128")
    with pytest.raises(ParameterError, match="declares"):
        Trainer(other, fed)


def _bc_split(breast_cancer, n_parties: int):  # type: ignore[no-untyped-def]
    """80/20 split; training rows dealt to ``n_parties`` parties."""
    x, y = breast_cancer
    n_train = int(0.8 * len(y))
    parts = np.array_split(np.arange(n_train), n_parties)
    shards = [(x[p], y[p]) for p in parts]
    return shards, (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


@pytest.mark.slow
def test_ten_parties_breast_cancer_accuracy(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression

    shards, (x_tr, y_tr), (x_te, y_te) = _bc_split(breast_cancer, 10)
    job = TrainingJob(
        n_features=30,
        iterations=20,
        batch_size=16,
        learning_rate=0.3,
        activation_degree=5,  # positive leading coefficient: stable outside [-8, 8]
        activation_bound=8.0,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    w_enc = model.decrypt(fed)
    twin = train_plaintext(job, shards)
    sk = LogisticRegression(max_iter=5000).fit(x_tr, y_tr)
    acc_enc = float((predict(job, w_enc, x_te) == y_te).mean())
    acc_twin = float((predict(job, twin.weights, x_te) == y_te).mean())
    diff = np.abs(w_enc - twin.weights).max()
    print(
        f"\n10 parties, breast cancer, 20 iterations: test accuracy encrypted {acc_enc:.4f}, "
        f"twin {acc_twin:.4f}, sklearn {sk.score(x_te, y_te):.4f}; max|enc - twin| = "
        f"{diff:.2e}; refreshes {model.total_refreshes}"
    )
    assert diff <= TOL
    assert acc_enc == acc_twin
    assert acc_enc >= 0.93


def test_activation_choice_decides_stability(breast_cancer) -> None:  # type: ignore[no-untyped-def]
    """Plaintext only: the degree-3 fit on [-3, 3] (negative leading coefficient) pushes
    margins that left the interval further out; degree 5 on [-8, 8] pulls them back."""
    shards, _, _ = _bc_split(breast_cancer, 10)
    common = {
        "n_features": 30,
        "iterations": 40,
        "batch_size": 16,
        "learning_rate": 0.3,
        "params": INSECURE_TEST.name,
    }
    with np.errstate(all="ignore"):
        bad = train_plaintext(
            TrainingJob(**common, activation_degree=3, activation_bound=3.0), shards
        )
    good = train_plaintext(TrainingJob(**common, activation_degree=5, activation_bound=8.0), shards)
    assert not np.all(np.isfinite(bad.max_abs_margin)) or max(bad.max_abs_margin) > 1e6
    assert max(good.max_abs_margin) < 20
