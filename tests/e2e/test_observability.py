"""What operators see of real node processes: JSON log lines naming the job and the peer,
and the Prometheus endpoint with the figures nodes measure."""

from __future__ import annotations

import json
import socket
import urllib.request
from pathlib import Path

import pytest

from phe_fl.federation.local import LocalCluster
from phe_fl.federation.querier import Querier
from phe_fl.mhe import INSECURE_TEST


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_json_logs_name_job_and_peer_and_metrics_count_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PHE_FL_LOG_FORMAT", "json")  # `phe-fl node --log-format` default
    port = _free_port()
    with LocalCluster(tmp_path, n_nodes=3, params=INSECURE_TEST.name, deadline_s=60) as c:
        root = c.configs[0]
        root.write_text(
            root.read_text().replace("[node]\n", f'[node]\nmetrics = "127.0.0.1:{port}"\n')
        )
        c.stop_node(0)
        c.start_node(0)
        c.wait_ready(60)
        q = Querier(c.root_address, c.querier_tls(), deadline_s=60)
        q.setup("keys-1")
        q.stats("stats-1", 30)
        q.close()
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        leaf_log = c.log(1)
    assert 'phe_fl_jobs{state="done"} 2.0' in text  # setup and stats
    assert 'phe_fl_step_seconds_count{phase="own",step="statistics"} 1.0' in text
    assert 'phe_fl_step_seconds_count{phase="combine",step="public_key"} 1.0' in text
    assert 'phe_fl_decisions_total{decision="contribute",step="key_switch"} 1.0' in text
    assert "phe_fl_payload_bytes_total" in text and "phe_fl_refused_requests_total" in text
    lines = [json.loads(line) for line in leaf_log.splitlines() if line.startswith("{")]
    assert lines and all(
        {"time", "level", "node", "job", "peer", "message"} <= set(x) for x in lines
    )
    # the insecure test parameter set is announced at every start, at WARNING
    assert any(x["level"] == "WARNING" and "NOT SECURE" in x["message"] for x in lines)
    audit = [x for x in lines if x["logger"] == "phe_fl.audit" and x["job"] == "stats-1"]
    assert audit, lines[-5:]
    assert {x["node"] for x in audit} == {"node-1"} and {x["peer"] for x in audit} == {"node-0"}
