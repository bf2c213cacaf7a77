"""The one table between phe-fl's errors and gRPC status codes, used both ways: a node
reports a domain error as a status (to a querier) or as a typed Failure (up the tree),
and a gRPC failure from a peer becomes a :class:`~phe_fl.errors.PeerError` naming it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import grpc

from phe_fl.errors import (
    AppError,
    BusyError,
    CryptoError,
    JobCancelledError,
    JobStateError,
    PeerError,
    PheFlError,
    PolicyError,
    StageLostError,
)
from phe_fl.federation.messages import Failure

__all__ = ["PeerTimeout", "STATUS_TABLE", "status_name", "grpc_status", "failure_for", "rpc_errors"]

log = logging.getLogger("phe_fl.status")

STATUS_TABLE: tuple[tuple[type[Exception], str], ...] = (
    (JobCancelledError, "CANCELLED"),
    (BusyError, "RESOURCE_EXHAUSTED"),
    (PolicyError, "PERMISSION_DENIED"),
    (JobStateError, "FAILED_PRECONDITION"),
    (AppError, "FAILED_PRECONDITION"),  # a site's app cannot run the job as it stands
    (PeerError, "ABORTED"),  # a node further down failed; not worth a retry here
    (StageLostError, "ABORTED"),  # a node restarted mid-MAP: the root redoes the iteration
    (CryptoError, "INTERNAL"),
    (PheFlError, "INVALID_ARGUMENT"),  # bad input: protocol, serialization, keys, parameters
)
"""First match wins; anything else is INTERNAL."""


def status_name(exc: BaseException) -> str:
    for kind, name in STATUS_TABLE:
        if isinstance(exc, kind):
            return name
    return "INTERNAL"


def grpc_status(exc: BaseException) -> grpc.StatusCode:
    return getattr(grpc.StatusCode, status_name(exc))


MAX_MESSAGE_CHARS = 2000
"""A status message quotes what was wrong, never all of it: gRPC refuses status details
over 16 KiB, and an echoed 70 000-character field would turn a clean refusal into a
stream reset."""


def public_message(exc: BaseException) -> str:
    """What may leave the node: a domain error's own words (cut to
    :data:`MAX_MESSAGE_CHARS`); never the internals (or anything secret) of an unexpected
    failure, which go to the node's log."""
    if isinstance(exc, PheFlError):
        text = str(exc)
        if len(text) > MAX_MESSAGE_CHARS:
            text = text[: MAX_MESSAGE_CHARS - 40] + f"... ({len(text)} characters in all)"
        return text
    log.error("internal error: %s", type(exc).__name__, exc_info=exc)
    return f"internal error ({type(exc).__name__}); see the node's log"


def failure_for(exc: BaseException) -> Failure:
    return Failure(status_name(exc), public_message(exc))


class PeerTimeout(PeerError):
    """This process's own deadline for a peer passed (the peer may still be working)."""


@contextmanager
def rpc_errors(peer: str) -> Iterator[None]:
    """A gRPC failure, or a malformed answer, inside the block becomes a PeerError
    naming ``peer``."""
    try:
        yield
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise PeerTimeout(peer, f"did not answer within its deadline ({details})") from None
        if code == grpc.StatusCode.UNIMPLEMENTED:
            raise PeerError(peer, f"does not speak phe_fl.v2 (UNIMPLEMENTED: {details})") from None
        raise PeerError(peer, f"{code.name if code else 'ERROR'}: {details}") from None
    except PeerError:
        raise
    except PheFlError as exc:
        raise PeerError(peer, f"sent a malformed answer: {exc}") from None
