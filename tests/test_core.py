"""The core's explicit rules: when a fit is logged, how it is validated, what it stores.

Each test here failed before the core redesign (issue: explicit, validated, split).
"""

from __future__ import annotations

import logging

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.entities import ViewType
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

import mlpipe
from mlpipe import schema
from mlpipe._cache import cache_key
from mlpipe._evaluation import IN_EVALUATION
from mlpipe.exceptions import NotFoundError


@pytest.fixture(scope="module")
def numbers() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins().dropna()
    return raw[["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]], raw["species"]


def _chain(**settings) -> mlpipe.LineagePipeline:
    settings = {"cv": None, "log_model": False, **settings}
    return mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression(max_iter=500))],
        **settings,
    )


def _runs(experiment: str) -> list:
    return mlflow.search_runs(
        experiment_names=[experiment], output_format="list", run_view_type=ViewType.ALL
    )


# --- when a fit is logged ------------------------------------------------------------


def test_a_lineage_pipeline_inside_a_plain_pipeline_is_logged(numbers):
    # Before: a non-final step of a plain Pipeline silently logged nothing.
    X, y = numbers
    inner = mlpipe.LineagePipeline([("processing", StandardScaler())], cv=None, log_model=False)
    Pipeline([("lineage", inner), ("model", LogisticRegression(max_iter=500))]).fit(X, y)
    assert list(inner.run_ids_) == ["load", "processing"]
    assert mlflow.MlflowClient().get_run(inner.run_ids_["processing"]).info.status == "FINISHED"


def test_log_false_fits_as_a_plain_pipeline_and_says_so(numbers, caplog):
    X, y = numbers
    with caplog.at_level(logging.INFO, logger="mlpipe"):
        pipe = _chain(log=False).fit(X, y)
    assert pipe.run_ids_ == {} and pipe.model_uri_ is None and pipe.reused_ == []
    assert pipe.score(X, y) > 0.9
    assert mlflow.MlflowClient().get_experiment_by_name("model") is None
    assert any("not logged: log=False" in r.getMessage() for r in caplog.records)


def test_a_search_logs_its_refit_and_warns_once_about_its_candidates(numbers, caplog):
    X, y = numbers
    search = GridSearchCV(_chain(), {"model__C": [0.1, 1.0, 10.0]}, cv=3)
    with caplog.at_level(logging.INFO, logger="mlpipe"):
        search.fit(X, y)
    assert len(_runs("model")) == 1
    assert search.best_estimator_.run_ids_["model"] == _runs("model")[0].info.run_id
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "GridSearchCV" in warnings[0].getMessage()
    assert "candidate" in warnings[0].getMessage()


def test_log_true_logs_every_fit_even_a_search_candidate(numbers):
    X, y = numbers
    GridSearchCV(_chain(log=True), {"model__C": [0.1, 1.0]}, cv=2).fit(X, y)
    # Two candidates on two splits, then the refit.
    assert len(_runs("model")) == 5


class _RecordsEvaluation(BaseEstimator, TransformerMixin):
    """Remembers, in a class attribute, whether each fit ran inside mlpipe's evaluation."""

    seen: list[bool] = []

    def fit(self, X, y=None):
        type(self).seen.append(IN_EVALUATION.get())
        return self

    def transform(self, X):
        return X


def test_mlpipe_marks_its_own_fold_fits(numbers):
    X, y = numbers
    _RecordsEvaluation.seen = []
    mlpipe.LineagePipeline(
        [("processing", _RecordsEvaluation()), ("model", LogisticRegression(max_iter=500))],
        cv=3,
        log_model=False,
    ).fit(X, y)
    # The chain's own fit first, outside the evaluation; then one fit per fold.
    assert _RecordsEvaluation.seen == [False, True, True, True]
    assert IN_EVALUATION.get() is False


def test_a_fit_inside_mlpipes_evaluation_is_not_logged(numbers, caplog):
    X, y = numbers
    token = IN_EVALUATION.set(True)
    try:
        with caplog.at_level(logging.INFO, logger="mlpipe"):
            pipe = _chain().fit(X, y)
    finally:
        IN_EVALUATION.reset(token)
    assert pipe.run_ids_ == {}
    assert any("mlpipe's own cross-validation" in r.getMessage() for r in caplog.records)


# --- validated as Pipeline is -----------------------------------------------------------


def test_duplicate_step_names_fail_as_in_pipeline_and_log_nothing(numbers):
    X, y = numbers
    steps = [
        ("a", SimpleImputer()),
        ("a", StandardScaler()),
        ("model", LogisticRegression()),
    ]
    with pytest.raises(ValueError, match="Names provided are not unique"):
        Pipeline(steps).fit(X, y)
    with pytest.raises(ValueError, match="Names provided are not unique"):
        mlpipe.LineagePipeline(steps).fit(X, y)
    assert mlflow.MlflowClient().get_experiment_by_name("load") is None


def test_an_intermediate_step_that_cannot_transform_fails_before_logging(numbers):
    X, y = numbers
    steps = [("model", LogisticRegression()), ("other", LogisticRegression())]
    with pytest.raises(TypeError, match="intermediate steps should be transformers"):
        mlpipe.LineagePipeline(steps).fit(X, y)
    assert mlflow.MlflowClient().get_experiment_by_name("load") is None


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("log", "sometimes"),
        ("log_model", "yes"),
        ("cv", "five"),
        ("cache", 1.5),
        ("types", ["plain"]),
        ("serializer", "pickle"),
        ("scoring", "not-a-scorer"),
        ("project", 3),
    ],
)
def test_wrong_parameter_values_fail_with_scikit_learns_message(numbers, name, value):
    X, y = numbers
    with pytest.raises(InvalidParameterError, match=f"The '{name}' parameter of LineagePipeline"):
        _chain().set_params(**{name: value}).fit(X, y)
    assert mlflow.MlflowClient().get_experiment_by_name("load") is None


# --- what is stored: exact, structured, versioned -----------------------------------------


def test_a_load_run_without_target_reads_back_without_target():
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "z": ["a", "b", "c"]})
    ds = mlpipe.load(frame, name="untargeted")
    run = mlflow.MlflowClient().get_run(ds.run_id)
    assert schema.TARGET not in run.data.params
    again = mlpipe.Dataset.from_run(ds.run_id)
    assert again.target is None and again.y is None
    pd.testing.assert_frame_equal(again.X, frame)


def test_every_run_carries_the_schema_version_and_exact_upstream_tags(numbers):
    X, y = numbers
    pipe = _chain().fit(X, y)
    client = mlflow.MlflowClient()
    runs = {stage: client.get_run(run_id) for stage, run_id in pipe.run_ids_.items()}
    for run in runs.values():
        assert run.data.tags[schema.SCHEMA_VERSION_TAG] == schema.SCHEMA_VERSION
    load_key = runs["load"].data.tags[schema.KEY]
    assert runs["processing"].data.tags[schema.upstream_tag(pipe.run_ids_["load"])] == (
        f"load:{load_key}"
    )
    assert not any(k.startswith(schema.UPSTREAM_PREFIX) for k in runs["load"].data.tags)


def test_upstream_queries_are_exact_not_substring_matches(numbers):
    X, y = numbers
    pipe = _chain().fit(X, y)
    load_id = pipe.run_ids_["load"]
    found = mlpipe.runs(upstream=load_id)
    assert found["run_id"].tolist() == [pipe.run_ids_["processing"]]
    # A part of a run id is not that run id (a LIKE '%…%' filter matched it).
    assert mlpipe.runs(upstream=load_id[:8]).empty
    assert [e.run_id for e in mlpipe.descendants(load_id)] == [
        pipe.run_ids_["processing"],
        pipe.run_ids_["model"],
    ]
    with pytest.raises(ValueError, match="Expected a run id"):
        mlpipe.runs(upstream="x' or '1'='1")


def test_the_evaluation_is_recorded_as_structured_tags(numbers):
    X, y = numbers
    pipe = _chain(cv=3).fit(X, y)
    tags = mlflow.MlflowClient().get_run(pipe.run_ids_["model"]).data.tags
    assert tags[schema.EVALUATION] == schema.EVALUATED_BY_CROSS_VALIDATION
    assert tags[schema.EVALUATION_FOLDS] == "3"
    assert tags[schema.EVALUATION_SPLITTER] == "StratifiedKFold"
    assert schema.EVALUATION_FAILED_FOLDS not in tags


def test_too_few_rows_record_why_the_evaluation_was_skipped(numbers):
    X, y = numbers
    rows = [0, 1, 2, -3, -2, -1]  # two species
    pipe = _chain(cv=5).fit(X.iloc[rows], y.iloc[rows].to_numpy())
    tags = mlflow.MlflowClient().get_run(pipe.run_ids_["model"]).data.tags
    assert tags[schema.EVALUATION] == schema.EVALUATED_BY_NOTHING
    assert tags[schema.EVALUATION_SKIPPED] == "6 rows are too few for 5 folds"


def test_a_new_mlpipe_release_keeps_every_cache_key(monkeypatch):
    def key() -> str:
        return cache_key(
            stage="processing",
            type_="StandardScaler",
            estimator=StandardScaler(with_mean=False),
            fit_params={},
            upstream="data:abc:target=y",
        )

    before = key()
    monkeypatch.setattr("mlpipe._version.__version__", "99.0.0")
    monkeypatch.setattr("mlpipe._cache.__version__", "99.0.0")
    assert key() == before


# --- quiet by default ----------------------------------------------------------------------


def test_a_fit_prints_nothing_and_says_one_line_per_stage(numbers, capfd, caplog):
    X, y = numbers
    capfd.readouterr()
    with caplog.at_level(logging.INFO, logger="mlpipe"):
        pipe = mlpipe.LineagePipeline(
            [("processing", StandardScaler()), ("model", LogisticRegression(max_iter=500))],
            cv=2,
        ).fit(X, y)
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")
    lines = [r.getMessage() for r in caplog.records if r.name == "mlpipe"]
    stages = [line.split(":")[0] for line in lines if line.startswith("Stage ")]
    assert stages == ["Stage load", "Stage processing", "Stage model"], lines
    key = mlflow.MlflowClient().get_run(pipe.run_ids_["model"]).data.tags[schema.KEY]
    assert any(line.startswith(f"Stage model: {key} fitted in ") for line in lines), lines
    assert np.isfinite(pipe.score(X, y))


# --- the command line is built on public names ----------------------------------------------


def test_the_command_line_imports_only_public_names():
    import ast
    from pathlib import Path

    cli = Path(mlpipe.__file__).parent / "cli"
    private = []
    for path in sorted(cli.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("mlpipe"):
                parts = node.module.split(".")
                names = [alias.name for alias in node.names]
                if node.module.startswith("mlpipe.cli"):
                    continue  # the command's own modules
                if any(p.startswith("_") for p in parts) or any(n.startswith("_") for n in names):
                    private.append(f"{path.name}:{node.lineno} from {node.module} import {names}")
    assert private == []


def test_find_run_and_load_stage(numbers):
    X, y = numbers
    pipe = _chain().fit(X, y)
    found = mlpipe.find_run("processing", "StandardScaler")
    assert found.run_id == pipe.run_ids_["processing"]
    assert mlpipe.find_run("processing", found.key).run_id == found.run_id
    stage = mlpipe.load_stage(found.run_id)
    np.testing.assert_allclose(stage.transform(X), pipe[:-1].transform(X))
    with pytest.raises(NotFoundError, match="Runs of that type exist on"):
        mlpipe.find_run("processing", "StandardScaler", "2001-01-01")
    with pytest.raises(NotFoundError, match="Types there: StandardScaler"):
        mlpipe.find_run("processing", "MinMaxScaler")
    with pytest.raises(NotFoundError, match="holds no fitted stage"):
        mlpipe.load_stage(pipe.run_ids_["load"])
