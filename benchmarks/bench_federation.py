"""Federation benchmark: bytes each node sends per training iteration against the
ciphertext it must send, and the wall time of `phe-fl demo` with its defaults.

    python benchmarks/bench_federation.py                      # n15, 5 nodes, 3 iterations
    python benchmarks/bench_federation.py --params insecure-test-n12 --no-demo   # quick

Targets (issue #4): bytes a node sends per iteration <= 1.2x the ciphertexts it must
send, each at the lowest level its receiver needs; `phe-fl demo` under 5 minutes on a
2-core machine. Results: benchmarks/results/federation-<params>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import scaling  # noqa: E402

from phe_fl.demo import demo_job  # noqa: E402
from phe_fl.federation.local import LocalCluster  # noqa: E402
from phe_fl.federation.messages import ProgressEvent  # noqa: E402
from phe_fl.federation.querier import Querier  # noqa: E402
from phe_fl.mhe import get_parameter_set  # noqa: E402


def bytes_per_iteration(params: str, nodes: int, iterations: int) -> dict[str, Any]:
    """Train the demo's logistic regression on ``nodes`` node processes; per iteration and
    node, the bytes it sent up against one ciphertext at the gradient's level (the rows
    come from the training job's progress events, read by ``scaling.iteration_rows``)."""
    events: list[ProgressEvent] = []
    job = demo_job(params, iterations)
    with (
        tempfile.TemporaryDirectory() as tmp,
        LocalCluster(Path(tmp), n_nodes=nodes, fanout=2, params=params) as cluster,
    ):
        querier = Querier(
            cluster.root_address, cluster.querier_tls(), params, on_event=events.append
        )
        try:
            querier.setup("bench-keys")
            events.clear()
            t = time.perf_counter()
            querier.train("bench-train", job)
            train_s = time.perf_counter() - t
        finally:
            querier.close()
    depth = get_parameter_set(params).mult_depth
    rows = []
    for it in scaling.iteration_rows(events, nodes):
        level = depth - it["levels_left_after"]  # the gradient ends at the updated weights' level
        need = scaling.ciphertext_bytes(params, level)
        for i, b in enumerate(it["bytes_sent"]):
            rows.append(
                {
                    "iteration": it["iteration"],
                    "node": f"node-{i}",
                    "bytes_sent": b,
                    "ciphertext_bytes": need,
                    "level": level,
                    "ratio": b / need,
                }
            )
    worst = max(r["ratio"] for r in rows)
    return {
        "rows": rows,
        "worst_ratio": worst,
        "train_seconds": train_s,
        "verdict": "PASS" if worst <= 1.2 else "FAIL",
    }


def demo_seconds() -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    t = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "demo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=1800,
    )
    secs = time.perf_counter() - t
    acc = re.search(r"encrypted training \+ oblivious prediction: ([0-9.]+)", proc.stdout)
    return {
        "seconds": secs,
        "returncode": proc.returncode,
        "accuracy": float(acc[1]) if acc else None,
        "verdict": "PASS" if proc.returncode == 0 and secs < 300 else "FAIL",
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="n15-depth11-128")
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--no-demo", action="store_true", help="skip timing `phe-fl demo`")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    result: dict[str, object] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "unset"),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        },
        "params": args.params,
        "nodes": args.nodes,
        "iterations": args.iterations,
    }
    b = bytes_per_iteration(args.params, args.nodes, args.iterations)
    result["bytes_per_iteration"] = b
    print(
        f"bytes per node per iteration vs one ciphertext at the level the root needs "
        f"({args.params}, {args.nodes} nodes):"
    )
    print(f"  {'iter':>4} {'node':<8} {'sent':>12} {'ciphertext':>12} {'ratio':>6}")
    for r in b["rows"]:
        print(
            f"  {r['iteration']:>4} {r['node']:<8} {r['bytes_sent']:>12} "
            f"{r['ciphertext_bytes']:>12} {r['ratio']:6.3f}"
        )
    print(f"  worst ratio {b['worst_ratio']:.3f} (target <= 1.2): {b['verdict']}")
    if not args.no_demo:
        d = demo_seconds()
        result["demo"] = d
        print(
            f"phe-fl demo with its defaults: {d['seconds']:.0f} s, accuracy {d['accuracy']} "
            f"(target < 300 s): {d['verdict']}"
        )
    out = args.out or ROOT / "benchmarks" / "results" / f"federation-{args.params}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"saved {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
