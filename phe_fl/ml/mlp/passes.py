"""The encrypted forward and backward passes of a network, written as refreshing
computations (:mod:`phe_fl.ml.staging`): they yield every ciphertext about to run out of
levels and go on with it refreshed."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.ml.mlp.job import MLPJob
from phe_fl.ml.packing import rotsum
from phe_fl.ml.staging import Levels, Refreshing

__all__ = [
    "Tiles",
    "ForwardPass",
    "times",
    "dot",
    "forward",
    "chunk_gradients",
    "with_bias",
]


def times(
    ctx: Context, lv: Levels, a: Ciphertext, b: Ciphertext | FloatArray
) -> Refreshing[Ciphertext]:
    """``a * b`` slot-wise and rescaled; ``b`` a ciphertext or a plaintext vector."""
    a = yield from lv.ready(a, 1)
    if isinstance(b, np.ndarray):
        return ctx.rescale(ctx.mul_plain(a, b))
    b = yield from lv.ready(b, 1)
    return ctx.rescale(ctx.mul(a, b))


Tiles = list[Ciphertext | FloatArray]
"""A layer vector's tiles (:class:`~phe_fl.ml.mlp.layout.MLPLayout`): ciphertexts, or
plaintexts where nothing is secret (a chunk's own inputs at its party, a bias-only tile)."""


@dataclass
class ForwardPass:
    acts: list[Tiles]
    """``a_0`` (the input) to ``a_{L-1}``, each in layer k+1's input form, bias unit
    included, one entry per tile."""
    slopes: list[list[Ciphertext]]
    """``g'(z_k)`` for hidden layers (index k), masked and replicated, per tile."""
    z_out: list[Ciphertext]
    """The output pre-activations on the last layer's line, per output tile."""


def dot(
    ctx: Context, lv: Levels, ws: Sequence[Ciphertext], xs: Sequence[Ciphertext | FloatArray]
) -> Refreshing[Ciphertext]:
    """``sum_j ws[j] * xs[j]`` slot-wise: the tiles of one output (or input) tile."""
    parts = []
    for w, x in zip(ws, xs, strict=True):
        parts.append((yield from times(ctx, lv, w, x)))
    return ctx.sum(parts)


def forward(
    job: MLPJob,
    ctx: Context,
    lv: Levels,
    weights: Sequence[Ciphertext],
    a0: Tiles,
    n: int,
    *,
    slopes: bool,
) -> Refreshing[ForwardPass]:
    layout = job.layout
    g, dg = job.hidden_act, job.hidden_act.derivative()
    acts: list[Tiles] = [a0]
    grads: list[list[Ciphertext]] = [[]]
    a = a0
    for k in range(1, job.n_layers + 1):
        w = weights[layout.layer_cts(k)]
        n_o, n_i = layout.grid(k)
        zs = []
        for o in range(n_o):
            z = yield from dot(ctx, lv, w[o * n_i : (o + 1) * n_i], a)
            zs.append(rotsum(ctx, z, layout.input_sum_steps(k)))
        if k == job.n_layers:
            return ForwardPass(acts, grads, zs)
        h_tiles: Tiles = []
        s_tiles: list[Ciphertext] = []
        for z, mask in zip(zs, layout.line_masks(k, n), strict=True):
            z = yield from lv.ready(z, max(g.depth, dg.depth if slopes else 0))
            h = g.encrypted(ctx, z, scale=mask)
            h_tiles.append(rotsum(ctx, h, layout.forward_replicate_steps(k)))
            if slopes:
                s = dg.encrypted(ctx, z, scale=mask)
                s_tiles.append(rotsum(ctx, s, layout.backward_replicate_steps(k)))
        if layout.bias:
            tile, ones = layout.bias_vector(k, n)
            if tile < len(h_tiles):
                last = h_tiles[tile]
                assert not isinstance(last, np.ndarray)
                h_tiles[tile] = ctx.add_plain(last, ones)
            else:  # the layer fills its last tile: the bias unit is a tile of its own
                h_tiles.append(ones)
        acts.append(h_tiles)
        grads.append(s_tiles)
        a = h_tiles
    raise AssertionError("unreachable: a network has at least one layer")


def chunk_gradients(
    job: MLPJob,
    ctx: Context,
    weights: Sequence[Ciphertext],
    x: FloatArray,
    y: npt.NDArray[np.intp],
    eta: float,
) -> Refreshing[list[Ciphertext]]:
    """``U_1 .. U_L`` of one chunk (at most ``samples_per_ct`` samples), every layer's
    weight tiles in the model's order."""
    layout = job.layout
    lv = Levels(ctx)
    n = x.shape[0]
    a0: Tiles = list(layout.form_vectors(with_bias(x), "col"))
    fw = yield from forward(job, ctx, lv, weights, a0, n, slopes=True)
    last = job.n_layers
    sig = job.output_act
    onehot = np.eye(job.n_classes)[y]
    targets = layout.line_vectors(last, onehot)
    e: list[Ciphertext] = []
    for z, mask, target in zip(fw.z_out, layout.line_masks(last, n, eta), targets, strict=True):
        z = yield from lv.ready(z, sig.depth)
        line = sig.encrypted(ctx, z, scale=mask, shift=-eta * target)
        e.append(rotsum(ctx, line, layout.backward_replicate_steps(last)))
    out: list[Ciphertext] = [e[0]] * layout.n_cts
    for k in range(last, 0, -1):
        for o, t in enumerate(e):  # each used several times below: ready once
            e[o] = yield from lv.ready(t, 1)
        a_prev = fw.acts[k - 1]
        for i, tile in enumerate(a_prev):
            if not isinstance(tile, np.ndarray):
                a_prev[i] = yield from lv.ready(tile, 1)
        n_o, n_i = layout.grid(k)
        start = layout.layer_cts(k).start
        for o in range(n_o):
            for i in range(n_i):
                out[start + o * n_i + i] = yield from times(ctx, lv, e[o], a_prev[i])
        if k == 1:
            break
        w = weights[layout.layer_cts(k)]
        below = []
        masks = layout.line_masks(k - 1, n)
        for i in range(layout.tiles(layout.n_out(k - 1))):  # a bias-only tile gets no error
            s = yield from dot(ctx, lv, e, [w[o * n_i + i] for o in range(n_o)])
            s = rotsum(ctx, s, layout.output_sum_steps(k))
            s = yield from times(ctx, lv, s, masks[i])
            s = rotsum(ctx, s, layout.backward_replicate_steps(k - 1))
            below.append((yield from times(ctx, lv, s, fw.slopes[k - 1][i])))
        e = below
    return out


def with_bias(x: FloatArray) -> FloatArray:
    """Samples in rows with the constant-1 bias unit appended."""
    return np.hstack([np.asarray(x, dtype=np.float64), np.ones((x.shape[0], 1))])
