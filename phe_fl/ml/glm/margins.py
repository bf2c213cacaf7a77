"""How far a GLM's margins went: the activation polynomial is a sigmoid only on its
interval, and a differentially private run's guarantee holds only inside it."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from phe_fl.errors import ProtocolError
from phe_fl.ml.loop import log

__all__ = ["MarginWarning", "MarginCheck", "DPMarginError", "report_margin"]


class MarginWarning(UserWarning):
    """Margins ``x . w`` left the interval the activation polynomial was fitted on: the
    polynomial is no sigmoid there and training may diverge (lower the learning rate,
    tighten ``feature_clip`` or widen ``activation_bound``)."""


@dataclass(frozen=True)
class MarginCheck:
    """How far the margins of one iteration's global batch went.

    ``low <= max |x_i . w| <= high``. The twin knows the maximum exactly (``low ==
    high``); the encrypted run learns only the consented power sum ``S = sum_i (z_i /
    2a)^p`` over the ``n`` samples of the batch, from which ``low = 2a (S / n)^(1/p)`` and
    ``high = 2a S^(1/p)``. ``left`` is certain: the margins left ``[-a, a]`` (``low > a``).
    ``overflowed``: the margins were too large to measure (``S`` came back negative or not
    finite because CKKS could not hold it, or the twin's margins overflowed float64); this
    is reported as left as well."""

    iteration: int
    low: float
    high: float
    bound: float
    overflowed: bool = False

    @property
    def left(self) -> bool:
        return self.overflowed or self.low > self.bound

    def message(self) -> str:
        if self.overflowed:
            seen = "too large to measure (it overflowed)"
        elif self.low == self.high:
            seen = f"{self.low:.4g}"
        else:
            seen = f"between {self.low:.4g} and {self.high:.4g}"
        return (
            f"iteration {self.iteration}: largest margin |x . w| {seen}, outside the "
            f"activation's interval [-{self.bound:g}, {self.bound:g}]: the polynomial is no "
            f"sigmoid there and training may diverge; lower learning_rate, tighten "
            f"feature_clip or widen activation_bound"
        )


class DPMarginError(ProtocolError):
    """A differentially private run found margins outside the activation's interval: the
    per-record gradient bound the noise is calibrated on no longer holds, so the run stops
    rather than release a model without its guarantee."""


def report_margin(check: MarginCheck) -> None:
    log.warning("%s", check.message())
    warnings.warn(check.message(), MarginWarning, stacklevel=3)
