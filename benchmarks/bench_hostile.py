"""Hostile-input benchmark: the RPC fuzzer of tests/hostile/test_fuzz_rpc.py, long version.

    ./dev run python benchmarks/bench_hostile.py                      # 10 rounds, default seed
    ./dev run python benchmarks/bench_hostile.py --rounds 2 --seed 7 --out /tmp/hostile.json

The fuzzer is imported from the test module (one copy): a LocalCluster of three node
processes (insecure-test-n12) attacked through Root.Submit (as the querier) and
Tree.Connect (as a child, and as a parent of a fresh leaf), ``--rounds`` times the inputs
of the test (which runs one round). Prints the table (inputs per RPC and job kind or
step; clean errors, successes, wrong statuses, crashes, hangs; whether the nodes kept
serving; their memory growth) and writes it as JSON, with every crash, hang and wrong
status (its input, the status, the node's log), to
``benchmarks/results/hostile-<params>.json`` (``--out``). ``--records`` adds one line per
input. Exit status 1 when a crash, a hang, a node that stopped serving or memory growth
beyond the bound was seen.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.hostile import test_fuzz_rpc as fuzz  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=10, help="rounds of inputs (test: 1)")
    parser.add_argument("--seed", type=int, default=fuzz.DEFAULT_SEED, help="RNG seed")
    parser.add_argument(
        "--out",
        type=Path,
        default=ROOT / "benchmarks" / "results" / f"hostile-{fuzz.PARAMS}.json",
        help="result file (JSON)",
    )
    parser.add_argument("--records", action="store_true", help="one JSON line per input")
    parser.add_argument(
        "--workdir", type=Path, help="keep the cluster's files (configs, logs, state) here"
    )
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")

    where = fuzz.machine()
    print(f"fuzz seed {args.seed}, {args.rounds} round(s), {fuzz.PARAMS}", flush=True)
    t = time.monotonic()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        tally = fuzz.run_fuzz(args.workdir, args.seed, args.rounds)
    else:
        with tempfile.TemporaryDirectory(prefix="phe-fl-hostile-") as tmp:
            tally = fuzz.run_fuzz(Path(tmp), args.seed, args.rounds)
    seconds = time.monotonic() - t
    table = tally.table()
    problems = fuzz.check(tally)
    print(table)
    print(f"verdict: {'FAIL: ' + '; '.join(problems) if problems else 'PASS'} ({seconds:.0f} s)")

    out = tally.to_json()
    if not args.records:
        out.pop("records", None)
    result = {
        "schema": "phe-fl/bench-hostile/1",
        "machine": where,
        "config": {
            "argv": sys.argv[1:] if argv is None else argv,
            "params": fuzz.PARAMS,
            "rounds": args.rounds,
            "seed": args.seed,
            "hang_s": fuzz.HANG_S,
            "job_s": fuzz.JOB_S,
            "max_rss_growth_mb": fuzz.MAX_RSS_GROWTH_MB,
        },
        "seconds": round(seconds, 1),
        "verdict": {"pass": not problems, "problems": problems},
        **out,
        "table": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(f"wrote {args.out}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
