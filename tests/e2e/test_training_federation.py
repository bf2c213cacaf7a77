"""Encrypted training across real node processes: MAP at each node, COMBINE at inner
nodes, REDUCE and collective refreshes at the root; compared with the in-process run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phe_fl.errors import PeerError
from phe_fl.federation.config import DataSource
from phe_fl.federation.data import load_local_data
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.messages import NodeStats, ProgressEvent, Stage
from phe_fl.federation.querier import Querier, TrainingRun
from phe_fl.mhe import INSECURE_TEST, Context, QuerierKeyPair
from phe_fl.ml import Trainer, TrainingJob, predict
from phe_fl.ml.glm import design_matrix
from phe_fl.testing import setup_local

PARAMS = INSECURE_TEST.name
N = 5
JOB = TrainingJob(
    n_features=30,
    params=PARAMS,
    iterations=4,
    batch_size=16,
    learning_rate=0.3,
    activation_degree=3,  # depth 3 of 7 levels: the weights go down with 6 (see below)
    activation_bound=8.0,
    allow_model_decryption=True,
)


def _shards() -> list[tuple[np.ndarray, np.ndarray]]:
    return [load_local_data(DataSource("breast_cancer", None, i, N)) for i in range(N)]


def _smallest_ciphertext_bytes() -> int:
    """Envelope bytes of a ciphertext at the last level: no weights ciphertext is smaller."""
    ctx = Context(INSECURE_TEST)
    keys = QuerierKeyPair.generate(ctx)
    return len(
        ctx.encrypt(np.zeros(4), keys.public_key, level=INSECURE_TEST.mult_depth - 1).to_bytes()
    )


def _ciphertext_bytes(levels_left: int) -> int:
    """Envelope bytes of a fresh ciphertext with ``levels_left`` levels left."""
    ctx = Context(INSECURE_TEST)
    keys = QuerierKeyPair.generate(ctx)
    level = INSECURE_TEST.mult_depth - levels_left
    return len(ctx.encrypt(np.zeros(4), keys.public_key, level=level).to_bytes())


def _planned_broadcast_levels(job: TrainingJob) -> list[int]:
    """Levels the weights go down with, iteration by iteration: all they have, unless the
    root refreshes them before the next iteration anyway; then MAP's depth plus the
    refresh's minimum (the last iteration keeps them all: its weights are the model)."""
    ps, depth = INSECURE_TEST, job.depth_per_iteration
    have, out = ps.mult_depth, []
    for it in range(job.iterations):
        if have - depth < ps.refresh_min_levels:
            have = ps.mult_depth  # refreshed
        final = it == job.iterations - 1
        if final or have - 2 * depth >= ps.refresh_min_levels:
            out.append(have)
        else:
            out.append(depth + ps.refresh_min_levels)
        have = out[-1] - depth
    return out


def _map_rounds(events: list[ProgressEvent]) -> dict[int, dict[str, NodeStats]]:
    """Each iteration's MAP+COMBINE round: every node's own stats, by node id."""
    rounds: dict[int, dict[str, NodeStats]] = {}
    for e in events:
        if e.stage is Stage.MAP_COMBINE:
            assert e.iteration not in rounds and e.iterations == JOB.iterations
            rounds[e.iteration] = {s.node_id: s for s in e.nodes}
    return rounds


def _check_weights_level(events: list[ProgressEvent]) -> None:
    """The weights went down the tree at exactly the planned level, bytes included."""
    sent = [e.summary.levels_sent for e in events if e.summary is not None]
    planned = _planned_broadcast_levels(JOB)
    assert sent == planned, (sent, planned)
    rounds = _map_rounds(events)
    down = [rounds[it]["node-1"].bytes_from_parent for it in sorted(rounds)]
    assert len(down) == JOB.iterations
    tower = _ciphertext_bytes(2) - _ciphertext_bytes(1)
    for levels, got in zip(planned, down, strict=True):
        want = _ciphertext_bytes(levels)
        assert abs(got - want) < tower // 20, (levels, got, want)
    print(f"weights down with {sent} levels: {down} bytes")


def _check_map_stats(events: list[ProgressEvent]) -> None:
    """Every node reported, per iteration, its own MAP and COMBINE seconds and the bytes
    it sent up and down and received; the numbers agree between parents and children."""
    per_iteration = _map_rounds(events)
    assert sorted(per_iteration) == list(range(1, JOB.iterations + 1))
    smallest = _smallest_ciphertext_bytes()
    for phase, stats in per_iteration.items():
        assert set(stats) == {f"node-{i}" for i in range(N)}, phase
        for i in range(N):
            s = stats[f"node-{i}"]
            kids = [stats[f"node-{j}"] for j in range(1, N) if (j - 1) // 2 == i]
            assert s.parent_id == ("" if i == 0 else f"node-{(i - 1) // 2}")
            assert s.seconds > 0 and s.bytes_sent >= smallest
            assert s.subtree_seconds >= s.seconds + s.combine_seconds
            if kids:  # inner node: it combined what its children sent it
                assert s.combine_seconds > 0, (phase, s)
                assert s.bytes_from_children == sum(k.bytes_sent for k in kids)
                assert s.bytes_to_children == sum(k.bytes_from_parent for k in kids)
            else:
                assert s.combine_seconds == 0 and s.bytes_from_children == 0
                assert s.bytes_to_children == 0
            if i == 0:  # the root makes the request: nothing comes from a parent
                assert s.bytes_from_parent == 0
            else:  # the encrypted weights (and nothing else) came down from the parent
                assert s.bytes_from_parent >= smallest, (phase, s)
                assert s.bytes_from_parent == stats["node-0"].bytes_to_children // 2
            assert s.bytes_received == s.bytes_from_parent + s.bytes_from_children


def _accuracy(weights: np.ndarray, run: TrainingRun) -> float:
    X = run.standardize(np.vstack([x for x, _ in _shards()]))
    y = np.concatenate([y for _, y in _shards()])
    return float((predict(JOB, weights, X) == y).mean())


def test_training_over_the_tree_matches_the_in_process_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import phe_fl.federation.querier as querier_module

    per = JOB.layout.samples_per_ct
    with LocalCluster(tmp_path, n_nodes=N, fanout=2, params=PARAMS, allow_decryption=True) as c:
        events: list[ProgressEvent] = []
        querier = Querier(c.root_address, c.querier_tls(), PARAMS, on_event=events.append)
        querier.setup("keys")
        run = querier.train("train-1", JOB)
        remote = querier.model_weights("decrypt-1", "train-1")
        x_query = np.vstack([x for x, _ in _shards()])[:40]
        scores = querier.predict("predict-1", run, JOB, x_query)
        # more rows than one job carries: here one ciphertext per job, so three jobs
        monkeypatch.setattr(querier_module, "QUERIES_PER_JOB", 1)
        x_many = np.vstack([x for x, _ in _shards()])[: 2 * per + 3]
        progress: list[tuple[int, int]] = []
        many = querier.predict(
            "predict-many", run, JOB, x_many, on_rows=lambda d, t: progress.append((d, t))
        )
        jobs = {j.job_id: j.kind for j in querier.jobs()}
        querier.close()
    n = len(x_many)
    assert progress == [(per, n), (2 * per, n), (n, n)]
    assert {"predict-many", "predict-many-2", "predict-many-3"} <= set(jobs)
    margins_many = design_matrix(JOB, run.standardize(x_many)) @ remote
    assert np.abs(many - np.clip(JOB.activation(margins_many), 0.0, 1.0)).max() < 2e-3
    # Oblivious prediction computes the same polynomial as the plaintext model.
    margins = design_matrix(JOB, run.standardize(x_query)) @ remote
    expected = np.clip(JOB.activation(margins), 0.0, 1.0)
    print(f"max |score - plaintext score| {np.abs(scores - expected).max():.2e}")
    assert np.abs(scores - expected).max() < 2e-3
    assert len(run.refreshes) == JOB.iterations and sum(run.refreshes) >= 1  # a refresh inside
    assert any(e.stage is Stage.PREPARE_DECRYPT for e in events)
    pooled = np.vstack([x for x, _ in _shards()])
    assert run.mean is not None and run.std is not None
    assert np.abs(run.mean - pooled.mean(axis=0)).max() < 1e-4
    assert np.abs(run.std - pooled.std(axis=0)).max() < 1e-4
    assert any(e.stage is Stage.REFRESH for e in events)
    _check_map_stats(events)
    _check_weights_level(events)

    shards = [(run.standardize(x), y) for x, y in _shards()]
    fed = setup_local(JOB, shards)
    local = Trainer(JOB, fed).train().decrypt(fed)
    acc_remote, acc_local = _accuracy(remote, run), _accuracy(local, run)
    print(
        f"max |w_remote - w_local| {np.abs(remote - local).max():.2e}; "
        f"accuracy {acc_remote:.4f} (federation) vs {acc_local:.4f} (in process)"
    )
    assert np.abs(remote - local).max() < 1e-3
    assert abs(acc_remote - acc_local) <= 0.005


def test_model_decryption_needs_every_node_policy(tmp_path: Path) -> None:
    job = TrainingJob(
        n_features=30,
        params=PARAMS,
        iterations=1,
        learning_rate=0.3,
        activation_degree=5,
        activation_bound=8.0,
    )
    with LocalCluster(tmp_path, n_nodes=3, fanout=2, params=PARAMS) as c:
        querier = Querier(c.root_address, c.querier_tls(), PARAMS)
        querier.setup("keys")
        querier.train("train-1", job)
        with pytest.raises(
            PeerError, match="PERMISSION_DENIED.*refuses decrypt_model: allow_decryption = false"
        ):
            querier.model_weights("decrypt-1", "train-1")
        wrong = TrainingJob(n_features=29, params=PARAMS, iterations=1)
        # refused at the root, from the nodes' common schema, before PREPARE
        with pytest.raises(
            PeerError, match="INVALID_ARGUMENT.*declares 29 features; the nodes' data has 30"
        ):
            querier.train("train-bad", wrong)
        querier.close()
