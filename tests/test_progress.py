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
