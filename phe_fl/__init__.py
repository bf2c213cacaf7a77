"""phe-fl: federated learning where every institution holds one share of a collective
CKKS secret key, so the model and the querier's data stay encrypted end to end.

The analyst's API: :class:`FederatedGLM` (a scikit-learn-style estimator) on top of
:class:`Querier` (every job kind); both import gRPC and OpenFHE on first use only.
"""

import importlib
from typing import Any

from phe_fl.errors import (
    AuditError,
    ConfigError,
    CryptoError,
    JobStateError,
    KeyMismatchError,
    LevelError,
    ParameterError,
    PartySetError,
    PeerError,
    PheFlError,
    PolicyError,
    ProtocolError,
    SerializationError,
    StateError,
)

__version__ = "0.1.0"

_LAZY = {
    "FederatedGLM": "phe_fl.federation.estimator",
    "Querier": "phe_fl.federation.querier",
    "TlsPaths": "phe_fl.federation.config",
    "TrainingJob": "phe_fl.ml",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'phe_fl' has no attribute {name!r}")


__all__ = [
    "__version__",
    "FederatedGLM",
    "Querier",
    "TlsPaths",
    "TrainingJob",
    "PheFlError",
    "ParameterError",
    "SerializationError",
    "ProtocolError",
    "KeyMismatchError",
    "PartySetError",
    "LevelError",
    "CryptoError",
    "ConfigError",
    "JobStateError",
    "PolicyError",
    "PeerError",
    "StateError",
    "AuditError",
]
