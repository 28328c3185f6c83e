"""LineagePipeline: stage runs, their links, failures, and scikit-learn behaviour."""

from __future__ import annotations

import json
import re
import subprocess
import tempfile

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.entities import ViewType
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

import mlpipe
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.exceptions import StageError
from mlpipe.tracking._store import format_param

from .strategies import penguin_rows, training_frames

KEY = re.compile(r"^[A-Za-z0-9_.+\-]+@\d{14}$")


@pytest.fixture(scope="module")
def penguins() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins()
    return raw.drop(columns="species"), raw["species"]


def _all_runs(experiment: str):
    return mlflow.search_runs(
        experiment_names=[experiment], output_format="list", run_view_type=ViewType.ALL
    )


def _fast(pipe: mlpipe.LineagePipeline) -> mlpipe.LineagePipeline:
    return pipe.set_params(cv=None, log_model=False)


class Exploding(BaseEstimator, TransformerMixin):
    """A transformer that fails in fit, as a user's buggy logic would."""

    def __init__(self, *, exception: type[BaseException] = RuntimeError):
        self.exception = exception

    def fit(self, X, y=None):
        raise self.exception("boom in fit")

    def transform(self, X):
        return X


def test_every_stage_is_a_linked_finished_run(penguins):
    X, y = penguins
    pipe = penguins_pipeline().fit(X, y)

    assert list(pipe.run_ids_) == ["load", "processing", "model"]
    client = mlflow.MlflowClient()
    runs = {stage: client.get_run(run_id) for stage, run_id in pipe.run_ids_.items()}
    for stage, run in runs.items():
        assert run.info.status == "FINISHED"
        assert client.get_experiment(run.info.experiment_id).name == stage
        key = run.data.tags[schema.KEY]
        assert KEY.match(key) and run.info.run_name == key
        assert run.data.metrics[schema.KEY_TIME] == int(key.split("@")[1])
        assert run.data.tags[schema.STAGE] == stage
    assert runs["load"].data.tags[schema.UPSTREAM] == ""
    assert runs["processing"].data.tags[schema.UPSTREAM] == pipe.run_ids_["load"]
    assert runs["model"].data.tags[schema.UPSTREAM] == pipe.run_ids_["processing"]
    assert runs["model"].data.tags[schema.UPSTREAM_KEYS] == (
        f"processing:{runs['processing'].data.tags[schema.KEY]}"
    )
    assert runs["model"].data.tags[schema.TYPE] == "logreg"  # from types=
    assert runs["model"].data.params["max_iter"] == "1000"
    assert runs["model"].data.tags[schema.MODEL_URI] == pipe.model_uri_
    assert runs["load"].data.params[schema.ROWS] == str(len(X))
    for stage in ("processing", "model"):
        assert runs[stage].data.metrics[schema.FIT_TIME] > 0
        assert runs[stage].data.tags[schema.SERIALIZER] == "cloudpickle"
    assert 0.9 < runs["model"].data.metrics["cv_accuracy_mean"] <= 1
    assert runs["model"].data.tags[schema.EVALUATION] == schema.EVALUATED_BY_CROSS_VALIDATION
    assert runs["model"].data.tags[schema.EVALUATION_FOLDS] == "5"


def test_stage_artifact_is_the_fitted_step(penguins):
    X, y = penguins
    pipe = _fast(penguins_pipeline()).fit(X, y)
    path = mlflow.artifacts.download_artifacts(
        run_id=pipe.run_ids_["processing"],
        artifact_path=f"{schema.STAGE_ARTIFACT}/{schema.STAGE_FILE}",
    )
    with open(path, "rb") as f:
        processing = cloudpickle.load(f)
    expected = pipe.named_steps["processing"].transform(X)
    np.testing.assert_allclose(processing.transform(X), expected)


def test_training_data_is_an_mlflow_dataset_input_of_every_stage(penguins):
    X, y = penguins
    pipe = _fast(penguins_pipeline()).fit(X, y)
    client = mlflow.MlflowClient()
    fingerprint = client.get_run(pipe.run_ids_["load"]).data.tags[schema.FINGERPRINT]
    assert fingerprint == mlpipe.fingerprint(X.assign(species=y))
    for run_id in pipe.run_ids_.values():
        inputs = client.get_run(run_id).inputs.dataset_inputs
        assert [i.dataset.digest for i in inputs] == [fingerprint]


def test_fit_on_a_dataset_reuses_its_load_run(penguins):
    X, y = penguins
    dataset = mlpipe.load(X.assign(species=y), name="penguins", target="species")
    pipe = _fast(penguins_pipeline()).fit(dataset)
    assert pipe.run_ids_["load"] == dataset.run_id
    assert len(_all_runs("load")) == 1
    processing = mlflow.MlflowClient().get_run(pipe.run_ids_["processing"])
    assert processing.data.tags[schema.UPSTREAM_KEYS] == f"load:{dataset.key}"
    with pytest.raises(TypeError, match="takes the target from the dataset"):
        penguins_pipeline().fit(dataset, y)


def test_git_commit_is_recorded(penguins, tmp_path):
    X, y = penguins
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run(
        [
            "git",
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "x",
        ],
        check=True,
    )
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True)
    pipe = _fast(penguins_pipeline()).fit(X, y)
    run = mlflow.MlflowClient().get_run(pipe.run_ids_["model"])
    assert run.data.tags[schema.GIT_COMMIT] == head.stdout.strip()


@pytest.mark.parametrize("position", ["processing", "model"])
def test_a_failing_step_ends_its_run_failed_and_reraises(penguins, position):
    X, y = penguins
    steps = [("processing", penguins_pipeline()[0]), ("model", LogisticRegression())]
    index = [name for name, _ in steps].index(position)
    steps[index] = (position, Exploding())
    if position == "model":
        steps[index] = (position, Pipeline([("x", Exploding()), ("m", LogisticRegression())]))
    with pytest.raises(RuntimeError, match="boom in fit"):
        mlpipe.LineagePipeline(steps).fit(X, y)
    failed = _all_runs(position)
    assert [r.info.status for r in failed] == ["FAILED"]
    for stage in ("load", "processing", "model"):
        assert all(r.info.status != "RUNNING" for r in _all_runs(stage))
    if position == "model":
        assert [r.info.status for r in _all_runs("processing")] == ["FINISHED"]


def test_an_interrupted_fit_ends_its_run_killed(penguins):
    X, y = penguins
    pipe = mlpipe.LineagePipeline([("processing", Exploding(exception=KeyboardInterrupt))])
    with pytest.raises(KeyboardInterrupt):
        pipe.fit(X, y)
    assert [r.info.status for r in _all_runs("processing")] == ["KILLED"]


def test_stage_keys_are_unique_under_rapid_successive_fits():
    X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0], "b": [1.0, 0.0, 1.0, 0.0]})
    y = [0, 1, 0, 1]
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())],
        cv=None,
        log_model=False,
        cache=False,
    )
    for _ in range(6):
        clone(pipe).fit(X, y)
    for stage in ("load", "processing", "model"):
        keys = [r.data.tags[schema.KEY] for r in _all_runs(stage)]
        assert len(keys) == 6 and len(set(keys)) == 6, keys
        assert all(r.info.run_name == r.data.tags[schema.KEY] for r in _all_runs(stage))
    # Without types=, a stage's type is its class name.
    assert {r.data.tags[schema.TYPE] for r in _all_runs("processing")} == {"StandardScaler"}


def test_project_prefixes_every_experiment(penguins):
    X, y = penguins
    pipe = _fast(penguins_pipeline()).set_params(project="credit").fit(X, y)
    client = mlflow.MlflowClient()
    names = {
        client.get_experiment(client.get_run(r).info.experiment_id).name
        for r in pipe.run_ids_.values()
    }
    assert names == {"credit/load", "credit/processing", "credit/model"}


def test_cross_validation_does_not_flood_the_store(penguins):
    # cross_val_score gives its fold fits no callback context, so log='auto' cannot
    # tell them from a user's fit: log=False is how to cross-validate by hand.
    X, y = penguins
    scores = cross_val_score(_fast(penguins_pipeline()).set_params(log=False), X, y, cv=3)
    assert scores.mean() > 0.9
    assert mlflow.MlflowClient().get_experiment_by_name("model") is None


def test_under_auto_each_fold_of_cross_val_score_is_its_own_chain(penguins):
    X, y = penguins
    cross_val_score(_fast(penguins_pipeline()), X, y, cv=3)
    assert len(_all_runs("model")) == 3


def test_a_search_over_the_pipeline_logs_only_its_final_refit(penguins):
    X, y = penguins
    search = GridSearchCV(_fast(penguins_pipeline()), {"model__C": [0.1, 1.0]}, cv=3)
    search.fit(X, y)
    runs = _all_runs("model")
    assert len(runs) == 1
    assert runs[0].data.params["C"] == str(search.best_params_["model__C"])
    assert search.best_estimator_.run_ids_["model"] == runs[0].info.run_id


def test_a_search_as_final_step_logs_best_params_score_and_cv_results(penguins):
    X, y = penguins
    search = GridSearchCV(LogisticRegression(max_iter=1000), {"C": [0.01, 1.0]}, cv=3)
    pipe = mlpipe.LineagePipeline(
        [("processing", penguins_pipeline()[0]), ("model", search)], log_model=False
    ).fit(X, y)
    run = mlflow.MlflowClient().get_run(pipe.run_ids_["model"])
    assert run.data.params["best.C"] == str(search.best_params_["C"])
    assert run.data.metrics[schema.BEST_SCORE] == pytest.approx(search.best_score_)
    assert "cv_accuracy_mean" not in run.data.metrics
    path = mlflow.artifacts.download_artifacts(
        run_id=run.info.run_id, artifact_path=schema.CV_RESULTS
    )
    with open(path) as f:
        logged = json.load(f)
    table = pd.DataFrame(logged["data"], columns=logged["columns"])
    assert len(table) == 2 and "mean_test_score" in table.columns


def test_slicing_keeps_the_class_and_settings(penguins):
    pipe = penguins_pipeline().set_params(project="p", cv=3, log_model=False, scoring="f1_macro")
    head = pipe[:1]
    assert type(head) is mlpipe.LineagePipeline
    assert {k: head.get_params()[k] for k in ("project", "cv", "log_model", "scoring")} == {
        "project": "p",
        "cv": 3,
        "log_model": False,
        "scoring": "f1_macro",
    }
    assert pipe[-1] is pipe.steps[-1][1]
    assert pipe["model"] is pipe.steps[-1][1]


@given(
    project=st.one_of(st.none(), st.text(min_size=1, max_size=10)),
    cv=st.one_of(st.none(), st.integers(2, 10)),
    log_model=st.booleans(),
)
def test_clone_preserves_parameters(project, cv, log_model):
    pipe = penguins_pipeline().set_params(project=project, cv=cv, log_model=log_model)
    cloned = clone(pipe)
    assert type(cloned) is mlpipe.LineagePipeline
    shallow = ("project", "cv", "log_model", "scoring", "memory", "verbose", "transform_input")
    assert {k: cloned.get_params()[k] for k in shallow} == {
        k: pipe.get_params()[k] for k in shallow
    }
    # Deep parameters hold estimators and selectors, which compare by identity:
    # compare them as mlpipe logs them.
    deep, cloned_deep = pipe.get_params(deep=True), cloned.get_params(deep=True)
    assert {k: format_param(v) for k, v in cloned_deep.items()} == {
        k: format_param(v) for k, v in deep.items()
    }


def test_set_output_and_transform_of_a_slice(penguins):
    X, y = penguins
    pipe = _fast(penguins_pipeline()).set_output(transform="pandas").fit(X, y)
    out = pipe[:1].transform(X)
    assert isinstance(out, pd.DataFrame) and len(out) == len(X)
    assert pipe.score(X, y) > 0.9
    assert pipe.predict_proba(X).shape == (len(X), 3)


def test_predictions_match_a_plain_sklearn_pipeline(penguins):
    X, y = penguins
    pipe = _fast(penguins_pipeline()).fit(X, y)
    plain = Pipeline(clone(penguins_pipeline()).steps).fit(X, y)
    np.testing.assert_array_equal(pipe.predict(X), plain.predict(X))


def test_setup_errors_say_what_was_expected(penguins):
    X, y = penguins
    with pytest.raises(StageError, match="memory"):
        penguins_pipeline().set_params(memory="/tmp/cache").fit(X, y)
    with pytest.raises(StageError, match="reserved"):
        mlpipe.LineagePipeline([("load", StandardScaler())]).fit(X, y)
    with pytest.raises(ValueError, match="does not name a step"):
        _fast(penguins_pipeline()).fit(X, y, sample_weight=np.ones(len(X)))
    assert mlflow.MlflowClient().get_experiment_by_name("processing") is None


def test_fit_params_reach_their_step(penguins):
    X, y = penguins
    weights = np.where(y == "Gentoo", 5.0, 1.0)
    pipe = _fast(penguins_pipeline()).fit(X, y, model__sample_weight=weights)
    plain = Pipeline(clone(penguins_pipeline()).steps).fit(X, y, model__sample_weight=weights)
    np.testing.assert_allclose(pipe.predict_proba(X), plain.predict_proba(X))


@pytest.fixture(scope="module")
def served_penguins(tmp_path_factory):
    """One pipeline fitted on the penguins, with its loaded raw-input model."""
    store = tmp_path_factory.mktemp("store")
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(f"sqlite:///{store}/mlflow.db")
    try:
        raw = load_penguins()
        pipe = (
            penguins_pipeline().set_params(cv=None).fit(raw.drop(columns="species"), raw["species"])
        )
        model = mlflow.pyfunc.load_model(pipe.model_uri_)
    finally:
        mlflow.set_tracking_uri(previous)
    return pipe, model


@given(rows=penguin_rows())
def test_pyfunc_predicts_like_the_pipeline_on_raw_records(served_penguins, rows):
    pipe, model = served_penguins
    np.testing.assert_array_equal(model.predict(rows), pipe.predict(rows))
    proba = model.predict(rows, params={"method": "predict_proba"})
    np.testing.assert_allclose(proba.to_numpy(), pipe.predict_proba(rows))
    assert list(proba.columns) == list(pipe.classes_)


def test_a_missing_value_is_the_same_whatever_it_arrives_as(served_penguins):
    pipe, model = served_penguins
    base = load_penguins().drop(columns="species").head(3)
    predictions = []
    for missing in (None, np.nan, pd.NA):
        rows = base.astype(object)
        rows.loc[0, "sex"] = missing
        rows.loc[1, "bill_length_mm"] = missing
        rows.loc[2, "year"] = missing
        predictions.append(pipe.predict_proba(rows))
        np.testing.assert_allclose(
            model.predict(rows, params={"method": "predict_proba"}).to_numpy(), predictions[-1]
        )
    np.testing.assert_allclose(predictions[0], predictions[1])
    np.testing.assert_allclose(predictions[0], predictions[2])


@settings(max_examples=4)
@given(data=training_frames())
def test_pyfunc_equals_pipeline_on_generated_training_frames(data):
    X, y = data
    with tempfile.TemporaryDirectory() as tmp:
        mlflow.set_tracking_uri(f"sqlite:///{tmp}/mlflow.db")
        pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
        model = mlflow.pyfunc.load_model(pipe.model_uri_)
        np.testing.assert_array_equal(model.predict(X), pipe.predict(X))


def test_a_chain_without_a_predictor_serves_its_transform(penguins):
    X, _ = penguins
    numbers = X.select_dtypes("number").dropna()
    pipe = mlpipe.LineagePipeline([("processing", StandardScaler())]).fit(numbers)
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    np.testing.assert_allclose(model.predict(numbers), pipe.transform(numbers))
