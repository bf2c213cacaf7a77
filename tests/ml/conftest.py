"""Shared data for the ml tests (the slot simulator lives in tests/ml/ml_slot_sim.py)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest


@pytest.fixture(scope="session")
def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """Breast cancer (569 x 30), standardized with global statistics (stands in for the
    collective standardization of PREPARE), rows in a fixed random order."""
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(1234).permutation(len(y))
    return x[order], y[order].astype(np.float64)


def split_shards(
    x: np.ndarray, y: np.ndarray, sizes: Sequence[int]
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Consecutive shards of the given sizes."""
    out, start = [], 0
    for n in sizes:
        out.append((x[start : start + n], y[start : start + n]))
        start += n
    return out


@pytest.fixture(scope="session")
def split() -> Any:
    return split_shards
