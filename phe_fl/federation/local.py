"""A whole federation on this machine: certificates, one TOML config and one OS process
per node, in a tree of a chosen fan-out. Used by ``phe-fl demo`` and the end-to-end tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from phe_fl.errors import PeerError
from phe_fl.federation.certs import create_federation
from phe_fl.federation.config import TlsPaths
from phe_fl.federation.messages import StatusResult
from phe_fl.federation.querier import Querier

__all__ = ["LocalCluster", "write_configs"]


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _children(i: int, n_nodes: int, fanout: int) -> list[int]:
    return [j for j in range(1, n_nodes) if (j - 1) // fanout == i]


def write_configs(
    workdir: Path,
    n_nodes: int,
    *,
    fanout: int = 2,
    params: str = "n14-depth5-128",
    dataset: str = "breast_cancer",
    queriers: tuple[str, ...] = ("querier",),
    ports: list[int] | None = None,
    certificates: bool = True,
    allow_decryption: bool = False,
    holdout: float = 0.0,
    data_files: Sequence[Path] | None = None,
    data_extra: Sequence[str] | None = None,
    tables: Sequence[str] | None = None,
) -> tuple[list[Path], dict[str, str]]:
    """Node configs (and, unless told otherwise, certificates) for a tree where node i's
    parent is (i-1)//fanout; only nodes with children (and the root) listen. Node i reads
    shard i of ``dataset``, or ``data_files[i]`` (a CSV: features..., label) when given.
    ``data_extra[i]``: more lines for node i's ``[data]`` table (``label = ...``);
    ``tables[i]``: more tables for node i (``[fedavg] ...``).
    Returns the configs and the listening nodes' addresses by id."""
    if data_files is not None and len(data_files) != n_nodes:
        raise ValueError(f"{len(data_files)} data files for {n_nodes} nodes")
    if data_extra is not None and len(data_extra) != n_nodes:
        raise ValueError(f"{len(data_extra)} [data] additions for {n_nodes} nodes")
    if tables is not None and len(tables) != n_nodes:
        raise ValueError(f"{len(tables)} table additions for {n_nodes} nodes")
    ids = [f"node-{i}" for i in range(n_nodes)]
    if certificates:
        create_federation(workdir / "certs", ids, queriers)
    listening = [i for i in range(n_nodes) if i == 0 or _children(i, n_nodes, fanout)]
    ports = ports or _free_ports(len(listening))
    addresses = {ids[i]: f"127.0.0.1:{p}" for i, p in zip(listening, ports, strict=False)}
    paths = []
    for i, node_id in enumerate(ids):
        kids = ", ".join(f'"{ids[j]}"' for j in _children(i, n_nodes, fanout))
        listen = f'listen = "{addresses[node_id]}"\n' if node_id in addresses else ""
        if i:
            parent = ids[(i - 1) // fanout]
            parent_line = f'parent = {{ id = "{parent}", address = "{addresses[parent]}" }}\n'
        else:
            parent_line = ""
        if data_files is not None:
            data = f'path = "{Path(data_files[i]).resolve()}"'
        else:
            data = f'dataset = "{dataset}"\nshard = {i}\nshards = {n_nodes}\nholdout = {holdout}'
        if data_extra is not None and data_extra[i]:
            data += "\n" + data_extra[i].strip()
        text = f"""[node]
id = "{node_id}"
party = {i}
n_parties = {n_nodes}
{listen}params = "{params}"

[tree]
{parent_line}children = [{kids}]

[data]
{data}

[tls]
cert = "certs/nodes/{node_id}.pem"
key = "certs/nodes/{node_id}.key"
ca = "certs/ca.pem"

[state]
dir = "state/{node_id}"

[policy]
queriers = [{", ".join(f'"{q}"' for q in queriers)}]
allow_decryption = {str(allow_decryption).lower()}
"""
        if tables is not None and tables[i]:
            text += "\n" + tables[i].strip() + "\n"
        path = workdir / f"{node_id}.toml"
        path.write_text(text)
        paths.append(path)
    return paths, addresses


@dataclass
class LocalCluster:
    """Starts every node as ``phe-fl node`` in its own process; stops them on exit.
    Ready means every node is connected to the tree (a status job at the root)."""

    workdir: Path
    n_nodes: int = 5
    fanout: int = 2
    params: str = "n14-depth5-128"
    deadline_s: float = 600.0
    allow_decryption: bool = False
    holdout: float = 0.0
    data_files: Sequence[Path] | None = None
    """Per-node data files (CSV or Parquet) instead of shards of the shipped dataset."""
    data_extra: Sequence[str] | None = None
    """Per-node lines added to ``[data]`` (``label = "..."``, ``scale = {...}``)."""
    tables: Sequence[str] | None = None
    """Per-node tables added to the config (``[fedavg] ...``)."""
    queriers: tuple[str, ...] = ("querier",)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    addresses: dict[str, str] = field(default_factory=dict)
    """Listening nodes' addresses by id (leaves have none)."""
    configs: list[Path] = field(default_factory=list)

    @property
    def root_address(self) -> str:
        return self.addresses["node-0"]

    def querier_tls(self, name: str = "querier") -> TlsPaths:
        certs = self.workdir / "certs"
        return TlsPaths(
            certs / "queriers" / f"{name}.pem", certs / "queriers" / f"{name}.key", certs / "ca.pem"
        )

    def node_tls(self, node_id: str) -> TlsPaths:
        certs = self.workdir / "certs"
        return TlsPaths(
            certs / "nodes" / f"{node_id}.pem", certs / "nodes" / f"{node_id}.key", certs / "ca.pem"
        )

    def start(self, timeout_s: float = 60.0) -> LocalCluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.configs, self.addresses = write_configs(
            self.workdir,
            self.n_nodes,
            fanout=self.fanout,
            params=self.params,
            allow_decryption=self.allow_decryption,
            holdout=self.holdout,
            data_files=self.data_files,
            data_extra=self.data_extra,
            tables=self.tables,
            queriers=self.queriers,
        )
        self.processes = [self._spawn(cfg) for cfg in self.configs]
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()  # __exit__ does not run when __enter__ fails
            raise
        return self

    def _spawn(self, cfg: Path) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
        # All nodes share this machine: one OpenMP thread each avoids oversubscription,
        # which slows OpenFHE down erratically.
        env["OMP_NUM_THREADS"] = "1"
        cmd = [
            sys.executable,
            "-m",
            "phe_fl.cli",
            "node",
            "--config",
            str(cfg),
            "--deadline",
            str(self.deadline_s),
        ]
        with open(self.workdir / f"{cfg.stem}.log", "ab") as log:
            return subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )

    def log(self, index: int) -> str:
        return (self.workdir / f"node-{index}.log").read_text(errors="replace")

    def stop_node(self, index: int) -> None:
        """Stop one node (it loses its state, as a crashed institution would)."""
        proc = self.processes[index]
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def start_node(self, index: int) -> None:
        """Start node ``index`` again from its config."""
        self.processes[index] = self._spawn(self.configs[index])

    def status(self) -> StatusResult:
        """Who is connected, asked of the root as the cluster's querier."""
        name = self.queriers[0]
        querier = Querier(
            self.root_address, self.querier_tls(name), self.params, name=name, deadline_s=10
        )
        try:
            return querier.status()
        finally:
            querier.close()

    def wait_ready(self, timeout_s: float, nodes: int | None = None) -> None:
        """Until ``nodes`` (default: all) nodes are connected to the tree."""
        want = self.n_nodes if nodes is None else nodes
        deadline = time.monotonic() + timeout_s
        last = "the root did not answer"
        name = self.queriers[0]
        querier = Querier(
            self.root_address, self.querier_tls(name), self.params, name=name, deadline_s=10
        )
        try:
            while True:
                for i, proc in enumerate(self.processes):
                    if proc.poll() is not None:
                        tail = self.log(i)[-2000:]
                        raise PeerError(f"node-{i}", f"exited with {proc.returncode}:\n{tail}")
                try:
                    status = querier.status()
                    if len(status.nodes) >= want:
                        return
                    last = f"connected: {sorted(n.node_id for n in status.nodes)}"
                except PeerError as exc:
                    last = str(exc)
                if time.monotonic() > deadline:
                    raise PeerError("node-0", f"tree not complete after {timeout_s:.0f} s ({last})")
                time.sleep(0.3)
        finally:
            querier.close()

    def stop(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def __enter__(self) -> LocalCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
