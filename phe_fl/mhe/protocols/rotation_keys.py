"""Collective rotation keys for an explicit list of rotation steps (never the 100 MB+
EvalSum key maps unless a computation asks for every power of two).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from typing import Any

from phe_fl.errors import KeyMismatchError, ParameterError
from phe_fl.mhe import _backend
from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Kind
from phe_fl.mhe.context import MAX_ROTATION_KEYS
from phe_fl.mhe.keys import JointPublicKey, RotationKeys, SecretShare
from phe_fl.mhe.protocols._share import Protocol, Share

__all__ = ["RotationKeysShare", "RotationKeyGen"]


class RotationKeysShare(Share):
    KIND = Kind.ROTATION_KEYS_SHARE
    LOADERS = ("eval_key_map",)


class RotationKeyGen(Protocol[RotationKeysShare]):
    def __init__(self, joint_key: JointPublicKey, indices: Iterable[int]) -> None:
        super().__init__(joint_key.ctx)
        self.tag = joint_key.key_tag
        steps = sorted({int(i) for i in indices})
        slots = self.ctx.slots
        bad = [i for i in steps if i == 0 or not -slots < i < slots]
        if not steps or bad:
            raise ParameterError(
                f"rotation steps must be non-zero and within +-{slots - 1}; got {bad or 'none'}"
            )
        if len(steps) > MAX_ROTATION_KEYS:
            raise ParameterError(
                f"{len(steps)} rotation steps asked; one key generation makes at most "
                f"{MAX_ROTATION_KEYS}"
            )
        self.indices = tuple(steps)

    SHARE = RotationKeysShare

    def gen_crp(self, lead: SecretShare) -> RotationKeysShare:
        """Lead (party 0): its rotation keys for exactly these steps, also the CRP."""
        if not lead.is_lead:
            raise KeyMismatchError("only the lead (party 0) samples the rotation-key CRP")
        # OpenFHE files generated keys under the secret's tag; a private copy with a fresh
        # tag keeps this map to exactly the requested steps.
        with openfhe_errors("rotation CRP generation"):
            copy = _backend.load("private_key", _backend.dump(lead.raw))
            copy.SetKeyTag("phe-fl-rot-" + secrets.token_hex(8))
            self.cc.EvalAtIndexKeyGen(copy, list(self.indices))
            key_map = self.cc.GetEvalAutomorphismKeyMap(copy.GetKeyTag())
        subject = secrets.token_bytes(32)
        return RotationKeysShare(self.ctx, (key_map,), lead.n_parties, frozenset({0}), subject)

    def gen_share(self, secret: SecretShare, crp: RotationKeysShare) -> RotationKeysShare:
        self._check(crp)
        if secret.n_parties != crp.n_parties:
            raise KeyMismatchError("secret share belongs to a federation of another size")
        if secret.is_lead:
            return crp
        with openfhe_errors("rotation-key share"):
            key_map = self.cc.MultiEvalAtIndexKeyGen(
                secret.raw, crp.raw[0], list(self.indices), self.tag
            )
        return RotationKeysShare(
            self.ctx, (key_map,), crp.n_parties, frozenset({secret.index}), crp.subject
        )

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("rotation-key aggregation"):
            return (self.cc.MultiAddEvalAutomorphismKeys(a[0], b[0], self.tag),)

    def finalize(self, share: RotationKeysShare) -> RotationKeys:
        self._require_complete(share)
        return RotationKeys(self.ctx, share.raw[0], self.indices, self.tag)
