"""Threshold decryption: every party sends a flooded partial decryption to the chosen
receiver, which fuses them. Missing any one party's share leaves the result masked.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt

from phe_fl.errors import KeyMismatchError, SerializationError
from phe_fl.mhe import _backend, compact
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Envelope, Kind, digest
from phe_fl.mhe.context import Ciphertext, FloatArray
from phe_fl.mhe.keys import SecretShare, release
from phe_fl.mhe.protocols._flooding import flood
from phe_fl.mhe.protocols._share import Protocol, Share

__all__ = ["DecryptionShare", "ThresholdDecrypt"]


class DecryptionShare(Share):
    KIND = Kind.DECRYPTION_SHARE
    LOADERS = ("ciphertext",)


NUMPY_TOWERS = 4
"""Ciphertexts of at most this many RNS towers are partially decrypted in numpy: about
1.7 ms a tower at 2^15, where OpenFHE's MultipartyDecrypt* spend a fixed 11 ms sampling
their own small noise (sigma 2^20, which the flooding makes irrelevant) on top."""

_templates: dict[bytes, bytes] = {}
_templates_lock = threading.Lock()


def _openfhe_partial(secret: SecretShare, ct: Ciphertext) -> Any:
    cc = secret.ctx.cc
    op = cc.MultipartyDecryptLead if secret.is_lead else cc.MultipartyDecryptMain
    with openfhe_errors("partial decryption"):
        return op([ct._ct], secret.raw)[0]


def partial_decryption(secret: SecretShare, ct: Ciphertext) -> Any:
    """``c0 + c1*s_0`` for the lead, ``c1*s_i`` for the others (not yet flooded).

    Up to :data:`NUMPY_TOWERS` towers, computed on the serialized ciphertext
    (:func:`_backend.partial_payload`, exact products modulo each tower); OpenFHE's own
    partial of the first ciphertext of each shape serves as the byte template (every
    coefficient of it is replaced). Above that, OpenFHE's, which adds its sigma-2^20
    noise: either way the flooding (:func:`flooded_partial`) is what hides ``s_i``."""
    params = secret.ctx.params
    envelope = Envelope.unpack(ct.to_bytes(), Kind.CIPHERTEXT, params.fingerprint)
    payload = envelope.blobs[0]
    towers = params.mult_depth + 1 - ct.level
    if towers > NUMPY_TOWERS:
        return _openfhe_partial(secret, ct)
    shape = params.fingerprint + _backend.skeleton_digest("ciphertext", payload, params)
    with _templates_lock:
        template = _templates.get(shape)
    if template is None:
        template = _backend.dump(_openfhe_partial(secret, ct))
        with _templates_lock:
            _templates[shape] = template
    out = _backend.partial_payload(payload, template, secret.towers(), params, lead=secret.is_lead)
    return _backend.load("ciphertext", out, params)


def flooded_partial(secret: SecretShare, ct: Ciphertext) -> Any:
    """A partial decryption with fresh flooding noise.

    Draw it once per ciphertext content and reuse it for every decryption and key-switch
    share about that ciphertext (``Party`` does): two independently flooded partials of
    the same ciphertext would let their receiver average the flooding away.
    """
    secret.ctx.own(ct)
    if ct.size != 2:
        raise KeyMismatchError("decryption needs a relinearized (two-element) ciphertext")
    return flood(
        secret.ctx,
        partial_decryption(secret, ct),
        level=ct.level,
        scale_degree=ct.scale_degree,
        scaling_factor=ct.scaling_factor,
    )


class ThresholdDecrypt(Protocol[DecryptionShare]):
    SHARE = DecryptionShare

    def gen_share(
        self, secret: SecretShare, ct: Ciphertext, partial: Any | None = None
    ) -> DecryptionShare:
        """Party ``secret.index``'s flooded share (from ``partial`` when already drawn)."""
        self.ctx.own(ct)
        secret.check_context(self.ctx)
        if partial is None:
            partial = flooded_partial(secret, ct)
        return DecryptionShare(
            self.ctx, (partial,), secret.n_parties, frozenset({secret.index}), ct.digest
        )

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("decryption-share aggregation"):
            return (self.cc.EvalAdd(a[0], b[0]),)

    def aggregate_compact(self, a: bytes, b: bytes) -> bytes:
        """:meth:`aggregate` of two compact shares (:mod:`phe_fl.mhe.compact`): the same
        checks on parties and subject, then their quotients added."""
        fp = self.ctx.params.fingerprint
        ea = Envelope.unpack(a, Kind.COMPACT_DECRYPTION_SHARE, fp)
        eb = Envelope.unpack(b, Kind.COMPACT_DECRYPTION_SHARE, fp)
        if not ea.parties or not eb.parties:
            raise SerializationError("decryption share: no contributing party")
        self._check_pair(ea.n_parties, eb.n_parties, ea.subject, eb.subject, ea.parties, eb.parties)
        return compact.add(self.ctx, a, b)

    def finalize(
        self,
        share: DecryptionShare,
        ct: Ciphertext | None = None,
        *,
        length: int | None = None,
        decimals: int | None = None,
    ) -> FloatArray:
        """Fuse a complete share into values rounded to the release precision."""
        self._require_complete(share, ct.digest if ct is not None else None)
        values = fuse(self, share.raw[0])
        if length is not None:
            values = values[:length]
        return release(values, self.ctx.params.release_decimals if decimals is None else decimals)

    def fuse_masked(self, share: bytes, ct: bytes) -> npt.NDArray[np.complex128]:
        """The complex slots of serialized ciphertext ``ct`` from a complete serialized
        share of its masked form (``(0, c1)``: every party, the lead included, shared
        ``c1`` only; :func:`phe_fl.mhe.compact.masked`): ``ct``'s c0 is added to the share
        on the bytes, so neither ``ct`` nor the masked form is ever deserialized."""
        params = self.ctx.params
        env = Envelope.unpack(share, self.SHARE.KIND, params.fingerprint)
        if len(env.blobs) != 1:
            raise SerializationError("decryption share: expected one payload")
        ct_env = Envelope.unpack(ct, Kind.CIPHERTEXT, params.fingerprint)
        if len(ct_env.blobs) != 1:
            raise SerializationError("ciphertext: expected one payload")
        payload = ct_env.blobs[0]
        zeroed = Envelope(
            Kind.CIPHERTEXT, params.fingerprint, blobs=(_backend.without_c0(payload, params),)
        ).pack()
        if env.subject != digest(zeroed):
            raise KeyMismatchError("the decryption share is not of this ciphertext's masked form")
        partial = _backend.add_first_element(env.blobs[0], payload, params)
        whole = Envelope(
            self.SHARE.KIND, params.fingerprint, env.n_parties, env.parties, env.subject, (partial,)
        )
        complete = self._require_complete(self.share_from_bytes(whole.pack()))
        with openfhe_errors("fusing decryption shares"):
            pt = self.cc.MultipartyDecryptFusion([complete.raw[0]])
        return np.asarray(pt.GetCKKSPackedValue(), dtype=np.complex128)


def fuse(protocol: ThresholdDecrypt, partial: Any) -> FloatArray:
    """OpenFHE's fusion of an aggregated partial decryption, without any party check."""
    with openfhe_errors("fusing decryption shares"):
        pt = protocol.cc.MultipartyDecryptFusion([partial])
    return np.asarray(pt.GetRealPackedValue(), dtype=np.float64)
