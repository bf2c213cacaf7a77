"""A node's policy decisions: which tree steps and querier jobs it contributes to, and one
audit line per decision, allowed or refused."""

from __future__ import annotations

import itertools
import logging
import re

import pytest

from phe_fl.errors import PolicyError
from phe_fl.federation import messages as m
from phe_fl.federation import serde
from phe_fl.federation.config import Policy
from phe_fl.federation.policy import AUDIT_LOGGER, Decision, decide, decide_job
from phe_fl.ml import TrainingJob

NODE, JOB_ID, REQUESTER, QUERIER = "node-2", "job-42", "node-0", "querier"

# one instance of every tree step the protocol has
STEPS: dict[str, m.TreeStep] = {
    "public_key": m.PublicKeyShareRequest(b"crp"),
    "install_joint_key": m.InstallJointKeyRequest(b"pk"),
    "relin_round_one": m.RelinRoundOneRequest(b"crp"),
    "relin_round_two": m.RelinRoundTwoRequest(b"agg"),
    "install_relin_key": m.InstallRelinKeyRequest(b"rk"),
    "rotation_keys": m.RotationKeysShareRequest(b"crp", (1, 2, 4)),
    "install_rotation_keys": m.InstallRotationKeysRequest(b"rot"),
    "statistics": m.StatisticsRequest(),
    "decrypt_statistics": m.DecryptStatisticsRequest(b"ct"),
    "decrypt_model": m.DecryptModelRequest("model-9", b"ct"),
    "key_switch": m.KeySwitchRequest(m.Purpose.PREDICTION, QUERIER, b"qk", b"ct"),
    "refresh": m.RefreshShareRequest(b"ct", b"crp"),
    "prepare_training": m.PrepareTrainingRequest(TrainingJob(4), None),
    "gradient": m.GradientRequest(1, 64, b"w"),
    "ping": m.PingRequest(),
}
SWITCHES = {
    f"key_switch:{purpose.name}:{querier}": m.KeySwitchRequest(purpose, querier, b"qk", b"ct")
    for purpose in m.Purpose
    for querier in (QUERIER, "mallory")
}
POLICIES = [
    Policy(queriers, allow_decryption, release_statistics)
    for queriers, allow_decryption, release_statistics in itertools.product(
        [(), (QUERIER,), ("other", QUERIER), ("other",)], [False, True], [False, True]
    )
]
JOBS: dict[str, m.Job] = {
    "setup": m.SetupJob((1, -1)),
    "stats": m.StatsJob(b"qk"),
    "train": m.TrainJob(TrainingJob(4)),
    "model_weights": m.ModelWeightsJob("model-9"),
    "model_info": m.ModelInfoJob("model-9"),
    "predict": m.PredictJob("model-9", b"qk", (b"q1",)),
    "joint_key": m.JointKeyJob(),
    "status": m.StatusJob(),
}


def expected(policy: Policy, step: m.TreeStep) -> tuple[bool, str]:
    """(allowed, a word the reason must contain): the rules, as the module docstring says."""
    if isinstance(step, m.DecryptStatisticsRequest):
        return policy.release_statistics, "release_statistics"
    if isinstance(step, m.DecryptModelRequest):
        return policy.allow_decryption, "allow_decryption"
    if isinstance(step, m.KeySwitchRequest):
        if step.querier not in policy.queriers:
            return False, "queriers"
        if step.purpose is m.Purpose.POOLED_STATISTICS and not policy.release_statistics:
            return False, "release_statistics"
        return True, "queriers"
    return True, ""


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


def test_every_step_has_a_case() -> None:
    assert set(STEPS) == set(serde._STEPS)
    assert all(serde.STEP_NAMES[type(step)] == name for name, step in STEPS.items())
    assert set(JOBS) == set(serde._JOBS)


@pytest.mark.parametrize("step", [*STEPS.values(), *SWITCHES.values()], ids=[*STEPS, *SWITCHES])
def test_decide_follows_the_policy_and_audits_once(
    step: m.TreeStep, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    name = serde.STEP_NAMES[type(step)]
    for policy in POLICIES:
        caplog.clear()
        allowed, because = expected(policy, step)
        if allowed:
            decision = decide(NODE, policy, JOB_ID, step, REQUESTER)
            assert isinstance(decision, Decision) and decision.allowed
            assert (decision.node_id, decision.job_id, decision.step) == (NODE, JOB_ID, name)
            assert decision.requester == REQUESTER
        else:
            with pytest.raises(PolicyError, match=rf"node {NODE}'s policy refuses {name}: "):
                decide(NODE, policy, JOB_ID, step, REQUESTER)
        records = audit_lines(caplog)
        assert len(records) == 1, (policy, [r.getMessage() for r in records])
        line = check_line(records[0], name, REQUESTER, allowed)
        assert because in line.split("reason=", 1)[1], (policy, line)
        if isinstance(step, m.KeySwitchRequest):
            assert f" querier={step.querier} " in line


def test_decrypt_statistics_follows_release_statistics() -> None:
    step = STEPS["decrypt_statistics"]
    assert decide(NODE, Policy(release_statistics=True), JOB_ID, step, REQUESTER).allowed
    with pytest.raises(PolicyError, match=r"release_statistics = false"):
        decide(NODE, Policy(("q",), True, release_statistics=False), JOB_ID, step, REQUESTER)


def test_decrypt_model_follows_allow_decryption() -> None:
    step = STEPS["decrypt_model"]
    decision = decide(NODE, Policy(allow_decryption=True), JOB_ID, step, REQUESTER)
    assert decision.allowed and "model-9" in decision.reason
    with pytest.raises(PolicyError, match=r"allow_decryption = false \(model model-9\)"):
        decide(NODE, Policy(("q",), False, True), JOB_ID, step, REQUESTER)


def test_key_switch_needs_the_querier_and_for_statistics_their_release() -> None:
    pooled = SWITCHES[f"key_switch:POOLED_STATISTICS:{QUERIER}"]
    predict = SWITCHES[f"key_switch:PREDICTION:{QUERIER}"]
    listed = Policy((QUERIER,), allow_decryption=False, release_statistics=False)
    assert decide(NODE, listed, JOB_ID, predict, REQUESTER).allowed
    with pytest.raises(PolicyError, match=r"release_statistics = false"):
        decide(NODE, listed, JOB_ID, pooled, REQUESTER)
    assert decide(NODE, Policy((QUERIER,)), JOB_ID, pooled, REQUESTER).querier == QUERIER
    with pytest.raises(PolicyError, match=r"querier 'mallory' is not in queriers"):
        decide(
            NODE,
            Policy((QUERIER,), True, True),
            JOB_ID,
            SWITCHES["key_switch:PREDICTION:mallory"],
            REQUESTER,
        )
    with pytest.raises(PolicyError, match=rf"querier '{QUERIER}' is not in queriers"):
        decide(NODE, Policy(allow_decryption=True), JOB_ID, predict, REQUESTER)


@pytest.mark.parametrize("name", list(JOBS))
def test_decide_job_accepts_only_listed_queriers_and_audits_once(
    name: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT_LOGGER)
    job = JOBS[name]
    for policy in POLICIES:
        for querier in (QUERIER, "mallory"):
            allowed = querier in policy.queriers
            if allowed:
                decision = decide_job(NODE, policy, JOB_ID, job, querier)
                assert decision.allowed and decision.step == f"job:{name}"
                assert decision.querier == querier == decision.requester
            else:
                with pytest.raises(
                    PolicyError, match=rf"does not accept jobs from querier '{querier}'"
                ):
                    decide_job(NODE, policy, JOB_ID, job, querier)
            records = audit_lines(caplog)
            assert len(records) == 1
            line = check_line(records[0], f"job:{name}", querier, allowed)
            assert f" querier={querier} " in line and "queriers" in line
            caplog.clear()
