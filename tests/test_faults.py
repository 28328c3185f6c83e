"""The tracking server dies in the middle of a fit: a clear error, nothing lost, nothing stale."""

from __future__ import annotations

import logging
import os
import shutil
import signal

import mlflow
import numpy as np
import pytest
from mlflow.entities import ViewType
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mlpipe
from mlpipe.exceptions import TrackingError
from mlpipe.tracking import _store as store
from tests._server import StoreReset, TrackingServer, free_port
from tests.data.test_sources import _everything_logged

# One worker starts the module's server for the tests that do not kill theirs.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("faults")]


class KillsTheServer(ClassifierMixin, BaseEstimator):
    """A model whose fit kills the tracking server (the process group in MLPIPE_KILL)."""

    def fit(self, X, y):
        group = os.environ.pop("MLPIPE_KILL", None)
        if group:
            os.killpg(int(group), signal.SIGKILL)
        self.model_ = LogisticRegression().fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)


def _server_of_its_own(directory, template) -> TrackingServer:
    # Its database starts as a copy of an empty one: creating MLflow's tables takes seconds.
    shutil.copy(template, directory / "server.db")
    return TrackingServer(
        f"sqlite:///{directory / 'server.db'}", directory / "artifacts", directory / "server.log"
    ).start()


def _track_to(server: TrackingServer, monkeypatch) -> None:
    # MLflow's client gives up quickly on a server that does not answer.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server.url)
    mlflow.set_tracking_uri(server.url)


@pytest.fixture
def server(tmp_path, monkeypatch, _empty_store):
    """A server of the test's own, to kill."""
    server = _server_of_its_own(tmp_path, _empty_store)
    _track_to(server, monkeypatch)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def _module_server(tmp_path_factory, _empty_store):
    directory = tmp_path_factory.mktemp("faults-server")
    server = _server_of_its_own(directory, _empty_store)
    try:
        yield server, StoreReset(f"sqlite:///{directory / 'server.db'}")
    finally:
        server.stop()


@pytest.fixture
def live_server(_module_server, monkeypatch):
    """The module's server, which no test kills, its store emptied for each test."""
    server, reset = _module_server
    reset()
    _track_to(server, monkeypatch)
    return server


def _data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    return X, (X[:, 0] + X[:, 1] > 0).astype(int)


def _running_runs() -> list[str]:
    client = mlflow.MlflowClient()
    experiments = [e.experiment_id for e in client.search_experiments(view_type=ViewType.ALL)]
    runs = client.search_runs(experiments, filter_string="attributes.status = 'RUNNING'")
    return [run.info.run_id for run in runs]


def test_server_killed_mid_fit(server, monkeypatch):
    X, y = _data()
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", KillsTheServer())], cv=None
    )
    assert server.process is not None
    monkeypatch.setenv("MLPIPE_KILL", str(server.process.pid))
    with pytest.raises(TrackingError) as error:
        pipe.fit(X, y)
    message = str(error.value)
    assert "Stage 'model'" in message and server.url in message
    assert "reuses them" in message

    # The kill is delivered to each process of the group on its own: the worker can be
    # gone (the fit failed) while the server's main process is not yet. Reap it first.
    server.process.wait(timeout=30)
    server.start()  # the same store and port, as after a restart
    # The processing stage had finished; the model run could not be ended.
    processing = mlpipe.runs(stage="processing")
    assert list(processing["status"]) == ["FINISHED"]
    unended = mlpipe.runs(stage="model")
    assert list(unended["status"]) == ["RUNNING"]  # reported as such meanwhile

    again = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", KillsTheServer())], cv=None
    ).fit(X, y)
    assert again.reused_ == ["processing"]
    assert again.run_ids_["processing"] == processing["run_id"].iloc[0]
    assert _running_runs() == []
    models = mlpipe.runs(stage="model").set_index("run_id")["status"]
    assert models[unended["run_id"].iloc[0]] == "FAILED"
    assert models[again.run_ids_["model"]] == "FINISHED"
    assert (mlflow.pyfunc.load_model(again.model_uri_).predict(X) == again.predict(X)).all()


def test_a_run_of_a_dead_process_is_ended_by_the_next_fit(live_server):
    client = store.client()
    experiment = store.get_or_create_experiment(client, "processing")
    # A run as a fitting process killed outright would leave it on this host.
    dead = client.create_run(experiment, tags={"mlpipe.owner": f"{os.uname().nodename}:999999"})
    other_host = client.create_run(experiment, tags={"mlpipe.owner": "elsewhere:1"})
    X, y = _data()
    mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())], cv=None
    ).fit(X, y)
    assert client.get_run(dead.info.run_id).info.status == "FAILED"
    # A run of another machine may still be fitting: it is left alone.
    assert client.get_run(other_host.info.run_id).info.status == "RUNNING"


def test_an_unreachable_store_is_a_clear_error_without_the_password(monkeypatch):
    uri = f"http://ana:s3cret-pw@127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    X, y = _data()
    with pytest.raises(TrackingError) as error:
        mlpipe.LineagePipeline([("model", LogisticRegression())]).fit(X, y)
    message = str(error.value)
    assert "Stage 'load'" in message and "ana:***@127.0.0.1" in message
    assert "s3cret-pw" not in message


def test_a_tracking_password_reaches_nothing_logged(
    live_server, monkeypatch, tmp_path, caplog, capsys
):
    # The test server asks for no login: the credentials are sent and ignored, which
    # is enough to see where mlpipe would copy them.
    uri = live_server.url.replace("http://", "http://ana:s3cret-pw@")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    X, y = _data()
    with caplog.at_level(logging.DEBUG):
        pipe = mlpipe.LineagePipeline(
            [("processing", StandardScaler()), ("model", LogisticRegression())], cv=2
        ).fit(X, y)
    assert set(pipe.run_ids_) == {"load", "processing", "model"}
    logged = _everything_logged(tmp_path)
    assert pipe.run_ids_["processing"] in logged  # the search saw the runs...
    assert "s3cret-pw" not in logged  # ...and no password in them
    assert "s3cret-pw" not in caplog.text
    printed = capsys.readouterr()
    assert "s3cret-pw" not in printed.out + printed.err
