"""Plaintext FedAvg over the same apps, in one process: what an encrypted FedAvg job must
reproduce within its decryption precision (tests), and the unprotected baseline of the
benchmark. Each :class:`~phe_fl.fedavg.site.Site` trains exactly as it would on a node."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import Layout, Vector, values_digest
from phe_fl.fedavg.site import Site

__all__ = ["TwinRound", "plain_fedavg"]


@dataclass(frozen=True)
class TwinRound:
    examples: int
    loss: float
    global_values: Vector


def plain_fedavg(
    sites: Sequence[Site],
    spec: FedAvgSpec,
    *,
    job_id: str = "twin",
    dp_seeds: Sequence[int] | None = None,
) -> tuple[Layout, list[TwinRound]]:
    """``spec.rounds`` rounds of FedAvg in the clear; the first site's fresh model is the
    first global model (as the root's is). A differentially private ``spec`` needs one
    ``dp_seeds`` entry per site (a node's secret seed; the twin draws what a node with
    that seed draws) and sites built with ``n_parties = len(sites)``."""
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
        fitted = []
        for site in sites:
            site.receive_global(job_id, r, 0, data)
            fitted.append(site.fit(job_id, r, digest))
        total = sum(res.examples for _, res in fitted)
        mean = sum(u.astype(np.float64) * (res.examples / total) for u, res in fitted)
        global_values = (global_values + mean).astype(np.float32)
        loss = sum(res.loss * res.examples for _, res in fitted) / total
        rounds.append(TwinRound(total, loss, global_values))
    return layout, rounds
