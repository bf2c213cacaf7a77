"""The boundary between the training loop and whatever carries its messages.

The loop (:class:`~phe_fl.ml.loop.Trainer`, the root's side) only ever talks to a
:class:`Federation`: it encrypts the initial model, broadcasts the encrypted weights with
a :class:`MapRequest` and drives MAP in stages (:meth:`Federation.map_stage`): each party
runs until its intermediates need a collective refresh or it has its gradients; the
root refreshes what they asked for in one round and hands it back. A GLM's MAP needs no
refresh: it is a MAP of one stage. Gradients come back added (COMBINE: up the tree in a
deployment). At the end the model is decrypted only if every party agreed.

Two implementations: the gRPC tree (:class:`phe_fl.federation.coordinator.TreeFederation`)
and, for tests and benchmarks, every party in one process
(:class:`phe_fl.testing.LocalTrainingFederation`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from phe_fl.errors import ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.ml.staging import Lockstep

__all__ = [
    "MapRequest",
    "MapStage",
    "MapWorker",
    "Federation",
    "MarginProbe",
    "RowCounter",
    "ModelDecryptionRefused",
]


class ModelDecryptionRefused(ProtocolError, PermissionError):
    """Decryption of the trained model was requested without every party's consent."""


@dataclass(frozen=True)
class MapRequest:
    """What the root broadcasts at each iteration: the encrypted weights and the public
    step data every party needs to compute its share of the gradient."""

    iteration: int
    weights: tuple[Ciphertext, ...]
    """The model's weight ciphertexts in order (a GLM: one; a network: every layer's
    tiles, :meth:`~phe_fl.ml.mlp.layout.MLPLayout.layer_cts`)."""
    global_batch: int
    """Samples in this iteration over all parties (the gradient is their mean). In a
    differentially private job, the *expected* global batch ``sample_rate * total rows``
    (public), by which the noisy sum is divided whatever the sampled batch's size."""
    sample_rate: float = 0.0
    """Differentially private jobs: each record's inclusion probability in this
    iteration's batch (Poisson sampling at every party, ``global_batch / total rows``).
    ``0``: the fixed batches of :func:`phe_fl.ml.jobs.batch_rows`."""


@dataclass(frozen=True)
class MapStage:
    """What one stage of MAP brought back (:mod:`phe_fl.ml.staging`): the intermediates
    each party needs refreshed before it can go on, and the summed gradients of the
    parties that finished at this stage."""

    pending: Mapping[str, tuple[Ciphertext, ...]]
    """Party id -> its ciphertexts to refresh, in its order (parties that finished or
    need nothing are absent)."""
    gradients: tuple[Ciphertext, ...] = ()
    """Per weight ciphertext, the sum over the parties that finished at this stage
    (empty: none)."""
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

    def start_map(self, request: MapRequest) -> Lockstep[list[Ciphertext]]:
        """MAP, paused at its first refresh point (or finished, for a MAP that needs none):
        its ``pending`` intermediates go to the federation's refresh, its ``advance``
        takes them back refreshed; once finished, its results are the per-chunk gradient
        contributions, one ciphertext per weight ciphertext."""
        ...


@runtime_checkable
class Federation(Protocol):
    """What the root needs from a federation, independent of the transport and of the
    model family."""

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

    def map_stage(
        self,
        request: MapRequest,
        stage: int,
        refreshed: Mapping[str, Sequence[Ciphertext]],
    ) -> MapStage:
        """Stage 0 starts every party's MAP of ``request``; stage s > 0 hands each party
        its refreshed intermediates of stage s - 1 and runs it to its next pause. The
        finished parties' gradients are added (over a tree, on the way up: COMBINE)."""
        ...

    def refresh_many(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        """Collective refresh (bootstrap) of a batch in one round: each back at full
        depth, still under the joint key."""
        ...

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray:
        """Collective decryption, refused with :class:`ModelDecryptionRefused` unless every
        party's job config allows it."""
        ...


@runtime_checkable
class MarginProbe(Protocol):
    """A federation that can run a GLM's consented margin check (optional: the root uses
    it only when the federation offers it). Each party computes, on its plaintext batch of
    ``request.iteration`` and the broadcast weights, the encrypted power sum of its margins
    (:meth:`phe_fl.ml.glm.GLMParty.margin_moment`); the root adds them and asks for the
    collective decryption of that one scalar, under the same consent as the model.

    Over the gRPC federation this is one more round shaped like MAP+COMBINE (a
    ``MarginCheckRequest`` carrying the weights, the iteration and the power; every node
    answers with its moment ciphertext, inner nodes add them on the way up) followed by the
    decryption round the model-weights job already uses, gated by each node's policy."""

    def margin_moments(self, request: MapRequest, power: int) -> list[Ciphertext]:
        """Every party's encrypted ``sum_i (z_i / 2a)^power`` over its batch (or fewer
        ciphertexts, already added on the way up)."""
        ...


@runtime_checkable
class RowCounter(Protocol):
    """A federation that reports the total number of training rows over all parties
    (public: every party's row count is already in its audit log and in
    :meth:`Federation.global_batch`). Differentially private jobs need it for the
    sampling rate ``q = global_batch / total_rows``."""

    def total_rows(self) -> int: ...
