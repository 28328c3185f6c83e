"""The stage cache's lookup finds the same run through MLflow's SQL store directly as
through search_runs, and never one deleted or ended since it was found."""

from __future__ import annotations

import mlflow
import pytest
from mlflow.entities import Metric, Param

from mlpipe import _cache, schema
from mlpipe._compat import RunQuery
from mlpipe.tracking import _store
from tests._server import remove_run_for_good

KEY = "ab" * 16


def _run(client, experiment_id, start, *, status="FINISHED", key=KEY, **extra):
    tags = {
        schema.KEY: f"plain@{start}",
        schema.STAGE: "processing",
        schema.TYPE: "plain",
        schema.SERIALIZER: "cloudpickle",
        schema.STAGE_DIGEST: "sha256:00",
        schema.SCHEMA_VERSION_TAG: schema.SCHEMA_VERSION,
        schema.CACHE_KEY: key,
        schema.cache_key_tag(key): "processing",
        **extra,
    }
    run_id = client.create_run(experiment_id, start_time=start, tags=tags).info.run_id
    client.log_batch(run_id, metrics=[Metric("m", 1.0, 0, 0)], params=[Param("p", "1")])
    client.set_terminated(run_id, status=status, end_time=start + 1)
    return run_id


@pytest.fixture
def runs():
    client = mlflow.MlflowClient()
    experiment_id = client.create_experiment("processing")
    ids = {
        "old": _run(client, experiment_id, 1_000),
        "reusable": _run(client, experiment_id, 2_000),
        "incomplete": _run(client, experiment_id, 3_000, **{schema.STAGE_DIGEST: ""}),
        "failed": _run(client, experiment_id, 4_000, status="FAILED"),
        "deleted": _run(client, experiment_id, 5_000),
        "other key": _run(client, experiment_id, 6_000, key="cd" * 16),
    }
    client.delete_run(ids["deleted"])
    return client, experiment_id, ids


def _lookup(client, experiment_id, key=KEY):
    return _cache.lookup(client, experiment_id, key, need_model=False, stage="processing")


def test_lookup_is_the_same_run_with_or_without_sql_reads(runs, monkeypatch):
    client, experiment_id, ids = runs
    found = _lookup(client, experiment_id)
    assert found is not None and found.info.run_id == ids["reusable"]
    # The whole run, as search_runs or get_run give it.
    full = client.get_run(ids["reusable"])
    assert found.data.params == full.data.params == {"p": "1"}
    assert found.data.tags == full.data.tags and found.data.metrics == full.data.metrics
    assert _lookup(client, experiment_id, "ef" * 16) is None

    monkeypatch.setattr(_store, "search_runs_sql", lambda *args, **kwargs: None)
    searched = _lookup(client, experiment_id)
    assert searched is not None and searched.info.run_id == ids["reusable"]
    assert searched.data.to_dictionary() == found.data.to_dictionary()
    assert _lookup(client, experiment_id, "ef" * 16) is None


def test_lookup_skips_runs_deleted_or_ended_after_they_were_found(runs, monkeypatch):
    client, experiment_id, ids = runs
    if _store.search_runs_sql(client, _cache_query(experiment_id)) is None:
        pytest.skip("only MLflow's SQL store is read directly")
    real = _store.search_runs_sql
    gone = _run(client, experiment_id, 7_000)
    ended = _run(client, experiment_id, 8_000)

    def found_then_changed(*args, **kwargs):
        found = real(*args, **kwargs)
        remove_run_for_good(gone)  # deleted, then removed for good, between the two reads
        client.delete_run(ended)  # deleted only
        return found

    monkeypatch.setattr(_store, "search_runs_sql", found_then_changed)
    found = _lookup(client, experiment_id)
    assert found is not None and found.info.run_id == ids["reusable"]


def _cache_query(experiment_id):
    return RunQuery(experiment_ids=(experiment_id,), max_results=1)


def test_runs_are_found_by_the_tag_named_after_their_key(runs, monkeypatch):
    # Only the tag that holds the key in its name is searched (an index lookup): a run
    # with the key in mlpipe.cache_key alone, as no fit of this version writes, is not
    # found, with MLflow's SQL store read directly or through search_runs.
    client, experiment_id, _ = runs
    key = "ef" * 16
    bare = _run(client, experiment_id, 9_000, key=key)
    client.delete_tag(bare, schema.cache_key_tag(key))
    assert _lookup(client, experiment_id, key) is None
    monkeypatch.setattr(_store, "search_runs_sql", lambda *args, **kwargs: None)
    assert _lookup(client, experiment_id, key) is None
    client.set_tag(bare, schema.cache_key_tag(key), "processing")
    found = _lookup(client, experiment_id, key)
    assert found is not None and found.info.run_id == bare


def test_a_fitted_stage_run_carries_its_key_in_a_tag_name():
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    import mlpipe

    X, y = np.arange(40.0).reshape(20, 2), np.array([0, 1] * 10)
    steps = [("processing", StandardScaler()), ("model", LogisticRegression())]
    pipe = mlpipe.LineagePipeline(steps, cv=None, log_model=False).fit(X, y)
    client = mlflow.MlflowClient()
    for stage in ("processing", "model"):
        tags = client.get_run(pipe.run_ids_[stage]).data.tags
        assert tags[schema.cache_key_tag(tags[schema.CACHE_KEY])] == stage
    again = mlpipe.LineagePipeline(steps, cv=None, log_model=False).fit(X, y)
    assert again.reused_ == ["processing", "model"]
