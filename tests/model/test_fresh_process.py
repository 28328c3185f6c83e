"""The raw-input model predicts in a process that never saw the code that fitted it."""

from __future__ import annotations

import pickle
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from sklearn.pipeline import Pipeline

from mlpipe.cli._demo import penguins_pipeline
from tests.model._helpers import (
    penguins,
    rows_with_nulls,
    run_python,
    subprocess_env,
    write_local_modules,
)

FIT_SCRIPT = """
import json
import pickle
import sys

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer

sys.path.insert(0, {module_dir!r})
import penguin_features  # a local module, on sys.path only in this process

import mlpipe
from mlpipe.cli._demo import penguins_pipeline


class BillShape(BaseEstimator, TransformerMixin):
    \"\"\"Defined in __main__: its code exists only in this process.\"\"\"

    def __init__(self, scale=1.0):
        self.scale = scale

    def fit(self, X, y=None):
        self.median_ratio_ = float((X["bill_length_mm"] / X["bill_depth_mm"]).median())
        return self

    def transform(self, X):
        ratio = X["bill_length_mm"] / X["bill_depth_mm"]
        return X.assign(bill_ratio=self.scale * (ratio - self.median_ratio_))


if __name__ == "__main__":
    with open({data!r}, "rb") as f:
        X, y, rows = pickle.load(f)
    features = make_pipeline(
        BillShape(scale=2.0),
        FunctionTransformer(lambda X: X.assign(log_mass=np.log(X["body_mass_g"]))),
        penguin_features.BodyMassKilograms(),
    )
    demo = penguins_pipeline()
    pipe = mlpipe.LineagePipeline([("features", features), *demo.steps], cv=None).fit(X, y)
    transformed = pipe[:1].transform(rows)
    assert {{"bill_ratio", "log_mass", "body_mass_kg", "body_mass_dev"}} <= set(
        transformed.columns
    ), list(transformed.columns)
    print(
        json.dumps(
            {{
                "model_uri": pipe.model_uri_,
                "predictions": pipe.predict(rows).tolist(),
                "proba": pipe.predict_proba(rows).tolist(),
                "classes": pipe.classes_.tolist(),
            }}
        )
    )
"""

LOAD_SCRIPT = """
import importlib.util
import json
import pickle
import sys

import mlflow

for name in ("penguin_features", "penguin_scales"):
    assert importlib.util.find_spec(name) is None, f"{{name}} is importable: {{sys.path}}"

with open({data!r}, "rb") as f:
    _, _, rows = pickle.load(f)
model = mlflow.pyfunc.load_model({uri!r})
predictions = model.predict(rows)
proba = model.predict(rows, params={{"method": "predict_proba"}})
# The model carries its own code: loading and predicting must not need mlpipe.
assert "mlpipe" not in sys.modules, sorted(m for m in sys.modules if m.startswith("mlpipe"))
print(
    json.dumps(
        {{
            "predictions": list(predictions),
            "proba": proba.to_numpy().tolist(),
            "columns": list(proba.columns),
        }}
    )
)
"""


def test_model_predicts_in_a_fresh_process(tmp_path: Path, tracking_store: str) -> None:
    X, y = penguins()
    rows = rows_with_nulls(X)
    data = tmp_path / "data.pkl"
    data.write_bytes(pickle.dumps((X, y, rows)))
    module_dir = write_local_modules(tmp_path / "local_modules")
    env = subprocess_env(tracking_store)

    fit_dir = tmp_path / "fit"
    fit_dir.mkdir()
    fit_script = fit_dir / "fit.py"
    fit_script.write_text(FIT_SCRIPT.format(module_dir=str(module_dir), data=str(data)))
    fitted = run_python(fit_script, cwd=fit_dir, env=env)

    uri = fitted["model_uri"]
    assert uri.startswith("models:/m-")
    assert len(fitted["predictions"]) == len(rows)
    assert set(fitted["predictions"]) <= set(fitted["classes"])
    # Real penguins, most of them complete: a working chain names nearly all of them.
    assert (np.array(fitted["predictions"]) == y.loc[rows.index].to_numpy()).mean() > 0.8

    # A different directory, without the local module dir: only the model travels.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    load_script = elsewhere / "load.py"
    load_script.write_text(LOAD_SCRIPT.format(data=str(data), uri=uri))
    loaded = run_python(load_script, cwd=elsewhere, env=env)

    assert loaded["predictions"] == fitted["predictions"]
    assert loaded["columns"] == fitted["classes"]
    np.testing.assert_allclose(loaded["proba"], fitted["proba"], rtol=1e-12, atol=1e-15)


def _missing(value: object) -> pd.DataFrame:
    """Complete penguins whose row 1 misses a text, a float and an integer cell as ``value``."""
    X, _ = penguins()
    frame = X.dropna().head(6).reset_index(drop=True)
    gap = frame.index == 1
    if value is None:
        # None survives only in object columns; pandas turns it into NaN elsewhere.
        for name in ("sex", "bill_length_mm", "year"):
            column = frame[name].astype(object)
            column[gap] = None
            frame[name] = column
    elif value is np.nan:
        frame["sex"] = frame["sex"].where(~gap, np.nan)
        frame["bill_length_mm"] = frame["bill_length_mm"].where(~gap, np.nan)
        frame["year"] = frame["year"].astype("float64").where(~gap, np.nan)
    else:
        frame["sex"] = frame["sex"].astype("string").where(~gap, pd.NA)
        frame["bill_length_mm"] = frame["bill_length_mm"].astype("Float64").where(~gap, pd.NA)
        frame["year"] = frame["year"].astype("Int64").where(~gap, pd.NA)
    return frame


def test_none_nan_and_pd_na_predict_alike_in_memory_and_via_pyfunc() -> None:
    X, y = penguins()
    pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
    model = mlflow.pyfunc.load_model(pipe.model_uri_)

    frames = {"None": _missing(None), "nan": _missing(np.nan), "pd.NA": _missing(pd.NA)}
    assert frames["None"].loc[1, "sex"] is None
    assert frames["pd.NA"].loc[1, "sex"] is pd.NA
    assert frames["pd.NA"]["year"].dtype == "Int64"
    # Without mlpipe's normalisation the three spellings do differ: a None category is
    # unknown to the encoder. Were that no longer so, this test would prove nothing.
    plain = Pipeline(pipe.steps)
    assert not np.allclose(
        plain.predict_proba(frames["None"])[1], plain.predict_proba(frames["nan"])[1]
    )

    expected_labels = pipe.predict(frames["nan"])
    expected_proba = pipe.predict_proba(frames["nan"])
    for spelling, frame in frames.items():
        labels = pipe.predict(frame)
        proba = pipe.predict_proba(frame)
        served_labels = model.predict(frame)
        served_proba = model.predict(frame, params={"method": "predict_proba"})
        np.testing.assert_array_equal(labels, expected_labels, err_msg=spelling)
        np.testing.assert_array_equal(proba, expected_proba, err_msg=spelling)
        np.testing.assert_array_equal(np.asarray(served_labels), labels, err_msg=spelling)
        assert isinstance(served_proba, pd.DataFrame)
        assert list(served_proba.columns) == list(pipe.classes_)
        np.testing.assert_array_equal(served_proba.to_numpy(), proba, err_msg=spelling)
    # The complete rows are untouched by the gap in row 1.
    complete = X.dropna().head(6).reset_index(drop=True)
    np.testing.assert_array_equal(
        expected_proba[[0, 2, 3, 4, 5]], pipe.predict_proba(complete)[[0, 2, 3, 4, 5]]
    )


def test_predict_proba_param_matches_pipeline() -> None:
    X, y = penguins()
    pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
    rows = rows_with_nulls(X)
    served = mlflow.pyfunc.load_model(pipe.model_uri_).predict(
        rows, params={"method": "predict_proba"}
    )
    expected = pipe.predict_proba(rows)
    assert expected.shape == (len(rows), 3)
    np.testing.assert_allclose(expected.sum(axis=1), 1.0)
    assert list(served.columns) == list(pipe.classes_)
    np.testing.assert_array_equal(served.to_numpy(), expected)
