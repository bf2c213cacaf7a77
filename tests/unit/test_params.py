"""ParameterSet validation and derived quantities (pure Python, no OpenFHE context)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from phe_fl.errors import ParameterError
from phe_fl.mhe.keys import release
from phe_fl.mhe.params import (
    INSECURE_TEST,
    N14_128,
    N15_128,
    N16_128,
    PARAMETER_SETS,
    ParameterSet,
    get_parameter_set,
)

NAMED = [INSECURE_TEST, N14_128, N15_128, N16_128]


@pytest.mark.parametrize("p", NAMED, ids=lambda p: p.name)
def test_named_sets_validate_and_are_registered_under_their_name(p):
    p.validate()
    assert PARAMETER_SETS[p.name] is p
    assert get_parameter_set(p.name) is p
    assert p.mult_depth >= p.refresh_min_levels + 1
    assert p.usable_levels == p.mult_depth - p.refresh_min_levels


def test_named_sets_declare_the_expected_rings_and_security():
    assert [(p.log_ring_dim, p.mult_depth, p.secure) for p in NAMED] == [
        (12, 7, False),
        (14, 5, True),
        (15, 11, True),
        (16, 16, True),
    ]
    assert INSECURE_TEST.ring_dim == 4096 and INSECURE_TEST.slots == 2048


def test_fingerprints_differ_across_named_sets_and_are_8_bytes():
    fps = [p.fingerprint for p in NAMED]
    assert all(len(fp) == 8 for fp in fps)
    assert len(set(fps)) == len(fps)


def test_fingerprint_ignores_name_and_release_options_but_not_crypto_fields():
    base = N14_128
    same = dataclasses.replace(base, name="renamed", release_decimals=6, flooding_log2_sigma=20.0)
    assert same.fingerprint == base.fingerprint
    for change in (dict(mult_depth=4), dict(compression="compact")):
        assert dataclasses.replace(base, **change).fingerprint != base.fingerprint
    assert (
        dataclasses.replace(INSECURE_TEST, scale_bits=40).fingerprint != INSECURE_TEST.fingerprint
    )


def test_unknown_set_name_lists_the_known_sets():
    with pytest.raises(ParameterError) as info:
        get_parameter_set("n17-depth-lots")
    msg = str(info.value)
    assert "unknown parameter set 'n17-depth-lots'" in msg
    for name in PARAMETER_SETS:
        assert name in msg


@pytest.mark.parametrize(
    "log_ring_dim, depth, max_depth, smallest",
    [(14, 6, 5, "2^15"), (15, 12, 11, "2^16"), (16, 25, 24, "2^17"), (13, 4, 1, "2^14")],
)
def test_depth_too_large_for_the_ring_at_128_bit_names_ring_limit_and_fix(
    log_ring_dim, depth, max_depth, smallest
):
    with pytest.raises(ParameterError) as info:
        ParameterSet(name="too-deep", log_ring_dim=log_ring_dim, mult_depth=depth)
    msg = str(info.value)
    assert "'too-deep'" in msg
    assert f"depth {depth} does not fit ring 2^{log_ring_dim}" in msg
    assert f"max {max_depth}" in msg
    assert f"smallest ring that fits: {smallest}" in msg


def test_depth_beyond_every_ring_says_none_available():
    with pytest.raises(ParameterError, match="none available"):
        ParameterSet(name="x", log_ring_dim=16, mult_depth=60)


def test_the_same_depth_is_fine_without_security():
    p = ParameterSet(name="x", log_ring_dim=14, mult_depth=6, security="none")
    assert not p.secure


@pytest.mark.parametrize("bits", [19, 60, 0, -5])
def test_scale_bits_out_of_range(bits):
    with pytest.raises(ParameterError, match=rf"scale_bits must be in 20\.\.59, got {bits}"):
        ParameterSet(name="x", log_ring_dim=12, mult_depth=7, scale_bits=bits, security="none")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(log_ring_dim=9), r"log_ring_dim must be in 10\.\.17, got 9"),
        (dict(log_ring_dim=18), r"log_ring_dim must be in 10\.\.17, got 18"),
        (dict(first_mod_bits=50), "first_mod_bits must be above scale_bits"),
        (dict(first_mod_bits=61), "first_mod_bits must be above scale_bits"),
        (dict(security="256_classic"), "security must be"),
        (dict(compression="tight"), "compression must be"),
        (dict(mult_depth=3), "mult_depth 3 leaves no level between refreshes"),
        (dict(mult_depth=2, compression="compact"), "use mult_depth >= 3"),
        (dict(flooding_log2_sigma=0), "flooding_log2_sigma"),
        (dict(flooding_log2_sigma=45.0), "flooding_log2_sigma"),
        (dict(release_decimals=13), r"release_decimals must be in 0\.\.12"),
        (dict(release_decimals=-1), r"release_decimals must be in 0\.\.12"),
    ],
)
def test_invalid_fields_are_refused_with_a_message_naming_the_field(change, match):
    with pytest.raises(ParameterError, match=match) as info:
        dataclasses.replace(INSECURE_TEST, name="bad-set", **change)
    assert "'bad-set'" in str(info.value)


@pytest.mark.parametrize("change", [dict(scale_bits=40), dict(first_mod_bits=55)])
def test_128_bit_sets_require_the_measured_moduli(change):
    with pytest.raises(ParameterError, match="50-bit scale and 60-bit first modulus"):
        dataclasses.replace(N14_128, **change)


def test_parameter_sets_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        INSECURE_TEST.mult_depth = 3  # type: ignore[misc]


def test_refresh_threshold_follows_compression():
    assert INSECURE_TEST.refresh_min_levels == 3  # slack: 4 towers
    assert dataclasses.replace(INSECURE_TEST, compression="compact").refresh_min_levels == 2


@pytest.mark.parametrize("n", [1, 3, 10, 32])
def test_expected_flooding_error_formula(n):
    p = INSECURE_TEST
    want = 2**24 * math.sqrt(n) * math.sqrt(2048) / 2**50
    assert p.expected_flooding_error(n) == pytest.approx(want)
    assert p.expected_flooding_error(4 * n) == pytest.approx(2 * p.expected_flooding_error(n))


def test_release_rounds_and_checks_decimals():
    v = np.array([0.123456789, -2.00004999, 7.5])
    assert np.array_equal(release(v, 4), np.round(v, 4))
    assert np.array_equal(release(v, 0), np.array([0.0, -2.0, 8.0]))
    for bad in (-1, 13):
        with pytest.raises(ParameterError, match="decimals"):
            release(v, bad)
