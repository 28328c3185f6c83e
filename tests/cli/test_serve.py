"""`mlpipe serve` starts the real MLflow scoring server on 127.0.0.1 for a run id."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from palmerpenguins import load_penguins

from mlpipe.cli._demo import penguins_pipeline
from tests._server import free_port


@pytest.mark.slow
def test_serve_a_run_id_on_loopback(tracking_store, tmp_path):
    raw = load_penguins()
    X, y = raw.drop(columns="species"), raw["species"]
    pipe = penguins_pipeline().set_params(cv=None).fit(X, y)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_store
    env["PATH"] = "/usr/bin:/bin"  # mlpipe serve must find the venv's scripts on its own
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlpipe"),
            "serve",
            pipe.run_ids_["model"],
            "--port",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, server.stderr.read().decode()[-3000:]
            try:
                if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server did not answer /ping in 90 s"
            time.sleep(0.1)
        rows = X.head(5)
        body = {
            "dataframe_split": rows.astype(object)
            .where(rows.notna(), None)
            .to_dict(orient="split", index=False)
        }
        response = requests.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=30)
        assert response.status_code == 200, response.text
        assert response.json()["predictions"] == pipe.predict(rows).tolist()
        # Bound to loopback only.
        listening = subprocess.run(["ss", "-ltn"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in listening and f"0.0.0.0:{port}" not in listening
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        server.stdout.close()
        server.stderr.close()
