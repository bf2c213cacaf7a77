"""Figures 1, 2 and 6a of the benchmark suite (issue #5): a real federation of node
processes (``LocalCluster``, gRPC + TLS on localhost, fan-out 2) training logistic
regression, measured from the per-node stats every node reports about itself
(``NodeStats``, carried to the querier in the ``nodes`` of the root's ``ProgressEvent`` for
each round over the tree).

What one run measures, per training iteration (see ``iteration_rows``):

* ``wall_s``: the root's whole iteration (level management, collective refresh if any,
  MAP+COMBINE round trip over the tree, REDUCE), the ``ITERATION_DONE`` event's seconds;
  ``refreshes``, ``levels_left_after``, ``levels_sent`` and ``levels_dropped`` are its
  ``summary``;
* ``mapcombine_wall_s``: the root's MAP+COMBINE fan-out, start to finish (the
  ``MAP_COMBINE`` event's seconds; its ``nodes`` give every per-node figure below);
* ``refresh_s``: the iteration's collective refreshes (``REFRESH`` events' seconds);
* ``node_seconds``: each node's own MAP work (its encrypted gradient), as the node timed it;
* ``node_combine_seconds``: each node's COMBINE, loading and adding its children's
  encrypted gradients to its own, as the node timed it (0 on leaves);
* ``node_work_seconds``: own MAP + COMBINE + serializing what the node sends up;
* ``node_subtree_seconds``: each node's request arrival to answer ready (its children's
  subtrees, network and waiting included);
* ``critical_path_s``: the longest chain of dependent per-node work in the tree the nodes
  reported (each names its parent): a node's own MAP runs in parallel with its
  children's subtrees, its COMBINE and serialization after both (see ``critical_path``);
  ``critical_path`` is that chain's node ids, the one whose MAP starts it first;
  ``serial_chain_s``: max over leaf-to-root chains of the sum of their
  ``node_work_seconds`` (as if nothing ran in parallel; an upper bound);
* ``bytes_sent[node]``: payload bytes the node sent up to its parent;
  ``bytes_from_parent[node]``: payload bytes of the request (the encrypted weights) it
  received from its parent (0 at the root); ``bytes_from_children[node]``: payload bytes of
  its children's contributions it received; ``bytes_received`` is their sum;
  ``bytes_to_children[node]``: request payload bytes it passed down to its children.
  Every byte count is what the node itself counted (envelope bytes, not the
  protobuf/gRPC/TLS framing); ``weights_down_bytes`` is the largest ``bytes_from_parent``;
* ``root_combine_s``: the root's COMBINE (adding its children's encrypted gradients to its
  own), as the root timed it;
* ``root_reduce_s``: ``wall_s - mapcombine_wall_s - refresh seconds``: the root's REDUCE
  (the encrypted weight update from the combined gradient), the aggregation work that only
  the root does.

Node processes run one OpenMP thread each (``LocalCluster`` sets OMP_NUM_THREADS=1), so on
a machine with fewer cores than nodes their own MAP seconds include waiting for a core.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from phe_fl.federation.local import LocalCluster
from phe_fl.federation.messages import NodeStats, ProgressEvent, Stage
from phe_fl.federation.querier import Querier
from phe_fl.mhe import Context, QuerierKeyPair, _backend, get_parameter_set
from phe_fl.ml import TrainingJob

START_TIMEOUT_S = 120.0
"""How long the node processes may take to connect into a tree (many nodes, few cores)."""


# -- data ----------------------------------------------------------------------------------
def node_data(kind: str, n_nodes: int, rows: int, n_features: int, seed: int = 0) -> list[Any]:
    """Fixed data per node: ``rows`` rows each, whatever the number of nodes.

    * ``breast_cancer``: rows sampled (with replacement, seed per node) from the
      globally standardized Wisconsin table (569 x 30);
    * ``synthetic``: standard normal features, labels from a fixed random linear model
      (logistic noise), ``n_features`` columns.
    """
    out = []
    if kind == "breast_cancer":
        from sklearn.datasets import load_breast_cancer

        x, y = load_breast_cancer(return_X_y=True)
        x = (x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)
        for i in range(n_nodes):
            idx = np.random.default_rng(seed + i).integers(0, len(x), rows)
            out.append((x[idx], y[idx].astype(float)))
        return out
    w = np.random.default_rng(seed).normal(size=n_features) / np.sqrt(n_features)
    for i in range(n_nodes):
        rng = np.random.default_rng(seed + 1 + i)
        x = rng.normal(size=(rows, n_features))
        p = 1 / (1 + np.exp(-3 * x @ w))
        out.append((x, (rng.random(rows) < p).astype(float)))
    return out


def write_csvs(folder: Path, shards: Sequence[Any]) -> list[Path]:
    """One CSV per node (features..., label), for ``LocalCluster(data_files=...)``."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (x, y) in enumerate(shards):
        path = folder / f"node-{i}.csv"
        np.savetxt(path, np.column_stack([x, y]), delimiter=",", fmt="%.8g")
        paths.append(path)
    return paths


# -- sizes -----------------------------------------------------------------------------------
_CT_SIZE: dict[tuple[str, int], int] = {}


def ciphertext_bytes(params: str, level: int) -> int:
    """Serialized size of one ciphertext at ``level`` (what OpenFHE writes, no envelope)."""
    key = (params, level)
    if key not in _CT_SIZE:
        ctx = Context(get_parameter_set(params))
        keys = QuerierKeyPair.generate(ctx)
        ct = ctx.encrypt(np.zeros(4), keys.public_key, level=level)
        _CT_SIZE[key] = len(_backend.dump(ct._ct))
    return _CT_SIZE[key]


def peak_rss(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def mem_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


# -- one run ---------------------------------------------------------------------------------
def make_job(params: str, n_features: int, iterations: int, batch: int) -> TrainingJob:
    return TrainingJob(
        n_features=n_features,
        params=params,
        iterations=iterations,
        batch_size=batch,
        learning_rate=0.3,
        activation_degree=5,
        activation_bound=8.0,
    )


def _children(parents: dict[str, str]) -> dict[str, list[str]]:
    kids: dict[str, list[str]] = {n: [] for n in parents}
    for n, p in parents.items():
        if p:
            if p not in kids:
                raise ValueError(f"{n} names parent {p!r}, which sent no stats")
            kids[p].append(n)
    return kids


def critical_path(stats: dict[str, NodeStats]) -> tuple[float, list[str]]:
    """The longest chain of dependent per-node work in the tree the nodes reported.

    A node starts its own work when the request reaches it, in parallel with its
    children's subtrees, and can combine only when both are done:
    ``finish(n) = max(own(n), max over children c of finish(c)) + combine(n) +
    serialize(n)``, the root's finish being the critical path (unlimited cores, free
    network). Returns it and its chain of node ids, the node whose own work starts it
    first (then each ancestor's COMBINE + serialization)."""
    parents = {n: s.parent_id for n, s in stats.items()}
    roots = [n for n, p in parents.items() if not p]
    if len(roots) != 1:
        raise ValueError(f"node stats name {len(roots)} roots: {roots}")
    kids = _children(parents)

    def finish(n: str, depth: int = 0) -> tuple[float, list[str]]:
        if depth > len(stats):
            raise ValueError("node stats do not form a tree (a cycle)")
        best, path = stats[n].seconds, [n]
        for c in kids[n]:
            f, p = finish(c, depth + 1)
            if f > best:
                best, path = f, [*p, n]
        return best + stats[n].combine_seconds + stats[n].serialize_seconds, path

    return finish(roots[0])


def serial_chain(stats: dict[str, NodeStats]) -> float:
    """Max over leaf-to-root chains of the sum of the chain's per-node work (MAP +
    COMBINE + serialization), as if no node worked while another did: an upper bound."""
    parents = {n: s.parent_id for n, s in stats.items()}
    kids = _children(parents)
    best = 0.0
    for leaf in (n for n in stats if not kids[n]):
        total, j, hops = 0.0, leaf, 0
        while j:
            total += stats[j].work_seconds
            j, hops = parents[j], hops + 1
            if hops > len(stats):
                raise ValueError("node stats do not form a tree (a cycle)")
        best = max(best, total)
    return best


def iteration_rows(events: Iterable[ProgressEvent], n_nodes: int) -> list[dict[str, Any]]:
    """One row per training iteration, from a training job's progress events in the order
    the root streamed them. Each ``ITERATION_DONE`` event closes an iteration: its
    MAP+COMBINE round and its collective refreshes are the events since the previous one
    (a refresh runs at the start of the iteration whose summary counts it, before its MAP,
    so its own ``iteration`` field names the previous MAP's). Other stages (validation,
    rotation keys, PREPARE) are not part of any iteration and are left out."""
    rows: list[dict[str, Any]] = []
    mapcombine: ProgressEvent | None = None
    refreshes: list[ProgressEvent] = []
    for ev in events:
        if ev.stage is Stage.REFRESH:
            refreshes.append(ev)
        elif ev.stage is Stage.MAP_COMBINE:
            if mapcombine is not None:
                raise ValueError(f"iteration {ev.iteration}: a second MAP+COMBINE round")
            mapcombine = ev
        elif ev.stage is Stage.ITERATION_DONE:
            rows.append(_iteration_row(ev, mapcombine, refreshes, n_nodes))
            mapcombine, refreshes = None, []
    return rows


def _iteration_row(
    done: ProgressEvent,
    mapcombine: ProgressEvent | None,
    refreshes: list[ProgressEvent],
    n_nodes: int,
) -> dict[str, Any]:
    it, summary = done.iteration, done.summary
    if summary is None:
        raise ValueError(f"iteration {it}: the root sent no iteration summary")
    if mapcombine is None or mapcombine.iteration != it:
        found = "none" if mapcombine is None else f"iteration {mapcombine.iteration}'s"
        raise ValueError(f"iteration {it}: its MAP+COMBINE round is {found}")
    if len(refreshes) != summary.refreshes:
        raise ValueError(
            f"iteration {it}: {len(refreshes)} refresh rounds, the summary counts "
            f"{summary.refreshes}"
        )
    ids = [f"node-{i}" for i in range(n_nodes)]
    per = {s.node_id: s for s in mapcombine.nodes}
    if sorted(per) != sorted(ids) or len(mapcombine.nodes) != n_nodes:
        senders = [s.node_id for s in mapcombine.nodes]
        raise ValueError(f"iteration {it}: stats from {senders}, not one from each of {ids}")
    st = [per[i] for i in ids]
    path_s, path = critical_path(per)
    refresh_s = sum((r.seconds for r in refreshes), 0.0)
    return {
        "iteration": it,
        "wall_s": done.seconds,
        "refreshes": summary.refreshes,
        "levels_left_after": summary.levels_left,
        "levels_sent": summary.levels_sent,
        "levels_dropped": summary.levels_dropped,
        "mapcombine_wall_s": mapcombine.seconds,
        "refresh_s": refresh_s,
        "parents": [s.parent_id for s in st],
        "node_seconds": [s.seconds for s in st],
        "node_combine_seconds": [s.combine_seconds for s in st],
        "node_serialize_seconds": [s.serialize_seconds for s in st],
        "node_work_seconds": [s.work_seconds for s in st],
        "node_subtree_seconds": [s.subtree_seconds for s in st],
        "critical_path_s": path_s,
        "critical_path": path,
        "serial_chain_s": serial_chain(per),
        "bytes_sent": [s.bytes_sent for s in st],
        "bytes_from_parent": [s.bytes_from_parent for s in st],
        "bytes_from_children": [s.bytes_from_children for s in st],
        "bytes_received": [s.bytes_received for s in st],
        "bytes_to_children": [s.bytes_to_children for s in st],
        "weights_down_bytes": max(s.bytes_from_parent for s in st),
        "root_combine_s": st[0].combine_seconds,
        "root_reduce_s": done.seconds - mapcombine.seconds - refresh_s,
    }


def run_training(
    params: str,
    n_nodes: int,
    n_features: int,
    *,
    data: str,
    rows: int,
    iterations: int,
    batch: int,
    deadline_s: float = 1800.0,
) -> dict[str, Any]:
    """Start ``n_nodes`` node processes, run key generation and ``iterations`` of
    logistic regression, and return the per-iteration figures."""
    job = make_job(params, n_features, iterations, batch)
    job.check_fits()
    shards = node_data(data, n_nodes, rows, n_features)
    events: list[ProgressEvent] = []
    out: dict[str, Any] = {
        "params": params,
        "nodes": n_nodes,
        "features": n_features,
        "data": data,
        "rows_per_node": rows,
        "batch_per_node": batch,
        "iterations": iterations,
        "slots_per_sample": job.layout.block,
        "samples_per_ciphertext": job.layout.samples_per_ct,
        "rotation_keys": len(job.rotation_indices()),
    }
    with tempfile.TemporaryDirectory(prefix="phe-fl-suite-") as tmp:
        cluster = LocalCluster(
            Path(tmp),
            n_nodes=n_nodes,
            fanout=2,
            params=params,
            deadline_s=deadline_s,
            data_files=write_csvs(Path(tmp) / "data", shards),
        )
        try:  # not `with cluster`: a start that fails would leave the nodes running
            t0 = time.perf_counter()
            cluster.start(START_TIMEOUT_S)
            out["start_s"] = time.perf_counter() - t0
            q = Querier(
                cluster.root_address,
                cluster.querier_tls(),
                params,
                deadline_s=deadline_s,
                on_event=events.append,
            )
            try:
                t0 = time.perf_counter()
                q.setup("suite-keys")
                out["setup_s"] = time.perf_counter() - t0
                events.clear()
                t0 = time.perf_counter()
                q.train("suite-train", job, standardize=False)
                out["train_s"] = time.perf_counter() - t0
            finally:
                q.close()
                out["node_peak_rss_bytes"] = [peak_rss(p.pid) for p in cluster.processes]
        finally:
            cluster.stop()
    depth = get_parameter_set(params).mult_depth
    iters = iteration_rows(events, n_nodes)
    for row in iters:
        lvl = depth - row["levels_left_after"]  # the gradient travels at the new weights' level
        row["gradient_level"] = lvl
        row["ciphertext_bytes_at_level"] = ciphertext_bytes(params, min(lvl, depth - 1))
        row["ciphertext_bytes_last_level"] = ciphertext_bytes(params, depth - 1)
    out["per_iteration"] = iters
    out["summary"] = summarize(iters, job.n_weights)
    return out


def _median(xs: list[float]) -> float:
    return float(np.median(xs)) if xs else float("nan")


def summarize(iters: list[dict[str, Any]], n_weights: int) -> dict[str, Any]:
    """Medians over iterations (the first one included: every iteration does the same
    work, refreshes aside, which are counted); byte maxima over nodes and iterations."""
    sent = [b for r in iters for b in r["bytes_sent"]]
    recv = [b for r in iters for b in r["bytes_received"]]
    inner_combine = [
        c
        for r in iters
        for c, b in zip(r["node_combine_seconds"], r["bytes_from_children"], strict=True)
        if b
    ]
    return {
        "time_per_iteration_s": _median([r["wall_s"] for r in iters]),
        "mapcombine_wall_s": _median([r["mapcombine_wall_s"] for r in iters]),
        "critical_path_s": _median([r["critical_path_s"] for r in iters]),
        "serial_chain_s": _median([r["serial_chain_s"] for r in iters]),
        "root_combine_s": _median([r["root_combine_s"] for r in iters]),
        "root_reduce_s": _median([r["root_reduce_s"] for r in iters]),
        "mean_node_map_s": _median([float(np.mean(r["node_seconds"])) for r in iters]),
        "inner_node_combine_s": _median(inner_combine),
        "bytes_sent_per_node_max": max(sent) if sent else 0,
        "bytes_sent_per_node_mean": float(np.mean(sent)) if sent else 0.0,
        "bytes_received_per_node_max": max(recv) if recv else 0,
        "bytes_received_per_node_mean": float(np.mean(recv)) if recv else 0.0,
        "bytes_sent_down_per_node_max": max(
            (b for r in iters for b in r["bytes_to_children"]), default=0
        ),
        "weights_down_bytes_max": max((r["weights_down_bytes"] for r in iters), default=0),
        "refreshes": sum(r["refreshes"] for r in iters),
        "expansion_vs_float32": (max(sent) / (4 * n_weights)) if sent else float("nan"),
        "sent_over_ciphertext_at_level": max(
            (max(r["bytes_sent"]) / r["ciphertext_bytes_at_level"] for r in iters), default=0.0
        ),
        "sent_over_last_level_ciphertext": max(
            (max(r["bytes_sent"]) / r["ciphertext_bytes_last_level"] for r in iters), default=0.0
        ),
        "gradient_levels": sorted({r["gradient_level"] for r in iters}),
    }
