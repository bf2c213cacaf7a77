"""The named parameter sets build OpenFHE contexts with the declared ring, and the
128-bit depth table agrees with OpenFHE's own security tables."""

from __future__ import annotations

import dataclasses

import pytest

from phe_fl.errors import ParameterError
from phe_fl.mhe import INSECURE_TEST, N14_128, N15_128, N16_128, PARAMETER_SETS, Context, _backend
from phe_fl.mhe.params import ParameterSet

NAMED = [INSECURE_TEST, N14_128, N15_128, N16_128]


@pytest.mark.parametrize("params", NAMED, ids=lambda p: p.name)
def test_named_set_builds_a_context_with_the_declared_ring(params):
    params.validate()
    ctx = Context(params)
    assert ctx.cc.GetRingDimension() == params.ring_dim
    assert ctx.slots == params.slots == params.ring_dim // 2
    assert Context(params).cc is ctx.cc  # one OpenFHE context per set per process


def test_named_sets_have_distinct_fingerprints_and_contexts():
    assert len({p.fingerprint for p in PARAMETER_SETS.values()}) == len(PARAMETER_SETS)
    ccs = [Context(p).cc for p in NAMED]
    assert len({id(cc) for cc in ccs}) == len(NAMED)


def unchecked(**fields) -> ParameterSet:
    """A ParameterSet that skipped validate(), to ask OpenFHE itself."""
    p = object.__new__(ParameterSet)
    defaults = {
        f.name: f.default
        for f in dataclasses.fields(ParameterSet)
        if f.default is not dataclasses.MISSING
    }
    for name, value in {**defaults, **fields}.items():
        object.__setattr__(p, name, value)
    return p


@pytest.mark.parametrize("log_ring_dim, max_depth", [(14, 5), (15, 11), (16, 24)])
def test_depth_table_is_what_openfhe_accepts_at_128_bit(log_ring_dim, max_depth):
    """The deepest depth the table allows gets the declared ring from OpenFHE; one more
    level makes OpenFHE want a larger ring, which build_context refuses."""
    ok = ParameterSet(name=f"max-{log_ring_dim}", log_ring_dim=log_ring_dim, mult_depth=max_depth)
    assert _backend.build_context(ok).GetRingDimension() == 1 << log_ring_dim
    too_deep = unchecked(
        name=f"deep-{log_ring_dim}", log_ring_dim=log_ring_dim, mult_depth=max_depth + 1
    )
    with pytest.raises(ParameterError, match=f"'deep-{log_ring_dim}'"):
        _backend.build_context(too_deep)
    with pytest.raises(ParameterError, match="does not fit ring"):
        too_deep.validate()
