"""N-1 colluding parties cannot decrypt: every decryption (threshold or key switch) needs
every party's share, and no single party's key or share reveals anything.

The refusal of ``finalize`` is the API guard; fusing incomplete sums directly with
OpenFHE (``phe_fl.mhe.protocols.decryption.fuse``) shows the cryptographic guarantee:
either OpenFHE refuses or the values have no relation to the plaintext.
"""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import KeyMismatchError, PartySetError
from phe_fl.mhe import (
    Ciphertext,
    LocalFederation,
    QuerierKeyPair,
    QuerierPublicKey,
    QueryKeySwitch,
    ThresholdDecrypt,
)
from phe_fl.mhe.protocols.decryption import fuse
from phe_fl.mhe.simulation import tree_aggregate
from tests.helpers import (
    ROTATIONS,
    assert_cannot_decrypt,
    error_bound,
    max_abs_error,
    unrelated_to,
)

N = 5
# the lead (carries c0), a non-lead, the last party
MISSING = [
    pytest.param(0, id="missing=0(lead)"),
    pytest.param(1, id="missing=1"),
    pytest.param(N - 1, id=f"missing={N - 1}"),
]
SINGLE = [pytest.param(0, id="party=0(lead)"), pytest.param(2, id="party=2")]


@pytest.fixture(scope="module")
def fed(params):
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


@pytest.fixture(scope="module")
def plaintext(fed):
    return np.random.default_rng(77).uniform(-3, 3, fed.ctx.slots)


@pytest.fixture(scope="module", params=["fresh", "computed"])
def ciphertext(request, fed, plaintext):
    """A fresh encryption, and the result of a computation (level 1, after rotation)."""
    ctx = fed.ctx
    if request.param == "fresh":
        return fed.encrypt(plaintext)
    ones = fed.encrypt(np.ones(ctx.slots))
    return ctx.rotate(ctx.rescale(ctx.mul(fed.encrypt(np.roll(plaintext, 5)), ones)), 5)


@pytest.fixture(scope="module")
def dec_shares(fed, ciphertext):
    return [p.decryption_share(ciphertext) for p in fed.parties]


@pytest.fixture(scope="module")
def querier(fed):
    return QuerierKeyPair.generate(fed.ctx)


@pytest.fixture(scope="module")
def ks_shares(fed, ciphertext, querier):
    return [p.key_switch_share(ciphertext, querier.public_key) for p in fed.parties]


def test_garbage_detector_flags_only_unrelated_values(plaintext):
    """Control for assert_cannot_decrypt: a scaled or noisy plaintext is related."""
    rng = np.random.default_rng(0)
    assert not unrelated_to(plaintext * 1e110 + rng.normal(0, 1e110, plaintext.size), plaintext)[0]
    assert not unrelated_to(plaintext + rng.normal(0, 3, plaintext.size), plaintext)[0]
    assert unrelated_to(rng.normal(0, 1e110, plaintext.size), plaintext)[0]
    assert unrelated_to(np.full(plaintext.size, np.inf), plaintext)[0]


def test_all_shares_do_decrypt(fed, ciphertext, plaintext, dec_shares, ks_shares, querier):
    """Control: the same shares, complete, give the plaintext."""
    bound = error_bound(fed.ctx.params, N)
    proto = ThresholdDecrypt(fed.ctx)
    assert (
        max_abs_error(proto.finalize(tree_aggregate(proto, dec_shares), ciphertext), plaintext)
        < 1e-3
    )
    full = fuse(proto, proto.aggregate_all(dec_shares).raw[0])
    assert max_abs_error(full, plaintext) <= bound
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    switched = ks.finalize(ks.aggregate_all(ks_shares), ciphertext)
    assert max_abs_error(querier.decrypt(switched, decimals=10), plaintext) <= bound


@pytest.mark.parametrize("missing", MISSING)
def test_finalize_refuses_decryption_shares_missing_one_party(fed, ciphertext, dec_shares, missing):
    proto = ThresholdDecrypt(fed.ctx)
    partial = proto.aggregate_all([s for s in dec_shares if missing not in s.parties])
    assert not partial.complete
    with pytest.raises(PartySetError, match=rf"lacks parties \[{missing}\] of {N}"):
        proto.finalize(partial, ciphertext)
    with pytest.raises(PartySetError):
        proto.finalize(partial)


@pytest.mark.parametrize("missing", MISSING)
def test_fusing_all_but_one_decryption_share_reveals_nothing(
    fed, plaintext, dec_shares, missing, record_property
):
    proto = ThresholdDecrypt(fed.ctx)
    partial = proto.aggregate_all([s for s in dec_shares if missing not in s.parties])
    outcome = assert_cannot_decrypt(lambda: fuse(proto, partial.raw[0]), plaintext)
    record_property("outcome", outcome)


@pytest.mark.parametrize("missing", MISSING)
def test_key_switch_missing_one_party_is_refused_and_unreadable(
    fed, ciphertext, plaintext, querier, ks_shares, missing
):
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    partial = ks.aggregate_all([s for s in ks_shares if missing not in s.parties])
    with pytest.raises(PartySetError, match=rf"lacks parties \[{missing}\]"):
        ks.finalize(partial, ciphertext)
    forced = Ciphertext(fed.ctx, partial.raw[0])  # bypass finalize
    assert_cannot_decrypt(lambda: querier.decrypt(forced, decimals=10), plaintext)


@pytest.mark.parametrize("party", SINGLE)
def test_single_decryption_share_alone_reveals_nothing(fed, plaintext, dec_shares, party):
    proto = ThresholdDecrypt(fed.ctx)
    assert_cannot_decrypt(lambda: fuse(proto, dec_shares[party].raw[0]), plaintext)


@pytest.mark.parametrize("party", SINGLE)
def test_single_key_switch_share_alone_reveals_nothing(fed, plaintext, querier, ks_shares, party):
    alone = Ciphertext(fed.ctx, ks_shares[party].raw[0])
    assert_cannot_decrypt(lambda: querier.decrypt(alone, decimals=10), plaintext)


@pytest.mark.parametrize("party", SINGLE)
def test_single_secret_share_cannot_decrypt_as_a_secret_key(fed, ciphertext, plaintext, party):
    """A party uses its own secret share as if it were the whole key (posing as a querier
    whose public key is the joint key, so the key-tag check passes)."""
    secret = fed.parties[party]._secret
    pretender = QuerierKeyPair(fed.ctx, QuerierPublicKey(fed.ctx, fed.joint_key.raw), secret.raw)
    assert_cannot_decrypt(lambda: pretender.decrypt(ciphertext, decimals=10), plaintext)


@pytest.mark.parametrize("missing", MISSING)
def test_n_minus_one_colluders_with_unflooded_partials_cannot_decrypt(
    fed, ciphertext, plaintext, missing
):
    """The colluders use their secret shares directly (no flooding, and one of them adds
    c0 even when the real lead is the one missing): still no plaintext."""
    cc = fed.ctx.cc
    colluders = [p for p in fed.parties if p.index != missing]
    partials = [
        (cc.MultipartyDecryptLead if k == 0 else cc.MultipartyDecryptMain)(
            [ciphertext._ct], p._secret.raw
        )[0]
        for k, p in enumerate(colluders)
    ]
    assert_cannot_decrypt(
        lambda: np.asarray(cc.MultipartyDecryptFusion(partials).GetRealPackedValue()), plaintext
    )


def test_querier_key_cannot_read_a_ciphertext_not_switched_to_it(fed, ciphertext, querier):
    with pytest.raises(KeyMismatchError, match="not switched to this querier"):
        querier.decrypt(ciphertext)


def test_parties_cannot_threshold_decrypt_a_result_switched_to_the_querier(
    fed, ciphertext, plaintext, querier, ks_shares
):
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    switched = ks.finalize(ks.aggregate_all(ks_shares), ciphertext)
    proto = ThresholdDecrypt(fed.ctx)

    def all_parties_decrypt():
        shares = [proto.gen_share(p._secret, switched) for p in fed.parties]
        return fuse(proto, proto.aggregate_all(shares).raw[0])

    assert_cannot_decrypt(all_parties_decrypt, plaintext)


def test_another_querier_cannot_read_the_switched_result(
    fed, ciphertext, plaintext, querier, ks_shares
):
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    switched = ks.finalize(ks.aggregate_all(ks_shares), ciphertext)
    eve = QuerierKeyPair.generate(fed.ctx)
    with pytest.raises(KeyMismatchError):
        eve.decrypt(switched)
    # even with the tag check bypassed, Eve's key gives garbage
    eve_posing = QuerierKeyPair(fed.ctx, querier.public_key, eve._secret)
    assert_cannot_decrypt(lambda: eve_posing.decrypt(switched, decimals=10), plaintext)
