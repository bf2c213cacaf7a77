"""Nodes that survive: each role (root, inner node, leaf) is killed with SIGKILL at a
random moment of key generation, training and prediction, over real node processes, and
restarted from its config. Afterwards every job either completed or failed cleanly and
is re-run, trainings resume from their last checkpoint (at most the iteration in flight
is lost), and every decryption is checked against plaintext: a wrong collective key
would show there, not in exit codes."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from phe_fl.errors import PeerError
from phe_fl.federation import messages as m
from phe_fl.federation.audit import verify
from phe_fl.federation.config import DataSource
from phe_fl.federation.data import load_local_data
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import TrainingJob, train_plaintext

PARAMS = INSECURE_TEST.name
N = 5
ROLES = {"root": 0, "inner": 1, "leaf": 4}
ROOT = Path(__file__).resolve().parents[2]
JOB = TrainingJob(
    n_features=30,
    params=PARAMS,
    iterations=8,
    batch_size=16,
    learning_rate=0.3,
    activation_degree=3,
    activation_bound=8.0,
    allow_model_decryption=True,
)
SEED = int(os.environ.get("PHE_FL_KILL_SEED", "20261204"))
ROUNDS = range(int(os.environ.get("PHE_FL_KILL_ROUNDS", "1")))
"""More rounds of the kill loop (a new random kill point each): PHE_FL_KILL_ROUNDS=10."""

pytestmark = pytest.mark.slow


def _pooled() -> np.ndarray:
    return np.vstack(
        [load_local_data(DataSource("breast_cancer", None, i, N))[0] for i in range(N)]
    )


def _shards() -> list[tuple[np.ndarray, np.ndarray]]:
    return [load_local_data(DataSource("breast_cancer", None, i, N)) for i in range(N)]


class Trial:
    """The figures the kill loop prints."""

    def __init__(self) -> None:
        self.rows: list[dict[str, object]] = []
        self.wrong_decryptions = 0

    def add(self, **row: object) -> None:
        print(row, flush=True)
        self.rows.append(row)

    def table(self) -> str:
        lines = [
            f"{'role':<6} {'phase':<10} {'killed at':>9} {'outcome':<26} {'re-run':>6} "
            f"{'resumes':>7} {'lost':>4}"
        ]
        for r in self.rows:
            lines.append(
                f"{r['role']:<6} {r['phase']:<10} {r['at']:>8.2f}s {r['outcome']:<26} "
                f"{r['rerun']!s:>6} {r.get('resumes', '-')!s:>7} {r.get('lost', '-')!s:>4}"
            )
        lines.append(f"wrong decryptions: {self.wrong_decryptions}")
        return "\n".join(lines)


def _querier(c: LocalCluster) -> Querier:
    return Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=120)


def _kill_and_restart(c: LocalCluster, index: int, at: float) -> None:
    time.sleep(at)
    os.kill(c.processes[index].pid, signal.SIGKILL)
    c.processes[index].wait()
    c.start_node(index)


def _check_keys(c: LocalCluster, trial: Trial, tag: str) -> None:
    """The collective key is right: pooled statistics decrypt to the plaintext ones."""
    q = _querier(c)
    try:
        stats = q.stats(f"check-{tag}", 30)
    finally:
        q.close()
    X = _pooled()
    ok = stats.count == len(X) and np.abs(stats.mean - X.mean(axis=0)).max() < 1e-5
    if not ok:
        trial.wrong_decryptions += 1
    assert ok, (tag, stats.count, np.abs(stats.mean - X.mean(axis=0)).max())


def _gradient_rounds(c: LocalCluster, job_id: str) -> int:
    """MAP rounds the root took part in for ``job_id`` (one audit line each)."""
    path = c.workdir / "state" / "node-0" / "audit.jsonl"
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    return sum(1 for e in lines if e.get("job") == job_id and e.get("step") == "gradient")


@pytest.fixture(scope="module")
def trial() -> Trial:
    t = Trial()
    yield t
    print("\n" + t.table())
    assert t.wrong_decryptions == 0


@pytest.mark.parametrize("rnd", ROUNDS)
@pytest.mark.parametrize("role", list(ROLES))
def test_kill_during_key_generation(tmp_path: Path, trial: Trial, role: str, rnd: int) -> None:
    rng = random.Random(f"{SEED}-{rnd}-setup-{role}")
    at = rng.uniform(0.05, 1.2)
    with LocalCluster(tmp_path, n_nodes=N, fanout=2, params=PARAMS, deadline_s=20) as c:
        q = _querier(c)
        killer = threading.Thread(target=_kill_and_restart, args=(c, ROLES[role], at))
        killer.start()
        try:
            q.setup("keys")
            outcome, rerun = "completed", False
        except PeerError as exc:
            outcome, rerun = f"failed: {str(exc)[:40]}", True
        killer.join()
        q.close()
        c.wait_ready(60)
        if rerun:  # a failed key generation is run again: it resumes, nothing redrawn
            q = _querier(c)
            q.setup(f"keys-again-{rnd}")
            q.close()
        _check_keys(c, trial, f"setup-{role}-{rnd}")
        trial.add(role=role, phase="setup", at=at, outcome=outcome[:26], rerun=rerun)


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> LocalCluster:
    c = LocalCluster(
        tmp_path_factory.mktemp("durable"),
        n_nodes=N,
        fanout=2,
        params=PARAMS,
        deadline_s=20,
        allow_decryption=True,
    )
    c.start()
    q = _querier(c)
    q.setup("keys")
    q.close()
    yield c
    c.stop()


@pytest.mark.parametrize("rnd", ROUNDS)
@pytest.mark.parametrize("role", list(ROLES))
def test_kill_during_training_resumes_from_the_checkpoint(
    keyed: LocalCluster, trial: Trial, role: str, rnd: int
) -> None:
    rng = random.Random(f"{SEED}-{rnd}-train-{role}")
    after, jitter = rng.randint(1, 4), rng.uniform(0.0, 0.3)
    c = keyed
    job_id = f"train-{role}-{rnd}"
    q = _querier(c)
    info = q.detach(job_id, m.TrainJob(JOB))
    t0 = time.monotonic()
    while q.watch_info(job_id).iterations_done < after:  # kill it mid-training
        assert time.monotonic() - t0 < 60
        time.sleep(0.05)
    q.close()
    at = time.monotonic() - t0 + jitter
    _kill_and_restart(c, ROLES[role], jitter)
    c.wait_ready(60)
    q = _querier(c)
    result, info = q.watch(job_id)  # re-attach (after a root restart, to the resumed job)
    assert info.state == "done", info
    assert isinstance(result, m.TrainResult)
    weights = q.model_weights(f"decrypt-{role}-{rnd}", job_id)
    q.close()
    std = result.standardization
    assert std is not None
    twin = train_plaintext(JOB, [(std.apply(x), y) for x, y in _shards()]).weights
    err = float(np.abs(weights - twin).max())
    if err >= 1e-3:
        trial.wrong_decryptions += 1
    assert err < 1e-3, err
    lost = _gradient_rounds(c, job_id) - JOB.iterations
    assert 0 <= lost <= 1, lost
    if role == "root":  # the new root process resumed the job from its checkpoint
        assert info.resumes == 1 and info.iterations_done == JOB.iterations
    trial.add(
        role=role,
        phase="training",
        at=at,
        outcome=f"done, |w - twin| {err:.1e}",
        rerun=False,
        resumes=info.resumes,
        lost=lost,
    )


@pytest.mark.parametrize("rnd", ROUNDS)
@pytest.mark.parametrize("role", list(ROLES))
def test_kill_during_prediction(keyed: LocalCluster, trial: Trial, role: str, rnd: int) -> None:
    rng = random.Random(f"{SEED}-{rnd}-predict-{role}")
    at = rng.uniform(0.05, 0.6)
    c = keyed
    q = _querier(c)
    run, job = q.model_info(f"info-{role}-{rnd}", "train-leaf-0")
    weights = q.model_weights(f"w-{role}-{rnd}", "train-leaf-0")
    q.close()
    x = _pooled()[:60]
    expected = np.clip(job.activation(_margins(job, run.standardize(x), weights)), 0, 1)
    outcome: list[str] = []

    def predict() -> None:
        qq = _querier(c)
        try:
            qq.predict(f"predict-{role}-{rnd}", run, job, x)
            outcome.append("completed")
        except PeerError as exc:
            outcome.append(f"failed: {str(exc)[:40]}")
        finally:
            qq.close()

    t = threading.Thread(target=predict)
    t.start()
    _kill_and_restart(c, ROLES[role], at)
    t.join()
    c.wait_ready(60)
    q = _querier(c)
    scores = q.predict(f"predict-{role}-{rnd}-again", run, job, x)  # run again, whatever happened
    q.close()
    err = float(np.abs(scores - expected).max())
    if err >= 2e-3:
        trial.wrong_decryptions += 1
    assert err < 2e-3, err
    trial.add(role=role, phase="prediction", at=at, outcome=outcome[0][:26], rerun=True)


def _margins(job: TrainingJob, x: np.ndarray, w: np.ndarray) -> np.ndarray:
    from phe_fl.ml.glm import design_matrix

    return design_matrix(job, x) @ w


def test_concurrent_jobs_of_two_queriers_are_serialized(tmp_path: Path) -> None:
    """Two queriers submit key generations and trainings at the same time: the root runs
    them one at a time (the second key generation is refused: keys exist), and both
    models decrypt to the twin's weights."""
    with LocalCluster(
        tmp_path,
        n_nodes=3,
        fanout=2,
        params=PARAMS,
        deadline_s=20,
        allow_decryption=True,
        queriers=("alice", "bob"),
    ) as c:
        qa = Querier(c.root_address, c.querier_tls("alice"), PARAMS, name="alice")
        qb = Querier(c.root_address, c.querier_tls("bob"), PARAMS, name="bob")
        outcomes: dict[str, str] = {}

        def setup(q: Querier, name: str) -> None:
            try:
                q.setup(f"keys-{name}")
                outcomes[name] = "done"
            except PeerError as exc:
                outcomes[name] = str(exc)

        threads = [threading.Thread(target=setup, args=(q, n)) for q, n in ((qa, "a"), (qb, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(outcomes.values())[0] == "done", outcomes
        refused = [v for v in outcomes.values() if v != "done"]
        assert len(refused) == 1 and "'setup' is not allowed in state" in refused[0], outcomes
        job = JOB.__class__(**{**JOB.__dict__, "iterations": 3})
        a = qa.detach("train-a", m.TrainJob(job))
        b = qb.detach("train-b", m.TrainJob(job))
        ra, ia = qa.watch(a.job_id)
        rb, ib = qb.watch(b.job_id)
        assert ia.state == ib.state == "done"
        first, second = sorted((ia, ib), key=lambda j: j.started)
        assert first.updated <= second.started, (first, second)  # one at a time
        shards = [load_local_data(DataSource("breast_cancer", None, i, 3)) for i in range(3)]
        for q, result, model in ((qa, ra, "train-a"), (qb, rb, "train-b")):
            assert isinstance(result, m.TrainResult) and result.standardization is not None
            w = q.model_weights(f"w-{model}", model)
            twin = train_plaintext(job, [(result.standardization.apply(x), y) for x, y in shards])
            assert np.abs(w - twin.weights).max() < 1e-3
        with pytest.raises(PeerError, match="PERMISSION_DENIED.*another querier"):
            qa.cancel("train-b")
        mine = {j.job_id for j in qa.jobs()}
        assert {"keys-a", "train-a", "w-train-a"} <= mine and "train-b" not in mine
        qa.close()
        qb.close()


def test_cancel_a_running_training(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n_nodes=3, fanout=2, params=PARAMS, deadline_s=20) as c:
        q = _querier(c)
        q.setup("keys")
        long = JOB.__class__(**{**JOB.__dict__, "iterations": 40})
        q.detach("long", m.TrainJob(long))
        deadline = time.monotonic() + 60
        while q.watch_info("long").iterations_done < 2:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        assert q.cancel("long").state in ("running", "cancelled")
        result, info = q.watch("long")
        assert info.state == "cancelled" and result is None
        assert 0 < info.iterations_done < 40
        assert "long" not in {model.model_id for model in q.models()}
        q.close()


def _phe_fl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def test_state_dirs_of_others_and_corrupt_blobs_are_refused(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "a", n_nodes=3, fanout=2, params=PARAMS, deadline_s=20) as c:
        q = _querier(c)
        q.setup("keys")
        q.close()
    with LocalCluster(tmp_path / "b", n_nodes=3, fanout=2, params=PARAMS, deadline_s=20) as other:
        pass
    a, b = tmp_path / "a", tmp_path / "b"
    leaf = a / "node-2.toml"
    text = leaf.read_text()
    # another node's state dir
    leaf.write_text(text.replace('dir = "state/node-2"', 'dir = "state/node-1"'))
    got = _phe_fl("node", "--config", str(leaf))
    assert got.returncode == 2 and "belongs to node 'node-1'" in got.stderr, got.stderr
    # the same node of another federation (another CA)
    leaf.write_text(text.replace('dir = "state/node-2"', f'dir = "{b}/state/node-2"'))
    got = _phe_fl("node", "--config", str(leaf))
    assert got.returncode == 2 and "another federation" in got.stderr, got.stderr
    # a truncated key file: detected, not loaded
    leaf.write_text(text)
    secret = a / "state" / "node-2" / "blobs" / "secret-share"
    secret.write_bytes(secret.read_bytes()[:100])
    got = _phe_fl("node", "--config", str(leaf))
    assert got.returncode == 2 and "truncated" in got.stderr, got.stderr
    assert "secret-share" in got.stderr
    del other


def test_audit_records_every_decision_once_and_detects_edits(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n_nodes=3, fanout=2, params=PARAMS, deadline_s=20) as c:
        q = _querier(c)
        q.setup("keys")
        q.stats("stats-1", 30)
        with pytest.raises(PeerError, match="refuses decrypt_model"):
            q.train("train-1", JOB.__class__(**{**JOB.__dict__, "iterations": 1}))
            q.model_weights("decrypt-1", "train-1")
        q.close()
    for i in range(3):
        path = tmp_path / "state" / f"node-{i}" / "audit.jsonl"
        summary = verify(path)
        lines = [json.loads(x) for x in path.read_text().splitlines()]
        steps = Counter((e["job"], e["step"]) for e in lines)
        assert steps[("stats-1", "statistics")] == 1
        assert steps[("stats-1", "key_switch")] == 1
        assert steps[("train-1", "prepare_training")] == 1
        # the root refuses first (its own policy), so nobody below is even asked
        assert steps[("decrypt-1", "decrypt_model")] == (1 if i == 0 else 0)
        if i == 0:
            refusal = next(e for e in lines if e["step"] == "decrypt_model")
            assert refusal["decision"] == "refuse"
            assert refusal["reason"].startswith("allow_decryption")
            assert refusal["purpose"].startswith("model decryption")
            assert len(refusal["digest"]) == 32
            assert summary.decisions["refuse"] == 1
        switch = next(e for e in lines if e["job"] == "stats-1" and e["step"] == "key_switch")
        assert switch["querier"] == "querier" and switch["job_kind"] == "stats"
        prepare = next(e for e in lines if e["step"] == "prepare_training")
        assert prepare["rows"] > 100 and prepare["purpose"] == "training participation"
    path = tmp_path / "state" / "node-0" / "audit.jsonl"
    ok = _phe_fl("audit", "verify", str(path))
    assert ok.returncode == 0 and "chain intact" in ok.stdout, ok.stderr
    edited = tmp_path / "edited.jsonl"
    shutil.copy(path, edited)
    lines = edited.read_text().splitlines()
    n = next(i for i, x in enumerate(lines) if '"decision":"refuse"' in x)
    lines[n] = lines[n].replace('"decision":"refuse"', '"decision":"contribute"')
    edited.write_text("\n".join(lines) + "\n")
    bad = _phe_fl("audit", "verify", str(edited))
    assert bad.returncode == 2 and f"line {n + 1}: edited" in bad.stderr, bad.stderr
