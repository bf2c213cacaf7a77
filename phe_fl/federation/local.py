"""A whole federation on this machine: certificates, one TOML config and one OS process
per node, in a tree of a chosen fan-out. Used by ``phe-fl demo`` and the end-to-end tests.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from phe_fl.errors import PeerError
from phe_fl.federation.certs import create_federation
from phe_fl.federation.config import TlsPaths
from phe_fl.federation.transport import open_channel

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
) -> tuple[list[Path], list[str]]:
    """Node configs (and, unless told otherwise, certificates) for a tree where node i's
    parent is (i-1)//fanout."""
    ids = [f"node-{i}" for i in range(n_nodes)]
    if certificates:
        create_federation(workdir / "certs", ids, queriers)
    ports = ports or _free_ports(n_nodes)
    addresses = [f"127.0.0.1:{p}" for p in ports]
    paths = []
    for i, node_id in enumerate(ids):
        children = [j for j in range(1, n_nodes) if (j - 1) // fanout == i]
        kids = ", ".join(f'{{ id = "{ids[j]}", address = "{addresses[j]}" }}' for j in children)
        parent = ids[(i - 1) // fanout] if i else ""
        text = f"""[node]
id = "{node_id}"
party = {i}
n_parties = {n_nodes}
listen = "{addresses[i]}"
params = "{params}"

[tree]
parent = "{parent}"
children = [{kids}]

[data]
dataset = "{dataset}"
shard = {i}
shards = {n_nodes}
holdout = {holdout}

[tls]
cert = "certs/nodes/{node_id}.pem"
key = "certs/nodes/{node_id}.key"
ca = "certs/ca.pem"

[policy]
queriers = [{", ".join(f'"{q}"' for q in queriers)}]
allow_decryption = {str(allow_decryption).lower()}
"""
        path = workdir / f"{node_id}.toml"
        path.write_text(text)
        paths.append(path)
    return paths, addresses


@dataclass
class LocalCluster:
    """Starts every node as ``phe-fl node`` in its own process; stops them on exit."""

    workdir: Path
    n_nodes: int = 5
    fanout: int = 2
    params: str = "n14-depth5-128"
    deadline_s: float = 600.0
    allow_decryption: bool = False
    holdout: float = 0.0
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    addresses: list[str] = field(default_factory=list)
    configs: list[Path] = field(default_factory=list)

    @property
    def root_address(self) -> str:
        return self.addresses[0]

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
        )
        self.processes = [self._spawn(cfg) for cfg in self.configs]
        self.wait_healthy(timeout_s)
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

    def wait_healthy(self, timeout_s: float) -> None:
        tls = self.node_tls("node-0")
        deadline = time.monotonic() + timeout_s
        for i, address in enumerate(self.addresses):
            channel = open_channel(address, tls)
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                proc = self.processes[i]
                if proc.poll() is not None:
                    log = (self.workdir / f"node-{i}.log").read_text(errors="replace")[-2000:]
                    raise PeerError(f"node-{i}", f"exited with {proc.returncode} at start:\n{log}")
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                    if reply.status == health_pb2.HealthCheckResponse.SERVING:
                        break
                except grpc.RpcError:
                    pass
                if time.monotonic() > deadline:
                    raise PeerError(f"node-{i}", f"not serving after {timeout_s:.0f} s")
                time.sleep(0.2)
            channel.close()

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
