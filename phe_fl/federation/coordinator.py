"""What only the root does: run a querier's jobs over the tree.

Each job kind has one handler in :data:`HANDLERS`; every handler is a sequence of rounds,
each round one tree step asked of the whole tree through the root's own
:class:`~phe_fl.federation.subtree.Subtree` (its own contribution included), reported to
the querier as a typed :class:`~phe_fl.federation.messages.ProgressEvent`. Whether a job
may run at all is decided by the root's policy and its federation-keys machine (by job
kind); jobs that use the tree are queued and run one at a time by the
:class:`~phe_fl.federation.jobs.JobManager`, job control and read-only jobs answer at once.

What the root must not lose lives in its state store: the federation-keys state and the
CRPs it sampled as the lead (a resumed key generation resends the same ones), trained
models and their standardization, and each training's checkpoint after every iteration.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from phe_fl.errors import JobStateError, PeerError, PolicyError, ProtocolError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import (
    CHUNKS_PER_STEP,
    Vector,
    chunk_size,
    fuse_chunk,
    masked,
    n_chunks,
    release_decimals,
    values_digest,
)
from phe_fl.federation import messages as m
from phe_fl.federation.jobs import Control, Job, JobManager
from phe_fl.federation.policy import decide_job, decide_privacy_budget, decide_querier
from phe_fl.federation.serde import JOB_NAMES
from phe_fl.federation.state import FEDERATION_KEYS, Tracker
from phe_fl.federation.store import NodeStore
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
    ciphertext_bytes,
    release_free_memory,
)
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import (
    EncryptedModel,
    IterationReport,
    MapRequest,
    MapStage,
    MLPJob,
    ModelJob,
    Trainer,
    TrainingJob,
    evaluate_mlp,
    family_of,
)
from phe_fl.ml.datasets import pooled_mean_std
from phe_fl.ml.families import family_named
from phe_fl.ml.mlp import prediction_levels
from phe_fl.ml.staging import with_levels

__all__ = ["Coordinator", "TreeFederation", "Run", "HANDLERS", "IMMEDIATE"]

Emit = Callable[[m.ProgressEvent], None]

_JOB_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}")


log = logging.getLogger("phe_fl.coordinator")

RESUME_POLL_S = 1.0
ROTATIONS_PER_ROUND = 4
"""Rotation keys generated per collective round: it bounds every node's memory (at 2^15 a
round's share is 25 MB a key, held several times over while it is drawn, combined and
sent). Measured over 4 node processes with the 26 keys of a 784-64-64-10 network: 8 a
round peaked at 4.2 GiB at the root and 3.2-3.5 at an inner node, 4 at 2.8-3.2 and
1.9-2.4, and key generation took 58-65 s instead of 89-108 (less memory to fault in)."""
MAX_RESUMES = 20
"""A training gives up after this many resumptions from its checkpoint."""


@dataclass(frozen=True)
class Run:
    """One execution of one job: what its rounds need to know."""

    job_id: str
    kind: str
    querier: str
    emit: Emit
    control: Control
    job: Job | None = None


class Coordinator:
    """The root's job runner; ``deadline_s`` bounds every round over the tree."""

    def __init__(self, tree: Subtree, store: NodeStore, *, deadline_s: float = 600.0) -> None:
        self.tree = tree
        self.member = tree.member
        self.store = store
        self.deadline_s = deadline_s
        self.models: dict[str, EncryptedModel] = {}
        self.model_info: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()
        record = store.get("root", "keys") or {}
        state = record.get("state", FEDERATION_KEYS.initial)
        if state == "generating":  # the last process stopped in the middle
            state = "interrupted"
        self.keys = Tracker(FEDERATION_KEYS, "of the federation", state=state)
        self.keygen_job: str | None = record.get("keygen_job")
        self._save_keys()
        self._load_models()
        self.jobs = JobManager(store, self._execute)
        self.max_request_bytes = (m.MAX_QUERIES + 4) * (ciphertext_bytes(self.ctx.params) + 4096)
        """The largest job request a querier may send: a key and MAX_QUERIES ciphertexts."""

    def start(self) -> None:
        self.jobs.start()

    def stop(self) -> None:
        self.jobs.stop()

    @property
    def ctx(self) -> Context:
        return self.member.ctx

    @property
    def id(self) -> str:
        return self.member.id

    # -- the querier's requests ---------------------------------------------------------------
    def admit_querier(self, querier: str) -> None:
        """Refuse a querier outside the policy before it sends anything."""
        decide_querier(self.id, self.member.config.policy, querier, audit=self.member.audit)

    def submit(self, request: m.JobRequest, querier: str) -> Job | m.JobResult:
        """A job for ``querier`` (authenticated by its certificate): job control and
        read-only kinds answer at once; the others are queued (the :class:`Job` to follow)."""
        kind = JOB_NAMES[type(request.job)]
        if not _JOB_ID.fullmatch(request.job_id):
            raise ProtocolError(
                f"invalid job id {request.job_id[:80]!r}: 1-128 of A-Z a-z 0-9 _ . : -"
            )
        decide_job(
            self.id,
            self.member.config.policy,
            request.job_id,
            request.job,
            querier,
            audit=self.member.audit,
        )
        learning = kind == "status" and request.params == ""  # asks which set to use
        if request.params != self.member.params.name and not learning:
            raise ProtocolError(
                f"the querier uses parameter set {request.params!r}, this federation "
                f"{self.member.params.name!r}"
            )
        if kind in IMMEDIATE:
            if kind in FEDERATION_KEYS.steps:
                self.keys.check(kind)
            run = Run(request.job_id, kind, querier, lambda e: None, Control())
            return IMMEDIATE[kind](self, run, request.job)  # type: ignore[no-any-return]
        if kind == "watch":
            assert isinstance(request.job, m.WatchJob)
            return self.jobs.get(request.job.job_id, querier)
        self.keys.check(kind)  # refuse early; checked again when it runs
        return self.jobs.submit(request, querier)

    def _execute(self, job: Job) -> m.JobResult:
        request = job.request
        assert request is not None  # a queued or running job still has its request
        kind = job.info.kind
        run = Run(request.job_id, kind, job.info.querier, job.emit, job.control, job)
        if kind != "setup":
            self.keys.check(kind)
        return HANDLERS[type(request.job)](self, run, request.job)  # type: ignore[no-any-return]

    # -- what the root keeps -------------------------------------------------------------------
    def _save_keys(self) -> None:
        self.store.put("root", "keys", {"state": self.keys.state, "keygen_job": self.keygen_job})

    def lead_share(self, name: str, make: Callable[[], Any], load: Callable[[bytes], Any]) -> Any:
        """A CRP the root samples as the lead, drawn once and kept: a resumed key
        generation sends the same one again."""
        data = self.store.get_blob(name)
        if data is not None:
            return load(data)
        share = make()
        self.store.put_blob(name, share.to_bytes())
        return share

    def _load_models(self) -> None:
        for model_id, record in self.store.items("models"):
            spec = family_named(record.get("model", "glm")).job.from_record(record["spec"])
            n = spec.n_weight_ciphertexts
            weights = read_ciphertexts(self.store, self.ctx, f"model-{model_id}", "weights", n)
            if weights is None:
                continue
            reports = [IterationReport.from_record(r) for r in record["reports"]]
            self.models[model_id] = EncryptedModel(spec, weights, reports)
            self.model_info[model_id] = record

    def save_model(
        self,
        model_id: str,
        model: EncryptedModel,
        querier: str,
        std: m.Standardization | None,
        schema: m.DataSchema | None,
    ) -> None:
        """The model's ciphertexts, then the record naming them and its family."""
        write_ciphertexts(self.store, f"model-{model_id}", "weights", model.weights)
        record = {
            "model": family_of(model.job).name,
            "spec": dataclasses.asdict(model.job),
            "reports": [dataclasses.asdict(r) for r in model.reports],
            "standardization": _std_to_dict(std),
            "schema": None if schema is None else dataclasses.asdict(schema),
            "querier": querier,
            "created": time.time(),
        }
        self.store.put("models", model_id, record)
        self.models[model_id] = model
        self.model_info[model_id] = record

    def standardization(self, model_id: str) -> m.Standardization | None:
        return _std_from_dict(self.model_info.get(model_id, {}).get("standardization"))

    def schema(self, model_id: str) -> m.DataSchema | None:
        """The data the model takes, as the nodes declared it when it was trained."""
        return _schema_from_dict(self.model_info.get(model_id, {}).get("schema"))

    def privacy_spent(self) -> float:
        return float((self.store.get("root", "privacy") or {}).get("spent", 0.0))

    def start_checkpointed(self, run: Run, epsilon: float, checkpoint: dict[str, Any]) -> None:
        """Decide (the policy, audited) whether a training that spends ``epsilon`` of the
        federation's budget (infinite: not differentially private) may run; if so, record
        the spending and the training's first checkpoint in one transaction (a restart
        neither spends twice nor trains unpaid)."""
        policy = self.member.config.policy
        dp = math.isfinite(epsilon)
        with self._lock:
            spent = self.privacy_spent()
            decision = decide_privacy_budget(
                self.id, policy, run.job_id, run.querier, epsilon, spent, audit=self.member.audit
            )
            checkpoint["dp_epsilon"] = epsilon if dp else 0.0
            checkpoint["dp_delta"] = policy.dp_delta if dp else 0.0
            with self.store.transaction():
                if decision is not None:
                    self.store.put("root", "privacy", {"spent": spent + epsilon})
                self.store.put("checkpoints", run.job_id, checkpoint)

    def require_one_schema(self, run: Run) -> m.DataSchema | None:
        """Every connected node's data must fit one model (same column names, order,
        types and declared transformations) before any key work or training: a node
        whose schema digest differs from the root's is named and the job refused."""
        status = _status(self, dataclasses.replace(run, emit=lambda e: None), m.StatusJob())
        mine = self.member.schema
        ref = mine.digest if mine is not None else ""
        differ = sorted(n.node_id for n in status.nodes if n.schema_digest != ref)
        if differ:
            theirs = {n.node_id: n.schema_digest[:12] or "no data" for n in status.nodes}
            raise JobStateError(
                f"node(s) {', '.join(differ)} hold data of another schema than the root "
                f"{self.id} (column names, order, types or declared transformations differ; "
                f"digests: {self.id} {ref[:12] or 'no data'}, "
                + ", ".join(f"{n} {theirs[n]}" for n in differ)
                + "): refused before any key work"
            )
        return mine

    def model(self, model_id: str) -> EncryptedModel:
        model = self.models.get(model_id)
        if model is None:
            raise JobStateError(f"no trained model {model_id!r} at the root")
        return model

    # -- rounds over the tree ---------------------------------------------------------------
    def round(self, run: Run, step: m.TreeStep, stage: m.Stage, **event: Any) -> Any:
        """Ask the whole tree for ``step``; report it as ``stage``; return the result."""
        run.control.check()
        request = m.TreeRequest(
            run.job_id,
            self.member.params.name,
            self.member.config.n_parties,
            step,
            self.deadline_s,
            run.kind,
        )
        t = time.perf_counter()
        response = self.tree.contribute(request, self.id)
        run.emit(m.ProgressEvent(stage, time.perf_counter() - t, nodes=response.stats, **event))
        return response.result

    def install(self, run: Run, step: m.TreeStep) -> None:
        """Push public key material down the tree; every node installs it."""
        self.round(run, step, m.Stage.INSTALL_KEYS)

    def switch_to_querier(
        self,
        run: Run,
        cts: Sequence[Ciphertext],
        querier_key: bytes,
        purpose: m.Purpose,
        **event: Any,
    ) -> list[Ciphertext]:
        """``cts`` switched to the querier's key by every node (each checks its policy),
        the whole batch in one round."""
        proto = QueryKeySwitch(self.ctx, QuerierPublicKey.from_bytes(self.ctx, querier_key))
        step = m.KeySwitchRequest(
            purpose, run.querier, querier_key, tuple(c.to_bytes() for c in cts)
        )
        result = self.round(run, step, m.Stage.KEY_SWITCH, **{"count": len(cts), **event})
        if len(result.shares) != len(cts):
            raise ProtocolError(
                f"{len(result.shares)} key-switch shares for {len(cts)} ciphertexts"
            )
        return [
            proto.finalize(proto.share_from_bytes(share), ct)
            for share, ct in zip(result.shares, cts, strict=True)
        ]

    def refresh_many(self, run: Run, cts: Sequence[Ciphertext], **event: Any) -> list[Ciphertext]:
        """Bootstrap a batch with every node in one round: the root prepares each
        ciphertext and samples its CRP."""
        proto = Refresh(self.ctx)
        joint = self.member.require_joint_key()
        prepared = [proto.prepare(ct) for ct in cts]
        crps = [proto.gen_crp(joint) for _ in cts]
        step = m.RefreshShareRequest(
            tuple(p.to_bytes() for p in prepared), tuple(c.to_bytes() for c in crps)
        )
        result = self.round(run, step, m.Stage.REFRESH, **{"count": len(cts), **event})
        if len(result.shares) != len(cts):
            raise ProtocolError(f"{len(result.shares)} refresh shares for {len(cts)} ciphertexts")
        return [
            proto.finalize(proto.share_from_bytes(share), p, crp, joint)
            for share, p, crp in zip(result.shares, prepared, crps, strict=True)
        ]

    def ensure_rotations(self, run: Run, needed: Sequence[int]) -> None:
        """Generate (collectively) rotation keys for every step in ``needed`` not yet
        there, :data:`ROTATIONS_PER_ROUND` at a time: each round's keys are added to those
        installed, and no node holds more than one round's shares at once (at 2^15 a key
        is 25 MB, and a round's shares, aggregates and copies take a dozen times that)."""
        missing = sorted(set(needed) - self.member.rotation_indices)
        for start in range(0, len(missing), ROTATIONS_PER_ROUND):
            self._rotation_round(run, missing[start : start + ROTATIONS_PER_ROUND])
            release_free_memory()  # the round's shares, aggregate and keys: 100s of MB

    def _rotation_round(self, run: Run, indices: list[int]) -> None:
        """One round of collective rotation-key generation for ``indices``, installed."""
        gen = RotationKeyGen(self.member.require_joint_key(), indices)
        party = self.member.require_party()
        name = "lead-rotation-crp-" + "_".join(str(i) for i in gen.indices)
        crp = self.lead_share(name, partial(party.rotation_crp, gen), gen.share_from_bytes)
        step = m.RotationKeysShareRequest(crp.to_bytes(), tuple(gen.indices))
        result = self.round(run, step, m.Stage.KEYGEN_ROTATION_KEYS)
        keys_bytes = gen.finalize(gen.share_from_bytes(result.share)).to_bytes()
        self.install(run, m.InstallRotationKeysRequest(keys_bytes))

    def whole(self) -> list[str]:
        """The nodes missing from the tree right now (a ping); [] when it is whole."""
        status = _status(self, Run("ping", "status", "", lambda e: None, Control()), m.StatusJob())
        missing = list(status.missing)
        if len(status.nodes) < self.member.config.n_parties and not missing:
            missing = ["(a node below a missing one)"]
        return missing

    def resume_after(self, run: Run, exc: PeerError, resumes: int) -> None:
        """A checkpointed job's rule after a round failed with ``exc``: re-raise it when a
        node answered no (it would again) or after MAX_RESUMES tries; otherwise wait until
        every node is back, and count the resumption."""
        if exc.answered or resumes > MAX_RESUMES:
            raise exc
        log.warning("job %s: a round failed (%s); resuming from its checkpoint", run.job_id, exc)
        self.wait_whole(run, exc)
        if run.job is not None:
            self.jobs.note_progress(run.job, resumes=run.job.info.resumes + 1)

    def wait_whole(self, run: Run, why: BaseException) -> None:
        """A round failed because a node is gone: wait until every node is back."""
        run.emit(m.ProgressEvent(m.Stage.WAITING_FOR_NODES))
        deadline = time.monotonic() + self.deadline_s
        while True:
            missing = self.whole()
            if not missing:
                return
            if time.monotonic() > deadline:
                raise PeerError(missing[0], f"still missing after {self.deadline_s:.0f} s ({why})")
            run.control.wait(RESUME_POLL_S)


def _std_to_dict(s: m.Standardization | None) -> dict[str, list[float]] | None:
    return None if s is None else {"mean": s.mean.tolist(), "std": s.std.tolist()}


def _schema_from_dict(d: dict[str, Any] | None) -> m.DataSchema | None:
    if d is None:
        return None
    transforms = tuple(
        m.Transform(t["name"], tuple(t["columns"]), tuple(t["values"])) for t in d["transforms"]
    )
    return m.DataSchema(
        tuple(d["features"]), d["label"], tuple(d["classes"]), transforms, d["digest"]
    )


def _std_from_dict(d: dict[str, list[float]] | None) -> m.Standardization | None:
    import numpy as np

    return None if d is None else m.Standardization(np.asarray(d["mean"]), np.asarray(d["std"]))


# -- the jobs ------------------------------------------------------------------------------------
def _setup(c: Coordinator, run: Run, job: m.SetupJob) -> m.SetupResult:
    """Collective public, relinearization and rotation keys, installed on every node. An
    interrupted key generation resumes under its own job id: every node answers the
    steps it already did from its cache, and no CRP is ever sampled twice."""
    c.keys.check("setup")  # refused while one runs or once keys exist, before the ping
    c.require_one_schema(run)
    with c._lock:
        resuming = c.keys.state == "interrupted"
        c.keys.advance("setup")
        if resuming:
            run.emit(m.ProgressEvent(m.Stage.KEYGEN_RESUMED))
        else:
            c.keygen_job = run.job_id
        c._save_keys()
    keygen = dataclasses.replace(run, job_id=c.keygen_job or run.job_id)
    try:
        _generate_keys(c, keygen, job.rotations)
    except BaseException:
        c.keys.advance("interrupt")
        c._save_keys()
        raise
    c.keys.advance("complete")
    c._save_keys()
    run.emit(m.ProgressEvent(m.Stage.KEYGEN_DONE))
    return m.SetupResult(keygen.job_id)


def _generate_keys(c: Coordinator, run: Run, rotations: Sequence[int]) -> None:
    pkg = PublicKeyGen(c.ctx)
    crp = c.member.lead_public_key()
    result = c.round(run, m.PublicKeyShareRequest(crp.to_bytes()), m.Stage.KEYGEN_PUBLIC_KEY)
    joint = pkg.finalize(pkg.share_from_bytes(result.share))
    c.install(run, m.InstallJointKeyRequest(joint.to_bytes()))

    relin = RelinKeyGen(joint)
    party = c.member.require_party()
    r_crp = c.lead_share("lead-relin-crp", lambda: party.relin_crp(relin), relin.share_from_bytes)
    one = c.round(run, m.RelinRoundOneRequest(r_crp.to_bytes()), m.Stage.KEYGEN_RELIN_ROUND_ONE)
    two = c.round(run, m.RelinRoundTwoRequest(one.share), m.Stage.KEYGEN_RELIN_ROUND_TWO)
    relin_key = relin.finalize(relin.round2_share_from_bytes(two.share))
    c.install(run, m.InstallRelinKeyRequest(relin_key.to_bytes()))
    if rotations:
        c.ensure_rotations(run, rotations)


def _stats(c: Coordinator, run: Run, job: m.StatsJob) -> m.StatsResult:
    """Pooled [sum x | sum x^2 | count] of all nodes' data, switched to the querier's key."""
    if job.n_features < 1:
        raise ProtocolError(f"a stats job needs a positive feature count, got {job.n_features}")
    c.require_one_schema(run)
    result = c.round(run, m.StatisticsRequest(job.n_features), m.Stage.STATISTICS)
    total = c.ctx.ciphertext_from_bytes(result.encrypted_sums)
    (switched,) = c.switch_to_querier(run, [total], job.querier_key, m.Purpose.POOLED_STATISTICS)
    return m.StatsResult(switched.to_bytes())


def _pooled_standardization(c: Coordinator, run: Run, d: int) -> m.Standardization:
    """PREPARE: pooled per-feature mean and standard deviation from encrypted per-node
    sums, threshold-decrypted at the root with every node's ``release_statistics``."""
    result = c.round(run, m.StatisticsRequest(d), m.Stage.PREPARE_STATISTICS)
    total = c.ctx.ciphertext_from_bytes(result.encrypted_sums)
    step = m.DecryptStatisticsRequest(total.to_bytes())
    share = c.round(run, step, m.Stage.PREPARE_DECRYPT).share
    proto = ThresholdDecrypt(c.ctx)
    values = proto.finalize(proto.share_from_bytes(share), total, length=3 * d, decimals=8)
    mean, std = pooled_mean_std(values[2 * d], values[:d], values[d : 2 * d])
    return m.Standardization(mean, std)


def _train(c: Coordinator, run: Run, job: m.TrainJob) -> m.TrainResult:
    """Train a GLM on every node's data (:func:`_train_model`)."""
    model, checkpoint = _train_model(
        c, run, job.spec, job.standardize, margin_check_every=job.margin_check_every
    )
    std = _std_from_dict(checkpoint["standardization"])
    schema = _schema_from_dict(checkpoint.get("schema"))
    dp = float(checkpoint.get("dp_epsilon", 0.0)), float(checkpoint.get("dp_delta", 0.0))
    return m.TrainResult(run.job_id, tuple(model.refreshes_per_iteration), std, schema, *dp)


def _train_network(c: Coordinator, run: Run, job: m.TrainNetworkJob) -> m.TrainNetworkResult:
    """Train a network on every node's data (:func:`_train_model`)."""
    model, checkpoint = _train_model(c, run, job.spec, job.standardize)
    return m.TrainNetworkResult(
        run.job_id,
        tuple(r.root_refreshes for r in model.reports),
        tuple(r.party_refreshes for r in model.reports),
        tuple(r.map_rounds for r in model.reports),
        _std_from_dict(checkpoint["standardization"]),
        _schema_from_dict(checkpoint.get("schema")),
    )


PrepareAnswer = m.PrepareTrainingResponse | m.PrepareNetworkResponse
"""PREPARE's answer: the samples per iteration and the rows over the whole tree."""


def _prepare_step(spec: ModelJob, std: m.Standardization | None) -> m.TreeStep:
    """PREPARE of a job's family: every node validates its shard against the job."""
    if isinstance(spec, MLPJob):
        return m.PrepareNetworkRequest(spec, std)
    return m.PrepareTrainingRequest(spec, std)


def _train_model(
    c: Coordinator,
    run: Run,
    spec: ModelJob,
    standardize: bool,
    *,
    margin_check_every: int = 0,
) -> tuple[EncryptedModel, dict[str, Any]]:
    """Train ``spec`` on every node's data (standardized with pooled statistics unless
    told otherwise); the model stays encrypted at the root under the job id.

    The encrypted weights are checkpointed after every iteration. When a node goes
    missing mid-iteration, or the root restarted, the training waits until every node is
    back and resumes from the last checkpoint: at most the iteration in flight is lost.
    Returns the model and the checkpoint it ended from."""
    if spec.params != c.member.params.name:
        raise ProtocolError(f"job uses {spec.params!r}, this federation {c.member.params.name!r}")
    checkpoint = c.store.get("checkpoints", run.job_id)
    prepared: PrepareAnswer | None = None  # PREPARE's answer, when run here
    if checkpoint is None:
        checkpoint, std = _first_checkpoint(c, run, spec.n_features, standardize)
        # PREPARE first: it tells the batch and rows a DP job's epsilon depends on
        prepared = c.round(run, _prepare_step(spec, std), m.Stage.VALIDATE_SHARDS)
        epsilon = math.inf
        if isinstance(spec, TrainingJob) and spec.dp:
            from phe_fl.privacy.accounting import job_epsilon

            delta = c.member.config.policy.dp_delta
            epsilon = job_epsilon(spec, prepared.global_batch, prepared.total_rows, delta)
        c.start_checkpointed(run, epsilon, checkpoint)
    model, checkpoint = _resumable(
        c,
        run,
        checkpoint,
        lambda cp, resumed, first: _train_from(
            c,
            run,
            spec,
            cp,
            resumed=resumed,
            margin_check_every=margin_check_every,
            prepared=prepared if first else None,
        ),
    )
    std = _std_from_dict(checkpoint["standardization"])
    schema = _schema_from_dict(checkpoint.get("schema"))
    c.save_model(run.job_id, model, run.querier, std, schema)
    return model, checkpoint


def _first_checkpoint(
    c: Coordinator, run: Run, n_features: int, standardize: bool
) -> tuple[dict[str, Any], m.Standardization | None]:
    """A new training's first checkpoint: the nodes' one schema (its width must be the
    job's) and, when asked, the pooled standardization every shard and query goes through."""
    schema = c.require_one_schema(run)
    if schema is not None and len(schema.features) != n_features:
        raise ProtocolError(
            f"the job declares {n_features} features; the nodes' data has "
            f"{len(schema.features)} ({', '.join(schema.features[:8])}"
            + (", ..." if len(schema.features) > 8 else "")
            + ")"
        )
    std = _pooled_standardization(c, run, n_features) if standardize else None
    checkpoint: dict[str, Any] = {
        "standardization": _std_to_dict(std),
        "schema": None if schema is None else dataclasses.asdict(schema),
        "iteration": 0,
        "reports": [],
    }
    return checkpoint, std


def _iteration_done(
    run: Run, done: int, iterations: int, seconds: float, summary: m.IterationSummary
) -> None:
    run.emit(
        m.ProgressEvent(
            m.Stage.ITERATION_DONE, seconds, iteration=done, iterations=iterations, summary=summary
        )
    )


T = TypeVar("T")


def _resumable(
    c: Coordinator,
    run: Run,
    checkpoint: dict[str, Any],
    train: Callable[[dict[str, Any], bool, bool], T],
) -> tuple[T, dict[str, Any]]:
    """``train(checkpoint, resumed, first)`` until it ends: when a node went missing (a
    round failed without the node answering no), wait until every node is back and go on
    from the last checkpoint. Returns the result and the checkpoint it ended from."""
    resumes = 0
    while True:
        try:
            return train(checkpoint, resumes > 0 or _resuming(run), resumes == 0), checkpoint
        except PeerError as exc:
            resumes += 1
            c.resume_after(run, exc, resumes)
            checkpoint = c.store.get("checkpoints", run.job_id) or checkpoint


def _resuming(run: Run) -> bool:
    return run.job is not None and run.job.info.resumes > 0


def _train_from(
    c: Coordinator,
    run: Run,
    spec: ModelJob,
    checkpoint: dict[str, Any],
    *,
    resumed: bool,
    margin_check_every: int = 0,
    prepared: PrepareAnswer | None = None,
) -> EncryptedModel:
    """The one training loop (:class:`~phe_fl.ml.Trainer`) from ``checkpoint``
    (iteration 0: the job's initial weights), checkpointed after every iteration; with
    ``margin_check_every = k``, a GLM's consented margin check runs at every k-th
    iteration. ``prepared``: PREPARE's answer when the caller just had it; a resumed loop
    sends the same request again (nodes answer from the answers they kept, or rebuild
    their party from it)."""
    std = _std_from_dict(checkpoint["standardization"])
    if prepared is None:
        prepared = c.round(run, _prepare_step(spec, std), m.Stage.VALIDATE_SHARDS)
    c.ensure_rotations(run, spec.rotation_indices())
    fed = TreeFederation(
        c,
        run,
        prepared.global_batch,
        iterations=spec.iterations,
        total_rows=prepared.total_rows,
        staged=isinstance(spec, MLPJob),
    )
    trainer = Trainer(spec, fed)
    start = int(checkpoint["iteration"])
    if start == 0:
        model = trainer.encrypt_initial()
    else:
        prefix, n = f"checkpoint-{run.job_id}", spec.n_weight_ciphertexts
        weights = read_ciphertexts(c.store, c.ctx, prefix, "weights", n)
        deltas = read_ciphertexts(c.store, c.ctx, prefix, "delta", n) if spec.momentum else None
        if weights is None or (spec.momentum and deltas is None):
            raise JobStateError(f"the root's state lacks the weights or steps of {prefix}")
        reports = [IterationReport.from_record(r) for r in checkpoint["reports"]]
        if len(reports) != start:
            raise JobStateError(f"{prefix} holds {len(reports)} reports for {start} iterations")
        model = EncryptedModel(spec, weights, reports, deltas)
    if resumed or start:
        run.emit(m.ProgressEvent(m.Stage.RESUMED, iteration=start + 1, iterations=spec.iterations))
    fed.iteration = start + 1
    run.control.check()

    def done(report: IterationReport) -> None:
        _checkpoint(c, run, checkpoint, model)
        fed.iteration = report.iteration + 2  # a refresh before the next MAP belongs to it
        summary = m.IterationSummary(
            refreshes=report.refreshes,
            levels_left=report.levels_left_after,
            levels_sent=report.levels_left_before,
            levels_dropped=report.levels_dropped,
            margin_low=report.margin_low or 0.0,
            margin_high=report.margin_high or 0.0,
        )
        _iteration_done(run, report.iteration + 1, spec.iterations, report.seconds, summary)
        if report.iteration + 1 < spec.iterations:
            run.control.check()

    return trainer.run(model, on_iteration=done, check_margins_every=margin_check_every)


def _checkpoint(
    c: Coordinator, run: Run, checkpoint: dict[str, Any], model: EncryptedModel
) -> None:
    """After an iteration: the encrypted weights (and momentum steps), then the record
    naming them (blobs first: a record never points at a missing file)."""
    prefix = f"checkpoint-{run.job_id}"
    write_ciphertexts(c.store, prefix, "weights", model.weights)
    if model.deltas is not None:
        write_ciphertexts(c.store, prefix, "delta", model.deltas)
    done = len(model.reports)
    checkpoint.update(iteration=done, reports=[dataclasses.asdict(r) for r in model.reports])
    c.store.put("checkpoints", run.job_id, checkpoint)
    if run.job is not None:
        c.jobs.note_progress(run.job, iterations_done=done)


def read_ciphertexts(
    store: NodeStore, ctx: Context, prefix: str, kind: str, n: int
) -> list[Ciphertext] | None:
    """A model's ``n`` ``kind`` ciphertexts (``weights``, momentum steps ``delta``) as
    :func:`write_ciphertexts` stored them, ``None`` when not all are there. A GLM's one
    ciphertext stored before every family shared one naming (``model-ID``,
    ``checkpoint-ID-weights``, ``checkpoint-ID-delta``) is read too: an upgraded root
    keeps its models and resumes its trainings."""
    blobs = [store.get_blob(f"{prefix}-{kind}-{k}") for k in range(n)]
    if n == 1 and blobs[0] is None:
        legacy = prefix if prefix.startswith("model-") and kind == "weights" else f"{prefix}-{kind}"
        blobs = [store.get_blob(legacy)]
    if any(b is None for b in blobs):
        return None
    return [ctx.ciphertext_from_bytes(b) for b in blobs if b is not None]


def write_ciphertexts(store: NodeStore, prefix: str, kind: str, cts: Sequence[Ciphertext]) -> None:
    """``prefix-kind-0``, ``prefix-kind-1``, ...: one blob per ciphertext."""
    for k, ct in enumerate(cts):
        store.put_blob(f"{prefix}-{kind}-{k}", ct.to_bytes())


def _blob(c: Coordinator, name: str) -> bytes:
    data = c.store.get_blob(name)
    if data is None:
        raise JobStateError(f"the root's state has no {name}")
    return data


def _model_weights(c: Coordinator, run: Run, job: m.ModelWeightsJob) -> m.ModelWeightsResult:
    """Threshold-decrypt a trained model: every node's policy must allow it."""
    model = c.model(job.model_id)
    fed = TreeFederation(c, run, 0)
    decrypt = partial(fed.decrypt_if_agreed, model_id=job.model_id)
    weights = family_of(model.job).decrypt(model.job, model.weights, decrypt)
    if isinstance(model.job, MLPJob):
        return m.ModelWeightsResult(np.zeros(0), tuple(m.Matrix.of(w) for w in weights))
    return m.ModelWeightsResult(weights)


def _model_info(c: Coordinator, run: Run, job: m.ModelInfoJob) -> m.ModelInfoResult:
    model = c.model(job.model_id)
    glm, network = _specs(model)
    return m.ModelInfoResult(
        glm,
        tuple(model.refreshes_per_iteration),
        c.standardization(job.model_id),
        c.schema(job.model_id),
        network,
    )


def _specs(model: EncryptedModel) -> tuple[TrainingJob | None, MLPJob | None]:
    """(a GLM's job, a network's job): the wire carries either in its own field."""
    if isinstance(model.job, MLPJob):
        return None, model.job
    return model.job, None


def _predict(c: Coordinator, run: Run, job: m.PredictJob) -> m.PredictResult:
    """Evaluate a trained, still-encrypted model on a querier's encrypted samples and
    switch each result to the querier's key; every node checks its policy for the
    querier before contributing its key-switch share."""
    from phe_fl.ml.glm import evaluate, prediction_depth

    model = c.model(job.model_id)
    if not job.queries:
        raise ProtocolError("a predict job needs at least one encrypted query")
    QuerierPublicKey.from_bytes(c.ctx, job.querier_key)  # refuse a bad key before any work
    cts = [c.ctx.ciphertext_from_bytes(q) for q in job.queries]
    if isinstance(model.job, MLPJob):
        results = _evaluate_network(c, run, model, model.job, cts, job.n_samples)
    else:
        need = prediction_depth(model.job) + c.member.params.refresh_min_levels
        # later queries reuse the refreshed model
        model.weights, _ = with_levels(model.weights, need, partial(c.refresh_many, run))
        t = time.perf_counter()
        results = evaluate(model.job, c.ctx, model.weights[0], cts)
        run.emit(m.ProgressEvent(m.Stage.EVALUATE, time.perf_counter() - t, count=len(cts)))
    scores = c.switch_to_querier(run, results, job.querier_key, m.Purpose.PREDICTION)
    return m.PredictResult(tuple(s.to_bytes() for s in scores))


def _evaluate_network(
    c: Coordinator,
    run: Run,
    model: EncryptedModel,
    spec: MLPJob,
    cts: list[Ciphertext],
    n_samples: int,
) -> list[Ciphertext]:
    """A network's forward pass on the queries, their refreshes batched: one collective
    round for what every query ciphertext needs at one layer."""
    if n_samples < 1:
        raise ProtocolError("a network's predict job names how many samples its queries hold")

    def refresh_many(batch: Sequence[Ciphertext]) -> list[Ciphertext]:
        return c.refresh_many(run, batch)

    keep = prediction_levels(spec)
    model.weights, _ = with_levels(model.weights, keep, refresh_many)  # later queries reuse them
    t = time.perf_counter()
    results, _, _ = evaluate_mlp(spec, c.ctx, model.weights, cts, n_samples, refresh_many)
    run.emit(m.ProgressEvent(m.Stage.EVALUATE, time.perf_counter() - t, count=len(cts)))
    return results


GLOBAL_SLICE = 1 << 20
"""Global parameters per FedAvgGlobalRequest (4 MiB of float32)."""


def _fedavg(c: Coordinator, run: Run, job: m.FedAvgJob) -> m.FedAvgResult:
    """Encrypted FedAvg: each round the global parameters go down the tree, every node
    trains with its own app, the weighted updates come up encrypted and summed, chunk by
    chunk, and only their sum is threshold-decrypted (every node's aggregate guard checks
    that). The global parameters are checkpointed after every round; a node that goes
    missing makes the round start again once every node is back."""
    spec = job.spec
    prep = c.round(run, m.FedAvgPrepareRequest(spec), m.Stage.FEDAVG_PREPARE)
    _require_everyone(c, prep.contributors, "prepared")
    layout = c.member.fedavg.layout(run.job_id)
    # the global model after the last round done: the checkpoint, and the job's model at
    # the end (kept at the root whatever release_fedavg_model says)
    model_blob = f"fedavg-model-{run.job_id}"
    checkpoint = c.store.get("checkpoints", run.job_id)
    if checkpoint is None:
        global_values = c.member.fedavg.initial(run.job_id)
        checkpoint = {"round": 0, "rounds": []}
        c.store.put_blob(model_blob, global_values.astype("<f4").tobytes())
        try:
            c.start_checkpointed(run, spec.epsilon(c.member.config.policy.dp_delta), checkpoint)
        except PolicyError:
            c.store.delete_blob(model_blob)  # refused by the budget: nothing will train
            raise
    else:
        data = _blob(c, model_blob)
        global_values = np.frombuffer(data, dtype="<f4").astype(np.float32)
        run.emit(m.ProgressEvent(m.Stage.RESUMED, iteration=checkpoint["round"] + 1))
    rounds = [m.RoundSummary(**r) for r in checkpoint["rounds"]]
    resumes = 0
    r = int(checkpoint["round"]) + 1
    while r <= spec.rounds:
        try:
            summary, global_values = _fedavg_round(c, run, spec, r, global_values)
        except PeerError as exc:
            resumes += 1
            c.resume_after(run, exc, resumes)
            continue
        rounds.append(summary)
        c.store.put_blob(model_blob, global_values.astype("<f4").tobytes())
        checkpoint.update(round=r, rounds=[dataclasses.asdict(x) for x in rounds])
        c.store.put("checkpoints", run.job_id, checkpoint)
        if run.job is not None:
            c.jobs.note_progress(run.job, iterations_done=r)
        run.emit(
            m.ProgressEvent(
                m.Stage.ROUND_DONE,
                summary.train_seconds + summary.aggregate_seconds,
                iteration=r,
                iterations=spec.rounds,
                round=summary,
            )
        )
        r += 1
    tensors = layout.tensors
    release = c.member.config.policy.release_fedavg_model
    params = global_values.astype("<f4").tobytes() if release else b""
    dp = float(checkpoint.get("dp_epsilon", 0.0)), float(checkpoint.get("dp_delta", 0.0))
    return m.FedAvgResult(run.job_id, tensors, params, tuple(rounds), *dp)


def _require_everyone(c: Coordinator, contributors: Sequence[str], what: str) -> None:
    n = c.member.config.n_parties
    if len(set(contributors)) != n or len(contributors) != n:
        raise ProtocolError(
            f"{len(set(contributors))} of {n} parties {what}: {sorted(contributors)}"
        )


def _fedavg_round(
    c: Coordinator, run: Run, spec: FedAvgSpec, r: int, global_values: Vector
) -> tuple[m.RoundSummary, Vector]:
    """One round: global parameters down, local training, encrypted sum up, decrypted."""
    event = {"iteration": r, "iterations": spec.rounds}
    slices = range(0, global_values.size, GLOBAL_SLICE)
    for i, off in enumerate(slices):
        piece = global_values[off : off + GLOBAL_SLICE].astype("<f4").tobytes()
        slice_step = m.FedAvgGlobalRequest(r, off, piece)
        c.round(run, slice_step, m.Stage.FEDAVG_GLOBAL, index=i + 1, count=len(slices), **event)
    t0 = time.perf_counter()
    train = c.round(
        run, m.FedAvgTrainRequest(r, values_digest(global_values)), m.Stage.FEDAVG_TRAIN, **event
    )
    train_seconds = time.perf_counter() - t0
    _require_everyone(c, train.contributors, "trained")
    params = c.member.params
    total = n_chunks(global_values.size, params)
    decimals = release_decimals(params, c.member.config.n_parties)
    size = chunk_size(params)
    mean_update = np.zeros(total * size, dtype=np.float64)
    t0 = time.perf_counter()
    update_bytes = 0
    groups = range(0, total, CHUNKS_PER_STEP)
    for i, first in enumerate(groups):
        count = min(CHUNKS_PER_STEP, total - first)
        up = c.round(
            run,
            m.FedAvgUpdateRequest(r, first, count, train.examples),
            m.Stage.FEDAVG_AGGREGATE,
            index=i + 1,
            count=len(groups),
            **event,
        )
        _require_everyone(c, up.contributors, "sent an update")
        update_bytes += sum(len(x) for x in up.ciphertexts)
        masked_cts = tuple(masked(c.ctx, ct) for ct in up.ciphertexts)
        step = m.FedAvgDecryptRequest(r, first, masked_cts, up.contributors)
        down = c.round(run, step, m.Stage.FEDAVG_AGGREGATE, index=i + 1, count=len(groups), **event)
        for j, (ct_bytes, share_bytes) in enumerate(zip(up.ciphertexts, down.shares, strict=True)):
            values = fuse_chunk(c.ctx, share_bytes, ct_bytes, decimals=decimals)
            mean_update[(first + j) * size : (first + j + 1) * size] = values
    aggregate_seconds = time.perf_counter() - t0
    new_global = (global_values + mean_update[: global_values.size]).astype(np.float32)
    summary = m.RoundSummary(
        train.examples,
        train.loss_sum / max(1, train.examples),
        train_seconds,
        aggregate_seconds,
        update_bytes,
    )
    return summary, new_global


def _joint_key(c: Coordinator, run: Run, job: m.JointKeyJob) -> m.JointKeyResult:
    return m.JointKeyResult(c.member.require_joint_key().to_bytes())


STATUS_DEADLINE_S = 5.0


def _status(c: Coordinator, run: Run, job: m.StatusJob) -> m.StatusResult:
    """Ping the tree: who is connected, in which key-generation state."""
    request = m.TreeRequest(
        run.job_id,
        c.member.params.name,
        c.member.config.n_parties,
        m.PingRequest(),
        STATUS_DEADLINE_S,
        run.kind,
    )
    result = c.tree.contribute(request, c.id).result
    assert isinstance(result, m.PingResponse)
    nodes = result.nodes
    missing = tuple(n.node_id for n in nodes if n.key_state == "disconnected")
    connected = tuple(n for n in nodes if n.key_state != "disconnected")
    policy = c.member.config.policy
    return m.StatusResult(
        connected,
        missing,
        c.member.params.name,
        c.member.schema,
        policy.dp_epsilon or 0.0,
        c.privacy_spent(),
        policy.dp_delta if policy.dp_epsilon is not None else 0.0,
    )


def _list_jobs(c: Coordinator, run: Run, job: m.ListJobsJob) -> m.ListJobsResult:
    return m.ListJobsResult(tuple(c.jobs.list(run.querier)))


def _cancel(c: Coordinator, run: Run, job: m.CancelJob) -> m.CancelResult:
    return m.CancelResult(c.jobs.cancel(job.job_id, run.querier))


def _list_models(c: Coordinator, run: Run, job: m.ListModelsJob) -> m.ListModelsResult:
    out = []
    for model_id, model in c.models.items():
        info = c.model_info.get(model_id, {})
        glm, network = _specs(model)
        out.append(
            m.ModelSummary(
                model_id,
                glm,
                info.get("querier", ""),
                float(info.get("created", 0.0)),
                tuple(model.refreshes_per_iteration),
                network,
            )
        )
    return m.ListModelsResult(tuple(out))


HANDLERS: dict[type[Any], Callable[..., Any]] = {
    m.SetupJob: _setup,
    m.StatsJob: _stats,
    m.TrainJob: _train,
    m.TrainNetworkJob: _train_network,
    m.ModelWeightsJob: _model_weights,
    m.PredictJob: _predict,
    m.FedAvgJob: _fedavg,
}
"""Jobs that use the tree or the keys: queued, one at a time."""

IMMEDIATE: dict[str, Callable[..., Any]] = {
    "model_info": _model_info,
    "joint_key": _joint_key,
    "status": _status,
    "list_jobs": _list_jobs,
    "cancel": _cancel,
    "list_models": _list_models,
}
"""Read-only jobs and job control: answered at once, never queued (``watch`` follows a
job; the servicer streams it)."""


# -- training over the tree ----------------------------------------------------------------------
class TreeFederation:
    """:class:`phe_fl.ml.Federation` over the node tree: each MAP stage and its COMBINE
    happen in one round (each inner node adds its subtree's gradients on the way up).

    ``staged``: the job's MAP runs over the network step (``network_map``, stages with
    refreshes between them); otherwise over a GLM's gradient step, one stage."""

    def __init__(
        self,
        coordinator: Coordinator,
        run: Run,
        global_batch: int,
        *,
        iterations: int = 0,
        total_rows: int = 0,
        staged: bool = False,
    ) -> None:
        self.staged = staged
        self.c = coordinator
        self.run = run
        self._global_batch = global_batch
        self._total_rows = total_rows
        self.iterations = iterations
        self.iteration = 1  # the iteration under way, 1-based (its refreshes report it)

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

    def total_rows(self) -> int:
        """Rows over the whole tree (from PREPARE): a DP job's sampling rate."""
        return self._total_rows

    def _map_round(self, step: m.TreeStep, stage: int = 0) -> Any:
        """One MAP+COMBINE round over the tree, reported as the iteration under way."""
        return self.c.round(
            self.run,
            step,
            m.Stage.MAP_COMBINE,
            iteration=self.iteration,
            iterations=self.iterations,
            index=stage,
        )

    def margin_moments(self, request: MapRequest, power: int) -> list[Ciphertext]:
        """The consented margin check's MAP over the tree (:class:`phe_fl.ml.MarginProbe`):
        every node's encrypted power sum, added on the way up."""
        (weights,) = request.weights
        step = m.MarginMomentRequest(
            request.iteration,
            request.global_batch,
            weights.to_bytes(),
            request.sample_rate,
            power,
        )
        result = self.c.round(self.run, step, m.Stage.MAP_COMBINE, iteration=self.iteration)
        return [self.ctx.ciphertext_from_bytes(result.moment)]

    def map_stage(
        self,
        request: MapRequest,
        stage: int,
        refreshed: Mapping[str, Sequence[Ciphertext]],
    ) -> MapStage:
        """One stage of MAP over the tree: a network's weights go down at stage 0 only,
        each party's refreshed intermediates after; a GLM's MAP is its gradient round."""
        self.iteration = request.iteration + 1
        if not self.staged:
            if stage or len(request.weights) != 1:
                raise ProtocolError("a GLM's MAP is one stage on one weight ciphertext")
            gradient = m.GradientRequest(
                request.iteration,
                request.global_batch,
                request.weights[0].to_bytes(),
                request.sample_rate,
            )
            result = self._map_round(gradient)
            total = self.ctx.ciphertext_from_bytes(result.gradient)
            return MapStage({}, (total,), self.n_parties)
        step = m.NetworkMapRequest(
            request.iteration,
            request.global_batch,
            tuple(w.to_bytes() for w in request.weights) if stage == 0 else (),
            stage,
            tuple(
                m.NodeCiphertexts(node, tuple(ct.to_bytes() for ct in cts))
                for node, cts in sorted(refreshed.items())
            ),
        )
        result = self._map_round(step, stage)
        pending = {
            p.node_id: tuple(self.ctx.ciphertext_from_bytes(ct) for ct in p.ciphertexts)
            for p in result.pending
        }
        if len(pending) != len(result.pending):
            raise ProtocolError("a node answered the same MAP stage twice")
        gradients = tuple(self.ctx.ciphertext_from_bytes(g) for g in result.gradients)
        return MapStage(pending, gradients, result.finished)

    def refresh_many(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        return self.c.refresh_many(
            self.run, cts, iteration=self.iteration, iterations=self.iterations
        )

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int, model_id: str = "") -> FloatArray:
        step = m.DecryptModelRequest(model_id or self.run.job_id, ct.to_bytes())
        share = self.c.round(self.run, step, m.Stage.MODEL_DECRYPTION).share
        proto = ThresholdDecrypt(self.ctx)
        return proto.finalize(proto.share_from_bytes(share), ct, length=length)
