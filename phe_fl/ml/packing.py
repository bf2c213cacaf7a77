"""What every slot layout shares: samples cut into ciphertext-sized chunks, powers of two."""

from __future__ import annotations

import math

__all__ = ["next_pow2", "chunks"]


def chunks(n: int, size: int) -> list[slice]:
    """Consecutive slices of at most ``size`` rows covering ``range(n)``: the samples of
    one ciphertext each."""
    return [slice(s, min(s + size, n)) for s in range(0, n, size)]


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))
