"""The raw-input model loads where only its logged requirements are installed."""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

import mlpipe
from mlpipe.cli._demo import penguins_pipeline
from tests.model._helpers import (
    LOCAL_MODULES,
    penguins,
    rows_with_nulls,
    run_python,
    subprocess_env,
    write_local_modules,
)
from tests.model.conftest import RequirementVenvs

# One worker builds the venvs both venv tests use, from wheels downloaded once
# (tests/model/conftest.py).
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("wheelhouse")]


LOAD_SCRIPT = """
import importlib
import json
import sys

for name in ("mlpipe", "penguin_features", "penguin_scales"):
    try:
        module = importlib.import_module(name)
    except ImportError:
        continue
    raise SystemExit(f"{{name}} must not be importable here, found {{module.__file__}}")

import mlflow
import pandas as pd

with open({records!r}) as f:
    frame = pd.DataFrame.from_records(json.load(f))
model = mlflow.pyfunc.load_model({model_dir!r})
predictions = model.predict(frame)
proba = model.predict(frame, params={{"method": "predict_proba"}})
assert "mlpipe" not in sys.modules
print(
    json.dumps(
        {{
            "predictions": [str(p) for p in predictions],
            "proba": proba.to_numpy().tolist(),
            "columns": list(proba.columns),
            "prefix": sys.prefix,
        }}
    )
)
"""


def test_model_loads_with_only_its_logged_requirements(
    tmp_path: Path,
    tracking_store: str,
    monkeypatch: pytest.MonkeyPatch,
    requirement_venvs: RequirementVenvs,
) -> None:
    # A transformer from a local module that is not installed anywhere: the model
    # has to carry its code (and that of the module it imports) by value.
    module_dir = write_local_modules(tmp_path / "local_modules")
    monkeypatch.syspath_prepend(str(module_dir))
    for name in LOCAL_MODULES:
        monkeypatch.delitem(sys.modules, Path(name).stem, raising=False)
    import penguin_features

    try:
        X, y = penguins()
        demo = penguins_pipeline()
        pipe = mlpipe.LineagePipeline(
            [("features", penguin_features.BodyMassKilograms()), *demo.steps], cv=None
        ).fit(X, y)
    finally:
        for name in LOCAL_MODULES:
            sys.modules.pop(Path(name).stem, None)
    uri = pipe.model_uri_
    assert str(uri).startswith("models:/m-"), uri

    requirements = Path(mlflow.pyfunc.get_model_dependencies(uri))
    pins = requirements.read_text().split()
    names = {re.split(r"[=<>!~]", pin)[0].lower() for pin in pins}
    assert {"mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle"} <= names, pins
    assert not any(n.startswith("mlpipe") or n.startswith("penguin") for n in names), pins
    assert all("==" in pin for pin in pins), pins

    model_dir = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "model")))
    assert (model_dir / "MLmodel").is_file()

    rows = rows_with_nulls(X)
    records = tmp_path / "records.json"
    records.write_text(rows.to_json(orient="records"))
    frame = pd.DataFrame.from_records(json.loads(records.read_text()))
    assert frame.isna().any().any()

    venv = requirement_venvs.get(requirements, tmp_path / "pip.log")
    venv_python = venv / "bin" / "python"

    clean = tmp_path / "clean"
    clean.mkdir()
    script = clean / "load.py"
    script.write_text(LOAD_SCRIPT.format(records=str(records), model_dir=str(model_dir)))
    env = subprocess_env(tracking_store)
    env.pop("VIRTUAL_ENV", None)
    # Nothing of the test's own venv may be reached, not even through PATH.
    outer = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != outer]
    env["PATH"] = os.pathsep.join([str(venv / "bin"), *path])
    loaded = run_python(script, cwd=clean, env=env, python=venv_python, timeout=300)

    assert Path(loaded["prefix"]).resolve() == venv.resolve()
    expected = pipe.predict(frame)
    np.testing.assert_array_equal(expected, pipe.predict(rows))
    assert loaded["predictions"] == [str(p) for p in expected]
    assert loaded["columns"] == [str(c) for c in pipe.classes_]
    np.testing.assert_allclose(loaded["proba"], pipe.predict_proba(frame), rtol=1e-12, atol=1e-15)
