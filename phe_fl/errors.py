"""One exception tree for all of phe-fl.

Every error the project raises derives from :class:`PheFlError`, and each subclass
also derives from the built-in exception a caller would naturally catch (``ValueError``
for bad input, ``RuntimeError`` for a failed computation). Foreign exceptions (OpenFHE's
``RuntimeError``, ``grpc.RpcError``) are translated at the edge, in one place per layer,
and never carry secret material in their messages.
"""

from __future__ import annotations

__all__ = [
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
    "JobCancelledError",
    "BusyError",
    "AppError",
    "StageLostError",
]


class PheFlError(Exception):
    """Base of every error raised by phe-fl."""


class ParameterError(PheFlError, ValueError):
    """A parameter set, or a value checked against one, is invalid."""


class SerializationError(PheFlError, ValueError):
    """Bytes that should hold a phe-fl object are truncated, corrupted or of another kind."""


class ProtocolError(PheFlError, ValueError):
    """A protocol message does not fit the protocol run it was given to."""


class KeyMismatchError(ProtocolError):
    """Objects belong to different keys, parameter sets or protocol instances."""


class PartySetError(ProtocolError):
    """Shares come from the wrong parties: overlapping, missing or out of range."""


class LevelError(PheFlError, ValueError):
    """A ciphertext has too few levels left for the requested operation."""


class CryptoError(PheFlError, RuntimeError):
    """The homomorphic-encryption library refused or failed an operation."""


class ConfigError(PheFlError, ValueError):
    """A node or job configuration is invalid; the message names the file and field."""


class JobStateError(PheFlError, RuntimeError):
    """A protocol step arrived out of order, or before the state it needs exists."""


class PolicyError(PheFlError, PermissionError):
    """A node's policy refuses to contribute (for example to an unknown querier)."""


class PeerError(PheFlError, ConnectionError):
    """Another node failed, refused or did not answer in time; names the node."""

    def __init__(self, node: str, message: str, *, code: str = "") -> None:
        super().__init__(f"node {node}: {message}")
        self.node = node
        self.code = code  # the gRPC status name of the node's answer, when it answered

    @property
    def answered(self) -> bool:
        """The node answered and said no (a refusal, a bad request, a step out of order):
        asking it again gets the same answer, unlike a node that is gone."""
        return self.code in ("PERMISSION_DENIED", "FAILED_PRECONDITION", "INVALID_ARGUMENT")


class StateError(PheFlError, RuntimeError):
    """A node's state directory cannot be used: another node's, federation's, parameter
    set's or a newer format's, or a file in it is corrupt; the message names which."""


class AuditError(PheFlError, ValueError):
    """An audit log's hash chain is broken; the message names the line."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line


class StageLostError(PheFlError, RuntimeError):
    """A node was asked to go on with a computation it no longer holds (it restarted in
    the middle of a network's MAP); the asker starts the iteration again."""


class AppError(PheFlError, RuntimeError):
    """A site's own training code (its FedAvg app) failed or returned something unusable;
    the message names the node, the app and, where it is one, the tensor."""


class JobCancelledError(PheFlError, RuntimeError):
    """A querier cancelled the job; it stopped at its next step."""


class BusyError(PheFlError, RuntimeError):
    """A peer already has as many requests in flight as a node serves it at once."""
