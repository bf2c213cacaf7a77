"""Every share, key and ciphertext round-trips through bytes.

For each object: ``to_bytes`` -> ``from_bytes`` -> ``to_bytes`` of a copy rebuilt from the
loaded OpenFHE object (so no cached bytes are reused). The rebuilt bytes carry the same
envelope (kind, parameter set, parties, subject, non-OpenFHE payloads) and the same
OpenFHE content: equal to the original payload after one canonical load/dump (OpenFHE
serializes shared parameter pointers differently for objects it did not itself load), and
a fixed point from then on. Functional checks follow for the objects that do something.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from phe_fl.mhe import (
    Ciphertext,
    DecryptionShare,
    JointPublicKey,
    KeySwitchShare,
    LocalFederation,
    PublicKeyGen,
    PublicKeyShare,
    QuerierKeyPair,
    QuerierPublicKey,
    QueryKeySwitch,
    Refresh,
    RefreshCRP,
    RefreshShare,
    RelinKey,
    RelinKeyGen,
    RelinRound1Share,
    RelinRound2Share,
    RotationKeyGen,
    RotationKeys,
    RotationKeysShare,
    SecretShare,
    ThresholdDecrypt,
)
from phe_fl.mhe._wire import Envelope, Kind
from tests.helpers import ROTATIONS, canonical, error_bound, max_abs_error

N = 3


@dataclass
class Codec:
    kind: Kind
    loaders: tuple[str | None, ...]  # OpenFHE loader per blob; None: not an OpenFHE payload
    load: Callable[[Any, bytes], Any]
    rebuild: Callable[[Any], bytes]  # fresh bytes of a loaded object, no cache
    caches_bytes: bool = True  # a loaded object resends the bytes it was loaded from


def share_codec(cls) -> Codec:
    return Codec(
        cls.KIND,
        cls.LOADERS,
        lambda ctx, data: cls.from_bytes(ctx, data),
        lambda s: cls(s.ctx, s.raw, s.n_parties, s.parties, s.subject).to_bytes(),
    )


def _querier_pair_rebuild(q: QuerierKeyPair) -> bytes:
    # the public half is a nested QuerierPublicKey envelope (its own codec below)
    return QuerierKeyPair(q.ctx, q.public_key, q._secret).to_bytes()


CODECS: dict[str, Codec] = {
    "PublicKeyShare": share_codec(PublicKeyShare),
    "RelinRound1Share": share_codec(RelinRound1Share),
    "RelinRound2Share": share_codec(RelinRound2Share),
    "RotationKeysShare": share_codec(RotationKeysShare),
    "DecryptionShare": share_codec(DecryptionShare),
    "RefreshShare": share_codec(RefreshShare),
    "KeySwitchShare": share_codec(KeySwitchShare),
    "JointPublicKey": Codec(
        Kind.JOINT_PUBLIC_KEY,
        ("public_key",),
        JointPublicKey.from_bytes,
        lambda k: JointPublicKey(k.ctx, k.raw).to_bytes(),
    ),
    "RelinKey": Codec(
        Kind.RELIN_KEY,
        ("eval_key",),
        RelinKey.from_bytes,
        lambda k: RelinKey(k.ctx, k.raw).to_bytes(),
    ),
    "RotationKeys": Codec(
        Kind.ROTATION_KEYS,
        ("eval_key_map", None, None),
        RotationKeys.from_bytes,
        lambda k: RotationKeys(k.ctx, k.raw, k.indices, k.key_tag).to_bytes(),
    ),
    "QuerierPublicKey": Codec(
        Kind.QUERIER_PUBLIC_KEY,
        ("public_key",),
        QuerierPublicKey.from_bytes,
        lambda k: QuerierPublicKey(k.ctx, k.raw).to_bytes(),
    ),
    "QuerierKeyPair": Codec(
        Kind.QUERIER_SECRET_KEY,
        ("private_key", None),
        QuerierKeyPair.from_bytes,
        _querier_pair_rebuild,
        caches_bytes=False,  # for the owner's disk only; re-dumps
    ),
    "SecretShare": Codec(
        Kind.SECRET_SHARE,
        ("private_key",),
        SecretShare.from_bytes,
        lambda s: SecretShare(s.ctx, s.raw, s.index, s.n_parties).to_bytes(),
    ),
    "RefreshCRP": Codec(
        Kind.REFRESH_CRP,
        ("ciphertext",),
        RefreshCRP.from_bytes,
        lambda c: RefreshCRP(c.ctx, c.raw).to_bytes(),
    ),
    "Ciphertext": Codec(
        Kind.CIPHERTEXT,
        ("ciphertext",),
        lambda ctx, data: ctx.ciphertext_from_bytes(data),
        lambda c: Ciphertext(c.context, c._ct).to_bytes(),
    ),
}


@pytest.fixture(scope="module")
def fed(params):
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


@pytest.fixture(scope="module")
def plaintext(fed):
    return np.random.default_rng(3).uniform(-2, 2, fed.ctx.slots)


@pytest.fixture(scope="module")
def objects(fed, plaintext):
    """One freshly made (never serialized) instance of every serializable class."""
    ctx = fed.ctx
    secrets = [p._secret for p in fed.parties]
    out: dict[str, Any] = {}

    pkg = PublicKeyGen(ctx)
    _, pk_crp = pkg.gen_crp(N)
    pk_shares = [pk_crp] + [pkg.gen_share(i, pk_crp)[1] for i in range(1, N)]
    out["PublicKeyShare"] = pk_shares[1]
    out["JointPublicKey"] = pkg.finalize(pkg.aggregate_all(pk_shares))  # in memory only

    relin = RelinKeyGen(fed.joint_key)  # a second run on the same joint key; not installed
    r_crp = relin.gen_crp(secrets[0])
    round1 = relin.aggregate_all([relin.gen_share(s, r_crp) for s in secrets])
    out["RelinRound1Share"] = relin.gen_share(secrets[1], r_crp)
    round2 = [relin.gen_round2_share(s, round1) for s in secrets]
    out["RelinRound2Share"] = round2[2]
    out["RelinKey"] = relin.finalize(relin.round2.aggregate_all(round2))

    rot = RotationKeyGen(fed.joint_key, [1])  # not installed: the federation keeps ROTATIONS
    rot_crp = rot.gen_crp(secrets[0])
    out["RotationKeysShare"] = rot.gen_share(secrets[1], rot_crp)
    out["RotationKeys"] = rot.finalize(
        rot.aggregate_all([rot.gen_share(s, rot_crp) for s in secrets])
    )

    ct = ctx.encrypt(plaintext, fed.joint_key)
    out["Ciphertext"] = ct
    out["DecryptionShare"] = ThresholdDecrypt(ctx).gen_share(secrets[1], ct)

    refresh = Refresh(ctx)
    prepared = refresh.prepare(ct)
    crp = refresh.gen_crp(fed.joint_key)
    out["RefreshCRP"] = crp
    out["RefreshShare"] = refresh.gen_share(secrets[2], prepared, crp)

    querier = QuerierKeyPair.generate(ctx)
    out["QuerierKeyPair"] = querier
    out["QuerierPublicKey"] = querier.public_key
    out["KeySwitchShare"] = QueryKeySwitch(ctx, querier.public_key).gen_share(secrets[0], ct)

    # SecretShare made by key generation itself (never serialized): party 1 of a new run
    out["SecretShare"] = PublicKeyGen(ctx).gen_share(1, PublicKeyGen(ctx).gen_crp(N)[1])[0]
    assert set(out) == set(CODECS)
    return out


def envelope_without_openfhe(env: Envelope, loaders) -> tuple:
    plain = tuple(b for b, loader in zip(env.blobs, loaders, strict=True) if loader is None)
    return (
        env.kind,
        env.fingerprint,
        env.n_parties,
        env.parties,
        env.subject,
        len(env.blobs),
        plain,
    )


@pytest.mark.parametrize("name", list(CODECS))
def test_round_trip_through_bytes(name, fed, objects):
    codec = CODECS[name]
    ctx = fed.ctx
    original = objects[name]
    first = original.to_bytes()
    assert isinstance(first, bytes)
    assert original.to_bytes() == first  # stable

    loaded = codec.load(ctx, first)
    assert type(loaded) is type(original)
    if codec.caches_bytes:
        assert loaded.to_bytes() == first  # a loaded object resends exactly what it received
    second = codec.rebuild(loaded)

    env1 = Envelope.unpack(first, codec.kind, ctx.params.fingerprint)
    env2 = Envelope.unpack(second, codec.kind, ctx.params.fingerprint)
    assert envelope_without_openfhe(env2, codec.loaders) == envelope_without_openfhe(
        env1, codec.loaders
    )
    for b1, b2, loader in zip(env1.blobs, env2.blobs, codec.loaders, strict=True):
        if name == "Ciphertext":
            # Context.ciphertext_from_bytes re-homes the elements in the local context:
            # whatever serialized form arrives, the loaded ciphertext is the same one.
            again = codec.load(ctx, second)
            assert again.content_digest == loaded.content_digest
            assert again.to_bytes() == second
        elif loader is not None:
            assert b2 == canonical(loader, b1), f"{name}: OpenFHE payload content changed"
    # from the first round trip on, bytes are a fixed point
    assert codec.rebuild(codec.load(ctx, second)) == second


def test_share_metadata_survives_the_round_trip(fed, objects):
    for name in (
        "PublicKeyShare",
        "RelinRound1Share",
        "RelinRound2Share",
        "RotationKeysShare",
        "DecryptionShare",
        "RefreshShare",
        "KeySwitchShare",
    ):
        s = objects[name]
        loaded = type(s).from_bytes(fed.ctx, s.to_bytes())
        assert (loaded.n_parties, loaded.parties, loaded.subject) == (
            s.n_parties,
            s.parties,
            s.subject,
        )
        assert len(loaded.raw) == len(s.raw)


def test_loaded_ciphertext_keeps_level_scale_and_key(fed, objects, plaintext):
    ct = objects["Ciphertext"]
    ctx = fed.ctx
    computed = ctx.rescale(ctx.mul(ct, ct))
    loaded = ctx.ciphertext_from_bytes(computed.to_bytes())
    assert (loaded.level, loaded.scale_degree, loaded.key_tag, loaded.size) == (
        computed.level,
        computed.scale_degree,
        computed.key_tag,
        computed.size,
    )
    assert loaded.digest == computed.digest
    got = fed.decrypt(loaded, decimals=10)
    assert max_abs_error(got, plaintext**2) <= error_bound(ctx.params, N) * 5


def test_loaded_joint_key_encrypts_for_the_federation(fed, plaintext):
    key = JointPublicKey.from_bytes(fed.ctx, fed.joint_key.to_bytes())
    assert key.key_tag == fed.joint_key.key_tag
    got = fed.decrypt(fed.ctx.encrypt(plaintext, key), decimals=10)
    assert max_abs_error(got, plaintext) <= error_bound(fed.ctx.params, N)


def test_loaded_relin_and_rotation_keys_keep_tag_steps_and_content(fed, plaintext):
    """(Installing a relinearization key from bytes and multiplying is shown in a separate
    process by test_process_isolation: OpenFHE refuses a second relinearization key under
    a tag that already has one.) Rotation keys reinstall in place."""
    ctx = fed.ctx
    relin = RelinKey.from_bytes(ctx, fed.relin_key.to_bytes())
    assert relin.key_tag == fed.joint_key.key_tag
    assert RelinKey(ctx, relin.raw).to_bytes() == RelinKey(ctx, fed.relin_key.raw).to_bytes()
    rot = RotationKeys.from_bytes(ctx, fed.rotation_keys.to_bytes())
    assert (rot.indices, rot.key_tag) == (fed.rotation_keys.indices, fed.rotation_keys.key_tag)
    rot.install()
    ct = fed.encrypt(plaintext)
    got = fed.decrypt(ctx.rotate(ctx.rescale(ctx.mul(ct, ct)), 1), decimals=10)
    assert max_abs_error(got, np.roll(plaintext**2, -1)) <= 5 * error_bound(ctx.params, N)


def test_evaluation_keys_do_not_hold_their_bytes(fed):
    """A node keeps 26 rotation keys of 25 MB for a 784-64-64-10 network at 2^15: held
    twice (loaded and as the payload they came from) they were 1.3 GB a node. Evaluation
    keys serialize again on demand, to the same bytes; other key objects keep theirs."""
    ctx = fed.ctx
    for cls, key in ((RelinKey, fed.relin_key), (RotationKeys, fed.rotation_keys)):
        data = key.to_bytes()
        refs = sys.getrefcount(data)
        loaded = cls.from_bytes(ctx, data)
        assert sys.getrefcount(data) == refs, cls.__name__
        assert loaded.to_bytes() == data
    data = fed.joint_key.to_bytes()
    refs = sys.getrefcount(data)
    kept = JointPublicKey.from_bytes(ctx, data)
    assert sys.getrefcount(data) == refs + 1 and kept.to_bytes() is data


def test_loaded_secret_share_makes_usable_decryption_shares(fed, plaintext):
    ctx = fed.ctx
    ct = fed.encrypt(plaintext)
    proto = ThresholdDecrypt(ctx)
    shares = []
    for p in fed.parties:
        secret = SecretShare.from_bytes(ctx, p._secret.to_bytes())
        assert (secret.index, secret.n_parties, secret.is_lead) == (p.index, N, p.index == 0)
        shares.append(proto.share_from_bytes(proto.gen_share(secret, ct).to_bytes()))
    got = proto.finalize(proto.aggregate_all(shares), ct, decimals=10)
    assert max_abs_error(got, plaintext) <= error_bound(ctx.params, N)


def test_loaded_querier_key_pair_decrypts_results_switched_to_the_original(fed, plaintext):
    ctx = fed.ctx
    querier = QuerierKeyPair.generate(ctx)
    switched = fed.key_switch(fed.encrypt(plaintext), querier.public_key)
    loaded = QuerierKeyPair.from_bytes(ctx, querier.to_bytes())
    assert loaded.public_key.key_tag == querier.public_key.key_tag
    assert loaded.public_key.to_bytes() == querier.public_key.to_bytes()
    assert max_abs_error(loaded.decrypt(switched, decimals=10), plaintext) <= error_bound(
        ctx.params, N
    )
    # and a switch to the loaded public key reaches the original pair
    switched2 = fed.key_switch(
        fed.encrypt(plaintext), QuerierPublicKey.from_bytes(ctx, querier.public_key.to_bytes())
    )
    assert max_abs_error(querier.decrypt(switched2, decimals=10), plaintext) <= error_bound(
        ctx.params, N
    )


def test_loaded_refresh_crp_and_shares_refresh(fed, plaintext):
    """A refresh whose CRP, prepared ciphertext and every share crossed the wire."""
    ctx = fed.ctx
    proto = Refresh(ctx)
    ct = fed.encrypt(plaintext)
    while ct.levels_left > ctx.params.refresh_min_levels:
        ct = ctx.rescale(ctx.mul_plain(ct, 1.0))
    prepared = ctx.ciphertext_from_bytes(proto.prepare(ct).to_bytes())
    crp = RefreshCRP.from_bytes(ctx, proto.gen_crp(fed.joint_key).to_bytes())
    shares = [
        proto.share_from_bytes(p.refresh_share(prepared, crp).to_bytes()) for p in fed.parties
    ]
    out = proto.finalize(proto.aggregate_all(shares), prepared, crp, fed.joint_key)
    assert out.levels_left == ctx.params.mult_depth
    assert max_abs_error(fed.decrypt(out, decimals=10), plaintext) <= error_bound(ctx.params, N)
