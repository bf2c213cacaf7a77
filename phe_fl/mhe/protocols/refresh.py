"""Collective bootstrapping (refresh): brings a ciphertext low on levels back to full
depth, with every party contributing a masked re-encryption share (OpenFHE's IntMPBoot*,
Mouchet et al. protocol 5). The output stays under the joint key.

Safe to retry: OpenFHE's aggregation modifies its first argument in place, so this module
aggregates clones; parties cache their share per (ciphertext, CRP) pair.
"""

from __future__ import annotations

from typing import Any

from phe_fl.errors import KeyMismatchError, LevelError, SerializationError
from phe_fl.mhe import _backend
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Envelope, Kind, digest
from phe_fl.mhe.context import Ciphertext, Context
from phe_fl.mhe.keys import JointPublicKey, SecretShare
from phe_fl.mhe.protocols._share import Protocol, Share

__all__ = ["RefreshCRP", "RefreshShare", "Refresh"]


class RefreshCRP:
    """The common random element of one refresh, sampled by the lead under the joint key."""

    def __init__(self, ctx: Context, raw: Any, *, data: bytes | None = None) -> None:
        self.ctx = ctx
        self.raw = raw
        self._bytes = data
        self._digest: bytes | None = None

    def to_bytes(self) -> bytes:
        if self._bytes is None:
            self._bytes = Envelope(
                Kind.REFRESH_CRP, self.ctx.params.fingerprint, blobs=(_backend.dump(self.raw),)
            ).pack()
        return self._bytes

    @property
    def digest(self) -> bytes:
        if self._digest is None:
            self._digest = digest(self.to_bytes())
        return self._digest

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> RefreshCRP:
        env = Envelope.unpack(data, Kind.REFRESH_CRP, ctx.params.fingerprint)
        if len(env.blobs) != 1:
            raise SerializationError("refresh CRP: expected one payload")
        return cls(ctx, _backend.load("ciphertext", env.blobs[0], ctx.params), data=bytes(data))


class RefreshShare(Share):
    KIND = Kind.REFRESH_SHARE
    LOADERS = ("ciphertext", "ciphertext")


def refresh_subject(ct: Ciphertext, crp: RefreshCRP) -> bytes:
    return digest(ct.digest + crp.digest)


class Refresh(Protocol[RefreshShare]):
    SHARE = RefreshShare

    def prepare(self, ct: Ciphertext) -> Ciphertext:
        """Root: compress ``ct`` to the towers the protocol works on (send this to parties)."""
        self.ctx.own(ct)
        if ct.scale_degree != 1:
            raise LevelError("refresh needs a rescaled ciphertext (scale degree 1)")
        if ct.levels_left < self.ctx.params.refresh_min_levels:
            raise LevelError(
                f"refresh needs {self.ctx.params.refresh_min_levels} levels left, ciphertext has "
                f"{ct.levels_left}; refresh earlier"
            )
        with openfhe_errors("preparing a refresh"):
            return Ciphertext(self.ctx, self.cc.IntMPBootAdjustScale(ct._ct))

    def gen_crp(self, joint_key: JointPublicKey) -> RefreshCRP:
        joint_key.check_context(self.ctx)
        with openfhe_errors("refresh CRP generation"):
            return RefreshCRP(self.ctx, self.cc.IntMPBootRandomElementGen(joint_key.raw))

    def gen_share(self, secret: SecretShare, prepared: Ciphertext, crp: RefreshCRP) -> RefreshShare:
        """A party's masked decryption and re-encryption shares. Cache per (ct, CRP)."""
        self.ctx.own(prepared)
        secret.check_context(self.ctx)
        with openfhe_errors("refresh share"):
            c1 = prepared._ct.Clone()
            c1.RemoveElement(0)
            pair = self.cc.IntMPBootDecrypt(secret.raw, c1, crp.raw)
        return RefreshShare(
            self.ctx,
            tuple(pair),
            secret.n_parties,
            frozenset({secret.index}),
            refresh_subject(prepared, crp),
        )

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("refresh-share aggregation"):
            # IntMPBootAdd writes into its first pair only: clone that one.
            pairs = [[a[0].Clone(), a[1].Clone()], [b[0], b[1]]]
            return tuple(self.cc.IntMPBootAdd(pairs))

    def finalize(
        self, share: RefreshShare, prepared: Ciphertext, crp: RefreshCRP, joint_key: JointPublicKey
    ) -> Ciphertext:
        """Root: the refreshed ciphertext, at full depth, under the joint key."""
        self._require_complete(share, refresh_subject(prepared, crp))
        if prepared.key_tag != joint_key.key_tag:
            raise KeyMismatchError("ciphertext is not under this joint key")
        with openfhe_errors("refresh finalization"):  # IntMPBootEncrypt modifies no input
            out = self.cc.IntMPBootEncrypt(joint_key.raw, list(share.raw), crp.raw, prepared._ct)
        return Ciphertext(self.ctx, out)
