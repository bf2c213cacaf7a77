"""A node's side of encrypted FedAvg: its app trains, it keeps its update, encrypts it chunk
by chunk under the collective key, and gives decryption shares for one thing only: the sum
of every party's update, once per round and chunk.

What a node must not lose lives in its state store: each job's spec and state, the round's
update (a blob, written before the training is answered, so that a node restarted between
training and encryption still encrypts the update it trained), and the aggregate guard's
record: the digests of every individual update it encrypted or saw from a child,
and the one sum it released per round and chunk.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phe_fl.errors import JobStateError, PheFlError, ProtocolError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import (
    Layout,
    Vector,
    encrypt_chunks,
    mask_digest,
    n_chunks,
    parallel,
    share_chunk,
)
from phe_fl.fedavg.site import Site
from phe_fl.federation import messages as m
from phe_fl.federation.config import NodeConfig
from phe_fl.federation.state import FEDAVG, Tracker
from phe_fl.federation.store import NodeStore
from phe_fl.mhe import Context, JointPublicKey, Party

__all__ = ["FedAvgParty", "ROUNDS_KEPT"]


ROUNDS_KEPT = 2
"""Rounds whose individual-update digests a node keeps (the round in flight and the one
before); older updates' ciphertexts are gone from every honest node."""


@dataclass
class _Job:
    tracker: Tracker
    spec: FedAvgSpec | None = None
    dp_seed: int | None = None  # secret: drawn at PREPARE of a DP job, never logged
    # round -> SHA-256 of individual (not whole-federation) ciphertexts' masked forms
    individual: dict[int, set[str]] = field(default_factory=dict)
    # round -> chunks this node encrypted its own update into
    contributed: dict[int, set[int]] = field(default_factory=dict)
    # "round:chunk" -> SHA-256 of the one sum's masked form released
    released: dict[str, str] = field(default_factory=dict)
    # the round's update, weighted by nothing yet: (round, examples, loss)
    fitted: tuple[int, int, float] | None = None
    update: Vector | None = None

    def record(self) -> dict[str, Any]:
        return {
            "state": self.tracker.state,
            "spec": None if self.spec is None else dataclasses.asdict(self.spec),
            "dp_seed": None if self.dp_seed is None else f"{self.dp_seed:x}",
            "individual": {str(r): sorted(d) for r, d in self.individual.items()},
            "contributed": {str(r): sorted(c) for r, c in self.contributed.items()},
            "released": self.released,
            "fitted": None if self.fitted is None else list(self.fitted),
        }


class FedAvgParty:
    """This node's FedAvg jobs (the :class:`~phe_fl.federation.member.Member` delegates)."""

    def __init__(self, config: NodeConfig, store: NodeStore, ctx: Context) -> None:
        self.node_id = config.id
        self.n_parties = config.n_parties
        self.threads = config.fedavg.threads
        self.store = store
        self.ctx = ctx
        self.site = Site(
            config.id, config.fedavg.apps, config.fedavg.options, n_parties=config.n_parties
        )
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()
        for job_id, r in store.items("fedavg"):
            job = _Job(Tracker(FEDAVG, f"{job_id!r} on node {self.node_id}", state=r["state"]))
            job.spec = None if r["spec"] is None else FedAvgSpec(**r["spec"])
            seed = r.get("dp_seed")
            job.dp_seed = None if seed is None else int(seed, 16)
            job.individual = {int(k): set(v) for k, v in r["individual"].items()}
            job.contributed = {int(k): set(v) for k, v in r["contributed"].items()}
            job.released = dict(r["released"])
            fitted = r["fitted"]
            job.fitted = None if fitted is None else (int(fitted[0]), int(fitted[1]), fitted[2])
            self._jobs[job_id] = job

    def job(self, job_id: str) -> _Job:
        with self._lock:
            if job_id not in self._jobs:
                self._jobs[job_id] = _Job(Tracker(FEDAVG, f"{job_id!r} on node {self.node_id}"))
            return self._jobs[job_id]

    def save(self, job_id: str) -> None:
        """The job's record (inside the store transaction that keeps the step's answer)."""
        self.store.put("fedavg", job_id, self.job(job_id).record())

    def _prepared(self, job_id: str) -> FedAvgSpec:
        """The job's spec, its app loaded again if this node restarted since PREPARE."""
        job = self.job(job_id)
        if job.spec is None:
            raise JobStateError(f"FedAvg job {job_id!r} is not prepared on node {self.node_id}")
        self.site.prepare(job_id, job.spec, dp_seed=job.dp_seed)
        return job.spec

    # -- the steps ------------------------------------------------------------------------------
    def prepare(self, job_id: str, spec: FedAvgSpec) -> Layout:
        """Load the app; a DP job's secret seed is drawn once (kept with the job's record,
        so that every retry of a round draws the same batch and noise)."""
        job = self.job(job_id)
        seed = job.dp_seed
        if spec.dp and seed is None:
            seed = secrets.randbits(128)
        layout = self.site.prepare(job_id, spec, dp_seed=seed if spec.dp else None)
        job.spec, job.dp_seed = spec, seed if spec.dp else None
        return layout

    def layout(self, job_id: str) -> Layout:
        self._prepared(job_id)
        return self.site.job(job_id).layout

    def initial(self, job_id: str) -> Vector:
        self._prepared(job_id)
        return self.site.initial(job_id)

    def receive_global(self, job_id: str, step: m.FedAvgGlobalRequest) -> list[str]:
        self._prepared(job_id)
        self.site.receive_global(job_id, step.round, step.offset, step.values)
        return [self.node_id]

    def train(self, job_id: str, step: m.FedAvgTrainRequest) -> tuple[int, float]:
        """Local training; the update is kept (blob, then record) before it is answered."""
        self._prepared(job_id)
        update, result = self.site.fit(job_id, step.round, step.global_digest)
        job = self.job(job_id)
        self.store.put_blob(f"fedavg-update-{job_id}", update.astype("<f4").tobytes())
        job.update, job.fitted = update, (step.round, result.examples, float(result.loss))
        return result.examples, float(result.loss) * result.examples

    def encrypt(self, job_id: str, step: m.FedAvgUpdateRequest, key: JointPublicKey) -> list[bytes]:
        """This node's update of ``step.round`` times examples / total, encrypted."""
        job = self.job(job_id)
        if job.fitted is None or job.fitted[0] != step.round:
            raise JobStateError(
                f"node {self.node_id} has not trained round {step.round} of FedAvg job {job_id!r}"
            )
        if job.update is None:
            data = self.store.get_blob(f"fedavg-update-{job_id}")
            if data is None:
                raise JobStateError(f"node {self.node_id} lost its update of job {job_id!r}")
            job.update = np.frombuffer(data, dtype="<f4").astype(np.float32)
        examples = job.fitted[1]
        if not examples <= step.total_examples:
            raise JobStateError(
                f"total examples {step.total_examples} below this node's own {examples}"
            )
        weighted = (job.update * np.float32(examples / step.total_examples)).astype(np.float32)
        cts = encrypt_chunks(
            self.ctx,
            key,
            weighted,
            step.first_chunk,
            step.chunks,
            n_parties=self.n_parties,
            threads=self.threads,
        )
        self.note_individual(job_id, step.round, cts)
        job.contributed.setdefault(step.round, set()).update(
            range(step.first_chunk, step.first_chunk + step.chunks)
        )
        self._forget_old(job)
        if step.first_chunk + step.chunks == n_chunks(job.update.size, self.ctx.params):
            job.update = None  # the last chunk: a retry reads the blob again
        return cts

    def note_individual(self, job_id: str, round_: int, cts: Sequence[bytes]) -> None:
        """Ciphertexts that hold less than every party's update (this node's own, a child's
        subtree's): never to be decrypted, whatever their c0 (the guard compares the c1
        a decryption depends on, in whatever form it comes: :func:`mask_digest`)."""
        digests = self.job(job_id).individual.setdefault(round_, set())
        digests.update(parallel(lambda ct: mask_digest(self.ctx, ct), cts, self.threads))

    def decryption_shares(
        self, job_id: str, step: m.FedAvgDecryptRequest, party: Party
    ) -> list[bytes]:
        """Shares of the sums the guard let through (:meth:`refusal` ran in admit)."""
        job = self.job(job_id)
        for i, data in enumerate(step.masked):
            job.released[f"{step.round}:{step.first_chunk + i}"] = mask_digest(self.ctx, data)
        return parallel(lambda x: share_chunk(self.ctx, party, x), step.masked, self.threads)

    def pairwise(
        self, add: Callable[[bytes, bytes], bytes], a: Sequence[bytes], b: Sequence[bytes]
    ) -> list[bytes]:
        """Chunk-wise sums of two subtrees' serialized ciphertexts or shares."""
        if len(a) != len(b):
            raise ProtocolError(f"{len(b)} chunks added to {len(a)}")
        return [add(x, y) for x, y in zip(a, b, strict=True)]

    # -- the aggregate guard -----------------------------------------------------------------------
    def refusal(self, job_id: str, step: m.FedAvgDecryptRequest) -> str | None:
        """Why a decryption of ``step``'s ciphertexts must be refused, or None: only the sum
        of every party's update is decrypted, and only once per round and chunk."""
        contributors = set(step.contributors)
        if len(contributors) != len(step.contributors) or len(contributors) != self.n_parties:
            return (
                f"the sum holds the updates of {len(contributors)} distinct nodes, not of all "
                f"{self.n_parties} parties"
            )
        if self.node_id not in contributors:
            return f"the sum does not hold this node's ({self.node_id}) update"
        job = self.job(job_id)
        mine = job.contributed.get(step.round, set())
        individual = job.individual.get(step.round, set())
        for i, data in enumerate(step.masked):
            chunk = step.first_chunk + i
            if chunk not in mine:
                return f"this node encrypted no update into chunk {chunk} of round {step.round}"
            digest = mask_digest(self.ctx, data)
            if digest in individual:
                return (
                    f"chunk {chunk} of round {step.round} is an individual update (this node's "
                    "or a child's subtree's), not the sum of every party's"
                )
            earlier = job.released.get(f"{step.round}:{chunk}")
            if earlier is not None and earlier != digest:
                return (
                    f"chunk {chunk} of round {step.round} was decrypted already for another "
                    "ciphertext: one sum per round and chunk"
                )
        return None

    def individual_update(self, ct_bytes: bytes) -> str | None:
        """For any other decryption or key switch: the FedAvg job whose individual update
        ``ct_bytes`` is, if it is one."""
        if not any(job.individual for job in self._jobs.values()):
            return None
        try:
            digest = mask_digest(self.ctx, ct_bytes)
        except PheFlError:  # not a two-element one-tower ciphertext: not an update either
            return None
        for job_id, job in self._jobs.items():
            if any(digest in d for d in job.individual.values()):
                return job_id
        return None

    def _forget_old(self, job: _Job) -> None:
        newest = max(job.contributed, default=0)
        for table in (job.individual, job.contributed):
            for r in [r for r in table if r <= newest - ROUNDS_KEPT]:
                del table[r]
        for key in [k for k in job.released if int(k.split(":")[0]) <= newest - ROUNDS_KEPT]:
            del job.released[key]
