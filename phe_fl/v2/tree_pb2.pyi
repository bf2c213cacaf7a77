from phe_fl.v2 import common_pb2 as _common_pb2
from phe_fl.v2 import ml_pb2 as _ml_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ChildMessage(_message.Message):
    __slots__ = ("hello", "response")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    response: TreeResponse
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., response: _Optional[_Union[TreeResponse, _Mapping]] = ...) -> None: ...

class ParentMessage(_message.Message):
    __slots__ = ("welcome", "request")
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    welcome: Welcome
    request: TreeRequest
    def __init__(self, welcome: _Optional[_Union[Welcome, _Mapping]] = ..., request: _Optional[_Union[TreeRequest, _Mapping]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("node_id", "params", "n_parties")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    N_PARTIES_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    params: str
    n_parties: int
    def __init__(self, node_id: _Optional[str] = ..., params: _Optional[str] = ..., n_parties: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("parent_id",)
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    parent_id: str
    def __init__(self, parent_id: _Optional[str] = ...) -> None: ...

class TreeRequest(_message.Message):
    __slots__ = ("job_id", "params", "n_parties", "deadline_s", "job_kind", "public_key", "install_joint_key", "relin_round_one", "relin_round_two", "install_relin_key", "rotation_keys", "install_rotation_keys", "statistics", "decrypt_statistics", "decrypt_model", "key_switch", "refresh", "prepare_training", "gradient", "margin_moment", "prepare_network", "network_map", "fedavg_prepare", "fedavg_global", "fedavg_train", "fedavg_update", "fedavg_decrypt", "ping")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PARAMS_FIELD_NUMBER: _ClassVar[int]
    N_PARTIES_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_S_FIELD_NUMBER: _ClassVar[int]
    JOB_KIND_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    INSTALL_JOINT_KEY_FIELD_NUMBER: _ClassVar[int]
    RELIN_ROUND_ONE_FIELD_NUMBER: _ClassVar[int]
    RELIN_ROUND_TWO_FIELD_NUMBER: _ClassVar[int]
    INSTALL_RELIN_KEY_FIELD_NUMBER: _ClassVar[int]
    ROTATION_KEYS_FIELD_NUMBER: _ClassVar[int]
    INSTALL_ROTATION_KEYS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_SWITCH_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    PREPARE_TRAINING_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    MARGIN_MOMENT_FIELD_NUMBER: _ClassVar[int]
    PREPARE_NETWORK_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MAP_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_PREPARE_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_GLOBAL_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_TRAIN_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_UPDATE_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_DECRYPT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    params: str
    n_parties: int
    deadline_s: float
    job_kind: str
    public_key: PublicKeyShareRequest
    install_joint_key: InstallJointKeyRequest
    relin_round_one: RelinRoundOneRequest
    relin_round_two: RelinRoundTwoRequest
    install_relin_key: InstallRelinKeyRequest
    rotation_keys: RotationKeysShareRequest
    install_rotation_keys: InstallRotationKeysRequest
    statistics: StatisticsRequest
    decrypt_statistics: DecryptStatisticsRequest
    decrypt_model: DecryptModelRequest
    key_switch: KeySwitchRequest
    refresh: RefreshShareRequest
    prepare_training: PrepareTrainingRequest
    gradient: GradientRequest
    margin_moment: MarginMomentRequest
    prepare_network: PrepareNetworkRequest
    network_map: NetworkMapRequest
    fedavg_prepare: FedAvgPrepareRequest
    fedavg_global: FedAvgGlobalRequest
    fedavg_train: FedAvgTrainRequest
    fedavg_update: FedAvgUpdateRequest
    fedavg_decrypt: FedAvgDecryptRequest
    ping: PingRequest
    def __init__(self, job_id: _Optional[str] = ..., params: _Optional[str] = ..., n_parties: _Optional[int] = ..., deadline_s: _Optional[float] = ..., job_kind: _Optional[str] = ..., public_key: _Optional[_Union[PublicKeyShareRequest, _Mapping]] = ..., install_joint_key: _Optional[_Union[InstallJointKeyRequest, _Mapping]] = ..., relin_round_one: _Optional[_Union[RelinRoundOneRequest, _Mapping]] = ..., relin_round_two: _Optional[_Union[RelinRoundTwoRequest, _Mapping]] = ..., install_relin_key: _Optional[_Union[InstallRelinKeyRequest, _Mapping]] = ..., rotation_keys: _Optional[_Union[RotationKeysShareRequest, _Mapping]] = ..., install_rotation_keys: _Optional[_Union[InstallRotationKeysRequest, _Mapping]] = ..., statistics: _Optional[_Union[StatisticsRequest, _Mapping]] = ..., decrypt_statistics: _Optional[_Union[DecryptStatisticsRequest, _Mapping]] = ..., decrypt_model: _Optional[_Union[DecryptModelRequest, _Mapping]] = ..., key_switch: _Optional[_Union[KeySwitchRequest, _Mapping]] = ..., refresh: _Optional[_Union[RefreshShareRequest, _Mapping]] = ..., prepare_training: _Optional[_Union[PrepareTrainingRequest, _Mapping]] = ..., gradient: _Optional[_Union[GradientRequest, _Mapping]] = ..., margin_moment: _Optional[_Union[MarginMomentRequest, _Mapping]] = ..., prepare_network: _Optional[_Union[PrepareNetworkRequest, _Mapping]] = ..., network_map: _Optional[_Union[NetworkMapRequest, _Mapping]] = ..., fedavg_prepare: _Optional[_Union[FedAvgPrepareRequest, _Mapping]] = ..., fedavg_global: _Optional[_Union[FedAvgGlobalRequest, _Mapping]] = ..., fedavg_train: _Optional[_Union[FedAvgTrainRequest, _Mapping]] = ..., fedavg_update: _Optional[_Union[FedAvgUpdateRequest, _Mapping]] = ..., fedavg_decrypt: _Optional[_Union[FedAvgDecryptRequest, _Mapping]] = ..., ping: _Optional[_Union[PingRequest, _Mapping]] = ...) -> None: ...

class TreeResponse(_message.Message):
    __slots__ = ("public_key", "install_joint_key", "relin_round_one", "relin_round_two", "install_relin_key", "rotation_keys", "install_rotation_keys", "statistics", "decrypt_statistics", "decrypt_model", "key_switch", "refresh", "prepare_training", "gradient", "margin_moment", "prepare_network", "network_map", "fedavg_prepare", "fedavg_global", "fedavg_train", "fedavg_update", "fedavg_decrypt", "ping", "error", "stats")
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    INSTALL_JOINT_KEY_FIELD_NUMBER: _ClassVar[int]
    RELIN_ROUND_ONE_FIELD_NUMBER: _ClassVar[int]
    RELIN_ROUND_TWO_FIELD_NUMBER: _ClassVar[int]
    INSTALL_RELIN_KEY_FIELD_NUMBER: _ClassVar[int]
    ROTATION_KEYS_FIELD_NUMBER: _ClassVar[int]
    INSTALL_ROTATION_KEYS_FIELD_NUMBER: _ClassVar[int]
    STATISTICS_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_STATISTICS_FIELD_NUMBER: _ClassVar[int]
    DECRYPT_MODEL_FIELD_NUMBER: _ClassVar[int]
    KEY_SWITCH_FIELD_NUMBER: _ClassVar[int]
    REFRESH_FIELD_NUMBER: _ClassVar[int]
    PREPARE_TRAINING_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    MARGIN_MOMENT_FIELD_NUMBER: _ClassVar[int]
    PREPARE_NETWORK_FIELD_NUMBER: _ClassVar[int]
    NETWORK_MAP_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_PREPARE_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_GLOBAL_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_TRAIN_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_UPDATE_FIELD_NUMBER: _ClassVar[int]
    FEDAVG_DECRYPT_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    public_key: PublicKeyShareResponse
    install_joint_key: InstallJointKeyResponse
    relin_round_one: RelinRoundOneResponse
    relin_round_two: RelinRoundTwoResponse
    install_relin_key: InstallRelinKeyResponse
    rotation_keys: RotationKeysShareResponse
    install_rotation_keys: InstallRotationKeysResponse
    statistics: StatisticsResponse
    decrypt_statistics: DecryptStatisticsResponse
    decrypt_model: DecryptModelResponse
    key_switch: KeySwitchResponse
    refresh: RefreshShareResponse
    prepare_training: PrepareTrainingResponse
    gradient: GradientResponse
    margin_moment: MarginMomentResponse
    prepare_network: PrepareNetworkResponse
    network_map: NetworkMapResponse
    fedavg_prepare: FedAvgPrepareResponse
    fedavg_global: FedAvgGlobalResponse
    fedavg_train: FedAvgTrainResponse
    fedavg_update: FedAvgUpdateResponse
    fedavg_decrypt: FedAvgDecryptResponse
    ping: PingResponse
    error: _common_pb2.Error
    stats: _containers.RepeatedCompositeFieldContainer[_common_pb2.NodeStats]
    def __init__(self, public_key: _Optional[_Union[PublicKeyShareResponse, _Mapping]] = ..., install_joint_key: _Optional[_Union[InstallJointKeyResponse, _Mapping]] = ..., relin_round_one: _Optional[_Union[RelinRoundOneResponse, _Mapping]] = ..., relin_round_two: _Optional[_Union[RelinRoundTwoResponse, _Mapping]] = ..., install_relin_key: _Optional[_Union[InstallRelinKeyResponse, _Mapping]] = ..., rotation_keys: _Optional[_Union[RotationKeysShareResponse, _Mapping]] = ..., install_rotation_keys: _Optional[_Union[InstallRotationKeysResponse, _Mapping]] = ..., statistics: _Optional[_Union[StatisticsResponse, _Mapping]] = ..., decrypt_statistics: _Optional[_Union[DecryptStatisticsResponse, _Mapping]] = ..., decrypt_model: _Optional[_Union[DecryptModelResponse, _Mapping]] = ..., key_switch: _Optional[_Union[KeySwitchResponse, _Mapping]] = ..., refresh: _Optional[_Union[RefreshShareResponse, _Mapping]] = ..., prepare_training: _Optional[_Union[PrepareTrainingResponse, _Mapping]] = ..., gradient: _Optional[_Union[GradientResponse, _Mapping]] = ..., margin_moment: _Optional[_Union[MarginMomentResponse, _Mapping]] = ..., prepare_network: _Optional[_Union[PrepareNetworkResponse, _Mapping]] = ..., network_map: _Optional[_Union[NetworkMapResponse, _Mapping]] = ..., fedavg_prepare: _Optional[_Union[FedAvgPrepareResponse, _Mapping]] = ..., fedavg_global: _Optional[_Union[FedAvgGlobalResponse, _Mapping]] = ..., fedavg_train: _Optional[_Union[FedAvgTrainResponse, _Mapping]] = ..., fedavg_update: _Optional[_Union[FedAvgUpdateResponse, _Mapping]] = ..., fedavg_decrypt: _Optional[_Union[FedAvgDecryptResponse, _Mapping]] = ..., ping: _Optional[_Union[PingResponse, _Mapping]] = ..., error: _Optional[_Union[_common_pb2.Error, _Mapping]] = ..., stats: _Optional[_Iterable[_Union[_common_pb2.NodeStats, _Mapping]]] = ...) -> None: ...

class PublicKeyShareRequest(_message.Message):
    __slots__ = ("crp",)
    CRP_FIELD_NUMBER: _ClassVar[int]
    crp: bytes
    def __init__(self, crp: _Optional[bytes] = ...) -> None: ...

class PublicKeyShareResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: bytes
    def __init__(self, share: _Optional[bytes] = ...) -> None: ...

class InstallJointKeyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class InstallJointKeyResponse(_message.Message):
    __slots__ = ("installed_by",)
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    installed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed_by: _Optional[_Iterable[str]] = ...) -> None: ...

class RelinRoundOneRequest(_message.Message):
    __slots__ = ("crp",)
    CRP_FIELD_NUMBER: _ClassVar[int]
    crp: bytes
    def __init__(self, crp: _Optional[bytes] = ...) -> None: ...

class RelinRoundOneResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: bytes
    def __init__(self, share: _Optional[bytes] = ...) -> None: ...

class RelinRoundTwoRequest(_message.Message):
    __slots__ = ("round_one_aggregate",)
    ROUND_ONE_AGGREGATE_FIELD_NUMBER: _ClassVar[int]
    round_one_aggregate: bytes
    def __init__(self, round_one_aggregate: _Optional[bytes] = ...) -> None: ...

class RelinRoundTwoResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: bytes
    def __init__(self, share: _Optional[bytes] = ...) -> None: ...

class InstallRelinKeyRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class InstallRelinKeyResponse(_message.Message):
    __slots__ = ("installed_by",)
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    installed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed_by: _Optional[_Iterable[str]] = ...) -> None: ...

class RotationKeysShareRequest(_message.Message):
    __slots__ = ("crp", "indices")
    CRP_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    crp: bytes
    indices: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, crp: _Optional[bytes] = ..., indices: _Optional[_Iterable[int]] = ...) -> None: ...

class RotationKeysShareResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: bytes
    def __init__(self, share: _Optional[bytes] = ...) -> None: ...

class InstallRotationKeysRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: bytes
    def __init__(self, key: _Optional[bytes] = ...) -> None: ...

class InstallRotationKeysResponse(_message.Message):
    __slots__ = ("installed_by",)
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    installed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed_by: _Optional[_Iterable[str]] = ...) -> None: ...

class StatisticsRequest(_message.Message):
    __slots__ = ("n_features",)
    N_FEATURES_FIELD_NUMBER: _ClassVar[int]
    n_features: int
    def __init__(self, n_features: _Optional[int] = ...) -> None: ...

class StatisticsResponse(_message.Message):
    __slots__ = ("encrypted_sums",)
    ENCRYPTED_SUMS_FIELD_NUMBER: _ClassVar[int]
    encrypted_sums: bytes
    def __init__(self, encrypted_sums: _Optional[bytes] = ...) -> None: ...

class DecryptStatisticsRequest(_message.Message):
    __slots__ = ("ciphertext",)
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    ciphertext: bytes
    def __init__(self, ciphertext: _Optional[bytes] = ...) -> None: ...

class DecryptStatisticsResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: bytes
    def __init__(self, share: _Optional[bytes] = ...) -> None: ...

class DecryptModelRequest(_message.Message):
    __slots__ = ("model_id", "ciphertext")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXT_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    ciphertext: bytes
    def __init__(self, model_id: _Optional[str] = ..., ciphertext: _Optional[bytes] = ...) -> None: ...

class DecryptModelResponse(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: bytes
    def __init__(self, share: _Optional[bytes] = ...) -> None: ...

class KeySwitchRequest(_message.Message):
    __slots__ = ("purpose", "querier", "querier_key", "ciphertexts")
    class Purpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        PURPOSE_UNSPECIFIED: _ClassVar[KeySwitchRequest.Purpose]
        POOLED_STATISTICS: _ClassVar[KeySwitchRequest.Purpose]
        PREDICTION: _ClassVar[KeySwitchRequest.Purpose]
    PURPOSE_UNSPECIFIED: KeySwitchRequest.Purpose
    POOLED_STATISTICS: KeySwitchRequest.Purpose
    PREDICTION: KeySwitchRequest.Purpose
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    QUERIER_FIELD_NUMBER: _ClassVar[int]
    QUERIER_KEY_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    purpose: KeySwitchRequest.Purpose
    querier: str
    querier_key: bytes
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, purpose: _Optional[_Union[KeySwitchRequest.Purpose, str]] = ..., querier: _Optional[str] = ..., querier_key: _Optional[bytes] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class KeySwitchResponse(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, shares: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RefreshShareRequest(_message.Message):
    __slots__ = ("ciphertexts", "crps")
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    CRPS_FIELD_NUMBER: _ClassVar[int]
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    crps: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, ciphertexts: _Optional[_Iterable[bytes]] = ..., crps: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RefreshShareResponse(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, shares: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PrepareTrainingRequest(_message.Message):
    __slots__ = ("job", "standardization")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    job: _ml_pb2.GlmJobSpec
    standardization: _ml_pb2.Standardization
    def __init__(self, job: _Optional[_Union[_ml_pb2.GlmJobSpec, _Mapping]] = ..., standardization: _Optional[_Union[_ml_pb2.Standardization, _Mapping]] = ...) -> None: ...

class PrepareTrainingResponse(_message.Message):
    __slots__ = ("global_batch", "total_rows")
    GLOBAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    global_batch: int
    total_rows: int
    def __init__(self, global_batch: _Optional[int] = ..., total_rows: _Optional[int] = ...) -> None: ...

class GradientRequest(_message.Message):
    __slots__ = ("iteration", "global_batch", "weights", "sample_rate")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    global_batch: int
    weights: bytes
    sample_rate: float
    def __init__(self, iteration: _Optional[int] = ..., global_batch: _Optional[int] = ..., weights: _Optional[bytes] = ..., sample_rate: _Optional[float] = ...) -> None: ...

class GradientResponse(_message.Message):
    __slots__ = ("gradient",)
    GRADIENT_FIELD_NUMBER: _ClassVar[int]
    gradient: bytes
    def __init__(self, gradient: _Optional[bytes] = ...) -> None: ...

class MarginMomentRequest(_message.Message):
    __slots__ = ("iteration", "global_batch", "weights", "sample_rate", "power")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    POWER_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    global_batch: int
    weights: bytes
    sample_rate: float
    power: int
    def __init__(self, iteration: _Optional[int] = ..., global_batch: _Optional[int] = ..., weights: _Optional[bytes] = ..., sample_rate: _Optional[float] = ..., power: _Optional[int] = ...) -> None: ...

class MarginMomentResponse(_message.Message):
    __slots__ = ("moment",)
    MOMENT_FIELD_NUMBER: _ClassVar[int]
    moment: bytes
    def __init__(self, moment: _Optional[bytes] = ...) -> None: ...

class PrepareNetworkRequest(_message.Message):
    __slots__ = ("job", "standardization")
    JOB_FIELD_NUMBER: _ClassVar[int]
    STANDARDIZATION_FIELD_NUMBER: _ClassVar[int]
    job: _ml_pb2.NetworkJobSpec
    standardization: _ml_pb2.Standardization
    def __init__(self, job: _Optional[_Union[_ml_pb2.NetworkJobSpec, _Mapping]] = ..., standardization: _Optional[_Union[_ml_pb2.Standardization, _Mapping]] = ...) -> None: ...

class PrepareNetworkResponse(_message.Message):
    __slots__ = ("global_batch", "total_rows")
    GLOBAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    TOTAL_ROWS_FIELD_NUMBER: _ClassVar[int]
    global_batch: int
    total_rows: int
    def __init__(self, global_batch: _Optional[int] = ..., total_rows: _Optional[int] = ...) -> None: ...

class NetworkMapRequest(_message.Message):
    __slots__ = ("iteration", "global_batch", "weights", "stage", "refreshed")
    ITERATION_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_BATCH_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    REFRESHED_FIELD_NUMBER: _ClassVar[int]
    iteration: int
    global_batch: int
    weights: _containers.RepeatedScalarFieldContainer[bytes]
    stage: int
    refreshed: _containers.RepeatedCompositeFieldContainer[NodeCiphertexts]
    def __init__(self, iteration: _Optional[int] = ..., global_batch: _Optional[int] = ..., weights: _Optional[_Iterable[bytes]] = ..., stage: _Optional[int] = ..., refreshed: _Optional[_Iterable[_Union[NodeCiphertexts, _Mapping]]] = ...) -> None: ...

class NetworkMapResponse(_message.Message):
    __slots__ = ("gradients", "finished", "pending")
    GRADIENTS_FIELD_NUMBER: _ClassVar[int]
    FINISHED_FIELD_NUMBER: _ClassVar[int]
    PENDING_FIELD_NUMBER: _ClassVar[int]
    gradients: _containers.RepeatedScalarFieldContainer[bytes]
    finished: int
    pending: _containers.RepeatedCompositeFieldContainer[NodeCiphertexts]
    def __init__(self, gradients: _Optional[_Iterable[bytes]] = ..., finished: _Optional[int] = ..., pending: _Optional[_Iterable[_Union[NodeCiphertexts, _Mapping]]] = ...) -> None: ...

class NodeCiphertexts(_message.Message):
    __slots__ = ("node_id", "ciphertexts")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, node_id: _Optional[str] = ..., ciphertexts: _Optional[_Iterable[bytes]] = ...) -> None: ...

class FedAvgPrepareRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: _ml_pb2.FedAvgSpec
    def __init__(self, job: _Optional[_Union[_ml_pb2.FedAvgSpec, _Mapping]] = ...) -> None: ...

class FedAvgPrepareResponse(_message.Message):
    __slots__ = ("layout_digest", "n_parameters", "contributors")
    LAYOUT_DIGEST_FIELD_NUMBER: _ClassVar[int]
    N_PARAMETERS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    layout_digest: str
    n_parameters: int
    contributors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, layout_digest: _Optional[str] = ..., n_parameters: _Optional[int] = ..., contributors: _Optional[_Iterable[str]] = ...) -> None: ...

class FedAvgGlobalRequest(_message.Message):
    __slots__ = ("round", "offset", "values")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    round: int
    offset: int
    values: bytes
    def __init__(self, round: _Optional[int] = ..., offset: _Optional[int] = ..., values: _Optional[bytes] = ...) -> None: ...

class FedAvgGlobalResponse(_message.Message):
    __slots__ = ("installed_by",)
    INSTALLED_BY_FIELD_NUMBER: _ClassVar[int]
    installed_by: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, installed_by: _Optional[_Iterable[str]] = ...) -> None: ...

class FedAvgTrainRequest(_message.Message):
    __slots__ = ("round", "global_digest")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    GLOBAL_DIGEST_FIELD_NUMBER: _ClassVar[int]
    round: int
    global_digest: bytes
    def __init__(self, round: _Optional[int] = ..., global_digest: _Optional[bytes] = ...) -> None: ...

class FedAvgTrainResponse(_message.Message):
    __slots__ = ("examples", "loss_sum", "contributors")
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    LOSS_SUM_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    examples: int
    loss_sum: float
    contributors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, examples: _Optional[int] = ..., loss_sum: _Optional[float] = ..., contributors: _Optional[_Iterable[str]] = ...) -> None: ...

class FedAvgUpdateRequest(_message.Message):
    __slots__ = ("round", "first_chunk", "chunks", "total_examples")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNKS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    round: int
    first_chunk: int
    chunks: int
    total_examples: int
    def __init__(self, round: _Optional[int] = ..., first_chunk: _Optional[int] = ..., chunks: _Optional[int] = ..., total_examples: _Optional[int] = ...) -> None: ...

class FedAvgUpdateResponse(_message.Message):
    __slots__ = ("ciphertexts", "contributors")
    CIPHERTEXTS_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    ciphertexts: _containers.RepeatedScalarFieldContainer[bytes]
    contributors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ciphertexts: _Optional[_Iterable[bytes]] = ..., contributors: _Optional[_Iterable[str]] = ...) -> None: ...

class FedAvgDecryptRequest(_message.Message):
    __slots__ = ("round", "first_chunk", "masked", "contributors")
    ROUND_FIELD_NUMBER: _ClassVar[int]
    FIRST_CHUNK_FIELD_NUMBER: _ClassVar[int]
    MASKED_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    round: int
    first_chunk: int
    masked: _containers.RepeatedScalarFieldContainer[bytes]
    contributors: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, round: _Optional[int] = ..., first_chunk: _Optional[int] = ..., masked: _Optional[_Iterable[bytes]] = ..., contributors: _Optional[_Iterable[str]] = ...) -> None: ...

class FedAvgDecryptResponse(_message.Message):
    __slots__ = ("shares",)
    SHARES_FIELD_NUMBER: _ClassVar[int]
    shares: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, shares: _Optional[_Iterable[bytes]] = ...) -> None: ...

class PingRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PingResponse(_message.Message):
    __slots__ = ("nodes",)
    NODES_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[_common_pb2.NodeStatus]
    def __init__(self, nodes: _Optional[_Iterable[_Union[_common_pb2.NodeStatus, _Mapping]]] = ...) -> None: ...
