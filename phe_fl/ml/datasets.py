"""Datasets that install offline, federated splits and the plaintext stand-in for the
collective standardization.

Nothing here downloads anything: the tables ship with scikit-learn's wheel or with this
package (``phe_fl/ml/data/``, see its README for provenance and licence).

This module is the one registry of named datasets: the federation's nodes
(:mod:`phe_fl.federation.data`, ``[data] dataset = ...``) read the same tables, with
their column names, through :func:`load_named`.

* ``"breast_cancer"``: Wisconsin diagnostic breast cancer, 569 x 30, label 1 = benign
  (scikit-learn's ``load_breast_cancer``).
* ``"digits"``: 8x8 handwritten digits, 1797 x 64 pixel intensities 0..16 (scikit-learn's
  ``load_digits``), turned into a binary one-vs-rest task for the GLMs: label 1 for the
  digit ``digit`` (0 by default, 178 samples), 0 for every other digit; ``digit=None``
  keeps the ten classes for networks.
* ``"diabetes"``: the Pima Indians Diabetes Database, 768 x 8, label 1 = tested positive
  (268 samples). Not scikit-learn's ``load_diabetes``, which is a 442 x 10 regression
  table. The copy in ``data/pima_diabetes.csv`` was converted from ``diabetes.arff`` of
  Debian's ``weka`` package.

:func:`split` deals a table to parties, IID or label-skewed; :func:`standardize` scales
every shard with the global mean and standard deviation. In a deployment nobody holds
the global statistics: the federation's stats job computes them collectively under
encryption (each party encrypts its count, sums and sums of squares, only the aggregate
is decrypted) as the PREPARE step of training; :func:`standardize` computes the same
numbers in one process, with the same formula, for tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.ml.jobs import Shard

__all__ = [
    "DATASETS",
    "DATA_DIR",
    "NamedDataset",
    "load_named",
    "SplitMode",
    "load_dataset",
    "split",
    "standardize",
    "apply_standardization",
    "train_test",
    "federated_split",
    "pooled_mean_std",
]

DATA_DIR = Path(__file__).resolve().parent / "data"
DATASETS = ("breast_cancer", "diabetes", "digits")
SplitMode = Literal["iid", "skewed"]

_STD_EPS = 1e-6  # added to every standard deviation, as the federation's stats job does


@dataclass(frozen=True)
class NamedDataset:
    """One shipped table with its column names, so that a node on a named dataset reports
    the same kind of schema (names, order, types) as a node reading its own file."""

    name: str
    x: FloatArray
    y: FloatArray
    feature_names: tuple[str, ...]
    label_name: str
    description: str


def load_named(name: str, *, digit: int | None = 0, pool: int = 1) -> NamedDataset:
    """The one registry of shipped datasets (the federation's nodes and the ML engine both
    read it). Column names: scikit-learn's ``feature_names`` and ``"target"`` for its
    datasets (digits pooled ``pool x pool`` are named ``pixel_<row>_<col>`` on the pooled
    grid), the CSV header for diabetes. For digits, ``digit=None`` keeps the ten classes
    (labels 0..9, for networks) and ``pool`` averages ``pool x pool`` pixel squares
    (``pool=2``: 4x4 = 16 features, small enough for the 2^12 test ring's square blocks)."""
    if name == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        bunch = load_breast_cancer()
        desc = "Wisconsin diagnostic breast cancer (scikit-learn), 569 x 30, y=1: benign"
        return NamedDataset(
            name,
            np.asarray(bunch.data, dtype=np.float64),
            np.asarray(bunch.target, dtype=np.float64),
            tuple(str(f) for f in bunch.feature_names),
            "target",
            desc,
        )
    if name == "digits":
        if digit is not None and (
            isinstance(digit, bool) or not isinstance(digit, int) or not 0 <= digit <= 9
        ):
            raise ParameterError(f"digit must be None or an integer in 0..9, got {digit!r}")
        if isinstance(pool, bool) or pool not in (1, 2, 4, 8):
            raise ParameterError(f"pool must be 1, 2, 4 or 8 (divides 8), got {pool!r}")
        from sklearn.datasets import load_digits

        x, t = load_digits(return_X_y=True)
        side = 8 // pool
        x = np.asarray(x, dtype=np.float64).reshape(-1, side, pool, side, pool).mean(axis=(2, 4))
        x = x.reshape(-1, side * side)
        names = tuple(f"pixel_{r}_{c}" for r in range(side) for c in range(side))
        size = f"1797 x {side * side}" + (f" ({pool}x{pool} average-pooled)" if pool > 1 else "")
        if digit is None:
            y = np.asarray(t, dtype=np.float64)
            desc = f"8x8 digits (scikit-learn), {size}, ten classes y=0..9"
        else:
            y = (np.asarray(t) == digit).astype(np.float64)
            desc = (
                f"8x8 digits (scikit-learn), {size}, one-vs-rest: y=1 for digit {digit} "
                f"({int(y.sum())} samples), y=0 for the others"
            )
        return NamedDataset(name, x, y, names, "target", desc)
    if name == "diabetes":
        path = DATA_DIR / "pima_diabetes.csv"
        with path.open() as f:
            header = tuple(f.readline().strip().split(","))
        table = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.float64)
        if table.shape != (768, 9) or len(header) != 9:
            raise ParameterError(f"{path}: expected 768 x 9 values, got {table.shape}")
        desc = (
            "Pima Indians Diabetes (NIDDK via UCI; copy from Debian's weka package), 768 x 8, "
            "y=1: tested positive"
        )
        return NamedDataset(
            name, table[:, :8].copy(), table[:, 8].copy(), header[:8], header[8], desc
        )
    raise ParameterError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")


def load_dataset(
    name: str, *, digit: int | None = 0, pool: int = 1
) -> tuple[FloatArray, FloatArray, str]:
    """``(X, y, description)`` with float64 features: :func:`load_named` without the
    column names."""
    data = load_named(name, digit=digit, pool=pool)
    return data.x, data.y, data.description


def train_test(
    x: FloatArray, y: FloatArray, test_fraction: float, seed: int
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Stratified ``(x_train, y_train, x_test, y_test)`` with a seeded shuffle."""
    if not 0.0 < test_fraction < 1.0:
        raise ParameterError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        test.extend(idx[: int(round(test_fraction * idx.size))].tolist())
    mask = np.zeros(y.size, dtype=bool)
    mask[test] = True
    train_idx = rng.permutation(np.flatnonzero(~mask))
    test_idx = rng.permutation(np.flatnonzero(mask))
    return x[train_idx], y[train_idx], x[test_idx], y[test_idx]


def split(
    x: FloatArray,
    y: FloatArray,
    n_parties: int,
    mode: SplitMode = "iid",
    seed: int = 0,
    *,
    alpha: float = 0.5,
) -> list[Shard]:
    """Deal ``(x, y)`` to ``n_parties`` parties.

    ``"iid"``: a seeded shuffle cut into near-equal shards. ``"skewed"``: label-skewed
    non-IID; for each class a Dirichlet(``alpha``) draw gives each party its share of that
    class, after every party first got one sample of each class that has at least
    ``n_parties`` samples (so each party keeps both labels where possible) and every party
    gets at least one sample. Rows within a shard are shuffled.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ParameterError(f"need X (n x f) and y (n,), got {x.shape} and {y.shape}")
    if isinstance(n_parties, bool) or not isinstance(n_parties, int) or n_parties < 1:
        raise ParameterError(f"n_parties must be a positive integer, got {n_parties!r}")
    if n_parties > y.size:
        raise ParameterError(f"{y.size} samples cannot give {n_parties} parties one each")
    rng = np.random.default_rng(seed)
    if mode == "iid":
        order = rng.permutation(y.size)
        return [(x[p], y[p]) for p in np.array_split(order, n_parties)]
    if mode != "skewed":
        raise ParameterError(f"split mode must be 'iid' or 'skewed', got {mode!r}")
    if not alpha > 0:
        raise ParameterError(f"Dirichlet alpha must be > 0, got {alpha!r}")
    parts: list[list[int]] = [[] for _ in range(n_parties)]
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c)).tolist()
        if len(idx) >= n_parties:  # one of this class for everybody first
            for p in range(n_parties):
                parts[p].append(idx.pop())
        share = rng.dirichlet(np.full(n_parties, float(alpha)))
        counts = rng.multinomial(len(idx), share)
        start = 0
        for p, k in enumerate(counts):
            parts[p].extend(idx[start : start + k])
            start += k
    for p in range(n_parties):  # a party left empty takes one from the largest shard
        if not parts[p]:
            donor = max(range(n_parties), key=lambda q: len(parts[q]))
            parts[p].append(parts[donor].pop())
    out: list[Shard] = []
    for part in parts:
        rows = rng.permutation(np.asarray(part, dtype=np.intp))
        out.append((x[rows], y[rows]))
    return out


def standardize(shards: Sequence[Shard]) -> tuple[list[Shard], FloatArray, FloatArray]:
    """Every shard scaled with the global (pooled) mean and standard deviation; returns the
    scaled shards and ``(mean, std)`` for scaling test data with
    :func:`apply_standardization`. The population variance ``E[x^2] - mean^2`` plus
    ``1e-6`` on the deviation: the formula of the federation's encrypted stats job."""
    if not shards:
        raise ParameterError("no shards to standardize")
    xs = [np.asarray(s[0], dtype=np.float64) for s in shards]
    count = sum(x.shape[0] for x in xs)
    total = sum(x.sum(axis=0) for x in xs)
    squares = sum((x * x).sum(axis=0) for x in xs)
    mean, std = pooled_mean_std(count, total, squares)
    scaled = [
        (apply_standardization(x, mean, std), np.asarray(s[1], dtype=np.float64))
        for x, s in zip(xs, shards, strict=True)
    ]
    return scaled, mean, std


def pooled_mean_std(
    count: float, total: FloatArray, squares: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Mean and standard deviation from pooled per-feature sums: the population variance
    ``E[x^2] - mean^2`` (clipped at 0) and ``1e-6`` added to the deviation, so constant
    features stay finite. The one formula of the federation's stats job and of
    :func:`standardize`."""
    mean = np.asarray(np.asarray(total, dtype=np.float64) / count, dtype=np.float64)
    var = np.maximum(np.asarray(squares, dtype=np.float64) / count - mean**2, 0.0)
    return mean, np.asarray(np.sqrt(var) + _STD_EPS, dtype=np.float64)


def apply_standardization(x: FloatArray, mean: FloatArray, std: FloatArray) -> FloatArray:
    return np.asarray((np.asarray(x, dtype=np.float64) - mean) / std, dtype=np.float64)


def federated_split(
    x: FloatArray,
    y: FloatArray,
    n_parties: int,
    mode: SplitMode = "iid",
    seed: int = 0,
    *,
    test_fraction: float = 0.2,
    train_rows: int | None = None,
) -> tuple[list[Shard], FloatArray, FloatArray]:
    """The experiments' recipe in one call: a stratified held-out test set, the training
    rows (the first ``train_rows`` of them if given) dealt to the parties, every shard and
    the test rows scaled with the pooled statistics. Returns ``(shards, x_test, y_test)``."""
    x_tr, y_tr, x_te, y_te = train_test(x, y, test_fraction, seed)
    if train_rows is not None:
        x_tr, y_tr = x_tr[:train_rows], y_tr[:train_rows]
    shards, mean, std = standardize(split(x_tr, y_tr, n_parties, mode, seed))
    return shards, apply_standardization(x_te, mean, std), y_te
