"""Domain messages (:mod:`phe_fl.federation.messages`) to and from protobuf, in pairs, and
the framing that carries serialized messages over streams. The only module (with the thin
servicers' generated stubs) that touches the generated protobuf classes.

Most messages are flat: their proto fields have the dataclass's field names, so one pair
of generic converters (:func:`_to_pb` / :func:`_from_pb`, driven by the dataclass's type
hints) serves them; nested messages (job specs, standardizations, stats, events) have
their own ``x_to_proto`` / ``x_from_proto`` pair. Every reader refuses malformed input
with :class:`~phe_fl.errors.ProtocolError` before any cryptographic code sees the bytes.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np
from google.protobuf.message import DecodeError
from google.protobuf.message import Message as PbMessage

from phe_fl.errors import PheFlError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import MLPJob, TrainingJob
from phe_fl.v2 import common_pb2, ml_pb2, query_pb2, tree_pb2

__all__ = [
    "job_request_bytes",
    "job_result_bytes",
    "tree_response_bytes",
    "read_tree_response",
    "Frame",
    "child_message_frames",
    "child_answer_frames",
    "read_child_message",
    "parent_message_frames",
    "parent_message_bytes",
    "frames_of",
    "read_parent_message",
    "job_request_frames",
    "read_job_request",
    "job_reply_frames",
    "read_job_reply",
    "CHUNK",
    "MAX_MESSAGE_BYTES",
    "WIRE",
    "FrameReader",
    "tree_message_limit",
    "to_frames",
    "decode",
    "node_stats_to_proto",
    "node_stats_from_proto",
    "glm_job_to_proto",
    "glm_job_from_proto",
    "standardization_to_proto",
    "standardization_from_proto",
    "progress_event_to_proto",
    "progress_event_from_proto",
    "tree_request_to_proto",
    "tree_request_from_proto",
    "tree_response_to_proto",
    "tree_response_from_proto",
    "child_message_to_proto",
    "child_message_from_proto",
    "parent_message_to_proto",
    "parent_message_from_proto",
    "job_request_to_proto",
    "job_request_from_proto",
    "job_reply_to_proto",
    "job_reply_from_proto",
    "STEP_NAMES",
    "RESPONSE_TYPES",
    "JOB_NAMES",
]

WIRE = "phe_fl.v2"
CHUNK = 1 << 20
MAX_MESSAGE_BYTES = 2 << 30  # protobuf cannot parse a larger message
MAX_PENDING_MESSAGES = 64  # partially received messages per stream

T = TypeVar("T")

# oneof field name <-> (domain request, domain response), in proto field order
_STEPS: dict[str, tuple[type[Any], type[Any]]] = {
    "public_key": (m.PublicKeyShareRequest, m.PublicKeyShareResponse),
    "install_joint_key": (m.InstallJointKeyRequest, m.InstallJointKeyResponse),
    "relin_round_one": (m.RelinRoundOneRequest, m.RelinRoundOneResponse),
    "relin_round_two": (m.RelinRoundTwoRequest, m.RelinRoundTwoResponse),
    "install_relin_key": (m.InstallRelinKeyRequest, m.InstallRelinKeyResponse),
    "rotation_keys": (m.RotationKeysShareRequest, m.RotationKeysShareResponse),
    "install_rotation_keys": (m.InstallRotationKeysRequest, m.InstallRotationKeysResponse),
    "statistics": (m.StatisticsRequest, m.StatisticsResponse),
    "decrypt_statistics": (m.DecryptStatisticsRequest, m.DecryptStatisticsResponse),
    "decrypt_model": (m.DecryptModelRequest, m.DecryptModelResponse),
    "key_switch": (m.KeySwitchRequest, m.KeySwitchResponse),
    "refresh": (m.RefreshShareRequest, m.RefreshShareResponse),
    "prepare_training": (m.PrepareTrainingRequest, m.PrepareTrainingResponse),
    "gradient": (m.GradientRequest, m.GradientResponse),
    "margin_moment": (m.MarginMomentRequest, m.MarginMomentResponse),
    "prepare_network": (m.PrepareNetworkRequest, m.PrepareNetworkResponse),
    "network_map": (m.NetworkMapRequest, m.NetworkMapResponse),
    "fedavg_prepare": (m.FedAvgPrepareRequest, m.FedAvgPrepareResponse),
    "fedavg_global": (m.FedAvgGlobalRequest, m.FedAvgGlobalResponse),
    "fedavg_train": (m.FedAvgTrainRequest, m.FedAvgTrainResponse),
    "fedavg_update": (m.FedAvgUpdateRequest, m.FedAvgUpdateResponse),
    "fedavg_decrypt": (m.FedAvgDecryptRequest, m.FedAvgDecryptResponse),
    "ping": (m.PingRequest, m.PingResponse),
}
_JOBS: dict[str, tuple[type[Any], type[Any]]] = {
    "setup": (m.SetupJob, m.SetupResult),
    "stats": (m.StatsJob, m.StatsResult),
    "train": (m.TrainJob, m.TrainResult),
    "model_weights": (m.ModelWeightsJob, m.ModelWeightsResult),
    "model_info": (m.ModelInfoJob, m.ModelInfoResult),
    "predict": (m.PredictJob, m.PredictResult),
    "joint_key": (m.JointKeyJob, m.JointKeyResult),
    "status": (m.StatusJob, m.StatusResult),
    "fedavg": (m.FedAvgJob, m.FedAvgResult),
    "train_network": (m.TrainNetworkJob, m.TrainNetworkResult),
    "watch": (m.WatchJob, m.WatchResult),
    "list_jobs": (m.ListJobsJob, m.ListJobsResult),
    "cancel": (m.CancelJob, m.CancelResult),
    "list_models": (m.ListModelsJob, m.ListModelsResult),
}
STEP_NAMES: dict[type[Any], str] = {}
for _name, (_req, _resp) in _STEPS.items():
    STEP_NAMES[_req] = STEP_NAMES[_resp] = _name
RESPONSE_TYPES: dict[type[Any], type[Any]] = {req: resp for req, resp in _STEPS.values()}
JOB_NAMES: dict[type[Any], str] = {}
for _name, (_req, _resp) in _JOBS.items():
    JOB_NAMES[_req] = JOB_NAMES[_resp] = _name


# -- nested messages, in pairs ----------------------------------------------------------------
def node_stats_to_proto(s: m.NodeStats) -> common_pb2.NodeStats:
    return common_pb2.NodeStats(**dataclasses.asdict(s))


def node_stats_from_proto(s: common_pb2.NodeStats) -> m.NodeStats:
    return m.NodeStats(**{f.name: getattr(s, f.name) for f in dataclasses.fields(m.NodeStats)})


def glm_job_to_proto(job: TrainingJob) -> ml_pb2.GlmJobSpec:
    return ml_pb2.GlmJobSpec(**dataclasses.asdict(job))


def glm_job_from_proto(spec: ml_pb2.GlmJobSpec) -> TrainingJob:
    """Field by field; TrainingJob validates every value (ParameterError names it)."""
    return TrainingJob(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(TrainingJob)})


def network_job_to_proto(job: MLPJob) -> ml_pb2.NetworkJobSpec:
    return ml_pb2.NetworkJobSpec(**dataclasses.asdict(job))


def network_job_from_proto(spec: ml_pb2.NetworkJobSpec) -> MLPJob:
    """Field by field; MLPJob validates every value (ParameterError names it)."""
    return MLPJob(**{f.name: getattr(spec, f.name) for f in dataclasses.fields(MLPJob)})


_SPECS: dict[Any, tuple[Callable[[Any], PbMessage], Callable[[Any], Any]]] = {
    TrainingJob: (glm_job_to_proto, glm_job_from_proto),
    MLPJob: (network_job_to_proto, network_job_from_proto),
}
"""Job specifications: validated by their own dataclass, field by field."""


def standardization_to_proto(s: m.Standardization) -> ml_pb2.Standardization:
    return ml_pb2.Standardization(mean=s.mean.tolist(), std=s.std.tolist())


def standardization_from_proto(s: ml_pb2.Standardization) -> m.Standardization:
    mean = np.asarray(s.mean, dtype=np.float64)
    std = np.asarray(s.std, dtype=np.float64)
    finite = np.all(np.isfinite(mean)) and np.all(np.isfinite(std))
    if mean.shape != std.shape or not finite or not np.all(std > 0):
        raise ProtocolError(
            f"a standardization is as many finite means as finite positive deviations; got "
            f"{mean.size} means and {std.size} deviations"
        )
    return m.Standardization(mean, std)


def progress_event_to_proto(ev: m.ProgressEvent) -> query_pb2.ProgressEvent:
    out = query_pb2.ProgressEvent(
        stage=query_pb2.Stage.Value(ev.stage.name),
        seconds=ev.seconds,
        iteration=ev.iteration,
        iterations=ev.iterations,
        index=ev.index,
        count=ev.count,
        nodes=[node_stats_to_proto(s) for s in ev.nodes],
    )
    if ev.summary is not None:
        out.summary.CopyFrom(query_pb2.IterationSummary(**dataclasses.asdict(ev.summary)))
    if ev.round is not None:
        out.round.CopyFrom(query_pb2.RoundSummary(**dataclasses.asdict(ev.round)))
    return out


def progress_event_from_proto(ev: query_pb2.ProgressEvent) -> m.ProgressEvent:
    summary = None
    if ev.HasField("summary"):
        summary = _from_pb(ev.summary, m.IterationSummary)
    round_ = _from_pb(ev.round, m.RoundSummary) if ev.HasField("round") else None
    return m.ProgressEvent(
        stage=_enum(m.Stage, query_pb2.Stage.Name(ev.stage), "progress stage"),
        seconds=ev.seconds,
        iteration=ev.iteration,
        iterations=ev.iterations,
        index=ev.index,
        count=ev.count,
        nodes=tuple(node_stats_from_proto(s) for s in ev.nodes),
        summary=summary,
        round=round_,
    )


def _enum(cls: type[T], name: str, what: str) -> T:
    try:
        return cls[name]  # type: ignore[index, no-any-return]
    except KeyError:
        raise ProtocolError(f"unknown {what} {name!r}") from None


# -- flat messages: proto fields named as the dataclass fields --------------------------------
@functools.cache
def _hints(cls: Any) -> dict[str, Any]:
    return typing.get_type_hints(cls, vars(m))


def _to_pb(obj: Any, pb_cls: type[PbMessage]) -> PbMessage:
    return _fill(pb_cls(), obj)


def _fill(msg: PbMessage, obj: Any) -> PbMessage:
    """``obj``'s fields written into ``msg`` (a submessage filled in place, not built and
    copied in: a share's bytes are copied once)."""
    msg.SetInParent()  # present even when every field is at its default
    for f in dataclasses.fields(obj):
        _set(msg, f.name, getattr(obj, f.name))
    return msg


def _set(msg: PbMessage, name: str, value: Any) -> None:
    if value is None:
        return
    if isinstance(value, m.Purpose):
        setattr(msg, name, tree_pb2.KeySwitchRequest.Purpose.Value(value.name))
    elif type(value) in _SPECS:
        getattr(msg, name).CopyFrom(_SPECS[type(value)][0](value))
    elif isinstance(value, m.Standardization):
        getattr(msg, name).CopyFrom(standardization_to_proto(value))
    elif isinstance(value, np.ndarray):
        getattr(msg, name).extend(value.tolist())
    elif isinstance(value, tuple):
        field = getattr(msg, name)
        for v in value:
            if dataclasses.is_dataclass(v):
                _fill(field.add(), v)
            else:
                field.append(v)
    elif dataclasses.is_dataclass(value):
        _fill(getattr(msg, name), value)
    else:
        setattr(msg, name, value)


def _from_pb(msg: PbMessage, cls: type[T]) -> T:
    hints = _hints(cls)  # type: ignore[arg-type]
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        kwargs[f.name] = _get(msg, f.name, hints[f.name])
    return cls(**kwargs)


def _get(msg: PbMessage, name: str, hint: Any) -> Any:
    raw = getattr(msg, name)
    if hint is m.Purpose:
        purpose = tree_pb2.KeySwitchRequest.Purpose.Name(raw)
        return _enum(m.Purpose, purpose, "key-switch purpose")
    spec, optional = _spec_hint(hint)
    if spec is not None:
        if not msg.HasField(name):
            if optional:
                return None
            raise ProtocolError(f"{type(msg).__name__} lacks its {name}")
        return _SPECS[spec][1](raw)
    if hint == m.Standardization | None:
        return standardization_from_proto(raw) if msg.HasField(name) else None
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: optional
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return _from_pb(raw, inner[0]) if msg.HasField(name) else None  # type: ignore[arg-type]
    if hint is FloatArray:
        return np.asarray(raw, dtype=np.float64)
    if typing.get_origin(hint) is tuple:
        item = typing.get_args(hint)[0]
        if dataclasses.is_dataclass(item):
            return tuple(_from_pb(v, item) for v in raw)  # type: ignore[arg-type]
        return tuple(raw)
    if dataclasses.is_dataclass(hint):
        if not msg.HasField(name):
            raise ProtocolError(f"{type(msg).__name__} lacks its {name}")
        return _from_pb(raw, hint)  # type: ignore[arg-type]
    return raw


def _spec_hint(hint: Any) -> tuple[Any, bool]:
    """(the job specification class ``hint`` names, whether it is optional), or (None, _)."""
    if hint in _SPECS:
        return hint, False
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and inner[0] in _SPECS:
            return inner[0], True
    return None, False


def _oneof_fill(out: PbMessage, table: dict[type[Any], str], value: Any) -> None:
    """``value`` written in place into the member of ``out``'s oneof that ``table`` names
    for its type."""
    name = table.get(type(value))
    if name is None:
        raise ProtocolError(f"{type(value).__name__} is not a message of {type(out).__name__}")
    _fill(getattr(out, name), value)


def _oneof_from_pb(
    msg: PbMessage, group: str, table: dict[str, tuple[type[Any], type[Any]]], side: int
) -> Any:
    name = msg.WhichOneof(group)
    if name is None or name not in table:
        raise ProtocolError(f"{type(msg).__name__} carries no {group} (empty or unknown)")
    return _from_pb(getattr(msg, name), table[name][side])


# -- the tree protocol ------------------------------------------------------------------------
_REQUESTS = {req: name for name, (req, _) in _STEPS.items()}
_RESPONSES = {resp: name for name, (_, resp) in _STEPS.items()}
_JOB_REQUESTS = {req: name for name, (req, _) in _JOBS.items()}
_JOB_RESULTS = {res: name for name, (_, res) in _JOBS.items()}


def tree_request_to_proto(r: m.TreeRequest) -> tree_pb2.TreeRequest:
    out = tree_pb2.TreeRequest(
        job_id=r.job_id,
        params=r.params,
        n_parties=r.n_parties,
        deadline_s=r.deadline_s,
        job_kind=r.job_kind,
    )
    _oneof_fill(out, _REQUESTS, r.step)
    return out


def tree_request_from_proto(r: tree_pb2.TreeRequest) -> m.TreeRequest:
    step = _oneof_from_pb(r, "step", _STEPS, 0)
    return m.TreeRequest(r.job_id, r.params, r.n_parties, step, r.deadline_s, r.job_kind)


def tree_response_to_proto(r: m.TreeResponse) -> tree_pb2.TreeResponse:
    out = tree_pb2.TreeResponse(stats=[node_stats_to_proto(s) for s in r.stats])
    if isinstance(r.result, m.Failure):
        if r.result.code not in common_pb2.Error.Code.keys():
            raise ProtocolError(f"unknown error code {r.result.code!r}")
        code = common_pb2.Error.Code.Value(r.result.code)
        out.error.CopyFrom(common_pb2.Error(code=code, message=r.result.message))
    else:
        _oneof_fill(out, _RESPONSES, r.result)
    return out


def tree_response_from_proto(r: tree_pb2.TreeResponse) -> m.TreeResponse:
    stats = tuple(node_stats_from_proto(s) for s in r.stats)
    if r.WhichOneof("result") == "error":
        code = common_pb2.Error.Code.Name(r.error.code)
        return m.TreeResponse(m.Failure(code, r.error.message), stats)
    return m.TreeResponse(_oneof_from_pb(r, "result", _STEPS, 1), stats)


def child_message_to_proto(msg: m.Hello | m.TreeResponse) -> tree_pb2.ChildMessage:
    if isinstance(msg, m.Hello):
        return tree_pb2.ChildMessage(hello=_to_pb(msg, tree_pb2.Hello))
    return tree_pb2.ChildMessage(response=tree_response_to_proto(msg))


def child_message_from_proto(msg: tree_pb2.ChildMessage) -> m.Hello | m.TreeResponse:
    kind = msg.WhichOneof("body")
    if kind == "hello":
        return _from_pb(msg.hello, m.Hello)
    if kind == "response":
        return tree_response_from_proto(msg.response)
    raise ProtocolError("empty message from a child")


def parent_message_to_proto(msg: m.Welcome | m.TreeRequest) -> tree_pb2.ParentMessage:
    if isinstance(msg, m.Welcome):
        return tree_pb2.ParentMessage(welcome=_to_pb(msg, tree_pb2.Welcome))
    return tree_pb2.ParentMessage(request=tree_request_to_proto(msg))


def parent_message_from_proto(msg: tree_pb2.ParentMessage) -> m.Welcome | m.TreeRequest:
    kind = msg.WhichOneof("body")
    if kind == "welcome":
        return _from_pb(msg.welcome, m.Welcome)
    if kind == "request":
        return tree_request_from_proto(msg.request)
    raise ProtocolError("empty message from the parent")


# -- the querier's jobs -----------------------------------------------------------------------
def job_request_to_proto(r: m.JobRequest) -> query_pb2.JobRequest:
    out = query_pb2.JobRequest(job_id=r.job_id, params=r.params, detach=r.detach)
    _oneof_fill(out, _JOB_REQUESTS, r.job)
    return out


def job_request_from_proto(r: query_pb2.JobRequest) -> m.JobRequest:
    return m.JobRequest(r.job_id, r.params, _oneof_from_pb(r, "job", _JOBS, 0), r.detach)


def job_reply_to_proto(reply: m.ProgressEvent | m.Accepted | m.JobResult) -> query_pb2.JobReply:
    if isinstance(reply, m.ProgressEvent):
        return query_pb2.JobReply(event=progress_event_to_proto(reply))
    if isinstance(reply, m.Accepted):
        return query_pb2.JobReply(accepted=_to_pb(reply.job, query_pb2.JobInfo))
    out = query_pb2.JobReply()
    _oneof_fill(out.result, _JOB_RESULTS, reply)
    return out


def job_reply_from_proto(reply: query_pb2.JobReply) -> m.ProgressEvent | m.Accepted | m.JobResult:
    kind = reply.WhichOneof("body")
    if kind == "event":
        return progress_event_from_proto(reply.event)
    if kind == "accepted":
        return m.Accepted(_from_pb(reply.accepted, m.JobInfo))
    if kind == "result":
        return _oneof_from_pb(reply.result, "result", _JOBS, 1)  # type: ignore[no-any-return]
    raise ProtocolError("empty reply from the root")


# -- framing ----------------------------------------------------------------------------------
Frame = common_pb2.Frame
"""What every phe_fl.v2 stream carries: slices of one typed message."""


def _varint(value: int) -> bytes:
    """``value`` as a protobuf base-128 varint."""
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def to_frames(message: PbMessage, call_id: int = 0) -> Iterator[Frame]:
    """One serialized message as frames of at most :data:`CHUNK` bytes (at least one),
    made as they are consumed (a queue of frames would hold a second copy)."""
    return frames_of(message.SerializeToString(), call_id)


def frames_of(data: bytes, call_id: int = 0, *, prefix: bytes = b"") -> Iterator[Frame]:
    """Frames of an already serialized message (one serialization sent to many), after
    ``prefix`` (a field's tag and length: ``data`` is then a submessage, sent as the
    message that holds it without being copied into it)."""
    total = len(prefix) + len(data)
    view = memoryview(data)
    first = CHUNK - len(prefix)
    yield common_pb2.Frame(call_id=call_id, total_size=total, data=prefix + view[:first])
    for off in range(first, len(data), CHUNK):
        yield common_pb2.Frame(
            call_id=call_id, total_size=total, data=bytes(view[off : off + CHUNK])
        )


def tree_message_limit(params: str) -> int:
    """The largest message a tree stream of the parameter set ``params`` accepts: what
    its largest step can carry (:func:`phe_fl.mhe.largest_message_bytes`), at most what
    protobuf can parse."""
    from phe_fl.mhe import get_parameter_set, largest_message_bytes

    return min(MAX_MESSAGE_BYTES, largest_message_bytes(get_parameter_set(params)))


class FrameReader:
    """Reassembles the messages of one stream from its frames (they may interleave by
    call id); refuses inconsistent sizes, overlong messages, too many open messages, and
    open messages that together declare more than ``max_open_bytes`` (default: one
    largest message and 64 MiB), before buffering them."""

    def __init__(
        self, max_message_bytes: int = MAX_MESSAGE_BYTES, max_open_bytes: int | None = None
    ) -> None:
        self.max_message_bytes = max_message_bytes
        self.max_open_bytes = (
            max_open_bytes if max_open_bytes is not None else max_message_bytes + (64 << 20)
        )
        self._open: dict[int, tuple[int, bytearray]] = {}
        self._declared = 0

    def feed(self, frame: Frame) -> tuple[int, bytearray] | None:
        """The (call id, message bytes) this frame completes, or None."""
        call, size = frame.call_id, frame.total_size
        if size > self.max_message_bytes:
            raise ProtocolError(
                f"message of {size} bytes exceeds the limit of {self.max_message_bytes}"
            )
        if call in self._open:
            declared, buf = self._open[call]
            if declared != size:
                raise ProtocolError(
                    f"call {call}: frame declares {size} bytes, its message {declared}"
                )
        else:
            if len(self._open) >= MAX_PENDING_MESSAGES:
                raise ProtocolError(f"more than {MAX_PENDING_MESSAGES} messages open at once")
            if self._declared + size > self.max_open_bytes:
                raise ProtocolError(
                    f"messages open at once would declare {self._declared + size} bytes; "
                    f"the limit is {self.max_open_bytes}"
                )
            buf = bytearray()
            self._open[call] = (size, buf)
            self._declared += size
        buf += frame.data
        if len(buf) > size:
            raise ProtocolError(f"call {call}: frames overrun the declared {size} bytes")
        if len(buf) < size:
            return None
        del self._open[call]
        self._declared -= size
        return call, buf  # no copy: a message may be hundreds of MB (a rotation-key share)

    @property
    def incomplete(self) -> bool:
        return bool(self._open)


def decode(pb_cls: type[T], data: bytes | bytearray) -> T:
    """Parse ``data`` as ``pb_cls``; a malformed message is a ProtocolError."""
    msg = pb_cls()
    try:
        msg.ParseFromString(data)  # type: ignore[attr-defined]
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ProtocolError(f"malformed {pb_cls.__name__}: {exc}") from None
    return msg


def parse(pb_cls: type[PbMessage], data: bytes | bytearray, convert: Any) -> Any:
    """Decode and convert to the domain type; any failure is a ProtocolError (or the
    domain's own validation error, e.g. ParameterError for a bad job spec). A
    ``bytearray`` (a message reassembled from frames) is consumed: emptied once decoded,
    so that a message of hundreds of MB is held twice at most, never three times."""
    msg = decode(pb_cls, data)
    if isinstance(data, bytearray):
        data.clear()
    try:
        return convert(msg)
    except PheFlError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ProtocolError(f"invalid {pb_cls.__name__}: {exc}") from None


# -- what each stream carries, as frames and back -----------------------------------------------
def child_message_frames(msg: m.Hello | m.TreeResponse, call_id: int = 0) -> Iterator[Frame]:
    """Child -> parent on Tree.Connect."""
    return to_frames(child_message_to_proto(msg), call_id)


def child_answer_frames(answer: bytes, call_id: int = 0) -> Iterator[Frame]:
    """Child -> parent: an answer already serialized (:func:`tree_response_bytes`, as the
    node keeps it for retries) sent as its ChildMessage without serializing it again."""
    return frames_of(answer, call_id, prefix=_ANSWER_TAG + _varint(len(answer)))


_ANSWER_TAG = _varint(tree_pb2.ChildMessage.DESCRIPTOR.fields_by_name["response"].number << 3 | 2)
"""The ``response`` field's key in a ChildMessage: field number, wire type 2 (bytes)."""


def read_child_message(data: bytes | bytearray) -> m.Hello | m.TreeResponse:
    return parse(tree_pb2.ChildMessage, data, child_message_from_proto)  # type: ignore[no-any-return]


def parent_message_frames(msg: m.Welcome | m.TreeRequest, call_id: int = 0) -> Iterator[Frame]:
    """Parent -> child on Tree.Connect."""
    return to_frames(parent_message_to_proto(msg), call_id)


def parent_message_bytes(msg: m.Welcome | m.TreeRequest) -> bytes:
    """A parent's message serialized once, to be framed for each child (:func:`frames_of`)."""
    return parent_message_to_proto(msg).SerializeToString()  # type: ignore[no-any-return]


def read_parent_message(data: bytes | bytearray) -> m.Welcome | m.TreeRequest:
    return parse(tree_pb2.ParentMessage, data, parent_message_from_proto)  # type: ignore[no-any-return]


def job_request_frames(request: m.JobRequest) -> Iterator[Frame]:
    """Querier -> root on Root.Submit."""
    return to_frames(job_request_to_proto(request))


def read_job_request(data: bytes | bytearray) -> m.JobRequest:
    return parse(query_pb2.JobRequest, data, job_request_from_proto)  # type: ignore[no-any-return]


def job_reply_frames(
    reply: m.ProgressEvent | m.Accepted | m.JobResult, call_id: int
) -> Iterator[Frame]:
    """Root -> querier on Root.Submit: events, then the result."""
    return to_frames(job_reply_to_proto(reply), call_id)


def read_job_reply(data: bytes | bytearray) -> m.ProgressEvent | m.Accepted | m.JobResult:
    return parse(query_pb2.JobReply, data, job_reply_from_proto)  # type: ignore[no-any-return]


# -- what the state store keeps, as bytes and back ----------------------------------------------
def job_request_bytes(request: m.JobRequest) -> bytes:
    return job_request_to_proto(request).SerializeToString()  # type: ignore[no-any-return]


def job_result_bytes(result: m.JobResult) -> bytes:
    return job_reply_to_proto(result).SerializeToString()  # type: ignore[no-any-return]


def tree_response_bytes(response: m.TreeResponse) -> bytes:
    return tree_response_to_proto(response).SerializeToString()  # type: ignore[no-any-return]


def read_tree_response(data: bytes | bytearray) -> m.TreeResponse:
    return parse(tree_pb2.TreeResponse, data, tree_response_from_proto)  # type: ignore[no-any-return]
