"""Decryption-share noise flooding.

A partial decryption ``c1*s_i + e_i`` carries OpenFHE's fixed noise (sigma 2^20), too
little to hide ``s_i`` from whoever fuses the shares. Each party therefore adds a fresh
Gaussian of standard deviation ``2^flooding_log2_sigma`` per ring coefficient. It is drawn
in the slot domain as complex Gaussians: the canonical embedding maps i.i.d. coefficients
of variance s^2 to slots of per-component variance s^2 * N/2, and back.
"""

from __future__ import annotations

import math
import secrets
from typing import Any

import numpy as np

from phe_fl.mhe._backend import openfhe_errors
from phe_fl.mhe.context import Context


def flood(
    ctx: Context, partial: Any, *, level: int, scale_degree: int, scaling_factor: float
) -> Any:
    """Return ``partial`` plus fresh flooding noise at the ciphertext's level and scale."""
    params = ctx.params
    std = 2.0**params.flooding_log2_sigma * math.sqrt(params.slots) / scaling_factor
    rng = np.random.default_rng(secrets.randbits(128))
    noise = rng.normal(0.0, std, params.slots) + 1j * rng.normal(0.0, std, params.slots)
    with openfhe_errors("flooding a decryption share"):
        pt = ctx.cc.MakeCKKSPackedPlaintext(noise.astype(np.complex128), scale_degree, level)
        return ctx.cc.EvalAdd(partial, pt)
