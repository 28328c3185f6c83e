"""Searches whose fits run on a real local Spark (``local[2]``) through joblib's Spark
backend (joblibspark) log exactly as they do in this process: one chain, the best
parameters and the search's table, and no run for a fold or a candidate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import joblib
import mlflow
import pandas as pd
import pytest
import requests
from palmerpenguins import load_penguins
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, RandomizedSearchCV

import mlpipe
from mlpipe import schema
from tests._spark import PANDAS_WARNINGS, local_spark

TARGET = "species"

pytestmark = [
    pytest.mark.spark,
    pytest.mark.slow,
    pytest.mark.xdist_group("spark"),
    *PANDAS_WARNINGS,
    # joblibspark on local[N]: per-task resource profiles need a cluster.
    pytest.mark.filterwarnings("ignore:Spark local mode doesn't support stage-level scheduling"),
    # joblib 1.6 asks backends for submit(); joblibspark 0.6 still has apply_async.
    pytest.mark.filterwarnings("ignore:`apply_async` is deprecated:DeprecationWarning"),
    # joblibspark starts its tasks' threads with pyspark's inheritable_thread_target
    # without a session; its job group still reaches them (the tasks are counted below).
    pytest.mark.filterwarnings("ignore:Spark session is not provided. Tags will not be"),
]


class Cluster:
    def __init__(self, session: Any, executor_store: Path):
        self.session = session
        #: Where a run logged in an executor would go: MLFLOW_TRACKING_URI there.
        self.executor_store = executor_store

    def joblib_tasks(self) -> int:
        """Tasks of the Spark jobs joblibspark ran so far (Spark's REST API)."""
        context = self.session.sparkContext
        url = f"{context.uiWebUrl}/api/v1/applications/{context.applicationId}/jobs"
        jobs = requests.get(url, timeout=30).json()
        return sum(
            job["numCompletedTasks"]
            for job in jobs
            if str(job.get("jobGroup", "")).startswith("joblib-spark-job-group-")
        )

    def executor_runs(self) -> int:
        if not self.executor_store.exists():
            return 0
        client = mlflow.MlflowClient(f"sqlite:///{self.executor_store}")
        return sum(len(client.search_runs([e.experiment_id])) for e in client.search_experiments())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    store = tmp_path_factory.mktemp("executors") / "mlflow.db"
    with local_spark({"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}) as session:
        pytest.importorskip("joblibspark").register_spark()
        yield Cluster(session, store)


@pytest.fixture
def data() -> mlpipe.Dataset:
    return mlpipe.load(load_penguins(), name="penguins", target=TARGET)


def _runs() -> pd.DataFrame:
    experiments = [e.experiment_id for e in mlflow.search_experiments()]
    return mlflow.search_runs(experiments)


def _search_chain(search: Any) -> mlpipe.LineagePipeline:
    return mlpipe.LineagePipeline(
        [("processing", mlpipe.LOGICS.build("plain")), ("model", search)],
        types={"processing": "plain", "model": "logreg"},
        cv=None,
        cache=False,
    )


def _logged(run_id: str) -> tuple[dict[str, str], float, pd.DataFrame]:
    client = mlflow.MlflowClient()
    run = client.get_run(run_id)
    table = client.load_table(run.info.experiment_id, schema.CV_RESULTS, run_ids=[run_id])
    return run.data.params, run.data.metrics[schema.BEST_SCORE], table


@pytest.mark.parametrize("kind", ["grid", "randomized"])
def test_a_search_step_on_spark_logs_as_it_does_here(cluster, data, kind):
    def search() -> Any:
        grid = {"C": [0.01, 0.1, 1.0, 10.0]}
        model = LogisticRegression(max_iter=1000)
        if kind == "grid":
            return GridSearchCV(model, grid, cv=3)
        return RandomizedSearchCV(model, grid, n_iter=3, cv=3, random_state=0)

    here = _search_chain(search()).fit(data)
    tasks = cluster.joblib_tasks()
    with joblib.parallel_config(backend="spark", n_jobs=2):
        there = _search_chain(search()).fit(data)

    # The candidates' fits ran as Spark tasks, in the executors' Python workers.
    assert cluster.joblib_tasks() - tasks >= 2
    runs = _runs()
    assert len(runs) == 1 + 2 * 2  # one load run (the same data), two chains: no fold's run
    assert cluster.executor_runs() == 0
    params_here, best_here, table_here = _logged(here.run_ids_["model"])
    params_there, best_there, table_there = _logged(there.run_ids_["model"])
    assert params_there == params_here
    assert params_there["best.C"] == str(there.steps[-1][1].best_params_["C"])
    assert best_there == best_here
    assert len(table_there) == (4 if kind == "grid" else 3)
    pd.testing.assert_series_equal(table_there["mean_test_score"], table_here["mean_test_score"])


def test_a_search_over_a_chain_on_spark_logs_only_its_refit_and_cv_folds_none(cluster, data):
    chain = mlpipe.LineagePipeline(
        [
            ("processing", mlpipe.LOGICS.build("plain")),
            ("model", LogisticRegression(max_iter=1000)),
        ],
        types={"processing": "plain", "model": "logreg"},
        cv=3,
        cache=False,
    )
    tasks = cluster.joblib_tasks()
    with joblib.parallel_config(backend="spark", n_jobs=2):
        search = GridSearchCV(chain, {"model__C": [0.1, 1.0]}, cv=2).fit(data.X, data.y)
    # 2 candidates x 2 splits fitted as Spark tasks, each a LineagePipeline fit in an
    # executor that knew, from the search's callback context, not to log itself.
    assert cluster.joblib_tasks() - tasks >= 2
    assert cluster.executor_runs() == 0
    runs = _runs()
    refit = search.best_estimator_
    # The data's load run, and the refit's chain: nothing for a candidate or a fold.
    assert set(runs["run_id"]) - {data.run_id} == set(refit.run_ids_.values())
    assert len(runs) == 1 + 3
    model = mlflow.get_run(refit.run_ids_["model"])
    assert model.data.params["C"] == str(search.best_params_["model__C"])
    # mlpipe's own 3 folds of the refit (cv=3) ran on Spark too, and left no run.
    assert cluster.joblib_tasks() - tasks >= 4 + 1
    assert any(name.startswith(schema.CV_PREFIX) for name in model.data.metrics)
