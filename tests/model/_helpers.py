"""Shared pieces of the raw-input model tests: real penguins, subprocesses, local modules."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pandas as pd
from palmerpenguins import load_penguins

TARGET = "species"

# A local module (a file on sys.path only in the process that fits) that imports a
# second local module, so by-value pickling has to follow one local module into another.
LOCAL_MODULES = {
    "penguin_scales.py": """
        GRAMS_PER_KILOGRAM = 1000.0


        def to_kilograms(grams):
            return grams / GRAMS_PER_KILOGRAM
    """,
    "penguin_features.py": """
        from sklearn.base import BaseEstimator, TransformerMixin

        import penguin_scales


        class BodyMassKilograms(BaseEstimator, TransformerMixin):
            \"\"\"Adds body mass in kilograms and its deviation from the training mean.\"\"\"

            def fit(self, X, y=None):
                self.mean_kg_ = float(penguin_scales.to_kilograms(X["body_mass_g"]).mean())
                return self

            def transform(self, X):
                kg = penguin_scales.to_kilograms(X["body_mass_g"])
                return X.assign(body_mass_kg=kg, body_mass_dev=kg - self.mean_kg_)
    """,
}


def write_local_modules(directory: Path) -> Path:
    """Write the local modules into ``directory`` (created) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, source in LOCAL_MODULES.items():
        (directory / name).write_text(textwrap.dedent(source).lstrip())
    return directory


def penguins() -> tuple[pd.DataFrame, pd.Series]:
    """The raw Palmer penguins: text columns, missing values, an integer ``year``."""
    raw = load_penguins()
    return raw.drop(columns=TARGET), raw[TARGET]


def rows_with_nulls(X: pd.DataFrame, n: int = 12) -> pd.DataFrame:
    """Raw rows that include every kind of missing cell the data has, plus complete ones."""
    incomplete = X[X.isna().any(axis=1)]
    complete = X[X.notna().all(axis=1)].sample(n=n, random_state=1)
    rows = pd.concat([incomplete, complete])
    assert rows["sex"].isna().any() and rows["bill_length_mm"].isna().any()
    return rows


def subprocess_env(tracking_uri: str, **extra: str) -> dict[str, str]:
    """The environment for a child process: this test's store, no leaked paths."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MLFLOW_") and k not in ("PYTHONPATH", "PYTHONSTARTUP")
    }
    env["MLFLOW_TRACKING_URI"] = tracking_uri
    # The venv's bin/ first: MLflow starts its own tools (uvicorn) from PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


def run_python(
    script: Path,
    *,
    cwd: Path,
    env: dict[str, str],
    python: str | Path = sys.executable,
    timeout: float = 300,
) -> Any:
    """Run ``script`` and return the JSON object it printed on its last stdout line."""
    done = subprocess.run(
        [str(python), str(script)],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if done.returncode != 0:
        raise AssertionError(
            f"{script.name} exited with {done.returncode}.\n"
            f"--- stdout ---\n{done.stdout[-5000:]}\n--- stderr ---\n{done.stderr[-10000:]}"
        )
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert lines, f"{script.name} printed nothing; stderr:\n{done.stderr[-5000:]}"
    return json.loads(lines[-1])
