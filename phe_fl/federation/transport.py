"""Client side of the node-to-node links: one gRPC channel (mutual TLS) per child, with a
deadline on every call. ``grpc.RpcError`` is translated here, in one place, into
:class:`~phe_fl.errors.PeerError` naming the node that failed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

import grpc

from phe_fl.errors import PeerError, PheFlError
from phe_fl.federation.certs import load_channel_credentials
from phe_fl.federation.config import ChildLink, TlsPaths
from phe_fl.federation.serde import Event, Received, Step, from_frames, to_frames
from phe_fl.v1 import federation_pb2_grpc as pb_grpc

__all__ = ["NodeClient", "open_channel", "rpc_errors"]

T = TypeVar("T")
log = logging.getLogger("phe_fl.transport")

_OPTIONS = [
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]


def open_channel(address: str, tls: TlsPaths) -> grpc.Channel:
    return grpc.secure_channel(
        address, load_channel_credentials(tls.cert, tls.key, tls.ca), _OPTIONS
    )


def rpc_errors(node: str, call: Callable[[], T]) -> T:
    """Run ``call``; a gRPC failure becomes a PeerError naming ``node``."""
    try:
        return call()
    except grpc.RpcError as exc:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        name = code.name if code is not None else "ERROR"
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            raise PeerError(node, f"did not answer within its deadline ({details})") from None
        raise PeerError(node, f"{name}: {details}") from None
    except PheFlError as exc:
        if isinstance(exc, PeerError):
            raise
        raise PeerError(node, f"sent a malformed answer: {exc}") from None


RETRY_DELAYS_S = (0.5, 1.0, 2.0, 4.0)


def _with_retries(call: Callable[[], T], start: float, deadline: float) -> T:
    """Retry ``call`` while the peer is UNAVAILABLE (not listening yet, connection lost)
    and the deadline leaves room; any other failure is final."""
    for delay in (*RETRY_DELAYS_S, None):
        try:
            return call()
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else None
            elapsed = time.monotonic() - start
            if code != grpc.StatusCode.UNAVAILABLE or delay is None or elapsed + delay >= deadline:
                raise
            log.warning("peer unavailable (%s); retrying in %.1f s", exc.details(), delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


class NodeClient:
    """A link to one node: children for Contribute/Broadcast, the root for Query."""

    def __init__(self, link: ChildLink, tls: TlsPaths, deadline_s: float) -> None:
        self.id = link.id
        self.address = link.address
        self.deadline_s = deadline_s
        self._channel = open_channel(link.address, tls)
        self._stub = pb_grpc.NodeStub(self._channel)  # type: ignore[no-untyped-call]

    def contribute(self, step: Step, timeout: float | None = None) -> Received:
        """The child's subtree contribution. A child that cannot be reached is asked again
        (the same request, so it answers from its cache if it already worked on it); one
        that answered with an error or ran out of time is not."""
        deadline = self.deadline_s if timeout is None else min(timeout, self.deadline_s)
        start = time.monotonic()

        def call() -> Received:
            left = deadline - (time.monotonic() - start)
            frames = self._stub.Contribute(to_frames(step), timeout=max(left, 0.1))
            return from_frames(frames)

        return rpc_errors(self.id, lambda: _with_retries(call, start, deadline))

    def broadcast(self, step: Step) -> list[str]:
        def call() -> list[str]:
            ack = self._stub.Broadcast(to_frames(step), timeout=self.deadline_s)
            return list(ack.installed_by)

        return rpc_errors(self.id, call)

    def query(self, step: Step, on_event: Callable[[Event], None] | None = None) -> Received:
        def call() -> Received:
            frames: Iterator[object] = self._stub.Query(to_frames(step), timeout=self.deadline_s)
            return from_frames(frames, on_event)  # type: ignore[arg-type]

        return rpc_errors(self.id, call)

    def close(self) -> None:
        self._channel.close()
