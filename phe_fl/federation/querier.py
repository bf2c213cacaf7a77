"""The querier's side: submit jobs to the root over mutual TLS and read results that
only its own secret key can decrypt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from phe_fl.federation.config import ChildLink, TlsPaths
from phe_fl.federation.node import job_from_json, job_to_json
from phe_fl.federation.serde import Event, Step, floats_from_bytes
from phe_fl.federation.transport import NodeClient
from phe_fl.mhe import Context, JointPublicKey, QuerierKeyPair, get_parameter_set
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import TrainingJob

__all__ = ["Querier", "PooledStats", "TrainingRun"]


@dataclass(frozen=True)
class PooledStats:
    """What the stats job releases: per-feature pooled mean and variance, and the count."""

    mean: FloatArray
    variance: FloatArray
    count: int


@dataclass(frozen=True)
class TrainingRun:
    """What a querier learns from a training job (the model itself stays encrypted)."""

    model_id: str
    refreshes: list[int]
    mean: FloatArray | None
    std: FloatArray | None

    def standardize(self, x: FloatArray) -> FloatArray:
        if self.mean is None or self.std is None:
            return x
        return (np.asarray(x, dtype=np.float64) - self.mean) / self.std


def _training_run(model_id: str, job: TrainingJob, result: Step) -> TrainingRun:
    refreshes = [int(r) for r in result.labels.get("refreshes", "").split(",") if r]
    mean = std = None
    if "standardize" in result.payloads:
        values = floats_from_bytes(result.payload("standardize"))
        mean, std = values[: job.n_features], values[job.n_features :]
    return TrainingRun(model_id, refreshes, mean, std)


class Querier:
    def __init__(
        self,
        root_address: str,
        tls: TlsPaths,
        params: str,
        *,
        name: str = "querier",
        deadline_s: float = 600.0,
        on_event: Callable[[Event], None] | None = None,
    ) -> None:
        self.ctx = Context(get_parameter_set(params))
        self.keys = QuerierKeyPair.generate(self.ctx)
        self.name = name
        self.on_event = on_event
        self._joint: JointPublicKey | None = None
        self._root = NodeClient(ChildLink("root", root_address), tls, deadline_s)

    def _query(self, job_id: str, kind: str, payloads: dict[str, bytes], **labels: str) -> Step:
        step = Step(job_id, kind, self.ctx.params.name, 0, payloads, dict(labels))
        return self._root.query(step, self.on_event).step

    def setup(self, job_id: str, rotations: Sequence[int] = ()) -> None:
        """Ask the root to run collective key generation across the federation."""
        self._query(job_id, "setup", {}, rotations=",".join(str(r) for r in rotations))

    def stats(self, job_id: str, n_features: int) -> PooledStats:
        """Pooled statistics of every node's data; only this querier can read them."""
        result = self._query(job_id, "stats", {"querier_key": self.keys.public_key.to_bytes()})
        ct = self.ctx.ciphertext_from_bytes(result.payload("result"))
        values = self.keys.decrypt(ct, length=3 * n_features, decimals=6)
        d = n_features
        count = float(values[2 * d])
        mean = values[:d] / count
        return PooledStats(mean, values[d : 2 * d] / count - mean**2, round(count))

    def train(self, job_id: str, job: TrainingJob, *, standardize: bool = True) -> TrainingRun:
        """Train ``job`` across the federation. The model stays encrypted at the root
        under ``job_id``; what comes back is public: refreshes per iteration and the
        pooled standardization the nodes applied (queries must use it too)."""
        result = self._query(
            job_id, "train", {}, job=job_to_json(job), standardize="1" if standardize else "0"
        )
        return _training_run(job_id, job, result)

    def model_info(self, job_id: str, model_id: str) -> tuple[TrainingRun, TrainingJob]:
        """A trained model's public description (its job and standardization), so that a
        querier that did not train it can send queries."""
        result = self._query(job_id, "model_info", {}, model=model_id)
        job = job_from_json(result.labels.get("job", ""))
        return _training_run(model_id, job, result), job

    def model_weights(self, job_id: str, model_id: str) -> FloatArray:
        """The trained model in the clear: refused unless every node's policy allows it."""
        data = self._query(job_id, "model", {}, model=model_id).payload("weights")
        return floats_from_bytes(data)

    def predict(self, job_id: str, run: TrainingRun, job: TrainingJob, x: FloatArray) -> FloatArray:
        """Scores of the trained model ``run`` on ``x``: the samples leave this process
        encrypted under the joint key and come back switched to this querier's key."""
        from phe_fl.ml.prediction import decode_scores, encrypt_queries

        if self._joint is None:
            self._joint = self.joint_key(f"{job_id}-key")
        x = run.standardize(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        queries = encrypt_queries(job, self.ctx, x, self._joint)
        payloads = {f"q.{i:04d}": q.to_bytes() for i, q in enumerate(queries)}
        payloads["querier_key"] = self.keys.public_key.to_bytes()
        result = self._query(job_id, "predict", payloads, model=run.model_id)
        names = sorted(n for n in result.payloads if n.startswith("r."))
        slots = [
            self.keys.decrypt(self.ctx.ciphertext_from_bytes(result.payloads[n]), decimals=8)
            for n in names
        ]
        return decode_scores(job, slots, len(x))

    def joint_key(self, job_id: str) -> JointPublicKey:
        """The collective public key, to encrypt queries under."""
        data = self._query(job_id, "joint_key", {}).payload("key")
        return JointPublicKey.from_bytes(self.ctx, data)

    def close(self) -> None:
        self._root.close()
