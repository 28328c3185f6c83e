"""Registries: names, typed hyperparameters, entry points, the built-ins."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe._builtins import LabelEncodedClassifier
from mlpipe._registry import Registry, convert
from mlpipe.exceptions import NotFoundError


def test_builtins_and_unknown_names():
    assert {"plain", "knn"} <= set(mlpipe.LOGICS.names())
    assert {"logreg", "rf", "hgb"} <= set(mlpipe.ALGORITHMS.names())
    assert ("xgboost" in mlpipe.ALGORITHMS.names()) == (
        importlib.util.find_spec("xgboost") is not None
    )
    with pytest.raises(NotFoundError, match="Unknown algorithm 'svm'. Known algorithms: hgb"):
        mlpipe.ALGORITHMS.build("svm")


def test_hyperparameters_convert_by_annotation():
    assert (
        mlpipe.ALGORITHMS.build("rf", {"n_estimators": "7", "max_depth": "none"}).get_params()[
            "n_estimators"
        ]
        == 7
    )
    assert convert("3", int | None, "x") == 3 and convert("None", int | None, "x") is None
    assert convert("0.5", float, "x") == 0.5 and convert("yes", bool, "x") is True
    with pytest.raises(ValueError, match="Parameter rf.n_estimators expects int, got 'many'"):
        mlpipe.ALGORITHMS.build("rf", {"n_estimators": "many"})
    with pytest.raises(ValueError, match="has no parameter 'depth'; its parameters are"):
        mlpipe.ALGORITHMS.build("rf", {"depth": "3"})


def test_entry_points_add_factories(monkeypatch):
    class Point:
        name, value = "team_logic", "team.logics:factory"

        @staticmethod
        def load():
            from sklearn.preprocessing import StandardScaler

            def factory(*, with_mean: bool = True):
                return StandardScaler(with_mean=with_mean)

            return factory

    registry = Registry("logic", "mlpipe.test.logics")
    monkeypatch.setattr(
        "importlib.metadata.entry_points",
        lambda group: [Point()] if group == registry.group else [],
    )
    assert "team_logic" in registry.names()
    assert registry.build("team_logic", {"with_mean": "false"}).with_mean is False


def test_label_encoded_classifier_answers_in_the_original_labels():
    from sklearn.linear_model import LogisticRegression

    raw = load_penguins().dropna()
    X, y = raw[["bill_length_mm", "flipper_length_mm"]], raw["species"]
    model = LabelEncodedClassifier(LogisticRegression(max_iter=1000)).fit(X, y)
    assert set(model.predict(X)) <= set(y) and list(model.classes_) == sorted(set(y))
    np.testing.assert_allclose(model.predict_proba(X).sum(axis=1), 1.0)


def test_xgboost_when_installed():
    pytest.importorskip("xgboost")
    raw = load_penguins()
    pipe = mlpipe.LineagePipeline(
        [
            ("processing", mlpipe.LOGICS.build("plain")),
            ("model", mlpipe.ALGORITHMS.build("xgboost", {"n_estimators": "20"})),
        ],
        cv=None,
    ).fit(raw.drop(columns="species"), raw["species"])
    assert set(pipe.predict(raw.drop(columns="species"))) <= set(raw["species"])
