"""Four processes fitting at once against one store all succeed, and lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline

pytestmark = pytest.mark.slow

# Each process reports that it is ready to fit (imports done, data read) and waits
# for the go on its stdin: all four fit at the same moment, however slow their start.
# Processes 0 and 1 fit the identical pipeline on the identical data.
FITTER = textwrap.dedent(
    """
    import json, sys

    from palmerpenguins import load_penguins

    from mlpipe.cli._demo import penguins_pipeline

    index = int(sys.argv[1])
    raw = load_penguins()
    X, y = raw.drop(columns="species"), raw["species"]
    pipe = penguins_pipeline().set_params(cv=2, model__C=1.0 if index < 2 else 0.1 * index)
    print("ready", flush=True)
    assert sys.stdin.readline() == "go\\n"
    pipe.fit(X, y)
    result = {"run_ids": pipe.run_ids_, "model_uri": pipe.model_uri_}
    print(json.dumps({**result, "predictions": pipe.predict(X).tolist()}))
    """
)


def _fit_at_once(tmp_path: Path, uri: str, processes: int = 4) -> list[dict[str, object]]:
    script = tmp_path / "fitter.py"
    script.write_text(FITTER)
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    logs = [tmp_path / f"fitter-{i}.err" for i in range(processes)]
    running = []
    for i, log in enumerate(logs):
        with log.open("wb") as err:  # a file, not a pipe: it cannot fill up and block the child
            running.append(
                subprocess.Popen(
                    [sys.executable, str(script), str(i)],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=err,
                    env=env,
                    cwd=tmp_path,
                )
            )
    try:
        # The barrier: every child has said it is ready (or died) before any is released.
        for process, log in zip(running, logs, strict=True):
            assert process.stdout.readline() == b"ready\n", log.read_text()[-4000:]
        for process in running:
            process.stdin.write(b"go\n")
            process.stdin.flush()
        results = []
        for process, log in zip(running, logs, strict=True):
            out, _ = process.communicate(timeout=600)
            assert process.returncode == 0, log.read_text()[-4000:]
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for process in running:  # those still waiting, when one failed
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_four_processes_fit_at_once_and_every_run_is_there(tracking_store, tmp_path):
    results = _fit_at_once(tmp_path, tracking_store)
    raw = load_penguins()
    X = raw.drop(columns="species")
    client = mlflow.MlflowClient()
    for result in results:
        run_ids = result["run_ids"]
        assert isinstance(run_ids, dict) and set(run_ids) == {"load", "processing", "model"}
        for run_id in run_ids.values():
            assert client.get_run(run_id).info.status == "FINISHED"
        # Each logged model is complete: it predicts as the process that fitted it did.
        assert str(result["model_uri"]).startswith("models:/m-")
        loaded = mlflow.pyfunc.load_model(str(result["model_uri"]))
        assert loaded.predict(X).tolist() == result["predictions"]

    every = pd.concat([mlpipe.runs(stage=stage) for stage in ("load", "processing", "model")])
    assert set(every["status"]) == {"FINISHED"}
    for stage, runs in every.groupby("stage"):
        assert runs["key"].is_unique, f"duplicate keys in {stage}: {sorted(runs['key'])}"
    # The four models are all there, each pointing at a processing run that exists.
    models = mlpipe.runs(stage="model")
    assert set(models["run_id"]) >= {r["run_ids"]["model"] for r in results}  # type: ignore[index]
    assert set(models["upstream"]) <= set(mlpipe.runs(stage="processing")["run_id"])

    # Two processes fitted the identical pipeline at once: whichever won, the cache
    # still answers with a complete, loadable chain and refits nothing.
    pipe = penguins_pipeline().set_params(cv=2, model__C=1.0)
    pipe.fit(X, raw["species"])
    assert pipe.reused_ == ["processing", "model"]
    # The chain it continues may mix the two processes' runs; a model run reused under
    # another upstream run is recorded as a new run naming the one it reuses.
    model_run = client.get_run(pipe.run_ids_["model"])
    reused = model_run.data.tags.get(schema.REUSED_FROM, model_run.info.run_id)
    assert reused in {r["run_ids"]["model"] for r in results[:2]}  # type: ignore[index]
    served = mlflow.pyfunc.load_model(pipe.model_uri_).predict(X)
    assert (served == pipe.predict(X)).all()
    assert model_run.data.tags[schema.MODEL_URI] == pipe.model_uri_
