"""Encrypted training: one loop for every model family, packing, polynomial activations
and plaintext twins.

The model stays encrypted under the collective key; each party computes encrypted
gradients from its plaintext shard (MAP), the gradients are added (COMBINE) and the root
updates the encrypted weights (REDUCE). :class:`Trainer` is that loop, written once
(:mod:`phe_fl.ml.loop`); a model family is a package with its job, slot layout,
party-side MAP, root-side update, twin and prediction: :mod:`phe_fl.ml.glm` (logistic
and linear regression, :class:`TrainingJob`) and :mod:`phe_fl.ml.mlp` (multinomial
regression and MLPs with 1-3 hidden layers, :class:`MLPJob`), looked up by job in
:mod:`phe_fl.ml.families`. The loop uses :mod:`phe_fl.mhe` only through its public
evaluation API and a transport-agnostic :class:`Federation`: the gRPC tree in a
deployment, :mod:`phe_fl.testing` (every party in one process) in tests and benchmarks::

    from phe_fl.testing import setup_local

    job = TrainingJob(n_features=8, iterations=10, allow_model_decryption=True)
    fed = setup_local(job, shards)          # validates job and shards, then key generation
    model = Trainer(job, fed).train()       # encrypted weights, refreshes per iteration
    weights = model.decrypt(fed)            # refused unless every party consented
    twin = train_plaintext(job, shards)     # the same approximated math in numpy
    scores = predict_local(job, fed.fed, model.weights[0], x_new, querier)  # oblivious

A network is the same flow with :class:`MLPJob`, :func:`train_plaintext_mlp` and
:func:`predict_local_mlp`; its MAP pauses for collective refreshes of its intermediates
(:mod:`phe_fl.ml.staging`).

Oblivious prediction evaluates the still-encrypted model on a querier's samples
encrypted under the joint key and key-switches the scores to the querier.
:mod:`phe_fl.ml.datasets` loads the offline datasets and deals them to parties, IID or
label-skewed.

Choosing the activation: a polynomial is a sigmoid only on its interval. Fits whose
leading coefficient is negative (least-squares degrees 3 and 7) push margins that left
the interval further out and training diverges; degrees 1, 5, 9 turn back towards it.
``PlaintextResult.max_abs_margin`` shows how far the margins went. The defaults (degree 5
on [-10, 10], learning rate 0.2, features clipped to 4 deviations, 128-bit
``n15-depth11-128``) converge on ordinary standardized tables; ``feature_clip`` keeps a
rare one-hot column (hundreds of deviations after standardization) from throwing margins
out of the interval. Margins that leave it are reported with a :class:`MarginWarning`:
always by the twin, by the encrypted run with ``Trainer.train(check_margins_every=k)``
(a consented check: one decrypted scalar per checked iteration).

Progress: the loop takes ``on_iteration`` and logs every iteration at INFO on the
``phe_fl.ml`` logger; in-process prediction streams one ciphertext at a time and takes
``on_rows``.
"""

from phe_fl.ml.activations import (
    PolyActivation,
    fit_activation,
    fit_sigmoid,
    identity_activation,
    sigmoid,
)
from phe_fl.ml.datasets import load_dataset, split, standardize
from phe_fl.ml.families import FAMILIES, Family, ModelJob, family_of
from phe_fl.ml.federation import (
    Federation,
    MapRequest,
    MapStage,
    MapWorker,
    MarginProbe,
    ModelDecryptionRefused,
    RowCounter,
)
from phe_fl.ml.glm import (
    DPMarginError,
    GLMLayout,
    GLMParty,
    GLMUpdate,
    MarginCheck,
    MarginWarning,
    PlaintextResult,
    TrainingJob,
    clip_features,
    clip_rows,
    decode_labels,
    decode_scores,
    dp_draws,
    encrypt_queries,
    evaluate,
    predict,
    predict_local,
    predict_proba,
    prediction_depth,
    train_plaintext,
)
from phe_fl.ml.jobs import DEFAULT_PARAMS, batch_rows, validate_shard, validate_shards
from phe_fl.ml.loop import EncryptedModel, IterationReport, ModelUpdate, Prepared, Trainer
from phe_fl.ml.mlp import (
    MLPJob,
    MLPLayout,
    MLPParty,
    MLPUpdate,
    decode_mlp_scores,
    encrypt_mlp_queries,
    evaluate_mlp,
    mlp_predict,
    mlp_scores,
    predict_local_mlp,
    train_plaintext_mlp,
)

__all__ = [
    "PolyActivation",
    "fit_activation",
    "fit_sigmoid",
    "identity_activation",
    "sigmoid",
    "load_dataset",
    "split",
    "standardize",
    "FAMILIES",
    "Family",
    "ModelJob",
    "family_of",
    "Federation",
    "MapRequest",
    "MapStage",
    "MapWorker",
    "MarginProbe",
    "ModelDecryptionRefused",
    "RowCounter",
    "DPMarginError",
    "GLMLayout",
    "GLMParty",
    "GLMUpdate",
    "MarginCheck",
    "MarginWarning",
    "PlaintextResult",
    "TrainingJob",
    "clip_features",
    "clip_rows",
    "decode_labels",
    "decode_scores",
    "dp_draws",
    "encrypt_queries",
    "evaluate",
    "predict",
    "predict_local",
    "predict_proba",
    "prediction_depth",
    "train_plaintext",
    "DEFAULT_PARAMS",
    "batch_rows",
    "validate_shard",
    "validate_shards",
    "EncryptedModel",
    "IterationReport",
    "ModelUpdate",
    "Prepared",
    "Trainer",
    "MLPJob",
    "MLPLayout",
    "MLPParty",
    "MLPUpdate",
    "decode_mlp_scores",
    "encrypt_mlp_queries",
    "evaluate_mlp",
    "mlp_predict",
    "mlp_scores",
    "predict_local_mlp",
    "train_plaintext_mlp",
]
