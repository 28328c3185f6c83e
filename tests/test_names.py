"""Names that become experiments and folders are checked first; failures name the stage.

Issue 11, items 8 (paths escape the store) and 13 (messages that blame the wrong thing).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
from mlflow.entities import ViewType
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mlpipe
from mlpipe.cli import main
from mlpipe.exceptions import NotFoundError, StageError, TrackingError

X = pd.DataFrame({"a": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0], "b": [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]})
y = pd.Series([0, 1, 0, 1, 0, 1], name="t")


class _CountsFits(BaseEstimator, TransformerMixin):
    fits = 0

    def fit(self, X, y=None):
        type(self).fits += 1
        return self

    def transform(self, X):
        return X


def _nothing_logged() -> bool:
    client = mlflow.MlflowClient()
    names = [e.name for e in client.search_experiments(view_type=ViewType.ALL)]
    return names == ["Default"]


def _files_outside(root: Path, before: set[Path]) -> set[Path]:
    return {p for p in root.rglob("*") if p not in before}


@pytest.mark.parametrize(
    "name",
    ["../x", "/tmp/escaped", "a/b", "", ".hidden", "x" * 300, "sp ace", "..", "ü"],
)
def test_a_step_name_that_is_no_safe_folder_name_fails_before_anything_runs(tmp_path, name):
    outside = tmp_path.parent
    before = set(outside.rglob("*"))
    _CountsFits.fits = 0
    pipe = mlpipe.LineagePipeline(
        [(name, _CountsFits()), ("model", LogisticRegression())], cv=None, log_model=False
    )
    with pytest.raises(StageError, match="Invalid step name") as caught:
        pipe.fit(X, y)
    assert "letters, digits" in str(caught.value)
    assert "'load'" not in str(caught.value)
    assert _CountsFits.fits == 0
    assert _nothing_logged()
    new = {p for p in _files_outside(outside, before) if not p.is_relative_to(tmp_path)}
    assert new == set()


@pytest.mark.parametrize("project", ["../../escaped", "/abs", "", "team/../x", "a//b"])
def test_a_project_that_is_no_safe_folder_name_fails_before_anything_runs(project):
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())], project=project
    )
    with pytest.raises(StageError, match="Invalid project"):
        pipe.fit(X, y)
    with pytest.raises(StageError, match="Invalid project"):
        mlpipe.load(pd.concat([X, y], axis=1), name="toy", project=project)
    assert _nothing_logged()


def test_a_nested_project_is_allowed():
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())],
        project="team/credit",
        cv=None,
        log_model=False,
    ).fit(X, y)
    run = mlflow.MlflowClient().get_run(pipe.run_ids_["model"])
    assert mlflow.MlflowClient().get_experiment(run.info.experiment_id).name == "team/credit/model"


def test_the_command_line_refuses_an_unsafe_project(tmp_path, capsys):
    path = tmp_path / "data.csv"
    pd.concat([X, y], axis=1).to_csv(path, index=False)
    status = main(["load", "--source", str(path), "--target", "t", "--project", "../../x"])
    assert status == 2
    assert "Invalid project '../../x'" in capsys.readouterr().err
    assert _nothing_logged()


def _break_artifacts_of(experiment: str, tmp_path: Path) -> None:
    # A regular file where a folder should be: writing artifacts fails with an OSError
    # (root ignores permission bits, so a read-only folder would not do).
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    mlflow.MlflowClient().create_experiment(
        experiment, artifact_location=(blocker / "artifacts").as_uri()
    )


def test_a_disk_error_names_the_stage_and_ends_its_run(tmp_path):
    _break_artifacts_of("processing", tmp_path)
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression())], cv=None
    )
    with pytest.raises(TrackingError, match="Stage 'processing' failed while writing its files"):
        pipe.fit(X, y)
    runs = mlflow.search_runs(
        experiment_names=["processing"], output_format="list", run_view_type=ViewType.ALL
    )
    assert [r.info.status for r in runs] == ["FAILED"]


def test_a_steps_own_oserror_goes_through_unchanged():
    class ReadsAFile(_CountsFits):
        def fit(self, X, y=None):
            raise FileNotFoundError("the step's own file is missing")

    pipe = mlpipe.LineagePipeline(
        [("processing", ReadsAFile()), ("model", LogisticRegression())], cv=None
    )
    with pytest.raises(FileNotFoundError, match="the step's own file"):
        pipe.fit(X, y)


def test_a_failed_load_run_says_it_failed_not_that_it_had_no_snapshot(tmp_path):
    _break_artifacts_of("load", tmp_path)
    with pytest.raises(TrackingError, match="Stage 'load' failed while writing its files"):
        mlpipe.load(pd.concat([X, y], axis=1), name="toy", target="t")
    (run,) = mlflow.search_runs(
        experiment_names=["load"], output_format="list", run_view_type=ViewType.ALL
    )
    assert run.info.status == "FAILED"
    with pytest.raises(NotFoundError, match="is FAILED: it did not finish"):
        mlpipe.Dataset.from_run(run.info.run_id)


def test_serving_a_failed_run_says_it_failed(capsys):
    class Explodes(LogisticRegression):
        def fit(self, X, y=None, **kwargs):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        mlpipe.LineagePipeline(
            [("processing", StandardScaler()), ("model", Explodes())], cv=None
        ).fit(X, y)
    (run,) = mlflow.search_runs(
        experiment_names=["model"], output_format="list", run_view_type=ViewType.ALL
    )
    assert main(["serve", run.info.run_id]) == 2
    err = capsys.readouterr().err
    assert f"Run {run.info.run_id} is FAILED" in err
    assert "not a final stage" not in err
