"""A slow stage's stored output feeds the next stage exactly what transforming would.

A reused stage whose run stored its output on the training data gives that output to
the next stage instead of transforming the data again. It must be what the loaded
stage gives now, in type, columns and dtypes (issue 11, item 6).
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
import sklearn
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.compose import make_column_transformer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe
from mlpipe import _chain, schema


class Probe(ClassifierMixin, BaseEstimator):
    """A classifier that remembers what it was fitted on."""

    seen: list = []

    def __init__(self, *, C: float = 1.0):
        self.C = C

    def fit(self, X, y):
        type(self).seen.append(_form(X))
        self.model_ = LogisticRegression(C=self.C, max_iter=1000).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)


def _form(X):
    if isinstance(X, pd.DataFrame):
        return ("DataFrame", list(X.columns), [str(d) for d in X.dtypes], list(X.index[:3]))
    return (type(X).__name__, getattr(X, "dtype", None), np.shape(X))


@pytest.fixture(autouse=True)
def _every_stage_is_slow(monkeypatch):
    # Any fit counts as slow enough for its output to be stored.
    monkeypatch.setattr(_chain, "OUTPUT_CACHE_SECONDS", 0.0)
    Probe.seen = []


@pytest.fixture
def data():
    raw = load_penguins().dropna()
    X = raw[["bill_length_mm", "bill_depth_mm", "island", "year"]]
    return X, raw["species"]


def _pipe(C: float = 1.0) -> mlpipe.LineagePipeline:
    processing = make_column_transformer(
        (StandardScaler(), ["bill_length_mm", "bill_depth_mm"]),
        (OneHotEncoder(sparse_output=False), ["island"]),
        remainder="passthrough",
    )
    return mlpipe.LineagePipeline(
        [("processing", processing), ("model", Probe(C=C))], cv=None, log_model=False
    )


def _fresh_form(X, y, C):
    pipe = _pipe(C).set_params(cache=False).fit(X, y)
    return Probe.seen[-1], pipe


def test_the_stored_output_round_trips_exactly(data):
    X, y = data
    with sklearn.config_context(transform_output="pandas"):
        first = _pipe().fit(X, y)
        tags = mlflow.MlflowClient().get_run(first.run_ids_["processing"]).data.tags
        assert tags[schema.OUTPUT] == "stage/output.pkl"
        warm = _pipe(C=0.5).fit(X, y)
        assert warm.reused_ == ["processing"]
        reused_form = Probe.seen[-1]
        fresh_form, fresh = _fresh_form(X, y, 0.5)
    assert reused_form == fresh_form
    assert reused_form[0] == "DataFrame"


@pytest.mark.parametrize(
    ("stored_under", "reused_under"), [("default", "pandas"), ("pandas", "default")]
)
def test_a_stored_output_of_another_form_is_not_fed_to_the_next_stage(
    data, stored_under, reused_under
):
    X, y = data
    with sklearn.config_context(transform_output=stored_under):
        _pipe().fit(X, y)
    with sklearn.config_context(transform_output=reused_under):
        warm = _pipe(C=0.5).fit(X, y)
        assert warm.reused_ == ["processing"]
        reused_form = Probe.seen[-1]
        fresh_form, fresh = _fresh_form(X, y, 0.5)
        # Fitted on what it is given at predict time: no feature-name warning (an error here).
        predicted = warm.predict(X)
        np.testing.assert_array_equal(predicted, fresh.predict(X))
    assert reused_form == fresh_form
