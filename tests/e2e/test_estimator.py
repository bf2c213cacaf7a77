"""The analyst's estimator over real node processes: fit() sends a job, not data;
predict/predict_proba read scores only this querier can decrypt; a second estimator
attaches to the trained model by its id."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phe_fl.errors import JobStateError, ParameterError
from phe_fl.federation.config import DataSource
from phe_fl.federation.data import load_local_data
from phe_fl.federation.estimator import FederatedGLM
from phe_fl.federation.local import LocalCluster
from phe_fl.mhe import INSECURE_TEST

N = 3
OPTIONS = {
    "iterations": 3,
    "batch_size": 16,
    "learning_rate": 0.3,
    "activation_degree": 3,
    "activation_bound": 8.0,
}


def test_fit_then_predict_like_scikit_learn(tmp_path: Path) -> None:
    shards = [load_local_data(DataSource("breast_cancer", None, i, N)) for i in range(N)]
    x = np.vstack([s[0] for s in shards])
    y = np.concatenate([s[1] for s in shards])
    with LocalCluster(tmp_path, n_nodes=N, fanout=2, params=INSECURE_TEST.name) as c:
        with FederatedGLM(c.root_address, c.querier_tls(), n_features=30, **OPTIONS) as est:
            with pytest.raises(JobStateError, match="not fitted"):
                est.predict(x[:3])
            with pytest.raises(ParameterError, match="fit\\(\\) takes no data"):
                est.fit(x, y)  # type: ignore[arg-type]
            est.fit()  # makes the collective keys first: the federation had none
            proba = est.predict_proba(x[:100])
            labels = est.predict(x[:100])
            with pytest.raises(ParameterError, match="rows of 30 features"):
                est.predict(x[:3, :5])
            model_id = est.model_id_
        again = FederatedGLM.from_model(c.root_address, c.querier_tls(), model_id)
        with again:
            proba_again = again.predict_proba(x[:100])
    assert proba.shape == (100, 2) and np.allclose(proba.sum(axis=1), 1.0)
    assert np.array_equal(labels, (proba[:, 1] >= 0.5).astype(float))
    assert np.abs(proba_again - proba).max() < 1e-3  # the same encrypted model
    accuracy = float((labels == y[:100]).mean())
    print(f"estimator accuracy on 100 training rows: {accuracy:.3f}")
    assert accuracy > 0.85
