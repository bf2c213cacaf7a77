"""A root in the test process and real leaf processes: the root runs the real node code
in-process (so a test can drive its coordinator and send crafted steps to its children),
each leaf is a ``phe-fl node`` process that dials in to it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from phe_fl.federation import messages as m
from phe_fl.federation.config import load_node_config
from phe_fl.federation.coordinator import Coordinator
from phe_fl.federation.node import Node, build_node

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """``phe-fl ARGS`` from this checkout, as a user runs it."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run(
        [sys.executable, "-m", "phe_fl.cli", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=ROOT,
    )


class RootWithLeaves:
    def __init__(self, workdir: Path, configs: list[Path], *, deadline_s: float) -> None:
        self.workdir = workdir
        self.configs = configs
        self.root: Node = build_node(load_node_config(configs[0]), deadline_s=deadline_s).start()
        env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
        self.leaves = [
            subprocess.Popen(
                [sys.executable, "-m", "phe_fl.cli", "node", "--config", str(cfg)],
                stdout=open(workdir / f"{cfg.stem}.log", "ab"),  # noqa: SIM115
                stderr=subprocess.STDOUT,
                env=env,
            )
            for cfg in configs[1:]
        ]

    @property
    def coordinator(self) -> Coordinator:
        assert self.root.coordinator is not None
        return self.root.coordinator

    def wait_connected(self, children: list[str], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while self.root.children.connected() != children:
            assert time.monotonic() < deadline, self.root.children.connected()
            time.sleep(0.2)

    def call(self, child: str, request: m.TreeRequest, timeout_s: float) -> m.TreeResponse:
        """``request`` to the subtree of ``child``, as this root (a crafted parent)."""
        return self.root.children.call(child, request, timeout_s)

    def log(self, child: str) -> str:
        return (self.workdir / f"{child}.log").read_text(errors="replace")

    def close(self) -> None:
        for p in self.leaves:
            p.terminate()
            p.wait(timeout=10)
        self.root.stop()
