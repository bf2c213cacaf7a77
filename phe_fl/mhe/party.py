"""A data provider's side of every protocol: it holds one secret share and answers share
requests, caching each answer so that a retried request gets the same bytes back.

Regenerating a share for the same ciphertext with fresh noise would let a receiver
average the noise away; the cache is what enforces "cache and resend". It keeps each
share's bytes, which is what a retry gets back (loaded again only then), for the most
recent ``cache_size`` shares and no more than ``cache_bytes`` of them, the newest always
(retries come within seconds; a long training job draws thousands of refresh shares, a
prediction one key-switch share per query ciphertext, and a rotation-key round a share of
100 MB at 2^15, which would otherwise pile up). Shares whose every request carries a
fresh CRP from the lead (key generation, refresh) are asked again only by a retry of the
same request, which the node's state store answers first: they are kept under a smaller
``retry_cache_bytes`` (at 2^15 a training iteration draws 240 MB of refresh shares a node).
Decryption and key-switch shares may be asked again by a later job (a querier decrypting
a model twice). It remembers the digest of every request
it ever answered: a request whose share has left the cache is refused, never answered
again with fresh noise. (A node also keeps every answer it sent in its state store, which
answers a parent's retry before the party is asked.)
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

from phe_fl.errors import ProtocolError
from phe_fl.mhe._wire import digest
from phe_fl.mhe.context import Ciphertext, Context, ciphertext_bytes
from phe_fl.mhe.keys import QuerierPublicKey, SecretShare
from phe_fl.mhe.protocols._share import Protocol, Share
from phe_fl.mhe.protocols.decryption import DecryptionShare, ThresholdDecrypt, flooded_partial
from phe_fl.mhe.protocols.key_switch import KeySwitchShare, QueryKeySwitch
from phe_fl.mhe.protocols.refresh import Refresh, RefreshCRP, RefreshShare, refresh_subject
from phe_fl.mhe.protocols.relin_key import RelinKeyGen, RelinRound1Share, RelinRound2Share
from phe_fl.mhe.protocols.rotation_keys import RotationKeyGen, RotationKeysShare

__all__ = ["Party"]

T = TypeVar("T")
S = TypeVar("S", bound=Share)


class Party:
    """One data provider's protocol endpoint. Holds exactly one :class:`SecretShare`."""

    def __init__(
        self,
        secret: SecretShare,
        *,
        cache_size: int = 256,
        cache_bytes: int = 512 << 20,
        retry_cache_bytes: int = 32 << 20,
    ) -> None:
        self.ctx: Context = secret.ctx
        self._secret = secret
        self._kept = _Kept(cache_size, cache_bytes)
        self._retried = _Kept(cache_size, retry_cache_bytes)  # shares asked ``retried_only``
        self._partial_bytes = ciphertext_bytes(secret.ctx.params)  # a partial's at most
        self._answered: set[tuple[str, bytes]] = set()
        self._pending: dict[tuple[str, bytes], threading.Event] = {}
        self._lock = threading.Lock()

    @property
    def index(self) -> int:
        return self._secret.index

    @property
    def n_parties(self) -> int:
        return self._secret.n_parties

    def _cached(
        self,
        key: tuple[str, bytes],
        make: Callable[[], T],
        keep: Callable[[T], tuple[Any, int]],
        restore: Callable[[Any], T],
        *,
        retried_only: bool = False,
    ) -> T:
        """The share for ``key``, drawn once; threads may ask for different keys at once
        (a node computes a FedAvg round's shares in parallel). ``keep`` says what the
        cache holds of it and how many bytes that is, ``restore`` gives it back.
        ``retried_only``: each request carries a fresh CRP from the lead, so only a retry
        asks again (kept under ``retry_cache_bytes``)."""
        cache = self._retried if retried_only else self._kept
        while True:
            with self._lock:
                hit = cache.get(key)
                if hit is not None:
                    break
                waiting = self._pending.get(key)
                if waiting is None:
                    if key in self._answered:
                        raise ProtocolError(
                            f"party {self.index}: its {key[0]} share for this request was sent "
                            f"long ago and is no longer cached; it is not drawn again with "
                            f"fresh noise (a retry must come within the last "
                            f"{cache.size} requests and {cache.nbytes >> 20} MiB of such "
                            f"shares)"
                        )
                    self._answered.add(key)  # claimed: another thread asking waits for it
                    pending = self._pending[key] = threading.Event()
                    break
            waiting.wait()  # another thread is drawing it: take that one
        if hit is not None:
            return restore(hit[0])
        try:
            share = make()
            kept = keep(share)
        except BaseException:
            with self._lock:
                self._answered.discard(key)
                del self._pending[key]
            pending.set()
            raise
        with self._lock:
            cache.put(key, kept)
            del self._pending[key]
        pending.set()
        return share

    def _share(
        self,
        key: tuple[str, bytes],
        proto: Protocol[S],
        make: Callable[[], S],
        *,
        retried_only: bool = False,
    ) -> S:
        """A share, kept as the bytes a retry is answered with (loaded again only then)."""
        return self._cached(key, make, _as_bytes, proto.share_from_bytes, retried_only=retried_only)

    # key generation: every request carries a fresh CRP -----------------------------------
    def relin_round1(self, gen: RelinKeyGen, crp: RelinRound1Share) -> RelinRound1Share:
        return self._share(
            ("relin1", crp.subject),
            gen,
            lambda: gen.gen_share(self._secret, crp),
            retried_only=True,
        )

    def relin_round2(self, gen: RelinKeyGen, round1: RelinRound1Share) -> RelinRound2Share:
        return self._share(
            ("relin2", round1.subject),
            gen.round2,
            lambda: gen.gen_round2_share(self._secret, round1),
            retried_only=True,
        )

    def relin_crp(self, gen: RelinKeyGen) -> RelinRound1Share:
        key = ("relin-crp", gen.tag.encode())
        return self._share(key, gen, lambda: gen.gen_crp(self._secret), retried_only=True)

    def rotation_crp(self, gen: RotationKeyGen) -> RotationKeysShare:
        key = ("rot-crp", repr((gen.tag, gen.indices)).encode())
        return self._share(key, gen, lambda: gen.gen_crp(self._secret), retried_only=True)

    def rotation_keys(self, gen: RotationKeyGen, crp: RotationKeysShare) -> RotationKeysShare:
        return self._share(
            ("rot", crp.subject),
            gen,
            lambda: gen.gen_share(self._secret, crp),
            retried_only=True,
        )

    # per-ciphertext protocols ------------------------------------------------------------
    def _partial(self, ct: Ciphertext) -> Any:
        """This party's one flooded partial decryption of ``ct``'s content, kept as it is:
        a partial loaded from bytes serializes differently, and the shares made from it
        must not look like fresh ones."""
        return self._cached(
            ("partial", ct.content_digest),
            lambda: flooded_partial(self._secret, ct),
            lambda raw: (raw, self._partial_bytes),
            lambda raw: raw,
        )

    def decryption_share(self, ct: Ciphertext) -> DecryptionShare:
        proto = ThresholdDecrypt(self.ctx)
        return self._share(
            ("dec", ct.digest), proto, lambda: proto.gen_share(self._secret, ct, self._partial(ct))
        )

    def refresh_share(self, prepared: Ciphertext, crp: RefreshCRP) -> RefreshShare:
        proto = Refresh(self.ctx)
        return self._share(
            ("refresh", refresh_subject(prepared, crp)),
            proto,
            lambda: proto.gen_share(self._secret, prepared, crp),
            retried_only=True,  # the root draws a CRP for every refresh
        )

    def key_switch_share(self, ct: Ciphertext, querier: QuerierPublicKey) -> KeySwitchShare:
        proto = QueryKeySwitch(self.ctx, querier)
        return self._share(
            ("keyswitch", digest(ct.digest + querier.key_tag.encode())),
            proto,
            lambda: proto.gen_share(self._secret, ct, self._partial(ct)),
        )

    def __repr__(self) -> str:
        return f"Party(index={self.index}/{self.n_parties}, params={self.ctx.params.name!r})"


class _Kept:
    """Shares kept for retries, newest last: at most ``size`` of them and ``nbytes`` in
    all, the newest always (callers hold the party's lock)."""

    def __init__(self, size: int, nbytes: int) -> None:
        self.size = max(1, size)
        self.nbytes = nbytes
        self._items: OrderedDict[tuple[str, bytes], tuple[Any, int]] = OrderedDict()
        self._held = 0

    def get(self, key: tuple[str, bytes]) -> tuple[Any, int] | None:
        hit = self._items.get(key)
        if hit is not None:
            self._items.move_to_end(key)
        return hit

    def put(self, key: tuple[str, bytes], kept: tuple[Any, int]) -> None:
        self._items[key] = kept
        self._held += kept[1]
        while len(self._items) > 1 and (len(self._items) > self.size or self._held > self.nbytes):
            self._held -= self._items.popitem(last=False)[1][1]


def _as_bytes(share: Share) -> tuple[bytes, int]:
    data = share.to_bytes()
    return data, len(data)
