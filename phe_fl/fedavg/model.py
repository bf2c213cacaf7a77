"""A FedAvg job's outcome at the querier: the global model in the clear (when the root's
policy releases it) and what each round cost."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from phe_fl.errors import JobStateError, ParameterError
from phe_fl.fedavg.packing import Layout, Vector

if TYPE_CHECKING:
    import torch

    from phe_fl.federation.messages import RoundSummary

__all__ = ["FedAvgModel"]


@dataclass(frozen=True)
class FedAvgModel:
    model_id: str
    layout: Layout
    parameters: Vector | None  # None: the root's policy keeps the model
    rounds: tuple[RoundSummary, ...]
    dp_epsilon: float = 0.0  # a differentially private job's spending (0: not DP)
    dp_delta: float = 0.0

    def _values(self) -> Vector:
        if self.parameters is None:
            raise JobStateError(
                f"the root keeps FedAvg model {self.model_id!r} (its release_fedavg_model = false)"
            )
        return self.parameters

    def state_dict(self) -> dict[str, Vector]:
        """Named arrays in the model's shapes (float32)."""
        return self.layout.split(self._values())

    def load_into(self, model: torch.nn.Module) -> None:
        """Copy the parameters into a PyTorch model of the same architecture."""
        from phe_fl.fedavg.site import layout_of, load_into

        if layout_of(model).digest() != self.layout.digest():
            raise ParameterError("the model's tensors (names or shapes) differ from the job's")
        load_into(model, self.layout, self._values())

    def save(self, path: str | Path) -> Path:
        """``.npz`` (named arrays, no torch needed) or ``.pt`` (a torch state dict)."""
        path = Path(path)
        arrays = self.state_dict()
        if path.suffix == ".pt":
            import torch

            torch.save({k: torch.from_numpy(np.array(v)) for k, v in arrays.items()}, path)
        elif path.suffix == ".npz":
            np.savez(path, **arrays)  # type: ignore[arg-type]
        else:
            raise ParameterError(f"{path}: save a FedAvg model as .npz or .pt")
        return path
