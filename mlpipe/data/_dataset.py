"""Load runs and the Dataset they describe."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import warnings
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.entities import Dataset as DatasetEntity
from mlflow.entities import DatasetInput, InputTag
from mlflow.models import infer_signature

from mlpipe._version import __version__
from mlpipe.data._fingerprint import fingerprint
from mlpipe.tracking import _schema as schema
from mlpipe.tracking import _store as store

__all__ = ["Dataset", "load"]

logger = logging.getLogger("mlpipe")

_SCHEMA_ROWS = 100


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
    """One version of the data, logged as a ``load`` stage run.

    Create it with :func:`mlpipe.load`; pass it to :meth:`LineagePipeline.fit`
    so that the first stage points at this load run.

    Attributes
    ----------
    frame : pandas.DataFrame
        Everything that was loaded, target included.
    target : str or None
        The target column, if any.
    name : str
        The type of the load run: table, query or frame name.
    source : str
        Where the data came from.
    run_id : str
        The load run.
    key : str
        The load run's stage key ``name@yyyymmddHHMMSS``.
    fingerprint : str
        :func:`mlpipe.fingerprint` of ``frame``.
    retrieved_at : datetime.datetime
        When the data was retrieved (UTC).
    """

    frame: pd.DataFrame
    target: str | None
    name: str
    source: str
    run_id: str
    key: str
    fingerprint: str
    retrieved_at: dt.datetime

    @property
    def X(self) -> pd.DataFrame:
        """The features: every column but the target."""
        return self.frame if self.target is None else self.frame.drop(columns=[self.target])

    @property
    def y(self) -> pd.Series | None:
        """The target column, or None."""
        return None if self.target is None else self.frame[self.target]

    def __repr__(self) -> str:
        rows, cols = self.frame.shape
        return f"Dataset({self.key!r}, rows={rows}, columns={cols}, run_id={self.run_id!r})"


def load(
    source: pd.DataFrame,
    *,
    name: str | None = None,
    target: str | None = None,
    project: str | None = None,
) -> Dataset:
    """Log a data version as a ``load`` stage run and return it as a :class:`Dataset`.

    Parameters
    ----------
    source : pandas.DataFrame
        The data, target column included.
    name : str
        What the data is called: the type of the load run.
    target : str, optional
        The column to predict.
    project : str, optional
        Experiment prefix: the run goes to ``<project>/load``.

    Returns
    -------
    Dataset

    Raises
    ------
    TypeError
        If ``source`` is not a DataFrame.
    KeyError
        If ``target`` is not a column of the data.

    Examples
    --------
    >>> import pandas as pd, mlpipe
    >>> ds = mlpipe.load(pd.DataFrame({"x": [1, 2], "y": [0, 1]}), name="toy", target="y")
    >>> ds.key.startswith("toy@"), list(ds.X.columns)
    (True, ['x'])
    """
    if not isinstance(source, pd.DataFrame):
        raise TypeError(f"load() expects a pandas DataFrame, got {type(source).__name__}.")
    if name is None:
        raise TypeError("load(frame) needs name=: what the data is called, e.g. name='credit'.")
    if target is not None and target not in source.columns:
        raise KeyError(
            f"Target column {target!r} is not in the data; its columns are {list(source.columns)}."
        )
    return log_load(source, name=name, source=f"frame:{name}", target=target, project=project)


def log_load(
    frame: pd.DataFrame,
    *,
    name: str,
    source: str,
    target: str | None,
    project: str | None,
) -> Dataset:
    """Log the load run of ``frame`` and return its Dataset."""
    digest = fingerprint(frame)
    client = mlflow.MlflowClient()
    tags = {schema.FINGERPRINT: digest, schema.SOURCE: source, schema.VERSION: __version__}
    with store.stage_run(
        client, stage=schema.LOAD_STAGE, type_=name, project=project, upstream=[], tags=tags
    ) as run:
        run.log(
            params={
                schema.ROWS: frame.shape[0],
                schema.COLUMNS: frame.shape[1],
                schema.TARGET: target,
            }
        )
        entity = dataset_entity(frame, name=store.safe_type(name), digest=digest, source=source)
        log_training_input(client, run.run_id, entity)
    retrieved = dt.datetime.strptime(run.key.rsplit("@", 1)[1], "%Y%m%d%H%M%S")
    return Dataset(
        frame=frame,
        target=target,
        name=name,
        source=source,
        run_id=run.run_id,
        key=run.key,
        fingerprint=digest,
        retrieved_at=retrieved.replace(tzinfo=dt.UTC),
    )


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


def dataset_entity(frame: pd.DataFrame, *, name: str, digest: str, source: str) -> DatasetEntity:
    """The MLflow dataset entity of a frame, built without re-reading the whole frame.

    ``mlflow.data.from_pandas`` would re-infer the schema of every row and hash
    only the first 10,000; the full fingerprint is already known.
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
    return DatasetEntity(
        name=name,
        digest=digest[:36],
        source_type="code",
        source=json.dumps({"tags": {schema.SOURCE: source}}),
        schema=schema_json,
        profile=profile,
    )


def log_training_input(client: mlflow.MlflowClient, run_id: str, entity: DatasetEntity) -> None:
    """Record ``entity`` as the training input of a run."""
    tag = InputTag(key="mlflow.data.context", value=schema.TRAINING_CONTEXT)
    client.log_inputs(run_id, datasets=[DatasetInput(dataset=entity, tags=[tag])])
