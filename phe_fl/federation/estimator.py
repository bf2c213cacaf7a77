"""A scikit-learn-style estimator over a federation, for analysts.

``fit()`` takes no data: the training data stays at the institutions, and what leaves
this process is the job. ``predict_proba`` and ``predict`` send the samples encrypted
under the collective key and read scores that only this querier can decrypt. Everything
goes through :class:`~phe_fl.federation.querier.Querier`; this class only keeps the
model id and the job between calls, as scikit-learn users expect.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from phe_fl.errors import JobStateError, ParameterError
from phe_fl.federation import messages as m
from phe_fl.federation.config import TlsPaths
from phe_fl.federation.querier import Querier, TrainingRun, new_job_id
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import TrainingJob

__all__ = ["FederatedGLM"]


class FederatedGLM:
    """Logistic or linear regression trained across the federation at ``root``.

    ``job_options`` are :class:`~phe_fl.ml.TrainingJob` fields (``learning_rate``,
    ``iterations``, ``momentum``, ...); the parameter set is the federation's. Without
    ``n_features`` the estimator learns it from the first query matrix, which is not
    possible for ``fit``: give it there.
    """

    def __init__(
        self,
        root: str,
        tls: TlsPaths,
        *,
        n_features: int,
        model: str = "logistic",
        name: str = "querier",
        standardize: bool = True,
        deadline_s: float = 600.0,
        on_event: Callable[[m.ProgressEvent], None] | None = None,
        **job_options: Any,
    ) -> None:
        self.root = root
        self.tls = tls
        self.n_features = n_features
        self.model = model
        self.name = name
        self.standardize = standardize
        self.deadline_s = deadline_s
        self.on_event = on_event
        self.job_options = job_options
        self.job_: TrainingJob | None = None
        self.run_: TrainingRun | None = None
        self.feature_names_in_: list[str] | None = None
        self._querier: Querier | None = None

    # -- connection ---------------------------------------------------------------------
    @property
    def querier(self) -> Querier:
        if self._querier is None:
            self._querier = Querier(
                self.root,
                self.tls,
                name=self.name,
                deadline_s=self.deadline_s,
                on_event=self.on_event,
            )
        return self._querier

    def close(self) -> None:
        if self._querier is not None:
            self._querier.close()
            self._querier = None

    def __enter__(self) -> FederatedGLM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- scikit-learn verbs ---------------------------------------------------------------
    def fit(
        self,
        X: None = None,
        y: None = None,
        *,
        feature_names: Sequence[str] | None = None,
    ) -> FederatedGLM:
        """Train on the institutions' data (collective keys first if the federation has
        none yet). The model stays encrypted at the root; ``model_id_`` names it."""
        if X is not None or y is not None:
            raise ParameterError(
                "fit() takes no data: the training data stays at the institutions "
                "(call fit() without X and y)"
            )
        q = self.querier
        status = q.status(new_job_id())
        if status.missing:
            raise JobStateError(f"nodes not connected: {', '.join(status.missing)}")
        if any(n.key_state != "ready" for n in status.nodes):
            q.setup(new_job_id())
        job = TrainingJob(self.n_features, self.model, params=q.ctx.params.name, **self.job_options)  # type: ignore[arg-type]
        self.run_ = q.train(new_job_id(), job, standardize=self.standardize)
        self.job_ = job
        self.feature_names_in_ = self._names(feature_names)
        return self

    def _names(self, given: Sequence[str] | None) -> list[str] | None:
        """The model's feature names: the nodes' declared columns, or ``given``."""
        schema = self.run_.schema if self.run_ is not None else None
        if schema is not None:
            if given is not None and list(given) != list(schema.features):
                raise ParameterError(
                    f"feature_names {list(given)} differ from the nodes' columns "
                    f"{list(schema.features)}"
                )
            return list(schema.features)
        return list(given) if given is not None else None

    @classmethod
    def from_model(
        cls, root: str, tls: TlsPaths, model_id: str, *, name: str = "querier", **kw: Any
    ) -> FederatedGLM:
        """An estimator for a model trained earlier (by this querier or another)."""
        est = cls(root, tls, n_features=0, name=name, **kw)
        run, job = est.querier.model_info(new_job_id(), model_id)
        if not isinstance(job, TrainingJob):
            raise ParameterError(
                f"model {model_id!r} is a network ({job.model}, hidden {list(job.hidden)}), not "
                f"a GLM: query it with Querier.predict"
            )
        est.run_, est.job_, est.n_features, est.model = run, job, job.n_features, job.model
        est.feature_names_in_ = est._names(None)
        return est

    @property
    def model_id_(self) -> str:
        return self._fitted()[0].model_id

    def _fitted(self) -> tuple[TrainingRun, TrainingJob]:
        if self.run_ is None or self.job_ is None:
            raise JobStateError("this estimator is not fitted: call fit() or from_model()")
        return self.run_, self.job_

    def _matrix(self, X: Any) -> FloatArray:
        """Rows of features from an array (columns in the model's order) or a DataFrame
        (columns picked by name, in any order; extra columns such as a label ignored)."""
        columns = getattr(X, "columns", None)
        if columns is not None and self.feature_names_in_ is not None:
            names = [str(c) for c in columns]
            missing = [n for n in self.feature_names_in_ if n not in names]
            if missing:
                raise ParameterError(
                    f"the DataFrame lacks the model's columns {missing} (it has {names})"
                )
            X = X[self.feature_names_in_]
        x = np.asarray(X, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ParameterError(
                f"expected rows of {self.n_features} features, got an array of shape {x.shape}"
            )
        return x

    def decision_scores(
        self, X: Any, *, on_rows: Callable[[int, int], None] | None = None
    ) -> FloatArray:
        """The model's score per row: a probability (logistic) or the value (linear)."""
        run, job = self._fitted()
        return self.querier.predict(new_job_id(), run, job, self._matrix(X), on_rows=on_rows)

    def predict_proba(self, X: Any) -> FloatArray:
        """Class probabilities, shape (rows, 2), as scikit-learn's classifiers return."""
        if self._fitted()[1].model != "logistic":
            raise ParameterError("predict_proba needs a logistic model; use predict")
        p = self.decision_scores(X)
        return np.column_stack([1.0 - p, p])

    def predict(self, X: Any) -> FloatArray:
        """Labels 0/1 (logistic, threshold 0.5) or values (linear)."""
        scores = self.decision_scores(X)
        if self._fitted()[1].model == "logistic":
            return (scores >= 0.5).astype(np.float64)
        return scores
