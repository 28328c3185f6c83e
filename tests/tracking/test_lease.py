"""Heartbeats and leases: runs of machines that died do not stay RUNNING (issue 11, item 12).

A stage run beats (tag ``mlpipe.heartbeat``) while it is open and records its
lease (``mlpipe.lease_seconds``). Any fit, from any host, ends FAILED a RUNNING run
whose last beat is older than its lease, and says why (``mlpipe.ended_because``).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pytest
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mlpipe
from mlpipe import schema
from mlpipe.cli import main
from mlpipe.tracking import _store as store

# A fit whose processing step blocks until the go file appears, after saying (a
# file) that it is fitting.
BLOCKED_FIT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    import numpy as np
    from sklearn.base import BaseEstimator, TransformerMixin
    from sklearn.linear_model import LogisticRegression

    import mlpipe

    here = Path(sys.argv[1])


    class Blocks(TransformerMixin, BaseEstimator):
        def fit(self, X, y=None):
            (here / "fitting").touch()
            while not (here / "go").exists():
                time.sleep(0.01)
            return self

        def transform(self, X):
            return X


    X = np.arange(40.0).reshape(20, 2)
    y = np.array([0, 1] * 10)
    mlpipe.LineagePipeline(
        [("processing", Blocks()), ("model", LogisticRegression())], cv=None, log_model=False
    ).fit(X, y)
    """
)


def _until(condition: Callable[[], Any], what: str, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"Timed out waiting for {what}")
        time.sleep(0.02)
    return result


def _data(shift: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    return np.arange(40.0).reshape(20, 2) + shift, np.array([0, 1] * 10)


def _fit_here() -> mlpipe.LineagePipeline:
    X, y = _data(shift=100.0)
    return mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())],
        cv=None,
        log_model=False,
    ).fit(X, y)


def _running_processing_run() -> str | None:
    client = store.client()  # retries while a beat holds the store for a moment
    experiment = client.get_experiment_by_name("processing")
    if experiment is None:
        return None
    found = client.search_runs(
        [experiment.experiment_id], filter_string="attributes.status = 'RUNNING'"
    )
    return found[0].info.run_id if found else None


def _beat(run_id: str) -> int:
    return int(store.client().get_run(run_id).data.tags.get(schema.HEARTBEAT, "0"))


def _abandoned(run_id: str) -> bool:
    table = mlpipe.runs(stage="processing").set_index("run_id")
    return bool(table.loc[run_id, "abandoned"])


@pytest.fixture
def blocked_fit(tmp_path, tracking_store):
    """Start a blocked fit in another process; yields (process, run id, go file)."""
    started: list[subprocess.Popen[bytes]] = []
    here = tmp_path / "blocked"
    here.mkdir()
    script = here / "fit.py"
    script.write_text(BLOCKED_FIT)

    def start(heartbeat: float, lease: float) -> tuple[subprocess.Popen[bytes], str, Path]:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": tracking_store,
            "MLPIPE_HEARTBEAT_SECONDS": str(heartbeat),
            "MLPIPE_LEASE_SECONDS": str(lease),
        }
        log = here / "fit.err"
        with log.open("wb") as err:
            process = subprocess.Popen(
                [sys.executable, str(script), str(here)], stderr=err, env=env, cwd=tmp_path
            )
        started.append(process)

        def fitting() -> bool:
            assert process.poll() is None, log.read_text()[-4000:]
            return (here / "fitting").exists()

        _until(fitting, "the blocked fit to start fitting")
        run_id = _running_processing_run()
        assert run_id is not None
        return process, run_id, here / "go"

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


@pytest.mark.slow
def test_a_dead_machines_run_is_ended_when_its_lease_expires(blocked_fit, capsys):
    process, run_id, _ = blocked_fit(heartbeat=0.2, lease=1.5)
    client = mlflow.MlflowClient()
    tags = client.get_run(run_id).data.tags
    assert float(tags[schema.LEASE_SECONDS]) == 1.5
    first = _beat(run_id)
    _until(lambda: _beat(run_id) > first, "a heartbeat")  # it beats while the step runs

    process.send_signal(signal.SIGKILL)  # the machine dies
    process.wait()
    # ... on another machine: the same-host rule (its pid is gone) cannot end it.
    client.set_tag(run_id, schema.OWNER, f"elsewhere:{process.pid}")
    assert client.get_run(run_id).info.status == "RUNNING"
    _until(lambda: _abandoned(run_id), "mlpipe.runs to show the run abandoned")
    row = mlpipe.runs(stage="processing").set_index("run_id").loc[run_id]
    assert row["status"] == "RUNNING"

    _fit_here()
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    reason = run.data.tags[schema.ENDED_BECAUSE]
    assert "elsewhere" in reason and "heartbeat" in reason and "1.5 s" in reason
    row = mlpipe.runs(stage="processing").set_index("run_id").loc[run_id]
    assert row["status"] == "FAILED" and bool(row["abandoned"])
    assert main(["runs", "--stage", "processing"]) == 0
    shown = [line for line in capsys.readouterr().out.splitlines() if run_id in line]
    assert len(shown) == 1 and "FAILED (abandoned)" in shown[0]


@pytest.mark.slow
def test_a_live_run_with_a_fresh_heartbeat_is_left_alone(blocked_fit):
    process, run_id, go = blocked_fit(heartbeat=0.2, lease=3.0)
    client = mlflow.MlflowClient()
    client.set_tag(run_id, schema.OWNER, f"elsewhere:{process.pid}")
    started = client.get_run(run_id).info.start_time
    # Older than its lease: only its beats keep it alive.
    _until(lambda: _beat(run_id) > started + 3500, "the run to outlive its first lease")
    assert not _abandoned(run_id)

    _fit_here()
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING" and schema.ENDED_BECAUSE not in run.data.tags

    go.touch()
    assert process.wait(timeout=300) == 0
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert _beat(run_id) <= run.info.end_time  # no beat after the end
    assert not _abandoned(run_id)


class _Failures(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.failed = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if "heartbeat" in record.getMessage().lower() and "failed" in record.getMessage():
            self.failed.set()


class RefusesItsBeats(TransformerMixin, BaseEstimator):
    """A step during whose fit the store refuses its run's beats for a moment."""

    def __init__(self, failures: Any = None):
        self.failures = failures

    def fit(self, X, y=None):
        run_id = _running_processing_run()
        assert run_id is not None
        beats = [t for t in threading.enumerate() if t.name.startswith("mlpipe-heartbeat")]
        assert beats and all(t.daemon for t in beats)  # never keeps the process alive
        first = _beat(run_id)
        _until(lambda: _beat(run_id) > first, "a heartbeat", timeout=60)
        # A deleted run takes no tags, so its beats fail. (A locked SQLite store would
        # do too, but MLflow waits 20 s for a lock before failing.)
        client = store.client()
        client.delete_run(run_id)
        try:
            assert self.failures.failed.wait(60), "no beat failed"
        finally:
            client.restore_run(run_id)
        restored = int(time.time() * 1000)
        _until(lambda: _beat(run_id) >= restored, "a beat after the failure", timeout=60)
        return self

    def transform(self, X):
        return X


def test_beats_stop_with_the_run_and_a_failed_beat_does_not_fail_the_fit(monkeypatch):
    monkeypatch.setenv("MLPIPE_HEARTBEAT_SECONDS", "0.05")
    monkeypatch.setenv("MLPIPE_LEASE_SECONDS", "30")
    failures = _Failures()
    logger = logging.getLogger("mlpipe")
    logger.addHandler(failures)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    try:
        X, y = _data()
        pipe = mlpipe.LineagePipeline(
            [("processing", RefusesItsBeats(failures)), ("model", LogisticRegression())],
            cv=None,
            log_model=False,
        ).fit(X, y)
    finally:
        logger.removeHandler(failures)
        logger.setLevel(old_level)
    assert not [t for t in threading.enumerate() if t.name.startswith("mlpipe-heartbeat")]
    run = mlflow.MlflowClient().get_run(pipe.run_ids_["processing"])
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.LEASE_SECONDS] == "30"
    assert _beat(run.info.run_id) <= run.info.end_time  # no beat after the end


def test_beat_and_lease_must_be_positive_and_the_lease_longer(monkeypatch):
    monkeypatch.setenv("MLPIPE_HEARTBEAT_SECONDS", "10")
    monkeypatch.setenv("MLPIPE_LEASE_SECONDS", "5")
    X, y = _data()
    pipe = mlpipe.LineagePipeline([("model", LogisticRegression())], cv=None, log_model=False)
    with pytest.raises(ValueError, match="MLPIPE_LEASE_SECONDS"):
        pipe.fit(X, y)
    monkeypatch.setenv("MLPIPE_HEARTBEAT_SECONDS", "soon")
    with pytest.raises(ValueError, match="MLPIPE_HEARTBEAT_SECONDS"):
        pipe.fit(X, y)
    assert mlpipe.runs().empty  # refused before any run was started


def _run_of_a_dead_process() -> tuple[Any, str, str]:
    """(client, processing experiment id, id of a RUNNING run owned by a process of
    this host that has exited)."""
    client = store.client()
    experiment_id = store.get_or_create_experiment(client, "processing")
    done = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        check=True,
        capture_output=True,
        text=True,
    )
    dead = f"{socket.gethostname()}:{int(done.stdout)}"
    run_id = client.create_run(experiment_id, tags={schema.OWNER: dead}).info.run_id
    return client, experiment_id, run_id


def _then(client: Any, meanwhile: Callable[[], None]) -> Any:
    """A client like ``client`` whose ``search_runs`` runs ``meanwhile`` once it has
    searched: what another process does between the search and what follows it."""

    class Then(type(client)):  # type: ignore[misc]
        def search_runs(self, *args: Any, **kwargs: Any) -> Any:
            found = super().search_runs(*args, **kwargs)
            meanwhile()
            return found

    return Then()


def test_a_run_its_fit_ended_after_the_search_is_not_ended_again(tracking_store):
    # Another process's fit: its run RUNNING when this fit searches for abandoned runs,
    # then ended FINISHED by that fit, whose process exits, before this fit judges it.
    # Judged on what the search returned, the run of a dead process was ended FAILED,
    # over the FINISHED of a fit that succeeded (seen with eight processes at once).
    client, experiment_id, run_id = _run_of_a_dead_process()

    def finish() -> None:
        mlflow.MlflowClient().set_terminated(run_id, "FINISHED")

    ended = store.end_abandoned_runs(_then(client, finish), [experiment_id])
    run = client.get_run(run_id)
    assert ended == [] and run.info.status == "FINISHED"
    assert schema.ENDED_BECAUSE not in run.data.tags


def test_a_dead_processs_run_still_running_is_ended(tracking_store):
    client, experiment_id, run_id = _run_of_a_dead_process()
    assert store.end_abandoned_runs(client, [experiment_id]) == [run_id]
    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "no longer running" in run.data.tags[schema.ENDED_BECAUSE]


def test_a_run_removed_for_good_after_the_search_is_passed_over(tracking_store):
    from tests._server import remove_run_for_good

    client, experiment_id, run_id = _run_of_a_dead_process()
    remove = _then(client, lambda: remove_run_for_good(run_id))
    assert store.end_abandoned_runs(remove, [experiment_id]) == []
