"""Compact forms (phe_fl.mhe.compact) and the transform they stand on (phe_fl.mhe._ntt):
the transform is OpenFHE's and the negacyclic one, compact forms decrypt as OpenFHE's
ciphertexts do within the flooding, add exactly, and refuse what is not well formed."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import PheFlError, SerializationError
from phe_fl.mhe import INSECURE_TEST, N15_128, PublicKeyGen, compact
from phe_fl.mhe import _backend as backend
from phe_fl.mhe._ntt import tower_ntt
from phe_fl.mhe._wire import Envelope, Kind
from phe_fl.mhe.simulation import LocalFederation


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 3)


def _last_level(fed: LocalFederation, values: np.ndarray) -> bytes:
    ct = fed.ctx.encrypt(values, fed.joint_key)
    return fed.ctx.drop_levels(ct, 0).to_bytes()


def _shifts(n_parties: int = 3) -> tuple[int, int]:
    return compact.message_shift(INSECURE_TEST), compact.mask_shift(INSECURE_TEST, n_parties)


def test_the_transform_is_openfhes(fed: LocalFederation) -> None:
    """A secret share's towers, OpenFHE's EVALUATION form, come back ternary: any other
    root or order would give uniform residues."""
    secret, _ = PublicKeyGen(fed.ctx).gen_crp(3)
    for tower in secret.towers()[:3]:
        q = tower.modulus
        ntt = tower_ntt(INSECURE_TEST.ring_dim, q, backend.root_of_unity(INSECURE_TEST, q))
        s = ntt.inverse(tower.values)[0]
        centered = np.where(s > q // 2, s.astype(object) - q, s.astype(object))
        assert set(centered.tolist()) == {-1, 0, 1}
        assert np.array_equal(ntt.forward(s)[0], tower.values)


def test_the_transform_multiplies_negacyclically() -> None:
    """Pointwise products of transforms are products modulo X^n + 1."""
    n, rng = 64, np.random.default_rng(3)
    q = 1152921504606584833  # N15_128's first modulus, a prime 1 mod 2^16
    psi = pow(backend.root_of_unity(N15_128, q), 2**15 // n, q)  # a primitive 2n-th root
    ntt = tower_ntt(n, q, psi)
    a, b = rng.integers(-50, 50, n), rng.integers(-50, 50, n)
    full = np.convolve(a, b)
    product = full[:n].copy()
    product[: n - 1] -= full[n:]  # X^n = -1
    fa, fb = (ntt.forward(np.mod(x, q).astype(np.uint64))[0] for x in (a, b))
    pointwise = np.array([int(x) * int(y) % q for x, y in zip(fa, fb, strict=True)], np.uint64)
    assert np.array_equal(ntt.inverse(pointwise)[0], np.mod(product, q).astype(np.uint64))
    with pytest.raises(ValueError, match="not a primitive"):
        tower_ntt(n, q, 3)


def test_a_compact_ciphertext_decrypts_as_openfhes_within_the_flooding(
    fed: LocalFederation,
) -> None:
    ctx = fed.ctx
    values = np.random.default_rng(1).normal(0, 1, INSECURE_TEST.slots)
    data = _last_level(fed, values)
    small = compact.compact(ctx, data, _shifts())
    assert len(small) < 0.7 * len(data)
    back = ctx.ciphertext_from_bytes(compact.expand(ctx, small))
    error = np.std(fed.decrypt(back)[: values.size] - values)
    exact = np.std(fed.decrypt(ctx.ciphertext_from_bytes(data))[: values.size] - values)
    assert error < exact + 10 * compact.rounding_error(INSECURE_TEST, 3)
    # the compact form, its masked form and OpenFHE's ciphertext name the same c1
    digests = {
        compact.mask_digest(ctx, x)
        for x in (small, compact.masked(ctx, small), compact.expand(ctx, small))
    }
    assert len(digests) == 1
    assert compact.mask_digest(ctx, data) != digests.pop()  # rounded: another c1


def test_compact_forms_add_exactly(fed: LocalFederation) -> None:
    ctx = fed.ctx
    a, b, c = (
        compact.compact(ctx, _last_level(fed, np.full(4, float(v))), _shifts()) for v in (1, 2, 3)
    )
    total = compact.add(ctx, compact.add(ctx, a, b), c)
    a_ct, b_ct, c_ct = (ctx.ciphertext_from_bytes(compact.expand(ctx, x)) for x in (a, b, c))
    by_openfhe = ctx.add(ctx.add(a_ct, b_ct), c_ct)  # EvalAdd of what each stands for
    back = ctx.ciphertext_from_bytes(compact.expand(ctx, total))
    assert back.content_digest == by_openfhe.content_digest
    assert np.allclose(fed.decrypt(back)[:4], 6.0, atol=1e-3)


def _blobs(data: bytes) -> Envelope:
    return Envelope.unpack(data, Envelope.kind_of(data))


def _rewrap(env: Envelope, blobs: tuple[bytes, ...]) -> bytes:
    return Envelope(
        env.kind, env.fingerprint, env.n_parties, env.parties, env.subject, blobs
    ).pack()


def test_what_is_not_well_formed_is_refused(fed: LocalFederation) -> None:
    ctx = fed.ctx
    small = compact.compact(ctx, _last_level(fed, np.ones(4)), _shifts())
    env = _blobs(small)
    skeleton, c0, c1 = env.blobs
    cases = {
        "bytes for": (skeleton, c0[:-1], c1),  # truncated quotients
        "width 0": (skeleton, bytes([20, 0]) + c0[2:], c1),
        "width 63": (skeleton, bytes([20, 63]) + c0[2:], c1),
        "elements": (skeleton, c0),
        "skeleton|payload": (skeleton[:-1], c0, c1),
    }
    for why, blobs in cases.items():
        with pytest.raises(SerializationError, match=why):
            compact.expand(ctx, _rewrap(env, blobs))
    other = compact.compact(ctx, _last_level(fed, np.ones(4)), (_shifts()[0], _shifts()[1] - 1))
    with pytest.raises(SerializationError, match="different shapes, levels or roundings"):
        compact.add(ctx, small, other)
    with pytest.raises(SerializationError, match="one RNS tower per element"):
        compact.compact(ctx, fed.ctx.encrypt(np.ones(4), fed.joint_key).to_bytes(), _shifts())
    with pytest.raises(SerializationError, match="not a compact form"):
        compact.expand(ctx, _last_level(fed, np.ones(4)))
    assert Envelope.kind_of(small) is Kind.COMPACT_CIPHERTEXT


@pytest.mark.parametrize("width", [1, 7, 8, 13, 38, 47, 56, 57, 61, 62])
def test_quotients_pack_into_their_width_and_back(width: int) -> None:
    rng = np.random.default_rng(width)
    values = rng.integers(0, 2**width, 1001, dtype=np.uint64, endpoint=False)
    values[0] = 2**width - 1  # the widest value sets the width
    blob = compact._pack(values, 5)
    assert len(blob) == 2 + -(-1001 * width // 8)
    shift, back = compact._unpack(blob, 1001)
    assert shift == 5 and np.array_equal(back, values)


def test_mutated_compact_forms_fail_cleanly(fed: LocalFederation) -> None:
    """Bytes flipped anywhere in a compact form's blobs (the envelope resealed, as a
    crafting peer would): every reader either succeeds or raises phe-fl's own error,
    never another exception."""
    ctx, rng = fed.ctx, np.random.default_rng(11)
    ct = compact.compact(ctx, _last_level(fed, np.ones(4)), _shifts())
    share = compact.compact(
        ctx,
        fed.parties[0]
        .decryption_share(ctx.ciphertext_from_bytes(_last_level(fed, np.ones(4))))
        .to_bytes(),
        (compact.message_shift(INSECURE_TEST),),
    )
    samples = [ct, compact.masked(ctx, ct), share]
    outcomes = {"ok": 0, "refused": 0}
    for i in range(300):
        env = _blobs(samples[i % 3])
        blobs = list(env.blobs)
        j = int(rng.integers(len(blobs)))
        blob = bytearray(blobs[j])
        if blob:
            for _ in range(int(rng.integers(1, 4))):
                at = int(rng.integers(min(len(blob), 64))) if rng.random() < 0.5 else None
                at = int(rng.integers(len(blob))) if at is None else at
                blob[at] ^= int(rng.integers(1, 256))
        if rng.random() < 0.2:
            blob = blob[: int(rng.integers(len(blob) + 1))]
        blobs[j] = bytes(blob)
        data = _rewrap(env, tuple(blobs))
        for read in (
            lambda d: compact.expand(ctx, d),
            lambda d: compact.mask_digest(ctx, d),
            lambda d: compact.add(ctx, d, d),
        ):
            try:
                read(data)
                outcomes["ok"] += 1
            except PheFlError:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 300, outcomes
