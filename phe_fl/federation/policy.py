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

import hashlib
import logging
from dataclasses import dataclass
from typing import Any

from phe_fl.errors import PolicyError
from phe_fl.federation import messages as m
from phe_fl.federation.audit import AuditLog
from phe_fl.federation.config import Policy
from phe_fl.federation.observability import METRICS
from phe_fl.federation.serde import JOB_NAMES, STEP_NAMES

__all__ = [
    "Decision",
    "decide",
    "decide_job",
    "decide_querier",
    "decide_privacy_budget",
    "AUDIT_LOGGER",
]

AUDIT_LOGGER = "phe_fl.audit"
log = logging.getLogger(AUDIT_LOGGER)


@dataclass(frozen=True)
class Decision:
    """One decision, as it goes into the node's audit log (one JSON line) and its log."""

    node_id: str
    job_id: str
    step: str
    requester: str
    allowed: bool
    reason: str
    querier: str = ""
    job_kind: str = ""
    purpose: str = ""
    digest: str = ""
    rows: int | None = None

    @property
    def verdict(self) -> str:
        return "contribute" if self.allowed else "refuse"

    def line(self) -> str:
        querier = f" querier={self.querier}" if self.querier else ""
        return (
            f"node={self.node_id} job={self.job_id} step={self.step} "
            f"requester={self.requester}{querier} decision={self.verdict} reason={self.reason!r}"
        )

    def entry(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "node": self.node_id,
            "job": self.job_id,
            "job_kind": self.job_kind,
            "step": self.step,
            "requester": self.requester,
            "purpose": self.purpose,
            "decision": self.verdict,
            "reason": self.reason,
        }
        if self.querier:
            out["querier"] = self.querier
        if self.digest:
            out["digest"] = self.digest
        if self.rows is not None:
            out["rows"] = self.rows
        return out


_PURPOSES: dict[type[Any], str] = {
    m.PublicKeyShareRequest: "key generation: public-key share",
    m.RelinRoundOneRequest: "key generation: relinearization share, round 1",
    m.RelinRoundTwoRequest: "key generation: relinearization share, round 2",
    m.RotationKeysShareRequest: "key generation: rotation-key share",
    m.InstallJointKeyRequest: "install the collective public key",
    m.InstallRelinKeyRequest: "install the relinearization key",
    m.InstallRotationKeysRequest: "install rotation keys",
    m.StatisticsRequest: "encrypted local statistics",
    m.DecryptStatisticsRequest: "statistics release (threshold decryption to the root)",
    m.DecryptModelRequest: "model decryption (threshold decryption to the root)",
    m.RefreshShareRequest: "collective refresh of encrypted values",
    m.PrepareTrainingRequest: "training participation",
    m.GradientRequest: "training: encrypted gradient",
    m.MarginMomentRequest: "training: encrypted margin check (released only by decrypt_model)",
    m.PrepareNetworkRequest: "network training participation",
    m.NetworkMapRequest: "network training: a stage of MAP (encrypted gradients or intermediates)",
    m.FedAvgPrepareRequest: "FedAvg participation (load the job's app)",
    m.FedAvgGlobalRequest: "FedAvg: receive the round's global parameters",
    m.FedAvgTrainRequest: "FedAvg: local training with the site's app",
    m.FedAvgUpdateRequest: "FedAvg: encrypted weighted update",
    m.FedAvgDecryptRequest: "FedAvg: decrypt the sum of every party's update (to the root)",
    m.PingRequest: "liveness",
}


def _purpose(step: m.TreeStep) -> str:
    if isinstance(step, m.KeySwitchRequest):
        return f"key switch to querier {step.querier} ({step.purpose.value})"
    return _PURPOSES[type(step)]


_DIGESTED_FIELDS = ("ciphertext", "weights", "masked", "ciphertexts")
"""The fields that hold what a step asks about (one ciphertext, or several)."""


def _digest(step: m.TreeStep) -> str:
    """sha256 (hex, 32 characters) of the ciphertext(s) a step asks about, if it has any;
    of several, the digest of their digests."""
    data = next((getattr(step, f) for f in _DIGESTED_FIELDS if getattr(step, f, None)), None)
    if isinstance(data, tuple):
        data = b"".join(hashlib.sha256(c).digest() for c in data)
    return hashlib.sha256(data).hexdigest()[:32] if isinstance(data, bytes) else ""


def _rule(policy: Policy, step: m.TreeStep, refusal: str | None) -> tuple[bool, str, str]:
    """(allowed, reason, querier) for one tree step; ``refusal``: what the node knows
    that forbids it whatever the policy (see Member._refusal)."""
    if refusal is not None:
        return False, refusal, getattr(step, "querier", "")
    if isinstance(step, m.FedAvgDecryptRequest):
        ok = policy.release_aggregates
        return ok, f"release_aggregates = {str(ok).lower()} (round {step.round})", ""
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


def decide(
    node_id: str,
    policy: Policy,
    request: m.TreeRequest,
    requester: str,
    *,
    audit: AuditLog | None = None,
    rows: int | None = None,
    refusal: str | None = None,
) -> Decision:
    """Check ``request`` against ``policy`` (and ``refusal``, a fact the node established
    that forbids it); audit the decision (the node's audit file and the ``phe_fl.audit``
    logger); raise PolicyError if no. A liveness ping decides nothing and is not audited."""
    step = request.step
    allowed, reason, querier = _rule(policy, step, refusal)
    decision = Decision(
        node_id,
        request.job_id,
        STEP_NAMES[type(step)],
        requester,
        allowed,
        reason,
        querier,
        request.job_kind,
        _purpose(step),
        _digest(step),
        rows,
    )
    if not isinstance(step, m.PingRequest):
        _record(decision, audit)
    if not allowed:
        raise PolicyError(f"node {node_id}'s policy refuses {decision.step}: {reason}")
    return decision


def decide_job(
    node_id: str,
    policy: Policy,
    job_id: str,
    job: m.Job,
    querier: str,
    *,
    audit: AuditLog | None = None,
) -> Decision:
    """The root's decision to run a querier's job at all."""
    allowed = querier in policy.queriers
    reason = "querier in queriers" if allowed else f"querier {querier!r} is not in queriers"
    kind = JOB_NAMES[type(job)]
    decision = Decision(
        node_id, job_id, f"job:{kind}", querier, allowed, reason, querier, kind, "run a job"
    )
    _record(decision, audit if kind != "status" else None)  # status: liveness, like a ping
    if not allowed:
        raise PolicyError(f"the root does not accept jobs from querier {querier!r}")
    return decision


def decide_privacy_budget(
    node_id: str,
    policy: Policy,
    job_id: str,
    querier: str,
    epsilon: float,
    spent: float,
    *,
    audit: AuditLog | None = None,
) -> Decision | None:
    """The root's decision to let a training spend ``epsilon`` (at ``policy.dp_delta``)
    of the federation's differential-privacy budget, ``spent`` already gone. Without a
    budget in the policy there is nothing to decide (None); with one, a job without DP
    (infinite epsilon) or one past the budget is refused."""
    budget = policy.dp_epsilon
    if budget is None:
        return None
    left = budget - spent
    allowed = epsilon <= left + 1e-12
    if allowed:
        reason = f"spends epsilon {epsilon:.4g} of {left:.4g} left (budget {budget:g})"
    elif epsilon == float("inf"):
        reason = (
            f"the job is not differentially private and the federation keeps a budget ({budget:g})"
        )
    else:
        reason = f"epsilon {epsilon:.4g} exceeds the {left:.4g} left of the budget {budget:g}"
    decision = Decision(
        node_id, job_id, "dp_budget", querier, allowed, reason, querier, "train", "train a model"
    )
    _record(decision, audit)
    if not allowed:
        raise PolicyError(f"the federation's privacy budget refuses job {job_id!r}: {reason}")
    return decision


def decide_querier(
    node_id: str, policy: Policy, querier: str, *, audit: AuditLog | None = None
) -> None:
    """Whether the root listens to ``querier`` at all (before it sends anything): only a
    refusal is recorded here; an accepted querier's job is decided by :func:`decide_job`."""
    if querier in policy.queriers:
        return
    reason = f"querier {querier!r} is not in queriers"
    _record(Decision(node_id, "-", "connect", querier, False, reason, querier), audit)
    raise PolicyError(f"the root does not accept jobs from querier {querier!r}")


def _record(decision: Decision, audit: AuditLog | None) -> None:
    """The audit file first (fsynced): a decision that is not on record is not taken."""
    if audit is not None:
        audit.append(decision.entry())
    METRICS.decisions.labels(decision.step, decision.verdict).inc()
    log.info("%s", decision.line())
