"""Real data files over real node processes: CSVs with a header and named columns, a
federation-wide schema check before any key work, and declared transformations that the
querier's raw samples go through too (nothing applied behind the querier's back)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from phe_fl.errors import PeerError
from phe_fl.federation.estimator import FederatedGLM
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import TrainingJob
from phe_fl.ml.glm import design_matrix

N = 3
PARAMS = INSECURE_TEST.name
SCALE = 'scale = { "mean area" = 1000.0, "worst area" = 1000.0 }'


def _write_csvs(folder: Path) -> tuple[list[Path], np.ndarray, list[str]]:
    """Breast cancer in three CSV files with a header; the label as text (B/M)."""
    data = load_breast_cancer()
    names = [str(n) for n in data.feature_names]
    paths = []
    for i, rows in enumerate(np.array_split(np.arange(len(data.data)), N)):
        path = folder / f"site-{i}.csv"
        with path.open("w", newline="") as f:
            out = csv.writer(f)
            out.writerow(["patient", *names, "diagnosis"])
            for r in rows:
                out.writerow([f"p{r}", *data.data[r], "B" if data.target[r] else "M"])
        paths.append(path)
    return paths, np.asarray(data.data), names


def _data_lines(scale: list[str]) -> list[str]:
    columns = 'label = "diagnosis"\nclasses = ["M", "B"]\n'
    features = "features = [" + ", ".join(f'"{n}"' for n in load_breast_cancer().feature_names)
    return [columns + features + "]\n" + s for s in scale]


def test_named_columns_schema_check_and_declared_transforms(tmp_path: Path) -> None:
    files, x_raw, names = _write_csvs(tmp_path)
    odd = _data_lines([SCALE, SCALE, 'scale = { "mean area" = 100.0 }'])
    with LocalCluster(
        tmp_path / "fed",
        n_nodes=N,
        params=PARAMS,
        data_files=files,
        data_extra=odd,
        allow_decryption=True,
    ) as c:
        q = Querier(c.root_address, c.querier_tls(), deadline_s=60)
        status = q.status("status-1")
        assert status.schema is not None
        assert list(status.schema.features) == names and status.schema.label == "diagnosis"
        assert status.schema.classes == ("M", "B")
        assert [t.name for t in status.schema.transforms] == ["scale"]
        assert {n.node_id: n.schema_digest == status.schema.digest for n in status.nodes} == {
            "node-0": True,
            "node-1": True,
            "node-2": False,
        }
        with pytest.raises(PeerError, match=r"node\(s\) node-2 hold data of another schema"):
            q.setup("keys-refused")
        assert "keys-refused" not in c.log(2)  # refused before any key work reached it

        # node-2 declares the same transformation as the others: accepted
        c.configs[2].write_text(
            c.configs[2].read_text().replace('scale = { "mean area" = 100.0 }', SCALE)
        )
        c.stop_node(2)
        c.start_node(2)
        _wait_connected(q)
        q.setup("keys")
        job = TrainingJob(
            n_features=30,
            params=PARAMS,
            iterations=3,
            learning_rate=0.3,
            activation_degree=3,
            activation_bound=8.0,
            allow_model_decryption=True,
        )
        run = q.train("train-1", job)
        weights = q.model_weights("weights-1", "train-1")
        scores = q.predict("predict-1", run, job, x_raw[:50])  # raw samples, as read
        q.close()
        # the analyst's estimator on a DataFrame: columns by name, any order, extras ignored
        import pandas as pd

        frame = pd.DataFrame(x_raw[:50], columns=names)[names[::-1]]
        frame["diagnosis"] = "?"
        with FederatedGLM.from_model(c.root_address, c.querier_tls(), "train-1") as est:
            assert est.feature_names_in_ == names
            proba = est.predict_proba(frame)
    assert run.schema is not None and run.schema.digest == status.schema.digest
    assert np.abs(proba[:, 1] - scores).max() < 1e-3
    # the querier applied the declared scale before the standardization, as the nodes did
    x_nodes = x_raw[:50].copy()
    for column in ("mean area", "worst area"):
        x_nodes[:, names.index(column)] /= 1000.0
    assert run.standardization is not None
    assert np.allclose(run.standardize(x_raw[:50]), run.standardization.apply(x_nodes))
    margins = design_matrix(job, run.standardize(x_raw[:50])) @ weights
    assert np.abs(scores - np.clip(job.activation(margins), 0.0, 1.0)).max() < 2e-3
    labels = (scores >= 0.5).astype(float)  # classes ["M", "B"]: B is 1
    truth = load_breast_cancer().target[:50].astype(float)
    assert float((labels == truth).mean()) > 0.85


def _wait_connected(q: Querier, timeout_s: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        status = q.status("wait")
        if not status.missing and len(status.nodes) == N:
            return
        assert time.monotonic() < deadline, status
        time.sleep(0.5)
