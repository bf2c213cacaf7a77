from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GlmJobSpec(_message.Message):
    __slots__ = ("n_features", "model", "learning_rate", "batch_size", "iterations", "activation_degree", "activation_bound", "activation_method", "params", "fit_intercept", "allow_model_decryption", "momentum", "feature_clip", "dp_noise_multiplier", "dp_clip", "nesterov")
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
    FEATURE_CLIP_FIELD_NUMBER: _ClassVar[int]
    DP_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    DP_CLIP_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
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
    feature_clip: float
    dp_noise_multiplier: float
    dp_clip: float
    nesterov: bool
    def __init__(self, n_features: _Optional[int] = ..., model: _Optional[str] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., iterations: _Optional[int] = ..., activation_degree: _Optional[int] = ..., activation_bound: _Optional[float] = ..., activation_method: _Optional[str] = ..., params: _Optional[str] = ..., fit_intercept: _Optional[bool] = ..., allow_model_decryption: _Optional[bool] = ..., momentum: _Optional[float] = ..., feature_clip: _Optional[float] = ..., dp_noise_multiplier: _Optional[float] = ..., dp_clip: _Optional[float] = ..., nesterov: _Optional[bool] = ...) -> None: ...

class NetworkJobSpec(_message.Message):
    __slots__ = ("n_features", "n_classes", "hidden", "learning_rate", "batch_size", "iterations", "momentum", "hidden_activation", "hidden_degree", "hidden_bound", "output_degree", "output_bound", "activation_method", "params", "seed", "init_scale", "allow_model_decryption", "nesterov", "tile")
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    N_CLASSES_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MOMENTUM_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_DEGREE_FIELD_NUMBER: _ClassVar[int]
    HIDDEN_BOUND_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DEGREE_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_BOUND_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_METHOD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    INIT_SCALE_FIELD_NUMBER: _ClassVar[int]
    ALLOW_MODEL_DECRYPTION_FIELD_NUMBER: _ClassVar[int]
    NESTEROV_FIELD_NUMBER: _ClassVar[int]
    TILE_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    n_classes: int
    hidden: _containers.RepeatedScalarFieldContainer[int]
    learning_rate: float
    batch_size: int
    iterations: int
    momentum: float
    hidden_activation: str
    hidden_degree: int
    hidden_bound: float
    output_degree: int
    output_bound: float
    activation_method: str
    params: str
    seed: int
    init_scale: float
    allow_model_decryption: bool
    nesterov: bool
    tile: int
    def __init__(self, n_features: _Optional[int] = ..., n_classes: _Optional[int] = ..., hidden: _Optional[_Iterable[int]] = ..., learning_rate: _Optional[float] = ..., batch_size: _Optional[int] = ..., iterations: _Optional[int] = ..., momentum: _Optional[float] = ..., hidden_activation: _Optional[str] = ..., hidden_degree: _Optional[int] = ..., hidden_bound: _Optional[float] = ..., output_degree: _Optional[int] = ..., output_bound: _Optional[float] = ..., activation_method: _Optional[str] = ..., params: _Optional[str] = ..., seed: _Optional[int] = ..., init_scale: _Optional[float] = ..., allow_model_decryption: _Optional[bool] = ..., nesterov: _Optional[bool] = ..., tile: _Optional[int] = ...) -> None: ...

class Matrix(_message.Message):
    __slots__ = ("rows", "cols", "values")
    ROWS_FIELD_NUMBER: _ClassVar[int]
    COLS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    rows: int
    cols: int
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, rows: _Optional[int] = ..., cols: _Optional[int] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class DataSchema(_message.Message):
    __slots__ = ("features", "label", "classes", "transforms", "digest")
    FEATURES_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CLASSES_FIELD_NUMBER: _ClassVar[int]
    TRANSFORMS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    features: _containers.RepeatedScalarFieldContainer[str]
    label: str
    classes: _containers.RepeatedScalarFieldContainer[str]
    transforms: _containers.RepeatedCompositeFieldContainer[Transform]
    digest: str
    def __init__(self, features: _Optional[_Iterable[str]] = ..., label: _Optional[str] = ..., classes: _Optional[_Iterable[str]] = ..., transforms: _Optional[_Iterable[_Union[Transform, _Mapping]]] = ..., digest: _Optional[str] = ...) -> None: ...

class Transform(_message.Message):
    __slots__ = ("name", "columns", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COLUMNS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    columns: _containers.RepeatedScalarFieldContainer[str]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, name: _Optional[str] = ..., columns: _Optional[_Iterable[str]] = ..., values: _Optional[_Iterable[float]] = ...) -> None: ...

class Standardization(_message.Message):
    __slots__ = ("mean", "std")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    STD_FIELD_NUMBER: _ClassVar[int]
    mean: _containers.RepeatedScalarFieldContainer[float]
    std: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, mean: _Optional[_Iterable[float]] = ..., std: _Optional[_Iterable[float]] = ...) -> None: ...

class FedAvgSpec(_message.Message):
    __slots__ = ("app", "rounds", "epochs", "batch_size", "learning_rate", "seed", "dp_noise_multiplier", "dp_clip", "dp_sample_rate")
    APP_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    DP_NOISE_MULTIPLIER_FIELD_NUMBER: _ClassVar[int]
    DP_CLIP_FIELD_NUMBER: _ClassVar[int]
    DP_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    app: str
    rounds: int
    epochs: int
    batch_size: int
    learning_rate: float
    seed: int
    dp_noise_multiplier: float
    dp_clip: float
    dp_sample_rate: float
    def __init__(self, app: _Optional[str] = ..., rounds: _Optional[int] = ..., epochs: _Optional[int] = ..., batch_size: _Optional[int] = ..., learning_rate: _Optional[float] = ..., seed: _Optional[int] = ..., dp_noise_multiplier: _Optional[float] = ..., dp_clip: _Optional[float] = ..., dp_sample_rate: _Optional[float] = ...) -> None: ...

class TensorSpec(_message.Message):
    __slots__ = ("name", "shape")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    name: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, name: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ...) -> None: ...
