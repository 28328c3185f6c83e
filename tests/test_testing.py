"""mlpipe.testing: raw-frame strategies and check_model, on real penguin models."""

from __future__ import annotations

import importlib
import subprocess
import sys

import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe
from mlpipe.model._package import describe_columns
from mlpipe.testing import check_model, columns_of, raw_frames
from tests._server import free_port
from tests.conftest import PENGUINS_SERVER, PenguinsServer

TARGET = "species"


def penguins() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins()
    return raw.drop(columns=TARGET), raw[TARGET]


def processing(*, impute: bool = True) -> object:
    numbers = [StandardScaler()]
    text = [OneHotEncoder(handle_unknown="ignore")]
    if impute:
        numbers.insert(0, SimpleImputer(strategy="median"))
        text.insert(0, SimpleImputer(strategy="most_frequent"))
    return make_column_transformer(
        (make_pipeline(*numbers), make_column_selector(dtype_include="number")),
        (make_pipeline(*text), make_column_selector(dtype_exclude="number")),
    )


def fit(*steps: tuple[str, object], X: pd.DataFrame, y: pd.Series) -> mlpipe.LineagePipeline:
    # No cross-validation: these tests need the logged model, not its score.
    return mlpipe.LineagePipeline(list(steps), cv=None).fit(X, y)


def good_pipeline(X: pd.DataFrame, y: pd.Series) -> mlpipe.LineagePipeline:
    return fit(
        ("processing", processing()),
        ("model", LogisticRegression(max_iter=1000)),
        X=X,
        y=y,
    )


class MassLookup(BaseEstimator, TransformerMixin):
    """A user's logic with a bug: it looks body masses up in a table of the training ones,
    and fails on any other, though it is within the training range."""

    def fit(self, X, y=None):
        masses = sorted(X["body_mass_g"].dropna().unique())
        self.rank_ = {mass: rank for rank, mass in enumerate(masses)}
        return self

    def transform(self, X):
        for mass in X["body_mass_g"].dropna():
            if mass not in self.rank_:
                raise RuntimeError(f"no rank for body mass {mass}")
        return X


class CentersEachBatch(BaseEstimator, TransformerMixin):
    """A user's logic with a bug: it centres numbers on the batch's mean, not training's."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        numbers = X.select_dtypes("number")
        return X.assign(**{c: numbers[c] - numbers[c].mean() for c in numbers})


# --- import ----------------------------------------------------------------------------


def test_import_mlpipe_does_not_import_testing_or_hypothesis() -> None:
    code = (
        "import sys, mlpipe; mlpipe.LineagePipeline; mlpipe.Dataset; "
        "print(sorted(m for m in sys.modules if m.startswith(('hypothesis', 'mlpipe.testing'))))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert done.stdout.strip() == "[]"


def test_import_without_hypothesis_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [m for m in sys.modules if m.startswith("mlpipe.testing")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "hypothesis", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'mlpipe\[testing\]'"):
        importlib.import_module("mlpipe.testing")


# --- strategies ------------------------------------------------------------------------


def assert_valid(frame: pd.DataFrame, columns: dict[str, dict]) -> None:
    """``frame`` could have been part of the training data described by ``columns``."""
    assert list(frame.columns) == list(columns)
    assert 1 <= len(frame) <= 20
    for name, column in columns.items():
        values = frame[name]
        assert str(values.dtype) == column["dtype"], name
        assert column["nullable"] or values.notna().all(), name
        present = values.dropna()
        if column["categories"] is not None:
            assert present.isin(column["categories"]).all(), name
        if column["min"] is not None:
            assert present.between(column["min"], column["max"]).all(), name


def assert_no_type_error(frame: pd.DataFrame, columns: dict[str, dict]) -> None:
    """``frame`` has the training columns, each holding its kind of value or a missing one."""
    assert sorted(frame.columns) == sorted(columns)
    for name, column in columns.items():
        present = [v for v in frame[name] if not pd.isna(v)]
        if column["categories"] is not None:
            assert all(isinstance(v, str) for v in present), name
        else:
            assert all(isinstance(v, int | float | np.number) for v in present), name


def test_dataset_frames_match_training_columns() -> None:
    X, y = penguins()
    dataset = mlpipe.load(X.assign(species=y), name="penguins", target=TARGET)
    columns = columns_of(dataset)
    assert columns == describe_columns(X)
    assert columns["island"]["categories"] == ["Biscoe", "Dream", "Torgersen"]
    assert columns["year"]["dtype"] == "int64" and not columns["year"]["nullable"]

    @given(valid=raw_frames(dataset), hostile=raw_frames(dataset, valid=False, max_rows=5))
    def frames_match(valid: pd.DataFrame, hostile: pd.DataFrame) -> None:
        assert_valid(valid, columns)
        assert 1 <= len(hostile) <= 5
        assert_no_type_error(hostile, columns)

    frames_match()


def test_hostile_frames_hold_what_production_may_send() -> None:
    X, _ = penguins()
    categories = columns_of(X)["island"]["categories"]
    seen: set[str] = set()

    def numbers(frame: pd.DataFrame, name: str) -> pd.Series:
        return pd.to_numeric(frame[name], errors="coerce")

    # Derandomized: the same 200 frames each run, so the test cannot flake.
    @settings(max_examples=200, database=None, derandomize=True)
    @given(raw_frames(X, valid=False, max_rows=3))
    def look(frame: pd.DataFrame) -> None:
        seen.update(f"missing {name}" for name in X.columns if frame[name].isna().any())
        if (~frame["island"].dropna().isin(categories)).any():
            seen.add("unseen category")
        if (numbers(frame, "body_mass_g") > 1e6).any():
            seen.add("huge")
        if (numbers(frame, "body_mass_g") < 0).any():
            seen.add("negative")
        if any(
            np.isinf(numbers(frame, name)).any()
            for name in ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")
        ):
            seen.add("infinite")
        if (numbers(frame, "year") % 1 > 0).any():
            seen.add("fractional year")
        if list(frame.columns) != list(X.columns):
            seen.add("columns in another order")
        if not frame.index.equals(pd.RangeIndex(len(frame))):
            seen.add("another index")

    look()
    assert seen == {f"missing {name}" for name in X.columns} | {
        "unseen category",
        "huge",
        "negative",
        "infinite",
        "fractional year",
        "columns in another order",
        "another index",
    }


def test_frames_from_a_description() -> None:
    columns = {
        "amount": {"dtype": "float64", "nullable": False, "min": -1.5, "max": 2.0},
        "kind": {"dtype": "object", "nullable": True, "categories": ["a", "b"]},
        "flag": {"dtype": "bool"},
    }

    @settings(max_examples=30)
    @given(raw_frames(columns, min_rows=2, max_rows=4))
    def frames_match(frame: pd.DataFrame) -> None:
        assert list(frame.columns) == ["amount", "kind", "flag"]
        assert 2 <= len(frame) <= 4
        assert frame["amount"].between(-1.5, 2.0).all()
        assert frame["kind"].dropna().isin(["a", "b"]).all()
        assert frame["flag"].dtype == bool

    frames_match()


def test_unsupported_and_bad_sources_are_explained() -> None:
    with pytest.raises(TypeError, match="'when' has dtype 'datetime64"):
        columns_of(pd.DataFrame({"when": pd.to_datetime(["2019-02-09"])}))
    with pytest.raises(TypeError, match="model URI, a mlpipe.Dataset"):
        columns_of(42)
    with pytest.raises(ValueError, match="'dtype'"):
        columns_of({"x": {"nullable": True}})
    with pytest.raises(ValueError, match="min_rows <= max_rows"):
        raw_frames(pd.DataFrame({"x": [1.0]}), min_rows=3, max_rows=2)


def test_model_frames_match_its_signature_and_training_columns() -> None:
    X, y = penguins()
    pipe = good_pipeline(X, y)
    columns = columns_of(pipe.model_uri_)
    assert list(columns) == list(X.columns)
    for name, column in describe_columns(X).items():
        # Text may be kept as "object" rather than "str": the model takes either.
        assert {**columns[name], "dtype": None} == {**column, "dtype": None}, name
    model = mlflow.pyfunc.load_model(pipe.model_uri_)

    @settings(max_examples=10)
    @given(raw_frames(pipe.model_uri_))
    def frames_match(frame: pd.DataFrame) -> None:
        assert_valid(frame, columns)
        assert sorted(frame.columns) == sorted(columns)
        assert len(model.predict(frame)) == len(frame)

    frames_match()


class Constant(mlflow.pyfunc.PythonModel):
    def predict(self, context, model_input: pd.DataFrame, params=None):
        return np.zeros(len(model_input))


def test_model_without_mlpipe_description_is_read_from_its_signature() -> None:
    example = pd.DataFrame({"size": [1.5, 3.0], "color": ["red", "blue"], "n": [1, 4]})
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="plain",
            python_model=Constant(),
            input_example=example,
            pip_requirements=["mlflow"],
        )
    columns = columns_of(info.model_uri)
    assert columns["color"]["categories"] == ["blue", "red"]
    assert columns["size"]["dtype"] == "float64"
    assert (columns["size"]["min"], columns["size"]["max"]) == (1.5, 3.0)
    assert columns["n"]["dtype"] == "int64"
    report = check_model(info.model_uri, examples=10, seed=0)
    assert report.ok, str(report)


# --- check_model -----------------------------------------------------------------------


def test_check_model_passes_a_good_penguins_model() -> None:
    X, y = penguins()
    report = check_model(good_pipeline(X, y).model_uri_, examples=40, seed=0)
    assert report.ok, str(report)
    assert "no problem in 40 valid and 40 hostile frames" in str(report)
    report.raise_for_problems()


def test_check_model_finds_a_crash_and_shrinks_its_frame() -> None:
    X, y = penguins()
    pipe = fit(
        ("features", MassLookup()),
        ("processing", processing()),
        ("model", LogisticRegression(max_iter=1000)),
        X=X,
        y=y,
    )
    report = check_model(pipe.model_uri_, examples=30, seed=1)
    assert not report.ok
    crashes = [p for p in report.problems if "no rank" in p.detail]
    # Found on valid rows, so not reported again for hostile ones.
    assert [(p.check, p.where, p.valid) for p in crashes] == [("crash", "in process", True)]
    (crash,) = crashes
    assert crash.origin.startswith("RuntimeError at ")
    assert "RuntimeError: no rank for body mass" in crash.detail
    # Shrunk to a row or two, one with a mass training never had.
    assert len(crash.frame) <= 2
    assert not crash.frame["body_mass_g"].dropna().isin(X["body_mass_g"]).all()
    with pytest.raises(AssertionError, match="crash \\(in process, valid rows\\)"):
        report.raise_for_problems()
    # The same seed, the same report.
    assert str(check_model(pipe.model_uri_, examples=30, seed=1)) == str(report)


def test_check_model_finds_rows_predicted_differently_alone() -> None:
    X, y = penguins()
    pipe = fit(
        ("features", CentersEachBatch()),
        ("processing", processing()),
        ("model", LogisticRegression(max_iter=1000)),
        X=X,
        y=y,
    )
    report = check_model(pipe.model_uri_, examples=30, seed=0)
    checks = {p.check for p in report.problems if p.valid}
    assert "row predicted differently alone" in checks, str(report)


def test_missing_values_without_an_imputer_are_a_clean_rejection() -> None:
    # Trained without missing values and without an imputer: a missing number must be
    # refused as bad input (HTTP 400 naming the column), not crash the model.
    X, y = penguins()
    complete = X.notna().all(axis=1)
    pipe = fit(
        ("processing", processing(impute=False)),
        ("model", LogisticRegression(max_iter=1000)),
        X=X[complete],
        y=y[complete],
    )
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    with pytest.raises(mlflow.exceptions.MlflowException, match="bill_length_mm"):
        model.predict(X[complete].head(2).assign(bill_length_mm=np.nan))
    report = check_model(pipe.model_uri_, examples=40, seed=0)
    assert report.ok, str(report)


# --- served ----------------------------------------------------------------------------


@pytest.fixture
def served_penguins(penguins_server: PenguinsServer) -> tuple[str, str]:
    """A good penguins model served by ``mlflow models serve``: (local model path, URL).

    The session's served demo chain (tests/conftest.py), shared with the serving tests."""
    return penguins_server.local, penguins_server.url


@pytest.mark.slow
@pytest.mark.xdist_group(PENGUINS_SERVER)  # the worker that serves the session's model
def test_check_model_against_a_served_model(served_penguins: tuple[str, str]) -> None:
    local, url = served_penguins
    report = check_model(local, url=url, examples=30, seed=0)
    assert report.ok, str(report)
    assert f"served at {url}" in str(report)


@pytest.mark.slow
@pytest.mark.xdist_group(PENGUINS_SERVER)
def test_served_check_reports_a_server_that_does_not_answer(
    served_penguins: tuple[str, str],
) -> None:
    local, _ = served_penguins
    report = check_model(local, url=f"http://127.0.0.1:{free_port()}", examples=5, seed=0)
    assert not report.ok
    assert {(p.check, p.where) for p in report.problems} == {("crash", "served")}
    assert all("no answer" in p.detail for p in report.problems)
