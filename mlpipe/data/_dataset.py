"""Load runs and the Dataset they describe: one version of the data, reloadable exactly."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
from mlflow.data.dataset_source_registry import register_dataset_source, resolve_dataset_source
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag
from mlflow.models import infer_signature

from mlpipe import schema
from mlpipe._compat import dataset_source_type, log_inputs, quiet
from mlpipe._version import __version__
from mlpipe.data._fingerprint import fingerprint
from mlpipe.data._sources import (
    DEFAULT_CHUNKSIZE,
    SQLDatasetSource,
    is_database_url,
    read_file,
    read_sql,
    redact,
)
from mlpipe.exceptions import NotFoundError, SourceError
from mlpipe.tracking import _store as store
from mlpipe.tracking._query import find_run

__all__ = ["Dataset", "load"]

logger = logging.getLogger("mlpipe")

_SCHEMA_ROWS = 100

# MLflow annotates the argument as an instance, but registers classes.
register_dataset_source(SQLDatasetSource)  # type: ignore[arg-type]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One version of the data, logged as a ``load`` stage run.

    Create it with :func:`mlpipe.load`, find an earlier one with :meth:`find` or
    :meth:`from_run`, and pass it to :meth:`LineagePipeline.fit` so that the first
    stage points at its load run(s).

    Attributes
    ----------
    frame : pandas.DataFrame
        Everything that was loaded, target included.
    target : str or None
        The target column, if any.
    name : str
        The type of the load run: table name, query name, file stem or frame name.
    source : str
        Where the data came from (a database URL has its password redacted).
    run_id : str or None
        The load run; None for a dataset derived by :meth:`merge` or :meth:`drop`.
    key : str or None
        The load run's stage key ``name@yyyymmddHHMMSS``; None when derived.
    fingerprint : str
        :func:`mlpipe.fingerprint` of ``frame``.
    retrieved_at : datetime.datetime or None
        When the data was retrieved (UTC); None when derived.
    loads : tuple of (key, run_id)
        Every load run this data comes from: one, or several after :meth:`merge`.
    """

    frame: pd.DataFrame
    target: str | None
    name: str
    source: str
    run_id: str | None
    key: str | None
    fingerprint: str
    retrieved_at: dt.datetime | None
    loads: tuple[tuple[str, str], ...]

    @property
    def X(self) -> pd.DataFrame:
        """The features: every column but the target."""
        return self.frame if self.target is None else self.frame.drop(columns=[self.target])

    @property
    def y(self) -> pd.Series | None:
        """The target column, or None."""
        return None if self.target is None else self.frame[self.target]

    @property
    def target_type(self) -> str | None:
        """The kind of target, which decides the algorithms that fit it, or None.

        ``"binary"``, ``"multiclass"`` or ``"continuous"`` (or another kind of
        scikit-learn's :func:`~sklearn.utils.multiclass.type_of_target`). A float
        column of whole numbers (grams, counts) is ``"continuous"``; class labels are
        text, integers or booleans. A target with missing values raises
        :class:`~mlpipe.exceptions.TargetTypeError`.

        Examples
        --------
        >>> import mlpipe
        >>> from palmerpenguins import load_penguins
        >>> penguins = load_penguins().dropna(subset=["body_mass_g"])
        >>> mlpipe.load(penguins, name="penguins", target="species").target_type
        'multiclass'
        >>> mlpipe.load(penguins, name="mass", target="body_mass_g").target_type
        'continuous'
        """
        from mlpipe._registry import target_type

        return None if self.y is None else target_type(self.y)

    def __repr__(self) -> str:
        rows, cols = self.frame.shape
        label = self.key or "+".join(key for key, _ in self.loads)
        return f"Dataset({label!r}, rows={rows}, columns={cols})"

    def merge(self, right: Dataset, *, target: str | None = None, **kwargs: Any) -> Dataset:
        """Join with another dataset, as :meth:`pandas.DataFrame.merge` does.

        The result is not a load run itself: it remembers the load runs of both
        sides, and a pipeline fitted on it points at all of them.

        Parameters
        ----------
        right : Dataset
        target : str, optional
            The target of the result; default: this dataset's target.
        **kwargs
            Passed to :meth:`pandas.DataFrame.merge` (``on``, ``how``, ...).

        Returns
        -------
        Dataset
        """
        frame = self.frame.merge(right.frame, **kwargs)
        target = target if target is not None else self.target
        if target is not None and target not in frame.columns:
            raise KeyError(f"Target {target!r} is not a column of the merged data.")
        return Dataset(
            frame=frame,
            target=target,
            name=f"{self.name}+{right.name}",
            source=f"merge of {self.source} and {right.source}",
            run_id=None,
            key=None,
            fingerprint=fingerprint(frame),
            retrieved_at=None,
            loads=self.loads + right.loads,
        )

    def drop(self, columns: str | list[str]) -> Dataset:
        """The same data version without ``columns`` (identifiers, leaks, ...).

        Like :meth:`merge`, the result is not a load run itself: a pipeline fitted on
        it points at this dataset's load run(s).
        """
        frame = self.frame.drop(columns=columns)
        target = self.target if self.target in frame.columns else None
        return dataclasses.replace(
            self,
            frame=frame,
            target=target,
            run_id=None,
            key=None,
            fingerprint=fingerprint(frame),
            retrieved_at=None,
        )

    @classmethod
    def from_run(cls, run_id: str) -> Dataset:
        """The exact data a load run saw, read back from its snapshot.

        Parameters
        ----------
        run_id : str
            A ``load`` stage run.

        Returns
        -------
        Dataset
            Same content, dtypes and fingerprint as when it was loaded.

        Raises
        ------
        NotFoundError
            If the run is not a load run or has no snapshot.
        """
        run = store.client().get_run(run_id)
        tags = run.data.tags
        if tags.get(schema.STAGE) != schema.LOAD_STAGE:
            raise NotFoundError(
                f"Run {run_id} is not a load run (its stage is {tags.get(schema.STAGE)!r})."
            )
        if run.info.status != "FINISHED":
            raise NotFoundError(
                f"Load run {run_id} ({tags.get(schema.KEY)}) is {run.info.status}: it did not "
                "finish, so it holds no complete data version. Load the data again."
            )
        if schema.SNAPSHOT not in tags:
            raise NotFoundError(
                f"Load run {run_id} ({tags.get(schema.KEY)}) has no snapshot: it was loaded "
                "with snapshot=False."
            )
        with quiet():  # MLflow's download bar and log lines are not the user's
            path = mlflow.artifacts.download_artifacts(
                run_id=run_id, artifact_path=tags[schema.SNAPSHOT]
            )
        frame = pd.read_parquet(path) if path.endswith(".parquet") else pd.read_pickle(path)
        digest = fingerprint(frame)
        if digest != tags[schema.FINGERPRINT]:
            raise SourceError(
                f"The snapshot of load run {run_id} does not match its fingerprint "
                f"({digest} != {tags[schema.FINGERPRINT]}): the artifact was altered."
            )
        key = tags[schema.KEY]
        return cls(
            frame=frame,
            target=_logged_target(run, frame),
            name=tags[schema.TYPE],
            source=tags[schema.SOURCE],
            run_id=run_id,
            key=key,
            fingerprint=digest,
            retrieved_at=store.key_datetime(key),
            loads=((key, run_id),),
        )

    @classmethod
    def find(
        cls, name: str, date: str | dt.date | None = None, *, project: str | None = None
    ) -> Dataset:
        """The newest version of ``name`` retrieved on ``date`` (UTC), or an exact key.

        Parameters
        ----------
        name : str
            A table (query, file, frame) name, or an exact key such as
            ``"transactions@20190209153000"``.
        date : str or datetime.date, optional
            ``"2019-02-09"``; default: the newest version on any date.
        project : str, optional
            The project prefix the data was loaded under.

        Returns
        -------
        Dataset

        Raises
        ------
        NotFoundError
            If there is none; the message lists the dates that exist.
        """
        return cls.from_run(find_run(schema.LOAD_STAGE, name, date, project=project).run_id)


def load(
    source: str | Path | pd.DataFrame,
    *,
    table: str | list[str] | None = None,
    query: str | None = None,
    name: str | None = None,
    target: str | None = None,
    project: str | None = None,
    snapshot: bool = True,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> Any:
    """Read a data version and log it as a ``load`` stage run.

    The run records the source (a URL's password redacted), the retrieval time (its
    stage key ``name@yyyymmddHHMMSS``, UTC), row and column counts, the schema, the
    full :func:`~mlpipe.fingerprint` and, by default, a Parquet snapshot from which
    :meth:`Dataset.from_run` reloads exactly this data. It is also an MLflow dataset
    input of the run, with a source MLflow can load again.

    Parameters
    ----------
    source : str, path or pandas.DataFrame
        A SQLAlchemy database URL (``sqlite:///shop.db``,
        ``postgresql://user@host/db``) with ``table=`` or ``query=``; a CSV or
        Parquet file; or a DataFrame with ``name=``.
    table : str or list of str, optional
        Table to read (``schema.table`` works). A list reads each table as its own
        load run and returns a list of datasets.
    query : str, optional
        SQL query to run instead of reading a table; give it a ``name=``.
    name : str, optional
        What the data is called: the type of the load run. Defaults to the table
        name, the file stem, or ``"query"``; required for a DataFrame.
    target : str, optional
        The column to predict.
    project : str, optional
        Experiment prefix: the run goes to ``<project>/load``.
    snapshot : bool, default=True
        Store the data as an artifact of the run, so :meth:`Dataset.from_run` can
        reload it exactly.
    chunksize : int, default=100000
        Rows read from a database at a time.

    Returns
    -------
    Dataset, or list of Dataset when ``table`` is a list

    Raises
    ------
    SourceError
        If the source cannot be read; the message never shows a password.
    KeyError
        If ``target`` is not a column of the data.
    StageError
        If ``project`` is not a safe name (see :doc:`/concepts`).
    TrackingError
        If the tracking store or the artifact location cannot be written; the
        load run is then ended FAILED.

    Examples
    --------
    >>> import pandas as pd, mlpipe
    >>> ds = mlpipe.load(pd.DataFrame({"x": [1, 2], "y": [0, 1]}), name="toy", target="y")
    >>> ds.key.startswith("toy@"), list(ds.X.columns)
    (True, ['x'])
    >>> mlpipe.Dataset.from_run(ds.run_id).fingerprint == ds.fingerprint
    True
    """
    tables = list(table) if isinstance(table, list | tuple) else [table]
    if project is not None:
        store.check_name(project, "project")
    # Read every source before logging any, so a bad table or target logs nothing.
    reads = [_read(source, table=t, query=query, name=name, chunksize=chunksize) for t in tables]
    for frame, label, *_ in reads:
        if target is not None and target not in frame.columns:
            hint = (
                " With several tables, give the target to Dataset.merge." if len(reads) > 1 else ""
            )
            raise KeyError(
                f"Target column {target!r} is not in {label!r}; its columns are "
                f"{list(frame.columns)}.{hint}"
            )
    with store.reporting(), quiet():
        datasets = []
        for frame, label, where, origin, params in reads:
            # A frame or a file is its content: loading the same again is the same data
            # version. A database read is a retrieval at a time: always a new version.
            found = None
            if origin is None or "file" in params:
                found = find_load(
                    store.client(),
                    frame,
                    name=label,
                    source=where,
                    target=target,
                    project=project,
                    snapshot=snapshot,
                )
            datasets.append(
                found
                or log_load(
                    frame,
                    name=label,
                    source=where,
                    dataset_source=origin,
                    params=params,
                    target=target,
                    project=project,
                    snapshot=snapshot,
                )
            )
    return datasets if isinstance(table, list | tuple) else datasets[0]


def _read(
    source: Any, *, table: str | None, query: str | None, name: str | None, chunksize: int
) -> tuple[pd.DataFrame, str, str, Any, dict[str, Any]]:
    """Read one source: (frame, name, where it came from, MLflow source, parameters)."""
    if isinstance(source, pd.DataFrame):
        if name is None:
            raise TypeError("load(frame) needs name=: what the data is called, e.g. name='credit'.")
        return source, name, f"frame:{name}", None, {}
    if not isinstance(source, str | Path):
        raise TypeError(
            "load() expects a database URL, a CSV or Parquet path, or a pandas DataFrame; "
            f"got {type(source).__name__}."
        )
    if isinstance(source, str) and is_database_url(source):
        frame = read_sql(source, table=table, query=query, chunksize=chunksize)
        origin = SQLDatasetSource(source, table=table, query=query)
        where = redact(source) + (f"#table={table}" if table else "#query")
        params: dict[str, Any] = {"table": table} if table else {"query": query}
        return frame, name or table or "query", where, origin, params
    if table is not None or query is not None:
        raise SourceError(
            f"table= and query= need a database URL such as sqlite:///shop.db; got {str(source)!r}."
        )
    path = Path(source).resolve()
    frame = read_file(path)
    with warnings.catch_warnings():
        # MLflow registers its local-file source class twice and then warns that a
        # path "can be interpreted in multiple ways": both are the same class.
        warnings.filterwarnings("ignore", message="The specified dataset source can be")
        file_source = resolve_dataset_source(str(path))
    return frame, name or path.stem, str(path), file_source, {"file": str(path)}


def log_load(
    frame: pd.DataFrame,
    *,
    name: str,
    source: str,
    target: str | None,
    project: str | None,
    snapshot: bool = True,
    dataset_source: Any = None,
    params: dict[str, Any] | None = None,
) -> Dataset:
    """Log the load run of ``frame`` and return its Dataset."""
    if target is not None and target not in frame.columns:
        raise KeyError(
            f"Target column {target!r} is not in the data; its columns are {list(frame.columns)}."
        )
    digest = fingerprint(frame)
    client = store.client()
    tags = {schema.FINGERPRINT: digest, schema.SOURCE: source, schema.VERSION: __version__}
    with store.stage_run(
        client, stage=schema.LOAD_STAGE, type_=name, project=project, upstream=[], tags=tags
    ) as run:
        run.log(
            params={
                schema.SOURCE_PARAM: source,
                schema.ROWS: frame.shape[0],
                schema.COLUMNS: frame.shape[1],
                **({schema.TARGET: target} if target is not None else {}),
                **(params or {}),
            }
        )
        entity = dataset_entity(
            frame, name=store.safe_type(name), digest=digest, source=source, origin=dataset_source
        )
        log_training_input(client, run.run_id, [entity])
        if snapshot:
            run.log(tags={schema.SNAPSHOT: _log_snapshot(client, run.run_id, frame, digest)})
    return _of_load_run(frame, target, name, source, run.run_id, run.key, digest)


def _of_load_run(
    frame: pd.DataFrame,
    target: str | None,
    name: str,
    source: str,
    run_id: str,
    key: str,
    digest: str,
) -> Dataset:
    """The Dataset of one load run: retrieved when its key says, loaded by it alone."""
    return Dataset(
        frame=frame,
        target=target,
        name=name,
        source=source,
        run_id=run_id,
        key=key,
        fingerprint=digest,
        retrieved_at=store.key_datetime(key),
        loads=((key, run_id),),
    )


def _log_snapshot(
    client: mlflow.MlflowClient, run_id: str, frame: pd.DataFrame, digest: str
) -> str:
    """Store ``frame`` (whose fingerprint is ``digest``) as an artifact; return its path.

    Parquet is read back and fingerprinted before it is trusted: a dtype it cannot
    hold exactly falls back to a pickle, so :meth:`Dataset.from_run` always returns
    the very data the run saw.
    """
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, schema.SNAPSHOT_FILE)
        exact = False
        if all(isinstance(c, str) for c in frame.columns):
            try:
                frame.to_parquet(path)
                exact = fingerprint(pd.read_parquet(path)) == digest
            except (ValueError, TypeError, ImportError, pa.ArrowException) as error:
                logger.info("Snapshot falls back to pickle: %s", error)
        if not exact:
            # Non-string column names, mixed-type object columns and other things
            # Parquet cannot hold exactly.
            path = Path(tmp, schema.SNAPSHOT_PICKLE)
            frame.to_pickle(path)
        client.log_artifact(run_id, str(path), schema.SNAPSHOT_DIR)
        return f"{schema.SNAPSHOT_DIR}/{path.name}"


def as_frame(X: Any, y: Any = None) -> tuple[pd.DataFrame, str | None]:
    """``X`` and ``y`` as one frame, the target last, and the target's column name.

    The target keeps its Series name unless that clashes with a feature column; a
    two-dimensional target becomes ``target_0``, ``target_1``, ... (its name is then
    None).
    """
    if isinstance(X, pd.DataFrame):
        frame = X
    elif hasattr(X, "tocoo"):  # a scipy sparse matrix or array
        frame = pd.DataFrame.sparse.from_spmatrix(X)
    else:
        frame = pd.DataFrame(np.asarray(X))
    if y is None:
        return frame, None
    values = np.asarray(y)
    label: str | None = None
    if values.ndim == 2:
        targets = pd.DataFrame(values).add_prefix("target_")
    else:
        label = getattr(y, "name", None)
        label = label if isinstance(label, str) and label not in frame.columns else "target"
        targets = pd.DataFrame({label: values})
    targets.index = frame.index
    return pd.concat([frame, targets], axis=1), label


def dataset_entity(
    frame: pd.DataFrame, *, name: str, digest: str, source: str, origin: Any = None
) -> DatasetEntity:
    """The MLflow dataset entity of a frame, built without re-reading the whole frame.

    ``mlflow.data.from_pandas`` would re-infer the schema of every row and hash
    only the first 10,000; the full fingerprint is already known. ``origin`` is an
    MLflow ``DatasetSource`` that can load the data again, when there is one.
    """
    head = frame.head(_SCHEMA_ROWS)
    head = head.set_axis([str(c) for c in head.columns], axis=1)
    try:
        with warnings.catch_warnings():
            # A hint meant for model signatures (integers cannot hold a missing value).
            warnings.filterwarnings("ignore", message="Hint: Inferred schema contains integer")
            schema_json = json.dumps({"mlflow_colspec": infer_signature(head).inputs.to_dict()})
    except Exception as error:  # a column type MLflow has no schema type for
        logger.info("Dataset %r is logged without a schema: %s", name, error)
        schema_json = None
    profile = json.dumps({"num_rows": int(frame.shape[0]), "num_elements": int(frame.size)})
    if origin is None:
        source_type, source_json = "code", json.dumps({"tags": {schema.SOURCE: source}})
    else:
        source_type, source_json = dataset_source_type(origin), origin.to_json()
    return DatasetEntity(
        name=name,
        digest=digest[:36],
        source_type=source_type,
        source=source_json,
        schema=schema_json,
        profile=profile,
    )


def log_training_input(
    client: mlflow.MlflowClient, run_id: str, entities: list[DatasetEntity]
) -> None:
    """Record ``entities`` as the training inputs of a run."""
    tag = InputTag(key="mlflow.data.context", value=schema.TRAINING_CONTEXT)
    log_inputs(client, run_id, [DatasetInput(dataset=e, tags=[tag]) for e in entities])


def training_inputs(load_runs: list[Any]) -> list[DatasetEntity]:
    """The dataset entities of a dataset's load runs, to log on the stages fitted on it."""
    return [i.dataset for r in load_runs for i in (r.inputs.dataset_inputs if r.inputs else [])]


def _logged_target(run: Any, frame: pd.DataFrame) -> str | None:
    """The target column a load run recorded, or None when it has none.

    Runs logged before schema version 2 wrote the text ``"None"`` for "no target";
    it is read as None unless the data really has a column of that name.
    """
    target = run.data.params.get(schema.TARGET)
    if target is None or (target == "None" and "None" not in frame.columns):
        return None
    return str(target)


def find_frame_load(
    client: mlflow.MlflowClient, frame: pd.DataFrame, *, target: str | None, project: str | None
) -> Dataset | None:
    """An earlier load run of exactly this in-memory frame and target, to fit on again.

    An in-memory frame has no retrieval to record, so refitting on identical data
    reuses its load run rather than logging a copy.
    """
    return find_load(
        client, frame, name="frame", source=None, target=target, project=project, snapshot=False
    )


def find_load(
    client: mlflow.MlflowClient,
    frame: pd.DataFrame,
    *,
    name: str,
    source: str | None,
    target: str | None,
    project: str | None,
    snapshot: bool,
) -> Dataset | None:
    """The newest FINISHED load run of this very data: the same fingerprint, type
    ``name``, target and (unless None) source, with a snapshot when ``snapshot``."""
    experiment = client.get_experiment_by_name(store.experiment_name(schema.LOAD_STAGE, project))
    if experiment is None:
        return None
    digest = fingerprint(frame)
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{schema.FINGERPRINT}` = '{digest}' "
            f"and tags.`{schema.TYPE}` = '{store.safe_type(name)}' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=10,
    )
    for run in found:
        tags = run.data.tags
        if (
            _logged_target(run, frame) == target
            and (source is None or tags.get(schema.SOURCE) == source)
            and (not snapshot or tags.get(schema.SNAPSHOT))
        ):
            return _of_load_run(
                frame, target, name, tags[schema.SOURCE], run.info.run_id, tags[schema.KEY], digest
            )
    return None
    digest = fingerprint(frame)
    found = client.search_runs(
        [experiment.experiment_id],
        filter_string=(
            f"tags.`{schema.FINGERPRINT}` = '{digest}' and tags.`{schema.TYPE}` = 'frame' "
            "and attributes.status = 'FINISHED'"
        ),
        order_by=["attributes.start_time DESC"],
        max_results=10,
    )
    for run in found:
        if _logged_target(run, frame) == target:
            tags = run.data.tags
            return _of_load_run(
                frame,
                target,
                "frame",
                tags[schema.SOURCE],
                run.info.run_id,
                tags[schema.KEY],
                digest,
            )
    return None
