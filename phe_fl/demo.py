"""``phe-fl demo``: a whole federation on this machine, for real.

It generates a federation CA and certificates, starts N data-provider nodes as separate
OS processes talking gRPC over mutual TLS in a tree (fan-out 2), and acts as a querier:
collective key generation (each node keeps only its own secret share), then pooled
feature statistics of the Breast Cancer Wisconsin data, each node holding one shard.
The pooled result is key-switched to the querier, the only party that can read it, and
compared with plaintext numpy on the pooled data. Every process is stopped on exit,
also on Ctrl-C.
"""

from __future__ import annotations

import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.federation.serde import Event
from phe_fl.mhe import get_parameter_set
from phe_fl.mhe.context import FloatArray

__all__ = ["run_demo", "DemoResult"]


@dataclass
class DemoResult:
    max_error_mean: float
    max_error_var: float
    count: int
    phase_seconds: dict[str, float]
    bytes_sent: dict[str, int]


def _pooled_breast_cancer() -> FloatArray:
    from sklearn.datasets import load_breast_cancer

    X = np.asarray(load_breast_cancer().data, dtype=np.float64)
    bounds = np.abs(X).max(axis=0)  # the nodes apply the same public per-feature bounds
    return np.asarray(X / bounds, dtype=np.float64)


def run_demo(
    n_nodes: int = 5,
    params: str = "n14-depth5-128",
    *,
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    get_parameter_set(params)  # refuse a bad name before starting any process
    phases: dict[str, float] = {}
    sent: dict[str, int] = defaultdict(int)

    def on_event(ev: Event) -> None:
        if ev.node_id:
            sent[ev.node_id] += ev.bytes_sent
            log(f"      {ev.node_id}: {ev.seconds:6.2f} s  {ev.bytes_sent / 1e6:7.2f} MB sent")
        else:
            log(f"    {ev.phase}: {ev.message}")

    with tempfile.TemporaryDirectory(prefix="phe-fl-demo-") as tmp:
        root = workdir or Path(tmp)
        log(
            f"phe-fl demo: {n_nodes} data providers (one process each, gRPC + mutual TLS, "
            f"tree fan-out 2), parameter set {params}"
        )
        t = time.perf_counter()
        with LocalCluster(root, n_nodes=n_nodes, fanout=2, params=params) as cluster:
            phases["start nodes + certificates"] = time.perf_counter() - t
            log(
                f"  nodes serving on {', '.join(cluster.addresses)} "
                f"({phases['start nodes + certificates']:.1f} s)"
            )
            querier = Querier(
                cluster.root_address, cluster.querier_tls(), params, on_event=on_event
            )
            try:
                log("  collective key generation (shares aggregated up the tree):")
                t = time.perf_counter()
                querier.setup("demo-keys")
                phases["key generation"] = time.perf_counter() - t

                log("  pooled statistics, key-switched to the querier:")
                t = time.perf_counter()
                X = _pooled_breast_cancer()
                stats = querier.stats("demo-stats", X.shape[1])
                phases["encrypted statistics"] = time.perf_counter() - t
            finally:
                querier.close()
    err_mean = float(np.abs(stats.mean - X.mean(axis=0)).max())
    err_var = float(np.abs(stats.variance - X.var(axis=0)).max())
    log(
        f"  the querier read: {stats.count} samples pooled (true {len(X)}); "
        f"max |mean error| {err_mean:.1e}, max |variance error| {err_var:.1e} vs plaintext"
    )
    log("  wall time per phase:")
    for phase, secs in phases.items():
        log(f"    {phase:<28} {secs:7.2f} s")
    log(
        "  bytes sent up the tree per node: "
        + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in sorted(sent.items()))
    )
    return DemoResult(err_mean, err_var, stats.count, phases, dict(sent))
