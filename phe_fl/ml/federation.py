"""The boundary between the training loop and whatever carries its messages.

The loop (the root's REDUCE side) only ever talks to a :class:`Federation`: it encrypts
the initial model, broadcasts the encrypted weights with a :class:`MapRequest` and gets
one encrypted gradient per party back (MAP), adds them (COMBINE), asks for collective
refreshes and, at the end, for a decryption that every party must have agreed to. Each
message is a ciphertext plus a few public numbers, so a gRPC federation can carry the
same messages; :class:`LocalTrainingFederation` runs all parties in one process (tests
and benchmarks only) and round-trips every ciphertext through bytes like the network.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from phe_fl.errors import ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml.staging import Lockstep, layer_sums

__all__ = [
    "MapRequest",
    "LayersMapRequest",
    "LayersWorker",
    "MapStage",
    "Federation",
    "LayersFederation",
    "MapWorker",
    "MarginProbe",
    "RowCounter",
    "LocalTrainingFederation",
    "ModelDecryptionRefused",
]


class ModelDecryptionRefused(ProtocolError, PermissionError):
    """Decryption of the trained model was requested without every party's consent."""


@dataclass(frozen=True)
class MapRequest:
    """What the root broadcasts at each iteration: the encrypted weights and the public
    step data every party needs to compute its share of the gradient."""

    iteration: int
    weights: Ciphertext
    global_batch: int
    """Samples in this iteration over all parties (the gradient is their mean). In a
    differentially private job, the *expected* global batch ``sample_rate * total rows``
    (public), by which the noisy sum is divided whatever the sampled batch's size."""
    sample_rate: float = 0.0
    """Differentially private jobs: each record's inclusion probability in this
    iteration's batch (Poisson sampling at every party, ``global_batch / total rows``;
    :meth:`phe_fl.ml.glm.GLMTrainer.sample_rate`). ``0``: the fixed batches of
    :func:`phe_fl.ml.glm.batch_rows` (jobs without DP)."""


@dataclass(frozen=True)
class LayersMapRequest:
    """:class:`MapRequest` for models with one weight ciphertext per layer (networks)."""

    iteration: int
    weights: tuple[Ciphertext, ...]
    global_batch: int


@dataclass(frozen=True)
class MapStage:
    """What one stage of a network's MAP brought back (:mod:`phe_fl.ml.staging`): the
    intermediates each party needs refreshed before it can go on, and the summed
    gradients of the parties that finished at this stage."""

    pending: Mapping[str, tuple[Ciphertext, ...]]
    """Party id -> its ciphertexts to refresh, in its order (parties that finished or
    need nothing are absent)."""
    gradients: tuple[Ciphertext, ...] = ()
    """Per layer, the sum over the parties that finished at this stage (empty: none)."""
    finished: int = 0
    """How many parties finished at this stage."""


@runtime_checkable
class MapWorker(Protocol):
    """A party's side of training: its plaintext shard never leaves it."""

    @property
    def index(self) -> int: ...

    @property
    def allows_model_decryption(self) -> bool: ...

    def batch_size_at(self, iteration: int) -> int:
        """Samples this party contributes at ``iteration`` (public count)."""
        ...

    def gradient(self, request: MapRequest) -> Ciphertext:
        """MAP: this party's encrypted gradient contribution for ``request``."""
        ...


@runtime_checkable
class LayersWorker(Protocol):
    """A party's side of network training (one gradient ciphertext per layer)."""

    @property
    def index(self) -> int: ...

    @property
    def allows_model_decryption(self) -> bool: ...

    def batch_size_at(self, iteration: int) -> int: ...

    def start_map(self, request: LayersMapRequest) -> Lockstep[list[Ciphertext]]:
        """MAP, paused at its first refresh point: its ``pending`` intermediates go to the
        federation's refresh, its ``advance`` takes them back refreshed; once finished,
        its results are the per-chunk, per-layer gradient contributions."""
        ...


@runtime_checkable
class Federation(Protocol):
    """What the root needs from a federation, independent of the transport."""

    @property
    def ctx(self) -> Context: ...

    @property
    def n_parties(self) -> int: ...

    def encrypt(self, values: FloatArray) -> Ciphertext:
        """Encrypt under the collective public key."""
        ...

    def global_batch(self, iteration: int) -> int:
        """Total samples over all parties at ``iteration``."""
        ...

    def map(self, request: MapRequest) -> list[Ciphertext]:
        """Broadcast ``request``; the parties' encrypted gradients come back (one per
        party, or fewer if a tree transport already added them on the way up)."""
        ...

    def aggregate(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        """COMBINE: the homomorphic sum (up the tree in a deployment)."""
        ...

    def refresh(self, ct: Ciphertext) -> Ciphertext:
        """Collective bootstrap: ``ct`` back at full depth, still under the joint key."""
        ...

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray:
        """Collective decryption, refused with :class:`ModelDecryptionRefused` unless every
        party's job config allows it."""
        ...


@runtime_checkable
class MarginProbe(Protocol):
    """A federation that can run the consented margin check (optional: the root uses it
    only when the federation offers it). Each party computes, on its plaintext batch of
    ``request.iteration`` and the broadcast weights, the encrypted power sum of its margins
    (:meth:`phe_fl.ml.glm.GLMParty.margin_moment`); the root adds them and asks for the
    collective decryption of that one scalar, under the same consent as the model.

    Over the gRPC federation this is one more round shaped like MAP+COMBINE (a
    ``MarginCheckRequest`` carrying the weights, the iteration and the power; every node
    answers with its moment ciphertext, inner nodes add them on the way up) followed by the
    decryption round the model-weights job already uses, gated by each node's policy."""

    @property
    def ctx(self) -> Context: ...

    def global_batch(self, iteration: int) -> int: ...

    def aggregate(self, cts: Sequence[Ciphertext]) -> Ciphertext: ...

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray: ...

    def margin_moments(self, request: MapRequest, power: int) -> list[Ciphertext]:
        """Every party's encrypted ``sum_i (z_i / 2a)^power`` over its batch."""
        ...


@runtime_checkable
class RowCounter(Protocol):
    """A federation that reports the total number of training rows over all parties
    (public: every party's row count is already in its audit log and in
    :meth:`Federation.global_batch`). Differentially private jobs need it for the
    sampling rate ``q = global_batch / total_rows``."""

    def total_rows(self) -> int: ...


@runtime_checkable
class LayersFederation(Protocol):
    """What the root needs to train a network: :class:`Federation`'s verbs with a MAP
    that carries one weight ciphertext per layer."""

    @property
    def ctx(self) -> Context: ...

    @property
    def n_parties(self) -> int: ...

    def encrypt(self, values: FloatArray) -> Ciphertext: ...

    def global_batch(self, iteration: int) -> int: ...

    def map_stage(
        self,
        request: LayersMapRequest,
        stage: int,
        refreshed: Mapping[str, Sequence[Ciphertext]],
    ) -> MapStage:
        """Stage 0 starts every party's MAP of ``request``; stage s > 0 hands each party
        its refreshed intermediates of stage s - 1 and runs it to its next pause. Over a
        tree, the finished parties' gradients are added on the way up (COMBINE)."""
        ...

    def refresh_many(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        """Collective refresh of a batch, in one round (every party contributes to each)."""
        ...

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray: ...


class LocalTrainingFederation:
    """All parties in one process over a :class:`LocalFederation` (tests, benchmarks)."""

    def __init__(self, fed: LocalFederation, workers: Sequence[MapWorker | LayersWorker]) -> None:
        if len(workers) != fed.n_parties:
            raise ProtocolError(
                f"{len(workers)} training workers for a federation of {fed.n_parties} parties"
            )
        self.fed = fed
        self.workers = list(workers)
        self._maps: dict[str, Lockstep[list[Ciphertext]]] = {}
        """The parties' MAPs of the iteration under way, by party id."""

    @property
    def ctx(self) -> Context:
        return self.fed.ctx

    @property
    def n_parties(self) -> int:
        return self.fed.n_parties

    def _wire(self, ct: Ciphertext) -> Ciphertext:
        return self.ctx.ciphertext_from_bytes(ct.to_bytes()) if self.fed.wire else ct

    def encrypt(self, values: FloatArray) -> Ciphertext:
        return self.fed.encrypt(values)

    def global_batch(self, iteration: int) -> int:
        return sum(w.batch_size_at(iteration) for w in self.workers)

    def total_rows(self) -> int:
        """Training rows over all parties (:class:`RowCounter`)."""
        return sum(int(getattr(w, "n_samples", 0)) for w in self.workers)

    def map(self, request: MapRequest) -> list[Ciphertext]:
        """MAP; a retried request reaches each party again, which answers with the same
        noise and batch (:meth:`phe_fl.ml.glm.GLMParty.gradient`): its draws are fixed
        per iteration, never redrawn."""
        sent = dataclasses.replace(request, weights=self._wire(request.weights))
        return [self._wire(w.gradient(sent)) for w in self._workers(MapWorker)]

    def margin_moments(self, request: MapRequest, power: int) -> list[Ciphertext]:
        """The margin check's MAP (:class:`MarginProbe`): parties whose worker offers
        ``margin_moment`` (GLM parties) answer."""
        sent = dataclasses.replace(request, weights=self._wire(request.weights))
        out = []
        for w in self._workers(MapWorker):
            moment = getattr(w, "margin_moment", None)
            if moment is None:
                raise ProtocolError(f"party {w.index} cannot run the margin check")
            out.append(self._wire(moment(sent, power)))
        return out

    def map_stage(
        self,
        request: LayersMapRequest,
        stage: int,
        refreshed: Mapping[str, Sequence[Ciphertext]],
    ) -> MapStage:
        """A network MAP's stage at every party, each ciphertext round-tripped through
        bytes as it would travel."""
        if stage == 0:
            sent = LayersMapRequest(
                request.iteration,
                tuple(self._wire(w) for w in request.weights),
                request.global_batch,
            )
            self._maps = {str(w.index): w.start_map(sent) for w in self._workers(LayersWorker)}
        else:
            for party, steps in self._maps.items():
                if not steps.finished:
                    steps.advance([self._wire(ct) for ct in refreshed.get(party, ())])
        pending, done = {}, []
        for party, steps in list(self._maps.items()):
            if steps.finished:
                done.append(steps.results())
                del self._maps[party]
            else:
                pending[party] = tuple(self._wire(ct) for ct in steps.pending)
        gradients: tuple[Ciphertext, ...] = ()
        if done:
            summed = layer_sums(self.ctx, [chunk for d in done for chunk in d])
            gradients = tuple(self._wire(g) for g in summed)
        return MapStage(pending, gradients, len(done))

    def _workers(self, kind: type[MapWorker] | type[LayersWorker]) -> list:  # type: ignore[type-arg]
        wrong = [w.index for w in self.workers if not isinstance(w, kind)]
        if wrong:
            raise ProtocolError(
                f"parties {wrong} do not train this kind of model (expected {kind.__name__})"
            )
        return self.workers

    def aggregate(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        if not cts:
            raise ProtocolError("nothing to aggregate")
        return self.ctx.sum(cts)

    def refresh(self, ct: Ciphertext) -> Ciphertext:
        return self.fed.refresh(ct)

    def refresh_many(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        return [self._wire(self.fed.refresh(self._wire(ct))) for ct in cts]

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray:
        refusing = [w.index for w in self.workers if not w.allows_model_decryption]
        if refusing:
            raise ModelDecryptionRefused(
                f"decrypting the trained model needs every party's consent; part"
                f"{'ies' if len(refusing) > 1 else 'y'} {refusing} did not set "
                f"allow_model_decryption=True in their job config"
            )
        return self.fed.decrypt(ct, length=length)
