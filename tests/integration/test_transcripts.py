"""Whole transcripts, not just key material.

N-1 colluding parties pool their secret shares and every ciphertext a training run showed
them (the weights broadcast at every iteration, every party's encrypted gradient, what
each refresh sent around, the final model): they decrypt none of it, neither the model,
nor a gradient, nor the honest party's own contribution. The control decrypts the same
ciphertexts with every party, so the transcript is the real one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer

from phe_fl.mhe import Ciphertext, ThresholdDecrypt
from phe_fl.mhe.protocols.decryption import fuse
from phe_fl.ml import Trainer, TrainingJob
from phe_fl.ml.datasets import pooled_mean_std
from phe_fl.ml.federation import MapRequest, MapStage
from phe_fl.testing import setup_local
from tests.helpers import assert_cannot_decrypt

N = 4
JOB = TrainingJob(
    n_features=30,
    params="insecure-test-n12",
    iterations=3,
    batch_size=16,
    learning_rate=0.3,
    activation_degree=3,
    activation_bound=8.0,
    allow_model_decryption=True,
)


class Recorder:
    """The training federation, recording every ciphertext that crosses it."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.seen: list[tuple[str, Ciphertext]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def record_parties(self) -> None:
        """Each party's own gradient, before the federation adds them."""
        for party in self.inner.workers:

            def recording(
                request: MapRequest, own: Any = party.gradient, i: int = party.index
            ) -> Any:
                g = own(request)
                self.seen.append((f"party {i}'s gradient, iteration {request.iteration}", g))
                return g

            party.gradient = recording

    def map_stage(
        self, request: MapRequest, stage: int, refreshed: Mapping[str, Sequence[Ciphertext]]
    ) -> MapStage:
        if stage == 0:
            (w,) = request.weights
            self.seen.append((f"weights sent for iteration {request.iteration}", w))
        got = self.inner.map_stage(request, stage, refreshed)
        self.seen.extend(("the combined gradient", g) for g in got.gradients)
        return got  # type: ignore[no-any-return]

    def refresh_many(self, cts: Sequence[Ciphertext]) -> list[Ciphertext]:
        self.seen.extend(("a ciphertext sent to a collective refresh", ct) for ct in cts)
        out = self.inner.refresh_many(cts)
        self.seen.extend(("a refreshed ciphertext", ct) for ct in out)
        return list(out)


@pytest.fixture(scope="module")
def run() -> tuple[Recorder, Any]:
    data = load_breast_cancer()
    x, y = np.asarray(data.data), np.asarray(data.target, dtype=np.float64)
    parts = np.array_split(np.arange(len(x)), N)
    mean, std = pooled_mean_std(len(x), x.sum(axis=0), (x**2).sum(axis=0))
    shards = [((x[p] - mean) / std, y[p]) for p in parts]
    rec = Recorder(setup_local(JOB, shards))
    rec.record_parties()
    model = Trainer(JOB, rec).train()  # type: ignore[arg-type]
    rec.seen.append(("the trained model", model.weights[0]))
    return rec, model


def _everyone(fed: Any, ct: Ciphertext) -> np.ndarray:
    proto = ThresholdDecrypt(fed.ctx)
    shares = [p.decryption_share(ct) for p in fed.parties]
    return np.asarray(fuse(proto, proto.aggregate_all(shares).raw[0]))


def _colluders(fed: Any, ct: Ciphertext, missing: int) -> np.ndarray:
    """N-1 secret shares used directly (no flooding), one of them adding c0."""
    cc = fed.ctx.cc
    colluders = [p for p in fed.parties if p.index != missing]
    partials = [
        (cc.MultipartyDecryptLead if k == 0 else cc.MultipartyDecryptMain)([ct._ct], p._secret.raw)[
            0
        ]
        for k, p in enumerate(colluders)
    ]
    return np.asarray(cc.MultipartyDecryptFusion(partials).GetRealPackedValue())


def test_the_transcript_is_real(run: tuple[Recorder, Any]) -> None:
    """Control: every party together reads the model the twin computes, and the
    transcript holds every kind of ciphertext the test attacks."""
    rec, model = run
    kinds = {what.split(",")[0].split(" for ")[0] for what, _ in rec.seen}
    assert {"the trained model", "the combined gradient", "party 0's gradient"} <= kinds
    assert any(what.startswith("a ciphertext sent to a collective refresh") for what, _ in rec.seen)
    together = JOB.layout.weights_from_slots(
        _everyone(rec.fed, model.weights[0])[: JOB.layout.block]
    )
    assert np.abs(model.decrypt(rec.inner) - together).max() < 1e-3
    assert np.abs(together).max() > 0.05  # a model that learned something


@pytest.mark.parametrize("missing", [0, 2], ids=["honest=lead", "honest=party-2"])
def test_n_minus_one_parties_with_the_whole_transcript_decrypt_nothing(
    run: tuple[Recorder, Any], missing: int
) -> None:
    rec, _ = run
    fed = rec.fed
    attacked = 0
    for what, ct in rec.seen:
        truth = _everyone(fed, ct)
        if np.abs(truth).max() < 1e-6:
            continue  # an all-zero plaintext (an empty slot range) says nothing either way
        try:
            assert_cannot_decrypt(lambda ct=ct: _colluders(fed, ct, missing), truth)
        except AssertionError as exc:
            raise AssertionError(f"{what}: {exc}") from None
        attacked += 1
    assert attacked >= 3 * (1 + N)  # weights and N gradients per iteration, at least
