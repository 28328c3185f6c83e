"""Test isolation shared by the test suite and the doctests in mlpipe/.

Every test gets its own SQLite tracking store in its own working directory, no
MLFLOW_* variable leaks in from the environment, and no run stays active.

With ``MLPIPE_TEST_SERVER_BACKEND`` set to a database URL (CI sets a PostgreSQL
one), the tests track to a real ``mlflow server`` on that database instead,
started once per session and emptied before every test. With
``MLPIPE_TEST_TRACKING_BACKEND`` set to a database URL, they track to that database
directly, as a team whose ``MLFLOW_TRACKING_URI`` is a PostgreSQL URL does (mlpipe
then reads MLflow's tables itself), emptied before every test. Those stages run in
one process (``-p no:xdist``): parallel workers would empty each other's store.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from hypothesis import HealthCheck, settings
from sqlalchemy import event
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits

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

SERVER_BACKEND = "MLPIPE_TEST_SERVER_BACKEND"
DATABASE_BACKEND = "MLPIPE_TEST_TRACKING_BACKEND"

if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest-xdist already runs one worker per core. With n_jobs=None a fit whose folds
    # take a second spreads them over every core (joblib's cpu_count): a pool of worker
    # processes in each test worker and each process a test starts, all fighting the
    # other test workers for the same cores, and more often the busier the machine is.
    # One core each makes the folds sequential, as scikit-learn's n_jobs=None is; the
    # tests of parallel folds ask for them (n_jobs=2). Children inherit the setting.
    os.environ.setdefault("LOKY_MAX_CPU_COUNT", "1")
    # Likewise for the BLAS and OpenMP threads under numpy and scikit-learn: a worker
    # whose fit spreads a matrix product over both cores while the other worker is busy
    # waits for the slower thread (a logistic regression's fit took four times longer).
    # The variables reach the processes tests start; threadpoolctl sets the libraries
    # this process has already loaded.
    for _threads in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_threads, "1")
    threadpool_limits(1)


@event.listens_for(Engine, "connect")
def _sqlite_without_fsync(connection: Any, _record: Any) -> None:
    # A test's SQLite store lives as long as the test: waiting for the disk at each of
    # MLflow's commits buys a durability against power loss that no test needs, and
    # takes a quarter of a logged fit. (In this process only: what a test starts, such
    # as mlflow server, keeps SQLite's defaults.)
    if isinstance(connection, sqlite3.Connection):
        connection.execute("PRAGMA synchronous = OFF")


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    # setup.cfg's addopts ask pytest-xdist for workers; with ``-p no:xdist`` nothing
    # would know those options and pytest would refuse to start.
    if not pluginmanager.has_plugin("xdist"):
        group = parser.getgroup("xdist", "pytest-xdist is off (-p no:xdist)")
        group.addoption("--numprocesses", help="ignored: the tests run in this process")
        group.addoption("--dist", help="ignored: the tests run in this process")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Files with slow tests (fresh venvs, servers) first, each file kept whole so its
    # module fixtures are built once: parallel workers then start the longest tests
    # early instead of ending the run on one of them while the other workers idle.
    slow = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow)


def pytest_configure(config: pytest.Config) -> None:
    workers = config.pluginmanager.has_plugin("xdist") and config.getoption("numprocesses")
    shared = [name for name in (SERVER_BACKEND, DATABASE_BACKEND) if os.environ.get(name)]
    if len(shared) > 1:
        raise pytest.UsageError(f"Set one of {SERVER_BACKEND} and {DATABASE_BACKEND}, not both.")
    if shared and (workers or os.environ.get("PYTEST_XDIST_WORKER")):
        raise pytest.UsageError(
            f"{shared[0]} runs the tests against one shared tracking store that is "
            "emptied before every test, but pytest-xdist runs them in parallel workers, "
            "which would empty each other's store. Run this stage in one process: add "
            "-p no:xdist (or -n 0)."
        )


@pytest.fixture(scope="session")
def _empty_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Creating MLflow's tables takes about a second; do it once and copy the file.
    path = tmp_path_factory.mktemp("template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(scope="session")
def _shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    backend = os.environ.get(SERVER_BACKEND)
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


@pytest.fixture(scope="session")
def _shared_database() -> Any:
    backend = os.environ.get(DATABASE_BACKEND)
    if not backend:
        return None
    from tests._server import StoreReset

    mlflow.MlflowClient(backend).search_experiments()  # creates MLflow's tables
    return backend, StoreReset(backend)


@pytest.fixture(autouse=True)
def tracking_store(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    _empty_store: Path,
    _shared_server: Any,
    _shared_database: Any,
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
    elif _shared_database is not None:
        uri, reset = _shared_database
        reset()
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


@pytest.fixture(autouse=True)
def _registries_as_they_were() -> Iterator[None]:
    """What a test or a docs example registers (``@mlpipe.algorithm("grams")``) is gone
    after it: the registries are process-wide, and a worker runs many tests in turn."""
    from mlpipe._registry import ALGORITHMS, LOGICS

    saved = [
        (registry, dict(registry._entries), registry._loaded) for registry in (LOGICS, ALGORITHMS)
    ]
    yield
    for registry, entries, loaded in saved:
        registry._entries, registry._loaded = entries, loaded
