"""Retry safety: a party never answers the same request twice with fresh noise, and a
refresh can be aggregated and finalized again from the same cached shares."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import PheFlError
from phe_fl.mhe import (
    LocalFederation,
    Party,
    QuerierKeyPair,
    QuerierPublicKey,
    Refresh,
    RefreshCRP,
    ThresholdDecrypt,
    _backend,
)
from tests.helpers import ROTATIONS, error_bound, max_abs_error

N = 3


@pytest.fixture(scope="module")
def fed(params):
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


@pytest.fixture(scope="module")
def plaintext(fed):
    return np.random.default_rng(12).uniform(-1, 1, fed.ctx.slots)


@pytest.fixture(scope="module")
def ct(fed, plaintext):
    return fed.encrypt(plaintext)


@pytest.fixture(scope="module")
def low(fed, plaintext):
    """A ciphertext multiplied down to the refresh threshold, and its plaintext."""
    ctx = fed.ctx
    c = fed.encrypt(plaintext)
    want = plaintext.copy()
    rng = np.random.default_rng(13)
    while c.levels_left > ctx.params.refresh_min_levels:
        f = rng.uniform(0.5, 1.5, ctx.slots)
        c = ctx.rescale(ctx.mul(c, ctx.encrypt(f, fed.joint_key, level=c.level)))
        want = want * f
    return c, want


@pytest.fixture(scope="module")
def querier(fed):
    return QuerierKeyPair.generate(fed.ctx)


@pytest.mark.parametrize("index", range(N), ids=lambda i: f"party={i}")
def test_repeated_decryption_share_request_gets_identical_bytes(fed, ct, index):
    party = fed.parties[index]
    first = party.decryption_share(ct).to_bytes()
    assert party.decryption_share(ct).to_bytes() == first
    # the retry arrives over the network: a new Ciphertext object from the same bytes
    again = fed.ctx.ciphertext_from_bytes(ct.to_bytes())
    assert again is not ct
    assert party.decryption_share(again).to_bytes() == first


def test_without_the_cache_a_share_would_carry_fresh_noise(fed, ct):
    """Control: what the cache prevents. A party object with an empty cache (same secret)
    floods afresh, so a receiver of both could average the flooding away."""
    first = fed.parties[1].decryption_share(ct).to_bytes()
    fresh = Party(fed.parties[1]._secret).decryption_share(ct).to_bytes()
    assert fresh != first


def test_repeated_refresh_share_request_gets_identical_bytes(fed, low):
    c, _ = low
    proto = Refresh(fed.ctx)
    prepared = proto.prepare(c)
    crp = proto.gen_crp(fed.joint_key)
    for party in fed.parties:
        first = party.refresh_share(prepared, crp).to_bytes()
        assert party.refresh_share(prepared, crp).to_bytes() == first
        again_ct = fed.ctx.ciphertext_from_bytes(prepared.to_bytes())
        again_crp = RefreshCRP.from_bytes(fed.ctx, crp.to_bytes())
        assert party.refresh_share(again_ct, again_crp).to_bytes() == first
    # a new CRP is a new protocol instance: a new share
    other = fed.parties[0].refresh_share(prepared, proto.gen_crp(fed.joint_key))
    assert other.to_bytes() != fed.parties[0].refresh_share(prepared, crp).to_bytes()


def test_repeated_key_switch_share_request_gets_identical_bytes(fed, ct, querier):
    for party in fed.parties:
        first = party.key_switch_share(ct, querier.public_key).to_bytes()
        assert party.key_switch_share(ct, querier.public_key).to_bytes() == first
        again_ct = fed.ctx.ciphertext_from_bytes(ct.to_bytes())
        again_q = QuerierPublicKey.from_bytes(fed.ctx, querier.public_key.to_bytes())
        assert party.key_switch_share(again_ct, again_q).to_bytes() == first


def test_refresh_twice_from_the_same_cached_shares(fed, low):
    """OpenFHE's IntMPBootAdd mutates its first input; the protocol must aggregate clones.
    Shares are aggregated in memory (no bytes in between), twice, and finalized twice."""
    c, want = low
    ctx = fed.ctx
    proto = Refresh(ctx)
    prepared = proto.prepare(c)
    crp = proto.gen_crp(fed.joint_key)
    shares = [p.refresh_share(prepared, crp) for p in fed.parties]
    before = [[_backend.dump(r) for r in s.raw] for s in shares]
    crp_before = _backend.dump(crp.raw)

    agg1 = proto.aggregate(proto.aggregate(shares[0], shares[1]), shares[2])
    agg2 = proto.aggregate(shares[0], proto.aggregate(shares[1], shares[2]))
    assert [[_backend.dump(r) for r in s.raw] for s in shares] == before, "shares were mutated"
    agg1_before = [_backend.dump(r) for r in agg1.raw]

    outs = [
        proto.finalize(agg1, prepared, crp, fed.joint_key),
        proto.finalize(agg1, prepared, crp, fed.joint_key),
        proto.finalize(agg2, prepared, crp, fed.joint_key),
    ]
    assert [_backend.dump(r) for r in agg1.raw] == agg1_before, "aggregate mutated by finalize"
    assert _backend.dump(crp.raw) == crp_before, "CRP mutated"
    bound = error_bound(ctx.params, N)
    for out in outs:
        assert out.levels_left == ctx.params.mult_depth
        assert out.key_tag == fed.joint_key.key_tag
        assert max_abs_error(fed.decrypt(out, decimals=10), want) <= bound


def test_refreshed_ciphertext_keeps_the_joint_key_and_multiplies(fed, low):
    c, want = low
    ctx = fed.ctx
    out = fed.refresh(c)
    assert out.key_tag == fed.joint_key.key_tag
    assert out.levels_left == ctx.params.mult_depth
    g = np.random.default_rng(14).uniform(-1, 1, ctx.slots)
    prod = ctx.rescale(ctx.mul(out, fed.encrypt(g)))
    prod = ctx.rescale(ctx.mul(prod, prod))
    got = fed.decrypt(prod, decimals=10)
    assert max_abs_error(got, (want * g) ** 2) <= 10 * error_bound(ctx.params, N)
    # and it can be refreshed again
    again = fed.refresh(ctx.rescale(ctx.mul_plain(out, 1.0)))
    assert max_abs_error(fed.decrypt(again, decimals=10), want) <= error_bound(ctx.params, N)


def test_repeated_threshold_decryption_releases_identical_values(fed, ct):
    proto = ThresholdDecrypt(fed.ctx)
    runs = [fed.decrypt(ct, decimals=12) for _ in range(2)]
    assert np.array_equal(runs[0], runs[1])
    full = proto.aggregate_all([p.decryption_share(ct) for p in fed.parties])
    assert np.array_equal(proto.finalize(full, ct, decimals=12), runs[0])


# -- the same ciphertext answered twice with fresh noise ------------------------------------
def _flood_difference(fed, ct, q1: QuerierKeyPair, q2: QuerierKeyPair) -> float:
    """Std of the difference between what two querier keys receive for one ciphertext."""
    v1 = q1.decrypt(fed.key_switch(ct, q1.public_key), decimals=12)
    v2 = q2.decrypt(fed.key_switch(ct, q2.public_key), decimals=12)
    return float(np.std(v1 - v2))


def test_fresh_noise_is_visible_to_the_measurement_below(fed, ct):
    """Control: two separate party sets (empty caches) answering one ciphertext give
    results whose difference has the flooding's size (sqrt(2) sigma)."""
    q = QuerierKeyPair.generate(fed.ctx)
    v1 = q.decrypt(fed.key_switch(ct, q.public_key), decimals=12)
    fresh_parties = LocalFederation(
        fed.ctx, [Party(p._secret) for p in fed.parties], fed.joint_key, fed.relin_key, None
    )
    v2 = q.decrypt(fresh_parties.key_switch(ct, q.public_key), decimals=12)
    sigma = fed.ctx.params.expected_flooding_error(N)
    assert float(np.std(v1 - v2)) > sigma


def test_the_same_querier_key_re_encoded_gets_no_fresh_noise(fed, ct, querier):
    pk = querier.public_key
    re_encoded = QuerierPublicKey(fed.ctx, QuerierPublicKey.from_bytes(fed.ctx, pk.to_bytes()).raw)
    assert re_encoded.key_tag == pk.key_tag  # same key, same tag
    twin = QuerierKeyPair(fed.ctx, re_encoded, querier._secret)
    try:
        diff = _flood_difference(fed, ct, querier, twin)
    except PheFlError:
        return  # refusing the second request is a fix too
    assert diff < 0.5 * fed.ctx.params.expected_flooding_error(N), diff


def test_one_ciphertext_switched_to_two_querier_keys_gets_no_fresh_noise(fed, ct, querier):
    second = QuerierKeyPair.generate(fed.ctx)
    try:
        diff = _flood_difference(fed, ct, querier, second)
    except PheFlError:
        return
    assert diff < 0.5 * fed.ctx.params.expected_flooding_error(N), diff


def test_the_same_ciphertext_in_another_serialized_form_gets_no_fresh_noise(fed, ct):
    """OpenFHE serializes a ciphertext differently depending on where its ring parameters
    came from; every form of one ciphertext must reach the same flooded partial at a
    party, not independent ones."""
    from phe_fl.mhe.context import Ciphertext

    first = ct.to_bytes()
    loaded = fed.ctx.ciphertext_from_bytes(first)
    second = Ciphertext(fed.ctx, loaded._ct).to_bytes()  # re-serialized after loading
    assert first != second  # two byte forms of one ciphertext
    a, b = fed.ctx.ciphertext_from_bytes(first), fed.ctx.ciphertext_from_bytes(second)
    assert a.digest != b.digest and a.content_digest == b.content_digest
    party = Party(fed.parties[1]._secret)
    share_a, share_b = party.decryption_share(a), party.decryption_share(b)
    assert _backend.dump(share_a.raw[0]) == _backend.dump(share_b.raw[0])


def test_a_share_that_left_the_cache_is_refused_not_redrawn(fed) -> None:  # type: ignore[no-untyped-def]
    party = Party(fed.parties[0]._secret, cache_size=2)
    cts = [fed.encrypt(np.full(4, float(v))) for v in range(3)]
    first = [party.decryption_share(c).to_bytes() for c in cts]
    assert party.decryption_share(cts[2]).to_bytes() == first[2]  # still cached
    with pytest.raises(PheFlError, match=r"not drawn again with fresh noise"):
        party.decryption_share(cts[0])


def test_the_cache_is_bounded_by_bytes_and_keeps_the_newest_share(fed) -> None:  # type: ignore[no-untyped-def]
    """The budget counts the bytes a retry is answered with (a rotation-key round's share
    is 200 MB at 2^15); the newest share stays whatever its size, older ones leave and are
    then refused, never drawn again."""
    party = Party(fed.parties[0]._secret, cache_bytes=1)
    cts = [fed.encrypt(np.full(4, float(v))) for v in range(2)]
    first = [party.decryption_share(c).to_bytes() for c in cts]
    assert party.decryption_share(cts[1]).to_bytes() == first[1]
    with pytest.raises(PheFlError, match=r"not drawn again with fresh noise"):
        party.decryption_share(cts[0])
    roomy = Party(fed.parties[0]._secret)
    again = [roomy.decryption_share(c).to_bytes() for c in cts]
    assert [roomy.decryption_share(c).to_bytes() for c in cts] == again


def test_refresh_shares_do_not_push_decryption_shares_out(fed) -> None:  # type: ignore[no-untyped-def]
    """Refresh shares (a fresh CRP each, asked again only by a retry, which the node's
    state store answers) are kept under their own small budget: a training's thousands of
    them do not evict the decryption shares a later job may ask for again (a querier
    decrypting the same model twice)."""
    party = Party(fed.parties[0]._secret, retry_cache_bytes=1)
    model = fed.encrypt(np.full(4, 0.5))
    first = party.decryption_share(model).to_bytes()
    proto = Refresh(fed.ctx)
    cts = [proto.prepare(fed.encrypt(np.full(4, float(v)))) for v in range(3)]
    crps = [proto.gen_crp(fed.joint_key) for _ in cts]
    shares = [party.refresh_share(c, crp).to_bytes() for c, crp in zip(cts, crps, strict=True)]
    assert party.refresh_share(cts[2], crps[2]).to_bytes() == shares[2]  # the newest stays
    with pytest.raises(PheFlError, match=r"not drawn again with fresh noise"):
        party.refresh_share(cts[0], crps[0])
    assert party.decryption_share(model).to_bytes() == first
