"""Real node processes over gRPC with mutual TLS: 5 nodes in a tree of depth 2
(node-0 -> node-1, node-2; node-1 -> node-3, node-4). Children dial out to their parent:
only node-0 and node-1 listen."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sklearn.datasets import load_breast_cancer

from phe_fl.errors import PeerError
from phe_fl.federation import messages as m
from phe_fl.federation.certs import create_federation, load_server_credentials
from phe_fl.federation.config import TlsPaths, load_node_config
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.federation.serde import child_message_frames
from phe_fl.federation.tree import open_channel
from phe_fl.mhe import INSECURE_TEST
from phe_fl.v2 import tree_pb2_grpc

PARAMS = INSECURE_TEST.name
N = 5
LEAVES = (2, 3, 4)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(
        tmp_path_factory.mktemp("fed"), n_nodes=N, fanout=2, params=PARAMS, deadline_s=20
    ) as c:
        querier = Querier(c.root_address, c.querier_tls(), PARAMS)
        querier.setup("setup-1", [])
        querier.close()
        yield c


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    """Largest error relative to the value (features reach 10^3, variances 10^5)."""
    return float((np.abs(got - want) / np.maximum(np.abs(want), 1.0)).max())


def _pooled() -> np.ndarray:
    X = load_breast_cancer().data
    return np.asarray(X)  # raw: nodes apply no transformation they do not declare


def _listening_ports(pid: int) -> set[int]:
    """TCP ports process ``pid`` listens on (its socket inodes in state LISTEN)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            cols = line.split()
            if cols[3] == "0A" and cols[9] in inodes:  # 0A: LISTEN
                ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def test_leaves_have_no_listening_socket(cluster: LocalCluster) -> None:
    for i in range(N):
        config = load_node_config(cluster.configs[i])
        ports = _listening_ports(cluster.processes[i].pid)
        if i in LEAVES:
            assert config.listen is None
            assert ports == set(), f"leaf node-{i} listens on {ports}"
        else:
            assert config.listen is not None
            assert ports == {int(config.listen.rsplit(":", 1)[1])}
    assert set(cluster.addresses) == {"node-0", "node-1"}
    status = cluster.status()
    parents = {n.node_id: n.parent_id for n in status.nodes}
    assert parents == {
        "node-0": "",
        "node-1": "node-0",
        "node-2": "node-0",
        "node-3": "node-1",
        "node-4": "node-1",
    }
    assert {n.key_state for n in status.nodes} == {"ready"} and status.missing == ()


def test_keygen_and_stats_over_the_tree_match_plaintext(cluster: LocalCluster) -> None:
    events: list[m.ProgressEvent] = []
    querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, on_event=events.append)
    stats = querier.stats("stats-1", 30)
    querier.close()
    X = _pooled()
    err_mean = _relative(stats.mean, X.mean(axis=0))
    err_var = _relative(stats.variance, X.var(axis=0))
    print(f"max relative mean error {err_mean:.2e}, variance error {err_var:.2e}")
    assert stats.count == len(X)
    assert err_mean < 1e-6 and err_var < 1e-6
    switch = [e for e in events if e.stage is m.Stage.KEY_SWITCH]
    assert len(switch) == 1  # every node contributed, each reporting its own stats
    assert {s.node_id for s in switch[0].nodes} == {f"node-{i}" for i in range(N)}


def test_stats_with_the_wrong_feature_count_is_refused_naming_the_node(
    cluster: LocalCluster,
) -> None:
    querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS)
    with pytest.raises(PeerError, match="node node-0 has 30 features, the job declares 29"):
        querier.stats("stats-29", 29)
    querier.close()


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


def _dial_as(cluster: LocalCluster, address: str, cert_of: str, says: str) -> grpc.RpcError:
    """Connect to a parent's Tree.Connect with ``cert_of``'s certificate, saying hello as
    ``says``; the parent's refusal."""
    channel = open_channel(address, cluster.node_tls(cert_of), peer_id="node-1")
    stub = tree_pb2_grpc.TreeStub(channel)
    hello = m.Hello(says, PARAMS, N)
    try:
        replies = stub.Connect(child_message_frames(hello), timeout=10)
        with pytest.raises(grpc.RpcError) as info:
            list(replies)
        return info.value
    finally:
        channel.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_a_node_whose_certificate_names_another_node_is_refused(
    cluster: LocalCluster, host: str
) -> None:
    port = cluster.addresses["node-1"].rsplit(":", 1)[1]
    address = f"{host}:{port}"
    # node-3's certificate, claiming to be node-4: the certificate decides, and disagrees
    err = _dial_as(cluster, address, cert_of="node-3", says="node-4")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "certificate names node:node-3 but the node says it is 'node-4'" in err.details()
    # node-2's own certificate: node-2 is a child of node-0, not of node-1
    err = _dial_as(cluster, address, cert_of="node-2", says="node-2")
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "node node-2 is not a child of node-1" in err.details()
    # the real node-3 and node-4 kept their connections
    assert len(cluster.status().nodes) == N


def test_a_child_verifies_its_parent_identity_not_its_address(cluster: LocalCluster) -> None:
    """A server holding node-2's certificate at the address a child dials as its parent
    node-1 fails the TLS handshake; the same server is reachable as node-2."""
    calls: list[str] = []

    class Recorder(health.HealthServicer):  # type: ignore[misc]
        def Check(self, request, context):  # type: ignore[no-untyped-def]  # noqa: N802
            calls.append("check")
            return health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)

    tls = cluster.node_tls("node-2")
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(Recorder(), server)
    port = server.add_secure_port("127.0.0.1:0", load_server_credentials(tls.cert, tls.key, tls.ca))
    server.start()
    try:
        as_parent = open_channel(f"127.0.0.1:{port}", cluster.node_tls("node-3"), peer_id="node-1")
        with pytest.raises(grpc.RpcError) as info:
            health_pb2_grpc.HealthStub(as_parent).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert calls == []  # no request reached the impostor
        as_itself = open_channel(f"127.0.0.1:{port}", cluster.node_tls("node-3"), peer_id="node-2")
        health_pb2_grpc.HealthStub(as_itself).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert calls == ["check"]  # positive control: the name check is what refused it
        as_parent.close()
        as_itself.close()
    finally:
        server.stop(0)


def test_a_v1_peer_gets_an_error_naming_both_versions(cluster: LocalCluster) -> None:
    tls = cluster.querier_tls()
    channel = open_channel(cluster.root_address, tls)
    old = channel.stream_stream("/phe_fl.v1.Node/Query")
    with pytest.raises(grpc.RpcError) as info:
        list(old(iter([b""]), timeout=10))
    channel.close()
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "phe_fl.v2" in info.value.details() and "phe_fl.v1" in info.value.details()


def test_jobs_out_of_order_are_refused_naming_state_and_step(cluster: LocalCluster) -> None:
    querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, deadline_s=30)
    with pytest.raises(
        PeerError, match="FAILED_PRECONDITION.*'setup' is not allowed in state 'ready'"
    ):
        querier.setup("setup-again")
    with pytest.raises(PeerError, match="FAILED_PRECONDITION.*job 'stats-1'.*'submit'.*'done'"):
        querier.stats("stats-1", 30)  # a job id runs once
    with pytest.raises(PeerError, match="FAILED_PRECONDITION.*no trained model 'nope'"):
        querier.model_weights("w-1", "nope")
    querier.close()


def test_unresponsive_child_fails_the_round_naming_the_node(cluster: LocalCluster) -> None:
    stalled = cluster.processes[4]
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, deadline_s=60)
        t = time.monotonic()
        with pytest.raises(PeerError, match="node node-4: did not answer within its deadline"):
            querier.stats("stalled", 30)
        assert time.monotonic() - t < 25  # the root's deadline, not a hang
        querier.close()
    finally:
        os.kill(stalled.pid, signal.SIGCONT)
    querier = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, deadline_s=60)
    assert querier.stats("after-stall", 30).count == len(_pooled())
    querier.close()


def _until(condition: Callable[[], bool], what: str, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"not true after {timeout_s} s: {what}"
        time.sleep(0.2)


def test_restarted_nodes_reconnect_and_are_the_same_party(tmp_path: Path) -> None:
    """Leaf, inner node and root are each killed (SIGKILL) and restarted from their
    config: every connection comes back without anyone else restarting, and each node
    comes back with its key share and keys from its state dir: the pooled statistics,
    decrypted by the querier, are right after every restart."""
    X = _pooled()
    with LocalCluster(tmp_path, n_nodes=N, fanout=2, params=PARAMS, deadline_s=20) as c:
        querier = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
        querier.setup("keys")
        for index in (4, 1, 0):
            os.kill(c.processes[index].pid, signal.SIGKILL)
            c.processes[index].wait()
            if index:
                gone = f"node-{index}"
                _until(lambda gone=gone: gone in c.status().missing, f"{gone} reported missing")
            c.start_node(index)
            c.wait_ready(60)
            states = {n.node_id: n.key_state for n in c.status().nodes}
            assert states == {f"node-{i}": "ready" for i in range(N)}, states
            querier.close()
            querier = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
            stats = querier.stats(f"after-restart-{index}", 30)
            assert stats.count == len(X)
            assert _relative(stats.mean, X.mean(axis=0)) < 1e-6
        querier.close()
        assert "connected to parent node-0" in c.log(2).split("no connection to parent")[-1]
        with pytest.raises(PeerError, match="'setup' is not allowed in state 'ready'"):
            q = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
            try:
                q.setup("keys-again")
            finally:
                q.close()


def test_key_generation_interrupted_by_a_stalled_node_resumes(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n_nodes=4, fanout=2, params=PARAMS, deadline_s=6) as c:
        os.kill(c.processes[3].pid, signal.SIGSTOP)
        querier = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
        try:
            with pytest.raises(PeerError, match="node node-3: did not answer"):
                querier.setup("keys", [])
        finally:
            os.kill(c.processes[3].pid, signal.SIGCONT)
        events: list[m.ProgressEvent] = []
        querier.on_event = events.append
        assert querier.setup("keys-retry", []) == "keys"
        assert events[0].stage is m.Stage.KEYGEN_RESUMED
        stats = querier.stats("after-resume", 30)
        querier.close()
        X = _pooled()
        assert stats.count == len(X)
        assert _relative(stats.mean, X.mean(axis=0)) < 1e-6


def test_a_child_that_is_not_connected_yet_is_waited_for(tmp_path: Path) -> None:
    with LocalCluster(tmp_path, n_nodes=3, fanout=2, params=PARAMS, deadline_s=30) as c:
        c.stop_node(2)
        restart = threading.Timer(1.5, c.start_node, args=(2,))
        restart.start()
        querier = Querier(c.root_address, c.querier_tls(), PARAMS, deadline_s=60)
        try:
            querier.setup("keys")  # node-2 connects ~2 s into the job
            assert querier.stats("after-restart", 30).count == len(_pooled())
        finally:
            restart.join()
            querier.close()


@pytest.mark.slow
def test_idle_streams_survive_keepalive_pings(tmp_path: Path) -> None:
    """Children ping their parent every 20 s, also while nothing is sent (a long round, or
    no job at all). A server that refused those pings would close the connection after
    about a minute ("too many pings"): nothing may drop in 70 s of silence."""
    with LocalCluster(tmp_path, n_nodes=3, fanout=2, params=PARAMS, deadline_s=30) as c:
        time.sleep(70)
        for i in (1, 2):
            log = c.log(i)  # (a leaf may start before its parent listens: one early retry)
            assert log.count("connected to parent node-0") == 1, log[-2000:]
            after = log.split("connected to parent node-0", 1)[1]
            assert "no connection to parent" not in after, after[-2000:]
        assert len(c.status().nodes) == 3
