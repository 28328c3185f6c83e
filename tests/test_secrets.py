"""A tracking password never reaches the screen: not in errors, their causes, or the CLI.

Issue 11, item 7 (the tracking-store half; tests/data/test_sources.py covers sources).
"""

from __future__ import annotations

import traceback

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

import mlpipe
from mlpipe.cli import main
from mlpipe.exceptions import TrackingError
from tests._server import free_port

SECRET = "s3cret-pw"


@pytest.fixture
def server_down(monkeypatch) -> str:
    uri = f"http://ana:{SECRET}@127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    mlflow.set_tracking_uri(uri)
    return uri


def _shown(error: BaseException) -> str:
    """Everything a traceback of ``error`` prints, its causes and contexts included."""
    return "".join(traceback.format_exception(error))


def test_a_fit_against_a_dead_server_shows_no_password_in_any_cause(server_down):
    X = np.arange(20.0).reshape(10, 2)
    with pytest.raises(TrackingError) as caught:
        mlpipe.LineagePipeline([("model", LogisticRegression())], cv=None).fit(X, X[:, 0] > 9)
    shown = _shown(caught.value)
    assert "ana:***@127.0.0.1" in shown
    assert SECRET not in shown


def test_a_load_against_a_dead_server_shows_no_password(server_down):
    with pytest.raises(TrackingError) as caught:
        mlpipe.load(pd.DataFrame({"x": [1, 2]}), name="toy")
    assert "Stage 'load'" in str(caught.value)
    assert SECRET not in _shown(caught.value)


@pytest.mark.parametrize(
    "argv", [["runs"], ["runs", "--stage", "model"], ["lineage", "0" * 32], ["serve", "0" * 32]]
)
def test_the_command_line_against_a_dead_server_shows_no_password(server_down, argv, capfd):
    assert main(argv) == 2
    out, err = capfd.readouterr()
    assert "error:" in err
    assert SECRET not in out + err


@pytest.mark.slow
def test_the_command_line_against_a_live_server_shows_no_password(tmp_path, monkeypatch, capfd):
    from tests._server import TrackingServer

    server = TrackingServer(
        f"sqlite:///{tmp_path / 'server.db'}", tmp_path / "artifacts", tmp_path / "server.log"
    ).start()
    try:
        uri = server.url.replace("http://", f"http://ana:{SECRET}@")
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        path = tmp_path / "toy.csv"
        pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0], "t": [0, 1, 0, 1]}).to_csv(path, index=False)
        assert main(["load", "--source", str(path), "--target", "t"]) == 0
        assert main(["runs"]) == 0
        assert main(["runs", "--stage", "nothing-here"]) in (0, 2)
        out, err = capfd.readouterr()
        assert "toy@" in out
        assert SECRET not in out + err
    finally:
        server.stop()
