"""Fixtures for the phe-fl test suite.

OpenFHE keeps evaluation keys in process-wide maps keyed by key tag; every
LocalFederation gets its own tag, so federations built in one process do not interfere.
Federations are expensive (key generation for every party), so test modules build them
once, with module-scoped fixtures.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest

from phe_fl.mhe import INSECURE_TEST


@pytest.fixture(scope="session")
def params():
    """The fast insecure ring-2^12 set every integration test runs on."""
    return INSECURE_TEST


@pytest.fixture
def rng(request):
    """A numpy generator seeded from the test's name, so failures reproduce."""
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))
