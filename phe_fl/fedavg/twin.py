"""Plaintext FedAvg over the same apps, in one process: what an encrypted FedAvg job must
reproduce within its decryption precision (tests), and the one loop the benchmark drives
with each aggregator it compares (plain, phe-fl's in process, TenSEAL's). Each
:class:`~phe_fl.fedavg.site.Site` trains exactly as it would on a node."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import Layout, Vector, values_digest
from phe_fl.fedavg.site import Site

__all__ = ["TwinRound", "plain_fedavg", "weighted_mean", "check_updates"]

Aggregate = Callable[[list[Vector], list[float]], npt.NDArray[np.floating[Any]]]
"""The mean of the sites' updates weighted by their examples, however it is computed."""


@dataclass(frozen=True)
class TwinRound:
    round: int
    examples: int
    loss: float  # examples-weighted mean of the sites' reported losses
    global_values: Vector  # after this round
    fit_seconds: tuple[float, ...]  # each site's local training


def check_updates(updates: Sequence[npt.NDArray[Any]], weights: Sequence[float]) -> None:
    """Refuse what no weighted mean is: one flat update per weight, all of one length,
    weights at least 0 with a positive sum."""
    if not updates or len(updates) != len(weights):
        raise ValueError(f"{len(updates)} updates for {len(weights)} weights")
    if any(u.ndim != 1 or len(u) != len(updates[0]) for u in updates):
        raise ValueError("updates must be flat vectors of one length")
    if any(not w >= 0 for w in weights) or not sum(weights) > 0:
        raise ValueError(f"weights must be >= 0 with a positive sum, not {list(weights)}")


def weighted_mean(
    updates: Sequence[npt.NDArray[Any]], weights: Sequence[float]
) -> npt.NDArray[np.float64]:
    """The exact reference: ``sum(w_i u_i) / sum(w_i)`` in float64."""
    check_updates(updates, weights)
    total = float(sum(weights))
    out = np.zeros(len(updates[0]), dtype=np.float64)
    for u, w in zip(updates, weights, strict=True):
        out += np.asarray(u, dtype=np.float64) * (float(w) / total)
    return out


def plain_fedavg(
    sites: Sequence[Site],
    spec: FedAvgSpec,
    *,
    job_id: str = "twin",
    dp_seeds: Sequence[int] | None = None,
    aggregate: Aggregate = weighted_mean,
    on_round: Callable[[TwinRound], None] | None = None,
) -> tuple[Layout, list[TwinRound]]:
    """``spec.rounds`` rounds of FedAvg in the clear; the first site's fresh model is the
    first global model (as the root's is). ``aggregate`` averages the updates (the
    benchmark passes its aggregators'); ``on_round`` sees each round as it ends. A
    differentially private ``spec`` needs one ``dp_seeds`` entry per site (a node's secret
    seed; the twin draws what a node with that seed draws) and sites built with
    ``n_parties = len(sites)``."""
    if spec.dp and (dp_seeds is None or len(dp_seeds) != len(sites)):
        raise ValueError(f"a DP job needs {len(sites)} dp_seeds, one per site")
    if spec.dp and any(site.n_parties != len(sites) for site in sites):
        raise ValueError(f"a DP job's sites must be built with n_parties={len(sites)}")
    seeds = list(dp_seeds) if spec.dp and dp_seeds is not None else [None] * len(sites)
    layout = sites[0].prepare(job_id, spec, dp_seed=seeds[0])
    for site, seed in zip(sites[1:], seeds[1:], strict=True):
        if site.prepare(job_id, spec, dp_seed=seed).digest() != layout.digest():
            raise ValueError(f"site {site.node_id} builds another model")
    global_values = sites[0].initial(job_id)
    rounds = []
    for r in range(1, spec.rounds + 1):
        data, digest = global_values.astype("<f4").tobytes(), values_digest(global_values)
        fitted, seconds = [], []
        for site in sites:
            site.receive_global(job_id, r, 0, data)
            t0 = time.perf_counter()
            fitted.append(site.fit(job_id, r, digest))
            seconds.append(time.perf_counter() - t0)
        weights = [float(res.examples) for _, res in fitted]
        mean = aggregate([u for u, _ in fitted], weights)
        global_values = (global_values + mean).astype(np.float32)
        total = sum(res.examples for _, res in fitted)
        loss = sum(res.loss * res.examples for _, res in fitted) / total
        rounds.append(TwinRound(r, total, loss, global_values, tuple(seconds)))
        if on_round is not None:
            on_round(rounds[-1])
    return layout, rounds
