"""The federation's state machines, each declared once: named states and the steps that
move between them. A step a machine does not allow in its current state is refused with
:class:`~phe_fl.errors.JobStateError` (FAILED_PRECONDITION on the wire), whose message
names the machine, the state and the step, and lists what the state allows.

Which machine a step belongs to is part of the declaration too: a node checks every tree
step against its key-generation machine (and training steps also against the job's), the
root checks every job against its federation-keys machine and the job registry's (each
job id runs once).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from phe_fl.errors import JobStateError

__all__ = ["Machine", "Tracker", "KEYGEN", "FEDERATION_KEYS", "TRAINING", "FEDAVG", "JOB"]


@dataclass(frozen=True)
class Machine:
    """A state machine: ``transitions[(state, step)]`` is the state after ``step``."""

    name: str
    initial: str
    transitions: Mapping[tuple[str, str], str]

    @property
    def states(self) -> frozenset[str]:
        return frozenset(
            {self.initial} | {s for s, _ in self.transitions} | set(self.transitions.values())
        )

    @property
    def steps(self) -> frozenset[str]:
        return frozenset(step for _, step in self.transitions)

    def allowed(self, state: str) -> list[str]:
        return sorted(step for s, step in self.transitions if s == state)

    def next(self, state: str, step: str, *, subject: str = "") -> str:
        """The state after ``step``, or JobStateError if ``state`` does not allow it."""
        try:
            return self.transitions[(state, step)]
        except KeyError:
            owner = f"{self.name} {subject}".strip()
            raise JobStateError(
                f"{owner}: step {step!r} is not allowed in state {state!r} "
                f"(allowed there: {', '.join(self.allowed(state)) or 'nothing'})"
            ) from None


def _loops(state: str, steps: Iterable[str]) -> dict[tuple[str, str], str]:
    return {(state, step): state for step in steps}


_READY_STEPS = (
    "rotation_keys",
    "install_rotation_keys",
    "statistics",
    "decrypt_statistics",
    "decrypt_model",
    "key_switch",
    "refresh",
    "prepare_training",
    "gradient",
    "margin_moment",
    "prepare_network",
    "network_map",
    "fedavg_prepare",
    "fedavg_global",
    "fedavg_train",
    "fedavg_update",
    "fedavg_decrypt",
)
_STATES = ("new", "public_key", "joint_key", "relin_round_one", "relin_round_two", "ready")

KEYGEN = Machine(
    "key generation",
    "new",
    {
        ("new", "public_key"): "public_key",
        ("public_key", "install_joint_key"): "joint_key",
        ("joint_key", "relin_round_one"): "relin_round_one",
        ("relin_round_one", "relin_round_two"): "relin_round_two",
        ("relin_round_two", "install_relin_key"): "ready",
        **_loops("ready", _READY_STEPS),
        **{(s, "ping"): s for s in _STATES},
    },
)
"""Every node's view of collective key generation; each tree step is checked against it."""

_KEYED_JOBS = (
    "stats",
    "train",
    "train_network",
    "model_weights",
    "model_info",
    "predict",
    "joint_key",
    "fedavg",
)

FEDERATION_KEYS = Machine(
    "federation keys",
    "none",
    {
        ("none", "setup"): "generating",
        ("interrupted", "setup"): "generating",  # resumes the interrupted key generation
        ("generating", "complete"): "ready",
        ("generating", "interrupt"): "interrupted",
        **_loops("ready", _KEYED_JOBS),
        **{(s, "status"): s for s in ("none", "generating", "interrupted", "ready")},
    },
)
"""The root's view of key generation, checked for every querier job by its kind: one key
generation at a time, an interrupted one resumes, jobs that need keys wait for them."""

TRAINING = Machine(
    "training job",
    "unprepared",
    {
        ("unprepared", "prepare_training"): "prepared",
        ("unprepared", "prepare_network"): "prepared",
        ("prepared", "gradient"): "prepared",
        ("prepared", "margin_moment"): "prepared",
        ("prepared", "network_map"): "prepared",
    },
)
"""A node's side of one training job (a GLM or a network): MAP (and the margin check,
which runs MAP's batch) only after PREPARE validated its shard."""

FEDAVG = Machine(
    "FedAvg job",
    "unprepared",
    {
        ("unprepared", "fedavg_prepare"): "prepared",
        **_loops(
            "prepared",
            ("fedavg_prepare", "fedavg_global", "fedavg_train", "fedavg_update", "fedavg_decrypt"),
        ),
    },
)
"""A node's side of one FedAvg job: nothing before PREPARE loaded the job's app (which
rounds and chunks a node decrypts is the member's aggregate guard, not this machine)."""

JOB = Machine(
    "job",
    "unknown",
    {
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
    },
)
"""A querier's job at the root: each job id runs once; a root restart interrupts it."""


class Tracker:
    """The current state of one machine, thread-safe. ``check`` refuses a step the state
    does not allow; ``advance`` moves (after the step succeeded)."""

    def __init__(self, machine: Machine, subject: str = "", *, state: str | None = None) -> None:
        self.machine = machine
        self.subject = subject
        if state is not None and state not in machine.states:
            raise JobStateError(f"{machine.name} {subject}: no state {state!r}")
        self._state = machine.initial if state is None else state
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        return self._state

    def check(self, step: str) -> str:
        with self._lock:
            return self.machine.next(self._state, step, subject=self.subject)

    def advance(self, step: str) -> str:
        with self._lock:
            self._state = self.machine.next(self._state, step, subject=self.subject)
            return self._state
