"""The example FedAvg apps: options, shards, determinism, and that training trains."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from phe_fl.errors import ConfigError  # noqa: E402
from phe_fl.fedavg.app import FitConfig  # noqa: E402
from phe_fl.fedavg.examples import (  # noqa: E402
    FASHION_MNIST_PATH,
    accuracy,
    digits_mlp,
    fashion_mnist_cnn,
    fashion_mnist_mlp,
)
from phe_fl.fedavg.examples import test_set as load_test_set  # noqa: E402

HAVE_FASHION = os.path.isfile(os.path.join(FASHION_MNIST_PATH, "train-images-idx3-ubyte.gz"))
needs_fashion = pytest.mark.skipif(not HAVE_FASHION, reason="dataset-fashion-mnist not installed")


def _config(round_: int = 1, lr: float = 0.1, epochs: int = 1) -> FitConfig:
    return FitConfig(round=round_, epochs=epochs, batch_size=32, learning_rate=lr, seed=0)


def _flat(model) -> np.ndarray:
    return np.concatenate([t.detach().cpu().numpy().ravel() for t in model.state_dict().values()])


def test_digits_fit_changes_parameters_and_lowers_loss():
    app = digits_mlp({"seed": 3})
    model = app.model()
    before = _flat(model)
    first_eval = app.evaluate(model)
    losses = [app.fit(model, _config(r)).loss for r in (1, 2, 3)]
    after = _flat(model)
    assert not np.allclose(before, after)
    assert losses[-1] < losses[0]
    last_eval = app.evaluate(model)
    assert last_eval.loss < first_eval.loss
    assert last_eval.accuracy is not None and last_eval.accuracy > 0.8
    x, y = load_test_set("digits")
    assert accuracy(model, x, y) == pytest.approx(last_eval.accuracy)  # eval="shard", 1 shard


def test_fit_reports_examples_and_is_deterministic():
    app = digits_mlp({"shards": 4, "shard": 1, "rows": 100})
    a, b = app.model(), app.model()
    ra, rb = app.fit(a, _config()), app.fit(b, _config())
    assert ra.examples == rb.examples == 100
    assert ra.loss == rb.loss
    assert np.array_equal(_flat(a), _flat(b))
    other_round = app.model()
    app.fit(other_round, _config(round_=2))
    assert not np.array_equal(_flat(a), _flat(other_round))  # shuffling depends on the round


def test_model_is_deterministic_for_a_seed_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    one, two = digits_mlp({"seed": 7}).model(), digits_mlp({"seed": 7}).model()
    assert np.array_equal(_flat(one), _flat(two))
    assert not np.array_equal(_flat(one), _flat(digits_mlp({"seed": 8}).model()))
    assert torch.equal(state, torch.random.get_rng_state())


def test_shards_are_disjoint_and_cover_the_training_set():
    shards = 5
    apps = [digits_mlp({"shards": shards, "shard": i, "seed": 2}) for i in range(shards)]
    rows = [app.x_train.numpy() for app in apps]  # type: ignore[attr-defined]
    x_all = np.concatenate(rows)
    n_train = sum(len(r) for r in rows)
    whole = digits_mlp({}).x_train.numpy()  # type: ignore[attr-defined]
    assert n_train == len(whole)
    # each row of the whole training set lands in exactly one shard (digits has duplicate
    # images, so compare multisets of rows)
    key = lambda a: sorted(map(bytes, a))  # noqa: E731
    assert key(x_all) == key(whole)
    sizes = [len(r) for r in rows]
    assert max(sizes) - min(sizes) <= 1
    # test shards partition the test set too; eval="all" gives the whole of it
    n_test = sum(app.evaluate(app.model()).examples for app in apps)
    assert n_test == len(load_test_set("digits")[1])
    assert digits_mlp({"shards": 5, "eval": "all"}).evaluate(apps[0].model()).examples == n_test
    # another seed, another split
    again = digits_mlp({"shards": shards, "shard": 0, "seed": 3}).x_train.numpy()  # type: ignore[attr-defined]
    assert not np.array_equal(again, rows[0])


def test_rows_caps():
    app = digits_mlp({"rows": 50, "test_rows": 20})
    assert app.fit(app.model(), _config()).examples == 50
    assert app.evaluate(app.model()).examples == 20


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"sahrd": 1}, "sahrd"),
        ({"path": "/tmp"}, "path"),  # digits reads no files
        ({"shard": 2, "shards": 2}, "shard"),
        ({"shards": 0}, "shards"),
        ({"seed": "1"}, "seed"),
        ({"rows": True}, "rows"),
        ({"eval": "train"}, "eval"),
        ({"device": "tpu"}, "device"),
        ({"threads": -1}, "threads"),
    ],
)
def test_bad_options_are_refused_naming_the_key(options, needle):
    with pytest.raises(ConfigError, match=needle):
        digits_mlp(options)


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(ConfigError) as info:
        fashion_mnist_mlp({"lr": 0.1})
    message = str(info.value)
    assert "'lr'" in message
    for key in (
        "shard",
        "shards",
        "seed",
        "rows",
        "test_rows",
        "threads",
        "device",
        "eval",
        "path",
    ):
        assert key in message


def test_missing_fashion_path_names_the_debian_package(tmp_path):
    with pytest.raises(ConfigError, match="dataset-fashion-mnist"):
        fashion_mnist_cnn({"path": str(tmp_path / "nowhere")})


def test_corrupt_fashion_file_is_a_config_error(tmp_path):
    import gzip

    for name in (
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    ):
        with gzip.open(tmp_path / name, "wb") as f:
            f.write(b"\x00\x00\x08\x03not an idx file")
    with pytest.raises(ConfigError, match="IDX"):
        fashion_mnist_mlp({"path": str(tmp_path)})


@needs_fashion
def test_fashion_mlp_size_and_one_step():
    app = fashion_mnist_mlp({"shards": 10, "shard": 9, "rows": 256, "test_rows": 256})
    model = app.model()
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_params <= 1_100_000
    before = _flat(model)
    result = app.fit(model, _config(lr=0.05))
    assert result.examples == 256 and np.isfinite(result.loss)
    assert not np.allclose(before, _flat(model))
    assert app.evaluate(model).examples == 256
    x, y = load_test_set("fashion_mnist", rows=100)
    assert x.shape == (100, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert abs(float(load_test_set("fashion_mnist")[0].mean())) < 0.1  # normalized
    assert 0.0 <= accuracy(model, x, y) <= 1.0


@needs_fashion
def test_fashion_cnn_trains():
    app = fashion_mnist_cnn({"rows": 512, "test_rows": 500, "eval": "all", "seed": 1})
    model = app.model()
    n_params = sum(p.numel() for p in model.parameters())
    assert 10_000 <= n_params <= 100_000
    start = app.evaluate(model)
    app.fit(model, _config(lr=0.05))
    end = app.evaluate(model)
    assert end.loss < start.loss
