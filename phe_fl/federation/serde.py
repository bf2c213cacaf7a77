"""Domain messages <-> protobuf frames. The only module (with the thin servicers) that
touches generated protobuf classes.

Large payloads are cut into frames of at most ``CHUNK`` bytes; readers check every size
and refuse malformed streams with :class:`~phe_fl.errors.ProtocolError` before any
cryptographic code sees the bytes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields

import numpy as np

from phe_fl.errors import ProtocolError
from phe_fl.mhe.context import FloatArray
from phe_fl.v1 import federation_pb2 as pb

__all__ = [
    "CHUNK",
    "Step",
    "NodeStats",
    "Event",
    "Received",
    "to_frames",
    "from_frames",
    "event_frame",
    "floats_to_bytes",
    "floats_from_bytes",
]

CHUNK = 1 << 20
MAX_PAYLOADS = 16
MAX_PAYLOAD_BYTES = 4 << 30
_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")


@dataclass(frozen=True)
class Step:
    """One protocol step of one job, with its named payloads (phe-fl envelope bytes)."""

    job_id: str
    step: str
    params: str
    n_parties: int = 0
    payloads: dict[str, bytes] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)

    def payload(self, name: str) -> bytes:
        try:
            return self.payloads[name]
        except KeyError:
            raise ProtocolError(
                f"step {self.step!r} of job {self.job_id!r} lacks payload {name!r}"
            ) from None


@dataclass(frozen=True)
class NodeStats:
    """What one contribution cost one node, measured by that node.

    ``seconds`` is its own work on the request (e.g. its encrypted gradient);
    ``combine_seconds`` loading and adding its children's contributions (0 on a leaf);
    ``serialize_seconds`` writing what it sends up; ``subtree_seconds`` the request's
    arrival to the answer being ready, waiting for its children included. Bytes count
    payloads (envelope bytes), not the framing: ``bytes_sent`` up to the parent,
    ``bytes_from_parent`` the request's payloads (0 at the root, which makes the request),
    ``bytes_from_children`` its children's contributions, ``bytes_to_children`` the
    request's payloads passed to all of its children.
    """

    node_id: str
    seconds: float
    bytes_sent: int
    combine_seconds: float = 0.0
    serialize_seconds: float = 0.0
    subtree_seconds: float = 0.0
    bytes_from_parent: int = 0
    bytes_from_children: int = 0
    bytes_to_children: int = 0
    parent_id: str = ""

    @property
    def work_seconds(self) -> float:
        """The node's own share of the critical path: its work, COMBINE, serialization."""
        return self.seconds + self.combine_seconds + self.serialize_seconds

    @property
    def bytes_received(self) -> int:
        return self.bytes_from_parent + self.bytes_from_children


@dataclass(frozen=True)
class Event:
    """Job progress; per-node events carry the node id, the bytes it sent and (from
    nodes that report them) its full :class:`NodeStats`."""

    phase: str
    message: str
    seconds: float = 0.0
    node_id: str = ""
    bytes_sent: int = 0
    stats: NodeStats | None = None


@dataclass(frozen=True)
class Received:
    step: Step
    stats: tuple[NodeStats, ...] = ()


def floats_to_bytes(values: FloatArray) -> bytes:
    """Public plain numbers (counts, standardization, released weights) on the wire."""
    return np.asarray(values, dtype=">f8").tobytes()


def floats_from_bytes(data: bytes) -> FloatArray:
    if len(data) % 8:
        raise ProtocolError(f"{len(data)} bytes is not a list of float64 values")
    return np.frombuffer(data, dtype=">f8").astype(np.float64)


def _check_name(what: str, value: str) -> str:
    if not _NAME.match(value):
        raise ProtocolError(f"invalid {what} {value!r} (1-128 of A-Z a-z 0-9 _ . : -)")
    return value


def to_frames(
    step: Step, stats: Iterable[NodeStats] = (), events: Iterable[Event] = ()
) -> Iterator[pb.Frame]:
    """Events first, then the header, the payload chunks in order, and the trailer."""
    for ev in events:
        yield event_frame(ev)
    header = pb.StepHeader(
        job_id=_check_name("job id", step.job_id),
        step=_check_name("step", step.step),
        params=step.params,
        n_parties=step.n_parties,
        payloads=[pb.PayloadInfo(name=n, size=len(b)) for n, b in step.payloads.items()],
        labels=step.labels,
    )
    yield pb.Frame(header=header)
    for data in step.payloads.values():
        view = memoryview(data)
        for off in range(0, len(data), CHUNK):
            yield pb.Frame(chunk=bytes(view[off : off + CHUNK]))
    stats = list(stats)
    if stats:
        yield pb.Frame(trailer=pb.Trailer(stats=[_stats_to_pb(s) for s in stats]))


def _stats_to_pb(s: NodeStats) -> pb.NodeStats:
    """Field by field: the proto message mirrors the dataclass's field names."""
    return pb.NodeStats(**{f.name: getattr(s, f.name) for f in fields(NodeStats)})


def _stats_from_pb(s: pb.NodeStats) -> NodeStats:
    return NodeStats(**{f.name: getattr(s, f.name) for f in fields(NodeStats)})


def event_frame(ev: Event) -> pb.Frame:
    event = pb.JobEvent(
        phase=ev.phase,
        message=ev.message,
        seconds=ev.seconds,
        node_id=ev.node_id,
        bytes_sent=ev.bytes_sent,
    )
    if ev.stats is not None:
        event.node_stats.CopyFrom(_stats_to_pb(ev.stats))
    return pb.Frame(event=event)


def _event_from_pb(e: pb.JobEvent) -> Event:
    stats = _stats_from_pb(e.node_stats) if e.HasField("node_stats") else None
    return Event(e.phase, e.message, e.seconds, e.node_id, e.bytes_sent, stats)


def from_frames(
    frames: Iterable[pb.Frame], on_event: Callable[[Event], None] | None = None
) -> Received:
    """Read one step from a frame stream, checking its shape; raise ProtocolError if not."""
    it = iter(frames)
    header = None
    for frame in it:
        kind = frame.WhichOneof("body")
        if kind == "event":
            if on_event is not None:
                on_event(_event_from_pb(frame.event))
            continue
        if kind != "header":
            raise ProtocolError(f"stream must start with a header frame, got {kind or 'empty'}")
        header = frame.header
        break
    if header is None:
        raise ProtocolError("stream ended before its header")
    _check_name("job id", header.job_id)
    _check_name("step", header.step)
    if len(header.payloads) > MAX_PAYLOADS:
        raise ProtocolError(f"{len(header.payloads)} payloads exceed the limit of {MAX_PAYLOADS}")
    names = [p.name for p in header.payloads]
    if len(set(names)) != len(names):
        raise ProtocolError(f"duplicate payload names in {names}")
    for info in header.payloads:
        _check_name("payload name", info.name)
        if info.size > MAX_PAYLOAD_BYTES:
            raise ProtocolError(f"payload {info.name!r} of {info.size} bytes exceeds the limit")

    payloads: dict[str, bytes] = {}
    stats: tuple[NodeStats, ...] = ()
    pending = list(header.payloads)
    buf = bytearray()
    for frame in it:
        kind = frame.WhichOneof("body")
        if kind == "chunk":
            if not pending:
                raise ProtocolError("payload chunk after all declared payloads")
            buf += frame.chunk
            while pending and len(buf) >= pending[0].size:
                info = pending.pop(0)
                payloads[info.name] = bytes(buf[: info.size])
                del buf[: info.size]
        elif kind == "trailer":
            stats = tuple(_stats_from_pb(s) for s in frame.trailer.stats)
            break
        else:
            raise ProtocolError(f"unexpected {kind or 'empty'} frame inside a payload stream")
    # Zero-size payloads complete without any chunk.
    while pending and pending[0].size == 0 and not buf:
        payloads[pending.pop(0).name] = b""
    if pending or buf:
        missing = ", ".join(p.name for p in pending) or "?"
        raise ProtocolError(f"stream ended inside payloads ({missing}); truncated message")
    step = Step(
        job_id=header.job_id,
        step=header.step,
        params=header.params,
        n_parties=header.n_parties,
        payloads=payloads,
        labels=dict(header.labels),
    )
    return Received(step, stats)
