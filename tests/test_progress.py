"""Progress people can see: bars on a terminal, nothing in a pipe or with -q (issue 14, item 6).

Each case runs a real process whose standard error is a pseudo-terminal or a pipe.
"""

from __future__ import annotations

import fcntl
import os
import pty
import sqlite3
import struct
import subprocess
import sys
import termios
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlpipe import _progress

SCRIPT = """
import mlpipe
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

data = mlpipe.load("sqlite:///shop.db", table="credit", target="y")
for _ in range(2):  # the second fit reuses both stages: MLflow downloads their files
    mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())], cv=3, n_jobs=1
    ).fit(data)
print("done")
"""


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
    frame["y"] = (frame["a"] > 0).astype(int)
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        frame.to_sql("credit", connection, index=False)
    (tmp_path / "fit.py").write_text(SCRIPT)
    return tmp_path


def _run(argv: list[str], *, terminal: bool, env: dict[str, str] | None = None) -> str:
    """Run ``argv``; return what it wrote to standard error (a terminal or a pipe)."""
    base = {k: v for k, v in os.environ.items() if k != _progress.PROGRESS_ENV}
    env = {**base, **(env or {})}
    if not terminal:
        done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 0, done.stderr
        return done.stderr
    main, child = pty.openpty()
    # A terminal 100 columns wide (a new pseudo-terminal has none, and tqdm fits the bar to it).
    fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=child, env=env)
    os.close(child)
    chunks = []
    while True:
        try:
            data = os.read(main, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    os.close(main)
    assert process.wait(timeout=300) == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_a_terminal_shows_the_load_and_the_folds(shop: Path):
    shown = _run([sys.executable, "fit.py"], terminal=True, env=None)
    assert "Loading table 'credit'" in shown
    assert "rows/s" in shown
    assert "Cross-validating model" in shown
    assert "/3 [" in shown  # of 3 folds
    assert "Downloading artifacts" not in shown  # MLflow's bars stay off inside mlpipe


def test_a_pipe_gets_no_bar(shop: Path):
    written = _run([sys.executable, "fit.py"], terminal=False, env=None)
    assert "Loading" not in written
    assert "Cross-validating" not in written
    assert "Downloading artifacts" not in written
    assert "\r" not in written


def test_progress_off_on_a_terminal(shop: Path):
    shown = _run([sys.executable, "fit.py"], terminal=True, env={_progress.PROGRESS_ENV: "0"})
    assert "Loading" not in shown
    assert "Cross-validating" not in shown


def test_progress_on_in_a_pipe(shop: Path):
    written = _run([sys.executable, "fit.py"], terminal=False, env={_progress.PROGRESS_ENV: "1"})
    assert "Cross-validating model" in written


def test_the_command_line_is_quiet_with_q(shop: Path):
    load = [sys.executable, "-m", "mlpipe", "load", "--source", "sqlite:///shop.db"]
    load += ["--table", "credit", "--target", "y"]
    # The bar, not the INFO line "Loading table 'credit' from ...: 300 rows" (-q drops both).
    assert "rows/s" in _run(load, terminal=True)
    quiet = [sys.executable, "-m", "mlpipe", "-q", *load[3:]]
    assert "rows/s" not in _run(quiet, terminal=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("on", True), ("0", False), ("false", False), ("", False)],
)
def test_the_switch(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool):
    monkeypatch.setenv(_progress.PROGRESS_ENV, value)
    assert _progress.shown() is expected  # pytest's stderr is no terminal


def test_mlflow_artifact_bars_are_off_inside_quiet():
    """The MLflow internal that _compat.quiet() wraps, checked on its own."""
    from mlflow.utils.file_utils import ArtifactProgressBar

    from mlpipe._compat import quiet

    with quiet():
        assert ArtifactProgressBar.files(desc="Downloading artifacts", total=1).pbar is None
    outside = ArtifactProgressBar.files(desc="Downloading artifacts", total=1)
    assert outside.pbar is not None  # MLflow's own behaviour, left alone outside mlpipe
    outside.pbar.close()


def test_reading_a_snapshot_or_a_stage_draws_no_mlflow_bar(capsys: pytest.CaptureFixture[str]):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import mlpipe

    frame = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "y": [0, 1, 0, 1]})
    data = mlpipe.load(frame, name="credit", target="y")
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())], cv=None
    ).fit(data)
    capsys.readouterr()
    mlpipe.Dataset.from_run(data.run_id)
    mlpipe.load_stage(pipe.run_ids_["processing"])
    assert "Downloading artifacts" not in capsys.readouterr().err


SEARCH_SCRIPT = """
import mlflow
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.preprocessing import StandardScaler

import mlpipe

rng = np.random.default_rng(0)
X = pd.DataFrame({"a": rng.normal(size=300), "b": rng.normal(size=300)})
y = (X["a"] > 0).astype(int)
search = GridSearchCV(LogisticRegression(), {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}, cv=3, n_jobs=2)
mlpipe.LineagePipeline([("processing", StandardScaler()), ("model", search)]).fit(X, y)
print(len(mlflow.search_runs(experiment_names=["model"])), "model run")
"""


@pytest.fixture
def searching(tmp_path: Path) -> Path:
    (tmp_path / "search.py").write_text(SEARCH_SCRIPT)
    return tmp_path


def test_a_terminal_shows_a_search_counting_its_fits(searching: Path):
    shown = _run([sys.executable, "search.py"], terminal=True)
    assert "GridSearchCV(LogisticRegression)" in shown
    assert "/16 [" in shown  # 5 candidates on 3 splits, and the refit


def test_a_search_in_worker_processes_counts_every_fit(searching: Path):
    # Every update drawn (tqdm reads these when imported): each count shows, and the
    # 15 candidate fits end in the two worker processes of n_jobs=2.
    env = {_progress.PROGRESS_ENV: "1", "TQDM_MININTERVAL": "0", "TQDM_MINITERS": "1"}
    env["LOKY_MAX_CPU_COUNT"] = "2"  # the test workers' limit of one would run them here
    written = _run([sys.executable, "search.py"], terminal=False, env=env)
    for count in range(17):
        assert f" {count}/16 [" in written, count


def test_progress_off_hides_the_search(searching: Path):
    shown = _run([sys.executable, "search.py"], terminal=True, env={_progress.PROGRESS_ENV: "0"})
    assert "GridSearchCV" not in shown
    assert "fits" not in shown


def _search(**kwargs: object) -> object:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV

    return GridSearchCV(LogisticRegression(), {"C": [0.1, 1.0, 10.0]}, cv=3, **kwargs)


def _frame() -> tuple[pd.DataFrame, pd.Series]:
    rng = np.random.default_rng(1)
    X = pd.DataFrame({"a": rng.normal(size=120), "b": rng.normal(size=120)})
    return X, (X["a"] + rng.normal(scale=0.5, size=120) > 0).astype(int)


def test_a_search_fitted_with_its_bar_is_fitted_and_logged_as_without(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    import mlflow
    from sklearn.preprocessing import StandardScaler

    import mlpipe

    X, y = _frame()
    fitted = {}
    for value in ("0", "1"):
        monkeypatch.setenv(_progress.PROGRESS_ENV, value)
        search = _search()
        pipe = mlpipe.LineagePipeline(
            [("processing", StandardScaler()), ("model", search)], cache=False
        ).fit(X, y)
        fitted[value] = (search, pipe)
    assert "GridSearchCV(LogisticRegression)" in capsys.readouterr().err
    (without, pipe_without), (with_bar, pipe_with) = fitted["0"], fitted["1"]
    # The same attributes (no callback or context of mlpipe's left on it) and results.
    assert sorted(vars(with_bar)) == sorted(vars(without))
    assert with_bar.best_params_ == without.best_params_
    assert with_bar.cv_results_["params"] == without.cv_results_["params"]
    stored = mlpipe.load_stage(pipe_with.run_ids_["model"])
    assert sorted(vars(stored)) == sorted(vars(without))
    # One model run per fit, none for a candidate or a split.
    runs = mlflow.search_runs(experiment_names=["model"], output_format="list")
    assert sorted(r.info.run_id for r in runs) == sorted(
        p.run_ids_["model"] for p in (pipe_with, pipe_without)
    )


class _Ends:
    """A user's own scikit-learn callback on a search: counts its candidate fits."""

    def __init__(self) -> None:
        self.fits = 0

    def setup(self, estimator: object, context: object) -> None:
        pass

    def teardown(self, estimator: object, context: object) -> None:
        pass

    def on_fit_task_begin(self, estimator: object, context: object) -> None:
        pass

    def on_fit_task_end(self, estimator: object, context: object) -> None:
        if context.task_name == "candidate-split-evaluation":  # type: ignore[attr-defined]
            self.fits += 1


class _PropagatedEnds(_Ends):
    """The same, auto-propagated (as scikit-learn's own ProgressBar is)."""

    max_propagation_depth = 0


@pytest.mark.parametrize("kind", [_Ends, _PropagatedEnds])
def test_a_users_own_callbacks_on_the_search_still_run_and_stay(
    kind: type[_Ends], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    monkeypatch.setenv(_progress.PROGRESS_ENV, "1")
    X, y = _frame()
    mine = kind()
    search = _search().set_callbacks(mine)
    for _ in range(2):  # still set after the first fit
        with _progress.search_progress(search):
            search.fit(X, y)
    assert mine.fits == 2 * 9
    shown = capsys.readouterr().err
    # scikit-learn allows an auto-propagated callback only on the outermost estimator:
    # then the user's display, and none of mlpipe's.
    assert ("/10 [" in shown) is (kind is _Ends)


def test_a_halving_search_adds_each_iterations_fits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from sklearn.experimental import enable_halving_search_cv  # noqa: F401
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import HalvingGridSearchCV

    monkeypatch.setenv(_progress.PROGRESS_ENV, "1")
    X, y = _frame()
    grid = {"C": [0.01, 0.1, 1.0, 10.0, 100.0]}
    search = HalvingGridSearchCV(LogisticRegression(), grid, cv=3, factor=2, min_resources=30)
    with _progress.search_progress(search):
        search.fit(X, y)
    shown = capsys.readouterr().err
    # 5, 3 then 2 candidates on 3 splits; the refit is counted from the start.
    assert search.n_candidates_ == [5, 3, 2]
    for total in (16, 25, 31):
        assert f"/{total} [" in shown, total


def test_an_estimator_that_is_no_search_draws_no_bar(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    monkeypatch.setenv(_progress.PROGRESS_ENV, "1")
    X, y = _frame()
    pipe = make_pipeline(StandardScaler(), LogisticRegression())  # it has callbacks too
    with _progress.search_progress(pipe):
        pipe.fit(X, y)
    assert capsys.readouterr().err == ""


def _finishes(work: Callable[[], object]) -> bool:
    """Whether ``work`` ends within 30 s (a daemon thread: a hang fails, never stalls, the test)."""
    import threading

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(timeout=30)
    return not thread.is_alive()


def test_a_connection_that_fails_does_not_stop_the_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """A worker that dies mid-handshake, or a stranger, must not leave the next
    workers' reports waiting for ever (nor the search's end)."""
    import socket
    from multiprocessing import AuthenticationError
    from multiprocessing.connection import Client

    monkeypatch.setenv(_progress.PROGRESS_ENV, "1")
    counter = _progress._FitCounter()
    counter._grow(_search(), 5)
    address, authkey = counter._address, counter._authkey
    with socket.socket(socket.AF_UNIX) as dead:  # connects, then dies before answering
        dead.connect(address)
    refused = []

    def stranger() -> None:
        try:
            Client(address, authkey=b"not this fit's key")
        except AuthenticationError:
            refused.append(True)

    assert _finishes(stranger) and refused == [True]
    # Each report returns once counted.
    assert _finishes(lambda: _progress._report(address, authkey))
    assert _finishes(lambda: _progress._report(address, authkey))
    assert counter._bar.n == 2
    assert _finishes(counter.close)
    assert "GridSearchCV(LogisticRegression)" in capsys.readouterr().err
