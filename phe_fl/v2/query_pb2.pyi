from phe_fl.v2 import common_pb2 as _common_pb2
from phe_fl.v2 import ml_pb2 as _ml_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Stage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STAGE_UNSPECIFIED: _ClassVar[Stage]
    KEYGEN_PUBLIC_KEY: _ClassVar[Stage]
    KEYGEN_RELIN_ROUND_ONE: _ClassVar[Stage]
    KEYGEN_RELIN_ROUND_TWO: _ClassVar[Stage]
    KEYGEN_ROTATION_KEYS: _ClassVar[Stage]
    KEYGEN_RESUMED: _ClassVar[Stage]
    KEYGEN_DONE: _ClassVar[Stage]
    STATISTICS: _ClassVar[Stage]
    KEY_SWITCH: _ClassVar[Stage]
    PREPARE_STATISTICS: _ClassVar[Stage]
    PREPARE_DECRYPT: _ClassVar[Stage]
    VALIDATE_SHARDS: _ClassVar[Stage]
    MAP_COMBINE: _ClassVar[Stage]
    REFRESH: _ClassVar[Stage]
    ITERATION_DONE: _ClassVar[Stage]
    MODEL_DECRYPTION: _ClassVar[Stage]
    EVALUATE: _ClassVar[Stage]
    INSTALL_KEYS: _ClassVar[Stage]
    WAITING_FOR_NODES: _ClassVar[Stage]
    RESUMED: _ClassVar[Stage]
    FEDAVG_PREPARE: _ClassVar[Stage]
    FEDAVG_GLOBAL: _ClassVar[Stage]
    FEDAVG_TRAIN: _ClassVar[Stage]
    FEDAVG_AGGREGATE: _ClassVar[Stage]
    ROUND_DONE: _ClassVar[Stage]
STAGE_UNSPECIFIED: Stage
KEYGEN_PUBLIC_KEY: Stage
KEYGEN_RELIN_ROUND_ONE: Stage
KEYGEN_RELIN_ROUND_TWO: Stage
KEYGEN_ROTATION_KEYS: Stage
KEYGEN_RESUMED: Stage
KEYGEN_DONE: Stage
STATISTICS: Stage
KEY_SWITCH: Stage
PREPARE_STATISTICS: Stage
PREPARE_DECRYPT: Stage
VALIDATE_SHARDS: Stage
MAP_COMBINE: Stage
REFRESH: Stage
ITERATION_DONE: Stage
MODEL_DECRYPTION: Stage
EVALUATE: Stage
INSTALL_KEYS: Stage
WAITING_FOR_NODES: Stage
RESUMED: Stage
FEDAVG_PREPARE: Stage
FEDAVG_GLOBAL: Stage
FEDAVG_TRAIN: Stage
FEDAVG_AGGREGATE: Stage
ROUND_DONE: Stage

class JobRequest(_message.Message):
    __slots__ = ("job_id", "params", "setup", "stats", "train", "model_weights", "model_info", "predict", "joint_key", "status", "fedavg", "train_network", "watch", "list_jobs", "cancel", "list_models", "detach")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SETUP_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_FIELD_NUMBER: _ClassVar[int]
    PREDICT_FIELD_NUMBER: _ClassVar[int]
    JOINT_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_FIELD_NUMBER: _ClassVar[int]
    TRAIN_NETWORK_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    LIST_JOBS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    LIST_MODELS_FIELD_NUMBER: _ClassVar[int]
    DETACH_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    params: str
    setup: SetupJob
    stats: StatsJob
    train: TrainJob
    model_weights: ModelWeightsJob
    model_info: ModelInfoJob
    predict: PredictJob
    joint_key: JointKeyJob
    status: StatusJob
    fedavg: FedAvgJob
    train_network: TrainNetworkJob
    watch: WatchJob
    list_jobs: ListJobsJob
    cancel: CancelJob
    list_models: ListModelsJob
    detach: bool
    def __init__(self, job_id: _Optional[str] = ..., params: _Optional[str] = ..., setup: _Optional[_Union[SetupJob, _Mapping]] = ..., stats: _Optional[_Union[StatsJob, _Mapping]] = ..., train: _Optional[_Union[TrainJob, _Mapping]] = ..., model_weights: _Optional[_Union[ModelWeightsJob, _Mapping]] = ..., model_info: _Optional[_Union[ModelInfoJob, _Mapping]] = ..., predict: _Optional[_Union[PredictJob, _Mapping]] = ..., joint_key: _Optional[_Union[JointKeyJob, _Mapping]] = ..., status: _Optional[_Union[StatusJob, _Mapping]] = ..., fedavg: _Optional[_Union[FedAvgJob, _Mapping]] = ..., train_network: _Optional[_Union[TrainNetworkJob, _Mapping]] = ..., watch: _Optional[_Union[WatchJob, _Mapping]] = ..., list_jobs: _Optional[_Union[ListJobsJob, _Mapping]] = ..., cancel: _Optional[_Union[CancelJob, _Mapping]] = ..., list_models: _Optional[_Union[ListModelsJob, _Mapping]] = ..., detach: _Optional[bool] = ...) -> None: ...

class JobReply(_message.Message):
    __slots__ = ("event", "result", "accepted")
    EVENT_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    event: ProgressEvent
    result: JobResult
    accepted: JobInfo
    def __init__(self, event: _Optional[_Union[ProgressEvent, _Mapping]] = ..., result: _Optional[_Union[JobResult, _Mapping]] = ..., accepted: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class JobResult(_message.Message):
    __slots__ = ("setup", "stats", "train", "model_weights", "model_info", "predict", "joint_key", "status", "fedavg", "train_network", "watch", "list_jobs", "cancel", "list_models")
    SETUP_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_FIELD_NUMBER: _ClassVar[int]
    MODEL_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_INFO_FIELD_NUMBER: _ClassVar[int]
    PREDICT_FIELD_NUMBER: _ClassVar[int]
    JOINT_KEY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_FIELD_NUMBER: _ClassVar[int]
    TRAIN_NETWORK_FIELD_NUMBER: _ClassVar[int]
    WATCH_FIELD_NUMBER: _ClassVar[int]
    LIST_JOBS_FIELD_NUMBER: _ClassVar[int]
    CANCEL_FIELD_NUMBER: _ClassVar[int]
    LIST_MODELS_FIELD_NUMBER: _ClassVar[int]
    setup: SetupResult
    stats: StatsResult
    train: TrainResult
    model_weights: ModelWeightsResult
    model_info: ModelInfoResult
    predict: PredictResult
    joint_key: JointKeyResult
    status: StatusResult
    fedavg: FedAvgResult
    train_network: TrainNetworkResult
    watch: WatchResult
    list_jobs: ListJobsResult
    cancel: CancelResult
    list_models: ListModelsResult
    def __init__(self, setup: _Optional[_Union[SetupResult, _Mapping]] = ..., stats: _Optional[_Union[StatsResult, _Mapping]] = ..., train: _Optional[_Union[TrainResult, _Mapping]] = ..., model_weights: _Optional[_Union[ModelWeightsResult, _Mapping]] = ..., model_info: _Optional[_Union[ModelInfoResult, _Mapping]] = ..., predict: _Optional[_Union[PredictResult, _Mapping]] = ..., joint_key: _Optional[_Union[JointKeyResult, _Mapping]] = ..., status: _Optional[_Union[StatusResult, _Mapping]] = ..., fedavg: _Optional[_Union[FedAvgResult, _Mapping]] = ..., train_network: _Optional[_Union[TrainNetworkResult, _Mapping]] = ..., watch: _Optional[_Union[WatchResult, _Mapping]] = ..., list_jobs: _Optional[_Union[ListJobsResult, _Mapping]] = ..., cancel: _Optional[_Union[CancelResult, _Mapping]] = ..., list_models: _Optional[_Union[ListModelsResult, _Mapping]] = ...) -> None: ...

class SetupJob(_message.Message):
    __slots__ = ("rotations",)
    ROTATIONS_FIELD_NUMBER: _ClassVar[int]
    rotations: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, rotations: _Optional[_Iterable[int]] = ...) -> None: ...

class SetupResult(_message.Message):
    __slots__ = ("keygen_job_id",)
    KEYGEN_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    keygen_job_id: str
    def __init__(self, keygen_job_id: _Optional[str] = ...) -> None: ...

class StatsJob(_message.Message):
    __slots__ = ("querier_key", "n_features")
    QUERIER_KEY_FIELD_NUMBER: _ClassVar[int]
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    querier_key: bytes
    n_features: int
    def __init__(self, querier_key: _Optional[bytes] = ..., n_features: _Optional[int] = ...) -> None: ...

class StatsResult(_message.Message):
    __slots__ = ("encrypted_sums",)
    ENCRYPTED_SUMS_FIELD_NUMBER: _ClassVar[int]
    encrypted_sums: bytes
    def __init__(self, encrypted_sums: _Optional[bytes] = ...) -> None: ...

class TrainJob(_message.Message):
    __slots__ = ("spec", "standardize", "margin_check_every")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZE_FIELD_NUMBER: _ClassVar[int]
    MARGIN_CHECK_EVERY_FIELD_NUMBER: _ClassVar[int]
    spec: _ml_pb2.GlmJobSpec
    standardize: bool
    margin_check_every: int
    def __init__(self, spec: _Optional[_Union[_ml_pb2.GlmJobSpec, _Mapping]] = ..., standardize: _Optional[bool] = ..., margin_check_every: _Optional[int] = ...) -> None: ...

class TrainResult(_message.Message):
    __slots__ = ("model_id", "refreshes", "standardization", "schema", "dp_epsilon", "dp_delta")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    DP_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DP_DELTA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    refreshes: _containers.RepeatedScalarFieldContainer[int]
    standardization: _ml_pb2.Standardization
    schema: _ml_pb2.DataSchema
    dp_epsilon: float
    dp_delta: float
    def __init__(self, model_id: _Optional[str] = ..., refreshes: _Optional[_Iterable[int]] = ..., standardization: _Optional[_Union[_ml_pb2.Standardization, _Mapping]] = ..., schema: _Optional[_Union[_ml_pb2.DataSchema, _Mapping]] = ..., dp_epsilon: _Optional[float] = ..., dp_delta: _Optional[float] = ...) -> None: ...

class TrainNetworkJob(_message.Message):
    __slots__ = ("spec", "standardize")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZE_FIELD_NUMBER: _ClassVar[int]
    spec: _ml_pb2.NetworkJobSpec
    standardize: bool
    def __init__(self, spec: _Optional[_Union[_ml_pb2.NetworkJobSpec, _Mapping]] = ..., standardize: _Optional[bool] = ...) -> None: ...

class TrainNetworkResult(_message.Message):
    __slots__ = ("model_id", "root_refreshes", "party_refreshes", "map_rounds", "standardization", "schema")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    ROOT_REFRESHES_FIELD_NUMBER: _ClassVar[int]
    PARTY_REFRESHES_FIELD_NUMBER: _ClassVar[int]
    MAP_ROUNDS_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    root_refreshes: _containers.RepeatedScalarFieldContainer[int]
    party_refreshes: _containers.RepeatedScalarFieldContainer[int]
    map_rounds: _containers.RepeatedScalarFieldContainer[int]
    standardization: _ml_pb2.Standardization
    schema: _ml_pb2.DataSchema
    def __init__(self, model_id: _Optional[str] = ..., root_refreshes: _Optional[_Iterable[int]] = ..., party_refreshes: _Optional[_Iterable[int]] = ..., map_rounds: _Optional[_Iterable[int]] = ..., standardization: _Optional[_Union[_ml_pb2.Standardization, _Mapping]] = ..., schema: _Optional[_Union[_ml_pb2.DataSchema, _Mapping]] = ...) -> None: ...

class ModelWeightsJob(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ModelWeightsResult(_message.Message):
    __slots__ = ("weights", "layers")
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    LAYERS_FIELD_NUMBER: _ClassVar[int]
    weights: _containers.RepeatedScalarFieldContainer[float]
    layers: _containers.RepeatedCompositeFieldContainer[_ml_pb2.Matrix]
    def __init__(self, weights: _Optional[_Iterable[float]] = ..., layers: _Optional[_Iterable[_Union[_ml_pb2.Matrix, _Mapping]]] = ...) -> None: ...

class ModelInfoJob(_message.Message):
    __slots__ = ("model_id",)
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    def __init__(self, model_id: _Optional[str] = ...) -> None: ...

class ModelInfoResult(_message.Message):
    __slots__ = ("spec", "refreshes", "standardization", "schema", "network")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    spec: _ml_pb2.GlmJobSpec
    refreshes: _containers.RepeatedScalarFieldContainer[int]
    standardization: _ml_pb2.Standardization
    schema: _ml_pb2.DataSchema
    network: _ml_pb2.NetworkJobSpec
    def __init__(self, spec: _Optional[_Union[_ml_pb2.GlmJobSpec, _Mapping]] = ..., refreshes: _Optional[_Iterable[int]] = ..., standardization: _Optional[_Union[_ml_pb2.Standardization, _Mapping]] = ..., schema: _Optional[_Union[_ml_pb2.DataSchema, _Mapping]] = ..., network: _Optional[_Union[_ml_pb2.NetworkJobSpec, _Mapping]] = ...) -> None: ...

class PredictJob(_message.Message):
    __slots__ = ("model_id", "querier_key", "queries", "n_samples")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    QUERIER_KEY_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    N_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    querier_key: bytes
    queries: _containers.RepeatedScalarFieldContainer[bytes]
    n_samples: int
    def __init__(self, model_id: _Optional[str] = ..., querier_key: _Optional[bytes] = ..., queries: _Optional[_Iterable[bytes]] = ..., n_samples: _Optional[int] = ...) -> None: ...

class PredictResult(_message.Message):
    __slots__ = ("scores",)
    SCORES_FIELD_NUMBER: _ClassVar[int]
    scores: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, scores: _Optional[_Iterable[bytes]] = ...) -> None: ...

class JointKeyJob(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class JointKeyResult(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class StatusJob(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class StatusResult(_message.Message):
    __slots__ = ("nodes", "missing", "params", "schema", "privacy_budget", "privacy_spent", "privacy_delta")
    NODES_FIELD_NUMBER: _ClassVar[int]
    MISSING_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_BUDGET_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_SPENT_FIELD_NUMBER: _ClassVar[int]
    PRIVACY_DELTA_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_common_pb2.NodeStatus]
    missing: _containers.RepeatedScalarFieldContainer[str]
    params: str
    schema: _ml_pb2.DataSchema
    privacy_budget: float
    privacy_spent: float
    privacy_delta: float
    def __init__(self, nodes: _Optional[_Iterable[_Union[_common_pb2.NodeStatus, _Mapping]]] = ..., missing: _Optional[_Iterable[str]] = ..., params: _Optional[str] = ..., schema: _Optional[_Union[_ml_pb2.DataSchema, _Mapping]] = ..., privacy_budget: _Optional[float] = ..., privacy_spent: _Optional[float] = ..., privacy_delta: _Optional[float] = ...) -> None: ...

class JobInfo(_message.Message):
    __slots__ = ("job_id", "kind", "querier", "state", "created", "updated", "error", "iterations_done", "resumes", "started")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    QUERIER_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_DONE_FIELD_NUMBER: _ClassVar[int]
    RESUMES_FIELD_NUMBER: _ClassVar[int]
    STARTED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    kind: str
    querier: str
    state: str
    created: float
    updated: float
    error: str
    iterations_done: int
    resumes: int
    started: float
    def __init__(self, job_id: _Optional[str] = ..., kind: _Optional[str] = ..., querier: _Optional[str] = ..., state: _Optional[str] = ..., created: _Optional[float] = ..., updated: _Optional[float] = ..., error: _Optional[str] = ..., iterations_done: _Optional[int] = ..., resumes: _Optional[int] = ..., started: _Optional[float] = ...) -> None: ...

class WatchJob(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchResult(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class ListJobsJob(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListJobsResult(_message.Message):
    __slots__ = ("jobs",)
    JOBS_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[JobInfo]
    def __init__(self, jobs: _Optional[_Iterable[_Union[JobInfo, _Mapping]]] = ...) -> None: ...

class CancelJob(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class CancelResult(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: JobInfo
    def __init__(self, job: _Optional[_Union[JobInfo, _Mapping]] = ...) -> None: ...

class ListModelsJob(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListModelsResult(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[ModelSummary]
    def __init__(self, models: _Optional[_Iterable[_Union[ModelSummary, _Mapping]]] = ...) -> None: ...

class ModelSummary(_message.Message):
    __slots__ = ("model_id", "spec", "querier", "created", "refreshes", "network")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    QUERIER_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    spec: _ml_pb2.GlmJobSpec
    querier: str
    created: float
    refreshes: _containers.RepeatedScalarFieldContainer[int]
    network: _ml_pb2.NetworkJobSpec
    def __init__(self, model_id: _Optional[str] = ..., spec: _Optional[_Union[_ml_pb2.GlmJobSpec, _Mapping]] = ..., querier: _Optional[str] = ..., created: _Optional[float] = ..., refreshes: _Optional[_Iterable[int]] = ..., network: _Optional[_Union[_ml_pb2.NetworkJobSpec, _Mapping]] = ...) -> None: ...

class FedAvgJob(_message.Message):
    __slots__ = ("spec",)
    SPEC_FIELD_NUMBER: _ClassVar[int]
    spec: _ml_pb2.FedAvgSpec
    def __init__(self, spec: _Optional[_Union[_ml_pb2.FedAvgSpec, _Mapping]] = ...) -> None: ...

class FedAvgResult(_message.Message):
    __slots__ = ("model_id", "tensors", "parameters", "rounds", "dp_epsilon", "dp_delta")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TENSORS_FIELD_NUMBER: _ClassVar[int]
    PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    DP_EPSILON_FIELD_NUMBER: _ClassVar[int]
    DP_DELTA_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    tensors: _containers.RepeatedCompositeFieldContainer[_ml_pb2.TensorSpec]
    parameters: bytes
    rounds: _containers.RepeatedCompositeFieldContainer[RoundSummary]
    dp_epsilon: float
    dp_delta: float
    def __init__(self, model_id: _Optional[str] = ..., tensors: _Optional[_Iterable[_Union[_ml_pb2.TensorSpec, _Mapping]]] = ..., parameters: _Optional[bytes] = ..., rounds: _Optional[_Iterable[_Union[RoundSummary, _Mapping]]] = ..., dp_epsilon: _Optional[float] = ..., dp_delta: _Optional[float] = ...) -> None: ...

class ProgressEvent(_message.Message):
    __slots__ = ("stage", "seconds", "iteration", "iterations", "index", "count", "nodes", "summary", "round")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    stage: Stage
    seconds: float
    iteration: int
    iterations: int
    index: int
    count: int
    nodes: _containers.RepeatedCompositeFieldContainer[_common_pb2.NodeStats]
    summary: IterationSummary
    round: RoundSummary
    def __init__(self, stage: _Optional[_Union[Stage, str]] = ..., seconds: _Optional[float] = ..., iteration: _Optional[int] = ..., iterations: _Optional[int] = ..., index: _Optional[int] = ..., count: _Optional[int] = ..., nodes: _Optional[_Iterable[_Union[_common_pb2.NodeStats, _Mapping]]] = ..., summary: _Optional[_Union[IterationSummary, _Mapping]] = ..., round: _Optional[_Union[RoundSummary, _Mapping]] = ...) -> None: ...

class RoundSummary(_message.Message):
    __slots__ = ("examples", "loss", "train_seconds", "aggregate_seconds", "update_bytes")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    AGGREGATE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_BYTES_FIELD_NUMBER: _ClassVar[int]
    examples: int
    loss: float
    train_seconds: float
    aggregate_seconds: float
    update_bytes: int
    def __init__(self, examples: _Optional[int] = ..., loss: _Optional[float] = ..., train_seconds: _Optional[float] = ..., aggregate_seconds: _Optional[float] = ..., update_bytes: _Optional[int] = ...) -> None: ...

class IterationSummary(_message.Message):
    __slots__ = ("refreshes", "levels_left", "levels_sent", "levels_dropped", "margin_low", "margin_high")
    REFRESHES_FIELD_NUMBER: _ClassVar[int]
    LEVELS_LEFT_FIELD_NUMBER: _ClassVar[int]
    LEVELS_SENT_FIELD_NUMBER: _ClassVar[int]
    LEVELS_DROPPED_FIELD_NUMBER: _ClassVar[int]
    MARGIN_LOW_FIELD_NUMBER: _ClassVar[int]
    MARGIN_HIGH_FIELD_NUMBER: _ClassVar[int]
    refreshes: int
    levels_left: int
    levels_sent: int
    levels_dropped: int
    margin_low: float
    margin_high: float
    def __init__(self, refreshes: _Optional[int] = ..., levels_left: _Optional[int] = ..., levels_sent: _Optional[int] = ..., levels_dropped: _Optional[int] = ..., margin_low: _Optional[float] = ..., margin_high: _Optional[float] = ...) -> None: ...
