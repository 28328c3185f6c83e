"""The seed workflow of the ``mlpipe`` command, against a real SQLite table.

Most commands run in this process (``mlpipe.cli.main``, as the console script calls
it): a new process would spend most of its time importing MLflow again. One command
of the workflow and one user error go through the real console script, in a process
of their own, so the script, its exit status and its stderr stay covered.
"""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
from palmerpenguins import load_penguins

from mlpipe.cli import main

MLPIPE = str(Path(sys.executable).parent / "mlpipe")


def _mlpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd / 'mlflow.db'}"
    return subprocess.run(
        [MLPIPE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


def _in_process(*args: str, capsys: pytest.CaptureFixture[str]) -> subprocess.CompletedProcess[str]:
    """``mlpipe *args`` through ``main`` in this process, against the test's store
    (``cwd/mlflow.db``, as ``_mlpipe`` gives its process)."""
    capsys.readouterr()
    try:
        status = main(list(args))
    except SystemExit as stop:  # argparse's own errors
        status = stop.code if isinstance(stop.code, int) else 2
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess([MLPIPE, *args], status, out, err)


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        load_penguins().to_sql("penguins", connection, index=False)
    return tmp_path


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


@pytest.mark.usefixtures("without_cross_validation")  # the workflow, not the scores
def test_load_process_train_main_lineage(shop, capsys):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    out = _ok(
        _in_process(
            "load",
            "--source",
            "sqlite:///shop.db",
            "--table",
            "penguins",
            "--target",
            "species",
            capsys=capsys,
        )
    )
    assert "penguins@" in out and "344" in out
    out = _ok(
        _in_process(
            "process",
            "--logic",
            "plain",
            "--table",
            "penguins",
            "--retrieval-time",
            today,
            capsys=capsys,
        )
    )
    assert "plain@" in out and " ran" in out
    out = _ok(
        _in_process(
            "train",
            "--algorithm",
            "rf",
            "--logic",
            "plain",
            "--processed-time",
            today,
            "-P",
            "n_estimators=20",
            capsys=capsys,
        )
    )
    assert "processing" in out and "reused" in out and "rf@" in out and "models:/m-" in out
    # The fit in this process; the lookup through the real console script, in a process
    # of its own (a fit there would cross-validate its chain: see without_cross_validation).
    main_args = ("main", "--table", "penguins", "--retrieval-time", today, "--logic", "plain")
    out = _ok(_in_process(*main_args, "--algorithm", "logreg", capsys=capsys))
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["processing"].rstrip().endswith("reused")
    assert lines["model"].rstrip().endswith("ran") and "logreg@" in lines["model"]
    out = _ok(_mlpipe(*main_args, "--algorithm", "rf", cwd=shop))
    assert "nothing to run" in out

    client = mlflow.MlflowClient(f"sqlite:///{shop / 'mlflow.db'}")
    experiments = {e.name for e in client.search_experiments()}
    assert {"load", "processing", "model"} <= experiments
    processing_runs = client.search_runs(
        [client.get_experiment_by_name("processing").experiment_id]
    )
    assert len(processing_runs) == 1  # fitted once, reused by train and both mains
    model_id = lines["model"].split()[2]
    out = _ok(_in_process("lineage", model_id, "--output", "chain.svg", capsys=capsys))
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["load", "processing", "model"]
    assert (shop / "chain.svg").read_text().count("<svg") == 1
    out = _ok(_in_process("runs", "--stage", "model", capsys=capsys))
    assert "logreg@" in out and "rf@" in out

    # gc: a deleted model run goes for good, with its logged model; the rest stays.
    rf_run = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("model").experiment_id])
        if r.info.run_name.startswith("rf@")
    )
    client.delete_run(rf_run.info.run_id)
    out = _ok(_in_process("gc", "--dry-run", capsys=capsys))
    assert rf_run.info.run_id in out
    client.get_run(rf_run.info.run_id)  # a dry run removes nothing
    _ok(_in_process("gc", capsys=capsys))
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_run(rf_run.info.run_id)
    assert client.get_run(model_id).info.status == "FINISHED"


_THROUGH_THE_SCRIPT = "No load of 'penguins' on 2019-02-09"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["process", "--logic", "nope", "--table", "penguins", "--retrieval-time", "2019-02-09"],
            "Unknown logic 'nope'. Known logics:",
        ),
        (
            [
                "process",
                "--logic",
                "plain",
                "--table",
                "penguins",
                "--retrieval-time",
                "2019-02-09",
            ],
            _THROUGH_THE_SCRIPT,
        ),
        (
            [
                "train",
                "--algorithm",
                "rf",
                "--logic",
                "plain",
                "--processed-time",
                "2019-02-09",
                "-P",
                "oops",
            ],
            "Bad -P 'oops': expected name=value",
        ),
        (["load", "--source", "sqlite:///shop.db", "--table", "nope"], "No table 'nope'"),
        (["load", "--source", "missing.csv"], "No such file"),
        (["lineage", "0123456789abcdef0123456789abcdef"], "error:"),
        (
            [
                "main",
                "--table",
                "penguins",
                "--retrieval-time",
                "2019-02-09",
                "--logic",
                "plain",
                "--algorithm",
                "nope",
            ],
            "error:",
        ),
    ],
)
def test_user_errors_print_one_message_and_no_traceback(shop, args, message, capsys):
    _ok(
        _in_process(
            "load",
            "--source",
            "sqlite:///shop.db",
            "--table",
            "penguins",
            "--target",
            "species",
            capsys=capsys,
        )
    )
    # One error through the console script, as a terminal shows it; the others through
    # main, which the script calls (an exception escaping it would fail the test).
    if message == _THROUGH_THE_SCRIPT:
        result = _mlpipe(*args, cwd=shop)
    else:
        result = _in_process(*args, capsys=capsys)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help_with_examples(tmp_path, capsys):
    # One through the console script, the others through main in this process.
    out = _ok(_mlpipe("load", "--help", cwd=tmp_path))
    assert "examples:" in out and "mlpipe load" in out
    for command in ("load", "process", "train", "main", "runs", "lineage", "serve", "gc", "demo"):
        out = _ok(_in_process(command, "--help", capsys=capsys))
        assert "examples:" in out and "mlpipe " + command in out


@pytest.mark.usefixtures("without_cross_validation")  # the registration, not the scores
def test_main_with_register_registers_a_chain_that_already_exists(shop, capsys):
    import mlflow

    today = dt.datetime.now(dt.UTC).date().isoformat()
    source = ("--source", "sqlite:///shop.db", "--table", "penguins", "--target", "species")
    _ok(_in_process("load", *source, capsys=capsys))
    chain = ("--table", "penguins", "--retrieval-time", today, "--logic", "plain")
    first = _ok(_in_process("main", *chain, "--algorithm", "logreg", capsys=capsys))
    assert " ran" in first
    again = _ok(
        _in_process("main", *chain, "--algorithm", "logreg", "--register", "shop", capsys=capsys)
    )
    # Nothing refitted, and the existing chain's model is now a registered version.
    assert " ran" not in again
    (version,) = mlflow.MlflowClient().search_model_versions("name = 'shop'")
    model_run = next(
        line.split()[2] for line in first.splitlines() if line.split()[:1] == ["model"]
    )
    assert version.run_id == model_run
