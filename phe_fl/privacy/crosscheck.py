"""Cross-check of the threshold attack against the Adversarial Robustness Toolbox (ART).

ART (``adversarial-robustness-toolbox``, numpy and scikit-learn only) is an independent
implementation of black-box membership inference: ``MembershipInferenceBlackBox`` trains
an attack model on rows whose membership it is told and returns a membership probability
per row. ART does not report an AUC, so the ROC is computed from its probabilities, with
scikit-learn's ``roc_auc_score`` (not with :mod:`phe_fl.privacy.metrics`).

Same data, same model: the members and non-members are each cut in two halves (seeded);
ART's attack model learns on the first halves, both attacks are scored on the second.

* ``art_loss``: ART's attack on the per-row cross-entropy loss alone, with a
  logistic-regression attack model: the loss threshold attack, its threshold learned
  from rows of known membership instead of calibrated on the population. ART's estimators
  compute losses only for neural-network frameworks (``compute_loss`` is not implemented
  for scikit-learn or black-box models), so the loss ``-log p_y`` is computed here from
  the model's probabilities and passed as ART's prediction input. Its AUC must match
  ours within :data:`LOSS_TOLERANCE`: what is checked is everything after the loss (ART's
  scaling, attack model and membership probabilities, scikit-learn's ROC) against our
  signal, population calibration and ROC.
* ``art_loss_label``: the same with the one-hot label as a second input (ART's usual
  form): the attack model can then offset each class, a learned variant (reported).
* ``art_prediction``: ART's default input (the probability vector and the label) with a
  gradient-boosting attack model: a different, learned attack (reported).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from phe_fl.errors import ParameterError
from phe_fl.privacy.attacks import AuditData, confidence_signal
from phe_fl.privacy.metrics import FloatArray, auc, roc_curve
from phe_fl.privacy.models import ScoreFn, as_probabilities

__all__ = ["LOSS_TOLERANCE", "ArtCrossCheck", "art_available", "art_crosscheck"]

LOSS_TOLERANCE = 0.02
"""Largest accepted |AUC(ours) - AUC(ART, loss)| on the same held-out halves. Both rank
rows by the loss; they can differ where ART's float32 features or its attack model's
saturated probabilities tie rows that our float64 logit signal still orders."""


@dataclass(frozen=True)
class ArtCrossCheck:
    """AUCs on the same held-out halves (``n_members`` + ``n_nonmembers`` rows)."""

    ours: float
    art_loss: float
    art_loss_label: float
    art_prediction: float
    n_members: int
    n_nonmembers: int
    art_version: str

    @property
    def difference(self) -> float:
        return abs(self.ours - self.art_loss)

    @property
    def within_tolerance(self) -> bool:
        return self.difference <= LOSS_TOLERANCE

    @property
    def mirrored(self) -> bool:
        """ART's attack model learned the opposite direction on its fit halves (members
        have the *higher* loss there, which happens when the leak is weak) and ranks the
        held-out rows exactly the other way: AUC(ART) = 1 - AUC(ours)."""
        return abs(self.ours - (1.0 - self.art_loss)) <= LOSS_TOLERANCE


def art_available() -> bool:
    try:
        importlib.import_module("art")
    except ImportError:
        return False
    return True


def _halves(n: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.intp]]:
    order = rng.permutation(n)
    return order[: n // 2], order[n // 2 :]


def art_crosscheck(target: ScoreFn, data: AuditData, *, seed: int = 0) -> ArtCrossCheck:
    """Run ART's attacks and ours on the same rows of ``data`` (see the module doc)."""
    if not art_available():
        raise ParameterError(
            "the ART cross-check needs adversarial-robustness-toolbox (pip install "
            "adversarial-robustness-toolbox)"
        )
    art: Any = importlib.import_module("art")
    mi: Any = importlib.import_module("art.attacks.inference.membership_inference")
    bb: Any = importlib.import_module("art.estimators.classification")
    roc_auc_score: Any = importlib.import_module("sklearn.metrics").roc_auc_score
    mx, my = data.members
    nx, ny = data.nonmembers
    if my.size < 4 or ny.size < 4:
        raise ParameterError("the ART cross-check needs at least 4 members and 4 non-members")
    rng = np.random.default_rng(seed)
    m_fit, m_eval = _halves(my.size, rng)
    n_fit, n_eval = _halves(ny.size, rng)
    prob_m = as_probabilities(target(mx), my.size)
    prob_n = as_probabilities(target(nx), ny.size)
    k = prob_m.shape[1]
    estimator = bb.BlackBoxClassifier(
        lambda x: as_probabilities(target(x), x.shape[0]), (mx.shape[1],), k
    )

    def loss(p: FloatArray, y: npt.NDArray[Any]) -> FloatArray:
        picked = p[np.arange(y.size), y.astype(np.intp)]
        return np.asarray(-np.log(np.maximum(picked, 1e-300)), dtype=np.float64)[:, None]

    lab = np.r_[np.ones(m_eval.size), np.zeros(n_eval.size)]
    ey: npt.NDArray[Any] = np.concatenate([my[m_eval], ny[n_eval]]).astype(np.intp)
    ep = np.vstack([prob_m[m_eval], prob_n[n_eval]])
    figures = {}
    for kind, features, model, labelled in (
        ("loss", loss, "lr", False),
        ("loss_label", loss, "lr", True),
        ("prediction", lambda p, y: p, "gb", True),
    ):
        attack = mi.MembershipInferenceBlackBox(
            estimator, input_type="prediction", attack_model_type=model
        )
        attack.fit(
            y=my[m_fit].astype(np.intp) if labelled else None,
            pred=features(prob_m[m_fit], my[m_fit]),
            test_y=ny[n_fit].astype(np.intp) if labelled else None,
            test_pred=features(prob_n[n_fit], ny[n_fit]),
        )
        proba = attack.infer(
            None, ey if labelled else None, pred=features(ep, ey), probabilities=True
        )
        figures[kind] = float(roc_auc_score(lab, np.asarray(proba, dtype=np.float64).ravel()))
    ours = auc(
        roc_curve(
            confidence_signal(target, mx[m_eval], my[m_eval]),
            confidence_signal(target, nx[n_eval], ny[n_eval]),
        )
    )
    return ArtCrossCheck(
        ours,
        figures["loss"],
        figures["loss_label"],
        figures["prediction"],
        int(m_eval.size),
        int(n_eval.size),
        str(getattr(art, "__version__", "unknown")),
    )
