"""runs, lineage, descendants and find_chain against a real store."""

from __future__ import annotations

import datetime as dt

import mlflow
import pandas as pd
import pytest
from palmerpenguins import load_penguins
from sklearn.ensemble import RandomForestClassifier

import mlpipe
from mlpipe.cli._demo import penguins_pipeline
from mlpipe.exceptions import NotFoundError
from tests._server import remove_run_for_good

TYPES = {"processing": "plain", "model": "logreg"}
TODAY = dt.datetime.now(dt.UTC).date().isoformat()


@pytest.fixture
def raw():
    return load_penguins()


def _pipe(**params):
    return penguins_pipeline().set_params(
        **{"cv": None, "log_model": False, "types": TYPES, **params}
    )


def test_runs_filters_by_stage_type_date_and_upstream(raw):
    ds = mlpipe.load(raw, name="penguins", target="species")
    pipe = _pipe().fit(ds)
    table = mlpipe.runs()
    assert set(table["stage"]) == {"load", "processing", "model"}
    assert list(table.columns[:7]) == [
        "run_id",
        "stage",
        "type",
        "key",
        "started",
        "status",
        "upstream",
    ]
    model = mlpipe.runs(stage="model", type="logreg", date=TODAY)
    assert model["run_id"].tolist() == [pipe.run_ids_["model"]]
    assert model["upstream"].tolist() == [pipe.run_ids_["processing"]]
    assert mlpipe.runs(stage="model", type="logreg", date="2019-02-09").empty
    assert mlpipe.runs(stage="model", type="rf").empty
    assert mlpipe.runs(upstream=ds.run_id)["stage"].tolist() == ["processing"]
    assert mlpipe.runs(stage="nope").empty
    with pytest.raises(ValueError, match="Expected a date such as"):
        mlpipe.runs(date="yesterday")


def test_runs_are_newest_first_and_show_failures(raw):
    ds = mlpipe.load(raw, name="penguins", target="species")
    first = _pipe().fit(ds)
    second = _pipe(model__C=0.5).fit(ds)
    assert mlpipe.runs(stage="model")["run_id"].tolist() == [
        second.run_ids_["model"],
        first.run_ids_["model"],
    ]
    failing = _pipe(model__C=-1.0)
    with pytest.raises(ValueError):
        failing.fit(ds)
    assert mlpipe.runs(stage="model")["status"].tolist()[0] == "FAILED"


def test_lineage_and_descendants(raw):
    ds = mlpipe.load(raw, name="penguins", target="species")
    pipe = _pipe().fit(ds)
    chain = mlpipe.lineage(pipe.run_ids_["model"])
    assert [(e.stage, e.type) for e in chain] == [
        ("load", "penguins"),
        ("processing", "plain"),
        ("model", "logreg"),
    ]
    assert chain[0].key == ds.key and chain[2].upstream == (pipe.run_ids_["processing"],)
    below = mlpipe.descendants(ds.run_id)
    assert [e.run_id for e in below] == [pipe.run_ids_["processing"], pipe.run_ids_["model"]]


def _newer_pull(raw: pd.DataFrame) -> mlpipe.Dataset:
    """A newer load of the penguins table, one cell changed."""
    changed = raw.copy()
    changed.loc[0, "bill_length_mm"] = 40.0
    return mlpipe.load(changed, name="penguins", target="species")


def test_find_chain_returns_the_newest_coherent_chain(raw):
    old = mlpipe.load(raw, name="penguins", target="species")
    coherent = _pipe().fit(old)
    # A newer pull of the table with a newer processing run, but no model on it yet.
    new = _newer_pull(raw)
    _pipe()[:1].fit(new)
    # A newer model of another algorithm on the new data.
    other = _pipe(types={"processing": "plain", "model": "rf"})
    other.set_params(model=RandomForestClassifier(n_estimators=5, random_state=0)).fit(new)

    chain = mlpipe.find_chain(table="penguins", date=TODAY, logic="plain", algorithm="logreg")
    assert chain is not None
    assert chain.run_ids == {
        "load": old.run_id,
        "processing": coherent.run_ids_["processing"],
        "model": coherent.run_ids_["model"],
    }
    rf = mlpipe.find_chain(table="penguins", date=TODAY, logic="plain", algorithm="rf")
    assert rf is not None and rf["load"].run_id == new.run_id
    # Once the new data has a logreg model too, that chain is the newest.
    newest = _pipe().fit(new)
    chain = mlpipe.find_chain(table="penguins", date=TODAY, logic="plain", algorithm="logreg")
    assert chain is not None and chain["model"].run_id == newest.run_ids_["model"]
    assert (
        mlpipe.find_chain(table="penguins", date="2019-02-09", logic="plain", algorithm="logreg")
        is None
    )
    assert (
        mlpipe.find_chain(table="penguins", date=TODAY, logic="other", algorithm="logreg") is None
    )


def test_project_runs_are_kept_apart(raw):
    ds = mlpipe.load(raw, name="penguins", target="species", project="credit")
    _pipe(project="credit").fit(ds)
    assert len(mlpipe.runs(project="credit")) == 3
    assert mlpipe.runs().empty
    assert mlflow.MlflowClient().get_experiment_by_name("credit/model") is not None


def test_find_chain_looks_past_many_newer_candidates(raw):
    old = mlpipe.load(raw, name="penguins", target="species")
    coherent = _pipe().fit(old)
    for cell in range(5):  # five newer pulls, each processed, none modelled
        changed = raw.copy()
        changed.loc[cell, "bill_length_mm"] = 50.0 + cell
        _pipe()[:1].fit(mlpipe.load(changed, name="penguins", target="species"))
    chain = mlpipe.find_chain(table="penguins", date=TODAY, logic="plain", algorithm="logreg")
    assert chain is not None and chain.run_ids == {
        "load": old.run_id,
        "processing": coherent.run_ids_["processing"],
        "model": coherent.run_ids_["model"],
    }


def _without_sql(monkeypatch):
    """Make mlpipe search as it does against a tracking server (search_runs only)."""
    from mlpipe.tracking import _store

    monkeypatch.setattr(_store, "search_runs_sql", lambda *args, **kwargs: None)


def test_sql_reads_answer_as_search_runs_does(raw, monkeypatch, tracking_store):
    """find_chain and runs give the same answers through MLflow's SQL store directly
    and through search_runs alone (what a tracking server gets)."""
    old = mlpipe.load(raw, name="penguins", target="species")
    coherent = _pipe().fit(old)
    _pipe(model__C=0.5).fit(old)  # a second, newer model on the same processing run
    pulls = []
    for cell in range(6):  # six newer pulls, each processed; two also modelled with rf
        changed = raw.copy()
        changed.loc[cell, "bill_length_mm"] = 50.0 + cell
        ds = mlpipe.load(changed, name="penguins", target="species")
        pulls.append(ds)
        if cell in (0, 1):
            rf = _pipe(types={"processing": "plain", "model": "rf"})
            rf.set_params(model=RandomForestClassifier(n_estimators=3, random_state=0)).fit(ds)
        else:
            _pipe()[:1].fit(ds)
    asked = [
        ("penguins", TODAY, "plain", "logreg"),
        ("penguins", TODAY, "plain", "rf"),
        ("penguins", TODAY, "plain", "nope"),
        ("penguins", TODAY, "other", "logreg"),
        ("penguins", "2019-02-09", "plain", "logreg"),
        ("nope", TODAY, "plain", "logreg"),
    ]
    listed = [
        {},
        {"stage": "model"},
        {"stage": "processing", "type": "plain", "date": TODAY},
        {"upstream": old.run_id},
        {"stage": "model", "upstream": coherent.run_ids_["processing"], "max_results": 1},
        {"stage": "nope"},
    ]

    def answers():
        chains = [mlpipe.find_chain(*a) for a in asked]
        tables = [mlpipe.runs(**kw).drop(columns=["started"]) for kw in listed]
        return chains, tables

    chains, tables = answers()
    assert chains[0] is not None and chains[0]["model"].run_id != coherent.run_ids_["model"]
    assert chains[0]["load"].run_id == old.run_id  # past the four newest candidates
    assert chains[1] is not None and chains[1]["load"].run_id == pulls[1].run_id
    assert chains[2:] == [None] * 4
    _without_sql(monkeypatch)
    chains_searched, tables_searched = answers()
    assert chains == chains_searched
    for table, searched in zip(tables, tables_searched, strict=True):
        pd.testing.assert_frame_equal(table, searched)


def test_a_chain_whose_load_was_removed_for_good_is_passed_over(raw):
    # Deleted, then removed by `mlflow gc`: find_chain (and `mlpipe main`) used to fail
    # reading it ("Run with id=... not found") instead of taking the older chain.
    old = mlpipe.load(raw, name="penguins", target="species")
    coherent = _pipe().fit(old)
    new = _newer_pull(raw)
    newer = _pipe().fit(new)
    chain = mlpipe.find_chain(table="penguins", date=TODAY, logic="plain", algorithm="logreg")
    assert chain is not None and chain["model"].run_id == newer.run_ids_["model"]

    remove_run_for_good(new.run_id)
    chain = mlpipe.find_chain(table="penguins", date=TODAY, logic="plain", algorithm="logreg")
    assert chain is not None and chain.run_ids == {
        "load": old.run_id,
        "processing": coherent.run_ids_["processing"],
        "model": coherent.run_ids_["model"],
    }
    # lineage cannot go past it, and says so.
    with pytest.raises(NotFoundError, match=f"Run {new.run_id}, upstream of run .*mlflow gc"):
        mlpipe.lineage(newer.run_ids_["model"])
    assert [e.run_id for e in mlpipe.lineage(coherent.run_ids_["model"])] == [
        old.run_id,
        coherent.run_ids_["processing"],
        coherent.run_ids_["model"],
    ]
