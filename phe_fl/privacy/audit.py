"""The membership audit in one call: every observer's attacks on one game, one report.

Observers (issue 12):

* ``"querier"``: phe-fl's querier receives only its predictions, i.e. the model as a
  function from rows to scores; the threshold and reference attacks run on exactly that.
* ``"server"``: the server of a *plain* FedAvg run on the same members, which sees every
  party's update in the clear (:mod:`phe_fl.privacy.fedavg`): the comparison point.
* ``"party"``: a phe-fl party (data provider or aggregator) receives only ciphertexts
  under the joint key, which it cannot decrypt alone; no membership attack applies to that
  view. The transcript tests of issue 12 check it separately; the audit states it.
"""

from __future__ import annotations

import logging
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from phe_fl.errors import ParameterError
from phe_fl.privacy.attacks import (
    AuditData,
    audit_split,
    not_applicable,
    reference_attack,
    threshold_attack,
)
from phe_fl.privacy.fedavg import FedAvgConfig, ServerAttack, gradient_attack, train_fedavg
from phe_fl.privacy.models import ScoreFn, SklearnTrainer, Trainer
from phe_fl.privacy.report import MembershipReport

__all__ = [
    "OBSERVERS",
    "MODELS",
    "PARTY_NOTE",
    "audit_membership",
    "network_trainer",
    "membership_experiment",
    "quiet_training",
    "summarize_warnings",
]

OBSERVERS = ("querier", "server", "party")
MODELS = ("glm", "mlp")

PARTY_NOTE = (
    "a phe-fl party sees only ciphertexts under the joint key (model, gradients, queries, "
    "scores) and partial-decryption shares with noise flooding; no party can decrypt alone "
    "(N-out-of-N), so no membership attack applies to its view (RLWE). Checked by the "
    "transcript tests of issue 12, not by this audit."
)

QUERIER = "phe-fl querier (predictions)"
SERVER = "plain FedAvg server (updates in clear)"
PARTY = "phe-fl party (ciphertexts only)"


@contextmanager
def quiet_training() -> Iterator[list[warnings.WarningMessage]]:
    """Record instead of print the warnings of the many trainings an audit runs (the
    twin's margin warnings, scikit-learn's convergence warnings: the overfit network runs
    a fixed number of epochs on purpose), and hold back the ``phe_fl.ml`` logger's
    per-training WARNING lines; :func:`summarize_warnings` puts them in the report."""
    ml_log = logging.getLogger("phe_fl.ml")
    level = ml_log.level
    ml_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            yield seen
    finally:
        ml_log.setLevel(level)


def summarize_warnings(seen: Sequence[warnings.WarningMessage]) -> str:
    """One line per warning kind: how often, and the first message."""
    counts = Counter(w.category.__name__ for w in seen)
    first: dict[str, str] = {}
    for w in seen:
        first.setdefault(w.category.__name__, str(w.message).split("\n")[0])
    return "; ".join(f"{k} x{n} (first: {first[k]})" for k, n in counts.items())


def audit_membership(
    target: ScoreFn,
    data: AuditData,
    *,
    trainer: Trainer | None = None,
    n_reference: int = 8,
    reference_train_size: int | None = None,
    model_name: str = "",
    fedavg: FedAvgConfig | None = None,
    server_attacks: Sequence[ServerAttack] = ("similarity", "decomposition"),
    include_party: bool = True,
    dataset: str = "",
    seed: int = 0,
    report: MembershipReport | None = None,
) -> MembershipReport:
    """Audit ``target`` (the querier's view: rows to probabilities) on the game ``data``.

    Always the population-calibrated threshold attack; with a ``trainer`` (the target's
    family and procedure) also the reference attack with ``n_reference`` models. With
    ``fedavg``, a plain FedAvg run of logistic regression on the members and the server's
    attacks on it; ``include_party`` states the phe-fl party's row. Results are appended
    to ``report`` when given (several models on one game), else to a new one."""
    if report is None:
        report = MembershipReport(dataset or "audit", data.sizes)
    elif report.sizes != data.sizes:
        raise ParameterError("audit_membership: the report holds another game (other sizes)")
    name = model_name or (trainer.name if trainer is not None else "target model")
    report.results.append(threshold_attack(target, data, observer=QUERIER, model_name=name))
    if trainer is not None and n_reference:
        report.results.append(
            reference_attack(
                target,
                trainer,
                data,
                n_reference=n_reference,
                train_size=reference_train_size,
                seed=seed,
                observer=QUERIER,
                model_name=name,
            )
        )
    if fedavg is not None:
        transcript = train_fedavg(*data.members, fedavg, seed=seed)
        for method in server_attacks:
            report.results.append(gradient_attack(transcript, data, method=method, observer=SERVER))
    if include_party and not any(r.observer == PARTY for r in report.results):
        report.results.append(not_applicable(PARTY, "any (encrypted)", PARTY_NOTE))
    return report


def network_trainer(
    hidden: Sequence[int] = (64,), epochs: int = 300, n_classes: int = 2
) -> SklearnTrainer:
    """The deliberately overfit network: scikit-learn's MLP (Adam, no weight decay, no
    early stopping, exactly ``epochs`` passes) on standardized inputs."""
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ParameterError(f"epochs must be a positive integer, got {epochs!r}")
    widths = tuple(hidden)
    if not widths or not all(
        isinstance(h, int) and not isinstance(h, bool) and h > 0 for h in widths
    ):
        raise ParameterError(f"hidden must list positive layer widths, got {hidden!r}")
    est: Any = make_pipeline(
        StandardScaler(),
        MLPClassifier(
            widths, alpha=0.0, max_iter=epochs, tol=0.0, n_iter_no_change=epochs, random_state=0
        ),
    )
    label = f"MLP {'x'.join(map(str, widths))}, {epochs} epochs (scikit-learn)"
    return SklearnTrainer(est, n_classes=n_classes, label=label)


def membership_experiment(
    dataset: str,
    *,
    models: Sequence[str] = ("glm",),
    observers: Sequence[str] = OBSERVERS,
    members: int = 200,
    nonmembers: int = 200,
    population: int | None = None,
    n_reference: int = 8,
    parties: int = 4,
    iterations: int = 40,
    learning_rate: float = 0.2,
    batch_size: int = 16,
    activation_degree: int = 5,
    output: str = "activation",
    hidden: Sequence[int] = (64,),
    epochs: int = 300,
    fedavg_rounds: int = 40,
    fedavg_local_epochs: int = 1,
    digit: int | None = 0,
    seed: int = 0,
) -> MembershipReport:
    """The audit of a shipped dataset (what ``phe-fl audit membership`` runs): deal it into
    the game, train each target on the members (``"glm"``: phe-fl logistic regression by
    its twin over ``parties`` parties; ``"mlp"``: the overfit network), attack it through
    each observer's view. ``digit=None`` keeps digits' ten classes (network only)."""
    from phe_fl.ml.datasets import load_dataset
    from phe_fl.ml.glm import TrainingJob
    from phe_fl.privacy.models import GLMTwinTrainer

    bad_obs = [o for o in observers if o not in OBSERVERS]
    bad_models = [m for m in models if m not in MODELS]
    if bad_obs or not observers:
        raise ParameterError(f"observers must be among {', '.join(OBSERVERS)}, got {observers!r}")
    if bad_models or not models:
        raise ParameterError(f"models must be among {', '.join(MODELS)}, got {models!r}")
    x, y, desc = load_dataset(dataset, digit=digit)
    n_classes = int(y.max()) + 1
    if n_classes > 2 and ("glm" in models or "server" in observers):
        raise ParameterError(
            "the GLM and the FedAvg server are binary: use a one-vs-rest digit, or only the "
            "network with the querier"
        )
    data = audit_split(
        x, y, members=members, nonmembers=nonmembers, population=population, seed=seed
    )
    report = MembershipReport(dataset, data.sizes, setup={"dataset": desc, "seed": seed})
    n_ref = n_reference if "querier" in observers else 0
    if "querier" in observers:
        for kind in models:
            trainer: Trainer
            if kind == "glm":
                job = TrainingJob(
                    n_features=x.shape[1],
                    iterations=iterations,
                    learning_rate=learning_rate,
                    batch_size=batch_size,
                    activation_degree=activation_degree,
                )
                if output not in ("activation", "margin"):
                    raise ParameterError(f"output must be 'activation' or 'margin', got {output!r}")
                trainer = GLMTwinTrainer(
                    job, n_parties=parties, output="margin" if output == "margin" else "activation"
                )
                report.setup["glm"] = (
                    f"{iterations} iterations, learning rate {learning_rate}, batch {batch_size} "
                    f"per party, {parties} parties, degree-{activation_degree} sigmoid, "
                    f"querier output {output!r}"
                )
            else:
                trainer = network_trainer(hidden, epochs, n_classes)
                report.setup["network"] = trainer.name
            with quiet_training() as seen:
                target = trainer.fit(*data.members, seed)
                audit_membership(
                    target,
                    data,
                    trainer=trainer,
                    n_reference=n_ref,
                    seed=seed,
                    include_party=False,
                    report=report,
                )
            if seen:
                report.setup[f"{kind} training warnings"] = summarize_warnings(seen)
    if "server" in observers:
        cfg = FedAvgConfig(
            n_parties=parties,
            rounds=fedavg_rounds,
            learning_rate=learning_rate,
            local_epochs=fedavg_local_epochs,
        )
        report.setup["fedavg"] = (
            f"{parties} parties, {fedavg_rounds} rounds, {fedavg_local_epochs} local epoch(s) of "
            f"full-batch gradient descent, learning rate {learning_rate}"
        )
        transcript = train_fedavg(*data.members, cfg, seed=seed)
        methods: tuple[ServerAttack, ...] = ("similarity", "decomposition")
        for method in methods:
            report.results.append(gradient_attack(transcript, data, method=method, observer=SERVER))
    if "party" in observers:
        report.results.append(not_applicable(PARTY, "any (encrypted)", PARTY_NOTE))
    return report
