"""Bad command-line input: one ``phe-fl: error: ...`` line naming what is wrong, exit 2,
never a traceback, and refused before anything is contacted or written."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from phe_fl import cli
from phe_fl.cli import check_query_width, main, read_query_csv
from phe_fl.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
# an address nothing listens on and certificate files that do not exist: every case
# below must be refused before any of them is used
QUERIER = ["--root", "127.0.0.1:9", "--cert", "no.pem", "--key", "no.key", "--ca", "no-ca.pem"]
QUERIER += ["--params", "n14-depth5-128"]  # given: checks happen before connecting


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """``main(argv)``: it must fail with exit 2 and one error line; returns that line."""
    code: int | str | None
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse's errors exit from inside parse_args
        code = exc.code
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("phe-fl: error: "), err
    return lines[0]


# -- phe-fl node --------------------------------------------------------------------------
def test_node_config_folder(capsys, tmp_path):
    line = _run(capsys, "node", "--config", str(tmp_path))
    assert str(tmp_path) in line and "folder" in line


def test_node_config_missing(capsys, tmp_path):
    line = _run(capsys, "node", "--config", str(tmp_path / "node-9.toml"))
    assert "node-9.toml does not exist" in line


def test_node_config_unreadable(capsys, tmp_path, monkeypatch):
    config = tmp_path / "node-1.toml"
    config.write_text("[node]\n")
    real = pathlib.Path.read_text

    def denied(self: Path, *args: object, **kwargs: object) -> str:
        if self == config:  # chmod 000 does not stop root, so refuse the read here
            raise PermissionError(13, "Permission denied", str(self))
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "read_text", denied)
    line = _run(capsys, "node", "--config", str(config))
    assert str(config) in line and "Permission denied" in line


def test_node_config_binary(capsys, tmp_path):
    config = tmp_path / "node-1.toml"
    config.write_bytes(b"\xff\xfe\x00garbage\x80")
    line = _run(capsys, "node", "--config", str(config))
    assert str(config) in line


@pytest.mark.parametrize("deadline", ["-1", "0", "nan", "inf", "-inf", "soon"])
def test_node_deadline_must_be_positive_finite_seconds(capsys, tmp_path, deadline):
    # "--deadline=-inf": alone, "-inf" would read as an option (refused too, but by argparse)
    line = _run(capsys, "node", "--config", str(tmp_path / "n.toml"), f"--deadline={deadline}")
    assert "--deadline" in line and repr(deadline) in line and "seconds" in line


# -- phe-fl certs -------------------------------------------------------------------------
def test_certs_out_under_a_file(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = _run(capsys, "certs", "--out", str(blocker / "fed"), "--nodes", "0,1")
    assert f"--out {blocker / 'fed'}" in line and f"under {blocker}" in line
    assert blocker.read_text() == "x"


def test_certs_out_is_a_file(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    line = _run(capsys, "certs", "--out", str(blocker), "--nodes", "0,1")
    assert f"--out {blocker} is a file" in line


def test_certs_days_must_be_positive(capsys, tmp_path):
    line = _run(capsys, "certs", "--out", str(tmp_path / "fed"), "--nodes", "0", "--days", "0")
    assert "--days" in line and "'0'" in line
    assert not (tmp_path / "fed").exists()


# -- phe-fl query -------------------------------------------------------------------------
@pytest.mark.parametrize("rotations, bad", [("a,b", "'a'"), ("1,0", "'0'"), ("1,2.5", "'2.5'")])
def test_query_setup_rotations(capsys, rotations, bad):
    line = _run(capsys, "query", "setup", *QUERIER, "--rotations", rotations)
    assert "--rotations" in line and bad in line


def test_query_setup_rotation_out_of_range(capsys):
    line = _run(capsys, "query", "setup", *QUERIER, "--rotations", "1,99999")
    assert "99999" in line and "n14-depth5-128" in line


@pytest.mark.parametrize(
    "job, option, value",
    [
        ("stats", "--features", "0"),
        ("stats", "--features", "-3"),
        ("stats", "--features", "many"),
        ("train", "--features", "0"),
        ("train", "--iterations", "0"),
        ("train", "--iterations", "-2"),
        ("train", "--batch-size", "0"),
        ("train", "--learning-rate", "nan"),
        ("train", "--learning-rate", "-1"),
        ("train", "--learning-rate", "inf"),
        ("train", "--learning-rate", "0"),
        ("train", "--degree", "0"),
        ("train", "--bound", "0"),
        ("train", "--bound", "nan"),
    ],
)
def test_query_numbers_refused_before_connecting(capsys, job, option, value):
    line = _run(capsys, "query", job, *QUERIER, option, value)
    assert f"argument {option}:" in line and repr(value) in line
    assert "no.pem" not in line  # the certificates were never looked at


def test_query_train_spec_checked_before_connecting(capsys):
    line = _run(capsys, "query", "train", *QUERIER, "--degree", "40")
    assert "activation_degree" in line and "40" in line


def test_query_train_nesterov_reaches_the_job(capsys):
    """A GLM with Nesterov's momentum takes one more level an iteration: on the test ring
    the default degree-5 activation no longer fits, and the job says why."""
    line = _run(
        capsys, "query", "train", *QUERIER, "--params", "insecure-test-n12", "--momentum",
        "0.5", "--nesterov",
    )  # fmt: skip
    assert "1 for Nesterov momentum" in line


def test_query_train_tile_reaches_the_network_job(capsys):
    """--tile is the network's weight tile side: a side that is no power of two is refused
    by the job, naming its field; a GLM has no tiles."""
    line = _run(
        capsys, "query", "train", *QUERIER, "--model", "mlp", "--hidden", "8", "--tile", "48",
    )  # fmt: skip
    assert "network job: tile" in line and "48" in line
    line = _run(capsys, "query", "train", *QUERIER, "--tile", "32")
    assert "--tile are for networks" in line


def test_query_model_needs_model(capsys):
    line = _run(capsys, "query", "model", *QUERIER)
    assert "--model" in line


# -- phe-fl demo --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option, value", [("--providers", "0"), ("--providers", "1"), ("--iterations", "0")]
)
def test_demo_refuses_before_starting_anything(capsys, option, value):
    line = _run(capsys, "demo", option, value)
    assert f"argument {option}:" in line and repr(value) in line


# -- phe-fl predict -----------------------------------------------------------------------
def test_read_query_csv_width(tmp_path):
    csv = tmp_path / "q.csv"
    np.savetxt(csv, np.ones((4, 5)), delimiter=",")
    x, y = read_query_csv(csv, 5)
    assert x.shape == (4, 5) and y is None
    x, y = read_query_csv(csv, 4, labels_last=True)
    assert x.shape == (4, 4) and y is not None and y.shape == (4,)
    with pytest.raises(ConfigError, match=r"has 5 feature column\(s\), but the model takes 30"):
        read_query_csv(csv, 30)
    with pytest.raises(ConfigError, match=r"4 feature column\(s\) \(besides .*label.*\), .* 5"):
        read_query_csv(csv, 5, labels_last=True)
    with pytest.raises(ConfigError, match="q.csv has 5 feature"):
        check_query_width(x.repeat(2, axis=1)[:, :5], 30, csv)


@pytest.mark.parametrize(
    "text, why",
    [
        ("", "no samples"),
        ("\n\n", "no samples"),
        ("1,2\n3,x\n", "not a numeric CSV"),
        ("1,2,3\n4,5\n", "not a numeric CSV"),
        ("1,nan\n", "row 1, column 2 is not a finite number"),
        ("1\n2\n", "needs features and a label"),
    ],
)
def test_read_query_csv_refuses_bad_files(tmp_path, text, why):
    csv = tmp_path / "q.csv"
    csv.write_text(text)
    with pytest.raises(ConfigError, match=why) as info:
        read_query_csv(csv, labels_last=True)
    assert str(csv) in str(info.value)


def test_predict_bad_csv_refused_before_connecting(capsys, tmp_path):
    csv = tmp_path / "q.csv"
    csv.write_text("1,2\nx,3\n")
    line = _run(capsys, "predict", *QUERIER, "--model", "m", "--input", str(csv))
    assert str(csv) in line and "not a numeric CSV" in line
    line = _run(capsys, "predict", *QUERIER, "--model", "m", "--input", str(tmp_path / "no.csv"))
    assert "no.csv does not exist" in line


def test_predict_wrong_width_after_model_info(capsys, tmp_path, monkeypatch):
    """The CSV's width is checked against the model's job, fetched before encrypting."""
    from phe_fl.federation import querier as querier_module
    from phe_fl.ml import TrainingJob

    csv = tmp_path / "q.csv"
    np.savetxt(csv, np.ones((3, 7)), delimiter=",")
    calls: list[str] = []

    class FakeQuerier:
        def __init__(self, *args: object, **kwargs: object) -> None:
            pass

        def model_info(self, job_id: str, model_id: str) -> tuple[object, TrainingJob]:
            calls.append("model_info")
            return object(), TrainingJob(n_features=30)

        def predict(self, *args: object) -> None:
            calls.append("predict")
            raise AssertionError("encrypted queries of the wrong width")

        def close(self) -> None:
            calls.append("close")

    monkeypatch.setattr(querier_module, "Querier", FakeQuerier)
    line = _run(capsys, "predict", *QUERIER, "--model", "m", "--input", str(csv))
    assert "7 feature column(s)" in line and "takes 30" in line and str(csv) in line
    assert calls == ["model_info", "close"]


# -- anything else: OSError, argparse, interrupts -----------------------------------------
def test_os_error_is_one_line_naming_the_path(capsys, tmp_path):
    line = _run(capsys, "audit", "verify", str(tmp_path))
    assert line == f"phe-fl: error: Is a directory: {tmp_path}"


def test_os_error_from_a_command(capsys, monkeypatch):
    def denied(args: object) -> int:
        raise PermissionError(13, "Permission denied", "/etc/phe-fl/ca.pem")

    monkeypatch.setattr(cli, "_cmd_params", denied)
    line = _run(capsys, "params")
    assert line == "phe-fl: error: Permission denied: /etc/phe-fl/ca.pem"


def test_programming_errors_are_not_swallowed(monkeypatch):
    def broken(args: object) -> int:
        raise TypeError("a bug")

    monkeypatch.setattr(cli, "_cmd_params", broken)
    with pytest.raises(TypeError, match="a bug"):
        main(["params"])


def test_keyboard_interrupt_exits_130(capsys, monkeypatch):
    def interrupted(args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_cmd_params", interrupted)
    assert main(["params"]) == 130
    assert capsys.readouterr().err == "phe-fl: interrupted\n"


def test_usage_errors_are_one_line(capsys):
    line = _run(capsys, "bogus")
    assert "invalid choice: 'bogus'" in line
    line = _run(capsys, "query", "stats")
    assert "required" in line and "--root" in line


def test_good_input_still_runs(capsys):
    assert main(["params"]) == 0
    assert "n14-depth5-128" in capsys.readouterr().out


def test_real_process_has_no_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    for argv in (["node", "--config", "/tmp"], ["node", "--config", "x", "--deadline", "nan"]):
        done = subprocess.run(
            [sys.executable, "-m", "phe_fl.cli", *argv],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2, done.stderr
        assert "Traceback" not in done.stderr
        assert done.stderr.startswith("phe-fl: error: ") and done.stderr.count("\n") == 1
        assert ("/tmp" if argv[2] == "/tmp" else "'nan'") in done.stderr
