"""A node's paused network MAP (phe_fl.federation.network): stages answered once and
resent on a retry, refused out of order, lost (and said so) after a restart; a child's
stage answer read strictly."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_iris

from phe_fl.errors import ProtocolError, StageLostError
from phe_fl.federation import messages as m
from phe_fl.federation.network import MAX_PENDING, NetworkMaps, StageAnswer
from phe_fl.mhe import INSECURE_TEST
from phe_fl.ml import MapRequest, MLPJob
from phe_fl.ml.staging import layer_sums
from phe_fl.testing import setup_local

JOB = MLPJob(
    n_features=4,
    n_classes=3,
    hidden=(5,),
    iterations=1,
    batch_size=6,
    allow_model_decryption=True,
    params=INSECURE_TEST.name,
)


@pytest.fixture(scope="module")
def world():  # type: ignore[no-untyped-def]
    x, y = load_iris(return_X_y=True)
    shards = [(x[:20], y[:20].astype(float)), (x[20:40], y[20:40].astype(float))]
    fed = setup_local(JOB, shards)
    weights = [
        fed.encrypt(tile)
        for k, w in enumerate(JOB.initial_weights(), start=1)
        for tile in JOB.layout.weights_vectors(k, w)
    ]
    return fed, weights


def _stage0(weights: list, iteration: int = 0) -> m.NetworkMapRequest:  # type: ignore[type-arg]
    return m.NetworkMapRequest(iteration, 12, tuple(w.to_bytes() for w in weights))


def test_a_map_runs_in_stages_and_ends_with_the_in_process_gradients(world) -> None:  # type: ignore[no-untyped-def]
    fed, weights = world
    party = fed.workers[0]
    maps = NetworkMaps("node-0", fed.ctx)
    first = maps.stage("job", party, _stage0(weights))
    assert maps.stage("job", party, _stage0(weights)) is first  # a retry: the same answer
    answer, stage = first, 0
    while answer.pending:
        (mine,) = answer.pending
        assert mine.node_id == "node-0" and mine.ciphertexts
        fresh = fed.refresh_many([fed.ctx.ciphertext_from_bytes(c) for c in mine.ciphertexts])
        stage += 1
        step = m.NetworkMapRequest(
            0, 12, (), stage, (m.NodeCiphertexts("node-0", tuple(c.to_bytes() for c in fresh)),)
        )
        answer = maps.stage("job", party, step)
        assert maps.stage("job", party, step) is answer
    assert stage >= 1 and answer.finished == 1 and len(answer.gradients) == JOB.n_layers
    # once finished, later stages (other parties still pausing) add nothing
    later = m.NetworkMapRequest(0, 12, (), stage + 1, ())
    assert maps.stage("job", party, later).finished == 0
    # the same MAP in process (the local federation's stages) gives the same gradients
    request = MapRequest(0, tuple(weights), 12)
    steps = party.start_map(request)
    while steps.pending:
        steps.advance(fed.refresh_many(steps.pending))
    want = [fed.fed.decrypt(g, length=64) for g in layer_sums(fed.ctx, steps.results())]
    got = [fed.fed.decrypt(g, length=64) for g in answer.gradients]
    assert max(float(np.abs(a - b).max()) for a, b in zip(got, want, strict=True)) < 1e-4


def test_stages_out_of_order_or_after_a_restart_are_refused(world) -> None:  # type: ignore[no-untyped-def]
    fed, weights = world
    party = fed.workers[1]
    maps = NetworkMaps("node-1", fed.ctx)
    first = maps.stage("job", party, _stage0(weights))
    assert first.pending  # a hidden layer: MAP pauses for a refresh
    with pytest.raises(ProtocolError, match="stage 3 asked of a MAP at stage 0"):
        maps.stage("job", party, m.NetworkMapRequest(0, 12, (), 3, ()))
    with pytest.raises(ProtocolError, match="needs .* refreshed ciphertexts, got 0"):
        maps.stage("job", party, m.NetworkMapRequest(0, 12, (), 1, ()))
    with pytest.raises(ProtocolError, match="carries weights"):
        maps.stage("job", party, m.NetworkMapRequest(0, 12, first_weights(weights), 1, ()))
    restarted = NetworkMaps("node-1", fed.ctx)  # the process came back: nothing in memory
    with pytest.raises(StageLostError, match="holds no MAP of iteration 0 .* starts again"):
        restarted.stage("job", party, m.NetworkMapRequest(0, 12, (), 1, ()))
    with pytest.raises(StageLostError):  # another iteration's stage: not this MAP's
        maps.stage("job", party, m.NetworkMapRequest(1, 12, (), 1, ()))
    # the root starts the iteration again: stage 0 anew gives the same intermediates
    again = restarted.stage("job", party, _stage0(weights))
    assert again.pending[0].ciphertexts == first.pending[0].ciphertexts


def first_weights(weights: list) -> tuple[bytes, ...]:  # type: ignore[type-arg]
    return tuple(w.to_bytes() for w in weights)


def test_a_childs_stage_answer_is_read_strictly(world) -> None:  # type: ignore[no-untyped-def]
    fed, weights = world
    g = weights[0].to_bytes()
    bad = {
        "1 gradients for 2 weight ciphertexts": m.NetworkMapResponse((g,), 1, ()),
        "0 finished parties with 2 gradients": m.NetworkMapResponse((g, g), 0, ()),
        "asks for 0 refreshes": m.NetworkMapResponse((), 0, (m.NodeCiphertexts("n", ()),)),
        f"asks for {MAX_PENDING + 1} refreshes": m.NetworkMapResponse(
            (), 0, (m.NodeCiphertexts("n", (b"x",) * (MAX_PENDING + 1)),)
        ),
    }
    for match, res in bad.items():
        with pytest.raises(ProtocolError, match=match):
            StageAnswer.read(fed.ctx, res, JOB.n_layers)
    twice = StageAnswer(pending=[m.NodeCiphertexts("node-3", (b"a",))])
    with pytest.raises(ProtocolError, match="node-3 answered the same MAP stage twice"):
        twice.plus(fed.ctx, twice)


def test_each_child_is_sent_only_its_subtrees_refreshed_ciphertexts(world) -> None:  # type: ignore[no-untyped-def]
    fed, _ = world
    maps = NetworkMaps("node-0", fed.ctx)

    def request(stage: int, refreshed: tuple[m.NodeCiphertexts, ...] = ()) -> m.TreeRequest:
        step = m.NetworkMapRequest(4, 12, (b"w",) if stage == 0 else (), stage, refreshed)
        return m.TreeRequest("job", INSECURE_TEST.name, 4, step)

    def waiting(*nodes: str) -> m.NetworkMapResponse:
        return m.NetworkMapResponse((), 0, tuple(m.NodeCiphertexts(n, (b"x",)) for n in nodes))

    maps.heard(request(0), "node-1", waiting("node-1", "node-3"))
    maps.heard(request(0), "node-2", waiting())  # node-2 finished at stage 0
    everyone = tuple(m.NodeCiphertexts(n, (n.encode(),)) for n in ("node-1", "node-2", "node-3"))
    to_1 = maps.for_child(request(1, everyone), "node-1").step
    to_2 = maps.for_child(request(1, everyone), "node-2").step
    assert isinstance(to_1, m.NetworkMapRequest) and isinstance(to_2, m.NetworkMapRequest)
    assert [r.node_id for r in to_1.refreshed] == ["node-1", "node-3"]
    assert to_2.refreshed == () and to_2.stage == 1 and to_2.iteration == 4
    # a stage this node did not hear (it restarted): everything goes down, as before
    assert maps.for_child(request(2, everyone), "node-2").step.refreshed == everyone  # type: ignore[union-attr]
    assert maps.for_child(request(0), "node-1") == request(0)


def test_a_finished_map_hands_its_chunk_gradients_over_once(world) -> None:  # type: ignore[no-untyped-def]
    """A node keeps its finished MAP until the next iteration's starts: it must not keep
    the per-chunk gradients too (at 2^15 a 784-64-64-10 network's are 140 MB)."""
    fed, weights = world
    steps = fed.workers[0].start_map(MapRequest(0, tuple(weights), 12))
    while steps.pending:
        steps.advance(fed.refresh_many(steps.pending))
    taken = steps.take_results()
    assert taken and all(len(chunk) == JOB.layout.n_cts for chunk in taken)
    assert steps.results() == []
