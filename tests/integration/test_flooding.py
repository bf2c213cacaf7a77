"""Decryption-share flooding has the declared size, and released values are rounded."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import ParameterError
from phe_fl.mhe import LocalFederation, QuerierKeyPair, ThresholdDecrypt
from phe_fl.mhe.protocols.decryption import fuse
from tests.helpers import party_id

PARTY_COUNTS = [pytest.param(3, id=party_id(3)), pytest.param(10, id=party_id(10))]


@pytest.fixture(scope="module", params=PARTY_COUNTS)
def fed(request, params):
    return LocalFederation.setup(params, request.param)


def measured_error_std(values: np.ndarray, want: np.ndarray) -> float:
    return float(np.std(values - want))


def test_threshold_decryption_error_std_matches_expected_flooding(fed, record_property):
    ctx = fed.ctx
    x = np.random.default_rng(fed.n_parties).uniform(-1, 1, ctx.slots)
    got = fed.decrypt(fed.encrypt(x), decimals=12)
    std = measured_error_std(got, x)
    expected = ctx.params.expected_flooding_error(fed.n_parties)
    record_property("error_std", std)
    record_property("expected_flooding_error", expected)
    print(
        f"\n[n={fed.n_parties}] threshold decryption error std {std:.3g}, expected {expected:.3g}"
    )
    assert expected / 2 <= std <= 2 * expected
    assert abs(float(np.mean(got - x))) < 5 * expected / np.sqrt(ctx.slots) + 1e-9  # unbiased


def test_key_switch_error_std_matches_expected_flooding(fed):
    ctx = fed.ctx
    x = np.random.default_rng(100 + fed.n_parties).uniform(-1, 1, ctx.slots)
    querier = QuerierKeyPair.generate(ctx)
    got = querier.decrypt(fed.key_switch(fed.encrypt(x), querier.public_key), decimals=12)
    std = measured_error_std(got, x)
    expected = ctx.params.expected_flooding_error(fed.n_parties)
    assert expected / 2 <= std <= 2 * expected


def test_flooding_std_after_computation_matches_expected(fed):
    """At a deeper level (after ct x ct and rescale) the flooding keeps its declared size."""
    ctx = fed.ctx
    a, b = np.random.default_rng(7).uniform(-1, 1, (2, ctx.slots))
    ct = ctx.rescale(ctx.mul(fed.encrypt(a), fed.encrypt(b)))
    std = measured_error_std(fed.decrypt(ct, decimals=12), a * b)
    expected = ctx.params.expected_flooding_error(fed.n_parties)
    assert expected / 2 <= std <= 2 * expected


def test_every_party_floods_its_own_share(fed):
    """Each single share carries about sigma/sqrt(n) of slot noise: the flooding is per
    party, so it does not vanish when some shares are honest-but-curious."""
    ctx = fed.ctx
    proto = ThresholdDecrypt(ctx)
    x = np.random.default_rng(9).uniform(-1, 1, ctx.slots)
    ct = fed.encrypt(x)
    shares = [p.decryption_share(ct) for p in fed.parties]
    reference = fuse(proto, proto.aggregate_all(shares).raw[0])
    per_party = ctx.params.expected_flooding_error(1)
    for i, p in enumerate(fed.parties):
        # replace party i's share by a fresh one: the difference is its two floods
        fresh = proto.gen_share(p._secret, ct)
        others = [s for j, s in enumerate(shares) if j != i]
        swapped = fuse(proto, proto.aggregate_all([*others, fresh]).raw[0])
        std = float(np.std(swapped - reference))
        assert per_party * np.sqrt(2) / 2 <= std <= per_party * np.sqrt(2) * 2, (i, std)


def test_released_values_are_rounded_to_release_decimals_by_default(fed):
    ctx = fed.ctx
    d = ctx.params.release_decimals
    assert d == 4
    x = np.random.default_rng(11).uniform(-3, 3, ctx.slots)
    ct = fed.encrypt(x)
    querier = QuerierKeyPair.generate(ctx)
    released = {
        "threshold": fed.decrypt(ct),
        "querier": querier.decrypt(fed.key_switch(ct, querier.public_key)),
    }
    for name, values in released.items():
        scaled = values * 10**d
        assert np.allclose(scaled, np.round(scaled), rtol=0, atol=1e-6), name
        assert len(np.unique(values)) > ctx.slots // 2, name  # not all zero / constant
        assert np.max(np.abs(values - x)) <= 0.5 * 10**-d + 1e-4, name
    # more decimals only when asked for
    precise = fed.decrypt(ct, decimals=10)
    assert not np.allclose(precise * 10**d, np.round(precise * 10**d), rtol=0, atol=1e-6)


def test_length_truncates_released_values(fed):
    x = [1.25, -2.5, 3.0]
    got = fed.decrypt(fed.encrypt(x), length=3)
    assert got.shape == (3,)
    assert np.allclose(got, x, atol=1e-3)


@pytest.mark.parametrize("decimals", [-1, 13])
def test_release_decimals_out_of_range_are_refused(fed, decimals):
    ct = fed.encrypt([1.0])
    with pytest.raises(ParameterError, match="decimals"):
        fed.decrypt(ct, decimals=decimals)
    querier = QuerierKeyPair.generate(fed.ctx)
    switched = fed.key_switch(ct, querier.public_key)
    with pytest.raises(ParameterError, match="decimals"):
        querier.decrypt(switched, decimals=decimals)
