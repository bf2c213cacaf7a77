"""What every multiparty protocol shares: typed shares that serialize themselves, and
aggregation that is associative and commutative so the tree shape never matters.

Each protocol speaks the same verbs (after Lattigo's ``multiparty`` package):
``gen_crp`` (the lead samples the common random element), ``gen_share`` (a party, from its
own secret share), ``aggregate`` (two shares into one, at any inner node), ``finalize``
(at the root, once every party has contributed exactly once).
"""

from __future__ import annotations

from typing import Any, ClassVar, Generic, TypeVar

from phe_fl.errors import KeyMismatchError, PartySetError, SerializationError
from phe_fl.mhe import _backend
from phe_fl.mhe._wire import Envelope, Kind
from phe_fl.mhe.context import Context

__all__ = ["Share", "Protocol"]


class Share:
    """One party's (or an aggregated group's) contribution to one protocol instance.

    ``subject`` binds the share to what it is about (a ciphertext digest, a common random
    element): shares about different subjects refuse to aggregate.
    """

    KIND: ClassVar[Kind]
    LOADERS: ClassVar[tuple[str, ...]]  # OpenFHE loader per payload blob

    def __init__(
        self,
        ctx: Context,
        raw: tuple[Any, ...],
        n_parties: int,
        parties: frozenset[int],
        subject: bytes,
        *,
        data: bytes | None = None,
    ) -> None:
        self.ctx = ctx
        self.raw = raw
        self.n_parties = n_parties
        self.parties = parties
        self.subject = subject
        self._bytes = data

    @property
    def complete(self) -> bool:
        return len(self.parties) == self.n_parties

    def to_bytes(self) -> bytes:
        if self._bytes is None:
            blobs = tuple(_backend.dump(obj) for obj in self.raw)
            self._bytes = Envelope(
                self.KIND,
                self.ctx.params.fingerprint,
                self.n_parties,
                self.parties,
                self.subject,
                blobs,
            ).pack()
        return self._bytes

    @classmethod
    def from_bytes(cls, ctx: Context, data: bytes) -> Share:
        env = Envelope.unpack(data, cls.KIND, ctx.params.fingerprint)
        if len(env.blobs) != len(cls.LOADERS):
            raise SerializationError(
                f"{cls.__name__}: expected {len(cls.LOADERS)} payloads, got {len(env.blobs)}"
            )
        if not env.parties:
            raise SerializationError(f"{cls.__name__}: names no contributing party")
        pairs = zip(cls.LOADERS, env.blobs, strict=True)
        raw = tuple(_backend.load(kind, blob, ctx.params) for kind, blob in pairs)
        return cls(ctx, raw, env.n_parties, env.parties, env.subject, data=bytes(data))

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(parties={sorted(self.parties)}/{self.n_parties}, "
            f"subject={self.subject[:6].hex()})"
        )


S = TypeVar("S", bound=Share)


class Protocol(Generic[S]):
    """Base of the protocols: party-set bookkeeping and the checks around aggregation."""

    SHARE: type[S]

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.cc = ctx.cc

    def share_from_bytes(self, data: bytes) -> S:
        return self.SHARE.from_bytes(self.ctx, data)  # type: ignore[return-value]

    def _check(self, share: S) -> S:
        if not isinstance(share, self.SHARE):
            raise KeyMismatchError(f"expected a {self.SHARE.__name__}, got {type(share).__name__}")
        if share.ctx.params.fingerprint != self.ctx.params.fingerprint:
            raise KeyMismatchError(f"{type(share).__name__} from another parameter set")
        return share

    def aggregate(self, a: S, b: S) -> S:
        """Combine two shares of the same instance from disjoint sets of parties."""
        self._check(a)
        self._check(b)
        self._check_pair(a.n_parties, b.n_parties, a.subject, b.subject, a.parties, b.parties)
        raw = self._add(a.raw, b.raw)
        return self.SHARE(self.ctx, raw, a.n_parties, a.parties | b.parties, a.subject)

    def _check_pair(
        self,
        n_a: int,
        n_b: int,
        subject_a: bytes,
        subject_b: bytes,
        parties_a: frozenset[int],
        parties_b: frozenset[int],
    ) -> None:
        """Two shares may be added: the same party count and instance, no party twice."""
        if n_a != n_b:
            raise PartySetError(f"shares disagree on the party count ({n_a} vs {n_b})")
        if subject_a != subject_b:
            raise KeyMismatchError(
                f"{self.SHARE.__name__}s belong to different protocol instances "
                "(another ciphertext, key or round)"
            )
        overlap = parties_a & parties_b
        if overlap:
            raise PartySetError(f"parties {sorted(overlap)} contributed twice")

    def aggregate_all(self, shares: list[S]) -> S:
        if not shares:
            raise PartySetError("no shares to aggregate")
        acc = shares[0]
        for s in shares[1:]:
            acc = self.aggregate(acc, s)
        return acc

    def _require_complete(self, share: S, subject: bytes | None = None) -> S:
        self._check(share)
        if subject is not None and share.subject != subject:
            raise KeyMismatchError(f"{self.SHARE.__name__} belongs to another protocol instance")
        if not share.complete:
            missing = sorted(set(range(share.n_parties)) - share.parties)
            raise PartySetError(
                f"{self.SHARE.__name__} lacks parties {missing} of {share.n_parties}; every "
                "party must contribute"
            )
        return share

    def _add(self, a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
        raise NotImplementedError
