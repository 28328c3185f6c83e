"""Batch scoring: a model's predictions on a frame, a file or a SQL table, logged as a stage.

A scoring job is a stage of its own, downstream of the model: :func:`score` logs a
``score`` run whose upstream is the final stage run behind the model, so
:func:`mlpipe.lineage` of the job reaches the data the model was trained on and
:func:`mlpipe.descendants` of the model reaches every job that scored with it.

Files and tables are read ``chunk_rows`` rows at a time and the predictions are written
to Parquet as they come, so memory stays bounded whatever the input's size.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import xxhash

from mlpipe import schema
from mlpipe._compat import quiet
from mlpipe._progress import bar
from mlpipe.data._fingerprint import fingerprint
from mlpipe.exceptions import NotFoundError, SourceError, StageError
from mlpipe.tracking import _store as store
from mlpipe.tracking._models import model_run
from mlpipe.tracking._query import _project_of

__all__ = ["DEFAULT_CHUNK_ROWS", "score"]

logger = logging.getLogger("mlpipe")

DEFAULT_CHUNK_ROWS = 100_000
OUTPUT_SUFFIXES = (".parquet", ".pq")
# What the input fingerprint of several chunks hashes first (see _Fingerprint).
_CHUNKED_FORMAT = b"mlpipe-chunked-fingerprint-1"


def score(
    model: str,
    data: Any,
    *,
    output: str | os.PathLike[str] | None = None,
    table: str | None = None,
    query: str | None = None,
    proba: bool = False,
    keep: Sequence[str] = (),
    overwrite: bool = False,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    spark: str | None = None,
) -> Any:
    """Predict with a chain's raw-input model on raw records, and log the job as a stage run.

    ``data`` is read ``chunk_rows`` rows at a time and each chunk goes through the
    model's ``predict``; with ``output=`` the predictions are written to a Parquet file
    chunk by chunk, so the memory used does not grow with the input. The job is logged
    as a run of stage ``score`` (experiment ``score``, with the model's project
    prefix) whose upstream is the model's final stage run: see :doc:`/scoring`.

    Parameters
    ----------
    model : str
        The model: a final stage's run id, ``runs:/<run id>/model``,
        ``models:/<model id>``, ``models:/<name>@<alias>``, ``models:/<name>/<version>``
        or ``<name>@<alias>``.
    data : pandas.DataFrame, pyspark.sql.DataFrame, str or path
        Raw records: a data frame, a CSV or Parquet file, or a database URL
        (SQLAlchemy, such as ``sqlite:///shop.db``) with ``table`` or ``query``; or a
        Spark DataFrame, scored on its session's cluster.
    output : str or path, optional
        A Parquet file (``.parquet``) to write the predictions to. It is written under
        a temporary name in the same folder and renamed when complete: a failed job
        leaves no file behind.
    table, query : str, optional
        With a database URL: the table to read (in primary-key order), or one ``SELECT``
        query (give it an ``ORDER BY`` for a stable row order).
    proba : bool, default=False
        Also write each class's probability, as columns ``proba_<class>``.
    keep : sequence of str, default=()
        Input columns written next to the predictions (keys, such as an id).
    overwrite : bool, default=False
        Replace an existing ``output``; without it an existing file is refused.
    chunk_rows : int, default=100000
        Rows read and predicted at a time (on Spark: the rows each executor hands
        the model at a time, ``spark.sql.execution.arrow.maxRecordsPerBatch``).
    spark : str, optional
        A Spark master (``local[2]``, ``spark://HOST:7077``, ``yarn``): ``data``, a
        Parquet or CSV path, is read and scored by Spark, with
        :func:`mlflow.pyfunc.spark_udf`, into a Parquet folder at ``output``. A Spark
        DataFrame given as ``data`` is scored on Spark without it. Needs pyspark
        (``pip install 'mlpipe[spark]'``); the executors need only the model's
        requirements, not mlpipe. See :doc:`/scoring`.

    Returns
    -------
    pandas.DataFrame or str
        Without ``output``: the predictions, a column ``prediction`` (and
        ``proba_<class>``) after the ``keep`` columns, with the input's index (a
        file's or table's rows are numbered from 0); the score run's id is in
        ``attrs["run_id"]``. With ``output`` (always, on Spark): the score run's id.

    Raises
    ------
    ValueError
        If the input lacks a column the model needs, a column holds values of
        another type than in training, a file cannot be read (``SourceError``), or
        an argument is out of range. The message names the column and what was
        expected.
    FileExistsError
        If ``output`` exists and ``overwrite`` is false.
    NotFoundError
        If the model reference names nothing (the message lists what exists).

    Examples
    --------
    >>> import mlpipe
    >>> from palmerpenguins import load_penguins
    >>> from mlpipe.cli._demo import penguins_pipeline
    >>> raw = load_penguins()
    >>> pipe = penguins_pipeline().set_params(cv=None).fit(raw.drop(columns="species"),
    ...                                                    raw["species"])
    >>> scored = mlpipe.score(pipe.run_ids_["model"], raw.drop(columns="species"))
    >>> list(scored.columns), len(scored)
    (['prediction'], 344)
    """
    started = time.perf_counter()
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}.")
    keep = [keep] if isinstance(keep, str) else list(keep)
    from mlpipe._score_spark import is_spark_frame

    if spark is not None or is_spark_frame(data):
        from mlpipe._score_spark import score_on_spark

        return score_on_spark(
            model,
            data,
            master=spark,
            output=output,
            table=table,
            query=query,
            proba=proba,
            keep=keep,
            overwrite=overwrite,
            chunk_rows=chunk_rows,
            started=started,
        )
    target = _output_path(output, overwrite) if output is not None else None
    client = store.client()
    uri, final = _final_stage(client, model)
    source = _source(data, table=table, query=query, chunk_rows=chunk_rows)
    with quiet():
        loaded = mlflow.pyfunc.load_model(uri)
    predictor = _Predictor(loaded, proba=proba, keep=keep, described=model)
    chunks = source.chunks()
    first = next(chunks, None)  # a bad input is refused before a run exists
    if first is not None:
        predictor.check(first)
    stream = _chained(first, chunks)
    del first  # held by the stream only, until it is written: one chunk in memory at a time
    project = _project_of(client, final)
    upstream = [
        (
            final.data.tags.get(schema.STAGE, "model"),
            final.data.tags.get(schema.KEY, final.info.run_name or ""),
            final.info.run_id,
        )
    ]
    tags = {schema.SOURCE: source.described, schema.SCORED_MODEL: uri}
    with store.stage_run(
        client,
        stage=schema.SCORE_STAGE,
        type_=source.name,
        project=project,
        upstream=upstream,
        tags=tags,
    ) as run:
        sink: _Sink = _ParquetSink(target, source.keeps_index) if target else _FrameSink()
        prints = _Fingerprint(source.whole_fingerprint)
        rows = 0
        try:
            with bar(
                f"Scoring {source.name}", total=source.rows, unit=" rows", scale=True
            ) as shown:
                for chunk in stream:
                    predictor.check(chunk)
                    sink.write(predictor.predict(chunk), at_row=rows)
                    prints.add(chunk)
                    rows += len(chunk)
                    shown.update(len(chunk))
            result = sink.close()
        except BaseException:
            sink.discard()
            raise
        seconds = time.perf_counter() - started
        done = {
            schema.INPUT_FINGERPRINT: prints.value(),
            **(
                {schema.SCORE_OUTPUT: str(target), schema.SCORE_OUTPUT_DIGEST: result}
                if target
                else {}
            ),
        }
        try:
            run.log(
                params={
                    schema.SOURCE_PARAM: source.described,
                    **source.params,
                    schema.ROWS: rows,
                    schema.CHUNK_ROWS: chunk_rows,
                    schema.PROBA_PARAM: proba,
                    **({schema.KEEP_PARAM: ",".join(keep)} if keep else {}),
                },
                metrics={schema.SCORE_TIME: seconds},
                tags=done,
            )
            if target:
                os.replace(sink.path, target)  # complete: now under its own name
        except BaseException:
            sink.discard()
            raise
        logger.info("Scored %s (%d rows) in %.2f s", run.key, rows, seconds)
    if target:
        return run.run_id
    frame = result
    frame.attrs["run_id"] = run.run_id
    return frame


# --- The model ------------------------------------------------------------------------


def _final_stage(client: mlflow.MlflowClient, reference: str) -> tuple[str, Any]:
    """The model URI to load and the final stage run behind ``reference``."""
    if not isinstance(reference, str) or not reference.strip():
        raise ValueError(
            "model must be a final stage's run id or a model URI (models:/..., runs:/...), "
            f"got {reference!r}."
        )
    text = reference.strip()
    if "@" in text and "://" not in text and not text.startswith("models:/"):
        text = f"models:/{text}"  # NAME@ALIAS, as mlpipe serve takes it
    if text.startswith("models:/"):
        run_id, _ = model_run(text)
        run = _finished(client, run_id, reference)
        # The model the run logged, not the alias: it cannot move while the job runs.
        return run.data.tags.get(schema.MODEL_URI) or text, run
    if text.startswith("runs:/"):
        text = text.removeprefix("runs:/").split("/", 1)[0]
    if "://" in text or ":/" in text:
        raise ValueError(
            f"Cannot score with {reference!r}: expected a final stage's run id, runs:/<run "
            "id>/model, models:/<model id>, models:/<name>@<alias> or models:/<name>/<version>."
        )
    run = _finished(client, text, reference)
    uri = run.data.tags.get(schema.MODEL_URI)
    if not uri:
        raise StageError(
            f"Run {text} has no raw-input model: it is a run of stage "
            f"{run.data.tags.get(schema.STAGE)!r}, not a final stage logged with "
            "log_model=True. Score with a model run (mlpipe runs --stage model)."
        )
    return uri, run


def _finished(client: mlflow.MlflowClient, run_id: str, reference: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        if error.error_code not in (
            "RESOURCE_DOES_NOT_EXIST",
            "NOT_FOUND",
            "INVALID_PARAMETER_VALUE",
        ):
            raise
        raise NotFoundError(
            f"No run {run_id!r} behind model {reference!r} in the tracking store "
            f"{store.redact(mlflow.get_tracking_uri())}."
        ) from None
    if run.info.status != "FINISHED":
        raise StageError(
            f"Run {run_id} is {run.info.status}: it did not finish, so it has no model to "
            "score with. Use a FINISHED model run (mlpipe runs --stage model)."
        )
    return run


class _Predictor:
    """The loaded model, called once per chunk; checks each chunk's columns first."""

    def __init__(self, loaded: Any, *, proba: bool, keep: list[str], described: str):
        self.loaded = loaded
        self.proba = proba
        self.keep = keep
        try:
            raw = loaded.unwrap_python_model()
        except Exception:  # not a python model: no column checks beyond the model's own
            raw = None
        self.dtypes: dict[str, str] = getattr(raw, "dtypes", None) or {}
        pipeline = getattr(raw, "pipeline", None)
        if proba and pipeline is not None and not hasattr(pipeline, "predict_proba"):
            raise ValueError(
                f"proba=True needs a model with predict_proba; {described} is a "
                f"{type(pipeline.steps[-1][1]).__name__}, which has none. Leave it out."
            )
        taken = [
            c for c in keep if c == schema.PREDICTION_COLUMN or c.startswith(schema.PROBA_PREFIX)
        ]
        if taken:
            raise ValueError(
                f"Cannot keep column(s) {taken}: the predictions are written under those "
                f"names ({schema.PREDICTION_COLUMN!r}, {schema.PROBA_PREFIX}<class>)."
            )

    def check(self, chunk: pd.DataFrame) -> None:
        """Raise ``ValueError`` for a column missing, or holding another kind of values."""
        columns = [str(c) for c in chunk.columns]
        missing = [c for c in self.dtypes if c not in columns]
        if missing:
            raise ValueError(
                f"The input lacks column(s) {missing} that the model needs: expected columns "
                f"{list(self.dtypes)}, got {columns}."
            )
        absent = [c for c in self.keep if c not in columns]
        if absent:
            raise ValueError(f"Cannot keep column(s) {absent}: the input's columns are {columns}.")
        for name, expected in self.dtypes.items():
            got = chunk[name].dtype
            problem = _kind_differs(expected, got)
            if problem and chunk[name].notna().any():
                raise ValueError(
                    f"Column {name!r} holds {problem[1]} ({got}), but the model was trained "
                    f"on {problem[0]} there ({expected})."
                )

    def predict(self, chunk: pd.DataFrame) -> pd.DataFrame:
        out = chunk[self.keep].copy() if self.keep else pd.DataFrame(index=chunk.index)
        out[schema.PREDICTION_COLUMN] = np.asarray(self.loaded.predict(chunk))
        if self.proba:
            probabilities = self.loaded.predict(chunk, params={"method": "predict_proba"})
            for name in probabilities.columns:
                out[f"{schema.PROBA_PREFIX}{name}"] = probabilities[name].to_numpy()
        return out


def _kind_differs(expected: str, got: Any) -> tuple[str, str] | None:
    """(what training held, what the input holds) when they cannot be the same values.

    Numbers given as text are left to the model, which parses them and names the first
    value that is not a number; text given as numbers is refused here, since a text
    column's encoder would take numbers as unknown categories without a word.
    """
    try:
        trained = pd.api.types.pandas_dtype(expected)
    except TypeError:
        return None
    text = pd.api.types.is_object_dtype(trained) or pd.api.types.is_string_dtype(trained)
    numeric = pd.api.types.is_numeric_dtype(got) and not pd.api.types.is_bool_dtype(got)
    if (text or isinstance(trained, pd.CategoricalDtype)) and numeric:
        return "text", "numbers"
    moments = pd.api.types.is_datetime64_any_dtype(got) or pd.api.types.is_timedelta64_dtype(got)
    trained_numeric = pd.api.types.is_numeric_dtype(trained) and not pd.api.types.is_bool_dtype(
        trained
    )
    if trained_numeric and moments:
        return "numbers", "dates or durations"
    return None


# --- The input ------------------------------------------------------------------------


@dataclass
class _Source:
    """Where the records come from, and how to read them a chunk at a time."""

    name: str  # the score run's type: the table, the file's stem, "query" or "frame"
    described: str  # the source as logged: a path, or a URL without its password
    params: dict[str, str]
    rows: int | None  # known in advance (a frame, a Parquet file), else None
    keeps_index: bool  # a frame's own index goes to the output; a file's row numbers do not
    chunks: Callable[[], Iterator[pd.DataFrame]]
    whole_fingerprint: Callable[[], str] | None = None


def _source(data: Any, *, table: str | None, query: str | None, chunk_rows: int) -> _Source:
    from mlpipe.data._sources import is_database_url

    if isinstance(data, pd.DataFrame):
        if table is not None or query is not None:
            raise ValueError("table= and query= go with a database URL, not with a data frame.")
        return _Source(
            name="frame",
            described="frame",
            params={},
            rows=len(data),
            keeps_index=True,
            chunks=lambda: (data.iloc[i : i + chunk_rows] for i in range(0, len(data), chunk_rows)),
            whole_fingerprint=lambda: fingerprint(data),
        )
    if not isinstance(data, str | os.PathLike):
        raise ValueError(
            "data must be a pandas DataFrame, a CSV or Parquet file, or a database URL, got "
            f"{type(data).__name__}."
        )
    text = os.fspath(data)
    if is_database_url(text):
        return _sql_source(text, table=table, query=query, chunk_rows=chunk_rows)
    if table is not None or query is not None:
        raise ValueError(
            f"table= and query= go with a database URL such as sqlite:///shop.db, got the "
            f"path {text!r}."
        )
    return _file_source(Path(text), chunk_rows)


def _numbered(chunks: Iterable[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Chunks with their rows numbered from 0 across the whole input."""
    start = 0
    for chunk in chunks:
        chunk.index = pd.RangeIndex(start, start + len(chunk))
        start += len(chunk)
        yield chunk


def _file_source(path: Path, chunk_rows: int) -> _Source:
    import pyarrow as pa
    import pyarrow.parquet as pq

    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SourceError(
            f"Cannot score {str(path)!r}: expected a file ending in .csv, .parquet or .pq, "
            "or a database URL such as sqlite:///shop.db."
        )
    if not path.is_file():
        raise SourceError(f"Cannot score {str(path)!r}: there is no such file.")
    described = str(path.resolve())
    if suffix == ".csv":
        try:
            # Reading the header now: a file that is not text fails before any run.
            reader = pd.read_csv(path, chunksize=chunk_rows)
        except (ValueError, UnicodeDecodeError, pd.errors.ParserError, OSError) as error:
            raise SourceError(f"Cannot read {str(path)!r} as CSV: {_first_line(error)}") from None

        def csv_chunks() -> Iterator[pd.DataFrame]:
            with reader:
                try:
                    yield from _numbered(reader)
                except (ValueError, UnicodeDecodeError, pd.errors.ParserError) as error:
                    raise SourceError(
                        f"Cannot read {str(path)!r} as CSV: {_first_line(error)}"
                    ) from None

        return _Source(path.stem, described, {"file": described}, None, False, csv_chunks)
    try:
        parquet = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as error:
        raise SourceError(f"Cannot read {str(path)!r} as Parquet: {_first_line(error)}") from None

    def parquet_chunks() -> Iterator[pd.DataFrame]:
        try:
            batches = parquet.iter_batches(batch_size=chunk_rows)
            yield from _numbered(pa.Table.from_batches([batch]).to_pandas() for batch in batches)
        except (pa.ArrowException, OSError) as error:
            raise SourceError(
                f"Cannot read {str(path)!r} as Parquet: {_first_line(error)}"
            ) from None
        finally:
            parquet.close()

    rows = parquet.metadata.num_rows
    return _Source(path.stem, described, {"file": described}, rows, False, parquet_chunks)


def _sql_source(url: str, *, table: str | None, query: str | None, chunk_rows: int) -> _Source:
    import sqlalchemy as sa

    from mlpipe.data._sources import check_query, read_only_engine

    shown = store.redact(url)
    if (table is None) == (query is None):
        raise SourceError(
            f"Give exactly one of table= or query= for {shown}; got table={table!r}, "
            f"query={query!r}."
        )
    if query is not None:
        check_query(query, url)
    what = f"table {table!r}" if table else "query"

    def sql_chunks() -> Iterator[pd.DataFrame]:
        # Raised after the handler, not inside it: the driver's own error, whose text
        # may hold the URL with its password, is not chained.
        failure = ""
        try:
            engine = read_only_engine(url)
        except (sa.exc.ArgumentError, ImportError) as error:
            failure = f"Cannot use database {shown}: {store.scrub(error, url)}"
        else:
            try:
                with engine.connect().execution_options(stream_results=True) as connection:
                    if table is not None:
                        owner, _, name = table.rpartition(".")
                        reflected = sa.Table(
                            name, sa.MetaData(), schema=owner or None, autoload_with=connection
                        )
                        primary = reflected.primary_key.columns
                        statement: Any = sa.select(reflected).order_by(*primary)
                    else:
                        statement = sa.text(query or "")
                    yield from _numbered(
                        pd.read_sql_query(statement, connection, chunksize=chunk_rows)
                    )
                    return
            except sa.exc.NoSuchTableError:
                available = sorted(sa.inspect(engine).get_table_names())
                failure = f"No table {table!r} in {shown}; its tables are {available}."
            except (sa.exc.SQLAlchemyError, pd.errors.DatabaseError) as error:
                cause = (
                    error.__cause__
                    if isinstance(error.__cause__, sa.exc.SQLAlchemyError)
                    else error
                )
                failure = f"Reading {what} from {shown} failed: {store.scrub(cause, url)}"
            finally:
                engine.dispose()
        raise SourceError(_first_line(failure))

    params = {"table": table} if table else {"query": query or ""}
    return _Source(table or "query", shown, params, None, False, sql_chunks)


def _first_line(error: BaseException | str) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _chained(first: pd.DataFrame | None, rest: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    if first is None:
        return
    yield first
    del first
    yield from rest


class _Fingerprint:
    """The input's fingerprint, built one chunk at a time.

    A frame given whole, or an input read in one chunk, gets :func:`mlpipe.fingerprint`
    of the frame, as a load run of the same data has it. An input read in several
    chunks gets the XXH3-128 of the chunks' fingerprints in order (each chunk's rows
    numbered as in the whole input): a function of the content and of ``chunk_rows``.
    """

    def __init__(self, whole: Callable[[], str] | None):
        self.whole = whole
        self.first: str | None = None
        self.count = 0
        self.hash = xxhash.xxh3_128(_CHUNKED_FORMAT)

    def add(self, chunk: pd.DataFrame) -> None:
        if self.whole is not None:
            return
        value = fingerprint(chunk)
        self.first = self.first or value
        self.hash.update(bytes.fromhex(value))
        self.count += 1

    def value(self) -> str:
        if self.whole is not None:
            return self.whole()
        if self.first is None:
            return fingerprint(pd.DataFrame())
        return self.first if self.count == 1 else self.hash.hexdigest()


# --- The output -----------------------------------------------------------------------


def _output_path(output: str | os.PathLike[str], overwrite: bool) -> Path:
    path = Path(os.fspath(output))
    if path.suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(
            f"Cannot write predictions to {str(path)!r}: expected a Parquet file ending in "
            f"{' or '.join(OUTPUT_SUFFIXES)}, got {path.suffix or 'no suffix'!r}."
        )
    if path.exists() and not overwrite:
        raise FileExistsError(
            f"Output {str(path)!r} exists: expected a new file. Pass overwrite=True "
            "(--overwrite) to replace it."
        )
    if not path.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write predictions to {str(path)!r}: expected an existing folder, "
            f"{str(path.parent)!r} is none."
        )
    return path.resolve()


class _Sink:
    path: Path

    def write(self, frame: pd.DataFrame, *, at_row: int) -> None:
        raise NotImplementedError

    def close(self) -> Any:
        raise NotImplementedError

    def discard(self) -> None:
        return None


class _FrameSink(_Sink):
    """Predictions kept in memory, joined at the end."""

    def __init__(self) -> None:
        self.parts: list[pd.DataFrame] = []

    def write(self, frame: pd.DataFrame, *, at_row: int) -> None:
        self.parts.append(frame)

    def close(self) -> pd.DataFrame:
        if not self.parts:
            return pd.DataFrame({schema.PREDICTION_COLUMN: []})
        return self.parts[0] if len(self.parts) == 1 else pd.concat(self.parts)


class _ParquetSink(_Sink):
    """Predictions written to a Parquet file under a temporary name, one row group a chunk.

    The schema is the first chunk's: a later chunk is cast to it (a column of integers
    with a missing value, which pandas reads as floats, goes back to integers), and one
    that cannot be cast fails naming the column.
    """

    def __init__(self, target: Path, keeps_index: bool):
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        os.close(handle)
        self.path = Path(name)
        self.keeps_index = keeps_index
        self.writer: Any = None

    def write(self, frame: pd.DataFrame, *, at_row: int) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            table = pa.Table.from_pandas(frame, preserve_index=self.keeps_index)
            self.writer = pq.ParquetWriter(self.path, table.schema)
        else:
            try:
                table = pa.Table.from_pandas(
                    frame, schema=self.writer.schema, preserve_index=self.keeps_index
                )
            except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError) as error:
                raise ValueError(_cast_failure(frame, self.writer.schema, at_row, error)) from None
        self.writer.write_table(table)

    def close(self) -> str:
        if self.writer is None:  # no rows: an empty file that still has a prediction column
            import pyarrow as pa
            import pyarrow.parquet as pq

            pq.write_table(pa.table({schema.PREDICTION_COLUMN: pa.array([], pa.null())}), self.path)
        else:
            self.writer.close()
        digest = hashlib.sha256()
        with open(self.path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        return f"sha256:{digest.hexdigest()}"

    def discard(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # closing a half-written file: it goes anyway
                logger.debug("Closing the partial output %s failed", self.path, exc_info=True)
        self.path.unlink(missing_ok=True)


def _cast_failure(frame: pd.DataFrame, schema_: Any, at_row: int, error: Exception) -> str:
    """Why a later chunk cannot be written with the first chunk's columns, in one line."""
    import pyarrow as pa

    for name in frame.columns:
        if name not in schema_.names:
            continue
        expected = schema_.field(name).type
        try:
            pa.array(frame[name], type=expected, from_pandas=True)
        except (pa.ArrowInvalid, pa.ArrowTypeError, ValueError):
            return (
                f"Column {name!r} holds {frame[name].dtype} values in the rows from {at_row} "
                f"on, which cannot be written as {expected} like the rows before them."
            )
    return f"The rows from {at_row} on cannot be written like the rows before them: " + (
        _first_line(error)
    )
