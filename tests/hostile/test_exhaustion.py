"""A member of the federation's CA cannot exhaust the root: a querier outside the policy
is refused before it sends anything, one querier cannot hold more than a few streams, a
request cannot declare more bytes than a job can carry, and the health service keeps
answering throughout. Nodes report real readiness and never dump core."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phe_fl.federation import messages as m
from phe_fl.federation.config import TlsPaths
from phe_fl.federation.local import LocalCluster
from phe_fl.federation.node import QUERIES_PER_QUERIER, READY_SERVICE
from phe_fl.federation.querier import Querier
from phe_fl.federation.serde import Frame, job_request_frames
from phe_fl.federation.tree import open_channel
from phe_fl.mhe import INSECURE_TEST
from phe_fl.v2 import query_pb2_grpc

PARAMS = INSECURE_TEST.name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


PROBE = _free_port()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with LocalCluster(
        tmp_path_factory.mktemp("hostile"),
        n_nodes=3,
        fanout=2,
        params=PARAMS,
        deadline_s=20,
        queriers=("querier", "outsider"),
    ) as c:
        # "outsider" holds a certificate of the federation's CA, but no node's policy
        # lists it: rewrite the policies and restart so only "querier" is accepted
        for i, cfg in enumerate(c.configs):
            cfg.write_text(cfg.read_text().replace('"querier", "outsider"', '"querier"'))
            c.stop_node(i)
        leaf = c.configs[2]  # and a probe port on a leaf, which has no other port
        text = leaf.read_text().replace("[node]\n", f'[node]\nhealth = "127.0.0.1:{PROBE}"\n')
        leaf.write_text(text)
        for i in range(3):
            c.start_node(i)
        c.wait_ready(60)
        yield c


def _health(c: LocalCluster, service: str = "") -> int:
    channel = open_channel(c.root_address, c.node_tls("node-1"))
    try:
        stub = health_pb2_grpc.HealthStub(channel)
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=2).status)
    finally:
        channel.close()


def _stalled_streams(
    c: LocalCluster, tls: TlsPaths, n: int
) -> tuple[list[object], threading.Event]:
    """``n`` Submit calls whose request never comes (their iterators block)."""
    release = threading.Event()

    def never() -> Iterator[Frame]:
        release.wait(30)
        return
        yield  # a generator that sends nothing

    channel = open_channel(c.root_address, tls)
    stub = query_pb2_grpc.RootStub(channel)
    calls = [stub.Submit(never(), timeout=30) for _ in range(n)]
    return calls, release


def _outcome(call: object, timeout: float = 5.0) -> grpc.StatusCode | None:
    """The status a call ended with, or None if it is still open after ``timeout``."""
    done = threading.Event()
    code: list[grpc.StatusCode] = []

    def read() -> None:
        try:
            for _ in call:  # type: ignore[attr-defined]
                pass
        except grpc.RpcError as exc:
            code.append(exc.code())
        done.set()

    threading.Thread(target=read, daemon=True).start()
    done.wait(timeout)
    return code[0] if code else None


def test_a_querier_outside_the_policy_is_refused_before_it_sends(cluster: LocalCluster) -> None:
    calls, release = _stalled_streams(cluster, cluster.querier_tls("outsider"), 16)
    try:
        t = time.monotonic()
        codes = [_outcome(call) for call in calls]
        assert codes == [grpc.StatusCode.PERMISSION_DENIED] * 16
        assert time.monotonic() - t < 10
        assert _health(cluster) == health_pb2.HealthCheckResponse.SERVING
    finally:
        release.set()
    audit = (cluster.workdir / "state" / "node-0" / "audit.jsonl").read_text()
    assert '"requester":"outsider"' in audit and '"step":"connect"' in audit


def test_one_querier_cannot_hold_every_thread(cluster: LocalCluster) -> None:
    tls = cluster.querier_tls()
    calls, release = _stalled_streams(cluster, tls, QUERIES_PER_QUERIER)
    try:
        time.sleep(1.0)  # the root is now holding them, waiting for their requests
        extra, release_extra = _stalled_streams(cluster, tls, 1)
        assert _outcome(extra[0]) == grpc.StatusCode.RESOURCE_EXHAUSTED
        release_extra.set()
        t = time.monotonic()
        assert _health(cluster) == health_pb2.HealthCheckResponse.SERVING
        assert time.monotonic() - t < 2
    finally:
        release.set()
    for call in calls:  # released: their empty requests are refused, the slots freed
        assert _outcome(call, 10) == grpc.StatusCode.INVALID_ARGUMENT
    q = Querier(cluster.root_address, tls, PARAMS, deadline_s=20)
    assert len(q.status().nodes) == 3
    q.close()


def test_a_request_cannot_declare_more_than_a_job_carries(cluster: LocalCluster) -> None:
    channel = open_channel(cluster.root_address, cluster.querier_tls())
    stub = query_pb2_grpc.RootStub(channel)
    huge = Frame(call_id=0, total_size=4 << 30, data=b"x" * 1024)
    with pytest.raises(grpc.RpcError) as info:
        list(stub.Submit(iter([huge]), timeout=10))
    channel.close()
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "exceeds the limit" in info.value.details()


def test_readiness_follows_keys_and_children(cluster: LocalCluster) -> None:
    serving = health_pb2.HealthCheckResponse.SERVING
    not_serving = health_pb2.HealthCheckResponse.NOT_SERVING
    assert _health(cluster) == serving  # alive
    assert _health(cluster, READY_SERVICE) == not_serving  # but no keys yet
    q = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, deadline_s=60)
    q.setup("keys")
    q.close()
    _until(lambda: _health(cluster, READY_SERVICE) == serving)
    os.kill(cluster.processes[2].pid, signal.SIGSTOP)  # a child stops answering
    cluster.processes[2].kill()
    cluster.processes[2].wait()
    _until(lambda: _health(cluster, READY_SERVICE) == not_serving)
    cluster.start_node(2)
    cluster.wait_ready(60)
    _until(lambda: _health(cluster, READY_SERVICE) == serving)


def test_a_leaf_answers_probes_on_its_plaintext_health_port(cluster: LocalCluster) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{PROBE}")
    stub = health_pb2_grpc.HealthStub(channel)

    def status(service: str) -> int:
        request = health_pb2.HealthCheckRequest(service=service)
        return int(stub.Check(request, timeout=2).status)

    assert status("") == health_pb2.HealthCheckResponse.SERVING
    if {n.key_state for n in cluster.status().nodes} != {"ready"}:
        q = Querier(cluster.root_address, cluster.querier_tls(), PARAMS, deadline_s=60)
        q.setup("keys-for-probes")
        q.close()
    _until(lambda: status(READY_SERVICE) == health_pb2.HealthCheckResponse.SERVING)
    channel.close()


def test_nodes_never_dump_core(cluster: LocalCluster) -> None:
    for proc in cluster.processes:
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
        line = next(x for x in limits.splitlines() if x.startswith("Max core file size"))
        assert line.split()[4:6] == ["0", "0"], line


def _until(condition: object, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.3)


def test_a_peer_that_cancels_its_stream_leaves_no_error_in_the_log(cluster: LocalCluster) -> None:
    """A querier that gives up mid-request or mid-answer (Ctrl-C, a dropped laptop) is
    ordinary: the root logs at most a line about it, never an ERROR with a traceback."""
    before = len(cluster.log(0))
    tls = cluster.querier_tls()
    calls, release = _stalled_streams(cluster, tls, 3)
    time.sleep(1.0)  # the root holds them, waiting for their requests
    for call in calls:
        call.cancel()  # type: ignore[attr-defined]
    release.set()
    channel = open_channel(cluster.root_address, tls)
    stub = query_pb2_grpc.RootStub(channel)
    status = m.JobRequest("cancelled-status", PARAMS, m.StatusJob())
    for _ in range(3):  # a status request whose answer is never read
        stub.Submit(job_request_frames(status), timeout=10).cancel()
    channel.close()
    q = Querier(cluster.root_address, tls, PARAMS, deadline_s=20)
    time.sleep(1.0)
    assert len(q.status().nodes) == 3
    q.close()
    tail = cluster.log(0)[before:]
    assert " ERROR " not in tail and "Traceback" not in tail, tail[-3000:]
