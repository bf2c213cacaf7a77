"""Example FedAvg apps: small torch models on offline data sets, for tests and benchmarks.

Each factory takes a site's ``[fedavg] options`` and returns an :class:`~phe_fl.fedavg.app.App`.
Every site of a simulated federation builds the same app with its own ``shard``: the training
set is cut into ``shards`` disjoint pieces by one seeded permutation, so shards never overlap
and together cover the data, whichever site computes them. Nothing is downloaded: digits ships
with scikit-learn, Fashion-MNIST comes from the Debian package ``dataset-fashion-mnist``.

Options (unknown keys are refused, naming the valid ones):

``shard`` / ``shards`` (0 / 1)
    this site's piece of the training (and test) set, and how many pieces there are;
``seed`` (0)
    the data split and the model's initial weights;
``rows`` / ``test_rows`` (0 = all)
    caps on this site's training and evaluation rows, for quick runs;
``eval`` ("shard")
    ``"all"`` evaluates on the whole test set instead of this shard's piece of it;
``threads`` (0 = leave torch's default)
    ``torch.set_num_threads``;
``device`` ("cpu")
    ``"cuda"`` where available;
``path`` (Fashion-MNIST only, ``/usr/share/datasets/fashion-mnist``)
    the folder with the four gzipped IDX files.
"""

from __future__ import annotations

import functools
import gzip
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from phe_fl.errors import ConfigError
from phe_fl.fedavg.app import App, EvalResult, FitConfig, FitResult

__all__ = [
    "digits_mlp",
    "fashion_mnist_mlp",
    "fashion_mnist_cnn",
    "fashion_mnist_wide",
    "test_set",
    "accuracy",
    "FASHION_MNIST_PATH",
]

FASHION_MNIST_PATH = "/usr/share/datasets/fashion-mnist"
FASHION_MEAN = 0.2860
FASHION_STD = 0.3530
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240601  # the digits train/test split is fixed, independent of `seed`
EVAL_BATCH = 4096

Floats = npt.NDArray[np.float32]
Labels = npt.NDArray[np.int64]
Bytes = npt.NDArray[np.uint8]

_COMMON_OPTIONS = ("shard", "shards", "seed", "rows", "test_rows", "threads", "device", "eval")
_FASHION_OPTIONS = (*_COMMON_OPTIONS, "path")


# --------------------------------------------------------------------------- data


@functools.lru_cache(maxsize=1)
def _digits() -> tuple[Floats, Labels, Floats, Labels]:
    """scikit-learn's 8x8 digits scaled to [0, 1], split 80/20 once (a fixed permutation)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (np.asarray(bunch.data, dtype=np.float32) / 16.0).astype(np.float32)
    y = np.asarray(bunch.target, dtype=np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(y))
    n_test = int(round(len(y) * DIGITS_TEST_FRACTION))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def _read_idx(path: Path, magic: int, dims: int) -> Bytes:
    """The payload of a gzipped IDX file (big-endian header: magic, then ``dims`` sizes)."""
    try:
        with gzip.open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    header = 4 + 4 * dims
    if len(data) < header:
        raise ConfigError(f"{path} is not an IDX file (only {len(data)} bytes)")
    fields = np.frombuffer(data[:header], dtype=">u4")
    if int(fields[0]) != magic:
        raise ConfigError(f"{path}: IDX magic {int(fields[0]):#010x}, expected {magic:#010x}")
    shape = tuple(int(d) for d in fields[1:])
    if len(data) - header != math.prod(shape):
        raise ConfigError(f"{path}: not an IDX file ({len(data) - header} bytes for shape {shape})")
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape[0], -1)


@functools.lru_cache(maxsize=2)
def _fashion_raw(path: str) -> tuple[Bytes, Labels, Bytes, Labels]:
    """Fashion-MNIST as stored (uint8 pixels, rows of 784), read once per process."""
    folder = Path(path)
    names = {
        "x_train": "train-images-idx3-ubyte.gz",
        "y_train": "train-labels-idx1-ubyte.gz",
        "x_test": "t10k-images-idx3-ubyte.gz",
        "y_test": "t10k-labels-idx1-ubyte.gz",
    }
    missing = [n for n in names.values() if not (folder / n).is_file()]
    if missing:
        raise ConfigError(
            f"Fashion-MNIST not found in {folder} (missing {', '.join(missing)}): install the "
            "Debian package dataset-fashion-mnist (apt-get install dataset-fashion-mnist), "
            "or point the app's option 'path' at a folder holding those files"
        )
    x_train = _read_idx(folder / names["x_train"], 0x00000803, 3)
    y_train = _read_idx(folder / names["y_train"], 0x00000801, 1).reshape(-1).astype(np.int64)
    x_test = _read_idx(folder / names["x_test"], 0x00000803, 3)
    y_test = _read_idx(folder / names["y_test"], 0x00000801, 1).reshape(-1).astype(np.int64)
    if len(x_train) != len(y_train) or len(x_test) != len(y_test):
        raise ConfigError(f"Fashion-MNIST in {folder}: image and label counts differ")
    return x_train, y_train, x_test, y_test


def _normalize_fashion(pixels: Bytes) -> Floats:
    """Pixels to [0, 1], then standardized with the usual Fashion-MNIST mean and std."""
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    return ((scaled - np.float32(FASHION_MEAN)) / np.float32(FASHION_STD)).astype(np.float32)


def _dataset(name: str, path: str) -> tuple[Floats, Labels, Floats, Labels]:
    """Training and test arrays of ``name``, features as float32 rows."""
    if name == "digits":
        return _digits()
    if name == "fashion_mnist":
        return _fashion_normalized(path)
    raise ConfigError(f"unknown dataset {name!r}; valid: 'digits', 'fashion_mnist'")


@functools.lru_cache(maxsize=2)
def _fashion_normalized(path: str) -> tuple[Floats, Labels, Floats, Labels]:
    """Normalized Fashion-MNIST, cached so several in-process sites share one copy."""
    x_train, y_train, x_test, y_test = _fashion_raw(path)
    return _normalize_fashion(x_train), y_train, _normalize_fashion(x_test), y_test


def _shard_indices(n: int, shards: int, shard: int, seed: int) -> npt.NDArray[np.int64]:
    """Rows of ``shard``: the same seeded permutation for every shard index, cut into
    ``shards`` near-equal consecutive pieces (disjoint, covering all ``n`` rows)."""
    order = np.random.default_rng(seed).permutation(n).astype(np.int64)
    return np.array_split(order, shards)[shard]


def test_set(dataset: str, rows: int = 0, path: str = FASHION_MNIST_PATH) -> tuple[Floats, Labels]:
    """The whole test set of ``dataset`` ("digits" or "fashion_mnist") as the apps see it
    (flat float32 rows, int64 labels), the first ``rows`` if ``rows`` > 0: lets a benchmark
    score a global model on the same data as every site."""
    _, _, x, y = _dataset(dataset, path)
    if rows > 0:
        x, y = x[:rows], y[:rows]
    return x, y


def accuracy(model: nn.Module, x: npt.NDArray[Any], y: npt.NDArray[Any]) -> float:
    """Fraction of rows of ``x`` whose arg-max prediction is ``y`` (model on any device)."""
    device = _model_device(model)
    xt = torch.as_tensor(np.asarray(x, dtype=np.float32))
    yt = torch.as_tensor(np.asarray(y, dtype=np.int64))
    if len(yt) == 0:
        return float("nan")
    was_training = model.training
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(yt), EVAL_BATCH):
            logits = model(xt[start : start + EVAL_BATCH].to(device))
            pred = logits.argmax(dim=1).cpu()
            correct += int((pred == yt[start : start + EVAL_BATCH]).sum())
    model.train(was_training)
    return correct / len(yt)


# --------------------------------------------------------------------------- models


def _digits_mlp_model() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _fashion_mlp_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(784, 1024),
        nn.ReLU(),
        nn.Linear(1024, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    )


def _fashion_cnn_model() -> nn.Module:
    """Two 5x5 conv + pool stages and one linear layer (~29k parameters); takes flat rows
    of 784 like the MLPs, so every app shares one data layout."""
    return nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 16, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, kernel_size=5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 7 * 7, 10),
    )


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


# --------------------------------------------------------------------------- the app


@dataclass
class TorchApp:
    """One site's app: its shard of a data set and a model builder (see the module doc)."""

    build: Callable[[], nn.Module]
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    seed: int
    shard: int
    device: torch.device

    def model(self) -> nn.Module:
        """A fresh model whose weights depend only on ``seed`` (the global RNG is left alone)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            return self.build()

    def fit(self, model: nn.Module, config: FitConfig) -> FitResult:
        """Plain SGD (momentum 0.9, a fresh optimizer each round, as FedAvg clients do) for
        ``config.epochs`` epochs; the shuffling is seeded from (seed, job seed, round, shard),
        so a round is reproducible on CPU."""
        if config.epochs < 1 or config.batch_size < 1 or not config.learning_rate > 0:
            raise ConfigError(
                f"fit: epochs ({config.epochs}) and batch_size ({config.batch_size}) must be "
                f">= 1 and learning_rate ({config.learning_rate}) > 0"
            )
        n = len(self.y_train)
        if n == 0:
            return FitResult(examples=0, loss=float("nan"))
        home = _model_device(model)
        model.to(self.device)
        model.train()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.learning_rate, momentum=0.9)
        entropy = [self.seed, config.seed, config.round, self.shard]
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([abs(e) for e in entropy]).generate_state(1, np.uint64)[0])
            & 0x7FFF_FFFF_FFFF_FFFF
        )
        loss_fn = nn.CrossEntropyLoss()
        epoch_loss = 0.0
        for _ in range(config.epochs):
            order = torch.randperm(n, generator=generator)
            total = 0.0
            for start in range(0, n, config.batch_size):
                idx = order[start : start + config.batch_size]
                xb = self.x_train[idx].to(self.device)
                yb = self.y_train[idx].to(self.device)
                optimizer.zero_grad(set_to_none=True)
                loss = loss_fn(model(xb), yb)
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(idx)
            epoch_loss = total / n
        model.to(home)
        return FitResult(examples=n, loss=epoch_loss)

    def examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This site's training rows and labels (a differentially private job's DP step)."""
        return self.x_train, self.y_train

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy, the loss ``fit`` trains."""
        return nn.functional.cross_entropy(outputs, targets)

    def evaluate(self, model: nn.Module) -> EvalResult:
        """Mean cross-entropy and accuracy on this site's test rows."""
        n = len(self.y_test)
        if n == 0:
            return EvalResult(loss=float("nan"), examples=0, accuracy=None)
        device = _model_device(model)
        was_training = model.training
        model.eval()
        loss_sum, correct = 0.0, 0
        loss_fn = nn.CrossEntropyLoss(reduction="sum")
        with torch.no_grad():
            for start in range(0, n, EVAL_BATCH):
                xb = self.x_test[start : start + EVAL_BATCH].to(device)
                yb = self.y_test[start : start + EVAL_BATCH].to(device)
                logits = model(xb)
                loss_sum += float(loss_fn(logits, yb))
                correct += int((logits.argmax(dim=1) == yb).sum())
        model.train(was_training)
        return EvalResult(loss=loss_sum / n, examples=n, accuracy=correct / n)


# --------------------------------------------------------------------------- options


def _int_option(options: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
    value = options.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"option {key!r} must be an integer, not {value!r}")
    if value < minimum:
        raise ConfigError(f"option {key!r} must be >= {minimum}, not {value}")
    return value


def _make_app(
    options: Mapping[str, Any],
    dataset: str,
    build: Callable[[], nn.Module],
    valid: tuple[str, ...],
) -> App:
    """Validate ``options`` and build the site's app over its shard of ``dataset``."""
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise ConfigError(
            f"unknown option {unknown[0]!r} for the {dataset} apps; valid: {', '.join(valid)}"
        )
    shards = _int_option(options, "shards", 1, 1)
    shard = _int_option(options, "shard", 0, 0)
    if shard >= shards:
        raise ConfigError(f"option 'shard' ({shard}) must be < 'shards' ({shards})")
    seed = _int_option(options, "seed", 0, 0)
    rows = _int_option(options, "rows", 0, 0)
    test_rows = _int_option(options, "test_rows", 0, 0)
    threads = _int_option(options, "threads", 0, 0)
    scope = options.get("eval", "shard")
    if scope not in ("shard", "all"):
        raise ConfigError(f"option 'eval' must be 'shard' or 'all', not {scope!r}")
    device_name = options.get("device", "cpu")
    if device_name not in ("cpu", "cuda"):
        raise ConfigError(f"option 'device' must be 'cpu' or 'cuda', not {device_name!r}")
    if device_name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("option 'device' is 'cuda' but torch sees no CUDA device")
    path = options.get("path", FASHION_MNIST_PATH)
    if not isinstance(path, str) or not path:
        raise ConfigError(f"option 'path' must be a folder name, not {path!r}")

    if threads:
        torch.set_num_threads(threads)
    x_train, y_train, x_test, y_test = _dataset(dataset, path)
    train_idx = _shard_indices(len(y_train), shards, shard, seed)
    if rows:
        train_idx = train_idx[:rows]
    test_idx: npt.NDArray[np.int64]
    if scope == "all":
        test_idx = np.arange(len(y_test), dtype=np.int64)
    else:
        test_idx = _shard_indices(len(y_test), shards, shard, seed)
    if test_rows:
        test_idx = test_idx[:test_rows]
    return TorchApp(
        build=build,
        x_train=torch.from_numpy(np.ascontiguousarray(x_train[train_idx])),
        y_train=torch.from_numpy(np.ascontiguousarray(y_train[train_idx])),
        x_test=torch.from_numpy(np.ascontiguousarray(x_test[test_idx])),
        y_test=torch.from_numpy(np.ascontiguousarray(y_test[test_idx])),
        seed=seed,
        shard=shard,
        device=torch.device(device_name),
    )


def digits_mlp(options: Mapping[str, Any]) -> App:
    """MLP 64-32-10 on scikit-learn's digits (1437 training rows): a round in milliseconds,
    for tests."""
    return _make_app(options, "digits", _digits_mlp_model, _COMMON_OPTIONS)


def fashion_mnist_mlp(options: Mapping[str, Any]) -> App:
    """ReLU MLP 784-1024-256-10 (1,068,810 parameters) on Fashion-MNIST: a model big enough
    that the cost of encrypting its updates shows."""
    return _make_app(options, "fashion_mnist", _fashion_mlp_model, _FASHION_OPTIONS)


WIDE_WIDTH = 12_579
"""Hidden units of :func:`fashion_mnist_wide`: 784-12579-10 is 10,000,315 parameters."""


def fashion_mnist_wide(options: Mapping[str, Any]) -> App:
    """One very wide hidden layer (option ``width``, default 12,579: 10.0M parameters) on
    Fashion-MNIST: the model a federation streams through the tree in chunks (benchmarks'
    scale profile)."""
    options = dict(options)
    width = _int_option(options, "width", WIDE_WIDTH, 1)
    options.pop("width", None)

    def build() -> nn.Module:
        return nn.Sequential(nn.Linear(784, width), nn.ReLU(), nn.Linear(width, 10))

    return _make_app(options, "fashion_mnist", build, _FASHION_OPTIONS)


def fashion_mnist_cnn(options: Mapping[str, Any]) -> App:
    """Small CNN (conv 1->16 5x5, pool, conv 16->32 5x5, pool, linear ->10; 28,938
    parameters) on Fashion-MNIST: compute-bound rather than transfer-bound."""
    return _make_app(options, "fashion_mnist", _fashion_cnn_model, _FASHION_OPTIONS)
