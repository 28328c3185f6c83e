"""Lookups that find nothing say what exists (issue 14, item 5)."""

from __future__ import annotations

import logging

import pytest
from palmerpenguins import load_penguins
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlpipe
from mlpipe.exceptions import NotFoundError


@pytest.fixture
def chain() -> mlpipe.Dataset:
    raw = load_penguins()[["bill_length_mm", "flipper_length_mm", "species"]].dropna()
    data = mlpipe.load(raw, name="penguins", target="species")
    mlpipe.LineagePipeline(
        [("processing", make_pipeline(StandardScaler())), ("model", LogisticRegression())],
        types={"processing": "plain", "model": "logreg"},
        cv=None,
    ).fit(data)
    return data


def _warned(caplog: pytest.LogCaptureFixture) -> str:
    lines = [r.getMessage() for r in caplog.records if r.name == "mlpipe" and r.levelno >= 30]
    assert len(lines) == 1, lines
    return lines[0]


def test_find_chain_says_which_link_is_missing(chain, caplog):
    day = chain.key.split("@")[1]
    day = f"{day[:4]}-{day[4:6]}-{day[6:8]}"
    caplog.set_level(logging.WARNING, logger="mlpipe")
    assert mlpipe.find_chain("penguins", "2019-02-01", "plain", "logreg") is None
    assert f"Loads of 'penguins' exist on: {day}" in _warned(caplog)
    caplog.clear()
    assert mlpipe.find_chain("pinguins", day, "plain", "logreg") is None
    assert "Loaded data: penguins" in _warned(caplog)
    caplog.clear()
    assert mlpipe.find_chain("penguins", day, "knn", "logreg") is None
    assert "no FINISHED processing run of 'knn'" in _warned(caplog)
    assert "Logics fitted on them: plain" in _warned(caplog)
    caplog.clear()
    assert mlpipe.find_chain("penguins", day, "plain", "rf") is None
    assert "Algorithms fitted on them: logreg" in _warned(caplog)
    caplog.clear()
    assert mlpipe.find_chain("penguins", day, "plain", "logreg") is not None
    assert not caplog.records  # a hit says nothing


def test_runs_say_what_exists_and_stay_a_table(chain, caplog):
    caplog.set_level(logging.WARNING, logger="mlpipe")
    table = mlpipe.runs(stage="model", type="rf")
    assert table.empty and "run_id" in table.columns
    assert "No model run of 'rf' in experiment 'model'. Types there: logreg." == _warned(caplog)
    caplog.clear()
    assert mlpipe.runs(type="logreg", date="2019-02-01").empty
    assert "Runs of that type exist on: " in _warned(caplog)
    caplog.clear()
    assert mlpipe.runs(stage="nothing").empty  # no filter that could miss: no warning
    assert not caplog.records


def test_dataset_find_says_what_exists(chain):
    with pytest.raises(NotFoundError, match=r"Loaded data: penguins\."):
        mlpipe.Dataset.find("pinguins")
    with pytest.raises(LookupError, match=r"Loads of 'penguins' exist on: \d{4}-\d\d-\d\d"):
        mlpipe.Dataset.find("penguins", "2019-02-01")
    with pytest.raises(NotFoundError, match="Nothing was logged to stage 'load' yet"):
        mlpipe.Dataset.find("penguins", project="other")
