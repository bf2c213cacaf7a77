"""Bad input raises a clear phe-fl error (a PheFlError subclass), never crashes the
interpreter, and no error message or repr carries secret material."""

from __future__ import annotations

import ast
import base64
import binascii
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from phe_fl.errors import (
    CryptoError,
    KeyMismatchError,
    LevelError,
    ParameterError,
    PartySetError,
    PheFlError,
    SerializationError,
)
from phe_fl.mhe import (
    N14_128,
    Context,
    DecryptionShare,
    JointPublicKey,
    KeySwitchShare,
    LocalFederation,
    Party,
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
from tests.helpers import ROTATIONS, UNINSTALLED_ROTATION

ROOT = Path(__file__).resolve().parents[2]
N = 3

LOADERS = {
    "PublicKeyShare": PublicKeyShare.from_bytes,
    "RelinRound1Share": RelinRound1Share.from_bytes,
    "RelinRound2Share": RelinRound2Share.from_bytes,
    "RotationKeysShare": RotationKeysShare.from_bytes,
    "DecryptionShare": DecryptionShare.from_bytes,
    "RefreshShare": RefreshShare.from_bytes,
    "KeySwitchShare": KeySwitchShare.from_bytes,
    "JointPublicKey": JointPublicKey.from_bytes,
    "RelinKey": RelinKey.from_bytes,
    "RotationKeys": RotationKeys.from_bytes,
    "QuerierPublicKey": QuerierPublicKey.from_bytes,
    "QuerierKeyPair": QuerierKeyPair.from_bytes,
    "SecretShare": SecretShare.from_bytes,
    "RefreshCRP": RefreshCRP.from_bytes,
    "Ciphertext": lambda ctx, data: ctx.ciphertext_from_bytes(data),
}


@pytest.fixture(scope="module")
def fed(params):
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


@pytest.fixture(scope="module")
def other_fed(params):
    """A second federation with the same parameter set: another key, other instances."""
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


@pytest.fixture(scope="module")
def querier(fed):
    return QuerierKeyPair.generate(fed.ctx)


@pytest.fixture(scope="module")
def ct(fed):
    return fed.encrypt(np.linspace(-1, 1, fed.ctx.slots))


@pytest.fixture(scope="module")
def valid_bytes(fed, ct, querier):
    """Valid bytes of every loadable kind."""
    ctx = fed.ctx
    secrets = [p._secret for p in fed.parties]
    pkg = PublicKeyGen(ctx)
    _, pk_crp = pkg.gen_crp(N)
    relin = RelinKeyGen(fed.joint_key)
    r_crp = relin.gen_crp(secrets[0])
    round1 = relin.aggregate_all([relin.gen_share(s, r_crp) for s in secrets])
    rot = RotationKeyGen(fed.joint_key, [1])
    refresh = Refresh(ctx)
    prepared = refresh.prepare(ct)
    crp = refresh.gen_crp(fed.joint_key)
    return {
        "PublicKeyShare": pk_crp.to_bytes(),
        "RelinRound1Share": r_crp.to_bytes(),
        "RelinRound2Share": relin.gen_round2_share(secrets[1], round1).to_bytes(),
        "RotationKeysShare": rot.gen_crp(secrets[0]).to_bytes(),
        "DecryptionShare": fed.parties[1].decryption_share(ct).to_bytes(),
        "RefreshShare": fed.parties[1].refresh_share(prepared, crp).to_bytes(),
        "KeySwitchShare": fed.parties[1].key_switch_share(ct, querier.public_key).to_bytes(),
        "JointPublicKey": fed.joint_key.to_bytes(),
        "RelinKey": fed.relin_key.to_bytes(),
        "RotationKeys": fed.rotation_keys.to_bytes(),
        "QuerierPublicKey": querier.public_key.to_bytes(),
        "QuerierKeyPair": querier.to_bytes(),
        "SecretShare": secrets[1].to_bytes(),
        "RefreshCRP": crp.to_bytes(),
        "Ciphertext": ct.to_bytes(),
    }


KINDS = list(LOADERS)


@pytest.mark.parametrize("name", KINDS)
def test_valid_bytes_load(name, fed, valid_bytes):
    """Control for the refusals below."""
    LOADERS[name](fed.ctx, valid_bytes[name])


@pytest.mark.parametrize("name", KINDS)
@pytest.mark.parametrize("keep", [0.0, 0.01, 0.5, 0.999], ids=lambda k: f"keep={k}")
def test_truncated_bytes_raise_serialization_error(name, keep, fed, valid_bytes):
    data = valid_bytes[name]
    with pytest.raises(SerializationError):
        LOADERS[name](fed.ctx, data[: int(len(data) * keep)])
    with pytest.raises(SerializationError):
        LOADERS[name](fed.ctx, data[:-1])


@pytest.mark.parametrize("name", KINDS)
def test_flipped_byte_in_the_payload_is_a_checksum_mismatch(name, fed, valid_bytes):
    data = bytearray(valid_bytes[name])
    data[len(data) // 2] ^= 0x40
    with pytest.raises(SerializationError, match="checksum"):
        LOADERS[name](fed.ctx, bytes(data))


@pytest.mark.parametrize("name", KINDS)
def test_garbage_bytes_raise_serialization_error(name, fed):
    rng = np.random.default_rng(1)
    for garbage in (b"", b"\x00" * 64, rng.bytes(10_000), b"PHFL" + rng.bytes(500)):
        with pytest.raises(SerializationError):
            LOADERS[name](fed.ctx, garbage)
    with pytest.raises(SerializationError, match="expected bytes"):
        LOADERS[name](fed.ctx, "not bytes")


@pytest.mark.parametrize("name", [k for k in KINDS if k != "Ciphertext"])
def test_a_ciphertext_given_to_another_loader_is_refused_by_kind(name, fed, valid_bytes):
    with pytest.raises(SerializationError, match="got a ciphertext"):
        LOADERS[name](fed.ctx, valid_bytes["Ciphertext"])


def test_a_share_given_to_the_ciphertext_loader_is_refused_by_kind(fed, valid_bytes):
    with pytest.raises(SerializationError, match="expected a ciphertext, got a decryption share"):
        fed.ctx.ciphertext_from_bytes(valid_bytes["DecryptionShare"])
    with pytest.raises(SerializationError, match="got a key switch share"):
        DecryptionShare.from_bytes(fed.ctx, valid_bytes["KeySwitchShare"])


# -- checksum-valid envelopes with bad OpenFHE payloads --------------------------------------
# The checksum guards against accidents; these bytes pass it (as a buggy or malicious,
# though authenticated, peer could send). They run in a child process, so that a crash
# inside OpenFHE's deserializers fails a test instead of killing the test run.
CRAFTED = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    import phe_fl.mhe as mhe
    from phe_fl.errors import PheFlError
    from phe_fl.mhe._wire import Envelope, Kind
    from phe_fl.mhe import protocols as P

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))  # absurd sizes fail fast
    ctx = mhe.Context(mhe.INSECURE_TEST)
    fp = ctx.params.fingerprint
    q = mhe.QuerierKeyPair.generate(ctx)
    def blob(data, kind):
        return Envelope.unpack(data, kind).blobs[0]

    natural = {
        "ciphertext": blob(ctx.encrypt([1.0], q.public_key).to_bytes(), Kind.CIPHERTEXT),
        "public_key": blob(q.public_key.to_bytes(), Kind.QUERIER_PUBLIC_KEY),
        "private_key": blob(q.to_bytes(), Kind.QUERIER_SECRET_KEY),
    }
    targets = {  # name: (kind, payload count, payload type, loader)
        "ciphertext": (Kind.CIPHERTEXT, 1, "ciphertext", ctx.ciphertext_from_bytes),
        "decryption share": (Kind.DECRYPTION_SHARE, 1, "ciphertext", P.DecryptionShare),
        "joint public key": (Kind.JOINT_PUBLIC_KEY, 1, "public_key", mhe.JointPublicKey),
        "relin key": (Kind.RELIN_KEY, 1, None, mhe.RelinKey),
        "rotation keys share": (Kind.ROTATION_KEYS_SHARE, 1, None, P.RotationKeysShare),
        "secret share": (Kind.SECRET_SHARE, 1, "private_key", mhe.SecretShare),
        "refresh share": (Kind.REFRESH_SHARE, 2, "ciphertext", P.RefreshShare),
    }
    rng = np.random.default_rng(0)

    def payload(name, own):
        if name.startswith("hole@"):  # 20 bytes cut out of a valid payload of the right type
            at = int(name[5:])
            return natural[own][:at] + natural[own][at + 20:]
        return {
            "empty": b"", "zeros": bytes(4096), "random": rng.bytes(4096),
            "ciphertext": natural["ciphertext"], "public key": natural["public_key"],
            "private key": natural["private_key"],
            "truncated ciphertext": natural["ciphertext"][: len(natural["ciphertext"]) // 3],
        }[name]

    results = {}
    for tname, pname in json.loads(sys.argv[1]):
        kind, nblobs, own, cls = targets[tname]
        load = cls if callable(cls) and not isinstance(cls, type) else (
            lambda d, cls=cls: cls.from_bytes(ctx, d))
        env = Envelope(kind, fp, 3, frozenset({1}), bytes(32), (payload(pname, own),) * nblobs)
        print("loading", tname, "<-", pname, flush=True)
        try:
            load(env.pack())
            outcome = "loaded"
        except PheFlError as exc:
            outcome = type(exc).__name__
        except BaseException as exc:
            outcome = "FOREIGN " + type(exc).__name__ + ": " + str(exc)[:200]
        results[tname + " <- " + pname] = outcome
    print("RESULTS " + json.dumps(results))
    """
)


def run_crafted(cases, cwd):
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    proc = subprocess.run(
        [sys.executable, "-c", CRAFTED, json.dumps(cases)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=cwd,
    )
    if proc.returncode != 0:
        last = [ln for ln in proc.stdout.splitlines() if ln.startswith("loading")][-1:]
        pytest.fail(
            f"the interpreter died (exit {proc.returncode}) at {last}: {proc.stderr[-1500:]}"
        )
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULTS "))
    return json.loads(line[len("RESULTS ") :])


CRAFTED_TARGETS = [
    "ciphertext",
    "decryption share",
    "joint public key",
    "relin key",
    "rotation keys share",
    "secret share",
    "refresh share",
]


def test_checksum_valid_payloads_of_the_wrong_type_raise_serialization_error(tmp_path):
    payloads = ["empty", "zeros", "random", "truncated ciphertext", "ciphertext", "public key"]
    cases = [(t, p) for t in CRAFTED_TARGETS for p in payloads]
    # a secret key's payload where a ciphertext-like payload is expected (it is NOT refused
    # by the public-key loader, see the xfail below, nor by the eval-key loader, which
    # accepts it as an EvalKey: crafted input, outside the threat model)
    cases += [
        (t, "private key")
        for t in ("ciphertext", "decryption share", "refresh share", "rotation keys share")
    ]
    results = run_crafted(cases, tmp_path)
    foreign = {k: v for k, v in results.items() if v.startswith("FOREIGN")}
    assert not foreign
    for t in CRAFTED_TARGETS:
        for p in ("empty", "zeros", "random", "truncated ciphertext"):
            assert results[f"{t} <- {p}"] == "SerializationError", (t, p)
    assert results["joint public key <- ciphertext"] == "SerializationError"
    assert results["secret share <- public key"] == "SerializationError"
    assert results["ciphertext <- private key"] == "SerializationError"


def test_checksum_valid_corrupt_payloads_raise_serialization_error(tmp_path):
    results = run_crafted(
        [
            ("ciphertext", "hole@150"),
            ("decryption share", "hole@200"),
            ("secret share", "hole@150"),
            ("joint public key", "private key"),
        ],
        tmp_path,
    )
    assert set(results.values()) == {"SerializationError"}, results


def test_rotation_keys_with_undecodable_key_tag_raise_serialization_error(fed):
    env = Envelope.unpack(fed.rotation_keys.to_bytes(), Kind.ROTATION_KEYS)
    crafted = Envelope(
        Kind.ROTATION_KEYS, env.fingerprint, blobs=(env.blobs[0], env.blobs[1], b"\xff\xfe")
    ).pack()
    with pytest.raises(SerializationError):
        RotationKeys.from_bytes(fed.ctx, crafted)


def test_envelope_with_wrong_payload_count_is_refused(fed, valid_bytes):
    env = Envelope.unpack(valid_bytes["DecryptionShare"], Kind.DECRYPTION_SHARE)
    two = Envelope(
        env.kind, env.fingerprint, env.n_parties, env.parties, env.subject, env.blobs * 2
    ).pack()
    with pytest.raises(SerializationError, match="expected 1 payloads, got 2"):
        DecryptionShare.from_bytes(fed.ctx, two)
    none = Envelope(
        env.kind, env.fingerprint, env.n_parties, frozenset(), env.subject, env.blobs
    ).pack()
    with pytest.raises(SerializationError, match="names no contributing party"):
        DecryptionShare.from_bytes(fed.ctx, none)
    with pytest.raises(SerializationError, match="expected one payload"):
        fed.ctx.ciphertext_from_bytes(Envelope(Kind.CIPHERTEXT, env.fingerprint).pack())


# -- another parameter set ------------------------------------------------------------
@pytest.fixture(scope="module")
def n14():
    """Cheap N14_128 material: a one-party key (public-key protocol only)."""
    ctx = Context(N14_128)
    pkg = PublicKeyGen(ctx)
    lead, crp = pkg.gen_crp(1)
    joint = pkg.finalize(crp)
    ct = ctx.encrypt([0.5, 0.25], joint)
    share = ThresholdDecrypt(ctx).gen_share(lead, ct)
    return ctx, lead, crp, joint, ct, share


def test_share_from_another_parameter_set_is_a_key_mismatch(fed, n14):
    ctx14, lead, crp, joint, ct14, dec_share = n14
    ctx = fed.ctx
    with pytest.raises(KeyMismatchError, match="another parameter set"):
        PublicKeyGen(ctx).share_from_bytes(crp.to_bytes())
    with pytest.raises(KeyMismatchError, match="another parameter set"):
        ThresholdDecrypt(ctx).share_from_bytes(dec_share.to_bytes())
    with pytest.raises(KeyMismatchError):
        JointPublicKey.from_bytes(ctx, joint.to_bytes())
    with pytest.raises(KeyMismatchError):
        SecretShare.from_bytes(ctx, lead.to_bytes())
    with pytest.raises(KeyMismatchError):
        ctx.ciphertext_from_bytes(ct14.to_bytes())


def test_objects_of_another_parameter_set_are_refused_in_protocols(fed, n14, ct):
    ctx14, lead14, crp14, joint14, ct14, dec14 = n14
    ctx = fed.ctx
    proto = ThresholdDecrypt(ctx)
    ours = fed.parties[1].decryption_share(ct)
    with pytest.raises(KeyMismatchError, match="another parameter set"):
        proto.aggregate(ours, dec14)
    with pytest.raises(KeyMismatchError):
        proto.gen_share(lead14, ct)  # a secret share of another set
    with pytest.raises(KeyMismatchError):
        proto.gen_share(fed.parties[0]._secret, ct14)
    with pytest.raises(KeyMismatchError):
        ctx.encrypt([1.0], joint14)
    with pytest.raises(KeyMismatchError):
        QueryKeySwitch(ctx, QuerierKeyPair.generate(ctx14).public_key)


def test_ciphertext_from_another_context_is_refused(fed, n14, ct):
    ctx14, *_, ct14, _ = n14
    ctx = fed.ctx
    with pytest.raises(KeyMismatchError, match="given to a 'n14-depth5-128' context"):
        ctx14.own(ct)
    with pytest.raises(KeyMismatchError, match="'n14-depth5-128' given to a 'insecure-test-n12'"):
        ctx.own(ct14)
    for op in (
        lambda: ctx.add(ct, ct14),
        lambda: ctx.mul(ct14, ct),
        lambda: ctx14.add(ct, ct),
        lambda: ctx14.rotate(ct, 1),
        lambda: ctx14.rescale(ct),
        lambda: ctx.add_plain(ct14, 1.0),
        lambda: ctx.mul_plain(ct14, [1.0]),
        lambda: ctx.negate(ct14),
        lambda: fed.decrypt(ct14),
    ):
        with pytest.raises(KeyMismatchError):
            op()
    with pytest.raises(TypeError):
        ctx.own(ct.to_bytes())


def test_ciphertexts_under_different_keys_do_not_combine(fed, other_fed, querier, ct):
    ctx = fed.ctx
    theirs = other_fed.encrypt([1.0])
    for other in (theirs, ctx.encrypt([1.0], querier.public_key)):
        with pytest.raises(KeyMismatchError, match="different keys"):
            ctx.add(ct, other)
        with pytest.raises(KeyMismatchError, match="different keys"):
            ctx.mul(ct, other)


# -- another key or protocol instance ---------------------------------------------------
def test_decryption_shares_for_different_ciphertexts_refuse_to_aggregate(fed, ct):
    other_ct = fed.encrypt([1.0, 2.0])
    proto = ThresholdDecrypt(fed.ctx)
    a = fed.parties[0].decryption_share(ct)
    b = fed.parties[1].decryption_share(other_ct)
    with pytest.raises(KeyMismatchError, match="different protocol instances"):
        proto.aggregate(a, b)
    full = proto.aggregate_all([p.decryption_share(ct) for p in fed.parties])
    with pytest.raises(KeyMismatchError, match="another protocol instance"):
        proto.finalize(full, other_ct)


def test_key_switch_shares_for_different_queriers_refuse_to_aggregate(fed, ct, querier):
    other = QuerierKeyPair.generate(fed.ctx)
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    a = fed.parties[0].key_switch_share(ct, querier.public_key)
    b = fed.parties[1].key_switch_share(ct, other.public_key)
    with pytest.raises(KeyMismatchError):
        ks.aggregate(a, b)
    complete_for_other = ks.aggregate_all(
        [p.key_switch_share(ct, other.public_key) for p in fed.parties]
    )
    with pytest.raises(KeyMismatchError):
        ks.finalize(complete_for_other, ct)


def test_relin_round2_share_from_another_federation_refuses_to_aggregate(fed, other_fed):
    def round2_shares(f):
        gen = RelinKeyGen(f.joint_key)
        crp = gen.gen_crp(f.parties[0]._secret)
        round1 = gen.aggregate_all([gen.gen_share(p._secret, crp) for p in f.parties])
        return gen, round1, [gen.gen_round2_share(p._secret, round1) for p in f.parties]

    gen, round1, ours = round2_shares(fed)
    other_gen, other_round1, theirs = round2_shares(other_fed)
    with pytest.raises(KeyMismatchError, match="different protocol instances"):
        gen.aggregate_round2(ours[0], theirs[1])
    with pytest.raises(KeyMismatchError):
        gen.aggregate(round1, other_round1)  # complete round-1 sums of two runs
    with pytest.raises(KeyMismatchError):
        gen.aggregate(
            gen.gen_share(fed.parties[1]._secret, gen.gen_crp(fed.parties[0]._secret)),
            other_gen.gen_crp(other_fed.parties[0]._secret),
        )
    # a round-1 share is not a round-2 share
    with pytest.raises(KeyMismatchError, match="expected a RelinRound2Share"):
        gen.aggregate_round2(ours[0], round1)


def test_relin_round2_shares_from_different_round1_aggregates_of_one_run_refuse(fed):
    """Same CRP, same subject, all parties, but one party's round-1 share drawn twice: the
    two complete round-1 aggregates differ, and round-2 shares made from them are bound to
    the aggregate they came from (its envelope checksum), so they refuse to aggregate."""
    gen = RelinKeyGen(fed.joint_key)
    secrets = [p._secret for p in fed.parties]
    crp = gen.gen_crp(secrets[0])
    shares = [gen.gen_share(s, crp) for s in secrets]
    round1 = gen.aggregate_all(shares)
    redrawn = gen.aggregate_all([*shares[:-1], gen.gen_share(secrets[-1], crp)])
    assert round1.subject == redrawn.subject and round1.to_bytes() != redrawn.to_bytes()
    a = gen.gen_round2_share(secrets[0], round1)
    b = gen.gen_round2_share(secrets[1], redrawn)
    with pytest.raises(KeyMismatchError, match="different protocol instances"):
        gen.aggregate_round2(a, b)
    # the same aggregate, received as bytes, binds the same way as the sender's object
    received = gen.share_from_bytes(round1.to_bytes())
    again = gen.gen_round2_share(secrets[1], received)
    assert again.subject == a.subject
    gen.aggregate_round2(a, again)


def test_refresh_shares_for_different_crps_refuse_to_aggregate(fed, ct):
    proto = Refresh(fed.ctx)
    prepared = proto.prepare(ct)
    crp1, crp2 = proto.gen_crp(fed.joint_key), proto.gen_crp(fed.joint_key)
    a = fed.parties[0].refresh_share(prepared, crp1)
    b = fed.parties[1].refresh_share(prepared, crp2)
    with pytest.raises(KeyMismatchError):
        proto.aggregate(a, b)
    full = proto.aggregate_all([p.refresh_share(prepared, crp1) for p in fed.parties])
    with pytest.raises(KeyMismatchError):
        proto.finalize(full, prepared, crp2, fed.joint_key)


def test_refresh_under_another_joint_key_is_refused(fed, other_fed, ct):
    proto = Refresh(fed.ctx)
    prepared = proto.prepare(ct)
    crp = proto.gen_crp(fed.joint_key)
    full = proto.aggregate_all([p.refresh_share(prepared, crp) for p in fed.parties])
    with pytest.raises(KeyMismatchError, match="not under this joint key"):
        proto.finalize(full, prepared, crp, other_fed.joint_key)


def test_shares_of_the_wrong_class_are_refused(fed, ct, querier):
    dec = fed.parties[0].decryption_share(ct)
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    with pytest.raises(KeyMismatchError, match="expected a KeySwitchShare, got DecryptionShare"):
        ks.aggregate(dec, dec)
    with pytest.raises(KeyMismatchError, match="expected a DecryptionShare, got Ciphertext"):
        ThresholdDecrypt(fed.ctx).aggregate(ct, dec)


# -- wrong party sets -----------------------------------------------------------------------
def test_shares_with_different_party_counts_refuse_to_aggregate(fed, params, ct):
    """Party 1 of a 3-party federation and party 1 of a 4-party federation, same ciphertext."""
    bigger = LocalFederation.setup(params, 4)
    proto = ThresholdDecrypt(fed.ctx)
    a = fed.parties[0].decryption_share(ct)
    b = bigger.parties[1].decryption_share(ct)
    assert a.subject == b.subject
    with pytest.raises(PartySetError, match=r"party count \(3 vs 4\)"):
        proto.aggregate(a, b)


def test_the_same_party_twice_is_refused(fed, ct):
    proto = ThresholdDecrypt(fed.ctx)
    s0, s1, s2 = (p.decryption_share(ct) for p in fed.parties)
    with pytest.raises(PartySetError, match=r"parties \[1\] contributed twice"):
        proto.aggregate(s1, s1)
    with pytest.raises(PartySetError, match=r"parties \[0, 1\] contributed twice"):
        proto.aggregate(proto.aggregate(s0, s1), proto.aggregate(s1, s0))
    # the same party's share for the same ciphertext from a re-run party (new noise)
    rerun = Party(fed.parties[2]._secret).decryption_share(ct)
    with pytest.raises(PartySetError):
        proto.aggregate(proto.aggregate(s0, s2), rerun)


def test_finalize_with_a_missing_party_is_refused_for_every_protocol(fed, ct, querier):
    proto = ThresholdDecrypt(fed.ctx)
    with pytest.raises(PartySetError, match=r"lacks parties \[2\]"):
        proto.finalize(proto.aggregate_all([p.decryption_share(ct) for p in fed.parties[:2]]), ct)
    ks = QueryKeySwitch(fed.ctx, querier.public_key)
    with pytest.raises(PartySetError, match=r"lacks parties \[0\]"):
        ks.finalize(
            ks.aggregate_all([p.key_switch_share(ct, querier.public_key) for p in fed.parties[1:]]),
            ct,
        )
    rp = Refresh(fed.ctx)
    prepared = rp.prepare(ct)
    crp = rp.gen_crp(fed.joint_key)
    with pytest.raises(PartySetError, match=r"lacks parties \[1\]"):
        rp.finalize(
            rp.aggregate_all([fed.parties[i].refresh_share(prepared, crp) for i in (0, 2)]),
            prepared,
            crp,
            fed.joint_key,
        )
    with pytest.raises(PartySetError, match="no shares"):
        proto.aggregate_all([])

    ctx = fed.ctx
    pkg = PublicKeyGen(ctx)
    lead, crp_pk = pkg.gen_crp(N)
    with pytest.raises(PartySetError, match=r"lacks parties \[1, 2\]"):
        pkg.finalize(crp_pk)
    gen = RelinKeyGen(fed.joint_key)
    r_crp = gen.gen_crp(fed.parties[0]._secret)
    with pytest.raises(PartySetError):
        gen.gen_round2_share(fed.parties[1]._secret, r_crp)  # round 1 incomplete
    round1 = gen.aggregate_all([gen.gen_share(p._secret, r_crp) for p in fed.parties])
    with pytest.raises(PartySetError):
        gen.finalize(gen.gen_round2_share(fed.parties[1]._secret, round1))
    rot = RotationKeyGen(fed.joint_key, [1])
    with pytest.raises(PartySetError):
        rot.finalize(rot.gen_crp(fed.parties[0]._secret))


def test_protocol_role_and_index_checks(fed, params):
    ctx = fed.ctx
    pkg = PublicKeyGen(ctx)
    for bad in (0, 4097, -1):
        with pytest.raises(ParameterError, match="party count"):
            pkg.gen_crp(bad)
    lead, crp = pkg.gen_crp(N)
    for bad in (0, N, -1):
        with pytest.raises(ParameterError, match="party index"):
            pkg.gen_share(bad, crp)
    _, share1 = pkg.gen_share(1, crp)
    with pytest.raises(ParameterError, match="must be the lead's own share"):
        pkg.gen_share(2, share1)
    with pytest.raises(KeyMismatchError, match="only the lead"):
        RelinKeyGen(fed.joint_key).gen_crp(fed.parties[1]._secret)
    with pytest.raises(KeyMismatchError, match="only the lead"):
        RotationKeyGen(fed.joint_key, [1]).gen_crp(fed.parties[1]._secret)
    bigger = LocalFederation.setup(params, 4)
    gen = RelinKeyGen(fed.joint_key)
    with pytest.raises(KeyMismatchError, match="3-party"):
        gen.gen_share(bigger.parties[1]._secret, gen.gen_crp(fed.parties[0]._secret))
    with pytest.raises(ParameterError, match="party index 5 outside 0..2"):
        SecretShare(ctx, fed.parties[0]._secret.raw, 5, 3)


@pytest.mark.parametrize("steps", [[], [0], [2048], [-2048], [1, 0]], ids=str)
def test_invalid_rotation_steps_are_refused(fed, steps):
    with pytest.raises(ParameterError, match="rotation steps"):
        RotationKeyGen(fed.joint_key, steps)


# -- levels, values, keys -------------------------------------------------------------------
def test_level_errors(fed, ct):
    ctx = fed.ctx
    params = ctx.params
    with pytest.raises(LevelError, match="fresh from a multiplication"):
        ctx.rescale(ct)
    for bad in (-1, params.mult_depth):
        with pytest.raises(LevelError):
            ctx.encrypt([1.0], fed.joint_key, level=bad)
    low = ctx.encrypt([1.0], fed.joint_key, level=params.mult_depth - 1)
    bottom = ctx.rescale(ctx.mul(low, low))
    assert bottom.levels_left == 0
    with pytest.raises(LevelError, match="no level left"):
        ctx.mul(bottom, bottom)
    with pytest.raises(LevelError, match="no level left"):
        ctx.mul_plain(bottom, 2.0)
    proto = Refresh(ctx)
    with pytest.raises(LevelError, match=f"needs {params.refresh_min_levels} levels left"):
        proto.prepare(bottom)
    with pytest.raises(LevelError, match="scale degree 1"):
        proto.prepare(ctx.mul(ct, ct))


def test_bad_values_to_encode(fed):
    ctx = fed.ctx
    with pytest.raises(ParameterError, match="do not fit the 2048 slots"):
        fed.encrypt(np.zeros(ctx.slots + 1))
    for bad in (np.nan, np.inf, -np.inf):
        with pytest.raises(ParameterError, match="NaN or infinity"):
            fed.encrypt([1.0, bad])


def test_missing_evaluation_keys_are_crypto_errors(fed, ct):
    with pytest.raises(CryptoError, match=f"rotation by {UNINSTALLED_ROTATION}"):
        fed.ctx.rotate(ct, UNINSTALLED_ROTATION)


def test_crypto_error_messages_carry_no_openfhe_build_paths(fed, ct):
    with pytest.raises(CryptoError) as info:
        fed.ctx.rotate(ct, UNINSTALLED_ROTATION)
    msg = str(info.value)
    assert ".cpp" not in msg and "openfhe-development" not in msg, msg


def test_errors_are_phe_fl_errors_and_builtins(fed, ct):
    """Callers can catch PheFlError, or the natural built-in."""
    with pytest.raises(PheFlError):
        fed.ctx.ciphertext_from_bytes(b"junk")
    with pytest.raises(ValueError):
        fed.ctx.ciphertext_from_bytes(b"junk")
    with pytest.raises(RuntimeError):
        fed.ctx.rotate(ct, UNINSTALLED_ROTATION)


# -- secrets never printed -----------------------------------------------------------------
def secret_material(payload: bytes, other_payload: bytes, width: int = 8) -> set[bytes]:
    """The ``width``-byte windows of a serialized secret key that are not in another
    secret key's serialization: its key material, without OpenFHE's shared metadata
    (class names, parameters)."""

    def windows(b: bytes) -> set[bytes]:
        return {b[i : i + width] for i in range(len(b) - width + 1)}

    return windows(payload) - windows(other_payload)


def leaks(text: str, material: set[bytes]) -> list[str]:
    """8-byte pieces of secret key material found in ``text``: as raw characters, inside
    a bytes literal (b'...'), as hex or as base64."""
    candidates = [text.encode("latin-1", "ignore"), text.encode("utf-8", "surrogateescape")]
    for m in re.finditer(r"b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\"", text):
        try:
            candidates.append(ast.literal_eval(m.group()))
        except (ValueError, SyntaxError):
            pass
    for m in re.finditer(r"[0-9a-fA-F]{16,}", text):
        run = m.group()
        candidates += [bytes.fromhex(run[k : k + (len(run) - k) // 2 * 2]) for k in (0, 1)]
    for m in re.finditer(r"[A-Za-z0-9+/]{12,}={0,2}", text):
        for k in range(4):
            chunk = m.group()[k:]
            chunk = chunk[: len(chunk) // 4 * 4]
            try:
                candidates.append(base64.b64decode(chunk, validate=True))
            except (ValueError, binascii.Error):
                pass
    found = []
    for c in candidates:
        found += [c[i : i + 8].hex() for i in range(len(c) - 7) if c[i : i + 8] in material]
    return found


def secret_payload(share_or_pair) -> bytes:
    if isinstance(share_or_pair, SecretShare):
        return Envelope.unpack(share_or_pair.to_bytes(), Kind.SECRET_SHARE).blobs[0]
    return Envelope.unpack(share_or_pair.to_bytes(), Kind.QUERIER_SECRET_KEY).blobs[0]


def test_leak_detector_detects_leaks(fed):
    """Control: the detector below would flag a repr that printed key bytes."""
    material = secret_material(
        secret_payload(fed.parties[1]._secret), secret_payload(fed.parties[2]._secret)
    )
    assert len(material) > 10_000
    piece = sorted(material)[len(material) // 2]
    for shown in (
        f"SecretShare({piece.hex()})",
        f"SecretShare(x{piece.hex().upper()})",
        f"SecretShare({piece!r})",
        f"SecretShare({base64.b64encode(b'ab' + piece).decode()})",
        "SecretShare(" + piece.decode("latin-1") + ")",
    ):
        assert leaks(shown, material), shown
    assert not leaks(repr(fed.parties[1]._secret), material)


def test_secret_share_repr_is_redacted(fed):
    secret = fed.parties[1]._secret
    material = secret_material(secret_payload(secret), secret_payload(fed.parties[2]._secret))
    for text in (repr(secret), str(secret), f"{secret}", repr(fed.parties[1])):
        assert not leaks(text, material), text
        assert len(text) < 200
    assert "redacted" in repr(secret) and "redacted" in str(secret)


def test_querier_key_pair_repr_is_redacted(fed, querier):
    material = secret_material(secret_payload(querier), secret_payload(fed.parties[0]._secret))
    for text in (repr(querier), str(querier)):
        assert "redacted" in text
        assert not leaks(text, material), text
        assert len(text) < 200


def test_error_messages_about_secrets_carry_no_secret_bytes(fed, querier):
    ctx = fed.ctx
    other = secret_payload(fed.parties[2]._secret)
    material = secret_material(secret_payload(fed.parties[0]._secret), other) | secret_material(
        secret_payload(querier), other
    )
    attempts = []
    for data, load in (
        (fed.parties[0]._secret.to_bytes(), SecretShare.from_bytes),
        (querier.to_bytes(), QuerierKeyPair.from_bytes),
    ):
        attempts += [
            lambda d=data, f=load: f(ctx, d[: len(d) // 2]),
            lambda d=data, f=load: f(ctx, d[:-2] + bytes([d[-2] ^ 1, d[-1]])),
            lambda d=data, f=load: f(Context(N14_128), d),
        ]
    # a secret share offered where the other secret kind is expected, and vice versa
    attempts.append(lambda: QuerierKeyPair.from_bytes(ctx, fed.parties[0]._secret.to_bytes()))
    attempts.append(lambda: SecretShare.from_bytes(ctx, querier.to_bytes()))
    # (checksum-valid envelopes with corrupted secret payloads are loaded in a child
    # process by the crafted-payload tests above: OpenFHE may crash on them)
    messages = []
    for attempt in attempts:
        with pytest.raises(PheFlError) as info:
            attempt()
        messages.append(str(info.value))
    for msg in messages:
        assert not leaks(msg, material), msg
        assert len(msg) < 1000, msg


def test_one_key_generation_makes_at_most_max_rotation_keys(fed):
    """The cap that bounds the largest tree message (phe_fl.mhe.largest_message_bytes)."""
    from phe_fl.mhe import MAX_ROTATION_KEYS

    steps = range(1, MAX_ROTATION_KEYS + 1)
    assert len(RotationKeyGen(fed.joint_key, steps).indices) == MAX_ROTATION_KEYS
    with pytest.raises(ParameterError, match="129 rotation steps asked; .* at most 128"):
        RotationKeyGen(fed.joint_key, range(1, MAX_ROTATION_KEYS + 2))
