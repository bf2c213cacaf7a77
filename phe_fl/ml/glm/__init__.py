"""Logistic and linear regression trained with the model kept encrypted
(MAP-COMBINE-REDUCE), their plaintext twin and oblivious prediction.

The package holds the family's job (:mod:`.job`), slot layout (:mod:`.layout`), party-side
MAP (:mod:`.party`), root-side update for the one loop (:mod:`.update`,
:class:`phe_fl.ml.loop.Trainer` drives it), twin (:mod:`.twin`), margin checks
(:mod:`.margins`) and prediction (:mod:`.prediction`).

One iteration, with ``eta = learning_rate / global_batch`` and ``p`` the activation
polynomial (the fitted sigmoid, or the identity for linear regression):

* MAP (each party, on its plaintext batch and the encrypted weights ``w``):
  ``z_i = x_i . w`` (one ct x pt product and a rotate-and-add over the features), then
  ``u_ij = eta * x_ij * (p(z_i) - y_i)`` with ``eta * x_ij`` folded into the activation's
  coefficient multiplications: ``1 + depth(p)`` levels in all, no masking;
* COMBINE: the parties' ``u`` are added;
* REDUCE (root): sum over samples (rotations), align onto the weights, ``w <- w - G``;
  with momentum ``mu > 0`` (heavy ball, shared notes §7.5) the root keeps the last step
  ``d_t = w_t - w_{t-1}`` encrypted and updates ``d_{t+1} = mu * d_t - G``,
  ``w_{t+1} = w_t + d_{t+1}``.

With the sigmoid, ``p(z) - y`` is the gradient of the cross-entropy, so no derivative
polynomial is needed; with the identity it is the gradient of half the squared error.

Levels are tracked on the weights: before an iteration that would leave them with too
few levels to be refreshed afterwards, the root asks for a collective refresh. The count
per iteration is reported. The copy broadcast for MAP travels at the lowest level that
keeps this schedule (:meth:`GLMUpdate.broadcast_levels`): when the updated weights are
going to be refreshed before the next iteration anyway, MAP's depth plus what the refresh
needs; otherwise all the levels the weights have.

Momentum costs no level on the weights' path: ``mu * d_t`` takes one level off ``d_t``, which
sits at the weights' level, while ``G`` is ``depth_per_iteration >= 2`` levels below it, so
``d_{t+1}`` and ``w_{t+1}`` end at ``G``'s level exactly as without momentum. Only after a
refresh of ``w`` is ``d_t`` too deep for that; the loop then refreshes it before the
update (:mod:`phe_fl.ml.loop`): two refreshes in such an iteration instead of one.

Differentially private training (``job.dp_noise_multiplier = sigma > 0``, logistic only),
DP-SGD with the noise added under encryption:

* every design row is scaled to L2 norm at most ``C = job.dp_clip`` (:func:`design_matrix`);
* each party samples its batch of iteration ``t`` by Poisson sampling: every row
  independently with probability ``q = request.sample_rate`` (``global_batch / total
  rows``, the same for all parties), and ``eta = learning_rate / global_batch`` uses the
  *expected* global batch, a public number, so the sampled size is never needed;
* while every margin is in ``[-a, a]``, one record's gradient ``(p(z_i) - y_i) x_i`` has
  L2 norm at most ``Delta = B * C`` (``B = job.dp_residual_bound``), so the sum over the
  batch has sensitivity ``Delta`` (add or remove one record) and gets Gaussian noise
  ``N(0, (sigma * Delta)^2)`` per weight: each of the ``N`` parties adds its share
  ``N(0, (sigma * Delta)^2 / N)`` (times ``eta``) to the slots of its gradient ciphertext
  that carry the weights' gradient (``[0, d)`` of block 0; the root's all-reduce spreads
  it like the gradient), so nobody knows the total noise. The noise is a plaintext added
  to the party's own ciphertext (``Enc(g) + n = Enc(g + n)``): the same as adding an
  encryption of ``n``, one encryption cheaper;
* a party's sampling and noise come from a generator seeded with 128 bits from
  :mod:`secrets` when the party is built, derived per iteration: a retried MAP for the
  same iteration gets the same batch and the same noise (never a second draw), and a
  federation node also keeps the whole answer (noise included) for retries;
* the guarantee is conditional on the margins staying in ``[-a, a]`` (outside it the
  polynomial residual is unbounded): the feature and row clips keep them there in
  practice, the twin checks every iteration and the encrypted run with
  ``check_margins_every``; a DP run whose check finds margins outside stops with
  :class:`DPMarginError`. Accounting: :mod:`phe_fl.privacy.accounting`.
"""

from phe_fl.ml.glm.job import Model, TrainingJob, clip_features, clip_rows, design_matrix
from phe_fl.ml.glm.layout import GLMLayout
from phe_fl.ml.glm.margins import DPMarginError, MarginCheck, MarginWarning
from phe_fl.ml.glm.party import GLMParty, dp_draws
from phe_fl.ml.glm.prediction import (
    Output,
    decode_labels,
    decode_scores,
    encrypt_queries,
    evaluate,
    predict_local,
    prediction_depth,
)
from phe_fl.ml.glm.twin import PlaintextResult, predict, predict_proba, train_plaintext
from phe_fl.ml.glm.update import GLMUpdate, decrypt_glm

__all__ = [
    "Model",
    "TrainingJob",
    "clip_features",
    "clip_rows",
    "design_matrix",
    "GLMLayout",
    "DPMarginError",
    "MarginCheck",
    "MarginWarning",
    "GLMParty",
    "dp_draws",
    "Output",
    "decode_labels",
    "decode_scores",
    "encrypt_queries",
    "evaluate",
    "predict_local",
    "prediction_depth",
    "PlaintextResult",
    "predict",
    "predict_proba",
    "train_plaintext",
    "GLMUpdate",
    "decrypt_glm",
]
