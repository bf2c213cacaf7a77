"""Context.drop_levels: an exact, smaller copy of a ciphertext with fewer levels left."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import LevelError
from phe_fl.mhe import INSECURE_TEST, LocalFederation


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 2)


def test_drop_levels_is_exact_keeps_the_key_and_shrinks(fed: LocalFederation) -> None:
    ctx = fed.ctx
    values = np.linspace(-1.0, 1.0, 16)
    ct = fed.encrypt(values)
    full = INSECURE_TEST.mult_depth
    assert ct.levels_left == full
    sizes = [len(ct.to_bytes())]
    for keep in range(full - 1, -1, -1):
        low = ctx.drop_levels(ct, keep)
        assert low.levels_left == keep and low.scale_degree == 1
        assert low.key_tag == ct.key_tag
        sizes.append(len(low.to_bytes()))
        back = ctx.ciphertext_from_bytes(low.to_bytes())
        assert back.levels_left == keep
    # one RNS tower fewer per level dropped: every step shrinks by about the same amount
    steps = np.diff(sizes)
    assert (steps < 0).all() and np.ptp(steps) < 0.01 * -steps.max(), sizes
    assert sizes[-1] < sizes[0] / (full + 1) * 1.1  # one tower left of full + 1
    # exact: the dropped copy decrypts to the same values (decryption noise aside) ...
    low = ctx.drop_levels(ct, 3)
    got = fed.decrypt(low, length=16, decimals=12)
    np.testing.assert_allclose(got, values, rtol=0, atol=1e-4)
    np.testing.assert_allclose(got, fed.decrypt(ct, length=16, decimals=12), rtol=0, atol=1e-5)
    # ... and computes like the original: x * 2 at 3 levels left
    doubled = ctx.rescale(ctx.mul_plain(low, 2.0))
    assert doubled.levels_left == 2
    np.testing.assert_allclose(fed.decrypt(doubled, length=16), 2 * values, atol=1e-3)
    # nothing to drop: the ciphertext itself
    assert ctx.drop_levels(ct, full) is ct


def test_drop_levels_refuses_to_add_levels(fed: LocalFederation) -> None:
    ctx = fed.ctx
    ct = ctx.drop_levels(fed.encrypt([1.0, 2.0]), 4)
    with pytest.raises(LevelError, match="cannot keep 5 levels of a ciphertext that has 4"):
        ctx.drop_levels(ct, 5)
    with pytest.raises(LevelError, match="cannot keep -1 levels"):
        ctx.drop_levels(ct, -1)
    unscaled = ctx.mul_plain(ct, 2.0)
    with pytest.raises(LevelError, match="scale degree 1"):
        ctx.drop_levels(unscaled, 2)
