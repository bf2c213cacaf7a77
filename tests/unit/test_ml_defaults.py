"""Safe defaults (issue 15): a default TrainingJob converges on ordinary tables and runs on
a 128-bit parameter set; standardized features are clipped on every path; margins that
leave the activation's interval are reported, by the twin and by the encrypted run; and
in-process prediction streams one ciphertext at a time."""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import Any

import numpy as np
import pytest

from phe_fl.errors import ParameterError
from phe_fl.mhe import INSECURE_TEST, QuerierKeyPair
from phe_fl.ml import (
    GLMParty,
    Trainer,
    TrainingJob,
    predict,
    predict_proba,
    standardize,
    train_plaintext,
)
from phe_fl.ml.activations import sigmoid
from phe_fl.ml.datasets import federated_split, load_dataset
from phe_fl.ml.glm import MarginWarning, clip_features, design_matrix
from phe_fl.ml.glm import prediction as pred
from phe_fl.ml.jobs import DEFAULT_PARAMS
from phe_fl.testing import setup_local

Shards = list[tuple[np.ndarray, np.ndarray]]


def _accuracy(job: TrainingJob, shards: Shards, x_te: np.ndarray, y_te: np.ndarray) -> float:
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", MarginWarning)
        result = train_plaintext(job, shards)
    return float((predict(job, result.weights, x_te) == y_te).mean())


def _wide_table(seed: int = 0, n: int = 6000) -> tuple[np.ndarray, np.ndarray]:
    """30 dense features on very different scales and 10 rare one-hot columns (rates
    1e-4 .. 0.1, more frequent among positives): a census- or spam-like table."""
    from sklearn.datasets import make_classification

    rng = np.random.default_rng(seed)
    x, y = make_classification(
        n_samples=n, n_features=30, n_informative=8, n_redundant=4, flip_y=0.03, random_state=seed
    )
    rates = [1e-4, 3e-4, 5e-4, 1e-3, 2e-3, 5e-3, 0.01, 0.02, 0.05, 0.1]
    rare = [(rng.random(n) < np.where(y == 1, 1.8 * r, 0.2 * r)).astype(float) for r in rates]
    return np.hstack([x * rng.uniform(0.5, 50, size=30), np.array(rare).T]), y.astype(float)


# -- defaults ----------------------------------------------------------------------------
def test_default_parameter_set_is_128_bit_and_fits() -> None:
    job = TrainingJob(n_features=30)
    assert job.params == DEFAULT_PARAMS and job.parameter_set.secure
    assert job.depth_per_iteration <= job.parameter_set.usable_levels
    assert job.activation_degree == 5  # positive leading coefficient (see phe_fl.ml)
    assert job.activation.coefficients[-1] > 0
    assert job.feature_clip == 4.0
    last = [f.name for f in dataclasses.fields(TrainingJob)[-3:]]
    assert last == ["dp_noise_multiplier", "dp_clip", "nesterov"]  # new fields go last


@pytest.mark.parametrize(
    ("name", "floor"), [("breast_cancer", 0.93), ("diabetes", 0.72), ("digits", 0.93)]
)
def test_defaults_converge_on_the_shipped_tables(name: str, floor: float) -> None:
    x, y, _ = load_dataset(name)
    shards, x_te, y_te = federated_split(x, y, 3, "iid", 0)
    job = TrainingJob(n_features=x.shape[1])
    assert _accuracy(job, shards, x_te, y_te) >= floor
    long = dataclasses.replace(job, iterations=200)  # and stay there
    assert _accuracy(long, shards, x_te, y_te) >= floor


def test_defaults_converge_on_a_wide_table_with_rare_columns() -> None:
    x, y = _wide_table()
    shards, x_te, y_te = federated_split(x, y, 3, "iid", 0)
    job = TrainingJob(n_features=x.shape[1])
    assert _accuracy(job, shards, x_te, y_te) >= 0.88
    assert _accuracy(dataclasses.replace(job, iterations=400), shards, x_te, y_te) >= 0.88
    old = dataclasses.replace(
        job, learning_rate=1.0, activation_degree=3, activation_bound=3.0, iterations=50
    )
    assert _accuracy(old, shards, x_te, y_te) < 0.6  # what the former defaults gave


@pytest.mark.parametrize("value", [0.0, -1.0, float("nan"), float("-inf"), "4", True, None])
def test_feature_clip_is_validated(value: Any) -> None:
    with pytest.raises(ParameterError, match="feature_clip"):
        TrainingJob(n_features=4, feature_clip=value)


# -- the clip, on every path ---------------------------------------------------------------
def test_clip_is_part_of_the_model_on_every_path() -> None:
    job = TrainingJob(n_features=3, params=INSECURE_TEST.name, feature_clip=2.0)
    x = np.array([[0.5, -7.0, 150.0], [1.0, 2.5, -0.1]])
    clipped = np.clip(x, -2.0, 2.0)
    np.testing.assert_array_equal(clip_features(job, x), clipped)
    np.testing.assert_array_equal(design_matrix(job, x)[:, :3], clipped)
    w = np.array([0.3, -0.2, 0.1, 0.05])
    np.testing.assert_allclose(predict_proba(job, w, x), sigmoid(np.c_[clipped, [1, 1]] @ w))
    party = GLMParty(0, job, (x, np.array([1.0, 0.0])))  # PREPARE: the shard a party keeps
    np.testing.assert_array_equal(party._x[:, :3], clipped)
    off = dataclasses.replace(job, feature_clip=math.inf)
    np.testing.assert_array_equal(clip_features(off, x), x)


# -- a rare one-hot column -------------------------------------------------------------------
def _rare_shards(rows: int = 8000, parties: int = 3, seed: int = 0) -> Shards:
    """Four dense features and one one-hot column set in 3 of 24000 rows: 89 deviations
    after (pooled) standardization. Two of the rare rows are in party 0's first batch and
    one in its second, so the second iteration meets a margin the first one inflated."""
    rng = np.random.default_rng(seed)
    n = rows * parties
    x = rng.normal(size=(n, 4))
    y = (x @ np.array([1.5, -1.0, 0.5, 0.0]) + 0.3 * rng.normal(size=n) > 0).astype(float)
    rare = np.zeros(n)
    rare[[0, 1, 16]] = 1.0
    y[[0, 1, 16]] = 1.0
    x = np.column_stack([x, rare])
    cut = [(x[i * rows : (i + 1) * rows], y[i * rows : (i + 1) * rows]) for i in range(parties)]
    return standardize(cut)[0]


def test_clipped_run_converges_where_the_unclipped_one_leaves_the_interval() -> None:
    shards = _rare_shards()
    assert max(float(np.abs(x).max()) for x, _ in shards) > 80
    clipped = TrainingJob(n_features=5, iterations=60, params=INSECURE_TEST.name)
    unclipped = dataclasses.replace(clipped, feature_clip=math.inf)
    with pytest.warns(MarginWarning, match=r"iteration 1: largest margin \|x \. w\| 33\.\d"):
        bad = train_plaintext(unclipped, shards)
    assert bad.left_interval is not None and bad.left_interval.iteration == 1
    assert bad.left_interval.low > unclipped.activation_bound
    with warnings.catch_warnings():
        warnings.simplefilter("error", MarginWarning)
        good = train_plaintext(clipped, shards)
    assert good.left_interval is None
    assert max(good.max_abs_margin) < clipped.activation_bound

    def acc(job: TrainingJob, w: np.ndarray) -> float:
        return float(np.mean([(predict(job, w, x) == y).mean() for x, y in shards]))

    assert acc(clipped, good.weights) >= 0.93
    assert acc(unclipped, bad.weights) < acc(clipped, good.weights) - 0.05


@pytest.fixture(scope="module")
def rare_federations() -> dict[str, Any]:
    shards = _rare_shards()
    base = TrainingJob(
        n_features=5, iterations=3, params=INSECURE_TEST.name, allow_model_decryption=True
    )
    return {
        name: (job, setup_local(job, shards), shards)
        for name, job in (
            ("clipped", base),
            ("unclipped", dataclasses.replace(base, feature_clip=math.inf)),
        )
    }


def test_encrypted_run_reports_margins_that_leave_the_interval(
    rare_federations: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    job, fed, shards = rare_federations["unclipped"]
    caplog.set_level(logging.INFO, logger="phe_fl.ml")
    with pytest.warns(MarginWarning, match="iteration 1: largest margin") as caught:
        model = Trainer(job, fed).train(check_margins_every=1)
    assert len([w for w in caught if w.category is MarginWarning]) == 1  # once per run
    first = model.reports[1]
    assert first.margin_low is not None and first.margin_high is not None
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", MarginWarning)
        true = train_plaintext(job, shards).max_abs_margin[1]  # 33.4, the twin's
    assert first.margin_low <= true <= first.margin_high * (1 + 1e-4)  # within 48^(1/8)
    assert first.margin_low > job.activation_bound
    assert model.reports[0].margin_low is None  # zero weights: nothing to check
    messages = [r.getMessage() for r in caplog.records if r.name == "phe_fl.ml"]
    assert any("logistic iteration 3/3" in m for m in messages)
    assert any("iteration 1: largest margin" in m for m in messages)


def test_encrypted_run_with_the_clip_stays_quiet(rare_federations: dict[str, Any]) -> None:
    job, fed, _ = rare_federations["clipped"]
    with warnings.catch_warnings():
        warnings.simplefilter("error", MarginWarning)
        model = Trainer(job, fed).train(check_margins_every=1)
    checked = [r for r in model.reports if r.margin_high is not None]
    assert len(checked) == 2
    assert all(r.margin_low is not None and r.margin_low <= job.activation_bound for r in checked)


def test_margin_check_needs_consent(rare_federations: dict[str, Any]) -> None:
    job, _, shards = rare_federations["clipped"]
    refusing = dataclasses.replace(job, allow_model_decryption=False, iterations=2)
    fed = setup_local(refusing, shards)
    from phe_fl.ml import ModelDecryptionRefused

    with pytest.raises(ModelDecryptionRefused):
        Trainer(refusing, fed).train(check_margins_every=1)
    Trainer(refusing, fed).train()  # without the check, training needs no consent


# -- streaming prediction ------------------------------------------------------------------
def test_predict_local_streams_one_ciphertext_at_a_time(
    rare_federations: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    job, fed, _ = rare_federations["clipped"]
    rng = np.random.default_rng(3)
    w = rng.normal(0, 0.5, job.n_weights)
    weights = fed.fed.encrypt(job.layout.weights_vector(w))
    querier = QuerierKeyPair.generate(fed.ctx)
    per = job.layout.samples_per_ct
    x = rng.normal(size=(2 * per + 5, 5))
    x[0, 4] = 90.0  # clipped at the querier as in training
    calls: list[int] = []
    evaluate = pred.evaluate

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[3]))
        return evaluate(*args, **kwargs)

    monkeypatch.setattr(pred, "evaluate", counting)
    progress: list[tuple[int, int]] = []
    scores = pred.predict_local(
        job,
        fed.fed,
        weights,
        x,
        querier,
        output="margin",
        on_rows=lambda d, t: progress.append((d, t)),
    )
    assert calls == [1, 1, 1]
    assert progress == [(per, len(x)), (2 * per, len(x)), (len(x), len(x))]
    np.testing.assert_allclose(scores, predict_proba(job, w, x), atol=1e-3)
