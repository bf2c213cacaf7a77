"""Ciphertexts and decryption shares of one RNS tower, rounded for the wire.

A one-tower element holds 60-bit coefficients whose low bits carry nothing but noise: a
decryption share's lie below the flooding every party adds (sigma ``2^flooding_log2_sigma``
per coefficient), a ciphertext's ``c0`` likewise, and ``c1``'s below that divided by the
secret's norm (``c1`` is multiplied by ``s`` at decryption). The compact form rounds each
coefficient, in coefficient form (:mod:`phe_fl.mhe._ntt`: OpenFHE keeps only the NTT),
to a multiple of ``2^shift`` and sends the quotient, bit-packed: 38, 47 and 38 bits where
OpenFHE writes 64 (2^15, 8 parties), so an encrypted FedAvg update and its decryption
share go up in 3.8x the float32 bytes instead of 6x. Rounding public values is public
post-processing: it reveals nothing, and its error (:func:`rounding_error`) is about 3%
of the flooding's.

Sums stay exact: quotients of the same shift add as integers, so an inner node adds its
children's compact forms without rounding again, and :func:`expand` gives OpenFHE's bytes
of the sum (``quotient * 2^shift mod q``, back to EVALUATION form). Every compact form is
read strictly: its skeleton (every byte of OpenFHE's payload but the coefficients) must
be one this parameter set writes, and its quotients fit their declared width.
"""

from __future__ import annotations

import hashlib
import math
import struct
from dataclasses import dataclass

import numba as nb
import numpy as np
import numpy.typing as npt

from phe_fl.errors import SerializationError
from phe_fl.mhe import _backend
from phe_fl.mhe._ntt import TowerNTT, times, tower_ntt
from phe_fl.mhe._wire import Envelope, Kind
from phe_fl.mhe.context import Context
from phe_fl.mhe.params import ParameterSet

__all__ = [
    "compact",
    "expand",
    "add",
    "masked",
    "mask_digest",
    "message_shift",
    "mask_shift",
    "rounding_error",
]

U64 = npt.NDArray[np.uint64]

_EXPANDED = {
    Kind.COMPACT_CIPHERTEXT: Kind.CIPHERTEXT,
    Kind.COMPACT_MASKED_CIPHERTEXT: Kind.CIPHERTEXT,  # (0, c1): what a share is made of
    Kind.COMPACT_DECRYPTION_SHARE: Kind.DECRYPTION_SHARE,
}
_COMPACTED = {
    Kind.CIPHERTEXT: Kind.COMPACT_CIPHERTEXT,
    Kind.DECRYPTION_SHARE: Kind.COMPACT_DECRYPTION_SHARE,
}
_ELEMENTS = {
    Kind.COMPACT_CIPHERTEXT: 2,
    Kind.COMPACT_MASKED_CIPHERTEXT: 1,
    Kind.COMPACT_DECRYPTION_SHARE: 1,
}
_HEADER = struct.Struct("<BB")  # shift, width
MAX_WIDTH = 62


def message_shift(params: ParameterSet) -> int:
    """Bits dropped from a share's and a ``c0``'s coefficients: a rounding error of
    standard deviation 2^(shift-1.8), 1/14 of the flooding's, per party."""
    return max(0, math.floor(params.flooding_log2_sigma) - 2)


def _secret_norm_bits(params: ParameterSet, n_parties: int) -> float:
    """log2 of the standard deviation of a coefficient of ``d * s`` per unit of ``d``'s:
    the joint secret is the sum of ``n_parties`` uniform ternary shares (variance 2/3
    each), so a product coefficient sums N terms of variance ``2 n / 3``."""
    return 0.5 * math.log2(params.ring_dim * 2 * n_parties / 3)


def mask_shift(params: ParameterSet, n_parties: int) -> int:
    """Bits dropped from a ``c1``'s coefficients: its rounding error is multiplied by the
    joint secret at decryption, so it drops the secret's norm fewer bits than ``c0``
    and adds at most as much error."""
    return max(0, math.floor(message_shift(params) - _secret_norm_bits(params, n_parties)))


def rounding_error(params: ParameterSet, n_parties: int) -> float:
    """Standard deviation of the slot error that compact forms add to a decrypted sum of
    every party's ciphertext (the counterpart of ``expected_flooding_error``)."""
    uniform = 1 / 12  # variance of a rounding to a unit step
    k0, k1 = message_shift(params), mask_shift(params, n_parties)
    per_coefficient = (
        n_parties
        * uniform
        * (
            2 * 4.0**k0  # c0 and the share
            + 4.0 ** (k1 + _secret_norm_bits(params, n_parties))  # c1 times the secret
        )
    )
    return float(math.sqrt(per_coefficient * params.slots) / 2.0**params.scale_bits)


@dataclass(frozen=True)
class _Compact:
    envelope: Envelope  # blobs: the skeleton, then one (shift, width, bits) per element
    skeleton: bytes
    shifts: tuple[int, ...]
    quotients: tuple[U64, ...]


@nb.njit(nogil=True)  # compiled at first use, like the transforms
def _pack_bits(values: U64, width: int, out: npt.NDArray[np.uint8]) -> None:  # pragma: no cover
    """``values`` (each below 2^width) written in ``width`` bits each, little-endian,
    into ``out`` (zeroed, with 9 bytes to spare)."""
    for j in range(values.size):
        at = j * width
        byte, offset = at >> 3, np.uint64(at & 7)
        v = values[j]
        low = v << offset
        for k in range(8):
            out[byte + k] |= np.uint8((low >> np.uint64(8 * k)) & np.uint64(0xFF))
        if offset and at % 8 + width > 64:
            out[byte + 8] |= np.uint8(v >> (np.uint64(64) - offset))


@nb.njit(nogil=True)
def _unpack_bits(data: npt.NDArray[np.uint8], width: int, out: U64) -> None:  # pragma: no cover
    """The inverse of :func:`_pack_bits` (``data`` with 9 bytes to spare)."""
    mask = (np.uint64(1) << np.uint64(width)) - np.uint64(1)
    for j in range(out.size):
        at = j * width
        byte, offset = at >> 3, np.uint64(at & 7)
        low = np.uint64(0)
        for k in range(8):
            low |= np.uint64(data[byte + k]) << np.uint64(8 * k)
        v = low >> offset
        if offset and at % 8 + width > 64:
            v |= np.uint64(data[byte + 8]) << (np.uint64(64) - offset)
        out[j] = v & mask


def _pack(values: U64, shift: int) -> bytes:
    width = max(1, int(values.max()).bit_length())
    if width > MAX_WIDTH:
        raise SerializationError(f"compact element of {width}-bit quotients (at most {MAX_WIDTH})")
    size = -(-values.size * width // 8)
    out = np.zeros(size + 9, dtype=np.uint8)
    _pack_bits(np.ascontiguousarray(values, dtype=np.uint64), width, out)
    return _HEADER.pack(shift, width) + out[:size].tobytes()


def _unpack(blob: bytes, n: int) -> tuple[int, U64]:
    if len(blob) < _HEADER.size:
        raise SerializationError("compact element: no header")
    shift, width = _HEADER.unpack_from(blob)
    if not 1 <= width <= MAX_WIDTH or shift > 60:
        raise SerializationError(f"compact element: width {width}, shift {shift}")
    size = len(blob) - _HEADER.size
    if size != -(-n * width // 8):
        raise SerializationError(f"compact element: {size} bytes for {n} quotients of {width} bits")
    data = np.zeros(size + 9, dtype=np.uint8)
    data[:size] = np.frombuffer(blob, dtype=np.uint8, offset=_HEADER.size)
    values = np.empty(n, dtype=np.uint64)
    _unpack_bits(data, width, values)
    return shift, values


def _read(ctx: Context, data: bytes, kind: Kind) -> _Compact:
    params = ctx.params
    env = Envelope.unpack(data, kind, params.fingerprint)
    if len(env.blobs) != 1 + _ELEMENTS[kind]:
        raise SerializationError(f"{kind.name.lower()}: {len(env.blobs) - 1} elements")
    shifts, quotients = zip(*(_unpack(b, params.ring_dim) for b in env.blobs[1:]), strict=True)
    return _Compact(env, env.blobs[0], tuple(shifts), tuple(quotients))


def _ntt(params: ParameterSet, modulus: int) -> TowerNTT:
    return tower_ntt(params.ring_dim, modulus, _backend.root_of_unity(params, modulus))


def _one_tower(params: ParameterSet, skeleton: bytes, elements: int) -> int:
    """The modulus of a skeleton of ``elements`` ring elements of one tower each."""
    regions = _backend.skeleton_regions("ciphertext", skeleton, params)
    moduli = {q for _, q in regions}
    if len(regions) != elements or len(moduli) != 1:
        raise SerializationError(
            f"compact forms hold one RNS tower per element: {len(regions)} tower regions for "
            f"{elements} elements"
        )
    return moduli.pop()


def compact(ctx: Context, data: bytes, shifts: tuple[int, ...]) -> bytes:
    """The compact form of a serialized one-tower ciphertext (``shifts``: for c0 and c1)
    or decryption share (one shift): each element in coefficient form, rounded."""
    params = ctx.params
    kind = Envelope.kind_of(data)
    if kind not in _COMPACTED:
        raise SerializationError(f"cannot compact a {kind.name.lower()}")
    env = Envelope.unpack(data, kind, params.fingerprint)
    if len(env.blobs) != 1:
        raise SerializationError(f"{kind.name.lower()}: expected one payload")
    skeleton, regions = _backend.split_coefficients("ciphertext", env.blobs[0], params)
    if len(regions) != len(shifts) or len({q for q, _ in regions}) != 1:
        raise SerializationError(
            f"compact forms hold one RNS tower per element: {len(regions)} tower regions "
            f"for {len(shifts)} elements (a ciphertext above the last level?)"
        )
    coefficients = _ntt(params, regions[0][0]).inverse(np.stack([v for _, v in regions]))
    blobs = [skeleton]
    for x, shift in zip(coefficients, shifts, strict=True):
        half = np.uint64((1 << shift) >> 1)
        blobs.append(_pack((x + half) >> np.uint64(shift), shift))
    out = _COMPACTED[kind]
    return Envelope(
        out, params.fingerprint, env.n_parties, env.parties, env.subject, tuple(blobs)
    ).pack()


def _coefficients(modulus: int, shift: int, quotients: U64) -> U64:
    """``quotients * 2^shift mod q``: the element a compact one stands for."""
    return times(quotients, pow(2, shift, modulus), modulus)


def expand(ctx: Context, data: bytes) -> bytes:
    """OpenFHE's serialized object a compact form stands for: a ciphertext, the
    ciphertext ``(0, c1)`` of a masked one, or a decryption share (read strictly)."""
    params = ctx.params
    kind = Envelope.kind_of(data)
    if kind not in _EXPANDED:
        raise SerializationError(f"not a compact form: {kind.name.lower()}")
    c = _read(ctx, data, kind)
    elements = 2 if kind is Kind.COMPACT_MASKED_CIPHERTEXT else len(c.quotients)
    modulus = _one_tower(params, c.skeleton, elements)
    rows = [_coefficients(modulus, k, r) for k, r in zip(c.shifts, c.quotients, strict=True)]
    values = list(_ntt(params, modulus).forward(np.stack(rows)))
    if kind is Kind.COMPACT_MASKED_CIPHERTEXT:
        values.insert(0, np.zeros(params.ring_dim, dtype=np.uint64))
    payload = _backend.join_coefficients("ciphertext", c.skeleton, values, params)
    e = c.envelope
    return Envelope(
        _EXPANDED[kind], params.fingerprint, e.n_parties, e.parties, e.subject, (payload,)
    ).pack()


def add(ctx: Context, a: bytes, b: bytes) -> bytes:
    """The sum of two compact forms of the same kind, shape and shifts: their quotients
    added as integers (exact; shares' parties and subjects are checked by the caller)."""
    kind = Envelope.kind_of(a)
    if kind not in _ELEMENTS:
        raise SerializationError(f"not a compact form: {kind.name.lower()}")
    x, y = _read(ctx, a, kind), _read(ctx, b, kind)
    if x.skeleton != y.skeleton or x.shifts != y.shifts:
        raise SerializationError(
            f"adding {kind.name.lower()}s of different shapes, levels or roundings"
        )
    blobs = [x.skeleton]
    for shift, p, r in zip(x.shifts, x.quotients, y.quotients, strict=True):
        blobs.append(_pack(p + r, shift))  # below 2^63: each is at most 62 bits wide
    e, f = x.envelope, y.envelope
    return Envelope(
        kind, e.fingerprint, e.n_parties, e.parties | f.parties, e.subject, tuple(blobs)
    ).pack()


def masked(ctx: Context, data: bytes) -> bytes:
    """A compact ciphertext without its c0: all a party's decryption share depends on."""
    c = _read(ctx, data, Kind.COMPACT_CIPHERTEXT)
    blobs = (c.skeleton, c.envelope.blobs[2])
    return Envelope(Kind.COMPACT_MASKED_CIPHERTEXT, ctx.params.fingerprint, blobs=blobs).pack()


def mask_digest(ctx: Context, data: bytes) -> bytes:
    """SHA-256 of the ``c1`` a ciphertext decrypts with (its modulus and coefficients, blind
    to metadata as a party's flooding cache is), the same for a compact ciphertext, its
    masked form, and OpenFHE's serialized ciphertext it expands to or any relabelling of
    it: what a node compares to refuse decrypting an individual update."""
    params = ctx.params
    kind = Envelope.kind_of(data)
    if kind in (Kind.COMPACT_CIPHERTEXT, Kind.COMPACT_MASKED_CIPHERTEXT):
        c = _read(ctx, data, kind)
        modulus = _one_tower(params, c.skeleton, 2)
        c1 = _coefficients(modulus, c.shifts[-1], c.quotients[-1])
    else:
        (payload,) = Envelope.unpack(data, Kind.CIPHERTEXT, params.fingerprint).blobs
        _, regions = _backend.split_coefficients("ciphertext", payload, params)
        if len(regions) != 2 or regions[0][0] != regions[1][0]:
            raise SerializationError("not a two-element ciphertext of one tower")
        modulus, values = regions[1]
        c1 = _ntt(params, modulus).inverse(values)[0]
    return hashlib.sha256(modulus.to_bytes(8, "little") + c1.astype("<u8").tobytes()).digest()
