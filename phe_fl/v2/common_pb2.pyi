from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("call_id", "total_size", "data")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    call_id: int
    total_size: int
    data: bytes
    def __init__(self, call_id: _Optional[int] = ..., total_size: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

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

class Error(_message.Message):
    __slots__ = ("code", "message")
    class Code(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        CODE_UNSPECIFIED: _ClassVar[Error.Code]
        INVALID_ARGUMENT: _ClassVar[Error.Code]
        FAILED_PRECONDITION: _ClassVar[Error.Code]
        PERMISSION_DENIED: _ClassVar[Error.Code]
        ABORTED: _ClassVar[Error.Code]
        INTERNAL: _ClassVar[Error.Code]
        DEADLINE_EXCEEDED: _ClassVar[Error.Code]
        UNAVAILABLE: _ClassVar[Error.Code]
        CANCELLED: _ClassVar[Error.Code]
        RESOURCE_EXHAUSTED: _ClassVar[Error.Code]
    CODE_UNSPECIFIED: Error.Code
    INVALID_ARGUMENT: Error.Code
    FAILED_PRECONDITION: Error.Code
    PERMISSION_DENIED: Error.Code
    ABORTED: Error.Code
    INTERNAL: Error.Code
    DEADLINE_EXCEEDED: Error.Code
    UNAVAILABLE: Error.Code
    CANCELLED: Error.Code
    RESOURCE_EXHAUSTED: Error.Code
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: Error.Code
    message: str
    def __init__(self, code: _Optional[_Union[Error.Code, str]] = ..., message: _Optional[str] = ...) -> None: ...

class NodeStatus(_message.Message):
    __slots__ = ("node_id", "parent_id", "key_state", "schema_digest")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    KEY_STATE_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_DIGEST_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    parent_id: str
    key_state: str
    schema_digest: str
    def __init__(self, node_id: _Optional[str] = ..., parent_id: _Optional[str] = ..., key_state: _Optional[str] = ..., schema_digest: _Optional[str] = ...) -> None: ...
