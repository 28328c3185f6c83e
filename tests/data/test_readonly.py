"""Loads only read: queries that are not queries are refused, and the connection is read-only."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.entities import ViewType

import mlpipe
from mlpipe.data._sources import read_only_engine
from mlpipe.exceptions import SourceError


def _contents(url: str, tables: list[str] | None = None) -> dict[str, pd.DataFrame]:
    """The tables (default: every table) of the database and their rows, in a stable order."""
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            names = tables or sorted(sa.inspect(connection).get_table_names())
            return {
                name: pd.read_sql_query(
                    sa.text(f'SELECT * FROM "{name}" ORDER BY 1, 2'), connection
                )
                for name in names
            }
    finally:
        engine.dispose()


def _assert_unchanged(url: str, before: dict[str, pd.DataFrame]) -> None:
    after = _contents(url, None if url.startswith("sqlite") else list(before))
    assert sorted(after) == sorted(before)
    for name, frame in before.items():
        pd.testing.assert_frame_equal(after[name], frame)


def _no_load_run() -> bool:
    experiment = mlflow.MlflowClient().get_experiment_by_name("load")
    if experiment is None:
        return True
    runs = mlflow.search_runs(
        experiment_ids=[experiment.experiment_id],
        output_format="list",
        run_view_type=ViewType.ALL,
    )
    return runs == []


REFUSED = [
    ("DROP TABLE islands", "a DROP statement"),
    ("drop table islands;", "a DROP statement"),
    ("CREATE TABLE copy AS SELECT * FROM islands", "a CREATE statement"),
    ("ATTACH DATABASE 'other.db' AS other", "an ATTACH statement"),
    ("UPDATE islands SET area_km2 = 0 RETURNING *", "an UPDATE statement"),
    ("DELETE FROM islands RETURNING *", "a DELETE statement"),
    ("INSERT INTO islands VALUES ('Anvers', 9.9) RETURNING *", "an INSERT statement"),
    ("WITH x AS (SELECT 1) DELETE FROM islands RETURNING *", "a WITH … DELETE statement"),
    ("PRAGMA query_only = OFF", "a PRAGMA statement"),
    ("VACUUM INTO 'copy.db'", "a VACUUM statement"),
    ("SELECT * INTO copy FROM islands", "a SELECT … INTO statement"),
    ("SELECT * FROM islands; DROP TABLE islands", "2 statements: SELECT; DROP"),
    ("-- nothing but a comment", "no statement"),
    ("", "no statement"),
]


@pytest.mark.parametrize(("query", "got"), REFUSED)
def test_statements_that_are_not_queries_are_refused(sqlite_url, query, got):
    before = _contents(sqlite_url)
    with pytest.raises(SourceError) as error:
        mlpipe.load(sqlite_url, query=query, name="bad")
    message = str(error.value)
    assert "expected a single query (SELECT, WITH … SELECT or VALUES)" in message
    assert f"got {got}" in message
    _assert_unchanged(sqlite_url, before)
    assert _no_load_run()
    assert not Path("other.db").exists() and not Path("copy.db").exists()


def test_a_query_that_is_not_a_string_is_refused(sqlite_url):
    with pytest.raises(SourceError, match="query= must be a string of SQL; got int"):
        mlpipe.load(sqlite_url, query=42, name="bad")
    assert _no_load_run()


@pytest.mark.parametrize(
    "query",
    [
        "WITH big AS (SELECT * FROM islands WHERE area_km2 > 1) SELECT island FROM big",
        "  -- the islands\n  SELECT island FROM islands WHERE area_km2 > 1;  ",
        "SELECT island FROM islands WHERE island = 'Biscoe'"
        " UNION SELECT island FROM islands WHERE island = 'Dream'",
        "VALUES ('Biscoe'), ('Dream')",
    ],
)
def test_queries_in_any_read_form_are_accepted(sqlite_url, query):
    ds = mlpipe.load(sqlite_url, query=query, name="big_islands")
    assert sorted(ds.frame.iloc[:, 0]) == ["Biscoe", "Dream"]


@pytest.mark.parametrize(
    "statement",
    [
        "DROP TABLE islands",
        "INSERT INTO islands VALUES ('Anvers', 9.9)",
        "CREATE TEMP TABLE scratch (x INTEGER)",
        "ATTACH DATABASE 'other.db' AS other",
        "VACUUM INTO 'copy.db'",
        "PRAGMA query_only = OFF",
        "PRAGMA journal_mode = DELETE",
    ],
)
def test_the_sqlite_connection_itself_is_read_only(sqlite_url, statement):
    # The up-front check is a courtesy; this is the guarantee.
    before = _contents(sqlite_url)
    engine = read_only_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            with pytest.raises(sa.exc.DatabaseError):
                connection.exec_driver_sql(statement)
            # Still read-only after the refusal, and still able to read.
            with pytest.raises(sa.exc.DatabaseError):
                connection.exec_driver_sql("DELETE FROM islands")
            assert connection.exec_driver_sql("SELECT count(*) FROM islands").scalar() == 3
            assert connection.exec_driver_sql("PRAGMA query_only").scalar() == 1
    finally:
        engine.dispose()
    _assert_unchanged(sqlite_url, before)
    assert not Path("other.db").exists() and not Path("copy.db").exists()


def test_a_table_is_read_through_the_read_only_connection(sqlite_url):
    engine = read_only_engine(sqlite_url)
    try:
        with engine.connect() as connection:
            table = sa.Table("islands", sa.MetaData(), autoload_with=connection)
            assert len(connection.execute(sa.select(table)).all()) == 3
            with pytest.raises(sa.exc.DatabaseError):
                connection.execute(table.delete())
    finally:
        engine.dispose()
    assert len(mlpipe.load(sqlite_url, table="islands").frame) == 3


@pytest.mark.postgres
def test_postgres_loads_are_read_only(postgres_url):
    url, table = postgres_url.split("#")
    sequence = f"{table}_seq"
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        connection.exec_driver_sql(f'CREATE SEQUENCE "{sequence}"')
    engine.dispose()
    try:
        _check_postgres_is_read_only(url, table, sequence)
    finally:
        with engine.begin() as connection:
            connection.exec_driver_sql(f'DROP SEQUENCE "{sequence}"')
            connection.exec_driver_sql(f'DROP TABLE IF EXISTS "{table}_copy"')
        engine.dispose()


def _check_postgres_is_read_only(url: str, table: str, sequence: str) -> None:
    # Sequences, like tables, are relations: a sequence's state is one row.
    before = _contents(url, [table, sequence])
    # A data-modifying CTE passes the up-front check; the database stops it (here
    # the streaming cursor already does; below, READ ONLY does too).
    deleting = f'WITH x AS (DELETE FROM "{table}" RETURNING *) SELECT * FROM x'
    with pytest.raises(SourceError, match="Reading query from .*:\\*\\*\\*@.* failed") as error:
        mlpipe.load(url, query=deleting)
    assert "ci-only-pw" not in str(error.value)
    with pytest.raises(SourceError, match="read-only transaction"):
        mlpipe.load(url, query=f"SELECT nextval('\"{sequence}\"')", name="seq")
    with pytest.raises(SourceError, match="got a SELECT … INTO statement"):
        mlpipe.load(url, query=f'SELECT * INTO "{table}_copy" FROM "{table}"')
    _assert_unchanged(url, before)
    assert _no_load_run()
    engine = read_only_engine(url)
    try:
        with engine.connect() as connection:
            for statement in (
                deleting,
                f'DROP TABLE "{table}"',
                f'CREATE TABLE "{table}_copy" AS SELECT * FROM "{table}"',
                f'UPDATE "{table}" SET year = 0 RETURNING *',
                f'SELECT * INTO "{table}_copy" FROM "{table}"',
            ):
                with pytest.raises(sa.exc.DatabaseError, match="read-only transaction"):
                    connection.exec_driver_sql(statement)
                connection.rollback()
    finally:
        engine.dispose()
    _assert_unchanged(url, before)
    both = mlpipe.load(url, query="(SELECT 1 AS n) UNION (SELECT 2) ORDER BY n", name="both")
    assert both.frame["n"].tolist() == [1, 2]
    assert len(mlpipe.load(url, table=table).frame) == 344
