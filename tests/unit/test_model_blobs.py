"""The root stores a model's ciphertexts (and a training's checkpoint) one blob per
ciphertext, whatever the family; a GLM stored under the names used before every family
shared one loop is still read, so an upgraded root keeps its models and resumes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phe_fl.federation.coordinator import read_ciphertexts, write_ciphertexts
from phe_fl.federation.store import NodeStore, StoreIdentity
from phe_fl.mhe import INSECURE_TEST, Context
from phe_fl.mhe.simulation import LocalFederation


def _store(tmp_path: Path) -> NodeStore:
    return NodeStore(tmp_path / "state", StoreIdentity("root", INSECURE_TEST.name, "ab" * 16))


def _values(fed: LocalFederation, cts: list) -> list[float]:  # type: ignore[type-arg]
    return [float(fed.decrypt(ct, length=1)[0]) for ct in cts]


def test_a_model_round_trips_one_blob_per_ciphertext(tmp_path: Path) -> None:
    fed = LocalFederation.setup(INSECURE_TEST, 2)
    store = _store(tmp_path)
    cts = [fed.encrypt(np.full(4, float(k))) for k in range(3)]
    write_ciphertexts(store, "model-m", "weights", cts)
    back = read_ciphertexts(store, fed.ctx, "model-m", "weights", 3)
    assert back is not None and _values(fed, back) == [0.0, 1.0, 2.0]
    assert read_ciphertexts(store, fed.ctx, "model-m", "weights", 4) is None  # one missing
    assert read_ciphertexts(store, fed.ctx, "model-other", "weights", 1) is None


def test_a_glm_stored_under_the_older_names_is_read(tmp_path: Path) -> None:
    fed = LocalFederation.setup(INSECURE_TEST, 2)
    ctx: Context = fed.ctx
    store = _store(tmp_path)
    store.put_blob("model-old", fed.encrypt(np.full(4, 5.0)).to_bytes())
    store.put_blob("checkpoint-job-weights", fed.encrypt(np.full(4, 6.0)).to_bytes())
    store.put_blob("checkpoint-job-delta", fed.encrypt(np.full(4, 7.0)).to_bytes())
    for prefix, kind, value in (
        ("model-old", "weights", 5.0),
        ("checkpoint-job", "weights", 6.0),
        ("checkpoint-job", "delta", 7.0),
    ):
        got = read_ciphertexts(store, ctx, prefix, kind, 1)
        assert got is not None and abs(_values(fed, got)[0] - value) < 1e-3, (prefix, kind)
