"""Why the raw-input model's signature declares no input columns (MLflow 3.17).

The issue asks for MLflow's input schema back (the UI shows it) at no cost per value.
A schema with input columns is enforced by MLflow before the model runs, in process
(``mlflow.pyfunc.load_model(...).predict``) and served, and each column type either
refuses a frame the model must take, misreads a served value, or (``Any``) makes
the server refuse every CSV body and is checked one value at a time. These tests pin
each of those behaviours of MLflow, through its public functions. If one fails after
an MLflow upgrade, the reason may be gone: revisit ``raw_signature`` in
``mlpipe/model/_package.py`` and ``docs/pyfunc.rst``.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.exceptions import MlflowException
from mlflow.models import validate_schema
from mlflow.pyfunc import scoring_server
from mlflow.types import ColSpec, DataType, Schema
from mlflow.types.schema import AnyType

from mlpipe.cli._demo import penguins_pipeline
from tests.model._helpers import penguins


def _schema(**types: DataType | AnyType) -> Schema:
    """The penguins' columns, typed as MLflow infers them unless ``types`` says otherwise."""
    inferred = {
        "island": DataType.string,
        "bill_length_mm": DataType.double,
        "bill_depth_mm": DataType.double,
        "flipper_length_mm": DataType.double,
        "body_mass_g": DataType.double,
        "sex": DataType.string,
        "year": DataType.long,
    }
    # Optional columns: a missing column is left to the model, which names it.
    return Schema([ColSpec(t, name, required=False) for name, t in {**inferred, **types}.items()])


def _rows() -> pd.DataFrame:
    X, _ = penguins()
    return X.dropna().head(3).reset_index(drop=True)


# (what the frame is, the column type that refuses it, the frame). Every frame is one
# that ``pipe.predict`` and the raw-input model take (tests/model/test_bad_input.py).
REFUSED: dict[str, tuple[dict[str, DataType], Callable[[], pd.DataFrame]]] = {
    "the training frame's int64 year, declared double": (
        {"year": DataType.double},
        _rows,
    ),
    "a missing year (float64), declared long": (
        {},
        lambda: _rows().assign(year=[2007.0, np.nan, 2009.0]),
    ),
    "a missing year (Int64), declared long": (
        {},
        lambda: _rows().assign(year=pd.array([2007, None, 2009], dtype="Int64")),
    ),
    "a text column with every value missing (float64), declared string": (
        {},
        lambda: _rows().assign(sex=np.nan),
    ),
    "a categorical text column, declared string": (
        {},
        lambda: _rows().astype({"island": "category"}),
    ),
    "whole numbers (int64) in a float column, declared double": (
        {},
        lambda: _rows().assign(body_mass_g=[3750, 3800, 3250]),
    ),
    "numbers as text in a float column, declared double": (
        {},
        lambda: _rows().assign(bill_length_mm=["39.1", "40", "41.5"]),
    ),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_a_typed_column_refuses_a_frame_the_model_takes(case: str) -> None:
    types, frame = REFUSED[case]
    # PyFuncModel.predict turns either into an MlflowException (HTTP 400).
    with pytest.raises((MlflowException, ValueError)):
        validate_schema(frame(), _schema(**types))


def test_the_raw_input_model_takes_them_as_predict_does() -> None:
    # What the model is logged with instead: no input columns, so MLflow checks
    # nothing and the model brings each column to its training dtype itself, once.
    X, y = penguins()
    pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    assert model.metadata.get_input_schema() is None
    for case, (_, frame) in REFUSED.items():
        got = model.predict(frame(), params={"method": "predict_proba"})
        np.testing.assert_allclose(got, pipe.predict_proba(frame()), rtol=1e-12, err_msg=case)


def test_a_served_long_column_truncates_a_fraction_and_refuses_null() -> None:
    rows = _rows().assign(year=[2007.0, 2008.5, 2009.0])
    body = {"dataframe_split": rows.to_dict(orient="split", index=False)}
    parsed = scoring_server.infer_and_parse_data(body, _schema())
    assert parsed["year"].tolist() == [2007, 2008, 2009]  # 2008.5 silently became 2008
    body["dataframe_split"]["data"][1][-1] = None
    with pytest.raises(MlflowException, match="year"):
        scoring_server.infer_and_parse_data(body, _schema())


def test_a_served_datetime_column_loses_its_unit() -> None:
    when = pd.DataFrame({"when": ["2024-01-01T00:00:00.123456"]})
    body = {"dataframe_split": when.to_dict(orient="split", index=False)}
    schema = Schema([ColSpec(DataType.datetime, "when", required=False)])
    parsed = scoring_server.infer_and_parse_data(body, schema)
    # A step that reads the integer value of a datetime64[us] column would see ns.
    assert parsed["when"].dtype == np.dtype("datetime64[ns]")


def test_any_columns_make_the_server_refuse_every_csv_body() -> None:
    csv = _rows().to_csv(index=False)
    schema = _schema(island=AnyType(), sex=AnyType(), year=AnyType())
    with pytest.raises(MlflowException, match="Failed to parse input"):
        scoring_server.parse_csv_input(io.StringIO(csv), schema)
    # Without input columns the same body is read (pandas guesses its types).
    assert len(scoring_server.parse_csv_input(io.StringIO(csv), None)) == 3
