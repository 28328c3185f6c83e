"""Classification and regression from the command line (issue 14, items 2, 3 and 5).

Real data in a real SQLite database: the Palmer penguins, whose ``species`` is a
class and whose ``body_mass_g`` (with two missing values) a continuous quantity.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sqlite3
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from palmerpenguins import load_penguins

import mlpipe
from mlpipe.cli._main import _parser
from tests.cli.test_workflow import _in_process, _ok

TODAY = dt.datetime.now(dt.UTC).date().isoformat()
MASS = "SELECT * FROM penguins WHERE body_mass_g IS NOT NULL"
TWO_SPECIES = "SELECT * FROM penguins WHERE species != 'Chinstrap'"


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    with sqlite3.connect(tmp_path / "shop.db") as connection:
        load_penguins().to_sql("penguins", connection, index=False)
    return tmp_path


def _run_count() -> int:
    client = mlflow.MlflowClient()
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids, max_results=50_000)) if ids else 0


def _load(capsys, *, name: str, target: str, query: str | None = None) -> None:
    what = ["--query", query, "--name", name] if query else ["--table", name]
    _ok(
        _in_process(
            "load", "--source", "sqlite:///shop.db", *what, "--target", target, capsys=capsys
        )
    )


def _main(capsys, table: str, algorithm: str, *extra: str):
    return _in_process(
        "main",
        "--table",
        table,
        "--retrieval-time",
        TODAY,
        "--logic",
        "plain",
        "--algorithm",
        algorithm,
        *extra,
        capsys=capsys,
    )


def _refused(result, message: str, runs_before: int) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert _run_count() == runs_before  # nothing was fitted or logged


def test_regression_end_to_end_through_main(shop, capsys):
    # The whole table: two penguins have no body mass, which no algorithm learns from.
    _load(capsys, name="penguins", target="body_mass_g")
    before = _run_count()
    _refused(_main(capsys, "penguins", "rf"), "has 2 missing value(s)", before)

    _load(capsys, name="mass", target="body_mass_g", query=MASS)
    out = _ok(_main(capsys, "mass", "rf", "-P", "n_estimators=20"))
    assert "rf@" in out and "models:/m-" in out
    model_run = mlpipe.runs(stage="model").iloc[0]
    run = mlflow.MlflowClient().get_run(model_run["run_id"])
    assert run.data.tags["mlpipe.class"].endswith("RandomForestRegressor")
    assert "cv_r2_mean" in run.data.metrics

    # The logged raw-input model, as it is served: raw rows in (missing features
    # included), a body mass out: averages of trees, not the masses it was trained on.
    raw = load_penguins().dropna(subset=["body_mass_g"])
    model = mlflow.pyfunc.load_model(run.data.tags["mlpipe.model_uri"])
    predicted = np.asarray(model.predict(raw.drop(columns="body_mass_g").head(40)))
    assert predicted.dtype.kind == "f"
    assert not set(predicted) <= set(raw["body_mass_g"])
    assert 2500 < predicted.min() and predicted.max() < 6500


def test_an_algorithm_that_cannot_fit_the_target_is_refused_before_any_run(shop, capsys):
    _load(capsys, name="mass", target="body_mass_g", query=MASS)
    _load(capsys, name="penguins", target="species")
    before = _run_count()
    _refused(_main(capsys, "mass", "logreg"), "fits binary and multiclass targets", before)
    _refused(_main(capsys, "penguins", "ridge"), "this target is multiclass", before)
    _refused(
        _main(capsys, "penguins", "logreg", "--tune-threshold"),
        "--tune-threshold tunes the decision threshold between two classes",
        before,
    )
    _refused(_main(capsys, "mass", "rf", "--tune-threshold"), "target is continuous", before)


def test_runs_list_says_which_algorithm_fits_which_target(capsys):
    out = _ok(_in_process("runs", "--list", capsys=capsys))
    rows = {line.split()[1]: line for line in out.splitlines()[1:]}
    assert "continuous" in rows["rf"] and "multiclass" in rows["rf"]
    assert "continuous" not in rows["logreg"] and "binary" in rows["logreg"]
    assert "continuous" in rows["ridge"] and "binary" not in rows["ridge"]
    assert mlpipe.ALGORITHMS.build("rf", target_type="continuous").__class__.__name__ == (
        "RandomForestRegressor"
    )


@pytest.mark.usefixtures("without_cross_validation")  # the threshold, not the scores
def test_a_tuned_threshold_is_logged_and_named(shop, capsys):
    _load(capsys, name="two", target="species", query=TWO_SPECIES)
    out = _ok(_main(capsys, "two", "logreg", "--tune-threshold"))
    assert "logreg-tuned@" in out
    table = mlpipe.runs(stage="model")
    assert table.loc[0, "type"] == "logreg-tuned"
    assert 0.0 < table.loc[0, "best_threshold"] < 1.0
    # The tuned chain is found again as such: nothing to run.
    assert "nothing to run" in _ok(_main(capsys, "two", "logreg", "--tune-threshold"))
    out = _ok(_in_process("runs", "--stage", "model", capsys=capsys))
    assert "best_threshold" in out.splitlines()[0]


def test_runs_show_the_data_and_every_cv_score_and_sort(shop, capsys):
    _load(capsys, name="penguins", target="species")
    _ok(_main(capsys, "penguins", "logreg", "-P", "C=0.001"))
    _ok(_main(capsys, "penguins", "rf", "-P", "n_estimators=5"))
    load_key = mlpipe.runs(stage="load").loc[0, "key"]
    out = _ok(
        _in_process(
            "runs", "--stage", "model", "--sort", "cv_balanced_accuracy_mean", capsys=capsys
        )
    )
    header, *lines = out.splitlines()
    for column in ("data", "cv_accuracy_mean", "cv_balanced_accuracy_mean", "cv_f1_macro_mean"):
        assert column in header.split()
    assert all(load_key in line for line in lines)
    position = header.split().index("cv_balanced_accuracy_mean")
    scores = [float(line.split()[position]) for line in lines]
    assert len(scores) == 2 and scores == sorted(scores, reverse=True)

    by_time = mlpipe.runs(stage="model", sort="fit_time_seconds")
    assert by_time["fit_time_seconds"].is_monotonic_increasing  # a time: lowest first
    table = mlpipe.runs(sort="cv_f1_macro_mean")
    assert table["cv_f1_macro_mean"].iloc[:2].is_monotonic_decreasing
    assert table["cv_f1_macro_mean"].iloc[2:].isna().all()  # runs without it last
    assert set(table["data"]) == {load_key}
    fingerprint = mlflow.MlflowClient().get_run(mlpipe.runs(stage="load").loc[0, "run_id"])
    assert set(table["data_fingerprint"]) == {fingerprint.data.tags["mlpipe.fingerprint"]}
    with pytest.raises(ValueError, match="Their metrics: .*cv_accuracy_mean"):
        mlpipe.runs(stage="model", sort="cv_nope")


def _actions(parser: argparse.ArgumentParser, where: str = "mlpipe"):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _actions(sub, f"{where} {name}")
        elif not isinstance(action, argparse._HelpAction):
            yield where, action


def test_every_option_has_help():
    missing = [
        f"{where} {'/'.join(action.option_strings) or action.dest}"
        for where, action in _actions(_parser())
        if not action.help
    ]
    assert missing == []


def test_lineage_checks_the_output_format_before_any_work(shop, capsys):
    _load(capsys, name="penguins", target="species")
    run_id = mlpipe.runs(stage="load").loc[0, "run_id"]
    result = _in_process("lineage", run_id, "--output", "chain.pdf", capsys=capsys)
    assert result.returncode == 2
    assert "expected a file ending in .svg or .png, got '.pdf'" in result.stderr
    assert result.stdout == ""  # no lineage table printed before the refusal
    with pytest.raises(ValueError, match="got '.pdf'"):
        mlpipe.lineage_graph("no-such-run", "chain.pdf")  # refused before any lookup


def test_gc_prints_its_summary_once(shop, capsys):
    _load(capsys, name="penguins", target="species")
    _load(capsys, name="mass", target="body_mass_g", query=MASS)
    gone = mlpipe.runs(stage="load", type="mass").loc[0, "run_id"]
    mlflow.MlflowClient().delete_run(gone)
    for args in (["gc", "--dry-run"], ["gc"]):
        result = _in_process(*args, capsys=capsys)
        shown = _ok(result) + result.stderr
        assert shown.count("deleted run(s)") == 1, shown
        assert shown.count(gone) == 1, shown


def test_runs_of_a_frame_table_are_a_dataframe_as_before(capsys):
    # A miss in runs() is still an empty table (the warning is tested in tracking/).
    assert isinstance(mlpipe.runs(stage="model", type="nothing"), pd.DataFrame)
