"""Certificates and mutual TLS for the gRPC federation.

Every process in a federation (data provider or querier) authenticates with a certificate
signed by one federation CA, and the server side of every RPC learns *who* called from the
certificate alone: the subject common name is ``node:<id>`` or ``querier:<id>``, which gRPC's
Python auth context exposes as ``x509_common_name``. Servicers call :func:`require_role` so
that, for instance, a node certificate cannot act as a querier.

Keys are EC P-256 (small, fast handshakes, supported everywhere gRPC runs). Private keys are
written with mode 0600 and never printed. The CA key is what lets someone mint identities:
keep it off the nodes after provisioning.

Two ways to get certificates:

- one command on one machine (:func:`create_federation`, ``phe-fl certs``): the CA makes
  every member's key too; for demos and tests, where one person runs every process;
- a real federation (``phe-fl provision`` / ``csr`` / ``ca sign``): :func:`create_ca` at the
  CA operator, :func:`create_signing_request` at each member (its key never leaves it),
  :func:`read_signing_request` + :func:`sign_request` back at the CA (same extensions as
  :func:`issue_certificate`; no wildcard and no other member's identity name can be asked
  for), :func:`install_certificate` at the member.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phe_fl.errors import ParameterError, PheFlError

__all__ = [
    "Role",
    "ROLES",
    "CertPaths",
    "FederationPaths",
    "PeerIdentity",
    "certificate_identity",
    "create_federation",
    "identity_host",
    "issue_certificate",
    "SigningRequest",
    "create_ca",
    "ca_fingerprint",
    "certificate_hosts",
    "create_signing_request",
    "read_signing_request",
    "sign_request",
    "install_certificate",
    "read_certificate",
    "read_ca_certificates",
    "read_private_key",
    "issued_by",
    "load_server_credentials",
    "load_channel_credentials",
    "peer_identity",
    "require_role",
]

Role = Literal["node", "querier"]
ROLES: tuple[Role, ...] = get_args(Role)

_ID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")
# A DNS label may hold '_' here: container service names (docker compose) often do.
_DNS_RE = re.compile(
    r"(\*\.)?[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    r"(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?)*\.?"
)
_DEFAULT_HOSTS: tuple[str, ...] = ("localhost", "127.0.0.1")
# Backdate certificates a little so that small clock differences between machines do not
# make a fresh certificate "not yet valid".
_CLOCK_SKEW = _dt.timedelta(minutes=5)
# The CA outlives the member certificates, so that a member joining late still gets a
# certificate for the full requested validity.
_MIN_CA_DAYS = 10 * 365
_CA_CERT = "ca.pem"
_CA_KEY = "ca.key"


@dataclass(frozen=True)
class CertPaths:
    """Where one member's certificate, private key and the federation CA certificate lie."""

    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class FederationPaths:
    """Every file :func:`create_federation` wrote."""

    ca_cert: Path
    ca_key: Path
    nodes: Mapping[str, CertPaths]
    queriers: Mapping[str, CertPaths]

    def files(self) -> list[Path]:
        """All paths, CA first, in a stable order (for printing)."""
        out = [self.ca_cert, self.ca_key]
        for member in (*self.nodes.values(), *self.queriers.values()):
            out += [member.cert, member.key]
        return out


@dataclass(frozen=True)
class PeerIdentity:
    """The authenticated caller of an RPC, read from its certificate."""

    role: Role
    name: str

    def __str__(self) -> str:
        return f"{self.role}:{self.name}"


# ---------------------------------------------------------------------------------------
# validation


def _check_id(name: str, what: str) -> str:
    if not isinstance(name, str) or _ID_RE.fullmatch(name) is None:
        raise ParameterError(
            f"invalid {what} id {name!r}: ids are 1 to 64 characters from [A-Za-z0-9_-]"
        )
    return name


def _check_ids(ids: Sequence[str], what: str) -> list[str]:
    if isinstance(ids, str):
        raise ParameterError(f"{what} ids must be a sequence of strings, not one string")
    seen: set[str] = set()
    for name in ids:
        _check_id(name, what)
        if name in seen:
            raise ParameterError(f"duplicate {what} id {name!r}")
        seen.add(name)
    return list(ids)


def _check_role(role: str) -> Role:
    if role not in ROLES:
        raise ParameterError(f"unknown role {role!r}; roles are {', '.join(ROLES)}")
    return role


def _san(hosts: Sequence[str]) -> x509.SubjectAlternativeName:
    """DNS names and IP addresses a server certificate is valid for."""
    if isinstance(hosts, str) or not hosts:
        raise ParameterError("hosts must be a non-empty sequence of host names or IP addresses")
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
            continue
        except ValueError:
            pass
        if not isinstance(host, str) or len(host) > 253 or _DNS_RE.fullmatch(host) is None:
            raise ParameterError(f"invalid host {host!r}: not an IP address or a DNS name")
        names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def identity_host(node_id: str) -> str:
    """The DNS name in every node certificate that proves which node it is.

    A child dialing its parent asks TLS to verify this name (not the address), so a server
    holding another node's certificate at the parent's address fails the handshake.
    """
    return f"{_check_id(node_id, 'node')}.node.phe-fl"


def _member_hosts(role: Role, name: str, hosts: Sequence[str]) -> list[str]:
    if isinstance(hosts, str) or not hosts:
        raise ParameterError("hosts must be a non-empty sequence of host names or IP addresses")
    return [*hosts, identity_host(name)] if role == "node" else list(hosts)


def _check_days(days: int) -> int:
    if isinstance(days, bool) or not isinstance(days, int) or days < 1:
        raise ParameterError(f"days must be a positive integer, got {days!r}")
    return days


# ---------------------------------------------------------------------------------------
# files


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically (temp file + rename) with ``mode`` set from creation on, so a
    private key is never readable by others, not even briefly. A folder holding a
    private key is made 0700 whatever the umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode & 0o077 == 0:  # a private file: its folder is private too
        os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.fchmod(fd, mode)  # O_CREAT's mode is filtered by the umask
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _refuse_existing(paths: Sequence[Path], overwrite: bool) -> None:
    if overwrite:
        return
    existing = [str(p) for p in paths if p.exists()]
    if existing:
        raise ParameterError(
            "refusing to overwrite existing files (pass overwrite=True / --overwrite): "
            + ", ".join(existing)
        )


def _read(path: Path, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise ParameterError(f"{what} file not found: {path}") from None
    except OSError as exc:
        raise ParameterError(f"cannot read {what} file {path}: {exc.strerror or exc}") from None


def _load_certs(path: Path, what: str, data: bytes | None = None) -> list[x509.Certificate]:
    data = _read(path, what) if data is None else data
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        certs = []
    if not certs:
        raise ParameterError(f"{what} file {path} holds no PEM certificate")
    return certs


def _load_key(path: Path, what: str, data: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    data = _read(path, what) if data is None else data
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # never echo the content: it may be (part of) a secret key
        raise ParameterError(f"{what} file {path} holds no unencrypted PEM private key") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ParameterError(f"{what} file {path} is not an EC private key")
    return key


# ---------------------------------------------------------------------------------------
# issuing


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _make_ca(key: ec.EllipticCurvePrivateKey, days: int) -> x509.Certificate:
    now = _now()
    # A random serial in the name tells federations apart in error messages and logs.
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phe-fl federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"phe-fl federation CA {os.urandom(4).hex()}"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + _dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .sign(key, hashes.SHA256())
    )


def _make_member(
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    role: Role,
    name: str,
    public_key: ec.EllipticCurvePublicKey,
    san: Sequence[str],
    days: int,
) -> x509.Certificate:
    """A member certificate; ``san`` is its full list of names (empty: no SAN extension,
    for a querier, which never serves)."""
    now = _now()
    not_after = min(now + _dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    if not_after <= now:
        raise ParameterError(f"the federation CA expired on {ca_cert.not_valid_after_utc:%Y-%m-%d}")
    eku = (
        [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
        if role == "node"
        else [ExtendedKeyUsageOID.CLIENT_AUTH]
    )
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phe-fl federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{role}:{name}"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(eku), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
    )
    if san:
        builder = builder.add_extension(_san(san), critical=False)
    return builder.sign(ca_key, hashes.SHA256())


def _member_paths(out_dir: Path, role: Role, name: str, ca: Path) -> CertPaths:
    folder = Path(out_dir) / f"{role}s"
    return CertPaths(cert=folder / f"{name}.pem", key=folder / f"{name}.key", ca=ca)


def _write_member(
    paths: CertPaths,
    ca_cert: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    role: Role,
    name: str,
    hosts: Sequence[str],
    days: int,
) -> None:
    key = _new_key()
    san = _member_hosts(role, name, hosts)
    cert = _make_member(ca_cert, ca_key, role, name, key.public_key(), san, days)
    _write(paths.key, _key_pem(key), 0o600)
    _write(paths.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)


def create_federation(
    out_dir: Path,
    node_ids: Sequence[str],
    querier_ids: Sequence[str] = ("querier",),
    hosts: Sequence[str] = _DEFAULT_HOSTS,
    days: int = 365,
    *,
    ca_days: int | None = None,
    overwrite: bool = False,
) -> FederationPaths:
    """Create a federation CA and one certificate per node and per querier.

    Layout: ``ca.pem``, ``ca.key``, ``nodes/<id>.pem|.key``, ``queriers/<id>.pem|.key``.
    Every member certificate is valid for ``hosts`` (every process may run on any of them
    in a test deployment; use :func:`issue_certificate` for per-host certificates). The CA
    is valid for ``ca_days`` (default: at least ten years) so late joiners fit under it.
    Nothing is written when any check fails, and existing files are never replaced unless
    ``overwrite`` is set: replacing ``ca.key`` would orphan every certificate issued so far.
    """
    out_dir = Path(out_dir)
    nodes = _check_ids(node_ids, "node")
    queriers = _check_ids(querier_ids, "querier")
    if not nodes:
        raise ParameterError("a federation needs at least one node id")
    _san(hosts)
    _check_days(days)
    ca_days = _check_days(ca_days) if ca_days is not None else max(days, _MIN_CA_DAYS)
    if ca_days < days:
        raise ParameterError(f"ca_days ({ca_days}) must be at least days ({days})")

    ca_cert_path, ca_key_path = out_dir / _CA_CERT, out_dir / _CA_KEY
    members: dict[Role, dict[str, CertPaths]] = {
        "node": {n: _member_paths(out_dir, "node", n, ca_cert_path) for n in nodes},
        "querier": {q: _member_paths(out_dir, "querier", q, ca_cert_path) for q in queriers},
    }
    targets = [ca_cert_path, ca_key_path] + [
        p for group in members.values() for m in group.values() for p in (m.cert, m.key)
    ]
    _refuse_existing(targets, overwrite)

    ca_key = _new_key()
    ca_cert = _make_ca(ca_key, ca_days)
    out_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(out_dir, 0o700)  # it holds the CA's private key
    _write(ca_key_path, _key_pem(ca_key), 0o600)
    _write(ca_cert_path, ca_cert.public_bytes(serialization.Encoding.PEM), 0o644)
    for role, group in members.items():
        for name, paths in group.items():
            _write_member(paths, ca_cert, ca_key, role, name, hosts, days)
    return FederationPaths(
        ca_cert=ca_cert_path, ca_key=ca_key_path, nodes=members["node"], queriers=members["querier"]
    )


def issue_certificate(
    ca_dir: Path,
    role: Role,
    name: str,
    out_dir: Path | None = None,
    hosts: Sequence[str] = _DEFAULT_HOSTS,
    days: int = 365,
    *,
    overwrite: bool = False,
) -> CertPaths:
    """Add one member (e.g. a hospital joining) to the federation whose CA is in ``ca_dir``.

    Writes ``<out_dir>/<role>s/<name>.pem|.key`` (``out_dir`` defaults to ``ca_dir``, which
    extends the :func:`create_federation` layout). The returned ``ca`` path points at the
    CA certificate in ``ca_dir``, which the new member also needs.
    """
    ca_dir = Path(ca_dir)
    role = _check_role(role)
    _check_id(name, role)
    _san(hosts)
    _check_days(days)
    ca_cert_path = ca_dir / _CA_CERT
    ca_cert, ca_key = _load_ca(ca_dir)
    paths = _member_paths(ca_dir if out_dir is None else Path(out_dir), role, name, ca_cert_path)
    _refuse_existing([paths.cert, paths.key], overwrite)
    _write_member(paths, ca_cert, ca_key, role, name, hosts, days)
    return paths


# ---------------------------------------------------------------------------------------
# signing requests: a site's private key never leaves the site


@dataclass(frozen=True)
class SigningRequest:
    """A checked certificate signing request: who it asks to be, for which names.

    ``hosts`` are the names the requester asked for besides a node's identity name
    (:func:`identity_host`), which every node certificate carries anyway.
    """

    identity: PeerIdentity
    hosts: tuple[str, ...]
    public_key: ec.EllipticCurvePublicKey


def create_ca(ca_dir: Path, days: int = _MIN_CA_DAYS, *, overwrite: bool = False) -> CertPaths:
    """Create a federation CA alone (``ca.pem``, ``ca.key`` 0600 in a 0700 folder), for the
    provisioning path where every member brings its own key (:func:`sign_request`).
    ``cert`` and ``ca`` of the result are both the CA certificate."""
    ca_dir = Path(ca_dir)
    _check_days(days)
    cert_path, key_path = ca_dir / _CA_CERT, ca_dir / _CA_KEY
    _refuse_existing([cert_path, key_path], overwrite)
    key = _new_key()
    ca_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(ca_dir, 0o700)  # it holds the CA's private key
    _write(key_path, _key_pem(key), 0o600)
    _write(cert_path, _make_ca(key, days).public_bytes(serialization.Encoding.PEM), 0o644)
    return CertPaths(cert=cert_path, key=key_path, ca=cert_path)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    ca_cert_path = Path(ca_dir) / _CA_CERT
    ca_cert = _load_certs(ca_cert_path, "CA certificate")[0]
    ca_key = _load_key(Path(ca_dir) / _CA_KEY, "CA key")
    if ca_cert.public_key() != ca_key.public_key():
        raise ParameterError(f"{Path(ca_dir) / _CA_KEY} is not the key of {ca_cert_path}")
    return ca_cert, ca_key


def ca_fingerprint(ca_cert: Path) -> str:
    """SHA-256 of the CA certificate (``AB:CD:...``): what a site compares, over the phone
    or another channel, with the fingerprint its CA operator reads out, before it trusts
    the ``ca.pem`` that came with its kit."""
    cert = _load_certs(Path(ca_cert), "CA certificate")[0]
    return cert.fingerprint(hashes.SHA256()).hex(":").upper()


def _check_requested_hosts(hosts: Sequence[str], role: Role, name: str) -> tuple[str, ...]:
    """Names a member may ask for: no wildcard and no phe-fl identity name but its own, so
    a signed request can never let one node answer as another."""
    own = identity_host(name).lower() if role == "node" else None
    out: list[str] = []
    for host in hosts:
        low = host.lower().rstrip(".")
        if low == own:
            continue
        if "*" in low:
            raise ParameterError(f"{role}:{name} asks for the wildcard name {host!r}")
        if low == "phe-fl" or low.endswith(".phe-fl"):
            raise ParameterError(
                f"{role}:{name} asks for {host!r}, a phe-fl identity name that is not its own"
            )
        out.append(host)
    if out:
        _san(out)
    return tuple(out)


def _san_strings(ext: x509.SubjectAlternativeName) -> list[str]:
    names: list[str] = list(ext.get_values_for_type(x509.DNSName))
    names += [str(ip) for ip in ext.get_values_for_type(x509.IPAddress)]
    return names


def certificate_hosts(cert: x509.Certificate) -> list[str]:
    """The DNS names and IP addresses a certificate is valid for (its SAN)."""
    try:
        ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return _san_strings(ext)


def _name_of(subject: x509.Name, where: str) -> PeerIdentity:
    names = subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if len(names) == 1 else ""
    role, sep, name = cn.partition(":")
    if not sep or role not in ROLES:
        raise ParameterError(
            f"{where} asks for common name {cn[:80]!r}: it must be node:<id> or querier:<id>"
        )
    _check_id(name, role)
    return PeerIdentity(role=_check_role(role), name=name)


def create_signing_request(
    key_path: Path, csr_path: Path, role: Role, name: str, hosts: Sequence[str] = ()
) -> bool:
    """Write a certificate signing request for ``<role>:<name>``, made with the private key
    at ``key_path``; the key is generated there (0600) if it does not exist yet, and is
    reused otherwise, so running this twice never orphans an installed certificate.
    Returns whether a new key was generated. The request holds only the public key."""
    role = _check_role(role)
    _check_id(name, role)
    wanted = _check_requested_hosts(hosts, role, name)
    key_path, csr_path = Path(key_path), Path(csr_path)
    created = not key_path.exists()
    if created:
        key = _new_key()
        _write(key_path, _key_pem(key), 0o600)
    else:
        key = _load_key(key_path, "private key")
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "phe-fl federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{role}:{name}"),
        ]
    )
    builder = x509.CertificateSigningRequestBuilder().subject_name(subject)
    san = [*wanted, identity_host(name)] if role == "node" else list(wanted)
    if san:
        builder = builder.add_extension(_san(san), critical=False)
    csr = builder.sign(key, hashes.SHA256())
    _write(csr_path, csr.public_bytes(serialization.Encoding.PEM), 0o644)
    return created


def read_signing_request(path: Path) -> SigningRequest:
    """Load and check a signing request: a valid self-signature (so whoever made it holds
    the key), an EC P-256 key, a ``node:<id>``/``querier:<id>`` name and acceptable hosts."""
    path = Path(path)
    data = _read(path, "certificate signing request")
    try:
        csr = x509.load_pem_x509_csr(data)
    except ValueError:
        raise ParameterError(f"{path} holds no PEM certificate signing request") from None
    try:
        valid = csr.is_signature_valid
    except (ValueError, TypeError):
        valid = False
    if not valid:
        raise ParameterError(
            f"{path}: the request's signature does not verify (altered after it was made, "
            "or not made with the key it carries)"
        )
    public_key = csr.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or not isinstance(
        public_key.curve, ec.SECP256R1
    ):
        raise ParameterError(f"{path}: the request's key is not an EC P-256 key")
    who = _name_of(csr.subject, str(path))
    try:
        ext = csr.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        requested = _san_strings(ext)
    except x509.ExtensionNotFound:
        requested = []
    try:
        hosts = _check_requested_hosts(requested, who.role, who.name)
    except ParameterError as exc:
        raise ParameterError(f"{path}: {exc}") from None
    return SigningRequest(identity=who, hosts=hosts, public_key=public_key)


def sign_request(
    ca_dir: Path,
    request: SigningRequest,
    out: Path,
    days: int = 365,
    *,
    overwrite: bool = False,
) -> Path:
    """Sign a checked request with the CA in ``ca_dir`` and write the certificate to
    ``out``: the same extensions :func:`issue_certificate` gives, for the request's
    identity and hosts (a node's identity name always included)."""
    _check_days(days)
    out = Path(out)
    _refuse_existing([out], overwrite)
    ca_cert, ca_key = _load_ca(Path(ca_dir))
    who = request.identity
    san = [*request.hosts, identity_host(who.name)] if who.role == "node" else list(request.hosts)
    cert = _make_member(ca_cert, ca_key, who.role, who.name, request.public_key, san, days)
    _write(out, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    return out


def install_certificate(cert: Path, key: Path, ca: Path, role: Role, name: str, dest: Path) -> Path:
    """Check a certificate sent back by the CA operator against what this member holds
    (its identity, its private key, its federation's CA, valid now), then copy it to
    ``dest``. Nothing is written when a check fails."""
    cert, dest = Path(cert), Path(dest)
    data = _read(cert, "certificate")
    leaf = _load_certs(cert, "certificate", data)[0]
    who = _name_of(leaf.subject, f"certificate {cert}")
    if (who.role, who.name) != (role, name):
        raise ParameterError(f"certificate {cert} is for {who}, not for {role}:{name}")
    if leaf.public_key() != _load_key(Path(key), "private key").public_key():
        raise ParameterError(
            f"certificate {cert} is not for this member's private key {key} "
            "(signed from another request?)"
        )
    if not issued_by(leaf, _load_certs(Path(ca), "CA certificate")):
        raise ParameterError(f"certificate {cert} is not issued by the federation CA in {ca}")
    if role == "node" and identity_host(name) not in certificate_hosts(leaf):
        raise ParameterError(f"certificate {cert} does not carry the name {identity_host(name)}")
    now = _now()
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ParameterError(
            f"certificate {cert} is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}"
            f" to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    if cert.resolve() != dest.resolve():
        _write(dest, data, 0o644)
    return dest


# ---------------------------------------------------------------------------------------
# inspection (phe-fl preflight)


def read_certificate(path: Path, what: str = "certificate") -> x509.Certificate:
    """The first certificate in a PEM file; a ParameterError naming the file otherwise."""
    return _load_certs(Path(path), what)[0]


def read_ca_certificates(path: Path) -> list[x509.Certificate]:
    """Every certificate in a CA bundle."""
    return _load_certs(Path(path), "CA certificate")


def read_private_key(path: Path) -> ec.EllipticCurvePrivateKey:
    """An unencrypted EC private key; the error never echoes the file's content."""
    return _load_key(Path(path), "private key")


def issued_by(leaf: x509.Certificate, roots: Sequence[x509.Certificate]) -> bool:
    """Whether one of ``roots`` signed ``leaf``."""
    for root in roots:
        try:
            leaf.verify_directly_issued_by(root)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


# ---------------------------------------------------------------------------------------
# credentials


def _load_member(cert: Path, key: Path, ca: Path) -> tuple[bytes, bytes, bytes]:
    """Read and cross-check the three files, so a mistake surfaces here with the file's
    name rather than later as an anonymous TLS handshake failure."""
    cert_bytes, key_bytes, ca_bytes = (
        _read(cert, "certificate"),
        _read(key, "private key"),
        _read(ca, "CA certificate"),
    )
    leaf = _load_certs(cert, "certificate", cert_bytes)[0]
    private = _load_key(key, "private key", key_bytes)
    roots = _load_certs(ca, "CA certificate", ca_bytes)
    if leaf.public_key() != private.public_key():
        raise ParameterError(f"private key {key} does not belong to certificate {cert}")
    if not issued_by(leaf, roots):
        raise ParameterError(f"certificate {cert} is not issued by the CA in {ca}")
    now = _now()
    if not leaf.not_valid_before_utc <= now <= leaf.not_valid_after_utc:
        raise ParameterError(
            f"certificate {cert} is valid only from {leaf.not_valid_before_utc:%Y-%m-%d %H:%M}"
            f" to {leaf.not_valid_after_utc:%Y-%m-%d %H:%M} UTC"
        )
    return cert_bytes, key_bytes, ca_bytes


def load_server_credentials(cert: Path, key: Path, ca: Path) -> grpc.ServerCredentials:
    """Server credentials that demand and verify a client certificate from the CA."""
    cert_bytes, key_bytes, ca_bytes = _load_member(cert, key, ca)
    return grpc.ssl_server_credentials(
        [(key_bytes, cert_bytes)], root_certificates=ca_bytes, require_client_auth=True
    )


def load_channel_credentials(cert: Path, key: Path, ca: Path) -> grpc.ChannelCredentials:
    """Channel credentials that present this member's certificate and trust only the CA."""
    cert_bytes, key_bytes, ca_bytes = _load_member(cert, key, ca)
    return grpc.ssl_channel_credentials(
        root_certificates=ca_bytes, private_key=key_bytes, certificate_chain=cert_bytes
    )


def certificate_identity(cert: Path) -> PeerIdentity:
    """The identity a certificate file names (its common name ``<role>:<id>``)."""
    leaf = _load_certs(cert, "certificate")[0]
    names = leaf.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = str(names[0].value) if len(names) == 1 else ""
    role, sep, name = cn.partition(":")
    if not sep or role not in ROLES or _ID_RE.fullmatch(name) is None:
        raise ParameterError(f"certificate {cert} does not name a <role>:<id> (CN {cn!r})")
    return PeerIdentity(role=_check_role(role), name=name)


# ---------------------------------------------------------------------------------------
# authorization


def peer_identity(context: grpc.ServicerContext) -> PeerIdentity:
    """The caller's role and name, from the common name of its verified certificate.

    Raises :class:`PheFlError` when the call is not authenticated by a certificate or the
    common name is not ``<role>:<id>`` with a known role.
    """
    auth: Mapping[str, Sequence[bytes]] = context.auth_context() or {}
    values = list(auth.get("x509_common_name", ()))
    if len(values) != 1:
        raise PheFlError(
            "peer is not authenticated by a federation certificate"
            if not values
            else "peer certificate has several common names"
        )
    raw = values[0]
    try:
        cn = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
    except UnicodeDecodeError:
        raise PheFlError("peer certificate common name is not UTF-8") from None
    role, sep, name = cn.partition(":")
    if not sep or role not in ROLES or _ID_RE.fullmatch(name) is None:
        raise PheFlError(
            f"peer certificate common name {cn[:80]!r} is not <role>:<id> "
            f"with role in {', '.join(ROLES)}"
        )
    return PeerIdentity(role=role, name=name)


def _abort(context: grpc.ServicerContext, code: Any, message: str) -> NoReturn:
    context.abort(code, message)  # raises inside a gRPC handler
    raise RuntimeError(message)  # only reached with a context that does not raise


def _method_name(context: grpc.ServicerContext) -> str:
    """Best effort: the short name of the RPC being served (sync gRPC server)."""
    try:
        method = context._rpc_event.call_details.method  # private, hence the guard
        text = method.decode() if isinstance(method, bytes) else str(method)
        return text.rsplit("/", 1)[-1] or "this method"
    except Exception:
        return "this method"


def require_role(
    context: grpc.ServicerContext, *roles: Role, method: str | None = None
) -> PeerIdentity:
    """Return the caller's identity if its role is one of ``roles``; otherwise abort the
    RPC (UNAUTHENTICATED without a valid identity, PERMISSION_DENIED for a wrong role).

    For synchronous gRPC servicers (``context.abort`` raises there). ``method`` names the
    RPC in the message; by default it is read from the call.
    """
    if not roles:
        raise ParameterError("require_role needs at least one allowed role")
    for r in roles:
        _check_role(r)
    try:
        who = peer_identity(context)
    except PheFlError as exc:
        _abort(context, grpc.StatusCode.UNAUTHENTICATED, str(exc))
    if who.role not in roles:
        _abort(
            context,
            grpc.StatusCode.PERMISSION_DENIED,
            f"peer {who} may not call {method or _method_name(context)}; "
            f"allowed roles: {', '.join(roles)}",
        )
    return who
