"""Every message of the federation as a domain type: the tree protocol's steps and answers,
the querier's jobs and results, progress events and per-node stats.

Each class mirrors one message of ``proto/phe_fl/v2/*.proto`` field for field (the proto
file says what each field means); :mod:`phe_fl.federation.serde` converts them. Shares,
keys and ciphertexts stay phe-fl envelope bytes here: only the node that uses one turns it
into a crypto object, against its own context, so a malformed blob is refused there.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

import numpy as np

from phe_fl.errors import ProtocolError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import TensorSpec
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import MLPJob, TrainingJob

__all__ = [
    "NodeStats",
    "NodeStatus",
    "Standardization",
    "Stage",
    "IterationSummary",
    "RoundSummary",
    "ProgressEvent",
    "Purpose",
    # tree steps
    "PublicKeyShareRequest",
    "PublicKeyShareResponse",
    "InstallJointKeyRequest",
    "InstallJointKeyResponse",
    "RelinRoundOneRequest",
    "RelinRoundOneResponse",
    "RelinRoundTwoRequest",
    "RelinRoundTwoResponse",
    "InstallRelinKeyRequest",
    "InstallRelinKeyResponse",
    "RotationKeysShareRequest",
    "RotationKeysShareResponse",
    "InstallRotationKeysRequest",
    "InstallRotationKeysResponse",
    "StatisticsRequest",
    "StatisticsResponse",
    "DecryptStatisticsRequest",
    "DecryptStatisticsResponse",
    "DecryptModelRequest",
    "DecryptModelResponse",
    "KeySwitchRequest",
    "KeySwitchResponse",
    "RefreshShareRequest",
    "RefreshShareResponse",
    "PrepareTrainingRequest",
    "PrepareTrainingResponse",
    "GradientRequest",
    "GradientResponse",
    "FedAvgPrepareRequest",
    "FedAvgPrepareResponse",
    "FedAvgGlobalRequest",
    "FedAvgGlobalResponse",
    "FedAvgTrainRequest",
    "FedAvgTrainResponse",
    "FedAvgUpdateRequest",
    "FedAvgUpdateResponse",
    "FedAvgDecryptRequest",
    "FedAvgDecryptResponse",
    "PingRequest",
    "PingResponse",
    "Failure",
    "TreeStep",
    "TreeResult",
    "TreeRequest",
    "TreeResponse",
    "Hello",
    "Welcome",
    # querier jobs
    "SetupJob",
    "SetupResult",
    "StatsJob",
    "StatsResult",
    "TrainJob",
    "TrainResult",
    "TrainNetworkJob",
    "TrainNetworkResult",
    "Matrix",
    "PrepareNetworkRequest",
    "PrepareNetworkResponse",
    "NetworkMapRequest",
    "NetworkMapResponse",
    "NodeCiphertexts",
    "ModelWeightsJob",
    "ModelWeightsResult",
    "ModelInfoJob",
    "ModelInfoResult",
    "PredictJob",
    "PredictResult",
    "JointKeyJob",
    "JointKeyResult",
    "StatusJob",
    "StatusResult",
    "FedAvgJob",
    "FedAvgResult",
    "FedAvgSpec",
    "TensorSpec",
    "JobInfo",
    "Accepted",
    "WatchJob",
    "WatchResult",
    "ListJobsJob",
    "ListJobsResult",
    "CancelJob",
    "CancelResult",
    "ListModelsJob",
    "ListModelsResult",
    "ModelSummary",
    "Job",
    "JobResult",
    "JobRequest",
]


# -- shared -----------------------------------------------------------------------------------
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
class NodeStatus:
    node_id: str
    parent_id: str
    key_state: str
    schema_digest: str = ""


@dataclass(frozen=True)
class Transform:
    """A transformation every node declared: ``impute_mean`` (nothing for a querier to
    apply: its samples must be complete) or ``scale`` (``columns[i] / values[i]``)."""

    name: str
    columns: tuple[str, ...] = ()
    values: tuple[float, ...] = ()


@dataclass(frozen=True)
class DataSchema:
    """The data a model takes (see ml.proto): a querier's samples go through
    :meth:`prepare` before the model's standardization."""

    features: tuple[str, ...]
    label: str
    classes: tuple[str, ...]
    transforms: tuple[Transform, ...]
    digest: str

    def describe(self) -> str:
        """Two lines for people: the columns, and the transformations a querier's samples
        go through too."""
        steps = "; ".join(
            t.name + "".join(f" {c}/{v:g}" for c, v in zip(t.columns, t.values, strict=True))
            for t in self.transforms
        )
        return (
            f"data: {len(self.features)} features ({', '.join(self.features)}), label "
            f"{self.label!r}\n  declared transformations (applied to your samples too): "
            f"{steps or 'none'}"
        )

    def prepare(self, x: FloatArray) -> FloatArray:
        """Raw samples (columns in :attr:`features` order) through the declared
        transformations."""
        from phe_fl.federation.data import Transform as Declared
        from phe_fl.federation.data import apply_transforms

        declared = [
            Declared(t.name, tuple(zip(t.columns, t.values, strict=True))) for t in self.transforms
        ]
        return apply_transforms(x, declared, self.features)


@dataclass(frozen=True)
class Standardization:
    """Pooled per-feature mean and standard deviation (public)."""

    mean: FloatArray
    std: FloatArray

    def apply(self, x: FloatArray) -> FloatArray:
        return (x - self.mean) / self.std


class Stage(enum.Enum):
    """What a progress event reports (the proto enum ``Stage``, by name)."""

    KEYGEN_PUBLIC_KEY = "public key"
    KEYGEN_RELIN_ROUND_ONE = "relinearization key, round 1"
    KEYGEN_RELIN_ROUND_TWO = "relinearization key, round 2"
    KEYGEN_ROTATION_KEYS = "rotation keys"
    KEYGEN_RESUMED = "resumed an interrupted key generation"
    KEYGEN_DONE = "collective keys installed on every node"
    STATISTICS = "encrypted local statistics"
    KEY_SWITCH = "key switch to the querier"
    PREPARE_STATISTICS = "PREPARE: encrypted statistics"
    PREPARE_DECRYPT = "PREPARE: decrypt pooled statistics"
    VALIDATE_SHARDS = "validate shards"
    MAP_COMBINE = "MAP+COMBINE"
    REFRESH = "collective refresh"
    ITERATION_DONE = "iteration"
    MODEL_DECRYPTION = "model decryption"
    EVALUATE = "evaluate encrypted queries"
    INSTALL_KEYS = "keys installed down the tree"
    WAITING_FOR_NODES = "waiting for every node to be connected"
    RESUMED = "resumed from the last checkpoint"
    FEDAVG_PREPARE = "FedAvg: load the app"
    FEDAVG_GLOBAL = "FedAvg: global parameters down the tree"
    FEDAVG_TRAIN = "FedAvg: local training"
    FEDAVG_AGGREGATE = "FedAvg: encrypted sum and its decryption"
    ROUND_DONE = "round"

    @property
    def label(self) -> str:
        return str(self.value)


@dataclass(frozen=True)
class IterationSummary:
    refreshes: int
    levels_left: int
    levels_sent: int
    levels_dropped: int
    margin_low: float = 0.0
    margin_high: float = 0.0


@dataclass(frozen=True)
class RoundSummary:
    examples: int
    loss: float
    train_seconds: float = 0.0
    aggregate_seconds: float = 0.0
    update_bytes: int = 0


@dataclass(frozen=True)
class ProgressEvent:
    """One round over the tree (``nodes``: each node's own stats) or one root step."""

    stage: Stage
    seconds: float = 0.0
    iteration: int = 0
    iterations: int = 0
    index: int = 0
    count: int = 0
    nodes: tuple[NodeStats, ...] = ()
    summary: IterationSummary | None = None
    round: RoundSummary | None = None


class Purpose(enum.Enum):
    """What a key switch to a querier releases (the proto enum ``KeySwitchRequest.Purpose``)."""

    POOLED_STATISTICS = "pooled statistics"
    PREDICTION = "prediction"


# -- the tree protocol: one request and one response per step --------------------------------
@dataclass(frozen=True)
class PublicKeyShareRequest:
    crp: bytes


@dataclass(frozen=True)
class PublicKeyShareResponse:
    share: bytes


@dataclass(frozen=True)
class InstallJointKeyRequest:
    key: bytes


@dataclass(frozen=True)
class InstallJointKeyResponse:
    installed_by: tuple[str, ...]


@dataclass(frozen=True)
class RelinRoundOneRequest:
    crp: bytes


@dataclass(frozen=True)
class RelinRoundOneResponse:
    share: bytes


@dataclass(frozen=True)
class RelinRoundTwoRequest:
    round_one_aggregate: bytes


@dataclass(frozen=True)
class RelinRoundTwoResponse:
    share: bytes


@dataclass(frozen=True)
class InstallRelinKeyRequest:
    key: bytes


@dataclass(frozen=True)
class InstallRelinKeyResponse:
    installed_by: tuple[str, ...]


@dataclass(frozen=True)
class RotationKeysShareRequest:
    crp: bytes
    indices: tuple[int, ...]


@dataclass(frozen=True)
class RotationKeysShareResponse:
    share: bytes


@dataclass(frozen=True)
class InstallRotationKeysRequest:
    key: bytes


@dataclass(frozen=True)
class InstallRotationKeysResponse:
    installed_by: tuple[str, ...]


@dataclass(frozen=True)
class StatisticsRequest:
    n_features: int


@dataclass(frozen=True)
class StatisticsResponse:
    encrypted_sums: bytes


@dataclass(frozen=True)
class DecryptStatisticsRequest:
    ciphertext: bytes


@dataclass(frozen=True)
class DecryptStatisticsResponse:
    share: bytes


@dataclass(frozen=True)
class DecryptModelRequest:
    model_id: str
    ciphertext: bytes


@dataclass(frozen=True)
class DecryptModelResponse:
    share: bytes


@dataclass(frozen=True)
class KeySwitchRequest:
    """A batch of results to switch to the querier's key, in one round."""

    purpose: Purpose
    querier: str
    querier_key: bytes
    ciphertexts: tuple[bytes, ...]


@dataclass(frozen=True)
class KeySwitchResponse:
    shares: tuple[bytes, ...]


@dataclass(frozen=True)
class RefreshShareRequest:
    """A batch of prepared ciphertexts to refresh, one CRP each."""

    ciphertexts: tuple[bytes, ...]
    crps: tuple[bytes, ...]


@dataclass(frozen=True)
class RefreshShareResponse:
    shares: tuple[bytes, ...]


@dataclass(frozen=True)
class PrepareTrainingRequest:
    job: TrainingJob
    standardization: Standardization | None


@dataclass(frozen=True)
class PrepareTrainingResponse:
    global_batch: int
    total_rows: int = 0


@dataclass(frozen=True)
class GradientRequest:
    iteration: int
    global_batch: int
    weights: bytes
    sample_rate: float = 0.0


@dataclass(frozen=True)
class MarginMomentRequest:
    iteration: int
    global_batch: int
    weights: bytes
    sample_rate: float
    power: int


@dataclass(frozen=True)
class MarginMomentResponse:
    moment: bytes


@dataclass(frozen=True)
class GradientResponse:
    gradient: bytes


@dataclass(frozen=True)
class PrepareNetworkRequest:
    job: MLPJob
    standardization: Standardization | None


@dataclass(frozen=True)
class PrepareNetworkResponse:
    global_batch: int
    total_rows: int = 0


@dataclass(frozen=True)
class NodeCiphertexts:
    """One node's ciphertexts in a message that carries several nodes'."""

    node_id: str
    ciphertexts: tuple[bytes, ...]


@dataclass(frozen=True)
class NetworkMapRequest:
    """One stage of a network's MAP (:mod:`phe_fl.ml.staging`): stage 0 carries the
    weights, later stages each party's refreshed intermediates."""

    iteration: int
    global_batch: int
    weights: tuple[bytes, ...]
    stage: int = 0
    refreshed: tuple[NodeCiphertexts, ...] = ()


@dataclass(frozen=True)
class NetworkMapResponse:
    gradients: tuple[bytes, ...]
    """Per layer, summed over the subtree's parties that finished at this stage."""
    finished: int
    pending: tuple[NodeCiphertexts, ...]
    """The subtree's parties that wait for refreshed intermediates."""


@dataclass(frozen=True)
class FedAvgPrepareRequest:
    job: FedAvgSpec


@dataclass(frozen=True)
class FedAvgPrepareResponse:
    layout_digest: str
    n_parameters: int
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class FedAvgGlobalRequest:
    round: int
    offset: int
    values: bytes


@dataclass(frozen=True)
class FedAvgGlobalResponse:
    installed_by: tuple[str, ...]


@dataclass(frozen=True)
class FedAvgTrainRequest:
    round: int
    global_digest: bytes


@dataclass(frozen=True)
class FedAvgTrainResponse:
    examples: int
    loss_sum: float
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class FedAvgUpdateRequest:
    round: int
    first_chunk: int
    chunks: int
    total_examples: int


@dataclass(frozen=True)
class FedAvgUpdateResponse:
    ciphertexts: tuple[bytes, ...]
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class FedAvgDecryptRequest:
    """Decryption shares of the round's summed chunks, sent without their c0 (the root
    adds it back): half the bytes, and the guard reads exactly what a share depends on."""

    round: int
    first_chunk: int
    masked: tuple[bytes, ...]
    contributors: tuple[str, ...]


@dataclass(frozen=True)
class FedAvgDecryptResponse:
    shares: tuple[bytes, ...]


@dataclass(frozen=True)
class PingRequest:
    pass


@dataclass(frozen=True)
class PingResponse:
    nodes: tuple[NodeStatus, ...]


TreeStep = (
    PublicKeyShareRequest
    | InstallJointKeyRequest
    | RelinRoundOneRequest
    | RelinRoundTwoRequest
    | InstallRelinKeyRequest
    | RotationKeysShareRequest
    | InstallRotationKeysRequest
    | StatisticsRequest
    | DecryptStatisticsRequest
    | DecryptModelRequest
    | KeySwitchRequest
    | RefreshShareRequest
    | PrepareTrainingRequest
    | GradientRequest
    | MarginMomentRequest
    | PrepareNetworkRequest
    | NetworkMapRequest
    | FedAvgPrepareRequest
    | FedAvgGlobalRequest
    | FedAvgTrainRequest
    | FedAvgUpdateRequest
    | FedAvgDecryptRequest
    | PingRequest
)


@dataclass(frozen=True)
class Failure:
    """A subtree's refusal or failure: ``code`` is a gRPC status name (see status.py)."""

    code: str
    message: str


TreeResult = (
    Failure
    | PublicKeyShareResponse
    | InstallJointKeyResponse
    | RelinRoundOneResponse
    | RelinRoundTwoResponse
    | InstallRelinKeyResponse
    | RotationKeysShareResponse
    | InstallRotationKeysResponse
    | StatisticsResponse
    | DecryptStatisticsResponse
    | DecryptModelResponse
    | KeySwitchResponse
    | RefreshShareResponse
    | PrepareTrainingResponse
    | GradientResponse
    | MarginMomentResponse
    | PrepareNetworkResponse
    | NetworkMapResponse
    | FedAvgPrepareResponse
    | FedAvgGlobalResponse
    | FedAvgTrainResponse
    | FedAvgUpdateResponse
    | FedAvgDecryptResponse
    | PingResponse
)


@dataclass(frozen=True)
class TreeRequest:
    """One step of one job, asked of a subtree; ``deadline_s`` is what the asker waits."""

    job_id: str
    params: str
    n_parties: int
    step: TreeStep
    deadline_s: float = 0.0
    job_kind: str = ""


@dataclass(frozen=True)
class TreeResponse:
    result: TreeResult
    stats: tuple[NodeStats, ...] = ()


@dataclass(frozen=True)
class Hello:
    node_id: str
    params: str
    n_parties: int


@dataclass(frozen=True)
class Welcome:
    parent_id: str


MAX_QUERIES = 256
"""Encrypted query ciphertexts one predict job may carry (the root refuses a request of
more bytes); a querier splits a larger input into several jobs."""


# -- the querier's jobs: one request and one result per kind ---------------------------------
@dataclass(frozen=True)
class SetupJob:
    rotations: tuple[int, ...] = ()


@dataclass(frozen=True)
class SetupResult:
    keygen_job_id: str


@dataclass(frozen=True)
class StatsJob:
    querier_key: bytes
    n_features: int


@dataclass(frozen=True)
class StatsResult:
    encrypted_sums: bytes


@dataclass(frozen=True)
class TrainJob:
    spec: TrainingJob
    standardize: bool = True
    margin_check_every: int = 0


@dataclass(frozen=True)
class TrainResult:
    model_id: str
    refreshes: tuple[int, ...]
    standardization: Standardization | None
    schema: DataSchema | None = None
    dp_epsilon: float = 0.0
    dp_delta: float = 0.0


@dataclass(frozen=True)
class TrainNetworkJob:
    spec: MLPJob
    standardize: bool = True


@dataclass(frozen=True)
class TrainNetworkResult:
    model_id: str
    root_refreshes: tuple[int, ...]
    party_refreshes: tuple[int, ...]
    map_rounds: tuple[int, ...]
    standardization: Standardization | None
    schema: DataSchema | None = None


@dataclass(frozen=True)
class ModelWeightsJob:
    model_id: str


@dataclass(frozen=True)
class Matrix:
    rows: int
    cols: int
    values: FloatArray

    @classmethod
    def of(cls, a: FloatArray) -> Matrix:
        return cls(int(a.shape[0]), int(a.shape[1]), np.asarray(a, dtype=np.float64).ravel())

    def array(self) -> FloatArray:
        if self.values.size != self.rows * self.cols:
            raise ProtocolError(
                f"a {self.rows} x {self.cols} matrix with {self.values.size} values"
            )
        return self.values.reshape(self.rows, self.cols)


@dataclass(frozen=True)
class ModelWeightsResult:
    weights: FloatArray
    """A GLM's weights (empty for a network)."""
    layers: tuple[Matrix, ...] = ()
    """A network's ``W_1 .. W_L`` (bias column last; empty for a GLM)."""


def _one_model(info: ModelInfoResult | ModelSummary) -> None:
    """A model is a GLM (``spec``) or a network (``network``): exactly one is given."""
    if (info.spec is None) == (info.network is None):
        raise ProtocolError(
            f"{type(info).__name__} lacks its spec (a GLM's job) or network (a network's job)"
            if info.spec is None
            else f"{type(info).__name__} carries both a GLM's spec and a network's job"
        )


@dataclass(frozen=True)
class ModelInfoJob:
    model_id: str


@dataclass(frozen=True)
class ModelInfoResult:
    spec: TrainingJob | None
    """A GLM's job (None for a network)."""
    refreshes: tuple[int, ...]
    standardization: Standardization | None
    schema: DataSchema | None = None
    network: MLPJob | None = None
    """A network's job (None for a GLM)."""

    def __post_init__(self) -> None:
        _one_model(self)


@dataclass(frozen=True)
class PredictJob:
    model_id: str
    querier_key: bytes
    queries: tuple[bytes, ...]
    n_samples: int = 0
    """A network's queries: the rows they hold (its masks need the count)."""


@dataclass(frozen=True)
class PredictResult:
    scores: tuple[bytes, ...]


@dataclass(frozen=True)
class JointKeyJob:
    pass


@dataclass(frozen=True)
class JointKeyResult:
    key: bytes


@dataclass(frozen=True)
class StatusJob:
    pass


@dataclass(frozen=True)
class StatusResult:
    nodes: tuple[NodeStatus, ...]
    missing: tuple[str, ...] = ()
    params: str = ""
    schema: DataSchema | None = None
    privacy_budget: float = 0.0
    privacy_spent: float = 0.0
    privacy_delta: float = 0.0


@dataclass(frozen=True)
class FedAvgJob:
    spec: FedAvgSpec


@dataclass(frozen=True)
class FedAvgResult:
    model_id: str
    tensors: tuple[TensorSpec, ...]
    parameters: bytes  # float32 little-endian; empty: the root keeps the model
    rounds: tuple[RoundSummary, ...] = ()
    dp_epsilon: float = 0.0  # differentially private jobs: what the job spent, at dp_delta
    dp_delta: float = 0.0


@dataclass(frozen=True)
class JobInfo:
    """A job's record at the root (see query.proto for the states)."""

    job_id: str
    kind: str
    querier: str
    state: str
    created: float = 0.0
    updated: float = 0.0
    error: str = ""
    iterations_done: int = 0
    resumes: int = 0
    started: float = 0.0


@dataclass(frozen=True)
class Accepted:
    """The first reply to a submitted job."""

    job: JobInfo


@dataclass(frozen=True)
class WatchJob:
    job_id: str


@dataclass(frozen=True)
class WatchResult:
    job: JobInfo


@dataclass(frozen=True)
class ListJobsJob:
    pass


@dataclass(frozen=True)
class ListJobsResult:
    jobs: tuple[JobInfo, ...]


@dataclass(frozen=True)
class CancelJob:
    job_id: str


@dataclass(frozen=True)
class CancelResult:
    job: JobInfo


@dataclass(frozen=True)
class ListModelsJob:
    pass


@dataclass(frozen=True)
class ModelSummary:
    model_id: str
    spec: TrainingJob | None
    querier: str
    created: float
    refreshes: tuple[int, ...]
    network: MLPJob | None = None

    def __post_init__(self) -> None:
        _one_model(self)


@dataclass(frozen=True)
class ListModelsResult:
    models: tuple[ModelSummary, ...]


Job = (
    SetupJob
    | StatsJob
    | TrainJob
    | ModelWeightsJob
    | ModelInfoJob
    | PredictJob
    | JointKeyJob
    | StatusJob
    | FedAvgJob
    | TrainNetworkJob
    | WatchJob
    | ListJobsJob
    | CancelJob
    | ListModelsJob
)
JobResult = (
    SetupResult
    | StatsResult
    | TrainResult
    | ModelWeightsResult
    | ModelInfoResult
    | PredictResult
    | JointKeyResult
    | StatusResult
    | FedAvgResult
    | TrainNetworkResult
    | WatchResult
    | ListJobsResult
    | CancelResult
    | ListModelsResult
)


@dataclass(frozen=True)
class JobRequest:
    job_id: str
    params: str
    job: Job = field(default_factory=StatusJob)
    detach: bool = False
