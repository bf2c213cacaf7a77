"""The audit's report: a table per observer and attack, ROC curves, the game's sizes.

Written as ``report.json`` (every figure, machine-readable), ``report.md`` (the table a
data-protection impact assessment can quote) and ``roc.png`` (ROC curves on linear and
log-log axes; the log-log panel shows the low-FPR region that matters for confident
attacks). Figures at an FPR below ``1 / non-members`` cannot be resolved and are marked.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from phe_fl.errors import ParameterError
from phe_fl.privacy.attacks import AttackResult
from phe_fl.privacy.metrics import LOW_FPRS

__all__ = ["MembershipReport"]


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


@dataclass
class MembershipReport:
    """The audit of one dataset: the game's sizes, how the models were trained, and one
    :class:`~phe_fl.privacy.attacks.AttackResult` per observer and attack."""

    dataset: str
    sizes: dict[str, int]
    results: list[AttackResult] = field(default_factory=list)
    setup: dict[str, object] = field(default_factory=dict)

    def result(self, observer: str, attack_prefix: str = "") -> AttackResult:
        """The first result of ``observer`` whose attack name starts with the prefix."""
        for r in self.results:
            if r.observer == observer and r.attack.startswith(attack_prefix):
                return r
        raise ParameterError(f"no result for observer {observer!r} and attack {attack_prefix!r}")

    # -- serialisations -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, object]:
        rows = []
        for r in self.results:
            m = r.metrics
            rows.append(
                {
                    "observer": r.observer,
                    "attack": r.attack,
                    "model": r.model,
                    "applicable": r.applicable,
                    "auc": None if m is None else m.auc,
                    "tpr_at_0.1pct_fpr": None if m is None else m.tpr_at_0_1pct_fpr,
                    "tpr_at_1pct_fpr": None if m is None else m.tpr_at_1pct_fpr,
                    "advantage": None if m is None else m.advantage,
                    "reference_models": r.n_reference,
                    "note": r.note,
                    "details": r.details,
                    "roc": None
                    if r.roc is None
                    else {
                        "fpr": [round(float(v), 6) for v in r.roc.fpr],
                        "tpr": [round(float(v), 6) for v in r.roc.tpr],
                    },
                }
            )
        n_non = self.sizes.get("nonmembers", 0)
        return {
            "dataset": self.dataset,
            "sizes": self.sizes,
            "fpr_resolution": 1.0 / n_non if n_non else None,
            "setup": self.setup,
            "results": rows,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    def to_markdown(self) -> str:
        s = self.sizes
        n_non = s.get("nonmembers", 0)
        lines = [
            f"# Membership-inference audit: {self.dataset}",
            "",
            f"Members {s.get('members')}, non-members {n_non}, population {s.get('population')} "
            "(disjoint; the population calibrates the threshold attack and trains the "
            "reference models).",
        ]
        if n_non and 1.0 / n_non > LOW_FPRS[0]:
            lines.append(
                f"With {n_non} non-members the smallest FPR above 0 is {1.0 / n_non:.4f}: "
                "TPR at 0.1% FPR is the TPR at FPR 0 (no non-member misjudged)."
            )
        lines += [
            "",
            "| observer | model | attack | reference models | AUC | TPR@0.1%FPR | TPR@1%FPR "
            "| advantage |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in self.results:
            m = r.metrics
            if m is None:
                lines.append(
                    f"| {r.observer} | {r.model} | {r.attack} | - | n/a | n/a | n/a | n/a |"
                )
                continue
            lines.append(
                f"| {r.observer} | {r.model} | {r.attack} | "
                f"{r.n_reference if r.n_reference is not None else '-'} | {_fmt(m.auc)} | "
                f"{_fmt(m.tpr_at_0_1pct_fpr)} | {_fmt(m.tpr_at_1pct_fpr)} | {_fmt(m.advantage)} |"
            )
        calibrated = [(r, p) for r in self.results for p in r.details.get("calibrated", [])]
        if calibrated:
            lines += [
                "",
                "Thresholds chosen on the population alone (an attacker with no known member), "
                "and what they really reach on the audited rows:",
                "",
                "| observer | model | target FPR | realised FPR | TPR |",
                "|---|---|---|---|---|",
            ]
            for r, p in calibrated:
                lines.append(
                    f"| {r.observer} | {r.model} | {p['target_fpr']:g} | {p['fpr']:.3f} | "
                    f"{p['tpr']:.3f} |"
                )
        notes = [f"- {r.observer}: {r.note}" for r in self.results if r.note]
        if notes:
            lines += ["", "Notes:", *notes]
        if self.setup:
            lines += ["", "Setup:"]
            lines += [f"- {k}: {v}" for k, v in self.setup.items()]
        return "\n".join(lines) + "\n"

    def plot(self, path: Path) -> None:
        """ROC curves of every applicable attack (matplotlib, Agg backend)."""
        try:
            import matplotlib
        except ImportError:
            raise ImportError(
                "the membership report's ROC plot needs matplotlib (pip install matplotlib)"
            ) from None
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        shown = [r for r in self.results if r.roc is not None and r.metrics is not None]
        fig, axes = plt.subplots(1, 2, figsize=(12, 5 + 0.22 * len(shown)))
        n_non = max(1, self.sizes.get("nonmembers", 1))
        floor = 0.5 / n_non
        for r in shown:
            assert r.roc is not None and r.metrics is not None
            attack = r.attack.split(" (")[0]
            label = f"{r.observer} | {r.model} | {attack}: AUC {r.metrics.auc:.3f}"
            axes[0].plot(r.roc.fpr, r.roc.tpr, label=label)
            axes[1].plot([max(f, floor) for f in r.roc.fpr], [max(t, floor) for t in r.roc.tpr])
        for ax in axes:
            ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
            ax.set_xlabel("false-positive rate (non-members called members)")
            ax.set_ylabel("true-positive rate (members found)")
        axes[1].set_xscale("log")
        axes[1].set_yscale("log")
        axes[1].set_xlim(floor, 1.1)
        axes[1].set_ylim(floor, 1.1)
        axes[0].set_title(f"{self.dataset}: ROC")
        axes[1].set_title(f"log-log (low FPR; FPR 0 drawn at {floor:.2g})")
        fig.legend(loc="lower center", fontsize=7, ncol=1, frameon=False)
        fig.tight_layout(rect=(0.0, 0.03 * len(shown) + 0.01, 1.0, 1.0))
        fig.savefig(path, dpi=110)
        plt.close(fig)

    def write(self, folder: Path | str) -> dict[str, Path]:
        """Write ``roc.png``, ``report.json`` and ``report.md`` into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = {
            "png": out / "roc.png",
            "json": out / "report.json",
            "markdown": out / "report.md",
        }
        self.plot(paths["png"])
        paths["json"].write_text(self.to_json())
        paths["markdown"].write_text(self.to_markdown())
        return paths


def _json_default(o: object) -> object:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return str(o)
