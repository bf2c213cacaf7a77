"""Oblivious prediction (INSECURE_TEST, parties in one process): the querier's samples go
out encrypted under the joint key, the encrypted model is evaluated at the root, the
result is key-switched to the querier, and only the querier can read it."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from phe_fl.errors import KeyMismatchError, LevelError, ParameterError
from phe_fl.mhe import INSECURE_TEST, Ciphertext, Party, QuerierKeyPair
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml import Trainer, TrainingJob, predict, predict_proba
from phe_fl.ml.glm import design_matrix
from phe_fl.ml.glm import prediction as pred
from phe_fl.testing import setup_local

TOL = 1e-3


@pytest.fixture(scope="module")
def trained(breast_cancer, split):  # type: ignore[no-untyped-def]
    x, y = breast_cancer
    shards = split(x[:, :8], y, (16, 16, 16))
    job = TrainingJob(
        n_features=8,
        iterations=2,
        batch_size=16,
        learning_rate=0.5,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
        activation_degree=3,
        activation_bound=3.0,
    )
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    w = model.decrypt(fed)
    querier = QuerierKeyPair.generate(fed.ctx)
    # 150 samples the model never saw: 64 per ciphertext at D = 32, so three ciphertexts
    return job, fed.fed, model.weights[0], w, querier, x[200:350, :8], y[200:350]


def test_prediction_uses_only_training_rotations_and_fits_the_levels(trained) -> None:  # type: ignore[no-untyped-def]
    job, _, weights, *_ = trained
    assert set(job.layout.feature_sum_steps) <= set(job.rotation_indices())
    assert pred.prediction_depth(job) == 1 + job.activation.depth == 3
    assert pred.prediction_depth(job, output="margin") == 2
    assert weights.levels_left >= pred.prediction_depth(job)


def test_margin_output_matches_plaintext_predict_proba(trained) -> None:  # type: ignore[no-untyped-def]
    job, fed, weights, w, querier, xq, _ = trained
    scores = pred.predict_local(job, fed, weights, xq, querier, output="margin")
    expected = predict_proba(job, w, xq)
    assert scores.shape == (150,)
    assert np.abs(scores - expected).max() <= TOL
    z = design_matrix(job, xq) @ w
    clear = np.abs(z) > 1e-2  # labels of samples on the boundary may flip with CKKS noise
    labels = (scores >= 0.5).astype(float)
    assert np.array_equal(labels[clear], predict(job, w, xq)[clear])
    assert np.abs(z).max() > 1.0  # the model is not trivial


def test_activation_output_is_the_trained_polynomial(trained) -> None:  # type: ignore[no-untyped-def]
    job, fed, weights, w, querier, xq, _ = trained
    ctx = fed.ctx
    queries = pred.encrypt_queries(job, ctx, xq, fed.joint_key)
    assert len(queries) == 3 == job.layout.n_chunks(150)
    results = pred.evaluate(job, ctx, weights, queries)
    slots = [querier.decrypt(fed.key_switch(r, querier.public_key)) for r in results]
    z = design_matrix(job, xq) @ w
    expected = np.clip(job.activation(z), 0.0, 1.0)
    scores = pred.decode_scores(job, slots, 150)
    assert np.abs(scores - expected).max() <= TOL
    clear = np.abs(expected - 0.5) > 1e-2
    labels = pred.decode_labels(job, slots, 150)
    assert np.array_equal(labels[clear], (expected >= 0.5)[clear].astype(float))
    # every slot but one per sample is zero: the partial sums of the rotate-and-add are masked
    block = job.layout.block
    for v in slots:
        rest = np.delete(v, np.arange(0, v.size, block))
        assert np.abs(rest).max() <= 1e-3


def test_linear_model_prediction(trained) -> None:  # type: ignore[no-untyped-def]
    job, fed, _, _, querier, xq, _ = trained
    linear = dataclasses.replace(job, model="linear")
    w = np.linspace(-0.5, 0.5, linear.n_weights)
    weights = fed.encrypt(linear.layout.weights_vector(w))
    assert pred.prediction_depth(linear) == 2
    scores = pred.predict_local(linear, fed, weights, xq[:40], querier)
    assert np.abs(scores - predict_proba(linear, w, xq[:40])).max() <= TOL
    with pytest.raises(ParameterError, match="logistic"):
        pred.decode_labels(linear, [np.zeros(fed.ctx.slots)], 1)


def test_parties_and_root_only_ever_see_ciphertexts(trained, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    job, fed, weights, _, querier, xq, _ = trained
    seen: list[tuple[str, Any]] = []

    real_evaluate = pred.evaluate

    def spy_evaluate(job_, ctx, weights_, queries, **kw):  # type: ignore[no-untyped-def]
        seen.append(("root", weights_))
        seen.extend(("root", q) for q in queries)
        return real_evaluate(job_, ctx, weights_, queries, **kw)

    real_share = Party.key_switch_share

    def spy_share(self, ct, q):  # type: ignore[no-untyped-def]
        seen.append((f"party {self.index}", ct))
        return real_share(self, ct, q)

    monkeypatch.setattr(pred, "evaluate", spy_evaluate)
    monkeypatch.setattr(Party, "key_switch_share", spy_share)
    sample = xq[:5]
    scores = pred.predict_local(job, fed, weights, sample, querier)
    assert scores.shape == (5,)
    assert len(seen) == 1 + 1 + fed.n_parties  # weights, one query, one share per party
    assert all(isinstance(obj, Ciphertext) for _, obj in seen)
    joint = fed.joint_key.key_tag
    assert all(obj.key_tag == joint for _, obj in seen)  # nothing under any other key
    # the query as it travels: no trace of the plaintext feature values
    query = [obj for who, obj in seen if who == "root"][1]
    blob = query.to_bytes()
    for row in sample:  # (the intercept column 1.0 is public)
        for v in row:
            assert np.float64(v).tobytes() not in blob


def test_another_querier_cannot_read_the_result(trained) -> None:  # type: ignore[no-untyped-def]
    job, fed, weights, w, querier, xq, _ = trained
    other = QuerierKeyPair.generate(fed.ctx)
    (query,) = pred.encrypt_queries(job, fed.ctx, xq[:20], fed.joint_key)
    (result,) = pred.evaluate(job, fed.ctx, weights, [query], output="margin")
    switched = fed.key_switch(result, querier.public_key)
    assert switched.key_tag == querier.public_key.key_tag != fed.joint_key.key_tag
    with pytest.raises(KeyMismatchError):
        other.decrypt(switched)
    # forcing the other secret key onto it yields noise, not the scores
    expected = design_matrix(job, xq[:20]) @ w
    try:
        raw = fed.ctx.cc.Decrypt(other._secret, switched._ct)
        values = np.asarray(raw.GetRealPackedValue())[:: job.layout.block][:20]
    except RuntimeError:
        return  # OpenFHE refuses to decode: fine as well
    assert np.abs(values - expected).max() > 1.0
    mine = querier.decrypt(switched)[:: job.layout.block][:20]
    assert np.abs(mine - expected).max() <= TOL


def test_refuses_bad_queries_and_shallow_weights(trained) -> None:  # type: ignore[no-untyped-def]
    job, fed, weights, *_ = trained
    ctx = fed.ctx
    for bad, msg in [
        (np.zeros(8), "2-D"),
        (np.zeros((3, 7)), "7 features"),
        (np.full((2, 8), np.nan), "NaN"),
        (np.zeros((0, 8)), "no samples"),
    ]:
        with pytest.raises(ParameterError, match=msg):
            pred.encrypt_queries(job, ctx, bad, fed.joint_key)
    queries = pred.encrypt_queries(job, ctx, np.zeros((2, 8)), fed.joint_key)
    shallow = ctx.encrypt(job.layout.weights_vector(np.zeros(9)), fed.joint_key, level=5)
    assert shallow.levels_left == 2 < pred.prediction_depth(job)
    with pytest.raises(LevelError, match="refresh"):
        pred.evaluate(job, ctx, shallow, queries)
    pred.evaluate(job, ctx, shallow, queries, output="margin")  # 2 levels are enough there
    with pytest.raises(ParameterError, match="output"):
        pred.evaluate(job, ctx, weights, queries, output="probability")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="result ciphertexts"):
        pred.decode_scores(job, [np.zeros(ctx.slots)], 200)


def test_local_federation_type(trained) -> None:  # type: ignore[no-untyped-def]
    _, fed, *_ = trained
    assert isinstance(fed, LocalFederation)


def test_a_model_short_of_levels_is_refreshed_before_in_process_prediction(trained) -> None:  # type: ignore[no-untyped-def]
    """A trained model is always ready to predict: weights left with fewer levels than
    prediction needs (3 left, a degree-7 sigmoid needs 4) are refreshed collectively once,
    not refused."""
    job, fed, weights, w, querier, xq, _ = trained
    deep = dataclasses.replace(job, activation_degree=7)  # same layout, deeper polynomial
    shallow = fed.ctx.drop_levels(weights, 3)
    assert shallow.levels_left == 3 < pred.prediction_depth(deep) == 4
    queries = pred.encrypt_queries(deep, fed.ctx, xq[:2], fed.joint_key)
    with pytest.raises(LevelError, match="refresh"):
        pred.evaluate(deep, fed.ctx, shallow, queries)
    scores = pred.predict_local(deep, fed, shallow, xq[:40], querier)
    expected = np.clip(deep.activation(design_matrix(deep, xq[:40]) @ w), 0.0, 1.0)
    assert np.abs(scores - expected).max() <= TOL
