"""``phe-fl preflight``: what would stop a node, found before it starts, said in words.

A site admin runs it after installing the certificate and before ``start.sh``. Each check
gives one line, ``ok``, ``WARNING`` or ``ERROR`` and what is wrong; any ERROR makes the
command exit nonzero. Checks read files and, for the parent, open one TCP connection and
one TLS handshake (the same identity check the node makes: the parent's certificate must
name ``<parent-id>.node.phe-fl``); nothing is written.
"""

from __future__ import annotations

import datetime as _dt
import socket
import ssl
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509

from phe_fl.errors import PheFlError
from phe_fl.federation.certs import (
    certificate_hosts,
    certificate_identity,
    identity_host,
    issued_by,
    read_ca_certificates,
    read_certificate,
    read_private_key,
)
from phe_fl.federation.config import NodeConfig, load_node_config

__all__ = ["Finding", "preflight", "format_findings"]

Level = Literal["ok", "WARNING", "ERROR"]

_EXPIRY_WARNING = _dt.timedelta(days=30)
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"


@dataclass(frozen=True)
class Finding:
    """One check's verdict."""

    level: Level
    check: str
    message: str

    def line(self) -> str:
        return f"{self.level:<8} {self.check:<12} {self.message}"


class _Report:
    def __init__(self) -> None:
        self.findings: list[Finding] = []

    def ok(self, check: str, message: str) -> None:
        self.findings.append(Finding("ok", check, message))

    def warn(self, check: str, message: str) -> None:
        self.findings.append(Finding("WARNING", check, message))

    def error(self, check: str, message: str) -> None:
        self.findings.append(Finding("ERROR", check, message))


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _check_params(cfg: NodeConfig, r: _Report) -> None:
    from phe_fl.mhe import get_parameter_set

    params = get_parameter_set(cfg.params)  # load_node_config checked the name
    if params.secure:
        r.ok("params", f"{params.name}: 128-bit security")
    else:
        r.warn(
            "params",
            f"{params.name} is an INSECURE test parameter set (no security at all); "
            "use a 128-bit set (see `phe-fl params`) for real data",
        )


def _check_ca(cfg: NodeConfig, r: _Report) -> list[x509.Certificate] | None:
    try:
        roots = read_ca_certificates(cfg.tls.ca)
    except PheFlError as exc:
        r.error("ca", str(exc))
        return None
    now = _now()
    for root in roots:
        if not root.not_valid_before_utc <= now <= root.not_valid_after_utc:
            r.error(
                "ca",
                f"CA certificate {cfg.tls.ca} is valid only from "
                f"{root.not_valid_before_utc:%Y-%m-%d} to {root.not_valid_after_utc:%Y-%m-%d}",
            )
            return None
    r.ok("ca", f"{cfg.tls.ca}: {roots[0].subject.rfc4514_string()}")
    return roots


def _check_cert(
    cfg: NodeConfig, roots: list[x509.Certificate] | None, r: _Report
) -> x509.Certificate | None:
    path = cfg.tls.cert
    if not path.exists():
        r.error(
            "certificate",
            f"{path} does not exist: make a request with `phe-fl csr --kit {path.parent}`, "
            "have the CA operator sign it, then install it with `phe-fl csr --kit ... --install`",
        )
        return None
    try:
        leaf = read_certificate(path)
        who = certificate_identity(path)
    except PheFlError as exc:
        r.error("certificate", str(exc))
        return None
    bad = False
    now = _now()
    if now < leaf.not_valid_before_utc:
        r.error(
            "certificate",
            f"{path} is not valid before {leaf.not_valid_before_utc:%Y-%m-%d %H:%M} UTC "
            "(check this machine's clock)",
        )
        bad = True
    elif now > leaf.not_valid_after_utc:
        r.error(
            "certificate",
            f"{path} expired on {leaf.not_valid_after_utc:%Y-%m-%d}: ask the CA operator for a "
            "new one (`phe-fl csr --kit` makes a new request from the same key)",
        )
        bad = True
    if roots is not None and not issued_by(leaf, roots):
        r.error(
            "certificate",
            f"{path} is not issued by the federation CA in {cfg.tls.ca} (a certificate of "
            "another federation, or a ca.pem from another one?)",
        )
        bad = True
    if (who.role, who.name) != ("node", cfg.id):
        r.error(
            "certificate", f"{path} is the certificate of {who}, but this node is node:{cfg.id}"
        )
        bad = True
    elif identity_host(cfg.id) not in certificate_hosts(leaf):
        r.error(
            "certificate",
            f"{path} does not carry the name {identity_host(cfg.id)} that this node's "
            "children check",
        )
        bad = True
    if bad:
        return None
    left = leaf.not_valid_after_utc - now
    if left < _EXPIRY_WARNING:
        r.warn(
            "certificate",
            f"{path} expires in {left.days} day(s), on {leaf.not_valid_after_utc:%Y-%m-%d}",
        )
    else:
        r.ok(
            "certificate",
            f"node:{cfg.id}, issued by the federation CA, valid until "
            f"{leaf.not_valid_after_utc:%Y-%m-%d}",
        )
    return leaf


def _check_key(cfg: NodeConfig, leaf: x509.Certificate | None, r: _Report) -> bool:
    path = cfg.tls.key
    if not path.exists():
        r.error("key", f"{path} does not exist: `phe-fl csr --kit {path.parent}` makes it")
        return False
    if not path.is_file():
        r.error("key", f"{path} is not a file")
        return False
    mode = _mode(path)
    if mode & 0o077:
        r.error(
            "key",
            f"{path} can be read by others (mode {mode:04o}): `chmod 600 {path}`, and ask "
            "yourself who may have copied it",
        )
        return False
    try:
        key = read_private_key(path)
    except PheFlError as exc:
        r.error("key", str(exc))
        return False
    if leaf is not None and leaf.public_key() != key.public_key():
        r.error(
            "key",
            f"{path} is not the key of certificate {cfg.tls.cert} (the certificate was "
            "signed from another request)",
        )
        return False
    r.ok("key", f"{path}: mode {mode:04o}" + (", matches the certificate" if leaf else ""))
    return leaf is not None


def _check_state(cfg: NodeConfig, r: _Report) -> None:
    path = cfg.state_dir
    if not path.exists():
        r.ok("state", f"{path} does not exist yet; the node creates it (mode 0700)")
        return
    if not path.is_dir():
        r.error("state", f"{path} exists and is not a folder")
        return
    mode = _mode(path)
    if mode & 0o077:
        r.error(
            "state",
            f"{path} can be read by others (mode {mode:04o}); it holds this node's key share: "
            f"`chmod 700 {path}`",
        )
        return
    r.ok("state", f"{path}: mode {mode:04o}")


def _split(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host.strip("[]"), int(port)


def _check_listen(cfg: NodeConfig, r: _Report) -> None:
    if cfg.listen is None:
        r.ok("listen", "a leaf: no inbound port")
        return
    host, port = _split(cfg.listen)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        r.error("listen", f"listen address {cfg.listen}: host {host!r} does not resolve ({exc})")
        return
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(sockaddr)
        except OSError as exc:
            r.warn(
                "listen",
                f"cannot bind {cfg.listen} ({exc.strerror or exc}): another process holds "
                "the port (this node already running?) or the address is not this machine's",
            )
            return
    r.ok("listen", f"{cfg.listen} is free")


def _check_parent(cfg: NodeConfig, tls_ready: bool, timeout_s: float, r: _Report) -> None:
    parent = cfg.parent
    if parent is None:
        r.ok("parent", "the root: no parent to reach")
        return
    host, port = _split(parent.address)
    try:
        sock = socket.create_connection((host, port), timeout=timeout_s)
    except socket.gaierror as exc:
        r.error(
            "parent", f"{parent.id} at {parent.address}: host {host!r} does not resolve ({exc})"
        )
        return
    except OSError as exc:
        why = "timed out" if isinstance(exc, TimeoutError) else (exc.strerror or str(exc))
        r.error(
            "parent",
            f"cannot reach {parent.id} at {parent.address} ({why}): is it running, is the "
            "address right, does a firewall let this machine through?",
        )
        return
    with sock:
        if not tls_ready:
            r.warn(
                "parent",
                f"{parent.id} at {parent.address} accepts TCP; TLS not tried (fix this "
                "node's certificate and key first)",
            )
            return
        name = identity_host(parent.id)
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cfg.tls.ca))
        ctx.load_cert_chain(str(cfg.tls.cert), str(cfg.tls.key))
        ctx.set_alpn_protocols(["h2"])
        try:
            with ctx.wrap_socket(sock, server_hostname=name) as tls:
                # TLS 1.3 lets the server refuse our certificate after the handshake:
                # speak first and read its answer to learn whether it accepted us.
                tls.sendall(_HTTP2_PREFACE)
                tls.settimeout(timeout_s)
                try:
                    answered = tls.recv(9)
                except TimeoutError:
                    answered = b"?"
                if not answered:
                    r.error(
                        "parent",
                        f"{parent.id} at {parent.address} closed the connection after the "
                        "handshake (does it list this node among its children?)",
                    )
                    return
        except ssl.SSLCertVerificationError as exc:
            r.error(
                "parent",
                f"the server at {parent.address} is not {parent.id}: its certificate fails "
                f"the check for {name} ({exc.verify_message})",
            )
            return
        except (ssl.SSLError, OSError) as exc:
            r.error(
                "parent",
                f"TLS with {parent.id} at {parent.address} failed: "
                f"{getattr(exc, 'reason', None) or exc} (does it trust this federation's CA "
                "and this node's certificate?)",
            )
            return
    r.ok("parent", f"{parent.id} at {parent.address} answers and proves it is {name}")


def _check_data(cfg: NodeConfig, r: _Report) -> None:
    from phe_fl.federation.data import load_local_data

    source = cfg.data
    if source.path is None and source.dataset is None:
        r.warn("data", "no [data] source: this node contributes no samples")
        return
    if source.path is not None and not source.path.exists():
        r.error("data", f"data file {source.path} does not exist")
        return
    try:
        x, y = load_local_data(source)
    except (PheFlError, OSError, ValueError) as exc:
        r.error("data", str(exc))
        return
    what = str(source.path) if source.path is not None else f"dataset {source.dataset}"
    labels = sorted({float(v) for v in y})
    shown = ", ".join(f"{v:g}" for v in labels[:5]) + (", ..." if len(labels) > 5 else "")
    r.ok(
        "data",
        f"{what}: {x.shape[0]} rows, {x.shape[1]} features, {len(labels)} label value(s) ({shown})",
    )


def preflight(config: Path | str, *, network: bool = True, timeout_s: float = 3.0) -> list[Finding]:
    """Every check on the node config at ``config``; ``network=False`` skips the parent."""
    r = _Report()
    try:
        cfg = load_node_config(config)
    except PheFlError as exc:
        r.error("config", str(exc))
        return r.findings
    where = "the root" if cfg.is_root else f"child of {cfg.parent.id if cfg.parent else '?'}"
    r.ok("config", f"{config}: node {cfg.id}, party {cfg.party} of {cfg.n_parties}, {where}")
    _check_params(cfg, r)
    roots = _check_ca(cfg, r)
    leaf = _check_cert(cfg, roots, r)
    tls_ready = _check_key(cfg, leaf, r) and roots is not None
    _check_state(cfg, r)
    _check_listen(cfg, r)
    if network:
        _check_parent(cfg, tls_ready, timeout_s, r)
    _check_data(cfg, r)
    return r.findings


def format_findings(findings: list[Finding]) -> str:
    """The lines, then a verdict line."""
    errors = sum(f.level == "ERROR" for f in findings)
    warnings = sum(f.level == "WARNING" for f in findings)
    verdict = (
        "preflight: ready to start"
        if not errors
        else f"preflight: {errors} error(s): fix them before starting the node"
    )
    if warnings:
        verdict += f" ({warnings} warning(s))"
    return "\n".join([*(f.line() for f in findings), verdict])
