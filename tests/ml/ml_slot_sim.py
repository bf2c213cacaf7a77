"""A slot-level stand-in for the CKKS evaluator (test helper).

:class:`SlotContext` performs the same slot operations as :class:`phe_fl.mhe.Context`
(rotation is a left ``np.roll``) on plain numpy vectors and tracks levels, so the packing
and level bookkeeping of the training code can be checked exactly and quickly for many
shapes; the encrypted tests then check CKKS itself on a few.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from phe_fl.errors import LevelError
from phe_fl.mhe import INSECURE_TEST, ParameterSet
from phe_fl.ml.federation import MapRequest, MapStage, MapWorker, ModelDecryptionRefused
from phe_fl.ml.staging import layer_sums


class SlotCiphertext:
    def __init__(self, ctx: SlotContext, v: np.ndarray, level: int, scale_degree: int = 1):
        self.context = ctx
        self.v = np.asarray(v, dtype=np.float64)
        self.level = level
        self.scale_degree = scale_degree

    @property
    def levels_left(self) -> int:
        return self.context.params.mult_depth - self.level


class SlotContext:
    def __init__(self, params: ParameterSet = INSECURE_TEST) -> None:
        self.params = params
        self.rotations: list[int] = []
        self.dropped: list[int] = []

    @property
    def slots(self) -> int:
        return self.params.slots

    def _vec(self, values: Any) -> np.ndarray:
        if np.isscalar(values):
            return np.full(self.slots, float(values))
        arr = np.zeros(self.slots)
        a = np.asarray(values, dtype=np.float64).ravel()
        arr[: a.size] = a
        return arr

    def own(self, ct: SlotCiphertext) -> SlotCiphertext:
        return ct

    def encrypt(self, values: Any) -> SlotCiphertext:
        return SlotCiphertext(self, self._vec(values), 0)

    def _mul_level(self, *cts: SlotCiphertext) -> int:
        for ct in cts:
            if ct.levels_left < 1:
                raise LevelError("no level left")
        return max(ct.level for ct in cts)

    def add(self, a: SlotCiphertext, b: SlotCiphertext) -> SlotCiphertext:
        return SlotCiphertext(self, a.v + b.v, max(a.level, b.level), a.scale_degree)

    def sum(self, cts: Sequence[SlotCiphertext]) -> SlotCiphertext:
        total = cts[0]
        for ct in cts[1:]:
            total = self.add(total, ct)
        return total

    def sub(self, a: SlotCiphertext, b: SlotCiphertext) -> SlotCiphertext:
        return SlotCiphertext(self, a.v - b.v, max(a.level, b.level), a.scale_degree)

    def negate(self, a: SlotCiphertext) -> SlotCiphertext:
        return SlotCiphertext(self, -a.v, a.level, a.scale_degree)

    def add_plain(self, a: SlotCiphertext, values: Any) -> SlotCiphertext:
        return SlotCiphertext(self, a.v + self._vec(values), a.level, a.scale_degree)

    def mul_plain(self, a: SlotCiphertext, values: Any) -> SlotCiphertext:
        return SlotCiphertext(self, a.v * self._vec(values), self._mul_level(a), 2)

    def mul(self, a: SlotCiphertext, b: SlotCiphertext) -> SlotCiphertext:
        return SlotCiphertext(self, a.v * b.v, self._mul_level(a, b), 2)

    def rescale(self, a: SlotCiphertext) -> SlotCiphertext:
        assert a.scale_degree == 2
        return SlotCiphertext(self, a.v, a.level + 1, 1)

    def rotate(self, a: SlotCiphertext, steps: int) -> SlotCiphertext:
        self.rotations.append(int(steps))
        return SlotCiphertext(self, np.roll(a.v, -int(steps)), a.level, a.scale_degree)

    def drop_levels(self, a: SlotCiphertext, levels_left: int) -> SlotCiphertext:
        if not 0 <= levels_left <= a.levels_left or a.scale_degree != 1:
            raise LevelError(f"cannot keep {levels_left} levels of {a.levels_left}")
        self.dropped.append(a.levels_left - levels_left)
        return SlotCiphertext(self, a.v, self.params.mult_depth - levels_left, 1)


class SlotFederation:
    """A :class:`phe_fl.ml.Federation` on :class:`SlotContext`: refresh resets the level."""

    def __init__(self, workers: Sequence[MapWorker], params: ParameterSet = INSECURE_TEST):
        self.ctx = SlotContext(params)
        self.workers = list(workers)
        self.refreshes = 0
        self.maps: dict[str, Any] = {}
        self.map_stages = 0

    @property
    def n_parties(self) -> int:
        return len(self.workers)

    def encrypt(self, values: Any) -> SlotCiphertext:
        return self.ctx.encrypt(values)

    def global_batch(self, iteration: int) -> int:
        return sum(w.batch_size_at(iteration) for w in self.workers)

    def map_stage(
        self, request: MapRequest, stage: int, refreshed: Mapping[str, Sequence[Any]]
    ) -> MapStage:
        if stage == 0:
            self.maps = {str(w.index): w.start_map(request) for w in self.workers}  # type: ignore[union-attr]
            self.map_stages = 0
        else:
            for party, steps in self.maps.items():
                steps.advance(list(refreshed.get(party, ())))
            self.map_stages += 1
        pending = {p: tuple(s.pending) for p, s in self.maps.items() if not s.finished}
        done = [s.results() for p, s in self.maps.items() if s.finished]
        self.maps = {p: s for p, s in self.maps.items() if not s.finished}
        if not done:
            return MapStage(pending)
        parts = [chunk for d in done for chunk in d]
        return MapStage(pending, layer_sums(self.ctx, parts), len(done))  # type: ignore[arg-type]

    def refresh_many(self, cts: Sequence[Any]) -> list[Any]:
        return [self.refresh(ct) for ct in cts]

    def refresh(self, ct: SlotCiphertext) -> SlotCiphertext:
        assert ct.levels_left >= self.ctx.params.refresh_min_levels, "refreshed too late"
        self.refreshes += 1
        return SlotCiphertext(self.ctx, ct.v, 0)

    def decrypt_if_agreed(self, ct: SlotCiphertext, *, length: int) -> np.ndarray:
        if not all(w.allows_model_decryption for w in self.workers):
            raise ModelDecryptionRefused("not agreed")
        return ct.v[:length].copy()
