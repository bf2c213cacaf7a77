"""Differentially private FedAvg: every round is one step of DP-SGD over the whole
federation, with the Gaussian noise added in shares under encryption.

At the round's global parameters every node

1. Poisson-samples its training rows: each joins the batch with probability ``q`` (the
   job's ``dp_sample_rate``), drawn from the node's secret seed (128 bits from
   :mod:`secrets`, kept in its state store) and the round, so that a round trained again
   draws the same rows and the same noise, never a second draw;
2. takes every sampled row's gradient of the app's loss (per-example gradients with
   ``torch.func``), clips each to L2 norm ``C`` over all of the model's parameters, and
   sums them;
3. adds its share of the noise, ``N(0, sigma^2 C^2 / N)`` on every parameter (``N``
   parties), so that the shares sum to ``N(0, sigma^2 C^2)``;
4. makes its update ``-lr * (sum + noise) / (q * rows)``, ``rows`` its training-set size:
   FedAvg's weighting by ``rows / total`` turns it into ``-lr * (sum + noise) / (q *
   total)``, one DP-SGD step normalized by the *expected* batch ``q * total``, a public
   number (never the sampled size).

The sum the federation decrypts is therefore the subsampled Gaussian mechanism with
sensitivity ``C`` (add or remove one row), composed ``rounds`` times, which
:func:`phe_fl.privacy.accounting.epsilon_spent` bounds. What a DP round releases besides
the model: each node's row count (public sizes, as for DP GLM jobs); the sampled batch
size and the batch loss are not released (a DP node reports loss 0). No node knows the
total noise; ``N - 1`` colluding nodes know their own shares and face the last node's
share only (``crypto/SECURITY.md``).

A model whose layers mix the examples of a batch (BatchNorm in training mode) has no
per-example gradient: the round fails naming the error.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import numpy.typing as npt

from phe_fl.errors import AppError
from phe_fl.fedavg.app import App
from phe_fl.fedavg.job import FedAvgSpec
from phe_fl.fedavg.packing import Layout, Vector
from phe_fl.ml.glm import dp_draws

if TYPE_CHECKING:
    import torch

__all__ = ["DPApp", "dp_update", "clipped_gradient_sum", "check_dp_app", "MICROBATCH_VALUES"]

MICROBATCH_VALUES = 1 << 25
"""Per-example gradient values held at once (128 MiB of float32): the microbatch is this
divided by the model's parameter count."""


class DPApp(App, Protocol):
    """An app a differentially private job can use: phe-fl runs the DP step itself on the
    app's examples and loss (the app's ``fit`` is not called)."""

    def examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This site's training inputs and targets (first dimension: rows)."""
        ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The mean loss of a batch (called on batches of one row)."""
        ...


def check_dp_app(app: App, who: str) -> DPApp:
    """``app`` if it offers what a DP round needs, else an AppError naming what it lacks."""
    missing = [name for name in ("examples", "loss") if not callable(getattr(app, name, None))]
    if missing:
        raise AppError(
            f"{who}: a differentially private job needs the app to provide "
            f"{' and '.join(f'{n}()' for n in missing)} (phe-fl clips per-example gradients "
            "itself)"
        )
    return app  # type: ignore[return-value]


def _parameter_slices(model: torch.nn.Module, layout: Layout) -> dict[str, slice]:
    """Where each trainable parameter lies in the flat vector (buffers get no gradient)."""
    offsets: dict[str, slice] = {}
    at = 0
    for t in layout.tensors:
        offsets[t.name] = slice(at, at + t.size)
        at += t.size
    return {name: offsets[name] for name, p in model.named_parameters() if p.requires_grad}


def clipped_gradient_sum(
    model: torch.nn.Module,
    layout: Layout,
    inputs: torch.Tensor,
    targets: torch.Tensor,
    loss: Any,
    clip: float,
) -> npt.NDArray[np.float64]:
    """The sum over rows of each row's gradient of ``loss`` at ``model``'s parameters,
    clipped to L2 norm ``clip`` (float64, in the layout's order; zero on buffers)."""
    import torch
    from torch.func import functional_call, grad, vmap

    slices = _parameter_slices(model, layout)
    total = np.zeros(layout.size, dtype=np.float64)
    if len(inputs) == 0 or not slices:
        return total
    device = next(iter(model.parameters())).device
    params = {k: v.detach() for k, v in model.named_parameters() if k in slices}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def one(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        out = functional_call(model, (p, buffers), (x.unsqueeze(0),))
        result: torch.Tensor = loss(out, y.unsqueeze(0))
        return result

    per_example = vmap(grad(one), in_dims=(None, 0, 0))
    n_values = sum(s.stop - s.start for s in slices.values())
    step = max(1, MICROBATCH_VALUES // max(1, n_values))
    sums = {k: torch.zeros_like(v, dtype=torch.float64) for k, v in params.items()}
    for start in range(0, len(inputs), step):
        xb = inputs[start : start + step].to(device)
        yb = targets[start : start + step].to(device)
        grads = per_example(params, xb, yb)
        flat = torch.cat([g.reshape(len(xb), -1) for g in grads.values()], dim=1)
        norms = flat.to(torch.float64).norm(dim=1)
        factor = torch.clamp(clip / torch.clamp(norms, min=1e-12), max=1.0)
        for k, g in grads.items():
            shape = (len(xb),) + (1,) * (g.dim() - 1)
            sums[k] += (g.to(torch.float64) * factor.reshape(shape)).sum(dim=0)
    for k, s in sums.items():
        total[slices[k]] = s.detach().cpu().reshape(-1).numpy()
    return total


def dp_update(
    app: DPApp,
    model: torch.nn.Module,
    layout: Layout,
    spec: FedAvgSpec,
    round_: int,
    *,
    seed: int,
    n_parties: int,
    who: str,
) -> tuple[Vector, int]:
    """This node's update of ``round_`` (see the module doc) and its row count."""
    try:
        inputs, targets = app.examples()
    except Exception as exc:  # noqa: BLE001 - the site's code: name it
        raise AppError(f"{who}: examples() failed: {type(exc).__name__}: {exc}") from None
    rows = len(inputs)
    if rows < 1 or len(targets) != rows:
        raise AppError(
            f"{who}: examples() must return inputs and targets of the same number of rows "
            f"(at least 1), got {rows} and {len(targets)}"
        )
    slices = _parameter_slices(model, layout)
    n_noise = sum(s.stop - s.start for s in slices.values())
    sampled, noise = dp_draws(seed, round_, rows, spec.dp_sample_rate, n_noise)
    try:
        index = np.asarray(sampled, dtype=np.int64)
        model.train()
        grad_sum = clipped_gradient_sum(
            model, layout, inputs[index], targets[index], app.loss, spec.dp_clip
        )
    except AppError:
        raise
    except Exception as exc:  # noqa: BLE001 - the app's model or loss: name it
        raise AppError(
            f"{who}: per-example gradients failed ({type(exc).__name__}: {exc}); a "
            "differentially private job needs layers that treat rows independently (no "
            "BatchNorm in training mode)"
        ) from None
    share_std = spec.dp_noise_multiplier * spec.dp_clip / np.sqrt(n_parties)
    at = 0
    for s in slices.values():  # the noise lands on parameters only, in layout order
        width = s.stop - s.start
        grad_sum[s] += share_std * noise[at : at + width]
        at += width
    update = -spec.learning_rate * grad_sum / (spec.dp_sample_rate * rows)
    return update.astype(np.float32), rows
