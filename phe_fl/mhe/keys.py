"""Key material: a party's secret share, the joint keys, and a querier's own key pair.

Secret objects never print their contents (their ``repr`` is redacted) and serialize only
for storage on their owner's disk.
"""

from __future__ import annotations

import struct
import threading
from typing import Any, ClassVar

import numpy as np

from phe_fl.errors import KeyMismatchError, ParameterError, SerializationError
from phe_fl.mhe import _backend
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Envelope, Kind, digest
from phe_fl.mhe.context import Ciphertext, Context, FloatArray

__all__ = [
    "SecretShare",
    "JointPublicKey",
    "RelinKey",
    "RotationKeys",
    "QuerierPublicKey",
    "QuerierKeyPair",
    "release",
]


# OpenFHE keeps relinearization keys in a process-wide map and refuses to replace one.
_installed_relin: dict[str, RelinKey] = {}


def _relin_present(ctx: Context, tag: str) -> bool:
    try:
        return bool(ctx.cc.GetEvalMultKeyVector(tag))
    except RuntimeError:
        return False


def release(values: FloatArray, decimals: int) -> FloatArray:
    """Round decrypted values to the declared precision before anyone sees them."""
    if not 0 <= decimals <= 12:
        raise ParameterError(f"decimals must be in 0..12, got {decimals}")
    return np.round(values, decimals)


class _KeyObject:
    """Shared plumbing: a raw OpenFHE object bound to a context, cached bytes."""

    KIND: Kind
    LOADER: str
    KEEP_BYTES: ClassVar[bool] = True
    """Evaluation keys set this False: a node installs them once and keeps them in its
    state store, and their bytes (25 MB a key at 2^15) would double what it holds."""

    def __init__(self, ctx: Context, raw: Any, *, data: bytes | None = None) -> None:
        self.ctx = ctx
        self.raw = raw
        self._bytes = data if self.KEEP_BYTES else None
        self._digest: bytes | None = None

    def check_context(self, ctx: Context) -> None:
        if ctx.params.fingerprint != self.ctx.params.fingerprint:
            raise KeyMismatchError(
                f"{type(self).__name__} of parameter set {self.ctx.params.name!r} used with "
                f"{ctx.params.name!r}"
            )

    def _extra_blobs(self) -> tuple[bytes, ...]:
        return ()

    def _envelope(self) -> Envelope:
        return Envelope(
            self.KIND,
            self.ctx.params.fingerprint,
            blobs=(_backend.dump(self.raw), *self._extra_blobs()),
        )

    def to_bytes(self) -> bytes:
        if self._bytes is not None:
            return self._bytes
        data = self._envelope().pack()
        if self.KEEP_BYTES:
            self._bytes = data
        return data

    @classmethod
    def _unpack(cls, ctx: Context, data: bytes, n_blobs: int = 1) -> tuple[Envelope, Any]:
        env = Envelope.unpack(data, cls.KIND, ctx.params.fingerprint)
        if len(env.blobs) != n_blobs:
            raise SerializationError(
                f"{cls.__name__}: expected {n_blobs} payloads, got {len(env.blobs)}"
            )
        return env, _backend.load(cls.LOADER, env.blobs[0], ctx.params)


class SecretShare(_KeyObject):
    """Party ``index``'s share of the collective secret key. Never leaves its owner."""

    KIND = Kind.SECRET_SHARE
    LOADER = "private_key"

    def __init__(
        self, ctx: Context, raw: Any, index: int, n_parties: int, *, data: bytes | None = None
    ) -> None:
        super().__init__(ctx, raw, data=data)
        if not 0 <= index < n_parties:
            raise ParameterError(f"party index {index} outside 0..{n_parties - 1}")
        self.index = index
        self.n_parties = n_parties
        self._towers: list[_backend.Tower] | None = None
        self._towers_lock = threading.Lock()

    @property
    def is_lead(self) -> bool:
        return self.index == 0

    def towers(self) -> list[_backend.Tower]:
        """The share's RNS towers with their Shoup factors, for partial decryptions
        computed on serialized ciphertexts (read once, kept with the share)."""
        with self._towers_lock:
            if self._towers is None:
                self._towers = _backend.towers_of(
                    "private_key", _backend.dump(self.raw), self.ctx.params
                )
            return self._towers

    def _envelope(self) -> Envelope:
        return Envelope(
            self.KIND,
            self.ctx.params.fingerprint,
            self.n_parties,
            frozenset({self.index}),
            blobs=(_backend.dump(self.raw),),
        )

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> SecretShare:
        env, raw = cls._unpack(ctx, data)
        if len(env.parties) != 1:
            raise SerializationError("secret share must name exactly one party")
        (index,) = env.parties
        return cls(ctx, raw, index, env.n_parties, data=bytes(data))

    def __repr__(self) -> str:
        return (
            f"SecretShare(party={self.index}/{self.n_parties}, "
            f"params={self.ctx.params.name!r}, <redacted>)"
        )

    __str__ = __repr__


class JointPublicKey(_KeyObject):
    """The collective public key: anyone may encrypt under it, nobody alone can decrypt."""

    KIND = Kind.JOINT_PUBLIC_KEY
    LOADER = "public_key"

    @property
    def key_tag(self) -> str:
        return str(self.raw.GetKeyTag())

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> JointPublicKey:
        _, raw = cls._unpack(ctx, data)
        return cls(ctx, raw, data=bytes(data))

    def __repr__(self) -> str:
        return f"JointPublicKey(params={self.ctx.params.name!r}, tag={self.key_tag[:16]!r})"


class RelinKey(_KeyObject):
    """The collective relinearization key; :meth:`install` makes ``Context.mul`` work."""

    KIND = Kind.RELIN_KEY
    LOADER = "eval_key"
    KEEP_BYTES = False

    @property
    def key_tag(self) -> str:
        return str(self.raw.GetKeyTag())

    def install(self) -> None:
        """Register the key for ``Context.mul``; installing the same key again is a no-op
        (a retried delivery), a different key under the same joint tag is refused."""
        known = _installed_relin.get(self.key_tag)
        if known is not None and not _relin_present(self.ctx, self.key_tag):
            known = None  # OpenFHE's maps were cleared behind our back: install again
        if known is not None:  # compare the keys' bytes only when a second one arrives
            if known is self or known.to_bytes() == self.to_bytes():
                return
            raise KeyMismatchError(
                "another relinearization key is already installed for this joint key"
            )
        with openfhe_errors("installing the relinearization key"):
            self.ctx.cc.InsertEvalMultKey([self.raw], self.key_tag)
        _installed_relin[self.key_tag] = self

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> RelinKey:
        _, raw = cls._unpack(ctx, data)
        return cls(ctx, raw, data=bytes(data))


class RotationKeys(_KeyObject):
    """Collective rotation keys for an explicit list of rotation steps.

    :meth:`install` replaces any rotation keys installed before under the same joint key:
    generate every step a computation needs in one protocol run.
    """

    KIND = Kind.ROTATION_KEYS
    LOADER = "eval_key_map"
    KEEP_BYTES = False

    def __init__(
        self,
        ctx: Context,
        raw: Any,
        indices: tuple[int, ...],
        key_tag: str,
        *,
        data: bytes | None = None,
    ) -> None:
        super().__init__(ctx, raw, data=data)
        self.indices = indices
        self.key_tag = key_tag

    def _extra_blobs(self) -> tuple[bytes, ...]:
        return (encode_indices(self.indices), self.key_tag.encode())

    def install(self) -> None:
        with openfhe_errors("installing rotation keys"):
            self.ctx.cc.InsertEvalAutomorphismKey(self.raw, self.key_tag)

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> RotationKeys:
        env, raw = cls._unpack(ctx, data, n_blobs=3)
        try:
            tag = env.blobs[2].decode("ascii")
        except UnicodeDecodeError:
            raise SerializationError("rotation keys: key tag is not ASCII") from None
        return cls(ctx, raw, decode_indices(env.blobs[1]), tag, data=bytes(data))


class QuerierPublicKey(_KeyObject):
    """A querier's own public key, sent to the data providers with each query."""

    KIND = Kind.QUERIER_PUBLIC_KEY
    LOADER = "public_key"

    @property
    def key_tag(self) -> str:
        return str(self.raw.GetKeyTag())

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = digest(self.to_bytes())
        return self._digest

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> QuerierPublicKey:
        _, raw = cls._unpack(ctx, data)
        return cls(ctx, raw, data=bytes(data))


class QuerierKeyPair:
    """A querier's single-key pair in the federation's parameter context.

    Results key-switched to :attr:`public_key` are readable by this querier alone.
    """

    def __init__(self, ctx: Context, public_key: QuerierPublicKey, secret_raw: Any) -> None:
        self.ctx = ctx
        self.public_key = public_key
        self._secret = secret_raw

    @classmethod
    def generate(cls, ctx: Context) -> QuerierKeyPair:
        with openfhe_errors("querier key generation"):
            kp = ctx.cc.KeyGen()
        return cls(ctx, QuerierPublicKey(ctx, kp.publicKey), kp.secretKey)

    def decrypt(
        self, ct: Ciphertext, *, length: int | None = None, decimals: int | None = None
    ) -> FloatArray:
        """Decrypt a result switched to this querier's key, rounded to the release precision."""
        self.ctx.own(ct)
        if ct.key_tag != self.public_key.key_tag:
            raise KeyMismatchError("ciphertext was not switched to this querier's key")
        with openfhe_errors("querier decryption"):
            pt = self.ctx.cc.Decrypt(self._secret, ct._ct)
        values = np.asarray(pt.GetRealPackedValue(), dtype=np.float64)
        if length is not None:
            values = values[:length]
        return release(values, self.ctx.params.release_decimals if decimals is None else decimals)

    def to_bytes(self) -> bytes:
        """Both halves, for the querier's own disk."""
        return Envelope(
            Kind.QUERIER_SECRET_KEY,
            self.ctx.params.fingerprint,
            blobs=(_backend.dump(self._secret), self.public_key.to_bytes()),
        ).pack()

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> QuerierKeyPair:
        env = Envelope.unpack(data, Kind.QUERIER_SECRET_KEY, ctx.params.fingerprint)
        if len(env.blobs) != 2:
            raise SerializationError("querier key pair: expected 2 payloads")
        secret = _backend.load("private_key", env.blobs[0], ctx.params)
        return cls(ctx, QuerierPublicKey.from_bytes(ctx, env.blobs[1]), secret)

    def __repr__(self) -> str:
        return f"QuerierKeyPair(params={self.ctx.params.name!r}, <secret redacted>)"


def encode_indices(indices: tuple[int, ...]) -> bytes:
    return struct.pack(f">H{len(indices)}i", len(indices), *indices)


def decode_indices(data: bytes) -> tuple[int, ...]:
    try:
        (count,) = struct.unpack_from(">H", data)
        values = struct.unpack_from(f">{count}i", data, 2)
    except struct.error:
        raise SerializationError("rotation index list is malformed") from None
    if len(data) != 2 + 4 * count:
        raise SerializationError("rotation index list has trailing bytes")
    return tuple(values)
