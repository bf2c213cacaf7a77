"""phe-fl: federated learning where every institution holds one share of a collective
CKKS secret key, so the model and the querier's data stay encrypted end to end."""

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

__all__ = [
    "__version__",
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
