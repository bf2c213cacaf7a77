"""Polynomial activations: CKKS can only add and multiply, so every nonlinearity is
replaced by a polynomial fitted on a declared interval, and the plaintext twin evaluates
the very same polynomial (the approximation is part of the model, not an error of the
encrypted run).

Coefficients are kept in the monomial basis so that the encrypted evaluation can fold
each coefficient (and any per-slot scale such as a learning rate or a mask) into the
first multiplication of its term, which gives the smallest depth for a given degree:
``depth = bit_length(degree)`` levels (2 for degree 3, 3 for degrees 4..7).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.polynomial import Chebyshev, Polynomial

from phe_fl.errors import LevelError, ParameterError
from phe_fl.mhe.context import Ciphertext, Context, FloatArray

__all__ = [
    "FitMethod",
    "PolyActivation",
    "fit_activation",
    "fit_sigmoid",
    "identity_activation",
    "sigmoid",
    "term_depth",
]

FitMethod = Literal["lstsq", "chebyshev"]

_FIT_POINTS = 4001  # least-squares grid: dense enough to approximate the L2 fit on [-a, a]
_CHECK_POINTS = 20001  # grid on which max_error is measured
_NEGLIGIBLE = 1e-12  # relative size below which a fitted coefficient is symmetry noise


def sigmoid(x: FloatArray) -> FloatArray:
    """Numerically stable logistic function (the function the polynomials approximate)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def term_depth(power: int) -> int:
    """Levels that ``c * z**power`` costs when ``c`` is folded into the lowest factor."""
    if power < 1:
        return 0
    return int(power).bit_length()


@dataclass(frozen=True)
class PolyActivation:
    """A polynomial stand-in for an activation, valid on ``interval``.

    ``coefficients[k]`` multiplies ``x**k``. ``max_error`` is the largest deviation from
    the approximated function on the interval; outside it the polynomial diverges, which
    is why the interval is declared in the job and checked against the data scale.
    ``depth`` is the number of levels :meth:`encrypted` consumes.
    """

    name: str
    coefficients: tuple[float, ...]
    interval: tuple[float, float]
    degree: int
    max_error: float
    depth: int
    method: str

    def __post_init__(self) -> None:
        if len(self.coefficients) != self.degree + 1:
            raise ParameterError(
                f"activation {self.name!r}: {len(self.coefficients)} coefficients for degree "
                f"{self.degree}"
            )
        if not all(math.isfinite(c) for c in self.coefficients):
            raise ParameterError(f"activation {self.name!r}: non-finite coefficient")
        if self.depth != _poly_depth(self.coefficients):
            raise ParameterError(
                f"activation {self.name!r}: depth {self.depth} does not match its coefficients "
                f"({_poly_depth(self.coefficients)})"
            )

    # -- plaintext ------------------------------------------------------------------------
    def __call__(self, x: FloatArray | float) -> FloatArray:
        """Evaluate the polynomial in numpy (what the plaintext twin uses)."""
        return np.asarray(
            np.polynomial.polynomial.polyval(np.asarray(x, dtype=np.float64), self.coefficients),
            dtype=np.float64,
        )

    def derivative(self) -> PolyActivation:
        """The derivative polynomial (for losses that need g'; same interval)."""
        d = tuple(float(k * c) for k, c in enumerate(self.coefficients))[1:] or (0.0,)
        return PolyActivation(
            name=f"{self.name}'",
            coefficients=d,
            interval=self.interval,
            degree=len(d) - 1,
            max_error=float("nan"),
            depth=_poly_depth(d),
            method=self.method,
        )

    # -- encrypted ------------------------------------------------------------------------
    def encrypted(
        self,
        ctx: Context,
        ct: Ciphertext,
        *,
        scale: FloatArray | float = 1.0,
        shift: FloatArray | float = 0.0,
    ) -> Ciphertext:
        """``scale * p(ct) + shift`` slot-wise, using ``depth`` levels of ``ct``.

        ``scale`` (a scalar or one value per slot) is folded into the coefficient
        multiplications, so masks, learning rates and plaintext factors cost no extra
        level. Powers ``z**(2**b)`` are built by squaring; term ``k`` multiplies
        ``(c_k * scale) * z**(2**b0)`` by the remaining binary powers of ``k``.
        """
        ctx.own(ct)
        if ct.scale_degree != 1:
            raise LevelError(f"activation {self.name!r}: input must be rescaled first")
        if ct.levels_left < self.depth:
            raise LevelError(
                f"activation {self.name!r} needs {self.depth} levels, ciphertext has "
                f"{ct.levels_left}; refresh it first"
            )
        scale_arr = _as_slot_values(ctx, scale)
        shift_arr = _as_slot_values(ctx, shift)
        powers: dict[int, Ciphertext] = {1: ct}

        def power(p: int) -> Ciphertext:  # p is a power of two
            if p not in powers:
                half = power(p // 2)
                powers[p] = ctx.rescale(ctx.mul(half, half))
            return powers[p]

        acc: Ciphertext | None = None
        for k in range(1, self.degree + 1):
            c = self.coefficients[k]
            if c == 0.0:
                continue
            bits = [b for b in range(k.bit_length()) if k >> b & 1]
            term = ctx.rescale(ctx.mul_plain(power(1 << bits[0]), _times(c, scale_arr)))
            for b in bits[1:]:
                term = ctx.rescale(ctx.mul(term, power(1 << b)))
            acc = term if acc is None else ctx.add(acc, term)
        if acc is None:
            raise ParameterError(f"activation {self.name!r} is constant; nothing to evaluate")
        constant = _plus(_times(self.coefficients[0], scale_arr), shift_arr)
        if _is_nonzero(constant):
            acc = ctx.add_plain(acc, constant)
        return acc


def _poly_depth(coefficients: tuple[float, ...]) -> int:
    return max((term_depth(k) for k, c in enumerate(coefficients) if k and c != 0.0), default=0)


def _as_slot_values(ctx: Context, v: FloatArray | float) -> FloatArray | float:
    if np.isscalar(v):
        return float(v)  # type: ignore[arg-type]
    arr = np.asarray(v, dtype=np.float64).ravel()
    if arr.size > ctx.slots:
        raise ParameterError(f"{arr.size} slot values do not fit {ctx.slots} slots")
    return arr


def _times(c: float, v: FloatArray | float) -> FloatArray | float:
    return c * v if isinstance(v, float) else np.asarray(c * v, dtype=np.float64)


def _plus(a: FloatArray | float, b: FloatArray | float) -> FloatArray | float:
    if isinstance(a, float) and isinstance(b, float):
        return a + b
    aa, bb = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if aa.ndim and bb.ndim and aa.size != bb.size:  # pad the shorter vector with zeros
        n = max(aa.size, bb.size)
        aa, bb = np.pad(aa, (0, n - aa.size)), np.pad(bb, (0, n - bb.size))
    return np.asarray(aa + bb, dtype=np.float64)


def _is_nonzero(v: FloatArray | float) -> bool:
    return bool(np.any(np.asarray(v) != 0.0))


def fit_activation(
    fn: Callable[[FloatArray], FloatArray],
    name: str,
    degree: int,
    bound: float,
    method: FitMethod = "lstsq",
) -> PolyActivation:
    """Fit ``fn`` on ``[-bound, bound]`` by a polynomial of ``degree``.

    ``lstsq`` minimizes the squared error on a uniform grid (the continuous L2 fit that
    PriCell's table uses); ``chebyshev`` interpolates at Chebyshev points (close to the
    minimax fit, smaller max error, larger average error).
    """
    if not isinstance(degree, int) or isinstance(degree, bool) or not 1 <= degree <= 31:
        raise ParameterError(f"activation degree must be an integer in 1..31, got {degree!r}")
    if not (isinstance(bound, int | float) and math.isfinite(bound) and bound > 0):
        raise ParameterError(f"activation interval half-width must be > 0, got {bound!r}")
    a = float(bound)
    if method == "lstsq":
        x = np.asarray(np.linspace(-a, a, _FIT_POINTS), dtype=np.float64)
        poly = Polynomial.fit(x, fn(x), degree, domain=[-a, a]).convert()
    elif method == "chebyshev":
        # numpy's stub wants a narrower return type than any float function has
        cheb = Chebyshev.interpolate(fn, degree, domain=[-a, a])  # type: ignore[arg-type]
        poly = cheb.convert(kind=Polynomial)
    else:
        raise ParameterError(f"unknown fit method {method!r}; use 'lstsq' or 'chebyshev'")
    coef = np.zeros(degree + 1)
    coef[: poly.coef.size] = poly.coef
    # Odd/even symmetry leaves ~1e-17 coefficients; zero them so no level or
    # multiplication is spent on terms that are exactly zero in the model.
    coef[np.abs(coef) <= _NEGLIGIBLE * np.abs(coef).max()] = 0.0
    coefficients = tuple(float(c) for c in coef)
    grid = np.asarray(np.linspace(-a, a, _CHECK_POINTS), dtype=np.float64)
    err = float(np.max(np.abs(np.polynomial.polynomial.polyval(grid, coef) - fn(grid))))
    return PolyActivation(
        name=name,
        coefficients=coefficients,
        interval=(-a, a),
        degree=degree,
        max_error=err,
        depth=_poly_depth(coefficients),
        method=method,
    )


@functools.lru_cache(maxsize=64)
def fit_sigmoid(degree: int = 3, bound: float = 3.0, method: FitMethod = "lstsq") -> PolyActivation:
    """The logistic sigmoid on ``[-bound, bound]`` (degree 3 on [-3, 3] by least squares
    gives PriCell's 0.5 + 0.2332x - 0.0098x^3)."""
    return fit_activation(sigmoid, f"sigmoid-{method}-d{degree}-a{bound:g}", degree, bound, method)


def identity_activation() -> PolyActivation:
    """p(x) = x: turns the GLM machinery into linear regression (squared loss)."""
    return PolyActivation(
        name="identity",
        coefficients=(0.0, 1.0),
        interval=(-math.inf, math.inf),
        degree=1,
        max_error=0.0,
        depth=1,
        method="exact",
    )
