"""Rendering of job progress for people: one line per phase, a bar per iteration, and
each node's time and bytes, as the root streams them to the querier."""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable

from phe_fl.federation.serde import Event

__all__ = ["ProgressPrinter"]

_ITER = re.compile(r"^(\d+)/(\d+):\s*(.*)$")


def _print(text: str) -> None:
    print(text, flush=True)


class ProgressPrinter:
    """Callable ``on_event`` for :class:`~phe_fl.federation.querier.Querier`; it also
    totals the bytes each node sent and the seconds each phase took."""

    def __init__(
        self, write: Callable[[str], None] = _print, *, per_node: bool = True, width: int = 24
    ) -> None:
        self.write = write
        self.per_node = per_node
        self.width = width
        self.bytes_by_node: dict[str, int] = defaultdict(int)
        self.seconds_by_phase: dict[str, float] = defaultdict(float)

    def __call__(self, ev: Event) -> None:
        if ev.node_id:
            self.bytes_by_node[ev.node_id] += ev.bytes_sent
            if self.per_node:
                line = f"      {ev.node_id:<10} {ev.seconds:7.2f} s {ev.bytes_sent / 1e6:9.2f} MB"
                if ev.stats is not None:
                    line += (
                        f" up, combine {ev.stats.combine_seconds:6.3f} s, received "
                        f"{ev.stats.bytes_received / 1e6:.2f} MB"
                    )
                self.write(line)
            return
        self.seconds_by_phase[ev.phase.split(":")[0]] += ev.seconds
        match = _ITER.match(ev.message) if ev.phase == "iteration" else None
        if match:
            done, total, rest = int(match[1]), int(match[2]), match[3]
            filled = self.width * done // max(total, 1)
            bar = "#" * filled + "-" * (self.width - filled)
            self.write(f"  [{bar}] iteration {done}/{total} ({ev.seconds:.1f} s) {rest}")
        else:
            took = f" ({ev.seconds:.2f} s)" if ev.seconds else ""
            self.write(f"  {ev.phase}: {ev.message}{took}")
