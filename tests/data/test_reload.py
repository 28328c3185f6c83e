"""Loading the same frame or file again is the same data version; a database read is a
new one (issue 14, item 1: an identical rerun of a script logs nothing new)."""

from __future__ import annotations

import sqlite3

import mlflow
import pytest
from palmerpenguins import load_penguins
from sklearn.compose import make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder

import mlpipe
from mlpipe import schema


@pytest.fixture(scope="module")
def raw():
    return load_penguins()[["bill_length_mm", "island", "species"]]


def _load_runs() -> int:
    experiment = mlflow.MlflowClient().get_experiment_by_name(schema.LOAD_STAGE)
    return len(mlflow.MlflowClient().search_runs([experiment.experiment_id]))


def _chain():
    return mlpipe.LineagePipeline(
        [
            (
                "processing",
                make_column_transformer(
                    (SimpleImputer(), ["bill_length_mm"]),
                    (OneHotEncoder(handle_unknown="ignore"), ["island"]),
                ),
            ),
            ("model", LogisticRegression(max_iter=1000)),
        ],
        cv=None,
        log_model=False,
    )


def test_a_rerun_script_logs_nothing_new(raw):
    def script():
        data = mlpipe.load(raw, name="penguins", target="species")
        return data, _chain().fit(data)

    first_data, first = script()
    runs = len(mlflow.search_runs(search_all_experiments=True))
    again_data, again = script()
    assert again_data.run_id == first_data.run_id
    assert again.run_ids_ == first.run_ids_
    assert len(mlflow.search_runs(search_all_experiments=True)) == runs


def test_another_name_target_or_content_is_another_version(raw):
    base = mlpipe.load(raw, name="penguins", target="species")
    assert mlpipe.load(raw, name="birds", target="species").run_id != base.run_id
    assert mlpipe.load(raw, name="penguins").run_id != base.run_id
    changed = raw.assign(bill_length_mm=raw["bill_length_mm"] + 1)
    assert mlpipe.load(changed, name="penguins", target="species").run_id != base.run_id
    assert mlpipe.load(raw, name="penguins", target="species").run_id == base.run_id


def test_a_version_without_snapshot_is_not_reused_when_one_is_asked_for(raw):
    bare = mlpipe.load(raw, name="penguins", snapshot=False)
    full = mlpipe.load(raw, name="penguins")
    assert full.run_id != bare.run_id
    assert mlpipe.Dataset.from_run(full.run_id).fingerprint == full.fingerprint
    assert mlpipe.load(raw, name="penguins", snapshot=False).run_id == full.run_id


def test_a_file_is_its_path_and_content(raw, tmp_path):
    path = tmp_path / "penguins.parquet"
    raw.to_parquet(path)
    first = mlpipe.load(path, target="species")
    assert mlpipe.load(str(path), target="species").run_id == first.run_id
    raw.head(100).to_parquet(path)
    assert mlpipe.load(path, target="species").run_id != first.run_id
    moved = tmp_path / "elsewhere.parquet"
    raw.to_parquet(moved)
    assert mlpipe.load(moved, name="penguins", target="species").run_id != first.run_id


def test_each_database_read_is_a_new_version(raw, tmp_path):
    database = tmp_path / "shop.db"
    with sqlite3.connect(database) as connection:
        raw.to_sql("penguins", connection, index=False)
    url = f"sqlite:///{database}"
    runs = _load_runs() if mlflow.MlflowClient().get_experiment_by_name("load") else 0
    monday = mlpipe.load(url, table="penguins", target="species")
    tuesday = mlpipe.load(url, table="penguins", target="species")
    assert tuesday.run_id != monday.run_id
    assert tuesday.fingerprint == monday.fingerprint
    assert _load_runs() == runs + 2
