"""Slot layout of multilayer perceptrons and multinomial regression: alternating packing,
so no layer ever needs a transpose (POSEIDON's idea, on square per-sample tiles), and as
many ciphertexts per layer as its width needs (POSEIDON's multi-cipher packing).

A layer vector is cut into tiles of ``T`` units (``T`` a power of two whose square fits the
ring; :meth:`MLPLayout.for_batch` picks the one whose iteration costs fewest operations).
Each sample owns a ``T x T`` block of every tile ciphertext; slot ``(r, c)`` of
sample ``i`` is ``i * T**2 + r * T + c`` and one ciphertext holds ``slots / T**2``
samples. Unit ``u`` lives in tile ``u // T`` at local position ``u % T``, in one of two
*forms*:

* ``COL``: ``v[t T + c]`` at ``(r, c)`` of tile ``t`` for every row ``r``;
* ``ROW``: ``v[t T + r]`` at ``(r, c)`` of tile ``t`` for every column ``c``.

Layer ``k`` (1-based) takes its input in ``COL`` form when ``k`` is odd and in ``ROW``
form when ``k`` is even, and stores its weights ``W_k`` (``n_out x n_in``, bias last) as
a grid of ``O_k x I_k`` tile ciphertexts (output tiles by input tiles), tile ``(o, i)``
holding the ``T x T`` block ``W_k[oT:(o+1)T, iT:(i+1)T]`` so that an element-wise product
with input tile ``i`` lines them up: odd layers at ``(r=out, c=in)``, even layers at
``(r=in, c=out)``. Then:

* forward: output tile ``o`` is ``sum_i W_k[o, i] * a[i]`` (ciphertext additions) followed
  by one rotate-and-add along the input axis, which leaves ``z_k``'s units of tile ``o``
  on one *line* (column 0 for odd layers, row 0 for even ones); the activation is
  evaluated there with a line mask folded into its coefficients (so every slot off the
  valid units is exactly zero) and a rotate-and-add with negative steps replicates it
  into the other form: tile ``o`` of the next layer's input;
* backward: ``e_k[o] * a_{k-1}[i]`` (output form times input form) is the gradient's tile
  ``(o, i)``, already in ``W_k``'s layout; ``sum_o e_k[o] * W_k[o, i]`` summed along the
  output axis gives ``W_k^T e_k`` on tile ``i`` of layer ``k-1``'s line, where it is
  masked and replicated like ``z``;
* the aggregator's rotate-and-add over ``T**2, 2 T**2, ...`` sums the batch into every
  block of each tile, which is the weights' layout: no alignment step.

Cost of a layer with ``n_in`` inputs and ``n_out`` outputs, ``I = ceil(n_in / T)`` and
``O = ceil(n_out / T)`` tiles: ``I * O`` products (forward, and twice that backward),
``(I - 1) * O`` additions, and ``O * log2(T)`` rotations forward (the sum and the
replication: ``2 O log2 T``), ``I * 2 log2 T`` backward. Rotations grow with the
logarithm of the units a ciphertext holds (``log2 T``) and linearly in the number of
output tiles; the rotation keys are the same ``2 log2 T + log2(samples per ciphertext)``
whatever the width.

Choosing ``T``: a wide tile means few weight ciphertexts but few samples per ciphertext,
so a batch takes many chunks, each a whole forward and backward pass (784-64-64-10 at
2^14 slots: ``T = 128`` holds one sample, 8 passes for a batch of 8; ``T = 64`` holds
four, 2 passes over 17 weight tiles instead of 9). A narrow one packs the batch in one
chunk but multiplies the weight tiles, which every iteration refreshes and the
aggregator sums. :meth:`MLPLayout.iteration_cost` counts both, and measured in one
process (4 parties, 2^15 ring, one iteration) its ranking held: 784-64-64-10 took 94.8 s
at ``T = 128``, 25.6 s at 64, 32.4 s at 32; 64-16-10 took 50.9 s at 128 and 6.9 s at 32.

Gradients are exactly zero off the valid weight positions (masked errors times inputs
that are zero off their units), so padding weights stay zero through training.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
    """Where each layer's weight tiles, a sample's activation tiles and the gradients live.

    ``units`` lists the layer widths without bias: inputs, hidden layers, outputs.
    With ``bias`` every layer's input gets one extra unit fixed at 1 (last). ``side`` is
    the tile side ``T``; 0 (the default) is the widest tile that is of use: the widest
    layer input (bias included) when its square fits the ring, else the widest square
    that does, which makes the fewest weight ciphertexts (:meth:`for_batch` chooses by
    cost instead).
    """

    slots: int
    units: tuple[int, ...]
    bias: bool = True
    side: int = 0

    def __post_init__(self) -> None:
        if len(self.units) < 2 or any(int(u) < 1 for u in self.units):
            raise ParameterError(f"a network needs >= 2 layers of >= 1 unit, got {self.units}")
        widest = self.max_side(self.slots)
        if widest < 2:
            raise ParameterError(f"a ring of {self.slots} slots holds no 2 x 2 tile")
        if self.side == 0:
            needed = max(max(self.units[:-1]) + int(self.bias), self.units[-1])
            object.__setattr__(self, "side", min(next_pow2(needed), widest))
        elif not 2 <= self.side <= widest or self.side & (self.side - 1):
            raise ParameterError(
                f"tile side must be a power of two from 2 to {widest} (its square fits "
                f"{self.slots} slots), got {self.side}"
            )

    @classmethod
    def for_batch(
        cls,
        slots: int,
        units: tuple[int, ...],
        batch: int,
        *,
        bias: bool = True,
        max_cts: int | None = None,
    ) -> MLPLayout:
        """The layout whose iteration on ``batch`` samples per party costs fewest
        operations (:meth:`iteration_cost`; the wider side on a tie), among those of at
        most ``max_cts`` weight ciphertexts (the widest tile when none is that small)."""
        widest = cls(slots, units, bias)
        candidates = [widest]
        side = widest.side // 2
        while side >= 2:
            candidates.append(cls(slots, units, bias, side))
            side //= 2
        fit = [c for c in candidates if max_cts is None or c.n_cts <= max_cts] or [widest]
        return min(fit, key=lambda c: (c.iteration_cost(batch), -c.side))

    # -- geometry -------------------------------------------------------------------------
    @staticmethod
    def max_side(slots: int) -> int:
        """The widest square tile a ring of ``slots`` slots holds."""
        return 1 << ((slots.bit_length() - 1) // 2)

    @property
    def n_layers(self) -> int:
        """Weight layers (hidden layers + 1)."""
        return len(self.units) - 1

    @property
    def block(self) -> int:
        """Slots per sample in one tile ciphertext."""
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

    def tiles(self, width: int) -> int:
        """Tiles a vector of ``width`` units spans."""
        return -(-width // self.side)

    def grid(self, k: int) -> tuple[int, int]:
        """``(O_k, I_k)``: layer ``k``'s weight tiles, outputs by inputs."""
        return self.tiles(self.n_out(k)), self.tiles(self.n_in(k))

    def layer_cts(self, k: int) -> slice:
        """Where layer ``k``'s weight tiles (row-major over the grid) sit among all of the
        model's weight ciphertexts."""
        start = sum(o * i for o, i in (self.grid(j) for j in range(1, k)))
        o, i = self.grid(k)
        return slice(start, start + o * i)

    @property
    def n_cts(self) -> int:
        """Weight ciphertexts of the whole model."""
        return int(self.layer_cts(self.n_layers).stop)

    @staticmethod
    def input_form(k: int) -> Form:
        return "col" if k % 2 else "row"

    @staticmethod
    def output_form(k: int) -> Form:
        return "row" if k % 2 else "col"

    def _axis_steps(self, form: Form, width: int = 0) -> tuple[int, ...]:
        """Rotate-and-add steps along the axis a ``form`` vector varies on, covering the
        first ``width`` units of a tile (all ``T`` when not given): ``ceil(log2(width))``."""
        m = self.side
        unit = 1 if form == "col" else m
        span = next_pow2(min(width, m)) if width else m
        return tuple(unit << b for b in range(int(math.log2(span))))

    def input_sum_steps(self, k: int) -> tuple[int, ...]:
        """Sum ``W_k * a`` over a tile's inputs (forward; only the layer's inputs are
        nonzero, so ``log2`` of their count); the result sits on layer ``k``'s line."""
        return self._axis_steps(self.input_form(k), self.n_in(k))

    def output_sum_steps(self, k: int) -> tuple[int, ...]:
        """Sum ``e_k * W_k`` over a tile's outputs (backward); the result sits on layer
        ``k - 1``'s line."""
        return self._axis_steps(self.output_form(k), self.n_out(k))

    def forward_replicate_steps(self, k: int) -> tuple[int, ...]:
        """Negative steps spreading layer ``k``'s line into its output form, as far as
        layer ``k + 1`` reads it: its weights hold ``n_out(k + 1)`` units along that axis."""
        return tuple(-s for s in self._axis_steps(self.input_form(k), self.n_out(k + 1)))

    def backward_replicate_steps(self, k: int) -> tuple[int, ...]:
        """Negative steps spreading an error (or slope) on layer ``k``'s line into its
        output form, as far as ``W_k``'s inputs reach (the gradient's and ``W_k^T e``'s
        products read ``n_in(k)`` units along that axis)."""
        return tuple(-s for s in self._axis_steps(self.input_form(k), self.n_in(k)))

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

    # -- cost ---------------------------------------------------------------------------
    REFRESH_COST = 2
    """A weight tile's refresh in rotations' time: each party's share (a masked decryption,
    its transfer) and the root's preparation and re-encryption."""

    def chunk_cost(self) -> int:
        """Rotations and ciphertext products of one chunk's MAP as
        :mod:`~phe_fl.ml.mlp.passes` runs it (forward with slopes, output error, backward),
        an activation counted as two products; products with the plaintext input (layer
        1's forward and gradient tiles) cost a twentieth of the others and are left out."""
        last = self.n_layers
        ops = 0
        for k in range(1, last + 1):
            n_o, n_i = self.grid(k)
            ops += n_o * (2 * n_i * int(k > 1) + len(self.input_sum_steps(k)))
            if k < last:
                replicate = self.forward_replicate_steps(k) + self.backward_replicate_steps(k)
                ops += n_o * (4 + len(replicate))
            else:
                ops += n_o * (2 + len(self.backward_replicate_steps(k)))
            if k > 1:
                steps = self.output_sum_steps(k) + self.backward_replicate_steps(k - 1)
                ops += self.tiles(self.n_out(k - 1)) * (n_o + 2 + len(steps))
        return ops

    def iteration_cost(self, batch: int) -> int:
        """One party's share of an iteration on ``batch`` samples, in operations: its
        chunks' MAPs, and per weight tile the aggregator's sum over samples and the
        refresh every iteration starts with."""
        chunks = -(-batch // self.samples_per_ct)
        per_tile = len(self.sample_sum_steps) + self.REFRESH_COST
        return chunks * self.chunk_cost() + self.n_cts * per_tile

    # -- encoders -------------------------------------------------------------------------
    def _blocks(self) -> FloatArray:
        return np.zeros((self.samples_per_ct, self.side, self.side))

    def weights_vectors(self, k: int, w: FloatArray) -> list[FloatArray]:
        """``W_k``'s tiles (row-major over the grid) in their storage orientation, each
        replicated in every sample block."""
        w = np.asarray(w, dtype=np.float64)
        if w.shape != self.shape(k):
            raise ParameterError(f"layer {k}: weights of shape {w.shape}, expected {self.shape(k)}")
        t = self.side
        n_o, n_i = self.grid(k)
        out: list[FloatArray] = []
        for o in range(n_o):
            for i in range(n_i):
                part = w[o * t : (o + 1) * t, i * t : (i + 1) * t]
                blocks = self._blocks()
                if k % 2:
                    blocks[:, : part.shape[0], : part.shape[1]] = part
                else:
                    blocks[:, : part.shape[1], : part.shape[0]] = part.T
                out.append(blocks.ravel())
        return out

    def weights_from_tiles(self, k: int, tiles: Sequence[FloatArray]) -> FloatArray:
        """Inverse of :meth:`weights_vectors` (the first sample block of each tile)."""
        n_o, n_i = self.grid(k)
        if len(tiles) != n_o * n_i:
            raise ParameterError(f"layer {k}: {len(tiles)} weight tiles, expected {n_o * n_i}")
        t = self.side
        w = np.zeros((n_o * t, n_i * t))
        for idx, slots in enumerate(tiles):
            o, i = divmod(idx, n_i)
            blk = np.asarray(slots, dtype=np.float64)[: self.block].reshape(t, t)
            w[o * t : (o + 1) * t, i * t : (i + 1) * t] = blk if k % 2 else blk.T
        n_out, n_in = self.shape(k)
        return np.array(w[:n_out, :n_in])

    def _check_chunk(self, n: int) -> None:
        if not 1 <= n <= self.samples_per_ct:
            raise ParameterError(f"a chunk holds 1..{self.samples_per_ct} samples, got {n}")

    def form_vectors(self, values: FloatArray, form: Form) -> list[FloatArray]:
        """Per-sample vectors (``n x width``) in ``form``: one vector per tile, one block
        per sample."""
        v = np.asarray(values, dtype=np.float64)
        self._check_chunk(v.shape[0])
        t = self.side
        out: list[FloatArray] = []
        for start in range(0, v.shape[1], t):
            part = v[:, start : start + t]
            blocks = self._blocks()
            if form == "col":
                blocks[: v.shape[0], :, : part.shape[1]] = part[:, None, :]
            else:
                blocks[: v.shape[0], : part.shape[1], :] = part[:, :, None]
            out.append(blocks.ravel())
        return out

    def line_vectors(self, k: int, values: FloatArray) -> list[FloatArray]:
        """Per-sample values (``n x n_out(k)``) on layer ``k``'s line, one vector per
        output tile, zero elsewhere."""
        v = np.asarray(values, dtype=np.float64)
        self._check_chunk(v.shape[0])
        t = self.side
        out: list[FloatArray] = []
        for start in range(0, v.shape[1], t):
            part = v[:, start : start + t]
            blocks = self._blocks()
            if k % 2:
                blocks[: v.shape[0], : part.shape[1], 0] = part
            else:
                blocks[: v.shape[0], 0, : part.shape[1]] = part
            out.append(blocks.ravel())
        return out

    def line_masks(self, k: int, n_samples: int, scale: float = 1.0) -> list[FloatArray]:
        """Per output tile, ``scale`` on the valid units of layer ``k``'s line for the
        first ``n_samples`` blocks; zero elsewhere (padding samples, units, off-line slots)."""
        return self.line_vectors(k, np.full((n_samples, self.n_out(k)), float(scale)))

    def bias_vector(self, k: int, n_samples: int) -> tuple[int, FloatArray]:
        """The constant-1 bias unit of layer ``k + 1``'s input in layer ``k``'s output
        form: (its tile, that tile's vector)."""
        ones = np.zeros((n_samples, self.n_out(k) + 1))
        ones[:, -1] = 1.0
        tile = self.n_out(k) // self.side
        return tile, self.form_vectors(ones, self.output_form(k))[tile]

    def read_line(
        self, k: int, tiles: Sequence[FloatArray], n_samples: int, offset: int = 0
    ) -> FloatArray:
        """Inverse of :meth:`line_vectors`: ``n_samples x n_out(k)`` values, read from the
        line shifted ``offset`` units across (a packed score group's ``offset``-th chunk)."""
        t = self.side
        parts = []
        for slots in tiles:
            blk = np.asarray(slots, dtype=np.float64)[: n_samples * self.block]
            blk = blk.reshape(n_samples, t, t)
            parts.append(blk[:, :, offset] if k % 2 else blk[:, offset, :])
        return np.array(np.hstack(parts)[:, : self.n_out(k)])
