"""Networks over real node processes: multinomial regression and MLPs trained with their
weights encrypted, MAP in stages (parties pause where an intermediate needs a collective
refresh, the root refreshes every party's at once), the model decrypted with consent and
queried obliviously; compared with the plaintext twin on the same standardized shards."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris

from phe_fl.errors import PeerError
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.messages import ProgressEvent, Stage
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import MLPJob, mlp_scores, train_plaintext_mlp

PARAMS = INSECURE_TEST.name
N = 4  # node-0 <- node-1 <- node-3 and node-0 <- node-2: an inner node adds a child's answers


def _shards() -> list[tuple[np.ndarray, np.ndarray]]:
    x, y = load_iris(return_X_y=True)
    order = np.random.default_rng(7).permutation(len(y))
    x, y = x[order], y[order].astype(np.float64)
    return [(x[i::N], y[i::N]) for i in range(N)]


def _files(tmp_path: Path) -> list[Path]:
    paths = []
    for i, (x, y) in enumerate(_shards()):
        path = tmp_path / f"iris-{i}.csv"
        rows = ["sepal_length,sepal_width,petal_length,petal_width,species"]
        rows += [",".join(f"{v:g}" for v in (*r, c)) for r, c in zip(x, y, strict=True)]
        path.write_text("\n".join(rows) + "\n")
        paths.append(path)
    return paths


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
    with LocalCluster(
        tmp_path,
        n_nodes=N,
        fanout=2,
        params=PARAMS,
        allow_decryption=True,
        data_files=_files(tmp_path),
        data_extra=['label = "species"'] * N,
    ) as c:
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
            got[name] = (run, weights, scores, info_job, stages)
        listed = {s.model_id: s for s in q.models()}
        q.close()
    for name, job in jobs.items():
        run, weights, scores, info_job, stages = got[name]
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
        assert (scores.argmax(axis=1) == expected.argmax(axis=1)).all()
        if job.hidden:  # deeper than the test set's levels: MAP paused for refreshes
            assert all(p > 0 for p in run.party_refreshes)
            # every party's refreshes at one pause went to the tree as one round
            assert all(
                p >= N * r > 0 for p, r in zip(run.party_refreshes, run.map_rounds, strict=True)
            )
            assert max(stages) >= 1  # MAP went on after a refresh round
        else:
            assert run.party_refreshes == [0] * job.iterations and set(stages) == {0}


@pytest.mark.slow
def test_bad_network_jobs_are_refused_naming_the_field(tmp_path: Path) -> None:
    with LocalCluster(
        tmp_path,
        n_nodes=2,
        fanout=2,
        params=PARAMS,
        data_files=_files(tmp_path)[:2],
        data_extra=['label = "species"'] * 2,
    ) as c:
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
