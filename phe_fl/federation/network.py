"""This node's side of network training over the tree: its MAP, paused between stages.

A network's MAP runs in stages the root drives (:mod:`phe_fl.ml.staging`): stage 0
carries the weights, each party runs until its intermediates need a collective refresh
and answers with them; stage s hands them back refreshed. Between two stages the node
keeps its paused MAP in memory, per job. A stage asked again (a parent's retry) gets the
answer already given; a later stage after this node restarted finds no MAP and fails with
:class:`~phe_fl.errors.StageLostError`, on which the root starts the iteration again (MAP
draws nothing at random: the answers of the new run are the same computation).
"""

from __future__ import annotations

import dataclasses
import threading
from dataclasses import dataclass, field

from phe_fl.errors import ProtocolError, StageLostError
from phe_fl.federation import messages as m
from phe_fl.mhe.context import Ciphertext, Context
from phe_fl.ml.federation import MapRequest
from phe_fl.ml.mlp import MLPParty
from phe_fl.ml.staging import Lockstep, layer_sums

__all__ = ["StageAnswer", "NetworkMaps"]

MAX_PENDING = 4096
"""Refreshes one node may ask for at one stage (a bound on what a crafted answer can
make the root do; a 784-64-64-10 network's chunks ask for a few dozen)."""


@dataclass
class StageAnswer:
    """A subtree's answer to one MAP stage, before it goes on the wire."""

    gradients: tuple[Ciphertext, ...] = ()
    finished: int = 0
    pending: list[m.NodeCiphertexts] = field(default_factory=list)

    def plus(self, ctx: Context, other: StageAnswer) -> StageAnswer:
        """COMBINE: gradients added layer by layer, pending lists joined (each node once)."""
        mine = {p.node_id for p in self.pending}
        twice = sorted(mine & {p.node_id for p in other.pending})
        if twice:
            raise ProtocolError(f"node(s) {', '.join(twice)} answered the same MAP stage twice")
        parts = [g for g in (self.gradients, other.gradients) if g]
        return StageAnswer(
            layer_sums(ctx, parts) if len(parts) > 1 else (parts[0] if parts else ()),
            self.finished + other.finished,
            self.pending + other.pending,
        )

    def response(self) -> m.NetworkMapResponse:
        return m.NetworkMapResponse(
            tuple(g.to_bytes() for g in self.gradients), self.finished, tuple(self.pending)
        )

    @classmethod
    def read(cls, ctx: Context, res: m.NetworkMapResponse, n_cts: int) -> StageAnswer:
        """A child's answer, read strictly: ciphertexts parsed, counts bounded; ``n_cts``
        is the network's weight ciphertexts (one gradient each)."""
        if res.gradients and len(res.gradients) != n_cts:
            raise ProtocolError(f"{len(res.gradients)} gradients for {n_cts} weight ciphertexts")
        if bool(res.gradients) != (res.finished > 0):
            raise ProtocolError(
                f"{res.finished} finished parties with {len(res.gradients)} gradients"
            )
        for p in res.pending:
            if not 1 <= len(p.ciphertexts) <= MAX_PENDING:
                raise ProtocolError(
                    f"node {p.node_id!r} asks for {len(p.ciphertexts)} refreshes at one stage"
                )
        grads = tuple(ctx.ciphertext_from_bytes(g) for g in res.gradients)
        return cls(grads, int(res.finished), list(res.pending))


@dataclass
class _Map:
    iteration: int
    stage: int
    steps: Lockstep[list[Ciphertext]]
    answer: StageAnswer
    reported: bool = False


class NetworkMaps:
    """This node's paused MAP of each network job (one iteration at a time), and which of
    its children's subtrees asked for which refreshes (so that each child is sent only
    its subtree's refreshed ciphertexts, not every party's)."""

    def __init__(self, node_id: str, ctx: Context) -> None:
        self.node_id = node_id
        self.ctx = ctx
        self._maps: dict[str, _Map] = {}
        self._below: dict[tuple[str, int, int], dict[str, set[str]]] = {}
        """(job, iteration, stage) -> child -> the nodes below it that answered pending."""
        self._lock = threading.Lock()

    def heard(self, request: m.TreeRequest, child: str, res: m.NetworkMapResponse) -> None:
        """A child's answer to a stage: the nodes below it that wait for refreshes."""
        step = request.step
        assert isinstance(step, m.NetworkMapRequest)
        key = (request.job_id, step.iteration, step.stage)
        with self._lock:
            if step.stage == 0:  # a new MAP: forget the job's earlier ones
                for old in [k for k in self._below if k[0] == request.job_id and k != key]:
                    del self._below[old]
            self._below.setdefault(key, {})[child] = {p.node_id for p in res.pending}

    def for_child(self, request: m.TreeRequest, child: str) -> m.TreeRequest:
        """``request`` as ``child`` gets it: at stage s > 0, only the refreshed ciphertexts
        of the nodes below it (as their answers to stage s - 1 said); everything when
        this node did not hear that stage (it restarted: a missing one is refused below,
        by name, and the root starts the iteration again)."""
        step = request.step
        assert isinstance(step, m.NetworkMapRequest)
        if step.stage == 0:
            return request
        with self._lock:
            routes = self._below.get((request.job_id, step.iteration, step.stage - 1))
        if routes is None:
            return request
        below = routes.get(child, set())
        mine = tuple(r for r in step.refreshed if r.node_id in below)
        return dataclasses.replace(request, step=dataclasses.replace(step, refreshed=mine))

    def stage(self, job_id: str, party: MLPParty, step: m.NetworkMapRequest) -> StageAnswer:
        """This node's answer to one stage of ``job_id``'s MAP (computed under the lock:
        a parent's retry racing the original waits for it and gets the same answer)."""
        with self._lock:
            current = self._maps.get(job_id)
            if current is not None and (current.iteration, current.stage) == (
                step.iteration,
                step.stage,
            ):
                return current.answer  # the parent asks again: the same answer
            if step.stage == 0:
                self._maps.pop(job_id, None)  # the last iteration's, before this one's work
                current = self._start(job_id, party, step)
            else:
                current = self._resume(job_id, current, step)
            current.answer = self._answer(current)
            return current.answer

    def _start(self, job_id: str, party: MLPParty, step: m.NetworkMapRequest) -> _Map:
        if step.refreshed:
            raise ProtocolError("stage 0 of a MAP carries weights, not refreshed ciphertexts")
        weights = tuple(self.ctx.ciphertext_from_bytes(w) for w in step.weights)
        request = MapRequest(step.iteration, weights, step.global_batch)
        current = _Map(step.iteration, 0, party.start_map(request), StageAnswer())
        self._maps[job_id] = current
        return current

    def _resume(self, job_id: str, current: _Map | None, step: m.NetworkMapRequest) -> _Map:
        if step.weights:
            raise ProtocolError(f"stage {step.stage} of a MAP carries weights (only stage 0 does)")
        if current is None or current.iteration != step.iteration:
            raise StageLostError(
                f"node {self.node_id} holds no MAP of iteration {step.iteration} of job "
                f"{job_id!r} (it restarted since stage 0): the iteration starts again"
            )
        if step.stage != current.stage + 1:
            raise ProtocolError(
                f"stage {step.stage} asked of a MAP at stage {current.stage} (out of order)"
            )
        mine = [r for r in step.refreshed if r.node_id == self.node_id]
        if len(mine) > 1:
            raise ProtocolError(f"node {self.node_id}'s refreshed ciphertexts are sent twice")
        if not current.steps.finished:
            sent = mine[0].ciphertexts if mine else ()
            current.steps.advance([self.ctx.ciphertext_from_bytes(c) for c in sent])
        current.stage = step.stage
        return current

    def _answer(self, current: _Map) -> StageAnswer:
        steps = current.steps
        if not steps.finished:
            pending = tuple(ct.to_bytes() for ct in steps.pending)
            return StageAnswer(pending=[m.NodeCiphertexts(self.node_id, pending)])
        if current.reported:
            return StageAnswer()
        current.reported = True
        return StageAnswer(layer_sums(self.ctx, steps.take_results()), 1)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._maps.pop(job_id, None)
