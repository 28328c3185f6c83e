"""Stage types people can read: named with ``types=``, or derived short (issue 14, item 4)."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.compose import make_column_transformer
from sklearn.feature_selection import SelectKBest
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import mlpipe
from mlpipe import schema
from mlpipe._cache import cache_key, data_key
from mlpipe._chain import stage_type
from mlpipe.exceptions import StageError

ROOT = Path(__file__).resolve().parents[1]
rng = np.random.default_rng(0)
X = pd.DataFrame({"debt": rng.uniform(0, 9, 40), "income": rng.uniform(1, 9, 40)})
y = pd.Series((X["debt"] > X["income"]).astype(int), name="default")


def debt_ratio(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(ratio=frame["debt"] / frame["income"])


def _processing():
    return make_pipeline(
        FunctionTransformer(debt_ratio),
        make_column_transformer((StandardScaler(), ["debt", "income", "ratio"])),
    )


def _long_processing():
    return make_pipeline(
        FunctionTransformer(debt_ratio),
        SimpleImputer(),
        StandardScaler(),
        SelectKBest(k=2),
        make_column_transformer((StandardScaler(), [0, 1])),
    )


def test_named_stage_names_its_run_key_and_find_chain():
    pipe = mlpipe.LineagePipeline(
        [("processing", _processing()), ("model", LogisticRegression())],
        types={"processing": "debt_ratio", "model": "logreg"},
        cv=None,
    ).fit(X, y)
    run = mlflow.MlflowClient().get_run(pipe.run_ids_["processing"])
    key = run.data.tags[schema.KEY]
    assert key.startswith("debt_ratio@")
    assert run.info.run_name == key
    assert run.data.tags[schema.TYPE] == "debt_ratio"
    today = dt.datetime.now(dt.UTC).date()
    chain = mlpipe.find_chain(table="frame", date=today, logic="debt_ratio", algorithm="logreg")
    assert chain is not None
    assert chain.run_ids == pipe.run_ids_
    assert chain["processing"].key == key
    assert list(mlpipe.runs(stage="processing", type="debt_ratio")["run_id"]) == [
        pipe.run_ids_["processing"]
    ]


@pytest.mark.parametrize(
    "types",
    [
        {"processing": "debt@ratio"},  # '@' ends the type in a key
        {"processing": "debt ratio"},
        {"processing": "it's"},
        {"processing": ""},
        {"processing": "x" * 101},
        {"processing": 3},
        {"procesing": "debt_ratio"},  # names no step
    ],
)
def test_a_bad_type_is_refused_before_anything_is_logged(types):
    pipe = mlpipe.LineagePipeline(
        [("processing", _processing()), ("model", LogisticRegression())], types=types
    )
    with pytest.raises(StageError, match="types="):
        pipe.fit(X, y)
    assert mlflow.MlflowClient().search_runs(["0"]) == []
    assert [e.name for e in mlflow.MlflowClient().search_experiments()] == ["Default"]


def test_types_survive_clone_and_slicing():
    pipe = mlpipe.LineagePipeline(
        [("processing", _processing()), ("model", LogisticRegression())],
        types={"processing": "debt_ratio", "model": "logreg"},
    )
    assert clone(pipe).get_params()["types"] == {"processing": "debt_ratio", "model": "logreg"}
    assert pipe[:1].types == {"processing": "debt_ratio"}
    pipe[:1].fit(X, y)  # the slice's types name only its own steps


def test_derived_type_drops_function_transformers():
    assert stage_type(_processing()) == "ColumnTransformer"
    assert stage_type(make_pipeline(SimpleImputer(), StandardScaler())) == (
        "SimpleImputer+StandardScaler"
    )
    assert stage_type(make_pipeline(FunctionTransformer())) == "FunctionTransformer"
    assert stage_type(LogisticRegression()) == "LogisticRegression"


def test_derived_type_of_a_long_pipeline_is_short_and_stable():
    name = stage_type(_long_processing())
    assert name == "SimpleImputer..ColumnTransformer"
    assert stage_type(clone(_long_processing())) == name
    code = (
        "from tests.test_stage_types import _long_processing;"
        "from mlpipe._chain import stage_type;"
        "print(stage_type(_long_processing()))"
    )
    other = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert other.stdout.strip() == name
    pipe = mlpipe.LineagePipeline(
        [("processing", _long_processing()), ("model", LogisticRegression())], cv=None
    ).fit(X, y)
    key = mlflow.MlflowClient().get_run(pipe.run_ids_["processing"]).data.tags[schema.KEY]
    assert key.startswith("SimpleImputer..ColumnTransformer@")


def test_a_shortened_type_keeps_the_cache_key_of_the_previous_release():
    """Stages fitted before derived types were shortened are still reused: the cache
    key holds every class name joined with '+', as the type was then."""
    pipe = mlpipe.LineagePipeline(
        [("processing", _long_processing()), ("model", LogisticRegression())], cv=None
    ).fit(X, y)
    tags = mlflow.MlflowClient().get_run(pipe.run_ids_["processing"]).data.tags
    data = mlpipe.Dataset.from_run(pipe.run_ids_["load"])
    previous = cache_key(
        stage="processing",
        type_="FunctionTransformer+SimpleImputer+StandardScaler+SelectKBest+ColumnTransformer",
        estimator=_long_processing(),
        fit_params={},
        upstream=data_key(data.fingerprint, data.target),
    )
    assert tags[schema.CACHE_KEY] == previous
