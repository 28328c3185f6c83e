"""Loading real sources: SQLite and PostgreSQL tables and queries, CSV and Parquet files."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.entities import ViewType

import mlpipe
from mlpipe import schema
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.data._sources import redact
from mlpipe.exceptions import NotFoundError, SourceError

from .conftest import penguins_table


def test_sqlite_table_round_trip(sqlite_url, caplog):
    with caplog.at_level(logging.INFO, logger="mlpipe"):
        ds = mlpipe.load(sqlite_url, table="penguins", target="species", chunksize=100)
    assert any("344 rows" in r.getMessage() for r in caplog.records)  # progress, per chunk
    assert ds.key.startswith("penguins@")
    assert ds.frame["penguin_id"].tolist() == list(range(1, 345))  # primary-key order
    assert ds.frame["observed_at"].dtype.kind == "M"
    assert ds.frame["bill_length_mm"].isna().sum() == 2
    run = mlflow.MlflowClient().get_run(ds.run_id)
    assert run.data.params["table"] == "penguins"
    assert run.data.params[schema.SOURCE_PARAM] == f"{sqlite_url}#table=penguins"
    # Chunked reading gives the same data as one read.
    again = mlpipe.load(sqlite_url, table="penguins", target="species")
    assert again.fingerprint == ds.fingerprint and again.key != ds.key


def test_mlflow_can_load_a_sql_dataset_source_again(sqlite_url):
    ds = mlpipe.load(sqlite_url, table="penguins")
    (dataset_input,) = mlflow.MlflowClient().get_run(ds.run_id).inputs.dataset_inputs
    source = mlflow.data.get_source(dataset_input.dataset)
    assert type(source).__name__ == "SQLDatasetSource"
    assert mlpipe.fingerprint(source.load()) == ds.fingerprint


def test_query_with_a_name(sqlite_url):
    ds = mlpipe.load(
        sqlite_url,
        query="SELECT island, count(*) AS n FROM penguins GROUP BY island ORDER BY island",
        name="island_counts",
    )
    assert ds.key.startswith("island_counts@")
    assert ds.frame["n"].tolist() == [168, 124, 52]
    run = mlflow.MlflowClient().get_run(ds.run_id)
    assert run.data.params["query"].startswith("SELECT island")


def test_csv_and_parquet_files(tmp_path):
    frame = penguins_table()
    frame.to_csv(tmp_path / "penguins.csv", index=False)
    frame.to_parquet(tmp_path / "penguins.parquet")
    from_csv = mlpipe.load(tmp_path / "penguins.csv", target="species")
    from_parquet = mlpipe.load(str(tmp_path / "penguins.parquet"), target="species")
    assert from_csv.key.startswith("penguins@") and len(from_csv.frame) == 344
    assert from_parquet.fingerprint == mlpipe.fingerprint(frame)
    (dataset_input,) = mlflow.MlflowClient().get_run(from_parquet.run_id).inputs.dataset_inputs
    assert mlflow.data.get_source(dataset_input.dataset).load().endswith("penguins.parquet")


def test_several_tables_give_several_load_runs_and_the_model_points_at_all(sqlite_url):
    penguins, islands = mlpipe.load(sqlite_url, table=["penguins", "islands"])
    assert penguins.key.startswith("penguins@") and islands.key.startswith("islands@")
    merged = penguins.merge(islands, on="island", how="left", target="species")
    assert merged.run_id is None and len(merged.loads) == 2
    pipe = penguins_pipeline().set_params(cv=None, log_model=False)
    pipe.fit(merged.drop(columns=["penguin_id", "observed_at"]))
    processing = mlflow.MlflowClient().get_run(pipe.run_ids_["processing"])
    assert processing.data.tags[schema.UPSTREAM] == f"{penguins.run_id},{islands.run_id}"
    assert pipe.run_ids_["load"] == f"{penguins.run_id},{islands.run_id}"
    assert len(processing.inputs.dataset_inputs) == 2


def test_several_tables_with_a_bad_target_log_nothing(sqlite_url):
    with pytest.raises(KeyError, match="give the target to Dataset.merge"):
        mlpipe.load(sqlite_url, table=["penguins", "islands"], target="species")
    assert mlflow.MlflowClient().get_experiment_by_name("load") is None


def test_chunk_size_never_changes_dtypes_or_fingerprint(sqlite_url):
    import sqlalchemy as sa

    engine = sa.create_engine(sqlite_url)
    with engine.begin() as connection:
        connection.execute(
            sa.text("UPDATE penguins SET sex = NULL, body_mass_g = NULL WHERE penguin_id <= 150")
        )
    engine.dispose()
    whole = mlpipe.load(sqlite_url, table="penguins", snapshot=False)
    chunked = mlpipe.load(sqlite_url, table="penguins", snapshot=False, chunksize=100)
    assert chunked.frame.dtypes.equals(whole.frame.dtypes)
    assert chunked.fingerprint == whole.fingerprint


def test_snapshots_reload_exactly_what_the_run_saw(sqlite_url):
    ds = mlpipe.load(sqlite_url, table="penguins", target="species")
    back = mlpipe.Dataset.from_run(ds.run_id)
    assert back.fingerprint == ds.fingerprint
    pd.testing.assert_frame_equal(back.frame, ds.frame)
    assert (back.key, back.target, back.name, back.source) == (
        ds.key,
        "species",
        "penguins",
        ds.source,
    )


def test_snapshot_of_a_frame_parquet_cannot_hold():
    frame = pd.DataFrame({"mixed": [1, "a", None, 2.5]})
    ds = mlpipe.load(frame, name="odd")
    run = mlflow.MlflowClient().get_run(ds.run_id)
    assert run.data.tags[schema.SNAPSHOT] == "data/snapshot.pkl"
    assert mlpipe.Dataset.from_run(ds.run_id).fingerprint == ds.fingerprint


def test_find_by_date_and_by_key(sqlite_url):
    first = mlpipe.load(sqlite_url, table="penguins")
    newest = mlpipe.load(sqlite_url, table="penguins")
    day = newest.retrieved_at.date().isoformat()
    assert mlpipe.Dataset.find("penguins", day).run_id == newest.run_id
    assert mlpipe.Dataset.find("penguins").run_id == newest.run_id
    assert mlpipe.Dataset.find(first.key).run_id == first.run_id
    with pytest.raises(NotFoundError, match=f"Loads of 'penguins' exist on: {day}"):
        mlpipe.Dataset.find("penguins", "2019-02-09")
    with pytest.raises(NotFoundError, match="Loaded data: penguins"):
        mlpipe.Dataset.find("customers")
    with pytest.raises(ValueError, match="Expected a date such as '2019-02-09', got 'Feb 9'"):
        mlpipe.Dataset.find("penguins", "Feb 9")


def test_a_failed_load_is_never_found(sqlite_url, monkeypatch):
    import mlpipe.data._dataset as dataset_module

    monkeypatch.setattr(dataset_module, "_log_snapshot", lambda *a: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        mlpipe.load(sqlite_url, table="penguins")
    runs = mlflow.search_runs(
        experiment_names=["load"], output_format="list", run_view_type=ViewType.ALL
    )
    assert [r.info.status for r in runs] == ["FAILED"]
    with pytest.raises(NotFoundError):
        mlpipe.Dataset.find("penguins")


def test_source_errors_are_clear(sqlite_url, tmp_path):
    with pytest.raises(SourceError, match=r"No table 'nope' in .*; its tables are \['islands', "):
        mlpipe.load(sqlite_url, table="nope")
    with pytest.raises(SourceError, match="exactly one of table= or query="):
        mlpipe.load(sqlite_url)
    with pytest.raises(SourceError, match="expected a file ending in .csv"):
        mlpipe.load(tmp_path / "data.xlsx")
    with pytest.raises(SourceError, match="No such file"):
        mlpipe.load(tmp_path / "missing.csv")
    with pytest.raises(SourceError, match="need a database URL"):
        mlpipe.load(tmp_path / "x.csv", table="t")
    assert mlflow.MlflowClient().get_experiment_by_name("load") is None  # nothing logged


def test_redaction():
    assert redact("postgresql+psycopg://ana:pw@db:5432/shop") == (
        "postgresql+psycopg://ana:***@db:5432/shop"
    )
    assert redact("data/file.csv") == "data/file.csv"


def _everything_logged(tmp_path: Path) -> str:
    """Every param, tag, dataset input and artifact file in the store, as one string."""
    client = mlflow.MlflowClient()
    texts = []
    runs = mlflow.search_runs(
        search_all_experiments=True, output_format="list", run_view_type=ViewType.ALL
    )
    for run in runs:
        texts += [json.dumps(run.data.params), json.dumps(run.data.tags), run.info.run_name]
        for i in run.inputs.dataset_inputs:
            texts += [i.dataset.source, i.dataset.schema or "", i.dataset.name]
        local = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, dst_path=str(tmp_path / run.info.run_id)
        )
        for path in Path(local).rglob("*"):
            if path.is_file():
                texts.append(path.read_bytes().decode("latin-1"))
    for experiment in client.search_experiments():
        texts.append(experiment.name)
    return "\n".join(texts)


@pytest.mark.postgres
def test_postgres_round_trip_never_stores_the_password(postgres_url, tmp_path, caplog, monkeypatch):
    url, table = postgres_url.split("#")
    password = mlflow.utils.uri.urllib.parse.urlparse(url).password
    assert password
    with caplog.at_level(logging.DEBUG):
        ds = mlpipe.load(url, table=table, target="species")
        pipe = penguins_pipeline().set_params(cv=None)
        pipe.fit(ds.drop(columns=["penguin_id", "observed_at"]))
    assert ds.frame["penguin_id"].tolist() == list(range(1, 345))
    assert mlpipe.Dataset.from_run(ds.run_id).fingerprint == ds.fingerprint
    assert np.array_equal(ds.frame["year"].to_numpy(), penguins_table()["year"].to_numpy())
    logged = _everything_logged(tmp_path)
    assert url.replace(password, "***") in logged  # the redacted URL is there...
    assert password not in logged  # ...the password nowhere
    assert password not in caplog.text
    # MLflow's record of the source reconnects with the password from the environment.
    (dataset_input,) = mlflow.MlflowClient().get_run(ds.run_id).inputs.dataset_inputs
    monkeypatch.setenv("PGPASSWORD", password)
    source = mlflow.data.get_source(dataset_input.dataset)
    assert mlpipe.fingerprint(source.load()) == ds.fingerprint
    with pytest.raises(SourceError) as error:
        mlpipe.load(url.replace(password, password + "-wrong"), table=table)
    assert password not in str(error.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://ana@db/shop?password=secret", "postgresql://ana@db/shop?password=***"),
        ("postgresql://ana@db/shop?PASSWORD=secret", "postgresql://ana@db/shop?PASSWORD=***"),
        ("postgresql://ana@db/shop?pwd=secret", "postgresql://ana@db/shop?pwd=***"),
        ("mssql+pyodbc://ana@db/shop?Pwd=secret", "mssql+pyodbc://ana@db/shop?Pwd=***"),
        ("mysql://ana@db/shop?passwd=secret", "mysql://ana@db/shop?passwd=***"),
        ("postgresql://ana@db/shop?pass%77ord=secret", "postgresql://ana@db/shop?password=***"),
        ("postgresql://ana@db/shop?password=se%63ret", "postgresql://ana@db/shop?password=***"),
        (
            "postgresql://ana:secret@db/shop?sslmode=require&password=secret&password=other",
            "postgresql://ana:***@db/shop?password=***&password=***&sslmode=require",
        ),
        ("postgresql://ana:se%40cret@db/shop", "postgresql://ana:***@db/shop"),
        ("sqlite:///shop.db?password=secret", "sqlite:///shop.db?password=***"),
        ("postgresql://ana@db/shop?sslmode=require", "postgresql://ana@db/shop?sslmode=require"),
    ],
)
def test_redaction_of_query_string_passwords(url, redacted):
    assert redact(url) == redacted
    assert "secret" not in redact(url) and "se@cret" not in redact(url)


@pytest.mark.parametrize(
    ("url", "text"),
    [
        ("postgresql://ana@db/shop?password=secret", "cannot connect to ...?password=secret"),
        ("postgresql://ana@db/shop?PWD=secret", "bad option PWD=secret, giving up"),
        ("postgresql://ana@db/shop?pass%77ord=s%65cret", "failed for s%65cret and secret"),
        ("postgresql://ana:se%40cret@db/shop", "dsn ana:se%40cret@db, password se@cret"),
        ("postgresql://ana:se%40cret@db/shop", "rendered as se%40cret or se@cret"),
        ("postgresql://ana@db/shop", "libpq said: host=db password='secret' user=ana"),
        ("postgresql://ana@db/shop", "dbname=shop password=secret sslmode=require"),
    ],
)
def test_scrub_removes_every_form_of_a_password(url, text):
    from mlpipe.tracking._store import scrub

    scrubbed = scrub(text, url)
    for form in ("secret", "s%65cret", "se%40cret", "se@cret"):
        assert form not in scrubbed
    assert "***" in scrubbed
    assert scrub(RuntimeError(text), url) == scrubbed


def _exception_texts(error: BaseException | None) -> list[str]:
    """The text of an exception and of every exception chained to it."""
    texts = []
    while error is not None:
        texts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return texts


# SQLite ignores the query-string password, and SQLAlchemy says so.
@pytest.mark.filterwarnings("ignore:Query string argument.*password.*:sqlalchemy.exc.SAWarning")
def test_a_query_string_password_is_stored_nowhere(sqlite_url, tmp_path, caplog):
    url = sqlite_url + "?password=secret"
    with caplog.at_level(logging.DEBUG):
        ds = mlpipe.load(url, table="penguins", target="species")
        by_query = mlpipe.load(url, query="SELECT * FROM islands", name="islands")
    run = mlflow.MlflowClient().get_run(ds.run_id)
    assert run.data.tags[schema.SOURCE] == f"{sqlite_url}?password=***#table=penguins"
    assert run.data.params[schema.SOURCE_PARAM] == f"{sqlite_url}?password=***#table=penguins"
    assert ds.source == f"{sqlite_url}?password=***#table=penguins"
    assert by_query.source == f"{sqlite_url}?password=***#query"
    (dataset_input,) = run.inputs.dataset_inputs
    source = mlflow.data.get_source(dataset_input.dataset)
    assert source.url == sqlite_url  # kept without the password, not with a stand-in
    assert mlpipe.fingerprint(source.load()) == ds.fingerprint
    assert "secret" not in _everything_logged(tmp_path)
    assert "secret" not in caplog.text
    for bad in ({"table": "nope"}, {"query": "SELECT * FROM nope"}, {"query": "DROP TABLE x"}):
        with pytest.raises(SourceError) as error:
            mlpipe.load(url, **bad)
        texts = _exception_texts(error.value)
        assert "password=***" in texts[0]
        assert not any("secret" in text for text in texts), texts


@pytest.mark.postgres
def test_postgres_password_in_the_query_string_is_stored_nowhere(postgres_url, tmp_path, caplog):
    url, table = postgres_url.split("#")
    parts = sa.engine.make_url(url)
    password = parts.password
    assert password
    in_query = sa.engine.URL.create(
        parts.drivername,
        parts.username,
        None,
        parts.host,
        parts.port,
        parts.database,
        {**parts.query, "password": password},
    )
    in_query_url = in_query.render_as_string(hide_password=False)
    assert f"?password={password}" in in_query_url
    with caplog.at_level(logging.DEBUG):
        ds = mlpipe.load(in_query_url, table=table, target="species")
    assert len(ds.frame) == 344
    logged = _everything_logged(tmp_path)
    assert "?password=***#table=" in logged
    assert password not in logged and password not in caplog.text
    wrong = in_query.update_query_dict({"password": password + "-wrong"})
    with pytest.raises(SourceError, match="password authentication failed") as error:
        mlpipe.load(wrong.render_as_string(hide_password=False), table=table)
    texts = _exception_texts(error.value)
    assert not any(password in text for text in texts), texts
