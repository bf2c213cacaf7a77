"""Polynomial activations: fits, errors, depth, and encrypted evaluation vs numpy."""

from __future__ import annotations

import numpy as np
import pytest

from phe_fl.errors import LevelError, ParameterError
from phe_fl.mhe import INSECURE_TEST, LocalFederation
from phe_fl.ml.activations import (
    PolyActivation,
    fit_activation,
    fit_sigmoid,
    identity_activation,
    sigmoid,
    term_depth,
)


def _softplus(x: np.ndarray) -> np.ndarray:
    return np.asarray(np.log1p(np.exp(x)))


def test_odd_function_fit_drops_even_terms_and_their_depth() -> None:
    act = fit_activation(np.tanh, "tanh", 4, 2.0)
    assert act.coefficients[0] == act.coefficients[2] == act.coefficients[4] == 0.0
    assert act.depth == 2  # the degree-4 term is zero, so only degree 3 is evaluated


def test_degree3_least_squares_matches_pricell_reference() -> None:
    # PriCell / POSEIDON: 0.5 + 0.2332333 x - 0.0098111 x^3 on [-3, 3]
    act = fit_sigmoid(3, 3.0, "lstsq")
    c0, c1, c2, c3 = act.coefficients
    assert c0 == pytest.approx(0.5, abs=1e-12)
    assert c1 == pytest.approx(0.2332333, abs=2e-5)
    assert c2 == 0.0  # odd symmetry: the even terms are exactly zero, no level spent
    assert c3 == pytest.approx(-0.0098111, abs=2e-5)
    assert act.interval == (-3.0, 3.0) and act.degree == 3 and act.depth == 2
    print(f"degree 3 on [-3,3]: max error {act.max_error:.4f}")
    assert 0.015 < act.max_error < 0.02


@pytest.mark.parametrize("method", ["lstsq", "chebyshev"])
def test_max_error_is_measured_and_shrinks_with_degree(method: str) -> None:
    errors = []
    for degree in (3, 5, 7, 9):
        act = fit_sigmoid(degree, 8.0, method)  # type: ignore[arg-type]
        grid = np.linspace(-8, 8, 100_003)
        direct = np.abs(act(grid) - sigmoid(grid)).max()
        assert act.max_error == pytest.approx(direct, rel=1e-3)
        assert all(c == 0.0 for c in act.coefficients[2::2])
        errors.append(act.max_error)
    print(method, "max errors on [-8, 8], degrees 3/5/7/9:", [f"{e:.4f}" for e in errors])
    assert errors == sorted(errors, reverse=True)
    assert errors[-1] < 0.02


def test_chebyshev_has_smaller_max_error_than_lstsq_at_degree_3() -> None:
    assert fit_sigmoid(3, 3.0, "chebyshev").max_error < fit_sigmoid(3, 3.0, "lstsq").max_error


@pytest.mark.parametrize(
    ("degree", "depth"), [(1, 1), (2, 2), (3, 2), (4, 3), (7, 3), (8, 4), (15, 4)]
)
def test_depth_is_bit_length_of_degree(degree: int, depth: int) -> None:
    act = fit_activation(_softplus, "softplus", degree, 2.0)  # neither odd nor even
    assert act.depth == depth == max(term_depth(k) for k in range(1, degree + 1))


@pytest.mark.parametrize(
    ("degree", "bound", "method"),
    [(0, 3.0, "lstsq"), (3, 0.0, "lstsq"), (3, float("nan"), "lstsq"), (3, 3.0, "spline")],
)
def test_bad_fit_arguments(degree: int, bound: float, method: str) -> None:
    with pytest.raises(ParameterError):
        fit_activation(sigmoid, "s", degree, bound, method)  # type: ignore[arg-type]


def test_inconsistent_activation_is_refused() -> None:
    with pytest.raises(ParameterError, match="depth"):
        PolyActivation("p", (0.0, 1.0, 0.0, 1.0), (-1.0, 1.0), 3, 0.0, 1, "manual")
    with pytest.raises(ParameterError, match="coefficients"):
        PolyActivation("p", (0.0, 1.0), (-1.0, 1.0), 3, 0.0, 1, "manual")


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 2)


@pytest.mark.parametrize(
    "act",
    [
        fit_sigmoid(3, 3.0),
        fit_sigmoid(7, 8.0, "chebyshev"),
        fit_activation(_softplus, "softplus", 6, 2.0),  # all terms, mixed-level products
        identity_activation(),
    ],
    ids=lambda a: a.name,
)
def test_encrypted_evaluation_matches_numpy(fed: LocalFederation, act: PolyActivation) -> None:
    ctx = fed.ctx
    rng = np.random.default_rng(7)
    n = 64
    lo, hi = max(act.interval[0], -3.0), min(act.interval[1], 3.0)
    x = rng.uniform(lo, hi, n)
    scale = rng.uniform(-2, 2, n)
    shift = rng.uniform(-1, 1, n)
    ct = fed.encrypt(x)
    out = act.encrypted(ctx, ct, scale=scale, shift=shift)
    assert out.level - ct.level == act.depth
    got = fed.decrypt(out, length=n, decimals=12)
    want = scale * act(x) + shift
    err = np.abs(got - want).max()
    print(f"{act.name}: max |encrypted - numpy| = {err:.2e}")
    assert err < 1e-5
    # scalar scale and default shift
    got2 = fed.decrypt(act.encrypted(ctx, ct, scale=0.5), length=n, decimals=12)
    assert np.abs(got2 - 0.5 * act(x)).max() < 1e-5


def test_encrypted_evaluation_refuses_without_levels(fed: LocalFederation) -> None:
    ctx = fed.ctx
    act = fit_sigmoid(7, 8.0)  # depth 3
    ct = fed.encrypt(np.ones(4))
    for _ in range(INSECURE_TEST.mult_depth - 2):
        ct = ctx.rescale(ctx.mul_plain(ct, 1.0))
    assert ct.levels_left == 2
    with pytest.raises(LevelError, match="needs 3 levels"):
        act.encrypted(ctx, ct)


def test_derivative_matches_pricell_sigma_prime() -> None:
    d = fit_sigmoid(3, 3.0).derivative()  # PriCell: 0.2332333 - 0.0294333 x^2
    assert d.degree == 2 and d.depth == 2 and d.coefficients[1] == 0.0
    assert d.coefficients[0] == pytest.approx(0.2332333, abs=2e-5)
    assert d.coefficients[2] == pytest.approx(-0.0294333, abs=5e-5)
