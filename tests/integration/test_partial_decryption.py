"""Partial decryptions computed on serialized ciphertexts (numpy, exact modular products)
agree with OpenFHE's own (which add a small noise of their own), for the lead and the
others, and the products are exact."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.mhe import INSECURE_TEST, _backend
from phe_fl.mhe.protocols import decryption
from phe_fl.mhe.simulation import LocalFederation


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 3)


def test_mulmod_is_exact_modulo_each_tower(fed: LocalFederation) -> None:
    towers = fed.parties[1]._secret.towers()
    rng = np.random.default_rng(5)
    for tower in towers[:3]:
        q = tower.modulus
        a = rng.integers(0, q, tower.values.size, dtype=np.uint64)
        a[:3] = [0, 1, q - 1]
        got = _backend.mulmod(a, tower)
        want = [(x * y) % q for x, y in zip(a.tolist(), tower.values.tolist(), strict=True)]
        assert got.tolist() == want


@pytest.mark.parametrize("levels_left", [INSECURE_TEST.mult_depth, 2, 0])
def test_numpy_partials_decrypt_like_openfhes(fed: LocalFederation, levels_left: int) -> None:
    ctx = fed.ctx
    values = np.linspace(-3, 3, ctx.params.slots)
    ct = ctx.drop_levels(ctx.encrypt(values, fed.joint_key), levels_left)
    towers = ctx.params.mult_depth + 1 - ct.level
    secrets = [p._secret for p in fed.parties]
    ours = [decryption.partial_decryption(s, ct) for s in secrets]
    theirs = [decryption._openfhe_partial(s, ct) for s in secrets]
    fused = [
        np.asarray(ctx.cc.MultipartyDecryptFusion(parts).GetRealPackedValue())
        for parts in (ours, theirs)
    ]
    if towers <= decryption.NUMPY_TOWERS:  # exact products: no noise but the ciphertext's
        assert np.max(np.abs(fused[0] - values)) < np.max(np.abs(fused[1] - values)) + 1e-9
    np.testing.assert_allclose(fused[0], values, atol=1e-5)
    np.testing.assert_allclose(fused[1], values, atol=1e-5)


def test_a_partial_reads_its_inputs_strictly(fed: LocalFederation) -> None:
    ctx = fed.ctx
    ct = ctx.drop_levels(ctx.encrypt(np.ones(4), fed.joint_key), 0)
    payload = ct.to_bytes()  # an envelope, not a ciphertext payload
    template = _backend.dump(decryption._openfhe_partial(fed.parties[1]._secret, ct))
    with pytest.raises(Exception, match="payload"):
        _backend.partial_payload(
            payload, template, fed.parties[1]._secret.towers(), ctx.params, lead=False
        )
