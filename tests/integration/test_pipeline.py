"""Every protocol, end to end, with 3, 10 and 32 parties in one process.

The federation fixture runs the key-generation protocols (collective public key,
two-round relinearization key, rotation keys for an explicit step list) with every share
going through bytes; the tests then run threshold decryption, refresh and the key switch
to a querier and compare with numpy.
"""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import CryptoError
from phe_fl.mhe import LocalFederation, QuerierKeyPair
from tests.helpers import (
    ROTATIONS,
    UNINSTALLED_ROTATION,
    error_bound,
    max_abs_error,
    party_id,
)

PARTY_COUNTS = [
    pytest.param(3, id=party_id(3)),
    pytest.param(10, id=party_id(10)),
    pytest.param(32, id=party_id(32)),
]


@pytest.fixture(scope="module", params=PARTY_COUNTS)
def fed(request, params):
    return LocalFederation.setup(params, request.param, rotations=ROTATIONS)


def test_key_generation_gives_every_party_a_distinct_share_of_one_joint_key(fed):
    n = fed.n_parties
    assert [p.index for p in fed.parties] == list(range(n))
    assert all(p.n_parties == n for p in fed.parties)
    # the relinearization and rotation keys are filed under the joint key's tag
    assert fed.relin_key.key_tag == fed.joint_key.key_tag
    assert fed.rotation_keys is not None
    assert fed.rotation_keys.key_tag == fed.joint_key.key_tag
    assert fed.rotation_keys.indices == tuple(sorted(ROTATIONS))
    secrets = {p._secret.to_bytes() for p in fed.parties}
    assert len(secrets) == n


def test_threshold_decryption_of_fresh_encryption_matches_numpy(fed, rng, record_property):
    params = fed.ctx.params
    x = rng.uniform(-10, 10, fed.ctx.slots)
    got = fed.decrypt(fed.encrypt(x), decimals=10)
    err = max_abs_error(got, x)
    record_property("max_abs_error", err)
    print(f"\n[n={fed.n_parties}] fresh threshold decryption: max abs error {err:.3g}")
    assert err <= error_bound(params, fed.n_parties)


def test_relinearized_product_decrypts(fed, rng):
    ctx = fed.ctx
    a, b = rng.uniform(-1, 1, (2, ctx.slots))
    prod = ctx.mul(fed.encrypt(a), fed.encrypt(b))
    assert prod.size == 2  # relinearized by the joint relinearization key
    got = fed.decrypt(ctx.rescale(prod), decimals=10)
    assert max_abs_error(got, a * b) <= error_bound(ctx.params, fed.n_parties)


def test_rotation_keys_cover_exactly_the_requested_steps(fed, rng):
    ctx = fed.ctx
    x = rng.uniform(-1, 1, ctx.slots)
    ct = fed.encrypt(x)
    for step in ROTATIONS:
        got = fed.decrypt(ctx.rotate(ct, step), decimals=10)
        assert max_abs_error(got, np.roll(x, -step)) <= error_bound(ctx.params, fed.n_parties), step
    with pytest.raises(CryptoError, match="rotation"):
        ctx.rotate(ct, UNINSTALLED_ROTATION)


def test_full_pipeline_mul_rotate_refresh_decrypt_and_key_switch(fed, rng, record_property):
    """encrypt two vectors, ct x ct, rescale, rotate, + ct x pt, multiply down to the
    refresh threshold, refresh, multiply again, then decrypt by threshold decryption and by
    key switch to a querier."""
    ctx = fed.ctx
    params = ctx.params
    n = fed.n_parties
    slots = ctx.slots
    a, b, w = rng.uniform(-1, 1, (3, slots))
    ca, cb = fed.encrypt(a), fed.encrypt(b)

    c = ctx.rescale(ctx.mul(ca, cb))
    want = a * b
    step = 5
    assert step in ROTATIONS
    c = ctx.rotate(c, step)
    want = np.roll(want, -step)
    c = ctx.add(c, ctx.rescale(ctx.mul_plain(ca, w)))
    want = want + a * w
    assert c.levels_left == params.mult_depth - 1

    while c.levels_left > params.refresh_min_levels:
        f = rng.uniform(0.5, 1.5, slots)
        c = ctx.rescale(ctx.mul(c, ctx.encrypt(f, fed.joint_key, level=c.level)))
        want = want * f
    assert c.levels_left == params.refresh_min_levels

    r = fed.refresh(c)
    assert r.levels_left == params.mult_depth
    assert r.key_tag == fed.joint_key.key_tag

    g = rng.uniform(0.5, 1.5, slots)
    r = ctx.rescale(ctx.mul(r, fed.encrypt(g)))
    want = want * g

    by_threshold = fed.decrypt(r, decimals=10)
    querier = QuerierKeyPair.generate(ctx)
    switched = fed.key_switch(r, querier.public_key)
    assert switched.key_tag == querier.public_key.key_tag
    by_querier = querier.decrypt(switched, decimals=10)

    bound = error_bound(params, n)
    err_t = max_abs_error(by_threshold, want)
    err_q = max_abs_error(by_querier, want)
    record_property("max_abs_error_threshold", err_t)
    record_property("max_abs_error_key_switch", err_q)
    record_property("error_bound", bound)
    print(
        f"\n[n={n}] pipeline max abs error: threshold {err_t:.3g}, key switch {err_q:.3g} "
        f"(bound {bound:.3g}, flooding sigma {params.expected_flooding_error(n):.3g})"
    )
    assert err_t <= bound
    assert err_q <= bound
