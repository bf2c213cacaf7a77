"""Computations that pause wherever a ciphertext needs the federation's collective refresh.

A network's MAP is deeper than the levels between two refreshes, and only the root can
start a collective protocol over the tree: a party cannot call the federation in the
middle of its MAP. So MAP is written as a generator (:data:`Refreshing`) that *yields*
each ciphertext about to run out of levels and is sent it back refreshed. Whoever drives
it decides how the refresh happens: :func:`run_alone` calls a refresh function at once
(the root's own work); :class:`Lockstep` advances many such computations (a party's
chunks) together so that everything they need at one point goes to the federation as
one batch, and a party's MAP becomes a sequence of stages the root drives over the tree,
one batched refresh round between two stages (POSEIDON's batching, without a party ever
calling its parent).

The generators are deterministic: the same inputs and the same refreshed ciphertexts give
the same outputs, so a stage asked again is answered again, never with other values.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Generic, TypeVar

from phe_fl.errors import LevelError, ProtocolError
from phe_fl.mhe.context import Ciphertext, Context

__all__ = [
    "Refreshing",
    "Levels",
    "computed",
    "run_alone",
    "Lockstep",
    "RefreshMany",
    "layer_sums",
    "with_levels",
]

T = TypeVar("T")

Refreshing = Generator[Ciphertext, Ciphertext, T]
"""A computation that yields a ciphertext to refresh and is sent it back refreshed."""

RefreshMany = Callable[[Sequence[Ciphertext]], list[Ciphertext]]
"""The federation's collective refresh of a batch (one round over the tree)."""


class Levels:
    """Where a computation pauses: before an operation that would leave a ciphertext
    with fewer levels than a refresh needs."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def ready(self, ct: Ciphertext, need: int) -> Refreshing[Ciphertext]:
        """``ct`` with at least ``need`` levels to spend above the refresh minimum
        (refreshed by the federation first when it has fewer)."""
        keep = self.ctx.params.refresh_min_levels
        if ct.levels_left - need >= keep:
            return ct
        out = yield ct
        if out.levels_left - need < keep:
            raise LevelError(
                f"an operation needs {need} levels, more than a refreshed ciphertext has "
                f"({out.levels_left} minus {keep} kept for the next refresh)"
            )
        return out


def computed(value: T) -> Refreshing[T]:
    """A computation that needs no refresh (a GLM's MAP: it fits the levels it is sent),
    so that it runs under the same driver as one that does."""
    if False:  # a generator that returns at once
        yield
    return value


def run_alone(work: Refreshing[T], refresh: Callable[[Ciphertext], Ciphertext]) -> T:
    """Run ``work`` to its end, refreshing each ciphertext it asks for with ``refresh``."""
    try:
        ct = next(work)
        while True:
            ct = work.send(refresh(ct))
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Lockstep(Generic[T]):
    """Several refreshing computations advanced together, one stage at a time: each
    stage ends when every unfinished computation has asked for its next refresh; what
    they asked for (:attr:`pending`, in computation order) is refreshed as one batch and
    handed back to :meth:`advance`."""

    def __init__(self, works: Sequence[Refreshing[T]]) -> None:
        self._works = list(works)
        self._results: list[T | None] = [None] * len(self._works)
        self._waiting: list[int] = []  # the computations whose refresh is pending
        self.pending: list[Ciphertext] = []
        self.stage = -1
        """Stages advanced so far minus one (-1: not started)."""

    @property
    def finished(self) -> bool:
        return self.stage >= 0 and not self._waiting

    def advance(self, refreshed: Sequence[Ciphertext] = ()) -> list[Ciphertext]:
        """Start (the first call, with nothing) or resume with the refreshed batch;
        returns the next batch to refresh ([] once every computation finished)."""
        if self.stage < 0:
            if refreshed:
                raise ProtocolError("a MAP that has not started was sent refreshed ciphertexts")
            order = list(range(len(self._works)))
            sends: list[Ciphertext | None] = [None] * len(self._works)
        else:
            if self.finished:
                raise ProtocolError("this MAP has finished: nothing more to resume")
            if len(refreshed) != len(self._waiting):
                raise ProtocolError(
                    f"stage {self.stage + 1} of this MAP needs {len(self._waiting)} refreshed "
                    f"ciphertexts, got {len(refreshed)}"
                )
            order, sends = self._waiting, list(refreshed)
        waiting, pending = [], []
        for i, value in zip(order, sends, strict=True):
            try:
                ct = next(self._works[i]) if value is None else self._works[i].send(value)
            except StopIteration as stop:
                self._results[i] = stop.value
                continue
            waiting.append(i)
            pending.append(ct)
        self._waiting, self.pending = waiting, pending
        self.stage += 1
        return list(pending)

    def results(self) -> list[T]:
        if not self.finished:
            raise ProtocolError("this MAP still waits for refreshed ciphertexts")
        return [r for r in self._results if r is not None]

    def take_results(self) -> list[T]:
        """:meth:`results`, handed over once: the lockstep forgets them (a network's
        per-chunk gradients are a hundred MB or more at 2^15, and a node keeps its
        finished MAP until the next iteration's starts)."""
        results = self.results()
        self._results = [None] * len(self._results)
        return results


def layer_sums(ctx: Context, parts: Sequence[Sequence[Ciphertext]]) -> tuple[Ciphertext, ...]:
    """Layer by layer, the sum of several per-layer gradient contributions (a party's
    chunks, the parties that finished a MAP stage)."""
    if not parts:
        raise ProtocolError("no gradient to add")
    return tuple(ctx.sum(list(layer)) for layer in zip(*parts, strict=True))


def with_levels(
    cts: Sequence[Ciphertext], levels: int | Sequence[int], refresh_many: RefreshMany
) -> tuple[list[Ciphertext], int]:
    """Every ciphertext with fewer than ``levels`` levels left (one floor for all, or one
    each) refreshed, in one round: a weight refreshed once saves every chunk that uses
    it a deeper chain and the refreshes it would ask for. Returns the ciphertexts and how
    many were refreshed."""
    floors = [levels] * len(cts) if isinstance(levels, int) else list(levels)
    if len(floors) != len(cts):
        raise ProtocolError(f"{len(floors)} level floors for {len(cts)} ciphertexts")
    low = [k for k, (ct, need) in enumerate(zip(cts, floors, strict=True)) if ct.levels_left < need]
    out = list(cts)
    if low:
        for k, ct in zip(low, refresh_many([cts[k] for k in low]), strict=True):
            out[k] = ct
    return out, len(low)
