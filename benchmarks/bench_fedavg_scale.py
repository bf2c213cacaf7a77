"""Encrypted FedAvg at scale: a 10M-parameter model through a real federation in bounded
memory, and encryption / decryption shares on every core.

    ./dev run python benchmarks/bench_fedavg_scale.py                 # 10M parameters
    ./dev run python benchmarks/bench_fedavg_scale.py --width 1258    # 1M, quicker

Part 1 runs N node processes (LocalCluster, the 128-bit set n15-depth11-128) training
``fashion_mnist_wide`` (784-W-10, 10.0M parameters at the default width) for R rounds and
samples every node's resident memory (/proc/<pid>/status) while they do: what a node holds
beyond its model is one step's chunks (16 ciphertexts), not the whole update encrypted.
Part 2 times ``encrypt_chunks`` and the decryption shares of 16 chunks with 1 thread and
with every core, in one process, side by side.
Saved to ``benchmarks/results/fedavg/scale-<parameters>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from phe_fl.fedavg.packing import (  # noqa: E402
    CHUNKS_PER_STEP,
    chunk_size,
    encrypt_chunks,
    masked,
    n_chunks,
    parallel,
    share_chunk,
)
from phe_fl.mhe import get_parameter_set  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "fedavg"


def _rss_mib(pid: int, field: str = "VmRSS") -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Peak resident memory of each process, sampled every 0.2 s."""

    def __init__(self, pids: dict[str, int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = {k: 0.0 for k in pids}
        self.stop_event = threading.Event()

    def run(self) -> None:
        while not self.stop_event.is_set():
            for name, pid in self.pids.items():
                self.peak[name] = max(self.peak[name], _rss_mib(pid))
            time.sleep(0.2)


def federation(args: argparse.Namespace) -> dict[str, Any]:
    from phe_fl.fedavg import FedAvgSpec
    from phe_fl.federation import messages as m
    from phe_fl.federation.local import LocalCluster
    from phe_fl.federation.querier import Querier

    tables = [
        '[fedavg]\napps = { wide = "phe_fl.fedavg.examples:fashion_mnist_wide" }\n'
        f"options = {{ shard = {i}, shards = {args.nodes}, rows = {args.rows}, threads = 1, "
        f"width = {args.width} }}\nthreads = 0\n"
        for i in range(args.nodes)
    ]
    events: list[m.ProgressEvent] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(
            Path(tmp),
            n_nodes=args.nodes,
            fanout=2,
            params=args.params,
            tables=tables,
            deadline_s=3600,
        ) as c,
    ):
        pids = {f"node-{i}": p.pid for i, p in enumerate(c.processes)}
        q = Querier(c.root_address, c.querier_tls(), deadline_s=3600)
        q.setup("keys")
        before = {k: _rss_mib(pid) for k, pid in pids.items()}
        sampler = Sampler(pids)
        sampler.start()
        q.on_event = events.append
        t0 = time.perf_counter()
        spec = FedAvgSpec("wide", args.rounds, 1, 64, 0.01, 0)
        model = q.fedavg("wide", spec)
        total = time.perf_counter() - t0
        sampler.stop_event.set()
        sampler.join()
        hwm = {k: _rss_mib(pid, "VmHWM") for k, pid in pids.items()}
        q.close()
    size = model.layout.size
    params = get_parameter_set(args.params)
    rounds = [asdict_round(ev) for ev in events if ev.stage is m.Stage.ROUND_DONE]
    return {
        "parameters": size,
        "float32_mib": 4 * size / 2**20,
        "chunks_per_round": n_chunks(size, params),
        "chunks_per_step": CHUNKS_PER_STEP,
        "seconds_total": total,
        "rounds": rounds,
        "rss_mib_before_job": before,
        "rss_mib_peak_during_job": sampler.peak,
        "rss_mib_high_water_mark": hwm,
        "growth_mib": {k: sampler.peak[k] - before[k] for k in before},
    }


def asdict_round(ev: Any) -> dict[str, Any]:
    r = ev.round
    return {
        "round": ev.iteration,
        "seconds": ev.seconds,
        "train_seconds": r.train_seconds,
        "aggregate_seconds": r.aggregate_seconds,
        "update_mib_per_node": r.update_bytes / 2**20,
        "loss": r.loss,
    }


def cores(args: argparse.Namespace) -> dict[str, Any]:
    """Encryption and decryption shares of one step's 16 chunks: 1 thread vs every core."""
    from phe_fl.mhe.simulation import LocalFederation

    params = get_parameter_set(args.params)
    fed = LocalFederation.setup(params, 2)
    update = np.random.default_rng(0).normal(0, 0.01, CHUNKS_PER_STEP * chunk_size(params))
    update = update.astype(np.float32)
    out: dict[str, Any] = {"cpus": os.cpu_count(), "chunks": CHUNKS_PER_STEP}
    party = fed.parties[1]
    # warm-up: numba compiles its kernels at their first use in a process (about a second)
    (first,) = encrypt_chunks(fed.ctx, fed.joint_key, update, 0, 1, n_parties=2, threads=1)
    share_chunk(fed.ctx, party, masked(fed.ctx, first))
    for threads in (1, os.cpu_count() or 1):
        t0 = time.perf_counter()
        cts = encrypt_chunks(
            fed.ctx, fed.joint_key, update, 0, CHUNKS_PER_STEP, n_parties=2, threads=threads
        )
        enc = time.perf_counter() - t0
        sums = [masked(fed.ctx, ct) for ct in cts]
        t0 = time.perf_counter()
        parallel(functools.partial(share_chunk, fed.ctx, party), sums, threads)
        dec = time.perf_counter() - t0
        out[f"threads_{threads}"] = {"encrypt_s": enc, "decryption_shares_s": dec}
    one, many = out["threads_1"], out[f"threads_{os.cpu_count() or 1}"]
    out["speedup_encrypt"] = one["encrypt_s"] / many["encrypt_s"]
    out["speedup_decryption_shares"] = one["decryption_shares_s"] / many["decryption_shares_s"]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rows", type=int, default=256, help="training rows per node")
    parser.add_argument("--width", type=int, default=12_579, help="hidden units (10.0M params)")
    parser.add_argument("--params", default="n15-depth11-128")
    args = parser.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    record = {"args": vars(args), "cores": cores(args), "federation": federation(args)}
    fed = record["federation"]
    print(json.dumps(record["cores"], indent=1))
    print(
        f"{fed['parameters']:,} parameters ({fed['float32_mib']:.0f} MiB float32), "
        f"{fed['chunks_per_round']} chunks per round in steps of {fed['chunks_per_step']}"
    )
    for r in fed["rounds"]:
        print(
            f"  round {r['round']}: {r['seconds']:.1f} s (training {r['train_seconds']:.1f} s, "
            f"encrypted sum + decryption {r['aggregate_seconds']:.1f} s), "
            f"{r['update_mib_per_node']:.0f} MiB encrypted update per node"
        )
    for node in fed["rss_mib_before_job"]:
        print(
            f"  {node}: {fed['rss_mib_before_job'][node]:.0f} MiB before the job, peak "
            f"{fed['rss_mib_peak_during_job'][node]:.0f} MiB (+{fed['growth_mib'][node]:.0f})"
        )
    out = RESULTS / f"scale-{fed['parameters']}.json"
    out.write_text(json.dumps(record, indent=1))
    print(f"saved {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
