"""Log lines carry the node, job and peer; metrics count what nodes measure."""

from __future__ import annotations

import json
import logging
import threading
import urllib.request

import pytest

from phe_fl.errors import ConfigError
from phe_fl.federation import messages as m
from phe_fl.federation.observability import (
    Metrics,
    configure_logging,
    log_context,
    serve_metrics,
)


@pytest.fixture
def restore_logging():  # type: ignore[no-untyped-def]
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for h in list(root.handlers):
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(level)


def test_json_lines_carry_node_job_and_peer(restore_logging, capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("INFO", "json", node="node-1")
    log = logging.getLogger("phe_fl.test")
    with log_context(job="job-7", peer="node-0"):
        log.info("answered %s", "gradient")
        with log_context(peer="node-3"):
            log.warning("inner")
    log.debug("not shown at INFO")
    log.info("outside")
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert [(x["job"], x["peer"], x["message"]) for x in lines] == [
        ("job-7", "node-0", "answered gradient"),
        ("job-7", "node-3", "inner"),
        ("-", "-", "outside"),
    ]
    assert {x["node"] for x in lines} == {"node-1"}
    assert lines[1]["level"] == "WARNING" and lines[0]["logger"] == "phe_fl.test"


def test_text_lines_name_job_and_peer_and_threads_start_empty(restore_logging, capsys) -> None:  # type: ignore[no-untyped-def]
    configure_logging("debug", "text", node="node-2")
    log = logging.getLogger("phe_fl.test")
    with log_context(job="j1", peer="querier"):
        log.debug("here")
        worker = threading.Thread(target=lambda: log.info("in a worker"))
        worker.start()
        worker.join()
    err = capsys.readouterr().err
    assert "[node-2 job=j1 peer=querier] here" in err
    assert "[node-2 job=- peer=-] in a worker" in err  # a thread sets its own context


@pytest.mark.parametrize(
    ("level", "fmt", "match"), [("LOUD", "text", "log level"), ("INFO", "xml", "log format")]
)
def test_bad_logging_options_are_named(level: str, fmt: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        configure_logging(level, fmt)


def test_metrics_are_served_with_what_a_step_measured() -> None:
    metrics = Metrics()
    stats = m.NodeStats(
        "node-1",
        0.25,
        1000,
        combine_seconds=0.5,
        serialize_seconds=0.01,
        bytes_from_parent=300,
        bytes_from_children=2000,
        bytes_to_children=600,
        parent_id="node-0",
    )
    metrics.step("gradient", stats)
    metrics.step("refresh", stats)
    metrics.decisions.labels("key_switch", "refuse").inc()
    metrics.refused_requests.labels("PERMISSION_DENIED").inc()
    metrics.watch_jobs(lambda: ["succeeded", "succeeded", "running"])
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    stop = serve_metrics(f"127.0.0.1:{port}", metrics)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    finally:
        stop()
    assert 'phe_fl_step_seconds_count{phase="own",step="gradient"} 1.0' in text
    assert 'phe_fl_step_seconds_sum{phase="combine",step="refresh"} 0.5' in text
    assert 'phe_fl_payload_bytes_total{direction="to_parent"} 2000.0' in text
    assert 'phe_fl_payload_bytes_total{direction="from_children"} 4000.0' in text
    assert "phe_fl_refreshes_total 1.0" in text
    assert 'phe_fl_decisions_total{decision="refuse",step="key_switch"} 1.0' in text
    assert 'phe_fl_refused_requests_total{code="PERMISSION_DENIED"} 1.0' in text
    assert (
        'phe_fl_jobs{state="succeeded"} 2.0' in text and 'phe_fl_jobs{state="running"} 1.0' in text
    )
