"""The one module that imports OpenFHE: context construction, (de)serialization and
translation of its exceptions into the phe-fl tree.

OpenFHE keeps evaluation keys in process-wide maps keyed by key tag and caches contexts
with equal parameters, so every :class:`Context` built from one parameter set in a process
shares one OpenFHE context.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import openfhe as ofhe

from phe_fl.errors import CryptoError, ParameterError, SerializationError
from phe_fl.mhe.params import ParameterSet

__all__ = ["ofhe", "build_context", "openfhe_errors", "dump", "load", "LOADERS"]

_FEATURES = ("PKE", "KEYSWITCH", "LEVELEDSHE", "ADVANCEDSHE", "MULTIPARTY")
_contexts: dict[bytes, Any] = {}


def _clean(message: str) -> str:
    """Keep OpenFHE's reason, drop its build paths and call-site trailers."""
    text = re.sub(r"\[called from:[^\]]*\]", "", str(message))
    text = re.sub(r"^.*?:l\.\d+:\s*", "", text)
    return text.strip() or "unknown OpenFHE error"


@contextmanager
def openfhe_errors(action: str) -> Iterator[None]:
    """Translate OpenFHE's exceptions raised inside the block into :class:`CryptoError`."""
    try:
        yield
    except (RuntimeError, TypeError) as exc:  # OpenFHE raises RuntimeError; pybind TypeError
        raise CryptoError(f"{action} failed: {_clean(str(exc))}") from None


def build_context(params: ParameterSet) -> Any:
    """The OpenFHE crypto context for ``params`` (one per parameter set per process)."""
    cached = _contexts.get(params.fingerprint)
    if cached is not None:
        return cached
    p = ofhe.CCParamsCKKSRNS()
    p.SetMultiplicativeDepth(params.mult_depth)
    p.SetScalingModSize(params.scale_bits)
    p.SetFirstModSize(params.first_mod_bits)
    p.SetRingDim(params.ring_dim)
    p.SetBatchSize(params.slots)
    p.SetScalingTechnique(ofhe.ScalingTechnique.FIXEDMANUAL)
    p.SetKeySwitchTechnique(ofhe.KeySwitchTechnique.HYBRID)
    p.SetSecretKeyDist(ofhe.SecretKeyDist.UNIFORM_TERNARY)
    # COMPLEX keeps imaginary slot parts, so decryption flooding can cover the whole ring.
    p.SetCKKSDataType(ofhe.CKKSDataType.COMPLEX)
    p.SetInteractiveBootCompressionLevel(
        ofhe.CompressionLevel.SLACK
        if params.compression == "slack"
        else ofhe.CompressionLevel.COMPACT
    )
    p.SetSecurityLevel(
        ofhe.SecurityLevel.HEStd_128_classic if params.secure else ofhe.SecurityLevel.HEStd_NotSet
    )
    try:
        cc = ofhe.GenCryptoContext(p)
        for feature in _FEATURES:
            cc.Enable(getattr(ofhe.PKESchemeFeature, feature))
    except RuntimeError as exc:
        raise ParameterError(
            f"OpenFHE rejects parameter set {params.name!r}: {_clean(str(exc))}"
        ) from None
    if cc.GetRingDimension() != params.ring_dim:
        raise ParameterError(
            f"parameter set {params.name!r}: OpenFHE chose ring {cc.GetRingDimension()}"
            f" instead of 2^{params.log_ring_dim}"
        )
    _contexts[params.fingerprint] = cc
    return cc


_zeros: dict[tuple[bytes, int], Any] = {}
_zeros_lock = threading.Lock()


def rehome(cc: Any, params: ParameterSet, raw: Any) -> Any:
    """``raw`` (a deserialized two-element ciphertext) with its elements re-homed in ``cc``.

    A deserialized ciphertext carries its own copy of the ring parameters: OpenFHE then
    runs additions, plaintext products and rescales on it (and on everything derived
    from it) about 13x slower, and serializes it in another form. Adding an exact zero
    made in ``cc`` (an encryption minus itself) yields the same ciphertext, bound to the
    context's own parameters.
    """
    if raw.NumberCiphertextElements() != 2:
        return raw
    level = int(raw.GetLevel())
    with _zeros_lock:
        zero = _zeros.get((params.fingerprint, level))
        if zero is None:
            scratch = cc.KeyGen()  # a throwaway key: its zero is exact, whatever the key
            enc = cc.Encrypt(scratch.publicKey, cc.MakeCKKSPackedPlaintext([0.0], 1, level))
            zero = cc.EvalSub(enc, enc)
            _zeros[(params.fingerprint, level)] = zero
        zero.SetKeyTag(raw.GetKeyTag())
        zero.SetNoiseScaleDeg(raw.GetNoiseScaleDeg())
        zero.SetScalingFactor(raw.GetScalingFactor())
        out = cc.EvalAdd(zero, raw)
    out.SetKeyTag(raw.GetKeyTag())
    return out


def dump(obj: Any) -> bytes:
    """OpenFHE's binary serialization of a key, key map or ciphertext."""
    with openfhe_errors("serialization"):
        out = ofhe.Serialize(obj, ofhe.BINARY)
    return bytes(out)


LOADERS = {
    "ciphertext": ofhe.DeserializeCiphertextString,
    "public_key": ofhe.DeserializePublicKeyString,
    "private_key": ofhe.DeserializePrivateKeyString,
    "eval_key": ofhe.DeserializeEvalKeyString,
    "eval_key_map": ofhe.DeserializeEvalKeyMapString,
}


def load(kind: str, data: bytes) -> Any:
    """Deserialize OpenFHE bytes that already passed the envelope's checksum."""
    try:
        obj = LOADERS[kind](data, ofhe.BINARY)
    except (RuntimeError, TypeError, ValueError, MemoryError, IndexError, OverflowError) as exc:
        # OpenFHE's std::bad_alloc on an absurd length arrives as MemoryError.
        reason = "impossible length" if isinstance(exc, MemoryError) else _clean(str(exc))
        raise SerializationError(f"invalid {kind.replace('_', ' ')} payload: {reason}") from None
    if obj is None:
        raise SerializationError(f"invalid {kind.replace('_', ' ')} payload")
    return obj
