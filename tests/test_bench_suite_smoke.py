"""Smoke test of the benchmark suite (benchmarks/run.py): the smallest federation figure
(2 node processes, 1 iteration, insecure 2^12 set), the MLP status and the expansion
table, written to a temporary folder (about 10 s); and how scaling.py reads the root's
progress events, on a hand-made stream."""

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
    from phe_fl.federation.messages import NodeStats

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


def test_iteration_rows_read_the_typed_events() -> None:
    from phe_fl.federation.messages import IterationSummary, NodeStats, ProgressEvent, Stage

    scaling = _scaling()
    root = NodeStats("node-0", 0.5, 10, combine_seconds=0.25, bytes_from_children=20)
    child = NodeStats("node-1", 1.0, 20, bytes_from_parent=30, parent_id="node-0")

    def done(it: int, refreshes: int, seconds: float) -> ProgressEvent:
        summary = IterationSummary(refreshes, levels_left=4, levels_sent=6, levels_dropped=1)
        return ProgressEvent(Stage.ITERATION_DONE, seconds, it, 2, summary=summary)

    events = [
        ProgressEvent(Stage.VALIDATE_SHARDS, 9.0, nodes=(root, child)),  # before iteration 1
        ProgressEvent(Stage.MAP_COMBINE, 2.0, 1, 2, nodes=(child, root)),
        done(1, 0, 3.0),
        # iteration 2 refreshes before its MAP: the event names the previous MAP's iteration
        ProgressEvent(Stage.REFRESH, 1.5, 1, 2, nodes=(root, child)),
        ProgressEvent(Stage.MAP_COMBINE, 2.5, 2, 2, nodes=(root, child)),
        done(2, 1, 5.0),
    ]
    one, two = scaling.iteration_rows(events, 2)
    assert one["iteration"] == 1 and one["wall_s"] == 3.0 and one["refresh_s"] == 0.0
    assert one["root_reduce_s"] == 1.0  # the iteration's 3 s less its MAP+COMBINE's 2 s
    assert one["bytes_sent"] == [10, 20] and one["parents"] == ["", "node-0"]
    assert one["critical_path"] == ["node-1", "node-0"] and one["critical_path_s"] == 1.25
    assert (two["refreshes"], two["refresh_s"], two["root_reduce_s"]) == (1, 1.5, 1.0)
    assert (two["levels_left_after"], two["levels_sent"], two["levels_dropped"]) == (4, 6, 1)
    assert two["mapcombine_wall_s"] == 2.5 and two["weights_down_bytes"] == 30
    with pytest.raises(ValueError, match="not one from each"):
        scaling.iteration_rows(events[1:3], 3)
    with pytest.raises(ValueError, match="refresh rounds"):
        scaling.iteration_rows([events[4], done(2, 1, 5.0)], 2)


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


@pytest.mark.slow
def test_network_benchmark_quick_profile(tmp_path: Path) -> None:
    """benchmarks/bench_network.py --quick: digits over 2 node processes, one encrypted
    iteration, the twin (one epoch) and the exact MLP; its figures saved under the name
    asked for and rendered."""
    import subprocess

    proc = subprocess.run(
        [sys.executable, "benchmarks/bench_network.py", "--quick", "--parties", "2"]
        + ["--iterations", "1", "--epochs", "1", "--out", str(tmp_path), "--save-as", "two"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    r = json.loads((tmp_path / "two.json").read_text())
    assert r["max_abs_weight_diff_vs_twin"] < 1e-3 and r["parties"] == 2
    assert r["refreshes_parties"][0] > 0 and r["refresh_rounds_parties"][0] >= 1
    assert 0.5 < r["accuracy_exact"] <= 1.0 and r["seconds_per_epoch_computed"] > 0
    assert r["twin_iterations"] == r["iterations_per_epoch"]
    assert len(r["node_peak_rss_bytes"]) == 2 and min(r["node_peak_rss_bytes"]) > 0
    md = (tmp_path / "network.md").read_text()
    assert "## two: 64-16-10" in md and "(1 epoch) |" in md and "peak memory per node" in md
