"""A network job: widths, activation fits, learning rate, momentum, batch, iterations,
checked before any key work (a network that does not fit is refused naming what to change)."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from phe_fl.errors import ParameterError
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.params import ParameterSet, get_parameter_set
from phe_fl.ml.activations import FitMethod, PolyActivation, fit_activation, fit_sigmoid, sigmoid
from phe_fl.ml.jobs import DEFAULT_PARAMS, check_common_fields, is_int, is_real
from phe_fl.ml.mlp.layout import MLPLayout

__all__ = ["HiddenActivation", "MAX_HIDDEN_LAYERS", "MAX_WEIGHT_CIPHERTEXTS", "MLPJob"]


HiddenActivation = Literal["relu", "sigmoid"]

MAX_HIDDEN_LAYERS = 3
MAX_WEIGHT_CIPHERTEXTS = 1024
"""A network's weight tiles at most (784-64-64-10 at 2^15 is 9; 784-512-512-10 is 53)."""


def _relu(x: FloatArray) -> FloatArray:
    return np.maximum(np.asarray(x, dtype=np.float64), 0.0)


@dataclass(frozen=True)
class MLPJob:
    """Everything the parties agree on before training a network.

    ``hidden`` lists the hidden layer widths (``()``: multinomial logistic regression).
    ``hidden_activation`` is fitted by a polynomial of ``hidden_degree`` on
    ``[-hidden_bound, hidden_bound]``; the output sigmoid by ``output_degree`` on
    ``[-output_bound, output_bound]``: degree 1 (the default, 1 level: the gradient of a
    squared loss on one-hot targets) and 5 are stable; the least-squares fits of degree
    3 and 7 have a negative leading coefficient, which pushes scores that left the
    interval further out, and training diverges. Initial weights are drawn from ``seed`` (public:
    every party and the twin derive the same ones); ``init_scale`` multiplies the
    Glorot-uniform range. Labels are the integers ``0 .. n_classes - 1``. ``momentum`` is
    heavy ball, or Nesterov's with ``nesterov`` (SPINDLE's choice; :mod:`phe_fl.ml.loop`).
    ``allow_model_decryption`` is this party's consent to reveal the trained model.
    ``tile`` is the side of the square weight tiles
    (:class:`~phe_fl.ml.mlp.layout.MLPLayout`); 0 chooses the side whose iteration on
    ``batch_size`` rows costs fewest operations, once, at construction
    (``dataclasses.replace`` keeps it: it is part of the model's layout). ``params``
    defaults to the 128-bit :data:`~phe_fl.ml.jobs.DEFAULT_PARAMS`; the insecure test set
    is for tests only, which name it.
    """

    n_features: int
    n_classes: int
    hidden: tuple[int, ...] = ()
    learning_rate: float = 1.0
    batch_size: int = 16
    iterations: int = 10
    momentum: float = 0.0
    hidden_activation: HiddenActivation = "relu"
    hidden_degree: int = 2
    hidden_bound: float = 4.0
    output_degree: int = 1
    output_bound: float = 4.0
    activation_method: FitMethod = "lstsq"
    params: str = DEFAULT_PARAMS
    seed: int = 0
    init_scale: float = 1.0
    allow_model_decryption: bool = False
    nesterov: bool = False
    tile: int = 0

    def __post_init__(self) -> None:
        def bad(name: str, why: str) -> ParameterError:
            return ParameterError(f"network job: {name} {why}")

        check_common_fields(self, bad)
        if not is_int(self.n_classes) or self.n_classes < 2:
            raise bad("n_classes", f"must be an integer >= 2, got {self.n_classes!r}")
        hidden = tuple(self.hidden)
        if len(hidden) > MAX_HIDDEN_LAYERS or not all(is_int(h) and h >= 1 for h in hidden):
            raise bad(
                "hidden",
                f"must list 0 to {MAX_HIDDEN_LAYERS} positive layer widths, got {self.hidden!r}",
            )
        object.__setattr__(self, "hidden", hidden)
        for name in ("hidden_bound", "output_bound", "init_scale"):
            v = getattr(self, name)
            if not is_real(v) or not v > 0:
                raise bad(name, f"must be a finite number > 0, got {v!r}")
        if self.hidden_activation not in ("relu", "sigmoid"):
            raise bad(
                "hidden_activation",
                f"must be 'relu' or 'sigmoid', got {self.hidden_activation!r}",
            )
        if not is_int(self.hidden_degree) or not 2 <= self.hidden_degree <= 7:
            raise bad(
                "hidden_degree",
                f"must be an integer in 2..7 (its derivative must not be constant), got "
                f"{self.hidden_degree!r}",
            )
        if not is_int(self.output_degree) or not 1 <= self.output_degree <= 15:
            raise bad("output_degree", f"must be an integer in 1..15, got {self.output_degree!r}")
        if not is_int(self.seed):
            raise bad("seed", f"must be an integer, got {self.seed!r}")
        slots = self.parameter_set.slots
        if not is_int(self.tile):
            raise bad("tile", f"must be an integer, got {self.tile!r}")
        try:
            layout = (
                MLPLayout(slots, self.units, side=self.tile)
                if self.tile
                else MLPLayout.for_batch(
                    slots, self.units, self.batch_size, max_cts=MAX_WEIGHT_CIPHERTEXTS
                )
            )
        except ParameterError as e:
            raise bad("tile", str(e)) from None
        object.__setattr__(self, "tile", layout.side)
        self.check_fits()

    @classmethod
    def from_record(cls, fields: Mapping[str, Any]) -> MLPJob:
        """The job a stored record holds. A record from before jobs named their ``tile``
        was laid out in the widest tile (the only layout then), not the cheapest one."""
        if "tile" in fields:
            return cls(**fields)
        job = cls(**{**fields, "tile": 0})
        return dataclasses.replace(job, tile=MLPLayout(job.parameter_set.slots, job.units).side)

    # -- derived --------------------------------------------------------------------------
    @property
    def model(self) -> str:
        return "mlp" if self.hidden else "multinomial"

    @property
    def label_values(self) -> tuple[float, ...]:
        return tuple(float(c) for c in range(self.n_classes))

    @property
    def units(self) -> tuple[int, ...]:
        return (self.n_features, *self.hidden, self.n_classes)

    @property
    def n_layers(self) -> int:
        return len(self.hidden) + 1

    @property
    def parameter_set(self) -> ParameterSet:
        return get_parameter_set(self.params)

    @property
    def layout(self) -> MLPLayout:
        return MLPLayout(self.parameter_set.slots, self.units, side=self.tile)

    @property
    def hidden_act(self) -> PolyActivation:
        return hidden_fit(
            self.hidden_activation,
            int(self.hidden_degree),
            float(self.hidden_bound),
            self.activation_method,
        )

    @property
    def output_act(self) -> PolyActivation:
        return fit_sigmoid(
            int(self.output_degree), float(self.output_bound), self.activation_method
        )

    @property
    def n_weight_ciphertexts(self) -> int:
        """The model's ciphertexts: every layer's weight tiles."""
        return self.layout.n_cts

    def rotation_indices(self) -> tuple[int, ...]:
        return self.layout.rotation_indices()

    def initial_weights(self) -> list[FloatArray]:
        """Glorot-uniform weights from the public ``seed`` (zeros for multinomial
        regression, which has no symmetry to break); biases start at zero."""
        rng = np.random.default_rng(self.seed)
        layout = self.layout
        out: list[FloatArray] = []
        for k in range(1, self.n_layers + 1):
            n_out, n_in = layout.shape(k)
            w = np.zeros((n_out, n_in))
            if self.hidden:
                limit = self.init_scale * math.sqrt(6.0 / (n_in - 1 + n_out))
                w[:, :-1] = rng.uniform(-limit, limit, size=(n_out, n_in - 1))
            out.append(w)
        return out

    def check_fits(self) -> None:
        """Refuse a network of more weight ciphertexts than :data:`MAX_WEIGHT_CIPHERTEXTS`
        (every party holds them and their gradients), or an activation deeper than the
        levels available between two refreshes, saying what to change."""
        ps = self.parameter_set
        have = ps.usable_levels
        for act, what in ((self.hidden_act, "hidden"), (self.output_act, "output")):
            if act.depth > have:
                raise ParameterError(
                    f"network job: the degree-{act.degree} {what} activation needs "
                    f"{act.depth} levels but parameter set {ps.name!r} has {have} usable "
                    f"levels between refreshes; lower {what}_degree or use a parameter set "
                    f"with mult_depth >= {act.depth + ps.refresh_min_levels}"
                )
        layout = self.layout
        if layout.n_cts > MAX_WEIGHT_CIPHERTEXTS:
            raise ParameterError(
                f"network job: hidden {list(self.hidden)} with {self.n_features} features "
                f"makes {layout.n_cts} weight ciphertexts of {layout.side} x {layout.side} "
                f"tiles, more than {MAX_WEIGHT_CIPHERTEXTS}; use narrower layers or a wider tile"
            )


@functools.lru_cache(maxsize=64)
def hidden_fit(kind: str, degree: int, bound: float, method: FitMethod) -> PolyActivation:
    fn = _relu if kind == "relu" else sigmoid
    return fit_activation(fn, f"{kind}-{method}-d{degree}-a{bound:g}", degree, bound, method)
