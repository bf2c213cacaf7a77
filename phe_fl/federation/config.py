"""Node configuration: one TOML file per institution.

Example (``nodes/example/node-1.toml``)::

    [node]
    id = "node-1"            # certificate common name is "node:node-1"
    party = 1                # party index; 0 is the root, which leads every protocol
    n_parties = 5
    listen = "127.0.0.1:50052"  # only nodes with children (and the root) listen
    health = "127.0.0.1:9052"   # optional: plaintext gRPC health probes (liveness on "",
                                # readiness on "phe_fl.v2.Ready"), for any node
    params = "n14-depth5-128"

    [tree]
    # the node dials out to its parent; TLS checks the parent's certificate carries the
    # name <id>.node.phe-fl (phe-fl certs writes it into every node certificate)
    parent = { id = "node-0", address = "127.0.0.1:50051" }
    children = ["node-3"]    # ids; each child dials in with a certificate naming it

    [data]
    dataset = "breast_cancer"  # a shipped dataset, split into `shards`, or
    shard = 1                  # `path = "data.csv"` (features..., label)
    shards = 5
    holdout = 0.2              # optional: rows of the dataset no shard gets (query set)

    [tls]
    cert = "certs/nodes/node-1.pem"
    key = "certs/nodes/node-1.key"
    ca = "certs/ca.pem"

    [state]
    dir = "state/node-1"       # what the node must not lose (its key share, keys, models,
                               # jobs, answers, audit.jsonl); default: state/<id> beside this file
    max_answer_bytes = 2147483648  # answers kept for retries (oldest evicted, then refused)

    [policy]
    queriers = ["querier"]     # who may receive results from this node's contributions
    allow_decryption = false   # threshold decryption to the root (e.g. the final model)
    release_statistics = true  # pooled feature means/variances, for standardization (PREPARE)

Relative paths are resolved against the file's folder.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from phe_fl.errors import ConfigError, PheFlError
from phe_fl.mhe import get_parameter_set

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

__all__ = ["ParentLink", "TlsPaths", "DataSource", "Policy", "NodeConfig", "load_node_config"]

_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:(\d{1,5})$")


def _is_address(value: str) -> bool:
    """host:port with a port in 1..65535."""
    match = _ADDRESS.match(value)
    return match is not None and 1 <= int(match[1]) <= 65535


@dataclass(frozen=True)
class ParentLink:
    """Where a node dials out to: its parent's id (checked against the parent's
    certificate) and address."""

    id: str
    address: str


@dataclass(frozen=True)
class TlsPaths:
    cert: Path
    key: Path
    ca: Path


@dataclass(frozen=True)
class DataSource:
    dataset: str | None = None
    path: Path | None = None
    shard: int = 0
    shards: int = 1
    holdout: float = 0.0  # fraction of a named dataset kept out of every shard (for queries)


@dataclass(frozen=True)
class Policy:
    queriers: tuple[str, ...] = ()
    allow_decryption: bool = False
    release_statistics: bool = True


@dataclass(frozen=True)
class NodeConfig:
    id: str
    party: int
    n_parties: int
    listen: str | None
    params: str
    tls: TlsPaths
    parent: ParentLink | None = None
    children: tuple[str, ...] = ()
    data: DataSource = field(default_factory=DataSource)
    policy: Policy = field(default_factory=Policy)
    source: Path | None = None
    state_dir: Path = Path("state")
    max_answer_bytes: int = 2 << 30
    health: str | None = None

    @property
    def is_root(self) -> bool:
        return self.party == 0


def _get(table: dict[str, Any], key: str, typ: type, where: str, default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: missing required field {key!r}")
        return default
    value = table[key]
    if typ is int and isinstance(value, bool) or not isinstance(value, typ):
        raise ConfigError(f"{where}: field {key!r} must be {typ.__name__}, got {value!r}")
    return value


def _parent(tree: dict[str, Any], where: str) -> ParentLink | None:
    raw = tree.get("parent")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{where}: parent must be a table {{ id = "...", address = "host:port" }}, got {raw!r}'
        )
    pid = _get(raw, "id", str, f"{where} parent")
    address = _get(raw, "address", str, f"{where} parent")
    if not _ID.match(pid):
        raise ConfigError(f"{where} parent: id {pid!r} must be 1-64 of A-Z a-z 0-9 _ -")
    if not _is_address(address):
        raise ConfigError(f"{where} parent: address {address!r} must be host:port")
    return ParentLink(pid, address)


def _read_config_text(path: Path) -> str:
    """The node config's text; a path that is missing, a folder or unreadable is a
    ConfigError naming it."""
    try:
        return path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"node config {path} does not exist") from None
    except IsADirectoryError:
        raise ConfigError(f"node config {path} is a folder, not the node's TOML file") from None
    except OSError as exc:
        raise ConfigError(f"node config {path} cannot be read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"node config {path} is not a text file") from None


def load_node_config(path: Path | str) -> NodeConfig:
    """Read and validate a node's TOML file; every error names the file and the field."""
    path = Path(path)
    try:
        raw = tomllib.loads(_read_config_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.parent
    node = raw.get("node", {})
    where = f"{path} [node]"
    node_id = _get(node, "id", str, where)
    if not _ID.match(node_id):
        raise ConfigError(f"{where}: id {node_id!r} must be 1-64 of A-Z a-z 0-9 _ -")
    party = _get(node, "party", int, where)
    n_parties = _get(node, "n_parties", int, where)
    if not 0 <= party < n_parties:
        raise ConfigError(f"{where}: party {party} must be in 0..n_parties-1 ({n_parties - 1})")
    listen = _get(node, "listen", str, where, None)
    if listen is not None and not _is_address(listen):
        raise ConfigError(f"{where}: listen {listen!r} must be host:port")
    health = _get(node, "health", str, where, None)
    if health is not None and not _is_address(health):
        raise ConfigError(f"{where}: health {health!r} must be host:port")
    params = _get(node, "params", str, where)
    try:
        get_parameter_set(params)
    except PheFlError as exc:
        raise ConfigError(f"{where}: {exc}") from None

    tree = raw.get("tree", {})
    where = f"{path} [tree]"
    parent = _parent(tree, where)
    if (parent is None) != (party == 0):
        raise ConfigError(f"{where}: party 0 is the root and has no parent; others need one")
    children = _get(tree, "children", list, where, [])
    for i, child in enumerate(children):
        if not isinstance(child, str) or not _ID.match(child):
            raise ConfigError(
                f"{where}: children[{i}] must be a node id (children dial in; their "
                f"addresses are not needed), got {child!r}"
            )
    if len(set(children)) != len(children):
        raise ConfigError(f"{where}: duplicate child ids")
    if node_id in children or (parent is not None and parent.id in (node_id, *children)):
        raise ConfigError(f"{where}: a node cannot be its own child or its parent's parent")
    if (children or parent is None) and listen is None:
        raise ConfigError(
            f"{path} [node]: listen is required on the root and on nodes with children"
        )
    if listen is not None and parent is not None and not children:
        raise ConfigError(
            f"{path} [node]: a leaf does not listen (it dials out to its parent); remove "
            f"listen = {listen!r}"
        )

    tls = raw.get("tls", {})
    where = f"{path} [tls]"
    tls_paths = TlsPaths(*(base / _get(tls, k, str, where) for k in ("cert", "key", "ca")))

    data = raw.get("data", {})
    where = f"{path} [data]"
    dataset = _get(data, "dataset", str, where, None)
    data_path = _get(data, "path", str, where, None)
    if dataset is not None and data_path is not None:
        raise ConfigError(f"{where}: give either dataset or path, not both")
    shards = _get(data, "shards", int, where, 1)
    shard = _get(data, "shard", int, where, 0)
    if not 0 <= shard < shards:
        raise ConfigError(f"{where}: shard {shard} must be in 0..shards-1 ({shards - 1})")
    holdout = _get(data, "holdout", float, where, 0.0)
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"{where}: holdout must be in [0, 1), got {holdout}")
    source = DataSource(dataset, base / data_path if data_path else None, shard, shards, holdout)

    policy = raw.get("policy", {})
    where = f"{path} [policy]"
    queriers = _get(policy, "queriers", list, where, [])
    if not all(isinstance(q, str) for q in queriers):
        raise ConfigError(f"{where}: queriers must be a list of names")
    pol = Policy(
        tuple(queriers),
        _get(policy, "allow_decryption", bool, where, False),
        _get(policy, "release_statistics", bool, where, True),
    )
    state = raw.get("state", {})
    state_dir = base / _get(state, "dir", str, f"{path} [state]", f"state/{node_id}")
    max_answer_bytes = _get(state, "max_answer_bytes", int, f"{path} [state]", 2 << 30)
    if max_answer_bytes < 1 << 20:
        raise ConfigError(
            f"{path} [state]: max_answer_bytes must be at least 1 MiB (1048576), "
            f"got {max_answer_bytes}"
        )
    return NodeConfig(
        node_id,
        party,
        n_parties,
        listen,
        params,
        tls_paths,
        parent,
        tuple(children),
        source,
        pol,
        path,
        state_dir,
        max_answer_bytes,
        health,
    )
