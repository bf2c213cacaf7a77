"""What a node tells its operators: log lines that name the job and the peer they are
about, and Prometheus metrics of the figures the node already measures.

Why context variables: a node's work for one request crosses the servicer, the tree
transport, the party and the policy; each entry point (a parent's request, a child's
stream, a querier's job) sets the job and the peer once, and every line logged beneath
it carries them without threading ids through every call. Worker threads start with an
empty context, so each entry point sets its own.

Metrics live in one registry per process (one node per process, by design) and are
served on the node's ``[node] metrics`` address, plaintext HTTP for the scraper on the
site's own network; they hold counts, seconds and bytes, never payloads.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, Literal

from phe_fl.errors import ConfigError

__all__ = [
    "LOG_FORMATS",
    "LOG_LEVELS",
    "Metrics",
    "METRICS",
    "configure_logging",
    "log_context",
    "serve_metrics",
]

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")

_job: ContextVar[str] = ContextVar("phe_fl_job", default="-")
_peer: ContextVar[str] = ContextVar("phe_fl_peer", default="-")


@contextmanager
def log_context(*, job: str | None = None, peer: str | None = None) -> Iterator[None]:
    """Lines logged inside the block (in this thread) carry ``job`` and ``peer``."""
    tokens = []
    if job is not None:
        tokens.append((_job, _job.set(job or "-")))
    if peer is not None:
        tokens.append((_peer, _peer.set(peer or "-")))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class _Context(logging.Filter):
    """Adds the node, job and peer to every record the handler writes."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        record.job = _job.get()
        record.peer = _peer.get()
        return True


class _Json(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "node": getattr(record, "node", "-"),
            "job": getattr(record, "job", "-"),
            "peer": getattr(record, "peer", "-"),
            "message": record.getMessage(),
        }
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)


TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(node)s job=%(job)s peer=%(peer)s] %(message)s"


def configure_logging(level: str = "INFO", fmt: str = "text", *, node: str = "-") -> None:
    """The process's log: ``level`` and above to stderr, as text or JSON lines, every
    line with the node, job and peer."""
    if level.upper() not in LOG_LEVELS:
        raise ConfigError(f"log level {level!r}: choose one of {', '.join(LOG_LEVELS)}")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"log format {fmt!r}: choose one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Context(node))
    handler.setFormatter(_Json() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())


class Metrics:
    """The node's Prometheus metrics (``phe_fl_*``), in a registry of their own."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        self.step_seconds = Histogram(
            "phe_fl_step_seconds",
            "Seconds this node spent on a protocol step, by phase: own (its MAP or share), "
            "combine (loading and adding its children's answers), serialize (writing its "
            "answer).",
            ["step", "phase"],
            registry=self.registry,
            buckets=(0.001, 0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600),
        )
        self.payload_bytes = Counter(
            "phe_fl_payload_bytes",
            "Payload bytes of protocol steps, by direction (from_parent, to_parent, "
            "from_children, to_children).",
            ["direction"],
            registry=self.registry,
        )
        self.refreshes = Counter(
            "phe_fl_refreshes",
            "Collective refreshes (bootstrapping) this node contributed to.",
            registry=self.registry,
        )
        self.decisions = Counter(
            "phe_fl_decisions",
            "Policy decisions of this node, by step and decision (contribute, refuse).",
            ["step", "decision"],
            registry=self.registry,
        )
        self.refused_requests = Counter(
            "phe_fl_refused_requests",
            "Requests refused with an error status, by gRPC status name.",
            ["code"],
            registry=self.registry,
        )
        self._job_states: Callable[[], Iterable[str]] = lambda: ()
        metrics = self

        class _Jobs:
            def collect(self) -> Iterator[Any]:
                return metrics._collect_jobs()

        self.registry.register(_Jobs())

    def step(self, step: str, stats: Any) -> None:
        """Record one step's own figures (a :class:`~phe_fl.federation.messages.NodeStats`)."""
        self.step_seconds.labels(step, "own").observe(stats.seconds)
        self.step_seconds.labels(step, "combine").observe(stats.combine_seconds)
        self.step_seconds.labels(step, "serialize").observe(stats.serialize_seconds)
        for direction, value in (
            ("from_parent", stats.bytes_from_parent),
            ("to_parent", stats.bytes_sent if stats.parent_id else 0),
            ("from_children", stats.bytes_from_children),
            ("to_children", stats.bytes_to_children),
        ):
            self.payload_bytes.labels(direction).inc(value)
        if step == "refresh":
            self.refreshes.inc()

    def watch_jobs(self, states: Callable[[], Iterable[str]]) -> None:
        """Export ``phe_fl_jobs{state}``: the root's jobs by state, read at each scrape
        from ``states`` (the last one given: a process runs one root)."""
        self._job_states = states

    def _collect_jobs(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily("phe_fl_jobs", "Jobs at the root by state.", labels=["state"])
        counts: dict[str, int] = {}
        for state in self._job_states():
            counts[state] = counts.get(state, 0) + 1
        for state, count in sorted(counts.items()):
            family.add_metric([state], count)
        yield family


METRICS = Metrics()
"""This process's metrics (one node per process)."""


def serve_metrics(address: str, metrics: Metrics = METRICS) -> Callable[[], None]:
    """Serve ``metrics`` at http://``address``/metrics; returns a function that stops it."""
    from prometheus_client import start_http_server

    host, _, port = address.rpartition(":")
    server, thread = start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop
