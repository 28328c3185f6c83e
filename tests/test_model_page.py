"""What MLflow's UI shows of a chain: the logged model's name, scores with their
dataset, lineage, and the stage runs' descriptions and sources (issue 13, items 1-2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pandas as pd
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mlpipe
from mlpipe import schema
from mlpipe.tracking._notes import run_link


def _iris() -> pd.DataFrame:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return X.assign(species=y)


def _fit(**kwargs):
    data = mlpipe.load(_iris(), name="iris", target="species")
    pipe = mlpipe.LineagePipeline(
        [("processing", StandardScaler()), ("model", LogisticRegression(max_iter=300))],
        cv=3,
        **kwargs,
    ).fit(data)
    return data, pipe


def test_logged_model_is_named_and_scored_on_its_dataset():
    data, pipe = _fit()
    client = mlflow.MlflowClient()
    model_id = pipe.model_uri_.removeprefix("models:/")
    model = client.get_logged_model(model_id)
    # <data name>-<final stage type>, not "model" for every chain
    assert model.name == "iris-LogisticRegression"
    experiment = client.get_experiment_by_name("model").experiment_id
    found = client.search_logged_models(
        experiment_ids=[experiment], filter_string="name = 'iris-LogisticRegression'"
    )
    assert [m.model_id for m in found] == [model_id]
    # The scores are the model's, each with the training dataset: the UI's
    # "Datasets used" and metrics table read exactly these fields.
    load_input = client.get_run(data.run_id).inputs.dataset_inputs[0].dataset
    scored = {m.key: m for m in model.metrics if m.dataset_name is not None}
    assert {"cv_accuracy_mean", "cv_f1_macro_mean", "training_score"} <= set(scored)
    for metric in scored.values():
        assert (metric.dataset_name, metric.dataset_digest) == (load_input.name, load_input.digest)
        assert metric.model_id == model_id
    run = client.get_run(pipe.run_ids_["model"])
    assert run.data.metrics["cv_accuracy_mean"] == scored["cv_accuracy_mean"].value
    # ... and the dataset is among the final stage run's inputs, for the UI to open.
    digests = {i.dataset.digest for i in run.inputs.dataset_inputs}
    assert load_input.digest in digests


def test_logged_model_carries_the_chain():
    data, pipe = _fit(model_name="credit-scorer", project="team")
    model = mlflow.MlflowClient().get_logged_model(pipe.model_uri_.removeprefix("models:/"))
    assert model.name == "credit-scorer"
    chain = json.loads(model.tags[schema.CHAIN])
    assert [(e["stage"], e["run_id"]) for e in chain] == list(pipe.run_ids_.items())
    assert all(e["key"] and e["cache_key"] for e in chain)
    assert model.tags[schema.FINGERPRINT] == data.fingerprint
    assert model.tags[schema.VERSION] == mlpipe.__version__
    assert model.params["processing.run_id"] == pipe.run_ids_["processing"]
    assert model.params["load.key"] == data.key
    assert model.params["data.fingerprint"] == data.fingerprint
    # Its description (the UI's "Description" on the model page): the chain, each run linked.
    client = mlflow.MlflowClient()
    note = model.tags[schema.NOTE]
    for stage, run_id in pipe.run_ids_.items():
        run = client.get_run(run_id)
        link = run_link(run_id, run.info.experiment_id)
        assert f"- {stage} [{run.info.run_name}]({link})" in note, note


def test_default_name_uses_the_project_and_drops_what_mlflow_refuses():
    _, pipe = _fit(project="team/credit", types={"model": "log.reg"})
    model = mlflow.MlflowClient().get_logged_model(pipe.model_uri_.removeprefix("models:/"))
    assert model.name == "team-credit-log-reg"


@pytest.mark.parametrize(
    ("param", "value"),
    [("model_name", "a/b"), ("model_name", "v1.2"), ("registered_model_name", "a:b")],
)
def test_a_name_mlflow_refuses_fails_before_anything_is_logged(param, value):
    X, y = load_iris(return_X_y=True, as_frame=True)
    pipe = mlpipe.LineagePipeline([("model", LogisticRegression())], **{param: value})
    with pytest.raises(ValueError, match=f"Invalid {param}"):
        pipe.fit(X, y)
    assert mlflow.search_runs(search_all_experiments=True).empty


def test_stage_runs_describe_and_link_their_chain():
    data, pipe = _fit(registered_model_name="iris")
    client = mlflow.MlflowClient()
    load = client.get_run(data.run_id)
    processing = client.get_run(pipe.run_ids_["processing"])
    final = client.get_run(pipe.run_ids_["model"])
    note = processing.data.tags[schema.NOTE]
    assert note.startswith("**processing** stage run")
    # The upstream load run, by a link the UI follows, and its key as the text.
    assert f"[{data.key}]({run_link(data.run_id, load.info.experiment_id)})" in note
    # Down: the model runs fitted on this one, a filtered experiment page.
    assert f"#/experiments/{final.info.experiment_id}?searchFilter=" in note
    assert pipe.run_ids_["processing"] in note.rsplit("searchFilter=", 1)[1]
    final_note = final.data.tags[schema.NOTE]
    assert run_link(processing.info.run_id, processing.info.experiment_id) in final_note
    model_id = pipe.model_uri_.removeprefix("models:/")
    assert f"(#/experiments/{final.info.experiment_id}/models/{model_id})" in final_note
    assert "[iris version 1](#/models/iris/versions/1)" in final_note
    assert load.data.tags[schema.NOTE].startswith("**load** stage run")
    for run in (load, processing, final):
        assert run.data.tags[schema.SOURCE_TYPE] == "LOCAL"
        assert run.data.tags[schema.SOURCE_NAME]


def test_a_scripts_runs_name_the_script_as_their_source(tmp_path: Path, tracking_store: str):
    script = tmp_path / "train_iris.py"
    script.write_text(
        "import mlpipe\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.dummy import DummyClassifier\n"
        "X, y = load_iris(return_X_y=True, as_frame=True)\n"
        "pipe = mlpipe.LineagePipeline([('model', DummyClassifier())], cv=None).fit(X, y)\n"
        "print(pipe.run_ids_['model'])\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_store
    out = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, check=True
    )
    run = mlflow.MlflowClient().get_run(out.stdout.strip().splitlines()[-1])
    assert run.data.tags[schema.SOURCE_NAME] == str(script.resolve())
    assert run.data.tags[schema.SOURCE_TYPE] == "LOCAL"


def test_the_mlpipe_command_is_the_source_of_its_runs():
    from mlpipe.tracking._store import FIT_SOURCE, fit_source

    token = FIT_SOURCE.set(("mlpipe train", "LOCAL"))
    try:
        assert fit_source() == {schema.SOURCE_NAME: "mlpipe train", schema.SOURCE_TYPE: "LOCAL"}
    finally:
        FIT_SOURCE.reset(token)


def test_registering_without_a_model_fails_before_anything_is_logged():
    X, y = load_iris(return_X_y=True, as_frame=True)
    pipe = mlpipe.LineagePipeline(
        [("model", LogisticRegression())], log_model=False, registered_model_name="iris"
    )
    with pytest.raises(mlpipe.exceptions.StageError, match="log_model=False logs none"):
        pipe.fit(X, y)
    assert mlflow.search_runs(search_all_experiments=True).empty
