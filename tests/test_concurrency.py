"""Four processes fitting at once against one store all succeed, and lose nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.tracking import _schema as schema

pytestmark = pytest.mark.slow

# Each process waits for the start file so that all four fit at the same moment.
# Processes 0 and 1 fit the identical pipeline on the identical data.
FITTER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    from palmerpenguins import load_penguins

    from mlpipe.cli._demo import penguins_pipeline

    index, start = int(sys.argv[1]), Path(sys.argv[2])
    raw = load_penguins()
    pipe = penguins_pipeline().set_params(cv=2, model__C=1.0 if index < 2 else 0.1 * index)
    while not start.exists():
        time.sleep(0.01)
    pipe.fit(raw.drop(columns="species"), raw["species"])
    print(json.dumps({"run_ids": pipe.run_ids_, "model_uri": pipe.model_uri_}))
    """
)


def _fit_at_once(tmp_path: Path, uri: str, processes: int = 4) -> list[dict[str, object]]:
    script = tmp_path / "fitter.py"
    script.write_text(FITTER)
    start = tmp_path / "start"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    running = [
        subprocess.Popen(
            [sys.executable, str(script), str(i), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=tmp_path,
        )
        for i in range(processes)
    ]
    time.sleep(8)  # let the interpreters import everything, then release them together
    start.touch()
    results = []
    for process in running:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err.decode()[-4000:]
        results.append(json.loads(out.decode().strip().splitlines()[-1]))
    return results


def test_four_processes_fit_at_once_and_every_run_is_there(tracking_store, tmp_path):
    results = _fit_at_once(tmp_path, tracking_store)
    client = mlflow.MlflowClient()
    for result in results:
        run_ids = result["run_ids"]
        assert isinstance(run_ids, dict) and set(run_ids) == {"load", "processing", "model"}
        for run_id in run_ids.values():
            assert client.get_run(run_id).info.status == "FINISHED"
        assert mlflow.pyfunc.load_model(str(result["model_uri"])) is not None

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
    raw = load_penguins()
    pipe = penguins_pipeline().set_params(cv=2, model__C=1.0)
    pipe.fit(raw.drop(columns="species"), raw["species"])
    assert pipe.reused_ == ["processing", "model"]
    # The chain it continues may mix the two processes' runs; a model run reused under
    # another upstream run is recorded as a new run naming the one it reuses.
    model_run = client.get_run(pipe.run_ids_["model"])
    reused = model_run.data.tags.get(schema.REUSED_FROM, model_run.info.run_id)
    assert reused in {r["run_ids"]["model"] for r in results[:2]}  # type: ignore[index]
    served = mlflow.pyfunc.load_model(pipe.model_uri_).predict(raw.drop(columns="species"))
    assert (served == pipe.predict(raw.drop(columns="species"))).all()
    assert model_run.data.tags[schema.MODEL_URI] == pipe.model_uri_
