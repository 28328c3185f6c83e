"""Fixtures shared across the test folders (the store isolation is the root conftest.py's).

``penguins_server`` is the demo chain fitted once on the raw penguins and served by one
real ``mlflow models serve`` process, for the tests that only query a served model
(tests/model/test_serving.py, tests/model/test_bad_input.py, tests/test_testing.py).
Session fixtures live once per pytest-xdist worker: those tests share the xdist group
``PENGUINS_SERVER`` so that one worker fits and serves the model once for all of them.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest

from mlpipe import LineagePipeline

PENGUINS_SERVER = "penguins_server"


@pytest.hookimpl(trylast=True)  # after pytest-xdist's own hook, which this one completes
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # With --dist=loadgroup, a pytest-xdist worker suffixes each node id with its
    # ``xdist_group`` ("...::test@name") and the controller sends the tests of one group
    # to one worker. pytest-xdist 3.8 writes the suffix to ``item._nodeid``, which pytest 9
    # no longer reads (node ids live in ``item._id``): every group was then spread over
    # the workers, and each worker built every shared fixture again. Add the suffix
    # where pytest 9 reads it, unless pytest-xdist's own write took effect.
    if not getattr(config.option, "loadgroup", False):  # set in xdist's workers only
        return
    for item in items:
        marks = item.iter_markers("xdist_group")
        names = sorted(
            {str(m.args[0] if m.args else m.kwargs.get("name", "default")) for m in marks}
        )
        suffix = "@" + "_".join(names)
        if names and not item.nodeid.endswith(suffix):
            from _pytest.nodeid import NodeId  # pytest 9; before it xdist's own write works

            item._id = NodeId.parse(item.nodeid + suffix)


@dataclass
class PenguinsServer:
    """The served demo chain: its URL, the fitted pipeline and what it was fitted on."""

    url: str
    pipe: LineagePipeline
    X: pd.DataFrame
    y: pd.Series
    #: The store the model was logged in (``pipe.model_uri_`` resolves there).
    tracking_uri: str
    #: A folder of the fixture's own (its store, the server's log), kept for the session.
    home: Path
    #: The model's files, downloaded: loadable whatever a test's own store is.
    local: str


@pytest.fixture(scope="session")
def penguins_server() -> Iterator[PenguinsServer]:
    from mlpipe.cli._demo import penguins_pipeline
    from tests._server import ModelServer
    from tests.model._helpers import penguins

    # The autouse store is per test; this model lives for the session, so it gets its own.
    home = Path(tempfile.mkdtemp(prefix="mlpipe-penguins-server-"))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    X, y = penguins()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
            local = mlflow.artifacts.download_artifacts(
                str(pipe.model_uri_), dst_path=str(home / "model")
            )
        finally:
            # Between tests no URI is set (see conftest.py); leave it so.
            mlflow.set_tracking_uri(None)
    server = ModelServer(str(pipe.model_uri_), home / "server.log", uri)
    try:
        server.start(cwd=home)
        yield PenguinsServer(
            url=server.url, pipe=pipe, X=X, y=y, tracking_uri=uri, home=home, local=local
        )
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)
