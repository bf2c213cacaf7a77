"""``phe-fl demo``: a whole federation on this machine, for real.

It generates a federation CA and certificates, starts N data-provider nodes as separate
OS processes talking gRPC over mutual TLS in a tree (fan-out 2), each holding one shard
of the Breast Cancer Wisconsin data and only its own secret-key share, and acts as a
querier:

1. collective key generation;
2. encrypted training of logistic regression (``--model mlp``: a 30-8-2 network):
   PREPARE standardizes every shard with pooled statistics, MAP runs at each node,
   COMBINE at inner nodes, REDUCE and the collective refreshes at the root (a network's
   MAP pauses where its intermediates need a refresh: the root refreshes every node's in
   one round); the model is never decrypted;
3. oblivious prediction on a held-out set: the querier's samples travel encrypted
   under the collective key, the scores come back switched to the querier's key.

It prints the accuracy next to the plaintext baselines (the same approximated math in
numpy, and scikit-learn's logistic regression or MLP on the pooled data), wall time per
phase and bytes per node.
Every node process is stopped on exit, also on Ctrl-C.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.federation.config import DataSource
from phe_fl.federation.data import load_holdout, load_local_data
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.progress import ProgressPrinter
from phe_fl.federation.querier import Querier
from phe_fl.mhe import get_parameter_set
from phe_fl.mhe.context import FloatArray
from phe_fl.ml import (
    MLPJob,
    TrainingJob,
    mlp_predict,
    predict,
    train_plaintext,
    train_plaintext_mlp,
)

__all__ = ["run_demo", "DemoResult", "demo_job", "MODELS"]

MODELS = ("logistic", "mlp")

HOLDOUT = 0.2


@dataclass
class DemoResult:
    accuracy_encrypted: float
    accuracy_twin: float
    accuracy_sklearn: float
    refreshes: list[int]
    phase_seconds: dict[str, float]
    bytes_sent: dict[str, int]


def demo_job(params: str, iterations: int, model: str = "logistic") -> TrainingJob | MLPJob:
    if model == "mlp":  # ReLU fitted by a square on [-4, 4], heavy-ball momentum
        return MLPJob(
            n_features=30,
            n_classes=2,
            hidden=(8,),
            params=params,
            iterations=iterations,
            batch_size=16,
            learning_rate=0.3,
            momentum=0.5,
        )
    if model != "logistic":
        raise ParameterError(f"demo model must be one of {', '.join(MODELS)}, got {model!r}")
    return TrainingJob(
        n_features=30,
        params=params,
        iterations=iterations,
        batch_size=16,  # the job's defaults otherwise: lr 0.2, degree-5 sigmoid on [-10, 10]
    )


def run_demo(
    n_nodes: int = 5,
    params: str = "n15-depth11-128",
    *,
    iterations: int = 10,
    model: str = "logistic",
    workdir: Path | None = None,
    log: Callable[[str], None] = print,
) -> DemoResult:
    get_parameter_set(params)  # refuse a bad name before starting any process
    job = demo_job(params, iterations, model)
    phases: dict[str, float] = {}
    progress = ProgressPrinter(log, per_node=False)

    with tempfile.TemporaryDirectory(prefix="phe-fl-demo-") as tmp:
        root = workdir or Path(tmp)
        log(
            f"phe-fl demo: {n_nodes} data providers (one process each, gRPC + mutual TLS, "
            f"tree fan-out 2), parameter set {params}"
        )
        t = time.perf_counter()
        with LocalCluster(
            root, n_nodes=n_nodes, fanout=2, params=params, holdout=HOLDOUT
        ) as cluster:
            phases["certificates + start nodes"] = time.perf_counter() - t
            querier = Querier(
                cluster.root_address, cluster.querier_tls(), params, on_event=progress
            )
            try:
                log("collective key generation:")
                t = time.perf_counter()
                querier.setup("demo-keys")
                phases["key generation"] = time.perf_counter() - t

                what = "logistic regression" if model == "logistic" else "a 30-8-2 network"
                log(f"encrypted training of {what}, {iterations} iterations (it stays encrypted):")
                t = time.perf_counter()
                if isinstance(job, MLPJob):
                    run = querier.train_network("demo-train", job)
                else:
                    run = querier.train("demo-train", job)
                phases["training"] = time.perf_counter() - t

                x_test, y_test = load_holdout(DataSource("breast_cancer", None, 0, 1, HOLDOUT))
                log(f"oblivious prediction on {len(x_test)} held-out samples:")
                t = time.perf_counter()
                scores = querier.predict("demo-predict", run, job, x_test)
                phases["prediction"] = time.perf_counter() - t
            finally:
                querier.close()

    shards = [
        load_local_data(DataSource("breast_cancer", None, i, n_nodes, HOLDOUT))
        for i in range(n_nodes)
    ]
    std_shards = [(run.standardize(x), y) for x, y in shards]
    x_std = run.standardize(x_test)
    if isinstance(job, MLPJob):
        net = train_plaintext_mlp(job, std_shards).weights
        acc_twin = float((mlp_predict(job, net, x_std) == y_test).mean())
        acc_enc = float((scores.argmax(axis=1) == y_test).mean())
    else:
        twin = train_plaintext(job, std_shards).weights
        acc_twin = float((predict(job, twin, x_std) == y_test).mean())
        acc_enc = float(((scores >= 0.5).astype(float) == y_test).mean())
    acc_skl = _sklearn_accuracy(std_shards, x_std, y_test, job)
    baseline = "logistic regression" if model == "logistic" else "MLP (8 ReLU units)"

    log("results on the held-out set:")
    log(f"  accuracy, encrypted training + oblivious prediction: {acc_enc:.4f}")
    log(f"  accuracy, plaintext twin (same polynomial, batches): {acc_twin:.4f}")
    log(f"  accuracy, scikit-learn {baseline}, pooled data: {acc_skl:.4f}")
    log(f"  collective refreshes per iteration: {run.refreshes}")
    if run.map_rounds:
        log(
            f"  of which the nodes' intermediates: {run.party_refreshes}, in "
            f"{run.map_rounds} refresh rounds"
        )
    log("wall time per phase:")
    for phase, secs in phases.items():
        log(f"  {phase:<28} {secs:7.2f} s")
    log(
        "bytes sent up the tree per node: "
        + ", ".join(f"{n} {b / 1e6:.1f} MB" for n, b in sorted(progress.bytes_by_node.items()))
    )
    return DemoResult(
        acc_enc, acc_twin, acc_skl, run.refreshes, phases, dict(progress.bytes_by_node)
    )


def _sklearn_accuracy(
    shards: list[tuple[FloatArray, FloatArray]],
    x_test: FloatArray,
    y_test: FloatArray,
    job: TrainingJob | MLPJob,
) -> float:
    """The exact, centralized baseline: scikit-learn on the pooled standardized data."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    X = np.vstack([x for x, _ in shards])
    y = np.concatenate([y for _, y in shards])
    if isinstance(job, MLPJob):
        net = MLPClassifier(job.hidden, max_iter=2000, random_state=0).fit(X, y)
        return float((net.predict(x_test) == y_test).mean())
    model = LogisticRegression(max_iter=1000).fit(X, y)
    return float((model.predict(x_test) == y_test).mean())
