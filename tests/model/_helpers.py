"""Shared pieces of the raw-input model tests: real penguins, subprocesses, local modules."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
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


# What pip prints when it cannot reach the package index at all; any other failure
# to install the logged requirements is a failure of the model, not of the machine.
UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|ConnectTimeoutError|Network is unreachable|"
    r"Connection refused|ProxyError|Read timed out",
)

# Requirements a model of these tests may log beyond the default model's: downloaded
# with the first model's, so that the other one installs from the wheelhouse alone.
OPTIONAL_REQUIREMENTS = ("skops",)


def _pip(*args: str) -> subprocess.CompletedProcess[str]:
    # This environment's pip, pointed at the target interpreter with --python when
    # installing: the new venv needs no pip of its own (ensurepip takes seconds).
    return subprocess.run(
        [sys.executable, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


def venv_with_requirements(
    venv: Path, requirements: Path, wheelhouse: Path, log: Path, *, exists: bool = False
) -> Path:
    """A new venv at ``venv`` holding only ``requirements`` and what they need; its python.

    Resolving against the package index takes most of an install, so the wheels are
    downloaded once into ``wheelhouse`` (kept between sessions: see its fixture) and
    each venv installs from there alone (``--no-index``): the same pins, the same wheels.
    With ``exists``, ``venv`` was made already (pip installs what it lacks).
    """
    import importlib.metadata

    import pytest

    if not exists:
        subprocess.run(
            [sys.executable, "-m", "venv", "--without-pip", str(venv)],
            check=True,
            capture_output=True,
            timeout=120,
        )
    python = venv / "bin" / "python"
    install = (
        "--python",
        str(python),
        "install",
        # Python compiles what the model imports when it loads; compiling every
        # installed file up front takes half of the install.
        "--no-compile",
        "--no-index",
        "--find-links",
        str(wheelhouse),
        "-r",
        str(requirements),
    )
    done = _pip(*install)
    output = done.stdout + done.stderr
    if done.returncode != 0:  # wheels not downloaded yet
        extra = []
        for name in OPTIONAL_REQUIREMENTS:
            try:
                extra.append(f"{name}=={importlib.metadata.version(name)}")
            except importlib.metadata.PackageNotFoundError:
                pass
        # Downloaded into a folder of this process's, then moved in whole: another test
        # session sharing the wheelhouse never sees a wheel half written.
        incoming = Path(tempfile.mkdtemp(prefix=".incoming-", dir=wheelhouse))
        try:
            fetched = _pip(
                *("download", "--timeout", "60", "--retries", "2", "-d", str(incoming)),
                *("-r", str(requirements), *extra),
            )
            for wheel in incoming.iterdir():
                os.replace(wheel, wheelhouse / wheel.name)
        finally:
            shutil.rmtree(incoming, ignore_errors=True)
        output += fetched.stdout + fetched.stderr
        if fetched.returncode != 0 and UNREACHABLE.search(output):
            pytest.skip(f"The package index is unreachable: {UNREACHABLE.search(output)[0]}")
        done = _pip(*install)
        output += done.stdout + done.stderr
    log.write_text(output)
    if done.returncode != 0:
        raise AssertionError(
            f"pip could not install the model's logged requirements:\n"
            f"{requirements.read_text()}\n--- pip ---\n{output[-10000:]}"
        )
    return python
