"""Four processes fitting at once against one store all succeed, and lose nothing."""

from __future__ import annotations

import json
import os
import signal
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
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline

pytestmark = pytest.mark.slow

# One parent imports everything once, then forks the four fitters: each is a process
# of its own (its own MLflow client and store connections), without importing MLflow
# and scikit-learn again. Each reports that it is ready to fit (data read, pipeline
# built) and waits for the go on the parent's stdin: all four fit at the same moment,
# however slow their start. Processes 0 and 1 fit the identical pipeline on the
# identical data. Each writes its result to a file and its errors to its own log.
FITTERS = textwrap.dedent(
    """
    import json, os, sys, traceback
    from pathlib import Path

    from palmerpenguins import load_penguins

    import mlflow.store.tracking.sqlalchemy_store  # imported before the fork; no store is used
    import mlpipe._chain
    import mlpipe._pipeline
    import mlpipe.tracking._store
    from mlpipe.cli._demo import penguins_pipeline

    count, here = int(sys.argv[1]), Path(sys.argv[2])
    raw = load_penguins()
    X, y = raw.drop(columns="species"), raw["species"]
    go_read, go_write = os.pipe()


    def fit(index):
        pipe = penguins_pipeline().set_params(cv=2, model__C=1.0 if index < 2 else 0.1 * index)
        (here / f"ready-{index}").touch()
        assert os.read(go_read, 1) == b"g"
        pipe.fit(X, y)
        result = {"run_ids": pipe.run_ids_, "model_uri": pipe.model_uri_}
        result["predictions"] = pipe.predict(X).tolist()
        (here / f"result-{index}.json").write_text(json.dumps(result))


    children = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            log = os.open(here / f"fitter-{index}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 2)
            # Not the parent's stdout: os._exit below skips joblib's shutdown, and the
            # fold workers it leaves (idle for minutes) would hold that pipe open.
            os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
            status = 1
            try:
                fit(index)
                status = 0
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(status)
        children[pid] = index
    # The barrier: the test says go once every child has said it is ready.
    assert sys.stdin.readline() == "go\\n"
    os.write(go_write, b"g" * count)
    exits = {}
    while children:
        pid, status = os.wait()
        exits[children.pop(pid)] = os.waitstatus_to_exitcode(status)
    print(json.dumps(exits))
    """
)


def _fit_at_once(tmp_path: Path, uri: str, processes: int = 4) -> list[dict[str, object]]:
    script = tmp_path / "fitters.py"
    script.write_text(FITTERS)
    here = tmp_path / "fitters"
    here.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    logs = [here / f"fitter-{i}.err" for i in range(processes)]
    parent_log = tmp_path / "fitters.err"
    with parent_log.open("wb") as err:  # a file, not a pipe: it cannot fill up and block
        parent = subprocess.Popen(
            [sys.executable, str(script), str(processes), str(here)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=tmp_path,
            start_new_session=True,  # its group: the fitters too, for the kill below
        )
    try:
        ready = [here / f"ready-{i}" for i in range(processes)]
        deadline = time.monotonic() + 300
        while not all(r.exists() for r in ready):
            died = [log.read_text()[-4000:] for log in logs if log.exists() and log.stat().st_size]
            assert parent.poll() is None and not died, (parent_log.read_text()[-4000:], died)
            assert time.monotonic() < deadline, "the fitters were not ready in 300 s"
            time.sleep(0.01)
        out, _ = parent.communicate(b"go\n", timeout=600)
        assert parent.returncode == 0, parent_log.read_text()[-4000:]
        exits = {int(i): code for i, code in json.loads(out.decode().splitlines()[-1]).items()}
        assert sorted(exits) == list(range(processes))
        for i, code in exits.items():
            assert code == 0, logs[i].read_text()[-4000:]
        return [json.loads((here / f"result-{i}.json").read_text()) for i in range(processes)]
    finally:
        if parent.poll() is None:  # a fitter failed or hung: stop them all
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()


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
