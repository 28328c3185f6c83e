"""A real ``mlflow models serve`` process answers raw penguin records over HTTP."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests

from tests.conftest import PENGUINS_SERVER, PenguinsServer
from tests.model._helpers import rows_with_nulls

# The session's served penguins model (tests/conftest.py): one worker serves it for all.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group(PENGUINS_SERVER)]


@pytest.fixture
def server(penguins_server: PenguinsServer) -> PenguinsServer:
    """The demo chain fitted with cv=None on every penguin, served by mlflow models serve."""
    return penguins_server


def _invoke(server: PenguinsServer, body: dict[str, Any]) -> Any:
    response = requests.post(
        f"{server.url}/invocations",
        data=json.dumps(body, allow_nan=False),
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return response.json()["predictions"]


def _split(frame: pd.DataFrame) -> dict[str, Any]:
    # pandas writes NaN and None as JSON null, as a client in any language would.
    body = json.loads(frame.to_json(orient="split", index=False))
    assert any(v is None for row in body["data"] for v in row)
    return body


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    records = json.loads(frame.to_json(orient="records"))
    assert any(v is None for record in records for v in record.values())
    return records


def test_dataframe_split_with_nulls(server: PenguinsServer) -> None:
    rows = rows_with_nulls(server.X)
    predictions = _invoke(server, {"dataframe_split": _split(rows)})
    expected = server.pipe.predict(rows)
    assert len(expected) == len(rows)
    assert predictions == expected.tolist()


def test_dataframe_records_with_nulls(server: PenguinsServer) -> None:
    rows = rows_with_nulls(server.X, n=20)
    # A null where training only saw integers must not be rejected or misread.
    rows.loc[rows.index[-1], "year"] = np.nan
    predictions = _invoke(server, {"dataframe_records": _records(rows)})
    assert predictions == server.pipe.predict(rows).tolist()


def test_every_penguin_served_as_records(server: PenguinsServer) -> None:
    predictions = _invoke(server, {"dataframe_records": _records(server.X)})
    expected = server.pipe.predict(server.X)
    assert predictions == expected.tolist()
    assert len(set(predictions)) == 3


def test_one_incomplete_record_per_request(server: PenguinsServer) -> None:
    # Production sends one record at a time: a column may then hold nothing but null.
    incomplete = server.X[server.X.isna().any(axis=1)]
    assert len(incomplete) >= 5
    classes = [str(c) for c in server.pipe.classes_]
    for index in incomplete.index:
        row = server.X.loc[[index]]
        (served,) = _invoke(
            server, {"dataframe_records": _records(row), "params": {"method": "predict_proba"}}
        )
        np.testing.assert_allclose(
            [served[c] for c in classes],
            server.pipe.predict_proba(row)[0],
            rtol=1e-12,
            atol=1e-15,
            err_msg=f"penguin {index}: {row.iloc[0].to_dict()}",
        )


def test_predict_proba_param(server: PenguinsServer) -> None:
    rows = rows_with_nulls(server.X)
    served = _invoke(
        server, {"dataframe_split": _split(rows), "params": {"method": "predict_proba"}}
    )
    classes = [str(c) for c in server.pipe.classes_]
    expected = server.pipe.predict_proba(rows)
    assert isinstance(served, list) and len(served) == len(rows)
    assert all(list(record) == classes for record in served)
    got = np.array([[record[c] for c in classes] for record in served])
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got.sum(axis=1), 1.0)


def test_missing_column_is_a_client_error(server: PenguinsServer) -> None:
    rows = rows_with_nulls(server.X).drop(columns="body_mass_g")
    response = requests.post(
        f"{server.url}/invocations",
        json={"dataframe_split": _split(rows)},
        timeout=30,
    )
    assert response.status_code == 400, response.text
    assert "body_mass_g" in response.text


def _frames_a_typed_schema_would_refuse(X: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Frames MLflow's typed columns refuse or misread (tests/model/test_signature.py)."""
    rows = rows_with_nulls(X).reset_index(drop=True)
    return {
        "the training frame": X,
        "every text value missing": rows.assign(island=np.nan, sex=np.nan),
        "missing and fractional years": rows.assign(
            year=[np.nan if i % 3 == 0 else 2007.5 + i % 2 for i in range(len(rows))]
        ),
        "a categorical island": rows.astype({"island": "category"}),
    }


@pytest.mark.parametrize("form", ["dataframe_split", "dataframe_records", "text/csv"])
def test_served_reads_every_value_as_predict_does(server: PenguinsServer, form: str) -> None:
    # The model declares no input columns, so no MLflow check refuses or converts these
    # first: each reaches the model as sent and is read as pipe.predict reads it.
    classes = [str(c) for c in server.pipe.classes_]
    for name, frame in _frames_a_typed_schema_would_refuse(server.X).items():
        if form == "text/csv":
            # A CSV body takes no params: compare the predicted classes.
            response = requests.post(
                f"{server.url}/invocations",
                data=frame.to_csv(index=False),
                headers={"Content-Type": "text/csv"},
                timeout=30,
            )
            assert response.status_code == 200, f"{name}: {response.text}"
            assert response.json()["predictions"] == server.pipe.predict(frame).tolist(), name
            continue
        data = _split(frame) if form == "dataframe_split" else _records(frame)
        served = _invoke(server, {form: data, "params": {"method": "predict_proba"}})
        got = np.array([[record[c] for c in classes] for record in served])
        np.testing.assert_allclose(
            got, server.pipe.predict_proba(frame), rtol=1e-12, atol=1e-15, err_msg=name
        )
