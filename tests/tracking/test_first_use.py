"""The first use of a new SQLite store by several processes at once (issue 11, item 11).

MLflow creates and migrates a SQLite store's tables when the first client of its
URI is built in a process. Several processes doing so on a file that does not exist
yet used to race inside the migration (``table ... already exists``, ``duplicate
column name``), and all but one fit failed in their ``load`` stage.
"""

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
import pytest

import mlpipe
from mlpipe.tracking import _store as store

# One parent imports everything once, then forks the fitters: each is a process of its
# own (its own MLflow client, engine and first use of the store), without paying the
# seconds of importing MLflow and scikit-learn again. Each fitter reads its data, says
# it is ready (a file), then waits for the go file, so that all of them reach the new
# store together; it writes its chain to a file and its errors to its own log.
FITTERS = textwrap.dedent(
    """
    import json, os, sys, time, traceback
    from pathlib import Path

    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    # What the first use of a store runs, imported before the fork; no store is touched.
    import mlflow.store.tracking.sqlalchemy_store
    import mlpipe
    import mlpipe._chain
    import mlpipe._pipeline
    import mlpipe.tracking._store

    count, here = int(sys.argv[1]), Path(sys.argv[2])


    def fit(index):
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
        (here / f"chain-{index}.json").write_text(json.dumps(pipe.run_ids_))


    children = {}
    for index in range(count):
        pid = os.fork()
        if pid == 0:
            log = os.open(here / f"fitter-{index}.err", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(log, 2)
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
    exits = {}
    while children:
        pid, status = os.wait()
        exits[children.pop(pid)] = os.waitstatus_to_exitcode(status)
    print(json.dumps(exits))
    """
)


def _wait_for(condition, process, logs, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            died = "\n".join(log.read_text()[-4000:] for log in logs if log.exists())
            pytest.fail(f"The fitters died before {what}: {died}")
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out waiting for {what}")
        time.sleep(0.01)


@pytest.mark.slow
def test_eight_processes_create_a_new_store_at_once(tmp_path, monkeypatch):
    db = tmp_path / "new" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    script = tmp_path / "fitters.py"
    script.write_text(FITTERS)
    here = tmp_path / "barrier"
    here.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    count = 8
    logs = [here / f"fitter-{i}.err" for i in range(count)] + [tmp_path / "fitters.err"]
    with logs[-1].open("wb") as err:  # a file, not a pipe: it cannot fill up and block
        process = subprocess.Popen(
            [sys.executable, str(script), str(count), str(here)],
            stdout=subprocess.PIPE,
            stderr=err,
            env=env,
            cwd=tmp_path,
            start_new_session=True,  # its group: the fitters too, for the kill below
        )
    try:
        ready = [here / f"ready-{i}" for i in range(count)]
        _wait_for(lambda: all(r.exists() for r in ready), process, logs, "all were ready")
        assert not db.exists()
        (here / "go").touch()
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0, logs[-1].read_text()[-4000:]
        exits = {int(i): code for i, code in json.loads(out.decode().splitlines()[-1]).items()}
        assert sorted(exits) == list(range(count))
        for i, code in exits.items():
            assert code == 0, logs[i].read_text()[-4000:]
        chains = [json.loads((here / f"chain-{i}.json").read_text()) for i in range(count)]
    finally:
        if process.poll() is None:  # a fitter failed or hung: stop them all
            os.killpg(process.pid, signal.SIGKILL)
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
