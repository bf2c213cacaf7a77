"""Mutual TLS for the federation: real gRPC servers on 127.0.0.1 with certificates from
:mod:`phe_fl.federation.certs`; no generated protobuf code (raw-bytes generic handlers)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from phe_fl.errors import ParameterError, PheFlError
from phe_fl.federation.certs import (
    FederationPaths,
    PeerIdentity,
    create_federation,
    issue_certificate,
    load_channel_credentials,
    load_server_credentials,
    peer_identity,
    require_role,
)

REPO = Path(__file__).resolve().parents[2]
SERVICE = "phe_fl.test.Echo"
TIMEOUT = 5


@pytest.fixture(scope="module")
def fed(tmp_path_factory: pytest.TempPathFactory) -> FederationPaths:
    return create_federation(tmp_path_factory.mktemp("fed"), ["0", "1", "hospital-a"])


@pytest.fixture(scope="module")
def foreign(tmp_path_factory: pytest.TempPathFactory) -> FederationPaths:
    """Another federation, same member names: only the CA differs."""
    return create_federation(tmp_path_factory.mktemp("foreign"), ["0", "1"])


@dataclass
class EchoServer:
    port: int
    reached: list[str] = field(default_factory=list)

    def call(self, method: str, creds: grpc.ChannelCredentials) -> bytes:
        with grpc.secure_channel(f"127.0.0.1:{self.port}", creds) as channel:
            rpc = channel.unary_unary(f"/{SERVICE}/{method}")
            return bytes(rpc(b"ping", timeout=TIMEOUT))


@pytest.fixture(scope="module")
def server(fed: FederationPaths) -> Iterator[EchoServer]:
    """A server with node 0's certificate: NodeOnly, QuerierOnly and Anyone methods that
    echo the caller's identity."""
    state = EchoServer(port=0)

    def handler(*roles: str) -> Callable[[bytes, Any], bytes]:
        def echo(request: bytes, context: Any) -> bytes:
            state.reached.append(str(peer_identity(context)))
            who = require_role(context, *roles)  # type: ignore[arg-type]
            return str(who).encode()

        return echo

    methods = {
        "NodeOnly": handler("node"),
        "QuerierOnly": handler("querier"),
        "Anyone": handler("node", "querier"),
    }
    generic = grpc.method_handlers_generic_handler(
        SERVICE, {name: grpc.unary_unary_rpc_method_handler(fn) for name, fn in methods.items()}
    )
    srv = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    srv.add_generic_rpc_handlers((generic,))
    node0 = fed.nodes["0"]
    state.port = srv.add_secure_port(
        "127.0.0.1:0", load_server_credentials(node0.cert, node0.key, node0.ca)
    )
    assert state.port > 0
    srv.start()
    yield state
    srv.stop(grace=None)


def _creds(fed: FederationPaths, role: str, name: str) -> grpc.ChannelCredentials:
    member = (fed.nodes if role == "node" else fed.queriers)[name]
    return load_channel_credentials(member.cert, member.key, member.ca)


# --- authentication ------------------------------------------------------------------


def test_node_with_federation_certificate_is_identified(fed, server):
    assert server.call("NodeOnly", _creds(fed, "node", "1")) == b"node:1"
    assert server.call("Anyone", _creds(fed, "node", "hospital-a")) == b"node:hospital-a"
    assert server.call("QuerierOnly", _creds(fed, "querier", "querier")) == b"querier:querier"


def test_client_certificate_from_another_ca_is_refused(fed, foreign, server):
    # trusts our CA (so the server's certificate is accepted) but presents a foreign one
    impostor = foreign.nodes["1"]
    creds = grpc.ssl_channel_credentials(
        root_certificates=fed.ca_cert.read_bytes(),
        private_key=impostor.key.read_bytes(),
        certificate_chain=impostor.cert.read_bytes(),
    )
    before = len(server.reached)
    with pytest.raises(grpc.RpcError) as info:
        server.call("Anyone", creds)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    assert len(server.reached) == before


def test_foreign_credentials_are_refused_by_the_loader(fed, foreign):
    impostor = foreign.nodes["1"]
    with pytest.raises(ParameterError, match="not issued by the CA"):
        load_channel_credentials(impostor.cert, impostor.key, fed.ca_cert)


def test_client_without_certificate_is_refused(fed, server):
    creds = grpc.ssl_channel_credentials(root_certificates=fed.ca_cert.read_bytes())
    before = len(server.reached)
    with pytest.raises(grpc.RpcError) as info:
        server.call("Anyone", creds)
    assert info.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.UNAUTHENTICATED)
    assert len(server.reached) == before


def test_client_rejects_server_from_another_ca(foreign, server):
    # the foreign member trusts only its own CA, so node 0's server certificate fails
    before = len(server.reached)
    with pytest.raises(grpc.RpcError) as info:
        server.call("Anyone", _creds(foreign, "node", "0"))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(server.reached) == before


# --- authorization -------------------------------------------------------------------


def test_querier_cannot_call_node_only_method(fed, server):
    with pytest.raises(grpc.RpcError) as info:
        server.call("NodeOnly", _creds(fed, "querier", "querier"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    details = info.value.details()
    assert "querier:querier" in details and "NodeOnly" in details
    assert "allowed roles: node" in details


def test_node_certificate_cannot_act_as_querier(fed, server):
    with pytest.raises(grpc.RpcError) as info:
        server.call("QuerierOnly", _creds(fed, "node", "1"))
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert info.value.details() == "peer node:1 may not call QuerierOnly; allowed roles: querier"


class FakeContext:
    """Stands in for grpc.ServicerContext in unit tests of the identity parsing."""

    def __init__(self, auth: dict[str, list[bytes]]) -> None:
        self._auth = auth
        self.aborted: tuple[grpc.StatusCode, str] | None = None

    def auth_context(self) -> dict[str, list[bytes]]:
        return self._auth

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.aborted = (code, details)
        raise RuntimeError("aborted")


@pytest.mark.parametrize(
    "auth",
    [
        {},
        {"transport_security_type": [b"insecure"]},
        {"x509_common_name": [b"node"]},
        {"x509_common_name": [b"admin:root"]},
        {"x509_common_name": [b"node:"]},
        {"x509_common_name": [b"node:a/b"]},
        {"x509_common_name": [b"node:1", b"querier:q"]},
        {"x509_common_name": [b"\xff\xfe"]},
    ],
)
def test_peer_identity_refuses_missing_or_malformed_names(auth):
    with pytest.raises(PheFlError):
        peer_identity(FakeContext(auth))
    ctx = FakeContext(auth)
    with pytest.raises(RuntimeError, match="aborted"):
        require_role(ctx, "node")
    assert ctx.aborted is not None and ctx.aborted[0] == grpc.StatusCode.UNAUTHENTICATED


def test_peer_identity_and_require_role_with_a_fake_context():
    ctx = FakeContext({"x509_common_name": [b"querier:clinic_7"]})
    assert peer_identity(ctx) == PeerIdentity("querier", "clinic_7")
    assert require_role(ctx, "querier", "node") == PeerIdentity("querier", "clinic_7")
    with pytest.raises(RuntimeError):
        require_role(ctx, "node", method="Train")
    assert ctx.aborted == (
        grpc.StatusCode.PERMISSION_DENIED,
        "peer querier:clinic_7 may not call Train; allowed roles: node",
    )
    with pytest.raises(ParameterError):
        require_role(ctx)
    with pytest.raises(ParameterError):
        require_role(ctx, "admin")  # type: ignore[arg-type]


# --- files and validation ------------------------------------------------------------


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_and_private_key_modes(fed):
    root = fed.ca_cert.parent
    assert fed.ca_cert == root / "ca.pem" and fed.ca_key == root / "ca.key"
    assert fed.nodes["0"].cert == root / "nodes" / "0.pem"
    assert fed.queriers["querier"].key == root / "queriers" / "querier.key"
    for path in fed.files():
        assert path.is_file()
        if path.suffix == ".key":
            assert _mode(path) == 0o600, path
    assert not [p for p in root.rglob("*") if ".tmp" in p.name]


def test_key_mode_ignores_a_permissive_umask(tmp_path):
    old = os.umask(0)
    try:
        paths = create_federation(tmp_path, ["0"], [])
    finally:
        os.umask(old)
    assert _mode(paths.ca_key) == 0o600 and _mode(paths.nodes["0"].key) == 0o600


@pytest.mark.parametrize(
    "nodes, queriers, match",
    [
        (["0", "1", "0"], ["q"], "duplicate node id '0'"),
        (["0"], ["q", "q"], "duplicate querier id 'q'"),
        (["0", "a b"], ["q"], "invalid node id 'a b'"),
        (["0", ""], ["q"], "invalid node id ''"),
        (["../etc"], ["q"], "invalid node id"),
        (["x" * 65], ["q"], "invalid node id"),
        (["0\n"], ["q"], "invalid node id"),
        (["0"], ["q:1"], "invalid querier id"),
        ([], ["q"], "at least one node"),
        ("012", ["q"], "not one string"),
    ],
)
def test_bad_ids_are_refused_before_anything_is_written(tmp_path, nodes, queriers, match):
    with pytest.raises(ParameterError, match=match):
        create_federation(tmp_path / "out", nodes, queriers)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("hosts", [[], ["bad host"], ["a..b"], ("localhost", "-x")])
def test_bad_hosts_are_refused(tmp_path, hosts):
    with pytest.raises(ParameterError, match="host"):
        create_federation(tmp_path, ["0"], hosts=hosts)


def test_existing_ca_key_is_never_overwritten_by_default(tmp_path):
    first = create_federation(tmp_path, ["0"])
    key = first.ca_key.read_bytes()
    with pytest.raises(ParameterError, match="ca.key"):
        create_federation(tmp_path, ["5"])
    assert first.ca_key.read_bytes() == key
    assert not (tmp_path / "nodes" / "5.pem").exists()
    create_federation(tmp_path, ["0"], overwrite=True)
    assert first.ca_key.read_bytes() != key


def test_loaders_name_the_missing_or_wrong_file(fed, tmp_path):
    node = fed.nodes["0"]
    missing = tmp_path / "nope.pem"
    with pytest.raises(ParameterError, match=f"certificate file not found: {missing}"):
        load_server_credentials(missing, node.key, node.ca)
    with pytest.raises(ParameterError, match="private key file not found"):
        load_channel_credentials(node.cert, tmp_path / "nope.key", node.ca)
    with pytest.raises(ParameterError, match=f"CA certificate file not found: {missing}"):
        load_channel_credentials(node.cert, node.key, missing)
    with pytest.raises(ParameterError, match="does not belong to certificate"):
        load_channel_credentials(node.cert, fed.nodes["1"].key, node.ca)
    with pytest.raises(ParameterError, match="holds no PEM certificate"):
        load_channel_credentials(node.key, node.key, node.ca)
    with pytest.raises(ParameterError, match="holds no unencrypted PEM private key"):
        load_channel_credentials(node.cert, node.cert, node.ca)
    with pytest.raises(ParameterError, match="cannot read"):
        load_channel_credentials(tmp_path, node.key, node.ca)  # a folder


def test_issued_member_joins_the_running_federation(fed, server, tmp_path):
    paths = issue_certificate(fed.ca_cert.parent, "node", "late-joiner", tmp_path)
    assert paths.cert == tmp_path / "nodes" / "late-joiner.pem"
    assert _mode(paths.key) == 0o600
    creds = load_channel_credentials(paths.cert, paths.key, paths.ca)
    assert server.call("NodeOnly", creds) == b"node:late-joiner"
    with pytest.raises(ParameterError, match="refusing to overwrite"):
        issue_certificate(fed.ca_cert.parent, "node", "late-joiner", tmp_path)
    with pytest.raises(ParameterError, match="unknown role"):
        issue_certificate(fed.ca_cert.parent, "admin", "x", tmp_path)  # type: ignore[arg-type]
    with pytest.raises(ParameterError, match="CA certificate file not found"):
        issue_certificate(tmp_path / "no-ca", "node", "x", tmp_path)


# --- command line --------------------------------------------------------------------


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", "certs", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_cli_writes_the_layout_and_adds_members(tmp_path):
    out = tmp_path / "fed"
    done = _cli("--out", str(out), "--nodes", "0,1,2", "--queriers", "querier,clinic")
    assert done.returncode == 0, done.stderr
    expected = ["ca.pem", "ca.key"] + [
        f"{folder}/{n}.{ext}"
        for folder, names in (("nodes", "012"), ("queriers", ["querier", "clinic"]))
        for n in names
        for ext in ("pem", "key")
    ]
    for rel in expected:
        assert (out / rel).is_file(), rel
        assert str(out / rel) in done.stdout
    assert "PRIVATE KEY" not in done.stdout + done.stderr
    assert _mode(out / "ca.key") == 0o600

    done = _cli("--out", str(out), "--add-node", "3", "--hosts", "dp3.example,10.1.2.3")
    assert done.returncode == 0, done.stderr
    assert (out / "nodes/3.pem").is_file() and _mode(out / "nodes/3.key") == 0o600
    assert "PRIVATE KEY" not in done.stdout
    done = _cli("--out", str(out), "--add-querier", "q2")
    assert done.returncode == 0, done.stderr
    assert (out / "queriers/q2.pem").is_file()
    load_channel_credentials(out / "nodes/3.pem", out / "nodes/3.key", out / "ca.pem")

    done = _cli("--out", str(out), "--nodes", "0")  # would replace ca.key
    assert done.returncode == 2 and "refusing to overwrite" in done.stderr
    done = _cli("--out", str(tmp_path / "other"), "--nodes", "0,0")
    assert done.returncode == 2 and "duplicate node id '0'" in done.stderr


def test_folders_holding_private_keys_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        create_federation(tmp_path / "fed", ["n0", "n1"], ["q"])
    finally:
        os.umask(old)
    for folder in (tmp_path / "fed", tmp_path / "fed" / "nodes", tmp_path / "fed" / "queriers"):
        assert folder.stat().st_mode & 0o777 == 0o700, folder
