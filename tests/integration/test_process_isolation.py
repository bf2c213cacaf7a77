"""Real processes that receive bytes only.

* An evaluator process gets the parameter-set name, the joint public key, the relinearization
  key, the rotation keys and ciphertexts; it encrypts, multiplies, rescales, rotates and
  adds, and returns ciphertext bytes. It never sees a secret share.
* One process per party gets only its own SecretShare and the ciphertext, and returns its
  DecryptionShare (and a KeySwitchShare for a querier's public key).
The parent fuses the shares and compares with numpy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from phe_fl.mhe import LocalFederation, QuerierKeyPair, QueryKeySwitch, ThresholdDecrypt
from tests.helpers import ROTATIONS, error_bound, max_abs_error

ROOT = Path(__file__).resolve().parents[2]
N = 3

EVALUATOR = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import phe_fl.mhe as mhe

    d = Path(sys.argv[1])
    ctx = mhe.Context(mhe.get_parameter_set((d / "params").read_text()))
    joint = mhe.JointPublicKey.from_bytes(ctx, (d / "joint_key").read_bytes())
    mhe.RelinKey.from_bytes(ctx, (d / "relin_key").read_bytes()).install()
    mhe.RotationKeys.from_bytes(ctx, (d / "rotation_keys").read_bytes()).install()
    a = ctx.ciphertext_from_bytes((d / "a").read_bytes())
    b = ctx.ciphertext_from_bytes((d / "b").read_bytes())
    w = np.load(d / "w.npy")
    v = np.load(d / "v.npy")
    step = int((d / "step").read_text())

    c = ctx.rescale(ctx.mul(a, b))                  # ct x ct, relinearized
    c = ctx.rotate(c, step)                         # installed rotation key
    c = ctx.add(c, ctx.rescale(ctx.mul_plain(a, w)))  # + ct x pt
    c = ctx.add(c, ctx.encrypt(v, joint, level=c.level))  # its own encryption
    assert c.key_tag == joint.key_tag
    (d / "result").write_bytes(c.to_bytes())
    # what this process holds: no secret material at all
    held = [type(o).__name__ for o in list(globals().values())
            if type(o).__module__.startswith("phe_fl")]
    assert not any("Secret" in h or "Querier" in h for h in held), held
    """
)

PARTY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import phe_fl.mhe as mhe

    d, index = Path(sys.argv[1]), sys.argv[2]
    ctx = mhe.Context(mhe.get_parameter_set((d / "params").read_text()))
    secret = mhe.SecretShare.from_bytes(ctx, (d / f"secret{index}").read_bytes())
    assert str(secret.index) == index
    party = mhe.Party(secret)
    ct = ctx.ciphertext_from_bytes((d / "result").read_bytes())
    querier = mhe.QuerierPublicKey.from_bytes(ctx, (d / "querier").read_bytes())
    share = party.decryption_share(ct)
    again = party.decryption_share(ctx.ciphertext_from_bytes(ct.to_bytes()))
    assert again.to_bytes() == share.to_bytes()  # cached: the same bytes resent
    (d / f"dec{index}").write_bytes(share.to_bytes())
    (d / f"ks{index}").write_bytes(party.key_switch_share(ct, querier).to_bytes())
    """
)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def check(proc: subprocess.CompletedProcess | subprocess.Popen, out: str, err: str) -> None:
    assert proc.returncode == 0, f"child failed ({proc.returncode}):\n{out}\n{err}"


@pytest.fixture(scope="module")
def fed(params):
    return LocalFederation.setup(params, N, rotations=ROTATIONS)


def test_public_material_evaluates_and_secret_shares_decrypt_in_separate_processes(
    fed, tmp_path, record_property
):
    ctx = fed.ctx
    params = ctx.params
    rng = np.random.default_rng(8)
    a, b, w, v = rng.uniform(-1, 1, (4, ctx.slots))
    step = 5
    assert step in ROTATIONS
    (tmp_path / "params").write_text(params.name)
    (tmp_path / "joint_key").write_bytes(fed.joint_key.to_bytes())
    (tmp_path / "relin_key").write_bytes(fed.relin_key.to_bytes())
    (tmp_path / "rotation_keys").write_bytes(fed.rotation_keys.to_bytes())
    (tmp_path / "a").write_bytes(fed.encrypt(a).to_bytes())
    (tmp_path / "b").write_bytes(fed.encrypt(b).to_bytes())
    (tmp_path / "step").write_text(str(step))
    np.save(tmp_path / "w.npy", w)
    np.save(tmp_path / "v.npy", v)

    proc = subprocess.run(
        [sys.executable, "-c", EVALUATOR, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(),
        cwd=tmp_path,
    )
    check(proc, proc.stdout, proc.stderr)
    want = np.roll(a * b, -step) + a * w + v
    result = ctx.ciphertext_from_bytes((tmp_path / "result").read_bytes())
    assert result.key_tag == fed.joint_key.key_tag

    # each party, in its own process, from its own secret share only
    querier = QuerierKeyPair.generate(ctx)
    (tmp_path / "querier").write_bytes(querier.public_key.to_bytes())
    for p in fed.parties:
        (tmp_path / f"secret{p.index}").write_bytes(p._secret.to_bytes())
    children = [
        subprocess.Popen(
            [sys.executable, "-c", PARTY, str(tmp_path), str(i)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=child_env(),
            cwd=tmp_path,
        )
        for i in range(N)
    ]
    for child in children:
        out, err = child.communicate(timeout=180)
        check(child, out, err)

    dec = ThresholdDecrypt(ctx)
    dec_shares = [dec.share_from_bytes((tmp_path / f"dec{i}").read_bytes()) for i in range(N)]
    assert [s.parties for s in dec_shares] == [frozenset({i}) for i in range(N)]
    by_threshold = dec.finalize(dec.aggregate_all(dec_shares), result, decimals=10)

    ks = QueryKeySwitch(ctx, querier.public_key)
    ks_shares = [ks.share_from_bytes((tmp_path / f"ks{i}").read_bytes()) for i in range(N)]
    by_querier = querier.decrypt(ks.finalize(ks.aggregate_all(ks_shares), result), decimals=10)

    bound = error_bound(params, N)
    err_t, err_q = max_abs_error(by_threshold, want), max_abs_error(by_querier, want)
    record_property("max_abs_error_threshold", err_t)
    record_property("max_abs_error_key_switch", err_q)
    print(
        f"\n[n={N}, separate processes] max abs error: "
        f"threshold {err_t:.3g}, key switch {err_q:.3g}"
    )
    assert err_t <= bound
    assert err_q <= bound


def test_evaluator_without_the_relinearization_key_cannot_multiply(fed, tmp_path):
    """Control for the test above: the evaluator really depends on the keys it was sent."""
    code = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        import phe_fl.mhe as mhe
        from phe_fl.errors import CryptoError

        d = Path(sys.argv[1])
        ctx = mhe.Context(mhe.get_parameter_set((d / "params").read_text()))
        a = ctx.ciphertext_from_bytes((d / "a").read_bytes())
        try:
            ctx.mul(a, a)
        except CryptoError as exc:
            print("refused:", exc)
        else:
            raise SystemExit("multiplied without a relinearization key")
        try:
            ctx.rotate(a, 1)
        except CryptoError as exc:
            print("refused:", exc)
        else:
            raise SystemExit("rotated without rotation keys")
        """
    )
    (tmp_path / "params").write_text(fed.ctx.params.name)
    (tmp_path / "a").write_bytes(fed.encrypt([1.0, 2.0]).to_bytes())
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=child_env(),
        cwd=tmp_path,
    )
    check(proc, proc.stdout, proc.stderr)
    assert proc.stdout.count("refused:") == 2
