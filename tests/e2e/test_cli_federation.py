"""The querier's command line against a running federation, as nodes/README.md shows it."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from phe_fl.federation.config import DataSource
from phe_fl.federation.data import load_holdout
from phe_fl.federation.local import LocalCluster
from tests.e2e.harness import run_cli

PARAMS = "insecure-test-n12"


def test_setup_train_predict_from_the_command_line(tmp_path: Path) -> None:
    with LocalCluster(tmp_path / "fed", n_nodes=3, fanout=2, params=PARAMS, holdout=0.2) as c:
        tls = c.querier_tls()
        common = [
            "--root",
            c.root_address,
            "--cert",
            str(tls.cert),
            "--key",
            str(tls.key),
            "--ca",
            str(tls.ca),
            "--params",
            PARAMS,
        ]
        setup = run_cli("query", "setup", *common, "--job-id", "keys")
        assert setup.returncode == 0, setup.stderr
        assert "collective keys ready" in setup.stdout

        train = run_cli("query", "train", *common, "--job-id", "model-1", "--iterations", "6")
        assert train.returncode == 0, train.stderr
        assert "iteration 6/6" in train.stderr and "stays encrypted" in train.stdout
        assert "[###" not in train.stdout  # progress goes to stderr, results to stdout

        detached = run_cli(
            "query", "train", *common, "--job-id", "model-2", "--iterations", "2", "--detach"
        )
        assert detached.returncode == 0, detached.stderr
        assert "follow it with `phe-fl jobs watch model-2`" in detached.stdout
        watch = run_cli("jobs", "watch", "model-2", *common)
        assert watch.returncode == 0, watch.stderr
        assert "model-2" in watch.stdout and " done " in watch.stdout
        assert "iteration 2/2" in watch.stderr  # the job's progress, replayed
        learned = common[:-2]  # no --params: the querier asks the root for the federation's
        assert learned[-2] == "--ca"
        listed = run_cli("jobs", "list", *learned)
        assert listed.returncode == 0 and "model-1" in listed.stdout and "train" in listed.stdout
        models = run_cli("models", "list", *learned)
        assert models.returncode == 0, models.stderr
        assert "model-1" in models.stdout and "model-2" in models.stdout
        audit = run_cli("audit", "verify", str(c.workdir / "state" / "node-1" / "audit.jsonl"))
        assert audit.returncode == 0 and "chain intact" in audit.stdout, audit.stderr

        status = run_cli("query", "status", *common)
        assert status.returncode == 0, status.stderr
        assert "3 node(s) connected" in status.stdout and "keys ready" in status.stdout

        x, y = load_holdout(DataSource("breast_cancer", None, 0, 1, 0.2))
        csv = tmp_path / "queries.csv"
        np.savetxt(csv, np.hstack([x, y[:, None]]), delimiter=",")
        pred = run_cli(
            "predict", *common, "--model", "model-1", "--input", str(csv), "--labels-last"
        )
        assert pred.returncode == 0, pred.stderr
        accuracy = float(pred.stderr.rsplit("accuracy ", 1)[1].split()[0])
        print(pred.stdout[-300:])
        assert accuracy > 0.85
        rows = np.loadtxt(pred.stdout.splitlines(), delimiter=",", skiprows=1, ndmin=2)
        assert rows.shape == (len(x), 3)  # stdout is exactly the CSV

        refused = run_cli("query", "model", *common, "--model", "model-1")
        assert refused.returncode == 2
        assert "refuses decrypt_model: allow_decryption = false" in refused.stderr

        missing = run_cli("predict", *common, "--model", "nope", "--input", str(csv))
        assert missing.returncode == 2 and "no trained model 'nope'" in missing.stderr
