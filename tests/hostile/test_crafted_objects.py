"""Crafted OpenFHE payloads inside checksum-valid envelopes never bring a node down.

A querier sends ciphertexts to the root, a parent sends ciphertexts and common random
elements to its children, a child sends its shares up: a node must survive whatever an
authenticated peer puts inside a well-formed envelope. Each crafted object (bit flips,
truncations, holes, tower-count, modulus and coefficient edits inside the OpenFHE blob,
the envelope's checksum recomputed) of six kinds (ciphertext, joint public key,
decryption share, key-switch share, relinearization and rotation-key shares) is loaded
and then used the way a node uses it, in a child process per batch, so that a crash shows
up as a signal in the table instead of killing the test run. Every input must end as a
``phe_fl.errors`` exception or as a successful operation. About 10 s on 2 cores.

Run ``python -m tests.hostile.test_crafted_objects KIND[:COUNT] ...`` to print the table
for any corpus without pytest.
"""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
N = 4096  # ring dimension of the insecure-test-n12 parameter set
CORPUS = {"ciphertext": 300, "joint_public_key": 300, "decryption_share": 150,
          "key_switch_share": 150, "relin_share": 60, "rotation_share": 60}  # fmt: skip
# mutation -> weight in each kind's corpus (deterministic per seed)
MUTATIONS = {
    "none": 1,  # control: the valid object itself
    "flip": 30,  # one bit anywhere in the blob (mostly coefficients)
    "flip_structure": 30,  # one bit outside the coefficients: context, headers, metadata
    "truncate": 6,
    "hole": 6,  # 1..64 bytes cut out
    "tower_modulus": 8,  # a tower's stored modulus replaced (another tower's, q+2, 0)
    "coefficient": 8,  # one coefficient set to q, q-1 (valid) or 2^64-1
    "tower_count": 6,  # an element's tower count +-1, 0 or huge
    "element_count": 6,  # the element count 0, +-1, 4, huge
}
CHILD_TIMEOUT_S = 240

# -- child side: craft, load, use ------------------------------------------------------------


def _regions(blob: bytes) -> list[tuple[int, int]]:
    """(marker offset, coefficient offset) of every tower, found without phe-fl's parser:
    a tower is ``40000000 01 [u32 version] u64 N`` then N coefficients."""
    out: list[tuple[int, int]] = []
    at = 0
    size = struct.pack("<Q", N)
    while True:
        m = blob.find(b"\x00\x00\x00\x40\x01", at)
        if m < 0:
            return out
        for skip in (5, 9):
            if blob[m + skip : m + skip + 8] == size:
                data = m + skip + 8
                out.append((m, data))
                at = data + 8 * N
                break
        else:
            at = m + 1


def _counts(blob: bytes, regions: list[tuple[int, int]]) -> list[int]:
    """Offsets of the u64 tower count in front of each element's first tower."""
    out = []
    for i, (m, _) in enumerate(regions):
        for back in (8, 12):  # the first element carries a 4-byte version in between
            (value,) = struct.unpack_from("<Q", blob, m - back)
            if 1 <= value <= 64 and (back == 8 or i == 0):
                out.append(m - back)
                break
    return out


def mutate(blob: bytes, mutation: str, rng: random.Random) -> bytes:
    b = bytearray(blob)
    regions = _regions(blob)
    data = [(d, d + 8 * N) for _, d in regions]
    if mutation == "flip":
        pos = rng.randrange(len(b))
    elif mutation == "flip_structure":
        pos = rng.randrange(len(b) - sum(e - s for s, e in data))
        for s, e in data:  # map the index over the non-coefficient bytes
            if pos >= s:
                pos += e - s
    if mutation in ("flip", "flip_structure"):
        b[pos] ^= 1 << rng.randrange(8)
    elif mutation == "truncate":
        del b[rng.randrange(len(b)) :]
    elif mutation == "hole":
        at = rng.randrange(len(b))
        del b[at : at + rng.randint(1, 64)]
    elif mutation == "tower_modulus":
        _, end = rng.choice(data)
        (q,) = struct.unpack_from("<Q", blob, end)
        others = sorted({blob[e : e + 8] for _, e in data} - {blob[end : end + 8]})
        b[end : end + 8] = rng.choice(
            [rng.choice(others), struct.pack("<Q", q + 2), bytes(8), struct.pack("<Q", q >> 1)]
        )
    elif mutation == "coefficient":
        start, end = rng.choice(data)
        (q,) = struct.unpack_from("<Q", blob, end)
        at = start + 8 * rng.randrange(N)
        b[at : at + 8] = struct.pack("<Q", rng.choice([q, q - 1, 2**64 - 1]))
    elif mutation == "tower_count":
        at = rng.choice(_counts(blob, regions))
        (k,) = struct.unpack_from("<Q", blob, at)
        b[at : at + 8] = struct.pack("<Q", rng.choice([k - 1, k + 1, 0, 2**40]))
    elif mutation == "element_count":
        at = _counts(blob, regions)[0] - 12  # u64 count, u32 version, then the tower count
        (n,) = struct.unpack_from("<Q", blob, at)
        b[at : at + 8] = struct.pack("<Q", rng.choice([0, n - 1, n + 1, 4, 2**33]))
    return bytes(b)


class _World:
    """A two-party federation, a querier and valid objects of every kind (child side)."""

    def __init__(self) -> None:
        import numpy as np

        import phe_fl.mhe as mhe
        from phe_fl.mhe._wire import Kind
        from phe_fl.mhe.protocols import (
            QueryKeySwitch,
            Refresh,
            RelinKeyGen,
            RotationKeyGen,
            ThresholdDecrypt,
        )

        self.mhe = mhe
        fed = self.fed = mhe.LocalFederation.setup(mhe.INSECURE_TEST, 2)
        ctx = self.ctx = fed.ctx
        lead, other = (p._secret for p in fed.parties)
        self.other = other
        self.relin = RelinKeyGen(fed.joint_key)
        relin_crp = self.relin.gen_crp(lead)
        self.relin1 = self.relin.gen_share(other, relin_crp)
        self.rot = RotationKeyGen(fed.joint_key, [1])
        rot_crp = self.rot.gen_crp(lead)
        self.rot1 = self.rot.gen_share(other, rot_crp)
        self.querier = mhe.QuerierKeyPair.generate(ctx)
        self.good = fed.encrypt(np.linspace(-1.0, 1.0, 32))
        self.low = ctx.rescale(ctx.mul(self.good, self.good))  # one tower fewer
        self.dec = ThresholdDecrypt(ctx)
        self.ks = QueryKeySwitch(ctx, self.querier.public_key)
        self.refresh = Refresh(ctx)
        self.crp = self.refresh.gen_crp(fed.joint_key)
        self.dec0 = fed.parties[0].decryption_share(self.good)
        self.ks0 = fed.parties[0].key_switch_share(self.good, self.querier.public_key)
        self.valid = {
            "ciphertext": [
                (self.good.to_bytes(), Kind.CIPHERTEXT),
                (self.low.to_bytes(), Kind.CIPHERTEXT),
            ],
            "joint_public_key": [(fed.joint_key.to_bytes(), Kind.JOINT_PUBLIC_KEY)],
            "decryption_share": [
                (fed.parties[1].decryption_share(self.good).to_bytes(), Kind.DECRYPTION_SHARE)
            ],
            "key_switch_share": [
                (
                    fed.parties[1].key_switch_share(self.good, self.querier.public_key).to_bytes(),
                    Kind.KEY_SWITCH_SHARE,
                )
            ],
            "relin_share": [(relin_crp.to_bytes(), Kind.RELIN_ROUND1_SHARE)],
            "rotation_share": [(rot_crp.to_bytes(), Kind.ROTATION_KEYS_SHARE)],
        }

    def craft(self, kind: str, mutation: str, seed: int) -> bytes:
        from phe_fl.mhe._wire import Envelope

        rng = random.Random(seed)
        data, k = rng.choice(self.valid[kind])
        env = Envelope.unpack(data, k)
        blob = mutate(env.blobs[0], mutation, rng)
        return Envelope(
            env.kind, env.fingerprint, env.n_parties, env.parties, env.subject, (blob,)
        ).pack()  # a fresh, valid checksum over the crafted payload

    def uses(self, kind: str, data: bytes) -> Iterator[Callable[[], Any]]:
        """Load ``data`` (the first step), then the operations a node runs on such input."""
        mhe, ctx, fed = self.mhe, self.ctx, self.fed
        from phe_fl.mhe.protocols import (
            DecryptionShare,
            KeySwitchShare,
            RelinRound1Share,
            RotationKeysShare,
        )

        if kind == "ciphertext":
            ct = ctx.ciphertext_from_bytes(data)
            yield lambda: ctx.add(self.good if ct.levels_left == 7 else self.low, ct)
            yield lambda: ctx.mul(ct, ct)
            yield lambda: fed.parties[0].decryption_share(ct)
            yield lambda: fed.parties[1].key_switch_share(ct, self.querier.public_key)
            yield lambda: fed.parties[1].refresh_share(self.refresh.prepare(ct), self.crp)
        elif kind == "joint_public_key":
            key = mhe.JointPublicKey.from_bytes(ctx, data)
            yield lambda: fed.decrypt(ctx.add(self.good, ctx.encrypt([0.5], key)))
            yield lambda: self.refresh.gen_crp(key)
        elif kind == "decryption_share":
            share = DecryptionShare.from_bytes(ctx, data)
            yield lambda: self.dec.finalize(self.dec.aggregate(self.dec0, share), self.good)
            yield lambda: self.dec.finalize(self.dec.aggregate(share, self.dec0), self.good)
        elif kind == "key_switch_share":
            share = KeySwitchShare.from_bytes(ctx, data)
            agg = self.ks.aggregate
            yield lambda: self.querier.decrypt(self.ks.finalize(agg(self.ks0, share), self.good))
            yield lambda: self.querier.decrypt(self.ks.finalize(agg(share, self.ks0), self.good))
        elif kind == "relin_share":  # the lead's round-1 share, which is also the CRP
            crp = RelinRound1Share.from_bytes(ctx, data)
            relin = self.relin
            yield lambda: relin.gen_share(self.other, crp)  # a child answering the CRP
            yield lambda: relin.gen_round2_share(self.other, relin.aggregate(self.relin1, crp))
            yield lambda: relin.aggregate(crp, self.relin1)
        else:  # the lead's rotation keys, which are also the CRP
            crp = RotationKeysShare.from_bytes(ctx, data)
            yield lambda: self.rot.gen_share(self.other, crp)
            yield lambda: self.rot.finalize(self.rot.aggregate(self.rot1, crp))
            yield lambda: self.rot.aggregate(crp, self.rot1)

    def run(self, kind: str, mutation: str, seed: int) -> tuple[str, str]:
        """("ok" | "clean" | "foreign", first error message)."""
        from phe_fl.errors import PheFlError

        first = ""
        outcome = "ok"
        try:
            for use in self.uses(kind, self.craft(kind, mutation, seed)):
                try:
                    use()
                except PheFlError as exc:
                    outcome, first = "clean", first or f"{type(exc).__name__}: {exc}"
        except PheFlError as exc:
            outcome, first = "clean", first or f"{type(exc).__name__}: {exc}"
        except BaseException as exc:  # anything else is a bug: reported, never swallowed
            outcome, first = "foreign", f"{type(exc).__name__}: {str(exc)[:300]}"
        return outcome, first


def child_main(cases: list[tuple[int, str, str, int]]) -> None:
    world = _World()
    print("READY", flush=True)
    for i, kind, mutation, seed in cases:
        print(f"CASE {i}", flush=True)
        outcome, message = world.run(kind, mutation, seed)
        print("RESULT " + json.dumps([i, outcome, message]), flush=True)


# -- parent side: batches in child processes, crashes observed as signals -----------------


def corpus(counts: dict[str, int]) -> list[tuple[int, str, str, int]]:
    names = list(MUTATIONS)
    weights = list(MUTATIONS.values())
    cases = []
    for kind, count in counts.items():
        rng = random.Random(f"corpus/{kind}")
        for j in range(count):
            # every mutation at least once, then by weight
            mutation = names[j] if j < len(names) else rng.choices(names, weights)[0]
            cases.append((len(cases), kind, mutation, rng.randrange(2**32)))
    return cases


def run_corpus(cases: list[tuple[int, str, str, int]]) -> dict[int, tuple[str, str]]:
    """Run ``cases`` in child processes; a child killed by a signal records a crash for
    the case it was in and a new child takes the rest."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", "1")
    results: dict[int, tuple[str, str]] = {}
    todo = list(cases)
    while todo:
        proc = subprocess.run(
            [sys.executable, "-m", "tests.hostile.test_crafted_objects", "--child"],
            input=json.dumps(todo),
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT_S,
            env=env,
            cwd=ROOT,
        )
        current = None
        ready = False
        for line in proc.stdout.splitlines():
            if line == "READY":
                ready = True
            elif line.startswith("CASE "):
                current = int(line[5:])
            elif line.startswith("RESULT "):
                i, outcome, message = json.loads(line[7:])
                results[i] = (outcome, message)
                current = None
        if proc.returncode != 0:
            if not ready or current is None:
                raise RuntimeError(
                    f"child failed outside a case (exit {proc.returncode}): {proc.stderr[-2000:]}"
                )
            rc = proc.returncode
            how = signal.Signals(-rc).name if rc < 0 else f"exit {rc}"
            tail = [ln for ln in proc.stderr.splitlines() if ln.strip()][-2:]
            results[current] = ("crash", f"{how}: {' | '.join(tail)[:300]}")
        todo = [c for c in todo if c[0] not in results]
    return results


def table(cases: list[tuple[int, str, str, int]], results: dict[int, tuple[str, str]]) -> str:
    rows: dict[str, Counter[str]] = {}
    for i, kind, _, _ in cases:
        rows.setdefault(kind, Counter())[results[i][0]] += 1
    total: Counter[str] = Counter()
    for c in rows.values():
        total.update(c)
    rows["total"] = total
    lines = [f"{'kind':18s} {'inputs':>7s} {'clean errors':>13s} {'successes':>10s} "
             f"{'crashes':>8s} {'foreign':>8s}"]  # fmt: skip
    for kind, c in rows.items():
        lines.append(
            f"{kind:18s} {sum(c.values()):7d} {c['clean']:13d} {c['ok']:10d} "
            f"{c['crash']:8d} {c['foreign']:8d}"
        )
    return "\n".join(lines)


# -- tests ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def outcome() -> tuple[list[tuple[int, str, str, int]], dict[int, tuple[str, str]], float]:
    cases = corpus(CORPUS)
    start = time.monotonic()
    results = run_corpus(cases)
    return cases, results, time.monotonic() - start


def test_crafted_objects_never_crash_a_node(outcome, capsys):
    cases, results, elapsed = outcome
    with capsys.disabled():
        print(f"\ncrafted objects, {elapsed:.1f} s:\n{table(cases, results)}")
    crashes = {cases[i][1:]: m for i, (o, m) in results.items() if o == "crash"}
    foreign = {cases[i][1:]: m for i, (o, m) in results.items() if o == "foreign"}
    assert not crashes, f"crafted inputs crashed the process: {crashes}"
    assert not foreign, f"crafted inputs raised non-phe-fl exceptions: {foreign}"
    assert {o for o, _ in results.values()} <= {"ok", "clean"}
    for kind in CORPUS:  # the corpus reaches both ends: refusals and real use
        seen = Counter(o for i, (o, _) in results.items() if cases[i][1] == kind)
        assert seen["ok"] > 0 and seen["clean"] > 0, (kind, seen)


def test_valid_objects_load_and_every_use_succeeds(outcome):
    """Control: the uncorrupted objects pass validation and every operation."""
    cases, results, _ = outcome
    controls = [(kind, results[i]) for i, kind, m, _ in cases if m == "none"]
    assert {kind for kind, _ in controls} == set(CORPUS)
    assert all(r == ("ok", "") for _, r in controls), controls


@pytest.mark.parametrize(
    ("mutation", "reason"),
    [("tower_modulus", "modulus does not match"), ("tower_count", ""), ("element_count", "")],
)
def test_structural_edits_are_refused_before_openfhe_parses_them(outcome, mutation, reason):
    """A tower's modulus, an element's tower count, the element count: refused by the
    validation (a SerializationError), whatever OpenFHE would have made of them."""
    cases, results, _ = outcome
    mine = [results[i] for i, _, m, _ in cases if m == mutation]
    assert mine
    for got, message in mine:
        assert got == "clean", message
        assert message.startswith("SerializationError: invalid"), message
        assert reason in message, message


def test_unreduced_coefficients_are_refused_and_reduced_ones_used(outcome):
    cases, results, _ = outcome
    mine = [results[i] for i, _, m, _ in cases if m == "coefficient"]
    refused = [m for o, m in mine if "not reduced modulo" in m]
    assert refused, mine  # q and 2^64-1 are refused by name ...
    assert any(o == "ok" for o, _ in mine), mine  # ... q-1 is a valid coefficient


def test_corrupt_context_is_refused_before_openfhe_parses_it(outcome):
    cases, results, _ = outcome
    messages = [results[i][1] for i, _, m, _ in cases if m == "flip_structure"]
    assert any("crypto context or header differs" in m for m in messages)


def test_refusals_never_carry_payload_bytes(outcome):
    """Messages are short sentences: no hex dumps or byte strings of the payload."""
    _, results, _ = outcome
    for _, message in results.values():
        assert len(message) < 300, message
        assert "\\x" not in message and not any(len(w) > 40 for w in message.split()), message


if __name__ == "__main__":
    if sys.argv[1:] == ["--child"]:
        child_main([tuple(c) for c in json.loads(sys.stdin.read())])  # type: ignore[misc]
    else:
        counts = {a.split(":")[0]: int(a.split(":")[1]) if ":" in a else 100 for a in sys.argv[1:]}
        todo = corpus(counts or CORPUS)
        t0 = time.monotonic()
        res = run_corpus(todo)
        print(table(todo, res))
        for i, (o, m) in sorted(res.items()):
            if o in ("crash", "foreign"):
                print(o, todo[i][1:], m)
        print(f"{time.monotonic() - t0:.1f} s")
