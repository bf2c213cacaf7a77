"""Evaluation on ciphertexts with public material only: encode, encrypt, add, multiply,
rescale, rotate, and level introspection.

A process that holds a :class:`Context`, the joint public key and the evaluation keys can
compute on ciphertexts; it never needs a secret share.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from phe_fl.errors import KeyMismatchError, LevelError, ParameterError, SerializationError
from phe_fl.mhe import _backend
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Envelope, Kind, digest
from phe_fl.mhe.params import ParameterSet

if TYPE_CHECKING:
    from phe_fl.mhe.keys import JointPublicKey, QuerierPublicKey

__all__ = [
    "Context",
    "Ciphertext",
    "FloatArray",
    "MAX_ROTATION_KEYS",
    "largest_message_bytes",
    "ciphertext_bytes",
]

MAX_ROTATION_KEYS = 128
"""Rotation steps one key generation may ask for: a GLM needs about 2 log2(slots), and
the bound keeps the largest protocol message (that round's shares) to a size a node can
check before it buffers it (:func:`largest_message_bytes`)."""


def ciphertext_bytes(params: ParameterSet) -> int:
    """OpenFHE bytes of a fresh ciphertext of ``params`` (the largest ciphertext)."""
    return _backend.object_bytes(params)["ciphertext"]


def largest_message_bytes(params: ParameterSet) -> int:
    """The most payload bytes one protocol step of ``params`` can legitimately carry.

    The rotation-key round dominates (at most :data:`MAX_ROTATION_KEYS` key-switching
    keys in a share); a relinearization share is a few key-switching keys and every other
    step a few ciphertexts, counted generously. A transport refuses a message that
    declares more before it buffers it. Sizes are learned from local objects (one key
    generation per process and parameter set, shared with payload validation).
    """
    sizes = _backend.object_bytes(params)
    keys = (MAX_ROTATION_KEYS + 4) * sizes["eval_key"]
    return keys + 64 * sizes["ciphertext"] + 4 * sizes["public_key"] + (1 << 20)


FloatArray = npt.NDArray[np.float64]

Values = Sequence[float] | FloatArray


class Ciphertext:
    """A CKKS ciphertext bound to its parameter set; immutable from the caller's side."""

    __slots__ = ("_ct", "_ctx", "_bytes", "_digest", "_content_digest")

    def __init__(self, ctx: Context, raw: Any, *, data: bytes | None = None) -> None:
        self._ctx = ctx
        self._ct = raw
        self._bytes = data
        self._digest: bytes | None = None
        self._content_digest: bytes | None = None

    @property
    def context(self) -> Context:
        return self._ctx

    @property
    def level(self) -> int:
        """Rescalings applied so far (0 for a fresh ciphertext)."""
        return int(self._ct.GetLevel())

    @property
    def levels_left(self) -> int:
        """Multiplications (each followed by a rescale) still possible."""
        return self._ctx.params.mult_depth - self.level

    @property
    def scale_degree(self) -> int:
        """Power of the scaling factor the message carries (2 after a multiplication)."""
        return int(self._ct.GetNoiseScaleDeg())

    @property
    def scaling_factor(self) -> float:
        return float(self._ct.GetScalingFactor())

    @property
    def key_tag(self) -> str:
        return str(self._ct.GetKeyTag())

    @property
    def size(self) -> int:
        """Number of ring elements (2 after relinearization)."""
        return int(self._ct.NumberCiphertextElements())

    def to_bytes(self) -> bytes:
        if self._bytes is None:
            payload = _backend.dump(self._ct)
            self._bytes = Envelope(
                Kind.CIPHERTEXT, self._ctx.params.fingerprint, blobs=(payload,)
            ).pack()
        return self._bytes

    @property
    def digest(self) -> bytes:
        """SHA-256 of the serialized ciphertext: what shares about it are bound to."""
        if self._digest is None:
            self._digest = digest(self.to_bytes())
        return self._digest

    @property
    def content_digest(self) -> bytes:
        """Digest of the ring elements alone, blind to metadata (key tag, level, scale).

        A party's partial decryption depends only on the elements: this is what its
        flooding cache is keyed by, so re-labelling a ciphertext buys no fresh noise.
        """
        if self._content_digest is not None:
            return self._content_digest
        with openfhe_errors("canonicalizing a ciphertext"):
            canon = self._ct.Clone()
            canon.SetKeyTag("")
            canon.SetScalingFactor(1.0)
            canon.SetNoiseScaleDeg(1)
            canon.SetLevel(0)
            canon.SetSlots(1)
            canon.SetHopLevel(0)
        self._content_digest = digest(_backend.dump(canon))
        return self._content_digest

    def __repr__(self) -> str:
        return (
            f"Ciphertext(params={self._ctx.params.name!r}, level={self.level}, "
            f"scale_degree={self.scale_degree}, key_tag={self.key_tag[:12]!r})"
        )


class Context:
    """Public-material evaluator for one parameter set.

    All multiplications relinearize with the joint relinearization key registered by
    :meth:`phe_fl.mhe.RelinKey.install`; rotations use installed rotation keys.
    """

    def __init__(self, params: ParameterSet) -> None:
        self.params = params
        self.cc = _backend.build_context(params)

    @property
    def slots(self) -> int:
        return self.params.slots

    # -- encoding ------------------------------------------------------------------------
    def _vector(self, values: Values) -> FloatArray:
        arr = np.asarray(values, dtype=np.float64).ravel()
        if arr.size > self.slots:
            raise ParameterError(
                f"{arr.size} values do not fit the {self.slots} slots of {self.params.name!r}"
            )
        if not np.all(np.isfinite(arr)):
            raise ParameterError("values to encode contain NaN or infinity")
        return arr

    def encode(self, values: Values, *, level: int = 0, scale_degree: int = 1) -> Any:
        """An OpenFHE plaintext at ``level`` (rescalings applied) and scale degree."""
        arr = self._vector(values)
        with openfhe_errors("encoding"):
            return self.cc.MakeCKKSPackedPlaintext(arr, scale_degree, level)

    def encrypt(
        self, values: Values, key: JointPublicKey | QuerierPublicKey, *, level: int = 0
    ) -> Ciphertext:
        """Encrypt ``values`` (zero-padded to all slots) under a public key."""
        key.check_context(self)
        if not 0 <= level < self.params.mult_depth:
            raise LevelError(f"cannot encrypt at level {level} of {self.params.mult_depth}")
        pt = self.encode(values, level=level)
        with openfhe_errors("encryption"):
            return Ciphertext(self, self.cc.Encrypt(key.raw, pt))

    # -- (de)serialization ---------------------------------------------------------------
    def ciphertext_from_bytes(self, data: bytes) -> Ciphertext:
        env = Envelope.unpack(data, Kind.CIPHERTEXT, self.params.fingerprint)
        (payload,) = _single(env)
        raw = _backend.load("ciphertext", payload, self.params)  # validated, then parsed
        if raw.NumberCiphertextElements() not in (2, 3):
            raise SerializationError(
                f"ciphertext: {raw.NumberCiphertextElements()} ring elements (expected 2 or 3)"
            )
        if raw.NumberCiphertextElements() == 2:
            with openfhe_errors("loading a ciphertext"):
                raw = _backend.rehome(self.cc, self.params, raw)
        return Ciphertext(self, raw, data=bytes(data))

    def own(self, ct: Ciphertext) -> Ciphertext:
        """Check ``ct`` belongs to this parameter set and return it."""
        if not isinstance(ct, Ciphertext):
            raise TypeError(f"expected a Ciphertext, got {type(ct).__name__}")
        if ct.context.params.fingerprint != self.params.fingerprint:
            raise KeyMismatchError(
                f"ciphertext of parameter set {ct.context.params.name!r} given to a "
                f"{self.params.name!r} context"
            )
        return ct

    # -- arithmetic ----------------------------------------------------------------------
    def _pair(self, a: Ciphertext, b: Ciphertext) -> None:
        self.own(a)
        self.own(b)
        if a.key_tag != b.key_tag:
            raise KeyMismatchError("ciphertexts are encrypted under different keys")

    def add(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        self._pair(a, b)
        with openfhe_errors("addition"):
            return Ciphertext(self, self.cc.EvalAdd(a._ct, b._ct))

    def sum(self, cts: Sequence[Ciphertext]) -> Ciphertext:
        """The sum of one or more ciphertexts (COMBINE)."""
        if not cts:
            raise ParameterError("nothing to sum")
        total = cts[0]
        for ct in cts[1:]:
            total = self.add(total, ct)
        return total

    def sub(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        self._pair(a, b)
        with openfhe_errors("subtraction"):
            return Ciphertext(self, self.cc.EvalSub(a._ct, b._ct))

    def negate(self, a: Ciphertext) -> Ciphertext:
        self.own(a)
        with openfhe_errors("negation"):
            return Ciphertext(self, self.cc.EvalNegate(a._ct))

    def add_plain(self, a: Ciphertext, values: Values | float) -> Ciphertext:
        """Add a plaintext vector (or a scalar to every slot)."""
        self.own(a)
        if np.isscalar(values):
            with openfhe_errors("scalar addition"):
                return Ciphertext(self, self.cc.EvalAdd(a._ct, float(values)))  # type: ignore[arg-type]
        pt = self.encode(values, level=a.level, scale_degree=a.scale_degree)  # type: ignore[arg-type]
        with openfhe_errors("plaintext addition"):
            return Ciphertext(self, self.cc.EvalAdd(a._ct, pt))

    def mul_plain(self, a: Ciphertext, values: Values | float) -> Ciphertext:
        """Multiply by a plaintext vector (or a scalar); the result needs a rescale."""
        self.own(a)
        self._need_level(a, "plaintext multiplication")
        if np.isscalar(values):
            with openfhe_errors("scalar multiplication"):
                return Ciphertext(self, self.cc.EvalMult(a._ct, float(values)))  # type: ignore[arg-type]
        pt = self.encode(values, level=a.level)  # type: ignore[arg-type]
        with openfhe_errors("plaintext multiplication"):
            return Ciphertext(self, self.cc.EvalMult(a._ct, pt))

    def mul(self, a: Ciphertext, b: Ciphertext) -> Ciphertext:
        """Multiply and relinearize; the result needs a rescale."""
        self._pair(a, b)
        self._need_level(a, "multiplication")
        self._need_level(b, "multiplication")
        with openfhe_errors("multiplication (is the joint relinearization key installed?)"):
            return Ciphertext(self, self.cc.EvalMult(a._ct, b._ct))

    def rescale(self, a: Ciphertext) -> Ciphertext:
        self.own(a)
        if a.scale_degree < 2:
            raise LevelError("rescale needs a ciphertext fresh from a multiplication")
        with openfhe_errors("rescale"):
            return Ciphertext(self, self.cc.Rescale(a._ct))

    def rotate(self, a: Ciphertext, steps: int) -> Ciphertext:
        """Rotate slots left by ``steps`` (negative: right); needs that rotation key."""
        self.own(a)
        with openfhe_errors(f"rotation by {steps} (is its rotation key installed?)"):
            return Ciphertext(self, self.cc.EvalRotate(a._ct, int(steps)))

    def drop_levels(self, a: Ciphertext, levels_left: int) -> Ciphertext:
        """The same ciphertext with only ``levels_left`` levels left (OpenFHE's LevelReduce).

        Dropping levels removes RNS towers without touching the message or the key tag,
        so the copy decrypts to the same values and serializes smaller (one tower fewer
        per level): send a ciphertext at the lowest level its receiver needs. Levels
        cannot be added back; asking for more than ``a`` has raises :class:`LevelError`.
        """
        self.own(a)
        have = a.levels_left
        if not 0 <= levels_left <= have:
            raise LevelError(
                f"cannot keep {levels_left} levels of a ciphertext that has {have} left"
            )
        if a.scale_degree != 1:
            raise LevelError("drop levels of a rescaled ciphertext (scale degree 1) only")
        if levels_left == have:
            return a
        with openfhe_errors("dropping levels"):
            return Ciphertext(self, self.cc.LevelReduce(a._ct, None, have - levels_left))

    def _need_level(self, a: Ciphertext, action: str) -> None:
        if a.levels_left < 1:
            raise LevelError(f"{action}: ciphertext has no level left; refresh it first")


def _single(env: Envelope) -> tuple[bytes]:
    if len(env.blobs) != 1:
        raise SerializationError(f"{env.kind.name.lower()}: expected one payload")
    return (env.blobs[0],)
