"""The only place a node decides whether to contribute, and where every decision, yes or
no, leaves an audit line.

The decision follows from the typed step the node is asked to contribute to, never from
a label the caller sets: releasing pooled statistics to the root, decrypting a model to
the root, switching a result to querier X for job Y, accepting a job from querier X.
Steps whose result stays encrypted under the collective key (key-generation shares,
encrypted statistics and gradients, refresh shares) or that install public keys reveal
nothing and are always contributed; they are audited all the same.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from phe_fl.errors import PolicyError
from phe_fl.federation import messages as m
from phe_fl.federation.config import Policy
from phe_fl.federation.serde import JOB_NAMES, STEP_NAMES

__all__ = ["Decision", "decide", "decide_job", "AUDIT_LOGGER"]

AUDIT_LOGGER = "phe_fl.audit"
audit = logging.getLogger(AUDIT_LOGGER)


@dataclass(frozen=True)
class Decision:
    node_id: str
    job_id: str
    step: str
    requester: str
    allowed: bool
    reason: str
    querier: str = ""

    def line(self) -> str:
        querier = f" querier={self.querier}" if self.querier else ""
        verdict = "contribute" if self.allowed else "refuse"
        return (
            f"node={self.node_id} job={self.job_id} step={self.step} "
            f"requester={self.requester}{querier} decision={verdict} reason={self.reason!r}"
        )


def _rule(policy: Policy, step: m.TreeStep) -> tuple[bool, str, str]:
    """(allowed, reason, querier) for one tree step."""
    if isinstance(step, m.DecryptStatisticsRequest):
        ok = policy.release_statistics
        return ok, f"release_statistics = {str(ok).lower()}", ""
    if isinstance(step, m.DecryptModelRequest):
        ok = policy.allow_decryption
        return ok, f"allow_decryption = {str(ok).lower()} (model {step.model_id})", ""
    if isinstance(step, m.KeySwitchRequest):
        if step.querier not in policy.queriers:
            return False, f"querier {step.querier!r} is not in queriers", step.querier
        if step.purpose is m.Purpose.POOLED_STATISTICS and not policy.release_statistics:
            return False, "release_statistics = false", step.querier
        return True, f"querier in queriers; releases {step.purpose.value}", step.querier
    if isinstance(step, (m.InstallJointKeyRequest, m.InstallRelinKeyRequest)) or isinstance(
        step, m.InstallRotationKeysRequest
    ):
        return True, "public key material", ""
    if isinstance(step, m.PingRequest):
        return True, "liveness", ""
    return True, "the result stays encrypted under the collective key", ""


def decide(node_id: str, policy: Policy, job_id: str, step: m.TreeStep, requester: str) -> Decision:
    """Check ``step`` against ``policy``; audit the decision; raise PolicyError if no."""
    allowed, reason, querier = _rule(policy, step)
    decision = Decision(
        node_id, job_id, STEP_NAMES[type(step)], requester, allowed, reason, querier
    )
    _record(decision)
    if not allowed:
        raise PolicyError(f"node {node_id}'s policy refuses {decision.step}: {reason}")
    return decision


def decide_job(node_id: str, policy: Policy, job_id: str, job: m.Job, querier: str) -> Decision:
    """The root's decision to run a querier's job at all."""
    allowed = querier in policy.queriers
    reason = "querier in queriers" if allowed else f"querier {querier!r} is not in queriers"
    decision = Decision(
        node_id, job_id, f"job:{JOB_NAMES[type(job)]}", querier, allowed, reason, querier
    )
    _record(decision)
    if not allowed:
        raise PolicyError(f"the root does not accept jobs from querier {querier!r}")
    return decision


def _record(decision: Decision) -> None:
    audit.info("%s", decision.line())
