"""Test isolation shared by the test suite and the doctests in mlpipe/.

Every test gets its own SQLite tracking store in its own working directory, no
MLFLOW_* variable leaks in from the environment, and no run stays active.

With ``MLPIPE_TEST_SERVER_BACKEND`` set to a database URL (CI sets a PostgreSQL
one), the tests track to a real ``mlflow server`` on that database instead,
started once per session and emptied before every test.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "default",
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "ci",
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Creating MLflow's tables takes about a second; do it once and copy the file.
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def _shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    backend = os.environ.get("MLPIPE_TEST_SERVER_BACKEND")
    if not backend:
        yield None
        return
    from tests._server import StoreReset, TrackingServer

    directory = tmp_path_factory.mktemp("server")
    server = TrackingServer(backend, directory / "artifacts", directory / "server.log").start()
    try:
        yield server, StoreReset(backend)
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def tracking_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, _empty_store: Path, _shared_server: Any
) -> Iterator[str]:
    """A fresh, empty tracking store in a fresh working directory; returns its URI."""
    for name in list(os.environ):
        if name.startswith("MLFLOW_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    if _shared_server is not None:
        server, reset = _shared_server
        reset()
        uri = server.url
    else:
        db = tmp_path / "mlflow.db"
        shutil.copy(_empty_store, db)
        uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    yield uri
    while mlflow.active_run() is not None:
        mlflow.end_run()
    mlflow.set_tracking_uri(None)
