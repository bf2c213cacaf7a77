"""``phe-fl demo``: N data providers, each in its own OS process with its own secret-key
share, compute collective feature statistics that no single party can decrypt.

What it shows, end to end and for real (no simulation of any party):
1. collective key generation (public, relinearization and rotation keys);
2. each provider encrypts its local per-feature sums under the joint key; the ciphertexts
   are added along a tree (COMBINE) and the encrypted global mean and variance computed;
3. a collective refresh (interactive bootstrapping) on the encrypted variance;
4. the result is key-switched to a querier, who alone decrypts it; it is compared with
   plaintext numpy on the pooled data;
5. threshold decryption refuses to finish without every provider's share.

The coordinator here holds no secret share; the gRPC federation replaces the pipes.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

from phe_fl.errors import PartySetError, PheFlError
from phe_fl.mhe import (
    Context,
    JointPublicKey,
    Party,
    PublicKeyGen,
    QuerierKeyPair,
    QueryKeySwitch,
    Refresh,
    RefreshCRP,
    RelinKey,
    RelinKeyGen,
    RotationKeyGen,
    RotationKeys,
    ThresholdDecrypt,
    get_parameter_set,
)
from phe_fl.mhe.context import FloatArray
from phe_fl.mhe.simulation import tree_aggregate

__all__ = ["run_demo", "DemoResult"]


# -- the data-provider process -----------------------------------------------------------
def _provider_main(conn: Connection, params_name: str, index: int, shard: FloatArray) -> None:
    """One institution: owns one secret share and its data; answers share requests."""
    ctx = Context(get_parameter_set(params_name))
    party: Party | None = None
    joint: JointPublicKey | None = None
    pkg = PublicKeyGen(ctx)
    handlers: dict[str, Callable[..., Any]] = {}

    def keygen(n: int, crp: bytes | None) -> bytes:
        nonlocal party
        if crp is None:
            secret, share = pkg.gen_crp(n)
        else:
            secret, share = pkg.gen_share(index, pkg.share_from_bytes(crp))
        party = Party(secret)
        return share.to_bytes()

    def set_joint(data: bytes) -> None:
        nonlocal joint
        joint = JointPublicKey.from_bytes(ctx, data)

    def relin(step: str, data: bytes | None) -> bytes:
        assert party is not None and joint is not None
        gen = RelinKeyGen(joint)
        if step == "crp":
            return party.relin_crp(gen).to_bytes()
        share = gen.share_from_bytes(data)  # type: ignore[arg-type]
        out = party.relin_round1(gen, share) if step == "1" else party.relin_round2(gen, share)
        return out.to_bytes()

    def rotations(indices: list[int], crp: bytes | None) -> bytes:
        assert party is not None and joint is not None
        gen = RotationKeyGen(joint, indices)
        if crp is None:
            return party.rotation_crp(gen).to_bytes()
        return party.rotation_keys(gen, gen.share_from_bytes(crp)).to_bytes()

    def local_stats() -> bytes:
        """Encrypt [sum x_j | sum x_j^2 | count] laid out in three slot blocks."""
        assert joint is not None
        d = shard.shape[1]
        vec = np.zeros(3 * d)
        vec[:d] = shard.sum(axis=0)
        vec[d : 2 * d] = (shard**2).sum(axis=0)
        vec[2 * d :] = len(shard)
        return ctx.encrypt(vec, joint).to_bytes()

    def decrypt(ct: bytes) -> bytes:
        assert party is not None
        return party.decryption_share(ctx.ciphertext_from_bytes(ct)).to_bytes()

    def refresh(prepared: bytes, crp: bytes) -> bytes:
        assert party is not None
        return party.refresh_share(
            ctx.ciphertext_from_bytes(prepared), RefreshCRP.from_bytes(ctx, crp)
        ).to_bytes()

    def key_switch(ct: bytes, querier: bytes) -> bytes:
        from phe_fl.mhe import QuerierPublicKey

        assert party is not None
        qpk = QuerierPublicKey.from_bytes(ctx, querier)
        return party.key_switch_share(ctx.ciphertext_from_bytes(ct), qpk).to_bytes()

    handlers.update(
        keygen=keygen,
        set_joint=set_joint,
        relin=relin,
        rotations=rotations,
        local_stats=local_stats,
        decrypt=decrypt,
        refresh=refresh,
        key_switch=key_switch,
    )
    while True:
        try:
            request = conn.recv()
        except EOFError:
            return
        if request is None:
            return
        name, args = request
        try:
            conn.send(("ok", handlers[name](*args)))
        except PheFlError as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


@dataclass
class _Provider:
    index: int
    process: mp.process.BaseProcess
    conn: Connection
    sent: int = 0
    received: int = 0

    def call(self, name: str, *args: Any) -> Any:
        self.conn.send((name, args))
        self.received += sum(len(a) for a in args if isinstance(a, bytes))
        status, value = self.conn.recv()
        if status != "ok":
            raise RuntimeError(f"provider {self.index}: {value}")
        if isinstance(value, bytes):
            self.sent += len(value)
        return value


@dataclass
class DemoResult:
    max_error_mean: float
    max_error_var: float
    phase_seconds: dict[str, float]
    bytes_sent: list[int]
    refused_without_all: bool


def _load_dataset() -> tuple[FloatArray, str]:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:  # pragma: no cover - dev extra installs it
        raise PheFlError("the demo needs scikit-learn (pip install 'phe-fl[ml]')") from exc
    data = load_breast_cancer()
    return np.asarray(data.data, dtype=np.float64), "Breast Cancer Wisconsin (569 x 30)"


def run_demo(
    n_providers: int = 5, params_name: str = "n14-depth5-128", log: Callable[[str], None] = print
) -> DemoResult:
    params = get_parameter_set(params_name)
    if n_providers < 2:
        raise PheFlError("the demo needs at least 2 data providers")
    X, name = _load_dataset()
    X = X / np.abs(X).max(axis=0)  # public per-feature bounds keep sums in CKKS range
    shards = np.array_split(X, n_providers)
    d = X.shape[1]
    log(f"phe-fl demo: {n_providers} data providers, {name}, parameter set {params.name}")
    if not params.secure:
        log("WARNING: this parameter set is insecure (tests only)")

    ctx_mp = mp.get_context("spawn")
    providers: list[_Provider] = []
    phases: dict[str, float] = {}
    try:
        for i, shard in enumerate(shards):
            parent, child = ctx_mp.Pipe()
            proc = ctx_mp.Process(
                target=_provider_main, args=(child, params.name, i, shard), daemon=True
            )
            proc.start()
            providers.append(_Provider(i, proc, parent))
        ctx = Context(params)

        t = time.perf_counter()
        pkg = PublicKeyGen(ctx)
        crp = providers[0].call("keygen", n_providers, None)
        shares = [pkg.share_from_bytes(crp)] + [
            pkg.share_from_bytes(p.call("keygen", n_providers, crp)) for p in providers[1:]
        ]
        joint = pkg.finalize(tree_aggregate(pkg, shares))
        for p in providers:
            p.call("set_joint", joint.to_bytes())
        relin = RelinKeyGen(joint)
        r_crp = providers[0].call("relin", "crp", None)
        round1 = tree_aggregate(
            relin, [relin.share_from_bytes(p.call("relin", "1", r_crp)) for p in providers]
        )
        round2 = [
            relin.round2_share_from_bytes(p.call("relin", "2", round1.to_bytes()))
            for p in providers
        ]
        relin_key: RelinKey = relin.finalize(tree_aggregate(relin.round2, round2))
        relin_key.install()
        steps = [d, 2 * d]
        rot = RotationKeyGen(joint, steps)
        rot_crp = providers[0].call("rotations", steps, None)
        rot_shares = [rot.share_from_bytes(p.call("rotations", steps, rot_crp)) for p in providers]
        rotation_keys: RotationKeys = rot.finalize(tree_aggregate(rot, rot_shares))
        rotation_keys.install()
        phases["key generation"] = time.perf_counter() - t
        log(
            f"  collective keys ready (public, relinearization, rotations {steps}) "
            f"in {phases['key generation']:.1f} s; no process holds more than one secret share"
        )

        t = time.perf_counter()
        local = [ctx.ciphertext_from_bytes(p.call("local_stats")) for p in providers]
        total = local[0]
        for ct in local[1:]:
            total = ctx.add(total, ct)  # COMBINE, as inner tree nodes would
        count = ctx.rotate(total, 2 * d)  # bring the count block under the sums
        inv_n = 1.0 / len(X)  # the pooled count is public in this demo; checked below
        mean = ctx.rescale(ctx.mul_plain(total, np.full(3 * d, inv_n)))
        sq = ctx.rescale(ctx.mul(mean, mean))
        ex2 = ctx.rotate(mean, d)
        var = ctx.sub(ex2, sq)
        phases["encrypted statistics"] = time.perf_counter() - t
        log(
            f"  encrypted global mean and variance of {d} features in "
            f"{phases['encrypted statistics']:.2f} s (levels left {var.levels_left})"
        )

        t = time.perf_counter()
        proto = Refresh(ctx)
        prepared = proto.prepare(var)
        r_crp2 = proto.gen_crp(joint)
        r_shares = [
            proto.share_from_bytes(p.call("refresh", prepared.to_bytes(), r_crp2.to_bytes()))
            for p in providers
        ]
        var = proto.finalize(tree_aggregate(proto, r_shares), prepared, r_crp2, joint)
        phases["collective refresh"] = time.perf_counter() - t
        log(
            f"  collective refresh: levels left {var.levels_left} "
            f"in {phases['collective refresh']:.2f} s"
        )

        t = time.perf_counter()
        querier = QuerierKeyPair.generate(ctx)
        results = {}
        for label, ct in (("mean", mean), ("variance", var), ("count", count)):
            ks = QueryKeySwitch(ctx, querier.public_key)
            ks_shares = [
                ks.share_from_bytes(
                    p.call("key_switch", ct.to_bytes(), querier.public_key.to_bytes())
                )
                for p in providers
            ]
            results[label] = querier.decrypt(
                ks.finalize(tree_aggregate(ks, ks_shares), ct), length=d
            )
        phases["key switch to querier"] = time.perf_counter() - t
        err_mean = float(np.abs(results["mean"] - X.mean(axis=0)).max())
        err_var = float(np.abs(results["variance"] - X.var(axis=0)).max())
        log(
            f"  querier decrypted: pooled count {results['count'][0]:.0f} (true {len(X)}), "
            f"max |mean error| {err_mean:.1e}, max |variance error| {err_var:.1e}"
        )

        dec = ThresholdDecrypt(ctx)
        partial = tree_aggregate(
            dec, [dec.share_from_bytes(p.call("decrypt", mean.to_bytes())) for p in providers[:-1]]
        )
        try:
            dec.finalize(partial, mean)
            refused = False
        except PartySetError as exc:
            refused = True
            log(f"  threshold decryption without provider {n_providers - 1}: refused ({exc})")
        log("  per-provider bytes sent: " + ", ".join(f"{p.sent / 1e6:.1f} MB" for p in providers))
        for phase, secs in phases.items():
            log(f"  {phase:<24} {secs:7.2f} s")
        return DemoResult(err_mean, err_var, phases, [p.sent for p in providers], refused)
    finally:
        for p in providers:
            try:
                p.conn.send(None)
            except (BrokenPipeError, OSError):
                pass
        for p in providers:
            p.process.join(timeout=5)
            if p.process.is_alive():
                p.process.terminate()


def main(argv: Sequence[str] | None = None) -> int:  # pragma: no cover - thin wrapper
    run_demo()
    return 0
