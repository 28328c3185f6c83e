"""collect_garbage against a real SQLite store, checked on disk."""

from __future__ import annotations

import contextlib
import datetime as dt
import sqlite3
import urllib.parse
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.exceptions import StageError
from mlpipe.tracking._gc import GcReport, collect_garbage
from mlpipe.tracking._store import get_or_create_experiment


@pytest.fixture
def raw():
    return load_penguins()


def _fit(X, y=None):
    return penguins_pipeline().set_params(cv=None).fit(X, y)


def _model_id(pipe) -> str:
    return pipe.model_uri_.removeprefix("models:/")


def _root(tracking_store: str) -> Path:
    return Path(tracking_store.removeprefix("sqlite:///")).parent / "mlruns"


def _tree_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _rows(tracking_store: str, table: str, column: str, key: str) -> int:
    """Rows of ``table`` for ``key``, read from the database file itself."""
    db = tracking_store.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(db)) as con:
        query = f"SELECT COUNT(*) FROM {table} WHERE {column} = ?"
        return int(con.execute(query, (key,)).fetchone()[0])


def _paths(uris) -> set[Path]:
    return {Path(urllib.parse.urlsplit(uri).path) for uri in uris}


def _cheap_run_with_model(name: str = "scratch") -> tuple[str, str]:
    """A finished run and a logged model with one file each, without fitting anything."""
    client = mlflow.MlflowClient()
    experiment_id = get_or_create_experiment(client, name)
    run_id = client.create_run(experiment_id).info.run_id
    client.log_text(run_id, "run file", "notes.txt")
    model = mlflow.initialize_logged_model(
        name="m", source_run_id=run_id, experiment_id=experiment_id
    )
    Path("MLmodel").write_text("model file")
    client.log_model_artifact(model.model_id, "MLmodel")
    client.set_terminated(run_id)
    return run_id, model.model_id


def test_a_deleted_model_run_goes_with_its_logged_model_and_files(raw, tracking_store):
    X, y = raw.drop(columns="species"), raw["species"]
    doomed = _fit(X, y)
    other = raw.sample(frac=0.8, random_state=0)
    kept = _fit(other.drop(columns="species"), other["species"])
    assert not set(doomed.run_ids_.values()) & set(kept.run_ids_.values())
    client = mlflow.MlflowClient()
    run_id, model_id = doomed.run_ids_["model"], _model_id(doomed)
    root = _root(tracking_store)
    run_dir, model_dir = root / "model" / run_id, root / "model" / "models" / model_id
    assert (run_dir / "artifacts" / schema.STAGE_ARTIFACT / schema.STAGE_FILE).is_file()
    assert (model_dir / "artifacts" / "MLmodel").is_file()
    client.delete_run(run_id)

    preview = collect_garbage(dry_run=True)

    assert preview.dry_run
    assert preview.run_ids == (run_id,)
    assert preview.logged_model_ids == (model_id,)
    assert preview.kept == {}
    assert _paths(preview.artifact_locations) == {run_dir / "artifacts", model_dir / "artifacts"}
    assert preview.bytes_freed == _tree_size(run_dir) + _tree_size(model_dir) > 0
    assert run_dir.is_dir() and model_dir.is_dir()
    assert client.get_run(run_id).info.lifecycle_stage == "deleted"
    assert client.get_logged_model(model_id).model_id == model_id
    assert _rows(tracking_store, "logged_models", "model_id", model_id) == 1
    assert len(mlflow.pyfunc.load_model(doomed.model_uri_).predict(X.head(3))) == 3

    # Loading the model wrote registered_model_meta into its folder: measure again.
    size = _tree_size(run_dir) + _tree_size(model_dir)
    report = collect_garbage()

    assert not report.dry_run
    assert (report.run_ids, report.logged_model_ids) == ((run_id,), (model_id,))
    assert report.bytes_freed == size
    with pytest.raises(MlflowException, match="not found|does not exist|No Run"):
        client.get_run(run_id)
    with pytest.raises(MlflowException):
        client.get_logged_model(model_id)
    assert _rows(tracking_store, "runs", "run_uuid", run_id) == 0
    assert _rows(tracking_store, "logged_models", "model_id", model_id) == 0
    assert _rows(tracking_store, "logged_model_tags", "model_id", model_id) == 0
    assert not run_dir.exists()
    assert not model_dir.exists()
    assert (root / "model" / "models").is_dir()
    # The rest of the doomed chain was not deleted, so it stays.
    for stage in ("load", "processing"):
        upstream = doomed.run_ids_[stage]
        assert client.get_run(upstream).info.lifecycle_stage == "active"
        assert any((root / stage / upstream / "artifacts").iterdir())
    # The other chain is untouched and its model still loads and predicts.
    for stage, other_run in kept.run_ids_.items():
        assert client.get_run(other_run).info.lifecycle_stage == "active"
        assert any((root / stage / other_run / "artifacts").iterdir())
    assert (root / "model" / "models" / _model_id(kept) / "artifacts" / "MLmodel").is_file()
    served = mlflow.pyfunc.load_model(kept.model_uri_)
    assert list(served.predict(X.head(5))) == list(kept.predict(X.head(5)))
    assert collect_garbage() == GcReport(dry_run=False)


def test_a_run_reused_by_a_live_chain_is_kept_with_everything_it_needs(raw, tracking_store):
    first = mlpipe.load(raw, name="first", target="species")
    second = mlpipe.load(raw, name="second", target="species")
    original = _fit(first)
    reuser = _fit(second)
    assert reuser.reused_ == ["processing", "model"]
    assert reuser.model_uri_ == original.model_uri_
    client = mlflow.MlflowClient()
    for run_id in original.run_ids_.values():
        client.delete_run(run_id)

    report = collect_garbage()

    assert report.run_ids == () and report.logged_model_ids == ()
    assert set(report.kept) == {*original.run_ids_.values(), _model_id(original)}
    assert reuser.run_ids_["model"] in report.kept[original.run_ids_["model"]]
    root = _root(tracking_store)
    model_file = root / "model" / "models" / _model_id(original) / "artifacts" / "MLmodel"
    assert model_file.is_file()
    X = raw.drop(columns="species").head(4)
    assert len(mlflow.pyfunc.load_model(reuser.model_uri_).predict(X)) == 4
    # Whether a later fit reuses the kept stages or refits them, it still works.
    again = _fit(second)
    assert list(again.predict(X)) == list(reuser.predict(X))


def test_a_deleted_run_a_live_run_stands_on_is_kept(raw, tracking_store):
    pipe = _fit(raw.drop(columns="species"), raw["species"])
    client = mlflow.MlflowClient()
    load_run = pipe.run_ids_["load"]
    client.delete_run(load_run)

    report = collect_garbage()

    assert report.run_ids == ()
    assert pipe.run_ids_["processing"] in report.kept[load_run]
    assert client.get_run(load_run).info.lifecycle_stage == "deleted"
    assert any((_root(tracking_store) / "load" / load_run / "artifacts").iterdir())


def test_older_than_counts_from_the_deletion(tracking_store):
    run_id, model_id = _cheap_run_with_model()
    mlflow.MlflowClient().delete_run(run_id)
    run_dir = _root(tracking_store) / "scratch" / run_id

    assert collect_garbage(older_than=dt.timedelta(days=1)) == GcReport(dry_run=False)
    assert (run_dir / "artifacts" / "notes.txt").is_file()

    report = collect_garbage(older_than=dt.timedelta(0))
    assert (report.run_ids, report.logged_model_ids) == ((run_id,), (model_id,))
    assert not run_dir.exists()
    assert not (_root(tracking_store) / "scratch" / "models" / model_id).exists()
    assert _rows(tracking_store, "logged_models", "model_id", model_id) == 0
    with pytest.raises(StageError, match="zero or positive"):
        collect_garbage(older_than=dt.timedelta(seconds=-1))


def test_a_model_already_marked_deleted_goes_with_its_run_and_no_other_does(tracking_store):
    run_id, model_id = _cheap_run_with_model()
    live_run, unrelated = _cheap_run_with_model()
    client = mlflow.MlflowClient()
    client.delete_logged_model(model_id)
    client.delete_logged_model(unrelated)
    client.delete_run(run_id)

    preview = collect_garbage(dry_run=True)
    report = collect_garbage()

    assert preview.logged_model_ids == report.logged_model_ids == (model_id,)
    models = _root(tracking_store) / "scratch" / "models"
    assert not (models / model_id).exists()
    assert _rows(tracking_store, "logged_models", "model_id", model_id) == 0
    # `mlflow gc` would remove this one too, though its run is not deleted.
    assert (models / unrelated / "artifacts" / "MLmodel").is_file()
    assert _rows(tracking_store, "logged_models", "model_id", unrelated) == 1


def test_runs_of_a_deleted_experiment_go_but_the_experiment_stays(tracking_store):
    run_id, model_id = _cheap_run_with_model()
    client = mlflow.MlflowClient()
    experiment_id = client.get_run(run_id).info.experiment_id
    client.delete_experiment(experiment_id)

    report = collect_garbage()

    assert (report.run_ids, report.logged_model_ids) == ((run_id,), (model_id,))
    with pytest.raises(MlflowException):
        client.get_run(run_id)
    with pytest.raises(MlflowException):
        client.get_logged_model(model_id)
    assert client.get_experiment(experiment_id).lifecycle_stage == "deleted"
    assert not any((_root(tracking_store) / "scratch").rglob("*.txt"))


def test_a_registered_model_version_keeps_its_run_and_model(tracking_store):
    run_id, model_id = _cheap_run_with_model()
    client = mlflow.MlflowClient()
    client.create_registered_model("penguins")
    client.create_model_version("penguins", f"models:/{model_id}", run_id=run_id)
    client.delete_run(run_id)

    report = collect_garbage()

    assert report.run_ids == ()
    assert "'penguins' version 1" in report.kept[run_id]
    assert report.kept[model_id] == f"kept {run_id} needs it"
    assert client.get_logged_model(model_id).model_id == model_id


def test_live_runs_and_their_models_are_never_touched(tracking_store):
    run_id, model_id = _cheap_run_with_model()
    report = collect_garbage()
    assert report == GcReport(dry_run=False)
    client = mlflow.MlflowClient()
    assert client.get_run(run_id).info.lifecycle_stage == "active"
    assert client.get_logged_model(model_id).model_id == model_id
    assert (_root(tracking_store) / "scratch" / run_id / "artifacts" / "notes.txt").is_file()


def test_a_tracking_server_needs_its_database_to_remove_anything():
    # Refused before any request: nothing listens on port 9.
    mlflow.set_tracking_uri("http://127.0.0.1:9")
    with pytest.raises(StageError, match="backend_store_uri"):
        collect_garbage()
