"""Hypothesis strategies for raw frames shaped like a model's training input."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from hypothesis import strategies as st

from mlpipe import _compat
from mlpipe.model._package import describe_columns

__all__ = ["columns_of", "raw_frames"]

_INT64 = (-(2**63), 2**63 - 1)
# Every way a missing value reaches a model: Python, NumPy and pandas spell it differently.
_NULLS = st.sampled_from([None, np.nan, pd.NA])
# The MLflow signature types a model without mlpipe's column description may declare.
_SIGNATURE_DTYPES = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "object",
}


def columns_of(source: Any) -> dict[str, dict[str, Any]]:
    """Describe the columns a model takes, as the generated frames will have them.

    Parameters
    ----------
    source : str, os.PathLike, Dataset, pandas.DataFrame or dict
        A model URI (``models:/m-...``, ``runs:/...``, a local model directory),
        a :class:`mlpipe.Dataset` (its features ``X``, target excluded), a raw
        training frame, or a description returned by this function (checked and
        copied, so it can be edited first: a narrower range, a column left out).

    Returns
    -------
    dict
        ``{column: {"dtype", "nullable", "categories", "min", "max"}}`` in column
        order, as mlpipe keeps it in a logged model's ``meta.json``: the pandas
        dtype as text, whether training had a missing value there, the sorted text
        values of a text column (``None`` for free text with more than 1000 of
        them), and the range of a numeric column. A model logged by an earlier
        mlpipe, or by plain MLflow, is described from its signature and input
        example instead: its categories and ranges are then those of the example
        rows only.

    Raises
    ------
    TypeError
        If ``source`` is none of those, or a column has a dtype the strategies do
        not generate (anything but numbers, booleans and text).
    ValueError
        If a model has no column-based signature, or a description lacks ``dtype``.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"island": ["Dream", None, "Biscoe"], "year": [2007, 2008, 2009]})
    >>> columns_of(frame)["year"]
    {'dtype': 'int64', 'nullable': False, 'categories': None, 'min': 2007.0, 'max': 2009.0}
    """
    if isinstance(source, Mapping):
        columns = _checked(source)
    elif isinstance(source, pd.DataFrame):
        columns = describe_columns(source)
    elif isinstance(getattr(source, "X", None), pd.DataFrame):
        columns = describe_columns(source.X)
    elif isinstance(source, str | os.PathLike):
        columns = _model_columns(os.fspath(source))
    else:
        raise TypeError(
            "columns_of needs a model URI, a mlpipe.Dataset, a pandas DataFrame or a column "
            f"description; got {type(source).__name__}."
        )
    for name, column in columns.items():
        _kind(name, column["dtype"])
    return columns


def raw_frames(
    source: Any, *, valid: bool = True, min_rows: int = 1, max_rows: int = 20
) -> st.SearchStrategy[pd.DataFrame]:
    """A Hypothesis strategy for raw frames with the columns a model was trained on.

    With ``valid=True`` every row is one training could have held: numbers within
    the training range (whole numbers in integer columns), text from the training
    categories, booleans, and missing values only in columns that had some. The
    frame has the training dtypes.

    With ``valid=False`` rows are hostile, but still what production may send:
    valid rows with one to three cells replaced by a missing value (``None``,
    ``NaN`` or ``pd.NA``) in any column, a category never seen in training (an
    empty string, a training category in other case or padded with a space),
    a number far outside the training range (negative, zero, huge, ``inf`` and
    ``-inf``), or a fraction in an integer column. The columns come in another
    order, and the row index is at times not ``0..n-1``. A column holding a
    replaced cell has the dtype pandas infers, as when a frame is built from
    records.

    Type errors are never generated: text in a numeric column, numbers in a text
    column, a missing or an extra column. A model is expected to refuse those
    (the raw-input model answers them with an HTTP 400 naming the column); they
    are not the hostile-but-valid input this strategy is for.

    Parameters
    ----------
    source : str, os.PathLike, Dataset, pandas.DataFrame or dict
        What :func:`columns_of` takes. It is read when the first frame is drawn,
        not when the strategy is made, so a test module can build the strategy
        at import time.
    valid : bool, default=True
        Valid rows, or hostile ones.
    min_rows, max_rows : int, default=1 and 20
        How many rows a frame has.

    Returns
    -------
    hypothesis.strategies.SearchStrategy
        Of pandas DataFrames.

    Examples
    --------
    >>> import pandas as pd
    >>> from hypothesis import given, settings
    >>> frame = pd.DataFrame({"island": ["Dream", None, "Biscoe"], "year": [2007, 2008, 2009]})
    >>> @settings(max_examples=10)
    ... @given(raw_frames(frame, max_rows=5))
    ... def test_frames_look_like_training(rows):
    ...     assert list(rows.columns) == ["island", "year"]
    ...     assert rows["year"].between(2007, 2009).all()
    ...     assert rows["island"].dropna().isin(["Biscoe", "Dream"]).all()
    >>> test_frames_look_like_training()
    """
    if not 0 <= min_rows <= max_rows:
        raise ValueError(f"Need 0 <= min_rows <= max_rows, got {min_rows} and {max_rows}.")
    return st.deferred(lambda: frames(columns_of(source), valid, min_rows, max_rows))


def frames(
    columns: dict[str, dict[str, Any]], valid: bool, min_rows: int, max_rows: int
) -> st.SearchStrategy[pd.DataFrame]:
    """The strategy of :func:`raw_frames`, from a checked column description."""
    names = list(columns)
    cells = {name: _valid_cell(name, columns[name]) for name in names}
    hostile = {name: _hostile_cell(name, columns[name]) for name in names}
    for name, cell in cells.items():
        if cell.is_empty:
            raise ValueError(
                f"Column {name!r} had neither a value nor a missing value in training: "
                "no row can be generated. Was the training frame empty?"
            )

    # Drawn row by row, so that Hypothesis shrinks a frame by dropping whole rows.
    row_values = st.tuples(*(cells[name] for name in names)).map(list)

    @st.composite
    def frame(draw: st.DrawFn) -> pd.DataFrame:
        records = draw(st.lists(row_values, min_size=min_rows, max_size=max_rows))
        rows = len(records)
        data = {name: [record[i] for record in records] for i, name in enumerate(names)}
        touched = set()
        if not valid and rows:
            # A few hostile cells in otherwise valid rows: one bad value must not hide
            # behind another that the model rejects first.
            where = st.tuples(st.integers(0, rows - 1), st.sampled_from(names))
            for row, name in draw(st.lists(where, min_size=1, max_size=3)):
                data[name][row] = draw(hostile[name])
                touched.add(name)
        out = pd.DataFrame(
            {name: _series(data[name], columns[name], name not in touched) for name in names},
            index=pd.RangeIndex(rows),
        )
        if not valid:
            out = out[draw(st.permutations(names))]
            if draw(st.booleans()):
                labels = st.integers(0, 10**6)
                out.index = draw(st.lists(labels, min_size=rows, max_size=rows, unique=True))
        return out

    return frame()


def _kind(name: str, dtype: str) -> str:
    try:
        parsed = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        parsed = None
    if parsed is not None:
        if pd.api.types.is_bool_dtype(parsed):
            return "bool"
        if pd.api.types.is_integer_dtype(parsed):
            return "int"
        if pd.api.types.is_float_dtype(parsed):
            return "float"
        if isinstance(parsed, pd.CategoricalDtype) or pd.api.types.is_string_dtype(parsed):
            return "text"
    raise TypeError(
        f"Column {name!r} has dtype {dtype!r}; mlpipe.testing generates numbers, booleans "
        "and text only. Leave the column out of the description (columns_of) and add it "
        "to the drawn frames yourself."
    )


def _valid_value(name: str, column: dict[str, Any]) -> st.SearchStrategy[Any]:
    kind = _kind(name, column["dtype"])
    if kind == "bool":
        return st.booleans()
    if kind == "text":
        categories = column.get("categories")
        if categories is None:
            return st.text(max_size=20)
        return st.sampled_from(categories) if categories else st.nothing()
    low, high = column.get("min"), column.get("max")
    if low is None or high is None:
        return st.nothing()  # every training value was missing
    if kind == "int":
        low_int = max(_INT64[0], math.ceil(low)) if math.isfinite(low) else _INT64[0]
        high_int = min(_INT64[1], math.floor(high)) if math.isfinite(high) else _INT64[1]
        return st.integers(low_int, high_int)
    return st.floats(
        low if math.isfinite(low) else None,
        high if math.isfinite(high) else None,
        allow_nan=False,
        allow_infinity=False,
    )


def _valid_cell(name: str, column: dict[str, Any]) -> st.SearchStrategy[Any]:
    value = _valid_value(name, column)
    return st.one_of(value, st.none()) if column.get("nullable") else value


def _hostile_cell(name: str, column: dict[str, Any]) -> st.SearchStrategy[Any]:
    """Values of the column's type that training did not have (mostly)."""
    kind = _kind(name, column["dtype"])
    ranged = column.get("min") is not None and column.get("max") is not None
    low, high = (float(column["min"]), float(column["max"])) if ranged else (0.0, 0.0)
    ranged = ranged and math.isfinite(high - low)
    if kind == "float":
        edges = [0.0, -1.0, 1e300, -1e300, math.inf, -math.inf]
        if ranged:
            edges += [2 * low - high - 1.0, 2 * high - low + 1.0]
        return st.one_of(_NULLS, st.sampled_from(edges), st.floats(allow_nan=False))
    if kind == "int":
        whole = [0, -1, *_INT64]
        fractional = [0.5, -0.5]
        if ranged:
            whole += [max(_INT64[0], math.ceil(low) - 1), min(_INT64[1], math.floor(high) + 1)]
            fractional = [low + 0.5, high - 0.5]
        return st.one_of(
            _NULLS,
            st.sampled_from([*whole, *fractional]),
            st.integers(*_INT64),
            st.floats(-1e15, 1e15, allow_nan=False),
        )
    if kind == "bool":
        return _NULLS
    categories = column.get("categories") or []
    variants = (
        st.sampled_from(categories).flatmap(
            lambda c: st.sampled_from([c.upper(), c.lower(), f" {c}", f"{c} "])
        )
        if categories
        else st.nothing()
    )
    return st.one_of(_NULLS, st.sampled_from(["", " "]), variants, st.text(max_size=12))


def _series(values: list[Any], column: dict[str, Any], typed: bool) -> pd.Series:
    """The column with its training dtype if ``typed``, else the dtype pandas infers."""
    if typed:
        try:
            return pd.Series(values, dtype=column["dtype"])
        except (TypeError, ValueError):
            pass
    return pd.Series(values)


def _checked(source: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    columns = {}
    for name, column in source.items():
        if not isinstance(column, Mapping) or "dtype" not in column:
            raise ValueError(
                f"Column {name!r}: a description is a dict with at least 'dtype' (and "
                f"'nullable', 'categories', 'min', 'max'), as columns_of returns; got {column!r}."
            )
        columns[str(name)] = {
            "dtype": str(column["dtype"]),
            "nullable": bool(column.get("nullable", False)),
            "categories": None if column.get("categories") is None else list(column["categories"]),
            "min": None if column.get("min") is None else float(column["min"]),
            "max": None if column.get("max") is None else float(column["max"]),
        }
    return columns


def _model_columns(uri: str) -> dict[str, dict[str, Any]]:
    """The description kept in an mlpipe model's ``meta.json``, else one from its signature."""
    from mlflow.models import Model

    model = Model.load(uri)
    artifacts = model.flavors.get("python_function", {}).get("artifacts") or {}
    with tempfile.TemporaryDirectory() as tmp:
        meta: dict[str, Any] = {}
        if "meta" in artifacts:
            meta = json.loads(_download(uri, artifacts["meta"]["path"], tmp).read_text())
        if meta.get("columns"):
            return _checked(meta["columns"])
        example = None
        info = model.saved_input_example_info or {}
        if info.get("type") == "dataframe" and info.get("artifact_path"):
            example = json.loads(_download(uri, info["artifact_path"], tmp).read_text())
    return _signature_columns(uri, model, meta.get("dtypes") or {}, example)


def _download(uri: str, relative: str, tmp: str) -> Path:
    base = _compat.model_artifact_uri(uri) if uri.startswith("models:/") else uri
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{base.rstrip('/')}/{relative}", dst_path=tmp
    )
    return Path(local)


def _signature_columns(
    uri: str, model: Any, dtypes: dict[str, str], example: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    """Columns of a model without mlpipe's description: signature types, example values."""
    from mlflow.types import ColSpec

    if example is None:
        raise ValueError(
            f"Model {uri} was logged without mlpipe's column description and without an "
            "input example: there is nothing to take its columns, categories and ranges "
            "from. Describe the columns yourself (see columns_of)."
        )
    rows = pd.DataFrame(example.get("data", []), columns=example.get("columns"))
    schema = model.signature.inputs if model.signature is not None else None
    types = {}
    if schema is not None and not schema.is_tensor_spec():
        types = {s.name: str(s.type) for s in schema.inputs if isinstance(s, ColSpec) and s.name}
    names = list(types) or [str(c) for c in rows.columns]
    columns = {}
    for name in names:
        dtype = dtypes.get(name) or _SIGNATURE_DTYPES.get(types.get(name, ""))
        values = rows[name] if name in rows.columns else pd.Series([], dtype=dtype or object)
        if dtype is not None:
            try:
                values = values.astype(dtype)
            except (TypeError, ValueError):
                pass
        columns[name] = describe_columns(values.to_frame(name))[name]
        if dtype is not None:
            columns[name]["dtype"] = dtype
    return columns
