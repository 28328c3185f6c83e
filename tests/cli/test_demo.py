"""`mlpipe demo` through the real console script."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow


def test_demo_fits_the_chain_into_the_default_store(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    script = Path(sys.executable).parent / "mlpipe"
    out = subprocess.run(
        [str(script), "demo"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    assert (tmp_path / "mlflow.db").exists()  # MLflow's embedded default store
    for word in ("load", "processing", "model", "models:/m-", "mlflow ui", "mlflow models serve"):
        assert word in out.stdout
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    names = {e.name for e in client.search_experiments()}
    assert {"load", "processing", "model"} <= names


def test_help_lists_the_demo():
    out = subprocess.run(
        [sys.executable, "-m", "mlpipe", "--help"], capture_output=True, text=True, check=True
    )
    assert "demo" in out.stdout
