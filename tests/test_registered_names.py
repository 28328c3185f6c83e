"""Registered model names MLflow accepts, used wherever mlpipe looks a version up.

MLflow's registry takes almost any name; its search filters and its ``models:/`` URIs
do not read every one back. A name with a quote was registered and then broke every
lookup by run id (the filter ``name = '...'``); a name with ``?`` was registered and
then no ``models:/`` URI of it loaded (MLflow reads what follows ``?`` as a query).
"""

from __future__ import annotations

import mlflow
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier

import mlpipe
from mlpipe.tracking import check_registered_model_name


def _fit(name: str, strategy: str = "prior") -> mlpipe.LineagePipeline:
    X, y = load_iris(return_X_y=True, as_frame=True)
    return mlpipe.LineagePipeline(
        [("model", DummyClassifier(strategy=strategy))], cv=None, registered_model_name=name
    ).fit(X, y)


@pytest.mark.parametrize("name", ["team's model", 'the "credit" model', 'it\'s "both"'])
def test_a_name_with_quotes_is_promoted_by_run_id(name):
    pipe = _fit(name)
    other = _fit(name, strategy="most_frequent")
    assert (pipe.model_version_, other.model_version_) == ("1", "2")
    promoted = mlpipe.promote(name, pipe.run_ids_["model"], force=True)
    assert (promoted.name, str(promoted.version)) == (name, "1")
    holder = mlflow.MlflowClient().get_model_version_by_alias(name, "champion")
    assert holder.run_id == pipe.run_ids_["model"]


def test_a_version_past_the_first_page_is_found_by_run_id():
    pipe = _fit("paged")
    client = mlflow.MlflowClient()
    source, run_id = pipe.model_uri_, pipe.run_ids_["model"]
    # MLflow answers a search 200 versions at a time; the fitted one is the newest.
    for _ in range(200):
        client.create_model_version("paged", source=source)
    newest = client.create_model_version("paged", source=source, run_id=run_id)
    assert str(mlpipe.promote("paged", run_id, force=True).version) == str(newest.version) == "202"


@pytest.mark.parametrize("name", ["what?", "a?b"])
def test_a_name_no_models_uri_can_carry_is_refused_before_any_run(name):
    with pytest.raises(ValueError, match=r"without '/', ':' or '\?'"):
        check_registered_model_name(name)
    with pytest.raises(ValueError, match="Invalid registered_model_name"):
        _fit(name)
    assert mlflow.search_runs(search_all_experiments=True).empty
