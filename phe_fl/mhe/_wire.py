"""The byte envelope every share, key and ciphertext travels in.

Layout (big-endian)::

    b"PHFL" | version u8 | kind u8 | fingerprint 8B | n_parties u16 | parties bitmask
    | subject 32B | blob count u8 | (blob length u32 | blob)* | XXH3-128 of all before it

The checksum catches truncation and accidental corruption of any byte before OpenFHE ever
parses the payload (OpenFHE's deserializers can crash the process on garbage). XXH3-128
(``xxhash``) because payloads reach hundreds of MB: it runs at ~13 GB/s on one core where
``zlib.crc32`` ran at ~3 GB/s, and its 128 bits also make it a usable identifier of an
envelope's bytes (:func:`checksum_of`). It is not a MAC and not collision-resistant against
crafted input: authenticity is the transport's job (mutual TLS), not the envelope's.

Version 1 envelopes (CRC-32 checksum) are refused with a version error.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass
from enum import IntEnum

import xxhash

from phe_fl.errors import KeyMismatchError, SerializationError

MAGIC = b"PHFL"
VERSION = 2  # 1: CRC-32 checksum; 2: XXH3-128
SUBJECT_LEN = 32
CHECKSUM_LEN = 16
_HEAD = struct.Struct(">4sBB8sH")


class Kind(IntEnum):
    """What an envelope holds; a reader names the kind it expects."""

    PUBLIC_KEY_SHARE = 1
    RELIN_ROUND1_SHARE = 2
    RELIN_ROUND2_SHARE = 3
    ROTATION_KEYS_SHARE = 4
    DECRYPTION_SHARE = 5
    REFRESH_SHARE = 6
    KEY_SWITCH_SHARE = 7
    CIPHERTEXT = 16
    JOINT_PUBLIC_KEY = 17
    RELIN_KEY = 18
    ROTATION_KEYS = 19
    QUERIER_PUBLIC_KEY = 20
    REFRESH_CRP = 21
    COMPACT_CIPHERTEXT = 23  # rounded in coefficient form for the wire (mhe/compact.py)
    COMPACT_MASKED_CIPHERTEXT = 24
    COMPACT_DECRYPTION_SHARE = 8
    SECRET_SHARE = 32
    QUERIER_SECRET_KEY = 33


def digest(data: bytes) -> bytes:
    """The 32-byte content digest used to bind shares to what they are about."""
    return hashlib.sha256(data).digest()


def checksum_of(data: bytes) -> bytes:
    """The 16-byte XXH3-128 checksum that ends a packed envelope: computed once by
    :meth:`Envelope.pack` and verified by :meth:`Envelope.unpack`, so reading it costs
    nothing. It identifies the envelope's bytes against accidents (not against crafted
    collisions)."""
    return bytes(data[-CHECKSUM_LEN:])


@dataclass(frozen=True)
class Envelope:
    kind: Kind
    fingerprint: bytes
    n_parties: int = 0
    parties: frozenset[int] = frozenset()
    subject: bytes = bytes(SUBJECT_LEN)
    blobs: tuple[bytes, ...] = ()

    def pack(self) -> bytes:
        mask = 0
        for p in self.parties:
            mask |= 1 << p
        mask_bytes = mask.to_bytes((self.n_parties + 7) // 8, "little")
        parts = [
            _HEAD.pack(MAGIC, VERSION, int(self.kind), self.fingerprint, self.n_parties),
            mask_bytes,
            self.subject,
            struct.pack(">B", len(self.blobs)),
        ]
        for blob in self.blobs:
            parts.append(struct.pack(">I", len(blob)))
            parts.append(blob)
        # Hash the parts where they are (no copy), then join once: the one payload copy.
        h = xxhash.xxh3_128()
        for part in parts:
            h.update(part)
        parts.append(h.digest())
        return b"".join(parts)

    @staticmethod
    def kind_of(data: bytes) -> Kind:
        """The kind an envelope declares (checked again, with the rest, by :meth:`unpack`)."""
        if not isinstance(data, (bytes, bytearray, memoryview)) or len(data) < _HEAD.size:
            raise SerializationError("not a phe-fl object (too short)")
        magic, _, kind, _, _ = _HEAD.unpack_from(data)
        if magic != MAGIC:
            raise SerializationError("not a phe-fl object (bad magic)")
        try:
            return Kind(kind)
        except ValueError:
            raise SerializationError(f"unknown object kind {kind}") from None

    @classmethod
    def unpack(cls, data: bytes, expect: Kind, fingerprint: bytes | None = None) -> Envelope:
        """Parse and check ``data``; raise :class:`SerializationError` naming the problem."""
        what = expect.name.lower().replace("_", " ")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"{what}: expected bytes, got {type(data).__name__}")
        if len(data) < _HEAD.size + SUBJECT_LEN + 1 + CHECKSUM_LEN:
            raise SerializationError(
                f"{what}: {len(data)} bytes is too short to be a phe-fl object"
            )
        view = memoryview(data)  # views, no copies: payloads reach hundreds of MB
        body = view[:-CHECKSUM_LEN]
        magic, version, kind, fp, n_parties = _HEAD.unpack_from(body)
        if magic != MAGIC:
            raise SerializationError(f"{what}: not a phe-fl object (bad magic)")
        if version != VERSION:
            raise SerializationError(
                f"{what}: envelope version {version}, expected {VERSION}"
                + (" (written by an older phe-fl, CRC-32 checksum)" if version == 1 else "")
            )
        if xxhash.xxh3_128_digest(body) != view[-CHECKSUM_LEN:].tobytes():
            raise SerializationError(f"{what}: checksum mismatch (truncated or corrupted bytes)")
        try:
            got = Kind(kind)
        except ValueError:
            raise SerializationError(f"{what}: unknown object kind {kind}") from None
        if got != expect:
            raise SerializationError(
                f"expected a {what}, got a {got.name.lower().replace('_', ' ')}"
            )
        if fingerprint is not None and fp != fingerprint:
            raise KeyMismatchError(f"{what}: made with another parameter set")
        off = _HEAD.size
        mask_len = (n_parties + 7) // 8
        if off + mask_len + SUBJECT_LEN + 1 > len(body):
            raise SerializationError(f"{what}: truncated header ({n_parties} parties declared)")
        mask = int.from_bytes(body[off : off + mask_len].tobytes(), "little")
        off += mask_len
        if mask >> n_parties:
            raise SerializationError(f"{what}: party bitmask names parties beyond {n_parties}")
        parties = frozenset(i for i in range(n_parties) if mask >> i & 1)
        subject = body[off : off + SUBJECT_LEN].tobytes()
        off += SUBJECT_LEN
        (count,) = struct.unpack_from(">B", body, off)
        off += 1
        blobs = []
        for _ in range(count):
            if off + 4 > len(body):
                raise SerializationError(f"{what}: truncated blob header")
            (size,) = struct.unpack_from(">I", body, off)
            off += 4
            if off + size > len(body):
                raise SerializationError(f"{what}: truncated blob")
            # the one payload copy: OpenFHE's loaders accept only ``bytes`` (not a view)
            blobs.append(body[off : off + size].tobytes())
            off += size
        if off != len(body):
            raise SerializationError(f"{what}: {len(body) - off} trailing bytes")
        return cls(got, bytes(fp), n_parties, parties, subject, tuple(blobs))
