"""Stage experiments, keys and parameter formatting."""

from __future__ import annotations

import datetime as dt
import functools
from pathlib import Path

import mlflow
import pytest
from mlflow.exceptions import MlflowException
from sklearn.compose import make_column_selector
from sklearn.preprocessing import FunctionTransformer

from mlpipe import schema
from mlpipe.exceptions import StageError
from mlpipe.tracking import _store as store
from mlpipe.tracking._store import (
    experiment_name,
    format_key,
    format_param,
    get_or_create_experiment,
    key_time,
    safe_type,
    stage_run,
)


def test_experiments_are_found_by_name_and_keep_artifacts_beside_the_store(tracking_store):
    client = mlflow.MlflowClient()
    first = get_or_create_experiment(client, "processing")
    assert get_or_create_experiment(client, "processing") == first
    location = client.get_experiment(first).artifact_location
    db = Path(tracking_store.removeprefix("sqlite:///"))
    assert location == (db.parent / "mlruns" / "processing").as_uri()
    assert experiment_name("model", "credit") == "credit/model"


def test_a_deleted_experiment_is_reported_not_reused():
    client = mlflow.MlflowClient()
    client.delete_experiment(get_or_create_experiment(client, "model"))
    with pytest.raises(StageError, match="'model' exists but is deleted"):
        get_or_create_experiment(client, "model")


def test_keys_are_readable_and_sortable():
    when = dt.datetime(2019, 2, 9, 15, 30, 0, tzinfo=dt.UTC)
    key = format_key("plain", when)
    assert key == "plain@20190209153000"
    assert key_time(key) == 20190209153000
    paris = when.astimezone(dt.timezone(dt.timedelta(hours=1)))
    assert format_key("plain", paris) == key  # always UTC
    assert safe_type("my table; drop") == "my_table_drop"


def test_params_never_show_memory_addresses():
    assert " at 0x" not in format_param(lambda x: x)
    assert format_param(FunctionTransformer(func=abs)) == "FunctionTransformer"
    assert format_param(abs) == "builtins.abs"
    assert " at 0x" not in format_param(make_column_selector(dtype_include="number"))
    assert " at 0x" not in format_param(functools.partial(abs))
    assert format_param([1, "a", None]) == "[1, a, None]"
    assert len(format_param("x" * 10_000)) == 6000


def test_a_stage_run_ends_finished_or_failed():
    client = mlflow.MlflowClient()
    with stage_run(client, stage="model", type_="rf", project=None, upstream=[]) as run:
        run.log(params={f"p{i}": i for i in range(250)}, metrics={"m": 1.0})
    finished = client.get_run(run.run_id)
    assert finished.info.status == "FINISHED"
    assert len(finished.data.params) == 250
    with pytest.raises(ZeroDivisionError):
        with stage_run(client, stage="model", type_="rf", project=None, upstream=[]) as run:
            1 / 0  # noqa: B018
    assert client.get_run(run.run_id).info.status == "FAILED"
    assert client.get_run(run.run_id).data.tags[schema.KEY] != finished.data.tags[schema.KEY]


@pytest.mark.parametrize(
    ("message", "failures", "calls"),
    [
        ("(sqlite3.OperationalError) database is locked", 2, 3),  # busy, then answers
        ("(psycopg.errors.DeadlockDetected) deadlock detected", 9, 4),  # busy for good
        ("Permission denied on experiment", 9, 1),  # not transient: fails at once
    ],
)
def test_transient_store_errors_are_retried(monkeypatch, message, failures, calls):
    monkeypatch.setattr(store, "RETRY_DELAYS", (0.0, 0.0, 0.0))
    made = []
    real = mlflow.MlflowClient.get_experiment_by_name

    def flaky(self, name):
        made.append(name)
        if len(made) <= failures:
            raise MlflowException(message)
        return real(self, name)

    monkeypatch.setattr(mlflow.MlflowClient, "get_experiment_by_name", flaky)
    if failures < calls:
        assert store.client().get_experiment_by_name("Default") is not None
    else:
        with pytest.raises(MlflowException, match=message.split(")")[-1].strip()):
            store.client().get_experiment_by_name("Default")
    assert len(made) == calls


def test_an_older_run_claiming_a_key_a_younger_one_holds_moves_on():
    # Processes race: the younger run may look for holders before the older one has
    # set the key. Whoever sets it second must see the first and move on.
    client = mlflow.MlflowClient()
    experiment = get_or_create_experiment(client, "processing")
    start = int(dt.datetime(2019, 2, 9, 15, 30, tzinfo=dt.UTC).timestamp() * 1000)
    older = client.create_run(experiment, start_time=start)
    younger = client.create_run(experiment, start_time=start + 500)
    assert store._claim_key(client, younger, "plain") == "plain@20190209153000"
    assert store._claim_key(client, older, "plain") == "plain@20190209153001"
