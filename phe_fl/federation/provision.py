"""Startup kits: from one federation description, one self-contained folder per member.

In the spirit of NVIDIA FLARE's provisioning, a federation is described once and
``phe-fl provision`` writes what each institution's admin (and each querier) needs: a node
config, the CA certificate, a start script and a README with the exact steps. Unlike a
CA that mints every key and ships it, a kit holds **no private key and no certificate**:
the site makes its own key and a signing request (``phe-fl csr --kit``), the federation's
CA operator signs the request (``phe-fl ca sign``), and the site installs the certificate
(``phe-fl csr --kit ... --install``). The private key never leaves the site.

A federation description (``fed.toml``)::

    [federation]
    name = "hospitals"
    params = "n14-depth5-128"   # see `phe-fl params`
    days = 365                  # validity of the member certificates `ca sign` issues

    [policy]                    # every site's policy unless the site overrides a key
    queriers = ["analyst"]      # default: every declared querier
    allow_decryption = false
    release_statistics = true

    [fedavg]                    # optional: every site's [fedavg] (its FedAvg apps) unless
    apps = { mlp = "phe_fl.fedavg.examples:fashion_mnist_mlp" }   # a site overrides a key
    threads = 0

    [[site]]
    id = "site-a"
    role = "root"                        # optional check: root, inner or leaf
    party = 0                            # optional: the root is 0, others in order
    address = "site-a.example.org:50051" # where its children (and queriers) reach it
    listen = "0.0.0.0:50051"             # optional: what it binds (default 0.0.0.0:<port>)
    health = "0.0.0.0:9000"              # optional: plaintext gRPC health probes ([node] health)
    metrics = "0.0.0.0:9100"             # optional: Prometheus metrics, HTTP /metrics
    hosts = ["10.0.0.5"]                 # optional: more names for its certificate
    [site.data]                          # copied verbatim into the node's [data] table
    path = "data/site-a.csv"             # relative to the kit folder

    [[site]]
    id = "site-b"                        # a leaf: no address, it dials out
    [site.data]
    path = "data/site-b.csv"
    [site.policy]
    allow_decryption = false             # overrides the federation's [policy]
    [site.fedavg]                        # optional: overrides the federation's [fedavg]
    options = { path = "/data/fashion-mnist" }

    [tree]                               # the parent of every site but the root
    site-b = "site-a"

    [[querier]]
    id = "analyst"

Kits are written to ``<out>/<id>/`` for every site and querier; ``kit.toml`` in each tells
``phe-fl csr`` who the kit is for.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phe_fl.errors import ConfigError, ParameterError, PheFlError
from phe_fl.federation.certs import (
    Role,
    ca_fingerprint,
    create_ca,
    create_signing_request,
    identity_host,
    install_certificate,
)
from phe_fl.federation.config import NODE_ID, SCHEMA, load_node_config
from phe_fl.mhe import get_parameter_set

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

__all__ = [
    "Site",
    "QuerierSpec",
    "Federation",
    "Kit",
    "ProvisionResult",
    "load_federation",
    "provision",
    "load_kit",
    "kit_request",
    "kit_install",
]

_ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.\-_]+):(?P<port>\d{1,5})$")
_SITE_ROLES = ("root", "inner", "leaf")

_TOP_KEYS = ("federation", "policy", "fedavg", "site", "tree", "querier")
_FEDERATION_KEYS = ("name", "params", "days")
_SITE_KEYS = (
    "id",
    "role",
    "party",
    "address",
    "listen",
    "health",
    "metrics",
    "hosts",
    "data",
    "policy",
    "fedavg",
    "state",
)
_POLICY_KEYS = tuple(SCHEMA["policy"])  # a node's [policy], declared once in config.py
_QUERIER_KEYS = ("id",)
_KIT_KEYS = ("federation", "role", "id", "hosts", "root")


@dataclass(frozen=True)
class Site:
    """One institution: its place in the tree, where it listens, its data and policy."""

    id: str
    party: int
    parent: str | None
    children: tuple[str, ...]
    address: str | None = None
    listen: str | None = None
    health: str | None = None
    metrics: str | None = None
    hosts: tuple[str, ...] = ()
    data: Mapping[str, Any] = field(default_factory=dict)
    policy: Mapping[str, Any] = field(default_factory=dict)
    state: Mapping[str, Any] = field(default_factory=dict)
    fedavg: Mapping[str, Any] = field(default_factory=dict)  # the node's [fedavg] table

    @property
    def role(self) -> str:
        """root, inner (has a parent and children) or leaf."""
        if self.parent is None:
            return "root"
        return "inner" if self.children else "leaf"


@dataclass(frozen=True)
class QuerierSpec:
    id: str


@dataclass(frozen=True)
class Federation:
    """A checked federation description."""

    name: str
    params: str
    sites: tuple[Site, ...]
    queriers: tuple[QuerierSpec, ...]
    days: int = 365
    source: Path | None = None

    @property
    def root(self) -> Site:
        return next(s for s in self.sites if s.parent is None)

    def site(self, site_id: str) -> Site:
        for s in self.sites:
            if s.id == site_id:
                return s
        raise ConfigError(f"no site {site_id!r} in federation {self.name!r}")

    def member_hosts(self, role: Role, name: str) -> tuple[str, ...]:
        """The names a member's certificate may carry (besides a node's identity name);
        a ParameterError when the description declares no such member."""
        if role == "node":
            if not any(s.id == name for s in self.sites):
                raise ParameterError(
                    f"{role}:{name} is not a site of federation {self.name!r} "
                    f"(sites: {', '.join(s.id for s in self.sites)})"
                )
            return site_hosts(self.site(name))
        if not any(q.id == name for q in self.queriers):
            declared = ", ".join(q.id for q in self.queriers) or "none"
            raise ParameterError(
                f"{role}:{name} is not a querier of federation {self.name!r} (queriers: {declared})"
            )
        return ()


def _host_of(address: str) -> str:
    return address.rsplit(":", 1)[0].strip("[]")


def site_hosts(site: Site) -> tuple[str, ...]:
    """The host of the site's address (what its children dial) and its declared hosts."""
    out = [_host_of(site.address)] if site.address else []
    out += [h for h in site.hosts if h not in out]
    return tuple(out)


# -- reading the description ---------------------------------------------------------------
def _refuse_unknown(table: Mapping[str, Any], known: Sequence[str], where: str) -> None:
    """A typo is an error naming the key and the nearest valid one, never ignored."""
    for key in table:
        if key not in known:
            near = difflib.get_close_matches(key, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(known)}"
            raise ConfigError(f"{where}: unknown key {key!r}{hint}")


def _table(raw: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table, got {value!r}")
    return value


def _get(table: Mapping[str, Any], key: str, typ: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing required key {key!r}")
        return default
    value = table[key]
    if (typ is int and isinstance(value, bool)) or not isinstance(value, typ):
        raise ConfigError(f"{where}: {key} must be {typ.__name__}, got {value!r}")
    return value


def _check_id(value: str, where: str) -> str:
    if not NODE_ID.match(value):
        raise ConfigError(f"{where}: id {value!r} must be 1-64 of A-Z a-z 0-9 _ -")
    return value


def _address(value: str | None, key: str, where: str) -> str | None:
    if value is None:
        return None
    match = _ADDRESS.match(value)
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"{where}: {key} {value!r} must be host:port (port 1-65535)")
    return value


def _string_list(table: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    values = _get(table, key, list, where, [])
    if not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{where}: {key} must be a list of non-empty strings")
    return tuple(values)


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"{what} {path} is a folder, not a TOML file") from None
    except OSError as exc:
        raise ConfigError(f"{what} {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path} is not a text file") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None


def load_federation(path: Path | str) -> Federation:
    """Read and check a federation description; every error names the file and the key."""
    path = Path(path)
    raw = _read_toml(path, "federation description")
    _refuse_unknown(raw, _TOP_KEYS, str(path))
    where = f"{path} [federation]"
    fed = _table(raw, "federation", str(path))
    _refuse_unknown(fed, _FEDERATION_KEYS, where)
    name = _get(fed, "name", str, where)
    if not name.strip():
        raise ConfigError(f"{where}: name must not be empty")
    params = _get(fed, "params", str, where)
    try:
        get_parameter_set(params)
    except PheFlError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    days = _get(fed, "days", int, where, 365)
    if days < 1:
        raise ConfigError(f"{where}: days must be at least 1, got {days}")

    queriers_raw = _get(raw, "querier", list, str(path), [])
    queriers: list[QuerierSpec] = []
    for i, q in enumerate(queriers_raw):
        qwhere = f"{path} [[querier]] #{i + 1}"
        if not isinstance(q, dict):
            raise ConfigError(f"{qwhere}: must be a table")
        _refuse_unknown(q, _QUERIER_KEYS, qwhere)
        queriers.append(QuerierSpec(_check_id(_get(q, "id", str, qwhere), qwhere)))
    querier_ids = [q.id for q in queriers]
    if len(set(querier_ids)) != len(querier_ids):
        raise ConfigError(f"{path} [[querier]]: duplicate querier ids")

    policy = _table(raw, "policy", str(path))
    fedavg = _table(raw, "fedavg", str(path))
    _refuse_unknown(policy, _POLICY_KEYS, f"{path} [policy]")

    sites_raw = _get(raw, "site", list, str(path), [])
    if len(sites_raw) < 1:
        raise ConfigError(f"{path}: declare at least one [[site]]")
    tree = _table(raw, "tree", str(path))
    ids: list[str] = []
    for i, s in enumerate(sites_raw):
        swhere = f"{path} [[site]] #{i + 1}"
        if not isinstance(s, dict):
            raise ConfigError(f"{swhere}: must be a table")
        ids.append(_check_id(_get(s, "id", str, swhere), swhere))
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ConfigError(f"{path}: site {dup!r} is declared twice")
    if set(ids) & set(querier_ids):
        both = sorted(set(ids) & set(querier_ids))[0]
        raise ConfigError(f"{path}: {both!r} is both a site and a querier id")

    parents = _tree(tree, ids, path)
    roots = [i for i in ids if i not in parents]
    children = {i: tuple(c for c in ids if parents.get(c) == i) for i in ids}
    parties = _parties(sites_raw, ids, roots[0], path)

    sites: list[Site] = []
    for i, s in enumerate(sites_raw):
        sid = ids[i]
        swhere = f"{path} [[site]] {sid}"
        _refuse_unknown(s, _SITE_KEYS, swhere)
        address = _address(_get(s, "address", str, swhere, None), "address", swhere)
        if address is not None and _host_of(address) in ("0.0.0.0", "::"):
            raise ConfigError(
                f"{swhere}: address {address!r} is where others reach this site, not what it "
                'binds: give its host name or IP (and listen = "0.0.0.0:<port>" to bind all)'
            )
        listen = _address(_get(s, "listen", str, swhere, None), "listen", swhere)
        health = _address(_get(s, "health", str, swhere, None), "health", swhere)
        metrics = _address(_get(s, "metrics", str, swhere, None), "metrics", swhere)
        hosts = _string_list(s, "hosts", swhere)
        site_policy = _table(s, "policy", swhere)
        _refuse_unknown(site_policy, _POLICY_KEYS, f"{swhere} policy")
        merged = {
            "queriers": querier_ids,
            "allow_decryption": False,
            "release_statistics": True,
            **policy,
            **site_policy,
        }
        named = merged["queriers"]
        if not isinstance(named, list) or not all(isinstance(q, str) for q in named):
            raise ConfigError(f"{swhere} policy: queriers must be a list of querier ids")
        for q in named:
            if q not in querier_ids:
                raise ConfigError(
                    f"{swhere} policy: querier {q!r} is not declared as a [[querier]] "
                    f"(declared: {', '.join(querier_ids) or 'none'})"
                )
        site = Site(
            id=sid,
            party=parties[sid],
            parent=parents.get(sid),
            children=children[sid],
            address=address,
            listen=listen,
            health=health,
            metrics=metrics,
            hosts=hosts,
            data=_table(s, "data", swhere),
            policy=merged,
            state=_table(s, "state", swhere),
            fedavg={**fedavg, **_table(s, "fedavg", swhere)},
        )
        declared_role = _get(s, "role", str, swhere, None)
        if declared_role is not None and declared_role not in _SITE_ROLES:
            raise ConfigError(
                f"{swhere}: role {declared_role!r} must be one of {', '.join(_SITE_ROLES)}"
            )
        if declared_role is not None and declared_role != site.role:
            raise ConfigError(
                f"{swhere}: role is {declared_role!r} but [tree] makes it {site.role!r}"
            )
        if site.role == "leaf" and (address or listen):
            raise ConfigError(
                f"{swhere}: a leaf does not listen (it dials out to its parent); remove "
                "address/listen, or give it children in [tree]"
            )
        if site.role != "leaf" and address is None:
            raise ConfigError(
                f'{swhere}: the {site.role} needs address = "host:port", where '
                + (
                    "its children and the queriers reach it"
                    if site.parent is None
                    else "its children reach it"
                )
            )
        _refuse_shared_ports(site, swhere)
        sites.append(site)
    return Federation(name, params, tuple(sites), tuple(queriers), days, path)


_WILDCARD_HOSTS = ("0.0.0.0", "::", "")


def _bound_listen(site: Site) -> str | None:
    """What the node binds for the tree: ``listen``, else all interfaces on the
    address's port (as the kit's node.toml says)."""
    if site.address is None:
        return None
    return site.listen or f"0.0.0.0:{site.address.rsplit(':', 1)[1]}"


def _refuse_shared_ports(site: Site, where: str) -> None:
    """The tree, health and metrics servers are three sockets: two on one port (on one
    host, or one of them on every interface) would stop the node at its start."""
    bound = [
        (key, value)
        for key, value in (
            ("listen", _bound_listen(site)),
            ("health", site.health),
            ("metrics", site.metrics),
        )
        if value is not None
    ]
    for i, (key, value) in enumerate(bound):
        host, port = _host_of(value), value.rsplit(":", 1)[1]
        for other_key, other in bound[i + 1 :]:
            other_host, other_port = _host_of(other), other.rsplit(":", 1)[1]
            if int(port) != int(other_port):
                continue
            if host == other_host or host in _WILDCARD_HOSTS or other_host in _WILDCARD_HOSTS:
                raise ConfigError(
                    f"{where}: {key} {value!r} and {other_key} {other!r} use the same port: "
                    "give each its own"
                )


def _tree(tree: Mapping[str, Any], ids: list[str], path: Path) -> dict[str, str]:
    """``[tree]`` as child -> parent, checked: one root, known ids, no cycle."""
    parents: dict[str, str] = {}
    for child, parent in tree.items():
        if child not in ids:
            near = difflib.get_close_matches(child, ids, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            raise ConfigError(f"{path} [tree]: {child!r} is not a declared site{hint}")
        if not isinstance(parent, str) or parent not in ids:
            raise ConfigError(
                f"{path} [tree]: parent {parent!r} of {child!r} is not a declared site"
            )
        if parent == child:
            raise ConfigError(f"{path} [tree]: {child!r} cannot be its own parent")
        parents[child] = parent
    roots = [i for i in ids if i not in parents]
    if len(roots) != 1:
        raise ConfigError(
            f"{path} [tree]: exactly one site must have no parent (the root); "
            + (f"{', '.join(roots)} have none" if roots else "every site has one (a cycle)")
        )
    for start in ids:
        seen = {start}
        node = start
        while node in parents:
            node = parents[node]
            if node in seen:
                raise ConfigError(f"{path} [tree]: {start!r} is in a cycle")
            seen.add(node)
    return parents


def _parties(sites: list[Any], ids: list[str], root: str, path: Path) -> dict[str, int]:
    """Explicit party indices where given; the root is 0; the rest fill the free indices
    in declaration order."""
    n = len(ids)
    parties: dict[str, int] = {}
    for i, s in enumerate(sites):
        where = f"{path} [[site]] {ids[i]}"
        party = _get(s, "party", int, where, None)
        if party is None:
            continue
        if not 0 <= party < n:
            raise ConfigError(f"{where}: party {party} must be in 0..{n - 1} ({n} sites)")
        if (party == 0) != (ids[i] == root):
            raise ConfigError(f"{where}: party 0 is the root's ({root!r}) and only the root's")
        if party in parties.values():
            raise ConfigError(f"{where}: party {party} is taken by another site")
        parties[ids[i]] = party
    parties.setdefault(root, 0)
    free = iter(p for p in range(n) if p not in parties.values())
    for sid in ids:
        if sid not in parties:
            parties[sid] = next(free)
    return parties


# -- writing TOML ---------------------------------------------------------------------------
def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key, ensure_ascii=False)


def _toml_value(value: Any) -> str:
    """One TOML value (the few types a description can hold); json's string escapes are
    valid TOML basic-string escapes."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        text = repr(value)
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        items = ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + items + " }" if items else "{}"
    raise ConfigError(f"cannot write {value!r} ({type(value).__name__}) to TOML")


def _toml_table(name: str, table: Mapping[str, Any]) -> str:
    lines = [f"[{name}]"] + [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in table.items()]
    return "\n".join(lines) + "\n"


# -- kits -----------------------------------------------------------------------------------
def _node_toml(fed: Federation, site: Site) -> str:
    node: dict[str, Any] = {"id": site.id, "party": site.party, "n_parties": len(fed.sites)}
    listen = _bound_listen(site)
    if listen is not None:
        node["listen"] = listen
    if site.health is not None:
        node["health"] = site.health
    if site.metrics is not None:
        node["metrics"] = site.metrics
    node["params"] = fed.params
    tree: dict[str, Any] = {}
    if site.parent is not None:
        parent = fed.site(site.parent)
        tree["parent"] = {"id": parent.id, "address": parent.address}
    tree["children"] = list(site.children)
    state = {"dir": "state", **site.state}
    tls = {"cert": f"{site.id}.pem", "key": f"{site.id}.key", "ca": "ca.pem"}
    parts = [
        f"# {site.id}: a node of federation {fed.name!r}, written by `phe-fl provision`.\n"
        "# Paths are relative to this folder. The key and certificate appear after\n"
        "# `phe-fl csr --kit .` and `phe-fl csr --kit . --install <id>.pem` (see README.md).\n",
        _toml_table("node", node),
        _toml_table("tree", tree),
    ]
    if site.data:
        parts.append(_toml_table("data", site.data))
    if site.fedavg:
        parts.append(_toml_table("fedavg", site.fedavg))
    parts += [_toml_table("tls", tls), _toml_table("state", state)]
    parts.append(_toml_table("policy", site.policy))
    return "\n".join(parts)


def _kit_toml(fed: Federation, role: Role, member: str, hosts: Sequence[str]) -> str:
    kit: dict[str, Any] = {"federation": fed.name, "role": role, "id": member}
    kit["hosts"] = list(hosts)
    if role == "querier":
        kit["root"] = fed.root.address
    return (
        "# Who this kit is for: read by `phe-fl csr --kit`. Written by `phe-fl provision`.\n"
        + _toml_table("kit", kit)
    )


_START_SH = """#!/bin/sh
# Start this site's phe-fl node (from any folder). PHE_FL may name the phe-fl executable.
set -eu
cd "$(dirname "$0")"
exec "${PHE_FL:-phe-fl}" node --config node.toml "$@"
"""


def _policy_words(policy: Mapping[str, Any]) -> str:
    queriers = ", ".join(policy.get("queriers", [])) or "nobody"
    decrypt = "allowed" if policy.get("allow_decryption", False) else "not allowed"
    stats = "released" if policy.get("release_statistics", True) else "not released"
    return (
        f"results go only to the queriers {queriers}; decrypting a model is {decrypt}; "
        f"pooled feature statistics are {stats}"
    )


def _site_readme(fed: Federation, site: Site, fingerprint: str) -> str:
    params = get_parameter_set(fed.params)
    security = "128-bit security" if params.secure else "INSECURE, for tests only"
    n = len(fed.sites)
    lines = [
        f"# Startup kit of site `{site.id}`, federation `{fed.name}`",
        "",
        f"This folder is everything `{site.id}` needs to run its phe-fl node. It holds no "
        "private key and no certificate: your key is made in this folder and never leaves it.",
        "",
        f"- Role: {site.role}, party {site.party} of {n}; parameter set `{fed.params}` "
        f"({security}).",
    ]
    if site.parent is not None:
        parent = fed.site(site.parent)
        lines.append(
            f"- Parent: `{parent.id}` at `{parent.address}`; this node dials out to it "
            "(outbound TCP only) and checks its certificate names `"
            f"{identity_host(parent.id)}`."
        )
    if site.address is not None:
        node_port = site.address.rsplit(":", 1)[1]
        who = ", ".join(f"`{c}`" for c in site.children)
        extra = " and the queriers" if site.parent is None else ""
        lines.append(
            f"- Listens: `{site.listen or '0.0.0.0:' + node_port}`; others reach it at "
            f"`{site.address}`: open TCP port {node_port} to its children ({who}){extra}."
        )
    else:
        lines.append("- Listens on no port (a leaf needs no inbound connection).")
    local = []
    if site.health is not None:
        local.append(f"gRPC health probes on `{site.health}`")
    if site.metrics is not None:
        local.append(f"Prometheus metrics at `http://{site.metrics}/metrics`")
    if local:
        lines.append(
            f"- Serves {' and '.join(local)}: plaintext, for this site's own monitoring; "
            "never open these ports to other sites."
        )
    data = ", ".join(f"{k} = {_toml_value(v)}" for k, v in site.data.items()) or "none"
    lines += [
        f"- Data (`[data]` in `node.toml`): {data}.",
        f"- Policy: {_policy_words(site.policy)}.",
    ]
    apps = site.fedavg.get("apps", {})
    if isinstance(apps, dict) and apps:
        declared = ", ".join(f"`{name}` (`{entry}`)" for name, entry in apps.items())
        lines.append(
            f"- FedAvg apps (`[fedavg]` in `node.toml`): {declared}; they must be importable "
            "by this node's Python (`pip install 'phe-fl[torch]'` and the app's package; in "
            "the container image, built with `PHE_FL_EXTRAS=torch`, a module in this kit's "
            "`apps/` folder is importable as it is)."
        )
    lines += [
        "",
        "CA certificate fingerprint (SHA-256):",
        "",
        f"    {fingerprint}",
        "",
        "Before anything else, compare it with the fingerprint your federation's CA operator "
        "reads out to you over a channel you trust (phone, in person): `ca.pem` decides whom "
        "your node trusts. `phe-fl csr` prints it too.",
        "",
        "## Steps",
        "",
        "1. Install phe-fl (`pip install phe_fl-<version>-py3-none-any.whl`, CPython 3.10 or "
        "3.12); `phe-fl --version` must answer.",
        "2. Put this site's data where `node.toml`'s `[data]` table says (relative paths are "
        "relative to this folder); edit `[data]` if your file lives elsewhere or its "
        "columns differ. Every site's file must have the same feature columns, in the same "
        "order; step 6 loads it and prints its shape.",
        "3. `phe-fl csr --kit .` makes this site's private key "
        f"`{site.id}.key` (mode 0600: never send it, never copy it off this machine) and "
        f"the signing request `{site.id}.csr`.",
        f"4. Send `{site.id}.csr` to the CA operator (it holds no secret; e-mail is fine). "
        f"They run `phe-fl ca sign --ca <CA folder> --csr {site.id}.csr --out {site.id}.pem "
        f"--federation <description>` and send `{site.id}.pem` back.",
        f"5. `phe-fl csr --kit . --install {site.id}.pem` checks the certificate is for this "
        "site, this key and this federation's CA, and puts it in place.",
        "6. `phe-fl preflight --config node.toml` checks files, permissions, the certificate, "
        "the parent's reachability, the data and the parameters: fix every ERROR line.",
        "7. `./start.sh` runs the node (`phe-fl node --config node.toml`) until stopped; run it "
        "under your service manager. Start the root first; a child keeps retrying until its "
        "parent answers.",
        "",
        "The node keeps its key share, keys, models and audit log (`state/audit.jsonl`) in "
        "`state/`: back it up, keep it private; losing it means a new key generation for the "
        "whole federation.",
        "",
        "Files: `node.toml` (this node's config), `ca.pem` (the federation CA), `start.sh`, "
        "`kit.toml` (who this kit is for), this README; after the steps: "
        f"`{site.id}.key`, `{site.id}.csr`, `{site.id}.pem`, `state/`.",
        "",
    ]
    return "\n".join(lines)


def _querier_env(fed: Federation, querier: QuerierSpec) -> str:
    return (
        "# Connection defaults for phe-fl's querier commands (query, jobs, models, predict).\n"
        "# From this folder:  set -a; . ./querier.env; set +a\n"
        f"PHE_FL_ROOT={fed.root.address}\n"
        f"PHE_FL_NAME={querier.id}\n"
        f"PHE_FL_CERT={querier.id}.pem\n"
        f"PHE_FL_KEY={querier.id}.key\n"
        "PHE_FL_CA=ca.pem\n"
    )


def _querier_readme(fed: Federation, querier: QuerierSpec, fingerprint: str) -> str:
    q = querier.id
    allowed = [s.id for s in fed.sites if q in s.policy.get("queriers", [])]
    refusing = [s.id for s in fed.sites if s.id not in allowed]
    note = (
        f"Every site's policy admits `{q}`."
        if not refusing
        else f"Sites whose policy does NOT admit `{q}`: {', '.join(refusing)}; "
        "jobs that need them are refused."
    )
    return "\n".join(
        [
            f"# Querier kit of `{q}`, federation `{fed.name}`",
            "",
            f"The root of the federation is `{fed.root.id}` at `{fed.root.address}`. {note}",
            "",
            "CA certificate fingerprint (SHA-256), to compare with the CA operator's:",
            "",
            f"    {fingerprint}",
            "",
            "## Steps",
            "",
            "1. Install phe-fl; `phe-fl --version` must answer.",
            f"2. `phe-fl csr --kit .` makes your private key `{q}.key` (0600, never send it) "
            f"and the signing request `{q}.csr`.",
            f"3. Send `{q}.csr` to the CA operator; they run `phe-fl ca sign --ca <CA folder> "
            f"--csr {q}.csr --out {q}.pem --federation <description>` and send `{q}.pem` back.",
            f"4. `phe-fl csr --kit . --install {q}.pem`.",
            "5. In this folder, load the connection defaults: `set -a; . ./querier.env; set +a` "
            "(or pass `--root --cert --key --ca --name` to every command).",
            "6. `phe-fl query status` lists the connected sites; once all are there:",
            "   - `phe-fl query setup` (collective keys, once per federation);",
            "   - `phe-fl query train --features <number of feature columns> --job-id model-1`;",
            "   - `phe-fl predict --model model-1 --input samples.csv --output predictions.csv` "
            "(samples: numeric CSV, one row each, features only; progress goes to stderr).",
            "",
        ]
    )


@dataclass(frozen=True)
class ProvisionResult:
    """What :func:`provision` wrote."""

    ca_cert: Path
    ca_created: bool
    fingerprint: str
    kits: Mapping[str, Path]


def _rendered(fed: Federation, fingerprint: str) -> dict[str, dict[str, str]]:
    kits: dict[str, dict[str, str]] = {}
    for site in fed.sites:
        kits[site.id] = {
            "node.toml": _node_toml(fed, site),
            "start.sh": _START_SH,
            "README.md": _site_readme(fed, site, fingerprint),
            "kit.toml": _kit_toml(fed, "node", site.id, site_hosts(site)),
        }
    for querier in fed.queriers:
        kits[querier.id] = {
            "README.md": _querier_readme(fed, querier, fingerprint),
            "querier.env": _querier_env(fed, querier),
            "kit.toml": _kit_toml(fed, "querier", querier.id, ()),
        }
    return kits


def _check_node_configs(kits: Mapping[str, Mapping[str, str]]) -> None:
    """Every node.toml must load with the node's own loader before anything is written."""
    with tempfile.TemporaryDirectory() as tmp:
        for member, files in kits.items():
            if "node.toml" not in files:
                continue
            path = Path(tmp) / member / "node.toml"
            path.parent.mkdir()
            path.write_text(files["node.toml"])
            try:
                load_node_config(path)
            except ConfigError as exc:
                detail = str(exc).replace(str(path), "node.toml")
                raise ConfigError(
                    f"site {member}: its node config would be refused: {detail}"
                ) from None


def _write_text(path: Path, text: str, mode: int) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.chmod(tmp, mode)
    os.replace(tmp, path)


def provision(
    fed: Federation, out: Path, ca_dir: Path, *, overwrite: bool = False
) -> ProvisionResult:
    """Write one kit per site and per querier under ``out``, with the CA certificate of
    ``ca_dir`` (created there, ``ca.pem`` + ``ca.key``, when the folder holds no CA yet).

    No private key is written into any kit. An existing kit folder is refused unless
    ``overwrite``, which rewrites only the files provisioning generates (never a key, a
    certificate or a state folder). Every node config is checked with the node's loader
    before anything is written.
    """
    out, ca_dir = Path(out), Path(ca_dir)
    if out.resolve() in (ca_dir.resolve(), *ca_dir.resolve().parents):
        raise ParameterError(
            f"the CA folder {ca_dir} must not lie inside the kits folder {out}: kits are "
            "shipped to the sites, the CA key never is"
        )
    existing = [out / m for m in (*(s.id for s in fed.sites), *(q.id for q in fed.queriers))]
    busy = [str(p) for p in existing if p.exists() and any(p.iterdir())]
    if busy and not overwrite:
        raise ParameterError(
            "refusing to overwrite existing kits (pass --overwrite to rewrite the generated "
            "files; keys, certificates and state are kept): " + ", ".join(busy)
        )
    ca_cert = ca_dir / "ca.pem"
    ca_created = False
    if not ca_cert.exists() and not (ca_dir / "ca.key").exists():
        kits_preview = _rendered(fed, "(not created yet)")
        _check_node_configs(kits_preview)
        create_ca(ca_dir)
        ca_created = True
    fingerprint = ca_fingerprint(ca_cert)
    kits = _rendered(fed, fingerprint)
    _check_node_configs(kits)
    ca_bytes = ca_cert.read_bytes()
    written: dict[str, Path] = {}
    for member, files in kits.items():
        folder = out / member
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ca.pem").write_bytes(ca_bytes)
        for name, text in files.items():
            _write_text(folder / name, text, 0o755 if name.endswith(".sh") else 0o644)
        written[member] = folder
    return ProvisionResult(ca_cert, ca_created, fingerprint, written)


# -- at the site: key, request, certificate ------------------------------------------------
@dataclass(frozen=True)
class Kit:
    """A kit folder and who it is for (its ``kit.toml``)."""

    folder: Path
    federation: str
    role: Role
    id: str
    hosts: tuple[str, ...]

    @property
    def key(self) -> Path:
        return self.folder / f"{self.id}.key"

    @property
    def csr(self) -> Path:
        return self.folder / f"{self.id}.csr"

    @property
    def cert(self) -> Path:
        return self.folder / f"{self.id}.pem"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.pem"


def load_kit(folder: Path | str) -> Kit:
    """Read ``kit.toml`` of a kit folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ConfigError(
            f"kit {folder} is not a folder (give the folder `phe-fl provision` wrote)"
        )
    path = folder / "kit.toml"
    raw = _read_toml(path, "kit manifest")
    where = f"{path} [kit]"
    kit = _table(raw, "kit", str(path))
    _refuse_unknown(kit, _KIT_KEYS, where)
    role = _get(kit, "role", str, where)
    if role not in ("node", "querier"):
        raise ConfigError(f"{where}: role must be node or querier, got {role!r}")
    member = _check_id(_get(kit, "id", str, where), where)
    hosts = _string_list(kit, "hosts", where)
    return Kit(folder, _get(kit, "federation", str, where), role, member, hosts)


def kit_request(folder: Path | str) -> tuple[Kit, bool]:
    """Make the kit's private key (if it has none) and its signing request; returns the
    kit and whether a new key was made."""
    kit = load_kit(folder)
    created = create_signing_request(kit.key, kit.csr, kit.role, kit.id, kit.hosts)
    return kit, created


def kit_install(folder: Path | str, cert: Path | str) -> Kit:
    """Check the certificate the CA operator sent back and put it into the kit."""
    kit = load_kit(folder)
    if not kit.key.exists():
        raise ParameterError(
            f"kit {kit.folder} has no private key {kit.key.name}: run `phe-fl csr --kit "
            f"{kit.folder}` first (the certificate must be signed from this kit's request)"
        )
    install_certificate(Path(cert), kit.key, kit.ca, kit.role, kit.id, kit.cert)
    return kit
