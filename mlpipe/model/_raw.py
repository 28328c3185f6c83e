"""The raw-input model: what runs inside ``mlflow.pyfunc`` and ``mlflow models serve``.

This module must not import mlpipe: the logged model carries it by value (or, with
``serializer="skops"``, as a source file, ``_mlpipe_raw``), so the model loads where
only its logged requirements are installed.
"""

from __future__ import annotations

import json
import pickle
import re
from typing import Any, NoReturn

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel
from sklearn.pipeline import Pipeline

METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")
# How much of an error, a list of values or of categories goes into a message.
_ERROR_CHARS = 300
_SHOWN_VALUES = 5
_SHOWN_CATEGORIES = 10
# Text a boolean column takes: what pandas.read_csv reads as a boolean, so that JSON
# and CSV bodies agree. Anything else (1, "yes", "No") is refused.
TRUE_TEXT = ("true", "True", "TRUE")
FALSE_TEXT = ("false", "False", "FALSE")
# A time followed by a UTC offset ("Z", "+01:00", "-0500", LMT's "+00:09:21").
_UTC_OFFSET = re.compile(
    r"[T ]\d{1,2}:\d{2}.*(?:[Zz]|[+-]\d{2}(?::?\d{2}(?::?\d{2}(?:\.\d+)?)?)?)\s*$"
)


# --- The one MLflow internal this module uses ------------------------------------
# It cannot go through mlpipe._compat like every other one: this module runs inside
# the logged model, where mlpipe is not installed.


def invalid_parameter_value() -> int:
    """MLflow's ``INVALID_PARAMETER_VALUE`` error code: an ``MlflowException`` with it is HTTP 400.

    Wraps ``mlflow.protos.databricks_pb2.INVALID_PARAMETER_VALUE`` (checked with MLflow
    3.17). ``MlflowException`` takes the protobuf enum's number and silently turns
    anything else, the name as a string included, into ``INTERNAL_ERROR`` (HTTP 500).
    Protobuf enum numbers are fixed once published, so 1000 is the fallback should
    the module move.
    """
    try:
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
    except ImportError:
        return 1000
    return int(INVALID_PARAMETER_VALUE)


_INVALID_PARAMETER_VALUE = invalid_parameter_value()


class InputError(MlflowException, ValueError):
    """Raw input the model cannot take: HTTP 400 when served, a ``ValueError`` in memory.

    MLflow's scoring server keeps the message and the error code of an
    ``MlflowException`` (any other exception becomes a 400 whose message names
    nothing), and callers in memory can catch it as a ``ValueError``.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, error_code=_INVALID_PARAMETER_VALUE)


def normalize_missing(frame: Any) -> Any:
    """Make every missing value ``NaN``, whatever it arrived as.

    ``None``, ``pd.NA``, ``NaN`` and a JSON ``null`` all mean "missing", but
    scikit-learn's imputers only see ``NaN``. Nullable integer and float columns
    become float64, nullable booleans and strings become object columns holding
    ``NaN`` for missing cells. Anything that is not a DataFrame is returned as is,
    and so is a frame that needs no change (it is not copied).
    """
    if not isinstance(frame, pd.DataFrame):
        return frame
    changed = {}
    for name, column in frame.items():
        values = _missing_as_nan(column)
        if values is not None:
            changed[name] = values
    if not changed:
        return frame
    out = frame.copy(deep=False)
    for name, values in changed.items():
        out[name] = pd.Series(values, index=frame.index, dtype=values.dtype, name=name)
    return out


def _missing_as_nan(column: pd.Series) -> np.ndarray | None:
    """``column``'s values with every missing value ``NaN``, or ``None`` if already so."""
    dtype = column.dtype
    if isinstance(dtype, np.dtype) and dtype.kind != "O":
        return None
    if isinstance(dtype, pd.CategoricalDtype | pd.DatetimeTZDtype):
        return None
    if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        return column.to_numpy(dtype="float64", na_value=np.nan)
    if dtype == np.dtype(object) and not column.isna().any():
        return None
    # Text and nullable booleans: an object array, every missing cell NaN (to_numpy
    # replaces None and pd.NA too, so nothing needs a second pass).
    return column.to_numpy(dtype=object, na_value=np.nan)


def prepare(
    frame: Any,
    dtypes: dict[str, str] | None,
    *,
    select: bool = False,
    categories: dict[str, dict[str, Any]] | None = None,
) -> Any:
    """Bring raw records to the dtypes the pipeline was fitted on.

    With ``select``, columns are also put in training order and extra columns are
    dropped, as the served model does. A column that was integer in training stays
    integer when its values are whole numbers; a fractional value or a missing
    value makes it float64 rather than being truncated. A column that was numeric
    in training and arrives as text is parsed as numbers. A datetime or duration
    column gets its training dtype back exactly, unit and time zone included, from
    another unit, another time zone or ISO 8601 text. A boolean column takes
    booleans and the text in ``TRUE_TEXT`` and ``FALSE_TEXT``. A categorical column
    gets the training categories (``categories``: ``{column: {"categories": [...],
    "ordered": bool}}``), values never seen appended, so none is lost. A value a
    column cannot take raises :class:`InputError` (a ``ValueError``) naming the
    column, what it expects, the value and its row. A frame that needs no change
    comes back as is, not copied.
    """
    if dtypes is None or not isinstance(frame, pd.DataFrame):
        return normalize_missing(frame)
    if select:
        missing = [c for c in dtypes if c not in frame.columns]
        if missing:
            raise InputError(
                f"Input is missing column(s) {missing}; the model expects {list(dtypes)}, "
                f"got {list(map(str, frame.columns))}."
            )
        if list(frame.columns) != list(dtypes):
            frame = frame[list(dtypes)]
    changed: dict[int, pd.Series] = {}
    for position, (name, dtype) in enumerate(frame.dtypes.items()):
        expected = dtypes.get(name) if isinstance(name, str) else None
        # Most columns arrive as they were trained: leave them untouched, unread.
        if isinstance(dtype, np.dtype) and dtype.kind != "O" and expected in (None, str(dtype)):
            continue
        if isinstance(dtype, pd.DatetimeTZDtype) and expected == str(dtype):
            continue
        column = original = frame.iloc[:, position]
        values = _missing_as_nan(column)
        if values is not None:
            column = pd.Series(values, index=frame.index, dtype=values.dtype, name=name)
        if expected is not None:
            known = (categories or {}).get(name)
            column = _as_trained(name, column, expected, known)
        if column is not original:
            changed[position] = column
    if not changed:
        return frame
    out = frame.copy(deep=False)
    for position, column in changed.items():
        out.isetitem(position, column)
    return out


def _as_trained(
    name: str, column: pd.Series, expected: str, known: dict[str, Any] | None = None
) -> pd.Series:
    """``column`` brought to the dtype ``expected`` it had in training, when that is safe."""
    trained = _dtype(expected)
    if isinstance(trained, pd.CategoricalDtype):
        return _as_category(column, known)
    if isinstance(trained, pd.BooleanDtype):
        return _as_boolean(name, column, expected, nullable=True)
    if isinstance(trained, pd.DatetimeTZDtype):
        return _as_moment(name, column, expected, trained)
    kind = trained.kind if isinstance(trained, np.dtype) else "O"
    if kind == "b":
        return _as_boolean(name, column, expected, nullable=False)
    if kind in "mM":
        return _as_moment(name, column, expected, trained)
    if kind in "iuf" and column.dtype.kind not in "iufb":
        try:
            column = pd.to_numeric(column.astype(object), errors="raise")
        except (ValueError, TypeError):
            label, value = _bad_number(column)
            raise InputError(
                f"Column {name!r} must hold numbers ({expected} in training), "
                f"got {value!r} ({type(value).__name__}) in row {label!r}."
            ) from None
    if kind in "iu" and column.dtype.kind == "f":
        values = column.to_numpy()
        # inf is "whole" too, but no integer holds it: it stays float, for explain() to name.
        if np.isfinite(values).all() and np.array_equal(values, np.round(values)):
            column = column.astype(expected)
    elif kind == "f" and column.dtype.kind in "iu":
        column = column.astype(expected)
    elif kind == "O" and column.dtype.kind != "O" and column.isna().all():
        # A text column whose every value is missing arrives as float NaN.
        column = column.astype(object)
    return column


def _dtype(expected: str) -> Any:
    """The dtype that ``expected`` (``str`` of a dtype) names, or ``None`` if none."""
    try:
        return pd.api.types.pandas_dtype(expected)
    except TypeError:
        return None


def _refuse(
    name: str, column: pd.Series, bad: Any, expects: str, expected: str, note: str = ""
) -> NoReturn:
    """Raise :class:`InputError` for the first ``True`` of ``bad``, a mask of ``column``."""
    label = _plain(column.index[np.asarray(bad)][0])
    value = _plain(column[np.asarray(bad)].iloc[0])
    raise InputError(
        f"Column {name!r} must hold {expects} ({expected} in training), "
        f"got {value!r} ({type(value).__name__}) in row {label!r}.{note}"
    )


def _as_boolean(name: str, column: pd.Series, expected: str, *, nullable: bool) -> pd.Series:
    """A boolean column: ``bool``, or ``object`` holding ``NaN`` where a value is missing.

    ``nullable`` (a ``boolean`` column in training, which the steps saw as such an
    ``object`` column) keeps the ``object`` column even with no value missing.
    """
    if column.dtype == np.dtype(bool) and not nullable:
        return column
    values = column.to_numpy(dtype=object, na_value=np.nan)
    missing = np.asarray(column.isna())
    present = ~missing
    out = np.full(len(values), np.nan, dtype=object)
    bad = np.zeros(len(values), dtype=bool)
    # One vectorised pass when every value present is a boolean, or every one is
    # text (as JSON with nulls and CSV bring them); one pass in Python for a mix.
    kind = pd.api.types.infer_dtype(values, skipna=True)
    if kind in ("boolean", "empty"):
        out[present] = values[present].astype(bool)
    elif kind == "string":
        text = pd.Series(values[present], dtype=object)
        true, false = text.isin(TRUE_TEXT).to_numpy(), text.isin(FALSE_TEXT).to_numpy()
        out[present] = true
        bad[present] = ~(true | false)
    else:
        for i, value in enumerate(values):
            if missing[i]:
                continue
            if isinstance(value, bool | np.bool_):
                out[i] = bool(value)
            elif isinstance(value, str) and value in TRUE_TEXT:
                out[i] = True
            elif isinstance(value, str) and value in FALSE_TEXT:
                out[i] = False
            else:
                bad[i] = True
    if bad.any():
        spelled = ", ".join((*TRUE_TEXT, *FALSE_TEXT[:-1]))
        note = f" Text is read as a boolean only as {spelled} or {FALSE_TEXT[-1]}."
        _refuse(name, column, bad, "true or false", expected, note)
    if nullable or missing.any():
        return pd.Series(out, index=column.index, dtype=object, name=column.name)
    return pd.Series(out.astype(bool), index=column.index, name=column.name)


def _as_moment(name: str, column: pd.Series, expected: str, trained: Any) -> pd.Series:
    """A datetime or duration column in the unit (and time zone) it had in training.

    It arrives in another unit or time zone (in memory), or as ISO 8601 text, or as
    ``Timestamp`` objects (served); a number is refused, since it does not say its
    unit, and so is a time zone where training had none, or none where it had one.
    """
    tz = getattr(trained, "tz", None)
    durations = isinstance(trained, np.dtype) and trained.kind == "m"
    dtype = column.dtype
    if dtype == trained:
        return column
    if durations:
        native = dtype.kind == "m"
    else:
        native = isinstance(dtype, pd.DatetimeTZDtype) or dtype.kind == "M"
    missing = column.isna()
    what = "durations" if durations else "dates and times"
    if native:
        if not durations and (getattr(dtype, "tz", None) is None) != (tz is None):
            raise InputError(_zone_message(name, expected, tz, f"a {dtype} column"))
        values = column
    elif missing.all():
        return pd.Series(pd.NaT, index=column.index, dtype=trained, name=column.name)
    else:
        what += (
            " as text such as 'P1DT2H' (ISO 8601) or '1 days 02:00:00'"
            if durations
            else " as ISO 8601 text"
        )
        values = column.astype(object)
        # Text (what JSON and CSV bring) holds no number: skip the pass in Python.
        if pd.api.types.infer_dtype(values, skipna=True) != "string":
            numbers = values.map(_is_number).astype(bool) & ~missing
            if numbers.any():
                _refuse(name, column, numbers, what, expected)
        if not durations:
            zoned = values.map(_has_offset).astype(float)
            wrong = np.asarray((zoned == (0.0 if tz is not None else 1.0)) & ~missing)
            if wrong.any():
                value = _plain(values[wrong].iloc[0])
                got = f"{value!r} ({type(value).__name__})"
                label = _plain(column.index[wrong][0])
                raise InputError(_zone_message(name, expected, tz, got, label=label))

    def convert(part: pd.Series) -> pd.Series:
        if not native:
            part = _parse_moments(part, durations, tz)
        elif tz is not None:
            part = part.dt.tz_convert(tz)
        return part.astype(trained)

    try:
        return convert(values).rename(column.name)
    except (ValueError, TypeError, OverflowError):
        for position in np.flatnonzero(~np.asarray(missing)):
            try:
                convert(values.iloc[[position]])
            except (ValueError, TypeError, OverflowError) as error:
                out_of_range = isinstance(
                    error,
                    OverflowError | pd.errors.OutOfBoundsDatetime | pd.errors.OutOfBoundsTimedelta,
                )
                note = f" It lies outside what {expected} can hold." if out_of_range else ""
                bad = np.arange(len(values)) == position
                _refuse(name, values, bad, what, expected, note)
        raise


def _is_number(value: Any) -> bool:
    # np.timedelta64 is a numpy integer too, but it says its unit.
    return isinstance(value, int | float | np.number) and not isinstance(value, np.timedelta64)


def _parse_moments(values: pd.Series, durations: bool, tz: Any) -> pd.Series:
    if durations:
        return pd.to_timedelta(values)
    parsed = pd.to_datetime(values, format="ISO8601", utc=tz is not None)
    return parsed.dt.tz_convert(tz) if tz is not None else parsed


def _has_offset(value: Any) -> float:
    """1.0 if a datetime value carries a UTC offset, 0.0 if not, NaN if it cannot tell."""
    if isinstance(value, str):
        return 1.0 if _UTC_OFFSET.search(value) else 0.0
    if isinstance(value, pd.Timestamp) or hasattr(value, "tzinfo"):
        return 0.0 if getattr(value, "tzinfo", None) is None else 1.0
    if isinstance(value, np.datetime64):
        return 0.0
    return np.nan


def _zone_message(name: str, expected: str, tz: Any, got: str, label: Any = None) -> str:
    row = "" if label is None else f" in row {label!r}"
    if tz is None:
        return (
            f"Column {name!r} held dates and times without a time zone in training "
            f"({expected}), got {got} with a UTC offset{row}."
        )
    return (
        f"Column {name!r} held dates and times in time zone {tz} in training ({expected}), "
        f"got {got} without a UTC offset{row}."
    )


def _as_category(column: pd.Series, known: dict[str, Any] | None) -> pd.Series:
    """A categorical column with the training categories, values never seen appended.

    Without the training categories (``known`` is ``None``, as in memory) a column
    that is not categorical becomes one with the categories its values give.
    """
    current = column.dtype
    if known is None:
        return column if isinstance(current, pd.CategoricalDtype) else column.astype("category")
    categories, ordered = list(known["categories"]), bool(known.get("ordered", False))
    if (
        isinstance(current, pd.CategoricalDtype)
        and current.ordered == ordered
        and list(current.categories) == categories
    ):
        return column
    values = column.astype(object)
    present = values[values.notna()]
    unseen = pd.unique(present[~present.isin(categories)].to_numpy(dtype=object))
    dtype = pd.CategoricalDtype([*categories, *unseen], ordered=ordered)
    return pd.Series(pd.Categorical(values, dtype=dtype), index=column.index, name=column.name)


def _bad_number(column: pd.Series) -> tuple[Any, Any]:
    """The row label and value of the first cell of ``column`` that is not a number."""
    parsed = pd.to_numeric(column.astype(object), errors="coerce")
    bad = column[parsed.isna() & column.notna()]
    return (_plain(bad.index[0]), _plain(bad.iloc[0])) if len(bad) else (None, None)


def _plain(value: Any) -> Any:
    """A numpy scalar as the Python value it holds: a message shows ``5``."""
    return value.item() if isinstance(value, np.generic) else value


def explain(
    frame: pd.DataFrame, columns: dict[str, dict[str, Any]], error: Exception
) -> str | None:
    """Why the pipeline failed on ``frame``, from what training saw, or ``None``.

    ``columns`` is the description of the training data that the model keeps
    (``describe_columns``). Named causes: a missing value in a column that had none
    in training, an infinite number (``inf``, ``-inf``: training data never holds
    one), a value that is not text in a column that held only text, and a category
    never seen in training. ``None`` when the input shows none of them: then the
    failure is not known to be the input's fault.

    An infinite number is named only here, once the pipeline has failed, because
    some pipelines take it (``HistGradientBoostingClassifier`` bins it), as some
    take missing values: those still predict, and a prediction that succeeds pays
    for no check.
    """
    problems = []
    for name, seen in columns.items():
        if name not in frame.columns:
            continue
        column = frame[name]
        missing = column.isna()
        if not seen.get("nullable", True) and missing.any():
            rows = [_plain(r) for r in column.index[missing][:_SHOWN_VALUES]]
            problems.append(
                f"column {name!r} had no missing values in training; the model cannot handle "
                f"them (got {int(missing.sum())}, in row(s) {rows}"
                f"{' ...' if missing.sum() > len(rows) else ''})"
            )
        infinite = _infinite(name, column, seen)
        if infinite:
            problems.append(infinite)
        categories = seen.get("categories")
        if categories is None:
            continue
        values = column[~missing]
        text = values.map(lambda v: isinstance(v, str), na_action=None).astype(bool)
        if not text.all():
            value = _plain(values[~text].iloc[0])
            problems.append(
                f"column {name!r} held only text in training, got {value!r} "
                f"({type(value).__name__}) in row {_plain(values[~text].index[0])!r}"
            )
        unseen = pd.unique(values[text & ~values.isin(categories)].to_numpy(dtype=object))
        if len(unseen):
            shown = ", ".join(map(repr, sorted(unseen)[:_SHOWN_VALUES]))
            known = ", ".join(map(repr, categories[:_SHOWN_CATEGORIES]))
            more = len(categories) - _SHOWN_CATEGORIES
            etc = ", ..." if len(unseen) > _SHOWN_VALUES else ""
            problems.append(
                f"column {name!r} got {len(unseen)} categor{'y' if len(unseen) == 1 else 'ies'} "
                f"never seen in training ({shown}{etc}); "
                f"training had {known}{f' and {more} more' if more > 0 else ''}"
            )
    if not problems:
        return None
    # scikit-learn says what went wrong on the first line and gives advice after it.
    lines = str(error).strip().splitlines()
    cause = f"{type(error).__name__}: {lines[0] if lines else ''}"
    if len(cause) > _ERROR_CHARS:
        cause = cause[: _ERROR_CHARS - 3] + "..."
    problem = "; ".join(problems)
    return f"{problem[0].upper()}{problem[1:]}. The model failed with {cause}"


def _infinite(name: str, column: pd.Series, seen: dict[str, Any]) -> str | None:
    """What ``explain`` says of the infinite numbers in ``column``, or ``None`` if none.

    Only for a column that held numbers in training: in a text column, a number is
    named as not being text.
    """
    if not (isinstance(column.dtype, np.dtype) and column.dtype.kind == "f"):
        return None
    if not _numeric(seen.get("dtype")):
        return None
    values = column.to_numpy()
    infinite = np.isinf(values)
    if not infinite.any():
        return None
    count = int(infinite.sum())
    shown = ", ".join(
        f"{value} in row {_plain(row)!r}"
        for row, value in zip(
            column.index[infinite][:_SHOWN_VALUES], values[infinite][:_SHOWN_VALUES], strict=True
        )
    )
    etc = f" and {count - _SHOWN_VALUES} more" if count > _SHOWN_VALUES else ""
    low, high = seen.get("min"), seen.get("max")
    trained = (
        f"training had values from {_number(low)} to {_number(high)}"
        if low is not None and high is not None
        else "training had only missing values there"
    )
    return (
        f"column {name!r} got {'an infinite number' if count == 1 else 'infinite numbers'} "
        f"({shown}{etc}), which the model cannot handle; {trained}"
    )


def _numeric(dtype: Any) -> bool:
    """Whether a dtype, as ``describe_columns`` writes it, is a number's, booleans aside."""
    if dtype is None:
        return False
    try:
        resolved = pd.api.types.pandas_dtype(dtype)
    except TypeError:
        return False
    return pd.api.types.is_numeric_dtype(resolved) and not pd.api.types.is_bool_dtype(resolved)


def _number(value: float) -> Any:
    """A training bound as a message shows it: ``2007`` rather than ``2007.0``."""
    whole = float(value).is_integer() and abs(value) < 2**53
    return int(value) if whole else value


def as_frame(model_input: Any) -> Any:
    """Records as a data frame: one record as a dict, or a list of them, or columns.

    The model's signature declares no columns, so MLflow hands the model a dict or a
    list as it got it rather than making a data frame of it first.
    """
    if isinstance(model_input, dict) and model_input:
        # MLflow's parser of "inputs" and "instances" bodies wraps cells in 0-d arrays.
        columns = {name: _unwrapped(values) for name, values in model_input.items()}
        if all(np.ndim(v) == 0 for v in columns.values()):
            return pd.DataFrame([columns])
        return pd.DataFrame(columns)
    if (
        isinstance(model_input, list)
        and model_input
        and all(isinstance(r, dict) for r in model_input)
    ):
        return pd.DataFrame(model_input)
    return model_input


def _unwrapped(values: Any) -> Any:
    """A 0-d array as its value; an object array's 0-d arrays as theirs."""
    if not isinstance(values, np.ndarray):
        return values
    if values.ndim == 0:
        return values.item()
    if values.dtype == np.dtype(object):
        return [v.item() if isinstance(v, np.ndarray) and v.ndim == 0 else v for v in values]
    return values


def empty_result(pipeline: Pipeline, method: str) -> Any:
    """What ``method`` returns for no rows (scikit-learn refuses to run on none)."""
    classes = getattr(pipeline, "classes_", None)
    if method == "predict":
        return np.empty(0, dtype=classes.dtype if classes is not None else "float64")
    if method != "transform" and classes is not None:
        if method == "decision_function" and len(classes) == 2:
            return np.empty(0, dtype="float64")
        return pd.DataFrame(columns=[str(c) for c in classes], dtype="float64")
    try:
        width = len(pipeline.get_feature_names_out())
    except (AttributeError, ValueError, TypeError):
        width = 0
    return np.empty((0, width), dtype="float64")


class RawInputModel(PythonModel):
    """A pyfunc model that takes raw records and runs every fitted stage on them.

    ``params={"method": "predict_proba"}`` (or ``predict_log_proba``,
    ``decision_function``) picks the pipeline method; the default is ``predict``.
    """

    def load_context(self, context: Any) -> None:
        with open(context.artifacts["meta"]) as f:
            meta = json.load(f)
        self.pipeline = Pipeline(self.load_steps(context))
        self.dtypes = meta["dtypes"]
        self.categories = meta.get("categories")
        self.default_method = "predict" if hasattr(self.pipeline, "predict") else "transform"

    def load_steps(self, context: Any) -> list[tuple[str, Any]]:
        """The fitted steps, in order: unpickled from the ``pipeline`` artifact.

        A model logged with ``serializer="skops"`` overrides this (see
        ``mlpipe/model/_skops_model.py``); everything else is shared.
        """
        with open(context.artifacts["pipeline"], "rb") as f:
            stages = pickle.load(f)
        steps = []
        for name, serializer, data in stages:
            if serializer == "dill":
                import dill

                steps.append((name, dill.loads(data)))
            else:
                import cloudpickle

                steps.append((name, cloudpickle.loads(data)))
        return steps

    # A DataFrame hint is one MLflow infers no schema from: the logged signature rules.
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> Any:
        method = (params or {}).get("method") or self.default_method
        if method not in METHODS or not hasattr(self.pipeline, method):
            known = [m for m in METHODS if hasattr(self.pipeline, m)]
            raise InputError(f"Unknown method {method!r}: this model offers {known}.")
        frame = as_frame(model_input)
        if self.dtypes is not None and not isinstance(frame, pd.DataFrame):
            raise InputError(
                f"The model takes records with named columns {list(self.dtypes)}: a data "
                f"frame, a dict or a list of dicts; got {type(model_input).__name__}."
            )
        X = prepare(frame, self.dtypes, select=True, categories=getattr(self, "categories", None))
        if len(X) == 0:
            return empty_result(self.pipeline, method)
        try:
            result = getattr(self.pipeline, method)(X)
        except (ValueError, TypeError) as error:
            # Only a failure the input explains becomes a client error (HTTP 400);
            # any other one is raised as it is.
            columns = self._columns(context)
            why = explain(X, columns, error) if columns and isinstance(X, pd.DataFrame) else None
            if why is None:
                raise
            raise InputError(why) from error
        if method != "predict" and np.ndim(result) == 2:
            classes = getattr(self.pipeline, "classes_", None)
            if classes is not None and len(classes) == np.shape(result)[1]:
                return pd.DataFrame(result, columns=[str(c) for c in classes])
        return result

    def _columns(self, context: Any) -> dict[str, dict[str, Any]] | None:
        """The training data's description from ``meta.json``, read at the first failure.

        A prediction that succeeds never needs it, so loading the model does not read it.
        """
        if "columns" not in self.__dict__:
            artifacts = getattr(context, "artifacts", None) or {}
            columns = None
            if "meta" in artifacts:
                with open(artifacts["meta"]) as f:
                    columns = json.load(f).get("columns")
            self.columns = columns
        return self.__dict__["columns"]
