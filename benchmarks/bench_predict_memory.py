#!/usr/bin/env python3
"""Peak memory of in-process oblivious prediction against the number of rows.

Each measurement runs in a fresh child process: it sets up a federation of ``--parties``
parties in one process (:class:`~phe_fl.mhe.simulation.LocalFederation`), encrypts a random
model, then resets the kernel's peak-RSS counter (``/proc/self/clear_refs``) and predicts
``rows`` random standardized samples, so the peak it reports belongs to prediction alone
(``VmHWM`` after the reset, taken after ``malloc_trim`` so the free heap that key
generation leaves behind does not absorb the growth; key generation is excluded). Two
flows:

* ``stream``: :func:`phe_fl.ml.glm.predict_local` as shipped (one ciphertext's rows
  through encrypt, evaluate, key switch, decrypt before the next);
* ``bulk``: the flow predict_local had before it streamed (every query ciphertext
  encrypted first, then every result evaluated, then every result key-switched, each list
  kept until the end), kept here as the reference;
* ``stream-cache8``: ``stream`` with each simulated party's share cache
  (:class:`phe_fl.mhe.Party`, "cache and resend": the last 256 shares it sent, so a retry
  gets the same noise) cut to 8 entries. The cache holds one key-switch share per result
  ciphertext per party, so below 256 ciphertexts it grows with the rows whatever the
  flow; this flow shows what bounding it (by bytes, in ``phe_fl/mhe/party.py``) leaves.

Two row counts (``--rows``, default one and four times the base count) run side by side
for every parameter set and flow; the table is printed and saved to
``benchmarks/results/predict-memory.json``. Nothing is asserted.

    python benchmarks/bench_predict_memory.py                      # insecure 2^12 set, ~1 min
    python benchmarks/bench_predict_memory.py --params insecure-test-n12 n14-depth5-128
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "benchmarks" / "results" / "predict-memory.json"


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> bool:
    """Hand the heap's free pages back (``malloc_trim``: key generation leaves hundreds of
    MiB free inside the heap, which would hide later growth), then reset ``VmHWM``."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(params: str, rows: int, flow: str, n_features: int, parties: int) -> dict[str, Any]:
    import numpy as np

    from phe_fl.mhe import QuerierKeyPair
    from phe_fl.mhe.simulation import LocalFederation
    from phe_fl.ml import TrainingJob
    from phe_fl.ml import prediction as pred

    degree = 5 if params.startswith(("insecure", "n15", "n16")) else 1  # what fits the levels
    job = TrainingJob(
        n_features=n_features, params=params, activation_degree=degree, activation_bound=10.0
    )
    fed = LocalFederation.setup(job.parameter_set, parties, rotations=job.rotation_indices())
    rng = np.random.default_rng(0)
    weights = fed.encrypt(job.layout.weights_vector(rng.normal(0, 0.3, job.n_weights)))
    querier = QuerierKeyPair.generate(fed.ctx)
    x = rng.normal(size=(rows, n_features))
    if flow == "stream-cache8":
        for party in fed.parties:
            party._kept.size = 8  # private: the diagnosis above, not an API
    reset = _reset_peak()
    before_kib = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if flow in ("stream", "stream-cache8"):
        scores = pred.predict_local(job, fed, weights, x, querier)
    else:  # the flow before streaming: every list of ciphertexts alive at once
        ctx = fed.ctx

        def wire(ct: Any) -> Any:
            return ctx.ciphertext_from_bytes(ct.to_bytes()) if fed.wire else ct

        queries = [wire(q) for q in pred.encrypt_queries(job, ctx, x, fed.joint_key)]
        results = [wire(r) for r in pred.evaluate(job, ctx, weights, queries)]
        switched = [wire(fed.key_switch(r, querier.public_key)) for r in results]
        slots = [querier.decrypt(s) for s in switched]
        scores = pred.decode_scores(job, slots, rows)
    seconds = time.perf_counter() - t0
    peak_kib = _status_kib("VmHWM") if reset else 0
    assert scores.shape == (rows,)
    return {
        "params": params,
        "flow": flow,
        "rows": rows,
        "ciphertexts": job.layout.n_chunks(rows),
        "samples_per_ct": job.layout.samples_per_ct,
        "activation_degree": degree,
        "rss_before_mib": round(before_kib / 1024, 1),
        "peak_rss_mib": round(peak_kib / 1024, 1) if reset else None,
        "peak_growth_mib": round((peak_kib - before_kib) / 1024, 1) if reset else None,
        "process_peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "seconds": round(seconds, 2),
    }


def run_child(params: str, rows: int, flow: str, n_features: int, parties: int) -> dict[str, Any]:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        params,
        str(rows),
        flow,
        "--features",
        str(n_features),
        "--parties",
        str(parties),
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", nargs="+", default=["insecure-test-n12"])
    ap.add_argument(
        "--rows",
        type=int,
        nargs=2,
        default=None,
        help="two row counts (default: 16 and 64 ciphertexts' worth for each parameter set)",
    )
    flows = ["stream", "bulk", "stream-cache8"]
    ap.add_argument("--flows", nargs="+", default=flows, choices=flows)
    ap.add_argument("--features", type=int, default=30)
    ap.add_argument("--parties", type=int, default=3)
    ap.add_argument("--output", type=Path, default=RESULTS)
    ap.add_argument("--child", nargs=3, metavar=("PARAMS", "ROWS", "FLOW"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        params, rows, flow = args.child
        print(json.dumps(child(params, int(rows), flow, args.features, args.parties)))
        return 0

    from phe_fl.mhe import get_parameter_set
    from phe_fl.ml.packing import GLMLayout

    runs = []
    for params in args.params:
        per = GLMLayout(get_parameter_set(params).slots, args.features + 1).samples_per_ct
        row_counts = args.rows or [16 * per, 64 * per]
        for flow in args.flows:
            for rows in row_counts:
                r = run_child(params, rows, flow, args.features, args.parties)
                runs.append(r)
                print(
                    f"{r['params']:18s} {r['flow']:13s} rows={r['rows']:6d} "
                    f"cts={r['ciphertexts']:4d} rss before={r['rss_before_mib']:8.1f} MiB "
                    f"peak={r['peak_rss_mib']} MiB growth={r['peak_growth_mib']} MiB "
                    f"{r['seconds']:.1f} s",
                    flush=True,
                )
    print()
    print(f"{'params':18s} {'flow':13s} {'rows':>13s} {'peak growth MiB':>20s}")
    for params in args.params:
        for flow in args.flows:
            pair = [r for r in runs if r["params"] == params and r["flow"] == flow]
            rows = " / ".join(str(r["rows"]) for r in pair)
            growth = " / ".join(str(r["peak_growth_mib"]) for r in pair)
            print(f"{params:18s} {flow:13s} {rows:>13s} {growth:>20s}")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(
        json.dumps(
            {
                "benchmark": "predict-memory",
                "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "machine": {
                    "platform": platform.platform(),
                    "python": platform.python_version(),
                    "cpus": os.cpu_count(),
                    "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
                },
                "n_features": args.features,
                "parties": args.parties,
                "runs": runs,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"\nsaved {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
