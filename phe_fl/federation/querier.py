"""The querier's side: submit jobs to the root over mutual TLS and read results that
only its own secret key can decrypt."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from phe_fl.errors import PeerError, ProtocolError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.model import FedAvgModel
from phe_fl.fedavg.packing import Layout
from phe_fl.federation import messages as m
from phe_fl.federation.config import TlsPaths
from phe_fl.federation.serde import FrameReader, job_request_frames, read_job_reply
from phe_fl.federation.status import PeerTimeout, rpc_errors
from phe_fl.federation.tree import open_channel
from phe_fl.mhe import Context, JointPublicKey, QuerierKeyPair, get_parameter_set
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import MLPJob, TrainingJob
from phe_fl.v2 import query_pb2_grpc

__all__ = ["Querier", "PooledStats", "TrainingRun", "new_job_id"]

R = TypeVar("R")

QUERIES_PER_JOB = m.MAX_QUERIES // 8
"""Query ciphertexts per predict job (32: about 200 MB at a 2^15 ring), well under what
the root accepts."""


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]


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
    standardization: m.Standardization | None
    schema: m.DataSchema | None = None
    dp_epsilon: float = 0.0
    """A differentially private training: the epsilon it spent at :attr:`dp_delta`."""
    dp_delta: float = 0.0
    party_refreshes: list[int] = field(default_factory=list)
    """A network: per iteration, the refreshes of the parties' intermediates (part of
    :attr:`refreshes`) and the collective rounds they took (:attr:`map_rounds`)."""
    map_rounds: list[int] = field(default_factory=list)

    @property
    def mean(self) -> FloatArray | None:
        return None if self.standardization is None else self.standardization.mean

    @property
    def std(self) -> FloatArray | None:
        return None if self.standardization is None else self.standardization.std

    def standardize(self, x: FloatArray) -> FloatArray:
        """Raw samples ``x`` as the nodes saw their data: the transformations they declared
        (:attr:`schema`), then the job's standardization, if any."""
        x = np.asarray(x, dtype=np.float64)
        if self.schema is not None:
            x = self.schema.prepare(x)
        return x if self.standardization is None else self.standardization.apply(x)


class Querier:
    """A querier's connection to the root; ``on_event`` sees every progress event.
    Without ``params`` it asks the root for the federation's parameter set."""

    def __init__(
        self,
        root_address: str,
        tls: TlsPaths,
        params: str | None = None,
        *,
        name: str = "querier",
        deadline_s: float = 600.0,
        on_event: Callable[[m.ProgressEvent], None] | None = None,
    ) -> None:
        self.name = name
        self.deadline_s = deadline_s
        self.on_event = on_event
        self._joint: JointPublicKey | None = None
        self.last_accepted: m.JobInfo | None = None
        self._channel = open_channel(root_address, tls)
        self._stub = query_pb2_grpc.RootStub(self._channel)  # type: ignore[no-untyped-call]
        try:
            self.ctx = Context(get_parameter_set(params or self._federation_params()))
        except BaseException:
            self._channel.close()
            raise
        self.keys = QuerierKeyPair.generate(self.ctx)

    def _federation_params(self) -> str:
        """The federation's parameter set, asked of the root (no need to repeat it)."""
        for reply in self._replies(m.JobRequest(new_job_id(), "", m.StatusJob())):
            if isinstance(reply, m.StatusResult) and reply.params:
                return reply.params
        raise ProtocolError("the root did not say which parameter set it uses")

    def submit(self, job_id: str, job: m.Job, expect: type[R]) -> R:
        """Run ``job`` on the root and wait for its result; progress goes to
        ``on_event``. If this querier's deadline passes first, the job goes on at the
        root: the error says how to follow it."""
        replies = self._replies(m.JobRequest(job_id, self.ctx.params.name, job))
        for reply in replies:
            if isinstance(reply, expect):
                return reply
            raise ProtocolError(f"expected {expect.__name__}, got {type(reply).__name__}")
        raise ProtocolError(f"the root ended job {job_id!r} without a result")

    def _replies(self, request: m.JobRequest) -> Iterator[m.JobResult]:
        """The results of ``request`` (events go to ``on_event``, acceptance is noted)."""
        accepted: m.JobInfo | None = None
        try:
            with rpc_errors("root"):
                frames = self._stub.Submit(job_request_frames(request), timeout=self.deadline_s)
                reader = FrameReader()
                for frame in frames:
                    done = reader.feed(frame)
                    if done is None:
                        continue
                    reply = read_job_reply(done[1])
                    if isinstance(reply, m.ProgressEvent):
                        if self.on_event is not None:
                            self.on_event(reply)
                    elif isinstance(reply, m.Accepted):
                        accepted = reply.job
                        self.last_accepted = accepted
                    else:
                        yield reply
        except PeerTimeout:
            if accepted is not None:
                raise PeerError(
                    "root",
                    f"stopped waiting after {self.deadline_s:.0f} s; job {accepted.job_id} goes "
                    f"on at the root: follow it with `phe-fl jobs watch {accepted.job_id}`",
                ) from None
            raise

    def detach(self, job_id: str, job: m.Job) -> m.JobInfo:
        """Submit ``job`` and return as soon as the root accepted it."""
        request = m.JobRequest(job_id, self.ctx.params.name, job, detach=True)
        for _ in self._replies(request):
            pass
        if self.last_accepted is None or self.last_accepted.job_id != job_id:
            raise ProtocolError(f"the root did not accept job {job_id!r}")
        return self.last_accepted

    def watch(self, job_id: str) -> tuple[m.JobResult | None, m.JobInfo]:
        """Re-attach to a job: its events (to ``on_event``), then its result (None if it
        failed or has none for this querier) and its final record."""
        request = m.JobRequest(new_job_id(), self.ctx.params.name, m.WatchJob(job_id))
        result: m.JobResult | None = None
        for reply in self._replies(request):
            if isinstance(reply, m.WatchResult):
                return result, reply.job
            result = reply
        raise ProtocolError(f"the root ended the watch of {job_id!r} without its record")

    def watch_info(self, job_id: str) -> m.JobInfo:
        """A job's record now (without following it)."""
        for info in self.jobs():
            if info.job_id == job_id:
                return info
        raise ProtocolError(f"no job {job_id!r} of querier {self.name!r} at the root")

    def jobs(self) -> list[m.JobInfo]:
        """This querier's jobs at the root."""
        return list(self.submit(new_job_id(), m.ListJobsJob(), m.ListJobsResult).jobs)

    def cancel(self, job_id: str) -> m.JobInfo:
        return self.submit(new_job_id(), m.CancelJob(job_id), m.CancelResult).job

    def models(self) -> list[m.ModelSummary]:
        return list(self.submit(new_job_id(), m.ListModelsJob(), m.ListModelsResult).models)

    def setup(self, job_id: str, rotations: Sequence[int] = ()) -> str:
        """Collective key generation across the federation; the key generation's job id
        (an interrupted one resumes under its own id)."""
        return self.submit(job_id, m.SetupJob(tuple(rotations)), m.SetupResult).keygen_job_id

    def status(self, job_id: str | None = None) -> m.StatusResult:
        """Which nodes are connected to the tree, and their key-generation state."""
        return self.submit(job_id or new_job_id(), m.StatusJob(), m.StatusResult)

    def stats(self, job_id: str, n_features: int) -> PooledStats:
        """Pooled statistics of every node's data; only this querier can read them."""
        job = m.StatsJob(self.keys.public_key.to_bytes(), n_features)
        result = self.submit(job_id, job, m.StatsResult)
        ct = self.ctx.ciphertext_from_bytes(result.encrypted_sums)
        values = self.keys.decrypt(ct, length=3 * n_features, decimals=6)
        d = n_features
        count = float(values[2 * d])
        mean = values[:d] / count
        return PooledStats(mean, values[d : 2 * d] / count - mean**2, round(count))

    def train(
        self,
        job_id: str,
        job: TrainingJob,
        *,
        standardize: bool = True,
        margin_check_every: int = 0,
    ) -> TrainingRun:
        """Train ``job`` across the federation. The model stays encrypted at the root
        under ``job_id``; what comes back is public: refreshes per iteration and the
        pooled standardization the nodes applied (queries go through it too)."""
        spec = m.TrainJob(job, standardize, margin_check_every)
        result = self.submit(job_id, spec, m.TrainResult)
        return TrainingRun(
            result.model_id,
            list(result.refreshes),
            result.standardization,
            result.schema,
            result.dp_epsilon,
            result.dp_delta,
        )

    def train_network(self, job_id: str, job: MLPJob, *, standardize: bool = True) -> TrainingRun:
        """Train the network ``job`` across the federation; its weights stay encrypted at
        the root under ``job_id``. ``refreshes`` counts the root's and the parties'."""
        result = self.submit(job_id, m.TrainNetworkJob(job, standardize), m.TrainNetworkResult)
        totals = [r + p for r, p in zip(result.root_refreshes, result.party_refreshes, strict=True)]
        return TrainingRun(
            result.model_id,
            totals,
            result.standardization,
            result.schema,
            party_refreshes=list(result.party_refreshes),
            map_rounds=list(result.map_rounds),
        )

    def fedavg(self, job_id: str, spec: FedAvgSpec) -> FedAvgModel:
        """Encrypted FedAvg with the app every node declares as ``spec.app``: each node
        trains locally, only the sum of every node's update is ever decrypted. The final
        model comes back unless the root's policy keeps it (``parameters`` None)."""
        result = self.submit(job_id, m.FedAvgJob(spec), m.FedAvgResult)
        layout = Layout(result.tensors)
        values = None
        if result.parameters:
            values = np.frombuffer(result.parameters, dtype="<f4").astype(np.float32)
            if values.size != layout.size:
                raise ProtocolError(
                    f"the root sent {values.size} parameters for a model of {layout.size}"
                )
        return FedAvgModel(
            result.model_id, layout, values, result.rounds, result.dp_epsilon, result.dp_delta
        )

    def model_info(self, job_id: str, model_id: str) -> tuple[TrainingRun, TrainingJob | MLPJob]:
        """A trained model's public description (its job, a GLM's or a network's, and
        standardization), so that a querier that did not train it can send queries."""
        info = self.submit(job_id, m.ModelInfoJob(model_id), m.ModelInfoResult)
        run = TrainingRun(model_id, list(info.refreshes), info.standardization, info.schema)
        spec = info.spec if info.spec is not None else info.network
        if spec is None:
            raise ProtocolError(f"the root described model {model_id!r} without its job")
        return run, spec

    def model_weights(self, job_id: str, model_id: str) -> FloatArray:
        """A GLM in the clear: refused unless every node's policy allows it."""
        return self.submit(job_id, m.ModelWeightsJob(model_id), m.ModelWeightsResult).weights

    def network_weights(self, job_id: str, model_id: str) -> list[FloatArray]:
        """A network's ``W_1 .. W_L`` in the clear (bias column last): refused unless
        every node's policy allows it."""
        result = self.submit(job_id, m.ModelWeightsJob(model_id), m.ModelWeightsResult)
        if not result.layers:
            raise ProtocolError(f"model {model_id!r} is not a network (no layers came back)")
        return [layer.array() for layer in result.layers]

    def predict(
        self,
        job_id: str,
        run: TrainingRun,
        job: TrainingJob | MLPJob,
        x: FloatArray,
        *,
        on_rows: Callable[[int, int], None] | None = None,
    ) -> FloatArray:
        """Scores of the trained model ``run`` on ``x``: the samples leave this process
        encrypted under the joint key and come back switched to this querier's key.

        Any number of rows: they go in jobs of at most :data:`QUERIES_PER_JOB` ciphertexts
        (``job_id``, then ``job_id-2``, ...), so the querier and the root hold one job's
        ciphertexts at a time; ``on_rows(done, total)`` follows them."""
        x = run.standardize(np.atleast_2d(np.asarray(x, dtype=np.float64)))
        if self._joint is None:
            self._joint = self.joint_key(f"{job_id}-key")
        rows = job.layout.samples_per_ct * QUERIES_PER_JOB
        scores = []
        for part, start in enumerate(range(0, len(x), rows)):
            chunk = x[start : start + rows]
            scores.append(
                self._predict_chunk(job_id if not part else f"{job_id}-{part + 1}", run, job, chunk)
            )
            if on_rows is not None:
                on_rows(start + len(chunk), len(x))
        return np.concatenate(scores)

    def _predict_chunk(
        self, job_id: str, run: TrainingRun, job: TrainingJob | MLPJob, x: FloatArray
    ) -> FloatArray:
        from phe_fl.ml.glm import decode_scores, encrypt_queries
        from phe_fl.ml.mlp import decode_mlp_scores, encrypt_mlp_queries, prediction_levels

        joint = self._joint
        assert joint is not None
        if isinstance(job, MLPJob):
            level = self.ctx.params.mult_depth - prediction_levels(job)  # no tower it won't use
            queries = encrypt_mlp_queries(job, lambda v: self.ctx.encrypt(v, joint, level=level), x)
        else:
            queries = encrypt_queries(job, self.ctx, x, joint)
        request = m.PredictJob(
            run.model_id,
            self.keys.public_key.to_bytes(),
            tuple(q.to_bytes() for q in queries),
            len(x) if isinstance(job, MLPJob) else 0,
        )
        del queries
        result = self.submit(job_id, request, m.PredictResult)
        if isinstance(job, MLPJob):
            cts = [self.ctx.ciphertext_from_bytes(s) for s in result.scores]
            return decode_mlp_scores(job, self.keys, cts, len(x))
        slots = [
            self.keys.decrypt(self.ctx.ciphertext_from_bytes(s), decimals=8) for s in result.scores
        ]
        return decode_scores(job, slots, len(x))

    def joint_key(self, job_id: str) -> JointPublicKey:
        """The collective public key, to encrypt queries under."""
        key = self.submit(job_id, m.JointKeyJob(), m.JointKeyResult).key
        return JointPublicKey.from_bytes(self.ctx, key)

    def close(self) -> None:
        self._channel.close()
