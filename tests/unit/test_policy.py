"""A node's policy decisions: which tree steps and querier jobs it contributes to, and for
every decision, allowed or refused, one line to the ``phe_fl.audit`` logger and one entry in
the node's hash-chained audit log (a liveness ping and a status job are decided unaudited)."""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from phe_fl.errors import PolicyError
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.federation import audit as audit_mod
from phe_fl.federation import messages as m
from phe_fl.federation import serde
from phe_fl.federation.audit import AuditLog
from phe_fl.federation.config import Policy
from phe_fl.federation.policy import AUDIT_LOGGER, Decision, decide, decide_job
from phe_fl.ml import MLPJob, TrainingJob

NODE, JOB_ID, REQUESTER, QUERIER = "node-2", "job-42", "node-0", "querier"
PARAMS, KIND = "n14-depth5-128", "train"
RESERVED = {"seq", "time", "prev", "hash"}  # what the audit log adds to an entry itself

# one instance of every tree step the protocol has; every payload a digest covers differs
STEPS: dict[str, m.TreeStep] = {
    "public_key": m.PublicKeyShareRequest(b"crp"),
    "install_joint_key": m.InstallJointKeyRequest(b"pk"),
    "relin_round_one": m.RelinRoundOneRequest(b"crp"),
    "relin_round_two": m.RelinRoundTwoRequest(b"agg"),
    "install_relin_key": m.InstallRelinKeyRequest(b"rk"),
    "rotation_keys": m.RotationKeysShareRequest(b"crp", (1, 2, 4)),
    "install_rotation_keys": m.InstallRotationKeysRequest(b"rot"),
    "statistics": m.StatisticsRequest(30),
    "decrypt_statistics": m.DecryptStatisticsRequest(b"stats-ct"),
    "decrypt_model": m.DecryptModelRequest("model-9", b"model-ct"),
    "key_switch": m.KeySwitchRequest(m.Purpose.PREDICTION, QUERIER, b"qk", (b"switch-ct",)),
    "refresh": m.RefreshShareRequest((b"refresh-ct", b"refresh-ct-2"), (b"crp", b"crp-2")),
    "prepare_training": m.PrepareTrainingRequest(TrainingJob(4), None),
    "gradient": m.GradientRequest(1, 64, b"weights"),
    "margin_moment": m.MarginMomentRequest(2, 64, b"margin-weights", 0.0, 8),
    "prepare_network": m.PrepareNetworkRequest(MLPJob(4, 3, hidden=(5,)), None),
    "network_map": m.NetworkMapRequest(1, 64, (b"w1", b"w2")),
    "fedavg_prepare": m.FedAvgPrepareRequest(FedAvgSpec("digits")),
    "fedavg_global": m.FedAvgGlobalRequest(1, 0, b"\0\0\0\0"),
    "fedavg_train": m.FedAvgTrainRequest(1, b"digest"),
    "fedavg_update": m.FedAvgUpdateRequest(1, 0, 2, 640),
    "fedavg_decrypt": m.FedAvgDecryptRequest(1, 0, (b"sum-1", b"sum-2"), ("a", "b", "c")),
    "ping": m.PingRequest(),
}
SWITCHES = {
    f"key_switch:{purpose.name}:{querier}": m.KeySwitchRequest(purpose, querier, b"qk", (b"ct",))
    for purpose in m.Purpose
    for querier in (QUERIER, "mallory")
}
# what each step kind is for, as the audit log says it (a key switch names its querier)
PURPOSES = {
    "public_key": "key generation: public-key share",
    "install_joint_key": "install the collective public key",
    "relin_round_one": "key generation: relinearization share, round 1",
    "relin_round_two": "key generation: relinearization share, round 2",
    "install_relin_key": "install the relinearization key",
    "rotation_keys": "key generation: rotation-key share",
    "install_rotation_keys": "install rotation keys",
    "statistics": "encrypted local statistics",
    "decrypt_statistics": "statistics release (threshold decryption to the root)",
    "decrypt_model": "model decryption (threshold decryption to the root)",
    "refresh": "collective refresh of encrypted values",
    "prepare_training": "training participation",
    "gradient": "training: encrypted gradient",
    "margin_moment": "training: encrypted margin check (released only by decrypt_model)",
    "prepare_network": "network training participation",
    "network_map": "network training: a stage of MAP (encrypted gradients or intermediates)",
    "fedavg_prepare": "FedAvg participation (load the job's app)",
    "fedavg_global": "FedAvg: receive the round's global parameters",
    "fedavg_train": "FedAvg: local training with the site's app",
    "fedavg_update": "FedAvg: encrypted weighted update",
    "fedavg_decrypt": "FedAvg: decrypt the sum of every party's update (to the root)",
    "ping": "liveness",
}
# the steps whose entry carries a digest, and of which field
DIGESTED = {
    "decrypt_statistics": "ciphertext",
    "decrypt_model": "ciphertext",
    "key_switch": "ciphertexts",
    "refresh": "ciphertexts",
    "gradient": "weights",
    "margin_moment": "weights",
    "network_map": "weights",
    "fedavg_decrypt": "masked",
}
POLICIES = [
    Policy(queriers, allow_decryption, release_statistics, release_aggregates=aggregates)
    for queriers, allow_decryption, release_statistics, aggregates in itertools.product(
        [(), (QUERIER,), ("other", QUERIER), ("other",)],
        [False, True],
        [False, True],
        [True, False],
    )
]
JOBS: dict[str, m.Job] = {
    "setup": m.SetupJob((1, -1)),
    "stats": m.StatsJob(b"qk", 30),
    "train": m.TrainJob(TrainingJob(4)),
    "model_weights": m.ModelWeightsJob("model-9"),
    "model_info": m.ModelInfoJob("model-9"),
    "predict": m.PredictJob("model-9", b"qk", (b"q1",)),
    "joint_key": m.JointKeyJob(),
    "status": m.StatusJob(),
    "watch": m.WatchJob("job-7"),
    "list_jobs": m.ListJobsJob(),
    "cancel": m.CancelJob("job-7"),
    "list_models": m.ListModelsJob(),
    "fedavg": m.FedAvgJob(FedAvgSpec("digits")),
    "train_network": m.TrainNetworkJob(MLPJob(4, 3, hidden=(5,))),
}


def request(step: m.TreeStep, kind: str = KIND) -> m.TreeRequest:
    return m.TreeRequest(JOB_ID, PARAMS, 3, step, 5.0, kind)


def expected(policy: Policy, step: m.TreeStep) -> tuple[bool, str]:
    """(allowed, a word the reason must contain): the rules, as the module docstring says."""
    if isinstance(step, m.DecryptStatisticsRequest):
        return policy.release_statistics, "release_statistics"
    if isinstance(step, m.DecryptModelRequest):
        return policy.allow_decryption, "allow_decryption"
    if isinstance(step, m.FedAvgDecryptRequest):
        return policy.release_aggregates, "release_aggregates"
    if isinstance(step, m.KeySwitchRequest):
        if step.querier not in policy.queriers:
            return False, "queriers"
        if step.purpose is m.Purpose.POOLED_STATISTICS and not policy.release_statistics:
            return False, "release_statistics"
        return True, "queriers"
    return True, ""


def purpose_of(step: m.TreeStep) -> str:
    if isinstance(step, m.KeySwitchRequest):
        return f"key switch to querier {step.querier} ({step.purpose.value})"
    return PURPOSES[serde.STEP_NAMES[type(step)]]


def digest_of(step: m.TreeStep) -> str | None:
    field = DIGESTED.get(serde.STEP_NAMES[type(step)])
    if field is None:
        return None
    data = getattr(step, field)
    if isinstance(data, tuple):  # several ciphertexts: the digest of their digests
        data = b"".join(hashlib.sha256(c).digest() for c in data)
    return hashlib.sha256(data).hexdigest()[:32]


@pytest.fixture
def audit(tmp_path: Path) -> Iterator[AuditLog]:
    log = AuditLog(tmp_path / "audit.jsonl")
    yield log
    log.close()


def entries(log: AuditLog) -> list[dict[str, Any]]:
    """The audit file as written, one JSON object a line."""
    return [json.loads(line) for line in log.path.read_text(encoding="utf-8").splitlines()]


def audit_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == AUDIT_LOGGER]


def check_line(record: logging.LogRecord, step: str, requester: str, allowed: bool) -> str:
    line = record.getMessage()
    assert record.levelno == logging.INFO
    verdict = "contribute" if allowed else "refuse"
    pattern = (
        rf"^node={re.escape(NODE)} job={re.escape(JOB_ID)} step={re.escape(step)} "
        rf"requester={re.escape(requester)}( querier=\S+)? decision={verdict} reason=(['\"]).+\2$"
    )
    assert re.match(pattern, line), line
    return line


def check_entry(
    entry: dict[str, Any], step: m.TreeStep, allowed: bool, *, kind: str = KIND, rows: Any = None
) -> None:
    """One tree-step decision as the audit file holds it: every field, and no other."""
    want: dict[str, Any] = {
        "node": NODE,
        "job": JOB_ID,
        "job_kind": kind,
        "step": serde.STEP_NAMES[type(step)],
        "requester": REQUESTER,
        "purpose": purpose_of(step),
        "decision": "contribute" if allowed else "refuse",
    }
    if isinstance(step, m.KeySwitchRequest):
        want["querier"] = step.querier
    digest = digest_of(step)
    if digest is not None:
        want["digest"] = digest
    if rows is not None:
        want["rows"] = rows
    assert {k: v for k, v in entry.items() if k not in RESERVED | {"reason"}} == want
    assert set(entry) >= RESERVED and isinstance(entry["reason"], str) and entry["reason"]


def test_every_step_and_job_has_a_case() -> None:
    assert set(STEPS) == set(serde._STEPS)
    assert all(serde.STEP_NAMES[type(step)] == name for name, step in STEPS.items())
    assert set(PURPOSES) == set(serde._STEPS) - {"key_switch"}
    assert set(JOBS) == set(serde._JOBS)
    assert all(serde.JOB_NAMES[type(job)] == name for name, job in JOBS.items())


@pytest.mark.parametrize("step", [*STEPS.values(), *SWITCHES.values()], ids=[*STEPS, *SWITCHES])
def test_decide_follows_the_policy_and_audits_once(
    step: m.TreeStep, audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    name = serde.STEP_NAMES[type(step)]
    audited = not isinstance(step, m.PingRequest)  # liveness is decided, not audited
    verdicts: Counter[str] = Counter()
    for policy in POLICIES:
        caplog.clear()
        before = len(entries(audit))
        allowed, because = expected(policy, step)
        if allowed:
            decision = decide(NODE, policy, request(step), REQUESTER, audit=audit)
            assert isinstance(decision, Decision) and decision.allowed
            assert (decision.node_id, decision.job_id, decision.step) == (NODE, JOB_ID, name)
            assert decision.requester == REQUESTER and decision.job_kind == KIND
            assert decision.purpose == purpose_of(step)
            assert decision.digest == (digest_of(step) or "") and decision.rows is None
            reason = decision.reason
        else:
            with pytest.raises(PolicyError, match=rf"node {NODE}'s policy refuses {name}: ") as e:
                decide(NODE, policy, request(step), REQUESTER, audit=audit)
            reason = str(e.value).split(f"refuses {name}: ", 1)[1]
        records = audit_lines(caplog)
        written = entries(audit)[before:]
        if not audited:
            assert allowed and records == [] and written == [], (policy, records, written)
            continue
        assert len(records) == 1, (policy, [r.getMessage() for r in records])
        line = check_line(records[0], name, REQUESTER, allowed)
        assert because in line.split("reason=", 1)[1], (policy, line)
        if isinstance(step, m.KeySwitchRequest):
            assert f" querier={step.querier} " in line
        assert len(written) == 1, (policy, written)
        (entry,) = written
        check_entry(entry, step, allowed)
        assert entry["reason"] == reason and because in reason
        verdicts[entry["decision"]] += 1
    summary = audit_mod.verify(audit.path)  # the chain the decisions made is intact
    assert summary.lines == sum(verdicts.values()) == (len(POLICIES) if audited else 0)
    assert summary.decisions == dict(verdicts)
    assert summary.steps == ({name: len(POLICIES)} if audited else {})


@pytest.mark.parametrize("name", [n for n in STEPS if n != "key_switch"])
def test_each_step_kind_is_audited_with_its_purpose(name: str, audit: AuditLog) -> None:
    step = STEPS[name]
    decision = decide(NODE, Policy((QUERIER,), True, True), request(step), REQUESTER, audit=audit)
    assert decision.purpose == PURPOSES[name]
    written = entries(audit)
    assert [e["purpose"] for e in written] == ([] if name == "ping" else [PURPOSES[name]])


@pytest.mark.parametrize("purpose", list(m.Purpose))
def test_a_key_switch_names_its_querier_and_what_it_releases(
    purpose: m.Purpose, audit: AuditLog
) -> None:
    step = m.KeySwitchRequest(purpose, "alice", b"qk", (b"ct",))
    decide(NODE, Policy(("alice",), False, True), request(step), REQUESTER, audit=audit)
    (entry,) = entries(audit)
    assert entry["purpose"] == f"key switch to querier alice ({purpose.value})"
    assert entry["querier"] == "alice"


def test_the_digest_is_a_sha256_prefix_of_the_steps_bytes(audit: AuditLog) -> None:
    policy = Policy((QUERIER,), True, True)
    payload = bytes(range(256)) * 40
    steps = [
        m.DecryptStatisticsRequest(payload),
        m.DecryptModelRequest("model-9", payload),
        m.GradientRequest(3, 64, payload),
    ]
    want = hashlib.sha256(payload).hexdigest()[:32]
    for step in steps:
        assert decide(NODE, policy, request(step), REQUESTER, audit=audit).digest == want
    assert [e["digest"] for e in entries(audit)] == [want] * len(steps)
    other = decide(NODE, policy, request(m.GradientRequest(3, 64, payload + b"!")), REQUESTER)
    assert len(other.digest) == 32 and other.digest != want  # another ciphertext, another digest
    assert re.fullmatch(r"[0-9a-f]{32}", other.digest)
    for name in set(STEPS) - set(DIGESTED) - {"ping"}:  # nothing to digest: no digest
        assert decide(NODE, policy, request(STEPS[name]), REQUESTER, audit=audit).digest == ""
    assert all("digest" not in e for e in entries(audit)[len(steps) :])


def test_prepare_training_records_the_rows_it_trains_on(audit: AuditLog) -> None:
    step = STEPS["prepare_training"]
    policy = Policy()
    for rows in (120, 0, None):
        decision = decide(NODE, policy, request(step), REQUESTER, audit=audit, rows=rows)
        assert decision.rows == rows
    first, zero, none = entries(audit)
    check_entry(first, step, True, rows=120)
    check_entry(zero, step, True, rows=0)  # an empty shard is on record as 0 rows
    check_entry(none, step, True)
    assert "rows" not in none


@pytest.mark.parametrize("kind", ["", "setup", "stats", "train", "predict"])
def test_the_job_kind_comes_from_the_request(kind: str, audit: AuditLog) -> None:
    step = STEPS["statistics"]
    assert decide(NODE, Policy(), request(step, kind), REQUESTER, audit=audit).job_kind == kind
    (entry,) = entries(audit)
    check_entry(entry, step, True, kind=kind)


def test_decrypt_statistics_follows_release_statistics() -> None:
    req = request(STEPS["decrypt_statistics"])
    assert decide(NODE, Policy(release_statistics=True), req, REQUESTER).allowed
    with pytest.raises(PolicyError, match=r"release_statistics = false"):
        decide(NODE, Policy(("q",), True, release_statistics=False), req, REQUESTER)


def test_decrypt_model_follows_allow_decryption() -> None:
    req = request(STEPS["decrypt_model"])
    decision = decide(NODE, Policy(allow_decryption=True), req, REQUESTER)
    assert decision.allowed and "model-9" in decision.reason
    with pytest.raises(PolicyError, match=r"allow_decryption = false \(model model-9\)"):
        decide(NODE, Policy(("q",), False, True), req, REQUESTER)


def test_key_switch_needs_the_querier_and_for_statistics_their_release() -> None:
    pooled = request(SWITCHES[f"key_switch:POOLED_STATISTICS:{QUERIER}"])
    predict = request(SWITCHES[f"key_switch:PREDICTION:{QUERIER}"])
    listed = Policy((QUERIER,), allow_decryption=False, release_statistics=False)
    assert decide(NODE, listed, predict, REQUESTER).allowed
    with pytest.raises(PolicyError, match=r"release_statistics = false"):
        decide(NODE, listed, pooled, REQUESTER)
    assert decide(NODE, Policy((QUERIER,)), pooled, REQUESTER).querier == QUERIER
    with pytest.raises(PolicyError, match=r"querier 'mallory' is not in queriers"):
        decide(
            NODE,
            Policy((QUERIER,), True, True),
            request(SWITCHES["key_switch:PREDICTION:mallory"]),
            REQUESTER,
        )
    with pytest.raises(PolicyError, match=rf"querier '{QUERIER}' is not in queriers"):
        decide(NODE, Policy(allow_decryption=True), predict, REQUESTER)


def test_a_decision_that_cannot_be_recorded_is_not_taken(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The audit file comes first: with it closed, nothing is decided and nothing logged."""
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    log = AuditLog(tmp_path / "audit.jsonl")
    log.close()
    open_policy = Policy((QUERIER,), True, True)
    for step in (STEPS["decrypt_statistics"], STEPS["gradient"]):
        with pytest.raises(ValueError, match=r"audit log is closed"):
            decide(NODE, open_policy, request(step), REQUESTER, audit=log)
    with pytest.raises(ValueError, match=r"audit log is closed"):  # not even a refusal
        decide(NODE, Policy(), request(STEPS["decrypt_model"]), REQUESTER, audit=log)
    with pytest.raises(ValueError, match=r"audit log is closed"):
        decide_job(NODE, open_policy, JOB_ID, JOBS["train"], QUERIER, audit=log)
    assert audit_lines(caplog) == []
    assert (tmp_path / "audit.jsonl").read_bytes() == b""
    # a ping and a status job do not touch the audit file: they still answer
    assert decide(NODE, Policy(), request(STEPS["ping"]), REQUESTER, audit=log).allowed
    assert decide_job(NODE, open_policy, JOB_ID, JOBS["status"], QUERIER, audit=log).allowed


@pytest.mark.parametrize("name", list(JOBS))
def test_decide_job_accepts_only_listed_queriers_and_audits_once(
    name: str, audit: AuditLog, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    job = JOBS[name]
    audited = name != "status"  # a status job is liveness, like a ping
    written = 0
    for policy in POLICIES:
        for querier in (QUERIER, "mallory"):
            allowed = querier in policy.queriers
            if allowed:
                decision = decide_job(NODE, policy, JOB_ID, job, querier, audit=audit)
                assert decision.allowed and decision.step == f"job:{name}"
                assert decision.querier == querier == decision.requester
                assert decision.job_kind == name and decision.purpose == "run a job"
            else:
                with pytest.raises(
                    PolicyError, match=rf"does not accept jobs from querier '{querier}'"
                ):
                    decide_job(NODE, policy, JOB_ID, job, querier, audit=audit)
            records = audit_lines(caplog)
            assert len(records) == 1  # the logger hears of every decision, status included
            line = check_line(records[0], f"job:{name}", querier, allowed)
            assert f" querier={querier} " in line and "queriers" in line
            caplog.clear()
            now = entries(audit)
            if not audited:
                assert now == []
                continue
            written += 1
            assert len(now) == written
            entry = {k: v for k, v in now[-1].items() if k not in RESERVED}
            assert entry == {
                "node": NODE,
                "job": JOB_ID,
                "job_kind": name,
                "step": f"job:{name}",
                "requester": querier,
                "querier": querier,
                "purpose": "run a job",
                "decision": "contribute" if allowed else "refuse",
                "reason": "querier in queriers"
                if allowed
                else f"querier {querier!r} is not in queriers",
            }
    summary = audit_mod.verify(audit.path)
    assert summary.lines == written == (2 * len(POLICIES) if audited else 0)
    if audited:
        refused = sum(QUERIER not in p.queriers for p in POLICIES) + len(POLICIES)
        assert summary.decisions == {"contribute": written - refused, "refuse": refused}
        assert summary.queriers == {QUERIER: len(POLICIES), "mallory": len(POLICIES)}


def test_a_nodes_decisions_chain_in_one_verifiable_file(audit: AuditLog) -> None:
    policy = Policy((QUERIER,), allow_decryption=False, release_statistics=True)
    decide_job(NODE, policy, JOB_ID, JOBS["train"], QUERIER, audit=audit)
    decide(NODE, policy, request(STEPS["prepare_training"]), REQUESTER, audit=audit, rows=50)
    decide(NODE, policy, request(STEPS["gradient"]), REQUESTER, audit=audit)
    decide(NODE, policy, request(STEPS["ping"]), REQUESTER, audit=audit)
    with pytest.raises(PolicyError):
        decide(NODE, policy, request(STEPS["decrypt_model"]), REQUESTER, audit=audit)
    written = entries(audit)
    assert [e["seq"] for e in written] == [1, 2, 3, 4]
    assert written[0]["prev"] == audit_mod.GENESIS
    assert all(b["prev"] == a["hash"] for a, b in itertools.pairwise(written))
    assert [e["step"] for e in written] == [
        "job:train",
        "prepare_training",
        "gradient",
        "decrypt_model",
    ]
    summary = audit_mod.verify(audit.path)
    assert summary.lines == 4
    assert summary.decisions == {"contribute": 3, "refuse": 1}
    assert summary.queriers == {QUERIER: 1}  # only the job names a querier


def test_the_privacy_budget_is_decided_and_audited(tmp_path: Path) -> None:
    """No budget: nothing to decide. With one: a DP job within what is left runs, one past
    it or without DP (infinite epsilon) is refused; each decision is one audit line."""
    from phe_fl.federation.policy import decide_privacy_budget

    log = AuditLog(tmp_path / "audit.jsonl")
    assert decide_privacy_budget("n0", Policy(("q",)), "j0", "q", float("inf"), 0.0) is None
    budget = Policy(("q",), dp_epsilon=4.0)
    ok = decide_privacy_budget("n0", budget, "j1", "q", 1.5, 2.0, audit=log)
    assert ok is not None and ok.allowed and "spends epsilon 1.5 of 2 left" in ok.reason
    with pytest.raises(PolicyError, match="epsilon 2.5 exceeds the 2 left of the budget 4"):
        decide_privacy_budget("n0", budget, "j2", "q", 2.5, 2.0, audit=log)
    with pytest.raises(PolicyError, match="not differentially private"):
        decide_privacy_budget("n0", budget, "j3", "q", float("inf"), 0.0, audit=log)
    log.close()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(x["job"], x["decision"]) for x in lines] == [
        ("j1", "contribute"),
        ("j2", "refuse"),
        ("j3", "refuse"),
    ]


@pytest.mark.parametrize("name", ["fedavg_decrypt", "decrypt_model", "key_switch"])
def test_a_fact_the_node_established_refuses_whatever_the_policy(
    name: str, audit: AuditLog
) -> None:
    """The member's aggregate guard (an individual FedAvg update, a sum short of a party)
    overrides a policy that would allow the step, and is audited as the reason."""
    step = STEPS[name]
    generous = Policy((QUERIER,), True, True, release_aggregates=True)
    why = "chunk 0 of round 1 is an individual update"
    with pytest.raises(PolicyError, match=f"refuses {name}: {why}"):
        decide(NODE, generous, request(step), REQUESTER, audit=audit, refusal=why)
    (entry,) = entries(audit)
    assert entry["decision"] == "refuse" and entry["reason"] == why
