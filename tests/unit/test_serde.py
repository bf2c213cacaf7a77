"""Frame streams: large payloads are chunked, malformed streams are refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from phe_fl.errors import ProtocolError
from phe_fl.federation.serde import CHUNK, Event, NodeStats, Step, from_frames, to_frames
from phe_fl.v1 import federation_pb2 as pb

ROOT = Path(__file__).resolve().parents[2]


def test_roundtrip_chunks_large_payloads_and_keeps_order() -> None:
    big = os.urandom(3 * CHUNK + 17)
    step = Step(
        "job-1",
        "keyswitch",
        "n14-depth5-128",
        5,
        {"ct": big, "empty": b"", "querier_key": b"k" * 10},
        {"querier": "q"},
    )
    frames = list(to_frames(step, [NodeStats("node-1", 0.5, 42)], [Event("p", "m", 1.0)]))
    assert all(f.ByteSize() <= CHUNK + 64 for f in frames)
    events: list[Event] = []
    got = from_frames(frames, events.append)
    assert got.step == step
    assert got.stats == (NodeStats("node-1", 0.5, 42),)
    assert events == [Event("p", "m", 1.0)]


def _frames(step: Step) -> list[pb.Frame]:
    return list(to_frames(step))


@pytest.mark.parametrize(
    ("mangle", "match"),
    [
        (lambda f: f[1:], "must start with a header"),
        (lambda f: f[:-1], "truncated message"),
        (lambda f: [*f, pb.Frame(chunk=b"extra")], "after all declared payloads"),
        (lambda f: [], "ended before its header"),
        (lambda f: [f[0], pb.Frame(header=f[0].header)], "unexpected header frame"),
    ],
    ids=["no-header", "truncated", "extra-chunk", "empty", "two-headers"],
)
def test_malformed_streams_are_refused(mangle, match: str) -> None:  # type: ignore[no-untyped-def]
    frames = _frames(Step("j", "stats", "p", 3, {"a": b"x" * 100}))
    with pytest.raises(ProtocolError, match=match):
        from_frames(mangle(frames))


def test_bad_names_are_refused() -> None:
    with pytest.raises(ProtocolError, match="invalid job id"):
        list(to_frames(Step("bad job id", "stats", "p")))
    header = pb.Frame(
        header=pb.StepHeader(
            job_id="j",
            step="s",
            payloads=[pb.PayloadInfo(name="a", size=1), pb.PayloadInfo(name="a", size=1)],
        )
    )
    with pytest.raises(ProtocolError, match="duplicate payload names"):
        from_frames([header])


def test_generated_protobuf_code_is_up_to_date() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "proto" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
