"""The consented margin check over real node processes: each node's encrypted power sum
of its batch's margins goes up the tree, the root decrypts that one scalar with every
node's consent, and the querier sees the bounds; a differentially private job whose
margins leave the activation's interval stops instead of releasing a model without its
guarantee."""

from __future__ import annotations

from pathlib import Path

import pytest

from phe_fl.errors import PeerError
from phe_fl.federation import messages as m
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import TrainingJob

N = 3


def _job(**kw: object) -> TrainingJob:
    options: dict[str, object] = {
        "n_features": 30,
        "params": INSECURE_TEST.name,
        "iterations": 3,
        "batch_size": 16,
        "learning_rate": 0.3,
        "activation_degree": 3,
        "activation_bound": 8.0,
        "allow_model_decryption": True,
    }
    options.update(kw)
    return TrainingJob(**options)  # type: ignore[arg-type]


def test_margin_check_over_the_tree(tmp_path: Path) -> None:
    with LocalCluster(
        tmp_path, n_nodes=N, params=INSECURE_TEST.name, allow_decryption=True, deadline_s=60
    ) as c:
        events: list[m.ProgressEvent] = []
        q = Querier(c.root_address, c.querier_tls(), deadline_s=120, on_event=events.append)
        q.setup("keys")
        q.train("checked", _job(), margin_check_every=1)
        # a DP job whose learning rate throws the margins out of [-1, 1]: stopped
        wild = _job(learning_rate=20.0, activation_bound=1.0, dp_noise_multiplier=1.0, dp_clip=1.0)
        with pytest.raises(PeerError, match="differentially private training stopped: iteration"):
            q.train("wild", wild, margin_check_every=1)
        q.close()
        audit = (c.workdir / "state" / "node-1" / "audit.jsonl").read_text()
    checked = [
        e.summary
        for e in events
        if e.stage is m.Stage.ITERATION_DONE and e.summary is not None and e.iteration <= 3
    ][:3]
    assert checked[0].margin_high == 0.0  # iteration 1: zero weights, nothing to check
    bounded = [s for s in checked[1:] if s.margin_high]  # weights with the levels to check
    assert bounded, checked
    for s in bounded:
        assert 0.0 < s.margin_low <= s.margin_high <= 2 * 8.0, s  # inside, up to the slack
    # each check's decryption went through every node's policy, consented
    moments = [x for x in audit.splitlines() if '"step":"margin_moment"' in x]
    assert moments and all('"decision":"contribute"' in x for x in moments)
    assert audit.count('"step":"decrypt_model"') >= 2
