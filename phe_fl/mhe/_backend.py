"""The one module that imports OpenFHE: context construction, (de)serialization and
translation of its exceptions into the phe-fl tree.

OpenFHE keeps evaluation keys in process-wide maps keyed by key tag and caches contexts
with equal parameters, so every :class:`Context` built from one parameter set in a process
shares one OpenFHE context.
"""

from __future__ import annotations

import hashlib
import math
import re
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import openfhe as ofhe

from phe_fl.errors import CryptoError, ParameterError, SerializationError
from phe_fl.mhe.params import ParameterSet

__all__ = ["ofhe", "build_context", "openfhe_errors", "dump", "load", "LOADERS", "check_payload"]

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
    _params_by_fp[params.fingerprint] = params
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


# OpenFHE recomputes the CRT tables of the crypto context every serialized object carries
# (12.7 of the 13.4 ms a ciphertext takes to load at 2^15, whatever its level), then looks
# the context up among the process's own and keeps the one it finds. phe-fl loads nothing
# that :func:`check_payload` has not matched, byte for byte, to a context this process
# generated (whose tables were computed then), so the lookup always succeeds and the
# recomputed tables are thrown away: skip them (a process-wide OpenFHE switch).
ofhe.DisablePrecomputeCRTTablesAfterDeserializaton()

LOADERS = {
    "ciphertext": ofhe.DeserializeCiphertextString,
    "public_key": ofhe.DeserializePublicKeyString,
    "private_key": ofhe.DeserializePrivateKeyString,
    "eval_key": ofhe.DeserializeEvalKeyString,
    "eval_key_map": ofhe.DeserializeEvalKeyMapString,
}


def load(kind: str, data: bytes, params: ParameterSet | None = None) -> Any:
    """Deserialize OpenFHE bytes that already passed the envelope's checksum.

    The bytes are first checked against the parameter set (``params``, or the one among
    this process's contexts they claim) by :func:`check_payload`: OpenFHE trusts its input,
    and some corruptions abort or crash the whole process, at load time or later.
    """
    data = bytes(data)
    check_payload(kind, data, params)
    try:
        obj = LOADERS[kind](data, ofhe.BINARY)
    except (RuntimeError, TypeError, ValueError, MemoryError, IndexError, OverflowError) as exc:
        # OpenFHE's std::bad_alloc on an absurd length arrives as MemoryError.
        reason = "impossible length" if isinstance(exc, MemoryError) else _clean(str(exc))
        raise SerializationError(f"invalid {kind.replace('_', ' ')} payload: {reason}") from None
    if obj is None:
        raise SerializationError(f"invalid {kind.replace('_', ' ')} payload")
    return obj


# -- payload validation -------------------------------------------------------------------
# OpenFHE's deserializers trust their input, and its arithmetic trusts what they built: a
# tower whose stored modulus differs from its partner's makes NativeVector::ModAddEq throw
# inside an OpenMP parallel loop (DCRTPoly::operator+=), where a C++ exception cannot
# propagate: std::terminate, SIGABRT, whatever OMP_NUM_THREADS is. A corrupted parameter
# block in the embedded crypto context makes the deserializer itself divide by zero
# (SIGFPE in PrecomputeCRTTables). So every payload is parsed here, in Python, BEFORE
# OpenFHE sees it, and must be exactly what OpenFHE writes for this parameter set:
#
# * the bytes up to the key tag (the serialized crypto context and type headers) equal,
#   byte for byte, those of an object of the same type made in this process's context;
# * the key tag is printable ASCII of bounded length;
# * every ring element (DCRTPoly) has the expected number of towers (ciphertexts: 1 to
#   depth+1 towers, all elements alike; keys: all of them, and a key-switching key the
#   context's digit count), each tower holds exactly N coefficients, all below its
#   modulus, in EVALUATION format, and its stored modulus, ring dimension, cyclotomic
#   order and root of unity equal the context's for that position of the modulus chain;
#   each element's CRT parameter block (composite modulus, tower list) matches its towers;
# * cereal's shared-pointer ids are sequential, and a reference points back to parameters
#   of exactly the expected tower (or chain) -- never to an object of another type;
# * ciphertext metadata: 1 to 3 elements, hop level 0, a level consistent with the tower
#   count, scale degree 1..towers, a finite positive scaling factor, CKKS encoding, the
#   context's slot count (or 0 for protocol-internal elements at level 0), no metadata map;
# * nothing trails the object.
#
# Evaluation-key maps (rotation keys) get the same checks per key, their automorphism
# indices odd, increasing and below 2N, and their headers equal to a local map's.

_SAME_TYPE = 0x40000000  # cereal polymorphic id: a pointer of its declared type
_NEW_PTR = 0x80000000  # cereal shared-pointer id: first occurrence, the object follows
_MAX_TAG = 256
_MAX_LIMBS = 64
_CKKS_PACKED = int(ofhe.PlaintextEncodings.CKKS_PACKED_ENCODING)
_INVALID_ENCODING = int(ofhe.PlaintextEncodings.INVALID_ENCODING)
_EVALUATION = 0  # lbcrypto::Format::EVALUATION (COEFFICIENT is 1)
# the modulus chain each kind's ring elements live in: Q, or QP for key-switching keys
_CHAINS = {
    "ciphertext": "Q",
    "public_key": "Q",
    "private_key": "Q",
    "eval_key": "QP",
    "eval_key_map": "QP",
}

_params_by_fp: dict[bytes, ParameterSet] = {}


@dataclass
class _Layout:
    """What OpenFHE writes for one parameter set, learned from objects made locally."""

    params: ParameterSet
    prefixes: dict[str, bytes] = field(default_factory=dict)
    chains: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)
    known: dict[str, dict[int, tuple[Any, ...]]] = field(default_factory=dict)
    first_id: dict[str, int] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    digits: int | None = None  # elements per vector of a key-switching key
    map_parts: dict[str, bytes] = field(default_factory=dict)  # eval-key map headers
    sizes: dict[str, int] = field(default_factory=dict)  # bytes of the largest local sample


class _OtherContext(SerializationError):
    """The payload's crypto context (or type header) is not this parameter set's."""


_layouts: dict[bytes, _Layout] = {}
_layouts_lock = threading.Lock()


class _Parser:
    """A strict reader of OpenFHE's (cereal) binary form of one object.

    ``learn`` reads a trusted object made locally and records what it finds (chain moduli
    and roots, context pointer ids, version words); otherwise every field is compared.
    """

    def __init__(self, layout: _Layout, kind: str, data: bytes, *, learn: bool = False) -> None:
        self.layout = layout
        self.kind = kind
        self.what = kind.replace("_", " ")
        self.b = data
        self.pos = 0
        self.learn = learn
        self.n = layout.params.ring_dim
        self.ids: dict[int, tuple[Any, ...]] = dict(layout.known.get(kind, {}))
        self.next_id: int | None = layout.first_id.get(kind)
        self.learned: dict[int, tuple[Any, ...]] = {}
        self.first_new: int | None = None
        self.seen: set[str] = set()
        self.regions: list[tuple[int, int]] = []  # (offset of a tower's coefficients, modulus)
        # skeletons (:func:`join_coefficients`): the first ``absent_elements`` elements'
        # coefficients are absent; ``gaps`` records where they would be
        self.absent_elements = 0
        self.gaps: list[int] = []
        self.chain_name = _CHAINS[kind]
        self.chain: list[tuple[int, int]] | None = (
            list(layout.chains[self.chain_name]) if self.chain_name in layout.chains else None
        )

    # -- primitives ---------------------------------------------------------------------
    def fail(self, reason: str) -> SerializationError:
        return SerializationError(f"invalid {self.what} payload: {reason}")

    def _take(self, size: int) -> int:
        at = self.pos
        if size < 0 or at + size > len(self.b):
            raise self.fail("truncated")
        self.pos = at + size
        return at

    def u8(self) -> int:
        return self.b[self._take(1)]

    def u32(self) -> int:
        return int(struct.unpack_from("<I", self.b, self._take(4))[0])

    def u64(self) -> int:
        return int(struct.unpack_from("<Q", self.b, self._take(8))[0])

    def f64(self) -> float:
        return float(struct.unpack_from("<d", self.b, self._take(8))[0])

    def expect(self, got: int, want: int, name: str) -> None:
        if got != want:
            raise self.fail(f"unexpected {name}")

    def version(self, name: str) -> None:
        """cereal writes a class version word the first time a type occurs."""
        if name in self.seen:
            return
        self.seen.add(name)
        got = self.u32()
        key = f"{self.kind}/{name}"
        if self.learn:
            self.layout.versions.setdefault(key, got)
        self.expect(got, self.layout.versions.get(key, -1), f"{name} version")

    def bigint(self) -> int:
        limbs = self.u64()
        if not 1 <= limbs <= _MAX_LIMBS:
            raise self.fail("impossible big-integer length")
        at = self._take(8 * limbs)
        value = int.from_bytes(self.b[at : at + 8 * limbs], "little")
        self.expect(self.u32(), value.bit_length(), "big-integer bit length")
        return value

    def string(self) -> str:
        size = self.u64()
        if size > _MAX_TAG:
            raise self.fail("key tag too long")
        at = self._take(size)
        raw = self.b[at : at + size]
        if not all(0x20 <= c < 0x7F for c in raw):
            raise self.fail("key tag is not printable ASCII")
        return raw.decode("ascii")

    def pointer(self, meaning: tuple[Any, ...], read: Callable[[], tuple[Any, ...]]) -> None:
        """A shared pointer to parameters: a new object (read and compared) or a reference
        to an earlier one, which must have exactly the expected meaning."""
        self.expect(self.u32(), _SAME_TYPE, "pointer type")
        pid = self.u32()
        if pid & _NEW_PTR:
            pid &= ~_NEW_PTR
            if self.next_id is None:  # learning: the first object after the context's
                self.next_id = pid
            self.expect(pid, self.next_id, "pointer id")
            self.next_id += 1
            if self.first_new is None:
                self.first_new = pid
            got = read()
            if got != meaning and meaning[-1] is not None:  # None: learning the chain
                raise self.fail("parameters do not match the parameter set")
            self.ids[pid] = got
            return
        known = self.ids.get(pid)
        if known is None and self.learn and meaning[-1] is not None:  # a context object
            self.ids[pid] = self.learned[pid] = known = meaning
        if known is None:
            raise self.fail("reference to an unknown object")
        if known != meaning:
            raise self.fail("reference to parameters of another tower or level")

    # -- ring elements --------------------------------------------------------------------
    def native_params(self) -> tuple[Any, ...]:
        self.expect(self.u32(), 2 * self.n, "cyclotomic order")
        self.expect(self.u32(), self.n, "ring dimension")
        modulus, root, big_modulus, big_root = self.u64(), self.u64(), self.u64(), self.u64()
        if big_modulus or big_root:
            raise self.fail("unexpected big modulus in tower parameters")
        return ("tower", modulus, root)

    def dcrt_params(self, towers: int) -> tuple[Any, ...]:
        self.expect(self.u32(), 2 * self.n, "cyclotomic order")
        self.expect(self.u32(), self.n, "ring dimension")
        modulus = self.bigint()
        if self.bigint() or self.bigint() or self.bigint():
            raise self.fail("unexpected root of unity in element parameters")
        self.expect(self.u64(), towers, "tower count in element parameters")
        chain = self.chain
        assert chain is not None
        for i in range(towers):
            self.pointer(("tower", *chain[i]), self.native_params)
        return ("element", modulus, towers)

    def dcrtpoly(self, exact: bool) -> int:
        self.version("DCRTPoly")
        towers = self.u64()
        chain = self.chain
        learning = chain is None  # only while learning from a local object
        if learning and not self.learn:
            raise self.fail("no modulus chain known")
        limit = 256 if chain is None else len(chain)
        if not 1 <= towers <= limit or (exact and chain is not None and towers != limit):
            raise self.fail(f"{towers} RNS towers (the parameter set allows {limit})")
        collected: list[tuple[int, int]] = []
        for i in range(towers):
            self.version("NativePoly")
            self.expect(self.u32(), _SAME_TYPE, "coefficient vector type")
            self.expect(self.u8(), 1, "coefficient vector presence")
            self.version("NativeVector")
            self.expect(self.u64(), self.n, "coefficient count")
            if self.absent_elements:
                at = self.pos
                self.gaps.append(at)
            else:
                at = self._take(8 * self.n)
            modulus = self.u64()
            # EVALUATION: every object phe-fl exchanges; OpenFHE's automorphisms and
            # products throw inside OpenMP loops on a tower in COEFFICIENT format.
            self.expect(self.u32(), _EVALUATION, "polynomial format (not EVALUATION)")
            if chain is None:  # learning the chain: this tower's parameters are new objects
                self.pointer(("tower", modulus, None), self.native_params)
                _, q, root = self.ids[self.next_id - 1]  # type: ignore[operator]
                collected.append((q, root))
            else:
                q, root = chain[i]
                if modulus != q:
                    raise self.fail(f"tower {i} modulus does not match the parameter set")
                self.pointer(("tower", q, root), self.native_params)
            self.regions.append((at, modulus))
        if chain is None:
            self.chain = chain = collected
        self.expect(self.u32(), _EVALUATION, "element format (not EVALUATION)")
        product = math.prod(q for q, _ in chain[:towers])
        self.pointer(("element", product, towers), lambda: self.dcrt_params(towers))
        return towers

    def elements(self, low: int, high: int, exact: bool) -> tuple[int, int]:
        """A vector of ring elements: (count, towers of each)."""
        count = self.u64()
        if not low <= count <= high:
            raise self.fail(f"{count} ring elements (expected {low} to {high})")
        towers = set()
        for _ in range(count):
            towers.add(self.dcrtpoly(exact))
            self.absent_elements = max(0, self.absent_elements - 1)
        if len(towers) != 1:
            raise self.fail("ring elements with different tower counts")
        return count, towers.pop()

    # -- objects --------------------------------------------------------------------------
    def run(self) -> None:
        if self.kind == "eval_key_map":
            self.eval_key_map()
        else:
            self.fixed(self.layout.prefixes[self.kind], context=True)
            self.string()  # key tag
            if self.kind == "ciphertext":
                self.ciphertext()
            elif self.kind == "public_key":
                self.elements(2, 2, exact=True)
            elif self.kind == "private_key":
                self.dcrtpoly(exact=True)
            else:
                self.eval_key_body()
        if self.pos != len(self.b):
            raise self.fail(f"{len(self.b) - self.pos} trailing bytes")
        if self.learn and self.chain is not None:
            self.layout.chains.setdefault(self.chain_name, tuple(self.chain))

    def fixed(self, expected: bytes, *, context: bool = False) -> None:
        """Bytes that must be exactly those OpenFHE writes here (headers, the context)."""
        at = self.pos
        if self.b[at : at + len(expected)] != expected:
            if context:
                raise _OtherContext(
                    f"invalid {self.what} payload: not made with this parameter set "
                    "(its crypto context or header differs)"
                )
            raise self.fail("unexpected object header")
        self.pos = at + len(expected)

    def eval_key_body(self) -> None:
        """A key-switching key: its a and b vectors, one element per digit."""
        digits = None if self.learn else self.layout.digits
        for _ in "ab":
            count, _ = self.elements(1, 64, exact=True)
            if digits is None:
                digits = self.layout.digits = count
            self.expect(count, digits, "digit count of the key-switching key")

    def eval_key_map(self) -> None:
        """Rotation keys: a map from automorphism index to key-switching key. The first
        entry carries the crypto context, later ones refer back to it."""
        parts = self.layout.map_parts
        self.fixed(parts["head"], context=True)
        count = self.u64()
        if not 1 <= count <= 1024:
            raise self.fail(f"{count} keys in the map")
        self.fixed(parts["sep"])
        previous = 0
        for entry in range(count):
            index = self.u32()
            if not (index % 2 and previous < index < 2 * self.n):
                raise self.fail("automorphism indices out of range or order")
            previous = index
            if entry == 0:
                self.fixed(parts["first"], context=True)
            else:
                self.fixed(parts["later"])
                pid = self.u32()
                if self.next_id is None or pid != (self.next_id | _NEW_PTR):
                    raise self.fail("unexpected pointer id")
                self.next_id += 1
                self.fixed(parts["later_tail"])
            self.string()  # key tag
            self.eval_key_body()

    def ciphertext(self) -> None:
        p = self.layout.params
        _, towers = self.elements(1, 3, exact=False)
        slots, level, hop, degree = self.u32(), self.u32(), self.u32(), self.u32()
        scale, scale_int, encoding = self.f64(), self.u64(), self.u32()
        if hop != 0 or scale_int != 1:
            raise self.fail("unexpected re-encryption or integer-scale metadata")
        if not (math.isfinite(scale) and scale > 0):
            raise self.fail("scaling factor is not a finite positive number")
        if slots == p.slots:
            if encoding != _CKKS_PACKED:
                raise self.fail("not a CKKS ciphertext")
            if level != p.mult_depth + 1 - towers:
                raise self.fail(f"level {level} does not match its {towers} RNS towers")
            if not 1 <= degree <= towers:
                raise self.fail(f"scale degree {degree} out of range")
        elif slots == 0:  # protocol-internal elements (refresh shares and CRPs)
            if level or degree != 1 or scale != 1.0:
                raise self.fail("unexpected level or scale on a protocol element")
            if encoding not in (_CKKS_PACKED, _INVALID_ENCODING):
                raise self.fail("not a CKKS ciphertext")
        else:
            raise self.fail(f"{slots} slots (the parameter set has {p.slots})")
        # the metadata map: a shared pointer to an (empty) std::map
        pid = self.u32()
        if not pid & _NEW_PTR:
            raise self.fail("unexpected metadata reference")
        if self.next_id is None:
            self.next_id = pid & ~_NEW_PTR
        self.expect(pid & ~_NEW_PTR, self.next_id, "pointer id")
        if self.first_new is None:
            self.first_new = self.next_id
        self.next_id += 1
        self.expect(self.u64(), 0, "metadata entry count")

    def check_coefficients(self) -> None:
        """Every coefficient below its tower's modulus (one vectorized pass per tower)."""
        n = self.n
        for at, modulus in self.regions:
            if int(np.frombuffer(self.b, dtype="<u8", count=n, offset=at).max()) >= modulus:
                raise self.fail("a coefficient is not reduced modulo its tower's modulus")


def _layout_for(params: ParameterSet) -> _Layout:
    """The payload layout of ``params``, learned once per process from local objects."""
    with _layouts_lock:
        layout = _layouts.get(params.fingerprint)
        if layout is not None:
            return layout
        cc = build_context(params)
        layout = _Layout(params)
        try:
            with openfhe_errors("learning the payload layout"):
                kp = cc.KeyGen()
                zero = cc.MakeCKKSPackedPlaintext([0.0], 1, 0)
                samples = (
                    ("ciphertext", cc.Encrypt(kp.publicKey, zero)),
                    ("public_key", kp.publicKey),
                    ("private_key", kp.secretKey),
                    ("eval_key", cc.KeySwitchGen(kp.secretKey, kp.secretKey)),
                )
                for kind, obj in samples:
                    _learn(layout, kind, obj)
        except (SerializationError, CryptoError) as exc:  # an OpenFHE we do not know
            raise CryptoError(f"cannot learn OpenFHE's payload layout: {exc}") from None
        _layouts[params.fingerprint] = layout
        return layout


def _learn(layout: _Layout, kind: str, obj: Any) -> None:
    local = dump(obj)
    tag = str(obj.GetKeyTag()).encode()
    at = local.find(struct.pack("<Q", len(tag)) + tag)
    if at < 0:
        raise SerializationError(f"{kind}: key tag not found in a local object")
    layout.prefixes[kind] = local[:at]
    layout.sizes[kind] = len(local)
    _learn_parsed(layout, kind, local, dump(LOADERS[kind](local, ofhe.BINARY)))


def _learn_parsed(layout: _Layout, kind: str, local: bytes, copy: bytes) -> None:
    # A deserialized copy owns its parameters (new objects): learn the chain and the first
    # pointer id after the context's. The local object refers to the context's parameters:
    # learn which ids those are. Both must then pass the strict reader.
    first = _Parser(layout, kind, copy, learn=True)
    first.run()
    if first.first_new is None:
        raise SerializationError(f"{kind}: no parameters of its own in a deserialized copy")
    layout.first_id[kind] = first.first_new
    second = _Parser(layout, kind, local, learn=True)
    second.run()
    if any(pid >= first.first_new for pid in second.learned):
        raise SerializationError(f"{kind}: inconsistent pointer ids")
    layout.known[kind] = second.learned
    for blob in (copy, local):
        strict = _Parser(layout, kind, blob)
        strict.run()
        strict.check_coefficients()


def _layout_with_maps(params: ParameterSet) -> _Layout:
    """The layout, with evaluation-key maps learned too (on first use: two rotation keys
    are made and serialized, which costs more than all other kinds together)."""
    layout = _layout_for(params)
    with _layouts_lock:
        if not layout.map_parts:
            cc = build_context(params)
            try:
                with openfhe_errors("learning the payload layout"):
                    sk = cc.KeyGen().secretKey
                    indices = [cc.FindAutomorphismIndex(step) for step in (1, 2)]
                    keys = cc.EvalAutomorphismKeyGen(sk, indices)
                    _learn_map(layout, keys, indices, str(sk.GetKeyTag()))
            except (SerializationError, CryptoError) as exc:
                layout.map_parts.clear()
                raise CryptoError(f"cannot learn OpenFHE's payload layout: {exc}") from None
    return layout


def _learn_map(layout: _Layout, obj: Any, indices: list[int], key_tag: str) -> None:
    """Learn an evaluation-key map's headers from a local two-key map: before the key
    count, between the count and the first index, after the first index (type name and
    crypto context) and after a later index (around that key's pointer id)."""
    kind = "eval_key_map"
    local = dump(obj)
    first, second = sorted(indices)
    count_at = local.find(struct.pack("<Q", 2), 0, 64)
    first_at = local.find(struct.pack("<I", first), count_at + 8, count_at + 64)
    tag = key_tag.encode()
    tag_at = local.find(struct.pack("<Q", len(tag)) + tag, first_at)
    if min(count_at, first_at, tag_at) < 0:
        raise SerializationError("eval key map: unknown layout")
    parts = layout.map_parts
    parts["head"] = local[:count_at]
    parts["sep"] = local[count_at + 8 : first_at]
    parts["first"] = local[first_at + 4 : tag_at]
    # read the first key's body to find the second entry
    reader = _Parser(layout, kind, local, learn=True)
    reader.pos = tag_at
    reader.string()
    reader.eval_key_body()
    at = reader.pos
    if local[at : at + 4] != struct.pack("<I", second):
        raise SerializationError("eval key map: unknown layout")
    later_tag = local.find(struct.pack("<Q", len(tag)) + tag, at)
    parts["later"] = local[at + 4 : at + 8]
    parts["later_tail"] = local[at + 12 : later_tag]
    layout.versions = {k: v for k, v in layout.versions.items() if not k.startswith(kind)}
    _learn_parsed(layout, kind, local, dump(LOADERS[kind](local, ofhe.BINARY)))


def object_bytes(params: ParameterSet) -> dict[str, int]:
    """Serialized bytes of the largest object of each kind of ``params`` (a fresh
    ciphertext at the top level, a public key, a secret key, one key-switching key): what
    a transport may expect a step to carry, learned from local objects."""
    return dict(_layout_for(params).sizes)


def _read(kind: str, data: bytes, params: ParameterSet) -> _Parser:
    """``data`` read strictly as a ``kind`` payload of ``params``, every coefficient
    reduced: its reader, which knows where each tower's coefficients lie (``regions``).
    Raises ``_OtherContext`` for an object of another parameter set."""
    layout = _layout_with_maps(params) if kind == "eval_key_map" else _layout_for(params)
    reader = _Parser(layout, kind, data)
    reader.run()
    reader.check_coefficients()
    return reader


def without_c0(payload: bytes, params: ParameterSet) -> bytes:
    """The two-element ciphertext payload ``(0, c1)`` of ``payload`` (read strictly): what
    every party's decryption share of it is computed from (the lead's c0 is added back by
    whoever holds the whole ciphertext: :func:`add_first_element`)."""
    skeleton, regions = split_coefficients("ciphertext", payload, params)
    towers = len(regions) // 2
    if len(regions) != 2 * towers or towers < 1:
        raise SerializationError("a ciphertext without c0: expected two ring elements")
    zeros = [np.zeros(params.ring_dim, dtype=np.uint64)] * towers
    return join_coefficients(
        "ciphertext", skeleton, zeros + [v for _, v in regions[towers:]], params
    )


def add_first_element(target: bytes, source: bytes, params: ParameterSet) -> bytes:
    """``target`` (a ciphertext-kind payload: a decryption share's partial) with the
    first ring element of ``source`` (a ciphertext's c0) added to its first element, tower
    by tower; both read strictly and on the same towers."""
    rt, rs = _read("ciphertext", target, params), _read("ciphertext", source, params)
    towers = len(rs.regions) // 2
    if len(rs.regions) != 2 * towers or [q for _, q in rt.regions] != [
        q for _, q in rs.regions[:towers]
    ]:
        raise SerializationError(
            f"adding c0 to a share: a share of {len(rt.regions)} towers and a ciphertext of "
            f"{len(rs.regions)} (two elements of the same towers expected)"
        )
    n = params.ring_dim
    out = bytearray(target)
    for (at_t, modulus), (at_s, _) in zip(rt.regions, rs.regions[:towers], strict=True):
        x = np.frombuffer(target, dtype="<u8", count=n, offset=at_t)
        y = np.frombuffer(source, dtype="<u8", count=n, offset=at_s)
        total = x + y
        total -= np.where(total >= np.uint64(modulus), np.uint64(modulus), np.uint64(0))
        out[at_t : at_t + 8 * n] = total.astype("<u8").tobytes()
    return bytes(out)


def split_coefficients(
    kind: str, payload: bytes, params: ParameterSet
) -> tuple[bytes, list[tuple[int, npt.NDArray[np.uint64]]]]:
    """A payload read strictly, cut into its skeleton (every byte but the coefficients:
    shape and metadata) and each tower region's (modulus, coefficients), in order."""
    reader = _read(kind, payload, params)
    n = params.ring_dim
    skeleton = bytearray()
    regions = []
    previous = 0
    for at, modulus in reader.regions:
        skeleton += payload[previous:at]
        values = np.frombuffer(payload, dtype="<u8", count=n, offset=at).astype(np.uint64)
        regions.append((modulus, values))
        previous = at + 8 * n
    skeleton += payload[previous:]
    return bytes(skeleton), regions


def skeleton_regions(kind: str, skeleton: bytes, params: ParameterSet) -> list[tuple[int, int]]:
    """Where each tower region's coefficients go in a skeleton (:func:`split_coefficients`)
    and its modulus, the skeleton read strictly (one pass over its few hundred bytes)."""
    reader = _Parser(_layout_for(params), kind, skeleton)
    reader.absent_elements = _MAX_LIMBS  # every element's coefficients are absent
    reader.run()
    return [(at, modulus) for at, (_, modulus) in zip(reader.gaps, reader.regions, strict=True)]


def join_coefficients(
    kind: str, skeleton: bytes, values: Sequence[npt.NDArray[np.uint64]], params: ParameterSet
) -> bytes:
    """The payload of :func:`split_coefficients`'s skeleton with ``values`` put back,
    region by region: a skeleton of another shape, a wrong region count or an unreduced
    coefficient is refused, so the payload is one :func:`check_payload` accepts."""
    regions = skeleton_regions(kind, skeleton, params)
    if len(regions) != len(values):
        raise SerializationError(
            f"invalid {kind} skeleton: {len(regions)} tower regions for {len(values)}"
        )
    out = bytearray()
    previous = 0
    for (at, modulus), v in zip(regions, values, strict=True):
        if v.shape != (params.ring_dim,):
            raise SerializationError(f"{v.size} coefficients for a region of {params.ring_dim}")
        if v.size and int(v.max()) >= modulus:
            raise SerializationError(f"invalid {kind}: a coefficient is not reduced")
        out += skeleton[previous:at] + v.astype("<u8").tobytes()
        previous = at
    out += skeleton[previous:]
    return bytes(out)


def root_of_unity(params: ParameterSet, modulus: int) -> int:
    """OpenFHE's primitive 2N-th root of unity for the tower ``modulus`` of ``params``."""
    for q, root in _layout_for(params).chains["Q"]:
        if q == modulus:
            return root
    raise SerializationError(f"{modulus} is not a modulus of parameter set {params.name!r}")


# -- ring arithmetic on serialized elements ---------------------------------------------
_LOW32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)


@dataclass(frozen=True)
class Tower:
    """One RNS tower of a ring element in EVALUATION form: its modulus, its coefficients
    and their Shoup factors ``floor(c * 2^64 / q)``, for products by this element."""

    modulus: int
    values: npt.NDArray[np.uint64] = field(repr=False)  # a secret key's: never printed
    shoup: npt.NDArray[np.uint64] = field(repr=False)


def towers_of(kind: str, payload: bytes, params: ParameterSet) -> list[Tower]:
    """The towers of the first ring element of a ``kind`` payload (a secret key's)."""
    reader = _read(kind, payload, params)
    n = params.ring_dim
    out = []
    for at, modulus in reader.regions:
        values = np.frombuffer(payload, dtype="<u8", count=n, offset=at).astype(np.uint64)
        shoup = np.array([(v << 64) // modulus for v in values.tolist()], dtype=np.uint64)
        out.append(Tower(modulus, values, shoup))
    return out


def _mulhi(a: npt.NDArray[np.uint64], b: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """``floor(a * b / 2^64)`` of 64-bit words, from 32-bit halves (numpy has no 128-bit
    product; its uint64 products wrap, which the halves never do)."""
    a0, a1 = a & _LOW32, a >> _SHIFT32
    b0, b1 = b & _LOW32, b >> _SHIFT32
    low, cross1, cross2 = a0 * b0, a0 * b1, a1 * b0
    carry = (low >> _SHIFT32) + (cross1 & _LOW32) + (cross2 & _LOW32)
    high: npt.NDArray[np.uint64] = (
        a1 * b1 + (cross1 >> _SHIFT32) + (cross2 >> _SHIFT32) + (carry >> _SHIFT32)
    )
    return high


def mulmod(a: npt.NDArray[np.uint64], b: Tower) -> npt.NDArray[np.uint64]:
    """``a * b mod q`` coefficient-wise (``a`` reduced, ``q`` below 2^62): Shoup's
    product, exact (``a*b - floor(a*b'/2^64)*q`` lies in [0, 2q), computed mod 2^64)."""
    q = np.uint64(b.modulus)
    r = a * b.values - _mulhi(a, b.shoup) * q
    reduced: npt.NDArray[np.uint64] = np.where(r >= q, r - q, r)
    return reduced


def partial_payload(
    ct: bytes, template: bytes, secret: list[Tower], params: ParameterSet, *, lead: bool
) -> bytes:
    """A partial decryption of the two-element ciphertext payload ``ct``: ``c1 * s`` tower
    by tower (``c0 + c1 * s`` for the lead), written over ``template``, a one-element
    partial of a ciphertext with ``ct``'s towers and metadata (whose coefficients are all
    replaced). Both read strictly."""
    rc, rt = _read("ciphertext", ct, params), _read("ciphertext", template, params)
    towers = len(rt.regions)
    if len(rc.regions) != 2 * towers or len(secret) < towers:
        raise SerializationError(
            f"partial decryption: a ciphertext of {len(rc.regions)} tower regions, a template "
            f"of {towers} and a key of {len(secret)}"
        )
    n = params.ring_dim
    out = bytearray(template)
    for j, (at, modulus) in enumerate(rt.regions):
        (c0_at, q0), (c1_at, q1) = rc.regions[j], rc.regions[towers + j]
        if not modulus == q0 == q1 == secret[j].modulus:
            raise SerializationError(f"partial decryption: tower {j} moduli differ")
        c1 = np.frombuffer(ct, dtype="<u8", count=n, offset=c1_at).astype(np.uint64)
        part = mulmod(c1, secret[j])
        if lead:
            part = part + np.frombuffer(ct, dtype="<u8", count=n, offset=c0_at)
            q = np.uint64(modulus)
            part = np.where(part >= q, part - q, part)
        out[at : at + 8 * n] = part.astype("<u8").tobytes()
    return bytes(out)


def skeleton_digest(kind: str, payload: bytes, params: ParameterSet) -> bytes:
    """SHA-256 of a payload without its coefficients: its shape and metadata (towers,
    level, scale, key tag), what two objects share when one can be the other's template."""
    reader = _read(kind, payload, params)
    h = hashlib.sha256()
    previous = 0
    for at, _ in reader.regions:
        h.update(payload[previous:at])
        previous = at + 8 * params.ring_dim
    h.update(payload[previous:])
    return h.digest()


def check_payload(kind: str, data: bytes, params: ParameterSet | None = None) -> None:
    """Refuse OpenFHE bytes that are not exactly a well-formed object of ``params`` (or,
    without ``params``, of a parameter set this process has built a context for), with a
    :class:`SerializationError` naming what is wrong. See the comment above ``_Parser``."""
    if kind not in _CHAINS:
        raise SerializationError(f"unknown payload type {kind!r}")
    candidates = [params] if params is not None else list(_params_by_fp.values())
    for p in candidates:
        try:
            _read(kind, data, p)
        except _OtherContext:
            continue  # another parameter set's object: try the next one
        return
    raise SerializationError(
        f"invalid {kind.replace('_', ' ')} payload: not made with "
        + ("this parameter set" if params is not None else "a parameter set in use")
        + " (its crypto context or header differs)"
    )
