"""Log the raw-input pyfunc model of a fitted chain."""

from __future__ import annotations

import json
import pickle
import sys
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import Model, ModelSignature, infer_signature
from mlflow.types import DataType, ParamSchema, ParamSpec

from mlpipe import _compat, schema
from mlpipe.model import _raw, _skops
from mlpipe.model._serialize import pickled_by_value, requirements

__all__ = [
    "check_model_name",
    "default_model_name",
    "describe_columns",
    "log_raw_model",
    "raw_signature",
]

_SAMPLE_ROWS = 1000
_EXAMPLE_ROWS = 5
# Beyond this many distinct values a text column is free text, not a set of categories.
MAX_CATEGORIES = 1000
# What MLflow 3.17 refuses in a LoggedModel's name (mlflow/utils/validation.py,
# _validate_logged_model_name); a registered model's name has its own rule
# (mlpipe.tracking.check_registered_model_name).
_BAD_MODEL_NAME_CHARS = ("/", ":", ".", "%", '"', "'")


def default_model_name(project: str | None, data_name: str, final_type: str) -> str:
    """The name of a chain's raw-input model when ``model_name`` is not given.

    ``<project or data name>-<final stage type>``, with every character MLflow refuses
    in a model name replaced by ``-``: a person tells the chains' models apart.

    Examples
    --------
    >>> default_model_name("team/credit", "german", "LogisticRegression")
    'team-credit-LogisticRegression'
    >>> default_model_name(None, "penguins", "rf")
    'penguins-rf'
    """
    text = f"{project or data_name}-{final_type}"
    for char in _BAD_MODEL_NAME_CHARS:
        text = text.replace(char, "-")
    return text


def check_model_name(name: Any, what: str = "model_name") -> None:
    """Raise ValueError unless MLflow takes ``name`` as a logged model's name.

    ``what`` is what it was given as, for the message.
    """
    bad = _BAD_MODEL_NAME_CHARS
    if not isinstance(name, str) or not name.strip() or any(c in name for c in bad):
        raise ValueError(
            f"Invalid {what} {name!r}: MLflow takes a non-empty name without any of "
            f"{' '.join(bad)}. Pick another name, or leave it None for the default."
        )


def describe_columns(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Describe each column of the training frame, as the logged model's ``meta.json`` keeps it.

    Parameters
    ----------
    frame : pandas.DataFrame
        The raw training records, exactly as the first stage saw them.

    Returns
    -------
    dict
        ``{column name: description}``, in column order. Each description holds
        ``dtype`` (the pandas dtype, as text), ``nullable`` (whether the column had a
        missing value in training), ``categories`` (the sorted distinct values of a
        text column, or ``None`` for a column that is not text, that mixes text with
        other values, or that has more than ``MAX_CATEGORIES`` distinct values) and
        ``min``, ``max`` (floats, for numeric columns other than booleans; ``None``
        otherwise or when every value is missing). Every value is plain JSON.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"island": ["Dream", None, "Biscoe"], "year": [2007, 2008, 2009]})
    >>> describe_columns(frame)["island"]
    {'dtype': 'str', 'nullable': True, 'categories': ['Biscoe', 'Dream'], 'min': None, 'max': None}
    >>> describe_columns(frame)["year"]
    {'dtype': 'int64', 'nullable': False, 'categories': None, 'min': 2007.0, 'max': 2009.0}
    """
    described: dict[str, dict[str, Any]] = {}
    for name, column in frame.items():
        dtype = column.dtype
        missing = column.isna()
        nullable = bool(missing.any())
        categories: list[str] | None = None
        low: float | None = None
        high: float | None = None
        if pd.api.types.is_bool_dtype(dtype):
            pass
        elif pd.api.types.is_numeric_dtype(dtype):
            values = column[~missing] if nullable else column
            if len(values):
                low, high = float(values.min()), float(values.max())
        elif (
            dtype == np.dtype(object)
            or pd.api.types.is_string_dtype(dtype)
            or isinstance(dtype, pd.CategoricalDtype)
        ):
            distinct = pd.unique((column[~missing] if nullable else column).to_numpy(dtype=object))
            # A column that mixes text with other values is not a text column.
            if len(distinct) <= MAX_CATEGORIES and all(isinstance(v, str) for v in distinct):
                categories = sorted(distinct)
        described[str(name)] = {
            "dtype": str(dtype),
            "nullable": nullable,
            "categories": categories,
            "min": low,
            "max": high,
        }
    return described


def raw_signature(predictions: Any, method: str = "predict") -> ModelSignature:
    """The signature of the raw-input model: its output and ``params``, no input columns.

    The model checks its input itself (:func:`mlpipe.model._raw.prepare`): every
    training column present, each brought back to its training dtype, a value it
    cannot take refused with an error naming the column. No MLflow column type
    does that job for every dtype (MLflow 3.17):

    * ``double``, ``long``, ``string``, ``datetime``: in process, MLflow refuses
      columns of the training frame itself: ``int64`` or ``Int64`` for ``double``,
      an integer column with a missing value for ``long``, a categorical or an
      all-missing column for ``string``, a time zone for
      ``datetime``; and it turns ``datetime64[us]`` into ``datetime64[ns]``.
      Served, ``long`` refuses a ``null`` and truncates ``1.5`` to ``1``, and
      ``boolean`` takes any text.
    * ``Any``: MLflow's server refuses every ``text/csv`` body for a signature with
      one (it reads CSV with the signature's dtypes, which ``Any`` has not), and it
      checks ``Any`` one value at a time (0.5 to 1 ms per 1,000 rows per column).
    * ``required=False`` changes none of this: a column present is checked.

    ``tests/model/test_signature.py`` pins each of these behaviours of MLflow: the
    day one changes, an input schema may become possible (the UI shows it).

    ``params`` declares ``method``, whose default is ``method``. The output schema is
    inferred from ``predictions``.
    """
    params = ParamSchema([ParamSpec("method", DataType.string, method)])
    outputs = infer_signature(model_output=predictions).outputs
    return ModelSignature(inputs=None, outputs=outputs, params=params)


def categories_of(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The categories (and whether ordered) of each categorical column, as plain JSON.

    The raw-input model gives a categorical column these categories back, in this
    order, whatever a request holds. A column whose categories are not all text,
    whole numbers, finite floats or booleans is left out: it gets the categories
    its values give.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"size": pd.Categorical(["S", "L"], categories=["S", "M", "L"])})
    >>> categories_of(frame)
    {'size': {'categories': ['S', 'M', 'L'], 'ordered': False}}
    """
    out: dict[str, dict[str, Any]] = {}
    for name, column in frame.items():
        dtype = column.dtype
        if not isinstance(dtype, pd.CategoricalDtype):
            continue
        values = [v.item() if isinstance(v, np.generic) else v for v in dtype.categories]
        plain = all(
            isinstance(v, str | bool | int) or (isinstance(v, float) and np.isfinite(v))
            for v in values
        )
        if plain:
            out[str(name)] = {"categories": values, "ordered": bool(dtype.ordered)}
    return out


def log_raw_model(
    *,
    run_id: str,
    experiment_id: str,
    stages: list[tuple[str, str, bytes]],
    modules: set[str],
    fitted: Any,
    X: Any,
    dtypes: dict[str, str] | None,
    serializer: str = "cloudpickle",
    name: str = schema.MODEL_NAME,
    tags: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> str:
    """Log a fitted chain as a raw-input pyfunc model; return its ``models:/`` URI.

    ``name``, ``tags`` and ``params`` are the LoggedModel's: the UI lists the model
    by its name and shows its parameters, and they are written when the model is
    created, in the same call.

    ``stages`` holds ``(step name, serializer, serialized fitted step)``; ``fitted``
    is the same chain as a plain scikit-learn pipeline, used to infer the output
    schema. The model's pip requirements are the exact
    versions of what the pickle refers to, found while pickling, so MLflow does
    not spend seconds inferring them in a subprocess.

    With ``serializer="cloudpickle"`` the model is a pickled
    :class:`~mlpipe.model._raw.RawInputModel` and its steps one pickle; with
    ``"skops"`` it is code (see :mod:`mlpipe.model._skops`) and its steps skops files.
    """
    if isinstance(X, pd.DataFrame):
        sample = X.sample(n=min(len(X), _SAMPLE_ROWS), random_state=0)
        example = X.head(_EXAMPLE_ROWS)
    else:
        X = np.asarray(X)
        sample, example = X[:_SAMPLE_ROWS], X[:_EXAMPLE_ROWS]
    sample = _raw.prepare(sample, dtypes)
    method = "predict" if hasattr(fitted, "predict") else "transform"
    signature = raw_signature(getattr(fitted, method)(sample), method)
    example = _example(_raw.prepare(example, dtypes))
    model = mlflow.initialize_logged_model(
        name=name, source_run_id=run_id, experiment_id=experiment_id, tags=tags, params=params
    )
    with tempfile.TemporaryDirectory() as tmp:
        meta_path = Path(tmp, "meta.json")
        meta = {
            "dtypes": dtypes,
            "columns": describe_columns(X) if isinstance(X, pd.DataFrame) else None,
            "categories": categories_of(X) if isinstance(X, pd.DataFrame) else None,
        }
        meta_path.write_text(json.dumps(meta))
        code: AbstractContextManager[tuple[Any, list[str] | None, dict[str, str]]]
        if serializer == "skops":
            code = _skops.model_code(Path(tmp), stages)
        else:
            code = _pickled_model(Path(tmp), stages)
        with code as (python_model, code_paths, artifacts), _compat.quiet():
            info = Model.log(
                artifact_path=None,
                name=schema.MODEL_NAME,
                flavor=mlflow.pyfunc,
                run_id=run_id,
                model_id=model.model_id,
                python_model=python_model,
                code_paths=code_paths,
                artifacts={**artifacts, "meta": str(meta_path)},
                signature=signature,
                input_example=example,
                pip_requirements=requirements(modules, {s for _, s, _ in stages}),
            )
    return str(info.model_uri)


@contextmanager
def _pickled_model(
    folder: Path, stages: list[tuple[str, str, bytes]]
) -> Iterator[tuple[Any, None, dict[str, str]]]:
    """The default model: a pickled :class:`~mlpipe.model._raw.RawInputModel`, steps pickled."""
    pipeline_path = folder / "pipeline.pkl"
    pipeline_path.write_bytes(pickle.dumps(stages, protocol=pickle.HIGHEST_PROTOCOL))
    # The model class travels by value: loading it must not need mlpipe.
    with pickled_by_value([sys.modules[_raw.__name__]]):
        yield _raw.RawInputModel(), None, {"pipeline": str(pipeline_path)}


def _example(frame: Any) -> Any:
    """The input example as a client sends it: durations as ISO 8601 text.

    MLflow writes datetimes in an example as ISO 8601 text but cannot write a
    duration; the model reads both back to their training dtype.
    """
    if not isinstance(frame, pd.DataFrame):
        return frame
    durations = [c for c, d in frame.dtypes.items() if isinstance(d, np.dtype) and d.kind == "m"]
    if not durations:
        return frame
    return frame.assign(
        **{
            str(c): frame[c].map(lambda v: v.isoformat() if pd.notna(v) else None)
            for c in durations
        }
    )


def dtypes_of(X: Any) -> dict[str, str] | None:
    """The column dtypes the raw-input model will bring served records back to.

    Each is ``str`` of the column's dtype: a numpy dtype, ``category``, or a
    datetime with its time zone (``datetime64[us, UTC]``). An ``object`` column of
    booleans (what a nullable ``boolean`` column becomes once its missing values are
    ``NaN``) is ``boolean``; a column of any other dtype is ``object``.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame(
    ...     {
    ...         "when": pd.to_datetime(["2024-01-01"]).as_unit("us").tz_localize("UTC"),
    ...         "flag": pd.Series([True], dtype=object),
    ...         "n": [1],
    ...     }
    ... )
    >>> dtypes_of(frame)
    {'when': 'datetime64[us, UTC]', 'flag': 'boolean', 'n': 'int64'}
    """
    if not isinstance(X, pd.DataFrame) or not all(isinstance(c, str) for c in X.columns):
        return None
    return {str(c): _dtype_name(X.iloc[:, i]) for i, c in enumerate(X.columns)}


def _dtype_name(column: pd.Series) -> str:
    dtype = column.dtype
    if isinstance(dtype, pd.CategoricalDtype | pd.DatetimeTZDtype):
        return str(dtype)
    if dtype == np.dtype(object) and pd.api.types.infer_dtype(column, skipna=True) == "boolean":
        return "boolean"
    return str(dtype) if isinstance(dtype, np.dtype) else "object"
