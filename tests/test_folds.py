"""Fold-level reuse: a refit that changes only the final step fits no fold of a cached
upstream stage again, and gets bit-identical out-of-fold predictions (issue 12, item 1).
Folds in parallel give the same results as one after another (item 2).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlpipe
from mlpipe import _chain, schema


class Calls:
    """How often StandardScaler was fitted and applied (in this process).

    Counted on scikit-learn's class, never on a class of this module: that one is
    pickled by value with the stage, and unpickling it sets its attributes back.
    """

    fits = 0
    transforms = 0


@pytest.fixture(autouse=True)
def _counted_and_every_fold_kept(monkeypatch):
    # Every fit counts as slow enough for its output to be kept.
    monkeypatch.setattr(_chain, "OUTPUT_CACHE_SECONDS", 0.0)
    fit, transform = StandardScaler.fit, StandardScaler.transform

    def counted_fit(self, *args, **kwargs):
        Calls.fits += 1
        return fit(self, *args, **kwargs)

    def counted_transform(self, *args, **kwargs):
        Calls.transforms += 1
        return transform(self, *args, **kwargs)

    monkeypatch.setattr(StandardScaler, "fit", counted_fit)
    monkeypatch.setattr(StandardScaler, "transform", counted_transform)
    Calls.fits = Calls.transforms = 0


@pytest.fixture(scope="module")
def penguins() -> tuple[pd.DataFrame, pd.Series]:
    raw = load_penguins()
    return raw.drop(columns="species"), raw["species"]


def _processing():
    return make_column_transformer(
        (
            make_pipeline(SimpleImputer(strategy="median"), StandardScaler()),
            ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g"],
        ),
        (make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder()), ["island"]),
    )


def _pipe(C: float, **settings) -> mlpipe.LineagePipeline:
    return mlpipe.LineagePipeline(
        [("processing", _processing()), ("model", LogisticRegression(C=C, max_iter=1000))],
        log_model=False,
        **{"n_jobs": 1, **settings},
    )


def _predictions(run_id: str) -> pd.DataFrame:
    path = mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=f"{schema.EVALUATION_DIR}/{schema.PREDICTIONS}"
    )
    logged = json.loads(Path(path).read_text())
    return pd.DataFrame(logged["data"], columns=logged["columns"])


def _cv_metrics(run_id: str) -> dict[str, float]:
    metrics = mlflow.MlflowClient().get_run(run_id).data.metrics
    return {k: v for k, v in metrics.items() if k.startswith(schema.CV_PREFIX)}


def _fold_tags(run_id: str) -> dict[str, str]:
    tags = mlflow.MlflowClient().get_run(run_id).data.tags
    return {k: v for k, v in tags.items() if k.startswith(schema.FOLD_PREFIX)}


def test_a_new_final_step_fits_no_fold_of_the_cached_stage_and_predicts_bit_identically(
    penguins,
):
    X, y = penguins
    cold = _pipe(C=1.0).fit(X, y)
    assert Calls.fits == 6  # the stage, then one per fold
    kept = _fold_tags(cold.run_ids_["processing"])
    assert len(kept) == 5
    assert all(json.loads(v)["digest"].startswith("sha256:") for v in kept.values())

    Calls.fits = Calls.transforms = 0
    warm = _pipe(C=0.5).fit(X, y)
    assert warm.reused_ == ["processing"]
    assert (Calls.fits, Calls.transforms) == (0, 0)

    Calls.fits = 0
    fresh = _pipe(C=0.5, cache=False).fit(X, y)
    assert Calls.fits == 6
    pd.testing.assert_frame_equal(
        _predictions(warm.run_ids_["model"]), _predictions(fresh.run_ids_["model"])
    )
    assert _cv_metrics(warm.run_ids_["model"]) == _cv_metrics(fresh.run_ids_["model"])


def test_other_folds_are_fitted_and_kept_beside_the_first(penguins):
    X, y = penguins
    first = _pipe(C=1.0).fit(X, y)
    Calls.fits = 0
    _pipe(C=0.5, cv=KFold(3, shuffle=True, random_state=0)).fit(X, y)
    assert Calls.fits == 3  # new rows: every fold fitted, the stage itself reused
    assert len(_fold_tags(first.run_ids_["processing"])) == 5 + 3


def test_a_fold_output_that_does_not_match_its_digest_is_fitted_again(penguins, caplog):
    X, y = penguins
    cold = _pipe(C=1.0).fit(X, y)
    run_id = cold.run_ids_["processing"]
    key = next(iter(_fold_tags(run_id)))[len(schema.FOLD_PREFIX) :]
    # Overwrite that fold's file through MLflow with other bytes.
    path = Path(mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=schema.FOLD_DIR))
    (path / f"{key}.pkl").write_bytes(b"not the output")
    mlflow.MlflowClient().log_artifact(run_id, str(path / f"{key}.pkl"), schema.FOLD_DIR)

    Calls.fits = 0
    with caplog.at_level(logging.WARNING, logger="mlpipe"):
        warm = _pipe(C=0.5).fit(X, y)
    assert Calls.fits == 1
    assert "does not match its digest" in caplog.text
    fresh = _pipe(C=0.5, cache=False).fit(X, y)
    pd.testing.assert_frame_equal(
        _predictions(warm.run_ids_["model"]), _predictions(fresh.run_ids_["model"])
    )


def test_a_fold_output_kept_by_an_untrusted_user_is_not_read(penguins, monkeypatch):
    X, y = penguins
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    _pipe(C=1.0).fit(X, y)
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "bob")
    # Bob trusts alice's stage (she fitted it) but keeps his own folds.
    Calls.fits = 0
    _pipe(C=0.5, trusted_users=["alice", "bob"]).fit(X, y)
    assert Calls.fits == 0
    Calls.fits = 0
    _pipe(C=0.25, trusted_users=["alice"]).fit(X, y)
    assert Calls.fits == 0  # the folds alice's fit kept


def test_folds_written_by_someone_else_are_not_trusted(penguins, monkeypatch):
    X, y = penguins
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    first = _pipe(C=1.0, cv=None).fit(X, y)  # alice fits the stage, no folds
    assert _fold_tags(first.run_ids_["processing"]) == {}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "mallory")
    _pipe(C=1.0).fit(X, y)  # mallory's fit keeps its folds on alice's run
    kept = _fold_tags(first.run_ids_["processing"])
    assert {json.loads(v)["user"] for v in kept.values()} == {"mallory"}
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    Calls.fits = 0
    _pipe(C=0.5, trusted_users=["alice"]).fit(X, y)
    assert Calls.fits == 5  # the stage is alice's; mallory's folds are fitted again
    Calls.fits = 0
    _pipe(C=0.25).fit(X, y)  # trusting everyone
    assert Calls.fits == 0


def test_a_fold_not_kept_because_the_store_refused_does_not_fail_the_fit(
    penguins, monkeypatch, caplog
):
    X, y = penguins

    def refuse(*args, **kwargs):
        raise mlflow.exceptions.MlflowException("permission denied")

    real_set_tag = mlflow.MlflowClient.set_tag

    def set_tag(self, run_id, key, value, *args, **kwargs):
        if key.startswith(schema.FOLD_PREFIX):
            refuse()
        return real_set_tag(self, run_id, key, value, *args, **kwargs)

    monkeypatch.setattr(mlflow.MlflowClient, "set_tag", set_tag)
    with caplog.at_level(logging.INFO, logger="mlpipe"):
        cold = _pipe(C=1.0).fit(X, y)
    assert "not kept" in caplog.text
    assert _fold_tags(cold.run_ids_["processing"]) == {}
    # A file without its tag is never read: the folds are fitted again.
    monkeypatch.setattr(mlflow.MlflowClient, "set_tag", real_set_tag)
    Calls.fits = 0
    _pipe(C=0.5).fit(X, y)
    assert Calls.fits == 5


def test_skops_pipelines_keep_no_fold(penguins):
    X, y = penguins
    X = X[["bill_length_mm", "bill_depth_mm"]]
    pipe = mlpipe.LineagePipeline(
        [("processing", SimpleImputer()), ("model", LogisticRegression(max_iter=1000))],
        serializer="skops",
        log_model=False,
    ).fit(X, y)
    assert _fold_tags(pipe.run_ids_["processing"]) == {}


def test_folds_in_parallel_give_what_folds_one_after_another_give(penguins):
    X, y = penguins
    one = _pipe(C=1.0, cache=False).fit(X, y)
    two = _pipe(C=1.0, cache=False, n_jobs=2).fit(X, y)
    pd.testing.assert_frame_equal(
        _predictions(one.run_ids_["model"]), _predictions(two.run_ids_["model"])
    )
    assert _cv_metrics(one.run_ids_["model"]) == _cv_metrics(two.run_ids_["model"])


def test_a_scoring_callable_scores_the_whole_chain_on_raw_rows(penguins):
    X, y = penguins
    seen = []

    def scorer(estimator, X_test, y_test):
        seen.append((type(estimator).__name__, list(X_test.columns)))
        return float(np.mean(estimator.predict(X_test) == y_test))

    pipe = _pipe(C=1.0, scoring=scorer).fit(X, y)
    assert seen and all(s == ("Pipeline", list(X.columns)) for s in seen)
    assert _fold_tags(pipe.run_ids_["processing"]) == {}
    assert "cv_score_mean" in _cv_metrics(pipe.run_ids_["model"])


def test_n_jobs_is_checked_like_any_parameter(penguins):
    X, y = penguins
    with pytest.raises(ValueError, match="n_jobs"):
        _pipe(C=1.0, n_jobs="two").fit(X, y)


def test_folds_kept_by_another_process_are_read(penguins, tmp_path):
    X, y = penguins
    root = Path(__file__).resolve().parent.parent
    script = tmp_path / "cold.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(root)!r})\n"
        "from palmerpenguins import load_penguins\n"
        "from mlpipe import _chain\n"
        "from tests.test_folds import _pipe\n"
        "_chain.OUTPUT_CACHE_SECONDS = 0.0\n"
        "raw = load_penguins()\n"
        "_pipe(C=1.0).fit(raw.drop(columns='species'), raw['species'])\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri()}
    subprocess.run([sys.executable, str(script)], check=True, env=env, timeout=300)
    warm = _pipe(C=0.5).fit(X, y)
    assert warm.reused_ == ["processing"]
    assert (Calls.fits, Calls.transforms) == (0, 0)
