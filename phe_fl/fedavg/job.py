"""What a querier asks of an encrypted FedAvg job, validated where it is made and where it
is read off the wire (a bad field is refused before any node trains)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from phe_fl.errors import ParameterError

__all__ = ["FedAvgSpec", "APP_NAME"]

APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""An app's name, as nodes declare it in ``[fedavg] apps`` and jobs name it."""

MAX_ROUNDS = 100_000
MAX_EPOCHS = 1_000


@dataclass(frozen=True)
class FedAvgSpec:
    """One FedAvg job: ``rounds`` rounds of ``epochs`` local epochs of the app ``app``."""

    app: str
    rounds: int = 5
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    seed: int = 0

    def __post_init__(self) -> None:
        if not APP_NAME.fullmatch(self.app):
            raise ParameterError(
                f"app: {self.app[:80]!r} is not an app name (1-64 of A-Z a-z 0-9 _ . -)"
            )
        for name, value, high in (
            ("rounds", self.rounds, MAX_ROUNDS),
            ("epochs", self.epochs, MAX_EPOCHS),
            ("batch_size", self.batch_size, 1 << 20),
        ):
            if not 1 <= value <= high:
                raise ParameterError(f"{name}: must be in 1..{high}, got {value}")
        if not 0.0 < self.learning_rate <= 100.0:
            raise ParameterError(f"learning_rate: must be in (0, 100], got {self.learning_rate}")
        if not 0 <= self.seed < 1 << 63:
            raise ParameterError(f"seed: must be in 0..2^63-1, got {self.seed}")
