"""Jobs the root runs over the tree: collective key generation, and pooled feature
statistics released to a querier. Each job is a fixed sequence of protocol steps; each
step is one round trip down and up the tree (``Node.fan_out``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from phe_fl.errors import JobStateError
from phe_fl.federation.node import Node
from phe_fl.federation.serde import Event, NodeStats, Step
from phe_fl.mhe import (
    Party,
    PublicKeyGen,
    QuerierPublicKey,
    QueryKeySwitch,
    RelinKeyGen,
    RotationKeyGen,
)

__all__ = ["run_setup", "run_stats"]

Emit = Callable[[Event], None]


def _step(node: Node, job_id: str, name: str, payloads: dict[str, bytes], **labels: str) -> Step:
    return Step(job_id, name, node.params.name, node.config.n_parties, payloads, dict(labels))


def _report(emit: Emit, phase: str, seconds: float, stats: Sequence[NodeStats]) -> None:
    slowest = max(stats, key=lambda s: s.seconds) if stats else None
    sent = sum(s.bytes_sent for s in stats)
    detail = f"; slowest node {slowest.node_id} {slowest.seconds:.2f} s" if slowest else ""
    emit(Event(phase, f"{len(stats)} nodes, {sent / 1e6:.1f} MB up the tree{detail}", seconds))
    for s in stats:
        emit(
            Event(
                f"{phase}/node",
                f"{s.node_id}: {s.seconds:.2f} s, {s.bytes_sent} bytes",
                s.seconds,
                s.node_id,
                s.bytes_sent,
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


def run_stats(node: Node, job_id: str, querier: str, querier_key: bytes, emit: Emit) -> bytes:
    """Pooled [sum x | sum x^2 | count] of all nodes' data, switched to the querier's key."""
    qpk = QuerierPublicKey.from_bytes(node.ctx, querier_key)
    total = node.ctx.ciphertext_from_bytes(
        _timed(node, _step(node, job_id, "stats", {}), emit, "encrypted local statistics")
    )
    step = _step(
        node,
        job_id,
        "keyswitch",
        {"ct": total.to_bytes(), "querier_key": querier_key},
        querier=querier,
    )
    proto = QueryKeySwitch(node.ctx, qpk)
    result = proto.finalize(proto.share_from_bytes(_timed(node, step, emit, "key switch")), total)
    return result.to_bytes()
