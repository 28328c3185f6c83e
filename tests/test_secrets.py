"""A tracking password never reaches the screen: not in errors, their causes, or the CLI.

Issue 11, item 7 (the tracking-store half; tests/data/test_sources.py covers sources).
"""

from __future__ import annotations

import shutil
import traceback
import urllib.parse

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
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
def test_the_command_line_against_a_live_server_shows_no_password(
    tmp_path, monkeypatch, capfd, _empty_store
):
    from tests._server import TrackingServer

    shutil.copy(_empty_store, tmp_path / "server.db")  # MLflow's tables, made once
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


# --- property: any password, in any place of a URL, is hidden ----------------------------

_PASSWORDS = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Zs")),
    min_size=4,
    max_size=20,
).filter(lambda p: p.strip() == p and "***" not in p)


def _forms(password: str) -> list[str]:
    """The URLs a user may write with ``password`` in them."""
    quoted = urllib.parse.quote(password, safe="")
    return [
        f"postgresql://ana:{quoted}@db.example:5432/shop",
        f"https://ana:{quoted}@mlflow.example",
        f"postgresql://ana@db.example/shop?sslmode=require&password={quoted}",
        f"postgresql://ana@db.example/shop?PWD={quoted}",
        f"postgresql://ana@db.example/shop?pass%77ord={quoted}",
    ]


@given(password=_PASSWORDS, form=st.integers(0, 4))
def test_any_password_in_any_place_of_a_url_is_hidden(password, form):
    from mlpipe.tracking import redact, scrub

    url = _forms(password)[form]
    quoted = urllib.parse.quote(password, safe="")
    shown = redact(url)
    assert password not in shown and quoted not in shown
    # A driver's error may echo the URL, the password as given, or its decoded form.
    said = f"could not connect to {url}: password {password!r} / {quoted} rejected"
    cleaned = scrub(said, url)
    assert password not in cleaned and quoted not in cleaned
