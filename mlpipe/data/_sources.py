"""Where data comes from: SQL tables and queries, CSV and Parquet files.

A database URL's password is never written anywhere: :func:`redact` replaces it
before a URL reaches a parameter, tag, dataset source, log line or error message.

A load only reads. A query must be one statement that reads (:func:`check_query`),
and every read goes through a connection the database itself keeps read-only
where it can (:func:`read_only_engine`).
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
import sqlparse  # tells SQL statements apart; MLflow requires it (mlflow-skinny)
from mlflow.data.dataset_source import DatasetSource
from sqlparse import tokens

from mlpipe._progress import bar
from mlpipe.exceptions import SourceError
from mlpipe.tracking._store import PASSWORD_PARAMETERS, redact, scrub

__all__ = [
    "SQLDatasetSource",
    "check_query",
    "read_file",
    "read_only_engine",
    "read_sql",
    "redact",
]

logger = logging.getLogger("mlpipe")

DEFAULT_CHUNKSIZE = 100_000
FILE_READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}
QUERY_KEYWORDS = ("SELECT", "VALUES")  # what a query= statement may start with (or WITH)
# Pragmas whose argument names a table or index to describe rather than a new
# setting: SQLAlchemy reflects a table with them.
_SQLITE_DESCRIBING_PRAGMAS = frozenset(
    {"foreign_key_list", "index_info", "index_list", "index_xinfo", "table_info", "table_xinfo"}
)


def is_database_url(source: str) -> bool:
    """Whether ``source`` parses as a SQLAlchemy URL (``dialect[+driver]://...``)."""
    try:
        sa.engine.make_url(source)
    except sa.exc.ArgumentError:
        return False
    return "://" in source


def check_query(query: Any, url: str) -> None:
    """Raise :class:`~mlpipe.exceptions.SourceError` unless ``query`` is one query that reads.

    A query is a single ``SELECT``, ``WITH … SELECT`` or ``VALUES`` statement
    (without ``SELECT … INTO``, which creates a table). This check is a courtesy that
    names what was wrong before anything runs; the guarantee that a load changes
    nothing is the read-only connection (:func:`read_only_engine`).
    """
    if not isinstance(query, str):
        raise SourceError(f"query= must be a string of SQL; got {type(query).__name__}.")
    kinds = [_kind(statement) for statement in sqlparse.parse(query)]
    kinds = [kind for kind in kinds if kind]
    if len(kinds) == 1 and kinds[0] in QUERY_KEYWORDS:
        return
    if not kinds:
        got = "no statement"
    elif len(kinds) == 1:
        got = f"{'an' if kinds[0][0] in 'AEIOU' else 'a'} {kinds[0]} statement"
    else:
        got = f"{len(kinds)} statements: {'; '.join(kinds)}"
    raise SourceError(
        f"Cannot load query= from {redact(url)}: a load only reads, so it expected a single "
        f"query (SELECT, WITH … SELECT or VALUES), got {got}. Change the database with its "
        "own tools, then load the result with a query or table=."
    )


def _kind(statement: sqlparse.sql.Statement) -> str:
    """The kind of a parsed statement: its first keyword (``""`` if it has none).

    ``WITH`` is named after the statement it leads to (``SELECT`` or, say,
    ``WITH … DELETE``), and a ``SELECT`` that creates a table is ``SELECT … INTO``.
    """
    words = [
        token
        for token in statement.flatten()
        if not token.is_whitespace
        and token.ttype not in tokens.Comment
        and token.ttype not in tokens.Punctuation
    ]
    if not words:
        return ""
    kind = words[0].normalized.upper()
    if kind == "WITH":
        led_to = statement.get_type()
        kind = "SELECT" if led_to == "SELECT" else f"WITH … {led_to}"
    into = any(token.is_keyword and token.normalized == "INTO" for token in statement.tokens)
    return f"{kind} … INTO" if kind in QUERY_KEYWORDS and into else kind


def read_only_engine(url: str) -> sa.Engine:
    """An engine whose connections cannot change the database, where it allows that.

    - SQLite: ``PRAGMA query_only`` refuses every write, and an authorizer refuses
      what that pragma lets through: ``ATTACH`` and ``VACUUM INTO`` (which create
      files) and pragmas that change a setting, ``query_only`` itself included.
    - PostgreSQL: every transaction is ``READ ONLY`` (SQLAlchemy's
      ``postgresql_readonly``), which also stops a data-modifying ``WITH``, a
      ``SELECT … INTO`` and ``nextval``.
    - MySQL and MariaDB: the session's transactions are ``READ ONLY``.
    - Other databases: only the check of :func:`check_query`.

    Raises
    ------
    sqlalchemy.exc.ArgumentError, ImportError
        If ``url`` is not a database URL or its driver is not installed.
    """
    engine = sa.create_engine(url)
    if engine.dialect.name == "sqlite":
        _check_sqlite_file(engine.url)
        sa.event.listen(engine, "connect", _sqlite_read_only)
    elif engine.dialect.name == "postgresql":
        engine.update_execution_options(postgresql_readonly=True)
    elif engine.dialect.name in ("mysql", "mariadb"):
        sa.event.listen(engine, "connect", _session_read_only)
    return engine


def _check_sqlite_file(url: sa.URL) -> None:
    """Refuse a SQLite file that does not exist: connecting would create it, empty."""
    database = url.database or ""
    if database in ("", ":memory:") or database.startswith("file:"):
        return
    if not Path(database).is_file():
        raise sa.exc.ArgumentError(
            f"there is no SQLite database file at {Path(database).resolve()} (expected an "
            "existing file; connecting would have created an empty one)"
        )


def _sqlite_read_only(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA query_only = ON")
    cursor.close()
    if hasattr(dbapi_connection, "set_authorizer"):  # sqlite3 and its API-compatible forks
        dbapi_connection.set_authorizer(_sqlite_authorizer)


def _sqlite_authorizer(
    action: int, name: str | None, argument: str | None, database: str | None, trigger: Any
) -> int:
    if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
        return sqlite3.SQLITE_DENY
    if (
        action == sqlite3.SQLITE_PRAGMA
        and argument is not None
        and (name or "").lower() not in _SQLITE_DESCRIBING_PRAGMAS
    ):
        return sqlite3.SQLITE_DENY
    return sqlite3.SQLITE_OK


def _session_read_only(dbapi_connection: Any, connection_record: Any) -> None:
    # A session characteristic: every transaction of this connection starts READ ONLY.
    cursor = dbapi_connection.cursor()
    cursor.execute("SET SESSION TRANSACTION READ ONLY")
    cursor.close()


def read_sql(
    url: str,
    *,
    table: str | None = None,
    query: str | None = None,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> pd.DataFrame:
    """Read a table or the result of a query, ``chunksize`` rows at a time.

    Results are streamed (a server-side cursor where the driver has one), so the
    driver's whole result set never sits in memory as Python tuples: the peak is
    about twice the final frame (its chunks, then their concatenation), where a
    single ``pandas.read_sql`` peaks near nine times (benchmarks/bench_load.py).
    A table is read in primary-key order when it has one, so the same content gives
    the same rows in the same order, hence the same fingerprint, on every pull; give
    a query an ``ORDER BY`` for the same guarantee.

    A load only reads: ``query`` must be one ``SELECT``, ``WITH … SELECT`` or
    ``VALUES`` statement (:func:`check_query`), and the table or query is read
    through a read-only connection (:func:`read_only_engine`).
    """
    if (table is None) == (query is None):
        raise SourceError(
            f"Give exactly one of table= or query= for {redact(url)}; "
            f"got table={table!r}, query={query!r}."
        )
    if query is not None:
        check_query(query, url)
    what = f"table {table!r}" if table else "query"
    # Each failure is raised after its handler, not inside it: the driver's own
    # exception, whose text may hold the URL as the driver saw it, is not chained.
    try:
        engine = read_only_engine(url)
    except (sa.exc.ArgumentError, ImportError) as error:
        failure = f"Cannot use database {redact(url)}: {scrub(error, url)}"
    else:
        try:
            return _read(engine, table=table, query=query, chunksize=chunksize, what=what, url=url)
        except sa.exc.NoSuchTableError:
            available = sa.inspect(engine).get_table_names()
            failure = f"No table {table!r} in {redact(url)}; its tables are {sorted(available)}."
        except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as error:
            # pandas wraps the database's error in its own; the original reads better.
            cause = (
                error.__cause__ if isinstance(error.__cause__, sa.exc.SQLAlchemyError) else error
            )
            failure = f"Reading {what} from {redact(url)} failed: {scrub(cause, url)}"
        finally:
            engine.dispose()
    raise SourceError(failure)


def _read(
    engine: sa.Engine, *, table: str | None, query: str | None, chunksize: int, what: str, url: str
) -> pd.DataFrame:
    with engine.connect().execution_options(stream_results=True) as connection:
        if table is not None:
            schema, _, name = table.rpartition(".")
            reflected = sa.Table(
                name, sa.MetaData(), schema=schema or None, autoload_with=connection
            )
            statement: Any = sa.select(reflected).order_by(*reflected.primary_key.columns)
        else:
            statement = sa.text(query or "")
        chunks = []
        rows = 0
        with bar(f"Loading {what}", unit=" rows", scale=True) as progress:
            for chunk in pd.read_sql_query(statement, connection, chunksize=chunksize):
                chunks.append(chunk)
                rows += len(chunk)
                progress.update(len(chunk))
                logger.info("Loading %s from %s: %d rows", what, redact(url), rows)
        if not chunks:  # a query with no rows still has columns, but pandas yields no chunk
            return pd.read_sql_query(statement, connection)
    return _concat(chunks)


def _concat(chunks: list[pd.DataFrame]) -> pd.DataFrame:
    """Join chunks into the frame a single read would have given.

    pandas infers each chunk's dtypes on its own: a column that is all NULL in one
    chunk comes out as object there. Such columns are inferred again over all rows,
    so the chunk size never changes dtypes, hence never the fingerprint.
    """
    if len(chunks) == 1:
        return chunks[0]
    frame = pd.concat(chunks, ignore_index=True)
    for column in frame.columns:
        if len({str(chunk[column].dtype) for chunk in chunks}) > 1:
            values = frame[column].astype(object).where(frame[column].notna(), None)
            records = [(v,) for v in values.tolist()]
            frame[column] = pd.DataFrame.from_records(records, columns=[column], coerce_float=True)[
                column
            ]
    return frame


def read_file(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file."""
    path = Path(path)
    reader = FILE_READERS.get(path.suffix.lower())
    if reader is None:
        raise SourceError(
            f"Cannot read {str(path)!r}: expected a file ending in "
            f"{', '.join(FILE_READERS)}, or a database URL such as sqlite:///shop.db."
        )
    if not path.exists():
        raise SourceError(f"No such file: {str(path)!r}.")
    logger.info("Loading %s", path)
    return reader(path)


class SQLDatasetSource(DatasetSource):
    """A table or query in a SQL database, as MLflow records a dataset's source.

    Registered with MLflow, so ``mlflow.data.get_source(run.inputs.dataset_inputs[0]
    .dataset).load()`` reads the data again. The recorded URL carries no password:
    :meth:`load` connects with it as is (enough for SQLite, or for PostgreSQL when
    the password comes from ``PGPASSWORD`` or ``~/.pgpass``), or with ``url=`` given.
    """

    def __init__(self, url: str, *, table: str | None = None, query: str | None = None):
        # Kept without its passwords (not with a "***" stand-in), neither the user
        # info's nor a query parameter's, so that a later load() can take the
        # password from PGPASSWORD or ~/.pgpass.
        parts = sa.engine.make_url(url)
        self.url = sa.engine.URL.create(
            parts.drivername,
            parts.username,
            None,
            parts.host,
            parts.port,
            parts.database,
            {k: v for k, v in parts.query.items() if k.lower() not in PASSWORD_PARAMETERS},
        ).render_as_string(hide_password=False)
        self.table = table
        self.query = query

    @staticmethod
    def _get_source_type() -> str:
        return "mlpipe_sql"

    def load(self, url: str | None = None, **kwargs: Any) -> pd.DataFrame:
        """Read the table or query again; ``url`` may carry the password."""
        return read_sql(url or self.url, table=self.table, query=self.query, **kwargs)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return False  # built explicitly by mlpipe.load, never guessed from a string

    @classmethod
    def _resolve(cls, raw_source: Any) -> SQLDatasetSource:
        raise NotImplementedError("SQLDatasetSource is created by mlpipe.load.")

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "table": self.table, "query": self.query}

    @classmethod
    def from_dict(cls, source_dict: dict[str, Any]) -> SQLDatasetSource:
        return cls(
            source_dict["url"], table=source_dict.get("table"), query=source_dict.get("query")
        )
