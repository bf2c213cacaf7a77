"""The test process is the root (the real node code, in-process) of two real leaf processes
that dial in to it; it sends them crafted and out-of-order tree steps, as a faulty or
hostile parent would. Each gets a clear typed error, the refusals leave audit lines in
the leaf's log, and the leaves keep serving."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from phe_fl.errors import PeerError
from phe_fl.federation import messages as m
from phe_fl.federation.coordinator import Coordinator, Run
from phe_fl.federation.jobs import Control, Job
from phe_fl.federation.local import write_configs
from phe_fl.mhe import INSECURE_TEST, Context, PublicKeyGen, QuerierKeyPair, RelinKeyGen
from tests.e2e.harness import RootWithLeaves

PARAMS = INSECURE_TEST.name
N = 3
ROOT = Path(__file__).resolve().parents[2]


class Harness(RootWithLeaves):
    def __init__(self, workdir: Path, *, leaf_state: str = "") -> None:
        configs, self.addresses = write_configs(workdir, N, fanout=2, params=PARAMS)
        for cfg in configs[1:]:  # extra [state] settings for the leaves
            cfg.write_text(cfg.read_text().replace("[state]\n", f"[state]\n{leaf_state}"))
        super().__init__(workdir, configs, deadline_s=20)

    def ask(self, child: str, job: str, step: m.TreeStep, **kw: object) -> m.TreeResponse:
        fields = {"params": PARAMS, "n_parties": N, **kw}
        request = m.TreeRequest(job, str(fields["params"]), int(fields["n_parties"]), step, 10)  # type: ignore[call-overload]
        return self.call(child, request, 10)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("crafted"))
    try:
        h.wait_connected(["node-1", "node-2"])
        yield h
    finally:
        h.close()


def _run(c: Coordinator, request: m.JobRequest) -> m.JobResult | None:
    """Submit as the querier "querier" and wait for the job to end."""
    job = c.submit(request, "querier")
    assert isinstance(job, Job)
    list(job.follow())
    if job.error is not None:
        raise job.error
    return c.jobs.result(job)


def _junk_ciphertext() -> bytes:
    ctx = Context(INSECURE_TEST)
    return ctx.encrypt([1.0], QuerierKeyPair.generate(ctx).public_key).to_bytes()


def test_steps_before_key_generation_are_refused_by_the_state_machine(harness: Harness) -> None:
    with pytest.raises(
        PeerError,
        match="FAILED_PRECONDITION: key generation on node node-1: step 'relin_round_one' "
        "is not allowed in state 'new' \\(allowed there: ping, public_key\\)",
    ):
        harness.ask("node-1", "early", m.RelinRoundOneRequest(b"x"))
    with pytest.raises(PeerError, match="FAILED_PRECONDITION.*'statistics'.*state 'new'"):
        harness.ask("node-2", "early", m.StatisticsRequest(30))


def test_a_share_of_the_wrong_kind_is_refused_mid_key_generation(harness: Harness) -> None:
    """Half a key generation by hand (public key, joint key installed), then a relin CRP
    that is a ciphertext; then the real setup under the same job id resumes from the
    leaves' caches."""
    c = harness.coordinator
    crp = c.member.lead_public_key().to_bytes()
    events: list[m.ProgressEvent] = []
    run = Run("keys", "setup", "querier", events.append, Control())
    share = c.round(run, m.PublicKeyShareRequest(crp), m.Stage.KEYGEN_PUBLIC_KEY)
    pkg = PublicKeyGen(c.ctx)
    joint = pkg.finalize(pkg.share_from_bytes(share.share))
    c.install(run, m.InstallJointKeyRequest(joint.to_bytes()))
    states = {n.key_state for n in c.round(run, m.PingRequest(), m.Stage.KEYGEN_DONE).nodes}
    assert states == {"joint_key"}
    wrong = m.RelinRoundOneRequest(_junk_ciphertext())
    with pytest.raises(PeerError, match="INVALID_ARGUMENT.*expected a relin"):
        harness.ask("node-1", "keys", wrong)
    assert _run(c, m.JobRequest("keys", PARAMS, m.SetupJob())) == m.SetupResult("keys")
    # the root answered the repeated public-key round from its cache: node-1 drew one share
    assert harness.log("node-1").count("job=keys step=public_key ") == 1
    RelinKeyGen(c.member.require_joint_key())  # the root holds the joint key


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"params": "n15-depth11-128"}, "INVALID_ARGUMENT: step for parameter set"),
        ({"n_parties": N + 1}, "INVALID_ARGUMENT: step for 4 parties, this federation has 3"),
    ],
    ids=["wrong-params", "wrong-party-count"],
)
def test_a_step_for_another_federation_is_refused(harness: Harness, kw: dict, match: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(PeerError, match=match):
        harness.ask("node-1", "other", m.StatisticsRequest(30), **kw)


def test_crafted_steps_after_key_generation(harness: Harness) -> None:
    if harness.coordinator.keys.state != "ready":
        pytest.skip("needs the key generation of the previous test")
    ct = _junk_ciphertext()
    with pytest.raises(PeerError, match="FAILED_PRECONDITION.*'public_key'.*state 'ready'"):
        harness.ask("node-1", "keys-2", m.PublicKeyShareRequest(b"x"))
    with pytest.raises(PeerError, match="INVALID_ARGUMENT"):
        harness.ask(
            "node-1",
            "bad-ct",
            m.KeySwitchRequest(m.Purpose.PREDICTION, "querier", b"k", (b"junk" * 9,)),
        )
    with pytest.raises(
        PeerError,
        match="FAILED_PRECONDITION: training job 'never' on node node-2: step 'gradient' is "
        "not allowed in state 'unprepared'",
    ):
        harness.ask("node-2", "never", m.GradientRequest(0, 10, ct))
    with pytest.raises(
        PeerError,
        match="PERMISSION_DENIED: node node-1's policy refuses key_switch: querier 'mallory'",
    ):
        harness.ask(
            "node-1", "steal", m.KeySwitchRequest(m.Purpose.PREDICTION, "mallory", b"k", (ct,))
        )
    with pytest.raises(
        PeerError, match="PERMISSION_DENIED: node node-2's policy refuses decrypt_model"
    ):
        harness.ask("node-2", "decrypt", m.DecryptModelRequest("any", ct))
    log = harness.log("node-1")
    assert "job=steal step=key_switch requester=node-0 querier=mallory decision=refuse" in log
    assert "decision=refuse" in harness.log("node-2")
    # the leaves still serve: pooled statistics over the tree
    q = QuerierKeyPair.generate(harness.coordinator.ctx)
    job = m.StatsJob(q.public_key.to_bytes(), 30)
    result = _run(harness.coordinator, m.JobRequest("stats", PARAMS, job))
    assert isinstance(result, m.StatsResult)
    values = q.decrypt(harness.coordinator.ctx.ciphertext_from_bytes(result.encrypted_sums))
    assert round(values[60]) == 569  # the count: every sample of the three shards
    assert (
        "job=stats step=key_switch requester=node-0 querier=querier decision=contribute"
        in harness.log("node-2")
    )


def test_a_request_that_does_not_decode_is_answered_and_the_link_stays(harness: Harness) -> None:
    """A whole message from the parent that is not a valid request (here: no step) gets a
    typed INVALID_ARGUMENT answer for its call; the leaf keeps the same link."""
    import time

    from phe_fl.v2 import tree_pb2

    link = harness.root.children._wait("node-1", time.monotonic() + 30)
    assert link is not None
    no_step = tree_pb2.ParentMessage(
        request=tree_pb2.TreeRequest(job_id="no-step", params=PARAMS, n_parties=N, deadline_s=10)
    )
    placeholder = m.TreeRequest("no-step", PARAMS, N, m.PingRequest(), 10)
    response = link.send(placeholder, no_step.SerializeToString()).result(20)
    assert isinstance(response.result, m.Failure), response
    assert response.result.code == "INVALID_ARGUMENT", response.result
    assert "TreeRequest" in response.result.message
    assert harness.root.children._wait("node-1", time.monotonic()) is link  # not redialed
    assert not link.closed.is_set()
    assert isinstance(harness.ask("node-1", "after", m.PingRequest()).result, m.PingResponse)
    assert "refused a malformed request from node-0" in harness.log("node-1")


def test_a_message_larger_than_any_step_of_the_parameter_set_is_refused(
    harness: Harness,
) -> None:
    """A parent declaring a message larger than the largest step of the federation's
    parameter set can carry is cut off before the leaf buffers it; the leaf dials in again."""
    import time

    from phe_fl.federation.serde import Frame, tree_message_limit

    limit = tree_message_limit(PARAMS)
    link = harness.root.children._wait("node-2", time.monotonic() + 30)
    assert link is not None
    link.outbox.put(iter([Frame(call_id=10**9, total_size=limit + 1, data=b"x" * 1024)]))
    assert link.closed.wait(20)
    again = harness.root.children._wait("node-2", time.monotonic() + 30)
    assert again is not None and again is not link
    assert isinstance(harness.ask("node-2", "after-big", m.PingRequest()).result, m.PingResponse)
    assert f"message of {limit + 1} bytes exceeds the limit of {limit}" in harness.log("node-2")


def test_a_second_copy_of_a_listening_node_refuses_to_start(harness: Harness) -> None:
    """The in-process root runs; a process started with the same config must refuse to
    run (its state dir is locked), not share the port (gRPC's default SO_REUSEPORT) or
    the key share."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    copy = subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "node", "--config", str(harness.configs[0])],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert copy.returncode == 2, copy.stderr[-2000:]
    assert "node node-0 is already running on state dir" in copy.stderr


def test_answers_beyond_the_bound_are_evicted_and_then_refused(tmp_path: Path) -> None:
    """A leaf keeps at most 1 MiB of answers: the oldest go, and a retry of an evicted
    request is refused (FAILED_PRECONDITION), never answered with a share drawn again."""
    h = Harness(tmp_path, leaf_state="max_answer_bytes = 1048576\n")
    try:
        h.wait_connected(["node-1", "node-2"])
        assert _run(h.coordinator, m.JobRequest("keys", PARAMS, m.SetupJob())) is not None
        ct = _junk_ciphertext()
        asks = [m.DecryptStatisticsRequest(ct) for _ in range(12)]
        for i, step in enumerate(asks):
            h.ask("node-1", f"decrypt-{i}", step)
        state = tmp_path / "state" / "node-1" / "blobs"
        kept = sum(p.stat().st_size for p in state.glob("answer-*"))
        assert kept <= 1 << 20, kept
        with pytest.raises(PeerError, match="FAILED_PRECONDITION.*no longer keeps the answer"):
            h.ask("node-1", "decrypt-0", asks[0])
        again = h.ask("node-1", "decrypt-11", asks[11])  # the newest is still kept
        assert again.result is not None
        assert h.log("node-1").count("job=decrypt-11 step=decrypt_statistics") == 1
    finally:
        h.close()
