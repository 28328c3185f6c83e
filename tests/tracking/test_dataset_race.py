"""Two processes logging the same new dataset at once: both fits go on.

MLflow's SQL store looks for the dataset, then inserts it: when another process inserts
the same dataset in between, the insert breaks the unique key (experiment, name,
digest) and the fit failed with an IntegrityError. The test opens that window for
real: a second store, on its own connection, logs the same dataset to another run
right after the first store's lookup, then the first store writes.
"""

from __future__ import annotations

import mlflow
import pandas as pd
from mlflow.store.tracking import dbmodels
from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

from mlpipe.data._dataset import log_training_input


def test_a_dataset_logged_by_another_process_meanwhile_is_reused(monkeypatch, tmp_path):
    client = mlflow.MlflowClient()
    experiment = client.create_experiment("race")
    first, second = (client.create_run(experiment).info.run_id for _ in range(2))
    entity = mlflow.data.from_pandas(pd.DataFrame({"a": [1, 2]}), name="race")._to_mlflow_entity()
    other = SqlAlchemyStore(mlflow.get_tracking_uri(), str(tmp_path / "artifacts"))
    original = dbmodels.models.SqlDataset.__init__
    raced = []

    def insert_meanwhile(self, *args, **kwargs):  # the first store has looked: race it
        if not raced:
            raced.append(True)
            from mlflow.entities import DatasetInput

            other.log_inputs(second, datasets=[DatasetInput(dataset=entity)])
        original(self, *args, **kwargs)

    monkeypatch.setattr(dbmodels.models.SqlDataset, "__init__", insert_meanwhile)
    log_training_input(client, first, [entity])
    assert raced == [True]
    for run_id in (first, second):
        (logged,) = client.get_run(run_id).inputs.dataset_inputs
        assert (logged.dataset.name, logged.dataset.digest) == ("race", entity.digest)
