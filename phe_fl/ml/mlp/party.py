"""MAP for a network: one party's staged gradient computation on its plaintext shard."""

from __future__ import annotations

import numpy as np

from phe_fl.errors import ProtocolError
from phe_fl.mhe.context import Ciphertext
from phe_fl.ml.federation import MapRequest
from phe_fl.ml.jobs import Shard, ShardWorker, batch_rows, validate_shard
from phe_fl.ml.mlp.job import MLPJob
from phe_fl.ml.mlp.passes import chunk_gradients
from phe_fl.ml.packing import chunks
from phe_fl.ml.staging import Lockstep

__all__ = ["MLPParty"]


class MLPParty(ShardWorker[MLPJob]):
    """One party's training endpoint for networks: its shard stays here as plaintext."""

    def __init__(self, index: int, job: MLPJob, shard: Shard) -> None:
        x, y = validate_shard(job, shard, party=index)
        super().__init__(index, job, x, y)
        self._labels = y.astype(np.intp)

    def start_map(self, request: MapRequest) -> Lockstep[list[Ciphertext]]:
        """MAP of ``request``, paused before its first refresh: advance it (its chunks
        together) with the federation's refreshed ciphertexts until it finishes, then
        :func:`layer_sums` gives the encrypted ``U_1 .. U_L`` of this party's batch,
        unreduced over the samples of a chunk."""
        job = self.job
        if request.global_batch < 1:
            raise ProtocolError(f"party {self.index}: global batch must be positive")
        if len(request.weights) != job.layout.n_cts:
            raise ProtocolError(
                f"party {self.index}: got {len(request.weights)} weight ciphertexts, the "
                f"network has {job.layout.n_cts} ({job.n_layers} layers)"
            )
        ctx = request.weights[0].context
        if ctx.params.name != job.params:
            raise ProtocolError(
                f"party {self.index}: weights use parameter set {ctx.params.name!r}, the job "
                f"declares {job.params!r}"
            )
        eta = job.learning_rate / request.global_batch
        rows = batch_rows(self.n_samples, job.batch_size, request.iteration)
        x, y = self._x[rows], self._labels[rows]
        steps = Lockstep(
            [
                chunk_gradients(job, ctx, request.weights, x[sl], y[sl], eta)
                for sl in chunks(len(rows), job.layout.samples_per_ct)
            ]
        )
        steps.advance()
        return steps
