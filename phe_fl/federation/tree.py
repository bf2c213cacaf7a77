"""The tree transport: children dial out to their parent.

Each node that has a parent keeps one long-lived mutual-TLS stream open to it
(:class:`ParentConnection`), receives its work on it and answers on it; only nodes with
children listen, so a leaf institution needs no inbound port. Why one bidirectional
stream rather than long-polling: the parent learns at once that a child is gone (the
stream ends), requests reach the child without a poll interval, several requests can be
in flight at once (answers carry their call id), and a firewall sees one outbound
connection kept alive by gRPC keepalives.

The parent side (:class:`Children`) knows each child by the identity in its client
certificate (``node:<id>``), which must be a configured child and match what the child
says in its Hello; a new connection from the same child replaces the old one. The child
checks its parent the same way: TLS verifies the parent's certificate against the name
``<parent-id>.node.phe-fl`` (:func:`~phe_fl.federation.certs.identity_host`), not the
address, so no node can stand in for another.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import grpc

from phe_fl.errors import JobStateError, PeerError, PheFlError, PolicyError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.certs import identity_host, load_channel_credentials
from phe_fl.federation.config import NodeConfig, TlsPaths
from phe_fl.federation.observability import log_context
from phe_fl.federation.serde import (
    Frame,
    FrameReader,
    child_answer_frames,
    child_message_frames,
    frames_of,
    parent_message_bytes,
    parent_message_frames,
    read_child_message,
    read_parent_message,
    tree_message_limit,
    tree_response_bytes,
)
from phe_fl.federation.status import failure_for, rpc_errors
from phe_fl.v2 import tree_pb2_grpc

__all__ = ["Children", "ParentConnection", "open_channel", "CHANNEL_OPTIONS"]

log = logging.getLogger("phe_fl.tree")

CHANNEL_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.keepalive_time_ms", 20_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
]
CONNECT_WAIT_S = 30.0
"""How long a step waits for a child that is not connected (yet, or again)."""
MAX_RESENDS = 3
"""How often a request is sent again to a child whose stream dropped while it was asked
(a child that crashes on a request must not be asked it forever)."""
BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)
"""A child's delays between attempts to reach its parent; the last one repeats."""


def open_channel(address: str, tls: TlsPaths, peer_id: str | None = None) -> grpc.Channel:
    """A mutual-TLS channel; with ``peer_id``, TLS checks the server is that node."""
    options = list(CHANNEL_OPTIONS)
    if peer_id is not None:
        options.append(("grpc.ssl_target_name_override", identity_host(peer_id)))
    creds = load_channel_credentials(tls.cert, tls.key, tls.ca)
    return grpc.secure_channel(address, creds, options)


def _chain(outbox: queue.Queue[Iterator[Frame] | None]) -> Iterator[Frame]:
    """The frames of each queued message in turn, until None."""
    for frames in iter(outbox.get, None):
        yield from frames


def _messages(frames: Iterable[Frame], limit: int) -> Iterator[tuple[int, bytearray]]:
    """The whole messages of a tree stream; none may declare more than ``limit`` bytes."""
    reader = FrameReader(limit)
    for frame in frames:
        done = reader.feed(frame)
        if done is not None:
            yield done
    if reader.incomplete:
        raise ProtocolError("stream ended inside a message")


# -- parent side ----------------------------------------------------------------------------
class _Link:
    """One connected child's stream, seen from the parent: calls out, answers in."""

    def __init__(self, child_id: str) -> None:
        self.child_id = child_id
        self.outbox: queue.Queue[Iterator[Frame] | None] = queue.Queue()
        self._pending: dict[int, Future[m.TreeResponse]] = {}
        self._calls = itertools.count(1)
        self._lock = threading.Lock()
        self.closed = threading.Event()
        self.reason = ""

    def send(self, request: m.TreeRequest, data: bytes) -> Future[m.TreeResponse]:
        """``request`` (``data``: its serialization, shared by all children) to the child."""
        future: Future[m.TreeResponse] = Future()
        with self._lock:
            if self.closed.is_set():
                future.set_exception(PeerError(self.child_id, self.reason))
                return future
            call = next(self._calls)
            self._pending[call] = future
        future.add_done_callback(lambda _: self._forget(call))
        self.outbox.put(frames_of(data, call))  # framed as it is sent
        return future

    def _forget(self, call: int) -> None:
        with self._lock:
            self._pending.pop(call, None)

    def deliver(self, call: int, response: m.TreeResponse) -> None:
        with self._lock:
            future = self._pending.pop(call, None)
        if future is None:
            log.info("late answer from %s to call %d (its caller gave up)", self.child_id, call)
        elif not future.done():
            future.set_result(response)

    def close(self, reason: str) -> None:
        with self._lock:
            if self.closed.is_set():
                return
            self.reason = reason
            self.closed.set()
            pending = list(self._pending.values())
            self._pending.clear()
        for future in pending:
            if not future.done():
                future.set_exception(_Disconnected(self.child_id, reason))
        self.outbox.put(None)


class _Disconnected(PeerError):
    """The child's stream closed while a call was in flight (it may come back)."""


class Children:
    """A node's configured children and their current connections."""

    def __init__(self, node: NodeConfig) -> None:
        self.node = node
        self._ids = tuple(node.children)
        self._links: dict[str, _Link] = {}
        self._changed = threading.Condition()
        self._encoding = threading.Lock()
        self._last: tuple[weakref.ref[m.TreeRequest], bytes] | None = None
        self._limit = tree_message_limit(node.params)

    @property
    def ids(self) -> Sequence[str]:
        return self._ids

    def connected(self) -> list[str]:
        with self._changed:
            return sorted(self._links)

    # the gRPC handler of Tree.Connect delegates here
    def serve(
        self,
        child_id: str,
        frames: Iterable[Frame],
        active: Callable[[], bool],
        *,
        on_hello: Callable[[], None] = lambda: None,
    ) -> Iterator[Frame]:
        """Run one child's stream: check its Hello, then send it requests and route its
        answers until it disconnects. ``child_id`` is from its verified certificate."""
        if child_id not in self._ids:
            raise PolicyError(
                f"node {child_id} is not a child of {self.node.id} "
                f"(its children: {', '.join(self._ids) or 'none'})"
            )
        incoming = _messages(frames, self._limit)
        try:
            _, data = next(incoming)
        except StopIteration:
            raise ProtocolError(f"node {child_id} closed its stream before saying hello") from None
        hello = read_child_message(data)
        self._check_hello(child_id, hello)
        on_hello()
        link = self._attach(child_id)
        reader = threading.Thread(
            target=self._read,
            args=(link, incoming),
            name=f"{self.node.id}<-{child_id}",
            daemon=True,
        )
        reader.start()
        yield from parent_message_frames(m.Welcome(self.node.id))
        try:
            while active() and not link.closed.is_set():
                try:
                    message = link.outbox.get(timeout=1.0)
                except queue.Empty:
                    continue
                if message is None:
                    break
                yield from message
        finally:
            self._detach(link, "its stream closed")

    def _check_hello(self, child_id: str, hello: m.Hello | m.TreeResponse) -> None:
        if not isinstance(hello, m.Hello):
            raise ProtocolError(f"node {child_id} must say hello first")
        if hello.node_id != child_id:
            raise PolicyError(
                f"the certificate names node:{child_id} but the node says it is "
                f"{hello.node_id!r}; refused"
            )
        if hello.params != self.node.params or hello.n_parties != self.node.n_parties:
            raise JobStateError(
                f"node {child_id} is configured for {hello.params!r} with {hello.n_parties} "
                f"parties; {self.node.id} for {self.node.params!r} with {self.node.n_parties}"
            )

    def _attach(self, child_id: str) -> _Link:
        link = _Link(child_id)
        with self._changed:
            old = self._links.get(child_id)
            self._links[child_id] = link
            self._changed.notify_all()
        if old is not None:
            old.close(f"replaced by a new connection from {child_id}")
        log.info("%s: child %s connected", self.node.id, child_id)
        return link

    def _detach(self, link: _Link, reason: str) -> None:
        link.close(f"disconnected ({reason})")
        with self._changed:
            if self._links.get(link.child_id) is link:
                del self._links[link.child_id]
                log.info("%s: child %s disconnected (%s)", self.node.id, link.child_id, reason)
            self._changed.notify_all()

    def _read(self, link: _Link, incoming: Iterator[tuple[int, bytearray]]) -> None:
        with log_context(peer=link.child_id):
            self._read_answers(link, incoming)

    def _read_answers(self, link: _Link, incoming: Iterator[tuple[int, bytearray]]) -> None:
        reason = "it closed its stream"
        try:
            for call, data in incoming:
                message = read_child_message(data)
                del data  # an answer may be hundreds of MB: keep one copy, not two
                if not isinstance(message, m.TreeResponse):
                    raise ProtocolError("a second hello")
                link.deliver(call, message)
        except grpc.RpcError as exc:
            reason = f"connection lost: {exc.code().name if hasattr(exc, 'code') else exc}"
        except Exception as exc:  # noqa: BLE001 - a malformed stream ends that link only
            reason = f"malformed stream: {exc}"
            log.warning("%s: %s sent a %s", self.node.id, link.child_id, reason)
        self._detach(link, reason)

    def _wait(self, child_id: str, until: float) -> _Link | None:
        with self._changed:
            while True:
                link = self._links.get(child_id)
                if link is not None and not link.closed.is_set():
                    return link
                left = until - time.monotonic()
                if left <= 0:
                    return None
                self._changed.wait(left)

    def _encoded(self, request: m.TreeRequest) -> bytes:
        """The request serialized once for all children (a rotation-key request or a key
        install is hundreds of MB at 2^15); kept only while the request object lives."""
        with self._encoding:
            hit = self._last
            if hit is not None and hit[0]() is request:
                return hit[1]
            data = parent_message_bytes(request)
            self._last = (weakref.ref(request, self._forget_encoding), data)
            return data

    def _forget_encoding(self, ref: object) -> None:
        last = self._last
        if last is not None and last[0] is ref:
            self._last = None

    def call(
        self, child_id: str, request: m.TreeRequest, timeout: float | None, *, wait: bool = True
    ) -> m.TreeResponse:
        """``request`` to one child's subtree. A child that is not connected is waited
        for (up to :data:`CONNECT_WAIT_S` within ``timeout``); one whose stream drops
        mid-call is asked again once it is back, up to :data:`MAX_RESENDS` times (the same
        request: it answers from its cache if it already worked on it); an answer that is
        a Failure raises PeerError."""
        start = time.monotonic()
        budget = timeout if timeout is not None else float("inf")
        resends = 0
        while True:
            left = budget - (time.monotonic() - start)
            link = self._wait(
                child_id, time.monotonic() + (min(left, CONNECT_WAIT_S) if wait else 0)
            )
            if link is None:
                raise PeerError(
                    child_id,
                    f"is not connected to {self.node.id} (a child dials out to its parent: "
                    "is it running, and can it reach this address?)",
                )
            future = link.send(request, self._encoded(request))
            try:
                response = future.result(None if left == float("inf") else max(left, 0.1))
            except FutureTimeout:
                future.cancel()
                raise PeerError(
                    child_id, f"did not answer within its deadline ({max(left, 0):.1f} s)"
                ) from None
            except _Disconnected:
                resends += 1
                if not wait or resends > MAX_RESENDS or budget - (time.monotonic() - start) <= 0:
                    raise
                log.warning(
                    "%s: %s dropped mid-call; asking again once it is back", self.node.id, child_id
                )
                continue
            if isinstance(response.result, m.Failure):
                raise PeerError(
                    child_id,
                    f"{response.result.code}: {response.result.message}",
                    code=response.result.code,
                )
            return response

    def close(self) -> None:
        with self._changed:
            links = list(self._links.values())
        for link in links:
            link.close("the parent is shutting down")


# -- child side -----------------------------------------------------------------------------
Handler = Callable[[m.TreeRequest, str], bytes]
"""A request and who sent it -> the serialized answer (:func:`tree_response_bytes`)."""


class ParentConnection:
    """A child's one stream to its parent, kept open: reconnects with backoff when the
    parent restarts or the network drops, and answers each request with ``handle``."""

    def __init__(self, config: NodeConfig, handle: Handler, *, workers: int = 8) -> None:
        if config.parent is None:
            raise ProtocolError(f"node {config.id} is the root: it has no parent to dial")
        self.config = config
        self.parent = config.parent
        self.handle = handle
        self.connected = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{config.id}-up")
        self._thread = threading.Thread(target=self._run, name=f"{config.id}->parent", daemon=True)
        self._call: grpc.Future | None = None
        self._limit = tree_message_limit(config.params)

    def start(self) -> ParentConnection:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        call = self._call
        if call is not None:
            call.cancel()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        attempt = 0
        while not self._stop.is_set():
            began = time.monotonic()
            try:
                self._session()
                why = "the parent closed the stream"
            except PeerError as exc:
                why = str(exc)
            except Exception as exc:  # noqa: BLE001 - keep trying; the log says why
                why = f"{type(exc).__name__}: {exc}"
            self.connected.clear()
            if self._stop.is_set():
                break
            if time.monotonic() - began > 10:
                attempt = 0  # it was up for a while: start the backoff again
            delay = BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)]
            attempt += 1
            log.warning(
                "%s: no connection to parent %s at %s (%s); retrying in %.1f s",
                self.config.id,
                self.parent.id,
                self.parent.address,
                why,
                delay,
            )
            self._stop.wait(delay)

    def _session(self) -> None:
        channel = open_channel(self.parent.address, self.config.tls, peer_id=self.parent.id)
        outbox: queue.Queue[Iterator[Frame] | None] = queue.Queue()
        hello = m.Hello(self.config.id, self.config.params, self.config.n_parties)
        outbox.put(child_message_frames(hello))
        try:
            with rpc_errors(self.parent.id):
                stub = tree_pb2_grpc.TreeStub(channel)  # type: ignore[no-untyped-call]
                call = stub.Connect(_chain(outbox))
                self._call = call
                for number, data in _messages(call, self._limit):
                    try:
                        message = read_parent_message(data)
                    except PheFlError as exc:
                        # a whole message that does not decode: answer that call, keep the
                        # link (a framing error above still ends the stream)
                        self._refuse(number, exc, outbox)
                        continue
                    finally:
                        del data  # a request may be hundreds of MB: keep one copy, not two
                    if isinstance(message, m.Welcome):
                        self._welcomed(message)
                    else:
                        self._pool.submit(self._answer, number, message, outbox)
        finally:
            self._call = None
            outbox.put(None)
            channel.close()

    def _welcomed(self, welcome: m.Welcome) -> None:
        if welcome.parent_id != self.parent.id:
            raise PeerError(self.parent.id, f"introduced itself as {welcome.parent_id!r}")
        log.info(
            "%s: connected to parent %s at %s", self.config.id, self.parent.id, self.parent.address
        )
        self.connected.set()

    def _refuse(
        self, call: int, exc: PheFlError, outbox: queue.Queue[Iterator[Frame] | None]
    ) -> None:
        if not self.connected.is_set():
            raise exc  # no Welcome yet: this is not our parent speaking our protocol
        log.warning(
            "%s: refused a malformed request from %s: %s", self.config.id, self.parent.id, exc
        )
        outbox.put(child_message_frames(m.TreeResponse(failure_for(exc)), call))

    def _answer(
        self, call: int, request: m.TreeRequest, outbox: queue.Queue[Iterator[Frame] | None]
    ) -> None:
        try:
            with log_context(job=request.job_id, peer=self.parent.id):
                answer = self.handle(request, self.parent.id)
        except Exception as exc:  # noqa: BLE001 - every failure goes up as a typed Failure
            answer = tree_response_bytes(m.TreeResponse(failure_for(exc)))
        outbox.put(child_answer_frames(answer, call))
