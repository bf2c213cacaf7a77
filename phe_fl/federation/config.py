"""Node configuration: one TOML file per institution.

Example (``nodes/example/node-1.toml``)::

    [node]
    id = "node-1"            # certificate common name is "node:node-1"
    party = 1                # party index; 0 is the root, which leads every protocol
    n_parties = 5
    listen = "127.0.0.1:50052"  # only nodes with children (and the root) listen
    metrics = "127.0.0.1:9152"  # optional: Prometheus metrics (plaintext HTTP, /metrics)
    health = "127.0.0.1:9052"   # optional: plaintext gRPC health probes (liveness on "",
                                # readiness on "phe_fl.v2.Ready"), for any node
    params = "n14-depth5-128"

    [tree]
    # the node dials out to its parent; TLS checks the parent's certificate carries the
    # name <id>.node.phe-fl (phe-fl certs writes it into every node certificate)
    parent = { id = "node-0", address = "127.0.0.1:50051" }
    children = ["node-3"]    # ids; each child dials in with a certificate naming it

    [data]
    dataset = "breast_cancer"  # a shipped dataset (breast_cancer, diabetes, digits),
    shard = 1                  # split into `shards`; this node holds shard `shard`
    shards = 5
    holdout = 0.2              # optional: rows of the dataset no shard gets (query set)
    # or this node's own file (see phe_fl.federation.data for the rules):
    # path = "site.csv"        # CSV or Parquet (.parquet/.pq)
    # format = "csv"           # optional: "csv" or "parquet" whatever the suffix
    # header = true            # CSV: optional; by default a first row of text is a header
    # delimiter = ","          # CSV: optional
    # label = "diagnosis"      # the label column (headerless CSV: the last column)
    # features = ["radius", "texture"]  # default: every other column, in file order
    # classes = ["B", "M"]     # string labels, mapped to 0, 1, ... in this order
    # impute = "mean"          # missing feature values: refused unless declared
    # scale = { area = 1000.0 }  # declared divisors, applied to queries too

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
    dp_epsilon = 8.0           # optional, at the root: the differential-privacy budget every
    dp_delta = 1e-5            # trained model spends from; a job past it (or without DP) is refused
    release_aggregates = true  # FedAvg: decrypt the sum of every party's update (never one alone)
    release_fedavg_model = true  # at the root: a FedAvg job's final model goes to its querier

    [fedavg]                   # optional: the site's own training code for FedAvg jobs
    apps = { fmnist = "phe_fl.fedavg.examples:fashion_mnist_cnn" }  # name -> module:factory
    options = { shard = 0, shards = 3 }  # given to every app factory (this site's data)
    threads = 0                # encryption threads (0: every core)

Relative paths are resolved against the file's folder. Every table and key is declared
once (:data:`SCHEMA`); an unknown table or key is refused, naming the nearest valid one.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from phe_fl.errors import ConfigError, PheFlError
from phe_fl.mhe import PARAMETER_SETS, get_parameter_set
from phe_fl.ml.datasets import DATASETS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10
    import tomli as tomllib

__all__ = [
    "ParentLink",
    "TlsPaths",
    "DataSource",
    "Policy",
    "NodeConfig",
    "SCHEMA",
    "NODE_ID",
    "Key",
    "load_node_config",
]

NODE_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What a node or querier id may be (it goes into certificate names and file names)."""
_ADDRESS = re.compile(r"^[A-Za-z0-9.\-\[\]:]+:(\d{1,5})$")


def _is_address(value: str) -> bool:
    """host:port with a port in 1..65535."""
    match = _ADDRESS.match(value)
    return match is not None and 1 <= int(match[1]) <= 65535


# -- the one declaration of every table and key -------------------------------------------
_REQUIRED: Any = object()


@dataclass(frozen=True)
class Key:
    """One TOML key: its type (an int is accepted for a float) and its default
    (:data:`_REQUIRED` when the key must be given)."""

    type: type
    default: Any = _REQUIRED


SCHEMA: dict[str, dict[str, Key]] = {
    "node": {
        "id": Key(str),
        "party": Key(int),
        "n_parties": Key(int),
        "listen": Key(str, None),
        "health": Key(str, None),
        "metrics": Key(str, None),
        "params": Key(str),
    },
    "tree": {"parent": Key(object, None), "children": Key(list, [])},
    "data": {
        "dataset": Key(str, None),
        "shard": Key(int, 0),
        "shards": Key(int, 1),
        "holdout": Key(float, 0.0),
        "path": Key(str, None),
        "format": Key(str, None),
        "header": Key(bool, None),
        "delimiter": Key(str, ","),
        "label": Key(str, None),
        "features": Key(list, None),
        "classes": Key(list, None),
        "impute": Key(str, None),
        "scale": Key(dict, {}),
    },
    "tls": {"cert": Key(str), "key": Key(str), "ca": Key(str)},
    "state": {"dir": Key(str, None), "max_answer_bytes": Key(int, 2 << 30)},
    "policy": {
        "queriers": Key(list, []),
        "allow_decryption": Key(bool, False),
        "release_statistics": Key(bool, True),
        "dp_epsilon": Key(float, None),
        "dp_delta": Key(float, 1e-5),
        "release_aggregates": Key(bool, True),
        "release_fedavg_model": Key(bool, True),
    },
    "fedavg": {"apps": Key(dict, {}), "options": Key(dict, {}), "threads": Key(int, 0)},
}
"""Every table of a node's TOML and every key it may hold; anything else is refused."""

_PARENT: dict[str, Key] = {"id": Key(str), "address": Key(str)}
"""The keys of ``[tree] parent = { ... }``."""

_SPLIT_KEYS = ("shard", "shards", "holdout")  # split a named dataset
_CSV_KEYS = ("header", "delimiter")  # read a CSV file
_FILE_KEYS = ("path", "format", *_CSV_KEYS)
DataFormat = Literal["csv", "parquet"]


def _suggest(name: str, valid: Mapping[str, object] | tuple[str, ...], brackets: bool) -> str:
    """`` (did you mean 'x'?)`` for the nearest valid name, else the list of valid names."""
    fmt = (lambda k: f"[{k}]") if brackets else repr
    close = difflib.get_close_matches(name, list(valid), n=1)
    if close:
        return f" (did you mean {fmt(close[0])}?)"
    return f" (valid: {', '.join(fmt(k) for k in valid)})"


class _Table:
    """One TOML table read against its declaration: unknown keys are refused at once,
    and :meth:`get` returns a declared key's value, type-checked, or its default."""

    def __init__(self, raw: Any, keys: dict[str, Key], where: str) -> None:
        if not isinstance(raw, dict):
            raise ConfigError(f"{where}: must be a table, got {raw!r}")
        for name in raw:
            if name not in keys:
                raise ConfigError(
                    f"{where}: unknown key {name!r}{_suggest(name, keys, brackets=False)}"
                )
        self.raw, self.keys, self.where = raw, keys, where

    def has(self, key: str) -> bool:
        return key in self.raw

    def get(self, key: str) -> Any:
        spec = self.keys[key]
        if key not in self.raw:
            if spec.default is _REQUIRED:
                raise ConfigError(f"{self.where}: missing required field {key!r}")
            return spec.default
        value = self.raw[key]
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if spec.type is int and isinstance(value, bool) or not isinstance(value, spec.type):
            raise ConfigError(
                f"{self.where}: field {key!r} must be {spec.type.__name__}, got {value!r}"
            )
        return value


def _tables(raw: dict[str, Any], path: Path) -> dict[str, _Table]:
    """Every declared table (empty when absent); an unknown table is refused."""
    for name, value in raw.items():
        if name not in SCHEMA:
            what = "table" if isinstance(value, dict) else "top-level key"
            shown = f"[{name}]" if isinstance(value, dict) else repr(name)
            raise ConfigError(
                f"{path}: unknown {what} {shown}{_suggest(name, SCHEMA, brackets=True)}"
            )
    return {
        name: _Table(raw.get(name, {}), keys, f"{path} [{name}]") for name, keys in SCHEMA.items()
    }


# -- the configuration objects ------------------------------------------------------------
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
    """What ``[data]`` declares: a named dataset split into shards, or this node's own
    file, and every transformation the node applies (nothing else is applied: see
    :mod:`phe_fl.federation.data`). The first five fields keep their positions."""

    dataset: str | None = None
    path: Path | None = None
    shard: int = 0
    shards: int = 1
    holdout: float = 0.0  # fraction of a named dataset kept out of every shard (for queries)
    label: str | None = None  # the label column; default: the named dataset's, a
    # headerless CSV's last column (a file with column names must name it)
    features: tuple[str, ...] | None = None  # None: every column but the label
    classes: tuple[str, ...] | None = None  # string labels, mapped to 0, 1, ... in order
    format: DataFormat | None = None  # None: from the file's suffix
    header: bool | None = None  # CSV only; None: a first row of text only is a header
    delimiter: str = ","
    impute: Literal["mean"] | None = None  # missing feature values; None: refused
    scale: tuple[tuple[str, float], ...] = ()  # declared divisors (column, divisor)
    config: Path | None = None  # the node config that declared this, for messages

    @property
    def where(self) -> str:
        """The config table errors name (``node.toml [data]``)."""
        return f"{self.config} [data]" if self.config is not None else "[data]"

    @property
    def file_format(self) -> DataFormat:
        """The declared format, or the one the path's suffix says (CSV unless
        ``.parquet``/``.pq``)."""
        if self.format is not None:
            return self.format
        suffix = self.path.suffix.lower() if self.path is not None else ""
        return "parquet" if suffix in (".parquet", ".pq") else "csv"


@dataclass(frozen=True)
class Policy:
    queriers: tuple[str, ...] = ()
    allow_decryption: bool = False
    release_statistics: bool = True
    dp_epsilon: float | None = None
    """The federation's differential-privacy budget (at the root): the epsilon all trained
    models together may spend at ``dp_delta``; None: no budget, no DP required."""
    dp_delta: float = 1e-5
    release_aggregates: bool = True
    """Decrypt, to the root, the sum of every party's FedAvg update (and nothing else)."""
    release_fedavg_model: bool = True
    """At the root: send a FedAvg job's final model to its querier (False: keep it)."""


@dataclass(frozen=True)
class FedAvgApps:
    """``[fedavg]``: the site's own training code, by name, and what it is built with."""

    apps: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Any] = field(default_factory=dict)
    threads: int = 0  # encryption threads (0: every core)


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
    metrics: str | None = None
    fedavg: FedAvgApps = field(default_factory=FedAvgApps)

    @property
    def is_root(self) -> bool:
        return self.party == 0

    def warnings(self) -> list[str]:
        """What the node must log as a WARNING at every start: a configuration that loads
        but must never hold real data (an insecure parameter set)."""
        out = []
        params = get_parameter_set(self.params)
        if not params.secure:
            secure = ", ".join(sorted(n for n, p in PARAMETER_SETS.items() if p.secure))
            out.append(
                f"{self.source or 'node config'} [node]: parameter set {self.params!r} is NOT "
                f"SECURE (security={params.security!r}, for tests only): never run it on real "
                f"data; use a 128-bit set ({secure})"
            )
        return out


# -- reading ------------------------------------------------------------------------------
def _parent(tree: _Table) -> ParentLink | None:
    raw = tree.get("parent")
    if raw is None or raw == "":
        return None
    if not isinstance(raw, dict):
        raise ConfigError(
            f'{tree.where}: parent must be a table {{ id = "...", address = "host:port" }}, '
            f"got {raw!r}"
        )
    link = _Table(raw, _PARENT, f"{tree.where} parent")
    pid, address = link.get("id"), link.get("address")
    if not NODE_ID.match(pid):
        raise ConfigError(f"{link.where}: id {pid!r} must be 1-64 of A-Z a-z 0-9 _ -")
    if not _is_address(address):
        raise ConfigError(f"{link.where}: address {address!r} must be host:port")
    return ParentLink(pid, address)


def _names(table: _Table, key: str) -> tuple[str, ...] | None:
    """A declared list of distinct, non-empty names (columns, classes), or None."""
    values = table.get(key)
    if values is None:
        return None
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ConfigError(f"{table.where}: {key} must be a non-empty list of names, got {values!r}")
    dup = sorted({v for v in values if values.count(v) > 1})
    if dup:
        raise ConfigError(f"{table.where}: {key} names {', '.join(map(repr, dup))} twice")
    return tuple(values)


def _data_source(data: _Table, base: Path, path: Path) -> DataSource:
    """``[data]``: one source, the keys that fit it, and the declared transformations."""
    where = data.where
    dataset, data_path = data.get("dataset"), data.get("path")
    if dataset is not None and data_path is not None:
        raise ConfigError(f"{where}: give either dataset or path, not both")
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(
            f"{where}: unknown dataset {dataset!r}{_suggest(dataset, DATASETS, brackets=False)}"
        )
    if dataset is None:
        given = [k for k in _SPLIT_KEYS if data.has(k)]
        if given:
            raise ConfigError(
                f"{where}: {', '.join(given)} split a named dataset; a data file is this "
                "node's own shard (remove them or use dataset = ...)"
            )
    if data_path is None:
        given = [k for k in _FILE_KEYS if data.has(k)]
        if given:
            raise ConfigError(f"{where}: {', '.join(given)} describe a data file (path = ...)")
    if dataset is None and data_path is None:
        given = [k for k in SCHEMA["data"] if data.has(k)]
        if given:
            raise ConfigError(f"{where}: {', '.join(given)} need a dataset or a path")
    shards, shard = data.get("shards"), data.get("shard")
    if shards < 1:
        raise ConfigError(f"{where}: shards must be at least 1, got {shards}")
    if not 0 <= shard < shards:
        raise ConfigError(f"{where}: shard {shard} must be in 0..shards-1 ({shards - 1})")
    holdout = data.get("holdout")
    if not 0.0 <= holdout < 1.0:
        raise ConfigError(f"{where}: holdout must be in [0, 1), got {holdout}")
    fmt = data.get("format")
    if fmt is not None and fmt not in ("csv", "parquet"):
        raise ConfigError(f"{where}: format must be 'csv' or 'parquet', got {fmt!r}")
    delimiter = data.get("delimiter")
    if len(delimiter) != 1 or delimiter in '"\r\n':
        raise ConfigError(f"{where}: delimiter must be one character, got {delimiter!r}")
    source_path = base / data_path if data_path is not None else None
    is_parquet = fmt == "parquet" or (
        fmt is None
        and source_path is not None
        and source_path.suffix.lower() in (".parquet", ".pq")
    )
    if is_parquet:
        given = [k for k in _CSV_KEYS if data.has(k)]
        if given:
            raise ConfigError(f"{where}: {', '.join(given)} apply to CSV files, not Parquet")
    impute = data.get("impute")
    if impute not in (None, "none", "mean"):
        raise ConfigError(
            f"{where}: impute must be 'mean' (each missing feature value replaced by its "
            f"column's mean on this node's shard) or 'none', got {impute!r}"
        )
    scale = []
    for column, divisor in data.get("scale").items():
        if (
            isinstance(divisor, bool)
            or not isinstance(divisor, int | float)
            or not math.isfinite(divisor)
            or divisor <= 0
        ):
            raise ConfigError(
                f"{where}: scale.{column} must be a positive number (the column is divided "
                f"by it), got {divisor!r}"
            )
        scale.append((column, float(divisor)))
    label, features = data.get("label"), _names(data, "features")
    if label is not None and features is not None and label in features:
        raise ConfigError(f"{where}: the label column {label!r} is also listed in features")
    return DataSource(
        dataset,
        source_path,
        shard,
        shards,
        holdout,
        label=label,
        features=features,
        classes=_names(data, "classes"),
        format=fmt,
        header=data.get("header"),
        delimiter=delimiter,
        impute="mean" if impute == "mean" else None,
        scale=tuple(scale),
        config=path,
    )


def _fedavg_apps(table: _Table) -> FedAvgApps:
    """``[fedavg]``: each app a name (as jobs name it) and a ``module:attribute`` entry."""
    from phe_fl.fedavg.job import APP_NAME

    apps = table.get("apps")
    for name, entry in apps.items():
        if not APP_NAME.fullmatch(name):
            raise ConfigError(f"{table.where}: app name {name!r} must be 1-64 of A-Z a-z 0-9 _ . -")
        if not isinstance(entry, str) or entry.count(":") != 1 or entry.startswith(":"):
            raise ConfigError(
                f"{table.where}: apps.{name} must be 'module:attribute' (the factory of the "
                f"site's training code), got {entry!r}"
            )
    threads = table.get("threads")
    if threads < 0:
        raise ConfigError(f"{table.where}: threads must be >= 0 (0: every core), got {threads}")
    return FedAvgApps(dict(apps), dict(table.get("options")), threads)


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
    """Read and validate a node's TOML file; every error names the file and the field,
    and an unknown table or key is an error naming the nearest valid one (a typo must not
    silently fall back to a default, e.g. ``allow_decrypt``)."""
    path = Path(path)
    try:
        raw = tomllib.loads(_read_config_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    base = path.parent
    t = _tables(raw, path)
    node = t["node"]
    where = node.where
    node_id = node.get("id")
    if not NODE_ID.match(node_id):
        raise ConfigError(f"{where}: id {node_id!r} must be 1-64 of A-Z a-z 0-9 _ -")
    party, n_parties = node.get("party"), node.get("n_parties")
    if not 0 <= party < n_parties:
        raise ConfigError(f"{where}: party {party} must be in 0..n_parties-1 ({n_parties - 1})")
    listen = node.get("listen")
    if listen is not None and not _is_address(listen):
        raise ConfigError(f"{where}: listen {listen!r} must be host:port")
    health = node.get("health")
    if health is not None and not _is_address(health):
        raise ConfigError(f"{where}: health {health!r} must be host:port")
    metrics = node.get("metrics")
    if metrics is not None and not _is_address(metrics):
        raise ConfigError(f"{where}: metrics {metrics!r} must be host:port")
    params = node.get("params")
    try:
        get_parameter_set(params)
    except PheFlError as exc:
        raise ConfigError(f"{where}: {exc}") from None

    tree = t["tree"]
    where = tree.where
    parent = _parent(tree)
    if (parent is None) != (party == 0):
        raise ConfigError(f"{where}: party 0 is the root and has no parent; others need one")
    children = tree.get("children")
    for i, child in enumerate(children):
        if not isinstance(child, str) or not NODE_ID.match(child):
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
            f"{node.where}: listen is required on the root and on nodes with children"
        )
    if listen is not None and parent is not None and not children:
        raise ConfigError(
            f"{node.where}: a leaf does not listen (it dials out to its parent); remove "
            f"listen = {listen!r}"
        )

    tls = t["tls"]
    tls_paths = TlsPaths(*(base / tls.get(k) for k in ("cert", "key", "ca")))
    source = _data_source(t["data"], base, path)

    policy = t["policy"]
    queriers = policy.get("queriers")
    if not all(isinstance(q, str) for q in queriers):
        raise ConfigError(f"{policy.where}: queriers must be a list of names")
    dp_epsilon, dp_delta = policy.get("dp_epsilon"), policy.get("dp_delta")
    if dp_epsilon is not None and not (math.isfinite(dp_epsilon) and dp_epsilon > 0):
        raise ConfigError(f"{policy.where}: dp_epsilon must be a finite number > 0")
    if not 0 < dp_delta < 1:
        raise ConfigError(f"{policy.where}: dp_delta must be in (0, 1), got {dp_delta}")
    pol = Policy(
        tuple(queriers),
        policy.get("allow_decryption"),
        policy.get("release_statistics"),
        dp_epsilon,
        dp_delta,
        policy.get("release_aggregates"),
        policy.get("release_fedavg_model"),
    )
    fedavg = _fedavg_apps(t["fedavg"])
    state = t["state"]
    state_dir = base / (state.get("dir") or f"state/{node_id}")
    max_answer_bytes = state.get("max_answer_bytes")
    if max_answer_bytes < 1 << 20:
        raise ConfigError(
            f"{state.where}: max_answer_bytes must be at least 1 MiB (1048576), "
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
        metrics,
        fedavg,
    )
