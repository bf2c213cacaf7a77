"""The one training loop, for every model family.

Flower's ``Strategy`` writes the round loop once and lets a strategy configure and
aggregate each round; here :class:`Trainer` is the loop, written once, and a model
family's :class:`ModelUpdate` (:mod:`phe_fl.ml.glm`, :mod:`phe_fl.ml.mlp`) says how an
iteration is prepared and what the combined gradient means. One iteration:

1. PREPARE (family): weights that would run out of levels are refreshed collectively, in
   one round, and the copy broadcast for MAP keeps the levels MAP needs;
2. MAP and COMBINE (:meth:`Trainer.map`): every party runs its MAP in stages
   (:mod:`phe_fl.ml.staging`); at each pause the root refreshes every party's pending
   intermediates in one collective round and sends them back, until every party has
   answered with its gradients, added on the way (a GLM's MAP is one stage);
3. REDUCE: the family turns the combined gradient into the step ``G`` of each weight
   ciphertext (sum over samples, alignment) and the loop applies ``w <- w - G``, or with
   momentum ``mu`` (heavy ball, shared notes §7.5) ``d <- mu d - G``, ``w <- w + d``, the
   last step ``d`` kept encrypted in the model. ``mu d`` costs ``d`` one level; a kept
   step that would land below ``G``'s level (right after the weights were refreshed) is
   refreshed first, all in one round, so heavy ball costs the weights no level. A family
   whose weights go back to full depth before every MAP (networks) only keeps ``d``
   refreshable. With ``nesterov`` (SPINDLE's momentum, in the form that evaluates the
   gradient at the weights themselves) ``w <- w + mu d - G`` with the new ``d``: one
   level more on the weights' path, which a GLM counts in its depth per iteration; a
   network's new step that landed at the refresh floor is refreshed first (``mu d``
   must stay refreshable);
4. JUDGE (family): a check of the iteration's report may stop the run (a differentially
   private GLM whose margins left the activation's interval).

Every iteration is reported (:class:`IterationReport`), logged at INFO on the
``phe_fl.ml`` logger and handed to ``on_iteration``, where a federation checkpoints the
model; :meth:`Trainer.run` goes on from such a checkpoint.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any, Protocol

from phe_fl.errors import ParameterError, ProtocolError
from phe_fl.mhe.context import Ciphertext, FloatArray
from phe_fl.ml.federation import Federation, MapRequest
from phe_fl.ml.jobs import require_job_params
from phe_fl.ml.staging import layer_sums, with_levels

if TYPE_CHECKING:
    from phe_fl.ml.families import ModelJob

__all__ = [
    "log",
    "IterationReport",
    "Prepared",
    "ModelUpdate",
    "Decrypt",
    "EncryptedModel",
    "Trainer",
]

log = logging.getLogger("phe_fl.ml")
"""Per-iteration progress (INFO) and margins that left the activation's interval (WARNING)."""

Decrypt = Callable[..., FloatArray]
"""A consented collective decryption, ``decrypt(ct, length=...)``."""


@dataclass(frozen=True)
class IterationReport:
    """What one iteration cost and where it left the model's levels."""

    iteration: int
    root_refreshes: int
    """Refreshes of the weights (and momentum steps) at the root."""
    levels_left_before: int
    """Levels of the weights MAP computed on (the copy broadcast to the parties; the
    lowest of them for a model of several ciphertexts)."""
    levels_left_after: int
    """Levels of the updated weights (the lowest)."""
    seconds: float
    party_refreshes: int = 0
    """Refreshes of intermediates the parties asked for during MAP."""
    map_rounds: int = 0
    """Collective refresh rounds (over a tree: round trips) the parties' refreshes took:
    one per pause of MAP, every ciphertext the parties need there at once."""
    levels_dropped: int = 0
    """Levels the broadcast copy shed below the root's weights."""
    margin_low: float | None = None
    """With a GLM's margin check on, a lower bound of the largest margin of this
    iteration's batch (``None``: not checked); see :class:`phe_fl.ml.glm.MarginCheck`."""
    margin_high: float | None = None
    """The matching upper bound."""

    @property
    def refreshes(self) -> int:
        return self.root_refreshes + self.party_refreshes

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> IterationReport:
        """A report from its checkpointed dict, including those written before GLMs and
        networks shared one loop (a GLM's ``refreshes``, a network's report without
        levels)."""
        values = dict(record)
        if "refreshes" in values:
            values["root_refreshes"] = values.pop("refreshes")
        values.setdefault("levels_left_before", 0)
        values.setdefault("levels_left_after", 0)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ProtocolError(f"a checkpointed iteration report has unknown fields {unknown}")
        return cls(**values)


@dataclass(frozen=True)
class Prepared:
    """What a family's PREPARE hands to MAP."""

    weights: list[Ciphertext]
    """The root's weights after any refresh: what REDUCE steps."""
    request: MapRequest
    """What MAP broadcasts (its weights may keep fewer levels than the root's)."""
    refreshes: int
    margin: tuple[float, float] | None = None
    """A GLM's consented margin check of this iteration: its (low, high) bounds."""


class ModelUpdate(Protocol):
    """A model family's side of the loop at the root (Flower's strategy)."""

    @property
    def refreshes_weights_every_iteration(self) -> bool:
        """Whether PREPARE takes every weight back to full depth before each MAP (then an
        update may land at any refreshable level)."""
        ...

    @property
    def checks_margins(self) -> bool:
        """Whether this family offers the consented margin check."""
        ...

    def initial_vectors(self, initial: Any) -> list[FloatArray]:
        """The slot vectors of the initial weights (``None``: the job's own)."""
        ...

    def prepare(
        self, weights: list[Ciphertext], iteration: int, *, final: bool, check_margins: bool
    ) -> Prepared:
        """Refresh what the iteration needs and build its MAP request; ``final``: the last
        iteration of the run (its weights are the model)."""
        ...

    def step(self, combined: Sequence[Ciphertext]) -> list[Ciphertext]:
        """``G`` of every weight ciphertext from the parties' combined gradients."""
        ...

    def judge(self, report: IterationReport) -> None:
        """Look at an iteration's report; raise to stop the run."""
        ...


@dataclass
class EncryptedModel:
    """A model under training or trained: still encrypted, with what each iteration
    cost. Its weights are ciphertexts in the family's order (a GLM: one)."""

    job: ModelJob
    weights: list[Ciphertext]
    reports: list[IterationReport] = field(default_factory=list)
    deltas: list[Ciphertext] | None = None
    """With momentum: the last step ``w_t - w_{t-1}`` per weight ciphertext (encrypted),
    ``None`` before the first step."""

    @property
    def refreshes_per_iteration(self) -> list[int]:
        return [r.refreshes for r in self.reports]

    @property
    def total_refreshes(self) -> int:
        return sum(self.refreshes_per_iteration)

    def decrypt(self, federation: Federation) -> Any:
        """The plaintext weights, only if every party agreed: a GLM's vector (intercept
        last), a network's ``W_1 .. W_L`` (bias column last)."""
        from phe_fl.ml.families import family_of  # the families build on this module

        return family_of(self.job).decrypt(self.job, self.weights, federation.decrypt_if_agreed)


class Trainer:
    """The root's side of training, for every model family: owns the encrypted model,
    never a secret share."""

    def __init__(self, job: ModelJob, federation: Federation) -> None:
        from phe_fl.ml.families import family_of  # the families build on this module

        require_job_params(job, federation.ctx.params.name)
        self.job = job
        self.federation = federation
        self.update: ModelUpdate = family_of(job).update(job, federation)

    def encrypt_initial(self, initial: Any = None) -> EncryptedModel:
        """A model at iteration 0: ``initial`` weights encrypted under the joint key
        (``None``: the job's own, zeros for a GLM, seeded Glorot for a network)."""
        vectors = self.update.initial_vectors(initial)
        return EncryptedModel(self.job, [self.federation.encrypt(v) for v in vectors])

    def train(
        self,
        initial: Any = None,
        *,
        iterations: int | None = None,
        on_iteration: Callable[[IterationReport], None] | None = None,
        check_margins_every: int = 0,
    ) -> EncryptedModel:
        """Every iteration from ``initial`` weights (see :meth:`run`)."""
        return self.run(
            self.encrypt_initial(initial),
            iterations=iterations,
            on_iteration=on_iteration,
            check_margins_every=check_margins_every,
        )

    def run(
        self,
        model: EncryptedModel,
        *,
        iterations: int | None = None,
        on_iteration: Callable[[IterationReport], None] | None = None,
        check_margins_every: int = 0,
    ) -> EncryptedModel:
        """Iterations ``len(model.reports)`` to ``iterations - 1`` (the job's count unless
        given) on ``model``, a fresh one or one restored from a checkpoint; ``on_iteration``
        sees each report once the model holds that iteration's weights.

        ``check_margins_every=k > 0`` (logistic regression) runs the consented margin
        check at every ``k``-th iteration from the ``k``-th on (the first weights are the
        job's zeros): one more MAP-sized round and one collective decryption of a scalar,
        so it needs every party's ``allow_model_decryption``; margins that certainly left
        the activation's interval are reported with a
        :class:`~phe_fl.ml.glm.MarginWarning`, once per run, and stop a differentially
        private run (:class:`~phe_fl.ml.glm.DPMarginError`)."""
        n_iter = self.job.iterations if iterations is None else iterations
        every = check_margins_every
        if isinstance(every, bool) or not isinstance(every, int) or every < 0:
            raise ParameterError(f"check_margins_every must be an integer >= 0, got {every!r}")
        if every and not self.update.checks_margins:
            raise ParameterError(
                f"check_margins_every: the margin check is for logistic regression, not a "
                f"{self.job.model} job"
            )
        for it in range(len(model.reports), n_iter):
            check = bool(every) and it > 0 and it % every == 0
            report = self.step(model, it, final=it == n_iter - 1, check_margins=check)
            log.info(
                "%s iteration %d/%d: %.2f s, %d refresh(es) at the root, %d by the parties "
                "in %d round(s), %d levels left",
                self.job.model,
                it + 1,
                n_iter,
                report.seconds,
                report.root_refreshes,
                report.party_refreshes,
                report.map_rounds,
                report.levels_left_after,
            )
            self.update.judge(report)
            if on_iteration is not None:
                on_iteration(report)
        return model

    def step(
        self,
        model: EncryptedModel,
        iteration: int,
        *,
        final: bool = False,
        check_margins: bool = False,
    ) -> IterationReport:
        """One iteration of ``model``: PREPARE, MAP+COMBINE, REDUCE; the model holds the
        new weights (and momentum step) and the report when it returns."""
        t0 = time.perf_counter()
        prep = self.update.prepare(
            model.weights, iteration, final=final, check_margins=check_margins
        )
        combined, party_refreshes, rounds = self.map(prep.request)
        weights, momentum_refreshes = self.reduce(model, prep.weights, combined)
        before = min(w.levels_left for w in prep.weights)
        sent = min(w.levels_left for w in prep.request.weights)
        low, high = prep.margin if prep.margin is not None else (None, None)
        report = IterationReport(
            iteration,
            prep.refreshes + momentum_refreshes,
            sent,
            min(w.levels_left for w in weights),
            time.perf_counter() - t0,
            party_refreshes=party_refreshes,
            map_rounds=rounds,
            levels_dropped=before - sent,
            margin_low=low,
            margin_high=high,
        )
        model.weights = weights
        model.reports.append(report)
        return report

    def map(self, request: MapRequest) -> tuple[tuple[Ciphertext, ...], int, int]:
        """MAP and COMBINE in stages: the parties' summed gradients, the refreshes they
        asked for and the refresh rounds those took."""
        fed = self.federation
        stage = 0
        refreshed: dict[str, tuple[Ciphertext, ...]] = {}
        sums: list[tuple[Ciphertext, ...]] = []
        finished = refreshes = rounds = 0
        while True:
            got = fed.map_stage(request, stage, refreshed)
            if got.gradients:
                sums.append(got.gradients)
            finished += got.finished
            if not got.pending:
                break
            parties = sorted(got.pending)
            flat = [ct for p in parties for ct in got.pending[p]]
            fresh = iter(fed.refresh_many(flat))
            refreshed = {p: tuple(next(fresh) for _ in got.pending[p]) for p in parties}
            refreshes += len(flat)
            rounds += 1
            stage += 1
        if finished != fed.n_parties or not sums:
            raise ProtocolError(
                f"MAP of iteration {request.iteration}: {finished} of {fed.n_parties} parties "
                f"answered with gradients"
            )
        combined = layer_sums(fed.ctx, sums)
        if len(combined) != len(request.weights):
            raise ProtocolError(
                f"MAP of iteration {request.iteration}: {len(combined)} gradient ciphertexts "
                f"for {len(request.weights)} weight ciphertexts"
            )
        return combined, refreshes, rounds

    def reduce(
        self, model: EncryptedModel, weights: list[Ciphertext], combined: Sequence[Ciphertext]
    ) -> tuple[list[Ciphertext], int]:
        """The update of ``weights`` (with momentum, of ``model.deltas`` too); returns the
        new weights and the refreshes momentum took."""
        ctx = self.federation.ctx
        steps = self.update.step(combined)
        mu = float(self.job.momentum)
        if not mu:
            return [ctx.sub(w, g) for w, g in zip(weights, steps, strict=True)], 0
        refreshes = 0
        if model.deltas is None:
            deltas = [ctx.negate(g) for g in steps]
        else:
            keep = ctx.params.refresh_min_levels
            floors = [
                keep + 1 if self.update.refreshes_weights_every_iteration else g.levels_left + 1
                for g in steps
            ]
            kept, refreshes = with_levels(model.deltas, floors, self.federation.refresh_many)
            deltas = [
                ctx.sub(ctx.rescale(ctx.mul_plain(d, mu)), g)
                for d, g in zip(kept, steps, strict=True)
            ]
        moves = deltas
        if self.job.nesterov:  # mu * d must stay refreshable: a step at the floor is refreshed
            floor = ctx.params.refresh_min_levels + 1
            deltas, more = with_levels(deltas, floor, self.federation.refresh_many)
            refreshes += more
            moves = [
                ctx.sub(ctx.rescale(ctx.mul_plain(d, mu)), g)
                for d, g in zip(deltas, steps, strict=True)
            ]
        model.deltas = deltas
        return [ctx.add(w, d) for w, d in zip(weights, moves, strict=True)], refreshes
