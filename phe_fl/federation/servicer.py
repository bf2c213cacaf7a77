"""Thin gRPC servicers: each checks who calls (from its certificate), delegates to the
domain object and reports a domain error with the status of the one table in
:mod:`phe_fl.federation.status`. Nothing here decides anything.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any, NoReturn

import grpc

from phe_fl.errors import JobCancelledError, JobStateError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.certs import require_role
from phe_fl.federation.coordinator import Coordinator
from phe_fl.federation.jobs import Job
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
    """Root.Submit: one querier job. Job control and read-only kinds answer at once; a
    submitted job is accepted, then (unless detached) followed: its progress events, then
    its result. A watch follows an earlier job the same way. Leaving does not stop a job."""

    def __init__(self, coordinator: Coordinator) -> None:
        self.coordinator = coordinator

    def Submit(  # noqa: N802
        self, request_iterator: Iterable[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        who = require_role(context, "querier", method="Root.Submit")
        try:
            request = _one_message(request_iterator)
            outcome = self.coordinator.submit(request, who.name)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            _abort(context, exc)
        if not isinstance(outcome, Job):
            yield from job_reply_frames(outcome, 0)
            return
        replies = _follow(self.coordinator, outcome, watching=isinstance(request.job, m.WatchJob))
        if request.detach:
            replies = iter([m.Accepted(outcome.info)])
        call = 0
        try:
            for reply in replies:
                yield from job_reply_frames(reply, call)
                call += 1
        except Exception as exc:  # noqa: BLE001 - the job's own error, as its status
            _abort(context, exc)


def _follow(
    coordinator: Coordinator, job: Job, *, watching: bool
) -> Iterator[m.ProgressEvent | m.Accepted | m.JobResult]:
    """Accepted, the job's events, then its result (or its error, raised); a watch ends
    with the job's record."""
    yield m.Accepted(job.info)
    yield from job.follow()
    result = coordinator.jobs.result(job)
    if not watching:
        if job.error is not None:
            raise job.error
        if job.info.state == "failed":
            raise JobStateError(f"job {job.info.job_id} failed: {job.info.error}")
        if job.info.state == "cancelled":
            raise JobCancelledError(f"job {job.info.job_id} was cancelled")
    if result is not None:
        yield result
    if watching:
        yield m.WatchResult(job.info)


def _one_message(frames: Iterable[Frame]) -> m.JobRequest:
    reader = FrameReader()
    for frame in frames:
        done = reader.feed(frame)
        if done is not None:
            return read_job_request(done[1])
    raise ProtocolError("the stream ended before a whole job request")


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
