"""The wheel is what a site installs: build it, install it into a fresh virtual
environment (same interpreter as the development one, dependencies from the package
index), and use it from there, away from this checkout."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _version() -> str:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover - exercised on 3.10
        import tomli as tomllib
    return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


def _run(args: list[str], cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    proc = subprocess.run(args, capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def test_the_wheel_installs_into_a_fresh_venv_and_runs(tmp_path: Path) -> None:
    # the sources a wheel is built from, copied so the build leaves nothing in the checkout
    src = tmp_path / "src"
    shutil.copytree(ROOT / "phe_fl", src / "phe_fl", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, src / name)
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(src)], src)
    (wheel,) = dist.glob("phe_fl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for wanted in (
        "phe_fl/py.typed",
        "phe_fl/__main__.py",
        "phe_fl/federation/provision.py",
        "phe_fl/v2/tree_pb2.pyi",
    ):
        assert wanted in names, wanted
    assert any(n.endswith("licenses/LICENSE") for n in names), names
    assert not any(n.startswith(("tests/", "nodes/", "benchmarks/")) for n in names)
    metadata = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))
    )
    assert b"License-Expression: Apache-2.0" in metadata

    # a fresh venv from the interpreter .venv was made from
    base = getattr(sys, "_base_executable", sys.executable)
    venv = tmp_path / "venv"
    made = subprocess.run(
        [base, "-m", "venv", str(venv)], capture_output=True, text=True, timeout=300
    )
    if made.returncode != 0:
        pytest.skip(f"{base} cannot create a virtual environment: {made.stderr.strip()[-300:]}")
    python, phe_fl = venv / "bin" / "python", venv / "bin" / "phe-fl"
    _run([str(python), "-m", "pip", "install", "-q", str(wheel)], tmp_path)

    away = tmp_path / "elsewhere"  # not the checkout: only the installed package can import
    away.mkdir()
    version = _run([str(phe_fl), "--version"], away).stdout.strip()
    assert version == f"phe-fl {_version()}"
    params = _run([str(python), "-m", "phe_fl", "params"], away).stdout
    assert "insecure-test-n12" in params and "n14-depth5-128" in params
    smoke = (
        "import importlib.resources as r, phe_fl, phe_fl.federation.node, phe_fl.mhe\n"
        "import phe_fl.federation.provision, phe_fl.federation.preflight\n"
        "assert r.files('phe_fl').joinpath('py.typed').is_file()\n"
        "assert 'site-packages' in phe_fl.__file__, phe_fl.__file__\n"
        "from phe_fl.mhe import INSECURE_TEST\n"
        "print(INSECURE_TEST.slots)\n"
    )
    assert _run([str(python), "-c", smoke], away).stdout.strip() == "2048"
    # a site's first command, from the installed package
    (away / "fed.toml").write_text(
        '[federation]\nname = "f"\nparams = "n14-depth5-128"\n'
        '[[site]]\nid = "a"\naddress = "127.0.0.1:50051"\n'
        '[[site]]\nid = "b"\n[tree]\nb = "a"\n[[querier]]\nid = "q"\n'
    )
    provision = [str(phe_fl), "provision", "--federation", "fed.toml", "--out", "kits"]
    _run([*provision, "--ca", "ca"], away)
    _run([str(phe_fl), "csr", "--kit", "kits/b"], away)
    assert (away / "kits" / "b" / "b.csr").exists()
