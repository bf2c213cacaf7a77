"""One data-provider node process: its party, its subtree, and its two sides of the tree.

A node with a parent dials out to it (:class:`~phe_fl.federation.tree.ParentConnection`);
a node with children, and the root, listen (children's streams, the querier's jobs at the
root, the standard health service). A leaf opens no port (but an optional plaintext
health-probe port, `[node] health`).
"""

from __future__ import annotations

import ctypes
import fcntl
import logging
import os
import resource
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from phe_fl.errors import ConfigError
from phe_fl.federation.audit import AuditLog
from phe_fl.federation.certs import certificate_identity, load_server_credentials
from phe_fl.federation.config import NodeConfig
from phe_fl.federation.coordinator import Coordinator
from phe_fl.federation.member import Member
from phe_fl.federation.observability import METRICS, serve_metrics
from phe_fl.federation.servicer import OldWireRefusal, PeerLimiter, RootServicer, TreeServicer
from phe_fl.federation.store import NodeStore, StoreIdentity, federation_fingerprint
from phe_fl.federation.subtree import Subtree
from phe_fl.federation.tree import Children, ParentConnection
from phe_fl.mhe import limit_arenas
from phe_fl.v2 import query_pb2_grpc, tree_pb2_grpc

__all__ = ["Node", "build_node", "serve_forever", "DEFAULT_DEADLINE_S"]

log = logging.getLogger("phe_fl.node")

DEFAULT_DEADLINE_S = 600.0
READY_SERVICE = "phe_fl.v2.Ready"
"""Health-check service name that is SERVING only while the node is ready (keys
installed, every child and its parent connected); the empty name is liveness."""
STREAMS_PER_CHILD = 2
"""Tree streams one child may hold at once (a reconnecting child briefly has two); a
certificate that is not a configured child is refused before its stream is read."""
QUERIES_PER_QUERIER = 4
QUERIES_IN_ALL = 12
"""Querier streams a root serves at once (per querier, in all); the worker pool keeps
threads beyond them for the children's streams and health checks."""
SERVER_OPTIONS = [
    ("grpc.max_receive_message_length", 8 << 20),
    ("grpc.max_send_message_length", 8 << 20),
    ("grpc.so_reuseport", 0),  # a second process on the same port must fail, not share it
    # Children and queriers ping every 20 s (tree.CHANNEL_OPTIONS), also while a long
    # round sends no data; a gRPC server accepts one ping per 5 minutes by default and
    # closes the connection after two early ones (GOAWAY "too many pings"). This is the
    # server's minimum (grpc core's GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS).
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
]


@dataclass
class Node:
    """A running node: start() begins serving and dialing; stop() ends both."""

    config: NodeConfig
    subtree: Subtree
    children: Children
    coordinator: Coordinator | None
    server: grpc.Server | None
    parent: ParentConnection | None
    store: NodeStore
    audit: AuditLog
    lock: int
    health: health.HealthServicer | None = None
    probes: grpc.Server | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _stop_metrics: Callable[[], None] | None = None

    @property
    def ready(self) -> bool:
        """Keys installed, every child connected, connected to its parent."""
        member = self.subtree.member
        children = set(self.children.connected()) == set(self.config.children)
        parent = self.parent is None or self.parent.connected.is_set()
        return member.keygen.state == "ready" and children and parent

    def _report_readiness(self) -> None:
        """Liveness on service "", readiness on :data:`READY_SERVICE`, for probes."""
        assert self.health is not None
        serving, not_serving = (
            health_pb2.HealthCheckResponse.SERVING,
            health_pb2.HealthCheckResponse.NOT_SERVING,
        )
        while not self._stopping.wait(1.0):
            self.health.set(READY_SERVICE, serving if self.ready else not_serving)

    def start(self) -> Node:
        if self.config.metrics is not None:  # first: a port in use leaves nothing running
            self._stop_metrics = _serve_metrics(self.config)
        if self.coordinator is not None:
            self.coordinator.start()
        if self.server is not None:
            self.server.start()
        if self.parent is not None:
            self.parent.start()
        if self.probes is not None:
            self.probes.start()
        if self.health is not None:
            threading.Thread(target=self._report_readiness, name="health", daemon=True).start()
        where = f"listening on {self.config.listen}" if self.config.listen else "no listening port"
        up = (
            f", dialing parent {self.config.parent.id} at {self.config.parent.address}"
            if self.config.parent
            else ""
        )
        log.info("node %s (party %d): %s%s", self.config.id, self.config.party, where, up)
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self.health is not None:
            self.health.enter_graceful_shutdown()  # every service NOT_SERVING from now on
        if self.parent is not None:
            self.parent.stop()
        self.children.close()
        if self.coordinator is not None:
            self.coordinator.stop()
        if self.server is not None:
            self.server.stop(grace=2).wait()
        if self.probes is not None:
            self.probes.stop(grace=1).wait()
        if self._stop_metrics is not None:
            self._stop_metrics()
        self.subtree.close()
        self.audit.close()
        self.store.close()
        os.close(self.lock)  # releases the run lock


def _check_identity(config: NodeConfig) -> None:
    """The node's certificate must name it: a node cannot run as another."""
    who = certificate_identity(config.tls.cert)
    if who.role != "node" or who.name != config.id:
        raise ConfigError(
            f"{config.source}: the certificate {config.tls.cert} names {who}, but this "
            f"config is node {config.id!r}"
        )


def open_state(config: NodeConfig) -> tuple[NodeStore, AuditLog, int]:
    """The node's state store, audit log and run lock; refused if the directory belongs
    to another node, federation, parameter set or a newer format, or if a process of this
    node already runs on it (one party, one process)."""
    ca = config.tls.ca.read_bytes()
    identity = StoreIdentity(config.id, config.params, federation_fingerprint(ca, config.n_parties))
    store = NodeStore(config.state_dir, identity)
    lock = os.open(config.state_dir / "node.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(lock)
        store.close()
        raise ConfigError(
            f"{config.source}: node {config.id} is already running on state dir "
            f"{config.state_dir} (another process holds its lock); a node runs once"
        ) from None
    return store, AuditLog(config.state_dir / "audit.jsonl"), lock


def build_node(config: NodeConfig, *, deadline_s: float = DEFAULT_DEADLINE_S) -> Node:
    """Everything a node runs, ready to start()."""
    _check_identity(config)
    store, audit, lock = open_state(config)
    for warning in config.warnings():
        log.warning("%s", warning)
    member = Member(config, store, audit)
    log.info("node %s data: %s", config.id, member.shard.describe())
    children = Children(config)
    subtree = Subtree(member, children, max_answer_bytes=config.max_answer_bytes)
    coordinator = (
        Coordinator(subtree, store, deadline_s=deadline_s) if config.parent is None else None
    )
    if coordinator is not None:
        METRICS.watch_jobs(coordinator.jobs.states)
    server = None
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set(READY_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    probes = _probe_server(config, health_servicer) if config.health is not None else None
    if config.listen is not None:
        server = grpc.server(
            futures.ThreadPoolExecutor(
                max_workers=QUERIES_IN_ALL + 8 + STREAMS_PER_CHILD * len(config.children),
                thread_name_prefix=config.id,
            ),
            options=SERVER_OPTIONS,
        )
        if config.children:
            tree_streams = STREAMS_PER_CHILD * len(config.children)
            streams = PeerLimiter(per_peer=STREAMS_PER_CHILD, total=tree_streams)
            tree = TreeServicer(children, streams)
            tree_pb2_grpc.add_TreeServicer_to_server(tree, server)  # type: ignore[no-untyped-call]
        if coordinator is not None:
            limiter = PeerLimiter(per_peer=QUERIES_PER_QUERIER, total=QUERIES_IN_ALL)
            root = RootServicer(coordinator, limiter)
            query_pb2_grpc.add_RootServicer_to_server(root, server)  # type: ignore[no-untyped-call]
        server.add_generic_rpc_handlers((OldWireRefusal(),))
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
        creds = load_server_credentials(config.tls.cert, config.tls.key, config.tls.ca)
        try:
            port = server.add_secure_port(config.listen, creds)
        except RuntimeError:
            port = 0
        if port == 0:
            raise ConfigError(
                f"{config.source}: cannot listen on {config.listen} (is another process, "
                "perhaps this node started twice, using it?)"
            )
    parent = ParentConnection(config, subtree.answer) if config.parent is not None else None
    return Node(
        config,
        subtree,
        children,
        coordinator,
        server,
        parent,
        store,
        audit,
        lock,
        health_servicer,
        probes,
    )


def _serve_metrics(config: NodeConfig) -> Callable[[], None]:
    """``[node] metrics``: Prometheus metrics over plaintext HTTP (counts, seconds and
    bytes; never payloads)."""
    assert config.metrics is not None
    try:
        return serve_metrics(config.metrics)
    except OSError as exc:
        raise ConfigError(
            f"{config.source}: cannot serve metrics on {config.metrics} ({exc.strerror or exc})"
        ) from None


def _probe_server(config: NodeConfig, servicer: health.HealthServicer) -> grpc.Server:
    """``[node] health``: the health service alone, in plaintext, for an orchestrator's
    probes (any node, a leaf included); it tells liveness and readiness, nothing else."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2), options=SERVER_OPTIONS)
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    assert config.health is not None
    try:
        port = server.add_insecure_port(config.health)
    except RuntimeError:
        port = 0
    if port == 0:
        raise ConfigError(f"{config.source}: cannot serve health probes on {config.health}")
    return server


def no_core_dumps() -> None:
    """A crash must never write this process's memory (its key share) to disk."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE = 0: no core, no ptrace by others
    except (OSError, AttributeError):  # not Linux: the rlimit above still holds
        log.warning("could not mark the process non-dumpable (prctl unavailable)")


def serve_forever(config: NodeConfig, *, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
    """Run a node until SIGTERM or SIGINT, then stop gracefully."""
    no_core_dumps()
    limit_arenas()  # before the node's threads: what one step frees, the next reuses
    node = build_node(config, deadline_s=deadline_s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    node.start()
    where = f"serving on {config.listen}" if config.listen else "with no listening port"
    log.info("phe-fl node %s %s", config.id, where)  # a log line: JSON in JSON mode
    try:
        while not stop.wait(0.5):  # a timed wait keeps the signal handlers responsive
            pass
    finally:
        node.stop()
