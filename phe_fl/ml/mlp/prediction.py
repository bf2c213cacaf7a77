"""Oblivious prediction with an encrypted network: the querier's samples encrypted under
the joint key, a forward pass at the root, the class scores key-switched to the querier."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.keys import QuerierKeyPair
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml.mlp.job import MLPJob
from phe_fl.ml.mlp.passes import Tiles, forward, times, with_bias
from phe_fl.ml.packing import chunks
from phe_fl.ml.staging import Levels, Lockstep, Refreshing, RefreshMany, with_levels

__all__ = [
    "encrypt_mlp_queries",
    "evaluate_mlp",
    "prediction_levels",
    "pack_scores",
    "decode_mlp_scores",
    "predict_local_mlp",
]


# -- oblivious prediction ------------------------------------------------------------------
def encrypt_mlp_queries(
    job: MLPJob, encrypt: Callable[[FloatArray], Ciphertext], x: FloatArray
) -> list[Ciphertext]:
    """The querier's samples in the first layer's input form, one ciphertext per chunk,
    encrypted with ``encrypt`` (under the joint public key)."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] != job.n_features or x.shape[0] < 1:
        raise ParameterError(
            f"queries must be a non-empty n x {job.n_features} array, got shape {x.shape}"
        )
    if not np.isfinite(x).all():
        raise ParameterError("queries contain NaN or infinite values")
    layout = job.layout
    return [
        encrypt(tile)
        for sl in chunks(x.shape[0], layout.samples_per_ct)
        for tile in layout.form_vectors(with_bias(x[sl]), "col")
    ]


def evaluate_mlp(
    job: MLPJob,
    ctx: Context,
    weights: Sequence[Ciphertext],
    queries: Sequence[Ciphertext],
    n_samples: int,
    refresh_many: RefreshMany,
) -> tuple[list[Ciphertext], int, int]:
    """The root's side: forward pass on encrypted queries, every slot but the class
    scores masked to zero. The query ciphertexts advance together, so a refresh they all
    need at one layer is one collective round for the batch, not one per ciphertext;
    weights and queries above :func:`prediction_levels` are evaluated without the towers
    the pass never uses. Returns the score ciphertexts, the refreshes and the refresh
    rounds it took."""
    layout = job.layout
    slices = chunks(n_samples, layout.samples_per_ct)
    per = layout.tiles(layout.n_in(1))
    if len(queries) != len(slices) * per:
        raise ProtocolError(
            f"{len(queries)} query ciphertexts for {n_samples} samples ({layout.samples_per_ct} "
            f"a ciphertext, {per} tile(s) each: {len(slices) * per} expected)"
        )
    keep = prediction_levels(job)
    weights = [ctx.drop_levels(w, keep) if w.levels_left > keep else w for w in weights]
    queries = [ctx.drop_levels(q, keep) if q.levels_left > keep else q for q in queries]

    def scores(tiles: Tiles, n: int) -> Refreshing[list[Ciphertext]]:
        lv = Levels(ctx)
        fw = yield from forward(job, ctx, lv, weights, tiles, n, slopes=False)
        out = []
        for z, mask in zip(fw.z_out, layout.line_masks(job.n_layers, n), strict=True):
            out.append((yield from times(ctx, lv, z, mask)))
        return out

    steps = Lockstep(
        [
            scores(list(queries[j * per : (j + 1) * per]), sl.stop - sl.start)
            for j, sl in enumerate(slices)
        ]
    )
    pending = steps.advance()
    refreshes = rounds = 0
    while pending:
        refreshes += len(pending)
        rounds += 1
        pending = steps.advance(refresh_many(pending))
    return pack_scores(job, ctx, steps.results()), refreshes, rounds


def prediction_levels(job: MLPJob) -> int:
    """Levels the weights and the queries need for a forward pass without a refresh: a
    product per layer, the hidden activation per hidden layer, the final mask, and what
    :class:`~phe_fl.ml.staging.Levels` keeps for a refresh; the whole depth when the pass
    refreshes anyway. Evaluating at this level instead of the top drops RNS towers from
    every operation (and from every query the querier sends)."""
    ps = job.parameter_set
    need = job.n_layers + len(job.hidden) * job.hidden_act.depth + 1 + ps.refresh_min_levels
    return min(need, ps.mult_depth)


def pack_scores(
    job: MLPJob, ctx: Context, per_chunk: Sequence[Sequence[Ciphertext]]
) -> list[Ciphertext]:
    """Up to ``T`` chunks' score lines in one ciphertext: chunk ``j`` of a group shifted
    ``j`` units across its line (a tree of rotations by the replicate steps, one rotation
    per merge), so the key switch to the querier and its decryption take
    ``ceil(chunks / T)`` ciphertexts per output tile instead of one per chunk. The lines
    are masked (zero elsewhere): the shifted copies never overlap. Returns group by group,
    each group's output tiles in order."""
    layout = job.layout
    step = 1 if job.n_layers % 2 else layout.side  # one unit across the line
    n_tiles = layout.tiles(job.n_classes)
    out = []
    for g in range(0, len(per_chunk), layout.side):
        for o in range(n_tiles):
            group = [scores[o] for scores in per_chunk[g : g + layout.side]]
            shift = step
            while len(group) > 1:
                merged = [
                    ctx.add(group[i], ctx.rotate(group[i + 1], -shift))
                    if i + 1 < len(group)
                    else group[i]
                    for i in range(0, len(group), 2)
                ]
                group, shift = merged, 2 * shift
            out.append(group[0])
    return out


def decode_mlp_scores(
    job: MLPJob, querier: QuerierKeyPair, cts: Sequence[Ciphertext], n_samples: int
) -> FloatArray:
    """The querier decrypts its score ciphertexts (:func:`pack_scores`' groups of up to
    ``T`` chunks, each group's output tiles): ``n_samples x n_classes``."""
    layout = job.layout
    per = layout.tiles(job.n_classes)
    slices = chunks(n_samples, layout.samples_per_ct)
    groups = [slices[g : g + layout.side] for g in range(0, len(slices), layout.side)]
    if len(cts) != len(groups) * per:
        raise ProtocolError(f"{len(cts)} score ciphertexts, {len(groups) * per} expected")
    rows = []
    for g, group in enumerate(groups):
        tiles = [querier.decrypt(ct, length=layout.slots) for ct in cts[g * per : (g + 1) * per]]
        for j, sl in enumerate(group):
            rows.append(layout.read_line(job.n_layers, tiles, sl.stop - sl.start, offset=j))
    return np.vstack(rows)


def predict_local_mlp(
    job: MLPJob,
    fed: LocalFederation,
    weights: Sequence[Ciphertext],
    x: FloatArray,
    querier: QuerierKeyPair,
    *,
    on_rows: Callable[[int, int], None] | None = None,
) -> FloatArray:
    """Oblivious prediction in one process: encrypt, evaluate, key-switch, decode.
    Returns the class scores only the querier could read.

    It streams: one score group's rows (``T`` query ciphertexts, packed into one score
    ciphertext per output tile by :func:`pack_scores`) go through the whole flow before
    the next are encrypted and only their decoded scores are kept, so this function holds
    one group's ciphertexts whatever the number of rows (each simulated party still caches
    its last 256 key-switch shares, see :func:`phe_fl.ml.glm.predict_local`);
    ``on_rows(done, total)`` follows the progress."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ParameterError(
            f"queries must be a non-empty n x {job.n_features} array, got shape {x.shape}"
        )
    n = x.shape[0]
    per = job.layout.samples_per_ct * job.layout.side
    out: list[FloatArray] = []

    def refresh_many(cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        return [fed.refresh(c) for c in cts]

    for start in range(0, max(n, 1), per):  # no rows: the first chunk is refused, by name
        rows = x[start : start + per]
        queries = encrypt_mlp_queries(job, fed.encrypt, rows)
        weights, _ = with_levels(weights, prediction_levels(job), refresh_many)
        scores, _, _ = evaluate_mlp(job, fed.ctx, weights, queries, rows.shape[0], refresh_many)
        del queries
        switched = [fed.key_switch(s, querier.public_key) for s in scores]
        del scores
        out.append(decode_mlp_scores(job, querier, switched, rows.shape[0]))
        del switched
        if on_rows is not None:
            on_rows(start + rows.shape[0], n)
    return np.vstack(out)
