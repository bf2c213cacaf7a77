"""Updates as ciphertexts: chunks of two reals per complex slot at the last level, in
compact form, summed and threshold-decrypted within the flooding precision; what a node
refuses to encrypt; the [fedavg] table of a node config; shares drawn once when threads
race for them."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest

from phe_fl.errors import (
    AppError,
    ConfigError,
    KeyMismatchError,
    ParameterError,
    PartySetError,
    ProtocolError,
)
from phe_fl.fedavg import FedAvgSpec
from phe_fl.fedavg.packing import (
    CHUNKS_PER_STEP,
    Layout,
    TensorSpec,
    add_shares,
    add_updates,
    check_update,
    chunk_size,
    encrypt_chunks,
    fuse_chunk,
    masked,
    n_chunks,
    release_decimals,
    share_chunk,
)
from phe_fl.federation.config import load_node_config
from phe_fl.federation.local import write_configs
from phe_fl.mhe import INSECURE_TEST, N15_128, compact
from phe_fl.mhe.simulation import LocalFederation


@pytest.fixture(scope="module")
def fed() -> LocalFederation:
    return LocalFederation.setup(INSECURE_TEST, 3)


def test_a_chunk_holds_two_reals_per_slot() -> None:
    assert chunk_size(N15_128) == 2 * N15_128.slots == 32768
    assert n_chunks(1, N15_128) == 1 and n_chunks(32769, N15_128) == 2
    assert n_chunks(10_000_000, N15_128) == 306


def test_updates_sum_encrypted_and_only_the_sum_decrypts(fed: LocalFederation) -> None:
    ctx, rng = fed.ctx, np.random.default_rng(1)
    size = 3 * chunk_size(INSECURE_TEST) - 17  # three chunks, the last one short
    updates = [rng.normal(0, 0.05, size).astype(np.float32) for _ in range(3)]
    data = [encrypt_chunks(ctx, fed.joint_key, u, 0, 3, n_parties=3, threads=2) for u in updates]
    expanded = [ctx.ciphertext_from_bytes(compact.expand(ctx, x)) for x in data[0]]
    assert all(ct.levels_left == 0 for ct in expanded)  # the last level
    float32 = 4 * chunk_size(INSECURE_TEST)
    assert len(data[0][0]) < 2.75 * float32  # OpenFHE writes 4.1x
    # summed on their quotients, as inner nodes do: the sum of what each stands for
    total = [add_updates(ctx, add_updates(ctx, a, b), c) for a, b, c in zip(*data, strict=True)]
    for j, t in enumerate(total):
        a, b, c = (ctx.ciphertext_from_bytes(compact.expand(ctx, d[j])) for d in data)
        by_openfhe = ctx.add(ctx.add(a, b), c)  # EvalAdd of what each stands for
        assert ctx.ciphertext_from_bytes(compact.expand(ctx, t)).content_digest == (
            by_openfhe.content_digest
        )
    decimals = release_decimals(INSECURE_TEST, 3)
    got = []
    for t in total:
        masked_t = masked(ctx, t)  # what the parties get: no c0
        shares = [share_chunk(ctx, p, masked_t) for p in fed.parties]
        assert len(shares[0]) < 1.3 * float32  # OpenFHE writes 2.1x
        share = add_shares(ctx, add_shares(ctx, shares[0], shares[1]), shares[2])
        got.append(fuse_chunk(ctx, share, t, decimals=decimals))
    flat = np.concatenate(got)[:size]
    assert np.max(np.abs(flat - sum(u.astype(np.float64) for u in updates))) < 2e-5
    first = masked(ctx, total[0])
    partial = add_shares(
        ctx, share_chunk(ctx, fed.parties[0], first), share_chunk(ctx, fed.parties[1], first)
    )
    with pytest.raises(Exception, match="lacks parties"):
        fuse_chunk(ctx, partial, total[0], decimals=decimals)
    whole = add_shares(ctx, partial, share_chunk(ctx, fed.parties[2], first))
    with pytest.raises(Exception, match="not of this ciphertext's masked form"):
        fuse_chunk(ctx, whole, total[1], decimals=decimals)
    with pytest.raises(PartySetError, match="contributed twice"):
        add_shares(ctx, whole, share_chunk(ctx, fed.parties[2], first))
    other = share_chunk(ctx, fed.parties[2], masked(ctx, total[1]))
    with pytest.raises(KeyMismatchError, match="different protocol instances"):
        add_shares(ctx, partial, other)


def test_chunk_ranges_are_checked(fed: LocalFederation) -> None:
    update = np.zeros(10, dtype=np.float32)
    for first, count in ((1, 1), (0, 2), (0, CHUNKS_PER_STEP + 1), (-1, 1)):
        with pytest.raises(ProtocolError, match="chunks"):
            encrypt_chunks(fed.ctx, fed.joint_key, update, first, count, n_parties=3)


def test_an_update_the_last_level_cannot_carry_is_refused_naming_its_tensor() -> None:
    layout = Layout((TensorSpec("fc.weight", (2, 3)), TensorSpec("fc.bias", (2,))))
    fine = np.zeros(8, dtype=np.float32)
    check_update(fine, layout, "node n1")
    bad = fine.copy()
    bad[7] = np.inf
    with pytest.raises(AppError, match="node n1: the update of tensor 'fc.bias' is not finite"):
        check_update(bad, layout, "node n1")
    bad[7] = 1e4
    with pytest.raises(AppError, match="tensor 'fc.bias' reaches 1e\\+04"):
        check_update(bad, layout, "node n1")
    with pytest.raises(ParameterError, match="9 values for a model of 8"):
        layout.split(np.zeros(9, dtype=np.float32))
    assert Layout(layout.tensors[::-1]).digest() != layout.digest()


def test_release_decimals_follow_the_flooding() -> None:
    assert release_decimals(N15_128, 8) == 5
    assert release_decimals(INSECURE_TEST, 3) >= INSECURE_TEST.release_decimals


@pytest.mark.parametrize(
    ("field", "value"),
    [("app", ""), ("app", "a b"), ("rounds", 0), ("epochs", 0), ("learning_rate", 0.0)],
)
def test_a_bad_job_is_refused_naming_the_field(field: str, value: object) -> None:
    kwargs = {"app": "digits", field: value}
    with pytest.raises(ParameterError, match=f"^{field}: "):
        FedAvgSpec(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('apps = { digits = "no-colon" }', "apps.digits must be 'module:attribute'"),
        ('apps = { "bad name" = "m:f" }', "app name 'bad name'"),
        ("threads = -1", "threads must be >= 0"),
        ("app = 1", "unknown key 'app' \\(did you mean 'apps'\\?\\)"),
    ],
)
def test_the_fedavg_table_is_checked(tmp_path: Path, table: str, message: str) -> None:
    configs, _ = write_configs(
        tmp_path, 1, params=INSECURE_TEST.name, tables=[f"[fedavg]\n{table}"]
    )
    with pytest.raises(ConfigError, match=message):
        load_node_config(configs[0])


def test_the_fedavg_table_is_read(tmp_path: Path) -> None:
    table = '[fedavg]\napps = { digits = "phe_fl.fedavg.examples:digits_mlp" }\n'
    table += "options = { shard = 1, shards = 2 }\nthreads = 3\n"
    configs, _ = write_configs(tmp_path, 1, params=INSECURE_TEST.name, tables=[table])
    config = load_node_config(configs[0])
    assert config.fedavg.apps == {"digits": "phe_fl.fedavg.examples:digits_mlp"}
    assert config.fedavg.options == {"shard": 1, "shards": 2} and config.fedavg.threads == 3
    assert config.policy.release_aggregates and config.policy.release_fedavg_model


def test_threads_racing_for_one_share_get_the_one_drawn(fed: LocalFederation) -> None:
    ct = fed.ctx.ciphertext_from_bytes(fed.encrypt([1.0, 2.0]).to_bytes())
    party = fed.parties[1]
    got: list[bytes] = []
    threads = [
        threading.Thread(target=lambda: got.append(party.decryption_share(ct).to_bytes()))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 4 and len(set(got)) == 1
