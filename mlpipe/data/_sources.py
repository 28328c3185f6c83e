"""Where data comes from: SQL tables and queries, CSV and Parquet files.

A database URL's password is never written anywhere: :func:`redact` replaces it
before a URL reaches a parameter, tag, dataset source, log line or error message.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd
import sqlalchemy as sa
from mlflow.data.dataset_source import DatasetSource

from mlpipe.exceptions import SourceError
from mlpipe.tracking._store import redact, scrub

__all__ = ["SQLDatasetSource", "read_file", "read_sql", "redact"]

logger = logging.getLogger("mlpipe")

DEFAULT_CHUNKSIZE = 100_000
FILE_READERS = {".csv": pd.read_csv, ".parquet": pd.read_parquet, ".pq": pd.read_parquet}


def is_database_url(source: str) -> bool:
    """Whether ``source`` parses as a SQLAlchemy URL (``dialect[+driver]://...``)."""
    try:
        sa.engine.make_url(source)
    except sa.exc.ArgumentError:
        return False
    return "://" in source


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
    """
    if (table is None) == (query is None):
        raise SourceError(
            f"Give exactly one of table= or query= for {redact(url)}; "
            f"got table={table!r}, query={query!r}."
        )
    what = f"table {table!r}" if table else "query"
    try:
        engine = sa.create_engine(url)
    except (sa.exc.ArgumentError, ImportError) as error:
        raise SourceError(f"Cannot use database {redact(url)}: {scrub(error, url)}") from None
    try:
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
            for chunk in pd.read_sql_query(statement, connection, chunksize=chunksize):
                chunks.append(chunk)
                rows += len(chunk)
                logger.info("Loading %s from %s: %d rows", what, redact(url), rows)
    except sa.exc.NoSuchTableError:
        available = sa.inspect(engine).get_table_names()
        raise SourceError(
            f"No table {table!r} in {redact(url)}; its tables are {sorted(available)}."
        ) from None
    except sa.exc.SQLAlchemyError as error:
        raise SourceError(
            f"Reading {what} from {redact(url)} failed: {scrub(error, url)}"
        ) from None
    finally:
        engine.dispose()
    if not chunks:  # a query with no rows still has columns, but pandas yields no chunk
        with engine.connect() as connection:
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
        # Kept without its password (not with a "***" stand-in), so that a later
        # load() can take the password from PGPASSWORD or ~/.pgpass.
        parts = sa.engine.make_url(url)
        self.url = sa.engine.URL.create(
            parts.drivername,
            parts.username,
            None,
            parts.host,
            parts.port,
            parts.database,
            parts.query,
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
