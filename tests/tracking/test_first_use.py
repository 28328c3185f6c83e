"""The first use of a new SQLite store by several processes at once (issue 11, item 11).

MLflow creates and migrates a SQLite store's tables when the first client of its
URI is built in a process. Several processes doing so on a file that does not exist
yet used to race inside the migration (``table ... already exists``, ``duplicate
column name``), and all but one fit failed in their ``load`` stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import mlflow
import pytest

import mlpipe
from mlpipe.tracking import _store as store

# Each process imports everything and reads its data, says it is ready (a file),
# then waits for the go file, so that all of them reach the new store together.
FITTER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import mlpipe

    index, here = int(sys.argv[1]), Path(sys.argv[2])
    X = np.arange(40.0).reshape(20, 2) + index  # each process its own data: its own chain
    y = np.array([0, 1] * 10)
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())],
        cv=None,
        log_model=False,
    )
    (here / f"ready-{index}").touch()
    go = here / "go"
    while not go.exists():
        time.sleep(0.002)
    pipe.fit(X, y)
    print(json.dumps(pipe.run_ids_))
    """
)


def _wait_for(condition, processes, logs, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        for process, log in zip(processes, logs, strict=True):
            if process.poll() is not None:
                pytest.fail(f"A fitter died before {what}: {log.read_text()[-4000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.slow
def test_eight_processes_create_a_new_store_at_once(tmp_path, monkeypatch):
    db = tmp_path / "new" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    script = tmp_path / "fitter.py"
    script.write_text(FITTER)
    here = tmp_path / "barrier"
    here.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    count = 8
    logs = [tmp_path / f"fitter-{i}.err" for i in range(count)]
    processes = []
    try:
        for i, log in enumerate(logs):
            with log.open("wb") as err:  # a file, not a pipe: it cannot fill up and block
                processes.append(
                    subprocess.Popen(
                        [sys.executable, str(script), str(i), str(here)],
                        stdout=subprocess.PIPE,
                        stderr=err,
                        env=env,
                        cwd=tmp_path,
                    )
                )
        ready = [here / f"ready-{i}" for i in range(count)]
        _wait_for(lambda: all(r.exists() for r in ready), processes, logs, "all were ready")
        assert not db.exists()
        (here / "go").touch()
        chains = []
        for process, log in zip(processes, logs, strict=True):
            out, _ = process.communicate(timeout=600)
            assert process.returncode == 0, log.read_text()[-4000:]
            chains.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for process in processes:  # those still running when one failed
            if process.poll() is None:
                process.kill()
                process.wait()
            if process.stdout is not None:
                process.stdout.close()

    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    for stage in ("load", "processing", "model"):
        table = mlpipe.runs(stage=stage)
        assert len(table) == count and set(table["status"]) == {"FINISHED"}
        assert set(table["run_id"]) == {chain[stage] for chain in chains}
    for chain in chains:
        entries = mlpipe.lineage(chain["model"])
        assert [e.run_id for e in entries] == [chain[s] for s in ("load", "processing", "model")]
    assert db.with_name(db.name + ".lock").exists()  # the lock that serialized creation


def test_the_creation_lock_is_taken_once_per_process_and_store(tmp_path, monkeypatch):
    db = tmp_path / "other" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}?timeout=30"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    store.client().search_experiments()
    lock = db.with_name(db.name + ".lock")
    assert db.exists() and lock.exists()
    lock.unlink()
    store.client().search_experiments()
    assert not lock.exists()  # already created by this process: no lock taken again


def test_no_lock_for_other_stores(tmp_path, monkeypatch):
    memory = "sqlite:///:memory:"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", memory)
    mlflow.set_tracking_uri(memory)
    store.client()
    assert not list(tmp_path.glob("*.lock"))
    assert not list(Path.cwd().glob("*.lock"))
