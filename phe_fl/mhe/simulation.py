"""All parties of a federation in one process, for tests and benchmarks ONLY.

This is the one place where several secret shares coexist in a process, which is why it
must never hold real data: deployments run one :class:`Party` per process (see the
federation layer). Every share still goes through the same verbs and, by default,
through bytes, so a test here exercises exactly what the network will carry.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from typing import TypeVar

from phe_fl.mhe.context import Ciphertext, Context, FloatArray
from phe_fl.mhe.keys import JointPublicKey, QuerierPublicKey, RelinKey, RotationKeys, SecretShare
from phe_fl.mhe.params import ParameterSet
from phe_fl.mhe.party import Party
from phe_fl.mhe.protocols import (
    PublicKeyGen,
    QueryKeySwitch,
    Refresh,
    RelinKeyGen,
    RotationKeyGen,
    ThresholdDecrypt,
)
from phe_fl.mhe.protocols._share import Protocol, Share

__all__ = ["LocalFederation", "tree_aggregate"]

S = TypeVar("S", bound=Share)


def tree_aggregate(
    protocol: Protocol[S],
    shares: Sequence[S],
    *,
    rng: random.Random | None = None,
    wire: bool = True,
) -> S:
    """Aggregate ``shares`` along a random binary tree (or left to right without ``rng``),
    round-tripping every intermediate share through bytes when ``wire`` is set."""
    nodes = list(shares)
    if wire:
        nodes = [protocol.share_from_bytes(s.to_bytes()) for s in nodes]
    while len(nodes) > 1:
        i = rng.randrange(len(nodes) - 1) if rng else 0
        a, b = nodes.pop(i), nodes.pop(i)
        if rng and rng.random() < 0.5:
            a, b = b, a
        merged = protocol.aggregate(a, b)
        if wire:
            merged = protocol.share_from_bytes(merged.to_bytes())
        nodes.insert(rng.randrange(len(nodes) + 1) if rng else 0, merged)
    return nodes[0]


class LocalFederation:
    """N simulated parties sharing one collective key (test and benchmark harness)."""

    def __init__(
        self,
        ctx: Context,
        parties: list[Party],
        joint_key: JointPublicKey,
        relin_key: RelinKey,
        rotation_keys: RotationKeys | None,
        *,
        wire: bool = True,
    ) -> None:
        self.ctx = ctx
        self.parties = parties
        self.joint_key = joint_key
        self.relin_key = relin_key
        self.rotation_keys = rotation_keys
        self.wire = wire

    @property
    def n_parties(self) -> int:
        return len(self.parties)

    @classmethod
    def setup(
        cls,
        params: ParameterSet,
        n_parties: int,
        *,
        rotations: Iterable[int] = (),
        wire: bool = True,
        rng: random.Random | None = None,
    ) -> LocalFederation:
        """Run every key-generation protocol among ``n_parties`` simulated parties."""
        ctx = Context(params)
        pkg = PublicKeyGen(ctx)
        lead_secret, crp = pkg.gen_crp(n_parties)
        secrets: list[SecretShare] = [lead_secret]
        pk_shares = [crp]
        for i in range(1, n_parties):
            secret, share = pkg.gen_share(i, crp)
            secrets.append(secret)
            pk_shares.append(share)
        joint = pkg.finalize(tree_aggregate(pkg, pk_shares, rng=rng, wire=wire))
        if wire:
            joint = JointPublicKey.from_bytes(ctx, joint.to_bytes())
        parties = [Party(s) for s in secrets]

        relin = RelinKeyGen(joint)
        r_crp = parties[0].relin_crp(relin)
        round1 = tree_aggregate(
            relin, [p.relin_round1(relin, r_crp) for p in parties], rng=rng, wire=wire
        )
        round2 = [p.relin_round2(relin, round1) for p in parties]
        relin_key = relin.finalize(tree_aggregate(relin.round2, round2, rng=rng, wire=wire))
        relin_key.install()

        rotation_keys = None
        steps = sorted(set(rotations))
        if steps:
            rot = RotationKeyGen(joint, steps)
            rot_crp = parties[0].rotation_crp(rot)
            agg = tree_aggregate(
                rot, [p.rotation_keys(rot, rot_crp) for p in parties], rng=rng, wire=wire
            )
            rotation_keys = rot.finalize(agg)
            rotation_keys.install()
        return cls(ctx, parties, joint, relin_key, rotation_keys, wire=wire)

    # convenience wrappers around the per-ciphertext protocols ----------------------------
    def encrypt(self, values: Sequence[float] | FloatArray) -> Ciphertext:
        return self.ctx.encrypt(values, self.joint_key)

    def decrypt(
        self,
        ct: Ciphertext,
        *,
        length: int | None = None,
        decimals: int | None = None,
        rng: random.Random | None = None,
    ) -> FloatArray:
        proto = ThresholdDecrypt(self.ctx)
        agg = tree_aggregate(
            proto, [p.decryption_share(ct) for p in self.parties], rng=rng, wire=self.wire
        )
        return proto.finalize(agg, ct, length=length, decimals=decimals)

    def refresh(self, ct: Ciphertext, *, rng: random.Random | None = None) -> Ciphertext:
        proto = Refresh(self.ctx)
        prepared = proto.prepare(ct)
        crp = proto.gen_crp(self.joint_key)
        shares = [p.refresh_share(prepared, crp) for p in self.parties]
        agg = tree_aggregate(proto, shares, rng=rng, wire=self.wire)
        return proto.finalize(agg, prepared, crp, self.joint_key)

    def key_switch(
        self, ct: Ciphertext, querier: QuerierPublicKey, *, rng: random.Random | None = None
    ) -> Ciphertext:
        proto = QueryKeySwitch(self.ctx, querier)
        shares = [p.key_switch_share(ct, querier) for p in self.parties]
        return proto.finalize(tree_aggregate(proto, shares, rng=rng, wire=self.wire), ct)
