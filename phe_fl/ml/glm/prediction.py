"""Oblivious prediction with an encrypted GLM: the model stays under the collective key,
the querier's samples are encrypted under that same key, and only the querier can read
the scores.

The flow (four messages, none of them carrying plaintext data or weights):

1. querier: :func:`encrypt_queries` lays its samples out like the training batches (the
   job's :class:`~phe_fl.ml.glm.layout.GLMLayout`, one block of ``D`` slots per sample,
   ``slots / D`` samples per ciphertext) and encrypts them under the joint public key;
2. root: :func:`evaluate` multiplies each query ciphertext by the encrypted weights
   (ct x ct), sums over the features with the training's rotate-and-add, and applies the
   activation polynomial with a mask folded into its coefficients, so every slot but the
   one score per sample is exactly zero (the partial sums that the rotate-and-add leaves in
   the other slots would tell the querier more about the weights than the score does);
3. parties: the collective key switch to the querier's public key
   (:meth:`phe_fl.mhe.LocalFederation.key_switch` or its networked equivalent);
4. querier: decrypts with its own secret key and calls :func:`decode_scores` /
   :func:`decode_labels`.

Rotation keys: only the feature-sum steps ``1, 2, ..., D/2`` are used, which every
training job generates (``job.rotation_indices()``), so no extra key work is needed.

Output modes (``output=``, the same on the root's and the querier's side):

* ``"activation"`` (default): the score is the job's activation polynomial ``p(x . w)``,
  the very function the model was trained with (the fitted sigmoid for logistic
  regression, clipped to ``[0, 1]`` on decoding; the value for linear regression). It costs
  :func:`prediction_depth` ``= 1 + depth(p)`` levels of the weights.
* ``"margin"``: the root returns the masked margin ``x . w`` and the querier applies the
  exact sigmoid itself (2 levels). For logistic regression this reveals exactly what the
  exact probability reveals (the sigmoid is invertible) and matches the plaintext
  :func:`~phe_fl.ml.glm.twin.predict_proba` of the decrypted model up to CKKS noise, whereas the
  polynomial differs from the sigmoid by up to ``job.activation.max_error``.

What the querier learns is the score of each of its samples, nothing else; like any
prediction service it could still learn the model from ``n_weights`` well-chosen queries,
which a deployment limits by policy (query budgets), not by cryptography.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np

from phe_fl.errors import LevelError, ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.keys import JointPublicKey, QuerierKeyPair
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml.activations import sigmoid
from phe_fl.ml.glm.job import TrainingJob, design_matrix
from phe_fl.ml.packing import chunks, rotsum

__all__ = [
    "Output",
    "prediction_depth",
    "encrypt_queries",
    "evaluate",
    "decode_scores",
    "decode_labels",
    "predict_local",
]

Output = Literal["activation", "margin"]


def _check_output(output: str) -> None:
    if output not in ("activation", "margin"):
        raise ParameterError(f"prediction output must be 'activation' or 'margin', got {output!r}")


def prediction_depth(job: TrainingJob, *, output: Output = "activation") -> int:
    """Levels :func:`evaluate` takes off the weights: 1 for ``x * w``, then the activation
    (the mask rides on its coefficients) or, for ``output="margin"``, 1 for the mask."""
    _check_output(output)
    if output == "margin":
        return 2
    return 1 + job.activation.depth


def _score_mask(job: TrainingJob) -> FloatArray:
    """1 at slot 0 of every block (where the sample's score is), 0 elsewhere."""
    layout = job.layout
    mask = np.zeros((layout.samples_per_ct, layout.block))
    mask[:, 0] = 1.0
    return mask.ravel()


# -- querier -------------------------------------------------------------------------------
def _check_queries(job: TrainingJob, x: FloatArray) -> FloatArray:
    try:
        arr = np.array(x, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"prediction queries are not numeric ({exc})") from None
    if arr.ndim != 2:
        raise ParameterError(
            f"prediction queries must be a 2-D array (samples x features), got {arr.ndim}-D"
        )
    if arr.shape[0] == 0:
        raise ParameterError("prediction queries: no samples given")
    if arr.shape[1] != job.n_features:
        raise ParameterError(
            f"prediction queries have {arr.shape[1]} features, the model has {job.n_features}"
        )
    bad = ~np.isfinite(arr)
    if bad.any():
        idx = tuple(np.argwhere(bad)[0].tolist())
        raise ParameterError(
            f"prediction queries contain {int(bad.sum())} NaN or infinite value(s), first at "
            f"index {idx}"
        )
    return arr


def encrypt_queries(
    job: TrainingJob, ctx: Context, x: FloatArray, joint_key: JointPublicKey
) -> list[Ciphertext]:
    """The querier's side: its samples (rows of ``n_features``) in the training layout,
    ``job.layout.samples_per_ct`` per ciphertext, encrypted under the collective key."""
    if ctx.params.name != job.params:
        raise ParameterError(
            f"context runs parameter set {ctx.params.name!r}, the job declares {job.params!r}"
        )
    rows = design_matrix(job, _check_queries(job, x))
    layout = job.layout
    per = layout.samples_per_ct
    return [
        ctx.encrypt(layout.forward_vector(rows[sl]), joint_key) for sl in chunks(rows.shape[0], per)
    ]


# -- root ----------------------------------------------------------------------------------
def evaluate(
    job: TrainingJob,
    ctx: Context,
    weights: Ciphertext,
    queries: Sequence[Ciphertext],
    *,
    output: Output = "activation",
) -> list[Ciphertext]:
    """The root's side: one encrypted score ciphertext per query ciphertext.

    Raises :class:`~phe_fl.errors.LevelError` if ``weights`` or a query has fewer than
    :func:`prediction_depth` levels left (refresh the weights first).
    """
    _check_output(output)
    ctx.own(weights)
    if ctx.params.name != job.params:
        raise ParameterError(
            f"context runs parameter set {ctx.params.name!r}, the job declares {job.params!r}"
        )
    if not queries:
        raise ProtocolError("prediction: no query ciphertexts given")
    need = prediction_depth(job, output=output)
    if weights.scale_degree != 1:
        raise LevelError("prediction: the weights must be rescaled first")
    if weights.levels_left < need:
        raise LevelError(
            f"prediction needs {need} levels of the weights, they have {weights.levels_left}; "
            f"refresh them first"
        )
    layout = job.layout
    mask = _score_mask(job)
    act = job.activation
    out = []
    for i, q in enumerate(queries):
        ctx.own(q)
        if q.levels_left < need or q.scale_degree != 1:
            raise LevelError(
                f"prediction: query {i} has {q.levels_left} levels left (scale degree "
                f"{q.scale_degree}), {need} are needed; encrypt queries fresh"
            )
        z = ctx.rescale(ctx.mul(weights, q))
        z = rotsum(ctx, z, layout.feature_sum_steps)
        if output == "margin":
            out.append(ctx.rescale(ctx.mul_plain(z, mask)))
        else:
            out.append(act.encrypted(ctx, z, scale=mask))
    return out


# -- querier again ---------------------------------------------------------------------------
def decode_scores(
    job: TrainingJob,
    slots: Sequence[FloatArray],
    n_samples: int,
    *,
    output: Output = "activation",
) -> FloatArray:
    """One score per sample from the decrypted slot vectors (one per returned ciphertext,
    in order): a probability for logistic regression (the activation clipped to
    ``[0, 1]``, or the exact sigmoid of the margin), the value for linear regression."""
    _check_output(output)
    if isinstance(n_samples, bool) or not isinstance(n_samples, int | np.integer):
        raise ParameterError(f"n_samples must be an integer, got {n_samples!r}")
    layout = job.layout
    per = layout.samples_per_ct
    need = layout.n_chunks(int(n_samples))
    if n_samples < 1:
        raise ParameterError(f"n_samples must be positive, got {n_samples}")
    if len(slots) < need:
        raise ParameterError(
            f"{n_samples} samples need {need} result ciphertexts, got {len(slots)}"
        )
    values = []
    for c in range(need):
        count = min(per, int(n_samples) - c * per)
        v = np.asarray(slots[c], dtype=np.float64).ravel()[:: layout.block][:count]
        if v.size != count:
            raise ParameterError(
                f"result {c}: decrypted vector too short for {count} samples of "
                f"{layout.block} slots each"
            )
        values.append(v)
    scores = np.concatenate(values)
    if job.model == "logistic":
        return sigmoid(scores) if output == "margin" else np.clip(scores, 0.0, 1.0)
    return scores


def decode_labels(
    job: TrainingJob,
    slots: Sequence[FloatArray],
    n_samples: int,
    *,
    output: Output = "activation",
    threshold: float = 0.5,
) -> FloatArray:
    """0/1 labels (score >= ``threshold``) for logistic regression."""
    if job.model != "logistic":
        raise ParameterError("labels exist for logistic regression only; use decode_scores")
    scores = decode_scores(job, slots, n_samples, output=output)
    return (scores >= threshold).astype(np.float64)


def predict_local(
    job: TrainingJob,
    fed: LocalFederation,
    weights_ct: Ciphertext,
    x: FloatArray,
    querier: QuerierKeyPair,
    *,
    output: Output = "activation",
    on_rows: Callable[[int, int], None] | None = None,
) -> FloatArray:
    """The whole flow in one process (tests, benchmarks): encrypt, evaluate, key-switch
    every result to ``querier``, decrypt there, decode the scores. With ``fed.wire`` every
    ciphertext crosses a byte boundary as it would between processes.

    It streams: one ciphertext's rows (``job.layout.samples_per_ct``) go through the whole
    flow before the next are encrypted, and only their decoded scores are kept, so this
    function holds one ciphertext of each kind whatever the number of rows.
    ``on_rows(done, total)`` follows the progress. What still grows, up to a bound, is
    each simulated party's share cache (:class:`phe_fl.mhe.Party` keeps its last key-switch
    shares, at most 256 and 512 MiB, so that a retry gets the same noise):
    ``benchmarks/bench_predict_memory.py`` measures both.

    A model whose weights have fewer levels left than prediction needs is refreshed
    collectively first (once), as the federation's root does: a trained model is always
    ready to predict."""
    ctx = fed.ctx
    if (
        weights_ct.levels_left
        < prediction_depth(job, output=output) + ctx.params.refresh_min_levels
    ):
        weights_ct = fed.refresh(weights_ct)

    def wire(ct: Ciphertext) -> Ciphertext:
        return ctx.ciphertext_from_bytes(ct.to_bytes()) if fed.wire else ct

    x_arr = _check_queries(job, x)
    n = x_arr.shape[0]
    per = job.layout.samples_per_ct
    scores = np.empty(n, dtype=np.float64)
    for start in range(0, n, per):
        rows = x_arr[start : start + per]
        query = wire(encrypt_queries(job, ctx, rows, fed.joint_key)[0])
        result = wire(evaluate(job, ctx, weights_ct, [query], output=output)[0])
        del query
        switched = wire(fed.key_switch(result, querier.public_key))
        del result
        slots = querier.decrypt(switched)
        del switched
        scores[start : start + rows.shape[0]] = decode_scores(
            job, [slots], rows.shape[0], output=output
        )
        if on_rows is not None:
            on_rows(start + rows.shape[0], n)
    return scores
