"""mlpipe.reproduce and ``mlpipe reproduce``: rebuild a chain from its recipes and data
snapshots, on a real SQLite store and the real Palmer penguins, and say why it differs."""

from __future__ import annotations

import importlib
import json
import logging
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from palmerpenguins import load_penguins
from sklearn.compose import make_column_transformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe
from mlpipe import schema
from mlpipe.cli._main import main
from mlpipe.exceptions import NotFoundError
from mlpipe.testing import raw_frames

TARGET = "species"
NUMERIC = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]


def _penguins() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins()
    return raw.drop(columns=TARGET), raw[TARGET]


def _processing() -> object:
    return make_column_transformer(
        (make_pipeline(SimpleImputer(), StandardScaler()), NUMERIC),
        (OneHotEncoder(handle_unknown="ignore"), ["island", "sex"]),
    )


def _chain(model: object, **kwargs: object) -> mlpipe.LineagePipeline:
    return mlpipe.LineagePipeline([("processing", _processing()), ("model", model)], **kwargs)


def _cli(
    *args: str, cwd: Path | None = None, path: Path | None = None
) -> subprocess.CompletedProcess:
    """``mlpipe`` in a fresh process, on this test's store."""
    import os

    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return subprocess.run(
        [sys.executable, "-m", "mlpipe", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=300,
    )


def test_a_seeded_chain_reproduces_bit_for_bit_in_a_fresh_process():
    X, y = _penguins()
    pipe = _chain(RandomForestClassifier(n_estimators=15, random_state=0)).fit(X, y)
    model_run = pipe.run_ids_["model"]

    done = _cli("reproduce", model_run)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "identical" in done.stdout.splitlines()[0]
    for stage in ("load", "processing", "model"):
        assert any(
            line.split()[0] == stage and "identical" in line
            for line in done.stdout.splitlines()[1:]
        )
    # Every cross-validated metric was recomputed and matched exactly.
    assert "metric cv_accuracy_mean" in done.stdout and "(same)" in done.stdout
    # The reproduce run is fitted on the model run, with the verdict and the report.
    (entry,) = [e for e in mlpipe.descendants(model_run) if e.stage == schema.REPRODUCE_STAGE]
    run = mlflow.MlflowClient().get_run(entry.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags[schema.REPRODUCE_VERDICT] == "identical"
    assert schema.REPRODUCE_FIRST_DIFFERENCE not in run.data.tags
    report = mlflow.artifacts.load_dict(f"runs:/{entry.run_id}/{schema.REPRODUCE_REPORT}")
    assert [s["status"] for s in report["stages"]] == ["identical"] * 3


def test_an_unseeded_forest_is_flagged_at_fit_and_reported_as_not_seeded(caplog):
    X, y = _penguins()
    with caplog.at_level(logging.WARNING, logger="mlpipe"):
        pipe = _chain(RandomForestClassifier(n_estimators=5, max_features=1), cv=None).fit(X, y)
    warned = [r.getMessage() for r in caplog.records if "not seeded" in r.getMessage()]
    assert len(warned) == 1 and "random_state" in warned[0] and "model" in warned[0]
    client = mlflow.MlflowClient()
    assert client.get_run(pipe.run_ids_["model"]).data.tags[schema.NOT_SEEDED] == "random_state"
    assert schema.NOT_SEEDED not in client.get_run(pipe.run_ids_["processing"]).data.tags

    report = mlpipe.reproduce(pipe.model_uri_)

    assert not report.identical and report.verdict == "differs"
    statuses = {s.stage: s.status for s in report.stages}
    assert statuses == {"load": "identical", "processing": "identical", "model": "differs"}
    model = report.first_difference
    assert model is not None and model.stage == "model"
    assert model.reason.startswith("not seeded (random_state left at None)")
    assert model.changed is not None and 0 < model.changed <= 1
    assert report.cause is not None and report.cause.startswith("not seeded")
    assert "differs: not seeded" in str(report)


def test_a_default_logistic_regression_is_not_flagged(caplog):
    # lbfgs draws no random numbers: its random_state=None is not a reproducibility risk.
    X, y = _penguins()
    with caplog.at_level(logging.WARNING, logger="mlpipe"):
        pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(X, y)
    assert not [r for r in caplog.records if "not seeded" in r.getMessage()]
    tags = mlflow.MlflowClient().get_run(pipe.run_ids_["model"]).data.tags
    assert schema.NOT_SEEDED not in tags
    assert mlpipe.reproduce(pipe.run_ids_["model"]).identical


def test_a_nested_unseeded_estimator_is_named_by_its_parameter_path(caplog):
    X, y = _penguins()
    model = make_pipeline(StandardScaler(), RandomForestClassifier(n_estimators=3))
    with caplog.at_level(logging.WARNING, logger="mlpipe"):
        pipe = _chain(model, cv=None).fit(X, y)
    tags = mlflow.MlflowClient().get_run(pipe.run_ids_["model"]).data.tags
    assert tags[schema.NOT_SEEDED] == "randomforestclassifier__random_state"


_STAGE_MODULE = """
import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin


class Scale(BaseEstimator, TransformerMixin):
    def __init__(self, columns=None):
        self.columns = columns

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X[self.columns].to_numpy(dtype=float) * FACTOR
"""

_FIT_SCRIPT = """
import sys
from palmerpenguins import load_penguins
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
import mlpipe
from teamstages import Scale

raw = load_penguins()
columns = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"]
pipe = mlpipe.LineagePipeline([
    # Scaled: on raw body masses lbfgs ran to max_iter, seconds at each of the refits.
    ("processing", make_pipeline(Scale(columns), SimpleImputer(), StandardScaler())),
    ("model", LogisticRegression(max_iter=2000)),
], cv=None)  # the code is the difference checked, not the scores
pipe.fit(raw.drop(columns="species"), raw["species"])
print(pipe.run_ids_["model"])
"""


def test_an_edited_local_transformer_is_the_first_difference_with_current_code(
    tmp_path, monkeypatch, capsys
):
    code = tmp_path / "code"
    code.mkdir()
    module = code / "teamstages.py"
    module.write_text(_STAGE_MODULE.replace("FACTOR", "2.0"))
    (code / "fit.py").write_text(_FIT_SCRIPT)
    fitted = subprocess.run(
        [sys.executable, str(code / "fit.py")], capture_output=True, text=True, timeout=300
    )
    assert fitted.returncode == 0, fitted.stderr
    model_run = fitted.stdout.split()[-1]
    module.write_text(_STAGE_MODULE.replace("FACTOR", "-3.0"))  # the team edits its code

    # The recorded code travelled with the recipe: the chain reproduces as it was. (The
    # command in this process, which never imported the module: each process spent on
    # mlpipe's imports costs seconds; the current-code run below is a fresh process.)
    monkeypatch.syspath_prepend(str(code))
    monkeypatch.delitem(sys.modules, "teamstages", raising=False)
    assert main(["reproduce", model_run]) == 0, capsys.readouterr()

    current = _cli("reproduce", model_run, "--current-code", path=code)
    assert current.returncode == 1, current.stdout + current.stderr
    lines = current.stdout.splitlines()
    processing = next(line for line in lines if line.split()[0] == "processing")
    assert "differs: changed code" in processing
    assert "most likely cause: changed code" in current.stdout
    run = mlflow.MlflowClient().get_run(
        next(
            e.run_id
            for e in mlpipe.descendants(model_run)
            if e.stage == "reproduce"
            and mlflow.MlflowClient().get_run(e.run_id).data.tags[schema.REPRODUCE_CURRENT_CODE]
            == "true"
        )
    )
    assert run.data.tags[schema.REPRODUCE_FIRST_DIFFERENCE] == "processing"

    # The module gone: the stage cannot be rebuilt from current code, and says why.
    module.unlink()
    sys.modules.pop("teamstages", None)
    importlib.invalidate_caches()
    capsys.readouterr()
    assert main(["reproduce", model_run, "--current-code"]) == 2
    gone = capsys.readouterr().out
    assert "cannot rebuild" in gone and "teamstages" in gone


def test_a_registered_logic_changed_since_the_fit_is_found_with_current_code(monkeypatch):
    mlpipe.LOGICS.names()  # what this test registers is gone after it
    monkeypatch.setattr(mlpipe.LOGICS, "_entries", dict(mlpipe.LOGICS._entries))

    @mlpipe.logic("repro_scaled")
    def scaled(with_mean: bool = True) -> object:
        return make_column_transformer(
            (make_pipeline(SimpleImputer(), StandardScaler(with_mean=with_mean)), NUMERIC)
        )

    X, y = _penguins()
    pipe = mlpipe.LineagePipeline(
        [
            ("processing", mlpipe.LOGICS.build("repro_scaled")),
            ("model", LogisticRegression(max_iter=1000)),
        ],
        cv=None,
    ).fit(X, y)
    assert mlpipe.reproduce(pipe.run_ids_["model"], current_code=True).identical

    @mlpipe.logic("repro_scaled", replace=True)
    def scaled_differently(with_mean: bool = True) -> object:
        return make_column_transformer(
            (make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMERIC)
        )

    report = mlpipe.reproduce(pipe.run_ids_["model"], current_code=True)
    assert report.first_difference is not None
    assert report.first_difference.stage == "processing"
    assert report.cause is not None and report.cause.startswith("changed code")
    assert mlpipe.reproduce(pipe.run_ids_["model"]).identical  # the recorded code


def _artifact_file(run_id: str, path: str) -> Path:
    uri = mlflow.MlflowClient().get_run(run_id).info.artifact_uri
    return Path(uri.removeprefix("file://")) / path


def test_a_recorded_package_version_that_differs_is_reported():
    X, y = _penguins()
    pipe = _chain(RandomForestClassifier(n_estimators=5, random_state=1), cv=None).fit(X, y)
    recipe_path = _artifact_file(pipe.run_ids_["model"], "stage/recipe.json")
    recipe = json.loads(recipe_path.read_text())
    installed = recipe["environment"]["packages"]["scikit-learn"]
    recipe["environment"]["packages"]["scikit-learn"] = "0.20.0"
    recipe_path.write_text(json.dumps(recipe))

    report = mlpipe.reproduce(pipe.run_ids_["model"])

    assert report.environment == {"scikit-learn": ("0.20.0", installed)}
    assert "environment changed: scikit-learn 0.20.0 -> " + installed in str(report)
    assert report.identical  # same results all the same


def test_a_deleted_snapshot_is_a_clear_error_naming_the_load_run(capsys):
    X, y = _penguins()
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(X, y)
    load_run = pipe.run_ids_["load"]
    snapshot = _artifact_file(load_run, f"{schema.SNAPSHOT_DIR}/{schema.SNAPSHOT_FILE}")
    snapshot.unlink()

    report = mlpipe.reproduce(pipe.run_ids_["model"])
    assert report.verdict == "cannot rebuild"
    load = report.stages[0]
    assert load.status == "cannot rebuild" and load_run in load.reason
    assert [s.status for s in report.stages[1:]] == ["cannot rebuild"] * 2

    capsys.readouterr()
    assert main(["reproduce", pipe.run_ids_["model"]]) == 2
    assert f"load run {load_run}" in capsys.readouterr().out


def test_a_dropped_column_chain_reproduces_and_a_merge_cannot():
    raw = load_penguins()
    data = mlpipe.load(raw, name="penguins", target=TARGET)
    trimmed = data.drop("year")
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(trimmed)
    assert mlpipe.reproduce(pipe.run_ids_["model"]).identical

    left = mlpipe.load(raw.reset_index()[["index", *NUMERIC, TARGET]], name="left", target=TARGET)
    right = mlpipe.load(raw.reset_index()[["index", "island", "sex"]], name="right")
    merged = left.merge(right, on="index").drop("index")
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(merged)
    report = mlpipe.reproduce(pipe.run_ids_["model"])
    assert report.verdict == "cannot rebuild"
    assert "merge of 2 load runs" in report.stages[0].reason


def test_fit_parameters_are_not_recorded_so_the_stage_cannot_be_rebuilt():
    X, y = _penguins()
    weights = pd.Series(1.0, index=X.index)
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(
        X, y, model__sample_weight=weights
    )
    report = mlpipe.reproduce(pipe.run_ids_["model"])
    model = report.stages[-1]
    assert model.status == "cannot rebuild" and "sample_weight" in model.reason


def test_a_registered_model_alias_and_a_model_uri_are_references():
    X, y = _penguins()
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None, registered_model_name="repro").fit(
        X, y
    )
    mlflow.MlflowClient().set_registered_model_alias("repro", "champion", "1")
    for ref in ("models:/repro@champion", "repro@champion", "models:/repro/1", pipe.model_uri_):
        report = mlpipe.reproduce(ref)
        assert report.run_id == pipe.run_ids_["model"] and report.identical, ref


def test_a_reference_that_names_nothing_fails_in_one_line():
    with pytest.raises(NotFoundError, match="expected a stage run id"):
        mlpipe.reproduce("not a run")
    done = _cli("reproduce", "models:/nothing@champion")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr


@settings(max_examples=5)
@given(
    frame=raw_frames(load_penguins(), min_rows=30, max_rows=90),
    logic=st.sampled_from(["plain", "knn"]),
    algorithm=st.sampled_from(["logreg", "rf", "hgb"]),
)
def test_any_seeded_registered_chain_reproduces_identically(frame, logic, algorithm):
    # Generated rows like the penguins' (missing values, text, integers): the built-in
    # logics and algorithms are seeded, so every chain of them reproduces exactly.
    frame = frame.dropna(subset=[TARGET])
    counts = frame[TARGET].value_counts()
    assume(len(counts) >= 2 and counts.min() >= 3)
    X, y = frame.drop(columns=TARGET), frame[TARGET]
    kind = "binary" if len(counts) == 2 else "multiclass"
    pipe = mlpipe.LineagePipeline(
        [
            ("processing", mlpipe.LOGICS.build(logic)),
            ("model", mlpipe.ALGORITHMS.build(algorithm, target_type=kind)),
        ],
        cv=3,
    ).fit(X, y)
    report = mlpipe.reproduce(pipe.run_ids_["model"])
    assert report.identical, str(report)


def test_a_reused_stage_is_rebuilt_from_the_recipe_of_the_run_that_fitted_it():
    X, y = _penguins()
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(X, y)
    again = _chain(LogisticRegression(max_iter=500), cv=None).fit(X, y)
    assert again.reused_ == ["processing"]
    client = mlflow.MlflowClient()
    fitted = {a.path for a in client.list_artifacts(pipe.run_ids_["processing"], "stage")}
    assert {"stage/recipe.json", "stage/recipe.pkl", "stage/stage.pkl"} <= fitted
    assert mlpipe.reproduce(again.run_ids_["model"]).identical


def test_a_random_state_the_estimator_ignores_is_not_flagged():
    from sklearn.model_selection import TunedThresholdClassifierCV

    from mlpipe._recipe import not_seeded

    assert not_seeded(TunedThresholdClassifierCV(LogisticRegression(), cv=5)) == []
    assert not_seeded(TunedThresholdClassifierCV(LogisticRegression(), cv=0.3)) == ["random_state"]
    assert not_seeded(LogisticRegression(solver="saga")) == ["random_state"]


def test_outputs_of_another_shape_differ_and_a_reproduce_run_is_not_a_reference():
    from mlpipe._reproduce import _compare

    entry = mlpipe.LineageEntry("processing", "T", "T@20260101000000", "r", (), "FINISHED")
    result = _compare(entry, [[1.0, 2.0]], [[1.0, 2.0, 3.0]], "outputs")
    assert result.status == "differs" and "shape (1, 3)" in result.reason

    X, y = _penguins()
    pipe = _chain(LogisticRegression(max_iter=1000), cv=None).fit(X, y)
    reproduced = mlpipe.reproduce(pipe.run_ids_["model"]).reproduce_run_id
    with pytest.raises(NotFoundError, match="is a reproduce run, not a fitted stage"):
        mlpipe.reproduce(reproduced)


def test_a_seeded_shuffling_splitter_is_recorded_and_the_scores_recomputed():
    from sklearn.model_selection import StratifiedKFold

    X, y = _penguins()
    cv = StratifiedKFold(3, shuffle=True, random_state=7)
    pipe = _chain(LogisticRegression(max_iter=1000), cv=cv, scoring=["accuracy"]).fit(X, y)
    report = mlpipe.reproduce(pipe.run_ids_["model"])
    assert list(report.metrics) == ["cv_accuracy_mean"]
    logged, now = report.metrics["cv_accuracy_mean"]
    assert logged == now and report.identical
