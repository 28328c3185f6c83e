"""The stage cache: reuse on identical inputs, refit on any change, never reuse a failure."""

from __future__ import annotations

import importlib
import sys
import textwrap

import mlflow
import pandas as pd
import pytest
from mlflow.entities import ViewType
from palmerpenguins import load_penguins
from sklearn.base import BaseEstimator, ClassifierMixin, TransformerMixin
from sklearn.linear_model import LogisticRegression

import mlpipe
from mlpipe import _chain, schema
from mlpipe.cli._demo import penguins_pipeline


class CountingScaler(BaseEstimator, TransformerMixin):
    """Scales numbers; counts its fits; can be told to fail its next fit."""

    fits = 0
    fail_next = False

    def __init__(self, *, factor: float = 1.0):
        self.factor = factor

    def fit(self, X, y=None):
        type(self).fits += 1
        if type(self).fail_next:
            type(self).fail_next = False
            raise RuntimeError("planned failure")
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        return X * self.factor


class CountingModel(ClassifierMixin, BaseEstimator):
    fits = 0

    def __init__(self, *, C: float = 1.0):
        self.C = C

    def fit(self, X, y, sample_weight=None):
        type(self).fits += 1
        self.model_ = LogisticRegression(C=self.C, max_iter=500).fit(
            X, y, sample_weight=sample_weight
        )
        self.classes_ = self.model_.classes_
        return self

    def predict(self, X):
        return self.model_.predict(X)


@pytest.fixture(autouse=True)
def _reset_counts():
    CountingScaler.fits = CountingModel.fits = 0
    CountingScaler.fail_next = False


@pytest.fixture
def data():
    raw = load_penguins().dropna()
    return raw[["bill_length_mm", "bill_depth_mm", "flipper_length_mm"]], raw["species"]


def _pipe(**params) -> mlpipe.LineagePipeline:
    pipe = mlpipe.LineagePipeline(
        [("processing", CountingScaler()), ("model", CountingModel())], cv=None
    )
    return pipe.set_params(**params)


def _count(stage: str) -> int:
    return len(
        mlflow.search_runs(
            experiment_names=[stage], output_format="list", run_view_type=ViewType.ALL
        )
    )


def test_an_identical_refit_fits_nothing_and_logs_nothing(data):
    X, y = data
    first = _pipe().fit(X, y)
    assert (CountingScaler.fits, CountingModel.fits) == (1, 1)
    assert first.reused_ == []
    second = _pipe().fit(X, y)
    assert (CountingScaler.fits, CountingModel.fits) == (1, 1)
    assert second.reused_ == ["processing", "model"]
    assert second.run_ids_ == first.run_ids_ and second.model_uri_ == first.model_uri_
    assert (_count("load"), _count("processing"), _count("model")) == (1, 1, 1)
    assert (second.predict(X) == first.predict(X)).all()


@pytest.mark.parametrize(
    ("change", "expected_fits"),
    [
        ("model parameter", (1, 2)),
        ("processing parameter", (2, 2)),
        ("data cell", (2, 2)),
        ("target", (2, 2)),
    ],
)
def test_a_change_refits_from_that_stage_on(data, change, expected_fits):
    X, y = data
    _pipe().fit(X, y)
    if change == "model parameter":
        pipe = _pipe(model__C=0.5).fit(X, y)
    elif change == "processing parameter":
        pipe = _pipe(processing__factor=2.0).fit(X, y)
    elif change == "data cell":
        X = X.copy()
        X.iloc[5, 0] += 0.1
        pipe = _pipe().fit(X, y)
    else:
        pipe = _pipe().fit(X, y.where(y != "Gentoo", "Adelie"))
    assert (CountingScaler.fits, CountingModel.fits) == expected_fits
    assert pipe.reused_ == (["processing"] if expected_fits == (1, 2) else [])


def test_an_edited_user_transformer_is_not_served_stale(data, tmp_path, monkeypatch):
    X, y = data
    module = tmp_path / "team_logic.py"
    template = textwrap.dedent(
        """
        from sklearn.base import BaseEstimator, TransformerMixin

        class Shift(BaseEstimator, TransformerMixin):
            def fit(self, X, y=None):
                return self

            def transform(self, X):
                return X + {shift}
        """
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    module.write_text(template.format(shift=0))
    import team_logic

    pipe = mlpipe.LineagePipeline(
        [("processing", team_logic.Shift()), ("model", CountingModel())], cv=None
    )
    pipe.fit(X, y)
    pipe_again = mlpipe.LineagePipeline(
        [("processing", team_logic.Shift()), ("model", CountingModel())], cv=None
    ).fit(X, y)
    assert pipe_again.reused_ == ["processing", "model"]
    module.write_text(template.format(shift=100))
    importlib.reload(team_logic)
    edited = mlpipe.LineagePipeline(
        [("processing", team_logic.Shift()), ("model", CountingModel())], cv=None
    ).fit(X, y)
    assert edited.reused_ == []
    assert CountingModel.fits == 2
    sys.modules.pop("team_logic", None)


def test_a_failed_run_with_the_same_key_is_never_reused(data):
    X, y = data
    CountingScaler.fail_next = True
    with pytest.raises(RuntimeError, match="planned failure"):
        _pipe().fit(X, y)
    pipe = _pipe().fit(X, y)
    assert pipe.reused_ == [] and CountingScaler.fits == 2
    statuses = sorted(
        r.info.status
        for r in mlflow.search_runs(
            experiment_names=["processing"], output_format="list", run_view_type=ViewType.ALL
        )
    )
    assert statuses == ["FAILED", "FINISHED"]


def test_a_deleted_run_is_never_reused(data):
    X, y = data
    first = _pipe().fit(X, y)
    mlflow.MlflowClient().delete_run(first.run_ids_["model"])
    second = _pipe().fit(X, y)
    assert second.reused_ == ["processing"] and CountingModel.fits == 2


def test_caching_can_be_turned_off(data):
    X, y = data
    _pipe().fit(X, y)
    pipe = _pipe(cache=False).fit(X, y)
    assert pipe.reused_ == [] and (CountingScaler.fits, CountingModel.fits) == (2, 2)


def test_a_new_pull_of_the_same_data_reuses_stages_in_a_chain_of_its_own(data):
    X, y = data
    frame = X.assign(species=y)
    first_pull = mlpipe.load(frame, name="penguins", target="species")
    first = _pipe().fit(first_pull)
    # Another pull of the same content (loading the very same frame again would return
    # the first load run itself).
    second_pull = mlpipe.load(frame, name="penguins_again", target="species")
    second = _pipe().fit(second_pull)
    assert (CountingScaler.fits, CountingModel.fits) == (1, 1)
    assert second.reused_ == ["processing", "model"]
    client = mlflow.MlflowClient()
    processing = client.get_run(second.run_ids_["processing"])
    assert processing.data.tags[schema.UPSTREAM] == second_pull.run_id
    assert processing.data.tags[schema.REUSED_FROM] == first.run_ids_["processing"]
    model = client.get_run(second.run_ids_["model"])
    assert model.data.tags[schema.UPSTREAM] == second.run_ids_["processing"]
    assert second.model_uri_ == first.model_uri_
    chain = [e.run_id for e in mlpipe.lineage(second.run_ids_["model"])]
    assert chain == [second_pull.run_id, second.run_ids_["processing"], second.run_ids_["model"]]


def test_the_default_chain_is_cached_with_its_model_and_evaluation():
    raw = load_penguins()
    X, y = raw.drop(columns="species"), raw["species"]
    first = penguins_pipeline().fit(X, y)
    second = penguins_pipeline().fit(X, y)
    assert second.reused_ == ["processing", "model"]
    assert second.model_uri_ == first.model_uri_
    loaded = mlflow.pyfunc.load_model(second.model_uri_)
    assert (loaded.predict(X) == second.predict(X)).all()


def test_fit_params_are_part_of_the_key(data):
    X, y = data
    weights = pd.Series(1.0, index=X.index)
    _pipe().fit(X, y, model__sample_weight=weights)
    assert _pipe().fit(X, y, model__sample_weight=weights.copy()).reused_ == ["processing", "model"]
    weights.iloc[0] = 2.0
    assert _pipe().fit(X, y, model__sample_weight=weights).reused_ == ["processing"]
    assert CountingModel.fits == 2


def test_deleting_the_fitted_run_stops_reuse_through_its_copies(data):
    X, y = data
    frame = X.assign(species=y)
    first = _pipe().fit(mlpipe.load(frame, name="penguins", target="species"))
    second = _pipe().fit(mlpipe.load(frame, name="penguins", target="species"))
    assert second.reused_ == ["processing", "model"]
    client = mlflow.MlflowClient()
    client.delete_run(first.run_ids_["processing"])
    third = _pipe().fit(mlpipe.load(frame, name="penguins", target="species"))
    assert "processing" not in third.reused_ and CountingScaler.fits == 2


def test_a_class_without_source_code_is_still_cached(data):
    X, y = data
    namespace: dict = {}
    exec(  # as a notebook cell or the interactive prompt defines it: no file to read
        "from sklearn.base import BaseEstimator, TransformerMixin\n"
        "class Cell(BaseEstimator, TransformerMixin):\n"
        "    def fit(self, X, y=None):\n        return self\n"
        "    def transform(self, X):\n        return X * 2\n",
        namespace,
    )
    cell = namespace["Cell"]
    cell.__module__ = "__main__"
    first = mlpipe.LineagePipeline([("processing", cell()), ("model", CountingModel())], cv=None)
    first.fit(X, y)
    again = mlpipe.LineagePipeline([("processing", cell()), ("model", CountingModel())], cv=None)
    assert again.fit(X, y).reused_ == ["processing", "model"]


def test_a_new_evaluation_setting_refits_only_the_final_stage(data):
    X, y = data
    _pipe().fit(X, y)
    again = _pipe(cv=3).fit(X, y)
    assert again.reused_ == ["processing"]
    run = mlflow.MlflowClient().get_run(again.run_ids_["model"])
    assert run.data.tags[schema.EVALUATION_FOLDS] == "3"


def test_an_unreadable_cached_stage_is_refitted(data, tmp_path):
    X, y = data
    first = _pipe().fit(X, y)
    # Overwritten through MLflow, so this works on any artifact store.
    garbage = tmp_path / "garbage" / schema.STAGE_FILE
    garbage.parent.mkdir()
    garbage.write_bytes(b"not a pickle")
    mlflow.MlflowClient().log_artifact(
        first.run_ids_["processing"], str(garbage), schema.STAGE_ARTIFACT
    )
    again = _pipe().fit(X, y)
    assert "processing" not in again.reused_ and CountingScaler.fits == 2


class SlowScaler(CountingScaler):
    """A processing stage that counts its transforms; the test makes every fit count as slow."""

    transforms = 0

    def transform(self, X):
        type(self).transforms += 1
        return X * self.factor


def test_reuse_transforms_only_when_a_later_stage_is_fitted(data, monkeypatch):
    # Any fit is slow enough for its output to be stored, without sleeping past the threshold.
    monkeypatch.setattr(_chain, "OUTPUT_CACHE_SECONDS", 0.0)  # fails if the name is gone
    X, y = data
    SlowScaler.transforms = 0
    slow = mlpipe.LineagePipeline(
        [("processing", SlowScaler()), ("model", CountingModel())], cv=None
    )
    slow.fit(X, y)
    run = mlflow.MlflowClient().get_run(slow.run_ids_["processing"])
    assert run.data.tags[schema.OUTPUT] == "stage/output.pkl"
    after_first = SlowScaler.transforms
    # Identical refit: nothing is fitted, so nothing is transformed.
    mlpipe.LineagePipeline([("processing", SlowScaler()), ("model", CountingModel())], cv=None).fit(
        X, y
    )
    # A new model: the stored output stands in for transforming the training data.
    warm = mlpipe.LineagePipeline(
        [("processing", SlowScaler()), ("model", CountingModel(C=0.3))], cv=None
    ).fit(X, y)
    assert warm.reused_ == ["processing"]
    assert SlowScaler.transforms == after_first
    assert CountingModel.fits == 2
    assert (
        warm.predict(X)
        == mlpipe.LineagePipeline(
            [("processing", SlowScaler()), ("model", CountingModel(C=0.3))], cv=None, cache=False
        )
        .fit(X, y)
        .predict(X)
    ).all()
