"""Public-key switch to a querier: a ciphertext under the joint key becomes a ciphertext
under the querier's own key, without anyone decrypting it.

Party i's share is its flooded partial decryption plus a fresh encryption of zero under
the querier's public key. Shares are themselves encrypted to the querier, so the nodes
that aggregate them learn nothing; the querier sees only the sum.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe._wire import Kind, digest
from phe_fl.mhe.context import Ciphertext, Context
from phe_fl.mhe.keys import QuerierPublicKey, SecretShare
from phe_fl.mhe.protocols._share import Protocol, Share
from phe_fl.mhe.protocols.decryption import flooded_partial

__all__ = ["KeySwitchShare", "QueryKeySwitch"]


class KeySwitchShare(Share):
    KIND = Kind.KEY_SWITCH_SHARE
    LOADERS = ("ciphertext",)


def key_switch_subject(ct: Ciphertext, querier: QuerierPublicKey) -> bytes:
    return digest(ct.digest + querier.digest)


class QueryKeySwitch(Protocol[KeySwitchShare]):
    def __init__(self, ctx: Context, querier: QuerierPublicKey) -> None:
        super().__init__(ctx)
        querier.check_context(ctx)
        self.querier = querier

    SHARE = KeySwitchShare

    def gen_share(
        self, secret: SecretShare, ct: Ciphertext, partial: Any | None = None
    ) -> KeySwitchShare:
        """A party's share for ``ct``: its flooded partial decryption (``partial`` when
        already drawn for this ciphertext) plus a fresh encryption of zero to the querier."""
        self.ctx.own(ct)
        secret.check_context(self.ctx)
        if partial is None:
            partial = flooded_partial(secret, ct)
        with openfhe_errors("key-switch share"):
            partial = partial.Clone()
            partial.SetKeyTag(self.querier.key_tag)
            zero = self.cc.MakeCKKSPackedPlaintext(np.zeros(1), ct.scale_degree, ct.level)
            share = self.cc.EvalAdd(partial, self.cc.Encrypt(self.querier.raw, zero))
        return KeySwitchShare(
            self.ctx,
            (share,),
            secret.n_parties,
            frozenset({secret.index}),
            key_switch_subject(ct, self.querier),
        )

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        with openfhe_errors("key-switch aggregation"):
            return (self.cc.EvalAdd(a[0], b[0]),)

    def finalize(self, share: KeySwitchShare, ct: Ciphertext | None = None) -> Ciphertext:
        """The switched ciphertext, readable only with the querier's secret key."""
        subject = key_switch_subject(ct, self.querier) if ct is not None else None
        self._require_complete(share, subject)
        return Ciphertext(self.ctx, share.raw[0])
