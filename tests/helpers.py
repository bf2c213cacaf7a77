"""Plain helpers shared by the mhe tests (no fixtures here; see conftest.py)."""

from __future__ import annotations

import math

import numpy as np

from phe_fl.errors import CryptoError
from phe_fl.mhe import _backend
from phe_fl.mhe._wire import Envelope, Kind

# Rotation steps every integration federation installs (an explicit list, both directions).
ROTATIONS = (1, -2, 5)
# A step that is NOT in ROTATIONS: rotating by it must fail.
UNINSTALLED_ROTATION = 3
# |correlation| below which decrypted values count as unrelated to the plaintext
MAX_CORRELATION = 0.15


def party_id(n: int) -> str:
    return f"n={n}"


def max_abs_error(got: np.ndarray, want: np.ndarray) -> float:
    got = np.asarray(got, dtype=np.float64)
    want = np.asarray(want, dtype=np.float64)
    return float(np.max(np.abs(got[: want.size] - want)))


def error_bound(params, n_parties: int) -> float:
    """The accuracy promised for a threshold decryption or key switch with flooding."""
    return 1e-5 + 7 * params.expected_flooding_error(n_parties)


def unrelated_to(values: np.ndarray, plaintext: np.ndarray) -> tuple[bool, str]:
    """Whether ``values`` carry no usable information about ``plaintext``.

    Garbage means non-finite values, or a correlation with the plaintext below
    MAX_CORRELATION in absolute value. A real decryption correlates ~1.0, even when scaled
    by a huge factor (so a large error alone would not prove anything); 2048 unrelated
    values correlate ~N(0, 0.022), so 0.15 is a 6.8-sigma margin against flaky failures.
    """
    values = np.asarray(values, dtype=np.float64)[: plaintext.size]
    if not np.all(np.isfinite(values)):
        return True, "non-finite values"
    err = float(np.max(np.abs(values - plaintext)))
    if np.std(values) == 0:
        return True, f"constant values (max abs error {err:.3g})"
    corr = float(np.corrcoef(values, plaintext)[0, 1])
    why = f"max abs error {err:.3g}, correlation {corr:.3g}"
    return (not math.isnan(corr) and abs(corr) < MAX_CORRELATION), why


def assert_cannot_decrypt(attempt, plaintext: np.ndarray) -> str:
    """``attempt()`` must raise CryptoError or return values unrelated to ``plaintext``."""
    try:
        values = attempt()
    except CryptoError as exc:
        return f"CryptoError: {exc}"
    garbage, why = unrelated_to(values, plaintext)
    assert garbage, f"decryption without every party recovered the plaintext ({why})"
    return why


def openfhe_blobs(data: bytes, kind: Kind) -> tuple[bytes, ...]:
    return Envelope.unpack(data, kind).blobs


def canonical(loader: str, blob: bytes) -> bytes:
    """OpenFHE's bytes for ``blob`` after one load/dump cycle.

    OpenFHE (cereal) serializes shared parameter pointers once per object graph; an object
    that was itself deserialized serializes its parameters per tower, so the first
    round trip may change the bytes (same content) and every later one is a fixpoint.
    """
    return _backend.dump(_backend.load(loader, blob))


def _checksum_scheme():
    """How the envelope's trailing checksum is computed (it changed twice already: BLAKE2b-128
    to CRC-32 to XXH3-128); found by packing a known envelope, so crafted-envelope tests keep
    working."""
    import hashlib
    import struct
    import zlib

    import xxhash

    probe = Envelope(Kind.CIPHERTEXT, bytes(8), blobs=(b"probe",)).pack()
    for size, fn in (
        (16, lambda body: xxhash.xxh3_128_digest(body)),
        (4, lambda body: struct.pack(">I", zlib.crc32(body))),
        (16, lambda body: hashlib.blake2b(body, digest_size=16).digest()),
    ):
        if fn(probe[:-size]) == probe[-size:]:
            return size, fn
    raise RuntimeError("unknown envelope checksum; update tests/helpers.py:_checksum_scheme")


CHECKSUM_SIZE, _checksum = _checksum_scheme()


def body_of(data: bytes) -> bytes:
    """An envelope without its checksum."""
    return bytes(data[:-CHECKSUM_SIZE])


def reseal(body: bytes) -> bytes:
    """Append a valid checksum to ``body``, as a careless or malicious peer could: the
    checksum guards against accidents, not against crafted bytes."""
    return bytes(body) + _checksum(bytes(body))
