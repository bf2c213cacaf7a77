"""The README's demo command, run as a user would: real node processes, real output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phe_fl.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_trains_and_predicts_like_the_plaintext_twin(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(3, "insecure-test-n12", iterations=6, workdir=tmp_path, log=lines.append)
    print("\n".join(lines))
    # Oblivious prediction with the encrypted model agrees with the twin to 1 point.
    assert abs(result.accuracy_encrypted - result.accuracy_twin) <= 0.01
    assert result.accuracy_encrypted > 0.85
    assert abs(result.accuracy_sklearn - result.accuracy_encrypted) < 0.06
    assert sum(result.refreshes) >= 1
    assert set(result.bytes_sent) == {"node-0", "node-1", "node-2"}
    assert {"key generation", "training", "prediction"} <= set(result.phase_seconds)
    assert any(line.startswith("  [") and "iteration 6/6" in line for line in lines)


def test_the_network_demo_trains_and_predicts_like_its_twin(tmp_path: Path) -> None:
    """``phe-fl demo --model mlp`` on the test ring: a 30-8-2 network over 3 processes."""
    lines: list[str] = []
    result = run_demo(
        3, "insecure-test-n12", iterations=6, model="mlp", workdir=tmp_path, log=lines.append
    )
    print("\n".join(lines))
    assert abs(result.accuracy_encrypted - result.accuracy_twin) <= 0.01
    assert result.accuracy_encrypted > 0.85
    assert abs(result.accuracy_sklearn - result.accuracy_encrypted) < 0.06
    assert any("scikit-learn MLP" in line for line in lines)
    assert any("of which the nodes' intermediates" in line for line in lines)


@pytest.mark.slow
def test_demo_cli_with_its_defaults() -> None:
    """`phe-fl demo` as the README runs it: 5 nodes, 128-bit parameters (a few minutes)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "demo"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=ROOT,
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "parameter set n15-depth11-128" in proc.stdout
    assert "accuracy, encrypted training + oblivious prediction" in proc.stdout
    assert "node-4" in proc.stdout


def test_demo_cli_rejects_unknown_parameter_set() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "demo", "--params", "n99"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "unknown parameter set 'n99'" in proc.stderr
    assert "n15-depth11-128" in proc.stderr
