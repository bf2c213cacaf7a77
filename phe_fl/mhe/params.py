"""Named CKKS parameter sets, validated before any key work starts.

A parameter set fixes everything two parties must agree on to interoperate; its
``fingerprint`` travels in every serialized share and key so that material from another
set is refused with a clear error instead of failing deep inside OpenFHE.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

from phe_fl.errors import ParameterError

__all__ = [
    "ParameterSet",
    "PARAMETER_SETS",
    "get_parameter_set",
    "INSECURE_TEST",
    "N14_128",
    "N15_128",
    "N16_128",
]

Security = Literal["128_classic", "none"]
Compression = Literal["slack", "compact"]

# Largest multiplicative depth OpenFHE admits at 128-bit classical security with a 60-bit
# first modulus, 50-bit scale and HYBRID key switching (measured, see shared notes).
_MAX_DEPTH_128_AT_50_BITS = {13: 1, 14: 5, 15: 11, 16: 24, 17: 50}

# Towers an interactive refresh needs left on its input: one for the message plus the
# compression towers of the chosen mode (OpenFHE's IntMPBoot*).
_REFRESH_MIN_TOWERS = {"slack": 4, "compact": 3}


@dataclass(frozen=True)
class ParameterSet:
    """Threshold-CKKS parameters (FIXEDMANUAL scaling, HYBRID key switching, ternary keys).

    ``flooding_log2_sigma`` is the standard deviation (log2, coefficient units) of the
    noise each party adds to its decryption and key-switch shares; see crypto/SECURITY.md
    for what it hides and what precision it costs.
    """

    name: str
    log_ring_dim: int
    mult_depth: int
    scale_bits: int = 50
    first_mod_bits: int = 60
    security: Security = "128_classic"
    compression: Compression = "slack"
    flooding_log2_sigma: float = 24.0
    release_decimals: int = 4

    def __post_init__(self) -> None:
        self.validate()

    # -- derived quantities -------------------------------------------------------------
    @property
    def ring_dim(self) -> int:
        return 1 << self.log_ring_dim

    @property
    def slots(self) -> int:
        return self.ring_dim // 2

    @property
    def secure(self) -> bool:
        return self.security != "none"

    @property
    def refresh_min_levels(self) -> int:
        """Levels a ciphertext must still have for a collective refresh to accept it."""
        return _REFRESH_MIN_TOWERS[self.compression] - 1

    @property
    def usable_levels(self) -> int:
        """Multiplicative levels available between two refreshes."""
        return self.mult_depth - self.refresh_min_levels

    @property
    def fingerprint(self) -> bytes:
        """8 bytes that differ between any two parameter sets that cannot interoperate."""
        canon = (
            f"ckks/v1/{self.log_ring_dim}/{self.mult_depth}/{self.scale_bits}/"
            f"{self.first_mod_bits}/{self.security}/{self.compression}"
        )
        return hashlib.sha256(canon.encode()).digest()[:8]

    def expected_flooding_error(self, n_parties: int) -> float:
        """Standard deviation of the slot error that flooding adds to a fused decryption."""
        sigma = 2.0**self.flooding_log2_sigma * math.sqrt(n_parties)
        return float(sigma * math.sqrt(self.slots) / 2.0**self.scale_bits)

    # -- validation ---------------------------------------------------------------------
    def validate(self) -> None:
        """Refuse combinations that OpenFHE or the security standard would reject."""
        where = f"parameter set {self.name!r}"
        if not 10 <= self.log_ring_dim <= 17:
            raise ParameterError(
                f"{where}: log_ring_dim must be in 10..17, got {self.log_ring_dim}"
            )
        if not 20 <= self.scale_bits <= 59:
            raise ParameterError(f"{where}: scale_bits must be in 20..59, got {self.scale_bits}")
        if not self.scale_bits < self.first_mod_bits <= 60:
            raise ParameterError(
                f"{where}: first_mod_bits must be above scale_bits ({self.scale_bits}) and at "
                f"most 60, got {self.first_mod_bits}"
            )
        if self.security not in ("128_classic", "none"):
            raise ParameterError(f"{where}: security must be '128_classic' or 'none'")
        if self.compression not in _REFRESH_MIN_TOWERS:
            raise ParameterError(f"{where}: compression must be 'slack' or 'compact'")
        if self.mult_depth < self.refresh_min_levels + 1:
            raise ParameterError(
                f"{where}: mult_depth {self.mult_depth} leaves no level between refreshes; a "
                f"'{self.compression}' refresh needs {self.refresh_min_levels} spare levels, so "
                f"use mult_depth >= {self.refresh_min_levels + 1}"
            )
        if self.secure:
            if self.scale_bits != 50 or self.first_mod_bits != 60:
                raise ParameterError(
                    f"{where}: 128-bit sets are defined for a 50-bit scale and 60-bit first "
                    "modulus only; use security='none' to experiment"
                )
            limit = _MAX_DEPTH_128_AT_50_BITS.get(self.log_ring_dim, 0)
            if self.mult_depth > limit:
                bigger = next(
                    (
                        f"2^{k}"
                        for k, d in sorted(_MAX_DEPTH_128_AT_50_BITS.items())
                        if d >= self.mult_depth
                    ),
                    "none available",
                )
                raise ParameterError(
                    f"{where}: depth {self.mult_depth} does not fit ring 2^{self.log_ring_dim} at "
                    f"128-bit security (max {limit}); smallest ring that fits: {bigger}"
                )
        if not 0 < self.flooding_log2_sigma < self.scale_bits - 5:
            raise ParameterError(
                f"{where}: flooding_log2_sigma must be in (0, scale_bits - 5), got "
                f"{self.flooding_log2_sigma}"
            )
        if not 0 <= self.release_decimals <= 12:
            raise ParameterError(f"{where}: release_decimals must be in 0..12")


INSECURE_TEST = ParameterSet(
    name="insecure-test-n12", log_ring_dim=12, mult_depth=7, security="none"
)
"""Fast ring 2^12 for unit tests. NOT SECURE: never use it for real data."""

N14_128 = ParameterSet(name="n14-depth5-128", log_ring_dim=14, mult_depth=5)
N15_128 = ParameterSet(name="n15-depth11-128", log_ring_dim=15, mult_depth=11)
N16_128 = ParameterSet(name="n16-depth16-128", log_ring_dim=16, mult_depth=16)

PARAMETER_SETS: dict[str, ParameterSet] = {
    p.name: p for p in (INSECURE_TEST, N14_128, N15_128, N16_128)
}


def get_parameter_set(name: str) -> ParameterSet:
    """Look a named parameter set up, with the list of known names in the error."""
    try:
        return PARAMETER_SETS[name]
    except KeyError:
        known = ", ".join(sorted(PARAMETER_SETS))
        raise ParameterError(f"unknown parameter set {name!r}; known sets: {known}") from None
