"""Every party of a training federation in one process: for tests and benchmarks only.

:class:`LocalTrainingFederation` is the one loop's :class:`~phe_fl.ml.federation.Federation`
over a :class:`~phe_fl.mhe.simulation.LocalFederation`, which holds every party's secret
share in this process: what no deployment may do (a node holds one share; the gRPC
federation is :class:`phe_fl.federation.coordinator.TreeFederation`). Every ciphertext
crosses a byte boundary as it would between processes.

In one process::

    job = TrainingJob(n_features=8, iterations=10, allow_model_decryption=True)
    fed = setup_local(job, shards)          # validates job and shards, then key generation
    model = Trainer(job, fed).train()       # encrypted weights, refreshes per iteration
    weights = model.decrypt(fed)            # refused unless every party consented
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping, Sequence

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml.families import ModelJob, family_of
from phe_fl.ml.federation import MapRequest, MapStage, MapWorker, ModelDecryptionRefused
from phe_fl.ml.jobs import Shard, validate_shards
from phe_fl.ml.staging import Lockstep, layer_sums

__all__ = ["LocalTrainingFederation", "setup_local"]


class LocalTrainingFederation:
    """All parties in one process over a :class:`LocalFederation` (tests, benchmarks)."""

    def __init__(self, fed: LocalFederation, workers: Sequence[MapWorker]) -> None:
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

    def wire(self, ct: Ciphertext) -> Ciphertext:
        """``ct`` after a trip through bytes, as it would travel between processes."""
        return self.ctx.ciphertext_from_bytes(ct.to_bytes()) if self.fed.wire else ct

    def encrypt(self, values: FloatArray) -> Ciphertext:
        return self.fed.encrypt(values)

    def global_batch(self, iteration: int) -> int:
        return sum(w.batch_size_at(iteration) for w in self.workers)

    def total_rows(self) -> int:
        """Training rows over all parties (:class:`~phe_fl.ml.federation.RowCounter`)."""
        return sum(int(getattr(w, "n_samples", 0)) for w in self.workers)

    def _sent(self, request: MapRequest) -> MapRequest:
        return dataclasses.replace(request, weights=tuple(self.wire(w) for w in request.weights))

    def map_stage(
        self,
        request: MapRequest,
        stage: int,
        refreshed: Mapping[str, Sequence[Ciphertext]],
    ) -> MapStage:
        """A MAP's stage at every party. A retried stage 0 reaches each party again, which
        answers the same: a GLM party's batch and noise are fixed per iteration, a
        network's MAP draws nothing."""
        if stage == 0:
            sent = self._sent(request)
            self._maps = {str(w.index): w.start_map(sent) for w in self.workers}
        else:
            for party, steps in self._maps.items():
                if not steps.finished:
                    steps.advance([self.wire(ct) for ct in refreshed.get(party, ())])
        pending, done = {}, []
        for party, steps in list(self._maps.items()):
            if steps.finished:
                done.append(steps.results())
                del self._maps[party]
            else:
                pending[party] = tuple(self.wire(ct) for ct in steps.pending)
        gradients: tuple[Ciphertext, ...] = ()
        if done:
            summed = layer_sums(self.ctx, [chunk for d in done for chunk in d])
            gradients = tuple(self.wire(g) for g in summed)
        return MapStage(pending, gradients, len(done))

    def margin_moments(self, request: MapRequest, power: int) -> list[Ciphertext]:
        """A GLM's margin check (:class:`~phe_fl.ml.federation.MarginProbe`)."""
        sent = self._sent(request)
        out = []
        for w in self.workers:
            moment = getattr(w, "margin_moment", None)
            if moment is None:
                raise ProtocolError(f"party {w.index} cannot run the margin check")
            out.append(self.wire(moment(sent, power)))
        return out

    def refresh_many(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        return [self.wire(self.fed.refresh(self.wire(ct))) for ct in cts]

    def decrypt_if_agreed(self, ct: Ciphertext, *, length: int) -> FloatArray:
        refusing = [w.index for w in self.workers if not w.allows_model_decryption]
        if refusing:
            raise ModelDecryptionRefused(
                f"decrypting the trained model needs every party's consent; part"
                f"{'ies' if len(refusing) > 1 else 'y'} {refusing} did not set "
                f"allow_model_decryption=True in their job config"
            )
        return self.fed.decrypt(ct, length=length)


def setup_local(
    job: ModelJob,
    shards: Sequence[Shard],
    *,
    consents: Sequence[bool] | None = None,
    rng: random.Random | None = None,
    wire: bool = True,
    dp_seeds: Sequence[int] | None = None,
) -> LocalTrainingFederation:
    """Validate the job and every shard, then (only then) run key generation with exactly
    the job's rotation keys; a party per shard, of the job's family. ``consents``
    overrides each party's ``allow_model_decryption`` (as if each party had its own copy
    of the config). ``dp_seeds`` fixes each party's sampling and noise seed of a
    differentially private GLM, otherwise drawn from :mod:`secrets`."""
    family = family_of(job)
    checked = validate_shards(job, shards)
    n = len(checked)
    if consents is not None and len(consents) != n:
        raise ParameterError(f"{len(consents)} consents for {n} parties")
    if dp_seeds is not None and len(dp_seeds) != n:
        raise ParameterError(f"{len(dp_seeds)} dp_seeds for {n} parties")
    agree = [job.allow_model_decryption] * n if consents is None else [bool(c) for c in consents]
    workers = [
        family.party(
            i,
            job
            if c == job.allow_model_decryption
            else dataclasses.replace(job, allow_model_decryption=c),
            shard,
            n,
            None if dp_seeds is None else dp_seeds[i],
        )
        for i, (c, shard) in enumerate(zip(agree, checked, strict=True))
    ]
    fed = LocalFederation.setup(
        job.parameter_set, n, rotations=job.rotation_indices(), rng=rng, wire=wire
    )
    return LocalTrainingFederation(fed, workers)
