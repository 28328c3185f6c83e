"""The seed workflow through the real console script, against a real SQLite table."""

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

MLPIPE = str(Path(sys.executable).parent / "mlpipe")


def _mlpipe(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{cwd / 'mlflow.db'}"
    return subprocess.run(
        [MLPIPE, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        load_penguins().to_sql("penguins", connection, index=False)
    return tmp_path


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return result.stdout


def test_load_process_train_main_lineage(shop):
    today = dt.datetime.now(dt.UTC).date().isoformat()
    out = _ok(
        _mlpipe(
            "load",
            "--source",
            "sqlite:///shop.db",
            "--table",
            "penguins",
            "--target",
            "species",
            cwd=shop,
        )
    )
    assert "penguins@" in out and "344" in out
    out = _ok(
        _mlpipe(
            "process",
            "--logic",
            "plain",
            "--table",
            "penguins",
            "--retrieval-time",
            today,
            cwd=shop,
        )
    )
    assert "plain@" in out and " ran" in out
    out = _ok(
        _mlpipe(
            "train",
            "--algorithm",
            "rf",
            "--logic",
            "plain",
            "--processed-time",
            today,
            "-P",
            "n_estimators=20",
            cwd=shop,
        )
    )
    assert "processing" in out and "reused" in out and "rf@" in out and "models:/m-" in out
    out = _ok(
        _mlpipe(
            "main",
            "--table",
            "penguins",
            "--retrieval-time",
            today,
            "--logic",
            "plain",
            "--algorithm",
            "rf",
            cwd=shop,
        )
    )
    assert "nothing to run" in out
    out = _ok(
        _mlpipe(
            "main",
            "--table",
            "penguins",
            "--retrieval-time",
            today,
            "--logic",
            "plain",
            "--algorithm",
            "logreg",
            cwd=shop,
        )
    )
    lines = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert lines["processing"].rstrip().endswith("reused")
    assert lines["model"].rstrip().endswith("ran") and "logreg@" in lines["model"]

    client = mlflow.MlflowClient(f"sqlite:///{shop / 'mlflow.db'}")
    experiments = {e.name for e in client.search_experiments()}
    assert {"load", "processing", "model"} <= experiments
    processing_runs = client.search_runs(
        [client.get_experiment_by_name("processing").experiment_id]
    )
    assert len(processing_runs) == 1  # fitted once, reused by train and both mains
    model_id = lines["model"].split()[2]
    out = _ok(_mlpipe("lineage", model_id, "--output", "chain.svg", cwd=shop))
    assert [line.split()[0] for line in out.splitlines()[1:4]] == ["load", "processing", "model"]
    assert (shop / "chain.svg").read_text().count("<svg") == 1
    out = _ok(_mlpipe("runs", "--stage", "model", cwd=shop))
    assert "logreg@" in out and "rf@" in out

    # gc: a deleted model run goes for good, with its logged model; the rest stays.
    rf_run = next(
        r
        for r in client.search_runs([client.get_experiment_by_name("model").experiment_id])
        if r.info.run_name.startswith("rf@")
    )
    client.delete_run(rf_run.info.run_id)
    out = _ok(_mlpipe("gc", "--dry-run", cwd=shop))
    assert rf_run.info.run_id in out
    client.get_run(rf_run.info.run_id)  # a dry run removes nothing
    _ok(_mlpipe("gc", cwd=shop))
    with pytest.raises(mlflow.exceptions.MlflowException):
        client.get_run(rf_run.info.run_id)
    assert client.get_run(model_id).info.status == "FINISHED"


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
            "No load of 'penguins' on 2019-02-09",
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
def test_user_errors_print_one_message_and_no_traceback(shop, args, message):
    _ok(
        _mlpipe(
            "load",
            "--source",
            "sqlite:///shop.db",
            "--table",
            "penguins",
            "--target",
            "species",
            cwd=shop,
        )
    )
    result = _mlpipe(*args, cwd=shop)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_every_command_has_help_with_examples(tmp_path):
    for command in ("load", "process", "train", "main", "runs", "lineage", "serve", "gc", "demo"):
        out = _ok(_mlpipe(command, "--help", cwd=tmp_path))
        assert "examples:" in out and "mlpipe " + command in out
