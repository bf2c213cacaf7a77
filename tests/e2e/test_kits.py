"""Three institutions and one analyst, as their admins would do it: a federation
description, ``phe-fl provision``, each site making its own key and request, the CA
operator signing, each site installing its certificate, ``phe-fl preflight``, the nodes
started from their kits' ``start.sh``, then the analyst's ``query setup``, ``query train``
and ``predict --output`` from the querier kit. Real processes, real mutual TLS."""

from __future__ import annotations

import csv
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
PARAMS = "insecure-test-n12"  # the fast set every e2e test uses; preflight warns about it
SITES = ("site-a", "site-b", "site-c")
QUERIER = "analyst"

pytestmark = pytest.mark.slow

DESCRIPTION = """\
[federation]
name = "three-hospitals"
params = "{params}"

[policy]
queriers = ["{querier}"]
allow_decryption = false

[[site]]
id = "site-a"
role = "root"
address = "127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
[site.data]
path = "data/site-a.csv"
label = "diagnosis"
classes = ["malignant", "benign"]

[[site]]
id = "site-b"
role = "leaf"
[site.data]
path = "data/site-b.csv"
label = "diagnosis"
classes = ["malignant", "benign"]

[[site]]
id = "site-c"
role = "leaf"
[site.data]
path = "data/site-c.csv"
label = "diagnosis"
classes = ["malignant", "benign"]

[tree]
site-b = "site-a"
site-c = "site-a"

[[querier]]
id = "{querier}"
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def phe_fl_on_path(tmp_path: Path) -> dict[str, str]:
    """An environment whose ``phe-fl`` (what start.sh and the READMEs call) runs this
    checkout with this interpreter."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "phe-fl"
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m phe_fl "$@"\n')
    wrapper.chmod(0o755)
    env = dict(os.environ)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env["OMP_NUM_THREADS"] = "1"  # three nodes share this machine
    for name in ("PHE_FL_ROOT", "PHE_FL_CERT", "PHE_FL_KEY", "PHE_FL_CA", "PHE_FL_NAME"):
        env.pop(name, None)
    return env


def _run(
    env: dict[str, str], *args: str, cwd: Path, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["phe-fl", *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout
    )


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (
        f"{proc.args}: exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    )
    return proc.stdout


def _env_file(path: Path) -> dict[str, str]:
    """What `set -a; . ./querier.env; set +a` puts into the environment."""
    values = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, value = line.partition("=")
            values[name] = value
    return values


def _wait_port(address: str, timeout_s: float, proc: subprocess.Popen[bytes], log: Path) -> None:
    host, port = address.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"the root exited with {proc.returncode}:\n{log.read_text()}")
        try:
            socket.create_connection((host, int(port)), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise AssertionError(f"the root does not listen on {address}") from None
            time.sleep(0.2)


@pytest.fixture
def nodes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in started:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_three_sites_from_provision_to_predict(
    tmp_path: Path, phe_fl_on_path: dict[str, str], nodes: list[subprocess.Popen[bytes]]
) -> None:
    env = phe_fl_on_path
    operator = tmp_path / "operator"  # the CA operator's machine
    operator.mkdir()
    port = _free_port()
    description = operator / "fed.toml"
    description.write_text(DESCRIPTION.format(params=PARAMS, querier=QUERIER, port=port))

    # -- the operator provisions; no kit holds a private key ----------------------------
    out = _ok(
        _run(
            env,
            "provision",
            "--federation",
            "fed.toml",
            "--out",
            "kits",
            "--ca",
            "ca",
            cwd=operator,
        )
    )
    assert "3 site(s), 1 querier(s)" in out
    kits = operator / "kits"
    for path in kits.rglob("*"):
        assert not path.is_file() or b"PRIVATE KEY" not in path.read_bytes(), path

    # -- the data each site holds: breast cancer in three parts, the rest for queries ----
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x, y = np.asarray(data.data, dtype=np.float64), np.asarray(data.target, dtype=np.float64)
    order = np.random.default_rng(7).permutation(len(x))
    test, train = order[:100], order[100:]
    names = [str(n) for n in data.feature_names]
    classes = ["malignant", "benign"]  # sklearn's target 0 and 1

    def write_table(path: Path, rows: np.ndarray, columns: list[str]) -> None:
        """A CSV as people have them: a header, named columns, text labels."""
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow([*columns, "diagnosis"])
            for r in rows:
                by_name = dict(zip(names, x[r], strict=True))
                out.writerow([*(by_name[c] for c in columns), classes[int(y[r])]])

    for site, part in zip(SITES, np.array_split(train, len(SITES)), strict=True):
        folder = kits / site / "data"
        folder.mkdir()
        write_table(folder / f"{site}.csv", part, names)
    # the analyst's own file: the same columns in another order (picked by name)
    write_table(kits / QUERIER / "samples.csv", test, names[::-1])

    # -- each member makes its key and request; the operator signs; the member installs --
    inbox = operator / "inbox"
    inbox.mkdir()
    for member in (*SITES, QUERIER):
        kit = kits / member
        out = _ok(_run(env, "csr", "--kit", ".", cwd=kit))
        assert "made the private key" in out
        key = kit / f"{member}.key"
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
        (inbox / f"{member}.csr").write_bytes((kit / f"{member}.csr").read_bytes())  # mailed
        sign = ["ca", "sign", "--ca", "ca", "--csr", f"inbox/{member}.csr"]
        sign += ["--out", f"inbox/{member}.pem", "--federation", "fed.toml"]
        assert f"signed {'querier' if member == QUERIER else 'node'}:{member}" in _ok(
            _run(env, *sign, cwd=operator)
        )
        (kit / "signed.pem").write_bytes((inbox / f"{member}.pem").read_bytes())  # mailed back
        _ok(_run(env, "csr", "--kit", ".", "--install", "signed.pem", cwd=kit))
    for path in inbox.iterdir():  # the operator never saw a private key
        assert b"PRIVATE KEY" not in path.read_bytes()

    # -- the root's admin checks and starts it; then the leaves' admins ------------------
    def start(site: str) -> subprocess.Popen[bytes]:
        log = kits / site / "node.log"
        with open(log, "ab") as fh:
            proc = subprocess.Popen(
                [str(kits / site / "start.sh")],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=tmp_path,  # start.sh finds its kit by itself
                start_new_session=True,
            )
        nodes.append(proc)
        return proc

    check = _run(env, "preflight", "--config", "node.toml", cwd=kits / "site-a")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "WARNING  params" in check.stdout and "ERROR" not in check.stdout
    root = start("site-a")
    _wait_port(f"127.0.0.1:{port}", 60, root, kits / "site-a" / "node.log")
    for site in SITES[1:]:
        check = _run(env, "preflight", "--config", "node.toml", cwd=kits / site)
        assert check.returncode == 0, check.stdout + check.stderr
        assert "proves it is site-a.node.phe-fl" in check.stdout
        start(site)

    # -- the analyst, from the querier kit ---------------------------------------------
    analyst = dict(env, **_env_file(kits / QUERIER / "querier.env"))
    here = kits / QUERIER
    deadline = time.monotonic() + 90
    while True:
        status = _run(analyst, "query", "status", cwd=here, timeout=60)
        if status.returncode == 0 and "3 node(s) connected" in status.stdout:
            break
        for site, proc in zip(SITES, nodes, strict=True):
            assert proc.poll() is None, (kits / site / "node.log").read_text()
        assert time.monotonic() < deadline, status.stdout + status.stderr
        time.sleep(1)
    assert "collective keys ready" in _ok(_run(analyst, "query", "setup", cwd=here))
    train = _run(
        analyst,
        "query",
        "train",
        "--features",
        "30",
        "--iterations",
        "6",
        "--job-id",
        "model-1",
        cwd=here,
    )
    assert "stays encrypted" in _ok(train)
    assert "iteration 6/6" in train.stderr  # progress on stderr
    predict = _run(
        analyst,
        "predict",
        "--model",
        "model-1",
        "--input",
        "samples.csv",
        "--label",
        "diagnosis",
        "--output",
        "pred.csv",
        cwd=here,
    )
    _ok(predict)
    assert predict.stdout == ""  # the result went to the file, progress to stderr
    assert f"wrote {len(test)} prediction(s) to pred.csv" in predict.stderr
    lines = (here / "pred.csv").read_text().splitlines()
    assert lines[0] == "row,score,label"
    rows = [line.split(",") for line in lines[1:]]
    assert [int(r[0]) for r in rows] == list(range(len(test)))
    assert all(0.0 <= float(r[1]) <= 1.0 for r in rows)
    assert {r[2] for r in rows} <= set(classes)  # the sites' declared label names
    accuracy = float(np.mean([r[2] == classes[int(y[i])] for r, i in zip(rows, test, strict=True)]))
    assert accuracy > 0.8, accuracy
    assert f"accuracy {accuracy:.4f} on {len(test)} rows" in predict.stderr
    as_json = _run(
        analyst, "predict", "--model", "model-1", "--input", "samples.csv", "--output",
        "pred.json", cwd=here,
    )  # fmt: skip
    _ok(as_json)
    import json

    records = json.loads((here / "pred.json").read_text())["predictions"]
    assert [r["label"] for r in records] == [r[2] for r in rows]  # the same model and samples
    for site, proc in zip(SITES, nodes, strict=True):
        assert proc.poll() is None, (kits / site / "node.log").read_text()
