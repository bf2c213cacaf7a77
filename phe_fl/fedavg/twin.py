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
    sites: Sequence[Site], spec: FedAvgSpec, *, job_id: str = "twin"
) -> tuple[Layout, list[TwinRound]]:
    """``spec.rounds`` rounds of FedAvg in the clear; the first site's fresh model is the
    first global model (as the root's is)."""
    layout = sites[0].prepare(job_id, spec)
    for site in sites[1:]:
        if site.prepare(job_id, spec).digest() != layout.digest():
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
