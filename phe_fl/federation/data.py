"""A node's local data: a shard of a dataset shipped with scikit-learn, or a CSV file.

Nothing is downloaded: the named datasets come inside the scikit-learn wheel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from phe_fl.errors import ConfigError
from phe_fl.federation.config import DataSource
from phe_fl.mhe.context import FloatArray

__all__ = ["load_local_data", "load_holdout", "DATASETS"]

DATASETS = ("breast_cancer", "digits")


def _named(name: str) -> tuple[FloatArray, FloatArray]:
    from sklearn import datasets

    if name == "breast_cancer":
        bunch = datasets.load_breast_cancer()
    elif name == "digits":
        bunch = datasets.load_digits()
    else:
        raise ConfigError(f"unknown dataset {name!r}; shipped datasets: {', '.join(DATASETS)}")
    return np.asarray(bunch.data, dtype=np.float64), np.asarray(bunch.target, dtype=np.float64)


def _csv(path: Path) -> tuple[FloatArray, FloatArray]:
    try:
        table = np.loadtxt(path, delimiter=",", ndmin=2)
    except OSError:
        raise ConfigError(f"data file {path} cannot be read") from None
    except ValueError as exc:
        raise ConfigError(f"data file {path}: not a numeric CSV ({exc})") from None
    if table.shape[1] < 2:
        raise ConfigError(f"data file {path}: needs feature columns and a final label column")
    return table[:, :-1], table[:, -1]


def _holdout_split(n: int, fraction: float) -> tuple[NDArray[np.intp], NDArray[np.intp]]:
    """A fixed shuffle (seed 0) so every node and the querier agree on the split."""
    order = np.random.default_rng(0).permutation(n) if fraction > 0 else np.arange(n)
    cut = n - int(round(n * fraction))
    return order[:cut], order[cut:]


def load_holdout(source: DataSource) -> tuple[FloatArray, FloatArray]:
    """The rows of a named dataset that no shard holds: a querier's test set."""
    if source.dataset is None or source.holdout <= 0:
        raise ConfigError("a holdout set needs a named dataset and holdout > 0")
    X, y = _named(source.dataset)
    X = X / np.maximum(np.abs(X).max(axis=0), 1e-12)
    _, test = _holdout_split(len(X), source.holdout)
    return X[test], y[test]


def load_local_data(source: DataSource) -> tuple[FloatArray, FloatArray]:
    """Features and labels of this node's shard (contiguous split, same on every node)."""
    if source.path is not None:
        X, y = _csv(source.path)
    elif source.dataset is not None:
        X, y = _named(source.dataset)
        X = X / np.maximum(np.abs(X).max(axis=0), 1e-12)  # public per-feature bounds
        train, _ = _holdout_split(len(X), source.holdout)
        idx = np.array_split(train, source.shards)[source.shard]
        X, y = X[idx], y[idx]
    else:
        return np.zeros((0, 0)), np.zeros(0)
    if len(X) == 0:
        raise ConfigError("this node's data shard is empty")
    if not np.all(np.isfinite(X)):
        raise ConfigError("this node's data contains NaN or infinite values")
    return X, y
