"""``phe-fl preflight``: each thing that would stop a node is one ERROR line, in words."""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from phe_fl.cli import main
from phe_fl.federation.certs import create_ca
from phe_fl.federation.preflight import Finding, format_findings, preflight
from phe_fl.federation.provision import kit_request
from tests.unit.test_provision import signed_kits


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def kits(tmp_path: Path) -> Path:
    """Signed kits of a 3-site federation whose root would listen on a free port, with a
    small data file at every site."""
    kits = signed_kits(tmp_path, _free_port())
    rng = np.random.default_rng(0)
    for site in ("site-a", "site-b", "site-c"):
        data = kits / site / "data"
        data.mkdir()
        table = np.hstack([rng.normal(size=(20, 4)), rng.integers(0, 2, size=(20, 1))])
        np.savetxt(data / f"{site}.csv", table, delimiter=",")
    return kits


def _by_check(findings: list[Finding]) -> dict[str, Finding]:
    return {f.check: f for f in findings}


def _errors(findings: list[Finding]) -> dict[str, str]:
    return {f.check: f.message for f in findings if f.level == "ERROR"}


def test_a_ready_kit_passes(kits: Path, capsys: pytest.CaptureFixture[str]) -> None:
    findings = preflight(kits / "site-a" / "node.toml")
    assert _errors(findings) == {}
    checks = _by_check(findings)
    assert checks["params"].level == "WARNING" and "INSECURE" in checks["params"].message
    assert "20 rows, 4 features, 2 label value(s)" in checks["data"].message
    assert "is free" in checks["listen"].message
    assert "the root" in checks["parent"].message
    text = format_findings(findings)
    assert text.splitlines()[-1] == "preflight: ready to start (1 warning(s))"
    assert main(["preflight", "--config", str(kits / "site-a" / "node.toml")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("ok       config")


def test_a_secure_parameter_set_is_ok(tmp_path: Path) -> None:
    kits = signed_kits(tmp_path, _free_port(), params="n14-depth5-128")
    findings = _by_check(preflight(kits / "site-b" / "node.toml", network=False))
    assert findings["params"].level == "ok" and "128-bit" in findings["params"].message
    assert "parent" not in findings


def test_a_config_that_does_not_load(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    findings = preflight(tmp_path / "node.toml")
    assert [(f.level, f.check) for f in findings] == [("ERROR", "config")]
    assert "does not exist" in findings[0].message
    assert main(["preflight", "--config", str(tmp_path / "node.toml")]) == 1
    assert "1 error(s)" in capsys.readouterr().out


def test_a_key_readable_by_others(kits: Path) -> None:
    os.chmod(kits / "site-b" / "site-b.key", 0o644)
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "can be read by others (mode 0644)" in errors["key"]
    assert "chmod 600" in errors["key"]


def test_a_state_folder_readable_by_others(kits: Path) -> None:
    state = kits / "site-b" / "state"
    state.mkdir()
    os.chmod(state, 0o755)
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "can be read by others (mode 0755)" in errors["state"]
    os.chmod(state, 0o700)
    assert "state" not in _errors(preflight(kits / "site-b" / "node.toml", network=False))


def test_missing_certificate_and_key(kits: Path) -> None:
    (kits / "site-b" / "site-b.pem").unlink()
    (kits / "site-b" / "site-b.key").unlink()
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "does not exist: make a request with `phe-fl csr --kit" in errors["certificate"]
    assert "does not exist" in errors["key"]


def test_a_certificate_of_another_member(kits: Path) -> None:
    shutil.copy(kits / "site-c" / "site-c.pem", kits / "site-b" / "site-b.pem")
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert (
        "is the certificate of node:site-c, but this node is node:site-b" in errors["certificate"]
    )


def test_a_key_that_is_not_the_certificates(kits: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    path = kits / "site-b" / "site-b.key"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "is not the key of certificate" in errors["key"]


def test_a_certificate_of_another_federation(kits: Path, tmp_path: Path) -> None:
    foreign = create_ca(tmp_path / "foreign")
    shutil.copy(foreign.cert, kits / "site-b" / "ca.pem")
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "is not issued by the federation CA" in errors["certificate"]


def _resign(kits: Path, tmp_path: Path, site: str, start: dt.datetime, end: dt.datetime) -> None:
    """Replace a site's certificate by one with the given dates, from the same CA."""
    ca_key = serialization.load_pem_private_key((tmp_path / "ca" / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca = x509.load_pem_x509_certificate((tmp_path / "ca" / "ca.pem").read_bytes())
    old = x509.load_pem_x509_certificate((kits / site / f"{site}.pem").read_bytes())
    builder = (
        x509.CertificateBuilder()
        .subject_name(old.subject)
        .issuer_name(ca.subject)
        .public_key(old.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )
    for ext in old.extensions:
        builder = builder.add_extension(ext.value, ext.critical)
    cert = builder.sign(ca_key, hashes.SHA256())
    (kits / site / f"{site}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def test_an_expired_or_expiring_certificate(kits: Path, tmp_path: Path) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    _resign(kits, tmp_path, "site-b", now - dt.timedelta(days=400), now - dt.timedelta(days=35))
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "expired on" in errors["certificate"]
    _resign(kits, tmp_path, "site-b", now + dt.timedelta(days=1), now + dt.timedelta(days=35))
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "is not valid before" in errors["certificate"]
    _resign(kits, tmp_path, "site-b", now - dt.timedelta(days=1), now + dt.timedelta(days=5))
    findings = _by_check(preflight(kits / "site-b" / "node.toml", network=False))
    assert (
        findings["certificate"].level == "WARNING"
        and "expires in" in findings["certificate"].message
    )


def test_data_missing_or_malformed(kits: Path) -> None:
    data = kits / "site-b" / "data" / "site-b.csv"
    data.unlink()
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "does not exist" in errors["data"]
    data.write_text("1,2,x\n3,4,1\n5,6,0\n7,8,\n")
    errors = _errors(preflight(kits / "site-b" / "node.toml", network=False))
    assert "site-b.csv" in errors["data"]


def test_a_parent_that_does_not_answer(kits: Path) -> None:
    errors = _errors(preflight(kits / "site-b" / "node.toml", timeout_s=1.0))
    assert "cannot reach site-a at 127.0.0.1:" in errors["parent"]


@contextmanager
def _tls_server(port: int, cert: Path, key: Path, ca: Path) -> Iterator[list[str]]:
    """A one-connection TLS server on ``port`` that demands a client certificate from
    ``ca``; yields the list it appends its outcome to."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    ctx.load_verify_locations(str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.set_alpn_protocols(["h2"])
    server = socket.create_server(("127.0.0.1", port))
    server.settimeout(10)
    outcome: list[str] = []

    def serve() -> None:
        try:
            conn, _ = server.accept()
        except OSError:
            return
        with conn:
            try:
                with ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(24)
                    tls.sendall(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
                    outcome.append("served")
            except (ssl.SSLError, OSError) as exc:
                outcome.append(f"refused: {exc}")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield outcome
    finally:
        thread.join(timeout=10)
        server.close()


def _parent_port(kits: Path) -> int:
    text = (kits / "site-b" / "node.toml").read_text()
    return int(text.split('address = "127.0.0.1:', 1)[1].split('"', 1)[0])


def test_the_parent_proves_its_identity(kits: Path) -> None:
    a = kits / "site-a"
    with _tls_server(_parent_port(kits), a / "site-a.pem", a / "site-a.key", a / "ca.pem") as out:
        findings = _by_check(preflight(kits / "site-b" / "node.toml"))
    assert findings["parent"].level == "ok", findings["parent"]
    assert "proves it is site-a.node.phe-fl" in findings["parent"].message
    assert out == ["served"]


def test_another_node_at_the_parents_address(kits: Path) -> None:
    c = kits / "site-c"
    with _tls_server(_parent_port(kits), c / "site-c.pem", c / "site-c.key", c / "ca.pem"):
        errors = _errors(preflight(kits / "site-b" / "node.toml"))
    assert (
        "is not site-a: its certificate fails the check for site-a.node.phe-fl" in errors["parent"]
    )


def test_a_parent_that_refuses_this_nodes_certificate(kits: Path, tmp_path: Path) -> None:
    a = kits / "site-a"
    other = create_ca(tmp_path / "other")  # the parent trusts another CA for its clients
    with _tls_server(_parent_port(kits), a / "site-a.pem", a / "site-a.key", other.cert) as out:
        errors = _errors(preflight(kits / "site-b" / "node.toml"))
    assert "TLS with site-a at 127.0.0.1:" in errors["parent"], errors
    assert out and out[0].startswith("refused")


def test_a_busy_listen_port_is_a_warning(kits: Path) -> None:
    port = _parent_port(kits)
    with socket.create_server(("127.0.0.1", port)):
        findings = _by_check(preflight(kits / "site-a" / "node.toml"))
    assert findings["listen"].level == "WARNING" and "cannot bind" in findings["listen"].message


def test_a_kit_before_its_certificate_is_installed(tmp_path: Path) -> None:
    kits = signed_kits(tmp_path, _free_port())
    (kits / "site-c" / "site-c.pem").unlink()
    kit, created = kit_request(kits / "site-c")
    assert not created
    errors = _errors(preflight(kits / "site-c" / "node.toml", network=False))
    assert set(errors) >= {"certificate", "data"}
