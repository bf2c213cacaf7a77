"""A node's side of encrypted FedAvg: the institution's app trains the round's global model
on the site's data, and the node keeps the update it then encrypts chunk by chunk.

Only this module (and the apps) import torch: the root's aggregation and the wire never
do. A model's state is its floating-point tensors in ``state_dict`` order (integer
buffers such as BatchNorm's batch counter stay each site's own).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from phe_fl.errors import AppError, ConfigError, JobStateError, ProtocolError
from phe_fl.fedavg.app import App, FitConfig, FitResult, load_app
from phe_fl.fedavg.dp import check_dp_app, dp_update
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import Layout, TensorSpec, Vector, check_update, values_digest

if TYPE_CHECKING:
    import torch

__all__ = ["Site", "layout_of", "flatten", "load_into", "JOBS_KEPT"]

JOBS_KEPT = 2
"""Prepared jobs whose model and global parameters a site keeps in memory: no step tells
a node that a job ended, and the root runs one job at a time. An older job asked again is
prepared again from its spec (its update and guard record are in the node's store)."""


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ConfigError(
            "FedAvg apps need PyTorch: install phe-fl with the torch extra (pip install "
            "'phe-fl[torch]')"
        ) from None
    return torch


def layout_of(model: torch.nn.Module) -> Layout:
    """The model's floating-point tensors, in ``state_dict`` order."""
    return Layout(
        tuple(
            TensorSpec(name, tuple(int(d) for d in t.shape))
            for name, t in model.state_dict().items()
            if t.is_floating_point()
        )
    )


def flatten(model: torch.nn.Module, layout: Layout) -> Vector:
    state = model.state_dict()
    parts = [state[t.name].detach().cpu().reshape(-1).numpy() for t in layout.tensors]
    if not parts:
        return np.zeros(0, dtype=np.float32)
    flat: Vector = np.concatenate(parts).astype(np.float32)
    return flat


def load_into(model: torch.nn.Module, layout: Layout, vector: Vector) -> None:
    """Copy ``vector`` into the model's tensors (their own dtype and device)."""
    torch = _torch()
    state = model.state_dict()
    with torch.no_grad():
        for name, values in layout.split(vector).items():
            target = state[name]
            target.copy_(torch.from_numpy(np.array(values)).to(target.dtype))


def _check_layout(model: torch.nn.Module, layout: Layout, who: str) -> None:
    """The model an app trained must still be the job's, tensor by tensor."""
    have = layout_of(model)
    mine = {t.name: t.shape for t in have.tensors}
    for t in layout.tensors:
        if t.name not in mine:
            raise AppError(f"{who}: the trained model lacks tensor {t.name!r} of shape {t.shape}")
        if mine[t.name] != t.shape:
            raise AppError(
                f"{who}: tensor {t.name!r} has shape {mine[t.name]} after training; the job's "
                f"model has {t.shape}"
            )
    extra = sorted(set(mine) - {t.name for t in layout.tensors})
    if extra:
        raise AppError(f"{who}: the trained model has tensors the job's has not: {extra}")


def _build_model(app: App, spec: FedAvgSpec, who: str) -> torch.nn.Module:
    """The app's fresh model, seeded by the job (the process's random state is left as
    it was)."""
    th = _torch()
    try:
        with th.random.fork_rng(devices=[]):
            th.manual_seed(spec.seed)
            model = app.model()
    except Exception as exc:  # noqa: BLE001 - the site's code: name it
        raise AppError(f"{who}: model() failed: {type(exc).__name__}: {exc}") from None
    if not isinstance(model, th.nn.Module):
        raise AppError(f"{who}: model() returned {type(model).__name__}, not a Module")
    built: torch.nn.Module = model
    return built


@dataclass
class _Job:
    spec: FedAvgSpec
    app: App
    model: torch.nn.Module
    layout: Layout
    dp_seed: int | None = None  # the node's secret sampling and noise seed (DP jobs)
    global_round: int = 0
    global_values: Vector = field(default_factory=lambda: np.zeros(0, dtype=np.float32))


class Site:
    """This node's apps (``[fedavg] apps``: name -> ``module:attribute``, built with
    ``options``) and its running FedAvg jobs; ``n_parties`` (the federation's) sizes a DP
    job's noise share."""

    def __init__(
        self,
        node_id: str,
        apps: Mapping[str, str],
        options: Mapping[str, Any],
        *,
        n_parties: int = 1,
    ) -> None:
        self.node_id = node_id
        self.n_parties = n_parties
        self.apps = dict(apps)
        self.options = dict(options)
        self._built: dict[str, App] = {}
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    def _app(self, name: str) -> App:
        if name not in self.apps:
            declared = ", ".join(sorted(self.apps)) or "none"
            raise AppError(
                f"node {self.node_id} declares no app {name!r} in [fedavg] apps (declared: "
                f"{declared})"
            )
        if name not in self._built:
            _torch()
            try:
                self._built[name] = load_app(name, self.apps[name], self.options)
            except ConfigError as exc:
                raise AppError(f"node {self.node_id}: {exc}") from None
        return self._built[name]

    def prepare(self, job_id: str, spec: FedAvgSpec, *, dp_seed: int | None = None) -> Layout:
        """Load the job's app and build its model (again after a restart): its layout. A
        differentially private job needs the node's secret ``dp_seed`` (kept by the caller,
        so that a restarted node draws the same batches and noise)."""
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None and job.spec == spec and job.dp_seed == dp_seed:
                return job.layout
            app = self._app(spec.app)
            who = f"node {self.node_id}, app {spec.app!r}"
            if spec.dp:
                check_dp_app(app, who)
                if dp_seed is None:
                    raise JobStateError(f"{who}: a differentially private job needs a DP seed")
            model = _build_model(app, spec, who)
            layout = layout_of(model)
            if layout.size == 0:
                raise AppError(f"{who}: the model has no floating-point parameters")
            self._jobs.pop(job_id, None)
            self._jobs[job_id] = _Job(spec, app, model, layout, dp_seed)
            while len(self._jobs) > JOBS_KEPT:  # the oldest job: rebuilt if asked again
                del self._jobs[next(iter(self._jobs))]
            return layout

    def job(self, job_id: str) -> _Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobStateError(f"FedAvg job {job_id!r} is not prepared on node {self.node_id}")
        return job

    def initial(self, job_id: str) -> Vector:
        """The first global parameters: this node's fresh model (the root's)."""
        job = self.job(job_id)
        return flatten(job.model, job.layout)

    def receive_global(self, job_id: str, round_: int, offset: int, values: bytes) -> None:
        """One slice of the round's global parameters (float32, little-endian)."""
        job = self.job(job_id)
        if len(values) % 4:
            raise ProtocolError(f"global parameters: {len(values)} bytes is not float32 values")
        piece = np.frombuffer(values, dtype="<f4")
        if not 0 <= offset <= job.layout.size - piece.size:
            raise ProtocolError(
                f"global parameters {offset}..{offset + piece.size} of a model of {job.layout.size}"
            )
        if not np.all(np.isfinite(piece)):
            raise ProtocolError("global parameters: values are not finite")
        with self._lock:
            if job.global_round != round_ or job.global_values.size != job.layout.size:
                job.global_round = round_
                job.global_values = np.zeros(job.layout.size, dtype=np.float32)
            job.global_values[offset : offset + piece.size] = piece

    def fit(self, job_id: str, round_: int, digest: bytes) -> tuple[Vector, FitResult]:
        """Train from the round's global parameters (their digest must match what arrived):
        the update (trained minus global) and what the app reported."""
        job = self.job(job_id)
        who = f"node {self.node_id}, app {job.spec.app!r}"
        if job.global_round != round_ or values_digest(job.global_values) != digest:
            raise JobStateError(
                f"{who}: the global parameters of round {round_} did not all arrive (or differ "
                "from the ones the root sent)"
            )
        spec = job.spec
        try:
            load_into(job.model, job.layout, job.global_values)
            if spec.dp:
                update, result = self._dp_step(job, round_, who)
            else:
                update, result = self._local_training(job, round_, who)
            check_update(update, job.layout, who)
        except BaseException:
            job.model = _build_model(job.app, spec, who)  # what fit left may not be the job's
            raise
        return update.astype(np.float32), result

    @staticmethod
    def _local_training(job: _Job, round_: int, who: str) -> tuple[Vector, FitResult]:
        """The app's own ``fit``: the update is what it changed."""
        spec = job.spec
        config = FitConfig(round_, spec.epochs, spec.batch_size, spec.learning_rate, spec.seed)
        try:
            result = job.app.fit(job.model, config)
        except Exception as exc:  # noqa: BLE001 - the site's code: name it
            raise AppError(f"{who}: fit() failed: {type(exc).__name__}: {exc}") from None
        if not isinstance(result, FitResult) or result.examples < 1:
            raise AppError(
                f"{who}: fit() must return a FitResult with examples >= 1, got {result!r}"
            )
        _check_layout(job.model, job.layout, who)
        return flatten(job.model, job.layout) - job.global_values, result

    def _dp_step(self, job: _Job, round_: int, who: str) -> tuple[Vector, FitResult]:
        """One DP-SGD step at the global parameters (:mod:`phe_fl.fedavg.dp`); the batch
        loss is not released."""
        assert job.dp_seed is not None  # prepare() refuses a DP job without one
        app = check_dp_app(job.app, who)
        update, rows = dp_update(
            app,
            job.model,
            job.layout,
            job.spec,
            round_,
            seed=job.dp_seed,
            n_parties=self.n_parties,
            who=who,
        )
        return update, FitResult(examples=rows, loss=0.0)
