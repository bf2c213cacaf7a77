"""The node's gRPC server: thin servicers over :class:`Node`, mutual TLS, the standard
health service, and the one table that maps domain errors to status codes.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from typing import Any, NoReturn

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from phe_fl.errors import (
    ConfigError,
    CryptoError,
    JobStateError,
    PeerError,
    PheFlError,
    PolicyError,
)
from phe_fl.federation.certs import load_server_credentials, require_role
from phe_fl.federation.config import NodeConfig
from phe_fl.federation.jobs import (
    decrypt_model_weights,
    run_predict,
    run_setup,
    run_stats,
    run_train,
)
from phe_fl.federation.node import Node, job_from_json, job_to_json
from phe_fl.federation.serde import (
    Event,
    Step,
    event_frame,
    floats_to_bytes,
    from_frames,
    to_frames,
)
from phe_fl.federation.transport import NodeClient
from phe_fl.v1 import federation_pb2 as pb
from phe_fl.v1 import federation_pb2_grpc as pb_grpc

__all__ = ["NodeServicer", "build_server", "serve_forever", "status_for"]

log = logging.getLogger("phe_fl.server")

DEFAULT_DEADLINE_S = 600.0


def status_for(exc: Exception) -> grpc.StatusCode:
    """The gRPC status a domain error is reported with."""
    if isinstance(exc, PolicyError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, JobStateError):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, PeerError):  # a node further down failed; not worth a retry here
        return grpc.StatusCode.ABORTED
    if isinstance(exc, CryptoError):
        return grpc.StatusCode.INTERNAL
    if isinstance(exc, PheFlError):  # bad input: protocol, serialization, keys, parameters
        return grpc.StatusCode.INVALID_ARGUMENT
    return grpc.StatusCode.INTERNAL


def _abort(context: grpc.ServicerContext, exc: Exception) -> NoReturn:
    if isinstance(exc, PheFlError):
        message = str(exc)
    else:  # never leak internals (or anything secret) of an unexpected failure
        log.exception("internal error")
        message = f"internal error ({type(exc).__name__}); see the node's log"
    context.abort(status_for(exc), message)
    raise AssertionError("unreachable")  # context.abort raises


class NodeServicer(pb_grpc.NodeServicer):
    """Checks who is calling, converts frames, delegates to the node."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def _from_parent(self, context: grpc.ServicerContext, method: str) -> None:
        who = require_role(context, "node", method=method)
        if who.name != self.node.config.parent:
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"only this node's parent ({self.node.config.parent or 'none: it is the root'}) "
                f"may call {method} on {self.node.id}; caller is {who}",
            )

    def Contribute(  # noqa: N802 - gRPC method name
        self, request_iterator: Iterable[pb.Frame], context: grpc.ServicerContext
    ) -> Iterator[pb.Frame]:
        self._from_parent(context, "Contribute")
        try:
            step = from_frames(request_iterator).step
            received = self.node.contribute(step, context.time_remaining())
        except Exception as exc:  # noqa: BLE001 - mapped to a status in one place
            _abort(context, exc)
        yield from to_frames(received.step, received.stats)

    def Broadcast(  # noqa: N802
        self, request_iterator: Iterable[pb.Frame], context: grpc.ServicerContext
    ) -> pb.BroadcastAck:
        self._from_parent(context, "Broadcast")
        try:
            installed = self.node.broadcast(from_frames(request_iterator).step)
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)
        return pb.BroadcastAck(installed_by=installed)

    def Query(  # noqa: N802
        self, request_iterator: Iterable[pb.Frame], context: grpc.ServicerContext
    ) -> Iterator[pb.Frame]:
        who = require_role(context, "querier", method="Query")
        if not self.node.config.is_root:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{self.node.id} is not the root")
        try:
            request = from_frames(request_iterator).step
            if who.name not in self.node.config.policy.queriers:
                raise PolicyError(f"the root does not accept jobs from querier {who.name!r}")
            job = self._job(request, who.name)
        except Exception as exc:  # noqa: BLE001
            _abort(context, exc)
        yield from _stream_job(job, request, context)

    def _job(self, request: Step, querier: str) -> Callable[[Callable[[Event], None]], Step]:
        node = self.node
        if request.step == "setup":
            try:
                rotations = [int(r) for r in request.labels.get("rotations", "").split(",") if r]
            except ValueError:
                raise ConfigError("rotations label must be a comma-separated list") from None

            def setup(emit: Callable[[Event], None]) -> Step:
                run_setup(node, request.job_id, rotations, emit)
                return Step(request.job_id, "setup", node.params.name, node.config.n_parties)

            return setup
        if request.step == "stats":
            key = request.payload("querier_key")

            def stats(emit: Callable[[Event], None]) -> Step:
                result = run_stats(node, request.job_id, querier, key, emit)
                return Step(
                    request.job_id,
                    "stats",
                    node.params.name,
                    node.config.n_parties,
                    {"result": result},
                )

            return stats
        if request.step == "train":
            job = job_from_json(request.labels.get("job", ""))
            standardize = request.labels.get("standardize", "1") == "1"

            def train(emit: Callable[[Event], None]) -> Step:
                model = run_train(node, request.job_id, job, emit, standardize=standardize)
                summary = {
                    "iterations": str(len(model.reports)),
                    "refreshes": ",".join(str(r) for r in model.refreshes_per_iteration),
                }
                payloads = _standardization_payload(node, request.job_id)
                return Step(
                    request.job_id,
                    "train",
                    node.params.name,
                    node.config.n_parties,
                    payloads,
                    summary,
                )

            return train
        if request.step == "joint_key":

            def joint_key(emit: Callable[[Event], None]) -> Step:
                key = node.require_joint_key().to_bytes()
                return Step(request.job_id, "joint_key", node.params.name, 0, {"key": key})

            return joint_key
        if request.step == "model":
            model_id = request.labels.get("model", "")

            def decrypt_model(emit: Callable[[Event], None]) -> Step:
                weights = decrypt_model_weights(node, model_id, emit)
                return Step(
                    request.job_id,
                    "model",
                    node.params.name,
                    0,
                    {"weights": floats_to_bytes(weights)},
                )

            return decrypt_model
        if request.step == "model_info":
            info_id = request.labels.get("model", "")

            def model_info(emit: Callable[[Event], None]) -> Step:
                model = node.models.get(info_id)
                if model is None:
                    raise JobStateError(f"no trained model {info_id!r} at the root")
                payloads = _standardization_payload(node, info_id)
                labels = {
                    "job": job_to_json(model.job),
                    "refreshes": ",".join(str(r) for r in model.refreshes_per_iteration),
                }
                return Step(request.job_id, "model_info", node.params.name, 0, payloads, labels)

            return model_info
        if request.step == "predict":
            model_id = request.labels.get("model", "")
            key = request.payload("querier_key")
            queries = [request.payloads[n] for n in sorted(request.payloads) if n.startswith("q.")]
            if not queries:
                raise ConfigError("a predict job needs at least one encrypted query (q.0, ...)")

            def predict(emit: Callable[[Event], None]) -> Step:
                results = run_predict(node, request.job_id, model_id, queries, querier, key, emit)
                payloads = {f"r.{i:04d}": r for i, r in enumerate(results)}
                return Step(request.job_id, "predict", node.params.name, 0, payloads)

            return predict
        raise JobStateError(
            f"unknown job kind {request.step!r}; known: setup, stats, train, joint_key, model, "
            "model_info, predict"
        )


def _standardization_payload(node: Node, model_id: str) -> dict[str, bytes]:
    """The pooled (mean, std) a model was trained with: public, queries need it."""
    if model_id not in node.standardizations:
        return {}
    mean, std = node.standardizations[model_id]
    return {"standardize": floats_to_bytes(np.concatenate([mean, std]))}


def _stream_job(
    job: Callable[[Callable[[Event], None]], Step], request: Step, context: grpc.ServicerContext
) -> Iterator[pb.Frame]:
    """Run ``job`` in a thread and stream its progress events, then its result."""
    events: queue.Queue[Any] = queue.Queue()
    done = object()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["step"] = job(events.put)
        except Exception as exc:  # noqa: BLE001 - re-raised as a status below
            outcome["error"] = exc
        events.put(done)

    threading.Thread(target=work, name=f"job-{request.job_id}", daemon=True).start()
    while True:
        item = events.get()
        if item is done:
            break
        yield event_frame(item)
    if "error" in outcome:
        _abort(context, outcome["error"])
    yield from to_frames(outcome["step"])


def build_server(
    config: NodeConfig, *, deadline_s: float = DEFAULT_DEADLINE_S
) -> tuple[grpc.Server, Node]:
    """A started-ready server for ``config`` (call ``.start()``), and its node."""
    children = [NodeClient(c, config.tls, deadline_s) for c in config.children]
    node = Node(config, children)
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix=config.id),
        options=[
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 8 << 20),
        ],
    )
    pb_grpc.add_NodeServicer_to_server(NodeServicer(node), server)  # type: ignore[no-untyped-call]
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    creds = load_server_credentials(config.tls.cert, config.tls.key, config.tls.ca)
    if server.add_secure_port(config.listen, creds) == 0:
        raise ConfigError(f"{config.source}: cannot listen on {config.listen}")
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("phe_fl.v1.Node", health_pb2.HealthCheckResponse.SERVING)
    return server, node


def serve_forever(config: NodeConfig, *, deadline_s: float = DEFAULT_DEADLINE_S) -> None:
    """Run a node until SIGTERM or SIGINT, then stop gracefully."""
    server, node = build_server(config, deadline_s=deadline_s)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    log.info("node %s (party %d) serving on %s", config.id, config.party, config.listen)
    print(f"phe-fl node {config.id} serving on {config.listen}", flush=True)
    while not stop.wait(0.5):  # a timed wait keeps the signal handlers responsive
        pass
    server.stop(grace=2).wait()
    node.close()


def new_job_id() -> str:
    return uuid.uuid4().hex[:16]
