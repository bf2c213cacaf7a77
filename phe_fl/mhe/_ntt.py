"""OpenFHE's negacyclic number-theoretic transform of one RNS tower, in numba.

OpenFHE keeps and serializes every ring element in EVALUATION form (its NTT), and
openfhe-python binds no format switch. Whatever must be done to coefficients (rounding a
ciphertext for the wire: :mod:`phe_fl.mhe.compact`) therefore needs this transform, equal
to OpenFHE's to the bit: the Cooley-Tukey forward transform with bit-reversed output and
the Gentleman-Sande inverse, over the tower's own primitive 2N-th root of unity (read from
the serialized parameters). A wrong root or order would turn a ternary secret into
uniform noise, which is what the tests check.

Products are Shoup's (``w' = floor(w * 2^64 / q)``, exact, moduli below 2^62) with the
high word from 32-bit halves; reductions are branch-free (``min(x, x - q)`` of unsigned
words). About 0.6 ms a transform at 2^15 on one core, once compiled (about a second at
the first use in a process; nothing is cached on disk, so read-only installs work); the
kernels release the GIL.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import numpy.typing as npt

__all__ = ["TowerNTT", "tower_ntt", "times"]

U64 = npt.NDArray[np.uint64]


@nb.njit(inline="always")
def _mulhi(a: np.uint64, b: np.uint64) -> np.uint64:
    low32, s = np.uint64(0xFFFFFFFF), np.uint64(32)
    a0, a1, b0, b1 = a & low32, a >> s, b & low32, b >> s
    lo, c1, c2 = a0 * b0, a0 * b1, a1 * b0
    carry = (lo >> s) + (c1 & low32) + (c2 & low32)
    return a1 * b1 + (c1 >> s) + (c2 >> s) + (carry >> s)


@nb.njit(nogil=True)  # compiled at first use (about a second): no cache files to write
def _forward(a: U64, w: U64, ws: U64, q: np.uint64) -> None:  # pragma: no cover - compiled
    rows, n = a.shape
    for r in range(rows):
        x = a[r]
        t, m = n, 1
        while m < n:
            t //= 2
            for i in range(m):
                root, shoup = w[m + i], ws[m + i]
                for j in range(2 * i * t, 2 * i * t + t):
                    u, y = x[j], x[j + t]
                    v = y * root - _mulhi(y, shoup) * q
                    v = min(v, v - q)
                    s = u + v
                    d = u + q - v
                    x[j] = min(s, s - q)
                    x[j + t] = min(d, d - q)
            m *= 2


@nb.njit(nogil=True)  # compiled at first use (about a second): no cache files to write
def _inverse(
    a: U64, w: U64, ws: U64, q: np.uint64, n_inv: np.uint64, n_inv_shoup: np.uint64
) -> None:  # pragma: no cover - compiled
    rows, n = a.shape
    for r in range(rows):
        x = a[r]
        t, m = 1, n
        while m > 1:
            h = m // 2
            for i in range(h):
                root, shoup = w[h + i], ws[h + i]
                for j in range(2 * i * t, 2 * i * t + t):
                    u, v = x[j], x[j + t]
                    s = u + v
                    d = u + q - v
                    d = min(d, d - q)
                    x[j] = min(s, s - q)
                    y = d * root - _mulhi(d, shoup) * q
                    x[j + t] = min(y, y - q)
            t *= 2
            m = h
        for j in range(n):
            y = x[j] * n_inv - _mulhi(x[j], n_inv_shoup) * q
            x[j] = min(y, y - q)


@nb.njit(nogil=True)
def _times(
    values: U64, factor: np.uint64, shoup: np.uint64, q: np.uint64
) -> U64:  # pragma: no cover
    out = np.empty_like(values)
    for j in range(values.size):
        a = values[j] % q
        r = a * factor - _mulhi(a, shoup) * q
        out[j] = min(r, r - q)
    return out


def times(values: U64, factor: int, q: int) -> U64:
    """``(values mod q) * factor mod q``, element-wise (``factor`` below ``q``)."""
    return _times(values, np.uint64(factor), np.uint64((factor << 64) // q), np.uint64(q))


def _bit_reversed(n: int) -> list[int]:
    bits = n.bit_length() - 1
    return [int(format(i, f"0{bits}b")[::-1], 2) if bits else 0 for i in range(n)]


def _table(root: int, n: int, q: int) -> tuple[U64, U64]:
    """``root^brv(i)`` for i < n and their Shoup factors."""
    powers = [1] * n
    for i in range(1, n):
        powers[i] = powers[i - 1] * root % q
    values = [powers[i] for i in _bit_reversed(n)]
    return (
        np.array(values, dtype=np.uint64),
        np.array([(v << 64) // q for v in values], dtype=np.uint64),
    )


@dataclass(frozen=True)
class TowerNTT:
    """The transforms of ring dimension ``n`` modulo the prime ``q`` (``psi``: OpenFHE's
    primitive 2n-th root of unity for that tower)."""

    n: int
    q: int
    psi: int
    _w: tuple[U64, U64] = field(init=False, repr=False)
    _iw: tuple[U64, U64] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not (self.q < 2**62 and pow(self.psi, self.n, self.q) == self.q - 1):
            raise ValueError(f"{self.psi} is not a primitive {2 * self.n}-th root modulo {self.q}")
        object.__setattr__(self, "_w", _table(self.psi, self.n, self.q))
        object.__setattr__(self, "_iw", _table(pow(self.psi, -1, self.q), self.n, self.q))

    def _rows(self, a: npt.ArrayLike) -> U64:
        out = np.array(a, dtype=np.uint64).reshape(-1, self.n)  # a copy: transformed in place
        if out.size and int(out.max()) >= self.q:
            raise ValueError("coefficients must be reduced modulo the tower's modulus")
        return out

    def forward(self, a: npt.ArrayLike) -> U64:
        """Coefficients (rows of ``n``) to OpenFHE's EVALUATION form."""
        out = self._rows(a)
        _forward(out, self._w[0], self._w[1], np.uint64(self.q))
        return out

    def inverse(self, a: npt.ArrayLike) -> U64:
        """OpenFHE's EVALUATION form (rows of ``n``) to coefficients in ``[0, q)``."""
        out = self._rows(a)
        n_inv = pow(self.n, -1, self.q)
        _inverse(
            out, *self._iw, np.uint64(self.q), np.uint64(n_inv), np.uint64((n_inv << 64) // self.q)
        )
        return out


_cache: dict[tuple[int, int, int], TowerNTT] = {}
_cache_lock = threading.Lock()


def tower_ntt(n: int, q: int, psi: int) -> TowerNTT:
    """The (cached) transforms of one tower: their tables take a moment to build."""
    key = (n, q, psi)
    with _cache_lock:
        found = _cache.get(key)
        if found is None:
            found = _cache[key] = TowerNTT(n, q, psi)
        return found
