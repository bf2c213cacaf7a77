"""What every training job shares, declared once and checked before any key work starts.

Key generation is the expensive and collective part of a job; a typo in the config or a
shard with the wrong shape must be refused before every party has spent minutes on
keys. Every check raises :class:`~phe_fl.errors.ParameterError` with a message that says
which party or field is wrong and what to change.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Generic, Protocol, TypeVar

import numpy as np
import numpy.typing as npt

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.params import PARAMETER_SETS

__all__ = [
    "DEFAULT_PARAMS",
    "Shard",
    "CommonFields",
    "check_common_fields",
    "require_job_params",
    "ShardWorker",
    "ShardSpec",
    "validate_shards",
    "validate_shard",
    "batch_rows",
    "is_int",
    "is_real",
]


Shard = tuple[FloatArray, FloatArray]
"""One party's local data: features (n x f) and targets (n,)."""

DEFAULT_PARAMS = "n15-depth11-128"
"""The parameter set a job runs on unless it names one: 128-bit, 8 levels between refreshes
(two iterations of the default degree-5 activation), 16384 slots. The insecure test set is
never a default; tests pass it explicitly."""


class CommonFields(Protocol):
    """The fields every job (GLM or network) declares and checks the same way."""

    @property
    def n_features(self) -> int: ...

    @property
    def learning_rate(self) -> float: ...

    @property
    def momentum(self) -> float: ...

    @property
    def nesterov(self) -> bool: ...

    @property
    def batch_size(self) -> int: ...

    @property
    def iterations(self) -> int: ...

    @property
    def activation_method(self) -> str: ...

    @property
    def params(self) -> str: ...

    @property
    def allow_model_decryption(self) -> bool: ...


def check_common_fields(job: CommonFields, bad: Callable[[str, str], ParameterError]) -> None:
    """Raise ``bad(field, why)`` for the first shared field that is not valid."""
    if not is_int(job.n_features) or job.n_features < 1:
        raise bad("n_features", f"must be a positive integer, got {job.n_features!r}")
    if not is_real(job.learning_rate) or not job.learning_rate > 0:
        raise bad("learning_rate", f"must be a finite number > 0, got {job.learning_rate!r}")
    if not is_real(job.momentum) or not 0.0 <= job.momentum < 1.0:
        raise bad("momentum", f"must be a number in [0, 1), got {job.momentum!r}")
    if not isinstance(job.nesterov, bool):
        raise bad("nesterov", f"must be True or False, got {job.nesterov!r}")
    if not is_int(job.batch_size) or job.batch_size < 1:
        raise bad("batch_size", f"must be a positive integer, got {job.batch_size!r}")
    if not is_int(job.iterations) or job.iterations < 0:
        raise bad("iterations", f"must be an integer >= 0, got {job.iterations!r}")
    if job.activation_method not in ("lstsq", "chebyshev"):
        raise bad(
            "activation_method", f"must be 'lstsq' or 'chebyshev', got {job.activation_method!r}"
        )
    if job.params not in PARAMETER_SETS:
        known = ", ".join(sorted(PARAMETER_SETS))
        raise bad("params", f"{job.params!r} is not a known parameter set ({known})")
    if not isinstance(job.allow_model_decryption, bool):
        raise bad("allow_model_decryption", "must be True or False")


def require_job_params(job: CommonFields, running: str) -> None:
    """Refuse to train a job on a federation running another parameter set."""
    if running != job.params:
        raise ParameterError(
            f"federation runs parameter set {running!r}, the job declares {job.params!r}"
        )


J = TypeVar("J", bound=CommonFields)


class ShardWorker(Generic[J]):
    """What every model's MAP worker holds: its index, its job (with its own consent to
    decrypt the model) and its validated rows, which never leave it."""

    def __init__(self, index: int, job: J, x: FloatArray, y: FloatArray) -> None:
        self._index = index
        self.job = job
        self._x = x
        self._y = y

    @property
    def index(self) -> int:
        return self._index

    @property
    def allows_model_decryption(self) -> bool:
        return self.job.allow_model_decryption

    @property
    def n_samples(self) -> int:
        return int(self._x.shape[0])

    def batch_size_at(self, iteration: int) -> int:
        return min(self.job.batch_size, self.n_samples)


class ShardSpec(Protocol):
    """What shard validation needs from a job (GLM or network)."""

    @property
    def n_features(self) -> int: ...

    @property
    def model(self) -> str: ...

    @property
    def label_values(self) -> tuple[float, ...] | None: ...


def validate_shards(job: ShardSpec, shards: Sequence[Shard]) -> list[Shard]:
    """Check every party's data against the job; return float64 copies.

    Errors name the party (0-based index) and the problem: shape, feature count, NaN or
    infinite values, empty shard, labels outside the job's classes ({0, 1} for logistic
    regression, ``0 .. c-1`` for networks).
    """
    if len(shards) < 1:
        raise ParameterError("training job: no party shards given")
    return [validate_shard(job, shard, party=i) for i, shard in enumerate(shards)]


def validate_shard(job: ShardSpec, shard: Shard, *, party: int) -> Shard:
    """Check one party's data (what each party runs on its own before key work)."""
    where = f"party {party}"
    try:
        x_raw, y_raw = shard
    except (TypeError, ValueError):
        raise ParameterError(f"{where}: shard must be a pair (features, labels)") from None
    try:
        x = np.array(x_raw, dtype=np.float64)
        y = np.array(y_raw, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{where}: data is not numeric ({exc})") from None
    if x.ndim != 2:
        raise ParameterError(f"{where}: features must be a 2-D array, got {x.ndim}-D")
    if x.shape[0] == 0:
        raise ParameterError(f"{where}: shard is empty (0 samples)")
    if x.shape[1] != job.n_features:
        raise ParameterError(
            f"{where}: shard has {x.shape[1]} features, the job declares {job.n_features}"
        )
    if y.ndim != 1 or y.shape[0] != x.shape[0]:
        raise ParameterError(
            f"{where}: labels must be a 1-D array of {x.shape[0]} values, got shape {y.shape}"
        )
    for name, arr in (("features", x), ("labels", y)):
        bad = ~np.isfinite(arr)
        if bad.any():
            idx = np.argwhere(bad)[0].tolist()
            raise ParameterError(
                f"{where}: {name} contain {int(bad.sum())} NaN or infinite value(s), first "
                f"at index {tuple(idx)}"
            )
    allowed = job.label_values
    if allowed is not None:
        wrong = ~np.isin(y, allowed)
        if wrong.any():
            shown = (
                "{"
                + ", ".join(f"{v:g}" for v in allowed[:10])
                + ("..." if len(allowed) > 10 else "")
                + "}"
            )
            raise ParameterError(
                f"{where}: {job.model} needs labels in {shown}, found "
                f"{sorted(set(y[wrong].tolist()))[:5]} ({int(wrong.sum())} sample(s))"
            )
    return x, y


def is_int(v: object) -> bool:
    return isinstance(v, int | np.integer) and not isinstance(v, bool)


def is_real(v: object) -> bool:
    return (
        isinstance(v, int | float | np.integer | np.floating)
        and not isinstance(v, bool)
        and math.isfinite(float(v))
    )


def batch_rows(n_samples: int, batch_size: int, iteration: int) -> npt.NDArray[np.intp]:
    """Rows of a shard used at ``iteration``: consecutive windows that wrap around, so
    every party and the twin agree on the batches without exchanging anything."""
    b = min(batch_size, n_samples)
    start = (iteration * b) % n_samples
    return (start + np.arange(b)) % n_samples
