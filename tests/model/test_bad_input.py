"""Bad raw input gets predictions or a 4xx that names the column, served and in memory.

Two raw-input models of the penguins: ``imputed`` (the demo chain: imputers, and a
``OneHotEncoder(handle_unknown="ignore")``), which accepts missing values and
unseen categories, and ``strict`` (no imputer, ``handle_unknown="error"``, fitted
on the complete rows), which accepts neither. Each case runs against a real
``mlflow models serve`` process per model (slow) and against the same model
loaded in this process with ``mlflow.pyfunc.load_model`` (fast).
"""

from __future__ import annotations

import json
import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pytest
import requests
from mlflow.exceptions import MlflowException
from sklearn.compose import make_column_selector, make_column_transformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from mlpipe import LineagePipeline
from mlpipe.model._raw import explain
from tests._server import ModelServer
from tests.conftest import PENGUINS_SERVER, PenguinsServer
from tests.model._helpers import penguins

# The tests share the session's served penguins model (tests/conftest.py) and the module's
# models: one worker fits and serves them.
pytestmark = pytest.mark.xdist_group(PENGUINS_SERVER)

COLUMNS = [
    "island",
    "bill_length_mm",
    "bill_depth_mm",
    "flipper_length_mm",
    "body_mass_g",
    "sex",
    "year",
]
# A served error message is MLflow's "Failed to predict data '<preview>'" and ours.
# pandas prints at most 60 rows (10 of a longer frame) of at most 80 characters in
# the preview, so a message stays short for any batch.
MAX_MESSAGE_CHARS = 8000


@dataclass
class Model:
    name: str
    pipe: LineagePipeline
    uri: str
    pyfunc: Any
    X: pd.DataFrame
    meta: dict[str, Any]
    url: str | None = None


@dataclass
class Models:
    home: Path
    tracking_uri: str
    by_name: dict[str, Model] = field(default_factory=dict)


def _strict_pipeline() -> LineagePipeline:
    processing = make_column_transformer(
        (StandardScaler(), make_column_selector(dtype_include="number")),
        (OneHotEncoder(handle_unknown="error"), make_column_selector(dtype_exclude="number")),
    )
    return LineagePipeline(
        [("processing", processing), ("model", LogisticRegression(max_iter=1000))], cv=None
    )


@pytest.fixture(scope="module")
def models(penguins_server: PenguinsServer) -> Iterator[Models]:
    # "imputed" is the session's served demo chain (tests/conftest.py); "strict" is fitted
    # here into the same store, so that every model URI resolves in one tracking URI.
    shared = penguins_server
    home = Path(tempfile.mkdtemp(prefix="mlpipe-bad-input-"))
    X, y = shared.X, shared.y
    complete = X.notna().all(axis=1)
    fitted = Models(home=home, tracking_uri=shared.tracking_uri)
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(shared.home)
            patch.setenv("MLFLOW_TRACKING_URI", shared.tracking_uri)
            mlflow.set_tracking_uri(shared.tracking_uri)
            try:
                strict = _strict_pipeline().fit(X.loc[complete], y.loc[complete])
                for name, pipe, rows, url in [
                    ("imputed", shared.pipe, X.index, shared.url),
                    ("strict", strict, X.index[complete], None),
                ]:
                    assert str(pipe.model_uri_).startswith("models:/m-"), pipe.model_uri_
                    files = Path(mlflow.artifacts.download_artifacts(pipe.model_uri_))
                    fitted.by_name[name] = Model(
                        name=name,
                        pipe=pipe,
                        uri=pipe.model_uri_,
                        pyfunc=mlflow.pyfunc.load_model(pipe.model_uri_),
                        X=X.loc[rows],
                        meta=json.loads((files / "artifacts" / "meta.json").read_text()),
                        url=url,
                    )
            finally:
                # Between tests no URI is set (see conftest.py); leave it so.
                mlflow.set_tracking_uri(None)
        yield fitted
    finally:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def served(models: Models) -> Iterator[Models]:
    """The models served: the session's server for "imputed", one of the module's for "strict"."""
    strict = models.by_name["strict"]
    server = ModelServer(strict.uri, models.home / "server-strict.log", models.tracking_uri)
    try:
        strict.url = server.start(cwd=models.home).url
        yield models
    finally:
        server.stop()
        strict.url = None


# ---------------------------------------------------------------------------
# The cases. Each builds the request from the model's training rows.


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    # NaN becomes null, as a client in any language would send it.
    records: list[dict[str, Any]] = json.loads(frame.to_json(orient="records"))
    return records


def _rows(model: Model, n: int = 4, *, complete: bool = True, seed: int = 0) -> pd.DataFrame:
    X = model.X.dropna() if complete else model.X
    return X.sample(n=n, random_state=seed, replace=n > len(X)).reset_index(drop=True)


@dataclass
class Case:
    """One bad input: the records to send and what must come back."""

    model: str
    records: Callable[[Model], list[dict[str, Any]]]
    # Predictions: the in-memory pipe on the same records must agree.
    predicts: bool = False
    # Or an error whose message holds every one of these.
    names: tuple[str, ...] = ()
    served_only: bool = False
    # A raw request body instead of records (served only).
    body: bytes | None = None
    # Keys other than "dataframe_records" (for instance "dataframe_split").
    split: bool = False
    # Sent with Infinity in the body (not JSON, but Python's json writes it and MLflow reads it).
    infinity: bool = False


def _with(model: Model, n: int = 4, **cells: Any) -> list[dict[str, Any]]:
    records = _records(_rows(model, n))
    for column, value in cells.items():
        records[1][column] = value
    return records


def _missing_column(model: Model) -> list[dict[str, Any]]:
    records = _records(_rows(model))
    for record in records:
        del record["body_mass_g"]
    return records


def _extra_column(model: Model) -> list[dict[str, Any]]:
    return [dict(r, ring_id=f"N{i}A", comments=None) for i, r in enumerate(_with(model))]


def _big_batch(model: Model) -> list[dict[str, Any]]:
    return _records(_rows(model, 10_000, complete=False, seed=3))


def _big_batch_one_bad(model: Model) -> list[dict[str, Any]]:
    records = _big_batch(model)
    records[5000]["year"] = "two thousand eight"
    return records


def _mixed_up(model: Model) -> list[dict[str, Any]]:
    """Every tolerable oddity at once, keys in a different order in each record."""
    records = _records(_rows(model, 40, complete=False, seed=5))
    records[0].update(island="Atlantis", sex="unknown")
    records[1].update(year=None, island=None)
    records[2].update(year="2008", bill_length_mm=None)
    records[3].update(year=2008.5, body_mass_g=4000)
    records[4].update(sex=None, flipper_length_mm=None)
    records[5]["tag"] = "extra"
    rng = np.random.default_rng(0)
    return [dict(sorted(r.items(), key=lambda _: rng.random())) for r in records]


def _mixed_up_strict(model: Model) -> list[dict[str, Any]]:
    records = _records(_rows(model, 30, seed=6))
    records[2]["bill_length_mm"] = None
    records[7]["island"] = "Atlantis"
    records[9]["sex"] = None
    return records


CASES = {
    "missing_column": Case("imputed", _missing_column, names=("body_mass_g",)),
    "extra_column": Case("imputed", _extra_column, predicts=True),
    "text_in_float_column": Case(
        "imputed", lambda m: _with(m, bill_length_mm="long"), names=("bill_length_mm",)
    ),
    "text_in_integer_column": Case(
        "imputed", lambda m: _with(m, year="last year"), names=("year", "last year", "row 1")
    ),
    "number_as_text_in_integer_column": Case(
        "imputed", lambda m: _with(m, year="2008"), predicts=True
    ),
    "fraction_in_integer_column": Case("imputed", lambda m: _with(m, year=2008.5), predicts=True),
    "number_in_text_column_ignored": Case("imputed", lambda m: _with(m, island=7), predicts=True),
    "number_in_text_column_rejected": Case(
        "strict", lambda m: _with(m, island=7), names=("island", "held only text", "row 1")
    ),
    "null_never_seen_imputed": Case(
        "imputed", lambda m: _with(m, year=None, island=None), predicts=True
    ),
    "null_never_seen_number": Case(
        "strict",
        lambda m: _with(m, bill_length_mm=None),
        names=("bill_length_mm", "had no missing values in training", "row(s) [1]"),
    ),
    "null_never_seen_text": Case(
        "strict",
        lambda m: _with(m, island=None),
        names=("island", "had no missing values in training"),
    ),
    "unseen_category_ignored": Case(
        "imputed", lambda m: _with(m, island="Atlantis"), predicts=True
    ),
    "unseen_category_rejected": Case(
        "strict",
        lambda m: _with(m, island="Atlantis"),
        names=("island", "'Atlantis'", "never seen in training", "'Biscoe'"),
    ),
    # The penguins' training ranges: bill_length_mm 32.1 to 59.6, year 2007 to 2009.
    "infinity_in_float_column": Case(
        "imputed",
        lambda m: _with(m, bill_length_mm=math.inf),
        names=(
            "bill_length_mm",
            "an infinite number (inf in row 1)",
            "training had values from 32.1 to 59.6",
            "Input X contains infinity",
        ),
        infinity=True,
    ),
    "minus_infinity_in_integer_column": Case(
        "strict",
        lambda m: _with(m, year=-math.inf),
        names=("year", "(-inf in row 1)", "training had values from 2007 to 2009"),
        infinity=True,
    ),
    "infinities_in_two_columns": Case(
        "imputed",
        lambda m: [
            dict(
                r,
                body_mass_g=math.inf if i % 2 else -math.inf,
                year=math.inf if i == 3 else r["year"],
            )
            for i, r in enumerate(_records(_rows(m, 8)))
        ],
        names=(
            "body_mass_g",
            "infinite numbers (-inf in row 0, inf in row 1, -inf in row 2, inf in row 3, "
            "-inf in row 4 and 3 more)",
            "column 'year' got an infinite number (inf in row 3)",
        ),
        infinity=True,
        split=True,
    ),
    "empty_body": Case("imputed", lambda m: [], names=("JSON",), served_only=True, body=b""),
    "malformed_json": Case(
        "imputed",
        lambda m: [],
        names=("JSON",),
        served_only=True,
        body=b'{"dataframe_records": [{"island": "Dream", ',
    ),
    "empty_frame": Case("imputed", lambda m: [], predicts=True, split=True),
    "batch_of_10000": Case("imputed", _big_batch, predicts=True, split=True),
    "batch_of_10000_one_bad": Case(
        "imputed", _big_batch_one_bad, names=("year", "two thousand eight", "row 5000"), split=True
    ),
    "mixed_up_batch": Case("imputed", _mixed_up, predicts=True),
    "mixed_up_batch_strict": Case(
        "strict",
        _mixed_up_strict,
        names=("bill_length_mm", "island", "'Atlantis'", "sex", "row(s) [2]"),
    ),
}


def _frame(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The records as a data frame, as a caller in Python would build it."""
    if not records:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in COLUMNS})
    return pd.DataFrame.from_records(records)


def _expected(model: Model, frame: pd.DataFrame) -> Any:
    # The in-memory pipeline drops no columns itself: give it the model's columns.
    if len(frame) == 0:
        return np.empty((0, len(model.pipe.classes_)))
    return model.pipe.predict_proba(frame[COLUMNS])


def _body(case: Case, records: list[dict[str, Any]]) -> bytes:
    if case.body is not None:
        return case.body
    if case.split:
        columns = list(records[0]) if records else COLUMNS
        data = {"columns": columns, "data": [[r.get(c) for c in columns] for r in records]}
        payload: dict[str, Any] = {"dataframe_split": data}
    else:
        payload = {"dataframe_records": records}
    payload["params"] = {"method": "predict_proba"}
    # NaN is not JSON: a client sends null. Infinity is not JSON either, but Python's
    # json writes it and MLflow's server reads it: the infinity cases send it.
    return json.dumps(payload, allow_nan=case.infinity).encode()


def _probabilities(model: Model, predictions: list[dict[str, float]]) -> np.ndarray:
    classes = [str(c) for c in model.pipe.classes_]
    return np.array([[p[c] for c in classes] for p in predictions]).reshape(-1, len(classes))


@pytest.mark.slow
@pytest.mark.parametrize("name", list(CASES))
def test_served(served: Models, name: str) -> None:
    case = CASES[name]
    model = served.by_name[case.model]
    assert model.url is not None
    records = case.records(model)
    response = requests.post(
        f"{model.url}/invocations",
        data=_body(case, records),
        headers={"Content-Type": "application/json"},
        timeout=120,
    )
    if case.predicts:
        assert response.status_code == 200, response.text[:MAX_MESSAGE_CHARS]
        got = _probabilities(model, response.json()["predictions"])
        np.testing.assert_allclose(got, _expected(model, _frame(records)), rtol=1e-9, atol=1e-12)
        return
    assert 400 <= response.status_code < 500, response.text[:MAX_MESSAGE_CHARS]
    message = response.json()["message"]
    assert len(message) < MAX_MESSAGE_CHARS, message[:MAX_MESSAGE_CHARS]
    for part in case.names:
        assert part in message, message


# scikit-learn's finiteness check sums the array first: inf + -inf warns, then it raises.
@pytest.mark.filterwarnings("ignore:invalid value encountered in reduce:RuntimeWarning")
@pytest.mark.parametrize("name", [n for n, c in CASES.items() if not c.served_only])
def test_in_process(models: Models, name: str) -> None:
    case = CASES[name]
    model = models.by_name[case.model]
    frame = _frame(case.records(model))
    params = {"method": "predict_proba"}
    if case.predicts:
        got = model.pyfunc.predict(frame, params=params)
        np.testing.assert_allclose(
            np.asarray(got, dtype=float).reshape(len(frame), len(model.pipe.classes_)),
            _expected(model, frame),
            rtol=1e-9,
            atol=1e-12,
        )
        return
    with pytest.raises(MlflowException) as raised:
        model.pyfunc.predict(frame, params=params)
    assert raised.value.get_http_status_code() == 400, raised.value.message
    for part in case.names:
        assert part in raised.value.message, raised.value.message


def test_fraction_in_integer_column_is_not_truncated(models: Models) -> None:
    model = models.by_name["imputed"]
    rows = _rows(model, 1)
    whole, fraction = rows.assign(year=2008), rows.assign(year=2008.5)
    params = {"method": "predict_proba"}
    got = model.pyfunc.predict(fraction, params=params).to_numpy()
    np.testing.assert_allclose(got, model.pipe.predict_proba(fraction), rtol=1e-12)
    assert not np.array_equal(got, model.pyfunc.predict(whole, params=params).to_numpy())


def test_infinity_reaches_a_pipeline_that_takes_it() -> None:
    # Infinity is named only when the pipeline fails: one that bins it still predicts.
    X, y = penguins()
    pipe = LineagePipeline(
        [
            (
                "processing",
                make_column_transformer(
                    (OneHotEncoder(handle_unknown="ignore"), ["island", "sex"]),
                    remainder="passthrough",
                ),
            ),
            ("model", HistGradientBoostingClassifier(max_iter=10, random_state=0)),
        ],
        cv=None,
    ).fit(X, y)
    rows = X.head(4).assign(bill_length_mm=[math.inf, -math.inf, 40.0, np.nan])
    got = mlflow.pyfunc.load_model(pipe.model_uri_).predict(rows)
    assert got.tolist() == pipe.predict(rows).tolist()


def test_explain_names_infinite_numbers_in_number_columns_only() -> None:
    frame = pd.DataFrame(
        {
            "mass": [math.inf, 1.0, -math.inf, *[math.inf] * 5],
            "empty": [math.inf, *[np.nan] * 7],
            "text": [math.inf] * 8,
        },
        index=range(10, 18),
    )
    columns = {
        "mass": {"dtype": "float64", "nullable": False, "min": 1.5, "max": 3000.0},
        "empty": {"dtype": "Float64", "nullable": True, "min": None, "max": None},
        "text": {"dtype": "object", "nullable": False, "categories": None},
    }
    why = explain(frame, columns, ValueError("Input X contains infinity"))
    assert why == (
        "Column 'mass' got infinite numbers (inf in row 10, -inf in row 12, inf in row 13, "
        "inf in row 14, inf in row 15 and 2 more), which the model cannot handle; training "
        "had values from 1.5 to 3000; column 'empty' got an infinite number (inf in row 10), "
        "which the model cannot handle; training had only missing values there. "
        "The model failed with ValueError: Input X contains infinity"
    )
    # A failure on finite numbers, however far out of range, is not the input's fault.
    finite = pd.DataFrame({"mass": [1e300, -1e300], "empty": [0.0, np.nan], "text": ["a", "b"]})
    assert explain(finite, columns, ValueError("x")) is None


def test_in_process_takes_frames_a_typed_signature_would_refuse(models: Models) -> None:
    # Why the signature declares no column types: MLflow's in-process check refuses an
    # int64 column declared double and a non-text column declared string (and Any
    # columns make its server refuse every text/csv body): the model checks them itself.
    model = models.by_name["imputed"]
    assert model.pyfunc.metadata.get_input_schema() is None
    rows = _rows(model, 3)
    assert rows["year"].dtype == "int64"
    frames = {
        "as trained": rows,
        "no sex in any row": rows.assign(sex=np.nan),
        "numbers for islands": rows.assign(island=[1, 2, 3]),
        "categorical island": rows.astype({"island": "category"}),
    }
    for name, frame in frames.items():
        got = model.pyfunc.predict(frame, params={"method": "predict_proba"})
        np.testing.assert_allclose(got, _expected(model, frame), rtol=1e-12, err_msg=name)


def test_unknown_method_names_the_methods(models: Models) -> None:
    model = models.by_name["imputed"]
    with pytest.raises(MlflowException, match="predict_proba") as raised:
        model.pyfunc.predict(_rows(model, 1), params={"method": "fit"})
    assert raised.value.get_http_status_code() == 400
    assert isinstance(raised.value, ValueError)


def test_empty_frame_gives_empty_predictions(models: Models) -> None:
    model = models.by_name["imputed"]
    empty = _frame([])
    assert model.pyfunc.predict(empty).tolist() == []
    proba = model.pyfunc.predict(empty, params={"method": "predict_proba"})
    assert list(proba.columns) == [str(c) for c in model.pipe.classes_] and len(proba) == 0


def test_meta_describes_the_training_columns(models: Models) -> None:
    imputed, strict = models.by_name["imputed"].meta, models.by_name["strict"].meta
    assert list(imputed["dtypes"]) == COLUMNS
    assert list(imputed["columns"]) == COLUMNS
    assert imputed["columns"]["island"] == {
        "dtype": "object",
        "nullable": False,
        "categories": ["Biscoe", "Dream", "Torgersen"],
        "min": None,
        "max": None,
    }
    assert imputed["columns"]["sex"]["nullable"] is True
    assert imputed["columns"]["sex"]["categories"] == ["female", "male"]
    assert imputed["columns"]["year"] == {
        "dtype": "int64",
        "nullable": False,
        "categories": None,
        "min": 2007.0,
        "max": 2009.0,
    }
    assert imputed["columns"]["bill_length_mm"]["nullable"] is True
    assert not any(c["nullable"] for c in strict["columns"].values())


def _json_value(value: Any) -> Any:
    # What a client sends: null for any missing value, numbers and text as they are.
    if value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value


@pytest.mark.slow
@pytest.mark.parametrize("model_name", ["imputed", "strict"])
@pytest.mark.parametrize("valid", [True, False], ids=["valid", "hostile"])
def test_thousand_generated_rows_served(
    served: Models, monkeypatch: pytest.MonkeyPatch, model_name: str, valid: bool
) -> None:
    """1,000 raw rows from mlpipe.testing's strategies, served: the in-process answer.

    Hypothesis cannot draw 1,000 rows in one example, so 50 requests of 20 rows.
    """
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from mlpipe.testing import raw_frames

    model = served.by_name[model_name]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", served.tracking_uri)
    mlflow.set_tracking_uri(served.tracking_uri)
    frames = raw_frames(model.uri, valid=valid, min_rows=20, max_rows=20)
    sent = []

    @settings(
        max_examples=50, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        frame = data.draw(frames)
        sent.append(len(frame))
        body = {
            "dataframe_split": {
                "columns": list(frame.columns),
                "data": [[_json_value(v) for v in row] for row in frame.itertuples(index=False)],
            },
            "params": {"method": "predict_proba"},
        }
        response = requests.post(
            f"{model.url}/invocations",
            data=json.dumps(body, allow_nan=True),
            headers={"Content-Type": "application/json"},
            timeout=120,
        )
        assert response.status_code < 500, response.text[:MAX_MESSAGE_CHARS]
        try:
            expected = model.pyfunc.predict(frame, params={"method": "predict_proba"})
        except MlflowException as error:
            assert not valid, f"valid rows rejected: {error.message}"
            # Rejected in process: rejected served too, for the same column.
            assert 400 <= error.get_http_status_code() < 500
            assert response.status_code == 400, response.text[:MAX_MESSAGE_CHARS]
            column = str(error.message).split("'")[1]
            assert column in response.json()["message"]
            return
        assert response.status_code == 200, response.text[:MAX_MESSAGE_CHARS]
        got = _probabilities(model, response.json()["predictions"])
        np.testing.assert_allclose(got, np.asarray(expected), rtol=1e-9, atol=1e-12)

    check()
    assert sum(sent) >= 1000
