"""Collective public key: b = sum_i b_i with b_i = -a*s_i + e_i for a common a.

OpenFHE draws each party's secret together with its public-key share, so this protocol
also creates the parties' :class:`SecretShare` objects. The lead's public key is the
common random element: every other party reuses its ``a``.
"""

from __future__ import annotations

import secrets
from typing import Any

from phe_fl.errors import ParameterError
from phe_fl.mhe import _backend
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Kind
from phe_fl.mhe.keys import JointPublicKey, SecretShare
from phe_fl.mhe.protocols._share import Protocol, Share

__all__ = ["PublicKeyShare", "PublicKeyGen"]


class PublicKeyShare(Share):
    KIND = Kind.PUBLIC_KEY_SHARE
    LOADERS = ("public_key",)

    @property
    def joint_tag(self) -> str:
        """Key tag of the joint key this instance produces, derived from the lead's a."""
        return "phe-fl-" + self.subject[:12].hex()


class PublicKeyGen(Protocol[PublicKeyShare]):
    SHARE = PublicKeyShare

    def gen_crp(self, n_parties: int) -> tuple[SecretShare, PublicKeyShare]:
        """Lead (party 0): its secret share, and its public-key share, which is the CRP."""
        _check_count(n_parties)
        with openfhe_errors("lead key generation"):
            kp = self.cc.KeyGen()
        subject = secrets.token_bytes(32)  # names this key-generation instance
        secret = SecretShare(self.ctx, kp.secretKey, 0, n_parties)
        return secret, PublicKeyShare(self.ctx, (kp.publicKey,), n_parties, frozenset({0}), subject)

    def gen_share(self, party: int, crp: PublicKeyShare) -> tuple[SecretShare, PublicKeyShare]:
        """Party ``party`` (>= 1): a fresh secret share and its public-key share for ``crp``."""
        self._check(crp)
        if crp.parties != frozenset({0}):
            raise ParameterError("the public-key CRP must be the lead's own share")
        if not 1 <= party < crp.n_parties:
            raise ParameterError(f"party index {party} outside 1..{crp.n_parties - 1}")
        with openfhe_errors("public-key share generation"):
            kp = self.cc.MultipartyKeyGen(crp.raw[0], False, True)
        secret = SecretShare(self.ctx, kp.secretKey, party, crp.n_parties)
        share = PublicKeyShare(
            self.ctx, (kp.publicKey,), crp.n_parties, frozenset({party}), crp.subject
        )
        return secret, share

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("public-key share aggregation"):
            return (self.cc.MultiAddPubKeys(a[0], b[0], "phe-fl-partial"),)

    def finalize(self, share: PublicKeyShare) -> JointPublicKey:
        self._require_complete(share)
        raw = share.raw[0]
        if share.n_parties == 1:
            with openfhe_errors("public-key finalization"):
                raw = _backend.load("public_key", _backend.dump(raw), self.ctx.params)
        raw.SetKeyTag(share.joint_tag)
        return JointPublicKey(self.ctx, raw)


def _check_count(n_parties: int) -> None:
    if not 1 <= n_parties <= 4096:
        raise ParameterError(f"party count must be in 1..4096, got {n_parties}")
