"""Rendering of job progress for people: one line per round, a bar per iteration, and
each node's time and bytes, from the typed events the root streams to the querier.

On a terminal, iterations and prediction rows get tqdm bars (rate and ETA) that redraw in
place; elsewhere (a log file, CI) every iteration is one plain line."""

from __future__ import annotations

import sys
from collections import defaultdict
from collections.abc import Callable
from typing import Any

from phe_fl.federation.messages import ProgressEvent, Stage

__all__ = ["ProgressPrinter"]


def _print(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


class ProgressPrinter:
    """Callable ``on_event`` for :class:`~phe_fl.federation.querier.Querier`; it also
    totals the bytes each node sent and the seconds each stage took. Writes to standard
    error by default, so that a command's result on standard output stays clean."""

    def __init__(
        self,
        write: Callable[[str], None] = _print,
        *,
        per_node: bool = True,
        width: int = 24,
        bars: bool | None = None,
    ) -> None:
        self.write = write
        self.per_node = per_node
        self.width = width
        self.bars = sys.stderr.isatty() if bars is None else bars
        self._bar: Any = None
        self.bytes_by_node: dict[str, int] = defaultdict(int)
        self.seconds_by_stage: dict[Stage, float] = defaultdict(float)

    def _advance(self, what: str, unit: str, done: int, total: int, **postfix: object) -> None:
        """A tqdm bar on standard error, redrawn in place; closed when ``done == total``."""
        from tqdm import tqdm

        bar = self._bar
        if bar is None or bar.desc != what or bar.total != total:
            if bar is not None:
                bar.close()
            bar = self._bar = tqdm(total=total, desc=what, unit=unit, file=sys.stderr)
        bar.update(done - bar.n)
        if postfix:
            bar.set_postfix(postfix, refresh=True)
        if done >= total:
            bar.close()
            self._bar = None

    def rows(self, done: int, total: int) -> None:
        """``on_rows`` for :meth:`~phe_fl.federation.querier.Querier.predict`."""
        if self.bars:
            self._advance("predicting", "row", done, total)
        else:
            self.write(f"  predicted {done}/{total} rows")

    def __call__(self, ev: ProgressEvent) -> None:
        self.seconds_by_stage[ev.stage] += ev.seconds
        for s in ev.nodes:
            self.bytes_by_node[s.node_id] += s.bytes_sent
        if ev.stage is Stage.ITERATION_DONE and ev.summary is not None:
            done, total = ev.iteration, ev.iterations
            if self.bars:
                it = ev.summary
                self._advance(
                    "training", "it", done, total, refreshes=it.refreshes, levels=it.levels_left
                )
                return
            filled = self.width * done // max(total, 1)
            bar = "#" * filled + "-" * (self.width - filled)
            it = ev.summary
            margins = (
                f"; largest margin in [{it.margin_low:.3g}, {it.margin_high:.3g}]"
                if it.margin_high
                else ""
            )
            self.write(
                f"  [{bar}] iteration {done}/{total} ({ev.seconds:.1f} s) {it.refreshes} "
                f"refresh(es), levels left {it.levels_left}; weights sent down with "
                f"{it.levels_sent} levels ({it.levels_dropped} dropped){margins}"
            )
            return
        if ev.stage is Stage.ROUND_DONE and ev.round is not None:
            r, done, total = ev.round, ev.iteration, ev.iterations
            if self.bars:
                self._advance("FedAvg", "round", done, total, loss=f"{r.loss:.4f}")
                return
            self.write(
                f"  round {done}/{total} ({ev.seconds:.1f} s): loss {r.loss:.4f} over "
                f"{r.examples} examples; training {r.train_seconds:.1f} s, encrypted sum and "
                f"its decryption {r.aggregate_seconds:.1f} s, {r.update_bytes / 1e6:.1f} MB "
                "per node's update"
            )
            return
        where = f" {ev.index}/{ev.count}" if ev.count and ev.index else ""
        prefix = f"iteration {ev.iteration}: " if ev.iteration else ""
        took = f" ({ev.seconds:.2f} s)" if ev.seconds else ""
        detail = ""
        if ev.nodes:
            up = sum(s.bytes_sent for s in ev.nodes)
            down = sum(s.bytes_to_children for s in ev.nodes)
            slowest = max(ev.nodes, key=lambda s: s.seconds)
            detail = (
                f": {len(ev.nodes)} nodes, {up / 1e6:.1f} MB up and {down / 1e6:.1f} MB down "
                f"the tree; slowest node {slowest.node_id} {slowest.seconds:.2f} s"
            )
        elif ev.count and not ev.index:
            detail = f": {ev.count}"
        self.write(f"  {prefix}{ev.stage.label}{where}{detail}{took}")
        if self.per_node:
            for s in ev.nodes:
                self.write(
                    f"      {s.node_id:<10} {s.seconds:7.2f} s {s.bytes_sent / 1e6:9.2f} MB up, "
                    f"combine {s.combine_seconds:6.3f} s, received {s.bytes_received / 1e6:.2f} MB"
                )
