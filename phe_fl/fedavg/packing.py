"""Model updates as ciphertexts: a flat float32 vector cut into chunks, two reals per complex
slot, encrypted at the last level (aggregation only adds, so no level is kept for
multiplications: one RNS tower) and sent in compact form (:mod:`phe_fl.mhe.compact`:
each coefficient rounded below the flooding noise, about 10.6 bytes per parameter at 2^15
and 8 parties where OpenFHE writes 16).

A chunk holds ``2 * slots`` parameters: the first half in the real parts, the second in the
imaginary parts. Every node encrypts the same chunk indices of its own weighted update;
the sums are threshold-decrypted with each party's flooding noise, so a released value is
rounded to the precision the flooding leaves (:func:`release_decimals`). Every function
here takes and returns compact forms: what travels is what is added, digested and fused.
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt

from phe_fl.errors import AppError, ParameterError, ProtocolError
from phe_fl.mhe import (
    Ciphertext,
    Context,
    JointPublicKey,
    ParameterSet,
    Party,
    ThresholdDecrypt,
    compact,
)
from phe_fl.mhe._backend import openfhe_errors

__all__ = [
    "TensorSpec",
    "Layout",
    "chunk_size",
    "n_chunks",
    "encrypt_chunks",
    "add_updates",
    "masked",
    "mask_digest",
    "share_chunk",
    "add_shares",
    "fuse_chunk",
    "release_decimals",
    "values_digest",
    "parallel",
    "MAX_UPDATE",
    "CHUNKS_PER_STEP",
]

Vector = npt.NDArray[np.float32]
T = TypeVar("T")
R = TypeVar("R")

CHUNKS_PER_STEP = 16
"""Ciphertexts one update or decryption step carries (8 MiB at 2^15): a model of any size
streams through the tree in messages of bounded size."""
MAX_UPDATE = 64.0
"""Largest |value| of a weighted update a node encrypts: the last level's one tower holds
about 2^9 at a 50-bit scale, and the sum of every party's must fit too."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class Layout:
    """The tensors of a model, in the order of its flat parameter vector."""

    tensors: tuple[TensorSpec, ...]

    @property
    def size(self) -> int:
        return sum(t.size for t in self.tensors)

    def digest(self) -> str:
        """SHA-256 (hex) of names and shapes: nodes whose models differ are refused."""
        text = ";".join(f"{t.name}:{'x'.join(map(str, t.shape))}" for t in self.tensors)
        return hashlib.sha256(text.encode()).hexdigest()

    def split(self, vector: Vector) -> dict[str, Vector]:
        """The flat vector as named arrays of their shapes."""
        if vector.size != self.size:
            raise ParameterError(f"{vector.size} values for a model of {self.size} parameters")
        out: dict[str, Vector] = {}
        offset = 0
        for t in self.tensors:
            out[t.name] = vector[offset : offset + t.size].reshape(t.shape)
            offset += t.size
        return out


def chunk_size(params: ParameterSet) -> int:
    """Parameters per ciphertext: two per complex slot."""
    return 2 * params.slots


def n_chunks(n_parameters: int, params: ParameterSet) -> int:
    return max(1, -(-n_parameters // chunk_size(params)))


def values_digest(values: Vector) -> bytes:
    """SHA-256 of a float32 vector's little-endian bytes (what a node trains from)."""
    return hashlib.sha256(np.ascontiguousarray(values, dtype="<f4").tobytes()).digest()


def release_decimals(params: ParameterSet, n_parties: int) -> int:
    """Decimals a decrypted sum is rounded to: what the parties' flooding noise and the
    compact forms' rounding leave meaningful (never fewer than the parameter set's own
    release precision)."""
    error = math.hypot(
        params.expected_flooding_error(n_parties), compact.rounding_error(params, n_parties)
    )
    return max(params.release_decimals, min(12, math.floor(-math.log10(error))))


def parallel(work: Callable[[T], R], items: Sequence[T], threads: int = 0) -> list[R]:
    """``work`` on every item, on ``threads`` threads (0: every core this process may
    use): OpenFHE's heavy calls release the GIL."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    workers = min(len(items), threads or cores or 1)
    if workers <= 1:
        return [work(x) for x in items]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="fedavg") as pool:
        return list(pool.map(work, items))


def encrypt_chunks(
    ctx: Context,
    key: JointPublicKey,
    update: Vector,
    first: int,
    count: int,
    *,
    n_parties: int,
    threads: int = 0,
) -> list[bytes]:
    """Chunks ``first .. first+count-1`` of ``update`` encrypted at the last level, in
    compact form for a federation of ``n_parties``, in parallel (OpenFHE's encryption
    and the transforms release the GIL); ``threads`` 0: every core."""
    params = ctx.params
    size = chunk_size(params)
    total = n_chunks(update.size, params)
    if not (0 <= first and 1 <= count <= CHUNKS_PER_STEP and first + count <= total):
        raise ProtocolError(
            f"chunks {first}..{first + count - 1} of an update of {total} chunks "
            f"(at most {CHUNKS_PER_STEP} per step)"
        )
    key.check_context(ctx)
    half = params.slots
    shifts = (compact.message_shift(params), compact.mask_shift(params, n_parties))

    def one(index: int) -> bytes:
        part = np.zeros(size, dtype=np.float64)
        piece = update[index * size : (index + 1) * size]
        part[: piece.size] = piece
        packed = part[:half] + 1j * part[half:]
        with openfhe_errors("encrypting an update"):
            pt = ctx.cc.MakeCKKSPackedPlaintext(packed, 1, params.mult_depth)
            ct = ctx.cc.Encrypt(key.raw, pt)
        return compact.compact(ctx, Ciphertext(ctx, ct).to_bytes(), shifts)

    return parallel(one, range(first, first + count), threads)


def add_updates(ctx: Context, a: bytes, b: bytes) -> bytes:
    """The sum of two compact encrypted chunks (exact: their quotients add)."""
    return compact.add(ctx, a, b)


def masked(ctx: Context, ct: bytes) -> bytes:
    """A compact chunk without its c0: what every party receives to decrypt the sum."""
    return compact.masked(ctx, ct)


def mask_digest(ctx: Context, data: bytes) -> str:
    """SHA-256 (hex) of what a decryption of ``data`` (a compact chunk, its masked form or
    OpenFHE's ciphertext) depends on: the aggregate guard compares these."""
    return compact.mask_digest(ctx, data).hex()


def share_chunk(ctx: Context, party: Party, masked_ct: bytes) -> bytes:
    """``party``'s flooded decryption share of a masked compact chunk, compact (drawn once
    per ciphertext: ``Party`` keeps it)."""
    ct = ctx.ciphertext_from_bytes(compact.expand(ctx, masked_ct))
    share = party.decryption_share(ct).to_bytes()
    return compact.compact(ctx, share, (compact.message_shift(ctx.params),))


def add_shares(ctx: Context, a: bytes, b: bytes) -> bytes:
    """The sum of two compact decryption shares of one chunk (no party twice)."""
    return ThresholdDecrypt(ctx).aggregate_compact(a, b)


def fuse_chunk(ctx: Context, share: bytes, ct: bytes, *, decimals: int) -> npt.NDArray[np.float64]:
    """One summed chunk's ``2 * slots`` reals, rounded to ``decimals``, from the complete
    compact share of its masked form (the parties shared ``c1`` only) and the compact
    sum."""
    z = ThresholdDecrypt(ctx).fuse_masked(compact.expand(ctx, share), compact.expand(ctx, ct))
    return np.round(np.concatenate([z.real, z.imag]), decimals)


def check_update(update: Vector, layout: Layout, who: str) -> None:
    """Refuse an update the last level cannot carry, naming its tensor."""
    offset = 0
    for t in layout.tensors:
        part = update[offset : offset + t.size]
        offset += t.size
        if part.size and not np.all(np.isfinite(part)):
            raise AppError(f"{who}: the update of tensor {t.name!r} is not finite")
        peak = float(np.max(np.abs(part))) if part.size else 0.0
        if peak > MAX_UPDATE:
            raise AppError(
                f"{who}: the update of tensor {t.name!r} reaches {peak:.3g}, more "
                f"than the {MAX_UPDATE:g} an encrypted update can carry (lower the "
                "learning rate or the local epochs)"
            )
