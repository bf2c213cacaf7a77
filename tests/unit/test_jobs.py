"""The root's job registry (phe_fl.federation.jobs) on a real state store: a submitted job is
queued, runs alone in submission order, reaches its followers and its result; it belongs to
its querier; it can be cancelled queued or running; a failure is on record; and records and
results outlive the root process, a training resuming after a kill and anything else failing.

The runners here are small functions standing in for the coordinator's; they do what a job
does to the manager (emit events, check its control, record progress), nothing more.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from phe_fl.errors import JobCancelledError, JobStateError, PheFlError, PolicyError
from phe_fl.federation import messages as m
from phe_fl.federation.jobs import RESUMABLE_KINDS, Control, Job, JobManager
from phe_fl.federation.store import NodeStore, StoreIdentity
from phe_fl.ml import TrainingJob

REPO = Path(__file__).resolve().parents[2]
IDENT = StoreIdentity("node-0", "insecure-test", "ab" * 32)
PARAMS = "insecure-test"
WAIT_S = 10.0
"""The longest a test waits for a job: a job that hangs fails the test instead of blocking it."""

Runner = Callable[[Job], m.JobResult]


def stats(job_id: str) -> m.JobRequest:
    return m.JobRequest(job_id, PARAMS, m.StatsJob(b"querier key", 4))


def train(job_id: str) -> m.JobRequest:
    return m.JobRequest(job_id, PARAMS, m.TrainJob(TrainingJob(4, iterations=5)))


def result_for(job: Job) -> m.JobResult:
    """What a runner returns: a result of the job's kind that names the job."""
    if isinstance(job.request.job, m.TrainJob):
        return m.TrainResult(job.info.job_id, (3,), None)
    return m.StatsResult(job.info.job_id.encode())


def wait_ended(job: Job) -> None:
    for _ in job.follow(timeout_s=WAIT_S):
        pass
    assert job.ended, f"job {job.info.job_id} still {job.info.state} after {WAIT_S} s"


class Root:
    """Root processes, one after the other, on one state dir: each a store and a manager."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.stores: list[NodeStore] = []
        self.managers: list[JobManager] = []
        self.gates: list[threading.Event] = []

    def gate(self) -> threading.Event:
        """An event a runner waits on (at most WAIT_S); opened at the end of the test."""
        event = threading.Event()
        self.gates.append(event)
        return event

    def open(self, run: Runner) -> JobManager:
        store = NodeStore(self.state, IDENT)
        self.stores.append(store)
        manager = JobManager(store, run)
        self.managers.append(manager)
        manager.start()
        return manager

    def stop(self, manager: JobManager) -> None:
        """Stop ``manager`` and wait for its worker (stop() itself does not) to let go."""
        manager.stop()
        manager._worker.join(WAIT_S)
        assert not manager._worker.is_alive(), "the job worker did not stop"

    def restart(self, run: Runner) -> JobManager:
        """The last root stops and closes its store; a new one opens the same state dir."""
        self.stop(self.managers[-1])
        self.stores[-1].close()
        return self.open(run)

    def close(self) -> None:
        for manager in self.managers:
            manager.stop()
        for gate in self.gates:
            gate.set()
        for manager in self.managers:
            if manager._worker.is_alive():
                manager._worker.join(WAIT_S)
        for store in self.stores:
            store.close()


@pytest.fixture
def state(tmp_path: Path) -> Path:
    return tmp_path / "state"


@pytest.fixture
def root(state: Path) -> Iterator[Root]:
    r = Root(state)
    yield r
    r.close()


# -- one job -------------------------------------------------------------------------------
def test_a_submitted_job_is_queued_and_its_events_and_result_reach_its_followers(
    root: Root,
) -> None:
    go = root.gate()
    events = [
        m.ProgressEvent(m.Stage.STATISTICS, seconds=0.5, count=3),
        m.ProgressEvent(m.Stage.KEY_SWITCH, seconds=0.25),
    ]

    def run(job: Job) -> m.JobResult:
        if job.info.job_id == "blocker":
            assert go.wait(WAIT_S)
        else:
            for event in events:
                job.emit(event)
        return result_for(job)

    manager = root.open(run)
    blocker = manager.submit(stats("blocker"), "alice")
    job = manager.submit(stats("job-1"), "alice")
    assert isinstance(job, Job) and not job.ended
    created = job.info.created
    assert job.info == m.JobInfo("job-1", "stats", "alice", "queued", created, job.info.updated)
    assert 0 < created <= job.info.updated <= time.time()
    assert job.request == stats("job-1") and job.result is None
    assert manager.get("job-1", "alice") is job

    live: list[m.ProgressEvent] = []
    follower = threading.Thread(target=lambda: live.extend(job.follow(timeout_s=WAIT_S)))
    follower.start()  # follows while the job is still queued
    go.set()
    follower.join(WAIT_S + 1)
    assert not follower.is_alive()
    assert live == events
    assert job.info.state == "done" and job.info.error == "" and job.error is None
    assert manager.result(job) == m.StatsResult(b"job-1")  # read back from the store
    assert job.result is None and job.request is None  # an ended job holds neither
    assert job.info.created == created <= job.info.started <= job.info.updated
    assert job.info.resumes == 0
    late = list(job.follow(timeout_s=0.5))  # a later follower gets them all, then the end
    assert late == events
    wait_ended(blocker)
    assert manager.result(blocker) == m.StatsResult(b"blocker") and blocker.events == []


def test_jobs_run_one_at_a_time_in_submission_order(root: Root) -> None:
    log: list[tuple[str, str, float]] = []
    alongside: dict[str, list[str]] = {}

    def run(job: Job) -> m.JobResult:
        log.append((job.info.job_id, "start", time.monotonic()))
        alongside[job.info.job_id] = [
            i.job_id for i in manager.list("alice") if i.state == "running"
        ]
        time.sleep(0.05)
        log.append((job.info.job_id, "end", time.monotonic()))
        return result_for(job)

    manager = root.open(run)
    ids = ["first", "second", "third"]
    jobs = [
        manager.submit(stats("first"), "alice"),
        manager.submit(train("second"), "alice"),
        manager.submit(stats("third"), "alice"),
    ]
    for job in jobs:
        wait_ended(job)
    assert [(job_id, what) for job_id, what, _ in log] == [
        (job_id, what) for job_id in ids for what in ("start", "end")
    ]
    times = [t for _, _, t in log]
    assert times == sorted(times)  # each starts after the one before ended
    assert alongside == {job_id: [job_id] for job_id in ids}  # nothing ran alongside
    assert [job.info.state for job in jobs] == ["done"] * 3
    assert [manager.result(job) for job in jobs] == [
        m.StatsResult(b"first"),
        m.TrainResult("second", (3,), None),
        m.StatsResult(b"third"),
    ]


def test_a_duplicate_job_id_is_refused_naming_the_jobs_state(root: Root) -> None:
    go, started = root.gate(), threading.Event()
    calls: list[str] = []

    def run(job: Job) -> m.JobResult:
        calls.append(job.info.job_id)
        if job.info.job_id == "dup":
            started.set()
            assert go.wait(WAIT_S)
        return result_for(job)

    manager = root.open(run)
    dup = manager.submit(stats("dup"), "alice")
    assert started.wait(WAIT_S)
    queued = manager.submit(stats("next"), "alice")

    def refused(job_id: str, state: str, querier: str = "alice") -> None:
        message = rf"job '{job_id}': step 'submit' is not allowed in state '{state}'"
        with pytest.raises(JobStateError, match=message):
            manager.submit(train(job_id), querier)

    refused("dup", "running")
    refused("dup", "running", querier="bob")  # a job id is the root's, not a querier's
    refused("next", "queued")
    go.set()
    wait_ended(dup)
    wait_ended(queued)
    refused("dup", "done")
    refused("next", "done")
    assert calls == ["dup", "next"]  # each id ran once
    assert manager.get("dup", "alice") is dup and dup.request is None  # ended: in the store
    assert manager.result(dup) == m.StatsResult(b"dup")
    assert manager.list("bob") == []  # a refused submit leaves no record


def test_a_job_belongs_to_its_querier(root: Root) -> None:
    go = root.gate()

    def run(job: Job) -> m.JobResult:
        assert go.wait(WAIT_S)
        return result_for(job)

    manager = root.open(run)
    job = manager.submit(stats("job-1"), "alice")
    with pytest.raises(PolicyError, match=r"job 'job-1' belongs to another querier"):
        manager.get("job-1", "bob")
    with pytest.raises(PolicyError, match=r"job 'job-1' belongs to another querier"):
        manager.cancel("job-1", "bob")
    with pytest.raises(JobStateError, match=r"no job 'nope' at the root"):
        manager.get("nope", "alice")
    with pytest.raises(JobStateError, match=r"no job 'nope' at the root"):
        manager.cancel("nope", "alice")
    go.set()
    wait_ended(job)
    assert job.info.state == "done"  # bob's cancel did not touch it
    assert not job.control.cancelled


def test_list_shows_only_the_queriers_own_jobs_in_submission_order(root: Root) -> None:
    manager = root.open(result_for)
    jobs = [
        manager.submit(stats("a-1"), "alice"),
        manager.submit(train("b-1"), "bob"),
        manager.submit(train("a-2"), "alice"),
    ]
    for job in jobs:
        wait_ended(job)
    alice = manager.list("alice")
    assert [(i.job_id, i.kind, i.querier, i.state) for i in alice] == [
        ("a-1", "stats", "alice", "done"),
        ("a-2", "train", "alice", "done"),
    ]
    assert alice == [jobs[0].info, jobs[2].info]
    assert [i.job_id for i in manager.list("bob")] == ["b-1"]
    assert manager.list("carol") == []


# -- cancel and failure ------------------------------------------------------------------------
def test_cancel_of_a_queued_job_ends_it_without_running_it(root: Root) -> None:
    go = root.gate()
    calls: list[str] = []

    def run(job: Job) -> m.JobResult:
        calls.append(job.info.job_id)
        if job.info.job_id == "blocker":
            assert go.wait(WAIT_S)
        return result_for(job)

    manager = root.open(run)
    blocker = manager.submit(stats("blocker"), "alice")
    target = manager.submit(train("target"), "alice")
    info = manager.cancel("target", "alice")
    assert info.state == "cancelled" and info == target.info
    assert info.error == "the job was cancelled"
    assert target.ended and isinstance(target.error, JobCancelledError)
    assert list(target.follow(timeout_s=WAIT_S)) == []  # its followers are let go at once
    with pytest.raises(JobStateError, match=r"step 'cancel' is not allowed in state 'cancelled'"):
        manager.cancel("target", "alice")
    go.set()
    wait_ended(blocker)
    after = manager.submit(stats("after"), "alice")
    wait_ended(after)  # the queue is drained: the cancelled job would have run by now
    assert calls == ["blocker", "after"]
    assert target.info.state == "cancelled" and manager.result(target) is None
    assert target.info.started == 0.0  # never started
    assert blocker.info.state == after.info.state == "done"


@pytest.mark.parametrize("how", ["check", "wait"])
def test_cancel_of_a_running_job_stops_it_at_its_next_check(root: Root, how: str) -> None:
    started = threading.Event()
    reached_the_end: list[str] = []

    def run(job: Job) -> m.JobResult:
        if job.info.job_id != "long":
            return result_for(job)
        started.set()
        if how == "wait":
            job.control.wait(WAIT_S)  # e.g. waiting for a node to come back
        else:
            deadline = time.monotonic() + WAIT_S
            while time.monotonic() < deadline:  # e.g. one round over the tree after another
                job.control.check()
                time.sleep(0.005)
        reached_the_end.append(job.info.job_id)
        return result_for(job)

    manager = root.open(run)
    job = manager.submit(train("long"), "alice")
    assert started.wait(WAIT_S)
    asked = time.monotonic()
    info = manager.cancel("long", "alice")
    assert info.state in ("running", "cancelled")  # it stops at its next check
    assert job.control.cancelled
    wait_ended(job)
    assert time.monotonic() - asked < WAIT_S / 2
    assert job.info.state == "cancelled" and job.info.error == "the job was cancelled"
    assert isinstance(job.error, JobCancelledError)
    assert reached_the_end == [] and job.result is None and manager.result(job) is None
    nxt = manager.submit(stats("next"), "alice")  # the worker goes on
    wait_ended(nxt)
    assert nxt.info.state == "done"


def test_a_runner_that_raises_ends_its_job_failed_with_the_message(root: Root) -> None:
    def run(job: Job) -> m.JobResult:
        if job.info.job_id == "bad":
            job.emit(m.ProgressEvent(m.Stage.VALIDATE_SHARDS))
            raise ValueError("node-3 sent a malformed share")
        return result_for(job)

    manager = root.open(run)
    bad = manager.submit(train("bad"), "alice")
    good = manager.submit(stats("good"), "alice")
    assert list(bad.follow(timeout_s=WAIT_S)) == [m.ProgressEvent(m.Stage.VALIDATE_SHARDS)]
    wait_ended(good)
    assert bad.info.state == "failed"
    assert bad.info.error == "node-3 sent a malformed share"
    assert isinstance(bad.error, ValueError) and bad.result is None
    assert manager.result(bad) is None
    assert good.info.state == "done" and good.info.error == ""  # the worker survived it
    with pytest.raises(JobStateError, match=r"step 'cancel' is not allowed in state 'failed'"):
        manager.cancel("bad", "alice")


def test_control_stops_a_job_only_once_cancelled() -> None:
    control = Control()
    assert not control.cancelled
    control.check()
    started = time.monotonic()
    control.wait(0.02)  # sleeps, then returns
    assert time.monotonic() - started >= 0.02
    control.cancel()
    assert control.cancelled
    with pytest.raises(JobCancelledError, match=r"the job was cancelled"):
        control.check()
    started = time.monotonic()
    with pytest.raises(JobCancelledError, match=r"the job was cancelled"):
        control.wait(WAIT_S)
    assert time.monotonic() - started < 1.0  # at once, not after the wait


# -- restarts ----------------------------------------------------------------------------------
def test_records_and_results_survive_a_new_root_on_the_same_store(root: Root) -> None:
    go = root.gate()

    def run(job: Job) -> m.JobResult:
        if job.info.job_id == "s-fail":
            raise RuntimeError("node-2 is gone")
        if job.info.job_id == "t-done":
            assert go.wait(WAIT_S)
        return result_for(job)

    first = root.open(run)
    requests = [train("t-done"), stats("s-done"), stats("s-fail"), train("t-cancel")]
    jobs = [first.submit(r, "alice") for r in requests]
    first.cancel("t-cancel", "alice")  # still queued behind t-done
    go.set()
    for job in jobs:
        wait_ended(job)
    final = {job.info.job_id: job.info for job in jobs}
    assert [i.state for i in final.values()] == ["done", "done", "failed", "cancelled"]

    calls: list[str] = []

    def run_again(job: Job) -> m.JobResult:
        calls.append(job.info.job_id)
        return result_for(job)

    second = root.restart(run_again)
    sentinel = second.submit(stats("sentinel"), "alice")
    wait_ended(sentinel)
    assert calls == ["sentinel"]  # nothing that ended ran again
    assert second.list("alice") == [*final.values(), sentinel.info]
    for request in requests:
        job = second.get(request.job_id, "alice")
        assert job is not jobs[requests.index(request)]  # read back, not shared memory
        assert job.info == final[request.job_id] and job.ended
        assert job.request == request
        assert list(job.follow(timeout_s=WAIT_S)) == []
    assert second.get("s-fail", "alice").info.error == "node-2 is gone"
    assert second.get("t-cancel", "alice").info.error == "the job was cancelled"
    assert second.get("t-cancel", "alice").info.started == 0.0  # it never ran
    assert second.get("t-done", "alice").info.started > 0.0
    assert second.result(second.get("t-done", "alice")) == m.TrainResult("t-done", (3,), None)
    assert second.result(second.get("s-done", "alice")) == m.StatsResult(b"s-done")
    assert second.result(second.get("s-fail", "alice")) is None
    assert second.result(second.get("t-cancel", "alice")) is None
    with pytest.raises(JobStateError, match=r"job 's-done': step 'submit' .* state 'done'"):
        second.submit(stats("s-done"), "alice")  # an id stays used across restarts
    with pytest.raises(PolicyError, match=r"belongs to another querier"):
        second.get("t-done", "bob")


CHILD = r"""
import sys, threading, time
from pathlib import Path
from phe_fl.federation import messages as m
from phe_fl.federation.jobs import JobManager
from phe_fl.federation.store import NodeStore, StoreIdentity
from phe_fl.ml import TrainingJob

state, running, queued, node, params, federation = sys.argv[1:7]
JOBS = {"train": m.TrainJob(TrainingJob(4, iterations=5)), "stats": m.StatsJob(b"querier key", 4)}
submitted = threading.Event()


def run(job):
    submitted.wait(30)
    manager.note_progress(job, iterations_done=2)  # a checkpoint, as a training records it
    print("running", job.info.job_id, flush=True)
    time.sleep(600)  # killed here, in the middle of the job


store = NodeStore(Path(state), StoreIdentity(node, params, federation))
manager = JobManager(store, run)
manager.start()
manager.submit(m.JobRequest("job-1", params, JOBS[running]), "alice")
manager.submit(m.JobRequest("job-2", params, JOBS[queued]), "alice")
submitted.set()
time.sleep(600)
"""


def kill_a_root_mid_job(state: Path, running: str, queued: str) -> None:
    """A root process runs job-1 (kind ``running``) with job-2 queued, and is SIGKILLed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    args = [state, running, queued, IDENT.node_id, IDENT.params, IDENT.federation]
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    assert child.stdout is not None and child.stderr is not None
    watchdog = threading.Timer(60.0, child.kill)  # a child that never gets there
    watchdog.start()
    try:
        line = child.stdout.readline()
        assert line == b"running job-1\n", child.stderr.read().decode()
        os.kill(child.pid, signal.SIGKILL)
        child.communicate(timeout=30)
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == -signal.SIGKILL


def test_only_the_jobs_that_checkpoint_are_resumable() -> None:
    assert frozenset({"train", "fedavg"}) == RESUMABLE_KINDS


@pytest.mark.parametrize(("running", "queued"), [("train", "stats"), ("stats", "train")])
def test_a_root_killed_mid_job_resumes_a_training_and_fails_the_rest(
    root: Root, state: Path, running: str, queued: str, caplog: pytest.LogCaptureFixture
) -> None:
    kill_a_root_mid_job(state, running, queued)
    calls: list[tuple[str, str, int, int]] = []

    def run(job: Job) -> m.JobResult:
        info = job.info
        calls.append((info.job_id, info.state, info.iterations_done, info.resumes))
        return result_for(job)

    with caplog.at_level(logging.INFO, logger="phe_fl.jobs"):
        manager = root.open(run)
        sentinel = manager.submit(stats("sentinel"), "alice")
        wait_ended(sentinel)
    job1, job2 = manager.get("job-1", "alice"), manager.get("job-2", "alice")
    assert job1.ended and job2.ended
    assert job1.info.iterations_done == 2  # the checkpoint on record survived the kill
    restarted = "was interrupted by a restart of the root; submit it again"
    if running == "train":
        # running at the kill: interrupted, then resumed (the runner called again), then done
        assert "job job-1 (train) resumes after the root's restart" in caplog.text
        # resumes = 1: it went running -> interrupted -> running (resume), not a fresh start
        assert calls == [("job-1", "running", 2, 1), ("sentinel", "running", 0, 0)]
        assert job1.info.state == "done" and job1.info.error == ""
        assert job1.info.resumes == 1 and job1.info.started > job1.info.created
        assert manager.result(job1) == m.TrainResult("job-1", (3,), None)
        # queued at the kill, and not resumable: failed, saying why
        assert job2.info.state == "failed"
        assert job2.info.error == f"job job-2 (stats) {restarted}"
    else:
        # running at the kill, and not resumable: failed, saying the root restarted
        assert job1.info.state == "failed"
        assert job1.info.error == f"job job-1 (stats) {restarted}"
        assert isinstance(job1.error, JobStateError) and manager.result(job1) is None
        # queued at the kill, a training: it starts as if nothing happened
        assert calls == [("job-2", "running", 0, 0), ("sentinel", "running", 0, 0)]
        assert job2.info.state == "done" and job2.info.resumes == 0
        assert manager.result(job2) == m.TrainResult("job-2", (3,), None)
    with pytest.raises(JobStateError, match=r"job 'job-1': step 'submit' is not allowed"):
        manager.submit(stats("job-1"), "alice")


# -- bugs found by these tests, fixed --------------------------------------------------------
def test_a_training_running_when_the_root_stops_resumes_on_the_next_root(root: Root) -> None:
    started = threading.Event()

    def run(job: Job) -> m.JobResult:
        started.set()
        job.control.wait(WAIT_S)  # between two iterations, as a training waits
        return result_for(job)

    first = root.open(run)
    first.submit(train("t-1"), "alice")
    assert started.wait(WAIT_S)
    calls: list[str] = []

    def run_again(job: Job) -> m.JobResult:
        calls.append(job.info.job_id)
        return result_for(job)

    second = root.restart(run_again)  # a graceful stop (SIGTERM), then a new root
    wait_ended(second.submit(stats("sentinel"), "alice"))
    assert calls == ["t-1", "sentinel"]
    assert second.get("t-1", "alice").info.state == "done"


def test_a_job_id_the_store_refuses_leaves_no_job_behind(root: Root) -> None:
    manager = root.open(result_for)
    try:
        job = manager.submit(stats("my job"), "alice")  # `phe-fl query --job-id "my job"`
    except PheFlError:  # refused (today: StateError, bad blob name 'request-my job')
        assert manager.list("alice") == [], "a refused job id is left queued forever"
    else:  # or accepted: then it runs
        wait_ended(job)
        assert job.info.state == "done"
