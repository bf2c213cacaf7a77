"""Startup kits (``phe-fl provision``) and the signing path that keeps every private key at
its site: ``phe-fl csr`` (key + request), ``phe-fl ca sign``, ``phe-fl csr --install``."""

from __future__ import annotations

import base64
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from phe_fl.cli import main
from phe_fl.errors import ConfigError, ParameterError
from phe_fl.federation.certs import (
    ca_fingerprint,
    certificate_hosts,
    create_ca,
    create_federation,
    identity_host,
    read_certificate,
    read_signing_request,
    sign_request,
)
from phe_fl.federation.config import load_node_config
from phe_fl.federation.provision import (
    kit_install,
    kit_request,
    load_federation,
    load_kit,
    provision,
)

REPO = Path(__file__).resolve().parents[2]

DESCRIPTION = """
[federation]
name = "hospitals"
params = "{params}"

[policy]
allow_decryption = false

[[site]]
id = "site-a"
role = "root"
address = "127.0.0.1:{port}"
listen = "127.0.0.1:{port}"
hosts = ["site-a.example.org"]
[site.data]
path = "data/site-a.csv"

[[site]]
id = "site-b"
[site.data]
path = "data/site-b.csv"

[[site]]
id = "site-c"
role = "leaf"
[site.data]
path = "data/site-c.csv"
[site.policy]
release_statistics = false

[tree]
site-b = "site-a"
site-c = "site-a"

[[querier]]
id = "analyst"
"""

SITES = ("site-a", "site-b", "site-c")


def write_description(
    folder: Path, port: int = 50051, params: str = "insecure-test-n12", text: str = DESCRIPTION
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fed.toml"
    path.write_text(text.format(port=port, params=params))
    return path


def signed_kits(folder: Path, port: int = 50051, params: str = "insecure-test-n12") -> Path:
    """Provision, then for every member: request, sign, install. Returns the kits folder."""
    description = write_description(folder, port, params)
    fed = load_federation(description)
    kits = folder / "kits"
    provision(fed, kits, folder / "ca")
    for member in (*SITES, "analyst"):
        kit, _ = kit_request(kits / member)
        request = read_signing_request(kit.csr)
        sign_request(folder / "ca", request, folder / f"{member}.pem")
        kit_install(kits / member, folder / f"{member}.pem")
    return kits


# -- provision -------------------------------------------------------------------------------
def test_kits_hold_configs_that_load_and_no_private_key(tmp_path: Path) -> None:
    description = write_description(tmp_path)
    result = provision(load_federation(description), tmp_path / "kits", tmp_path / "ca")
    assert result.ca_created and (tmp_path / "ca" / "ca.key").exists()
    assert set(result.kits) == {*SITES, "analyst"}
    assert result.fingerprint == ca_fingerprint(tmp_path / "ca" / "ca.pem")
    for site in SITES:
        kit = tmp_path / "kits" / site
        assert sorted(p.name for p in kit.iterdir()) == [
            "README.md",
            "ca.pem",
            "kit.toml",
            "node.toml",
            "start.sh",
        ]
        cfg = load_node_config(kit / "node.toml")
        assert cfg.id == site and cfg.params == "insecure-test-n12" and cfg.n_parties == 3
        assert cfg.tls.cert == kit / f"{site}.pem" and cfg.tls.ca == kit / "ca.pem"
        assert cfg.state_dir == kit / "state"
        assert cfg.data.path == kit / "data" / f"{site}.csv"
        assert cfg.policy.queriers == ("analyst",)
        assert os.access(kit / "start.sh", os.X_OK)
        assert 'phe-fl" node --config node.toml' in (kit / "start.sh").read_text().replace(
            "${PHE_FL:-phe-fl}", "phe-fl"
        )
        readme = (kit / "README.md").read_text()
        assert f"phe-fl csr --kit . --install {site}.pem" in readme
        assert result.fingerprint in readme
    root = load_node_config(tmp_path / "kits" / "site-a" / "node.toml")
    assert root.is_root and root.listen == "127.0.0.1:50051"
    assert set(root.children) == {"site-b", "site-c"}
    leaf = load_node_config(tmp_path / "kits" / "site-c" / "node.toml")
    assert leaf.parent is not None and leaf.parent.address == "127.0.0.1:50051"
    assert leaf.listen is None and leaf.party == 2
    assert leaf.policy.release_statistics is False  # the site's override
    assert root.policy.release_statistics is True
    querier = tmp_path / "kits" / "analyst"
    assert sorted(p.name for p in querier.iterdir()) == [
        "README.md",
        "ca.pem",
        "kit.toml",
        "querier.env",
    ]
    env = (querier / "querier.env").read_text()
    assert "PHE_FL_ROOT=127.0.0.1:50051" in env and "PHE_FL_NAME=analyst" in env
    for path in (tmp_path / "kits").rglob("*"):
        if path.is_file():
            assert b"PRIVATE KEY" not in path.read_bytes(), path
            assert path.suffix not in (".key", ".pem") or path.name == "ca.pem", path


def test_kit_manifest_names_the_member_and_its_hosts(tmp_path: Path) -> None:
    provision(load_federation(write_description(tmp_path)), tmp_path / "kits", tmp_path / "ca")
    kit = load_kit(tmp_path / "kits" / "site-a")
    assert (kit.role, kit.id) == ("node", "site-a")
    assert kit.hosts == ("127.0.0.1", "site-a.example.org")
    assert load_kit(tmp_path / "kits" / "analyst").role == "querier"
    assert load_kit(tmp_path / "kits" / "site-b").hosts == ()


def test_existing_kits_are_kept_unless_overwrite_and_keys_survive_it(tmp_path: Path) -> None:
    fed = load_federation(write_description(tmp_path))
    provision(fed, tmp_path / "kits", tmp_path / "ca")
    with pytest.raises(ParameterError, match="refusing to overwrite existing kits"):
        provision(fed, tmp_path / "kits", tmp_path / "ca")
    kit, created = kit_request(tmp_path / "kits" / "site-b")
    assert created
    key = kit.key.read_bytes()
    result = provision(fed, tmp_path / "kits", tmp_path / "ca", overwrite=True)
    assert not result.ca_created  # the CA folder's CA is reused
    assert kit.key.read_bytes() == key


def test_the_ca_folder_may_not_lie_in_the_kits(tmp_path: Path) -> None:
    fed = load_federation(write_description(tmp_path))
    with pytest.raises(ParameterError, match="must not lie inside the kits folder"):
        provision(fed, tmp_path / "kits", tmp_path / "kits" / "ca")


def test_an_existing_ca_is_used(tmp_path: Path) -> None:
    create_ca(tmp_path / "ca")
    fed = load_federation(write_description(tmp_path))
    result = provision(fed, tmp_path / "kits", tmp_path / "ca")
    assert not result.ca_created
    kit_ca = (tmp_path / "kits" / "site-a" / "ca.pem").read_bytes()
    assert kit_ca == (tmp_path / "ca" / "ca.pem").read_bytes()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("allow_decryption = false", "allow_decrypt = false", "did you mean 'allow_decryption'"),
        ('name = "hospitals"', 'nmae = "hospitals"', "unknown key 'nmae'; did you mean 'name'"),
        ('params = "insecure-test-n12"', 'params = "n99"', "unknown parameter set"),
        ('site-c = "site-a"\n', "", "exactly one site must have no parent"),
        ('site-b = "site-a"', 'site-b = "site-c"\nsite-a = "site-b"', "exactly one site"),
        ('site-b = "site-a"', 'site-b = "site-x"', "parent 'site-x' of 'site-b'"),
        ('role = "root"', 'role = "leaf"', "role is 'leaf' but [tree] makes it 'root'"),
        ('role = "leaf"', 'role = "boss"', "role 'boss' must be one of"),
        ('id = "site-b"', 'id = "site-b"\naddress = "127.0.0.1:9"', "a leaf does not listen"),
        ('address = "127.0.0.1:50051"\n', "", "the root needs address"),
        ('[[querier]]\nid = "analyst"', '[[querier]]\nid = "x y"', "id 'x y' must be"),
        ("[site.policy]", '[site.policy]\nqueriers = ["nobody"]', "querier 'nobody' is not"),
        ('id = "site-c"', 'id = "site-c"\nparty = 0', "party 0 is the root's"),
        ('id = "site-c"', 'id = "site-c"\nparty = 3', "party 3 must be in 0..2"),
        ('id = "site-c"', 'id = "site-b"', "site 'site-b' is declared twice"),
        ('listen = "127.0.0.1:50051"', 'listen = "127.0.0.1"', "listen '127.0.0.1' must be"),
        ('address = "127.0.0.1:50051"', 'address = "0.0.0.0:50051"', "not what it binds"),
        ('id = "site-b"', 'id = "site-b"\nmetrics = "0.0.0.0"', "metrics '0.0.0.0' must be"),
        ('id = "site-b"', 'id = "site-b"\nmetrics = "h:99999"', "metrics 'h:99999' must be"),
        ('id = "site-b"', 'id = "site-b"\nmetrics = 9100', "metrics must be str"),
        ('id = "site-b"', 'id = "site-b"\nmetric = "0.0.0.0:9100"', "did you mean 'metrics'"),
        (
            'listen = "127.0.0.1:50051"',
            'listen = "127.0.0.1:50051"\nmetrics = "0.0.0.0:50051"',
            "listen '127.0.0.1:50051' and metrics '0.0.0.0:50051' use the same port",
        ),
        (
            'id = "site-b"',
            'id = "site-b"\nhealth = "0.0.0.0:9000"\nmetrics = "127.0.0.1:9000"',
            "use the same port",
        ),
    ],
)
def test_description_mistakes_are_named(tmp_path: Path, old: str, new: str, message: str) -> None:
    text = DESCRIPTION.format(port=50051, params="insecure-test-n12")
    assert old in text, old
    path = tmp_path / "fed.toml"
    path.write_text(text.replace(old, new, 1))
    with pytest.raises(ConfigError) as err:
        load_federation(path)
    assert message in str(err.value)
    assert str(path) in str(err.value)


def test_health_and_metrics_addresses_go_into_node_toml(tmp_path: Path) -> None:
    text = DESCRIPTION.replace(
        'id = "site-b"', 'id = "site-b"\nhealth = "0.0.0.0:9000"\nmetrics = "0.0.0.0:9100"'
    ).replace(
        'hosts = ["site-a.example.org"]',
        'hosts = ["site-a.example.org"]\nmetrics = "[::]:9100"',
    )
    fed = load_federation(write_description(tmp_path, text=text))
    assert fed.site("site-b").metrics == "0.0.0.0:9100"
    assert fed.site("site-c").metrics is None
    provision(fed, tmp_path / "kits", tmp_path / "ca")
    kits = tmp_path / "kits"
    leaf = load_node_config(kits / "site-b" / "node.toml")
    assert (leaf.health, leaf.metrics) == ("0.0.0.0:9000", "0.0.0.0:9100")
    assert load_node_config(kits / "site-a" / "node.toml").metrics == "[::]:9100"
    assert load_node_config(kits / "site-c" / "node.toml").metrics is None
    readme = (kits / "site-b" / "README.md").read_text()
    assert "Prometheus metrics at `http://0.0.0.0:9100/metrics`" in readme
    assert "metrics" not in (kits / "site-c" / "README.md").read_text()


def test_explicit_parties_and_data_passed_verbatim(tmp_path: Path) -> None:
    text = DESCRIPTION.replace('id = "site-b"', 'id = "site-b"\nparty = 2').replace(
        'path = "data/site-b.csv"', 'path = "data/site b \\"1\\" \u00e9.csv"'
    )
    fed = load_federation(write_description(tmp_path, text=text))
    assert {s.id: s.party for s in fed.sites} == {"site-a": 0, "site-b": 2, "site-c": 1}
    provision(fed, tmp_path / "kits", tmp_path / "ca")
    cfg = load_node_config(tmp_path / "kits" / "site-b" / "node.toml")
    assert cfg.data.path == tmp_path / "kits" / "site-b" / "data" / 'site b "1" \u00e9.csv'


def test_fedavg_apps_go_into_every_node_toml_and_a_site_may_override_them(
    tmp_path: Path,
) -> None:
    app = "phe_fl.fedavg.examples:digits_mlp"
    text = DESCRIPTION.replace(
        "[[site]]",
        f'[fedavg]\napps = {{{{ digits = "{app}" }}}}\noptions = {{{{ shards = 3 }}}}\n'
        "threads = 1\n\n[[site]]",
        1,
    ).replace(
        "[site.policy]\nrelease_statistics = false",
        "[site.policy]\nrelease_statistics = false\n"
        "[site.fedavg]\noptions = {{ shards = 3, shard = 2 }}",  # DESCRIPTION is formatted
    )
    fed = load_federation(write_description(tmp_path, text=text))
    provision(fed, tmp_path / "kits", tmp_path / "ca")
    configs = {s: load_node_config(tmp_path / "kits" / s / "node.toml") for s in SITES}
    assert all(dict(c.fedavg.apps) == {"digits": app} for c in configs.values())
    assert dict(configs["site-b"].fedavg.options) == {"shards": 3}
    assert dict(configs["site-c"].fedavg.options) == {"shards": 3, "shard": 2}
    assert configs["site-a"].fedavg.threads == 1
    readme = (tmp_path / "kits" / "site-c" / "README.md").read_text()
    assert f"FedAvg apps (`[fedavg]` in `node.toml`): `digits` (`{app}`)" in readme
    bad = text.replace("threads = 1", "thread = 1")  # the node's own config check names it
    fed = load_federation(write_description(tmp_path / "bad", text=bad))
    with pytest.raises(ConfigError, match="node config would be refused.*thread"):
        provision(fed, tmp_path / "bad" / "kits", tmp_path / "bad" / "ca")


def test_a_data_key_the_node_refuses_stops_provisioning(tmp_path: Path) -> None:
    text = DESCRIPTION.replace('path = "data/site-b.csv"', 'dataset = "x"\npath = "y.csv"')
    fed = load_federation(write_description(tmp_path, text=text))
    with pytest.raises(ConfigError, match="site site-b: its node config would be refused"):
        provision(fed, tmp_path / "kits", tmp_path / "ca")
    assert not (tmp_path / "kits").exists() and not (tmp_path / "ca").exists()


# -- csr / sign / install ----------------------------------------------------------------------
def test_the_whole_signing_path(tmp_path: Path) -> None:
    kits = signed_kits(tmp_path)
    key = kits / "site-a" / "site-a.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert stat.S_IMODE((kits / "site-a").stat().st_mode) == 0o700
    cert = read_certificate(kits / "site-a" / "site-a.pem")
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert cn == "node:site-a"
    assert certificate_hosts(cert) == ["site-a.example.org", identity_host("site-a"), "127.0.0.1"]
    leaf = read_certificate(kits / "site-b" / "site-b.pem")
    assert certificate_hosts(leaf) == [identity_host("site-b")]
    querier = read_certificate(kits / "analyst" / "analyst.pem")
    assert certificate_hosts(querier) == []
    for folder in kits.iterdir():  # a CSR holds no secret
        for csr in folder.glob("*.csr"):
            assert b"PRIVATE" not in csr.read_bytes()


def test_a_second_request_reuses_the_key(tmp_path: Path) -> None:
    provision(load_federation(write_description(tmp_path)), tmp_path / "kits", tmp_path / "ca")
    kit, created = kit_request(tmp_path / "kits" / "site-b")
    first = kit.key.read_bytes()
    again, created_again = kit_request(tmp_path / "kits" / "site-b")
    assert created and not created_again and again.key.read_bytes() == first


def _csr(
    cn: str, hosts: list[str] | None = None, key: ec.EllipticCurvePrivateKey | None = None
) -> tuple[bytes, ec.EllipticCurvePrivateKey]:
    key = key or ec.generate_private_key(ec.SECP256R1())
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if hosts:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName(h) for h in hosts]), critical=False
        )
    csr = builder.sign(key, hashes.SHA256())
    return csr.public_bytes(serialization.Encoding.PEM), key


@pytest.mark.parametrize(
    ("cn", "hosts", "message"),
    [
        ("admin:site-a", None, "must be node:<id> or querier:<id>"),
        ("site-a", None, "must be node:<id> or querier:<id>"),
        ("node:site a", None, "invalid node id 'site a'"),
        ("node:site-b", ["site-a.node.phe-fl"], "not its own"),
        ("node:site-b", ["*.example.org"], "wildcard"),
        ("querier:analyst", ["site-a.node.phe-fl"], "not its own"),
    ],
)
def test_requests_with_a_bad_identity_are_refused(
    tmp_path: Path, cn: str, hosts: list[str] | None, message: str
) -> None:
    pem, _ = _csr(cn, hosts)
    (tmp_path / "x.csr").write_bytes(pem)
    with pytest.raises(ParameterError, match=message):
        read_signing_request(tmp_path / "x.csr")


def test_a_tampered_request_is_refused(tmp_path: Path) -> None:
    pem, _ = _csr("node:site-b")
    der = x509.load_pem_x509_csr(pem).public_bytes(serialization.Encoding.DER)
    assert der.count(b"node:site-b") == 1
    forged = der.replace(b"node:site-b", b"node:site-a")  # same length: still parses
    body = base64.encodebytes(forged).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    text = "-----BEGIN CERTIFICATE REQUEST-----\n" + "\n".join(lines)
    (tmp_path / "x.csr").write_text(text + "\n-----END CERTIFICATE REQUEST-----\n")
    with pytest.raises(ParameterError, match="signature does not verify"):
        read_signing_request(tmp_path / "x.csr")
    (tmp_path / "y.csr").write_text("not a request")
    with pytest.raises(ParameterError, match="holds no PEM certificate signing request"):
        read_signing_request(tmp_path / "y.csr")


def _sign(tmp_path: Path, *argv: str) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl", "ca", "sign", "--ca", str(tmp_path / "ca"), *argv],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=120,
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_ca_sign_checks_the_request_against_the_description(tmp_path: Path) -> None:
    description = write_description(tmp_path)
    provision(load_federation(description), tmp_path / "kits", tmp_path / "ca")
    fed = ["--federation", str(description)]
    cases = {
        "querier:site-a": "querier:site-a is not a querier of federation 'hospitals'",
        "node:analyst": "node:analyst is not a site of federation 'hospitals'",
        "node:site-z": "node:site-z is not a site",
    }
    for cn, message in cases.items():
        pem, _ = _csr(cn)
        (tmp_path / "r.csr").write_bytes(pem)
        rc, out, err = _sign(tmp_path, "--csr", "r.csr", "--out", "r.pem", *fed)
        assert rc == 2 and message in err and "Traceback" not in err, err
        assert not (tmp_path / "r.pem").exists()
    pem, _ = _csr("node:site-a", ["evil.example.org", "site-a.example.org"])
    (tmp_path / "r.csr").write_bytes(pem)
    rc, _, err = _sign(tmp_path, "--csr", "r.csr", "--out", "r.pem", *fed)
    assert rc == 2 and "asks for evil.example.org" in err, err
    pem, _ = _csr("node:site-a", ["site-a.example.org"])
    (tmp_path / "r.csr").write_bytes(pem)
    rc, out, err = _sign(tmp_path, "--csr", "r.csr", "--out", "r.pem", *fed)
    assert rc == 0, err
    assert "signed node:site-a (site-a.example.org)" in out
    assert certificate_hosts(read_certificate(tmp_path / "r.pem")) == [
        "site-a.example.org",
        identity_host("site-a"),
    ]
    rc, _, err = _sign(tmp_path, "--csr", "r.csr", "--out", "r.pem", *fed)
    assert rc == 2 and "refusing to overwrite" in err


def test_install_refuses_a_certificate_for_another_key_ca_or_member(tmp_path: Path) -> None:
    description = write_description(tmp_path)
    provision(load_federation(description), tmp_path / "kits", tmp_path / "ca")
    kit, _ = kit_request(tmp_path / "kits" / "site-b")
    # the right name, signed by the right CA, but from another key
    pem, _ = _csr("node:site-b")
    (tmp_path / "other.csr").write_bytes(pem)
    sign_request(tmp_path / "ca", read_signing_request(tmp_path / "other.csr"), tmp_path / "o.pem")
    with pytest.raises(ParameterError, match="not for this member's private key"):
        kit_install(kit.folder, tmp_path / "o.pem")
    # this kit's request, signed by another federation's CA
    create_ca(tmp_path / "foreign")
    request = read_signing_request(kit.csr)
    sign_request(tmp_path / "foreign", request, tmp_path / "f.pem")
    with pytest.raises(ParameterError, match="not issued by the federation CA"):
        kit_install(kit.folder, tmp_path / "f.pem")
    # another member's certificate
    kit_c, _ = kit_request(tmp_path / "kits" / "site-c")
    sign_request(tmp_path / "ca", read_signing_request(kit_c.csr), tmp_path / "c.pem")
    with pytest.raises(ParameterError, match="is for node:site-c, not for node:site-b"):
        kit_install(kit.folder, tmp_path / "c.pem")
    assert not kit.cert.exists()  # nothing installed by a refused certificate
    sign_request(tmp_path / "ca", request, tmp_path / "b.pem")
    kit_install(kit.folder, tmp_path / "b.pem")
    assert kit.cert.read_bytes() == (tmp_path / "b.pem").read_bytes()


def test_install_before_a_request_says_what_to_do(tmp_path: Path) -> None:
    provision(load_federation(write_description(tmp_path)), tmp_path / "kits", tmp_path / "ca")
    fed = create_federation(tmp_path / "old", ["site-b"])
    with pytest.raises(ParameterError, match="run `phe-fl csr --kit"):
        kit_install(tmp_path / "kits" / "site-b", fed.nodes["site-b"].cert)


# -- the command line --------------------------------------------------------------------------
def test_cli_provision_csr_sign_install(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    description = write_description(tmp_path)
    kits, ca = tmp_path / "kits", tmp_path / "ca"
    assert main(["ca", "init", "--ca", str(ca)]) == 0
    out = capsys.readouterr().out
    assert ca_fingerprint(ca / "ca.pem") in out
    argv = ["provision", "--federation", str(description), "--out", str(kits), "--ca", str(ca)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "3 site(s), 1 querier(s)" in out and "created the federation CA" not in out
    assert main(["csr", "--kit", str(kits / "site-c")]) == 0
    assert "made the private key" in capsys.readouterr().out
    csr, cert = str(kits / "site-c" / "site-c.csr"), str(tmp_path / "site-c.pem")
    sign = ["ca", "sign", "--ca", str(ca), "--csr", csr, "--out", cert]
    assert main([*sign, "--federation", str(description)]) == 0
    assert main(["csr", "--kit", str(kits / "site-c"), "--install", cert]) == 0
    assert "installed" in capsys.readouterr().out
    assert (kits / "site-c" / "site-c.pem").exists()
    assert main(["ca", "sign", "--ca", str(ca)]) == 2
    assert "needs --csr" in capsys.readouterr().err
    assert main(["ca", "init", "--ca", str(ca)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err


def test_version_and_python_dash_m(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"phe-fl {version('phe-fl')}"
    proc = subprocess.run(
        [sys.executable, "-m", "phe_fl", "--version"],
        capture_output=True,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(REPO)),
        timeout=60,
    )
    assert proc.returncode == 0 and proc.stdout.startswith("phe-fl "), proc.stderr


def test_querier_connection_defaults_come_from_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "PHE_FL_ROOT": "127.0.0.1:9",
        "PHE_FL_CERT": str(tmp_path / "nope.pem"),
        "PHE_FL_KEY": str(tmp_path / "nope.key"),
        "PHE_FL_CA": str(tmp_path / "ca.pem"),
        "PHE_FL_NAME": "analyst",
    }.items():
        monkeypatch.setenv(name, value)
    code = main(["query", "status", "--params", "insecure-test-n12"])
    err = capsys.readouterr().err
    assert code == 2 and "nope.pem" in err, err  # got past argparse: the files were used


def test_predict_output_into_a_missing_folder_is_refused_before_connecting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    samples = tmp_path / "x.csv"
    samples.write_text("1,2\n3,4\n")
    argv = ["predict", "--root", "127.0.0.1:9", "--cert", "a", "--key", "b", "--ca", "c"]
    argv += ["--model", "m", "--input", str(samples), "--output", str(tmp_path / "no" / "p.csv")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--output" in err and "no folder" in err, err


def test_every_policy_key_a_node_accepts_can_be_declared(tmp_path: Path) -> None:
    """The description's [policy] is a node's [policy] (one declaration): the root's
    privacy budget goes into the kits like the other keys."""
    text = DESCRIPTION.replace(
        "[policy]\nallow_decryption = false", "[policy]\nallow_decryption = false\ndp_epsilon = 8.0"
    )
    fed = load_federation(write_description(tmp_path, text=text))
    provision(fed, tmp_path / "kits", tmp_path / "ca")
    policy = load_node_config(tmp_path / "kits" / "site-a" / "node.toml").policy
    assert policy.dp_epsilon == 8.0
