"""The MLflow project in examples/penguins, run with `mlflow run` as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import mlflow
import pytest
import yaml

import mlpipe

EXAMPLE = Path(__file__).parents[2] / "examples" / "penguins"
BIN = Path(sys.executable).parent
STAGES = ("load", "processing", "model")
CHAIN_TAGS = {stage: f"mlpipe.chain.{stage}" for stage in STAGES}


def _mlflow_run(
    project: Path, entry_point: str, *params: str, uri: str, cwd: Path
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = uri
    env["MLFLOW_DISABLE_TELEMETRY"] = "true"
    env["DO_NOT_TRACK"] = "true"
    # The entry points call `mlpipe` and `python`: this environment's, as --env-manager local says.
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    command = [str(BIN / "mlflow"), "run", str(project), "-e", entry_point]
    for param in params:
        command += ["-P", param]
    command += ["--env-manager", "local", "--experiment-name", "launcher"]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    return result


def _mlflow_run_here(
    project: Path,
    entry_point: str,
    *params: str,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> subprocess.CompletedProcess[str]:
    """``mlflow run`` through the entry point that the ``mlflow`` script calls
    (``mlflow.cli:cli``), in this process, against the test's store and in its working
    directory: the same command line parsed by the same code, without a new process
    importing MLflow again. The entry point's commands still run as MLflow runs them,
    in a shell of their own; their output reaches this process's file descriptors."""
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.setenv("PATH", f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    from mlflow.cli import cli

    command = ["run", str(project), "-e", entry_point]
    for param in params:
        command += ["-P", param]
    command += ["--env-manager", "local", "--experiment-name", "launcher"]
    capfd.readouterr()
    try:
        cli.main(args=command, prog_name="mlflow")
        status = 0
    except SystemExit as stop:  # click ends a command with sys.exit
        status = stop.code if isinstance(stop.code, int) else int(bool(stop.code))
    out, err = capfd.readouterr()
    assert status == 0, out + err
    assert "Traceback" not in err
    return subprocess.CompletedProcess(["mlflow", *command], status, out, err)


def _runs(client: mlflow.MlflowClient, experiment: str) -> list:
    found = client.get_experiment_by_name(experiment)
    assert found is not None, f"no experiment {experiment!r}"
    return client.search_runs([found.experiment_id], order_by=["attributes.start_time ASC"])


@pytest.mark.slow
def test_mlflow_run_load_then_main_twice(tmp_path, tracking_store, monkeypatch, capfd):
    project = tmp_path / "penguins"
    shutil.copytree(
        EXAMPLE,
        project,
        ignore=shutil.ignore_patterns("*.db", "mlruns", "__pycache__"),
    )
    client = mlflow.MlflowClient(tracking_store)

    _mlflow_run(project, "load", uri=tracking_store, cwd=tmp_path)
    assert (project / "penguins.db").is_file()  # written in the working directory
    (load_run,) = _runs(client, "load")
    key = load_run.data.tags["mlpipe.key"]
    assert key.startswith("penguins@")
    # The load run's own UTC date, not the clock's: the test may cross midnight.
    today = f"{key[9:13]}-{key[13:15]}-{key[15:17]}"

    main = (
        "table=penguins",
        f"retrieval_time={today}",
        "logic=plain",
        "algorithm=logreg",
    )
    # The load through the real `mlflow` program; both mains through its entry point
    # in this process (the working directory is tmp_path, as for the program).
    assert Path.cwd() == tmp_path
    _mlflow_run_here(project, "main", *main, monkeypatch=monkeypatch, capfd=capfd)
    chain = mlpipe.find_chain("penguins", today, "plain", "logreg")
    assert chain is not None
    assert chain.run_ids["load"] == load_run.info.run_id

    second = _mlflow_run_here(project, "main", *main, monkeypatch=monkeypatch, capfd=capfd)
    assert "The chain exists: nothing to run." in second.stdout

    # Every stage run sits in its stage's experiment, whatever experiment and run
    # `mlflow run` handed to the entry point (MLFLOW_EXPERIMENT_ID, MLFLOW_RUN_ID).
    by_stage = {stage: _runs(client, stage) for stage in STAGES}
    assert {s: [r.info.run_id for r in runs] for s, runs in by_stage.items()} == {
        s: [chain.run_ids[s]] for s in STAGES
    }  # the second main fitted nothing
    for stage, runs in by_stage.items():
        assert all(r.data.tags["mlpipe.stage"] == stage for r in runs)
        assert all(r.info.status == "FINISHED" for r in runs)

    # The launcher experiment holds the three launcher runs and nothing else.
    launcher = _runs(client, "launcher")
    assert [r.data.tags.get("mlflow.project.entryPoint") for r in launcher] == [
        "load",
        "main",
        "main",
    ]
    assert all(r.info.status == "FINISHED" for r in launcher)
    assert not any("mlpipe.stage" in r.data.tags for r in launcher)
    launcher_id = client.get_experiment_by_name("launcher").experiment_id
    assert client.search_logged_models([launcher_id]) == []
    model_id = client.get_experiment_by_name("model").experiment_id
    (logged,) = client.search_logged_models([model_id])
    assert logged.source_run_id == chain.run_ids["model"]
    assert not _runs(client, "Default")

    # Each main launcher run names the chain it produced, then reused.
    for run in launcher[1:]:
        tags = {s: run.data.tags.get(tag) for s, tag in CHAIN_TAGS.items()}
        assert tags == chain.run_ids
        assert run.data.params["algorithm"] == "logreg"
    assert CHAIN_TAGS["load"] not in launcher[0].data.tags


def test_python_env_pins_what_mlpipe_pins():
    spec = yaml.safe_load((EXAMPLE / "MLproject").read_text())
    assert spec["python_env"] == "python_env.yaml"
    assert set(spec["entry_points"]) == {"data", "load", "processing", "model", "main"}
    env = yaml.safe_load((EXAMPLE / spec["python_env"]).read_text())
    assert env["python"] == "3.11"
    pyproject = tomllib.loads((EXAMPLE.parents[1] / "pyproject.toml").read_text())
    mlflow_pin = next(d for d in pyproject["project"]["dependencies"] if d.startswith("mlflow"))
    assert mlflow_pin in env["dependencies"]
