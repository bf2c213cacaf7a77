"""Installing the joint relinearization key is idempotent and survives OpenFHE's maps
being cleared (OpenFHE itself refuses a second key under one tag)."""

from __future__ import annotations

import numpy as np
import openfhe
import pytest

from phe_fl.errors import KeyMismatchError
from phe_fl.mhe import LocalFederation, RelinKey


def test_install_twice_and_after_openfhe_cleared_its_maps(params) -> None:
    fed = LocalFederation.setup(params, 2)
    ct = fed.encrypt(np.full(4, 0.5))
    fed.relin_key.install()  # a retried delivery of the same key is a no-op
    RelinKey.from_bytes(fed.ctx, fed.relin_key.to_bytes()).install()
    openfhe.ClearEvalMultKeys()
    fed.relin_key.install()  # noticed the key is gone and installed it again
    out = fed.decrypt(fed.ctx.rescale(fed.ctx.mul(ct, ct)), length=4)
    assert np.allclose(out, 0.25, atol=1e-3)


def test_a_different_key_under_the_same_tag_is_refused(params) -> None:
    fed = LocalFederation.setup(params, 2)
    other = LocalFederation.setup(params, 2)
    impostor = RelinKey(fed.ctx, other.relin_key.raw)
    impostor.raw.SetKeyTag(fed.relin_key.key_tag)
    with pytest.raises(KeyMismatchError, match="another relinearization key"):
        impostor.install()
