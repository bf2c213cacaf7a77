"""The federation's declared state machines and the one table from errors to status codes:
a tracker takes exactly the declared steps, and a refusal names machine, state and step."""

from __future__ import annotations

import logging
import re
import threading

import grpc
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from phe_fl.errors import (
    ConfigError,
    CryptoError,
    JobCancelledError,
    JobStateError,
    KeyMismatchError,
    LevelError,
    ParameterError,
    PartySetError,
    PeerError,
    PheFlError,
    PolicyError,
    ProtocolError,
    SerializationError,
)
from phe_fl.federation import status
from phe_fl.federation.messages import Failure
from phe_fl.federation.state import FEDERATION_KEYS, JOB, KEYGEN, TRAINING, Machine, Tracker
from phe_fl.v2 import common_pb2

MACHINES = {"KEYGEN": KEYGEN, "FEDERATION_KEYS": FEDERATION_KEYS, "TRAINING": TRAINING, "JOB": JOB}
# steps no machine declares (a state's name, another machine's step, near misses)
UNDECLARED = ("", "bogus", "ready", "PUBLIC_KEY", "public_key ", "job:setup")


def assert_refused(tracker: Tracker, step: str) -> JobStateError:
    """``step`` is refused in the tracker's state, by name, and the state does not move."""
    machine, before = tracker.machine, tracker.state
    for attempt in (tracker.check, tracker.advance):
        with pytest.raises(JobStateError) as info:
            attempt(step)
        assert tracker.state == before
    message = str(info.value)
    assert message.startswith(f"{machine.name} {tracker.subject}".strip() + ":")
    assert f"step {step!r} is not allowed in state {before!r}" in message
    allowed = machine.allowed(before)
    assert f"(allowed there: {', '.join(allowed) or 'nothing'})" in message
    return info.value


def test_undeclared_steps_are_really_undeclared() -> None:
    for machine in MACHINES.values():
        assert not machine.steps & set(UNDECLARED), machine.name


@pytest.mark.parametrize("name", MACHINES)
@settings(max_examples=150, deadline=None)
@given(data=st.data(), subject=st.sampled_from(["", "job-7", "of the federation"]))
def test_tracker_takes_exactly_the_declared_steps(
    name: str, data: st.DataObject, subject: str
) -> None:
    machine = MACHINES[name]
    # from the initial state, or from any state a restarted process found on record
    start = data.draw(st.none() | st.sampled_from(sorted(machine.states)), label="start")
    tracker = Tracker(machine, subject, state=start)
    assert tracker.state == (machine.initial if start is None else start)
    pool = sorted(machine.steps) + list(UNDECLARED)
    for _ in range(data.draw(st.integers(0, 25), label="length")):
        state = tracker.state
        allowed = machine.allowed(state)
        # half the time a step the state allows, so that long paths are walked too
        follow = allowed and data.draw(st.booleans())
        step = data.draw(st.sampled_from(allowed if follow else pool), label="step")
        if (state, step) in machine.transitions:
            after = machine.transitions[(state, step)]
            assert tracker.check(step) == after
            assert tracker.state == state  # check never moves
            assert tracker.advance(step) == after
            assert tracker.state == after
        else:
            assert_refused(tracker, step)
        assert tracker.state in machine.states
    event(f"ended in {tracker.state}")  # --hypothesis-show-statistics: the states reached


def test_machine_declarations_are_consistent() -> None:
    for machine in MACHINES.values():
        assert machine.initial in machine.states
        for (state, step), after in machine.transitions.items():
            assert step in machine.allowed(state) and after in machine.states


def test_keygen_full_path_from_new_to_ready() -> None:
    tracker = Tracker(KEYGEN, "node-1")
    assert tracker.state == "new"
    assert_refused(tracker, "statistics")  # nothing is released before the keys exist
    assert_refused(tracker, "install_joint_key")
    path = [
        ("public_key", "public_key"),
        ("install_joint_key", "joint_key"),
        ("relin_round_one", "relin_round_one"),
        ("relin_round_two", "relin_round_two"),
        ("install_relin_key", "ready"),
    ]
    for step, after in path:
        assert tracker.check("ping") == tracker.state  # liveness in every state
        assert_refused(tracker, "gradient")
        assert tracker.advance(step) == after
    for step in ("rotation_keys", "install_rotation_keys", "statistics", "decrypt_statistics"):
        assert tracker.advance(step) == "ready"
    for step in ("decrypt_model", "key_switch", "refresh", "prepare_training", "gradient", "ping"):
        assert tracker.advance(step) == "ready"
    error = assert_refused(tracker, "public_key")  # keys are generated once
    assert "key generation node-1: step 'public_key' is not allowed in state 'ready'" in str(error)


def test_keygen_steps_out_of_order_are_refused() -> None:
    tracker = Tracker(KEYGEN)
    tracker.advance("public_key")
    error = assert_refused(tracker, "relin_round_one")
    assert str(error).startswith("key generation: step 'relin_round_one'")
    assert "(allowed there: install_joint_key, ping)" in str(error)


def test_federation_keys_one_generation_at_a_time_and_resume() -> None:
    keys = Tracker(FEDERATION_KEYS, "of the federation")
    assert keys.state == "none"
    assert_refused(keys, "train")  # jobs that need keys wait for them
    assert keys.advance("setup") == "generating"
    error = assert_refused(keys, "setup")  # a second setup while one runs
    assert "federation keys of the federation: step 'setup'" in str(error)
    assert "state 'generating'" in str(error)
    assert_refused(keys, "stats")
    assert keys.advance("status") == "generating"
    assert keys.advance("interrupt") == "interrupted"
    assert_refused(keys, "complete")
    assert keys.advance("setup") == "generating"  # resumes the interrupted one
    assert keys.advance("complete") == "ready"
    for job in ("stats", "train", "model_weights", "model_info", "predict", "joint_key", "status"):
        assert keys.advance(job) == "ready"
    assert_refused(keys, "setup")  # once keys exist


def test_training_gradient_only_after_prepare() -> None:
    job = Tracker(TRAINING, "job-1")
    assert_refused(job, "gradient")
    assert job.advance("prepare_training") == "prepared"
    assert job.advance("gradient") == "prepared"
    assert job.advance("gradient") == "prepared"
    assert_refused(job, "prepare_training")


def test_the_job_machine_is_exactly_as_documented() -> None:
    assert JOB.initial == "unknown"
    assert dict(JOB.transitions) == {
        ("unknown", "submit"): "queued",
        ("queued", "start"): "running",
        ("queued", "cancel"): "cancelled",
        ("queued", "fail"): "failed",
        ("running", "succeed"): "done",
        ("running", "fail"): "failed",
        ("running", "cancel"): "cancelled",
        ("running", "interrupt"): "interrupted",
        ("interrupted", "resume"): "running",
        ("interrupted", "cancel"): "cancelled",
        ("interrupted", "fail"): "failed",
    }
    assert JOB.states == {
        "unknown",
        "queued",
        "running",
        "interrupted",
        "done",
        "failed",
        "cancelled",
    }
    for end in ("done", "failed", "cancelled"):  # an ended job takes no step at all
        assert JOB.allowed(end) == []


@pytest.mark.parametrize("end", ["succeed", "fail", "cancel"])
def test_a_job_id_runs_once(end: str) -> None:
    job = Tracker(JOB, "job-1")
    assert job.state == "unknown"
    assert_refused(job, "succeed")
    assert_refused(job, "start")  # nothing runs before it is submitted
    assert job.advance("submit") == "queued"
    assert_refused(job, "submit")
    assert_refused(job, "succeed")  # a queued job has not run
    assert_refused(job, "resume")  # only an interrupted job resumes
    assert job.advance("start") == "running"
    assert_refused(job, "submit")
    assert_refused(job, "start")
    assert job.advance(end) == {"succeed": "done", "fail": "failed", "cancel": "cancelled"}[end]
    for step in ("submit", "start", "resume", "cancel"):
        error = assert_refused(job, step)
        assert "(allowed there: nothing)" in str(error)


def test_an_interrupted_job_resumes_and_may_be_interrupted_again() -> None:
    job = Tracker(JOB, "job-1")
    job.advance("submit")
    job.advance("start")
    assert job.advance("interrupt") == "interrupted"
    assert_refused(job, "start")  # it resumes; it does not start over
    assert_refused(job, "succeed")  # an interrupted job is not running
    assert_refused(job, "interrupt")
    assert job.advance("resume") == "running"
    assert job.advance("interrupt") == "interrupted"
    assert job.advance("resume") == "running"
    assert job.advance("succeed") == "done"


@pytest.mark.parametrize(
    ("path", "end", "state"),
    [
        (["submit"], "cancel", "cancelled"),
        (["submit"], "fail", "failed"),
        (["submit", "start", "interrupt"], "cancel", "cancelled"),
        (["submit", "start", "interrupt"], "fail", "failed"),
        (["submit", "start"], "cancel", "cancelled"),
    ],
    ids=[
        "queued-cancel",
        "queued-fail",
        "interrupted-cancel",
        "interrupted-fail",
        "running-cancel",
    ],
)
def test_a_job_that_never_finishes_running_ends_cancelled_or_failed(
    path: list[str], end: str, state: str
) -> None:
    job = Tracker(JOB, "job-1")
    for step in path:
        job.advance(step)
    assert job.advance(end) == state
    assert_refused(job, "resume")
    assert_refused(job, "start")


@pytest.mark.parametrize("state", ["queued", "running", "interrupted", "done", "cancelled"])
def test_a_tracker_starts_in_the_state_on_record(state: str) -> None:
    job = Tracker(JOB, "'job-1'", state=state)
    assert job.state == state and job.subject == "'job-1'"
    for step in JOB.allowed(state):
        assert job.check(step) == JOB.transitions[(state, step)]
    assert job.state == state
    error = assert_refused(job, "submit")  # a job on record was submitted already
    assert f"job 'job-1': step 'submit' is not allowed in state {state!r}" in str(error)


@pytest.mark.parametrize("name", MACHINES)
@pytest.mark.parametrize("state", ["", "bogus", "Running", "submit", "ready ", "none!"])
def test_a_tracker_refuses_to_start_in_an_undeclared_state(name: str, state: str) -> None:
    machine = MACHINES[name]
    assert state not in machine.states
    message = re.escape(f"{machine.name} job-9: no state {state!r}")
    with pytest.raises(JobStateError, match=rf"^{message}$"):
        Tracker(machine, "job-9", state=state)
    assert Tracker(machine, "job-9", state=None).state == machine.initial


def test_concurrent_submits_of_one_job_id_let_exactly_one_through() -> None:
    job = Tracker(JOB, "job-1")
    barrier, outcomes = threading.Barrier(16), []

    def submit() -> None:
        barrier.wait()
        try:
            job.advance("submit")
            outcomes.append("ran")
        except JobStateError:
            outcomes.append("refused")

    threads = [threading.Thread(target=submit) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes) == ["ran"] + ["refused"] * 15
    assert job.state == "queued"


def test_a_small_machine_refuses_what_it_does_not_declare() -> None:
    door = Machine("door", "closed", {("closed", "open"): "open", ("open", "close"): "closed"})
    tracker = Tracker(door)
    assert door.states == {"closed", "open"} and door.steps == {"open", "close"}
    assert_refused(tracker, "close")
    assert tracker.advance("open") == "open"
    assert tracker.advance("close") == "closed"


# -- errors to status codes --------------------------------------------------------------------
class _Both(PolicyError, JobStateError):
    """Matches two rows of the table: the first one wins."""


class _CancelledByPolicy(JobCancelledError, PolicyError):
    """A cancellation is reported as one, whatever else it is."""


@pytest.mark.parametrize(
    ("exc", "name"),
    [
        (JobCancelledError("the job was cancelled"), "CANCELLED"),
        (PolicyError("no"), "PERMISSION_DENIED"),
        (JobStateError("out of order"), "FAILED_PRECONDITION"),
        (PeerError("node-3", "down"), "ABORTED"),
        (CryptoError("openfhe failed"), "INTERNAL"),
        (ProtocolError("bad"), "INVALID_ARGUMENT"),
        (KeyMismatchError("other key"), "INVALID_ARGUMENT"),
        (PartySetError("party 9"), "INVALID_ARGUMENT"),
        (ParameterError("bad"), "INVALID_ARGUMENT"),
        (SerializationError("bad"), "INVALID_ARGUMENT"),
        (ConfigError("bad"), "INVALID_ARGUMENT"),
        (LevelError("bad"), "INVALID_ARGUMENT"),
        (PheFlError("bad"), "INVALID_ARGUMENT"),
        (_Both("both"), "PERMISSION_DENIED"),
        (_CancelledByPolicy("both"), "CANCELLED"),
        (ValueError("x"), "INTERNAL"),
        (RuntimeError("x"), "INTERNAL"),
        (PermissionError("x"), "INTERNAL"),  # not phe-fl's PolicyError
        (ConnectionError("x"), "INTERNAL"),  # not phe-fl's PeerError
        (KeyError("x"), "INTERNAL"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else v,
)
def test_status_name_maps_each_error(exc: BaseException, name: str) -> None:
    assert status.status_name(exc) == name
    assert status.grpc_status(exc) == getattr(grpc.StatusCode, name)
    assert name in common_pb2.Error.Code.keys()  # a Failure with it serializes
    failure = status.failure_for(exc)
    assert isinstance(failure, Failure) and failure.code == name


def test_status_table_order() -> None:
    assert [(kind.__name__, name) for kind, name in status.STATUS_TABLE] == [
        ("JobCancelledError", "CANCELLED"),
        ("BusyError", "RESOURCE_EXHAUSTED"),
        ("PolicyError", "PERMISSION_DENIED"),
        ("JobStateError", "FAILED_PRECONDITION"),
        ("AppError", "FAILED_PRECONDITION"),
        ("PeerError", "ABORTED"),
        ("StageLostError", "ABORTED"),
        ("CryptoError", "INTERNAL"),
        ("PheFlError", "INVALID_ARGUMENT"),
    ]


def test_public_message_keeps_domain_words_and_hides_internals(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert status.public_message(PolicyError("node-2 refuses")) == "node-2 refuses"
    assert status.public_message(PeerError("node-3", "down")) == "node node-3: down"
    secret = "secret-share 0xdeadbeef at /home/alice/keys"
    for exc in (RuntimeError(secret), KeyError(secret), OSError(secret)):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="phe_fl.status"):
            public = status.public_message(exc)
        assert "deadbeef" not in public and "alice" not in public and "secret" not in public
        assert type(exc).__name__ in public
        # the details go to the node's own log
        (record,) = [r for r in caplog.records if r.name == "phe_fl.status"]
        assert record.exc_info is not None and record.exc_info[1] is exc
        assert status.failure_for(exc) == Failure("INTERNAL", public)


@pytest.mark.parametrize(
    ("code", "answered"),
    [
        ("PERMISSION_DENIED", True),
        ("FAILED_PRECONDITION", True),
        ("INVALID_ARGUMENT", True),
        ("UNAVAILABLE", False),
        ("ABORTED", False),
        ("", False),
    ],
)
def test_a_node_that_answered_no_is_not_asked_again(code: str, answered: bool) -> None:
    """A training or FedAvg job waits for a vanished node and resumes; a node that refused
    or found the request bad would answer the same again, so the job fails at once."""
    assert PeerError("node-2", f"{code}: why", code=code).answered is answered
