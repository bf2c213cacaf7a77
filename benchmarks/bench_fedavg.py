"""Encrypted FedAvg, side by side in one run: same models, same data, same machine.

    ./dev run python benchmarks/bench_fedavg.py                      # full profile
    ./dev run python benchmarks/bench_fedavg.py --quick              # minutes: fewer rows

Systems (each trains the same apps from ``phe_fl.fedavg.examples`` on Fashion-MNIST,
Debian package ``dataset-fashion-mnist``, one shard per client):

- ``plain``: FedAvg with updates in the clear (no protection), in one process;
- ``phe-fl (in process)``: the same loop with phe-fl's aggregation (each client's weighted
  update packed two reals per complex slot at the last level under a collective key of N
  parties, ciphertexts summed, only the sum threshold-decrypted), in one process;
- ``tenseal (FLARE)``: NVIDIA FLARE's homomorphic aggregation with TenSEAL (one secret key
  shared by every client), in one process;
- ``phe-fl (nodes)``: a real federation, N node processes over mutual TLS, a 128-bit set;
- ``flower`` / ``flower secagg+``: Flower's own FedAvg and SecAgg+ (flwr, run by
  ``benchmarks/fedavg_flower.py`` in its own venv ``benchmarks/.flower-venv``, since flwr
  pins protobuf < 7), when that venv exists.

Printed and saved to ``benchmarks/results/fedavg/fedavg-<model>.json`` (+ a PNG): seconds
per round, bytes sent and received per client per round (ratio to the float32 update),
accuracy on the whole test set after each round, the aggregate's error against the float
sum, and which coalitions can read an individual update.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from fedavg_baselines import (  # noqa: E402
    AggregateStats,
    PlainAggregator,
    TenSEALAggregator,
    Vector,
    run_fedavg,
    weighted_mean,
)

from phe_fl.fedavg import FedAvgSpec  # noqa: E402
from phe_fl.fedavg.packing import (  # noqa: E402
    CHUNKS_PER_STEP,
    add_shares,
    add_updates,
    encrypt_chunks,
    fuse_chunk,
    masked,
    n_chunks,
    release_decimals,
    share_chunk,
)
from phe_fl.mhe import get_parameter_set  # noqa: E402
from phe_fl.mhe.simulation import LocalFederation  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fedavg"
WHO = {
    "plain": "the server and anyone on the path (updates in the clear)",
    "phe-fl (in process)": "no coalition of N-1 parties: only the sum of all N is decrypted",
    "phe-fl (nodes)": "no coalition of N-1 parties: only the sum of all N is decrypted",
    "tenseal (FLARE)": "any single client (every client holds the one secret key)",
}


class CollectiveAggregator:
    """phe-fl's aggregation in one process: N parties of one collective key (simulated
    here, one per node in a deployment), the same packing and protocol calls as the nodes."""

    name = "phe-fl (in process)"
    who_can_read_an_update = WHO[name]

    def __init__(self, params: str, n_parties: int) -> None:
        self.params = get_parameter_set(params)
        self.fed = LocalFederation.setup(self.params, n_parties)

    def aggregate(
        self, updates: list[Vector], weights: list[float]
    ) -> tuple[Vector, AggregateStats]:
        ctx, fed = self.fed.ctx, self.fed
        size = updates[0].size
        total = float(sum(weights))
        chunks = n_chunks(size, self.params)
        decimals = release_decimals(self.params, len(updates))
        n = len(updates)
        encrypt_s: list[float] = []
        sent: list[list[bytes]] = []
        t_all = time.perf_counter()
        for u, w in zip(updates, weights, strict=True):
            t0 = time.perf_counter()
            weighted = (u * np.float32(w / total)).astype(np.float32)
            cts = []
            for first in range(0, chunks, CHUNKS_PER_STEP):
                count = min(CHUNKS_PER_STEP, chunks - first)
                cts += encrypt_chunks(ctx, fed.joint_key, weighted, first, count, n_parties=n)
            sent.append(cts)
            encrypt_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sum_bytes = []  # compact forms added on their quotients, as the tree's nodes do
        for j in range(chunks):
            acc = sent[0][j]
            for client in sent[1:]:
                acc = add_updates(ctx, acc, client[j])
            sum_bytes.append(acc)
        server_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        share_bytes = 0
        mean = np.zeros(chunks * 2 * self.params.slots)
        for j, data in enumerate(sum_bytes):
            masked_sum = masked(ctx, data)  # what every party receives: the sum without c0
            shares = [share_chunk(ctx, party, masked_sum) for party in fed.parties]
            share_bytes = len(shares[0])
            total_share = shares[0]
            for share in shares[1:]:
                total_share = add_shares(ctx, total_share, share)
            values = fuse_chunk(ctx, total_share, data, decimals=decimals)
            mean[j * values.size : (j + 1) * values.size] = values
        decrypt_s = time.perf_counter() - t0
        seconds = time.perf_counter() - t_all
        out = mean[:size].astype(np.float32)
        error = float(np.max(np.abs(out - weighted_mean(updates, weights))))
        up = sum(len(c) for c in sent[0]) + chunks * share_bytes
        # the next global model, and each sum without its c0 (what a party's share needs)
        down = 4 * size + sum(len(masked(ctx, c)) for c in sum_bytes)
        detail = {
            "encrypt_s_max_client": max(encrypt_s),
            "server_s": server_s,
            "decrypt_s": decrypt_s,
            "critical_path_s": max(encrypt_s) + server_s + decrypt_s,
            "update_bytes_per_client": float(sum(len(c) for c in sent[0])),
            "share_bytes_per_client": float(chunks * share_bytes),
        }
        return out, AggregateStats(seconds, up, down, error, detail)


@dataclass
class SystemResult:
    system: str
    who_can_read_an_update: str
    seconds_per_round: list[float]
    train_seconds_per_round: list[float]
    bytes_up_per_client: float
    bytes_down_per_client: float
    accuracy: list[float]
    max_abs_error: float
    notes: str = ""
    detail: dict[str, Any] = field(default_factory=dict)


def _in_process(args: argparse.Namespace, app: str, n_params: int) -> list[SystemResult]:
    from phe_fl.fedavg import examples

    test = examples.test_set("fashion_mnist", rows=args.test_rows)
    options = [
        {"shard": i, "shards": args.clients, "rows": args.rows, "threads": args.threads}
        for i in range(args.clients)
    ]
    spec = FedAvgSpec(app, args.rounds, args.epochs, args.batch_size, args.lr, args.seed)
    out = []
    for make in (
        PlainAggregator,
        lambda: CollectiveAggregator(args.params, args.clients),
        TenSEALAggregator,
    ):
        aggregator = make()
        records = run_fedavg(spec, options, aggregator, test, print)
        out.append(
            SystemResult(
                aggregator.name,
                aggregator.who_can_read_an_update,
                [r.train_s_sum + r.aggregate_s for r in records],
                [r.train_s_sum for r in records],
                float(np.mean([r.bytes_up_per_client for r in records])),
                float(np.mean([r.bytes_down_per_client for r in records])),
                [r.accuracy for r in records],
                max(r.max_abs_error for r in records),
                "one process, clients one after another",
                {"rounds": [asdict(r) for r in records]},
            )
        )
    return out


def _accuracy_over_seeds(args: argparse.Namespace, app: str) -> dict[str, Any]:
    """Final accuracy of plain FedAvg and phe-fl's aggregation (in process) over several
    seeds (model initialization, data split, shuffling): a single run moves by tenths of
    a point with the order of float additions alone, so the gap is judged on means."""
    from phe_fl.fedavg import examples

    test = examples.test_set("fashion_mnist", rows=args.test_rows)
    collective = CollectiveAggregator(args.params, args.clients)
    out: dict[str, list[float]] = {"plain": [], "phe-fl": []}
    for seed in range(args.accuracy_seeds):
        options = [
            {"shard": i, "shards": args.clients, "rows": args.rows, "threads": args.threads}
            | {"seed": seed}
            for i in range(args.clients)
        ]
        spec = FedAvgSpec(app, args.rounds, args.epochs, args.batch_size, args.lr, seed)
        for name, aggregator in (("plain", PlainAggregator()), ("phe-fl", collective)):
            records = run_fedavg(spec, options, aggregator, test)
            out[name].append(records[-1].accuracy)
            print(f"seed {seed} {name}: accuracy {records[-1].accuracy:.4f}")
    diffs = [a - b for a, b in zip(out["phe-fl"], out["plain"], strict=True)]
    return {
        "seeds": args.accuracy_seeds,
        "rounds": args.rounds,
        "accuracy": out,
        "mean": {k: float(np.mean(v)) for k, v in out.items()},
        "std": {k: float(np.std(v)) for k, v in out.items()},
        "mean_difference_points": 100 * float(np.mean(diffs)),
        "max_abs_difference_points": 100 * float(np.max(np.abs(diffs))),
    }


def _over_nodes(args: argparse.Namespace, app: str) -> SystemResult:
    """N real node processes (LocalCluster) at the 128-bit set; per-client bytes from
    each leaf's own NodeStats."""
    import tempfile

    import torch

    from phe_fl.fedavg import FedAvgSpec, examples
    from phe_fl.fedavg.packing import Layout
    from phe_fl.federation import messages as m
    from phe_fl.federation.local import LocalCluster
    from phe_fl.federation.querier import Querier

    tables = [
        f'[fedavg]\napps = {{ bench = "phe_fl.fedavg.examples:{app}" }}\n'
        f"options = {{ shard = {i}, shards = {args.clients}, rows = {args.rows}, "
        f"threads = {args.threads} }}\nthreads = {max(1, args.threads)}\n"
        for i in range(args.clients)
    ]
    events: list[m.ProgressEvent] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            Path(tmp),
            n_nodes=args.clients,
            fanout=args.fanout,
            params=args.params,
            tables=tables,
            deadline_s=3600,
        ) as cluster,
    ):
        q = Querier(cluster.root_address, cluster.querier_tls(), deadline_s=3600)
        t0 = time.perf_counter()
        q.setup("keys")
        setup_s = time.perf_counter() - t0
        arrived: list[float] = []  # when each event reached the querier

        def on_event(ev: m.ProgressEvent) -> None:
            events.append(ev)
            arrived.append(time.perf_counter())

        q.on_event = on_event
        spec = FedAvgSpec("bench", args.rounds, args.epochs, args.batch_size, args.lr, args.seed)
        started = time.perf_counter()
        model = q.fedavg("bench", spec)
        q.close()
    x, y = examples.test_set("fashion_mnist", rows=args.test_rows)
    # per round: each leaf's bytes sent up and received from its parent
    up: list[float] = []
    down: list[float] = []
    seconds: list[float] = []
    train: list[float] = []
    current: dict[str, list[float]] = {}
    # a round's wall time, as the querier sees it: from the previous round's end (round 1:
    # from the job's start, PREPARE included) to this one's, the global model's way down
    # included (the root's own round summary counts training and aggregation only)
    last = started
    for ev, at in zip(events, arrived, strict=True):
        for s in ev.nodes:
            if s.parent_id:
                c = current.setdefault(s.node_id, [0.0, 0.0])
                c[0] += s.bytes_sent
                c[1] += s.bytes_from_parent
        if ev.stage is m.Stage.ROUND_DONE and ev.round is not None:
            leaves = [v for k, v in current.items()]
            up.append(float(np.mean([v[0] for v in leaves])))
            down.append(float(np.mean([v[1] for v in leaves])))
            seconds.append(at - last)
            last = at
            train.append(ev.round.train_seconds)
            current = {}
    # accuracy after the last round (the querier receives the final model only)
    net = getattr(examples, app)({}).model()
    assert model.parameters is not None
    model.load_into(net)
    accuracy = examples.accuracy(net, x, y)
    del torch
    return SystemResult(
        "phe-fl (nodes)",
        WHO["phe-fl (nodes)"],
        seconds,
        train,
        float(np.mean(up[1:] or up)),
        float(np.mean(down[1:] or down)),
        [accuracy],
        0.0,
        f"{args.clients} node processes (tree fanout {args.fanout}) on this machine, "
        f"{args.params}; collective key generation {setup_s:.1f} s; accuracy after the last "
        "round only (the querier gets the final model); bytes: the mean leaf, round 2 on",
        {"layout_parameters": Layout(tuple(model.layout.tensors)).size},
    )


def _flower(args: argparse.Namespace, model: str) -> list[SystemResult]:
    venv = ROOT / "benchmarks" / ".flower-venv" / "bin" / "python"
    if not venv.exists():
        print("flower: no benchmarks/.flower-venv (see benchmarks/fedavg_flower.py); skipped")
        return []
    out = RESULTS / f"flower-{model}.json"
    argv = [
        str(venv), str(ROOT / "benchmarks" / "fedavg_flower.py"),
        "--model", model, "--rounds", str(args.rounds), "--clients", str(args.clients),
        "--rows", str(args.rows), "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
        "--out", str(out),
    ]  # fmt: skip
    if args.test_rows:
        argv += ["--test-rows", str(args.test_rows)]
    done = subprocess.run(argv, capture_output=True, text=True)
    print(done.stdout[-3000:])
    if done.returncode != 0:
        print(f"flower failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return []
    data = json.loads(out.read_text())
    return [_flower_result(name, run) for name, run in data["runs"].items()]


def _flower_result(name: str, run: dict[str, Any]) -> SystemResult:
    """One run of benchmarks/fedavg_flower.py's JSON (bytes: Flower Messages' protobuf
    sizes; client -> server is up)."""
    rounds = run["rounds"]
    label = "flower secagg+" if name == "secaggplus" else "flower"
    who = run.get(
        "who_can_read_an_individual_update",
        "the server and anyone on the path (updates in the clear)",
    )
    return SystemResult(
        label,
        who,
        [r["seconds"] for r in rounds],
        [0.0 for _ in rounds],
        float(np.mean([r["bytes_sent_per_client"]["mean"] for r in rounds[1:] or rounds])),
        float(np.mean([r["bytes_received_per_client"]["mean"] for r in rounds[1:] or rounds])),
        [r["accuracy"] for r in rounds],
        0.0,
        "flwr simulation engine (Ray), its own process; round 1 includes starting Ray",
        {"secaggplus": run.get("secaggplus", {})},
    )


def _steady(seconds: list[float]) -> float:
    """Mean seconds per round from round 2 on (round 1 pays torch's and Ray's warm-up)."""
    return float(np.mean(seconds[1:] or seconds))


def _table(model: str, n_params: int, results: list[SystemResult]) -> str:
    plain = next(r for r in results if r.system == "plain")
    base = _steady(plain.seconds_per_round)
    lines = [
        f"## {model}: {n_params:,} parameters (float32 update {4 * n_params / 2**20:.2f} MiB)",
        "",
        "| system | s/round (from round 2) | vs plain | up/client | down/client | up x | "
        "accuracy | max error | who can read one update |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        s = _steady(r.seconds_per_round)
        lines.append(
            f"| {r.system} | {s:.2f} | {s / base:.2f}x | {r.bytes_up_per_client / 2**20:.2f} MiB"
            f" | {r.bytes_down_per_client / 2**20:.2f} MiB | "
            f"{r.bytes_up_per_client / (4 * n_params):.2f} | {r.accuracy[-1]:.4f} | "
            f"{r.max_abs_error:.1e} | {r.who_can_read_an_update} |"
        )
    return "\n".join(lines)


def _plot(model: str, results: list[SystemResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    names = [r.system for r in results]
    a.bar(names, [_steady(r.seconds_per_round) for r in results])
    a.set_ylabel("seconds per round")
    a.tick_params(axis="x", rotation=30)
    b.bar(names, [r.bytes_up_per_client / 2**20 for r in results], label="up")
    b.bar(
        names,
        [r.bytes_down_per_client / 2**20 for r in results],
        bottom=[r.bytes_up_per_client / 2**20 for r in results],
        label="down",
    )
    b.set_ylabel("MiB per client per round")
    b.legend()
    b.tick_params(axis="x", rotation=30)
    fig.suptitle(f"FedAvg on Fashion-MNIST, {model}")
    fig.tight_layout()
    fig.savefig(RESULTS / f"fedavg-{model}.png", dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,cnn")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--fanout", type=int, default=8, help="node tree fanout (8: a star)")
    parser.add_argument("--rows", type=int, default=0, help="training rows per client (0: all)")
    parser.add_argument("--test-rows", type=int, default=0)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per client")
    parser.add_argument("--params", default="n15-depth11-128")
    parser.add_argument("--systems", default="inprocess,nodes,flower")
    parser.add_argument("--quick", action="store_true", help="2000 rows, 3 rounds")
    parser.add_argument(
        "--accuracy-seeds",
        type=int,
        default=0,
        help="also compare final accuracy of plain FedAvg and phe-fl over this many seeds",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.rounds, args.test_rows = args.rows or 2000, 3, args.test_rows or 2000
    RESULTS.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    from phe_fl.fedavg import examples

    report = []
    for model in args.models.split(","):
        app = {"mlp": "fashion_mnist_mlp", "cnn": "fashion_mnist_cnn"}[model]
        n_params = sum(p.numel() for p in getattr(examples, app)({}).model().state_dict().values())
        systems = args.systems.split(",")
        results: list[SystemResult] = []
        if "inprocess" in systems:
            results += _in_process(args, app, n_params)
        if "nodes" in systems:
            results.append(_over_nodes(args, app))
        if "flower" in systems:
            results += _flower(args, model)
        if args.accuracy_seeds:
            seeds = _accuracy_over_seeds(args, app)
            print(json.dumps(seeds, indent=1))
            (RESULTS / f"fedavg-{model}-seeds.json").write_text(json.dumps(seeds, indent=1))
        if not any(r.system == "plain" for r in results):
            continue
        table = _table(model, n_params, results)
        print(table)
        report.append(table)
        record = {
            "model": model,
            "parameters": n_params,
            "args": vars(args),
            "machine": {"cpus": os.cpu_count()},
            "results": [asdict(r) for r in results],
        }
        (RESULTS / f"fedavg-{model}.json").write_text(json.dumps(record, indent=1))
        _plot(model, results)
    if report:  # an accuracy-only run (--systems none) keeps the tables of the last full one
        (RESULTS / "fedavg.md").write_text("\n\n".join(report) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
