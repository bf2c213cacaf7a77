"""Smoke test of the benchmark suite (benchmarks/run.py): the smallest federation figure
(2 node processes, 1 iteration, insecure 2^12 set), the MLP status and the expansion
table, written to a temporary folder. About 10 s."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _scaling() -> ModuleType:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        return importlib.import_module("scaling")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_critical_path_follows_the_reported_tree() -> None:
    from phe_fl.federation.serde import NodeStats

    scaling = _scaling()

    def st(node: str, parent: str, own: float, combine: float = 0.0) -> NodeStats:
        return NodeStats(node, own, 1, combine_seconds=combine, parent_id=parent)

    # root: own 1.0; node-1 (inner): own 0.5 + combine 0.25, children node-3 (2.0), node-4
    stats = {
        s.node_id: s
        for s in (
            st("node-0", "", 1.0, 0.5),
            st("node-1", "node-0", 0.5, 0.25),
            st("node-2", "node-0", 1.5),
            st("node-3", "node-1", 2.0),
            st("node-4", "node-1", 0.1),
        )
    }
    # node-3's MAP (2.0), then node-1's COMBINE (0.25), then the root's (0.5)
    assert scaling.critical_path(stats) == (2.75, ["node-3", "node-1", "node-0"])
    assert scaling.serial_chain(stats) == 2.0 + 0.75 + 1.5
    # a root slower than its whole subtree is the critical path alone
    stats["node-0"] = st("node-0", "", 5.0, 0.5)
    assert scaling.critical_path(stats) == (5.5, ["node-0"])


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
            "--set",
            "fig3.parties=2",
            "--set",
            "fig3.train_rows=16",
            "--set",
            "fig3.hidden=[4, 4]",
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
    # ... and the child the encrypted weights the root sent down, as both counted them
    assert it["bytes_from_parent"] == [0, it["bytes_to_children"][0]]
    assert it["weights_down_bytes"] == it["bytes_from_parent"][1] > 0
    assert it["bytes_received"][1] == it["bytes_from_parent"][1]
    assert it["parents"] == ["", "node-0"] and it["critical_path"][-1] == "node-0"
    assert it["critical_path"] in (["node-0"], ["node-1", "node-0"])
    assert it["serial_chain_s"] >= it["critical_path_s"]
    assert it["node_combine_seconds"][0] > 0 and it["node_combine_seconds"][1] == 0
    assert it["root_combine_s"] == it["node_combine_seconds"][0]
    assert it["critical_path_s"] >= max(it["node_seconds"]) + it["root_combine_s"]
    md = (tmp_path / "suite-quick.md").read_text()
    assert "not observed" not in md and "root COMBINE s" in md
    f3 = res["figures"]["fig3"]  # one epoch = 16 rows / (2 parties x batch 8): 1 iteration
    assert f3["status"] == "measured" and f3["iterations"] == 1 and f3["units"] == [16, 4, 4, 10]
    assert f3["max_abs_weight_diff"] < 1e-3 and f3["refreshes_parties"] > 0
    assert f3["acc_encrypted"] == f3["acc_twin"] and f3["seconds_per_epoch"] > 0
    assert "## 3. MLP" in md and "s / epoch" in md
    assert res["figures"]["fig6"]["rows"][0]["expansion_vs_float32"] > 1
    assert "Scaling with parties" in (tmp_path / "suite-quick.md").read_text()
