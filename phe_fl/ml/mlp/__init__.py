"""Multilayer perceptrons and multinomial logistic regression trained with the model kept
encrypted (MAP-COMBINE-REDUCE), their plaintext twin, and oblivious prediction.

The package holds the family's job (:mod:`.job`), slot layout (:mod:`.layout`), encrypted
passes (:mod:`.passes`), party-side MAP (:mod:`.party`), root-side update for the one loop
(:mod:`.update`), twin (:mod:`.twin`) and prediction (:mod:`.prediction`).

The network is ``units = (d, h_1, ..., h_H, c)`` with 0 to 3 hidden layers: with no
hidden layer it is multinomial logistic regression. Every layer has a bias (a constant-1
input unit). Hidden units use a polynomial fitted to ReLU (or the sigmoid) on a declared
interval; the output uses the fitted sigmoid per class with the cross-entropy gradient
``sigma(z) - onehot(y)``, the standard HE substitute for softmax (it needs neither
``exp`` nor a division, and argmax of the scores is the prediction). Slots are laid out by
:class:`~phe_fl.ml.mlp.layout.MLPLayout` (alternating packing, no transposes).

One iteration, with ``eta = learning_rate / global_batch``:

* MAP (each party, per chunk of its plaintext batch): forward ``z_k = W_k a_{k-1}``,
  ``a_k = g(z_k)`` (mask folded into ``g``'s coefficients) and ``g'(z_k)``; output error
  ``e_L = eta * (sigma(z_L) - y)``; backward ``U_k = e_k a_{k-1}^T``,
  ``e_{k-1} = (W_k^T e_k) * g'(z_{k-1})``. The party returns its ``U_k``, summed over its
  chunks but not over the samples of a chunk;
* COMBINE: the parties' ``U_k`` are added, layer by layer;
* REDUCE (root): all-reduce over samples, ``W_k <- W_k - G_k`` (momentum by the loop,
  :mod:`phe_fl.ml.loop`).

Depth: a hidden layer costs 3 levels forward (product, degree-2 activation) and 3
backward (product, mask, ``g'``), far more than the 8 usable levels of the 2^15 set for
two or more hidden layers. As in POSEIDON, an intermediate ciphertext (activations or
errors, still under the joint key) is refreshed collectively whenever the next operation
would leave it unrefreshable. A party cannot start a collective protocol itself (only
the root asks the tree), so MAP runs in stages (:mod:`phe_fl.ml.staging`): each party
pauses where its chunks need refreshes and answers with those intermediates; the root
refreshes every party's at once in one round and sends them back. The root refreshes
the weights once per iteration. Refreshes and refresh rounds are reported per iteration.
"""

from phe_fl.ml.mlp.job import MAX_HIDDEN_LAYERS, MAX_WEIGHT_CIPHERTEXTS, HiddenActivation, MLPJob
from phe_fl.ml.mlp.layout import MLPLayout
from phe_fl.ml.mlp.party import MLPParty
from phe_fl.ml.mlp.prediction import (
    decode_mlp_scores,
    encrypt_mlp_queries,
    evaluate_mlp,
    pack_scores,
    predict_local_mlp,
    prediction_levels,
)
from phe_fl.ml.mlp.twin import MLPPlaintextResult, mlp_predict, mlp_scores, train_plaintext_mlp
from phe_fl.ml.mlp.update import MLPUpdate, decrypt_layers

__all__ = [
    "MAX_HIDDEN_LAYERS",
    "MAX_WEIGHT_CIPHERTEXTS",
    "HiddenActivation",
    "MLPJob",
    "MLPLayout",
    "MLPParty",
    "decode_mlp_scores",
    "encrypt_mlp_queries",
    "evaluate_mlp",
    "pack_scores",
    "predict_local_mlp",
    "prediction_levels",
    "MLPPlaintextResult",
    "mlp_predict",
    "mlp_scores",
    "train_plaintext_mlp",
    "MLPUpdate",
    "decrypt_layers",
]
