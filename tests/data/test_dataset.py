"""load() of an in-memory frame, and the Dataset it returns."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe import schema


def test_load_logs_one_load_run_with_the_full_fingerprint():
    raw = load_penguins()
    ds = mlpipe.load(raw, name="penguins", target="species")
    run = mlflow.MlflowClient().get_run(ds.run_id)
    assert run.info.status == "FINISHED"
    assert ds.key == run.info.run_name and ds.key.startswith("penguins@")
    assert run.data.tags[schema.FINGERPRINT] == ds.fingerprint == mlpipe.fingerprint(raw)
    assert run.data.params[schema.ROWS] == "344"
    assert run.data.params[schema.COLUMNS] == "8"
    assert run.data.params[schema.TARGET] == "species"
    (dataset_input,) = run.inputs.dataset_inputs
    assert dataset_input.dataset.digest == ds.fingerprint
    assert "bill_length_mm" in dataset_input.dataset.schema
    assert list(ds.X.columns) == [c for c in raw.columns if c != "species"]
    assert ds.y.equals(raw["species"])
    assert ds.retrieved_at.strftime("%Y%m%d%H%M%S") == ds.key.split("@")[1]


def test_load_errors_say_what_was_expected():
    with pytest.raises(TypeError, match="or a pandas DataFrame; got dict"):
        mlpipe.load({"a": [1]}, name="x")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="needs name="):
        mlpipe.load(pd.DataFrame({"a": [1]}))
    with pytest.raises(KeyError, match="'b' is not in 'x'; its columns are \\['a'\\]"):
        mlpipe.load(pd.DataFrame({"a": [1]}), name="x", target="b")
