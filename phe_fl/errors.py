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
