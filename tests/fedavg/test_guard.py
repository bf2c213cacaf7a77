"""A node's aggregate guard on its own (one party, in one process): what it refuses, and
that it refuses the same after the node restarts (its record is in the state store)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from phe_fl.fedavg.packing import add_updates, encrypt_chunks, masked
from phe_fl.federation import messages as m
from phe_fl.federation.config import FedAvgApps, load_node_config
from phe_fl.federation.fedavg import FedAvgParty
from phe_fl.federation.local import write_configs
from phe_fl.federation.store import NodeStore, StoreIdentity
from phe_fl.mhe import INSECURE_TEST, Ciphertext, compact
from phe_fl.mhe._wire import Envelope, Kind
from phe_fl.mhe.simulation import LocalFederation

JOB = "job-1"
EVERYONE = ("node-0", "node-1", "node-2")


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 3)


def _party(tmp_path: Path, fed: LocalFederation) -> FedAvgParty:
    configs, _ = write_configs(tmp_path, 3, params=INSECURE_TEST.name, certificates=False)
    config = dataclasses.replace(load_node_config(configs[1]), fedavg=FedAvgApps())
    store = NodeStore(tmp_path / "state", StoreIdentity("node-1", INSECURE_TEST.name, "fed"))
    return FedAvgParty(config, store, fed.ctx)


def _trained(party: FedAvgParty, fed: LocalFederation, round_: int) -> list[bytes]:
    """As if node-1 trained round ``round_`` (its update kept) and encrypted chunk 0."""
    job = party.job(JOB)
    job.update = np.full(10, 0.01, dtype=np.float32)
    job.fitted = (round_, 10, 0.5)
    step = m.FedAvgUpdateRequest(round_, 0, 1, 30)
    return party.encrypt(JOB, step, fed.joint_key)


def _masked(fed: LocalFederation, cts: list[bytes]) -> tuple[bytes, ...]:
    return tuple(masked(fed.ctx, ct) for ct in cts)


def _others(fed: LocalFederation) -> list[bytes]:
    """Chunk 0 of the two other parties' updates, compact as they travel."""
    update = np.full(10, 0.02, dtype=np.float32)
    return [encrypt_chunks(fed.ctx, fed.joint_key, update, 0, 1, n_parties=3)[0] for _ in "ab"]


def test_the_guard_refuses_all_but_the_sum_and_remembers_it(
    tmp_path: Path, fed: LocalFederation
) -> None:
    party = _party(tmp_path, fed)
    own = _trained(party, fed, 1)
    others = _others(fed)
    total = masked(
        fed.ctx, add_updates(fed.ctx, add_updates(fed.ctx, own[0], others[0]), others[1])
    )
    assert party.refusal(JOB, m.FedAvgDecryptRequest(1, 0, (total,), EVERYONE)) is None
    party.decryption_shares(JOB, m.FedAvgDecryptRequest(1, 0, (total,), EVERYONE), fed.parties[1])
    party.save(JOB)

    cases = {
        "is an individual update": m.FedAvgDecryptRequest(1, 0, _masked(fed, own), EVERYONE),
        "not of all 3": m.FedAvgDecryptRequest(1, 0, (total,), ("node-1", "node-2")),
        "does not hold this node's": m.FedAvgDecryptRequest(1, 0, (total,), ("a", "b", "c")),
        "no update into chunk 1": m.FedAvgDecryptRequest(1, 1, (total,), EVERYONE),
        "no update into chunk 0 of round 2": m.FedAvgDecryptRequest(2, 0, (total,), EVERYONE),
        "decrypted already for another": m.FedAvgDecryptRequest(
            1, 0, _masked(fed, others[:1]), EVERYONE
        ),
    }
    restarted = _party(tmp_path, fed)  # the same state dir: what the node had committed
    for node in (party, restarted):
        for why, step in cases.items():
            refusal = node.refusal(JOB, step)
            assert refusal is not None and why in refusal, (why, refusal)
        assert node.refusal(JOB, m.FedAvgDecryptRequest(1, 0, (total,), EVERYONE)) is None
        assert node.individual_update(own[0]) == JOB
        assert node.individual_update(compact.expand(fed.ctx, own[0])) == JOB  # as OpenFHE's
        assert node.individual_update(others[0]) is None


def test_old_rounds_are_forgotten_and_then_refused(tmp_path: Path, fed: LocalFederation) -> None:
    party = _party(tmp_path, fed)
    first = _trained(party, fed, 1)
    for r in (2, 3):
        _trained(party, fed, r)
    job = party.job(JOB)
    assert sorted(job.contributed) == [2, 3] and sorted(job.individual) == [2, 3]
    refusal = party.refusal(JOB, m.FedAvgDecryptRequest(1, 0, _masked(fed, first), EVERYONE))
    assert refusal is not None and "no update into chunk 0 of round 1" in refusal


def _with_other_c0(fed: LocalFederation, ct: bytes) -> bytes:
    """``ct`` (OpenFHE's ciphertext) with one coefficient of its c0 changed: another
    ciphertext to a byte digest, but the same c1, so the same decryption shares."""
    from phe_fl.mhe import _backend
    from phe_fl.mhe._wire import Envelope, Kind

    params = fed.ctx.params
    env = Envelope.unpack(ct, Kind.CIPHERTEXT, params.fingerprint)
    payload = bytearray(env.blobs[0])
    reader = _backend._Parser(_backend._layout_for(params), "ciphertext", bytes(payload))
    reader.run()
    at, modulus = reader.regions[0]
    first = int.from_bytes(payload[at : at + 8], "little")
    payload[at : at + 8] = ((first + 1) % modulus).to_bytes(8, "little")
    return Envelope(Kind.CIPHERTEXT, params.fingerprint, blobs=(bytes(payload),)).pack()


def _rescaled(fed: LocalFederation, masked_ct: bytes) -> bytes:
    """The same masked ciphertext written another way: quotients doubled at one shift
    less, plus q on the first (the same c1 once expanded, other bytes)."""
    c = compact._read(fed.ctx, masked_ct, Kind.COMPACT_MASKED_CIPHERTEXT)
    (shift,), (quotients,) = c.shifts, c.quotients
    modulus = compact._one_tower(fed.ctx.params, c.skeleton, 2)
    doubled = quotients * np.uint64(2)
    doubled[0] += np.uint64(modulus)
    blobs = (c.skeleton, compact._pack(doubled, shift - 1))
    return Envelope(c.envelope.kind, c.envelope.fingerprint, blobs=blobs).pack()


def test_an_individual_update_written_another_way_is_still_refused(
    tmp_path: Path, fed: LocalFederation
) -> None:
    """A share depends on c1 only: a parent that changes c0 of a party's ciphertext, its
    metadata, or writes its c1 with other bytes, must not get it decrypted (the guard
    compares the coefficients of c1, not bytes)."""
    party = _party(tmp_path, fed)
    own = _trained(party, fed, 1)
    expanded = compact.expand(fed.ctx, own[0])
    altered = _with_other_c0(fed, expanded)
    assert altered != expanded
    fed.ctx.ciphertext_from_bytes(altered)  # still a well-formed ciphertext
    assert party.individual_update(altered) == JOB
    relabelled = fed.ctx.ciphertext_from_bytes(expanded)._ct.Clone()
    relabelled.SetScalingFactor(2.0**40)  # other metadata, the same elements
    assert party.individual_update(Ciphertext(fed.ctx, relabelled).to_bytes()) == JOB
    rewritten = _rescaled(fed, _masked(fed, own)[0])
    assert rewritten != _masked(fed, own)[0]
    assert compact.expand(fed.ctx, rewritten) == compact.expand(fed.ctx, _masked(fed, own)[0])
    refusal = party.refusal(JOB, m.FedAvgDecryptRequest(1, 0, (rewritten,), EVERYONE))
    assert refusal is not None and "is an individual update" in refusal
