"""The byte envelope every share, key and ciphertext travels in.

Layout (big-endian)::

    b"PHFL" | version u8 | kind u8 | fingerprint 8B | n_parties u16 | parties bitmask
    | subject 32B | blob count u8 | (blob length u32 | blob)* | CRC-32 of all before it

The checksum catches truncation and accidental corruption before OpenFHE ever parses the
payload (OpenFHE's deserializers can crash the process on garbage); CRC-32 because
payloads reach hundreds of MB and it runs at several GB/s. Authenticity is the
transport's job (mutual TLS), not the envelope's.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum

from phe_fl.errors import KeyMismatchError, SerializationError

MAGIC = b"PHFL"
VERSION = 1
SUBJECT_LEN = 32
_CHECKSUM = struct.Struct(">I")
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
    SECRET_SHARE = 32
    QUERIER_SECRET_KEY = 33


def digest(data: bytes) -> bytes:
    """The 32-byte content digest used to bind shares to what they are about."""
    return hashlib.sha256(data).digest()


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
        crc = 0
        for part in parts:
            crc = zlib.crc32(part, crc)
        parts.append(_CHECKSUM.pack(crc))
        return b"".join(parts)

    @classmethod
    def unpack(cls, data: bytes, expect: Kind, fingerprint: bytes | None = None) -> Envelope:
        """Parse and check ``data``; raise :class:`SerializationError` naming the problem."""
        what = expect.name.lower().replace("_", " ")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise SerializationError(f"{what}: expected bytes, got {type(data).__name__}")
        if len(data) < _HEAD.size + SUBJECT_LEN + 1 + _CHECKSUM.size:
            raise SerializationError(
                f"{what}: {len(data)} bytes is too short to be a phe-fl object"
            )
        body = memoryview(data)[: -_CHECKSUM.size]  # a view: payloads reach hundreds of MB
        (checksum,) = _CHECKSUM.unpack_from(data, len(data) - _CHECKSUM.size)
        magic, version, kind, fp, n_parties = _HEAD.unpack_from(body)
        if magic != MAGIC:
            raise SerializationError(f"{what}: not a phe-fl object (bad magic)")
        if version != VERSION:
            raise SerializationError(f"{what}: envelope version {version}, expected {VERSION}")
        if zlib.crc32(body) != checksum:
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
            blobs.append(body[off : off + size].tobytes())
            off += size
        if off != len(body):
            raise SerializationError(f"{what}: {len(body) - off} trailing bytes")
        return cls(got, bytes(fp), n_parties, parties, subject, tuple(blobs))
