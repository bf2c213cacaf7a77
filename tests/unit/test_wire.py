"""The byte envelope (phe_fl.mhe._wire): layout round trip and every way to refuse bytes."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phe_fl.errors import KeyMismatchError, PheFlError, SerializationError
from phe_fl.mhe._wire import (
    _HEAD,
    CHECKSUM_LEN,
    MAGIC,
    SUBJECT_LEN,
    VERSION,
    Envelope,
    Kind,
    checksum_of,
    digest,
)
from phe_fl.mhe.keys import decode_indices, encode_indices
from tests.helpers import CHECKSUM_SIZE, body_of, reseal

FP = bytes(range(8))
OTHER_FP = bytes(8)


def sample(**kw) -> Envelope:
    fields = dict(
        kind=Kind.DECRYPTION_SHARE,
        fingerprint=FP,
        n_parties=10,
        parties=frozenset({0, 3, 9}),
        subject=digest(b"subject"),
        blobs=(b"first payload", b"", b"\x00" * 300),
    )
    fields.update(kw)
    return Envelope(**fields)


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(list(Kind)),
    n_and_parties=st.integers(0, 300).flatmap(
        lambda n: st.tuples(st.just(n), st.frozensets(st.integers(0, max(n - 1, 0)), max_size=n))
    ),
    subject=st.binary(min_size=SUBJECT_LEN, max_size=SUBJECT_LEN),
    blobs=st.lists(st.binary(max_size=64), max_size=5).map(tuple),
)
def test_envelope_round_trips_every_field(kind, n_and_parties, subject, blobs):
    n, parties = n_and_parties
    env = Envelope(kind, FP, n, parties, subject, blobs)
    data = env.pack()
    assert Envelope.unpack(data, kind, FP) == env
    assert Envelope.unpack(data, kind) == env  # fingerprint check is optional
    assert Envelope.unpack(bytearray(data), kind) == env
    assert Envelope.unpack(memoryview(data), kind) == env


def test_envelope_layout_starts_with_magic_version_kind_fingerprint():
    data = sample().pack()
    magic, version, kind, fp, n = _HEAD.unpack_from(data)
    assert (magic, version, kind, fp, n) == (b"PHFL", VERSION, Kind.DECRYPTION_SHARE, FP, 10)


def test_unpack_refuses_wrong_kind_naming_both_kinds():
    data = sample(kind=Kind.CIPHERTEXT).pack()
    with pytest.raises(SerializationError, match="expected a decryption share, got a ciphertext"):
        Envelope.unpack(data, Kind.DECRYPTION_SHARE)


def test_unpack_refuses_other_parameter_set_with_key_mismatch():
    data = sample().pack()
    with pytest.raises(KeyMismatchError, match="another parameter set"):
        Envelope.unpack(data, Kind.DECRYPTION_SHARE, OTHER_FP)


@pytest.mark.parametrize("cut", [1, 5, CHECKSUM_SIZE, 100, 340])
def test_unpack_refuses_truncated_bytes(cut):
    data = sample().pack()
    with pytest.raises(SerializationError):
        Envelope.unpack(data[:-cut], Kind.DECRYPTION_SHARE)
    with pytest.raises(SerializationError):
        Envelope.unpack(data[:cut], Kind.DECRYPTION_SHARE)


def test_unpack_refuses_empty_and_too_short_input():
    with pytest.raises(SerializationError, match="too short"):
        Envelope.unpack(b"", Kind.CIPHERTEXT)
    with pytest.raises(SerializationError, match="too short"):
        Envelope.unpack(MAGIC, Kind.CIPHERTEXT)


def test_unpack_detects_any_flipped_byte():
    data = sample().pack()
    for pos in range(len(data)):
        bad = bytearray(data)
        bad[pos] ^= 0x01
        with pytest.raises(SerializationError):
            Envelope.unpack(bytes(bad), Kind.DECRYPTION_SHARE)


def test_flipped_payload_byte_is_reported_as_checksum_mismatch():
    data = bytearray(sample().pack())
    data[len(data) // 2] ^= 0xFF
    with pytest.raises(SerializationError, match="checksum"):
        Envelope.unpack(bytes(data), Kind.DECRYPTION_SHARE)


def test_unpack_refuses_bad_magic_and_other_version():
    body = body_of(sample().pack())
    with pytest.raises(SerializationError, match="magic"):
        Envelope.unpack(reseal(b"XXXX" + body[4:]), Kind.DECRYPTION_SHARE)
    newer = VERSION + 1
    with pytest.raises(SerializationError, match=f"version {newer}, expected {VERSION}"):
        Envelope.unpack(reseal(body[:4] + bytes([newer]) + body[5:]), Kind.DECRYPTION_SHARE)


def test_checksum_is_xxh3_128_of_everything_before_it():
    import xxhash

    data = sample().pack()
    assert CHECKSUM_SIZE == CHECKSUM_LEN == 16
    assert data[-16:] == xxhash.xxh3_128_digest(data[:-16])
    assert checksum_of(data) == data[-16:]
    assert checksum_of(memoryview(data)) == data[-16:]


def test_version_1_envelope_with_crc32_is_refused_as_older():
    """Bytes written before the checksum became XXH3-128 are refused, never misparsed."""
    import struct
    import zlib

    body = body_of(sample().pack())
    v1 = body[:4] + bytes([1]) + body[5:]
    old = v1 + struct.pack(">I", zlib.crc32(v1))
    with pytest.raises(SerializationError, match="version 1, expected 2 .*older phe-fl"):
        Envelope.unpack(old, Kind.DECRYPTION_SHARE)


def test_checksum_of_tells_envelopes_apart_by_any_byte():
    base = sample()
    variants = [
        base,
        sample(parties=frozenset({0, 3})),
        sample(subject=digest(b"other")),
        sample(blobs=(b"first payloaD", b"", b"\x00" * 300)),
        sample(blobs=(b"first payload", b"\x00" * 300, b"")),
    ]
    sums = {checksum_of(v.pack()) for v in variants}
    assert len(sums) == len(variants)


def test_unpack_refuses_unknown_kind():
    body = body_of(sample().pack())
    with pytest.raises(SerializationError, match="unknown object kind 99"):
        Envelope.unpack(reseal(body[:5] + bytes([99]) + body[6:]), Kind.DECRYPTION_SHARE)


def test_unpack_refuses_party_bitmask_beyond_party_count():
    env = sample(n_parties=3, parties=frozenset({0}))
    body = bytearray(body_of(env.pack()))
    body[_HEAD.size] |= 1 << 5  # party 5 of 3
    with pytest.raises(SerializationError, match="beyond 3"):
        Envelope.unpack(reseal(bytes(body)), Kind.DECRYPTION_SHARE)


def test_unpack_refuses_trailing_bytes_and_truncated_blobs():
    body = body_of(sample().pack())
    with pytest.raises(SerializationError, match="trailing"):
        Envelope.unpack(reseal(body + b"\x00"), Kind.DECRYPTION_SHARE)
    with pytest.raises(SerializationError, match="truncated blob"):
        Envelope.unpack(reseal(body[:-1]), Kind.DECRYPTION_SHARE)
    # blob count says one more blob than there is
    head = _HEAD.size + 2 + SUBJECT_LEN
    count_bumped = body[:head] + bytes([body[head] + 1]) + body[head + 1 :]
    with pytest.raises(SerializationError, match="truncated blob header"):
        Envelope.unpack(reseal(count_bumped), Kind.DECRYPTION_SHARE)


@pytest.mark.parametrize("value", ["PHFL", None, 42, [1, 2]])
def test_unpack_refuses_non_bytes(value):
    with pytest.raises(SerializationError, match="expected bytes"):
        Envelope.unpack(value, Kind.CIPHERTEXT)


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(list(Kind)),
    n_parties=st.integers(0, 64),
    tail=st.binary(max_size=200),
)
def test_resealed_garbage_only_ever_raises_serialization_error(kind, n_parties, tail):
    """Bytes with a valid checksum but arbitrary content after the header: the envelope
    parses them or raises SerializationError, never anything else. The header's party
    count stays small enough for its bitmask to fit in the body here; the case where it
    does not is test_party_count_larger_than_the_body_raises_serialization_error."""
    body = _HEAD.pack(MAGIC, VERSION, int(kind), FP, n_parties) + tail
    if len(tail) < (n_parties + 7) // 8 + SUBJECT_LEN + 1:
        tail = tail.ljust((n_parties + 7) // 8 + SUBJECT_LEN + 1, b"\0")
        body = _HEAD.pack(MAGIC, VERSION, int(kind), FP, n_parties) + tail
    try:
        env = Envelope.unpack(reseal(body), kind, FP)
    except SerializationError:
        return
    assert env.pack() == reseal(body)


def test_party_count_larger_than_the_body_raises_serialization_error():
    body = _HEAD.pack(MAGIC, VERSION, int(Kind.DECRYPTION_SHARE), FP, 65535) + bytes(40)
    with pytest.raises(SerializationError):
        Envelope.unpack(reseal(body), Kind.DECRYPTION_SHARE, FP)


def test_errors_from_unpack_are_phe_fl_errors():
    for bad in (b"", b"\x00" * 100, sample().pack()[:-1]):
        with pytest.raises(PheFlError):
            Envelope.unpack(bad, Kind.CIPHERTEXT)


@given(st.lists(st.integers(-(2**31), 2**31 - 1), max_size=50).map(tuple))
def test_rotation_index_list_round_trips(indices):
    assert decode_indices(encode_indices(indices)) == indices


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "malformed"),
        (b"\x00", "malformed"),
        (b"\x00\x02\x00\x00\x00\x01", "malformed"),
        (encode_indices((1, 2)) + b"\x00", "trailing"),
    ],
    ids=["empty", "half-count", "fewer-values-than-count", "trailing-byte"],
)
def test_malformed_rotation_index_list_is_refused(data, match):
    with pytest.raises(SerializationError, match=match):
        decode_indices(data)
