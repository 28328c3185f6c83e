"""A load run left RUNNING by a process that died is ended by the next fit, as stage runs are."""

from __future__ import annotations

import socket
import subprocess
import sys

import mlflow
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlpipe
from mlpipe import schema


def test_a_dead_processs_load_run_is_ended_by_the_next_fit():
    client = mlflow.MlflowClient()
    experiment = client.create_experiment(schema.LOAD_STAGE)
    run_id = client.create_run(experiment).info.run_id
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    )
    client.set_tag(run_id, schema.STAGE, schema.LOAD_STAGE)
    client.set_tag(run_id, schema.OWNER, f"{socket.gethostname()}:{int(dead.stdout)}")

    X, y = load_iris(return_X_y=True, as_frame=True)
    mlpipe.LineagePipeline([("model", LogisticRegression(max_iter=500))], cv=None).fit(X, y)

    run = client.get_run(run_id)
    assert run.info.status == "FAILED"
    assert "no longer running" in run.data.tags[schema.ENDED_BECAUSE]
