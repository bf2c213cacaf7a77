"""REDUCE for a network: the root's side of :class:`~phe_fl.ml.loop.Trainer` for
multinomial regression and MLPs."""

from __future__ import annotations

from collections.abc import Sequence

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, FloatArray
from phe_fl.ml.federation import Federation, MapRequest
from phe_fl.ml.loop import Decrypt, IterationReport, Prepared
from phe_fl.ml.mlp.job import MLPJob
from phe_fl.ml.packing import rotsum
from phe_fl.ml.staging import with_levels

__all__ = ["MLPUpdate", "decrypt_layers"]


def decrypt_layers(
    job: MLPJob, weights: Sequence[Ciphertext], decrypt: Decrypt
) -> list[FloatArray]:
    """``W_1 .. W_L`` from the model's tile ciphertexts, each decrypted by ``decrypt``
    (``decrypt(ct, length=...)``: a consented collective decryption)."""
    layout = job.layout
    if len(weights) != layout.n_cts:
        raise ProtocolError(f"{len(weights)} weight ciphertexts, the network has {layout.n_cts}")
    return [
        layout.weights_from_tiles(
            k, [decrypt(w, length=layout.block) for w in weights[layout.layer_cts(k)]]
        )
        for k in range(1, job.n_layers + 1)
    ]


class MLPUpdate:
    """A network's side of :class:`~phe_fl.ml.loop.Trainer` at the root (see
    :mod:`phe_fl.ml.mlp`): every weight tile back at full depth before each MAP (one
    refresh saves every chunk that uses it a deeper chain), the all-reduce over samples."""

    refreshes_weights_every_iteration = True
    checks_margins = False

    def __init__(self, job: MLPJob, federation: Federation) -> None:
        self.job = job
        self.federation = federation
        self.layout = job.layout

    def initial_vectors(self, initial: Sequence[FloatArray] | None) -> list[FloatArray]:
        ws = self.job.initial_weights() if initial is None else list(initial)
        if len(ws) != self.job.n_layers:
            raise ParameterError(
                f"{len(ws)} initial weight matrices for {self.job.n_layers} layers"
            )
        return [
            tile for k, w in enumerate(ws, start=1) for tile in self.layout.weights_vectors(k, w)
        ]

    def prepare(
        self, weights: list[Ciphertext], iteration: int, *, final: bool, check_margins: bool
    ) -> Prepared:
        fed = self.federation
        ws, refreshed = with_levels(weights, fed.ctx.params.mult_depth, fed.refresh_many)
        request = MapRequest(iteration, tuple(ws), fed.global_batch(iteration))
        return Prepared(ws, request, refreshed)

    def step(self, combined: Sequence[Ciphertext]) -> list[Ciphertext]:
        """Every tile's gradient summed over the samples of a ciphertext (an all-reduce)."""
        ctx = self.federation.ctx
        return [rotsum(ctx, g, self.layout.sample_sum_steps) for g in combined]

    def judge(self, report: IterationReport) -> None:
        """Nothing to judge: a network's margins are not checked."""
