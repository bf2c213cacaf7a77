"""Differential privacy over real node processes: each node adds its share of the noise
to its encrypted gradient, the root spends the federation's epsilon budget job by job
(decided by its policy, audited, kept across a restart) and refuses what would exceed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from phe_fl.errors import PeerError
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import TrainingJob
from phe_fl.privacy.accounting import job_epsilon

N = 3
BUDGET = 6.0


def _job(sigma: float, iterations: int = 3) -> TrainingJob:
    return TrainingJob(
        n_features=30,
        params=INSECURE_TEST.name,
        iterations=iterations,
        batch_size=16,
        learning_rate=0.3,
        activation_degree=3,
        activation_bound=8.0,
        dp_noise_multiplier=sigma,
        dp_clip=1.0,
    )


def test_the_root_spends_and_keeps_the_federations_privacy_budget(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n_nodes=N, params=INSECURE_TEST.name, deadline_s=60) as c:
        root = c.configs[0]
        text = root.read_text().replace("[policy]\n", f"[policy]\ndp_epsilon = {BUDGET}\n")
        root.write_text(text)
        c.stop_node(0)
        c.start_node(0)
        c.wait_ready(60)
        q = Querier(c.root_address, c.querier_tls(), deadline_s=60)
        q.setup("keys")
        with pytest.raises(PeerError, match="PERMISSION_DENIED.*not differentially private"):
            q.train("plain", _job(0.0))
        run = q.train("dp-1", _job(2.0))
        status = q.status("status-1")
        # a job that needs more than what is left: refused before any MAP
        with pytest.raises(PeerError, match="PERMISSION_DENIED.*exceeds the .* left of the budget"):
            q.train("dp-greedy", _job(0.3, iterations=3))
        q.close()
        c.stop_node(0)  # the spending survives a restart of the root
        c.start_node(0)
        c.wait_ready(60)
        q = Querier(c.root_address, c.querier_tls(), deadline_s=60)
        after = q.status("status-2")
        q.close()
        audit = (c.workdir / "state" / "node-0" / "audit.jsonl").read_text()
    expected = job_epsilon(_job(2.0), 3 * 16, 569, 1e-5)
    assert run.dp_epsilon == pytest.approx(expected) and run.dp_delta == 1e-5
    assert 0 < run.dp_epsilon < BUDGET
    assert status.privacy_budget == BUDGET and status.privacy_spent == pytest.approx(expected)
    assert after.privacy_spent == pytest.approx(expected)
    assert audit.count('"step":"dp_budget"') == 3  # plain and greedy refused, dp-1 accepted
