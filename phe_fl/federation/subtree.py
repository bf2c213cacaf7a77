"""What a node with children adds to its party's work: it asks its subtree for the same
step, adds the answers to its own (COMBINE on the way up) and measures what each cost.

Every answer is kept per request (job, step and payloads, not the deadline) in the node's
state store, written before it is sent, in one transaction with the state-machine moves it
made: a parent's retry, even after this node restarted, gets the same bytes, and no share
is ever drawn again with fresh noise. A leaf is a subtree without children; the root runs
every round of a job through its own.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, fields, is_dataclass, replace
from typing import Any, Protocol

from phe_fl.errors import JobStateError, PheFlError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.member import RULES, Member
from phe_fl.federation.observability import METRICS
from phe_fl.federation.serde import (
    RESPONSE_TYPES,
    STEP_NAMES,
    read_tree_response,
    tree_request_to_proto,
    tree_response_bytes,
)

__all__ = ["Subtree", "ChildCaller", "payload_bytes", "child_deadline"]

log = logging.getLogger("phe_fl.subtree")

MEMORY_CACHE = 32
MEMORY_CACHE_ITEM = 1 << 20
"""Answers (up to this size each) also kept in memory; the rest are read from the store
(at 2^15 a network's MAP answers are a few MB each: 32 of them would stay resident for a
retry that rarely comes)."""
DEFAULT_MAX_ANSWER_BYTES = 2 << 30
"""Bytes of answers a node keeps on disk (``[state] max_answer_bytes``); beyond it the
oldest are evicted, and a request for an evicted answer is refused, never recomputed."""


class ChildCaller(Protocol):
    """How a node reaches its children (the tree transport implements it)."""

    @property
    def ids(self) -> Sequence[str]: ...

    def call(
        self, child_id: str, request: m.TreeRequest, timeout: float | None, *, wait: bool = True
    ) -> m.TreeResponse:
        """The child's subtree answer; PeerError naming the child if it fails, refuses,
        is not connected (after waiting for it when ``wait``) or runs out of time."""
        ...


def payload_bytes(message: Any) -> int:
    """Envelope bytes a step or answer carries (its ``bytes`` fields, in nested messages
    too: a network stage's per-node ciphertexts)."""
    total = 0
    for f in fields(message):
        value = getattr(message, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bytes):
                total += len(v)
            elif is_dataclass(v) and not isinstance(v, type):
                total += payload_bytes(v)
    return total


def child_deadline(deadline_s: float) -> float:
    """What a child gets of its parent's deadline: less, so that the node that stalls is
    the one named in the error, not its ancestors. 0 means no deadline."""
    return 0.0 if deadline_s <= 0 else max(0.5, deadline_s * 0.8 - 0.5)


def _taking(futures: list[tuple[str, Future[m.TreeResponse]]]) -> Iterator[tuple[str, Any]]:
    """Each child's future, dropped from the list once handed out (its result with it)."""
    while futures:
        yield futures.pop(0)


def _digest(request: m.TreeRequest) -> bytes:
    plain = tree_request_to_proto(replace(request, deadline_s=0.0))
    return hashlib.sha256(plain.SerializeToString(deterministic=True)).digest()


@dataclass(frozen=True)
class _Answer:
    """An answer as a node has it: computed (the object and, once kept, its bytes), from
    the memory cache (the object) or from the state store (its bytes)."""

    computed: m.TreeResponse | None = None
    encoded: bytes | None = None

    def response(self) -> m.TreeResponse:
        if self.computed is not None:
            return self.computed
        assert self.encoded is not None
        return read_tree_response(self.encoded)

    def data(self) -> bytes:
        if self.encoded is not None:
            return self.encoded
        assert self.computed is not None
        return tree_response_bytes(self.computed)


class Subtree:
    """A node's party plus the subtrees of its children."""

    def __init__(
        self,
        member: Member,
        children: ChildCaller,
        *,
        max_answer_bytes: int = DEFAULT_MAX_ANSWER_BYTES,
    ) -> None:
        self.member = member
        self.store = member.store
        self.children = children
        self.max_answer_bytes = max_answer_bytes
        self._kept: deque[tuple[str, int]] = deque()  # answers on disk, oldest first
        self._kept_bytes = 0
        for name, record in self.store.items("answers"):
            if not record.get("evicted"):
                self._kept.append((name, int(record.get("bytes", 0))))
                self._kept_bytes += int(record.get("bytes", 0))
        self._cache: OrderedDict[bytes, m.TreeResponse] = OrderedDict()
        self._locks: dict[bytes, threading.Lock] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(
            max_workers=max(1, 2 * len(children.ids)), thread_name_prefix=f"{member.id}-down"
        )

    @property
    def id(self) -> str:
        return self.member.id

    def contribute(self, request: m.TreeRequest, requester: str) -> m.TreeResponse:
        """This subtree's aggregated answer to ``request`` (kept for retries)."""
        return self._contribute(request, requester).response()

    def answer(self, request: m.TreeRequest, requester: str) -> bytes:
        """:meth:`contribute`'s answer serialized, as a child sends it up: serialized
        once, for the state store and the wire (a share can be hundreds of MB)."""
        return self._contribute(request, requester).data()

    def _contribute(self, request: m.TreeRequest, requester: str) -> _Answer:
        if not RULES[type(request.step)].keep:
            return _Answer(self._compute(request, requester))  # a status, a payload to apply
        key = _digest(request)
        with self._lock:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:  # a retry racing the original waits for it instead of recomputing
            hit = self._answered(key)
            if hit is not None:
                log.info(
                    "%s: resending the kept %s answer for job %s",
                    self.id,
                    STEP_NAMES[type(request.step)],
                    request.job_id,
                )
                return hit
            response = self._compute(request, requester)
            return _Answer(response, self._keep(key, request, response))

    def _answered(self, key: bytes) -> _Answer | None:
        """An answer already given. Only a committed record counts: an answer file whose
        record is missing was written by a process killed before it sent the answer. An
        answer evicted by the bound is refused, never computed again."""
        hit = self._cache.get(key)
        if hit is not None:
            return _Answer(hit)
        record = self.store.get("answers", key.hex())
        if record is None:
            return None
        if record.get("evicted"):
            raise JobStateError(
                f"node {self.id} answered this {record['step']} request of job "
                f"{record['job']} already and no longer keeps the answer (its bound is "
                f"{self.max_answer_bytes} bytes): it will not draw a share again"
            )
        data = self.store.get_blob(f"answer-{key.hex()}")
        return None if data is None else _Answer(encoded=data)

    def _keep(self, key: bytes, request: m.TreeRequest, response: m.TreeResponse) -> bytes:
        """The answer, then (in one transaction) its record and the state moves it made;
        then the oldest answers beyond the bound are evicted (their records stay).
        Returns the answer serialized."""
        data = tree_response_bytes(response)
        self.store.put_blob(f"answer-{key.hex()}", data)
        step = STEP_NAMES[type(request.step)]
        with self.store.transaction():
            self.member.complete(request)
            self.store.put(
                "answers", key.hex(), {"job": request.job_id, "step": step, "bytes": len(data)}
            )
        if len(data) <= MEMORY_CACHE_ITEM:  # large answers are read back from the store
            self._cache[key] = response
        while len(self._cache) > MEMORY_CACHE:
            self._cache.popitem(last=False)
        with self._lock:
            self._locks.pop(key, None)
            self._kept.append((key.hex(), len(data)))
            self._kept_bytes += len(data)
            while self._kept_bytes > self.max_answer_bytes and len(self._kept) > 1:
                self._evict(*self._kept.popleft())
        return data

    def _evict(self, name: str, size: int) -> None:
        record = self.store.get("answers", name) or {}
        self.store.put("answers", name, {**record, "evicted": True})
        self.store.delete_blob(f"answer-{name}")
        self._cache.pop(bytes.fromhex(name), None)
        self._kept_bytes -= size

    def _compute(self, request: m.TreeRequest, requester: str) -> m.TreeResponse:
        """Own contribution while the children work on theirs, then COMBINE; the node's
        first :class:`NodeStats` is what it measured itself."""
        self.member.admit(request, requester)
        rule = RULES[type(request.step)]
        expected = RESPONSE_TYPES[type(request.step)]
        t_start = time.perf_counter()
        down = replace(request, deadline_s=child_deadline(request.deadline_s))
        timeout = down.deadline_s or None
        is_ping = isinstance(request.step, m.PingRequest)
        sent = {
            c: down if rule.down is None else rule.down(self.member, down, c)
            for c in self.children.ids
        }
        futures: list[tuple[str, Future[m.TreeResponse]]] = [
            (c, self._pool.submit(self.children.call, c, r, timeout, wait=not is_ping))
            for c, r in sent.items()
        ]
        t0 = time.perf_counter()
        try:
            acc = rule.own(self.member, request)
        except BaseException:
            for _, f in futures:
                f.cancel()
            raise
        own_seconds = time.perf_counter() - t0
        stats: list[m.NodeStats] = []
        combine_seconds = 0.0
        from_children = 0
        for child, future in _taking(futures):
            if is_ping:
                try:
                    received = future.result()
                except Exception as exc:  # noqa: BLE001 - a ping reports, never fails
                    log.info("%s: ping to %s: %s", self.id, child, exc)
                    acc = acc + [m.NodeStatus(child, self.id, "disconnected")]
                    continue
            else:
                received = future.result()  # PeerError names the child
            stats.extend(received.stats)
            from_children += payload_bytes(received.result)
            if not isinstance(received.result, expected):
                raise ProtocolError(
                    f"node {child} answered {type(received.result).__name__} to "
                    f"{STEP_NAMES[type(request.step)]}"
                )
            t0 = time.perf_counter()
            try:
                if rule.heard is not None:
                    rule.heard(self.member, request, child, received.result)
                loaded = rule.load(self.member, request, received.result)
            except PheFlError as exc:  # the child's answer is bad: name the child
                raise ProtocolError(f"node {child}'s answer: {exc}") from None
            del received  # the child's bytes: a share may be hundreds of MB
            acc = rule.combine(self.member, request, acc, loaded)
            del loaded
            combine_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        result = rule.answer(acc)
        t_end = time.perf_counter()
        request_bytes = payload_bytes(request.step)
        parent = self.member.config.parent
        mine = m.NodeStats(
            self.id,
            own_seconds,
            payload_bytes(result),
            combine_seconds=combine_seconds,
            serialize_seconds=t_end - t0,
            subtree_seconds=t_end - t_start,
            bytes_from_parent=0 if parent is None else request_bytes,
            bytes_from_children=from_children,
            bytes_to_children=sum(payload_bytes(r.step) for r in sent.values()),
            parent_id=parent.id if parent else "",
        )
        if not is_ping:
            METRICS.step(STEP_NAMES[type(request.step)], mine)
        return m.TreeResponse(result, (mine, *stats))

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
