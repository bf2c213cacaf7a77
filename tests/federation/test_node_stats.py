"""Per-node stats on the wire: every field survives the trailer and the querier's events,
and a stream from a peer that sends only the original three fields still reads."""

from __future__ import annotations

from phe_fl.federation.serde import Event, NodeStats, Step, from_frames, to_frames
from phe_fl.v1 import federation_pb2 as pb

FULL = NodeStats(
    "node-1",
    0.5,
    42,
    combine_seconds=0.25,
    serialize_seconds=0.01,
    subtree_seconds=1.5,
    bytes_from_parent=1000,
    bytes_from_children=84,
    bytes_to_children=2000,
    parent_id="node-0",
)


def test_all_stats_fields_roundtrip_in_trailer_and_events() -> None:
    step = Step("job-1", "map", "p", 3, {"share": b"x" * 42})
    leaf = NodeStats("node-3", 0.4, 42, parent_id="node-1", bytes_from_parent=1000)
    event = Event("iteration 1: MAP+COMBINE/node", "m", 0.5, "node-1", 42, FULL)
    events: list[Event] = []
    got = from_frames(to_frames(step, [FULL, leaf], [event, Event("p", "m")]), events.append)
    assert got.stats == (FULL, leaf)
    assert events == [event, Event("p", "m")]
    assert events[1].stats is None  # a phase event carries no node stats
    assert FULL.work_seconds == 0.5 + 0.25 + 0.01
    assert FULL.bytes_received == 1000 + 84
    assert leaf.combine_seconds == 0.0 and leaf.bytes_received == 1000


def test_stats_from_an_older_peer_default_to_zero() -> None:
    frames = [
        pb.Frame(header=pb.StepHeader(job_id="j", step="map")),
        pb.Frame(trailer=pb.Trailer(stats=[pb.NodeStats(node_id="n", seconds=1.0, bytes_sent=7)])),
    ]
    (stats,) = from_frames(frames).stats
    assert stats == NodeStats("n", 1.0, 7)
    assert stats.parent_id == "" and stats.bytes_received == 0
