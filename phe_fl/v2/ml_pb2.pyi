from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class GlmJobSpec(_message.Message):
    __slots__ = ("n_features", "model", "learning_rate", "batch_size", "iterations", "activation_degree", "activation_bound", "activation_method", "params", "fit_intercept", "allow_model_decryption", "momentum")
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_DEGREE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_BOUND_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    FIT_INTERCEPT_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MODEL_DECRYPTION_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    model: str
    learning_rate: float
    batch_size: int
    iterations: int
    activation_degree: int
    activation_bound: float
    activation_method: str
    params: str
    fit_intercept: bool
    allow_model_decryption: bool
    momentum: float
    def __init__(self, n_features: _Optional[int] = ..., model: _Optional[str] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., iterations: _Optional[int] = ..., activation_degree: _Optional[int] = ..., activation_bound: _Optional[float] = ..., activation_method: _Optional[str] = ..., params: _Optional[str] = ..., fit_intercept: _Optional[bool] = ..., allow_model_decryption: _Optional[bool] = ..., momentum: _Optional[float] = ...) -> None: ...

class Standardization(_message.Message):
    __slots__ = ("mean", "std")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...
