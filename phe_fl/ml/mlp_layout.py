"""Slot layout of multilayer perceptrons and multinomial regression: alternating packing,
so no layer ever needs a transpose (POSEIDON's idea, on square per-sample blocks).

Each sample owns a square block of ``M x M`` slots (``M`` a power of two at least as wide
as every layer, bias unit included); slot ``(r, c)`` of sample ``i`` is
``i * M**2 + r * M + c`` and one ciphertext holds ``slots / M**2`` samples. A per-sample
vector ``v`` lives in one of two *forms*:

* ``COL``: ``v[c]`` at ``(r, c)`` for every row ``r`` (it varies along the columns);
* ``ROW``: ``v[r]`` at ``(r, c)`` for every column ``c``.

Layer ``k`` (1-based) takes its input in ``COL`` form when ``k`` is odd and in ``ROW``
form when ``k`` is even, and stores its weights ``W_k`` (``n_out x n_in``, bias last) so
that an element-wise product with the input lines them up: odd layers at
``(r=out, c=in)``, even layers at ``(r=in, c=out)``. Then:

* forward: ``W_k * a`` followed by a rotate-and-add along the input axis leaves
  ``z_k`` on one *line* of the block (column 0 for odd layers, row 0 for even ones); the
  activation is evaluated there with a line mask folded into its coefficients (so every
  slot off the valid units is exactly zero) and a rotate-and-add with negative steps
  replicates it into the other form: the next layer's input form;
* backward: ``e_k * a_{k-1}`` (output form times input form) is the weight gradient,
  already in ``W_k``'s layout; ``e_k * W_k`` summed along the output axis gives
  ``W_k^T e_k`` on layer ``k-1``'s line, where it is masked and replicated like ``z``;
* the aggregator's rotate-and-add over ``M**2, 2 M**2, ...`` sums the batch into every
  block, which is the weights' layout: no alignment step.

Gradients are exactly zero off the valid weight positions (masked errors times inputs
that are zero off their units), so padding weights stay zero through training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.ml.packing import next_pow2

__all__ = ["MLPLayout", "Form"]

Form = Literal["col", "row"]


@dataclass(frozen=True)
class MLPLayout:
    """Where each layer's weights, a sample's activations and the gradients live.

    ``units`` lists the layer widths without bias: inputs, hidden layers, outputs.
    With ``bias`` every layer's input gets one extra unit fixed at 1 (last).
    """

    slots: int
    units: tuple[int, ...]
    bias: bool = True

    def __post_init__(self) -> None:
        if len(self.units) < 2 or any(int(u) < 1 for u in self.units):
            raise ParameterError(f"a network needs >= 2 layers of >= 1 unit, got {self.units}")
        if self.block > self.slots:
            raise ParameterError(
                f"layers {list(self.units)} need square blocks of {self.side} x {self.side} = "
                f"{self.block} slots per sample, more than the {self.slots} slots of the ring; "
                f"use a larger ring (parameter set) or narrower layers (at most "
                f"{self.max_side(self.slots) - int(self.bias)} inputs per layer)"
            )

    # -- geometry -------------------------------------------------------------------------
    @staticmethod
    def max_side(slots: int) -> int:
        """The widest square block a ring of ``slots`` slots holds."""
        return 1 << ((slots.bit_length() - 1) // 2)

    @property
    def n_layers(self) -> int:
        """Weight layers (hidden layers + 1)."""
        return len(self.units) - 1

    @property
    def side(self) -> int:
        """``M``: a power of two holding the widest layer input (bias included)."""
        widest = max(max(self.units[:-1]) + int(self.bias), self.units[-1])
        return next_pow2(widest)

    @property
    def block(self) -> int:
        return self.side * self.side

    @property
    def samples_per_ct(self) -> int:
        return self.slots // self.block

    def n_in(self, k: int) -> int:
        """Inputs of layer ``k`` (1-based), bias included."""
        return self.units[k - 1] + int(self.bias)

    def n_out(self, k: int) -> int:
        return self.units[k]

    def shape(self, k: int) -> tuple[int, int]:
        """Shape of ``W_k`` in the model (``n_out x n_in``, bias column last)."""
        return self.n_out(k), self.n_in(k)

    @staticmethod
    def input_form(k: int) -> Form:
        return "col" if k % 2 else "row"

    @staticmethod
    def output_form(k: int) -> Form:
        return "row" if k % 2 else "col"

    def _axis_steps(self, form: Form) -> tuple[int, ...]:
        """Rotate-and-add steps that sum along the axis a ``form`` vector varies on."""
        m = self.side
        unit = 1 if form == "col" else m
        return tuple(unit << b for b in range(int(math.log2(m))))

    def input_sum_steps(self, k: int) -> tuple[int, ...]:
        """Sum ``W_k * a`` over the inputs (forward); the result sits on layer ``k``'s line."""
        return self._axis_steps(self.input_form(k))

    def output_sum_steps(self, k: int) -> tuple[int, ...]:
        """Sum ``e_k * W_k`` over the outputs (backward); the result sits on layer
        ``k - 1``'s line."""
        return self._axis_steps(self.output_form(k))

    def replicate_steps(self, k: int) -> tuple[int, ...]:
        """Negative steps spreading layer ``k``'s line into its output form."""
        return tuple(-s for s in self.input_sum_steps(k))

    @property
    def sample_sum_steps(self) -> tuple[int, ...]:
        """The aggregator's all-reduce over the samples of a ciphertext."""
        return tuple(self.block << b for b in range(int(math.log2(self.samples_per_ct))))

    def rotation_indices(self) -> tuple[int, ...]:
        steps: set[int] = set(self.sample_sum_steps)
        for form in ("col", "row"):
            for s in self._axis_steps(form):
                steps.update((s, -s))
        return tuple(sorted(steps))

    # -- encoders -------------------------------------------------------------------------
    def _blocks(self) -> FloatArray:
        return np.zeros((self.samples_per_ct, self.side, self.side))

    def weights_vector(self, k: int, w: FloatArray) -> FloatArray:
        """``W_k`` in its storage orientation, replicated in every sample block."""
        w = np.asarray(w, dtype=np.float64)
        if w.shape != self.shape(k):
            raise ParameterError(f"layer {k}: weights of shape {w.shape}, expected {self.shape(k)}")
        out = self._blocks()
        n_out, n_in = w.shape
        if k % 2:
            out[:, :n_out, :n_in] = w
        else:
            out[:, :n_in, :n_out] = w.T
        return out.ravel()

    def weights_from_slots(self, k: int, slots: FloatArray) -> FloatArray:
        blk = np.asarray(slots, dtype=np.float64)[: self.block].reshape(self.side, self.side)
        n_out, n_in = self.shape(k)
        return np.array(blk[:n_out, :n_in] if k % 2 else blk[:n_in, :n_out].T)

    def _check_chunk(self, n: int) -> None:
        if not 1 <= n <= self.samples_per_ct:
            raise ParameterError(f"a chunk holds 1..{self.samples_per_ct} samples, got {n}")

    def form_vector(self, values: FloatArray, form: Form) -> FloatArray:
        """Per-sample vectors (``n x width``) in ``form``, one block per sample."""
        v = np.asarray(values, dtype=np.float64)
        self._check_chunk(v.shape[0])
        out = self._blocks()
        width = v.shape[1]
        if form == "col":
            out[: v.shape[0], :, :width] = v[:, None, :]
        else:
            out[: v.shape[0], :width, :] = v[:, :, None]
        return out.ravel()

    def line_vector(self, k: int, values: FloatArray) -> FloatArray:
        """Per-sample values (``n x n_out(k)``) on layer ``k``'s line, zero elsewhere."""
        v = np.asarray(values, dtype=np.float64)
        self._check_chunk(v.shape[0])
        out = self._blocks()
        width = v.shape[1]
        if k % 2:
            out[: v.shape[0], :width, 0] = v
        else:
            out[: v.shape[0], 0, :width] = v
        return out.ravel()

    def line_mask(self, k: int, n_samples: int, scale: float = 1.0) -> FloatArray:
        """``scale`` on the valid units of layer ``k``'s line for the first ``n_samples``
        blocks; zero elsewhere (padding samples, padding units, off-line slots)."""
        return self.line_vector(k, np.full((n_samples, self.n_out(k)), float(scale)))

    def bias_vector(self, k: int, n_samples: int) -> FloatArray:
        """The constant-1 bias unit of layer ``k + 1``'s input, in layer ``k``'s output form."""
        ones = np.zeros((n_samples, self.n_out(k) + 1))
        ones[:, -1] = 1.0
        return self.form_vector(ones, self.output_form(k))

    def read_line(self, k: int, slots: FloatArray, n_samples: int) -> FloatArray:
        """Inverse of :meth:`line_vector`: ``n_samples x n_out(k)`` values."""
        blk = np.asarray(slots, dtype=np.float64)[: n_samples * self.block]
        blk = blk.reshape(n_samples, self.side, self.side)
        width = self.n_out(k)
        return np.array(blk[:, :width, 0] if k % 2 else blk[:, 0, :width])
