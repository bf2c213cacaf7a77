"""Smoke test of the benchmark suite (benchmarks/run.py): the smallest federation figure
(2 node processes, 1 iteration, insecure 2^12 set), the MLP status and the expansion
table, written to a temporary folder. About 10 s."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_suite_smallest_figure(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import run
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    code = run.main(
        [
            "--quick",
            "--only",
            "fig1,fig3,fig6",
            "--out",
            str(tmp_path),
            "--no-plots",
            "--set",
            "fig1.nodes=[2]",
            "--set",
            "fig1.iterations=1",
            "--set",
            "fig1.rows=16",
        ]
    )
    assert code == 0
    res = json.loads((tmp_path / "suite-quick.json").read_text())
    assert res["machine"]["cores"]
    (row,) = res["figures"]["fig1"]["rows"]
    assert row["status"] == "ok", row
    it = row["per_iteration"][0]
    assert len(it["bytes_sent"]) == 2 and all(b > 0 for b in it["bytes_sent"])
    assert it["bytes_received"][0] == it["bytes_sent"][1]  # the root receives its child's
    assert it["critical_path_s"] >= max(it["node_seconds"])
    assert res["figures"]["fig3"]["status"] == "not implemented"
    assert res["figures"]["fig6"]["rows"][0]["expansion_vs_float32"] > 1
    assert "Scaling with parties" in (tmp_path / "suite-quick.md").read_text()
