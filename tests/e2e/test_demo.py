"""The README's demo command, run as a user would: real node processes, real output."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from phe_fl.demo import run_demo

ROOT = Path(__file__).resolve().parents[2]


def test_demo_federation_matches_plaintext_statistics(tmp_path: Path) -> None:
    lines: list[str] = []
    result = run_demo(3, "insecure-test-n12", workdir=tmp_path, log=lines.append)
    print("\n".join(lines))
    assert result.count == 569
    assert result.max_error_mean < 1e-5
    assert result.max_error_var < 1e-5
    assert set(result.bytes_sent) == {"node-0", "node-1", "node-2"}
    assert all(b > 0 for b in result.bytes_sent.values())
    assert {"key generation", "encrypted statistics"} <= set(result.phase_seconds)


def test_demo_cli_with_default_128_bit_parameters() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "demo", "--providers", "5"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )
    print(proc.stdout, proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "parameter set n14-depth5-128" in proc.stdout
    assert "569 samples pooled (true 569)" in proc.stdout
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
