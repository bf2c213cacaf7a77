#!/usr/bin/env python3
"""phe-fl benchmark suite (issue #5): scaling with parties and features, HE overhead,
side by side with single-key CKKS (TenSEAL) and plaintext, ciphertext expansion.

    ./dev run python benchmarks/run.py --quick            # insecure 2^12 set, ~10 minutes
    ./dev run python benchmarks/run.py --full             # 128-bit sets, real hardware
    ./dev run python benchmarks/run.py --quick --only fig1,fig5 --out /tmp/suite

Writes to ``--out`` (default ``benchmarks/results/suite-<profile>/``):
``suite-<profile>.json`` (every figure, the machine, the parameter set of each figure),
``suite-<profile>.md`` (summary tables) and ``suite-<profile>-figN.png`` plots.

Every number comes from a run in this invocation; ratios are taken side by side in the
same run. Sizes the machine cannot hold are skipped with the reason (estimated memory vs
what is available) instead of being extrapolated. See benchmarks/README.md, "Suite".
"""

# ruff: noqa: B023 - the closures timed by _t() run at once, inside their loop iteration
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
for p in (str(ROOT), str(HERE)):
    if p not in sys.path:
        sys.path.insert(0, p)

import mlp_figure  # noqa: E402
import numpy as np  # noqa: E402
import scaling  # noqa: E402

from phe_fl.mhe import get_parameter_set  # noqa: E402

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6")

PROFILES: dict[str, dict[str, Any]] = {
    "quick": {
        "fig1": {
            "params": "insecure-test-n12",
            "nodes": [2, 4, 8, 16],
            "iterations": 4,
            "rows": 32,
            "batch": 16,
            "data": "breast_cancer",
            "features": 30,
        },
        "fig2": {
            "params": "insecure-test-n12",
            "nodes": 4,
            "iterations": 3,
            "rows": 32,
            "batch": 16,
            "data": "synthetic",
            "features": [8, 16, 32, 64, 128, 256, 512, 1024],
        },
        "fig3": {
            "params": "insecure-test-n12",
            "parties": 10,
            "pool": 2,
            "hidden": [16, 16],
            "epochs": 1,
            "batch": 8,
            "learning_rate": 0.3,
            "momentum": 0.5,
            "hidden_bound": 4.0,
            "init_scale": 0.5,
            "seed": 0,
        },
        "fig4": {
            "params": "insecure-test-n12",
            "parties": 10,
            "iterations": 20,
            "dataset": "breast_cancer",
            "split": "iid",
        },
        "fig5": {
            "params": "n14-depth5-128",
            "tenseal_poly": 16384,
            "parties": 10,
            "lengths": [31, 1024],
            "repeat": 3,
        },
    },
    "full": {
        "fig1": {
            "params": "n15-depth11-128",
            "nodes": [2, 4, 8, 16, 32],
            "iterations": 5,
            "rows": 64,
            "batch": 32,
            "data": "breast_cancer",
            "features": 30,
        },
        "fig2": {
            "params": "n15-depth11-128",
            "nodes": 10,
            "iterations": 3,
            "rows": 64,
            "batch": 32,
            "data": "synthetic",
            "features": [8, 16, 32, 64, 128, 256, 512, 1024],
        },
        "fig3": {
            "params": "n15-depth11-128",
            "parties": 10,
            "pool": 1,
            "hidden": [64, 64],
            "epochs": 1,
            "batch": 8,
            "learning_rate": 0.3,
            "momentum": 0.5,
            "hidden_bound": 4.0,
            "init_scale": 0.5,
            "seed": 0,
        },
        "fig4": {
            "params": "n15-depth11-128",
            "parties": 10,
            "iterations": 40,
            "dataset": "breast_cancer",
            "split": "iid",
        },
        "fig5": {
            "params": "n15-depth11-128",
            "tenseal_poly": 32768,
            "parties": 10,
            "lengths": [31, 1024, 8192],
            "repeat": 5,
        },
    },
}


# -- machine -------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import openfhe

    info: dict[str, Any] = {
        "date_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"),
        "platform": platform.platform(),
        "cpu": next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        ),
        "cores": os.cpu_count(),
        "omp_num_threads_in_process": os.environ.get("OMP_NUM_THREADS", "unset"),
        "omp_num_threads_node_processes": 1,
        "memory_total_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "memory_available_bytes_at_start": scaling.mem_available(),
        "load_average_at_start": os.getloadavg(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "openfhe": getattr(openfhe, "__version__", None) or _dist_version("openfhe"),
    }
    for mod in ("tenseal", "sklearn", "matplotlib"):
        info[mod] = _dist_version({"sklearn": "scikit-learn"}.get(mod, mod))
    try:
        info["git_commit"] = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip()
    except OSError:
        pass
    return info


def _dist_version(name: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return None


def _cpu_busy() -> tuple[float, float]:
    """(CPU seconds of the whole machine, CPU seconds of this process and its children)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    ticks = os.sysconf("SC_CLK_TCK")
    total = (sum(int(x) for x in fields[:8]) - int(fields[3]) - int(fields[4])) / ticks
    t = os.times()
    return total, t.user + t.system + t.children_user + t.children_system


def _other_busy(start: tuple[float, float], t0: float) -> float | None:
    """Cores kept busy by processes other than this suite while a figure ran (node
    processes count as this suite's once reaped): above ~0.2 its timings are perturbed."""
    try:
        end = _cpu_busy()
    except OSError:
        return None
    wall = max(time.perf_counter() - t0, 1e-9)
    return max(0.0, ((end[0] - start[0]) - (end[1] - start[1])) / wall)


def params_description(name: str) -> dict[str, Any]:
    ps = get_parameter_set(name)
    return {
        "name": ps.name,
        "ring_dim": ps.ring_dim,
        "slots": ps.slots,
        "mult_depth": ps.mult_depth,
        "scale_bits": ps.scale_bits,
        "first_mod_bits": ps.first_mod_bits,
        "security": ps.security,
    }


# -- memory guard --------------------------------------------------------------------------
_KEY_BYTES: dict[str, int] = {}


def estimate_node_bytes(params: str, n_features: int) -> int:
    """A priori peak memory of one node process: 8 x the serialized size of the evaluation
    keys it holds (rotation keys + relinearization key; one key generated here to measure
    its size) + 300 MB. The factor 8 covers what key generation holds at once (CRPs,
    shares, aggregates, serialized copies, OpenFHE's installed maps); on this project's
    2-core machine it matched the measured peaks within ~25% at 2^12 and 2^15."""
    from phe_fl.mhe.simulation import LocalFederation

    if params not in _KEY_BYTES:
        fed = LocalFederation.setup(get_parameter_set(params), 1, rotations=[1])
        _KEY_BYTES[params] = len(fed.rotation_keys.to_bytes())  # type: ignore[union-attr]
        del fed
        gc.collect()
    key_bytes = _KEY_BYTES[params]
    n_rot = len(scaling.make_job(params, n_features, 1, 16).rotation_indices())
    return 8 * (n_rot + 1) * key_bytes + 300 * 2**20


def fits(
    params: str, n_nodes: int, n_features: int, measured: tuple[int, int] | None
) -> tuple[bool, str]:
    """Whether ``n_nodes`` node processes fit in the memory available now: the root's and
    the other nodes' peaks measured at the previous size if any, else the a-priori estimate
    for every node."""
    if measured:
        root, other = measured
        how = (
            f"root {root / 2**30:.2f} GiB + {n_nodes - 1} x {other / 2**30:.2f} GiB, the peaks "
            "measured at the previous size"
        )
    else:
        root = other = estimate_node_bytes(params, n_features)
        how = f"{n_nodes} x {root / 2**30:.2f} GiB, a-priori estimate from the key sizes"
    need = int((root + (n_nodes - 1) * other) * 1.1)
    have = scaling.mem_available() - 1 * 2**30
    msg = (
        f"{how} (+10%) = {need / 2**30:.1f} GiB needed, {have / 2**30:.1f} GiB available "
        "(MemAvailable - 1 GiB)"
    )
    return need <= have, msg


# -- figures 1 and 2 ------------------------------------------------------------------------
def fig_federation(cfg: dict[str, Any], vary: str) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    sizes = cfg["nodes"] if vary == "nodes" else cfg["features"]
    per_node: tuple[int, int] | None = None
    ps = get_parameter_set(cfg["params"])
    for size in sizes:
        n = size if vary == "nodes" else cfg["nodes"]
        d = cfg["features"] if vary == "nodes" else size
        entry: dict[str, Any] = {"nodes": n, "features": d}
        try:
            job = scaling.make_job(cfg["params"], d, cfg["iterations"], cfg["batch"])
            job.check_fits()
        except Exception as exc:  # noqa: BLE001 - the reason is the result
            entry.update(status="does not fit", reason=str(exc))
            rows.append(entry)
            print(f"  {vary}={size}: does not fit: {exc}", flush=True)
            continue
        ok, msg = fits(cfg["params"], n, d, per_node)
        entry["memory_check"] = msg
        if not ok:
            entry.update(status="skipped: too big for this machine", reason=msg)
            rows.append(entry)
            print(f"  {vary}={size}: skipped, {msg}", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            r = scaling.run_training(
                cfg["params"],
                n,
                d,
                data=cfg["data"],
                rows=cfg["rows"],
                iterations=cfg["iterations"],
                batch=cfg["batch"],
            )
        except Exception as exc:  # noqa: BLE001
            entry.update(status="failed", reason=f"{type(exc).__name__}: {exc}"[:2000])
            rows.append(entry)
            print(f"  {vary}={size}: FAILED {exc}", flush=True)
            continue
        entry.update(r, status="ok", run_s=time.perf_counter() - t0)
        peaks = [p or 0 for p in r["node_peak_rss_bytes"]]
        if peaks and peaks[0] and vary == "nodes":
            per_node = (peaks[0], max(peaks[1:], default=peaks[0]))
        s = r["summary"]
        print(
            f"  {vary}={size}: {s['time_per_iteration_s']:.2f} s/iter, critical path "
            f"{s['critical_path_s']:.2f} s, root combine {s['root_combine_s']:.3f} s, root "
            f"reduce {s['root_reduce_s']:.3f} s, sent/node {s['bytes_sent_per_node_max'] / 1e6:.2f}"
            f" MB, received/node {s['bytes_received_per_node_max'] / 1e6:.2f} MB "
            f"({time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        rows.append(entry)
    note = (
        f"slots per sample D = pow2 >= 2(d+1)-1 must be <= {ps.slots} slots of "
        f"{ps.name}: the largest d that fits is {(ps.slots + 1) // 2 - 1}"
    )
    return {
        "params": params_description(cfg["params"]),
        "config": cfg,
        "rows": rows,
        "layout_limit": note,
    }


# -- figure 3 ------------------------------------------------------------------------------
def fig3(cfg: dict[str, Any]) -> dict[str, Any]:
    """The digits MLP (three weight layers), one measured epoch: see mlp_figure.py."""
    return mlp_figure.run(cfg, scaling.mem_available())


# -- figure 4 ------------------------------------------------------------------------------
def fig4(cfg: dict[str, Any]) -> dict[str, Any]:
    import bench_training

    # bench_training's docstring measures ~15 GB for its 2^15 run (10 parties, one process)
    need = {15: 16, 16: 48}.get(get_parameter_set(cfg["params"]).log_ring_dim, 0) * 2**30
    have = scaling.mem_available() - 2**30
    if need > have:
        return {
            "params": params_description(cfg["params"]),
            "config": cfg,
            "status": "skipped: too big for this machine",
            "reason": f"needs about {need / 2**30:.0f} GiB, {have / 2**30:.1f} GiB available",
        }
    row = bench_training.run_accuracy(
        cfg["dataset"], cfg["split"], cfg["params"], cfg["parties"], cfg["iterations"], 0, False
    )
    return {
        "params": params_description(cfg["params"]),
        "config": cfg,
        "result": row,
        "note": "one process, 10 simulated parties (phe_fl.ml setup_local + Trainer); "
        "twin = the same polynomial-sigmoid math in numpy on the same shards, "
        "batches and iterations; sklearn = exact LogisticRegression on the pooled "
        "training rows. Accuracy on a 20% stratified test split.",
    }


# -- figure 5 ------------------------------------------------------------------------------
def _t(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def _med(xs: list[float]) -> float:
    return float(statistics.median(xs))


def fig5_phe(
    params: str, parties: int, lengths: list[int], repeat: int, at_last_level: bool
) -> dict[str, Any]:
    """One round: every party encrypts its update under the joint key and sends it; the
    server adds them; every party sends a decryption share of the sum; the server
    aggregates the shares and fuses. Run in one process (parties are simulated)."""
    from phe_fl.mhe import ThresholdDecrypt
    from phe_fl.mhe.simulation import LocalFederation

    ps = get_parameter_set(params)
    t_setup, fed = _t(lambda: LocalFederation.setup(ps, parties))
    ctx = fed.ctx
    level = ps.mult_depth - 1 if at_last_level else 0
    proto = ThresholdDecrypt(ctx)
    out: dict[str, Any] = {
        "keygen_s_all_parties_one_process": t_setup,
        "encrypt_level": level,
        "mult_depth": ps.mult_depth,
        "by_length": {},
    }
    rng = np.random.default_rng(0)
    for n in lengths:
        if n > ps.slots:
            out["by_length"][str(n)] = {"status": f"does not fit: {n} > {ps.slots} slots"}
            continue
        runs: dict[str, list[float]] = {
            k: []
            for k in (
                "client_encrypt_s",
                "client_serialize_s",
                "server_aggregate_s",
                "client_share_s",
                "server_fuse_s",
                "max_abs_error",
            )
        }
        sizes: dict[str, int] = {}
        for _ in range(repeat + 1):  # the first round warms up and is dropped
            updates = [rng.uniform(-1, 1, n).astype(np.float32) for _ in range(parties)]
            enc_t, ser_t, blobs = [], [], []
            for u in updates:
                t, ct = _t(
                    lambda u=u: ctx.encrypt(u.astype(np.float64), fed.joint_key, level=level)
                )
                enc_t.append(t)
                t, b = _t(ct.to_bytes)
                ser_t.append(t)
                blobs.append(b)

            def aggregate() -> Any:
                total = ctx.ciphertext_from_bytes(blobs[0])
                for b in blobs[1:]:
                    total = ctx.add(total, ctx.ciphertext_from_bytes(b))
                return total

            t_agg, total = _t(aggregate)
            agg_bytes = total.to_bytes()
            share_t, share_blobs = [], []
            for party in fed.parties:

                def share(party: Any = party) -> bytes:
                    ct = ctx.ciphertext_from_bytes(agg_bytes)  # the party receives the sum
                    return party.decryption_share(ct).to_bytes()

                t, sb = _t(share)
                share_t.append(t)
                share_blobs.append(sb)

            def fuse() -> Any:
                acc = proto.share_from_bytes(share_blobs[0])
                for sb in share_blobs[1:]:
                    acc = proto.aggregate(acc, proto.share_from_bytes(sb))
                return proto.finalize(acc, total, length=n)

            t_fuse, plain = _t(fuse)
            err = float(np.abs(plain - np.sum(updates, axis=0, dtype=np.float64)).max())
            for k, v in (
                ("client_encrypt_s", _med(enc_t)),
                ("client_serialize_s", _med(ser_t)),
                ("server_aggregate_s", t_agg),
                ("client_share_s", _med(share_t)),
                ("server_fuse_s", t_fuse),
                ("max_abs_error", err),
            ):
                runs[k].append(v)
            sizes = {
                "update_ciphertext": len(blobs[0]),
                "aggregate_ciphertext": len(agg_bytes),
                "decryption_share": len(share_blobs[0]),
            }
        med = {k: _med(v[1:]) for k, v in runs.items()}
        per_party_sent = sizes["update_ciphertext"] + sizes["decryption_share"]
        per_party_recv = sizes["aggregate_ciphertext"] + 4 * n  # the sum, then the result
        out["by_length"][str(n)] = {
            **med,
            "client_s_per_round": med["client_encrypt_s"]
            + med["client_serialize_s"]
            + med["client_share_s"],
            "server_s_per_round": med["server_aggregate_s"] + med["server_fuse_s"],
            "bytes": sizes,
            "bytes_sent_per_party": per_party_sent,
            "bytes_received_per_party": per_party_recv,
            "server_bytes_received": parties * per_party_sent,
            "expansion_update": sizes["update_ciphertext"] / (4 * n),
            "expansion_share": sizes["decryption_share"] / (4 * n),
            "runs": runs,
        }
        gc.collect()
    return out


def fig5_tenseal(
    poly: int, depth: int, parties: int, lengths: list[int], repeat: int
) -> dict[str, Any]:
    """One key pair shared by every client (NVIDIA FLARE's HE mode): clients encrypt and
    send; the server adds without the secret key; it sends the sum back and a client
    decrypts."""
    import tenseal as ts

    coeff = [60] + [50] * depth + [60]
    threads = int(os.environ.get("OMP_NUM_THREADS", "0") or 0) or None  # match OpenFHE's
    t_ctx, ctx = _t(
        lambda: ts.context(
            ts.SCHEME_TYPE.CKKS,
            poly_modulus_degree=poly,
            coeff_mod_bit_sizes=coeff,
            n_threads=threads,
        )
    )
    ctx.global_scale = 2**50
    server_ctx = ts.context_from(ctx.serialize(save_secret_key=False))
    out: dict[str, Any] = {
        "poly_modulus_degree": poly,
        "coeff_mod_bit_sizes": coeff,
        "scale_bits": 50,
        "keygen_s": t_ctx,
        "n_threads": threads,
        "public_context_bytes": len(ctx.serialize(save_secret_key=False)),
        "by_length": {},
    }
    rng = np.random.default_rng(0)
    for n in lengths:
        if n > poly // 2:
            out["by_length"][str(n)] = {"status": f"does not fit: {n} > {poly // 2} slots"}
            continue
        runs: dict[str, list[float]] = {
            k: []
            for k in (
                "client_encrypt_s",
                "client_serialize_s",
                "server_aggregate_s",
                "client_decrypt_s",
                "max_abs_error",
            )
        }
        sizes: dict[str, int] = {}
        for _ in range(repeat + 1):
            updates = [rng.uniform(-1, 1, n).astype(np.float32) for _ in range(parties)]
            enc_t, ser_t, blobs = [], [], []
            for u in updates:
                t, v = _t(lambda u=u: ts.ckks_vector(ctx, u.astype(np.float64).tolist()))
                enc_t.append(t)
                t, b = _t(v.serialize)
                ser_t.append(t)
                blobs.append(b)

            def aggregate() -> bytes:
                total = ts.ckks_vector_from(server_ctx, blobs[0])
                for b in blobs[1:]:
                    total += ts.ckks_vector_from(server_ctx, b)
                return total.serialize()

            t_agg, agg = _t(aggregate)
            t_dec, plain = _t(lambda: np.array(ts.ckks_vector_from(ctx, agg).decrypt()))
            err = float(np.abs(plain - np.sum(updates, axis=0, dtype=np.float64)).max())
            for k, val in (
                ("client_encrypt_s", _med(enc_t)),
                ("client_serialize_s", _med(ser_t)),
                ("server_aggregate_s", t_agg),
                ("client_decrypt_s", t_dec),
                ("max_abs_error", err),
            ):
                runs[k].append(val)
            sizes = {"update_ciphertext": len(blobs[0]), "aggregate_ciphertext": len(agg)}
        med = {k: _med(v[1:]) for k, v in runs.items()}
        out["by_length"][str(n)] = {
            **med,
            "client_s_per_round": med["client_encrypt_s"]
            + med["client_serialize_s"]
            + med["client_decrypt_s"],
            "server_s_per_round": med["server_aggregate_s"],
            "bytes": sizes,
            "bytes_sent_per_party": sizes["update_ciphertext"],
            "bytes_received_per_party": sizes["aggregate_ciphertext"],
            "server_bytes_received": parties * sizes["update_ciphertext"],
            "expansion_update": sizes["update_ciphertext"] / (4 * n),
            "runs": runs,
        }
    return out


def fig5_plain(parties: int, lengths: list[int], repeat: int) -> dict[str, Any]:
    """float32 updates sent as raw bytes; the server sums them."""
    out: dict[str, Any] = {"by_length": {}}
    rng = np.random.default_rng(0)
    for n in lengths:
        runs: dict[str, list[float]] = {"client_serialize_s": [], "server_aggregate_s": []}
        for _ in range(max(repeat, 5) + 1):
            updates = [rng.uniform(-1, 1, n).astype(np.float32) for _ in range(parties)]
            t_ser, blobs = _t(lambda updates=updates: [u.tobytes() for u in updates])

            def aggregate(blobs: list[bytes] = blobs) -> bytes:
                total = np.zeros(n, dtype=np.float32)
                for b in blobs:
                    total += np.frombuffer(b, dtype=np.float32)
                return total.tobytes()

            t_agg, _ = _t(aggregate)
            runs["client_serialize_s"].append(t_ser / parties)
            runs["server_aggregate_s"].append(t_agg)
        med = {k: _med(v[1:]) for k, v in runs.items()}
        out["by_length"][str(n)] = {
            **med,
            "client_s_per_round": med["client_serialize_s"],
            "server_s_per_round": med["server_aggregate_s"],
            "bytes_sent_per_party": 4 * n,
            "bytes_received_per_party": 4 * n,
            "server_bytes_received": parties * 4 * n,
            "expansion_update": 1.0,
            "runs": runs,
        }
    return out


def fig5(cfg: dict[str, Any]) -> dict[str, Any]:
    ps = get_parameter_set(cfg["params"])
    res: dict[str, Any] = {"params": params_description(cfg["params"]), "config": cfg}
    print("  plaintext float32 ...", flush=True)
    res["plaintext"] = fig5_plain(cfg["parties"], cfg["lengths"], cfg["repeat"])
    for last in (False, True):
        key = "phe_fl_last_level" if last else "phe_fl"
        print(f"  {key} ...", flush=True)
        res[key] = fig5_phe(cfg["params"], cfg["parties"], cfg["lengths"], cfg["repeat"], last)
        gc.collect()
    print("  tenseal ...", flush=True)
    try:
        res["tenseal"] = fig5_tenseal(
            cfg["tenseal_poly"],
            cfg.get("tenseal_depth", ps.mult_depth),
            cfg["parties"],
            cfg["lengths"],
            cfg["repeat"],
        )
    except ImportError as exc:
        res["tenseal"] = {"status": f"not installed ({exc}): pip install tenseal"}
    except Exception as exc:  # noqa: BLE001 - e.g. a modulus chain SEAL refuses
        res["tenseal"] = {"status": f"failed: {type(exc).__name__}: {exc}"}
    return res


# -- figure 6 (derived from the runs of figures 1, 2 and 5) ---------------------------------
def weights_down_row(fig: str, r: dict[str, Any]) -> dict[str, Any] | None:
    """The encrypted weights broadcast down the tree for MAP, from the bytes each node
    counted (``weights_down_bytes``: the largest request a node got from its parent, per
    iteration); the level they travel at is read off those bytes (the nearest size of a
    ciphertext at some level), the level MAP needs from the job's depth per iteration."""
    iters = r["per_iteration"]
    down = [int(i["weights_down_bytes"]) for i in iters]
    if not down or not max(down):
        return None
    params = r["params"]
    ps = get_parameter_set(params)
    depth = scaling.make_job(
        params, r["features"], r["iterations"], r["batch_per_node"]
    ).depth_per_iteration
    sizes = {lv: scaling.ciphertext_bytes(params, lv) for lv in range(ps.mult_depth)}

    def nearest(b: int) -> int:
        return min(sizes, key=lambda lv: abs(sizes[lv] - b))

    levels = [nearest(b) for b in down]
    map_level = ps.mult_depth - depth  # deepest level with `depth` levels left
    refresh_level = map_level - ps.refresh_min_levels  # ... and a refreshable result
    worst = max(down)
    return {
        "source": fig,
        "message": "encrypted weights down the tree",
        "params": params,
        "nodes": r["nodes"],
        "values": r["features"] + 1,
        "bytes": worst,
        "bytes_per_iteration": down,
        "expansion_vs_float32": worst / (4 * (r["features"] + 1)),
        "level_sent": sorted(set(levels)),
        "level_sent_per_iteration": levels,
        "depth_per_iteration": depth,
        "level_map_needs": map_level,
        "level_map_and_refresh_need": max(refresh_level, 0),
        "level_receiver_needs": f"<= {map_level} for MAP ({depth} levels); <= "
        f"{max(refresh_level, 0)} to keep the root's refresh schedule (+ "
        f"{ps.refresh_min_levels} levels for refreshing the result)",
        "bytes_over_ciphertext_at_needed_level": worst / sizes[map_level],
        "bytes_over_ciphertext_at_refresh_level": worst / sizes[max(refresh_level, 0)],
        "bytes_over_last_level_ciphertext": worst / sizes[ps.mult_depth - 1],
        "ciphertext_bytes_at_level": sizes[map_level],
        "down_over_up": worst / r["summary"]["bytes_sent_per_node_max"],
    }


def fig6(results: dict[str, Any]) -> dict[str, Any]:
    rows = []
    for fig in ("fig1", "fig2"):
        for r in results.get(fig, {}).get("rows", []):
            if r.get("status") != "ok":
                continue
            s = r["summary"]
            it0 = r["per_iteration"][0]
            rows.append(
                {
                    "source": fig,
                    "message": "encrypted gradient up the tree",
                    "params": r["params"],
                    "nodes": r["nodes"],
                    "values": r["features"] + 1,
                    "bytes": s["bytes_sent_per_node_max"],
                    "expansion_vs_float32": s["expansion_vs_float32"],
                    "level_sent": s["gradient_levels"],
                    "level_receiver_needs": "the new weights' level (the root adds the gradient "
                    "to the weights)",
                    "bytes_over_ciphertext_at_needed_level": s["sent_over_ciphertext_at_level"],
                    "bytes_over_last_level_ciphertext": s["sent_over_last_level_ciphertext"],
                    "ciphertext_bytes_at_level": it0["ciphertext_bytes_at_level"],
                }
            )
            down = weights_down_row(fig, r)
            if down:
                rows.append(down)
    f5 = results.get("fig5", {})
    for key, label in (
        ("phe_fl", "phe-fl update, fresh level"),
        ("phe_fl_last_level", "phe-fl update, last level"),
        ("tenseal", "TenSEAL update"),
    ):
        for n, r in f5.get(key, {}).get("by_length", {}).items():
            if "bytes" not in r:
                continue
            rows.append(
                {
                    "params": f5.get("params", {}).get("name")
                    if key != "tenseal"
                    else f"TenSEAL {f5[key].get('poly_modulus_degree')}",
                    "source": "fig5",
                    "message": label,
                    "values": int(n),
                    "bytes": r["bytes"]["update_ciphertext"],
                    "expansion_vs_float32": r["expansion_update"],
                    "level_sent": f5[key].get("encrypt_level", 0),
                    "level_receiver_needs": "last (the server only adds; decryption "
                    "needs no level)",
                }
            )
            if "decryption_share" in r["bytes"]:
                rows.append(
                    {
                        "params": f5.get("params", {}).get("name"),
                        "source": "fig5",
                        "message": label.replace("update", "decryption share"),
                        "values": int(n),
                        "bytes": r["bytes"]["decryption_share"],
                        "expansion_vs_float32": r["expansion_share"],
                        "level_sent": f5[key].get("encrypt_level", 0),
                        "level_receiver_needs": "the aggregate's level",
                    }
                )
    return {
        "rows": rows,
        "note": "expansion = serialized bytes / (4 bytes x values carried). "
        "A CKKS ciphertext has the same size whatever it carries, so short vectors expand "
        "most.",
    }


# -- output ------------------------------------------------------------------------------
def _f(x: Any, fmt: str = ".3f") -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "-"
    return format(x, fmt)


def markdown(res: dict[str, Any]) -> str:
    m = res["machine"]
    L = [
        f"# phe-fl benchmark suite ({res['profile']} profile)",
        "",
        f"{m['date_utc']} UTC; {m['cpu']}, {m['cores']} cores, "
        f"{m['memory_total_bytes'] / 2**30:.0f} GiB; node processes 1 OpenMP thread each, "
        f"in-process figures OMP_NUM_THREADS={m['omp_num_threads_in_process']}; Python "
        f"{m['python']}, openfhe {m['openfhe']}, tenseal {m['tenseal']}; total "
        f"{res['total_s']:.0f} s. Every figure below was measured in this invocation.",
        "",
        "Cores kept busy by other processes while each figure ran (above ~0.2 the timings "
        "are perturbed): "
        + ", ".join(
            f"{k} {_f(v.get('cores_busy_other_processes'), '.2f')}"
            for k, v in res.get("contention", {}).items()
        )
        + ".",
        "",
    ]
    for fig, title, key in (
        ("fig1", "1. Scaling with parties", "nodes"),
        ("fig2", "2. Scaling with features", "features"),
    ):
        f = res["figures"].get(fig)
        if not f:
            continue
        c = f["config"]
        L += [
            f"## {title} ({f['params']['name']})",
            "",
            f"Logistic regression, {c['iterations']} iterations, {c['rows']} {c['data']} rows "
            f"and batch {c['batch']} per node, node processes over gRPC/TLS on localhost, "
            f"binary tree. Medians over iterations. {f['layout_limit']}.",
            "",
            "Every node times and counts its own part and reports it up the tree: its MAP "
            "(encrypted gradient), its COMBINE (adding its children's gradients), the payload "
            "bytes it sent up and down and received from its parent (the encrypted weights) "
            "and its children. Critical path: the longest chain of dependent per-node work "
            "(a node's MAP runs in parallel with its children's subtrees; its COMBINE and "
            "serialization wait for both), from the nodes' own seconds; with fewer cores "
            "than nodes these include waiting for a core. Bytes per node are maxima over "
            "nodes, per iteration.",
            "",
            "| N | d | s/iter | MAP+COMBINE wall s | critical path s | root COMBINE s | "
            "root REDUCE s | mean node MAP s | inner node COMBINE s | sent up/node MB | "
            "sent down/node MB | recv/node MB | refreshes | node peak RSS MB | status |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in f["rows"]:
            if r.get("status") != "ok":
                L.append(
                    f"| {r['nodes']} | {r['features']} | - | - | - | - | - | - | - | - | - | - "
                    f"| - | - | {r['status']}: {r.get('reason', '')} |"
                )
                continue
            s = r["summary"]
            peak = max((p for p in r["node_peak_rss_bytes"] if p), default=0)
            L.append(
                f"| {r['nodes']} | {r['features']} | {_f(s['time_per_iteration_s'])} | "
                f"{_f(s['mapcombine_wall_s'])} | {_f(s['critical_path_s'])} | "
                f"{_f(s['root_combine_s'])} | {_f(s['root_reduce_s'])} | "
                f"{_f(s['mean_node_map_s'])} | {_f(s['inner_node_combine_s'])} | "
                f"{s['bytes_sent_per_node_max'] / 1e6:.3f} | "
                f"{s['bytes_sent_down_per_node_max'] / 1e6:.3f} | "
                f"{s['bytes_received_per_node_max'] / 1e6:.3f} | {s['refreshes']} | "
                f"{peak / 2**20:.0f} | ok |"
            )
        L += ["", growth_note(f, key), ""]
    f3 = res["figures"].get("fig3")
    if f3:
        L += ["## 3. MLP (digits, three weight layers, N = 10)", ""] + mlp_figure.markdown(f3)
    f4 = res["figures"].get("fig4")
    if f4 and "result" not in f4:
        L += [
            f"## 4. HE overhead ({f4['params']['name']})",
            "",
            f"{f4['status']}: {f4['reason']}",
            "",
        ]
    elif f4:
        r = f4["result"]
        L += [
            f"## 4. HE overhead ({f4['params']['name']})",
            "",
            f"{r['dataset']} ({r['split']}), {r['parties']} parties, {r['iterations']} "
            f"iterations. {f4['note']}",
            "",
            "| encrypted s | twin s | encrypted / twin | acc encrypted | acc twin | "
            "acc sklearn | max abs(enc - twin) weights | refreshes |",
            "|---:|---:|---:|---:|---:|---:|---:|---:|",
            f"| {r['seconds_encrypted']:.2f} | {r['seconds_twin']:.4f} | "
            f"{r['encrypted_over_twin']:.0f}x | {r['acc_encrypted']:.4f} | "
            f"{r['acc_twin']:.4f} | {r['acc_sklearn']:.4f} | "
            f"{r['max_abs_weight_diff']:.2e} | {r['refreshes']} |",
            "",
        ]
    f5 = res["figures"].get("fig5")
    if f5:
        c = f5["config"]
        L += [
            f"## 5. One aggregation round, side by side ({c['parties']} parties)",
            "",
            f"phe-fl: {f5['params']['name']} (multiparty key: encrypt under the joint key, "
            "server adds, every party sends a decryption share, server fuses); TenSEAL: "
            f"single-key CKKS, ring {c['tenseal_poly']}, same modulus chain shape "
            "(one key pair held by every client, server adds, a client decrypts, as NVIDIA "
            "FLARE does); plaintext: float32 bytes summed. Parties simulated in one process; "
            "client times are per party, medians of "
            f"{c['repeat']} rounds after a warm-up.",
            "",
            "| scheme | values | client ms/round | server ms/round | sent/party KB | "
            "recv/party KB | server recv KB | expansion | max abs error | vs plaintext time "
            "(client+server) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for key, label in (
            ("plaintext", "plaintext float32"),
            ("tenseal", "TenSEAL single-key"),
            ("phe_fl", "phe-fl multiparty (fresh)"),
            ("phe_fl_last_level", "phe-fl multiparty (last level)"),
        ):
            for n, r in f5.get(key, {}).get("by_length", {}).items():
                if "client_s_per_round" not in r:
                    L.append(f"| {label} | {n} | {r.get('status', '')} |||||||")
                    continue
                base = f5["plaintext"]["by_length"][n]
                ratio = (r["client_s_per_round"] + r["server_s_per_round"]) / max(
                    base["client_s_per_round"] + base["server_s_per_round"], 1e-12
                )
                L.append(
                    f"| {label} | {n} | {r['client_s_per_round'] * 1e3:.3f} | "
                    f"{r['server_s_per_round'] * 1e3:.3f} | "
                    f"{r['bytes_sent_per_party'] / 1e3:.1f} "
                    f"| {r['bytes_received_per_party'] / 1e3:.1f} | "
                    f"{r['server_bytes_received'] / 1e3:.0f} | "
                    f"{r['expansion_update']:.0f} | {_f(r.get('max_abs_error'), '.1e')} | "
                    f"{ratio:.0f}x |"
                )
        L += ["", res.get("fig5_summary", ""), ""]
    f6 = res["figures"].get("fig6")
    if f6:
        L += [
            "## 6. Ciphertext expansion",
            "",
            f6["note"],
            "",
            "| source | params | message | values | bytes | bytes / float32 bytes | level sent | "
            "bytes / ciphertext at needed level | bytes / last-level ciphertext |",
            "|---|---|---|---:|---:|---:|---|---:|---:|",
        ]
        for r in f6["rows"]:
            L.append(
                f"| {r['source']} {r.get('nodes', '') and 'N=' + str(r.get('nodes'))} | "
                f"{r.get('params', '')} | {r['message']} | {r['values']} | {r['bytes']} | "
                f"{r['expansion_vs_float32']:.0f} | {r['level_sent']} | "
                f"{_f(r.get('bytes_over_ciphertext_at_needed_level'))} | "
                f"{_f(r.get('bytes_over_last_level_ciphertext'))} |"
            )
        L += [
            "",
            "Gradients travel at the level of the updated weights (the root adds them to "
            "the weights, so it needs them there): bytes / ciphertext at that level ~1 means "
            "nothing travels above the level the receiver needs; the last-level column shows "
            "what the same values would cost after dropping every remaining level. In figure "
            "5 the server only adds and decrypts: the last-level rows show what encrypting at "
            "the lowest level saves.",
            "",
            "The weights go down at the lowest level that keeps the root's refresh schedule "
            "(`Trainer.broadcast_levels`): when the updated weights will be refreshed "
            "before the next iteration anyway, MAP's depth plus the levels the collective "
            "refresh needs; otherwise (and on the last iteration) every level they have. "
            "Their bytes column is the largest over iterations; the needed-level column is "
            "relative to the deepest level MAP alone could take, so what exceeds 1 is the "
            "refresh's minimum (and the levels kept to avoid an extra refresh).",
            "",
        ]
        same: dict[str, list[str]] = {}  # identical runs but for N or d: one line
        for r in f6["rows"]:
            if r["message"] == "encrypted weights down the tree":
                line = (
                    f"{r['params']}: weights down {r['bytes_per_iteration']} bytes per "
                    f"iteration at levels {r['level_sent_per_iteration']} (MAP needs <= "
                    f"{r['level_map_needs']}, with the refresh <= "
                    f"{r['level_map_and_refresh_need']}); down / up {r['down_over_up']:.2f}"
                )
                same.setdefault(line, []).append(
                    f"{r['source']} N={r['nodes']} d={r['values'] - 1}"
                )
        L += [f"- {', '.join(runs)}, {line}" for line, runs in same.items()] + [""]
    L += ["## Not measured", ""] + [f"- {x}" for x in res["not_measured"]] + [""]
    return "\n".join(L)


def growth_note(f: dict[str, Any], key: str) -> str:
    ok = [r for r in f["rows"] if r.get("status") == "ok"]
    if len(ok) < 2:
        return "Fewer than two sizes ran: no growth estimate."
    xs = np.array([r[key] for r in ok], float)
    ys = np.array([r["summary"]["time_per_iteration_s"] for r in ok], float)
    slope = float(np.polyfit(np.log(xs), np.log(ys), 1)[0])
    f["loglog_slope_time_per_iteration"] = slope
    return (
        f"Measured growth of time per iteration over {key} {int(xs[0])}..{int(xs[-1])}: "
        f"log-log slope {slope:.2f} (1 = linear, 0 = flat; logarithmic growth shows as a "
        f"slope falling towards 0). POSEIDON reports linear growth in N and logarithmic in "
        f"d; these are this machine's numbers, with {f['rows'][0].get('params', '')} and "
        "all node processes sharing its cores."
    )


def fig5_summary(f5: dict[str, Any]) -> str:
    lines = [
        "What the multiparty key buys: with TenSEAL/FLARE every client holds the one "
        "secret key, so any client (or anyone who obtains one client's key) can decrypt "
        "every other client's update it sees, and the server must be trusted not to "
        "collude with a client. With phe-fl's joint key no party, server included, can "
        "decrypt anything alone: a decryption needs a share from every party, so an "
        "individual update is never decrypted, only the aggregate, and only when all "
        "parties agree. What it costs, measured here:"
    ]
    for n, t in f5.get("tenseal", {}).get("by_length", {}).items():
        p = f5.get("phe_fl", {}).get("by_length", {}).get(n)
        q = f5.get("phe_fl_last_level", {}).get("by_length", {}).get(n)
        if not p or "client_s_per_round" not in t or "client_s_per_round" not in p:
            continue
        lines.append(
            f"- {n} values: client time per round {p['client_s_per_round'] * 1e3:.1f} ms "
            f"(phe-fl) vs {t['client_s_per_round'] * 1e3:.1f} ms (TenSEAL), server "
            f"{p['server_s_per_round'] * 1e3:.1f} vs {t['server_s_per_round'] * 1e3:.1f} ms; "
            f"bytes sent per party {p['bytes_sent_per_party'] / 1e3:.0f} KB vs "
            f"{t['bytes_sent_per_party'] / 1e3:.0f} KB (the decryption share is the extra "
            f"message: {p['bytes']['decryption_share'] / 1e3:.0f} KB)"
            + (
                f"; encrypting at the last level brings phe-fl to "
                f"{q['bytes_sent_per_party'] / 1e3:.0f} KB and {q['client_s_per_round'] * 1e3:.1f}"
                f" ms"
                if q and "bytes_sent_per_party" in q
                else ""
            )
            + "."
        )
    for n, t in f5.get("tenseal", {}).get("by_length", {}).items():
        p = f5.get("phe_fl", {}).get("by_length", {}).get(n)
        if p and "max_abs_error" in t and "max_abs_error" in p:
            lines.append(
                f"- precision of the sum of {n} values: max abs error {p['max_abs_error']:.1e} "
                f"(phe-fl: the flooding noise every decryption share carries, so that shares "
                f"leak nothing about a party's key) vs {t['max_abs_error']:.1e} (TenSEAL, no "
                "flooding)."
            )
            break
    kg = f5.get("phe_fl", {}).get("keygen_s_all_parties_one_process")
    if kg is not None:
        lines.append(
            f"- plus a one-off collective key generation ({kg:.1f} s for all parties in "
            "one process here; over a network it is rounds of key shares) and one "
            "extra network round per decryption; every party must be online to "
            "decrypt."
        )
    return "\n".join(lines)


def plots(res: dict[str, Any], out: Path, stem: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for fig, key, xlabel in (
        ("fig1", "nodes", "data providers N"),
        ("fig2", "features", "features d"),
    ):
        f = res["figures"].get(fig)
        ok = [r for r in (f or {}).get("rows", []) if r.get("status") == "ok"]
        if not ok:
            continue
        xs = [r[key] for r in ok]
        s = [r["summary"] for r in ok]
        p, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        ax = axes[0]
        for k, lab in (
            ("time_per_iteration_s", "time per iteration"),
            ("critical_path_s", "critical path (dependent per-node work)"),
            ("mapcombine_wall_s", "MAP+COMBINE wall"),
            ("root_combine_s", "root COMBINE"),
            ("root_reduce_s", "root REDUCE"),
        ):
            ax.plot(xs, [v[k] for v in s], "o-", label=lab)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("seconds")
        ax.legend(fontsize=8)
        ax.set_title("time")
        ax = axes[1]
        ax.plot(
            xs, [v["bytes_sent_per_node_max"] / 1e6 for v in s], "o-", label="sent up (max node)"
        )
        ax.plot(
            xs,
            [v["bytes_sent_down_per_node_max"] / 1e6 for v in s],
            "^-",
            label="sent down (max node)",
        )
        ax.plot(
            xs,
            [v["bytes_received_per_node_max"] / 1e6 for v in s],
            "s-",
            label="received from parent + children (max node)",
        )
        ax.set_xscale("log", base=2)
        ax.set_xlabel(xlabel)
        ax.set_ylabel("MB per iteration")
        ax.legend(fontsize=8)
        ax.set_title("bytes")
        ax = axes[2]
        for i, r in enumerate(ok):
            its = r["per_iteration"]
            ax.plot(
                range(r["nodes"]),
                np.median([it["node_seconds"] for it in its], axis=0),
                "o-",
                color=f"C{i % 10}",
                label=f"{key}={r[key]} MAP",
            )
            ax.plot(
                range(r["nodes"]),
                np.median([it["node_combine_seconds"] for it in its], axis=0),
                "x:",
                color=f"C{i % 10}",
            )
        ax.set_xlabel("node index (0 = root)")
        ax.set_ylabel("seconds (median): MAP solid, COMBINE dotted")
        ax.legend(fontsize=8)
        ax.set_title("per node")
        skipped = [f"{r[key]}: {r['status']}" for r in f["rows"] if r.get("status") != "ok"]
        p.suptitle(
            f"{fig}: {f['params']['name']}"
            + (f"  (not run: {'; '.join(skipped)})" if skipped else ""),
            fontsize=9,
        )
        p.tight_layout()
        name = f"{stem}-{fig}.png"
        p.savefig(out / name, dpi=90)
        plt.close(p)
        written.append(name)
    f4 = res["figures"].get("fig4")
    f5 = res["figures"].get("fig5")
    if f4 or f5:
        p, axes = plt.subplots(1, 3, figsize=(15, 4.2))
        if f4 and "result" in f4:
            r = f4["result"]
            axes[0].bar(
                ["encrypted", "twin", "sklearn"],
                [r["acc_encrypted"], r["acc_twin"], r["acc_sklearn"]],
                color=["C3", "C0", "C2"],
            )
            axes[0].set_ylim(0.5, 1.0)
            axes[0].set_title(
                f"fig4: accuracy; enc/twin time {r['encrypted_over_twin']:.0f}x", fontsize=9
            )
        if f5:
            labels, cl, sv, by = [], [], [], []
            n = str(max(int(k) for k in f5["plaintext"]["by_length"]))
            for key, lab in (
                ("plaintext", "plain"),
                ("tenseal", "TenSEAL"),
                ("phe_fl", "phe-fl"),
                ("phe_fl_last_level", "phe-fl last lvl"),
            ):
                r = f5.get(key, {}).get("by_length", {}).get(n, {})
                if "client_s_per_round" in r:
                    labels.append(lab)
                    cl.append(r["client_s_per_round"] * 1e3)
                    sv.append(r["server_s_per_round"] * 1e3)
                    by.append(r["bytes_sent_per_party"] / 1e3)
            x = np.arange(len(labels))
            axes[1].bar(x - 0.2, cl, 0.4, label="client / party")
            axes[1].bar(x + 0.2, sv, 0.4, label="server")
            axes[1].set_yscale("log")
            axes[1].set_xticks(x, labels, fontsize=8)
            axes[1].set_ylabel("ms per round")
            axes[1].legend(fontsize=8)
            axes[1].set_title(
                f"fig5: one round, {n} values, {f5['config']['parties']} parties", fontsize=9
            )
            axes[2].bar(x, by, color="C4")
            axes[2].set_yscale("log")
            axes[2].set_xticks(x, labels, fontsize=8)
            axes[2].set_ylabel("KB sent per party per round")
            axes[2].set_title("fig5: bytes", fontsize=9)
        p.tight_layout()
        name = f"{stem}-fig4-fig5.png"
        p.savefig(out / name, dpi=90)
        plt.close(p)
        written.append(name)
    f6 = res["figures"].get("fig6")
    if f6 and f6["rows"]:
        p, ax = plt.subplots(figsize=(8, 4.8))
        series: dict[str, list[tuple[int, float]]] = {}
        for r in f6["rows"]:
            lab = r["message"] if r["source"] == "fig5" else f"{r['source']}: {r['message']}"
            lab += f" ({r.get('params', '?')})"
            series.setdefault(lab, []).append((r["values"], r["expansion_vs_float32"]))
        for i, (lab, pts) in enumerate(sorted(series.items())):
            pts = sorted(set(pts))
            ax.plot([x for x, _ in pts], [y for _, y in pts], "os^vD<>"[i % 7] + "-", label=lab)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("values carried (float32)")
        ax.set_ylabel("bytes on the wire / float32 bytes")
        ax.legend(fontsize=7)
        ax.set_title("fig6: ciphertext expansion", fontsize=9)
        p.tight_layout()
        name = f"{stem}-fig6.png"
        p.savefig(out / name, dpi=90)
        plt.close(p)
        written.append(name)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--quick", action="store_true", help="laptop / CI profile (default)")
    g.add_argument("--full", action="store_true", help="128-bit sets, N up to 32, d up to 1024")
    ap.add_argument(
        "--out", type=Path, help="output folder (default benchmarks/results/suite-<profile>/)"
    )
    ap.add_argument("--only", default="", help="comma-separated figures, e.g. fig1,fig5")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIG.KEY=JSON",
        help="override a profile setting, e.g. --set 'fig1.nodes=[2,4]'",
    )
    args = ap.parse_args(argv)
    profile = "full" if args.full else "quick"
    cfgs = json.loads(json.dumps(PROFILES[profile]))
    for s in args.set:
        k, v = s.split("=", 1)
        fig, key = k.split(".", 1)
        cfgs[fig][key] = json.loads(v)
    only = [x.strip() for x in args.only.split(",") if x.strip()] or list(FIGURES)
    bad = [x for x in only if x not in FIGURES]
    if bad:
        ap.error(f"unknown figures {bad}; choose from {', '.join(FIGURES)}")
    out = args.out or HERE / "results" / f"suite-{profile}"
    out.mkdir(parents=True, exist_ok=True)
    stem = f"suite-{profile}"
    t_all = time.perf_counter()
    res: dict[str, Any] = {
        "schema": "phe-fl/bench-suite/1",
        "profile": profile,
        "machine": machine(),
        "figures_requested": only,
        "figures": {},
        "errors": {},
        "timings_s": {},
        "contention": {},
    }
    runners = {
        "fig1": lambda: fig_federation(cfgs["fig1"], "nodes"),
        "fig2": lambda: fig_federation(cfgs["fig2"], "features"),
        "fig3": lambda: fig3(cfgs["fig3"]),
        "fig4": lambda: fig4(cfgs["fig4"]),
        "fig5": lambda: fig5(cfgs["fig5"]),
    }
    for fig in only:
        if fig == "fig6":
            continue
        print(f"{fig} ...", flush=True)
        t0 = time.perf_counter()
        busy0 = _cpu_busy()
        try:
            res["figures"][fig] = runners[fig]()
        except Exception as exc:  # noqa: BLE001 - recorded, the others still run
            traceback.print_exc()
            res["errors"][fig] = f"{type(exc).__name__}: {exc}"
        res["timings_s"][fig] = time.perf_counter() - t0
        res["contention"][fig] = {
            "load_average_1min_after": os.getloadavg()[0],
            "mem_available_bytes_after": scaling.mem_available(),
            "cores_busy_other_processes": _other_busy(busy0, t0),
        }
        gc.collect()
    if "fig6" in only:
        res["figures"]["fig6"] = fig6(res["figures"])
    if "fig5" in res["figures"]:
        res["fig5_summary"] = fig5_summary(res["figures"]["fig5"])
    res["not_measured"] = [
        "fig1/fig2 bytes are payload (envelope) bytes counted by the nodes; protobuf, gRPC "
        "and TLS framing on the wire is not counted.",
    ] + [f"{k}: error {v}" for k, v in res["errors"].items()]
    for fig in ("fig1", "fig2"):
        for r in res["figures"].get(fig, {}).get("rows", []):
            if r.get("status") != "ok":
                res["not_measured"].append(
                    f"{fig} N={r['nodes']} d={r['features']}: {r['status']}: {r.get('reason', '')}"
                )
    res["total_s"] = time.perf_counter() - t_all
    md = markdown(res)  # also stores the growth slopes into the figures
    if not args.no_plots:
        try:
            res["plots"] = plots(res, out, stem)
        except ImportError as exc:
            res["plots"] = []
            print(f"no plots: {exc} (pip install -e .[bench])", flush=True)
    (out / f"{stem}.json").write_text(json.dumps(res, indent=1, default=float))
    (out / f"{stem}.md").write_text(md)
    print(md)
    print(
        f"wrote {out}/{stem}.json, .md"
        + (f", {', '.join(res.get('plots', []))}" if res.get("plots") else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
