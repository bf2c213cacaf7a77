"""Encrypted training: models, packing, polynomial activations and plaintext twins.

The model stays encrypted under the collective key; each party computes encrypted
gradients from its plaintext shard (MAP), the gradients are added (COMBINE) and the root
updates the encrypted weights (REDUCE). Everything here uses :mod:`phe_fl.mhe` only
through its public evaluation API and a transport-agnostic :class:`Federation`.

In one process (tests, benchmarks)::

    job = TrainingJob(n_features=8, iterations=10, allow_model_decryption=True)
    fed = setup_local(job, shards)          # validates job and shards, then key generation
    model = GLMTrainer(job, fed).train()    # encrypted weights, refreshes per iteration
    weights = model.decrypt(fed)            # refused unless every party consented
    twin = train_plaintext(job, shards)     # the same approximated math in numpy
    scores = predict_local(job, fed.fed, model.weights, x_new, querier)  # oblivious

Networks (:mod:`phe_fl.ml.mlp`): multinomial logistic regression and MLPs with 1-3
hidden layers, same flow with :class:`MLPJob`, :func:`setup_local_mlp`,
:class:`MLPTrainer` and :func:`train_plaintext_mlp`; their slots follow
:class:`MLPLayout` (alternating packing, no transposes).

Oblivious prediction (:mod:`phe_fl.ml.prediction`) evaluates the still-encrypted model on
a querier's samples encrypted under the joint key and key-switches the scores to the
querier. :mod:`phe_fl.ml.datasets` loads the offline datasets (breast cancer, Pima
diabetes, digits one-vs-rest) and deals them to parties, IID or label-skewed.

Choosing the activation: a polynomial is a sigmoid only on its interval. Fits whose
leading coefficient is negative (least-squares degrees 3 and 7) push margins that left
the interval further out and training diverges; degrees 1, 5, 9 turn back towards it.
``PlaintextResult.max_abs_margin`` shows how far the margins went. The defaults (degree 5
on [-10, 10], learning rate 0.2, features clipped to 4 deviations, 128-bit
``n15-depth11-128``) converge on ordinary standardized tables; ``feature_clip`` keeps a
rare one-hot column (hundreds of deviations after standardization) from throwing margins
out of the interval. Margins that leave it are reported with a :class:`MarginWarning`:
always by the twin, by the encrypted run with ``GLMTrainer.train(check_margins_every=k)``
(a consented check: one decrypted scalar per checked iteration).

Progress: both trainers take ``on_iteration`` and log every iteration at INFO on the
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
from phe_fl.ml.federation import (
    Federation,
    LayersFederation,
    LayersMapRequest,
    LayersWorker,
    LocalTrainingFederation,
    MapRequest,
    MapStage,
    MapWorker,
    MarginProbe,
    ModelDecryptionRefused,
    RowCounter,
)
from phe_fl.ml.glm import (
    DPMarginError,
    EncryptedModel,
    GLMParty,
    GLMTrainer,
    IterationReport,
    MarginCheck,
    MarginWarning,
    PlaintextResult,
    batch_rows,
    dp_draws,
    predict,
    predict_proba,
    setup_local,
    train_plaintext,
)
from phe_fl.ml.job import (
    DEFAULT_PARAMS,
    TrainingJob,
    clip_features,
    clip_rows,
    validate_shard,
    validate_shards,
)
from phe_fl.ml.mlp import (
    EncryptedMLP,
    MLPJob,
    MLPParty,
    MLPTrainer,
    decode_mlp_scores,
    encrypt_mlp_queries,
    evaluate_mlp,
    mlp_predict,
    mlp_scores,
    predict_local_mlp,
    setup_local_mlp,
    train_plaintext_mlp,
)
from phe_fl.ml.mlp_layout import MLPLayout
from phe_fl.ml.packing import GLMLayout
from phe_fl.ml.prediction import (
    decode_labels,
    decode_scores,
    encrypt_queries,
    evaluate,
    predict_local,
    prediction_depth,
)

__all__ = [
    "PolyActivation",
    "fit_activation",
    "fit_sigmoid",
    "identity_activation",
    "sigmoid",
    "Federation",
    "LayersFederation",
    "LayersMapRequest",
    "LayersWorker",
    "LocalTrainingFederation",
    "MapRequest",
    "MapStage",
    "MapWorker",
    "MarginProbe",
    "ModelDecryptionRefused",
    "RowCounter",
    "DPMarginError",
    "EncryptedModel",
    "GLMParty",
    "GLMTrainer",
    "IterationReport",
    "MarginCheck",
    "MarginWarning",
    "PlaintextResult",
    "batch_rows",
    "dp_draws",
    "predict",
    "predict_proba",
    "setup_local",
    "train_plaintext",
    "DEFAULT_PARAMS",
    "TrainingJob",
    "clip_features",
    "clip_rows",
    "validate_shards",
    "validate_shard",
    "GLMLayout",
    "MLPLayout",
    "EncryptedMLP",
    "MLPJob",
    "MLPParty",
    "MLPTrainer",
    "decode_mlp_scores",
    "encrypt_mlp_queries",
    "evaluate_mlp",
    "mlp_predict",
    "mlp_scores",
    "predict_local_mlp",
    "setup_local_mlp",
    "train_plaintext_mlp",
    "load_dataset",
    "split",
    "standardize",
    "decode_labels",
    "decode_scores",
    "encrypt_queries",
    "evaluate",
    "predict_local",
    "prediction_depth",
]
