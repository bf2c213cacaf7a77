"""Smoke test of benchmarks/bench_training.py on tiny settings (keeps the script working)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "bench_training.py"


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_training", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_accuracy_table_smoke(bench: ModuleType, tmp_path: Path) -> None:
    args = ["--datasets", "diabetes", "--splits", "skewed", "--parties", "3"]
    assert bench.main([*args, "--iterations", "2", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "training-insecure-test-n12.json").read_text())
    (row,) = data["rows"]
    assert row["max_abs_weight_diff"] < 1e-3
    assert row["acc_encrypted"] == row["acc_twin"] == row["acc_oblivious_prediction"]
    assert "| diabetes | skewed |" in (tmp_path / "training-insecure-test-n12.md").read_text()


def test_op_ratio_smoke(bench: ModuleType) -> None:
    r = bench.run_op_ratio("insecure-test-n12", 2, 1, 8, 1)
    assert r["ops_by_kind"]["rotate"] > 0 and r["ops_by_kind"]["mul"] > 0
    assert r["seconds_sum_alone"] > 0 and r["ratio"] > 0
