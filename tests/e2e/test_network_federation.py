"""Networks over real node processes: multinomial regression and MLPs trained with their
weights encrypted, MAP in stages (parties pause where an intermediate needs a collective
refresh, the root refreshes every party's at once), the model decrypted with consent and
queried obliviously; compared with the plaintext twin on the same standardized shards."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris

from phe_fl.errors import PeerError
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.messages import ProgressEvent, Stage
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import MLPJob, mlp_scores, train_plaintext_mlp
from phe_fl.ml.datasets import load_named
from tests.e2e.harness import run_cli

PARAMS = INSECURE_TEST.name
IRIS_HEADER = "sepal_length,sepal_width,petal_length,petal_width,species"
N = 4  # node-0 <- node-1 <- node-3 and node-0 <- node-2: an inner node adds a child's answers


def _shards() -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = load_iris(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    x, y = x[order], y[order].astype(np.float64)
    return [(x[i::N], y[i::N]) for i in range(N)]


def _files(
    tmp_path: Path,
    shards: list[tuple[np.ndarray, np.ndarray]] | None = None,
    header: str = IRIS_HEADER,
) -> list[Path]:
    paths = []
    for i, (x, y) in enumerate(_shards() if shards is None else shards):
        path = tmp_path / f"data-{i}.csv"
        rows = [header] + [",".join(f"{v:g}" for v in (*r, c)) for r, c in zip(x, y, strict=True)]
        path.write_text("\n".join(rows) + "\n")
        paths.append(path)
    return paths


def _cluster(
    tmp_path: Path,
    n_nodes: int = N,
    shards: list[tuple[np.ndarray, np.ndarray]] | None = None,
    header: str = IRIS_HEADER,
    label: str = "species",
    **kw: Any,
) -> LocalCluster:
    """``n_nodes`` node processes on the test ring, node i reading shard i from its own
    CSV file; decryption allowed unless ``kw`` says otherwise."""
    files = _files(tmp_path, (shards or _shards())[:n_nodes], header)
    return LocalCluster(
        tmp_path,
        n_nodes=n_nodes,
        fanout=2,
        params=PARAMS,
        data_files=files,
        data_extra=[f'label = "{label}"'] * n_nodes,
        **{"allow_decryption": True, **kw},
    )


def _assert_same_labels(scores: np.ndarray, expected: np.ndarray) -> None:
    """The oblivious labels are the decrypted model's wherever its top two scores are
    further apart than the noise (scores agree within 1e-3): a row whose two best scores
    are 5e-5 apart (the 2-hidden-layer iris network has one) is a tie either may win."""
    top2 = np.sort(expected, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2e-3
    assert clear.sum() >= len(clear) - 2
    assert (scores.argmax(axis=1) == expected.argmax(axis=1))[clear].all()


def _job(hidden: tuple[int, ...], **kw: object) -> MLPJob:
    base: dict[str, object] = dict(
        n_features=4,
        n_classes=3,
        hidden=hidden,
        iterations=2,
        batch_size=8,
        learning_rate=1.0,
        momentum=0.5,
        allow_model_decryption=True,
        params=PARAMS,
    )
    return MLPJob(**{**base, **kw})  # type: ignore[arg-type]


@pytest.mark.slow
def test_networks_train_and_predict_over_the_tree(tmp_path: Path) -> None:
    jobs = {"multinomial": _job(()), "h1": _job((6,)), "h2": _job((6, 5))}
    x_query = np.vstack([x for x, _ in _shards()])[:40]
    got = {}
    with _cluster(tmp_path) as c:
        events: list[ProgressEvent] = []
        q = Querier(c.root_address, c.querier_tls(), PARAMS, on_event=events.append)
        q.setup("keys")
        for name, job in jobs.items():
            events.clear()
            run = q.train_network(f"net-{name}", job)
            weights = q.network_weights(f"weights-{name}", f"net-{name}")
            scores = q.predict(f"predict-{name}", run, job, x_query)
            info_run, info_job = q.model_info(f"info-{name}", f"net-{name}")
            stages = [e.index for e in events if e.stage is Stage.MAP_COMBINE]
            down = [
                {n.node_id: n.bytes_from_parent for n in e.nodes}
                for e in events
                if e.stage is Stage.MAP_COMBINE and e.index >= 1
            ]
            got[name] = (run, weights, scores, info_job, stages, down)
        listed = {s.model_id: s for s in q.models()}
        q.close()
    for name, job in jobs.items():
        run, weights, scores, info_job, stages, down = got[name]
        assert info_job == job and listed[f"net-{name}"].network == job
        shards = [(run.standardize(x), y) for x, y in _shards()]
        twin = train_plaintext_mlp(job, shards)
        diff = max(float(np.abs(a - b).max()) for a, b in zip(weights, twin.weights, strict=True))
        expected = mlp_scores(job, weights, run.standardize(x_query))
        score_diff = float(np.abs(scores - expected).max())
        print(
            f"{name}: max |federation - twin| {diff:.2e}, max |oblivious - decrypted model| "
            f"{score_diff:.2e}; refreshes by the parties {run.party_refreshes} in "
            f"{run.map_rounds} rounds; MAP stages {stages}"
        )
        assert diff < 1e-3
        assert score_diff < 1e-3
        _assert_same_labels(scores, expected)
        if job.hidden:  # deeper than the test set's levels: MAP paused for refreshes
            assert all(p > 0 for p in run.party_refreshes)
            # every party's refreshes at one pause went to the tree as one round
            assert all(
                p >= N * r > 0 for p, r in zip(run.party_refreshes, run.map_rounds, strict=True)
            )
            assert max(stages) >= 1  # MAP went on after a refresh round
            # refreshed ciphertexts go down to whom asked: node-1 gets its own and node-3's,
            # node-3 and node-2 their own only (not every party's)
            for sent in down:
                assert sent["node-1"] > 1.5 * sent["node-3"] > 0, sent
                assert sent["node-2"] < 0.75 * sent["node-1"], sent
        else:
            assert run.party_refreshes == [0] * job.iterations and set(stages) == {0}


@pytest.mark.slow
def test_bad_network_jobs_are_refused_naming_the_field(tmp_path: Path) -> None:
    with _cluster(tmp_path, 2, allow_decryption=False) as c:
        q = Querier(c.root_address, c.querier_tls(), PARAMS)
        q.setup("keys")
        # labels 0..2 do not fit two classes: every node refuses at PREPARE, by name
        with pytest.raises(PeerError, match="INVALID_ARGUMENT.*node-[01].*label"):
            q.train_network("two-classes", _job((), n_classes=2))
        with pytest.raises(PeerError, match="declares 5 features; the nodes' data has 4"):
            q.train_network("five", _job((), n_features=5))
        # never unlocked decryption: the trained network stays encrypted
        q.train_network("kept", _job((3,), iterations=1, allow_model_decryption=False))
        with pytest.raises(PeerError, match="PERMISSION_DENIED.*decrypt_model"):
            q.network_weights("weights", "kept")
        q.close()


@pytest.mark.slow
def test_a_network_from_the_command_line(tmp_path: Path) -> None:
    refused = run_cli(
        "query", "train", "--root", "127.0.0.1:1", "--cert", "c", "--key", "k", "--ca", "a",
        "--params", PARAMS, "--model", "mlp", "--hidden", "6", "--degree", "9",
    )  # fmt: skip
    assert refused.returncode != 0 and "hidden_degree" in refused.stderr, refused.stderr
    with _cluster(tmp_path, 3) as c:
        tls = c.querier_tls()
        common = ["--root", c.root_address, "--cert", str(tls.cert), "--key", str(tls.key)]
        common += ["--ca", str(tls.ca), "--params", PARAMS]
        assert run_cli("query", "setup", *common).returncode == 0
        train = run_cli(
            "query", "train", *common, "--job-id", "net", "--model", "mlp", "--hidden", "6",
            "--classes", "3", "--features", "4", "--iterations", "3", "--batch-size", "8",
            "--learning-rate", "1", "--allow-model-decryption", "--momentum", "0.5", "--nesterov",
        )  # fmt: skip
        assert train.returncode == 0, train.stderr
        assert "mlp network 4-6-3" in train.stdout and "stays encrypted" in train.stdout
        models = run_cli("models", "list", *common)
        assert "net" in models.stdout and "mlp network 4-6-3" in models.stdout, models.stdout
        weights = run_cli("query", "model", *common, "--model", "net")
        assert weights.returncode == 0, weights.stderr
        assert "W_1 (6 x 5)" in weights.stdout and "W_2 (3 x 7)" in weights.stdout
        queries = tmp_path / "queries.csv"
        queries.write_text("\n".join(_files(tmp_path)[3].read_text().splitlines()[:21]) + "\n")
        out = tmp_path / "predictions.csv"
        pred = run_cli(
            "predict", *common, "--model", "net", "--input", str(queries), "--label", "species",
            "--output", str(out),
        )  # fmt: skip
        assert pred.returncode == 0, pred.stderr
        assert "accuracy" in pred.stderr
        lines = out.read_text().splitlines()
        assert lines[0] == "row,label,score_0,score_1,score_2" and len(lines) == 21


@pytest.mark.slow
def test_a_network_whose_first_layer_spans_several_ciphertexts(tmp_path: Path) -> None:
    """8x8 digits, ten classes: 65 inputs are five 16-unit tiles on the 2^12 ring (the
    side the job chose for a batch of 4: eight samples a ciphertext, one pass per party;
    every node reads it from the wire)."""
    data = load_named("digits", digit=None)
    shards = [(data.x[i:90:3], data.y[i:90:3]) for i in range(3)]
    header = ",".join(data.feature_names) + ",digit"
    job = MLPJob(
        n_features=64,
        n_classes=10,
        hidden=(8,),
        iterations=2,
        batch_size=4,
        learning_rate=0.5,
        allow_model_decryption=True,
        params=PARAMS,
    )
    assert (job.tile, job.layout.grid(1), job.layout.samples_per_ct) == (16, (1, 5), 8)
    x_query = data.x[90:100]
    with _cluster(tmp_path, 3, shards, header, "digit") as c:
        q = Querier(c.root_address, c.querier_tls(), PARAMS)
        q.setup("keys")
        run = q.train_network("digits", job)
        weights = q.network_weights("weights", "digits")
        scores = q.predict("predict", run, job, x_query)
        q.close()
    twin = train_plaintext_mlp(job, [(run.standardize(x), y) for x, y in shards])
    diff = max(float(np.abs(a - b).max()) for a, b in zip(weights, twin.weights, strict=True))
    expected = mlp_scores(job, weights, run.standardize(x_query))
    print(f"digits over tiles: |federation - twin| {diff:.2e}, |oblivious - model| "
          f"{np.abs(scores - expected).max():.2e}")  # fmt: skip
    assert diff < 1e-3
    assert np.abs(scores - expected).max() < 1e-3
    _assert_same_labels(scores, expected)


@pytest.mark.slow
def test_a_leaf_killed_mid_map_comes_back_and_the_training_ends_as_the_twin(
    tmp_path: Path,
) -> None:
    """node-3 is killed (SIGKILL) right after it answered stage 0 of iteration 2's MAP and
    started again: its paused MAP is gone, the root waits for it and runs iteration 2
    again from the checkpoint; the model is the uninterrupted one."""
    job = _job((6,), iterations=3)
    killed = threading.Event()
    with _cluster(tmp_path, deadline_s=60) as c:

        def on_event(ev: ProgressEvent) -> None:
            if (
                ev.stage is Stage.MAP_COMBINE
                and ev.iteration == 2
                and ev.index == 0
                and not killed.is_set()
            ):
                killed.set()
                c.processes[3].kill()
                c.processes[3].wait()
                threading.Timer(0.5, c.start_node, args=(3,)).start()

        events: list[ProgressEvent] = []
        q = Querier(
            c.root_address,
            c.querier_tls(),
            PARAMS,
            deadline_s=300,
            on_event=lambda e: (events.append(e), on_event(e)),
        )
        q.setup("keys")
        run = q.train_network("killed", job)
        weights = q.network_weights("weights", "killed")
        info = {j.job_id: j for j in q.jobs()}["killed"]
        q.close()
    assert killed.is_set() and info.resumes >= 1
    assert any(e.stage is Stage.RESUMED and e.iteration == 2 for e in events)
    twin = train_plaintext_mlp(job, [(run.standardize(x), y) for x, y in _shards()])
    diff = max(float(np.abs(a - b).max()) for a, b in zip(weights, twin.weights, strict=True))
    print(f"after a leaf's restart mid-MAP: |federation - twin| {diff:.2e}; events after the kill:")
    print([(e.stage.name, e.iteration, e.index) for e in events if e.iteration >= 2][:12])
    assert diff < 1e-3 and len(run.refreshes) == job.iterations
