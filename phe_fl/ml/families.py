"""The model families and the one table a job is looked up in.

A family is what the one loop (:class:`~phe_fl.ml.loop.Trainer`), the in-process
federation and the nodes need to know about a kind of model: how a party computes its
MAP, how the root turns the combined gradient into an update, how the trained weights
decrypt. Adding a family is adding a package and a row here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import Ciphertext
from phe_fl.ml.federation import Federation, MapWorker
from phe_fl.ml.glm import GLMParty, GLMUpdate, TrainingJob, decrypt_glm
from phe_fl.ml.jobs import Shard
from phe_fl.ml.loop import Decrypt, ModelUpdate
from phe_fl.ml.mlp import MLPJob, MLPParty, MLPUpdate, decrypt_layers

__all__ = ["ModelJob", "Family", "FAMILIES", "family_of", "family_named"]

ModelJob = TrainingJob | MLPJob
"""A training job of any family."""


@dataclass(frozen=True)
class Family:
    name: str
    """What a stored model record calls the family."""
    job: type[TrainingJob] | type[MLPJob]
    """Its job type (``job.from_record`` reads a stored record's spec)."""
    update: Callable[[Any, Federation], ModelUpdate]
    """The root's side of the loop for a job of this family."""
    party: Callable[[int, Any, Shard, int, int | None], MapWorker]
    """``party(index, job, shard, n_parties, seed)``: a party's MAP worker on its shard
    (``seed``: a differentially private GLM's sampling and noise seed, tests only)."""
    decrypt: Callable[[Any, Sequence[Ciphertext], Decrypt], Any]
    """``decrypt(job, weights, decrypt)``: the plaintext model from its ciphertexts."""


def _glm_party(
    index: int, job: TrainingJob, shard: Shard, n_parties: int, seed: int | None
) -> GLMParty:
    return GLMParty(index, job, shard, n_parties=n_parties, dp_seed=seed)


def _mlp_party(index: int, job: MLPJob, shard: Shard, n_parties: int, seed: int | None) -> MLPParty:
    return MLPParty(index, job, shard)


FAMILIES: dict[type, Family] = {
    f.job: f
    for f in (
        Family("glm", TrainingJob, GLMUpdate, _glm_party, decrypt_glm),
        Family("network", MLPJob, MLPUpdate, _mlp_party, decrypt_layers),
    )
}


def family_of(job: object) -> Family:
    """The family of ``job``; a :class:`~phe_fl.errors.ParameterError` naming its type
    when it is no training job."""
    family = FAMILIES.get(type(job))
    if family is None:
        known = ", ".join(t.__name__ for t in FAMILIES)
        raise ParameterError(f"{type(job).__name__} is not a training job ({known})")
    return family


def family_named(name: str) -> Family:
    """The family a stored model record names (:attr:`Family.name`)."""
    for family in FAMILIES.values():
        if family.name == name:
            return family
    known = ", ".join(f.name for f in FAMILIES.values())
    raise ParameterError(f"no model family {name!r} ({known})")
