"""Thin gRPC servicers: each checks who calls (from its certificate), delegates to the
domain object and reports a domain error with the status of the one table in
:mod:`phe_fl.federation.status`. Nothing here decides anything.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import grpc

from phe_fl.errors import BusyError, JobCancelledError, JobStateError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.certs import require_role
from phe_fl.federation.coordinator import Coordinator
from phe_fl.federation.jobs import Job
from phe_fl.federation.observability import METRICS, log_context
from phe_fl.federation.serde import (
    WIRE,
    Frame,
    FrameReader,
    job_reply_frames,
    read_job_request,
)
from phe_fl.federation.status import grpc_status, public_message, status_name
from phe_fl.federation.tree import Children
from phe_fl.v2 import query_pb2_grpc, tree_pb2_grpc

__all__ = ["TreeServicer", "RootServicer", "OldWireRefusal", "PeerLimiter"]

log = logging.getLogger("phe_fl.servicer")


REQUEST_TIMEOUT_S = 60.0
"""A querier's whole job request must arrive within this (a stalled upload frees its thread)."""


def _end(context: grpc.ServicerContext, exc: BaseException, who: object = "?") -> None:
    """How a stream that failed ends: a peer that cancelled it (its request iterator
    raised, or the call is over) is ordinary and gets one INFO line; anything else is a
    refusal (:func:`_abort`)."""
    if isinstance(exc, grpc.RpcError) or not context.is_active():
        log.info("%s ended its stream before its answer", who)
        return
    _abort(context, exc, who)


def _abort(context: grpc.ServicerContext, exc: BaseException, who: object = "?") -> NoReturn:
    """One WARNING line per refused request (details at DEBUG), then the status."""
    message = public_message(exc)
    METRICS.refused_requests.labels(status_name(exc)).inc()
    log.warning("refused a request from %s: %s: %s", who, status_name(exc), message[:300])
    log.debug("refusal details", exc_info=exc)
    context.abort(grpc_status(exc), message)
    raise AssertionError("unreachable")  # context.abort raises


class PeerLimiter:
    """At most ``per_peer`` requests of one peer and ``total`` in all at once: a member
    holding streams open cannot take every worker thread (health checks and the tree's
    own streams need some)."""

    def __init__(self, per_peer: int, total: int) -> None:
        self.per_peer = per_peer
        self.total = total
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def hold(self, peer: str) -> Iterator[None]:
        with self._lock:
            mine = self._counts.get(peer, 0)
            if mine >= self.per_peer:
                raise BusyError(f"{peer} already has {mine} requests in flight here")
            if sum(self._counts.values()) >= self.total:
                raise BusyError(f"this node serves {self.total} requests at once; try later")
            self._counts[peer] = mine + 1
        try:
            yield
        finally:
            with self._lock:
                self._counts[peer] -= 1
                if not self._counts[peer]:
                    del self._counts[peer]


class TreeServicer(tree_pb2_grpc.TreeServicer):
    """Tree.Connect: a child's long-lived stream (see :mod:`phe_fl.federation.tree`)."""

    def __init__(self, children: Children, limiter: PeerLimiter) -> None:
        self.children = children
        self.limiter = limiter

    def Connect(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterable[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        who = require_role(context, "node", method="Tree.Connect")
        # a child that connects and never says hello must not hold a thread forever, and a
        # certificate cannot hold more streams than a reconnecting child needs
        watchdog = threading.Timer(REQUEST_TIMEOUT_S, context.cancel)
        watchdog.start()
        try:
            with self.limiter.hold(str(who)), log_context(peer=who.name):
                yield from self.children.serve(
                    who.name, request_iterator, context.is_active, on_hello=watchdog.cancel
                )
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            _end(context, exc, who)
        finally:
            watchdog.cancel()


class RootServicer(query_pb2_grpc.RootServicer):
    """Root.Submit: one querier job. Job control and read-only kinds answer at once; a
    submitted job is accepted, then (unless detached) followed: its progress events, then
    its result. A watch follows an earlier job the same way. Leaving does not stop a job."""

    def __init__(self, coordinator: Coordinator, limiter: PeerLimiter) -> None:
        self.coordinator = coordinator
        self.limiter = limiter

    def Submit(  # noqa: N802
        self, request_iterator: Iterable[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        who = require_role(context, "querier", method="Root.Submit")
        try:
            self.coordinator.admit_querier(who.name)  # before reading a single frame
            with self.limiter.hold(str(who)), log_context(peer=who.name):
                yield from self._submit(who.name, request_iterator, context)
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            _end(context, exc, who)

    def _submit(
        self, querier: str, request_iterator: Iterable[Frame], context: grpc.ServicerContext
    ) -> Iterator[Frame]:
        watchdog = threading.Timer(REQUEST_TIMEOUT_S, context.cancel)
        watchdog.start()
        try:
            request = _one_message(request_iterator, self.coordinator.max_request_bytes)
        finally:
            watchdog.cancel()
        outcome = self.coordinator.submit(request, querier)
        if not isinstance(outcome, Job):
            yield from job_reply_frames(outcome, 0)
            return
        replies = _follow(self.coordinator, outcome, watching=isinstance(request.job, m.WatchJob))
        if request.detach:
            replies = iter([m.Accepted(outcome.info)])
        for call, reply in enumerate(replies):  # the job's own error ends it as its status
            yield from job_reply_frames(reply, call)


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


def _one_message(frames: Iterable[Frame], max_bytes: int) -> m.JobRequest:
    reader = FrameReader(max_bytes)
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
