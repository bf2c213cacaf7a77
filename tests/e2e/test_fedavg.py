"""Encrypted FedAvg over real node processes: the test process is the root (the real node
code, in-process) of two leaf processes that dial in to it; every node trains the digits
app on its own shard, updates are summed encrypted and only the sum is decrypted.

It checks the rounds against plaintext FedAvg over the same apps, that no node decrypts a
single party's update (asked as a crafted parent would), and that a site whose app fails
or changes its model's shapes fails the round naming the node and the tensor."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from phe_fl.errors import PeerError, PolicyError  # noqa: E402
from phe_fl.fedavg import FedAvgSpec, examples  # noqa: E402
from phe_fl.fedavg.packing import Layout, masked, release_decimals  # noqa: E402
from phe_fl.fedavg.site import Site, load_into  # noqa: E402
from phe_fl.fedavg.twin import plain_fedavg  # noqa: E402
from phe_fl.federation import messages as m  # noqa: E402
from phe_fl.federation.jobs import Job  # noqa: E402
from phe_fl.federation.local import write_configs  # noqa: E402
from phe_fl.mhe import INSECURE_TEST, compact  # noqa: E402
from tests.e2e.harness import RootWithLeaves  # noqa: E402

PARAMS = INSECURE_TEST.name
N = 3
ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = "phe_fl.fedavg.examples:digits_mlp"
FAULTY = "tests.e2e.fedavg_apps"
SPEC = FedAvgSpec("digits", rounds=3, epochs=1, batch_size=32, learning_rate=0.1, seed=7)


def _tables() -> list[str]:
    tables = []
    for i in range(N):
        apps = {"digits": EXAMPLE, "raises": EXAMPLE, "reshapes": EXAMPLE}
        if i == 2:
            apps["raises"] = f"{FAULTY}:raising"
        if i == 1:
            apps["reshapes"] = f"{FAULTY}:reshaping"
        entries = ", ".join(f'{k} = "{v}"' for k, v in apps.items())
        tables.append(
            f"[fedavg]\napps = {{ {entries} }}\n"
            f"options = {{ shard = {i}, shards = {N}, threads = 1 }}\nthreads = 1\n"
        )
    return tables


class Harness(RootWithLeaves):
    def __init__(self, workdir: Path) -> None:
        configs, _ = write_configs(
            workdir, N, fanout=2, params=PARAMS, tables=_tables(), allow_decryption=True
        )
        super().__init__(workdir, configs, deadline_s=60)
        self.wait_connected(["node-1", "node-2"])

    def run(self, job_id: str, job: m.Job) -> m.JobResult | None:
        job_ = self.coordinator.submit(m.JobRequest(job_id, PARAMS, job), "querier")
        assert isinstance(job_, Job)
        list(job_.follow())
        if job_.error is not None:
            raise job_.error
        return self.coordinator.jobs.result(job_)

    def ask(self, child: str, job_id: str, step: m.TreeStep) -> m.TreeResponse:
        return self.call(child, m.TreeRequest(job_id, PARAMS, N, step, 20, "fedavg"), 20)


@pytest.fixture(scope="module")
def harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Harness]:
    h = Harness(tmp_path_factory.mktemp("fedavg"))
    try:
        h.run("keys", m.SetupJob())
        yield h
    finally:
        h.close()


@pytest.fixture(scope="module")
def trained(harness: Harness) -> m.FedAvgResult:
    result = harness.run("fedavg-1", m.FedAvgJob(SPEC))
    assert isinstance(result, m.FedAvgResult)
    return result


def _twin(spec: FedAvgSpec) -> tuple[Layout, list[Any]]:
    sites = [
        Site(f"twin-{i}", {"digits": EXAMPLE}, {"shard": i, "shards": N, "threads": 1})
        for i in range(N)
    ]
    return plain_fedavg(sites, spec)


def test_one_encrypted_round_is_the_plaintext_round_within_decryption_precision(
    harness: Harness,
) -> None:
    spec = FedAvgSpec("digits", rounds=1, epochs=1, batch_size=32, learning_rate=0.1, seed=3)
    result = harness.run("fedavg-one", m.FedAvgJob(spec))
    assert isinstance(result, m.FedAvgResult)
    layout, twin = _twin(spec)
    got = np.frombuffer(result.parameters, dtype="<f4")
    # the sum is decrypted with every party's flooding noise, then rounded to
    # release_decimals (the flooding's own precision): at most one quantum off, plus noise
    quantum = 10.0 ** -release_decimals(INSECURE_TEST, N)
    err = float(np.max(np.abs(got - twin[0].global_values)))
    assert err <= 1.5 * quantum, err
    assert result.rounds[0].examples == twin[0].examples


def test_encrypted_fedavg_trains_as_plaintext_fedavg(trained: m.FedAvgResult) -> None:
    """Over several rounds each round starts from the previous decrypted sum, so the
    rounding moves the two runs apart a little; the losses and accuracy agree."""
    layout, twin = _twin(SPEC)
    got = np.frombuffer(trained.parameters, dtype="<f4")
    assert Layout(trained.tensors).digest() == layout.digest()
    assert len(trained.rounds) == SPEC.rounds
    assert [r.examples for r in trained.rounds] == [t.examples for t in twin]
    for r, t in zip(trained.rounds, twin, strict=True):
        assert r.loss == pytest.approx(t.loss, abs=1e-3)
        assert r.update_bytes > 0
    assert float(np.max(np.abs(got - twin[-1].global_values))) < 0.05
    x, y = examples.test_set("digits")
    scores = []
    for values in (got, twin[-1].global_values):
        model = examples.digits_mlp({}).model()
        load_into(model, layout, values.astype(np.float32))
        scores.append(examples.accuracy(model, x, y))
    assert scores[0] == pytest.approx(scores[1], abs=0.01)
    assert scores[0] > 0.8, scores


def test_no_node_decrypts_a_single_partys_update(harness: Harness, trained: m.FedAvgResult) -> None:
    """node-1's own update of the last round, as it answered it (its kept answer), sent
    back for decryption as if it were the sum, and with a contributor list of one."""
    last = SPEC.rounds
    examples = trained.rounds[-1].examples
    own = harness.ask("node-1", "fedavg-1", m.FedAvgUpdateRequest(last, 0, 1, examples))
    assert isinstance(own.result, m.FedAvgUpdateResponse)
    assert own.result.contributors == ("node-1",)
    everyone = ("node-0", "node-1", "node-2")
    ctx = harness.coordinator.ctx
    masked_own = tuple(masked(ctx, ct) for ct in own.result.ciphertexts)
    crafted = m.FedAvgDecryptRequest(last, 0, masked_own, everyone)
    for child, reason in (
        ("node-1", "is an individual update"),
        ("node-2", "was decrypted already for another ciphertext"),
    ):
        with pytest.raises(PeerError, match=f"PERMISSION_DENIED.*{reason}"):
            harness.ask(child, "fedavg-1", crafted)
    alone = m.FedAvgDecryptRequest(last, 0, masked_own, ("node-1",))
    for child in ("node-1", "node-2"):
        with pytest.raises(PeerError, match="PERMISSION_DENIED.*1 distinct nodes, not of all 3"):
            harness.ask(child, "fedavg-1", alone)
    # the root saw node-1's ciphertext come up: its own party refuses it too
    member = harness.coordinator.member
    refusal = member.fedavg.refusal("fedavg-1", crafted)
    assert refusal is not None and "individual update" in refusal
    # nor does any other release decrypt it, written as OpenFHE's ciphertext (a node with
    # allow_decryption = true)
    model_step = m.DecryptModelRequest("fedavg-1", compact.expand(ctx, own.result.ciphertexts[0]))
    with pytest.raises(PeerError, match="PERMISSION_DENIED.*individual update of FedAvg job"):
        harness.ask("node-1", "fedavg-1", model_step)
    assert '"decision":"refuse"' in (
        harness.workdir / "state" / "node-1" / "audit.jsonl"
    ).read_text().replace(" ", "")


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        ("raises", "node-2, app 'raises': fit\\(\\) failed: ValueError: the site's disk is full"),
        ("reshapes", "node-1, app 'reshapes': tensor '2.weight' has shape \\(12, 32\\)"),
    ],
)
def test_a_failing_app_fails_the_round_naming_the_node_and_the_tensor(
    harness: Harness, app: str, expected: str
) -> None:
    with pytest.raises(PeerError, match=expected):
        harness.run(f"bad-{app}", m.FedAvgJob(FedAvgSpec(app, rounds=1, seed=1)))


def test_the_cli_runs_fedavg_and_saves_the_model(harness: Harness, tmp_path: Path) -> None:
    certs = harness.workdir / "certs"
    root = harness.root.config.listen
    assert root is not None
    out = tmp_path / "model.npz"
    argv = [
        sys.executable, "-m", "phe_fl.cli", "query", "fedavg",
        "--root", root,
        "--cert", str(certs / "queriers" / "querier.pem"),
        "--key", str(certs / "queriers" / "querier.key"),
        "--ca", str(certs / "ca.pem"),
        "--app", "digits", "--rounds", "2", "--learning-rate", "0.1", "--seed", "7",
        "--job-id", "fedavg-cli", "--output", str(out),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "job fedavg-cli: 2 FedAvg rounds of app 'digits'" in done.stdout
    assert "round 2/2" in done.stderr and "encrypted sum and its decryption" in done.stderr
    saved = np.load(out)
    model = examples.digits_mlp({}).model()
    state = model.state_dict()
    assert sorted(saved.files) == sorted(state)
    for name, values in saved.items():
        assert values.shape == tuple(state[name].shape)
    bad = [*argv[:-2], "--output", str(tmp_path / "model.txt")]
    refused = subprocess.run(bad, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode != 0 and "save a FedAvg model as .npz or .pt" in refused.stderr
    dp = [*argv[:-4], "--rounds", "1", "--job-id", "fedavg-cli-dp", "--dp-noise-multiplier", "2"]
    refused = subprocess.run(dp, capture_output=True, text=True, env=env, timeout=60)
    assert refused.returncode != 0 and "dp_sample_rate: a differentially private" in refused.stderr
    done = subprocess.run(
        [*dp, "--dp-sample-rate", "0.5"], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    epsilon = FedAvgSpec("digits", rounds=1, dp_noise_multiplier=2.0, dp_sample_rate=0.5)
    assert f"differentially private: epsilon {epsilon.epsilon(1e-5):.3g}" in done.stdout


def test_the_root_keeps_the_model_when_its_policy_says_so(harness: Harness) -> None:
    member = harness.coordinator.member
    config = member.config
    member.config = dataclasses.replace(
        config, policy=dataclasses.replace(config.policy, release_fedavg_model=False)
    )
    try:
        spec = FedAvgSpec("digits", rounds=1, seed=5)
        result = harness.run("fedavg-kept", m.FedAvgJob(spec))
    finally:
        member.config = config
    assert isinstance(result, m.FedAvgResult)
    assert result.parameters == b"" and len(result.rounds) == 1
    kept = harness.coordinator.store.get_blob("fedavg-model-fedavg-kept")
    assert kept is not None and len(kept) == 4 * Layout(result.tensors).size


def test_a_dp_job_adds_the_noise_under_encryption_and_spends_the_budget(
    harness: Harness,
) -> None:
    """A differentially private round over the nodes is the DP-SGD step of the twin plus
    Gaussian noise whose shares, one per node, sum to sigma * C (not N times that, not one
    node's share): the decrypted model minus the twin's step without noise has that spread.
    The root's budget refuses a job without DP and one that needs more than is left."""
    member = harness.coordinator.member
    config = member.config
    budget = 40.0
    member.config = dataclasses.replace(
        config, policy=dataclasses.replace(config.policy, dp_epsilon=budget)
    )
    spec = FedAvgSpec(
        "digits", rounds=1, learning_rate=0.5, dp_noise_multiplier=1.0, dp_sample_rate=1.0
    )
    spent_before = harness.coordinator.privacy_spent()
    try:
        with pytest.raises(PolicyError, match="not differentially private"):
            harness.run("fedavg-no-dp", m.FedAvgJob(FedAvgSpec("digits", rounds=1)))
        result = harness.run("fedavg-dp", m.FedAvgJob(spec))
        greedy = dataclasses.replace(spec, rounds=50, dp_noise_multiplier=0.3)
        with pytest.raises(PolicyError, match="exceeds the .* left of the budget"):
            harness.run("fedavg-dp-greedy", m.FedAvgJob(greedy))
    finally:
        member.config = config
    assert isinstance(result, m.FedAvgResult)
    epsilon = spec.epsilon(config.policy.dp_delta)
    assert result.dp_epsilon == pytest.approx(epsilon) and result.dp_delta == 1e-5
    assert harness.coordinator.privacy_spent() == pytest.approx(spent_before + epsilon)
    for refused in ("fedavg-no-dp", "fedavg-dp-greedy"):  # refused before any training
        assert harness.coordinator.store.get_blob(f"fedavg-model-{refused}") is None
    quiet = dataclasses.replace(spec, dp_noise_multiplier=1e-12)
    sites = [
        Site(f"twin-{i}", {"digits": EXAMPLE}, {"shard": i, "shards": N, "threads": 1}, n_parties=N)
        for i in range(N)
    ]
    _, twin = plain_fedavg(sites, quiet, dp_seeds=[1, 2, 3])  # q = 1: every row, any seed
    got = np.frombuffer(result.parameters, dtype="<f4").astype(np.float64)
    noise = got - twin[0].global_values
    total = twin[0].examples
    assert result.rounds[0].examples == total and result.rounds[0].loss == 0.0
    expected = spec.learning_rate * spec.dp_noise_multiplier * spec.dp_clip / total
    assert float(np.std(noise)) == pytest.approx(expected, rel=0.1)
    assert abs(float(np.mean(noise))) < 4 * expected / np.sqrt(noise.size)
    audit = (harness.workdir / "state" / "node-0" / "audit.jsonl").read_text()
    assert audit.count('"step":"dp_budget"') >= 3


@pytest.mark.slow
def test_a_leaf_killed_mid_job_comes_back_and_the_job_finishes(tmp_path: Path) -> None:
    """node-2 is killed (SIGKILL) as round 1 ends and started again: the root waits for it,
    runs round 2 again (the others answer from what they kept) and the job ends as an
    uninterrupted one would."""
    from phe_fl.federation.local import LocalCluster
    from phe_fl.federation.querier import Querier

    killed = threading.Event()
    with LocalCluster(tmp_path, n_nodes=N, params=PARAMS, tables=_tables(), deadline_s=60) as c:

        def on_event(ev: m.ProgressEvent) -> None:
            if ev.stage is m.Stage.ROUND_DONE and ev.iteration == 1 and not killed.is_set():
                killed.set()
                c.processes[2].kill()
                c.processes[2].wait()
                threading.Timer(2.0, c.start_node, args=(2,)).start()

        q = Querier(c.root_address, c.querier_tls(), deadline_s=300, on_event=on_event)
        q.setup("keys")
        model = q.fedavg("fedavg-killed", SPEC)
        q.close()
    assert killed.is_set() and len(model.rounds) == SPEC.rounds
    layout, twin = _twin(SPEC)
    assert model.parameters is not None
    assert float(np.max(np.abs(model.parameters - twin[-1].global_values))) < 0.05
    assert [r.examples for r in model.rounds] == [t.examples for t in twin]
