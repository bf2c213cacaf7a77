"""Aggregation order does not matter: any tree shape over any leaf order gives the same
result, and always names every party exactly once."""

from __future__ import annotations

import random

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phe_fl.mhe import (
    Context,
    LocalFederation,
    Party,
    PublicKeyGen,
    QuerierKeyPair,
    QueryKeySwitch,
    ThresholdDecrypt,
)
from phe_fl.mhe._wire import Kind
from phe_fl.mhe.simulation import tree_aggregate
from tests.helpers import ROTATIONS, canonical, error_bound, max_abs_error, openfhe_blobs

N = 7
TREES = settings(max_examples=10, deadline=None)
seeds = st.integers(0, 2**32 - 1)


def shuffled(items, seed):
    items = list(items)
    random.Random(seed).shuffle(items)
    return items


@pytest.fixture(scope="module")
def fed(params):
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


@pytest.fixture(scope="module")
def plaintext(fed):
    return np.random.default_rng(2024).uniform(-5, 5, fed.ctx.slots)


@pytest.fixture(scope="module")
def ciphertext(fed, plaintext):
    return fed.encrypt(plaintext)


@pytest.fixture(scope="module")
def decryption(fed, ciphertext):
    """Every party's (cached) decryption share and the left-to-right reference result."""
    proto = ThresholdDecrypt(fed.ctx)
    shares = [p.decryption_share(ciphertext) for p in fed.parties]
    reference = proto.finalize(tree_aggregate(proto, shares), ciphertext, decimals=12)
    return proto, shares, reference


@pytest.fixture(scope="module")
def querier(fed):
    return QuerierKeyPair.generate(fed.ctx)


@pytest.fixture(scope="module")
def key_switch(fed, ciphertext, querier):
    proto = QueryKeySwitch(fed.ctx, querier.public_key)
    shares = [p.key_switch_share(ciphertext, querier.public_key) for p in fed.parties]
    reference = querier.decrypt(
        proto.finalize(tree_aggregate(proto, shares), ciphertext), decimals=12
    )
    return proto, shares, reference


def test_reference_results_are_correct(fed, plaintext, decryption, key_switch):
    bound = error_bound(fed.ctx.params, N)
    assert max_abs_error(decryption[2], plaintext) <= bound
    assert max_abs_error(key_switch[2], plaintext) <= bound


@TREES
@given(seed=seeds)
def test_decryption_shares_in_any_tree_give_the_same_values(seed, fed, ciphertext, decryption):
    proto, shares, reference = decryption
    agg = tree_aggregate(proto, shuffled(shares, seed), rng=random.Random(seed))
    assert agg.complete
    assert agg.parties == frozenset(range(N))
    assert agg.subject == ciphertext.digest
    values = proto.finalize(agg, ciphertext, decimals=12)
    # sums of ring elements mod q: bit-identical whatever the order
    assert np.array_equal(values, reference)


@TREES
@given(seed=seeds)
def test_key_switch_shares_in_any_tree_give_the_same_values(
    seed, fed, ciphertext, querier, key_switch
):
    proto, shares, reference = key_switch
    agg = tree_aggregate(proto, shuffled(shares, seed), rng=random.Random(seed))
    assert agg.complete
    assert agg.parties == frozenset(range(N))
    switched = proto.finalize(agg, ciphertext)
    assert np.array_equal(querier.decrypt(switched, decimals=12), reference)


@TREES
@given(seed=seeds, wire=st.booleans())
def test_partial_trees_name_exactly_their_parties(seed, wire, decryption):
    proto, shares, _ = decryption
    rnd = random.Random(seed)
    subset = rnd.sample(shares, rnd.randint(1, N))
    agg = tree_aggregate(proto, subset, rng=rnd, wire=wire)
    assert agg.parties == frozenset().union(*(s.parties for s in subset))
    assert agg.complete == (len(subset) == N)


@pytest.fixture(scope="module")
def public_key_shares(params):
    """A fresh collective-public-key run: the parties' secrets and their shares."""
    ctx = Context(params)
    pkg = PublicKeyGen(ctx)
    lead, crp = pkg.gen_crp(N)
    secrets, shares = [lead], [crp]
    for i in range(1, N):
        secret, share = pkg.gen_share(i, crp)
        secrets.append(secret)
        shares.append(share)
    parties = [Party(s) for s in secrets]
    return pkg, shares, parties


@TREES
@given(seed_a=seeds, seed_b=seeds)
def test_public_key_shares_in_any_two_trees_give_byte_identical_joint_keys(
    seed_a, seed_b, public_key_shares
):
    """Public-key aggregation is a sum mod q over the same common a, so the joint key does
    not depend on the tree: through the wire, the serialized keys are byte-identical."""
    pkg, shares, _ = public_key_shares
    key_a = pkg.finalize(tree_aggregate(pkg, shuffled(shares, seed_a), rng=random.Random(seed_a)))
    key_b = pkg.finalize(tree_aggregate(pkg, shuffled(shares, seed_b), rng=random.Random(seed_b)))
    assert key_a.key_tag == key_b.key_tag
    assert key_a.to_bytes() == key_b.to_bytes()


def test_public_key_without_the_wire_has_the_same_content(public_key_shares):
    """In-memory aggregation (no bytes in between) gives the same key content; only
    OpenFHE's serialization of shared parameter pointers differs before one round trip."""
    pkg, shares, _ = public_key_shares
    wired = pkg.finalize(tree_aggregate(pkg, shares, rng=random.Random(1)))
    in_memory = pkg.finalize(
        tree_aggregate(pkg, shuffled(shares, 2), rng=random.Random(2), wire=False)
    )
    (blob_w,) = openfhe_blobs(wired.to_bytes(), Kind.JOINT_PUBLIC_KEY)
    (blob_m,) = openfhe_blobs(in_memory.to_bytes(), Kind.JOINT_PUBLIC_KEY)
    assert canonical("public_key", blob_m) == canonical("public_key", blob_w)


def test_joint_keys_from_different_trees_encrypt_for_the_parties(public_key_shares, params):
    pkg, shares, parties = public_key_shares
    ctx = pkg.ctx
    x = np.random.default_rng(5).uniform(-1, 1, ctx.slots)
    proto = ThresholdDecrypt(ctx)
    for seed in (11, 12):
        key = pkg.finalize(tree_aggregate(pkg, shuffled(shares, seed), rng=random.Random(seed)))
        ct = ctx.encrypt(x, key)
        agg = tree_aggregate(
            proto, [p.decryption_share(ct) for p in parties], rng=random.Random(seed)
        )
        got = proto.finalize(agg, ct, decimals=10)
        assert max_abs_error(got, x) <= error_bound(params, N)


def test_key_generation_over_random_trees_gives_working_keys(params):
    """Relinearization (both rounds) and rotation shares aggregated over random trees."""
    fed = LocalFederation.setup(params, 5, rotations=(1, -2), rng=random.Random(99))
    ctx = fed.ctx
    a, b = np.random.default_rng(6).uniform(-1, 1, (2, ctx.slots))
    ct = ctx.rotate(ctx.rescale(ctx.mul(fed.encrypt(a), fed.encrypt(b))), -2)
    got = fed.decrypt(ct, decimals=10, rng=random.Random(3))
    assert max_abs_error(got, np.roll(a * b, 2)) <= error_bound(params, 5)
