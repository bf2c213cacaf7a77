"""What every slot layout shares: samples cut into ciphertext-sized chunks, powers of two,
the rotate-and-add that sums (or copies) along a layout's blocks."""

from __future__ import annotations

import math
from collections.abc import Sequence

from phe_fl.mhe.context import Ciphertext, Context

__all__ = ["next_pow2", "chunks", "rotsum"]


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(n)``: the samples of
    one ciphertext each."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


def rotsum(ctx: Context, ct: Ciphertext, steps: Sequence[int]) -> Ciphertext:
    """``ct`` plus its rotations by ``steps`` in turn: a rotate-and-add (sums over a
    line or block, or copies of it)."""
    for s in steps:
        ct = ctx.add(ct, ctx.rotate(ct, s))
    return ct
