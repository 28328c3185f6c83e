"""The raw-input model reads every supported dtype as ``predict`` does (issue 11, items 2-4).

In process (``mlflow.pyfunc.load_model``) and served by a real ``mlflow models serve``
(``dataframe_split``, ``dataframe_records`` and ``text/csv`` bodies): datetimes keep
their unit and time zone, nullable, categorical and mixed columns are taken as
trained, and a boolean column takes booleans (and ``true``/``false`` as text) only.

The chain turns every datetime and duration into its integer value in its own unit,
so a model that hands the steps another resolution predicts numbers 1,000 times
off; it turns every other non-number into text, so a value that changes type on
the way (``1`` becoming ``"1"`` or ``1.0``) changes the prediction too.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LinearRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from mlpipe import LineagePipeline
from mlpipe.model._raw import InputError, prepare
from tests._server import ModelServer
from tests.strategies import _CSV_WORDS, MODEL_COLUMNS, model_frames

# The served tests share the module's model server: one worker starts it.
pytestmark = pytest.mark.xdist_group("dtypes_served")

MOMENTS = ["datetime", "datetimetz", "timedelta"]


# --- the chain: every dtype reaches a step that reads its exact value -----------------


def as_number(X: pd.DataFrame) -> np.ndarray:
    """Datetimes and durations as their integer value in their own unit (NaT as NaN)."""
    out = np.empty(X.shape, dtype="float64")
    for i, (_, column) in enumerate(X.items()):
        out[:, i] = np.asarray(column.array.asi8, dtype="float64")
        out[np.asarray(column.isna()), i] = np.nan
    return out


def as_text(X: pd.DataFrame) -> pd.DataFrame:
    """Every cell as text with its type: ``1``, ``"1"``, ``1.0`` and ``True`` stay apart."""

    def text(value: Any) -> str:
        missing = value is None or value is pd.NA or value is pd.NaT
        missing = missing or (isinstance(value, float) and math.isnan(value))
        return "<missing>" if missing else f"{type(value).__name__[:3]}:{value}"

    return pd.DataFrame(
        {name: [text(v) for v in column.astype(object)] for name, column in X.items()},
        index=X.index,
    )


def _plain(value: Any) -> Any:
    # numpy's bool and number scalars read as the Python values they hold.
    return value.item() if isinstance(value, np.generic) else value


def dtype_pipeline() -> LineagePipeline:
    processing = make_column_transformer(
        (
            SimpleImputer(keep_empty_features=True),
            make_column_selector(dtype_include="number", dtype_exclude="timedelta"),
        ),
        (
            make_pipeline(FunctionTransformer(as_number), SimpleImputer(keep_empty_features=True)),
            make_column_selector(dtype_include=MOMENTS),
        ),
        (
            make_pipeline(FunctionTransformer(as_text), OneHotEncoder(handle_unknown="ignore")),
            make_column_selector(dtype_exclude=["number", *MOMENTS]),
        ),
    )
    return LineagePipeline([("processing", processing), ("model", LinearRegression())], cv=None)


def target(frame: pd.DataFrame) -> pd.Series:
    return pd.Series(np.arange(len(frame), dtype="float64"), name="target")


@contextmanager
def fresh_store(template: Path) -> Iterator[str]:
    """A tracking store of its own for one Hypothesis example (fixtures are not reset)."""
    previous = mlflow.get_tracking_uri()
    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as patch:
        db = Path(tmp) / "mlflow.db"
        shutil.copy(template, db)
        uri = f"sqlite:///{db}"
        patch.chdir(tmp)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            yield uri
        finally:
            mlflow.set_tracking_uri(previous)


# --- request bodies, as a client in any language would send them ----------------------


def json_cell(value: Any) -> Any:
    """A cell as JSON: null when missing, ISO 8601 text for datetimes and durations."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, pd.Timestamp | pd.Timedelta):
        return value.isoformat()
    return _plain(value)


def split_body(frame: pd.DataFrame) -> dict[str, Any]:
    rows = [[json_cell(v) for v in row] for row in frame.astype(object).itertuples(index=False)]
    return {"dataframe_split": {"columns": list(frame.columns), "data": rows}}


def records_body(frame: pd.DataFrame) -> dict[str, Any]:
    columns = list(frame.columns)
    rows = split_body(frame)["dataframe_split"]["data"]
    return {"dataframe_records": [dict(zip(columns, row, strict=True)) for row in rows]}


def csv_body(frame: pd.DataFrame) -> str:
    out = io.StringIO()
    frame.to_csv(out, index=False)
    return out.getvalue()


def every_dtype_frame() -> pd.DataFrame:
    """Eight rows of every column of :data:`tests.strategies.MODEL_COLUMNS`, nulls included."""
    n = 8
    cells: dict[str, list[Any]] = {
        "float64": [0.5, None, -2.25, 1e6, 3.0, 0.0, None, 7.125],
        "int64": [2007, 2008, -5, 0, 10**12, 3, 4, 5],
        "Int64": [1, None, 3, -(10**12), 5, None, 7, 8],
        "Float64": [None, 1.5, 2.5, None, -0.5, 6.0, 7.25, 8.0],
        "boolean": [True, None, False, True, None, False, True, False],
        "bool": [True, False, True, True, False, False, True, False],
        "object": ["red", None, "blue", "a, b", 'say "x"', "é", None, "red"],
        "str": ["x", "y", None, "x", "zz", None, "y", "x"],
        "category": ["red", None, "blue", "green", "red", "blue", None, "green"],
        "category_int": [3, 1, None, 2, 3, 1, 2, None],
        "mixed": ["1", 1, 1.0, None, "a", 2.5, True, 1],
        "duration": [10**9, None, 1, -(10**12), 5 * 10**9, 0, None, 123_456_789],
    }
    moment = [1_704_067_200, None, 1_719_792_000, 0, 1_600_000_000, None, 1_000_000_000, 86_400]
    frame = pd.DataFrame()
    for column in MODEL_COLUMNS:
        values = cells.get(column.name)
        if values is None:  # a datetime: the same instants in the column's unit
            unit = column.name.split("_")[1]
            scale = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}[unit]
            # A fraction of a second where the unit holds one.
            values = [None if m is None else m * scale + (scale > 1) * 7 for m in moment]
        frame[column.name] = column.build(values[:n])
    return frame


def predictions(response: requests.Response) -> np.ndarray:
    assert response.status_code == 200, response.text[:3000]
    return np.asarray(response.json()["predictions"], dtype="float64")


# --- in process ----------------------------------------------------------------------


def _seconds_model() -> tuple[LineagePipeline, pd.DataFrame, pd.Series]:
    when = pd.to_datetime(["2024-01-01", "2024-02-01", "2024-03-01", "2024-04-01"]).as_unit("us")
    X = pd.DataFrame({"when": when})
    y = pd.Series(when.asi8 / 1e6, name="seconds")
    pipe = LineagePipeline(
        [("processing", FunctionTransformer(as_number)), ("model", LinearRegression())], cv=None
    ).fit(X, y)
    return pipe, X, y


def test_datetime_keeps_its_unit_in_process() -> None:
    pipe, X, y = _seconds_model()
    assert X["when"].dtype == "datetime64[us]"
    expected = pipe.predict(X)
    np.testing.assert_allclose(expected, y, rtol=1e-9)  # about 1.7e9
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    frames = {
        "as trained": X,
        "nanoseconds": X.astype({"when": "datetime64[ns]"}),
        "ISO 8601 text, as a server gets it": X.assign(when=[t.isoformat() for t in X["when"]]),
    }
    for name, frame in frames.items():
        np.testing.assert_allclose(model.predict(frame), expected, rtol=1e-9, err_msg=name)
        np.testing.assert_allclose(pipe.predict(frame), expected, rtol=1e-9, err_msg=name)


def test_time_zone_is_kept_and_converted() -> None:
    when = pd.to_datetime(["2024-01-01 10:00", None, "2024-07-01 10:00", "2024-03-31 02:30"])
    X = pd.DataFrame(
        {"when": when.as_unit("ms").tz_localize("UTC").tz_convert("Europe/Paris"), "f": [1.0] * 4}
    )
    pipe = dtype_pipeline().fit(X, target(X))
    expected = pipe.predict(X)
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    frames = {
        "as trained": X,
        "in another time zone": X.assign(when=X["when"].dt.tz_convert("America/New_York")),
        "ISO 8601 text with offsets": X.assign(when=[json_cell(t) for t in X["when"]]),
    }
    for name, frame in frames.items():
        np.testing.assert_allclose(model.predict(frame), expected, rtol=1e-12, err_msg=name)


def test_mixed_object_column_next_to_a_float_column() -> None:
    X = pd.DataFrame(
        {"mixed": pd.Series([1, "1", 1.0, None], dtype=object), "f": [0.5, 1.5, 2.5, 3.5]}
    )
    pipe = dtype_pipeline().fit(X, target(X))
    got = mlflow.pyfunc.load_model(pipe.model_uri_).predict(X)
    np.testing.assert_allclose(got, pipe.predict(X), rtol=1e-12)


def test_nullable_integer_with_missing_values() -> None:
    X = pd.DataFrame(
        {"i": pd.array([1, None, 3, 4], dtype="Int64"), "f": pd.array([0.5, None, 2.5, 3.5])}
    )
    pipe = dtype_pipeline().fit(X, target(X))
    got = mlflow.pyfunc.load_model(pipe.model_uri_).predict(X)
    np.testing.assert_allclose(got, pipe.predict(X), rtol=1e-12)


def test_signature_declares_params_but_no_column_types() -> None:
    # A typed column refuses dtypes of the training frame in process, an Any column
    # makes MLflow's server refuse every text/csv body: the model checks columns itself.
    X = every_dtype_frame()
    pipe = dtype_pipeline().fit(X, target(X))
    signature = mlflow.models.get_model_info(pipe.model_uri_).signature
    assert signature.inputs is None
    assert [p.name for p in signature.params.params] == ["method"]
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    np.testing.assert_allclose(model.predict(X), pipe.predict(X), rtol=1e-12)
    # Without MLflow's schema, the model itself takes a dict and records, and names
    # a missing column.
    first = X.head(1)
    np.testing.assert_allclose(
        model.predict(first.iloc[0].to_dict()), pipe.predict(first), rtol=1e-12
    )
    np.testing.assert_allclose(
        model.predict(first.to_dict(orient="records")), pipe.predict(first), rtol=1e-12
    )
    with pytest.raises(MlflowException, match="missing column.*'bool'") as raised:
        model.predict(X.drop(columns="bool"))
    assert raised.value.get_http_status_code() == 400
    with pytest.raises(MlflowException, match="named columns.*got ndarray") as raised:
        model.predict(X[["float64"]].to_numpy())
    assert raised.value.get_http_status_code() == 400


def _flag_model() -> tuple[LineagePipeline, Any, pd.DataFrame]:
    X = pd.DataFrame({"flag": [True, False, True, False], "f": [1.0, 2.0, 3.0, 4.0]})
    pipe = dtype_pipeline().fit(X, target(X))
    return pipe, mlflow.pyfunc.load_model(pipe.model_uri_), X


def test_boolean_column_refuses_anything_but_booleans() -> None:
    pipe, model, X = _flag_model()
    for value in ["No", "abc", "yes", "", 1, 0, 2.5]:
        frame = X.astype({"flag": object})
        frame.loc[1, "flag"] = value
        for predict in (model.predict, pipe.predict):
            with pytest.raises(ValueError) as raised:
                predict(frame)
            message = str(raised.value)
            assert "Column 'flag' must hold true or false (bool in training)" in message
            assert f"got {value!r} ({type(value).__name__}) in row 1" in message
        with pytest.raises(MlflowException) as mlflow_error:
            model.predict(frame)
        assert mlflow_error.value.get_http_status_code() == 400


def test_boolean_column_takes_booleans_and_true_false_as_text() -> None:
    pipe, model, X = _flag_model()
    expected = pipe.predict(X)
    frames = {
        "text": X.assign(flag=["true", "False", "TRUE", "false"]),
        "numpy booleans in an object column": X.astype({"flag": object}),
        "nullable booleans": X.astype({"flag": "boolean"}),
    }
    for name, frame in frames.items():
        np.testing.assert_allclose(model.predict(frame), expected, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(pipe.predict(frame), expected, rtol=1e-12, err_msg=name)
    # A missing value is not refused: the chain decides (here it encodes it as a category).
    missing = X.astype({"flag": object}).assign(flag=[True, None, np.nan, pd.NA])
    np.testing.assert_allclose(model.predict(missing), pipe.predict(missing), rtol=1e-12)


def test_text_that_is_not_a_date_names_the_column() -> None:
    pipe, X, _ = _seconds_model()
    model = mlflow.pyfunc.load_model(pipe.model_uri_)
    cases = {
        "soon": "Column 'when' must hold dates and times as ISO 8601 text "
        "(datetime64[us] in training), got 'soon' (str) in row 2.",
        1_704_067_200: "Column 'when' must hold dates and times as ISO 8601 text "
        "(datetime64[us] in training), got 1704067200 (int) in row 2.",
        "2024-01-01T00:00:00+01:00": "Column 'when' held dates and times without a time "
        "zone in training (datetime64[us]), got '2024-01-01T00:00:00+01:00' (str) with a "
        "UTC offset in row 2.",
    }
    for value, message in cases.items():
        frame = X.astype({"when": object})
        frame.loc[2, "when"] = value
        with pytest.raises(MlflowException) as raised:
            model.predict(frame)
        assert raised.value.message == message
        assert raised.value.get_http_status_code() == 400


def test_prepare_restores_moments_and_categories_exactly() -> None:
    dtypes = {
        "t": "datetime64[ns]",
        "z": "datetime64[ms, Europe/Paris]",
        "d": "timedelta64[us]",
        "c": "category",
    }
    known = {"c": {"categories": [3, 1, 2], "ordered": True}}
    frame = pd.DataFrame(
        {
            "t": ["2024-01-01T00:00:00.123456789", None],
            "z": ["2024-01-01T10:00:00+01:00", "2024-07-01 10:00:00Z"],
            "d": ["P0DT0H0M0.000001S", "1 days 02:00:00"],
            "c": [1.0, np.nan],
        }
    )
    out = prepare(frame, dtypes, select=True, categories=known)
    assert {c: str(d) for c, d in out.dtypes.items()} == dtypes
    assert out["t"][0] == pd.Timestamp("2024-01-01T00:00:00.123456789")
    assert out["z"].tolist() == [
        pd.Timestamp("2024-01-01 10:00", tz="Europe/Paris"),
        pd.Timestamp("2024-07-01 12:00", tz="Europe/Paris"),
    ]
    assert out["d"].tolist() == [pd.Timedelta(1, "us"), pd.Timedelta(hours=26)]
    # The training categories in their order (codes as in training), unseen ones after.
    assert out["c"].cat.categories.tolist() == [3, 1, 2] and out["c"].cat.ordered
    assert out["c"].cat.codes.tolist() == [1, -1]
    unseen = prepare(frame.assign(c=["x", 3]), dtypes, select=True, categories=known)
    assert unseen["c"].cat.categories.tolist() == [3, 1, 2, "x"]
    assert unseen["c"].cat.codes.tolist() == [3, 0]
    naive = frame.assign(z=pd.to_datetime(["2024-01-01", None]))
    with pytest.raises(InputError, match=r"got a datetime64\[\w+\] column without a UTC offset"):
        prepare(naive, dtypes)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        (
            "t",
            "3000-01-01",
            "Column 't' must hold dates and times as ISO 8601 text (datetime64[ns] in "
            "training), got '3000-01-01' (str) in row 1. It lies outside what "
            "datetime64[ns] can hold.",
        ),
        (
            "z",
            "2024-01-01 10:00",
            "Column 'z' held dates and times in time zone Europe/Paris in training "
            "(datetime64[ms, Europe/Paris]), got '2024-01-01 10:00' (str) without a UTC "
            "offset in row 1.",
        ),
        (
            "d",
            5,
            "Column 'd' must hold durations as text such as 'P1DT2H' (ISO 8601) or "
            "'1 days 02:00:00' (timedelta64[us] in training), got 5 (int) in row 1.",
        ),
        (
            "b",
            "yes",
            "Column 'b' must hold true or false (boolean in training), got 'yes' (str) in "
            "row 1. Text is read as a boolean only as true, True, TRUE, false, False or FALSE.",
        ),
    ],
)
def test_prepare_names_the_column_what_it_expects_and_what_it_got(
    column: str, value: Any, message: str
) -> None:
    dtypes = {
        "t": "datetime64[ns]",
        "z": "datetime64[ms, Europe/Paris]",
        "d": "timedelta64[us]",
        "b": "boolean",
    }
    frame = pd.DataFrame(
        {
            "t": ["2024-01-01", None],
            "z": ["2024-01-01T10:00:00+01:00", None],
            "d": ["1 days", None],
            "b": [True, None],
        },
        dtype=object,
    )
    frame.loc[1, column] = value
    with pytest.raises(InputError) as raised:
        prepare(frame, dtypes, select=True)
    assert raised.value.message == message


# Each example fits and logs a chain: a third of the profile's examples (5 by default).
@settings(max_examples=max(3, settings().max_examples // 3))
@given(frame=model_frames())
def test_pyfunc_predicts_its_training_frame_as_the_pipeline(
    frame: pd.DataFrame, _empty_store: Path
) -> None:
    with fresh_store(_empty_store):
        pipe = dtype_pipeline().fit(frame, target(frame))
        got = mlflow.pyfunc.load_model(pipe.model_uri_).predict(frame)
    np.testing.assert_allclose(got, pipe.predict(frame), rtol=1e-12)


# --- served -------------------------------------------------------------------------


@dataclass
class Served:
    url: str
    pipe: LineagePipeline
    X: pd.DataFrame

    def post(self, body: Any, content_type: str = "application/json") -> requests.Response:
        data = body if isinstance(body, str) else json.dumps(body, allow_nan=False)
        return requests.post(
            f"{self.url}/invocations",
            data=data.encode(),
            headers={"Content-Type": content_type},
            timeout=60,
        )


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """One ``mlflow models serve`` of the chain fitted on every dtype, for the module."""
    home = Path(tempfile.mkdtemp(prefix="mlpipe-dtypes-"))
    uri = f"sqlite:///{home / 'mlflow.db'}"
    X = every_dtype_frame()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(home)
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        mlflow.set_tracking_uri(uri)
        try:
            pipe = dtype_pipeline().fit(X, target(X))
        finally:
            # Between tests no URI is set (see conftest.py); leave it so.
            mlflow.set_tracking_uri(None)
    server = ModelServer(str(pipe.model_uri_), home / "server.log", uri)
    try:
        server.start(cwd=home)
        yield Served(url=server.url, pipe=pipe, X=X)
    finally:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.mark.slow
def test_served_training_frame_as_json_and_csv(served: Served) -> None:
    X, expected = served.X, served.pipe.predict(served.X)
    np.testing.assert_allclose(predictions(served.post(split_body(X))), expected, rtol=1e-12)
    np.testing.assert_allclose(predictions(served.post(records_body(X))), expected, rtol=1e-12)
    # A CSV body cannot tell 1 from "1": send text in the mixed column.
    text = X.assign(mixed=["a", None, "b", "a, b", "c", None, "a", "d"])
    got = predictions(served.post(csv_body(text), "text/csv"))
    np.testing.assert_allclose(got, served.pipe.predict(text), rtol=1e-12)


@pytest.mark.slow
@given(data=st.data())
def test_served_frames_as_json_and_csv(served: Served, data: st.DataObject) -> None:
    frame = data.draw(model_frames(columns=list(served.X.columns), min_rows=1))
    expected = served.pipe.predict(frame)
    np.testing.assert_allclose(predictions(served.post(split_body(frame))), expected, rtol=1e-12)
    words = st.lists(st.one_of(st.none(), _CSV_WORDS), min_size=len(frame), max_size=len(frame))
    text = frame.assign(mixed=pd.Series(data.draw(words), index=frame.index, dtype=object))
    got = predictions(served.post(csv_body(text), "text/csv"))
    np.testing.assert_allclose(got, served.pipe.predict(text), rtol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("value", ["No", "abc", "yes", 1])
def test_served_text_in_boolean_column_is_a_400(served: Served, value: Any) -> None:
    body = split_body(served.X.head(3))
    column = body["dataframe_split"]["columns"].index("bool")
    body["dataframe_split"]["data"][1][column] = value
    response = served.post(body)
    assert response.status_code == 400, response.text[:3000]
    message = response.json()["message"]
    assert "Column 'bool' must hold true or false (bool in training)" in message
    assert f"got {value!r} ({type(value).__name__}) in row 1" in message


@pytest.mark.slow
def test_served_boolean_column_as_text(served: Served) -> None:
    rows = served.X.head(4)
    expected = served.pipe.predict(rows)
    body = split_body(rows)
    column = body["dataframe_split"]["columns"].index("bool")
    for row in body["dataframe_split"]["data"]:
        row[column] = "true" if row[column] else "false"
    np.testing.assert_allclose(predictions(served.post(body)), expected, rtol=1e-12)
    # In CSV one bad cell turns the column into text: the good cells still read as booleans.
    text = csv_body(rows.astype({"bool": object}).assign(bool=["True", "No", "false", "True"]))
    response = served.post(text, "text/csv")
    assert response.status_code == 400, response.text[:3000]
    assert "got 'No' (str) in row 1" in response.json()["message"]


@pytest.mark.slow
def test_served_number_in_datetime_column_is_a_400(served: Served) -> None:
    body = split_body(served.X.head(3))
    column = body["dataframe_split"]["columns"].index("when_us")
    body["dataframe_split"]["data"][0][column] = 1_704_067_200_000
    response = served.post(body)
    assert response.status_code == 400, response.text[:3000]
    assert (
        "Column 'when_us' must hold dates and times as ISO 8601 text (datetime64[us] in "
        "training), got 1704067200000 (int) in row 0." in response.json()["message"]
    )


@pytest.mark.slow
def test_served_inputs_and_instances_bodies(served: Served) -> None:
    # Without input columns in the signature MLflow hands these over as dicts of arrays.
    rows = served.X
    expected = served.pipe.predict(rows)
    split = split_body(rows)["dataframe_split"]
    columns = {c: [row[i] for row in split["data"]] for i, c in enumerate(split["columns"])}
    instances = records_body(rows)["dataframe_records"]
    for body in ({"inputs": columns}, {"instances": instances}):
        got = predictions(served.post(body))
        np.testing.assert_allclose(got, expected, rtol=1e-12, err_msg=str(list(body)))


def test_boolean_column_reads_alike_whatever_form_its_values_take() -> None:
    # All booleans, all text (JSON with nulls, CSV) and a mix take different paths
    # through prepare (the first two vectorised); each gives the same column.
    dtypes = {"flag": "bool"}
    forms = {
        "booleans": [True, None, False, np.True_],
        "text": ["true", None, "FALSE", "True"],
        "mixed": [True, np.nan, "false", "TRUE"],
    }
    for name, values in forms.items():
        got = prepare(pd.DataFrame({"flag": pd.Series(values, dtype=object)}), dtypes)["flag"]
        assert got.dtype == np.dtype(object), name
        assert [type(v) for v in got] == [bool, float, bool, bool], name
        assert got[[0, 2, 3]].tolist() == [True, False, True], name
        assert math.isnan(got[1]), name
    complete = prepare(pd.DataFrame({"flag": ["false", "True"]}), dtypes)["flag"]
    assert complete.dtype == np.dtype(bool) and complete.tolist() == [False, True]
    # Text that is no boolean is refused, naming the first such value and its row.
    with pytest.raises(ValueError, match=r"got 'No' \(str\) in row 2\."):
        prepare(pd.DataFrame({"flag": ["true", None, "No", "yes"]}), dtypes)
