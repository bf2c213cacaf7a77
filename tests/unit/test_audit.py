"""The audit log a node shows its regulator: every append verifies, every way of rewriting
history (editing, deleting, inserting, moving, truncating a line) is caught and the line
named, threads do not fork the chain, and a process killed mid-append leaves a log that
reopens and continues."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from phe_fl.errors import AuditError, StateError
from phe_fl.federation.audit import GENESIS, AuditLog, AuditSummary, format_summary, verify

REPO = Path(__file__).resolve().parents[2]


def decision(i: int, **over: Any) -> dict[str, Any]:
    """A realistic decision entry; ``i`` varies the fields so lines differ."""
    entry: dict[str, Any] = {
        "job": f"job-{i // 4}",
        "job_kind": "training",
        "step": ("key_switch", "decrypt_model", "gradient")[i % 3],
        "requester": "root",
        "querier": ("alice", "bob")[i % 2],
        "purpose": "model",
        "digest": f"{i:064x}",
        "decision": "refuse" if i % 5 == 0 else "contribute",
        "reason": "querier in queriers",
        "rows": 100 + i,
    }
    entry.update(over)
    return entry


def write_log(path: Path, n: int) -> list[dict[str, Any]]:
    with AuditLog(path) as audit:
        return [audit.append(decision(i)) for i in range(n)]


def lines(path: Path) -> list[bytes]:
    return path.read_bytes().splitlines(keepends=True)


def refused(path: Path) -> AuditError:
    with pytest.raises(AuditError) as info:
        verify(path)
    return info.value


def test_round_trip_and_summary(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 10)
    summary = verify(path)
    assert summary == AuditSummary(
        lines=10,
        first_time=records[0]["time"],
        last_time=records[-1]["time"],
        decisions={"refuse": 2, "contribute": 8},
        steps={"key_switch": 4, "decrypt_model": 3, "gradient": 3},
        queriers={"alice": 5, "bob": 5},
    )
    # The file holds exactly the returned records, chained from GENESIS.
    on_disk = [json.loads(raw) for raw in lines(path)]
    assert on_disk == records
    assert [r["seq"] for r in records] == list(range(1, 11))
    assert records[0]["prev"] == GENESIS
    assert all(b["prev"] == a["hash"] for a, b in zip(records, records[1:], strict=False))
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["time"]) for r in records)
    text = format_summary(summary, path)
    assert str(path) in text
    assert f"chain intact: 10 entries from {records[0]['time']} to {records[-1]['time']}" in text
    assert "contribute 8, refuse 2" in text
    assert "key_switch 4" in text and "alice 5, bob 5" in text


def test_empty_and_missing(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    AuditLog(empty).close()
    assert verify(empty) == AuditSummary(0, None, None, {}, {}, {})
    assert "chain intact: no entries" in format_summary(verify(empty), empty)
    err = refused(tmp_path / "missing.jsonl")
    assert err.line == 0 and "no such file" in str(err)


def test_querier_counted_only_where_present(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        audit.append({"step": "public_key", "decision": "contribute"})
        audit.append({"step": "key_switch", "decision": "refuse", "querier": "mallory"})
        audit.append({"step": "statistics", "decision": "contribute", "querier": ""})
    assert verify(path).queriers == {"mallory": 1}


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    first = write_log(path, 3)
    with AuditLog(path) as audit:
        fourth = audit.append(decision(3))
    assert fourth["seq"] == 4 and fourth["prev"] == first[-1]["hash"]
    assert verify(path).lines == 4


def test_second_process_handle_refused(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path), pytest.raises(StateError, match="another process"):
        AuditLog(path)


def test_edited_field_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 6)
    body = lines(path)
    assert b'"decision":"refuse"' in body[5]  # line 6 is decision(5): a refusal
    body[5] = body[5].replace(b'"decision":"refuse"', b'"decision":"contribute"')
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 6 and "edited (hash mismatch)" in str(err)
    assert str(err).startswith("line 6: ")


def test_reformatted_line_named(tmp_path: Path) -> None:
    """Same content, other bytes: still not the line that was written."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    body = lines(path)
    body[1] = json.dumps(json.loads(body[1]), sort_keys=True).encode() + b"\n"
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 2 and "reformatted" in str(err)


def test_deleted_middle_line_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    body = lines(path)
    del body[2]
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 3 and "seq 4 where 3 was expected" in str(err)


def test_swapped_lines_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 5)
    body = lines(path)
    body[1], body[3] = body[3], body[1]
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 2 and "seq 4 where 2 was expected" in str(err)


def test_forged_line_with_own_valid_hash_named(tmp_path: Path) -> None:
    """A forger who can hash but does not rewrite the rest: the seq fits, the prev cannot."""
    from phe_fl.federation import audit as audit_module

    path = tmp_path / "audit.jsonl"
    records = write_log(path, 4)
    body = lines(path)
    forged: dict[str, Any] = {
        "seq": 3,
        "time": records[2]["time"],
        "prev": "f" * 64,  # not line 2's hash
        **decision(99, decision="contribute", querier="mallory"),
    }
    forged["hash"] = audit_module._digest(forged)
    body.insert(2, audit_module._render(forged))
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 3
    assert "chain broken: prev does not match line 2's hash" in str(err)


def test_careful_insertion_caught_at_next_line(tmp_path: Path) -> None:
    """Even a forged line that links correctly to its predecessor breaks the next link."""
    from phe_fl.federation import audit as audit_module

    path = tmp_path / "audit.jsonl"
    records = write_log(path, 4)
    body = lines(path)
    forged: dict[str, Any] = {"seq": 3, "time": records[2]["time"], "prev": records[1]["hash"]}
    forged.update(decision(99))
    forged["hash"] = audit_module._digest(forged)
    body.insert(2, audit_module._render(forged))
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 4 and "seq 3 where 4 was expected" in str(err)


def test_wrong_first_prev_named(tmp_path: Path) -> None:
    """Lines cut from the top of a log (and renumbered, rehashed) do not start from GENESIS."""
    from phe_fl.federation import audit as audit_module

    path = tmp_path / "audit.jsonl"
    records = write_log(path, 3)
    first = dict(records[1], seq=1)
    first["hash"] = audit_module._digest(first)
    path.write_bytes(audit_module._render(first))
    err = refused(path)
    assert err.line == 1 and "genesis" in str(err)


def test_not_json_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    body = lines(path)
    body[1] = b"{this is not json\n"
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 2 and "not JSON" in str(err)


def test_duplicate_key_named(tmp_path: Path) -> None:
    """A second "decision" key that some readers would take and others would not."""
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    body = lines(path)
    body[1] = body[1].replace(b'"hash":', b'"decision":"contribute","hash":')
    path.write_bytes(b"".join(body))
    err = refused(path)
    assert err.line == 2 and "duplicate key 'decision'" in str(err)


def test_truncated_last_line_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 4)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 30])
    err = refused(path)
    assert err.line == 4 and "incomplete last line" in str(err)


def test_reopen_cuts_torn_tail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "audit.jsonl"
    records = write_log(path, 3)
    whole = path.read_bytes()
    path.write_bytes(whole + b'{"seq":4,"time":"2025-')  # a crash mid-write
    with caplog.at_level(logging.WARNING, logger="phe_fl.audit_log"):
        with AuditLog(path) as audit:
            assert path.read_bytes() == whole
            fourth = audit.append(decision(3))
    assert [r.levelno for r in caplog.records] == [logging.WARNING]
    assert "incomplete last line" in caplog.records[0].getMessage()
    assert fourth["seq"] == 4 and fourth["prev"] == records[-1]["hash"]
    assert verify(path).lines == 4


def test_reopen_cuts_torn_first_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b'{"seq":1,"ti')
    with AuditLog(path) as audit:
        first = audit.append(decision(0))
    assert first["seq"] == 1 and first["prev"] == GENESIS
    assert verify(path).lines == 1


@pytest.mark.parametrize(
    ("last", "why"),
    [
        (b"garbage\n", "not JSON"),
        (b'{"seq":3,"time":"t","prev":"p"}\n', "'hash'"),
        (b'{"time":"t","prev":"p","hash":"h"}\n', "'seq'"),
    ],
)
def test_reopen_refuses_broken_last_line(tmp_path: Path, last: bytes, why: str) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 2)
    path.write_bytes(path.read_bytes() + last)
    before = path.read_bytes()
    with pytest.raises(AuditError) as info:
        AuditLog(path)
    assert info.value.line == 3 and why in str(info.value)
    assert path.read_bytes() == before  # nothing cut, nothing appended
    with pytest.raises(AuditError):  # not StateError: the failed open released its lock
        AuditLog(path)


def test_reopen_refuses_edited_last_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    write_log(path, 3)
    path.write_bytes(path.read_bytes().replace(b'"rows":102', b'"rows":999'))
    with pytest.raises(AuditError) as info:
        AuditLog(path)
    assert info.value.line == 3 and "hash mismatch" in str(info.value)


@pytest.mark.parametrize("key", ["seq", "time", "prev", "hash"])
def test_reserved_keys_refused(tmp_path: Path, key: str) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        with pytest.raises(ValueError, match=key):
            audit.append(decision(0, **{key: "x"}))
        audit.append(decision(1))
    assert verify(path).lines == 1  # the refused entry left nothing behind


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ({1, 2}, "set is not JSON"),
        (b"bytes", "bytes is not JSON"),
        (object(), "object is not JSON"),
        (float("nan"), "not a JSON number"),
        (float("inf"), "not a JSON number"),
        ({"nested": [1, {"deep": (1, 2)}]}, "tuple is not JSON"),
        ({1: "int key"}, "not a string"),
        ("\ud800", "UTF-8"),
    ],
)
def test_non_json_values_refused(tmp_path: Path, value: Any, why: str) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as audit:
        with pytest.raises(ValueError, match=why):
            audit.append(decision(0, rows=value))
    assert path.read_bytes() == b""


def test_json_values_kept_exactly(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    entry = decision(
        0,
        rows=[1, 2.5, -0.0, 1e300, 10**30, True, None, {"k": ["v"]}],
        reason="querier «Zürich» refused\nnext line\u2028",
    )
    with AuditLog(path) as audit:
        record = audit.append(entry)
    assert len(lines(path)) == 1  # newlines inside values stay escaped
    assert json.loads(path.read_bytes()) == record
    assert "Zürich".encode() in path.read_bytes()  # ensure_ascii=False: readable as written
    assert verify(path).lines == 1


def test_append_after_close_refused(tmp_path: Path) -> None:
    audit = AuditLog(tmp_path / "audit.jsonl")
    audit.close()
    audit.close()
    with pytest.raises(ValueError, match="closed"):
        audit.append(decision(0))


def test_threads_do_not_fork_the_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    results: list[list[dict[str, Any]]] = [[] for _ in range(8)]
    start = threading.Barrier(8)

    with AuditLog(path) as audit:

        def worker(t: int) -> None:
            start.wait()
            for i in range(200):
                results[t].append(audit.append(decision(i, thread=t)))

        threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
        for th in threads:
            th.start()
        for th in threads:
            th.join()

    summary = verify(path)
    assert summary.lines == 1600
    seqs = [r["seq"] for rs in results for r in rs]
    assert sorted(seqs) == list(range(1, 1601))
    # Each thread saw its own appends in increasing order.
    assert all([r["seq"] for r in rs] == sorted(r["seq"] for r in rs) for rs in results)
    assert sum(summary.decisions.values()) == 1600


def test_file_mode_0600_under_umask_0(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = os.umask(0)
    try:
        write_log(path, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_file_mode_0600_under_strict_umask(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    old = os.umask(0o277)
    try:
        write_log(path, 1)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


CHILD = """
import sys, threading
from pathlib import Path
from phe_fl.federation.audit import AuditLog

audit = AuditLog(Path(sys.argv[1]))
print("ready", flush=True)

def run(t):
    i = 0
    while True:
        audit.append({"step": "gradient", "decision": "contribute", "thread": t, "i": i,
                      "reason": "x" * (i % 300)})
        i += 1

threads = [threading.Thread(target=run, args=(t,), daemon=True) for t in range(2)]
for th in threads:
    th.start()
threads[0].join()
"""


def test_sigkill_mid_append_leaves_a_log_that_continues(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    rng = random.Random(20250131)
    total = 0
    for round_ in range(4):
        child = subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline() == b"ready\n", child.stderr and child.stderr.read()
            time.sleep(rng.uniform(0.1, 0.6))
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
            if child.stdout:
                child.stdout.close()
            if child.stderr:
                child.stderr.close()
        assert child.returncode == -signal.SIGKILL
        if round_ == 1:
            # As if the kill had torn the last write (a single os.write rarely tears).
            with path.open("ab") as f:
                f.write(b'{"seq":999999,"time":"2025-01-')
        with AuditLog(path) as audit:  # cuts a torn tail, if any
            record = audit.append({"step": "restart", "decision": "contribute"})
        summary = verify(path)
        assert summary.lines == record["seq"] > total
        total = summary.lines
    assert summary.steps["restart"] == 4
    assert summary.steps["gradient"] == total - 4 > 0
