"""Jobs, not calls: the root's registry of querier jobs.

A submitted job gets a record at once (persisted in the root's state store) and runs on
the root's one worker thread, in submission order: jobs that touch the tree or the keys
never interleave. The querier may follow it, detach and re-attach (``watch``), list its
jobs or cancel one; its own deadline governs only its own waiting. Each job's progress
events are kept in memory for followers; its record and result (encrypted for the
querier, or public) are in the store, so they outlive a root restart. A job that was
running when the root stopped is ``interrupted``: a training resumes from its last
checkpoint, anything else fails with a message saying so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

from phe_fl.errors import JobCancelledError, JobStateError, PolicyError, ProtocolError
from phe_fl.federation import messages as m
from phe_fl.federation.observability import log_context
from phe_fl.federation.serde import (
    JOB_NAMES,
    job_request_bytes,
    job_result_bytes,
    read_job_reply,
    read_job_request,
)
from phe_fl.federation.state import JOB, Tracker
from phe_fl.federation.store import NodeStore

__all__ = ["JobManager", "Job", "Control", "RESUMABLE_KINDS"]

log = logging.getLogger("phe_fl.jobs")

RESUMABLE_KINDS = frozenset({"train", "fedavg"})
"""Kinds a root restart resumes (they checkpoint); the others fail and are submitted again."""

Emit = Callable[[m.ProgressEvent], None]


class RootStopping(Exception):
    """The root process is stopping: the job ends here, interrupted, not cancelled (a
    training resumes when the root starts again)."""


class Control:
    """What a running job checks between its steps: a querier's cancel, or the root
    stopping."""

    def __init__(self) -> None:
        self._cancel = threading.Event()
        self._stopping = threading.Event()
        self._wake = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()
        self._wake.set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    @property
    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def check(self) -> None:
        """Stop here if the job was cancelled or the root is stopping."""
        if self._cancel.is_set():
            raise JobCancelledError("the job was cancelled")
        if self._stopping.is_set():
            raise RootStopping()

    def wait(self, seconds: float) -> None:
        """Sleep, but wake up (and stop) at once on cancel or stop."""
        self._wake.wait(seconds)
        self.check()


class Job:
    """One job: its request, record, events so far and outcome."""

    def __init__(self, request: m.JobRequest, info: m.JobInfo) -> None:
        self.request: m.JobRequest | None = request
        """None once the job ended (it is in the store)."""
        self.info = info
        self.tracker = Tracker(JOB, repr(info.job_id))
        self.control = Control()
        self.events: list[m.ProgressEvent] = []
        self.result: m.JobResult | None = None
        self.error: BaseException | None = None
        self._changed = threading.Condition()

    @property
    def ended(self) -> bool:
        return self.info.state in ("done", "failed", "cancelled")

    def emit(self, event: m.ProgressEvent) -> None:
        with self._changed:
            self.events.append(event)
            self._changed.notify_all()

    def follow(self, timeout_s: float | None = None) -> Iterator[m.ProgressEvent]:
        """Its events so far, then live ones, until it ends (or ``timeout_s`` passes)."""
        seen = 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            with self._changed:
                while seen == len(self.events) and not self.ended:
                    left = None if deadline is None else deadline - time.monotonic()
                    if left is not None and left <= 0:
                        return
                    self._changed.wait(left if left is not None else 1.0)
                new, ended = self.events[seen:], self.ended
            seen += len(new)
            yield from new
            if ended and seen == len(self.events):
                return

    def _update(self, **changes: Any) -> None:
        with self._changed:
            self.info = replace(self.info, updated=time.time(), **changes)
            self._changed.notify_all()


Runner = Callable[[Job], m.JobResult]


class JobManager:
    """The root's jobs: records in ``store``, executed one at a time by ``run``."""

    def __init__(self, store: NodeStore, run: Runner) -> None:
        self.store = store
        self.run = run
        self._jobs: dict[str, Job] = {}
        self._queue: queue.Queue[Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._current: Job | None = None
        self._stopped = threading.Event()
        self._worker = threading.Thread(target=self._work, name="jobs", daemon=True)

    def start(self) -> None:
        self._restore()
        self._worker.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop after the current job's next step; it stays on record as interrupted."""
        self._stopped.set()
        with self._lock:
            current = self._current
        if current is not None:
            current.control.stop()
        self._queue.put(None)
        if self._worker.is_alive():
            self._worker.join(timeout_s)

    # -- records ----------------------------------------------------------------------------
    def _save(self, job: Job) -> None:
        self.store.put("jobs", job.info.job_id, _info_to_dict(job.info))

    def _restore(self) -> None:
        """Jobs the last root process left unfinished: trainings resume (from their
        checkpoint, once every node is back), the rest fail."""
        for job_id, record in self.store.items("jobs"):
            info = _info_from_dict(record)
            data = self.store.get_blob(f"request-{job_id}")
            if data is None:
                continue
            job = Job(read_job_request(data), info)
            job.tracker = Tracker(JOB, repr(job_id), state=info.state)
            self._jobs[job_id] = job
            if job.ended:
                continue
            if info.kind in RESUMABLE_KINDS:
                if info.state == "running":
                    job.tracker.advance("interrupt")
                job._update(state=job.tracker.state)
                self._save(job)
                log.info("job %s (%s) resumes after the root's restart", job_id, info.kind)
                self._queue.put(job)
            else:
                self._finish(
                    job,
                    error=JobStateError(
                        f"job {job_id} ({info.kind}) was interrupted by a restart of the root; "
                        "submit it again"
                    ),
                )

    # -- the querier's verbs ----------------------------------------------------------------
    def submit(self, request: m.JobRequest, querier: str) -> Job:
        """Register and queue ``request``; refused if its id was used before."""
        kind = JOB_NAMES[type(request.job)]
        now = time.time()
        with self._lock:
            existing = self._jobs.get(request.job_id)
            if existing is not None:
                existing.tracker.check("submit")  # refused: names the job's state
            info = m.JobInfo(request.job_id, kind, querier, "unknown", now, now)
            job = Job(request, info)
            job.tracker.advance("submit")
            job._update(state=job.tracker.state)
            # on record before it is known: a request the store refuses leaves no job
            self.store.put_blob(f"request-{request.job_id}", job_request_bytes(request))
            self._save(job)
            self._jobs[request.job_id] = job
        self._queue.put(job)
        return job

    def get(self, job_id: str, querier: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobStateError(f"no job {job_id!r} at the root")
        if job.info.querier != querier:
            raise PolicyError(f"job {job_id!r} belongs to another querier")
        return job

    def states(self) -> list[str]:
        """Every job's state (for the ``phe_fl_jobs`` metric)."""
        return [j.info.state for j in list(self._jobs.values())]

    def list(self, querier: str) -> list[m.JobInfo]:
        return [j.info for j in self._jobs.values() if j.info.querier == querier]

    def cancel(self, job_id: str, querier: str) -> m.JobInfo:
        job = self.get(job_id, querier)
        with self._lock:  # against the worker picking it up at this moment
            job.tracker.check("cancel")  # refused once it ended
            job.control.cancel()
            if self._current is not job:  # not running: it ends here, never runs
                self._finish(job, error=JobCancelledError("the job was cancelled"))
        return job.info

    def result(self, job: Job) -> m.JobResult | None:
        """The job's result, from memory or (after a restart) from the store."""
        if job.result is not None:
            return job.result
        data = self.store.get_blob(f"result-{job.info.job_id}")
        if data is None:
            return None
        reply = read_job_reply(data)
        if isinstance(reply, (m.ProgressEvent, m.Accepted)):
            raise ProtocolError(f"stored result of job {job.info.job_id} is not a result")
        return reply

    # -- execution ----------------------------------------------------------------------------
    def _work(self) -> None:
        while not self._stopped.is_set():
            job = self._queue.get()
            if job is None:
                return
            with self._lock:
                if job.ended:
                    continue  # cancelled while queued
                self._current = job
                resuming = job.tracker.state == "interrupted"
                job.tracker.advance("resume" if resuming else "start")
                resumes = job.info.resumes + int(resuming)
                job._update(state=job.tracker.state, started=time.time(), resumes=resumes)
                self._save(job)
            try:
                with log_context(job=job.info.job_id, peer=job.info.querier):
                    result = self.run(job)
            except RootStopping:
                with self._lock:
                    job.tracker.advance("interrupt")
                    job._update(state=job.tracker.state)
                    self._save(job)
                return
            except BaseException as exc:  # noqa: BLE001 - recorded; followers see it
                with self._lock:
                    self._finish(job, error=exc)
            else:
                with self._lock:
                    self._finish(job, result=result)
            finally:
                with self._lock:
                    self._current = None

    def _finish(
        self, job: Job, *, result: m.JobResult | None = None, error: BaseException | None = None
    ) -> None:
        if error is None:
            step, message = "succeed", ""
        elif isinstance(error, JobCancelledError):
            step, message = "cancel", str(error)
        else:
            step, message = "fail", str(error) if isinstance(error, Exception) else "stopped"
        job.tracker.advance(step)
        if error is not None:  # its traceback would keep the failed job's frames alive
            error.__traceback__, error.__context__, error.__cause__ = None, None, None
        job.error = error
        if result is not None:  # the blob first: a record never names a missing result
            self.store.put_blob(f"result-{job.info.job_id}", job_result_bytes(result))
        # an ended job keeps its record and events in memory, not its request or result
        # (a predict job's are many ciphertexts): followers read the result from the store
        job.request, job.result = None, None
        job._update(state=job.tracker.state, error=message)
        self._save(job)
        log.info("job %s (%s): %s %s", job.info.job_id, job.info.kind, job.info.state, message)

    def note_progress(self, job: Job, **changes: Any) -> None:
        """Record training progress (iterations checkpointed, resumes) in the job's record."""
        job._update(**changes)
        self._save(job)


def _info_to_dict(info: m.JobInfo) -> dict[str, Any]:
    return {f: getattr(info, f) for f in m.JobInfo.__dataclass_fields__}


def _info_from_dict(record: dict[str, Any]) -> m.JobInfo:
    return m.JobInfo(**{f: record[f] for f in m.JobInfo.__dataclass_fields__ if f in record})
