"""Measured privacy: membership-inference audits of what each observer of phe-fl sees.

The audit plays the indistinguishability game of ML Privacy Meter: the auditor holds
members (rows that trained the target), non-members and population data, all plaintext
it is entitled to, and attacks the target through exactly one observer's view:

* the querier of phe-fl (its predictions: the model as a function from rows to scores;
  the plaintext twin gives the same scores up to CKKS noise): the population-calibrated
  loss threshold attack and the reference-model attack (LiRA offline);
* the server of a plain FedAvg run, which sees every party's update in the clear: the
  gradient attacks of :mod:`phe_fl.privacy.fedavg`;
* a phe-fl party, which sees only ciphertexts: no attack applies (stated in the report).

Python: :func:`audit_membership` (any model as a function) or
:func:`membership_experiment` (a shipped dataset end to end); command line:
``phe-fl audit membership`` (:func:`add_membership_parser`, :func:`run_membership`).

Differential privacy accounting (dp-accounting's RDP accountant) for DP training jobs:
:func:`epsilon_spent`, :func:`noise_for`, :func:`job_epsilon` (:mod:`.accounting`).

Names are resolved on first use, so that building the command line (``phe-fl --help``)
does not import the ML engine and OpenFHE.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from phe_fl.privacy.accounting import (
        epsilon_spent,
        job_epsilon,
        job_sample_rate,
        noise_for,
    )
    from phe_fl.privacy.attacks import (
        AttackResult,
        AuditData,
        audit_split,
        confidence_signal,
        reference_attack,
        threshold_attack,
    )
    from phe_fl.privacy.audit import (
        OBSERVERS,
        PARTY_NOTE,
        audit_membership,
        membership_experiment,
        network_trainer,
    )
    from phe_fl.privacy.cli import add_membership_parser, run_membership
    from phe_fl.privacy.fedavg import (
        FedAvgConfig,
        FedAvgTranscript,
        decomposition_scores,
        gradient_attack,
        gradient_scores,
        train_fedavg,
    )
    from phe_fl.privacy.metrics import (
        AttackMetrics,
        RocCurve,
        advantage,
        attack_metrics,
        auc,
        roc_curve,
        tpr_at_fpr,
    )
    from phe_fl.privacy.models import (
        GLMTwinModel,
        GLMTwinTrainer,
        ScoreFn,
        SklearnModel,
        SklearnTrainer,
        Trainer,
    )
    from phe_fl.privacy.report import MembershipReport

_LAZY = {
    "epsilon_spent": "phe_fl.privacy.accounting",
    "job_epsilon": "phe_fl.privacy.accounting",
    "job_sample_rate": "phe_fl.privacy.accounting",
    "noise_for": "phe_fl.privacy.accounting",
    "AttackResult": "phe_fl.privacy.attacks",
    "AuditData": "phe_fl.privacy.attacks",
    "audit_split": "phe_fl.privacy.attacks",
    "confidence_signal": "phe_fl.privacy.attacks",
    "reference_attack": "phe_fl.privacy.attacks",
    "threshold_attack": "phe_fl.privacy.attacks",
    "OBSERVERS": "phe_fl.privacy.audit",
    "PARTY_NOTE": "phe_fl.privacy.audit",
    "audit_membership": "phe_fl.privacy.audit",
    "membership_experiment": "phe_fl.privacy.audit",
    "network_trainer": "phe_fl.privacy.audit",
    "add_membership_parser": "phe_fl.privacy.cli",
    "run_membership": "phe_fl.privacy.cli",
    "FedAvgConfig": "phe_fl.privacy.fedavg",
    "FedAvgTranscript": "phe_fl.privacy.fedavg",
    "decomposition_scores": "phe_fl.privacy.fedavg",
    "gradient_attack": "phe_fl.privacy.fedavg",
    "gradient_scores": "phe_fl.privacy.fedavg",
    "train_fedavg": "phe_fl.privacy.fedavg",
    "AttackMetrics": "phe_fl.privacy.metrics",
    "RocCurve": "phe_fl.privacy.metrics",
    "advantage": "phe_fl.privacy.metrics",
    "attack_metrics": "phe_fl.privacy.metrics",
    "auc": "phe_fl.privacy.metrics",
    "roc_curve": "phe_fl.privacy.metrics",
    "tpr_at_fpr": "phe_fl.privacy.metrics",
    "GLMTwinModel": "phe_fl.privacy.models",
    "GLMTwinTrainer": "phe_fl.privacy.models",
    "ScoreFn": "phe_fl.privacy.models",
    "SklearnModel": "phe_fl.privacy.models",
    "SklearnTrainer": "phe_fl.privacy.models",
    "Trainer": "phe_fl.privacy.models",
    "MembershipReport": "phe_fl.privacy.report",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phe_fl.privacy' has no attribute {name!r}")


__all__ = [
    "epsilon_spent",
    "job_epsilon",
    "job_sample_rate",
    "noise_for",
    "AttackResult",
    "AuditData",
    "audit_split",
    "confidence_signal",
    "reference_attack",
    "threshold_attack",
    "OBSERVERS",
    "PARTY_NOTE",
    "audit_membership",
    "membership_experiment",
    "network_trainer",
    "add_membership_parser",
    "run_membership",
    "FedAvgConfig",
    "FedAvgTranscript",
    "decomposition_scores",
    "gradient_attack",
    "gradient_scores",
    "train_fedavg",
    "AttackMetrics",
    "RocCurve",
    "advantage",
    "attack_metrics",
    "auc",
    "roc_curve",
    "tpr_at_fpr",
    "GLMTwinModel",
    "GLMTwinTrainer",
    "ScoreFn",
    "SklearnModel",
    "SklearnTrainer",
    "Trainer",
    "MembershipReport",
]
