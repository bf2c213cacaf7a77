"""The membership audit (issue 12): metrics against scikit-learn, the game's sets, the
querier's view equal to the twin's, and an audit that can fail both ways: it finds a
deliberately overfit network (AUC well above 0.5) and finds nothing (AUC about 0.5) in
a model that never saw the members; the plain FedAvg server's attacks; the report files;
the CLI entry; the cross-check against ART."""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from phe_fl.errors import ParameterError
from phe_fl.ml.datasets import apply_standardization, load_dataset
from phe_fl.ml.glm import MarginWarning, TrainingJob
from phe_fl.privacy import (
    PARTY_NOTE,
    AuditData,
    FedAvgConfig,
    GLMTwinTrainer,
    MembershipReport,
    add_membership_parser,
    audit_membership,
    audit_split,
    gradient_attack,
    network_trainer,
    reference_attack,
    roc_curve,
    run_membership,
    threshold_attack,
    tpr_at_fpr,
    train_fedavg,
)
from phe_fl.privacy.metrics import advantage, attack_metrics, auc

FAIR = 0.1  # |AUC - 0.5| allowed for a model that never saw the members

# the overfit network runs a fixed number of epochs on purpose
pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", MarginWarning)
        warnings.filterwarnings("ignore", message=".*Maximum iterations.*")
        yield


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = load_dataset("digits", digit=None)
    return x, y


@pytest.fixture(scope="module")
def diabetes() -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = load_dataset("diabetes")
    return x, y


def _glm_trainer(n_features: int, **kw: object) -> GLMTwinTrainer:
    job = TrainingJob(n_features=n_features, iterations=30, batch_size=16, **kw)  # type: ignore[arg-type]
    return GLMTwinTrainer(job, n_parties=4)


# -- metrics ---------------------------------------------------------------------------------
def test_auc_matches_scikit_learn_with_ties() -> None:
    rng = np.random.default_rng(1)
    m = np.round(rng.normal(0.4, 1.0, 300), 1)  # rounding makes many ties
    n = np.round(rng.normal(0.0, 1.0, 500), 1)
    roc = roc_curve(m, n)
    lab = np.r_[np.ones(m.size), np.zeros(n.size)]
    assert auc(roc) == pytest.approx(roc_auc_score(lab, np.r_[m, n]), abs=1e-12)
    assert roc.fpr[0] == roc.tpr[0] == 0.0 and roc.fpr[-1] == roc.tpr[-1] == 1.0
    assert np.all(np.diff(roc.fpr) >= 0) and np.all(np.diff(roc.tpr) >= 0)
    assert advantage(roc) == pytest.approx(np.max(roc.tpr - roc.fpr))


def test_low_fpr_and_advantage_on_known_curves() -> None:
    perfect = roc_curve([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    assert attack_metrics(perfect).auc == 1.0
    assert tpr_at_fpr(perfect, 0.001) == 1.0 and advantage(perfect) == 1.0
    reversed_ = roc_curve([0.0, 1.0], [2.0, 3.0])
    assert auc(reversed_) == 0.0 and advantage(reversed_) == 0.0
    # one non-member above every member: at FPR 0 nothing is found, at FPR 1/4 everything
    roc = roc_curve([1.0, 1.1], [2.0, 0.0, 0.1, 0.2])
    assert tpr_at_fpr(roc, 0.001) == 0.0 and tpr_at_fpr(roc, 0.25) == 1.0
    ties = roc_curve([1.0, 1.0], [1.0, 1.0])
    assert auc(ties) == 0.5 and advantage(ties) == 0.0


def test_metrics_refuse_bad_scores() -> None:
    with pytest.raises(ParameterError, match="non-empty"):
        roc_curve([], [1.0])
    with pytest.raises(ParameterError, match="NaN"):
        roc_curve([np.nan], [1.0])
    with pytest.raises(ParameterError, match="target FPR"):
        tpr_at_fpr(roc_curve([1.0], [0.0]), 1.5)


# -- the game --------------------------------------------------------------------------------
def test_audit_split_is_disjoint_and_sized(diabetes) -> None:  # type: ignore[no-untyped-def]
    x, y = diabetes
    data = audit_split(x, y, members=100, nonmembers=150, population=300, seed=3)
    assert data.sizes == {"members": 100, "nonmembers": 150, "population": 300}
    rows = [{r.tobytes() for r in s[0]} for s in (data.members, data.nonmembers, data.population)]
    assert not (rows[0] & rows[1] or rows[0] & rows[2] or rows[1] & rows[2])
    with pytest.raises(ParameterError, match="cannot give"):
        audit_split(x, y, members=500, nonmembers=300)
    with pytest.raises(ParameterError, match="disjoint"):
        AuditData(data.members, data.members, data.population)


def test_reference_attack_refuses_too_few_models(diabetes) -> None:  # type: ignore[no-untyped-def]
    x, y = diabetes
    data = audit_split(x, y, members=50, nonmembers=50, seed=0)
    trainer = _glm_trainer(8)
    with pytest.raises(ParameterError, match="n_reference"):
        reference_attack(trainer.fit(*data.members, 0), trainer, data, n_reference=1)


# -- the querier's view is the twin's ---------------------------------------------------------
def test_twin_scores_equal_the_encrypted_querier_view(breast_cancer_rows) -> None:  # type: ignore[no-untyped-def]
    from phe_fl.mhe import INSECURE_TEST, QuerierKeyPair
    from phe_fl.ml import Trainer, predict_local
    from phe_fl.testing import setup_local

    x, y = breast_cancer_rows
    job = TrainingJob(
        n_features=8,
        iterations=20,
        batch_size=16,
        learning_rate=0.5,
        params=INSECURE_TEST.name,
        activation_degree=3,
        activation_bound=3.0,
    )
    twin = GLMTwinTrainer(job, n_parties=2).fit(x[:64], y[:64], seed=0)
    fed = setup_local(job, [(x[:32], y[:32]), (x[32:64], y[32:64])])
    (encrypted,) = Trainer(job, fed).encrypt_initial(twin.weights).weights
    querier = QuerierKeyPair.generate(fed.fed.ctx)
    rows = x[100:164]
    seen = predict_local(
        job, fed.fed, encrypted, apply_standardization(rows, twin.mean, twin.std), querier
    )
    expected = twin(rows)[:, 1]
    assert np.abs(seen - expected).max() < 1e-3
    assert expected.std() > 0.05  # the model is not constant


@pytest.fixture(scope="module")
def breast_cancer_rows() -> tuple[np.ndarray, np.ndarray]:
    x, y, _ = load_dataset("breast_cancer")
    return x[:, :8], y


# -- the audit can fail: it finds an overfit network ----------------------------------------
@pytest.fixture(scope="module")
def overfit(digits):  # type: ignore[no-untyped-def]
    x, y = digits
    data = audit_split(x, y, members=60, nonmembers=400, population=800, seed=0)
    trainer = network_trainer((64,), epochs=300, n_classes=10)
    target = trainer.fit(*data.members, seed=0)
    return data, trainer, target


def test_overfit_network_is_found(overfit) -> None:  # type: ignore[no-untyped-def]
    data, trainer, target = overfit
    thr = threshold_attack(target, data)
    ref = reference_attack(target, trainer, data, n_reference=4)
    assert thr.metrics is not None and ref.metrics is not None
    assert thr.metrics.auc > 0.7, thr.metrics
    assert ref.metrics.auc > 0.7, ref.metrics
    assert ref.n_reference == 4
    # the threshold calibrated on the population keeps its FPR on the real non-members
    ten = next(p for p in thr.details["calibrated"] if p["target_fpr"] == 0.1)
    assert abs(ten["fpr"] - 0.1) < 0.05 and ten["tpr"] > ten["fpr"]


# -- ... and finds nothing in a model that never saw the members ------------------------------
def test_model_that_never_saw_the_members_gives_about_one_half(diabetes, digits) -> None:  # type: ignore[no-untyped-def]
    x, y = diabetes
    data = audit_split(x, y, members=250, nonmembers=250, seed=1)
    trainer = _glm_trainer(8)
    stranger = trainer.fit(*data.population, seed=0)  # trained on neither set
    thr = threshold_attack(stranger, data)
    ref = reference_attack(stranger, trainer, data, n_reference=4)
    assert thr.metrics is not None and ref.metrics is not None
    assert abs(thr.metrics.auc - 0.5) < FAIR, thr.metrics
    assert abs(ref.metrics.auc - 0.5) < FAIR, ref.metrics
    # the same overfit network recipe as above, trained on population rows only
    xd, yd = digits
    game = audit_split(xd, yd, members=300, nonmembers=300, population=600, seed=2)
    net = network_trainer((64,), epochs=300, n_classes=10)
    blind = net.fit(*game.population, seed=0)
    blind_thr = threshold_attack(blind, game)
    assert blind_thr.metrics is not None
    assert abs(blind_thr.metrics.auc - 0.5) < FAIR, blind_thr.metrics


# -- observer (b): the plain FedAvg server ----------------------------------------------------
def test_fedavg_server_sees_members_in_updates(diabetes) -> None:  # type: ignore[no-untyped-def]
    x, y = diabetes
    data = audit_split(x, y, members=80, nonmembers=80, seed=0)
    cfg = FedAvgConfig(n_parties=4, rounds=30)
    transcript = train_fedavg(*data.members, cfg)
    assert len(transcript.updates) == 30 and transcript.updates[0].shape == (4, 9)
    dec = gradient_attack(transcript, data, method="decomposition")
    sim = gradient_attack(transcript, data, method="similarity")
    assert dec.metrics is not None and sim.metrics is not None
    assert dec.metrics.auc > 0.9, dec.metrics
    assert 0.0 <= sim.metrics.auc <= 1.0
    # a FedAvg run on other rows: its updates say nothing about the audited members
    others = train_fedavg(*data.population, cfg)
    blind = gradient_attack(others, data, method="decomposition")
    assert blind.metrics is not None and abs(blind.metrics.auc - 0.5) < 0.15, blind.metrics
    with pytest.raises(ParameterError, match="server attack"):
        gradient_attack(transcript, data, method="guess")  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="rounds"):
        FedAvgConfig(rounds=0)


# -- the API and the report ---------------------------------------------------------------------
def test_audit_membership_writes_the_report(diabetes, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    x, y = diabetes
    data = audit_split(x, y, members=80, nonmembers=80, population=200, seed=0)
    trainer = _glm_trainer(8)
    report = audit_membership(
        trainer.fit(*data.members, 0),
        data,
        trainer=trainer,
        n_reference=3,
        fedavg=FedAvgConfig(n_parties=4, rounds=10),
        dataset="diabetes",
    )
    assert isinstance(report, MembershipReport)
    assert [r.observer for r in report.results].count("phe-fl querier (predictions)") == 2
    party = report.results[-1]
    assert not party.applicable and party.note == PARTY_NOTE
    paths = report.write(tmp_path / "out")
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    doc = json.loads(paths["json"].read_text())
    assert doc["sizes"] == {"members": 80, "nonmembers": 80, "population": 200}
    refs = [r for r in doc["results"] if r["reference_models"] is not None]
    assert refs and refs[0]["reference_models"] == 3
    assert all(0.0 <= r["auc"] <= 1.0 for r in doc["results"] if r["applicable"])
    md = paths["markdown"].read_text()
    assert "Members 80, non-members 80, population 200" in md
    assert "| phe-fl party (ciphertexts only) |" in md and "TPR@0.1%FPR" in md


def test_cli_entry_runs_and_refuses_bad_arguments(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    parser = argparse.ArgumentParser(prog="phe-fl audit")
    add_membership_parser(parser.add_subparsers(dest="action", required=True))
    out = tmp_path / "report"
    args = parser.parse_args(
        [
            "membership",
            "--dataset",
            "breast_cancer",
            "--out",
            str(out),
            "--members",
            "60",
            "--nonmembers",
            "60",
            "--reference-models",
            "2",
            "--iterations",
            "10",
            "--fedavg-rounds",
            "5",
        ]
    )
    assert args.func(args) == 0
    assert {p.name for p in out.iterdir()} == {"roc.png", "report.json", "report.md"}
    assert "phe-fl querier" in capsys.readouterr().out
    bad = parser.parse_args(["membership", "--out", str(out), "--observers", "spy"])
    with pytest.raises(ParameterError, match="observers"):
        run_membership(bad)
    digits_glm = parser.parse_args(
        ["membership", "--dataset", "digits", "--digit", "all", "--out", str(out)]
    )
    with pytest.raises(ParameterError, match="binary"):
        run_membership(digits_glm)


# -- cross-check against an independent implementation ------------------------------------
def test_threshold_auc_matches_art(overfit) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("art")
    from phe_fl.privacy.crosscheck import LOSS_TOLERANCE, art_crosscheck

    data, _, target = overfit
    check = art_crosscheck(target, data, seed=0)
    assert check.ours > 0.7
    assert abs(check.ours - check.art_loss) <= LOSS_TOLERANCE, check
    assert check.within_tolerance
    assert 0.5 < check.art_prediction <= 1.0  # ART's learned attack finds the leak too
