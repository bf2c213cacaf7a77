"""What only the root does: run a querier's jobs over the tree.

Each job kind has one handler in :data:`HANDLERS`; every handler is a sequence of rounds,
each round one tree step asked of the whole tree through the root's own
:class:`~phe_fl.federation.subtree.Subtree` (its own contribution included), reported to
the querier as a typed :class:`~phe_fl.federation.messages.ProgressEvent`. Whether a job
may run at all is decided by the root's policy, its federation-keys machine (by job
kind) and the job registry (each job id runs once).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from phe_fl.errors import JobStateError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.policy import decide_job
from phe_fl.federation.serde import JOB_NAMES
from phe_fl.federation.state import FEDERATION_KEYS, JOB, Tracker
from phe_fl.federation.subtree import Subtree
from phe_fl.mhe import (
    Ciphertext,
    Context,
    PublicKeyGen,
    QuerierPublicKey,
    QueryKeySwitch,
    Refresh,
    RelinKeyGen,
    RotationKeyGen,
    ThresholdDecrypt,
)
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import EncryptedModel, GLMTrainer, IterationReport, MapRequest
from phe_fl.ml.datasets import pooled_mean_std

__all__ = ["Coordinator", "TreeFederation", "Emit", "HANDLERS"]

Emit = Callable[[m.ProgressEvent], None]


class Coordinator:
    """The root's job runner; ``deadline_s`` bounds every round over the tree."""

    def __init__(self, tree: Subtree, *, deadline_s: float = 600.0) -> None:
        self.tree = tree
        self.member = tree.member
        self.deadline_s = deadline_s
        self.keys = Tracker(FEDERATION_KEYS, "of the federation")
        self.keygen_job: str | None = None
        self.models: dict[str, EncryptedModel] = {}
        self.standardizations: dict[str, m.Standardization | None] = {}
        self._jobs: dict[str, Tracker] = {}
        self._lock = threading.Lock()

    @property
    def ctx(self) -> Context:
        return self.member.ctx

    @property
    def id(self) -> str:
        return self.member.id

    def run(self, request: m.JobRequest, querier: str, emit: Emit) -> m.JobResult:
        """Run one job for ``querier`` (already authenticated by its certificate)."""
        kind = JOB_NAMES[type(request.job)]
        decide_job(self.id, self.member.config.policy, request.job_id, request.job, querier)
        if request.params != self.member.params.name:
            raise ProtocolError(
                f"the querier uses parameter set {request.params!r}, this federation "
                f"{self.member.params.name!r}"
            )
        if kind != "setup":
            self.keys.check(kind)
        job = self._register(request.job_id)
        try:
            result = HANDLERS[type(request.job)](self, request.job_id, request.job, querier, emit)
        except BaseException:
            job.advance("fail")
            raise
        job.advance("succeed")
        return result  # type: ignore[no-any-return]

    def _register(self, job_id: str) -> Tracker:
        with self._lock:
            tracker = self._jobs.get(job_id) or Tracker(JOB, repr(job_id))
            tracker.advance("submit")  # refused for a job id that ran already
            self._jobs[job_id] = tracker
            return tracker

    # -- rounds over the tree ---------------------------------------------------------------
    def round(self, job_id: str, step: m.TreeStep, emit: Emit, stage: m.Stage, **event: Any) -> Any:
        """Ask the whole tree for ``step``; report it as ``stage``; return the result."""
        request = m.TreeRequest(
            job_id, self.member.params.name, self.member.config.n_parties, step, self.deadline_s
        )
        t = time.perf_counter()
        response = self.tree.contribute(request, self.id)
        emit(m.ProgressEvent(stage, time.perf_counter() - t, nodes=response.stats, **event))
        return response.result

    def install(self, job_id: str, step: m.TreeStep, emit: Emit) -> None:
        """Push public key material down the tree; every node installs it."""
        self.round(job_id, step, emit, m.Stage.INSTALL_KEYS)

    def switch_to_querier(
        self,
        job_id: str,
        ct: Ciphertext,
        querier: str,
        querier_key: bytes,
        purpose: m.Purpose,
        emit: Emit,
        **event: Any,
    ) -> Ciphertext:
        """``ct`` switched to the querier's key by every node (each checks its policy)."""
        proto = QueryKeySwitch(self.ctx, QuerierPublicKey.from_bytes(self.ctx, querier_key))
        step = m.KeySwitchRequest(purpose, querier, querier_key, ct.to_bytes())
        result = self.round(job_id, step, emit, m.Stage.KEY_SWITCH, **event)
        return proto.finalize(proto.share_from_bytes(result.share), ct)

    def refresh(self, job_id: str, ct: Ciphertext, emit: Emit, **event: Any) -> Ciphertext:
        """Bootstrap ``ct`` with every node: the root prepares it and samples the CRP."""
        proto = Refresh(self.ctx)
        prepared = proto.prepare(ct)
        joint = self.member.require_joint_key()
        crp = proto.gen_crp(joint)
        step = m.RefreshShareRequest(prepared.to_bytes(), crp.to_bytes())
        result = self.round(job_id, step, emit, m.Stage.REFRESH, **event)
        return proto.finalize(proto.share_from_bytes(result.share), prepared, crp, joint)

    def ensure_rotations(self, job_id: str, needed: Sequence[int], emit: Emit) -> None:
        """Generate (collectively) rotation keys for every step in ``needed`` not yet
        there; a new set replaces the old one everywhere, so it covers the union."""
        keys = self.member.rotation_keys
        have = set(keys.indices) if keys is not None else set()
        if set(needed) <= have:
            return
        gen = RotationKeyGen(self.member.require_joint_key(), sorted(have | set(needed)))
        crp = self.member.require_party().rotation_crp(gen)
        step = m.RotationKeysShareRequest(crp.to_bytes(), tuple(gen.indices))
        result = self.round(job_id, step, emit, m.Stage.KEYGEN_ROTATION_KEYS)
        keys_bytes = gen.finalize(gen.share_from_bytes(result.share)).to_bytes()
        self.install(job_id, m.InstallRotationKeysRequest(keys_bytes), emit)

    def model(self, model_id: str) -> EncryptedModel:
        model = self.models.get(model_id)
        if model is None:
            raise JobStateError(f"no trained model {model_id!r} at the root")
        return model


# -- the jobs ------------------------------------------------------------------------------------
def _setup(c: Coordinator, job_id: str, job: m.SetupJob, querier: str, emit: Emit) -> m.SetupResult:
    """Collective public, relinearization and rotation keys, installed on every node. An
    interrupted key generation resumes under its own job id: every node answers the
    steps it already did from its cache, and no CRP is ever sampled twice."""
    with c._lock:
        resuming = c.keys.state == "interrupted"
        c.keys.advance("setup")  # refused while one runs or once keys exist
        if resuming:
            emit(m.ProgressEvent(m.Stage.KEYGEN_RESUMED))
        else:
            c.keygen_job = job_id
    keygen = c.keygen_job or job_id
    try:
        _generate_keys(c, keygen, job.rotations, emit)
    except BaseException:
        c.keys.advance("interrupt")
        raise
    c.keys.advance("complete")
    emit(m.ProgressEvent(m.Stage.KEYGEN_DONE))
    return m.SetupResult(keygen)


def _generate_keys(c: Coordinator, job_id: str, rotations: Sequence[int], emit: Emit) -> None:
    pkg = PublicKeyGen(c.ctx)
    crp = c.member.lead_public_key()
    result = c.round(
        job_id, m.PublicKeyShareRequest(crp.to_bytes()), emit, m.Stage.KEYGEN_PUBLIC_KEY
    )
    joint = pkg.finalize(pkg.share_from_bytes(result.share))
    c.install(job_id, m.InstallJointKeyRequest(joint.to_bytes()), emit)

    relin = RelinKeyGen(joint)
    party = c.member.require_party()
    r_crp = party.relin_crp(relin)
    one = c.round(
        job_id, m.RelinRoundOneRequest(r_crp.to_bytes()), emit, m.Stage.KEYGEN_RELIN_ROUND_ONE
    )
    two = c.round(job_id, m.RelinRoundTwoRequest(one.share), emit, m.Stage.KEYGEN_RELIN_ROUND_TWO)
    relin_key = relin.finalize(relin.round2_share_from_bytes(two.share))
    c.install(job_id, m.InstallRelinKeyRequest(relin_key.to_bytes()), emit)
    if rotations:
        c.ensure_rotations(job_id, rotations, emit)


def _stats(c: Coordinator, job_id: str, job: m.StatsJob, querier: str, emit: Emit) -> m.StatsResult:
    """Pooled [sum x | sum x^2 | count] of all nodes' data, switched to the querier's key."""
    result = c.round(job_id, m.StatisticsRequest(), emit, m.Stage.STATISTICS)
    total = c.ctx.ciphertext_from_bytes(result.encrypted_sums)
    purpose = m.Purpose.POOLED_STATISTICS
    switched = c.switch_to_querier(job_id, total, querier, job.querier_key, purpose, emit)
    return m.StatsResult(switched.to_bytes())


def _pooled_standardization(c: Coordinator, job_id: str, emit: Emit) -> m.Standardization:
    """PREPARE: pooled per-feature mean and standard deviation from encrypted per-node
    sums, threshold-decrypted at the root with every node's ``release_statistics``."""
    result = c.round(job_id, m.StatisticsRequest(), emit, m.Stage.PREPARE_STATISTICS)
    total = c.ctx.ciphertext_from_bytes(result.encrypted_sums)
    step = m.DecryptStatisticsRequest(total.to_bytes())
    share = c.round(job_id, step, emit, m.Stage.PREPARE_DECRYPT).share
    proto = ThresholdDecrypt(c.ctx)
    d = c.member.X.shape[1]
    values = proto.finalize(proto.share_from_bytes(share), total, length=3 * d, decimals=8)
    mean, std = pooled_mean_std(values[2 * d], values[:d], values[d : 2 * d])
    return m.Standardization(mean, std)


def _train(c: Coordinator, job_id: str, job: m.TrainJob, querier: str, emit: Emit) -> m.TrainResult:
    """Train ``job.spec`` on every node's data (standardized with pooled statistics
    unless told otherwise); the model stays encrypted at the root under ``job_id``."""
    spec = job.spec
    if spec.params != c.member.params.name:
        raise ProtocolError(f"job uses {spec.params!r}, this federation {c.member.params.name!r}")
    standardization = _pooled_standardization(c, job_id, emit) if job.standardize else None
    step = m.PrepareTrainingRequest(spec, standardization)
    global_batch = c.round(job_id, step, emit, m.Stage.VALIDATE_SHARDS).global_batch
    c.ensure_rotations(job_id, spec.rotation_indices(), emit)
    fed = TreeFederation(c, job_id, global_batch, emit, iterations=spec.iterations)

    def progress(report: IterationReport) -> None:
        fed.iteration = report.iteration + 2  # a refresh before the next MAP belongs to it
        summary = m.IterationSummary(
            refreshes=report.refreshes,
            levels_left=report.levels_left_after,
            levels_sent=report.levels_left_before,
            levels_dropped=report.levels_dropped,
        )
        emit(
            m.ProgressEvent(
                m.Stage.ITERATION_DONE,
                report.seconds,
                iteration=report.iteration + 1,
                iterations=spec.iterations,
                summary=summary,
            )
        )

    model = GLMTrainer(spec, fed).train(on_iteration=progress)
    c.models[job_id] = model
    c.standardizations[job_id] = standardization
    return m.TrainResult(job_id, tuple(model.refreshes_per_iteration), standardization)


def _model_weights(
    c: Coordinator, job_id: str, job: m.ModelWeightsJob, querier: str, emit: Emit
) -> m.ModelWeightsResult:
    """Threshold-decrypt a trained model: every node's policy must allow it."""
    model = c.model(job.model_id)
    fed = TreeFederation(c, job.model_id, 0, emit, decrypt_job=job_id)
    layout = model.job.layout
    slots = fed.decrypt_if_agreed(model.weights, length=layout.block)
    return m.ModelWeightsResult(layout.weights_from_slots(slots))


def _model_info(
    c: Coordinator, job_id: str, job: m.ModelInfoJob, querier: str, emit: Emit
) -> m.ModelInfoResult:
    model = c.model(job.model_id)
    return m.ModelInfoResult(
        model.job, tuple(model.refreshes_per_iteration), c.standardizations.get(job.model_id)
    )


def _predict(
    c: Coordinator, job_id: str, job: m.PredictJob, querier: str, emit: Emit
) -> m.PredictResult:
    """Evaluate a trained, still-encrypted model on a querier's encrypted samples and
    switch each result to the querier's key; every node checks its policy for the
    querier before contributing its key-switch share."""
    from phe_fl.ml.prediction import evaluate, prediction_depth

    model = c.model(job.model_id)
    if not job.queries:
        raise ProtocolError("a predict job needs at least one encrypted query")
    QuerierPublicKey.from_bytes(c.ctx, job.querier_key)  # refuse a bad key before any work
    cts = [c.ctx.ciphertext_from_bytes(q) for q in job.queries]
    weights = model.weights
    if weights.levels_left < prediction_depth(model.job) + c.member.params.refresh_min_levels:
        weights = c.refresh(job_id, weights, emit)
        model.weights = weights  # later queries reuse the refreshed model
    t = time.perf_counter()
    results = evaluate(model.job, c.ctx, weights, cts)
    emit(m.ProgressEvent(m.Stage.EVALUATE, time.perf_counter() - t, count=len(cts)))
    purpose = m.Purpose.PREDICTION
    scores = [
        c.switch_to_querier(
            job_id, ct, querier, job.querier_key, purpose, emit, index=i + 1, count=len(results)
        ).to_bytes()
        for i, ct in enumerate(results)
    ]
    return m.PredictResult(tuple(scores))


def _joint_key(
    c: Coordinator, job_id: str, job: m.JointKeyJob, querier: str, emit: Emit
) -> m.JointKeyResult:
    return m.JointKeyResult(c.member.require_joint_key().to_bytes())


STATUS_DEADLINE_S = 5.0


def _status(
    c: Coordinator, job_id: str, job: m.StatusJob, querier: str, emit: Emit
) -> m.StatusResult:
    """Ping the tree: who is connected, in which key-generation state."""
    request = m.TreeRequest(
        job_id, c.member.params.name, c.member.config.n_parties, m.PingRequest(), STATUS_DEADLINE_S
    )
    result = c.tree.contribute(request, c.id).result
    assert isinstance(result, m.PingResponse)
    nodes = result.nodes
    missing = tuple(n.node_id for n in nodes if n.key_state == "disconnected")
    return m.StatusResult(tuple(n for n in nodes if n.key_state != "disconnected"), missing)


HANDLERS: dict[type[Any], Callable[..., Any]] = {
    m.SetupJob: _setup,
    m.StatsJob: _stats,
    m.TrainJob: _train,
    m.ModelWeightsJob: _model_weights,
    m.ModelInfoJob: _model_info,
    m.PredictJob: _predict,
    m.JointKeyJob: _joint_key,
    m.StatusJob: _status,
}
"""One handler per job kind (the kinds of query.proto's JobRequest)."""


# -- training over the tree ----------------------------------------------------------------------
class TreeFederation:
    """:class:`phe_fl.ml.Federation` over the node tree: MAP and COMBINE happen in one
    round (each inner node adds its subtree's gradients on the way up)."""

    def __init__(
        self,
        coordinator: Coordinator,
        job_id: str,
        global_batch: int,
        emit: Emit,
        *,
        iterations: int = 0,
        decrypt_job: str | None = None,
    ) -> None:
        self.c = coordinator
        self.job_id = job_id
        self._global_batch = global_batch
        self.emit = emit
        self.iterations = iterations
        self.iteration = 1  # the iteration under way, 1-based (its refreshes report it)
        self.decrypt_job = decrypt_job or job_id

    @property
    def ctx(self) -> Context:
        return self.c.ctx

    @property
    def n_parties(self) -> int:
        return self.c.member.config.n_parties

    def encrypt(self, values: FloatArray) -> Ciphertext:
        return self.ctx.encrypt(values, self.c.member.require_joint_key())

    def global_batch(self, iteration: int) -> int:
        return self._global_batch

    def map(self, request: MapRequest) -> list[Ciphertext]:
        self.iteration = request.iteration + 1
        step = m.GradientRequest(
            request.iteration, request.global_batch, request.weights.to_bytes()
        )
        result = self.c.round(
            self.job_id,
            step,
            self.emit,
            m.Stage.MAP_COMBINE,
            iteration=self.iteration,
            iterations=self.iterations,
        )
        return [self.ctx.ciphertext_from_bytes(result.gradient)]

    def aggregate(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        return self.ctx.sum(cts)

    def refresh(self, ct: Ciphertext) -> Ciphertext:
        return self.c.refresh(
            self.job_id, ct, self.emit, iteration=self.iteration, iterations=self.iterations
        )

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray:
        step = m.DecryptModelRequest(self.job_id, ct.to_bytes())
        share = self.c.round(self.decrypt_job, step, self.emit, m.Stage.MODEL_DECRYPTION).share
        proto = ThresholdDecrypt(self.ctx)
        return proto.finalize(proto.share_from_bytes(share), ct, length=length)
