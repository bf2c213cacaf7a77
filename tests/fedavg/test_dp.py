"""Differentially private FedAvg rounds on their own (phe_fl.fedavg.dp): per-example
clipping, one draw per round, the noise share's size, what a job must declare."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from phe_fl.errors import AppError, ParameterError
from phe_fl.fedavg.dp import clipped_gradient_sum, dp_update
from phe_fl.fedavg.examples import digits_mlp
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import values_digest
from phe_fl.fedavg.site import Site, layout_of
from phe_fl.fedavg.twin import plain_fedavg
from phe_fl.federation.config import FedAvgApps, load_node_config
from phe_fl.federation.fedavg import FedAvgParty
from phe_fl.federation.local import write_configs
from phe_fl.federation.store import NodeStore, StoreIdentity
from phe_fl.mhe import INSECURE_TEST
from phe_fl.mhe.simulation import LocalFederation
from phe_fl.privacy.accounting import epsilon_spent

EXAMPLE = "phe_fl.fedavg.examples:digits_mlp"
DP = FedAvgSpec(
    "digits", rounds=3, learning_rate=0.5, dp_noise_multiplier=1.0, dp_clip=1.0, dp_sample_rate=0.1
)


def _app(shard: int = 0, shards: int = 3) -> object:
    return digits_mlp({"shard": shard, "shards": shards, "rows": 200, "threads": 1})


def test_clipped_gradient_sum_is_the_sum_of_each_rows_clipped_gradient() -> None:
    app = _app()
    model = app.model()  # type: ignore[attr-defined]
    layout = layout_of(model)
    x, y = app.examples()  # type: ignore[attr-defined]
    x, y = x[:40], y[:40]
    clip = 0.5
    got = clipped_gradient_sum(model, layout, x, y, app.loss, clip)  # type: ignore[attr-defined]
    want = np.zeros(layout.size)
    clipped = 0
    for i in range(len(x)):
        model.zero_grad()
        torch.nn.functional.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).double().numpy()
        norm = np.linalg.norm(g)
        clipped += norm > clip
        want += g * min(1.0, clip / norm)
    assert clipped > 0  # the clip did something
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_without_noise_a_full_batch_step_is_gradient_descent_on_the_mean_loss() -> None:
    app = _app()
    model = app.model()  # type: ignore[attr-defined]
    layout = layout_of(model)
    spec = dataclasses.replace(DP, dp_noise_multiplier=1e-12, dp_clip=1e6, dp_sample_rate=1.0)
    update, rows = dp_update(app, model, layout, spec, 1, seed=7, n_parties=3, who="t")  # type: ignore[arg-type]
    x, y = app.examples()  # type: ignore[attr-defined]
    model.zero_grad()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    g = torch.cat([p.grad.reshape(-1) for p in model.parameters()]).numpy()
    assert rows == len(x)
    np.testing.assert_allclose(update, -spec.learning_rate * g, atol=1e-6)


def test_a_round_draws_once_and_the_noise_share_has_the_declared_size() -> None:
    app = _app()
    model = app.model()  # type: ignore[attr-defined]
    layout = layout_of(model)
    n = 3

    def step(spec: FedAvgSpec, seed: int, round_: int) -> np.ndarray:
        u, _ = dp_update(app, model, layout, spec, round_, seed=seed, n_parties=n, who="t")  # type: ignore[arg-type]
        return u.astype(np.float64)

    noisy = step(DP, 11, 1)
    np.testing.assert_array_equal(noisy, step(DP, 11, 1))  # the same round: the same draws
    assert not np.array_equal(noisy, step(DP, 11, 2))
    assert not np.array_equal(noisy, step(DP, 12, 1))
    # the same seed and round without the noise: the same batch, so the difference is the
    # noise share, -lr * sigma * C / sqrt(N) * z / (q * rows) on every parameter
    quiet = step(dataclasses.replace(DP, dp_noise_multiplier=1e-12), 11, 1)
    rows = len(app.examples()[0])  # type: ignore[attr-defined]
    expected = DP.learning_rate * DP.dp_noise_multiplier * DP.dp_clip / math.sqrt(n)
    expected /= DP.dp_sample_rate * rows
    assert float(np.std(noisy - quiet)) == pytest.approx(expected, rel=0.05)


def test_a_dp_job_declares_its_sampling_and_one_step_per_round() -> None:
    with pytest.raises(ParameterError, match="dp_sample_rate: a differentially private"):
        FedAvgSpec("digits", dp_noise_multiplier=1.0)
    with pytest.raises(ParameterError, match="epochs: a differentially private round"):
        FedAvgSpec("digits", epochs=2, dp_noise_multiplier=1.0, dp_sample_rate=0.1)
    with pytest.raises(ParameterError, match="dp_sample_rate: 0.1 is set but"):
        FedAvgSpec("digits", dp_sample_rate=0.1)
    with pytest.raises(ParameterError, match="dp_clip"):
        FedAvgSpec("digits", dp_clip=0.0)
    with pytest.raises(ParameterError, match="dp_noise_multiplier"):
        FedAvgSpec("digits", dp_noise_multiplier=float("nan"), dp_sample_rate=0.1)
    assert FedAvgSpec("digits").epsilon(1e-5) == math.inf
    assert DP.epsilon(1e-5) == pytest.approx(epsilon_spent(1.0, 0.1, 3, 1e-5))


class _NoExamples:
    """An app with Flower's three functions only."""

    def __init__(self, options: object) -> None:
        self.inner = _app()

    def model(self) -> torch.nn.Module:
        return self.inner.model()  # type: ignore[attr-defined, no-any-return]

    def fit(self, model: torch.nn.Module, config: object) -> object:
        return self.inner.fit(model, config)  # type: ignore[attr-defined]

    def evaluate(self, model: torch.nn.Module) -> object:
        return self.inner.evaluate(model)  # type: ignore[attr-defined]


def test_an_app_without_examples_and_loss_is_refused_for_a_dp_job() -> None:
    site = Site("node-1", {"plain": f"{__name__}:_NoExamples"}, {})
    with pytest.raises(AppError, match=r"node node-1.*needs the app to provide examples\(\)"):
        site.prepare("j", dataclasses.replace(DP, app="plain"), dp_seed=1)
    site.prepare("j2", FedAvgSpec("plain"))  # without DP the app is fine


def test_the_twin_trains_a_dp_job_and_the_seed_decides_the_noise() -> None:
    def run(seeds: list[int]) -> np.ndarray:
        sites = [
            Site(f"s{i}", {"digits": EXAMPLE}, {"shard": i, "shards": 3, "threads": 1}, n_parties=3)
            for i in range(3)
        ]
        _, rounds = plain_fedavg(sites, DP, dp_seeds=seeds)
        assert all(r.loss == 0.0 for r in rounds)  # a DP round releases no batch loss
        return rounds[-1].global_values

    a = run([1, 2, 3])
    np.testing.assert_array_equal(a, run([1, 2, 3]))
    assert not np.array_equal(a, run([1, 2, 4]))
    with pytest.raises(ValueError, match="needs 3 dp_seeds"):
        plain_fedavg([Site("s", {"digits": EXAMPLE}, {}, n_parties=3)] * 3, DP)


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 3)


def test_a_node_keeps_its_dp_seed_across_a_restart(tmp_path: Path, fed: LocalFederation) -> None:
    """A restarted node trains a round again with the same batch and noise: its seed is in
    its state store, drawn once at PREPARE."""
    configs, _ = write_configs(tmp_path, 3, params=INSECURE_TEST.name, certificates=False)
    apps = FedAvgApps(apps={"digits": EXAMPLE}, options={"shard": 1, "shards": 3, "threads": 1})
    config = dataclasses.replace(load_node_config(configs[1]), fedavg=apps)
    identity = StoreIdentity("node-1", INSECURE_TEST.name, "fed")

    def trained_update(party: FedAvgParty) -> np.ndarray:
        party.prepare("job", DP)
        values = party.initial("job")
        party.site.receive_global("job", 1, 0, values.astype("<f4").tobytes())
        update, _ = party.site.fit("job", 1, values_digest(values))
        return update

    first = FedAvgParty(config, NodeStore(tmp_path / "state", identity), fed.ctx)
    before = trained_update(first)
    first.save("job")
    seed = first.job("job").dp_seed
    assert seed is not None and seed.bit_length() > 64
    again = FedAvgParty(config, NodeStore(tmp_path / "state", identity), fed.ctx)
    assert again.job("job").dp_seed == seed
    np.testing.assert_array_equal(trained_update(again), before)
    other = FedAvgParty(config, NodeStore(tmp_path / "other", identity), fed.ctx)
    assert not np.array_equal(trained_update(other), before)  # another node, another seed
