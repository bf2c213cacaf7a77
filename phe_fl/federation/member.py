"""What every party does, whatever its place in the tree: its own share of each protocol
step, its MAP on its plaintext shard, and installing the joint keys.

A :class:`Member` holds this node's one secret-key share, its data and the public keys,
and keeps them in the node's state store (the share in a 0600 file), so that a node
killed at any moment comes back as the same party.
:data:`RULES` declares, per tree step, how the member makes its contribution (``own``),
reads a child's (``load``), adds two (``combine``) and answers (``answer``); the
:class:`~phe_fl.federation.subtree.Subtree` runs that over the node's children. Before
any work, :meth:`Member.admit` checks the request against the federation's parameters,
the key-generation state machine (and the training job's) and the node's policy.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.fedavg.packing import add_shares, add_updates
from phe_fl.federation import messages as m
from phe_fl.federation.audit import AuditLog
from phe_fl.federation.config import NodeConfig
from phe_fl.federation.data import DataShard, load_shard, schema_digest
from phe_fl.federation.fedavg import FedAvgParty
from phe_fl.federation.network import NetworkMaps, StageAnswer
from phe_fl.federation.policy import decide
from phe_fl.federation.serde import STEP_NAMES
from phe_fl.federation.state import FEDAVG, KEYGEN, TRAINING, Tracker
from phe_fl.federation.store import NodeStore
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
    SecretShare,
    ThresholdDecrypt,
    get_parameter_set,
    release_free_memory,
)
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.protocols._share import Share
from phe_fl.ml import GLMParty, MapRequest, MapWorker, MLPParty, ModelJob, TrainingJob, family_of
from phe_fl.ml.families import family_named

__all__ = ["Member", "Rule", "RULES"]

P = TypeVar("P", bound=MapWorker)


def data_schema(shard: DataShard) -> m.DataSchema | None:
    """What this node reports of its data (no values): columns, label, declared
    transformations and their digest; None for a node without data."""
    schema = shard.schema
    if schema.label is None:
        return None
    transforms = tuple(
        m.Transform(t.name)
        if t.name != "scale"
        else m.Transform(
            t.name, tuple(str(c) for c, _ in t.params), tuple(float(v) for _, v in t.params)
        )
        for t in schema.transforms
    )
    return m.DataSchema(
        schema.feature_names,
        schema.label.name,
        schema.label.classes,
        transforms,
        schema_digest(schema),
    )


class Member:
    """One institution's party: one secret share, its plaintext shard, the joint keys."""

    def __init__(self, config: NodeConfig, store: NodeStore, audit: AuditLog | None = None) -> None:
        self.config = config
        self.store = store
        self.audit = audit
        self.params = get_parameter_set(config.params)
        self.ctx = Context(self.params)
        self.shard = load_shard(config.data)
        self.X, self.y = self.shard.x, self.shard.y
        self.schema = data_schema(self.shard)
        self.keygen = Tracker(KEYGEN, f"on node {config.id}")
        self.party: Party | None = None
        self.joint_key: JointPublicKey | None = None
        self.relin_key: RelinKey | None = None
        self.rotation_keys: list[RotationKeys] = []
        """Installed rotation-key sets, each made by one generation round; OpenFHE adds
        a set to those installed before under the same joint key."""
        # The public-key share is drawn once with the secret share: a resumed key
        # generation resends it. At the root it is also the CRP (PublicKeyGen.gen_crp).
        self._public_key_share: Share | None = None
        self._trainings: dict[str, _Training] = {}
        self._lock = threading.Lock()
        self.network_maps = NetworkMaps(config.id, self.ctx)
        self._restore()
        release_free_memory()  # what loading the stored keys left free
        self.fedavg = FedAvgParty(config, store, self.ctx)

    # -- the state store -----------------------------------------------------------------------
    def _restore(self) -> None:
        """What this node had committed before it last stopped."""
        record = self.store.get("member", "keygen")
        if record is not None:
            self.keygen = Tracker(KEYGEN, f"on node {self.id}", state=record["state"])
        secret = self.store.get_blob("secret-share")
        if secret is not None:
            self.party = Party(SecretShare.from_bytes(self.ctx, secret))
        share = self.store.get_blob("public-key-share")
        if share is not None:
            self._public_key_share = PublicKeyGen(self.ctx).share_from_bytes(share)
        for name, load, install in _KEYS:
            data = self.store.get_blob(name)
            if data is not None:
                key = load(self.ctx, data)
                if install:
                    key.install()
                setattr(self, name.replace("-", "_"), key)
        record = self.store.get("member", "rotation-keys") or {"blobs": []}
        legacy = ["rotation-keys"] if self.store.get_blob("rotation-keys") is not None else []
        for name in legacy + list(record["blobs"]):
            data = self.store.get_blob(name)
            if data is not None:
                keys = RotationKeys.from_bytes(self.ctx, data)
                keys.install()
                self.rotation_keys.append(keys)
        for job_id, t in self.store.items("trainings"):
            spec: ModelJob = family_named(t.get("model", "glm")).job.from_record(t["spec"])
            std = t["standardization"]
            standardization = (
                None
                if std is None
                else m.Standardization(np.asarray(std["mean"]), np.asarray(std["std"]))
            )
            tracker = Tracker(TRAINING, f"{job_id!r} on node {self.id}", state=t["state"])
            self._trainings[job_id] = _Training(tracker, spec, standardization, t.get("dp_seed"))

    def _save_share(self, secret: SecretShare, share: Share) -> None:
        """The secret share (0600 file) and the public-key share, before either is used."""
        self.store.put_blob("secret-share", secret.to_bytes())
        self.store.put_blob("public-key-share", share.to_bytes())

    @property
    def id(self) -> str:
        return self.config.id

    # -- checks before any work -------------------------------------------------------------
    def admit(self, request: m.TreeRequest, requester: str) -> None:
        """Refuse ``request`` unless it fits this federation, this node's state machines
        and its policy (the policy's decision is audited either way)."""
        if request.params != self.params.name:
            raise ProtocolError(
                f"step for parameter set {request.params!r}, node {self.id} uses "
                f"{self.params.name!r}"
            )
        if request.n_parties != self.config.n_parties:
            raise ProtocolError(
                f"step for {request.n_parties} parties, this federation has {self.config.n_parties}"
            )
        step = STEP_NAMES[type(request.step)]
        self.keygen.check(step)
        if step in TRAINING.steps:
            self._training(request.job_id).tracker.check(step)
        if step in FEDAVG.steps:
            self.fedavg.job(request.job_id).tracker.check(step)
        decide(
            self.id,
            self.config.policy,
            request,
            requester,
            audit=self.audit,
            rows=len(self.X)
            if isinstance(request.step, (m.PrepareTrainingRequest, m.PrepareNetworkRequest))
            else None,
            refusal=self._refusal(request),
        )

    def _refusal(self, request: m.TreeRequest) -> str | None:
        """What this node knows that forbids a release, whatever its policy says: a
        FedAvg decryption of anything but the sum of every party's update (once per round
        and chunk), or any decryption or key switch of an individual FedAvg update."""
        step = request.step
        if isinstance(step, m.FedAvgDecryptRequest):
            return self.fedavg.refusal(request.job_id, step)
        if isinstance(step, (m.DecryptModelRequest, m.DecryptStatisticsRequest)):
            asked: tuple[bytes, ...] = (step.ciphertext,)
        elif isinstance(step, m.KeySwitchRequest):
            asked = step.ciphertexts
        else:
            return None
        for ct in asked:
            job = self.fedavg.individual_update(ct)
            if job is not None:
                return f"the ciphertext is an individual update of FedAvg job {job!r}"
        return None

    def complete(self, request: m.TreeRequest) -> None:
        """Advance the state machines once the subtree answered ``request``, and record
        them (the caller holds a store transaction with the answer)."""
        step = STEP_NAMES[type(request.step)]
        before = self.keygen.state
        self.keygen.advance(step)
        if self.keygen.state != before:
            self.store.put("member", "keygen", {"state": self.keygen.state})
        if step in FEDAVG.steps:
            self.fedavg.job(request.job_id).tracker.advance(step)
            self.fedavg.save(request.job_id)
        if step in TRAINING.steps:
            t = self._training(request.job_id)
            before = t.tracker.state
            t.tracker.advance(step)
            if t.tracker.state != before and t.spec is not None:
                self.store.put(
                    "trainings",
                    request.job_id,
                    {
                        "state": t.tracker.state,
                        "model": family_of(t.spec).name,
                        "spec": dataclasses.asdict(t.spec),
                        "standardization": None
                        if t.standardization is None
                        else {
                            "mean": t.standardization.mean.tolist(),
                            "std": t.standardization.std.tolist(),
                        },
                        "dp_seed": t.dp_seed,
                    },
                )

    def _training(self, job_id: str) -> _Training:
        with self._lock:
            if job_id not in self._trainings:
                tracker = Tracker(TRAINING, f"{job_id!r} on node {self.id}")
                self._trainings[job_id] = _Training(tracker)
            return self._trainings[job_id]

    def training_party(self, job_id: str, kind: type[P]) -> P:
        """This node's MAP side of a prepared training, a party of type ``kind`` (rebuilt
        after a restart from the job, standardization and seed it prepared with)."""
        t = self._trainings.get(job_id)
        if t is None or t.spec is None:
            raise ProtocolError(f"training job {job_id!r} is not prepared on node {self.id}")
        if t.party is None:
            t.party = self._make_party(t.spec, t.standardization, t.dp_seed)
        if not isinstance(t.party, kind):
            raise ProtocolError(
                f"training job {job_id!r} trains a {family_of(t.spec).name} model on node "
                f"{self.id}; this step is for a {kind.__name__}"
            )
        return t.party

    @property
    def rotation_indices(self) -> set[int]:
        """Every rotation step this node has a key for."""
        return {i for keys in self.rotation_keys for i in keys.indices}

    def install_rotation_keys(self, data: bytes) -> list[str]:
        """Add one generation round's rotation keys to those installed (kept in the state
        store, each set in its own blob, listed in one record)."""
        keys = RotationKeys.from_bytes(self.ctx, data)
        name = f"rotation-keys-{'_'.join(str(i) for i in keys.indices)}"
        with self._lock:
            record = self.store.get("member", "rotation-keys") or {"blobs": []}
            if name not in record["blobs"]:
                self.store.put_blob(name, data)
                self.store.put("member", "rotation-keys", {"blobs": [*record["blobs"], name]})
            keys.install()
            self.rotation_keys = [k for k in self.rotation_keys if k.indices != keys.indices]
            self.rotation_keys.append(keys)
        release_free_memory()  # the round's shares and the keys' loading temporaries
        return [self.id]

    # -- what the parts need ----------------------------------------------------------------
    def require_party(self) -> Party:
        if self.party is None:
            raise ProtocolError(f"node {self.id} has no secret share yet")
        return self.party

    def require_joint_key(self) -> JointPublicKey:
        if self.joint_key is None:
            raise ProtocolError(f"node {self.id} has no collective public key yet")
        return self.joint_key

    def lead_public_key(self) -> Share:
        """At the root: draw this node's secret share with the public-key CRP, which is
        also the root's own public-key share (once; a resumed setup reuses it)."""
        with self._lock:
            if self._public_key_share is None:
                secret, crp = PublicKeyGen(self.ctx).gen_crp(self.config.n_parties)
                self._save_share(secret, crp)
                self.party = Party(secret)
                self._public_key_share = crp
            return self._public_key_share

    def public_key_share(self, crp: bytes) -> Share:
        """This node's public-key share; the secret share is drawn once, here."""
        with self._lock:
            if self._public_key_share is None:
                pkg = PublicKeyGen(self.ctx)
                secret, share = pkg.gen_share(self.config.party, pkg.share_from_bytes(crp))
                self._save_share(secret, share)
                self.party = Party(secret)
                self._public_key_share = share
            return self._public_key_share

    def status(self) -> m.NodeStatus:
        parent = self.config.parent.id if self.config.parent else ""
        digest = self.schema.digest if self.schema is not None else ""
        return m.NodeStatus(self.id, parent, self.keygen.state, digest)

    def prepare(self, job: ModelJob, std: m.Standardization | None, job_id: str) -> int:
        """PREPARE of a job of any family: validate the shard against the job (features,
        labels), standardize it; the samples this node contributes per iteration."""
        if job.params != self.params.name:
            raise ProtocolError(
                f"job uses {job.params!r}, node {self.id} runs {self.params.name!r}"
            )
        t = self._training(job_id)
        # a DP job's batches and noise follow from this seed: kept with the training, so
        # that a restarted node draws the same ones for an iteration it is asked again
        seed = secrets.randbits(128) if isinstance(job, TrainingJob) and job.dp else None
        party = self._make_party(job, std, seed)
        t.spec, t.standardization, t.party, t.dp_seed = job, std, party, seed
        return party.batch_size_at(0)

    def _standardized(self, std: m.Standardization | None) -> FloatArray:
        X = self.X
        if std is not None:
            if std.mean.size != X.shape[1]:
                raise ProtocolError(
                    f"standardization for {std.mean.size} features, node {self.id} has {X.shape[1]}"
                )
            X = std.apply(X)
        return X

    def _make_party(
        self, job: ModelJob, std: m.Standardization | None, dp_seed: int | None
    ) -> MapWorker:
        shard = (self._standardized(std), self.y)
        try:
            return family_of(job).party(
                self.config.party, job, shard, self.config.n_parties, dp_seed
            )
        except ParameterError as exc:
            raise ParameterError(f"node {self.id}: {exc}") from None

    def local_statistics(self, n_features: int) -> Ciphertext:
        """[sum x | sum x^2 | count] of the local data, encrypted under the joint key."""
        d = self.X.shape[1]
        if d != n_features:
            raise ProtocolError(f"node {self.id} has {d} features, the job declares {n_features}")
        if 3 * d > self.params.slots:
            raise ProtocolError(f"{d} features do not fit the statistics layout")
        vec = np.concatenate([self.X.sum(axis=0), (self.X**2).sum(axis=0), np.full(d, len(self.X))])
        return self.ctx.encrypt(vec, self.require_joint_key())


@dataclass
class _Training:
    """This node's side of one training job (a GLM or a network)."""

    tracker: Tracker
    spec: ModelJob | None = None
    standardization: m.Standardization | None = None
    dp_seed: int | None = None
    party: MapWorker | None = None


_KEYS: tuple[tuple[str, Callable[[Context, bytes], Any], bool], ...] = (
    ("joint-key", JointPublicKey.from_bytes, False),
    ("relin-key", RelinKey.from_bytes, True),
)
"""The joint keys a node keeps: blob name, loader, whether OpenFHE must install it."""


# -- the rules, one per step -----------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """How one step makes this node's contribution and folds in its children's."""

    own: Callable[[Member, Any], Any]  # (member, the TreeRequest) -> contribution
    load: Callable[[Member, Any, Any], Any]  # (member, request, a child's result)
    combine: Callable[[Member, Any, Any, Any], Any]  # (member, request, a, b) -> a + b
    answer: Callable[[Any], m.TreeResult]
    keep: bool = True
    """Whether the answer is kept for a retry (a share must never be drawn again); a step
    that draws nothing and changes state only by applying its payload (a liveness ping,
    global parameters) runs again instead: a node restarted since must apply it again."""
    down: Callable[[Member, Any, str], Any] | None = None
    """(member, request, child id) -> what that child is sent; None: the request itself
    (a step whose payload names nodes sends each child only its subtree's part)."""
    heard: Callable[[Member, Any, str, Any], None] | None = None
    """(member, request, child id, its result): what the node learns of a child's subtree
    from its answer, before loading it (which nodes are below it)."""


def _shares(
    protocol: Callable[[Member, Any], Any],
    own: Callable[[Member, Any], Share],
    response: Callable[[bytes], m.TreeResult],
) -> Rule:
    """A share step: shares load and aggregate with the step's protocol object."""
    return Rule(
        own=lambda mem, r: own(mem, r.step),
        load=lambda mem, r, res: protocol(mem, r.step).share_from_bytes(res.share),
        combine=lambda mem, r, a, b: protocol(mem, r.step).aggregate(a, b),
        answer=lambda acc: response(acc.to_bytes()),
    )


def _ciphertexts(
    own: Callable[[Member, Any], Ciphertext],
    field: str,
    response: Callable[[bytes], m.TreeResult],
) -> Rule:
    """A ciphertext step: contributions are added (COMBINE)."""
    return Rule(
        own=own,
        load=lambda mem, r, res: mem.ctx.ciphertext_from_bytes(getattr(res, field)),
        combine=lambda mem, r, a, b: mem.ctx.add(a, b),
        answer=lambda acc: response(acc.to_bytes()),
    )


def _prepare(response: Callable[[int, int], m.TreeResult]) -> Rule:
    """PREPARE of a job of any family: (samples per iteration, rows) added up the tree."""
    return Rule(
        own=lambda mem, r: (mem.prepare(r.step.job, r.step.standardization, r.job_id), len(mem.X)),
        load=lambda mem, r, res: (_batch(res.global_batch), _batch(res.total_rows)),
        combine=lambda mem, r, a, b: (a[0] + b[0], a[1] + b[1]),
        answer=lambda acc: response(int(acc[0]), int(acc[1])),
    )


def _lists(
    own: Callable[[Member, Any], list[Any]],
    field: str,
    response: Callable[[tuple[Any, ...]], m.TreeResult],
    *,
    keep: bool = True,
) -> Rule:
    """A step whose answer lists the subtree's nodes (installs, ping)."""
    return Rule(
        own=own,
        load=lambda mem, r, res: list(getattr(res, field)),
        combine=lambda mem, r, a, b: a + b,
        answer=lambda acc: response(tuple(acc)),
        keep=keep,
    )


MAX_GLOBAL_BATCH = 1 << 40


def _batch(value: int) -> int:
    """A subtree's samples (per iteration, or rows): a count, not any 64-bit number (a sum
    of those would overflow the next request)."""
    if not 0 <= value <= MAX_GLOBAL_BATCH:
        raise ProtocolError(f"reports {value} samples per iteration, more than can be")
    return int(value)


def _relin(mem: Member, step: Any) -> RelinKeyGen:
    return RelinKeyGen(mem.require_joint_key())


def _rotations(mem: Member, step: m.RotationKeysShareRequest) -> RotationKeyGen:
    return RotationKeyGen(mem.require_joint_key(), list(step.indices))


def _querier_key(mem: Member, step: m.KeySwitchRequest) -> QueryKeySwitch:
    return QueryKeySwitch(mem.ctx, QuerierPublicKey.from_bytes(mem.ctx, step.querier_key))


def _installer(
    load: Callable[[Context, bytes], Any], attribute: str, *, install: bool
) -> Callable[[Member, m.TreeRequest], list[str]]:
    """Install a joint key sent down the tree (``install``: also into OpenFHE's
    process-wide maps, which evaluation keys need)."""

    def own(mem: Member, r: m.TreeRequest) -> list[str]:
        data = r.step.key  # type: ignore[union-attr]
        key = load(mem.ctx, data)
        mem.store.put_blob(attribute.replace("_", "-"), data)
        if install:
            key.install()
        setattr(mem, attribute, key)
        release_free_memory()  # the round's shares and the key's loading temporaries
        return [mem.id]

    return own


def _map_request(mem: Member, step: m.GradientRequest | m.MarginMomentRequest) -> MapRequest:
    """MAP's input, for the gradient and for the margin check (which runs MAP's batch)."""
    weights = mem.ctx.ciphertext_from_bytes(step.weights)
    return MapRequest(step.iteration, (weights,), step.global_batch, step.sample_rate)


def _gradient(mem: Member, r: m.TreeRequest) -> Ciphertext:
    assert isinstance(r.step, m.GradientRequest)
    return mem.training_party(r.job_id, GLMParty).gradient(_map_request(mem, r.step))


def _margin_moment(mem: Member, r: m.TreeRequest) -> Ciphertext:
    assert isinstance(r.step, m.MarginMomentRequest)
    return mem.training_party(r.job_id, GLMParty).margin_moment(
        _map_request(mem, r.step), r.step.power
    )


def _network_stage(mem: Member, r: m.TreeRequest) -> StageAnswer:
    assert isinstance(r.step, m.NetworkMapRequest)
    return mem.network_maps.stage(r.job_id, mem.training_party(r.job_id, MLPParty), r.step)


def _child_stage(mem: Member, r: m.TreeRequest, res: m.NetworkMapResponse) -> StageAnswer:
    return StageAnswer.read(mem.ctx, res, mem.training_party(r.job_id, MLPParty).job.layout.n_cts)


def _batched(
    protocol: Callable[[Member, Any], Any],
    own: Callable[[Member, Any], list[Share]],
    response: Callable[[tuple[bytes, ...]], m.TreeResult],
) -> Rule:
    """A step on a batch of ciphertexts (``step.ciphertexts``): one share each, drawn once
    and cached by the party, aggregated ciphertext by ciphertext on the way up."""

    def load(mem: Member, r: m.TreeRequest, res: Any) -> list[Share]:
        asked = len(r.step.ciphertexts)  # type: ignore[union-attr]
        if len(res.shares) != asked:
            raise ProtocolError(f"{len(res.shares)} shares for {asked} ciphertexts")
        proto = protocol(mem, r.step)
        return [proto.share_from_bytes(s) for s in res.shares]

    return Rule(
        own=lambda mem, r: own(mem, r.step),
        load=load,
        combine=lambda mem, r, a, b: [
            protocol(mem, r.step).aggregate(x, y) for x, y in zip(a, b, strict=True)
        ],
        answer=lambda acc: response(tuple(s.to_bytes() for s in acc)),
    )


def _refresh_shares(mem: Member, step: m.RefreshShareRequest) -> list[Share]:
    """This node's share of every ciphertext of the batch."""
    if not step.ciphertexts or len(step.ciphertexts) != len(step.crps):
        raise ProtocolError(
            f"a refresh batch is as many ciphertexts as CRPs, at least one; got "
            f"{len(step.ciphertexts)} and {len(step.crps)}"
        )
    party = mem.require_party()
    return [
        party.refresh_share(mem.ctx.ciphertext_from_bytes(c), RefreshCRP.from_bytes(mem.ctx, crp))
        for c, crp in zip(step.ciphertexts, step.crps, strict=True)
    ]


def _key_switch_shares(mem: Member, step: m.KeySwitchRequest) -> list[Share]:
    """This node's share of every result of the batch, to the querier's key."""
    if not step.ciphertexts:
        raise ProtocolError("a key switch names at least one ciphertext")
    querier = QuerierPublicKey.from_bytes(mem.ctx, step.querier_key)
    party = mem.require_party()
    return [
        party.key_switch_share(mem.ctx.ciphertext_from_bytes(c), querier) for c in step.ciphertexts
    ]


def _prepare_fedavg(mem: Member, r: m.TreeRequest) -> tuple[Any, ...]:
    assert isinstance(r.step, m.FedAvgPrepareRequest)
    layout = mem.fedavg.prepare(r.job_id, r.step.job)
    return (layout.digest(), layout.size, [mem.id])


def _same_model(mem: Member, r: m.TreeRequest, res: m.FedAvgPrepareResponse) -> tuple[Any, ...]:
    mine = mem.fedavg.layout(r.job_id)
    if res.layout_digest != mine.digest() or res.n_parameters != mine.size:
        assert isinstance(r.step, m.FedAvgPrepareRequest)
        raise ProtocolError(
            f"its app {r.step.job.app!r} builds another model ({res.n_parameters} parameters, "
            f"tensors digest {res.layout_digest[:12]}) than node {mem.id}'s ({mine.size}, "
            f"{mine.digest()[:12]})"
        )
    return (res.layout_digest, res.n_parameters, list(res.contributors))


def _child_update(mem: Member, r: m.TreeRequest, res: m.FedAvgUpdateResponse) -> tuple[Any, ...]:
    """A child's subtree sum: an individual update to this node, never to be decrypted
    (its bytes are read strictly when they are added)."""
    assert isinstance(r.step, m.FedAvgUpdateRequest)
    if len(res.ciphertexts) != r.step.chunks:
        raise ProtocolError(f"{len(res.ciphertexts)} chunks for {r.step.chunks} asked")
    mem.fedavg.note_individual(r.job_id, r.step.round, res.ciphertexts)
    return (list(res.ciphertexts), list(res.contributors))


def _add_updates(mem: Member, r: m.TreeRequest, a: tuple[Any, ...], b: tuple[Any, ...]) -> Any:
    """COMBINE on the bytes: no ciphertext is deserialized on the way up."""
    assert isinstance(r.step, m.FedAvgUpdateRequest)
    total = mem.fedavg.pairwise(lambda x, y: add_updates(mem.ctx, x, y), a[0], b[0])
    if mem.config.parent is not None:  # below the root every sum lacks someone's update
        mem.fedavg.note_individual(r.job_id, r.step.round, total)
    return (total, a[1] + b[1])


def _decryption_shares(mem: Member, r: m.TreeRequest) -> list[bytes]:
    assert isinstance(r.step, m.FedAvgDecryptRequest)
    return mem.fedavg.decryption_shares(r.job_id, r.step, mem.require_party())


def _child_shares(mem: Member, r: m.TreeRequest, res: m.FedAvgDecryptResponse) -> list[bytes]:
    assert isinstance(r.step, m.FedAvgDecryptRequest)
    if len(res.shares) != len(r.step.masked):
        raise ProtocolError(f"{len(res.shares)} shares for {len(r.step.masked)} ciphertexts")
    return list(res.shares)


def _add_shares(mem: Member, r: m.TreeRequest, a: list[bytes], b: list[bytes]) -> list[bytes]:
    return mem.fedavg.pairwise(lambda x, y: add_shares(mem.ctx, x, y), a, b)


def _decrypt(mem: Member, step: Any) -> Share:
    ct = mem.ctx.ciphertext_from_bytes(step.ciphertext)
    return mem.require_party().decryption_share(ct)


RULES: dict[type[Any], Rule] = {
    m.PublicKeyShareRequest: _shares(
        lambda mem, s: PublicKeyGen(mem.ctx),
        lambda mem, s: mem.public_key_share(s.crp),
        m.PublicKeyShareResponse,
    ),
    m.InstallJointKeyRequest: _lists(
        _installer(JointPublicKey.from_bytes, "joint_key", install=False),
        "installed_by",
        m.InstallJointKeyResponse,
    ),
    m.RelinRoundOneRequest: _shares(
        _relin,
        lambda mem, s: mem.require_party().relin_round1(
            _relin(mem, s), _relin(mem, s).share_from_bytes(s.crp)
        ),
        m.RelinRoundOneResponse,
    ),
    m.RelinRoundTwoRequest: Rule(
        own=lambda mem, r: mem.require_party().relin_round2(
            _relin(mem, r.step), _relin(mem, r.step).share_from_bytes(r.step.round_one_aggregate)
        ),
        load=lambda mem, r, res: _relin(mem, r.step).round2_share_from_bytes(res.share),
        combine=lambda mem, r, a, b: _relin(mem, r.step).aggregate_round2(a, b),
        answer=lambda acc: m.RelinRoundTwoResponse(acc.to_bytes()),
    ),
    m.InstallRelinKeyRequest: _lists(
        _installer(RelinKey.from_bytes, "relin_key", install=True),
        "installed_by",
        m.InstallRelinKeyResponse,
    ),
    m.RotationKeysShareRequest: _shares(
        _rotations,
        lambda mem, s: mem.require_party().rotation_keys(
            _rotations(mem, s), _rotations(mem, s).share_from_bytes(s.crp)
        ),
        m.RotationKeysShareResponse,
    ),
    m.InstallRotationKeysRequest: _lists(
        lambda mem, r: mem.install_rotation_keys(r.step.key),
        "installed_by",
        m.InstallRotationKeysResponse,
    ),
    m.StatisticsRequest: _ciphertexts(
        lambda mem, r: mem.local_statistics(r.step.n_features),
        "encrypted_sums",
        m.StatisticsResponse,
    ),
    m.DecryptStatisticsRequest: _shares(
        lambda mem, s: ThresholdDecrypt(mem.ctx), _decrypt, m.DecryptStatisticsResponse
    ),
    m.DecryptModelRequest: _shares(
        lambda mem, s: ThresholdDecrypt(mem.ctx), _decrypt, m.DecryptModelResponse
    ),
    m.KeySwitchRequest: _batched(_querier_key, _key_switch_shares, m.KeySwitchResponse),
    m.RefreshShareRequest: _batched(
        lambda mem, s: Refresh(mem.ctx), _refresh_shares, m.RefreshShareResponse
    ),
    m.PrepareTrainingRequest: _prepare(m.PrepareTrainingResponse),
    m.PrepareNetworkRequest: _prepare(m.PrepareNetworkResponse),
    m.NetworkMapRequest: Rule(
        own=_network_stage,
        load=_child_stage,
        combine=lambda mem, r, a, b: a.plus(mem.ctx, b),
        answer=lambda acc: acc.response(),
        keep=False,  # the paused MAP answers a retry itself; a restarted node starts over
        down=lambda mem, r, child: mem.network_maps.for_child(r, child),
        heard=lambda mem, r, child, res: mem.network_maps.heard(r, child, res),
    ),
    m.GradientRequest: _ciphertexts(_gradient, "gradient", m.GradientResponse),
    m.MarginMomentRequest: _ciphertexts(_margin_moment, "moment", m.MarginMomentResponse),
    m.FedAvgPrepareRequest: Rule(
        own=_prepare_fedavg,
        load=_same_model,
        combine=lambda mem, r, a, b: (a[0], a[1], a[2] + b[2]),
        answer=lambda acc: m.FedAvgPrepareResponse(acc[0], acc[1], tuple(acc[2])),
    ),
    m.FedAvgGlobalRequest: _lists(
        lambda mem, r: mem.fedavg.receive_global(r.job_id, r.step),
        "installed_by",
        m.FedAvgGlobalResponse,
        keep=False,
    ),
    m.FedAvgTrainRequest: Rule(
        own=lambda mem, r: (*mem.fedavg.train(r.job_id, r.step), [mem.id]),
        load=lambda mem, r, res: (
            _batch(res.examples),
            float(res.loss_sum),
            list(res.contributors),
        ),
        combine=lambda mem, r, a, b: (a[0] + b[0], a[1] + b[1], a[2] + b[2]),
        answer=lambda acc: m.FedAvgTrainResponse(int(acc[0]), float(acc[1]), tuple(acc[2])),
    ),
    m.FedAvgUpdateRequest: Rule(
        own=lambda mem, r: (
            mem.fedavg.encrypt(r.job_id, r.step, mem.require_joint_key()),
            [mem.id],
        ),
        load=_child_update,
        combine=_add_updates,
        answer=lambda acc: m.FedAvgUpdateResponse(tuple(acc[0]), tuple(acc[1])),
    ),
    m.FedAvgDecryptRequest: Rule(
        own=_decryption_shares,
        load=_child_shares,
        combine=_add_shares,
        answer=lambda acc: m.FedAvgDecryptResponse(tuple(acc)),
    ),
    m.PingRequest: _lists(lambda mem, r: [mem.status()], "nodes", m.PingResponse, keep=False),
}
"""Every tree step's rule; a step without one cannot be expressed (serde refuses it)."""
