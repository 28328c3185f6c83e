"""Registering a chain's model and promoting it by alias (issue 13, item 3)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import mlflow
import pandas as pd
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.linear_model import LogisticRegression

import mlpipe
from mlpipe import schema
from mlpipe.cli._main import main
from mlpipe.exceptions import NotFoundError, PromotionError
from mlpipe.tracking import check_registered_model_name


def _frame(rows: int | None = None) -> pd.DataFrame:
    X, y = load_iris(return_X_y=True, as_frame=True)
    frame = X.assign(species=y)
    # Every third row: the same classes in other proportions, another data version.
    return frame if rows is None else frame.iloc[::3].reset_index(drop=True)


def _register(estimator, frame: pd.DataFrame | None = None, **kwargs) -> mlpipe.LineagePipeline:
    frame = _frame() if frame is None else frame
    data = mlpipe.load(frame, name="iris", target="species")
    return mlpipe.LineagePipeline(
        [("model", estimator)], cv=3, registered_model_name="iris", **kwargs
    ).fit(data)


def _score(pipe: mlpipe.LineagePipeline) -> float:
    return mlflow.MlflowClient().get_run(pipe.run_ids_["model"]).data.metrics["cv_accuracy_mean"]


def test_registered_version_carries_the_chain():
    pipe = _register(LogisticRegression(max_iter=300))
    client = mlflow.MlflowClient()
    assert pipe.model_version_ == "1"
    version = client.get_model_version("iris", "1")
    chain = json.loads(version.tags[schema.CHAIN])
    assert [(e["stage"], e["run_id"]) for e in chain] == list(pipe.run_ids_.items())
    assert version.tags[schema.SCORE_METRIC] == "cv_accuracy_mean"
    assert version.tags[schema.MODEL_URI] == pipe.model_uri_
    assert version.run_id == pipe.run_ids_["model"]
    model = client.get_logged_model(pipe.model_uri_.removeprefix("models:/"))
    # What the UI's model page lists under "Model versions".
    listed = json.loads(model.tags[schema.MODEL_VERSIONS])
    assert [(v["name"], str(v["version"])) for v in listed] == [("iris", "1")]
    # The same chain fitted again is reused whole, and keeps its version.
    again = _register(LogisticRegression(max_iter=300))
    assert again.reused_ == ["model"] and again.model_version_ == "1"
    assert len(client.search_model_versions("name = 'iris'")) == 1


def test_promotion_rules_first_equal_better_worse_and_force():
    client = mlflow.MlflowClient()
    low = _register(DummyClassifier(strategy="most_frequent"))  # version 1
    same = _register(DummyClassifier(strategy="prior"))  # version 2: the same predictions
    high = _register(LogisticRegression(max_iter=300))  # version 3
    assert _score(low) == _score(same) < _score(high)

    first = mlpipe.promote("iris", "1")
    assert first.aliases == ["champion"]
    assert first.tags[schema.promoted_tag("champion", "from")] == "none"
    # Equal: at least as good, so it moves.
    assert str(mlpipe.promote("iris", 2).version) == "2"
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "2"
    # Better: it moves, by the final stage's run id too.
    promoted = mlpipe.promote("iris", high.run_ids_["model"])
    assert str(promoted.version) == "3"
    tags = promoted.tags
    assert tags[schema.promoted_tag("champion", "from")] == "2"
    assert tags[schema.promoted_tag("champion", "by")]
    assert tags[schema.promoted_tag("champion", "at")].startswith("20")
    assert "at least as good" in tags[schema.promoted_tag("champion", "because")]
    # Worse: refused with both scores and both data versions; nothing changes.
    before = client.get_model_version("iris", "1").tags
    with pytest.raises(PromotionError) as refused:
        mlpipe.promote("iris", "1")
    message = str(refused.value)
    assert f"{_score(low):.6g}" in message and f"{_score(high):.6g}" in message
    assert message.count("iris@") == 2 and "\n" not in message
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "3"
    assert client.get_model_version("iris", "1").tags == before
    # Forced: it moves, and says so.
    forced = mlpipe.promote("iris", "1", force=True, reason="rollback")
    assert forced.aliases == ["champion"]
    assert forced.tags[schema.promoted_tag("champion", "because")] == "rollback"


def test_scores_on_different_data_versions_need_force():
    client = mlflow.MlflowClient()
    _register(DummyClassifier())  # version 1, all rows
    other = _register(LogisticRegression(max_iter=300), _frame(rows=50))  # version 2
    mlpipe.promote("iris", "1")
    with pytest.raises(PromotionError, match="different data versions are not comparable"):
        mlpipe.promote("iris", other.model_version_)
    assert str(client.get_model_version_by_alias("iris", "champion").version) == "1"
    moved = mlpipe.promote("iris", other.model_version_, force=True)
    assert moved.tags[schema.promoted_tag("champion", "because")].startswith("forced:")


def test_promote_by_another_metric():
    _register(DummyClassifier())
    better = _register(LogisticRegression(max_iter=300))
    mlpipe.promote("iris", "1", alias="staging", metric="f1_macro")
    assert mlpipe.promote("iris", better.model_version_, "staging", "f1_macro").aliases == [
        "staging"
    ]


def test_bad_input_says_what_exists():
    pipe = _register(DummyClassifier())
    with pytest.raises(NotFoundError, match=r"no version '7'.*Its versions: 1\.$"):
        mlpipe.promote("iris", 7)
    with pytest.raises(NotFoundError, match=r"No registered model 'credit'\. .*: iris\.$"):
        mlpipe.promote("credit", 1)
    for alias in ("latest", "v2", "has space", ""):
        with pytest.raises(ValueError, match="Invalid alias"):
            mlpipe.promote("iris", 1, alias=alias)
    with pytest.raises(
        PromotionError, match="has no score accuracy_x: its run has cv_accuracy_mean"
    ):
        mlpipe.promote("iris", pipe.model_version_, metric="accuracy_x")
    # A chain fitted without evaluation was never scored.
    data = mlpipe.load(_frame(rows=50), name="iris", target="species")
    unscored = mlpipe.LineagePipeline(
        [("model", DummyClassifier())], cv=None, registered_model_name="iris"
    ).fit(data)
    with pytest.raises(PromotionError, match="never cross-validated"):
        mlpipe.promote("iris", unscored.model_version_)
    assert mlflow.MlflowClient().get_registered_model("iris").aliases == {}


def test_cli_promote_and_its_errors(capsys):
    _register(DummyClassifier())
    assert main(["promote", "iris", "1", "--alias", "champion"]) == 0
    out = capsys.readouterr().out
    assert "iris version 1 is @champion" in out and "models:/iris@champion" in out
    assert main(["promote", "iris", "9"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Its versions: 1." in err
    assert main(["promote", "iris", "1", "--alias", "latest"]) == 2
    assert "Invalid alias 'latest'" in capsys.readouterr().err


def test_consumers_by_alias(tracking_store, capsys):
    pipe = _register(LogisticRegression(max_iter=300))
    mlpipe.promote("iris", pipe.model_version_)
    raw = _frame().drop(columns="species").head(5)
    # A fresh process that knows nothing of mlpipe's objects: plain MLflow, by alias.
    code = (
        "import sys, mlflow, pandas as pd\n"
        "model = mlflow.pyfunc.load_model('models:/iris@champion')\n"
        "print(list(model.predict(pd.read_json(sys.stdin, orient='split'))))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env["MLFLOW_TRACKING_URI"] = tracking_store
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=raw.to_json(orient="split"),
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip().splitlines()[-1] == str(list(pipe.predict(raw)))
    # mlpipe lineage: the chain from the data version up to the alias.
    assert main(["lineage", "models:/iris@champion"]) == 0
    shown = capsys.readouterr().out
    for run_id in pipe.run_ids_.values():
        assert run_id in shown
    assert shown.rstrip().endswith(f"iris@champion -> version 1 ({pipe.model_uri_})")
    assert main(["lineage", "models:/iris@prod"]) == 2
    assert "Its aliases: @champion (version 1)." in capsys.readouterr().err
    assert main(["serve", "iris@prod"]) == 2
    assert "no alias 'prod'" in capsys.readouterr().err


# --- names the model registry refuses are refused before anything runs (issue 14) ---------

REFUSED_NAMES = ["..iris", ".", "..", "team/iris", "iris:v2", "", "   ", "i" * 257, "iris?v2"]


def _no_runs() -> list[str]:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    return [f"{r.info.run_name} {r.info.status}" for r in runs]


@pytest.mark.parametrize("name", REFUSED_NAMES)
def test_a_name_the_registry_refuses_is_refused_before_any_run(name: str):
    pipe = mlpipe.LineagePipeline([("model", DummyClassifier())], registered_model_name=name)
    X = _frame().drop(columns="species")
    with pytest.raises(ValueError) as refused:
        pipe.fit(X, _frame()["species"])  # a raw frame: its load run would come first
    message = str(refused.value)
    assert message == (
        f"Invalid registered_model_name {name!r}: MLflow's model registry takes a non-empty "
        "name of at most 256 characters without '/', ':' or '?' that is not '.' and does "
        "not start with '..'. Pick another name."
    )
    assert _no_runs() == []
    assert mlflow.MlflowClient().search_registered_models() == []


@pytest.mark.parametrize("command", ["train", "main"])
def test_the_command_line_refuses_the_name_before_any_work(
    command: str, capsys: pytest.CaptureFixture[str]
):
    argv = [command, "--logic", "plain", "--algorithm", "logreg", "--register", "..iris"]
    argv += ["--processed-time" if command == "train" else "--retrieval-time", "2026-12-01"]
    if command == "main":
        argv += ["--table", "iris"]
    with pytest.raises(SystemExit) as stopped:  # argparse's own error
        main(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == (
        f"mlpipe {command}: error: argument --register: Invalid name '..iris': MLflow's model "
        "registry takes a non-empty name of at most 256 characters without '/', ':' or '?' "
        "that is not '.' and does not start with '..'. Pick another name."
    )
    assert _no_runs() == []


@given(name=st.text(alphabet="a. /:@%'\"?#\\-_é", max_size=6))
@example(name=".")
@example(name="..")
@example(name="..a")
@example(name=".a")
@example(name=" ")
def test_the_rule_is_the_registrys(name: str):
    """Refused by mlpipe exactly when MLflow's registry (a real SQLite store) refuses it,
    or when the name holds a "?", which the registry takes but no models:/ URI carries."""
    client = mlflow.MlflowClient()
    try:
        client.create_registered_model(name)
        taken = True
    except MlflowException as error:
        taken = error.error_code == "RESOURCE_ALREADY_EXISTS"  # an earlier example's
    try:
        check_registered_model_name(name)
        checked = True
    except ValueError:
        checked = False
    assert checked is (taken and "?" not in name), name


def test_names_the_registry_takes_are_registered():
    for name in ("iris model @ v2", ".iris", "iris..", "i" * 256, " iris", "ïris%"):
        assert check_registered_model_name(name) == name
    data = mlpipe.load(_frame(), name="iris", target="species")
    pipe = mlpipe.LineagePipeline(
        [("model", DummyClassifier())], cv=None, registered_model_name="iris model @ v2"
    ).fit(data)
    assert mlflow.MlflowClient().get_model_version("iris model @ v2", pipe.model_version_)
