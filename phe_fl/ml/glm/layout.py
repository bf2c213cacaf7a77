"""Slot layout of generalized linear models (shared notes §7, the LR case H' = 1, c = 1).

The slots are cut into blocks of ``D`` (a power of two, ``D >= 2d - 1`` for ``d``
weights); sample ``i`` of a chunk owns block ``i``, so one ciphertext holds
``b' = slots / D`` samples. Within a block:

* the encrypted weights sit at positions ``[D - d, D)``, replicated in every block;
* the forward plaintext holds ``x_i`` at the same positions, zeros elsewhere;
* after ``X * w`` a left rotate-and-add over ``1, 2, ..., D/2`` leaves the margin
  ``z_i`` valid at positions ``[0, D - d]`` (the zero guard slots stop the sum from
  leaking into the next block), so no mask and no level are needed;
* the backward plaintext holds ``x_i`` at ``[0, d)``, inside the valid range, so the
  gradient terms ``e_i * x_ij`` land at ``[0, d)`` and are exactly zero elsewhere;
* the aggregator sums over samples with a rotate-and-add over ``D, 2D, ..., slots/2``
  (an all-reduce: the sum ends up in every block) and a final left rotation by ``d``
  moves it onto the weights' positions.

Padding samples are zero rows, which contribute exactly zero. The rotation indices are
``{1, ..., D/2} | {D, ..., slots/2} | {d}``: only those keys need generating.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.ml.packing import next_pow2

__all__ = ["GLMLayout"]


@dataclass(frozen=True)
class GLMLayout:
    """Where weights, samples and gradients live in the slots of one ciphertext."""

    slots: int
    n_weights: int

    def __post_init__(self) -> None:
        if self.n_weights < 1:
            raise ParameterError("a model needs at least one weight")
        if self.block > self.slots:
            raise ParameterError(
                f"{self.n_weights} weights need blocks of {self.block} slots, more than the "
                f"{self.slots} slots of the ring; use a larger ring (parameter set) or fewer "
                f"features"
            )

    @property
    def block(self) -> int:
        """``D``: slots per sample (power of two holding weights and guard slots)."""
        return next_pow2(2 * self.n_weights - 1)

    @property
    def samples_per_ct(self) -> int:
        """``b'``: samples one ciphertext carries."""
        return self.slots // self.block

    @property
    def weight_offset(self) -> int:
        return self.block - self.n_weights

    def n_chunks(self, n_samples: int) -> int:
        return max(1, math.ceil(n_samples / self.samples_per_ct))

    # -- rotations ------------------------------------------------------------------------
    @property
    def feature_sum_steps(self) -> tuple[int, ...]:
        return tuple(1 << t for t in range(int(math.log2(self.block))))

    @property
    def sample_sum_steps(self) -> tuple[int, ...]:
        return tuple(self.block << t for t in range(int(math.log2(self.samples_per_ct))))

    @property
    def align_step(self) -> int:
        """Left rotation that moves the reduced gradient from ``[0, d)`` onto the weights."""
        return self.n_weights if self.weight_offset else 0

    def rotation_indices(self) -> tuple[int, ...]:
        """Every rotation the training uses; generate exactly these keys."""
        steps = set(self.feature_sum_steps) | set(self.sample_sum_steps)
        if self.align_step:
            steps.add(self.align_step)
        return tuple(sorted(steps))

    # -- plaintext vectors ----------------------------------------------------------------
    def weights_vector(self, w: FloatArray) -> FloatArray:
        """``w`` at ``[D - d, D)`` of every block (what gets encrypted)."""
        w = np.asarray(w, dtype=np.float64).ravel()
        if w.size != self.n_weights:
            raise ParameterError(f"expected {self.n_weights} weights, got {w.size}")
        out = np.zeros((self.samples_per_ct, self.block))
        out[:, self.weight_offset :] = w
        return out.ravel()

    def weights_from_slots(self, slots: FloatArray) -> FloatArray:
        """Read the weights back from block 0 of decrypted slots."""
        v = np.asarray(slots, dtype=np.float64).ravel()
        if v.size < self.block:
            raise ParameterError(f"need at least {self.block} slots, got {v.size}")
        return np.array(v[self.weight_offset : self.block], dtype=np.float64)

    def _chunk(self, x: FloatArray, start: int) -> FloatArray:
        rows = np.asarray(x, dtype=np.float64)[start : start + self.samples_per_ct]
        if rows.ndim != 2 or rows.shape[1] != self.n_weights:
            raise ParameterError(f"expected rows of {self.n_weights} values")
        return rows

    def forward_vector(self, x: FloatArray) -> FloatArray:
        """Up to ``b'`` samples (rows of ``d`` values) at the weights' positions."""
        rows = self._chunk(x, 0)
        out = np.zeros((self.samples_per_ct, self.block))
        out[: rows.shape[0], self.weight_offset :] = rows
        return out.ravel()

    def backward_vector(self, x: FloatArray) -> FloatArray:
        """Up to ``b'`` samples at ``[0, d)``, where the margins are valid."""
        rows = self._chunk(x, 0)
        out = np.zeros((self.samples_per_ct, self.block))
        out[: rows.shape[0], : self.n_weights] = rows
        return out.ravel()

    def per_sample_vector(self, values: FloatArray) -> FloatArray:
        """One value per sample, replicated over its block."""
        v = np.asarray(values, dtype=np.float64).ravel()[: self.samples_per_ct]
        out = np.zeros((self.samples_per_ct, self.block))
        out[: v.size, :] = v[:, None]
        return out.ravel()
