"""Real node processes over gRPC with mutual TLS: 5 nodes in a tree of depth 2
(node-0 -> node-1, node-2; node-1 -> node-3, node-4)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from phe_fl.errors import PeerError
from phe_fl.federation.certs import create_federation
from phe_fl.federation.config import ChildLink, TlsPaths
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.federation.serde import Step
from phe_fl.federation.transport import NodeClient
from phe_fl.mhe import INSECURE_TEST, Context

PARAMS = INSECURE_TEST.name
N = 5


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(
        tmp_path_factory.mktemp("fed"), n_nodes=N, fanout=2, params=PARAMS, deadline_s=20
    ) as c:
        querier = Querier(c.root_address, c.querier_tls(), PARAMS)
        querier.setup("setup-1", [])
        querier.close()
        yield c


def _pooled() -> np.ndarray:
    X = load_breast_cancer().data
    return np.asarray(X / np.abs(X).max(axis=0))


def _as_parent(cluster: LocalCluster, child: int, parent: int) -> NodeClient:
    return NodeClient(
        ChildLink(f"node-{child}", cluster.addresses[child]), cluster.node_tls(f"node-{parent}"), 10
    )


def test_keygen_and_stats_over_the_tree_match_plaintext(cluster: LocalCluster) -> None:
    events = []
    querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, on_event=events.append)
    stats = querier.stats("stats-1", 30)
    querier.close()
    X = _pooled()
    err_mean = np.abs(stats.mean - X.mean(axis=0)).max()
    err_var = np.abs(stats.variance - X.var(axis=0)).max()
    print(f"max |mean error| {err_mean:.2e}, max |variance error| {err_var:.2e}")
    assert stats.count == len(X)
    assert err_mean < 1e-5 and err_var < 1e-5
    per_node = {e.message.split(":")[0] for e in events if e.phase == "key switch/node"}
    assert per_node == {f"node-{i}" for i in range(N)}  # every node contributed


def test_querier_with_certificate_from_another_ca_is_refused(
    cluster: LocalCluster, tmp_path: Path
) -> None:
    other = create_federation(tmp_path / "other", ["x"], ["querier"])
    member = other.queriers["querier"]
    tls = TlsPaths(member.cert, member.key, member.ca)  # a complete foreign identity
    querier = Querier(cluster.root_address, tls, PARAMS, deadline_s=10)
    with pytest.raises(PeerError):
        querier.stats("foreign", 30)
    querier.close()


def test_node_certificate_cannot_act_as_querier(cluster: LocalCluster) -> None:
    querier = Querier(cluster.root_address, cluster.node_tls("node-3"), PARAMS, deadline_s=10)
    with pytest.raises(PeerError, match="PERMISSION_DENIED.*allowed roles: querier"):
        querier.stats("impostor", 30)
    querier.close()


def test_only_the_parent_may_ask_for_contributions(cluster: LocalCluster) -> None:
    sibling = _as_parent(cluster, child=1, parent=2)
    step = Step("x", "stats", PARAMS, N)
    with pytest.raises(PeerError, match="PERMISSION_DENIED.*only this node's parent"):
        sibling.contribute(step)
    sibling.close()


@pytest.mark.parametrize(
    ("step", "match"),
    [
        (
            Step(
                "bad-ct",
                "keyswitch",
                PARAMS,
                N,
                {"ct": b"garbage" * 10, "querier_key": b"x"},
                {"querier": "querier"},
            ),
            "INVALID_ARGUMENT",
        ),
        (Step("bad-params", "stats", "n15-depth11-128", N), "INVALID_ARGUMENT.*parameter set"),
        (Step("bad-count", "stats", PARAMS, N + 1), "INVALID_ARGUMENT.*parties"),
        (Step("setup-2", "relin1", PARAMS, N, {"crp": b"x"}), "FAILED_PRECONDITION.*setup-1"),
        (Step("setup-1", "pk", PARAMS, N, {"crp": b"x"}), "FAILED_PRECONDITION.*already"),
        (Step("x", "no-such-step", PARAMS, N), "INVALID_ARGUMENT.*unknown protocol step"),
    ],
    ids=[
        "garbage-ciphertext",
        "wrong-params",
        "wrong-party-count",
        "wrong-job-id",
        "repeated-keygen",
        "unknown-step",
    ],
)
def test_malformed_messages_get_clear_errors_and_node_keeps_serving(
    cluster: LocalCluster, step: Step, match: str
) -> None:
    parent = _as_parent(cluster, child=1, parent=0)
    with pytest.raises(PeerError, match=match):
        parent.contribute(step)
    parent.close()
    querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS)
    assert querier.stats(f"after-{step.job_id}", 30).count == len(_pooled())
    querier.close()


def test_share_from_the_wrong_round_is_refused(cluster: LocalCluster) -> None:
    ctx = Context(INSECURE_TEST)
    parent = _as_parent(cluster, child=1, parent=0)
    ct = parent.contribute(Step("stats-raw", "stats", PARAMS, N)).step.payload("share")
    assert ctx.ciphertext_from_bytes(ct).level == 0  # a subtree sum of ciphertexts
    wrong = Step("setup-1", "relin2", PARAMS, N, {"round1": ct})
    with pytest.raises(PeerError, match="INVALID_ARGUMENT.*expected a relin round1 share"):
        parent.contribute(wrong)
    parent.close()


def test_unresponsive_child_fails_the_round_naming_the_node(cluster: LocalCluster) -> None:
    stalled = cluster.processes[4]
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, deadline_s=60)
        with pytest.raises(PeerError, match="node node-4: did not answer within its deadline"):
            querier.stats("stalled", 30)
        querier.close()
    finally:
        os.kill(stalled.pid, signal.SIGCONT)


def test_key_generation_interrupted_by_a_stalled_node_resumes(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n_nodes=4, fanout=2, params=PARAMS, deadline_s=6) as c:
        os.kill(c.processes[3].pid, signal.SIGSTOP)
        querier = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
        try:
            with pytest.raises(PeerError, match="node node-3: did not answer"):
                querier.setup("keys", [])
        finally:
            os.kill(c.processes[3].pid, signal.SIGCONT)
        events = []
        querier.on_event = events.append
        querier.setup("keys-retry", [])
        assert any("resuming interrupted key generation keys" in e.message for e in events)
        stats = querier.stats("after-resume", 30)
        querier.close()
        X = _pooled()
        assert stats.count == len(X)
        assert np.abs(stats.mean - X.mean(axis=0)).max() < 1e-5


def test_a_node_that_is_not_listening_yet_is_retried(tmp_path: Path) -> None:
    import threading

    with LocalCluster(tmp_path, n_nodes=3, fanout=2, params=PARAMS, deadline_s=30) as c:
        c.stop_node(2)
        restart = threading.Timer(1.5, c.start_node, args=(2,))
        restart.start()
        querier = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
        try:
            querier.setup("keys")  # node-2 refuses connections for the first ~2 s
            assert querier.stats("after-restart", 30).count == len(_pooled())
        finally:
            restart.join()
            querier.close()
