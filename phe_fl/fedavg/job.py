"""What a querier asks of an encrypted FedAvg job, validated where it is made and where it
is read off the wire (a bad field is refused before any node trains).

A job with ``dp_noise_multiplier = sigma > 0`` is differentially private: every round is
one step of DP-SGD (:mod:`phe_fl.fedavg.dp`) instead of the app's own local training, and
``dp_sample_rate`` and ``rounds`` decide its epsilon (:meth:`FedAvgSpec.epsilon`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from phe_fl.errors import ParameterError

__all__ = ["FedAvgSpec", "APP_NAME"]

APP_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
"""An app's name, as nodes declare it in ``[fedavg] apps`` and jobs name it."""

MAX_ROUNDS = 100_000
MAX_EPOCHS = 1_000
MAX_NOISE_MULTIPLIER = 1e4


@dataclass(frozen=True)
class FedAvgSpec:
    """One FedAvg job: ``rounds`` rounds of ``epochs`` local epochs of the app ``app``."""

    app: str
    rounds: int = 5
    epochs: int = 1
    batch_size: int = 32
    learning_rate: float = 0.05
    seed: int = 0
    dp_noise_multiplier: float = 0.0  # sigma; 0: the app's own local training, no DP
    dp_clip: float = 1.0  # C: each example's gradient is clipped to this L2 norm
    dp_sample_rate: float = 0.0  # q: each row joins a round's batch with this probability

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
        sigma, clip, q = self.dp_noise_multiplier, self.dp_clip, self.dp_sample_rate
        if not (math.isfinite(sigma) and 0.0 <= sigma <= MAX_NOISE_MULTIPLIER):
            raise ParameterError(
                f"dp_noise_multiplier: must be in [0, {MAX_NOISE_MULTIPLIER:g}], got {sigma}"
            )
        if not (math.isfinite(clip) and 0.0 < clip <= 1e6):
            raise ParameterError(f"dp_clip: must be in (0, 1e6], got {clip}")
        if self.dp:
            if not (math.isfinite(q) and 0.0 < q <= 1.0):
                raise ParameterError(
                    f"dp_sample_rate: a differentially private job needs it in (0, 1] (each "
                    f"row joins a round's batch with this probability), got {q}"
                )
            if self.epochs != 1:
                raise ParameterError(
                    f"epochs: a differentially private round is one step of DP-SGD, so epochs "
                    f"must be 1, got {self.epochs}"
                )
        elif q != 0.0:
            raise ParameterError(
                f"dp_sample_rate: {q} is set but dp_noise_multiplier is 0 (no DP); set both "
                "or neither"
            )

    @property
    def dp(self) -> bool:
        """Differentially private rounds (``dp_noise_multiplier > 0``)."""
        return self.dp_noise_multiplier > 0

    def epsilon(self, delta: float) -> float:
        """The epsilon ``rounds`` steps of Poisson-subsampled Gaussian noise spend at
        ``delta`` (RDP accounting, :func:`phe_fl.privacy.accounting.epsilon_spent`);
        infinite without DP."""
        if not self.dp:
            return math.inf
        from phe_fl.privacy.accounting import epsilon_spent

        return epsilon_spent(self.dp_noise_multiplier, self.dp_sample_rate, self.rounds, delta)
