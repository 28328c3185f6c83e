"""The final stage's out-of-fold evaluation: plots and predictions from the cv folds."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.exceptions import FitFailedWarning
from sklearn.linear_model import LogisticRegression, Ridge, RidgeClassifier
from sklearn.metrics import r2_score, roc_auc_score
from sklearn.model_selection import KFold
from sklearn.preprocessing import StandardScaler

import mlpipe
import mlpipe._evaluation
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
CLASSIFIER_FILES = {
    schema.CONFUSION_MATRIX,
    schema.ROC_CURVE,
    schema.PRECISION_RECALL_CURVE,
    schema.PREDICTIONS,
}


@pytest.fixture(scope="module")
def penguins() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins()
    return raw.drop(columns="species"), raw["species"]


def _scaled(model) -> mlpipe.LineagePipeline:
    return mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", model)], log_model=False
    )


def _evaluation(run_id: str) -> tuple[set[str], pd.DataFrame | None]:
    """The files under evaluation/ of a run (PNGs checked to be PNGs) and its table."""
    client = mlflow.MlflowClient()
    names = {Path(a.path).name for a in client.list_artifacts(run_id, schema.EVALUATION_DIR)}
    table = None
    for name in names:
        path = mlflow.artifacts.download_artifacts(
            run_id=run_id, artifact_path=f"{schema.EVALUATION_DIR}/{name}"
        )
        data = Path(path).read_bytes()
        if name.endswith(".png"):
            assert data.startswith(PNG_MAGIC), name
            assert len(data) > 5_000, f"{name} is suspiciously small: {len(data)} bytes"
        else:
            logged = json.loads(data)
            table = pd.DataFrame(logged["data"], columns=logged["columns"])
    return names, table


def _metrics(run_id: str) -> dict[str, float]:
    return mlflow.MlflowClient().get_run(run_id).data.metrics


def _tags(run_id: str) -> dict[str, str]:
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if k.startswith(schema.EVALUATION)}


def _per_fold(table: pd.DataFrame, score) -> pd.Series:
    return table.groupby(schema.FOLD_COLUMN)[
        [schema.TARGET_COLUMN, schema.PREDICTION_COLUMN]
    ].apply(lambda fold: score(fold[schema.TARGET_COLUMN], fold[schema.PREDICTION_COLUMN]))


def _accuracy(truth, predicted) -> float:
    return float(np.mean(np.asarray(truth) == np.asarray(predicted)))


def test_multiclass_logs_confusion_matrix_one_vs_rest_curves_and_predictions(penguins):
    X, y = penguins
    pipe = penguins_pipeline().fit(X, y)
    run_id = pipe.run_ids_["model"]
    names, table = _evaluation(run_id)

    assert names == CLASSIFIER_FILES
    assert table is not None
    classes = ["Adelie", "Chinstrap", "Gentoo"]
    proba = [f"{schema.PROBA_PREFIX}{c}" for c in classes]
    assert list(table.columns) == [
        schema.ROW_COLUMN,
        schema.FOLD_COLUMN,
        schema.TARGET_COLUMN,
        schema.PREDICTION_COLUMN,
        *proba,
    ]
    # One row per training row, in training order, each with its own target.
    assert table[schema.ROW_COLUMN].tolist() == list(range(len(X)))
    assert table[schema.TARGET_COLUMN].tolist() == y.tolist()
    assert sorted(table[schema.FOLD_COLUMN].unique()) == [0, 1, 2, 3, 4]
    np.testing.assert_allclose(table[proba].sum(axis=1), 1.0)
    argmax = np.asarray(classes)[table[proba].to_numpy().argmax(axis=1)]
    assert (argmax == table[schema.PREDICTION_COLUMN]).all()

    # The table holds the very predictions the logged scores came from: the mean of
    # its per-fold accuracies is cv_accuracy_mean, and the pooled accuracy lies
    # between the worst and the best fold.
    folds = _per_fold(table, _accuracy)
    metrics = _metrics(run_id)
    assert folds.mean() == pytest.approx(metrics["cv_accuracy_mean"], abs=1e-12)
    assert folds.std(ddof=0) == pytest.approx(metrics["cv_accuracy_std"], abs=1e-12)
    pooled = _accuracy(table[schema.TARGET_COLUMN], table[schema.PREDICTION_COLUMN])
    assert folds.min() <= pooled <= folds.max()
    assert _tags(run_id)[schema.EVALUATION] == schema.EVALUATED_BY_CROSS_VALIDATION
    assert schema.EVALUATION_NO_PLOTS not in _tags(run_id)


@pytest.mark.parametrize(
    ("model", "score_columns"),
    [
        (LogisticRegression(max_iter=1000), ["proba_0", "proba_1"]),
        # No predict_proba: the curves use the positive class's decision values.
        (RidgeClassifier(), ["decision_1"]),
    ],
    ids=["predict_proba", "decision_function"],
)
def test_binary_logs_roc_and_precision_recall_of_the_positive_class(model, score_columns):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    pipe = _scaled(model).fit(X, y)
    run_id = pipe.run_ids_["model"]
    names, table = _evaluation(run_id)

    assert names == CLASSIFIER_FILES
    assert table is not None
    assert list(table.columns)[4:] == score_columns
    assert len(table) == len(X)
    assert table[schema.ROW_COLUMN].is_unique
    assert (table[schema.TARGET_COLUMN].to_numpy() == y.to_numpy()).all()
    assert roc_auc_score(table[schema.TARGET_COLUMN], table[score_columns[-1]]) > 0.95
    folds = _per_fold(table, _accuracy)
    assert folds.mean() == pytest.approx(_metrics(run_id)["cv_accuracy_mean"], abs=1e-12)


def test_binary_penguins_with_text_labels():
    raw = load_penguins()
    X, y = raw.drop(columns="species"), raw["species"].where(raw["species"] == "Adelie", "other")
    pipe = penguins_pipeline().fit(X, y)
    names, table = _evaluation(pipe.run_ids_["model"])
    assert names == CLASSIFIER_FILES
    assert table is not None and len(table) == len(X)
    assert {"proba_Adelie", "proba_other"} <= set(table.columns)


def test_regression_logs_residuals_and_predictions():
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    pipe = _scaled(Ridge()).fit(X, y)
    run_id = pipe.run_ids_["model"]
    names, table = _evaluation(run_id)

    assert names == {schema.RESIDUALS, schema.PREDICTIONS}
    assert table is not None
    assert list(table.columns) == [
        schema.ROW_COLUMN,
        schema.FOLD_COLUMN,
        schema.TARGET_COLUMN,
        schema.PREDICTION_COLUMN,
    ]
    assert table[schema.ROW_COLUMN].tolist() == list(range(len(X)))
    np.testing.assert_allclose(table[schema.TARGET_COLUMN], y)
    metrics = _metrics(run_id)
    assert _per_fold(table, r2_score).mean() == pytest.approx(metrics["cv_r2_mean"], rel=1e-9)
    mae = _per_fold(table, lambda t, p: float(np.mean(np.abs(t - p))))
    assert mae.mean() == pytest.approx(-metrics["cv_neg_mean_absolute_error_mean"], rel=1e-9)


class CountingClassifier(ClassifierMixin, BaseEstimator):
    """A logistic regression that counts its fits and predictions."""

    fits = 0

    def __init__(self, *, C: float = 1.0):
        self.C = C

    def fit(self, X, y):
        type(self).fits += 1
        self.model_ = LogisticRegression(C=self.C, max_iter=1000).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


@pytest.mark.parametrize("cv", [3, 5])
def test_the_plots_cost_no_fit_beyond_the_folds(cv):
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    CountingClassifier.fits = 0
    # Counted in this process: the folds too (n_jobs=1).
    pipe = _scaled(CountingClassifier()).set_params(cv=cv, cache=False, n_jobs=1).fit(X, y)
    assert CountingClassifier.fits == cv + 1
    names, _ = _evaluation(pipe.run_ids_["model"])
    assert names == CLASSIFIER_FILES


def test_no_figure_is_left_open(penguins):
    import matplotlib.pyplot as plt

    X, y = penguins
    plt.close("all")
    penguins_pipeline().set_params(log_model=False).fit(X, y)
    assert plt.get_fignums() == []


def test_a_class_missing_from_a_training_fold_gets_probability_zero():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    # 12 rows of a third class, all in the last of three unshuffled folds: the
    # model of that fold never saw it.
    y = y.astype(str).to_numpy().copy()
    y[-12:] = "rare"
    pipe = _scaled(LogisticRegression(max_iter=1000)).set_params(cv=KFold(3), scoring="accuracy")
    pipe.fit(X, y)
    names, table = _evaluation(pipe.run_ids_["model"])
    assert names == CLASSIFIER_FILES
    assert table is not None
    last = table[schema.FOLD_COLUMN] == 2
    assert (table.loc[last, "proba_rare"] == 0).all()
    assert (table.loc[~last, "proba_rare"] > 0).all()
    proba = [c for c in table.columns if c.startswith(schema.PROBA_PREFIX)]
    np.testing.assert_allclose(table[proba].sum(axis=1), 1.0)


def test_a_class_missing_from_a_training_fold_leaves_decision_values_out():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    y = y.astype(str).to_numpy().copy()
    y[-12:] = "rare"
    pipe = _scaled(RidgeClassifier()).set_params(cv=KFold(3), scoring="accuracy").fit(X, y)
    names, table = _evaluation(pipe.run_ids_["model"])
    # Decision values of a class a model never saw do not exist: no curves, no columns.
    assert names == {schema.CONFUSION_MATRIX, schema.PREDICTIONS}
    assert table is not None and len(table.columns) == 4


class FailsOnSize(ClassifierMixin, BaseEstimator):
    """A logistic regression whose fit fails on exactly ``size`` rows."""

    def __init__(self, *, size: int = 0):
        self.size = size

    def fit(self, X, y):
        if len(X) == self.size:
            raise ValueError(f"planned failure on {self.size} rows")
        self.model_ = LogisticRegression(max_iter=1000).fit(X, y)
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)

    def predict_proba(self, X):
        return self.model_.predict_proba(X)


def test_a_fold_whose_fit_failed_has_no_predictions():
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    # 569 rows in 5 unshuffled folds: only the last trains on 456 rows.
    pipe = _scaled(FailsOnSize(size=456)).set_params(cv=KFold(5))
    with pytest.warns(FitFailedWarning, match="1 fits failed"):
        pipe.fit(X, y)
    run_id = pipe.run_ids_["model"]
    names, table = _evaluation(run_id)
    assert names == CLASSIFIER_FILES
    assert table is not None
    assert sorted(table[schema.FOLD_COLUMN].unique()) == [0, 1, 2, 3]
    assert table[schema.ROW_COLUMN].tolist() == list(range(len(X) - 113))
    assert _tags(run_id)[schema.EVALUATION_FAILED_FOLDS] == "4"


def test_a_large_table_is_capped_and_the_tag_says_so(penguins, monkeypatch):
    X, y = penguins
    monkeypatch.setattr(mlpipe._evaluation, "_MAX_PREDICTION_ROWS", 50)
    pipe = penguins_pipeline().set_params(log_model=False).fit(X, y)
    run_id = pipe.run_ids_["model"]
    _, table = _evaluation(run_id)
    assert table is not None and len(table) == 50
    rows = table[schema.ROW_COLUMN]
    assert rows.is_unique and rows.is_monotonic_increasing
    assert (table[schema.TARGET_COLUMN].to_numpy() == y.iloc[rows].to_numpy()).all()
    assert _tags(run_id)[schema.EVALUATION_ROWS_KEPT] == "50"


def test_cv_none_logs_no_evaluation(penguins):
    X, y = penguins
    pipe = penguins_pipeline().set_params(cv=None, log_model=False).fit(X, y)
    run_id = pipe.run_ids_["model"]
    assert _evaluation(run_id) == (set(), None)
    assert schema.EVALUATION not in mlflow.MlflowClient().get_run(run_id).data.tags


def test_too_few_rows_log_no_evaluation():
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
    y = [0, 1, 0, 1, 0, 1]
    pipe = _scaled(LogisticRegression()).fit(X, y)
    run_id = pipe.run_ids_["model"]
    assert _evaluation(run_id) == (set(), None)
    assert _tags(run_id)[schema.EVALUATION] == schema.EVALUATED_BY_NOTHING
    assert _tags(run_id)[schema.EVALUATION_SKIPPED] == "6 rows are too few for 5 folds"
