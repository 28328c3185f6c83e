"""The raw-input model: what runs inside ``mlflow.pyfunc`` and ``mlflow models serve``.

This module must not import mlpipe: the logged model carries it by value, so the
model loads where only its logged requirements are installed.
"""

from __future__ import annotations

import json
import pickle
from typing import Any

import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel
from sklearn.pipeline import Pipeline

METHODS = ("predict", "predict_proba", "predict_log_proba", "decision_function", "transform")


def normalize_missing(frame: Any) -> Any:
    """Make every missing value ``NaN``, whatever it arrived as.

    ``None``, ``pd.NA``, ``NaN`` and a JSON ``null`` all mean "missing", but
    scikit-learn's imputers only see ``NaN``. Nullable integer and float columns
    become float64, nullable booleans and strings become object columns holding
    ``NaN`` for missing cells. Anything that is not a DataFrame is returned as is.
    """
    if not isinstance(frame, pd.DataFrame):
        return frame
    changed = {}
    for name, column in frame.items():
        dtype = column.dtype
        if isinstance(dtype, np.dtype) and dtype.kind != "O":
            continue
        if isinstance(dtype, pd.CategoricalDtype | pd.DatetimeTZDtype):
            continue
        if pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
            changed[name] = column.to_numpy(dtype="float64", na_value=np.nan)
        elif dtype == np.dtype(object) and not column.isna().any():
            continue
        else:
            values = column.to_numpy(dtype=object, na_value=np.nan, copy=True)
            values[pd.isna(values)] = np.nan
            changed[name] = values
    if not changed:
        return frame
    out = frame.copy(deep=False)
    for name, values in changed.items():
        out[name] = pd.Series(values, index=frame.index, dtype=values.dtype, name=name)
    return out


def prepare(frame: Any, dtypes: dict[str, str] | None, *, select: bool = False) -> Any:
    """Bring raw records to the dtypes the pipeline was fitted on.

    With ``select``, columns are also put in training order and extra columns are
    dropped, as the served model does. A column that was integer in training stays
    integer when its values are whole numbers; a fractional value or a missing
    value makes it float64 rather than being truncated. A column that was numeric
    in training and arrives as text is parsed as numbers; a value that is not a
    number raises ``ValueError`` naming the column.
    """
    if dtypes is None or not isinstance(frame, pd.DataFrame):
        return normalize_missing(frame)
    if select:
        missing = [c for c in dtypes if c not in frame.columns]
        if missing:
            raise ValueError(
                f"Input is missing column(s) {missing}; the model expects {list(dtypes)}, "
                f"got {list(map(str, frame.columns))}."
            )
        frame = frame[list(dtypes)]
    frame = normalize_missing(frame)
    out = {}
    for name, column in frame.items():
        expected = dtypes.get(name) if isinstance(name, str) else None
        if expected is None:
            out[name] = column
            continue
        kind = np.dtype(expected).kind if _is_numpy(expected) else "O"
        if kind in "iuf" and column.dtype.kind not in "iufb":
            try:
                column = pd.to_numeric(column.astype(object), errors="raise")
            except (ValueError, TypeError) as error:
                raise ValueError(
                    f"Column {name!r} must hold numbers ({expected} in training), "
                    f"got values such as {_bad_example(column)!r}: {error}"
                ) from None
        if kind in "iu" and column.dtype.kind == "f":
            values = column.to_numpy()
            if not np.isnan(values).any() and np.array_equal(values, np.round(values)):
                column = column.astype(expected)
        elif kind == "f" and column.dtype.kind in "iu":
            column = column.astype(expected)
        elif kind == "O" and column.dtype.kind != "O" and column.isna().all():
            # A text column whose every value is missing arrives as float NaN.
            column = column.astype(object)
        out[name] = column
    return pd.DataFrame(out, index=frame.index)


def _is_numpy(dtype: str) -> bool:
    try:
        np.dtype(dtype)
    except TypeError:
        return False
    return True


def _bad_example(column: pd.Series) -> object:
    parsed = pd.to_numeric(column.astype(object), errors="coerce")
    bad = column[parsed.isna() & column.notna()]
    return bad.iloc[0] if len(bad) else None


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
            raise ValueError(f"Unknown method {method!r}: this model offers {known}.")
        result = getattr(self.pipeline, method)(prepare(model_input, self.dtypes, select=True))
        if method != "predict" and np.ndim(result) == 2:
            classes = getattr(self.pipeline, "classes_", None)
            if classes is not None and len(classes) == np.shape(result)[1]:
                return pd.DataFrame(result, columns=[str(c) for c in classes])
        return result
