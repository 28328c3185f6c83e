"""Batch scoring on Spark: :func:`mlpipe.score` of a Spark DataFrame, or of a file read by Spark.

The raw-input model goes to the executors as it is, through
:func:`mlflow.pyfunc.spark_udf`: they need the model's own requirements (MLflow,
scikit-learn, pandas, pyarrow), not mlpipe. pyspark is imported here only, when a job
asks for Spark (``pip install 'mlpipe[spark]'``).

The predictions are written as a Parquet folder under a temporary name next to the
output, renamed when complete, through the Hadoop file system of the output's path, so
the same code writes to a local folder, HDFS or an object store. The row count and the
input's fingerprint are gathered while the predictions are written (an observed
aggregate of the same job), not by a second pass over the input.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import xxhash

from mlpipe import schema
from mlpipe._compat import quiet
from mlpipe._score import OUTPUT_SUFFIXES, _final_stage, _first_line, _kind_differs, _Predictor
from mlpipe.exceptions import SourceError
from mlpipe.tracking import _store as store
from mlpipe.tracking._query import _project_of

__all__ = ["is_spark_frame", "score_on_spark"]

logger = logging.getLogger("mlpipe")

INSTALL_HINT = "pip install 'mlpipe[spark]' (pyspark, and Java 17 or later)"
# Rows of the input predicted on the driver before the job starts: a bad input is
# refused in one line, before any run exists, as the one-machine path refuses it.
SAMPLE_ROWS = 1000
# What the fingerprint of a Spark input hashes first (see _fingerprint).
_SPARK_FORMAT = b"mlpipe-spark-fingerprint-1"


def is_spark_frame(data: Any) -> bool:
    """Whether ``data`` is a pyspark DataFrame, without importing pyspark."""
    return any(
        cls.__name__ == "DataFrame" and cls.__module__.startswith("pyspark.sql")
        for cls in type(data).__mro__
    )


def redact_master(master: str) -> str:
    """A Spark master URL with the password of its user info, if any, replaced by ``***``.

    Examples
    --------
    >>> redact_master("spark://ana:s3cret@head:7077")
    'spark://ana:***@head:7077'
    >>> redact_master("k8s://https://ana:s3cret@api.example:443")
    'k8s://https://ana:***@api.example:443'
    >>> redact_master("spark://head:7077?password=s3cret")
    'spark://head:7077?password=***'
    >>> redact_master("local[2]")
    'local[2]'
    """
    hidden = re.sub(r"(//[^/:@\s]*):[^/@\s]*@", r"\1:***@", master)
    return re.sub(r"(?i)([?&;](?:password|pwd|passwd)=)[^&#;\s]*", r"\1***", hidden)


def _pyspark() -> Any:
    try:
        import pyspark.sql
    except ImportError:
        raise ImportError(
            f"Scoring on Spark needs pyspark, which is not installed: {INSTALL_HINT}."
        ) from None
    return pyspark.sql


def score_on_spark(
    model: str,
    data: Any,
    *,
    master: str | None,
    output: str | os.PathLike[str] | None,
    table: str | None,
    query: str | None,
    proba: bool,
    keep: list[str],
    overwrite: bool,
    chunk_rows: int,
    started: float,
) -> str:
    """:func:`mlpipe.score` on Spark; returns the score run's id."""
    sql = _pyspark()
    if output is None:
        raise ValueError(
            "Scoring on Spark writes the predictions to Parquet: give output= (--output), "
            "a path ending in .parquet; got none."
        )
    if table is not None or query is not None:
        raise ValueError(
            "table= and query= are read on one machine; on Spark give a Parquet or CSV path "
            "or a Spark DataFrame."
        )
    spark_frame = is_spark_frame(data)
    if spark_frame and master is not None:
        raise ValueError(
            "A Spark DataFrame is scored in its own session "
            f"({data.sparkSession.sparkContext.master}); leave spark= out, got spark={master!r}."
        )
    if not spark_frame and not isinstance(data, str | os.PathLike):
        raise ValueError(
            "On Spark, data must be a Spark DataFrame or the path of a Parquet or CSV file, "
            f"got {type(data).__name__}."
        )
    with _pyspark_on_pandas_3():
        return _score(sql, model, data, master, output, proba, keep, overwrite, chunk_rows, started)


@contextlib.contextmanager
def _pyspark_on_pandas_3() -> Iterator[None]:
    """Inside the block, pyspark's warnings about pandas 3 are not shown.

    pyspark 4.0 warns on every conversion that it does not yet fully support pandas 3,
    and its Arrow conversion passes pandas 3 a deprecated ``copy=`` keyword; the
    conversions mlpipe uses give the same values as on one machine (tests/test_spark.py),
    and under ``-W error`` the second warning would make pyspark give up a conversion.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "PySpark does not yet fully support pandas")
        warnings.filterwarnings("ignore", "The copy keyword is deprecated")
        yield


def _score(
    sql: Any,
    model: str,
    data: Any,
    master: str | None,
    output: str | os.PathLike[str],
    proba: bool,
    keep: list[str],
    overwrite: bool,
    chunk_rows: int,
    started: float,
) -> str:
    spark_frame = is_spark_frame(data)
    client = store.client()
    uri, final = _final_stage(client, model)
    if spark_frame:
        session, frame, name, described = data.sparkSession, data, "frame", "spark dataframe"
    else:
        session = _session(sql, master or "")
        frame, name, described = _read(session, os.fspath(data))
    target, hadoop = _output(session, os.fspath(output), overwrite)
    with quiet():
        loaded = mlflow.pyfunc.load_model(uri)
    predictor = _Predictor(loaded, proba=proba, keep=keep, described=model)
    _check_types(predictor, frame)
    sample = frame.limit(SAMPLE_ROWS).toPandas()
    predictor.check(sample)
    predicted = predictor.predict(sample)  # the model's own error, in one line, before a run
    columns = list(predictor.dtypes) or list(frame.columns)
    result_type = _spark_type(predicted[schema.PREDICTION_COLUMN], _classes(loaded))
    classes = [c for c in predicted.columns if c.startswith(schema.PROBA_PREFIX)]

    functions = sql.functions
    observation = sql.Observation("mlpipe_score")
    hashed = functions.xxhash64(*[functions.col(c) for c in frame.columns])
    # The model's work is in Python, one worker per task: a small file read as one
    # partition would keep all but one core idle.
    parallelism = session.sparkContext.defaultParallelism
    spread = frame.repartition(parallelism) if _partitions(frame) < parallelism else frame
    observed = spread.observe(
        observation,
        functions.count(functions.lit(1)).alias("rows"),
        functions.sum(hashed.cast("decimal(38,0)")).alias("digest"),
    )
    with quiet():
        predict = mlflow.pyfunc.spark_udf(
            session, uri, result_type=result_type, env_manager="local"
        )
        features = functions.struct(*[functions.col(c) for c in columns])
        selected = [functions.col(c) for c in keep]
        selected.append(predict(features).alias(schema.PREDICTION_COLUMN))
        if proba:
            fields = ", ".join(f"`{c.removeprefix(schema.PROBA_PREFIX)}` double" for c in classes)
            probabilities = mlflow.pyfunc.spark_udf(
                session,
                uri,
                result_type=f"struct<{fields}>",
                env_manager="local",
                params={"method": "predict_proba"},
            )
            both = probabilities(features)
            selected += [both[c.removeprefix(schema.PROBA_PREFIX)].alias(c) for c in classes]
    master_used = redact_master(session.sparkContext.master)
    project = _project_of(client, final)
    upstream = [
        (
            final.data.tags.get(schema.STAGE, "model"),
            final.data.tags.get(schema.KEY, final.info.run_name or ""),
            final.info.run_id,
        )
    ]
    tags = {schema.SOURCE: described, schema.SCORED_MODEL: uri, schema.SPARK_MASTER: master_used}
    temporary = hadoop.sibling(f".{hadoop.name}.{uuid.uuid4().hex}.tmp")
    with store.stage_run(
        client,
        stage=schema.SCORE_STAGE,
        type_=name,
        project=project,
        upstream=upstream,
        tags=tags,
    ) as run:
        try:
            try:
                with _batches_of(session, chunk_rows):
                    observed.select(*selected).write.parquet(temporary.text)
            except Exception as error:  # Spark's own, with the executor's traceback
                raise ValueError(f"Scoring on Spark failed: {_cause(error)}") from None
            gathered = observation.get
            rows = int(gathered["rows"])
            digest = None if target is None else _digest(Path(temporary.text))
            run.log(
                params={
                    schema.SOURCE_PARAM: described,
                    **({} if spark_frame else {"file": described}),
                    schema.ROWS: rows,
                    schema.CHUNK_ROWS: chunk_rows,
                    schema.PROBA_PARAM: proba,
                    **({schema.KEEP_PARAM: ",".join(keep)} if keep else {}),
                },
                metrics={schema.SCORE_TIME: time.perf_counter() - started},
                tags={
                    schema.INPUT_FINGERPRINT: _fingerprint(frame, rows, gathered["digest"]),
                    schema.SCORE_OUTPUT: hadoop.text,
                    **({schema.SCORE_OUTPUT_DIGEST: digest} if digest else {}),
                },
            )
            hadoop.replace_with(temporary, overwrite)
        except BaseException:
            temporary.delete()
            raise
        logger.info("Scored %s (%d rows) on Spark %s", run.key, rows, master_used)
    return run.run_id


# --- Spark ----------------------------------------------------------------------------

_BATCH = "spark.sql.execution.arrow.maxRecordsPerBatch"


@contextlib.contextmanager
def _batches_of(session: Any, rows: int) -> Iterator[None]:
    """Inside the block, Spark hands the model ``rows`` rows at a time, then as before."""
    previous = session.conf.get(_BATCH, None)
    session.conf.set(_BATCH, str(rows))
    try:
        yield
    finally:
        if previous is None:
            session.conf.unset(_BATCH)
        else:
            session.conf.set(_BATCH, previous)


def _partitions(frame: Any) -> int:
    try:
        return int(frame.rdd.getNumPartitions())
    except Exception:  # Spark Connect has no RDDs: leave the frame as it is
        return sys.maxsize


def _session(sql: Any, master: str) -> Any:
    """The active Spark session, or one started on ``master``."""
    if not isinstance(master, str) or not master.strip():
        raise ValueError(
            "spark= must name a Spark master such as local[2], spark://HOST:7077 or yarn, "
            f"got {master!r}."
        )
    if master.startswith("local") and "PYSPARK_PYTHON" not in os.environ:
        # Local executors run this interpreter, not whatever `python3` is on PATH:
        # pyspark reads only this variable (a cluster's executors are set up there).
        os.environ["PYSPARK_PYTHON"] = sys.executable
    return sql.SparkSession.builder.master(master).appName("mlpipe score").getOrCreate()


def _read(session: Any, path: str) -> tuple[Any, str, str]:
    """The frame of a Parquet or CSV path, its name (the file's stem) and how it is logged."""
    local = _on_this_machine(session, path)
    shown = str(Path(path).resolve()) if local else store.redact(path)
    stem = Path(path.rstrip("/")).stem
    suffix = Path(path.rstrip("/")).suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise SourceError(
            f"Cannot score {path!r} on Spark: expected a Parquet or CSV path ending in "
            ".parquet, .pq or .csv."
        )
    if local and not Path(path).exists():
        raise SourceError(f"Cannot score {path!r}: there is no such file.")
    try:
        if suffix == ".csv":
            frame = session.read.csv(shown, header=True, inferSchema=True)
        else:
            frame = session.read.parquet(shown)
        frame.schema  # noqa: B018 - an unreadable file fails here, before any run
    except Exception as error:
        raise SourceError(f"Cannot read {path!r} on Spark: {_cause(error)}") from None
    return frame, stem, shown


class _HadoopPath:
    """A path in the Hadoop file system Spark writes to (a local folder, HDFS, S3...)."""

    def __init__(self, session: Any, text: str):
        self.session = session
        self.jvm_path = session._jvm.org.apache.hadoop.fs.Path(text)
        self.fs = self.jvm_path.getFileSystem(session._jsc.hadoopConfiguration())
        self.text = text
        self.name = str(self.jvm_path.getName())

    def sibling(self, name: str) -> _HadoopPath:
        return _HadoopPath(self.session, str(self.jvm_path.getParent().suffix(f"/{name}")))

    def exists(self) -> bool:
        return bool(self.fs.exists(self.jvm_path))

    def delete(self) -> None:
        self.fs.delete(self.jvm_path, True)

    def replace_with(self, other: _HadoopPath, overwrite: bool) -> None:
        if self.exists():
            if not overwrite:  # created while the job ran
                raise FileExistsError(f"Output {self.text!r} appeared while the job ran.")
            self.delete()
        if not self.fs.rename(other.jvm_path, self.jvm_path):
            raise OSError(f"Cannot rename {other.text!r} to {self.text!r}.")


def _output(session: Any, output: str, overwrite: bool) -> tuple[Path | None, _HadoopPath]:
    """The output, checked: a local folder's path (or None elsewhere) and its Hadoop path."""
    if Path(output.rstrip("/")).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ValueError(
            f"Cannot write predictions to {output!r}: expected a Parquet path ending in "
            f"{' or '.join(OUTPUT_SUFFIXES)}."
        )
    local = _on_this_machine(session, output)
    target = Path(output).resolve() if local else None
    if target is not None and not target.parent.is_dir():
        raise FileNotFoundError(
            f"Cannot write predictions to {output!r}: expected an existing folder, "
            f"{str(target.parent)!r} is none."
        )
    hadoop = _HadoopPath(session, str(target) if target else output)
    if hadoop.exists() and not overwrite:
        raise FileExistsError(
            f"Output {output!r} exists: expected a new path. Pass overwrite=True "
            "(--overwrite) to replace it."
        )
    return target, hadoop


def _on_this_machine(session: Any, path: str) -> bool:
    """Whether ``path`` names a file on this machine: it has no scheme and Spark's default
    file system is the local one (as on ``local[N]``; on YARN it is HDFS)."""
    if "://" in path or path.startswith("file:"):
        return False
    default = session._jsc.hadoopConfiguration().get("fs.defaultFS") or "file:///"
    return str(default).startswith("file:")


def _check_types(predictor: _Predictor, frame: Any) -> None:
    """Refuse a column missing, or of another kind than in training, from the schema."""
    fields = {f.name: f.dataType for f in frame.schema.fields}
    empty = pd.DataFrame(
        {name: pd.Series([], dtype=_pandas_dtype(t)) for name, t in fields.items()}
    )
    predictor.check(empty)  # the columns
    for name, expected in predictor.dtypes.items():
        if type(fields[name]).__name__ == "NullType":
            continue
        problem = _kind_differs(expected, empty[name].dtype)
        if problem:
            raise ValueError(
                f"Column {name!r} holds {problem[1]} ({fields[name].simpleString()}), but the "
                f"model was trained on {problem[0]} there ({expected})."
            )


def _pandas_dtype(spark_type: Any) -> str:
    kind = type(spark_type).__name__
    if kind in ("ByteType", "ShortType", "IntegerType", "LongType"):
        return "int64"
    if kind in ("FloatType", "DoubleType", "DecimalType"):
        return "float64"
    if kind == "BooleanType":
        return "bool"
    if kind in ("DateType", "TimestampType", "TimestampNTZType"):
        return "datetime64[ns]"
    if kind.endswith("IntervalType"):
        return "timedelta64[ns]"
    return "object"


def _classes(loaded: Any) -> Any:
    try:
        pipeline = loaded.unwrap_python_model().pipeline
    except Exception:  # not mlpipe's raw-input model
        return None
    return getattr(pipeline, "classes_", None)


def _spark_type(predictions: pd.Series, classes: Any) -> str:
    """The Spark SQL type of the predictions: that of the sample, else of the classes."""
    values = predictions if len(predictions) or classes is None else pd.Series(classes)
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "long"
    if pd.api.types.is_float_dtype(values) or not len(values):
        return "double"
    return "string"


def _fingerprint(frame: Any, rows: int, digest: Any) -> str:
    """XXH3-128 of the schema, the row count and the sum of the rows' Spark ``xxhash64``.

    A Spark DataFrame has no row order, so this fingerprint does not depend on it,
    unlike :func:`mlpipe.fingerprint`: the same rows in any order and any partitioning
    give the same value; a changed cell, column name or type gives another.
    """
    value = xxhash.xxh3_128(_SPARK_FORMAT)
    value.update(frame.schema.json().encode())
    value.update(f"{rows}:{digest if digest is not None else 0}".encode())
    return value.hexdigest()


def _digest(folder: Path) -> str:
    """``sha256:<hex>`` of a local Parquet folder's data files, by name order."""
    digest = hashlib.sha256()
    for file in sorted(folder.glob("part-*")):
        digest.update(file.name.encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def _cause(error: BaseException) -> str:
    """The line of a Spark error that says what went wrong (a Python worker's last one)."""
    text = str(error)
    raised = re.findall(r"^(?:\w+\.)*\w+(?:Error|Exception): .+$", text, flags=re.MULTILINE)
    python = [line for line in raised if not line.startswith(("py4j.", "org.", "java."))]
    if python:  # the exception's class without its module, as Python itself shows it
        return re.sub(r"^(?:\w+\.)+", "", python[-1].strip())
    return _first_line(error)
