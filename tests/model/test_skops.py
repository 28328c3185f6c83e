"""``serializer="skops"``: a raw-input model that loads without unpickling anything.

Unpickling is detected two ways while a model loads: ``pickle``'s and
``cloudpickle``'s loaders are replaced by ones that raise, and an audit hook
records every ``pickle.find_class`` event (which the C unpickler raises too,
however it was reached). The default model trips both, which shows they work.
"""

from __future__ import annotations

import json
import logging
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cloudpickle
import mlflow
import numpy as np
import pandas as pd
import pytest
import skops.io
from mlflow.entities import ViewType
from mlflow.exceptions import MlflowException
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.utils._param_validation import InvalidParameterError

import mlpipe
import mlpipe._chain
from mlpipe import schema
from mlpipe._cache import digest
from mlpipe.exceptions import SerializationError
from mlpipe.model import _raw, _skops_model, _trusted
from tests.model._helpers import (
    penguins,
    rows_with_nulls,
    run_python,
    subprocess_env,
)
from tests.model.conftest import RequirementVenvs

NUMBERS = ["bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "year"]
TEXT = ["island", "sex"]
_ALLOW_PICKLE = "MLFLOW_ALLOW_PICKLE_DESERIALIZATION"


def chain(serializer: str = "skops", **settings: Any) -> mlpipe.LineagePipeline:
    """The penguins chain of the docs, with explicit column lists."""
    processing = ColumnTransformer(
        [
            ("numbers", make_pipeline(SimpleImputer(strategy="median"), StandardScaler()), NUMBERS),
            (
                "text",
                make_pipeline(
                    SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")
                ),
                TEXT,
            ),
        ]
    )
    return mlpipe.LineagePipeline(
        [("processing", processing), ("model", LogisticRegression(max_iter=1000))],
        serializer=serializer,
        **{"cv": None, **settings},
    )


class Mine(BaseEstimator, TransformerMixin):
    """A user's own transformer: skops does not trust it."""

    def fit(self, X, y=None):
        return self

    def transform(self, X):
        return X


# --- detecting unpickling -------------------------------------------------------------

_UNPATCHED_LOADS = pickle.loads
_found_classes: list[tuple[str, str]] | None = None
_hooked = False


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "pickle.find_class" and _found_classes is not None:
        _found_classes.append((str(args[0]), str(args[1])))


class Unpickled(AssertionError):
    pass


def _refuse(*args: Any, **kwargs: Any) -> Any:
    raise Unpickled("something was unpickled")


@contextmanager
def unpickling_watched(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, str]]]:
    """Make unpickling raise, and record the classes any unpickler looked up."""
    global _found_classes, _hooked
    if not _hooked:
        # An audit hook cannot be removed: it stays, inert outside this context.
        sys.addaudithook(_audit)
        _hooked = True
    found: list[tuple[str, str]] = []
    with monkeypatch.context() as patch:
        for module in (pickle, cloudpickle):
            patch.setattr(module, "load", _refuse)
            patch.setattr(module, "loads", _refuse)
        patch.setattr(pickle, "Unpickler", _refuse)
        _found_classes = found
        try:
            yield found
        finally:
            _found_classes = None


def _all_runs() -> list[Any]:
    return mlflow.search_runs(
        search_all_experiments=True, output_format="list", run_view_type=ViewType.ALL
    )


def _spellings_of_missing(X: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Complete penguins whose row 1 misses a text, a float and an integer cell, three ways."""
    frame = X.dropna().head(6).reset_index(drop=True)
    gap = frame.index == 1
    nones = frame.astype({"sex": object, "bill_length_mm": object, "year": object})
    for name in ("sex", "bill_length_mm", "year"):
        nones[name] = nones[name].where(~gap, None)
    nans = frame.assign(
        sex=frame["sex"].where(~gap, np.nan),
        bill_length_mm=frame["bill_length_mm"].where(~gap, np.nan),
        year=frame["year"].astype("float64").where(~gap, np.nan),
    )
    nas = frame.assign(
        sex=frame["sex"].astype("string").where(~gap, pd.NA),
        bill_length_mm=frame["bill_length_mm"].astype("Float64").where(~gap, pd.NA),
        year=frame["year"].astype("Int64").where(~gap, pd.NA),
    )
    return {"None": nones, "nan": nans, "pd.NA": nas}


# --- the model ------------------------------------------------------------------------


def test_skops_model_predicts_like_the_default_one() -> None:
    X, y = penguins()
    default = chain("cloudpickle").fit(X, y)
    safe = chain("skops").fit(X, y)
    assert default.model_uri_ != safe.model_uri_
    reference = mlflow.pyfunc.load_model(str(default.model_uri_))
    model = mlflow.pyfunc.load_model(str(safe.model_uri_))

    frames = {"with nulls": rows_with_nulls(X), "all": X, **_spellings_of_missing(X)}
    for what, frame in frames.items():
        expected = reference.predict(frame)
        np.testing.assert_array_equal(model.predict(frame), expected, err_msg=what)
        np.testing.assert_array_equal(expected, default.predict(frame), err_msg=what)
        proba = model.predict(frame, params={"method": "predict_proba"})
        pd.testing.assert_frame_equal(
            proba, reference.predict(frame, params={"method": "predict_proba"})
        )
        np.testing.assert_array_equal(proba.to_numpy(), safe.predict_proba(frame))
    # Columns in another order, and an extra one, are taken as the default model takes them.
    shuffled = X[X.columns[::-1]].assign(extra=1)
    np.testing.assert_array_equal(model.predict(shuffled), reference.predict(shuffled))

    def error(m: Any) -> str:
        with pytest.raises(ValueError) as caught:
            m.predict(X.head(2), params={"method": "fit"})
        return str(caught.value)

    assert error(model) == error(reference)
    safe_info = mlflow.models.get_model_info(str(safe.model_uri_))
    default_info = mlflow.models.get_model_info(str(default.model_uri_))
    assert safe_info.signature == default_info.signature
    assert safe_info.signature.params is not None
    assert [p.name for p in safe_info.signature.params.params] == ["method"]


def test_loading_the_skops_model_unpickles_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    X, y = penguins()
    pipe = chain("skops").fit(X, y)
    local = Path(
        mlflow.artifacts.download_artifacts(str(pipe.model_uri_), dst_path=str(tmp_path / "m"))
    )

    files = [p for p in local.rglob("*") if p.is_file()]
    assert not [p.name for p in files if p.suffix in (".pkl", ".pickle")]
    # No file is a pickle under another name (a pickle of protocol 2+ starts with 0x80).
    assert not [p.name for p in files if p.read_bytes()[:1] == b"\x80"]
    pyfunc = json.loads(json.dumps(mlflow.models.Model.load(str(local)).flavors["python_function"]))
    assert "python_model" not in pyfunc and pyfunc["model_code_path"].endswith(".py")
    # What runs on load is mlpipe's own source, as it is in the package.
    assert (local / Path(pyfunc["model_code_path"]).name).read_text() == Path(
        str(_skops_model.__file__)
    ).read_text()
    assert (local / "code" / f"{_skops_model.RAW_MODULE}.py").read_text() == Path(
        str(_raw.__file__)
    ).read_text()
    assert (local / "code" / f"{_skops_model.TRUSTED_MODULE}.py").read_text() == Path(
        str(_trusted.__file__)
    ).read_text()
    stages = local / "artifacts" / "stages"
    assert sorted(p.name for p in stages.iterdir()) == ["00.skops", "01.skops", "stages.json"]
    requirements = (local / "requirements.txt").read_text().split()
    assert any(r.startswith("skops==") for r in requirements), requirements
    assert not any(r.startswith("mlpipe") for r in requirements), requirements

    monkeypatch.setenv(_ALLOW_PICKLE, "false")
    with unpickling_watched(monkeypatch) as found:
        model = mlflow.pyfunc.load_model(str(pipe.model_uri_))
        predictions = model.predict(X)
        proba = model.predict(X, params={"method": "predict_proba"})
    assert found == []
    np.testing.assert_array_equal(predictions, pipe.predict(X))
    np.testing.assert_array_equal(proba.to_numpy(), pipe.predict_proba(X))

    # The same detectors catch the default model.
    default = chain("cloudpickle").fit(X, y)
    with pytest.raises(MlflowException, match="pickle is disallowed"):
        mlflow.pyfunc.load_model(str(default.model_uri_))
    monkeypatch.delenv(_ALLOW_PICKLE)
    with unpickling_watched(monkeypatch) as found, pytest.raises(Unpickled):
        mlflow.pyfunc.load_model(str(default.model_uri_))
    # The hook also sees an unpickler the patches miss (a reference taken before them).
    forest = pickle.dumps(RandomForestClassifier())
    with unpickling_watched(monkeypatch) as found:
        _UNPATCHED_LOADS(forest)
    assert ("sklearn.ensemble._forest", "RandomForestClassifier") in found


def test_the_allow_list_refuses_anything_else() -> None:
    data = skops.io.dumps(Mine())
    assert _trusted.untrusted_types(data) == [f"{__name__}.Mine"]
    with pytest.raises(_trusted.UntrustedTypesError, match=r"tests\.model\.test_skops\.Mine"):
        _trusted.loads(data, "a test file")
    # What the allow-list adds is exactly what it names, beyond skops' defaults.
    dtype = skops.io.dumps(np.dtype("float32"))
    assert skops.io.get_untrusted_types(data=dtype) == ["numpy.dtype"]
    assert _trusted.loads(dtype) == np.dtype("float32")


# --- fitting ----------------------------------------------------------------------------


def test_a_class_of_ones_own_fails_before_anything_is_logged() -> None:
    X, y = penguins()
    pipe = chain("skops")
    pipe.steps.insert(0, ("features", Mine()))
    with pytest.raises(SerializationError) as caught:
        pipe.fit(X, y)
    message = str(caught.value)
    assert f"step 'features' holds ['{__name__}.Mine']" in message
    assert "serializer='cloudpickle'" in message
    assert isinstance(caught.value, TypeError)
    assert _all_runs() == []
    assert [e.name for e in mlflow.MlflowClient().search_experiments()] == ["Default"]


def test_a_fitted_type_skops_distrusts_fails_its_stage_run() -> None:
    X, y = penguins()
    pipe = chain("skops")
    pipe.steps[-1] = ("model", RandomForestClassifier(n_estimators=3, random_state=0))
    with pytest.raises(SerializationError, match=r"sklearn\.tree\._tree\.Tree") as caught:
        pipe.fit(X, y)
    assert "serializer='cloudpickle'" in str(caught.value)
    status = {r.data.tags[schema.STAGE]: r.info.status for r in _all_runs()}
    assert status == {"load": "FINISHED", "processing": "FINISHED", "model": "FAILED"}
    assert pipe.model_uri_ is None


def test_serializer_is_a_parameter_like_the_others() -> None:
    pipe = chain("skops", project="p")
    assert pipe.get_params()["serializer"] == "skops"
    assert clone(pipe).get_params()["serializer"] == "skops"
    assert pipe[:1].serializer == "skops" and pipe[:1].project == "p"
    assert chain("cloudpickle").set_params(serializer="skops").serializer == "skops"
    assert mlpipe.LineagePipeline([("model", LogisticRegression())]).serializer == "cloudpickle"
    X, y = penguins()
    with pytest.raises(InvalidParameterError, match="The 'serializer' parameter of Lineage"):
        chain("pickle").fit(X, y)
    assert _all_runs() == []


# --- the stage cache --------------------------------------------------------------------


def test_stages_are_saved_and_reused_with_skops(monkeypatch: pytest.MonkeyPatch) -> None:
    # Every stage counts as slow: the default would store its output (a pickle).
    monkeypatch.setattr(mlpipe._chain, "OUTPUT_CACHE_SECONDS", 0.0)
    X, y = penguins()
    frame = X.assign(species=y)
    first = chain("skops").fit(mlpipe.load(frame, name="penguins", target="species"))
    client = mlflow.MlflowClient()
    for stage in ("processing", "model"):
        run = client.get_run(first.run_ids_[stage])
        assert run.data.tags[schema.SERIALIZER] == "skops"
        assert schema.OUTPUT not in run.data.tags
        files = [f.path for f in client.list_artifacts(run.info.run_id, schema.STAGE_ARTIFACT)]
        # The fitted stage and its rebuild recipe, both with skops: no pickle.
        assert files == [
            f"{schema.STAGE_ARTIFACT}/{name}"
            for name in (schema.RECIPE_FILE, schema.RECIPE_SKOPS_FILE, schema.STAGE_SKOPS_FILE)
        ]

    with unpickling_watched(monkeypatch) as found:
        # The same stages under another load run of the same data (another name: loading
        # the very same frame again would return the first load run itself).
        again = chain("skops").fit(mlpipe.load(frame, name="penguins_again", target="species"))
    assert found == []
    assert again.reused_ == ["processing", "model"]
    assert again.model_uri_ == first.model_uri_
    reused = client.get_run(again.run_ids_["processing"])
    assert reused.data.tags[schema.REUSED_FROM] == first.run_ids_["processing"]
    assert reused.data.tags[schema.SERIALIZER] == "skops"
    np.testing.assert_array_equal(again.predict(X), first.predict(X))

    # Each serializer reuses only its own stages.
    default = chain("cloudpickle").fit(X, y)
    assert default.reused_ == []
    assert chain("cloudpickle").fit(X, y).reused_ == ["processing", "model"]
    assert chain("skops").fit(X, y).reused_ == ["processing", "model"]


@pytest.mark.parametrize("tampering", ["a pickle under another tag", "an untrusted skops file"])
def test_a_tampered_cached_stage_is_refitted_not_loaded(
    tampering: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    X, y = penguins()
    first = chain("skops").fit(X, y)
    client = mlflow.MlflowClient()
    run_id = first.run_ids_["processing"]
    if tampering == "a pickle under another tag":
        (tmp_path / schema.STAGE_FILE).write_bytes(pickle.dumps(RandomForestClassifier()))
        client.log_artifact(run_id, str(tmp_path / schema.STAGE_FILE), schema.STAGE_ARTIFACT)
        client.set_tag(run_id, schema.SERIALIZER, "cloudpickle")
        reason = "never unpickles"
    else:
        forged = skops.io.dumps(Mine())
        (tmp_path / schema.STAGE_SKOPS_FILE).write_bytes(forged)
        client.log_artifact(run_id, str(tmp_path / schema.STAGE_SKOPS_FILE), schema.STAGE_ARTIFACT)
        # A forger who can write the run writes the digest too: the type check still holds.
        client.set_tag(run_id, schema.STAGE_DIGEST, digest(forged))
        reason = f"{__name__}.Mine"

    caplog.set_level(logging.WARNING, logger="mlpipe")
    with unpickling_watched(monkeypatch) as found:
        again = chain("skops").fit(X, y)
    assert found == []
    assert "processing" not in again.reused_
    assert again.run_ids_["processing"] != run_id
    warned = [r.getMessage() for r in caplog.records if "Cannot reuse run" in r.getMessage()]
    assert warned and reason in warned[0], warned
    np.testing.assert_array_equal(again.predict(X), first.predict(X))


# --- another process, another environment, a server --------------------------------------

LOAD_SCRIPT = """
import importlib.abc
import json
import sys

found = []


def audit(event, args):
    if event == "pickle.find_class":
        found.append([str(args[0]), str(args[1])])


sys.addaudithook(audit)


class NoMlpipe(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "mlpipe" or name.startswith("mlpipe."):
            raise ImportError(f"the model imported {{name}}")
        return None


sys.meta_path.insert(0, NoMlpipe())

import mlflow
import pandas as pd

with open({records!r}) as f:
    frame = pd.DataFrame.from_records(json.load(f))
model = mlflow.pyfunc.load_model({model!r})
predictions = model.predict(frame)
proba = model.predict(frame, params={{"method": "predict_proba"}})
assert not [m for m in sys.modules if m == "mlpipe" or m.startswith("mlpipe.")]
print(
    json.dumps(
        {{
            "predictions": [str(p) for p in predictions],
            "proba": proba.to_numpy().tolist(),
            "columns": list(proba.columns),
            "unpickled": found,
            "prefix": sys.prefix,
        }}
    )
)
"""


def _records(tmp_path: Path, X: pd.DataFrame) -> tuple[Path, pd.DataFrame]:
    path = tmp_path / "records.json"
    path.write_text(rows_with_nulls(X).to_json(orient="records"))
    frame = pd.DataFrame.from_records(json.loads(path.read_text()))
    assert frame.isna().any().any()
    return path, frame


def _check_loaded(loaded: dict[str, Any], pipe: mlpipe.LineagePipeline, frame: pd.DataFrame):
    assert loaded["unpickled"] == []
    assert loaded["predictions"] == [str(p) for p in pipe.predict(frame)]
    assert loaded["columns"] == [str(c) for c in pipe.classes_]
    np.testing.assert_allclose(loaded["proba"], pipe.predict_proba(frame), rtol=1e-12, atol=1e-15)


def test_skops_model_loads_in_a_fresh_process_without_mlpipe_or_pickle(
    tmp_path: Path, tracking_store: str
) -> None:
    X, y = penguins()
    pipe = chain("skops").fit(X, y)
    records, frame = _records(tmp_path, X)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    script = elsewhere / "load.py"
    script.write_text(LOAD_SCRIPT.format(records=str(records), model=str(pipe.model_uri_)))
    env = subprocess_env(tracking_store, **{_ALLOW_PICKLE: "false"})
    _check_loaded(run_python(script, cwd=elsewhere, env=env), pipe, frame)


@pytest.mark.slow
@pytest.mark.xdist_group("wheelhouse")  # the worker that builds the venvs (conftest.py)
def test_skops_model_loads_with_only_its_logged_requirements(
    tmp_path: Path, tracking_store: str, requirement_venvs: RequirementVenvs
) -> None:
    import os

    X, y = penguins()
    pipe = chain("skops").fit(X, y)
    requirements = Path(mlflow.pyfunc.get_model_dependencies(str(pipe.model_uri_)))
    model_dir = mlflow.artifacts.download_artifacts(
        str(pipe.model_uri_), dst_path=str(tmp_path / "model")
    )
    records, frame = _records(tmp_path, X)

    venv = requirement_venvs.get(requirements, tmp_path / "pip.log")
    clean = tmp_path / "clean"
    clean.mkdir()
    script = clean / "load.py"
    script.write_text(LOAD_SCRIPT.format(records=str(records), model=str(model_dir)))
    env = subprocess_env(tracking_store, **{_ALLOW_PICKLE: "false"})
    env.pop("VIRTUAL_ENV", None)
    outer = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != outer]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    loaded = run_python(script, cwd=clean, env=env, python=venv / "bin" / "python")
    assert Path(loaded["prefix"]).resolve() == venv.resolve()
    _check_loaded(loaded, pipe, frame)


@pytest.mark.slow
def test_skops_model_is_served(tmp_path: Path, tracking_store: str) -> None:

    import requests

    from tests._server import ModelServer

    X, y = penguins()
    pipe = chain("skops").fit(X, y)
    server = ModelServer(
        str(pipe.model_uri_), tmp_path / "server.log", tracking_store, **{_ALLOW_PICKLE: "false"}
    )
    try:
        server.start(cwd=tmp_path)
        url = server.url
        rows = rows_with_nulls(X)
        body = json.loads(rows.to_json(orient="split", index=False))
        split = requests.post(f"{url}/invocations", json={"dataframe_split": body}, timeout=30)
        assert split.status_code == 200, split.text
        assert split.json()["predictions"] == pipe.predict(rows).tolist()
        records = json.loads(rows.to_json(orient="records"))
        proba = requests.post(
            f"{url}/invocations",
            json={"dataframe_records": records, "params": {"method": "predict_proba"}},
            timeout=30,
        )
        assert proba.status_code == 200, proba.text
        classes = [str(c) for c in pipe.classes_]
        got = np.array([[r[c] for c in classes] for r in proba.json()["predictions"]])
        np.testing.assert_allclose(got, pipe.predict_proba(rows), rtol=1e-12, atol=1e-15)
        missing = requests.post(
            f"{url}/invocations",
            json={"dataframe_split": json.loads(rows.drop(columns="sex").to_json(orient="split"))},
            timeout=30,
        )
        assert missing.status_code == 400 and "sex" in missing.text
    finally:
        server.stop()
