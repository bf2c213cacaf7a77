"""Networks (multinomial regression, MLPs with 1-3 hidden layers): the alternating
packing checked exactly on the slot simulator, then encrypted runs (INSECURE_TEST, parties
in one process) against the plaintext twin, refreshes inside MAP, oblivious prediction,
consent and bad input."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from phe_fl import testing as testing_mod
from phe_fl.errors import ParameterError
from phe_fl.mhe import INSECURE_TEST, N15_128, Ciphertext, Party
from phe_fl.mhe.keys import QuerierKeyPair
from phe_fl.ml import ModelDecryptionRefused, Trainer
from phe_fl.ml.datasets import load_named
from phe_fl.ml.mlp import (
    MLPJob,
    MLPParty,
    mlp_predict,
    mlp_scores,
    predict_local_mlp,
    train_plaintext_mlp,
)
from phe_fl.ml.mlp import prediction as mlp_mod
from phe_fl.ml.mlp.layout import MLPLayout
from phe_fl.testing import setup_local
from tests.ml.ml_slot_sim import SlotFederation

TOL = 1e-3  # bound on max |encrypted - twin| over every weight


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    x = (x - x.mean(axis=0)) / x.std(axis=0)
    order = np.random.default_rng(7).permutation(len(y))
    return x[order], y[order].astype(np.float64)


def _shards(x: np.ndarray, y: np.ndarray, sizes: tuple[int, ...]) -> list[Any]:
    out, start = [], 0
    for n in sizes:
        out.append((x[start : start + n], y[start : start + n]))
        start += n
    return out


# -- layout -----------------------------------------------------------------------------
def test_layout_geometry_and_rotations() -> None:
    lay = MLPLayout(INSECURE_TEST.slots, (4, 6, 3))  # widest input 6 + bias -> M = 8
    assert (lay.side, lay.block, lay.samples_per_ct) == (8, 64, 32)
    assert lay.input_form(1) == "col" and lay.output_form(1) == "row"
    assert lay.input_form(2) == "row" and lay.output_form(2) == "col"
    expected = {1, 2, 4, -1, -2, -4, 8, 16, 32, -8, -16, -32, 64, 128, 256, 512, 1024}
    assert set(lay.rotation_indices()) == expected
    # rotate-and-adds cover only the units a layer has: 5 inputs, 6 hidden + bias, 3 outputs
    assert lay.input_sum_steps(1) == (1, 2, 4) and lay.input_sum_steps(2) == (8, 16, 32)
    assert lay.forward_replicate_steps(1) == (-1, -2)  # layer 2 reads 3 output units
    assert lay.backward_replicate_steps(1) == (-1, -2, -4)  # W_1 has 5 inputs
    assert lay.output_sum_steps(2) == (1, 2)
    big = MLPLayout(N15_128.slots, (64, 64, 64, 64, 10))  # POSEIDON's widths + bias: M = 128
    assert (big.side, big.samples_per_ct) == (128, 1)
    assert big.sample_sum_steps == ()


@pytest.mark.parametrize("units", [(5, 3, 6, 2), (70, 40, 32, 3)], ids=["one-tile", "tiled"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_weights_round_trip_through_their_orientation(k: int, units: tuple[int, ...]) -> None:
    lay = MLPLayout(INSECURE_TEST.slots, units)
    w = np.random.default_rng(k).normal(size=lay.shape(k))
    tiles = lay.weights_vectors(k, w)
    assert len(tiles) == lay.grid(k)[0] * lay.grid(k)[1]
    assert all(v.size == INSECURE_TEST.slots for v in tiles)
    assert np.array_equal(lay.weights_from_tiles(k, tiles), w)
    v = tiles[0]
    assert np.array_equal(v[: lay.block], v[lay.block : 2 * lay.block])  # replicated


def test_the_tile_side_is_chosen_by_the_cost_of_an_iteration() -> None:
    """POSEIDON's 784-64-64-10 on the 128-bit ring (2^14 slots): the widest tile (128)
    holds one sample, so a batch of 8 is 8 passes; a 64-wide tile holds 4 (2 passes over
    17 weight tiles instead of 9), a 32-wide one 16 (one pass over 59 tiles, each refreshed
    and summed every iteration). In one process 64 was the fastest (25.6 s an iteration
    against 94.8 and 32.4): the count ranks them the same way."""
    units = (784, 64, 64, 10)
    cost = {s: MLPLayout(N15_128.slots, units, side=s).iteration_cost(8) for s in (32, 64, 128)}
    assert cost[64] < cost[32] < cost[128]
    common: dict[str, Any] = dict(n_features=784, n_classes=10, hidden=(64, 64))
    job = MLPJob(**common, batch_size=8, params=N15_128.name)
    assert (job.tile, job.layout.samples_per_ct, job.layout.n_cts) == (64, 4, 17)
    assert MLPJob(**common, batch_size=1, params=N15_128.name).tile == 128  # one sample a party
    assert dataclasses.replace(job, batch_size=1).tile == 64  # chosen once: the model's layout
    assert MLPJob(**common, params=N15_128.name, tile=128).layout.n_cts == 9


@pytest.mark.parametrize("tile", [48, 1, 256, -4, 2.5, "64"])
def test_a_bad_tile_is_refused_naming_the_field(tile: Any) -> None:
    """A power of two from 2 to the widest square the ring holds (128 at 2^14 slots)."""
    with pytest.raises(ParameterError, match="network job: tile"):
        MLPJob(n_features=784, n_classes=10, hidden=(64,), params=N15_128.name, tile=tile)


def test_a_tile_too_narrow_for_the_widths_says_to_widen_it() -> None:
    with pytest.raises(ParameterError, match="more than 1024; use narrower layers or a wider"):
        MLPJob(n_features=784, n_classes=10, hidden=(64,), params=N15_128.name, tile=4)


def test_a_record_from_before_tiles_keeps_the_widest_layout() -> None:
    """A model stored before jobs named their tile was laid out in the widest one: read
    with the cheapest, its weight tiles would be misread."""
    job = MLPJob(n_features=784, n_classes=10, hidden=(64, 64), batch_size=8, params=N15_128.name)
    fields = dataclasses.asdict(job)
    assert MLPJob.from_record(fields) == job
    del fields["tile"]
    old = MLPJob.from_record(fields)
    assert (old.tile, old.layout.n_cts) == (128, 9)
    assert dataclasses.replace(old, tile=job.tile) == job


def test_a_network_of_too_many_tiles_is_refused_naming_its_widths() -> None:
    with pytest.raises(ParameterError, match=r"hidden \[100000\] with 784 features makes"):
        MLPJob(n_features=784, n_classes=10, hidden=(100_000,), params=N15_128.name)


def test_layers_wider_than_the_ring_span_several_tiles() -> None:
    """No width limit: a 2^12 ring's widest tiles are 32 x 32, a 64-wide layer spans tiles."""
    job = MLPJob(n_features=64, n_classes=10, hidden=(64,), params=INSECURE_TEST.name, tile=32)
    lay = job.layout
    assert (lay.side, lay.samples_per_ct) == (32, 2)
    assert lay.grid(1) == (2, 3) and lay.grid(2) == (1, 3)  # 65 inputs: 3 tiles of 32
    assert lay.n_cts == 9 and lay.layer_cts(2) == slice(6, 9)
    # the rotation keys do not grow with the width: they depend on the tile only
    assert set(lay.rotation_indices()) == set(
        MLPLayout(INSECURE_TEST.slots, (31, 10)).rotation_indices()
    )
    x = np.arange(2 * 65, dtype=float).reshape(2, 65)
    tiles = lay.form_vectors(x, "col")
    assert len(tiles) == 3 and tiles[2][:2].tolist() == [64.0, 0.0]  # unit 64: tile 2, column 0


# -- exact check of packing and level bookkeeping on the slot simulator ------------------
@pytest.mark.parametrize(
    ("hidden", "params", "sizes"),
    [
        ((), INSECURE_TEST, (20, 7, 33)),
        ((6,), INSECURE_TEST, (20, 7, 45)),  # 45 samples > 32 per ciphertext: 2 chunks
        ((6, 5), INSECURE_TEST, (20, 11)),
        ((7, 5, 3), INSECURE_TEST, (20, 11)),
        ((40,), INSECURE_TEST, (9, 6)),  # 41 inputs: several input tiles (3 of 16)
        ((32, 40), INSECURE_TEST, (9, 6)),  # a bias-only tile; a hidden layer of 2 tiles
        ((64, 64, 64), N15_128, (5, 4)),  # 3 hidden layers of 64 (POSEIDON's MNIST widths)
    ],
)
def test_slot_simulation_reproduces_the_twin(hidden, params, sizes, iris) -> None:  # type: ignore[no-untyped-def]
    x, y = iris
    n_features = 4
    if hidden == (64, 64, 64):
        rng = np.random.default_rng(3)
        x = rng.normal(size=(20, 63))
        y = rng.integers(0, 10, size=20).astype(np.float64)
        n_features = 63
    elif max(hidden, default=0) >= 32 or hidden == (40,):
        rng = np.random.default_rng(4)
        x = rng.normal(size=(15, 40)) * 0.5
        y = rng.integers(0, 3, size=15).astype(np.float64)
        n_features = 40
    n_classes = int(y.max()) + 1
    job = MLPJob(
        n_features=n_features,
        n_classes=n_classes,
        hidden=hidden,
        iterations=3,
        batch_size=40,
        learning_rate=0.5,
        momentum=0.5,
        params=params.name,
        init_scale=0.5,
    )
    if n_features == 40:  # the first layer spans several ciphertexts
        assert job.layout.grid(1)[1] > 1
    shards = _shards(x, y, sizes)
    workers = [MLPParty(i, job, s) for i, s in enumerate(shards)]
    fed = SlotFederation(workers, params)
    model = Trainer(job, fed).train()  # type: ignore[arg-type]
    twin = train_plaintext_mlp(job, shards)
    lay = job.layout
    got = [
        lay.weights_from_tiles(k, [w.v for w in model.weights[lay.layer_cts(k)]])
        for k in range(1, job.n_layers + 1)
    ]
    for a, b in zip(got, twin.weights, strict=True):
        assert np.max(np.abs(a - b)) < 1e-9
    # padding never becomes live: every slot outside the weights is exactly zero
    for k, w in enumerate(got, 1):
        lives = lay.weights_vectors(k, np.ones(lay.shape(k)))
        rebuilt = lay.weights_vectors(k, w)
        for tile, live, again in zip(model.weights[lay.layer_cts(k)], lives, rebuilt, strict=True):
            assert not np.any(tile.v[live == 0])
            assert np.allclose(tile.v, again, rtol=0, atol=1e-12)  # every block holds it
    if hidden:
        assert all(r.party_refreshes > 0 for r in model.reports)


# -- encrypted runs ----------------------------------------------------------------------
@pytest.fixture(scope="module", params=[(), (6,), (6, 5)], ids=["multinomial", "h1", "h2"])
def encrypted_run(request, iris):  # type: ignore[no-untyped-def]
    x, y = iris
    job = MLPJob(
        n_features=4,
        n_classes=3,
        hidden=request.param,
        iterations=3,
        batch_size=10,
        learning_rate=1.0,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    shards = _shards(x, y, (20, 20, 20))
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    return job, shards, fed, model


def test_encrypted_weights_match_the_twin(encrypted_run) -> None:  # type: ignore[no-untyped-def]
    job, shards, fed, model = encrypted_run
    weights = model.decrypt(fed)
    twin = train_plaintext_mlp(job, shards)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(weights, twin.weights, strict=True))
    print(f"{job.model} {job.hidden}: max |encrypted - twin| = {diff:.2e}")
    assert diff < TOL
    assert len(model.reports) == job.iterations


def test_hidden_layers_refresh_inside_map(encrypted_run) -> None:  # type: ignore[no-untyped-def]
    job, _, _, model = encrypted_run
    if job.hidden:  # deeper than the 4 usable levels of the test set: parties refresh
        assert all(r.party_refreshes > 0 for r in model.reports)
        # the three parties' refreshes at one point of MAP are one collective round
        assert all(r.map_rounds * 3 == r.party_refreshes for r in model.reports), model.reports
    else:  # multinomial regression fits between two refreshes of the weights
        assert all(r.party_refreshes == 0 for r in model.reports)
    assert all(r.root_refreshes >= 1 for r in model.reports[1:])


def test_three_hidden_layers_and_momentum_match_the_twin(iris) -> None:  # type: ignore[no-untyped-def]
    x, y = iris
    job = MLPJob(
        n_features=4,
        n_classes=3,
        hidden=(5, 4, 3),
        iterations=2,
        batch_size=8,
        learning_rate=1.0,
        momentum=0.5,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    shards = _shards(x, y, (8, 8))
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    twin = train_plaintext_mlp(job, shards)
    diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(model.decrypt(fed), twin.weights, strict=True)
    )
    assert diff < TOL


def test_nesterov_momentum_matches_the_twin(iris) -> None:  # type: ignore[no-untyped-def]
    """Nesterov's momentum in the one loop: the encrypted network is its twin's, and the
    twin is not heavy ball's."""
    x, y = iris
    job = MLPJob(
        n_features=4,
        n_classes=3,
        hidden=(5,),
        iterations=3,
        batch_size=8,
        learning_rate=1.0,
        momentum=0.5,
        nesterov=True,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
    )
    shards = _shards(x, y, (8, 8))
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    twin = train_plaintext_mlp(job, shards)
    heavy = train_plaintext_mlp(dataclasses.replace(job, nesterov=False), shards)
    got = model.decrypt(fed)
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(got, twin.weights, strict=True))
    apart = max(
        float(np.max(np.abs(a - b))) for a, b in zip(twin.weights, heavy.weights, strict=True)
    )
    assert diff < TOL < apart


def test_training_learns(iris) -> None:  # type: ignore[no-untyped-def]
    """The twin (same math as the encrypted run) learns iris with a hidden layer."""
    x, y = iris
    job = MLPJob(
        n_features=4, n_classes=3, hidden=(8,), iterations=60, batch_size=25, learning_rate=0.3
    )
    twin = train_plaintext_mlp(job, _shards(x[:100], y[:100], (50, 50)))
    acc = float(np.mean(mlp_predict(job, twin.weights, x[100:]) == y[100:]))
    assert acc > 0.9, acc
    diverging = MLPJob(**{**job.__dict__, "output_degree": 3})  # see MLPJob's docstring
    with np.errstate(all="ignore"):
        bad = train_plaintext_mlp(diverging, _shards(x[:100], y[:100], (50, 50)))
    assert not max(bad.max_abs_output) < 100


def test_decryption_needs_every_consent(iris) -> None:  # type: ignore[no-untyped-def]
    x, y = iris
    job = MLPJob(n_features=4, n_classes=3, iterations=1, batch_size=5, params=INSECURE_TEST.name)
    fed = setup_local(job, _shards(x, y, (5, 5)), consents=[True, False])
    model = Trainer(job, fed).train()
    with pytest.raises(ModelDecryptionRefused, match=r"\[1\]"):
        model.decrypt(fed)


# -- oblivious prediction ----------------------------------------------------------------
def test_oblivious_prediction_scores_and_only_ciphertexts_at_parties(
    encrypted_run, iris, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    job, _, fed, model = encrypted_run
    x, _ = iris
    xq = x[100:140]
    querier = QuerierKeyPair.generate(fed.ctx)
    seen: list[Any] = []
    switched: list[Any] = []
    real_share = Party.key_switch_share
    real_refresh = Party.refresh_share

    def spy_share(self, ct, q):  # type: ignore[no-untyped-def]
        seen.append(ct)
        switched.append(ct)
        return real_share(self, ct, q)

    def spy_refresh(self, ct, crp):  # type: ignore[no-untyped-def]
        seen.append(ct)
        return real_refresh(self, ct, crp)

    monkeypatch.setattr(Party, "key_switch_share", spy_share)
    monkeypatch.setattr(Party, "refresh_share", spy_refresh)
    scores = predict_local_mlp(job, fed.fed, model.weights, xq, querier)
    weights = model.decrypt(fed)
    expected = mlp_scores(job, weights, xq)
    assert scores.shape == (40, 3)
    # 40 rows are two query ciphertexts; their score lines are packed into one (pack_scores)
    assert job.layout.samples_per_ct == 32 and len(switched) == 3  # one per party
    assert np.max(np.abs(scores - expected)) < 1e-3
    assert np.array_equal(np.argmax(scores, axis=1), mlp_predict(job, weights, xq))
    assert seen and all(isinstance(c, Ciphertext) for c in seen)
    assert all(c.key_tag == fed.fed.joint_key.key_tag for c in seen)
    # what the root evaluates: the querier's rows encrypted, no trace of their values
    (query, *_) = mlp_mod.encrypt_mlp_queries(job, fed.encrypt, xq[:2])
    blob = query.to_bytes()
    assert all(np.float64(v).tobytes() not in blob for v in xq[:2].ravel())


# -- bad input ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"hidden": (4, 4, 4, 4)}, r"0 to 3 positive layer widths"),
        ({"hidden": (0,)}, r"hidden"),
        ({"n_classes": 1}, r"n_classes"),
        ({"hidden_degree": 1}, r"hidden_degree"),
        ({"hidden_activation": "tanh"}, r"'relu' or 'sigmoid'"),
        ({"learning_rate": -1.0}, r"learning_rate"),
        ({"params": "nope"}, r"not a known parameter set"),
        ({"hidden": (4,), "hidden_degree": 7, "params": "n14-depth5-128"}, r"lower hidden_degree"),
    ],
)
def test_bad_job_is_refused_before_key_work(kwargs, match) -> None:  # type: ignore[no-untyped-def]
    base = {"n_features": 4, "n_classes": 3}
    with pytest.raises(ParameterError, match=match):
        MLPJob(**{**base, **kwargs})


@pytest.mark.parametrize(
    ("shard", "match"),
    [
        ((np.ones((3, 5)), np.zeros(3)), r"party 1: shard has 5 features"),
        ((np.full((3, 4), np.nan), np.zeros(3)), r"party 1: features contain 12 NaN"),
        ((np.ones((0, 4)), np.zeros(0)), r"party 1: shard is empty"),
        ((np.ones((3, 4)), np.array([0.0, 3.0, 1.0])), r"party 1: mlp needs labels in \{0, 1, 2\}"),
        ((np.ones((2, 4)), np.array([0.5, 1.0])), r"found \[0.5\]"),
    ],
)
def test_bad_shards_are_refused_before_key_work(shard, match, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    def no_keys(*a, **k):  # type: ignore[no-untyped-def]
        raise AssertionError("key generation started before validation")

    monkeypatch.setattr(testing_mod.LocalFederation, "setup", no_keys)
    job = MLPJob(n_features=4, n_classes=3, hidden=(3,))
    good = (np.ones((3, 4)), np.array([0.0, 1.0, 2.0]))
    with pytest.raises(ParameterError, match=match):
        setup_local(job, [good, shard])


def test_a_first_layer_over_several_ciphertexts_matches_the_twin() -> None:
    """8x8 digits (64 pixels + bias: three 32-unit tiles on the 2^12 ring), ten classes,
    encrypted in process: the tiled layout computes the twin's network."""
    data = load_named("digits", digit=None)
    x = (data.x - data.x.mean(axis=0)) / (data.x.std(axis=0) + 1e-6)
    job = MLPJob(
        n_features=64,
        n_classes=10,
        hidden=(8,),
        iterations=2,
        batch_size=4,
        learning_rate=0.5,
        allow_model_decryption=True,
        params=INSECURE_TEST.name,
        tile=32,
    )
    assert job.layout.grid(1) == (1, 3) and job.layout.n_cts == 4
    shards = _shards(x[:40], data.y[:40], (20, 20))
    fed = setup_local(job, shards)
    model = Trainer(job, fed).train()
    twin = train_plaintext_mlp(job, shards)
    diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(model.decrypt(fed), twin.weights, strict=True)
    )
    print(f"digits 64-8-10 over 3 input tiles: max |encrypted - twin| = {diff:.2e}")
    assert diff < TOL
    assert all(r.party_refreshes > 0 for r in model.reports)
