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
    __slots__ = ("node_id", "seconds", "bytes_sent")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    seconds: float
    bytes_sent: int
    def __init__(self, node_id: _Optional[str] = ..., seconds: _Optional[float] = ..., bytes_sent: _Optional[int] = ...) -> None: ...

class Trailer(_message.Message):
    __slots__ = ("stats",)
    STATS_FIELD_NUMBER: _ClassVar[int]
    stats: _containers.RepeatedCompositeFieldContainer[NodeStats]
    def __init__(self, stats: _Optional[_Iterable[_Union[NodeStats, _Mapping]]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("phase", "message", "seconds", "node_id", "bytes_sent")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    phase: str
    message: str
    seconds: float
    node_id: str
    bytes_sent: int
    def __init__(self, phase: _Optional[str] = ..., message: _Optional[str] = ..., seconds: _Optional[float] = ..., node_id: _Optional[str] = ..., bytes_sent: _Optional[int] = ...) -> None: ...

class BroadcastAck(_message.Message):
    __slots__ = ("installed_by",)
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    installed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed_by: _Optional[_Iterable[str]] = ...) -> None: ...
