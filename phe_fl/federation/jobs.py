"""Jobs the root runs over the tree: collective key generation, and pooled feature
statistics released to a querier. Each job is a fixed sequence of protocol steps; each
step is one round trip down and up the tree (``Node.fan_out``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np

from phe_fl.errors import JobStateError
from phe_fl.federation.node import Count, Node, job_to_json
from phe_fl.federation.serde import Event, NodeStats, Step, floats_to_bytes
from phe_fl.mhe import (
    Ciphertext,
    Context,
    Party,
    PublicKeyGen,
    QuerierPublicKey,
    QueryKeySwitch,
    Refresh,
    RelinKeyGen,
    RotationKeyGen,
    ThresholdDecrypt,
)
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import EncryptedModel, GLMTrainer, IterationReport, MapRequest, TrainingJob
from phe_fl.ml.datasets import pooled_mean_std

__all__ = [
    "run_setup",
    "run_stats",
    "run_train",
    "TreeFederation",
    "collective_refresh",
    "ensure_rotations",
    "decrypt_model_weights",
    "run_predict",
]

Emit = Callable[[Event], None]


def _step(node: Node, job_id: str, name: str, payloads: dict[str, bytes], **labels: str) -> Step:
    return Step(job_id, name, node.params.name, node.config.n_parties, payloads, dict(labels))


def _report(emit: Emit, phase: str, seconds: float, stats: Sequence[NodeStats]) -> None:
    """One event for the phase, then one per node carrying that node's own stats."""
    slowest = max(stats, key=lambda s: s.seconds) if stats else None
    sent = sum(s.bytes_sent for s in stats)
    down = sum(s.bytes_to_children for s in stats)
    detail = f"; slowest node {slowest.node_id} {slowest.seconds:.2f} s" if slowest else ""
    emit(
        Event(
            phase,
            f"{len(stats)} nodes, {sent / 1e6:.1f} MB up and {down / 1e6:.1f} MB down the "
            f"tree{detail}",
            seconds,
        )
    )
    for s in stats:
        emit(
            Event(
                f"{phase}/node",
                f"{s.node_id}: {s.seconds:.2f} s own, {s.combine_seconds:.3f} s combine, "
                f"{s.bytes_sent} bytes sent up, {s.bytes_received} received",
                s.seconds,
                s.node_id,
                s.bytes_sent,
                s,
            )
        )


def _timed(node: Node, step: Step, emit: Emit, phase: str) -> bytes:
    t = time.perf_counter()
    received = node.fan_out(step)
    _report(emit, phase, time.perf_counter() - t, received.stats)
    return received.step.payload("share")


def run_setup(node: Node, job_id: str, rotations: Sequence[int], emit: Emit) -> None:
    """Collective public, relinearization and rotation keys, installed on every node."""
    if not node.config.is_root:
        raise JobStateError("only the root (party 0) leads key generation")
    if node.setup_complete:
        raise JobStateError("this federation already has its collective keys")
    ctx = node.ctx
    pkg = PublicKeyGen(ctx)
    if node.party is None:
        secret, crp = pkg.gen_crp(node.config.n_parties)
        node.party = Party(secret)
        node.lead_crp["pk"] = crp
        node.setup_job = job_id
    else:
        # An interrupted key generation resumes under its own job id: every node answers
        # the steps it already did from its cache, and no CRP is ever sampled twice.
        job_id = node.setup_job or job_id
        emit(Event("setup", f"resuming interrupted key generation {job_id}"))
    crp_bytes = node.lead_crp["pk"].to_bytes()
    agg = _timed(node, _step(node, job_id, "pk", {"crp": crp_bytes}), emit, "public key")
    joint = pkg.finalize(pkg.share_from_bytes(agg))
    node.broadcast(_step(node, job_id, "joint_key", {"key": joint.to_bytes()}))

    relin = RelinKeyGen(joint)
    r_crp = node.party.relin_crp(relin)
    round1 = _timed(
        node, _step(node, job_id, "relin1", {"crp": r_crp.to_bytes()}), emit, "relin round 1"
    )
    round2 = _timed(node, _step(node, job_id, "relin2", {"round1": round1}), emit, "relin round 2")
    relin_key = relin.finalize(relin.round2_share_from_bytes(round2))
    node.broadcast(_step(node, job_id, "relin_key", {"key": relin_key.to_bytes()}))

    if rotations:
        gen = RotationKeyGen(joint, rotations)
        rot_crp = node.party.rotation_crp(gen)
        labels = {"rotations": ",".join(str(i) for i in gen.indices)}
        step = _step(node, job_id, "rotations", {"crp": rot_crp.to_bytes()}, **labels)
        keys = gen.finalize(gen.share_from_bytes(_timed(node, step, emit, "rotation keys")))
        node.broadcast(_step(node, job_id, "rotation_keys", {"key": keys.to_bytes()}))
    node.setup_complete = True
    emit(Event("setup", "collective keys installed on every node"))


def switch_to_querier(
    node: Node,
    job_id: str,
    ct: Ciphertext,
    querier: str,
    querier_key: QuerierPublicKey,
    emit: Emit,
    phase: str,
) -> Ciphertext:
    """``ct`` switched to the querier's key by every node (each checks its policy)."""
    step = _step(
        node,
        job_id,
        "keyswitch",
        {"ct": ct.to_bytes(), "querier_key": querier_key.to_bytes()},
        querier=querier,
    )
    proto = QueryKeySwitch(node.ctx, querier_key)
    return proto.finalize(proto.share_from_bytes(_timed(node, step, emit, phase)), ct)


def run_stats(node: Node, job_id: str, querier: str, querier_key: bytes, emit: Emit) -> bytes:
    """Pooled [sum x | sum x^2 | count] of all nodes' data, switched to the querier's key."""
    qpk = QuerierPublicKey.from_bytes(node.ctx, querier_key)
    total = node.ctx.ciphertext_from_bytes(
        _timed(node, _step(node, job_id, "stats", {}), emit, "encrypted local statistics")
    )
    return switch_to_querier(node, job_id, total, querier, qpk, emit, "key switch").to_bytes()


# -- training ---------------------------------------------------------------------------------
class TreeFederation:
    """:class:`phe_fl.ml.Federation` over the node tree: MAP and COMBINE happen in one
    round trip (each inner node adds its subtree's gradients on the way up)."""

    def __init__(self, node: Node, job_id: str, global_batch: int, emit: Emit) -> None:
        self.node = node
        self.job_id = job_id
        self._global_batch = global_batch
        self.emit = emit

    @property
    def ctx(self) -> Context:
        return self.node.ctx

    @property
    def n_parties(self) -> int:
        return self.node.config.n_parties

    def encrypt(self, values: FloatArray) -> Ciphertext:
        return self.ctx.encrypt(values, self.node.require_joint_key())

    def global_batch(self, iteration: int) -> int:
        return self._global_batch

    def map(self, request: MapRequest) -> list[Ciphertext]:
        labels = {"iteration": str(request.iteration), "global_batch": str(request.global_batch)}
        step = _step(
            self.node, self.job_id, "map", {"weights": request.weights.to_bytes()}, **labels
        )
        data = _timed(self.node, step, self.emit, f"iteration {request.iteration + 1}: MAP+COMBINE")
        return [self.ctx.ciphertext_from_bytes(data)]

    def aggregate(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        return self.ctx.sum(cts)

    def refresh(self, ct: Ciphertext) -> Ciphertext:
        return collective_refresh(self.node, self.job_id, ct, self.emit)

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray:
        proto = ThresholdDecrypt(self.ctx)
        step = _step(self.node, self.job_id, "decrypt", {"ct": ct.to_bytes()}, purpose="model")
        share = proto.share_from_bytes(_timed(self.node, step, self.emit, "model decryption"))
        return proto.finalize(share, ct, length=length)


def collective_refresh(node: Node, job_id: str, ct: Ciphertext, emit: Emit) -> Ciphertext:
    """Bootstrap ``ct`` with every node: the root prepares it and samples the CRP."""
    proto = Refresh(node.ctx)
    prepared = proto.prepare(ct)
    crp = proto.gen_crp(node.require_joint_key())
    step = _step(node, job_id, "refresh", {"ct": prepared.to_bytes(), "crp": crp.to_bytes()})
    share = proto.share_from_bytes(_timed(node, step, emit, "collective refresh"))
    return proto.finalize(share, prepared, crp, node.require_joint_key())


def ensure_rotations(node: Node, job_id: str, needed: Sequence[int], emit: Emit) -> None:
    """Generate (collectively) rotation keys for every step in ``needed`` not yet there;
    a new set replaces the old one everywhere, so it covers the union."""
    have = set(node.rotation_keys.indices) if node.rotation_keys is not None else set()
    if set(needed) <= have:
        return
    party = node.require_party()
    gen = RotationKeyGen(node.require_joint_key(), sorted(have | set(needed)))
    crp = party.rotation_crp(gen)
    labels = {"rotations": ",".join(str(i) for i in gen.indices)}
    step = _step(node, job_id, "rotations", {"crp": crp.to_bytes()}, **labels)
    keys = gen.finalize(gen.share_from_bytes(_timed(node, step, emit, "rotation keys")))
    node.broadcast(_step(node, job_id, "rotation_keys", {"key": keys.to_bytes()}))


def pooled_standardization(node: Node, job_id: str, emit: Emit) -> tuple[FloatArray, FloatArray]:
    """PREPARE: pooled per-feature mean and standard deviation from encrypted per-node
    sums, threshold-decrypted at the root with every node's ``release_statistics``."""
    total = node.ctx.ciphertext_from_bytes(
        _timed(node, _step(node, job_id, "stats", {}), emit, "PREPARE: encrypted statistics")
    )
    proto = ThresholdDecrypt(node.ctx)
    step = _step(node, job_id, "decrypt", {"ct": total.to_bytes()}, purpose="statistics")
    share = proto.share_from_bytes(_timed(node, step, emit, "PREPARE: decrypt pooled statistics"))
    d = node.X.shape[1]
    values = proto.finalize(share, total, length=3 * d, decimals=8)
    return pooled_mean_std(values[2 * d], values[:d], values[d : 2 * d])


def run_train(
    node: Node, job_id: str, job: TrainingJob, emit: Emit, *, standardize: bool = True
) -> EncryptedModel:
    """Train ``job`` on every node's data (standardized with pooled statistics unless told
    otherwise); the model stays encrypted at the root."""
    if not node.setup_complete:
        raise JobStateError("run key generation (the setup job) before training")
    job_json = job_to_json(job)
    payloads: dict[str, bytes] = {}
    if standardize:
        mean, std = pooled_standardization(node, job_id, emit)
        payloads["standardize"] = floats_to_bytes(np.concatenate([mean, std]))
        node.standardizations[job_id] = (mean, std)
    prepare = _step(node, job_id, "train_prepare", payloads, job=job_json)
    global_batch = Count.from_bytes(_timed(node, prepare, emit, "validate shards")).value
    ensure_rotations(node, job_id, job.rotation_indices(), emit)
    fed = TreeFederation(node, job_id, global_batch, emit)

    def progress(report: IterationReport) -> None:
        # the weights go down the tree at the lowest level that keeps the refresh
        # schedule (GLMTrainer.broadcast_levels); the root keeps its own copy at its level
        emit(
            Event(
                "iteration",
                f"{report.iteration + 1}/{job.iterations}: {report.refreshes} refresh(es), "
                f"levels left {report.levels_left_after}; weights sent down with "
                f"{report.levels_left_before} levels ({report.levels_dropped} dropped)",
                report.seconds,
            )
        )

    model = GLMTrainer(job, fed).train(on_iteration=progress)
    node.models[job_id] = model
    return model


def decrypt_model_weights(node: Node, model_id: str, emit: Emit) -> FloatArray:
    """Threshold-decrypt a trained model: every node's policy must allow it."""
    model = node.models.get(model_id)
    if model is None:
        raise JobStateError(f"no trained model {model_id!r} at the root")
    fed = TreeFederation(node, model_id, 0, emit)
    layout = model.job.layout
    slots = fed.decrypt_if_agreed(model.weights, length=layout.block)
    return layout.weights_from_slots(slots)


# -- oblivious prediction -----------------------------------------------------------------------
def run_predict(
    node: Node,
    job_id: str,
    model_id: str,
    queries: Sequence[bytes],
    querier: str,
    querier_key: bytes,
    emit: Emit,
) -> list[bytes]:
    """Evaluate a trained, still-encrypted model on a querier's encrypted samples and
    switch each result to the querier's key; every node checks its policy for the
    querier before contributing its key-switch share."""
    from phe_fl.ml.prediction import evaluate, prediction_depth

    model = node.models.get(model_id)
    if model is None:
        raise JobStateError(f"no trained model {model_id!r} at the root")
    qpk = QuerierPublicKey.from_bytes(node.ctx, querier_key)
    cts = [node.ctx.ciphertext_from_bytes(q) for q in queries]
    weights = model.weights
    if weights.levels_left < prediction_depth(model.job) + node.params.refresh_min_levels:
        weights = collective_refresh(node, job_id, weights, emit)
        model.weights = weights  # later queries reuse the refreshed model
    t = time.perf_counter()
    results = evaluate(model.job, node.ctx, weights, cts)
    emit(Event("evaluate", f"{len(cts)} encrypted query ciphertext(s)", time.perf_counter() - t))
    return [
        switch_to_querier(
            node, job_id, ct, querier, qpk, emit, f"key switch {i + 1}/{len(results)}"
        ).to_bytes()
        for i, ct in enumerate(results)
    ]
