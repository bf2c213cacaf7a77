"""The README's demo command, run as a user would: real provider processes, real output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from phe_fl.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_providers_in_separate_processes_match_plaintext_statistics() -> None:
    lines: list[str] = []
    result = run_demo(3, "insecure-test-n12", log=lines.append)
    print("\n".join(lines))
    # 4-decimal release rounding plus flooding noise; the statistics are in [0, 1].
    assert result.max_error_mean < 2e-4
    assert result.max_error_var < 2e-4
    assert result.refused_without_all
    assert all(b > 0 for b in result.bytes_sent)
    assert set(result.phase_seconds) == {
        "key generation",
        "encrypted statistics",
        "collective refresh",
        "key switch to querier",
    }


def test_demo_cli_with_default_128_bit_parameters() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "demo", "--providers", "4"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "n14-depth5-128" in proc.stdout
    assert "pooled count 569 (true 569)" in proc.stdout
    assert "refused" in proc.stdout


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
