from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PayloadInfo(_message.Message):
    __slots__ = ("name", "size")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    name: str
    size: int
    def __init__(self, name: _Optional[str] = ..., size: _Optional[int] = ...) -> None: ...

class StepHeader(_message.Message):
    __slots__ = ("job_id", "step", "params", "n_parties", "payloads", "labels")
    class LabelsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    N_PARTIES_FIELD_NUMBER: _ClassVar[int]
    PAYLOADS_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    step: str
    params: str
    n_parties: int
    payloads: _containers.RepeatedCompositeFieldContainer[PayloadInfo]
    labels: _containers.ScalarMap[str, str]
    def __init__(self, job_id: _Optional[str] = ..., step: _Optional[str] = ..., params: _Optional[str] = ..., n_parties: _Optional[int] = ..., payloads: _Optional[_Iterable[_Union[PayloadInfo, _Mapping]]] = ..., labels: _Optional[_Mapping[str, str]] = ...) -> None: ...

class Frame(_message.Message):
    __slots__ = ("header", "chunk", "trailer", "event")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    header: StepHeader
    chunk: bytes
    trailer: Trailer
    event: JobEvent
    def __init__(self, header: _Optional[_Union[StepHeader, _Mapping]] = ..., chunk: _Optional[bytes] = ..., trailer: _Optional[_Union[Trailer, _Mapping]] = ..., event: _Optional[_Union[JobEvent, _Mapping]] = ...) -> None: ...

class NodeStats(_message.Message):
    __slots__ = ("node_id", "seconds", "bytes_sent", "combine_seconds", "serialize_seconds", "subtree_seconds", "bytes_from_parent", "bytes_from_children", "bytes_to_children", "parent_id")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    COMBINE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERIALIZE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SUBTREE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_PARENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FROM_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    BYTES_TO_CHILDREN_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    seconds: float
    bytes_sent: int
    combine_seconds: float
    serialize_seconds: float
    subtree_seconds: float
    bytes_from_parent: int
    bytes_from_children: int
    bytes_to_children: int
    parent_id: str
    def __init__(self, node_id: _Optional[str] = ..., seconds: _Optional[float] = ..., bytes_sent: _Optional[int] = ..., combine_seconds: _Optional[float] = ..., serialize_seconds: _Optional[float] = ..., subtree_seconds: _Optional[float] = ..., bytes_from_parent: _Optional[int] = ..., bytes_from_children: _Optional[int] = ..., bytes_to_children: _Optional[int] = ..., parent_id: _Optional[str] = ...) -> None: ...

class Trailer(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[NodeStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[NodeStats, _Mapping]]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("phase", "message", "seconds", "node_id", "bytes_sent", "node_stats")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    NODE_STATS_FIELD_NUMBER: _ClassVar[int]
    phase: str
    message: str
    seconds: float
    node_id: str
    bytes_sent: int
    node_stats: NodeStats
    def __init__(self, phase: _Optional[str] = ..., message: _Optional[str] = ..., seconds: _Optional[float] = ..., node_id: _Optional[str] = ..., bytes_sent: _Optional[int] = ..., node_stats: _Optional[_Union[NodeStats, _Mapping]] = ...) -> None: ...

class BroadcastAck(_message.Message):
    __slots__ = ("installed_by",)
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    installed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed_by: _Optional[_Iterable[str]] = ...) -> None: ...
