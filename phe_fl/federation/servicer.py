"""Thin gRPC servicers: each checks who calls (from its certificate), delegates to the
domain object and reports a domain error with the status of the one table in
:mod:`phe_fl.federation.status`. Nothing here decides anything.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NoReturn

import grpc

from phe_fl.errors import ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.certs import require_role
from phe_fl.federation.coordinator import Coordinator
from phe_fl.federation.serde import (
    WIRE,
    Frame,
    FrameReader,
    job_reply_frames,
    read_job_request,
)
from phe_fl.federation.status import grpc_status, public_message
from phe_fl.federation.tree import Children
from phe_fl.v2 import query_pb2_grpc, tree_pb2_grpc

__all__ = ["TreeServicer", "RootServicer", "OldWireRefusal"]

log = logging.getLogger("phe_fl.servicer")


def _abort(context: grpc.ServicerContext, exc: BaseException) -> NoReturn:
    context.abort(grpc_status(exc), public_message(exc))
    raise AssertionError("unreachable")  # context.abort raises


class TreeServicer(tree_pb2_grpc.TreeServicer):
    """Tree.Connect: a child's long-lived stream (see :mod:`phe_fl.federation.tree`)."""

    def __init__(self, children: Children) -> None:
        self.children = children

    def Connect(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterable[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        who = require_role(context, "node", method="Tree.Connect")
        try:
            yield from self.children.serve(who.name, request_iterator, context.is_active)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            log.warning("refused a connection from %s: %s", who, exc)
            _abort(context, exc)


class RootServicer(query_pb2_grpc.RootServicer):
    """Root.Submit: one querier job; progress events stream back, then its result."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def Submit(  # noqa: N802
        self, request_iterator: Iterable[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        who = require_role(context, "querier", method="Root.Submit")
        try:
            request = _one_message(request_iterator)
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)
        yield from _stream_job(
            lambda emit: self.coordinator.run(request, who.name, emit), request.job_id, context
        )


def _one_message(frames: Iterable[Frame]) -> m.JobRequest:
    reader = FrameReader()
    for frame in frames:
        done = reader.feed(frame)
        if done is not None:
            return read_job_request(done[1])
    raise ProtocolError("the stream ended before a whole job request")


def _stream_job(
    job: Callable[[Callable[[m.ProgressEvent], None]], m.JobResult],
    job_id: str,
    context: grpc.ServicerContext,
) -> Iterator[Frame]:
    """Run ``job`` in a thread and stream its progress events, then its result."""
    events: queue.Queue[Any] = queue.Queue()
    done = object()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = job(events.put)
        except Exception as exc:  # noqa: BLE001 - re-raised as a status below
            outcome["error"] = exc
        events.put(done)

    threading.Thread(target=work, name=f"job-{job_id}", daemon=True).start()
    call = 0
    while True:
        item = events.get()
        if item is done:
            break
        yield from job_reply_frames(item, call)
        call += 1
    if "error" in outcome:
        _abort(context, outcome["error"])
    yield from job_reply_frames(outcome["result"], call)


class OldWireRefusal(grpc.GenericRpcHandler):  # type: ignore[misc]
    """Answers a peer that speaks an older wire package with an error naming both."""

    def service(self, handler_call_details: Any) -> grpc.RpcMethodHandler | None:
        method = str(handler_call_details.method)
        if not method.startswith("/phe_fl.") or method.startswith(f"/{WIRE}."):
            return None
        version = method[1:].split(".", 2)[1] if method.count(".") >= 2 else "?"

        def refuse(request: Any, context: grpc.ServicerContext) -> None:
            context.abort(
                grpc.StatusCode.UNIMPLEMENTED,
                f"this node speaks {WIRE}; the peer called {method} (wire package "
                f"phe_fl.{version}): upgrade it to the same phe-fl release",
            )

        return grpc.stream_stream_rpc_method_handler(refuse)
