#!/usr/bin/env python3
"""Baseline aggregators for the FedAvg benchmark, and an in-process FedAvg simulation.

Every aggregator takes the clients' flat float32 updates and their weights (examples) and
returns the weighted mean with what it cost: seconds, bytes each client sends and receives,
and the largest deviation from the exact float64 weighted mean. ``who_can_read_an_update``
says, in words, who could read one client's update in transit or at the server, which is
what the encrypted variants buy.

* :class:`PlainAggregator`: float32 updates in the clear (FedAvg as Flower or FLARE run it
  without encryption).
* :class:`TenSEALAggregator`: NVIDIA FLARE's homomorphic aggregation (``HEBuilder``,
  ``HEModelEncryptor``, ``HEInTimeAccumulateWeightedAggregator``, ``HEModelDecryptor``):
  one TenSEAL CKKS context whose secret key every client holds; each client multiplies its
  update by its weight and encrypts it, the server adds ciphertexts and multiplies by
  1/sum(weights) without decrypting, every client decrypts the mean.

:func:`run_fedavg` runs FedAvg rounds with the example apps of ``phe_fl.fedavg.examples``
in one process (clients one after another) through any of these aggregators.

    python benchmarks/fedavg_baselines.py --app fashion_mnist_mlp --clients 8 --rows 2000
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

ROOT = Path(__file__).resolve().parent.parent
try:  # run from a checkout without installing: make phe_fl importable
    import phe_fl  # noqa: F401
except ImportError:  # pragma: no cover
    sys.path.insert(0, str(ROOT))

from phe_fl.fedavg.job import FedAvgSpec  # noqa: E402
from phe_fl.fedavg.site import Site, layout_of, load_into  # noqa: E402
from phe_fl.fedavg.twin import (  # noqa: E402
    TwinRound,
    check_updates,
    plain_fedavg,
    weighted_mean,
)

if TYPE_CHECKING:
    pass

__all__ = [
    "AggregateStats",
    "Aggregator",
    "PlainAggregator",
    "TenSEALAggregator",
    "RoundRecord",
    "run_fedavg",
    "weighted_mean",
]

Vector = npt.NDArray[np.float32]
Vector64 = npt.NDArray[np.float64]


@dataclass
class AggregateStats:
    """What one aggregation cost. ``seconds`` is this process's wall time for the whole
    aggregation with clients run one after another; ``detail`` splits it (for TenSEAL:
    encryption per client, server work, one client's decryption, and the critical path a
    deployment with clients in parallel would see)."""

    seconds: float
    bytes_up_per_client: int
    bytes_down_per_client: int
    max_abs_error: float  # against the float64 weighted mean
    detail: dict[str, float] = field(default_factory=dict)


class Aggregator(Protocol):
    name: str
    who_can_read_an_update: str

    def aggregate(
        self, updates: list[Vector], weights: list[float]
    ) -> tuple[Vector, AggregateStats]: ...


class PlainAggregator:
    """Weighted mean of float32 updates sent in the clear: 4 bytes a parameter each way."""

    name = "plain"
    who_can_read_an_update = "anyone on the path and the server"

    def aggregate(
        self, updates: list[Vector], weights: list[float]
    ) -> tuple[Vector, AggregateStats]:
        check_updates(updates, weights)
        start = time.perf_counter()
        total = float(sum(weights))
        acc = np.zeros(len(updates[0]), dtype=np.float64)
        for u, w in zip(updates, weights, strict=True):
            acc += u.astype(np.float64) * (float(w) / total)
        mean = acc.astype(np.float32)
        seconds = time.perf_counter() - start
        error = float(np.max(np.abs(mean - weighted_mean(updates, weights)), initial=0.0))
        n_bytes = 4 * len(mean)
        return mean, AggregateStats(seconds, n_bytes, n_bytes, error)


class TenSEALAggregator:
    """NVIDIA FLARE's HE FedAvg, with FLARE's defaults (``nvflare/lighter/impl/he.py``:
    CKKS, poly_modulus_degree 8192, coeff_mod_bit_sizes [60, 40, 40], scale 2^40, symmetric
    encryption, relinearization keys only).

    As in FLARE, each client multiplies its update by its raw weight before encrypting
    (``HEModelEncryptor``, weigh_by_local_iter), the server adds the ciphertexts as they
    arrive and multiplies the total by 1/sum(weights) (``HEInTimeAccumulateWeighted
    Aggregator``), and each client decrypts (``HEModelDecryptor``). With ``server_divides``
    False the clients multiply by their normalized weights instead and the server only adds
    (one level more left, a larger download). Updates are cut into ``slots`` values per
    CKKS vector (FLARE encrypts a layer per ``ts.ckks_vector`` call, which TenSEAL splits the
    same way). Bytes are serialized sizes: ciphertexts up, the aggregate down. TenSEAL holds
    the GIL and its own thread pool does not speed up encryption, so clients encrypt one after
    another here; ``detail["critical_path_s"]`` is what clients in parallel would wait."""

    who_can_read_an_update = "any client (shared secret key), not the server"

    def __init__(
        self,
        poly_modulus_degree: int = 8192,
        coeff_mod_bit_sizes: Sequence[int] = (60, 40, 40),
        scale_bits: int = 40,
        server_divides: bool = True,
        n_threads: int | None = None,
    ) -> None:
        import tenseal as ts

        self._ts = ts
        self.server_divides = server_divides
        context = ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=poly_modulus_degree,
            coeff_mod_bit_sizes=list(coeff_mod_bit_sizes),
            encryption_type=ts.ENCRYPTION_TYPE.SYMMETRIC,
            n_threads=n_threads,
        )
        context.generate_relin_keys()
        context.global_scale = 2**scale_bits
        # as FLARE's provisioning writes them: the clients' context with the secret key, the
        # server's without it
        self.client_context_bytes: bytes = context.serialize(
            save_public_key=True,
            save_secret_key=True,
            save_galois_keys=False,
            save_relin_keys=True,
        )
        self.server_context_bytes: bytes = context.serialize(
            save_public_key=False,
            save_secret_key=False,
            save_galois_keys=False,
            save_relin_keys=True,
        )
        self._client = ts.context_from(self.client_context_bytes)
        self._server = ts.context_from(self.server_context_bytes)
        self.slots = poly_modulus_degree // 2
        self.name = f"tenseal-ckks-{poly_modulus_degree}"

    def _chunks(self, n: int) -> list[slice]:
        return [slice(i, min(i + self.slots, n)) for i in range(0, n, self.slots)]

    def aggregate(
        self, updates: list[Vector], weights: list[float]
    ) -> tuple[Vector, AggregateStats]:
        check_updates(updates, weights)
        ts = self._ts
        n = len(updates[0])
        chunks = self._chunks(n)
        weight_sum = float(sum(weights))
        start = time.perf_counter()
        encrypt_s: list[float] = []
        up_bytes: list[int] = []
        server_s = 0.0
        totals: list[Any] = [None] * len(chunks)
        for update, weight in zip(updates, weights, strict=True):
            t0 = time.perf_counter()  # client: weigh, encrypt, serialize
            factor = float(weight) / weight_sum if not self.server_divides else float(weight)
            scaled = update.astype(np.float64) * factor
            blobs = [ts.ckks_vector(self._client, scaled[c]).serialize() for c in chunks]
            encrypt_s.append(time.perf_counter() - t0)
            up_bytes.append(sum(len(b) for b in blobs))
            t0 = time.perf_counter()  # server: deserialize and accumulate, in time
            for i, blob in enumerate(blobs):
                vector = ts.ckks_vector_from(self._server, blob)
                if totals[i] is None:
                    totals[i] = vector
                else:
                    totals[i] += vector
            server_s += time.perf_counter() - t0
        t0 = time.perf_counter()
        if self.server_divides:
            down = [(total * (1.0 / weight_sum)).serialize() for total in totals]
        else:
            down = [total.serialize() for total in totals]
        server_s += time.perf_counter() - t0
        t0 = time.perf_counter()  # every client does this; timed once
        mean64 = np.concatenate(
            [np.asarray(ts.ckks_vector_from(self._client, b).decrypt(), np.float64) for b in down]
        )
        decrypt_s = time.perf_counter() - t0
        seconds = time.perf_counter() - start
        mean = mean64.astype(np.float32)
        error = float(np.max(np.abs(mean - weighted_mean(updates, weights)), initial=0.0))
        detail = {
            "encrypt_s_max_client": max(encrypt_s),
            "encrypt_s_mean_client": sum(encrypt_s) / len(encrypt_s),
            "server_s": server_s,
            "decrypt_s": decrypt_s,
            "critical_path_s": max(encrypt_s) + server_s + decrypt_s,
            "ciphertexts_per_client": float(len(chunks)),
            "bytes_per_ciphertext_up": up_bytes[0] / len(chunks),
            "bytes_per_ciphertext_down": sum(len(b) for b in down) / len(chunks),
            "error_float64": float(np.max(np.abs(mean64 - weighted_mean(updates, weights)))),
        }
        return mean, AggregateStats(
            seconds, max(up_bytes), sum(len(b) for b in down), error, detail
        )


# --------------------------------------------------------------------------- simulation


@dataclass
class RoundRecord:
    """One FedAvg round: local training (sum over clients and the slowest), aggregation
    cost, and the global model's test accuracy after the round."""

    round: int
    train_s_sum: float
    train_s_max: float
    aggregate_s: float
    bytes_up_per_client: int
    bytes_down_per_client: int
    max_abs_error: float
    accuracy: float
    train_loss: float  # examples-weighted mean of the clients' last-epoch losses
    detail: dict[str, float] = field(default_factory=dict)


def run_fedavg(
    spec: FedAvgSpec,
    options_for_client: list[dict[str, Any]],
    aggregator: Aggregator,
    eval: tuple[npt.NDArray[Any], npt.NDArray[Any]],  # noqa: A002 - the brief's name
    log: Callable[[str], None] | None = None,
) -> list[RoundRecord]:
    """FedAvg in one process through ``aggregator``: the twin's loop
    (:func:`phe_fl.fedavg.twin.plain_fedavg`, each client a ``Site`` training the example
    app ``spec.app`` as a node does), the global model scored on ``eval`` after each
    round."""
    from phe_fl.fedavg import examples

    path = {spec.app: f"phe_fl.fedavg.examples:{spec.app}"}
    sites = [Site(f"client-{i}", path, options) for i, options in enumerate(options_for_client)]
    scorer = getattr(examples, spec.app)(options_for_client[0]).model()
    layout = layout_of(scorer)
    x_test, y_test = eval
    stats: list[AggregateStats] = []
    records: list[RoundRecord] = []

    def aggregate(updates: list[Vector], weights: list[float]) -> npt.NDArray[Any]:
        mean, cost = aggregator.aggregate(updates, weights)
        stats.append(cost)
        return mean

    def record(twin: TwinRound) -> None:
        load_into(scorer, layout, twin.global_values)
        cost = stats[-1]
        records.append(
            RoundRecord(
                round=twin.round,
                train_s_sum=sum(twin.fit_seconds),
                train_s_max=max(twin.fit_seconds),
                aggregate_s=cost.seconds,
                bytes_up_per_client=cost.bytes_up_per_client,
                bytes_down_per_client=cost.bytes_down_per_client,
                max_abs_error=cost.max_abs_error,
                accuracy=examples.accuracy(scorer, x_test, y_test),
                train_loss=twin.loss,
                detail=dict(cost.detail),
            )
        )
        if log is not None:
            log(_describe(aggregator.name, records[-1]))

    plain_fedavg(sites, spec, aggregate=aggregate, on_round=record)
    return records


def _describe(name: str, r: RoundRecord) -> str:
    extra = ""
    if "critical_path_s" in r.detail:
        extra = (
            f" (encrypt/client {r.detail['encrypt_s_max_client']:.2f}s, server "
            f"{r.detail['server_s']:.2f}s, decrypt {r.detail['decrypt_s']:.2f}s, critical path "
            f"{r.detail['critical_path_s']:.2f}s)"
        )
    return (
        f"{name:>20} round {r.round}: train sum {r.train_s_sum:.2f}s max {r.train_s_max:.2f}s, "
        f"aggregate {r.aggregate_s:.2f}s{extra}, up {r.bytes_up_per_client / 2**20:.1f} MiB, "
        f"down {r.bytes_down_per_client / 2**20:.1f} MiB per client, max err "
        f"{r.max_abs_error:.1e}, loss {r.train_loss:.3f}, accuracy {r.accuracy:.4f}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    from phe_fl.fedavg import examples

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--app", default="fashion_mnist_mlp")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rows", type=int, default=2000, help="training rows per client (0: all)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--test-rows", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's)")
    parser.add_argument("--aggregators", default="plain,tenseal")
    args = parser.parse_args(argv)

    dataset = "digits" if args.app.startswith("digits") else "fashion_mnist"
    x_test, y_test = examples.test_set(dataset, rows=args.test_rows)
    options = [
        {"shard": i, "shards": args.clients, "rows": args.rows, "threads": args.threads}
        for i in range(args.clients)
    ]
    spec = FedAvgSpec(args.app, args.rounds, args.epochs, args.batch_size, args.lr)
    makers: dict[str, Callable[[], Aggregator]] = {
        "plain": PlainAggregator,
        "tenseal": TenSEALAggregator,
    }
    for name in args.aggregators.split(","):
        aggregator = makers[name]()
        t0 = time.perf_counter()
        records = run_fedavg(spec, options, aggregator, (x_test, y_test), print)
        total = time.perf_counter() - t0
        print(
            f"{aggregator.name:>20} total {total:.1f}s, {total / max(1, len(records)):.1f}s/round"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
