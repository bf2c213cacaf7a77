"""Offline datasets, federated splits and the plaintext standardization."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from phe_fl.errors import ParameterError
from phe_fl.ml.datasets import (
    DATA_DIR,
    apply_standardization,
    load_dataset,
    split,
    standardize,
    train_test,
)


@pytest.mark.parametrize(
    ("name", "shape", "positives"),
    [("breast_cancer", (569, 30), 357), ("digits", (1797, 64), 178), ("diabetes", (768, 8), 268)],
)
def test_datasets_load_offline(name: str, shape: tuple[int, int], positives: int) -> None:
    x, y, desc = load_dataset(name)
    assert x.shape == shape and y.shape == (shape[0],)
    assert x.dtype == np.float64 and np.all(np.isfinite(x))
    assert set(np.unique(y).tolist()) == {0.0, 1.0}
    assert int(y.sum()) == positives
    assert desc


def test_pima_copy_is_the_documented_one() -> None:
    path = DATA_DIR / "pima_diabetes.csv"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest in (DATA_DIR / "README.md").read_text()
    x, y, _ = load_dataset("diabetes")
    # first row of the original table and the column means stated in its header
    assert x[0].tolist() == [6, 148, 72, 35, 0, 33.6, 0.627, 50] and y[0] == 1
    assert np.allclose(x.mean(axis=0), [3.8, 120.9, 69.1, 20.5, 79.8, 32.0, 0.5, 33.2], atol=0.05)


def test_digits_other_digit_and_unknown_names() -> None:
    _, y, desc = load_dataset("digits", digit=3)
    assert int(y.sum()) == 183 and "digit 3" in desc
    with pytest.raises(ParameterError, match="known"):
        load_dataset("mnist")
    with pytest.raises(ParameterError, match="digit"):
        load_dataset("digits", digit=10)


def test_digits_ten_classes_and_pooling() -> None:
    x, y, desc = load_dataset("digits", digit=None, pool=2)
    assert x.shape == (1797, 16) and sorted(set(y.tolist())) == list(range(10))
    full, _, _ = load_dataset("digits", digit=None)
    assert np.allclose(x[0, 0], full[0, [0, 1, 8, 9]].mean())  # top-left 2x2 square
    assert "ten classes" in desc and "pooled" in desc
    with pytest.raises(ParameterError, match="pool"):
        load_dataset("digits", pool=3)


@pytest.mark.parametrize("mode", ["iid", "skewed"])
def test_split_partitions_the_rows(mode: str) -> None:
    x, y, _ = load_dataset("breast_cancer")
    shards = split(x, y, 10, mode, seed=7)  # type: ignore[arg-type]
    assert len(shards) == 10
    assert sum(len(s[1]) for s in shards) == len(y)
    rows = np.vstack([s[0] for s in shards])
    # every row exactly once (rows of this table are unique)
    assert np.array_equal(np.unique(rows, axis=0), np.unique(x, axis=0))
    assert all(len(s[1]) >= 1 and set(np.unique(s[1])) == {0.0, 1.0} for s in shards)
    again = split(x, y, 10, mode, seed=7)  # type: ignore[arg-type]
    assert all(np.array_equal(a[0], b[0]) for a, b in zip(shards, again, strict=True))


def test_skewed_split_is_label_skewed() -> None:
    x, y, _ = load_dataset("breast_cancer")
    frac = lambda shards: np.array([s[1].mean() for s in shards])  # noqa: E731
    iid, skewed = frac(split(x, y, 10, "iid", 3)), frac(split(x, y, 10, "skewed", 3))
    assert iid.std() < 0.1 < skewed.std()
    # a class too small for every party to hold one: every party still gets data
    small_y = np.zeros(40)
    small_y[:3] = 1.0
    shards = split(np.arange(80.0).reshape(40, 2), small_y, 10, "skewed", 0)
    assert all(len(s[1]) >= 1 for s in shards) and sum(s[1].sum() for s in shards) == 3


def test_split_refuses_bad_arguments() -> None:
    x, y = np.zeros((5, 2)), np.zeros(5)
    with pytest.raises(ParameterError, match="one each"):
        split(x, y, 6)
    with pytest.raises(ParameterError, match="mode"):
        split(x, y, 2, "dirichlet")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="n_parties"):
        split(x, y, 0)


def test_standardize_uses_global_statistics() -> None:
    x, y, _ = load_dataset("diabetes")
    shards = split(x, y, 4, "skewed", seed=1)
    scaled, mean, std = standardize(shards)
    pooled = np.vstack([s[0] for s in scaled])
    assert np.allclose(pooled.mean(axis=0), 0.0, atol=1e-9)
    assert np.allclose(pooled.std(axis=0), 1.0, atol=1e-6)
    assert np.allclose(mean, x.mean(axis=0)) and np.allclose(std, x.std(axis=0), atol=1e-5)
    assert np.array_equal(scaled[0][0], apply_standardization(shards[0][0], mean, std))
    # constant columns (digits' blank border pixels) stay finite
    xd, yd, _ = load_dataset("digits")
    scaled_d, _, _ = standardize(split(xd, yd, 3, "iid", 0))
    assert all(np.all(np.isfinite(s[0])) for s in scaled_d)


def test_train_test_is_stratified() -> None:
    x, y, _ = load_dataset("breast_cancer")
    x_tr, y_tr, x_te, y_te = train_test(x, y, 0.2, seed=0)
    assert len(y_tr) + len(y_te) == len(y) and abs(len(y_te) - 0.2 * len(y)) <= 1
    assert abs(y_te.mean() - y.mean()) < 0.01
