"""A data provider node's domain logic, free of gRPC: it answers protocol steps for its
subtree (its own share aggregated with its children's) and installs public material.

The servicer translates frames to :class:`Step` and errors to status codes; the
transport reaches the children. Every answer is cached per (job, step, payload digest),
so a parent's retry gets the same bytes and no share is ever regenerated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import struct
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from phe_fl.errors import JobStateError, ParameterError, PolicyError, ProtocolError
from phe_fl.federation.config import NodeConfig
from phe_fl.federation.data import load_local_data
from phe_fl.federation.serde import NodeStats, Received, Step, floats_from_bytes
from phe_fl.mhe import (
    Ciphertext,
    Context,
    JointPublicKey,
    Party,
    PublicKeyGen,
    QuerierPublicKey,
    QueryKeySwitch,
    Refresh,
    RefreshCRP,
    RelinKey,
    RelinKeyGen,
    RotationKeyGen,
    RotationKeys,
    ThresholdDecrypt,
    get_parameter_set,
)
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.protocols._share import Share
from phe_fl.ml import EncryptedModel, GLMParty, MapRequest, TrainingJob

__all__ = ["Node", "ChildLinkClient", "SETUP_ORDER"]

log = logging.getLogger("phe_fl.node")

SETUP_ORDER = ("pk", "relin1", "relin2")


class ChildLinkClient(Protocol):
    """What a node needs from a child connection (the gRPC transport implements it)."""

    id: str

    def contribute(self, step: Step, timeout: float | None = None) -> Received: ...

    def broadcast(self, step: Step) -> list[str]: ...


@dataclass
class _StepSpec:
    """How one step makes this node's contribution and folds in the children's."""

    own: Callable[[Node, Step], Any]
    load: Callable[[Node, Step, bytes], Any]
    combine: Callable[[Node, Step, Any, Any], Any]
    requires: str | None  # setup step that must be complete first


def _digest(step: Step) -> bytes:
    h = hashlib.sha256(f"{step.job_id}/{step.step}/{sorted(step.labels.items())}".encode())
    for name, data in step.payloads.items():
        h.update(name.encode())
        h.update(hashlib.sha256(data).digest())
    return h.digest()


class Node:
    """One institution: one secret share, its plaintext data, links to its children."""

    def __init__(self, config: NodeConfig, children: Sequence[ChildLinkClient] = ()) -> None:
        self.config = config
        self.params = get_parameter_set(config.params)
        self.ctx = Context(self.params)
        self.children = list(children)
        self.X, self.y = load_local_data(config.data)
        self.party: Party | None = None
        self.joint_key: JointPublicKey | None = None
        self.relin_key: RelinKey | None = None
        self.rotation_keys: RotationKeys | None = None
        # Own public-key share (at the root it doubles as the CRP), kept for retries.
        self.lead_crp: dict[str, Share] = {}
        self.setup_job: str | None = None  # root only: the key generation in progress
        self.setup_complete = False  # root only
        self.trainers: dict[str, GLMParty] = {}  # training job id -> this node's MAP side
        self.models: dict[str, EncryptedModel] = {}  # root only: trained, still encrypted
        # root only: the pooled (mean, std) each training job was standardized with
        self.standardizations: dict[str, tuple[FloatArray, FloatArray]] = {}
        self._done: list[str] = []
        self._setup_job: str | None = None
        self._cache: dict[bytes, Received] = {}
        self._locks: dict[bytes, threading.Lock] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=max(1, len(self.children)))

    @property
    def id(self) -> str:
        return self.config.id

    # -- state -----------------------------------------------------------------------------
    def _require(self, step: Step, spec: _StepSpec) -> None:
        if step.params != self.params.name:
            raise ProtocolError(
                f"step for parameter set {step.params!r}, this node uses {self.params.name!r}"
            )
        if step.n_parties != self.config.n_parties:
            raise ProtocolError(
                f"step for {step.n_parties} parties, this federation has {self.config.n_parties}"
            )
        if step.step == "pk":
            if "pk" in self._done:
                raise JobStateError(
                    f"collective key already generated (job {self._setup_job}); "
                    "a node takes part in one key generation"
                )
            return
        if spec.requires is not None and spec.requires not in self._done:
            raise JobStateError(
                f"step {step.step!r} before {spec.requires!r}: out-of-order protocol step"
            )
        if step.step in SETUP_ORDER and step.job_id != self._setup_job:
            raise JobStateError(
                f"step {step.step!r} of job {step.job_id!r}, but key generation is job "
                f"{self._setup_job!r}"
            )

    def require_party(self) -> Party:
        if self.party is None:
            raise JobStateError("this node has no secret share yet: run key generation first")
        return self.party

    def require_joint_key(self) -> JointPublicKey:
        if self.joint_key is None:
            raise JobStateError("no collective public key yet: run key generation first")
        return self.joint_key

    # -- contribution over the subtree ---------------------------------------------------------
    def contribute(self, step: Step, timeout: float | None = None) -> Received:
        """This subtree's aggregated contribution to ``step`` (cached for retries).

        ``timeout`` is what is left of the parent's deadline: children get a shorter one,
        so the node that stalls is the one named in the error, not its ancestors.
        """
        spec = STEPS.get(step.step)
        if spec is None:
            raise ProtocolError(f"unknown protocol step {step.step!r}")
        key = _digest(step)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # a retry racing the original waits for it instead of recomputing
            hit = self._cache.get(key)
            if hit is not None:
                log.info("%s: resending cached %s for job %s", self.id, step.step, step.job_id)
                return hit
            with self._lock:
                self._require(step, spec)
            result = self._compute(step, spec, timeout)
            self._cache[key] = result
            if step.step in SETUP_ORDER:
                with self._lock:
                    self._done.append(step.step)
                    self._setup_job = step.job_id
            return result

    def _compute(self, step: Step, spec: _StepSpec, timeout: float | None) -> Received:
        """Own contribution while the children work on theirs, then COMBINE; the node's
        first :class:`NodeStats` is what it measured itself (see there)."""
        t_start = time.perf_counter()
        request_bytes = sum(len(b) for b in step.payloads.values())
        child_timeout = None if timeout is None else max(0.5, timeout * 0.8 - 0.5)
        futures = [
            self._pool.submit(child.contribute, step, child_timeout) for child in self.children
        ]
        t0 = time.perf_counter()
        try:
            acc = spec.own(self, step)
        except BaseException:
            for f in futures:
                f.cancel()
            raise
        own_seconds = time.perf_counter() - t0
        stats: list[NodeStats] = []
        combine_seconds = 0.0
        from_children = 0
        for future in futures:
            received = future.result()  # PeerError names the child (waiting is not work)
            stats.extend(received.stats)
            share = received.step.payload("share")
            from_children += len(share)
            t0 = time.perf_counter()
            acc = spec.combine(self, step, acc, spec.load(self, step, share))
            combine_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        data = acc.to_bytes()
        t_end = time.perf_counter()
        mine = NodeStats(
            self.id,
            own_seconds,
            len(data),
            combine_seconds=combine_seconds,
            serialize_seconds=t_end - t0,
            subtree_seconds=t_end - t_start,
            bytes_from_parent=0 if self.config.is_root else request_bytes,
            bytes_from_children=from_children,
            bytes_to_children=request_bytes * len(self.children),
            parent_id=self.config.parent or "",
        )
        stats.insert(0, mine)
        out = Step(step.job_id, step.step, step.params, step.n_parties, {"share": data})
        return Received(out, tuple(stats))

    def fan_out(self, step: Step) -> Received:
        """Root: run ``step`` over the whole tree (its own contribution included)."""
        return self.contribute(step)

    # -- public material pushed down the tree --------------------------------------------------
    def broadcast(self, step: Step) -> list[str]:
        """Install joint keys sent by the parent, then pass them to the children."""
        data = step.payload("key")
        if step.step == "joint_key":
            self.joint_key = JointPublicKey.from_bytes(self.ctx, data)
        elif step.step == "relin_key":
            key = RelinKey.from_bytes(self.ctx, data)
            key.install()
            self.relin_key = key
        elif step.step == "rotation_keys":
            rot = RotationKeys.from_bytes(self.ctx, data)
            rot.install()
            self.rotation_keys = rot
        else:
            raise ProtocolError(f"unknown broadcast {step.step!r}")
        installed = [self.id]
        futures = [self._pool.submit(child.broadcast, step) for child in self.children]
        for future in futures:
            installed.extend(future.result())
        log.info("%s: installed %s", self.id, step.step)
        return installed

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


# -- the steps ---------------------------------------------------------------------------------
def _pk_own(node: Node, step: Step) -> Share:
    """The secret share is drawn once: a retried key generation resends the same share."""
    if "pk" not in node.lead_crp:
        pkg = PublicKeyGen(node.ctx)
        secret, share = pkg.gen_share(node.config.party, pkg.share_from_bytes(step.payload("crp")))
        node.party = Party(secret)
        node.lead_crp["pk"] = share
    return node.lead_crp["pk"]


def _relin(node: Node) -> RelinKeyGen:
    return RelinKeyGen(node.require_joint_key())


def _rotation_gen(node: Node, step: Step) -> RotationKeyGen:
    try:
        steps = [int(s) for s in step.labels.get("rotations", "").split(",") if s]
    except ValueError:
        raise ProtocolError(f"bad rotation list {step.labels.get('rotations')!r}") from None
    return RotationKeyGen(node.require_joint_key(), steps)


def _check_querier(node: Node, step: Step) -> QuerierPublicKey:
    name = step.labels.get("querier", "")
    if name not in node.config.policy.queriers:
        raise PolicyError(f"node {node.id} does not release results to querier {name!r}")
    return QuerierPublicKey.from_bytes(node.ctx, step.payload("querier_key"))


def _keyswitch_own(node: Node, step: Step) -> Share:
    qpk = _check_querier(node, step)
    ct = node.ctx.ciphertext_from_bytes(step.payload("ct"))
    share = node.require_party().key_switch_share(ct, qpk)
    log.info(
        "%s: contributed key-switch share to querier %r for ciphertext %s (job %s)",
        node.id,
        step.labels.get("querier"),
        ct.digest[:6].hex(),
        step.job_id,
    )
    return share


def _decrypt_own(node: Node, step: Step) -> Share:
    """Threshold decryption to the root, for the purpose the root declares: "model" (the
    node's ``allow_decryption``) or "statistics" (its ``release_statistics``)."""
    purpose = step.labels.get("purpose", "model")
    policy = node.config.policy
    if purpose == "statistics":
        if not policy.release_statistics:
            raise PolicyError(f"node {node.id}'s policy does not release pooled statistics")
    elif purpose == "model":
        if not policy.allow_decryption:
            raise PolicyError(f"node {node.id}'s policy does not allow threshold decryption")
    else:
        raise ProtocolError(f"unknown decryption purpose {purpose!r}")
    ct = node.ctx.ciphertext_from_bytes(step.payload("ct"))
    log.info("%s: contributed decryption share for %s", node.id, ct.digest[:6].hex())
    return node.require_party().decryption_share(ct)


def _stats_own(node: Node, step: Step) -> Ciphertext:
    """[sum x | sum x^2 | count] of the local data, encrypted under the joint key."""
    d = node.X.shape[1]
    if 3 * d > node.params.slots:
        raise ProtocolError(f"{d} features do not fit the statistics layout")
    vec = np.concatenate([node.X.sum(axis=0), (node.X**2).sum(axis=0), np.full(d, len(node.X))])
    return node.ctx.encrypt(vec, node.require_joint_key())


def _share_step(proto: Callable[[Node, Step], Any]) -> tuple[Any, Any]:
    def load(node: Node, step: Step, data: bytes) -> Share:
        return proto(node, step).share_from_bytes(data)  # type: ignore[no-any-return]

    def combine(node: Node, step: Step, a: Share, b: Share) -> Share:
        return proto(node, step).aggregate(a, b)  # type: ignore[no-any-return]

    return load, combine


def _ct_load(node: Node, step: Step, data: bytes) -> Ciphertext:
    return node.ctx.ciphertext_from_bytes(data)


def _ct_add(node: Node, step: Step, a: Ciphertext, b: Ciphertext) -> Ciphertext:
    return node.ctx.add(a, b)


def _relin2_load(node: Node, step: Step, data: bytes) -> Share:
    return _relin(node).round2_share_from_bytes(data)


def _relin2_combine(node: Node, step: Step, a: Any, b: Any) -> Share:
    return _relin(node).aggregate_round2(a, b)


def _relin1_own(node: Node, step: Step) -> Share:
    gen = _relin(node)
    return node.require_party().relin_round1(gen, gen.share_from_bytes(step.payload("crp")))


def _relin2_own(node: Node, step: Step) -> Share:
    gen = _relin(node)
    return node.require_party().relin_round2(gen, gen.share_from_bytes(step.payload("round1")))


def _rotations_own(node: Node, step: Step) -> Share:
    gen = _rotation_gen(node, step)
    return node.require_party().rotation_keys(gen, gen.share_from_bytes(step.payload("crp")))


def _refresh_own(node: Node, step: Step) -> Share:
    prepared = node.ctx.ciphertext_from_bytes(step.payload("ct"))
    crp = RefreshCRP.from_bytes(node.ctx, step.payload("crp"))
    return node.require_party().refresh_share(prepared, crp)


class Count:
    """A public count (samples in a global batch) summed up the tree like a share."""

    def __init__(self, value: int) -> None:
        self.value = value

    def to_bytes(self) -> bytes:
        return struct.pack(">Q", self.value)

    @classmethod
    def from_bytes(cls, data: bytes) -> Count:
        if len(data) != 8:
            raise ProtocolError(f"a count is 8 bytes, got {len(data)}")
        return cls(struct.unpack(">Q", data)[0])


def job_to_json(job: TrainingJob) -> str:
    return json.dumps(dataclasses.asdict(job), sort_keys=True)


def job_from_json(text: str) -> TrainingJob:
    """A training job from its JSON form; invalid fields raise ParameterError."""
    try:
        fields = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"training job is not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise ProtocolError("training job must be a JSON object")
    known = {f.name for f in dataclasses.fields(TrainingJob)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ProtocolError(f"training job has unknown fields {unknown}")
    return TrainingJob(**fields)


def _train_prepare_own(node: Node, step: Step) -> Count:
    """Validate this node's shard against the job before any encrypted work."""
    job = job_from_json(step.labels.get("job", ""))
    if job.params != node.params.name:
        raise ProtocolError(f"job uses {job.params!r}, this node runs {node.params.name!r}")
    X = node.X
    if "standardize" in step.payloads:  # PREPARE: pooled mean and std, applied locally
        mean, std = _standardization(step.payload("standardize"), X.shape[1])
        X = (X - mean) / std
    try:
        trainer = GLMParty(node.config.party, job, (X, node.y))
    except ParameterError as exc:
        raise ParameterError(f"node {node.id}: {exc}") from None
    node.trainers[step.job_id] = trainer
    return Count(trainer.batch_size_at(0))


def _standardization(data: bytes, d: int) -> tuple[FloatArray, FloatArray]:
    values = floats_from_bytes(data)
    if values.size != 2 * d or not np.all(np.isfinite(values)) or np.any(values[d:] <= 0):
        raise ProtocolError(f"standardization must be {d} means and {d} positive deviations")
    return values[:d], values[d:]


def _map_own(node: Node, step: Step) -> Ciphertext:
    trainer = node.trainers.get(step.job_id)
    if trainer is None:
        raise JobStateError(f"training job {step.job_id!r} was not prepared on node {node.id}")
    try:
        iteration = int(step.labels["iteration"])
        global_batch = int(step.labels["global_batch"])
    except (KeyError, ValueError):
        raise ProtocolError("map step needs integer iteration and global_batch labels") from None
    weights = node.ctx.ciphertext_from_bytes(step.payload("weights"))
    return trainer.gradient(MapRequest(iteration, weights, global_batch))


STEPS: dict[str, _StepSpec] = {
    "pk": _StepSpec(_pk_own, *_share_step(lambda n, s: PublicKeyGen(n.ctx)), requires=None),
    "relin1": _StepSpec(_relin1_own, *_share_step(lambda n, s: _relin(n)), requires="pk"),
    "relin2": _StepSpec(_relin2_own, _relin2_load, _relin2_combine, requires="relin1"),
    "rotations": _StepSpec(_rotations_own, *_share_step(_rotation_gen), requires="pk"),
    "decrypt": _StepSpec(
        _decrypt_own, *_share_step(lambda n, s: ThresholdDecrypt(n.ctx)), requires="relin2"
    ),
    "refresh": _StepSpec(
        _refresh_own, *_share_step(lambda n, s: Refresh(n.ctx)), requires="relin2"
    ),
    "keyswitch": _StepSpec(
        _keyswitch_own,
        *_share_step(lambda n, s: QueryKeySwitch(n.ctx, _check_querier(n, s))),
        requires="relin2",
    ),
    "stats": _StepSpec(_stats_own, _ct_load, _ct_add, requires="pk"),
    "train_prepare": _StepSpec(
        _train_prepare_own,
        lambda n, s, d: Count.from_bytes(d),
        lambda n, s, a, b: Count(a.value + b.value),
        requires="relin2",
    ),
    "map": _StepSpec(_map_own, _ct_load, _ct_add, requires="relin2"),
}
