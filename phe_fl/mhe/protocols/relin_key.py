"""Collective relinearization key, in two rounds (OpenFHE's threshold key-switch
generation). Round 1 builds a key-switching key for the joint secret from a common a (the
lead's round-1 share); round 2 multiplies it by each party's share and sums.
"""

from __future__ import annotations

import secrets
from typing import Any

from phe_fl.errors import KeyMismatchError
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Kind, checksum_of, digest
from phe_fl.mhe.keys import JointPublicKey, RelinKey, SecretShare
from phe_fl.mhe.protocols._share import Protocol, Share

__all__ = ["RelinRound1Share", "RelinRound2Share", "RelinKeyGen"]


class RelinRound1Share(Share):
    KIND = Kind.RELIN_ROUND1_SHARE
    LOADERS = ("eval_key",)


class RelinRound2Share(Share):
    KIND = Kind.RELIN_ROUND2_SHARE
    LOADERS = ("eval_key",)


def _check_party(secret: SecretShare, n_parties: int) -> None:
    if secret.n_parties != n_parties:
        raise KeyMismatchError(
            f"secret share of a {secret.n_parties}-party key used in a {n_parties}-party run"
        )


def _round2_subject(round1: RelinRound1Share) -> bytes:
    """What binds a round-2 share to the round-1 aggregate it was made from: the aggregate's
    instance (its subject) and its envelope checksum (XXH3-128 over all of its bytes, kind,
    parties and payload included). Round-2 shares made from different aggregates, of this
    run or another, refuse to aggregate. The checksum was computed when the aggregate was
    packed or verified when it was received, so this costs nothing where SHA-256 over the
    25 MB aggregate cost ~16 ms at 2^15. Like the envelope, it guards against accidents,
    not against a member crafting a colliding aggregate (see crypto/SECURITY.md)."""
    return digest(b"phe-fl relin round 2|" + round1.subject + checksum_of(round1.to_bytes()))


class _Round2(Protocol[RelinRound2Share]):
    SHARE = RelinRound2Share

    def __init__(self, gen: RelinKeyGen) -> None:
        super().__init__(gen.ctx)
        self.tag = gen.tag

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("relinearization round-2 aggregation"):
            return (self.cc.MultiAddEvalMultKeys(a[0], b[0], self.tag),)


class RelinKeyGen(Protocol[RelinRound1Share]):
    """Round-1 shares aggregate with :meth:`aggregate`, round-2 with :meth:`aggregate_round2`."""

    SHARE = RelinRound1Share

    def __init__(self, joint_key: JointPublicKey) -> None:
        super().__init__(joint_key.ctx)
        self.tag = joint_key.key_tag
        self.round2 = _Round2(self)

    # round 1 -----------------------------------------------------------------------------
    def gen_crp(self, lead: SecretShare) -> RelinRound1Share:
        """Lead (party 0): its round-1 share, which is also the round's CRP."""
        if not lead.is_lead:
            raise KeyMismatchError("only the lead (party 0) samples the relinearization CRP")
        with openfhe_errors("relinearization CRP generation"):
            key = self.cc.KeySwitchGen(lead.raw, lead.raw)
        subject = secrets.token_bytes(32)
        return RelinRound1Share(self.ctx, (key,), lead.n_parties, frozenset({0}), subject)

    def gen_share(self, secret: SecretShare, crp: RelinRound1Share) -> RelinRound1Share:
        self._check(crp)
        _check_party(secret, crp.n_parties)
        if secret.is_lead:
            return crp
        with openfhe_errors("relinearization round-1 share"):
            key = self.cc.MultiKeySwitchGen(secret.raw, secret.raw, crp.raw[0])
        return RelinRound1Share(
            self.ctx, (key,), crp.n_parties, frozenset({secret.index}), crp.subject
        )

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("relinearization round-1 aggregation"):
            return (self.cc.MultiAddEvalKeys(a[0], b[0], self.tag),)

    # round 2 -----------------------------------------------------------------------------
    def gen_round2_share(self, secret: SecretShare, round1: RelinRound1Share) -> RelinRound2Share:
        """A party's round-2 share, from the complete round-1 aggregate."""
        self._require_complete(round1)
        _check_party(secret, round1.n_parties)
        with openfhe_errors("relinearization round-2 share"):
            key = self.cc.MultiMultEvalKey(secret.raw, round1.raw[0], self.tag)
        subject = _round2_subject(round1)
        return RelinRound2Share(
            self.ctx, (key,), round1.n_parties, frozenset({secret.index}), subject
        )

    def round2_share_from_bytes(self, data: bytes) -> RelinRound2Share:
        return self.round2.share_from_bytes(data)

    def aggregate_round2(self, a: RelinRound2Share, b: RelinRound2Share) -> RelinRound2Share:
        return self.round2.aggregate(a, b)

    def finalize(self, round2: RelinRound2Share) -> RelinKey:
        self.round2._require_complete(round2)
        return RelinKey(self.ctx, round2.raw[0])
