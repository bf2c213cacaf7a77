"""Job configs and party data are refused, with a clear message, before any key work."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from phe_fl.errors import ParameterError
from phe_fl.mhe import INSECURE_TEST, N14_128, N15_128
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.ml import GLMParty, TrainingJob, validate_shards
from phe_fl.testing import setup_local


def _shards(n_parties: int = 3, n: int = 8, f: int = 4) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        (rng.normal(size=(n, f)), (rng.random(n) > 0.5).astype(float)) for _ in range(n_parties)
    ]


def test_defaults_fit_a_128_bit_set() -> None:
    job = TrainingJob(n_features=4)
    assert job.parameter_set.secure and job.params == N15_128.name
    assert job.depth_per_iteration == 4 <= job.parameter_set.usable_levels == 8
    assert TrainingJob(n_features=4, params=INSECURE_TEST.name).depth_per_iteration == 4


def test_too_deep_activation_says_what_to_change() -> None:
    with pytest.raises(ParameterError) as info:
        TrainingJob(n_features=4, activation_degree=9, params=INSECURE_TEST.name)  # 4 + 1 > 4
    msg = str(info.value)
    print(msg)
    assert "needs 5 levels" in msg and "only 4 usable levels" in msg
    assert "lower activation_degree to at most 7" in msg
    assert "mult_depth >= 8" in msg and N15_128.name in msg


def test_too_deep_for_n14() -> None:
    with pytest.raises(ParameterError, match="at most 1") as info:
        TrainingJob(n_features=4, params=N14_128.name)
    assert N15_128.name in str(info.value)
    TrainingJob(n_features=4, params=N14_128.name, activation_degree=1)  # fits
    TrainingJob(n_features=4, params=N14_128.name, model="linear")  # identity: depth 1


def test_too_many_features_for_the_ring() -> None:
    with pytest.raises(ParameterError, match="larger ring"):
        TrainingJob(n_features=1500, params=INSECURE_TEST.name)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n_features", 0),
        ("model", "svm"),
        ("learning_rate", 0.0),
        ("learning_rate", float("nan")),
        ("batch_size", 0),
        ("iterations", -1),
        ("activation_degree", 2.5),
        ("activation_bound", -1.0),
        ("activation_method", "spline"),
        ("params", "n99"),
        ("allow_model_decryption", "yes"),
    ],
)
def test_bad_fields_are_named(field: str, value: Any) -> None:
    kwargs: dict[str, Any] = {"n_features": 4, field: value}
    with pytest.raises(ParameterError, match=field):
        TrainingJob(**kwargs)


@pytest.mark.parametrize(
    ("party", "mutate", "message"),
    [
        (1, lambda x, y: (x[:, :3], y), "party 1: shard has 3 features, the job declares 4"),
        (2, lambda x, y: (x[:0], y[:0]), "party 2: shard is empty"),
        (0, lambda x, y: (np.where(x > 1, np.nan, x), y), "party 0: features contain"),
        (1, lambda x, y: (x, np.where(y == 1, 2.0, y)), r"party 1: .*labels in \{0, 1\}"),
        (2, lambda x, y: (x, y[:-1]), "party 2: labels must be a 1-D array of 8"),
        (0, lambda x, y: (x[0], y), "party 0: features must be a 2-D array"),
        (1, lambda x, y: (x, np.full_like(y, np.inf)), "party 1: labels contain"),
    ],
)
def test_bad_shards_name_the_party(party: int, mutate: Any, message: str) -> None:
    shards = _shards()
    shards[party] = mutate(*shards[party])
    job = TrainingJob(n_features=4)
    with pytest.raises(ParameterError, match=message):
        validate_shards(job, shards)


def test_party_endpoint_names_its_own_index() -> None:
    x, y = _shards(1)[0]
    with pytest.raises(ParameterError, match="party 5: shard is empty"):
        GLMParty(5, TrainingJob(n_features=4), (x[:0], y[:0]))


def test_linear_regression_accepts_real_targets() -> None:
    shards = [(x, y + 0.25) for x, y in _shards()]
    validate_shards(TrainingJob(n_features=4, model="linear"), shards)
    with pytest.raises(ParameterError, match="labels in"):
        validate_shards(TrainingJob(n_features=4), shards)


def test_setup_validates_before_any_key_work(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_keys(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("key generation started before validation")

    monkeypatch.setattr(LocalFederation, "setup", no_keys)
    shards = _shards()
    shards[2] = (shards[2][0], np.full(8, 0.5))
    with pytest.raises(ParameterError, match="party 2"):
        setup_local(TrainingJob(n_features=4), shards)
    with pytest.raises(ParameterError, match="no party shards"):
        setup_local(TrainingJob(n_features=4), [])
